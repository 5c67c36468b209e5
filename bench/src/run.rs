//! `regbench run`: delivering a CloudImage to 1, 4, 8 and 20 test hosts, each in its own
//! network namespace with its link shaped by `tc` (and this machine's link too, at the
//! same rate), at 100 Mbit/s and 1 Gbit/s. In the same run, against copying the image's
//! layer files with `scp` to one host after another, and with one `scp` per host at once
//! from this machine. `sealer` is measured relaying as a chain and as a tree.
//!
//! Each round starts from clean hosts that have been given `sealer` by an untimed run of
//! a small seed image (what a fleet that runs sealer already looks like), then times
//! `sealer apply` of the benchmark image (a new release onto the fleet) and an apply
//! again with nothing changed. Rounds alternate the order of the methods.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use sealer_e2e::{Rate, TestHost, network, test_key};

use crate::{Args, median};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Size of the image's files, MiB (half incompressible, half text).
    #[arg(long, default_value_t = 128)]
    pub size_mib: usize,
    /// Host counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8,20")]
    pub hosts: Vec<usize>,
    /// Link rates in Mbit/s, comma-separated (every host's and this machine's).
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    pub mbits: Vec<u64>,
    /// The sealer binary (sealer-registry beside it is sent too).
    #[arg(long, default_value = "target/release/sealer")]
    pub sealer_cli: PathBuf,
}

fn sealer(bin: &Path, store: &Path, home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.arg("--root").arg(store).args(args).env("HOME", home);
    c
}

fn timed(cmd: &mut Command) -> anyhow::Result<(Duration, String)> {
    let t = Instant::now();
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let elapsed = t.elapsed();
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((elapsed, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// The files of the image's layers in the store.
fn layer_files(store: &Path, bin: &Path, home: &Path, image: &str) -> anyhow::Result<Vec<PathBuf>> {
    let out = sealer(bin, store, home, &["inspect", image]).output()?;
    ensure!(out.status.success(), "sealer inspect failed");
    let info: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let layers = info["platforms"][0]["layers"]
        .as_array()
        .context("no layers")?
        .iter()
        .map(|l| {
            let d = l["digest"].as_str().unwrap_or_default();
            let hex = d.trim_start_matches("sha256:");
            store.join("blobs/sha256").join(&hex[..2]).join(hex)
        })
        .collect::<Vec<_>>();
    for l in &layers {
        ensure!(l.is_file(), "{} is not in the store", l.display());
    }
    Ok(layers)
}

/// `scp` of `files` to `host`, with the cipher `sealer run` prefers (like for like).
fn scp(host: &TestHost, files: &[PathBuf]) -> Command {
    let mut c = Command::new("scp");
    // -O: the scp protocol (the test hosts' sshd has no sftp subsystem).
    c.args([
        "-q",
        "-O",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
    ])
    .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
    .args(["-c", "aes128-gcm@openssh.com", "-i"])
    .arg(test_key())
    .arg("-P")
    .arg(host.port.to_string())
    .args(files)
    .arg(format!("root@{}:/var/lib/sealer/scp/", host.ip));
    c
}

/// Copies `files` to every host with scp: one host after another, or all at once.
fn scp_all(hosts: &[TestHost], files: &[PathBuf], parallel: bool) -> anyhow::Result<f64> {
    for h in hosts {
        h.ssh("rm -rf /var/lib/sealer/scp; mkdir -p /var/lib/sealer/scp");
    }
    let t = Instant::now();
    if parallel {
        let children: Vec<_> = hosts
            .iter()
            .map(|h| scp(h, files).spawn())
            .collect::<Result<_, _>>()?;
        for mut c in children {
            ensure!(c.wait()?.success(), "scp failed");
        }
    } else {
        for h in hosts {
            timed(&mut scp(h, files))?;
        }
    }
    let elapsed = t.elapsed().as_secs_f64();
    for h in hosts {
        h.ssh("rm -rf /var/lib/sealer/scp");
    }
    Ok(elapsed)
}

/// A Clusterfile for cluster `bench` running `image` on `hosts` (the first the master).
fn clusterfile(path: &Path, image: &str, hosts: &[TestHost]) -> anyhow::Result<String> {
    let mut cf = format!(
        "apiVersion: sealer.io/v2\nkind: Cluster\nmetadata: {{name: bench}}\nspec:\n  image: {image}\n  \
         ssh: {{pk: {}}}\n  hosts:\n",
        test_key().display()
    );
    for (i, h) in hosts.iter().enumerate() {
        let role = if i == 0 { "master" } else { "node" };
        cf.push_str(&format!(
            "  - {{ips: [{}], roles: [{role}], ssh: {{port: {}}}}}\n",
            h.ip, h.port
        ));
    }
    std::fs::write(path, cf)?;
    Ok(path.to_string_lossy().into_owned())
}

/// What one `sealer apply` of the image measured.
struct Delivery {
    seconds: f64,
    bytes_out: u64,
}

/// Medians of one (rate, host count) cell.
#[derive(serde::Serialize)]
struct Cell {
    mbit: u64,
    hosts: usize,
    chain_s: f64,
    tree_s: f64,
    rerun_s: f64,
    scp_sequential_s: f64,
    scp_parallel_s: f64,
    bytes_out_per_image: f64,
}

struct Bench<'a> {
    bin: &'a Path,
    store: PathBuf,
    home: PathBuf,
    work: PathBuf,
    image: &'a str,
    seed: &'a str,
}

impl Bench<'_> {
    fn sealer(&self, args: &[&str]) -> Command {
        sealer(self.bin, &self.store, &self.home, args)
    }

    /// Clean hosts with sealer on them (the seed image, untimed), then the image
    /// applied with `relay` (timed), and (for the chain) applied again.
    fn deliver(&self, hosts: &[TestHost], relay: &str) -> anyhow::Result<(Delivery, f64)> {
        let _ = timed(&mut self.sealer(&["delete", "-q", "--all", "--cluster", "bench"]));
        let seed = clusterfile(&self.work.join("seed.yaml"), self.seed, hosts)?;
        timed(&mut self.sealer(&["run", "-q", "-f", &seed]))?;
        let cf = clusterfile(&self.work.join("bench.yaml"), self.image, hosts)?;
        let apply = ["--relay", relay, "apply", "--json", "-f", &cf];
        let (t, out) = timed(&mut self.sealer(&apply))?;
        let summary: serde_json::Value =
            serde_json::from_str(out.lines().last().context("no summary")?)?;
        let again = if relay == "chain" {
            timed(&mut self.sealer(&apply))?.0.as_secs_f64()
        } else {
            0.0
        };
        Ok((
            Delivery {
                seconds: t.as_secs_f64(),
                bytes_out: summary["bytes_from_control"].as_u64().unwrap_or(0),
            },
            again,
        ))
    }
}

pub async fn run(args: &Args, r: &RunArgs, base: &Bytes) -> anyhow::Result<()> {
    ensure!(
        !r.hosts.is_empty() && !r.mbits.is_empty(),
        "no hosts or rates"
    );
    let bin = std::fs::canonicalize(&r.sealer_cli)
        .with_context(|| format!("{} (cargo build --release)", r.sealer_cli.display()))?;
    std::fs::create_dir_all(&args.work)?;
    let work = tempfile::tempdir_in(&args.work)?;
    let b = Bench {
        bin: &bin,
        store: work.path().join("store"),
        home: work.path().join("home"),
        work: work.path().to_path_buf(),
        image: "bench.example/run:1",
        seed: "bench.example/seed:1",
    };
    let mib = if args.quick { 16 } else { r.size_mib };
    for name in [b.image, b.seed] {
        let ctx = work.path().join("ctx");
        if name == b.seed {
            // One small file: sharing no layer with the image.
            std::fs::create_dir_all(&ctx)?;
            std::fs::write(ctx.join("seed.txt"), "a fleet that runs sealer\n")?;
            std::fs::write(
                ctx.join("Kubefile"),
                "FROM scratch\nCOPY seed.txt seed.txt\n",
            )?;
        } else {
            crate::build::make_context(&ctx, mib, 0, base)?;
        }
        timed(b.sealer(&["build", "-q", "-t", name]).arg(&ctx))?;
        std::fs::remove_dir_all(&ctx)?;
    }
    let files = layer_files(&b.store, &bin, &b.home, b.image)?;
    let image_bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let most = *r.hosts.iter().max().unwrap();
    let disk = work.path().join("hosts");
    let hosts: Vec<TestHost> = (0..most).map(|_| TestHost::start_on_disk(&disk)).collect();
    println!(
        "image: {mib} MiB of files, {} layer file(s), {:.1} MiB compressed; up to {most} hosts",
        files.len(),
        image_bytes as f64 / 1048576.0,
    );

    let mut cells = Vec::new();
    for &mbit in &r.mbits {
        let rate = Rate(mbit * 1_000_000);
        network().shape_control(Some(rate));
        for h in &hosts {
            h.net.shape(Some(rate));
        }
        for &n in &r.hosts {
            cells.push(cell(
                &b,
                &hosts[..n],
                &files,
                mbit,
                image_bytes,
                args.rounds,
            )?);
        }
    }
    network().shape_control(None);

    println!(
        "\nmedians of {} rounds ({} MiB compressed image):",
        args.rounds,
        image_bytes >> 20
    );
    println!(
        "| link | hosts | sealer (chain) | vs 1 host | sealer (tree:2) | scp one after another | scp all at once | bytes out / image | again, nothing changed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for c in &cells {
        let one = cells
            .iter()
            .find(|o| o.mbit == c.mbit && o.hosts == 1)
            .map_or(f64::NAN, |o| o.chain_s);
        println!(
            "| {} Mbit/s | {} | {:.1} s | {:.2}× | {:.1} s | {:.1} s ({:.1}×) | {:.1} s ({:.1}×) | {:.2} | {:.2} s |",
            c.mbit,
            c.hosts,
            c.chain_s,
            c.chain_s / one,
            c.tree_s,
            c.scp_sequential_s,
            c.scp_sequential_s / c.chain_s,
            c.scp_parallel_s,
            c.scp_parallel_s / c.chain_s,
            c.bytes_out_per_image,
            c.rerun_s
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_vec_pretty(&serde_json::json!({
                "size_mib": mib, "compressed_bytes": image_bytes, "cells": cells,
            }))?,
        )?;
    }
    Ok(())
}

/// One (rate, host count) cell: `rounds` rounds of the four methods, alternating.
fn cell(
    b: &Bench,
    hosts: &[TestHost],
    files: &[PathBuf],
    mbit: u64,
    image_bytes: u64,
    rounds: usize,
) -> anyhow::Result<Cell> {
    let (mut chain, mut tree, mut again, mut seq, mut par, mut out) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        let mut ours = || -> anyhow::Result<()> {
            let (d, a) = b.deliver(hosts, "chain")?;
            chain.push(d.seconds);
            again.push(a);
            out.push(d.bytes_out as f64 / image_bytes as f64);
            if hosts.len() > 1 {
                tree.push(b.deliver(hosts, "tree")?.0.seconds);
            } else {
                tree.push(d.seconds);
            }
            Ok(())
        };
        let mut theirs = || -> anyhow::Result<()> {
            seq.push(scp_all(hosts, files, false)?);
            par.push(if hosts.len() > 1 {
                scp_all(hosts, files, true)?
            } else {
                *seq.last().unwrap()
            });
            Ok(())
        };
        if round % 2 == 0 {
            ours()?;
            theirs()?;
        } else {
            theirs()?;
            ours()?;
        }
        println!(
            "  {mbit} Mbit/s, {} host(s), round {round}: chain {:.1} s, tree {:.1} s, again {:.2} s, scp sequential {:.1} s, scp parallel {:.1} s, bytes out {:.2}× the image",
            hosts.len(),
            chain[round],
            tree[round],
            again[round],
            seq[round],
            par[round],
            out[round]
        );
    }
    Ok(Cell {
        mbit,
        hosts: hosts.len(),
        chain_s: median(chain),
        tree_s: median(tree),
        rerun_s: median(again),
        scp_sequential_s: median(seq),
        scp_parallel_s: median(par),
        bytes_out_per_image: median(out),
    })
}
