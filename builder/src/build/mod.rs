//! `sealer build`: a Kubefile's steps run into layers (reusing cached ones), the
//! container images its files name fetched into the store, and the CloudImage assembled
//! and tagged there.

pub mod rootfs;
mod sandbox;
pub mod sources;
mod vars;

pub use sandbox::RunLimits;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bytes::Bytes;
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, HistoryBuilder, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, Os, PlatformBuilder, RootFsBuilder,
};
use sealer_registry::oci::manifest::media_type;
use sealer_registry::oci::{Digest, RepoName};
use serde::{Deserialize, Serialize};

use crate::cache::{HashCache, step_key};
use crate::cloudimage::{
    ANNOTATION_CONTAINER_IMAGES, ANNOTATION_EXTENSION, ANNOTATION_REF_NAME, ANNOTATION_REFERENCE,
    ANNOTATION_ROLE, Application, BuildClient, ContainerImage, ImageExtension, LABEL_KUBE_VERSION,
    LABEL_VERSION, ROLE_CONTAINER_IMAGE, ROLE_ROOTFS, SCHEMA_VERSION,
};
use crate::discover::{self, Discovery};
use crate::kubefile::{AppRole, AppSource, Command, Instruction, Kubefile, ParseOptions, Step};
use crate::layer::{Compression, ContentHash, Entry, LayerOptions, entries_for, write_layer};
use crate::progress::Progress;
use crate::reference::{ImageName, Platform, wanted};
use crate::remote::Registries;
use crate::store::Store;
use crate::transfer::{Fetched, PullPolicy, Transfer};
use sealer_registry::storage::LocalFiles;

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
    let platforms = if opts.platforms.is_empty() {
        vec![Platform::host()]
    } else {
        opts.platforms.clone()
    };
    let kubefile_path = opts
        .kubefile
        .clone()
        .unwrap_or_else(|| opts.context.join("Kubefile"));
    let repo = opts.tag.repo()?;
    let transfer = Transfer::new(store, registries, progress, opts.jobs);
    let (work, _in_use) = work_folder(&store.scratch())?;
    let state = store.state_dir();
    let mut b = Builder {
        store,
        progress,
        opts,
        repo: repo.clone(),
        hashes: HashCache::load(&state.join("file-hashes.json")),
        cache: LayerCache::load(state.join("layer-cache.json")),
        layers_made: 0,
        layers_cached: 0,
        work: work.path().to_path_buf(),
        hidden: credential_folders(registries),
    };

    let mut images = Vec::new();
    let mut discovery = Discovery::default();
    for platform in &platforms {
        let kf = Kubefile::read(
            &kubefile_path,
            &ParseOptions {
                build_args: opts.build_args.clone(),
                platform: Some(platform.to_string()),
            },
        )?;
        if platform == &platforms[0] {
            for arg in &kf.unused_build_args {
                progress.message(&format!(
                    "warning: --build-arg {arg} is not declared by any ARG in {}",
                    kubefile_path.display()
                ));
            }
        }
        let mut image = b.base(&kf, platform, &transfer).await?;
        for step in &kf.steps {
            b.step(&kubefile_path, step, &mut image, &mut discovery)
                .await
                .with_context(|| format!("{}:{}", kubefile_path.display(), step.line))?;
        }
        images.push(image);
    }
    if !opts.dry_run {
        b.hashes.save().ok();
        b.cache.save().ok();
    }

    for list in &opts.image_lists {
        let text = std::fs::read_to_string(list)
            .with_context(|| format!("cannot read --image-list {}", list.display()))?;
        discovery.merge(discover::scan_image_list(list, &text));
    }
    discovery
        .ignore(&opts.ignore_images)
        .map_err(anyhow::Error::msg)?;
    let mut report = BuildReport {
        digest: None,
        discovery,
        images: Vec::new(),
        layers: b.layers_made + b.layers_cached,
        cached_layers: b.layers_cached,
        files_hashed: b.hashes.files_read,
    };
    if !report.discovery.problems.is_empty() {
        let list: Vec<String> = report
            .discovery
            .problems
            .iter()
            .map(|p| format!("  {p}"))
            .collect();
        bail!(
            "{} image reference(s) in the build's files cannot be used:\n{}",
            list.len(),
            list.join("\n")
        );
    }
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
    let digest = b.assemble(&images, &fetched, &report.discovery).await?;
    report.digest = Some(digest);
    report.images = fetched;
    Ok(report)
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
    /// The starting point: nothing for `scratch`, else the base CloudImage's rootfs for
    /// this platform, its settings and its container images.
    async fn base(
        &mut self,
        kf: &Kubefile,
        platform: &Platform,
        transfer: &Transfer<'_>,
    ) -> anyhow::Result<Image> {
        let mut labels = BTreeMap::from([(LABEL_VERSION.to_string(), SEALER_VERSION.to_string())]);
        labels.extend(self.opts.labels.iter().cloned());
        let mut image = Image {
            platform: platform.clone(),
            layers: Vec::new(),
            history: Vec::new(),
            env: vars::Vars::default(),
            args: vars::Vars::default(),
            labels,
            ext: ImageExtension {
                build_client: BuildClient {
                    sealer_version: SEALER_VERSION.into(),
                },
                schema_version: SCHEMA_VERSION.into(),
                kind: "app-installer".into(),
                ..Default::default()
            },
            base_images: Vec::new(),
            base_repo: None,
            base_unknown: false,
        };
        let Some(base) = kf.base() else {
            return Ok(image);
        };
        // `FROM --platform=P` takes that platform's rootfs whatever is being built.
        let from_platform = kf.steps.iter().find_map(|s| match &s.instruction {
            Instruction::From {
                platform: Some(p), ..
            } => Some(p.clone()),
            _ => None,
        });
        let platform = &match from_platform {
            Some(p) => Platform::parse(&p)?,
            None => platform.clone(),
        };
        let name = ImageName::parse(base)?;
        // A dry run fetches nothing: it uses the base only if the store has it.
        let pull = if self.opts.dry_run {
            PullPolicy::Never
        } else {
            self.opts.pull
        };
        let fetched = match transfer
            .fetch(&name, std::slice::from_ref(platform), pull)
            .await
        {
            Ok(f) => f,
            Err(_) if self.opts.dry_run => {
                self.progress.message(&format!(
                    "FROM {name}: not in the local store (a build pulls it); its applications are not known"
                ));
                image.base_unknown = true;
                return Ok(image);
            }
            Err(e) => return Err(e).with_context(|| format!("cannot get the base image {name}")),
        };
        let index = self
            .store
            .manifest(&fetched.repo, &fetched.digest)
            .await?
            .context("the base image vanished from the store")?;
        let entries = index.parse()?;
        let rootfs = entries
            .manifests
            .iter()
            .find(|c| {
                c.annotations.get(ANNOTATION_ROLE).map(String::as_str) == Some(ROLE_ROOTFS)
                    && wanted(std::slice::from_ref(platform), c)
            })
            .with_context(|| format!("{name} is not a CloudImage for {platform}"))?;
        let manifest = self
            .store
            .manifest(&fetched.repo, &rootfs.digest)
            .await?
            .context("the base image's rootfs manifest is missing")?;
        let parsed: oci_spec::image::ImageManifest = serde_json::from_slice(&manifest.body)?;
        let config_digest: Digest = parsed.config().digest().to_string().parse()?;
        let config = self
            .store
            .config(&config_digest)
            .await?
            .context("the base image's config is missing")?;
        let config: oci_spec::image::ImageConfiguration = serde_json::from_slice(&config)?;
        let diff_ids = config.rootfs().diff_ids();
        for (i, l) in parsed.layers().iter().enumerate() {
            image.layers.push(LayerRecord {
                digest: l.digest().to_string(),
                diff_id: diff_ids.get(i).cloned().unwrap_or_default(),
                size: l.size(),
                media_type: l.media_type().to_string(),
                found: None,
            });
        }
        for h in config.history().iter().flatten() {
            image.history.push((
                h.created_by().clone().unwrap_or_default(),
                h.empty_layer().unwrap_or(false),
            ));
        }
        if let Some(c) = config.config() {
            for e in c.env().iter().flatten() {
                if let Some((k, v)) = e.split_once('=') {
                    image.env.set(k, v);
                }
            }
            for (k, v) in c.labels().iter().flatten() {
                image.labels.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        let notes = parsed.annotations().clone().unwrap_or_default();
        if let Some(ext) = notes.get(ANNOTATION_EXTENSION) {
            let base_ext: ImageExtension = serde_json::from_str(ext)
                .with_context(|| format!("{name}: invalid {ANNOTATION_EXTENSION}"))?;
            image.ext.kind = base_ext.kind;
            image.ext.env = base_ext.env;
            image.ext.applications = base_ext.applications;
            image.ext.launch = base_ext.launch;
            image.ext.kube_version = base_ext.kube_version;
        }
        let listed: Vec<ContainerImage> = notes
            .get(ANNOTATION_CONTAINER_IMAGES)
            .map(|s| serde_json::from_str(s))
            .transpose()
            .with_context(|| format!("{name}: invalid {ANNOTATION_CONTAINER_IMAGES}"))?
            .unwrap_or_default();
        let index_doc: oci_spec::image::ImageIndex = serde_json::from_slice(&index.body)?;
        for d in index_doc.manifests() {
            let notes = d.annotations().clone().unwrap_or_default();
            if notes.get(ANNOTATION_ROLE).map(String::as_str) != Some(ROLE_CONTAINER_IMAGE) {
                continue;
            }
            let reference = notes.get(ANNOTATION_REFERENCE).cloned().unwrap_or_default();
            let entry = listed
                .iter()
                .find(|c| c.image == reference)
                .cloned()
                .unwrap_or(ContainerImage {
                    image: reference,
                    digest: d.digest().to_string(),
                    app_name: None,
                    platform: None,
                });
            image.base_images.push((d.clone(), entry));
        }
        image.base_repo = Some(fetched.repo);
        // The base's layers must be in the new image's repository too.
        for l in &image.layers {
            let d: Digest = l.digest.parse()?;
            if !self.store.link_if_present(&self.repo, &d).await? {
                bail!("{name}: layer {d} is missing from the store");
            }
        }
        Ok(image)
    }

    async fn step(
        &mut self,
        kubefile: &Path,
        step: &Step,
        image: &mut Image,
        found: &mut Discovery,
    ) -> anyhow::Result<()> {
        let context = self.opts.context.clone();
        match &step.instruction {
            Instruction::From { .. } => {}
            Instruction::Arg { name, default } => {
                let value = self.opts.build_args.get(name).or(default.as_ref());
                if let Some(v) = value {
                    image.args.set(name, v);
                }
            }
            Instruction::Copy { sources, dest } | Instruction::Add { sources, dest } => {
                let unpack = matches!(step.instruction, Instruction::Add { .. });
                let max_add = self.opts.max_add_bytes;
                let keyword = if unpack { "ADD" } else { "COPY" };
                let mut paths = Vec::new();
                for s in sources {
                    paths.extend(sources::resolve(&context, s).map_err(anyhow::Error::msg)?);
                }
                let many = paths.len() > 1;
                let mut inputs = Vec::new();
                for (i, p) in paths.iter().enumerate() {
                    inputs.extend(entries_for(p, &dest_for(p, dest, many))?);
                    match sources::archive_kind(p).filter(|_| unpack && p.is_file()) {
                        // The archive's contents are what the image holds: scan those.
                        Some(kind) => {
                            let dir = self.work.join(format!("add-{}-{i}", step.line));
                            if !dir.exists() {
                                sources::unpack_archive(p, kind, &dir, max_add)?;
                            }
                            let mut inside = discover::scan_dir(&dir)?;
                            inside.relocate(&dir, &format!("{}!", p.display()));
                            found.merge(inside);
                        }
                        None => found.merge(discover::scan_path(p)?),
                    }
                }
                let text = format!("{keyword} {} {dest}", sources.join(" "));
                if self.opts.dry_run {
                    self.progress
                        .message(&format!("{text}: {} file(s)", inputs.len()));
                    return Ok(());
                }
                let work = self.work.clone();
                let line = step.line;
                let layer = self
                    .layer(&text, &inputs, |inputs| {
                        if !unpack {
                            return Ok(inputs.to_vec());
                        }
                        // ADD: archives become their contents.
                        let mut out = Vec::new();
                        for (i, p) in paths.iter().enumerate() {
                            let d = dest_for(p, dest, many);
                            match sources::archive_kind(p).filter(|_| p.is_file()) {
                                Some(kind) => {
                                    let dir = work.join(format!("add-{line}-{i}"));
                                    if !dir.exists() {
                                        sources::unpack_archive(p, kind, &dir, max_add)?;
                                    }
                                    let d = if many || dest.ends_with('/') {
                                        dest.to_string()
                                    } else {
                                        d
                                    };
                                    out.extend(entries_for(&dir, &d)?);
                                }
                                None => out.extend(entries_for(p, &d)?),
                            }
                        }
                        Ok(out)
                    })
                    .await?;
                image.push_layer(layer, &text);
            }
            Instruction::App {
                name,
                role,
                sources: app_sources,
            } => {
                let mut paths = Vec::new();
                // A dry run's remote sources: named, not fetched.
                let mut remote_files = Vec::new();
                for s in app_sources {
                    match s {
                        AppSource::Local(p) => {
                            let written = p.to_string_lossy();
                            let mut found_paths =
                                sources::resolve(&context, &written).map_err(anyhow::Error::msg)?;
                            paths.append(&mut found_paths);
                        }
                        AppSource::Remote(url) if self.opts.dry_run => {
                            let (parsed, _) = sources::app_url(url).map_err(anyhow::Error::msg)?;
                            let file =
                                sources::url_file_name(&parsed).map_err(anyhow::Error::msg)?;
                            self.progress.message(&format!(
                                "APP {name}: a build downloads {url} (not scanned)"
                            ));
                            remote_files.push(PathBuf::from(file));
                        }
                        AppSource::Remote(url) => {
                            self.progress.message(&format!("downloading {url}"));
                            let dir = self.work.join(format!("app-{name}"));
                            paths.push(
                                sources::download(url, &dir, &self.opts.download)
                                    .await
                                    .map_err(anyhow::Error::msg)?,
                            );
                        }
                    }
                }
                let mut inputs = Vec::new();
                let mut files = Vec::new();
                for p in &paths {
                    let file = p
                        .file_name()
                        .and_then(|n| n.to_str())
                        .context("an APP source needs a file name")?
                        .to_string();
                    inputs.extend(entries_for(p, &format!("application/apps/{name}/{file}"))?);
                    found.merge(discover::scan_path(p)?);
                    files.push(file);
                }
                let text = format!(
                    "APP {name} {}",
                    app_sources
                        .iter()
                        .map(|s| match s {
                            AppSource::Local(p) => format!("local://{}", p.display()),
                            AppSource::Remote(u) => u.clone(),
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                );
                if !self.opts.dry_run {
                    let layer = self.layer(&text, &inputs, |i| Ok(i.to_vec())).await?;
                    image.push_layer(layer, &text);
                }
                for f in &remote_files {
                    files.push(f.to_string_lossy().into_owned());
                }
                paths.extend(remote_files);
                let role_name = match role {
                    AppRole::App => None,
                    AppRole::Cni => Some("cni"),
                    AppRole::Csi => Some("csi"),
                };
                if let Some(r) = role_name {
                    image.labels.insert(
                        format!("cluster.alpha.sealer.io/kube-{r}-{name}"),
                        "true".into(),
                    );
                }
                image.ext.applications.retain(|a| &a.name != name);
                image.ext.applications.push(Application {
                    name: name.clone(),
                    kind: sources::app_type(&paths),
                    files,
                    version: "v1".into(),
                    env: BTreeMap::new(),
                    cmds: Vec::new(),
                    role: role_name.map(str::to_string),
                });
            }
            Instruction::Env(vars) => {
                for (k, v) in vars {
                    image.env.set(k, v);
                    image.ext.env.insert(k.clone(), v.clone());
                }
                image.history.push((format!("ENV {}", pairs(vars)), true));
            }
            Instruction::Label(labels) => {
                image.labels.extend(labels.iter().cloned());
                image
                    .history
                    .push((format!("LABEL {}", pairs(labels)), true));
            }
            Instruction::Run(command) if self.opts.dry_run => {
                self.progress.message(&format!(
                    "RUN {command}: not run in a dry run (images its files name are not listed)"
                ));
            }
            Instruction::Run(command) => {
                let layer = self.run(kubefile, step.line, command, image, found).await?;
                let text = format!("RUN {command}");
                match layer {
                    Some(l) => image.push_layer(l, &text),
                    None => image.history.push((text, true)),
                }
            }
            Instruction::AppCmds { .. } | Instruction::AppEnv { .. } | Instruction::Launch(_)
                if image.base_unknown => {}
            Instruction::AppCmds { name, cmds } => {
                app_mut(image, name)?.cmds = cmds.clone();
            }
            Instruction::AppEnv { name, env } => {
                app_mut(image, name)?.env.extend(env.iter().cloned());
            }
            Instruction::Launch(names) => {
                for n in names {
                    if !image.ext.applications.iter().any(|a| &a.name == n) {
                        bail!(
                            "LAUNCH names {n:?}, which no APP (here or in the base image) declares"
                        );
                    }
                }
                image.ext.launch.app_names = names.clone();
            }
            Instruction::Cmds(cmds) => image.ext.launch.cmds = cmds.clone(),
            Instruction::Cmd(command) => image.ext.launch.cmds.push(command.to_string()),
            Instruction::KubeVersion(v) => {
                image.ext.kube_version = Some(v.clone());
                image.labels.insert(LABEL_KUBE_VERSION.into(), v.clone());
            }
            Instruction::Maintainer(m) => {
                image
                    .labels
                    .insert("org.opencontainers.image.authors".into(), m.clone());
            }
        }
        Ok(())
    }

    /// The cached layer of step `key`, linked into the image's repository, unless the
    /// cache is off or the blob has left the store.
    async fn cached(&mut self, key: &str, label: &str) -> anyhow::Result<Option<LayerRecord>> {
        if self.opts.no_cache {
            return Ok(None);
        }
        let Some(hit) = self.cache.entries.get(key).cloned() else {
            return Ok(None);
        };
        if !self
            .store
            .link_if_present(&self.repo, &hit.digest.parse()?)
            .await?
        {
            return Ok(None);
        }
        self.layers_cached += 1;
        self.progress.message(&format!("{label}: cached"));
        Ok(Some(hit))
    }

    /// The layer for a step: from the cache when its key is known and the blob is still
    /// in the store, else written from `make(inputs)`.
    async fn layer(
        &mut self,
        text: &str,
        inputs: &[Entry],
        make: impl FnOnce(&[Entry]) -> std::io::Result<Vec<Entry>>,
    ) -> anyhow::Result<LayerRecord> {
        let key_text = format!(
            "sealer {SEALER_VERSION}/{CACHE_FORMAT} {:?} {} {text}",
            self.opts.compression, self.opts.keep_metadata
        );
        // With every input's hash known, the key costs no read; otherwise the files are
        // hashed while the layer is written and the key is made afterwards (a first
        // build reads each file once). Unknown files mean a changed context, so a hit is
        // unlikely; and a rebuilt layer has the same digest anyway.
        let known = self.hashes.knows_all(inputs);
        if known {
            let key = step_key(&key_text, inputs, &mut self.hashes)?;
            if let Some(hit) = self.cached(&key, text).await? {
                return Ok(hit);
            }
        }
        let entries = make(inputs)?;
        let (record, contents) = self.write(&entries, !known).await?;
        self.hashes.remember(&contents);
        let key = step_key(&key_text, inputs, &mut self.hashes)?;
        self.progress.message(&format!(
            "{text}: layer {} ({} bytes)",
            &record.digest[7..19],
            record.size
        ));
        self.cache.entries.insert(key, record.clone());
        Ok(record)
    }

    /// Writes a layer into the store; with `hash_contents`, also returns the content
    /// hashes of the files it read.
    async fn write(
        &mut self,
        entries: &[Entry],
        hash_contents: bool,
    ) -> anyhow::Result<(LayerRecord, Vec<ContentHash>)> {
        let options = LayerOptions {
            compression: self.opts.compression,
            keep_metadata: self.opts.keep_metadata,
            hash_contents,
        };
        let layer = write_layer(entries, options, &self.store.scratch())?;
        let digest: Digest = layer.digest.parse()?;
        self.store.adopt(&self.repo, layer.path, &digest).await?;
        self.layers_made += 1;
        let record = LayerRecord {
            digest: layer.digest,
            diff_id: layer.diff_id,
            size: layer.size,
            media_type: layer.media_type.to_string(),
            found: None,
        };
        Ok((record, layer.contents))
    }

    /// `RUN`: the command runs on the build host in the image's root folder (the layers
    /// so far, unpacked), with the image's ENV and the rootfs `bin/` on PATH; what it
    /// changes becomes a layer. Cached by the command, the ENV and the layers below.
    async fn run(
        &mut self,
        kubefile: &Path,
        line: usize,
        command: &Command,
        image: &Image,
        found: &mut Discovery,
    ) -> anyhow::Result<Option<LayerRecord>> {
        let below: Vec<&str> = image.layers.iter().map(|l| l.digest.as_str()).collect();
        let text = format!(
            "RUN {command:?} args={:?} env={:?} platform={} below={below:?}",
            image.args, image.env, image.platform
        );
        let key = step_key(
            &format!(
                "sealer {SEALER_VERSION}/{CACHE_FORMAT} {:?} {text}",
                self.opts.compression
            ),
            &[],
            &mut self.hashes,
        )?;
        if let Some(hit) = self.cached(&key, &format!("RUN {command}")).await? {
            if let Some(f) = &hit.found {
                found.merge(f.clone());
            }
            return Ok(Some(hit));
        }
        let root = self
            .work
            .join(format!("rootfs-{}", image.platform).replace('/', "-"));
        if root.exists() {
            std::fs::remove_dir_all(&root)?;
        }
        std::fs::create_dir_all(&root)?;
        for l in &image.layers {
            let d: Digest = l.digest.parse()?;
            let blob = self
                .store
                .storage()
                .blob_path(&d)
                .with_context(|| format!("layer {d} is missing from the store"))?;
            rootfs::unpack_layer(&blob, &l.media_type, &root)?;
        }
        let before = rootfs::snapshot(&root)?;
        self.progress.message(&format!("RUN {command}"));
        let home = self.work.join("home");
        std::fs::create_dir_all(&home)?;
        let place = sandbox::RunPlace {
            root: &root,
            home: &home,
            store: self.store.root(),
            hidden: self.hidden.clone(),
            vars: image.args.iter().chain(image.env.iter()).cloned().collect(),
        };
        sandbox::run(command, &place, &self.opts.run)
            .await
            .map_err(|e| anyhow::anyhow!("RUN {command} {e:#}"))?;
        let after = rootfs::snapshot(&root)?;
        let empty = self.work.join("empty");
        std::fs::write(&empty, "")?;
        let entries = rootfs::diff(&before, &after, &root, &empty);
        let changed: Vec<PathBuf> = entries
            .iter()
            .filter(|e| e.source != empty && e.source.is_file())
            .map(|e| e.source.clone())
            .collect();
        // Places in files RUN made are named by their path in the image.
        let mut made = discover::scan_files(changed)?;
        made.relocate(&root, &format!("{}:{line} RUN made ", kubefile.display()));
        found.merge(made.clone());
        if entries.is_empty() {
            return Ok(None);
        }
        let (mut record, _) = self.write(&entries, false).await?;
        record.found = Some(made);
        self.cache.entries.insert(key, record.clone());
        Ok(Some(record))
    }

    /// Writes the config and rootfs manifest of each platform, links the container
    /// images into the CloudImage's repository, and tags the index.
    async fn assemble(
        &self,
        images: &[Image],
        fetched: &[Fetched],
        discovery: &Discovery,
    ) -> anyhow::Result<Digest> {
        let mut entries: Vec<Descriptor> = Vec::new();
        let mut listed: Vec<ContainerImage> = Vec::new();
        let mut carried = BTreeSet::new();
        for f in fetched {
            self.store
                .link_graph(&f.repo, &self.repo, &f.digest)
                .await?;
            let reference = f.image.to_string();
            let places = discovery.images.get(&reference);
            let app_name = places.and_then(|p| app_of(&p[0].file, images));
            let mut d = Descriptor::new(
                MediaType::from(f.media_type.as_str()),
                f.size,
                oci_digest(&f.digest)?,
            );
            d.set_annotations(Some(
                [
                    (
                        ANNOTATION_ROLE.to_string(),
                        ROLE_CONTAINER_IMAGE.to_string(),
                    ),
                    (ANNOTATION_REFERENCE.to_string(), reference.clone()),
                    (ANNOTATION_REF_NAME.to_string(), reference.clone()),
                ]
                .into_iter()
                .collect(),
            ));
            carried.insert(reference.clone());
            entries.push(d);
            listed.push(ContainerImage {
                image: reference,
                digest: f.digest.to_string(),
                app_name,
                platform: None,
            });
        }
        for image in images {
            if let Some(base_repo) = &image.base_repo {
                for (d, c) in &image.base_images {
                    if carried.insert(c.image.clone()) {
                        let digest: Digest = d.digest().to_string().parse()?;
                        self.store
                            .link_graph(base_repo, &self.repo, &digest)
                            .await?;
                        entries.push(d.clone());
                        listed.push(c.clone());
                    }
                }
            }
        }
        let listed_json = serde_json::to_string(&listed)?;

        let mut rootfs_entries = Vec::new();
        let mut first_ext = None;
        for image in images {
            let config = self.config(image)?;
            let config_digest = self.store.put_blob(&self.repo, &config).await?;
            let layers = image
                .layers
                .iter()
                .map(|l| {
                    Ok(Descriptor::new(
                        MediaType::from(l.media_type.as_str()),
                        l.size,
                        oci_digest(&l.digest.parse()?)?,
                    ))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let ext_json = serde_json::to_string(&image.ext)?;
            first_ext.get_or_insert_with(|| ext_json.clone());
            let manifest = ImageManifestBuilder::default()
                .schema_version(2u32)
                .media_type(MediaType::ImageManifest)
                .config(Descriptor::new(
                    MediaType::ImageConfig,
                    config.len() as u64,
                    oci_digest(&config_digest)?,
                ))
                .layers(layers)
                .annotations(
                    [
                        (ANNOTATION_EXTENSION.to_string(), ext_json),
                        (ANNOTATION_CONTAINER_IMAGES.to_string(), listed_json.clone()),
                    ]
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
                )
                .build()?;
            let body = Bytes::from(stable_json(&manifest)?);
            let digest = self
                .store
                .put_manifest(&self.repo, media_type::OCI_MANIFEST, body.clone())
                .await?;
            let mut d = Descriptor::new(
                MediaType::ImageManifest,
                body.len() as u64,
                oci_digest(&digest)?,
            );
            let mut p = PlatformBuilder::default()
                .os(Os::from(image.platform.os.as_str()))
                .architecture(Arch::from(image.platform.architecture.as_str()));
            if let Some(v) = &image.platform.variant {
                p = p.variant(v.clone());
            }
            d.set_platform(Some(p.build()?));
            d.set_annotations(Some(
                [(ANNOTATION_ROLE.to_string(), ROLE_ROOTFS.to_string())]
                    .into_iter()
                    .collect(),
            ));
            rootfs_entries.push(d);
        }
        rootfs_entries.extend(entries);
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(rootfs_entries)
            .annotations(
                [
                    (
                        ANNOTATION_EXTENSION.to_string(),
                        first_ext.unwrap_or_default(),
                    ),
                    (ANNOTATION_CONTAINER_IMAGES.to_string(), listed_json),
                ]
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
            )
            .build()?;
        let body = Bytes::from(stable_json(&index)?);
        let digest = self
            .store
            .put_manifest(&self.repo, media_type::OCI_INDEX, body)
            .await?;
        if let Some(tag) = &self.opts.tag.tag {
            self.store.tag(&self.repo, tag, &digest).await?;
        }
        Ok(digest)
    }

    /// The rootfs image config: platform, ENV, labels, diff_ids and history.
    fn config(&self, image: &Image) -> anyhow::Result<Vec<u8>> {
        let env: Vec<String> = image.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let history = image
            .history
            .iter()
            .map(|(by, empty)| {
                let mut h = HistoryBuilder::default().created_by(by.clone());
                if *empty {
                    h = h.empty_layer(true);
                }
                h.build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut config = ImageConfigurationBuilder::default()
            .architecture(Arch::from(image.platform.architecture.as_str()))
            .os(Os::from(image.platform.os.as_str()))
            .config(
                ConfigBuilder::default()
                    .env(env)
                    .labels(
                        image
                            .labels
                            .clone()
                            .into_iter()
                            .collect::<std::collections::HashMap<_, _>>(),
                    )
                    .build()?,
            )
            .rootfs(
                RootFsBuilder::default()
                    .typ("layers")
                    .diff_ids(
                        image
                            .layers
                            .iter()
                            .map(|l| l.diff_id.clone())
                            .collect::<Vec<_>>(),
                    )
                    .build()?,
            )
            .history(history);
        if let Some(v) = &image.platform.variant {
            config = config.variant(v.clone());
        }
        stable_json(&config.build()?)
    }
}

impl Image {
    fn push_layer(&mut self, layer: LayerRecord, text: &str) {
        self.layers.push(layer);
        self.history.push((text.to_string(), false));
    }
}

fn app_mut<'a>(image: &'a mut Image, name: &str) -> anyhow::Result<&'a mut Application> {
    image
        .ext
        .applications
        .iter_mut()
        .find(|a| a.name == name)
        .with_context(|| format!("no APP named {name:?} is declared before this line"))
}

/// The app whose files name an image: the one whose name is a folder of the file's path
/// under `application/apps/`, or whose files include the file.
fn app_of(file: &Path, images: &[Image]) -> Option<String> {
    let text = file.to_string_lossy();
    images
        .iter()
        .flat_map(|i| &i.ext.applications)
        .find_map(|a| {
            a.files
                .iter()
                .any(|f| text.ends_with(f.as_str()) || text.contains(&format!("/{f}/")))
                .then(|| a.name.clone())
        })
}

/// Where one source goes: into `dest` as a folder when several sources are copied or
/// `dest` ends in `/` (files keep their names), else to `dest` itself.
fn dest_for(source: &Path, dest: &str, many: bool) -> String {
    let into_dir = many || dest.ends_with('/') || dest == "." || dest.is_empty();
    if into_dir && !source.is_dir() {
        let name = source.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let d = dest.trim_end_matches('/');
        if d.is_empty() || d == "." {
            name.to_string()
        } else {
            format!("{d}/{name}")
        }
    } else {
        dest.to_string()
    }
}

fn pairs(kv: &[(String, String)]) -> String {
    kv.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// JSON with object keys in order (oci-spec keeps maps in `HashMap`s, whose order
/// changes from run to run), so the same build gives the same digests.
fn stable_json(value: &impl Serialize) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec(&serde_json::to_value(value)?)?)
}

fn oci_digest(d: &Digest) -> anyhow::Result<oci_spec::image::Digest> {
    d.to_string()
        .parse()
        .map_err(|e| anyhow::anyhow!("digest {d}: {e}"))
}
