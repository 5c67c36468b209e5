//! Background verification of a served bundle: every blob is hashed once, on CPU time
//! requests leave and only while no blob is being read from the bundles; one whose
//! content does not match its digest stops being served from the bundle (clients verify
//! what they pull too, so nothing damaged is accepted before).

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashSet;

use super::index::BundleIndex;
use crate::oci::Digest;

const CHUNK: usize = 1 << 20;

/// How long verification pauses when it finds blobs being read.
const PAUSE: Duration = Duration::from_millis(100);

pub fn spawn(index: Arc<BundleIndex>, damaged: Arc<DashSet<Digest>>, reading: Arc<AtomicUsize>) {
    let started = std::thread::Builder::new()
        .name("bundle-verify".into())
        .spawn(move || {
            crate::background::make_this_thread_idle();
            let begun = std::time::Instant::now();
            // Manifests were verified when the bundle was opened.
            let mut blobs: Vec<_> = index
                .blobs
                .iter()
                .filter(|(d, _)| !index.manifests.contains_key(d))
                .collect();
            // In file order, so the disk reads sequentially.
            blobs.sort_by_key(|(_, at)| (at.file, at.offset));
            let mut buf = vec![0u8; CHUNK];
            for (digest, at) in blobs {
                let file = &index.files[at.file];
                let mut hasher = digest.algorithm().hasher();
                let mut done = 0;
                let read = loop {
                    if done == at.size {
                        break Ok(());
                    }
                    while reading.load(Ordering::SeqCst) > 0 {
                        std::thread::sleep(PAUSE);
                    }
                    let n = (at.size - done).min(CHUNK as u64) as usize;
                    if let Err(e) = file.1.read_exact_at(&mut buf[..n], at.offset + done) {
                        break Err(e);
                    }
                    hasher.update(&buf[..n]);
                    done += n as u64;
                };
                let ok = read.is_ok() && &hasher.finish() == digest;
                if !ok {
                    tracing::error!(bundle = %file.0.display(), %digest, "a blob of the bundle is damaged; it is no longer served");
                    damaged.insert(digest.clone());
                }
            }
            tracing::info!(
                blobs = index.blobs.len(),
                damaged = damaged.len(),
                seconds = begun.elapsed().as_secs_f32(),
                "bundles verified"
            );
        });
    if let Err(e) = started {
        tracing::error!(error = %e, "cannot start verifying the bundles");
    }
}
