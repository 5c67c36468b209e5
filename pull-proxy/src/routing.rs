//! Which upstream a request for a mirrored name goes to (docs/design.md, contract 3).
//!
//! Three ways clients name an upstream image, all ending in the same local repository
//! `<host>/<repository>`:
//! - containerd: `GET /v2/library/nginx/manifests/1.25?ns=docker.io`;
//! - a mirror location with a path (podman, containerd `override_path`):
//!   `GET /v2/quay.io/org/x/manifests/1`;
//! - Docker's `registry-mirrors`: a bare `GET /v2/library/nginx/...`, always Docker Hub.

use sealer_registry::oci::RepoName;
use sealer_registry::oci::name::host_of_component;
use sealer_registry::services::mirror::MirrorRoute;

use crate::config::{MirrorConfig, Upstream, is_valid_host};
use sealer_registry::oci::docker_hub::HOST as DOCKER_HUB;

#[derive(Debug, Clone)]
pub struct Router {
    upstreams: Vec<Upstream>,
    allow_push: bool,
}

/// The registry host a name's first segment stands for, by Docker's rule (it has a dot
/// or a port, or is `localhost`), in the form the store writes it too (`host_port`);
/// `None` for an organisation.
fn host_segment(segment: &str) -> Option<String> {
    let host = host_of_component(segment);
    (host.contains('.') || host.contains(':') || host == "localhost").then(|| canonical(&host))
}

impl Router {
    pub fn new(config: &MirrorConfig) -> Router {
        Router {
            upstreams: config.upstreams.clone(),
            allow_push: config.allow_push,
        }
    }

    /// The configured entry serving `host`: its own, else `*`.
    pub fn upstream_for(&self, host: &str) -> Option<&Upstream> {
        self.upstreams
            .iter()
            .find(|u| u.host == host)
            .or_else(|| self.upstreams.iter().find(|u| u.host == "*"))
    }

    /// The upstream host a request names (by `ns` or a host first segment) and the
    /// repository there.
    fn named_host(name: &RepoName, ns: Option<&str>) -> (String, String) {
        match ns {
            Some(ns) => (canonical(ns), name.as_str().to_string()),
            None => match name.as_str().split_once('/') {
                Some((first, rest)) => match host_segment(first) {
                    Some(host) => (host, rest.to_string()),
                    None => (DOCKER_HUB.to_string(), name.as_str().to_string()),
                },
                None => (DOCKER_HUB.to_string(), name.as_str().to_string()),
            },
        }
    }

    pub fn route(&self, name: &RepoName, ns: Option<&str>) -> Option<MirrorRoute> {
        let (host, remote) = Self::named_host(name, ns);
        let upstream = self.upstream_for(&host)?;
        if upstream.host == "*" && !is_valid_host(&host) {
            tracing::warn!(
                host = %host,
                repository = %remote,
                "not a registry host (from ?ns= or the name): not mirrored, answering from the store"
            );
            return None;
        }
        // Docker Hub's official images live under `library/`.
        let remote = if host == DOCKER_HUB && !remote.contains('/') {
            format!("library/{remote}")
        } else {
            remote
        };
        let local = RepoName::for_image(&host, &remote).ok()?;
        Some(MirrorRoute {
            upstream: host,
            remote,
            local,
        })
    }

    /// A push naming a mirrored registry explicitly (by `ns` or a host first segment,
    /// `host_port` included) is refused unless `allow_push` is set. Bare names are
    /// ordinary local repositories for pushes.
    pub fn refuses_push(&self, name: &RepoName, ns: Option<&str>) -> bool {
        if self.allow_push {
            return false;
        }
        let host = match ns {
            Some(ns) => canonical(ns),
            None => match name
                .as_str()
                .split_once('/')
                .and_then(|(f, _)| host_segment(f))
            {
                Some(host) => host,
                None => return false,
            },
        };
        self.upstream_for(&host).is_some()
    }
}

/// A host lowercased, Docker Hub's aliases as `docker.io`.
fn canonical(host: &str) -> String {
    sealer_registry::oci::docker_hub::canonical(&host.to_ascii_lowercase()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MirrorArgs;

    fn router(upstreams: &[&str]) -> Router {
        let args = MirrorArgs {
            upstreams: upstreams.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        Router::new(&MirrorConfig::resolve(None, &args).unwrap())
    }

    fn route(r: &Router, name: &str, ns: Option<&str>) -> Option<(String, String, String)> {
        r.route(&RepoName::parse(name).unwrap(), ns)
            .map(|m| (m.upstream, m.remote, m.local.to_string()))
    }

    fn t(a: &str, b: &str, c: &str) -> Option<(String, String, String)> {
        Some((a.into(), b.into(), c.into()))
    }

    #[test]
    fn the_three_ways_of_naming_land_in_one_repository() {
        let r = router(&["docker.io", "quay.io"]);
        let expect = t("docker.io", "library/nginx", "docker.io/library/nginx");
        assert_eq!(route(&r, "library/nginx", Some("docker.io")), expect);
        assert_eq!(
            route(&r, "library/nginx", Some("registry-1.docker.io")),
            expect
        );
        assert_eq!(route(&r, "nginx", Some("docker.io")), expect);
        assert_eq!(route(&r, "docker.io/library/nginx", None), expect);
        assert_eq!(route(&r, "docker.io/nginx", None), expect);
        assert_eq!(route(&r, "library/nginx", None), expect);
        assert_eq!(
            route(&r, "org/x", Some("quay.io")),
            t("quay.io", "org/x", "quay.io/org/x")
        );
        assert_eq!(
            route(&r, "quay.io/org/x", None),
            t("quay.io", "org/x", "quay.io/org/x")
        );
    }

    #[test]
    fn only_configured_upstreams_are_routed() {
        let r = router(&["quay.io"]);
        assert_eq!(
            route(&r, "library/nginx", None),
            None,
            "docker.io is not configured"
        );
        assert_eq!(route(&r, "x/y", Some("ghcr.io")), None);
        let any = router(&["*"]);
        assert_eq!(
            route(&any, "x/y", Some("ghcr.io")),
            t("ghcr.io", "x/y", "ghcr.io/x/y")
        );
        assert_eq!(
            route(&any, "pause", Some("registry.k8s.io")),
            t("registry.k8s.io", "pause", "registry.k8s.io/pause")
        );
    }

    #[test]
    fn ports_become_part_of_the_name() {
        let r = router(&["*"]);
        assert_eq!(
            route(&r, "team/app", Some("my.registry:5000")),
            t("my.registry:5000", "team/app", "my.registry_5000/team/app")
        );
    }

    #[test]
    fn an_upstream_with_a_port_is_read_where_it_is_cached() {
        let r = router(&["registry.local:5000"]);
        let cached = t(
            "registry.local:5000",
            "team/app",
            "registry.local_5000/team/app",
        );
        assert_eq!(route(&r, "team/app", Some("registry.local:5000")), cached);
        // The path-prefixed form names the host as the store writes it.
        assert_eq!(route(&r, "registry.local_5000/team/app", None), cached);
        let name = |s| RepoName::parse(s).unwrap();
        assert!(r.refuses_push(&name("registry.local_5000/team/app"), None));
        assert!(r.refuses_push(&name("team/app"), Some("registry.local:5000")));
        assert!(!r.refuses_push(&name("my_org/app"), None));
    }

    #[test]
    fn ns_values_that_are_no_host_are_not_routed() {
        let any = router(&["*"]);
        for ns in [
            "a:b",
            "a:99999",
            "1.2.3.4.5",
            "u@evil.example",
            "a/b",
            "x y",
            "",
        ] {
            assert_eq!(route(&any, "x/y", Some(ns)), None, "{ns:?}");
        }
        assert!(route(&any, "x/y", Some("localhost:5000")).is_some());
        assert!(route(&any, "x/y", Some("10.0.0.1:443")).is_some());
    }

    #[test]
    fn pushes_to_named_mirrors_are_refused() {
        let r = router(&["docker.io", "quay.io"]);
        let name = |s| RepoName::parse(s).unwrap();
        assert!(r.refuses_push(&name("docker.io/library/app"), None));
        assert!(r.refuses_push(&name("library/app"), Some("docker.io")));
        assert!(r.refuses_push(&name("quay.io/org/x"), None));
        assert!(
            !r.refuses_push(&name("library/app"), None),
            "a bare push is local"
        );
        assert!(
            !r.refuses_push(&name("ghcr.io/x/y"), None),
            "not a mirrored registry"
        );
    }
}
