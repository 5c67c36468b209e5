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

use sealer_builder::progress::Progress;

use crate::clusterfile::{Cluster, Phase};
use crate::image::Image;
use crate::state;
use crate::steps::{self, files, hooks, registry, tools, wiring};

pub use crate::environment::Environment;
pub use crate::steps::Report;

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
    let started = std::time::Instant::now();
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
    tools::install(env, &hosts, &mut report, progress).await?;
    files::lay_out(env, cluster, &hosts, &image, &mut report, progress).await?;
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
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
