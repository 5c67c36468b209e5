//! A bundle's table of contents, read at start-up without reading its blobs: where each
//! blob sits in the file, and which images (names, manifests, blobs) it holds.
//!
//! Tar headers are read by seeking from one to the next, so start-up reads a few bytes
//! per blob whatever the bundle's size. Manifests are small and are read and verified
//! here; the other blobs are verified in the background (see `super::verify`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use oci_spec::distribution::Reference as ImageReference;
use oci_spec::image::ImageIndex;

use super::tar_guard::Guarded;
use crate::oci::{Digest, RepoName, annotations, manifest};
use crate::storage::ReferrerRecord;

/// Largest `index.json` or manifest read into memory.
const MAX_DOCUMENT: u64 = 64 << 20;

/// Where a blob's bytes are: which bundle file, at which offset.
#[derive(Debug, Clone, Copy)]
pub struct Location {
    pub file: usize,
    pub offset: u64,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct Manifest {
    pub media_type: String,
    pub body: Bytes,
}

/// What one repository of the bundles holds.
#[derive(Debug, Default)]
pub struct Repository {
    pub tags: BTreeMap<String, Digest>,
    pub manifests: HashSet<Digest>,
    /// Blobs its images reference (and its manifests, which are blobs too).
    pub blobs: HashSet<Digest>,
    pub referrers: HashMap<Digest, Vec<ReferrerRecord>>,
}

#[derive(Debug)]
pub struct BundleIndex {
    pub files: Vec<(PathBuf, Arc<File>)>,
    pub blobs: HashMap<Digest, Location>,
    pub manifests: HashMap<Digest, Manifest>,
    pub repositories: BTreeMap<RepoName, Repository>,
}

impl BundleIndex {
    /// Reads the table of contents of each bundle (plain OCI layout tars). An image named
    /// in several bundles is served from the last one.
    pub fn open(paths: &[PathBuf]) -> anyhow::Result<BundleIndex> {
        let mut index = BundleIndex {
            files: Vec::new(),
            blobs: HashMap::new(),
            manifests: HashMap::new(),
            repositories: BTreeMap::new(),
        };
        for path in paths {
            index
                .add(path)
                .with_context(|| format!("cannot serve the bundle {}", path.display()))?;
        }
        Ok(index)
    }

    /// Bytes of all blobs.
    pub fn total_bytes(&self) -> u64 {
        self.blobs.values().map(|l| l.size).sum()
    }

    pub fn read(&self, at: Location) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0; at.size as usize];
        self.files[at.file].1.read_exact_at(&mut buf, at.offset)?;
        Ok(buf)
    }

    fn add(&mut self, path: &Path) -> anyhow::Result<()> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut magic = [0u8; 4];
        let n = file.read_at(&mut magic, 0)?;
        if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] || n >= 2 && magic[..2] == [0x1f, 0x8b] {
            bail!(
                "it is compressed, and blobs are served from the file in place: decompress \
                 it first (`zstd -d` or `gunzip`), or `sealer load` it into a store"
            );
        }
        let number = self.files.len();
        let mut index_json = None;
        let (reader, guard) = Guarded::new(&file, u64::MAX);
        let mut archive = tar::Archive::new(reader);
        let mut entries = archive.entries_with_seek().context("not a tar file")?;
        while let Some(entry) = guard.next(&mut entries) {
            let entry = entry.context("not a readable tar file")?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = entry.path()?.to_string_lossy().into_owned();
            let name = name.trim_start_matches("./");
            let at = Location {
                file: number,
                offset: entry.raw_file_position(),
                size: entry.size(),
            };
            if at.offset + at.size > len {
                bail!("it is cut short: {name} ends past the end of the file");
            }
            if name == "index.json" {
                index_json = Some(at);
            } else if let Some(rest) = name.strip_prefix("blobs/") {
                let Some((alg, hex)) = rest.split_once('/') else {
                    continue;
                };
                let digest: Digest = format!("{alg}:{hex}")
                    .parse()
                    .with_context(|| format!("{name} does not name a valid digest"))?;
                self.blobs.insert(digest, at);
            }
        }
        self.files.push((path.to_path_buf(), Arc::new(file)));
        let Some(at) = index_json else {
            bail!("it has no index.json: not an OCI image layout");
        };
        if at.size > MAX_DOCUMENT {
            bail!("its index.json is larger than {MAX_DOCUMENT} bytes");
        }
        let index: ImageIndex = serde_json::from_slice(&self.read(at)?)
            .context("its index.json is not a valid OCI index")?;
        for entry in index.manifests() {
            let notes = entry.annotations().as_ref();
            let Some(written) = notes.and_then(|n| {
                n.get(annotations::IMAGE_NAME)
                    .or_else(|| n.get(annotations::REF_NAME))
            }) else {
                tracing::warn!(bundle = %path.display(), digest = %entry.digest(), "an index.json entry has no name; not served");
                continue;
            };
            let top: Digest = entry
                .digest()
                .to_string()
                .parse()
                .with_context(|| format!("{written}: invalid digest in index.json"))?;
            self.add_named(written, &top, entry.media_type().to_string())?;
            // A CloudImage's container images are served under their own names too,
            // as `sealer load` and `sealer pull` name them.
            for (reference, child, media_type) in self.carried_images(&top)? {
                self.add_named(&reference, &child, media_type)?;
            }
        }
        Ok(())
    }

    /// Adds the image `written` (a reference) whose top manifest is `top`.
    fn add_named(&mut self, written: &str, top: &Digest, media_type: String) -> anyhow::Result<()> {
        let reference = ImageReference::try_from(written)
            .with_context(|| format!("{written:?} in index.json is not an image reference"))?;
        let repo = RepoName::for_image(reference.registry(), reference.repository())
            .with_context(|| format!("{written:?} in index.json"))?;
        let lacking = self
            .add_image(&repo, top, Some(media_type))
            .with_context(|| format!("image {written}"))?;
        if lacking > 0 {
            tracing::warn!(image = %written, missing_blobs = lacking, "the bundle lacks blobs of this image (a delta bundle?); they are served only if the store has them");
        }
        let repository = self.repositories.entry(repo).or_default();
        match (reference.tag(), reference.digest()) {
            (Some(tag), _) => {
                repository.tags.insert(tag.to_string(), top.clone());
            }
            (None, None) => {
                repository.tags.insert("latest".to_string(), top.clone());
            }
            (None, Some(_)) => {}
        }
        Ok(())
    }

    /// The container images a CloudImage index `top` carries: reference, digest and
    /// media type of each one the bundle holds.
    fn carried_images(&self, top: &Digest) -> anyhow::Result<Vec<(String, Digest, String)>> {
        let Some(m) = self.manifests.get(top) else {
            return Ok(Vec::new());
        };
        if manifest::ManifestKind::of_media_type(&m.media_type)
            != Some(manifest::ManifestKind::Index)
        {
            return Ok(Vec::new());
        }
        let index: ImageIndex = serde_json::from_slice(&m.body)?;
        let mut out = Vec::new();
        for child in index.manifests() {
            let Some(notes) = child.annotations() else {
                continue;
            };
            if notes.get(annotations::ROLE).map(String::as_str)
                != Some(annotations::ROLE_CONTAINER_IMAGE)
            {
                continue;
            }
            let Some(reference) = notes.get(annotations::CONTAINER_REFERENCE) else {
                continue;
            };
            let digest: Digest = child.digest().to_string().parse()?;
            if self.manifests.contains_key(&digest) {
                out.push((reference.clone(), digest, child.media_type().to_string()));
            }
        }
        Ok(out)
    }

    /// Adds the manifests of an image's graph to `repo`, reading and verifying each;
    /// returns how many blobs it references that no bundle holds.
    fn add_image(
        &mut self,
        repo: &RepoName,
        top: &Digest,
        top_type: Option<String>,
    ) -> anyhow::Result<usize> {
        let mut lacking = 0;
        let mut queue = vec![(top.clone(), top_type)];
        let mut seen = HashSet::new();
        while let Some((digest, declared_type)) = queue.pop() {
            if !seen.insert(digest.clone()) {
                continue;
            }
            let Some(&at) = self.blobs.get(&digest) else {
                if &digest == top {
                    bail!("the bundle lacks its manifest {digest}");
                }
                // A platform left out when the bundle was saved: a sparse index.
                continue;
            };
            if at.size > MAX_DOCUMENT {
                bail!("manifest {digest} is larger than {MAX_DOCUMENT} bytes");
            }
            let body = Bytes::from(self.read(at)?);
            let mut hasher = digest.algorithm().hasher();
            hasher.update(&body);
            if hasher.finish() != digest {
                bail!("manifest {digest} is damaged: its content does not match its digest");
            }
            let parsed = manifest::parse(declared_type.as_deref(), &body)
                .with_context(|| format!("manifest {digest}"))?;
            // Served as a type the registry knows, whatever the bundle's index says.
            let media_type = parsed.served_type(declared_type.as_deref()).to_string();
            let repository = self.repositories.entry(repo.clone()).or_default();
            repository.manifests.insert(digest.clone());
            repository.blobs.insert(digest.clone());
            for blob in parsed.blobs.iter().filter(|b| !b.foreign) {
                if self.blobs.contains_key(&blob.digest) {
                    repository.blobs.insert(blob.digest.clone());
                } else {
                    lacking += 1;
                }
            }
            if let Some(subject) = &parsed.subject {
                let record = ReferrerRecord::of_manifest(&digest, &media_type, at.size, &parsed);
                repository
                    .referrers
                    .entry(subject.clone())
                    .or_default()
                    .push(record);
            }
            queue.extend(parsed.manifests.iter().map(|m| (m.digest.clone(), None)));
            self.manifests.insert(digest, Manifest { media_type, body });
        }
        Ok(lacking)
    }
}
