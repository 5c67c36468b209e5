//! The workloads, each run the same way against either registry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use reqwest::{Client, StatusCode};
use serde_json::json;
use sha2::{Digest as _, Sha256};

pub const MIB: usize = 1024 * 1024;
pub const GIB: usize = 1024 * MIB;

pub fn client() -> Client {
    // reqwest is built with rustls but no default crypto provider (see sealer-pull-proxy).
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(128)
        .build()
        .unwrap()
}

pub fn random(n: usize) -> Vec<u8> {
    let mut x: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A large blob streamed from memory: a unique 1 MiB head, then a shared 64 MiB buffer
/// repeated. Sending it costs the client one copy, the same for both registries.
pub struct BigBlob {
    head: Bytes,
    base: Bytes,
    pub len: usize,
    pub digest: String,
}

impl BigBlob {
    pub fn new(base: &Bytes, len: usize) -> BigBlob {
        let head = Bytes::from(random(MIB));
        let mut b = BigBlob {
            head,
            base: base.clone(),
            len,
            digest: String::new(),
        };
        let mut h = Sha256::new();
        for chunk in b.chunks(0, len) {
            h.update(&chunk);
        }
        b.digest = format!("sha256:{}", hex::encode(h.finalize()));
        b
    }

    /// 1 MiB pieces of `[offset, offset+len)`.
    pub fn chunks(&self, offset: usize, len: usize) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let piece = if pos < MIB {
                self.head.slice(pos..MIB.min(end))
            } else {
                let o = (pos - MIB) % self.base.len();
                let n = (self.base.len() - o).min(end - pos).min(MIB);
                self.base.slice(o..o + n)
            };
            pos += piece.len();
            out.push(piece);
        }
        out
    }

    fn body(&self, offset: usize, len: usize) -> reqwest::Body {
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            self.chunks(offset, len).into_iter().map(Ok).collect();
        reqwest::Body::wrap_stream(futures::stream::iter(chunks))
    }
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else {
        format!("{base}{location}")
    }
}

fn with_query(url: &str, kv: &str) -> String {
    if url.contains('?') {
        format!("{url}&{kv}")
    } else {
        format!("{url}?{kv}")
    }
}

async fn start_upload(c: &Client, base: &str, repo: &str) -> anyhow::Result<String> {
    let resp = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::ACCEPTED,
        "POST upload: {}",
        resp.status()
    );
    let loc = resp
        .headers()
        .get("location")
        .context("no Location")?
        .to_str()?
        .to_string();
    Ok(absolute(base, &loc))
}

/// POST, then one PUT carrying the whole blob.
pub async fn push_monolithic(
    c: &Client,
    base: &str,
    repo: &str,
    blob: &BigBlob,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let loc = start_upload(c, base, repo).await?;
    let resp = c
        .put(with_query(&loc, &format!("digest={}", blob.digest)))
        .header("content-type", "application/octet-stream")
        .header("content-length", blob.len)
        .body(blob.body(0, blob.len))
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::CREATED,
        "PUT: {}",
        resp.status()
    );
    Ok(t.elapsed())
}

/// POST, PATCH per chunk with Content-Range, then an empty PUT.
pub async fn push_chunked(
    c: &Client,
    base: &str,
    repo: &str,
    blob: &BigBlob,
    chunk: usize,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let mut loc = start_upload(c, base, repo).await?;
    let mut offset = 0;
    while offset < blob.len {
        let n = chunk.min(blob.len - offset);
        let resp = c
            .patch(&loc)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{offset}-{}", offset + n - 1))
            .header("content-length", n)
            .body(blob.body(offset, n))
            .send()
            .await?;
        ensure!(
            resp.status() == StatusCode::ACCEPTED,
            "PATCH: {}",
            resp.status()
        );
        loc = absolute(
            base,
            resp.headers()
                .get("location")
                .context("no Location")?
                .to_str()?,
        );
        offset += n;
    }
    let resp = c
        .put(with_query(&loc, &format!("digest={}", blob.digest)))
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::CREATED,
        "PUT: {}",
        resp.status()
    );
    Ok(t.elapsed())
}

/// GET a blob and read it to the end; returns the time and the bytes read.
pub async fn pull(
    c: &Client,
    base: &str,
    repo: &str,
    digest: &str,
) -> anyhow::Result<(Duration, usize)> {
    let t = Instant::now();
    let resp = c
        .get(format!("{base}/v2/{repo}/blobs/{digest}"))
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::OK,
        "GET blob: {}",
        resp.status()
    );
    let mut stream = resp.bytes_stream();
    let mut n = 0;
    while let Some(chunk) = stream.next().await {
        n += chunk?.len();
    }
    Ok((t.elapsed(), n))
}

pub async fn push_small(c: &Client, base: &str, repo: &str, data: &[u8]) -> anyhow::Result<String> {
    let digest = sha256(data);
    let loc = start_upload(c, base, repo).await?;
    let resp = c
        .put(with_query(&loc, &format!("digest={digest}")))
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::CREATED,
        "PUT small blob: {}",
        resp.status()
    );
    Ok(digest)
}

/// `total` pulls spread over `blobs`, `concurrency` at a time; returns the time.
pub async fn pull_many(
    c: &Client,
    base: &str,
    repo: &str,
    blobs: &[String],
    total: usize,
    concurrency: usize,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let results: Vec<anyhow::Result<(Duration, usize)>> = futures::stream::iter(0..total)
        .map(|i| {
            let d = blobs[i % blobs.len()].clone();
            async move { pull(c, base, repo, &d).await }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(t.elapsed())
}

pub struct Rate {
    pub per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
}

/// Keeps `concurrency` requests of `method path` in flight for `dur`; counts 200s.
pub async fn rate(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    concurrency: usize,
    dur: Duration,
) -> anyhow::Result<Rate> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let hc: HyperClient<HttpConnector, Empty<Bytes>> = HyperClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency * 2)
        .build(connector);
    let uri: hyper::Uri = format!("{base}{path}").parse()?;
    let method: hyper::Method = method.parse()?;
    let headers: Arc<Vec<(String, String)>> = Arc::new(
        headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    let deadline = Instant::now() + dur;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let hc = hc.clone();
        let uri = uri.clone();
        let method = method.clone();
        let headers = headers.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            while Instant::now() < deadline {
                let mut req = hyper::Request::builder()
                    .method(method.clone())
                    .uri(uri.clone());
                for (k, v) in headers.iter() {
                    req = req.header(k, v);
                }
                let req = req.body(Empty::<Bytes>::new()).unwrap();
                let t = Instant::now();
                match hc.request(req).await {
                    Ok(resp) => {
                        let ok = resp.status() == hyper::StatusCode::OK;
                        let _ = resp.into_body().collect().await;
                        if ok {
                            lat.push(t.elapsed());
                        } else {
                            errors += 1;
                        }
                    }
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await?;
        all.extend(lat);
        errors += e;
    }
    let elapsed = start.elapsed();
    if errors > 0 {
        bail!("{errors} requests failed");
    }
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Ok(Rate {
        per_sec: all.len() as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
    })
}

/// GETs of `repo`'s manifest tagged `latest` by 64 clients for `seconds`.
pub async fn manifest_get_rate(base: &str, repo: &str, seconds: u64) -> anyhow::Result<Rate> {
    let accept = ("accept", "application/vnd.oci.image.manifest.v1+json");
    let path = format!("/v2/{repo}/manifests/latest");
    rate(
        base,
        "GET",
        &path,
        &[accept],
        64,
        Duration::from_secs(seconds),
    )
    .await
}

/// An image with `layers` small layers pushed the way clients do (HEAD, POST, PUT per
/// layer, `concurrency` layers at a time), then its config and manifest.
pub async fn push_many_layers(
    c: &Client,
    base: &str,
    repo: &str,
    layers: usize,
    size: usize,
    concurrency: usize,
) -> anyhow::Result<Duration> {
    let datas: Vec<Vec<u8>> = (0..layers).map(|_| random(size)).collect();
    let config = serde_json::to_vec(
        &json!({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}, "n": hex::encode(random(8))}),
    )?;
    let t = Instant::now();
    let results: Vec<anyhow::Result<String>> = futures::stream::iter(datas.iter())
        .map(|d| async move {
            let digest = sha256(d);
            let head = c
                .head(format!("{base}/v2/{repo}/blobs/{digest}"))
                .send()
                .await?;
            ensure!(
                head.status() == StatusCode::NOT_FOUND,
                "HEAD new layer: {}",
                head.status()
            );
            push_small(c, base, repo, d).await
        })
        .buffered(concurrency)
        .collect()
        .await;
    let mut descs = Vec::new();
    for (r, d) in results.into_iter().zip(&datas) {
        descs.push(json!({"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest": r?, "size": d.len()}));
    }
    push_image(c, base, repo, "many", &config, descs).await?;
    Ok(t.elapsed())
}

/// Pushes `config` and an OCI image manifest over it and `layers` (already pushed) as
/// `repo:tag`.
pub async fn push_image(
    c: &Client,
    base: &str,
    repo: &str,
    tag: &str,
    config: &[u8],
    layers: Vec<serde_json::Value>,
) -> anyhow::Result<()> {
    let cd = push_small(c, base, repo, config).await?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType":"application/vnd.oci.image.config.v1+json","digest": cd,"size": config.len()},
        "layers": layers,
    }))?;
    let resp = c
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest)
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::CREATED,
        "PUT manifest: {}",
        resp.status()
    );
    Ok(())
}

/// Pushes a one-layer image and returns its manifest bytes.
pub async fn small_image(c: &Client, base: &str, repo: &str, tag: &str) -> anyhow::Result<Vec<u8>> {
    let layer = random(1024);
    let config = serde_json::to_vec(
        &json!({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}),
    )?;
    let ld = push_small(c, base, repo, &layer).await?;
    let cd = push_small(c, base, repo, &config).await?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType":"application/vnd.oci.image.config.v1+json","digest": cd,"size": config.len()},
        "layers": [{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest": ld,"size": layer.len()}],
    }))?;
    tag_manifest(c, base, repo, tag, &manifest).await?;
    Ok(manifest)
}

pub async fn tag_manifest(
    c: &Client,
    base: &str,
    repo: &str,
    tag: &str,
    manifest: &[u8],
) -> anyhow::Result<()> {
    let resp = c
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.to_vec())
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::CREATED,
        "PUT manifest {tag}: {}",
        resp.status()
    );
    Ok(())
}

/// Reads the whole tag list `n` at a time, following `Link`; returns the time and the
/// number of tags seen.
pub async fn list_tags(
    c: &Client,
    base: &str,
    repo: &str,
    n: usize,
) -> anyhow::Result<(Duration, usize)> {
    let t = Instant::now();
    let mut url = format!("{base}/v2/{repo}/tags/list?n={n}");
    let mut seen = 0;
    loop {
        let resp = c.get(&url).send().await?;
        ensure!(
            resp.status() == StatusCode::OK,
            "tags list: {}",
            resp.status()
        );
        let link = resp
            .headers()
            .get("link")
            .map(|v| v.to_str().unwrap_or("").to_string());
        let body: serde_json::Value = resp.json().await?;
        seen += body["tags"].as_array().map_or(0, Vec::len);
        match link {
            Some(l) => {
                let path = l
                    .trim_start_matches('<')
                    .split('>')
                    .next()
                    .unwrap_or("")
                    .to_string();
                url = absolute(base, &path);
            }
            None => break,
        }
    }
    Ok((t.elapsed(), seen))
}
