//! Step 4: the cluster's registry.
//!
//! A local registry (`localRegistry`, the default): its certificate (unless `insecure`),
//! a CA and a server certificate for the domain, the SANs and every registry host's
//! address, made once on this machine under `~/.sealer/<cluster>/pki` and made again only
//! when the names change; the CA goes to every host. With a username and password, an
//! htpasswd file (bcrypt, made again only when the password changes) goes to the
//! registry hosts. On each registry host, the image's content is loaded into the
//! registry's store (its file layers by hard link from the blobs step 3 sent, the rest
//! as a delta bundle against what that store has), and `sealer-registry
//! serve --read-only` runs as a service (nothing reaches the store over the network;
//! `/metrics` only for the login, or not at all without one): a systemd unit where systemd runs, a pid-file daemon
//! otherwise, restarted only when its command line or its logins change.
//!
//! An external registry (`externalRegistry`): the image's container images are pushed
//! to it from this machine, each under its upstream's name as a path prefix
//! (`harbor.corp/docker.io/library/nginx:1.25`), and its CA (if given) goes to every
//! host. Either way, a login goes to every host (`login`, mode 0600) for the runtime
//! wiring.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use sealer_builder::bundle::{self, SaveOptions};
use sealer_builder::progress::Progress;
use sealer_builder::reference::ImageName;
use sealer_builder::remote::{Registries, RemoteOptions};
use sealer_builder::transfer::Transfer;
use sealer_client::credentials::Credentials;
use sealer_client::endpoint::Upstream;
use sealer_registry::auth::htpasswd::Htpasswd;
use sealer_registry::oci::Digest;

use super::Report;
use super::{HOST_DIR, HOST_PKI, HOST_REGISTRY_ROOT, SmallFile, all_ok, put_files};
use crate::clusterfile::{Cluster, Registry};
use crate::environment::Environment;
use crate::hosts::{Host, on_all};
use crate::image::Image;

/// The registry the cluster's hosts pull through.
pub struct ClusterRegistry {
    pub place: Place,
    /// The CA hosts trust it by: the generated one for a local registry over TLS, the
    /// Clusterfile's `ca` for an external one (always https: `ca` with `insecure` is refused).
    pub ca: Option<Vec<u8>>,
    /// The login it wants (`username`/`password`).
    pub login: Option<Credentials>,
}

pub enum Place {
    Local(LocalRegistry),
    External(ExternalRegistry),
}

/// `sealer-registry serve` on the cluster's registry hosts.
pub struct LocalRegistry {
    pub domain: String,
    pub port: u16,
    /// The registry hosts, in order (master0 first).
    pub hosts: Vec<IpAddr>,
    /// The server's certificate, unless the registry is insecure.
    pub tls: Option<ServerCert>,
    /// The logins it checks (an htpasswd file), when it has a login.
    pub htpasswd: Option<Vec<u8>>,
}

pub struct ServerCert {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

/// A registry the cluster already has.
pub struct ExternalRegistry {
    /// `https` or `http`.
    pub scheme: &'static str,
    /// `domain[:port]`.
    pub authority: String,
}

impl ClusterRegistry {
    /// What the Clusterfile says, with the certificate and htpasswd made or reused.
    pub fn of(env: &Environment, cluster: &Cluster) -> anyhow::Result<ClusterRegistry> {
        let pki = env.state_dir.join(&cluster.name).join("pki");
        match &cluster.registry {
            Registry::Local {
                domain,
                port,
                username,
                password,
                hosts,
                insecure,
                dns_names,
                ips,
            } => {
                let login = credentials(username, password);
                let (ca, tls) = if *insecure {
                    (None, None)
                } else {
                    let mut names = vec![domain.clone()];
                    names.extend(dns_names.iter().cloned());
                    let mut addrs: Vec<IpAddr> = hosts.clone();
                    addrs.extend(ips.iter().copied());
                    let (ca, cert) = certificate(&pki, names, addrs)?;
                    (Some(ca), Some(cert))
                };
                let htpasswd = login.as_ref().map(|l| htpasswd(&pki, l)).transpose()?;
                Ok(ClusterRegistry {
                    place: Place::Local(LocalRegistry {
                        domain: domain.clone(),
                        port: *port,
                        hosts: hosts.clone(),
                        tls,
                        htpasswd,
                    }),
                    ca,
                    login,
                })
            }
            Registry::External {
                domain,
                port,
                username,
                password,
                insecure,
                ca,
            } => {
                let ca = ca
                    .as_ref()
                    .map(|p| {
                        std::fs::read(p).with_context(|| {
                            format!("registry.externalRegistry.ca: cannot read {}", p.display())
                        })
                    })
                    .transpose()?;
                Ok(ClusterRegistry {
                    place: Place::External(ExternalRegistry {
                        scheme: if *insecure { "http" } else { "https" },
                        authority: match port {
                            Some(p) => format!("{domain}:{p}"),
                            None => domain.clone(),
                        },
                    }),
                    ca,
                    login: credentials(username, password),
                })
            }
        }
    }

    /// The local registry, if the cluster runs one.
    pub fn local(&self) -> Option<&LocalRegistry> {
        match &self.place {
            Place::Local(l) => Some(l),
            Place::External(_) => None,
        }
    }

    pub fn scheme(&self) -> &'static str {
        match &self.place {
            Place::Local(l) if l.tls.is_some() => "https",
            Place::Local(_) => "http",
            Place::External(e) => e.scheme,
        }
    }
}

fn credentials(username: &Option<String>, password: &Option<String>) -> Option<Credentials> {
    Some(Credentials {
        username: username.clone()?,
        password: password.clone()?,
    })
}

/// The htpasswd for `login` in `dir`, made again only when it no longer matches (bcrypt
/// salts differ each time, and a changed file restarts the registries).
fn htpasswd(dir: &Path, login: &Credentials) -> anyhow::Result<Vec<u8>> {
    let path = dir.join("htpasswd");
    if let Ok(text) = std::fs::read_to_string(&path)
        && Htpasswd::parse(&text)
            .is_ok_and(|h| h.len() == 1 && h.verify(&login.username, &login.password))
    {
        return Ok(text.into_bytes());
    }
    let text = Htpasswd::entry(&login.username, &login.password)
        .context("registry.localRegistry.username")?;
    std::fs::create_dir_all(dir)?;
    // Only this user reads it, as the key beside it.
    sealer_registry::storage::fs::durable::write_file(&path, text.as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(text.into_bytes())
}

/// The CA and a certificate for `names` and `addrs` in `dir`, issued again only when
/// the names change; the CA is made once and kept.
fn certificate(
    dir: &Path,
    mut names: Vec<String>,
    mut addrs: Vec<IpAddr>,
) -> anyhow::Result<(Vec<u8>, ServerCert)> {
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
    Ok((
        read(dir.join("ca.crt"))?,
        ServerCert {
            cert: read(cert)?,
            key: read(dir.join("tls.key"))?,
        },
    ))
}

/// Puts the CA and the login on every host, and the certificate, key and htpasswd on
/// the registry hosts; each only where it differs.
pub async fn send_files(
    env: &Environment,
    registry: &ClusterRegistry,
    hosts: &[Arc<dyn Host>],
) -> anyhow::Result<()> {
    let results = on_all(hosts, env.jobs, |h| async move {
        let mut files = Vec::new();
        if let Some(ca) = &registry.ca {
            files.push(SmallFile {
                path: format!("{HOST_PKI}/ca.crt"),
                content: ca.clone(),
                mode: 0o644,
            });
        }
        if let Some(login) = &registry.login {
            files.push(SmallFile {
                path: format!("{HOST_PKI}/login"),
                content: format!("{}:{}\n", login.username, login.password).into_bytes(),
                mode: 0o600,
            });
        }
        if let Some(local) = registry.local().filter(|l| l.hosts.contains(&h.ip())) {
            if let Some(tls) = &local.tls {
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
            if let Some(htpasswd) = &local.htpasswd {
                files.push(SmallFile {
                    path: format!("{HOST_PKI}/htpasswd"),
                    content: htpasswd.clone(),
                    mode: 0o600,
                });
            }
        }
        put_files(h, &files).await.map_err(anyhow::Error::from)
    })
    .await;
    all_ok("sending the registry's certificates and logins", results).map(|_| ())
}

/// Makes the image's container images available from the cluster's registry: loaded
/// into the local registry hosts' stores (and the registry started there), or pushed to
/// the external registry.
pub async fn provide(
    env: &Environment,
    cluster: &Cluster,
    registry: &ClusterRegistry,
    hosts: &[Arc<dyn Host>],
    image: &Image,
    report: &mut Report,
    progress: &dyn Progress,
) -> anyhow::Result<()> {
    match &registry.place {
        Place::Local(local) => load_and_serve(env, local, hosts, image, report, progress).await,
        Place::External(external) => {
            let docker = cluster.runtime == crate::clusterfile::RuntimeType::Docker;
            push_to_external(env, external, registry, image, docker, progress).await
        }
    }
}

/// Pushes each carried image to `<external>/<upstream host>/<repository>` (for docker,
/// docker.io ones also without the prefix, where its `registry-mirrors` asks for them);
/// blobs and manifests the registry has are skipped, so a re-run sends nothing.
async fn push_to_external(
    env: &Environment,
    external: &ExternalRegistry,
    registry: &ClusterRegistry,
    image: &Image,
    docker: bool,
    progress: &dyn Progress,
) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir_in(env.store.scratch())?;
    let mut upstream = Upstream::new(&external.authority);
    upstream.endpoint = Some(
        url::Url::parse(&format!("{}://{}", external.scheme, external.authority))
            .with_context(|| format!("registry.externalRegistry: {}", external.authority))?,
    );
    upstream.credentials = registry.login.clone();
    if let Some(ca) = &registry.ca {
        let path = scratch.path().join("ca.crt");
        std::fs::write(&path, ca)?;
        upstream.ca_file = Some(path);
    }
    upstream.timeout = std::time::Duration::from_secs(300);
    let registries = Registries::new(RemoteOptions {
        upstreams: vec![upstream],
        auth_file: Some(scratch.path().join("no-config.json")),
        ..RemoteOptions::default()
    });
    let transfer = Transfer::new(&env.store, &registries, progress, env.jobs);
    let repo = image.name.repo()?;
    for (carried, digest) in &image.carried {
        let mut names = vec![format!("{}/{}", carried.host, carried.remote)];
        if docker && carried.host == sealer_registry::oci::docker_hub::HOST {
            names.push(carried.remote.clone());
        }
        for name in names {
            let target = ImageName {
                host: external.authority.clone(),
                remote: name,
                tag: carried.tag.clone(),
                digest: None,
            };
            transfer
                .push_graph(&repo, digest, &target)
                .await
                .with_context(|| {
                    format!(
                        "pushing {carried} to the external registry {}",
                        external.authority
                    )
                })?;
        }
    }
    Ok(())
}

/// Loads the image into the store of each registry host that lacks it, and starts the
/// registry there. What the stores lack goes as one delta bundle, made once and relayed
/// among the registry hosts like any blob: with several of them, it leaves this machine
/// once and they fill each other.
async fn load_and_serve(
    env: &Environment,
    registry: &LocalRegistry,
    hosts: &[Arc<dyn Host>],
    image: &Image,
    report: &mut Report,
    progress: &dyn Progress,
) -> anyhow::Result<()> {
    let registries: Vec<Arc<dyn Host>> = hosts
        .iter()
        .filter(|h| registry.hosts.contains(&h.ip()))
        .cloned()
        .collect();
    let wanting = on_all(
        &registries,
        env.jobs,
        |h| async move { wants(h, image).await },
    )
    .await;
    let wanting: Vec<(Arc<dyn Host>, BTreeSet<Digest>)> = registries
        .iter()
        .cloned()
        .zip(all_ok("asking the registry hosts what they have", wanting)?)
        .filter_map(|(h, have)| have.map(|have| (h, have)))
        .collect();
    if !wanting.is_empty() {
        let scratch = tempfile::tempdir_in(env.store.scratch())?;
        let (bundle, saved) = delta(env, image, &wanting, scratch.path()).await?;
        let targets: Vec<Arc<dyn Host>> = wanting.iter().map(|(h, _)| h.clone()).collect();
        let root = Path::new(HOST_DIR);
        let blobs = std::slice::from_ref(&bundle);
        let outcome = env.delivery(&targets, root, blobs).run(progress).await;
        report.delivered("sending the registry's content", outcome)?;
        let path = crate::distribute::host_blob(root, &bundle.digest);
        let load = format!(
            "set -e\n{HOST_DIR}/bin/sealer --root {HOST_REGISTRY_ROOT} -q load --trust-store-blobs -i {p}\nrm -f {p}",
            p = crate::distribute::quote(&path)
        );
        let loaded = on_all(&targets, env.jobs, |h| {
            let load = load.clone();
            async move {
                h.check(&load).await.with_context(|| {
                    format!("host {}: loading the image into the registry", h.ip())
                })
            }
        })
        .await;
        all_ok("loading the registry", loaded)?;
        report.registry_blobs_loaded += saved * targets.len();
    }
    let started = on_all(&registries, env.jobs, |h| async move {
        h.check(&service(registry, h.ip()))
            .await
            .map_err(anyhow::Error::from)
    })
    .await;
    all_ok("starting the registry", started).map(|_| ())
}

/// What `host`'s registry store has, or `None` when it has the image already. The
/// image's file layers are already on the host (step 3, verified on arrival): the store
/// takes them from there first, so no bundle carries them.
async fn wants(host: &dyn Host, image: &Image) -> anyhow::Result<Option<BTreeSet<Digest>>> {
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
        return Ok(None);
    }
    let layers: Vec<String> = image
        .layers
        .iter()
        .map(|(b, _)| b.digest.to_string())
        .collect();
    host.check(&format!(
        "{sealer} store import {HOST_DIR}/blobs/sha256 {}",
        layers.join(" ")
    ))
    .await?;
    let have = host.check(&format!("{sealer} store have")).await?;
    Ok(Some(
        have.lines().filter_map(|l| l.trim().parse().ok()).collect(),
    ))
}

/// One bundle of what any of the `wanting` stores lacks (what they all have is left
/// out), saved in `dir`, as a blob; and how many blobs it carries.
async fn delta(
    env: &Environment,
    image: &Image,
    wanting: &[(Arc<dyn Host>, BTreeSet<Digest>)],
    dir: &Path,
) -> anyhow::Result<(crate::distribute::Blob, usize)> {
    let mut have = wanting[0].1.clone();
    for (_, h) in &wanting[1..] {
        have.retain(|d| h.contains(d));
    }
    let path = dir.join("registry.tar");
    let saved = bundle::save(
        &env.store,
        std::slice::from_ref(&image.name),
        &path,
        &SaveOptions {
            have: Some(have),
            ..SaveOptions::default()
        },
        &sealer_builder::progress::Quiet,
    )
    .await?;
    let blob = crate::distribute::Blob::of_file(path.clone())
        .with_context(|| format!("reading {}", path.display()))?;
    Ok((blob, saved.blobs))
}

/// The script that keeps `sealer-registry serve` running on `ip` with this command line
/// (restarted when it or the logins change: the registry reads them at start).
fn service(registry: &LocalRegistry, ip: IpAddr) -> String {
    // Content arrives only through `sealer load` on the host, so the network gets no
    // way to write: a push or delete would let anyone who reaches the host replace
    // what every node pulls.
    let mut command = format!(
        "{HOST_DIR}/bin/sealer-registry serve --addr {ip}:{port} --root {HOST_REGISTRY_ROOT} --read-only",
        port = registry.port
    );
    if registry.tls.is_some() {
        command.push_str(&format!(
            " --tls-cert {HOST_PKI}/tls.crt --tls-key {HOST_PKI}/tls.key"
        ));
    }
    let mut logins = String::new();
    if let Some(h) = &registry.htpasswd {
        command.push_str(&format!(" --htpasswd {HOST_PKI}/htpasswd --metrics-auth"));
        logins = format!("# logins {}", Digest::sha256_of(h));
    } else {
        // Metrics name every repository and client; without logins nobody may read them.
        command.push_str(" --no-metrics");
    }
    format!(
        "set -e\nmkdir -p /run/sealer /var/log/sealer\n\
         if [ -d /run/systemd/system ]; then\n\
           unit=/etc/systemd/system/sealer-registry.service\n\
           cat > $unit.new <<EOF\n\
[Unit]\nDescription=sealer registry\nAfter=network-online.target\n\
[Service]\n{logins}\nExecStart={command}\nRestart=always\n\
[Install]\nWantedBy=multi-user.target\nEOF\n\
           if cmp -s $unit.new $unit; then rm $unit.new; else mv $unit.new $unit; systemctl daemon-reload; systemctl restart sealer-registry.service; fi\n\
           systemctl enable --now sealer-registry.service\n  exit 0\n\
         fi\n\
         pid=/run/sealer/registry.pid\n\
         if [ -f $pid ] && kill -0 \"$(cat $pid)\" 2>/dev/null; then\n\
           if [ \"$(cat /run/sealer/registry.cmd 2>/dev/null)\" = '{command}{logins}' ]; then exit 0; fi\n\
           p=$(cat $pid); kill \"$p\"; for i in $(seq 100); do kill -0 \"$p\" 2>/dev/null || break; sleep 0.1; done\n\
         fi\n\
         log=/var/log/sealer/registry.log\n: > $log\n\
         setsid {command} >> $log 2>&1 < /dev/null &\n\
         echo $! > $pid\necho '{command}{logins}' > /run/sealer/registry.cmd\n\
         for i in $(seq 100); do grep -q 'listening on' $log && exit 0; kill -0 \"$(cat $pid)\" || break; sleep 0.1; done\n\
         echo \"sealer-registry did not start: $(tail -3 $log)\" >&2; exit 1"
    )
}
