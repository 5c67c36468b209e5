//! Files go to hosts content-addressed and relayed: each blob leaves this machine once,
//! hosts pass it on while they receive it, every hop checks it, a host that fails is
//! routed around, a re-run sends only what a host lacks, and nothing is left listening.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use sealer_builder::progress::Quiet;
use sealer_e2e::*;
use sealer_installer::distribute::{self, Blob, Sent};
use sealer_installer::hosts::Host;
use sealer_installer::relay::{Delivery, Outcome, Topology};

use crate::hosts::connect_all;

fn blob(dir: &Path, name: &str, data: &[u8]) -> Blob {
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    Blob {
        digest: sha256(data).parse().unwrap(),
        path,
        size: data.len() as u64,
    }
}

const ROOT: &str = "/var/lib/sealer/data";

/// Delivers `blobs` with the workspace's `sealer` serving the relay on the hosts (their
/// root file system is this machine's).
async fn deliver(hosts: &[Arc<dyn Host>], blobs: &[Blob], topology: Topology) -> Outcome {
    Delivery {
        hosts,
        root: Path::new(ROOT),
        blobs,
        topology,
        sealer: binary("sealer").display().to_string(),
        prelude: String::new(),
        pipelined: true,
        jobs: 8,
    }
    .run(&Quiet)
    .await
}

/// Who fed each host (`None`: this machine), failing on any host's error.
fn feeders(outcome: &Outcome) -> Vec<Option<IpAddr>> {
    outcome
        .hosts
        .iter()
        .map(|(ip, r)| r.as_ref().unwrap_or_else(|e| panic!("{ip}: {e}")).from)
        .collect()
}

/// Only sshd listens on a host once a delivery is over.
fn nothing_left_listening(hosts: &[TestHost]) {
    for h in hosts {
        let listening = h.net.listening();
        assert!(
            listening.contains(":22 ") && listening.lines().all(|l| l.contains(":22 ")),
            "{}: {listening}",
            h.ip
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn blobs_leave_this_machine_once_and_pass_from_host_to_host() {
    let test_hosts: Vec<TestHost> = (0..4).map(|_| TestHost::start()).collect();
    let ips: Vec<IpAddr> = test_hosts.iter().map(|h| h.ip).collect();
    let state = tempfile::tempdir().unwrap();
    let hosts = connect_all(&test_hosts, state.path()).await;
    let local = tempfile::tempdir().unwrap();
    let blobs = vec![
        blob(local.path(), "big", &random_bytes(3 << 20)),
        blob(local.path(), "small", b"a small file\n"),
    ];
    let total: u64 = blobs.iter().map(|b| b.size).sum();

    // A chain: this machine feeds the first host, each host the next.
    let first = deliver(&hosts, &blobs, Topology::Chain).await;
    assert_eq!(
        feeders(&first),
        [None, Some(ips[0]), Some(ips[1]), Some(ips[2])]
    );
    assert_eq!(first.from_control, total, "one copy left this machine");
    for (ip, r) in &first.hosts {
        let sent = &r.as_ref().unwrap().sent;
        assert_eq!(
            sent,
            &Sent {
                blobs: 2,
                bytes: total,
                present: 0
            },
            "{ip}"
        );
    }
    // On the last host, the file is where its digest says, with that content.
    let on_host = distribute::host_blob(Path::new(ROOT), &blobs[0].digest);
    let sum = hosts[3]
        .check(&format!("sha256sum {}", on_host.display()))
        .await
        .unwrap();
    assert!(sum.starts_with(blobs[0].digest.hex()), "{sum}");
    nothing_left_listening(&test_hosts);

    // Nothing is sent again.
    let again = deliver(&hosts, &blobs, Topology::Chain).await;
    assert_eq!(again.from_control, 0);
    for (_, r) in &again.hosts {
        assert_eq!(
            r.as_ref().unwrap().sent,
            Sent {
                blobs: 0,
                bytes: 0,
                present: 2
            }
        );
    }

    // Hosts that lost a blob get it from a host that has everything, not from here; on
    // a tree, each host feeds two.
    for h in &hosts[1..] {
        h.check(&format!("rm {}", on_host.display())).await.unwrap();
    }
    let tree = deliver(&hosts, &blobs, Topology::Tree(2)).await;
    assert_eq!(
        feeders(&tree)[1..],
        [Some(ips[0]), Some(ips[1]), Some(ips[1])]
    );
    assert_eq!(tree.from_control, 0);
    let counts: Vec<usize> = tree
        .hosts
        .iter()
        .map(|(_, r)| r.as_ref().unwrap().sent.blobs)
        .collect();
    assert_eq!(counts, [0, 1, 1, 1]);
    nothing_left_listening(&test_hosts);

    // A file that does not match its digest is refused on the host, leaving nothing.
    let liar = Blob {
        digest: sha256(b"something else").parse().unwrap(),
        ..blob(local.path(), "liar", b"not what the digest says")
    };
    let err = distribute::send(hosts[0].as_ref(), Path::new(ROOT), &liar)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("host {}", test_hosts[0].ip)) && err.contains("arrived damaged"),
        "{err}"
    );
    let dir = distribute::host_blob(Path::new(ROOT), &liar.digest);
    let left = hosts[0]
        .check(&format!("ls -A {}", dir.parent().unwrap().display()))
        .await
        .unwrap();
    assert_eq!(left.lines().count(), 2, "the two real blobs only: {left}");
}

/// A host that passes on damaged bytes is caught by the host after it: nothing damaged
/// becomes visible anywhere, and the error names the host the bytes came from.
#[tokio::test(flavor = "multi_thread")]
async fn every_hop_checks_what_it_receives() {
    let test_hosts: Vec<TestHost> = (0..3).map(|_| TestHost::start()).collect();
    let state = tempfile::tempdir().unwrap();
    let hosts = connect_all(&test_hosts, state.path()).await;
    let local = tempfile::tempdir().unwrap();
    let blobs = vec![blob(local.path(), "big", &random_bytes(1 << 20))];
    let target = distribute::host_blob(Path::new(ROOT), &blobs[0].digest);
    // The middle host holds a damaged copy under the blob's name (a disk fault, or a
    // hostile host): it looks complete, so it leads the chain.
    hosts[1]
        .check(&format!(
            "mkdir -p {dir} && head -c {size} /dev/urandom > {t}",
            dir = target.parent().unwrap().display(),
            size = blobs[0].size,
            t = target.display()
        ))
        .await
        .unwrap();
    let outcome = deliver(&hosts, &blobs, Topology::Chain).await;
    let err = outcome.hosts[0].1.as_ref().unwrap_err().to_string();
    assert!(
        err.contains(&format!("did not arrive whole from {}", test_hosts[1].ip)),
        "{err}"
    );
    for h in [&hosts[0], &hosts[2]] {
        let left = h
            .check(&format!(
                "ls -A {} 2>/dev/null || true",
                target.parent().unwrap().display()
            ))
            .await
            .unwrap();
        assert_eq!(
            left.trim(),
            "",
            "{}: nothing damaged is visible, no relay file left",
            h.ip()
        );
    }
    nothing_left_listening(&test_hosts);
}

/// A host killed while it relays is named; the hosts behind it are fed by a host that
/// has everything; a re-run sends the revived host only what it lacks, from a host.
#[test]
fn a_relay_killed_mid_transfer_is_routed_around() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // 40 Mbit/s links: the 20 MiB blob takes about 4 s on each.
    let rate = Rate(40_000_000);
    let mut test_hosts: Vec<TestHost> =
        (0..4).map(|_| TestHost::start_shaped(rate, None)).collect();
    let ips: Vec<IpAddr> = test_hosts.iter().map(|h| h.ip).collect();
    let state = tempfile::tempdir().unwrap();
    let hosts = rt.block_on(connect_all(&test_hosts, state.path()));
    let local = tempfile::tempdir().unwrap();
    let blobs = vec![blob(local.path(), "big", &random_bytes(20 << 20))];
    let size = blobs[0].size;

    let relay = sealer_installer::relay::relay_file(Path::new(ROOT), &blobs[0].digest);
    let probe = format!("stat -c %s {} 2>/dev/null || echo 0", relay.display());
    let outcome = std::thread::scope(|s| {
        let victim = &test_hosts[1];
        // Once the second host has part of the blob (the relay is under way), kill
        // everything on it.
        s.spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                let got: u64 = victim.ssh(&probe).trim().parse().unwrap_or(0);
                if got > 1 << 20 {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the relay never reached the second host"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Netns::kill_all(&victim.net.name);
        });
        rt.block_on(deliver(&hosts, &blobs, Topology::Chain))
    });
    test_hosts[1].stop();

    let err = outcome.hosts[1].1.as_ref().unwrap_err().to_string();
    assert!(err.contains(&format!("host {}", ips[1])), "{err}");
    for i in [0, 2, 3] {
        let got = outcome.hosts[i]
            .1
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: {e}", ips[i]));
        assert_eq!(got.sent.blobs, 1, "{}", ips[i]);
    }
    // The host after the dead one was fed by the first, which had everything by then.
    assert_eq!(outcome.hosts[2].1.as_ref().unwrap().from, Some(ips[0]));
    assert_eq!(
        outcome.from_control, size,
        "still one copy from this machine"
    );

    // The dead host comes back empty; a re-run feeds it from a host, none from here.
    test_hosts[1].restart();
    let hosts = rt.block_on(connect_all(&test_hosts, state.path()));
    let again = rt.block_on(deliver(&hosts, &blobs, Topology::Chain));
    assert_eq!(again.from_control, 0);
    let sent: Vec<usize> = again
        .hosts
        .iter()
        .map(|(_, r)| r.as_ref().unwrap().sent.blobs)
        .collect();
    assert_eq!(sent, [0, 1, 0, 0]);
    nothing_left_listening(&test_hosts);
}
