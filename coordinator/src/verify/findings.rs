//! What the manifests of a plan's runs say, batch by batch: ok, failed, with a missing
//! or changed file, absent, or in a shard with no directory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::Context;
use shared::plan::Shard;

use super::{Run, SHOWN_GAPS};
use crate::chain::scan::{Problem, Scan, State, Track};
use crate::index_set::IndexSet;
use crate::manifest;
use crate::resume::{self, RunRecord};

/// Why a batch of the plan is not done. (A batch robots.txt disallows is done: its
/// manifest line says it was skipped on purpose.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gap {
    /// No manifest line for it.
    Absent,
    /// The manifest records a failure.
    Failed(String),
    /// The manifest lists a file that is missing or has another size.
    FileBad(String),
    /// No directory for its shard was given.
    NoShard,
    /// A chain whose last page in the manifest names a next page, or that misses a
    /// page (`--follow-next`).
    Unfinished(String),
}

/// What the manifests say, batch by batch. Only what a manifest names is kept one by
/// one; the rest is counted, so that nothing here grows with the size of the plan.
pub struct Findings {
    pub total: Option<u64>,
    pub count: u64,
    /// Batches stored whole, or left out on purpose (robots.txt).
    ok: IndexSet,
    duplicates: Vec<u64>,
    /// Lines for batches outside their shard or the plan.
    strays: u64,
    bad: BTreeMap<u64, Gap>,
    pub tallies: BTreeMap<u64, Tally>,
    /// Batches of shards with no directory.
    no_shard: u64,
    /// Under `--follow-next`: the URL each chain with a gap goes on from, when the
    /// manifest says it (a chain with no page starts from the plan's URL).
    pub chain_urls: BTreeMap<u64, String>,
}

impl Findings {
    /// Reads the manifest of every shard's run.
    pub fn scan(
        by_shard: &BTreeMap<u64, &Run>,
        total: Option<u64>,
        count: u64,
    ) -> anyhow::Result<Self> {
        let mut f = Findings {
            total,
            count,
            ok: IndexSet::default(),
            duplicates: Vec::new(),
            strays: 0,
            bad: BTreeMap::new(),
            tallies: BTreeMap::new(),
            no_shard: 0,
            chain_urls: BTreeMap::new(),
        };
        let mut seen = IndexSet::default();
        for run in by_shard.values() {
            let mut tally = f.tallies.remove(&run.shard.index).unwrap_or_default();
            let entries = manifest::read(&run.dir)
                .with_context(|| format!("reading the manifest in {}", run.dir.display()))?;
            if run.record.follow_next.is_some() {
                f.scan_chains(run, entries, &mut tally);
            } else {
                for entry in entries {
                    let i = entry.index;
                    if f.is_stray(run, i) {
                        continue;
                    }
                    if seen.contains(i) {
                        f.duplicates.push(i);
                        continue;
                    }
                    seen.insert(i);
                    if entry.skipped.is_some() {
                        // Left out on purpose (robots.txt): settled, with no file to check.
                        f.ok.insert(i);
                        tally.skipped += 1;
                        continue;
                    }
                    f.note(&mut tally, i, gap_of(&run.dir, &entry));
                }
            }
            f.tallies.insert(run.shard.index, tally);
        }
        // Batches of a shard that no manifest line names, and batches of shards with
        // no directory, follow from the plan's length: counted, never listed in full.
        if let Some(total) = total {
            f.no_shard = total;
            for (&index, tally) in &mut f.tallies {
                let len = Shard { index, count }.len_of(total);
                f.no_shard -= len;
                tally.absent = len.saturating_sub(
                    tally.ok + tally.failed + tally.file_bad + tally.unfinished + tally.skipped,
                );
            }
        }
        Ok(f)
    }

    /// Whether a line for batch `i` lies outside `run`'s shard or the plan (counted).
    fn is_stray(&mut self, run: &Run, i: u64) -> bool {
        let stray = !run.shard.contains(i) || self.total.is_some_and(|t| i >= t);
        self.strays += u64::from(stray);
        stray
    }

    /// Counts batch (or chain) `i` as ok, or as a gap of its kind.
    fn note(&mut self, tally: &mut Tally, i: u64, gap: Option<Gap>) {
        let Some(gap) = gap else {
            self.ok.insert(i);
            tally.ok += 1;
            return;
        };
        match gap {
            Gap::Failed(_) => tally.failed += 1,
            Gap::Unfinished(_) => tally.unfinished += 1,
            _ => tally.file_bad += 1,
        }
        self.bad.insert(i, gap);
    }

    /// Reads a `--follow-next` run's manifest chain by chain (see
    /// [`crate::chain::scan`]): a chain is ok when it is complete.
    fn scan_chains(&mut self, run: &Run, entries: manifest::Entries, tally: &mut Tally) {
        let mut scan = Scan::new(false);
        for entry in entries {
            let i = entry.index;
            if self.is_stray(run, i) {
                continue;
            }
            let file_ok = |_: &str| match gap_of(&run.dir, &entry) {
                Some(Gap::FileBad(why)) => Err(why),
                _ => Ok(()),
            };
            match scan.feed(&entry, file_ok) {
                Err(Problem::Duplicate) => self.duplicates.push(i),
                Err(Problem::AfterEnd) => self.strays += 1,
                _ => {}
            }
        }
        for (i, track) in scan.into_tracks() {
            let gap = chain_gap(&track);
            if let (Some(_), Some(url)) = (&gap, track.resume_url()) {
                self.chain_urls.insert(i, url.to_owned());
            }
            self.note(tally, i, gap);
        }
    }

    fn sum(&self, of: fn(&Tally) -> u64) -> u64 {
        self.tallies.values().map(of).sum()
    }

    pub fn gap_count(&self) -> u64 {
        self.sum(|t| t.absent)
            + self.sum(|t| t.failed)
            + self.sum(|t| t.file_bad)
            + self.sum(|t| t.unfinished)
            + self.no_shard
    }

    /// Every batch that is not ok, in order.
    pub fn gaps(&self) -> Gaps<'_> {
        Gaps {
            next: Some(0),
            total: self.total,
            ok: &self.ok,
            bad: &self.bad,
            given: &self.tallies,
            count: self.count,
        }
    }

    /// Writes what was found to `report`; whether the run is complete.
    pub fn describe(
        &self,
        report: &mut String,
        plan: &RunRecord,
        by_shard: &BTreeMap<u64, &Run>,
    ) -> bool {
        let count = self.count;
        let (absent, failed, file_bad) = (
            self.sum(|t| t.absent),
            self.sum(|t| t.failed),
            self.sum(|t| t.file_bad),
        );
        let gap_count = self.gap_count();
        // Under --follow-next each batch is a chain of pages.
        let (unit, units, whole) = match plan.follow_next {
            Some(_) => (
                "chain",
                "chains",
                "complete, every page with its whole file",
            ),
            None => ("batch", "batches", "with its whole file"),
        };
        let _ = writeln!(
            report,
            "plan: {}: {} {units} in {count} shard{}",
            resume::describe(plan),
            self.total
                .map_or("an unknown number of".to_owned(), |t| t.to_string()),
            if count == 1 { "" } else { "s" },
        );
        let skipped = self.sum(|t| t.skipped);
        let _ = writeln!(
            report,
            "ok: {} {units}, each {whole}",
            self.ok.len() - skipped
        );
        if skipped > 0 {
            let _ = writeln!(
                report,
                "skipped: {skipped} batches robots.txt disallows (not fetched on purpose, no gap)"
            );
        }
        let unfinished = match plan.follow_next {
            Some(_) => format!(", {} unfinished", self.sum(|t| t.unfinished)),
            None => String::new(),
        };
        let _ = writeln!(
            report,
            "gaps: {gap_count} ({absent} not in any manifest, {failed} failed, {file_bad} with a missing or changed file{unfinished}, {} in shards with no directory)",
            self.no_shard
        );
        for (i, gap) in self.gaps().take(SHOWN_GAPS) {
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
                Gap::Unfinished(why) => why,
            };
            let _ = writeln!(report, "  {unit} {i} (shard {shard}, {place}): {why}");
        }
        if gap_count > SHOWN_GAPS as u64 {
            let _ = writeln!(report, "  ... and {} more", gap_count - SHOWN_GAPS as u64);
        }
        let _ = writeln!(report, "duplicates: {}", self.duplicates.len());
        for i in self.duplicates.iter().take(SHOWN_GAPS) {
            let _ = match plan.follow_next {
                Some(_) => writeln!(
                    report,
                    "  chain {i} has a page in more than one manifest line"
                ),
                None => writeln!(report, "  batch {i} is in more than one manifest line"),
            };
        }
        if self.strays > 0 {
            let _ = writeln!(
                report,
                "stray lines: {} (batches outside their shard or the plan)",
                self.strays
            );
        }
        gap_count == 0 && self.duplicates.is_empty() && self.strays == 0
    }
}

/// Why the batch of a manifest line is not done, if it is not.
fn gap_of(dir: &Path, entry: &manifest::Entry) -> Option<Gap> {
    match (&entry.file, &entry.error) {
        (Some(file), _) => match fs::symlink_metadata(dir.join(file)) {
            Ok(m) if m.is_file() && m.len() == entry.bytes => None,
            Ok(m) if !m.is_file() => Some(Gap::FileBad(format!("{file} is not a plain file"))),
            Ok(m) => Some(Gap::FileBad(format!(
                "{file} has {} bytes, the manifest says {}",
                m.len(),
                entry.bytes
            ))),
            Err(_) => Some(Gap::FileBad(format!("{file} is missing"))),
        },
        (None, error) => Some(Gap::Failed(error.clone().unwrap_or_default())),
    }
}

/// Why a chain is not complete, if it is not.
fn chain_gap(track: &Track) -> Option<Gap> {
    if let Some((page, problem)) = &track.broken {
        return Some(match problem {
            Problem::FileBad(why) => Gap::FileBad(format!("page {page}: {why}")),
            _ => Gap::Unfinished(format!("page {page} is not in the manifest")),
        });
    }
    match &track.state {
        State::Ended(_) => None,
        State::Failed { error, .. } => {
            Some(Gap::Failed(format!("page {}: {error}", track.pages + 1)))
        }
        State::Open { .. } => Some(Gap::Unfinished(format!(
            "page {} names a next page, which is not in the manifest",
            track.pages
        ))),
        State::Empty => Some(Gap::Unfinished("page 1 is not in the manifest".to_owned())),
    }
}

/// What the manifest of one shard's run holds.
#[derive(Debug, Default)]
pub struct Tally {
    /// Batches stored, each with its whole file.
    pub ok: u64,
    /// Batches recorded as failed.
    pub failed: u64,
    /// Batches whose file is missing or changed.
    pub file_bad: u64,
    /// Chains that stop short of their end (`--follow-next`).
    pub unfinished: u64,
    /// Batches left out on purpose: robots.txt disallows them.
    pub skipped: u64,
    /// Batches of the shard that no line names (known once the plan's length is).
    pub absent: u64,
}

/// Every batch of the plan that is not ok, in order, with its reason; found a run of
/// ok batches at a time, so that listing the first few gaps of a huge plan is quick.
pub struct Gaps<'a> {
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
