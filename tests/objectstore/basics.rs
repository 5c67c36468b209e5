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
    let tags: serde_json::Value = get(&reg, "/v2/team/app/tags/list")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tags, json!({"name": "team/app", "tags": ["v1"]}));
    let catalog: serde_json::Value = get(&reg, "/v2/_catalog").await.json().await.unwrap();
    assert_eq!(catalog, json!({"repositories": ["team/app"]}));

    // Mount into another repository, then delete: the blob's link goes, the manifest and
    // its tag go, other repositories keep the content.
    let mount = format!("/v2/other/blobs/uploads/?mount={layer_digest}&from=team/app");
    assert_eq!(post(&reg, &mount).await.status(), 201);
    assert_eq!(
        delete(&reg, format!("/v2/team/app/blobs/{layer_digest}"))
            .await
            .status(),
        202
    );
    assert_eq!(
        head(&reg, format!("/v2/team/app/blobs/{layer_digest}"))
            .await
            .status(),
        404
    );
    assert_eq!(
        head(&reg, format!("/v2/other/blobs/{layer_digest}"))
            .await
            .status(),
        200
    );
    let manifest = format!("/v2/team/app/manifests/{}", image.digest);
    assert_eq!(delete(&reg, &manifest).await.status(), 202);
    assert_eq!(get(&reg, &manifest).await.status(), 404);
    assert_eq!(get(&reg, "/v2/team/app/manifests/v1").await.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn blob_reads_redirect_to_presigned_urls_when_asked_to() {
    let garage = Garage::start(1);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("registry.toml");
    std::fs::write(&cfg, "[storage]\nredirect = true\n").unwrap();
    let reg = Registry::on_bucket(&garage.bucket, "r", &["--config", cfg.to_str().unwrap()]);
    let data = random_bytes(2 * 1024 * 1024);
    let digest = push_blob(&reg, "team/app", &data).await;
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_follow
        .get(reg.url(&format!("/v2/team/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 307);
    let location = header(&resp, "location");
    assert!(location.starts_with(&garage.bucket.endpoint), "{location}");
    assert!(location.contains("X-Amz-Signature"), "{location}");
    let fetched = no_follow.get(&location).send().await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(sha256(&fetched.bytes().await.unwrap()), digest);
    // Only repositories that link the blob are sent there.
    let other = no_follow
        .get(reg.url(&format!("/v2/other/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

/// A token from `reg`'s `/token` for `alice`, allowed to pull and push `team/app`.
async fn token_from(reg: &Registry) -> String {
    let resp = client()
        .get(reg.url("/token?service=sealer-registry&scope=repository:team/app:pull,push"))
        .basic_auth("alice", Some("a-pass"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    body["token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_sharing_a_token_key_accept_each_others_tokens() {
    let garage = Garage::start(1);
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("htpasswd");
    run(std::process::Command::new(require("htpasswd")).args([
        "-Bbc",
        users.to_str().unwrap(),
        "alice",
        "a-pass",
    ]));
    let key = dir.path().join("token.key");
    std::fs::write(&key, "c2hhcmVkIGJ5IGV2ZXJ5IHJlcGxpY2Egb2YgdGhpcyBzaXRl\n").unwrap();
    let (users, key) = (users.to_str().unwrap(), key.to_str().unwrap());
    let shared = ["--htpasswd", users, "--token-key", key];
    let a = Registry::on_bucket(&garage.bucket, "auth", &shared);
    let b = Registry::on_bucket(&garage.bucket, "auth", &shared);
    let alone = Registry::on_bucket(&garage.bucket, "auth", &["--htpasswd", users]);

    let token = token_from(&a).await;
    let tags = |reg: &Registry| {
        client()
            .get(reg.url("/v2/team/app/tags/list"))
            .bearer_auth(&token)
    };
    // Signed in at one replica, the client goes on at the other (a 404: nothing pushed yet).
    assert_eq!(tags(&b).send().await.unwrap().status(), 404);
    assert_eq!(tags(&a).send().await.unwrap().status(), 404);
    // A replica with a key of its own does not know the token.
    assert_eq!(tags(&alone).send().await.unwrap().status(), 401);
}
