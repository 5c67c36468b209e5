//! Blob upload sessions: monolithic, chunked and streamed pushes, resumable across
//! restarts.
//!
//! Bytes are hashed as they arrive, so a blob is never re-read to verify it; only a
//! session picked up after a restart hashes what it already holds, once. A chunk that
//! fails part-way (client gone, disk full) is rolled back, leaving the session exactly
//! as it was before.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use dashmap::DashMap;
use futures::{Stream, StreamExt};
use serde_json::json;
use tokio::sync::{Mutex, OwnedMutexGuard};
use uuid::Uuid;

use super::Gate;
use super::error::{ErrorCode, Result, ServiceError};
use super::hashing::BackgroundHasher;
use super::quota::Quotas;
use crate::oci::{Algorithm, Digest, Hasher, RepoName};
use crate::storage::{Pace, Storage, UploadState};

/// Bodies up to this size are hashed inline and written in one step.
const SMALL_CHUNK: u64 = 256 * 1024;

/// An inclusive byte range from a `Content-Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    pub start: u64,
    pub end: u64,
}

/// Where a chunk was rejected because it does not continue the upload.
#[derive(Debug)]
pub struct OutOfOrder {
    pub offset: u64,
}

struct Session {
    state: UploadState,
    hasher: Hasher,
}

type Slot = Arc<Mutex<Option<Session>>>;

pub struct UploadService {
    storage: Arc<dyn Storage>,
    /// Sessions in use, each behind a lock so concurrent requests on one upload queue up.
    /// Storage is the source of truth; this only caches what was loaded.
    sessions: DashMap<Uuid, Slot>,
    open: AtomicI64,
    max_blob: Option<u64>,
    gate: Gate,
    quotas: Arc<Quotas>,
}

/// A body's first non-empty piece; `None` for an empty body, which is an error only for
/// a chunk that names its range.
async fn first_piece<S>(body: &mut S, range: Option<ChunkRange>) -> Result<Option<Bytes>>
where
    S: Stream<Item = io::Result<Bytes>> + Unpin,
{
    loop {
        match body.next().await {
            Some(Ok(c)) if c.is_empty() => continue,
            Some(Ok(c)) => return Ok(Some(c)),
            Some(Err(e)) => return Err(body_error(e)),
            None if range.is_some() => {
                return Err(ServiceError::new(
                    ErrorCode::SizeInvalid,
                    "a chunk with a Content-Range needs a body",
                ));
            }
            None => return Ok(None),
        }
    }
}

/// Errors reading the request body are the client's, not the server's.
fn body_error(e: io::Error) -> ServiceError {
    if e.kind() == io::ErrorKind::QuotaExceeded {
        return ServiceError::new(ErrorCode::Denied, e.to_string());
    }
    if e.kind() == io::ErrorKind::FileTooLarge {
        return ServiceError::too_large(ErrorCode::SizeInvalid, e.to_string());
    }
    ServiceError::new(
        ErrorCode::BlobUploadInvalid,
        format!("failed to receive the upload body: {e}"),
    )
}

impl UploadService {
    pub fn new(
        storage: Arc<dyn Storage>,
        options: &super::Options,
        gate: Gate,
        quotas: Arc<Quotas>,
    ) -> Self {
        UploadService {
            storage,
            sessions: DashMap::new(),
            open: AtomicI64::new(0),
            max_blob: options.max_upload_bytes,
            gate,
            quotas,
        }
    }

    /// Counts the sessions already in storage (after a restart).
    pub async fn recover(&self) -> Result<usize> {
        let ids = self.storage.list_uploads().await?;
        for (id, _) in &ids {
            let state = self.storage.load_upload(*id).await?;
            if let Some(repo) = state.and_then(|s| Some((RepoName::parse(&s.repo).ok()?, s.offset)))
            {
                self.quotas.recovered(*id, &repo.0, repo.1);
            }
        }
        self.open.store(ids.len() as i64, Ordering::Relaxed);
        Ok(ids.len())
    }

    /// The chunk size the store keeps uploads in best, to advertise to clients.
    pub fn chunk_min_length(&self) -> Option<u64> {
        self.storage.chunk_min_length()
    }

    /// Upload sessions started and not yet finished, cancelled or expired.
    pub fn open_sessions(&self) -> i64 {
        self.open.load(Ordering::Relaxed).max(0)
    }

    /// Opens a session for `user` (`None`: anonymous or without sign-in), within the
    /// bounds on open sessions.
    pub async fn start(
        &self,
        repo: &RepoName,
        algorithm: Algorithm,
        user: Option<&str>,
    ) -> Result<Uuid> {
        let id = Uuid::new_v4();
        let state = UploadState::new(repo, algorithm);
        self.quotas.open(id, repo, user)?;
        if let Err(e) = self.storage.create_upload(id, &state).await {
            self.quotas.closed(id);
            return Err(e.into());
        }
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(id)
    }

    /// Bytes received so far.
    pub async fn offset(&self, repo: &RepoName, id: Uuid) -> Result<u64> {
        let guard = self.lock(repo, id).await?;
        Ok(session(&guard).state.offset)
    }

    /// Appends a chunk. With a `range`, the chunk must start where the upload ends; a chunk
    /// that does not is refused with the current offset and the upload stays usable.
    pub async fn append<S>(
        &self,
        repo: &RepoName,
        id: Uuid,
        range: Option<ChunkRange>,
        body: S,
    ) -> Result<u64, AppendError>
    where
        S: Stream<Item = io::Result<Bytes>> + Send + Unpin,
    {
        let mut guard = self.lock(repo, id).await?;
        let s = guard.as_mut().expect("locked session is loaded");
        self.write_chunk(id, s, range, body, true).await?;
        Ok(s.state.offset)
    }

    /// Completes an upload with an optional last chunk: verifies `digest` against what
    /// was received, publishes the blob and links it into `repo`.
    pub async fn finish<S>(
        &self,
        repo: &RepoName,
        id: Uuid,
        digest: &Digest,
        range: Option<ChunkRange>,
        body: S,
    ) -> Result<(), AppendError>
    where
        S: Stream<Item = io::Result<Bytes>> + Send + Unpin,
    {
        let mut guard = self.lock(repo, id).await?;
        let s = guard.as_mut().expect("locked session is loaded");
        let before = (s.state.clone(), s.hasher.clone());
        // Content the repository already links costs no quota, so its bytes are not
        // held to it on the way in either.
        let counted = self.storage.repo_blob_size(repo, digest).await?.is_none();
        self.write_chunk(id, s, range, body, counted).await?;

        let received = if digest.algorithm() == s.state.algorithm {
            s.hasher.clone().finish()
        } else {
            self.hash_upload(id, digest.algorithm()).await?.finish()
        };
        if &received != digest {
            // Undo this request's chunk so the client can retry it.
            self.rollback(id, s, before).await?;
            return Err(ServiceError::new(
                ErrorCode::DigestInvalid,
                "provided digest did not match uploaded content",
            )
            .with_detail(
                json!({ "expected": digest.to_string(), "received": received.to_string() }),
            )
            .into());
        }
        let _commit = self.gate.read().await;
        let _repo = self.quotas.lock(repo).await;
        // Over quota, the session stays as it is: the client may delete it.
        if self.storage.repo_blob_size(repo, digest).await?.is_none() {
            self.quotas.check(repo, s.state.offset, Some(id)).await?;
        }
        self.storage
            .commit_upload(id, digest, s.state.offset)
            .await?;
        self.storage.link_blob(repo, digest).await?;
        self.forget(id, &mut guard);
        Ok(())
    }

    pub async fn cancel(&self, repo: &RepoName, id: Uuid) -> Result<()> {
        let mut guard = self.lock(repo, id).await?;
        self.storage.delete_upload(id).await?;
        self.forget(id, &mut guard);
        Ok(())
    }

    /// Removes sessions untouched for longer than `max_age`; returns how many.
    pub async fn expire(&self, max_age: Duration) -> Result<usize> {
        let now = SystemTime::now();
        let mut removed = 0;
        for (id, touched) in self.storage.list_uploads().await? {
            if now.duration_since(touched).unwrap_or_default() < max_age {
                continue;
            }
            let slot = self.slot(id);
            // A session busy with a request is not abandoned.
            let Ok(mut guard) = slot.try_lock_owned() else {
                continue;
            };
            if self.storage.delete_upload(id).await? {
                removed += 1;
                self.forget(id, &mut guard);
            } else {
                // Already gone from storage: just stop caching it.
                *guard = None;
                self.sessions.remove(&id);
                self.quotas.closed(id);
            }
        }
        Ok(removed)
    }

    /// Drops a session that storage no longer holds. Whoever waits on its lock next finds
    /// it empty and reports it unknown.
    fn forget(&self, id: Uuid, guard: &mut OwnedMutexGuard<Option<Session>>) {
        **guard = None;
        self.sessions.remove(&id);
        self.quotas.closed(id);
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    fn slot(&self, id: Uuid) -> Slot {
        self.sessions.entry(id).or_default().clone()
    }

    async fn lock(&self, repo: &RepoName, id: Uuid) -> Result<OwnedMutexGuard<Option<Session>>> {
        let mut guard = self.slot(id).lock_owned().await;
        // On a shared store the previous chunk may have gone to another replica: storage
        // knows, so the session is taken up from it on every request.
        if guard.is_none() || self.storage.shared_sessions() {
            let Some(session) = self.take_up(id).await? else {
                self.sessions.remove(&id);
                return Err(ServiceError::upload_unknown());
            };
            *guard = Some(session);
        }
        // A session belongs to the repository it was started in.
        if session(&guard).state.repo != repo.as_str() {
            return Err(ServiceError::upload_unknown());
        }
        Ok(guard)
    }

    /// A session as storage holds it, with its hasher: resumed from the saved hash state
    /// on a shared store; elsewhere (picked up after a restart) any unacknowledged partial
    /// chunk is dropped and what the session holds is hashed once. `None` when the session
    /// is gone, or damaged (then it is removed).
    async fn take_up(&self, id: Uuid) -> Result<Option<Session>> {
        let Some(state) = self.storage.load_upload(id).await? else {
            return Ok(None);
        };
        let hasher = if self.storage.shared_sessions() {
            resume_hasher(&state).ok_or("it has no hash state".to_string())
        } else {
            // Fails when its data is shorter than what was acknowledged.
            match self.storage.truncate_upload(id, state.offset).await {
                Ok(()) => Ok(self.hash_upload(id, state.algorithm).await?),
                Err(e) => Err(e.to_string()),
            }
        };
        match hasher {
            Ok(hasher) => Ok(Some(Session { state, hasher })),
            Err(why) => {
                tracing::warn!(upload = %id, error = %why, "dropping a damaged upload session");
                self.storage.delete_upload(id).await?;
                Ok(None)
            }
        }
    }

    async fn write_chunk<S>(
        &self,
        id: Uuid,
        s: &mut Session,
        range: Option<ChunkRange>,
        body: S,
        counted: bool,
    ) -> Result<(), AppendError>
    where
        S: Stream<Item = io::Result<Bytes>> + Send + Unpin,
    {
        let quota_left = if counted {
            let repo = RepoName::parse(&s.state.repo).map_err(ServiceError::from)?;
            self.quotas.room_for_upload(&repo).await?
        } else {
            None
        };
        let mut body = Capped {
            inner: body,
            left: self.max_blob.map(|m| m.saturating_sub(s.state.offset)),
            max: self.max_blob.unwrap_or(u64::MAX),
            quota_left,
        };
        if let Some(r) = range {
            if r.start != s.state.offset || r.end < r.start {
                return Err(AppendError::OutOfOrder(OutOfOrder {
                    offset: s.state.offset,
                }));
            }
        }
        // An empty body changes nothing.
        let Some(first) = first_piece(&mut body, range).await? else {
            return Ok(());
        };

        let before = (s.state.clone(), s.hasher.clone());
        let mut hasher = s.hasher.clone();
        let mut received: u64 = 0;
        let result = self
            .receive(
                id,
                s.state.offset,
                first,
                &mut body,
                &mut hasher,
                &mut received,
            )
            .await;

        let fail = match result {
            Ok(len) if len != s.state.offset + received => Some(ServiceError::internal(format!(
                "upload {id}: wrote {received} bytes but the data is {len} bytes long"
            ))),
            Ok(_) => match range {
                Some(r) if r.end - r.start + 1 != received => Some(
                    ServiceError::new(
                        ErrorCode::SizeInvalid,
                        "the chunk's length does not match its Content-Range",
                    )
                    .with_detail(json!({ "contentRange": format!("{}-{}", r.start, r.end), "received": received })),
                ),
                _ => None,
            },
            Err(e) => Some(e),
        };
        if let Some(e) = fail {
            self.rollback(id, s, before).await?;
            return Err(e.into());
        }
        s.state.offset += received;
        s.state.hash_state = hasher.export().map(|h| BASE64.encode(h));
        s.hasher = hasher;
        self.storage.save_upload(id, &s.state).await?;
        self.quotas.grew(id, s.state.offset);
        Ok(())
    }

    /// Hashes and stores a chunk's body, which begins with `first`. A small body is
    /// handled in one step; a larger one is received, hashed and written in parallel,
    /// since hashing is the costliest step and must not hold up the socket or the disk.
    async fn receive<S>(
        &self,
        id: Uuid,
        offset: u64,
        first: Bytes,
        body: &mut S,
        hasher: &mut Hasher,
        received: &mut u64,
    ) -> Result<u64>
    where
        S: Stream<Item = io::Result<Bytes>> + Send + Unpin,
    {
        *received = first.len() as u64;
        let mut head = vec![first];
        let mut ended = false;
        while *received < SMALL_CHUNK {
            match body.next().await {
                None => {
                    ended = true;
                    break;
                }
                Some(Ok(c)) => {
                    *received += c.len() as u64;
                    head.push(c);
                }
                Some(Err(e)) => return Err(body_error(e)),
            }
        }
        if ended {
            let data = if head.len() == 1 {
                head.swap_remove(0)
            } else {
                head.concat().into()
            };
            hasher.update(&data);
            return Ok(self.storage.append_upload(id, offset, data).await?);
        }

        let hashing = BackgroundHasher::start(hasher.clone());
        let result = async {
            let mut writer = self.storage.upload_writer(id, offset, Pace::Disk).await?;
            for chunk in head {
                hashing.feed(chunk.clone()).await;
                writer.write(chunk).await?;
            }
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(body_error)?;
                *received += chunk.len() as u64;
                hashing.feed(chunk.clone()).await;
                writer.write(chunk).await?;
            }
            Ok(writer.finish().await?)
        }
        .await;
        *hasher = hashing.finish().await?;
        result
    }

    async fn rollback(
        &self,
        id: Uuid,
        s: &mut Session,
        before: (UploadState, Hasher),
    ) -> Result<()> {
        self.storage.truncate_upload(id, before.0.offset).await?;
        s.state = before.0;
        s.hasher = before.1;
        self.storage.save_upload(id, &s.state).await?;
        Ok(())
    }

    async fn hash_upload(&self, id: Uuid, algorithm: Algorithm) -> Result<Hasher> {
        let mut data = self.storage.read_upload(id).await?;
        let mut h = algorithm.hasher();
        while let Some(chunk) = data.next().await {
            h.update(&chunk.map_err(ServiceError::internal)?);
        }
        Ok(h)
    }
}

/// The hasher of a shared session, as the state saved it (a fresh one before any byte).
fn resume_hasher(state: &UploadState) -> Option<Hasher> {
    match &state.hash_state {
        None if state.offset == 0 => Some(state.algorithm.resumable_hasher()),
        None => None,
        Some(saved) => state.algorithm.resume(&BASE64.decode(saved).ok()?),
    }
}

fn session(guard: &OwnedMutexGuard<Option<Session>>) -> &Session {
    guard.as_ref().expect("locked session is loaded")
}

/// A body that fails once it would take the blob past the maximum upload size
/// (`FileTooLarge`) or its repository past its quota (`QuotaExceeded`); the chunk is
/// then rolled back like any failed chunk.
struct Capped<S> {
    inner: S,
    /// Bytes the blob may still grow by; `None` is unbounded.
    left: Option<u64>,
    max: u64,
    /// Bytes the repository may still take; `None` without a quota.
    quota_left: Option<u64>,
}

impl<S: Stream<Item = io::Result<Bytes>> + Unpin> Stream for Capped<S> {
    type Item = io::Result<Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let item = futures::ready!(std::pin::Pin::new(&mut self.inner).poll_next(cx));
        if let Some(Ok(chunk)) = &item {
            let n = chunk.len() as u64;
            if self.left.is_some_and(|left| n > left) {
                self.left = Some(0);
                let max = self.max;
                return std::task::Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::FileTooLarge,
                    format!("the blob would exceed the maximum upload size of {max} bytes"),
                ))));
            }
            if self.quota_left.is_some_and(|left| n > left) {
                self.quota_left = Some(0);
                return std::task::Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::QuotaExceeded,
                    "the upload would take the repository over its quota \
                     (open uploads count too)",
                ))));
            }
            self.left = self.left.map(|l| l - n);
            self.quota_left = self.quota_left.map(|l| l - n);
        }
        std::task::Poll::Ready(item)
    }
}

/// Why a chunk was not accepted.
#[derive(Debug)]
pub enum AppendError {
    OutOfOrder(OutOfOrder),
    Other(ServiceError),
}

impl From<ServiceError> for AppendError {
    fn from(e: ServiceError) -> Self {
        AppendError::Other(e)
    }
}

impl From<crate::storage::StorageError> for AppendError {
    fn from(e: crate::storage::StorageError) -> Self {
        AppendError::Other(e.into())
    }
}
