//! `--refresh`: the finished run in a directory fetched again, each batch on the
//! condition that it changed. Before the run, what the earlier run stored, batch by
//! batch ([`read_stored`]); during it, the manifest line each batch gets ([`line`]),
//! appended after the batch's old one; after it, the old lines go ([`Appended`]; after
//! a coordinator killed midway, the next run's [`crate::manifest::rewrite`] keeps the
//! last line of each batch).
//!
//! The coordinator holds the file name, size and validators of every stored batch
//! until the batch is handed out (about 220 bytes a batch): the manifest is in the order
//! batches finished, and jobs go out in the plan's order.

use std::collections::HashMap;
use std::path::Path;

use shared::plan::Shard;
use shared::protocol::{JobReport, Outcome};
use shared::refresh::{Stored, Validators};

use crate::error::{UsageError, usage};
use crate::index_set::IndexSet;
use crate::manifest::{self, Entry, Refresh};

/// The batches a finished run holds: this shard of a plan of `total` batches (not
/// known up front for a URL list read from stdin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    /// The run's shard.
    pub shard: Shard,
    /// Batches in the whole plan, when known.
    pub total: Option<u64>,
}

impl Slice {
    fn contains(&self, index: u64) -> bool {
        self.shard.contains(index) && self.total.is_none_or(|t| index < t)
    }
}

/// What the earlier run stored, by batch index: taken out one by one as the batches
/// are handed out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StoredBatches {
    by_index: HashMap<u64, Stored>,
    /// Lines of the manifest, one a batch, before the refresh appends any.
    lines: u64,
}

impl StoredBatches {
    /// What batch `index` stored, once: `None` for a batch with no whole file (it
    /// failed, or its file is gone or altered), which is fetched unconditionally.
    pub fn take(&mut self, index: u64) -> Option<Box<Stored>> {
        self.by_index.remove(&index).map(Box::new)
    }

    /// A record of the lines the refresh is about to append.
    pub fn appended(&self) -> Appended {
        Appended {
            old_lines: self.lines,
            batches: IndexSet::default(),
        }
    }
}

/// The batches a refresh gave a new line, after the manifest's `old_lines`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    old_lines: u64,
    batches: IndexSet,
}

impl Appended {
    /// Notes that batch `index` has a new line.
    pub fn note(&mut self, index: u64) {
        self.batches.insert(index);
    }

    /// Drops the old line of every batch that has a new one: the manifest holds each
    /// batch once again. One reading of it, where a rewrite that knows nothing of the
    /// refresh needs three.
    pub fn tidy(&self, dir: &Path) -> std::io::Result<()> {
        manifest::rewrite_lines(dir, |line, entry| {
            line > self.old_lines || !self.batches.contains(entry.index)
        })
    }
}

/// What the finished run in `dir` stored, batch by batch, with its manifest tidied
/// when it needs it (a torn last line and lines that later ones stand for dropped). A
/// run with batches of `slice` that have no line yet is refused, before anything is
/// written.
pub fn read_stored(dir: &Path, slice: Slice) -> Result<StoredBatches, UsageError> {
    let unreadable = |e: std::io::Error| {
        usage(
            "--refresh",
            format!("cannot read the manifest in {}: {e}", dir.display()),
        )
    };
    // One reading: the batches listed, what each stored (a later line of a batch
    // stands for it), and whether lines can be appended to the manifest as it is.
    let (mut listed, mut seen) = (IndexSet::default(), IndexSet::default());
    let (mut twice, mut lines) = (false, 0);
    let mut stored = HashMap::new();
    let mut entries = manifest::read(dir).map_err(unreadable)?.quietly();
    for entry in entries.by_ref() {
        lines += 1;
        twice |= seen.contains(entry.index);
        seen.insert(entry.index);
        if slice.contains(entry.index) {
            listed.insert(entry.index);
        }
        match entry
            .file
            .as_ref()
            .filter(|_| manifest::holds_file(dir, &entry))
        {
            Some(file) => {
                let batch = Stored {
                    file: file.clone(),
                    bytes: entry.bytes,
                    validators: Validators::new(
                        entry.etag.as_deref(),
                        entry.last_modified.as_deref(),
                    ),
                };
                stored.insert(entry.index, batch);
            }
            None => {
                stored.remove(&entry.index);
            }
        }
    }
    if let Some(total) = slice.total {
        let whole = slice.shard.len_of(total);
        let missing = whole.saturating_sub(listed.len());
        if missing > 0 {
            return Err(usage(
                "--refresh",
                format!(
                    "{} holds an unfinished run: {missing} of its {whole} batches have no manifest line; finish it with --resume first",
                    dir.display()
                ),
            ));
        }
    }
    if twice || !entries.is_tidy() {
        // A torn or unreadable line, or batches with two lines (a refresh killed
        // midway): rewritten with the last line of each batch, as a resume does.
        manifest::rewrite(dir, |_| true).map_err(unreadable)?;
        lines = seen.len();
    }
    Ok(StoredBatches {
        by_index: stored,
        lines,
    })
}

/// The manifest line of a refreshed batch: `entry`, as its report made it, told what
/// the refresh made of the batch. A 304 and a failure keep the file `stored` before, so
/// their line names it, with its size and validators (those a 304 repeats win).
pub fn line(mut entry: Entry, report: &JobReport, stored: Option<&Stored>) -> Entry {
    let refresh = match &report.outcome {
        Outcome::Saved { .. } | Outcome::Fetched { .. } => Refresh::Changed,
        Outcome::Unchanged { .. } => Refresh::Unchanged,
        Outcome::Failed { .. } => Refresh::Failed,
        // robots.txt is not consulted on a refresh of what was fetched before.
        Outcome::Skipped { .. } => Refresh::Unchanged,
    };
    if let (Some(stored), Refresh::Unchanged | Refresh::Failed) = (stored, refresh) {
        let validators = match refresh {
            Refresh::Unchanged => report.validators.clone().or(&stored.validators),
            _ => stored.validators.clone(),
        };
        entry.file = Some(stored.file.clone());
        entry.bytes = stored.bytes;
        entry.etag = validators.etag;
        entry.last_modified = validators.last_modified;
    }
    entry.refresh = Some(refresh);
    entry
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::plan::Batch;
    use std::fs;
    use std::os::unix::fs::MetadataExt as _;

    fn report(index: u64, outcome: Outcome, etag: Option<&str>) -> JobReport {
        JobReport {
            chain: None,
            batch: Batch::single(index),
            url: format!("http://h/{index}"),
            status: Some(match &outcome {
                Outcome::Unchanged { .. } => 304,
                Outcome::Failed { .. } => 503,
                _ => 200,
            }),
            bytes: match &outcome {
                Outcome::Saved { .. } => 7,
                _ => 0,
            },
            elapsed_us: 1000,
            attempts: 1,
            outcome,
            validators: Validators::new(etag, None),
        }
    }

    /// The report of batch `index` stored as `p{index}.json` with `etag`.
    fn saved(index: u64, etag: &str) -> JobReport {
        let file = format!("p{index}.json");
        report(index, Outcome::Saved { file }, Some(etag))
    }

    fn stored(etag: &str) -> Stored {
        Stored {
            file: "p0.json".into(),
            bytes: 5,
            validators: Validators::new(Some(etag), Some("Tue, 14 Nov 2023 22:13:20 GMT")),
        }
    }

    #[test]
    fn a_refresh_line_says_what_became_of_the_file() {
        let old = stored("\"a\"");
        let file = || "p0.json".to_owned();
        let refreshed = |outcome: Outcome, etag: Option<&str>, stored: Option<&Stored>| {
            let report = report(0, outcome, etag);
            line(Entry::new(0, &report), &report, stored)
        };
        let l = refreshed(Outcome::Saved { file: file() }, Some("\"b\""), Some(&old));
        assert_eq!(l.refresh, Some(Refresh::Changed));
        assert_eq!((l.bytes, l.etag.as_deref()), (7, Some("\"b\"")));
        assert_eq!(l.last_modified, None, "the new answer's validators only");

        let l = refreshed(Outcome::Unchanged { file: file() }, None, Some(&old));
        assert_eq!(l.refresh, Some(Refresh::Unchanged));
        assert_eq!(
            (l.file.as_deref(), l.bytes, l.status),
            (Some("p0.json"), 5, Some(304))
        );
        let kept = (l.etag, l.last_modified);
        assert_eq!(
            kept,
            (
                old.validators.etag.clone(),
                old.validators.last_modified.clone()
            )
        );

        let error = || "HTTP 503".to_owned();
        let l = refreshed(Outcome::Failed { error: error() }, None, Some(&old));
        assert_eq!(l.refresh, Some(Refresh::Failed));
        assert_eq!((l.file.as_deref(), l.bytes), (Some("p0.json"), 5));
        assert_eq!(
            (l.error.as_deref(), l.etag.as_deref()),
            (Some("HTTP 503"), Some("\"a\""))
        );
        // A batch that had no file has none to keep.
        let l = refreshed(Outcome::Failed { error: error() }, None, None);
        assert_eq!((l.file, l.refresh), (None, Some(Refresh::Failed)));
    }

    #[test]
    fn a_torn_last_line_goes_before_anything_is_appended() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("p0.json"), b"1234567").unwrap();
        let mut m = manifest::Manifest::open(dir.path()).unwrap();
        m.record(&Entry::new(0, &saved(0, "\"0\""))).unwrap();
        m.flush().unwrap();
        let path = dir.path().join(manifest::FILE_NAME);
        let whole = fs::read_to_string(&path).unwrap();
        fs::write(&path, format!("{whole}{{\"index\":0,\"sta")).unwrap();
        let slice = Slice {
            shard: Shard::WHOLE,
            total: Some(1),
        };
        let batches = read_stored(dir.path(), slice).unwrap();
        assert_eq!(batches.lines, 1);
        assert_eq!(fs::read_to_string(&path).unwrap(), whole);
        // A tidy manifest is left as it is.
        let before = fs::metadata(&path).unwrap().ino();
        assert_eq!(read_stored(dir.path(), slice).unwrap().lines, 1);
        assert_eq!(fs::metadata(&path).unwrap().ino(), before);
    }

    #[test]
    fn what_was_stored_comes_from_the_last_line_of_each_batch_and_old_lines_go() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("p0.json"), b"12345").unwrap();
        fs::write(dir.path().join("p1.json"), b"1234567").unwrap();
        let mut m = manifest::Manifest::open(dir.path()).unwrap();
        let mut first_line = Entry::new(0, &saved(0, "\"old\""));
        first_line.bytes = 3;
        m.record(&first_line).unwrap();
        m.record(&Entry::new(0, &saved(1, "\"1\""))).unwrap();
        let again = report(
            0,
            Outcome::Unchanged {
                file: "p0.json".into(),
            },
            Some("\"new\""),
        );
        m.record(&line(
            Entry::new(0, &again),
            &again,
            Some(&stored("\"old\"")),
        ))
        .unwrap();
        m.flush().unwrap();
        let slice = Slice {
            shard: Shard::WHOLE,
            total: Some(2),
        };
        let mut batches = read_stored(dir.path(), slice).unwrap();
        let zero = batches.take(0).unwrap();
        assert_eq!(
            (zero.bytes, zero.validators.etag.as_deref()),
            (5, Some("\"new\""))
        );
        assert!(batches.take(0).is_none(), "taken once");
        assert_eq!(batches.take(1).unwrap().bytes, 7);
        let indices: Vec<u64> = manifest::read(dir.path())
            .unwrap()
            .map(|e| e.index)
            .collect();
        assert_eq!(indices, [1, 0], "one line a batch, the last");

        // A refresh that reached batch 0 only: its old line goes, batch 1's stays.
        let mut appended = batches.appended();
        let mut m = manifest::Manifest::open(dir.path()).unwrap();
        m.record(&Entry::new(1, &saved(0, "\"3\""))).unwrap();
        m.flush().unwrap();
        appended.note(0);
        appended.tidy(dir.path()).unwrap();
        let lines: Vec<(u64, Option<String>)> = manifest::read(dir.path())
            .unwrap()
            .map(|e| (e.index, e.etag))
            .collect();
        assert_eq!(
            lines,
            [(1, Some("\"1\"".into())), (0, Some("\"3\"".into()))]
        );

        // A batch with no line yet: the run is not finished.
        let three = Slice {
            shard: Shard::WHOLE,
            total: Some(3),
        };
        let err = read_stored(dir.path(), three).unwrap_err().to_string();
        assert!(
            err.contains("1 of its 3 batches have no manifest line"),
            "{err}"
        );
    }
}
