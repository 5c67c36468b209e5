//! Crash-safe file operations: write to a temporary file, sync, rename into place, sync
//! the directory. A reader sees either the old state or the complete new one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use uuid::Uuid;

/// Creates `dir` and any missing parents, syncing each parent that gained an entry so
/// the new directories survive a power loss.
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    // A relative path's last parent is "", which is the current folder.
    let parent = dir.parent().map(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
    });
    if let Some(parent) = parent {
        ensure_dir(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {
            if let Some(parent) = parent {
                sync_dir(parent)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}

/// Writes `data` to `dest` atomically and durably.
pub fn write_atomic(tmp_dir: &Path, dest: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = tmp_dir.join(Uuid::new_v4().simple().to_string());
    write_via(&tmp, dest, data, 0o666)
}

/// Writes `data` to `dest` atomically and durably as a file of mode `mode` (less the
/// umask), by way of a temporary file beside it: for files outside the store that
/// another process may read at any moment (keys, logins, caches).
pub fn write_file(dest: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let name = dest
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{} names no file", dest.display())))?;
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        ensure_dir(parent)?;
    }
    let tmp = dest.with_file_name(format!(
        ".{}.{}",
        name.to_string_lossy(),
        Uuid::new_v4().simple()
    ));
    write_via(&tmp, dest, data, mode)
}

fn write_via(tmp: &Path, dest: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(tmp)?;
        f.write_all(data)?;
        f.sync_data()?;
        drop(f);
        publish(tmp, dest)
    })();
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

/// Replaces `dest` with `data` atomically but without syncing: for state that is rewritten
/// often and may be lost in a power failure without harm (upload progress).
pub fn replace(tmp_dir: &Path, dest: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = tmp_dir.join(Uuid::new_v4().simple().to_string());
    let result = fs::write(&tmp, data).and_then(|()| fs::rename(&tmp, dest));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Renames a complete, synced file to `dest` and syncs `dest`'s directory.
pub fn publish(src: &Path, dest: &Path) -> io::Result<()> {
    let parent = dest.parent().expect("destination has a parent");
    ensure_dir(parent)?;
    fs::rename(src, dest)?;
    sync_dir(parent)
}

/// Creates an empty marker file (a link) if it is missing, durably.
pub fn touch(path: &Path) -> io::Result<()> {
    if path.exists() {
        // A link made again is fresh again: garbage collection's grace period counts
        // from the last time it was made or looked at.
        return refresh(path);
    }
    let parent = path.parent().expect("link has a parent");
    ensure_dir(parent)?;
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    sync_dir(parent)
}

/// Sets a file's modification time to now.
pub fn refresh(path: &Path) -> io::Result<()> {
    match fs::File::options().append(true).open(path) {
        Ok(f) => f.set_modified(std::time::SystemTime::now()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes a file; `Ok(false)` when it did not exist.
pub fn remove(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => {
            if let Some(parent) = path.parent() {
                sync_dir(parent)?;
            }
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads a small file; `None` when it does not exist.
pub fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Starts writeback of `[offset, offset+len)` and waits for the window before it to
/// reach the disk. Streaming writes then proceed at the disk's pace instead of piling up
/// dirty pages that one final fsync has to flush while the client waits.
pub fn writeback(file: &File, offset: u64, len: u64, previous: Option<(u64, u64)>) {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: sync_file_range only reads the descriptor and integer arguments; failure is
    // harmless (the final fsync still makes the data durable), so its result is ignored.
    unsafe {
        libc::sync_file_range(fd, offset as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
        if let Some((off, len)) = previous {
            libc::sync_file_range(
                fd,
                off as i64,
                len as i64,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_creates_parents() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        let dest = dir.path().join("a/b/c");
        write_atomic(&tmp, &dest, b"one").unwrap();
        write_atomic(&tmp, &dest, b"two").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"two");
        assert_eq!(
            fs::read_dir(&tmp).unwrap().count(),
            0,
            "no temp file left behind"
        );
        assert!(remove(&dest).unwrap());
        assert!(!remove(&dest).unwrap());
    }
}
