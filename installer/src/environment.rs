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
    /// How blobs reach the hosts (a chain from host to host by default).
    pub relay: crate::relay::Topology,
}

impl Environment {
    /// This machine's: the running `sealer` and the `sealer-registry` beside it (both
    /// sent to hosts), `~/.sealer`, and `jobs` hosts at once.
    pub fn here(store: Store, jobs: usize) -> anyhow::Result<Environment> {
        let sealer_bin = std::env::current_exe()?;
        let registry_bin = sealer_bin.with_file_name("sealer-registry");
        if !registry_bin.is_file() {
            anyhow::bail!(
                "{} is missing: sealer run sends it to the registry hosts",
                registry_bin.display()
            );
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"));
        Ok(Environment {
            store,
            sealer_bin,
            registry_bin,
            state_dir: home.join(".sealer"),
            ssh: crate::hosts::ssh::default_options(&home),
            jobs: jobs.max(1),
            relay: crate::relay::Topology::default(),
        })
    }
}

impl Environment {
    /// A delivery of `blobs` to `hosts` under `root`, as this run relays (pipelined,
    /// `sealer` installed on the hosts).
    pub fn delivery<'a>(
        &self,
        hosts: &'a [std::sync::Arc<dyn crate::hosts::Host>],
        root: &'a std::path::Path,
        blobs: &'a [crate::distribute::Blob],
    ) -> crate::relay::Delivery<'a> {
        crate::relay::Delivery {
            hosts,
            root,
            blobs,
            topology: self.relay,
            sealer: crate::steps::tools::HOST_SEALER.to_string(),
            prelude: String::new(),
            pipelined: true,
            jobs: self.jobs,
        }
    }
}
