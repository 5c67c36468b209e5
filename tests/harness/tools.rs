//! Real clients: finding them (a missing one fails the test, never skips it) and running
//! them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The path of a required program. The test command installs every client; one that is
/// missing is a broken test machine, so the test fails saying which.
pub fn require(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in
        std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
    {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("required client `{program}` is not installed; `scripts/test` installs it (see README)");
}

/// Runs a command to completion; panics with its output when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// A `pass` password store of its own (a fresh GnuPG key without passphrase) for
/// `docker-credential-pass`, the credential helper docker uses on a machine that has
/// `pass`; the environment that selects it.
pub fn password_store(dir: &Path) -> [(&'static str, PathBuf); 2] {
    let gnupg = dir.join("gnupg");
    let store = dir.join("pass");
    std::fs::create_dir_all(&gnupg).unwrap();
    std::fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let env = [("GNUPGHOME", gnupg), ("PASSWORD_STORE_DIR", store)];
    let with_env = |program: &str| {
        let mut c = Command::new(require(program));
        c.envs(env.iter().map(|(k, v)| (k, v)));
        c
    };
    run(with_env("gpg").args([
        "--batch",
        "--passphrase",
        "",
        "--quick-gen-key",
        "sealer-test@example.com",
        "default",
        "default",
        "never",
    ]));
    run(with_env("pass").args(["init", "sealer-test@example.com"]));
    env
}

/// `tests/fixtures` in the source tree.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// An OCI image layout with one runnable test image tagged `app` (see
/// `fixtures/make-image.sh`), built once per test process.
pub fn test_image_layout() -> &'static Path {
    static LAYOUT: OnceLock<PathBuf> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        require("umoci");
        let dir = tempfile::Builder::new()
            .prefix("sealer-test-image")
            .tempdir()
            .unwrap()
            .keep();
        run(Command::new(fixtures().join("make-image.sh"))
            .arg(&dir)
            .arg("app"));
        dir.join("oci")
    })
}

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

/// podman or buildah on a private image store (vfs: works in any sandbox).
pub fn containers_tool(program: &str, store: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(require(program));
    cmd.arg("--root")
        .arg(store.join("root"))
        .arg("--runroot")
        .arg(store.join("run"))
        .args(["--storage-driver", "vfs"])
        .args(args);
    cmd
}

/// Fails the test unless python3 can import oras-py.
pub fn require_oras_py() {
    require("python3");
    let probe = output(Command::new("python3").args(["-c", "import oras.client"]));
    assert!(
        probe.status.success(),
        "oras-py is not installed; `scripts/test` installs it (pip install oras)"
    );
}
