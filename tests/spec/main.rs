//! The distribution spec, endpoint by endpoint. Each test names the behaviour it checks;
//! the spec's section is in the module docs. Most drive the registry in this process
//! through its router (`Registry::in_process`: no socket, no process start); those about
//! how it runs (restarts, logs, a full disk, concurrent clients) start `sealer-registry`.

mod discovery;
mod management;
mod manifests;
mod names;
mod ops;
mod pull;
mod push;
mod store;
