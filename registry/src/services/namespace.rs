//! Which local repositories a read request may be answered from (docs/design.md, contract 3).
//!
//! Cached images live under their fully qualified names (`docker.io/library/nginx`).
//! Mirror clients name them differently: containerd sends `library/nginx?ns=docker.io`,
//! dockerd's `registry-mirrors` sends a bare `library/nginx`. Images pushed under short
//! names stay reachable too, so each request has an ordered list of candidates.

use crate::oci::RepoName;

pub use crate::oci::docker_hub::HOST as DOCKER_HUB;

/// The canonical registry host for a namespace given in `?ns=`.
pub fn canonical_host(ns: &str) -> &str {
    crate::oci::docker_hub::canonical(ns)
}

/// Local repositories to look in, in order, for `name` requested with `ns` from a
/// registry that does not mirror `ns` (a mirrored `ns` is looked up only under its
/// host: see [`crate::services::Registry::lookup`]):
/// - with `ns=H`: `H/name`, then `name`;
/// - without: `name`, then `docker.io/name`.
///
/// For Docker Hub a one-segment name gains its implicit `library/`; a host with a port
/// is stored as `host_port` ([`RepoName::for_image`]).
pub fn candidates(name: &RepoName, ns: Option<&str>) -> Vec<RepoName> {
    let mut out = Vec::with_capacity(2);
    match ns.map(canonical_host) {
        Some(host) => {
            out.extend(qualified(host, name));
            out.push(name.clone());
        }
        None => {
            out.push(name.clone());
            out.extend(qualified(DOCKER_HUB, name));
        }
    }
    out.dedup();
    out
}

/// Where the store keeps `name` of registry `host`: `docker.io/library/nginx` for
/// Docker Hub's `nginx`, `registry.local_5000/team/app` for `registry.local:5000`.
pub fn qualified(host: &str, name: &RepoName) -> Option<RepoName> {
    if host == DOCKER_HUB && !name.as_str().contains('/') {
        RepoName::for_image(host, &format!("library/{name}")).ok()
    } else {
        RepoName::for_image(host, name.as_str()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: Vec<RepoName>) -> Vec<String> {
        v.into_iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn orders_candidates_per_contract() {
        let n = RepoName::parse("library/nginx").unwrap();
        assert_eq!(
            names(candidates(&n, Some(DOCKER_HUB))),
            ["docker.io/library/nginx", "library/nginx"]
        );
        assert_eq!(
            names(candidates(&n, Some("registry-1.docker.io"))),
            ["docker.io/library/nginx", "library/nginx"]
        );
        assert_eq!(
            names(candidates(&n, None)),
            ["library/nginx", "docker.io/library/nginx"]
        );
        let p = RepoName::parse("pause").unwrap();
        assert_eq!(
            names(candidates(&p, Some("registry.k8s.io"))),
            ["registry.k8s.io/pause", "pause"]
        );
        assert_eq!(
            names(candidates(&p, None)),
            ["pause", "docker.io/library/pause"]
        );
        // A host with a port is stored as `host_port`, as the mirror caches it.
        assert_eq!(
            names(candidates(&p, Some("localhost:5000"))),
            ["localhost_5000/pause", "pause"]
        );
        assert_eq!(
            names(candidates(&p, Some("registry.local:5000"))),
            ["registry.local_5000/pause", "pause"]
        );
        // Not a host at all: only the name remains.
        assert_eq!(names(candidates(&p, Some("a b"))), ["pause"]);
    }
}
