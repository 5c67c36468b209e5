//! `sealer build`: a Kubefile's steps run into layers (reusing cached ones), the
//! container images its files name fetched into the store, and the CloudImage assembled
//! and tagged there. One module per kind of step: [`from`] (`FROM`), [`copy`] (`COPY`,
//! `ADD`), [`app`] (`APP` and what names apps), [`run`] (`RUN`); [`layers`] turns a
//! step's files into a layer (the build cache), [`assemble`] writes the CloudImage.
//! The other instructions only set the image's metadata, here in [`Builder::step`].

mod app;
mod assemble;
mod copy;
mod from;
mod layers;
pub mod rootfs;
mod run;
mod sandbox;
pub mod sources;
mod vars;

pub use sandbox::RunLimits;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use oci_spec::image::Descriptor;
use sealer_registry::oci::{Digest, RepoName};
use serde::{Deserialize, Serialize};

use crate::cache::HashCache;
use crate::cloudimage::{ContainerImage, ImageExtension, LABEL_KUBE_VERSION};
use crate::discover::{self, Discovery};
use crate::kubefile::{Instruction, Kubefile, ParseOptions, Step};
use crate::layer::Compression;
use crate::progress::Progress;
use crate::reference::{ImageName, Platform};
use crate::remote::Registries;
use crate::store::Store;
use crate::transfer::{Fetched, PullPolicy, Transfer};

pub const SEALER_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Changes whenever what a cache entry means changes, so old entries are not used.
const CACHE_FORMAT: u32 = 2;

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub context: PathBuf,
    /// The Kubefile; `None` is `Kubefile` in the context.
    pub kubefile: Option<PathBuf>,
    pub tag: ImageName,
    pub build_args: BTreeMap<String, String>,
    /// Platforms to build; empty builds the host's.
    pub platforms: Vec<Platform>,
    pub no_cache: bool,
    pub compression: Compression,
    pub keep_metadata: bool,
    pub pull: PullPolicy,
    /// `--image-list FILE`: more images, one per line.
    pub image_lists: Vec<PathBuf>,
    pub ignore_images: Vec<String>,
    pub labels: Vec<(String, String)>,
    /// Only work out the steps' files and the images; build nothing.
    pub dry_run: bool,
    /// Blob transfers at once.
    pub jobs: usize,
    /// Bounds on `APP` downloads.
    pub download: sources::DownloadLimits,
    /// Most bytes one archive of an `ADD` may unpack to.
    pub max_add_bytes: u64,
    /// How `RUN` commands run.
    pub run: RunLimits,
}

/// What a build did.
#[derive(Debug)]
pub struct BuildReport {
    /// The CloudImage's index digest (`None` for a dry run).
    pub digest: Option<Digest>,
    pub discovery: Discovery,
    pub images: Vec<Fetched>,
    pub layers: usize,
    pub cached_layers: usize,
    /// Context files whose content was read to compute cache keys.
    pub files_hashed: usize,
}

/// A layer as the cache remembers it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LayerRecord {
    digest: String,
    diff_id: String,
    size: u64,
    media_type: String,
    /// For `RUN`: the images the files it made name (a cache hit does not run it again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    found: Option<Discovery>,
}

/// Step key → layer, kept under the store root.
struct LayerCache {
    path: PathBuf,
    entries: BTreeMap<String, LayerRecord>,
}

impl LayerCache {
    fn load(path: PathBuf) -> LayerCache {
        let entries = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        LayerCache { path, entries }
    }

    fn save(&self) -> std::io::Result<()> {
        let json = serde_json::to_vec(&self.entries)?;
        sealer_registry::storage::fs::durable::write_file(&self.path, &json, 0o644)
    }
}

/// The image being built for one platform.
struct Image {
    platform: Platform,
    layers: Vec<LayerRecord>,
    history: Vec<(String, bool)>,
    env: vars::Vars,
    /// `ARG`s declared so far with their values: in `RUN`'s environment (not the image's).
    args: vars::Vars,
    labels: BTreeMap<String, String>,
    ext: ImageExtension,
    /// Container images the base image carries: (index entry, listed image).
    base_images: Vec<(Descriptor, ContainerImage)>,
    base_repo: Option<RepoName>,
    /// A dry run without the base in the store: what it declares is not known.
    base_unknown: bool,
}

struct Builder<'a> {
    store: &'a Store,
    progress: &'a dyn Progress,
    opts: &'a BuildOptions,
    repo: RepoName,
    hashes: HashCache,
    cache: LayerCache,
    layers_made: usize,
    layers_cached: usize,
    work: PathBuf,
    /// Folders an isolated `RUN` must not see: the builder's credentials.
    hidden: Vec<PathBuf>,
}

pub async fn build(
    store: &Store,
    registries: &Registries,
    progress: &dyn Progress,
    opts: &BuildOptions,
) -> anyhow::Result<BuildReport> {
    let platforms = match opts.platforms.is_empty() {
        true => vec![Platform::host()],
        false => opts.platforms.clone(),
    };
    let transfer = Transfer::new(store, registries, progress, opts.jobs);
    let (work, _in_use) = work_folder(&store.scratch())?;
    let state = store.state_dir();
    let mut b = Builder {
        store,
        progress,
        opts,
        repo: opts.tag.repo()?,
        hashes: HashCache::load(&state.join("file-hashes.json")),
        cache: LayerCache::load(state.join("layer-cache.json")),
        layers_made: 0,
        layers_cached: 0,
        work: work.path().to_path_buf(),
        hidden: credential_folders(registries),
    };
    let mut discovery = Discovery::default();
    let images = b.images(&platforms, &transfer, &mut discovery).await?;
    for list in &opts.image_lists {
        let text = std::fs::read_to_string(list)
            .with_context(|| format!("cannot read --image-list {}", list.display()))?;
        discovery.merge(discover::scan_image_list(list, &text));
    }
    discovery
        .ignore(&opts.ignore_images)
        .map_err(anyhow::Error::msg)?;
    refuse_problems(&discovery)?;
    let mut report = BuildReport {
        digest: None,
        discovery,
        images: Vec::new(),
        layers: b.layers_made + b.layers_cached,
        cached_layers: b.layers_cached,
        files_hashed: b.hashes.files_read,
    };
    if opts.dry_run {
        return Ok(report);
    }
    let wanted: Vec<ImageName> = report
        .discovery
        .images
        .keys()
        .map(|r| ImageName::parse(r).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<_>>()?;
    if !wanted.is_empty() {
        progress.message(&format!("fetching {} container image(s)", wanted.len()));
    }
    // Without --platform, container images come whole (every platform), so the
    // CloudImage can be pushed to any registry; with it, only those platforms (sparse).
    let fetched = transfer
        .fetch_all(&wanted, &opts.platforms, opts.pull)
        .await?;
    report.digest = Some(b.assemble(&images, &fetched, &report.discovery).await?);
    report.images = fetched;
    Ok(report)
}

/// A build stops on an image reference in its files that cannot be used.
fn refuse_problems(discovery: &Discovery) -> anyhow::Result<()> {
    if discovery.problems.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = discovery
        .problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect();
    bail!(
        "{} image reference(s) in the build's files cannot be used:\n{}",
        list.len(),
        list.join("\n")
    )
}

/// Where the builder's registry logins live: hidden from an isolated `RUN`.
fn credential_folders(registries: &Registries) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = registries
        .auth_file()
        .parent()
        .map(Path::to_path_buf)
        .into_iter()
        .collect();
    if let Some(home) = std::env::var_os("HOME") {
        out.push(PathBuf::from(home).join(".docker"));
    }
    out.sort();
    out.dedup();
    out
}

/// A new `build-*` folder in `scratch`, locked while the build runs (the lock goes
/// when the process does, however it ends). Folders of builds that were killed, whose
/// lock no one holds, are removed first.
fn work_folder(scratch: &Path) -> anyhow::Result<(tempfile::TempDir, std::fs::File)> {
    std::fs::create_dir_all(scratch)?;
    for entry in std::fs::read_dir(scratch)?.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("build-") || !entry.path().is_dir() {
            continue;
        }
        // A folder a build is still making (it locks it a moment after) is left alone.
        let age = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        if age.as_secs() < 60 {
            continue;
        }
        let stale = match std::fs::File::open(entry.path().join(".lock")) {
            Ok(f) => crate::filelock::try_lock_exclusive(&f).unwrap_or(false),
            // From a build that died before it locked, or from an older sealer.
            Err(_) => age.as_secs() > 3600,
        };
        if stale {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let work = tempfile::Builder::new()
        .prefix("build-")
        .tempdir_in(scratch)
        .context("cannot create a build folder")?;
    let lock = std::fs::File::create(work.path().join(".lock"))?;
    if !crate::filelock::try_lock_exclusive(&lock)? {
        bail!("{}: another process holds its lock", work.path().display());
    }
    Ok((work, lock))
}

impl Builder<'_> {
    /// Runs the Kubefile once per platform: the image each gives, its layers stored.
    async fn images(
        &mut self,
        platforms: &[Platform],
        transfer: &Transfer<'_>,
        discovery: &mut Discovery,
    ) -> anyhow::Result<Vec<Image>> {
        let opts = self.opts;
        let kubefile = opts
            .kubefile
            .clone()
            .unwrap_or_else(|| opts.context.join("Kubefile"));
        let mut images = Vec::new();
        for platform in platforms {
            let options = ParseOptions {
                build_args: opts.build_args.clone(),
                platform: Some(platform.to_string()),
            };
            let kf = Kubefile::read(&kubefile, &options)?;
            if platform == &platforms[0] {
                for arg in &kf.unused_build_args {
                    self.progress.message(&format!(
                        "warning: --build-arg {arg} is not declared by any ARG in {}",
                        kubefile.display()
                    ));
                }
            }
            let mut image = self.base(&kf, platform, transfer).await?;
            for step in &kf.steps {
                self.step(&kubefile, step, &mut image, discovery)
                    .await
                    .with_context(|| format!("{}:{}", kubefile.display(), step.line))?;
            }
            images.push(image);
        }
        if !opts.dry_run {
            self.hashes.save().ok();
            self.cache.save().ok();
        }
        Ok(images)
    }

    /// One step: files and commands in their modules; metadata set here.
    async fn step(
        &mut self,
        kubefile: &Path,
        step: &Step,
        image: &mut Image,
        found: &mut Discovery,
    ) -> anyhow::Result<()> {
        match &step.instruction {
            Instruction::From { .. } => {}
            Instruction::Arg { name, default } => {
                if let Some(v) = self.opts.build_args.get(name).or(default.as_ref()) {
                    image.args.set(name, v);
                }
            }
            Instruction::Copy { sources, dest } | Instruction::Add { sources, dest } => {
                let unpack = matches!(step.instruction, Instruction::Add { .. });
                let line = step.line;
                let c = copy::Copy {
                    line,
                    sources,
                    dest,
                    unpack,
                };
                self.copy(&c, image, found).await?;
            }
            Instruction::App {
                name,
                role,
                sources,
            } => {
                let a = app::App {
                    name,
                    role,
                    sources,
                };
                self.app(&a, image, found).await?;
            }
            Instruction::Run(command) => {
                self.run_step(kubefile, step.line, command, image, found)
                    .await?
            }
            other => metadata(other, image)?,
        }
        Ok(())
    }
}

/// The instructions that only set the image's metadata.
fn metadata(instruction: &Instruction, image: &mut Image) -> anyhow::Result<()> {
    match instruction {
        Instruction::Env(vars) => {
            for (k, v) in vars {
                image.env.set(k, v);
                image.ext.env.insert(k.clone(), v.clone());
            }
            image.history.push((format!("ENV {}", pairs(vars)), true));
        }
        Instruction::Label(labels) => {
            image.labels.extend(labels.iter().cloned());
            let text = format!("LABEL {}", pairs(labels));
            image.history.push((text, true));
        }
        // A dry run without its base: the apps these name may be the base's.
        Instruction::AppCmds { .. } | Instruction::AppEnv { .. } | Instruction::Launch(_)
            if image.base_unknown => {}
        Instruction::AppCmds { name, cmds } => app::app_mut(image, name)?.cmds = cmds.clone(),
        Instruction::AppEnv { name, env } => {
            app::app_mut(image, name)?.env.extend(env.iter().cloned())
        }
        Instruction::Launch(names) => app::launch(image, names)?,
        Instruction::Cmds(cmds) => image.ext.launch.cmds = cmds.clone(),
        Instruction::Cmd(command) => image.ext.launch.cmds.push(command.to_string()),
        Instruction::KubeVersion(v) => {
            image.ext.kube_version = Some(v.clone());
            image.labels.insert(LABEL_KUBE_VERSION.into(), v.clone());
        }
        Instruction::Maintainer(m) => {
            let key = "org.opencontainers.image.authors".into();
            image.labels.insert(key, m.clone());
        }
        // FROM, ARG, COPY, ADD, APP and RUN are steps of their own (`Builder::step`).
        _ => {}
    }
    Ok(())
}

impl Image {
    fn push_layer(&mut self, layer: LayerRecord, text: &str) {
        self.layers.push(layer);
        self.history.push((text.to_string(), false));
    }
}

fn pairs(kv: &[(String, String)]) -> String {
    kv.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}
