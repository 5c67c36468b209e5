//! The Clusterfile: which image goes onto which hosts, how to reach them, and how the
//! cluster's registry and runtimes are set up (`docs/clusterfile.md`).
//!
//! A Clusterfile is multi-document YAML as sealer writes it: one `kind: Cluster`
//! (`apiVersion: sealer.io/v2`), any number of `kind: Config` and `kind: Plugin`
//! (`sealer.io/v1`). [`parse`] reads it into a [`Cluster`] with every default filled
//! in and every rule checked; errors name the document, the field and, where the YAML
//! itself is at fault, the line.

mod fields;
pub mod model;
mod validate;

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::de::DeserializeOwned;

pub use self::model::*;
pub use self::validate::{Auth, Cluster, Host, Login, Phase, Plugin, Registry};

/// What is wrong with a Clusterfile, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ClusterfileError {
    /// The file, as the user named it.
    pub file: String,
    /// 1-based, in file order; 0 for rules about the file as a whole.
    pub document: usize,
    /// The document's `kind`, if it could be read.
    pub kind: Option<String>,
    /// The line in the file, when the YAML itself is at fault.
    pub line: Option<u64>,
    /// The field, as a path (`spec.hosts[1].ips[0]`).
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ClusterfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if self.document > 0 {
            write!(f, ": document {}", self.document)?;
            if let Some(k) = &self.kind {
                write!(f, " ({k})")?;
            }
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// One YAML document of the file: its number, the line it starts on, and its text.
struct Document<'a> {
    number: usize,
    first_line: u64,
    text: &'a str,
}

/// Splits at `---` lines; documents with nothing but comments and blanks are skipped
/// (a leading `---` does not start an empty first document).
fn documents(text: &str) -> Vec<Document<'_>> {
    // (byte offset, first line) where each document starts.
    let mut starts = vec![(0usize, 1u64)];
    let mut ends = Vec::new();
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end();
        if bare == "---" || bare.starts_with("--- ") || bare.starts_with("---#") {
            ends.push(offset);
            starts.push((offset + line.len(), i as u64 + 2));
        }
        offset += line.len();
    }
    ends.push(text.len());
    let mut out = Vec::new();
    for ((start, first_line), end) in starts.into_iter().zip(ends) {
        let chunk = &text[start..end];
        let meaningful = chunk.lines().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        });
        if meaningful {
            out.push(Document {
                number: out.len() + 1,
                first_line,
                text: chunk,
            });
        }
    }
    out
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    api_version: Option<String>,
    kind: Option<String>,
}

/// The documents of a Clusterfile, in the order sealer writes them back: the Cluster,
/// then every Config, then every Plugin.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Documents {
    pub cluster: ClusterDoc,
    pub configs: Vec<ConfigDoc>,
    pub plugins: Vec<PluginDoc>,
}

impl Documents {
    /// The documents as a multi-document YAML Clusterfile that [`parse`] reads back.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut push = |text: Result<String, serde_saphyr::ser::Error>| {
            if !out.is_empty() {
                out.push_str("---\n");
            }
            out.push_str(&text.expect("the model serialises"));
        };
        push(serde_saphyr::to_string(&self.cluster));
        for c in &self.configs {
            push(serde_saphyr::to_string(c));
        }
        for p in &self.plugins {
            push(serde_saphyr::to_string(p));
        }
        out
    }

    /// Checks the documents (after a change) into a [`Cluster`]; errors name `file`.
    pub fn resolve(&self, file: &str) -> Result<Cluster, ClusterfileError> {
        let configs = self.configs.iter().cloned().enumerate();
        let plugins = self.plugins.iter().cloned().enumerate();
        let n = self.configs.len();
        validate::cluster(
            self.cluster.clone(),
            configs.map(|(i, c)| (i + 2, c)).collect(),
            plugins.map(|(i, p)| (i + 2 + n, p)).collect(),
        )
        .map_err(|v| ClusterfileError {
            file: file.to_string(),
            document: v.document.unwrap_or(1),
            kind: Some(v.kind.to_string()),
            line: None,
            field: Some(v.field),
            message: v.message,
        })
    }
}

/// Reads `text` (the contents of `file`) into a checked [`Cluster`].
/// Reads and checks the Clusterfile at `path`.
pub fn read_file(path: &std::path::Path) -> anyhow::Result<Cluster> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(parse(&text, &path.display().to_string())?)
}

pub fn parse(text: &str, file: &str) -> Result<Cluster, ClusterfileError> {
    let error = |document: usize, kind: Option<&str>, field: Option<&str>, message: String| {
        ClusterfileError {
            file: file.to_string(),
            document,
            kind: kind.map(str::to_string),
            line: None,
            field: field.map(str::to_string),
            message,
        }
    };
    let mut cluster: Option<(usize, ClusterDoc)> = None;
    let mut configs = Vec::new();
    let mut plugins = Vec::new();
    for doc in documents(text) {
        let probe: Probe = read(file, &doc, None)?;
        let kind = probe
            .kind
            .ok_or_else(|| error(doc.number, None, Some("kind"), "missing".into()))?;
        let api = probe.api_version.unwrap_or_default();
        let expect_api = |allowed: &[&str]| {
            if allowed.contains(&api.as_str()) {
                Ok(())
            } else {
                Err(error(
                    doc.number,
                    Some(&kind),
                    Some("apiVersion"),
                    format!("{api:?} is not supported; use {}", allowed[0]),
                ))
            }
        };
        match kind.as_str() {
            "Cluster" => {
                expect_api(&["sealer.io/v2", "sealer.cloud/v2"])?;
                if let Some((first, _)) = &cluster {
                    return Err(error(
                        doc.number,
                        Some(&kind),
                        None,
                        format!(
                            "a second Cluster (document {first} is one); a Clusterfile describes one cluster"
                        ),
                    ));
                }
                cluster = Some((doc.number, read(file, &doc, Some(&kind))?));
            }
            "Config" => {
                expect_api(&["sealer.io/v1", "sealer.cloud/v1"])?;
                configs.push((doc.number, read::<ConfigDoc>(file, &doc, Some(&kind))?));
            }
            "Plugin" => {
                expect_api(&["sealer.io/v1", "sealer.cloud/v1"])?;
                plugins.push((doc.number, read::<PluginDoc>(file, &doc, Some(&kind))?));
            }
            other => {
                return Err(error(
                    doc.number,
                    Some(other),
                    Some("kind"),
                    format!("{other:?} is not a kind sealer knows here (Cluster, Config, Plugin)"),
                ));
            }
        }
    }
    let (number, doc) =
        cluster.ok_or_else(|| error(0, None, None, "no document of kind Cluster".into()))?;
    validate::cluster(doc, configs, plugins).map_err(|v| ClusterfileError {
        file: file.to_string(),
        document: v.document.unwrap_or(number),
        kind: Some(v.kind.to_string()),
        line: None,
        field: Some(v.field),
        message: v.message,
    })
}

/// Deserialises one document, keeping the path of the field at fault.
fn read<T: DeserializeOwned>(
    file: &str,
    doc: &Document<'_>,
    kind: Option<&str>,
) -> Result<T, ClusterfileError> {
    let mut path = None;
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    serde_saphyr::with_deserializer_from_str_with_options(doc.text, options, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            let p = e.path().to_string();
            if p != "." {
                path = Some(p);
            }
            e.into_inner()
        })
    })
    .map_err(|e| {
        let line = e
            .location()
            .filter(|l| l.line() > 0)
            .map(|l| doc.first_line + l.line() - 1);
        ClusterfileError {
            file: file.to_string(),
            document: doc.number,
            kind: kind.map(str::to_string),
            line,
            field: path,
            message: message_of(&e),
        }
    })
}

/// The error's message without the location the YAML library appends (it is relative to
/// the document; ours is relative to the file).
fn message_of(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// The short form `sealer run IMAGE -m IP,IP -n IP ...`, as a Clusterfile would say it.
#[derive(Debug, Clone, Default)]
pub struct ShortForm {
    pub image: String,
    pub masters: Vec<IpAddr>,
    pub nodes: Vec<IpAddr>,
    pub user: Option<String>,
    pub passwd: Option<String>,
    pub pk: Option<PathBuf>,
    pub pk_passwd: Option<String>,
    pub port: Option<u16>,
    pub env: Vec<EnvVar>,
    pub cmd: Vec<String>,
    pub app_names: Vec<String>,
    pub name: Option<String>,
}

impl ShortForm {
    pub fn into_cluster(self) -> Result<Cluster, ClusterfileError> {
        let group = |ips: Vec<IpAddr>, role: &str| HostGroup {
            ips,
            roles: vec![role.to_string()],
            ..Default::default()
        };
        let mut hosts = vec![group(self.masters, "master")];
        if !self.nodes.is_empty() {
            hosts.push(group(self.nodes, "node"));
        }
        let doc = ClusterDoc {
            api_version: "sealer.io/v2".into(),
            kind: "Cluster".into(),
            metadata: Metadata {
                name: self.name.unwrap_or_default(),
            },
            spec: ClusterSpec {
                image: self.image,
                env: self.env,
                cmd: self.cmd,
                app_names: self.app_names,
                ssh: Ssh {
                    user: self.user,
                    passwd: self.passwd,
                    pk: self.pk,
                    pk_passwd: self.pk_passwd,
                    port: self.port,
                    encrypted: false,
                },
                hosts,
                ..Default::default()
            },
        };
        validate::cluster(doc, Vec::new(), Vec::new()).map_err(|v| ClusterfileError {
            file: "the command line".into(),
            document: 0,
            kind: None,
            line: None,
            field: Some(match v.field.as_str() {
                "spec.hosts[0].ips" => "-m/--masters".to_string(),
                other => other.to_string(),
            }),
            message: v.message,
        })
    }
}

#[cfg(test)]
mod tests;
