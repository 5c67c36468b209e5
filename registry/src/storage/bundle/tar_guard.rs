//! Reading a tar someone else made within bounds: bundles served in place, `sealer
//! load`, `ADD` archives and image layers all go through [`Guarded`].

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Most bytes the tar reader may take to produce one entry: its GNU long name and link,
/// its pax records, and the unread rest of the entry before. The `tar` crate holds long
/// names and pax records in memory whole, so a small compressed archive could otherwise
/// make it allocate gigabytes.
pub const MAX_HEADER_BYTES: u64 = 1 << 20;

/// A reader of a tar stream that fails once more than [`MAX_HEADER_BYTES`] are read to
/// produce one entry, or more than a total in all (what an archive unpacks to). Use
/// [`Guarded::next`] to step through entries.
pub struct Guarded<R> {
    inner: R,
    state: Arc<Budget>,
}

#[derive(Default)]
struct Budget {
    /// Bytes left for the entry being read, while [`Guarded::next`] runs.
    header_left: AtomicU64,
    armed: AtomicBool,
    total_left: AtomicU64,
}

/// The handle that steps through a [`Guarded`] archive's entries.
#[derive(Clone)]
pub struct EntryGuard(Arc<Budget>);

impl<R: Read> Guarded<R> {
    /// `inner`, to be read as a tar of at most `total` bytes.
    pub fn new(inner: R, total: u64) -> (Guarded<R>, EntryGuard) {
        let state = Arc::new(Budget {
            total_left: AtomicU64::new(total),
            ..Budget::default()
        });
        (
            Guarded {
                inner,
                state: state.clone(),
            },
            EntryGuard(state),
        )
    }
}

impl EntryGuard {
    /// The next entry of `entries`, its headers read within [`MAX_HEADER_BYTES`].
    pub fn next<I: Iterator>(&self, entries: &mut I) -> Option<I::Item> {
        self.0.header_left.store(MAX_HEADER_BYTES, Ordering::SeqCst);
        self.0.armed.store(true, Ordering::SeqCst);
        let next = entries.next();
        self.0.armed.store(false, Ordering::SeqCst);
        next
    }
}

fn take(counter: &AtomicU64, n: u64) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
            left.checked_sub(n)
        })
        .is_ok()
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let s = &self.state;
        if s.armed.load(Ordering::SeqCst) && !take(&s.header_left, n as u64) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a tar entry's headers (long name, pax records) take more than {MAX_HEADER_BYTES} bytes"
                ),
            ));
        }
        if !take(&s.total_left, n as u64) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the archive unpacks to more than its size limit",
            ));
        }
        Ok(n)
    }
}

impl<R: Seek> Seek for Guarded<R> {
    /// Seeking skips bytes without reading them: nothing is held in memory for them.
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar whose one file has a GNU long name of `name_len` bytes and `body` bytes.
    fn long_named(name_len: usize, body: usize) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(body as u64);
        h.set_mode(0o644);
        let name = "n".repeat(name_len);
        b.append_data(&mut h, &name, &vec![7u8; body][..]).unwrap();
        b.into_inner().unwrap()
    }

    fn read_all(tar: Vec<u8>, total: u64) -> io::Result<usize> {
        let (reader, guard) = Guarded::new(io::Cursor::new(tar), total);
        let mut archive = tar::Archive::new(reader);
        let mut entries = archive.entries()?;
        let mut n = 0;
        while let Some(e) = guard.next(&mut entries) {
            io::copy(&mut e?, &mut io::sink())?;
            n += 1;
        }
        Ok(n)
    }

    #[test]
    fn headers_and_totals_are_bounded_and_bodies_are_not_headers() {
        // A 200-byte name and a body larger than the header budget: fine.
        assert_eq!(read_all(long_named(200, 3 << 20), u64::MAX).unwrap(), 1);
        // A long name past the budget fails before it is all read.
        let err = read_all(long_named(2 << 20, 1), u64::MAX).unwrap_err();
        assert!(err.to_string().contains("headers"), "{err}");
        // So does an archive past its total.
        let err = read_all(long_named(10, 1 << 20), 512 << 10).unwrap_err();
        assert!(err.to_string().contains("size limit"), "{err}");
    }
}
