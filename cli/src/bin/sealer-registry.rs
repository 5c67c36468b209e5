//! `sealer-registry`: the built-in OCI registry and pull-through mirror. Argument parsing
//! only: the registry is `sealer-registry` (the crate), the mirror `sealer-pull-proxy`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use sealer_pull_proxy::runtime_files::{self, Runtime};
use sealer_pull_proxy::{MirrorArgs, MirrorConfig, PullThrough};
use sealer_registry::config::{GcArgs, ServeArgs, Settings, StoreArgs, StoreLocation};
use sealer_registry::maintenance::check;
use sealer_registry::maintenance::gc::Collector;
use sealer_registry::services::mirror::Mirror;
use sealer_registry::storage::Maintenance;
use sealer_registry::storage::fs::FsStorage;
use sealer_registry::storage::s3::S3Storage;
use sealer_registry::{observability, server};

/// sealer's built-in OCI registry: an OCI distribution v1.1 server over one content store,
/// and a pull-through mirror for containerd, docker and podman.
#[derive(Debug, Parser)]
#[command(name = "sealer-registry", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the registry (no configuration needed: 127.0.0.1:5000 on the default store).
    Serve {
        #[command(flatten)]
        registry: Box<ServeArgs>,
        #[command(flatten)]
        mirror: MirrorArgs,
    },
    /// Collect garbage in a store: untagged manifests past --gc-untagged, layer links
    /// and blobs nothing uses. Run it with the registry stopped, or use --dry-run (or
    /// `serve --gc-interval`, which collects while serving).
    Gc {
        #[command(flatten)]
        store: StoreArgs,
        /// Report what would be removed and how many bytes; remove nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        gc: GcArgs,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every blob in a store and report the ones whose content no longer matches
    /// their digest (exit status 1), and links to missing blobs. Safe while the registry
    /// serves.
    Check {
        #[command(flatten)]
        store: StoreArgs,
        /// Move corrupt blobs to quarantine/ in the store so they are never served
        /// (clients can push them again).
        #[arg(long)]
        quarantine: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Write the catalog index of a store on object storage again from its repositories
    /// (after it was lost or damaged); the registries sharing the bucket may keep serving.
    IndexRebuild {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print (or write) the files that point a host's container runtime at this registry
    /// as a mirror.
    MirrorConfig {
        /// The runtime to configure.
        #[arg(long = "for", value_enum)]
        runtime: Runtime,
        /// This registry as the hosts reach it, e.g. http://10.0.0.1:5000; repeat it for
        /// several registry hosts, tried in order.
        #[arg(
            long = "registry",
            value_name = "URL",
            default_value = "http://127.0.0.1:5000"
        )]
        registries: Vec<url::Url>,
        /// A registry to mirror (repeatable). [default: docker.io]
        #[arg(long = "upstream", value_name = "HOST")]
        upstreams: Vec<String>,
        /// CA certificate the hosts use to trust an https registry: named in containerd's
        /// hosts.toml, copied to certs.d/<registry>/ca.crt for docker and podman.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// A file holding USER:PASSWORD for registries that need a login: containerd gets
        /// an Authorization header, docker and podman `auths` in ~/.docker/config.json.
        #[arg(long, value_name = "FILE")]
        login_file: Option<PathBuf>,
        /// The registries keep each upstream's images under its name as a path prefix
        /// (e.g. harbor.corp/docker.io/library/nginx): for a registry that is not sealer's.
        #[arg(long)]
        path_prefixed: bool,
        /// Write the files under DIR (e.g. /etc/containerd/certs.d, /etc/docker,
        /// /etc/containers) instead of printing them; replaced files are kept as
        /// `*.sealer-backup`, and an existing daemon.json keeps its other settings.
        #[arg(long, value_name = "DIR")]
        write: Option<PathBuf>,
    },
    /// Create a CA and a server certificate for the registry (sites with no public CA).
    /// An existing ca.crt/ca.key in DIR is kept and signs the new certificate, so hosts
    /// that trust it need nothing new.
    Cert {
        /// A DNS name the registry is reached by, e.g. sea.hub (repeatable).
        #[arg(long = "domain", value_name = "NAME")]
        domains: Vec<String>,
        /// An IP address the registry is reached by (repeatable).
        #[arg(long = "ip", value_name = "ADDR")]
        ips: Vec<std::net::IpAddr>,
        /// Where to write ca.crt, ca.key, tls.crt and tls.key.
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
        /// Days the server certificate is valid.
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with every cause, e.g. "cannot listen on 127.0.0.1:5000: Address
            // already in use"; no backtrace.
            eprintln!("sealer-registry: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { registry, mirror } => serve(&registry, &mirror),
        Command::MirrorConfig {
            runtime,
            registries,
            upstreams,
            ca,
            login_file,
            path_prefixed,
            write,
        } => {
            let request = runtime_files::Request {
                registries,
                upstreams: match upstreams.is_empty() {
                    true => vec!["docker.io".to_string()],
                    false => upstreams,
                },
                ca: ca.as_deref().map(runtime_files::Ca::read).transpose()?,
                login: login_file
                    .as_deref()
                    .map(sealer_pull_proxy::config::Credentials::read)
                    .transpose()?,
                path_prefixed,
                login_file: std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("/root"))
                    .join(".docker/config.json"),
            };
            print_runtime_files(runtime, &request, write.as_deref())
        }
        Command::Cert {
            domains,
            ips,
            out,
            days,
        } => cert(&out, &domains, &ips, days),
        Command::Gc {
            store,
            dry_run,
            gc,
            json,
        } => collect_garbage(&store, dry_run, gc, json),
        Command::Check {
            store,
            quarantine,
            json,
            quiet,
        } => check_store(&store, quarantine, json, quiet),
        Command::IndexRebuild { store } => rebuild_index(&store),
        Command::Completions { shell } => {
            let mut out = std::io::stdout();
            clap_complete::generate(shell, &mut Cli::command(), "sealer-registry", &mut out);
            Ok(())
        }
    }
}

fn serve(registry: &ServeArgs, mirror: &MirrorArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(registry)?;
    let mirror_config = MirrorConfig::resolve(settings.mirror.as_ref(), mirror)?
        .with_registry_limits(
            settings.options.max_manifest_bytes,
            settings.options.max_upload_bytes,
        );
    let _log = observability::init_logging(settings.log_format, &settings.log_level);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let opened = server::open_storage(&settings).await?;
            let mirror: Option<Arc<dyn Mirror>> = if mirror_config.is_empty() {
                None
            } else {
                let Some(store) = opened.store.clone() else {
                    anyhow::bail!(
                        "a pull-through mirror needs a store to fill: give --root as well as --bundle"
                    );
                };
                let hosts: Vec<_> = mirror_config.upstreams.iter().map(|u| u.host.clone()).collect();
                tracing::info!(upstreams = ?hosts, offline = mirror_config.offline, "mirroring");
                Some(Arc::new(PullThrough::new(mirror_config, store)?))
            };
            server::serve(settings, opened, mirror).await
        })
}

fn print_runtime_files(
    runtime: Runtime,
    request: &runtime_files::Request,
    write: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let files = runtime_files::generate(runtime, request)?;
    match write {
        Some(dir) => {
            for path in runtime_files::write(dir, &files)? {
                println!("wrote {}", path.display());
            }
        }
        None => {
            for f in files {
                println!("# {}\n{}", f.path.display(), f.content);
            }
        }
    }
    Ok(())
}

fn cert(
    out: &std::path::Path,
    domains: &[String],
    ips: &[std::net::IpAddr],
    days: u32,
) -> anyhow::Result<()> {
    let issued = sealer_registry::tls::issue(out, domains, ips, days)?;
    let verb = if issued.new_ca { "created" } else { "kept" };
    println!("{verb} {}", issued.ca_cert.display());
    let (cert, key) = (issued.cert.display(), issued.key.display());
    println!("wrote {cert} and {key}");
    println!("serve with: sealer-registry serve --tls-cert {cert} --tls-key {key}");
    Ok(())
}

/// The store `args` name, opened shared: `gc --dry-run` and `check` may look at a store
/// the registry is serving.
async fn open_shared(args: &StoreArgs) -> anyhow::Result<Arc<dyn Maintenance>> {
    match args.location()? {
        StoreLocation::Folder(root) => {
            let store = FsStorage::open_shared(&root)
                .with_context(|| format!("cannot open the store at {}", root.display()))?;
            Ok(Arc::new(store))
        }
        StoreLocation::Bucket(s3) => Ok(Arc::new(S3Storage::open(s3).await?)),
    }
}

fn rebuild_index(args: &StoreArgs) -> anyhow::Result<()> {
    let StoreLocation::Bucket(s3) = args.location()? else {
        anyhow::bail!("a store in a folder has no index to rebuild: give --storage s3://…");
    };
    let count = tokio::runtime::Runtime::new()?.block_on(async {
        let bucket = S3Storage::open(s3).await?;
        anyhow::Ok(bucket.rebuild_index().await?)
    })?;
    println!("the catalog index lists {count} repositories");
    Ok(())
}

fn collect_garbage(store: &StoreArgs, dry_run: bool, gc: GcArgs, json: bool) -> anyhow::Result<()> {
    let policy = gc.policy(&Default::default());
    let report = tokio::runtime::Runtime::new()?.block_on(async {
        let store = open_shared(store).await?;
        let collector = Collector::new(store, Default::default(), policy);
        anyhow::Ok(collector.run(dry_run).await?)
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    println!(
        "{verb} {} untagged manifest(s), {} layer link(s), {} blob(s): {} bytes ({} repositories, {:.2} s)",
        report.manifests,
        report.layer_links,
        report.blobs,
        report.bytes,
        report.repositories,
        report.seconds
    );
    Ok(())
}

fn check_store(store: &StoreArgs, quarantine: bool, json: bool, quiet: bool) -> anyhow::Result<()> {
    let bar = match quiet {
        true => indicatif::ProgressBar::hidden(),
        false => {
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr())
        }
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "checking [{bar:30}] {binary_bytes:>10}/{binary_total_bytes:<10} {binary_bytes_per_sec:>12}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    let shown = bar.clone();
    let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
    let report = tokio::runtime::Runtime::new()?.block_on(async {
        let store = open_shared(store).await?;
        let progress = move |done, total| {
            shown.set_length(total);
            shown.set_position(done);
        };
        anyhow::Ok(check::check(store, quarantine, parallel, progress).await?)
    })?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_check(&report);
    }
    if !report.is_clean() {
        anyhow::bail!("the store has damaged content (see above)");
    }
    Ok(())
}

fn print_check(report: &check::CheckReport) {
    for c in &report.corrupt {
        let moved = c
            .quarantined_to
            .as_deref()
            .map(|p| format!("; moved to {p}"))
            .unwrap_or_default();
        println!(
            "corrupt {} (content hashes to {}){moved}",
            c.digest, c.actual
        );
    }
    for m in &report.missing {
        println!("missing {m}");
    }
    println!(
        "checked {} blob(s), {} bytes in {:.2} s: {} corrupt, {} missing",
        report.blobs,
        report.bytes,
        report.seconds,
        report.corrupt.len(),
        report.missing.len()
    );
}
