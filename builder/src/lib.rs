//! Kubefile to CloudImage, the local image store, push/pull and offline bundles.
//!
//! Planned (issues 4 and 5). Nothing is implemented here yet.
