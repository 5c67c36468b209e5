//! `sealer-registry check`: a corrupted blob is found, quarantined (no longer served),
//! and a client can push it again.

use std::process::Command;

use reqwest::StatusCode;
use sealer_e2e::*;

#[tokio::test]
async fn check_finds_a_corrupted_blob_and_quarantine_stops_it_being_served() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let reg = Registry::spawn(&root, dir.path().join("r.log"), &[], &[]);
    let image = push_image(&reg, "apps/web", "1", 2, 64 * 1024).await;
    let check = |args: &[&str]| {
        let mut cmd = Command::new(binary("sealer-registry"));
        cmd.arg("check")
            .arg("--root")
            .arg(&root)
            .arg("--quiet")
            .args(args);
        cmd
    };
    let out = run(&mut check(&[]));
    assert!(
        out.contains("checked 4 blob(s)") && out.contains("0 corrupt, 0 missing"),
        "{out}"
    );

    // One byte of a layer flips on disk.
    let layer = sha256(&image.layers[0]);
    let hex = layer.trim_start_matches("sha256:");
    let path = root.join("blobs/sha256").join(&hex[..2]).join(hex);
    let mut data = std::fs::read(&path).unwrap();
    data[1000] ^= 0x01;
    std::fs::write(&path, &data).unwrap();

    let out = output(&mut check(&[]));
    assert!(!out.status.success(), "a damaged store fails the check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("corrupt {layer}")), "{stdout}");
    assert!(stdout.contains("1 corrupt"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("damaged"));

    // Quarantined while the registry serves: it answers BLOB_UNKNOWN from now on.
    let out = output(&mut check(&["--quarantine", "--json"]));
    assert!(!out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["corrupt"][0]["digest"], layer.as_str(), "{report}");
    let moved = report["corrupt"][0]["quarantined_to"].as_str().unwrap();
    assert_eq!(std::fs::read(moved).unwrap(), data, "kept for inspection");
    assert!(!path.exists());
    let resp = get(&reg, format!("/v2/apps/web/blobs/{layer}")).await;
    assert_error(resp, 404, "BLOB_UNKNOWN").await;
    // The next check names the repository that lost it.
    let out = output(&mut check(&[]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("missing apps/web@{layer}")),
        "{stdout}"
    );

    // The client pushes it again; everything checks out and pulls back intact.
    push_blob(&reg, "apps/web", &image.layers[0]).await;
    let resp = get(&reg, format!("/v2/apps/web/blobs/{layer}")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.bytes().await.unwrap().as_ref(),
        image.layers[0].as_slice()
    );
    let out = run(&mut check(&[]));
    assert!(out.contains("0 corrupt, 0 missing"), "{out}");
}
