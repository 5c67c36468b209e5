//! `sealer delete --all`: takes the cluster off every host (the pre- and post-uninstall
//! hooks around it on master0), then drops its local state.

use crate::clusterfile::{Cluster, Phase};
use crate::environment::Environment;
use crate::state;
use crate::steps::{check_ownership, clean, connect, hooks};
use sealer_builder::progress::Progress;

/// The cluster `sealer delete --all` takes off: the one a Clusterfile names, else the
/// state of cluster `name`.
pub fn target(
    env: &Environment,
    clusterfile: Option<&std::path::Path>,
    name: &str,
) -> anyhow::Result<Cluster> {
    match clusterfile {
        Some(path) => crate::clusterfile::read_file(path),
        None => state::require(&env.state_dir, name),
    }
}

pub async fn delete_all(
    env: &Environment,
    cluster: &Cluster,
    progress: &dyn Progress,
) -> anyhow::Result<()> {
    let all: Vec<_> = cluster.hosts.iter().collect();
    let hosts = connect(env, &all, progress).await?;
    check_ownership(env, cluster, &hosts, false).await?;
    hooks::run_phase(cluster, &hosts, Phase::PreUninstall, None, env.jobs).await?;
    clean::clean(env, cluster, &hosts).await?;
    hooks::run_phase(cluster, &hosts, Phase::PostUninstall, None, env.jobs).await?;
    state::forget(&env.state_dir, &cluster.name)
}
