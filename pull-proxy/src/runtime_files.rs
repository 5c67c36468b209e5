//! The files that point a host's container runtime at this registry as a mirror
//! (`sealer-registry mirror-config`).
//!
//! - containerd: `certs.d/<host>/hosts.toml` per upstream and `_default/hosts.toml`, each
//!   trying this registry first (pull and resolve) and the upstream after;
//! - docker: `daemon.json` with `registry-mirrors` (Docker Hub only, by Docker's design)
//!   and `insecure-registries` for a plain-HTTP registry;
//! - podman, CRI-O, buildah, skopeo: a `registries.conf.d` drop-in with a mirror per
//!   upstream, at a location carrying the upstream's name as a path (`<registry>/docker.io`).
//!
//! Several registries (one per registry host) are listed in order, each tried when the
//! one before fails. With an https registry and a CA, docker and podman get the CA as
//! `certs.d/<registry>/ca.crt`; containerd's host blocks name the CA file.
//!
//! A registry that needs a login gets it per runtime: containerd as an `Authorization`
//! header in each host block (ctr and the CRI plugin both read it), docker and podman as
//! `auths` in `~/.docker/config.json` (the docker CLI's file, which podman, skopeo and
//! buildah also read, and which they use for a mirror by the mirror's own name). Files
//! holding a login are written mode 0600.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use url::Url;

use crate::config::Credentials;
use sealer_registry::oci::docker_hub::{ENDPOINT as DOCKER_HUB_ENDPOINT, HOST as DOCKER_HUB};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Runtime {
    Containerd,
    Docker,
    Podman,
}

/// One file to write: its path relative to the runtime's config directory (or absolute:
/// the login file), and content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: PathBuf,
    pub content: String,
    /// It holds a login: only root may read it.
    pub secret: bool,
}

impl File {
    fn new(path: impl Into<PathBuf>, content: String) -> File {
        File {
            path: path.into(),
            content,
            secret: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    /// The registries as hosts reach them, e.g. `http://10.0.0.1:5000`, tried in order.
    pub registries: Vec<Url>,
    /// The upstream registry hosts to mirror.
    pub upstreams: Vec<String>,
    /// CA certificate hosts use to trust the registries (https only).
    pub ca: Option<Ca>,
    /// The login the registries want, if any.
    pub login: Option<Credentials>,
    /// The registries hold each upstream's images under the upstream's name as a path
    /// prefix (`<registry>/docker.io/library/nginx`), as a registry that is not a
    /// sealer registry does (it ignores sealer's `?ns=`): containerd is sent there.
    pub path_prefixed: bool,
    /// Where docker's and podman's login file goes (`$HOME/.docker/config.json`).
    pub login_file: PathBuf,
}

/// A CA certificate: where containerd finds it, and its PEM text for docker and podman.
#[derive(Debug, Clone)]
pub struct Ca {
    pub path: PathBuf,
    pub pem: String,
}

impl Ca {
    pub fn read(path: &Path) -> anyhow::Result<Ca> {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the CA certificate {}", path.display()))?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            bail!("{} is not a PEM certificate", path.display());
        }
        Ok(Ca {
            path: path.to_path_buf(),
            pem,
        })
    }
}

/// `host[:port]` of the registry URL.
fn authority(url: &Url) -> anyhow::Result<String> {
    let host = url.host_str().context("the registry URL has no host")?;
    Ok(match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    })
}

fn upstream_server(host: &str) -> String {
    if host == DOCKER_HUB {
        DOCKER_HUB_ENDPOINT.to_string()
    } else {
        format!("https://{host}")
    }
}

/// `certs.d/<registry>/ca.crt` for each https registry, when a CA is given.
fn ca_files(req: &Request) -> anyhow::Result<Vec<File>> {
    let Some(ca) = &req.ca else {
        return Ok(Vec::new());
    };
    let mut files = Vec::new();
    for r in req.registries.iter().filter(|r| r.scheme() == "https") {
        files.push(File::new(
            Path::new("certs.d").join(authority(r)?).join("ca.crt"),
            ca.pem.clone(),
        ));
    }
    Ok(files)
}

/// `~/.docker/config.json` with the login for each registry, for docker and podman.
fn login_file(req: &Request) -> anyhow::Result<Option<File>> {
    let Some(login) = &req.login else {
        return Ok(None);
    };
    let mut auths = serde_json::Map::new();
    for r in &req.registries {
        auths.insert(authority(r)?, serde_json::json!({ "auth": login.basic() }));
    }
    Ok(Some(File {
        path: req.login_file.clone(),
        content: serde_json::to_string_pretty(&serde_json::json!({ "auths": auths }))? + "\n",
        secret: true,
    }))
}

/// containerd's `[host."…"]` blocks for `urls`, each with its path prefix for `upstream`
/// when the registries want one.
fn host_blocks(req: &Request, urls: &[&str], upstream: Option<&str>) -> String {
    let prefix = upstream.filter(|_| req.path_prefixed);
    let mut blocks = String::new();
    for url in urls {
        let host = match prefix {
            Some(up) => format!("{url}/v2/{up}"),
            None => url.to_string(),
        };
        blocks.push_str(&format!(
            "\n[host.\"{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ));
        if prefix.is_some() {
            blocks.push_str("  override_path = true\n");
        }
        if let Some(ca) = req.ca.as_ref().filter(|_| url.starts_with("https:")) {
            blocks.push_str(&format!("  ca = \"{}\"\n", ca.path.display()));
        }
        if let Some(login) = &req.login {
            blocks.push_str(&format!(
                "  [host.\"{host}\".header]\n    Authorization = [\"Basic {}\"]\n",
                login.basic()
            ));
        }
    }
    blocks
}

pub fn generate(runtime: Runtime, req: &Request) -> anyhow::Result<Vec<File>> {
    if req.registries.is_empty() {
        bail!("give at least one --registry");
    }
    if req
        .registries
        .iter()
        .any(|r| !matches!(r.scheme(), "http" | "https"))
    {
        bail!("--registry must be an http:// or https:// URL");
    }
    let urls: Vec<&str> = req
        .registries
        .iter()
        .map(|r| r.as_str().trim_end_matches('/'))
        .collect();
    match runtime {
        Runtime::Containerd => Ok(containerd(req, &urls)),
        Runtime::Docker => docker(req, &urls),
        Runtime::Podman => podman(req),
    }
}

/// containerd: a `hosts.toml` per upstream and one for any other registry.
fn containerd(req: &Request, urls: &[&str]) -> Vec<File> {
    let listed = urls.join(", ");
    let secret = req.login.is_some();
    let mut files = Vec::new();
    for host in &req.upstreams {
        files.push(File {
            path: Path::new(host).join("hosts.toml"),
            content: format!(
                "# {host} through the sealer registry at {listed}; upstream when it lacks an image\n\
                 server = \"{}\"\n{}",
                upstream_server(host),
                host_blocks(req, urls, Some(host)),
            ),
            secret,
        });
    }
    files.push(File {
        path: Path::new("_default").join("hosts.toml"),
        content: format!(
            "# any other registry through the sealer registry at {listed}; the registry itself when it lacks an image\n{}",
            host_blocks(req, urls, None),
        ),
        secret,
    });
    files
}

/// docker: `daemon.json` (docker mirrors Docker Hub only), CA files and the login.
fn docker(req: &Request, urls: &[&str]) -> anyhow::Result<Vec<File>> {
    let mut daemon = serde_json::json!({ "registry-mirrors": urls });
    let insecure: Vec<String> = req
        .registries
        .iter()
        .filter(|r| r.scheme() == "http")
        .map(authority)
        .collect::<anyhow::Result<_>>()?;
    if !insecure.is_empty() {
        daemon["insecure-registries"] = serde_json::json!(insecure);
    }
    if !req.upstreams.iter().any(|h| h == DOCKER_HUB) {
        tracing::warn!(
            "docker mirrors only docker.io; other upstreams need their own registry names"
        );
    }
    let mut files = vec![File::new(
        "daemon.json",
        serde_json::to_string_pretty(&daemon)? + "\n",
    )];
    files.extend(ca_files(req)?);
    files.extend(login_file(req)?);
    Ok(files)
}

/// podman: a `registries.conf.d` drop-in with a mirror per upstream, CA files and the
/// login.
fn podman(req: &Request) -> anyhow::Result<Vec<File>> {
    let mut out = String::from(
        "# Generated by sealer-registry mirror-config: pulls try the sealer registry first.\n",
    );
    if req.upstreams.iter().any(|h| h == DOCKER_HUB) {
        out.push_str("unqualified-search-registries = [\"docker.io\"]\n");
    }
    for host in &req.upstreams {
        let location = if host == DOCKER_HUB {
            sealer_registry::oci::docker_hub::API_HOST
        } else {
            host.as_str()
        };
        out.push_str(&format!(
            "\n[[registry]]\nprefix = \"{host}\"\nlocation = \"{location}\"\n"
        ));
        for r in &req.registries {
            out.push_str(&format!(
                "\n[[registry.mirror]]\nlocation = \"{}/{host}\"\ninsecure = {}\n",
                authority(r)?,
                r.scheme() == "http"
            ));
        }
    }
    let mut files = vec![File::new(
        Path::new("registries.conf.d").join("sealer.conf"),
        out,
    )];
    files.extend(ca_files(req)?);
    files.extend(login_file(req)?);
    Ok(files)
}

/// Adds `ours` to the JSON object in `path` (docker's `daemon.json` holds the host's other
/// daemon settings): our list entries go first, without duplicates; other keys stay.
fn merge_json(path: &Path, ours: &str) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut theirs: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a JSON object; fix or remove it", path.display()))?;
    let ours: serde_json::Map<String, serde_json::Value> = serde_json::from_str(ours)?;
    for (key, value) in ours {
        let merged = match (value, theirs.remove(&key)) {
            (serde_json::Value::Array(mut mine), Some(serde_json::Value::Array(old))) => {
                for v in old {
                    if !mine.contains(&v) {
                        mine.push(v);
                    }
                }
                serde_json::Value::Array(mine)
            }
            // `auths`: ours replace theirs for the same registry, others stay.
            (serde_json::Value::Object(mine), Some(serde_json::Value::Object(mut old))) => {
                old.extend(mine);
                serde_json::Value::Object(old)
            }
            (mine, _) => mine,
        };
        theirs.insert(key, merged);
    }
    Ok(serde_json::to_string_pretty(&theirs)? + "\n")
}

/// Writes `files` under `dir`, keeping any file it replaces as `<name>.sealer-backup`;
/// a JSON file already there gets our settings merged into it. A file holding a login is
/// made mode 0600 before anything is written to it.
pub fn write(dir: &Path, files: &[File]) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for f in files {
        let path = dir.join(&f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        if path.exists() {
            let backup = path.with_extension(format!(
                "{}sealer-backup",
                path.extension()
                    .map(|e| format!("{}.", e.to_string_lossy()))
                    .unwrap_or_default()
            ));
            if !backup.exists() {
                std::fs::copy(&path, &backup)
                    .with_context(|| format!("cannot back up {}", path.display()))?;
            }
        }
        let content = if path.extension().is_some_and(|e| e == "json") && path.exists() {
            merge_json(&path, &f.content)?
        } else {
            f.content.clone()
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        if f.secret {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut out = options
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        if f.secret {
            use std::os::unix::fs::PermissionsExt;
            out.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        std::io::Write::write_all(&mut out, content.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(registry: &str) -> Request {
        Request {
            registries: vec![Url::parse(registry).unwrap()],
            upstreams: vec!["docker.io".into(), "quay.io".into()],
            ca: None,
            login: None,
            path_prefixed: false,
            login_file: "/root/.docker/config.json".into(),
        }
    }

    #[test]
    fn containerd_gets_one_hosts_toml_per_upstream_and_a_default() {
        let files = generate(Runtime::Containerd, &req("http://10.0.0.1:5000")).unwrap();
        let paths: Vec<_> = files
            .iter()
            .map(|f| f.path.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            paths,
            [
                "docker.io/hosts.toml",
                "quay.io/hosts.toml",
                "_default/hosts.toml"
            ]
        );
        let hub: toml::Value = toml::from_str(&files[0].content).unwrap();
        assert_eq!(hub["server"].as_str(), Some("https://registry-1.docker.io"));
        assert_eq!(
            hub["host"]["http://10.0.0.1:5000"]["capabilities"],
            toml::Value::Array(vec!["pull".into(), "resolve".into()])
        );
        let default: toml::Value = toml::from_str(&files[2].content).unwrap();
        assert!(default.get("server").is_none());
        let mut with_ca = req("https://sea.hub:5000");
        with_ca
            .registries
            .push(Url::parse("https://10.0.0.2:5000").unwrap());
        with_ca.ca = Some(Ca {
            path: "/etc/sealer/ca.crt".into(),
            pem: "-----BEGIN CERTIFICATE-----\n".into(),
        });
        let files = generate(Runtime::Containerd, &with_ca).unwrap();
        let v: toml::Value = toml::from_str(&files[1].content).unwrap();
        for r in ["https://sea.hub:5000", "https://10.0.0.2:5000"] {
            assert_eq!(v["host"][r]["ca"].as_str(), Some("/etc/sealer/ca.crt"));
        }
        // Both registries, in the order given: containerd tries the second when the
        // first fails.
        let first = files[1].content.find("sea.hub").unwrap();
        assert!(files[1].content[first..].contains("10.0.0.2"));
    }

    #[test]
    fn docker_and_podman() {
        let files = generate(Runtime::Docker, &req("http://10.0.0.1:5000")).unwrap();
        let d: serde_json::Value = serde_json::from_str(&files[0].content).unwrap();
        assert_eq!(d["registry-mirrors"][0], "http://10.0.0.1:5000");
        assert_eq!(d["insecure-registries"][0], "10.0.0.1:5000");
        let mut tls = req("https://sea.hub");
        tls.ca = Some(Ca {
            path: "/x/ca.crt".into(),
            pem: "PEM".into(),
        });
        let files = generate(Runtime::Docker, &tls).unwrap();
        assert!(!files[0].content.contains("insecure"));
        assert_eq!(files[1].path, Path::new("certs.d/sea.hub/ca.crt"));
        assert_eq!(files[1].content, "PEM");
        let files = generate(Runtime::Podman, &tls).unwrap();
        assert_eq!(files[1].path, Path::new("certs.d/sea.hub/ca.crt"));

        let files = generate(Runtime::Podman, &req("http://10.0.0.1:5000")).unwrap();
        let c: toml::Value = toml::from_str(&files[0].content).unwrap();
        let regs = c["registry"].as_array().unwrap();
        assert_eq!(regs[0]["prefix"].as_str(), Some("docker.io"));
        assert_eq!(
            regs[0]["mirror"][0]["location"].as_str(),
            Some("10.0.0.1:5000/docker.io")
        );
        assert_eq!(regs[0]["mirror"][0]["insecure"].as_bool(), Some(true));
        assert_eq!(
            regs[1]["mirror"][0]["location"].as_str(),
            Some("10.0.0.1:5000/quay.io")
        );
    }

    #[test]
    fn a_login_goes_to_containerd_as_a_header_and_to_docker_and_podman_as_auths() {
        let dir = tempfile::tempdir().unwrap();
        let login_path = dir.path().join("login");
        std::fs::write(&login_path, "admin:pa:ss\n").unwrap();
        let mut r = req("https://sea.hub:5000");
        r.registries
            .push(Url::parse("https://10.0.0.2:5000").unwrap());
        r.login = Some(Credentials::read(&login_path).unwrap());
        r.login_file = dir.path().join("docker/config.json");
        let basic = "Basic YWRtaW46cGE6c3M="; // admin:pa:ss
        let files = generate(Runtime::Containerd, &r).unwrap();
        assert!(files.iter().all(|f| f.secret));
        let v: toml::Value = toml::from_str(&files[0].content).unwrap();
        for url in ["https://sea.hub:5000", "https://10.0.0.2:5000"] {
            assert_eq!(
                v["host"][url]["header"]["Authorization"][0].as_str(),
                Some(basic)
            );
        }
        for runtime in [Runtime::Docker, Runtime::Podman] {
            let files = generate(runtime, &r).unwrap();
            let login = files.iter().find(|f| f.secret).unwrap();
            assert_eq!(login.path, r.login_file);
            let c: serde_json::Value = serde_json::from_str(&login.content).unwrap();
            assert_eq!(c["auths"]["sea.hub:5000"]["auth"], "YWRtaW46cGE6c3M=");
            assert_eq!(c["auths"]["10.0.0.2:5000"]["auth"], "YWRtaW46cGE6c3M=");
        }
        // Written 0600, merged into the user's own logins.
        std::fs::create_dir_all(dir.path().join("docker")).unwrap();
        std::fs::write(
            &r.login_file,
            r#"{"auths": {"ghcr.io": {"auth": "eDp5"}}, "credsStore": "pass"}"#,
        )
        .unwrap();
        let files = generate(Runtime::Podman, &r).unwrap();
        write(&dir.path().join("containers"), &files).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(&r.login_file).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&r.login_file).unwrap()).unwrap();
        assert_eq!(c["auths"]["ghcr.io"]["auth"], "eDp5");
        assert_eq!(c["auths"]["sea.hub:5000"]["auth"], "YWRtaW46cGE6c3M=");
        assert_eq!(c["credsStore"], "pass");

        std::fs::write(&login_path, "no-colon\n").unwrap();
        let err = Credentials::read(&login_path).unwrap_err().to_string();
        assert!(err.contains("USER:PASSWORD"), "{err}");
    }

    #[test]
    fn a_path_prefixed_registry_gets_the_upstream_in_containerds_path() {
        let mut r = req("https://harbor.corp");
        r.path_prefixed = true;
        let files = generate(Runtime::Containerd, &r).unwrap();
        let hub: toml::Value = toml::from_str(&files[0].content).unwrap();
        let block = &hub["host"]["https://harbor.corp/v2/docker.io"];
        assert_eq!(block["override_path"].as_bool(), Some(true));
        let quay: toml::Value = toml::from_str(&files[1].content).unwrap();
        assert!(quay["host"].get("https://harbor.corp/v2/quay.io").is_some());
        // Any other registry: no name to prefix with.
        let default: toml::Value = toml::from_str(&files[2].content).unwrap();
        assert!(default["host"].get("https://harbor.corp").is_some());
    }

    #[test]
    fn writing_keeps_a_backup_of_what_was_there() {
        let dir = tempfile::tempdir().unwrap();
        let old = r#"{"data-root": "/data/docker", "registry-mirrors": ["https://m.example", "http://10.0.0.1:5000"]}"#;
        std::fs::write(dir.path().join("daemon.json"), old).unwrap();
        let files = generate(Runtime::Docker, &req("http://10.0.0.1:5000")).unwrap();
        write(dir.path(), &files).unwrap();
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("daemon.json")).unwrap())
                .unwrap();
        assert_eq!(d["data-root"], "/data/docker", "other settings are kept");
        assert_eq!(
            d["registry-mirrors"],
            serde_json::json!(["http://10.0.0.1:5000", "https://m.example"]),
            "ours first, no duplicates"
        );
        assert_eq!(d["insecure-registries"][0], "10.0.0.1:5000");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("daemon.json.sealer-backup")).unwrap(),
            old
        );
        std::fs::write(dir.path().join("daemon.json"), "not json").unwrap();
        let err = write(dir.path(), &files).unwrap_err();
        assert!(
            format!("{err:#}").contains("is not a JSON object"),
            "{err:#}"
        );
    }
}
