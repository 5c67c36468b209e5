//! The steps `sealer run` takes on hosts, one module each. Every step first asks each
//! host what it already has, so a step that ran before does nothing again.

pub mod clean;
pub mod files;
pub mod hooks;
pub mod registry;
pub mod tools;
pub mod wiring;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::bail;
use sealer_builder::progress::Progress;

use crate::clusterfile;
use crate::environment::Environment;
use crate::hosts::ssh::SshHost;
use crate::hosts::{Host, HostError, on_all, sh_quote};

/// What `sealer run` keeps on a host: blobs, binaries, certificates, the registry's
/// store. Apart from the default local store (`/var/lib/sealer/registry`), so a host that
/// is also the machine running sealer keeps both.
pub const HOST_DIR: &str = "/var/lib/sealer/cluster";
/// The runtime configuration files `sealer run` wrote on a host, one per line (`sealer
/// delete` restores or removes them).
pub const MIRROR_FILES: &str = "/var/lib/sealer/cluster/mirror-files";
/// The registry's store on a registry host.
pub const HOST_REGISTRY_ROOT: &str = "/var/lib/sealer/cluster/registry";
/// The registry's CA (every host), certificate and key (registry hosts).
pub const HOST_PKI: &str = "/var/lib/sealer/cluster/pki";
/// Names the cluster a host belongs to. A host serves one cluster: its registry, runtime
/// mirror configuration and `/etc/hosts` lines are the cluster's, so a second cluster
/// neither moves in nor takes them away.
pub const HOST_OWNER: &str = "/var/lib/sealer/cluster/owner";
/// Marks the lines sealer adds to `/etc/hosts`.
pub const HOSTS_MARK: &str = " # sealer";
/// The file in `<dataRoot>/<name>` that says sealer made the folder for that cluster
/// (it holds the name); `delete` removes no folder without it.
pub const DATA_MARK: &str = ".sealer-cluster";

/// What a run did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub hosts: usize,
    pub blobs_sent: usize,
    /// Bytes every host received, added up.
    pub bytes_sent: u64,
    /// Bytes that left this machine (with relays, about one copy whatever the hosts).
    pub bytes_from_control: u64,
    pub registry_blobs_loaded: usize,
    pub launched: bool,
    /// Seconds the run took.
    pub seconds: f64,
    /// Per host: seconds its deliveries took, and who fed it last (absent: this machine).
    pub per_host: std::collections::BTreeMap<IpAddr, HostTime>,
}

/// How long a host's deliveries took.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct HostTime {
    pub seconds: f64,
    pub bytes: u64,
    pub from: Option<IpAddr>,
}

impl Report {
    /// Adds what a delivery did; fails naming each host it did not reach, after the
    /// others got everything.
    pub fn delivered(&mut self, step: &str, outcome: crate::relay::Outcome) -> anyhow::Result<()> {
        self.bytes_from_control += outcome.from_control;
        let mut results = Vec::new();
        for (ip, r) in outcome.hosts {
            if let Ok(got) = &r {
                let t = self.per_host.entry(ip).or_default();
                t.seconds += got.seconds;
                t.bytes += got.sent.bytes;
                if got.sent.blobs > 0 {
                    t.from = got.from;
                }
            }
            results.push((ip, r.map(|got| got.sent)));
        }
        self.count(step, results)
    }

    /// Adds what each host was sent; fails naming each host a transfer failed on.
    pub fn count(
        &mut self,
        step: &str,
        results: Vec<(
            IpAddr,
            Result<crate::distribute::Sent, crate::hosts::HostError>,
        )>,
    ) -> anyhow::Result<()> {
        let sent = all_ok(
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

/// Shell lines that stop the script unless the cluster's folder on the host is
/// sealer's own for this cluster (or absent). With `create`, an absent folder is made and
/// marked, and kept to root (mode 0700: Config documents and image files may hold
/// passwords). A folder laid out before marks existed (it has `rootfs/.sealer-layers`) is
/// marked now. A folder that is a link, or holds neither, is someone else's: `run` does
/// not move in and `delete` does not remove it.
pub fn claim_data_dir(cluster: &clusterfile::Cluster, create: bool) -> String {
    let name = sh_quote(&cluster.name);
    let mut script = format!(
        "data={dir}\n\
         if [ -L \"$data\" ] || {{ [ -e \"$data\" ] && [ \"$(cat \"$data/{DATA_MARK}\" 2>/dev/null)\" != {name} ] \
         && [ ! -f \"$data/rootfs/.sealer-layers\" ]; }}; then\n\
         echo \"$data was not made by sealer for cluster {name} (it has no {DATA_MARK} file): \
         sealer leaves it alone; choose another dataRoot, or remove it yourself\" >&2; exit 1\nfi\n",
        dir = sh_quote(&cluster.data_dir().to_string_lossy()),
    );
    if create {
        script.push_str(&format!(
            "mkdir -p \"$data\"\nchmod 700 \"$data\"\n[ -f \"$data/{DATA_MARK}\" ] || printf '%s\\n' {name} > \"$data/{DATA_MARK}\"\n"
        ));
    }
    script
}

/// Shell lines that stop the script unless the host belongs to `cluster` or to no
/// cluster; with `take`, it then belongs to `cluster`. A host set up before owners were
/// recorded (sealer's folder without the file) is taken over by the first cluster run on
/// it again.
pub fn claim_host(cluster: &clusterfile::Cluster, take: bool) -> String {
    let name = sh_quote(&cluster.name);
    let mut script = format!(
        "owner=\"$(cat {HOST_OWNER} 2>/dev/null || true)\"\nname={name}\n\
         if [ -n \"$owner\" ] && [ \"$owner\" != \"$name\" ]; then\n\
         echo \"this host belongs to cluster $owner, not $name: a host serves one cluster \
         (its registry, mirror configuration and /etc/hosts lines); sealer leaves it alone. \
         Remove it from cluster $owner first (sealer delete), or run the images on cluster $owner\" >&2; exit 1\nfi\n",
    );
    if take {
        script.push_str(&format!(
            "mkdir -p {HOST_DIR}\nprintf '%s\\n' {name} > {HOST_OWNER}\n"
        ));
    }
    script
}

/// Before anything runs on `hosts`, hooks included: each belongs to `cluster` or to none
/// and its data folder is the cluster's or absent (see [`claim_host`] and
/// [`claim_data_dir`]). With `take`, the hosts then belong to `cluster`.
pub async fn check_ownership(
    env: &Environment,
    cluster: &clusterfile::Cluster,
    hosts: &[Arc<dyn Host>],
    take: bool,
) -> anyhow::Result<()> {
    let script = format!(
        "set -e\n{}{}",
        claim_host(cluster, false),
        claim_data_dir(cluster, false)
    );
    let results = on_all(hosts, env.jobs, |h| {
        let script = script.clone();
        async move { h.check(&script).await.map_err(anyhow::Error::from) }
    })
    .await;
    let (_, failed) = split(results);
    if !failed.is_empty() {
        bail!(
            "checking the hosts failed on {} host(s), and nothing was changed on any; run \
             again once each is reachable and belongs to cluster {} or to none:\n{}",
            failed.len(),
            cluster.name,
            failed.join("\n")
        );
    }
    if take {
        let script = format!("set -e\n{}", claim_host(cluster, true));
        check_on_all("recording the hosts' cluster", hosts, env.jobs, |_| {
            script.clone()
        })
        .await?;
    }
    Ok(())
}

/// Turns each host's result into one error naming every host that failed.
pub fn all_ok<T>(step: &str, results: Vec<(IpAddr, anyhow::Result<T>)>) -> anyhow::Result<Vec<T>> {
    let (ok, failed) = split(results);
    if failed.is_empty() {
        Ok(ok)
    } else {
        bail!(
            "{step} failed on {} host(s); run again to continue:\n{}",
            failed.len(),
            failed.join("\n")
        )
    }
}

/// The results that succeeded, and a line naming the host for each that failed.
fn split<T>(results: Vec<(IpAddr, anyhow::Result<T>)>) -> (Vec<T>, Vec<String>) {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for (ip, r) in results {
        match r {
            Ok(v) => ok.push(v),
            Err(e) => {
                let text = format!("{e:#}");
                if text.contains(&format!("host {ip}")) {
                    failed.push(format!("  {text}"));
                } else {
                    failed.push(format!("  host {ip}: {text}"));
                }
            }
        }
    }
    (ok, failed)
}

/// Connects to `hosts` in parallel; fails naming each host it cannot reach or log in to.
pub async fn connect(
    env: &Environment,
    hosts: &[&clusterfile::Host],
    progress: &dyn Progress,
) -> anyhow::Result<Vec<Arc<dyn Host>>> {
    let task = progress.task("connecting", hosts.len() as u64);
    let connected = futures::future::join_all(hosts.iter().map(|h| async {
        let r = SshHost::connect(h.ip, &h.login, &env.ssh).await;
        task.advance(1);
        (
            h.ip,
            r.map(|s| Arc::new(s) as Arc<dyn Host>)
                .map_err(anyhow::Error::from),
        )
    }))
    .await;
    task.finish("connected");
    all_ok("connecting", connected)
}

/// Runs the script `script` makes for each host on every host; fails naming each host
/// where it failed.
pub async fn check_on_all(
    step: &str,
    hosts: &[Arc<dyn Host>],
    jobs: usize,
    script: impl Fn(&dyn Host) -> String,
) -> anyhow::Result<()> {
    let results = on_all(hosts, jobs, |h| {
        let text = script(h);
        async move { h.check(&text).await.map_err(anyhow::Error::from) }
    })
    .await;
    all_ok(step, results).map(|_| ())
}

/// A small file to put on a host at `path`, mode `mode` (certificates, keys).
pub struct SmallFile {
    pub path: String,
    pub content: Vec<u8>,
    pub mode: u32,
}

/// Puts on `host` each of `files` it does not hold with the same content (one command
/// asks, then only what differs is sent); each file is replaced by rename.
pub async fn put_files(host: &dyn Host, files: &[SmallFile]) -> Result<usize, HostError> {
    let mut ask = String::new();
    for f in files {
        let digest = sealer_registry::oci::Digest::sha256_of(&f.content);
        let hex = digest.hex();
        ask.push_str(&format!(
            "[ \"$(sha256sum < {p} 2>/dev/null | cut -c1-64)\" = {hex} ] || echo {p}\n",
            p = sh_quote(&f.path)
        ));
    }
    let out = host.check(&ask).await?;
    let differ: Vec<&str> = out.lines().collect();
    let mut sent = 0;
    for f in files.iter().filter(|f| differ.contains(&f.path.as_str())) {
        let dir = Path::new(&f.path)
            .parent()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".into());
        let script = format!(
            "set -e\numask 077\nmkdir -p {dir}\ncat > {p}.new\nchmod {mode:o} {p}.new\nmv {p}.new {p}",
            dir = sh_quote(&dir),
            p = sh_quote(&f.path),
            mode = f.mode,
        );
        let out = host.run_with_input(&script, &f.content).await?;
        if !out.success() {
            return Err(HostError::Failed {
                host: host.ip().to_string(),
                command: format!("writing {}", f.path),
                code: out.code.map(|c| c.to_string()).unwrap_or_default(),
                stderr: out.stderr.trim().to_string(),
            });
        }
        sent += 1;
    }
    Ok(sent)
}
