//! Rules for the Clusterfile's values that reach a host's shell, its `/etc/hosts` or
//! `rm -rf`: names and folders are checked here, once, before anything runs.

use std::path::{Component, Path, PathBuf};

/// Folders a cluster's data must never be put in directly: `sealer delete` removes
/// `<dataRoot>/<name>`, so `dataRoot: /etc` with `name: default` would remove
/// `/etc/default`.
const SYSTEM_FOLDERS: &[&str] = &[
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/usr/bin",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local",
    "/usr/sbin",
    "/usr/share",
    "/var",
    "/var/cache",
    "/var/lib",
    "/var/log",
    "/var/run",
    "/var/spool",
    "/var/tmp",
];

/// Trees no cluster data belongs in at any depth.
const KERNEL_TREES: &[&str] = &["/proc", "/sys", "/dev"];

/// `spec.dataRoot`: an absolute, normalised folder that is not `/`, a system folder, or
/// inside one of the kernel's trees.
pub fn data_root(path: &Path) -> Result<PathBuf, String> {
    let text = path.to_string_lossy();
    if !path.is_absolute() {
        return Err(format!("{text:?} must be an absolute path"));
    }
    if text.chars().any(char::is_control) {
        return Err(format!("{text:?} has a control character"));
    }
    let normal: PathBuf = path.components().collect();
    let dots = path
        .components()
        .any(|c| matches!(c, Component::CurDir | Component::ParentDir));
    if dots || normal.as_os_str() != path.as_os_str() {
        return Err(format!(
            "{text:?} is not normalised (no '.', '..', '//' or trailing '/'): write {:?}",
            normal.display().to_string()
        ));
    }
    if normal == Path::new("/") || SYSTEM_FOLDERS.iter().any(|f| normal == Path::new(f)) {
        return Err(format!(
            "{text:?} is a system folder; `sealer delete` removes <dataRoot>/<name>, so \
             give a folder of sealer's own, such as /var/lib/sealer/data"
        ));
    }
    if KERNEL_TREES.iter().any(|t| normal.starts_with(t)) {
        return Err(format!("{text:?} is inside a kernel file system"));
    }
    Ok(normal)
}

/// A DNS name (`sea.hub`, `registry-1.corp`): labels of letters, digits and '-', neither
/// starting nor ending with '-', at most 63 characters each and 253 in all. Such names
/// go into `/etc/hosts` and runtime configuration as they are.
pub fn dns_name(name: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a DNS name (labels of letters, digits and '-', separated by '.')"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_root_is_a_folder_of_its_own() {
        for ok in [
            "/var/lib/sealer/data",
            "/data/sealer",
            "/srv/clusters",
            "/opt/x",
        ] {
            assert_eq!(data_root(Path::new(ok)).unwrap(), Path::new(ok), "{ok}");
        }
        for (bad, why) in [
            ("/", "system folder"),
            ("/etc", "system folder"),
            ("/srv", "system folder"),
            ("/var/lib", "system folder"),
            ("var/lib/x", "absolute"),
            ("/var/lib/../..", "normalised"),
            ("/var/./lib/x", "normalised"),
            ("/data//x", "normalised"),
            ("/data/x/", "normalised"),
            ("/proc/1/root", "kernel"),
            ("/dev/shm/x", "kernel"),
            ("/data/a\nb", "control"),
        ] {
            let err = data_root(Path::new(bad)).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn dns_names_are_labels_and_dots() {
        for ok in ["sea.hub", "registry-1.corp", "localhost", "10.0.0.1", "A.b"] {
            dns_name(ok).unwrap();
        }
        for bad in [
            "",
            "sea.hub\n10.0.0.9 evil",
            "a..b",
            "-a.b",
            "a-.b",
            "a b",
            "a_b",
            "a/b",
            ".a",
        ] {
            assert!(dns_name(bad).is_err(), "{bad:?}");
        }
        assert!(dns_name(&"a".repeat(64)).is_err());
    }
}
