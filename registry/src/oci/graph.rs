//! Walking a manifest graph: from one or more manifests, every manifest an index lists
//! and every blob an image manifest needs, read with the one manifest parser
//! ([`manifest::parse`]). Garbage collection, the builder's store, pulls, pushes and
//! bundles all walk through here; where the manifests come from (a repository, a remote
//! registry, a bundle) is the [`Source`]'s business, and which index entries to follow
//! (a platform filter) is the caller's.

use std::collections::{BTreeMap, HashSet, VecDeque};

use async_trait::async_trait;
use bytes::Bytes;

use super::digest::Digest;
use super::manifest::{self, ManifestError, Reference};

/// A manifest as a source hands it to the walk.
pub trait Node {
    fn digest(&self) -> &Digest;
    fn media_type(&self) -> &str;
    fn body(&self) -> &Bytes;
}

/// Where a walk reads manifests.
#[async_trait]
pub trait Source: Send {
    type Node: Node + Send;
    type Error: From<ManifestError> + Send;

    /// The manifest `digest`, or `None` when the source lacks it. `listed_as` is the
    /// media type the index that lists it gives (`None` for a root), for sources that
    /// keep manifests as bare blobs.
    async fn manifest(
        &mut self,
        digest: &Digest,
        listed_as: Option<&str>,
    ) -> Result<Option<Self::Node>, Self::Error>;

    /// The manifests that name `digest` as their subject; walked when the walk
    /// [follows referrers](Walk::with_referrers).
    async fn referrers(&mut self, _digest: &Digest) -> Result<Vec<Digest>, Self::Error> {
        Ok(Vec::new())
    }
}

/// What a walk found.
#[derive(Debug)]
pub struct Graph<N> {
    /// Every manifest read, parents before children.
    pub manifests: Vec<N>,
    /// Every blob the manifests need, by digest. Non-distributable layers, fetched from
    /// their URLs rather than stored, are left out unless the walk
    /// [includes them](Walk::including_foreign).
    pub blobs: BTreeMap<Digest, Reference>,
    /// Manifests reached but absent from the source (a sparse index's left-out
    /// platforms, or a root the source lacks).
    pub absent: Vec<Digest>,
}

impl<N> Default for Graph<N> {
    fn default() -> Self {
        Graph {
            manifests: Vec::new(),
            blobs: BTreeMap::new(),
            absent: Vec::new(),
        }
    }
}

/// How to walk: which index entries to follow, whether to follow referrers, and what a
/// manifest that does not parse means.
pub struct Walk<'f> {
    follow: Box<dyn Fn(&Reference) -> bool + Send + Sync + 'f>,
    referrers: bool,
    lenient: bool,
    foreign: bool,
}

impl Default for Walk<'_> {
    fn default() -> Self {
        Walk::all()
    }
}

impl<'f> Walk<'f> {
    /// Follows every index entry; a manifest that does not parse is an error.
    pub fn all() -> Walk<'f> {
        Walk {
            follow: Box::new(|_| true),
            referrers: false,
            lenient: false,
            foreign: false,
        }
    }

    /// Follows only the index entries `follow` wants (a platform filter).
    pub fn following(follow: impl Fn(&Reference) -> bool + Send + Sync + 'f) -> Walk<'f> {
        Walk {
            follow: Box::new(follow),
            ..Walk::all()
        }
    }

    /// Also walks each manifest's referrers (signatures, SBOMs).
    pub fn with_referrers(mut self) -> Self {
        self.referrers = true;
        self
    }

    /// A manifest that does not parse still counts as read, but what it names is
    /// unknown, so the walk goes no further from it (garbage collection keeps it).
    pub fn lenient(mut self) -> Self {
        self.lenient = true;
        self
    }

    /// Also lists non-distributable layers (garbage collection keeps one a client pushed
    /// anyway).
    pub fn including_foreign(mut self) -> Self {
        self.foreign = true;
        self
    }

    /// Walks from `roots` (each read once, breadth first).
    pub async fn run<S: Source>(
        &self,
        source: &mut S,
        roots: impl IntoIterator<Item = Digest>,
    ) -> Result<Graph<S::Node>, S::Error> {
        let mut graph = Graph::default();
        let mut seen = HashSet::new();
        let mut queue: VecDeque<(Digest, Option<String>)> =
            roots.into_iter().map(|d| (d, None)).collect();
        while let Some((digest, listed_as)) = queue.pop_front() {
            if !seen.insert(digest.clone()) {
                continue;
            }
            let Some(node) = source.manifest(&digest, listed_as.as_deref()).await? else {
                graph.absent.push(digest);
                continue;
            };
            match manifest::parse(Some(node.media_type()), node.body()) {
                Ok(parsed) => {
                    for blob in parsed
                        .blobs
                        .into_iter()
                        .filter(|b| self.foreign || !b.foreign)
                    {
                        graph.blobs.entry(blob.digest.clone()).or_insert(blob);
                    }
                    let wanted = parsed.manifests.into_iter().filter(|m| (self.follow)(m));
                    queue.extend(wanted.map(|m| (m.digest, Some(m.media_type))));
                }
                Err(_) if self.lenient => {}
                Err(e) => return Err(e.into()),
            }
            if self.referrers {
                let referrers = source.referrers(&digest).await?;
                queue.extend(referrers.into_iter().map(|d| (d, None)));
            }
            graph.manifests.push(node);
        }
        Ok(graph)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;
    use serde_json::json;
    use std::collections::HashMap;

    struct Doc(Digest, String, Bytes);
    impl Node for Doc {
        fn digest(&self) -> &Digest {
            &self.0
        }
        fn media_type(&self) -> &str {
            &self.1
        }
        fn body(&self) -> &Bytes {
            &self.2
        }
    }

    #[derive(Default)]
    struct Map(
        HashMap<Digest, (String, Bytes)>,
        HashMap<Digest, Vec<Digest>>,
    );
    impl Map {
        fn add(&mut self, media_type: &str, doc: serde_json::Value) -> Digest {
            let body = Bytes::from(serde_json::to_vec(&doc).unwrap());
            let d = Digest::of(Algorithm::Sha256, &body);
            self.0.insert(d.clone(), (media_type.into(), body));
            d
        }
    }
    #[async_trait]
    impl Source for Map {
        type Node = Doc;
        type Error = ManifestError;
        async fn manifest(
            &mut self,
            d: &Digest,
            _: Option<&str>,
        ) -> Result<Option<Doc>, ManifestError> {
            Ok(self
                .0
                .get(d)
                .map(|(m, b)| Doc(d.clone(), m.clone(), b.clone())))
        }
        async fn referrers(&mut self, d: &Digest) -> Result<Vec<Digest>, ManifestError> {
            Ok(self.1.get(d).cloned().unwrap_or_default())
        }
    }

    fn digest(data: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, data)
    }

    fn image(map: &mut Map, layer: &[u8], subject: Option<&Digest>) -> Digest {
        let mut doc = json!({
            "schemaVersion": 2,
            "mediaType": manifest::media_type::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": digest(b"{}").to_string(), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": digest(layer).to_string(), "size": layer.len()}],
        });
        if let Some(s) = subject {
            doc["subject"] = json!({"mediaType": manifest::media_type::OCI_MANIFEST,
                                    "digest": s.to_string(), "size": 1});
        }
        map.add(manifest::media_type::OCI_MANIFEST, doc)
    }

    fn index(map: &mut Map, entries: &[(&Digest, &str)]) -> Digest {
        let manifests: Vec<_> = entries
            .iter()
            .map(|(d, arch)| {
                json!({"mediaType": manifest::media_type::OCI_MANIFEST, "digest": d.to_string(),
                   "size": 1, "platform": {"os": "linux", "architecture": arch}})
            })
            .collect();
        let doc = json!({"schemaVersion": 2, "mediaType": manifest::media_type::OCI_INDEX,
                         "manifests": manifests});
        map.add(manifest::media_type::OCI_INDEX, doc)
    }

    #[tokio::test]
    async fn follows_the_wanted_platforms_and_reports_what_the_source_lacks() {
        let mut map = Map::default();
        let amd = image(&mut map, b"amd", None);
        let arm = image(&mut map, b"arm", None);
        let gone = digest(b"never stored");
        let top = index(
            &mut map,
            &[(&amd, "amd64"), (&arm, "arm64"), (&gone, "s390x")],
        );

        let all = Walk::all().run(&mut map, [top.clone()]).await.unwrap();
        let read: Vec<_> = all.manifests.iter().map(|n| n.0.clone()).collect();
        assert_eq!(read, [top.clone(), amd.clone(), arm.clone()]);
        assert_eq!(all.absent, [gone]);
        assert!(all.blobs.contains_key(&digest(b"arm")));
        assert_eq!(all.blobs.len(), 3, "config once, two layers");

        let only_amd = Walk::following(|r| {
            r.platform
                .as_ref()
                .is_none_or(|p| p.architecture == "amd64")
        });
        let some = only_amd.run(&mut map, [top]).await.unwrap();
        assert_eq!(some.manifests.len(), 2);
        assert!(!some.blobs.contains_key(&digest(b"arm")));
        assert!(some.absent.is_empty());
    }

    #[tokio::test]
    async fn referrers_are_walked_only_when_asked_and_bad_manifests_only_leniently() {
        let mut map = Map::default();
        let img = image(&mut map, b"app", None);
        let sig = image(&mut map, b"signature", Some(&img));
        map.1.insert(img.clone(), vec![sig.clone()]);
        let plain = Walk::all().run(&mut map, [img.clone()]).await.unwrap();
        assert_eq!(plain.manifests.len(), 1);
        let with = Walk::all()
            .with_referrers()
            .run(&mut map, [img])
            .await
            .unwrap();
        assert_eq!(with.manifests.len(), 2);
        assert!(with.blobs.contains_key(&digest(b"signature")));

        let bad = map.add(manifest::media_type::OCI_MANIFEST, json!({"layers": 7}));
        assert!(Walk::all().run(&mut map, [bad.clone()]).await.is_err());
        let kept = Walk::all().lenient().run(&mut map, [bad]).await.unwrap();
        assert_eq!(kept.manifests.len(), 1);
        assert!(kept.blobs.is_empty());
    }
}
