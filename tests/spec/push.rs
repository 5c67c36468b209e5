//! Push (spec "Pushing blobs"): end-4a/4b/4c, end-5, end-6, end-11, end-13, end-14.

use bytes::Bytes;
use reqwest::StatusCode;
use sealer_e2e::*;

async fn start_session(reg: &Registry, repo: &str, query: &str) -> String {
    let resp = client()
        .post(reg.url(&format!("/v2/{repo}/blobs/uploads/{query}")))
        .via(reg)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&resp, "range"), "0-0");
    let location = header(&resp, "location");
    assert!(
        location.starts_with(&format!("/v2/{repo}/blobs/uploads/")),
        "{location}"
    );
    reg.url(&location)
}

async fn blob_bytes(reg: &Registry, repo: &str, digest: &str) -> Bytes {
    let resp = get(reg, &format!("/v2/{repo}/blobs/{digest}")).await;
    assert_eq!(resp.status(), StatusCode::OK, "GET {repo}@{digest}");
    resp.bytes().await.unwrap()
}

#[tokio::test]
async fn monolithic_post_with_digest_creates_the_blob() {
    let reg = Registry::in_process().await;
    let data = random_bytes(70_000);
    let digest = sha256(&data);
    let resp = client()
        .post(reg.url(&format!("/v2/push/mono/blobs/uploads/?digest={digest}")))
        .body(data.clone())
        .via(&reg)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        header(&resp, "location"),
        format!("/v2/push/mono/blobs/{digest}")
    );
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_eq!(
        blob_bytes(&reg, "push/mono", &digest).await.as_ref(),
        data.as_slice()
    );
}

#[tokio::test]
async fn post_then_put_with_the_whole_blob() {
    let reg = Registry::in_process().await;
    let data = random_bytes(5000);
    let digest = sha256(&data);
    let loc = start_session(&reg, "push/postput", "").await;
    let resp = client()
        .put(format!("{loc}?digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .via(&reg)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        header(&resp, "location"),
        format!("/v2/push/postput/blobs/{digest}")
    );
    assert_eq!(
        blob_bytes(&reg, "push/postput", &digest).await.as_ref(),
        data.as_slice()
    );
}

#[tokio::test]
async fn chunked_upload_in_order_then_status_then_put() {
    let reg = Registry::in_process().await;
    let data = random_bytes(3 * 65536 + 17);
    let digest = sha256(&data);
    let loc = start_session(&reg, "push/chunked", "").await;
    let c = client();
    let mut offset = 0;
    for chunk in data.chunks(65536) {
        let end = offset + chunk.len() - 1;
        let resp = c
            .patch(&loc)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{offset}-{end}"))
            .body(chunk.to_vec())
            .via(&reg)
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        assert_eq!(header(&resp, "range"), format!("0-{end}"));
        assert!(header(&resp, "location").contains("/v2/push/chunked/blobs/uploads/"));
        offset = end + 1;
    }
    let resp = c.get(&loc).via(&reg).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&resp, "range"), format!("0-{}", data.len() - 1));
    let resp = c
        .put(format!("{loc}?digest={digest}"))
        .via(&reg)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        blob_bytes(&reg, "push/chunked", &digest).await.as_ref(),
        data.as_slice()
    );
}

#[tokio::test]
async fn out_of_order_chunk_is_416_and_the_upload_stays_usable() {
    let reg = Registry::in_process().await;
    let data = random_bytes(2000);
    let digest = sha256(&data);
    let loc = start_session(&reg, "push/order", "").await;
    let c = client();
    let resp = c
        .patch(&loc)
        .header("content-range", "0-999")
        .body(data[..1000].to_vec())
        .via(&reg)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    // A chunk that skips ahead, and one that repeats what was sent.
    for bad in ["1500-1999", "0-999"] {
        let (a, b): (usize, usize) = {
            let (a, b) = bad.split_once('-').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        };
        let resp = c
            .patch(&loc)
            .header("content-range", bad)
            .body(data[a..=b].to_vec())
            .via(&reg)
            .await
            .unwrap();
        assert_eq!(header(&resp, "range"), "0-999", "{bad}");
        assert!(header(&resp, "location").contains("/blobs/uploads/"));
        assert_error(resp, 416, "BLOB_UPLOAD_INVALID").await;
    }
    let resp = c
        .patch(&loc)
        .header("content-range", "1000-1999")
        .body(data[1000..].to_vec())
        .via(&reg)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let resp = c
        .put(format!("{loc}?digest={digest}"))
        .via(&reg)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        blob_bytes(&reg, "push/order", &digest).await.as_ref(),
        data.as_slice()
    );
}

#[tokio::test]
async fn a_chunk_shorter_than_its_range_is_rejected_and_rolled_back() {
    let reg = Registry::in_process().await;
    let loc = start_session(&reg, "push/short", "").await;
    let c = client();
    let resp = c
        .patch(&loc)
        .header("content-range", "0-99")
        .body(vec![1u8; 50])
        .via(&reg)
        .await
        .unwrap();
    assert_error(resp, 400, "SIZE_INVALID").await;
    let resp = c.get(&loc).via(&reg).await.unwrap();
    assert_eq!(
        header(&resp, "range"),
        "0-0",
        "nothing of the bad chunk was kept"
    );
}

#[tokio::test]
async fn streamed_patch_without_content_range() {
    let reg = Registry::in_process().await;
    let data = random_bytes(1_000_000);
    let digest = sha256(&data);
    let loc = start_session(&reg, "push/stream", "").await;
    // A body of unknown length (chunked transfer encoding), in several pieces.
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(100_000).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(pieces));
    let resp = client().patch(&loc).body(body).via(&reg).await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&resp, "range"), format!("0-{}", data.len() - 1));
    let resp = client()
        .put(format!("{loc}?digest={digest}"))
        .via(&reg)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        blob_bytes(&reg, "push/stream", &digest).await.as_ref(),
        data.as_slice()
    );
}

#[tokio::test]
async fn final_chunk_rides_in_the_put() {
    let reg = Registry::in_process().await;
    let data = random_bytes(3000);
    let digest = sha256(&data);
    let loc = start_session(&reg, "push/lastput", "").await;
    let c = client();
    c.patch(&loc)
        .header("content-range", "0-1999")
        .body(data[..2000].to_vec())
        .via(&reg)
        .await
        .unwrap();
    // Out of order in the PUT: 416, nothing committed.
    let resp = c
        .put(format!("{loc}?digest={digest}"))
        .header("content-range", "2500-2999")
        .body(data[2500..].to_vec())
        .via(&reg)
        .await
        .unwrap();
    assert_error(resp, 416, "BLOB_UPLOAD_INVALID").await;
    let resp = c
        .put(format!("{loc}?digest={digest}"))
        .header("content-range", "2000-2999")
        .body(data[2000..].to_vec())
        .via(&reg)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        blob_bytes(&reg, "push/lastput", &digest).await.as_ref(),
        data.as_slice()
    );
}

#[tokio::test]
async fn cancel_deletes_the_session() {
    let reg = Registry::in_process().await;
    let loc = start_session(&reg, "push/cancel", "").await;
    let c = client();
    c.patch(&loc).body(vec![7u8; 100]).via(&reg).await.unwrap();
    let resp = c.delete(&loc).via(&reg).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_error(
        c.get(&loc).via(&reg).await.unwrap(),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert_error(
        c.patch(&loc).body(vec![1u8]).via(&reg).await.unwrap(),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert_error(
        c.delete(&loc).via(&reg).await.unwrap(),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn sha512_digests_work_for_every_way_of_pushing() {
    let reg = Registry::in_process().await;
    let c = client();
    // Monolithic POST.
    let data = random_bytes(4096);
    let d512 = sha512(&data);
    let resp = c
        .post(reg.url(&format!("/v2/push/sha512/blobs/uploads/?digest={d512}")))
        .body(data.clone())
        .via(&reg)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(&resp, "docker-content-digest"), d512);
    assert_eq!(
        blob_bytes(&reg, "push/sha512", &d512).await.as_ref(),
        data.as_slice()
    );
    // A session that hashes sha512 from the start (spec main: ?digest-algorithm=).
    let data = random_bytes(5000);
    let loc = start_session(&reg, "push/sha512", "?digest-algorithm=sha512").await;
    c.patch(&loc).body(data.clone()).via(&reg).await.unwrap();
    let resp = c
        .put(format!("{loc}?digest={}", sha512(&data)))
        .via(&reg)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    // A default session closed with a sha512 digest.
    let data = random_bytes(6000);
    let loc = start_session(&reg, "push/sha512", "").await;
    c.patch(&loc).body(data.clone()).via(&reg).await.unwrap();
    let resp = c
        .put(format!("{loc}?digest={}", sha512(&data)))
        .via(&reg)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        blob_bytes(&reg, "push/sha512", &sha512(&data))
            .await
            .as_ref(),
        data.as_slice()
    );
    // An algorithm we do not implement.
    let resp = c
        .post(reg.url("/v2/push/sha512/blobs/uploads/?digest-algorithm=blake3"))
        .via(&reg)
        .await
        .unwrap();
    assert_error(resp, 400, "DIGEST_INVALID").await;
}

#[tokio::test]
async fn a_wrong_digest_is_digest_invalid_and_nothing_becomes_visible() {
    let reg = Registry::in_process().await;
    let data = random_bytes(1000);
    let wrong = sha256(b"something else");
    let c = client();
    let resp = c
        .post(reg.url(&format!("/v2/push/wrong/blobs/uploads/?digest={wrong}")))
        .body(data.clone())
        .via(&reg)
        .await
        .unwrap();
    assert_error(resp, 400, "DIGEST_INVALID").await;
    let loc = start_session(&reg, "push/wrong", "").await;
    c.patch(&loc).body(data.clone()).via(&reg).await.unwrap();
    assert_error(
        c.put(format!("{loc}?digest={wrong}"))
            .via(&reg)
            .await
            .unwrap(),
        400,
        "DIGEST_INVALID",
    )
    .await;
    for d in [&wrong, &sha256(&data)] {
        let resp = head(&reg, &format!("/v2/push/wrong/blobs/{d}")).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
    // The session survives a wrong digest: the right one still completes it.
    let resp = c
        .put(format!("{loc}?digest={}", sha256(&data)))
        .via(&reg)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn digests_are_validated_before_they_name_anything() {
    let reg = Registry::in_process().await;
    let c = client();
    for bad in [
        "../x",
        "/abs",
        "sha256:../../etc/passwd",
        "sha256:abc",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "sha256%3A..%2F..%2Fx",
    ] {
        let resp = c
            .post(reg.url(&format!("/v2/push/bad/blobs/uploads/?digest={bad}")))
            .body("x")
            .via(&reg)
            .await
            .unwrap();
        assert_error(resp, 400, "DIGEST_INVALID").await;
        let resp = get(&reg, &format!("/v2/push/bad/blobs/{bad}")).await;
        assert!(
            resp.status() == 400 || resp.status() == 404,
            "GET blob {bad}: {}",
            resp.status()
        );
        if resp.status() == 400 {
            assert_error(resp, 400, "DIGEST_INVALID").await;
        }
    }
    let loc = start_session(&reg, "push/bad", "").await;
    assert_error(
        c.put(format!("{loc}?digest=../../x"))
            .via(&reg)
            .await
            .unwrap(),
        400,
        "DIGEST_INVALID",
    )
    .await;
    assert_error(
        c.put(loc.clone()).via(&reg).await.unwrap(),
        400,
        "DIGEST_INVALID",
    )
    .await;
    // Nothing escaped the store.
    assert!(!reg.root.join("x").exists() && !reg.root.parent().unwrap().join("x").exists());
    assert!(
        reg.stored("")
            .await
            .iter()
            .all(|(name, _)| !name.ends_with("/x")),
        "no object is named by the request"
    );
}

#[tokio::test]
async fn a_session_belongs_to_its_repository() {
    let reg = Registry::in_process().await;
    let loc = start_session(&reg, "push/owner", "").await;
    let stolen = loc.replace("/push/owner/", "/push/thief/");
    let c = client();
    assert_error(
        c.patch(&stolen).body(vec![1u8]).via(&reg).await.unwrap(),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert_error(
        c.get(&stolen).via(&reg).await.unwrap(),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    for bogus in ["not-a-uuid", "00000000-0000-0000-0000-000000000000"] {
        let url = reg.url(&format!("/v2/push/owner/blobs/uploads/{bogus}"));
        assert_error(
            c.get(&url).via(&reg).await.unwrap(),
            404,
            "BLOB_UPLOAD_UNKNOWN",
        )
        .await;
    }
}

#[tokio::test]
async fn cross_repository_mount() {
    let reg = Registry::in_process().await;
    let data = random_bytes(2048);
    let digest = push_blob(&reg, "mount/source", &data).await;
    let c = client();
    let resp = c
        .post(reg.url(&format!(
            "/v2/mount/target/blobs/uploads/?mount={digest}&from=mount/source"
        )))
        .via(&reg)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        header(&resp, "location"),
        format!("/v2/mount/target/blobs/{digest}")
    );
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_eq!(
        blob_bytes(&reg, "mount/target", &digest).await.as_ref(),
        data.as_slice()
    );
}

#[tokio::test]
async fn mount_falls_back_to_an_upload_and_never_lends_another_repositorys_blob() {
    let reg = Registry::in_process().await;
    let digest = push_blob(&reg, "mount/private", &random_bytes(100)).await;
    let c = client();
    // `from` names a repository that does not link the blob, or `from` is missing: the
    // blob exists in the store but must not be mounted.
    for query in [
        format!("?mount={digest}&from=mount/empty"),
        format!("?mount={digest}"),
    ] {
        let resp = c
            .post(reg.url(&format!("/v2/mount/other/blobs/uploads/{query}")))
            .via(&reg)
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "{query}");
        assert!(header(&resp, "location").starts_with("/v2/mount/other/blobs/uploads/"));
    }
    assert_error(
        get(&reg, &format!("/v2/mount/other/blobs/{digest}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
}
