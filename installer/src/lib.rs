//! Clusterfile, host executors and the `sealer run/apply/delete` lifecycle (issue 6).
//!
//! - [`clusterfile`]: the Clusterfile's documents, read and checked into a `Cluster`.

pub mod clusterfile;
