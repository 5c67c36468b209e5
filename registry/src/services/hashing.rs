//! Hashing beside the data path: uploads and cache fills feed chunks to a thread of
//! their own, so hashing (the costliest step) does not hold up the socket or the disk.

use bytes::Bytes;
use tokio::sync::mpsc;

use super::error::{Result, ServiceError};
use crate::oci::Hasher;

/// Hashes the chunks fed to it on a blocking thread.
pub struct BackgroundHasher {
    tx: mpsc::Sender<Bytes>,
    task: tokio::task::JoinHandle<Hasher>,
}

impl BackgroundHasher {
    pub fn start(mut hasher: Hasher) -> Self {
        let (tx, mut rx) = mpsc::channel::<Bytes>(8);
        let task = tokio::task::spawn_blocking(move || {
            while let Some(chunk) = rx.blocking_recv() {
                hasher.update(&chunk);
            }
            hasher
        });
        BackgroundHasher { tx, task }
    }

    pub async fn feed(&self, chunk: Bytes) {
        // The receiver only stops when the task ends, which needs `tx` dropped first.
        let _ = self.tx.send(chunk).await;
    }

    pub async fn finish(self) -> Result<Hasher> {
        drop(self.tx);
        self.task.await.map_err(ServiceError::internal)
    }
}
