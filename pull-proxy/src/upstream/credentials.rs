//! Credentials from a docker `config.json` (`auths` entries).

use std::path::Path;

use anyhow::Context;
use base64::Engine;
use serde::Deserialize;

use crate::config::{Credentials, DOCKER_HUB};

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::HashMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// The credentials `path` holds for `host`; `None` when it has none.
pub fn from_docker_config(path: &Path, host: &str) -> anyhow::Result<Option<Credentials>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read docker config {}", path.display()))?;
    let config: DockerConfig = serde_json::from_str(&text)
        .with_context(|| format!("invalid docker config {}", path.display()))?;
    // Docker writes Docker Hub under its legacy index URL.
    let keys: Vec<String> = if host == DOCKER_HUB {
        vec![
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            "registry-1.docker.io".into(),
            DOCKER_HUB.into(),
        ]
    } else {
        vec![
            host.to_string(),
            format!("https://{host}"),
            format!("http://{host}"),
        ]
    };
    let Some(entry) = keys.iter().find_map(|k| config.auths.get(k)) else {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_auths_including_docker_hubs_legacy_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        std::fs::write(
            &path,
            format!(r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"quay.io":{{"username":"bob","password":"pw"}}}}}}"#),
        )
        .unwrap();
        let hub = from_docker_config(&path, "docker.io").unwrap().unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("alice", "s3cret")
        );
        let quay = from_docker_config(&path, "quay.io").unwrap().unwrap();
        assert_eq!(quay.username, "bob");
        assert!(from_docker_config(&path, "ghcr.io").unwrap().is_none());
    }
}
