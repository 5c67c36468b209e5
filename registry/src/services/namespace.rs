//! Which local repositories a read request may be answered from (DESIGN contract 3).
//!
//! Cached images live under their fully qualified names (`docker.io/library/nginx`).
//! Mirror clients name them differently: containerd sends `library/nginx?ns=docker.io`,
//! dockerd's `registry-mirrors` sends a bare `library/nginx`. Images pushed under short
//! names stay reachable too, so each request has an ordered list of candidates.

use crate::oci::RepoName;

pub const DOCKER_HUB: &str = "docker.io";

/// The canonical registry host for a namespace given in `?ns=`.
pub fn canonical_host(ns: &str) -> &str {
    match ns {
        "registry-1.docker.io" | "index.docker.io" => DOCKER_HUB,
        other => other,
    }
}

/// Local repositories to look in, in order, for `name` requested with `ns`:
/// - with `ns=H`: `H/name`, then `name`;
/// - without: `name`, then `docker.io/name`.
///
/// For Docker Hub a one-segment name gains its implicit `library/`.
pub fn candidates(name: &RepoName, ns: Option<&str>) -> Vec<RepoName> {
    let qualify = |host: &str| -> Option<RepoName> {
        let path = if host == DOCKER_HUB && !name.as_str().contains('/') {
            format!("{host}/library/{name}")
        } else {
            format!("{host}/{name}")
        };
        RepoName::parse(&path).ok()
    };
    let mut out = Vec::with_capacity(2);
    match ns.map(canonical_host) {
        Some(host) => {
            out.extend(qualify(host));
            out.push(name.clone());
        }
        None => {
            out.push(name.clone());
            out.extend(qualify(DOCKER_HUB));
        }
    }
    out.dedup();
    out
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
            names(candidates(&n, Some("docker.io"))),
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
        // A host with a port cannot be part of a repository name; only the name remains.
        assert_eq!(names(candidates(&p, Some("localhost:5000"))), ["pause"]);
    }
}
