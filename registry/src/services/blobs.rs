//! Reading, mounting and deleting blobs of a repository.

use std::sync::Arc;

use super::error::{Result, ServiceError};
use super::mirror::{Mirror, MirroredBlob};
use super::quota::Quotas;
use super::{Gate, Lookup, Options};
use crate::oci::{Digest, RepoName};
use crate::storage::{ByteRange, ByteStream, Storage};

pub struct BlobService {
    storage: Arc<dyn Storage>,
    options: Options,
    mirror: Option<Arc<dyn Mirror>>,
    gate: Gate,
    quotas: Arc<Quotas>,
}

/// Where a requested blob comes from.
pub enum Found {
    /// In the store, `size` bytes.
    Local(u64),
    /// Streaming from upstream while it is cached.
    Upstream(MirroredBlob),
}

impl BlobService {
    pub fn new(
        storage: Arc<dyn Storage>,
        options: Options,
        mirror: Option<Arc<dyn Mirror>>,
        gate: Gate,
        quotas: Arc<Quotas>,
    ) -> Self {
        BlobService {
            storage,
            options,
            mirror,
            gate,
            quotas,
        }
    }

    /// The first local repository of `lookup` that links the blob, and its size.
    async fn local_size<'a>(
        &self,
        lookup: &'a Lookup,
        digest: &Digest,
    ) -> Result<Option<(&'a RepoName, u64)>> {
        for repo in &lookup.local {
            if let Some(size) = self.storage.repo_blob_size(repo, digest).await? {
                if let (Some(mirror), Some(route)) = (&self.mirror, &lookup.mirror) {
                    if &route.local == repo {
                        mirror.hit(route, "blob");
                    }
                }
                return Ok(Some((repo, size)));
            }
        }
        Ok(None)
    }

    /// For a `GET`: the blob from the store, or from upstream for a mirrored name.
    pub async fn find(&self, lookup: &Lookup, digest: &Digest) -> Result<Found> {
        if let Some((_, size)) = self.local_size(lookup, digest).await? {
            return Ok(Found::Local(size));
        }
        if let (Some(mirror), Some(route)) = (&self.mirror, &lookup.mirror) {
            if let Some(blob) = mirror.fetch_blob(route, digest).await? {
                return Ok(Found::Upstream(blob));
            }
        }
        Err(ServiceError::blob_unknown(digest))
    }

    /// For a `HEAD`: the blob's size, from upstream without fetching it for a mirrored
    /// name.
    pub async fn stat(&self, lookup: &Lookup, digest: &Digest) -> Result<u64> {
        if let Some((repo, size)) = self.local_size(lookup, digest).await? {
            // Pushers check a blob this way before skipping its upload: restart its grace
            // period (of the link where it was found) so garbage collection leaves it
            // until their manifest arrives.
            if let Err(e) = self.storage.touch_link(repo, digest).await {
                tracing::debug!(error = %e, "touching a blob link failed");
            }
            return Ok(size);
        }
        if let (Some(mirror), Some(route)) = (&self.mirror, &lookup.mirror) {
            if let Some(size) = mirror.stat_blob(route, digest).await? {
                return Ok(size);
            }
        }
        Err(ServiceError::blob_unknown(digest))
    }

    /// Where the client may fetch a stored blob directly, when the store redirects reads.
    pub async fn redirect(&self, digest: &Digest) -> Result<Option<String>> {
        Ok(self.storage.blob_url(digest).await?)
    }

    /// Streams part of a stored blob whose size the caller got from [`BlobService::find`].
    pub async fn read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<ByteStream> {
        self.storage
            .read_blob(digest, range)
            .await?
            .ok_or_else(|| ServiceError::blob_unknown(digest))
    }

    /// Links `digest` from `from` into `repo`. Only a repository that links the blob can
    /// lend it: a caller naming any other source gets `false` and a normal upload.
    pub async fn mount(&self, repo: &RepoName, digest: &Digest, from: &RepoName) -> Result<bool> {
        let _commit = self.gate.read().await;
        let Some(size) = self.storage.repo_blob_size(from, digest).await? else {
            return Ok(false);
        };
        let _repo = self.quotas.lock(repo).await;
        if self.storage.repo_blob_size(repo, digest).await?.is_none() {
            self.quotas.check(repo, size, None).await?;
        }
        self.storage.link_blob(repo, digest).await?;
        Ok(true)
    }

    /// Removes the blob from `repo`. The content itself stays for other repositories.
    pub async fn delete(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        if !self.options.delete_enabled {
            return Err(ServiceError::unsupported(
                "deletes are disabled on this registry",
            ));
        }
        if self.storage.unlink_blob(repo, digest).await? {
            Ok(())
        } else {
            Err(ServiceError::blob_unknown(digest))
        }
    }
}
