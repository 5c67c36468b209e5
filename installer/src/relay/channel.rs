//! The installer's end of the relay servers: started over each host's SSH connection,
//! kept alive with a heartbeat, their reports passed to the progress display, and
//! closed (stdin shut, so the server exits) when the round ends.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::serve::ServeConfig;
use super::{Event, Tracker};
use crate::distribute::{Blob, quote};
use crate::hosts::{Host, HostError};

/// How often the installer tells each server it is still there.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long a server may take to say where it listens.
const START: Duration = Duration::from_secs(20);

pub struct Server {
    pub addr: SocketAddr,
    pub token: String,
    closer: Closer,
    task: tokio::task::JoinHandle<()>,
}

/// Closes a server from anywhere, once.
#[derive(Clone)]
pub struct Closer(Arc<Mutex<Option<oneshot::Sender<()>>>>);

impl Closer {
    pub fn close(&self) {
        if let Some(tx) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(());
        }
    }
}

impl Server {
    pub fn closer(&self) -> Closer {
        self.closer.clone()
    }

    /// Closes the server and waits for it to exit.
    pub async fn close(self) {
        self.closer.close();
        let _ = self.task.await;
    }
}

/// A fresh random token (256 bits, hex).
fn token() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source");
    hex::encode(bytes)
}

/// Starts a server on each of `hosts`, in parallel.
pub async fn start_all(
    hosts: Vec<Arc<dyn Host>>,
    root: &Path,
    blobs: &[Blob],
    prelude: &str,
    sealer: &str,
    tracker: Arc<Tracker>,
) -> Vec<Result<Server, HostError>> {
    futures::future::join_all(
        hosts
            .iter()
            .map(|h| start(h.as_ref(), root, blobs, prelude, sealer, tracker.clone())),
    )
    .await
}

/// Starts `sealer relay-serve` on `host`, on its cluster address, after the shell lines
/// `prelude` (which make the binary `sealer` ready).
async fn start(
    host: &dyn Host,
    root: &Path,
    blobs: &[Blob],
    prelude: &str,
    sealer: &str,
    tracker: Arc<Tracker>,
) -> Result<Server, HostError> {
    let ip = host.ip();
    let listen = SocketAddr::new(ip, 0);
    let script = format!(
        "{prelude}\nexec {sealer} relay-serve --listen {listen} --root {}",
        quote(root)
    );
    let mut channel = host.open(&script).await?;
    let config = ServeConfig {
        token: token(),
        blobs: blobs.iter().map(|b| (b.digest.clone(), b.size)).collect(),
    };
    let line = format!("{}\n", serde_json::to_string(&config).expect("plain data"));
    let io = |c: &str| HostError::io(ip, c);
    channel
        .stdin
        .write_all(line.as_bytes())
        .await
        .map_err(io("starting the relay server"))?;
    channel
        .stdin
        .flush()
        .await
        .map_err(io("starting the relay server"))?;
    let mut lines = tokio::io::BufReader::new(channel.stdout).lines();
    let first = tokio::time::timeout(START, lines.next_line()).await;
    let addr = match first {
        Ok(Ok(Some(l))) => match serde_json::from_str::<Event>(&l) {
            Ok(Event::Listening { addr }) => addr,
            _ => {
                return Err(HostError::Setup {
                    host: ip.to_string(),
                    detail: format!("the relay server said {l:?}"),
                });
            }
        },
        _ => {
            drop(channel.stdin);
            let out = tokio::time::timeout(START, channel.done).await;
            let said = match out {
                Ok(Ok(o)) => o.stderr.trim().to_string(),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer".into(),
            };
            return Err(HostError::Setup {
                host: ip.to_string(),
                detail: format!("the relay server did not start: {said}"),
            });
        }
    };
    let (tx, mut rx) = oneshot::channel();
    let mut stdin = channel.stdin;
    let done = channel.done;
    let task = tokio::spawn(async move {
        let mut beat = tokio::time::interval(HEARTBEAT);
        loop {
            tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(l)) => {
                        if let Ok(e) = serde_json::from_str::<Event>(&l) {
                            tracker.event(&e);
                        }
                    }
                    _ => break,
                },
                _ = beat.tick() => {
                    if stdin.write_all(b"\n").await.is_err() { break; }
                    let _ = stdin.flush().await;
                }
                _ = &mut rx => break,
            }
        }
        let _ = stdin.shutdown().await;
        drop(stdin);
        // The server exits on its closed stdin; its end is waited for, within bounds.
        let _ = tokio::time::timeout(Duration::from_secs(10), done).await;
    });
    Ok(Server {
        addr,
        token: config.token,
        closer: Closer(Arc::new(Mutex::new(Some(tx)))),
        task,
    })
}
