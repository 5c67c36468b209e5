//! Whole-store work on the bucket: the inventory garbage collection and integrity checks
//! read, removals, quarantine, and rebuilding the catalog index from the repositories.

use std::collections::BTreeSet;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};

use super::keys::split_repository;
use super::{S3Storage, digest_at_end, os_err};
use crate::oci::{Digest, RepoName};
use crate::storage::{BlobFile, LinkEntry, Maintenance, Result, Storage};

/// A blob's digest from its key, `…blobs/<alg>/<hh>/<hex>`.
fn blob_digest(key: &str) -> Option<Digest> {
    let mut parts = key.rsplit('/');
    let hex = parts.next()?;
    let _hh = parts.next()?;
    let alg = parts.next()?;
    format!("{alg}:{hex}").parse().ok()
}

impl S3Storage {
    async fn blob_objects(&self) -> Result<Vec<(Digest, ObjectMeta)>> {
        Ok(self
            .list(&self.keys.blobs())
            .await?
            .into_iter()
            .filter_map(|m| Some((blob_digest(m.location.as_ref())?, m)))
            .collect())
    }

    /// A repository's layer links and manifest revisions, with whether each is a manifest.
    async fn links(&self, repo: &RepoName) -> Result<Vec<(Digest, bool, ObjectMeta)>> {
        let mut out = Vec::new();
        for (prefix, manifest) in [
            (self.keys.layers(repo), false),
            (self.keys.revisions(repo), true),
        ] {
            for m in self.list(&prefix).await? {
                if let Some(d) = digest_at_end(m.location.as_ref()) {
                    out.push((d, manifest, m));
                }
            }
        }
        Ok(out)
    }

    /// Writes the catalog index again from the repositories that hold a manifest (and
    /// drops entries of repositories that hold none): after the index was lost, or to
    /// check it. Returns how many repositories it lists.
    pub async fn rebuild_index(&self) -> Result<usize> {
        let mut holding = BTreeSet::new();
        for m in self.list(&self.keys.repositories()).await? {
            let Some(rel) = self.keys.relative(&m.location) else {
                continue;
            };
            if let Some((repo, rest)) = split_repository(rel) {
                if rest.starts_with("_manifests/revisions/") {
                    holding.insert(repo.to_string());
                }
            }
        }
        let listed: BTreeSet<String> = self.list_repositories().await?.into_iter().collect();
        for repo in holding.difference(&listed) {
            self.put(&self.keys.catalog_entry(repo), Bytes::new())
                .await?;
        }
        let stale: Vec<ObjectMeta> = self
            .list(&self.keys.catalog())
            .await?
            .into_iter()
            .filter(|m| {
                self.name_under(&self.keys.catalog(), &m.location)
                    .is_some_and(|n| !holding.contains(n))
            })
            .collect();
        self.delete_all(stale).await?;
        Ok(holding.len())
    }
}

#[async_trait]
impl Maintenance for S3Storage {
    async fn has_blob(&self, digest: &Digest) -> Result<bool> {
        Ok(self.head(&self.keys.blob(digest)).await?.is_some())
    }

    async fn list_blobs(&self) -> Result<Vec<(Digest, u64)>> {
        Ok(self
            .blob_objects()
            .await?
            .into_iter()
            .map(|(d, m)| (d, m.size))
            .collect())
    }

    async fn blob_files(&self) -> Result<Vec<BlobFile>> {
        Ok(self
            .blob_objects()
            .await?
            .into_iter()
            .map(|(digest, m)| BlobFile {
                digest,
                size: m.size,
                modified: SystemTime::from(m.last_modified),
            })
            .collect())
    }

    async fn remove_blob(&self, digest: &Digest) -> Result<bool> {
        self.delete(&self.keys.blob(digest)).await
    }

    async fn remove_blob_older_than(&self, digest: &Digest, cutoff: SystemTime) -> Result<bool> {
        let key = self.keys.blob(digest);
        match self.head(&key).await? {
            Some(m) if SystemTime::from(m.last_modified) < cutoff => self.delete(&key).await,
            _ => Ok(false),
        }
    }

    async fn hash_blob(
        &self,
        digest: &Digest,
        on_bytes: Box<dyn Fn(u64) + Send + Sync>,
    ) -> Result<Option<Digest>> {
        let Some(mut stream) = self.read_blob(digest, None).await? else {
            return Ok(None);
        };
        let mut hasher = digest.algorithm().hasher();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| crate::storage::StorageError::io("hashing a blob", e))?;
            hasher.update(&chunk);
            on_bytes(chunk.len() as u64);
        }
        Ok(Some(hasher.finish()))
    }

    async fn quarantine_blob(&self, digest: &Digest) -> Result<String> {
        let (from, to) = (self.keys.blob(digest), self.keys.quarantine(digest));
        self.store
            .copy(&from, &to)
            .await
            .map_err(|e| os_err(format!("copying {from} to {to}"), e))?;
        self.delete(&from).await?;
        Ok(to.to_string())
    }

    async fn list_repositories_with_links(&self) -> Result<Vec<String>> {
        let mut repos = BTreeSet::new();
        for m in self.list(&self.keys.repositories()).await? {
            let Some(rel) = self.keys.relative(&m.location) else {
                continue;
            };
            if let Some((repo, rest)) = split_repository(rel) {
                if rest.starts_with("_layers/") || rest.starts_with("_manifests/") {
                    repos.insert(repo.to_string());
                }
            }
        }
        Ok(repos.into_iter().collect())
    }

    async fn repo_links(&self, repo: &RepoName) -> Result<Vec<Digest>> {
        Ok(self
            .links(repo)
            .await?
            .into_iter()
            .map(|(d, _, _)| d)
            .collect())
    }

    async fn link_entries(&self, repo: &RepoName) -> Result<Vec<LinkEntry>> {
        Ok(self
            .links(repo)
            .await?
            .into_iter()
            .map(|(digest, manifest, m)| LinkEntry {
                digest,
                manifest,
                modified: SystemTime::from(m.last_modified),
            })
            .collect())
    }

    async fn remove_repository(&self, repo: &RepoName) -> Result<()> {
        let prefixes: [Path; 3] = [
            self.keys.layers(repo),
            self.keys.manifests(repo),
            self.keys.all_referrers(repo),
        ];
        for prefix in prefixes {
            let objects = self.list(&prefix).await?;
            self.delete_all(objects).await?;
        }
        self.cataloged.remove(repo.as_str());
        self.delete(&self.keys.catalog_entry(repo.as_str())).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_keys_name_their_digest() {
        let hex = "cd".repeat(32);
        let d: Digest = format!("sha256:{hex}").parse().unwrap();
        assert_eq!(blob_digest(&format!("p/blobs/sha256/cd/{hex}")), Some(d));
        assert_eq!(blob_digest("p/blobs/sha256/cd/zz"), None);
    }
}
