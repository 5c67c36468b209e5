//! A lying upstream cannot turn the mirror against its clients or its host: redirects
//! are followed only for blobs and never downgraded, bad bytes never reach a client
//! whole, everything an upstream sends is bounded and validated, and mirrored names
//! cannot be shadowed by pushes.

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use sealer_e2e::*;
use serde_json::json;

/// A registry mirroring Docker Hub at `upstream` (an `http://` URL), with `[mirror]`
/// settings and extra flags; its files live in `dir`.
fn mirror_of(dir: &std::path::Path, upstream: &str, mirror_toml: &str, flags: &[&str]) -> Registry {
    let cfg = dir.join("registry.toml");
    std::fs::write(
        &cfg,
        format!("[mirror]\n{mirror_toml}\n[[mirror.upstreams]]\nhost = \"docker.io\"\nendpoint = \"{upstream}\"\n"),
    )
    .unwrap();
    let mut args = vec!["--config", cfg.to_str().unwrap()];
    args.extend_from_slice(flags);
    Registry::spawn(&dir.join("store"), dir.join("registry.log"), &args, &[])
}

/// A small valid image: (manifest bytes, config, layer).
fn image() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let layer = random_bytes(300_000);
    let manifest = image_manifest(
        OCI_MANIFEST,
        descriptor(OCI_CONFIG, &config),
        vec![descriptor(OCI_LAYER, &layer)],
        json!({}),
    );
    (manifest, config, layer)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_redirect_to_another_host_is_not_followed() {
    let up = Hostile::start().await;
    let elsewhere = Hostile::start().await;
    let (manifest, _, _) = image();
    elsewhere.answer("/m", Answer::ok(OCI_MANIFEST, manifest));
    up.answer(
        "/v2/library/app/manifests/1",
        Answer::redirect(&format!("{}/m", elsewhere.url)),
    );
    let dir = tempfile::tempdir().unwrap();
    let reg = mirror_of(dir.path(), &up.url, "", &[]);

    let resp = get(&reg, "/v2/library/app/manifests/1?ns=docker.io").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(elsewhere.requests(), Vec::<String>::new(), "never asked");
    reg.log_where("the refusal", |l| {
        l.contains("refusing to follow a redirect")
    });
    // Nothing was cached under the name either.
    assert!(!reg.root.join("repositories/docker.io/library/app").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blob_that_fails_its_digest_never_reaches_a_client_whole() {
    let up = Hostile::start().await;
    let good = random_bytes(2 * 1024 * 1024);
    let digest = sha256(&good);
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    up.answer(
        &format!("/v2/library/app/blobs/{digest}"),
        Answer::ok("application/octet-stream", bad),
    );
    let dir = tempfile::tempdir().unwrap();
    let reg = mirror_of(dir.path(), &up.url, "", &[]);

    let resp = get(&reg, format!("/v2/library/app/blobs/{digest}?ns=docker.io")).await;
    assert_eq!(resp.status(), StatusCode::OK, "streaming starts at once");
    let mut body = resp.bytes_stream();
    let (mut received, mut failed) = (0usize, false);
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => received += c.len(),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the response breaks off");
    assert!(
        received < good.len(),
        "{received} bytes: never the whole blob"
    );
    let hex = digest.trim_start_matches("sha256:");
    assert!(
        !reg.root
            .join("blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .exists()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_upstream_cannot_redirect_blobs_to_http() {
    let storage = tempfile::tempdir().unwrap();
    let cdn = Cdn::start(storage.path());
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_tls(certs.path());
    let up = DockerRegistry::start(UpstreamOptions {
        tls: Some((cert.clone(), key)),
        redirect_to: Some(format!("{}/", cdn.base)),
        root: Some(storage.path().to_path_buf()),
        ..Default::default()
    });
    run(std::process::Command::new(require("skopeo"))
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:app", test_image_layout().display()))
        .arg(format!("docker://{}/library/app:1", up.host)));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("registry.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[mirror.upstreams]]\nhost = \"docker.io\"\nendpoint = \"https://{}\"\nca_file = \"{}\"\n",
            up.host,
            cert.display()
        ),
    )
    .unwrap();
    let reg = Registry::spawn(
        &dir.path().join("store"),
        dir.path().join("registry.log"),
        &["--config", cfg.to_str().unwrap()],
        &[],
    );
    let resp = get(&reg, "/v2/library/app/manifests/1?ns=docker.io").await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "the manifest is the registry's own"
    );
    let m: serde_json::Value = resp.json().await.unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let resp = get(&reg, format!("/v2/library/app/blobs/{layer}?ns=docker.io")).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(
        !cdn.log_text().contains("GET "),
        "the http CDN was never asked:\n{}",
        cdn.log_text()
    );
    reg.log_where("the refusal", |l| l.contains("it leaves https"));
}

#[tokio::test(flavor = "multi_thread")]
async fn what_an_upstream_sends_is_bounded_and_validated() {
    let up = Hostile::start().await;
    // A manifest larger than manifests.max_size, with and without Content-Length.
    let huge = image_manifest(
        OCI_MANIFEST,
        descriptor(OCI_CONFIG, b"{}"),
        vec![],
        json!({"annotations": {"x": "y".repeat(2 * 1024 * 1024)}}),
    );
    up.answer(
        "/v2/library/huge/manifests/1",
        Answer::ok(OCI_MANIFEST, huge),
    );
    up.answer(
        "/v2/library/endless/manifests/1",
        Answer::Endless {
            content_type: OCI_MANIFEST.into(),
        },
    );
    // A tag list that never ends.
    up.answer(
        "/v2/library/endless/tags/list",
        Answer::Endless {
            content_type: "application/json".into(),
        },
    );
    // Not a manifest at all, and one with an unknown type.
    up.answer(
        "/v2/library/html/manifests/1",
        Answer::ok("text/html", "<script>alert(1)</script>"),
    );
    let (manifest, config, _) = image();
    up.answer(
        "/v2/library/typed/manifests/1",
        Answer::ok("text/html", manifest.clone()),
    );
    // A blob larger than the largest upload, and one whose length differs from its
    // manifest's.
    let big = random_bytes(3 * 1024 * 1024);
    up.answer(
        &format!("/v2/library/big/blobs/{}", sha256(&big)),
        Answer::ok("application/octet-stream", big.clone()),
    );
    let dir = tempfile::tempdir().unwrap();
    let reg = mirror_of(
        dir.path(),
        &up.url,
        "max_list_size = 65536",
        &[
            "--max-manifest-bytes",
            "1048576",
            "--max-upload-size",
            "2097152",
        ],
    );

    for name in ["huge", "endless", "html"] {
        let started = Instant::now();
        let resp = get(&reg, format!("/v2/library/{name}/manifests/1?ns=docker.io")).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{name}");
        assert!(started.elapsed() < Duration::from_secs(20), "{name}");
    }
    reg.log_where("the size refusal", |l| {
        l.contains("a manifest larger than 1048576 bytes")
    });
    reg.log_where("the validation", |l| l.contains("is not a valid manifest"));
    // The tag list: the local (empty) answer, not the endless body.
    let resp = get(&reg, "/v2/library/endless/tags/list?ns=docker.io").await;
    assert!(resp.status() != StatusCode::OK || resp.bytes().await.unwrap().len() < 65536);
    reg.log_where("the list refusal", |l| {
        l.contains("a tag list larger than 65536 bytes")
    });

    // A valid manifest sent as text/html is served with the type it declares.
    let resp = get(&reg, "/v2/library/typed/manifests/1?ns=docker.io").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-type"), OCI_MANIFEST);
    assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
    assert!(header(&resp, "content-security-policy").contains("sandbox"));

    let resp = get(
        &reg,
        format!("/v2/library/big/blobs/{}?ns=docker.io", sha256(&big)),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    reg.log_where("the blob size refusal", |l| {
        l.contains("over the largest blob allowed")
    });

    // The manifest says the config has 2 bytes more than the upstream sends.
    let config_digest = sha256(&config);
    let lying = image_manifest(
        OCI_MANIFEST,
        json!({"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len() + 2}),
        vec![],
        json!({}),
    );
    up.answer(
        "/v2/library/liar/manifests/1",
        Answer::ok(OCI_MANIFEST, lying),
    );
    up.answer(
        &format!("/v2/library/liar/blobs/{config_digest}"),
        Answer::ok("application/octet-stream", config.clone()),
    );
    let resp = get(&reg, "/v2/library/liar/manifests/1?ns=docker.io").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = get(
        &reg,
        format!("/v2/library/liar/blobs/{config_digest}?ns=docker.io"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    reg.log_where("the declared size refusal", |l| {
        l.contains("where the manifest says")
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fill_left_by_its_last_client_stops_after_the_grace_period() {
    let up = Hostile::start().await;
    let digest = sha256(b"never completes");
    // 64 MiB at 64 KiB every 20 ms: about 20 s in all.
    up.answer(
        &format!("/v2/library/slow/blobs/{digest}"),
        Answer::Trickle {
            total: 64 * 1024 * 1024,
            chunk: 64 * 1024,
            pause: Duration::from_millis(20),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let reg = mirror_of(dir.path(), &up.url, "abandon_after = \"1s\"", &[]);
    let resp = get(
        &reg,
        format!("/v2/library/slow/blobs/{digest}?ns=docker.io"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.bytes_stream();
    let _ = body.next().await;
    drop(body);
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.dropped() == 0 {
        assert!(Instant::now() < deadline, "the upstream download went on");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    reg.log_where("why it stopped", |l| l.contains("every client left"));
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_misses_of_one_manifest_make_one_upstream_request() {
    let up = Hostile::start().await;
    let (manifest, _, _) = image();
    up.answer(
        "/v2/library/app/manifests/1",
        Answer::ok(OCI_MANIFEST, manifest),
    );
    let dir = tempfile::tempdir().unwrap();
    let reg = mirror_of(dir.path(), &up.url, "", &[]);
    let url = reg.url("/v2/library/app/manifests/1?ns=docker.io");
    let pulls: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { client().get(url).send().await.unwrap().status() })
        })
        .collect();
    for p in pulls {
        assert_eq!(p.await.unwrap(), StatusCode::OK);
    }
    let gets = up
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /v2/library/app/manifests/1"))
        .count();
    assert_eq!(gets, 1, "{:#?}", up.requests());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_any_host_upstream_refuses_bad_hosts_and_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::spawn(
        &dir.path().join("store"),
        dir.path().join("registry.log"),
        &["--upstream", "*"],
        &[],
    );
    for ns in ["a:b", "a:99999", "1.2.3.4.5", "x@127.0.0.1"] {
        let resp = get(&reg, format!("/v2/x/y/manifests/1?ns={ns}")).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{ns}");
    }
    // The worker that served them is still there.
    assert_eq!(get(&reg, "/v2/").await.status(), StatusCode::OK);
    reg.log_where("the bad host", |l| l.contains("not a registry host"));

    let cfg = dir.path().join("any.toml");
    std::fs::write(
        &cfg,
        "[[mirror.upstreams]]\nhost = \"*\"\nusername = \"u\"\npassword = \"p\"\n",
    )
    .unwrap();
    let out = output(
        std::process::Command::new(binary("sealer-registry"))
            .args(["serve", "--addr", "127.0.0.1:0", "--config"])
            .arg(&cfg)
            .arg("--root")
            .arg(dir.path().join("other")),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`*` upstream cannot have credentials"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pushed_name_cannot_shadow_a_mirrored_image() {
    let up = Hostile::start().await;
    let (manifest, _, _) = image();
    let upstream_digest = sha256(&manifest);
    up.answer("/v2/a/x/manifests/1", Answer::ok(OCI_MANIFEST, manifest));
    let dir = tempfile::tempdir().unwrap();
    let reg = mirror_of(dir.path(), &up.url, "", &[]);
    // Someone pushes `a/x:1` under the bare name.
    let pushed = push_image(&reg, "a/x", "1", 1, 64).await;
    assert_ne!(pushed.digest, upstream_digest);

    // containerd's pull of docker.io/a/x:1 gets the upstream's image.
    let resp = get(&reg, "/v2/a/x/manifests/1?ns=docker.io").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "docker-content-digest"), upstream_digest);
    assert_eq!(up.asked("/v2/a/x/manifests/1"), 1);
    // A direct pull of the bare name still gets what was pushed.
    let resp = get(&reg, "/v2/a/x/manifests/1").await;
    assert_eq!(header(&resp, "docker-content-digest"), pushed.digest);

    // A registry that mirrors nothing keeps answering short names for `ns` pulls.
    let plain = Registry::start();
    let img = push_image(&plain, "team/app", "1", 1, 64).await;
    let resp = get(&plain, "/v2/team/app/manifests/1?ns=sea.hub:5000").await;
    assert_eq!(header(&resp, "docker-content-digest"), img.digest);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_with_a_port_is_served_from_its_cache() {
    let up = Registry::start();
    let img = push_image(&up, "team/app", "1", 1, 4096).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("registry.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[mirror.upstreams]]\nhost = \"registry.local:5000\"\nendpoint = \"http://{}\"\n",
            up.host
        ),
    )
    .unwrap();
    let reg = Registry::spawn(
        &dir.path().join("store"),
        dir.path().join("registry.log"),
        &["--config", cfg.to_str().unwrap(), "--tag-ttl", "1h"],
        &[],
    );
    let path = "/v2/team/app/manifests/1?ns=registry.local:5000";
    let resp = get(&reg, path).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "docker-content-digest"), img.digest);
    assert!(
        reg.root
            .join("repositories/registry.local_5000/team/app")
            .exists()
    );
    let layer = sha256(&img.layers[0]);
    let blob = format!("/v2/team/app/blobs/{layer}?ns=registry.local:5000");
    assert_eq!(get(&reg, &blob).await.bytes().await.unwrap(), img.layers[0]);

    // With the upstream gone, both are served from the cache.
    let mut up = up;
    up.stop();
    let resp = get(&reg, path).await;
    assert_eq!(resp.status(), StatusCode::OK, "served offline");
    assert_eq!(get(&reg, &blob).await.bytes().await.unwrap(), img.layers[0]);
    // The path-prefixed form reaches the same cache, and pushes to it are refused.
    let resp = get(&reg, "/v2/registry.local_5000/team/app/manifests/1").await;
    assert_eq!(header(&resp, "docker-content-digest"), img.digest);
    let resp = put_manifest(
        &reg,
        "registry.local_5000/team/app",
        "2",
        OCI_MANIFEST,
        &img.manifest,
    )
    .await;
    assert_error(resp, 403, "DENIED").await;
}
