//! Image names as users write them, resolved to where they live: the registry host, the
//! repository on that host, the repository in the local store, and a tag or digest.

use std::fmt;

use oci_spec::distribution::Reference;
use sealer_registry::oci::{Digest, RepoName, Tag, manifest};

/// Why an image name or a platform is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{written:?} is not a valid image reference: {reason}")]
    Reference { written: String, reason: String },
    #[error("{written:?}: invalid digest: {reason}")]
    Digest { written: String, reason: String },
    #[error("{written:?}: {reason}")]
    Tag { written: String, reason: String },
    /// The name has no repository the store can hold (too long, bad characters).
    #[error("{name}: {reason}")]
    Repository { name: String, reason: String },
    #[error("invalid platform {0:?}: expected OS/ARCH[/VARIANT], e.g. linux/amd64")]
    Platform(String),
}

/// A fully qualified image reference (docs/design.md, contract 2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageName {
    /// The registry as written: `docker.io`, `quay.io`, `127.0.0.1:5000`.
    pub host: String,
    /// The repository on that registry: `library/nginx`.
    pub remote: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl ImageName {
    /// Parses any common form: `nginx` is `docker.io/library/nginx:latest`.
    pub fn parse(written: &str) -> Result<ImageName, NameError> {
        let r = Reference::try_from(written).map_err(|e| NameError::Reference {
            written: written.into(),
            reason: e.to_string(),
        })?;
        let digest = match r.digest() {
            Some(d) => Some(d.parse::<Digest>().map_err(|e| NameError::Digest {
                written: written.into(),
                reason: e.to_string(),
            })?),
            None => None,
        };
        let tag = r.tag().map(str::to_string);
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        let name = ImageName {
            host: r.registry().to_string(),
            remote: r.repository().to_string(),
            tag,
            digest,
        };
        name.repo()?;
        if let Some(t) = &name.tag {
            Tag::parse(t).map_err(|e| NameError::Tag {
                written: written.into(),
                reason: e.0,
            })?;
        }
        Ok(name)
    }

    /// The repository in the local store: `docker.io/library/nginx`,
    /// `127.0.0.1_5000/app` (a port becomes `_port`, as the mirror stores it).
    pub fn repo(&self) -> Result<RepoName, NameError> {
        RepoName::for_image(&self.host, &self.remote).map_err(|e| NameError::Repository {
            name: self.to_string(),
            reason: e.to_string(),
        })
    }

    /// The tag, or else the digest, as a manifest reference.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }

    /// The same image under another tag.
    pub fn with_tag(&self, tag: &str) -> ImageName {
        ImageName {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }

    /// `host/remote` without tag or digest.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.host, self.remote)
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.remote)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// An OS/architecture pair such as `linux/amd64` or `linux/arm64/v8`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    pub fn parse(s: &str) -> Result<Platform, NameError> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        let bad = || NameError::Platform(s.into());
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, v] => (*os, *arch, Some(v.to_string())),
            _ => return Err(bad()),
        };
        if os.is_empty() || arch.is_empty() {
            return Err(bad());
        }
        Ok(Platform {
            os: os.to_string(),
            architecture: normalize_arch(arch).to_string(),
            variant,
        })
    }

    /// A comma-separated list, as `--platform` takes it.
    pub fn parse_list(s: &str) -> Result<Vec<Platform>, NameError> {
        let mut out: Vec<Platform> = Vec::new();
        for p in s.split(',').filter(|p| !p.trim().is_empty()) {
            let p = Platform::parse(p)?;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// The platform of the machine we run on.
    pub fn host() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: normalize_arch(std::env::consts::ARCH).to_string(),
            variant: None,
        }
    }

    /// Whether a manifest for `os`/`arch`/`variant` serves this platform (a missing
    /// variant on either side matches).
    pub fn matches(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        self.os == os
            && self.architecture == normalize_arch(arch)
            && match (&self.variant, variant) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// Whether a pull or build for `platforms` needs the index entry `entry`: every entry
/// when no platform is chosen, else those without a platform and those matching one.
pub fn wanted(platforms: &[Platform], entry: &manifest::Reference) -> bool {
    match &entry.platform {
        _ if platforms.is_empty() => true,
        None => true,
        Some(p) => platforms
            .iter()
            .any(|w| w.matches(&p.os, &p.architecture, p.variant.as_deref())),
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

fn normalize_arch(arch: &str) -> &str {
    match arch {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_fully_qualified_and_ports_are_stored_safely() {
        let n = ImageName::parse("nginx").unwrap();
        assert_eq!(n.to_string(), "docker.io/library/nginx:latest");
        assert_eq!(n.repo().unwrap().as_str(), "docker.io/library/nginx");
        let n = ImageName::parse("127.0.0.1:5000/team/app:1.0").unwrap();
        assert_eq!(n.host, "127.0.0.1:5000");
        assert_eq!(n.remote, "team/app");
        assert_eq!(n.repo().unwrap().as_str(), "127.0.0.1_5000/team/app");
        let d = format!("sha256:{}", "a".repeat(64));
        let n = ImageName::parse(&format!("quay.io/x/y@{d}")).unwrap();
        assert_eq!(n.reference(), d);
        assert!(ImageName::parse("UPPER/case").is_err());
    }

    #[test]
    fn platforms_parse_and_match() {
        let p = Platform::parse_list("linux/amd64, linux/arm64/v8,linux/amd64").unwrap();
        assert_eq!(p.len(), 2);
        assert!(p[0].matches("linux", "amd64", None));
        assert!(p[1].matches("linux", "arm64", Some("v8")));
        assert!(!p[1].matches("linux", "arm64", Some("v7")));
        assert!(Platform::parse("amd64").is_err());
    }
}
