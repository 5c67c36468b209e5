//! Where the bucket is and how to reach it: `--storage s3://BUCKET/PREFIX` and the
//! `[storage]` table of the configuration file, with credentials from the table, the
//! usual `AWS_*` environment variables or the AWS shared credentials file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::client::{HttpClient, HttpConnector};
use object_store::{ClientOptions, RetryConfig};
use serde::Deserialize;

/// The smallest part most S3 services accept (all but the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
const DEFAULT_PART_SIZE: u64 = 16 * 1024 * 1024;
/// S3's largest part.
const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// The `[storage]` table. Every key is optional; `url` (or `--storage`) chooses the
/// object store.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// `s3://BUCKET/PREFIX`.
    pub url: Option<String>,
    /// The S3 API's address, e.g. `http://10.0.0.5:3900`. [default: AWS, by region]
    pub endpoint: Option<String>,
    /// [default: `AWS_REGION`, else us-east-1]
    pub region: Option<String>,
    /// Address buckets as `ENDPOINT/BUCKET` rather than `BUCKET.ENDPOINT`. [default:
    /// true with an endpoint (MinIO, Ceph, Garage), false on AWS]
    pub path_style: Option<bool>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// AWS shared credentials file. [default: `AWS_SHARED_CREDENTIALS_FILE`, else
    /// ~/.aws/credentials]
    pub credentials_file: Option<PathBuf>,
    /// Its profile. [default: `AWS_PROFILE`, else default]
    pub profile: Option<String>,
    /// Trust this CA (PEM) for an HTTPS endpoint, besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Bytes per multipart part, at least 5 MiB. [default: 16 MiB]
    pub part_size: Option<u64>,
    /// Answer blob GETs with a redirect to a presigned URL of the object store, so
    /// blob bytes bypass the registry (clients must reach the endpoint). [default: false]
    pub redirect: Option<bool>,
}

/// A resolved object-store location and how to reach it.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub path_style: bool,
    pub credentials: Option<Credentials>,
    pub ca_file: Option<PathBuf>,
    pub part_size: u64,
    pub redirect: bool,
}

#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, secret hidden)", self.access_key_id)
    }
}

/// `s3://BUCKET[/PREFIX]` into its bucket and prefix.
pub fn parse_url(url: &str) -> anyhow::Result<(String, String)> {
    let Some(rest) = url.strip_prefix("s3://") else {
        bail!("storage {url:?} is not an s3://BUCKET/PREFIX address");
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    if bucket.len() < 3 || bucket.len() > 63 || !bucket.chars().all(valid) {
        bail!("storage {url:?}: {bucket:?} is not a bucket name (3-63 of a-z 0-9 . -)");
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|p| p == "." || p == "..") {
        bail!("storage {url:?}: the prefix may not hold . or ..");
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

impl S3Settings {
    /// The settings of `url` (the flag, else the table's), from the table, then the
    /// environment, then the credentials file.
    pub fn resolve(url: &str, table: &StorageSection) -> anyhow::Result<S3Settings> {
        let (bucket, prefix) = parse_url(url)?;
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let endpoint = table
            .endpoint
            .clone()
            .or_else(|| env("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env("AWS_ENDPOINT_URL"));
        let part_size = table.part_size.unwrap_or(DEFAULT_PART_SIZE);
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&part_size) {
            bail!("[storage] part_size must be between 5 MiB and 5 GiB, not {part_size}");
        }
        Ok(S3Settings {
            bucket,
            prefix,
            path_style: table.path_style.unwrap_or(endpoint.is_some()),
            endpoint,
            region: table
                .region
                .clone()
                .or_else(|| env("AWS_REGION"))
                .or_else(|| env("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".into()),
            credentials: credentials(table)?,
            ca_file: table.ca_file.clone(),
            part_size,
            redirect: table.redirect.unwrap_or(false),
        })
    }

    /// The client of the bucket.
    pub fn connect(&self) -> anyhow::Result<AmazonS3> {
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_region(&self.region)
            .with_virtual_hosted_style_request(!self.path_style)
            .with_http_connector(Connector {
                ca_file: self.ca_file.clone(),
            })
            .with_client_options(ClientOptions::new().with_allow_http(true))
            .with_retry(RetryConfig {
                max_retries: 5,
                retry_timeout: Duration::from_secs(60),
                ..RetryConfig::default()
            });
        if let Some(endpoint) = &self.endpoint {
            b = b.with_endpoint(endpoint).with_allow_http(true);
        }
        match &self.credentials {
            Some(c) => {
                b = b
                    .with_access_key_id(&c.access_key_id)
                    .with_secret_access_key(&c.secret_access_key);
                if let Some(t) = &c.session_token {
                    b = b.with_token(t);
                }
            }
            None => b = b.with_skip_signature(true),
        }
        b.build().context("cannot set up the S3 client")
    }
}

/// Keys from the table, else `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, else the
/// shared credentials file; `None` means anonymous requests.
fn credentials(table: &StorageSection) -> anyhow::Result<Option<Credentials>> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let (Some(id), Some(secret)) = (&table.access_key_id, &table.secret_access_key) {
        return Ok(Some(Credentials {
            access_key_id: id.clone(),
            secret_access_key: secret.clone(),
            session_token: table.session_token.clone(),
        }));
    }
    if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        return Ok(Some(Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: env("AWS_SESSION_TOKEN"),
        }));
    }
    let file = table
        .credentials_file
        .clone()
        .or_else(|| env("AWS_SHARED_CREDENTIALS_FILE").map(PathBuf::from))
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".aws/credentials")));
    let profile = table
        .profile
        .clone()
        .or_else(|| env("AWS_PROFILE"))
        .unwrap_or_else(|| "default".into());
    match file {
        Some(f) if f.exists() => from_credentials_file(&f, &profile).map(Some),
        _ if table.credentials_file.is_some() => bail!(
            "credentials file {} does not exist",
            table.credentials_file.as_ref().unwrap().display()
        ),
        _ => Ok(None),
    }
}

/// A profile of an AWS shared credentials file (INI: `[profile]`, `key = value`).
fn from_credentials_file(path: &Path, profile: &str) -> anyhow::Result<Credentials> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read credentials file {}", path.display()))?;
    let mut section = String::new();
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
        } else if section == profile {
            if let Some((k, v)) = line.split_once('=') {
                let v = Some(v.trim().to_string());
                match k.trim() {
                    "aws_access_key_id" => id = v,
                    "aws_secret_access_key" => secret = v,
                    "aws_session_token" => token = v,
                    _ => {}
                }
            }
        }
    }
    match (id, secret) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Credentials {
            access_key_id,
            secret_access_key,
            session_token: token,
        }),
        _ => bail!(
            "credentials file {} has no aws_access_key_id and aws_secret_access_key in [{profile}]",
            path.display()
        ),
    }
}

/// HTTP to the object store through reqwest with our rustls set-up (ring; the system's
/// roots plus the configured CA file).
#[derive(Debug)]
struct Connector {
    ca_file: Option<PathBuf>,
}

impl HttpConnector for Connector {
    fn connect(&self, _: &ClientOptions) -> object_store::Result<HttpClient> {
        let generic = |e: anyhow::Error| object_store::Error::Generic {
            store: "S3",
            source: e.into(),
        };
        let tls =
            crate::tls::client::client_config(self.ca_file.as_deref(), false).map_err(generic)?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| generic(e.into()))?;
        Ok(HttpClient::new(client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_addresses_are_checked() {
        assert_eq!(
            parse_url("s3://images/site/a/").unwrap(),
            ("images".into(), "site/a".into())
        );
        assert_eq!(
            parse_url("s3://images").unwrap(),
            ("images".into(), "".into())
        );
        for bad in [
            "images",
            "s3://",
            "s3://Im",
            "s3://a_b/x",
            "s3://bucket/../x",
        ] {
            assert!(parse_url(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn a_profile_of_the_credentials_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("credentials");
        std::fs::write(
            &f,
            "[default]\naws_access_key_id = A\naws_secret_access_key = B\n\
             [ci]\naws_access_key_id=C\naws_secret_access_key=D\naws_session_token=E\n",
        )
        .unwrap();
        let c = from_credentials_file(&f, "ci").unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.secret_access_key.as_str()),
            ("C", "D")
        );
        assert_eq!(c.session_token.as_deref(), Some("E"));
        assert!(from_credentials_file(&f, "other").is_err());
    }
}
