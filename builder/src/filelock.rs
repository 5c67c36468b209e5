//! Advisory locks on open files (`flock`), released when the file is closed, including
//! when the process dies: what tells a live user of a file from a killed one.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Blocks until this process holds the file's exclusive lock.
pub fn lock_exclusive(file: File) -> io::Result<File> {
    // SAFETY: flock on a file descriptor `file` owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// Takes the file's exclusive lock if no one holds it; `false` if someone does.
pub fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: flock on a file descriptor `file` owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}
