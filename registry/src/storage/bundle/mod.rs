//! Serving bundles in place (`sealer-registry serve --bundle FILE`): the images of
//! bundle files (`docs/bundle.md`), read-only, over an optional writable store.
//!
//! [`BundleStorage`] answers reads from the bundles first (blobs by range from the file,
//! manifests from memory) and from the store after; tags set in the store win over the
//! bundles' tags, since they are newer. Writes go to the store; without one they are
//! refused with [`StorageError::ReadOnly`]. Each repository sees only the blobs of its
//! own images, as in the store.

mod index;
pub mod tar_guard;
mod verify;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use uuid::Uuid;

pub use self::index::BundleIndex;
use self::index::Location;
use super::fs::streams::stream_range;
use super::{
    ByteRange, ByteStream, Maintenance, Pace, PartReader, ReferrerRecord, Result, Storage,
    StorageError, StoredManifest, UploadState, UploadWriter,
};
use crate::oci::{Digest, RepoName, Tag};

pub struct BundleStorage {
    index: Arc<BundleIndex>,
    damaged: Arc<dashmap::DashSet<Digest>>,
    /// Blob reads from the bundles in flight; verification waits while there are any.
    reading: Arc<AtomicUsize>,
    store: Option<Arc<dyn Maintenance>>,
}

/// Counts one blob read in flight while it lives.
struct Reading(Arc<AtomicUsize>);

impl Reading {
    fn start(counter: &Arc<AtomicUsize>) -> Reading {
        counter.fetch_add(1, Ordering::SeqCst);
        Reading(counter.clone())
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl BundleStorage {
    /// Serves `index` over `store` (writable), or alone (read-only), and starts verifying
    /// the bundles' blobs in the background, while no blob is being read from them (so
    /// pulls run at full speed): a blob found damaged is no longer served from the
    /// bundle.
    pub fn new(index: BundleIndex, store: Option<Arc<dyn Maintenance>>) -> BundleStorage {
        let index = Arc::new(index);
        let damaged = Arc::new(dashmap::DashSet::new());
        let reading = Arc::new(AtomicUsize::new(0));
        verify::spawn(index.clone(), damaged.clone(), reading.clone());
        BundleStorage {
            index,
            damaged,
            reading,
            store,
        }
    }

    fn store(&self) -> Result<&dyn Maintenance> {
        self.store.as_deref().ok_or(StorageError::ReadOnly)
    }

    /// Where `repo` may read `digest` from a bundle.
    fn blob_in(&self, repo: &RepoName, digest: &Digest) -> Option<Location> {
        let repository = self.index.repositories.get(repo)?;
        if !repository.blobs.contains(digest) {
            return None;
        }
        self.blob(digest)
    }

    fn blob(&self, digest: &Digest) -> Option<Location> {
        if self.damaged.contains(digest) {
            return None;
        }
        self.index.blobs.get(digest).copied()
    }

    fn stream(&self, at: Location, range: Option<ByteRange>) -> ByteStream {
        let (from, len) = match range {
            Some(r) => (r.offset, r.len),
            None => (0, at.size),
        };
        // Never past the entry's end, whatever size the caller was told: beyond it lie
        // the next entry's bytes.
        let start = at.offset + from.min(at.size);
        let end = start + len.min(at.size - from.min(at.size));
        let reading = Reading::start(&self.reading);
        stream_range(self.index.files[at.file].1.clone(), start, end)
            .map(move |chunk| {
                let _in_flight = &reading;
                chunk
            })
            .boxed()
    }

    fn bundle_manifest(&self, repo: &RepoName, digest: &Digest) -> Option<StoredManifest> {
        let repository = self.index.repositories.get(repo)?;
        if !repository.manifests.contains(digest) {
            return None;
        }
        let m = self.index.manifests.get(digest)?;
        Some(StoredManifest {
            digest: digest.clone(),
            media_type: m.media_type.clone(),
            body: m.body.clone(),
        })
    }

    fn bundle_tag(&self, repo: &RepoName, tag: &Tag) -> Option<&Digest> {
        self.index.repositories.get(repo)?.tags.get(tag.as_str())
    }

    /// Copies a bundle blob into the store (a mount from a bundle repository into a
    /// store repository), verifying it on the way.
    async fn import(
        &self,
        store: &dyn Maintenance,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<()> {
        let Some(at) = self.blob(digest) else {
            return Ok(());
        };
        let id = Uuid::new_v4();
        let state = UploadState::new(repo, digest.algorithm());
        store.create_upload(id, &state).await?;
        let copied = async {
            let mut writer = store.upload_writer(id, 0, Pace::Disk).await?;
            let mut hasher = digest.algorithm().hasher();
            let mut body = self.stream(at, None);
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| StorageError::io("reading a bundle", e))?;
                hasher.update(&chunk);
                writer.write(chunk).await?;
            }
            let size = writer.finish().await?;
            if &hasher.finish() != digest {
                self.damaged.insert(digest.clone());
                return Err(StorageError::Corrupt(format!(
                    "bundle blob {digest} is damaged"
                )));
            }
            store.commit_upload(id, digest, size).await
        }
        .await;
        if copied.is_err() {
            let _ = store.delete_upload(id).await;
        }
        copied
    }
}

#[async_trait]
impl Storage for BundleStorage {
    fn shared_sessions(&self) -> bool {
        self.store.as_ref().is_some_and(|s| s.shared_sessions())
    }

    fn chunk_min_length(&self) -> Option<u64> {
        self.store.as_ref()?.chunk_min_length()
    }

    async fn blob_url(&self, digest: &Digest) -> Result<Option<String>> {
        match &self.store {
            // Bundle blobs are served from the file; only the store's may be redirected.
            Some(s) if self.blob(digest).is_none() => s.blob_url(digest).await,
            _ => Ok(None),
        }
    }

    async fn repo_blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        // A repository of the store reads the store's copy (see `read_blob`).
        if let Some(s) = &self.store
            && let Some(size) = s.repo_blob_size(repo, digest).await?
        {
            return Ok(Some(size));
        }
        Ok(self.blob_in(repo, digest).map(|at| at.size))
    }

    async fn read_blob(
        &self,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<Option<ByteStream>> {
        // The store's copy first: it was verified before it became visible, while a
        // bundle's is verified in the background (and a damaged one may not be known yet).
        if let Some(s) = &self.store {
            if let Some(stream) = s.read_blob(digest, range).await? {
                return Ok(Some(stream));
            }
        }
        Ok(self.blob(digest).map(|at| self.stream(at, range)))
    }

    async fn link_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let store = self.store()?;
        if !store.has_blob(digest).await? {
            self.import(store, repo, digest).await?;
        }
        store.link_blob(repo, digest).await
    }

    async fn repo_usage(&self, repo: &RepoName) -> Result<u64> {
        match &self.store {
            Some(s) => s.repo_usage(repo).await,
            None => Ok(0),
        }
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        if self.blob_in(repo, digest).is_some() {
            return Err(StorageError::ReadOnly);
        }
        match &self.store {
            Some(s) => s.unlink_blob(repo, digest).await,
            None => Ok(false),
        }
    }

    async fn create_upload(&self, id: Uuid, state: &UploadState) -> Result<()> {
        self.store()?.create_upload(id, state).await
    }

    async fn load_upload(&self, id: Uuid) -> Result<Option<UploadState>> {
        match &self.store {
            Some(s) => s.load_upload(id).await,
            None => Ok(None),
        }
    }

    async fn save_upload(&self, id: Uuid, state: &UploadState) -> Result<()> {
        self.store()?.save_upload(id, state).await
    }

    async fn upload_writer(
        &self,
        id: Uuid,
        offset: u64,
        pace: Pace,
    ) -> Result<Box<dyn UploadWriter>> {
        self.store()?.upload_writer(id, offset, pace).await
    }

    async fn upload_reader(&self, id: Uuid) -> Result<Arc<dyn PartReader>> {
        self.store()?.upload_reader(id).await
    }

    async fn append_upload(&self, id: Uuid, offset: u64, data: Bytes) -> Result<u64> {
        self.store()?.append_upload(id, offset, data).await
    }

    async fn truncate_upload(&self, id: Uuid, len: u64) -> Result<()> {
        self.store()?.truncate_upload(id, len).await
    }

    async fn read_upload(&self, id: Uuid) -> Result<ByteStream> {
        self.store()?.read_upload(id).await
    }

    async fn commit_upload(&self, id: Uuid, digest: &Digest, size: u64) -> Result<()> {
        self.store()?.commit_upload(id, digest, size).await
    }

    async fn delete_upload(&self, id: Uuid) -> Result<bool> {
        match &self.store {
            Some(s) => s.delete_upload(id).await,
            None => Ok(false),
        }
    }

    async fn list_uploads(&self) -> Result<Vec<(Uuid, SystemTime)>> {
        match &self.store {
            Some(s) => s.list_uploads().await,
            None => Ok(Vec::new()),
        }
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        media_type: &str,
        body: Bytes,
    ) -> Result<()> {
        self.store()?
            .put_manifest(repo, digest, media_type, body)
            .await
    }

    async fn get_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<StoredManifest>> {
        if let Some(m) = self.bundle_manifest(repo, digest) {
            return Ok(Some(m));
        }
        match &self.store {
            Some(s) => s.get_manifest(repo, digest).await,
            None => Ok(None),
        }
    }

    async fn get_tagged_manifest(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<StoredManifest>> {
        if let Some(s) = &self.store
            && let Some(m) = s.get_tagged_manifest(repo, tag).await?
        {
            return Ok(Some(m));
        }
        Ok(self
            .bundle_tag(repo, tag)
            .and_then(|d| self.bundle_manifest(repo, d)))
    }

    async fn has_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        if self.bundle_manifest(repo, digest).is_some() {
            return Ok(true);
        }
        match &self.store {
            Some(s) => s.has_manifest(repo, digest).await,
            None => Ok(false),
        }
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        if self.bundle_manifest(repo, digest).is_some() {
            return Err(StorageError::ReadOnly);
        }
        match &self.store {
            Some(s) => s.delete_manifest(repo, digest).await,
            None => Ok(false),
        }
    }

    async fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>> {
        if let Some(s) = &self.store
            && let Some(d) = s.resolve_tag(repo, tag).await?
        {
            return Ok(Some(d));
        }
        Ok(self.bundle_tag(repo, tag).cloned())
    }

    async fn set_tag(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<()> {
        self.store()?.set_tag(repo, tag, digest).await
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool> {
        if let Some(s) = &self.store
            && s.delete_tag(repo, tag).await?
        {
            return Ok(true);
        }
        if self.bundle_tag(repo, tag).is_some() {
            return Err(StorageError::ReadOnly);
        }
        Ok(false)
    }

    async fn list_tags(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<(Vec<String>, bool)>> {
        let bundle = self.index.repositories.get(repo);
        let stored = match &self.store {
            Some(s) => s.list_tags(repo, None, usize::MAX).await?,
            None => None,
        };
        if bundle.is_none() && stored.is_none() {
            return Ok(None);
        }
        let mut all: Vec<String> = bundle
            .into_iter()
            .flat_map(|r| r.tags.keys().cloned())
            .chain(stored.into_iter().flat_map(|(tags, _)| tags))
            .collect();
        all.sort();
        all.dedup();
        let start = match after {
            Some(a) => all.partition_point(|t| t.as_str() <= a),
            None => 0,
        };
        let end = start.saturating_add(limit).min(all.len());
        Ok(Some((all[start..end].to_vec(), end < all.len())))
    }

    async fn list_repositories(&self) -> Result<Vec<String>> {
        let mut all: Vec<String> = self
            .index
            .repositories
            .keys()
            .map(|r| r.to_string())
            .collect();
        if let Some(s) = &self.store {
            all.extend(s.list_repositories().await?);
        }
        all.sort();
        all.dedup();
        Ok(all)
    }

    async fn add_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        record: &ReferrerRecord,
    ) -> Result<()> {
        self.store()?.add_referrer(repo, subject, record).await
    }

    async fn remove_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        referrer: &Digest,
    ) -> Result<()> {
        self.store()?.remove_referrer(repo, subject, referrer).await
    }

    async fn list_referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<ReferrerRecord>> {
        let mut out: Vec<ReferrerRecord> = self
            .index
            .repositories
            .get(repo)
            .and_then(|r| r.referrers.get(subject))
            .cloned()
            .unwrap_or_default();
        if let Some(s) = &self.store {
            for r in s.list_referrers(repo, subject).await? {
                if !out.iter().any(|o| o.digest == r.digest) {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalFiles;
    use crate::storage::fs::FsStorage;
    use serde_json::json;

    fn descriptor(media_type: &str, body: &[u8]) -> serde_json::Value {
        json!({"mediaType": media_type, "digest": Digest::sha256_of(body).to_string(), "size": body.len()})
    }

    /// A bundle with two images, `one.example/a:1` and `two.example/b:2`, each with its
    /// own layer; returns its path and the two layers.
    fn bundle(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>, Vec<u8>) {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let (layer_a, layer_b) = (b"layer of a".repeat(100), b"layer of b".repeat(100));
        let manifest = |layer: &[u8]| {
            serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": descriptor("application/vnd.oci.image.config.v1+json", config),
                "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", layer)],
            }))
            .unwrap()
        };
        let (ma, mb) = (manifest(&layer_a), manifest(&layer_b));
        let entry = |m: &[u8], name: &str| {
            let mut d = descriptor("application/vnd.oci.image.manifest.v1+json", m);
            d["annotations"] = json!({ "io.containerd.image.name": name });
            d
        };
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [entry(&ma, "one.example/a:1"), entry(&mb, "two.example/b:2")],
        }))
        .unwrap();
        let path = dir.join("b.tar");
        let mut tar = tar::Builder::new(std::fs::File::create(&path).unwrap());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, name, data).unwrap();
        };
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        add("index.json", &index);
        for blob in [&ma[..], &mb, config, &layer_a, &layer_b] {
            let hex = Digest::sha256_of(blob).to_string().replace("sha256:", "");
            add(&format!("blobs/sha256/{hex}"), blob);
        }
        tar.finish().unwrap();
        (path, layer_a, layer_b)
    }

    async fn read_all(s: ByteStream) -> Vec<u8> {
        let chunks: Vec<_> = s.collect().await;
        chunks.into_iter().flat_map(|c| c.unwrap()).collect()
    }

    #[tokio::test]
    async fn serves_each_repository_its_own_images_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let (path, layer_a, layer_b) = bundle(dir.path());
        let storage = BundleStorage::new(BundleIndex::open(&[path]).unwrap(), None);
        let a = RepoName::parse("one.example/a").unwrap();
        let (da, db) = (Digest::sha256_of(&layer_a), Digest::sha256_of(&layer_b));

        let tag = Tag::parse("1").unwrap();
        let top = storage.resolve_tag(&a, &tag).await.unwrap().unwrap();
        let m = storage.get_manifest(&a, &top).await.unwrap().unwrap();
        assert_eq!(m.media_type, "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(Digest::sha256_of(&m.body), top);

        // A repository sees its own blobs only.
        assert_eq!(
            storage.repo_blob_size(&a, &da).await.unwrap(),
            Some(layer_a.len() as u64)
        );
        assert_eq!(storage.repo_blob_size(&a, &db).await.unwrap(), None);

        let range = ByteRange {
            offset: 10,
            len: 25,
        };
        let part = read_all(storage.read_blob(&da, Some(range)).await.unwrap().unwrap()).await;
        assert_eq!(part, &layer_a[10..35]);

        let mut repos = storage.list_repositories().await.unwrap();
        repos.sort();
        assert_eq!(repos, ["one.example/a", "two.example/b"]);
        let tags = storage.list_tags(&a, None, 10).await.unwrap().unwrap();
        assert_eq!(tags, (vec!["1".to_string()], false));

        // Nothing can be written or deleted.
        assert!(matches!(
            storage.delete_manifest(&a, &top).await,
            Err(StorageError::ReadOnly)
        ));
        let state = UploadState::new(
            &RepoName::parse("x").unwrap(),
            crate::oci::Algorithm::Sha256,
        );
        assert!(matches!(
            storage.create_upload(Uuid::new_v4(), &state).await,
            Err(StorageError::ReadOnly)
        ));
    }

    #[tokio::test]
    async fn a_lying_entry_neither_shadows_the_store_nor_reads_past_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let real = b"the real layer".repeat(1000);
        let digest = Digest::sha256_of(&real);
        // An entry named after the layer, short and wrong, then a secret.
        let path = dir.path().join("b.tar");
        let mut tar = tar::Builder::new(std::fs::File::create(&path).unwrap());
        let index = br#"{"schemaVersion":2,"manifests":[]}"#;
        let fake = format!("blobs/sha256/{}", digest.hex());
        let secret = b"SECRET".repeat(1000);
        let secret_name = format!("blobs/sha256/{}", Digest::sha256_of(&secret).hex());
        for (name, data) in [
            ("index.json", &index[..]),
            (fake.as_str(), b"short and wrong"),
            (secret_name.as_str(), &secret),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, name, data).unwrap();
        }
        tar.finish().unwrap();
        drop(tar);
        let store = Arc::new(FsStorage::open(dir.path().join("store")).unwrap());
        let file = dir.path().join("store/tmp/layer");
        std::fs::write(&file, &real).unwrap();
        store.adopt_blob(file, &digest).await.unwrap();
        let repo = RepoName::parse("mine/app").unwrap();
        store.link_blob(&repo, &digest).await.unwrap();
        // Before background verification has looked at the entry (none runs here).
        let storage = BundleStorage {
            index: Arc::new(BundleIndex::open(&[path]).unwrap()),
            damaged: Arc::default(),
            reading: Arc::default(),
            store: Some(store),
        };
        let size = storage.repo_blob_size(&repo, &digest).await.unwrap();
        assert_eq!(size, Some(real.len() as u64));
        let range = ByteRange {
            offset: 0,
            len: real.len() as u64,
        };
        let got = read_all(
            storage
                .read_blob(&digest, Some(range))
                .await
                .unwrap()
                .unwrap(),
        )
        .await;
        assert!(got == real, "the store's copy is read, not the entry");
        // Read directly, the entry never yields more than its own bytes.
        let at = storage.blob(&digest).unwrap();
        let got = read_all(storage.stream(at, Some(range))).await;
        assert_eq!(got, b"short and wrong");
        let past = ByteRange {
            offset: 100,
            len: 10,
        };
        assert!(read_all(storage.stream(at, Some(past))).await.is_empty());
    }

    #[tokio::test]
    async fn over_a_store_a_mount_copies_the_blob_into_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (path, layer_a, _) = bundle(dir.path());
        let store = Arc::new(FsStorage::open(dir.path().join("store")).unwrap());
        let storage = BundleStorage::new(
            BundleIndex::open(&[path]).unwrap(),
            Some(store.clone() as Arc<dyn Maintenance>),
        );
        let other = RepoName::parse("mine/c").unwrap();
        let da = Digest::sha256_of(&layer_a);
        storage.link_blob(&other, &da).await.unwrap();
        assert!(store.has_blob(&da).await.unwrap());
        assert_eq!(
            store.repo_blob_size(&other, &da).await.unwrap(),
            Some(layer_a.len() as u64)
        );
        // Tags set in the store win over the bundle's.
        let a = RepoName::parse("one.example/a").unwrap();
        let tag = Tag::parse("1").unwrap();
        let config_digest = Digest::sha256_of(b"x");
        store.set_tag(&a, &tag, &config_digest).await.unwrap();
        assert_eq!(
            storage.resolve_tag(&a, &tag).await.unwrap(),
            Some(config_digest)
        );
    }
}
