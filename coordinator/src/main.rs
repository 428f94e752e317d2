//! `coordinator`: fetch a very large number of HTTP pages or API batches with one
//! single-threaded event loop per core, each in its own worker process.
//!
//! The data path reads top to bottom: [`settings`] turns the command line into a checked
//! plan, [`source`] yields its jobs lazily, [`dispatch`] hands them to the worker
//! processes of [`pool`] and collects their reports into the [`manifest`], and
//! [`summary`] tells how it went.

mod chain;
mod cli;
mod cpus;
mod dispatch;
mod error;
mod exit;
mod gendocs;
mod index_set;
mod lines;
mod load;
mod manifest;
mod messages;
mod metrics;
mod numbers;
mod open_files;
mod parse;
mod plan;
mod pool;
mod prepare;
mod progress;
mod proxy;
mod refresh;
mod report_file;
mod request;
mod resume;
mod robots;
mod scheduler;
mod signals;
mod sink;
mod source;
mod summary;
mod target;
mod terminal;
mod trust;
mod url_input;
mod url_list;
mod verify;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use crate::cli::{Cli, Command};
use crate::exit::Exit;

fn main() -> ExitCode {
    if let Some(parent) = worker_parent() {
        return run_worker(parent);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return exit::clap_error(e),
    };
    let result = match cli.command {
        Some(Command::Worker(args)) => return run_worker(args.parent),
        Some(Command::Serve(args)) => target::serve_forever(&args),
        Some(Command::Verify(args)) => verify::run(&args),
        Some(Command::Load(args)) => load::run(&args),
        Some(Command::Report(args)) => report_file::run(&args),
        Some(Command::Completions(args)) => gendocs::completions(&args),
        Some(Command::Man(args)) => gendocs::man(&args),
        None => scrape(cli.run),
    };
    exit::end(result)
}

/// A scrape run, and its report when one is asked for (written whatever the run's
/// exit code, from what its manifest holds).
fn scrape(args: cli::RunArgs) -> anyhow::Result<Exit> {
    let report = args.report.clone();
    if let Some(path) = &report {
        report_file::check(path)?;
        if args.out == std::path::Path::new("-") {
            return Err(error::UsageError::new(
                "--report",
                "needs an --out directory: with --out - there is no manifest to report on",
            )
            .into());
        }
    }
    let out = args.out.clone();
    let env = plan::Env {
        cpus: cpus::usable_cpus(),
        var: &|name| std::env::var(name).ok(),
        read: &|path| std::fs::read(path),
    };
    // What an earlier run recorded, for a --resume that names no plan of its own: a
    // read, before anything is written.
    let earlier = (args.resume || args.retry_failed || args.refresh)
        .then(|| resume::read_record(&out.join(resume::RECORD_FILE)).ok())
        .flatten();
    let plan = plan::Plan::from_args(&args, &env, earlier.as_ref())?;
    let metrics = metrics::Exporter::start(args.metrics)?;
    let exit = dispatch::run(prepare::prepare(plan)?, &metrics)?;
    if let Some(path) = report {
        let run = report_file::of_scrape(&out)
            .with_context(|| format!("reading the run in {}", out.display()))?;
        report_file::write(&path, &run).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(exit)
}

/// The parent pid of a worker process, started exactly as the pool starts it
/// ([`pool::WORKER_COMMAND`] `--parent PID`). Workers skip the command-line parser: each is one more
/// resident process per core, and the parser is code and memory they never need.
fn worker_parent() -> Option<u32> {
    let mut args = std::env::args_os().skip(1);
    let (Some(sub), Some(flag), Some(pid), None) =
        (args.next(), args.next(), args.next(), args.next())
    else {
        return None;
    };
    if sub != pool::WORKER_COMMAND || flag != "--parent" {
        return None;
    }
    pid.to_str()?.parse().ok()
}

fn run_worker(parent: u32) -> ExitCode {
    match worker::run_process(parent) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("worker: {e}");
            Exit::Fatal.into()
        }
    }
}
