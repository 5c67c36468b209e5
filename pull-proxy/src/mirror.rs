//! The pull-through mirror: the registry's [`Mirror`], answering local misses from the
//! configured upstreams and caching what it fetches in the registry's store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;
use sealer_registry::oci::manifest;
use sealer_registry::oci::{Digest, Reference, RepoName, Tag};
use sealer_registry::services::error::Result;
use sealer_registry::services::manifests;
use sealer_registry::services::mirror::{Mirror, MirrorRoute, MirroredBlob};
use sealer_registry::services::{Gate, Page};
use sealer_registry::storage::{ReferrerRecord, Storage};

use crate::clients::Clients;
use crate::config::MirrorConfig;
use crate::fill::{Commits, Fills};
use crate::metrics::MirrorMetrics;
use crate::routing::Router;
use sealer_client::{RemoteManifest, UpstreamClient};

/// How long a tag counts as validated after upstream could not be asked: misses and
/// revalidations then do not wait on a down upstream for every pull.
const RETRY_DOWN_AFTER: Duration = Duration::from_secs(30);
/// Most declared blob sizes remembered.
const MAX_DECLARED: usize = 100_000;

/// A turn to fetch one manifest: whoever holds it fetches, the others wait.
type Turn = Arc<tokio::sync::Mutex<()>>;

pub struct PullThrough {
    config: MirrorConfig,
    router: Router,
    storage: Arc<dyn Storage>,
    clients: Clients,
    fills: Arc<Fills>,
    /// One turn per manifest being fetched: concurrent misses of one manifest wait for
    /// the first, then find it stored.
    manifest_misses: Mutex<HashMap<(RepoName, String), Turn>>,
    /// Blob sizes as the manifests fetched from upstream declare them, so a fill takes
    /// exactly that many bytes (bounded: cleared when full).
    declared: DashMap<(RepoName, Digest), u64>,
    /// When each cached tag was last checked upstream.
    validated: DashMap<(RepoName, String), Instant>,
    metrics: Arc<MirrorMetrics>,
    commits: Arc<Commits>,
}

impl PullThrough {
    pub fn new(config: MirrorConfig, storage: Arc<dyn Storage>) -> anyhow::Result<PullThrough> {
        let metrics = Arc::new(MirrorMetrics::default());
        let commits = Arc::new(Commits::default());
        let fills = Fills::new(
            storage.clone(),
            metrics.clone(),
            config.abandon_after,
            commits.clone(),
        );
        Ok(PullThrough {
            router: Router::new(&config),
            storage: storage.clone(),
            clients: Clients::new(&config, metrics.clone())?,
            fills: Arc::new(fills),
            manifest_misses: Mutex::default(),
            declared: DashMap::new(),
            validated: DashMap::new(),
            metrics,
            commits,
            config,
        })
    }

    /// The client to use now, or `None` when offline or the upstream is known to be down.
    fn usable_client(&self, route: &MirrorRoute) -> Option<Arc<UpstreamClient>> {
        if self.config.offline {
            return None;
        }
        match self.clients.get(&route.upstream) {
            Ok(c) if !c.is_down() => Some(c),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "no upstream client");
                None
            }
        }
    }

    /// The client to fill a miss of `what` with; `None`, logged, when offline or down.
    fn client_for_miss(&self, route: &MirrorRoute, what: &str) -> Option<Arc<UpstreamClient>> {
        let client = self.usable_client(route);
        if client.is_none() {
            let why = if self.config.offline {
                "the mirror is offline"
            } else {
                "the upstream is down"
            };
            self.log_miss(route, what, why);
        }
        client
    }

    fn mark_validated(&self, route: &MirrorRoute, tag: &str, at: Instant) {
        self.validated
            .insert((route.local.clone(), tag.to_string()), at);
    }

    /// Stores a manifest fetched from upstream exactly as received, with its referrer
    /// entry; its blobs and children are fetched when they are asked for.
    async fn store(&self, route: &MirrorRoute, m: &RemoteManifest) -> Result<()> {
        let parsed = manifest::parse(Some(&m.media_type), &m.body).ok();
        if let Some(parsed) = &parsed {
            if self.declared.len() + parsed.blobs.len() > MAX_DECLARED {
                self.declared.clear();
            }
            for blob in &parsed.blobs {
                self.declared
                    .insert((route.local.clone(), blob.digest.clone()), blob.size);
            }
        }
        let (repo, body) = (&route.local, m.body.clone());
        let _commit = self.commits.hold().await;
        manifests::ingest(
            &*self.storage,
            repo,
            &m.digest,
            &m.media_type,
            body,
            parsed.as_ref(),
        )
        .await?;
        Ok(())
    }

    /// Fetches a manifest from upstream and stores it (and the tag it was asked by).
    async fn fetch_manifest_now(
        &self,
        route: &MirrorRoute,
        reference: &Reference,
    ) -> Result<Option<Digest>> {
        let what = format!("manifest {reference}");
        let Some(client) = self.client_for_miss(route, &what) else {
            return Ok(None);
        };
        let m = match client
            .get_manifest(&route.remote, &reference.to_string())
            .await
        {
            Ok(Some(m)) => m,
            Ok(None) => {
                self.log_miss(route, &what, "upstream does not have it");
                return Ok(None);
            }
            Err(e) => {
                self.log_miss(route, &what, &format!("upstream failed ({e})"));
                return Ok(None);
            }
        };
        self.metrics.miss(&route.upstream, "manifest");
        self.store(route, &m).await?;
        if let Reference::Tag(tag) = reference {
            self.storage.set_tag(&route.local, tag, &m.digest).await?;
            self.mark_validated(route, tag.as_str(), Instant::now());
        }
        Ok(Some(m.digest))
    }

    /// The digest of `reference` if the store has it under the route's repository.
    async fn stored_manifest(
        &self,
        route: &MirrorRoute,
        reference: &Reference,
    ) -> Result<Option<Digest>> {
        let found = match reference {
            Reference::Digest(d) => self.storage.get_manifest(&route.local, d).await?,
            Reference::Tag(t) => self.storage.get_tagged_manifest(&route.local, t).await?,
        };
        Ok(found.map(|m| m.digest))
    }

    fn log_miss(&self, route: &MirrorRoute, what: &str, why: &str) {
        tracing::warn!(
            upstream = %route.upstream,
            repository = %route.remote,
            what,
            "not in the store and {why}: answering 404"
        );
    }
}

#[async_trait]
impl Mirror for PullThrough {
    fn share_gate(&self, gate: Gate) {
        self.commits.share(gate);
    }

    fn route(&self, name: &RepoName, ns: Option<&str>) -> Option<MirrorRoute> {
        self.router.route(name, ns)
    }

    fn refuses_push(&self, name: &RepoName, ns: Option<&str>) -> bool {
        self.router.refuses_push(name, ns)
    }

    fn hit(&self, route: &MirrorRoute, kind: &'static str) {
        self.metrics.hit(&route.upstream, kind);
    }

    fn tag_is_fresh(&self, route: &MirrorRoute, tag: &Tag) -> bool {
        if self.config.offline {
            return true;
        }
        self.validated
            .get(&(route.local.clone(), tag.as_str().to_string()))
            .is_some_and(|at| at.elapsed() < self.config.tag_ttl)
    }

    async fn revalidate_tag(
        &self,
        route: &MirrorRoute,
        tag: &Tag,
        current: &Digest,
    ) -> Result<Digest> {
        let Some(client) = self.usable_client(route) else {
            return Ok(current.clone());
        };
        let checked_at = Instant::now();
        match client.head_manifest(&route.remote, tag.as_str()).await {
            Ok(Some(latest)) if &latest == current => {
                self.mark_validated(route, tag.as_str(), checked_at);
                Ok(latest)
            }
            Ok(Some(latest)) => {
                match client
                    .get_manifest(&route.remote, &latest.to_string())
                    .await
                {
                    Ok(Some(m)) => {
                        self.metrics.miss(&route.upstream, "manifest");
                        self.store(route, &m).await?;
                        self.storage.set_tag(&route.local, tag, &m.digest).await?;
                        self.mark_validated(route, tag.as_str(), checked_at);
                        tracing::info!(upstream = %route.upstream, repository = %route.remote, %tag, from = %current, to = %m.digest, "tag moved upstream");
                        Ok(m.digest)
                    }
                    _ => Ok(current.clone()),
                }
            }
            // Gone upstream: keep serving what was cached, like an upstream outage.
            Ok(None) => {
                self.mark_validated(route, tag.as_str(), checked_at);
                Ok(current.clone())
            }
            Err(e) => {
                tracing::warn!(error = %e, %tag, "cannot revalidate a cached tag; serving the cached one");
                // Count it as checked so that it is due again in RETRY_DOWN_AFTER (or the
                // TTL, if shorter), not on every pull.
                let ttl = self.config.tag_ttl;
                let due_in = RETRY_DOWN_AFTER.min(ttl);
                let as_if = checked_at.checked_sub(ttl - due_in).unwrap_or(checked_at);
                self.mark_validated(route, tag.as_str(), as_if);
                Ok(current.clone())
            }
        }
    }

    async fn fetch_manifest(
        &self,
        route: &MirrorRoute,
        reference: &Reference,
    ) -> Result<Option<Digest>> {
        let key = (route.local.clone(), reference.to_string());
        let turn = self
            .manifest_misses
            .lock()
            .expect("manifest misses lock")
            .entry(key.clone())
            .or_default()
            .clone();
        let result = {
            let _turn = turn.lock().await;
            // A miss that waited for another finds what that one stored.
            match self.stored_manifest(route, reference).await? {
                Some(digest) => Ok(Some(digest)),
                None => self.fetch_manifest_now(route, reference).await,
            }
        };
        let mut misses = self.manifest_misses.lock().expect("manifest misses lock");
        // Only the map and this call hold it: nobody waits.
        if Arc::strong_count(&turn) <= 2 {
            misses.remove(&key);
        }
        result
    }

    async fn fetch_blob(
        &self,
        route: &MirrorRoute,
        digest: &Digest,
    ) -> Result<Option<MirroredBlob>> {
        let what = format!("blob {digest}");
        // A fill already under way answers even if the upstream has gone since it began
        // (the blob is still being verified and published here).
        if let Ok(Some(blob)) = self.fills.join(route, digest).await {
            return Ok(Some(blob));
        }
        let Some(client) = self.client_for_miss(route, &what) else {
            return Ok(None);
        };
        self.metrics.miss(&route.upstream, "blob");
        let declared = self
            .declared
            .get(&(route.local.clone(), digest.clone()))
            .map(|d| *d);
        match self.fills.fetch(client, route, digest, declared).await {
            Ok(Some(blob)) => Ok(Some(blob)),
            Ok(None) => {
                self.log_miss(route, &what, "upstream does not have it");
                Ok(None)
            }
            Err(e) => {
                self.log_miss(route, &what, &format!("fetching it failed ({e})"));
                Ok(None)
            }
        }
    }

    async fn stat_blob(&self, route: &MirrorRoute, digest: &Digest) -> Result<Option<u64>> {
        let Some(client) = self.usable_client(route) else {
            return Ok(None);
        };
        Ok(client
            .head_blob(&route.remote, digest)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, %digest, "blob HEAD upstream failed");
                None
            }))
    }

    async fn tags(
        &self,
        route: &MirrorRoute,
        n: usize,
        last: Option<&str>,
    ) -> Result<Option<Page<String>>> {
        let Some(client) = self.usable_client(route) else {
            return Ok(None);
        };
        match client.tags(&route.remote, n, last).await {
            Ok(Some((mut entries, more))) => {
                // Distribution 2.8 ignores `n` and `last`: page what it sends ourselves.
                entries.sort();
                if let Some(last) = last {
                    entries.retain(|t| t.as_str() > last);
                }
                let more = more || entries.len() > n;
                entries.truncate(n);
                let next_after = if more { entries.last().cloned() } else { None };
                Ok(Some(Page {
                    entries,
                    next_after,
                }))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::warn!(error = %e, repository = %route.remote, "tag list upstream failed; answering from the store");
                Ok(None)
            }
        }
    }

    async fn referrers(
        &self,
        route: &MirrorRoute,
        subject: &Digest,
    ) -> Result<Option<Vec<ReferrerRecord>>> {
        let Some(client) = self.usable_client(route) else {
            return Ok(None);
        };
        Ok(client.referrers(&route.remote, subject).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, %subject, "referrers upstream failed; answering from the store");
            None
        }))
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.metrics.register(registry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use sealer_registry::services::{Options, Registry};
    use sealer_registry::storage::fs::FsStorage;

    #[tokio::test]
    async fn fills_commit_under_the_services_gate_so_a_collection_never_sees_half_of_one() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(FsStorage::open(dir.path()).unwrap());
        let config = MirrorConfig {
            offline: true,
            tag_ttl: Duration::from_secs(300),
            allow_push: false,
            upstreams: Vec::new(),
            abandon_after: Duration::from_secs(30),
        };
        let mirror = Arc::new(PullThrough::new(config, storage.clone()).unwrap());
        let registry = Registry::new(storage, Options::default(), Some(mirror.clone()));
        let collecting = registry.gate.write().await;
        assert!(
            mirror.commits.hold().now_or_never().is_none(),
            "a fill waits while garbage collection holds the gate"
        );
        drop(collecting);
        let held = mirror.commits.hold().now_or_never().flatten();
        assert!(
            held.is_some(),
            "and commits, holding it shared, once it is free"
        );
    }
}
