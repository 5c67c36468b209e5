//! Repository names and tags, validated against the distribution spec's grammar.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

static NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$")
        .expect("name grammar")
});
static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$").expect("tag grammar"));

/// Longest accepted repository name. Clients limit `host[:port]/name` to 255 characters.
pub const MAX_NAME_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("repository name is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    #[error(
        "invalid repository name: components are lowercase letters and digits separated by \
         '.', '_', '__' or '-', joined by '/'"
    )]
    Grammar,
}

/// A repository name such as `docker.io/library/nginx`. Every component matches
/// `[a-z0-9]+(separator[a-z0-9]+)*`, so none can be empty, `.`, `..` or start with `_`:
/// joined with `/` it is a safe relative path that never collides with the store's
/// own `_`-prefixed directories.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(Box<str>);

/// The local repository component for a registry host: lowercase, with a port written
/// `host_port` (repository names cannot hold `:`; DNS names cannot hold `_`, so this never
/// collides with a real host).
pub fn host_component(host: &str) -> String {
    host.to_ascii_lowercase().replacen(':', "_", 1)
}

/// The registry host a local repository's first component stands for: the inverse of
/// [`host_component`] (`registry.local_5000` → `registry.local:5000`). A component
/// without a `_port` ending is returned as it is.
pub fn host_of_component(component: &str) -> String {
    match component.rsplit_once('_') {
        Some((host, port))
            if !host.is_empty() && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            format!("{host}:{port}")
        }
        _ => component.to_string(),
    }
}

impl RepoName {
    pub fn parse(s: &str) -> Result<RepoName, NameError> {
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        if !NAME.is_match(s) {
            return Err(NameError::Grammar);
        }
        Ok(RepoName(s.into()))
    }

    /// Where the store keeps an image of `host` (`docker.io`, `127.0.0.1:5000`) named
    /// `path` there (`library/nginx`): `docker.io/library/nginx`, `127.0.0.1_5000/app`.
    pub fn for_image(host: &str, path: &str) -> Result<RepoName, NameError> {
        RepoName::parse(&format!("{}/{path}", host_component(host)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`. It cannot start with `.`, so it is a safe
/// file name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(Box<str>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tag {0:?}: a tag matches [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
pub struct TagError(pub String);

impl Tag {
    pub fn parse(s: &str) -> Result<Tag, TagError> {
        if TAG.is_match(s) {
            Ok(Tag(s.into()))
        } else {
            Err(TagError(s.chars().take(200).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_of_any_depth() {
        for ok in [
            "a",
            "library/nginx",
            "docker.io/library/nginx",
            "quay.io/org/team/sub/app",
            "a__b/c-d/e.f/g---h",
            "registry.k8s.io/pause",
            "127.0.0.1/x",
        ] {
            assert!(RepoName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "",
            "Upper/case",
            "a/../b",
            "..",
            "a/./b",
            "/abs",
            "a//b",
            "a/",
            "_a",
            "a/_manifests",
            "a___b",
            "a.-b",
            "a b",
            "a:5000/b",
        ] {
            assert_eq!(RepoName::parse(bad), Err(NameError::Grammar), "{bad:?}");
        }
        let long = format!("{}/b", "a".repeat(254));
        assert_eq!(RepoName::parse(&long), Err(NameError::TooLong));
        assert!(RepoName::parse(&"a".repeat(255)).is_ok());
    }

    #[test]
    fn tags_follow_the_grammar() {
        for ok in ["latest", "1.25", "v1.0.0-rc_1", "_x", "A", &"a".repeat(128)] {
            assert!(Tag::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "a:b",
            "..",
            &"a".repeat(129),
            "sha256:abc",
        ] {
            assert!(Tag::parse(bad).is_err(), "{bad}");
        }
    }
}
