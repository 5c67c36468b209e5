//! `FROM`: the image a build starts from. Nothing for `scratch`; else the base
//! CloudImage's rootfs for the platform (its layers, history, ENV and labels), its
//! extension (apps, launch, env) and the container images it carries.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use sealer_registry::oci::Digest;
use sealer_registry::storage::StoredManifest;

use super::{Builder, Image, LayerRecord, SEALER_VERSION, vars};
use crate::cloudimage::{
    ANNOTATION_CONTAINER_IMAGES, ANNOTATION_EXTENSION, ANNOTATION_REFERENCE, ANNOTATION_ROLE,
    BuildClient, ContainerImage, ImageExtension, LABEL_VERSION, ROLE_CONTAINER_IMAGE, ROLE_ROOTFS,
    SCHEMA_VERSION,
};
use crate::kubefile::{Instruction, Kubefile};
use crate::reference::{ImageName, Platform, wanted};
use crate::transfer::{Fetched, PullPolicy, Transfer};

impl Builder<'_> {
    /// The image for `platform` as the Kubefile's `FROM` gives it.
    pub(super) async fn base(
        &mut self,
        kf: &Kubefile,
        platform: &Platform,
        transfer: &Transfer<'_>,
    ) -> anyhow::Result<Image> {
        let mut image = self.new_image(platform);
        let Some(base) = kf.base() else {
            return Ok(image);
        };
        // `FROM --platform=P` takes that platform's rootfs whatever is being built.
        let platform = &match from_platform(kf) {
            Some(p) => Platform::parse(p)?,
            None => platform.clone(),
        };
        let name = ImageName::parse(base)?;
        let Some(fetched) = self.fetch_base(&name, platform, transfer).await? else {
            image.base_unknown = true;
            return Ok(image);
        };
        let index = self
            .store
            .manifest(&fetched.repo, &fetched.digest)
            .await?
            .context("the base image vanished from the store")?;
        let rootfs = self.rootfs_of(&name, &fetched, &index, platform).await?;
        let config = self
            .store
            .config(&rootfs.config().digest().to_string().parse()?)
            .await?
            .context("the base image's config is missing")?;
        inherit_rootfs(&mut image, &rootfs, &serde_json::from_slice(&config)?);
        inherit_extension(&mut image, &name, &rootfs, &index)?;
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

    /// An image with nothing in it yet but the build's labels and extension defaults.
    fn new_image(&self, platform: &Platform) -> Image {
        let mut labels = BTreeMap::from([(LABEL_VERSION.to_string(), SEALER_VERSION.to_string())]);
        labels.extend(self.opts.labels.iter().cloned());
        Image {
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
        }
    }

    /// The base image in the store, fetched if the pull policy allows. A dry run fetches
    /// nothing: without the base in the store, `None` (what it declares is unknown).
    async fn fetch_base(
        &self,
        name: &ImageName,
        platform: &Platform,
        transfer: &Transfer<'_>,
    ) -> anyhow::Result<Option<Fetched>> {
        let pull = match self.opts.dry_run {
            true => PullPolicy::Never,
            false => self.opts.pull,
        };
        match transfer
            .fetch(name, std::slice::from_ref(platform), pull)
            .await
        {
            Ok(f) => Ok(Some(f)),
            Err(_) if self.opts.dry_run => {
                self.progress.message(&format!(
                    "FROM {name}: not in the local store (a build pulls it); its applications are not known"
                ));
                Ok(None)
            }
            Err(e) => Err(e).with_context(|| format!("cannot get the base image {name}")),
        }
    }

    /// The base's rootfs manifest for `platform`.
    async fn rootfs_of(
        &self,
        name: &ImageName,
        fetched: &Fetched,
        index: &StoredManifest,
        platform: &Platform,
    ) -> anyhow::Result<ImageManifest> {
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
        Ok(serde_json::from_slice(&manifest.body)?)
    }
}

/// The `--platform` a `FROM` line names, if any.
fn from_platform(kf: &Kubefile) -> Option<&str> {
    kf.steps.iter().find_map(|s| match &s.instruction {
        Instruction::From {
            platform: Some(p), ..
        } => Some(p.as_str()),
        _ => None,
    })
}

/// The base rootfs's layers, history, ENV and labels (the build's own labels win).
fn inherit_rootfs(image: &mut Image, rootfs: &ImageManifest, config: &ImageConfiguration) {
    let diff_ids = config.rootfs().diff_ids();
    for (i, l) in rootfs.layers().iter().enumerate() {
        image.layers.push(LayerRecord {
            digest: l.digest().to_string(),
            diff_id: diff_ids.get(i).cloned().unwrap_or_default(),
            size: l.size(),
            media_type: l.media_type().to_string(),
            found: None,
        });
    }
    for h in config.history().iter().flatten() {
        let by = h.created_by().clone().unwrap_or_default();
        image.history.push((by, h.empty_layer().unwrap_or(false)));
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
}

/// The base's extension (apps, launch, env, Kubernetes version) and the container
/// images its index carries.
fn inherit_extension(
    image: &mut Image,
    name: &ImageName,
    rootfs: &ImageManifest,
    index: &StoredManifest,
) -> anyhow::Result<()> {
    let notes = rootfs.annotations().clone().unwrap_or_default();
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
    let index_doc: ImageIndex = serde_json::from_slice(&index.body)?;
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
    Ok(())
}
