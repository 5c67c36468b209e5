//! Whole-store work beside the request path, written against the storage traits
//! ([`crate::storage::Maintenance`]) so it runs on any backend: garbage collection
//! ([`gc`]: `sealer-registry gc`, the server's periodic collection, `sealer rmi`) and
//! integrity checking ([`check`]: `sealer-registry check`).

pub mod check;
pub mod gc;
