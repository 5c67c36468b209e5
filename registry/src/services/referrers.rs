//! The referrers API: manifests whose `subject` is a given manifest.

use std::sync::Arc;

use super::{Page, paginate};
use crate::error::Result;
use crate::oci::{Digest, RepoName};
use crate::storage::{ReferrerRecord, Storage};

pub struct ReferrerService {
    storage: Arc<dyn Storage>,
    max_page: usize,
}

impl ReferrerService {
    pub fn new(storage: Arc<dyn Storage>, max_page: usize) -> Self {
        ReferrerService { storage, max_page }
    }

    /// Referrers of `subject` in the first of `repos` that has any, ordered by digest, filtered by `artifact_type`
    /// when given. A subject nobody refers to (or that does not exist) has an empty list.
    pub async fn list(
        &self,
        repos: &[RepoName],
        subject: &Digest,
        artifact_type: Option<&str>,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page<ReferrerRecord>> {
        let mut records = Vec::new();
        for repo in repos {
            records = self.storage.list_referrers(repo, subject).await?;
            if !records.is_empty() {
                break;
            }
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
