//! What an earlier run left in the output directory, and what this run makes of it:
//! start fresh, start over (`--overwrite`), continue (`--resume`) or fetch only the
//! failures again (`--retry-failed`).
//!
//! `run.json` records the plan of the run in a directory so that a resume cannot mix
//! two plans; the manifest says which batches are done.

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};
use shared::template::Template;

use crate::chain::{self, Open};
use crate::error::UsageError;
use crate::index_set::IndexSet;
use crate::manifest;
use crate::refresh;
use crate::request::{BodyFlag, RequestText};
use crate::source::Filter;

/// File name of the plan record inside the output directory.
pub const RECORD_FILE: &str = "run.json";

/// The plan of a run, as recorded in `run.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `template`, `builtin` or `urls`.
    pub target: String,
    /// URL template (template runs) or list path (URL-list runs).
    pub source: Option<String>,
    /// `START..END` of a range plan.
    pub range: Option<String>,
    /// Items per batch of a range plan.
    pub batch: Option<u64>,
    /// File name template.
    pub name: String,
    /// `K/M` when the run is one shard of the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// Whether server certificates went unchecked (`--insecure`). Not part of the
    /// plan: a resume may change it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// The method of every request, when it is not GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The body template of `--data` (an `@FILE` read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// The body template of `--data-json` (an `@FILE` read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_json: Option<String>,
    /// `--follow-next`: each batch is a chain of pages, linked as this says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_next: Option<String>,
    /// `--max-pages`: pages one chain fetches at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pages: Option<u64>,
}

impl RunRecord {
    /// The plan alone, without how it was fetched.
    pub fn plan(&self) -> RunRecord {
        RunRecord {
            insecure: false,
            ..self.clone()
        }
    }

    /// The method and body recorded.
    pub fn request(&self) -> RequestText {
        let body = match (&self.data, &self.data_json) {
            (_, Some(json)) => Some((BodyFlag::Json, json.clone())),
            (Some(data), None) => Some((BodyFlag::Data, data.clone())),
            (None, None) => None,
        };
        RequestText {
            method: self.method.clone().unwrap_or_else(|| "GET".to_owned()),
            body,
        }
    }

    /// `request` as this record holds it: the method only when it is not GET.
    pub fn with_request(self, request: &RequestText) -> RunRecord {
        let body = |flag: BodyFlag| {
            request
                .body
                .as_ref()
                .filter(|(f, _)| *f == flag)
                .map(|(_, text)| text.clone())
        };
        RunRecord {
            method: (request.method != "GET").then(|| request.method.clone()),
            data: body(BodyFlag::Data),
            data_json: body(BodyFlag::Json),
            ..self
        }
    }
}

/// How this run treats an earlier one in the same directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// There must be none.
    Fresh,
    /// Remove it first.
    Overwrite,
    /// Fetch only what it has not recorded.
    Resume,
    /// Fetch only what it recorded as failed.
    RetryFailed,
    /// Fetch all of it again, each batch on the condition that it changed.
    Refresh,
}

impl Mode {
    /// The flag that asks for this mode (`--out` for a fresh run).
    pub fn flag(self) -> &'static str {
        match self {
            Mode::Fresh => "--out",
            Mode::Overwrite => "--overwrite",
            Mode::Resume => "--resume",
            Mode::RetryFailed => "--retry-failed",
            Mode::Refresh => "--refresh",
        }
    }
}

/// Makes `dir` ready for this run and says which batches it fetches (of `slice`, for
/// a refresh), and, for a `--follow-next` run, which chains an earlier run left open
/// (their bare cursors rendered into `template`, the run's `--url`). `dir` exists and
/// is writable.
pub fn prepare(
    dir: &Path,
    mode: Mode,
    record: &RunRecord,
    template: Option<&Template>,
    slice: refresh::Slice,
) -> Result<(Filter, Vec<Open>), UsageError> {
    let shown = dir.display();
    let io_err =
        |what: &str, e: io::Error| UsageError::new("--out", format!("{what} {shown}: {e}"));
    // Both files are opened by name later: a link there could point outside `dir`.
    for name in [manifest::FILE_NAME, RECORD_FILE] {
        if fs::symlink_metadata(dir.join(name)).is_ok_and(|m| m.is_symlink()) {
            return Err(UsageError::new(
                "--out",
                format!(
                    "{} is a symbolic link: refusing to follow it (remove it, or use another directory)",
                    dir.join(name).display()
                ),
            ));
        }
    }
    let earlier = manifest::holds_run(dir) || fs::symlink_metadata(dir.join(RECORD_FILE)).is_ok();
    let mut open = Vec::new();
    let filter = match mode {
        Mode::Fresh if earlier => {
            return Err(UsageError::new(
                "--out",
                format!(
                    "{shown} already holds a run: pass --resume to continue it, --overwrite to start over, or use another directory"
                ),
            ));
        }
        Mode::Fresh => Filter::All,
        Mode::Overwrite => {
            if manifest::holds_run(dir) {
                manifest::discard(dir).map_err(|e| io_err("cannot clear", e))?;
            }
            Filter::All
        }
        Mode::Resume | Mode::RetryFailed | Mode::Refresh => {
            let flag = mode.flag();
            if !earlier {
                return Err(UsageError::new(
                    flag,
                    format!("{shown} holds no run to continue"),
                ));
            }
            check_same_plan(dir, record, flag)?;
            match mode {
                Mode::Refresh if !manifest::holds_run(dir) => {
                    return Err(UsageError::new(
                        flag,
                        format!("{shown} holds no finished run to refresh"),
                    ));
                }
                Mode::Refresh => Filter::Refresh(refresh::read_stored(dir, slice)?),
                _ if record.follow_next.is_some() => {
                    let retry = mode == Mode::RetryFailed;
                    let (filter, chains) = chain::scan::sort_out(dir, retry, template)
                        .map_err(|e| io_err("cannot read the manifest in", e))?;
                    open = chains;
                    filter
                }
                _ => {
                    let (done, failed) = sort_out(dir, mode)
                        .map_err(|e| io_err("cannot read the manifest in", e))?;
                    if mode == Mode::Resume {
                        Filter::Skip(done)
                    } else {
                        Filter::Only(failed)
                    }
                }
            }
        }
    };
    let text = serde_json::to_string_pretty(record)
        .map_err(|e| io_err("cannot record the plan in", e.into()))?;
    outdir::write_atomic(dir, RECORD_FILE, text.as_bytes())
        .map_err(|e| io_err("cannot write to", e))?;
    manifest::remove_temp_files(dir).map_err(|e| io_err("cannot clean", e))?;
    Ok((filter, open))
}

fn check_same_plan(dir: &Path, record: &RunRecord, flag: &'static str) -> Result<(), UsageError> {
    let path = dir.join(RECORD_FILE);
    let earlier: Option<RunRecord> = read_record(&path).ok();
    match earlier {
        Some(earlier) if earlier.plan() == record.plan() => Ok(()),
        Some(earlier) => Err(UsageError::new(
            flag,
            format!(
                "{} holds a run of another plan ({}): {}; give the same --url/--urls, --range, --batch, --name and --shard (and -X, --data, --data-json), or none of them to take the run's own",
                dir.display(),
                describe(&earlier),
                differences(&earlier, record).join(", ")
            ),
        )),
        None => Err(UsageError::new(
            flag,
            format!(
                "{} has no readable {RECORD_FILE}: it was not written by this tool",
                dir.display()
            ),
        )),
    }
}

/// How `now` differs from `earlier`, flag by flag: `--range 0..7 here, 0..100 in run.json`.
pub fn differences(earlier: &RunRecord, now: &RunRecord) -> Vec<String> {
    let show = |v: Option<String>| v.unwrap_or_else(|| "none".to_owned());
    let fields = [
        (
            "the target",
            Some(earlier.target.clone()),
            Some(now.target.clone()),
        ),
        ("--url/--urls", earlier.source.clone(), now.source.clone()),
        ("--range", earlier.range.clone(), now.range.clone()),
        (
            "--batch",
            earlier.batch.map(|b| b.to_string()),
            now.batch.map(|b| b.to_string()),
        ),
        ("--name", Some(earlier.name.clone()), Some(now.name.clone())),
        ("--shard", earlier.shard.clone(), now.shard.clone()),
        (
            "-X/--request",
            Some(earlier.request().method),
            Some(now.request().method),
        ),
        (
            "--follow-next",
            earlier.follow_next.clone(),
            now.follow_next.clone(),
        ),
        (
            "--max-pages",
            earlier.max_pages.map(|n| n.to_string()),
            now.max_pages.map(|n| n.to_string()),
        ),
    ];
    let mut differences: Vec<String> = fields
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(flag, a, b)| format!("{flag} {} here, {} in {RECORD_FILE}", show(b), show(a)))
        .collect();
    // Bodies may hold secrets and be long: told apart by their size alone.
    let size = |v: &Option<String>| v.as_ref().map(|b| format!("a body of {} bytes", b.len()));
    let bodies = [
        ("--data", &earlier.data, &now.data),
        ("--data-json", &earlier.data_json, &now.data_json),
    ];
    for (flag, was, is) in bodies {
        differences.push(match (was, is) {
            _ if was == is => continue,
            (Some(a), Some(b)) if a.len() == b.len() => {
                format!("{flag} gives another body of the same size as {RECORD_FILE}'s")
            }
            _ => format!(
                "{flag} {} here, {} in {RECORD_FILE}",
                show(size(is)),
                show(size(was))
            ),
        });
    }
    differences
}

/// The run record at `path` (a symbolic link there is an error, never followed).
pub fn read_record(path: &Path) -> io::Result<RunRecord> {
    let mut text = String::new();
    outdir::open_nofollow(path)?.read_to_string(&mut text)?;
    serde_json::from_str(&text).map_err(io::Error::from)
}

/// The plan in a few words, for messages.
pub fn describe(r: &RunRecord) -> String {
    let mut parts = vec![r.target.clone()];
    parts.extend(r.source.clone());
    parts.extend(r.range.as_ref().map(|x| format!("range {x}")));
    parts.extend(r.batch.map(|b| format!("batch {b}")));
    parts.push(format!("name {}", r.name));
    parts.extend(r.shard.as_ref().map(|s| format!("shard {s}")));
    parts.extend(r.method.as_ref().map(|m| format!("method {m}")));
    parts.extend(r.follow_next.as_ref().map(|f| format!("follow-next {f}")));
    parts.extend(r.max_pages.map(|n| format!("max-pages {n}")));
    parts.join(", ")
}

/// Rewrites the manifest without a torn last line (and, for a retry, without the
/// failures that are about to be fetched again); returns the done and failed indices.
fn sort_out(dir: &Path, mode: Mode) -> io::Result<(IndexSet, IndexSet)> {
    let mut done = IndexSet::default();
    let mut failed = IndexSet::default();
    let keep_failed = mode == Mode::Resume;
    if !manifest::holds_run(dir) {
        return Ok((done, failed));
    }
    manifest::rewrite(dir, |entry| {
        if entry.skipped.is_some() {
            // Left out on purpose (robots.txt): done, for a resume and a retry alike.
            done.insert(entry.index);
            return true;
        }
        if let Some(file) = &entry.file {
            // A batch is done only while its file is there, whole: a deleted or altered
            // file is fetched again.
            // A link is never one of ours: it is replaced, not followed.
            let intact = fs::symlink_metadata(dir.join(file))
                .is_ok_and(|m| m.is_file() && m.len() == entry.bytes);
            if intact {
                done.insert(entry.index);
            }
            intact
        } else {
            failed.insert(entry.index);
            keep_failed
        }
    })?;
    if keep_failed {
        // A batch that failed is done for --resume: it is in the manifest.
        done.extend(&failed);
    }
    Ok((done, failed))
}
