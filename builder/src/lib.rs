//! Kubefile to CloudImage, the local image store, push/pull and offline bundles.
//!
//! `kubefile` parses, `discover` finds container images, `layer` and `cache` make
//! reproducible layers, `steps` runs a Kubefile's steps into a `cloudimage` (`steps::build`), `store` is the local
//! content store, `remote` and `transfer` move images between it and registries.

pub mod archive;
pub mod bundle;
pub mod cache;
pub mod cloudimage;
pub mod discover;
pub mod filelock;
pub mod inspect;
pub mod kubefile;
pub mod layer;
pub mod printable;
pub mod progress;
pub mod reference;
pub mod remote;
pub mod shell;
pub mod steps;
pub mod store;
pub mod transfer;
