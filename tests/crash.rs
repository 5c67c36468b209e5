//! Crash safety (docs/design.md, contract 1): kill -9 the registry during 50 concurrent uploads,
//! restart it, and check that every blob whose upload got its 201 is intact and that
//! nothing partial is visible anywhere.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use sealer_e2e::*;
use sha2::{Digest as _, Sha256};
use tokio::sync::Mutex;

const UPLOADS: usize = 50;
const CHUNK: usize = 512 * 1024;
const CHUNKS: usize = 6;

struct Upload {
    repo: String,
    digest: String,
    completed: bool,
}

/// Chunked upload (POST, PATCH × CHUNKS, PUT); true when the registry answered 201.
async fn upload(host: String, repo: String, data: Vec<u8>, digest: String) -> bool {
    let c = client();
    let attempt = async {
        let resp = c
            .post(format!("http://{host}/v2/{repo}/blobs/uploads/"))
            .send()
            .await
            .ok()?;
        let mut loc = format!(
            "http://{host}{}",
            resp.headers().get("location")?.to_str().ok()?
        );
        for (i, chunk) in data.chunks(CHUNK).enumerate() {
            let start = i * CHUNK;
            let resp = c
                .patch(&loc)
                .header(
                    "content-range",
                    format!("{start}-{}", start + chunk.len() - 1),
                )
                .body(chunk.to_vec())
                .send()
                .await
                .ok()?;
            if resp.status() != StatusCode::ACCEPTED {
                return None;
            }
            loc = format!(
                "http://{host}{}",
                resp.headers().get("location")?.to_str().ok()?
            );
        }
        let resp = c.put(format!("{loc}?digest={digest}")).send().await.ok()?;
        Some(resp.status() == StatusCode::CREATED)
    };
    attempt.await.unwrap_or(false)
}

fn all_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            all_files(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_50_concurrent_uploads_loses_and_exposes_nothing() {
    let mut reg = Registry::start();
    for round in 0..3 {
        let done = Arc::new(AtomicUsize::new(0));
        let results = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..UPLOADS {
            let data = random_bytes(CHUNK * CHUNKS - i * 1000);
            let digest = sha256(&data);
            let repo = format!("crash/r{round}/u{}", i % 7);
            let host = reg.host.clone();
            let done = done.clone();
            let results = results.clone();
            tasks.push(tokio::spawn(async move {
                let completed = upload(host, repo.clone(), data, digest.clone()).await;
                if completed {
                    done.fetch_add(1, Ordering::SeqCst);
                }
                results.lock().await.push(Upload {
                    repo,
                    digest,
                    completed,
                });
            }));
        }
        // Kill once some uploads finished and the rest are mid-flight.
        let target = 5 + round * 10;
        while done.load(Ordering::SeqCst) < target {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        reg.kill9();
        for t in tasks {
            t.await.unwrap();
        }
        let results = results.lock().await;
        let completed = results.iter().filter(|u| u.completed).count();
        assert!(
            completed >= target && completed < UPLOADS,
            "round {round}: {completed} of {UPLOADS} completed before the kill"
        );

        reg.restart();
        let c = client();
        for u in results.iter() {
            let resp = c
                .get(reg.url(&format!("/v2/{}/blobs/{}", u.repo, u.digest)))
                .send()
                .await
                .unwrap();
            if u.completed {
                assert_eq!(
                    resp.status(),
                    StatusCode::OK,
                    "a blob acknowledged with 201 is there"
                );
                let body = resp.bytes().await.unwrap();
                assert_eq!(sha256(&body), u.digest, "and intact");
            } else if resp.status() == StatusCode::OK {
                // Committed just before the kill, answer lost: visible only if complete.
                assert_eq!(sha256(&resp.bytes().await.unwrap()), u.digest);
            } else {
                assert_eq!(resp.status(), StatusCode::NOT_FOUND);
            }
        }
        let mut blobs = Vec::new();
        all_files(&reg.root.join("blobs"), &mut blobs);
        for b in &blobs {
            let name = b.file_name().unwrap().to_str().unwrap();
            let got = hex::encode(Sha256::digest(std::fs::read(b).unwrap()));
            assert_eq!(
                got,
                name,
                "every stored blob matches its name: {}",
                b.display()
            );
        }
        let mut tmp = Vec::new();
        all_files(&reg.root.join("tmp"), &mut tmp);
        assert!(
            tmp.is_empty(),
            "temporary files are cleared on start: {tmp:?}"
        );
    }
}
