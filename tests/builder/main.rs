//! The `sealer` binary's builder commands, run as a user runs them: discovery, build,
//! the image commands, push and pull against real registries (ours and Debian's
//! `docker-registry`), checked with skopeo and oras-py.

mod build;
mod bundle;
mod commands;
mod discover;
mod hostile;
mod steps;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sealer_e2e::*;

/// `examples/` built as `example.com/shop:1.0` in a new store, its images taken from a
/// new upstream (kept running for the caller); returns the upstream, the store and the
/// digest.
pub fn built_example() -> (DockerRegistry, Sealer, String) {
    let up = example_upstream();
    let sealer = Sealer::new();
    let digest = sealer.build(
        "example.com/shop:1.0",
        examples(),
        &upstream_flags(&up.host),
    );
    (up, sealer, digest)
}

/// `sealer` on a store of its own, with its own docker config.json.
#[derive(Default)]
pub struct Sealer {
    dir: TempStore,
    /// Extra environment for every command.
    env: Vec<(String, PathBuf)>,
}

/// A temporary folder for one `sealer` store.
pub struct TempStore(tempfile::TempDir);

impl Default for TempStore {
    fn default() -> Self {
        TempStore(tempfile::tempdir().unwrap())
    }
}

impl TempStore {
    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Sealer {
    pub fn new() -> Sealer {
        Sealer::default()
    }

    /// This sealer with `key=value` in every command's environment.
    pub fn with_env(mut self, key: &str, value: &Path) -> Sealer {
        self.env.push((key.to_string(), value.to_path_buf()));
        self
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn auth_file(&self) -> PathBuf {
        self.dir.path().join("docker/config.json")
    }

    pub fn cmd<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new(binary("sealer"));
        c.arg("--root")
            .arg(self.root())
            .arg("--auth-file")
            .arg(self.auth_file())
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        output(&mut self.cmd(args))
    }

    /// Runs a command that must succeed; returns its standard output.
    pub fn ok<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(&self, args: &[S]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "sealer {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail; returns its standard error.
    pub fn fails<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(&self, args: &[S]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "sealer {args:?} should fail:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// `sealer images --json`.
    pub fn images(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&["images", "--json"])).unwrap()
    }

    pub fn inspect(&self, image: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["inspect", image])).unwrap()
    }

    /// Builds `context` as `tag` with extra flags; returns the image's digest.
    pub fn build(&self, tag: &str, context: &Path, flags: &[String]) -> String {
        let mut args: Vec<String> = vec!["build".into(), "-t".into(), tag.into()];
        args.extend_from_slice(flags);
        args.push(context.display().to_string());
        let out = self.ok(&args);
        digest_of_line(&out)
    }

    /// Every file under the store's `blobs/`.
    pub fn blob_count(&self) -> usize {
        fn walk(d: &Path, n: &mut usize) {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                if e.file_type().unwrap().is_dir() {
                    walk(&e.path(), n);
                } else {
                    *n += 1;
                }
            }
        }
        let mut n = 0;
        walk(&self.root().join("blobs"), &mut n);
        n
    }
}

/// The digest in a `NAME sha256:…` line.
pub fn digest_of_line(out: &str) -> String {
    let d = out
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(
        d.starts_with("sha256:") && d.len() == 71,
        "no digest in {out:?}"
    );
    d
}

/// The images table row of `name:tag`.
pub fn image_row<'a>(
    rows: &'a [serde_json::Value],
    name: &str,
    tag: &str,
) -> &'a serde_json::Value {
    rows.iter()
        .find(|r| r["name"] == name && r["tag"] == tag)
        .unwrap_or_else(|| panic!("{name}:{tag} is not listed: {rows:#?}"))
}
