//! The test hosts' network: one bridge per test process (`sealer-br<n>`, subnet
//! `10.201.<n>.0/24`), the control machine (this process, where `sealer` runs) on
//! `10.201.<n>.1` at the bridge itself, and each host in a network namespace of its own
//! (`sealer-<n>-<k>`, address `10.201.<n>.<k>`) joined to the bridge by a veth pair.
//!
//! Links can be shaped with `tc`'s token bucket (`tbf`), each direction of a host's link
//! on its own end of the veth, the control machine's sending side on the bridge: a host's
//! link limits what it receives and what it sends, and the control machine's limits what
//! leaves it. Nothing here reaches beyond these addresses and loopback.

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::tools::require;

/// A link's rate, in bits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate(pub u64);

impl Rate {
    pub const MBIT_100: Rate = Rate(100_000_000);
    pub const GBIT_1: Rate = Rate(1_000_000_000);

    /// `tc` arguments for a token bucket at this rate. The bucket holds 4 ms of traffic
    /// (at least 64 KiB): enough for the kernel's 64 KiB segments at any rate here.
    fn tbf(self) -> Vec<String> {
        let burst = (self.0 / 8 / 250).max(64 * 1024);
        vec![
            "tbf".into(),
            "rate".into(),
            format!("{}bit", self.0),
            "burst".into(),
            burst.to_string(),
            "latency".into(),
            "100ms".into(),
        ]
    }

    pub fn bytes_per_second(self) -> f64 {
        self.0 as f64 / 8.0
    }
}

/// The bridge this process's hosts share.
pub struct Network {
    index: u8,
    bridge: String,
    next: AtomicU8,
}

/// Runs `ip`/`tc` with `args`, panicking with what it printed if it fails.
fn sys(program: &str, args: &[&str]) {
    let out = Command::new(require(program))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn quiet(program: &str, args: &[&str]) -> bool {
    Command::new(require(program))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// This process's network, made on first use.
pub fn network() -> &'static Network {
    static NET: OnceLock<Network> = OnceLock::new();
    NET.get_or_init(Network::claim)
}

impl Network {
    /// Claims the first free bridge index (creating the bridge is the claim: it fails if
    /// another process has it). A bridge whose owner has exited is removed first, with its
    /// hosts' namespaces.
    fn claim() -> Network {
        for index in 0..=255u8 {
            let bridge = format!("sealer-br{index}");
            let alias = std::fs::read_to_string(format!("/sys/class/net/{bridge}/ifalias"));
            if let Ok(owner) = alias {
                let alive = owner
                    .trim()
                    .parse::<u32>()
                    .is_ok_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
                if alive {
                    continue;
                }
                Network::remove_stale(index, &bridge);
            }
            // The bridge joins hosts only: bridged frames skip iptables (dockerd's FORWARD
            // policy would drop them once it has loaded br_netfilter).
            if !quiet(
                "ip",
                &[
                    "link",
                    "add",
                    &bridge,
                    "type",
                    "bridge",
                    "nf_call_iptables",
                    "0",
                ],
            ) {
                continue;
            }
            let pid = std::process::id().to_string();
            sys("ip", &["link", "set", &bridge, "alias", &pid]);
            let control = format!("10.201.{index}.1/24");
            sys("ip", &["addr", "add", &control, "dev", &bridge]);
            sys("ip", &["link", "set", &bridge, "up"]);
            return Network {
                index,
                bridge,
                next: AtomicU8::new(2),
            };
        }
        panic!("no free bridge for test hosts (sealer-br0 to sealer-br255 are in use)");
    }

    fn remove_stale(index: u8, bridge: &str) {
        let prefix = format!("sealer-{index}-");
        let list = Command::new(require("ip"))
            .args(["netns", "list"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if ns.starts_with(&prefix) {
                Netns::kill_all(ns);
                quiet("ip", &["netns", "del", ns]);
            }
        }
        quiet("ip", &["link", "del", bridge]);
    }

    /// The control machine's address: hosts reach this process's servers on it.
    pub fn control_ip(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 201, self.index, 1))
    }

    /// Limits what the control machine sends to `rate` (`None`: no limit).
    pub fn shape_control(&self, rate: Option<Rate>) {
        shape(None, &self.bridge, rate);
    }

    /// A new host namespace on the bridge.
    pub fn host(&self) -> Netns {
        let k = self.next.fetch_add(1, Ordering::SeqCst);
        assert!(k < 255, "out of addresses for test hosts");
        let name = format!("sealer-{}-{k}", self.index);
        let outer = format!("sv{}-{k}", self.index);
        quiet("ip", &["netns", "del", &name]);
        sys("ip", &["netns", "add", &name]);
        sys(
            "ip",
            &[
                "link", "add", &outer, "type", "veth", "peer", "name", "eth0", "netns", &name,
            ],
        );
        sys("ip", &["link", "set", &outer, "master", &self.bridge]);
        sys("ip", &["link", "set", &outer, "up"]);
        let ip = Ipv4Addr::new(10, 201, self.index, k);
        sys(
            "ip",
            &[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ],
        );
        sys("ip", &["-n", &name, "link", "set", "eth0", "up"]);
        sys("ip", &["-n", &name, "link", "set", "lo", "up"]);
        Netns {
            name,
            outer,
            ip: IpAddr::V4(ip),
        }
    }
}

/// Puts a token bucket at `rate` on `dev` (in namespace `ns`, or this one), or removes it.
fn shape(ns: Option<&str>, dev: &str, rate: Option<Rate>) {
    let mut args: Vec<String> = Vec::new();
    if let Some(ns) = ns {
        args.extend(["-n".into(), ns.into()]);
    }
    match rate {
        Some(rate) => {
            args.extend(["qdisc", "replace", "dev", dev, "root"].map(String::from));
            args.extend(rate.tbf());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            sys("tc", &args);
        }
        None => {
            args.extend(["qdisc", "del", "dev", dev, "root"].map(String::from));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            // Absent already is fine.
            quiet("tc", &args);
        }
    }
}

/// A host's network namespace, removed (with everything still running in it) on drop.
pub struct Netns {
    pub name: String,
    /// The veth end on the bridge.
    outer: String,
    pub ip: IpAddr,
}

impl Netns {
    /// A placeholder that owns no namespace (what a host leaves behind when its namespace
    /// moves on).
    pub fn none() -> Netns {
        Netns {
            name: String::new(),
            outer: String::new(),
            ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }

    /// Limits the host's link to `rate` both ways (`None`: no limit).
    pub fn shape(&self, rate: Option<Rate>) {
        shape(None, &self.outer, rate);
        shape(Some(&self.name), "eth0", rate);
    }

    /// Kills every process in namespace `name`.
    pub fn kill_all(name: &str) {
        let out = Command::new(require("ip"))
            .args(["netns", "pids", name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for pid in out.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: sending a signal has no memory effects here.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// What listens on TCP in the namespace (`ss -ltnH`), one socket per line.
    pub fn listening(&self) -> String {
        let out = Command::new(require("ip"))
            .args(["netns", "exec", &self.name, "ss", "-ltnH"])
            .output()
            .expect("running ss");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.name.is_empty() {
            return;
        }
        Netns::kill_all(&self.name);
        quiet("ip", &["netns", "del", &self.name]);
        quiet("ip", &["link", "del", &self.outer]);
    }
}
