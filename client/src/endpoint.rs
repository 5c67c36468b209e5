//! Where and how to reach a registry: its host as clients name it, the API's base URL,
//! credentials, TLS, timeouts and the bounds on what it may send (`--upstream HOST=URL`,
//! the mirror's `[[mirror.upstreams]]` entries).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use sealer_registry::oci::docker_hub;
use url::Url;

use crate::credentials::Credentials;

/// Where and how to reach one upstream registry.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The name clients use (`docker.io`, `quay.io`), or `*` for any host.
    pub host: String,
    /// The registry API's base URL; for `*`, derived per host.
    pub endpoint: Option<Url>,
    pub credentials: Option<Credentials>,
    pub ca_file: Option<PathBuf>,
    /// Accept any TLS certificate.
    pub insecure: bool,
    /// Time to connect: beyond it the upstream counts as unreachable.
    pub dial_timeout: Duration,
    /// Time for an upstream response to start (and between its body's reads); also the
    /// whole time a manifest, tag list, referrers list or token request may take.
    pub timeout: Duration,
    pub limits: Limits,
}

/// Bounds on what an upstream may send: upstreams are not trusted.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest manifest (the registry's own `manifests.max_size`).
    pub max_manifest_bytes: usize,
    /// Largest tag list, referrers list or token answer.
    pub max_list_bytes: usize,
    /// Largest blob a fill takes (the registry's `max_upload_size`).
    pub max_blob_bytes: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 4 * 1024 * 1024,
            max_list_bytes: 4 * 1024 * 1024,
            max_blob_bytes: None,
        }
    }
}

impl Upstream {
    pub fn new(host: &str) -> Upstream {
        Upstream {
            host: host.to_string(),
            endpoint: None,
            credentials: None,
            ca_file: None,
            insecure: false,
            dial_timeout: Duration::from_secs(3),
            timeout: Duration::from_secs(60),
            limits: Limits::default(),
        }
    }

    /// The API base URL for `host` served by this entry; an error for a `host` that
    /// makes no URL (see [`is_valid_host`]).
    pub fn endpoint_for(&self, host: &str) -> anyhow::Result<Url> {
        if let Some(e) = &self.endpoint {
            return Ok(e.clone());
        }
        if host == docker_hub::HOST {
            return Ok(Url::parse(docker_hub::ENDPOINT)?);
        }
        anyhow::ensure!(is_valid_host(host), "{host:?} is not a registry host");
        Url::parse(&format!("https://{host}")).with_context(|| format!("{host:?} makes no URL"))
    }
}

/// Whether `host` is a registry host a URL can be made of: a DNS name or IP address
/// with an optional port, nothing else (no user, path or bad port). `ns` comes from
/// the client, so it is checked before it names a connection.
pub fn is_valid_host(host: &str) -> bool {
    let charset = |b: u8| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b);
    if host.is_empty() || !host.bytes().all(charset) {
        return false;
    }
    url::Url::parse(&format!("https://{host}/"))
        .is_ok_and(|u| u.host_str().is_some() && u.username().is_empty() && u.path() == "/")
}

pub fn normalize_host(host: &str) -> anyhow::Result<String> {
    let host = host.trim().to_ascii_lowercase();
    let host = docker_hub::canonical(&host).to_string();
    if host != "*" && !is_valid_host(&host) {
        bail!(
            "invalid upstream host {host:?}: expected a registry host such as docker.io or quay.io:443"
        );
    }
    Ok(host)
}

pub fn parse_endpoint(s: &str) -> anyhow::Result<Url> {
    let url = Url::parse(s).with_context(|| format!("invalid upstream endpoint {s:?}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        bail!("upstream endpoint {s:?} must be an http:// or https:// URL");
    }
    Ok(url)
}

/// `HOST=URL` or `HOST`.
pub fn parse_flag(spec: &str) -> anyhow::Result<Upstream> {
    let (host, endpoint) = match spec.split_once('=') {
        Some((h, e)) => (h, Some(e)),
        None => (spec, None),
    };
    let mut u = Upstream::new(&normalize_host(host)?);
    if let Some(e) = endpoint {
        u.endpoint = Some(parse_endpoint(e)?);
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_names_a_host_and_maybe_where_it_is() {
        let hub = parse_flag("registry-1.docker.io").unwrap();
        assert_eq!(hub.host, "docker.io");
        assert_eq!(
            hub.endpoint_for("docker.io").unwrap().as_str(),
            "https://registry-1.docker.io/"
        );
        let local = parse_flag("quay.io=http://127.0.0.1:6000").unwrap();
        assert_eq!(
            local.endpoint_for("quay.io").unwrap().as_str(),
            "http://127.0.0.1:6000/"
        );
        for bad in [
            "docker.io=ftp://x",
            "a/b=http://x",
            "=http://x",
            "docker.io=not a url",
            "a:b",
            "a:99999",
            "1.2.3.4.5",
            "u@x.io",
        ] {
            assert!(parse_flag(bad).is_err(), "{bad}");
        }
    }
}
