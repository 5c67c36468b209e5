//! `sealer apply`, `scale-up` and `delete -m/-n`: from the cluster as last applied (its
//! state under `~/.sealer/<cluster>/`) to the cluster wanted. The plan says which hosts
//! are added, removed and kept and what will be done; carrying it out cleans the
//! removed hosts, then runs every step on the rest (which does nothing where nothing
//! changed, so kept hosts cost one check per step).

use std::fmt;
use std::net::IpAddr;

use anyhow::bail;
use sealer_builder::progress::Progress;

use crate::clusterfile::{Cluster, HostGroup, Ssh};
use crate::run::{self, Environment, Occasion, Report};
use crate::state;
use crate::steps::{self, clean};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub cluster: String,
    pub image: String,
    /// The image applied before, when it differs.
    pub image_before: Option<String>,
    pub first_run: bool,
    pub add: Vec<IpAddr>,
    pub remove: Vec<IpAddr>,
    pub keep: Vec<IpAddr>,
}

pub fn plan(before: Option<&Cluster>, wanted: &Cluster) -> Plan {
    let was: Vec<IpAddr> = before
        .map(|b| b.hosts.iter().map(|h| h.ip).collect())
        .unwrap_or_default();
    let now: Vec<IpAddr> = wanted.hosts.iter().map(|h| h.ip).collect();
    Plan {
        cluster: wanted.name.clone(),
        image: wanted.image.clone(),
        image_before: before
            .filter(|b| b.image != wanted.image)
            .map(|b| b.image.clone()),
        first_run: before.is_none(),
        add: now.iter().filter(|ip| !was.contains(ip)).copied().collect(),
        remove: was.iter().filter(|ip| !now.contains(ip)).copied().collect(),
        keep: now.iter().filter(|ip| was.contains(ip)).copied().collect(),
    }
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        !self.first_run
            && self.add.is_empty()
            && self.remove.is_empty()
            && self.image_before.is_none()
    }
}

fn ips(list: &[IpAddr]) -> String {
    list.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "cluster {} ({})", self.cluster, self.image)?;
        if let Some(b) = &self.image_before {
            writeln!(f, "  image: {b} -> {}", self.image)?;
        }
        if !self.add.is_empty() {
            writeln!(f, "  add:    {}", ips(&self.add))?;
        }
        if !self.remove.is_empty() {
            writeln!(f, "  remove: {}", ips(&self.remove))?;
        }
        if !self.keep.is_empty() {
            writeln!(f, "  keep:   {}", ips(&self.keep))?;
        }
        writeln!(f, "steps:")?;
        if !self.remove.is_empty() {
            writeln!(
                f,
                "  - clean {}: registry stopped, runtime configuration restored, sealer's files removed",
                ips(&self.remove)
            )?;
        }
        // On a first run every host is added.
        let targets = ips(&self.add);
        if !targets.is_empty() {
            writeln!(
                f,
                "  - install on {targets}: binaries, the image's files, registry certificates, runtime mirror configuration"
            )?;
        }
        if self.image_before.is_some() {
            writeln!(
                f,
                "  - send the new image's files and content; launch it on master0"
            )?;
        } else if self.first_run {
            writeln!(f, "  - load the registry and launch the image on master0")?;
        }
        if !self.first_run {
            writeln!(
                f,
                "  - check every kept host (nothing is sent where nothing changed)"
            )?;
        }
        Ok(())
    }
}

/// A change to a cluster: what it was (as last applied) and what it is to become.
pub struct Change {
    pub before: Option<Cluster>,
    pub wanted: Cluster,
}

impl Change {
    /// To the cluster a Clusterfile describes (`sealer apply`).
    pub fn to(env: &Environment, wanted: Cluster) -> anyhow::Result<Change> {
        let before = state::load(&env.state_dir, &wanted.name)?;
        Ok(Change { before, wanted })
    }

    /// Cluster `name` with hosts added (`sealer scale-up`).
    pub fn adding(
        env: &Environment,
        name: &str,
        masters: &[IpAddr],
        nodes: &[IpAddr],
        ssh: &Ssh,
    ) -> anyhow::Result<Change> {
        if masters.is_empty() && nodes.is_empty() {
            bail!("give the hosts to add with -m and/or -n");
        }
        let before = state::require(&env.state_dir, name)?;
        let wanted = with_hosts(&before, masters, nodes, ssh)?;
        Ok(Change {
            before: Some(before),
            wanted,
        })
    }

    /// Cluster `name` without `remove` (`sealer delete -m/-n`).
    pub fn removing(env: &Environment, name: &str, remove: &[IpAddr]) -> anyhow::Result<Change> {
        if remove.is_empty() {
            bail!("give the hosts to remove with -m/-n, or --all for the whole cluster");
        }
        let before = state::require(&env.state_dir, name)?;
        let wanted = without_hosts(&before, remove)?;
        Ok(Change {
            before: Some(before),
            wanted,
        })
    }

    pub fn plan(&self) -> Plan {
        plan(self.before.as_ref(), &self.wanted)
    }

    pub async fn apply(
        &self,
        env: &Environment,
        progress: &dyn Progress,
    ) -> anyhow::Result<Report> {
        apply(env, self.before.as_ref(), &self.wanted, progress).await
    }
}

/// Carries out the plan from `before` to `wanted`.
pub async fn apply(
    env: &Environment,
    before: Option<&Cluster>,
    wanted: &Cluster,
    progress: &dyn Progress,
) -> anyhow::Result<Report> {
    let plan = plan(before, wanted);
    if let Some(before) = before {
        if plan.remove.contains(&before.master0().ip) {
            bail!(
                "{} is master0 (it runs the launch and the registry); it cannot be removed alone: `sealer delete --all` removes the cluster",
                before.master0().ip
            );
        }
        if before.master0().ip != wanted.master0().ip {
            bail!(
                "master0 changes from {} to {}: keep the first master first",
                before.master0().ip,
                wanted.master0().ip
            );
        }
        if !plan.remove.is_empty() {
            let removed: Vec<_> = before
                .hosts
                .iter()
                .filter(|h| plan.remove.contains(&h.ip))
                .collect();
            let hosts = steps::connect(env, &removed, progress).await?;
            steps::check_ownership(env, before, &hosts, false).await?;
            clean::clean(env, before, &hosts).await?;
        }
        // Recorded now: removed hosts are gone, and added ones are part of the cluster
        // even if a step below fails (a re-run of `sealer run` or `apply` finishes them).
        state::save(&env.state_dir, wanted)?;
    }
    let occasion = if before.is_some() && !plan.add.is_empty() {
        Occasion::ScaleUp
    } else {
        Occasion::Install
    };
    run::run(env, wanted, occasion, progress).await
}

/// The cluster with hosts added: masters to the masters, nodes to the nodes, reached
/// with `ssh` over the cluster's SSH settings.
pub fn with_hosts(
    cluster: &Cluster,
    masters: &[IpAddr],
    nodes: &[IpAddr],
    ssh: &Ssh,
) -> anyhow::Result<Cluster> {
    let mut docs = cluster.source.clone();
    for ip in masters.iter().chain(nodes) {
        if cluster.host(*ip).is_some() {
            bail!("{ip} is already a host of cluster {}", cluster.name);
        }
    }
    for (list, role) in [(masters, "master"), (nodes, "node")] {
        if !list.is_empty() {
            docs.cluster.spec.hosts.push(HostGroup {
                ips: list.to_vec(),
                roles: vec![role.to_string()],
                ssh: ssh.clone(),
                ..Default::default()
            });
        }
    }
    Ok(docs.resolve("the cluster's state")?)
}

/// The cluster without `remove`.
pub fn without_hosts(cluster: &Cluster, remove: &[IpAddr]) -> anyhow::Result<Cluster> {
    for ip in remove {
        if cluster.host(*ip).is_none() {
            bail!("{ip} is not a host of cluster {}", cluster.name);
        }
    }
    let mut docs = cluster.source.clone();
    for group in &mut docs.cluster.spec.hosts {
        group.ips.retain(|ip| !remove.contains(ip));
    }
    docs.cluster.spec.hosts.retain(|g| !g.ips.is_empty());
    Ok(docs.resolve("the cluster's state")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "apiVersion: sealer.io/v2\nkind: Cluster\nmetadata: {name: shop}\nspec:\n  image: shop:1\n  hosts:\n    - {ips: [10.0.0.1], roles: [master]}\n    - {ips: [10.0.0.2, 10.0.0.3], roles: [node]}\n";

    #[test]
    fn plans_name_hosts_added_removed_and_kept() {
        let before = crate::clusterfile::parse(FILE, "Clusterfile").unwrap();
        let first = plan(None, &before);
        assert!(first.first_run);
        assert_eq!(first.add.len(), 3);
        assert!(plan(Some(&before), &before).is_empty());

        let grown = with_hosts(
            &before,
            &[],
            &["10.0.0.4".parse().unwrap()],
            &Ssh {
                port: Some(2222),
                ..Default::default()
            },
        )
        .unwrap();
        let p = plan(Some(&before), &grown);
        assert_eq!(p.add, ["10.0.0.4".parse::<IpAddr>().unwrap()]);
        assert!(p.remove.is_empty());
        assert_eq!(p.keep.len(), 3);
        assert!(p.to_string().contains("add:    10.0.0.4"), "{p}");
        let added = grown.host("10.0.0.4".parse().unwrap()).unwrap();
        assert_eq!(added.login.port, 2222);
        assert_eq!(added.roles, ["node"]);

        let shrunk = without_hosts(&grown, &["10.0.0.2".parse().unwrap()]).unwrap();
        let p = plan(Some(&grown), &shrunk);
        assert_eq!(p.remove, ["10.0.0.2".parse::<IpAddr>().unwrap()]);
        assert!(p.to_string().contains("clean 10.0.0.2"), "{p}");
        assert_eq!(shrunk.hosts.len(), 3);

        assert!(
            with_hosts(
                &before,
                &["10.0.0.1".parse().unwrap()],
                &[],
                &Ssh::default()
            )
            .is_err()
        );
        assert!(without_hosts(&before, &["10.0.0.9".parse().unwrap()]).is_err());
    }
}
