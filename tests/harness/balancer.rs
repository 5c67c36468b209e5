//! HAProxy in front of registry replicas: round-robin, no stickiness, a health check
//! that takes a dead replica out of the rotation.

use std::process::{Child, Command, Stdio};

use crate::daemons::{terminate, wait_for};
use crate::tools::require;
use crate::upstream::free_port;

pub struct Haproxy {
    child: Child,
    /// `127.0.0.1:PORT`
    pub host: String,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// Balances over `backends` (`127.0.0.1:PORT` each).
    pub fn start(backends: &[String]) -> Haproxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, b)| format!("  server r{i} {b} check inter 500ms fall 2 rise 2\n"))
            .collect();
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "defaults\n  mode http\n  timeout connect 5s\n  timeout client 300s\n  \
                 timeout server 300s\n  option redispatch\n  retries 3\n\
                 frontend regs\n  bind 127.0.0.1:{port}\n  default_backend replicas\n\
                 backend replicas\n  balance roundrobin\n{servers}"
            ),
        )
        .unwrap();
        let log = dir.path().join("haproxy.log");
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(require("haproxy"))
            .args(["-f", cfg.to_str().unwrap(), "-db"])
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(f)
            .spawn()
            .expect("starting haproxy");
        let host = format!("127.0.0.1:{port}");
        wait_for("haproxy", &log, || {
            std::net::TcpStream::connect(&host).is_ok()
        });
        Haproxy {
            child,
            host,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.host)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}
