//! Content management (spec "Deleting tags/manifests/blobs"): end-9, end-10.

use reqwest::StatusCode;
use sealer_e2e::*;
use serde_json::json;

#[tokio::test]
async fn deleting_a_tag_keeps_the_manifest() {
    let reg = Registry::in_process().await;
    let img = push_image(&reg, "del/tag", "v1", 1, 10).await;
    let resp = delete(&reg, "/v2/del/tag/manifests/v1").await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_error(
        get(&reg, "/v2/del/tag/manifests/v1").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    let resp = get(&reg, &format!("/v2/del/tag/manifests/{}", img.digest)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_error(
        delete(&reg, "/v2/del/tag/manifests/v1").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn deleting_a_manifest_removes_its_tags_and_referrer_entry() {
    let reg = Registry::in_process().await;
    let img = push_image(&reg, "del/manifest", "v1", 1, 10).await;
    put_manifest(&reg, "del/manifest", "also", OCI_MANIFEST, &img.manifest).await;
    let other = push_image(&reg, "del/manifest", "other", 1, 10).await;
    // `img` also refers to `other`, so deleting it must drop it from other's referrers.
    let referrer = image_manifest(
        OCI_MANIFEST,
        descriptor(OCI_CONFIG, &img.config),
        vec![],
        json!({ "subject": descriptor(OCI_MANIFEST, &other.manifest) }),
    );
    put_manifest(
        &reg,
        "del/manifest",
        &sha256(&referrer),
        OCI_MANIFEST,
        &referrer,
    )
    .await;
    let c = client();
    let refs_url = reg.url(&format!("/v2/del/manifest/referrers/{}", other.digest));
    let body: serde_json::Value = c
        .get(&refs_url)
        .via(&reg)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["manifests"].as_array().unwrap().len(), 1);

    for d in [&img.digest, &sha256(&referrer)] {
        let resp = delete(&reg, &format!("/v2/del/manifest/manifests/{d}")).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        assert_error(
            get(&reg, &format!("/v2/del/manifest/manifests/{d}")).await,
            404,
            "MANIFEST_UNKNOWN",
        )
        .await;
    }
    for tag in ["v1", "also"] {
        assert_error(
            get(&reg, &format!("/v2/del/manifest/manifests/{tag}")).await,
            404,
            "MANIFEST_UNKNOWN",
        )
        .await;
    }
    let body: serde_json::Value = c
        .get(&refs_url)
        .via(&reg)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["manifests"], json!([]));
    let body: serde_json::Value = get(&reg, "/v2/del/manifest/tags/list")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["tags"], json!(["other"]));
}

#[tokio::test]
async fn deleting_a_blob_unlinks_it_from_the_repository_only() {
    let reg = Registry::in_process().await;
    let data = random_bytes(100);
    let d = push_blob(&reg, "del/blob", &data).await;
    push_blob(&reg, "del/keeper", &data).await;
    let resp = delete(&reg, &format!("/v2/del/blob/blobs/{d}")).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_error(
        get(&reg, &format!("/v2/del/blob/blobs/{d}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    assert_eq!(
        get(&reg, &format!("/v2/del/keeper/blobs/{d}"))
            .await
            .status(),
        200
    );
    assert_error(
        delete(&reg, &format!("/v2/del/blob/blobs/{d}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn deletes_can_be_disabled() {
    let reg = Registry::in_process_with(&["--no-delete"]).await;
    let img = push_image(&reg, "del/off", "v1", 1, 10).await;
    for path in [
        "/v2/del/off/manifests/v1".to_string(),
        format!("/v2/del/off/manifests/{}", img.digest),
        format!("/v2/del/off/blobs/{}", sha256(&img.config)),
    ] {
        assert_error(delete(&reg, &path).await, 405, "UNSUPPORTED").await;
    }
    assert_eq!(get(&reg, "/v2/del/off/manifests/v1").await.status(), 200);
}
