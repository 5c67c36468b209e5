//! Streaming file reads and appends that keep memory flat whatever the size.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::durable;
use crate::storage::{ByteRange, ByteStream, Pace, PartReader, Result, StorageError, UploadWriter};

/// Size of each read from a blob file. Large enough to keep syscalls rare, small enough
/// that many concurrent pulls hold little memory.
const READ_CHUNK: usize = 256 * 1024;

/// Opens `path` and streams `range` of it (everything when `None`); `None` when the file
/// does not exist. Each chunk is read by a blocking task, so the stream holds one chunk.
pub fn read_file(path: &Path, range: Option<ByteRange>) -> Result<Option<ByteStream>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io(format!("opening {}", path.display()), e)),
    };
    let (start, len) = match range {
        Some(r) => (r.offset, r.len),
        None => {
            let len = file
                .metadata()
                .map_err(|e| StorageError::io(format!("reading {}", path.display()), e))?
                .len();
            (0, len)
        }
    };
    Ok(Some(stream_range(Arc::new(file), start, start + len)))
}

/// Streams bytes `start..end` of an open file, one chunk read by a blocking task at a
/// time (a blob file, or a blob inside a bundle file).
pub fn stream_range(file: Arc<File>, start: u64, end: u64) -> ByteStream {
    let stream = futures::stream::unfold(start, move |pos| {
        let file = file.clone();
        async move {
            if pos >= end {
                return None;
            }
            let want = (end - pos).min(READ_CHUNK as u64) as usize;
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = BytesMut::zeroed(want);
                let mut filled = 0;
                while filled < want {
                    let n = file.read_at(&mut buf[filled..], pos + filled as u64)?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "blob is shorter than its recorded size",
                        ));
                    }
                    filled += n;
                }
                Ok(buf.freeze())
            })
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)));
            match read {
                Ok(chunk) => Some((Ok(chunk), pos + want as u64)),
                // Ending at `end` stops the stream after reporting the error.
                Err(e) => Some((Err(e), end)),
            }
        }
    });
    stream.boxed()
}

/// Appends `data` to the file at `path`, which must hold `offset` bytes; returns the new
/// length. One blocking call for chunks small enough to arrive in one piece.
pub fn append(path: &Path, offset: u64, data: &[u8]) -> Result<u64> {
    let ctx = |e| StorageError::io(format!("appending to {}", path.display()), e);
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(ctx)?;
    let len = file.metadata().map_err(ctx)?.len();
    if len != offset {
        return Err(StorageError::Corrupt(format!(
            "{} holds {len} bytes but the upload recorded {offset}",
            path.display()
        )));
    }
    file.write_all(data).map_err(ctx)?;
    Ok(offset + data.len() as u64)
}

/// Reads an upload's data file through a descriptor opened once, so it still reads the
/// same bytes after the file is renamed into the blob store.
pub struct FilePartReader {
    file: Arc<File>,
}

impl FilePartReader {
    pub fn open(path: &Path) -> Result<FilePartReader> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| StorageError::io(format!("opening {}", path.display()), e))?;
        Ok(FilePartReader::of(Arc::new(file)))
    }

    /// A reader of a file already open (an object store's local spool).
    pub fn of(file: Arc<File>) -> FilePartReader {
        FilePartReader { file }
    }
}

#[async_trait]
impl PartReader for FilePartReader {
    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            let mut buf = BytesMut::zeroed(len);
            let mut filled = 0;
            while filled < len {
                let n = file.read_at(&mut buf[filled..], offset + filled as u64)?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            buf.truncate(filled);
            Ok::<_, io::Error>(buf.freeze())
        })
        .await
        .map_err(|e| StorageError::io("reading upload data", io::Error::other(e)))?
        .map_err(|e| StorageError::io("reading upload data", e))
    }
}

/// Writes start to reach the disk every this many bytes (see [`durable::writeback`]).
const WRITEBACK_WINDOW: u64 = 8 * 1024 * 1024;

/// Appends to an upload's data file on a blocking thread, fed through a bounded channel
/// so receiving from the network and writing to disk overlap.
pub struct FileAppender {
    tx: mpsc::Sender<Bytes>,
    task: JoinHandle<io::Result<u64>>,
    progress: tokio::sync::watch::Receiver<u64>,
}

impl FileAppender {
    pub fn open(path: &Path, offset: u64, pace: Pace) -> Result<FileAppender> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| StorageError::io(format!("opening {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| StorageError::io(format!("reading {}", path.display()), e))?
            .len();
        if len != offset {
            return Err(StorageError::Corrupt(format!(
                "{} holds {len} bytes but the upload recorded {offset}",
                path.display()
            )));
        }
        let (tx, mut rx) = mpsc::channel::<Bytes>(8);
        let (progress_tx, progress) = tokio::sync::watch::channel(offset);
        let task = tokio::task::spawn_blocking(move || {
            let mut file = file;
            let mut pos = offset;
            let mut window_start = offset;
            let mut previous = None;
            while let Some(chunk) = rx.blocking_recv() {
                file.write_all(&chunk)?;
                pos += chunk.len() as u64;
                progress_tx.send_replace(pos);
                if pace == Pace::Disk && pos - window_start >= WRITEBACK_WINDOW {
                    let window = (window_start, pos - window_start);
                    durable::writeback(&file, window.0, window.1, previous);
                    previous = Some(window);
                    window_start = pos;
                }
            }
            Ok(pos)
        });
        Ok(FileAppender { tx, task, progress })
    }
}

#[async_trait]
impl UploadWriter for FileAppender {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        if self.tx.send(data).await.is_ok() {
            return Ok(());
        }
        // The writer thread stopped early: report why.
        let cause = match (&mut self.task).await {
            Ok(Err(e)) => e,
            Ok(Ok(_)) => io::Error::other("upload writer stopped"),
            Err(e) => io::Error::other(e),
        };
        Err(StorageError::io("writing upload data", cause))
    }

    fn progress(&self) -> tokio::sync::watch::Receiver<u64> {
        self.progress.clone()
    }

    async fn finish(self: Box<Self>) -> Result<u64> {
        let FileAppender { tx, task, .. } = *self;
        drop(tx);
        task.await
            .map_err(|e| StorageError::io("writing upload data", io::Error::other(e)))?
            .map_err(|e| StorageError::io("writing upload data", e))
    }
}
