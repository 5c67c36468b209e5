//! `sealer run`: puts a CloudImage on the cluster's hosts. Every step checks what a host
//! already has, so running again after any failure continues where it stopped and
//! sends nothing twice (`steps/` holds one module per step):
//!
//! 1. connect to every host (in parallel, at most `jobs` at a time);
//! 2. send the `sealer` and `sealer-registry` binaries (content-addressed);
//! 3. send the image's file layers and lay them out in `<dataRoot>/<cluster>/rootfs`,
//!    with the Clusterfile's `Config` documents applied;
//! 4. the registry: its CA and login on every host; for a local registry, on the
//!    registry hosts its certificate and htpasswd, what their store lacks of the image (a
//!    delta bundle), and `sealer-registry serve`; for an external one, the image's
//!    container images pushed to it;
//! 5. point every host at the registry: `/etc/hosts`, and the container runtimes'
//!    mirror configuration (`sealer-registry mirror-config --write`);
//! 6. run the image's launch commands on master0.
//!
//! The Clusterfile's hooks run around them: pre/post-install on master0, pre/post-init-
//! host on each host (and pre/post-scaleup on master0 when hosts are added).

use std::net::IpAddr;
use std::path::PathBuf;

use sealer_builder::progress::Progress;
use sealer_builder::store::Store;

use crate::clusterfile::{Cluster, Phase};
use crate::hosts::ssh::SshOptions;
use crate::image::Image;
use crate::state;
use crate::steps::{self, files, hooks, registry, tools, wiring};

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

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    pub hosts: usize,
    pub blobs_sent: usize,
    pub bytes_sent: u64,
    pub registry_blobs_loaded: usize,
    pub launched: bool,
}

impl Report {
    /// Adds what each host was sent; fails naming each host a transfer failed on.
    pub fn count(
        &mut self,
        step: &str,
        results: Vec<(
            IpAddr,
            Result<crate::distribute::Sent, crate::hosts::HostError>,
        )>,
    ) -> anyhow::Result<()> {
        let sent = steps::all_ok(
            step,
            results
                .into_iter()
                .map(|(ip, r)| (ip, r.map_err(anyhow::Error::from)))
                .collect(),
        )?;
        for s in sent {
            self.blobs_sent += s.blobs;
            self.bytes_sent += s.bytes;
        }
        Ok(())
    }
}

/// Why the run happens: a first install, or hosts being added (the scale-up hooks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occasion {
    Install,
    ScaleUp,
}

pub async fn run(
    env: &Environment,
    cluster: &Cluster,
    occasion: Occasion,
    progress: &dyn Progress,
) -> anyhow::Result<Report> {
    let registry = registry::ClusterRegistry::of(env, cluster)?;
    let image = Image::open(&env.store, &cluster.image).await?;
    let mut report = Report {
        hosts: cluster.hosts.len(),
        ..Report::default()
    };
    let all: Vec<_> = cluster.hosts.iter().collect();
    let hosts = steps::connect(env, &all, progress).await?;
    steps::check_ownership(env, cluster, &hosts, true).await?;
    let once = image.digest.hex().to_string();
    let once = Some(once.as_str());
    let (pre, post) = match occasion {
        Occasion::Install => (Phase::PreInstall, Phase::PostInstall),
        Occasion::ScaleUp => (Phase::PreScaleUp, Phase::PostScaleUp),
    };

    hooks::run_phase(cluster, &hosts, pre, once, env.jobs).await?;
    hooks::run_phase(cluster, &hosts, Phase::PreInitHost, once, env.jobs).await?;
    tools::install(env, &hosts, &mut report).await?;
    files::lay_out(env, cluster, &hosts, &image, &mut report).await?;
    registry::send_files(env, &registry, &hosts).await?;
    registry::provide(
        env,
        cluster,
        &registry,
        &hosts,
        &image,
        &mut report,
        progress,
    )
    .await?;
    wiring::wire(env, cluster, &registry, &hosts, &image).await?;
    hooks::run_phase(cluster, &hosts, Phase::PostInitHost, once, env.jobs).await?;

    let master0 = hosts
        .iter()
        .find(|h| h.ip() == cluster.master0().ip)
        .expect("master0 is connected");
    let commands = if cluster.cmd.is_empty() {
        &image.launch
    } else {
        &cluster.cmd
    };
    report.launched = hooks::launch(cluster, master0.as_ref(), &image, commands).await?;
    hooks::run_phase(cluster, &hosts, post, once, env.jobs).await?;

    state::save(&env.state_dir, cluster)?;
    Ok(report)
}
