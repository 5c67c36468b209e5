//! The build cache's keys. A step's key is the hash of its instruction and of every input
//! file's path, type, mode and content. Content hashes are remembered with each file's
//! stat data (size, times, inode), as git's index does, so an unchanged file is not read
//! again: a rebuild with nothing changed only stats the context.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};

use crate::layer::{Entry, Stamp};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Known {
    stamp: Stamp,
    /// BLAKE3 of the content: it only has to tell contents apart, and runs several times
    /// faster than SHA-256 on CPUs without SHA instructions.
    blake3: String,
}

/// Content hashes of files, remembered across builds in one JSON file.
#[derive(Debug, Default)]
pub struct HashCache {
    path: Option<PathBuf>,
    known: BTreeMap<PathBuf, Known>,
    /// Files whose content was read (hashed) by this instance.
    pub files_read: usize,
}

impl HashCache {
    /// The cache stored at `path`; empty when it does not exist or cannot be read (it is
    /// only a cache).
    pub fn load(path: &Path) -> HashCache {
        let known = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        HashCache {
            path: Some(path.to_path_buf()),
            known,
            files_read: 0,
        }
    }

    /// Writes the cache back (atomically: a crash leaves the old one or the new one).
    pub fn save(&self) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        serde_json::to_writer(&mut tmp, &self.known)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }

    /// Whether every regular file among `inputs` has a remembered hash that is still
    /// valid, so [`step_key`] reads nothing.
    pub fn knows_all(&self, inputs: &[Entry]) -> bool {
        inputs.iter().all(|e| match std::fs::metadata(&e.source) {
            Ok(meta) if meta.is_file() => self
                .known
                .get(&e.source)
                .is_some_and(|k| k.stamp == Stamp::of(&meta)),
            Ok(_) => true,
            Err(_) => false,
        })
    }

    /// Remembers hashes computed elsewhere (while writing a layer), for files whose stat
    /// data did not change since.
    pub fn remember(&mut self, hashes: &[crate::layer::ContentHash]) {
        for h in hashes {
            let unchanged = std::fs::metadata(&h.path).is_ok_and(|m| Stamp::of(&m) == h.stamp);
            if unchanged {
                self.known.insert(
                    h.path.clone(),
                    Known {
                        stamp: h.stamp,
                        blake3: h.blake3.clone(),
                    },
                );
            }
        }
    }

    /// The hash of a regular file's content, read only when its stat data changed.
    pub fn file_hash(&mut self, path: &Path) -> io::Result<String> {
        let meta = std::fs::metadata(path)?;
        let stamp = Stamp::of(&meta);
        if let Some(k) = self.known.get(path)
            && k.stamp == stamp
        {
            return Ok(k.blake3.clone());
        }
        let mut hash = blake3::Hasher::new();
        hash.update_reader(crate::layer::open_regular(path)?.0)?;
        self.files_read += 1;
        let digest = hash.finalize().to_hex().to_string();
        self.known.insert(
            path.to_path_buf(),
            Known {
                stamp,
                blake3: digest.clone(),
            },
        );
        Ok(digest)
    }
}

/// The cache key of a step: its instruction text and its inputs.
pub fn step_key(instruction: &str, inputs: &[Entry], hashes: &mut HashCache) -> io::Result<String> {
    let mut inputs: Vec<&Entry> = inputs.iter().collect();
    inputs.sort_by(|a, b| a.dest.cmp(&b.dest));
    let mut key = Context::new(&SHA256);
    let mut field = |bytes: &[u8]| {
        // Length-prefixed, so fields cannot run into each other.
        key.update(&(bytes.len() as u64).to_le_bytes());
        key.update(bytes);
    };
    field(instruction.as_bytes());
    for e in inputs {
        let meta = std::fs::symlink_metadata(&e.source)?;
        field(e.dest.as_bytes());
        field(&meta.mode().to_le_bytes());
        if meta.is_file() {
            field(hashes.file_hash(&e.source)?.as_bytes());
        } else if meta.file_type().is_symlink() {
            field(
                std::fs::read_link(&e.source)?
                    .as_os_str()
                    .as_encoded_bytes(),
            );
        }
    }
    Ok(hex::encode(key.finish().as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::entries_for;

    #[test]
    fn unchanged_inputs_give_the_same_key_without_reading_files() {
        let ctx = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(ctx.path().join("charts/app")).unwrap();
        std::fs::write(ctx.path().join("charts/app/values.yaml"), "a: 1\n").unwrap();
        std::fs::write(ctx.path().join("charts/app/Chart.yaml"), "name: app\n").unwrap();
        let store = ctx.path().join("cache/hashes.json");
        let inputs = entries_for(&ctx.path().join("charts"), "charts").unwrap();

        let mut first = HashCache::load(&store);
        let key = step_key("COPY charts charts", &inputs, &mut first).unwrap();
        assert_eq!(first.files_read, 2);
        first.save().unwrap();

        // A later build: same key, nothing read.
        let mut again = HashCache::load(&store);
        assert_eq!(
            step_key("COPY charts charts", &inputs, &mut again).unwrap(),
            key
        );
        assert_eq!(again.files_read, 0, "unchanged files are not read again");

        // Another instruction, or changed content, gives another key.
        assert_ne!(
            step_key("COPY charts opt/charts", &inputs, &mut again).unwrap(),
            key
        );
        std::fs::write(ctx.path().join("charts/app/values.yaml"), "a: 2\n").unwrap();
        let changed = step_key("COPY charts charts", &inputs, &mut again).unwrap();
        assert_ne!(changed, key);
        assert_eq!(again.files_read, 1, "only the changed file is read");

        // Rewriting the same content (new times) keeps the key.
        std::fs::write(ctx.path().join("charts/app/values.yaml"), "a: 1\n").unwrap();
        assert_eq!(
            step_key("COPY charts charts", &inputs, &mut again).unwrap(),
            key
        );

        // A damaged cache file is ignored, not fatal.
        std::fs::write(&store, "{not json").unwrap();
        let mut fresh = HashCache::load(&store);
        assert_eq!(
            step_key("COPY charts charts", &inputs, &mut fresh).unwrap(),
            key
        );
        assert_eq!(fresh.files_read, 2);
    }
}
