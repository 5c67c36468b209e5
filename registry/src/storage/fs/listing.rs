//! Sorted directory listings, remembered while the directory is unchanged.
//!
//! Paging through a large tag list reads the same directory once per page; reading and
//! sorting 10,000 names each time made that quadratic. A listing is reused while the
//! directory's mtime is unchanged. Another process writing the same store changes the
//! mtime too, so the cache never needs telling. Because the kernel stamps mtimes with a
//! coarse clock, a listing is only remembered once its directory has been quiet for a
//! while: a change in the same clock tick as the read would otherwise go unnoticed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::list_dir_names;
use crate::storage::{Result, StorageError};

/// Listings shorter than this are cheap to read again and are not kept.
const MIN_CACHED: usize = 256;
/// How long a directory must have been unchanged before its listing is kept.
const QUIET: Duration = Duration::from_secs(2);

/// A directory's names, sorted, and the mtime they were read at.
type Listing = (SystemTime, Arc<Vec<String>>);

#[derive(Debug, Default)]
pub struct SortedDirCache {
    entries: Mutex<HashMap<PathBuf, Listing>>,
}

impl SortedDirCache {
    /// The names in `dir` in byte order; empty when it does not exist.
    pub fn sorted_names(&self, dir: &Path) -> Result<Arc<Vec<String>>> {
        let mtime = match std::fs::metadata(dir).and_then(|m| m.modified()) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Arc::default()),
            Err(e) => return Err(StorageError::io(format!("reading {}", dir.display()), e)),
        };
        if let Some((seen, names)) = self.entries.lock().expect("cache lock").get(dir) {
            if *seen == mtime {
                return Ok(names.clone());
            }
        }
        let mut names = list_dir_names(dir)?.unwrap_or_default();
        names.sort_unstable();
        let names = Arc::new(names);
        let quiet = SystemTime::now().duration_since(mtime).unwrap_or_default() > QUIET;
        let mut entries = self.entries.lock().expect("cache lock");
        if quiet && names.len() >= MIN_CACHED {
            entries.insert(dir.to_path_buf(), (mtime, names.clone()));
        } else {
            entries.remove(dir);
        }
        Ok(names)
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
    }
}
