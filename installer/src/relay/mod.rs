//! Blobs to many hosts with each leaving this machine once: this machine (the control
//! machine) feeds the first host over SSH, and every other host fetches from a host
//! before it while that one is still receiving (a pipelined chain by default, or a tree).
//!
//! A host that feeds others runs `sealer relay-serve` for the length of the delivery
//! ([`serve`]): an HTTP endpoint on its cluster address and an ephemeral port, for a
//! random token and the blobs named, stopped when the installer closes its channel. A
//! host fed by another runs `sealer relay-fetch` ([`receive`]; `curl` while it does not
//! have `sealer` yet: [`fetch`]): hashed as it arrives, renamed into place only when the
//! digest matches. Hosts need no keys for each other.
//!
//! A delivery runs in rounds ([`plan`]): a host whose feeder failed is fed in the next
//! round by a host that has everything, or by this machine; a host that cannot be
//! reached is named and left out. A re-run sends only what hosts lack.

mod channel;
mod fetch;
pub mod plan;
pub mod receive;
pub mod serve;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sealer_builder::progress::{Progress, Task};
use sealer_registry::oci::Digest;
use serde::{Deserialize, Serialize};

use crate::distribute::{Blob, Sent, survey};
use crate::hosts::{Host, HostError};
pub use plan::{Feeder, Topology};

/// How many rounds a delivery takes at most before it gives up on a host.
const ROUNDS: usize = 3;

/// What a relay server reports on stdout, one JSON object per line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Listening {
        addr: SocketAddr,
    },
    /// `bytes` of `digest` sent to `to` so far.
    Sent {
        to: IpAddr,
        digest: Digest,
        bytes: u64,
        done: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// Where a blob arriving on a host is written until its digest is checked: a name its
/// relay server can find, so the blob is passed on while it arrives.
pub fn relay_file(root: &Path, digest: &Digest) -> PathBuf {
    root.join("blobs")
        .join(digest.algorithm().to_string())
        .join(format!(".relay.{}", digest.hex()))
}

/// What is delivered, where, and how.
pub struct Delivery<'a> {
    pub hosts: &'a [Arc<dyn Host>],
    /// The hosts' blob folder root.
    pub root: &'a Path,
    pub blobs: &'a [Blob],
    pub topology: Topology,
    /// `sealer` on the hosts (it serves the relay).
    pub sealer: String,
    /// Shell lines that make `sealer` ready on a host before its server starts (the
    /// tools step installs the binary just received).
    pub prelude: String,
    /// Whether a host may pass a blob on while it is still receiving it. Off when the
    /// server is itself among the blobs (it can serve only once it is whole).
    pub pipelined: bool,
    /// At most this many hosts are surveyed at once.
    pub jobs: usize,
}

/// What one host got and how long it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub sent: Sent,
    /// Who fed it last (`None`: this machine).
    pub from: Option<IpAddr>,
    pub seconds: f64,
}

/// What a delivery did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Each host's result, in the order given.
    pub hosts: Vec<(IpAddr, Result<Received, HostError>)>,
    /// Bytes this machine sent.
    pub from_control: u64,
}

/// One host's state across rounds.
struct Slot {
    host: Arc<dyn Host>,
    lacking: Vec<Blob>,
    curl: bool,
    received: Received,
    error: Option<HostError>,
    /// Unreachable: not fed, and feeds nobody.
    dead: bool,
}

impl Delivery<'_> {
    pub async fn run(&self, progress: &dyn Progress) -> Outcome {
        let started = Instant::now();
        let mut slots = self.survey().await;
        let from_control = Arc::new(AtomicU64::new(0));
        // Whole-blob rounds double the hosts that have everything: as many rounds as
        // hosts is more than enough, with failures.
        let rounds = if self.pipelined {
            ROUNDS
        } else {
            ROUNDS + slots.len()
        };
        for _ in 0..rounds {
            let pending = slots
                .iter()
                .filter(|s| !s.dead && !s.lacking.is_empty())
                .count();
            if pending == 0 {
                break;
            }
            let feeders = plan::assign(
                &slots_view(&slots, self.pipelined),
                self.topology,
                self.pipelined,
            );
            self.round(&mut slots, &feeders, progress, &from_control, started)
                .await;
        }
        Outcome {
            hosts: slots
                .into_iter()
                .map(|s| {
                    let ip = s.host.ip();
                    let r = match s.error {
                        Some(e) if s.dead || !s.lacking.is_empty() => Err(e),
                        _ if !s.lacking.is_empty() => Err(HostError::Setup {
                            host: ip.to_string(),
                            detail: "no host could feed it".into(),
                        }),
                        _ => Ok(s.received),
                    };
                    (ip, r)
                })
                .collect(),
            from_control: from_control.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// What each host lacks, and whether it can fetch (`curl`).
    async fn survey(&self) -> Vec<Slot> {
        let results =
            crate::hosts::on_all(self.hosts, self.jobs, |h| survey(h, self.root, self.blobs)).await;
        self.hosts
            .iter()
            .zip(results)
            .map(|(host, (_, r))| {
                let (lacking, curl, error) = match r {
                    Ok(s) => (
                        s.lacking.into_iter().cloned().collect::<Vec<_>>(),
                        s.curl,
                        None,
                    ),
                    Err(e) => (self.blobs.to_vec(), false, Some(e)),
                };
                Slot {
                    host: host.clone(),
                    received: Received {
                        sent: Sent {
                            present: self.blobs.len() - lacking.len(),
                            ..Sent::default()
                        },
                        from: None,
                        seconds: 0.0,
                    },
                    dead: error.is_some(),
                    lacking,
                    curl,
                    error,
                }
            })
            .collect()
    }

    /// One round: servers started on the feeding hosts, every fed host fetching at once,
    /// then the servers closed and each host's state brought up to date.
    async fn round(
        &self,
        slots: &mut [Slot],
        feeders: &[Option<Feeder>],
        progress: &dyn Progress,
        from_control: &Arc<AtomicU64>,
        started: Instant,
    ) {
        let tracker = Arc::new(Tracker::default());
        let servers = self.start_servers(slots, feeders, &tracker).await;
        // A host whose feeder could not serve is fed by that feeder's own feeder.
        let feeders: Vec<Option<Feeder>> = feeders
            .iter()
            .map(|f| plan::reroute(*f, feeders, &|i| servers.contains_key(&i)))
            .collect();
        let work = slots.iter().enumerate().filter_map(|(i, slot)| {
            let from = match feeders[i]? {
                Feeder::Control => None,
                Feeder::Host(p) => Some((slots[p].host.ip(), servers.get(&p)?)),
            };
            let label = format!(
                "{} <- {}",
                slot.host.ip(),
                from.map_or("here".to_string(), |f| f.0.to_string())
            );
            let task: Arc<dyn Task> = Arc::from(progress.task(&label, bytes(&slot.lacking)));
            tracker.watch(slot.host.ip(), task.clone());
            let own = servers.get(&i).map(channel::Server::closer);
            let fed = Fed {
                fetcher: if self.pipelined {
                    fetch::Fetcher::Sealer {
                        prelude: &self.prelude,
                        sealer: &self.sealer,
                    }
                } else {
                    fetch::Fetcher::Curl
                },
                host: slot.host.clone(),
                lacking: slot.lacking.clone(),
                from: from.map(|(ip, s)| (ip, s.addr, s.token.clone())),
                task,
                own,
            };
            Some(async move {
                (
                    i,
                    fed.from.as_ref().map(|f| f.0),
                    fed.run(self.root, from_control).await,
                )
            })
        });
        let results = futures::future::join_all(work).await;
        for server in servers.into_values() {
            server.close().await;
        }
        for (i, from, r) in results {
            self.settle(&mut slots[i], from, r, started).await;
        }
    }

    /// Starts a relay server on every host that feeds another this round; those that
    /// fail to start are left out (their hosts are rerouted).
    async fn start_servers(
        &self,
        slots: &[Slot],
        feeders: &[Option<Feeder>],
        tracker: &Arc<Tracker>,
    ) -> HashMap<usize, channel::Server> {
        let serving: std::collections::BTreeSet<usize> = feeders
            .iter()
            .flatten()
            .filter_map(|f| match f {
                Feeder::Host(i) => Some(*i),
                Feeder::Control => None,
            })
            .collect();
        let hosts = serving.iter().map(|&i| slots[i].host.clone()).collect();
        let started = channel::start_all(
            hosts,
            self.root,
            self.blobs,
            &self.prelude,
            &self.sealer,
            tracker.clone(),
        )
        .await;
        serving
            .into_iter()
            .zip(started)
            .filter_map(|(i, s)| match s {
                Ok(s) => Some((i, s)),
                Err(e) => {
                    tracing::warn!("host {}: no relay server: {e}", slots[i].host.ip());
                    None
                }
            })
            .collect()
    }

    /// A host's state after its fetch: everything arrived, or what did (a survey), and
    /// whether it can still be reached.
    async fn settle(
        &self,
        slot: &mut Slot,
        from: Option<IpAddr>,
        r: Result<(), HostError>,
        started: Instant,
    ) {
        let still: Vec<Blob> = match r {
            Ok(()) => {
                slot.received.from = from;
                slot.received.seconds = started.elapsed().as_secs_f64();
                slot.error = None;
                Vec::new()
            }
            Err(e) => {
                slot.dead = matches!(e, HostError::Unreachable { .. })
                    || slot.host.run("true").await.is_err();
                slot.error = Some(e);
                if slot.dead {
                    return;
                }
                // What arrived whole stays; the next round sends the rest.
                match survey(slot.host.as_ref(), self.root, &slot.lacking).await {
                    Ok(s) => s.lacking.into_iter().cloned().collect(),
                    Err(_) => return,
                }
            }
        };
        let got: Vec<&Blob> = slot
            .lacking
            .iter()
            .filter(|b| !still.iter().any(|s| s.digest == b.digest))
            .collect();
        slot.received.sent.blobs += got.len();
        slot.received.sent.bytes += got.iter().map(|b| b.size).sum::<u64>();
        slot.lacking = still;
    }
}

/// What the blobs weigh.
fn bytes(blobs: &[Blob]) -> u64 {
    blobs.iter().map(|b| b.size).sum()
}

/// One host being fed this round.
struct Fed<'a> {
    fetcher: fetch::Fetcher<'a>,
    host: Arc<dyn Host>,
    lacking: Vec<Blob>,
    /// The feeding host, its server's address and token (`None`: this machine).
    from: Option<(IpAddr, SocketAddr, String)>,
    task: Arc<dyn Task>,
    /// The host's own relay server, closed if this fetch fails.
    own: Option<channel::Closer>,
}

impl Fed<'_> {
    async fn run(&self, root: &Path, from_control: &AtomicU64) -> Result<(), HostError> {
        let host = self.host.as_ref();
        let r = match &self.from {
            None => fetch::from_control(host, root, &self.lacking, &self.task, from_control).await,
            Some((_, addr, token)) => {
                fetch::from_peer(host, root, &self.lacking, *addr, token, self.fetcher).await
            }
        };
        self.task.finish(if r.is_ok() { "done" } else { "failed" });
        if r.is_err()
            && let Some(own) = &self.own
        {
            // The hosts this one feeds fail at once rather than wait for it.
            own.close();
        }
        r
    }
}

/// The slots as the planner sees them: `sealer relay-fetch` fetches in pipelined
/// rounds, curl in whole-blob ones.
fn slots_view(slots: &[Slot], pipelined: bool) -> Vec<plan::HostState> {
    slots
        .iter()
        .map(|s| plan::HostState {
            alive: !s.dead,
            complete: s.lacking.is_empty(),
            can_fetch: pipelined || s.curl,
        })
        .collect()
}

/// Turns the servers' reports into each fed host's progress.
#[derive(Default)]
pub(crate) struct Tracker {
    tasks: Mutex<HashMap<IpAddr, Arc<dyn Task>>>,
    seen: Mutex<HashMap<(IpAddr, Digest), u64>>,
}

impl Tracker {
    fn watch(&self, ip: IpAddr, task: Arc<dyn Task>) {
        self.tasks.lock().unwrap().insert(ip, task);
    }

    fn event(&self, event: &Event) {
        let Event::Sent {
            to, digest, bytes, ..
        } = event
        else {
            return;
        };
        let delta = {
            let mut seen = self.seen.lock().unwrap();
            let before = seen.insert((*to, digest.clone()), *bytes).unwrap_or(0);
            bytes.saturating_sub(before)
        };
        if let Some(task) = self.tasks.lock().unwrap().get(to) {
            task.advance(delta);
        }
    }
}

/// How long a host may go without a byte before its fetch is given up.
pub const FETCH_STALL: Duration = Duration::from_secs(60);
