//! Private containerd and dockerd instances for client tests: everything under a
//! temporary directory, stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tools::{output, require};

pub(crate) fn wait_for(what: &str, log: &Path, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        if Instant::now() > deadline {
            panic!(
                "{what} did not become ready:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(crate) fn terminate(child: &mut Child) {
    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// containerd with its own root, state and socket; the CRI plugin is off (it wants a
/// fixed streaming port).
pub struct Containerd {
    child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Containerd {
    pub fn start() -> Containerd {
        let bin = require("containerd");
        require("ctr");
        let dir = tempfile::Builder::new()
            .prefix("ctrd")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        let socket = d.join("containerd.sock");
        let config = d.join("config.toml");
        std::fs::write(
            &config,
            format!(
                r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = "{debug}"
[metrics]
  address = ""
"#,
                root = d.join("root").display(),
                state = d.join("state").display(),
                sock = socket.display(),
                debug = d.join("debug.sock").display(),
            ),
        )
        .unwrap();
        let log = d.join("containerd.log");
        let child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting containerd");
        let c = Containerd {
            child,
            dir,
            socket,
            log,
        };
        wait_for("containerd", &c.log, || {
            c.socket.exists()
                && output(
                    Command::new("ctr")
                        .arg("--address")
                        .arg(&c.socket)
                        .arg("version"),
                )
                .status
                .success()
        });
        c
    }

    /// `ctr` talking to this containerd.
    pub fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(&self.socket);
        cmd
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// dockerd on a private socket and data root, using `containerd`, with
/// `registry-mirrors` set to `mirror` (an `http://host:port` URL).
pub struct Dockerd {
    child: Child,
    pub dir: tempfile::TempDir,
    pub host: String,
    pub log: PathBuf,
}

impl Dockerd {
    pub fn start(containerd: &Containerd, mirror: &str) -> Dockerd {
        let bin = require("dockerd");
        require("docker");
        let dir = tempfile::Builder::new()
            .prefix("dockerd")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        let socket = d.join("docker.sock");
        let config = d.join("daemon.json");
        let mirror_host = mirror.trim_start_matches("http://");
        let cfg = serde_json::json!({
            "data-root": d.join("data"),
            "exec-root": d.join("exec"),
            "pidfile": d.join("dockerd.pid"),
            "hosts": [format!("unix://{}", socket.display())],
            "containerd": containerd.socket,
            "containerd-namespace": "dockerd",
            "containerd-plugins-namespace": "dockerd-plugins",
            "storage-driver": "vfs",
            "iptables": false,
            "ip6tables": false,
            "ip-masq": false,
            "bridge": "none",
            "registry-mirrors": [mirror],
            "insecure-registries": [mirror_host],
        });
        std::fs::write(&config, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        let log = d.join("dockerd.log");
        let child = Command::new(bin)
            .arg("--config-file")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting dockerd");
        let host = format!("unix://{}", socket.display());
        let dd = Dockerd {
            child,
            dir,
            host,
            log,
        };
        wait_for("dockerd", &dd.log, || {
            output(&mut dd.docker_cmd(&["version"])).status.success()
        });
        dd
    }

    /// The docker CLI talking to this daemon.
    pub fn docker_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker");
        cmd.env("DOCKER_HOST", &self.host).args(args);
        cmd
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}
