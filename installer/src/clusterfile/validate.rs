//! From the documents as written to a [`Cluster`] the installer can act on: defaults
//! filled in, per-host values merged over the cluster's, and every rule checked.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use super::Documents;
use super::fields;
use super::model::*;

/// A Clusterfile, checked and resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// `metadata.name`; names the state folder `~/.sealer/<name>/`.
    pub name: String,
    pub image: String,
    pub env: Vec<EnvVar>,
    pub cmd: Vec<String>,
    pub app_names: Vec<String>,
    /// In file order; the first master is master0.
    pub hosts: Vec<Host>,
    pub runtime: RuntimeType,
    pub registry: Registry,
    pub data_root: PathBuf,
    pub host_aliases: Vec<HostAlias>,
    pub configs: Vec<ConfigSpec>,
    pub plugins: Vec<Plugin>,
    /// The documents as read: what `sealer run` keeps as the cluster's state, and what
    /// `scale-up` and `delete -n` change.
    pub source: Documents,
}

impl Cluster {
    pub fn masters(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(|h| h.is_master())
    }

    /// Where the image's launch commands and the master0 hooks run.
    pub fn master0(&self) -> &Host {
        self.masters()
            .next()
            .expect("validated: at least one master")
    }

    /// `<dataRoot>/<name>`: the cluster's folder on every host.
    pub fn data_dir(&self) -> PathBuf {
        self.data_root.join(&self.name)
    }

    /// Where the image's files are laid out on every host.
    pub fn rootfs(&self) -> PathBuf {
        self.data_dir().join("rootfs")
    }

    pub fn host(&self, ip: IpAddr) -> Option<&Host> {
        self.hosts.iter().find(|h| h.ip == ip)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub ip: IpAddr,
    pub roles: Vec<String>,
    pub login: Login,
    /// The cluster's env with the host's own over it.
    pub env: Vec<EnvVar>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<String>,
}

impl Host {
    pub fn is_master(&self) -> bool {
        self.roles.iter().any(|r| r == "master")
    }
}

/// How to reach a host over SSH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub port: u16,
    pub auth: Auth,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    Password(String),
    Key {
        path: PathBuf,
        passphrase: Option<String>,
    },
    /// What ssh finds itself: the agent, `~/.ssh/id_*`.
    Default,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Registry {
    /// `sealer-registry serve` on `hosts` (every master with `ha`, else master0).
    Local {
        domain: String,
        port: u16,
        username: Option<String>,
        password: Option<String>,
        hosts: Vec<IpAddr>,
        insecure: bool,
        dns_names: Vec<String>,
        ips: Vec<IpAddr>,
    },
    /// A registry the cluster already has (Harbor, distribution, zot): the image's
    /// container images are pushed there and the hosts pull through it.
    External {
        domain: String,
        port: Option<u16>,
        username: Option<String>,
        password: Option<String>,
        insecure: bool,
        ca: Option<PathBuf>,
    },
}

/// When a plugin runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    PreInstall,
    PreInitHost,
    PostInitHost,
    PostInstall,
    PreScaleUp,
    PostScaleUp,
    PreUninstall,
    PreCleanHost,
    PostCleanHost,
    PostUninstall,
}

impl Phase {
    pub const ALL: [(&'static str, Phase); 10] = [
        ("pre-install", Phase::PreInstall),
        ("pre-init-host", Phase::PreInitHost),
        ("post-init-host", Phase::PostInitHost),
        ("post-install", Phase::PostInstall),
        ("pre-scaleup", Phase::PreScaleUp),
        ("post-scaleup", Phase::PostScaleUp),
        ("pre-uninstall", Phase::PreUninstall),
        ("pre-clean-host", Phase::PreCleanHost),
        ("post-clean-host", Phase::PostCleanHost),
        ("post-uninstall", Phase::PostUninstall),
    ];

    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.iter().find(|(n, _)| *n == s).map(|(_, p)| *p)
    }

    pub fn name(self) -> &'static str {
        Phase::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map(|(n, _)| *n)
            .expect("every phase is listed")
    }

    /// Phases that run once, on master0; the others run on every host in scope.
    pub fn on_master0(self) -> bool {
        !matches!(
            self,
            Phase::PreInitHost | Phase::PostInitHost | Phase::PreCleanHost | Phase::PostCleanHost
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plugin {
    pub name: String,
    pub phase: Phase,
    /// Roles whose hosts run it; every host when empty.
    pub scope: Vec<String>,
    pub data: String,
}

/// A broken rule: which document (the Cluster's when `None`), which field, what.
#[derive(Debug)]
pub struct Invalid {
    pub document: Option<usize>,
    pub kind: &'static str,
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        document: None,
        kind: "Cluster",
        field: field.into(),
        message: message.into(),
    }
}

pub(super) fn cluster(
    doc: ClusterDoc,
    configs: Vec<(usize, ConfigDoc)>,
    plugins: Vec<(usize, PluginDoc)>,
) -> Result<Cluster, Invalid> {
    let source = Documents {
        cluster: doc.clone(),
        configs: configs.iter().map(|(_, c)| c.clone()).collect(),
        plugins: plugins.iter().map(|(_, p)| p.clone()).collect(),
    };
    let spec = doc.spec;
    let name = name_of(doc.metadata.name)?;
    if spec.image.trim().is_empty() {
        return Err(invalid("spec.image", "missing: the image to run"));
    }
    if spec.ssh.encrypted {
        return Err(invalid(
            "spec.ssh.encrypted",
            "encrypted passwords are not supported; give the password itself or a key",
        ));
    }
    let hosts = hosts_of(&spec)?;
    let registry = match (
        spec.registry.local_registry,
        spec.registry.external_registry,
    ) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "spec.registry",
                "localRegistry and externalRegistry both given; choose one",
            ));
        }
        (_, Some(e)) => external_registry(e)?,
        (local, None) => local_registry(local.unwrap_or_default(), &hosts)?,
    };
    for (a, alias) in spec.host_aliases.iter().enumerate() {
        for (n, name) in alias.hostnames.iter().enumerate() {
            fields::dns_name(name)
                .map_err(|m| invalid(format!("spec.hostAliases[{a}].hostnames[{n}]"), m))?;
        }
    }
    let data_root = match &spec.data_root {
        Some(p) => fields::data_root(p).map_err(|m| invalid("spec.dataRoot", m))?,
        None => PathBuf::from("/var/lib/sealer/data"),
    };
    Ok(Cluster {
        name,
        image: spec.image,
        env: spec.env,
        cmd: spec.cmd,
        app_names: spec.app_names,
        hosts,
        runtime: spec.container_runtime.kind,
        registry,
        data_root,
        host_aliases: spec.host_aliases,
        configs: configs_of(configs)?,
        plugins: plugins_of(plugins)?,
        source,
    })
}

/// `metadata.name` (`default` when empty): it names a folder and a DNS-safe label.
fn name_of(written: String) -> Result<String, Invalid> {
    let name = match written.is_empty() {
        true => "default".to_string(),
        false => written,
    };
    let name_ok = name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !name.starts_with(['-', '.']);
    if !name_ok {
        return Err(invalid(
            "metadata.name",
            format!("{name:?}: use lowercase letters, digits, '-' and '.'"),
        ));
    }
    Ok(name)
}

/// Every host in file order, each once, with its group's settings over the cluster's;
/// at least one master.
fn hosts_of(spec: &ClusterSpec) -> Result<Vec<Host>, Invalid> {
    if spec.hosts.is_empty() {
        return Err(invalid("spec.hosts", "no hosts"));
    }
    let mut hosts: Vec<Host> = Vec::new();
    for (g, group) in spec.hosts.iter().enumerate() {
        check_group(g, group)?;
        for (i, ip) in group.ips.iter().enumerate() {
            if let Some(g2) = hosts.iter().position(|h| h.ip == *ip) {
                return Err(invalid(
                    format!("spec.hosts[{g}].ips[{i}]"),
                    format!("{ip} is listed twice (host {} is the same)", g2 + 1),
                ));
            }
            hosts.push(Host {
                ip: *ip,
                roles: group.roles.clone(),
                login: login(&spec.ssh, &group.ssh),
                env: merge_env(&spec.env, &group.env),
                labels: group.labels.clone(),
                taints: group.taints.clone(),
            });
        }
    }
    if !hosts.iter().any(Host::is_master) {
        return Err(invalid(
            "spec.hosts",
            "no host has the role master (the registry and the launch commands run there)",
        ));
    }
    Ok(hosts)
}

/// One `spec.hosts[g]` entry's own rules: addresses, roles, no encrypted password,
/// taints Kubernetes accepts.
fn check_group(g: usize, group: &HostGroup) -> Result<(), Invalid> {
    if group.ips.is_empty() {
        return Err(invalid(format!("spec.hosts[{g}].ips"), "no addresses"));
    }
    if group.roles.is_empty() {
        return Err(invalid(
            format!("spec.hosts[{g}].roles"),
            "no roles (master or node)",
        ));
    }
    if group.ssh.encrypted {
        return Err(invalid(
            format!("spec.hosts[{g}].ssh.encrypted"),
            "encrypted passwords are not supported",
        ));
    }
    for (t, taint) in group.taints.iter().enumerate() {
        if !valid_taint(taint) {
            return Err(invalid(
                format!("spec.hosts[{g}].taints[{t}]"),
                format!(
                    "{taint:?} is not KEY[=VALUE]:EFFECT (NoSchedule, PreferNoSchedule or NoExecute)"
                ),
            ));
        }
    }
    Ok(())
}

fn external_registry(e: ExternalRegistry) -> Result<Registry, Invalid> {
    if e.username.is_some() != e.password.is_some() {
        return Err(invalid(
            "spec.registry.externalRegistry",
            "username and password go together",
        ));
    }
    if e.domain.contains(':') {
        return Err(invalid(
            "spec.registry.externalRegistry.domain",
            format!("{:?}: give the port as `port`", e.domain),
        ));
    }
    fields::dns_name(&e.domain).map_err(|m| invalid("spec.registry.externalRegistry.domain", m))?;
    if e.insecure && e.ca.is_some() {
        return Err(invalid(
            "spec.registry.externalRegistry",
            "ca is for HTTPS; insecure: true uses plain HTTP",
        ));
    }
    Ok(Registry::External {
        domain: e.domain,
        port: e.port,
        username: e.username,
        password: e.password,
        insecure: e.insecure,
        ca: e.ca,
    })
}

/// The registry `sealer run` starts: on master0, or on every master with `ha`.
fn local_registry(l: LocalRegistry, hosts: &[Host]) -> Result<Registry, Invalid> {
    if l.username.is_some() != l.password.is_some() {
        return Err(invalid(
            "spec.registry.localRegistry",
            "username and password go together",
        ));
    }
    fields::dns_name(&l.domain).map_err(|m| invalid("spec.registry.localRegistry.domain", m))?;
    let masters: Vec<IpAddr> = hosts
        .iter()
        .filter(|h| h.is_master())
        .map(|h| h.ip)
        .collect();
    Ok(Registry::Local {
        domain: l.domain,
        port: l.port,
        username: l.username,
        password: l.password,
        hosts: if l.ha { masters } else { masters[..1].to_vec() },
        insecure: l.insecure,
        dns_names: l.cert.subject_alt_name.dns_names,
        ips: l.cert.subject_alt_name.ips,
    })
}

/// The Config documents: each path inside the image's files.
fn configs_of(configs: Vec<(usize, ConfigDoc)>) -> Result<Vec<ConfigSpec>, Invalid> {
    let mut checked = Vec::new();
    for (number, c) in configs {
        let path = &c.spec.path;
        if path.is_absolute()
            || path
                .components()
                .any(|p| matches!(p, std::path::Component::ParentDir))
        {
            return Err(Invalid {
                document: Some(number),
                kind: "Config",
                field: "spec.path".into(),
                message: format!(
                    "{} must be relative to the image's files, without '..'",
                    path.display()
                ),
            });
        }
        checked.push(c.spec);
    }
    Ok(checked)
}

/// The Plugin documents: shell scripts for a phase, on the hosts their scope names.
fn plugins_of(plugins: Vec<(usize, PluginDoc)>) -> Result<Vec<Plugin>, Invalid> {
    let mut checked = Vec::new();
    for (number, p) in plugins {
        let bad = |field: &str, message: String| Invalid {
            document: Some(number),
            kind: "Plugin",
            field: field.into(),
            message,
        };
        if !p.spec.kind.eq_ignore_ascii_case("shell") {
            return Err(bad(
                "spec.type",
                format!("{:?} is not supported; only SHELL", p.spec.kind),
            ));
        }
        let phase = Phase::parse(&p.spec.action).ok_or_else(|| {
            let names: Vec<&str> = Phase::ALL.iter().map(|(n, _)| *n).collect();
            let message = format!(
                "{:?} is not a phase; one of {}",
                p.spec.action,
                names.join(", ")
            );
            bad("spec.action", message)
        })?;
        let scope: Vec<String> = p
            .spec
            .scope
            .as_deref()
            .unwrap_or("")
            .split('|')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        checked.push(Plugin {
            name: p.metadata.name,
            phase,
            scope,
            data: p.spec.data,
        });
    }
    // Plugins of one phase run in the order of their names, as in sealer.
    checked.sort_by(|a, b| (a.phase, &a.name).cmp(&(b.phase, &b.name)));
    Ok(checked)
}

fn login(cluster: &Ssh, host: &Ssh) -> Login {
    let user = host
        .user
        .clone()
        .or_else(|| cluster.user.clone())
        .unwrap_or_else(|| "root".into());
    let port = host.port.or(cluster.port).unwrap_or(22);
    // The host's own credentials win; a password wins over a key at the same level.
    let auth = |s: &Ssh| -> Option<Auth> {
        if let Some(p) = &s.passwd {
            return Some(Auth::Password(p.clone()));
        }
        s.pk.as_ref().map(|k| Auth::Key {
            path: k.clone(),
            passphrase: s.pk_passwd.clone(),
        })
    };
    Login {
        user,
        port,
        auth: auth(host)
            .or_else(|| auth(cluster))
            .unwrap_or(Auth::Default),
    }
}

fn merge_env(cluster: &[EnvVar], host: &[EnvVar]) -> Vec<EnvVar> {
    let mut out: Vec<EnvVar> = cluster
        .iter()
        .filter(|e| !host.iter().any(|h| h.key == e.key))
        .cloned()
        .collect();
    out.extend(host.iter().cloned());
    out
}

fn valid_taint(t: &str) -> bool {
    let Some((kv, effect)) = t.rsplit_once(':') else {
        return false;
    };
    let key = kv.split('=').next().unwrap_or("");
    !key.is_empty() && matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute")
}
