//! The pull-through mirror's cache in the bucket: fills stream to clients while they are
//! stored, and what one replica fetched every replica serves, with the upstream gone.

use reqwest::StatusCode;
use sealer_e2e::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_fill_on_one_replica_is_served_by_every_replica_without_the_upstream() {
    let garage = Garage::start(1);
    let mut up = Registry::start();
    let image = push_image(&up, "library/app", "1.0", 2, 9 * 1024 * 1024).await;
    let upstream = format!("docker.io=http://{}", up.host);
    let args = ["--upstream", upstream.as_str()];
    let a = Registry::on_bucket(&garage.bucket, "cache", &args);
    let b = Registry::on_bucket(&garage.bucket, "cache", &args);

    let manifest = get(&a, "/v2/library/app/manifests/1.0?ns=docker.io").await;
    assert_eq!(manifest.status(), StatusCode::OK);
    assert_eq!(header(&manifest, "docker-content-digest"), image.digest);
    // Concurrent cold pulls of one layer: each reads the fill as it arrives.
    let digest = sha256(&image.layers[0]);
    let url = a.url(&format!("/v2/library/app/blobs/{digest}?ns=docker.io"));
    let pulls: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let resp = client().get(url).send().await.unwrap();
                assert_eq!(resp.status(), StatusCode::OK);
                sha256(&resp.bytes().await.unwrap())
            })
        })
        .collect();
    for p in pulls {
        assert_eq!(p.await.unwrap(), digest);
    }
    let other = sha256(&image.layers[1]);
    let resp = get(&a, format!("/v2/library/app/blobs/{other}?ns=docker.io")).await;
    assert_eq!(sha256(&resp.bytes().await.unwrap()), other);

    up.kill9();
    let manifest = get(&b, "/v2/library/app/manifests/1.0?ns=docker.io").await;
    assert_eq!(
        manifest.status(),
        StatusCode::OK,
        "the other replica serves the cache"
    );
    assert_eq!(&manifest.bytes().await.unwrap()[..], &image.manifest[..]);
    for layer in &image.layers {
        let d = sha256(layer);
        let resp = get(&b, format!("/v2/library/app/blobs/{d}?ns=docker.io")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(sha256(&resp.bytes().await.unwrap()), d);
    }
}
