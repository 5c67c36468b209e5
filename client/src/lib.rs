//! The registry client every part of sealer uses: the mirror's fills, the builder's pulls
//! and pushes, `sealer login`. One [`UpstreamClient`] per registry host: one connection
//! pool, the token flow, retries with backoff, redirects followed only where [`redirects`]
//! allows, never forwarding `Authorization` to other hosts; credentials from docker's
//! `config.json` ([`credentials`]); what it sees reported to an [`Observer`].

pub mod auth;
pub mod credentials;
pub mod download;
pub mod endpoint;
pub mod observer;
pub mod redirects;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::{
    ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, LINK, RANGE, WWW_AUTHENTICATE,
};
use reqwest::{Method, Response, StatusCode};
use sealer_registry::oci::{Digest, manifest};
use sealer_registry::storage::ReferrerRecord;
use url::Url;

use self::auth::{Challenge, TokenCache, TokenResponse};
use crate::credentials::Credentials;
use crate::endpoint::{Limits, Upstream};
pub use crate::observer::{Observer, Unobserved};

/// Every manifest type a client of ours may ask for.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Attempts for a request that fails with a reset or a 5xx (not for connection failures:
/// an unreachable upstream must answer a miss within the dial timeout).
const ATTEMPTS: u32 = 3;
/// The slowest a blob download may be on average, in bytes per second.
pub const MIN_BLOB_RATE: u64 = 64 * 1024;
/// After a failed connection, the upstream counts as down for this long, so further
/// misses are answered at once instead of each waiting for a dial timeout.
const DOWN_FOR: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("registry {host} is unreachable: {reason}")]
    Unreachable { host: String, reason: String },
    #[error("registry {host} answered {status} to {what}")]
    Status {
        host: String,
        status: u16,
        what: String,
    },
    #[error("registry {host}: {reason}")]
    Protocol { host: String, reason: String },
}

pub type Result<T, E = UpstreamError> = std::result::Result<T, E>;

/// A manifest as upstream sent it.
#[derive(Debug)]
pub struct RemoteManifest {
    pub body: Bytes,
    pub media_type: String,
    pub digest: Digest,
}

pub struct UpstreamClient {
    /// The registry host as clients name it.
    pub host: String,
    base: String,
    endpoint: Url,
    http: reqwest::Client,
    credentials: Option<Credentials>,
    tokens: TokenCache,
    /// The upstream asked for Basic rather than bearer tokens.
    basic: AtomicBool,
    down_until: std::sync::Mutex<Option<Instant>>,
    observer: Arc<dyn Observer>,
    /// The whole time a request other than a blob transfer may take.
    deadline: Duration,
    limits: Limits,
}

impl UpstreamClient {
    pub fn new(
        host: &str,
        config: &Upstream,
        observer: Arc<dyn Observer>,
    ) -> anyhow::Result<UpstreamClient> {
        let tls = Self::tls_for(config)?;
        Self::with_tls(host, config, tls, observer)
    }

    /// The TLS settings of an upstream entry: made once per entry and shared by the
    /// clients of every host it serves (reading the system's roots is not cheap).
    pub fn tls_for(config: &Upstream) -> anyhow::Result<rustls::ClientConfig> {
        sealer_registry::tls::client::client_config(config.ca_file.as_deref(), config.insecure)
    }

    /// A client for `host` with TLS settings made by [`Self::tls_for`].
    pub fn with_tls(
        host: &str,
        config: &Upstream,
        tls: rustls::ClientConfig,
        observer: Arc<dyn Observer>,
    ) -> anyhow::Result<UpstreamClient> {
        let endpoint = config.endpoint_for(host)?;
        let guard = redirects::Guard::new(&endpoint);
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(guard.policy())
            .dns_resolver(guard.resolver())
            .connect_timeout(config.dial_timeout)
            .read_timeout(config.timeout)
            .pool_max_idle_per_host(32)
            .no_proxy()
            .user_agent(concat!("sealer-registry/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(UpstreamClient {
            host: host.to_string(),
            base: endpoint.as_str().trim_end_matches('/').to_string(),
            endpoint,
            http,
            credentials: config.credentials.clone(),
            tokens: TokenCache::default(),
            basic: AtomicBool::new(false),
            down_until: std::sync::Mutex::new(None),
            observer,
            deadline: config.timeout,
            limits: config.limits,
        })
    }

    /// Whether a recent connection failure means misses should not wait for upstream.
    pub fn is_down(&self) -> bool {
        self.down_until
            .lock()
            .expect("down lock")
            .is_some_and(|t| Instant::now() < t)
    }

    fn mark_down(&self) {
        *self.down_until.lock().expect("down lock") = Some(Instant::now() + DOWN_FOR);
    }

    fn unreachable(&self, reason: impl ToString) -> UpstreamError {
        UpstreamError::Unreachable {
            host: self.host.clone(),
            reason: reason.to_string(),
        }
    }

    /// Sends `method path` with the credentials `scope` needs, retrying resets and 5xx;
    /// the whole exchange, body included, must end within the upstream's timeout.
    async fn send(
        &self,
        method: Method,
        path: &str,
        scope: &str,
        headers: HeaderMap,
    ) -> Result<Response> {
        self.send_body(method, path, scope, headers, &|| None, Some(self.deadline))
            .await
    }

    /// As [`Self::send`], with a request body made afresh for every attempt and an
    /// overall `deadline` (`None` for blob transfers, which the caller bounds by their
    /// size). `target` is a path under the API base, or an absolute URL on the same
    /// origin (an upload's `Location`).
    async fn send_body(
        &self,
        method: Method,
        target: &str,
        scope: &str,
        headers: HeaderMap,
        body: &(dyn Fn() -> Option<reqwest::Body> + Sync),
        deadline: Option<Duration>,
    ) -> Result<Response> {
        if self.is_down() {
            return Err(self.unreachable("it failed moments ago; retrying shortly"));
        }
        let url = self.resolve(target)?;
        let mut attempt = 0;
        let mut authenticated = false;
        loop {
            attempt += 1;
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(b) = body() {
                req = req.body(b);
            }
            if let Some(d) = deadline {
                req = req.timeout(d);
            }
            if let Some(token) = self.tokens.get(scope) {
                req = req.bearer_auth(token);
            } else if let (true, Some(c)) = (self.basic.load(Ordering::Relaxed), &self.credentials)
            {
                req = req.basic_auth(&c.username, Some(&c.password));
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    self.observer.error(&self.host);
                    if e.is_connect() {
                        self.mark_down();
                        return Err(self.unreachable(error_chain(&e)));
                    }
                    if attempt < ATTEMPTS {
                        backoff(attempt).await;
                        continue;
                    }
                    return Err(self.unreachable(error_chain(&e)));
                }
            };
            self.observer.request(&self.host, resp.status().as_u16());
            if resp.status() == StatusCode::UNAUTHORIZED && !authenticated {
                authenticated = true;
                self.authenticate(&resp, scope).await?;
                continue;
            }
            let status = resp.status();
            if (status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS)
                && attempt < ATTEMPTS
            {
                self.observer.error(&self.host);
                backoff(attempt).await;
                continue;
            }
            return Ok(resp);
        }
    }

    /// Answers a 401: fetches a bearer token for `scope` from a trusted realm, or switches
    /// to Basic credentials.
    async fn authenticate(&self, resp: &Response, scope: &str) -> Result<()> {
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(auth::parse_challenge);
        let protocol = |reason: String| UpstreamError::Protocol {
            host: self.host.clone(),
            reason,
        };
        match challenge {
            Some(Challenge::Basic) => {
                if self.credentials.is_none() {
                    return Err(protocol(
                        "it requires credentials and none are configured".into(),
                    ));
                }
                self.basic.store(true, Ordering::Relaxed);
                Ok(())
            }
            Some(Challenge::Bearer { realm, service, .. }) => {
                let mut realm_url = Url::parse(&realm)
                    .map_err(|_| protocol(format!("invalid token realm {realm:?}")))?;
                if !auth::realm_is_trusted(&realm_url, &self.endpoint) {
                    return Err(protocol(format!(
                        "refusing token realm {realm}: it is not on {}'s domain",
                        self.endpoint.host_str().unwrap_or_default()
                    )));
                }
                {
                    let mut q = realm_url.query_pairs_mut();
                    if let Some(service) = &service {
                        q.append_pair("service", service);
                    }
                    for s in scope.split(' ').filter(|s| !s.is_empty()) {
                        q.append_pair("scope", s);
                    }
                }
                let mut req = self.http.get(realm_url);
                if let Some(c) = &self.credentials {
                    req = req.basic_auth(&c.username, Some(&c.password));
                }
                let answer = req
                    .timeout(self.deadline)
                    .send()
                    .await
                    .map_err(|e| self.unreachable(error_chain(&e)))?;
                if !answer.status().is_success() {
                    return Err(UpstreamError::Status {
                        host: self.host.clone(),
                        status: answer.status().as_u16(),
                        what: format!("a token request for {scope}"),
                    });
                }
                let body = self
                    .read_capped(answer, self.limits.max_list_bytes, "a token answer")
                    .await?;
                let (token, until) = serde_json::from_slice::<TokenResponse>(&body)
                    .ok()
                    .and_then(TokenResponse::into_token)
                    .ok_or_else(|| {
                        protocol("the token endpoint answered without a token".into())
                    })?;
                self.tokens.put(scope, token, until);
                Ok(())
            }
            None => Err(protocol(
                "401 without a usable WWW-Authenticate challenge".into(),
            )),
        }
    }

    /// The URL of a path under the API base, or of an absolute URL on the upstream's own
    /// origin (credentials never go to another host).
    fn resolve(&self, target: &str) -> Result<Url> {
        if target.starts_with('/') && !target.starts_with("//") {
            return Url::parse(&format!("{}{target}", self.base)).map_err(|e| {
                UpstreamError::Protocol {
                    host: self.host.clone(),
                    reason: format!("invalid path {target:?}: {e}"),
                }
            });
        }
        let url = self
            .endpoint
            .join(target)
            .map_err(|e| UpstreamError::Protocol {
                host: self.host.clone(),
                reason: format!("invalid location {target:?}: {e}"),
            })?;
        if url.origin() != self.endpoint.origin() {
            return Err(UpstreamError::Protocol {
                host: self.host.clone(),
                reason: format!("refusing to follow {url}: it is not on {}", self.endpoint),
            });
        }
        Ok(url)
    }

    fn unexpected(&self, resp: &Response, what: &str) -> UpstreamError {
        UpstreamError::Status {
            host: self.host.clone(),
            status: resp.status().as_u16(),
            what: what.to_string(),
        }
    }

    fn pull_scope(remote: &str) -> String {
        format!("repository:{remote}:pull")
    }

    /// A manifest request accepting every manifest type: the answer when 200, `None` when
    /// 404, else an error.
    async fn manifest_request(
        &self,
        method: Method,
        remote: &str,
        reference: &str,
    ) -> Result<Option<Response>> {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, MANIFEST_ACCEPT.parse().expect("static header"));
        let what = format!("a manifest {method}");
        let resp = self
            .send(
                method,
                &format!("/v2/{remote}/manifests/{reference}"),
                &Self::pull_scope(remote),
                h,
            )
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(Some(resp)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.unexpected(&resp, &what)),
        }
    }

    /// The digest a tag points to now (a HEAD: it does not count against pull quotas).
    pub async fn head_manifest(&self, remote: &str, reference: &str) -> Result<Option<Digest>> {
        let Some(resp) = self
            .manifest_request(Method::HEAD, remote, reference)
            .await?
        else {
            return Ok(None);
        };
        let digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        match digest {
            Some(d) => Ok(Some(d)),
            // Without the header, the body tells.
            None => Ok(self
                .get_manifest(remote, reference)
                .await?
                .map(|m| m.digest)),
        }
    }

    /// A manifest, its bytes verified against `reference` when that is a digest.
    pub async fn get_manifest(
        &self,
        remote: &str,
        reference: &str,
    ) -> Result<Option<RemoteManifest>> {
        let Some(resp) = self
            .manifest_request(Method::GET, remote, reference)
            .await?
        else {
            return Ok(None);
        };
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = self
            .read_capped(resp, self.limits.max_manifest_bytes, "a manifest")
            .await?;
        self.observer.received(&self.host, body.len() as u64);
        // Taken as a manifest only if it is one, and served with a type the registry
        // knows, whatever the upstream said.
        let media_type = manifest::parse(content_type.as_deref(), &body)
            .map_err(|e| UpstreamError::Protocol {
                host: self.host.clone(),
                reason: format!("{remote}:{reference} is not a valid manifest: {e}"),
            })?
            .served_type(content_type.as_deref())
            .to_string();
        let digest = match reference.parse::<Digest>() {
            Ok(expected) => {
                let actual = Digest::of(expected.algorithm(), &body);
                if actual != expected {
                    return Err(UpstreamError::Protocol {
                        host: self.host.clone(),
                        reason: format!("manifest {expected} arrived with digest {actual}"),
                    });
                }
                actual
            }
            Err(_) => Digest::sha256_of(&body),
        };
        Ok(Some(RemoteManifest {
            body,
            media_type,
            digest,
        }))
    }

    /// Starts a blob download at byte `from`; the response's body is the blob (from
    /// there). `None` when upstream does not have it.
    pub async fn get_blob(
        &self,
        remote: &str,
        digest: &Digest,
        from: u64,
    ) -> Result<Option<Response>> {
        let mut h = HeaderMap::new();
        if from > 0 {
            h.insert(
                RANGE,
                format!("bytes={from}-").parse().expect("range header"),
            );
        }
        let resp = self
            .send_body(
                Method::GET,
                &format!("/v2/{remote}/blobs/{digest}"),
                &Self::pull_scope(remote),
                h,
                &|| None,
                None,
            )
            .await?;
        match resp.status() {
            StatusCode::OK if from == 0 => Ok(Some(resp)),
            StatusCode::PARTIAL_CONTENT if from > 0 => Ok(Some(resp)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.unexpected(&resp, "a blob GET")),
        }
    }

    pub async fn head_blob(&self, remote: &str, digest: &Digest) -> Result<Option<u64>> {
        let resp = self
            .send(
                Method::HEAD,
                &format!("/v2/{remote}/blobs/{digest}"),
                &Self::pull_scope(remote),
                HeaderMap::new(),
            )
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(content_length(&resp)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.unexpected(&resp, "a blob HEAD")),
        }
    }

    /// One page of tags: the tags and whether upstream says more follow.
    pub async fn tags(
        &self,
        remote: &str,
        n: usize,
        last: Option<&str>,
    ) -> Result<Option<(Vec<String>, bool)>> {
        let mut query = form_query(&[("n", &n.to_string())]);
        if let Some(last) = last {
            query.push_str(&format!("&{}", form_query(&[("last", last)])));
        }
        let resp = self
            .send(
                Method::GET,
                &format!("/v2/{remote}/tags/list?{query}"),
                &Self::pull_scope(remote),
                HeaderMap::new(),
            )
            .await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(self.unexpected(&resp, "a tag list")),
        }
        let more = resp.headers().contains_key(LINK);
        #[derive(serde::Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let body = self
            .read_capped(resp, self.limits.max_list_bytes, "a tag list")
            .await?;
        let list: TagList = serde_json::from_slice(&body).map_err(|e| UpstreamError::Protocol {
            host: self.host.clone(),
            reason: format!("invalid tag list: {e}"),
        })?;
        Ok(Some((list.tags.unwrap_or_default(), more)))
    }

    /// The referrers API, if upstream has it.
    pub async fn referrers(
        &self,
        remote: &str,
        subject: &Digest,
    ) -> Result<Option<Vec<ReferrerRecord>>> {
        let resp = self
            .send(
                Method::GET,
                &format!("/v2/{remote}/referrers/{subject}"),
                &Self::pull_scope(remote),
                HeaderMap::new(),
            )
            .await?;
        if resp.status() != StatusCode::OK {
            // 404: no referrers API upstream (distribution); the local list answers.
            return Ok(None);
        }
        #[derive(serde::Deserialize)]
        struct Index {
            manifests: Vec<ReferrerRecord>,
        }
        let body = self
            .read_capped(resp, self.limits.max_list_bytes, "a referrers list")
            .await?;
        let index: Index = serde_json::from_slice(&body).map_err(|e| UpstreamError::Protocol {
            host: self.host.clone(),
            reason: format!("invalid referrers index: {e}"),
        })?;
        Ok(Some(index.manifests))
    }

    fn push_scope(remote: &str) -> String {
        format!("repository:{remote}:pull,push")
    }

    /// Checks that the registry answers and accepts the configured credentials
    /// (`sealer login`).
    pub async fn ping(&self) -> Result<()> {
        let resp = self.send(Method::GET, "/v2/", "", HeaderMap::new()).await?;
        match resp.status() {
            StatusCode::OK => Ok(()),
            _ => Err(self.unexpected(&resp, "GET /v2/ with the given credentials")),
        }
    }

    /// Whether `remote` already has the blob (so a push can skip it).
    pub async fn has_blob(&self, remote: &str, digest: &Digest) -> Result<bool> {
        let resp = self
            .send(
                Method::HEAD,
                &format!("/v2/{remote}/blobs/{digest}"),
                &Self::push_scope(remote),
                HeaderMap::new(),
            )
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.unexpected(&resp, "a blob HEAD")),
        }
    }

    /// Asks the registry to link a blob it holds for `from` into `remote`; `false`
    /// when it did not (the blob then has to be uploaded).
    pub async fn mount_blob(&self, remote: &str, digest: &Digest, from: &str) -> Result<bool> {
        let scope = format!("{} repository:{from}:pull", Self::push_scope(remote));
        let query = form_query(&[("mount", &digest.to_string()), ("from", from)]);
        let resp = self
            .send(
                Method::POST,
                &format!("/v2/{remote}/blobs/uploads/?{query}"),
                &scope,
                HeaderMap::new(),
            )
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                // The registry opened an upload instead; leave it to expire.
                Ok(false)
            }
            _ => Err(self.unexpected(&resp, "a cross-repository mount")),
        }
    }

    /// Uploads a blob of `size` bytes in one request after opening the session. `body`
    /// makes the bytes afresh for each attempt.
    pub async fn push_blob(
        &self,
        remote: &str,
        digest: &Digest,
        size: u64,
        body: &(dyn Fn() -> Option<reqwest::Body> + Sync),
    ) -> Result<()> {
        let scope = Self::push_scope(remote);
        let resp = self
            .send(
                Method::POST,
                &format!("/v2/{remote}/blobs/uploads/"),
                &scope,
                HeaderMap::new(),
            )
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.unexpected(&resp, "opening an upload"));
        }
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| UpstreamError::Protocol {
                host: self.host.clone(),
                reason: "an upload was opened without a Location".into(),
            })?;
        let mut url = self.resolve(location)?;
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            "application/octet-stream".parse().expect("static header"),
        );
        h.insert(CONTENT_LENGTH, size.into());
        let resp = self
            .send_body(Method::PUT, url.as_str(), &scope, h, body, None)
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(()),
            _ => Err(self.unexpected(&resp, &format!("the upload of {digest}"))),
        }
    }

    /// Whether `remote` has the manifest `reference` (a digest or a tag).
    pub async fn has_manifest(&self, remote: &str, reference: &str) -> Result<bool> {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, MANIFEST_ACCEPT.parse().expect("static header"));
        let resp = self
            .send(
                Method::HEAD,
                &format!("/v2/{remote}/manifests/{reference}"),
                &Self::push_scope(remote),
                h,
            )
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.unexpected(&resp, "a manifest HEAD")),
        }
    }

    /// Pushes a manifest under `reference` (its digest, or a tag).
    pub async fn put_manifest(
        &self,
        remote: &str,
        reference: &str,
        media_type: &str,
        body: Bytes,
    ) -> Result<()> {
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            media_type.parse().map_err(|_| UpstreamError::Protocol {
                host: self.host.clone(),
                reason: format!("invalid media type {media_type:?}"),
            })?,
        );
        let resp = self
            .send_body(
                Method::PUT,
                &format!("/v2/{remote}/manifests/{reference}"),
                &Self::push_scope(remote),
                h,
                &|| Some(reqwest::Body::from(body.clone())),
                Some(self.deadline),
            )
            .await?;
        if resp.status() == StatusCode::CREATED {
            return Ok(());
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        Err(UpstreamError::Protocol {
            host: self.host.clone(),
            reason: format!(
                "the manifest PUT of {remote}:{reference} was refused with {status}: {}",
                text.trim()
            ),
        })
    }

    /// Reads a response body of at most `max` bytes; a larger one is an error (checked
    /// on `Content-Length` first, then while reading, for bodies without one).
    async fn read_capped(&self, resp: Response, max: usize, what: &str) -> Result<Bytes> {
        let too_large = || UpstreamError::Protocol {
            host: self.host.clone(),
            reason: format!("{what} larger than {max} bytes was refused"),
        };
        if content_length(&resp).is_some_and(|n| n > max as u64) {
            return Err(too_large());
        }
        let mut body = bytes::BytesMut::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.unreachable(error_chain(&e)))?;
            if body.len() + chunk.len() > max {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    /// How long a blob download of `size` bytes may take in all: the timeout, plus the
    /// time to receive it at [`MIN_BLOB_RATE`]. An upstream trickling bytes just fast
    /// enough to beat the read timeout cannot hold a fill for ever.
    pub(crate) fn blob_deadline(&self, size: u64) -> Duration {
        self.deadline + Duration::from_secs(size / MIN_BLOB_RATE)
    }

    /// Largest blob a fill may take, if bounded.
    pub(crate) fn max_blob_bytes(&self) -> Option<u64> {
        self.limits.max_blob_bytes
    }

    pub(crate) fn record_received(&self, bytes: u64) {
        self.observer.received(&self.host, bytes);
    }

    pub fn record_error(&self) {
        self.observer.error(&self.host);
    }
}

/// TLS settings for other HTTPS downloads (the system's trusted roots), so every client
/// sealer makes verifies certificates the same way.
pub fn tls_client_config() -> anyhow::Result<rustls::ClientConfig> {
    sealer_registry::tls::client::client_config(None, false)
}

pub fn content_length(resp: &Response) -> Option<u64> {
    resp.headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn form_query(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

async fn backoff(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt - 1))).await;
}

/// An error with its causes, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
