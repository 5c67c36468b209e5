//! Kubefile to CloudImage, the local image store, push/pull and offline bundles.
//!
//! So far: the Kubefile parser (`kubefile`), container-image discovery (`discover`) and
//! reproducible layers (`layer`) with their build-cache keys (`cache`).
//! The build itself, the CloudImage and bundles are planned (issues 4 and 5).

pub mod cache;
pub mod discover;
pub mod kubefile;
pub mod layer;
