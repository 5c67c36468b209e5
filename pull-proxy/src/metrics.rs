//! Mirror metrics, per upstream: cache hits and misses, upstream requests, bytes and
//! errors, fills in progress. Registered beside the registry's under `sealer_registry_mirror_*`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sealer_client::Observer;
use std::collections::HashSet;
use std::sync::Mutex;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub upstream: String,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub upstream: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
}

/// Most distinct `upstream` label values; further hosts (named by clients through a `*`
/// entry) are counted under [`OTHER_HOSTS`], so the metrics stay bounded.
pub const MAX_UPSTREAM_LABELS: usize = 64;
pub const OTHER_HOSTS: &str = "_other";

#[derive(Debug, Default)]
pub struct MirrorMetrics {
    /// The upstream label values handed out so far.
    labels: Mutex<HashSet<String>>,
    hits: Family<KindLabels, Counter>,
    misses: Family<KindLabels, Counter>,
    requests: Family<StatusLabels, Counter>,
    bytes: Family<UpstreamLabels, Counter>,
    errors: Family<UpstreamLabels, Counter>,
    fills: Gauge,
}

impl MirrorMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("mirror");
        r.register(
            "cache_hits",
            "Mirrored content served from the store",
            self.hits.clone(),
        );
        r.register(
            "cache_misses",
            "Mirrored content fetched from upstream",
            self.misses.clone(),
        );
        r.register(
            "upstream_requests",
            "Requests to upstreams by answer status",
            self.requests.clone(),
        );
        r.register(
            "upstream_received_bytes",
            "Bytes received from upstreams",
            self.bytes.clone(),
        );
        r.register(
            "upstream_errors",
            "Upstream requests that failed: unreachable, reset, bad answer",
            self.errors.clone(),
        );
        r.register(
            "fills_in_progress",
            "Blobs being fetched from upstream and not yet verified and stored",
            self.fills.clone(),
        );
    }

    /// Counts a fill until the returned guard is dropped.
    pub fn fill_started(&self) -> impl Drop + Send + 'static {
        struct Running(Gauge);
        impl Drop for Running {
            fn drop(&mut self) {
                self.0.dec();
            }
        }
        self.fills.inc();
        Running(self.fills.clone())
    }

    /// The label value for `upstream`: itself while fewer than
    /// [`MAX_UPSTREAM_LABELS`] hosts have been seen, else [`OTHER_HOSTS`].
    fn label(&self, upstream: &str) -> String {
        let mut seen = self.labels.lock().expect("labels lock");
        if seen.contains(upstream) {
            return upstream.to_string();
        }
        if seen.len() < MAX_UPSTREAM_LABELS {
            seen.insert(upstream.to_string());
            return upstream.to_string();
        }
        OTHER_HOSTS.to_string()
    }

    pub fn hit(&self, upstream: &str, kind: &'static str) {
        self.hits
            .get_or_create(&KindLabels {
                upstream: self.label(upstream),
                kind,
            })
            .inc();
    }

    pub fn miss(&self, upstream: &str, kind: &'static str) {
        self.misses
            .get_or_create(&KindLabels {
                upstream: self.label(upstream),
                kind,
            })
            .inc();
    }
}

/// The registry client reports to the mirror's metrics.
impl Observer for MirrorMetrics {
    fn request(&self, upstream: &str, status: u16) {
        self.requests
            .get_or_create(&StatusLabels {
                upstream: self.label(upstream),
                status,
            })
            .inc();
    }

    fn received(&self, upstream: &str, bytes: u64) {
        self.bytes
            .get_or_create(&UpstreamLabels {
                upstream: self.label(upstream),
            })
            .inc_by(bytes);
    }

    fn error(&self, upstream: &str) {
        self.errors
            .get_or_create(&UpstreamLabels {
                upstream: self.label(upstream),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_labels_are_bounded() {
        let m = MirrorMetrics::default();
        for i in 0..(MAX_UPSTREAM_LABELS + 20) {
            m.request(&format!("h{i}.example"), 200);
        }
        m.request("h0.example", 404);
        let mut r = Registry::default();
        m.register(&mut r);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        let hosts: HashSet<&str> = text
            .lines()
            .filter_map(|l| l.split("upstream=\"").nth(1))
            .filter_map(|l| l.split('"').next())
            .collect();
        assert_eq!(hosts.len(), MAX_UPSTREAM_LABELS + 1, "{hosts:?}");
        assert!(hosts.contains(OTHER_HOSTS) && hosts.contains("h0.example"));
    }
}
