//! The filesystem backend's whole-store work ([`Maintenance`]: inventory, timed removal,
//! re-hashing, quarantine) and its local-file capability ([`LocalFiles`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use uuid::Uuid;

use super::{FsStorage, blocking, ctx, durable, file_size, list_dir_names, modified, walk_marked};
use crate::oci::{Digest, RepoName};
use crate::storage::{BlobFile, LinkEntry, LocalFiles, Maintenance, Result, StorageError};

#[async_trait]
impl Maintenance for FsStorage {
    async fn has_blob(&self, digest: &Digest) -> Result<bool> {
        let blob = self.layout.blob(digest);
        blocking(move || Ok(file_size(&blob)?.is_some())).await
    }

    /// Every blob in the store with its size (for garbage collection by `sealer rmi`).
    async fn list_blobs(&self) -> Result<Vec<(Digest, u64)>> {
        let root = self.layout.root().join("blobs");
        blocking(move || {
            let mut out = Vec::new();
            for alg in list_dir_names(&root)?.unwrap_or_default() {
                for hh in list_dir_names(&root.join(&alg))?.unwrap_or_default() {
                    let dir = root.join(&alg).join(&hh);
                    for hex in list_dir_names(&dir)?.unwrap_or_default() {
                        let Ok(d) = format!("{alg}:{hex}").parse::<Digest>() else {
                            continue;
                        };
                        if let Some(size) = file_size(&dir.join(&hex))? {
                            out.push((d, size));
                        }
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// Every repository that links a blob or holds a manifest (one with pushed layers
    /// and no manifest yet included).
    async fn list_repositories_with_links(&self) -> Result<Vec<String>> {
        let dir = self.layout.repositories();
        blocking(move || {
            let mut out = Vec::new();
            walk_marked(&dir, "", &["_manifests", "_layers"], &mut out)?;
            Ok(out)
        })
        .await
    }

    /// Removes a blob from the store and every link to it.
    async fn remove_blob(&self, digest: &Digest) -> Result<bool> {
        let blob = self.layout.blob(digest);
        blocking(move || durable::remove(&blob).map_err(ctx("removing", &blob))).await
    }

    /// Every blob a repository links (layers and manifests).
    async fn repo_links(&self, repo: &RepoName) -> Result<Vec<Digest>> {
        let dirs = [
            self.layout.repo(repo).join("_layers"),
            self.layout.manifests_dir(repo).join("revisions"),
        ];
        blocking(move || {
            let mut out = Vec::new();
            for dir in dirs {
                for alg in list_dir_names(&dir)?.unwrap_or_default() {
                    for hex in list_dir_names(&dir.join(&alg))?.unwrap_or_default() {
                        if let Ok(d) = format!("{alg}:{hex}").parse::<Digest>() {
                            out.push(d);
                        }
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// A repository's links (layers and manifests) with the time each was last made or
    /// looked at: what garbage collection's grace period is counted from.
    async fn link_entries(&self, repo: &RepoName) -> Result<Vec<LinkEntry>> {
        let dirs = [
            (self.layout.repo(repo).join("_layers"), false),
            (self.layout.manifests_dir(repo).join("revisions"), true),
        ];
        blocking(move || {
            let mut out = Vec::new();
            for (dir, manifest) in dirs {
                for alg in list_dir_names(&dir)?.unwrap_or_default() {
                    for hex in list_dir_names(&dir.join(&alg))?.unwrap_or_default() {
                        let Ok(digest) = format!("{alg}:{hex}").parse::<Digest>() else {
                            continue;
                        };
                        let path = dir.join(&alg).join(&hex);
                        let Some(modified) = modified(&path)? else {
                            continue; // removed while listing
                        };
                        out.push(LinkEntry {
                            digest,
                            manifest,
                            modified,
                        });
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// Every blob file with its size and modification time.
    async fn blob_files(&self) -> Result<Vec<BlobFile>> {
        let layout = self.layout();
        let blobs = self.list_blobs().await?;
        blocking(move || {
            let mut out = Vec::with_capacity(blobs.len());
            for (digest, size) in blobs {
                if let Some(modified) = modified(&layout.blob(&digest))? {
                    out.push(BlobFile {
                        digest,
                        size,
                        modified,
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    /// Removes a blob file unless it changed at or after `cutoff` (a push made it again
    /// since it was listed); returns whether it went.
    async fn remove_blob_older_than(&self, digest: &Digest, cutoff: SystemTime) -> Result<bool> {
        let blob = self.layout.blob(digest);
        blocking(move || match modified(&blob)? {
            Some(t) if t < cutoff => durable::remove(&blob).map_err(ctx("removing", &blob)),
            _ => Ok(false),
        })
        .await
    }

    /// What a blob's content hashes to now (`None`: it is gone), telling `on_bytes` how
    /// much was read as it goes.
    async fn hash_blob(
        &self,
        digest: &Digest,
        on_bytes: Box<dyn Fn(u64) + Send + Sync>,
    ) -> Result<Option<Digest>> {
        let path = self.layout.blob(digest);
        let algorithm = digest.algorithm();
        blocking(move || {
            let mut file = match fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(StorageError::io(format!("opening {}", path.display()), e)),
            };
            let mut hasher = algorithm.hasher();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = io::Read::read(&mut file, &mut buf).map_err(ctx("reading", &path))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                on_bytes(n as u64);
            }
            Ok(Some(hasher.finish()))
        })
        .await
    }

    /// Moves a blob out of the store into `quarantine/`, where it is kept for inspection
    /// and never served; returns where it went.
    async fn quarantine_blob(&self, digest: &Digest) -> Result<String> {
        let blob = self.layout.blob(digest);
        let stamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let to = self.layout.quarantine_dir().join(format!(
            "{}-{}-{stamp}",
            digest.algorithm(),
            digest.hex()
        ));
        blocking(move || {
            durable::ensure_dir(to.parent().expect("a parent")).map_err(ctx("creating", &to))?;
            fs::rename(&blob, &to).map_err(ctx("quarantining", &blob))?;
            Ok(to.display().to_string())
        })
        .await
    }

    /// Removes a repository with its links and tags (the blobs stay).
    async fn remove_repository(&self, repo: &RepoName) -> Result<()> {
        let tags = self.layout.tags_dir(repo);
        self.tag_lists.invalidate(&tags);
        self.catalog.forget();
        let layout = self.layout();
        let repo = repo.clone();
        blocking(move || {
            let dir = layout.repo(&repo);
            for sub in ["_layers", "_manifests", "_referrers"] {
                let p = dir.join(sub);
                match fs::remove_dir_all(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StorageError::io(format!("removing {}", p.display()), e)),
                }
            }
            // Parent folders of nested names go when they hold nothing else.
            let repos = layout.repositories();
            let mut d = dir.as_path();
            while d != repos && fs::remove_dir(d).is_ok() {
                d = d.parent().expect("below the repositories folder");
            }
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl LocalFiles for FsStorage {
    fn root(&self) -> &Path {
        self.layout.root()
    }

    /// Makes `file` the blob `digest`, which its writer computed while writing it. The
    /// file must be on the store's filesystem (it is renamed, not copied); it is synced
    /// first, so the blob is durable once visible. Returns the blob's size.
    async fn adopt_blob(&self, file: PathBuf, digest: &Digest) -> Result<u64> {
        let blob = self.layout.blob(digest);
        blocking(move || {
            let f = fs::File::open(&file).map_err(ctx("opening", &file))?;
            let size = f.metadata().map_err(ctx("reading", &file))?.len();
            if file_size(&blob)?.is_some() {
                drop(f);
                fs::remove_file(&file).map_err(ctx("removing", &file))?;
                return Ok(size);
            }
            f.sync_data().map_err(ctx("syncing", &file))?;
            drop(f);
            durable::publish(&file, &blob).map_err(ctx("publishing", &blob))?;
            Ok(size)
        })
        .await
    }

    /// Adds `src` as the blob `digest` by a hard link (no copy, no hashing): for files
    /// whose content is already verified under their digest, such as the blobs `sealer
    /// run` leaves on a host. `src` must be on the store's filesystem. Returns whether the
    /// store lacked the blob.
    async fn link_verified_blob(&self, src: PathBuf, digest: &Digest) -> Result<bool> {
        let blob = self.layout.blob(digest);
        let tmp = self
            .layout
            .tmp_dir()
            .join(format!("link-{}-{}", digest.hex(), Uuid::new_v4()));
        blocking(move || {
            if file_size(&blob)?.is_some() {
                return Ok(false);
            }
            // Durable before it is visible, as for any blob.
            fs::File::open(&src)
                .and_then(|f| f.sync_data())
                .map_err(ctx("syncing", &src))?;
            durable::ensure_dir(tmp.parent().expect("tmp has a parent"))
                .map_err(ctx("creating", &tmp))?;
            fs::hard_link(&src, &tmp).map_err(ctx("linking", &src))?;
            durable::publish(&tmp, &blob).map_err(ctx("publishing", &blob))?;
            Ok(true)
        })
        .await
    }

    /// The file holding a blob, if the store has it (for local readers that need a
    /// seekable file, such as layer unpacking).
    fn blob_file(&self, digest: &Digest) -> Option<PathBuf> {
        let p = self.layout.blob(digest);
        p.is_file().then_some(p)
    }
}
