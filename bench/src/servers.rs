//! The two registries under test, each started on a fresh store in the same directory
//! (same filesystem, same disk).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sealer,
    Reference,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Sealer => "sealer-registry",
            Kind::Reference => "docker-registry",
        }
    }
}

pub struct Server {
    child: Child,
    pub base: String,
    pub root: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    pub fn start(kind: Kind, sealer_bin: &Path, work: &Path) -> anyhow::Result<Server> {
        Self::start_with(kind, sealer_bin, work, &[], "")
    }

    /// With extra flags for sealer-registry, or extra YAML for docker-registry's config.
    pub fn start_with(
        kind: Kind,
        sealer_bin: &Path,
        work: &Path,
        sealer_args: &[String],
        reference_yaml: &str,
    ) -> anyhow::Result<Server> {
        let port = free_port();
        let root = work.join(format!("{}-{port}", kind.label()));
        std::fs::create_dir_all(&root)?;
        let log = std::fs::File::create(work.join(format!("{}-{port}.log", kind.label())))?;
        let child = match kind {
            Kind::Sealer => Command::new(sealer_bin)
                .args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--root"])
                .arg(&root)
                .args(sealer_args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("starting sealer-registry")?,
            Kind::Reference => {
                let config = work.join(format!("reference-{port}.yml"));
                std::fs::write(
                    &config,
                    format!(
                        "version: 0.1\nlog: {{level: info, formatter: text, accesslog: {{disabled: false}}}}\n\
                         storage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\n  \
                         cache: {{blobdescriptor: inmemory}}\n  maintenance: {{uploadpurging: {{enabled: false}}}}\n\
                         http: {{addr: 127.0.0.1:{port}}}\n{reference_yaml}",
                        root.display()
                    ),
                )?;
                Command::new("docker-registry")
                    .arg("serve")
                    .arg(&config)
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .context("starting docker-registry (apt install docker-registry)")?
            }
        };
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            root,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// A registry whose store is `prefix` in `bucket`: sealer-registry with `--storage`,
    /// docker-registry with its `s3` driver (streaming blobs itself, as sealer-registry
    /// does by default, rather than redirecting clients to the object store). Returns it
    /// with the time from spawning it to its first answer.
    pub fn start_on_bucket(
        kind: Kind,
        sealer_bin: &Path,
        work: &Path,
        bucket: &sealer_e2e::Bucket,
        prefix: &str,
        addr: Option<&str>,
    ) -> anyhow::Result<(Server, Duration)> {
        let addr = addr.map_or_else(|| format!("127.0.0.1:{}", free_port()), str::to_string);
        let log = std::fs::File::create(work.join(format!("{}-{prefix}.log", kind.label())))?;
        let begun = Instant::now();
        let child = match kind {
            Kind::Sealer => Command::new(sealer_bin)
                .args(["serve", "--addr", &addr, "--storage", &bucket.url(prefix)])
                .envs(bucket.env())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("starting sealer-registry")?,
            Kind::Reference => {
                let config = work.join(format!("reference-{prefix}.yml"));
                let s3 = format!(
                    "{{accesskey: {}, secretkey: {}, region: {}, regionendpoint: \"{}\", bucket: {}, \
                     secure: false, v4auth: true, rootdirectory: /{prefix}, chunksize: 16777216}}",
                    bucket.key_id, bucket.secret, bucket.region, bucket.endpoint, bucket.name
                );
                let yaml = [
                    "version: 0.1".to_string(),
                    "log: {level: warn, formatter: text, accesslog: {disabled: true}}".into(),
                    "storage:".into(),
                    format!("  s3: {s3}"),
                    "  delete: {enabled: true}".into(),
                    "  redirect: {disable: true}".into(),
                    "  cache: {blobdescriptor: inmemory}".into(),
                    "  maintenance: {uploadpurging: {enabled: false}}".into(),
                    format!("http: {{addr: {addr}}}"),
                ];
                std::fs::write(&config, yaml.join("\n") + "\n")?;
                Command::new("docker-registry")
                    .arg("serve")
                    .arg(&config)
                    // Its AWS SDK cannot take a CA bundle with its HTTP transport (and the
                    // endpoint is plain HTTP).
                    .env_remove("AWS_CA_BUNDLE")
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .context("starting docker-registry (apt install docker-registry)")?
            }
        };
        let server = Server {
            child,
            base: format!("http://{addr}"),
            root: work.join(format!("unused-{prefix}")),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answered = std::net::TcpStream::connect(&addr).is_ok_and(|mut s| {
                use std::io::{Read, Write};
                let _ = s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut buf = [0u8; 12];
                s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.1 200")
            });
            if answered {
                break;
            }
            ensure!(Instant::now() < deadline, "{} did not start", kind.label());
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok((server, begun.elapsed()))
    }

    /// `sealer-registry serve --bundle FILE` alone (read-only); returns it with the time
    /// from spawning it to its first answer.
    pub fn serve_bundle(
        sealer_bin: &Path,
        work: &Path,
        bundle: &Path,
    ) -> anyhow::Result<(Server, Duration)> {
        let port = free_port();
        let root = work.join(format!("bundle-{port}"));
        std::fs::create_dir_all(&root)?;
        let log = std::fs::File::create(work.join(format!("bundle-{port}.log")))?;
        let begun = Instant::now();
        let child = Command::new(sealer_bin)
            .args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--bundle"])
            .arg(bundle)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting sealer-registry")?;
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            root,
        };
        let addr = server.base.trim_start_matches("http://").to_string();
        while std::net::TcpStream::connect(&addr).is_err() {
            ensure!(
                begun.elapsed() < Duration::from_secs(60),
                "serve --bundle did not start"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok((server, begun.elapsed()))
    }

    fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = self.base.trim_start_matches("http://").to_string();
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&addr).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("{} did not start", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) the server has used so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the command name (which may hold spaces): utime and stime are the
        // 12th and 13th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let ticks: u64 = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|t| t.parse::<u64>().ok())
            .sum();
        // SAFETY: sysconf only reads a constant.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
        ticks as f64 / hz as f64
    }

    /// Peak resident memory so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// Bytes allocated on disk under the store.
    pub fn disk_used(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            use std::os::unix::fs::MetadataExt;
            let Ok(meta) = std::fs::symlink_metadata(p) else {
                return 0;
            };
            let mut total = meta.blocks() * 512;
            if meta.is_dir() {
                for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                    total += walk(&e.path());
                }
            }
            total
        }
        walk(&self.root)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
