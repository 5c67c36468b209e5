//! Where each kind of object lives under the store's root (see `docs/storage.md`).
//!
//! Paths are built only from validated types: a [`RepoName`]'s components, a [`Tag`] and
//! a [`Digest`]'s algorithm and lowercase hex can never be empty, `.`, `..`, absolute or
//! start with `_`, so no request can name a path outside its place.

use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::oci::{Digest, RepoName, Tag};

#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Scratch files for atomic writes; on the same filesystem as everything else so a
    /// rename can publish them.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn blob(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
    }

    pub fn repositories(&self) -> PathBuf {
        self.root.join("repositories")
    }

    pub fn repo(&self, repo: &RepoName) -> PathBuf {
        let mut p = self.repositories();
        p.extend(repo.components());
        p
    }

    pub fn layer_link(&self, repo: &RepoName, d: &Digest) -> PathBuf {
        self.repo(repo)
            .join("_layers")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    pub fn manifests_dir(&self, repo: &RepoName) -> PathBuf {
        self.repo(repo).join("_manifests")
    }

    pub fn revision(&self, repo: &RepoName, d: &Digest) -> PathBuf {
        self.manifests_dir(repo)
            .join("revisions")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    pub fn tags_dir(&self, repo: &RepoName) -> PathBuf {
        self.manifests_dir(repo).join("tags")
    }

    pub fn tag(&self, repo: &RepoName, tag: &Tag) -> PathBuf {
        self.tags_dir(repo).join(tag.as_str())
    }

    pub fn referrers_dir(&self, repo: &RepoName, subject: &Digest) -> PathBuf {
        self.repo(repo)
            .join("_referrers")
            .join(subject.algorithm().as_str())
            .join(subject.hex())
    }

    pub fn referrer(&self, repo: &RepoName, subject: &Digest, referrer: &Digest) -> PathBuf {
        self.referrers_dir(repo, subject).join(format!(
            "{}-{}",
            referrer.algorithm(),
            referrer.hex()
        ))
    }

    /// Where `check --quarantine` moves blobs whose content does not match their digest.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.root.join("quarantine")
    }

    pub fn uploads_dir(&self) -> PathBuf {
        self.root.join("uploads")
    }

    pub fn upload_dir(&self, id: Uuid) -> PathBuf {
        self.uploads_dir().join(id.hyphenated().to_string())
    }

    pub fn upload_data(&self, id: Uuid) -> PathBuf {
        self.upload_dir(id).join("data")
    }

    pub fn upload_state(&self, id: Uuid) -> PathBuf {
        self.upload_dir(id).join("state.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_their_place() {
        let l = Layout::new("/r");
        let d: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        let repo = RepoName::parse("docker.io/library/nginx").unwrap();
        assert_eq!(
            l.blob(&d),
            Path::new("/r/blobs/sha256/ab").join("ab".repeat(32))
        );
        assert_eq!(
            l.layer_link(&repo, &d),
            Path::new("/r/repositories/docker.io/library/nginx/_layers/sha256")
                .join("ab".repeat(32))
        );
        assert_eq!(
            l.tag(&repo, &Tag::parse("1.25").unwrap()),
            Path::new("/r/repositories/docker.io/library/nginx/_manifests/tags/1.25")
        );
    }
}
