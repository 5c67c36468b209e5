//! Pushing manifests (spec "Pushing Manifests"): end-7, end-7b.

use reqwest::StatusCode;
use sealer_e2e::*;
use serde_json::json;

async fn get_manifest(reg: &Registry, repo: &str, reference: &str) -> reqwest::Response {
    client()
        .get(reg.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("accept", "*/*")
        .via(reg)
        .await
        .unwrap()
}

#[tokio::test]
async fn all_four_manifest_types_round_trip_byte_exact() {
    let reg = Registry::in_process().await;
    let oci = push_image(&reg, "m/types", "oci", 1, 100).await;
    let docker = push_image_as(
        &reg,
        "m/types",
        "docker",
        1,
        100,
        DOCKER_MANIFEST,
        json!({}),
    )
    .await;
    let oci_index = index_manifest(
        OCI_INDEX,
        vec![(descriptor(OCI_MANIFEST, &oci.manifest), "amd64")],
        json!({}),
    );
    let docker_list = index_manifest(
        DOCKER_LIST,
        vec![(descriptor(DOCKER_MANIFEST, &docker.manifest), "amd64")],
        json!({}),
    );
    assert_eq!(
        put_manifest(&reg, "m/types", "oci-index", OCI_INDEX, &oci_index)
            .await
            .status(),
        201
    );
    assert_eq!(
        put_manifest(&reg, "m/types", "docker-list", DOCKER_LIST, &docker_list)
            .await
            .status(),
        201
    );
    for (tag, mt, body) in [
        ("oci", OCI_MANIFEST, &oci.manifest),
        ("docker", DOCKER_MANIFEST, &docker.manifest),
        ("oci-index", OCI_INDEX, &oci_index),
        ("docker-list", DOCKER_LIST, &docker_list),
    ] {
        let resp = get_manifest(&reg, "m/types", tag).await;
        assert_eq!(resp.status(), StatusCode::OK, "{tag}");
        assert_eq!(header(&resp, "content-type"), mt, "{tag}");
        assert_eq!(
            header(&resp, "docker-content-digest"),
            sha256(body),
            "{tag}"
        );
        assert_eq!(
            resp.bytes().await.unwrap().as_ref(),
            body.as_slice(),
            "{tag}"
        );
    }
}

#[tokio::test]
async fn push_answers_with_location_and_digest() {
    let reg = Registry::in_process().await;
    let img = push_image(&reg, "m/loc", "v1", 1, 10).await;
    let resp = put_manifest(&reg, "m/loc", "v2", OCI_MANIFEST, &img.manifest).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        header(&resp, "location"),
        format!("/v2/m/loc/manifests/{}", img.digest)
    );
    assert_eq!(header(&resp, "docker-content-digest"), img.digest);
    assert!(header_opt(&resp, "oci-subject").is_none());
}

#[tokio::test]
async fn referenced_blobs_must_be_in_the_repository() {
    let reg = Registry::in_process().await;
    let config = b"{}".to_vec();
    let layer = random_bytes(100);
    push_blob(&reg, "m/blobs", &config).await;
    // The layer is in another repository only: still unknown to this one.
    push_blob(&reg, "m/elsewhere", &layer).await;
    let m = image_manifest(
        OCI_MANIFEST,
        descriptor(OCI_CONFIG, &config),
        vec![descriptor(OCI_LAYER, &layer)],
        json!({}),
    );
    let body = assert_error(
        put_manifest(&reg, "m/blobs", "v1", OCI_MANIFEST, &m).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
    assert_eq!(body["errors"][0]["detail"]["digest"], sha256(&layer));
    assert_error(
        get_manifest(&reg, "m/blobs", "v1").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    push_blob(&reg, "m/blobs", &layer).await;
    assert_eq!(
        put_manifest(&reg, "m/blobs", "v1", OCI_MANIFEST, &m)
            .await
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn non_distributable_layers_need_not_be_pushed() {
    let reg = Registry::in_process().await;
    let config = b"{\"a\":1}".to_vec();
    push_blob(&reg, "m/foreign", &config).await;
    let mut layer = descriptor(
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        b"never pushed",
    );
    layer["urls"] = json!(["https://example.invalid/layer"]);
    let m = image_manifest(
        OCI_MANIFEST,
        descriptor(OCI_CONFIG, &config),
        vec![layer],
        json!({}),
    );
    assert_eq!(
        put_manifest(&reg, "m/foreign", "v1", OCI_MANIFEST, &m)
            .await
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_missing_subject_is_accepted_and_answered_with_oci_subject() {
    let reg = Registry::in_process().await;
    let absent = sha256(b"a manifest that was never pushed");
    let empty = b"{}".to_vec();
    push_blob(&reg, "m/subject", &empty).await;
    let m = image_manifest(
        OCI_MANIFEST,
        descriptor(OCI_EMPTY, &empty),
        vec![descriptor(OCI_EMPTY, &empty)],
        json!({ "artifactType": "application/vnd.example.sbom", "subject": { "mediaType": OCI_MANIFEST, "digest": absent, "size": 123 } }),
    );
    let resp = put_manifest(&reg, "m/subject", &sha256(&m), OCI_MANIFEST, &m).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(&resp, "oci-subject"), absent);
}

#[tokio::test]
async fn sparse_indexes_are_accepted_unless_strict() {
    let absent = descriptor(OCI_MANIFEST, b"an arm64 manifest not copied here");
    let index = index_manifest(OCI_INDEX, vec![(absent, "arm64")], json!({}));
    let reg = Registry::in_process().await;
    assert_eq!(
        put_manifest(&reg, "m/sparse", "v1", OCI_INDEX, &index)
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        get_manifest(&reg, "m/sparse", "v1")
            .await
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        index.as_slice()
    );

    let strict = Registry::in_process_with(&["--strict-indexes"]).await;
    assert_error(
        put_manifest(&strict, "m/sparse", "v1", OCI_INDEX, &index).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn manifests_over_4_mib_are_413() {
    let reg = Registry::in_process().await;
    let config = b"{}".to_vec();
    push_blob(&reg, "m/big", &config).await;
    let big = "x".repeat(4 * 1024 * 1024);
    let m = image_manifest(
        OCI_MANIFEST,
        descriptor(OCI_CONFIG, &config),
        vec![],
        json!({ "annotations": { "pad": big } }),
    );
    assert!(m.len() > 4 * 1024 * 1024);
    assert_error(
        put_manifest(&reg, "m/big", "v1", OCI_MANIFEST, &m).await,
        413,
        "SIZE_INVALID",
    )
    .await;
    // Just under the limit is fine.
    let pad = "x".repeat(4 * 1024 * 1024 - 1024);
    let m = image_manifest(
        OCI_MANIFEST,
        descriptor(OCI_CONFIG, &config),
        vec![],
        json!({ "annotations": { "pad": pad } }),
    );
    assert!(m.len() <= 4 * 1024 * 1024);
    assert_eq!(
        put_manifest(&reg, "m/big", "v1", OCI_MANIFEST, &m)
            .await
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn put_by_digest_with_tag_params_answers_oci_tag() {
    let reg = Registry::in_process().await;
    let img = push_image(&reg, "m/tags", "first", 1, 10).await;
    let resp = client()
        .put(reg.url(&format!(
            "/v2/m/tags/manifests/{}?tag=a&tag=b&tag=c",
            img.digest
        )))
        .header("content-type", OCI_MANIFEST)
        .body(img.manifest.clone())
        .via(&reg)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let tags: Vec<_> = resp
        .headers()
        .get_all("oci-tag")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(tags, ["a", "b", "c"]);
    for t in ["a", "b", "c"] {
        assert_eq!(
            header(
                &get_manifest(&reg, "m/tags", t).await,
                "docker-content-digest"
            ),
            img.digest
        );
    }
    let resp = client()
        .put(reg.url(&format!("/v2/m/tags/manifests/{}?tag=bad/tag", img.digest)))
        .header("content-type", OCI_MANIFEST)
        .body(img.manifest.clone())
        .via(&reg)
        .await
        .unwrap();
    assert_error(resp, 400, "MANIFEST_INVALID").await;
}

#[tokio::test]
async fn put_by_digest_must_match_the_body() {
    let reg = Registry::in_process().await;
    let img = push_image(&reg, "m/mismatch", "v1", 1, 10).await;
    let wrong = sha256(b"other");
    assert_error(
        put_manifest(&reg, "m/mismatch", &wrong, OCI_MANIFEST, &img.manifest).await,
        400,
        "DIGEST_INVALID",
    )
    .await;
    assert_error(
        get_manifest(&reg, "m/mismatch", &wrong).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn malformed_manifests_are_manifest_invalid() {
    let reg = Registry::in_process().await;
    let img = push_image(&reg, "m/invalid", "v1", 1, 10).await;
    assert_error(
        put_manifest(&reg, "m/invalid", "x", OCI_MANIFEST, b"{not json").await,
        400,
        "MANIFEST_INVALID",
    )
    .await;
    // Content-Type says index, the body is an image manifest.
    assert_error(
        put_manifest(&reg, "m/invalid", "x", OCI_INDEX, &img.manifest).await,
        400,
        "MANIFEST_INVALID",
    )
    .await;
    let v1 = br#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
    assert_error(
        put_manifest(
            &reg,
            "m/invalid",
            "x",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            v1,
        )
        .await,
        400,
        "MANIFEST_INVALID",
    )
    .await;
    let resp = put_manifest(&reg, "m/invalid", "bad!tag", OCI_MANIFEST, &img.manifest).await;
    assert_error(resp, 400, "MANIFEST_INVALID").await;
}

#[tokio::test]
async fn pulling_a_tag_outside_the_grammar_is_manifest_unknown() {
    // The conformance suite pulls `.INVALID_MANIFEST_NAME`: end-3 lists only 404.
    let reg = Registry::in_process().await;
    push_image(&reg, "m/badtag", "v1", 1, 10).await;
    for tag in [".INVALID_MANIFEST_NAME", "bad!tag", "-x"] {
        assert_error(
            get_manifest(&reg, "m/badtag", tag).await,
            404,
            "MANIFEST_UNKNOWN",
        )
        .await;
        let resp = client()
            .head(reg.url(&format!("/v2/m/badtag/manifests/{tag}")))
            .via(&reg)
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "HEAD {tag}");
        let resp = client()
            .delete(reg.url(&format!("/v2/m/badtag/manifests/{tag}")))
            .via(&reg)
            .await
            .unwrap();
        assert_error(resp, 400, "MANIFEST_INVALID").await;
    }
    // A malformed digest is still a bad request.
    assert_error(
        get_manifest(&reg, "m/badtag", "sha256:zz").await,
        400,
        "DIGEST_INVALID",
    )
    .await;
}
