//! A cluster's state on the machine running sealer, under `~/.sealer/<cluster>/`:
//! `Clusterfile` (the cluster as last applied, mode 0600 as it may hold passwords) and
//! `pki/` (the registry's CA and certificate). `apply`, `scale-up` and `delete` start
//! from it.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::clusterfile::{self, Cluster};

pub fn dir(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join(name)
}

pub fn clusterfile_path(state_dir: &Path, name: &str) -> PathBuf {
    dir(state_dir, name).join("Clusterfile")
}

/// Records `cluster` as applied.
pub fn save(state_dir: &Path, cluster: &Cluster) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = dir(state_dir, &cluster.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    tmp.write_all(cluster.source.render().as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(dir.join("Clusterfile"))?;
    Ok(())
}

/// The cluster `name` as last applied, if sealer has run it from this machine.
pub fn load(state_dir: &Path, name: &str) -> anyhow::Result<Option<Cluster>> {
    let path = clusterfile_path(state_dir, name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    Ok(Some(clusterfile::parse(
        &text,
        &path.display().to_string(),
    )?))
}

/// Like [`load`], with an error that says what to do when there is no such cluster.
pub fn require(state_dir: &Path, name: &str) -> anyhow::Result<Cluster> {
    load(state_dir, name)?.with_context(|| {
        format!(
            "no cluster {name:?} was run from this machine ({} is missing); give its Clusterfile with -f, or --cluster NAME",
            clusterfile_path(state_dir, name).display()
        )
    })
}

/// Drops the cluster's state.
pub fn forget(state_dir: &Path, name: &str) -> anyhow::Result<()> {
    let dir = dir(state_dir, name);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", dir.display()))
        }
        _ => Ok(()),
    }
}
