//! Garbage collection while the registry serves.
//!
//! Per repository, what stays is every tagged manifest, every untagged one still within
//! the retention, every manifest or layer link younger than the grace period, and all
//! they reach: an index's manifests, a manifest's config and layers, and the referrers
//! (signatures, SBOMs) of anything kept. Everything else of the repository goes. Then
//! every blob no repository links any more, and older than the grace period, goes.
//!
//! Safety: the collection holds the [`Gate`] exclusively, so no upload commit, mount or
//! manifest push lands half-way through it; reads never wait. The grace period covers
//! pushes in flight: their blobs are linked minutes before the manifest that names them
//! arrives, and a blob a client checked (`HEAD`) before skipping its upload counts from
//! that check.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::oci::graph::Walk;
use crate::oci::{Digest, RepoName, Tag};
use crate::services::Gate;
use crate::services::manifests;
use crate::storage::{LinkEntry, Maintenance, RepoGraph};

/// What may be collected.
#[derive(Debug, Clone, Copy)]
pub struct GcPolicy {
    /// Nothing made or used more recently is collected.
    pub grace: Duration,
    /// Untagged manifests older than this are collected; `None` keeps them.
    pub untagged_after: Option<Duration>,
}

impl Default for GcPolicy {
    fn default() -> Self {
        GcPolicy {
            grace: Duration::from_secs(3600),
            untagged_after: None,
        }
    }
}

/// The times a collection compares with: content changed since `fresh` is kept (the
/// grace period); untagged manifests changed since `untagged` are kept too.
struct Cutoffs {
    fresh: SystemTime,
    untagged: Option<SystemTime>,
}

/// What a collection removed (or, dry, would remove).
#[derive(Debug, Default, Clone, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub repositories: usize,
    /// Untagged manifests removed from their repository.
    pub manifests: usize,
    /// Layer links removed from their repository.
    pub layer_links: usize,
    /// Blob files removed from the store.
    pub blobs: usize,
    pub bytes: u64,
    pub seconds: f64,
}

pub struct Collector {
    store: Arc<dyn Maintenance>,
    gate: Gate,
    policy: GcPolicy,
    /// The repositories whose unreachable links are removed; `None`: all of them.
    /// Other repositories' links are all kept (and keep their blobs).
    scope: Option<Vec<RepoName>>,
}

type Result<T> = std::result::Result<T, crate::storage::StorageError>;

impl Collector {
    pub fn new(store: Arc<dyn Maintenance>, gate: Gate, policy: GcPolicy) -> Collector {
        Collector {
            store,
            gate,
            policy,
            scope: None,
        }
    }

    /// Removes unreachable links only in `repos` (`sealer rmi`: the repository an
    /// image left), and then the blobs no repository links.
    pub fn only(mut self, repos: Vec<RepoName>) -> Collector {
        self.scope = Some(repos);
        self
    }

    /// One collection. A dry run removes nothing and does not hold up pushes.
    pub async fn run(&self, dry_run: bool) -> Result<GcReport> {
        let begun = Instant::now();
        let _exclusive = if dry_run {
            None
        } else {
            Some(self.gate.write().await)
        };
        let now = SystemTime::now();
        let cut = Cutoffs {
            fresh: now
                .checked_sub(self.policy.grace)
                .unwrap_or(SystemTime::UNIX_EPOCH),
            untagged: self
                .policy
                .untagged_after
                .map(|d| now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH)),
        };
        let mut report = GcReport {
            dry_run,
            ..GcReport::default()
        };
        // Every digest some repository still links after this collection.
        let mut linked: HashSet<Digest> = HashSet::new();
        for name in self.store.list_repositories_with_links().await? {
            let Ok(repo) = RepoName::parse(&name) else {
                continue;
            };
            let links = self.store.link_entries(&repo).await?;
            if self.scope.as_ref().is_some_and(|s| !s.contains(&repo)) {
                linked.extend(links.into_iter().map(|l| l.digest));
                continue;
            }
            report.repositories += 1;
            let kept = self
                .sweep_repository(&repo, &links, &cut, &mut report)
                .await?;
            linked.extend(kept);
        }
        self.sweep_blobs(&linked, cut.fresh, &mut report).await?;
        report.seconds = begun.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Removes `repo`'s links that nothing it keeps reaches (none in a dry run); returns
    /// the digests it still links.
    async fn sweep_repository(
        &self,
        repo: &RepoName,
        links: &[LinkEntry],
        cut: &Cutoffs,
        report: &mut GcReport,
    ) -> Result<Vec<Digest>> {
        let mut roots = self.tagged(repo).await?;
        roots.extend(
            links
                .iter()
                .filter(|l| l.manifest)
                .filter(|l| l.modified >= cut.fresh || cut.untagged.is_none_or(|c| l.modified >= c))
                .map(|l| l.digest.clone()),
        );
        let reached = self.reachable(repo, roots).await?;
        let mut kept = Vec::new();
        for link in links {
            if reached.contains(&link.digest) || (!link.manifest && link.modified >= cut.fresh) {
                kept.push(link.digest.clone());
                continue;
            }
            if link.manifest {
                report.manifests += 1;
                if !report.dry_run {
                    self.remove_manifest(repo, &link.digest).await?;
                    audit("delete", repo, &link.digest);
                }
            } else {
                report.layer_links += 1;
                if !report.dry_run {
                    self.store.unlink_blob(repo, &link.digest).await?;
                    audit("delete-blob", repo, &link.digest);
                }
            }
        }
        Ok(kept)
    }

    /// Removes the blobs no repository links that have not changed since `fresh`.
    async fn sweep_blobs(
        &self,
        linked: &HashSet<Digest>,
        fresh: SystemTime,
        report: &mut GcReport,
    ) -> Result<()> {
        for blob in self.store.blob_files().await? {
            if linked.contains(&blob.digest) || blob.modified >= fresh {
                continue;
            }
            let gone = report.dry_run
                || self
                    .store
                    .remove_blob_older_than(&blob.digest, fresh)
                    .await?;
            if gone {
                report.blobs += 1;
                report.bytes += blob.size;
            }
        }
        Ok(())
    }

    async fn tagged(&self, repo: &RepoName) -> Result<Vec<Digest>> {
        let Some((tags, _)) = self.store.list_tags(repo, None, usize::MAX).await? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(tags.len());
        for tag in tags {
            let Ok(tag) = Tag::parse(&tag) else { continue };
            if let Some(d) = self.store.resolve_tag(repo, &tag).await? {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// `roots` and everything they reach in `repo`.
    /// Everything `roots` reach in `repo`, referrers and non-distributable layers
    /// included. A manifest that does not
    /// parse still keeps itself; what it names is unknown, so nothing more.
    async fn reachable(&self, repo: &RepoName, roots: Vec<Digest>) -> Result<HashSet<Digest>> {
        let mut source = RepoGraph {
            store: self.store.as_ref(),
            repo,
        };
        let graph = Walk::all()
            .with_referrers()
            .including_foreign()
            .lenient()
            .run(&mut source, roots)
            .await?;
        let manifests = graph.manifests.into_iter().map(|m| m.digest);
        Ok(manifests.chain(graph.blobs.into_keys()).collect())
    }

    async fn remove_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        match self.store.get_manifest(repo, digest).await? {
            Some(stored) => manifests::remove(self.store.as_ref(), repo, &stored).await?,
            // A link whose manifest is unreadable: the link goes all the same.
            None => _ = self.store.delete_manifest(repo, digest).await?,
        }
        Ok(())
    }
}

/// The collection's removals on the `audit` target, as the user `gc`.
fn audit(action: &str, repository: &RepoName, digest: &Digest) {
    crate::observability::audit("gc", None, action, repository, None, Some(digest));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::manifest;
    use crate::storage::fs::FsStorage;
    use crate::storage::{LocalFiles, Storage};
    use bytes::Bytes;
    use serde_json::json;

    fn blob(store: &FsStorage, data: &[u8]) -> Digest {
        let d = Digest::of(crate::oci::Algorithm::Sha256, data);
        let tmp = store.root().join("incoming");
        std::fs::write(&tmp, data).unwrap();
        futures::executor::block_on(store.adopt_blob(tmp, &d)).unwrap();
        d
    }

    fn age(path: std::path::PathBuf, by: Duration) {
        let f = std::fs::File::options().append(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - by).unwrap();
    }

    #[tokio::test]
    async fn keeps_what_tags_reach_and_young_content_and_removes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FsStorage::open(dir.path()).unwrap());
        let repo = RepoName::parse("a/b").unwrap();
        let layout = crate::storage::fs::layout::Layout::new(dir.path());
        let image = |store: &FsStorage, layer: &[u8]| {
            let config = blob(store, br#"{"architecture":"amd64","os":"linux"}"#);
            let layer_d = blob(store, layer);
            let body = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": manifest::media_type::OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 37},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_d.to_string(), "size": layer.len()}],
            }))
            .unwrap();
            (config, layer_d, body)
        };
        let old = Duration::from_secs(7200);
        let (config, tagged_layer, tagged_body) = image(&store, b"tagged layer");
        let (_, untagged_layer, untagged_body) = image(&store, b"untagged layer");
        let stray = blob(&store, b"pushed, never used");
        let young = blob(&store, b"pushed a moment ago");
        for d in [&config, &tagged_layer, &untagged_layer, &stray, &young] {
            store.link_blob(&repo, d).await.unwrap();
        }
        let put = |body: Vec<u8>| {
            let store = store.clone();
            let repo = repo.clone();
            async move {
                let d = Digest::of(crate::oci::Algorithm::Sha256, &body);
                store
                    .put_manifest(
                        &repo,
                        &d,
                        manifest::media_type::OCI_MANIFEST,
                        Bytes::from(body),
                    )
                    .await
                    .unwrap();
                d
            }
        };
        let tagged = put(tagged_body).await;
        let untagged = put(untagged_body).await;
        store
            .set_tag(&repo, &Tag::parse("1").unwrap(), &tagged)
            .await
            .unwrap();
        for d in [
            &config,
            &tagged_layer,
            &untagged_layer,
            &stray,
            &tagged,
            &untagged,
        ] {
            age(layout.blob(d), old);
            age(
                if d == &tagged || d == &untagged {
                    layout.revision(&repo, d)
                } else {
                    layout.layer_link(&repo, d)
                },
                old,
            );
        }
        age(layout.blob(&young), old); // an old blob file, freshly linked

        let policy = |untagged_after| GcPolicy {
            grace: Duration::from_secs(3600),
            untagged_after,
        };
        // Keeping untagged manifests: only the stray layer link and its blob go.
        let gc = Collector::new(store.clone(), Gate::default(), policy(None));
        let dry = gc.run(true).await.unwrap();
        assert_eq!((dry.manifests, dry.layer_links, dry.blobs), (0, 1, 1));
        assert!(
            store.has_blob(&stray).await.unwrap(),
            "a dry run removes nothing"
        );
        let done = gc.run(false).await.unwrap();
        assert_eq!((done.manifests, done.layer_links, done.blobs), (0, 1, 1));
        assert_eq!(done.bytes, b"pushed, never used".len() as u64);
        assert!(!store.has_blob(&stray).await.unwrap());
        assert!(
            store.has_blob(&young).await.unwrap() && store.has_blob(&untagged_layer).await.unwrap()
        );

        // Scoped to another repository (as `sealer rmi` is), this one keeps its links,
        // and with them its blobs.
        let other = RepoName::parse("elsewhere/app").unwrap();
        let gc =
            Collector::new(store.clone(), Gate::default(), policy(Some(old / 2))).only(vec![other]);
        let done = gc.run(false).await.unwrap();
        assert_eq!((done.manifests, done.layer_links, done.blobs), (0, 0, 0));
        assert!(store.has_manifest(&repo, &untagged).await.unwrap());

        // Untagged manifests older than a day... none is; older than an hour: it goes,
        // with the layer only it used.
        let gc = Collector::new(store.clone(), Gate::default(), policy(Some(old / 2)));
        let done = gc.run(false).await.unwrap();
        assert_eq!((done.manifests, done.layer_links), (1, 1));
        assert!(!store.has_manifest(&repo, &untagged).await.unwrap());
        assert!(!store.has_blob(&untagged_layer).await.unwrap());
        assert!(store.has_manifest(&repo, &tagged).await.unwrap());
        for d in [&config, &tagged_layer, &young] {
            assert!(store.has_blob(d).await.unwrap(), "{d} is kept");
            assert!(store.repo_blob_size(&repo, d).await.unwrap().is_some());
        }
        // Nothing left to do.
        let again = gc.run(false).await.unwrap();
        assert_eq!((again.manifests, again.layer_links, again.blobs), (0, 0, 0));
    }
}
