//! Reading, mounting and deleting blobs of a repository.

use std::sync::Arc;

use super::Options;
use crate::error::{RegistryError, Result};
use crate::oci::{Digest, RepoName};
use crate::storage::{ByteRange, ByteStream, Storage};

pub struct BlobService {
    storage: Arc<dyn Storage>,
    options: Options,
}

impl BlobService {
    pub fn new(storage: Arc<dyn Storage>, options: Options) -> Self {
        BlobService { storage, options }
    }

    /// The size of a blob linked by the first of `repos` that has it; BLOB_UNKNOWN
    /// otherwise, even when another repository holds it.
    pub async fn size(&self, repos: &[RepoName], digest: &Digest) -> Result<u64> {
        for repo in repos {
            if let Some(size) = self.storage.repo_blob_size(repo, digest).await? {
                return Ok(size);
            }
        }
        Err(RegistryError::blob_unknown(digest))
    }

    /// Streams part of a blob whose size the caller got from [`BlobService::size`].
    pub async fn read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<ByteStream> {
        self.storage
            .read_blob(digest, range)
            .await?
            .ok_or_else(|| RegistryError::blob_unknown(digest))
    }

    /// Links `digest` from `from` into `repo`. Only a repository that links the blob can
    /// lend it: a caller naming any other source gets `false` and a normal upload.
    pub async fn mount(&self, repo: &RepoName, digest: &Digest, from: &RepoName) -> Result<bool> {
        if self.storage.repo_blob_size(from, digest).await?.is_none() {
            return Ok(false);
        }
        self.storage.link_blob(repo, digest).await?;
        Ok(true)
    }

    /// Removes the blob from `repo`. The content itself stays for other repositories.
    pub async fn delete(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        if !self.options.delete_enabled {
            return Err(RegistryError::unsupported(
                "deletes are disabled on this registry",
            ));
        }
        if self.storage.unlink_blob(repo, digest).await? {
            Ok(())
        } else {
            Err(RegistryError::blob_unknown(digest))
        }
    }
}
