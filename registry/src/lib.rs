//! sealer's content store and its OCI distribution v1.1 registry.
//!
//! Layers, top to bottom: [`routes`] (HTTP: parse and answer) → [`services`] (the spec's
//! rules) → [`storage`] (the only code that touches disk). [`oci`] holds the validated
//! wire types every layer shares; [`maintenance`] the whole-store work (garbage
//! collection, integrity checks) over the storage traits.

pub mod auth;
pub mod background;
pub mod config;
pub mod listen;
pub mod maintenance;
pub mod observability;
pub mod oci;
pub mod routes;
pub mod server;
pub mod services;
pub mod storage;
pub mod tls;
