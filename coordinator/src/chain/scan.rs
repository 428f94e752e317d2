//! Where each chain stands, read back from the manifest: for `--resume` (which chains
//! go on, and from which page), `--retry-failed` (which failed pages are fetched
//! again) and `verify` (which chains are complete).
//!
//! The coordinator writes a chain's lines in page order (page `n + 1` exists only once
//! page `n` was recorded), so the manifest is read in one pass, a chain at a time in
//! each line's place: its lines must be pages 1, 2, 3, … each with its whole file.
//! The chain stands at the last page of that run of good lines. A line after a gap or
//! a broken file is not taken (its page is fetched again, and its file written anew);
//! a page listed twice, or after the page its chain ended at, counts once.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::Path;

use shared::chain::ChainEnd;
use shared::plan::Batch;
use shared::template::Template;

use super::{Open, url_key};
use crate::index_set::IndexSet;
use crate::manifest::{self, Entry};
use crate::source::Filter;

/// Where one chain stands after the lines read so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// No page of it is taken.
    Empty,
    /// Page `pages` names this next page, and the chain goes on.
    Open {
        /// The next page's URL (as the manifest has it, password shown as `***`).
        next: String,
        /// The bare cursor it came from, if any.
        cursor: Option<String>,
    },
    /// The chain ends at page `pages`.
    Ended(ChainEnd),
    /// Page `pages + 1` failed.
    Failed {
        /// Its URL.
        url: String,
        /// What went wrong.
        error: String,
    },
}

/// Why a line of a chain was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A page the chain has a line for already.
    Duplicate,
    /// A page after the one its chain ended (or failed) at.
    AfterEnd,
    /// A page after a missing one: the chain's `pages + 1` is not there.
    Gap,
    /// The page's file is missing or changed.
    FileBad(String),
    /// A failed page, dropped to be fetched again (`--retry-failed`).
    Retried,
}

/// One chain, as its lines read so far say.
#[derive(Debug, Clone)]
pub struct Track {
    /// The chain's batch.
    pub batch: Batch,
    /// The last page taken, from 1 (0 for none).
    pub pages: u64,
    /// Where it stands.
    pub state: State,
    /// Why a line was not taken, at the first that was not: the chain's later lines
    /// are not taken either.
    pub broken: Option<(u64, Problem)>,
    /// The URL of the page whose file is missing or changed, when that broke it.
    bad_url: Option<String>,
    /// The URLs of the pages taken, as [`url_key`]s, for a chain that goes on.
    seen: HashSet<u64>,
}

impl Track {
    /// The URL the chain would be fetched from next, when the manifest says it (not
    /// for a chain with no page yet, whose first page the plan gives).
    pub fn resume_url(&self) -> Option<&str> {
        if let Some(url) = &self.bad_url {
            return Some(url);
        }
        match &self.state {
            State::Open { next, .. } => Some(next),
            State::Failed { url, .. } => Some(url),
            State::Empty | State::Ended(_) => None,
        }
    }
}

/// The chains of a manifest, fed its lines in order.
#[derive(Debug, Default)]
pub struct Scan {
    tracks: HashMap<u64, Track>,
    /// Whether failed pages are dropped, to be fetched again.
    retry_failed: bool,
}

impl Scan {
    /// A scan for `--retry-failed` (failed pages dropped) or not.
    pub fn new(retry_failed: bool) -> Scan {
        Scan {
            tracks: HashMap::new(),
            retry_failed,
        }
    }

    /// Takes in one manifest line, whose file `file_ok` checks (only when the line is
    /// a stored page that would be taken); whether it is taken, or why not.
    pub fn feed(
        &mut self,
        entry: &Entry,
        file_ok: impl FnOnce(&str) -> Result<(), String>,
    ) -> Result<(), Problem> {
        let batch = Batch {
            index: entry.index,
            start: entry.start,
            end: entry.end,
        };
        let track = self.tracks.entry(entry.index).or_insert_with(|| Track {
            batch,
            pages: 0,
            state: State::Empty,
            broken: None,
            bad_url: None,
            seen: HashSet::new(),
        });
        // A line with no page (a list line refused before any fetch) is page 1.
        let page = entry.page.unwrap_or(1);
        let expected = track.pages + 1;
        if page < expected {
            return Err(Problem::Duplicate);
        }
        if matches!(track.state, State::Ended(_) | State::Failed { .. }) {
            return Err(Problem::AfterEnd);
        }
        if track.broken.is_some() {
            return Err(Problem::Gap);
        }
        if page > expected {
            track.broken = Some((expected, Problem::Gap));
            return Err(Problem::Gap);
        }
        let (file, error) = (&entry.file, &entry.error);
        let Some(file) = file else {
            track.state = State::Failed {
                url: entry.url.clone(),
                error: error.clone().unwrap_or_default(),
            };
            track.seen.clear();
            return if self.retry_failed {
                Err(Problem::Retried)
            } else {
                Ok(())
            };
        };
        if let Err(why) = file_ok(file) {
            let problem = Problem::FileBad(why);
            track.broken = Some((page, problem.clone()));
            track.bad_url = Some(entry.url.clone());
            return Err(problem);
        }
        track.pages = page;
        track.state = match (entry.chain_end, &entry.next) {
            (None, Some(next)) => {
                track.seen.insert(url_key(&entry.url));
                State::Open {
                    next: next.clone(),
                    cursor: entry.next_cursor.clone(),
                }
            }
            (end, _) => {
                track.seen = HashSet::new();
                State::Ended(end.unwrap_or(ChainEnd::Last))
            }
        };
        Ok(())
    }

    /// The chains read, by chain index.
    pub fn into_tracks(self) -> HashMap<u64, Track> {
        self.tracks
    }
}

/// Squares the manifest in `dir` of a `--follow-next` run with a resume (or, with
/// `retry_failed`, a retry of the failed pages): rewrites it with the lines that stay,
/// and says which chains start afresh and which go on from where. `template` is the
/// run's `--url`, which a bare cursor is rendered into again.
pub fn sort_out(
    dir: &Path,
    retry_failed: bool,
    template: Option<&Template>,
) -> io::Result<(Filter, Vec<Open>)> {
    let mut scan = Scan::new(retry_failed);
    if manifest::holds_run(dir) {
        manifest::rewrite(dir, |entry| {
            let intact = |file: &str| {
                // A link is never one of ours: it is replaced, not followed.
                let whole = fs::symlink_metadata(dir.join(file))
                    .is_ok_and(|m| m.is_file() && m.len() == entry.bytes);
                if whole { Ok(()) } else { Err(String::new()) }
            };
            scan.feed(entry, intact).is_ok()
        })?;
    }
    let mut started = IndexSet::default();
    let mut first_failed = IndexSet::default();
    let mut open = Vec::new();
    for (index, track) in scan.into_tracks() {
        let next_page = track.pages + 1;
        match track.state {
            State::Open { next, cursor } if !retry_failed => {
                started.insert(index);
                let url = match (&cursor, template) {
                    // Rendered again: the manifest's URL has no password.
                    (Some(cursor), Some(template)) => {
                        let values = shared::template::Values {
                            page: next_page,
                            ..track.batch.values()
                        };
                        template.render_cursor(&values, cursor)
                    }
                    _ => next,
                };
                open.push(Open {
                    batch: track.batch,
                    page: next_page,
                    url,
                    seen: track.seen,
                });
            }
            State::Failed { url, .. } if retry_failed => {
                if next_page == 1 {
                    // The plan renders page 1 itself, with its password.
                    first_failed.insert(index);
                } else {
                    open.push(Open {
                        batch: track.batch,
                        page: next_page,
                        url,
                        seen: track.seen,
                    });
                }
            }
            State::Empty => {}
            _ => started.insert(index),
        }
    }
    open.sort_by_key(|o| o.batch.index);
    let filter = if retry_failed {
        Filter::Only(first_failed)
    } else {
        Filter::Skip(started)
    };
    Ok((filter, open))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;
    use shared::chain::{NextPage, PageReport};
    use shared::protocol::{JobReport, Outcome};

    /// The line of page `page` of chain `chain`: stored as `c-p.json` with 3 bytes,
    /// or failed; naming `next`, or ending its chain with `end`.
    fn line(chain: u64, page: u64, next: Option<&str>, end: Option<ChainEnd>) -> Entry {
        let report = JobReport {
            validators: Default::default(),
            batch: Batch::single(chain),
            url: format!("http://h/{chain}?p={page}"),
            status: Some(200),
            bytes: 3,
            elapsed_us: 1,
            attempts: 1,
            outcome: Outcome::Saved {
                file: format!("{chain}-{page}.json"),
            },
            chain: Some(PageReport {
                page,
                next: next.map(|url| NextPage {
                    url: url.to_owned(),
                    cursor: None,
                }),
                end,
            }),
        };
        Entry::new(0, &report)
    }

    fn failed(chain: u64, page: u64) -> Entry {
        Entry {
            file: None,
            error: Some("HTTP 500".into()),
            next: None,
            ..line(chain, page, None, None)
        }
    }

    fn write(dir: &Path, lines: &[Entry]) {
        let mut m = Manifest::open(dir).unwrap();
        for entry in lines {
            m.record(entry).unwrap();
            if let Some(file) = &entry.file {
                fs::write(dir.join(file), b"abc").unwrap();
            }
        }
        m.flush().unwrap();
    }

    fn next(chain: u64, page: u64) -> String {
        format!("http://h/{chain}?p={page}")
    }

    #[test]
    fn a_resume_continues_each_open_chain_from_its_last_whole_page() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            d,
            &[
                // Chain 0 ended; chain 1 stands at page 2; chain 2 lost page 2's file;
                // chain 3 failed at page 2; chain 4 has page 3 without page 2; chain 5
                // has page 1 twice.
                line(0, 1, Some(&next(0, 2)), None),
                line(1, 1, Some(&next(1, 2)), None),
                line(0, 2, None, Some(ChainEnd::Last)),
                line(2, 1, Some(&next(2, 2)), None),
                line(2, 2, Some(&next(2, 3)), None),
                line(2, 3, Some(&next(2, 4)), None),
                line(1, 2, Some(&next(1, 3)), None),
                line(3, 1, Some(&next(3, 2)), None),
                failed(3, 2),
                line(4, 1, Some(&next(4, 2)), None),
                line(4, 3, Some(&next(4, 4)), None),
                line(5, 1, Some(&next(5, 2)), None),
                line(5, 1, Some(&next(5, 2)), None),
            ],
        );
        fs::remove_file(d.join("2-2.json")).unwrap();
        let (filter, open) = sort_out(d, false, None).unwrap();
        let Filter::Skip(started) = filter else {
            panic!("a resume skips the chains it continues");
        };
        assert_eq!(started.iter().collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5]);
        let at: Vec<(u64, u64, &str)> = open
            .iter()
            .map(|o| (o.batch.index, o.page, o.url.as_str()))
            .collect();
        let urls = [next(1, 3), next(2, 2), next(4, 2), next(5, 2)];
        assert_eq!(
            at,
            [
                (1, 3, urls[0].as_str()),
                (2, 2, urls[1].as_str()),
                (4, 2, urls[2].as_str()),
                (5, 2, urls[3].as_str()),
            ]
        );
        assert!(open[0].seen.contains(&url_key(&next(1, 2))));
        // The manifest keeps the good run of each chain, once, and the failure.
        let kept: Vec<(u64, Option<u64>)> = manifest::read(d)
            .unwrap()
            .map(|e| (e.index, e.page))
            .collect();
        assert_eq!(
            kept,
            [
                (0, Some(1)),
                (1, Some(1)),
                (0, Some(2)),
                (2, Some(1)),
                (1, Some(2)),
                (3, Some(1)),
                (3, Some(2)),
                (4, Some(1)),
                (5, Some(1)),
            ]
        );

        // A retry fetches chain 3's page 2 again, and leaves the open chains alone.
        let (filter, open) = sort_out(d, true, None).unwrap();
        assert!(matches!(filter, Filter::Only(set) if set.len() == 0));
        assert_eq!(open.len(), 1);
        assert_eq!((open[0].batch.index, open[0].page), (3, 2));
        assert_eq!(open[0].url, "http://h/3?p=2");
        assert_eq!(manifest::read(d).unwrap().count(), 8);
    }

    #[test]
    fn a_cursor_is_rendered_into_the_template_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut entry = line(7, 1, Some("http://u:***@h/?c=x%2By"), None);
        entry.next_cursor = Some("x+y".into());
        write(dir.path(), &[entry, failed(8, 1)]);
        let template = Template::parse_allowing(
            "http://u:secret@h/?c={cursor}",
            &[shared::template::Var::Cursor],
        )
        .unwrap();
        let (_, open) = sort_out(dir.path(), false, Some(&template)).unwrap();
        assert_eq!(open[0].url, "http://u:secret@h/?c=x%2By");
        // A failed first page is fetched again from the plan, not from the line.
        let (filter, open) = sort_out(dir.path(), true, Some(&template)).unwrap();
        assert!(matches!(filter, Filter::Only(set) if set.contains(8)));
        assert!(open.is_empty());
    }
}
