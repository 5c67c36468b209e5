//! `regbench run`: `sealer run` of a CloudImage onto test hosts (an sshd per loopback
//! address, each in its own mount namespace, as the installer's tests use), against
//! copying the image's layer files with `scp` to one host after another; then a second
//! `sealer run` with nothing changed. Rounds alternate which goes first.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use sealer_e2e::{TestHost, test_key};

use crate::{Args, median};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Size of the image's files, MiB (half incompressible, half text).
    #[arg(long, default_value_t = 2048)]
    pub size_mib: usize,
    /// Test hosts: one master, the rest nodes.
    #[arg(long, default_value_t = 5)]
    pub hosts: usize,
    /// The sealer binary (sealer-registry beside it is sent too).
    #[arg(long, default_value = "target/release/sealer")]
    pub sealer_cli: PathBuf,
}

fn sealer(bin: &Path, store: &Path, home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.arg("--root").arg(store).args(args).env("HOME", home);
    c
}

fn timed(cmd: &mut Command) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let elapsed = t.elapsed();
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(elapsed)
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

/// Copies `files` to each host with scp, one host after another, with ssh's own cipher
/// or with `cipher` (the one `sealer run` prefers, for a like-for-like figure).
fn scp_all(
    hosts: &[TestHost],
    files: &[PathBuf],
    cipher: Option<&str>,
) -> anyhow::Result<Duration> {
    for h in hosts {
        h.ssh("mkdir -p /var/lib/sealer/scp");
    }
    let t = Instant::now();
    for h in hosts {
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
        .args(cipher.map(|c| ["-c", c]).into_iter().flatten())
        .arg("-i")
        .arg(test_key())
        .arg("-P")
        .arg(h.port.to_string())
        .args(files)
        .arg(format!("root@{}:/var/lib/sealer/scp/", h.ip));
        timed(&mut c)?;
    }
    let elapsed = t.elapsed();
    for h in hosts {
        h.ssh("rm -rf /var/lib/sealer/scp");
    }
    Ok(elapsed)
}

pub async fn run(args: &Args, r: &RunArgs, base: &Bytes) -> anyhow::Result<()> {
    ensure!(r.hosts >= 1, "--hosts must be at least 1");
    let bin = std::fs::canonicalize(&r.sealer_cli)
        .with_context(|| format!("{} (cargo build --release)", r.sealer_cli.display()))?;
    std::fs::create_dir_all(&args.work)?;
    let work = tempfile::tempdir_in(&args.work)?;
    let (store, home, ctx) = (
        work.path().join("store"),
        work.path().join("home"),
        work.path().join("ctx"),
    );
    let mib = if args.quick { 64 } else { r.size_mib };
    crate::build::make_context(&ctx, mib, 0, base)?;
    let image = "bench.example/run:1";
    let built = timed(sealer(&bin, &store, &home, &["build", "-q", "-t", image]).arg(&ctx))?;
    std::fs::remove_dir_all(&ctx)?;
    let files = layer_files(&store, &bin, &home, image)?;
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    println!(
        "image: {mib} MiB of files, {} layer file(s), {:.0} MiB compressed (built in {:.1} s); {} host(s)",
        files.len(),
        bytes as f64 / 1048576.0,
        built.as_secs_f64(),
        r.hosts
    );

    let disk = work.path().join("hosts");
    let hosts: Vec<TestHost> = (0..r.hosts)
        .map(|_| TestHost::start_on_disk(&disk))
        .collect();
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
    let clusterfile = work.path().join("Clusterfile");
    std::fs::write(&clusterfile, cf)?;
    let cf = clusterfile.to_str().unwrap();

    let (mut ours, mut again, mut reference, mut reference_gcm) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let mut sealer_round = || -> anyhow::Result<()> {
            let t = timed(&mut sealer(&bin, &store, &home, &["run", "-q", "-f", cf]))?;
            let t2 = timed(&mut sealer(&bin, &store, &home, &["run", "-q", "-f", cf]))?;
            timed(&mut sealer(
                &bin,
                &store,
                &home,
                &["delete", "-q", "--all", "--cluster", "bench"],
            ))?;
            println!(
                "  round {round}: sealer run {:.2} s, again {:.2} s",
                t.as_secs_f64(),
                t2.as_secs_f64()
            );
            ours.push(t.as_secs_f64());
            again.push(t2.as_secs_f64());
            Ok(())
        };
        let mut scp_round = || -> anyhow::Result<()> {
            let t = scp_all(&hosts, &files, None)?;
            let gcm = scp_all(&hosts, &files, Some("aes128-gcm@openssh.com"))?;
            println!(
                "  round {round}: scp one host after another {:.2} s (with AES-GCM {:.2} s)",
                t.as_secs_f64(),
                gcm.as_secs_f64()
            );
            reference.push(t.as_secs_f64());
            reference_gcm.push(gcm.as_secs_f64());
            Ok(())
        };
        if round % 2 == 0 {
            sealer_round()?;
            scp_round()?;
        } else {
            scp_round()?;
            sealer_round()?;
        }
    }
    let (o, a, s, g) = (
        median(ours),
        median(again),
        median(reference),
        median(reference_gcm),
    );
    println!("\nmedians of {} rounds:", args.rounds);
    println!(
        "  sealer run onto {} hosts: {o:.2} s; scp one after another: {s:.2} s; ratio {:.2}x (target <= 0.5x)",
        r.hosts,
        o / s
    );
    println!(
        "  scp with sealer's cipher (AES-GCM): {g:.2} s; ratio {:.2}x",
        o / g
    );
    println!("  sealer run again, nothing changed: {a:.2} s (target < 5 s)");
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_vec_pretty(&serde_json::json!({
                "size_mib": mib, "hosts": r.hosts, "compressed_bytes": bytes,
                "sealer_run_s": o, "rerun_s": a, "scp_sequential_s": s,
                "scp_sequential_aes_gcm_s": g,
            }))?,
        )?;
    }
    Ok(())
}
