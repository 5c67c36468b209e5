//! Content management (spec "Deleting tags/manifests/blobs"): end-9, end-10.

use reqwest::StatusCode;
use sealer_e2e::*;
use serde_json::json;

#[tokio::test]
async fn deleting_a_tag_keeps_the_manifest() {
    let reg = Registry::start();
    let img = push_image(&reg, "del/tag", "v1", 1, 10).await;
    let c = client();
    let resp = c
        .delete(reg.url("/v2/del/tag/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_error(
        c.get(reg.url("/v2/del/tag/manifests/v1"))
            .send()
            .await
            .unwrap(),
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    let resp = c
        .get(reg.url(&format!("/v2/del/tag/manifests/{}", img.digest)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_error(
        c.delete(reg.url("/v2/del/tag/manifests/v1"))
            .send()
            .await
            .unwrap(),
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn deleting_a_manifest_removes_its_tags_and_referrer_entry() {
    let reg = Registry::start();
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
    let body: serde_json::Value = c.get(&refs_url).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["manifests"].as_array().unwrap().len(), 1);

    for d in [&img.digest, &sha256(&referrer)] {
        let resp = c
            .delete(reg.url(&format!("/v2/del/manifest/manifests/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        assert_error(
            c.get(reg.url(&format!("/v2/del/manifest/manifests/{d}")))
                .send()
                .await
                .unwrap(),
            404,
            "MANIFEST_UNKNOWN",
        )
        .await;
    }
    for tag in ["v1", "also"] {
        assert_error(
            c.get(reg.url(&format!("/v2/del/manifest/manifests/{tag}")))
                .send()
                .await
                .unwrap(),
            404,
            "MANIFEST_UNKNOWN",
        )
        .await;
    }
    let body: serde_json::Value = c.get(&refs_url).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["manifests"], json!([]));
    let body: serde_json::Value = c
        .get(reg.url("/v2/del/manifest/tags/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["tags"], json!(["other"]));
}

#[tokio::test]
async fn deleting_a_blob_unlinks_it_from_the_repository_only() {
    let reg = Registry::start();
    let data = random_bytes(100);
    let d = push_blob(&reg, "del/blob", &data).await;
    push_blob(&reg, "del/keeper", &data).await;
    let c = client();
    let resp = c
        .delete(reg.url(&format!("/v2/del/blob/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_error(
        c.get(reg.url(&format!("/v2/del/blob/blobs/{d}")))
            .send()
            .await
            .unwrap(),
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    assert_eq!(
        c.get(reg.url(&format!("/v2/del/keeper/blobs/{d}")))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_error(
        c.delete(reg.url(&format!("/v2/del/blob/blobs/{d}")))
            .send()
            .await
            .unwrap(),
        404,
        "BLOB_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn deletes_can_be_disabled() {
    let reg = Registry::start_with(&["--no-delete"]);
    let img = push_image(&reg, "del/off", "v1", 1, 10).await;
    let c = client();
    for path in [
        "/v2/del/off/manifests/v1".to_string(),
        format!("/v2/del/off/manifests/{}", img.digest),
        format!("/v2/del/off/blobs/{}", sha256(&img.config)),
    ] {
        assert_error(
            c.delete(reg.url(&path)).send().await.unwrap(),
            405,
            "UNSUPPORTED",
        )
        .await;
    }
    assert_eq!(
        c.get(reg.url("/v2/del/off/manifests/v1"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
