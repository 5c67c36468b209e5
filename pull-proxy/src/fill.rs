//! Streaming cache fill.
//!
//! A blob missing locally is fetched from upstream once, by a task of its own, into an
//! upload of the store. Every request for it (the first and any that arrive meanwhile)
//! streams from that upload as it grows, so no client waits for the whole blob and
//! concurrent misses make one upstream fetch.
//!
//! The digest is computed by a second task that trails the download, reading back what
//! was written (from the page cache), so hashing never slows the transfer to clients.
//! The blob becomes visible in the store only after its digest is verified; a fetch that
//! fails leaves nothing visible and breaks off the responses still streaming. Clients
//! verify digests themselves, as they do when pulling from the upstream directly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use sealer_registry::oci::{Digest, RepoName};
use sealer_registry::services::Gate;
use sealer_registry::services::mirror::{MirrorRoute, MirroredBlob};
use sealer_registry::storage::{Pace, PartReader, Storage, UploadState, UploadWriter};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use crate::metrics::MirrorMetrics;
use sealer_client::UpstreamClient;
use sealer_client::download::{Download, DownloadError, Sink};

/// Size of each piece a follower reads back from the growing upload.
const READ_CHUNK: usize = 256 * 1024;
/// Size of each piece the trailing hasher reads back.
const HASH_CHUNK: u64 = 1024 * 1024;

#[derive(Debug, Clone)]
enum State {
    Starting,
    /// Upstream answered; `size` bytes are coming.
    Streaming {
        size: u64,
    },
    /// Verified and visible in the store.
    Complete,
    /// Upstream does not have it (or cannot be reached).
    Missing,
    Failed(String),
}

struct Fill {
    state: watch::Sender<State>,
    /// Set once the upload exists: where followers read, and how far it is written.
    data: OnceLock<(Arc<dyn PartReader>, watch::Receiver<u64>)>,
}

/// The registry's commit gate, once the services share it ([`Mirror::share_gate`]):
/// held shared while a fill or a fetched manifest becomes visible.
///
/// [`Mirror::share_gate`]: sealer_registry::services::mirror::Mirror::share_gate
#[derive(Default)]
pub struct Commits(OnceLock<Gate>);

impl Commits {
    pub fn share(&self, gate: Gate) {
        let _ = self.0.set(gate);
    }

    /// Holds the gate shared until the guard drops (nothing to hold before it is shared:
    /// a mirror used without the registry's services).
    pub async fn hold(&self) -> Option<tokio::sync::OwnedRwLockReadGuard<()>> {
        match self.0.get() {
            Some(gate) => Some(gate.clone().read_owned().await),
            None => None,
        }
    }
}

/// Fills in progress, one per (repository, blob).
pub struct Fills {
    storage: Arc<dyn Storage>,
    metrics: Arc<MirrorMetrics>,
    inflight: Mutex<HashMap<(RepoName, Digest), Arc<Fill>>>,
    /// A fill with no client left stops after this long, unless nearly done.
    abandon_after: Duration,
    commits: Arc<Commits>,
}

impl Fills {
    pub fn new(
        storage: Arc<dyn Storage>,
        metrics: Arc<MirrorMetrics>,
        abandon_after: Duration,
        commits: Arc<Commits>,
    ) -> Fills {
        Fills {
            storage,
            metrics,
            inflight: Mutex::default(),
            abandon_after,
            commits,
        }
    }

    /// Streams `digest` from upstream while caching it; `None` when upstream does not
    /// have it. `declared` is its size as a cached manifest gives it, when known: the
    /// upstream must send exactly that.
    pub async fn fetch(
        self: &Arc<Self>,
        client: Arc<UpstreamClient>,
        route: &MirrorRoute,
        digest: &Digest,
        declared: Option<u64>,
    ) -> Result<Option<MirroredBlob>, String> {
        let key = (route.local.clone(), digest.clone());
        let (fill, lead) = {
            let mut inflight = self.inflight.lock().expect("fills lock");
            match inflight.get(&key) {
                Some(f) => (f.clone(), false),
                None => {
                    let f = Arc::new(Fill {
                        state: watch::channel(State::Starting).0,
                        data: OnceLock::new(),
                    });
                    inflight.insert(key.clone(), f.clone());
                    (f, true)
                }
            }
        };
        if lead {
            // Detached: the fill completes even if the first client goes away.
            let fills = self.clone();
            let route = route.clone();
            let (fill, digest) = (fill.clone(), digest.clone());
            let running = self.metrics.fill_started();
            tokio::spawn(async move {
                let _running = running;
                let outcome = fills.run(&client, &route, &digest, declared, &fill).await;
                let state = match outcome {
                    Ok(true) => State::Complete,
                    Ok(false) => State::Missing,
                    Err(e) => {
                        client.record_error();
                        tracing::warn!(upstream = %client.host, repository = %route.remote, %digest, error = %e, "fetching a blob from upstream failed; nothing was cached");
                        State::Failed(e)
                    }
                };
                fill.state.send_replace(state);
                fills
                    .inflight
                    .lock()
                    .expect("fills lock")
                    .remove(&(route.local, digest));
            });
        }

        Self::serve(&fill).await
    }

    /// Joins a fill of `digest` already under way, whatever the upstream's health now:
    /// its bytes are arriving on this disk. `None` when there is none.
    pub async fn join(
        &self,
        route: &MirrorRoute,
        digest: &Digest,
    ) -> Result<Option<MirroredBlob>, String> {
        let key = (route.local.clone(), digest.clone());
        let fill = self.inflight.lock().expect("fills lock").get(&key).cloned();
        match fill {
            Some(fill) => Self::serve(&fill).await,
            None => Ok(None),
        }
    }

    /// The blob of `fill`, streamed as it is written.
    async fn serve(fill: &Arc<Fill>) -> Result<Option<MirroredBlob>, String> {
        let mut rx = fill.state.subscribe();
        let size = loop {
            let state = rx.borrow_and_update().clone();
            match state {
                State::Starting => {
                    if rx.changed().await.is_err() {
                        return Err("the fill ended without an answer".into());
                    }
                }
                State::Streaming { size } => break size,
                State::Complete => break fill_size(fill),
                State::Missing => return Ok(None),
                State::Failed(e) => return Err(e),
            }
        };
        let (reader, progress) = fill.data.get().cloned().ok_or("the fill has no data")?;
        Ok(Some(MirroredBlob {
            size,
            body: follow(reader, progress, rx, size).boxed(),
        }))
    }

    /// Downloads into a new upload, verifies, publishes and links. `Ok(false)` when
    /// upstream does not have the blob.
    async fn run(
        &self,
        client: &UpstreamClient,
        route: &MirrorRoute,
        digest: &Digest,
        declared: Option<u64>,
        fill: &Fill,
    ) -> Result<bool, String> {
        let id = Uuid::new_v4();
        let state = UploadState::new(&route.local, digest.algorithm());
        let storage = &self.storage;
        storage
            .create_upload(id, &state)
            .await
            .map_err(|e| e.to_string())?;
        let result = self
            .download(client, route, digest, declared, fill, id)
            .await;
        if !matches!(result, Ok(true)) {
            let _ = storage.delete_upload(id).await;
        }
        result
    }

    async fn download(
        &self,
        client: &UpstreamClient,
        route: &MirrorRoute,
        digest: &Digest,
        declared: Option<u64>,
        fill: &Fill,
        id: Uuid,
    ) -> Result<bool, String> {
        let storage = &self.storage;
        let reader = storage.upload_reader(id).await.map_err(|e| e.to_string())?;
        let writer = storage
            .upload_writer(id, 0, Pace::Memory)
            .await
            .map_err(|e| e.to_string())?;
        let _ = fill.data.set((reader.clone(), writer.progress()));
        let mut sink = FillSink {
            hashing: Some(trail_hash(reader, writer.progress(), digest.algorithm())),
            writer: Some(writer),
            fill,
            watch: Abandonment::new(self.abandon_after),
            written: 0,
        };
        let wanted = Download {
            remote: &route.remote,
            digest,
            declared,
            from: 0,
        };
        let size = match client.download(&wanted, &mut sink).await {
            Ok(size) => size,
            Err(DownloadError::Absent(_)) => return Ok(false),
            Err(e) => return Err(e.to_string()),
        };
        // Committed and linked under the gate, as a push is.
        let _commit = self.commits.hold().await;
        storage
            .commit_upload(id, digest, size)
            .await
            .map_err(|e| e.to_string())?;
        storage
            .link_blob(&route.local, digest)
            .await
            .map_err(|e| e.to_string())?;
        Ok(true)
    }
}

/// A fill's end of the download: the upload the followers read, the hasher trailing it,
/// and the clients' presence (a fill they all left stops).
struct FillSink<'a> {
    writer: Option<Box<dyn UploadWriter>>,
    hashing: Option<oneshot::Receiver<Result<Digest, String>>>,
    fill: &'a Fill,
    watch: Abandonment,
    written: u64,
}

#[async_trait::async_trait]
impl Sink for FillSink<'_> {
    fn sized(&mut self, total: u64) {
        self.fill
            .state
            .send_replace(State::Streaming { size: total });
    }

    async fn write(&mut self, chunk: Bytes) -> anyhow::Result<()> {
        self.written += chunk.len() as u64;
        let writer = self.writer.as_mut().expect("written before finish");
        Ok(writer.write(chunk).await?)
    }

    fn proceed(&mut self, written: u64, total: u64) -> anyhow::Result<()> {
        if self
            .watch
            .gave_up(self.fill.state.receiver_count(), written, total)
        {
            anyhow::bail!(
                "every client left and none came back within {:?}: stopped at {written} of \
                 {total} bytes",
                self.watch.grace
            );
        }
        Ok(())
    }

    async fn finish(&mut self) -> anyhow::Result<Digest> {
        let writer = self.writer.take().expect("finished once");
        let len = writer.finish().await?;
        let hashing = self.hashing.take().expect("finished once");
        let digest = hashing
            .await
            .map_err(|_| anyhow::anyhow!("the hashing thread stopped"))?
            .map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            len == self.written,
            "the upload holds {len} bytes where {} were written",
            self.written
        );
        Ok(digest)
    }
}

/// Whether a fill has been left by every client for longer than its grace period. A
/// fill in its last tenth goes on: the blob is nearly cached and will be asked again.
struct Abandonment {
    grace: Duration,
    alone_since: Option<Instant>,
}

impl Abandonment {
    fn new(grace: Duration) -> Abandonment {
        Abandonment {
            grace,
            alone_since: None,
        }
    }

    fn gave_up(&mut self, clients: usize, written: u64, total: u64) -> bool {
        if clients > 0 {
            self.alone_since = None;
            return false;
        }
        let since = *self.alone_since.get_or_insert_with(Instant::now);
        let near_end = total - written.min(total) <= total / 10;
        since.elapsed() > self.grace && !near_end
    }
}

/// Hashes an upload's data as it is written, reading it back behind the writer, until the
/// writer is done. Runs on a thread of its own in the idle scheduling class: the digest
/// only decides when the blob becomes visible, while the transfer to clients is what they
/// wait for, so on a busy host hashing uses the CPU time the transfers leave.
fn trail_hash(
    reader: Arc<dyn PartReader>,
    mut progress: watch::Receiver<u64>,
    algorithm: sealer_registry::oci::Algorithm,
) -> oneshot::Receiver<Result<Digest, String>> {
    let handle = tokio::runtime::Handle::current();
    let (tx, rx) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("fill-hash".into())
        .spawn(move || {
            sealer_registry::background::make_this_thread_idle();
            let result = handle.block_on(async move {
                let mut hasher = algorithm.hasher();
                let mut hashed = 0u64;
                loop {
                    let written = *progress.borrow_and_update();
                    while hashed < written {
                        let want = (written - hashed).min(HASH_CHUNK) as usize;
                        let chunk = reader
                            .read_at(hashed, want)
                            .await
                            .map_err(|e| e.to_string())?;
                        if chunk.is_empty() {
                            return Err("the upload data ended early".to_string());
                        }
                        hashed += chunk.len() as u64;
                        hasher.update(&chunk);
                    }
                    // The writer dropping its side means it is done; catch up with its last
                    // length first.
                    if progress.changed().await.is_err() && hashed >= *progress.borrow() {
                        return Ok(hasher.finish());
                    }
                }
            });
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start a hashing thread");
    }
    rx
}

fn fill_size(fill: &Fill) -> u64 {
    fill.data.get().map_or(0, |(_, p)| *p.borrow())
}

/// A client's view of a fill: reads what is written and waits for more; breaks off if
/// the fill fails.
fn follow(
    reader: Arc<dyn PartReader>,
    progress: watch::Receiver<u64>,
    state: watch::Receiver<State>,
    size: u64,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures::stream::unfold(
        (0u64, progress, state, reader),
        move |(offset, mut progress, mut state, reader)| async move {
            if offset >= size {
                return None;
            }
            match next_piece(offset, size, &mut progress, &mut state, reader.as_ref()).await {
                Ok(chunk) => {
                    let next = offset + chunk.len() as u64;
                    Some((Ok(chunk), (next, progress, state, reader)))
                }
                // Ending at `size` stops the stream after the error.
                Err(e) => Some((
                    Err(std::io::Error::other(e)),
                    (size, progress, state, reader),
                )),
            }
        },
    )
}

/// The bytes after `offset`, once written. The blob's last byte is held back until its
/// digest is verified: a client never receives the whole of content that fails the
/// check, so its pull fails (the response is cut one byte short) instead of it taking
/// bad bytes for good ones.
async fn next_piece(
    offset: u64,
    size: u64,
    progress: &mut watch::Receiver<u64>,
    state: &mut watch::Receiver<State>,
    reader: &dyn PartReader,
) -> Result<Bytes, String> {
    let available = loop {
        let verified = match &*state.borrow() {
            State::Failed(e) => return Err(e.clone()),
            State::Missing => return Err("upstream lost the blob".into()),
            State::Complete => true,
            State::Starting | State::Streaming { .. } => false,
        };
        let written = *progress.borrow_and_update();
        let servable = if verified {
            written
        } else {
            written.min(size.saturating_sub(1))
        };
        if servable > offset {
            break servable;
        }
        tokio::select! {
            changed = progress.changed() => {
                if changed.is_err() {
                    // The writer is done: what is left waits for the verdict.
                    wait_for_verdict(state).await?;
                    if *progress.borrow() <= offset {
                        return Err("the upstream download stopped".into());
                    }
                }
            }
            changed = state.changed() => {
                if changed.is_err() && !verified {
                    wait_for_verdict(state).await?;
                }
            }
        }
    };
    let want = (available - offset).min(READ_CHUNK as u64) as usize;
    let chunk = reader
        .read_at(offset, want)
        .await
        .map_err(|e| e.to_string())?;
    if chunk.is_empty() {
        return Err("the cached data ended early".into());
    }
    Ok(chunk)
}

/// Waits until the fill is verified (`Ok`) or has failed.
async fn wait_for_verdict(state: &mut watch::Receiver<State>) -> Result<(), String> {
    loop {
        match &*state.borrow_and_update() {
            State::Complete => return Ok(()),
            State::Failed(e) => return Err(e.clone()),
            State::Missing => return Err("upstream lost the blob".into()),
            State::Starting | State::Streaming { .. } => {}
        }
        if state.changed().await.is_err() {
            return Err("the upstream download stopped".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_is_given_up_only_when_alone_past_the_grace_and_not_nearly_done() {
        let mut w = Abandonment::new(Duration::from_millis(20));
        assert!(!w.gave_up(0, 10, 100));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!w.gave_up(0, 95, 100), "nearly done");
        assert!(w.gave_up(0, 10, 100));
        assert!(!w.gave_up(1, 10, 100), "a client came back");
        assert!(!w.gave_up(0, 10, 100), "its grace starts again");
    }
    use sealer_registry::oci::Algorithm;
    use sealer_registry::storage::fs::FsStorage;

    #[tokio::test]
    async fn a_fill_under_way_is_joined_without_asking_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(FsStorage::open(dir.path()).unwrap());
        let fills = Fills::new(
            storage.clone(),
            Arc::default(),
            Duration::from_secs(30),
            Arc::default(),
        );
        let route = MirrorRoute {
            upstream: "docker.io".into(),
            remote: "library/app".into(),
            local: RepoName::parse("docker.io/library/app").unwrap(),
        };
        let data = Bytes::from(vec![7u8; 300_000]);
        let digest = Digest::of(Algorithm::Sha256, &data);
        assert!(fills.join(&route, &digest).await.unwrap().is_none());

        // A fill whose bytes are all here but which is not yet published (still being
        // verified, as under load): the upstream may be gone by now.
        let id = Uuid::new_v4();
        let state = UploadState::new(&route.local, Algorithm::Sha256);
        storage.create_upload(id, &state).await.unwrap();
        let mut writer = storage.upload_writer(id, 0, Pace::Memory).await.unwrap();
        let reader = storage.upload_reader(id).await.unwrap();
        let fill = Arc::new(Fill {
            state: watch::channel(State::Streaming {
                size: data.len() as u64,
            })
            .0,
            data: OnceLock::new(),
        });
        let _ = fill.data.set((reader, writer.progress()));
        writer.write(data.clone()).await.unwrap();
        fills
            .inflight
            .lock()
            .unwrap()
            .insert((route.local.clone(), digest.clone()), fill.clone());

        let blob = fills.join(&route, &digest).await.unwrap().expect("joined");
        assert_eq!(blob.size, data.len() as u64);
        fill.state.send_replace(State::Complete);
        let got: Vec<u8> = blob.body.map(|c| c.unwrap().to_vec()).concat().await;
        assert_eq!(got, data.as_ref());
    }
}
