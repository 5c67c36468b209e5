//! Pushing, pulling and deleting manifests and tags.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;

use super::Gate;
use super::error::{ErrorCode, Result, ServiceError};
use super::mirror::Mirror;
use super::quota::Quotas;
use super::{Lookup, Options};
use crate::oci::manifest::{self, ManifestKind, media_type};
use crate::oci::{Algorithm, Digest, Reference, RepoName, Tag};
use crate::storage::{ReferrerRecord, Storage, StorageError, StoredManifest};

pub struct ManifestService {
    storage: Arc<dyn Storage>,
    options: Options,
    mirror: Option<Arc<dyn Mirror>>,
    gate: Gate,
    quotas: Arc<Quotas>,
}

/// What a successful push stored.
#[derive(Debug)]
pub struct Pushed {
    pub digest: Digest,
    pub subject: Option<Digest>,
    pub tags: Vec<Tag>,
}

/// The media types a client accepts, from all its `Accept` headers.
#[derive(Debug, Default, Clone)]
pub struct Accept(pub Vec<String>);

impl Accept {
    fn allows(&self, mt: &str) -> bool {
        self.0.is_empty()
            || self
                .0
                .iter()
                .any(|a| a == mt || a == "*/*" || a == "application/*")
    }
}

impl ManifestService {
    pub fn new(
        storage: Arc<dyn Storage>,
        options: Options,
        mirror: Option<Arc<dyn Mirror>>,
        gate: Gate,
        quotas: Arc<Quotas>,
    ) -> Self {
        ManifestService {
            storage,
            options,
            mirror,
            gate,
            quotas,
        }
    }

    /// The manifest `reference` names, negotiated against `accept`: from the first local
    /// repository of `lookup` that has it, else from upstream for a mirrored name. A
    /// cached tag of a mirrored name is revalidated upstream once it is older than the
    /// mirror's TTL.
    ///
    /// The stored bytes are returned as pushed. The one substitution is for clients that
    /// cannot read an index at all (no index type and no wildcard in `Accept`): they get
    /// the index's entry for this host's platform, as distribution does for old dockers.
    pub async fn get(
        &self,
        lookup: &Lookup,
        reference: &Reference,
        accept: &Accept,
    ) -> Result<StoredManifest> {
        let mirror = self.mirror.as_ref().zip(lookup.mirror.as_ref());
        for repo in &lookup.local {
            let found = match reference {
                Reference::Digest(d) => self.storage.get_manifest(repo, d).await?,
                Reference::Tag(t) => self.storage.get_tagged_manifest(repo, t).await?,
            };
            let Some(mut stored) = found else { continue };
            if let Some((mirror, route)) = mirror.filter(|(_, r)| &r.local == repo) {
                mirror.hit(route, "manifest");
            }
            if let (Reference::Tag(tag), Some((mirror, route))) = (reference, mirror) {
                if &route.local == repo && !mirror.tag_is_fresh(route, tag) {
                    let now = mirror.revalidate_tag(route, tag, &stored.digest).await?;
                    if now != stored.digest {
                        if let Some(newer) = self.storage.get_manifest(repo, &now).await? {
                            stored = newer;
                        }
                    }
                }
            }
            return self.negotiate(repo, stored, accept).await;
        }
        if let Some((mirror, route)) = mirror {
            if let Some(digest) = mirror.fetch_manifest(route, reference).await? {
                if let Some(stored) = self.storage.get_manifest(&route.local, &digest).await? {
                    return self.negotiate(&route.local, stored, accept).await;
                }
            }
        }
        Err(ServiceError::manifest_unknown(reference))
    }

    async fn negotiate(
        &self,
        repo: &RepoName,
        stored: StoredManifest,
        accept: &Accept,
    ) -> Result<StoredManifest> {
        let is_index = ManifestKind::of_media_type(manifest::essence(&stored.media_type))
            == Some(ManifestKind::Index);
        if !is_index || accept.allows(manifest::essence(&stored.media_type)) {
            return Ok(stored);
        }
        let wants_image = [media_type::OCI_MANIFEST, media_type::DOCKER_MANIFEST]
            .iter()
            .any(|mt| accept.0.iter().any(|a| a == mt));
        if wants_image {
            if let Some(child) = self.platform_child(repo, &stored).await? {
                return Ok(child);
            }
        }
        Ok(stored)
    }

    async fn platform_child(
        &self,
        repo: &RepoName,
        index: &StoredManifest,
    ) -> Result<Option<StoredManifest>> {
        let Ok(ix) = serde_json::from_slice::<oci_spec::image::ImageIndex>(&index.body) else {
            return Ok(None);
        };
        let arch = host_architecture();
        for m in ix.manifests() {
            let Some(p) = m.platform() else { continue };
            if p.os().to_string() != "linux" || p.architecture().to_string() != arch {
                continue;
            }
            let Ok(d) = m.digest().to_string().parse::<Digest>() else {
                continue;
            };
            if let Some(child) = self.storage.get_manifest(repo, &d).await? {
                return Ok(Some(child));
            }
        }
        Ok(None)
    }

    /// Stores a pushed manifest under `reference` plus any extra `tags` (`?tag=`).
    pub async fn put(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
        extra_tags: Vec<Tag>,
    ) -> Result<Pushed> {
        if body.len() > self.options.max_manifest_bytes {
            return Err(too_large(self.options.max_manifest_bytes));
        }
        let digest = match reference {
            Reference::Digest(expected) => {
                let actual = Digest::of(expected.algorithm(), &body);
                if &actual != expected {
                    return Err(ServiceError::new(
                        ErrorCode::DigestInvalid,
                        "manifest digest did not match the digest in the URL",
                    )
                    .with_detail(
                        json!({ "expected": expected.to_string(), "received": actual.to_string() }),
                    ));
                }
                actual
            }
            Reference::Tag(_) => Digest::of(Algorithm::Sha256, &body),
        };
        let parsed = manifest::parse(content_type, &body)?;
        // Checked and stored with no garbage collection in between.
        let _commit = self.gate.read().await;
        self.check_references(repo, &parsed).await?;

        let stored_type = parsed.served_type(content_type).to_string();
        let size = body.len() as u64;
        // Manifests count against the quota like blobs.
        let _repo = self.quotas.lock(repo).await;
        if self.storage.get_manifest(repo, &digest).await?.is_none() {
            self.quotas.check(repo, size, None).await?;
        }
        ingest(
            &*self.storage,
            repo,
            &digest,
            &stored_type,
            body,
            Some(&parsed),
        )
        .await?;

        let mut tags = extra_tags;
        if let Reference::Tag(t) = reference {
            tags.insert(0, t.clone());
        }
        tags.dedup();
        for tag in &tags {
            self.storage.set_tag(repo, tag, &digest).await?;
        }
        Ok(Pushed {
            digest,
            subject: parsed.subject,
            tags,
        })
    }

    /// Every blob of an image manifest must be in the repository (non-distributable
    /// layers excepted), with the size the manifest claims. An index's manifests must be
    /// present only with `strict_indexes`; otherwise a sparse index is accepted. A
    /// missing `subject` is always accepted.
    async fn check_references(
        &self,
        repo: &RepoName,
        parsed: &manifest::ParsedManifest,
    ) -> Result<()> {
        // Each descriptor once: a manifest may list one layer thousands of times.
        let mut checked = std::collections::HashSet::new();
        for blob in parsed.blobs.iter().filter(|b| !b.foreign) {
            if !checked.insert((&blob.digest, blob.size)) {
                continue;
            }
            match self.storage.repo_blob_size(repo, &blob.digest).await? {
                None => {
                    return Err(ServiceError::new(
                        ErrorCode::ManifestBlobUnknown,
                        "manifest references a blob unknown to this repository",
                    )
                    .with_detail(json!({ "digest": blob.digest.to_string() })));
                }
                Some(size) if size != blob.size => {
                    return Err(ServiceError::new(
                        ErrorCode::ManifestInvalid,
                        format!(
                            "descriptor of {} gives size {} but the blob is {size} bytes",
                            blob.digest, blob.size
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        if self.options.strict_indexes {
            let mut checked = std::collections::HashSet::new();
            for m in parsed
                .manifests
                .iter()
                .filter(|m| checked.insert(&m.digest))
            {
                if !self.storage.has_manifest(repo, &m.digest).await? {
                    return Err(ServiceError::new(
                        ErrorCode::ManifestBlobUnknown,
                        "index references a manifest unknown to this repository",
                    )
                    .with_detail(json!({ "digest": m.digest.to_string() })));
                }
            }
        }
        Ok(())
    }

    /// Deletes a tag, or a manifest with every tag pointing at it and its referrer entry.
    pub async fn delete(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        if !self.options.delete_enabled {
            return Err(ServiceError::unsupported(
                "deletes are disabled on this registry",
            ));
        }
        match reference {
            Reference::Tag(t) => {
                if self.storage.delete_tag(repo, t).await? {
                    Ok(())
                } else {
                    Err(ServiceError::manifest_unknown(reference))
                }
            }
            Reference::Digest(d) => {
                let stored = self
                    .storage
                    .get_manifest(repo, d)
                    .await?
                    .ok_or_else(|| ServiceError::manifest_unknown(reference))?;
                let (tags, _) = self
                    .storage
                    .list_tags(repo, None, usize::MAX)
                    .await?
                    .unwrap_or_default();
                for tag in tags {
                    let Ok(tag) = Tag::parse(&tag) else { continue };
                    if self.storage.resolve_tag(repo, &tag).await?.as_ref() == Some(d) {
                        self.storage.delete_tag(repo, &tag).await?;
                    }
                }
                remove(&*self.storage, repo, &stored).await?;
                Ok(())
            }
        }
    }
}

/// Stores a manifest exactly as given and, when it names a subject, its referrer record.
/// Every way a manifest comes in (a push, a mirror fill, a pull or bundle load into the
/// local store) goes through here, so the referrers API answers the same whatever
/// brought it. `parsed` is the manifest read already, if the caller read it; a manifest
/// that does not parse is stored without a record (a push never gets this far with one).
pub async fn ingest(
    storage: &dyn Storage,
    repo: &RepoName,
    digest: &Digest,
    media_type: &str,
    body: Bytes,
    parsed: Option<&manifest::ParsedManifest>,
) -> std::result::Result<(), StorageError> {
    let size = body.len() as u64;
    let read;
    let parsed = match parsed {
        Some(p) => Some(p),
        None => {
            read = manifest::parse(Some(media_type), &body).ok();
            read.as_ref()
        }
    };
    storage.put_manifest(repo, digest, media_type, body).await?;
    if let Some(parsed) = parsed
        && let Some(subject) = &parsed.subject
    {
        let record = ReferrerRecord::of_manifest(digest, media_type, size, parsed);
        storage.add_referrer(repo, subject, &record).await?;
    }
    Ok(())
}

/// Removes a stored manifest and, when it names a subject, its referrer record: the way
/// out that matches [`ingest`] (a delete, garbage collection).
pub async fn remove(
    storage: &dyn Storage,
    repo: &RepoName,
    stored: &StoredManifest,
) -> std::result::Result<(), StorageError> {
    if let Some(subject) = stored.parse().ok().and_then(|p| p.subject) {
        storage
            .remove_referrer(repo, &subject, &stored.digest)
            .await?;
    }
    storage.delete_manifest(repo, &stored.digest).await?;
    Ok(())
}

pub fn too_large(limit: usize) -> ServiceError {
    ServiceError::too_large(
        ErrorCode::SizeInvalid,
        format!("manifest is larger than the {limit}-byte limit"),
    )
}

/// This host's CPU in the OCI platform's terms (Go's GOARCH).
fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}
