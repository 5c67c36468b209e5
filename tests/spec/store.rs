//! The content store (docs/design.md, contract 1): shared blobs, restart-safe uploads, expiry,
//! concurrency and graceful shutdown.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use sealer_e2e::*;

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn a_blob_pushed_to_many_repositories_is_stored_once() {
    let reg = Registry::in_process().await;
    let data = random_bytes(100_000);
    for repo in ["s/one", "s/two", "s/three"] {
        push_blob(&reg, repo, &data).await;
    }
    let blobs = reg.stored("blobs").await;
    assert_eq!(
        blobs.len(),
        1,
        "{:?}",
        blobs.iter().map(|b| &b.0).collect::<Vec<_>>()
    );
    assert_eq!(blobs[0].1, data);
}

#[tokio::test]
async fn an_upload_survives_a_restart() {
    let mut reg = Registry::start();
    let data = random_bytes(200_000);
    let c = client();
    let resp = c
        .post(reg.url("/v2/s/resume/blobs/uploads/"))
        .via(&reg)
        .await
        .unwrap();
    let loc = header(&resp, "location");
    let resp = c
        .patch(reg.url(&loc))
        .header("content-range", "0-99999")
        .body(data[..100_000].to_vec())
        .via(&reg)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(reg.stop(), Some(0), "clean exit on SIGTERM");
    reg.restart();
    let c = client(); // the old connections died with the old process
    let resp = get(&reg, &loc).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&resp, "range"), "0-99999");
    c.patch(reg.url(&loc))
        .header("content-range", "100000-199999")
        .body(data[100_000..].to_vec())
        .via(&reg)
        .await
        .unwrap();
    let resp = c
        .put(reg.url(&format!("{loc}?digest={}", sha256(&data))))
        .via(&reg)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let got = get(&reg, &format!("/v2/s/resume/blobs/{}", sha256(&data)))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), data.as_slice());
}

#[tokio::test]
async fn abandoned_uploads_expire() {
    let reg = Registry::start_with(&["--upload-expiry", "2s"]);
    let c = client();
    let resp = c
        .post(reg.url("/v2/s/expire/blobs/uploads/"))
        .via(&reg)
        .await
        .unwrap();
    let loc = reg.url(&header(&resp, "location"));
    c.patch(&loc).body(vec![1u8; 10]).via(&reg).await.unwrap();
    assert_eq!(
        c.get(&loc).via(&reg).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let resp = c.get(&loc).via(&reg).await.unwrap();
        if resp.status() == StatusCode::NOT_FOUND {
            assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "upload still there after 20 s with a 2 s expiry"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        files_under(&reg.root.join("uploads")).is_empty(),
        "its data is gone too"
    );
}

#[tokio::test]
async fn concurrent_pushes_of_one_blob_and_one_manifest_are_safe() {
    let reg = Registry::start();
    let data = random_bytes(3_000_000);
    let digest = sha256(&data);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let url = reg.url(&format!(
            "/v2/s/race{}/blobs/uploads/?digest={digest}",
            i % 4
        ));
        let data = data.clone();
        tasks.push(tokio::spawn(async move {
            client().post(url).body(data).send().await.unwrap().status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::CREATED);
    }
    for i in 0..4 {
        let got = get(&reg, &format!("/v2/s/race{i}/blobs/{digest}"))
            .await
            .bytes()
            .await
            .unwrap();
        assert_eq!(sha256(&got), digest);
    }
    let img = push_image(&reg, "s/race0", "v0", 1, 10).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let url = reg.url(&format!("/v2/s/race0/manifests/t{}", i % 3));
        let body = img.manifest.clone();
        tasks.push(tokio::spawn(async move {
            client()
                .put(url)
                .header("content-type", OCI_MANIFEST)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::CREATED);
    }
    for t in ["t0", "t1", "t2"] {
        let got = get(&reg, &format!("/v2/s/race0/manifests/{t}"))
            .await
            .bytes()
            .await
            .unwrap();
        assert_eq!(got.as_ref(), img.manifest.as_slice());
    }
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_upload_finish() {
    let mut reg = Registry::start();
    let data = random_bytes(4_000_000);
    let digest = sha256(&data);
    let url = reg.url(&format!("/v2/s/shutdown/blobs/uploads/?digest={digest}"));
    // A slow body: 40 pieces, 50 ms apart.
    let pieces: Vec<Vec<u8>> = data.chunks(100_000).map(<[u8]>::to_vec).collect();
    let body = futures::stream::unfold(pieces.into_iter(), |mut it| async move {
        let next = it.next()?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        Some((Ok::<_, std::io::Error>(next), it))
    });
    let upload = tokio::spawn(async move {
        client()
            .post(url)
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await
            .unwrap()
            .status()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopper = tokio::task::spawn_blocking(move || {
        let code = reg.stop();
        (reg, code)
    });
    assert_eq!(
        upload.await.unwrap(),
        StatusCode::CREATED,
        "the in-flight upload completed"
    );
    let (mut reg, code) = stopper.await.unwrap();
    assert_eq!(code, Some(0));
    reg.restart();
    let got = get(&reg, &format!("/v2/s/shutdown/blobs/{digest}"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), data.as_slice());
}

/// A tmpfs of a few MiB, mounted for one test and unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let out = output(
            std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path()),
        );
        assert!(
            out.status.success(),
            "mounting a tmpfs (the tests run as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_refuses_the_upload_and_loses_nothing() {
    let disk = SmallDisk::mount("6m");
    let logs = tempfile::tempdir().unwrap();
    let reg = Registry::spawn(
        &disk.dir.path().join("store"),
        logs.path().join("log"),
        &[],
        &[],
    );
    let kept = random_bytes(500_000);
    let kept_digest = push_blob(&reg, "full/a", &kept).await;

    // 8 MiB in 1 MiB chunks cannot fit: some chunk is refused with 507.
    let c = client();
    let big = random_bytes(8 * 1024 * 1024);
    let resp = c
        .post(reg.url("/v2/full/b/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = reg.url(&header(&resp, "location"));
    let mut refused = None;
    for (i, chunk) in big.chunks(1024 * 1024).enumerate() {
        let start = i * 1024 * 1024;
        let resp = c
            .patch(&loc)
            .header(
                "content-range",
                format!("{start}-{}", start + chunk.len() - 1),
            )
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        if resp.status() != StatusCode::ACCEPTED {
            refused = Some((i, resp.status()));
            break;
        }
    }
    let (at, status) = refused.expect("the disk filled up");
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE);
    // The refused chunk was rolled back: the session still ends where the last good chunk did.
    let resp = c.get(&loc).send().await.unwrap();
    assert_eq!(
        header(&resp, "range"),
        format!("0-{}", at * 1024 * 1024 - 1)
    );
    // Cancelling frees the space; what was stored before is intact; new pushes work.
    assert_eq!(
        c.delete(&loc).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let got = get(&reg, format!("/v2/full/a/blobs/{kept_digest}"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), kept.as_slice());
    push_blob(&reg, "full/c", &random_bytes(2 * 1024 * 1024)).await;
    assert_eq!(
        head(&reg, format!("/v2/full/b/blobs/{}", sha256(&big)))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}
