//! Each `sealer` command: its arguments handed to the library crate that does the work,
//! and the result printed. Nothing here decides anything the libraries would not.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::CommandFactory;
use sealer_builder::layer::Compression;
use sealer_builder::progress::Progress;
use sealer_builder::reference::Platform;
use sealer_builder::remote::{self, Registries, RemoteOptions};
use sealer_builder::steps::{BuildOptions, RunLimits, build};
use sealer_builder::store::Store;
use sealer_builder::transfer::{PullPolicy, Transfer};
use sealer_builder::{bundle, discover, inspect};
use sealer_client::credentials::Credentials;
use sealer_installer::apply::Change;
use sealer_installer::clusterfile::{self, EnvVar, ShortForm};
use sealer_installer::environment::Environment;
use sealer_installer::request::Request;

use crate::args::*;
use crate::print::*;
use crate::progress;

/// What every command may need: the global flags and the progress display.
struct Ctx {
    g: Global,
    progress: Box<dyn Progress>,
}

impl Ctx {
    fn store(&self) -> anyhow::Result<Store> {
        let root = self.g.root.clone();
        Store::open(&root.unwrap_or_else(sealer_registry::config::default_root))
    }

    fn registries(&self) -> anyhow::Result<Registries> {
        let upstreams = self.g.upstreams.iter();
        Ok(Registries::new(RemoteOptions {
            upstreams: upstreams
                .map(|u| sealer_client::endpoint::parse_flag(u))
                .collect::<anyhow::Result<_>>()?,
            insecure: self.g.insecure.clone(),
            auth_file: self.g.auth_file.clone(),
        }))
    }

    /// The progress display, or JSON lines for `--json`.
    fn progress_for(&self, json: bool) -> &dyn Progress {
        if json {
            &progress::JsonLines
        } else {
            self.progress.as_ref()
        }
    }

    /// A run's summary: for people, or the last JSON line.
    fn report(
        &self,
        cluster: &sealer_installer::clusterfile::Cluster,
        r: &sealer_installer::run::Report,
        json: bool,
    ) {
        if json {
            crate::print::print_report_json(cluster, r);
        } else {
            print_report(cluster, r, self.g.quiet);
        }
    }

    fn environment(&self) -> anyhow::Result<Environment> {
        let mut env = Environment::here(self.store()?, self.g.parallel_hosts)?;
        env.relay = self.g.relay;
        Ok(env)
    }

    fn transfer<'a>(&'a self, store: &'a Store, registries: &'a Registries) -> Transfer<'a> {
        Transfer::new(store, registries, self.progress.as_ref(), self.g.jobs)
    }
}

/// Runs the command; one arm per command, each a call.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = Ctx {
        progress: progress::reporter(cli.global.quiet),
        g: cli.global,
    };
    match cli.command {
        Command::Build(a) => build_image(&ctx, a).await,
        Command::Images {
            command: Some(ImagesCommand::Discover { dir, ignore, json }),
            ..
        } => discover_images(&dir, &ignore, json),
        Command::Images {
            command: None,
            json,
        } => list_images(&ctx, json).await,
        Command::Inspect { image: name } => inspect_image(&ctx, &name).await,
        Command::Tag { source, target } => {
            let (source, target) = (image(&source)?, image(&target)?);
            ctx.store()?.tag_as(&source, &target).await?;
            Ok(())
        }
        Command::Rmi { images } => remove_images(&ctx, &images).await,
        Command::Pull {
            image: name,
            platform,
        } => pull(&ctx, &name, platform.as_deref()).await,
        Command::Push {
            image: name,
            target,
        } => push(&ctx, &name, target.as_deref()).await,
        Command::Store { command } => store_command(&ctx, command).await,
        Command::Save {
            output,
            platform,
            compress,
            since,
            dry_run,
            split_size,
            images,
        } => {
            let store = ctx.store()?;
            let opts = bundle::SaveOptions {
                platforms: platforms(platform.as_deref())?,
                compress: compress || output.extension().is_some_and(|e| e == "zst"),
                have: match &since {
                    Some(old) => Some(bundle::have_set(&store, old).await?),
                    None => None,
                },
                dry_run,
                split_size,
            };
            save(&ctx, &store, &images, &output, &opts).await
        }
        Command::Load {
            input,
            trust_store_blobs,
        } => load(&ctx, &input, trust_store_blobs).await,
        Command::Login {
            registry,
            username,
            password,
            password_stdin,
        } => login(&ctx, &registry, username, password, password_stdin).await,
        Command::Logout { registry } => {
            let host = login_host(&registry);
            let file = ctx.registries()?.auth_file();
            if !remote::remove_login(&file, &host)? {
                bail!("not logged in to {host}");
            }
            println!("Removed the login to {host}");
            Ok(())
        }
        Command::Run(a) => run_cluster(&ctx, a).await,
        Command::Apply {
            clusterfile,
            dry_run,
            json,
        } => apply(&ctx, &clusterfile, dry_run, json).await,
        Command::ScaleUp {
            cluster,
            masters,
            nodes,
            ssh,
        } => {
            let name = cluster.as_deref().unwrap_or("default");
            scale_up(&ctx, name, &masters, &nodes, ssh).await
        }
        Command::Delete {
            all,
            masters,
            nodes,
            clusterfile,
            cluster,
        } => {
            let name = cluster.as_deref().unwrap_or("default");
            match all {
                true => delete_cluster(&ctx, clusterfile, name).await,
                false => remove_hosts(&ctx, name, masters.into_iter().chain(nodes)).await,
            }
        }
        Command::UnpackLayers {
            dir,
            configs,
            layers,
        } => {
            let layers = layers.iter().map(|l| blob_and_type(l));
            let layers = layers.collect::<anyhow::Result<Vec<_>>>()?;
            sealer_installer::configs::unpack(&dir, &layers, configs.as_deref())
        }
        Command::RelayServe { listen, root } => {
            sealer_installer::relay::serve::serve(listen, root).await
        }
        Command::RelayFetch { from, root } => {
            sealer_installer::relay::receive::fetch(from, root).await
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "sealer", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// `BLOB=MEDIATYPE`, as `unpack-layers` takes each layer.
fn blob_and_type(layer: &str) -> anyhow::Result<(PathBuf, String)> {
    let (blob, media_type) = layer
        .split_once('=')
        .with_context(|| format!("{layer:?}: expected BLOB=MEDIATYPE"))?;
    Ok((PathBuf::from(blob), media_type.to_string()))
}

async fn inspect_image(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let store = ctx.store()?;
    let name = image(name)?;
    let top = store.require(&name).await?;
    let json = inspect::inspect(&store, &name.repo()?, &top).await?;
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}

async fn remove_images(ctx: &Ctx, images: &[String]) -> anyhow::Result<()> {
    let store = ctx.store()?;
    for i in images {
        let name = image(i)?;
        let (blobs, bytes) = store.remove(&name).await?;
        println!("removed {name}; freed {blobs} blob(s), {bytes} bytes");
    }
    Ok(())
}

async fn apply(
    ctx: &Ctx,
    clusterfile: &std::path::Path,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<()> {
    let env = ctx.environment()?;
    let change = Change::to(&env, clusterfile::read_file(clusterfile)?)?;
    if (!ctx.g.quiet && !json) || dry_run {
        print!("{}", change.plan());
    }
    if !dry_run {
        let r = change.apply(&env, ctx.progress_for(json)).await?;
        ctx.report(&change.wanted, &r, json);
    }
    Ok(())
}

async fn scale_up(
    ctx: &Ctx,
    name: &str,
    masters: &[IpAddr],
    nodes: &[IpAddr],
    ssh: SshFlags,
) -> anyhow::Result<()> {
    let env = ctx.environment()?;
    let ssh = clusterfile::Ssh {
        passwd: ssh.password()?,
        user: ssh.user,
        pk: ssh.pk,
        port: ssh.port,
        ..Default::default()
    };
    let change = Change::adding(&env, name, masters, nodes, &ssh)?;
    if !ctx.g.quiet {
        print!("{}", change.plan());
    }
    let r = change.apply(&env, ctx.progress.as_ref()).await?;
    ctx.report(&change.wanted, &r, false);
    Ok(())
}

fn platforms(flag: Option<&str>) -> anyhow::Result<Vec<Platform>> {
    Ok(match flag {
        Some(p) => Platform::parse_list(p)?,
        None => Vec::new(),
    })
}

async fn build_image(ctx: &Ctx, a: BuildArgs) -> anyhow::Result<()> {
    let store = ctx.store()?;
    let registries = ctx.registries()?;
    let opts = BuildOptions {
        context: a.context,
        kubefile: a.file,
        tag: image(&a.tag)?,
        build_args: key_values(&a.build_args, "--build-arg")?
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        platforms: platforms(a.platform.as_deref())?,
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
        jobs: ctx.g.jobs,
        download: download_limits(a.max_download_size, a.download_timeout),
        max_add_bytes: a.max_add_size.unwrap_or(64 << 30),
        run: RunLimits {
            timeout: a.run_timeout.unwrap_or(RunLimits::default().timeout),
            isolate: a.isolate,
        },
    };
    let report = build(&store, &registries, ctx.progress.as_ref(), &opts).await?;
    if opts.dry_run {
        return print_discovery(&report.discovery, a.json);
    }
    let digest = report
        .digest
        .expect("a build that is not a dry run has a digest");
    if !ctx.g.quiet {
        eprintln!(
            "{} layer(s), {} from the cache; {} container image(s), {} fetched",
            report.layers,
            report.cached_layers,
            report.images.len(),
            report.images.iter().filter(|i| !i.from_store).count()
        );
    }
    println!("{} {digest}", opts.tag);
    Ok(())
}

fn discover_images(dir: &std::path::Path, ignore: &[String], json: bool) -> anyhow::Result<()> {
    let mut found =
        discover::scan_dir(dir).with_context(|| format!("cannot scan {}", dir.display()))?;
    found.ignore(ignore).map_err(anyhow::Error::msg)?;
    print_discovery(&found, json)?;
    if !found.problems.is_empty() {
        bail!(
            "{} reference(s) cannot be used as images (listed above)",
            found.problems.len()
        );
    }
    Ok(())
}

async fn list_images(ctx: &Ctx, json: bool) -> anyhow::Result<()> {
    let store = ctx.store()?;
    let mut rows = Vec::new();
    for t in store.tagged_images().await? {
        rows.push(inspect::summary(&store, &t).await?);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_images(&rows);
    }
    Ok(())
}

async fn pull(ctx: &Ctx, name: &str, platform: Option<&str>) -> anyhow::Result<()> {
    let (store, registries) = (ctx.store()?, ctx.registries()?);
    let name = image(name)?;
    let fetched = ctx
        .transfer(&store, &registries)
        .fetch(&name, &platforms(platform)?, PullPolicy::Always)
        .await?;
    for note in &fetched.notes {
        eprintln!("warning: {note}");
    }
    println!("{name} {}", fetched.digest);
    Ok(())
}

async fn push(ctx: &Ctx, name: &str, target: Option<&str>) -> anyhow::Result<()> {
    let (store, registries) = (ctx.store()?, ctx.registries()?);
    let local = image(name)?;
    let target = match target {
        Some(t) => image(t)?,
        None => local.clone(),
    };
    let digest = ctx
        .transfer(&store, &registries)
        .push(&local, &target)
        .await?;
    println!("{target} {digest}");
    Ok(())
}

async fn store_command(ctx: &Ctx, command: StoreCommand) -> anyhow::Result<()> {
    let store = ctx.store()?;
    match command {
        StoreCommand::Import { dir, digests } => {
            let digests = digests
                .iter()
                .map(|d| d.parse().map_err(|e| anyhow::anyhow!("{d:?}: {e}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let (added, digests) = store.import_verified(&dir, digests).await?;
            if !ctx.g.quiet {
                println!("{added} of {digests} blob(s) added");
            }
        }
        StoreCommand::Have => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for digest in store.blob_digests().await? {
                writeln!(out, "{digest}")?;
            }
        }
    }
    Ok(())
}

async fn save(
    ctx: &Ctx,
    store: &Store,
    images: &[String],
    output: &std::path::Path,
    opts: &bundle::SaveOptions,
) -> anyhow::Result<()> {
    let images = images
        .iter()
        .map(|i| image(i))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let r = bundle::save(store, &images, output, opts, ctx.progress.as_ref()).await?;
    let verb = if opts.dry_run { "would save" } else { "saved" };
    let delta = match opts.have {
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
    Ok(())
}

async fn load(ctx: &Ctx, input: &[PathBuf], trust_store_blobs: bool) -> anyhow::Result<()> {
    let store = ctx.store()?;
    let r = bundle::load(&store, input, trust_store_blobs, ctx.progress.as_ref()).await?;
    for note in &r.notes {
        eprintln!("warning: {note}");
    }
    for (name, digest) in &r.images {
        println!("{name} {digest}");
    }
    if !ctx.g.quiet {
        eprintln!(
            "{} blob(s) added ({}), {} already present",
            r.blobs_added,
            human_size(r.bytes_added),
            r.blobs_present
        );
    }
    Ok(())
}

async fn login(
    ctx: &Ctx,
    registry: &str,
    username: String,
    password: Option<String>,
    password_stdin: bool,
) -> anyhow::Result<()> {
    let password = match (password, password_stdin) {
        (Some(p), _) => {
            warn_visible_password("--password", "--password-stdin");
            p
        }
        (None, true) => read_password()?,
        (None, false) => bail!("give the password with --password or --password-stdin"),
    };
    let host = login_host(registry);
    let credentials = Credentials { username, password };
    let registries = ctx.registries()?;
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
    Ok(())
}

async fn run_cluster(ctx: &Ctx, a: RunArgs) -> anyhow::Result<()> {
    let request = Request {
        bundles: a.bundle,
        image: a.image,
        clusterfile: a.clusterfile,
        short: ShortForm {
            masters: a.masters,
            nodes: a.nodes,
            passwd: a.ssh.password()?,
            user: a.ssh.user,
            pk: a.ssh.pk,
            port: a.ssh.port,
            env: a
                .env
                .iter()
                .map(|e| EnvVar::parse(e).map_err(anyhow::Error::msg))
                .collect::<anyhow::Result<_>>()?,
            ..ShortForm::default()
        },
    };
    let mut notes = Vec::new();
    let store = ctx.store()?;
    let progress = ctx.progress_for(a.json);
    let cluster = request.cluster(&store, progress, &mut notes).await?;
    for note in &notes {
        eprintln!("warning: {note}");
    }
    let mut env = Environment::here(store, ctx.g.parallel_hosts)?;
    env.relay = ctx.g.relay;
    let occasion = sealer_installer::run::Occasion::Install;
    let r = sealer_installer::run::run(&env, &cluster, occasion, progress).await?;
    ctx.report(&cluster, &r, a.json);
    Ok(())
}

async fn remove_hosts(
    ctx: &Ctx,
    name: &str,
    hosts: impl Iterator<Item = IpAddr>,
) -> anyhow::Result<()> {
    let env = ctx.environment()?;
    let remove: Vec<_> = hosts.collect();
    let change = Change::removing(&env, name, &remove)?;
    if !ctx.g.quiet {
        print!("{}", change.plan());
    }
    change.apply(&env, ctx.progress.as_ref()).await?;
    eprintln!(
        "{} host(s) removed from {}",
        remove.len(),
        change.wanted.name
    );
    Ok(())
}

async fn delete_cluster(ctx: &Ctx, clusterfile: Option<PathBuf>, name: &str) -> anyhow::Result<()> {
    let env = ctx.environment()?;
    let c = sealer_installer::delete::target(&env, clusterfile.as_deref(), name)?;
    sealer_installer::delete::delete_all(&env, &c, ctx.progress.as_ref()).await?;
    eprintln!("{} removed from {} host(s)", c.name, c.hosts.len());
    Ok(())
}
