//! Test hosts for the installer: one `sshd` per host, each in a network namespace of its
//! own on the test process's bridge (`network.rs`: its own address and a link that can be
//! shaped) and in a mount namespace of its own in which the folders sealer writes on a
//! host (`/var/lib/sealer`, `/etc/containerd`, ...) are private tmpfs mounts and
//! `/etc/hosts` is a private copy. A command run over SSH on one of them sees that
//! host's files and network only, as on a separate machine.

use std::net::{IpAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::network::{Netns, Rate, network};
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
    /// The host's network namespace (dropped last: it kills what still runs there).
    pub net: Netns,
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
        let net = network().host();
        let disk = disk.map(|d| d.join(format!("host-{}", net.ip)));
        TestHost::launch(&require("sshd"), net, None, disk)
    }

    /// A new host whose link runs at `rate` both ways.
    pub fn start_shaped(rate: Rate, disk: Option<&Path>) -> TestHost {
        let host = TestHost::start_with(disk);
        host.net.shape(Some(rate));
        host
    }

    /// sshd on port 22 of `net`, in a new mount namespace, with `host_key` (a new one
    /// when `None`).
    fn launch(sshd: &Path, net: Netns, host_key: Option<&Path>, disk: Option<PathBuf>) -> TestHost {
        require("unshare");
        let (ip, port) = (net.ip, 22);
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
        // nsenter rather than `ip netns exec`, which mounts a /sys of its own without the
        // cgroup folders (dockerd on a host needs them).
        let child = Command::new(require("nsenter"))
            .arg(format!("--net=/run/netns/{}", net.name))
            .args([
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
            ])
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
            net,
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
        let key = self.dir.path().join("host_key");
        let keep = tempfile::NamedTempFile::new().unwrap();
        std::fs::copy(&key, keep.path()).unwrap();
        // The namespace moves to the new host; this one is left with a placeholder
        // that owns nothing.
        let net = std::mem::replace(&mut self.net, Netns::none());
        let fresh = TestHost::launch(&require("sshd"), net, Some(keep.path()), self.disk.take());
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
        let _ = child.kill();
        Netns::kill_all(&self.net.name);
        let _ = child.wait();
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
