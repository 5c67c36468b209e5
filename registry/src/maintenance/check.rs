//! `sealer-registry check`: re-hash every blob in the store, report the ones whose
//! content no longer matches their digest, and move them out of the way (quarantine) so
//! they are never served; also report links to blobs that are missing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures::StreamExt;
use serde::Serialize;

use crate::oci::{Digest, RepoName};
use crate::storage::{Maintenance, StorageError};

/// What a check found.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CheckReport {
    pub blobs: usize,
    pub bytes: u64,
    /// Blobs whose content does not hash to their name.
    pub corrupt: Vec<Corrupt>,
    /// `repository@digest` links whose blob is not in the store.
    pub missing: Vec<String>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Corrupt {
    pub digest: Digest,
    /// What the content hashes to now.
    pub actual: Digest,
    /// Where it was moved, when quarantined.
    pub quarantined_to: Option<String>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.missing.is_empty()
    }
}

/// Checks every blob, `parallel` at a time; with `quarantine`, moves corrupt ones to
/// `<root>/quarantine/` (reads of them then answer `BLOB_UNKNOWN`, and a client can push
/// them again). `progress` is told the bytes hashed so far.
pub async fn check(
    store: Arc<dyn Maintenance>,
    quarantine: bool,
    parallel: usize,
    progress: impl Fn(u64, u64) + Send + Sync + 'static,
) -> Result<CheckReport, StorageError> {
    let begun = Instant::now();
    let blobs = store.list_blobs().await?;
    let total: u64 = blobs.iter().map(|(_, s)| s).sum();
    let hashed = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(progress);
    let results = futures::stream::iter(blobs.clone())
        .map(|(digest, _)| {
            let (store, hashed, progress) = (store.clone(), hashed.clone(), progress.clone());
            async move {
                let actual = store
                    .hash_blob(
                        &digest,
                        Box::new(move |n| {
                            progress(hashed.fetch_add(n, Ordering::Relaxed) + n, total);
                        }),
                    )
                    .await?;
                Ok::<_, StorageError>((digest, actual))
            }
        })
        .buffer_unordered(parallel.max(1))
        .collect::<Vec<_>>()
        .await;

    let mut report = CheckReport {
        blobs: blobs.len(),
        bytes: total,
        ..CheckReport::default()
    };
    for r in results {
        let (digest, actual) = r?;
        // Gone since it was listed (a collection): nothing to check.
        let Some(actual) = actual else { continue };
        if actual == digest {
            continue;
        }
        let quarantined_to = if quarantine {
            Some(store.quarantine_blob(&digest).await?)
        } else {
            None
        };
        report.corrupt.push(Corrupt {
            digest,
            actual,
            quarantined_to,
        });
    }
    for name in store.list_repositories_with_links().await? {
        let Ok(repo) = RepoName::parse(&name) else {
            continue;
        };
        for d in store.repo_links(&repo).await? {
            let quarantined = report
                .corrupt
                .iter()
                .any(|c| c.digest == d && c.quarantined_to.is_some());
            if !quarantined && !store.has_blob(&d).await? {
                report.missing.push(format!("{repo}@{d}"));
            }
        }
    }
    report.seconds = begun.elapsed().as_secs_f64();
    Ok(report)
}
