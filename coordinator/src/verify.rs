//! `coordinator verify DIR...`: do the runs in these directories (one per shard, or one
//! for a whole plan) hold every batch of their plan exactly once, each with its whole
//! file? Lists the gaps and duplicates, and can print the commands (or the URLs) that
//! fetch just the gaps.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use shared::http_url::redact_password;
use shared::plan::{BatchPlan, Shard, Span};
use shared::template::Template;

use crate::cli::VerifyArgs;
use crate::error::UsageError;
use crate::exit::Exit;
use crate::index_set::IndexSet;
use crate::manifest;
use crate::messages;
use crate::resume::{self, RECORD_FILE, RunRecord};
use crate::url_input::{Listed, UrlLines};

/// Gaps listed one by one at most; the count is always given.
const SHOWN_GAPS: usize = 20;

/// One directory given on the command line.
struct Run {
    dir: PathBuf,
    record: RunRecord,
    shard: Shard,
}

/// Why a batch of the plan is not done.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Gap {
    /// No manifest line for it.
    Absent,
    /// The manifest records a failure.
    Failed(String),
    /// The manifest lists a file that is missing or has another size.
    FileBad(String),
    /// No directory for its shard was given.
    NoShard,
}

/// Runs `verify`.
pub fn run(args: &VerifyArgs) -> anyhow::Result<Exit> {
    let runs = args
        .dirs
        .iter()
        .map(|d| load(d))
        .collect::<Result<Vec<_>, _>>()?;
    let first = &runs[0];
    let plan_of = |r: &RunRecord| RunRecord {
        shard: None,
        ..r.clone()
    };
    let count = first.shard.count;
    for run in &runs[1..] {
        if plan_of(&run.record) != plan_of(&first.record) || run.shard.count != count {
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
    let total = plan_len(&first.record)?;
    let mut by_shard: BTreeMap<u64, &Run> = BTreeMap::new();
    let mut report = String::new();
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

    let mut ok = IndexSet::default();
    let mut seen = IndexSet::default();
    let mut duplicates = Vec::new();
    let mut strays = 0u64;
    // Only what a manifest names is kept one by one; the rest is counted, so that
    // nothing here grows with the size of the plan.
    let mut bad: BTreeMap<u64, Gap> = BTreeMap::new();
    let mut tallies: BTreeMap<u64, Tally> = BTreeMap::new();
    for run in by_shard.values() {
        let tally = tallies.entry(run.shard.index).or_default();
        let entries = manifest::read(&run.dir)
            .with_context(|| format!("reading the manifest in {}", run.dir.display()))?;
        for entry in entries {
            let i = entry.index;
            if !run.shard.contains(i) || total.is_some_and(|t| i >= t) {
                strays += 1;
                continue;
            }
            if seen.contains(i) {
                duplicates.push(i);
                continue;
            }
            seen.insert(i);
            let gap = match (&entry.file, &entry.error) {
                (Some(file), _) => match fs::symlink_metadata(run.dir.join(file)) {
                    Ok(m) if m.is_file() && m.len() == entry.bytes => None,
                    Ok(m) if !m.is_file() => {
                        Some(Gap::FileBad(format!("{file} is not a plain file")))
                    }
                    Ok(m) => Some(Gap::FileBad(format!(
                        "{file} has {} bytes, the manifest says {}",
                        m.len(),
                        entry.bytes
                    ))),
                    Err(_) => Some(Gap::FileBad(format!("{file} is missing"))),
                },
                (None, error) => Some(Gap::Failed(error.clone().unwrap_or_default())),
            };
            match gap {
                None => {
                    ok.insert(i);
                    tally.ok += 1;
                }
                Some(gap) => {
                    match gap {
                        Gap::Failed(_) => tally.failed += 1,
                        _ => tally.file_bad += 1,
                    }
                    bad.insert(i, gap);
                }
            }
        }
    }
    // Batches of a shard that no manifest line names, and batches of shards with no
    // directory, follow from the plan's length: counted, never listed in full.
    let mut no_shard = 0;
    if let Some(total) = total {
        no_shard = total;
        for (&index, tally) in &mut tallies {
            let len = Shard { index, count }.len_of(total);
            no_shard -= len;
            tally.absent = len.saturating_sub(tally.ok + tally.failed + tally.file_bad);
        }
    }
    let sum = |f: fn(&Tally) -> u64| tallies.values().map(f).sum::<u64>();
    let (absent, failed, file_bad) = (sum(|t| t.absent), sum(|t| t.failed), sum(|t| t.file_bad));
    let gap_count = absent + failed + file_bad + no_shard;
    let gaps = || Gaps {
        next: Some(0),
        total,
        ok: &ok,
        bad: &bad,
        given: &tallies,
        count,
    };

    let _ = writeln!(
        report,
        "plan: {}: {} batches in {count} shard{}",
        resume::describe(&plan_of(&first.record)),
        total.map_or("an unknown number of".to_owned(), |t| t.to_string()),
        if count == 1 { "" } else { "s" },
    );
    let _ = writeln!(report, "ok: {} batches, each with its whole file", ok.len());
    let _ = writeln!(
        report,
        "gaps: {gap_count} ({absent} not in any manifest, {failed} failed, {file_bad} with a missing or changed file, {no_shard} in shards with no directory)",
    );
    for (i, gap) in gaps().take(SHOWN_GAPS) {
        let shard = Shard {
            index: i % count,
            count,
        };
        let place = by_shard
            .get(&shard.index)
            .map_or("no directory".to_owned(), |r| r.dir.display().to_string());
        let why = match gap {
            Gap::Absent => "not in the manifest".to_owned(),
            Gap::Failed(e) => format!("failed: {e}"),
            Gap::FileBad(e) => e,
            Gap::NoShard => "its shard was not given".to_owned(),
        };
        let _ = writeln!(report, "  batch {i} (shard {shard}, {place}): {why}");
    }
    if gap_count > SHOWN_GAPS as u64 {
        let _ = writeln!(report, "  ... and {} more", gap_count - SHOWN_GAPS as u64);
    }
    let _ = writeln!(report, "duplicates: {}", duplicates.len());
    for i in duplicates.iter().take(SHOWN_GAPS) {
        let _ = writeln!(report, "  batch {i} is in more than one manifest line");
    }
    if strays > 0 {
        let _ = writeln!(
            report,
            "stray lines: {strays} (batches outside their shard or the plan)"
        );
    }
    let complete = gap_count == 0 && duplicates.is_empty() && strays == 0 && duplicate_shards == 0;
    let _ = writeln!(
        report,
        "{}",
        if complete { "complete" } else { "incomplete" }
    );
    messages::block(&report);

    // Written as it is made: the gaps of a huge plan may be more than memory holds.
    let mut out = io::BufWriter::new(io::stdout().lock());
    let printed = (|| -> anyhow::Result<()> {
        if args.print_command {
            // A shard with no directory starts afresh, beside the directories given.
            let missing = (0..count).filter(|k| !by_shard.contains_key(k));
            for index in missing {
                let shard = Shard { index, count };
                if total.is_some_and(|t| shard.len_of(t) > 0) {
                    let dir = sibling_dir(&first.dir, first.shard.index, index);
                    let record = RunRecord {
                        shard: Some(shard.to_string()),
                        ..first.record.clone()
                    };
                    writeln!(out, "{}", command(&Run { dir, record, shard }, ""))?;
                }
            }
            for run in by_shard.values() {
                let tally = &tallies[&run.shard.index];
                if tally.absent > 0 || tally.file_bad > 0 {
                    writeln!(out, "{}", command(run, "--resume"))?;
                }
                if tally.failed > 0 {
                    writeln!(out, "{}", command(run, "--retry-failed"))?;
                }
            }
        }
        if args.print_urls && gap_count > 0 {
            print_urls(&first.record, gaps().map(|(i, _)| i), &mut out)?;
        }
        out.flush()?;
        Ok(())
    })();
    match printed {
        // A closed stdout (`| head`) is a normal end, not an error.
        Err(e)
            if e.downcast_ref::<io::Error>().map(io::Error::kind)
                == Some(io::ErrorKind::BrokenPipe) => {}
        other => other?,
    }
    Ok(if complete { Exit::Ok } else { Exit::SomeFailed })
}

/// What the manifest of one shard's run holds.
#[derive(Debug, Default)]
struct Tally {
    /// Batches stored, each with its whole file.
    ok: u64,
    /// Batches recorded as failed.
    failed: u64,
    /// Batches whose file is missing or changed.
    file_bad: u64,
    /// Batches of the shard that no line names (known once the plan's length is).
    absent: u64,
}

/// Every batch of the plan that is not ok, in order, with its reason; found a run of
/// ok batches at a time, so that listing the first few gaps of a huge plan is quick.
struct Gaps<'a> {
    /// Where the search goes on; `None` once past the end.
    next: Option<u64>,
    total: Option<u64>,
    ok: &'a IndexSet,
    bad: &'a BTreeMap<u64, Gap>,
    /// The shards whose directory was given.
    given: &'a BTreeMap<u64, Tally>,
    count: u64,
}

impl Iterator for Gaps<'_> {
    type Item = (u64, Gap);

    fn next(&mut self) -> Option<(u64, Gap)> {
        let Some(total) = self.total else {
            // With no known length, only what the manifests name can be listed.
            let (&i, gap) = self.bad.range(self.next?..).next()?;
            self.next = i.checked_add(1);
            return Some((i, gap.clone()));
        };
        let i = self.ok.next_absent(self.next?).filter(|&i| i < total);
        self.next = i.and_then(|i| i.checked_add(1));
        let i = i?;
        let gap = match self.bad.get(&i) {
            Some(gap) => gap.clone(),
            None if self.given.contains_key(&(i % self.count)) => Gap::Absent,
            None => Gap::NoShard,
        };
        Some((i, gap))
    }
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

/// The command that fetches a shard's gaps: the plan's flags, the shard, the directory.
fn command(run: &Run, mode: &str) -> String {
    let r = &run.record;
    let mut words = vec!["coordinator".to_owned()];
    match (r.target.as_str(), &r.source) {
        ("template", Some(url)) => words.extend(["--url".to_owned(), quote(url)]),
        ("urls", Some(path)) => words.extend(["--urls".to_owned(), quote(path)]),
        _ => {}
    }
    if let (Some(range), Some(batch)) = (&r.range, r.batch) {
        words.extend([
            "--range".to_owned(),
            range.clone(),
            "--batch".to_owned(),
            batch.to_string(),
        ]);
    }
    words.extend(["--name".to_owned(), quote(&r.name)]);
    if let Some(shard) = &r.shard {
        words.extend(["--shard".to_owned(), shard.clone()]);
    }
    words.extend(["--out".to_owned(), quote(&run.dir.display().to_string())]);
    if !mode.is_empty() {
        words.push(mode.to_owned());
    }
    words.join(" ")
}

/// The directory for shard `index` beside `dir` of shard `of`: `out/shard-1` gives
/// `out/shard-3`; any other name gets `-shard-3` appended.
fn sibling_dir(dir: &Path, of: u64, index: u64) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let of = of.to_string();
    let stem = name.strip_suffix(of.as_str()).filter(|s| !s.is_empty());
    let sibling = match stem {
        Some(stem) => format!("{stem}{index}"),
        None => format!("{name}-shard-{index}"),
    };
    dir.with_file_name(sibling)
}

/// Single-quotes `s` for a POSIX shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Writes the URLs of the batches `indices` (in order) to `out`, one per line.
fn print_urls(
    record: &RunRecord,
    indices: impl Iterator<Item = u64>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if let (Some(plan), Some(url)) = (batch_plan(record)?, &record.source) {
        let template = Template::parse(url).map_err(|e| UsageError::new("verify", e))?;
        // The template in the record has its password redacted already.
        for batch in indices.filter_map(|i| plan.batch(i)) {
            writeln!(out, "{}", template.render(&batch.values()))?;
        }
        return Ok(());
    }
    let Some(path) = record
        .source
        .as_deref()
        .filter(|p| *p != "-" && record.target == "urls")
    else {
        anyhow::bail!(
            "--print-urls: the plan's URLs cannot be recovered (built-in target or stdin list)"
        );
    };
    let file = File::open(path).with_context(|| format!("reading {path}"))?;
    let mut lines = UrlLines::new(BufReader::new(file));
    let mut wanted = indices.peekable();
    let mut i = 0;
    while let (Some(&next), Some(item)) = (wanted.peek(), lines.next_item()?) {
        if i == next {
            // A line that is not a URL cannot be fetched again: there is none to print.
            if let Listed::Url(url) = item {
                writeln!(out, "{}", redact_password(&url))?;
            }
            wanted.next();
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_shards_get_a_directory_beside_the_others() {
        assert_eq!(
            sibling_dir(Path::new("out/shard-1"), 1, 3),
            Path::new("out/shard-3")
        );
        assert_eq!(
            sibling_dir(Path::new("/x/run"), 0, 2),
            Path::new("/x/run-shard-2")
        );
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("a'b"), r"'a'\''b'");
        assert_eq!(
            quote("http://h/?s={start}&l=1"),
            "'http://h/?s={start}&l=1'"
        );
    }
}
