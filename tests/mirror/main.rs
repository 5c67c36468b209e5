//! The pull-through mirror (issue 3) with real parts: upstreams are Debian's
//! `docker-registry` (behind a token server) and `sealer-registry` itself; clients are
//! containerd, dockerd, podman and skopeo.

mod clients;
mod fill;
mod protocol;
mod routing;

use std::path::Path;

use sealer_e2e::*;

pub const USER: &str = "mirror-user";
pub const PASSWORD: &str = "mirror-password";

/// A `sealer-registry serve` mirroring the given upstreams, configured by a file (so
/// credentials can be given), plus extra flags.
pub fn mirror(dir: &Path, upstreams_toml: &str, args: &[&str]) -> Registry {
    let cfg = dir.join("mirror.toml");
    std::fs::write(&cfg, upstreams_toml).unwrap();
    let mut all = vec!["--config", cfg.to_str().unwrap()];
    all.extend_from_slice(args);
    Registry::spawn(&dir.join("store"), dir.join("mirror.log"), &all, &[])
}

/// A mirror of Docker Hub served by the registry at `upstream_host`, plus extra flags.
pub fn hub_mirror(dir: &Path, upstream_host: &str, args: &[&str]) -> Registry {
    let upstream = format!("docker.io=http://{upstream_host}");
    let mut all = vec!["--upstream", upstream.as_str()];
    all.extend_from_slice(args);
    mirror(dir, "", &all)
}

/// The `[mirror]` table entry for an upstream with the test credentials.
pub fn upstream_entry(host: &str, endpoint: &str) -> String {
    format!(
        "[[mirror.upstreams]]\nhost = \"{host}\"\nendpoint = \"{endpoint}\"\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\n"
    )
}

pub fn creds() -> String {
    format!("{USER}:{PASSWORD}")
}

pub fn stored_blob(reg: &Registry, digest: &str) -> bool {
    let hex = digest.trim_start_matches("sha256:");
    reg.root
        .join("blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .exists()
}

/// Waits until the mirror has linked a fetched blob into the local repository `repo`
/// (after committing it): from then on requests for it are cache hits.
pub async fn becomes_linked(reg: &Registry, repo: &str, digest: &str) -> bool {
    let hex = digest.trim_start_matches("sha256:");
    let link = reg
        .root
        .join("repositories")
        .join(repo)
        .join("_layers/sha256")
        .join(hex);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if link.exists() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

/// The mirror commits a fetched blob once its digest is verified, which may trail the
/// last byte sent to the client by a moment.
pub async fn becomes_stored(reg: &Registry, digest: &str) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if stored_blob(reg, digest) {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}
