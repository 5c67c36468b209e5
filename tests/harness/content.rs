//! Test content: random blobs, digests and manifests built from the spec's JSON shapes.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256, Sha512};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Fast non-cryptographic random bytes (xorshift), different on every call.
pub fn random_bytes(n: usize) -> Vec<u8> {
    static SEED: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut x = nanos
        ^ SEED.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
        ^ (std::process::id() as u64) << 32;
    x |= 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub fn sha512(data: &[u8]) -> String {
    format!("sha512:{}", hex::encode(Sha512::digest(data)))
}

/// A descriptor for `data`.
pub fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": sha256(data), "size": data.len() })
}

/// An image manifest of `media_type` over a config and layers; `extra` fields
/// (`subject`, `artifactType`, `annotations`) are merged in.
pub fn image_manifest(
    media_type: &str,
    config: Value,
    layers: Vec<Value>,
    extra: Value,
) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config,
        "layers": layers,
    });
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            m[k] = v;
        }
    }
    serde_json::to_vec_pretty(&m).unwrap()
}

/// An index of `media_type` listing `(descriptor, architecture)` pairs.
pub fn index_manifest(media_type: &str, children: Vec<(Value, &str)>, extra: Value) -> Vec<u8> {
    let manifests: Vec<Value> = children
        .into_iter()
        .map(|(mut d, arch)| {
            d["platform"] = json!({ "os": "linux", "architecture": arch });
            d
        })
        .collect();
    let mut m = json!({ "schemaVersion": 2, "mediaType": media_type, "manifests": manifests });
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            m[k] = v;
        }
    }
    serde_json::to_vec_pretty(&m).unwrap()
}
