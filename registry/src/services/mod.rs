//! What the registry does, independent of HTTP: each service takes validated inputs,
//! applies the spec's rules and talks to [`Storage`].

pub mod blobs;
pub mod error;
pub mod hashing;
pub mod listing;
pub mod manifests;
pub mod mirror;
pub mod namespace;
pub mod quota;
pub mod referrers;
pub mod uploads;

use std::sync::Arc;
use std::time::Duration;

use self::mirror::{Mirror, MirrorRoute};
use crate::oci::RepoName;
use crate::storage::Storage;

/// Behaviour switches shared by the services (see `docs/configuration.md`).
#[derive(Debug, Clone)]
pub struct Options {
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: usize,
    /// Whether DELETE of manifests, tags and blobs is allowed.
    pub delete_enabled: bool,
    /// Reject an index whose child manifests are not all present. Off by default so
    /// sparse indexes (a subset of platforms) can be pushed.
    pub strict_indexes: bool,
    /// Most entries in one page of tags, `_catalog` or referrers.
    pub max_page_entries: usize,
    /// Upload sessions untouched for this long are removed.
    pub upload_expiry: Duration,
    /// Largest blob an upload may grow to, in bytes.
    pub max_upload_bytes: Option<u64>,
    /// Refuse every push and delete (maintenance, a replica).
    pub read_only: bool,
    /// Most bytes of blobs, manifests and open uploads one repository may hold.
    pub repo_quota: Option<u64>,
    /// Most open upload sessions per repository and per user.
    pub sessions: quota::SessionLimits,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_manifest_bytes: 4 * 1024 * 1024,
            delete_enabled: true,
            strict_indexes: false,
            max_page_entries: 10_000,
            upload_expiry: Duration::from_secs(24 * 3600),
            max_upload_bytes: None,
            read_only: false,
            repo_quota: None,
            sessions: quota::SessionLimits::default(),
        }
    }
}

/// Held shared by every write that makes content visible (an upload's commit, a mount, a
/// manifest push) and exclusively by garbage collection, so a collection never sees half
/// of a push. Reads never take it.
pub type Gate = Arc<tokio::sync::RwLock<()>>;

/// All services over one store.
pub struct Registry {
    pub blobs: blobs::BlobService,
    pub uploads: uploads::UploadService,
    pub manifests: manifests::ManifestService,
    pub listing: listing::ListingService,
    pub referrers: referrers::ReferrerService,
    pub options: Options,
    pub mirror: Option<Arc<dyn Mirror>>,
    pub gate: Gate,
    pub quotas: Arc<quota::Quotas>,
}

impl Registry {
    pub fn new(
        storage: Arc<dyn Storage>,
        options: Options,
        mirror: Option<Arc<dyn Mirror>>,
    ) -> Registry {
        let gate = Gate::default();
        if let Some(m) = &mirror {
            m.share_gate(gate.clone());
        }
        let quotas = Arc::new(quota::Quotas::new(
            storage.clone(),
            options.repo_quota,
            options.sessions,
        ));
        Registry {
            blobs: blobs::BlobService::new(
                storage.clone(),
                options.clone(),
                mirror.clone(),
                gate.clone(),
                quotas.clone(),
            ),
            uploads: uploads::UploadService::new(
                storage.clone(),
                &options,
                gate.clone(),
                quotas.clone(),
            ),
            manifests: manifests::ManifestService::new(
                storage.clone(),
                options.clone(),
                mirror.clone(),
                gate.clone(),
                quotas.clone(),
            ),
            listing: listing::ListingService::new(
                storage.clone(),
                options.max_page_entries,
                mirror.clone(),
            ),
            referrers: referrers::ReferrerService::new(
                storage,
                options.max_page_entries,
                mirror.clone(),
            ),
            options,
            mirror,
            gate,
            quotas,
        }
    }

    /// Where a read of `name` (with containerd's `?ns=`) may be answered from.
    ///
    /// `N?ns=H` for a mirrored `H` is a pull of `H/N` and nothing else: the bare local
    /// `N` is not a candidate, so a name pushed here cannot shadow the upstream's image.
    /// For an `H` that is not mirrored, `H/N` then `N` (images pushed under short names);
    /// a bare `N` (dockerd's `registry-mirrors`) keeps `N` first, since a direct pull of
    /// `N` looks the same.
    pub fn lookup(&self, name: &RepoName, ns: Option<&str>) -> Lookup {
        let mirror = self.mirror.as_ref().and_then(|m| m.route(name, ns));
        let local = match (&mirror, ns) {
            (Some(route), Some(_)) => vec![route.local.clone()],
            _ => namespace::candidates(name, ns),
        };
        Lookup {
            requested: name.clone(),
            local,
            mirror,
        }
    }

    /// Whether a push to `name` is refused because it names a mirrored registry.
    pub fn refuses_push(&self, name: &RepoName, ns: Option<&str>) -> bool {
        self.mirror
            .as_ref()
            .is_some_and(|m| m.refuses_push(name, ns))
    }
}

/// Where a read is answered from: local repositories in order (docs/design.md, contract 3), then
/// the upstream of a mirrored name.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The name in the request's path.
    pub requested: RepoName,
    pub local: Vec<RepoName>,
    pub mirror: Option<MirrorRoute>,
}

impl Lookup {
    /// Only the given local repository, no mirror (for tests and internal use).
    pub fn local(repo: RepoName) -> Lookup {
        Lookup {
            requested: repo.clone(),
            local: vec![repo],
            mirror: None,
        }
    }

    /// The name errors report.
    pub fn name(&self) -> &RepoName {
        &self.requested
    }
}

/// One page of a sorted listing and whether more entries follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub entries: Vec<T>,
    /// The key to continue after, when the listing did not fit in this page.
    pub next_after: Option<String>,
}

/// Takes the page of at most `n` entries after `last` from `sorted`, keyed by `key`.
pub(crate) fn paginate<T>(
    sorted: Vec<T>,
    key: impl Fn(&T) -> &str,
    last: Option<&str>,
    n: usize,
) -> Page<T> {
    let start = match last {
        Some(last) => sorted.partition_point(|e| key(e) <= last),
        None => 0,
    };
    let total = sorted.len();
    let end = start.saturating_add(n).min(total);
    let mut entries: Vec<T> = sorted.into_iter().skip(start).take(end - start).collect();
    let next_after = if end < total && !entries.is_empty() {
        entries.last().map(|e| key(e).to_string())
    } else {
        None
    };
    entries.shrink_to_fit();
    Page {
        entries,
        next_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(v: &[&str], last: Option<&str>, n: usize) -> (Vec<String>, Option<String>) {
        let p = paginate(
            v.iter().map(|s| s.to_string()).collect(),
            |s| s.as_str(),
            last,
            n,
        );
        (p.entries, p.next_after)
    }

    #[test]
    fn pages_follow_last_exclusively() {
        let all = ["a", "b", "c", "d"];
        assert_eq!(
            page(&all, None, 2),
            (vec!["a".into(), "b".into()], Some("b".into()))
        );
        assert_eq!(
            page(&all, Some("b"), 2),
            (vec!["c".into(), "d".into()], None)
        );
        assert_eq!(
            page(&all, Some("bb"), 10),
            (vec!["c".into(), "d".into()], None)
        );
        assert_eq!(page(&all, Some("z"), 10), (vec![], None));
        assert_eq!(page(&all, None, 0), (vec![], None));
    }
}
