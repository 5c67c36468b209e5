//! The filesystem backend of [`Storage`].

pub mod durable;
pub mod layout;
mod listing;
mod maintenance;
pub(crate) mod streams;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use uuid::Uuid;

use self::layout::Layout;
use super::{
    ByteRange, ByteStream, Pace, PartReader, ReferrerRecord, Result, Storage, StorageError,
    StoredManifest, UploadState, UploadWriter,
};
use crate::oci::{Digest, RepoName, Tag};

#[derive(Debug, Clone)]
pub struct FsStorage {
    layout: Layout,
    tag_lists: Arc<listing::SortedDirCache>,
    catalog: Arc<listing::CatalogCache>,
}

/// Runs filesystem work off the async runtime.
async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::io("running a storage task", io::Error::other(e)))?
}

fn ctx<'a>(context: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StorageError + 'a {
    move |e| StorageError::io(format!("{context} {}", path.display()), e)
}

impl FsStorage {
    /// Opens (creating if needed) a store rooted at `root`. Leftover temporary files of an
    /// interrupted process are removed; they were never visible.
    pub fn open(root: impl Into<PathBuf>) -> Result<FsStorage> {
        let storage = FsStorage::open_shared(root)?;
        let tmp = storage.layout.tmp_dir();
        for entry in fs::read_dir(&tmp).map_err(ctx("listing", &tmp))? {
            let entry = entry.map_err(ctx("listing", &tmp))?;
            let _ = fs::remove_file(entry.path());
        }
        Ok(storage)
    }

    /// Opens a store that a server may be using at the same time (`sealer build`, `pull`,
    /// `load`): the temporary files of other processes are left alone.
    pub fn open_shared(root: impl Into<PathBuf>) -> Result<FsStorage> {
        let layout = Layout::new(root);
        for dir in [
            layout.root().to_path_buf(),
            layout.tmp_dir(),
            layout.root().join("blobs"),
            layout.repositories(),
            layout.uploads_dir(),
        ] {
            durable::ensure_dir(&dir).map_err(ctx("creating", &dir))?;
        }
        Ok(FsStorage {
            layout,
            tag_lists: Arc::default(),
            catalog: Arc::default(),
        })
    }

    fn layout(&self) -> Layout {
        self.layout.clone()
    }
}

fn modified(path: &Path) -> Result<Option<SystemTime>> {
    match fs::metadata(path).and_then(|m| m.modified()) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io(format!("reading {}", path.display()), e)),
    }
}

fn file_size(path: &Path) -> Result<Option<u64>> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(m.len())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io(format!("reading {}", path.display()), e)),
    }
}

fn read_tag(path: &Path) -> Result<Option<Digest>> {
    let Some(raw) = durable::read_optional(path).map_err(ctx("reading", path))? else {
        return Ok(None);
    };
    std::str::from_utf8(&raw)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| StorageError::Corrupt(format!("{} does not hold a digest", path.display())))
}

fn read_manifest(
    layout: &Layout,
    repo: &RepoName,
    digest: Digest,
) -> Result<Option<StoredManifest>> {
    let revision = layout.revision(repo, &digest);
    let Some(media_type) = durable::read_optional(&revision).map_err(ctx("reading", &revision))?
    else {
        return Ok(None);
    };
    let blob = layout.blob(&digest);
    let Some(body) = durable::read_optional(&blob).map_err(ctx("reading", &blob))? else {
        return Err(StorageError::Corrupt(format!(
            "manifest {digest} is linked but its blob is missing"
        )));
    };
    let media_type = String::from_utf8(media_type)
        .map_err(|_| StorageError::Corrupt(format!("{} is not UTF-8", revision.display())))?;
    Ok(Some(StoredManifest {
        digest,
        media_type,
        body: Bytes::from(body),
    }))
}

pub(crate) fn list_dir_names(dir: &Path) -> Result<Option<Vec<String>>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io(format!("listing {}", dir.display()), e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(ctx("listing", dir))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(Some(names))
}

/// Collects every repository under `dir` (one that has a `_manifests` directory).
fn walk_repositories(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<()> {
    walk_marked(dir, prefix, &["_manifests"], out)
}

/// Collects every folder under `dir` that holds one of `markers`.
fn walk_marked(dir: &Path, prefix: &str, markers: &[&str], out: &mut Vec<String>) -> Result<()> {
    let Some(names) = list_dir_names(dir)? else {
        return Ok(());
    };
    if !prefix.is_empty() && names.iter().any(|n| markers.contains(&n.as_str())) {
        out.push(prefix.to_string());
    }
    for name in names {
        if name.starts_with('_') {
            continue;
        }
        let child = dir.join(&name);
        if child.is_dir() {
            let p = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            walk_marked(&child, &p, markers, out)?;
        }
    }
    Ok(())
}

#[async_trait]
impl Storage for FsStorage {
    async fn repo_blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let link = self.layout.layer_link(repo, digest);
        let blob = self.layout.blob(digest);
        blocking(move || {
            if file_size(&link)?.is_none() {
                return Ok(None);
            }
            file_size(&blob)
        })
        .await
    }

    async fn read_blob(
        &self,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<Option<ByteStream>> {
        let path = self.layout.blob(digest);
        blocking(move || streams::read_file(&path, range)).await
    }

    async fn link_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let link = self.layout.layer_link(repo, digest);
        blocking(move || durable::touch(&link).map_err(ctx("linking", &link))).await
    }

    async fn repo_usage(&self, repo: &RepoName) -> Result<u64> {
        // Linked blobs and manifests alike: both are content the repository holds.
        let dirs = [
            self.layout.repo(repo).join("_layers"),
            self.layout.manifests_dir(repo).join("revisions"),
        ];
        let layout = self.layout();
        blocking(move || {
            let mut total = 0;
            for dir in &dirs {
                for alg in list_dir_names(dir)?.unwrap_or_default() {
                    for hex in list_dir_names(&dir.join(&alg))?.unwrap_or_default() {
                        if let Ok(d) = format!("{alg}:{hex}").parse::<Digest>() {
                            total += file_size(&layout.blob(&d))?.unwrap_or(0);
                        }
                    }
                }
            }
            Ok(total)
        })
        .await
    }

    async fn touch_link(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let link = self.layout.layer_link(repo, digest);
        blocking(move || durable::refresh(&link).map_err(ctx("touching", &link))).await
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let link = self.layout.layer_link(repo, digest);
        blocking(move || durable::remove(&link).map_err(ctx("unlinking", &link))).await
    }

    async fn create_upload(&self, id: Uuid, state: &UploadState) -> Result<()> {
        let layout = self.layout();
        let state = serde_json::to_vec(state).expect("upload state serializes");
        blocking(move || {
            // The data file appears with the first byte.
            let dir = layout.upload_dir(id);
            fs::create_dir(&dir).map_err(ctx("creating", &dir))?;
            let path = layout.upload_state(id);
            durable::replace(&layout.tmp_dir(), &path, &state).map_err(ctx("writing", &path))
        })
        .await
    }

    async fn load_upload(&self, id: Uuid) -> Result<Option<UploadState>> {
        let path = self.layout.upload_state(id);
        blocking(move || {
            let Some(raw) = durable::read_optional(&path).map_err(ctx("reading", &path))? else {
                return Ok(None);
            };
            serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|e| StorageError::Corrupt(format!("{}: {e}", path.display())))
        })
        .await
    }

    async fn save_upload(&self, id: Uuid, state: &UploadState) -> Result<()> {
        let layout = self.layout();
        let state = serde_json::to_vec(state).expect("upload state serializes");
        blocking(move || {
            let path = layout.upload_state(id);
            durable::replace(&layout.tmp_dir(), &path, &state).map_err(ctx("writing", &path))
        })
        .await
    }

    async fn upload_writer(
        &self,
        id: Uuid,
        offset: u64,
        pace: Pace,
    ) -> Result<Box<dyn UploadWriter>> {
        let path = self.layout.upload_data(id);
        let writer = blocking(move || streams::FileAppender::open(&path, offset, pace)).await?;
        Ok(Box::new(writer))
    }

    async fn upload_reader(&self, id: Uuid) -> Result<Arc<dyn PartReader>> {
        let path = self.layout.upload_data(id);
        let reader = blocking(move || streams::FilePartReader::open(&path)).await?;
        Ok(Arc::new(reader))
    }

    async fn append_upload(&self, id: Uuid, offset: u64, data: Bytes) -> Result<u64> {
        let path = self.layout.upload_data(id);
        blocking(move || streams::append(&path, offset, &data)).await
    }

    async fn truncate_upload(&self, id: Uuid, len: u64) -> Result<()> {
        let path = self.layout.upload_data(id);
        blocking(move || {
            let f = match fs::OpenOptions::new().write(true).open(&path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound && len == 0 => return Ok(()),
                other => other.map_err(ctx("opening", &path))?,
            };
            let have = f.metadata().map_err(ctx("reading", &path))?.len();
            if have < len {
                return Err(StorageError::Corrupt(format!(
                    "{} holds {have} bytes, fewer than the {len} the upload recorded",
                    path.display()
                )));
            }
            f.set_len(len).map_err(ctx("truncating", &path))
        })
        .await
    }

    async fn read_upload(&self, id: Uuid) -> Result<ByteStream> {
        let path = self.layout.upload_data(id);
        blocking(move || {
            // No data file yet: nothing was received.
            Ok(
                streams::read_file(&path, None)?
                    .unwrap_or_else(|| futures::stream::empty().boxed()),
            )
        })
        .await
    }

    async fn commit_upload(&self, id: Uuid, digest: &Digest, size: u64) -> Result<()> {
        let layout = self.layout();
        let blob = self.layout.blob(digest);
        blocking(move || {
            let data = layout.upload_data(id);
            // An empty blob never got a data file.
            let f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&data)
                .map_err(ctx("opening", &data))?;
            let len = f.metadata().map_err(ctx("reading", &data))?.len();
            if len != size {
                return Err(StorageError::Corrupt(format!(
                    "upload {id} holds {len} bytes, expected {size}"
                )));
            }
            if file_size(&blob)?.is_none() {
                f.sync_data().map_err(ctx("syncing", &data))?;
                durable::publish(&data, &blob).map_err(ctx("publishing", &blob))?;
            }
            drop(f);
            let dir = layout.upload_dir(id);
            fs::remove_dir_all(&dir).map_err(ctx("removing", &dir))
        })
        .await
    }

    async fn delete_upload(&self, id: Uuid) -> Result<bool> {
        let dir = self.layout.upload_dir(id);
        blocking(move || match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StorageError::io(format!("removing {}", dir.display()), e)),
        })
        .await
    }

    async fn list_uploads(&self) -> Result<Vec<(Uuid, SystemTime)>> {
        let layout = self.layout();
        blocking(move || {
            let mut out = Vec::new();
            for name in list_dir_names(&layout.uploads_dir())?.unwrap_or_default() {
                let Ok(id) = Uuid::parse_str(&name) else {
                    continue;
                };
                // The state file changes with every accepted chunk; a session that never
                // got one is dated by its directory.
                let touched = fs::metadata(layout.upload_state(id))
                    .or_else(|_| fs::metadata(layout.upload_dir(id)))
                    .and_then(|m| m.modified());
                if let Ok(t) = touched {
                    out.push((id, t));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        media_type: &str,
        body: Bytes,
    ) -> Result<()> {
        let layout = self.layout();
        let blob = self.layout.blob(digest);
        let revision = self.layout.revision(repo, digest);
        let media_type = media_type.to_string();
        let new_repository = !self.layout.manifests_dir(repo).exists();
        let written = blocking(move || {
            if file_size(&blob)?.is_none() {
                durable::write_atomic(&layout.tmp_dir(), &blob, &body)
                    .map_err(ctx("writing", &blob))?;
            }
            durable::write_atomic(&layout.tmp_dir(), &revision, media_type.as_bytes())
                .map_err(ctx("writing", &revision))
        })
        .await;
        if new_repository {
            self.catalog.forget();
        }
        written
    }

    async fn get_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<StoredManifest>> {
        let layout = self.layout();
        let repo = repo.clone();
        let digest = digest.clone();
        blocking(move || read_manifest(&layout, &repo, digest)).await
    }

    async fn get_tagged_manifest(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<StoredManifest>> {
        let layout = self.layout();
        let tag_path = self.layout.tag(repo, tag);
        let repo = repo.clone();
        blocking(move || {
            let Some(digest) = read_tag(&tag_path)? else {
                return Ok(None);
            };
            read_manifest(&layout, &repo, digest)
        })
        .await
    }

    async fn has_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let revision = self.layout.revision(repo, digest);
        blocking(move || Ok(file_size(&revision)?.is_some())).await
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let revision = self.layout.revision(repo, digest);
        blocking(move || durable::remove(&revision).map_err(ctx("removing", &revision))).await
    }

    async fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>> {
        let path = self.layout.tag(repo, tag);
        blocking(move || read_tag(&path)).await
    }

    async fn set_tag(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<()> {
        let tmp = self.layout.tmp_dir();
        let path = self.layout.tag(repo, tag);
        let content = digest.to_string();
        let new_repository = !self.layout.manifests_dir(repo).exists();
        let written = blocking(move || {
            durable::write_atomic(&tmp, &path, content.as_bytes()).map_err(ctx("writing", &path))
        })
        .await;
        self.tag_lists.invalidate(&self.layout.tags_dir(repo));
        if new_repository {
            self.catalog.forget();
        }
        written
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool> {
        let path = self.layout.tag(repo, tag);
        let removed =
            blocking(move || durable::remove(&path).map_err(ctx("removing", &path))).await;
        self.tag_lists.invalidate(&self.layout.tags_dir(repo));
        removed
    }

    async fn list_tags(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<(Vec<String>, bool)>> {
        let manifests = self.layout.manifests_dir(repo);
        let tags_dir = self.layout.tags_dir(repo);
        let cache = self.tag_lists.clone();
        let after = after.map(str::to_string);
        blocking(move || {
            if !manifests.is_dir() {
                return Ok(None);
            }
            let all = cache.sorted_names(&tags_dir)?;
            let start = match &after {
                Some(a) => all.partition_point(|t| t.as_str() <= a.as_str()),
                None => 0,
            };
            let end = start.saturating_add(limit).min(all.len());
            Ok(Some((all[start..end].to_vec(), end < all.len())))
        })
        .await
    }

    async fn list_repositories(&self) -> Result<Vec<String>> {
        if let Some(list) = self.catalog.get() {
            return Ok(list.as_ref().clone());
        }
        let root = self.layout.repositories();
        let begun = self.catalog.begin();
        let list = blocking(move || {
            let mut out = Vec::new();
            walk_repositories(&root, "", &mut out)?;
            out.sort_unstable();
            Ok(out)
        })
        .await?;
        self.catalog.put(Arc::new(list.clone()), begun);
        Ok(list)
    }

    async fn add_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        record: &ReferrerRecord,
    ) -> Result<()> {
        let tmp = self.layout.tmp_dir();
        let path = self.layout.referrer(repo, subject, &record.digest);
        let data = serde_json::to_vec(record).expect("referrer record serializes");
        blocking(move || durable::write_atomic(&tmp, &path, &data).map_err(ctx("writing", &path)))
            .await
    }

    async fn remove_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        referrer: &Digest,
    ) -> Result<()> {
        let path = self.layout.referrer(repo, subject, referrer);
        blocking(move || {
            durable::remove(&path)
                .map(drop)
                .map_err(ctx("removing", &path))
        })
        .await
    }

    async fn list_referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<ReferrerRecord>> {
        let dir = self.layout.referrers_dir(repo, subject);
        blocking(move || {
            let mut out = Vec::new();
            for name in list_dir_names(&dir)?.unwrap_or_default() {
                let path = dir.join(&name);
                let Some(raw) = durable::read_optional(&path).map_err(ctx("reading", &path))?
                else {
                    continue; // removed while listing
                };
                let record = serde_json::from_slice(&raw)
                    .map_err(|e| StorageError::Corrupt(format!("{}: {e}", path.display())))?;
                out.push(record);
            }
            Ok(out)
        })
        .await
    }
}
