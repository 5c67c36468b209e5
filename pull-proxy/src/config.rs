//! Mirror settings: the `[mirror]` table of the registry's config file and the
//! `--upstream`, `--offline` and `--tag-ttl` flags of `sealer-registry serve`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;

pub use sealer_client::credentials::Credentials;
pub use sealer_client::endpoint::{Limits, Upstream, is_valid_host, parse_flag};
use sealer_client::endpoint::{normalize_host, parse_endpoint};

/// Flags of `sealer-registry serve` for the mirror.
#[derive(Debug, Clone, Default, Args)]
pub struct MirrorArgs {
    /// Mirror an upstream registry: HOST=URL (e.g. `docker.io=http://127.0.0.1:6000`), or
    /// just HOST for its public endpoint (`docker.io` → https://registry-1.docker.io).
    /// Repeatable; `*` allows any host. Adds to the config file's upstreams.
    #[arg(
        long = "upstream",
        value_name = "HOST[=URL]",
        env = "SEALER_REGISTRY_UPSTREAMS",
        value_delimiter = ','
    )]
    pub upstreams: Vec<String>,

    /// Never contact upstreams: what is not in the store is answered 404 at once.
    #[arg(long, env = "SEALER_REGISTRY_OFFLINE")]
    pub offline: bool,

    /// How long a cached tag is served before it is revalidated upstream (a HEAD), e.g.
    /// `5m`; `0s` revalidates on every pull. [default: 5m]
    #[arg(long, env = "SEALER_REGISTRY_TAG_TTL", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub tag_ttl: Option<Duration>,
}

/// The `[mirror]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MirrorFile {
    #[serde(default)]
    offline: bool,
    tag_ttl: Option<String>,
    /// Accept pushes to names of mirrored registries.
    #[serde(default)]
    allow_push: bool,
    /// Largest tag list, referrers list or token answer taken from an upstream.
    max_list_size: Option<u64>,
    /// How long a blob fill goes on after its last client left.
    abandon_after: Option<String>,
    #[serde(default)]
    upstreams: Vec<UpstreamFile>,
}

/// One `[[mirror.upstreams]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamFile {
    host: String,
    endpoint: Option<String>,
    username: Option<String>,
    password: Option<String>,
    /// A docker `config.json` to take this host's credentials from.
    docker_config: Option<PathBuf>,
    /// PEM file with the CA(s) that sign the upstream's certificate.
    ca_file: Option<PathBuf>,
    #[serde(default)]
    insecure: bool,
    dial_timeout: Option<String>,
    timeout: Option<String>,
}

/// Everything the mirror needs, resolved.
#[derive(Debug, Clone)]
pub struct MirrorConfig {
    pub offline: bool,
    pub tag_ttl: Duration,
    pub allow_push: bool,
    pub upstreams: Vec<Upstream>,
    /// A blob fill whose last client left stops after this long (unless nearly done).
    pub abandon_after: Duration,
}

impl MirrorConfig {
    /// Combines the config file's `[mirror]` table (if any) with the flags; a host given
    /// by flag replaces the file's entry for it.
    pub fn resolve(file: Option<&toml::Value>, args: &MirrorArgs) -> anyhow::Result<MirrorConfig> {
        let file: MirrorFile = match file {
            Some(v) => v
                .clone()
                .try_into()
                .context("invalid [mirror] table in the config file")?,
            None => MirrorFile::default(),
        };
        let mut upstreams = Vec::new();
        for u in file.upstreams {
            upstreams.push(from_file(u)?);
        }
        for spec in &args.upstreams {
            let u = parse_flag(spec)?;
            upstreams.retain(|e: &Upstream| e.host != u.host);
            upstreams.push(u);
        }
        let tag_ttl = match (args.tag_ttl, file.tag_ttl) {
            (Some(t), _) => t,
            (None, Some(t)) => humantime::parse_duration(&t)
                .with_context(|| format!("invalid mirror.tag_ttl {t:?}"))?,
            (None, None) => Duration::from_secs(300),
        };
        let abandon_after = match file.abandon_after {
            Some(t) => humantime::parse_duration(&t)
                .with_context(|| format!("invalid mirror.abandon_after {t:?}"))?,
            None => Duration::from_secs(30),
        };
        let mut config = MirrorConfig {
            offline: args.offline || file.offline,
            tag_ttl,
            allow_push: file.allow_push,
            upstreams,
            abandon_after,
        };
        if let Some(max) = file.max_list_size {
            let max = usize::try_from(max).context("mirror.max_list_size is too large")?;
            config
                .upstreams
                .iter_mut()
                .for_each(|u| u.limits.max_list_bytes = max);
        }
        Ok(config)
    }

    /// Applies the registry's own limits to what upstreams may send: manifests as large
    /// as a push may be, blobs as large as an upload may grow.
    pub fn with_registry_limits(
        mut self,
        max_manifest_bytes: usize,
        max_blob_bytes: Option<u64>,
    ) -> MirrorConfig {
        for u in &mut self.upstreams {
            u.limits.max_manifest_bytes = max_manifest_bytes;
            u.limits.max_blob_bytes = max_blob_bytes;
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.upstreams.is_empty()
    }
}

fn from_file(f: UpstreamFile) -> anyhow::Result<Upstream> {
    let mut u = Upstream::new(&normalize_host(&f.host)?);
    if let Some(e) = &f.endpoint {
        if u.host == "*" {
            bail!("the `*` upstream cannot have an endpoint: each host is reached at its own");
        }
        u.endpoint = Some(parse_endpoint(e)?);
    }
    if u.host == "*" && (f.username.is_some() || f.password.is_some() || f.docker_config.is_some())
    {
        bail!(
            "the `*` upstream cannot have credentials (username, password or docker_config): \
             it serves any host a client names, so they would be sent to every registry a \
             client asks for; give each registry that needs a login an entry of its own"
        );
    }
    u.credentials = match (f.username, f.password, &f.docker_config) {
        (Some(username), Some(password), _) => Some(Credentials { username, password }),
        (Some(_), None, _) | (None, Some(_), _) => {
            bail!("upstream {}: username and password go together", u.host)
        }
        (None, None, Some(path)) => sealer_client::credentials::from_docker_config(path, &u.host)?,
        (None, None, None) => None,
    };
    u.ca_file = f.ca_file;
    u.insecure = f.insecure;
    if let Some(t) = f.dial_timeout {
        u.dial_timeout =
            humantime::parse_duration(&t).with_context(|| format!("invalid dial_timeout {t:?}"))?;
    }
    if let Some(t) = f.timeout {
        u.timeout =
            humantime::parse_duration(&t).with_context(|| format!("invalid timeout {t:?}"))?;
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_file_combine() {
        let file: toml::Value = toml::from_str(
            r#"
offline = false
tag_ttl = "10m"
[[upstreams]]
host = "quay.io"
username = "u"
password = "p"
dial_timeout = "1s"
[[upstreams]]
host = "docker.io"
endpoint = "http://127.0.0.1:1"
"#,
        )
        .unwrap();
        let args = MirrorArgs {
            upstreams: vec![
                "docker.io=http://127.0.0.1:6000".into(),
                "registry.k8s.io".into(),
            ],
            ..Default::default()
        };
        let c = MirrorConfig::resolve(Some(&file), &args).unwrap();
        assert_eq!(c.tag_ttl, Duration::from_secs(600));
        let hosts: Vec<_> = c.upstreams.iter().map(|u| u.host.as_str()).collect();
        assert_eq!(hosts, ["quay.io", "docker.io", "registry.k8s.io"]);
        assert_eq!(c.upstreams[0].credentials.as_ref().unwrap().username, "u");
        assert_eq!(c.upstreams[0].dial_timeout, Duration::from_secs(1));
        assert_eq!(
            c.upstreams[1].endpoint_for("docker.io").unwrap().as_str(),
            "http://127.0.0.1:6000/"
        );
        assert_eq!(
            c.upstreams[2]
                .endpoint_for("registry.k8s.io")
                .unwrap()
                .as_str(),
            "https://registry.k8s.io/"
        );
    }

    #[test]
    fn bad_entries_are_clear_errors() {
        let file: toml::Value =
            toml::from_str("[[upstreams]]\nhost = \"x.io\"\nusername = \"u\"\n").unwrap();
        let err = MirrorConfig::resolve(Some(&file), &MirrorArgs::default()).unwrap_err();
        assert!(format!("{err:#}").contains("username and password go together"));
        let file: toml::Value =
            toml::from_str("[[upstreams]]\nhost = \"x.io\"\nendpont = \"http://x\"\n").unwrap();
        let err = MirrorConfig::resolve(Some(&file), &MirrorArgs::default()).unwrap_err();
        assert!(format!("{err:#}").contains("endpont"), "{err:#}");
        let args = MirrorArgs {
            upstreams: vec!["docker.io=ftp://x".into()],
            ..Default::default()
        };
        assert!(MirrorConfig::resolve(None, &args).is_err());
    }

    #[test]
    fn the_any_host_entry_refuses_credentials() {
        for creds in [
            "username = \"u\"\npassword = \"p\"",
            "docker_config = \"/root/.docker/config.json\"",
        ] {
            let file: toml::Value =
                toml::from_str(&format!("[[upstreams]]\nhost = \"*\"\n{creds}\n")).unwrap();
            let err = MirrorConfig::resolve(Some(&file), &MirrorArgs::default()).unwrap_err();
            assert!(
                format!("{err:#}").contains("`*` upstream cannot have credentials"),
                "{err:#}"
            );
        }
    }
}
