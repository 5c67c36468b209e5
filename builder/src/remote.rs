//! How sealer reaches registries: one client per host (the pull-proxy's upstream client:
//! token flow, retries, TLS), its address from `--upstream HOST=URL`, plain HTTP for
//! loopback and `--insecure-registry` hosts, credentials from the docker `config.json`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use sealer_pull_proxy::config::{Credentials, DOCKER_HUB, DOCKER_HUB_ENDPOINT, Upstream};
use sealer_pull_proxy::metrics::MirrorMetrics;
use sealer_pull_proxy::upstream::UpstreamClient;
use url::Url;

/// Settings shared by every registry sealer talks to.
#[derive(Debug, Clone, Default)]
pub struct RemoteOptions {
    /// `--upstream HOST=URL`: fetch HOST's images from URL instead.
    pub upstreams: Vec<Upstream>,
    /// Hosts spoken to over plain HTTP (loopback hosts always are).
    pub insecure: Vec<String>,
    /// The docker `config.json` holding logins; `None` uses the default place.
    pub auth_file: Option<PathBuf>,
}

/// Clients per registry host, made once and shared.
pub struct Registries {
    options: RemoteOptions,
    clients: Mutex<HashMap<String, Arc<UpstreamClient>>>,
    metrics: Arc<MirrorMetrics>,
}

impl Registries {
    pub fn new(options: RemoteOptions) -> Registries {
        Registries {
            options,
            clients: Mutex::default(),
            metrics: Arc::default(),
        }
    }

    pub fn auth_file(&self) -> PathBuf {
        self.options
            .auth_file
            .clone()
            .unwrap_or_else(default_auth_file)
    }

    /// The client for `host`.
    pub fn client(&self, host: &str) -> anyhow::Result<Arc<UpstreamClient>> {
        if let Some(c) = self.clients.lock().expect("clients lock").get(host) {
            return Ok(c.clone());
        }
        let client = Arc::new(self.make_client(host, None)?);
        self.clients
            .lock()
            .expect("clients lock")
            .insert(host.to_string(), client.clone());
        Ok(client)
    }

    /// A client for `host` with explicit credentials (`sealer login`), not shared.
    pub fn client_with(
        &self,
        host: &str,
        credentials: Credentials,
    ) -> anyhow::Result<UpstreamClient> {
        self.make_client(host, Some(credentials))
    }

    fn make_client(
        &self,
        host: &str,
        credentials: Option<Credentials>,
    ) -> anyhow::Result<UpstreamClient> {
        let mut upstream = self
            .options
            .upstreams
            .iter()
            .find(|u| u.host == host)
            .cloned()
            .unwrap_or_else(|| Upstream::new(host));
        if upstream.endpoint.is_none() {
            let scheme = if self.is_insecure(host) {
                "http"
            } else {
                "https"
            };
            let url = if host == DOCKER_HUB {
                DOCKER_HUB_ENDPOINT.to_string()
            } else {
                format!("{scheme}://{host}")
            };
            upstream.endpoint =
                Some(Url::parse(&url).with_context(|| format!("invalid registry host {host:?}"))?);
        }
        // Explicit credentials, then the upstream's own (`--upstream` settings), then the
        // docker config file.
        upstream.credentials = match credentials.or(upstream.credentials.take()) {
            Some(c) => Some(c),
            None => {
                let file = self.auth_file();
                if file.is_file() {
                    sealer_pull_proxy::upstream::credentials::from_docker_config(&file, host)?
                } else {
                    None
                }
            }
        };
        // Builds and pushes move large blobs: give slow links time.
        upstream.timeout = std::time::Duration::from_secs(300);
        UpstreamClient::new(host, &upstream, self.metrics.clone())
    }

    fn is_insecure(&self, host: &str) -> bool {
        let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
        let name = name.trim_start_matches('[').trim_end_matches(']');
        name == "localhost"
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
            || self.options.insecure.iter().any(|h| h == host || h == name)
    }
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`, as docker reads it.
pub fn default_auth_file() -> PathBuf {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("config.json");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".docker/config.json")
}

/// The key docker's `config.json` uses for `host`.
fn auth_key(host: &str) -> String {
    if host == DOCKER_HUB {
        "https://index.docker.io/v1/".into()
    } else {
        host.to_string()
    }
}

/// Records a login in the docker `config.json` at `file`, keeping everything else in it.
pub fn save_login(file: &std::path::Path, host: &str, c: &Credentials) -> anyhow::Result<()> {
    let mut config = read_config(file)?;
    config["auths"][auth_key(host)] = serde_json::json!({ "auth": c.basic() });
    write_config(file, &config)
}

/// Removes a login; returns whether there was one.
pub fn remove_login(file: &std::path::Path, host: &str) -> anyhow::Result<bool> {
    if !file.exists() {
        return Ok(false);
    }
    let mut config = read_config(file)?;
    let removed = config
        .get_mut("auths")
        .and_then(|a| a.as_object_mut())
        .is_some_and(|a| a.remove(&auth_key(host)).is_some());
    if removed {
        write_config(file, &config)?;
    }
    Ok(removed)
}

fn read_config(file: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let mut config = match std::fs::read(file) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("{} is not valid JSON", file.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    if !config.is_object() {
        anyhow::bail!("{} does not hold a JSON object", file.display());
    }
    if !config["auths"].is_object() {
        config["auths"] = serde_json::json!({});
    }
    Ok(config)
}

fn write_config(file: &std::path::Path, config: &serde_json::Value) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = file.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(".config.json.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(&serde_json::to_vec_pretty(config)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, file).with_context(|| format!("cannot write {}", file.display()))
}
