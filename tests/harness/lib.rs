//! Shared pieces of the end-to-end tests: starting `sealer-registry`, talking to it,
//! making test content and running real clients.

pub mod balancer;
pub mod content;
pub mod daemons;
pub mod examples;
pub mod hostile;
pub mod hosts;
pub mod http;
pub mod network;
pub mod objectstore;
pub mod server;
pub mod tools;
pub mod upstream;

pub use balancer::*;
pub use content::*;
pub use daemons::*;
pub use examples::*;
pub use hostile::*;
pub use hosts::*;
pub use http::*;
pub use network::*;
pub use objectstore::*;
pub use server::*;
pub use tools::*;
pub use upstream::*;
