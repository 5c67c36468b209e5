//! Starting and stopping `sealer-registry` processes on private stores.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The host an in-process registry's URLs name (nothing resolves it: requests go through
/// [`Registry::exec`]).
pub const IN_PROCESS_HOST: &str = "registry.in-process";

/// Sends a request through a [`Registry`]: `.via(&reg)` where a client would `.send()`.
pub trait Via {
    fn via(self, reg: &Registry) -> impl Future<Output = reqwest::Result<reqwest::Response>>;
}

impl Via for reqwest::RequestBuilder {
    fn via(self, reg: &Registry) -> impl Future<Output = reqwest::Result<reqwest::Response>> {
        reg.exec(self)
    }
}

/// A CA and a certificate for `localhost` and `127.0.0.1` in `out` (`ca.crt`, `tls.crt`,
/// `tls.key`), made by `sealer-registry cert`.
pub fn localhost_pki(out: &Path) {
    pki_for(out, "localhost", "127.0.0.1");
}

/// A CA, and a certificate for `domain` and `ip`, in `out`.
pub fn pki_for(out: &Path, domain: &str, ip: &str) {
    crate::tools::run(
        Command::new(binary("sealer-registry"))
            .args(["cert", "--domain", domain, "--ip", ip, "--out"])
            .arg(out),
    );
}

/// Builds the workspace binaries once per test process, so a test never runs a stale
/// binary, then returns the path of `name`.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        // target/<profile>/deps/<test-exe>
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>")
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        // The same build as `scripts/test` runs first, so the feature set (and with it the
        // artifacts) is shared instead of rebuilt.
        cmd.args(["build", "--quiet", "--workspace", "--all-targets"]);
        // `cargo test` gives the test its package's variables (name, version, folder);
        // ring's build script reruns when they change, so passing them on would rebuild
        // half the tree here and again at the next plain `cargo build`.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let per_package = [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
            ];
            if per_package.iter().any(|p| key.starts_with(p)) || key == "CARGO_PRIMARY_PACKAGE" {
                cmd.env_remove(key.as_ref());
            }
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build for the binaries");
        assert!(status.success(), "building the binaries failed");
        profile_dir
    });
    let path = dir.join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// A running `sealer-registry serve` on 127.0.0.1 with its own store.
pub struct Registry {
    child: Option<Child>,
    /// `127.0.0.1:PORT`
    pub host: String,
    /// `http` or `https`, as the registry announced.
    pub scheme: String,
    /// User and password the HTTP helpers sign in with (Basic), if any.
    pub login: Option<(String, String)>,
    pub root: PathBuf,
    pub log: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    /// Started without `--root`: bundles only, read-only.
    without_store: bool,
    /// `--storage s3://…` instead of `--root`.
    storage: Option<String>,
    /// The bucket and prefix of the store, when it is on object storage.
    pub bucket: Option<(crate::objectstore::Bucket, String)>,
    /// The open-file limit (soft and hard) to start it with.
    nofile: Option<u64>,
    /// Driven in this process, without a socket ([`Registry::in_process`]).
    router: Option<axum::Router>,
    _tmp: Option<tempfile::TempDir>,
}

/// Whether in-process registries keep their store on object storage (a shared Garage
/// node), as `scripts/test` runs the spec suite a second time: `SEALER_TEST_STORAGE=s3`.
pub fn on_object_storage() -> bool {
    std::env::var("SEALER_TEST_STORAGE").is_ok_and(|v| v == "s3")
}

impl Registry {
    /// A registry on a fresh temporary store.
    pub fn start() -> Registry {
        Self::start_with(&[])
    }

    /// With `SEALER_TEST_STORAGE=s3`, the store is a fresh prefix of a shared Garage
    /// bucket ([`on_object_storage`]).
    pub fn start_with(args: &[&str]) -> Registry {
        if on_object_storage() {
            let prefix = format!("run-{}", hex::encode(crate::random_bytes(8)));
            return Registry::on_bucket(crate::objectstore::shared_garage(), &prefix, args);
        }
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path().join("store");
        let mut r = Registry::spawn(&root, tmp.path().join("registry.log"), args, &[]);
        r._tmp = Some(tmp);
        r
    }

    /// A registry whose store is `prefix` in `bucket` (several may share one), with
    /// extra flags.
    pub fn on_bucket(bucket: &crate::objectstore::Bucket, prefix: &str, args: &[&str]) -> Registry {
        let mut r = Registry::unlaunched_on_bucket(bucket, prefix, args);
        r.launch("127.0.0.1:0");
        r
    }

    /// As [`Registry::on_bucket`], listening on `addr` (a fixed port, for a load
    /// balancer's list of replicas).
    pub fn on_bucket_at(
        bucket: &crate::objectstore::Bucket,
        prefix: &str,
        args: &[&str],
        addr: &str,
    ) -> Registry {
        let mut r = Registry::unlaunched_on_bucket(bucket, prefix, args);
        r.launch(addr);
        r
    }

    fn unlaunched_on_bucket(
        bucket: &crate::objectstore::Bucket,
        prefix: &str,
        args: &[&str],
    ) -> Registry {
        let tmp = tempfile::tempdir().expect("temp dir");
        let env = bucket.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut r = Registry::unlaunched(
            &tmp.path().join("no-folder"),
            tmp.path().join("registry.log"),
            args,
            &env,
        );
        r.storage = Some(bucket.url(prefix));
        r.bucket = Some((bucket.clone(), prefix.to_string()));
        r._tmp = Some(tmp);
        r
    }

    /// The objects of the store under `under` (e.g. `blobs`), with their content: files
    /// under the root, or objects under the bucket's prefix.
    pub async fn stored(&self, under: &str) -> Vec<(String, Vec<u8>)> {
        use futures::TryStreamExt;
        use object_store::{ObjectStore, ObjectStoreExt};
        let Some((bucket, prefix)) = &self.bucket else {
            let mut out = Vec::new();
            let mut dirs = vec![self.root.join(under)];
            while let Some(d) = dirs.pop() {
                let Ok(entries) = std::fs::read_dir(&d) else {
                    continue;
                };
                for e in entries.flatten() {
                    if e.file_type().unwrap().is_dir() {
                        dirs.push(e.path());
                    } else {
                        out.push((
                            e.path().display().to_string(),
                            std::fs::read(e.path()).unwrap(),
                        ));
                    }
                }
            }
            return out;
        };
        let client = bucket.client();
        let at = object_store::path::Path::from(format!("{prefix}/{under}"));
        let metas: Vec<_> = client.list(Some(&at)).try_collect().await.unwrap();
        let mut out = Vec::new();
        for m in metas {
            let data = client
                .get(&m.location)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            out.push((m.location.to_string(), data.to_vec()));
        }
        out
    }

    /// A registry serving `bundles` only (no `--root`): read-only.
    pub fn serve_bundles(bundles: &[&Path]) -> Registry {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut args = Vec::new();
        for b in bundles {
            args.push("--bundle".to_string());
            args.push(b.display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut r = Registry::unlaunched(
            &tmp.path().join("no-store"),
            tmp.path().join("registry.log"),
            &args,
            &[],
        );
        r.without_store = true;
        r._tmp = Some(tmp);
        r.launch("127.0.0.1:0");
        r
    }

    /// A registry on `root` (kept by the caller), logging to `log`, with extra flags and
    /// environment variables.
    pub fn spawn(root: &Path, log: PathBuf, args: &[&str], envs: &[(&str, &str)]) -> Registry {
        let mut r = Registry::unlaunched(root, log, args, envs);
        r.launch("127.0.0.1:0");
        r
    }

    /// As [`Registry::start_with`], with an open-file limit of `nofile` (as `ulimit -n`).
    pub fn start_with_nofile(args: &[&str], nofile: u64) -> Registry {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut r = Registry::unlaunched(
            &tmp.path().join("store"),
            tmp.path().join("registry.log"),
            args,
            &[],
        );
        r.nofile = Some(nofile);
        r._tmp = Some(tmp);
        r.launch("127.0.0.1:0");
        r
    }

    /// The settings of a registry not started yet.
    fn unlaunched(root: &Path, log: PathBuf, args: &[&str], envs: &[(&str, &str)]) -> Registry {
        Registry {
            child: None,
            host: String::new(),
            scheme: "http".into(),
            login: None,
            root: root.to_path_buf(),
            log,
            args: args.iter().map(|s| s.to_string()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            without_store: false,
            storage: None,
            bucket: None,
            nofile: None,
            router: None,
            _tmp: None,
        }
    }

    /// A registry on a fresh temporary store, driven in this process through its router
    /// (tower's `oneshot`): no process, no socket. For tests of what the registry answers,
    /// not of how it runs (no restart, no log file, no real client).
    pub async fn in_process() -> Registry {
        Self::in_process_with(&[]).await
    }

    /// As [`Registry::in_process`], with `sealer-registry serve`'s flags.
    pub async fn in_process_with(args: &[&str]) -> Registry {
        #[derive(clap::Parser)]
        struct Serve {
            #[command(flatten)]
            args: sealer_registry::config::ServeArgs,
        }
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path().join("store");
        let bucket = on_object_storage().then(|| {
            let prefix = format!("spec-{}", hex::encode(crate::random_bytes(8)));
            (crate::objectstore::shared_garage().clone(), prefix)
        });
        let mut argv = vec!["serve".to_string()];
        match &bucket {
            Some((b, prefix)) => {
                argv.extend(["--storage".into(), b.url(prefix)]);
                for (k, v) in b.env() {
                    // SAFETY: set before the store is opened, to the same values by
                    // every test of this process.
                    unsafe { std::env::set_var(k, v) };
                }
            }
            None => argv.extend(["--root".into(), root.display().to_string()]),
        }
        argv.extend(args.iter().map(|a| a.to_string()));
        let serve: Serve = clap::Parser::parse_from(argv);
        let settings = sealer_registry::config::Settings::resolve(&serve.args).expect("settings");
        let router = sealer_registry::server::router_in_process(&settings)
            .await
            .expect("the registry's router");
        let mut r = Registry::unlaunched(&root, tmp.path().join("registry.log"), args, &[]);
        r.host = IN_PROCESS_HOST.to_string();
        r.router = Some(router);
        r.bucket = bucket;
        r._tmp = Some(tmp);
        r
    }

    /// Sends `request` to this registry: over its socket, or through its router when it
    /// runs in process.
    pub async fn exec(
        &self,
        request: reqwest::RequestBuilder,
    ) -> reqwest::Result<reqwest::Response> {
        let Some(router) = &self.router else {
            return request.send().await;
        };
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let request: axum::http::Request<reqwest::Body> = request.build()?.try_into()?;
        let (mut parts, body) = request.into_parts();
        // What hyper adds on the wire.
        parts
            .headers
            .entry("host")
            .or_insert(IN_PROCESS_HOST.parse().unwrap());
        if let Some(len) = http_body::Body::size_hint(&body).exact() {
            parts.headers.entry("content-length").or_insert(len.into());
        }
        let request = axum::http::Request::from_parts(parts, axum::body::Body::new(body));
        let response = router.clone().oneshot(request).await.expect("infallible");
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("the response body").to_bytes();
        Ok(axum::http::Response::from_parts(parts, bytes).into())
    }

    fn launch(&mut self, addr: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut cmd = Command::new(binary("sealer-registry"));
        cmd.arg("serve").arg("--addr").arg(addr);
        if let Some(url) = &self.storage {
            cmd.arg("--storage").arg(url);
        } else if !self.without_store {
            cmd.arg("--root").arg(&self.root);
        }
        cmd.args(&self.args).stdout(Stdio::piped()).stderr(log);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        if let Some(n) = self.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: only setrlimit, which is async-signal-safe, runs in the child.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("starting sealer-registry");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .unwrap_or_else(|| {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("sealer-registry did not start: {line:?}\n--- log ---\n{log}")
            });
        let (scheme, host) = url.split_once("://").expect("a URL");
        self.scheme = scheme.to_string();
        self.host = host.to_string();
        self.child = Some(child);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.host, path)
    }

    /// An HTTP client that signs in as [`Registry::login`], if set.
    pub fn client(&self) -> reqwest::Client {
        let Some((user, password)) = &self.login else {
            return crate::http::client();
        };
        crate::http::client_as(user, password)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("sealer-registry did not stop within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts again on the same store and the same port.
    pub fn restart(&mut self) {
        self.kill9();
        let addr = self.host.clone();
        // The port was just freed; retry briefly in case it lingers.
        for _ in 0..50 {
            let probe = std::net::TcpListener::bind(&addr);
            if probe.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.launch(&addr);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log once `pred` holds for it (lines are written by a background thread, a
    /// moment after the response); panics naming `what` after 10 s.
    pub fn log_where(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.log_text();
            if pred(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "log never showed {what}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill9();
    }
}
