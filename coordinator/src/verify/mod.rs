//! `coordinator verify DIR...`: do the runs in these directories (one per shard, or one
//! for a whole plan) hold every batch of their plan exactly once, each with its whole
//! file? Lists the gaps and duplicates, and can print the commands (or the URLs) that
//! fetch just the gaps.

mod findings;
mod fixes;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use anyhow::Context;
use shared::plan::{BatchPlan, Shard, Span};

use self::findings::Findings;
use self::fixes::print_fixes;
use crate::cli::VerifyArgs;
use crate::error::UsageError;
use crate::exit::Exit;
use crate::messages;
use crate::resume::{self, RECORD_FILE, RunRecord};
use crate::url_input::UrlLines;

/// Gaps listed one by one at most; the count is always given.
const SHOWN_GAPS: usize = 20;

/// One directory given on the command line.
struct Run {
    dir: PathBuf,
    record: RunRecord,
    shard: Shard,
}

/// Runs `verify`.
pub fn run(args: &VerifyArgs) -> anyhow::Result<Exit> {
    let runs = load_all(&args.dirs)?;
    let first = &runs[0];
    let count = first.shard.count;
    let total = plan_len(&first.record)?;
    let mut report = String::new();
    let mut by_shard: BTreeMap<u64, &Run> = BTreeMap::new();
    let mut duplicate_shards = 0;
    for run in &runs {
        if let Some(other) = by_shard.insert(run.shard.index, run) {
            duplicate_shards += 1;
            let _ = writeln!(
                report,
                "duplicate shard {}: {} and {}",
                run.shard,
                other.dir.display(),
                run.dir.display()
            );
        }
    }
    let findings = Findings::scan(&by_shard, total, count)?;
    let complete =
        findings.describe(&mut report, &plan_of(&first.record), &by_shard) && duplicate_shards == 0;
    let _ = writeln!(
        report,
        "{}",
        if complete { "complete" } else { "incomplete" }
    );
    messages::block(&report);
    match print_fixes(args, &runs, &by_shard, &findings) {
        // A closed stdout (`| head`) is a normal end, not an error.
        Err(e)
            if e.downcast_ref::<io::Error>().map(io::Error::kind)
                == Some(io::ErrorKind::BrokenPipe) => {}
        other => other?,
    }
    Ok(if complete { Exit::Ok } else { Exit::SomeFailed })
}

/// A run's plan, whichever shard it is.
fn plan_of(record: &RunRecord) -> RunRecord {
    RunRecord {
        shard: None,
        ..record.plan()
    }
}

/// The runs in `dirs`, which must all be shards of one plan.
fn load_all(dirs: &[PathBuf]) -> anyhow::Result<Vec<Run>> {
    let runs = dirs
        .iter()
        .map(|d| load(d))
        .collect::<Result<Vec<_>, _>>()?;
    let first = &runs[0];
    for run in &runs[1..] {
        if plan_of(&run.record) != plan_of(&first.record) || run.shard.count != first.shard.count {
            return Err(UsageError::new(
                "verify",
                format!(
                    "{} and {} hold runs of different plans",
                    first.dir.display(),
                    run.dir.display()
                ),
            )
            .into());
        }
    }
    Ok(runs)
}

fn load(dir: &Path) -> anyhow::Result<Run> {
    let path = dir.join(RECORD_FILE);
    let record = resume::read_record(&path).map_err(|e| {
        let problem = if e.kind() == io::ErrorKind::InvalidData {
            format!("{} is not a run record: {e}", path.display())
        } else {
            format!(
                "{} holds no run: cannot read {}: {e}",
                dir.display(),
                path.display()
            )
        };
        UsageError::new("verify", problem)
    })?;
    let shard = match &record.shard {
        Some(s) => s
            .parse()
            .map_err(|e| UsageError::new("verify", format!("{}: {e}", path.display())))?,
        None => Shard::WHOLE,
    };
    Ok(Run {
        dir: dir.to_owned(),
        record,
        shard,
    })
}

/// Number of batches in the plan, when it can be known.
fn plan_len(record: &RunRecord) -> anyhow::Result<Option<u64>> {
    if let Some(plan) = batch_plan(record)? {
        return Ok(Some(plan.len()));
    }
    match record.source.as_deref() {
        Some(path) if path != "-" => {
            let file = File::open(path).with_context(|| format!("reading the URL list {path}"))?;
            // Lines that are not URLs took a batch each too (from stdin, or in a list
            // changed since): they count.
            let mut lines = UrlLines::new(BufReader::new(file));
            let mut n = 0;
            while lines.next_item()?.is_some() {
                n += 1;
            }
            Ok(Some(n))
        }
        _ => Ok(None),
    }
}

fn batch_plan(record: &RunRecord) -> anyhow::Result<Option<BatchPlan>> {
    let (Some(range), Some(batch)) = (&record.range, record.batch) else {
        return Ok(None);
    };
    let span: Span = range.parse().map_err(|e| UsageError::new("verify", e))?;
    Ok(Some(
        BatchPlan::new(span, batch).map_err(|e| UsageError::new("verify", e))?,
    ))
}
