//! Which redirects an upstream client follows. Upstreams are not trusted: a redirect
//! must not turn the registry into a client of hosts its operator never named (the
//! cloud's metadata service, an admin port on localhost), nor downgrade TLS.
//!
//! - Within the upstream's own origin, redirects are followed.
//! - To another origin only for a blob download (registries send those to a CDN or an
//!   object store), never for a manifest, tag list, token or upload: the digest of a
//!   blob is checked on arrival, the rest would be taken as the upstream's word.
//! - Never from https to http.
//! - Never to a loopback, private, link-local or otherwise non-public address, unless
//!   the upstream itself is on one (a registry on the LAN whose blobs are on the LAN).
//!   Addresses are checked as written in the URL and, for names, as resolved
//!   ([`GuardedResolver`]), so a public name pointing at 127.0.0.1 gains nothing.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::dns::{Name, Resolve, Resolving};
use reqwest::redirect::{Attempt, Policy};
use url::{Host, Url};

/// Most redirects followed for one request.
const MAX_HOPS: usize = 5;

/// Whether an address is on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80) // link-local
        }
    }
}

/// What the client knows of its upstream, shared by its redirect policy and resolver.
#[derive(Debug)]
pub struct Guard {
    endpoint: Url,
    /// The upstream itself is on a non-public address: so may its redirects be.
    upstream_private: AtomicBool,
}

impl Guard {
    pub fn new(endpoint: &Url) -> Arc<Guard> {
        let literal_private = match endpoint.host() {
            Some(Host::Ipv4(ip)) => !is_public(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => !is_public(IpAddr::V6(ip)),
            _ => false,
        };
        Arc::new(Guard {
            endpoint: endpoint.clone(),
            upstream_private: AtomicBool::new(literal_private),
        })
    }

    fn upstream_private(&self) -> bool {
        self.upstream_private.load(Ordering::Relaxed)
    }

    /// Why `target` may not be followed from a request first sent to `original`, or
    /// `None` when it may.
    pub fn refusal(&self, original: &Url, target: &Url, hops: usize) -> Option<String> {
        if hops > MAX_HOPS {
            return Some(format!("more than {MAX_HOPS} redirects"));
        }
        if target.origin() == self.endpoint.origin() {
            return None;
        }
        if !is_blob_download(original) {
            return Some("only blob downloads are followed to another host".into());
        }
        match target.scheme() {
            "https" => {}
            "http" if self.endpoint.scheme() == "http" => {}
            _ => return Some("it leaves https".into()),
        }
        let literal = match target.host() {
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(Host::Domain(_)) => None,
            None => return Some("it names no host".into()),
        };
        if let Some(ip) = literal {
            if !is_public(ip) && !self.upstream_private() {
                return Some(format!("{ip} is not a public address"));
            }
        }
        None
    }

    /// The redirect policy of a client of this upstream.
    pub fn policy(self: &Arc<Self>) -> Policy {
        let guard = self.clone();
        Policy::custom(move |attempt: Attempt| {
            let original = attempt.previous().first().cloned();
            let hops = attempt.previous().len();
            let refusal = original
                .as_ref()
                .and_then(|o| guard.refusal(o, attempt.url(), hops));
            match refusal {
                None => attempt.follow(),
                Some(why) => {
                    let message =
                        format!("refusing to follow a redirect to {}: {why}", attempt.url());
                    tracing::warn!(upstream = %guard.endpoint, "{message}");
                    attempt.error(message)
                }
            }
        })
    }

    /// The resolver of a client of this upstream.
    pub fn resolver(self: &Arc<Self>) -> GuardedResolver {
        GuardedResolver(self.clone())
    }
}

/// `GET /v2/<name>/blobs/<digest>` (not an upload).
fn is_blob_download(url: &Url) -> bool {
    let path = url.path();
    path.starts_with("/v2/") && path.contains("/blobs/") && !path.contains("/blobs/uploads")
}

/// Resolves names as the system does, then keeps only public addresses for any host but
/// the upstream's own (unless the upstream is itself on a private address).
pub struct GuardedResolver(Arc<Guard>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let own = guard
                .endpoint
                .host_str()
                .is_some_and(|h| h.eq_ignore_ascii_case(&host));
            if own {
                if addrs.iter().any(|a| !is_public(a.ip())) {
                    guard.upstream_private.store(true, Ordering::Relaxed);
                }
                return Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs);
            }
            if guard.upstream_private() {
                return Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs);
            }
            let public: Vec<SocketAddr> = addrs.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(format!(
                    "{host} resolves only to non-public addresses: refusing to connect"
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn public_and_private_addresses() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn a_public_upstream_is_followed_only_for_blobs_to_public_https() {
        let g = Guard::new(&url("https://registry.example"));
        let blob = url("https://registry.example/v2/a/blobs/sha256:aa");
        let manifest = url("https://registry.example/v2/a/manifests/1");
        let tags = url("https://registry.example/v2/a/tags/list");
        assert_eq!(g.refusal(&blob, &url("https://cdn.example/x"), 1), None);
        assert_eq!(
            g.refusal(
                &manifest,
                &url("https://registry.example/v2/b/manifests/1"),
                1
            ),
            None,
            "same origin"
        );
        for (original, target) in [
            (&manifest, "https://cdn.example/m"),
            (&tags, "https://cdn.example/t"),
            (&blob, "http://cdn.example/x"),
            (&blob, "https://127.0.0.1/x"),
            (&blob, "https://169.254.169.254/latest/meta-data"),
            (&blob, "https://[::1]/x"),
            (&blob, "ftp://cdn.example/x"),
            (
                &url("https://registry.example/v2/a/blobs/uploads/1"),
                "https://cdn.example/x",
            ),
        ] {
            assert!(
                g.refusal(original, &url(target), 1).is_some(),
                "{original} -> {target}"
            );
        }
        assert!(
            g.refusal(&blob, &url("https://cdn.example/x"), MAX_HOPS + 1)
                .is_some()
        );
    }

    #[test]
    fn an_upstream_on_the_lan_may_redirect_on_the_lan() {
        let g = Guard::new(&url("http://10.0.0.5:5000"));
        let blob = url("http://10.0.0.5:5000/v2/a/blobs/sha256:aa");
        assert_eq!(g.refusal(&blob, &url("http://10.0.0.6:9000/b"), 1), None);
        let manifest = url("http://10.0.0.5:5000/v2/a/manifests/1");
        assert!(
            g.refusal(&manifest, &url("http://10.0.0.6:9000/m"), 1)
                .is_some()
        );
    }
}
