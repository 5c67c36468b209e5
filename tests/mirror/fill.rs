//! Cache fill: concurrent misses share one upstream fetch, an interrupted fetch leaves
//! nothing visible, and cached content outlives its upstream.

use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use sealer_e2e::*;

use super::*;

/// POST then PUT (distribution 2.8 has no single-POST upload); returns the digest.
async fn push_to(host: &str, repo: &str, data: Vec<u8>) -> String {
    let digest = sha256(&data);
    let c = client();
    let resp = c
        .post(format!("http://{host}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let loc = header(&resp, "location");
    let loc = if loc.starts_with("http") {
        loc
    } else {
        format!("http://{host}{loc}")
    };
    let sep = if loc.contains('?') { '&' } else { '?' };
    let resp = c
        .put(format!("{loc}{sep}digest={digest}"))
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    digest
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_cold_pulls_make_one_upstream_fetch() {
    let up = Registry::start();
    let data = random_bytes(48 * 1024 * 1024);
    let digest = push_blob(&up, "library/big", &data).await;
    let dir = tempfile::tempdir().unwrap();
    let reg = hub_mirror(dir.path(), &up.host, &[]);

    let url = reg.url(&format!("/v2/library/big/blobs/{digest}?ns=docker.io"));
    let pulls: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let resp = client().get(url).send().await.unwrap();
                assert_eq!(resp.status(), StatusCode::OK);
                assert_eq!(
                    header(&resp, "content-length"),
                    (48 * 1024 * 1024).to_string()
                );
                sha256(&resp.bytes().await.unwrap())
            })
        })
        .collect();
    for p in pulls {
        assert_eq!(p.await.unwrap(), digest, "every client got the whole blob");
    }
    let fetches = up
        .log_text()
        .lines()
        .filter(|l| l.contains("method=GET") && l.contains(&format!("/blobs/{digest}")))
        .count();
    assert_eq!(fetches, 1, "one upstream fetch for four concurrent misses");
    assert!(
        becomes_stored(&reg, &digest).await,
        "the blob is committed once verified"
    );
    // Now local: served without asking upstream.
    let resp = client().get(&url).send().await.unwrap();
    assert_eq!(sha256(&resp.bytes().await.unwrap()), digest);
    let fetches = up
        .log_text()
        .lines()
        .filter(|l| l.contains("method=GET") && l.contains(&format!("/blobs/{digest}")))
        .count();
    assert_eq!(fetches, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_killed_mid_blob_leaves_nothing_visible() {
    let mut up = DockerRegistry::start(UpstreamOptions::default());
    let (root, port) = (
        up.root.clone(),
        up.host.rsplit(':').next().unwrap().parse::<u16>().unwrap(),
    );
    let data = random_bytes(512 * 1024 * 1024);
    let digest = push_to(&up.host, "library/huge", data).await;
    let dir = tempfile::tempdir().unwrap();
    let reg = hub_mirror(dir.path(), &up.host, &[]);

    let url = reg.url(&format!("/v2/docker.io/library/huge/blobs/{digest}"));
    let resp = client().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.bytes_stream();
    let mut received = 0usize;
    let mut killed = false;
    let mut failed = false;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => received += c.len(),
            Err(_) => {
                failed = true;
                break;
            }
        }
        if !killed && received >= 8 * 1024 * 1024 {
            up.kill9();
            killed = true;
        }
    }
    assert!(
        killed && failed,
        "the download broke off ({received} bytes received) instead of completing"
    );
    assert!(received < 512 * 1024 * 1024);
    assert!(!stored_blob(&reg, &digest), "no partial blob is visible");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(reg.root.join("uploads")).unwrap().count() > 0 {
        assert!(
            Instant::now() < deadline,
            "the failed fill's upload was removed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        head(&reg, format!("/v2/docker.io/library/huge/blobs/{digest}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    // The upstream comes back: the next request fetches the blob again, whole.
    let _up = DockerRegistry::start(UpstreamOptions {
        root: Some(root),
        port: Some(port),
        ..Default::default()
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = client().get(&url).send().await.unwrap();
        if resp.status() == StatusCode::OK {
            assert_eq!(sha256(&resp.bytes().await.unwrap()), digest);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the blob is fetched again once the upstream is back"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(becomes_stored(&reg, &digest).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn cached_images_are_served_when_the_upstream_is_gone() {
    let mut up = Registry::start();
    skopeo_push(&up.host, "library/app:1", None);
    let dir = tempfile::tempdir().unwrap();
    // A TTL of zero: every pull asks upstream about the tag, if it can.
    let reg = hub_mirror(dir.path(), &up.host, &["--tag-ttl", "0s"]);
    let pull = |dest: &std::path::Path| {
        output(
            Command::new(require("skopeo"))
                .args(["copy", "--quiet", "--src-tls-verify=false"])
                .arg(format!("docker://{}/docker.io/library/app:1", reg.host))
                .arg(format!("dir:{}", dest.display())),
        )
    };
    let out = tempfile::tempdir().unwrap();
    assert!(pull(&out.path().join("first")).status.success());
    up.kill9();
    let again = pull(&out.path().join("second"));
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    reg.log_where("the failed revalidation", |l| {
        l.contains("cannot revalidate a cached tag")
    });
    assert_eq!(
        std::fs::read(out.path().join("first/manifest.json")).unwrap(),
        std::fs::read(out.path().join("second/manifest.json")).unwrap()
    );
}
