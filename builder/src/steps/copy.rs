//! `COPY` and `ADD`: files of the build context into a layer. `ADD` unpacks archives
//! (within `--max-add-size`); the images their files name are carried either way.

use std::path::{Path, PathBuf};

use super::{Builder, Image, sources};
use crate::discover::{self, Discovery};
use crate::layer::{Entry, entries_for};

/// One `COPY` or `ADD` line.
pub(super) struct Copy<'a> {
    pub line: usize,
    pub sources: &'a [String],
    pub dest: &'a str,
    /// `ADD`: archives become their contents.
    pub unpack: bool,
}

impl Builder<'_> {
    pub(super) async fn copy(
        &mut self,
        c: &Copy<'_>,
        image: &mut Image,
        found: &mut Discovery,
    ) -> anyhow::Result<()> {
        let mut paths = Vec::new();
        for s in c.sources {
            paths.extend(sources::resolve(&self.opts.context, s).map_err(anyhow::Error::msg)?);
        }
        let inputs = self.scan_sources(c, &paths, found)?;
        let keyword = if c.unpack { "ADD" } else { "COPY" };
        let text = format!("{keyword} {} {}", c.sources.join(" "), c.dest);
        if self.opts.dry_run {
            let message = format!("{text}: {} file(s)", inputs.len());
            self.progress.message(&message);
            return Ok(());
        }
        let (work, max_add) = (self.work.clone(), self.opts.max_add_bytes);
        let layer = self
            .layer(&text, &inputs, |inputs| match c.unpack {
                false => Ok(inputs.to_vec()),
                true => unpacked(c, &paths, &work, max_add),
            })
            .await?;
        image.push_layer(layer, &text);
        Ok(())
    }

    /// The files a line copies, and the images they name (for `ADD`, those inside its
    /// archives, unpacked once into the build folder).
    fn scan_sources(
        &self,
        c: &Copy<'_>,
        paths: &[PathBuf],
        found: &mut Discovery,
    ) -> anyhow::Result<Vec<Entry>> {
        let many = paths.len() > 1;
        let mut inputs = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            inputs.extend(entries_for(p, &dest_for(p, c.dest, many))?);
            match sources::archive_kind(p).filter(|_| c.unpack && p.is_file()) {
                // The archive's contents are what the image holds: scan those.
                Some(kind) => {
                    let dir = self.work.join(format!("add-{}-{i}", c.line));
                    if !dir.exists() {
                        sources::unpack_archive(p, kind, &dir, self.opts.max_add_bytes)?;
                    }
                    let mut inside = discover::scan_dir(&dir)?;
                    inside.relocate(&dir, &format!("{}!", p.display()));
                    found.merge(inside);
                }
                None => found.merge(discover::scan_path(p)?),
            }
        }
        Ok(inputs)
    }
}

/// What an `ADD` puts in its layer: each archive's contents (unpacked into the build
/// folder `work`), other files as they are.
fn unpacked(
    c: &Copy<'_>,
    paths: &[PathBuf],
    work: &Path,
    max_add: u64,
) -> std::io::Result<Vec<Entry>> {
    let many = paths.len() > 1;
    let mut out = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let d = dest_for(p, c.dest, many);
        match sources::archive_kind(p).filter(|_| p.is_file()) {
            Some(kind) => {
                let dir = work.join(format!("add-{}-{i}", c.line));
                if !dir.exists() {
                    sources::unpack_archive(p, kind, &dir, max_add)?;
                }
                let d = if many || c.dest.ends_with('/') {
                    c.dest.to_string()
                } else {
                    d
                };
                out.extend(entries_for(&dir, &d)?);
            }
            None => out.extend(entries_for(p, &d)?),
        }
    }
    Ok(out)
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
