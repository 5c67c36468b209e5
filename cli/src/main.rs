//! `sealer`: argument parsing and progress output only; the work lives in the library
//! crates.

mod progress;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, CommandFactory, Parser, Subcommand};
use sealer_builder::build::{BuildOptions, RunLimits, build};
use sealer_builder::bundle;
use sealer_builder::discover;
use sealer_builder::inspect;
use sealer_builder::layer::Compression;
use sealer_builder::reference::{ImageName, Platform};
use sealer_builder::remote::{self, Registries, RemoteOptions};
use sealer_builder::store::Store;
use sealer_builder::transfer::{PullPolicy, Transfer};
use sealer_client::credentials::Credentials;

/// Build, share and run whole clusters as OCI artifacts.
#[derive(Debug, Parser)]
#[command(name = "sealer", version, about)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// The local image store (the same store `sealer-registry serve` serves).
    /// [default: /var/lib/sealer/registry for root, else $XDG_DATA_HOME/sealer/registry]
    #[arg(long, env = "SEALER_ROOT", value_name = "DIR", global = true)]
    root: Option<PathBuf>,
    /// Fetch HOST's images from URL instead (repeatable), e.g. docker.io=http://127.0.0.1:5001.
    #[arg(long = "upstream", value_name = "HOST=URL", global = true)]
    upstreams: Vec<String>,
    /// Speak plain HTTP to this registry host (repeatable; loopback hosts always are).
    #[arg(long = "insecure-registry", value_name = "HOST", global = true)]
    insecure: Vec<String>,
    /// The docker config.json holding logins. [default: $DOCKER_CONFIG/config.json or ~/.docker/config.json]
    #[arg(long, value_name = "FILE", global = true)]
    auth_file: Option<PathBuf>,
    /// Print no progress.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Blobs transferred at once.
    #[arg(long, default_value_t = 4, global = true)]
    jobs: usize,
    /// Hosts worked on at once (run, apply, scale-up, delete).
    #[arg(long, default_value_t = 16, global = true, value_name = "N")]
    parallel_hosts: usize,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build a CloudImage from a Kubefile.
    Build(BuildArgs),
    /// List the images in the local store, or work with container-image discovery.
    Images {
        #[command(subcommand)]
        command: Option<ImagesCommand>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a stored image (a CloudImage: apps, launch, env, labels, container images) as JSON.
    Inspect { image: String },
    /// Give a stored image another name.
    Tag { source: String, target: String },
    /// Remove images from the store, and the blobs nothing references any more.
    Rmi {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Fetch an image (the whole graph) from a registry into the store.
    Pull {
        image: String,
        /// Only these platforms' manifests and layers (indexes are kept as they are).
        #[arg(long)]
        platform: Option<String>,
    },
    /// Send a stored image (the whole graph) to a registry; blobs it has are skipped.
    Push {
        image: String,
        /// Push under this name instead.
        target: Option<String>,
    },
    /// Write stored images to one file: an OCI image layout in a tar (zstd with --compress
    /// or a .zst name), each blob once.
    Save {
        /// The file to write.
        #[arg(long, short)]
        output: PathBuf,
        /// Only these platforms' manifests and layers (indexes are kept as they are).
        #[arg(long)]
        platform: Option<String>,
        /// Compress the tar with zstd (also when the name ends in .zst).
        #[arg(long)]
        compress: bool,
        /// A delta: leave out the blobs the other side has. OLD is an older bundle, a
        /// have-list (`sealer store have` on the other side), or an image in the store.
        #[arg(long, value_name = "OLD")]
        since: Option<String>,
        /// Print what would be written (images, blobs and bytes new and left out); write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Write numbered parts of at most SIZE (e.g. 4G) and a NAME.sha256 checksum file.
        #[arg(long, value_name = "SIZE", value_parser = bundle::parts::parse_size)]
        split_size: Option<u64>,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Questions about the local store.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Load images from a file written by `sealer save` (or skopeo's oci-archive:).
    Load {
        /// The file to read; for a split bundle, every part (in any order), with its
        /// NAME.sha256 next to them.
        #[arg(long, short, num_args = 1.., required = true)]
        input: Vec<PathBuf>,
        /// Let the bundle's images use blobs it leaves out from anywhere in this store,
        /// not only from their own repository. Only for bundles you made yourself (a
        /// delta of `sealer run`): a bundle's index can name any digest.
        #[arg(long)]
        trust_store_blobs: bool,
    },
    /// Log in to a registry (saved in the docker config.json).
    Login {
        registry: String,
        #[arg(long, short)]
        username: String,
        #[arg(long, short, conflicts_with = "password_stdin")]
        password: Option<String>,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Forget a registry login.
    Logout { registry: String },
    /// Put a CloudImage on hosts: files laid out, the registry started with its container
    /// images, every host's runtime pulling through it, the launch commands run.
    /// Safe to run again: each step continues where it stopped.
    Run(RunArgs),
    /// Show what it takes to go from the cluster as last applied to the Clusterfile
    /// (hosts added, removed, kept; the steps), then do it.
    Apply {
        /// The Clusterfile.
        #[arg(long, short = 'f', value_name = "FILE")]
        clusterfile: PathBuf,
        /// Show the plan only.
        #[arg(long)]
        dry_run: bool,
    },
    /// Add hosts to a cluster run from this machine.
    ScaleUp {
        /// The cluster's name (metadata.name). [default: default]
        #[arg(long, value_name = "NAME")]
        cluster: Option<String>,
        /// Masters to add, comma-separated.
        #[arg(long, short, value_delimiter = ',', value_name = "IP,...")]
        masters: Vec<std::net::IpAddr>,
        /// Nodes to add, comma-separated.
        #[arg(long, short, value_delimiter = ',', value_name = "IP,...")]
        nodes: Vec<std::net::IpAddr>,
        /// How to log in to the new hosts. [default: the cluster's]
        #[command(flatten)]
        ssh: SshFlags,
    },
    /// Take hosts (-m/-n) or the whole cluster (--all) off: the registry stopped, runtime
    /// configuration restored, sealer's files removed.
    Delete {
        /// The whole cluster.
        #[arg(long, short, conflicts_with_all = ["masters", "nodes"])]
        all: bool,
        /// Masters to remove, comma-separated.
        #[arg(long, short, value_delimiter = ',', value_name = "IP,...")]
        masters: Vec<std::net::IpAddr>,
        /// Nodes to remove, comma-separated.
        #[arg(long, short, value_delimiter = ',', value_name = "IP,...")]
        nodes: Vec<std::net::IpAddr>,
        /// The Clusterfile (with --all); else the cluster's state from `sealer run`.
        #[arg(long, short = 'f', value_name = "FILE")]
        clusterfile: Option<PathBuf>,
        /// The cluster's name (metadata.name). [default: default]
        #[arg(long, value_name = "NAME")]
        cluster: Option<String>,
    },
    /// Lay out image layers (BLOB=MEDIATYPE, in order) in a new folder; `sealer run`
    /// uses it on hosts.
    #[command(hide = true)]
    UnpackLayers {
        dir: PathBuf,
        /// Config documents (JSON) to apply to the files after the layers.
        #[arg(long, value_name = "FILE")]
        configs: Option<PathBuf>,
        #[arg(required = true)]
        layers: Vec<String>,
    },
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
struct BuildArgs {
    /// The image name, e.g. example.com/shop:1.0.
    #[arg(long, short)]
    tag: String,
    /// The Kubefile. [default: CONTEXT/Kubefile]
    #[arg(long, short)]
    file: Option<PathBuf>,
    /// NAME=VALUE for an ARG (repeatable).
    #[arg(long = "build-arg", value_name = "NAME=VALUE")]
    build_args: Vec<String>,
    /// Platforms to build, comma-separated (default: this machine's).
    #[arg(long)]
    platform: Option<String>,
    /// Rebuild every layer.
    #[arg(long)]
    no_cache: bool,
    /// Layer compression.
    #[arg(long, value_enum, default_value = "zstd")]
    compression: CompressionArg,
    /// Keep files' times and owners in layers (not reproducible).
    #[arg(long)]
    keep_metadata: bool,
    /// When to ask registries for container images and the base image.
    #[arg(long, default_value = "missing")]
    pull: PullPolicy,
    /// A file listing more container images, one per line (repeatable).
    #[arg(long = "image-list", value_name = "FILE")]
    image_lists: Vec<PathBuf>,
    /// Leave out this image (repeatable).
    #[arg(long = "ignore-image", value_name = "IMAGE")]
    ignore_images: Vec<String>,
    /// KEY=VALUE label on the image (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// List the container images the build would carry, with where each comes from;
    /// run nothing, download nothing, write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Largest file an APP URL may download, e.g. 512MiB. [default: 4GiB]
    #[arg(long, value_name = "SIZE", value_parser = bundle::parts::parse_size)]
    max_download_size: Option<u64>,
    /// A RUN still running after this long is killed and fails the build. [default: 1h]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    run_timeout: Option<std::time::Duration>,
    /// Run each RUN in namespaces of its own: no network, its own processes, the store
    /// read-only, registry logins hidden (needs util-linux's unshare, as root).
    #[arg(long)]
    isolate: bool,
    /// Most bytes one ADD archive may unpack to, e.g. 100GiB. [default: 64GiB]
    #[arg(long, value_name = "SIZE", value_parser = bundle::parts::parse_size)]
    max_add_size: Option<u64>,
    /// An APP download that receives nothing for this long fails, e.g. 30s. [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    download_timeout: Option<std::time::Duration>,
    /// With --dry-run: print JSON.
    #[arg(long)]
    json: bool,
    /// The build context.
    #[arg(default_value = ".")]
    context: PathBuf,
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Print the digest of every blob in the store, one per line: the have-list for
    /// `sealer save --since` on the other side of an air gap.
    Have,
    /// Add blobs from a content-addressed folder (files named by their sha256 hex, as
    /// `sealer run` leaves them on a host) by hard link, without copying or hashing
    /// them: only for folders whose files were verified on arrival. The folder must be
    /// on the store's filesystem.
    Import {
        /// The folder, e.g. /var/lib/sealer/cluster/blobs/sha256.
        dir: PathBuf,
        /// Only these blobs (sha256:HEX); all the folder holds when none is given.
        digests: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CompressionArg {
    Zstd,
    Gzip,
}

#[derive(Debug, Subcommand)]
enum ImagesCommand {
    /// List every container image the files under DIR need (manifests, charts,
    /// imageList files), with the file and line each comes from.
    Discover {
        /// The folder to scan, e.g. a build context.
        dir: PathBuf,
        /// Leave out this image (repeatable; any form: `nginx` is docker.io/library/nginx:latest).
        #[arg(long = "ignore-image", value_name = "IMAGE")]
        ignore: Vec<String>,
        /// Print JSON: {"images": [{"image", "places": [{"file", "line"}]}], "problems": [...]}.
        #[arg(long)]
        json: bool,
    },
}

/// How to log in to hosts given on the command line.
#[derive(Debug, Clone, Args)]
struct SshFlags {
    /// SSH user. [default: root]
    #[arg(long, short)]
    user: Option<String>,
    /// SSH password. Other users see it in the process list: prefer --passwd-stdin or
    /// the SEALER_SSH_PASSWORD environment variable.
    #[arg(long, short = 'p')]
    passwd: Option<String>,
    /// Read the SSH password from standard input.
    #[arg(long, conflicts_with = "passwd")]
    passwd_stdin: bool,
    /// SSH private key file.
    #[arg(long)]
    pk: Option<PathBuf>,
    /// SSH port. [default: 22]
    #[arg(long)]
    port: Option<u16>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The CloudImage (in the local store); taken from the Clusterfile with -f.
    image: Option<String>,
    /// The Clusterfile.
    #[arg(long, short = 'f', value_name = "FILE", conflicts_with_all = ["masters", "nodes"])]
    clusterfile: Option<PathBuf>,
    /// Master hosts, comma-separated (the short form without a Clusterfile).
    #[arg(long, short, value_delimiter = ',', value_name = "IP,...")]
    masters: Vec<std::net::IpAddr>,
    /// Node hosts, comma-separated.
    #[arg(long, short, value_delimiter = ',', value_name = "IP,...")]
    nodes: Vec<std::net::IpAddr>,
    #[command(flatten)]
    ssh: SshFlags,
    /// Environment for the launch commands, KEY=VALUE (repeatable).
    #[arg(long, short)]
    env: Vec<String>,
    /// Load this bundle (`sealer save`; repeat for split parts) into the local store
    /// first; its image is run when no image is named.
    #[arg(long = "bundle", value_name = "FILE")]
    bundle: Vec<PathBuf>,
}

fn print_report(
    cluster: &sealer_installer::clusterfile::Cluster,
    r: &sealer_installer::run::Report,
) {
    eprintln!(
        "{} on {} host(s): {} blob(s) sent ({}), {} loaded into the registry{}",
        cluster.image,
        r.hosts,
        r.blobs_sent,
        human_size(r.bytes_sent),
        r.registry_blobs_loaded,
        if r.launched { ", launched" } else { "" }
    );
}

/// What the installer needs from this machine: the store, this binary and
/// `sealer-registry` beside it (sent to hosts), and `~/.sealer`.
fn installer_env(store: Store, jobs: usize) -> anyhow::Result<sealer_installer::run::Environment> {
    let sealer_bin = std::env::current_exe()?;
    let registry_bin = sealer_bin.with_file_name("sealer-registry");
    if !registry_bin.is_file() {
        bail!(
            "{} is missing: sealer run sends it to the registry hosts",
            registry_bin.display()
        );
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    Ok(sealer_installer::run::Environment {
        store,
        sealer_bin,
        registry_bin,
        state_dir: home.join(".sealer"),
        ssh: sealer_installer::hosts::ssh::default_options(&home),
        jobs: jobs.max(1),
    })
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Every cause on one line, as `sealer-registry` prints them; no backtrace.
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn image(s: &str) -> anyhow::Result<ImageName> {
    ImageName::parse(s).map_err(anyhow::Error::msg)
}

fn key_values(items: &[String], what: &str) -> anyhow::Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|i| {
            i.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("{what} {i:?}: expected KEY=VALUE"))
        })
        .collect()
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let g = cli.global;
    let root = g
        .root
        .clone()
        .unwrap_or_else(sealer_registry::config::default_root);
    let open = || Store::open(&root);
    let registries = || -> anyhow::Result<Registries> {
        let upstreams = g
            .upstreams
            .iter()
            .map(|u| sealer_client::endpoint::parse_flag(u))
            .collect::<anyhow::Result<_>>()?;
        Ok(Registries::new(RemoteOptions {
            upstreams,
            insecure: g.insecure.clone(),
            auth_file: g.auth_file.clone(),
        }))
    };
    let progress = progress::reporter(g.quiet);
    match cli.command {
        Command::Build(a) => {
            let store = open()?;
            let registries = registries()?;
            let opts = BuildOptions {
                context: a.context,
                kubefile: a.file,
                tag: image(&a.tag)?,
                build_args: key_values(&a.build_args, "--build-arg")?
                    .into_iter()
                    .collect::<BTreeMap<_, _>>(),
                platforms: match &a.platform {
                    Some(p) => Platform::parse_list(p)?,
                    None => Vec::new(),
                },
                no_cache: a.no_cache,
                compression: match a.compression {
                    CompressionArg::Zstd => Compression::Zstd,
                    CompressionArg::Gzip => Compression::Gzip,
                },
                keep_metadata: a.keep_metadata,
                pull: a.pull,
                image_lists: a.image_lists,
                ignore_images: a.ignore_images,
                labels: key_values(&a.labels, "--label")?,
                dry_run: a.dry_run,
                jobs: g.jobs,
                download: download_limits(a.max_download_size, a.download_timeout),
                max_add_bytes: a.max_add_size.unwrap_or(64 << 30),
                run: RunLimits {
                    timeout: a.run_timeout.unwrap_or(RunLimits::default().timeout),
                    isolate: a.isolate,
                },
            };
            let report = build(&store, &registries, progress.as_ref(), &opts).await?;
            if opts.dry_run {
                print_discovery(&report.discovery, a.json)?;
                return Ok(());
            }
            let digest = report
                .digest
                .expect("a build that is not a dry run has a digest");
            if !g.quiet {
                eprintln!(
                    "{} layer(s), {} from the cache; {} container image(s), {} fetched",
                    report.layers,
                    report.cached_layers,
                    report.images.len(),
                    report.images.iter().filter(|i| !i.from_store).count()
                );
            }
            println!("{} {digest}", opts.tag);
        }
        Command::Images {
            command: Some(ImagesCommand::Discover { dir, ignore, json }),
            ..
        } => {
            let mut found = discover::scan_dir(&dir)
                .with_context(|| format!("cannot scan {}", dir.display()))?;
            found.ignore(&ignore).map_err(anyhow::Error::msg)?;
            print_discovery(&found, json)?;
            if !found.problems.is_empty() {
                bail!(
                    "{} reference(s) cannot be used as images (listed above)",
                    found.problems.len()
                );
            }
        }
        Command::Images {
            command: None,
            json,
        } => {
            let store = open()?;
            let mut rows = Vec::new();
            for t in store.tagged_images().await? {
                rows.push(inspect::summary(&store, &t).await?);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print_images(&rows);
            }
        }
        Command::Inspect { image: name } => {
            let store = open()?;
            let name = image(&name)?;
            let top = store.require(&name).await?;
            let repo = name.repo()?;
            let json = inspect::inspect(&store, &repo, &top).await?;
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        Command::Tag { source, target } => {
            let store = open()?;
            let (source, target) = (image(&source)?, image(&target)?);
            let top = store.require(&source).await?;
            let tag = target
                .tag
                .clone()
                .filter(|_| target.digest.is_none())
                .context("the new name needs a tag, not a digest")?;
            let (from, to) = (source.repo()?, target.repo()?);
            if from != to {
                store.link_graph(&from, &to, &top.digest).await?;
            }
            store.tag(&to, &tag, &top.digest).await?;
        }
        Command::Rmi { images } => {
            let store = open()?;
            for i in images {
                let name = image(&i)?;
                let (blobs, bytes) = store.remove(&name).await?;
                println!("removed {name}; freed {blobs} blob(s), {bytes} bytes");
            }
        }
        Command::Pull {
            image: name,
            platform,
        } => {
            let store = open()?;
            let registries = registries()?;
            let name = image(&name)?;
            let platforms = match platform {
                Some(p) => Platform::parse_list(&p)?,
                None => Vec::new(),
            };
            let transfer = Transfer::new(&store, &registries, progress.as_ref(), g.jobs);
            let f = transfer
                .fetch(&name, &platforms, PullPolicy::Always)
                .await?;
            for note in &f.notes {
                eprintln!("warning: {note}");
            }
            println!("{name} {}", f.digest);
        }
        Command::Push {
            image: name,
            target,
        } => {
            let store = open()?;
            let registries = registries()?;
            let local = image(&name)?;
            let target = match target {
                Some(t) => image(&t)?,
                None => local.clone(),
            };
            let transfer = Transfer::new(&store, &registries, progress.as_ref(), g.jobs);
            let digest = transfer.push(&local, &target).await?;
            println!("{target} {digest}");
        }
        Command::Store {
            command: StoreCommand::Import { dir, digests },
        } => {
            let store = open()?;
            let digests = digests
                .iter()
                .map(|d| d.parse().map_err(|e| anyhow::anyhow!("{d:?}: {e}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let (added, digests) = store.import_verified(&dir, digests).await?;
            if !g.quiet {
                println!("{added} of {digests} blob(s) added");
            }
        }
        Command::Store {
            command: StoreCommand::Have,
        } => {
            let store = open()?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for digest in store.blob_digests().await? {
                writeln!(out, "{digest}")?;
            }
        }
        Command::Save {
            output,
            platform,
            compress,
            since,
            dry_run,
            split_size,
            images,
        } => {
            let store = open()?;
            let images = images
                .iter()
                .map(|i| image(i))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let opts = bundle::SaveOptions {
                platforms: match platform {
                    Some(p) => Platform::parse_list(&p)?,
                    None => Vec::new(),
                },
                compress: compress || output.extension().is_some_and(|e| e == "zst"),
                have: match &since {
                    Some(old) => Some(bundle::have_set(&store, old).await?),
                    None => None,
                },
                dry_run,
                split_size,
            };
            let r = bundle::save(&store, &images, &output, &opts, progress.as_ref()).await?;
            let verb = if dry_run { "would save" } else { "saved" };
            let delta = match since {
                Some(_) => format!(
                    "; left out {} blob(s), {} the other side has",
                    r.blobs_skipped,
                    human_size(r.bytes_skipped)
                ),
                None => String::new(),
            };
            println!(
                "{verb} {} image(s), {} blob(s), {} to {}{delta}",
                r.images,
                r.blobs,
                human_size(r.bytes),
                output.display(),
            );
            for part in &r.parts {
                println!("  {part}");
            }
        }
        Command::Load {
            input,
            trust_store_blobs,
        } => {
            let store = open()?;
            let r = bundle::load(&store, &input, trust_store_blobs, progress.as_ref()).await?;
            for note in &r.notes {
                eprintln!("warning: {note}");
            }
            for (name, digest) in &r.images {
                println!("{name} {digest}");
            }
            if !g.quiet {
                eprintln!(
                    "{} blob(s) added ({}), {} already present",
                    r.blobs_added,
                    human_size(r.bytes_added),
                    r.blobs_present
                );
            }
        }
        Command::Login {
            registry,
            username,
            password,
            password_stdin,
        } => {
            let password = match (password, password_stdin) {
                (Some(p), _) => {
                    warn_visible_password("--password", "--password-stdin");
                    p
                }
                (None, true) => read_password()?,
                (None, false) => bail!("give the password with --password or --password-stdin"),
            };
            let host = login_host(&registry);
            let credentials = Credentials { username, password };
            let registries = registries()?;
            registries
                .client_with(&host, credentials.clone())?
                .ping()
                .await
                .with_context(|| format!("cannot log in to {host}"))?;
            let file = registries.auth_file();
            match remote::save_login(&file, &host, &credentials)? {
                remote::Saved::File => {
                    println!("Login to {host} succeeded (saved in {})", file.display())
                }
                remote::Saved::Helper(name) => println!(
                    "Login to {host} succeeded (saved in docker-credential-{name}, as {} says)",
                    file.display()
                ),
            }
        }
        Command::Logout { registry } => {
            let host = login_host(&registry);
            let file = registries()?.auth_file();
            if !remote::remove_login(&file, &host)? {
                bail!("not logged in to {host}");
            }
            println!("Removed the login to {host}");
        }
        Command::Run(mut a) => {
            use sealer_installer::clusterfile::{self, EnvVar, ShortForm};
            if !a.bundle.is_empty() {
                let store = open()?;
                let r = bundle::load(&store, &a.bundle, false, progress.as_ref()).await?;
                if a.image.is_none() && a.clusterfile.is_none() {
                    match r.images.as_slice() {
                        [(name, _)] => a.image = Some(name.to_string()),
                        _ => bail!(
                            "the bundle holds {} images: name the one to run",
                            r.images.len()
                        ),
                    }
                }
            }
            let cluster = match &a.clusterfile {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    let mut c = clusterfile::parse(&text, &path.display().to_string())?;
                    if let Some(i) = &a.image {
                        c.image = i.clone();
                    }
                    c
                }
                None => ShortForm {
                    image: a
                        .image
                        .clone()
                        .context("give an image, or a Clusterfile with -f")?,
                    masters: a.masters.clone(),
                    nodes: a.nodes.clone(),
                    user: a.ssh.user.clone(),
                    passwd: a.ssh.password()?,
                    pk: a.ssh.pk.clone(),
                    port: a.ssh.port,
                    env: a
                        .env
                        .iter()
                        .map(|e| EnvVar::parse(e).map_err(anyhow::Error::msg))
                        .collect::<anyhow::Result<_>>()?,
                    ..ShortForm::default()
                }
                .into_cluster()?,
            };
            let env = installer_env(open()?, g.parallel_hosts)?;
            let r = sealer_installer::run::run(
                &env,
                &cluster,
                sealer_installer::run::Occasion::Install,
                progress.as_ref(),
            )
            .await?;
            print_report(&cluster, &r);
        }
        Command::Apply {
            clusterfile,
            dry_run,
        } => {
            use sealer_installer::{apply, clusterfile, state};
            let text = std::fs::read_to_string(&clusterfile)
                .with_context(|| format!("cannot read {}", clusterfile.display()))?;
            let wanted = clusterfile::parse(&text, &clusterfile.display().to_string())?;
            let env = installer_env(open()?, g.parallel_hosts)?;
            let before = state::load(&env.state_dir, &wanted.name)?;
            let plan = apply::plan(before.as_ref(), &wanted);
            if !g.quiet || dry_run {
                print!("{plan}");
            }
            if dry_run {
                return Ok(());
            }
            let r = apply::apply(&env, before.as_ref(), &wanted, progress.as_ref()).await?;
            print_report(&wanted, &r);
        }
        Command::ScaleUp {
            cluster,
            masters,
            nodes,
            ssh,
        } => {
            use sealer_installer::{apply, state};
            if masters.is_empty() && nodes.is_empty() {
                bail!("give the hosts to add with -m and/or -n");
            }
            let env = installer_env(open()?, g.parallel_hosts)?;
            let before = state::require(&env.state_dir, cluster.as_deref().unwrap_or("default"))?;
            let ssh = sealer_installer::clusterfile::Ssh {
                passwd: ssh.password()?,
                user: ssh.user,
                pk: ssh.pk,
                port: ssh.port,
                ..Default::default()
            };
            let wanted = apply::with_hosts(&before, &masters, &nodes, &ssh)?;
            if !g.quiet {
                print!("{}", apply::plan(Some(&before), &wanted));
            }
            let r = apply::apply(&env, Some(&before), &wanted, progress.as_ref()).await?;
            print_report(&wanted, &r);
        }
        Command::Delete {
            all,
            masters,
            nodes,
            clusterfile,
            cluster,
        } => {
            use sealer_installer::{apply, state};
            let env = installer_env(open()?, g.parallel_hosts)?;
            let name = cluster.as_deref().unwrap_or("default");
            if !all {
                if masters.is_empty() && nodes.is_empty() {
                    bail!("give the hosts to remove with -m/-n, or --all for the whole cluster");
                }
                let before = state::require(&env.state_dir, name)?;
                let remove: Vec<_> = masters.iter().chain(&nodes).copied().collect();
                let wanted = apply::without_hosts(&before, &remove)?;
                if !g.quiet {
                    print!("{}", apply::plan(Some(&before), &wanted));
                }
                apply::apply(&env, Some(&before), &wanted, progress.as_ref()).await?;
                eprintln!("{} host(s) removed from {}", remove.len(), before.name);
                return Ok(());
            }
            let c = match clusterfile {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    sealer_installer::clusterfile::parse(&text, &path.display().to_string())?
                }
                None => state::require(&env.state_dir, name)?,
            };
            sealer_installer::delete::delete_all(&env, &c, progress.as_ref()).await?;
            eprintln!("{} removed from {} host(s)", c.name, c.hosts.len());
        }
        Command::UnpackLayers {
            dir,
            configs,
            layers,
        } => {
            std::fs::create_dir_all(&dir)?;
            for l in &layers {
                let (blob, media_type) = l
                    .split_once('=')
                    .with_context(|| format!("{l:?}: expected BLOB=MEDIATYPE"))?;
                sealer_builder::build::rootfs::unpack_layer(
                    std::path::Path::new(blob),
                    media_type,
                    &dir,
                )
                .with_context(|| format!("unpacking {blob}"))?;
            }
            if let Some(file) = configs {
                let text = std::fs::read(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let specs: Vec<sealer_installer::clusterfile::ConfigSpec> =
                    serde_json::from_slice(&text).context("the Config documents")?;
                sealer_installer::configs::apply(&dir, &specs)?;
            }
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "sealer", &mut std::io::stdout());
        }
    }
    Ok(())
}

/// A registry as `login` takes it: a host, or a URL of one.
fn login_host(registry: &str) -> String {
    let r = registry
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = r.split('/').next().unwrap_or(r);
    sealer_registry::oci::docker_hub::canonical(host).to_string()
}

fn print_images(rows: &[inspect::ImageSummary]) {
    let name_w = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    let tag_w = rows.iter().map(|r| r.tag.len()).max().unwrap_or(3).max(3);
    println!(
        "{:name_w$}  {:tag_w$}  {:12}  {:24}  {:>10}  IMAGES",
        "NAME", "TAG", "DIGEST", "PLATFORMS", "SIZE"
    );
    for r in rows {
        let digest = r
            .digest
            .split(':')
            .nth(1)
            .unwrap_or("")
            .get(..12)
            .unwrap_or("");
        let images = if r.cloud_image {
            r.container_images.to_string()
        } else {
            "-".into()
        };
        println!(
            "{:name_w$}  {:tag_w$}  {digest:12}  {:24}  {:>10}  {images}",
            r.name,
            r.tag,
            r.platforms.join(","),
            human_size(r.size),
        );
    }
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn print_discovery(found: &discover::Discovery, json: bool) -> anyhow::Result<()> {
    let place = discover::Place::to_string;
    if json {
        let images: Vec<_> = found
            .images
            .iter()
            .map(|(image, places)| {
                serde_json::json!({
                    "image": image,
                    "places": places,
                })
            })
            .collect();
        let problems: Vec<_> = found
            .problems
            .iter()
            .map(|p| {
                serde_json::json!({
                    "file": sealer_builder::printable::path(&p.place.file),
                    "line": p.place.line,
                    "message": p.message,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"images": images, "problems": problems})
            )?
        );
        return Ok(());
    }
    let width = found
        .images
        .keys()
        .map(String::len)
        .max()
        .unwrap_or(5)
        .max(5);
    println!("{:width$}  FROM", "IMAGE");
    for (image, places) in &found.images {
        let more = match places.len() {
            1 => String::new(),
            n => format!(" (+{} more)", n - 1),
        };
        println!("{image:width$}  {}{more}", place(&places[0]));
    }
    for p in &found.problems {
        eprintln!("{p}");
    }
    Ok(())
}

/// `APP` download bounds: the defaults with the flags given over them.
fn download_limits(
    max: Option<u64>,
    stall: Option<std::time::Duration>,
) -> sealer_builder::build::sources::DownloadLimits {
    let mut limits = sealer_builder::build::sources::DownloadLimits::default();
    limits.max_bytes = max.unwrap_or(limits.max_bytes);
    limits.stall = stall.unwrap_or(limits.stall);
    limits
}

impl SshFlags {
    /// The SSH password: from stdin with --passwd-stdin, else SEALER_SSH_PASSWORD, else
    /// -p (with a warning).
    fn password(&self) -> anyhow::Result<Option<String>> {
        if self.passwd_stdin {
            return read_password().map(Some);
        }
        if let Ok(p) = std::env::var("SEALER_SSH_PASSWORD") {
            return Ok(Some(p));
        }
        if self.passwd.is_some() {
            warn_visible_password("-p", "--passwd-stdin or SEALER_SSH_PASSWORD");
        }
        Ok(self.passwd.clone())
    }
}

/// A password on standard input, without its line ending.
fn read_password() -> anyhow::Result<String> {
    let mut p = String::new();
    std::io::stdin().read_to_string(&mut p)?;
    Ok(p.trim_end_matches(['\n', '\r']).to_string())
}

fn warn_visible_password(flag: &str, instead: &str) {
    eprintln!(
        "warning: a password given with {flag} is visible to other users in the process \
         list; use {instead}"
    );
}
