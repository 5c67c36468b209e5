//! What `sealer images` and `sealer inspect` show about stored images.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cloudimage::{
    ANNOTATION_CONTAINER_IMAGES, ANNOTATION_EXTENSION, ANNOTATION_REFERENCE, ANNOTATION_ROLE,
    ContainerImage, ImageExtension, ROLE_CONTAINER_IMAGE, ROLE_ROOTFS,
};
use crate::store::{Store, TaggedImage};
use sealer_registry::oci::manifest::Reference;
use sealer_registry::oci::{Digest, RepoName};
use sealer_registry::storage::StoredManifest;

/// One line of `sealer images`.
#[derive(Debug, Serialize)]
pub struct ImageSummary {
    pub name: String,
    pub tag: String,
    pub digest: String,
    pub media_type: String,
    pub platforms: Vec<String>,
    /// Bytes of every distinct blob and manifest the image holds in the store.
    pub size: u64,
    /// Container images a CloudImage carries (0 for other images).
    pub container_images: usize,
    pub cloud_image: bool,
}

pub async fn summary(store: &Store, t: &TaggedImage) -> anyhow::Result<ImageSummary> {
    let graph = store.graph(&t.repo, &t.manifest.digest).await?;
    let size = graph.blobs.values().map(|b| b.size).sum::<u64>()
        + graph
            .manifests
            .iter()
            .map(|m| m.body.len() as u64)
            .sum::<u64>();
    let c = t.manifest.parse()?;
    let role = |c: &Reference| c.annotations.get(ANNOTATION_ROLE).cloned();
    let cloud_image = c
        .manifests
        .iter()
        .any(|m| role(m).as_deref() == Some(ROLE_ROOTFS));
    let mut platforms: Vec<String> = c
        .manifests
        .iter()
        .filter(|m| !cloud_image || role(m).as_deref() == Some(ROLE_ROOTFS))
        .filter_map(|m| m.platform.as_ref())
        .map(ToString::to_string)
        .collect();
    if c.manifests.is_empty()
        && let Some(config) = c.blobs.first()
        && let Some(p) = platform_of_config(store, &config.digest).await
    {
        platforms.push(p);
    }
    Ok(ImageSummary {
        name: display_repo(&t.repo),
        tag: t.tag.clone(),
        digest: t.manifest.digest.to_string(),
        media_type: t.manifest.media_type.clone(),
        platforms,
        size,
        container_images: c
            .manifests
            .iter()
            .filter(|m| role(m).as_deref() == Some(ROLE_CONTAINER_IMAGE))
            .count(),
        cloud_image,
    })
}

async fn platform_of_config(store: &Store, config: &Digest) -> Option<String> {
    let body = store.config(config).await.ok()??;
    let c: oci_spec::image::ImageConfiguration = serde_json::from_slice(&body).ok()?;
    Some(format!("{}/{}", c.os(), c.architecture()))
}

/// A store repository as users name it: `127.0.0.1_5000/app` is `127.0.0.1:5000/app`.
pub fn display_repo(repo: &RepoName) -> String {
    let s = repo.as_str();
    match s.split_once('/') {
        Some((host, rest)) if host.contains('_') => {
            format!("{}/{rest}", host.replacen('_', ":", 1))
        }
        _ => s.to_string(),
    }
}

/// `sealer inspect`: what a stored image is and carries. Serialised as `sealer inspect`
/// prints it; the installer reads it typed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inspected {
    pub name: String,
    pub digest: Digest,
    pub media_type: String,
    pub cloud_image: bool,
    /// One per rootfs manifest (CloudImages only).
    pub platforms: Vec<PlatformFiles>,
    pub container_images: Vec<CarriedImage>,
    pub annotations: Option<serde_json::Value>,
}

/// A CloudImage's files for one platform.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformFiles {
    pub platform: Option<String>,
    pub manifest: Digest,
    pub layers: Vec<Layer>,
    pub env: Option<serde_json::Value>,
    pub labels: Option<serde_json::Value>,
    pub extension: Option<ImageExtension>,
    /// `LAUNCH`/`CMDS` as commands, in order.
    pub launch_commands: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Layer {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

/// A container image a CloudImage carries.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CarriedImage {
    /// The reference it was built from, e.g. `docker.io/library/nginx:1.25`.
    pub image: Option<String>,
    pub digest: Digest,
    pub media_type: String,
    pub present: bool,
    pub app_name: Option<String>,
}

impl Inspected {
    /// The files for `linux/amd64`, else the first platform's.
    pub fn files(&self) -> Option<&PlatformFiles> {
        self.platforms
            .iter()
            .find(|p| p.platform.as_deref() == Some("linux/amd64"))
            .or_else(|| self.platforms.first())
    }
}

/// One rootfs entry of a CloudImage: its layers, config's ENV and labels, extension and
/// launch commands; `None` if the store lacks its manifest.
async fn platform_files(
    store: &Store,
    repo: &RepoName,
    entry: &Reference,
) -> anyhow::Result<Option<PlatformFiles>> {
    let Some(stored) = store.manifest(repo, &entry.digest).await? else {
        return Ok(None);
    };
    let manifest: oci_spec::image::ImageManifest = serde_json::from_slice(&stored.body)?;
    let notes = manifest.annotations().clone().unwrap_or_default();
    let ext: Option<ImageExtension> = notes
        .get(ANNOTATION_EXTENSION)
        .and_then(|s| serde_json::from_str(s).ok());
    let config: Digest = manifest.config().digest().to_string().parse()?;
    let config: Option<serde_json::Value> = store
        .config(&config)
        .await?
        .and_then(|b| serde_json::from_slice(&b).ok());
    let launch = ext.as_ref().map(launch_commands).transpose()?;
    let layers = manifest
        .layers()
        .iter()
        .map(|l| {
            Ok(Layer {
                digest: l.digest().to_string().parse()?,
                size: l.size(),
                media_type: l.media_type().to_string(),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let pointer = |p: &str| config.as_ref().and_then(|c| c.pointer(p)).cloned();
    Ok(Some(PlatformFiles {
        platform: entry.platform.as_ref().map(ToString::to_string),
        manifest: entry.digest.clone(),
        layers,
        env: pointer("/config/Env"),
        labels: pointer("/config/Labels"),
        extension: ext,
        launch_commands: launch,
    }))
}

/// What `sealer run` launches: the `CMDS`, then each launched app's commands.
fn launch_commands(e: &ImageExtension) -> anyhow::Result<Vec<String>> {
    let mut cmds: Vec<String> = e.launch.cmds.clone();
    for name in &e.launch.app_names {
        if let Some(app) = e.applications.iter().find(|a| &a.name == name) {
            cmds.extend(crate::cloudimage::app_launch(app).map_err(anyhow::Error::msg)?);
        }
    }
    Ok(cmds)
}

pub async fn inspect(
    store: &Store,
    repo: &RepoName,
    top: &StoredManifest,
) -> anyhow::Result<Inspected> {
    let c = top.parse()?;
    let index: serde_json::Value = serde_json::from_slice(&top.body)?;
    let mut platforms = Vec::new();
    let mut images = Vec::new();
    for m in &c.manifests {
        match m.annotations.get(ANNOTATION_ROLE).map(String::as_str) {
            Some(ROLE_ROOTFS) => {
                if let Some(files) = platform_files(store, repo, m).await? {
                    platforms.push(files);
                }
            }
            Some(ROLE_CONTAINER_IMAGE) => {
                images.push(CarriedImage {
                    image: m.annotations.get(ANNOTATION_REFERENCE).cloned(),
                    digest: m.digest.clone(),
                    media_type: m.media_type.clone(),
                    present: store.manifest(repo, &m.digest).await?.is_some(),
                    app_name: None,
                });
            }
            _ => {}
        }
    }
    let listed: Vec<ContainerImage> = index
        .pointer(&format!(
            "/annotations/{}",
            ANNOTATION_CONTAINER_IMAGES.replace('/', "~1")
        ))
        .and_then(|v| v.as_str())
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let apps: BTreeMap<String, Option<String>> =
        listed.into_iter().map(|c| (c.image, c.app_name)).collect();
    for i in &mut images {
        i.app_name = i
            .image
            .as_ref()
            .and_then(|r| apps.get(r).cloned().flatten());
    }
    Ok(Inspected {
        name: display_repo(repo),
        digest: top.digest.clone(),
        media_type: top.media_type.clone(),
        cloud_image: !platforms.is_empty(),
        platforms,
        container_images: images,
        annotations: index.get("annotations").cloned(),
    })
}
