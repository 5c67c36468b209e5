//! The mirror's upstream clients, one per registry host (one connection pool, one token
//! cache each).
//!
//! With a `*` entry, clients name the hosts, so the map is bounded: past
//! [`MAX_CLIENTS`] the client used least recently is dropped (the configured hosts'
//! clients stay). The clients of one entry share its TLS settings, made once at start.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::MirrorConfig;
use crate::metrics::MirrorMetrics;
use crate::routing::Router;
use sealer_client::UpstreamClient;

/// Most clients kept at once.
pub const MAX_CLIENTS: usize = 256;

struct Kept {
    client: Arc<UpstreamClient>,
    /// The tick of its last use: the smallest goes first.
    used: AtomicU64,
    /// A configured host's client, never dropped.
    pinned: bool,
}

pub struct Clients {
    router: Router,
    /// TLS settings per configured entry (`*` included).
    tls: HashMap<String, rustls::ClientConfig>,
    kept: Mutex<HashMap<String, Kept>>,
    tick: AtomicU64,
    metrics: Arc<MirrorMetrics>,
}

impl Clients {
    /// Makes every entry's TLS settings and the configured hosts' clients, so a bad CA
    /// file fails the start.
    pub fn new(config: &MirrorConfig, metrics: Arc<MirrorMetrics>) -> anyhow::Result<Clients> {
        let mut tls = HashMap::new();
        for u in &config.upstreams {
            tls.insert(u.host.clone(), UpstreamClient::tls_for(u)?);
        }
        let clients = Clients {
            router: Router::new(config),
            tls,
            kept: Mutex::default(),
            tick: AtomicU64::new(0),
            metrics,
        };
        for u in config.upstreams.iter().filter(|u| u.host != "*") {
            clients.get(&u.host).map_err(anyhow::Error::msg)?;
        }
        Ok(clients)
    }

    /// The client for `host`, made on first use.
    pub fn get(&self, host: &str) -> Result<Arc<UpstreamClient>, String> {
        let tick = self.tick.fetch_add(1, Ordering::Relaxed);
        if let Some(k) = self.kept.lock().expect("clients lock").get(host) {
            k.used.store(tick, Ordering::Relaxed);
            return Ok(k.client.clone());
        }
        let upstream = self
            .router
            .upstream_for(host)
            .ok_or_else(|| format!("{host} is not a configured upstream"))?;
        let tls = self.tls[&upstream.host].clone();
        let client = UpstreamClient::with_tls(host, upstream, tls, self.metrics.clone())
            .map_err(|e| format!("upstream {host}: {e:#}"))?;
        let mut kept = self.kept.lock().expect("clients lock");
        if !kept.contains_key(host) && kept.len() >= MAX_CLIENTS {
            let oldest = kept
                .iter()
                .filter(|(_, k)| !k.pinned)
                .min_by_key(|(_, k)| k.used.load(Ordering::Relaxed))
                .map(|(h, _)| h.clone());
            if let Some(h) = oldest {
                kept.remove(&h);
            }
        }
        let entry = kept.entry(host.to_string()).or_insert_with(|| Kept {
            client: Arc::new(client),
            used: AtomicU64::new(tick),
            pinned: upstream.host != "*",
        });
        Ok(entry.client.clone())
    }

    /// How many clients are kept.
    pub fn len(&self) -> usize {
        self.kept.lock().expect("clients lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MirrorArgs;

    #[test]
    fn any_host_clients_are_bounded_and_configured_ones_stay() {
        let args = MirrorArgs {
            upstreams: vec!["*".into(), "quay.io=http://127.0.0.1:9".into()],
            ..Default::default()
        };
        let config = MirrorConfig::resolve(None, &args).unwrap();
        let clients = Clients::new(&config, Arc::default()).unwrap();
        assert_eq!(clients.len(), 1);
        let first = clients.get("h0.example").unwrap();
        for i in 1..(MAX_CLIENTS + 50) {
            clients.get(&format!("h{i}.example")).unwrap();
        }
        assert_eq!(clients.len(), MAX_CLIENTS);
        assert!(clients.kept.lock().unwrap().contains_key("quay.io"));
        assert!(!clients.kept.lock().unwrap().contains_key("h0.example"));
        // A dropped client is made again when its host is named again.
        let again = clients.get("h0.example").unwrap();
        assert!(!Arc::ptr_eq(&first, &again), "h0 was dropped and made anew");
        assert!(clients.get("a:b").is_err(), "no URL can be made of it");
    }
}
