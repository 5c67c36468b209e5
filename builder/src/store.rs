//! The local image store: the registry's content store (docs/design.md, contract 1), opened next to
//! a server that may be serving it. Builds, pulls and loads write here; `sealer-registry
//! serve` serves the same files.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sealer_registry::maintenance::gc::{Collector, GcPolicy};
use sealer_registry::oci::graph::{Graph, Walk};
use sealer_registry::oci::{Digest, RepoName, Tag};
use sealer_registry::services::{Gate, manifests};
use sealer_registry::storage::fs::FsStorage;
use sealer_registry::storage::{LocalFiles, Maintenance, RepoGraph, Storage, StoredManifest};

use crate::cloudimage::{ANNOTATION_REFERENCE, ANNOTATION_ROLE, ROLE_CONTAINER_IMAGE};
use crate::reference::{ImageName, Platform, wanted};

/// The most an image config may hold: it is read whole, and a base image or a pulled
/// one comes from outside.
pub const MAX_CONFIG: u64 = 64 << 20;

#[derive(Clone)]
pub struct Store {
    storage: FsStorage,
}

/// One tag in the store.
#[derive(Debug, Clone)]
pub struct TaggedImage {
    pub repo: RepoName,
    pub tag: String,
    pub manifest: StoredManifest,
}

impl Store {
    pub fn open(root: &Path) -> anyhow::Result<Store> {
        let storage = FsStorage::open_shared(root)
            .with_context(|| format!("cannot open the image store at {}", root.display()))?;
        let store = Store { storage };
        std::fs::create_dir_all(store.scratch())
            .with_context(|| format!("cannot create {}", store.scratch().display()))?;
        store.sweep_scratch();
        Ok(store)
    }

    /// Removes what killed builds and loads left in the scratch folder. Another sealer
    /// process may be using it right now, so only old entries go: a day for working
    /// files, a week for partial downloads (kept so a later fetch resumes them).
    fn sweep_scratch(&self) {
        const DAY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
        let Ok(entries) = std::fs::read_dir(self.scratch()) else {
            return;
        };
        for entry in entries.flatten() {
            let keep_for = match entry.file_name().to_str() {
                Some(n) if n.starts_with("partial-") => 7 * DAY,
                _ => DAY,
            };
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok());
            if age.is_some_and(|a| a > keep_for) {
                let path = entry.path();
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
        }
    }

    pub fn root(&self) -> &Path {
        self.storage.root()
    }

    pub fn storage(&self) -> &FsStorage {
        &self.storage
    }

    /// The builder's own working files (on the store's filesystem, so finished layers
    /// and downloads become blobs by a rename).
    pub fn scratch(&self) -> PathBuf {
        self.root().join("builder/tmp")
    }

    /// The builder's state folder (caches).
    pub fn state_dir(&self) -> PathBuf {
        self.root().join("builder")
    }

    /// Makes a finished file in [`Self::scratch`] the blob `digest`, linked into `repo`.
    pub async fn adopt(
        &self,
        repo: &RepoName,
        file: PathBuf,
        digest: &Digest,
    ) -> anyhow::Result<u64> {
        let size = self.storage.adopt_blob(file, digest).await?;
        self.storage.link_blob(repo, digest).await?;
        Ok(size)
    }

    /// Adds the blobs in `dir` (files named by their SHA-256 hex, already verified, as
    /// `sealer run` leaves them on a host) by hard link: those `digests` name, or every
    /// file there when none are named. Returns how many the store lacked, and of how
    /// many.
    pub async fn import_verified(
        &self,
        dir: &Path,
        digests: Vec<Digest>,
    ) -> anyhow::Result<(usize, usize)> {
        let digests = if digests.is_empty() {
            std::fs::read_dir(dir)
                .with_context(|| format!("cannot read {}", dir.display()))?
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    format!("sha256:{}", e.file_name().to_string_lossy())
                        .parse()
                        .ok()
                })
                .collect()
        } else {
            digests
        };
        let mut added = 0;
        for d in &digests {
            if self
                .storage
                .link_verified_blob(dir.join(d.hex()), d)
                .await?
            {
                added += 1;
            }
        }
        Ok((added, digests.len()))
    }

    /// The digest of every blob the store holds, sorted.
    pub async fn blob_digests(&self) -> anyhow::Result<Vec<Digest>> {
        let mut blobs: Vec<Digest> = self
            .storage
            .list_blobs()
            .await?
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        blobs.sort();
        Ok(blobs)
    }

    /// A small blob's bytes (an image config, a manifest a bundle carried), read through
    /// the store's trait; `None` if the store lacks it. More than `limit` bytes is an
    /// error: the blob came from outside.
    pub async fn read_blob(&self, digest: &Digest, limit: u64) -> anyhow::Result<Option<Bytes>> {
        let Some(mut stream) = self.storage.read_blob(digest, None).await? else {
            return Ok(None);
        };
        let mut data = BytesMut::new();
        while let Some(chunk) = stream.next().await {
            data.extend_from_slice(&chunk?);
            if data.len() as u64 > limit {
                bail!("blob {digest} is larger than {limit} bytes");
            }
        }
        Ok(Some(data.freeze()))
    }

    /// An image config's bytes, if the store holds it (configs are read whole; more
    /// than [`MAX_CONFIG`] is an error).
    pub async fn config(&self, digest: &Digest) -> anyhow::Result<Option<Bytes>> {
        self.read_blob(digest, MAX_CONFIG).await
    }

    /// Stores a small blob (an image config) and links it into `repo`.
    pub async fn put_blob(&self, repo: &RepoName, data: &[u8]) -> anyhow::Result<Digest> {
        let digest = Digest::sha256_of(data);
        if !self.storage.has_blob(&digest).await? {
            let mut f = tempfile::NamedTempFile::new_in(self.scratch())?;
            std::io::Write::write_all(&mut f, data)?;
            let (_, path) = f.keep().context("keeping a blob file")?;
            self.storage.adopt_blob(path, &digest).await?;
        }
        self.storage.link_blob(repo, &digest).await?;
        Ok(digest)
    }

    /// Whether `repo` links the blob.
    pub async fn has_linked(&self, repo: &RepoName, digest: &Digest) -> anyhow::Result<bool> {
        Ok(self.storage.repo_blob_size(repo, digest).await?.is_some())
    }

    /// Links a blob the store already holds into `repo`; `false` if it holds none.
    pub async fn link_if_present(&self, repo: &RepoName, digest: &Digest) -> anyhow::Result<bool> {
        if !self.storage.has_blob(digest).await? {
            return Ok(false);
        }
        self.storage.link_blob(repo, digest).await?;
        Ok(true)
    }

    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        media_type: &str,
        body: Bytes,
    ) -> anyhow::Result<Digest> {
        let digest = Digest::sha256_of(&body);
        self.put_manifest_as(repo, &digest, media_type, body)
            .await?;
        Ok(digest)
    }

    /// Stores a manifest under the digest it was fetched by (verified by the caller).
    pub async fn put_manifest_as(
        &self,
        repo: &RepoName,
        digest: &Digest,
        media_type: &str,
        body: Bytes,
    ) -> anyhow::Result<()> {
        manifests::ingest(&self.storage, repo, digest, media_type, body, None).await?;
        Ok(())
    }

    /// Tags `digest`; when the tag named another image, says so in `notes` (a name
    /// moved by a bundle or a pull is never silent).
    pub async fn tag_noting(
        &self,
        repo: &RepoName,
        tag: &str,
        digest: &Digest,
        notes: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        let parsed = parse_tag(tag)?;
        if let Some(old) = self.storage.resolve_tag(repo, &parsed).await?
            && &old != digest
        {
            notes.push(format!(
                "{}:{tag} now names {digest}, no longer {old}",
                repo.as_str(),
            ));
        }
        self.storage.set_tag(repo, &parsed, digest).await?;
        Ok(())
    }

    pub async fn tag(&self, repo: &RepoName, tag: &str, digest: &Digest) -> anyhow::Result<()> {
        self.storage.set_tag(repo, &parse_tag(tag)?, digest).await?;
        Ok(())
    }

    pub async fn manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> anyhow::Result<Option<StoredManifest>> {
        Ok(self.storage.get_manifest(repo, digest).await?)
    }

    /// The manifest an image name points to in the store.
    pub async fn resolve(&self, image: &ImageName) -> anyhow::Result<Option<StoredManifest>> {
        let repo = image.repo()?;
        if let Some(d) = &image.digest {
            return self.manifest(&repo, d).await;
        }
        let tag =
            Tag::parse(&image.reference()).map_err(|e| anyhow::anyhow!("invalid tag: {}", e.0))?;
        Ok(self.storage.get_tagged_manifest(&repo, &tag).await?)
    }

    /// Like [`Self::resolve`], failing with a clear message when the image is absent.
    pub async fn require(&self, image: &ImageName) -> anyhow::Result<StoredManifest> {
        self.resolve(image).await?.with_context(|| {
            format!(
                "{image} is not in the local store ({}); pull or build it first",
                self.root().display()
            )
        })
    }

    /// Whether the manifest `digest` and everything it needs for `platforms` are in
    /// `repo`.
    pub async fn is_complete(
        &self,
        repo: &RepoName,
        digest: &Digest,
        platforms: &[Platform],
    ) -> anyhow::Result<bool> {
        let graph = self.graph_for(repo, digest, platforms).await?;
        if !graph.absent.is_empty() {
            return Ok(false);
        }
        for blob in graph.blobs.keys() {
            if !self.has_linked(repo, blob).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Every manifest and blob reachable from `digest` in `repo` (children the store
    /// lacks, as in a sparse index, are listed as absent).
    pub async fn graph(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> anyhow::Result<Graph<StoredManifest>> {
        self.graph_for(repo, digest, &[]).await
    }

    /// As [`Self::graph`], following only the index entries `platforms` want.
    pub async fn graph_for(
        &self,
        repo: &RepoName,
        digest: &Digest,
        platforms: &[Platform],
    ) -> anyhow::Result<Graph<StoredManifest>> {
        let mut source = RepoGraph {
            store: &self.storage,
            repo,
        };
        let walk = Walk::following(|entry| wanted(platforms, entry));
        Ok(walk.run(&mut source, [digest.clone()]).await?)
    }

    /// Links everything reachable from `digest` in `from` into `to` (a CloudImage's
    /// repository carries its container images).
    pub async fn link_graph(
        &self,
        from: &RepoName,
        to: &RepoName,
        digest: &Digest,
    ) -> anyhow::Result<()> {
        let graph = self.graph(from, digest).await?;
        for blob in graph.blobs.keys() {
            if !self.has_linked(to, blob).await? {
                self.storage.link_blob(to, blob).await?;
            }
        }
        for m in graph.manifests {
            self.storage
                .put_manifest(to, &m.digest, &m.media_type, m.body)
                .await?;
        }
        Ok(())
    }

    /// Gives each container image a CloudImage carries its own name (the reference it
    /// was built from), linked into that repository. Returns what deserves a word: a
    /// name that moved to another image, and names not given because they would take a
    /// CloudImage's name (the one being unfolded, or one already in the store): an
    /// image's annotation is anyone's to write.
    pub async fn unfold(&self, repo: &RepoName, digest: &Digest) -> anyhow::Result<Vec<String>> {
        let mut notes = Vec::new();
        let Some(top) = self.manifest(repo, digest).await? else {
            return Ok(notes);
        };
        for child in top.parse()?.manifests {
            if child.annotations.get(ANNOTATION_ROLE).map(String::as_str)
                != Some(ROLE_CONTAINER_IMAGE)
            {
                continue;
            }
            let Some(reference) = child.annotations.get(ANNOTATION_REFERENCE) else {
                continue;
            };
            let name = ImageName::parse(reference)
                .map_err(|e| anyhow::anyhow!("{digest} carries an invalid reference: {e}"))?;
            let own = name.repo()?;
            if self.manifest(repo, &child.digest).await?.is_none() {
                continue;
            }
            if &own == repo || self.holds_cloud_image(&own, name.tag.as_deref()).await? {
                notes.push(format!(
                    "{name} not tagged: a carried image may not take a CloudImage's name"
                ));
                continue;
            }
            self.link_graph(repo, &own, &child.digest).await?;
            if let Some(tag) = &name.tag {
                self.tag_noting(&own, tag, &child.digest, &mut notes)
                    .await?;
            }
        }
        Ok(notes)
    }

    /// Gives the image `source` the name `target` (`sealer tag`): its graph linked into
    /// the target's repository, then tagged there.
    pub async fn tag_as(&self, source: &ImageName, target: &ImageName) -> anyhow::Result<Digest> {
        let top = self.require(source).await?;
        let tag = target
            .tag
            .clone()
            .filter(|_| target.digest.is_none())
            .context("the new name needs a tag, not a digest")?;
        let (from, to) = (source.repo()?, target.repo()?);
        if from != to {
            self.link_graph(&from, &to, &top.digest).await?;
        }
        self.tag(&to, &tag, &top.digest).await?;
        Ok(top.digest)
    }

    /// Whether `repo:tag` names a CloudImage in the store.
    async fn holds_cloud_image(&self, repo: &RepoName, tag: Option<&str>) -> anyhow::Result<bool> {
        let Some(tag) = tag.and_then(|t| Tag::parse(t).ok()) else {
            return Ok(false);
        };
        let Some(m) = self.storage.get_tagged_manifest(repo, &tag).await? else {
            return Ok(false);
        };
        Ok(is_cloud_image(&m))
    }

    /// Every tagged image in the store, sorted by name and tag.
    pub async fn tagged_images(&self) -> anyhow::Result<Vec<TaggedImage>> {
        let mut out = Vec::new();
        let mut repos = self.storage.list_repositories().await?;
        repos.sort();
        for name in repos {
            let Ok(repo) = RepoName::parse(&name) else {
                continue;
            };
            let Some((tags, _)) = self.storage.list_tags(&repo, None, usize::MAX).await? else {
                continue;
            };
            for tag in tags {
                let t = Tag::parse(&tag).map_err(|e| anyhow::anyhow!("{}", e.0))?;
                if let Some(manifest) = self.storage.get_tagged_manifest(&repo, &t).await? {
                    out.push(TaggedImage {
                        repo: repo.clone(),
                        tag,
                        manifest,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Removes a tag, then whatever of its repository no remaining tag reaches, then
    /// every blob no repository links. Returns the number of blobs and bytes freed.
    pub async fn remove(&self, image: &ImageName) -> anyhow::Result<(usize, u64)> {
        let repo = image.repo()?;
        let tag = image
            .tag
            .as_deref()
            .filter(|_| image.digest.is_none())
            .context("name a tag to remove (NAME:TAG)")?;
        let t = Tag::parse(tag).map_err(|e| anyhow::anyhow!("{}", e.0))?;
        if !self.storage.delete_tag(&repo, &t).await? {
            bail!("{image} is not in the local store");
        }
        let (tags, _) = self
            .storage
            .list_tags(&repo, None, usize::MAX)
            .await?
            .unwrap_or_default();
        // What no remaining tag reaches leaves the repository, then every blob no
        // repository links leaves the store: the registry's collector, with no grace.
        let freed = self.collect(repo.clone()).await?;
        if tags.is_empty() {
            self.storage.remove_repository(&repo).await?;
        }
        Ok(freed)
    }

    /// Removes every blob that no repository links, and first, in `repo`, what no tag
    /// reaches. Returns the number of blobs and bytes freed. Not safe while a push into
    /// this store is in flight from another process (`sealer-registry gc` is).
    async fn collect(&self, repo: RepoName) -> anyhow::Result<(usize, u64)> {
        let policy = GcPolicy {
            grace: std::time::Duration::ZERO,
            untagged_after: Some(std::time::Duration::ZERO),
        };
        let collector = Collector::new(
            std::sync::Arc::new(self.storage.clone()),
            Gate::default(),
            policy,
        )
        .only(vec![repo]);
        let report = collector.run(false).await?;
        Ok((report.blobs, report.bytes))
    }
}

fn parse_tag(tag: &str) -> anyhow::Result<Tag> {
    Tag::parse(tag).map_err(|e| anyhow::anyhow!("invalid tag {tag:?}: {}", e.0))
}

/// Whether a manifest is a CloudImage: an index with a rootfs entry.
pub fn is_cloud_image(m: &StoredManifest) -> bool {
    m.parse().is_ok_and(|c| {
        c.manifests.iter().any(|m| {
            m.annotations.get(ANNOTATION_ROLE).map(String::as_str)
                == Some(crate::cloudimage::ROLE_ROOTFS)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn opening_sweeps_only_old_leftovers_from_the_scratch_folder() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let scratch = store.scratch();
        let aged = |name: &str, days: u64| {
            let f = std::fs::File::create(scratch.join(name)).unwrap();
            f.set_modified(SystemTime::now() - Duration::from_secs(days * 24 * 3600))
                .unwrap();
        };
        aged(".tmpOLD", 2);
        aged(".tmpNEW", 0);
        aged("partial-sha256-aa", 2);
        aged("partial-sha256-bb", 8);
        Store::open(root.path()).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&scratch)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, [".tmpNEW", "partial-sha256-aa"]);
    }

    #[tokio::test]
    async fn a_manifest_with_a_subject_is_listed_as_its_referrer() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let repo = RepoName::parse("example.com/app").unwrap();
        let subject = Digest::sha256_of(b"the image");
        let body = Bytes::from(
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": "application/vnd.example.signature",
                "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                           "digest": Digest::sha256_of(b"{}").to_string(), "size": 2},
                "layers": [],
                "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": subject.to_string(), "size": 9},
            }))
            .unwrap(),
        );
        let digest = Digest::sha256_of(&body);
        let media_type = "application/vnd.oci.image.manifest.v1+json";
        store
            .put_manifest_as(&repo, &digest, media_type, body)
            .await
            .unwrap();
        let listed = store.storage.list_referrers(&repo, &subject).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].digest, digest);
        let kind = listed[0].artifact_type.as_deref();
        assert_eq!(kind, Some("application/vnd.example.signature"));
    }
}
