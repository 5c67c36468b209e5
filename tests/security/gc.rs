//! Garbage collection: online, in a loop under 20 pushing and pulling clients, and the
//! `gc` command's dry run.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use sealer_e2e::*;
use serde_json::json;

/// One image: a layer every image shares, one of its own, and a config.
struct Pushed {
    repo: String,
    tag: String,
    digest: String,
    manifest: Vec<u8>,
    blobs: Vec<Vec<u8>>,
}

async fn push(reg: &Registry, repo: &str, tag: &str, shared: &[u8]) -> Pushed {
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "nonce": hex::encode(random_bytes(8)),
    }))
    .unwrap();
    let own = random_bytes(32 * 1024);
    for b in [&config, &own, &shared.to_vec()] {
        push_blob(reg, repo, b).await;
    }
    let manifest = image_manifest(
        OCI_MANIFEST,
        descriptor(OCI_CONFIG, &config),
        vec![descriptor(OCI_LAYER, shared), descriptor(OCI_LAYER, &own)],
        json!({}),
    );
    let resp = put_manifest(reg, repo, tag, OCI_MANIFEST, &manifest).await;
    assert_eq!(resp.status(), StatusCode::CREATED, "{repo}:{tag}");
    Pushed {
        repo: repo.into(),
        tag: tag.into(),
        digest: sha256(&manifest),
        manifest,
        blobs: vec![config, shared.to_vec(), own],
    }
}

/// Pulls `image` by tag and checks every byte.
async fn pulls_back(reg: &Registry, image: &Pushed) {
    let resp = get(reg, format!("/v2/{}/manifests/{}", image.repo, image.tag)).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "{}:{}",
        image.repo,
        image.tag
    );
    assert_eq!(
        resp.bytes().await.unwrap().as_ref(),
        image.manifest.as_slice()
    );
    for b in &image.blobs {
        let resp = get(reg, format!("/v2/{}/blobs/{}", image.repo, sha256(b))).await;
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{}: {}",
            image.repo,
            sha256(b)
        );
        assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(b));
    }
}

fn blob_files(root: &Path) -> HashSet<String> {
    let mut out = HashSet::new();
    let blobs = root.join("blobs/sha256");
    for hh in std::fs::read_dir(&blobs).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(hh.path()).into_iter().flatten().flatten() {
            out.insert(format!("sha256:{}", f.file_name().to_string_lossy()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_in_a_loop_while_20_clients_push_and_pull_loses_nothing() {
    let reg = Arc::new(Registry::start_with(&[
        "--gc-interval",
        "1s",
        "--gc-grace",
        "3s",
        "--gc-untagged",
        "1s",
    ]));
    let shared = Arc::new(random_bytes(64 * 1024));
    let mut clients = Vec::new();
    for c in 0..20 {
        let (reg, shared) = (reg.clone(), shared.clone());
        clients.push(tokio::spawn(async move {
            let repo = format!("client{c}/app");
            let (mut kept, mut dropped) = (Vec::new(), Vec::new());
            for i in 0..6 {
                let image = push(&reg, &repo, &format!("v{i}"), &shared).await;
                pulls_back(&reg, &image).await;
                if i % 2 == 1 {
                    // Untag it: garbage once the grace period is over.
                    let resp = delete(&reg, format!("/v2/{repo}/manifests/v{i}")).await;
                    assert_eq!(resp.status(), StatusCode::ACCEPTED);
                    dropped.push(image);
                } else {
                    kept.push(image);
                }
                // Pull an earlier image again while collections run.
                if let Some(first) = kept.first() {
                    pulls_back(&reg, first).await;
                }
                tokio::time::sleep(Duration::from_millis(150 + 37 * c as u64 % 200)).await;
            }
            (kept, dropped)
        }));
    }
    let (mut kept, mut dropped) = (Vec::new(), Vec::new());
    for c in clients {
        let (k, d) = c.await.unwrap();
        kept.extend(k);
        dropped.extend(d);
    }
    for image in &kept {
        pulls_back(&reg, image).await;
    }
    reg.log_where("a collection that removed something", |l| {
        l.contains("garbage collected")
    });

    // Once the grace period is over, what was untagged is gone, and only it.
    let wanted: HashSet<String> = kept
        .iter()
        .flat_map(|i| i.blobs.iter().map(|b| sha256(b)).chain([i.digest.clone()]))
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stored = blob_files(&reg.root);
        if stored == wanted {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after 30 s the store holds {} blobs, {} missing, {} extra",
            stored.len(),
            wanted.difference(&stored).count(),
            stored.difference(&wanted).count()
        );
        assert!(wanted.is_subset(&stored), "a blob still in use was removed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for image in &dropped {
        let resp = head(
            &reg,
            format!("/v2/{}/manifests/{}", image.repo, image.digest),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
    // Each removal is audited as the collector's.
    let log = reg.log_text();
    for image in &dropped {
        let line = format!(
            "user=gc remote=- action=delete repository={} reference=- digest={}",
            image.repo, image.digest
        );
        assert!(log.contains(&line), "no audit line {line:?}");
    }
    for image in &kept {
        pulls_back(&reg, image).await;
    }
}

#[tokio::test]
async fn gc_dry_run_reports_what_would_go_and_removes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let mut reg = Registry::spawn(&root, dir.path().join("r.log"), &[], &[]);
    let shared = random_bytes(1000);
    let keep = push(&reg, "apps/web", "1", &shared).await;
    let gone = push(&reg, "apps/web", "2", &shared).await;
    let resp = delete(&reg, format!("/v2/apps/web/manifests/{}", gone.digest)).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let stray = push_blob(&reg, "apps/web", &random_bytes(5000)).await;
    reg.stop();

    let gc = |args: &[&str]| {
        let mut cmd = Command::new(binary("sealer-registry"));
        cmd.arg("gc")
            .arg("--root")
            .arg(&root)
            .args(["--gc-grace", "0s"])
            .args(args);
        cmd
    };
    let before = blob_files(&root);
    let out = run(&mut gc(&["--dry-run", "--json"]));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    // The deleted manifest's own layer and config, its manifest blob, the stray blob.
    assert_eq!(report["dry_run"], true, "{report}");
    assert_eq!(report["blobs"], 4, "{report}");
    assert_eq!(report["layer_links"], 3, "{report}");
    let bytes = gone.blobs[0].len() + gone.blobs[2].len() + gone.manifest.len() + 5000;
    assert_eq!(report["bytes"], bytes as u64, "{report}");
    assert_eq!(blob_files(&root), before, "a dry run removes nothing");

    let out = run(&mut gc(&[]));
    assert!(
        out.starts_with("removed 0 untagged manifest(s), 3 layer link(s), 4 blob(s)"),
        "{out}"
    );
    let after = blob_files(&root);
    assert!(!after.contains(&stray) && !after.contains(&gone.digest));
    let reg = Registry::spawn(&root, dir.path().join("r2.log"), &[], &[]);
    pulls_back(&reg, &keep).await;
}

#[tokio::test]
async fn a_blob_head_through_ns_restarts_the_grace_of_the_link_it_found() {
    let reg = Registry::start();
    let data = random_bytes(4096);
    let digest = push_blob(&reg, "team/app", &data).await;
    let link = reg
        .root
        .join("repositories/team/app/_layers/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let old = std::time::SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&link)
        .unwrap()
        .set_modified(old)
        .unwrap();
    // A cluster registry answers `?ns=` pulls from short names: found in `team/app`,
    // the second candidate after `sea.hub/team/app`.
    let resp = head(&reg, format!("/v2/team/app/blobs/{digest}?ns=sea.hub")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let touched = std::fs::metadata(&link).unwrap().modified().unwrap();
    let age = touched.elapsed().unwrap_or_default();
    assert!(
        age < Duration::from_secs(60),
        "the link is still {age:?} old"
    );
}
