//! What `sealer run` was asked to install, turned into a cluster: bundles loaded into the
//! local store first (their one image is run when no image is named), then the
//! Clusterfile (with its image replaced by a named one) or the short form's hosts.

use std::path::PathBuf;

use anyhow::{Context, bail};
use sealer_builder::bundle;
use sealer_builder::progress::Progress;
use sealer_builder::store::Store;

use crate::clusterfile::{self, Cluster, ShortForm};

/// `sealer run`'s arguments.
#[derive(Debug, Default)]
pub struct Request {
    /// Bundle files (or a split bundle's parts) to load first.
    pub bundles: Vec<PathBuf>,
    pub image: Option<String>,
    pub clusterfile: Option<PathBuf>,
    /// The hosts and settings of the short form; its `image` is set from `image`.
    pub short: ShortForm,
}

impl Request {
    /// The cluster to install. Warnings (a name a bundle moved) go to `notes`.
    pub async fn cluster(
        mut self,
        store: &Store,
        progress: &dyn Progress,
        notes: &mut Vec<String>,
    ) -> anyhow::Result<Cluster> {
        if !self.bundles.is_empty() {
            let loaded = bundle::load(store, &self.bundles, false, progress).await?;
            notes.extend(loaded.notes);
            if self.image.is_none() && self.clusterfile.is_none() {
                match loaded.images.as_slice() {
                    [(name, _)] => self.image = Some(name.to_string()),
                    images => bail!(
                        "the bundle holds {} images: name the one to run",
                        images.len()
                    ),
                }
            }
        }
        if let Some(path) = &self.clusterfile {
            let mut cluster = clusterfile::read_file(path)?;
            if let Some(image) = self.image {
                cluster.image = image;
            }
            return Ok(cluster);
        }
        let image = self
            .image
            .context("give an image, or a Clusterfile with -f")?;
        Ok(ShortForm {
            image,
            ..self.short
        }
        .into_cluster()?)
    }
}
