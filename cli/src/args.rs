//! `sealer`'s arguments: the commands and flags (clap), and the small parsers that turn
//! flag values into the libraries' types.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sealer_builder::bundle;
use sealer_builder::reference::ImageName;
use sealer_builder::transfer::PullPolicy;

/// Build, share and run whole clusters as OCI artifacts.
#[derive(Debug, Parser)]
#[command(name = "sealer", version, about)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Args)]
pub(crate) struct Global {
    /// The local image store (the same store `sealer-registry serve` serves).
    /// [default: /var/lib/sealer/registry for root, else $XDG_DATA_HOME/sealer/registry]
    #[arg(long, env = "SEALER_ROOT", value_name = "DIR", global = true)]
    pub(crate) root: Option<PathBuf>,
    /// Fetch HOST's images from URL instead (repeatable), e.g. docker.io=http://127.0.0.1:5001.
    #[arg(long = "upstream", value_name = "HOST=URL", global = true)]
    pub(crate) upstreams: Vec<String>,
    /// Speak plain HTTP to this registry host (repeatable; loopback hosts always are).
    #[arg(long = "insecure-registry", value_name = "HOST", global = true)]
    pub(crate) insecure: Vec<String>,
    /// The docker config.json holding logins. [default: $DOCKER_CONFIG/config.json or ~/.docker/config.json]
    #[arg(long, value_name = "FILE", global = true)]
    pub(crate) auth_file: Option<PathBuf>,
    /// Print no progress.
    #[arg(long, short, global = true)]
    pub(crate) quiet: bool,
    /// Blobs transferred at once.
    #[arg(long, default_value_t = 4, global = true)]
    pub(crate) jobs: usize,
    /// Hosts worked on at once (run, apply, scale-up, delete).
    #[arg(long, default_value_t = 16, global = true, value_name = "N")]
    pub(crate) parallel_hosts: usize,
    /// How blobs reach the hosts: `chain` (this machine feeds the first host, each host
    /// the next, as it receives), `tree` or `tree:N` (each host feeds N), or `direct`
    /// (this machine feeds every host).
    #[arg(long, default_value = "chain", global = true, value_name = "RELAY")]
    pub(crate) relay: sealer_installer::relay::Topology,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
        /// Progress and the summary as JSON lines on stdout.
        #[arg(long)]
        json: bool,
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
    /// Serve blobs to other hosts during a `sealer run` (the relay; configured on stdin).
    #[command(hide = true)]
    RelayServe {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        root: PathBuf,
    },
    /// Fetch blobs from another host's relay during a `sealer run` (configured on stdin).
    #[command(hide = true)]
    RelayFetch {
        #[arg(long)]
        from: std::net::SocketAddr,
        #[arg(long)]
        root: PathBuf,
    },
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub(crate) struct BuildArgs {
    /// The image name, e.g. example.com/shop:1.0.
    #[arg(long, short)]
    pub(crate) tag: String,
    /// The Kubefile. [default: CONTEXT/Kubefile]
    #[arg(long, short)]
    pub(crate) file: Option<PathBuf>,
    /// NAME=VALUE for an ARG (repeatable).
    #[arg(long = "build-arg", value_name = "NAME=VALUE")]
    pub(crate) build_args: Vec<String>,
    /// Platforms to build, comma-separated (default: this machine's).
    #[arg(long)]
    pub(crate) platform: Option<String>,
    /// Rebuild every layer.
    #[arg(long)]
    pub(crate) no_cache: bool,
    /// Layer compression.
    #[arg(long, value_enum, default_value = "zstd")]
    pub(crate) compression: CompressionArg,
    /// Keep files' times and owners in layers (not reproducible).
    #[arg(long)]
    pub(crate) keep_metadata: bool,
    /// When to ask registries for container images and the base image.
    #[arg(long, default_value = "missing")]
    pub(crate) pull: PullPolicy,
    /// A file listing more container images, one per line (repeatable).
    #[arg(long = "image-list", value_name = "FILE")]
    pub(crate) image_lists: Vec<PathBuf>,
    /// Leave out this image (repeatable).
    #[arg(long = "ignore-image", value_name = "IMAGE")]
    pub(crate) ignore_images: Vec<String>,
    /// KEY=VALUE label on the image (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub(crate) labels: Vec<String>,
    /// List the container images the build would carry, with where each comes from;
    /// run nothing, download nothing, write nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Largest file an APP URL may download, e.g. 512MiB. [default: 4GiB]
    #[arg(long, value_name = "SIZE", value_parser = bundle::parts::parse_size)]
    pub(crate) max_download_size: Option<u64>,
    /// A RUN still running after this long is killed and fails the build. [default: 1h]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) run_timeout: Option<std::time::Duration>,
    /// Run each RUN in namespaces of its own: no network, its own processes, the store
    /// read-only, registry logins hidden (needs util-linux's unshare, as root).
    #[arg(long)]
    pub(crate) isolate: bool,
    /// Most bytes one ADD archive may unpack to, e.g. 100GiB. [default: 64GiB]
    #[arg(long, value_name = "SIZE", value_parser = bundle::parts::parse_size)]
    pub(crate) max_add_size: Option<u64>,
    /// An APP download that receives nothing for this long fails, e.g. 30s. [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) download_timeout: Option<std::time::Duration>,
    /// With --dry-run: print JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// The build context.
    #[arg(default_value = ".")]
    pub(crate) context: PathBuf,
}

#[derive(Debug, Subcommand)]
pub(crate) enum StoreCommand {
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
pub(crate) enum CompressionArg {
    Zstd,
    Gzip,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ImagesCommand {
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
pub(crate) struct SshFlags {
    /// SSH user. [default: root]
    #[arg(long, short)]
    pub(crate) user: Option<String>,
    /// SSH password. Other users see it in the process list: prefer --passwd-stdin or
    /// the SEALER_SSH_PASSWORD environment variable.
    #[arg(long, short = 'p')]
    pub(crate) passwd: Option<String>,
    /// Read the SSH password from standard input.
    #[arg(long, conflicts_with = "passwd")]
    pub(crate) passwd_stdin: bool,
    /// SSH private key file.
    #[arg(long)]
    pub(crate) pk: Option<PathBuf>,
    /// SSH port. [default: 22]
    #[arg(long)]
    pub(crate) port: Option<u16>,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The CloudImage (in the local store); taken from the Clusterfile with -f.
    pub(crate) image: Option<String>,
    /// The Clusterfile.
    #[arg(long, short = 'f', value_name = "FILE", conflicts_with_all = ["masters", "nodes"])]
    pub(crate) clusterfile: Option<PathBuf>,
    /// Master hosts, comma-separated (the short form without a Clusterfile).
    #[arg(long, short, value_delimiter = ',', value_name = "IP,...")]
    pub(crate) masters: Vec<std::net::IpAddr>,
    /// Node hosts, comma-separated.
    #[arg(long, short, value_delimiter = ',', value_name = "IP,...")]
    pub(crate) nodes: Vec<std::net::IpAddr>,
    #[command(flatten)]
    pub(crate) ssh: SshFlags,
    /// Environment for the launch commands, KEY=VALUE (repeatable).
    #[arg(long, short)]
    pub(crate) env: Vec<String>,
    /// Load this bundle (`sealer save`; repeat for split parts) into the local store
    /// first; its image is run when no image is named.
    #[arg(long = "bundle", value_name = "FILE")]
    pub(crate) bundle: Vec<PathBuf>,
    /// Progress and the summary as JSON lines on stdout.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) fn image(s: &str) -> anyhow::Result<ImageName> {
    ImageName::parse(s).map_err(anyhow::Error::msg)
}

pub(crate) fn key_values(items: &[String], what: &str) -> anyhow::Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|i| {
            i.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("{what} {i:?}: expected KEY=VALUE"))
        })
        .collect()
}

/// A registry as `login` takes it: a host, or a URL of one.
pub(crate) fn login_host(registry: &str) -> String {
    let r = registry
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = r.split('/').next().unwrap_or(r);
    sealer_registry::oci::docker_hub::canonical(host).to_string()
}

/// `APP` download bounds: the defaults with the flags given over them.
pub(crate) fn download_limits(
    max: Option<u64>,
    stall: Option<std::time::Duration>,
) -> sealer_builder::steps::sources::DownloadLimits {
    let mut limits = sealer_builder::steps::sources::DownloadLimits::default();
    limits.max_bytes = max.unwrap_or(limits.max_bytes);
    limits.stall = stall.unwrap_or(limits.stall);
    limits
}

impl SshFlags {
    /// The SSH password: from stdin with --passwd-stdin, else SEALER_SSH_PASSWORD, else
    /// -p (with a warning).
    pub(crate) fn password(&self) -> anyhow::Result<Option<String>> {
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
pub(crate) fn read_password() -> anyhow::Result<String> {
    let mut p = String::new();
    std::io::stdin().read_to_string(&mut p)?;
    Ok(p.trim_end_matches(['\n', '\r']).to_string())
}

pub(crate) fn warn_visible_password(flag: &str, instead: &str) {
    eprintln!(
        "warning: a password given with {flag} is visible to other users in the process \
         list; use {instead}"
    );
}
