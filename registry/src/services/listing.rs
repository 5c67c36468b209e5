//! Tag lists and the repository catalog, sorted and paged.

use std::sync::Arc;

use super::error::{Result, ServiceError};
use super::mirror::Mirror;
use super::{Lookup, Page, paginate};
use crate::storage::Storage;

pub struct ListingService {
    storage: Arc<dyn Storage>,
    max_page: usize,
    mirror: Option<Arc<dyn Mirror>>,
}

impl ListingService {
    pub fn new(
        storage: Arc<dyn Storage>,
        max_page: usize,
        mirror: Option<Arc<dyn Mirror>>,
    ) -> Self {
        ListingService {
            storage,
            max_page,
            mirror,
        }
    }

    /// Tags of the first of `repos` that exists, in byte order ("ASCIIbetical", as Go's
    /// `sort.Strings`): the `n` after `last`. Without `n` a page holds up to the
    /// configured maximum.
    /// Tags in byte order ("ASCIIbetical", as Go's `sort.Strings`), the `n` after `last`:
    /// the upstream's for a mirrored name when it answers, else those of the first local
    /// repository of `lookup` that exists. Without `n` a page holds up to the configured
    /// maximum.
    pub async fn tags(
        &self,
        lookup: &Lookup,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page<String>> {
        let n = self.page_size(n);
        if let (Some(mirror), Some(route)) = (&self.mirror, &lookup.mirror) {
            if let Some(page) = mirror.tags(route, n, last).await? {
                return Ok(page);
            }
        }
        for repo in &lookup.local {
            if let Some((entries, more)) = self.storage.list_tags(repo, last, n).await? {
                let next_after = if more { entries.last().cloned() } else { None };
                return Ok(Page {
                    entries,
                    next_after,
                });
            }
        }
        Err(ServiceError::name_unknown(lookup.name()))
    }

    /// The repositories `visible` lets through, sorted: the `n` after `last`. Reads the
    /// store's sorted list a page at a time, so a catalog of thousands of repositories
    /// is not listed whole for one page.
    pub async fn catalog(
        &self,
        n: Option<usize>,
        last: Option<&str>,
        visible: impl Fn(&str) -> bool,
    ) -> Result<Page<String>> {
        let n = self.page_size(n);
        let mut entries = Vec::new();
        let mut after = last.map(str::to_string);
        loop {
            let want = (n + 1).max(100);
            let (repos, more) = self
                .storage
                .list_repositories_after(after.as_deref(), want)
                .await?;
            after = repos.last().cloned().or(after);
            entries.extend(repos.into_iter().filter(|r| visible(r)));
            if entries.len() > n || !more {
                break;
            }
        }
        Ok(paginate(entries, |r| r.as_str(), None, n))
    }

    fn page_size(&self, n: Option<usize>) -> usize {
        n.unwrap_or(self.max_page).min(self.max_page)
    }
}
