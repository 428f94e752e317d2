//! HTML reports of runs (`--report FILE.html`, `coordinator report`): where they go,
//! checked before a run starts, and written whole or not at all.

use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::Path;

use anyhow::Context;
use report::Run;

use crate::cli::ReportArgs;
use crate::error::UsageError;
use crate::exit::Exit;
use crate::manifest;

/// Checks that a report can be written to `path`: its directory exists and it is not
/// a directory itself. Nothing is created.
pub fn check(path: &Path) -> Result<(), UsageError> {
    let bad = |why: String| UsageError::new("--report", format!("{}: {why}", path.display()));
    if path.is_dir() {
        return Err(bad("is a directory".to_owned()));
    }
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) if !dir.is_dir() => Err(bad(format!("no directory {}", dir.display()))),
        _ => Ok(()),
    }
}

/// Writes `run`'s page to `path`: to a temporary file beside it, then renamed, so
/// that a half-written report never stands under its name.
pub fn write(path: &Path, run: &Run) -> io::Result<()> {
    let html = report::render(run);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("the report path has no file name"))?;
    let mut temp_name = name.to_os_string();
    temp_name.push(format!(".{}.part", std::process::id()));
    let temp = path.with_file_name(temp_name);
    fs::write(&temp, html)?;
    fs::rename(&temp, path).inspect_err(|_| {
        let _ = fs::remove_file(&temp);
    })
}

/// The report of the scrape run in `dir`, from its manifest.
pub fn of_scrape(dir: &Path) -> io::Result<Run> {
    let file = File::open(dir.join(manifest::FILE_NAME))?;
    let title = format!("Scrape into {}", dir.display());
    Run::from_manifest(BufReader::new(file), &title)
}

/// `coordinator report PATH -o FILE`: a report from a scrape run's directory or a
/// load test's `--timeline` file.
pub fn run(args: &ReportArgs) -> anyhow::Result<Exit> {
    check(&args.output)?;
    let run = if args.path.is_dir() {
        if !args.path.join(manifest::FILE_NAME).is_file() {
            return Err(UsageError::new(
                "PATH",
                format!("{} holds no {}", args.path.display(), manifest::FILE_NAME),
            )
            .into());
        }
        of_scrape(&args.path).with_context(|| format!("reading {}", args.path.display()))?
    } else {
        let file = File::open(&args.path).map_err(|e| {
            UsageError::new("PATH", format!("cannot read {}: {e}", args.path.display()))
        })?;
        let title = format!("Load test ({})", args.path.display());
        Run::from_timeline(BufReader::new(file), &title)
            .with_context(|| format!("reading {}", args.path.display()))?
    };
    if run.seconds.is_empty() {
        return Err(UsageError::new(
            "PATH",
            format!("{} holds no run to report on", args.path.display()),
        )
        .into());
    }
    write(&args.output, &run).with_context(|| format!("writing {}", args.output.display()))?;
    Ok(Exit::Ok)
}
