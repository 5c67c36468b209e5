//! Clusterfile, host executors and the `sealer run/apply/delete` lifecycle.
//!
//! - [`clusterfile`]: the Clusterfile's documents, read and checked into a `Cluster`;
//! - [`hosts`]: running commands on hosts, over SSH or locally, in parallel;
//! - [`distribute`]: files sent to hosts content-addressed, verified, never twice;
//! - [`run`] and its [`steps`]: putting a CloudImage on hosts; [`apply`]: plans from
//!   one cluster to another (scale-up, removing hosts); [`delete`]: taking it all off;
//! - [`request`]: what `sealer run` was asked, turned into a cluster (bundles first);
//! - [`environment`]: what every command needs besides the Clusterfile;
//! - [`state`]: the cluster as last applied, under `~/.sealer/<cluster>/`.

pub mod apply;
pub mod clusterfile;
pub mod configs;
pub mod delete;
pub mod distribute;
pub mod environment;
pub mod hosts;
pub mod image;
pub mod relay;
pub mod request;
pub mod run;
pub mod state;
pub mod steps;
