//! Upload sessions in the bucket: any replica continues any upload, also after the
//! replica that started it died; abandoned multipart uploads are aborted.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sealer_e2e::*;

/// A `[storage]` table with the smallest part size, so a few MiB make several parts.
fn small_parts(dir: &std::path::Path) -> String {
    let cfg = dir.join("registry.toml");
    std::fs::write(&cfg, "[storage]\npart_size = 5242880\n").unwrap();
    cfg.display().to_string()
}

/// The path (and query) of an upload's `Location`, to send to any replica.
fn upload_path(resp: &reqwest::Response) -> String {
    let loc = header(resp, "location");
    match loc.split_once("://") {
        Some((_, rest)) => rest[rest.find('/').unwrap()..].to_string(),
        None => loc,
    }
}

async fn patch(reg: &Registry, path: &str, start: usize, chunk: &[u8]) -> reqwest::Response {
    client()
        .patch(reg.url(path))
        .header("content-type", "application/octet-stream")
        .header(
            "content-range",
            format!("{start}-{}", start + chunk.len() - 1),
        )
        .body(chunk.to_vec())
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_upload_continues_on_any_replica_even_after_its_first_replica_died() {
    let garage = Garage::start(1);
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_parts(dir.path());
    let args = ["--config", cfg.as_str()];
    let mut first = Registry::on_bucket(&garage.bucket, "up", &args);
    let second = Registry::on_bucket(&garage.bucket, "up", &args);

    let resp = post(&first, "/v2/team/big/blobs/uploads/").await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(
        header(&resp, "oci-chunk-min-length"),
        "5242880",
        "clients are told the part size"
    );
    let path = upload_path(&resp);
    let data = random_bytes(19 * 1024 * 1024 + 333);
    let sizes = [1 << 20, 7 << 20, 2 << 20, 6 << 20];
    let mut at = 0;
    for (i, size) in sizes.iter().enumerate() {
        let reg = if i % 2 == 0 { &first } else { &second };
        let resp = patch(reg, &path, at, &data[at..at + size]).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "chunk {i}");
        at += size;
        assert_eq!(header(&resp, "range"), format!("0-{}", at - 1));
    }
    // The replica that started the upload dies; a new one takes its place.
    first.kill9();
    let third = Registry::on_bucket(&garage.bucket, "up", &args);
    let status = get(&third, &path).await;
    assert_eq!(status.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&status, "range"), format!("0-{}", at - 1));
    // A chunk that does not continue the upload is refused with where it stands.
    let wrong = patch(&second, &path, at + 10, &data[at..at + 100]).await;
    assert_eq!(wrong.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&wrong, "range"), format!("0-{}", at - 1));

    let digest = sha256(&data);
    let sep = if path.contains('?') { '&' } else { '?' };
    let resp = client()
        .put(third.url(&format!("{path}{sep}digest={digest}")))
        .header("content-range", format!("{at}-{}", data.len() - 1))
        .body(data[at..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let back = get(&second, format!("/v2/team/big/blobs/{digest}")).await;
    assert_eq!(back.status(), StatusCode::OK);
    assert_eq!(sha256(&back.bytes().await.unwrap()), digest);
    let gone = get(&second, &path).await;
    assert_error(gone, 404, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_digest_leaves_nothing_and_the_session_usable_on_another_replica() {
    let garage = Garage::start(1);
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_parts(dir.path());
    let args = ["--config", cfg.as_str()];
    let a = Registry::on_bucket(&garage.bucket, "bad", &args);
    let b = Registry::on_bucket(&garage.bucket, "bad", &args);
    let data = random_bytes(11 * 1024 * 1024);
    let path = upload_path(&post(&a, "/v2/x/blobs/uploads/").await);
    assert_eq!(patch(&a, &path, 0, &data[..6 << 20]).await.status(), 202);
    let sep = if path.contains('?') { '&' } else { '?' };
    let wrong = sha256(b"something else");
    let resp = client()
        .put(b.url(&format!("{path}{sep}digest={wrong}")))
        .body(data[6 << 20..].to_vec())
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "DIGEST_INVALID").await;
    assert_eq!(head(&a, format!("/v2/x/blobs/{wrong}")).await.status(), 404);
    // The failed last chunk was rolled back: the session is where it was.
    let status = get(&b, &path).await;
    assert_eq!(header(&status, "range"), format!("0-{}", (6 << 20) - 1));
    let digest = sha256(&data);
    let resp = client()
        .put(a.url(&format!("{path}{sep}digest={digest}")))
        .body(data[6 << 20..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let back = get(&b, format!("/v2/x/blobs/{digest}")).await;
    assert_eq!(sha256(&back.bytes().await.unwrap()), digest);
}

/// The multipart uploads open in the bucket, as S3's ListMultipartUploads reports them
/// (curl signs the request).
fn open_multipart_uploads(bucket: &Bucket) -> usize {
    let out = run(Command::new(require("curl")).args([
        "-sS",
        "--aws-sigv4",
        &format!("aws:amz:{}:s3", bucket.region),
        "--user",
        &format!("{}:{}", bucket.key_id, bucket.secret),
        "-H",
        // SHA-256 of the empty body.
        "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        &format!("{}/{}?uploads=", bucket.endpoint, bucket.name),
    ]));
    assert!(out.contains("ListMultipartUploadsResult"), "{out}");
    out.matches("<Upload>").count()
}

#[tokio::test(flavor = "multi_thread")]
async fn abandoned_uploads_expire_with_their_multipart_uploads() {
    let garage = Garage::start(1);
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_parts(dir.path());
    let reg = Registry::on_bucket(
        &garage.bucket,
        "old",
        &["--config", cfg.as_str(), "--upload-expiry", "2s"],
    );
    let path = upload_path(&post(&reg, "/v2/x/blobs/uploads/").await);
    let data = random_bytes(6 << 20);
    assert_eq!(patch(&reg, &path, 0, &data).await.status(), 202);
    assert_eq!(open_multipart_uploads(&garage.bucket), 1);

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = get(&reg, &path).await;
        if resp.status() == StatusCode::NOT_FOUND {
            break;
        }
        assert!(Instant::now() < deadline, "the upload did not expire");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        open_multipart_uploads(&garage.bucket),
        0,
        "its multipart upload was aborted"
    );
    assert!(
        reg.stored("uploads").await.is_empty(),
        "nothing of it is left"
    );
}
