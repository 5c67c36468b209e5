//! `sealer relay-serve`, the sending end of a relay hop, run on a host for the length of
//! one delivery. It serves `GET /blobs/<digest>` to the hosts the installer told to fetch
//! from it, for the blobs it named, to a bearer token it gave (all three read from
//! stdin, never from arguments). A blob still arriving is served as it arrives: the
//! bytes are read from the file the host is receiving it into, so the next host gets
//! them while this one is still being fed.
//!
//! It reports each transfer on stdout (one JSON line per quarter second and one at the
//! end), and stops when stdin closes or no heartbeat line has come for
//! [`HEARTBEAT_TIMEOUT`]: nothing is left listening once the installer is gone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sealer_registry::oci::Digest;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

use super::{Event, relay_file};
use crate::distribute::host_blob;

/// Without a line on stdin for this long the server stops (the installer sends one every
/// few seconds).
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a blob may take to start arriving, or stop growing, before a transfer fails.
pub const STALL: Duration = Duration::from_secs(60);
/// How often a transfer in progress is reported.
const REPORT_EVERY: Duration = Duration::from_millis(250);

/// What the installer writes on the first line of stdin.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServeConfig {
    pub token: String,
    /// The blobs that may be asked for, with their sizes.
    pub blobs: Vec<(Digest, u64)>,
}

struct Served {
    root: PathBuf,
    token: String,
    sizes: HashMap<Digest, u64>,
    out: Mutex<std::io::Stdout>,
}

impl Served {
    fn report(&self, event: &Event) {
        use std::io::Write;
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "{}", serde_json::to_string(event).unwrap_or_default());
        let _ = out.flush();
    }
}

/// Serves on `listen` from the blob folder under `root` until stdin closes or goes quiet.
pub async fn serve(listen: SocketAddr, root: PathBuf) -> anyhow::Result<()> {
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut first = String::new();
    // The config is a few lines' worth; a longer one is not the installer's.
    (&mut stdin).take(16 << 20).read_line(&mut first).await?;
    let config: ServeConfig = serde_json::from_str(&first)
        .map_err(|e| anyhow::anyhow!("the relay's configuration on stdin: {e}"))?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let served = Arc::new(Served {
        root,
        token: config.token,
        sizes: config.blobs.into_iter().collect(),
        out: Mutex::new(std::io::stdout()),
    });
    served.report(&Event::Listening {
        addr: listener.local_addr()?,
    });
    let app = axum::Router::new()
        .route("/blobs/{digest}", axum::routing::get(blob))
        .with_state(served);
    let quiet = async move {
        let mut line = String::new();
        loop {
            line.clear();
            match tokio::time::timeout(HEARTBEAT_TIMEOUT, stdin.read_line(&mut line)).await {
                Ok(Ok(n)) if n > 0 => continue,
                _ => return,
            }
        }
    };
    // Transfers in flight end with the server: their receivers fail and are fed again.
    tokio::select! {
        r = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()) => r?,
        () = quiet => {}
    }
    Ok(())
}

fn authorised(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // Compared in constant time: the token is the only thing keeping others out.
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn blob(
    State(served): State<Arc<Served>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(digest): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if !authorised(&headers, &served.token) {
        return (StatusCode::UNAUTHORIZED, "a relay token is required\n").into_response();
    }
    let Some((digest, size)) = digest
        .parse::<Digest>()
        .ok()
        .and_then(|d| served.sizes.get(&d).map(|s| (d, *s)))
    else {
        return (StatusCode::NOT_FOUND, "not a blob of this delivery\n").into_response();
    };
    let file = match open(&served.root, &digest).await {
        Ok(f) => f,
        Err(e) => {
            served.report(&Event::Sent {
                to: peer.ip(),
                digest,
                bytes: 0,
                done: true,
                error: Some(e.to_string()),
            });
            return (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response();
        }
    };
    let body = Body::from_stream(follow(file.into_std().await, size, digest, peer, served));
    ([(header::CONTENT_LENGTH, size.to_string())], body).into_response()
}

/// The blob's file: in place, or still arriving; waits up to [`STALL`] for either.
async fn open(root: &Path, digest: &Digest) -> std::io::Result<tokio::fs::File> {
    let target = host_blob(root, digest);
    let arriving = relay_file(root, digest);
    let deadline = Instant::now() + STALL;
    loop {
        // In place first: the file arriving is renamed to it when done.
        for path in [&target, &arriving, &target] {
            if let Ok(f) = tokio::fs::File::open(path).await {
                return Ok(f);
            }
        }
        if Instant::now() > deadline {
            return Err(std::io::Error::other(format!(
                "{digest} did not start arriving within {}s",
                STALL.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads `file` up to `size` on a thread of its own (plain blocking reads: no hop through
/// the async runtime's blocking pool for each one), waiting for bytes not written yet:
/// 1 ms at first, backing off to 10 ms while nothing comes. Fails when the file is
/// removed unfinished (its sender gave up) or stops growing for [`STALL`].
fn follow(
    file: std::fs::File,
    size: u64,
    digest: Digest,
    peer: SocketAddr,
    served: Arc<Served>,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        let mut f = Follow {
            file,
            size,
            sent: 0,
            digest,
            peer,
            served,
            last_report: Instant::now(),
        };
        let end = f.pump(&tx);
        f.report(true, end.err().map(|e| e.to_string()));
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

struct Follow {
    file: std::fs::File,
    size: u64,
    sent: u64,
    digest: Digest,
    peer: SocketAddr,
    served: Arc<Served>,
    last_report: Instant,
}

impl Follow {
    /// Sends the file's bytes down `tx` until all `size` are sent, or it fails (the
    /// failure is sent too, so the response is cut short).
    fn pump(
        &mut self,
        tx: &tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    ) -> std::io::Result<()> {
        use std::io::Read;
        let mut idle = Duration::from_millis(1);
        let mut last_growth = Instant::now();
        let mut buf = Vec::new();
        while self.sent < self.size {
            let want = (self.size - self.sent).min(256 * 1024) as usize;
            if buf.len() < want {
                buf = vec![0u8; want];
            }
            let n = match self.file.read(&mut buf[..want]) {
                Ok(n) => n,
                Err(e) => return self.fail(tx, e),
            };
            if n > 0 {
                buf.truncate(n);
                self.sent += n as u64;
                (idle, last_growth) = (Duration::from_millis(1), Instant::now());
                if tx
                    .blocking_send(Ok(Bytes::from(std::mem::take(&mut buf))))
                    .is_err()
                {
                    return Err(std::io::Error::other("the receiver went away"));
                }
                if self.last_report.elapsed() >= REPORT_EVERY {
                    self.last_report = Instant::now();
                    self.report(false, None);
                }
                continue;
            }
            if self.file.metadata().map(|m| m.nlink()).unwrap_or(0) == 0 {
                let e = format!("{} was abandoned by this host's own sender", self.digest);
                return self.fail(tx, std::io::Error::other(e));
            }
            if last_growth.elapsed() > STALL {
                let e = format!("{} stopped arriving for {}s", self.digest, STALL.as_secs());
                return self.fail(tx, std::io::Error::other(e));
            }
            std::thread::sleep(idle);
            idle = (idle * 2).min(Duration::from_millis(10));
        }
        Ok(())
    }

    fn fail(
        &self,
        tx: &tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
        e: std::io::Error,
    ) -> std::io::Result<()> {
        let text = e.to_string();
        let _ = tx.blocking_send(Err(e));
        Err(std::io::Error::other(text))
    }

    fn report(&self, done: bool, error: Option<String>) {
        self.served.report(&Event::Sent {
            to: self.peer.ip(),
            digest: self.digest.clone(),
            bytes: self.sent,
            done,
            error,
        });
    }
}
