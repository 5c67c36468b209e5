//! The pull-through mirror (issue 3) with real parts: upstreams are Debian's
//! `docker-registry` (behind a token server) and `sealer-registry` itself; clients are
//! containerd, dockerd, podman and skopeo.

mod clients;
mod fill;
mod protocol;
mod routing;

use std::path::Path;
use std::process::Command;

use sealer_e2e::*;

pub const USER: &str = "mirror-user";
pub const PASSWORD: &str = "mirror-password";

/// Copies the test image into `registry/<dest>` with skopeo (credentials when given).
pub fn skopeo_push(registry_host: &str, dest: &str, creds: Option<&str>) {
    let mut cmd = Command::new(require("skopeo"));
    cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
    if let Some(c) = creds {
        cmd.args(["--dest-creds", c]);
    }
    cmd.arg(format!("oci:{}:app", test_image_layout().display()))
        .arg(format!("docker://{registry_host}/{dest}"));
    run(&mut cmd);
}

/// A `sealer-registry serve` mirroring the given upstreams, configured by a file (so
/// credentials can be given), plus extra flags.
pub fn mirror(dir: &Path, upstreams_toml: &str, args: &[&str]) -> Registry {
    let cfg = dir.join("mirror.toml");
    std::fs::write(&cfg, upstreams_toml).unwrap();
    let mut all = vec!["--config", cfg.to_str().unwrap()];
    all.extend_from_slice(args);
    Registry::spawn(&dir.join("store"), dir.join("mirror.log"), &all, &[])
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
