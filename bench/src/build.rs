//! `regbench build`: `sealer build` of a large context with container images from a local
//! upstream, against the same work done by `tar | zstd -T0` plus `skopeo copy` of each
//! image; then a rebuild with nothing changed. Rounds alternate which goes first.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use serde_json::json;

use crate::servers::{Kind, Server};
use crate::workloads::*;
use crate::{Args, Figures, median};

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Size of the build context's files, MiB.
    #[arg(long, default_value_t = 2048)]
    pub context_mib: usize,
    /// Container images the context names.
    #[arg(long, default_value_t = 20)]
    pub images: usize,
    /// The sealer binary.
    #[arg(long, default_value = "target/release/sealer")]
    pub sealer_cli: PathBuf,
}

const LAYER: usize = 4 * MIB;

/// Runs a command to completion; returns its wall time and peak RSS (KiB), as GNU
/// `time` reports it (a child forked from this process would start with our RSS).
pub(crate) fn measured(cmd: &mut Command) -> anyhow::Result<(Duration, u64)> {
    let report = tempfile::NamedTempFile::new()?;
    let mut timed = Command::new("/usr/bin/time");
    timed
        .args(["-f", "%M", "-o"])
        .arg(report.path())
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdout(std::process::Stdio::null());
    let t = Instant::now();
    let status = timed
        .status()
        .with_context(|| format!("running {cmd:?} (needs GNU time: apt install time)"))?;
    let elapsed = t.elapsed();
    ensure!(status.success(), "{cmd:?} failed ({status})");
    let kib = std::fs::read_to_string(report.path())?
        .trim()
        .parse()
        .context("reading GNU time's report")?;
    Ok((elapsed, kib))
}

/// The context: half incompressible files, half text-like, plus a Kubefile and an
/// imageList naming the images.
pub(crate) fn make_context(
    dir: &Path,
    mib: usize,
    images: usize,
    base: &Bytes,
) -> anyhow::Result<()> {
    let files = dir.join("files");
    std::fs::create_dir_all(&files)?;
    let per_file = 64 * MIB;
    let count = (mib * MIB).div_ceil(per_file);
    let words: Vec<&str> =
        "cluster node pod image layer registry mirror apply launch kube sealer value"
            .split(' ')
            .collect();
    for i in 0..count {
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(files.join(format!("f{i:03}.bin")))?);
        if i % 2 == 0 {
            let start = (i * 7919 * 4096) % (base.len() - per_file / 4);
            for _ in 0..4 {
                f.write_all(&base[start..start + per_file / 4])?;
            }
        } else {
            let mut written = 0;
            let mut n = i;
            while written < per_file {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let line = format!(
                    "{} {} {} {}\n",
                    words[(n >> 33) % words.len()],
                    n >> 40,
                    words[(n >> 20) % words.len()],
                    n & 0xffff
                );
                f.write_all(line.as_bytes())?;
                written += line.len();
            }
        }
    }
    let list: String = (0..images)
        .map(|i| format!("docker.io/bench/img-{i}:1\n"))
        .collect();
    std::fs::write(dir.join("imageList"), list)?;
    std::fs::write(
        dir.join("Kubefile"),
        "FROM scratch\nCOPY files files\nCOPY imageList manifests/imageList\n",
    )?;
    Ok(())
}

async fn populate(base: &str, images: usize) -> anyhow::Result<u64> {
    let c = client();
    let mut bytes = 0;
    for i in 0..images {
        let repo = format!("bench/img-{i}");
        let mut descs = Vec::new();
        for _ in 0..2 {
            let data = random(LAYER);
            let d = push_small(&c, base, &repo, &data).await?;
            descs.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": data.len()}));
            bytes += data.len() as u64;
        }
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "n": i,
        }))?;
        push_image(&c, base, &repo, "1", &config, descs).await?;
    }
    Ok(bytes)
}

pub async fn run(args: &Args, b: &BuildArgs, base_buf: &Bytes) -> anyhow::Result<()> {
    ensure!(
        b.sealer_cli.exists(),
        "{} not found: cargo build --release -p sealer",
        b.sealer_cli.display()
    );
    let (mib, images) = if args.quick {
        (256, 4)
    } else {
        (b.context_mib, b.images)
    };
    let work = args.work.join("build");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let upstream = Server::start(Kind::Sealer, &args.sealer, &work)?;
    let image_bytes = populate(&upstream.base, images).await?;
    let ctx = work.join("context");
    make_context(&ctx, mib, images, base_buf)?;
    eprintln!(
        "context {mib} MiB, {images} images ({} MiB of layers) on {}",
        image_bytes / MIB as u64,
        upstream.base
    );
    let up_host = upstream.base.trim_start_matches("http://").to_string();

    let mut ours: Vec<Figures> = Vec::new();
    let mut reference: Vec<Figures> = Vec::new();
    for round in 0..args.rounds {
        let sealer_first = round % 2 == 0;
        for is_sealer in [sealer_first, !sealer_first] {
            let out = work.join("out");
            let _ = std::fs::remove_dir_all(&out);
            std::fs::create_dir_all(&out)?;
            sync_and_settle();
            let mut f = Figures::new();
            if is_sealer {
                let sealer = |root: &Path| {
                    let mut c = Command::new(&b.sealer_cli);
                    c.arg("--root")
                        .arg(root)
                        .args(["-q", "--upstream", &format!("docker.io=http://{up_host}")])
                        .args(["build", "-t", "bench.example/app:1"])
                        .arg(&ctx);
                    c
                };
                let root = out.join("store");
                let (t, rss) = measured(&mut sealer(&root))?;
                f.insert("build_s", t.as_secs_f64());
                f.insert("build_peak_rss_mib", rss as f64 / 1024.0);
                let (t, rss) = measured(&mut sealer(&root))?;
                f.insert("rebuild_no_change_s", t.as_secs_f64());
                f.insert("rebuild_peak_rss_mib", rss as f64 / 1024.0);
                eprintln!("round {}: sealer build {f:?}", round + 1);
                ours.push(f);
            } else {
                let t0 = Instant::now();
                let (_, rss_tar) = measured(Command::new("sh").arg("-c").arg(format!(
                    "tar -cf - -C {} files imageList | zstd -q -T0 -3 -o {}",
                    ctx.display(),
                    out.join("context.tar.zst").display()
                )))?;
                let mut rss = rss_tar;
                for i in 0..images {
                    let (_, r) = measured(
                        Command::new("skopeo")
                            .args(["copy", "--quiet", "--src-tls-verify=false"])
                            .arg(format!("docker://{up_host}/bench/img-{i}:1"))
                            .arg(format!("oci:{}:img-{i}", out.join("layout").display())),
                    )?;
                    rss = rss.max(r);
                }
                f.insert("build_s", t0.elapsed().as_secs_f64());
                f.insert("build_peak_rss_mib", rss as f64 / 1024.0);
                eprintln!("round {}: tar|zstd + skopeo {f:?}", round + 1);
                reference.push(f);
            }
        }
    }
    println!("| metric | sealer build | tar \\| zstd -T0 + skopeo copy | ratio | target |");
    println!("|---|---:|---:|---:|---|");
    let m = |v: &[Figures], k: &str| median(v.iter().filter_map(|f| f.get(k).copied()).collect());
    let (a, r) = (m(&ours, "build_s"), m(&reference, "build_s"));
    println!("| build, s | {a:.2} | {r:.2} | {:.2} | ≤ 1.0 |", a / r);
    let (a, r) = (
        m(&ours, "build_peak_rss_mib"),
        m(&reference, "build_peak_rss_mib"),
    );
    println!(
        "| peak RSS, MiB | {a:.1} | {r:.1} | {:.2} | ≤ 150 MiB |",
        a / r
    );
    println!(
        "| rebuild, nothing changed, s | {:.2} | | | ≤ 2 s |",
        m(&ours, "rebuild_no_change_s")
    );
    println!(
        "| rebuild peak RSS, MiB | {:.1} | | | ≤ 150 MiB |",
        m(&ours, "rebuild_peak_rss_mib")
    );
    drop(upstream);
    Ok(())
}

/// Writes back dirty pages so one run's writeback does not slow the next.
fn sync_and_settle() {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    std::thread::sleep(Duration::from_millis(500));
}
