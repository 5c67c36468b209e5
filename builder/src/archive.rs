//! Recognising archive formats by their first bytes, shared by `ADD` (which unpacks local
//! archives) and bundles (plain or zstd tars); and reading a tar someone else made
//! within bounds ([`Guarded`]).

use std::io::{self, Read};

/// What the first bytes of a file say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Zstd,
    Gzip,
    Tar,
}

/// Bytes [`sniff`] wants to see (a tar's `ustar` magic sits at offset 257).
pub const HEAD: usize = 512;

pub fn sniff(head: &[u8]) -> Option<Kind> {
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Kind::Zstd)
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Some(Kind::Gzip)
    } else if head.get(257..262) == Some(b"ustar") {
        Some(Kind::Tar)
    } else {
        None
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
pub fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The kind of the file at `path`, or `None` (not an archive, or unreadable).
pub fn sniff_file(path: &std::path::Path) -> Option<Kind> {
    let mut head = [0u8; HEAD];
    let mut f = std::fs::File::open(path).ok()?;
    let n = read_full(&mut f, &mut head).ok()?;
    sniff(&head[..n])
}

pub use sealer_registry::storage::bundle::tar_guard::{EntryGuard, Guarded, MAX_HEADER_BYTES};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_told_by_their_magic() {
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Some(Kind::Zstd));
        assert_eq!(sniff(&[0x1f, 0x8b, 8]), Some(Kind::Gzip));
        let mut tar = vec![0u8; HEAD];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(sniff(&tar), Some(Kind::Tar));
        assert_eq!(sniff(b"hello"), None);
    }
}
