//! The registry on S3-compatible object storage (`--storage s3://BUCKET/PREFIX`), for
//! several stateless replicas over one bucket.
//!
//! The bucket is the only source of truth. Every fact is an object of its own (a blob, a
//! link, a manifest revision, a tag, a referrer record, an upload's state), so replicas
//! never read, change and write back a shared object, and correctness never depends on
//! a conditional write: the start-up probe only tells whether the garbage collector's
//! lease can be used ([`lease`]). Reads need no walk of the bucket: a tag list is one
//! listing of the tag prefix, and the catalog is the listing of a derived index
//! (`index/repositories/NAME`) that `sealer-registry index rebuild` writes again from
//! the repositories. Uploads are multipart uploads whose state is in the bucket, so any
//! replica continues any upload ([`uploads`]).

pub mod keys;
pub mod lease;
mod maintenance;
pub mod settings;
mod uploads;

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};
use uuid::Uuid;

use self::keys::Keys;
pub use self::settings::{S3Settings, StorageSection};
use self::uploads::{Recent, Spools};
use super::{
    ByteRange, ByteStream, Pace, PartReader, ReferrerRecord, Result, Storage, StorageError,
    StoredManifest, UploadState, UploadWriter,
};
use crate::oci::{Digest, RepoName, Tag};

/// How long a presigned blob URL is good for: long enough for a slow pull to start.
const PRESIGNED_FOR: std::time::Duration = std::time::Duration::from_secs(600);

/// Revisions kept for the tag that follows their push (a bound, not a cache size).
const REMEMBERED_REVISIONS: usize = 1024;

/// Records fetched at once when listing referrers.
const PARALLEL_READS: usize = 16;

pub struct S3Storage {
    store: Arc<AmazonS3>,
    keys: Keys,
    settings: S3Settings,
    /// Whether the store honours `If-None-Match: *` (probed at start).
    conditional: bool,
    /// Local copies of mirror fills in progress, for readers on this replica.
    spools: Spools,
    /// The upload records this replica wrote last.
    recent: Arc<Recent>,
    /// Revisions this replica just wrote, for the tag that usually follows to copy
    /// without reading them back.
    revisions: dashmap::DashMap<(RepoName, Digest), Bytes>,
    /// Repositories whose catalog entry this process has written.
    cataloged: dashmap::DashSet<String>,
}

/// Any failure of the object store, as storage I/O.
fn os_err(context: impl Into<String>, e: object_store::Error) -> StorageError {
    StorageError::Io {
        context: context.into(),
        source: std::io::Error::other(e),
    }
}

impl S3Storage {
    /// Connects to the bucket, checks that it can be written, and probes whether
    /// conditional writes are honoured.
    pub async fn open(settings: S3Settings) -> anyhow::Result<S3Storage> {
        let store = Arc::new(settings.connect()?);
        let keys = Keys::new(&settings.prefix);
        let conditional = lease::probe_conditional(store.as_ref(), &keys)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot use bucket {:?} at {}: {e}",
                    settings.bucket,
                    settings.endpoint.as_deref().unwrap_or("AWS S3")
                )
            })?;
        Ok(S3Storage {
            store,
            keys,
            settings,
            conditional,
            spools: Spools::default(),
            recent: Arc::default(),
            revisions: dashmap::DashMap::new(),
            cataloged: dashmap::DashSet::new(),
        })
    }

    /// Whether the store honours conditional writes (`If-None-Match: *`).
    pub fn honours_conditions(&self) -> bool {
        self.conditional
    }

    pub fn settings(&self) -> &S3Settings {
        &self.settings
    }

    /// Where the store is, for logs: `s3://BUCKET/PREFIX at ENDPOINT`.
    pub fn describe(&self) -> String {
        format!(
            "s3://{}/{} at {}",
            self.settings.bucket,
            self.settings.prefix,
            self.settings.endpoint.as_deref().unwrap_or("AWS S3")
        )
    }

    async fn get(&self, key: &Path) -> Result<Option<Bytes>> {
        match self.store.get(key).await {
            Ok(r) => Ok(Some(
                r.bytes()
                    .await
                    .map_err(|e| os_err(format!("reading {key}"), e))?,
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(os_err(format!("reading {key}"), e)),
        }
    }

    async fn put(&self, key: &Path, body: impl Into<PutPayload>) -> Result<()> {
        self.store
            .put(key, body.into())
            .await
            .map_err(|e| os_err(format!("writing {key}"), e))?;
        Ok(())
    }

    async fn head(&self, key: &Path) -> Result<Option<ObjectMeta>> {
        match self.store.head(key).await {
            Ok(m) => Ok(Some(m)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(os_err(format!("looking up {key}"), e)),
        }
    }

    /// Deletes `key`; returns whether it was there.
    async fn delete(&self, key: &Path) -> Result<bool> {
        if self.head(key).await?.is_none() {
            return Ok(false);
        }
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(os_err(format!("deleting {key}"), e)),
        }
    }

    /// Every object under `prefix`.
    async fn list(&self, prefix: &Path) -> Result<Vec<ObjectMeta>> {
        self.store
            .list(Some(prefix))
            .try_collect()
            .await
            .map_err(|e| os_err(format!("listing {prefix}"), e))
    }

    /// Up to `limit` objects under `prefix` after the key `after`, and whether more follow.
    async fn list_after(
        &self,
        prefix: &Path,
        after: Option<&Path>,
        limit: usize,
    ) -> Result<(Vec<ObjectMeta>, bool)> {
        let stream = match after {
            Some(after) => self.store.list_with_offset(Some(prefix), after),
            None => self.store.list(Some(prefix)),
        };
        let mut found: Vec<ObjectMeta> = stream
            .take(limit.saturating_add(1))
            .try_collect()
            .await
            .map_err(|e| os_err(format!("listing {prefix}"), e))?;
        let more = found.len() > limit;
        found.truncate(limit);
        Ok((found, more))
    }

    /// Deletes every object in `metas`.
    async fn delete_all(&self, metas: Vec<ObjectMeta>) -> Result<()> {
        let locations = futures::stream::iter(metas.into_iter().map(|m| Ok(m.location))).boxed();
        let mut results = self.store.delete_stream(locations);
        while let Some(r) = results.next().await {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(os_err("deleting objects", e)),
            }
        }
        Ok(())
    }

    /// The name after `prefix/` of a listed key.
    fn name_under<'a>(&self, prefix: &Path, key: &'a Path) -> Option<&'a str> {
        key.as_ref()
            .strip_prefix(prefix.as_ref())?
            .strip_prefix('/')
    }

    async fn write_catalog_entry(&self, repo: &RepoName) -> Result<()> {
        if self.cataloged.contains(repo.as_str()) {
            return Ok(());
        }
        self.put(&self.keys.catalog_entry(repo.as_str()), Bytes::new())
            .await?;
        self.cataloged.insert(repo.to_string());
        Ok(())
    }
}

/// The digest a key ends in (`…/<alg>/<hex>` or `…/<alg>-<hex>`).
fn digest_at_end(key: &str) -> Option<Digest> {
    let mut parts = key.rsplit('/');
    let last = parts.next()?;
    if let Some((alg, hex)) = last.split_once('-') {
        return format!("{alg}:{hex}").parse().ok();
    }
    let alg = parts.next()?;
    format!("{alg}:{last}").parse().ok()
}

/// A revision object: the media type, a newline, the manifest's bytes.
fn encode_revision(media_type: &str, body: &Bytes) -> Bytes {
    let mut out = Vec::with_capacity(media_type.len() + 1 + body.len());
    out.extend_from_slice(media_type.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(body);
    out.into()
}

fn decode_revision(digest: &Digest, data: Bytes) -> Result<StoredManifest> {
    let at = data.iter().position(|b| *b == b'\n').ok_or_else(|| {
        StorageError::Corrupt(format!("manifest revision {digest} has no media type"))
    })?;
    let media_type = String::from_utf8_lossy(&data[..at]).into_owned();
    Ok(StoredManifest {
        digest: digest.clone(),
        media_type,
        body: data.slice(at + 1..),
    })
}

/// A tag object: the digest, a newline, then the revision it names (media type and
/// bytes), when it was there to copy.
fn decode_tag(repo: &RepoName, tag: &Tag, data: Bytes) -> Result<(Digest, Option<StoredManifest>)> {
    let corrupt = || StorageError::Corrupt(format!("tag {repo}:{tag} holds no digest"));
    let end = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let digest: Digest = std::str::from_utf8(&data[..end])
        .map_err(|_| corrupt())?
        .trim()
        .parse()
        .map_err(|_| corrupt())?;
    let carried = data.slice((end + 1).min(data.len())..);
    if carried.is_empty() {
        return Ok((digest, None));
    }
    let stored = decode_revision(&digest, carried)?;
    Ok((digest, Some(stored)))
}

#[async_trait]
impl Storage for S3Storage {
    fn shared_sessions(&self) -> bool {
        true
    }

    fn chunk_min_length(&self) -> Option<u64> {
        Some(self.settings.part_size)
    }

    async fn repo_blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let (link, blob) = (self.keys.layer_link(repo, digest), self.keys.blob(digest));
        let (link, blob) = futures::join!(self.head(&link), self.head(&blob));
        Ok(match (link?, blob?) {
            (Some(_), Some(b)) => Some(b.size),
            _ => None,
        })
    }

    async fn read_blob(
        &self,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<Option<ByteStream>> {
        let key = self.keys.blob(digest);
        let mut opts = GetOptions::default();
        if let Some(r) = range {
            if r.len == 0 {
                return Ok(Some(futures::stream::empty().boxed()));
            }
            opts.range = Some(GetRange::Bounded(r.offset..r.offset + r.len));
        }
        match self.store.get_opts(&key, opts).await {
            Ok(result) => Ok(Some(
                result
                    .into_stream()
                    .map(|r| r.map_err(std::io::Error::other))
                    .boxed(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(os_err(format!("reading {key}"), e)),
        }
    }

    async fn blob_url(&self, digest: &Digest) -> Result<Option<String>> {
        if !self.settings.redirect {
            return Ok(None);
        }
        use object_store::signer::Signer;
        let key = self.keys.blob(digest);
        let url = self
            .store
            .signed_url(reqwest::Method::GET, &key, PRESIGNED_FOR)
            .await
            .map_err(|e| os_err(format!("presigning {key}"), e))?;
        Ok(Some(url.to_string()))
    }

    async fn link_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.put(&self.keys.layer_link(repo, digest), Bytes::new())
            .await
    }

    async fn touch_link(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.link_blob(repo, digest).await
    }

    async fn repo_usage(&self, repo: &RepoName) -> Result<u64> {
        // Linked blobs and manifests alike: both are content the repository holds.
        let mut links = self.list(&self.keys.layers(repo)).await?;
        links.extend(self.list(&self.keys.revisions(repo)).await?);
        let blobs: Vec<Path> = links
            .iter()
            .filter_map(|m| digest_at_end(m.location.as_ref()))
            .map(|d| self.keys.blob(&d))
            .collect();
        let sizes = futures::stream::iter(blobs)
            .map(|key| async move { self.head(&key).await })
            .buffer_unordered(PARALLEL_READS)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(sizes.into_iter().flatten().map(|m| m.size).sum())
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        self.delete(&self.keys.layer_link(repo, digest)).await
    }

    async fn create_upload(&self, id: Uuid, state: &UploadState) -> Result<()> {
        self.save_upload(id, state).await
    }

    async fn load_upload(&self, id: Uuid) -> Result<Option<UploadState>> {
        let Some(data) = self.get(&self.keys.upload_state(id)).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| StorageError::Corrupt(format!("upload {id}'s state: {e}")))
    }

    async fn save_upload(&self, id: Uuid, state: &UploadState) -> Result<()> {
        let json = serde_json::to_vec(state).expect("upload state serializes");
        self.put(&self.keys.upload_state(id), json).await
    }

    async fn upload_writer(
        &self,
        id: Uuid,
        offset: u64,
        _pace: Pace,
    ) -> Result<Box<dyn UploadWriter>> {
        Ok(Box::new(self.writer(id, offset).await?))
    }

    async fn upload_reader(&self, id: Uuid) -> Result<Arc<dyn PartReader>> {
        self.spools.reader(id)
    }

    async fn append_upload(&self, id: Uuid, offset: u64, data: Bytes) -> Result<u64> {
        let mut w = Box::new(self.writer(id, offset).await?);
        w.write(data).await?;
        w.finish().await
    }

    async fn truncate_upload(&self, id: Uuid, len: u64) -> Result<()> {
        self.check_upload_at(id, len).await
    }

    async fn read_upload(&self, id: Uuid) -> Result<ByteStream> {
        self.read_whole_upload(id).await
    }

    async fn commit_upload(&self, id: Uuid, digest: &Digest, size: u64) -> Result<()> {
        self.commit(id, digest, size).await
    }

    async fn delete_upload(&self, id: Uuid) -> Result<bool> {
        self.remove_upload(id).await
    }

    async fn list_uploads(&self) -> Result<Vec<(Uuid, SystemTime)>> {
        self.uploads_with_times().await
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        media_type: &str,
        body: Bytes,
    ) -> Result<()> {
        let blob = self.keys.blob(digest);
        if self.head(&blob).await?.is_none() {
            self.put(&blob, body.clone()).await?;
        }
        let revision = encode_revision(media_type, &body);
        self.put(&self.keys.revision(repo, digest), revision.clone())
            .await?;
        if self.revisions.len() >= REMEMBERED_REVISIONS {
            self.revisions.clear();
        }
        self.revisions
            .insert((repo.clone(), digest.clone()), revision);
        self.write_catalog_entry(repo).await
    }

    async fn get_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<StoredManifest>> {
        match self.get(&self.keys.revision(repo, digest)).await? {
            Some(data) => decode_revision(digest, data).map(Some),
            None => Ok(None),
        }
    }

    async fn get_tagged_manifest(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<StoredManifest>> {
        let Some(data) = self.get(&self.keys.tag(repo, tag)).await? else {
            return Ok(None);
        };
        match decode_tag(repo, tag, data)? {
            (_, Some(stored)) => Ok(Some(stored)),
            (digest, None) => self.get_manifest(repo, &digest).await,
        }
    }

    async fn has_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        Ok(self
            .head(&self.keys.revision(repo, digest))
            .await?
            .is_some())
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        self.delete(&self.keys.revision(repo, digest)).await
    }

    async fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>> {
        match self.get(&self.keys.tag(repo, tag)).await? {
            Some(data) => Ok(Some(decode_tag(repo, tag, data)?.0)),
            None => Ok(None),
        }
    }

    async fn set_tag(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<()> {
        // The tag carries a copy of its revision, so a pull by tag is one read. Services
        // delete every tag of a manifest before the manifest, so the copy never outlives
        // its original.
        let mut body = format!("{digest}\n").into_bytes();
        let just_written = self.revisions.remove(&(repo.clone(), digest.clone()));
        let revision = match just_written {
            Some((_, r)) => Some(r),
            None => self.get(&self.keys.revision(repo, digest)).await?,
        };
        if let Some(revision) = revision {
            body.extend_from_slice(&revision);
        }
        self.put(&self.keys.tag(repo, tag), body).await
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool> {
        self.delete(&self.keys.tag(repo, tag)).await
    }

    async fn list_tags(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<(Vec<String>, bool)>> {
        let prefix = self.keys.tags(repo);
        // Only where the listing starts: any text will do, valid tag or not.
        let after = after.map(|a| Path::from(format!("{prefix}/{a}")));
        let (found, more) = self.list_after(&prefix, after.as_ref(), limit).await?;
        if found.is_empty() {
            let (any, _) = self.list_after(&self.keys.manifests(repo), None, 1).await?;
            if any.is_empty() {
                return Ok(None);
            }
        }
        let tags = found
            .iter()
            .filter_map(|m| self.name_under(&prefix, &m.location).map(str::to_string))
            .collect();
        Ok(Some((tags, more)))
    }

    async fn list_repositories(&self) -> Result<Vec<String>> {
        let prefix = self.keys.catalog();
        let found = self.list(&prefix).await?;
        Ok(found
            .iter()
            .filter_map(|m| self.name_under(&prefix, &m.location).map(str::to_string))
            .collect())
    }

    async fn list_repositories_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, bool)> {
        let prefix = self.keys.catalog();
        let after = after.map(|a| self.keys.catalog_entry(a));
        let (found, more) = self.list_after(&prefix, after.as_ref(), limit).await?;
        let names = found
            .iter()
            .filter_map(|m| self.name_under(&prefix, &m.location).map(str::to_string))
            .collect();
        Ok((names, more))
    }

    async fn add_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        record: &ReferrerRecord,
    ) -> Result<()> {
        let json = serde_json::to_vec(record).expect("a referrer record serializes");
        self.put(&self.keys.referrer(repo, subject, &record.digest), json)
            .await
    }

    async fn remove_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        referrer: &Digest,
    ) -> Result<()> {
        self.delete(&self.keys.referrer(repo, subject, referrer))
            .await
            .map(|_| ())
    }

    async fn list_referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<ReferrerRecord>> {
        let found = self.list(&self.keys.referrers(repo, subject)).await?;
        let mut records: Vec<ReferrerRecord> = futures::stream::iter(found)
            .map(|m| async move { self.get(&m.location).await })
            .buffer_unordered(PARALLEL_READS)
            .try_collect::<Vec<_>>()
            .await?
            .into_iter()
            .flatten()
            .filter_map(|data| serde_json::from_slice(&data).ok())
            .collect();
        records.sort_by_key(|r| r.digest.to_string());
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_read_back_from_keys() {
        let hex = "ab".repeat(32);
        let d: Digest = format!("sha256:{hex}").parse().unwrap();
        assert_eq!(digest_at_end(&format!("p/blobs/sha256/ab/{hex}")), None);
        assert_eq!(
            digest_at_end(&format!("p/_layers/sha256/{hex}")),
            Some(d.clone())
        );
        assert_eq!(digest_at_end(&format!("x/sha256-{hex}")), Some(d.clone()));
        let rev = encode_revision(
            "application/vnd.oci.image.manifest.v1+json",
            &Bytes::from_static(b"{}\n"),
        );
        let m = decode_revision(&d, rev).unwrap();
        assert_eq!(m.media_type, "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(&m.body[..], b"{}\n");
    }
}
