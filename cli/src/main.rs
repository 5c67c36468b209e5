//! `sealer`: argument parsing and progress output only; the work lives in the library
//! crates. Build, push/pull, save/load and run arrive with their issues.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{CommandFactory, Parser, Subcommand};
use sealer_builder::discover;

/// Build, share and run whole clusters as OCI artifacts.
#[derive(Debug, Parser)]
#[command(name = "sealer", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with container images.
    Images {
        #[command(subcommand)]
        command: ImagesCommand,
    },
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
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

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Images {
            command: ImagesCommand::Discover { dir, ignore, json },
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
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "sealer", &mut std::io::stdout());
        }
    }
    Ok(())
}

fn print_discovery(found: &discover::Discovery, json: bool) -> anyhow::Result<()> {
    let place = |p: &discover::Place| format!("{}:{}", p.file.display(), p.line);
    if json {
        let images: Vec<_> = found
            .images
            .iter()
            .map(|(image, places)| {
                serde_json::json!({
                    "image": image,
                    "places": places.iter().map(|p| serde_json::json!({
                        "file": p.file, "line": p.line,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let problems: Vec<_> = found
            .problems
            .iter()
            .map(|p| serde_json::json!({"file": p.place.file, "line": p.place.line, "message": p.message}))
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
