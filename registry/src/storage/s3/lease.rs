//! Conditional writes, and the garbage collector's lease built on them.
//!
//! Some S3 services honour `If-None-Match: *` and `If-Match` on PUT (AWS, MinIO, Ceph);
//! others ignore them and overwrite (Garage). The registry probes at start and logs the
//! mode. Nothing that keeps data correct relies on a condition: they only keep two
//! replicas from collecting garbage at the same time, which would be wasted work, not
//! harm. Where conditions are ignored, collection runs on the replicas given
//! `--gc-interval` (give it to one).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use object_store::aws::AmazonS3;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, UpdateVersion};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::keys::Keys;
use super::{S3Storage, os_err};
use crate::storage::Result;

/// Writes one object twice with `If-None-Match: *`: a store that honours the condition
/// refuses the second. Also proves that the bucket can be written and read.
pub async fn probe_conditional(store: &AmazonS3, keys: &Keys) -> anyhow::Result<bool> {
    let key = keys.probe(Uuid::new_v4());
    let create = || PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    store
        .put_opts(&key, Bytes::from_static(b"1").into(), create())
        .await?;
    let second = store
        .put_opts(&key, Bytes::from_static(b"2").into(), create())
        .await;
    let honoured = match second {
        Err(object_store::Error::AlreadyExists { .. })
        | Err(object_store::Error::Precondition { .. }) => true,
        Ok(_) => false,
        Err(e) => return Err(e.into()),
    };
    store.get(&key).await?.bytes().await?;
    store.delete(&key).await?;
    Ok(honoured)
}

#[derive(Debug, Serialize, Deserialize)]
struct LeaseRecord {
    holder: Uuid,
    /// Seconds since the epoch after which the lease is free.
    until: u64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl S3Storage {
    /// Takes or renews the collector's lease for `ttl` as `holder`; returns whether this
    /// replica holds it. Without honoured conditions every caller holds it.
    pub async fn take_gc_lease(&self, holder: Uuid, ttl: Duration) -> Result<bool> {
        if !self.conditional {
            return Ok(true);
        }
        let key = self.keys.gc_lease();
        let record = LeaseRecord {
            holder,
            until: now_secs() + ttl.as_secs(),
        };
        let body = Bytes::from(serde_json::to_vec(&record).expect("a lease serializes"));
        let mode = match self.store.get(&key).await {
            Err(object_store::Error::NotFound { .. }) => PutMode::Create,
            Err(e) => return Err(os_err(format!("reading {key}"), e)),
            Ok(current) => {
                let version = UpdateVersion {
                    e_tag: current.meta.e_tag.clone(),
                    version: current.meta.version.clone(),
                };
                let data = current
                    .bytes()
                    .await
                    .map_err(|e| os_err(format!("reading {key}"), e))?;
                let held: Option<LeaseRecord> = serde_json::from_slice(&data).ok();
                if held.is_some_and(|h| h.holder != holder && h.until > now_secs()) {
                    return Ok(false);
                }
                PutMode::Update(version)
            }
        };
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        match self.store.put_opts(&key, body.into(), opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(os_err(format!("writing {key}"), e)),
        }
    }
}
