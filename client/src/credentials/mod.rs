//! Logins in a docker `config.json`, read and written as docker does: a credential
//! helper named for the host (`credHelpers`) or for every host (`credsStore`) holds the
//! secret when one is configured; otherwise the `auths` entry does. Everything else in
//! the file is kept as it is.

mod helper;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};
use base64::Engine;
use sealer_registry::oci::docker_hub::{self, HOST as DOCKER_HUB};
use serde::Deserialize;

/// A registry login: user name and password (or token).
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    /// Reads `USER:PASSWORD` (one line) from `path`; a file keeps the password out of
    /// the process list.
    pub fn read(path: &std::path::Path) -> anyhow::Result<Credentials> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the login file {}", path.display()))?;
        let line = text.lines().next().unwrap_or_default();
        match line.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => Ok(Credentials {
                username: user.to_string(),
                password: password.to_string(),
            }),
            _ => bail!("{}: expected one line USER:PASSWORD", path.display()),
        }
    }

    /// The `Basic` credentials: base64 of `user:password`.
    pub fn basic(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.username, self.password))
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:<hidden>", self.username)
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default)]
    creds_store: Option<String>,
    #[serde(default)]
    cred_helpers: HashMap<String, String>,
}

#[derive(Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

impl DockerConfig {
    /// The credential helper that holds `host`'s login, if the file names one.
    fn helper(&self, host: &str) -> Option<&str> {
        let own = hostnames(host)
            .iter()
            .find_map(|k| self.cred_helpers.get(k));
        own.or(self.creds_store.as_ref())
            .map(String::as_str)
            .filter(|h| !h.is_empty())
    }
}

/// The key docker writes `host`'s login under, and gives credential helpers: Docker
/// Hub's legacy index URL, else the host itself.
fn server_url(host: &str) -> String {
    if host == DOCKER_HUB {
        docker_hub::AUTH_KEY.into()
    } else {
        host.to_string()
    }
}

/// The names `host` may go by in `auths` and `credHelpers`.
fn hostnames(host: &str) -> Vec<String> {
    if host == DOCKER_HUB {
        let mut names = vec![docker_hub::AUTH_KEY.to_string(), DOCKER_HUB.to_string()];
        names.extend(docker_hub::ALIASES.map(String::from));
        names
    } else {
        vec![
            host.to_string(),
            format!("https://{host}"),
            format!("http://{host}"),
        ]
    }
}

/// The credentials `path` holds for `host`; `None` when it has none. A credential
/// helper is asked first; what it does not know, `auths` may still hold.
pub fn from_docker_config(path: &Path, host: &str) -> anyhow::Result<Option<Credentials>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read docker config {}", path.display()))?;
    let config: DockerConfig = serde_json::from_str(&text)
        .with_context(|| format!("invalid docker config {}", path.display()))?;
    if let Some(name) = config.helper(host)
        && let Some(c) = helper::get(name, &server_url(host))
            .with_context(|| format!("{}: the login for {host}", path.display()))?
    {
        return Ok(Some(c));
    }
    let Some(entry) = hostnames(host).iter().find_map(|k| config.auths.get(k)) else {
        return Ok(None);
    };
    if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
        return Ok(Some(Credentials {
            username: username.clone(),
            password: password.clone(),
        }));
    }
    let Some(auth) = &entry.auth else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .with_context(|| format!("{}: the auth of {host} is not base64", path.display()))?;
    let text = String::from_utf8(decoded)
        .with_context(|| format!("{}: the auth of {host} is not UTF-8", path.display()))?;
    let (username, password) = text.split_once(':').with_context(|| {
        format!(
            "{}: the auth of {host} is not user:password",
            path.display()
        )
    })?;
    Ok(Some(Credentials {
        username: username.into(),
        password: password.into(),
    }))
}

/// Where a login was saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saved {
    /// In the file's `auths`.
    File,
    /// In the named credential helper (`auths` keeps an empty entry, as docker's does).
    Helper(String),
}

/// Records a login for `host` in the docker config at `file`: in its credential helper
/// when it names one, else in `auths`.
pub fn save_login(file: &Path, host: &str, c: &Credentials) -> anyhow::Result<Saved> {
    let mut config = read_config(file)?;
    let key = server_url(host);
    let saved = match typed(&config, file)?.helper(host) {
        Some(name) => {
            helper::store(name, &key, c)?;
            config["auths"][&key] = serde_json::json!({});
            Saved::Helper(name.to_string())
        }
        None => {
            config["auths"][&key] = serde_json::json!({ "auth": c.basic() });
            Saved::File
        }
    };
    write_config(file, &config)?;
    Ok(saved)
}

/// Removes `host`'s login from `auths` and from its credential helper; returns whether
/// there was one.
pub fn remove_login(file: &Path, host: &str) -> anyhow::Result<bool> {
    if !file.exists() {
        return Ok(false);
    }
    let mut config = read_config(file)?;
    let erased = match typed(&config, file)?.helper(host) {
        Some(name) => helper::erase(name, &server_url(host))?,
        None => false,
    };
    let auths = config["auths"]
        .as_object_mut()
        .expect("read_config makes auths");
    let mut removed = false;
    for key in hostnames(host) {
        removed |= auths.remove(&key).is_some();
    }
    if removed {
        write_config(file, &config)?;
    }
    Ok(removed || erased)
}

fn typed(config: &serde_json::Value, file: &Path) -> anyhow::Result<DockerConfig> {
    serde_json::from_value(config.clone())
        .with_context(|| format!("invalid docker config {}", file.display()))
}

fn read_config(file: &Path) -> anyhow::Result<serde_json::Value> {
    let mut config = match std::fs::read(file) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("{} is not valid JSON", file.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    if !config.is_object() {
        anyhow::bail!("{} does not hold a JSON object", file.display());
    }
    if !config["auths"].is_object() {
        config["auths"] = serde_json::json!({});
    }
    Ok(config)
}

/// Replaces the file by rename, mode 0600: it may hold passwords.
fn write_config(file: &Path, config: &serde_json::Value) -> anyhow::Result<()> {
    sealer_registry::storage::fs::durable::write_file(
        file,
        &serde_json::to_vec_pretty(config)?,
        0o600,
    )
    .with_context(|| format!("cannot write {}", file.display()))
}

#[cfg(test)]
mod tests;
