//! The extension point for the pull-through mirror.
//!
//! The registry answers from local content first. For a repository that mirrors an
//! upstream registry it asks a [`Mirror`] (implemented by `sealer-pull-proxy`) only when
//! something is missing or a tag is due for revalidation. The mirror stores what it
//! fetches through [`crate::storage::Storage`], so it is served locally afterwards.

use async_trait::async_trait;

use super::error::Result;
use super::{Gate, Page};
use crate::oci::{Digest, Reference, RepoName, Tag};
use crate::storage::{ByteStream, ReferrerRecord};

/// Where a request for a mirrored name goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorRoute {
    /// The upstream registry host as clients name it (`docker.io`, `quay.io`).
    pub upstream: String,
    /// The repository at the upstream (`library/nginx`).
    pub remote: String,
    /// The local repository holding the cache (`docker.io/library/nginx`).
    pub local: RepoName,
}

/// A blob being served from upstream while it is cached.
pub struct MirroredBlob {
    pub size: u64,
    pub body: ByteStream,
}

#[async_trait]
pub trait Mirror: Send + Sync + 'static {
    /// The services' commit gate ([`Gate`]): a mirror holds it shared while it makes
    /// fetched content visible (a blob committed and linked, a manifest stored), as a push
    /// does, so garbage collection never sees half of a fill.
    fn share_gate(&self, _gate: Gate) {}

    /// The route for a read of `name` (with containerd's `?ns=`, if any); `None` when the
    /// name is not mirrored.
    fn route(&self, name: &RepoName, ns: Option<&str>) -> Option<MirrorRoute>;

    /// Whether a push to `name` (with `ns`) is refused because it names a mirrored
    /// registry.
    fn refuses_push(&self, name: &RepoName, ns: Option<&str>) -> bool;

    /// Records that cached content of `route` was served from the store (`kind`:
    /// `manifest` or `blob`).
    fn hit(&self, route: &MirrorRoute, kind: &'static str);

    /// Whether the cached `tag` may be served without asking upstream.
    fn tag_is_fresh(&self, route: &MirrorRoute, tag: &Tag) -> bool;

    /// Asks upstream what `tag` points to now; when it changed, fetches and stores the new
    /// manifest and moves the tag. Returns the digest to serve; `current` when upstream
    /// cannot be reached.
    async fn revalidate_tag(
        &self,
        route: &MirrorRoute,
        tag: &Tag,
        current: &Digest,
    ) -> Result<Digest>;

    /// Fetches a manifest missing locally and stores it (and the tag, for a tag
    /// reference). `None` when upstream does not have it or cannot be reached.
    async fn fetch_manifest(
        &self,
        route: &MirrorRoute,
        reference: &Reference,
    ) -> Result<Option<Digest>>;

    /// Streams a blob missing locally from upstream while it is cached; concurrent
    /// requests for one blob share one upstream fetch. `None` when upstream does not have
    /// it or cannot be reached.
    async fn fetch_blob(
        &self,
        route: &MirrorRoute,
        digest: &Digest,
    ) -> Result<Option<MirroredBlob>>;

    /// The size of a blob missing locally, from upstream, without fetching it.
    async fn stat_blob(&self, route: &MirrorRoute, digest: &Digest) -> Result<Option<u64>>;

    /// The upstream's tags; `None` when upstream cannot answer (the local list is used).
    async fn tags(
        &self,
        route: &MirrorRoute,
        n: usize,
        last: Option<&str>,
    ) -> Result<Option<Page<String>>>;

    /// The upstream's referrers of `subject`; `None` when upstream cannot answer.
    async fn referrers(
        &self,
        route: &MirrorRoute,
        subject: &Digest,
    ) -> Result<Option<Vec<ReferrerRecord>>>;

    /// Adds the mirror's metrics to the registry's.
    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry);
}
