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

pub async fn run(args: &Args, base_buf: &Bytes) -> anyhow::Result<()> {
    let (total, big) = if args.quick {
        (64 * MIB, 64 * MIB)
    } else {
        (1024 * MIB, 1024 * MIB)
    };
    let c = client();
    let upstream = Server::start(Kind::Sealer, &args.sealer, &args.work)?;
    let big_digest = populate(&c, &upstream.base, base_buf, total, big).await?;
    let up = upstream.base.trim_start_matches("http://").to_string();

    let mut rounds: Vec<Figures> = Vec::new();
    for round in 0..args.rounds {
        eprintln!("round {}/{}", round + 1, args.rounds);
        let mut f = Figures::new();
        // Warm the upstream's page cache equally for everyone.
        pull_image(&c, &upstream.base, "").await?;
        f.insert(
            "direct_from_upstream_s",
            pull_image(&c, &upstream.base, "").await?.as_secs_f64(),
        );

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
                    f.insert(
                        "sealer_mirror_cold_s",
                        pull_image(&c, &m.base, "?ns=docker.io")
                            .await?
                            .as_secs_f64(),
                    );
                    f.insert(
                        "sealer_mirror_warm_s",
                        pull_image(&c, &m.base, "?ns=docker.io")
                            .await?
                            .as_secs_f64(),
                    );
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
    println!("| direct from the upstream | {direct:.2} s | 1.00 | |");
    println!(
        "| sealer mirror, cold | {:.2} s | {:.2}× direct | ≤ 1.1× direct |",
        m("sealer_mirror_cold_s"),
        m("sealer_mirror_cold_s") / direct
    );
    println!(
        "| docker-registry proxy, cold | {:.2} s | {:.2}× sealer cold | sealer ≥ 1.3× faster |",
        m("reference_proxy_cold_s"),
        m("reference_proxy_cold_s") / m("sealer_mirror_cold_s")
    );
    // The upstream is itself a sealer-registry holding the image: pulling from it is the
    // direct pull from our registry the warm mirror is compared with.
    println!(
        "| sealer mirror, warm | {:.2} s | {:.2}× the direct pull's speed | ≥ 0.95× |",
        m("sealer_mirror_warm_s"),
        direct / m("sealer_mirror_warm_s")
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
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_vec_pretty(&json!({ "rounds": rounds }))?,
        )?;
    }
    Ok(())
}
