//! Step 5: every host finds the registry and pulls through it. For a local registry,
//! the registry's domain goes into `/etc/hosts`; it names the host itself when it runs a
//! registry, else the first registry host; with several registry hosts (`ha`) the others
//! follow by address, so one of them down does not stop pulls. The Clusterfile's
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
/// the domain names there.
fn registries_for(registry: &LocalRegistry, scheme: &str, ip: IpAddr) -> (Vec<String>, IpAddr) {
    let near = if registry.hosts.contains(&ip) {
        ip
    } else {
        registry.hosts[0]
    };
    let mut urls = vec![format!("{scheme}://{}:{}", registry.domain, registry.port)];
    for other in registry.hosts.iter().filter(|h| **h != near) {
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
    let script = |h: &dyn Host| -> String {
        let mut lines = String::new();
        let mut flags = String::new();
        let urls = match &registry.place {
            Place::Local(local) => {
                let (urls, near) = registries_for(local, scheme, h.ip());
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
    fn each_host_tries_its_nearest_registry_first_then_the_others() {
        let reg = LocalRegistry {
            domain: "sea.hub".into(),
            port: 5000,
            hosts: vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()],
            tls: None,
            htpasswd: None,
        };
        let (urls, near) = registries_for(&reg, "http", "10.0.0.2".parse().unwrap());
        assert_eq!(near, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(urls, ["http://sea.hub:5000", "http://10.0.0.1:5000"]);
        let (urls, near) = registries_for(&reg, "http", "10.0.0.9".parse().unwrap());
        assert_eq!(near, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(urls, ["http://sea.hub:5000", "http://10.0.0.2:5000"]);
    }
}
