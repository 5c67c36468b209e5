//! One registry on a one-node Garage: what a client relies on, with the bucket as the
//! only store.

use sealer_e2e::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn push_pull_tag_list_and_delete_on_garage() {
    let garage = Garage::start(1);
    let reg = Registry::on_bucket(&garage.bucket, "site", &[]);
    let layer = random_bytes(3 * 1024 * 1024 + 17);
    let layer_digest = push_blob(&reg, "team/app", &layer).await;
    let resp = get(&reg, format!("/v2/team/app/blobs/{layer_digest}")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(&resp.bytes().await.unwrap()[..], &layer[..]);
    let image = push_image(&reg, "team/app", "v1", 2, 6 * 1024 * 1024).await;
    let resp = get(&reg, "/v2/team/app/manifests/v1").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "docker-content-digest"), image.digest);
    assert_eq!(&resp.bytes().await.unwrap()[..], &image.manifest[..]);
    let tags: serde_json::Value = get(&reg, "/v2/team/app/tags/list").await.json().await.unwrap();
    assert_eq!(tags, json!({"name": "team/app", "tags": ["v1"]}));
    let catalog: serde_json::Value = get(&reg, "/v2/_catalog").await.json().await.unwrap();
    assert_eq!(catalog, json!({"repositories": ["team/app"]}));
}
