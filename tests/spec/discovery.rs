//! Content discovery (spec "Content Discovery"): end-8a/8b, end-12a/12b, `_catalog`.

use reqwest::StatusCode;
use sealer_e2e::*;
use serde_json::{Value, json};

async fn json_get(reg: &Registry, url: &str) -> (reqwest::header::HeaderMap, Value) {
    let resp = client().get(url).via(reg).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "GET {url}");
    let h = resp.headers().clone();
    (h, resp.json().await.unwrap())
}

fn link_of(h: &reqwest::header::HeaderMap) -> Option<String> {
    let v = h.get("link")?.to_str().unwrap().to_string();
    assert!(v.ends_with("; rel=\"next\""), "{v}");
    Some(
        v.trim_start_matches('<')
            .split('>')
            .next()
            .unwrap()
            .to_string(),
    )
}

#[tokio::test]
async fn tags_are_sorted_and_paged_with_n_last_and_link() {
    let reg = Registry::in_process().await;
    let img = push_image(&reg, "d/tags", "b", 1, 10).await;
    for t in ["a", "C", "c", "1.0", "latest"] {
        assert_eq!(
            put_manifest(&reg, "d/tags", t, OCI_MANIFEST, &img.manifest)
                .await
                .status(),
            201
        );
    }
    let (h, body) = json_get(&reg, &reg.url("/v2/d/tags/tags/list")).await;
    assert_eq!(body["name"], "d/tags");
    assert_eq!(body["tags"], json!(["1.0", "C", "a", "b", "c", "latest"]));
    assert!(link_of(&h).is_none());

    let (h, body) = json_get(&reg, &reg.url("/v2/d/tags/tags/list?n=2")).await;
    assert_eq!(body["tags"], json!(["1.0", "C"]));
    let next = link_of(&h).expect("a Link to the next page");
    let (h, body) = json_get(&reg, &reg.url(&next)).await;
    assert_eq!(body["tags"], json!(["a", "b"]));
    let (h2, body) = json_get(&reg, &reg.url(&link_of(&h).unwrap())).await;
    assert_eq!(body["tags"], json!(["c", "latest"]));
    assert!(link_of(&h2).is_none(), "no Link after the last page");

    let (_, body) = json_get(&reg, &reg.url("/v2/d/tags/tags/list?last=b")).await;
    assert_eq!(body["tags"], json!(["c", "latest"]));
    let (h, body) = json_get(&reg, &reg.url("/v2/d/tags/tags/list?n=0")).await;
    assert_eq!(body["tags"], json!([]));
    assert!(link_of(&h).is_none());
}

#[tokio::test]
async fn tags_of_an_unknown_repository_are_name_unknown() {
    let reg = Registry::in_process().await;
    assert_error(get(&reg, "/v2/d/none/tags/list").await, 404, "NAME_UNKNOWN").await;
}

#[tokio::test]
async fn catalog_lists_repositories_sorted_and_paged() {
    let reg = Registry::in_process().await;
    for repo in ["z/last", "a/first", "m/middle/deep", "b"] {
        push_image(&reg, repo, "v1", 1, 10).await;
    }
    // A repository with only a blob is not a repository of images yet.
    push_blob(&reg, "blobs/only", b"x").await;
    let (_, body) = json_get(&reg, &reg.url("/v2/_catalog")).await;
    assert_eq!(
        body["repositories"],
        json!(["a/first", "b", "m/middle/deep", "z/last"])
    );
    let (h, body) = json_get(&reg, &reg.url("/v2/_catalog?n=3")).await;
    assert_eq!(
        body["repositories"],
        json!(["a/first", "b", "m/middle/deep"])
    );
    let (h2, body) = json_get(&reg, &reg.url(&link_of(&h).unwrap())).await;
    assert_eq!(body["repositories"], json!(["z/last"]));
    assert!(link_of(&h2).is_none());
}

async fn push_referrer(
    reg: &Registry,
    repo: &str,
    subject: &PushedImage,
    artifact_type: &str,
    note: &str,
) -> String {
    let empty = b"{}".to_vec();
    push_blob(reg, repo, &empty).await;
    let payload = random_bytes(64);
    push_blob(reg, repo, &payload).await;
    let m = image_manifest(
        OCI_MANIFEST,
        descriptor(OCI_EMPTY, &empty),
        vec![descriptor("application/octet-stream", &payload)],
        json!({
            "artifactType": artifact_type,
            "subject": descriptor(OCI_MANIFEST, &subject.manifest),
            "annotations": { "note": note },
        }),
    );
    let digest = sha256(&m);
    let resp = put_manifest(reg, repo, &digest, OCI_MANIFEST, &m).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(&resp, "oci-subject"), subject.digest);
    digest
}

#[tokio::test]
async fn referrers_list_filter_and_page() {
    let reg = Registry::in_process().await;
    let subject = push_image(&reg, "d/ref", "v1", 1, 10).await;
    let sbom = push_referrer(&reg, "d/ref", &subject, "application/vnd.example.sbom", "s").await;
    let sig = push_referrer(
        &reg,
        "d/ref",
        &subject,
        "application/vnd.example.signature",
        "g",
    )
    .await;
    let url = reg.url(&format!("/v2/d/ref/referrers/{}", subject.digest));

    let resp = client().get(&url).via(&reg).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-type"), OCI_INDEX);
    assert!(header_opt(&resp, "oci-filters-applied").is_none());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["schemaVersion"], 2);
    assert_eq!(body["mediaType"], OCI_INDEX);
    let list = body["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    for d in list {
        assert_eq!(d["mediaType"], OCI_MANIFEST);
        assert!(d["size"].as_u64().unwrap() > 0);
        let expected = if d["digest"] == sbom.as_str() {
            ("application/vnd.example.sbom", "s")
        } else {
            ("application/vnd.example.signature", "g")
        };
        assert_eq!(d["artifactType"], expected.0);
        assert_eq!(d["annotations"]["note"], expected.1);
    }

    let resp = client()
        .get(format!(
            "{url}?artifactType=application/vnd.example.signature"
        ))
        .via(&reg)
        .await
        .unwrap();
    assert_eq!(header(&resp, "oci-filters-applied"), "artifactType");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(body["manifests"][0]["digest"], sig.as_str());

    // Paging: one per page, following Link.
    let (h, body) = json_get(&reg, &format!("{url}?n=1")).await;
    assert_eq!(body["manifests"].as_array().unwrap().len(), 1);
    let first = body["manifests"][0]["digest"].clone();
    let (h2, body) = json_get(
        &reg,
        &reg.url(&link_of(&h).expect("Link to the second page")),
    )
    .await;
    assert_eq!(body["manifests"].as_array().unwrap().len(), 1);
    assert_ne!(body["manifests"][0]["digest"], first);
    assert!(link_of(&h2).is_none());
}

#[tokio::test]
async fn referrers_of_an_unknown_subject_are_an_empty_list_and_bad_digests_are_400() {
    let reg = Registry::in_process().await;
    let (_, body) = json_get(
        &reg,
        &reg.url(&format!("/v2/d/none/referrers/{}", sha256(b"nothing"))),
    )
    .await;
    assert_eq!(body["manifests"], json!([]));
    assert_error(
        get(&reg, "/v2/d/none/referrers/sha256:nothex").await,
        400,
        "DIGEST_INVALID",
    )
    .await;
}

#[tokio::test]
async fn referrers_of_an_index_artifact_use_its_artifact_type() {
    let reg = Registry::in_process().await;
    let subject = push_image(&reg, "d/refindex", "v1", 1, 10).await;
    let child = push_image(&reg, "d/refindex", "child", 1, 10).await;
    let ix = index_manifest(
        OCI_INDEX,
        vec![(descriptor(OCI_MANIFEST, &child.manifest), "amd64")],
        json!({ "artifactType": "application/vnd.example.bundle", "subject": descriptor(OCI_MANIFEST, &subject.manifest) }),
    );
    let resp = put_manifest(&reg, "d/refindex", &sha256(&ix), OCI_INDEX, &ix).await;
    assert_eq!(header(&resp, "oci-subject"), subject.digest);
    let (_, body) = json_get(
        &reg,
        &reg.url(&format!("/v2/d/refindex/referrers/{}", subject.digest)),
    )
    .await;
    assert_eq!(body["manifests"][0]["mediaType"], OCI_INDEX);
    assert_eq!(
        body["manifests"][0]["artifactType"],
        "application/vnd.example.bundle"
    );
}
