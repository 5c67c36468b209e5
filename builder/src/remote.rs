//! How sealer reaches registries: one registry client per host (the `sealer-client`
//! crate: token flow, retries, TLS), its address from `--upstream HOST=URL`, plain HTTP
//! for loopback and `--insecure-registry` hosts, credentials from the docker `config.json`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use sealer_client::UpstreamClient;
use sealer_client::credentials::Credentials;
use sealer_client::endpoint::Upstream;
use sealer_client::{Observer, Unobserved};
use sealer_registry::oci::docker_hub;
use url::Url;

pub use sealer_client::credentials::{Saved, remove_login, save_login};

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
    observer: Arc<dyn Observer>,
}

impl Registries {
    pub fn new(options: RemoteOptions) -> Registries {
        Registries {
            options,
            clients: Mutex::default(),
            observer: Arc::new(Unobserved),
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
            let url = if host == docker_hub::HOST {
                docker_hub::ENDPOINT.to_string()
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
                    sealer_client::credentials::from_docker_config(&file, host)?
                } else {
                    None
                }
            }
        };
        // Builds and pushes move large blobs: give slow links time.
        upstream.timeout = std::time::Duration::from_secs(300);
        UpstreamClient::new(host, &upstream, self.observer.clone())
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
