//! The bucket as the source of truth: the conditional-write probe and the collector's
//! lease on a store that honours conditions (moto) and one that ignores them (Garage);
//! the catalog index rebuilt from the repositories; `gc` and `check` on a bucket.

use std::process::Command;
use std::time::Duration;

use sealer_e2e::*;
use sealer_registry::storage::s3::{S3Settings, S3Storage, StorageSection};
use serde_json::json;

async fn open(bucket: &Bucket, prefix: &str) -> S3Storage {
    let table = StorageSection {
        endpoint: Some(bucket.endpoint.clone()),
        region: Some(bucket.region.clone()),
        access_key_id: Some(bucket.key_id.clone()),
        secret_access_key: Some(bucket.secret.clone()),
        ..StorageSection::default()
    };
    let settings = S3Settings::resolve(&bucket.url(prefix), &table).unwrap();
    S3Storage::open(settings).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_collector_at_a_time_where_conditions_hold_and_the_probe_says_which() {
    let moto = Moto::start();
    let (a, b) = (
        open(&moto.bucket, "lease").await,
        open(&moto.bucket, "lease").await,
    );
    assert!(a.honours_conditions(), "moto honours If-None-Match");
    let (ha, hb) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let ttl = Duration::from_secs(60);
    assert!(a.take_gc_lease(ha, ttl).await.unwrap());
    assert!(
        !b.take_gc_lease(hb, ttl).await.unwrap(),
        "held by the other replica"
    );
    assert!(
        a.take_gc_lease(ha, ttl).await.unwrap(),
        "the holder renews it"
    );
    // An expired lease is taken over.
    assert!(a.take_gc_lease(ha, Duration::ZERO).await.unwrap());
    assert!(b.take_gc_lease(hb, ttl).await.unwrap());
    assert!(!a.take_gc_lease(ha, ttl).await.unwrap());

    let garage = Garage::start(1);
    let g = open(&garage.bucket, "lease").await;
    assert!(!g.honours_conditions(), "Garage ignores If-None-Match");
    // Without conditions the lease cannot exclude anyone: every replica given
    // --gc-interval collects, which the log says at start.
    assert!(g.take_gc_lease(ha, ttl).await.unwrap());
    assert!(g.take_gc_lease(hb, ttl).await.unwrap());
    let reg = Registry::on_bucket(&garage.bucket, "log", &[]);
    let log = std::fs::read_to_string(&reg.log).unwrap();
    assert!(
        log.contains("conditional_writes") && log.contains("ignored"),
        "{log}"
    );
    let on_moto = Registry::on_bucket(&moto.bucket, "log", &[]);
    let log = std::fs::read_to_string(&on_moto.log).unwrap();
    assert!(log.contains("honoured"), "{log}");
}

/// `sealer-registry` with the bucket's credentials.
fn registry_cli(bucket: &Bucket) -> Command {
    let mut c = Command::new(binary("sealer-registry"));
    c.envs(bucket.env());
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn the_catalog_index_is_rebuilt_from_the_bucket_and_gc_and_check_read_it() {
    let garage = Garage::start(1);
    let reg = Registry::on_bucket(&garage.bucket, "idx", &[]);
    for (repo, tag) in [("a", "1"), ("a-b", "1"), ("a/b", "2"), ("z/last", "x")] {
        push_image(&reg, repo, tag, 1, 1024).await;
    }
    push_image(&reg, "a", "2", 1, 1024).await;
    let before: serde_json::Value = get(&reg, "/v2/_catalog").await.json().await.unwrap();
    assert_eq!(
        before,
        json!({"repositories": ["a", "a-b", "a/b", "z/last"]})
    );
    let page: serde_json::Value = get(&reg, "/v2/_catalog?n=2&last=a-b")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page, json!({"repositories": ["a/b", "z/last"]}));

    // The index is lost: the catalog is empty, but tags and pulls do not depend on it.
    let index = reg.stored("index").await;
    assert_eq!(index.len(), 4);
    let client = garage.bucket.client();
    for (key, _) in &index {
        use object_store::ObjectStoreExt;
        client
            .delete(&object_store::path::Path::from(key.as_str()))
            .await
            .unwrap();
    }
    let empty: serde_json::Value = get(&reg, "/v2/_catalog").await.json().await.unwrap();
    assert_eq!(empty, json!({"repositories": []}));
    let tags: serde_json::Value = get(&reg, "/v2/a/tags/list").await.json().await.unwrap();
    assert_eq!(tags, json!({"name": "a", "tags": ["1", "2"]}));

    let out = run(registry_cli(&garage.bucket).args([
        "index-rebuild",
        "--storage",
        &garage.bucket.url("idx"),
    ]));
    assert!(out.contains("lists 4 repositories"), "{out}");
    let after: serde_json::Value = get(&reg, "/v2/_catalog").await.json().await.unwrap();
    assert_eq!(after, before);

    // gc --dry-run and check read the bucket.
    let out = run(registry_cli(&garage.bucket).args([
        "gc",
        "--dry-run",
        "--json",
        "--storage",
        &garage.bucket.url("idx"),
    ]));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["repositories"], 4, "{out}");
    assert_eq!(report["blobs"], 0, "everything is referenced: {out}");
    let out = run(registry_cli(&garage.bucket).args([
        "check",
        "--json",
        "--quiet",
        "--storage",
        &garage.bucket.url("idx"),
    ]));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(report["corrupt"].as_array().unwrap().is_empty(), "{out}");
    assert!(report["blobs"].as_u64().unwrap() >= 15, "{out}");

    a_damaged_blob_is_found_and_quarantined(&garage, &reg).await;
}

/// A blob damaged in the bucket is found by `check`, and quarantined on request.
async fn a_damaged_blob_is_found_and_quarantined(garage: &Garage, reg: &Registry) {
    let client = garage.bucket.client();
    let (key, data) = reg
        .stored("blobs")
        .await
        .into_iter()
        .max_by_key(|b| b.1.len())
        .unwrap();
    let mut damaged = data.clone();
    damaged[0] ^= 0xff;
    {
        use object_store::ObjectStoreExt;
        let path = object_store::path::Path::from(key.as_str());
        client.put(&path, damaged.into()).await.unwrap();
    }
    let found = output(registry_cli(&garage.bucket).args([
        "check",
        "--json",
        "--quiet",
        "--quarantine",
        "--storage",
        &garage.bucket.url("idx"),
    ]));
    assert!(!found.status.success(), "a damaged store fails the check");
    let report: serde_json::Value = serde_json::from_slice(&found.stdout).unwrap();
    assert_eq!(report["corrupt"].as_array().unwrap().len(), 1, "{report}");
    assert!(
        reg.stored("blobs").await.iter().all(|b| b.0 != key),
        "the damaged blob is no longer served"
    );
    assert_eq!(reg.stored("quarantine").await.len(), 1);
}
