//! The distribution spec, endpoint by endpoint, against a running `sealer-registry`.
//! Each test names the behaviour it checks; the spec's section is in the module docs.

mod discovery;
mod management;
mod manifests;
mod names;
mod ops;
mod pull;
mod push;
mod store;
