//! Talking to upstreams: redirects to a CDN without credentials, token realms on other
//! domains refused, TLS with a CA file, offline and unreachable upstreams, tag TTLs, tag
//! lists and referrers for mirrored names, and the mirror's metrics.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sealer_e2e::*;
use serde_json::json;

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn redirects_to_a_cdn_are_followed_without_credentials() {
    let tokens = TokenServer::start("127.0.0.1", USER, PASSWORD).await;
    let storage = tempfile::tempdir().unwrap();
    let cdn = Cdn::start(storage.path());
    let up = DockerRegistry::start(UpstreamOptions {
        token: Some(&tokens),
        redirect_to: Some(format!("{}/", cdn.base)),
        root: Some(storage.path().to_path_buf()),
        ..Default::default()
    });
    skopeo_push(&up.host, "library/app:1", Some(&creds()));
    let dir = tempfile::tempdir().unwrap();
    let reg = mirror(
        dir.path(),
        &upstream_entry("docker.io", &format!("http://{}", up.host)),
        &[],
    );

    let out = tempfile::tempdir().unwrap();
    run(std::process::Command::new(require("skopeo"))
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{}/docker.io/library/app:1", reg.host))
        .arg(format!("dir:{}", out.path().display())));
    let cdn_log = cdn.log_text();
    let blob_gets: Vec<_> = cdn_log
        .lines()
        .filter(|l| l.starts_with("GET ") && l.contains("/blobs/"))
        .collect();
    assert!(
        blob_gets.len() >= 2,
        "the blobs came from the CDN:\n{cdn_log}\n{}",
        up.log_text()
    );
    assert!(
        blob_gets.iter().all(|l| l.contains("auth=no")),
        "no credentials reached the CDN:\n{cdn_log}"
    );
    // And the registry itself was asked with a token.
    assert!(
        up.log_text().contains("mirror-user"),
        "the upstream saw the authenticated user"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_realm_on_another_domain_is_refused() {
    // The upstream at 127.0.0.1 names a realm at 127.0.0.2: credentials must not go there.
    let tokens = TokenServer::start("127.0.0.2", USER, PASSWORD).await;
    let up = DockerRegistry::start(UpstreamOptions {
        token: Some(&tokens),
        ..Default::default()
    });
    skopeo_push(&up.host, "library/app:1", Some(&creds()));
    let before = tokens.requests.load(std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let reg = mirror(
        dir.path(),
        &upstream_entry("docker.io", &format!("http://{}", up.host)),
        &[],
    );
    assert_error(
        get(&reg, "/v2/library/app/manifests/1?ns=docker.io").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_eq!(
        tokens.requests.load(std::sync::atomic::Ordering::SeqCst),
        before,
        "no token request was sent"
    );
    reg.log_where("the refused realm", |l| l.contains("refusing token realm"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_upstream_is_trusted_through_its_ca_file_or_when_insecure() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_tls(certs.path());
    let up = DockerRegistry::start(UpstreamOptions {
        tls: Some((cert.clone(), key)),
        ..Default::default()
    });
    run(std::process::Command::new(require("skopeo"))
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:app", test_image_layout().display()))
        .arg(format!("docker://{}/library/app:1", up.host)));

    let dir = tempfile::tempdir().unwrap();
    let entry = format!(
        "[[mirror.upstreams]]\nhost = \"docker.io\"\nendpoint = \"https://{}\"\nca_file = \"{}\"\n",
        up.host,
        cert.display()
    );
    let reg = mirror(dir.path(), &entry, &[]);
    assert_eq!(
        get(&reg, "/v2/library/app/manifests/1?ns=docker.io")
            .await
            .status(),
        StatusCode::OK
    );

    // Without the CA the certificate is not trusted: a miss, and the log says why.
    let dir = tempfile::tempdir().unwrap();
    let reg = mirror(
        dir.path(),
        "",
        &["--upstream", &format!("docker.io=https://{}", up.host)],
    );
    assert_error(
        get(&reg, "/v2/library/app/manifests/1?ns=docker.io").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    reg.log_where("the untrusted certificate", |l| {
        l.contains("certificate") || l.contains("UnknownIssuer")
    });

    // `insecure` accepts it without the CA.
    let dir = tempfile::tempdir().unwrap();
    let entry = format!(
        "[[mirror.upstreams]]\nhost = \"docker.io\"\nendpoint = \"https://{}\"\ninsecure = true\n",
        up.host
    );
    let reg = mirror(dir.path(), &entry, &[]);
    assert_eq!(
        get(&reg, "/v2/library/app/manifests/1?ns=docker.io")
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_and_unreachable_misses_are_prompt_404s_that_name_the_image() {
    let up = Registry::start();
    skopeo_push(&up.host, "library/app:1", None);
    let dir = tempfile::tempdir().unwrap();
    let offline = hub_mirror(dir.path(), &up.host, &["--offline"]);
    let started = Instant::now();
    assert_error(
        get(&offline, "/v2/library/app/manifests/1?ns=docker.io").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_error(
        get(
            &offline,
            format!("/v2/library/app/blobs/{}?ns=docker.io", sha256(b"x")),
        )
        .await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered at once"
    );
    offline.log_where("the missing image", |l| {
        l.contains("library/app") && l.contains("the mirror is offline")
    });
    assert!(
        !up.log_text().contains("sealer-registry/"),
        "an offline mirror never calls upstream"
    );

    // Nothing listens on the upstream's port: the miss still answers, within the dial timeout.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let unreachable = mirror(
        dir.path(),
        "",
        &["--upstream", &format!("docker.io=http://127.0.0.1:{port}")],
    );
    let started = Instant::now();
    assert_error(
        get(&unreachable, "/v2/library/app/manifests/1?ns=docker.io").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(3));
    unreachable.log_where("the unreachable upstream", |l| {
        l.contains("library/app") && l.contains("unreachable")
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_moved_tag_is_picked_up_after_the_ttl() {
    let up = Registry::start();
    let first = push_image(&up, "library/app", "1", 1, 100).await;
    let dir = tempfile::tempdir().unwrap();
    let reg = hub_mirror(dir.path(), &up.host, &["--tag-ttl", "2s"]);
    let path = "/v2/library/app/manifests/1?ns=docker.io";
    assert_eq!(
        header(&get(&reg, path).await, "docker-content-digest"),
        first.digest
    );
    let second = push_image(&up, "library/app", "1", 1, 100).await;
    assert_ne!(first.digest, second.digest);
    // Within the TTL the cached tag is served without asking upstream.
    assert_eq!(
        header(&get(&reg, path).await, "docker-content-digest"),
        first.digest
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        header(&get(&reg, path).await, "docker-content-digest"),
        second.digest
    );
    let heads = up
        .log_text()
        .lines()
        .filter(|l| l.contains("method=HEAD") && l.contains("/v2/library/app/manifests/1"))
        .count();
    assert_eq!(heads, 1, "revalidation is a HEAD, once the TTL passed");
}

#[tokio::test(flavor = "multi_thread")]
async fn tag_lists_and_referrers_work_for_mirrored_names() {
    let up = Registry::start();
    let img = push_image(&up, "library/app", "1", 1, 100).await;
    put_manifest(&up, "library/app", "2", OCI_MANIFEST, &img.manifest).await;
    let empty = b"{}".to_vec();
    push_blob(&up, "library/app", &empty).await;
    let sbom = image_manifest(
        OCI_MANIFEST,
        descriptor(OCI_EMPTY, &empty),
        vec![descriptor(OCI_EMPTY, &empty)],
        json!({"artifactType": "application/vnd.example.sbom", "subject": descriptor(OCI_MANIFEST, &img.manifest)}),
    );
    put_manifest(&up, "library/app", &sha256(&sbom), OCI_MANIFEST, &sbom).await;

    let dir = tempfile::tempdir().unwrap();
    let reg = hub_mirror(dir.path(), &up.host, &[]);
    let tags: serde_json::Value = get(&reg, "/v2/library/app/tags/list?ns=docker.io")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], json!(["1", "2"]));
    let page = get(&reg, "/v2/docker.io/library/app/tags/list?n=1").await;
    assert!(header(&page, "link").contains("last=1"));
    let refs: serde_json::Value = get(
        &reg,
        format!("/v2/library/app/referrers/{}?ns=docker.io", img.digest),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        refs["manifests"][0]["artifactType"],
        "application/vnd.example.sbom"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mirror_reports_hits_misses_and_upstream_traffic() {
    let up = Registry::start();
    let data = random_bytes(100_000);
    let digest = push_blob(&up, "library/m", &data).await;
    let dir = tempfile::tempdir().unwrap();
    let reg = hub_mirror(dir.path(), &up.host, &[]);
    let path = format!("/v2/library/m/blobs/{digest}?ns=docker.io");
    get(&reg, &path).await.bytes().await.unwrap();
    // Linked, not only stored: the link follows the commit by a moment, and a request
    // in between still counts as a miss.
    assert!(becomes_linked(&reg, "docker.io/library/m", &digest).await);
    get(&reg, &path).await.bytes().await.unwrap();
    let text = get(&reg, "/metrics").await.text().await.unwrap();
    let value = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    assert_eq!(
        value(r#"sealer_registry_mirror_cache_misses_total{upstream="docker.io",kind="blob"}"#),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(r#"sealer_registry_mirror_cache_hits_total{upstream="docker.io",kind="blob"}"#),
        1.0
    );
    assert!(
        value(
            r#"sealer_registry_mirror_upstream_requests_total{upstream="docker.io",status="200"}"#
        ) >= 1.0
    );
    assert!(
        value(r#"sealer_registry_mirror_upstream_received_bytes_total{upstream="docker.io"}"#)
            >= 100_000.0
    );
    // The fill is counted while it runs and no longer once the blob is stored.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = get(&reg, "/metrics").await.text().await.unwrap();
        let fills = text
            .lines()
            .find_map(|l| l.strip_prefix("sealer_registry_mirror_fills_in_progress "))
            .expect("fills_in_progress is reported")
            .to_string();
        if fills == "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a finished fill still counted: {fills}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
