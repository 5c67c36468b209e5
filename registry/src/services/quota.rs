//! What one repository and one user may hold: the repository quota (linked blobs,
//! manifests and the bytes of open upload sessions) and the number of open upload
//! sessions per repository and per user.
//!
//! A quota check and the link it allows run under one lock per repository, so
//! concurrent pushes cannot each see room that only one of them may take.

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;
use serde_json::json;
use tokio::sync::{Mutex, OwnedMutexGuard};
use uuid::Uuid;

use super::error::{ErrorCode, Result, ServiceError};
use crate::oci::RepoName;
use crate::storage::Storage;

/// Bounds on open upload sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    pub per_repository: usize,
    pub per_user: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            per_repository: 100,
            per_user: 1000,
        }
    }
}

/// An open upload session as counted here.
struct Open {
    repo: RepoName,
    user: Option<String>,
    bytes: u64,
}

#[derive(Default)]
struct Counts {
    sessions: HashMap<Uuid, Open>,
    per_repo: HashMap<RepoName, (usize, u64)>,
    per_user: HashMap<String, usize>,
}

pub struct Quotas {
    storage: Arc<dyn Storage>,
    /// Most bytes one repository may hold.
    quota: Option<u64>,
    limits: SessionLimits,
    locks: DashMap<RepoName, Arc<Mutex<()>>>,
    counts: std::sync::Mutex<Counts>,
}

impl Quotas {
    pub fn new(storage: Arc<dyn Storage>, quota: Option<u64>, limits: SessionLimits) -> Quotas {
        Quotas {
            storage,
            quota,
            limits,
            locks: DashMap::new(),
            counts: std::sync::Mutex::default(),
        }
    }

    /// The repository's lock: hold it from a quota check until the link is made.
    pub async fn lock(&self, repo: &RepoName) -> OwnedMutexGuard<()> {
        let lock = self.locks.entry(repo.clone()).or_default().clone();
        lock.lock_owned().await
    }

    /// Counts a new session, or refuses it (429 TOOMANYREQUESTS) when its repository
    /// or its user has too many open.
    pub fn open(&self, id: Uuid, repo: &RepoName, user: Option<&str>) -> Result<()> {
        let mut c = self.counts.lock().expect("quota counts");
        let in_repo = c.per_repo.get(repo).map_or(0, |r| r.0);
        if in_repo >= self.limits.per_repository {
            return Err(too_many(format!(
                "{repo} has {in_repo} upload sessions open, the most allowed: finish or cancel some first"
            )));
        }
        if let Some(user) = user {
            let mine = c.per_user.get(user).copied().unwrap_or(0);
            if mine >= self.limits.per_user {
                return Err(too_many(format!(
                    "{user} has {mine} upload sessions open, the most allowed: finish or cancel some first"
                )));
            }
            *c.per_user.entry(user.to_string()).or_default() += 1;
        }
        c.per_repo.entry(repo.clone()).or_default().0 += 1;
        c.sessions.insert(
            id,
            Open {
                repo: repo.clone(),
                user: user.map(str::to_string),
                bytes: 0,
            },
        );
        Ok(())
    }

    /// Counts a session found in storage at start (its user is not known).
    pub fn recovered(&self, id: Uuid, repo: &RepoName, bytes: u64) {
        let mut c = self.counts.lock().expect("quota counts");
        let r = c.per_repo.entry(repo.clone()).or_default();
        r.0 += 1;
        r.1 += bytes;
        c.sessions.insert(
            id,
            Open {
                repo: repo.clone(),
                user: None,
                bytes,
            },
        );
    }

    /// Records that a session now holds `bytes`.
    pub fn grew(&self, id: Uuid, bytes: u64) {
        let mut c = self.counts.lock().expect("quota counts");
        let Some(open) = c.sessions.get_mut(&id) else {
            return;
        };
        let before = std::mem::replace(&mut open.bytes, bytes);
        let repo = open.repo.clone();
        if let Some(r) = c.per_repo.get_mut(&repo) {
            r.1 = r.1 - before.min(r.1) + bytes;
        }
    }

    /// Stops counting a session (finished, cancelled or expired).
    pub fn closed(&self, id: Uuid) {
        let mut c = self.counts.lock().expect("quota counts");
        let Some(open) = c.sessions.remove(&id) else {
            return;
        };
        if let Some(r) = c.per_repo.get_mut(&open.repo) {
            r.0 -= 1;
            r.1 -= open.bytes.min(r.1);
            if r.0 == 0 {
                c.per_repo.remove(&open.repo);
            }
        }
        if let Some(user) = open.user {
            if let Some(n) = c.per_user.get_mut(&user) {
                *n -= 1;
                if *n == 0 {
                    c.per_user.remove(&user);
                }
            }
        }
    }

    /// Bytes of the repository's open sessions other than `except`.
    fn pending(&self, repo: &RepoName, except: Option<Uuid>) -> u64 {
        let c = self.counts.lock().expect("quota counts");
        let all = c.per_repo.get(repo).map_or(0, |r| r.1);
        let own = except
            .and_then(|id| c.sessions.get(&id))
            .map_or(0, |o| o.bytes);
        all - own.min(all)
    }

    /// How many more bytes an upload to `repo` may receive before the repository is
    /// over its quota; `None` without a quota.
    pub async fn room_for_upload(&self, repo: &RepoName) -> Result<Option<u64>> {
        let Some(quota) = self.quota else {
            return Ok(None);
        };
        let used = self.storage.repo_usage(repo).await? + self.pending(repo, None);
        Ok(Some(quota.saturating_sub(used)))
    }

    /// Refuses to add `size` bytes of new content to `repo` beyond its quota (DENIED, as
    /// the spec has no code of its own for it). Call it holding [`Self::lock`];
    /// `session` is the upload being completed, whose bytes become this content.
    pub async fn check(&self, repo: &RepoName, size: u64, session: Option<Uuid>) -> Result<()> {
        let Some(quota) = self.quota else {
            return Ok(());
        };
        let used = self.storage.repo_usage(repo).await? + self.pending(repo, session);
        if used.saturating_add(size) > quota {
            return Err(over_quota(repo, used, size, quota));
        }
        Ok(())
    }
}

pub fn over_quota(repo: &RepoName, used: u64, size: u64, quota: u64) -> ServiceError {
    ServiceError::new(
        ErrorCode::Denied,
        format!(
            "repository {repo} is over its quota: {used} bytes used, {size} more asked, {quota} allowed"
        ),
    )
    .with_detail(json!({ "used": used, "size": size, "quota": quota }))
}

fn too_many(message: String) -> ServiceError {
    ServiceError::new(ErrorCode::TooManyRequests, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::fs::FsStorage;

    #[tokio::test]
    async fn sessions_are_capped_per_repository_and_user_and_their_bytes_count() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(FsStorage::open(dir.path()).unwrap());
        let limits = SessionLimits {
            per_repository: 2,
            per_user: 3,
        };
        let q = Quotas::new(storage, Some(100), limits);
        let (a, b) = (RepoName::parse("a").unwrap(), RepoName::parse("b").unwrap());
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
        q.open(ids[0], &a, Some("u")).unwrap();
        q.open(ids[1], &a, Some("u")).unwrap();
        let e = q.open(ids[2], &a, Some("v")).unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::TooManyRequests));
        q.open(ids[2], &b, Some("u")).unwrap();
        let e = q.open(ids[3], &b, Some("u")).unwrap_err();
        assert!(e.to_string().contains("u has 3 upload sessions"), "{e}");

        q.grew(ids[0], 60);
        assert_eq!(q.room_for_upload(&a).await.unwrap(), Some(40));
        assert!(
            q.check(&a, 50, Some(ids[1])).await.is_err(),
            "60 pending + 50"
        );
        assert!(q.check(&a, 60, Some(ids[0])).await.is_ok(), "its own bytes");
        q.closed(ids[0]);
        q.closed(ids[0]);
        assert_eq!(q.room_for_upload(&a).await.unwrap(), Some(100));
        q.open(ids[3], &a, Some("w")).unwrap();
    }
}
