//! What every command on the hosts needs besides the Clusterfile: the local store, the
//! binaries to send, the state folder and the SSH settings.

use std::path::PathBuf;

use sealer_builder::store::Store;

use crate::hosts::ssh::SshOptions;

/// What `sealer run` needs besides the Clusterfile.
pub struct Environment {
    pub store: Store,
    /// This machine's `sealer` and `sealer-registry`, sent to the hosts.
    pub sealer_bin: PathBuf,
    pub registry_bin: PathBuf,
    /// `~/.sealer`: cluster state, SSH sockets and known hosts.
    pub state_dir: PathBuf,
    pub ssh: SshOptions,
    pub jobs: usize,
}
