//! Reading a tar someone else made within bounds: bundles served in place, `sealer
//! load`, `ADD` archives and image layers all go through [`Guarded`].

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Most bytes the tar reader may take to produce one entry beyond the unread rest of
/// the entry before: its GNU long name and link and its pax records. The `tar` crate
/// holds those in memory whole, so a small compressed archive could otherwise make it
/// allocate gigabytes.
pub const MAX_HEADER_BYTES: u64 = 1 << 20;

/// A reader of a tar stream that fails once more than [`MAX_HEADER_BYTES`] of headers
/// are read for one entry, or once it has read a total (what an archive unpacks to).
/// Step through the entries with [`EntryGuard::next`].
pub struct Guarded<R> {
    inner: R,
    state: Arc<Budget>,
}

#[derive(Default)]
struct Budget {
    /// Where the reader is in the stream.
    pos: AtomicU64,
    /// While [`EntryGuard::next`] runs: reads may not go past this position.
    header_end: AtomicU64,
    armed: AtomicBool,
    /// Where the last entry's data (padded to a block) ends.
    data_end: AtomicU64,
    total: u64,
}

/// The handle that steps through a [`Guarded`] archive's entries.
#[derive(Clone)]
pub struct EntryGuard(Arc<Budget>);

impl<R: Read> Guarded<R> {
    /// `inner`, to be read as a tar of at most `total` bytes.
    pub fn new(inner: R, total: u64) -> (Guarded<R>, EntryGuard) {
        let state = Arc::new(Budget {
            total,
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
    /// The next entry of `entries`, its headers read within [`MAX_HEADER_BYTES`] (the
    /// rest of the entry before, which the reader skips, does not count).
    pub fn next<'a, R: Read>(
        &self,
        entries: &mut tar::Entries<'a, R>,
    ) -> Option<io::Result<tar::Entry<'a, R>>> {
        let s = &self.0;
        let from = s
            .pos
            .load(Ordering::SeqCst)
            .max(s.data_end.load(Ordering::SeqCst));
        s.header_end
            .store(from.saturating_add(MAX_HEADER_BYTES), Ordering::SeqCst);
        s.armed.store(true, Ordering::SeqCst);
        let next = entries.next();
        s.armed.store(false, Ordering::SeqCst);
        if let Some(Ok(entry)) = &next {
            let padded = entry.size().div_ceil(512).saturating_mul(512);
            let end = entry.raw_file_position().saturating_add(padded);
            s.data_end.store(end, Ordering::SeqCst);
        }
        next
    }
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let s = &self.state;
        let pos = s.pos.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        if s.armed.load(Ordering::SeqCst) && pos > s.header_end.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a tar entry's headers (long name, pax records) take more than {MAX_HEADER_BYTES} bytes"
                ),
            ));
        }
        if pos > s.total {
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
        let at = self.inner.seek(pos)?;
        self.state.pos.store(at, Ordering::SeqCst);
        Ok(at)
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

    #[test]
    fn entries_left_unread_are_skipped_without_counting_as_headers() {
        let mut b = tar::Builder::new(Vec::new());
        for name in ["a", "b", "c"] {
            let mut h = tar::Header::new_gnu();
            h.set_size(3 << 20);
            h.set_mode(0o644);
            b.append_data(&mut h, name, &vec![1u8; 3 << 20][..])
                .unwrap();
        }
        let tar = b.into_inner().unwrap();
        let (reader, guard) = Guarded::new(io::Cursor::new(tar), u64::MAX);
        let mut archive = tar::Archive::new(reader);
        let mut entries = archive.entries().unwrap();
        let mut names = Vec::new();
        while let Some(e) = guard.next(&mut entries) {
            names.push(e.unwrap().path().unwrap().display().to_string());
        }
        assert_eq!(names, ["a", "b", "c"]);
    }
}
