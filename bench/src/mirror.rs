//! `regbench mirror`: pulling an image of 1 GiB in 5 layers directly from an upstream,
//! through sealer-registry's mirror (cold and warm), and through docker-registry in proxy
//! mode (cold and warm), in one run; plus the first byte of a cold 1 GiB blob.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use futures::StreamExt;
use reqwest::{Client, StatusCode};
use serde_json::json;

use crate::servers::{Kind, Server};
use crate::workloads::{BigBlob, MIB, client, push_image, push_monolithic};
use crate::{Args, Figures, median};

const REPO: &str = "library/bench";
const LAYERS: usize = 5;

/// Pulls `REPO:1` from `base` the way containerd does: the manifest, then config and
/// layers, 3 at a time, each read to the end. Returns the time.
async fn pull_image(c: &Client, base: &str, query: &str) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let resp = c
        .get(format!("{base}/v2/{REPO}/manifests/1{query}"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::OK,
        "manifest: {}",
        resp.status()
    );
    let m: serde_json::Value = resp.json().await?;
    let mut digests = vec![
        m["config"]["digest"]
            .as_str()
            .context("config")?
            .to_string(),
    ];
    for l in m["layers"].as_array().context("layers")? {
        digests.push(l["digest"].as_str().context("layer")?.to_string());
    }
    let results: Vec<anyhow::Result<usize>> = futures::stream::iter(digests)
        .map(|d| async move {
            let resp = c
                .get(format!("{base}/v2/{REPO}/blobs/{d}{query}"))
                .send()
                .await?;
            ensure!(resp.status() == StatusCode::OK, "blob: {}", resp.status());
            let mut n = 0;
            let mut body = resp.bytes_stream();
            while let Some(chunk) = body.next().await {
                n += chunk?.len();
            }
            Ok(n)
        })
        .buffer_unordered(3)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(t.elapsed())
}

/// Waits until the mirror has verified and stored everything it fetched.
async fn fills_done(c: &Client, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = c
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let running = text
            .lines()
            .find_map(|l| l.strip_prefix("sealer_registry_mirror_fills_in_progress "))
            .context("the mirror reports no fills_in_progress")?;
        if running.trim() == "0" {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "fills still running after 120 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Time to the first byte of a blob's body.
async fn first_byte(c: &Client, url: &str) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let resp = c.get(url).send().await?;
    ensure!(resp.status() == StatusCode::OK, "blob: {}", resp.status());
    let mut body = resp.bytes_stream();
    let first = body.next().await.context("empty body")??;
    ensure!(!first.is_empty());
    let ttfb = t.elapsed();
    // Let the fill finish before the next measurement starts.
    while let Some(chunk) = body.next().await {
        chunk?;
    }
    Ok(ttfb)
}

/// The upstream: an image of `LAYERS` layers adding up to `total` bytes, and one more blob
/// of `big` bytes for the first-byte test. Returns that blob's digest.
async fn populate(
    c: &Client,
    base: &str,
    base_buf: &Bytes,
    total: usize,
    big: usize,
) -> anyhow::Result<String> {
    let mut layers = Vec::new();
    for _ in 0..LAYERS {
        let blob = BigBlob::new(base_buf, total / LAYERS);
        push_monolithic(c, base, REPO, &blob).await?;
        layers.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob.digest, "size": blob.len}));
    }
    let config = serde_json::to_vec(
        &json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}),
    )?;
    push_image(c, base, REPO, "1", &config, layers).await?;
    let blob = BigBlob::new(base_buf, big);
    push_monolithic(c, base, "library/ttfb", &blob).await?;
    Ok(blob.digest)
}

#[derive(Debug, Clone, clap::Args)]
pub struct MirrorArgs {
    /// Put the upstream behind a link of this many MB/s (shared by all connections), as a
    /// registry across a network would be; by default it is reached over loopback.
    #[arg(long, value_name = "MB/S")]
    pub upstream_mbps: Option<f64>,
}

pub async fn run(args: &Args, margs: &MirrorArgs, base_buf: &Bytes) -> anyhow::Result<()> {
    let (total, big) = if args.quick {
        (64 * MIB, 64 * MIB)
    } else {
        (1024 * MIB, 1024 * MIB)
    };
    let c = client();
    let upstream = Server::start(Kind::Sealer, &args.sealer, &args.work)?;
    let big_digest = populate(&c, &upstream.base, base_buf, total, big).await?;
    // Where pulls from "the upstream" go: the registry itself, or a throttled link to it.
    let up = match margs.upstream_mbps {
        Some(mbps) => link::start(upstream.base.trim_start_matches("http://"), mbps).await?,
        None => upstream.base.trim_start_matches("http://").to_string(),
    };
    let up_base = format!("http://{up}");

    let mut rounds: Vec<Figures> = Vec::new();
    for round in 0..args.rounds {
        eprintln!("round {}/{}", round + 1, args.rounds);
        let mut f = Figures::new();
        // Warm the upstream's page cache equally for everyone.
        pull_image(&c, &upstream.base, "").await?;
        let cpu = upstream.cpu_seconds();
        f.insert(
            "direct_from_upstream_s",
            pull_image(&c, &up_base, "").await?.as_secs_f64(),
        );
        f.insert("direct_upstream_cpu_s", upstream.cpu_seconds() - cpu);

        let sealer_first = round % 2 == 0;
        for kind in if sealer_first {
            [Kind::Sealer, Kind::Reference]
        } else {
            [Kind::Reference, Kind::Sealer]
        } {
            match kind {
                Kind::Sealer => {
                    let m = Server::start_with(
                        Kind::Sealer,
                        &args.sealer,
                        &args.work,
                        &["--upstream".into(), format!("docker.io=http://{up}")],
                        "",
                    )?;
                    let t = Instant::now();
                    f.insert(
                        "sealer_mirror_cold_s",
                        pull_image(&c, &m.base, "?ns=docker.io")
                            .await?
                            .as_secs_f64(),
                    );
                    f.insert("sealer_mirror_cold_cpu_s", m.cpu_seconds());
                    // Blobs are committed once hashed, which may trail the pull: "warm"
                    // means cached.
                    fills_done(&c, &m.base).await?;
                    f.insert("sealer_mirror_cold_stored_s", t.elapsed().as_secs_f64());
                    f.insert("sealer_mirror_cold_stored_cpu_s", m.cpu_seconds());
                    // Warm pulls alternate with direct pulls from our registry (the
                    // upstream, over loopback), three each.
                    let (mut warm, mut direct) = (Vec::new(), Vec::new());
                    for _ in 0..3 {
                        warm.push(
                            pull_image(&c, &m.base, "?ns=docker.io")
                                .await?
                                .as_secs_f64(),
                        );
                        direct.push(pull_image(&c, &upstream.base, "").await?.as_secs_f64());
                    }
                    f.insert("sealer_mirror_warm_s", median(warm));
                    f.insert("direct_from_our_registry_s", median(direct));
                    let ttfb = first_byte(
                        &c,
                        &format!("{}/v2/library/ttfb/blobs/{big_digest}?ns=docker.io", m.base),
                    )
                    .await?;
                    f.insert(
                        "sealer_mirror_cold_1GiB_first_byte_ms",
                        ttfb.as_secs_f64() * 1e3,
                    );
                }
                Kind::Reference => {
                    let p = Server::start_with(
                        Kind::Reference,
                        &args.sealer,
                        &args.work,
                        &[],
                        &format!("proxy: {{remoteurl: \"http://{up}\"}}\n"),
                    )?;
                    f.insert(
                        "reference_proxy_cold_s",
                        pull_image(&c, &p.base, "").await?.as_secs_f64(),
                    );
                    f.insert("reference_proxy_cold_cpu_s", p.cpu_seconds());
                    f.insert(
                        "reference_proxy_warm_s",
                        pull_image(&c, &p.base, "").await?.as_secs_f64(),
                    );
                    let ttfb = first_byte(
                        &c,
                        &format!("{}/v2/library/ttfb/blobs/{big_digest}", p.base),
                    )
                    .await?;
                    f.insert(
                        "reference_proxy_cold_1GiB_first_byte_ms",
                        ttfb.as_secs_f64() * 1e3,
                    );
                }
            }
        }
        for (k, v) in &f {
            eprintln!("  {k:40} {v:10.3}");
        }
        rounds.push(f);
    }

    let m = |k: &str| median(rounds.iter().map(|f| f[k]).collect());
    let size = format!("{} MiB in {LAYERS} layers", total / MIB);
    println!("| pull of {size} | median | ratio | target |");
    println!("|---|---:|---:|---|");
    let direct = m("direct_from_upstream_s");
    let link = margs
        .upstream_mbps
        .map_or("loopback".to_string(), |r| format!("a {r} MB/s link"));
    println!("| direct from the upstream ({link}) | {direct:.2} s | 1.00 | |");
    println!(
        "| sealer mirror, cold | {:.2} s | {:.2}× direct | ≤ 1.1× direct |",
        m("sealer_mirror_cold_s"),
        m("sealer_mirror_cold_s") / direct
    );
    println!(
        "| sealer mirror, cold, until every blob is verified and stored | {:.2} s | {:.2}× direct | |",
        m("sealer_mirror_cold_stored_s"),
        m("sealer_mirror_cold_stored_s") / direct
    );
    println!(
        "| docker-registry proxy, cold | {:.2} s | {:.2}× sealer cold | sealer ≥ 1.3× faster |",
        m("reference_proxy_cold_s"),
        m("reference_proxy_cold_s") / m("sealer_mirror_cold_s")
    );
    // The upstream is itself a sealer-registry holding the image: pulling from it over
    // loopback is the direct pull from our registry the warm mirror is compared with.
    println!(
        "| sealer mirror, warm (vs {:.2} s direct from our registry, alternated) | {:.2} s | {:.2}× the direct pull's speed | ≥ 0.95× |",
        m("direct_from_our_registry_s"),
        m("sealer_mirror_warm_s"),
        m("direct_from_our_registry_s") / m("sealer_mirror_warm_s")
    );
    println!(
        "| docker-registry proxy, warm | {:.2} s | | |",
        m("reference_proxy_warm_s")
    );
    println!(
        "| first byte of a cold {} MiB blob: sealer / docker-registry | {:.0} ms / {:.0} ms | | sealer < 1 s |",
        big / MIB,
        m("sealer_mirror_cold_1GiB_first_byte_ms"),
        m("reference_proxy_cold_1GiB_first_byte_ms")
    );
    println!(
        "| CPU seconds: upstream for a direct pull / sealer mirror cold pull / until stored / docker-registry cold pull | {:.2} / {:.2} / {:.2} / {:.2} | | |",
        m("direct_upstream_cpu_s"),
        m("sealer_mirror_cold_cpu_s"),
        m("sealer_mirror_cold_stored_cpu_s"),
        m("reference_proxy_cold_cpu_s")
    );
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_vec_pretty(&json!({ "rounds": rounds }))?,
        )?;
    }
    Ok(())
}

/// A TCP relay that carries the upstream's answers at a fixed rate, shared by all
/// connections, like a network link to a remote registry.
mod link {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::Mutex;

    /// Starts the relay to `target` (`host:port`); returns its own `host:port`.
    pub async fn start(target: &str, mbps: f64) -> anyhow::Result<String> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let target = target.to_string();
        // When the link is next free.
        let busy_until = Arc::new(Mutex::new(Instant::now()));
        let per_byte = Duration::from_secs_f64(1.0 / (mbps * 1e6));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (target, busy_until) = (target.clone(), busy_until.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut cr, &mut sw).await;
                        let _ = sw.shutdown().await;
                    });
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = sr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let due = {
                            let mut b = busy_until.lock().await;
                            *b = (*b).max(Instant::now()) + per_byte * n as u32;
                            *b
                        };
                        tokio::time::sleep_until(due.into()).await;
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = cw.shutdown().await;
                    up.abort();
                });
            }
        });
        Ok(addr)
    }
}
