//! `coordinator`: fetch a very large number of HTTP pages or API batches with one
//! single-threaded event loop per core, each in its own worker process.
//!
//! The data path reads top to bottom: [`settings`] turns the command line into a checked
//! plan, [`source`] yields its jobs lazily, [`dispatch`] hands them to the worker
//! processes of [`pool`] and collects their reports into the [`manifest`], and
//! [`summary`] tells how it went.

mod cli;
mod dispatch;
mod exit;
mod load;
mod manifest;
mod open_files;
mod pool;
mod progress;
mod resume;
mod scheduler;
mod settings;
mod signals;
mod sink;
mod source;
mod summary;
mod target;
mod verify;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::exit::Exit;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return exit::clap_error(e),
    };
    let result = match cli.command {
        Some(Command::Worker(args)) => {
            return match worker::run_process(args.parent) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("worker: {e}");
                    Exit::Fatal.into()
                }
            };
        }
        Some(Command::Serve(args)) => target::serve_forever(&args),
        Some(Command::Verify(args)) => verify::run(&args),
        Some(Command::Load(args)) => load::run(&args),
        None => settings::Settings::from_args(cli.run).and_then(dispatch::run),
    };
    exit::report(result)
}
