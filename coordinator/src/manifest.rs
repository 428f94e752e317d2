//! `manifest.jsonl`: one JSON line per finished batch, written by the coordinator alone,
//! after the batch's file is in place, so a line always stands for a whole file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use shared::protocol::{JobReport, Outcome};

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
    /// What went wrong, when not stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Entry {
    /// The line for `report`, fetched by `worker`.
    pub fn new(worker: u32, report: &JobReport) -> Entry {
        let (file, error) = match &report.outcome {
            Outcome::Saved { file } => (Some(file.clone()), None),
            Outcome::Fetched { .. } => (None, None),
            Outcome::Failed { error } => (None, Some(error.clone())),
        };
        Entry {
            index: report.batch.index,
            start: report.batch.start,
            end: report.batch.end,
            url: report.url.clone(),
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
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(FILE_NAME))?;
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

/// Reads every complete line of `dir`'s manifest; a torn last line is skipped.
pub fn read(dir: &Path) -> io::Result<impl Iterator<Item = Entry>> {
    let file = File::open(dir.join(FILE_NAME))?;
    Ok(BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str(&line).ok()))
}

/// Rewrites the manifest with the entries `keep` accepts, through a temp file and a
/// rename; unreadable lines (a torn last line) are dropped.
pub fn rewrite(dir: &Path, mut keep: impl FnMut(&Entry) -> bool) -> io::Result<()> {
    let temp = worker::temp_path(dir, FILE_NAME);
    let result = (|| {
        let mut out = BufWriter::new(File::create(&temp)?);
        for entry in read(dir)? {
            if keep(&entry) {
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

/// Whether `dir` holds the manifest of an earlier run.
pub fn holds_run(dir: &Path) -> bool {
    fs::metadata(dir.join(FILE_NAME)).is_ok_and(|m| m.len() > 0)
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
        if entry.file_name().to_str().is_some_and(worker::is_temp_file) {
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
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE_NAME))
            .unwrap();
        f.write_all(b"{\"index\":2,\"sta").unwrap();
        let entries: Vec<_> = read(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].file.as_deref(), Some("b0.json"));
        assert_eq!(entries[1].error.as_deref(), Some("HTTP 404 Not Found"));
        assert_eq!(entries[1].worker, 1);
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
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE_NAME))
            .unwrap();
        f.write_all(b"{\"index\":9").unwrap();
        rewrite(dir.path(), |e| e.file.is_some()).unwrap();
        let text = fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.ends_with('\n'));
        let kept: Vec<u64> = read(dir.path()).unwrap().map(|e| e.index).collect();
        assert_eq!(kept, [0, 2]);
    }

    #[test]
    fn names_that_leave_the_directory_are_not_plain() {
        assert!(is_plain_name("batch0-10.json"));
        for bad in ["", ".", "..", "../x", "/etc/passwd", "a\\b"] {
            assert!(!is_plain_name(bad), "{bad}");
        }
    }
}
