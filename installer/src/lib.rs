//! Clusterfile, host executors and the `sealer run/apply/delete` lifecycle.
//!
//! Planned (issue 6). Nothing is implemented here yet.
