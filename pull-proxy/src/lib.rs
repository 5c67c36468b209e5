//! The pull-through mirror of `sealer-registry`: local content first, upstream registries
//! for what is missing, for containerd, docker and podman with their stock mirror
//! settings.
//!
//! - [`config`]: upstreams from the config file and flags;
//! - [`routing`]: `?ns=`, path-prefixed and bare names to one local repository;
//! - [`clients`]: one registry client (the `sealer-client` crate) per upstream host,
//!   bounded;
//! - [`fill`]: streaming, coalesced, verified cache fill of blobs;
//! - [`mirror`]: the registry's `Mirror` over all of it;
//! - [`runtime_files`]: the files that point containerd, docker and podman here
//!   (`sealer-registry mirror-config`).

pub mod clients;
pub mod config;
pub mod fill;
pub mod metrics;
pub mod mirror;
pub mod routing;
pub mod runtime_files;

pub use config::{MirrorArgs, MirrorConfig};
pub use mirror::PullThrough;
