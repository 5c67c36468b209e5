//! Files go to hosts content-addressed: checked on arrival, never sent twice, and a
//! re-run sends only what a host lacks.

use std::sync::Arc;

use sealer_e2e::*;
use sealer_installer::distribute::{self, Blob, Sent};
use sealer_installer::hosts::Host;

use crate::hosts::connect_all;

fn blob(dir: &std::path::Path, name: &str, data: &[u8]) -> Blob {
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    Blob {
        digest: sha256(data).parse().unwrap(),
        path,
        size: data.len() as u64,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn blobs_reach_every_host_once_and_verified() {
    let test_hosts: Vec<TestHost> = (0..3).map(|_| TestHost::start()).collect();
    let state = tempfile::tempdir().unwrap();
    let hosts: Vec<Arc<dyn Host>> = connect_all(&test_hosts, state.path()).await;
    let local = tempfile::tempdir().unwrap();
    let big = random_bytes(3 << 20);
    let blobs = vec![
        blob(local.path(), "big", &big),
        blob(local.path(), "small", b"a small file\n"),
    ];
    let root = std::path::Path::new("/var/lib/sealer/data");
    let total = blobs.iter().map(|b| b.size).sum();

    let first = distribute::to_hosts(&hosts, root, &blobs, 3).await;
    for (ip, sent) in &first {
        let sent = sent.as_ref().unwrap_or_else(|e| panic!("{ip}: {e}"));
        assert_eq!(
            sent,
            &Sent {
                blobs: 2,
                bytes: total,
                present: 0
            }
        );
    }
    // On the host, the file is where its digest says, with that content.
    let on_host = distribute::host_blob(root, &blobs[0].digest);
    let sum = hosts[1]
        .check(&format!("sha256sum {}", on_host.display()))
        .await
        .unwrap();
    assert!(sum.starts_with(blobs[0].digest.hex()), "{sum}");

    // Nothing is sent again.
    for (_, sent) in distribute::to_hosts(&hosts, root, &blobs, 3).await {
        assert_eq!(
            sent.unwrap(),
            Sent {
                blobs: 0,
                bytes: 0,
                present: 2
            }
        );
    }
    // A host that lost one gets that one only.
    hosts[2]
        .check(&format!("rm {}", on_host.display()))
        .await
        .unwrap();
    let third = distribute::to_hosts(&hosts, root, &blobs, 3).await;
    let counts: Vec<usize> = third
        .iter()
        .map(|(_, s)| s.as_ref().unwrap().blobs)
        .collect();
    assert_eq!(counts, [0, 0, 1]);

    // A file that does not match its digest is refused on the host, leaving nothing.
    let liar = Blob {
        digest: sha256(b"something else").parse().unwrap(),
        ..blob(local.path(), "liar", b"not what the digest says")
    };
    let err = distribute::send(hosts[0].as_ref(), root, &liar)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("host {}", test_hosts[0].ip)) && err.contains("arrived damaged"),
        "{err}"
    );
    let dir = distribute::host_blob(root, &liar.digest);
    let left = hosts[0]
        .check(&format!(
            "ls -A {}; [ ! -e {} ] && echo no-liar",
            dir.parent().unwrap().display(),
            dir.display()
        ))
        .await
        .unwrap();
    assert!(
        left.contains("no-liar") && !left.contains("incoming"),
        "{left}"
    );
    assert_eq!(
        left.lines().count(),
        3,
        "the two real blobs and the check: {left}"
    );
}
