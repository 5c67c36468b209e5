//! Moving images between the local store and registries: fetch (build, `sealer pull`)
//! and push. Whole graphs, blobs in parallel, only what the other side lacks.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use sealer_client::download::{Download, DownloadError, Sink};
use sealer_client::{RemoteManifest, UpstreamClient};
use sealer_registry::oci::graph::{self, Walk};
use sealer_registry::oci::{Digest, Hasher, RepoName};
use sealer_registry::storage::{Storage, StoredManifest};
use tokio::io::AsyncWriteExt;

use crate::progress::{Progress, Task};
use crate::reference::{ImageName, Platform, wanted};
use crate::remote::Registries;
use crate::store::Store;

/// When a fetch asks the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Always resolve the reference upstream (blobs present are still not fetched).
    Always,
    /// Only when the store lacks the image or part of it.
    #[default]
    Missing,
    /// Never: the store must hold it.
    Never,
}

impl std::str::FromStr for PullPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(PullPolicy::Always),
            "missing" => Ok(PullPolicy::Missing),
            "never" => Ok(PullPolicy::Never),
            _ => Err(format!(
                "invalid pull policy {s:?}: use always, missing or never"
            )),
        }
    }
}

/// An image now in the store.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub image: ImageName,
    pub repo: RepoName,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// It was already complete in the store; the registry was not asked.
    pub from_store: bool,
    /// Names that moved to another image, and carried images' names not given.
    pub notes: Vec<String>,
}

pub struct Transfer<'a> {
    store: &'a Store,
    registries: &'a Registries,
    progress: &'a dyn Progress,
    /// Blobs moved at once.
    jobs: usize,
    /// One download per blob, however many images share it.
    blob_locks: std::sync::Mutex<BTreeMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
}

impl<'a> Transfer<'a> {
    pub fn new(
        store: &'a Store,
        registries: &'a Registries,
        progress: &'a dyn Progress,
        jobs: usize,
    ) -> Transfer<'a> {
        Transfer {
            store,
            registries,
            progress,
            jobs,
            blob_locks: Default::default(),
        }
    }

    /// Fetches `image` (for `platforms`; all when empty) into the store under its own
    /// repository and tags it.
    pub async fn fetch(
        &self,
        image: &ImageName,
        platforms: &[Platform],
        policy: PullPolicy,
    ) -> anyhow::Result<Fetched> {
        let repo = image.repo()?;
        if policy != PullPolicy::Always
            && let Some(m) = self.store.resolve(image).await?
            && self.store.is_complete(&repo, &m.digest, platforms).await?
        {
            return Ok(Fetched {
                image: image.clone(),
                repo,
                size: m.body.len() as u64,
                digest: m.digest,
                media_type: m.media_type,
                from_store: true,
                notes: Vec::new(),
            });
        }
        if policy == PullPolicy::Never {
            bail!("{image} is not (completely) in the local store and --pull is never");
        }
        let client = self.registries.client(&image.host)?;
        let remote = image.remote.as_str();
        let top = client
            .get_manifest(remote, &image.reference())
            .await
            .context("cannot fetch the manifest")?
            .with_context(|| format!("the registry {} has no such image", image.host))?;
        if let Some(d) = &image.digest
            && &top.digest != d
        {
            bail!("the registry sent manifest {} instead", top.digest);
        }
        let top_size = top.body.len() as u64;
        let top_digest = top.digest.clone();
        let top_type = top.media_type.clone();
        let mut source = Fetching {
            store: self.store,
            repo: &repo,
            client: &client,
            remote,
            top: Some(stored(top)),
        };
        let walk = Walk::following(|entry| wanted(platforms, entry));
        let graph = walk.run(&mut source, [top_digest.clone()]).await?;
        let blobs = graph.blobs.into_values().map(|b| (b.digest, b.size));
        let repo_ref = &repo;
        let client_ref = &client;
        futures::stream::iter(blobs)
            .map(|(d, size)| async move {
                self.fetch_blob(client_ref, remote, repo_ref, &d, size)
                    .await
                    .with_context(|| format!("blob {d}"))
            })
            .buffer_unordered(self.jobs.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        // Children before parents: a manifest is in the store only once all it needs is.
        for m in graph.manifests.into_iter().rev() {
            self.store
                .put_manifest_as(&repo, &m.digest, &m.media_type, m.body)
                .await?;
        }
        let mut notes = Vec::new();
        if let Some(tag) = &image.tag {
            self.store
                .tag_noting(&repo, tag, &top_digest, &mut notes)
                .await?;
        }
        notes.extend(self.store.unfold(&repo, &top_digest).await?);
        Ok(Fetched {
            image: image.clone(),
            repo,
            digest: top_digest,
            media_type: top_type,
            size: top_size,
            from_store: false,
            notes,
        })
    }

    /// Fetches several images at once; on failure, the error lists every image that
    /// could not be fetched.
    pub async fn fetch_all(
        &self,
        images: &[ImageName],
        platforms: &[Platform],
        policy: PullPolicy,
    ) -> anyhow::Result<Vec<Fetched>> {
        let results: Vec<_> = futures::stream::iter(images)
            .map(|i| async move { (i, self.fetch(i, platforms, policy).await) })
            .buffered(self.jobs.clamp(1, 4))
            .collect()
            .await;
        let mut fetched = Vec::new();
        let mut failed = Vec::new();
        for (image, r) in results {
            match r {
                Ok(f) => fetched.push(f),
                Err(e) => failed.push(format!("  {image}: {e:#}")),
            }
        }
        if !failed.is_empty() {
            bail!(
                "{} of {} container image(s) cannot be fetched:\n{}",
                failed.len(),
                images.len(),
                failed.join("\n")
            );
        }
        Ok(fetched)
    }

    /// Downloads one blob into the store (resuming a partial download left by an earlier
    /// attempt or run), verifies it, and links it into `repo`.
    async fn fetch_blob(
        &self,
        client: &UpstreamClient,
        remote: &str,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> anyhow::Result<()> {
        let lock = self
            .blob_locks
            .lock()
            .expect("blob locks")
            .entry(digest.clone())
            .or_default()
            .clone();
        let _guard = lock.lock().await;
        if self.store.has_linked(repo, digest).await?
            || self.store.link_if_present(repo, digest).await?
        {
            return Ok(());
        }
        let partial = self.store.scratch().join(format!(
            "partial-{}-{}",
            digest.algorithm().as_str(),
            digest.hex()
        ));
        // Another sealer process may be downloading the same blob: wait for its lock,
        // then use what it finished.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&partial)
            .with_context(|| format!("cannot write {}", partial.display()))?;
        let file =
            tokio::task::spawn_blocking(move || crate::filelock::lock_exclusive(file)).await??;
        if self.store.link_if_present(repo, digest).await? {
            let _ = std::fs::remove_file(&partial);
            return Ok(());
        }
        // Resume after what an earlier attempt left, hashing it again first.
        let algorithm = digest.algorithm();
        let (file, hasher, offset) = tokio::task::spawn_blocking(move || {
            let mut hasher = algorithm.hasher();
            let len = hasher.update_from(&file)?;
            if len >= size {
                file.set_len(0)?;
                return Ok::<_, std::io::Error>((file, algorithm.hasher(), 0));
            }
            Ok((file, hasher, len))
        })
        .await??;
        let task = self.progress.task(&short(digest), size);
        task.advance(offset);
        let mut sink = PartialFile {
            file: tokio::fs::File::from_std(file),
            hasher: Some(hasher),
            task: task.as_ref(),
            progress: self.progress,
            digest,
        };
        let wanted = Download {
            remote,
            digest,
            declared: Some(size),
            from: offset,
        };
        if let Err(e) = client.download(&wanted, &mut sink).await {
            if e.spoils_partial() {
                let _ = tokio::fs::remove_file(&partial).await;
            }
            return Err(match e {
                DownloadError::Absent(_) => anyhow::anyhow!("the registry does not have it"),
                e => e.into(),
            });
        }
        let file = sink.file;
        // Still holding the lock: a waiting process sees the blob once it gets it.
        self.store.adopt(repo, partial, digest).await?;
        drop(file);
        task.finish("done");
        Ok(())
    }

    /// Pushes the image `local` from the store to `target` (the whole graph the store
    /// holds; blobs the registry already has are skipped). Returns the top digest.
    pub async fn push(&self, local: &ImageName, target: &ImageName) -> anyhow::Result<Digest> {
        let repo = local.repo()?;
        let top = self.store.require(local).await?;
        self.push_graph(&repo, &top.digest, target).await?;
        Ok(top.digest)
    }

    /// Pushes the graph under manifest `top` of the store's `repo` to `target` (tagged
    /// with its tag, else by digest), skipping what the registry already has.
    pub async fn push_graph(
        &self,
        repo: &RepoName,
        top: &Digest,
        target: &ImageName,
    ) -> anyhow::Result<()> {
        let client = self.registries.client(&target.host)?;
        let remote = target.remote.as_str();
        // The tag already names this manifest: the registry holds the whole graph (it
        // took the manifest only once everything it refers to was there).
        if let Some(tag) = &target.tag
            && client.head_manifest(remote, tag).await?.as_ref() == Some(top)
        {
            return Ok(());
        }
        let graph = self.store.graph(repo, top).await?;
        let manifests = graph.manifests;
        let blobs = graph.blobs.into_values().map(|b| (b.digest, b.size));
        let client_ref = &client;
        futures::stream::iter(blobs)
            .map(|(d, size)| async move {
                self.push_blob(client_ref, remote, &d, size)
                    .await
                    .with_context(|| format!("pushing blob {d} to {target}"))
            })
            .buffer_unordered(self.jobs.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        for m in manifests.iter().rev() {
            let is_top = &m.digest == top;
            let reference = match (&target.tag, is_top) {
                (Some(tag), true) => tag.clone(),
                _ => m.digest.to_string(),
            };
            if !is_top && client.has_manifest(remote, &reference).await? {
                continue;
            }
            let pushed = client
                .put_manifest(remote, &reference, &m.media_type, m.body.clone())
                .await
                .with_context(|| format!("pushing manifest {} to {target}", m.digest));
            if let Err(e) = pushed {
                let listed = m.parse()?.manifests;
                let absent = listed
                    .iter()
                    .filter(|c| !manifests.iter().any(|m| m.digest == c.digest))
                    .count();
                if absent > 0 {
                    return Err(e.context(format!(
                        "index {} lists {absent} manifest(s) the store does not hold (only some \
                         platforms were fetched, with --platform), and {} requires all of them; \
                         pull or build without --platform, or push to a registry that accepts \
                         sparse indexes such as sealer-registry",
                        m.digest, target.host
                    )));
                }
                return Err(e);
            }
        }
        Ok(())
    }

    async fn push_blob(
        &self,
        client: &UpstreamClient,
        remote: &str,
        digest: &Digest,
        size: u64,
    ) -> anyhow::Result<()> {
        let task = self.progress.task(&short(digest), size);
        if client.has_blob(remote, digest).await? {
            task.finish("exists");
            return Ok(());
        }
        let task: Arc<dyn crate::progress::Task> = Arc::from(task);
        let storage = self.store.storage().clone();
        let d = digest.clone();
        let t = task.clone();
        let body = move || {
            let storage = storage.clone();
            let d = d.clone();
            let t = t.clone();
            let stream = futures::stream::once(async move {
                match storage.read_blob(&d, None).await {
                    Ok(Some(s)) => Ok(s),
                    Ok(None) => Err(std::io::Error::other(format!(
                        "blob {d} is missing from the store"
                    ))),
                    Err(e) => Err(std::io::Error::other(e)),
                }
            })
            .try_flatten()
            .inspect_ok(move |chunk| t.advance(chunk.len() as u64));
            Some(reqwest::Body::wrap_stream(stream))
        };
        client.push_blob(remote, digest, size, &body).await?;
        task.finish("pushed");
        Ok(())
    }
}

/// A pull's end of a blob download: the partial file kept for resuming (hashed as it
/// grows), and the progress bar.
struct PartialFile<'a> {
    file: tokio::fs::File,
    hasher: Option<Hasher>,
    task: &'a dyn Task,
    progress: &'a dyn Progress,
    digest: &'a Digest,
}

#[async_trait::async_trait]
impl Sink for PartialFile<'_> {
    async fn write(&mut self, chunk: Bytes) -> anyhow::Result<()> {
        self.file.write_all(&chunk).await?;
        self.hasher
            .as_mut()
            .expect("written before finish")
            .update(&chunk);
        self.task.advance(chunk.len() as u64);
        Ok(())
    }

    fn resuming(&mut self, written: u64, why: &str) {
        let digest = short(self.digest);
        self.progress
            .message(&format!("{digest}: {why}; resuming at byte {written}"));
    }

    async fn finish(&mut self) -> anyhow::Result<Digest> {
        self.file.flush().await?;
        Ok(self.hasher.take().expect("finished once").finish())
    }
}

/// A pulled image's manifests, as the graph walk reads them: the store's copy when it
/// has one, else the registry's (which must have it: a registry holds whole graphs).
struct Fetching<'a> {
    store: &'a Store,
    repo: &'a RepoName,
    client: &'a UpstreamClient,
    remote: &'a str,
    /// The top manifest, already fetched to resolve the reference.
    top: Option<StoredManifest>,
}

#[async_trait::async_trait]
impl graph::Source for Fetching<'_> {
    type Node = StoredManifest;
    type Error = anyhow::Error;

    async fn manifest(
        &mut self,
        digest: &Digest,
        _: Option<&str>,
    ) -> anyhow::Result<Option<StoredManifest>> {
        if self.top.as_ref().is_some_and(|t| &t.digest == digest) {
            return Ok(self.top.take());
        }
        if let Some(m) = self.store.manifest(self.repo, digest).await? {
            return Ok(Some(m));
        }
        let m = self
            .client
            .get_manifest(self.remote, &digest.to_string())
            .await?
            .with_context(|| format!("the registry lacks manifest {digest}"))?;
        Ok(Some(stored(m)))
    }
}

fn stored(m: RemoteManifest) -> StoredManifest {
    StoredManifest {
        digest: m.digest,
        media_type: m.media_type,
        body: m.body,
    }
}

/// A digest as progress lines show it.
pub fn short(d: &Digest) -> String {
    d.hex().chars().take(12).collect()
}
