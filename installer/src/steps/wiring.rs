//! Step 5: every host finds the registry and pulls through it. For a local registry,
//! the registry's domain goes into `/etc/hosts`; it names the host itself when it runs a
//! registry, else one of the registry hosts, taken in turn so the nodes spread across
//! them; with several registry hosts (`ha`) the others follow by address, in the same
//! rotation, so one of them down does not stop pulls and no one of them takes every
//! node's fallback. The Clusterfile's
//! hostAliases go into `/etc/hosts` too. The container runtime (containerd or docker)
//! and podman/CRI-O (`/etc/containers`) get mirror files from `sealer-registry
//! mirror-config`, with the registry's CA and login when it has them.

use std::net::IpAddr;
use std::sync::Arc;

use super::registry::{ClusterRegistry, LocalRegistry, Place};
use super::{HOST_DIR, HOST_PKI, HOSTS_MARK, MIRROR_FILES, check_on_all};
use crate::clusterfile::{Cluster, RuntimeType};
use crate::environment::Environment;
use crate::hosts::{Host, sh_quote};
use crate::image::Image;

/// The local registries `ip` pulls through, in the order it tries them, and the address
/// the domain names there. A registry host uses its own first; the `turn`th host without
/// one starts at registry host `turn` (modulo their number), and goes on from there.
fn registries_for(
    registry: &LocalRegistry,
    scheme: &str,
    ip: IpAddr,
    turn: usize,
) -> (Vec<String>, IpAddr) {
    let n = registry.hosts.len();
    let start = registry
        .hosts
        .iter()
        .position(|h| *h == ip)
        .unwrap_or(turn % n);
    let order: Vec<IpAddr> = (0..n).map(|k| registry.hosts[(start + k) % n]).collect();
    let near = order[0];
    let mut urls = vec![format!("{scheme}://{}:{}", registry.domain, registry.port)];
    for other in &order[1..] {
        let host = match other {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        };
        urls.push(format!("{scheme}://{host}:{}", registry.port));
    }
    (urls, near)
}

pub async fn wire(
    env: &Environment,
    cluster: &Cluster,
    registry: &ClusterRegistry,
    hosts: &[Arc<dyn Host>],
    image: &Image,
) -> anyhow::Result<()> {
    let scheme = registry.scheme();
    // Each host's turn among those without a registry, in the Clusterfile's order.
    let turns: std::collections::HashMap<IpAddr, usize> = match &registry.place {
        Place::Local(local) => cluster
            .hosts
            .iter()
            .map(|h| h.ip)
            .filter(|ip| !local.hosts.contains(ip))
            .enumerate()
            .map(|(turn, ip)| (ip, turn))
            .collect(),
        Place::External(_) => Default::default(),
    };
    let script = |h: &dyn Host| -> String {
        let mut lines = String::new();
        let mut flags = String::new();
        let urls = match &registry.place {
            Place::Local(local) => {
                let turn = turns.get(&h.ip()).copied().unwrap_or(0);
                let (urls, near) = registries_for(local, scheme, h.ip(), turn);
                lines.push_str(&format!("{near} {}{HOSTS_MARK}\n", local.domain));
                urls
            }
            Place::External(external) => {
                flags.push_str(" --path-prefixed");
                vec![format!("{scheme}://{}", external.authority)]
            }
        };
        for alias in &cluster.host_aliases {
            lines.push_str(&format!(
                "{} {}{HOSTS_MARK}\n",
                alias.ip,
                alias.hostnames.join(" ")
            ));
        }
        for u in &urls {
            flags.push_str(&format!(" --registry {}", sh_quote(u)));
        }
        for u in &image.upstreams {
            flags.push_str(&format!(" --upstream {}", sh_quote(u)));
        }
        if registry.ca.is_some() {
            flags.push_str(&format!(" --ca {HOST_PKI}/ca.crt"));
        }
        if registry.login.is_some() {
            flags.push_str(&format!(" --login-file {HOST_PKI}/login"));
        }
        let (runtime, dir) = match cluster.runtime {
            RuntimeType::Containerd => ("containerd", "/etc/containerd/certs.d"),
            RuntimeType::Docker => ("docker", "/etc/docker"),
        };
        // Files written by an earlier run are removed first, so `--write` backs up only
        // what was there before sealer.
        format!(
            "set -e\nt=$(mktemp)\n{{ grep -v '{HOSTS_MARK}\\(-registry\\)\\?$' /etc/hosts || true; printf '%s' {lines}; }} > \"$t\"\n\
             cat \"$t\" > /etc/hosts\nrm -f \"$t\"\n\
             if [ -f {MIRROR_FILES} ]; then while read -r f; do [ -e \"$f.sealer-backup\" ] || rm -f \"$f\"; done < {MIRROR_FILES}; fi\n\
             : > {MIRROR_FILES}.new\n\
             {HOST_DIR}/bin/sealer-registry mirror-config --for {runtime}{flags} --write {dir} >> {MIRROR_FILES}.new\n\
             {HOST_DIR}/bin/sealer-registry mirror-config --for podman{flags} --write /etc/containers >> {MIRROR_FILES}.new\n\
             sed -n 's/^wrote //p' {MIRROR_FILES}.new >> {MIRROR_FILES}\nrm {MIRROR_FILES}.new\n\
             sort -u -o {MIRROR_FILES} {MIRROR_FILES}",
            lines = sh_quote(&lines),
        )
    };
    check_on_all(
        "pointing the hosts at the registry",
        hosts,
        env.jobs,
        script,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_host_tries_its_own_registry_first_and_nodes_spread_across_them() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let reg = LocalRegistry {
            domain: "sea.hub".into(),
            port: 5000,
            hosts: vec![ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")],
            tls: None,
            htpasswd: None,
        };
        let (urls, near) = registries_for(&reg, "http", ip("10.0.0.2"), 7);
        assert_eq!(near, ip("10.0.0.2"));
        assert_eq!(
            urls,
            [
                "http://sea.hub:5000",
                "http://10.0.0.3:5000",
                "http://10.0.0.1:5000"
            ]
        );
        // Nodes take the registry hosts in turn, and every node lists all of them.
        let nears: Vec<IpAddr> = (0..4)
            .map(|turn| registries_for(&reg, "http", ip("10.0.0.9"), turn).1)
            .collect();
        assert_eq!(
            nears,
            [
                ip("10.0.0.1"),
                ip("10.0.0.2"),
                ip("10.0.0.3"),
                ip("10.0.0.1")
            ]
        );
        let (urls, _) = registries_for(&reg, "http", ip("10.0.0.9"), 1);
        assert_eq!(
            urls,
            [
                "http://sea.hub:5000",
                "http://10.0.0.3:5000",
                "http://10.0.0.1:5000"
            ]
        );
    }
}
