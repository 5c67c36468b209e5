//! Step 2: `sealer` and `sealer-registry` on every host, in `HOST_DIR/bin`.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use sealer_builder::progress::Progress;

use super::Report;
use super::{HOST_DIR, check_on_all};
use crate::distribute::{self, Blob, quote};
use crate::environment::Environment;
use crate::hosts::Host;

/// `sealer` on the hosts.
pub const HOST_SEALER: &str = "/var/lib/sealer/cluster/bin/sealer";

/// Sends the binaries and installs them. `sealer` goes first and whole (it is what
/// serves the relay, so a host passes it on only once it has it: the hosts that have it
/// double each round); `sealer-registry` then travels host to host as it arrives.
pub async fn install(
    env: &Environment,
    hosts: &[Arc<dyn Host>],
    report: &mut Report,
    progress: &dyn Progress,
) -> anyhow::Result<()> {
    let sealer = binary_blob(&env.state_dir, &env.sealer_bin)?;
    let registry = binary_blob(&env.state_dir, &env.registry_bin)?;
    let root = Path::new(HOST_DIR);
    let ready = format!("set -e\n{}", install_line(&sealer, "sealer"));
    let mut first = env.delivery(hosts, root, std::slice::from_ref(&sealer));
    first.pipelined = false;
    first.prelude = ready.clone();
    report.delivered("sending sealer", first.run(progress).await)?;
    let mut second = env.delivery(hosts, root, std::slice::from_ref(&registry));
    second.prelude = ready.clone();
    report.delivered("sending sealer-registry", second.run(progress).await)?;
    let install = format!("{ready}{}", install_line(&registry, "sealer-registry"));
    check_on_all("installing sealer's binaries", hosts, env.jobs, |_| {
        install.clone()
    })
    .await
}

/// The shell line that installs binary `name` from its blob, unless it is installed.
/// Each installed binary is stamped with its digest, so an unchanged one costs a `cat`
/// rather than a comparison of two large files.
fn install_line(blob: &Blob, name: &str) -> String {
    let src = distribute::host_blob(Path::new(HOST_DIR), &blob.digest);
    format!(
        "mkdir -p {HOST_DIR}/bin\nif [ \"$(cat {HOST_DIR}/bin/.{name}.digest 2>/dev/null)\" != {d} ]; then \
         install -m 0755 {src} {HOST_DIR}/bin/{name}.new && mv {HOST_DIR}/bin/{name}.new {HOST_DIR}/bin/{name} && \
         echo {d} > {HOST_DIR}/bin/.{name}.digest; fi\n",
        d = blob.digest,
        src = quote(&src),
    )
}

/// A binary's digest as last hashed, valid while its size, inode and time are the same.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Known {
    size: u64,
    inode: u64,
    mtime_ns: i128,
    digest: String,
}

/// `path` as a blob; its digest is remembered in `state_dir/binaries.json` by stat data,
/// so a re-run does not hash the binaries again.
fn binary_blob(state_dir: &Path, path: &Path) -> anyhow::Result<Blob> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let stat = |digest: String| Known {
        size: meta.len(),
        inode: meta.ino(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        digest,
    };
    let cache_file = state_dir.join("binaries.json");
    let mut cache: BTreeMap<PathBuf, Known> = std::fs::read(&cache_file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if let Some(k) = cache.get(path)
        && *k == stat(k.digest.clone())
        && let Ok(digest) = k.digest.parse()
    {
        return Ok(Blob {
            digest,
            path: path.to_path_buf(),
            size: meta.len(),
        });
    }
    let blob = Blob::of_file(path.to_path_buf())
        .with_context(|| format!("cannot read {}", path.display()))?;
    cache.insert(path.to_path_buf(), stat(blob.digest.to_string()));
    // A cache that cannot be written only costs the hashing next time.
    if std::fs::create_dir_all(state_dir).is_ok() {
        if let Ok(mut tmp) = tempfile::NamedTempFile::new_in(state_dir) {
            use std::io::Write;
            if tmp.write_all(&serde_json::to_vec_pretty(&cache)?).is_ok() {
                let _ = tmp.persist(&cache_file);
            }
        }
    }
    Ok(blob)
}
