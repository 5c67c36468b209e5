//! Layers: a set of files as a reproducible tar, compressed, streamed to a file while both
//! digests are computed (the blob's, and the uncompressed `diff_id` an image config
//! lists). The same files give the same bytes: entries sorted by path, and unless asked
//! otherwise, fixed modification times and root ownership.

use std::io::{self, BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ring::digest::{Context, SHA256};

use serde::{Deserialize, Serialize};

pub const MEDIA_TYPE_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MEDIA_TYPE_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    Zstd,
    Gzip,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Zstd => MEDIA_TYPE_ZSTD,
            Compression::Gzip => MEDIA_TYPE_GZIP,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct LayerOptions {
    pub compression: Compression,
    /// Keep the files' modification times, owners and exact modes instead of the fixed,
    /// reproducible ones.
    pub keep_metadata: bool,
    /// Also hash each regular file's content as it is read (for the build cache, so a
    /// first build reads every file once, not twice).
    pub hash_contents: bool,
}

/// The stat data that says a file is unchanged (as git's index keeps it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    dev: u64,
}

impl Stamp {
    pub fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

/// A regular file's content hash, computed while writing a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentHash {
    pub path: PathBuf,
    /// The file's stat data when it was read.
    pub stamp: Stamp,
    /// Lowercase hex BLAKE3, as the build cache keeps it.
    pub blake3: String,
}

/// One file, folder or symlink of the layer: where it comes from and its path in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub source: PathBuf,
    pub dest: String,
}

/// A written layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub path: PathBuf,
    /// `sha256:…` of the compressed bytes: the blob's digest.
    pub digest: String,
    /// `sha256:…` of the tar: the config's `rootfs.diff_ids` entry.
    pub diff_id: String,
    pub size: u64,
    pub media_type: &'static str,
    /// With [`LayerOptions::hash_contents`]: every regular file's content hash.
    pub contents: Vec<ContentHash>,
}

/// Opens a regular file for reading without following a symlink (and without waiting on
/// a FIFO), and returns it with its own metadata: what is read is what was checked, even
/// if the path is swapped for a link to another file meanwhile.
pub fn open_regular(path: &Path) -> io::Result<(std::fs::File, std::fs::Metadata)> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: became a symlink while it was read", path.display()),
            ),
            _ => io::Error::new(e.kind(), format!("{}: {e}", path.display())),
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not a regular file", path.display()),
        ));
    }
    Ok((file, meta))
}

/// Files a layer can hold: folders, regular files and symlinks. A FIFO, socket or
/// device in a build context is an error (reading a FIFO would wait forever).
fn copyable(path: &Path, kind: std::fs::FileType) -> io::Result<()> {
    if kind.is_dir() || kind.is_file() || kind.is_symlink() {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{}: a FIFO, socket or device cannot be copied into an image",
            path.display()
        ),
    ))
}

/// The entries for copying `source` (a file, a symlink or a folder, recursively) to
/// `dest` in the image, as `COPY` does: a folder's contents go under `dest`.
pub fn entries_for(source: &Path, dest: &str) -> io::Result<Vec<Entry>> {
    let dest = dest.trim_start_matches('/').trim_end_matches('/');
    let mut out = Vec::new();
    let meta = std::fs::symlink_metadata(source)?;
    copyable(source, meta.file_type())?;
    if meta.is_dir() {
        if !dest.is_empty() && dest != "." {
            out.push(Entry {
                source: source.to_path_buf(),
                dest: dest.to_string(),
            });
        }
        collect(source, dest, &mut out)?;
    } else {
        out.push(Entry {
            source: source.to_path_buf(),
            dest: dest.to_string(),
        });
    }
    Ok(out)
}

fn collect(dir: &Path, dest: &str, out: &mut Vec<Entry>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_str().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: the name is not UTF-8", entry.path().display()),
            )
        })?;
        let child = if dest.is_empty() || dest == "." {
            name.to_string()
        } else {
            format!("{dest}/{name}")
        };
        copyable(&entry.path(), entry.file_type()?)?;
        out.push(Entry {
            source: entry.path(),
            dest: child.clone(),
        });
        if entry.file_type()?.is_dir() {
            collect(&entry.path(), &child, out)?;
        }
    }
    Ok(())
}

/// Writes `entries` as a layer into a new file in `dir`.
pub fn write_layer(entries: &[Entry], options: LayerOptions, dir: &Path) -> io::Result<Layer> {
    let mut entries = entries.to_vec();
    entries.sort_by(|a, b| a.dest.cmp(&b.dest));
    entries.dedup_by(|a, b| a.dest == b.dest);

    let file = tempfile::Builder::new()
        .prefix(".layer-")
        .tempfile_in(dir)?;
    // Two stages on two threads: this one reads the files and writes the tar (hashing
    // contents and the diff_id); the other compresses, hashes the blob and writes it.
    // Either alone would leave a core idle on a 2-core machine.
    let (chunks, received) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    // Emptied chunks go back for reuse: a few buffers in all, however large the layer.
    let (recycle, recycled) = std::sync::mpsc::channel::<Vec<u8>>();
    let compression = options.compression;
    let (compressed, diff_id, contents) = std::thread::scope(|scope| {
        let sink = scope.spawn(move || -> io::Result<_> {
            let compressed = Hashing::new(BufWriter::with_capacity(1 << 20, file));
            let mut enc: Box<dyn Compressor<_>> = match compression {
                Compression::Zstd => {
                    let mut enc = zstd::Encoder::new(compressed, 3)?;
                    // A fixed worker count keeps the bytes reproducible.
                    enc.multithread(2)?;
                    Box::new(enc)
                }
                Compression::Gzip => Box::new(flate2::write::GzEncoder::new(
                    compressed,
                    flate2::Compression::default(),
                )),
            };
            for mut chunk in received {
                enc.write_all(&chunk)?;
                chunk.clear();
                let _ = recycle.send(chunk);
            }
            enc.finish_boxed()
        });
        let tar = write_tar(&entries, options, ChannelWriter::new(chunks, recycled));
        // Closing the channel (on success or error) ends the other stage.
        let (channel, diff_id, contents) = match tar {
            Ok(t) => t,
            Err(e) => {
                // If the other stage failed first (a full disk), its error is the cause.
                return match sink.join() {
                    Ok(Err(cause)) => Err(cause),
                    _ => Err(e),
                };
            }
        };
        channel.close()?;
        let compressed = sink
            .join()
            .map_err(|_| io::Error::other("the compression thread panicked"))??;
        Ok((compressed, diff_id, contents))
    })?;
    let (writer, digest, size) = compressed.finish();
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.as_file().sync_all()?;
    let digest = format!("sha256:{digest}");
    let path = dir.join(digest.trim_start_matches("sha256:"));
    file.persist(&path).map_err(|e| e.error)?;
    Ok(Layer {
        path,
        digest,
        diff_id: format!("sha256:{diff_id}"),
        size,
        media_type: options.compression.media_type(),
        contents,
    })
}

fn write_tar<W: Write>(
    entries: &[Entry],
    options: LayerOptions,
    out: W,
) -> io::Result<(W, String, Vec<ContentHash>)> {
    let mode = if options.keep_metadata {
        tar::HeaderMode::Complete
    } else {
        tar::HeaderMode::Deterministic
    };
    let mut tar = tar::Builder::new(Hashing::new(out));
    tar.mode(mode);
    tar.follow_symlinks(false);
    let mut contents = Vec::new();
    for e in entries {
        let meta = std::fs::symlink_metadata(&e.source)?;
        copyable(&e.source, meta.file_type())?;
        if meta.is_dir() {
            tar.append_dir(&e.dest, &e.source)?;
        } else if meta.is_file() {
            // The header comes from the opened file, not from the path checked above.
            let (file, meta) = open_regular(&e.source)?;
            let mut header = tar::Header::new_gnu();
            header.set_metadata_in_mode(&meta, mode);
            let mut reader = HashingReader {
                inner: file,
                hash: options.hash_contents.then(blake3::Hasher::new),
            };
            tar.append_data(&mut header, &e.dest, &mut reader)?;
            if let Some(hash) = reader.hash {
                contents.push(ContentHash {
                    path: e.source.clone(),
                    stamp: Stamp::of(&meta),
                    blake3: hash.finalize().to_hex().to_string(),
                });
            }
        } else {
            tar.append_path_with_name(&e.source, &e.dest)?;
        }
    }
    let hashing = tar.into_inner()?;
    let (inner, diff_id, _) = hashing.finish();
    Ok((inner, diff_id, contents))
}

/// An encoder that can be finished through a box.
trait Compressor<W>: Write + Send {
    fn finish_boxed(self: Box<Self>) -> io::Result<W>;
}

impl<W: Write + Send> Compressor<W> for zstd::Encoder<'static, W> {
    fn finish_boxed(self: Box<Self>) -> io::Result<W> {
        (*self).finish()
    }
}

impl<W: Write + Send> Compressor<W> for flate2::write::GzEncoder<W> {
    fn finish_boxed(self: Box<Self>) -> io::Result<W> {
        (*self).finish()
    }
}

/// Sends what is written, in 1 MiB chunks, to another thread, which sends the emptied
/// buffers back.
struct ChannelWriter {
    buf: Vec<u8>,
    to: std::sync::mpsc::SyncSender<Vec<u8>>,
    back: std::sync::mpsc::Receiver<Vec<u8>>,
}

const CHUNK: usize = 1 << 20;

impl ChannelWriter {
    fn new(
        to: std::sync::mpsc::SyncSender<Vec<u8>>,
        back: std::sync::mpsc::Receiver<Vec<u8>>,
    ) -> Self {
        ChannelWriter {
            buf: Vec::with_capacity(CHUNK),
            to,
            back,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        let next = self
            .back
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let full = std::mem::replace(&mut self.buf, next);
        self.to
            .send(full)
            .map_err(|_| io::Error::other("the compression thread stopped"))
    }

    /// Sends what is left; dropping the writer then closes the channel.
    fn close(mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A reader that hashes what passes through.
struct HashingReader<R> {
    inner: R,
    /// `None`: nothing to hash.
    hash: Option<blake3::Hasher>,
}

impl<R: io::Read> io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hash {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// A writer that hashes and counts what passes through.
struct Hashing<W> {
    inner: W,
    hash: Context,
    written: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            hash: Context::new(&SHA256),
            written: 0,
        }
    }

    fn finish(self) -> (W, String, u64) {
        let digest = self.hash.finish();
        (self.inner, hex::encode(digest.as_ref()), self.written)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copied_file_is_read_as_opened_never_through_a_link_or_from_a_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("secret"), "root only").unwrap();
        std::os::unix::fs::symlink(d.join("secret"), d.join("link")).unwrap();
        let err = open_regular(&d.join("link")).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        let fifo = d.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let err = open_regular(&fifo).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let err = entries_for(d, "x").unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
        let (_, meta) = open_regular(&d.join("secret")).unwrap();
        assert_eq!(meta.len(), 9);
    }
    use std::fs::File;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    fn context(root: &Path) {
        std::fs::create_dir_all(root.join("rootfs/etc/app")).unwrap();
        std::fs::write(root.join("rootfs/etc/app/config.yaml"), "a: 1\n").unwrap();
        std::fs::write(root.join("rootfs/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(
            root.join("rootfs/run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("run.sh", root.join("rootfs/start")).unwrap();
    }

    fn tar_listing(layer: &Layer) -> Vec<(String, u32, u64, char)> {
        let file = File::open(&layer.path).unwrap();
        let reader: Box<dyn Read> = match layer.media_type {
            MEDIA_TYPE_ZSTD => Box::new(zstd::Decoder::new(file).unwrap()),
            _ => Box::new(flate2::read::GzDecoder::new(file)),
        };
        let mut archive = tar::Archive::new(reader);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                let kind = match h.entry_type() {
                    tar::EntryType::Directory => 'd',
                    tar::EntryType::Symlink => 'l',
                    _ => 'f',
                };
                (
                    e.path().unwrap().display().to_string(),
                    h.mode().unwrap() & 0o777,
                    h.mtime().unwrap(),
                    kind,
                )
            })
            .collect()
    }

    #[test]
    fn hashing_contents_while_writing_changes_no_byte_and_gives_each_files_hash() {
        let ctx = tempfile::tempdir().unwrap();
        context(ctx.path());
        let out = tempfile::tempdir().unwrap();
        let entries = entries_for(&ctx.path().join("rootfs"), ".").unwrap();
        let plain = write_layer(&entries, LayerOptions::default(), out.path()).unwrap();
        let hashed = write_layer(
            &entries,
            LayerOptions {
                hash_contents: true,
                ..Default::default()
            },
            out.path(),
        )
        .unwrap();
        assert_eq!(
            (&plain.digest, &plain.diff_id),
            (&hashed.digest, &hashed.diff_id)
        );
        let mut cache = crate::cache::HashCache::default();
        let files: Vec<_> = hashed.contents.iter().map(|c| c.path.clone()).collect();
        assert_eq!(files.len(), 2, "the two regular files: {files:?}");
        for c in &hashed.contents {
            assert_eq!(c.blake3, cache.file_hash(&c.path).unwrap());
        }
    }

    #[test]
    fn the_same_files_give_the_same_layer_in_path_order() {
        let ctx = tempfile::tempdir().unwrap();
        context(ctx.path());
        let out = tempfile::tempdir().unwrap();
        let entries = entries_for(&ctx.path().join("rootfs"), ".").unwrap();
        let a = write_layer(&entries, LayerOptions::default(), out.path()).unwrap();
        // Another order and fresh times: the same bytes.
        let mut reversed = entries.clone();
        reversed.reverse();
        std::fs::write(ctx.path().join("rootfs/etc/app/config.yaml"), "a: 1\n").unwrap();
        let b = write_layer(&reversed, LayerOptions::default(), out.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.media_type, MEDIA_TYPE_ZSTD);
        assert_eq!(a.size, std::fs::metadata(&a.path).unwrap().len());
        let bytes = std::fs::read(&a.path).unwrap();
        let digest = ring::digest::digest(&SHA256, &bytes);
        assert_eq!(a.digest, format!("sha256:{}", hex::encode(digest.as_ref())));
        let listing = tar_listing(&a);
        let names: Vec<_> = listing
            .iter()
            .map(|(n, _, _, k)| (n.as_str(), *k))
            .collect();
        assert_eq!(
            names,
            [
                ("etc", 'd'),
                ("etc/app", 'd'),
                ("etc/app/config.yaml", 'f'),
                ("run.sh", 'f'),
                ("start", 'l')
            ]
        );
        // Executable bits survive; times are fixed.
        assert_eq!(listing[3].1 & 0o111, 0o111);
        assert!(listing.iter().all(|(_, _, t, _)| *t == listing[0].2));

        // The diff_id is the tar's digest.
        let mut tar = Vec::new();
        zstd::Decoder::new(File::open(&a.path).unwrap())
            .unwrap()
            .read_to_end(&mut tar)
            .unwrap();
        let d = ring::digest::digest(&SHA256, &tar);
        assert_eq!(a.diff_id, format!("sha256:{}", hex::encode(d.as_ref())));
    }

    #[test]
    fn gzip_and_a_destination_folder() {
        let ctx = tempfile::tempdir().unwrap();
        context(ctx.path());
        let out = tempfile::tempdir().unwrap();
        let entries = entries_for(&ctx.path().join("rootfs/etc"), "/opt/conf/").unwrap();
        let options = LayerOptions {
            compression: Compression::Gzip,
            ..Default::default()
        };
        let layer = write_layer(&entries, options, out.path()).unwrap();
        assert_eq!(layer.media_type, MEDIA_TYPE_GZIP);
        let names: Vec<_> = tar_listing(&layer).into_iter().map(|(n, ..)| n).collect();
        assert_eq!(
            names,
            ["opt/conf", "opt/conf/app", "opt/conf/app/config.yaml"]
        );
        let one = entries_for(&ctx.path().join("rootfs/run.sh"), "bin/run").unwrap();
        assert_eq!(
            one,
            [Entry {
                source: ctx.path().join("rootfs/run.sh"),
                dest: "bin/run".into()
            }]
        );
    }
}
