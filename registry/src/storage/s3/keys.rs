//! Where each fact lives in the bucket, under the configured prefix (see
//! `docs/storage.md`, "On object storage").
//!
//! The layout is the filesystem backend's, one object per fact, so that no two writers
//! ever read, change and write back the same object: a tag, a link, a revision, a
//! referrer record is each an object of its own. Keys are built only from validated
//! types ([`RepoName`], [`Tag`], [`Digest`], [`Uuid`]), as paths are on disk.

use object_store::path::Path;
use uuid::Uuid;

use crate::oci::{Digest, RepoName, Tag};

#[derive(Debug, Clone)]
pub struct Keys {
    /// The prefix with its trailing `/`, or empty.
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        let prefix = prefix.trim_matches('/');
        Keys {
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        }
    }

    fn key(&self, rest: &str) -> Path {
        Path::from(format!("{}{rest}", self.prefix))
    }

    /// The part of a listed key after the prefix.
    pub fn relative<'a>(&self, key: &'a Path) -> Option<&'a str> {
        key.as_ref().strip_prefix(self.prefix.as_str())
    }

    pub fn blobs(&self) -> Path {
        self.key("blobs")
    }

    pub fn blob(&self, d: &Digest) -> Path {
        let hex = d.hex();
        self.key(&format!("blobs/{}/{}/{hex}", d.algorithm(), &hex[..2]))
    }

    pub fn repositories(&self) -> Path {
        self.key("repositories")
    }

    fn repo(&self, repo: &RepoName) -> String {
        format!("repositories/{repo}")
    }

    pub fn layers(&self, repo: &RepoName) -> Path {
        self.key(&format!("{}/_layers", self.repo(repo)))
    }

    pub fn layer_link(&self, repo: &RepoName, d: &Digest) -> Path {
        self.key(&format!(
            "{}/_layers/{}/{}",
            self.repo(repo),
            d.algorithm(),
            d.hex()
        ))
    }

    pub fn manifests(&self, repo: &RepoName) -> Path {
        self.key(&format!("{}/_manifests", self.repo(repo)))
    }

    pub fn revisions(&self, repo: &RepoName) -> Path {
        self.key(&format!("{}/_manifests/revisions", self.repo(repo)))
    }

    /// The manifest's media type and bytes (one read answers a manifest GET).
    pub fn revision(&self, repo: &RepoName, d: &Digest) -> Path {
        self.key(&format!(
            "{}/_manifests/revisions/{}/{}",
            self.repo(repo),
            d.algorithm(),
            d.hex()
        ))
    }

    pub fn tags(&self, repo: &RepoName) -> Path {
        self.key(&format!("{}/_manifests/tags", self.repo(repo)))
    }

    pub fn tag(&self, repo: &RepoName, tag: &Tag) -> Path {
        self.key(&format!("{}/_manifests/tags/{tag}", self.repo(repo)))
    }

    pub fn all_referrers(&self, repo: &RepoName) -> Path {
        self.key(&format!("{}/_referrers", self.repo(repo)))
    }

    pub fn referrers(&self, repo: &RepoName, subject: &Digest) -> Path {
        self.key(&format!(
            "{}/_referrers/{}/{}",
            self.repo(repo),
            subject.algorithm(),
            subject.hex()
        ))
    }

    pub fn referrer(&self, repo: &RepoName, subject: &Digest, referrer: &Digest) -> Path {
        self.key(&format!(
            "{}/_referrers/{}/{}/{}-{}",
            self.repo(repo),
            subject.algorithm(),
            subject.hex(),
            referrer.algorithm(),
            referrer.hex()
        ))
    }

    /// The catalog index: one empty object per repository, named by it, so the sorted
    /// listing of this prefix is the catalog. Derived from `repositories/`, rebuilt by
    /// `sealer-registry index rebuild`.
    pub fn catalog(&self) -> Path {
        self.key("index/repositories")
    }

    pub fn catalog_entry(&self, repo: &str) -> Path {
        self.key(&format!("index/repositories/{repo}"))
    }

    pub fn quarantine(&self, d: &Digest) -> Path {
        self.key(&format!("quarantine/{}/{}", d.algorithm(), d.hex()))
    }

    pub fn uploads(&self) -> Path {
        self.key("uploads")
    }

    pub fn upload(&self, id: Uuid) -> Path {
        self.key(&format!("uploads/{}", id.hyphenated()))
    }

    pub fn upload_state(&self, id: Uuid) -> Path {
        self.key(&format!("uploads/{}/state.json", id.hyphenated()))
    }

    /// What the upload's data is when it is `offset` bytes long: its parts and the tail
    /// not yet in a part.
    pub fn upload_at(&self, id: Uuid, offset: u64) -> Path {
        self.key(&format!("uploads/{}/at/{offset:020}", id.hyphenated()))
    }

    /// The multipart upload's id, recorded before its first part is sent, so the
    /// janitor can always abort it.
    pub fn upload_multipart(&self, id: Uuid) -> Path {
        self.key(&format!("uploads/{}/multipart", id.hyphenated()))
    }

    /// Where the multipart upload assembles the data before it is copied to its blob.
    pub fn upload_data(&self, id: Uuid) -> Path {
        self.key(&format!("uploads/{}/data", id.hyphenated()))
    }

    /// The garbage collector's lease.
    pub fn gc_lease(&self) -> Path {
        self.key("leases/gc")
    }

    pub fn probe(&self, id: Uuid) -> Path {
        self.key(&format!("probe/{}", id.hyphenated()))
    }
}

/// The repository a key under `repositories/` belongs to (the components before the
/// first `_` directory), and what follows it.
pub fn split_repository(relative: &str) -> Option<(&str, &str)> {
    let rest = relative.strip_prefix("repositories/")?;
    let at = rest.find("/_")?;
    Some((&rest[..at], &rest[at + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_under_the_prefix_and_parse_back() {
        let k = Keys::new("/site/registry/");
        let d: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        let repo = RepoName::parse("docker.io/library/nginx").unwrap();
        assert_eq!(
            k.blob(&d).as_ref(),
            format!("site/registry/blobs/sha256/ab/{}", "ab".repeat(32))
        );
        let tag = k.tag(&repo, &Tag::parse("1.25").unwrap());
        assert_eq!(
            tag.as_ref(),
            "site/registry/repositories/docker.io/library/nginx/_manifests/tags/1.25"
        );
        let rel = k.relative(&tag).unwrap();
        assert_eq!(
            split_repository(rel),
            Some(("docker.io/library/nginx", "_manifests/tags/1.25"))
        );
        assert_eq!(Keys::new("").blobs().as_ref(), "blobs");
        // Offsets sort as numbers.
        let id = Uuid::nil();
        assert!(k.upload_at(id, 9).as_ref() < k.upload_at(id, 10).as_ref());
    }
}
