//! Test hosts for the installer: one `sshd` per loopback address (`127.0.0.2`,
//! `127.0.0.3`, ...), each in a mount namespace of its own in which the folders sealer
//! writes on a host (`/var/lib/sealer`, `/etc/containerd`, ...) are private tmpfs
//! mounts and `/etc/hosts` is a private copy. A command run over SSH on one of them
//! sees that host's files only, as on a separate machine.

use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crate::tools::{require, run};

/// The folders each test host has to itself.
pub const PRIVATE_DIRS: [&str; 8] = [
    "/var/lib/sealer",
    "/var/log/sealer",
    "/etc/sealer",
    "/etc/containerd",
    "/etc/docker",
    "/etc/containers",
    "/run/sealer",
    // root's logins (docker and podman read them).
    "/root/.docker",
];

/// A user with a password, for password logins (sshd refuses root's locked password).
pub const HOST_PASSWORD_USER: &str = "sealer-test";
pub const HOST_PASSWORD: &str = "sealer-test-password";

/// The key every test host accepts for root.
pub fn test_key() -> &'static Path {
    static KEY: OnceLock<PathBuf> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("sealer-test-key")
            .tempdir()
            .unwrap()
            .keep();
        let key = dir.join("id_ed25519");
        run(Command::new(require("ssh-keygen"))
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key));
        key
    })
}

/// Makes sure [`HOST_PASSWORD_USER`] exists with [`HOST_PASSWORD`].
pub fn password_user() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let exists = Command::new("id")
            .arg(HOST_PASSWORD_USER)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !exists {
            run(Command::new(require("useradd")).args(["-M", "-s", "/bin/sh", HOST_PASSWORD_USER]));
        }
        let mut chpasswd = Command::new(require("chpasswd"))
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        writeln!(
            chpasswd.stdin.take().unwrap(),
            "{HOST_PASSWORD_USER}:{HOST_PASSWORD}"
        )
        .unwrap();
        assert!(chpasswd.wait().unwrap().success(), "chpasswd failed");
    });
}

pub struct TestHost {
    pub ip: IpAddr,
    pub port: u16,
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    /// Where `/var/lib/sealer` lives when not in memory.
    disk: Option<PathBuf>,
}

impl TestHost {
    /// A new host on the next free loopback address.
    pub fn start() -> TestHost {
        TestHost::start_with(None)
    }

    /// A new host whose `/var/lib/sealer` is a fresh folder under `disk` instead of
    /// memory (for benchmarks moving gigabytes).
    pub fn start_on_disk(disk: &Path) -> TestHost {
        TestHost::start_with(Some(disk))
    }

    fn start_with(disk: Option<&Path>) -> TestHost {
        static NEXT: AtomicU8 = AtomicU8::new(2);
        let sshd = require("sshd");
        require("unshare");
        loop {
            let n = NEXT.fetch_add(1, Ordering::SeqCst);
            assert!(n < 250, "out of loopback addresses for test hosts");
            let ip: IpAddr = format!("127.0.0.{n}").parse().unwrap();
            // A free port on that address (another test process may hold some).
            let Ok(listener) = TcpListener::bind((ip, 0)) else {
                continue;
            };
            let port = listener.local_addr().unwrap().port();
            drop(listener);
            let disk = disk.map(|d| d.join(format!("host-{ip}")));
            return TestHost::launch(&sshd, ip, port, None, disk);
        }
    }

    /// sshd on `ip:port` in a new namespace, with `host_key` (a new one when `None`).
    fn launch(
        sshd: &Path,
        ip: IpAddr,
        port: u16,
        host_key: Option<&Path>,
        disk: Option<PathBuf>,
    ) -> TestHost {
        let dir = tempfile::Builder::new()
            .prefix("sealer-test-host")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        match host_key {
            Some(key) => {
                std::fs::copy(key, d.join("host_key")).unwrap();
            }
            None => {
                run(Command::new(require("ssh-keygen"))
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(d.join("host_key")));
            }
        }
        std::fs::copy(test_key().with_extension("pub"), d.join("authorized_keys")).unwrap();
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        std::fs::write(d.join("hosts"), hosts).unwrap();
        // sshd runs each command through root's bash, which reads ~/.bashrc; this
        // machine's starts pyenv (about half a second a command). A host of its own
        // has its own, plain one.
        std::fs::write(d.join("bashrc"), "").unwrap();
        let bashrc = if Path::new("/root/.bashrc").exists() {
            format!("mount --bind {}/bashrc /root/.bashrc\n", d.display())
        } else {
            String::new()
        };
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "ListenAddress {ip}:{port}\nHostKey {dir}/host_key\nPidFile {dir}/sshd.pid\n\
                 AuthorizedKeysFile {dir}/authorized_keys\nPermitRootLogin yes\n\
                 PasswordAuthentication yes\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nMaxStartups 100\nLogLevel VERBOSE\n",
                dir = d.display()
            ),
        )
        .unwrap();
        let mut on_disk = String::new();
        if let Some(disk) = &disk {
            let _ = std::fs::remove_dir_all(disk);
            std::fs::create_dir_all(disk).unwrap();
            on_disk = format!("mount --bind {} /var/lib/sealer\n", disk.display());
        }
        let script = format!(
            "set -e\nfor d in {dirs}; do mkdir -p \"$d\"; mount -t tmpfs tmpfs \"$d\"; done\n{on_disk}{bashrc}\
             mount --bind {dir}/hosts /etc/hosts\nmkdir -p /run/sshd\n\
             exec {sshd} -D -e -f {dir}/sshd_config",
            dirs = PRIVATE_DIRS.join(" "),
            dir = d.display(),
            sshd = sshd.display()
        );
        let log = std::fs::File::create(d.join("sshd.log")).unwrap();
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting sshd");
        let host = TestHost {
            ip,
            port,
            child: Some(child),
            dir,
            disk,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((ip, port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd on {ip}:{port} did not start:\n{}",
                host.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        host
    }

    /// Starts the host again after [`Self::stop`], on the same address, port and host
    /// key, with its private folders empty (as a machine whose disk was lost).
    pub fn restart(&mut self) {
        self.stop();
        let fresh = TestHost::launch(
            &require("sshd"),
            self.ip,
            self.port,
            Some(&self.dir.path().join("host_key")),
            self.disk.clone(),
        );
        *self = fresh;
    }

    /// Runs `script` on the host as root with the system's `ssh` (as an operator
    /// would), panicking with its output if it fails; returns stdout.
    pub fn ssh(&self, script: &str) -> String {
        run(Command::new(require("ssh"))
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
            .arg("-i")
            .arg(test_key())
            .arg("-p")
            .arg(self.port.to_string())
            .arg(format!("root@{}", self.ip))
            .arg(script))
    }

    /// What sshd logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// How many SSH logins the host accepted.
    pub fn logins(&self) -> usize {
        let log = self.log();
        log.matches("Accepted publickey for").count() + log.matches("Accepted password for").count()
    }

    /// Stops the host: every process in its mount namespace (sshd, the sessions it
    /// serves, what they started) is killed, so open connections break too.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
        // Never the test process's own namespace (if sshd had not got its own yet).
        let ours = ns(&child.id().to_string()).filter(|n| Some(n) != ns("self").as_ref());
        let _ = child.kill();
        let _ = child.wait();
        if let Some(ours) = ours {
            for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.parse::<i32>().is_ok() && ns(&name).as_ref() == Some(&ours) {
                    // SAFETY: sending a signal has no memory effects here.
                    unsafe { libc::kill(name.parse().unwrap(), libc::SIGKILL) };
                }
            }
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.stop();
        if let Some(disk) = &self.disk {
            let _ = std::fs::remove_dir_all(disk);
        }
    }
}
