//! Background verification of a served bundle: every blob is hashed once, on CPU time
//! requests leave, yielding (up to a second per chunk) while blobs are being read from
//! the bundles; one whose
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
/// The longest it yields to readers before each chunk: a client that opens a download
/// and stops reading must not hold verification off for ever.
const MAX_YIELD: Duration = Duration::from_secs(1);

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
                    let yielding = std::time::Instant::now();
                    while reading.load(Ordering::SeqCst) > 0 && yielding.elapsed() < MAX_YIELD {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_that_never_finishes_does_not_hold_verification_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.tar");
        let claimed = Digest::sha256_of(b"what the name promises");
        let mut tar = tar::Builder::new(std::fs::File::create(&path).unwrap());
        for (name, data) in [
            (
                "oci-layout".to_string(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            (
                "index.json".to_string(),
                br#"{"schemaVersion":2,"manifests":[]}"#.to_vec(),
            ),
            (
                format!("blobs/sha256/{}", claimed.hex()),
                vec![7u8; 3 << 20],
            ),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, name, data.as_slice()).unwrap();
        }
        tar.finish().unwrap();
        drop(tar);
        let index = Arc::new(BundleIndex::open(&[path]).unwrap());
        let damaged = Arc::new(DashSet::new());
        // A download that was opened and never read again.
        let reading = Arc::new(AtomicUsize::new(1));
        spawn(index, damaged.clone(), reading);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !damaged.contains(&claimed) {
            assert!(
                std::time::Instant::now() < deadline,
                "verification is starved"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
