//! Wire-level types of the OCI distribution and image specs, parsed once at the edge.

pub mod annotations;
pub mod digest;
pub mod docker_hub;
pub mod graph;
pub mod manifest;
pub mod name;
pub mod reference;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use manifest::{ManifestKind, ParsedManifest, media_type};
pub use name::{RepoName, Tag};
pub use reference::{Reference, ReferenceError};
