//! The content store behind the registry.
//!
//! [`Storage`] is the only way the services reach persistent state. It speaks in
//! validated names and digests, never in paths, so a second backend (an S3-compatible
//! object store) can implement it without the API or service code changing.
//! [`fs::FsStorage`] is the filesystem backend; its layout is documented in
//! `docs/storage.md`.
//!
//! Contract every backend keeps:
//! - blobs are content-addressed and shared by all repositories; a repository sees a
//!   blob only through its own link;
//! - nothing becomes visible before it is complete and durable: an upload turns into a
//!   blob in one atomic step, after its bytes are synced;
//! - writes of the same content by concurrent requests are safe and idempotent.

pub mod bundle;
pub mod fs;
pub mod s3;

use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::oci::{Algorithm, Digest, RepoName, Tag, graph};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("no space left on the storage device")]
    Full,
    #[error("storage I/O failed while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("this registry serves bundles read-only")]
    ReadOnly,
}

impl From<crate::oci::manifest::ManifestError> for StorageError {
    fn from(e: crate::oci::manifest::ManifestError) -> Self {
        StorageError::Corrupt(format!("a stored manifest does not parse: {e}"))
    }
}

impl StorageError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        if source.raw_os_error() == Some(libc::ENOSPC) {
            return StorageError::Full;
        }
        StorageError::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// A stream of blob bytes.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// Part of a blob to read: `offset` and `len` already checked against the blob's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub offset: u64,
    pub len: u64,
}

/// What a repository knows about one of its manifests.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    /// The `Content-Type` it was pushed with.
    pub media_type: String,
    pub body: Bytes,
}

impl StoredManifest {
    /// What the manifest references, read by the one manifest parser.
    pub fn parse(
        &self,
    ) -> std::result::Result<crate::oci::ParsedManifest, crate::oci::manifest::ManifestError> {
        crate::oci::manifest::parse(Some(&self.media_type), &self.body)
    }
}

impl graph::Node for StoredManifest {
    fn digest(&self) -> &Digest {
        &self.digest
    }
    fn media_type(&self) -> &str {
        &self.media_type
    }
    fn body(&self) -> &Bytes {
        &self.body
    }
}

/// One repository's manifests and referrer records, as a graph walk reads them.
pub struct RepoGraph<'a> {
    pub store: &'a dyn Storage,
    pub repo: &'a RepoName,
}

#[async_trait]
impl graph::Source for RepoGraph<'_> {
    type Node = StoredManifest;
    type Error = StorageError;

    async fn manifest(
        &mut self,
        digest: &Digest,
        _: Option<&str>,
    ) -> Result<Option<StoredManifest>> {
        self.store.get_manifest(self.repo, digest).await
    }

    async fn referrers(&mut self, digest: &Digest) -> Result<Vec<Digest>> {
        let records = self.store.list_referrers(self.repo, digest).await?;
        Ok(records.into_iter().map(|r| r.digest).collect())
    }
}

/// A manifest that names a subject, as the referrers API lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReferrerRecord {
    pub digest: Digest,
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub size: u64,
    #[serde(
        rename = "artifactType",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub artifact_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

impl ReferrerRecord {
    /// The record of `parsed`, stored as `digest` with `media_type` and `size` bytes.
    pub fn of_manifest(
        digest: &Digest,
        media_type: &str,
        size: u64,
        parsed: &crate::oci::manifest::ParsedManifest,
    ) -> ReferrerRecord {
        ReferrerRecord {
            digest: digest.clone(),
            media_type: crate::oci::manifest::essence(media_type).to_string(),
            size,
            artifact_type: parsed.artifact_type.clone(),
            annotations: parsed.annotations.clone().map(|a| a.into_iter().collect()),
        }
    }
}

/// The persistent state of an upload session, saved after every accepted chunk so the
/// session survives a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadState {
    pub repo: String,
    pub algorithm: Algorithm,
    /// Bytes accepted so far; data past it is an unacknowledged, partial chunk.
    pub offset: u64,
    /// The hash of those bytes (a resumable hasher's state, base64), kept on stores
    /// whose sessions any replica may continue ([`Storage::shared_sessions`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_state: Option<String>,
}

impl UploadState {
    /// A new, empty session of `repo`.
    pub fn new(repo: &RepoName, algorithm: Algorithm) -> UploadState {
        UploadState {
            repo: repo.to_string(),
            algorithm,
            offset: 0,
            hash_state: None,
        }
    }
}

/// How an upload's bytes are pushed to the disk while it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Writeback keeps up with the writer, so completing the upload has little left to
    /// sync (pushes: the client waits for that sync).
    Disk,
    /// As fast as memory takes it; completing the upload syncs it all (cache fills:
    /// clients read the data back as it arrives and do not wait for the sync).
    Memory,
}

/// Reads an upload's data while it grows. It keeps working after the upload has become
/// a blob, so readers that started early finish reading.
#[async_trait]
pub trait PartReader: Send + Sync {
    /// Up to `len` bytes at `offset` (fewer only at the end of what is written).
    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes>;
}

/// Appends bytes to an upload. Dropping it without [`UploadWriter::finish`] abandons the
/// bytes written so far; the caller rolls the upload back with
/// [`Storage::truncate_upload`].
#[async_trait]
pub trait UploadWriter: Send {
    async fn write(&mut self, data: Bytes) -> Result<()>;
    /// The length of the upload's data as writing proceeds: bytes up to it can be read
    /// back (with a [`PartReader`]) while the upload continues.
    fn progress(&self) -> tokio::sync::watch::Receiver<u64>;
    /// Waits until every byte is written; returns the upload's new length.
    async fn finish(self: Box<Self>) -> Result<u64>;
}

/// A repository's link, as garbage collection sees it.
#[derive(Debug, Clone)]
pub struct LinkEntry {
    pub digest: Digest,
    /// A manifest revision (else a layer link).
    pub manifest: bool,
    pub modified: SystemTime,
}

/// A blob file, as garbage collection sees it.
#[derive(Debug, Clone)]
pub struct BlobFile {
    pub digest: Digest,
    pub size: u64,
    pub modified: SystemTime,
}

/// Whole-store work beside the request path: inventory, timed removal, re-hashing,
/// quarantine. Garbage collection, integrity checks and `sealer rmi` reach the store
/// through it; every backend implements it with [`Storage`].
#[async_trait]
pub trait Maintenance: Storage {
    /// Whether the store holds the blob at all (in any repository).
    async fn has_blob(&self, digest: &Digest) -> Result<bool>;
    /// Every blob with its size.
    async fn list_blobs(&self) -> Result<Vec<(Digest, u64)>>;
    /// Every blob with its size and the time it last changed.
    async fn blob_files(&self) -> Result<Vec<BlobFile>>;
    /// Removes a blob (its links stay, and answer as missing).
    async fn remove_blob(&self, digest: &Digest) -> Result<bool>;
    /// Removes a blob unless it changed at or after `cutoff` (a push made it again since
    /// it was listed); returns whether it went.
    async fn remove_blob_older_than(&self, digest: &Digest, cutoff: SystemTime) -> Result<bool>;
    /// What a blob's content hashes to now (`None`: it is gone), telling `on_bytes` how
    /// much was read as it goes.
    async fn hash_blob(
        &self,
        digest: &Digest,
        on_bytes: Box<dyn Fn(u64) + Send + Sync>,
    ) -> Result<Option<Digest>>;
    /// Moves a blob where it is kept for inspection and never served; says where.
    async fn quarantine_blob(&self, digest: &Digest) -> Result<String>;
    /// Every repository that links a blob or holds a manifest.
    async fn list_repositories_with_links(&self) -> Result<Vec<String>>;
    /// Every blob a repository links (layers and manifests).
    async fn repo_links(&self, repo: &RepoName) -> Result<Vec<Digest>>;
    /// A repository's links with the time each was last made or looked at.
    async fn link_entries(&self, repo: &RepoName) -> Result<Vec<LinkEntry>>;
    /// Removes a repository with its links and tags (the blobs stay).
    async fn remove_repository(&self, repo: &RepoName) -> Result<()>;
}

/// What only a store on this machine's filesystem can do: take a finished local file
/// as a blob without copying it, and give a blob's file to a reader that needs one
/// (seeking, unpacking, hard links). Nothing else builds paths into the store.
#[async_trait]
pub trait LocalFiles: Send + Sync {
    /// The store's folder (its scratch space lives beneath, on the same filesystem).
    fn root(&self) -> &std::path::Path;
    /// Makes `file` the blob `digest`, which its writer computed while writing it. The
    /// file must be on the store's filesystem (it is renamed, not copied); it is synced
    /// first, so the blob is durable once visible. Returns the blob's size.
    async fn adopt_blob(&self, file: std::path::PathBuf, digest: &Digest) -> Result<u64>;
    /// Adds `src` as the blob `digest` by a hard link (no copy, no hashing), for files
    /// whose content is already verified under their digest. Returns whether the store
    /// lacked the blob.
    async fn link_verified_blob(&self, src: std::path::PathBuf, digest: &Digest) -> Result<bool>;
    /// The file holding a blob, if the store has it: for readers on this machine that
    /// need a file (unpacking a layer, writing a bundle, sending it to a host).
    fn blob_file(&self, digest: &Digest) -> Option<std::path::PathBuf>;
}

#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Whether other processes share this store's upload sessions (replicas over one
    /// bucket): then a session is taken up from storage on every request, with the hash
    /// state saved in it, since the previous chunk may have reached another replica.
    fn shared_sessions(&self) -> bool {
        false
    }

    /// The chunk size uploads are stored in best (an object store's part size), which
    /// the registry advertises as `OCI-Chunk-Min-Length`; smaller chunks still work.
    fn chunk_min_length(&self) -> Option<u64> {
        None
    }

    // --- blobs (global, content-addressed) ---

    /// Size of a blob if `repo` links it.
    async fn repo_blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>>;
    /// Streams `range` of a blob (the whole blob when `None`).
    async fn read_blob(
        &self,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<Option<ByteStream>>;
    /// Where a client may fetch a stored blob directly (a presigned object-store URL),
    /// when the store is set to redirect blob reads; `None` streams it through.
    async fn blob_url(&self, _digest: &Digest) -> Result<Option<String>> {
        Ok(None)
    }
    /// Makes a stored blob visible in `repo`. The blob must exist.
    async fn link_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()>;
    /// Marks a repository's link to a blob as just used (a client checked it before
    /// skipping an upload), so garbage collection's grace period starts again.
    async fn touch_link(&self, _repo: &RepoName, _digest: &Digest) -> Result<()> {
        Ok(())
    }
    /// Bytes of the blobs `repo` links (layers and configs): what a quota counts.
    async fn repo_usage(&self, _repo: &RepoName) -> Result<u64> {
        Ok(0)
    }
    /// Removes `repo`'s link; returns whether there was one.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;

    // --- uploads ---

    async fn create_upload(&self, id: Uuid, state: &UploadState) -> Result<()>;
    async fn load_upload(&self, id: Uuid) -> Result<Option<UploadState>>;
    async fn save_upload(&self, id: Uuid, state: &UploadState) -> Result<()>;
    /// A writer appending to the upload's data, which must be `offset` bytes long.
    async fn upload_writer(
        &self,
        id: Uuid,
        offset: u64,
        pace: Pace,
    ) -> Result<Box<dyn UploadWriter>>;
    /// A reader of the upload's data as it is being written.
    async fn upload_reader(&self, id: Uuid) -> Result<std::sync::Arc<dyn PartReader>>;
    /// Appends one small chunk in a single step; returns the new length.
    async fn append_upload(&self, id: Uuid, offset: u64, data: Bytes) -> Result<u64>;
    /// Cuts the upload's data back to `len` bytes (rolls back a failed chunk).
    async fn truncate_upload(&self, id: Uuid, len: u64) -> Result<()>;
    /// Reads the upload's data (to hash it again after a restart, or with another
    /// algorithm).
    async fn read_upload(&self, id: Uuid) -> Result<ByteStream>;
    /// Turns the upload into the blob `digest` (already verified) of `size` bytes, durably
    /// and atomically, and removes the session.
    async fn commit_upload(&self, id: Uuid, digest: &Digest, size: u64) -> Result<()>;
    async fn delete_upload(&self, id: Uuid) -> Result<bool>;
    /// Every upload with the time it last changed.
    async fn list_uploads(&self) -> Result<Vec<(Uuid, SystemTime)>>;

    // --- manifests and tags (per repository) ---

    /// Stores a manifest's bytes as a blob and links it into `repo` with its media type.
    async fn put_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        media_type: &str,
        body: Bytes,
    ) -> Result<()>;
    async fn get_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<StoredManifest>>;
    /// Whether `repo` holds the manifest.
    /// The manifest `tag` points to, in one step (the hot path of every pull).
    async fn get_tagged_manifest(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<StoredManifest>>;
    async fn has_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;
    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;
    async fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>>;
    async fn set_tag(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<()>;
    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool>;
    /// Tags of `repo` in byte order: at most `limit` of them after `after`, and whether
    /// more follow. `None` when the repository does not exist.
    async fn list_tags(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<(Vec<String>, bool)>>;
    /// All repositories that hold at least one manifest, in no particular order.
    async fn list_repositories(&self) -> Result<Vec<String>>;
    /// Repositories in byte order: at most `limit` after `after`, and whether more
    /// follow. Stores that keep them sorted answer without listing them all.
    async fn list_repositories_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, bool)> {
        let mut repos = self.list_repositories().await?;
        repos.retain(|r| after.is_none_or(|a| r.as_str() > a));
        repos.sort_unstable();
        let more = repos.len() > limit;
        repos.truncate(limit);
        Ok((repos, more))
    }

    // --- referrers ---

    async fn add_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        record: &ReferrerRecord,
    ) -> Result<()>;
    async fn remove_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        referrer: &Digest,
    ) -> Result<()>;
    async fn list_referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<ReferrerRecord>>;
}
