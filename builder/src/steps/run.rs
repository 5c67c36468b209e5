//! `RUN`: a command run on the build host in the image's files so far; what it changes
//! becomes a layer, and the images named in the files it made are carried.

use std::path::{Path, PathBuf};

use anyhow::Context;
use sealer_registry::oci::Digest;
use sealer_registry::storage::LocalFiles;

use super::{Builder, CACHE_FORMAT, Image, LayerRecord, SEALER_VERSION, rootfs, sandbox};
use crate::cache::step_key;
use crate::discover::{self, Discovery};
use crate::kubefile::Command;

impl Builder<'_> {
    /// `RUN`: the command runs on the build host in the image's root folder (the layers
    /// so far, unpacked), with the image's ENV and the rootfs `bin/` on PATH; what it
    /// changes becomes a layer. Cached by the command, the ENV and the layers below.
    pub(super) async fn run(
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
            // Unpacked from the store's own file (the builder's store is on this machine).
            let blob = self
                .store
                .storage()
                .blob_file(&d)
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

    /// A `RUN` step: its layer (none when it changed nothing) on the image.
    pub(super) async fn run_step(
        &mut self,
        kubefile: &Path,
        line: usize,
        command: &Command,
        image: &mut Image,
        found: &mut Discovery,
    ) -> anyhow::Result<()> {
        let text = format!("RUN {command}");
        if self.opts.dry_run {
            let why = "not run in a dry run (images its files name are not listed)";
            self.progress.message(&format!("{text}: {why}"));
            return Ok(());
        }
        match self.run(kubefile, line, command, image, found).await? {
            Some(layer) => image.push_layer(layer, &text),
            None => image.history.push((text, true)),
        }
        Ok(())
    }
}
