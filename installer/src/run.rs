//! `sealer run`: puts a CloudImage on the cluster's hosts. Every step checks what a host
//! already has, so running again after any failure continues where it stopped and
//! sends nothing twice:
//!
//! 1. connect to every host (in parallel, at most `jobs` at a time);
//! 2. send the `sealer` and `sealer-registry` binaries (content-addressed);
//! 3. send the image's file layers and lay them out in `<dataRoot>/<cluster>/rootfs`;
//! 4. on the registry hosts, load what their store lacks of the image (a delta bundle
//!    against `sealer store have` there) and start `sealer-registry serve` on it;
//! 5. point every host at the registry: its domain in `/etc/hosts`, and the container
//!    runtime's mirror configuration (`sealer-registry mirror-config --write`);
//! 6. run the image's launch commands on master0.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use sealer_builder::bundle::{self, SaveOptions};
use sealer_builder::inspect;
use sealer_builder::progress::Progress;
use sealer_builder::reference::ImageName;
use sealer_builder::store::Store;
use sealer_registry::oci::Digest;

use crate::clusterfile::{Cluster, Registry, RuntimeType};
use crate::distribute::{self, Blob, quote};
use crate::hosts::ssh::{SshHost, SshOptions};
use crate::hosts::{Host, on_all, sh_quote};

/// What `sealer run` keeps on a host: blobs, binaries, the registry's store. Apart from
/// the default local store (`/var/lib/sealer/registry`), so a host that is also the
/// machine running sealer keeps both.
pub const HOST_DIR: &str = "/var/lib/sealer/cluster";
/// The runtime configuration files `sealer run` wrote on a host, one per line (`sealer
/// delete` restores or removes them).
pub const MIRROR_FILES: &str = "/var/lib/sealer/cluster/mirror-files";
/// The registry's store on a registry host.
pub const HOST_REGISTRY_ROOT: &str = "/var/lib/sealer/cluster/registry";

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

/// Turns each host's result into one error naming every host that failed.
fn all_ok<T>(step: &str, results: Vec<(IpAddr, anyhow::Result<T>)>) -> anyhow::Result<Vec<T>> {
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

/// Connects to every host of `cluster` in parallel; fails naming each host it cannot
/// reach or log in to.
pub(crate) async fn connect_all(
    env: &Environment,
    cluster: &Cluster,
    progress: &dyn Progress,
) -> anyhow::Result<Vec<Arc<dyn Host>>> {
    let task = progress.task("connecting", cluster.hosts.len() as u64);
    let connected = futures::future::join_all(cluster.hosts.iter().map(|h| async {
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
pub(crate) async fn check_on_all(
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

pub async fn run(
    env: &Environment,
    cluster: &Cluster,
    progress: &dyn Progress,
) -> anyhow::Result<Report> {
    let Registry::Local {
        domain,
        port,
        hosts: registry_hosts,
        insecure,
        ..
    } = &cluster.registry
    else {
        bail!("an external registry is not supported yet: use registry.localRegistry");
    };
    if !insecure {
        bail!(
            "a TLS registry is not implemented yet: set registry.localRegistry.insecure: true \
             (the registry is then served over plain HTTP)"
        );
    }
    let name = ImageName::parse(&cluster.image).map_err(anyhow::Error::msg)?;
    let top = env.store.require(&name).await.with_context(|| {
        format!("{name} is not in the local store: `sealer pull` or `sealer load` it first")
    })?;
    let repo = name.repo().map_err(anyhow::Error::msg)?;
    let info = inspect::inspect(&env.store, &repo, &top).await?;
    let platform = info["platforms"]
        .as_array()
        .and_then(|p| {
            p.iter()
                .find(|p| p["platform"] == "linux/amd64")
                .or_else(|| p.first())
        })
        .with_context(|| format!("{name} is not a CloudImage (it has no rootfs manifest)"))?;
    let mut report = Report {
        hosts: cluster.hosts.len(),
        ..Report::default()
    };

    // 1. Connect.
    let hosts = connect_all(env, cluster, progress).await?;
    let data_root = cluster.data_root.join(&cluster.name);
    let blob_root = Path::new(HOST_DIR);

    // 2. Tools.
    let tools = vec![file_blob(&env.sealer_bin)?, file_blob(&env.registry_bin)?];
    let sent = distribute::to_hosts(&hosts, blob_root, &tools, env.jobs).await;
    count(&mut report, "sending sealer's binaries", sent)?;
    let install = format!(
        "set -e\nmkdir -p {HOST_DIR}/bin\n\
         cmp -s {s} {HOST_DIR}/bin/sealer || install -m 0755 {s} {HOST_DIR}/bin/sealer\n\
         cmp -s {r} {HOST_DIR}/bin/sealer-registry || install -m 0755 {r} {HOST_DIR}/bin/sealer-registry",
        s = quote(&distribute::blob_path(blob_root, &tools[0].digest)),
        r = quote(&distribute::blob_path(blob_root, &tools[1].digest)),
    );
    check_on_all("installing sealer's binaries", &hosts, env.jobs, |_| {
        install.clone()
    })
    .await?;

    // 3. The image's files.
    let mut layers = Vec::new();
    for l in platform["layers"].as_array().into_iter().flatten() {
        let digest: Digest = l["digest"].as_str().unwrap_or_default().parse()?;
        let path = env
            .store
            .storage()
            .blob_path(&digest)
            .with_context(|| format!("{name}: layer {digest} is missing from the store"))?;
        layers.push((
            Blob {
                digest,
                path,
                size: l["size"].as_u64().unwrap_or(0),
            },
            l["mediaType"].as_str().unwrap_or_default().to_string(),
        ));
    }
    let layer_blobs: Vec<Blob> = layers.iter().map(|(b, _)| b.clone()).collect();
    let sent = distribute::to_hosts(&hosts, blob_root, &layer_blobs, env.jobs).await;
    count(&mut report, "sending the image's files", sent)?;
    let rootfs = data_root.join("rootfs");
    let stamp: String = layers
        .iter()
        .map(|(b, _)| format!("{}\n", b.digest))
        .collect();
    let mut unpack = format!(
        "set -e\nif [ \"$(cat {dir}/.sealer-layers 2>/dev/null)\" = \"$(printf '%s' {stamp})\" ]; then exit 0; fi\n\
         rm -rf {dir}.new\n{HOST_DIR}/bin/sealer unpack-layers {dir}.new",
        dir = quote(&rootfs),
        stamp = sh_quote(&stamp),
    );
    for (blob, media_type) in &layers {
        unpack.push_str(&format!(
            " {}={}",
            quote(&distribute::blob_path(blob_root, &blob.digest)),
            sh_quote(media_type)
        ));
    }
    unpack.push_str(&format!(
        "\nprintf '%s' {stamp} > {dir}.new/.sealer-layers\nrm -rf {dir}.old\n\
         [ ! -e {dir} ] || mv {dir} {dir}.old\nmv {dir}.new {dir}\nrm -rf {dir}.old",
        dir = quote(&rootfs),
        stamp = sh_quote(&stamp),
    ));
    check_on_all("laying out the image's files", &hosts, env.jobs, |_| {
        unpack.clone()
    })
    .await?;

    // 4. The registry: content, then the service.
    let registries: Vec<Arc<dyn Host>> = hosts
        .iter()
        .filter(|h| registry_hosts.contains(&h.ip()))
        .cloned()
        .collect();
    let scratch = tempfile::tempdir_in(env.store.scratch())?;
    let wanted_name = name.repository();
    let wanted_tag = name.tag.clone().unwrap_or_else(|| "latest".into());
    for host in &registries {
        // Already loaded at this digest: nothing to send.
        let listed = host
            .check(&format!(
                "{HOST_DIR}/bin/sealer --root {HOST_REGISTRY_ROOT} -q images --json"
            ))
            .await?;
        let listed: serde_json::Value = serde_json::from_str(&listed).unwrap_or_default();
        let loaded = listed.as_array().into_iter().flatten().any(|i| {
            i["name"] == wanted_name.as_str()
                && i["tag"] == wanted_tag.as_str()
                && i["digest"] == top.digest.to_string().as_str()
        });
        if loaded {
            host.check(&registry_service(host.ip(), *port)).await?;
            continue;
        }
        let have = host
            .check(&format!(
                "{HOST_DIR}/bin/sealer --root {HOST_REGISTRY_ROOT} -q store have"
            ))
            .await?;
        let have: BTreeSet<Digest> = have.lines().filter_map(|l| l.trim().parse().ok()).collect();
        let delta = scratch.path().join(format!("{}.tar", host.ip()));
        let saved = bundle::save(
            &env.store,
            std::slice::from_ref(&name),
            &delta,
            &SaveOptions {
                have: Some(have),
                ..SaveOptions::default()
            },
            &sealer_builder::progress::Quiet,
        )
        .await?;
        report.registry_blobs_loaded += saved.blobs;
        let mut file = tokio::fs::File::open(&delta).await?;
        let out = host
            .run_streaming(
                &format!("{HOST_DIR}/bin/sealer --root {HOST_REGISTRY_ROOT} -q load -i /dev/stdin"),
                Some(&mut file),
            )
            .await?;
        if !out.success() {
            bail!(
                "host {}: loading the image into the registry failed: {}",
                host.ip(),
                out.stderr.trim()
            );
        }
        report.bytes_sent += saved.bytes;
        let start = registry_service(host.ip(), *port);
        host.check(&start).await?;
    }

    // 5. Every host finds the registry and pulls through it. Files written by an earlier
    // run are removed first, so `--write` backs up only what was there before sealer.
    let upstreams: BTreeSet<String> = info["containerImages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["image"].as_str())
        .filter_map(|r| ImageName::parse(r).ok())
        .map(|n| n.host)
        .collect();
    let wire = |h: &dyn Host| -> String {
        let registry_ip = if registry_hosts.contains(&h.ip()) {
            h.ip()
        } else {
            registry_hosts[0]
        };
        let mut upstream_flags = String::new();
        for u in &upstreams {
            upstream_flags.push_str(&format!(" --upstream {}", sh_quote(u)));
        }
        let (runtime, dir) = match cluster.runtime {
            RuntimeType::Containerd => ("containerd", "/etc/containerd/certs.d"),
            RuntimeType::Docker => ("docker", "/etc/docker"),
        };
        format!(
            "set -e\n{{ grep -v ' # sealer-registry$' /etc/hosts || true; echo '{registry_ip} {domain} # sealer-registry'; }} > /etc/hosts.sealer\n\
             cat /etc/hosts.sealer > /etc/hosts\nrm -f /etc/hosts.sealer\n\
             if [ -f {MIRROR_FILES} ]; then while read -r f; do [ -e \"$f.sealer-backup\" ] || rm -f \"$f\"; done < {MIRROR_FILES}; fi\n\
             {HOST_DIR}/bin/sealer-registry mirror-config --for {runtime} --registry http://{domain}:{port}{upstream_flags} --write {dir} > {MIRROR_FILES}.new\n\
             sed -n 's/^wrote //p' {MIRROR_FILES}.new >> {MIRROR_FILES}\nrm {MIRROR_FILES}.new\n\
             sort -u -o {MIRROR_FILES} {MIRROR_FILES}"
        )
    };
    check_on_all("pointing the hosts at the registry", &hosts, env.jobs, wire).await?;

    // 6. Launch, once per image digest.
    let master0 = hosts
        .iter()
        .find(|h| h.ip() == cluster.master0().ip)
        .expect("master0 is connected");
    let commands: Vec<String> = if cluster.cmd.is_empty() {
        platform["launchCommands"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str().map(str::to_string))
            .collect()
    } else {
        cluster.cmd.clone()
    };
    if !commands.is_empty() {
        let marker = data_root.join(format!("launched-{}", top.digest.hex()));
        let mut script = format!(
            "set -e\n[ ! -e {m} ] || exit 0\ncd {dir}\n",
            m = quote(&marker),
            dir = quote(&rootfs)
        );
        for e in &cluster.env {
            script.push_str(&format!("export {}={}\n", e.key, sh_quote(&e.value)));
        }
        for c in &commands {
            script.push_str(c);
            script.push('\n');
        }
        script.push_str(&format!("touch {}\necho sealer-launched\n", quote(&marker)));
        let out = master0.run(&script).await?;
        if !out.success() {
            bail!(
                "host {}: the launch commands failed: {}",
                master0.ip(),
                out.stderr.trim()
            );
        }
        report.launched = out.stdout.lines().any(|l| l == "sealer-launched");
    }

    save_state(&env.state_dir, cluster)?;
    Ok(report)
}

/// The script that starts `sealer-registry serve` on a registry host unless it runs: a
/// pid-file daemon (a systemd unit where systemd runs).
fn registry_service(ip: IpAddr, port: u16) -> String {
    format!(
        "set -e\nmkdir -p /run/sealer /var/log/sealer\n\
         if [ -d /run/systemd/system ]; then\n\
           cat > /etc/systemd/system/sealer-registry.service <<EOF\n\
[Unit]\nDescription=sealer registry\nAfter=network-online.target\n\
[Service]\nExecStart={HOST_DIR}/bin/sealer-registry serve --addr {ip}:{port} --root {HOST_REGISTRY_ROOT}\nRestart=always\n\
[Install]\nWantedBy=multi-user.target\nEOF\n\
           systemctl daemon-reload\n  systemctl enable --now sealer-registry.service\n  exit 0\n\
         fi\n\
         pid=/run/sealer/registry.pid\n\
         if [ -f $pid ] && kill -0 \"$(cat $pid)\" 2>/dev/null; then exit 0; fi\n\
         log=/var/log/sealer/registry.log\n: > $log\n\
         setsid {HOST_DIR}/bin/sealer-registry serve --addr {ip}:{port} --root {HOST_REGISTRY_ROOT} >> $log 2>&1 < /dev/null &\n\
         echo $! > $pid\n\
         for i in $(seq 100); do grep -q 'listening on' $log && exit 0; kill -0 \"$(cat $pid)\" || break; sleep 0.1; done\n\
         echo \"sealer-registry did not start: $(tail -3 $log)\" >&2; exit 1"
    )
}

fn count(
    report: &mut Report,
    step: &str,
    results: Vec<(IpAddr, Result<distribute::Sent, crate::hosts::HostError>)>,
) -> anyhow::Result<()> {
    let sent = all_ok(
        step,
        results
            .into_iter()
            .map(|(ip, r)| (ip, r.map_err(anyhow::Error::from)))
            .collect(),
    )?;
    for s in sent {
        report.blobs_sent += s.blobs;
        report.bytes_sent += s.bytes;
    }
    Ok(())
}

/// A local file as a blob (hashed).
fn file_blob(path: &Path) -> anyhow::Result<Blob> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let size = file.metadata()?.len();
    let mut hasher = sealer_registry::oci::Algorithm::Sha256.hasher();
    hasher.update_from(file)?;
    Ok(Blob {
        digest: hasher.finish(),
        path: path.to_path_buf(),
        size,
    })
}

/// Keeps the Clusterfile of the cluster under `~/.sealer/<cluster>/`.
pub(crate) fn save_state(state_dir: &Path, cluster: &Cluster) -> anyhow::Result<()> {
    let dir = state_dir.join(&cluster.name);
    std::fs::create_dir_all(&dir)?;
    let hosts: Vec<String> = cluster.hosts.iter().map(|h| h.ip.to_string()).collect();
    let state = serde_json::json!({
        "image": cluster.image,
        "hosts": hosts,
        "dataRoot": cluster.data_root,
    });
    std::fs::write(dir.join("state.json"), serde_json::to_vec_pretty(&state)?)?;
    Ok(())
}
