//! Pull (spec "Pulling manifests", "Pulling blobs"): end-1, end-2, end-3.

use reqwest::StatusCode;
use sealer_e2e::*;
use serde_json::json;

#[tokio::test]
async fn base_endpoint_answers_200_with_the_api_version() {
    let reg = Registry::in_process().await;
    let resp = get(&reg, "/v2/").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(&resp, "docker-distribution-api-version"),
        "registry/2.0"
    );
    assert_eq!(resp.text().await.unwrap(), "{}");
}

#[tokio::test]
async fn manifest_by_tag_and_by_digest_returns_the_exact_bytes_and_type() {
    let reg = Registry::in_process().await;
    let img = push_image(&reg, "pull/app", "v1", 2, 1000).await;
    for reference in ["v1".to_string(), img.digest.clone()] {
        let resp = client()
            .get(reg.url(&format!("/v2/pull/app/manifests/{reference}")))
            .header("accept", OCI_MANIFEST)
            .via(&reg)
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(header(&resp, "content-type"), OCI_MANIFEST);
        assert_eq!(header(&resp, "docker-content-digest"), img.digest);
        assert_eq!(
            resp.bytes().await.unwrap().as_ref(),
            img.manifest.as_slice()
        );
    }
}

#[tokio::test]
async fn manifest_head_carries_digest_and_length_without_a_body() {
    let reg = Registry::in_process().await;
    let img = push_image(&reg, "pull/head", "v1", 1, 10).await;
    let resp = head(&reg, "/v2/pull/head/manifests/v1").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "docker-content-digest"), img.digest);
    assert_eq!(
        header(&resp, "content-length"),
        img.manifest.len().to_string()
    );
    assert_eq!(header(&resp, "content-type"), OCI_MANIFEST);
    assert!(resp.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn unknown_manifests_are_manifest_unknown() {
    let reg = Registry::in_process().await;
    push_image(&reg, "pull/unknown", "v1", 1, 10).await;
    assert_error(
        get(&reg, "/v2/pull/unknown/manifests/v2").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    let missing = sha256(b"nothing");
    assert_error(
        get(&reg, &format!("/v2/pull/unknown/manifests/{missing}")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    let resp = head(&reg, "/v2/pull/unknown/manifests/v2").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_error(
        get(&reg, "/v2/no/such/repo/manifests/v1").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn blobs_are_served_with_digest_length_and_type() {
    let reg = Registry::in_process().await;
    let data = random_bytes(300_000);
    let digest = push_blob(&reg, "pull/blob", &data).await;
    let resp = get(&reg, &format!("/v2/pull/blob/blobs/{digest}")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_eq!(header(&resp, "content-length"), data.len().to_string());
    assert_eq!(resp.bytes().await.unwrap().as_ref(), data.as_slice());

    let resp = head(&reg, &format!("/v2/pull/blob/blobs/{digest}")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-length"), data.len().to_string());
    assert_eq!(header(&resp, "docker-content-digest"), digest);

    let other = sha256(b"absent");
    assert_error(
        get(&reg, &format!("/v2/pull/blob/blobs/{other}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    let resp = head(&reg, &format!("/v2/pull/blob/blobs/{other}")).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn blob_ranges_give_206_suffixes_and_416() {
    let reg = Registry::in_process().await;
    let data = random_bytes(1000);
    let digest = push_blob(&reg, "pull/range", &data).await;
    let url = reg.url(&format!("/v2/pull/range/blobs/{digest}"));
    let c = client();
    let cases: [(&str, usize, usize); 4] = [
        ("bytes=0-99", 0, 100),
        ("bytes=900-", 900, 1000),
        ("bytes=-10", 990, 1000),
        ("bytes=500-5000", 500, 1000),
    ];
    for (range, start, end) in cases {
        let resp = c.get(&url).header("range", range).via(&reg).await.unwrap();
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            header(&resp, "content-range"),
            format!("bytes {start}-{}/1000", end - 1),
            "{range}"
        );
        assert_eq!(header(&resp, "content-length"), (end - start).to_string());
        assert_eq!(
            resp.bytes().await.unwrap().as_ref(),
            &data[start..end],
            "{range}"
        );
    }
    let resp = c
        .get(&url)
        .header("range", "bytes=1000-")
        .via(&reg)
        .await
        .unwrap();
    assert_eq!(header(&resp, "content-range"), "bytes */1000");
    assert_error(resp, 416, "SIZE_INVALID").await;
}

#[tokio::test]
async fn repeated_accept_headers_are_merged() {
    // An index whose amd64 child exists: a client accepting only image manifests gets
    // the child; a client whose second Accept line allows indexes gets the index.
    let reg = Registry::in_process().await;
    let child = push_image(&reg, "pull/accept", "child", 1, 10).await;
    let index = index_manifest(
        OCI_INDEX,
        vec![(descriptor(OCI_MANIFEST, &child.manifest), "amd64")],
        json!({}),
    );
    let resp = put_manifest(&reg, "pull/accept", "multi", OCI_INDEX, &index).await;
    assert_eq!(resp.status(), StatusCode::CREATED);

    let url = reg.url("/v2/pull/accept/manifests/multi");
    let resp = client()
        .get(&url)
        .header("accept", OCI_MANIFEST)
        .header("accept", OCI_INDEX)
        .via(&reg)
        .await
        .unwrap();
    assert_eq!(header(&resp, "content-type"), OCI_INDEX);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), index.as_slice());

    let resp = client()
        .get(&url)
        .header("accept", OCI_MANIFEST)
        .via(&reg)
        .await
        .unwrap();
    assert_eq!(header(&resp, "content-type"), OCI_MANIFEST);
    assert_eq!(header(&resp, "docker-content-digest"), child.digest);
}
