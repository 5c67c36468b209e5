//! Clusterfile, host executors and the `sealer run/apply/delete` lifecycle (issue 6).
//!
//! - [`clusterfile`]: the Clusterfile's documents, read and checked into a `Cluster`;
//! - [`hosts`]: running commands on hosts, over SSH or locally, in parallel;
//! - [`distribute`]: files sent to hosts content-addressed, verified, never twice.

pub mod clusterfile;
pub mod delete;
pub mod distribute;
pub mod hosts;
pub mod run;
