//! Step 4: the cluster's registry. Its certificate (unless `insecure`): a CA and a
//! server certificate for the domain, the SANs and every registry host's address, made
//! once on this machine under `~/.sealer/<cluster>/pki` and made again only when the
//! names change; the CA goes to every host. On each registry host, the image's content
//! is loaded into the registry's store (a delta bundle against what that store has),
//! and `sealer-registry serve` runs as a service: a systemd unit where systemd runs, a
//! pid-file daemon otherwise, restarted only when its command line changes.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use sealer_builder::bundle::{self, SaveOptions};
use sealer_registry::oci::Digest;

use super::{HOST_DIR, HOST_PKI, HOST_REGISTRY_ROOT, SmallFile, all_ok, put_files};
use crate::clusterfile::{Cluster, Registry};
use crate::hosts::{Host, on_all};
use crate::image::Image;
use crate::run::{Environment, Report};

/// The local registry as the Clusterfile sets it up.
pub struct LocalRegistry {
    pub domain: String,
    pub port: u16,
    /// The registry hosts, in order (master0 first).
    pub hosts: Vec<IpAddr>,
    /// The certificate files, unless the registry is insecure.
    pub tls: Option<TlsFiles>,
}

pub struct TlsFiles {
    pub ca: Vec<u8>,
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl LocalRegistry {
    /// What the Clusterfile says, with the certificate made or reused.
    pub fn of(env: &Environment, cluster: &Cluster) -> anyhow::Result<LocalRegistry> {
        let Registry::Local {
            domain,
            port,
            username,
            hosts,
            insecure,
            dns_names,
            ips,
            ..
        } = &cluster.registry
        else {
            bail!("an external registry is not supported yet: use registry.localRegistry");
        };
        if username.is_some() {
            bail!(
                "registry.localRegistry.username/password: the registry's own logins are not \
                 available yet; leave them out (the registry then serves without a login)"
            );
        }
        let tls = if *insecure {
            None
        } else {
            let mut names = vec![domain.clone()];
            names.extend(dns_names.iter().cloned());
            let mut addrs: Vec<IpAddr> = hosts.clone();
            addrs.extend(ips.iter().copied());
            Some(certificate(
                &env.state_dir.join(&cluster.name).join("pki"),
                names,
                addrs,
            )?)
        };
        Ok(LocalRegistry {
            domain: domain.clone(),
            port: *port,
            hosts: hosts.clone(),
            tls,
        })
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// The CA and a certificate for `names` and `addrs` in `dir`, issued again only when
/// the names change; the CA is made once and kept.
fn certificate(
    dir: &Path,
    mut names: Vec<String>,
    mut addrs: Vec<IpAddr>,
) -> anyhow::Result<TlsFiles> {
    names.sort();
    names.dedup();
    addrs.sort();
    addrs.dedup();
    let wanted = serde_json::to_string(&(&names, &addrs))?;
    let sans = dir.join("sans.json");
    let cert = dir.join("tls.crt");
    if std::fs::read_to_string(&sans).ok().as_deref() != Some(wanted.as_str()) || !cert.exists() {
        sealer_registry::tls::issue(dir, &names, &addrs, 3650)
            .with_context(|| format!("making the registry's certificate in {}", dir.display()))?;
        std::fs::write(&sans, &wanted)?;
    }
    let read =
        |p: PathBuf| std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()));
    Ok(TlsFiles {
        ca: read(dir.join("ca.crt"))?,
        cert: read(cert)?,
        key: read(dir.join("tls.key"))?,
    })
}

/// Puts the CA on every host, and the certificate and key on the registry hosts.
pub async fn send_certificates(
    env: &Environment,
    registry: &LocalRegistry,
    hosts: &[Arc<dyn Host>],
) -> anyhow::Result<()> {
    let Some(tls) = &registry.tls else {
        return Ok(());
    };
    let results = on_all(hosts, env.jobs, |h| async move {
        let mut files = vec![SmallFile {
            path: format!("{HOST_PKI}/ca.crt"),
            content: tls.ca.clone(),
            mode: 0o644,
        }];
        if registry.hosts.contains(&h.ip()) {
            files.push(SmallFile {
                path: format!("{HOST_PKI}/tls.crt"),
                content: tls.cert.clone(),
                mode: 0o644,
            });
            files.push(SmallFile {
                path: format!("{HOST_PKI}/tls.key"),
                content: tls.key.clone(),
                mode: 0o600,
            });
        }
        put_files(h, &files).await.map_err(anyhow::Error::from)
    })
    .await;
    all_ok("sending the registry's certificates", results).map(|_| ())
}

/// Loads the image into the store of each registry host that lacks it, and starts the
/// registry there.
pub async fn load_and_serve(
    env: &Environment,
    registry: &LocalRegistry,
    hosts: &[Arc<dyn Host>],
    image: &Image,
    report: &mut Report,
) -> anyhow::Result<()> {
    let registries: Vec<Arc<dyn Host>> = hosts
        .iter()
        .filter(|h| registry.hosts.contains(&h.ip()))
        .cloned()
        .collect();
    let scratch = tempfile::tempdir_in(env.store.scratch())?;
    let results = on_all(&registries, env.jobs, |h| {
        let scratch = scratch.path();
        async move {
            let loaded = load(env, h, image, scratch).await?;
            h.check(&service(registry, h.ip())).await?;
            Ok(loaded)
        }
    })
    .await;
    for (blobs, bytes) in all_ok("starting the registry", results)? {
        report.registry_blobs_loaded += blobs;
        report.bytes_sent += bytes;
    }
    Ok(())
}

/// Loads what `host`'s registry store lacks of `image`: (blobs, bytes) sent.
async fn load(
    env: &Environment,
    host: &dyn Host,
    image: &Image,
    scratch: &Path,
) -> anyhow::Result<(usize, u64)> {
    let sealer = format!("{HOST_DIR}/bin/sealer --root {HOST_REGISTRY_ROOT} -q");
    let listed = host.check(&format!("{sealer} images --json")).await?;
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap_or_default();
    let tag = image.name.tag.clone().unwrap_or_else(|| "latest".into());
    let repository = image.name.repository();
    let loaded = listed.as_array().into_iter().flatten().any(|i| {
        i["name"] == repository.as_str()
            && i["tag"] == tag.as_str()
            && i["digest"] == image.digest.to_string().as_str()
    });
    if loaded {
        return Ok((0, 0));
    }
    let have = host.check(&format!("{sealer} store have")).await?;
    let have: BTreeSet<Digest> = have.lines().filter_map(|l| l.trim().parse().ok()).collect();
    let delta = scratch.join(format!("{}.tar", host.ip()));
    let saved = bundle::save(
        &env.store,
        std::slice::from_ref(&image.name),
        &delta,
        &SaveOptions {
            have: Some(have),
            ..SaveOptions::default()
        },
        &sealer_builder::progress::Quiet,
    )
    .await?;
    let mut file = tokio::fs::File::open(&delta).await?;
    let out = host
        .run_streaming(&format!("{sealer} load -i /dev/stdin"), Some(&mut file))
        .await?;
    let _ = std::fs::remove_file(&delta);
    if !out.success() {
        bail!(
            "host {}: loading the image into the registry failed: {}",
            host.ip(),
            out.stderr.trim()
        );
    }
    Ok((saved.blobs, saved.bytes))
}

/// The script that keeps `sealer-registry serve` running on `ip` with this command line.
fn service(registry: &LocalRegistry, ip: IpAddr) -> String {
    let mut command = format!(
        "{HOST_DIR}/bin/sealer-registry serve --addr {ip}:{port} --root {HOST_REGISTRY_ROOT}",
        port = registry.port
    );
    if registry.tls.is_some() {
        command.push_str(&format!(
            " --tls-cert {HOST_PKI}/tls.crt --tls-key {HOST_PKI}/tls.key"
        ));
    }
    format!(
        "set -e\nmkdir -p /run/sealer /var/log/sealer\n\
         if [ -d /run/systemd/system ]; then\n\
           unit=/etc/systemd/system/sealer-registry.service\n\
           cat > $unit.new <<EOF\n\
[Unit]\nDescription=sealer registry\nAfter=network-online.target\n\
[Service]\nExecStart={command}\nRestart=always\n\
[Install]\nWantedBy=multi-user.target\nEOF\n\
           if cmp -s $unit.new $unit; then rm $unit.new; else mv $unit.new $unit; systemctl daemon-reload; systemctl restart sealer-registry.service; fi\n\
           systemctl enable --now sealer-registry.service\n  exit 0\n\
         fi\n\
         pid=/run/sealer/registry.pid\n\
         if [ -f $pid ] && kill -0 \"$(cat $pid)\" 2>/dev/null; then\n\
           if [ \"$(cat /run/sealer/registry.cmd 2>/dev/null)\" = '{command}' ]; then exit 0; fi\n\
           p=$(cat $pid); kill \"$p\"; for i in $(seq 100); do kill -0 \"$p\" 2>/dev/null || break; sleep 0.1; done\n\
         fi\n\
         log=/var/log/sealer/registry.log\n: > $log\n\
         setsid {command} >> $log 2>&1 < /dev/null &\n\
         echo $! > $pid\necho '{command}' > /run/sealer/registry.cmd\n\
         for i in $(seq 100); do grep -q 'listening on' $log && exit 0; kill -0 \"$(cat $pid)\" || break; sleep 0.1; done\n\
         echo \"sealer-registry did not start: $(tail -3 $log)\" >&2; exit 1"
    )
}
