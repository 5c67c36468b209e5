//! `sealer`: arguments ([`args`]) in, output ([`print`], [`progress`]) out; each command
//! ([`commands`]) hands its arguments to the library crate that does the work.

mod args;
mod commands;
mod print;
mod progress;

use anyhow::Context;
use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = args::Cli::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(commands::run(cli)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Every cause on one line, as `sealer-registry` prints them; no backtrace.
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
