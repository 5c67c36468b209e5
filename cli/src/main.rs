//! `sealer`: argument parsing and progress output only; the work lives in the library
//! crates. Build, push/pull, save/load and run arrive with their issues.

use clap::{CommandFactory, Parser, Subcommand};

/// Build, share and run whole clusters as OCI artifacts.
#[derive(Debug, Parser)]
#[command(name = "sealer", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "sealer", &mut std::io::stdout());
        }
    }
    Ok(())
}
