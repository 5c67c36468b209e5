//! `regbench bundle`: `sealer save` and `sealer load` of a large image against `tar` of
//! the same blob files and against skopeo's `oci-archive:`, plus the size of a delta
//! after one changed 10 MiB layer. Rounds alternate the order.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, ensure};
use bytes::Bytes;
use serde_json::json;

use crate::servers::{Kind, Server};
use crate::workloads::*;
use crate::{Args, Figures, median};

#[derive(Debug, clap::Args)]
pub struct BundleArgs {
    /// Image size, MiB (in layers of at most 1 GiB).
    #[arg(long, default_value_t = 5120)]
    pub image_mib: usize,
    /// The sealer binary.
    #[arg(long, default_value = "target/release/sealer")]
    pub sealer_cli: PathBuf,
}

const REPO: &str = "docker.io/bench/big";

/// Pushes `mib` MiB of random layers (at most 1 GiB each); returns their descriptors.
async fn push_layers(
    base: &str,
    buf: &Bytes,
    mib: usize,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let c = client();
    let mut descs = Vec::new();
    let mut left = mib * MIB;
    while left > 0 {
        let len = left.min(1024 * MIB);
        let blob = BigBlob::new(buf, len);
        push_monolithic(&c, base, REPO, &blob).await?;
        descs.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blob.digest, "size": len}));
        left -= len;
    }
    Ok(descs)
}

/// Pushes `tag`: the shared layers plus a fresh 10 MiB layer (what a new version changes).
async fn push_version(base: &str, shared: &[serde_json::Value], tag: &str) -> anyhow::Result<()> {
    let c = client();
    let mut descs = shared.to_vec();
    let small = random(10 * MIB);
    let d = push_small(&c, base, REPO, &small).await?;
    descs.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": small.len()}));
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "tag": tag,
    }))?;
    push_image(&c, base, REPO, tag, &config, descs).await
}

fn timed(cmd: &mut Command) -> anyhow::Result<(f64, f64)> {
    let report = tempfile::NamedTempFile::new()?;
    let t = Instant::now();
    let status = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(report.path())
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {cmd:?} (needs GNU time)"))?;
    let secs = t.elapsed().as_secs_f64();
    ensure!(status.success(), "{cmd:?} failed ({status})");
    let kib: f64 = std::fs::read_to_string(report.path())?.trim().parse()?;
    Ok((secs, kib / 1024.0))
}

/// GETs every layer in turn; returns MB/s.
async fn pull_layers(base: &str, layers: &[serde_json::Value]) -> anyhow::Result<f64> {
    let c = client();
    let t = Instant::now();
    let mut bytes = 0;
    for layer in layers {
        let digest = layer["digest"].as_str().context("layer digest")?;
        bytes += pull(&c, base, REPO, digest).await?.1;
    }
    Ok(bytes as f64 / MIB as f64 / t.elapsed().as_secs_f64())
}

fn sync() {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
}

fn size_of(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

pub async fn run(args: &Args, b: &BundleArgs, base_buf: &Bytes) -> anyhow::Result<()> {
    ensure!(
        b.sealer_cli.exists(),
        "{} not found: cargo build --release -p sealer",
        b.sealer_cli.display()
    );
    let mib = if args.quick { 256 } else { b.image_mib };
    let work = args.work.join("bundle");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let server = Server::start(Kind::Sealer, &args.sealer, &work)?;
    let shared = push_layers(&server.base, base_buf, mib).await?;
    push_version(&server.base, &shared, "1").await?;
    let host = server.base.trim_start_matches("http://").to_string();
    let store = server.root.clone();
    let out = work.join("out");
    eprintln!("image of {mib} MiB + 10 MiB in {}", store.display());
    let sealer = |root: &Path| {
        let mut c = Command::new(&b.sealer_cli);
        c.arg("--root").arg(root).arg("-q");
        c
    };

    let mut rounds: Vec<Figures> = Vec::new();
    for round in 0..args.rounds {
        let mut f = Figures::new();
        let order: [&str; 3] = if round % 2 == 0 {
            ["sealer", "tar", "skopeo"]
        } else {
            ["skopeo", "tar", "sealer"]
        };
        for who in order {
            let _ = std::fs::remove_dir_all(&out);
            std::fs::create_dir_all(&out)?;
            sync();
            let file = out.join("bundle.tar");
            let into = out.join("loaded");
            let (save, save_rss, load, load_rss) = match who {
                "sealer" => {
                    let (s, sr) = timed(
                        sealer(&store)
                            .args(["save", "-o"])
                            .arg(&file)
                            .arg(format!("{REPO}:1")),
                    )?;
                    sync();
                    let (l, lr) = timed(sealer(&into).args(["load", "-i"]).arg(&file))?;
                    (s, sr, l, lr)
                }
                "tar" => {
                    let (s, sr) = timed(
                        Command::new("tar")
                            .arg("-cf")
                            .arg(&file)
                            .arg("-C")
                            .arg(&store)
                            .arg("blobs"),
                    )?;
                    sync();
                    std::fs::create_dir_all(&into)?;
                    let (l, lr) = timed(
                        Command::new("tar")
                            .arg("-xf")
                            .arg(&file)
                            .arg("-C")
                            .arg(&into),
                    )?;
                    (s, sr, l, lr)
                }
                _ => {
                    let (s, sr) = timed(
                        Command::new("skopeo")
                            .args(["copy", "--quiet", "--src-tls-verify=false"])
                            .arg(format!("docker://{host}/{REPO}:1"))
                            .arg(format!("oci-archive:{}:big", file.display())),
                    )?;
                    sync();
                    let (l, lr) = timed(
                        Command::new("skopeo")
                            .args(["copy", "--quiet"])
                            .arg(format!("oci-archive:{}:big", file.display()))
                            .arg(format!("oci:{}:big", into.display())),
                    )?;
                    (s, sr, l, lr)
                }
            };
            let bytes = size_of(&file) as f64 / MIB as f64;
            eprintln!(
                "round {}: {who} save {save:.2} s, load {load:.2} s ({bytes:.0} MiB)",
                round + 1
            );
            let key = |what: &str| -> &'static str {
                Box::leak(format!("{who}_{what}").into_boxed_str())
            };
            f.insert(key("save_MBps"), bytes / save);
            f.insert(key("load_MBps"), bytes / load);
            f.insert(key("save_rss_mib"), save_rss);
            f.insert(key("load_rss_mib"), load_rss);
        }
        rounds.push(f);
    }

    // A new version changes the 10 MiB layer: the delta carries only it.
    push_version(&server.base, &shared, "2")
        .await
        .context("pushing version 2")?;
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let v1 = out.join("v1.tar");
    let delta = out.join("delta.tar");
    timed(
        sealer(&store)
            .args(["save", "-o"])
            .arg(&v1)
            .arg(format!("{REPO}:1")),
    )?;
    timed(
        sealer(&store)
            .args(["save", "--since"])
            .arg(&v1)
            .arg("-o")
            .arg(&delta)
            .arg(format!("{REPO}:2")),
    )?;
    let delta_mib = size_of(&delta) as f64 / MIB as f64;
    std::fs::remove_file(&delta)?;
    let v1_mib = size_of(&v1) as f64 / MIB as f64;

    // `serve --bundle v1.tar`: start-up, and pulling every layer from it against pulling
    // them from the store.
    let mut serve_rounds: Vec<Figures> = Vec::new();
    for round in 0..args.rounds {
        let mut f = Figures::new();
        let order = if round % 2 == 0 {
            ["bundle", "store"]
        } else {
            ["store", "bundle"]
        };
        for who in order {
            let (base, running) = if who == "bundle" {
                let (bundle_server, ready) = Server::serve_bundle(&args.sealer, &work, &v1)?;
                f.insert("bundle_ready_s", ready.as_secs_f64());
                if std::env::var("WAIT").is_ok() {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                }
                (bundle_server.base.clone(), Some(bundle_server))
            } else {
                (server.base.clone(), None)
            };
            let mbps = pull_layers(&base, &shared).await?;
            eprintln!("round {}: pull from the {who} {mbps:.0} MB/s", round + 1);
            f.insert(
                if who == "bundle" {
                    "bundle_pull_MBps"
                } else {
                    "store_pull_MBps"
                },
                mbps,
            );
            drop(running);
        }
        serve_rounds.push(f);
    }
    let _ = std::fs::remove_dir_all(&out);

    let m = |k: &str| median(rounds.iter().filter_map(|f| f.get(k).copied()).collect());
    println!(
        "| metric (median) | sealer | tar | skopeo oci-archive | sealer/tar | sealer/skopeo | target |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    for (what, target) in [
        ("save_MBps", "≥ 0.9× tar, ≥ 2× skopeo"),
        ("load_MBps", "≥ 0.9× tar, ≥ 2× skopeo"),
    ] {
        let (s, t, k) = (
            m(&format!("sealer_{what}")),
            m(&format!("tar_{what}")),
            m(&format!("skopeo_{what}")),
        );
        println!(
            "| {what} | {s:.0} | {t:.0} | {k:.0} | {:.2} | {:.2} | {target} |",
            s / t,
            s / k
        );
    }
    for what in ["save_rss_mib", "load_rss_mib"] {
        println!(
            "| {what} | {:.1} | {:.1} | {:.1} | | | ≤ 100 MiB |",
            m(&format!("sealer_{what}")),
            m(&format!("tar_{what}")),
            m(&format!("skopeo_{what}"))
        );
    }
    println!("| delta after one changed 10 MiB layer, MiB | {delta_mib:.2} | | | | | < 15 MiB |");
    let sm = |k: &str| {
        median(
            serve_rounds
                .iter()
                .filter_map(|f| f.get(k).copied())
                .collect(),
        )
    };
    let (from_bundle, from_store) = (sm("bundle_pull_MBps"), sm("store_pull_MBps"));
    println!();
    println!("| serve --bundle (median) | bundle | store | bundle/store | target |");
    println!("|---|---:|---:|---:|---|");
    println!(
        "| ready after start, s ({v1_mib:.0} MiB bundle) | {:.3} | | | < 2 s |",
        sm("bundle_ready_s")
    );
    println!(
        "| pull of every layer, MB/s | {from_bundle:.0} | {from_store:.0} | {:.2} | ≥ 0.9× |",
        from_bundle / from_store
    );
    drop(server);
    Ok(())
}
