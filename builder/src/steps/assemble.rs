//! The CloudImage at the end of a build: per platform an image config and a rootfs
//! manifest, the container images linked into the CloudImage's repository, and the index
//! listing them all, tagged (see docs/cloudimage.md).

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, HistoryBuilder, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, Os, PlatformBuilder, RootFsBuilder,
};
use sealer_registry::oci::Digest;
use sealer_registry::oci::manifest::media_type;
use serde::Serialize;

use super::app::app_of;
use super::{Builder, Image};
use crate::cloudimage::{
    ANNOTATION_CONTAINER_IMAGES, ANNOTATION_EXTENSION, ANNOTATION_REF_NAME, ANNOTATION_REFERENCE,
    ANNOTATION_ROLE, ContainerImage, ROLE_CONTAINER_IMAGE, ROLE_ROOTFS,
};
use crate::discover::Discovery;
use crate::transfer::Fetched;

/// The container images a CloudImage carries: its index entries and the list its
/// annotation gives.
#[derive(Default)]
struct Carried {
    entries: Vec<Descriptor>,
    listed: Vec<ContainerImage>,
    names: BTreeSet<String>,
}

impl Builder<'_> {
    /// Writes the config and rootfs manifest of each platform, links the container
    /// images into the CloudImage's repository, and tags the index.
    pub(super) async fn assemble(
        &self,
        images: &[Image],
        fetched: &[Fetched],
        discovery: &Discovery,
    ) -> anyhow::Result<Digest> {
        let mut carried = Carried::default();
        for f in fetched {
            self.carry_fetched(f, images, discovery, &mut carried)
                .await?;
        }
        for image in images {
            self.carry_from_base(image, &mut carried).await?;
        }
        let listed_json = serde_json::to_string(&carried.listed)?;
        let mut manifests = Vec::new();
        for image in images {
            manifests.push(self.rootfs_manifest(image, &listed_json).await?);
        }
        let first_ext = serde_json::to_string(&images[0].ext)?;
        manifests.extend(carried.entries);
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(manifests)
            .annotations(HashMap::from([
                (ANNOTATION_EXTENSION.to_string(), first_ext),
                (ANNOTATION_CONTAINER_IMAGES.to_string(), listed_json),
            ]))
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

    /// A fetched container image, linked into the CloudImage's repository and listed
    /// (with the app whose files name it).
    async fn carry_fetched(
        &self,
        f: &Fetched,
        images: &[Image],
        discovery: &Discovery,
        carried: &mut Carried,
    ) -> anyhow::Result<()> {
        self.store
            .link_graph(&f.repo, &self.repo, &f.digest)
            .await?;
        let reference = f.image.to_string();
        let places = discovery.images.get(&reference);
        let app_name = places.and_then(|p| app_of(&p[0].file, images));
        let media_type = MediaType::from(f.media_type.as_str());
        let mut d = Descriptor::new(media_type, f.size, oci_digest(&f.digest)?);
        d.set_annotations(Some(HashMap::from([
            (
                ANNOTATION_ROLE.to_string(),
                ROLE_CONTAINER_IMAGE.to_string(),
            ),
            (ANNOTATION_REFERENCE.to_string(), reference.clone()),
            (ANNOTATION_REF_NAME.to_string(), reference.clone()),
        ])));
        carried.names.insert(reference.clone());
        carried.entries.push(d);
        carried.listed.push(ContainerImage {
            image: reference,
            digest: f.digest.to_string(),
            app_name,
            platform: None,
        });
        Ok(())
    }

    /// The container images the base image carries that the build did not fetch again.
    async fn carry_from_base(&self, image: &Image, carried: &mut Carried) -> anyhow::Result<()> {
        let Some(base_repo) = &image.base_repo else {
            return Ok(());
        };
        for (d, c) in &image.base_images {
            if carried.names.insert(c.image.clone()) {
                let digest: Digest = d.digest().to_string().parse()?;
                self.store
                    .link_graph(base_repo, &self.repo, &digest)
                    .await?;
                carried.entries.push(d.clone());
                carried.listed.push(c.clone());
            }
        }
        Ok(())
    }

    /// One platform's config and rootfs manifest, stored; its index entry.
    async fn rootfs_manifest(
        &self,
        image: &Image,
        listed_json: &str,
    ) -> anyhow::Result<Descriptor> {
        let config = config(image)?;
        let config_digest = self.store.put_blob(&self.repo, &config).await?;
        let layers = image
            .layers
            .iter()
            .map(|l| {
                let media_type = MediaType::from(l.media_type.as_str());
                Ok(Descriptor::new(
                    media_type,
                    l.size,
                    oci_digest(&l.digest.parse()?)?,
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let config_size = config.len() as u64;
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(Descriptor::new(
                MediaType::ImageConfig,
                config_size,
                oci_digest(&config_digest)?,
            ))
            .layers(layers)
            .annotations(HashMap::from([
                (
                    ANNOTATION_EXTENSION.to_string(),
                    serde_json::to_string(&image.ext)?,
                ),
                (
                    ANNOTATION_CONTAINER_IMAGES.to_string(),
                    listed_json.to_string(),
                ),
            ]))
            .build()?;
        let body = Bytes::from(stable_json(&manifest)?);
        let size = body.len() as u64;
        let digest = self
            .store
            .put_manifest(&self.repo, media_type::OCI_MANIFEST, body)
            .await?;
        let mut d = Descriptor::new(MediaType::ImageManifest, size, oci_digest(&digest)?);
        let mut p = PlatformBuilder::default()
            .os(Os::from(image.platform.os.as_str()))
            .architecture(Arch::from(image.platform.architecture.as_str()));
        if let Some(v) = &image.platform.variant {
            p = p.variant(v.clone());
        }
        d.set_platform(Some(p.build()?));
        d.set_annotations(Some(HashMap::from([(
            ANNOTATION_ROLE.to_string(),
            ROLE_ROOTFS.to_string(),
        )])));
        Ok(d)
    }
}

/// The rootfs image config: platform, ENV, labels, diff_ids and history.
fn config(image: &Image) -> anyhow::Result<Vec<u8>> {
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
    let labels: HashMap<_, _> = image.labels.clone().into_iter().collect();
    let diff_ids: Vec<_> = image.layers.iter().map(|l| l.diff_id.clone()).collect();
    let mut config = ImageConfigurationBuilder::default()
        .architecture(Arch::from(image.platform.architecture.as_str()))
        .os(Os::from(image.platform.os.as_str()))
        .config(ConfigBuilder::default().env(env).labels(labels).build()?)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(diff_ids)
                .build()?,
        )
        .history(history);
    if let Some(v) = &image.platform.variant {
        config = config.variant(v.clone());
    }
    stable_json(&config.build()?)
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
