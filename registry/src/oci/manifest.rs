//! Parsing pushed manifests: what kind they are and what they reference.
//!
//! The registry stores the exact bytes it was given; this module only reads them to
//! learn which blobs and manifests must exist, the `subject` for the referrers API and
//! the type to report for a referrer.

use std::collections::{BTreeMap, HashMap};

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Deserialize;

use super::digest::Digest;

pub mod media_type {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";
    pub const OCI_NONDISTRIBUTABLE_PREFIX: &str =
        "application/vnd.oci.image.layer.nondistributable.";
    pub const DOCKER_FOREIGN_LAYER: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// An OCI image manifest or a Docker schema 2 manifest: a config and layers.
    Image,
    /// An OCI image index or a Docker manifest list: other manifests.
    Index,
}

impl ManifestKind {
    pub fn of_media_type(mt: &str) -> Option<ManifestKind> {
        match mt {
            media_type::OCI_MANIFEST | media_type::DOCKER_MANIFEST => Some(ManifestKind::Image),
            media_type::OCI_INDEX | media_type::DOCKER_MANIFEST_LIST => Some(ManifestKind::Index),
            _ => None,
        }
    }
}

/// A descriptor reduced to what the registry checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub digest: Digest,
    pub size: u64,
    /// The descriptor's `mediaType`.
    pub media_type: String,
    /// A layer that is fetched from its `urls`, never pushed (non-distributable).
    pub foreign: bool,
    /// An index entry's platform.
    pub platform: Option<Platform>,
    /// The descriptor's annotations (an index entry's name, role).
    pub annotations: BTreeMap<String, String>,
}

/// The platform an index entry is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    /// `os/architecture[/variant]`, as `--platform` takes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct ParsedManifest {
    pub kind: ManifestKind,
    /// The `mediaType` written in the document, if any.
    pub declared_media_type: Option<String>,
    /// Blobs an image manifest needs (config first, then layers).
    pub blobs: Vec<Reference>,
    /// Manifests an index lists.
    pub manifests: Vec<Reference>,
    pub subject: Option<Digest>,
    /// `artifactType`, or for an image manifest without one its config's media type, as the
    /// referrers API reports it.
    pub artifact_type: Option<String>,
    pub annotations: Option<HashMap<String, String>>,
}

impl ParsedManifest {
    /// The media type it declares, else the OCI type of its kind.
    pub fn media_type(&self) -> &str {
        self.declared_media_type
            .as_deref()
            .unwrap_or(match self.kind {
                ManifestKind::Image => media_type::OCI_MANIFEST,
                ManifestKind::Index => media_type::OCI_INDEX,
            })
    }

    /// The `Content-Type` to store and serve it with: a manifest type the registry knows,
    /// never what a pusher or upstream made up (`text/html` served from the registry's
    /// origin would be a page). `content_type` (as sent) if it is one, else the type the
    /// body declares if it is one, else the OCI type of its kind.
    pub fn served_type(&self, content_type: Option<&str>) -> &'static str {
        let known = |mt: &str| KNOWN_TYPES.iter().copied().find(|k| *k == essence(mt));
        content_type
            .and_then(known)
            .or_else(|| self.declared_media_type.as_deref().and_then(known))
            .unwrap_or(match self.kind {
                ManifestKind::Image => media_type::OCI_MANIFEST,
                ManifestKind::Index => media_type::OCI_INDEX,
            })
    }
}

/// The manifest types stored and served as such.
const KNOWN_TYPES: [&str; 4] = [
    media_type::OCI_MANIFEST,
    media_type::OCI_INDEX,
    media_type::DOCKER_MANIFEST,
    media_type::DOCKER_MANIFEST_LIST,
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    NotJson(String),
    #[error("manifest is not a valid {0}: {1}")]
    Schema(&'static str, String),
    #[error("Content-Type {content_type:?} does not match the manifest's mediaType {declared:?}")]
    MediaTypeMismatch {
        content_type: String,
        declared: String,
    },
    #[error("schemaVersion must be 2, found {0}")]
    SchemaVersion(u64),
    #[error("Docker schema 1 manifests are not supported; push schema 2 or OCI")]
    Schema1,
    #[error("unsupported manifest media type {0:?}")]
    UnknownMediaType(String),
    #[error("descriptor digest {0:?} is not a supported digest")]
    BadDescriptorDigest(String),
}

/// Just the fields needed to classify a document before parsing it fully.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<serde_json::Value>,
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    config: Option<serde_json::Value>,
    layers: Option<serde_json::Value>,
}

/// Parse `body` pushed with `content_type` (the request's `Content-Type`, if any).
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<ParsedManifest, ManifestError> {
    let probe: Probe =
        serde_json::from_slice(body).map_err(|e| ManifestError::NotJson(e.to_string()))?;
    let content_type = content_type.map(essence).filter(|c| !c.is_empty());
    let kind = kind_of(content_type, &probe)?;
    match &probe.schema_version {
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(2) => {}
        Some(serde_json::Value::Number(n)) => {
            return Err(ManifestError::SchemaVersion(n.as_u64().unwrap_or(0)));
        }
        _ => {
            return Err(ManifestError::Schema(
                "manifest",
                "schemaVersion is missing".into(),
            ));
        }
    }
    match kind {
        ManifestKind::Image => {
            let m: ImageManifest = serde_json::from_slice(body)
                .map_err(|e| ManifestError::Schema("image manifest", e.to_string()))?;
            let mut blobs = Vec::with_capacity(m.layers().len() + 1);
            blobs.push(reference(m.config())?);
            for layer in m.layers() {
                blobs.push(reference(layer)?);
            }
            let artifact_type = m
                .artifact_type()
                .as_ref()
                .map(|t| t.to_string())
                .or_else(|| Some(m.config().media_type().to_string()));
            Ok(ParsedManifest {
                kind,
                declared_media_type: probe.media_type,
                blobs,
                manifests: Vec::new(),
                subject: m.subject().as_ref().map(subject_digest).transpose()?,
                artifact_type,
                annotations: m.annotations().clone(),
            })
        }
        ManifestKind::Index => {
            let ix: ImageIndex = serde_json::from_slice(body)
                .map_err(|e| ManifestError::Schema("image index", e.to_string()))?;
            let manifests = ix
                .manifests()
                .iter()
                .map(reference)
                .collect::<Result<_, _>>()?;
            Ok(ParsedManifest {
                kind,
                declared_media_type: probe.media_type,
                blobs: Vec::new(),
                manifests,
                subject: ix.subject().as_ref().map(subject_digest).transpose()?,
                artifact_type: ix.artifact_type().as_ref().map(|t| t.to_string()),
                annotations: ix.annotations().clone(),
            })
        }
    }
}

/// Whether a document is an image manifest or an index: its `mediaType`, else the
/// `Content-Type` it came with, else its shape. A specific `Content-Type` must agree with
/// the body's `mediaType`; schema 1 is refused.
fn kind_of(content_type: Option<&str>, probe: &Probe) -> Result<ManifestKind, ManifestError> {
    if let (Some(ct), Some(declared)) = (content_type, probe.media_type.as_deref()) {
        // Clients may push with a generic type; a specific one must agree with the body.
        if ct != declared && ManifestKind::of_media_type(ct).is_some() {
            return Err(ManifestError::MediaTypeMismatch {
                content_type: ct.to_string(),
                declared: declared.to_string(),
            });
        }
    }
    match probe.media_type.as_deref().or(content_type) {
        Some(media_type::DOCKER_SCHEMA1 | media_type::DOCKER_SCHEMA1_SIGNED) => {
            Err(ManifestError::Schema1)
        }
        Some(mt) => match ManifestKind::of_media_type(mt) {
            Some(kind) => Ok(kind),
            None => infer_kind(probe).ok_or_else(|| ManifestError::UnknownMediaType(mt.into())),
        },
        None => infer_kind(probe).ok_or_else(|| {
            ManifestError::UnknownMediaType("(none: no Content-Type and no mediaType)".into())
        }),
    }
}

/// The media type without parameters (`; charset=...`) or surrounding space.
pub fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

fn infer_kind(p: &Probe) -> Option<ManifestKind> {
    if p.manifests.is_some() {
        Some(ManifestKind::Index)
    } else if p.config.is_some() && p.layers.is_some() {
        Some(ManifestKind::Image)
    } else {
        None
    }
}

fn reference(d: &Descriptor) -> Result<Reference, ManifestError> {
    let raw = d.digest().to_string();
    let digest = raw
        .parse()
        .map_err(|_| ManifestError::BadDescriptorDigest(raw))?;
    let mt = d.media_type().to_string();
    let foreign = mt.starts_with(media_type::OCI_NONDISTRIBUTABLE_PREFIX)
        || mt == media_type::DOCKER_FOREIGN_LAYER;
    Ok(Reference {
        digest,
        size: d.size(),
        media_type: mt,
        foreign,
        platform: d.platform().as_ref().map(|p| Platform {
            os: p.os().to_string(),
            architecture: p.architecture().to_string(),
            variant: p.variant().clone(),
        }),
        annotations: d
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
    })
}

fn subject_digest(d: &Descriptor) -> Result<Digest, ManifestError> {
    let raw = d.digest().to_string();
    raw.parse()
        .map_err(|_| ManifestError::BadDescriptorDigest(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn image(media_type: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{media_type}",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":3}},
                      {{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","digest":"{}","size":4,"urls":["https://x"]}}],
            "subject":{{"mediaType":"{media_type}","digest":"{}","size":5}}}}"#,
            d('a'),
            d('b'),
            d('c'),
            d('e')
        )
    }

    #[test]
    fn reads_image_manifest_references() {
        let m = parse(
            Some(media_type::OCI_MANIFEST),
            image(media_type::OCI_MANIFEST).as_bytes(),
        )
        .unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        let digests: Vec<_> = m.blobs.iter().map(|r| r.digest.to_string()).collect();
        assert_eq!(digests, [d('a'), d('b'), d('c')]);
        assert_eq!(
            m.blobs.iter().map(|r| r.foreign).collect::<Vec<_>>(),
            [false, false, true]
        );
        assert_eq!(
            m.blobs[1].media_type,
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(m.subject.unwrap().to_string(), d('e'));
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn docker_schema2_is_an_image_and_lists_are_indexes() {
        let m = parse(None, image(media_type::DOCKER_MANIFEST).as_bytes()).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{}","size":7,"platform":{{"architecture":"amd64","os":"linux","features":["sse4"]}}}}]}}"#,
            media_type::DOCKER_MANIFEST_LIST,
            media_type::DOCKER_MANIFEST,
            d('f')
        );
        let m = parse(Some(media_type::DOCKER_MANIFEST_LIST), list.as_bytes()).unwrap();
        assert_eq!(m.kind, ManifestKind::Index);
        assert_eq!(m.manifests[0].digest.to_string(), d('f'));
        // What a pull filters and a CloudImage names entries by.
        assert_eq!(m.manifests[0].media_type, media_type::DOCKER_MANIFEST);
        assert_eq!(
            m.manifests[0].platform,
            Some(Platform {
                os: "linux".into(),
                architecture: "amd64".into(),
                variant: None
            })
        );
        assert!(m.manifests[0].annotations.is_empty());
    }

    #[test]
    fn infers_the_kind_without_media_types() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{}","size":1}}]}}"#,
            media_type::OCI_MANIFEST,
            d('1')
        );
        assert_eq!(
            parse(None, body.as_bytes()).unwrap().kind,
            ManifestKind::Index
        );
    }

    #[test]
    fn rejects_inconsistent_or_bad_documents() {
        assert!(matches!(
            parse(
                Some(media_type::OCI_INDEX),
                image(media_type::OCI_MANIFEST).as_bytes()
            ),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        assert!(matches!(
            parse(None, b"not json"),
            Err(ManifestError::NotJson(_))
        ));
        assert!(matches!(
            parse(
                Some(media_type::DOCKER_SCHEMA1_SIGNED),
                br#"{"schemaVersion":1}"#
            ),
            Err(ManifestError::Schema1)
        ));
        let v3 =
            image(media_type::OCI_MANIFEST).replace("\"schemaVersion\":2", "\"schemaVersion\":3");
        assert_eq!(
            parse(None, v3.as_bytes()).unwrap_err(),
            ManifestError::SchemaVersion(3)
        );
        let bad = image(media_type::OCI_MANIFEST).replace(&d('b'), "sha256:../../etc");
        assert!(parse(None, bad.as_bytes()).is_err());
        assert!(matches!(
            parse(Some("application/x-thing"), br#"{"schemaVersion":2}"#),
            Err(ManifestError::UnknownMediaType(_))
        ));
    }
}
