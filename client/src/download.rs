//! The one blob download: the mirror's cache fill and the builder's pull both fetch blobs
//! through here. It asks for the blob from a given byte, checks the announced size
//! against what the manifest declared and the largest blob allowed, bounds the whole
//! transfer by time (a minimum average rate), resumes where a broken body stopped, and
//! refuses content that is longer, shorter or other than the digest says. Where the
//! bytes go, how they are hashed and when to give up early are the [`Sink`]'s.

use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use sealer_registry::oci::Digest;

use crate::{UpstreamClient, UpstreamError, content_length, error_chain};

/// How many times a download that broke off is resumed.
pub const RESUMES: u32 = 3;

/// Where a download's bytes go.
#[async_trait]
pub trait Sink: Send {
    /// Upstream's first answer gave the blob's whole size (already checked).
    fn sized(&mut self, _total: u64) {}
    async fn write(&mut self, chunk: Bytes) -> anyhow::Result<()>;
    /// Called after each chunk with the bytes so far; an error stops the download (a
    /// fill every client has left).
    fn proceed(&mut self, _written: u64, _total: u64) -> anyhow::Result<()> {
        Ok(())
    }
    /// The body broke off at `written` bytes and the download resumes there.
    fn resuming(&mut self, _written: u64, _why: &str) {}
    /// Every byte is written: the digest of the whole blob (from byte 0).
    async fn finish(&mut self) -> anyhow::Result<Digest>;
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("upstream does not have {0}")]
    Absent(Digest),
    #[error("upstream lost {0} during the download")]
    Lost(Digest),
    #[error("upstream sent the blob without a Content-Length")]
    NoLength,
    #[error("upstream announced {announced} bytes, over the largest blob allowed ({max})")]
    OverLimit { announced: u64, max: u64 },
    #[error("upstream announced {announced} bytes where the manifest says {declared}")]
    NotAsDeclared { announced: u64, declared: u64 },
    #[error("upstream sent more than the {0} bytes it announced")]
    TooMuch(u64),
    #[error("the download took longer than {limit:?} ({written} of {total} bytes)")]
    TooSlow {
        limit: std::time::Duration,
        written: u64,
        total: u64,
    },
    #[error("the download broke off after {written} bytes: {reason}")]
    Broken { written: u64, reason: String },
    #[error("upstream sent {written} bytes of {digest}, announced {total}")]
    Short {
        digest: Digest,
        written: u64,
        total: u64,
    },
    #[error("upstream sent content with digest {actual} for {digest}")]
    Damaged { digest: Digest, actual: Digest },
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("{0:#}")]
    Sink(anyhow::Error),
}

impl DownloadError {
    /// Whether what was written is wrong (not merely unfinished), so a partial copy
    /// kept for resuming must go.
    pub fn spoils_partial(&self) -> bool {
        matches!(
            self,
            DownloadError::TooMuch(_) | DownloadError::Short { .. } | DownloadError::Damaged { .. }
        )
    }
}

/// What the first answer fixed: the blob's size, and the time the whole transfer may
/// take from when it started.
#[derive(Clone, Copy)]
struct Bounds {
    total: u64,
    started: Instant,
    limit: std::time::Duration,
}

/// One blob to fetch.
pub struct Download<'a> {
    pub remote: &'a str,
    pub digest: &'a Digest,
    /// The size the manifest gives, if known: upstream must announce the same.
    pub declared: Option<u64>,
    /// Bytes already held (a partial copy an earlier attempt left); the sink has them.
    pub from: u64,
}

impl UpstreamClient {
    /// Fetches `d` into `sink`, verified. Returns the blob's size.
    pub async fn download(
        &self,
        d: &Download<'_>,
        sink: &mut dyn Sink,
    ) -> Result<u64, DownloadError> {
        let mut written = d.from;
        let mut resumes = 0;
        let mut bounds: Option<Bounds> = None;
        loop {
            let resp = match self.get_blob(d.remote, d.digest, written).await {
                Ok(Some(r)) => r,
                Ok(None) if bounds.is_none() => {
                    return Err(DownloadError::Absent(d.digest.clone()));
                }
                Ok(None) => return Err(DownloadError::Lost(d.digest.clone())),
                Err(e) if written > 0 && resumes < RESUMES => {
                    resumes += 1;
                    self.pause_to_resume(d.digest, written, &e.to_string(), resumes, sink)
                        .await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let fixed = match bounds {
                Some(b) => b,
                None => {
                    let rest = content_length(&resp).ok_or(DownloadError::NoLength)?;
                    let total = written + rest;
                    check_size(total, d.declared, self.max_blob_bytes())?;
                    sink.sized(total);
                    *bounds.insert(Bounds {
                        total,
                        started: Instant::now(),
                        limit: self.blob_deadline(rest),
                    })
                }
            };
            let broken = self.receive(resp, &fixed, &mut written, sink).await?;
            match broken {
                None => break,
                Some(reason) if resumes < RESUMES => {
                    resumes += 1;
                    self.record_error();
                    self.pause_to_resume(d.digest, written, &reason, resumes, sink)
                        .await;
                }
                Some(reason) => return Err(DownloadError::Broken { written, reason }),
            }
        }
        let total = bounds.map_or(0, |b| b.total);
        let actual = sink.finish().await.map_err(DownloadError::Sink)?;
        if written != total {
            return Err(DownloadError::Short {
                digest: d.digest.clone(),
                written,
                total,
            });
        }
        if &actual != d.digest {
            return Err(DownloadError::Damaged {
                digest: d.digest.clone(),
                actual,
            });
        }
        Ok(total)
    }

    /// Streams one response's body into `sink`, within the bounds; `Some(reason)` when the
    /// body broke off (the download may resume), an error when it must stop.
    async fn receive(
        &self,
        resp: reqwest::Response,
        bounds: &Bounds,
        written: &mut u64,
        sink: &mut dyn Sink,
    ) -> Result<Option<String>, DownloadError> {
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => return Ok(Some(error_chain(&e))),
            };
            *written += chunk.len() as u64;
            self.record_received(chunk.len() as u64);
            if *written > bounds.total {
                return Err(DownloadError::TooMuch(bounds.total));
            }
            sink.write(chunk).await.map_err(DownloadError::Sink)?;
            if bounds.started.elapsed() > bounds.limit {
                return Err(DownloadError::TooSlow {
                    limit: bounds.limit,
                    written: *written,
                    total: bounds.total,
                });
            }
            sink.proceed(*written, bounds.total)
                .map_err(DownloadError::Sink)?;
        }
        Ok(None)
    }

    async fn pause_to_resume(
        &self,
        digest: &Digest,
        written: u64,
        why: &str,
        resumes: u32,
        sink: &mut dyn Sink,
    ) {
        tracing::info!(upstream = %self.host, %digest, written, error = %why, "resuming a broken blob download");
        sink.resuming(written, why);
        tokio::time::sleep(std::time::Duration::from_millis(300 * u64::from(resumes))).await;
    }
}

/// Refuses a blob whose announced size is over the limit or differs from what the
/// manifest declared.
fn check_size(
    announced: u64,
    declared: Option<u64>,
    max: Option<u64>,
) -> Result<(), DownloadError> {
    if let Some(max) = max.filter(|max| announced > *max) {
        return Err(DownloadError::OverLimit { announced, max });
    }
    if let Some(declared) = declared.filter(|d| *d != announced) {
        return Err(DownloadError::NotAsDeclared {
            announced,
            declared,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked_against_the_limit_and_the_manifest() {
        assert!(check_size(10, Some(10), Some(10)).is_ok());
        assert!(check_size(10, None, None).is_ok());
        let over = check_size(11, None, Some(10)).unwrap_err().to_string();
        assert!(over.contains("largest blob"), "{over}");
        let other = check_size(11, Some(10), None).unwrap_err().to_string();
        assert!(other.contains("manifest says 10"), "{other}");
    }
}
