//! The Clusterfile's documents as written (`apiVersion: sealer.io/v2`, `kind: Cluster`,
//! and the `Config` and `Plugin` kinds), field for field as sealer reads them; see
//! `docs/clusterfile.md`. Defaults and cross-field rules live in `super::validate`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Metadata {
    #[serde(default)]
    pub name: String,
}

/// `kind: Cluster`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterDoc {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: Metadata,
    pub spec: ClusterSpec,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpec {
    pub image: String,
    /// `KEY=VALUE` pairs for the whole cluster.
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Replaces the image's launch commands.
    #[serde(default)]
    pub cmd: Vec<String>,
    /// Replaces the image's launch list.
    #[serde(default)]
    pub app_names: Vec<String>,
    #[serde(default)]
    pub ssh: Ssh,
    pub hosts: Vec<HostGroup>,
    #[serde(default)]
    pub container_runtime: ContainerRuntime,
    #[serde(default)]
    pub registry: RegistrySpec,
    /// Where files go on each host. [default: /var/lib/sealer/data]
    #[serde(default)]
    pub data_root: Option<PathBuf>,
    #[serde(default)]
    pub host_aliases: Vec<HostAlias>,
}

/// `KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct EnvVar {
    pub key: String,
    pub value: String,
}

impl EnvVar {
    pub fn parse(s: &str) -> Result<EnvVar, String> {
        match s.split_once('=') {
            // The key reaches `export KEY=...` on every host: only a shell name is one.
            Some((k, v)) if sealer_builder::shell::is_env_name(k) => Ok(EnvVar {
                key: k.to_string(),
                value: v.to_string(),
            }),
            Some((k, _)) if !k.is_empty() => Err(format!(
                "{k:?} is not a variable name (letters, digits and '_', not starting with a digit)"
            )),
            _ => Err(format!("{s:?} is not KEY=VALUE")),
        }
    }
}

impl From<EnvVar> for String {
    fn from(e: EnvVar) -> String {
        format!("{}={}", e.key, e.value)
    }
}

impl<'de> Deserialize<'de> for EnvVar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        EnvVar::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// How to log in to hosts; per-host values override the cluster's.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ssh {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub passwd: Option<String>,
    /// Private key file.
    #[serde(default)]
    pub pk: Option<PathBuf>,
    #[serde(default)]
    pub pk_passwd: Option<String>,
    /// sealer writes the port as a string ("22"); a number works too.
    #[serde(default, deserialize_with = "port")]
    pub port: Option<u16>,
    /// sealer's flag for encrypted passwords; only `false` is supported.
    #[serde(default)]
    pub encrypted: bool,
}

fn port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Port {
        Number(u16),
        Text(String),
    }
    match Option::<Port>::deserialize(d)? {
        None => Ok(None),
        Some(Port::Number(n)) => Ok(Some(n)),
        Some(Port::Text(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a port number"))),
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostGroup {
    pub ips: Vec<IpAddr>,
    pub roles: Vec<String>,
    #[serde(default)]
    pub ssh: Ssh,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub taints: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeType {
    #[default]
    Containerd,
    Docker,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerRuntime {
    #[serde(default, rename = "type")]
    pub kind: RuntimeType,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistrySpec {
    #[serde(default)]
    pub local_registry: Option<LocalRegistry>,
    #[serde(default)]
    pub external_registry: Option<ExternalRegistry>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalRegistry {
    #[serde(default = "default_domain")]
    pub domain: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// On every master (else on master0 only).
    #[serde(default = "yes")]
    pub ha: bool,
    /// Plain HTTP instead of TLS with a generated CA.
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub cert: Cert,
}

impl Default for LocalRegistry {
    fn default() -> Self {
        LocalRegistry {
            domain: default_domain(),
            port: default_port(),
            username: None,
            password: None,
            ha: true,
            insecure: false,
            cert: Cert::default(),
        }
    }
}

fn default_domain() -> String {
    "sea.hub".into()
}

fn default_port() -> u16 {
    5000
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cert {
    #[serde(default)]
    pub subject_alt_name: SubjectAltName,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubjectAltName {
    #[serde(default)]
    pub dns_names: Vec<String>,
    #[serde(default)]
    pub ips: Vec<IpAddr>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalRegistry {
    pub domain: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Plain HTTP instead of HTTPS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// The CA its certificate is signed by, on this machine, when hosts do not already
    /// trust it; copied to every host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostAlias {
    pub ip: IpAddr,
    pub hostnames: Vec<String>,
}

/// `kind: Config`: a file written into the image's files before they go to the hosts.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigDoc {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: Metadata,
    pub spec: ConfigSpec,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigSpec {
    /// Relative to the image's files.
    pub path: PathBuf,
    pub data: String,
    #[serde(default)]
    pub strategy: ConfigStrategy,
    #[serde(default)]
    pub process: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ConfigStrategy {
    /// A YAML or JSON file's keys are merged into the existing file.
    Merge,
    #[default]
    Overwrite,
}

/// `kind: Plugin`: a shell script run at a lifecycle phase.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginDoc {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: Metadata,
    pub spec: PluginSpec,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginSpec {
    #[serde(rename = "type", default = "shell")]
    pub kind: String,
    pub action: String,
    /// `master`, `node`, or several joined by `|`; every host when empty.
    #[serde(default)]
    pub scope: Option<String>,
    pub data: String,
}

fn shell() -> String {
    "SHELL".into()
}
