//! Turning a step's files into a layer: from the build cache when the step's key is
//! known and its blob is still in the store, else written into the store and
//! remembered.

use crate::cache::step_key;
use crate::layer::{ContentHash, Entry, LayerOptions, write_layer};
use sealer_registry::oci::Digest;

use super::{Builder, CACHE_FORMAT, LayerRecord, SEALER_VERSION};

impl Builder<'_> {
    /// The cached layer of step `key`, linked into the image's repository, unless the
    /// cache is off or the blob has left the store.
    pub(super) async fn cached(
        &mut self,
        key: &str,
        label: &str,
    ) -> anyhow::Result<Option<LayerRecord>> {
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
    pub(super) async fn layer(
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
    pub(super) async fn write(
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
}
