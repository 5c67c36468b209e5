//! Kubefile to CloudImage, the local image store, push/pull and offline bundles.
//!
//! So far: the Kubefile parser (`kubefile`). The build itself, image discovery, the
//! CloudImage and bundles are planned (issues 4 and 5).

pub mod kubefile;
