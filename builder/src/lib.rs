//! Kubefile to CloudImage, the local image store, push/pull and offline bundles.
//!
//! So far: the Kubefile parser (`kubefile`) and container-image discovery (`discover`).
//! The build itself, the CloudImage and bundles are planned (issues 4 and 5).

pub mod discover;
pub mod kubefile;
