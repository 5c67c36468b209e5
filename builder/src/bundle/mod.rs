//! Offline bundles (docs/design.md, contract 5): images from the store as one OCI image layout
//! (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`) in one tar, optionally zstd, each
//! blob once; and loading such a tar back, streamed and verified. The format is
//! documented in `docs/bundle.md`.

mod docker;
pub mod parts;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bytes::Bytes;
use sealer_registry::oci::graph::{self, Walk};
use sealer_registry::oci::{Algorithm, Digest, RepoName};
use sealer_registry::storage::{LocalFiles, Maintenance, StoredManifest};
use serde_json::json;

use crate::archive;
use crate::progress::{Progress, Task};
use crate::reference::{ImageName, Platform};
use crate::store::Store;

pub use sealer_registry::oci::annotations::{
    IMAGE_NAME as ANNOTATION_IMAGE_NAME, REF_NAME as ANNOTATION_REF_NAME,
};

/// The most a bundle's documents (its index, `manifest.json`, each manifest) are read
/// whole: they come from the bundle's author.
const MAX_DOCUMENT: u64 = 64 << 20;

#[derive(Debug, Clone, Default)]
pub struct SaveOptions {
    /// Only these platforms' manifests and blobs (indexes are kept as they are).
    pub platforms: Vec<Platform>,
    /// zstd over the whole tar.
    pub compress: bool,
    /// A delta: blobs the other side has (see [`have_set`]) are left out; manifests are
    /// always written.
    pub have: Option<BTreeSet<Digest>>,
    /// Work out what would be written; write nothing.
    pub dry_run: bool,
    /// Write numbered parts of at most this many bytes, and a checksum file.
    pub split_size: Option<u64>,
}

#[derive(Debug, Default)]
pub struct SaveReport {
    pub images: usize,
    /// Blobs (manifests included) written, and their bytes.
    pub blobs: usize,
    pub bytes: u64,
    /// Blobs left out because the other side has them, and their bytes.
    pub blobs_skipped: usize,
    pub bytes_skipped: u64,
    /// With a split size: the part files written.
    pub parts: Vec<String>,
}

/// What the other side has, for `sealer save --since OLD`: OLD is a bundle file (its
/// blobs), a have-list (one digest per line, as `sealer store have` prints), or an image
/// in the store (every blob of its graph).
pub async fn have_set(store: &Store, old: &str) -> anyhow::Result<BTreeSet<Digest>> {
    let path = Path::new(old);
    if path.is_file() {
        if matches!(
            archive::sniff_file(path),
            Some(archive::Kind::Tar | archive::Kind::Zstd)
        ) {
            let path = path.to_path_buf();
            return tokio::task::spawn_blocking(move || bundle_blobs(&path)).await?;
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--since {old}: not a bundle, and not a text have-list"))?;
        return text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .enumerate()
            .map(|(i, l)| {
                l.parse::<Digest>()
                    .map_err(|e| anyhow::anyhow!("{old}:{}: {e}", i + 1))
            })
            .collect();
    }
    let name = ImageName::parse(old)
        .map_err(|e| anyhow::anyhow!("--since {old}: no such file, and not an image: {e}"))?;
    let repo = name.repo()?;
    let top = store.require(&name).await?;
    let graph = store.graph(&repo, &top.digest).await?;
    let manifests = graph.manifests.into_iter().map(|m| m.digest);
    Ok(manifests.chain(graph.blobs.into_keys()).collect())
}

/// The blob digests a bundle holds (read through, nothing stored).
fn bundle_blobs(path: &Path) -> anyhow::Result<BTreeSet<Digest>> {
    let mut out = BTreeSet::new();
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (reader, guard) = archive::Guarded::new(decompressed(Box::new(file), None)?, u64::MAX);
    let mut archive = tar::Archive::new(reader);
    let mut entries = archive.entries()?;
    while let Some(entry) = guard.next(&mut entries) {
        let entry = entry?;
        let p = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if let Some(d) = blob_digest(&p) {
            out.insert(d?);
        }
    }
    Ok(out)
}

/// The digest a `blobs/<alg>/<hex>` path names (`None` for other paths).
fn blob_digest(path: &str) -> Option<anyhow::Result<Digest>> {
    let (alg, hex) = path.strip_prefix("blobs/")?.split_once('/')?;
    if hex.is_empty() {
        return None;
    }
    Some(
        format!("{alg}:{hex}")
            .parse()
            .with_context(|| format!("{path}: not a blob digest")),
    )
}

/// A bundle's tar stream, decompressed when it is zstd; `task` counts the bytes read.
fn decompressed<'a>(
    mut source: Box<dyn Read + Send + 'a>,
    task: Option<&'a dyn Task>,
) -> anyhow::Result<Box<dyn Read + 'a>> {
    let mut magic = [0u8; 4];
    let n = archive::read_full(&mut source, &mut magic)?;
    let head = std::io::Cursor::new(magic[..n].to_vec()).chain(source);
    let counted: Box<dyn Read + 'a> = match task {
        Some(task) => Box::new(Counting { inner: head, task }),
        None => Box::new(head),
    };
    Ok(
        if archive::sniff(&magic[..n]) == Some(archive::Kind::Zstd) {
            Box::new(zstd::Decoder::new(counted)?)
        } else {
            Box::new(std::io::BufReader::with_capacity(1 << 20, counted))
        },
    )
}

/// Writes `images` to `out`. The file appears only once complete (it is written next to
/// it and renamed); blobs stream from the store, so memory stays flat.
pub async fn save(
    store: &Store,
    images: &[ImageName],
    out: &Path,
    opts: &SaveOptions,
    progress: &dyn Progress,
) -> anyhow::Result<SaveReport> {
    let mut report = SaveReport {
        images: images.len(),
        ..Default::default()
    };
    let (index, manifests, files) = contents(store, images, opts, &mut report).await?;
    let bytes = files.iter().map(|(_, s, _)| s).sum::<u64>()
        + manifests.values().map(|b| b.len() as u64).sum::<u64>();
    report.blobs = files.len() + manifests.len();
    report.bytes = bytes;
    if opts.dry_run {
        return Ok(report);
    }
    let task = progress.task("save", bytes);
    let target = out.to_path_buf();
    let (compress, split) = (opts.compress, opts.split_size);
    report.parts = tokio::task::spawn_blocking(move || {
        let out = target;
        let layout = Layout {
            index: &index,
            manifests: &manifests,
            files: &files,
            compress,
            task: task.as_ref(),
        };
        let parts = match split {
            Some(size) => layout
                .write(parts::PartWriter::new(&out, size)?)?
                .finish()?,
            None => {
                write_file(&out, &layout)?;
                Vec::new()
            }
        };
        task.finish("done");
        Ok::<_, io::Error>(parts)
    })
    .await?
    .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(report)
}

/// What a bundle of `images` holds: its `index.json`, every manifest, and the blob files
/// the other side lacks (those it has are counted in `report` as skipped).
async fn contents(
    store: &Store,
    images: &[ImageName],
    opts: &SaveOptions,
    report: &mut SaveReport,
) -> anyhow::Result<(
    Vec<u8>,
    BTreeMap<Digest, Bytes>,
    Vec<(Digest, u64, PathBuf)>,
)> {
    let mut entries = Vec::new();
    let mut manifests: BTreeMap<Digest, Bytes> = BTreeMap::new();
    let mut blobs: BTreeMap<Digest, u64> = BTreeMap::new();
    for image in images {
        let repo = image.repo()?;
        let top = store.require(image).await?;
        let graph = store.graph_for(&repo, &top.digest, &opts.platforms).await?;
        for m in graph.manifests {
            manifests.insert(m.digest.clone(), m.body);
        }
        blobs.extend(graph.blobs.into_values().map(|b| (b.digest, b.size)));
        entries.push(json!({
            "mediaType": top.media_type,
            "digest": top.digest.to_string(),
            "size": top.body.len(),
            "annotations": {
                ANNOTATION_IMAGE_NAME: image.to_string(),
                ANNOTATION_REF_NAME: image.to_string(),
            },
        }));
    }
    let mut files = Vec::new();
    for (digest, size) in blobs {
        if manifests.contains_key(&digest) {
            continue;
        }
        if opts.have.as_ref().is_some_and(|h| h.contains(&digest)) {
            report.blobs_skipped += 1;
            report.bytes_skipped += size;
            continue;
        }
        // The bundle is written from the store's own files (the builder's store is on
        // this machine).
        let path = store
            .storage()
            .blob_file(&digest)
            .with_context(|| format!("blob {digest} is missing from the store"))?;
        files.push((digest, size, path));
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    }))?;
    Ok((index, manifests, files))
}

/// What a bundle holds, ready to be written to any sink.
struct Layout<'a> {
    index: &'a [u8],
    manifests: &'a BTreeMap<Digest, Bytes>,
    files: &'a [(Digest, u64, PathBuf)],
    compress: bool,
    task: &'a dyn Task,
}

/// Writes one file: as `.NAME.partial`, synced, then renamed, so a crash never leaves a
/// half bundle under the final name.
fn write_file(out: &Path, layout: &Layout) -> io::Result<()> {
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other("the output needs a file name"))?;
    let partial = out.with_file_name(format!(".{name}.partial"));
    let sink = BufWriter::with_capacity(1 << 20, std::fs::File::create(&partial)?);
    let file = match layout
        .write(sink)
        .and_then(|sink| sink.into_inner().map_err(|e| e.into_error()))
    {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    file.sync_all()?;
    sealer_registry::storage::fs::durable::publish(&partial, out)
}

impl Layout<'_> {
    /// The tar (zstd-compressed when asked) into `sink`; returns the sink.
    fn write<W: Write + Send>(&self, sink: W) -> io::Result<W> {
        if self.compress {
            let mut enc = zstd::Encoder::new(sink, 3)?;
            enc.multithread(2)?;
            self.write_tar(enc)?.finish()
        } else {
            self.write_tar(sink)
        }
    }

    fn write_tar<W: Write>(&self, out: W) -> io::Result<W> {
        let mut tar = tar::Builder::new(out);
        let add = |tar: &mut tar::Builder<W>, path: &str, size: u64, data: &mut dyn Read| {
            let mut header = tar::Header::new_gnu();
            header.set_size(size);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, path, data)
        };
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        // index.json first, so a loader knows the images before the blobs arrive.
        add(
            &mut tar,
            "oci-layout",
            layout.len() as u64,
            &mut &layout[..],
        )?;
        add(
            &mut tar,
            "index.json",
            self.index.len() as u64,
            &mut &self.index[..],
        )?;
        for (digest, body) in self.manifests {
            add(
                &mut tar,
                &layout_entry(digest),
                body.len() as u64,
                &mut &body[..],
            )?;
            self.task.advance(body.len() as u64);
        }
        for (digest, size, path) in self.files {
            let file = std::fs::File::open(path)?;
            let actual = file.metadata()?.len();
            if actual != *size {
                return Err(io::Error::other(format!(
                    "blob {digest} holds {actual} bytes, its descriptor says {size}"
                )));
            }
            let mut reader = Counting {
                inner: file,
                task: self.task,
            };
            add(&mut tar, &layout_entry(digest), *size, &mut reader)?;
        }
        tar.into_inner()
    }
}

fn layout_entry(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().as_str(), d.hex())
}

struct Counting<'a, R> {
    inner: R,
    task: &'a dyn Task,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.task.advance(n as u64);
        Ok(n)
    }
}

#[derive(Debug, Default)]
pub struct LoadReport {
    /// Each image of the bundle, tagged in the store, with its digest.
    pub images: Vec<(ImageName, Digest)>,
    pub blobs_added: usize,
    pub blobs_present: usize,
    pub bytes_added: u64,
    /// Names that moved to another image, and carried images' names not given.
    pub notes: Vec<String>,
}

/// Loads a bundle written by `save` (or any OCI layout tar, e.g. skopeo's
/// `oci-archive:`), plain or zstd. Blobs are verified as they stream in and become
/// visible one by one, complete; names are set last, so an interrupted load shows
/// nothing half-loaded and a re-run finishes it (blobs already stored are skipped).
/// Loads a bundle into `store`. Its images may use the blobs it carries and those their
/// repositories already hold; with `trust_store` (a bundle the caller made itself), any
/// blob of the store.
pub async fn load(
    store: &Store,
    inputs: &[PathBuf],
    trust_store: bool,
    progress: &dyn Progress,
) -> anyhow::Result<LoadReport> {
    let source: Box<dyn Read + Send> = match parts::open_parts(inputs)? {
        Some(parts) => Box::new(parts),
        None => Box::new(
            std::fs::File::open(&inputs[0])
                .with_context(|| format!("cannot read {}", inputs[0].display()))?,
        ),
    };
    let mut size = 0;
    for i in inputs {
        size += std::fs::metadata(i)?.len();
    }
    let task = progress.task("load", size);
    let label = inputs[0].display().to_string();
    let scanned = {
        let store = store.clone();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || read_bundle(&store, source, task.as_ref(), &runtime))
            .await??
    };
    let images = if let Some(index) = &scanned.index {
        images_of_index(index)?
    } else if let Some(manifest) = &scanned.docker_manifest {
        images_of_docker_save(store, manifest, &scanned).await?
    } else {
        bail!("{label} has no index.json (an OCI layout) or manifest.json (a docker save archive)");
    };
    let mut report = scanned.report;
    // Only what the bundle carries is published under its names (and, for a delta
    // bundle, what the named repository already holds): naming a digest the store keeps
    // for another repository gains a bundle nothing.
    let carried: BTreeSet<Digest> = scanned.blobs.values().map(|(d, _)| d.clone()).collect();
    let usable = Usable {
        carried: &carried,
        whole_store: trust_store,
    };
    let mut missing = Vec::new();
    for (name, digest, media_type) in images {
        let lacking = register(
            store,
            &name,
            &digest,
            &media_type,
            &usable,
            &mut report.notes,
        )
        .await?;
        if lacking.is_empty() {
            report.images.push((name, digest));
        } else {
            missing.push(format!("  {name}: {}", lacking.join(", ")));
        }
    }
    if !missing.is_empty() {
        bail!(
            "the bundle lacks blobs its images need, and the store does not have them \
             either (a delta bundle needs what it was made against loaded first); nothing \
             was tagged for these images:\n{}",
            missing.join("\n")
        );
    }
    Ok(report)
}

/// (name, top manifest digest, its media type) of each image an OCI layout's
/// `index.json` names.
fn images_of_index(index: &[u8]) -> anyhow::Result<Vec<(ImageName, Digest, String)>> {
    let index: serde_json::Value =
        serde_json::from_slice(index).context("index.json is not valid JSON")?;
    let entries = index["manifests"]
        .as_array()
        .context("index.json lists no manifests")?;
    let mut images = Vec::new();
    for entry in entries {
        let notes = &entry["annotations"];
        let written = notes[ANNOTATION_IMAGE_NAME]
            .as_str()
            .or(notes[ANNOTATION_REF_NAME].as_str())
            .context("an index.json entry has no image name (io.containerd.image.name or org.opencontainers.image.ref.name)")?;
        let name = ImageName::parse(written)?;
        let digest: Digest = entry["digest"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .with_context(|| format!("{name}: invalid digest in index.json"))?;
        let media_type = entry["mediaType"].as_str().unwrap_or_default().to_string();
        images.push((name, digest, media_type));
    }
    Ok(images)
}

/// The images of a `docker save` archive: an OCI manifest made for each from its
/// `manifest.json` entry, stored under each of its names.
async fn images_of_docker_save(
    store: &Store,
    manifest: &[u8],
    scanned: &Scanned,
) -> anyhow::Result<Vec<(ImageName, Digest, String)>> {
    let config_of = |d: &Digest| -> anyhow::Result<Vec<u8>> {
        let path = store
            .storage()
            .blob_file(d)
            .context("a config was not stored")?;
        Ok(std::fs::read(path)?)
    };
    let media_type = sealer_registry::oci::manifest::media_type::OCI_MANIFEST;
    let mut images = Vec::new();
    for image in docker::images(manifest, &scanned.blobs, &scanned.links, config_of)? {
        let digest = Digest::sha256_of(&image.manifest);
        for name in image.names {
            let repo = name.repo()?;
            store
                .put_manifest_as(&repo, &digest, media_type, image.manifest.clone())
                .await?;
            images.push((name, digest.clone(), media_type.to_string()));
        }
    }
    Ok(images)
}

/// A blob copied out of the stream, waiting for its digest check.
struct Job {
    file: PathBuf,
    /// The archive path, to name it in errors and to find docker layers by.
    path: String,
    /// The digest its name gives (`None` for a docker layer: learnt by hashing).
    expected: Option<Digest>,
}

/// What reading the tar found.
#[derive(Default)]
struct Scanned {
    index: Option<Vec<u8>>,
    /// A `docker save` archive's `manifest.json`.
    docker_manifest: Option<Vec<u8>>,
    /// Each blob read: archive path to digest and size.
    blobs: HashMap<String, (Digest, u64)>,
    /// Symlinked entries: archive path to the path they point to.
    links: HashMap<String, String>,
    report: LoadReport,
}

/// Streams the tar: each blob is checked against its name (or hashed, for docker
/// layers) and stored.
fn read_bundle(
    store: &Store,
    source: Box<dyn Read + Send>,
    task: &dyn Task,
    runtime: &tokio::runtime::Handle,
) -> anyhow::Result<Scanned> {
    // This thread copies each blob out of the stream into a scratch file; two verifiers
    // hash finished files (several blobs at once: SHA-256 is the slowest step) and move
    // each into the store once its digest matches.
    let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(2);
    let queue = std::sync::Mutex::new(queue);
    let failed: std::sync::Mutex<Option<anyhow::Error>> = std::sync::Mutex::new(None);
    let hashed = std::sync::Mutex::new((HashMap::new(), LoadReport::default()));
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    let job = queue.lock().expect("queue lock").recv();
                    let Ok(job) = job else {
                        return;
                    };
                    let path = job.path.clone();
                    match verify_and_store(store, runtime, job) {
                        Ok((digest, size, added)) => {
                            let mut hashed = hashed.lock().expect("hash lock");
                            let (blobs, counts) = &mut *hashed;
                            blobs.insert(path, (digest, size));
                            if added {
                                counts.blobs_added += 1;
                                counts.bytes_added += size;
                            } else {
                                counts.blobs_present += 1;
                            }
                        }
                        Err(e) => {
                            failed.lock().expect("error lock").get_or_insert(e);
                        }
                    }
                }
            });
        }
        let read = copy_out(store, source, task, runtime, &jobs, &failed);
        drop(jobs);
        read
    })
    .and_then(|mut read| match failed.into_inner().expect("error lock") {
        Some(e) => Err(e),
        None => {
            let (blobs, counts) = hashed.into_inner().expect("hash lock");
            read.blobs.extend(blobs);
            read.report.blobs_added += counts.blobs_added;
            read.report.bytes_added += counts.bytes_added;
            read.report.blobs_present += counts.blobs_present;
            Ok(read)
        }
    })
}

/// Reads the tar: keeps `index.json` (or docker's `manifest.json`), writes each blob the
/// store lacks to a scratch file and queues it for verification.
fn copy_out(
    store: &Store,
    source: Box<dyn Read + Send>,
    task: &dyn Task,
    runtime: &tokio::runtime::Handle,
    jobs: &std::sync::mpsc::SyncSender<Job>,
    failed: &std::sync::Mutex<Option<anyhow::Error>>,
) -> anyhow::Result<Scanned> {
    let (reader, guard) = archive::Guarded::new(decompressed(source, Some(task))?, u64::MAX);
    let mut archive = tar::Archive::new(reader);
    let mut read = Scanned::default();
    let mut entries = archive.entries()?;
    while let Some(entry) = guard.next(&mut entries) {
        if failed.lock().expect("error lock").is_some() {
            break; // a verifier found a damaged blob: stop reading
        }
        let mut entry = entry?;
        let path = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if entry.header().entry_type().is_symlink() {
            if let Some(target) = entry
                .link_name()?
                .and_then(|l| docker::link_target(&path, &l.to_string_lossy()))
            {
                read.links.insert(path, target);
            }
            continue;
        }
        if !entry.header().entry_type().is_file() {
            continue; // folders
        }
        let expected = match path.as_str() {
            "index.json" => {
                let mut buf = Vec::new();
                (&mut entry).take(MAX_DOCUMENT).read_to_end(&mut buf)?;
                read.index = Some(buf);
                continue;
            }
            "manifest.json" => {
                let mut buf = Vec::new();
                (&mut entry).take(MAX_DOCUMENT).read_to_end(&mut buf)?;
                read.docker_manifest = Some(buf);
                continue;
            }
            p if p.starts_with("blobs/") => match blob_digest(p) {
                Some(digest) => Some(digest?),
                None => continue,
            },
            p => match docker::entry(p) {
                Some(docker::Entry::Config(digest)) => Some(digest),
                Some(docker::Entry::Layer) => None,
                None => continue,
            },
        };
        if let Some(digest) = &expected
            && runtime.block_on(store.storage().has_blob(digest))?
        {
            read.blobs
                .insert(path, (digest.clone(), entry.header().size()?));
            read.report.blobs_present += 1;
            continue;
        }
        let tmp = tempfile::NamedTempFile::new_in(store.scratch())?;
        let mut out = BufWriter::with_capacity(1 << 20, tmp);
        io::copy(&mut entry, &mut out)?;
        let tmp = out.into_inner().map_err(|e| e.into_error())?;
        let (_, file) = tmp.keep().context("keeping a loaded blob")?;
        let job = Job {
            file: file.clone(),
            path,
            expected,
        };
        if jobs.send(job).is_err() {
            let _ = std::fs::remove_file(file);
            break;
        }
    }
    task.finish("done");
    Ok(read)
}

/// Hashes a copied-out blob; stores it when the digest matches (or was unknown), else
/// removes it. Returns its digest, its size, and whether it was added to the store.
fn verify_and_store(
    store: &Store,
    runtime: &tokio::runtime::Handle,
    job: Job,
) -> anyhow::Result<(Digest, u64, bool)> {
    let algorithm = job
        .expected
        .as_ref()
        .map(|d| d.algorithm())
        .unwrap_or(Algorithm::Sha256);
    let mut hasher = algorithm.hasher();
    hasher.update_from(std::fs::File::open(&job.file)?)?;
    let actual = hasher.finish();
    if job.expected.as_ref().is_some_and(|d| d != &actual) {
        let _ = std::fs::remove_file(&job.file);
        bail!("{} is damaged: its content has digest {actual}", job.path);
    }
    let size = std::fs::metadata(&job.file)?.len();
    if runtime.block_on(store.storage().has_blob(&actual))? {
        let _ = std::fs::remove_file(&job.file);
        return Ok((actual, size, false));
    }
    runtime.block_on(store.storage().adopt_blob(job.file, &actual))?;
    Ok((actual, size, true))
}

/// What a loaded image may use besides what its repository holds.
struct Usable<'a> {
    /// The blobs the bundle carried.
    carried: &'a BTreeSet<Digest>,
    /// Any blob of the store (a bundle the caller made itself).
    whole_store: bool,
}

impl Usable<'_> {
    fn may_use(&self, digest: &Digest) -> bool {
        self.whole_store || self.carried.contains(digest)
    }
}

/// A loaded image's manifests, as a graph walk reads them: from the blobs the bundle
/// carried (or the whole store, per [`Usable`]), or the repository's own.
struct Carried<'a> {
    store: &'a Store,
    repo: &'a RepoName,
    usable: &'a Usable<'a>,
    /// The top manifest and its type (the bundle's index gives it).
    top: (&'a Digest, &'a str),
}

#[async_trait::async_trait]
impl graph::Source for Carried<'_> {
    type Node = StoredManifest;
    type Error = anyhow::Error;

    async fn manifest(
        &mut self,
        digest: &Digest,
        listed_as: Option<&str>,
    ) -> anyhow::Result<Option<StoredManifest>> {
        if !self.usable.may_use(digest) {
            return self.store.manifest(self.repo, digest).await;
        }
        let Some(body) = self.store.read_blob(digest, MAX_DOCUMENT).await? else {
            return Ok(None);
        };
        let (top, top_type) = self.top;
        let media_type = listed_as.or((top == digest).then_some(top_type));
        Ok(Some(StoredManifest {
            digest: digest.clone(),
            media_type: media_type.unwrap_or_default().to_string(),
            body,
        }))
    }
}

/// Puts an image's manifests into its repository and links its blobs, then tags it.
/// Content counts as present only if it is [`Usable`] or the repository already holds
/// it. Returns what is lacking (then nothing is tagged).
async fn register(
    store: &Store,
    name: &ImageName,
    top: &Digest,
    top_type: &str,
    usable: &Usable<'_>,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<String>> {
    let repo = name.repo()?;
    let mut source = Carried {
        store,
        repo: &repo,
        usable,
        top: (top, top_type),
    };
    let graph = Walk::all().run(&mut source, [top.clone()]).await?;
    let mut lacking = BTreeSet::new();
    // A child manifest left out (a platform not saved) is a sparse index; only the
    // top one must be there.
    if graph.absent.contains(top) {
        lacking.insert(format!("manifest {top}"));
    }
    for blob in graph.blobs.keys() {
        let present = if usable.may_use(blob) {
            store.link_if_present(&repo, blob).await?
        } else {
            store.has_linked(&repo, blob).await?
        };
        if !present {
            lacking.insert(format!("blob {blob}"));
        }
    }
    if !lacking.is_empty() {
        return Ok(lacking.into_iter().collect());
    }
    for m in graph.manifests.into_iter().rev() {
        store
            .put_manifest_as(&repo, &m.digest, &m.media_type, m.body)
            .await?;
    }
    if let Some(tag) = &name.tag {
        store.tag_noting(&repo, tag, top, notes).await?;
    }
    notes.extend(store.unfold(&repo, top).await?);
    Ok(Vec::new())
}
