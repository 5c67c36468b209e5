//! The CloudImage `sealer run` puts on hosts, as the steps need it: its layers as blobs
//! in the local store, its launch commands, and the registries its container images
//! come from.

use std::collections::BTreeSet;

use anyhow::Context;
use sealer_builder::inspect;
use sealer_builder::reference::ImageName;
use sealer_builder::store::Store;
use sealer_registry::oci::Digest;

use crate::distribute::Blob;
use sealer_registry::storage::LocalFiles;

pub struct Image {
    pub name: ImageName,
    /// The top manifest's digest: what "the same image" means on a re-run.
    pub digest: Digest,
    /// The file layers, in order, with their media types.
    pub layers: Vec<(Blob, String)>,
    pub launch: Vec<String>,
    /// The image's global env (`ENV`): exported for the launch commands, under the
    /// Clusterfile's.
    pub env: Vec<crate::clusterfile::EnvVar>,
    /// Registry hosts of the container images it carries (`docker.io`, `quay.io`).
    pub upstreams: BTreeSet<String>,
    /// The container images it carries and holds, by name, with their top digests.
    pub carried: Vec<(ImageName, Digest)>,
}

impl Image {
    pub async fn open(store: &Store, reference: &str) -> anyhow::Result<Image> {
        let name = ImageName::parse(reference)?;
        let top = store.require(&name).await.with_context(|| {
            format!("{name} is not in the local store: `sealer pull` or `sealer load` it first")
        })?;
        let repo = name.repo()?;
        let info = inspect::inspect(store, &repo, &top).await?;
        let files = info
            .files()
            .with_context(|| format!("{name} is not a CloudImage (it has no rootfs manifest)"))?;
        let mut layers = Vec::new();
        for l in &files.layers {
            let path = store
                .storage()
                .blob_file(&l.digest)
                .with_context(|| format!("{name}: layer {} is missing from the store", l.digest))?;
            layers.push((
                Blob {
                    digest: l.digest.clone(),
                    path,
                    size: l.size,
                },
                l.media_type.clone(),
            ));
        }
        let upstreams = info
            .container_images
            .iter()
            .filter_map(|i| i.image.as_deref())
            .filter_map(|r| ImageName::parse(r).ok())
            .map(|n| n.host)
            .collect();
        let carried = info
            .container_images
            .iter()
            .filter(|i| i.present)
            .filter_map(|i| {
                Some((
                    ImageName::parse(i.image.as_deref()?).ok()?,
                    i.digest.clone(),
                ))
            })
            .collect();
        let mut env = Vec::new();
        for (key, value) in files.extension.iter().flat_map(|e| &e.env) {
            if !sealer_builder::shell::is_env_name(key) {
                anyhow::bail!("{name}: its env key {key:?} is not a variable name");
            }
            env.push(crate::clusterfile::EnvVar {
                key: key.clone(),
                value: value.clone(),
            });
        }
        Ok(Image {
            env,
            launch: files.launch_commands.clone().unwrap_or_default(),
            digest: top.digest,
            name,
            layers,
            upstreams,
            carried,
        })
    }
}
