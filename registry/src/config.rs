//! `sealer-registry serve` settings: defaults, overridden by a TOML file (`--config`),
//! overridden by environment variables, overridden by flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;

use crate::auth::AuthSettings;
use crate::listen::ConnLimits;
use crate::maintenance::gc::GcPolicy;
use crate::observability::LogFormat;
use crate::services::Options;
use crate::services::quota::SessionLimits;
use crate::storage::s3::{S3Settings, StorageSection};

pub const DEFAULT_ADDR: &str = "127.0.0.1:5000";

/// Flags (and their environment variables) of `sealer-registry serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Address to listen on, HOST:PORT. Port 0 picks a free port. [default: 127.0.0.1:5000]
    #[arg(long, env = "SEALER_REGISTRY_ADDR", value_name = "HOST:PORT")]
    pub addr: Option<String>,

    /// Root of the content store. [default: /var/lib/sealer/registry as root,
    /// $XDG_DATA_HOME/sealer/registry otherwise]
    #[arg(long, env = "SEALER_REGISTRY_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Keep the store on S3-compatible object storage (AWS S3, MinIO, Ceph RGW, Garage):
    /// s3://BUCKET/PREFIX, with endpoint, region and credentials in the `[storage]` table
    /// or the usual AWS_* variables. Several registries may share one bucket (see
    /// docs/scale-out.md). [default: the filesystem at --root]
    #[arg(
        long,
        env = "SEALER_REGISTRY_STORAGE",
        value_name = "URL",
        conflicts_with = "root"
    )]
    pub storage: Option<String>,

    /// Serve the images of this bundle (`sealer save`, plain tar) in place, read-only
    /// (repeatable). With --root as well, the store is served too and takes pushes.
    #[arg(long = "bundle", value_name = "FILE")]
    pub bundles: Vec<PathBuf>,

    /// Serve HTTPS with this certificate chain (PEM); re-read when the file changes.
    #[arg(
        long,
        env = "SEALER_REGISTRY_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "SEALER_REGISTRY_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Require sign-in: users and bcrypt passwords in this htpasswd file (`htpasswd -B`).
    /// Clients get tokens at /token (the Docker token flow) or send Basic credentials.
    #[arg(long, env = "SEALER_REGISTRY_HTPASSWD", value_name = "FILE")]
    pub htpasswd: Option<PathBuf>,

    /// Who may pull, push and delete which repositories (TOML, see docs/security.md).
    /// [default: every signed-in user may do everything]
    #[arg(long, env = "SEALER_REGISTRY_POLICY", value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// Sign tokens with the key in this file (at least 32 bytes) rather than one made at
    /// start: replicas behind one load balancer share it, so a token from one is good at
    /// all. [default: a new key at every start]
    #[arg(long, env = "SEALER_REGISTRY_TOKEN_KEY", value_name = "FILE")]
    pub token_key: Option<PathBuf>,

    /// Let callers without credentials pull every repository (with --htpasswd).
    #[arg(long, env = "SEALER_REGISTRY_ANONYMOUS_PULL")]
    pub anonymous_pull: bool,

    /// Serve /metrics only to signed-in users (Basic credentials, with --htpasswd).
    #[arg(long, env = "SEALER_REGISTRY_METRICS_AUTH")]
    pub metrics_auth: bool,

    /// Serve no /metrics at all (404), e.g. on a registry open to a network.
    #[arg(
        long,
        env = "SEALER_REGISTRY_NO_METRICS",
        conflicts_with = "metrics_auth"
    )]
    pub no_metrics: bool,

    /// TOML configuration file; flags and environment variables override its values.
    #[arg(long, short = 'c', env = "SEALER_REGISTRY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log format: one line of text or one JSON object per event. [default: text]
    #[arg(long, env = "SEALER_REGISTRY_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Log filter in RUST_LOG syntax, e.g. `info` or `info,access=off`. [default: info]
    #[arg(long, env = "SEALER_REGISTRY_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Upload sessions untouched for this long are removed, e.g. `24h`, `30m`. [default: 24h]
    #[arg(long, env = "SEALER_REGISTRY_UPLOAD_EXPIRY", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub upload_expiry: Option<Duration>,

    /// Largest manifest accepted, in bytes. [default: 4194304]
    #[arg(long, env = "SEALER_REGISTRY_MAX_MANIFEST_BYTES", value_name = "BYTES")]
    pub max_manifest_bytes: Option<usize>,

    /// Refuse DELETE of manifests, tags and blobs (answered 405 UNSUPPORTED).
    #[arg(long, env = "SEALER_REGISTRY_NO_DELETE")]
    pub no_delete: bool,

    /// Reject an image index unless every manifest it lists is present (sparse indexes
    /// are accepted by default).
    #[arg(long, env = "SEALER_REGISTRY_STRICT_INDEXES")]
    pub strict_indexes: bool,

    /// Refuse every push and delete (405 UNSUPPORTED), e.g. during maintenance.
    #[arg(long, env = "SEALER_REGISTRY_READ_ONLY")]
    pub read_only: bool,

    /// A client must send each request's headers (and finish a TLS handshake) within
    /// this time, or the connection is closed. [default: 30s]
    #[arg(long, env = "SEALER_REGISTRY_HEADER_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub header_timeout: Option<Duration>,

    /// A request body that sends nothing for this long fails, freeing the connection.
    /// [default: 60s]
    #[arg(long, env = "SEALER_REGISTRY_BODY_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub body_timeout: Option<Duration>,

    /// A connection with no request in flight for this long is closed, HTTP/2 ones
    /// included. [default: 120s]
    #[arg(long, env = "SEALER_REGISTRY_IDLE_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub idle_timeout: Option<Duration>,

    /// A response that the client does not read for this long (a stalled download)
    /// closes the connection. [default: 60s]
    #[arg(long, env = "SEALER_REGISTRY_WRITE_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub write_timeout: Option<Duration>,

    /// Most connections open at once; at the cap a new one replaces the oldest that has
    /// not sent a request. [default: half the open-file limit, raised to its maximum]
    #[arg(long, env = "SEALER_REGISTRY_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Most bytes one repository may hold: linked blobs, manifests and open uploads
    /// (403 DENIED beyond). [default: none]
    #[arg(long, env = "SEALER_REGISTRY_REPO_QUOTA", value_name = "BYTES")]
    pub repo_quota: Option<u64>,

    /// Most upload sessions open at once in one repository (429 beyond). [default: 100]
    #[arg(long, env = "SEALER_REGISTRY_MAX_SESSIONS_PER_REPO", value_name = "N")]
    pub max_sessions_per_repo: Option<usize>,

    /// Most upload sessions one signed-in user may have open (429 beyond). [default: 1000]
    #[arg(long, env = "SEALER_REGISTRY_MAX_SESSIONS_PER_USER", value_name = "N")]
    pub max_sessions_per_user: Option<usize>,

    /// Largest blob a push may upload, in bytes (413 SIZE_INVALID beyond). [default: none]
    #[arg(long, env = "SEALER_REGISTRY_MAX_UPLOAD_SIZE", value_name = "BYTES")]
    pub max_upload_size: Option<u64>,

    /// Collect garbage this often while serving (unreferenced manifests, layer links and
    /// blobs older than --gc-grace). [default: never]
    #[arg(long, env = "SEALER_REGISTRY_GC_INTERVAL", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub gc_interval: Option<Duration>,

    #[command(flatten)]
    pub gc: GcArgs,

    /// How long in-flight requests may take to finish after SIGINT/SIGTERM. [default: 30s]
    #[arg(long, env = "SEALER_REGISTRY_SHUTDOWN_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub shutdown_timeout: Option<Duration>,
}

/// What garbage collection may remove: shared by `serve` and `gc`.
#[derive(Debug, Clone, Default, Args)]
pub struct GcArgs {
    /// Nothing pushed, linked or checked more recently is collected; longer than your
    /// longest push. [default: 1h]
    #[arg(long, env = "SEALER_REGISTRY_GC_GRACE", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub gc_grace: Option<Duration>,

    /// Collect untagged manifests older than this (e.g. 7d); they are kept otherwise.
    #[arg(long, env = "SEALER_REGISTRY_GC_UNTAGGED", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub gc_untagged: Option<Duration>,
}

impl GcArgs {
    /// Flags over `[gc]`.
    pub fn policy(&self, file: &GcSection) -> GcPolicy {
        GcPolicy {
            grace: self
                .gc_grace
                .or(file.grace)
                .unwrap_or(GcPolicy::default().grace),
            untagged_after: self.gc_untagged.or(file.untagged_after),
        }
    }
}

/// The `--config` file. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub addr: Option<String>,
    pub root: Option<PathBuf>,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub bundles: Vec<PathBuf>,
    #[serde(default)]
    pub log: LogSection,
    pub tls: Option<TlsSection>,
    pub auth: Option<AuthSection>,
    #[serde(default)]
    pub uploads: UploadSection,
    #[serde(default)]
    pub manifests: ManifestSection,
    #[serde(default)]
    pub delete: DeleteSection,
    #[serde(default)]
    pub listing: ListingSection,
    #[serde(default)]
    pub limits: LimitSection,
    #[serde(default)]
    pub gc: GcSection,
    pub read_only: Option<bool>,
    /// `false`: serve no /metrics.
    pub metrics: Option<bool>,
    #[serde(default, with = "humantime_serde_opt")]
    pub shutdown_timeout: Option<Duration>,
    /// The pull-through mirror's table, read by `sealer-pull-proxy`.
    pub mirror: Option<toml::Value>,
}

/// `[tls]`: serve HTTPS.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[auth]`: require sign-in.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    pub htpasswd: Option<PathBuf>,
    pub policy: Option<PathBuf>,
    pub anonymous_pull: Option<bool>,
    /// `true`: /metrics only for signed-in users.
    pub metrics: Option<bool>,
    /// `false`: challenge with Basic instead of sending clients to /token.
    pub token: Option<bool>,
    pub service: Option<String>,
    pub realm: Option<String>,
    #[serde(default, with = "humantime_serde_opt")]
    pub token_ttl: Option<Duration>,
    /// The tokens' signing key (at least 32 bytes), shared by replicas.
    pub token_key_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub format: Option<LogFormat>,
    pub level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadSection {
    #[serde(default, with = "humantime_serde_opt")]
    pub expire_after: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestSection {
    pub max_size: Option<usize>,
    pub strict_indexes: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteSection {
    pub enabled: Option<bool>,
}

/// `[gc]`: garbage collection.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcSection {
    #[serde(default, with = "humantime_serde_opt")]
    pub interval: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    pub grace: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    pub untagged_after: Option<Duration>,
}

/// `[limits]`: what slow or greedy clients may take.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSection {
    #[serde(default, with = "humantime_serde_opt")]
    pub header_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    pub body_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    pub idle_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    pub write_timeout: Option<Duration>,
    pub max_connections: Option<usize>,
    pub max_sessions_per_repository: Option<usize>,
    pub max_sessions_per_user: Option<usize>,
    pub max_upload_size: Option<u64>,
    pub repository_quota: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListingSection {
    pub max_page_entries: Option<usize>,
}

/// Durations written as text (`"24h"`, `"90s"`).
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Everything `serve` needs, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    pub root: PathBuf,
    /// The store is in this bucket rather than under `root`.
    pub s3: Option<S3Settings>,
    /// Bundle files served in place.
    pub bundles: Vec<PathBuf>,
    /// Bundles only, no store (no root was given): nothing can be written.
    pub read_only: bool,
    pub log_format: LogFormat,
    pub log_level: String,
    pub options: Options,
    pub shutdown_timeout: Duration,
    /// The config file's `[mirror]` table, for the pull-through mirror to read.
    pub mirror: Option<toml::Value>,
    /// Serve HTTPS: (certificate chain, key) PEM files.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Require sign-in.
    pub auth: Option<AuthSettings>,
    /// Connection limits.
    pub limits: ConnLimits,
    /// Collect garbage this often while serving.
    pub gc_interval: Option<Duration>,
    pub gc: GcPolicy,
    /// Whether `/metrics` is served at all.
    pub metrics: bool,
}

impl Settings {
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Settings> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let options = options(args, &file)?;
        let limits = conn_limits(args, &file)?;
        let s3 = object_store_settings(args.storage.as_deref(), args.root.is_some(), &file)?;
        let addr_text = args
            .addr
            .clone()
            .or(file.addr)
            .unwrap_or_else(|| DEFAULT_ADDR.to_string());
        let addr = parse_addr(&addr_text)?;
        let bundles = if args.bundles.is_empty() {
            file.bundles
        } else {
            args.bundles.clone()
        };
        let given_root = args.root.clone().or(file.root);
        let read_only = !bundles.is_empty() && given_root.is_none() && s3.is_none();
        let root = given_root.unwrap_or_else(default_root);
        let auth = auth_settings(args, file.auth.unwrap_or_default())?;
        let gc = args.gc.policy(&file.gc);
        let gc_interval = args.gc_interval.or(file.gc.interval);
        if gc_interval.is_some_and(|i| i < Duration::from_secs(1)) {
            bail!("gc.interval must be at least 1s");
        }
        Ok(Settings {
            addr,
            root,
            s3,
            bundles,
            read_only,
            log_format: args.log_format.or(file.log.format).unwrap_or_default(),
            log_level: args
                .log_level
                .clone()
                .or(file.log.level)
                .unwrap_or_else(|| "info".into()),
            options,
            shutdown_timeout: args
                .shutdown_timeout
                .or(file.shutdown_timeout)
                .unwrap_or(Duration::from_secs(30)),
            mirror: file.mirror,
            tls: match (&args.tls_cert, &args.tls_key) {
                (Some(c), Some(k)) => Some((c.clone(), k.clone())),
                _ => file.tls.map(|t| (t.cert, t.key)),
            },
            auth,
            limits,
            gc_interval,
            gc,
            metrics: !args.no_metrics && file.metrics.unwrap_or(true),
        })
    }
}

/// The bucket `--storage` (else `[storage] url`) names, if any. A `--root` flag chooses
/// the filesystem over a bucket named only in the file.
fn object_store_settings(
    flag: Option<&str>,
    root_flag: bool,
    file: &FileConfig,
) -> anyhow::Result<Option<S3Settings>> {
    let url = match (flag, &file.storage.url) {
        (Some(url), _) => url,
        (None, Some(url)) if !root_flag => url,
        _ => return Ok(None),
    };
    if flag.is_none() && file.root.is_some() {
        bail!("the configuration file gives both root and [storage] url: choose one");
    }
    S3Settings::resolve(url, &file.storage).map(Some)
}

/// Which store `gc`, `check` and `index rebuild` work on.
#[derive(Debug, Clone, Default, Args)]
pub struct StoreArgs {
    /// The store's folder. [default: as for serve]
    #[arg(long, env = "SEALER_REGISTRY_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// The store's bucket, s3://BUCKET/PREFIX (as for serve).
    #[arg(
        long,
        env = "SEALER_REGISTRY_STORAGE",
        value_name = "URL",
        conflicts_with = "root"
    )]
    pub storage: Option<String>,
    /// Configuration file whose `root` or `[storage]` table names the store.
    #[arg(long, short = 'c', env = "SEALER_REGISTRY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Where a store is.
pub enum StoreLocation {
    Folder(PathBuf),
    Bucket(S3Settings),
}

impl StoreArgs {
    pub fn location(&self) -> anyhow::Result<StoreLocation> {
        let file = match &self.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        if let Some(s3) =
            object_store_settings(self.storage.as_deref(), self.root.is_some(), &file)?
        {
            return Ok(StoreLocation::Bucket(s3));
        }
        Ok(StoreLocation::Folder(
            self.root.clone().or(file.root).unwrap_or_else(default_root),
        ))
    }
}

/// Flags over the file over the defaults: what the services need to know.
fn options(args: &ServeArgs, file: &FileConfig) -> anyhow::Result<Options> {
    let defaults = Options::default();
    let options = Options {
        max_manifest_bytes: args
            .max_manifest_bytes
            .or(file.manifests.max_size)
            .unwrap_or(defaults.max_manifest_bytes),
        delete_enabled: !args.no_delete && file.delete.enabled.unwrap_or(defaults.delete_enabled),
        strict_indexes: args.strict_indexes
            || file
                .manifests
                .strict_indexes
                .unwrap_or(defaults.strict_indexes),
        max_page_entries: file
            .listing
            .max_page_entries
            .unwrap_or(defaults.max_page_entries),
        upload_expiry: args
            .upload_expiry
            .or(file.uploads.expire_after)
            .unwrap_or(defaults.upload_expiry),
        max_upload_bytes: args.max_upload_size.or(file.limits.max_upload_size),
        read_only: args.read_only || file.read_only.unwrap_or(false),
        repo_quota: args.repo_quota.or(file.limits.repository_quota),
        sessions: SessionLimits {
            per_repository: args
                .max_sessions_per_repo
                .or(file.limits.max_sessions_per_repository)
                .unwrap_or(defaults.sessions.per_repository),
            per_user: args
                .max_sessions_per_user
                .or(file.limits.max_sessions_per_user)
                .unwrap_or(defaults.sessions.per_user),
        },
    };
    if options.sessions.per_repository == 0 || options.sessions.per_user == 0 {
        bail!("limits.max_sessions_per_repository and max_sessions_per_user must be at least 1");
    }
    if options.max_page_entries == 0 {
        bail!("listing.max_page_entries must be at least 1");
    }
    Ok(options)
}

/// Flags over the file over the defaults: how long connections may take, how many.
fn conn_limits(args: &ServeArgs, file: &FileConfig) -> anyhow::Result<ConnLimits> {
    let conn_defaults = ConnLimits::default();
    let limits = ConnLimits {
        header_timeout: args
            .header_timeout
            .or(file.limits.header_timeout)
            .unwrap_or(conn_defaults.header_timeout),
        body_timeout: args
            .body_timeout
            .or(file.limits.body_timeout)
            .unwrap_or(conn_defaults.body_timeout),
        idle_timeout: args
            .idle_timeout
            .or(file.limits.idle_timeout)
            .unwrap_or(conn_defaults.idle_timeout),
        write_timeout: args
            .write_timeout
            .or(file.limits.write_timeout)
            .unwrap_or(conn_defaults.write_timeout),
        max_connections: args.max_connections.or(file.limits.max_connections),
    };
    if [
        limits.header_timeout,
        limits.body_timeout,
        limits.idle_timeout,
        limits.write_timeout,
    ]
    .iter()
    .any(Duration::is_zero)
    {
        bail!(
            "limits.header_timeout, body_timeout, idle_timeout and write_timeout must be more than 0"
        );
    }
    if limits.max_connections == Some(0) {
        bail!("limits.max_connections must be at least 1");
    }
    Ok(limits)
}

/// Flags over `[auth]`. Without an htpasswd file there is no sign-in, and the settings
/// that only make sense with one are refused rather than ignored.
fn auth_settings(args: &ServeArgs, file: AuthSection) -> anyhow::Result<Option<AuthSettings>> {
    let policy = args.policy.clone().or(file.policy);
    let anonymous_pull = args.anonymous_pull || file.anonymous_pull.unwrap_or(false);
    let metrics_auth = args.metrics_auth || file.metrics.unwrap_or(false);
    let Some(htpasswd) = args.htpasswd.clone().or(file.htpasswd) else {
        if policy.is_some() || anonymous_pull || metrics_auth || args.token_key.is_some() {
            bail!(
                "--policy, --anonymous-pull, --metrics-auth and --token-key need users: give --htpasswd FILE"
            );
        }
        return Ok(None);
    };
    let mut settings = AuthSettings::new(htpasswd);
    settings.policy = policy;
    settings.anonymous_pull = anonymous_pull;
    settings.metrics_auth = metrics_auth;
    settings.token = file.token.unwrap_or(true);
    settings.token_key = args.token_key.clone().or(file.token_key_file);
    if let Some(service) = file.service {
        if service.is_empty() || service.contains('"') {
            bail!("auth.service must be non-empty and have no quote");
        }
        settings.service = service;
    }
    if let Some(realm) = file.realm {
        if !(realm.starts_with("https://") || realm.starts_with("http://")) || realm.contains('"') {
            bail!("auth.realm must be an http(s) URL, e.g. https://sea.hub:5000/token");
        }
        settings.realm = Some(realm);
    }
    if let Some(ttl) = file.token_ttl {
        if ttl < Duration::from_secs(10) {
            bail!("auth.token_ttl must be at least 10s");
        }
        settings.token_ttl = ttl;
    }
    Ok(Some(settings))
}

fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

fn parse_addr(s: &str) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .with_context(|| format!("invalid listen address {s:?}: expected HOST:PORT"))?
        .next()
        .with_context(|| format!("listen address {s:?} resolves to nothing"))
}

/// `/var/lib/sealer/registry` for root, `$XDG_DATA_HOME/sealer/registry` (or
/// `~/.local/share/sealer/registry`) for anyone else.
pub fn default_root() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/sealer/registry");
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("sealer/registry")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("registry.toml");
        std::fs::write(
            &cfg,
            r#"
addr = "127.0.0.1:7000"
root = "/srv/file-root"
shutdown_timeout = "5s"
[uploads]
expire_after = "2h"
[manifests]
max_size = 1024
[delete]
enabled = false
"#,
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(cfg),
            root: Some("/srv/flag-root".into()),
            ..Default::default()
        };
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.addr.to_string(), "127.0.0.1:7000");
        assert_eq!(s.root, PathBuf::from("/srv/flag-root"));
        assert_eq!(s.options.upload_expiry, Duration::from_secs(7200));
        assert_eq!(s.options.max_manifest_bytes, 1024);
        assert!(!s.options.delete_enabled);
        assert_eq!(s.shutdown_timeout, Duration::from_secs(5));
    }

    #[test]
    fn defaults_need_no_config() {
        let s = Settings::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(s.addr.to_string(), DEFAULT_ADDR);
        assert_eq!(s.options.max_manifest_bytes, 4 * 1024 * 1024);
        assert!(s.options.delete_enabled);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("bad.toml");
        std::fs::write(&cfg, "adress = \"x\"\n").unwrap();
        let err = Settings::resolve(&ServeArgs {
            config: Some(cfg),
            ..Default::default()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("adress"), "{err:#}");
    }
}
