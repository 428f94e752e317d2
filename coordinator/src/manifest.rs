//! `manifest.jsonl`: one JSON line per finished batch, written by the coordinator alone,
//! after the batch's file is in place, so a line always stands for a whole file.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use shared::chain::ChainEnd;
use shared::http_url::redact_password;
use shared::protocol::{JobReport, Outcome};

use crate::index_set::IndexSet;
use crate::lines::{self, Line};
use crate::messages;

/// The manifest's file name inside the output directory.
pub const FILE_NAME: &str = "manifest.jsonl";

/// One line of the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Position of the batch in the plan.
    pub index: u64,
    /// First item (inclusive).
    pub start: u64,
    /// Last item (exclusive).
    pub end: u64,
    /// URL fetched.
    pub url: String,
    /// HTTP status of the last response, if any.
    pub status: Option<u16>,
    /// Body bytes.
    pub bytes: u64,
    /// Time from first request to stored file.
    pub elapsed_ms: f64,
    /// Requests made.
    pub attempts: u32,
    /// Worker slot that fetched it.
    pub worker: u32,
    /// When the coordinator recorded it, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub at_ms: u64,
    /// File name inside the output directory, when stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// What went wrong, when not stored (or, on a refresh that failed, when the file
    /// stored before is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Under `--follow-next`: the page's number in its chain, from 1 (the chain is
    /// `index`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u64>,
    /// The next page it names, when it names one (a password shown as `***`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// The bare cursor it named for `{cursor}`, when it named one rather than a URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// Why its chain ends here, when it does: `last`, `loop` or `max-pages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_end: Option<ChainEnd>,
    /// Why the batch was not fetched, on purpose (`robots`): it is done, and no
    /// failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// The `ETag` the file came with, for the next `--refresh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The `Last-Modified` the file came with, for the next `--refresh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// What a `--refresh` made of the batch; lines of other runs have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<Refresh>,
}

/// What a `--refresh` made of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Refresh {
    /// A new body (200) replaced the file.
    Changed,
    /// 304 Not Modified: the file was kept as it is.
    Unchanged,
    /// No answer would do: the file stored before (if any) was kept as it is.
    Failed,
}

impl Entry {
    /// The line for `report`, fetched by `worker`.
    pub fn new(worker: u32, report: &JobReport) -> Entry {
        let (mut file, mut error, mut skipped) = (None, None, None);
        match &report.outcome {
            Outcome::Saved { file: name } | Outcome::Unchanged { file: name } => {
                file = Some(name.clone())
            }
            Outcome::Fetched { .. } => {}
            Outcome::Failed { error: e } => error = Some(e.clone()),
            Outcome::Skipped { why } => skipped = Some(why.as_str().to_owned()),
        }
        let next = report.chain.as_ref().and_then(|c| c.next.as_ref());
        // A failure's validators describe no file.
        let validators = match &report.outcome {
            Outcome::Failed { .. } => Default::default(),
            _ => report.validators.clone(),
        };
        Entry {
            index: report.batch.index,
            start: report.batch.start,
            end: report.batch.end,
            // The manifest is shown and shared: a password in the URL stays out of it.
            url: redact_password(&report.url).into_owned(),
            status: report.status,
            bytes: report.bytes,
            elapsed_ms: report.elapsed_us as f64 / 1000.0,
            attempts: report.attempts,
            worker,
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            file,
            error,
            page: report.chain.as_ref().map(|c| c.page),
            next: next.map(|n| redact_password(&n.url).into_owned()),
            next_cursor: next.and_then(|n| n.cursor.clone()),
            chain_end: report.chain.as_ref().and_then(|c| c.end),
            skipped,
            etag: validators.etag,
            last_modified: validators.last_modified,
            refresh: None,
        }
    }
}

/// Appends entries to the manifest.
pub struct Manifest {
    out: BufWriter<File>,
}

impl Manifest {
    /// Opens `dir/manifest.jsonl` for appending.
    pub fn open(dir: &Path) -> io::Result<Manifest> {
        let file = outdir::open_append_nofollow(&dir.join(FILE_NAME))?;
        Ok(Manifest {
            out: BufWriter::with_capacity(64 * 1024, file),
        })
    }

    /// Adds one line (buffered until [`Manifest::flush`]).
    pub fn record(&mut self, entry: &Entry) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, entry)?;
        self.out.write_all(b"\n")
    }

    /// Writes buffered lines to the file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Longest manifest line read, in bytes: a line holds one URL (at most
/// 64 KiB) and a short error, so anything longer was not
/// written by this tool and is skipped like any other unreadable line.
pub const MAX_LINE: usize = 1 << 20;

/// Reads every readable line of `dir`'s manifest. A line that is not valid UTF-8, not
/// an entry or too long is skipped and counted (and the count told once on stderr when
/// the reading ends), rather than ending the reading there: the lines after it still
/// count. A torn last line, as a crash leaves it, is skipped silently.
pub fn read(dir: &Path) -> io::Result<Entries> {
    let path = dir.join(FILE_NAME);
    let file = outdir::open_nofollow(&path)?;
    Ok(Entries {
        reader: BufReader::new(file),
        path,
        buf: Vec::new(),
        line: 0,
        skipped: 0,
        first_skipped: 0,
        ended: false,
        warn: true,
        untidy: false,
    })
}

/// The entries of a manifest, in file order.
pub struct Entries {
    reader: BufReader<File>,
    path: PathBuf,
    buf: Vec<u8>,
    /// Lines read so far.
    line: u64,
    /// Unreadable lines so far, and the number of the first.
    skipped: u64,
    first_skipped: u64,
    ended: bool,
    /// Whether unreadable lines are told on stderr at the end.
    warn: bool,
    /// Whether the reading met a line with no end or a read error.
    untidy: bool,
}

impl Entries {
    /// These entries, read without a word about unreadable lines: for a reading that
    /// another one, which tells, follows.
    pub fn quietly(mut self) -> Entries {
        self.warn = false;
        self
    }

    /// The line number of the entry read last.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// Whether every line read so far was a whole, readable entry: lines may be
    /// appended to the manifest as it is.
    pub fn is_tidy(&self) -> bool {
        !self.untidy && self.skipped == 0
    }

    fn end(&mut self) -> Option<Entry> {
        if !self.ended && self.warn && self.skipped > 0 {
            messages::warn(format_args!(
                "{}: skipped {} unreadable line{} (the first is line {}); their batches count as not done",
                self.path.display(),
                self.skipped,
                if self.skipped == 1 { "" } else { "s" },
                self.first_skipped
            ));
        }
        self.ended = true;
        None
    }
}

impl Iterator for Entries {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        while !self.ended {
            // A read error ends the reading as the end of the file would.
            let read = lines::read_capped(&mut self.reader, MAX_LINE, &mut self.buf);
            let line = match read {
                Ok(Line::End) => break,
                Err(_) => {
                    self.untidy = true;
                    break;
                }
                Ok(line) => line,
            };
            self.line += 1;
            // A line with no end: what is appended next would join it.
            self.untidy |= line == Line::Unended;
            let entry = match line {
                Line::TooLong => None,
                _ => std::str::from_utf8(&self.buf)
                    .ok()
                    .and_then(|text| serde_json::from_str(text).ok()),
            };
            match entry {
                Some(entry) => return Some(entry),
                None if line == Line::Unended => {}
                None => {
                    if self.skipped == 0 {
                        self.first_skipped = self.line;
                    }
                    self.skipped += 1;
                }
            }
        }
        self.end()
    }
}

/// Rewrites the manifest with the entries `keep` accepts, through a temp file and a
/// rename; unreadable lines (a torn last line) are dropped, and so is every line of a
/// batch that a later line stands for (a `--refresh` appends a batch's new line after
/// its old one): `keep` sees the last line of each batch only.
pub fn rewrite(dir: &Path, mut keep: impl FnMut(&Entry) -> bool) -> io::Result<()> {
    let superseded = superseded_lines(dir)?;
    rewrite_lines(dir, |line, entry| !superseded.contains(line) && keep(entry))
}

/// Rewrites the manifest with the entries `keep` accepts, given with their line
/// numbers (from 1), through a temp file and a rename; unreadable lines are dropped.
pub fn rewrite_lines(dir: &Path, mut keep: impl FnMut(u64, &Entry) -> bool) -> io::Result<()> {
    let temp = outdir::temp_path(dir, FILE_NAME);
    let result = (|| {
        let mut out = BufWriter::new(outdir::create_fresh(&temp)?);
        let mut entries = read(dir)?;
        while let Some(entry) = entries.next() {
            if keep(entries.line(), &entry) {
                serde_json::to_writer(&mut out, &entry)?;
                out.write_all(b"\n")?;
            }
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        fs::rename(&temp, dir.join(FILE_NAME))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// The numbers of the lines of `dir`'s manifest whose batch has a later line (chain
/// pages, which share their chain's index, aside). Only
/// batches seen twice are held one by one: a manifest without such lines costs the runs
/// of its indices.
fn superseded_lines(dir: &Path) -> io::Result<IndexSet> {
    let mut seen = IndexSet::default();
    // The last line of each batch seen more than once.
    let mut last: HashMap<u64, u64> = HashMap::new();
    let mut superseded = IndexSet::default();
    let mut entries = read(dir)?.quietly();
    while let Some(entry) = entries.next() {
        // A chain has a line per page under one index: its own scan sorts them out.
        if entry.page.is_some() {
            continue;
        }
        if !seen.contains(entry.index) {
            seen.insert(entry.index);
        } else if let Some(earlier) = last.insert(entry.index, entries.line()) {
            superseded.insert(earlier);
        }
    }
    if last.is_empty() {
        return Ok(superseded);
    }
    // The first lines of those batches, whose numbers were not kept.
    let mut firsts = IndexSet::default();
    let mut entries = read(dir)?.quietly();
    while let Some(entry) = entries.next() {
        if entry.page.is_none() && last.contains_key(&entry.index) && !firsts.contains(entry.index)
        {
            firsts.insert(entry.index);
            superseded.insert(entries.line());
        }
    }
    Ok(superseded)
}

/// Whether the file of `entry` is in `dir`, whole: a plain file of the size its line
/// says, under a plain name (a link is never one of ours).
pub fn holds_file(dir: &Path, entry: &Entry) -> bool {
    entry.file.as_deref().is_some_and(|file| {
        is_plain_name(file)
            && fs::symlink_metadata(dir.join(file))
                .is_ok_and(|m| m.is_file() && m.len() == entry.bytes)
    })
}

/// Whether `dir` holds the manifest of an earlier run (or anything else by that name).
pub fn holds_run(dir: &Path) -> bool {
    fs::symlink_metadata(dir.join(FILE_NAME)).is_ok_and(|m| m.len() > 0 || m.is_symlink())
}

/// Removes an earlier run: every file its manifest lists, then the manifest.
pub fn discard(dir: &Path) -> io::Result<()> {
    for entry in read(dir)? {
        if let Some(file) = entry.file.filter(|f| is_plain_name(f)) {
            match fs::remove_file(dir.join(file)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    fs::remove_file(dir.join(FILE_NAME))
}

/// Removes temp files that a killed worker may have left.
pub fn remove_temp_files(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_str().is_some_and(outdir::is_temp_file) {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// A name that stays inside the directory it is joined to.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::plan::Batch;
    use std::fs::OpenOptions;

    /// Appends raw bytes to the manifest in `dir`, as a crash or an editor might.
    fn append(dir: &Path, bytes: &[u8]) {
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join(FILE_NAME))
            .unwrap();
        f.write_all(bytes).unwrap();
    }

    fn report(i: u64, ok: bool) -> JobReport {
        JobReport {
            batch: Batch {
                index: i,
                start: i * 10,
                end: i * 10 + 10,
            },
            url: format!("http://h/?start={}", i * 10),
            status: Some(if ok { 200 } else { 404 }),
            bytes: 10,
            elapsed_us: 1500,
            attempts: 1,
            outcome: if ok {
                Outcome::Saved {
                    file: format!("b{i}.json"),
                }
            } else {
                Outcome::Failed {
                    error: "HTTP 404 Not Found".into(),
                }
            },
            chain: None,
            validators: shared::refresh::Validators::new(Some("\"e1\""), None),
        }
    }

    #[test]
    fn entries_round_trip_and_a_torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Manifest::open(dir.path()).unwrap();
        m.record(&Entry::new(0, &report(0, true))).unwrap();
        m.record(&Entry::new(1, &report(1, false))).unwrap();
        m.flush().unwrap();
        drop(m);
        append(dir.path(), b"{\"index\":2,\"sta");
        let entries: Vec<_> = read(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].file.as_deref(), Some("b0.json"));
        assert_eq!(entries[0].etag.as_deref(), Some("\"e1\""));
        assert_eq!(entries[1].error.as_deref(), Some("HTTP 404 Not Found"));
        assert_eq!(
            entries[1].etag, None,
            "a failure's validators describe no file"
        );
        // A line written before validators were stored reads as one without them.
        let old = r#"{"index":3,"start":0,"end":1,"url":"u","status":200,"bytes":1,"elapsed_ms":1.0,"attempts":1,"worker":0,"file":"f"}"#;
        let old: Entry = serde_json::from_str(old).unwrap();
        assert_eq!(
            (old.etag, old.last_modified, old.refresh),
            (None, None, None)
        );
        assert_eq!(entries[1].worker, 1);
    }

    #[test]
    fn a_bad_line_in_the_middle_is_skipped_and_counted_not_the_lines_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Manifest::open(dir.path()).unwrap();
        m.record(&Entry::new(0, &report(0, true))).unwrap();
        m.flush().unwrap();
        drop(m);
        append(dir.path(), b"{\"index\":\xff\xfe}\nnot json\n");
        append(dir.path(), &vec![b'x'; MAX_LINE + 10]);
        append(dir.path(), b"\n");
        let mut m = Manifest::open(dir.path()).unwrap();
        for i in 1..4 {
            m.record(&Entry::new(0, &report(i, true))).unwrap();
        }
        m.flush().unwrap();
        let mut entries = read(dir.path()).unwrap();
        let indices: Vec<u64> = entries.by_ref().map(|e| e.index).collect();
        assert_eq!(indices, [0, 1, 2, 3]);
        assert_eq!(entries.skipped, 3);
        assert_eq!(entries.first_skipped, 2);
    }

    #[test]
    fn discard_removes_listed_files_and_the_manifest_only() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("b0.json"), b"x").unwrap();
        fs::write(dir.path().join("keep.txt"), b"x").unwrap();
        let mut m = Manifest::open(dir.path()).unwrap();
        m.record(&Entry::new(0, &report(0, true))).unwrap();
        m.flush().unwrap();
        assert!(holds_run(dir.path()));
        discard(dir.path()).unwrap();
        assert!(!holds_run(dir.path()));
        assert!(!dir.path().join("b0.json").exists());
        assert!(dir.path().join("keep.txt").exists());
    }

    #[test]
    fn rewrite_keeps_what_is_asked_and_drops_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Manifest::open(dir.path()).unwrap();
        for i in 0..4 {
            m.record(&Entry::new(0, &report(i, i % 2 == 0))).unwrap();
        }
        m.flush().unwrap();
        drop(m);
        append(dir.path(), b"{\"index\":9");
        rewrite(dir.path(), |e| e.file.is_some()).unwrap();
        let text = fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.ends_with('\n'));
        let kept: Vec<u64> = read(dir.path()).unwrap().map(|e| e.index).collect();
        assert_eq!(kept, [0, 2]);
    }

    #[test]
    fn the_rewrite_keeps_the_last_line_of_a_batch_recorded_more_than_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Manifest::open(dir.path()).unwrap();
        for (i, worker) in [(0, 0), (1, 0), (0, 1), (2, 0), (0, 2), (1, 3)] {
            m.record(&Entry::new(worker, &report(i, true))).unwrap();
        }
        m.flush().unwrap();
        let mut seen = Vec::new();
        rewrite(dir.path(), |e| {
            seen.push((e.index, e.worker));
            true
        })
        .unwrap();
        assert_eq!(seen, [(2, 0), (0, 2), (1, 3)]);
        let kept: Vec<(u64, u32)> = read(dir.path())
            .unwrap()
            .map(|e| (e.index, e.worker))
            .collect();
        assert_eq!(kept, seen);
    }

    #[test]
    fn the_rewrite_never_writes_through_a_link_planted_at_its_temp_name() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        fs::write(outside.path(), b"precious").unwrap();
        let mut m = Manifest::open(dir.path()).unwrap();
        m.record(&Entry::new(0, &report(0, true))).unwrap();
        m.flush().unwrap();
        std::os::unix::fs::symlink(outside.path(), outdir::temp_path(dir.path(), FILE_NAME))
            .unwrap();
        rewrite(dir.path(), |_| true).unwrap();
        assert_eq!(fs::read(outside.path()).unwrap(), b"precious");
        assert_eq!(read(dir.path()).unwrap().count(), 1);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn a_linked_manifest_is_neither_read_nor_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join(FILE_NAME)).unwrap();
        assert!(Manifest::open(dir.path()).is_err());
        assert!(read(dir.path()).is_err());
        assert!(holds_run(dir.path()));
    }

    #[test]
    fn names_that_leave_the_directory_are_not_plain() {
        assert!(is_plain_name("batch0-10.json"));
        for bad in ["", ".", "..", "../x", "/etc/passwd", "a\\b"] {
            assert!(!is_plain_name(bad), "{bad}");
        }
    }
}
