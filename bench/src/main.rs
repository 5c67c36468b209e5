//! `regbench`: the same workload against `sealer-registry` and Debian's `docker-registry`
//! (CNCF distribution 2.8) in one run, alternating the two, each at least three times;
//! prints the median of each figure and the ratio. See `docs/benchmarks.md`.

mod build;
mod bundle;
mod mirror;
mod run;
mod s3;
mod servers;
mod workloads;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::{Parser, Subcommand};

use servers::{Kind, Server};
use workloads::*;

#[derive(Debug, Parser)]
#[command(about = "sealer-registry vs docker-registry, same run, medians and ratios")]
pub struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// The sealer-registry binary (build it with `cargo build --release`).
    #[arg(long, default_value = "target/release/sealer-registry")]
    pub sealer: PathBuf,
    /// Rounds; each runs both registries, alternating which goes first.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Where the stores live (the same disk for both).
    #[arg(long, default_value = "/var/tmp/regbench")]
    pub work: PathBuf,
    /// Seconds each request-rate test runs.
    #[arg(long, default_value_t = 5)]
    pub rate_seconds: u64,
    /// Smaller sizes, to check the benchmark itself quickly.
    #[arg(long)]
    pub quick: bool,
    /// Also write every measurement as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// The registry workload (the default).
    Registry,
    /// Pulls through the pull-through mirror against docker-registry's proxy mode.
    Mirror(mirror::MirrorArgs),
    /// `sealer build` against `tar | zstd -T0` plus `skopeo copy` of the same images.
    Build(build::BuildArgs),
    /// `sealer save`/`load` against `tar` of the same blobs and skopeo's oci-archive.
    Bundle(bundle::BundleArgs),
    /// `sealer run` onto test hosts against `scp` to one host after another.
    Run(run::RunArgs),
    /// The registry on a Garage bucket against docker-registry's s3 driver on the same
    /// Garage; then 1 and 3 replicas behind HAProxy.
    S3(s3::S3Args),
}

/// One figure of one run.
pub type Figures = BTreeMap<&'static str, f64>;

struct Sizes {
    big: usize,
    chunk: usize,
    many_blob: usize,
    many_blobs: usize,
    many_pulls: usize,
    layers: usize,
    tags: usize,
    dedupe: usize,
}

async fn run_once(kind: Kind, args: &Args, base_buf: &Bytes, s: &Sizes) -> anyhow::Result<Figures> {
    let server = Server::start(kind, &args.sealer, &args.work)?;
    let base = server.base.clone();
    let c = client();
    let mut f = Figures::new();
    let mbps = |bytes: usize, d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();

    let blob = BigBlob::new(base_buf, s.big);
    let d = push_monolithic(&c, &base, "bench/mono", &blob)
        .await
        .context("monolithic push")?;
    f.insert("push_monolithic_MBps", mbps(s.big, d));

    let blob = BigBlob::new(base_buf, s.big);
    let d = push_chunked(&c, &base, "bench/chunked", &blob, s.chunk)
        .await
        .context("chunked push")?;
    f.insert("push_chunked_MBps", mbps(s.big, d));

    let (d, n) = pull(&c, &base, "bench/chunked", &blob.digest)
        .await
        .context("pull")?;
    anyhow::ensure!(n == s.big, "pulled {n} bytes");
    f.insert("pull_MBps", mbps(s.big, d));

    let mut blobs = Vec::new();
    for _ in 0..s.many_blobs {
        blobs.push(push_small(&c, &base, "bench/many", &random(s.many_blob)).await?);
    }
    let d = pull_many(&c, &base, "bench/many", &blobs, s.many_pulls, 32)
        .await
        .context("concurrent pulls")?;
    f.insert("pull_4MiB_c32_MBps", mbps(s.many_pulls * s.many_blob, d));

    let manifest = small_image(&c, &base, "bench/manifest", "latest").await?;
    let r = manifest_get_rate(&base, "bench/manifest", args.rate_seconds)
        .await
        .context("manifest GET rate")?;
    f.insert("manifest_get_c64_rps", r.per_sec);
    f.insert("manifest_get_c64_p50_ms", r.p50.as_secs_f64() * 1e3);
    f.insert("manifest_get_c64_p99_ms", r.p99.as_secs_f64() * 1e3);

    let r = rate(
        &base,
        "HEAD",
        &format!("/v2/bench/many/blobs/{}", blobs[0]),
        &[],
        64,
        Duration::from_secs(args.rate_seconds),
    )
    .await
    .context("HEAD blob rate")?;
    f.insert("head_blob_c64_rps", r.per_sec);
    f.insert("head_blob_c64_p99_ms", r.p99.as_secs_f64() * 1e3);

    let d = push_many_layers(&c, &base, "bench/layers", s.layers, 4096, 4)
        .await
        .context("200-layer push")?;
    f.insert("push_200_layers_s", d.as_secs_f64());

    futures::future::try_join_all((0..16).map(|w| {
        let c = c.clone();
        let base = base.clone();
        let manifest = manifest.clone();
        async move {
            for i in (w..s.tags).step_by(16) {
                tag_manifest(&c, &base, "bench/manifest", &format!("t{i:05}"), &manifest).await?;
            }
            anyhow::Ok(())
        }
    }))
    .await
    .context("creating tags")?;
    let (d, seen) = list_tags(&c, &base, "bench/manifest", 1000)
        .await
        .context("listing tags")?;
    anyhow::ensure!(seen == s.tags + 1, "listed {seen} tags");
    f.insert("list_10k_tags_n1000_s", d.as_secs_f64());

    let before = server.disk_used();
    let data = random(s.dedupe);
    for repo in ["bench/dedupe-a", "bench/dedupe-b", "bench/dedupe-c"] {
        push_small(&c, &base, repo, &data)
            .await
            .context("dedupe push")?;
    }
    let used = server.disk_used().saturating_sub(before);
    f.insert(
        "disk_per_logical_3x256MiB",
        used as f64 / (3 * s.dedupe) as f64,
    );

    f.insert("peak_rss_MiB", server.peak_rss() as f64 / MIB as f64);
    Ok(f)
}

/// Runs `once` for sealer-registry and the reference `rounds` times, alternating which
/// goes first; returns each one's figures (printed as they come, `what` after the name).
pub async fn alternate(
    rounds: usize,
    what: &str,
    mut once: impl AsyncFnMut(Kind, usize) -> anyhow::Result<Figures>,
) -> anyhow::Result<(Vec<Figures>, Vec<Figures>)> {
    let (mut ours, mut reference) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [Kind::Sealer, Kind::Reference]
        } else {
            [Kind::Reference, Kind::Sealer]
        };
        for kind in order {
            eprintln!("round {}/{rounds}: {}{what}", round + 1, kind.label());
            let f = once(kind, round)
                .await
                .with_context(|| format!("{} round {}", kind.label(), round + 1))?;
            for (k, v) in &f {
                eprintln!("  {k:32} {v:12.2}");
            }
            match kind {
                Kind::Sealer => ours.push(f),
                Kind::Reference => reference.push(f),
            }
        }
    }
    Ok((ours, reference))
}

/// The markdown table of medians and ratios sealer / reference.
pub fn print_ratios(
    reference_name: &str,
    ours: &[Figures],
    reference: &[Figures],
    target: fn(&str) -> &'static str,
) {
    println!("| metric | sealer-registry | {reference_name} | ratio sealer/reference | target |");
    println!("|---|---:|---:|---:|---|");
    for metric in ours[0].keys() {
        let a = median(ours.iter().map(|f| f[metric]).collect());
        let b = median(reference.iter().map(|f| f[metric]).collect());
        println!(
            "| {metric} | {a:.2} | {b:.2} | {:.2} | {} |",
            a / b,
            target(metric)
        );
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Which way is better, and the target for the ratio sealer / reference.
fn target(metric: &str) -> &'static str {
    match metric {
        "push_monolithic_MBps" | "push_chunked_MBps" => ">= 1.4",
        "pull_MBps" | "pull_4MiB_c32_MBps" => ">= 1.0",
        "manifest_get_c64_rps" | "head_blob_c64_rps" => ">= 15",
        "manifest_get_c64_p99_ms" => "< 10 ms (absolute)",
        "push_200_layers_s" => "<= 0.3",
        "peak_rss_MiB" => "<= 0.2",
        _ => "",
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.work)?;
    anyhow::ensure!(
        args.sealer.exists(),
        "{} not found: cargo build --release -p sealer",
        args.sealer.display()
    );
    let s = if args.quick {
        Sizes {
            big: 64 * MIB,
            chunk: 16 * MIB,
            many_blob: 4 * MIB,
            many_blobs: 8,
            many_pulls: 64,
            layers: 200,
            tags: 1000,
            dedupe: 16 * MIB,
        }
    } else {
        Sizes {
            big: GIB,
            chunk: 16 * MIB,
            many_blob: 4 * MIB,
            many_blobs: 32,
            many_pulls: 256,
            layers: 200,
            tags: 10_000,
            dedupe: 256 * MIB,
        }
    };
    let base_buf = Bytes::from(random(64 * MIB));
    match &args.mode {
        Some(Mode::Mirror(m)) => return mirror::run(&args, m, &base_buf).await,
        Some(Mode::Build(b)) => return build::run(&args, b, &base_buf).await,
        Some(Mode::Bundle(b)) => return bundle::run(&args, b, &base_buf).await,
        Some(Mode::Run(r)) => return run::run(&args, r, &base_buf).await,
        Some(Mode::S3(o)) => return s3::run(&args, o, &base_buf).await,
        _ => {}
    }
    let (ours, reference) = alternate(args.rounds, "", async |kind, _| {
        run_once(kind, &args, &base_buf, &s).await
    })
    .await?;
    print_ratios("docker-registry 2.8", &ours, &reference, target);
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "rounds": args.rounds,
            "sealer-registry": ours,
            "docker-registry": reference,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)?;
    }
    Ok(())
}
