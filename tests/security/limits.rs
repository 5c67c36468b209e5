//! Limits: slow clients are cut off, uploads are capped, a read-only registry refuses
//! writes; nothing of the refused requests is kept.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sealer_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `head` a few bytes at a time, one step every 300 ms for up to `give_up`;
/// returns how long the server kept the connection open (None: still open).
async fn trickle(host: &str, head: &[u8], give_up: Duration) -> Option<Duration> {
    let mut tcp = TcpStream::connect(host).await.unwrap();
    let start = Instant::now();
    let mut sent = 0;
    let mut buf = [0u8; 512];
    while start.elapsed() < give_up {
        let step = &head[sent.min(head.len())..(sent + 3).min(head.len())];
        sent += 3;
        let piece: &[u8] = if step.is_empty() {
            b"X-Slow: yes\r\n"
        } else {
            step
        };
        if tcp.write_all(piece).await.is_err() {
            return Some(start.elapsed());
        }
        // A closed connection reads as EOF (or an error) at once.
        if let Ok(read) = tokio::time::timeout(Duration::from_millis(300), tcp.read(&mut buf)).await
        {
            match read {
                Ok(0) | Err(_) => return Some(start.elapsed()),
                Ok(_) => {} // a response (408) first; EOF follows
            }
        }
    }
    None
}

#[tokio::test]
async fn a_slow_loris_client_is_cut_off_and_others_are_served() {
    let reg = Registry::start_with(&["--header-timeout", "2s"]);
    let closed = trickle(
        &reg.host,
        b"GET /v2/ HTTP/1.1\r\nHost: registry\r\nUser-Agent: slow-loris\r\n",
        Duration::from_secs(20),
    )
    .await;
    let after = closed.expect("the connection is still open after 20 s of trickled headers");
    assert!(after >= Duration::from_secs(1), "closed after {after:?}");
    // Everyone else is served meanwhile and after.
    let resp = get(&reg, "/v2/").await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_upload_that_stops_sending_fails_and_keeps_the_session_as_it_was() {
    let reg = Registry::start_with(&["--body-timeout", "2s"]);
    let resp = client()
        .post(reg.url("/v2/slow/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let location = header(&resp, "location");

    // A chunked PATCH that sends 4 KiB, then nothing.
    let mut tcp = TcpStream::connect(&reg.host).await.unwrap();
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: registry\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(format!("{:x}\r\n", 4096).as_bytes())
        .await
        .unwrap();
    tcp.write_all(&vec![b'a'; 4096]).await.unwrap();
    tcp.write_all(b"\r\n").await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the stalled upload was not ended within 20 s");
    // The 400 may be lost to a reset: the server closes with the client's last bytes
    // unread. Either way the connection is over.
    let text = String::from_utf8_lossy(&answer);
    if !text.is_empty() {
        assert!(text.contains("the client sent nothing for 2s"), "{text}");
    }
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 400"),
        "{text:?}"
    );

    // The half-sent chunk was rolled back: the session is where it was, and usable.
    let resp = client().get(reg.url(&location)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&resp, "range"), "0-0");
    let log = reg.log_where("the PATCH refused", |l| {
        l.contains("method=PATCH") && l.contains("status=400")
    });
    assert!(log.contains("bytes_in=4096"), "{log}");
}

#[tokio::test]
async fn uploads_beyond_the_maximum_size_are_refused_and_rolled_back() {
    let reg = Registry::start_with(&["--max-upload-size", "1000"]);
    push_blob(&reg, "big/app", &random_bytes(1000)).await;
    let data = random_bytes(1001);
    let resp = client()
        .post(reg.url(&format!(
            "/v2/big/app/blobs/uploads/?digest={}",
            sha256(&data)
        )))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    let body = assert_error(resp, 413, "SIZE_INVALID").await;
    assert!(body.to_string().contains("1000 bytes"), "{body}");
    let resp = head(&reg, format!("/v2/big/app/blobs/{}", sha256(&data))).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Chunked: the chunk that crosses the limit is refused, the upload keeps the rest.
    let resp = client()
        .post(reg.url("/v2/big/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let location = header(&resp, "location");
    let resp = client()
        .patch(reg.url(&location))
        .header("content-range", "0-599")
        .body(data[..600].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let location = header(&resp, "location");
    let resp = client()
        .patch(reg.url(&location))
        .header("content-range", "600-1000")
        .body(data[600..].to_vec())
        .send()
        .await
        .unwrap();
    assert_error(resp, 413, "SIZE_INVALID").await;
    let resp = client().get(reg.url(&location)).send().await.unwrap();
    assert_eq!(header(&resp, "range"), "0-599");
}

#[tokio::test]
async fn a_read_only_registry_serves_pulls_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let mut reg = Registry::spawn(&root, dir.path().join("a.log"), &[], &[]);
    let image = push_image(&reg, "ro/app", "1", 1, 256).await;
    reg.stop();
    let reg = Registry::spawn(&root, dir.path().join("b.log"), &["--read-only"], &[]);

    let resp = get(&reg, "/v2/ro/app/manifests/1").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = client()
        .post(reg.url("/v2/ro/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let body = assert_error(resp, 405, "UNSUPPORTED").await;
    assert!(body.to_string().contains("read-only"), "{body}");
    let resp = delete(&reg, format!("/v2/ro/app/manifests/{}", image.digest)).await;
    assert_error(resp, 405, "UNSUPPORTED").await;
    let resp = put_manifest(&reg, "ro/app", "2", OCI_MANIFEST, &image.manifest).await;
    assert_error(resp, 405, "UNSUPPORTED").await;
    // The content is untouched.
    let resp = get(&reg, format!("/v2/ro/app/manifests/{}", image.digest)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = get(&reg, "/v2/ro/app/tags/list").await;
    let tags: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["1"]));
}

#[tokio::test]
async fn a_repository_over_its_quota_is_denied_and_others_go_on() {
    let reg = Registry::start_with(&["--repo-quota", "10000"]);
    let first = random_bytes(6000);
    let first_digest = push_blob(&reg, "team/a", &first).await;
    let big = random_bytes(5000);
    let big_digest = sha256(&big);
    let resp = client()
        .post(reg.url(&format!("/v2/team/a/blobs/uploads/?digest={big_digest}")))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    let body = assert_error(resp, 403, "DENIED").await;
    assert!(body.to_string().contains("over its quota"), "{body}");
    let resp = head(&reg, format!("/v2/team/a/blobs/{big_digest}")).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Each repository has its own quota; a mount counts like a push.
    push_blob(&reg, "team/b", &big).await;
    let resp = client()
        .post(reg.url(&format!(
            "/v2/team/a/blobs/uploads/?mount={big_digest}&from=team/b"
        )))
        .send()
        .await
        .unwrap();
    assert_error(resp, 403, "DENIED").await;
    // Content the repository already holds costs nothing; deleting makes room.
    push_blob(&reg, "team/a", &first).await;
    let resp = delete(&reg, format!("/v2/team/a/blobs/{first_digest}")).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    push_blob(&reg, "team/a", &big).await;
}

/// Bytes of blobs and manifests a repository holds in the store.
async fn repo_bytes(reg: &Registry, repo: &str) -> u64 {
    let blobs = reg.stored("blobs").await;
    let size_of = |hex: &str| {
        let (_, data) = blobs.iter().find(|(name, _)| name.ends_with(hex)).unwrap();
        data.len() as u64
    };
    let mut total = 0;
    for sub in ["_layers/sha256", "_manifests/revisions/sha256"] {
        for (name, _) in reg.stored(&format!("repositories/{repo}/{sub}")).await {
            total += size_of(name.rsplit('/').next().unwrap());
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pushes_cannot_take_a_repository_past_its_quota() {
    let reg = Registry::start_with(&["--repo-quota", "10000000"]);
    // Eight 2 MB blobs, their uploads opened and filled, then finished all at once.
    let blobs: Vec<Vec<u8>> = (0..8).map(|_| random_bytes(2_000_000)).collect();
    let finishes: Vec<_> = blobs
        .into_iter()
        .map(|data| {
            let url = reg.url("/v2/team/q/blobs/uploads/");
            tokio::spawn(async move {
                let c = client();
                let resp = c.post(url).send().await.unwrap();
                if resp.status() != StatusCode::ACCEPTED {
                    return resp.status();
                }
                let loc = header(&resp, "location");
                let base = resp.url().origin().ascii_serialization();
                c.put(format!("{base}{loc}?digest={}", sha256(&data)))
                    .body(data)
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    let mut created = 0;
    for f in finishes {
        match f.await.unwrap() {
            StatusCode::CREATED => created += 1,
            s => assert!(matches!(s.as_u16(), 403), "{s}"),
        }
    }
    assert!(
        (1..=5).contains(&created),
        "{created} pushes of 2 MB fit a 10 MB quota"
    );
    assert!(repo_bytes(&reg, "team/q").await <= 10_000_000);
}

#[tokio::test]
async fn manifests_and_open_uploads_count_against_the_quota() {
    let reg = Registry::start_with(&["--repo-quota", "20000"]);
    let img = push_image(&reg, "team/m", "1", 1, 15000).await;
    let used = repo_bytes(&reg, "team/m").await;
    assert!(
        used > 15000 + img.config.len() as u64,
        "the manifest is counted: {used}"
    );
    // Manifests alone can fill the quota: 5 KB of annotations each.
    let mut refused = None;
    for i in 0..5 {
        let m = image_manifest(
            OCI_MANIFEST,
            descriptor(OCI_CONFIG, &img.config),
            vec![],
            serde_json::json!({"annotations": {"pad": "x".repeat(1500), "i": i.to_string()}}),
        );
        let resp = put_manifest(&reg, "team/m", &format!("m{i}"), OCI_MANIFEST, &m).await;
        if resp.status() != StatusCode::CREATED {
            refused = Some(assert_error(resp, 403, "DENIED").await);
            break;
        }
    }
    assert!(refused.is_some(), "manifests were not counted");
    assert!(repo_bytes(&reg, "team/m").await <= 20000);

    // Bytes parked in an open upload session count too.
    let other = Registry::start_with(&["--repo-quota", "100000"]);
    let resp = post(&other, "/v2/team/u/blobs/uploads/").await;
    let parked = format!("{}{}", other.url(""), header(&resp, "location"));
    let resp = client()
        .patch(&parked)
        .header("content-type", "application/octet-stream")
        .body(random_bytes(80000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let data = random_bytes(40000);
    let resp = client()
        .post(other.url(&format!(
            "/v2/team/u/blobs/uploads/?digest={}",
            sha256(&data)
        )))
        .body(data)
        .send()
        .await
        .unwrap();
    let body = assert_error(resp, 403, "DENIED").await;
    assert!(body.to_string().contains("quota"), "{body}");
    // Cancelling the parked session frees its room.
    let resp = client().delete(&parked).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    push_blob(&other, "team/u", &random_bytes(40000)).await;
}

#[tokio::test]
async fn open_upload_sessions_are_capped_per_repository() {
    let reg = Registry::start_with(&["--max-sessions-per-repo", "20"]);
    let mut locations = Vec::new();
    for _ in 0..20 {
        let resp = post(&reg, "/v2/team/s/blobs/uploads/").await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        locations.push(header(&resp, "location"));
    }
    let resp = post(&reg, "/v2/team/s/blobs/uploads/").await;
    let body = assert_error(resp, 429, "TOOMANYREQUESTS").await;
    assert!(body.to_string().contains("upload sessions open"), "{body}");
    // Other repositories are not affected; finishing one makes room.
    push_blob(&reg, "team/other", b"x").await;
    let resp = delete(&reg, &locations[0]).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = post(&reg, "/v2/team/s/blobs/uploads/").await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
}
