//! Hostile bundles: served over a store (`serve --bundle`) they cannot shadow the
//! store's content or leak the bytes next to an entry, and loaded (`sealer load`) they
//! cannot publish content of other repositories under their names.

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use sealer_e2e::*;
use serde_json::json;

/// Writes an OCI layout tar: `index.json` naming `images` (name, manifest digest, media
/// type), then `blobs` as (digest the entry is named by, content), in that order.
fn oci_bundle(path: &Path, images: &[(&str, &str, &str)], blobs: &[(&str, &[u8])]) {
    let manifests: Vec<_> = images
        .iter()
        .map(|(name, digest, media_type)| {
            json!({"mediaType": media_type, "digest": digest, "size": 1,
                   "annotations": {"org.opencontainers.image.ref.name": name,
                                   "io.containerd.image.name": name}})
        })
        .collect();
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": manifests})).unwrap();
    let mut tar = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut entries: Vec<(String, Vec<u8>)> = vec![
        (
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("index.json".into(), index),
    ];
    for (digest, data) in blobs {
        let hex = digest.trim_start_matches("sha256:");
        entries.push((format!("blobs/sha256/{hex}"), data.to_vec()));
    }
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    tar.finish().unwrap();
}

/// A config, a layer and a manifest over them.
fn image(layer: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []}, "n": hex::encode(random_bytes(4))}))
    .unwrap();
    let manifest = image_manifest(
        OCI_MANIFEST,
        descriptor(OCI_CONFIG, &config),
        vec![descriptor(OCI_LAYER, layer)],
        json!({}),
    );
    (manifest, config)
}

#[tokio::test]
async fn a_bundle_entry_cannot_shadow_the_store_or_leak_its_neighbour() {
    let dir = tempfile::tempdir().unwrap();
    let real = random_bytes(100_000);
    let digest = sha256(&real);
    let (manifest, config) = image(&real);
    let secret = b"SECRET-NEIGHBOUR-".repeat(10_000);
    // The bundle names a short, wrong entry after the layer's digest, then a secret.
    let bundle = dir.path().join("b.tar");
    oci_bundle(
        &bundle,
        &[("example.com/app:1", &sha256(&manifest), OCI_MANIFEST)],
        &[
            (&sha256(&manifest), &manifest),
            (&sha256(&config), &config),
            (&digest, b"short and wrong"),
            (&sha256(&secret), &secret),
        ],
    );
    let reg = Registry::spawn(
        &dir.path().join("store"),
        dir.path().join("registry.log"),
        &["--bundle", bundle.to_str().unwrap()],
        &[],
    );
    push_blob(&reg, "team/app", &real).await;

    // The store's repository reads the store's verified copy, whole or by range.
    let resp = get(&reg, format!("/v2/team/app/blobs/{digest}")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.bytes().await.unwrap();
    assert!(
        body.as_ref() == real.as_slice(),
        "not the store's copy: {} bytes",
        body.len()
    );
    let resp = client()
        .get(reg.url(&format!("/v2/team/app/blobs/{digest}")))
        .header("range", "bytes=50000-99999")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    let body = resp.bytes().await.unwrap();
    assert!(body.as_ref() == &real[50_000..], "not the store's bytes");
    // The bundle's own image never gets the neighbour's bytes: its damaged entry is not
    // served (the store's copy is not its to borrow).
    let resp = get(&reg, format!("/v2/example.com/app/blobs/{digest}")).await;
    let status = resp.status();
    let body = resp.bytes().await.unwrap();
    assert!(
        !body.windows(17).any(|w| w == b"SECRET-NEIGHBOUR-"),
        "leaked"
    );
    assert!(
        status == StatusCode::NOT_FOUND || body.as_ref() == real.as_slice(),
        "{status}, {} bytes",
        body.len()
    );
}

#[tokio::test]
async fn a_bundle_served_in_place_gets_only_known_content_types() {
    let dir = tempfile::tempdir().unwrap();
    let layer = random_bytes(1000);
    let (manifest, config) = image(&layer);
    let bundle = dir.path().join("b.tar");
    oci_bundle(
        &bundle,
        &[("example.com/app:1", &sha256(&manifest), "text/html")],
        &[
            (&sha256(&manifest), &manifest),
            (&sha256(&config), &config),
            (&sha256(&layer), &layer),
        ],
    );
    let reg = Registry::serve_bundles(&[&bundle]);
    let resp = get(&reg, "/v2/example.com/app/manifests/1").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-type"), OCI_MANIFEST);
    assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
}

/// `sealer` on its own store.
fn sealer(root: &Path, args: &[&str]) -> std::process::Output {
    output(
        Command::new(binary("sealer"))
            .arg("--root")
            .arg(root)
            .args(args),
    )
}

#[test]
fn sealer_load_publishes_only_what_the_bundle_carries() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    // The store holds a private image, loaded from a complete bundle.
    let layer = random_bytes(50_000);
    let (manifest, config) = image(&layer);
    let (m, c, l) = (sha256(&manifest), sha256(&config), sha256(&layer));
    let private = dir.path().join("private.tar");
    oci_bundle(
        &private,
        &[("example.com/secret:1", &m, OCI_MANIFEST)],
        &[(&m, &manifest), (&c, &config), (&l, &layer)],
    );
    let out = sealer(&root, &["load", "-i", private.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A bundle holding nothing but an index.json naming that manifest.
    let evil = dir.path().join("evil.tar");
    oci_bundle(&evil, &[("example.com/evil:1", &m, OCI_MANIFEST)], &[]);
    let out = sealer(&root, &["load", "-i", evil.to_str().unwrap()]);
    assert!(!out.status.success(), "the index-only bundle loaded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lacks") && err.contains("example.com/evil:1"),
        "{err}"
    );
    // One carrying the manifest but relying on the private image's layers.
    let thief = dir.path().join("thief.tar");
    oci_bundle(
        &thief,
        &[("example.com/thief:1", &m, OCI_MANIFEST)],
        &[(&m, &manifest)],
    );
    let out = sealer(&root, &["load", "-i", thief.to_str().unwrap()]);
    assert!(!out.status.success(), "the manifest-only bundle loaded");

    let images = sealer(&root, &["images", "--json"]);
    let listed = String::from_utf8_lossy(&images.stdout);
    assert!(listed.contains("example.com/secret"), "{listed}");
    assert!(
        !listed.contains("evil") && !listed.contains("thief"),
        "{listed}"
    );
    for repo in ["evil", "thief"] {
        let links = root
            .join("repositories/example.com")
            .join(repo)
            .join("_layers");
        assert!(!links.exists(), "{repo} got links to the private layers");
    }

    // A delta made for the same repository loads: what it leaves out is already there.
    let (manifest2, config2) = image(&layer);
    let (m2, c2) = (sha256(&manifest2), sha256(&config2));
    let delta = dir.path().join("delta.tar");
    oci_bundle(
        &delta,
        &[("example.com/secret:2", &m2, OCI_MANIFEST)],
        &[(&m2, &manifest2), (&c2, &config2)],
    );
    let out = sealer(&root, &["load", "-i", delta.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
