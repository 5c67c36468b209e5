//! Turning a `/v2/...` path into a route.
//!
//! Repository names have any number of segments, so the route is recognised from the end
//! of the path (`.../manifests/<ref>`, `.../blobs/uploads/<id>`, ...) and everything
//! before it is the name. Segments are percent-decoded; names, references and digests
//! are validated later by their own types.

use axum::http::Method;
use percent_encoding::percent_decode_str;

use crate::auth::Action;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    Manifest {
        name: String,
        reference: String,
    },
    Blob {
        name: String,
        digest: String,
    },
    /// `/v2/<name>/blobs/uploads/`
    UploadStart {
        name: String,
    },
    Upload {
        name: String,
        id: String,
    },
    Tags {
        name: String,
    },
    Referrers {
        name: String,
        digest: String,
    },
}

/// Which kind of endpoint a request hit, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Base,
    Catalog,
    Manifest,
    Blob,
    Upload,
    Tags,
    Referrers,
    Token,
    Health,
    Metrics,
    Other,
}

impl RouteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Base => "base",
            RouteKind::Catalog => "catalog",
            RouteKind::Manifest => "manifest",
            RouteKind::Blob => "blob",
            RouteKind::Upload => "blob_upload",
            RouteKind::Tags => "tags",
            RouteKind::Referrers => "referrers",
            RouteKind::Token => "token",
            RouteKind::Health => "healthz",
            RouteKind::Metrics => "metrics",
            RouteKind::Other => "other",
        }
    }
}

impl Route {
    /// The repository a request names and what it does to it (`None` for `/v2/` and the
    /// catalog): what sign-in, the policy and read-only mode look at.
    pub fn action(&self, method: &Method) -> Option<(&str, Action)> {
        Some(match self {
            Route::Base | Route::Catalog => return None,
            Route::Manifest { name, .. } if method == Method::PUT => (name, Action::Push),
            Route::Manifest { name, .. } | Route::Blob { name, .. } if method == Method::DELETE => {
                (name, Action::Delete)
            }
            Route::UploadStart { name } | Route::Upload { name, .. } => (name, Action::Push),
            Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::Tags { name }
            | Route::Referrers { name, .. } => (name, Action::Pull),
        })
    }

    pub fn kind(&self) -> RouteKind {
        match self {
            Route::Base => RouteKind::Base,
            Route::Catalog => RouteKind::Catalog,
            Route::Manifest { .. } => RouteKind::Manifest,
            Route::Blob { .. } => RouteKind::Blob,
            Route::UploadStart { .. } | Route::Upload { .. } => RouteKind::Upload,
            Route::Tags { .. } => RouteKind::Tags,
            Route::Referrers { .. } => RouteKind::Referrers,
        }
    }

    /// Parses the request path; `None` when it is not a distribution API path.
    pub fn parse(path: &str) -> Option<Route> {
        let rest = path.strip_prefix("/v2")?;
        if rest.is_empty() || rest == "/" {
            return Some(Route::Base);
        }
        let rest = rest.strip_prefix('/')?;
        let trailing_slash = rest.ends_with('/');
        let mut segs: Vec<String> = rest
            .trim_end_matches('/')
            .split('/')
            .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        if segs.len() == 1 && segs[0] == "_catalog" && !trailing_slash {
            return Some(Route::Catalog);
        }
        let n = segs.len();
        let name_of = |segs: &mut Vec<String>, k: usize| -> Option<String> {
            if n <= k {
                return None;
            }
            segs.truncate(n - k);
            Some(segs.join("/"))
        };

        if trailing_slash {
            // Only the upload start has a meaningful trailing slash.
            return if n >= 3 && ends_with(&segs, &["blobs", "uploads"]) {
                Some(Route::UploadStart {
                    name: name_of(&mut segs, 2)?,
                })
            } else {
                None
            };
        }
        if n >= 3 && ends_with(&segs, &["blobs", "uploads"]) {
            return Some(Route::UploadStart {
                name: name_of(&mut segs, 2)?,
            });
        }
        if n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
            let id = segs[n - 1].clone();
            return Some(Route::Upload {
                name: name_of(&mut segs, 3)?,
                id,
            });
        }
        if n >= 3 && ends_with(&segs, &["tags", "list"]) {
            return Some(Route::Tags {
                name: name_of(&mut segs, 2)?,
            });
        }
        if n >= 3 {
            let last = segs[n - 1].clone();
            match segs[n - 2].as_str() {
                "manifests" => {
                    return Some(Route::Manifest {
                        name: name_of(&mut segs, 2)?,
                        reference: last,
                    });
                }
                "blobs" => {
                    return Some(Route::Blob {
                        name: name_of(&mut segs, 2)?,
                        digest: last,
                    });
                }
                "referrers" => {
                    return Some(Route::Referrers {
                        name: name_of(&mut segs, 2)?,
                        digest: last,
                    });
                }
                _ => {}
            }
        }
        None
    }
}

fn ends_with(segs: &[String], tail: &[&str]) -> bool {
    segs.len() >= tail.len()
        && segs[segs.len() - tail.len()..]
            .iter()
            .zip(tail)
            .all(|(a, b)| a == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> String {
        x.to_string()
    }

    #[test]
    fn recognises_every_endpoint_at_any_depth() {
        assert_eq!(Route::parse("/v2/"), Some(Route::Base));
        assert_eq!(Route::parse("/v2"), Some(Route::Base));
        assert_eq!(Route::parse("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(
            Route::parse("/v2/a/b/c/manifests/latest"),
            Some(Route::Manifest {
                name: s("a/b/c"),
                reference: s("latest")
            })
        );
        assert_eq!(
            Route::parse("/v2/x/blobs/sha256%3Aab"),
            Some(Route::Blob {
                name: s("x"),
                digest: s("sha256:ab")
            })
        );
        assert_eq!(
            Route::parse("/v2/docker.io/library/nginx/blobs/uploads/"),
            Some(Route::UploadStart {
                name: s("docker.io/library/nginx")
            })
        );
        assert_eq!(
            Route::parse("/v2/x/blobs/uploads"),
            Some(Route::UploadStart { name: s("x") })
        );
        assert_eq!(
            Route::parse("/v2/x/y/blobs/uploads/abc"),
            Some(Route::Upload {
                name: s("x/y"),
                id: s("abc")
            })
        );
        assert_eq!(
            Route::parse("/v2/x/tags/list"),
            Some(Route::Tags { name: s("x") })
        );
        assert_eq!(
            Route::parse("/v2/x/referrers/sha256:1"),
            Some(Route::Referrers {
                name: s("x"),
                digest: s("sha256:1")
            })
        );
        // A repository may itself be called "manifests" or "blobs".
        assert_eq!(
            Route::parse("/v2/manifests/manifests/v1"),
            Some(Route::Manifest {
                name: s("manifests"),
                reference: s("v1")
            })
        );
        assert_eq!(
            Route::parse("/v2/a/blobs/blobs/sha256:1"),
            Some(Route::Blob {
                name: s("a/blobs"),
                digest: s("sha256:1")
            })
        );
    }

    #[test]
    fn rejects_what_is_not_an_endpoint() {
        for p in [
            "/v1/",
            "/v2/x",
            "/v2/x/manifests",
            "/v2/manifests/latest",
            "/v2/x/unknown/y",
            "/v2x/",
        ] {
            assert_eq!(Route::parse(p), None, "{p}");
        }
    }
}
