//! The referrers API: manifests whose `subject` is a given manifest.

use std::sync::Arc;

use super::error::Result;
use super::mirror::Mirror;
use super::{Lookup, Page, paginate};
use crate::oci::Digest;
use crate::storage::{ReferrerRecord, Storage};

pub struct ReferrerService {
    storage: Arc<dyn Storage>,
    max_page: usize,
    mirror: Option<Arc<dyn Mirror>>,
}

impl ReferrerService {
    pub fn new(
        storage: Arc<dyn Storage>,
        max_page: usize,
        mirror: Option<Arc<dyn Mirror>>,
    ) -> Self {
        ReferrerService {
            storage,
            max_page,
            mirror,
        }
    }

    /// Referrers of `subject`, ordered by digest and filtered by `artifact_type` when
    /// given: the upstream's for a mirrored name when it answers, else those of the first
    /// local repository of `lookup` that has any. A subject nobody refers to (or that does
    /// not exist) has an empty list.
    pub async fn list(
        &self,
        lookup: &Lookup,
        subject: &Digest,
        artifact_type: Option<&str>,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page<ReferrerRecord>> {
        let mut records = Vec::new();
        if let (Some(mirror), Some(route)) = (&self.mirror, &lookup.mirror) {
            if let Some(upstream) = mirror.referrers(route, subject).await? {
                records = upstream;
            }
        }
        for repo in &lookup.local {
            if !records.is_empty() {
                break;
            }
            records = self.storage.list_referrers(repo, subject).await?;
        }
        if let Some(at) = artifact_type {
            records.retain(|r| r.artifact_type.as_deref() == Some(at));
        }
        let mut keyed: Vec<(String, ReferrerRecord)> = records
            .into_iter()
            .map(|r| (r.digest.to_string(), r))
            .collect();
        keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let n = n.unwrap_or(self.max_page).min(self.max_page);
        let page = paginate(keyed, |(k, _)| k.as_str(), last, n);
        Ok(Page {
            entries: page.entries.into_iter().map(|(_, r)| r).collect(),
            next_after: page.next_after,
        })
    }
}
