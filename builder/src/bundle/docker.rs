//! `docker save` archives (the format dockerd before 25 writes): `manifest.json` lists
//! each image's config file (`<id>.json`, named by its SHA-256) and its layers
//! (`<v1-id>/layer.tar`, uncompressed, sometimes a symlink to an identical layer of
//! another image). Loading turns each entry into an OCI image manifest over the same
//! bytes: the config as it is, each layer as an uncompressed OCI layer, so the config's
//! `rootfs.diff_ids` are the layer digests and can be checked.

use std::collections::HashMap;

use anyhow::{Context, bail};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use sealer_registry::oci::Digest;

use crate::reference::ImageName;

/// What to expect of an archive entry that becomes a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A config: its name says its digest.
    Config(Digest),
    /// A layer: its digest is known once it is read.
    Layer,
}

/// Whether `path` (relative, `./` removed) is a config or a layer of a docker archive.
pub fn entry(path: &str) -> Option<Entry> {
    if let Some(dir) = path.strip_suffix("/layer.tar") {
        return (!dir.contains('/')).then_some(Entry::Layer);
    }
    let hex = path.strip_suffix(".json")?;
    let digest = format!("sha256:{hex}").parse().ok()?;
    Some(Entry::Config(digest))
}

/// Where a symlinked `layer.tar` entry points, as an archive path (`a/layer.tar` linking
/// `../b/layer.tar` is `b/layer.tar`).
pub fn link_target(path: &str, link: &str) -> Option<String> {
    let mut parts: Vec<&str> = path.split('/').collect();
    parts.pop();
    for segment in link.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            s => parts.push(s),
        }
    }
    Some(parts.join("/"))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct Config {
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    diff_ids: Vec<Digest>,
}

/// One image of the archive, as an OCI manifest, with the names it was saved under.
pub struct Image {
    pub names: Vec<ImageName>,
    pub manifest: Bytes,
}

/// Builds the images `manifest.json` lists. `blobs` holds each archive path read with
/// the digest and size of its content; `links` maps symlinked paths to their targets;
/// `config_of` reads a stored config.
pub fn images(
    manifest_json: &[u8],
    blobs: &HashMap<String, (Digest, u64)>,
    links: &HashMap<String, String>,
    config_of: impl Fn(&Digest) -> anyhow::Result<Vec<u8>>,
) -> anyhow::Result<Vec<Image>> {
    let list: Vec<ArchiveImage> = serde_json::from_slice(manifest_json)
        .context("manifest.json is not a docker save manifest")?;
    let find = |path: &str| -> anyhow::Result<(Digest, u64)> {
        let target = links.get(path).map(String::as_str).unwrap_or(path);
        blobs
            .get(target)
            .cloned()
            .with_context(|| format!("manifest.json names {path}, which the archive lacks"))
    };
    let mut out = Vec::new();
    for image in list {
        let tags = image.repo_tags.unwrap_or_default();
        if tags.is_empty() {
            bail!(
                "image {} in the archive has no name (it was saved by ID); save it by name",
                image.config
            );
        }
        let (config, config_size) = find(&image.config)?;
        let parsed: Config = serde_json::from_slice(&config_of(&config)?)
            .with_context(|| format!("{}: not an image config", image.config))?;
        let mut layers = Vec::new();
        for (i, path) in image.layers.iter().enumerate() {
            let (digest, size) = find(path)?;
            if parsed.rootfs.diff_ids.get(i) != Some(&digest) {
                bail!(
                    "{path} is damaged: its content has digest {digest}, but the image config expects {}",
                    parsed
                        .rootfs
                        .diff_ids
                        .get(i)
                        .map(|d| d.to_string())
                        .unwrap_or_else(|| "fewer layers".into())
                );
            }
            layers.push(json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": digest.to_string(),
                "size": size,
            }));
        }
        if parsed.rootfs.diff_ids.len() != layers.len() {
            bail!(
                "{}: the config lists {} layers, manifest.json {}",
                image.config,
                parsed.rootfs.diff_ids.len(),
                layers.len()
            );
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config.to_string(),
                "size": config_size,
            },
            "layers": layers,
        });
        let names = tags
            .iter()
            .map(|t| ImageName::parse(t).map_err(anyhow::Error::from))
            .collect::<anyhow::Result<_>>()?;
        out.push(Image {
            names,
            manifest: Bytes::from(serde_json::to_vec(&manifest)?),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_entries_and_links() {
        let hex = "a".repeat(64);
        assert_eq!(
            entry(&format!("{hex}.json")),
            Some(Entry::Config(format!("sha256:{hex}").parse().unwrap()))
        );
        assert_eq!(entry("abc/layer.tar"), Some(Entry::Layer));
        assert_eq!(entry("manifest.json"), None);
        assert_eq!(entry("abc/json"), None);
        assert_eq!(entry("a/b/layer.tar"), None);
        assert_eq!(
            link_target("abc/layer.tar", "../def/layer.tar").as_deref(),
            Some("def/layer.tar")
        );
        assert_eq!(link_target("abc/layer.tar", "../../x"), None);
    }

    #[test]
    fn checks_layers_against_the_config() {
        let layer = Digest::sha256_of(b"layer");
        let config = format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["{layer}"]}}}}"#);
        let config_digest = Digest::sha256_of(config.as_bytes());
        let mut blobs = HashMap::new();
        blobs.insert(
            "c.json".to_string(),
            (config_digest.clone(), config.len() as u64),
        );
        blobs.insert("l1/layer.tar".to_string(), (layer.clone(), 5));
        let mut links = HashMap::new();
        links.insert("l2/layer.tar".to_string(), "l1/layer.tar".to_string());
        let read = |_: &Digest| Ok(config.as_bytes().to_vec());

        let ok = br#"[{"Config":"c.json","RepoTags":["app:1"],"Layers":["l2/layer.tar"]}]"#;
        let found = images(ok, &blobs, &links, read).unwrap();
        assert_eq!(found[0].names[0].to_string(), "docker.io/library/app:1");
        let m: serde_json::Value = serde_json::from_slice(&found[0].manifest).unwrap();
        assert_eq!(m["layers"][0]["digest"], layer.to_string());
        assert_eq!(m["config"]["digest"], config_digest.to_string());

        blobs.insert("l1/layer.tar".to_string(), (Digest::sha256_of(b"other"), 5));
        let err = images(ok, &blobs, &links, read).err().unwrap().to_string();
        assert!(err.contains("l2/layer.tar is damaged"), "{err}");

        let unnamed = br#"[{"Config":"c.json","RepoTags":null,"Layers":[]}]"#;
        let err = images(unnamed, &blobs, &links, read)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no name"), "{err}");
    }
}
