//! Sorted directory listings, remembered while the directory is unchanged.
//!
//! Paging through a large tag list reads the same directory once per page; reading and
//! sorting 10,000 names each time made that quadratic. A listing is reused while the
//! directory's mtime is unchanged, and this process's own writes drop it at once.
//!
//! Another process writing the same store changes the mtime too. The kernel stamps
//! mtimes with a coarse clock, though, so a write by another process in the same clock
//! tick as the read would leave the mtime unchanged. A listing read from a directory that
//! had been quiet for a while is therefore kept as long as the mtime holds; one read from
//! a directory that just changed is only trusted for a second.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::list_dir_names;
use crate::storage::{Result, StorageError};

/// Listings shorter than this are cheap to read again and are not kept.
const MIN_CACHED: usize = 256;
/// How long a directory must have been unchanged before its listing is trusted for as
/// long as its mtime holds (more than any filesystem's timestamp granularity).
const QUIET: Duration = Duration::from_secs(2);
/// How long a listing of a directory that had just changed is trusted.
const FRESH: Duration = Duration::from_secs(1);

struct Listing {
    mtime: SystemTime,
    /// `None`: valid while the mtime holds; otherwise valid until then.
    expires: Option<Instant>,
    names: Arc<Vec<String>>,
}

#[derive(Debug, Default)]
pub struct SortedDirCache {
    entries: Mutex<HashMap<PathBuf, Listing>>,
}

impl std::fmt::Debug for Listing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} names", self.names.len())
    }
}

impl SortedDirCache {
    /// The names in `dir` in byte order; empty when it does not exist.
    pub fn sorted_names(&self, dir: &Path) -> Result<Arc<Vec<String>>> {
        let mtime = match std::fs::metadata(dir).and_then(|m| m.modified()) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Arc::default()),
            Err(e) => return Err(StorageError::io(format!("reading {}", dir.display()), e)),
        };
        if let Some(l) = self.entries.lock().expect("cache lock").get(dir) {
            if l.mtime == mtime && l.expires.is_none_or(|t| Instant::now() < t) {
                return Ok(l.names.clone());
            }
        }
        let mut names = list_dir_names(dir)?.unwrap_or_default();
        names.sort_unstable();
        let names = Arc::new(names);
        let mut entries = self.entries.lock().expect("cache lock");
        if names.len() >= MIN_CACHED {
            let quiet = SystemTime::now().duration_since(mtime).unwrap_or_default() > QUIET;
            let expires = (!quiet).then(|| Instant::now() + FRESH);
            entries.insert(
                dir.to_path_buf(),
                Listing {
                    mtime,
                    expires,
                    names: names.clone(),
                },
            );
        } else {
            entries.remove(dir);
        }
        Ok(names)
    }

    /// Forgets `dir`'s listing after this process changed it.
    pub fn invalidate(&self, dir: &Path) {
        self.entries.lock().expect("cache lock").remove(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_follow_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let cache = SortedDirCache::default();
        for i in 0..300 {
            std::fs::write(dir.path().join(format!("t{i:03}")), "").unwrap();
        }
        // Make the directory look quiet so the listing is kept.
        let old = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::open(dir.path())
            .unwrap()
            .set_modified(old)
            .unwrap();
        let first = cache.sorted_names(dir.path()).unwrap();
        assert_eq!(first.len(), 300);
        assert_eq!(first[0], "t000");
        assert!(
            Arc::ptr_eq(&first, &cache.sorted_names(dir.path()).unwrap()),
            "reused"
        );
        std::fs::write(dir.path().join("a-new-tag"), "").unwrap();
        let second = cache.sorted_names(dir.path()).unwrap();
        assert_eq!(second.len(), 301);
        assert_eq!(second[0], "a-new-tag");
        // Fresh from a change: reused briefly, and dropped when this process writes.
        assert!(Arc::ptr_eq(
            &second,
            &cache.sorted_names(dir.path()).unwrap()
        ));
        cache.invalidate(dir.path());
        assert!(!Arc::ptr_eq(
            &second,
            &cache.sorted_names(dir.path()).unwrap()
        ));
    }
}

/// How long the repository list is reused when this process has not changed it: other
/// processes writing the same store (`sealer load`) show within this time.
pub const CATALOG_TTL: Duration = Duration::from_secs(5);

/// The list of repositories, sorted, so that `_catalog` does not walk the whole store on
/// each request. This process's own writes that add or remove a repository drop it.
#[derive(Debug, Default)]
pub struct CatalogCache {
    entry: Mutex<Option<(Instant, Arc<Vec<String>>)>>,
    /// Bumped by every [`CatalogCache::forget`]: a list read across one is not kept.
    generation: std::sync::atomic::AtomicU64,
}

impl CatalogCache {
    /// The kept list, if it is younger than [`CATALOG_TTL`].
    pub fn get(&self) -> Option<Arc<Vec<String>>> {
        let entry = self.entry.lock().expect("catalog lock");
        entry
            .as_ref()
            .filter(|(at, _)| at.elapsed() < CATALOG_TTL)
            .map(|(_, list)| list.clone())
    }

    /// Call before reading the list; pass the answer to [`CatalogCache::put`].
    pub fn begin(&self) -> (Instant, u64) {
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        (Instant::now(), generation)
    }

    /// Keeps `list` unless the repositories changed while it was read.
    pub fn put(&self, list: Arc<Vec<String>>, (read_at, generation): (Instant, u64)) {
        let mut entry = self.entry.lock().expect("catalog lock");
        if self.generation.load(std::sync::atomic::Ordering::SeqCst) == generation {
            *entry = Some((read_at, list));
        }
    }

    pub fn forget(&self) {
        let mut entry = self.entry.lock().expect("catalog lock");
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        *entry = None;
    }
}
