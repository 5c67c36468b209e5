//! HTTP helpers for talking to a registry under test.

use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

use crate::content::*;
use crate::server::{Registry, Via};

pub fn client() -> Client {
    // The workspace builds reqwest with rustls but no default crypto provider (the
    // mirror configures its own); plain clients get ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        // A request stuck on a server under test fails its test rather than hang the
        // run (no request here needs more than seconds).
        .timeout(std::time::Duration::from_secs(300))
        .build()
        .unwrap()
}

/// A client that sends `user:password` (Basic) with every request.
pub fn client_as(user: &str, password: &str) -> Client {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    client_authorized(&format!("Basic {token}"))
}

/// A client that sends a bearer token with every request.
pub fn client_bearer(token: &str) -> Client {
    client_authorized(&format!("Bearer {token}"))
}

fn client_authorized(authorization: &str) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        authorization.parse().unwrap(),
    );
    Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .build()
        .unwrap()
}

/// Asserts `resp` is the spec's JSON error with `status` and `code`; returns the body.
pub async fn assert_error(resp: Response, status: u16, code: &str) -> Value {
    let got = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = resp.text().await.unwrap();
    assert_eq!(got.as_u16(), status, "status; body: {text}");
    assert!(
        ct.starts_with("application/json"),
        "error content-type {ct:?}"
    );
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("error body is not JSON: {text}"));
    let first = &body["errors"][0];
    assert_eq!(first["code"], code, "error code; body: {text}");
    assert!(first["message"].is_string(), "error has a message: {text}");
    body
}

pub fn header(resp: &Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
        .to_str()
        .unwrap()
        .to_string()
}

pub fn header_opt(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// Monolithic push (`POST ?digest=`); returns the digest.
pub async fn push_blob(reg: &Registry, repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let resp = reg
        .client()
        .post(reg.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
        .body(data.to_vec())
        .via(reg)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED, "pushing blob to {repo}");
    digest
}

pub async fn put_manifest(
    reg: &Registry,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> Response {
    reg.client()
        .put(reg.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("content-type", media_type)
        .body(body.to_vec())
        .via(reg)
        .await
        .unwrap()
}

/// A pushed image: its manifest bytes and digest, config and layer blobs.
pub struct PushedImage {
    pub manifest: Vec<u8>,
    pub digest: String,
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
}

/// Pushes a config, `layers` random layers of `layer_size` bytes and an OCI manifest
/// tagged `tag`.
pub async fn push_image(
    reg: &Registry,
    repo: &str,
    tag: &str,
    layers: usize,
    layer_size: usize,
) -> PushedImage {
    push_image_as(reg, repo, tag, layers, layer_size, OCI_MANIFEST, json!({})).await
}

pub async fn push_image_as(
    reg: &Registry,
    repo: &str,
    tag: &str,
    layers: usize,
    layer_size: usize,
    media_type: &str,
    extra: Value,
) -> PushedImage {
    let (config_type, layer_type) = if media_type == DOCKER_MANIFEST {
        (DOCKER_CONFIG, DOCKER_LAYER)
    } else {
        (OCI_CONFIG, OCI_LAYER)
    };
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "nonce": hex::encode(random_bytes(8)),
    }))
    .unwrap();
    push_blob(reg, repo, &config).await;
    let mut blobs = Vec::new();
    let mut descs = Vec::new();
    for _ in 0..layers {
        let data = random_bytes(layer_size);
        push_blob(reg, repo, &data).await;
        descs.push(descriptor(layer_type, &data));
        blobs.push(data);
    }
    let manifest = image_manifest(media_type, descriptor(config_type, &config), descs, extra);
    let resp = put_manifest(reg, repo, tag, media_type, &manifest).await;
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "pushing manifest {repo}:{tag}"
    );
    PushedImage {
        digest: sha256(&manifest),
        manifest,
        config,
        layers: blobs,
    }
}

/// `GET` of a registry path, accepting any media type.
pub async fn get(reg: &Registry, path: impl AsRef<str>) -> Response {
    reg.client()
        .get(reg.url(path.as_ref()))
        .header("accept", "*/*")
        .via(reg)
        .await
        .unwrap()
}

pub async fn head(reg: &Registry, path: impl AsRef<str>) -> Response {
    reg.client()
        .head(reg.url(path.as_ref()))
        .header("accept", "*/*")
        .via(reg)
        .await
        .unwrap()
}

/// `POST` of a registry path with no body (an upload's start).
pub async fn post(reg: &Registry, path: impl AsRef<str>) -> Response {
    reg.client()
        .post(reg.url(path.as_ref()))
        .via(reg)
        .await
        .unwrap()
}

pub async fn delete(reg: &Registry, path: impl AsRef<str>) -> Response {
    reg.client()
        .delete(reg.url(path.as_ref()))
        .via(reg)
        .await
        .unwrap()
}
