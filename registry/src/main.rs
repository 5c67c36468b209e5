//! `sealer-registry`: the built-in OCI registry.

use clap::{CommandFactory, Parser, Subcommand};
use sealer_registry::config::{ServeArgs, Settings};
use sealer_registry::{observability, server};

/// sealer's built-in OCI registry: an OCI distribution v1.1 server over one content store.
#[derive(Debug, Parser)]
#[command(name = "sealer-registry", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the registry (no configuration needed: 127.0.0.1:5000 on the default store).
    Serve(ServeArgs),
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
        Command::Serve(args) => {
            let settings = Settings::resolve(&args)?;
            let _log = observability::init_logging(settings.log_format, &settings.log_level);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(async {
                    let storage = server::open_store(&settings)?;
                    server::serve(settings, storage, None).await
                })
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "sealer-registry",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}
