//! Upload sessions on object storage, continued by whichever replica a chunk reaches.
//!
//! An upload's data is a multipart upload (to `uploads/<id>/data`) plus a tail of fewer
//! bytes than a part, which is kept as an object until it fills one. After each
//! accepted chunk, `uploads/<id>/at/<offset>` records the parts so far and holds the
//! tail; the session's state (`state.json`, with the hash state) names the offset, so a
//! chunk that fails half-way leaves the last recorded offset intact: its parts are
//! written again, under the same numbers, by the retry. Completing the upload sends
//! the tail as the last part, completes the multipart upload and copies it to the
//! blob's key, after the services verified the digest. A blob that fits in the tail is
//! written with one PUT.
//!
//! Mirror fills also write a local spool, so readers on this replica can stream a blob
//! while it is being fetched ([`Spools`]).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use object_store::aws::AmazonS3;
use object_store::multipart::{MultipartStore, PartId};
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::keys::Keys;
use super::{S3Storage, os_err};
use crate::oci::Digest;
use crate::storage::fs::streams::FilePartReader;
use crate::storage::{ByteStream, PartReader, Result, Storage, StorageError, UploadWriter};

/// Parts sent at once by one writer.
const PARTS_IN_FLIGHT: usize = 4;

/// Records up to this size are kept in memory by the replica that wrote them.
const REMEMBERED: usize = 1024 * 1024;

/// The last data record each upload's writer on this replica wrote, by its ETag: reading
/// it back costs a HEAD rather than a GET when the next request of the upload reaches
/// the same replica (which it usually does), and a record another replica wrote since
/// has another ETag, so it is never taken from here.
#[derive(Default)]
pub(super) struct Recent(dashmap::DashMap<Uuid, (u64, String, Arc<Data>)>);

impl Recent {
    fn remember(&self, id: Uuid, offset: u64, e_tag: Option<String>, data: Arc<Data>) {
        match e_tag {
            Some(tag) if data.tail.len() <= REMEMBERED => {
                self.0.insert(id, (offset, tag, data));
            }
            _ => {
                self.0.remove(&id);
            }
        }
    }

    fn get(&self, id: Uuid, offset: u64) -> Option<(String, Arc<Data>)> {
        let entry = self.0.get(&id)?;
        (entry.0 == offset).then(|| (entry.1.clone(), entry.2.clone()))
    }

    pub(super) fn forget(&self, id: Uuid) {
        self.0.remove(&id);
    }
}

/// What an upload's data is at one offset.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Recorded {
    /// Each part's id as the store returned it, and its length.
    parts: Vec<(String, u64)>,
}

pub(super) struct Data {
    recorded: Recorded,
    tail: Bytes,
}

impl Data {
    fn len(&self) -> u64 {
        self.recorded.parts.iter().map(|p| p.1).sum::<u64>() + self.tail.len() as u64
    }

    /// The `at` object: the record as one JSON line, then the tail.
    fn encode(&self) -> Bytes {
        let mut out = serde_json::to_vec(&self.recorded).expect("a part record serializes");
        out.push(b'\n');
        out.extend_from_slice(&self.tail);
        out.into()
    }

    fn decode(id: Uuid, data: Bytes) -> Result<Data> {
        let corrupt = || StorageError::Corrupt(format!("upload {id}'s data record"));
        let at = data.iter().position(|b| *b == b'\n').ok_or_else(corrupt)?;
        let recorded = serde_json::from_slice(&data[..at]).map_err(|_| corrupt())?;
        Ok(Data {
            recorded,
            tail: data.slice(at + 1..),
        })
    }
}

impl S3Storage {
    /// The upload's data when it was `offset` bytes long.
    async fn data_at(&self, id: Uuid, offset: u64) -> Result<Data> {
        if offset == 0 {
            return Ok(Data {
                recorded: Recorded::default(),
                tail: Bytes::new(),
            });
        }
        let key = self.keys.upload_at(id, offset);
        if let Some((tag, data)) = self.recent.get(id, offset) {
            let now = self.head(&key).await?;
            if now.is_some_and(|m| m.e_tag.as_deref() == Some(tag.as_str())) {
                return Ok(Data {
                    recorded: data.recorded.clone(),
                    tail: data.tail.clone(),
                });
            }
        }
        let Some(raw) = self.get(&key).await? else {
            return Err(StorageError::Corrupt(format!(
                "upload {id} has no record of its data at {offset} bytes"
            )));
        };
        let data = Data::decode(id, raw)?;
        if data.len() != offset {
            return Err(StorageError::Corrupt(format!(
                "upload {id}'s record at {offset} bytes describes {} bytes",
                data.len()
            )));
        }
        Ok(data)
    }

    pub(super) async fn check_upload_at(&self, id: Uuid, offset: u64) -> Result<()> {
        self.data_at(id, offset).await.map(|_| ())
    }

    /// The multipart upload of `id`, if one was started.
    async fn multipart_of(&self, id: Uuid) -> Result<Option<String>> {
        Ok(self
            .get(&self.keys.upload_multipart(id))
            .await?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    pub(super) async fn writer(&self, id: Uuid, offset: u64) -> Result<S3Writer> {
        let data = self.data_at(id, offset).await?;
        let (progress, _) = tokio::sync::watch::channel(offset);
        // Which multipart upload the parts go to is looked up when the first part is
        // sent: most chunks of small blobs never fill one.
        let multipart = match data.recorded.parts.is_empty() {
            true => None,
            false => Some(self.multipart_of(id).await?.ok_or_else(|| {
                StorageError::Corrupt(format!("upload {id} lost its multipart upload"))
            })?),
        };
        Ok(S3Writer {
            store: self.store.clone(),
            keys: self.keys.clone(),
            recent: self.recent.clone(),
            id,
            part_size: self.settings.part_size as usize,
            multipart,
            parts: data.recorded.parts,
            buffer: BytesMut::from(&data.tail[..]),
            in_flight: FuturesOrdered::new(),
            length: offset,
            progress,
            spool: self.spools.get(id),
        })
    }

    pub(super) async fn read_whole_upload(&self, id: Uuid) -> Result<ByteStream> {
        let state = self
            .load_upload(id)
            .await?
            .ok_or_else(|| StorageError::Corrupt(format!("upload {id} has no state")))?;
        let data = self.data_at(id, state.offset).await?;
        if !data.recorded.parts.is_empty() {
            return Err(StorageError::Io {
                context: format!("re-reading upload {id}"),
                source: std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "an object store cannot read back a multipart upload before it is \
                     complete: push the blob with the digest algorithm the upload began with",
                ),
            });
        }
        Ok(futures::stream::once(async move { Ok(data.tail) }).boxed())
    }

    /// Publishes the upload's `size` bytes as the blob `digest`, which the services
    /// verified, then removes the session.
    pub(super) async fn commit(&self, id: Uuid, digest: &Digest, size: u64) -> Result<()> {
        let data = self.data_at(id, size).await?;
        let blob = self.keys.blob(digest);
        if data.recorded.parts.is_empty() {
            self.put(&blob, data.tail).await?;
        } else {
            let multipart = self.multipart_of(id).await?.ok_or_else(|| {
                StorageError::Corrupt(format!("upload {id} lost its multipart upload"))
            })?;
            let target = self.keys.upload_data(id);
            let mut parts: Vec<PartId> = data
                .recorded
                .parts
                .iter()
                .map(|(content_id, _)| PartId {
                    content_id: content_id.clone(),
                })
                .collect();
            if !data.tail.is_empty() {
                let n = parts.len();
                let last = self
                    .store
                    .put_part(&target, &multipart, n, data.tail.into())
                    .await
                    .map_err(|e| os_err(format!("sending the last part of upload {id}"), e))?;
                parts.push(last);
            }
            self.store
                .complete_multipart(&target, &multipart, parts)
                .await
                .map_err(|e| os_err(format!("completing upload {id}"), e))?;
            self.store
                .copy(&target, &blob)
                .await
                .map_err(|e| os_err(format!("copying upload {id} to {blob}"), e))?;
        }
        self.spools.remove(id);
        self.remove_session_objects(id).await
    }

    /// Removes an upload, aborting its multipart upload; returns whether it existed.
    pub(super) async fn remove_upload(&self, id: Uuid) -> Result<bool> {
        let existed = self.head(&self.keys.upload_state(id)).await?.is_some();
        if let Some(multipart) = self.multipart_of(id).await? {
            match self
                .store
                .abort_multipart(&self.keys.upload_data(id), &multipart)
                .await
            {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(os_err(format!("aborting upload {id}"), e)),
            }
        }
        self.spools.remove(id);
        self.remove_session_objects(id).await?;
        Ok(existed)
    }

    /// Deletes everything under `uploads/<id>/` in one request. Should it stop half-way,
    /// what is left is listed by [`S3Storage::uploads_with_times`] and expires.
    async fn remove_session_objects(&self, id: Uuid) -> Result<()> {
        self.recent.forget(id);
        let objects = self.list(&self.keys.upload(id)).await?;
        self.delete_all(objects).await
    }

    /// Every upload with the time any of its objects last changed; uploads whose state
    /// is gone (a crash while removing one) are listed too, so expiry removes the rest.
    pub(super) async fn uploads_with_times(&self) -> Result<Vec<(Uuid, SystemTime)>> {
        let prefix = self.keys.uploads();
        let mut latest: HashMap<Uuid, SystemTime> = HashMap::new();
        for m in self.list(&prefix).await? {
            let Some(rest) = self.name_under(&prefix, &m.location) else {
                continue;
            };
            let Some(id) = rest.split('/').next().and_then(|i| Uuid::parse_str(i).ok()) else {
                continue;
            };
            let at = SystemTime::from(m.last_modified);
            let entry = latest.entry(id).or_insert(at);
            *entry = (*entry).max(at);
        }
        Ok(latest.into_iter().collect())
    }
}

/// Appends to an upload: fills parts of `part_size` bytes and sends them as they fill,
/// a few at a time; what is left becomes the tail when the chunk ends.
pub(super) struct S3Writer {
    store: Arc<AmazonS3>,
    keys: Keys,
    recent: Arc<Recent>,
    id: Uuid,
    part_size: usize,
    multipart: Option<String>,
    parts: Vec<(String, u64)>,
    buffer: BytesMut,
    in_flight: FuturesOrdered<tokio::task::JoinHandle<Result<(PartId, u64)>>>,
    length: u64,
    progress: tokio::sync::watch::Sender<u64>,
    spool: Option<Arc<Spool>>,
}

impl S3Writer {
    async fn multipart(&mut self) -> Result<String> {
        if let Some(m) = &self.multipart {
            return Ok(m.clone());
        }
        // A chunk that failed after starting one left it recorded: the parts go there.
        let key = self.keys.upload_multipart(self.id);
        match self.store.get(&key).await {
            Ok(found) => {
                let bytes = found
                    .bytes()
                    .await
                    .map_err(|e| os_err(format!("reading {key}"), e))?;
                let id = String::from_utf8_lossy(&bytes).into_owned();
                self.multipart = Some(id.clone());
                return Ok(id);
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(os_err(format!("reading {key}"), e)),
        }
        let target = self.keys.upload_data(self.id);
        let id = self
            .store
            .create_multipart(&target)
            .await
            .map_err(|e| os_err(format!("starting a multipart upload for {}", self.id), e))?;
        // Recorded before any part is sent, so removing the session always aborts it.
        self.store
            .put(&key, PutPayload::from(id.clone().into_bytes()))
            .await
            .map_err(|e| os_err(format!("writing {key}"), e))?;
        self.multipart = Some(id.clone());
        Ok(id)
    }

    async fn send_part(&mut self, bytes: Bytes) -> Result<()> {
        let multipart = self.multipart().await?;
        let index = self.parts.len() + self.in_flight.len();
        let (store, target, id) = (self.store.clone(), self.keys.upload_data(self.id), self.id);
        let len = bytes.len() as u64;
        self.in_flight.push_back(tokio::spawn(async move {
            let part = store
                .put_part(&target, &multipart, index, bytes.into())
                .await
                .map_err(|e| os_err(format!("sending part {index} of upload {id}"), e))?;
            Ok((part, len))
        }));
        if self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.settle_one().await?;
        }
        Ok(())
    }

    async fn settle_one(&mut self) -> Result<()> {
        if let Some(done) = self.in_flight.next().await {
            let (part, len) = done.map_err(|e| StorageError::Io {
                context: "sending a part".into(),
                source: std::io::Error::other(e),
            })??;
            self.parts.push((part.content_id, len));
        }
        Ok(())
    }
}

#[async_trait]
impl UploadWriter for S3Writer {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        if let Some(spool) = &self.spool {
            spool.append(self.length, data.clone()).await?;
        }
        self.length += data.len() as u64;
        self.buffer.extend_from_slice(&data);
        while self.buffer.len() >= self.part_size {
            let part = self.buffer.split_to(self.part_size).freeze();
            self.send_part(part).await?;
        }
        self.progress.send_replace(self.length);
        Ok(())
    }

    fn progress(&self) -> tokio::sync::watch::Receiver<u64> {
        self.progress.subscribe()
    }

    async fn finish(mut self: Box<Self>) -> Result<u64> {
        while !self.in_flight.is_empty() {
            self.settle_one().await?;
        }
        let data = Data {
            recorded: Recorded {
                parts: std::mem::take(&mut self.parts),
            },
            tail: std::mem::take(&mut self.buffer).freeze(),
        };
        let key = self.keys.upload_at(self.id, self.length);
        let put = self
            .store
            .put(&key, data.encode().into())
            .await
            .map_err(|e| os_err(format!("writing {key}"), e))?;
        self.recent
            .remember(self.id, self.length, put.e_tag, Arc::new(data));
        Ok(self.length)
    }
}

/// Local copies of uploads that readers on this replica follow as they grow (mirror
/// fills). Each is an unnamed temporary file, gone when its last reader ends.
#[derive(Default)]
pub(super) struct Spools(dashmap::DashMap<Uuid, Arc<Spool>>);

pub(super) struct Spool {
    file: Arc<File>,
}

impl Spools {
    pub(super) fn reader(&self, id: Uuid) -> Result<Arc<dyn PartReader>> {
        if let Some(s) = self.0.get(&id) {
            return Ok(Arc::new(FilePartReader::of(s.file.clone())));
        }
        let file = tempfile::tempfile()
            .map_err(|e| StorageError::io("creating a local spool for a fill", e))?;
        let spool = Arc::new(Spool {
            file: Arc::new(file),
        });
        self.0.insert(id, spool.clone());
        Ok(Arc::new(FilePartReader::of(spool.file.clone())))
    }

    fn get(&self, id: Uuid) -> Option<Arc<Spool>> {
        self.0.get(&id).map(|s| s.clone())
    }

    fn remove(&self, id: Uuid) {
        self.0.remove(&id);
    }
}

impl Spool {
    async fn append(&self, offset: u64, data: Bytes) -> Result<()> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || file.write_all_at(&data, offset))
            .await
            .map_err(|e| StorageError::io("writing a spool", std::io::Error::other(e)))?
            .map_err(|e| StorageError::io("writing a spool", e))
    }
}
