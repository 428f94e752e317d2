//! The end of a scrape: the summary, in text or JSON, and the exit code.

use std::io::{self, Write};

use anyhow::Context;

use crate::exit::{Exit, print_stdout};
use crate::manifest;
use crate::messages;
use crate::plan::Output;
use crate::signals::StopCause;
use crate::summary::RunStats;

/// Prints the summary: the exit code.
pub fn conclude(
    stats: &RunStats,
    stopped_by: Option<StopCause>,
    output: &Output,
    quiet: bool,
    json: bool,
) -> anyhow::Result<Exit> {
    let exit = match stopped_by {
        Some(cause) => cause.exit(),
        None if stats.all().failed > 0 => Exit::SomeFailed,
        None => Exit::Ok,
    };
    if json {
        let summary = stats.to_json(stopped_by.map(StopCause::describe), exit as i32);
        // With --out -, stdout carries the batches: the summary goes to stderr.
        let printed = match output {
            Output::Dir(_) => print_stdout(&format!("{summary}\n")),
            Output::Stdout => writeln!(io::stderr(), "{summary}"),
        };
        printed.context("printing the summary")?;
    } else if !quiet {
        let record = match output {
            Output::Dir(dir) => format!("manifest: {}", dir.join(manifest::FILE_NAME).display()),
            Output::Stdout => "batches: JSON Lines on stdout".to_owned(),
        };
        messages::block(stats.render(&record));
        match stopped_by {
            Some(StopCause::OutputClosed) | None => {}
            Some(cause) => messages::line(format_args!(
                "{}: re-run the same command with --resume to fetch the rest",
                cause.describe()
            )),
        }
    }
    Ok(exit)
}
