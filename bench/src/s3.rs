//! `regbench s3`: sealer-registry on a Garage bucket against docker-registry 2.8 with its
//! `s3` driver on the same Garage, alternating, in one run; then sealer-registry as 1 and
//! as 3 replicas behind HAProxy.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use reqwest::{Client, StatusCode};
use sealer_e2e::{Bucket, Garage, Haproxy};

use crate::servers::{Kind, Server};
use crate::workloads::*;
use crate::{Args, Figures, alternate, median, print_ratios};

#[derive(Debug, clap::Args)]
pub struct S3Args {
    /// Garage nodes: 1, or 3 (replication 3).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// MiB of the blob pushed (monolithic and chunked) and pulled.
    #[arg(long, default_value_t = 256)]
    blob_mib: usize,
    /// Repositories in the catalog test.
    #[arg(long, default_value_t = 5000)]
    repos: usize,
}

fn target(metric: &str) -> &'static str {
    match metric {
        "push_monolithic_MBps" | "push_chunked_MBps" => ">= 1.3",
        "pull_MBps" => ">= 1.0",
        "manifest_get_c64_rps" => ">= 10",
        "manifest_get_c64_p99_ms" => "< 20 ms (absolute)",
        "push_200_layers_s" => "<= 0.5",
        "catalog_n100_p50_ms" => "< 50 ms (absolute)",
        "start_to_first_answer_s" => "< 5 s (absolute)",
        _ => "",
    }
}

pub async fn run(args: &Args, s: &S3Args, base_buf: &Bytes) -> anyhow::Result<()> {
    let garage = tokio::task::block_in_place(|| Garage::start(s.nodes));
    let (ours, reference) = alternate(args.rounds, " on Garage", async |kind, round| {
        let prefix = format!("{}-{round}", kind.label());
        once(kind, args, s, &garage.bucket, &prefix, base_buf).await
    })
    .await?;
    print_ratios("docker-registry 2.8 (s3)", &ours, &reference, target);
    let replicas = replicas(args, s, &garage.bucket, base_buf).await?;
    println!("\n| sealer-registry through HAProxy | 1 replica | 3 replicas | ratio 3/1 |");
    println!("|---|---:|---:|---:|");
    for metric in replicas[0].keys() {
        let (a, b) = (replicas[0][metric], replicas[1][metric]);
        println!("| {metric} | {a:.2} | {b:.2} | {:.2} |", b / a);
    }
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "rounds": args.rounds, "nodes": s.nodes,
            "sealer-registry": ours, "docker-registry": reference,
            "replicas_1": replicas[0], "replicas_3": replicas[1],
        });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)?;
    }
    Ok(())
}

async fn once(
    kind: Kind,
    args: &Args,
    s: &S3Args,
    bucket: &Bucket,
    prefix: &str,
    base_buf: &Bytes,
) -> anyhow::Result<Figures> {
    let (server, started) =
        Server::start_on_bucket(kind, &args.sealer, &args.work, bucket, prefix, None)?;
    let base = server.base.clone();
    let c = client();
    let mut f = Figures::new();
    f.insert("start_to_first_answer_s", started.as_secs_f64());
    let size = s.blob_mib * MIB;
    let mbps = |d: Duration| size as f64 / 1e6 / d.as_secs_f64();

    let blob = BigBlob::new(base_buf, size);
    let d = push_monolithic(&c, &base, "bench/mono", &blob)
        .await
        .context("monolithic push")?;
    f.insert("push_monolithic_MBps", mbps(d));
    let blob = BigBlob::new(base_buf, size);
    let d = push_chunked(&c, &base, "bench/chunked", &blob, 16 * MIB)
        .await
        .context("chunked push")?;
    f.insert("push_chunked_MBps", mbps(d));
    let (d, n) = pull(&c, &base, "bench/chunked", &blob.digest)
        .await
        .context("pull")?;
    ensure!(n == size, "pulled {n} bytes");
    f.insert("pull_MBps", mbps(d));

    let manifest = small_image(&c, &base, "bench/manifest", "latest").await?;
    let r = manifest_get_rate(&base, "bench/manifest", args.rate_seconds)
        .await
        .context("manifest GET rate")?;
    f.insert("manifest_get_c64_rps", r.per_sec);
    f.insert("manifest_get_c64_p99_ms", r.p99.as_secs_f64() * 1e3);

    let d = push_many_layers(&c, &base, "bench/layers", 200, 4096, 4)
        .await
        .context("200-layer push")?;
    f.insert("push_200_layers_s", d.as_secs_f64());

    fill_catalog(&c, &base, &manifest, s.repos)
        .await
        .context("creating repositories")?;
    f.insert(
        "catalog_n100_p50_ms",
        catalog_p50(&c, &base, s.repos).await? * 1e3,
    );
    Ok(f)
}

/// `repos` repositories, each holding the image of `bench/manifest` (its blobs mounted).
async fn fill_catalog(c: &Client, base: &str, manifest: &[u8], repos: usize) -> anyhow::Result<()> {
    let m: serde_json::Value = serde_json::from_slice(manifest)?;
    let blobs = [
        m["config"]["digest"]
            .as_str()
            .context("config")?
            .to_string(),
        m["layers"][0]["digest"]
            .as_str()
            .context("layer")?
            .to_string(),
    ];
    futures::future::try_join_all((0..16).map(|w| {
        let (c, blobs) = (c.clone(), blobs.clone());
        async move {
            for i in (w..repos).step_by(16) {
                let repo = format!("bench/cat/r{i:05}");
                for d in &blobs {
                    let url =
                        format!("{base}/v2/{repo}/blobs/uploads/?mount={d}&from=bench/manifest");
                    let resp = c.post(url).send().await?;
                    ensure!(
                        resp.status() == StatusCode::CREATED,
                        "mount: {}",
                        resp.status()
                    );
                }
                tag_manifest(&c, base, &repo, "1", manifest).await?;
            }
            anyhow::Ok(())
        }
    }))
    .await?;
    Ok(())
}

/// The median time of `_catalog?n=100`, asked at 20 places spread over the catalog.
async fn catalog_p50(c: &Client, base: &str, repos: usize) -> anyhow::Result<f64> {
    let mut times = Vec::new();
    for k in 0..20 {
        let last = format!("bench/cat/r{:05}", k * repos.saturating_sub(150) / 20);
        let t = Instant::now();
        let resp = c
            .get(format!("{base}/v2/_catalog?n=100&last={last}"))
            .send()
            .await?;
        ensure!(
            resp.status() == StatusCode::OK,
            "catalog: {}",
            resp.status()
        );
        let body: serde_json::Value = resp.json().await?;
        times.push(t.elapsed().as_secs_f64());
        let listed = body["repositories"].as_array().map_or(0, Vec::len);
        ensure!(listed == 100, "catalog page of {listed}");
    }
    Ok(median(times))
}

/// sealer-registry as 1 and as 3 replicas over one prefix, behind HAProxy.
async fn replicas(
    args: &Args,
    s: &S3Args,
    bucket: &Bucket,
    base_buf: &Bytes,
) -> anyhow::Result<Vec<Figures>> {
    let mut out = Vec::new();
    for n in [1, 3] {
        let prefix = format!("replicas-{n}");
        let addrs: Vec<String> = (0..n)
            .map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().to_string()
            })
            .collect();
        let mut servers = Vec::new();
        for a in &addrs {
            servers.push(
                Server::start_on_bucket(
                    Kind::Sealer,
                    &args.sealer,
                    &args.work,
                    bucket,
                    &prefix,
                    Some(a),
                )?
                .0,
            );
        }
        let lb = tokio::task::block_in_place(|| Haproxy::start(&addrs));
        let base = format!("http://{}", lb.host);
        let c = client();
        let mut f = Figures::new();
        let size = s.blob_mib * MIB;
        let blob = BigBlob::new(base_buf, size);
        let d = push_chunked(&c, &base, "bench/lb", &blob, 16 * MIB)
            .await
            .context("chunked push via LB")?;
        f.insert("push_chunked_MBps", size as f64 / 1e6 / d.as_secs_f64());
        small_image(&c, &base, "bench/lbm", "latest").await?;
        let r = manifest_get_rate(&base, "bench/lbm", args.rate_seconds)
            .await
            .context("manifest GET rate via LB")?;
        f.insert("manifest_get_c64_rps", r.per_sec);
        f.insert("manifest_get_c64_p99_ms", r.p99.as_secs_f64() * 1e3);
        eprintln!("{n} replica(s): {f:?}");
        out.push(f);
        drop(lb);
        drop(servers);
    }
    Ok(out)
}
