//! How a `RUN` command runs on the build host: in the image's root folder, with a clean
//! environment, a time limit, and every process it started killed when it ends; with
//! `--isolate`, in mount, PID and network namespaces of its own where the store is
//! read-only and the builder's credentials are hidden.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::kubefile::Command;

/// What a `RUN` may do, beyond running in the image's folder.
#[derive(Debug, Clone)]
pub struct RunLimits {
    /// A command still running after this long is killed and fails the build.
    pub timeout: Duration,
    /// Run in namespaces of its own (`unshare`): no network, its own process tree, the
    /// store read-only, the builder's credentials out of sight.
    pub isolate: bool,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            timeout: Duration::from_secs(3600),
            isolate: false,
        }
    }
}

/// The `PATH` a `RUN` gets after the image's own `bin/`.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where one `RUN` runs and what it sees.
pub struct RunPlace<'a> {
    /// The image's root folder: the working folder, and the only place written to.
    pub root: &'a Path,
    /// An empty folder for `HOME`.
    pub home: &'a Path,
    /// The store: read-only when isolated.
    pub store: &'a Path,
    /// Folders hidden (an empty folder over each) when isolated: credentials.
    pub hidden: Vec<PathBuf>,
    /// `ARG`s then `ENV`s (an `ENV` wins over an `ARG` of the same name).
    pub vars: Vec<(String, String)>,
}

/// Runs `command`; fails if it cannot start, exits non-zero, or outlives the limit.
pub async fn run(
    command: &Command,
    place: &RunPlace<'_>,
    limits: &RunLimits,
) -> anyhow::Result<()> {
    let argv: Vec<String> = match command {
        Command::Exec(argv) => argv.clone(),
        Command::Shell(line) => vec!["/bin/sh".into(), "-c".into(), line.clone()],
    };
    let mut cmd = if limits.isolate {
        isolated(&argv, place)?
    } else {
        let mut c = tokio::process::Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    };
    cmd.current_dir(place.root)
        .env_clear()
        .envs(place.vars.iter().cloned())
        .env(
            "PATH",
            format!("{}:{SYSTEM_PATH}", place.root.join("bin").display()),
        )
        .env("HOME", place.home)
        .env("SEALER_ROOTFS", place.root)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        // Its own process group: what it leaves running is killed with it.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().context("could not start")?;
    let group = child.id().map(|id| id as i32);
    let waited = tokio::time::timeout(limits.timeout, child.wait()).await;
    if let Some(pgid) = group {
        // SAFETY: a signal to the process group this function started.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
    match waited {
        Err(_) => {
            let _ = child.wait().await;
            bail!("did not finish within {:?} and was killed", limits.timeout)
        }
        Ok(status) => {
            let status = status?;
            if !status.success() {
                bail!("failed ({status})");
            }
            Ok(())
        }
    }
}

/// `argv` under `unshare`: new mount, PID and network namespaces, in which the store is
/// bound read-only (the root folder stays writable) and each hidden folder is covered.
fn isolated(argv: &[String], place: &RunPlace<'_>) -> anyhow::Result<tokio::process::Command> {
    let unshare = ["/usr/bin/unshare", "/bin/unshare"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("--isolate needs util-linux's unshare")?;
    let q = |p: &Path| crate::shell::quote(&p.to_string_lossy());
    // The root folder and HOME become mounts of their own first, so they stay writable
    // under the read-only store that holds them.
    let mut setup = format!(
        "set -e\nmount --bind {root} {root}\nmount --bind {home} {home}\n\
         mount --rbind {store} {store}\nmount -o remount,bind,ro {store}\n",
        root = q(place.root),
        home = q(place.home),
        store = q(place.store),
    );
    for h in place.hidden.iter().filter(|h| h.is_dir()) {
        setup.push_str(&format!(
            "mount -t tmpfs -o size=1m,mode=0700 none {}\n",
            q(h)
        ));
    }
    setup.push_str("exec \"$@\"\n");
    let mut c = tokio::process::Command::new(unshare);
    c.args([
        "--mount",
        "--pid",
        "--net",
        "--fork",
        "--kill-child",
        "--mount-proc",
    ])
    .args(["--propagation", "private", "/bin/sh", "-c", &setup, "sh"])
    .args(argv);
    Ok(c)
}
