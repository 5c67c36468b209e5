//! Three replicas behind HAProxy (round-robin, no stickiness) over a three-node Garage
//! with replication 3: concurrent chunked pushes whose chunks land on every replica,
//! one replica killed mid-run, a Garage node down, garbage collection running on the
//! collector throughout; nothing lost, containerd pulls through the balancer, and the
//! catalog index is rebuilt from the bucket.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, StatusCode};
use sealer_e2e::*;

const PUSHES: usize = 50;
const CHUNK: usize = 5 * 1024 * 1024 + 4096;

/// Retries a request until it gets an answer that is not a server or gateway error.
async fn send(make: impl Fn() -> reqwest::RequestBuilder) -> reqwest::Response {
    for _ in 0..60 {
        match make().send().await {
            Ok(r) if r.status().as_u16() < 500 => return r,
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    panic!("no replica answered after 60 tries");
}

/// Where an upload stands, asked of any replica.
async fn offset(c: &Client, lb: &Haproxy, path: &str) -> usize {
    let r = send(|| c.get(lb.url(path))).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "upload status");
    let range = header(&r, "range");
    range.split('-').nth(1).unwrap().parse::<usize>().unwrap() + 1
}

/// A chunked push that survives replicas dying under it: after a failed chunk it asks
/// where the upload stands and goes on from there. As real clients do, a push whose
/// completion was lost (a replica killed after the blob was stored but before it was
/// linked) starts again: the second upload links it.
async fn push_chunked(c: &Client, lb: &Haproxy, repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    for _ in 0..3 {
        if upload_once(c, lb, repo, data, &digest).await {
            return digest;
        }
    }
    panic!("blob {digest} of {repo} not stored after 3 uploads");
}

/// One upload of `data`; whether the repository has the blob after it.
async fn upload_once(c: &Client, lb: &Haproxy, repo: &str, data: &[u8], digest: &str) -> bool {
    let r = send(|| c.post(lb.url(&format!("/v2/{repo}/blobs/uploads/")))).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let path = header(&r, "location");
    let mut at = 0;
    while at < data.len() {
        let end = (at + CHUNK).min(data.len());
        let chunk = data[at..end].to_vec();
        let sent = c
            .patch(lb.url(&path))
            .header("content-range", format!("{at}-{}", end - 1))
            .body(chunk)
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == StatusCode::ACCEPTED => at = end,
            _ => at = offset(c, lb, &path).await,
        }
    }
    let put = send(|| c.put(lb.url(&format!("{path}?digest={digest}")))).await;
    if put.status() == StatusCode::CREATED {
        return true;
    }
    // The first PUT may have completed the upload before its answer was lost.
    let blob = send(|| c.head(lb.url(&format!("/v2/{repo}/blobs/{digest}")))).await;
    blob.status() == StatusCode::OK
}

struct Pushed {
    repo: String,
    manifest_digest: String,
    layers: Vec<String>,
}

async fn push_one(c: Client, lb: Arc<Haproxy>, i: usize) -> Pushed {
    let repo = format!("fleet/app{i:02}");
    let config =
        serde_json::to_vec(&serde_json::json!({"architecture": "amd64", "os": "linux", "n": i}))
            .unwrap();
    let config_digest = push_chunked(&c, &lb, &repo, &config).await;
    let mut layers = Vec::new();
    let mut descs = Vec::new();
    for size in [CHUNK * 2 + 777, 300_000 + i] {
        let data = random_bytes(size);
        layers.push(push_chunked(&c, &lb, &repo, &data).await);
        descs.push(descriptor(OCI_LAYER, &data));
    }
    let manifest = image_manifest(
        OCI_MANIFEST,
        descriptor(OCI_CONFIG, &config),
        descs,
        serde_json::json!({}),
    );
    assert_eq!(sha256(&config), config_digest);
    let r = send(|| {
        c.put(lb.url(&format!("/v2/{repo}/manifests/v1")))
            .header("content-type", OCI_MANIFEST)
            .body(manifest.clone())
    })
    .await;
    let status = r.status();
    assert_eq!(
        status,
        StatusCode::CREATED,
        "manifest of {repo}: {}",
        r.text().await.unwrap()
    );
    Pushed {
        repo,
        manifest_digest: sha256(&manifest),
        layers,
    }
}

/// Three replicas on fixed ports over `bucket` (the first one collects garbage), and
/// HAProxy in front of them.
fn replicas_behind_haproxy(bucket: &Bucket, cfg: &str) -> (Vec<Registry>, Arc<Haproxy>) {
    let addrs: Vec<String> = (0..3)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        })
        .collect();
    // One collector (Garage ignores conditional writes, so only it has --gc-interval). The
    // grace period must exceed the longest push: with a replica killed and a Garage node
    // down, a push here can take 30 s between its first blob and its manifest.
    let collector_args = ["--config", cfg, "--gc-interval", "1s", "--gc-grace", "60s"];
    let args = ["--config", cfg];
    let replicas = vec![
        Registry::on_bucket_at(bucket, "lb", &collector_args, &addrs[0]),
        Registry::on_bucket_at(bucket, "lb", &args, &addrs[1]),
        Registry::on_bucket_at(bucket, "lb", &args, &addrs[2]),
    ];
    (replicas, Arc::new(Haproxy::start(&addrs)))
}

/// Waits until `n` of `tasks` are over (finished, or failed: a failure shows when the
/// tasks are awaited).
async fn over<T>(tasks: &[tokio::task::JoinHandle<T>], n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while tasks.iter().filter(|t| t.is_finished()).count() < n {
        assert!(std::time::Instant::now() < deadline, "pushes stalled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every image reads back whole through the balancer.
async fn read_back(c: &Client, lb: &Haproxy, pushed: &[Pushed]) {
    for p in pushed {
        let m = send(|| {
            c.get(lb.url(&format!("/v2/{}/manifests/v1", p.repo)))
                .header("accept", OCI_MANIFEST)
        })
        .await;
        assert_eq!(m.status(), StatusCode::OK, "{}", p.repo);
        assert_eq!(header(&m, "docker-content-digest"), p.manifest_digest);
        for d in &p.layers {
            let b = send(|| c.get(lb.url(&format!("/v2/{}/blobs/{d}", p.repo)))).await;
            assert_eq!(b.status(), StatusCode::OK, "{}@{d}", p.repo);
            assert_eq!(&sha256(&b.bytes().await.unwrap()), d, "{}@{d}", p.repo);
        }
    }
}

/// The collector removes the abandoned blob once past the grace period, and nothing else.
async fn only_the_abandoned_blob_is_collected(
    c: &Client,
    lb: &Haproxy,
    orphan: &str,
    pushed: &[Pushed],
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        // A GET, not a HEAD: a HEAD restarts the blob's grace period (a pusher's check).
        let url = lb.url(&format!("/v2/fleet/abandoned/blobs/{orphan}"));
        let r = send(|| c.get(&url).header("range", "bytes=0-0")).await;
        if r.status() == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the collector did not run"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for p in pushed {
        for d in &p.layers {
            let b = send(|| c.head(lb.url(&format!("/v2/{}/blobs/{d}", p.repo)))).await;
            assert_eq!(
                b.status(),
                StatusCode::OK,
                "collected a used blob {}@{d}",
                p.repo
            );
        }
    }
}

/// The catalog index is lost and rebuilt from the bucket, every tag intact.
async fn index_rebuilt(
    c: &Client,
    lb: &Haproxy,
    replica: &Registry,
    bucket: &Bucket,
    pushed: &[Pushed],
) {
    let index = replica.stored("index").await;
    assert!(index.len() > PUSHES, "{}", index.len());
    {
        use object_store::ObjectStoreExt;
        let s3 = bucket.client();
        for (key, _) in &index {
            s3.delete(&object_store::path::Path::from(key.as_str()))
                .await
                .unwrap();
        }
    }
    let out = run(std::process::Command::new(binary("sealer-registry"))
        .envs(bucket.env())
        .args(["index-rebuild", "--storage", &bucket.url("lb")]));
    assert!(
        out.contains(&format!("lists {} repositories", PUSHES + 1)),
        "{out}"
    );
    let catalog: serde_json::Value = send(|| c.get(lb.url("/v2/_catalog?n=1000")))
        .await
        .json()
        .await
        .unwrap();
    let repos = catalog["repositories"].as_array().unwrap();
    for p in pushed {
        assert!(
            repos.iter().any(|r| r == p.repo.as_str()),
            "{} listed",
            p.repo
        );
        let url = lb.url(&format!("/v2/{}/tags/list", p.repo));
        let tags: serde_json::Value = send(|| c.get(&url)).await.json().await.unwrap();
        assert_eq!(tags["tags"], serde_json::json!(["v1"]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_behind_haproxy_lose_nothing_through_kills_and_a_node_down() {
    let mut garage = Garage::start(3);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("registry.toml");
    std::fs::write(&cfg, "[storage]\npart_size = 5242880\n").unwrap();
    let (mut replicas, lb) = replicas_behind_haproxy(&garage.bucket, cfg.to_str().unwrap());
    let c = client();

    // Garbage from an abandoned push, for the collector to find.
    let orphan = push_chunked(&c, &lb, "fleet/abandoned", &random_bytes(CHUNK + 1)).await;
    let tasks: Vec<_> = (0..PUSHES)
        .map(|i| tokio::spawn(push_one(c.clone(), lb.clone(), i)))
        .collect();
    over(&tasks, 10).await;
    replicas[1].kill9();
    over(&tasks, 25).await;
    garage.stop_node(2);
    let mut pushed = Vec::new();
    for t in tasks {
        pushed.push(t.await.unwrap());
    }
    read_back(&c, &lb, &pushed).await;
    garage.start_node(2);
    only_the_abandoned_blob_is_collected(&c, &lb, &orphan, &pushed).await;

    // containerd pulls a real image through the balancer.
    skopeo_push(&lb.host, "docker.io/library/app:1", None);
    let ctrd = Containerd::start();
    let image = format!("{}/docker.io/library/app:1", lb.host);
    run(ctrd.ctr().args([
        "images",
        "pull",
        "--plain-http",
        "--snapshotter",
        "native",
        &image,
    ]));

    index_rebuilt(&c, &lb, &replicas[0], &garage.bucket, &pushed).await;
    replicas.clear();
}
