//! The jobs of a run, produced lazily: a batch plan is computed on demand, and a URL
//! list is read line by line on a thread of its own into a bounded channel, so that a
//! list of millions of lines (or a slow stdin) never sits in memory or blocks dispatch.

use std::io;
use std::thread;

use crossbeam_channel::{Receiver, TryRecvError, bounded};
use shared::plan::{Batch, BatchPlan, Shard};
use shared::protocol::{Job, JobReport, Outcome};

use crate::index_set::IndexSet;
use crate::refresh::StoredBatches;
use crate::url_input::{Listed, Refused};
use crate::url_list::UrlList;

/// URLs read ahead of dispatch at most.
const READ_AHEAD: usize = 4096;

/// Which jobs of the plan a run fetches.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Filter {
    /// All of them.
    #[default]
    All,
    /// All but these (already done, for `--resume`).
    Skip(IndexSet),
    /// Only these (failed before, for `--retry-failed`).
    Only(IndexSet),
    /// All of them again, each conditional on what the earlier run stored
    /// (`--refresh`).
    Refresh(StoredBatches),
}

impl Filter {
    fn admits(&self, index: u64) -> bool {
        match self {
            Filter::All | Filter::Refresh(_) => true,
            Filter::Skip(set) => !set.contains(index),
            Filter::Only(set) => set.contains(index),
        }
    }

    /// How many of `total` jobs pass.
    pub fn count(&self, total: u64) -> u64 {
        match self {
            Filter::All | Filter::Refresh(_) => total,
            Filter::Skip(set) => total.saturating_sub(set.len()),
            Filter::Only(set) => set.len(),
        }
    }
}

/// Where jobs come from.
pub struct JobSource {
    /// Jobs in the slice of the plan, before the filter.
    whole: Option<u64>,
    kind: Kind,
    shard: Shard,
    filter: Filter,
    total: Option<u64>,
    /// Position in the plan or list of the next candidate.
    next: u64,
    exhausted: bool,
    /// A job taken from the source that did not fit the last chunk's bytes.
    held_back: Option<Job>,
    /// List lines that cannot be fetched, reported as failed batches by the dispatcher.
    refused: Vec<JobReport>,
}

/// Bytes a job adds to a `Jobs` frame besides its URL: the batch's three numbers and
/// the URL's length, at most 9 bytes each as varints, and the option's tag.
pub const JOB_FRAME_OVERHEAD: usize = 64;

/// Bytes one job adds to a `Jobs` frame, at most.
pub fn frame_bytes(job: &Job) -> usize {
    let stored = job.stored.as_ref().map_or(0, |s| {
        let text = |v: &Option<String>| v.as_ref().map_or(0, String::len);
        JOB_FRAME_OVERHEAD
            + s.file.len()
            + text(&s.validators.etag)
            + text(&s.validators.last_modified)
    });
    JOB_FRAME_OVERHEAD + job.url.as_ref().map_or(0, String::len) + stored
}

enum Kind {
    Plan(BatchPlan),
    Urls(Receiver<io::Result<Listed>>),
}

impl JobSource {
    /// Every batch of `plan`, in order.
    pub fn plan(plan: BatchPlan, shard: Shard, filter: Filter) -> JobSource {
        JobSource {
            kind: Kind::Plan(plan),
            whole: Some(shard.len_of(plan.len())),
            total: Some(filter.count(shard.len_of(plan.len()))),
            shard,
            filter,
            next: shard.index,
            exhausted: plan.is_empty(),
            held_back: None,
            refused: Vec::new(),
        }
    }

    /// Every URL of `list`, in order, one job each.
    pub fn urls(
        list: UrlList,
        shard: Shard,
        filter: Filter,
        ready: impl Fn() + Send + 'static,
    ) -> io::Result<JobSource> {
        let (tx, rx) = bounded(READ_AHEAD);
        let UrlList {
            mut lines,
            first,
            total,
        } = list;
        thread::Builder::new()
            .name("url-list".into())
            .spawn(move || {
                let mut item = Some(Ok(Listed::Url(first)));
                while let Some(next) = item.take() {
                    // The reader waits for nothing while lines are queued; it is told
                    // when the first comes after none, and when the list ends.
                    let was_empty = tx.is_empty();
                    let failed = next.is_err();
                    if tx.send(next).is_err() || failed {
                        break;
                    }
                    if was_empty {
                        ready();
                    }
                    item = lines.next_item().transpose();
                }
                drop(tx);
                ready();
            })?;
        Ok(JobSource {
            kind: Kind::Urls(rx),
            whole: total.map(|t| shard.len_of(t)),
            total: total.map(|t| filter.count(shard.len_of(t))),
            shard,
            filter,
            next: 0,
            exhausted: false,
            held_back: None,
            refused: Vec::new(),
        })
    }

    /// Number of jobs this run fetches, when known up front.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// Number of jobs in this run's slice of the plan, fetched now or before (a resume
    /// fetches only part of it), when known up front.
    pub fn whole(&self) -> Option<u64> {
        self.whole
    }

    /// Whether every job has been handed out.
    pub fn is_exhausted(&self) -> bool {
        self.exhausted && self.held_back.is_none()
    }

    /// The list lines met since the last call that cannot be fetched, as failed
    /// batches to record.
    pub fn take_refused(&mut self) -> Vec<JobReport> {
        std::mem::take(&mut self.refused)
    }

    /// Up to `n` jobs that are ready now (fewer, or none, while a list is still being
    /// read), of at most `max_bytes` in a frame ([`frame_bytes`]) unless the first alone
    /// is more. A URL list that cannot be read further is an error.
    pub fn take(&mut self, n: usize, max_bytes: usize) -> io::Result<Vec<Job>> {
        // Allocated once a job is found: a URL list still being read often has none.
        let mut jobs = Vec::new();
        let mut bytes = 0;
        if n > 0
            && let Some(job) = self.held_back.take()
        {
            bytes += frame_bytes(&job);
            jobs.reserve_exact(n);
            jobs.push(job);
        }
        while jobs.len() < n && !self.exhausted {
            let job = match &self.kind {
                Kind::Plan(plan) => {
                    match skip_to_admitted(&self.filter, self.shard, &mut self.next)
                        .and_then(|i| plan.batch(i))
                    {
                        Some(batch) => Job {
                            batch,
                            url: None,
                            page: None,
                            stored: None,
                        },
                        None => {
                            self.exhausted = true;
                            break;
                        }
                    }
                }
                Kind::Urls(rx) => match rx.try_recv() {
                    Ok(Ok(Listed::Url(url))) => Job {
                        batch: Batch::single(self.next),
                        url: Some(url),
                        page: None,
                        stored: None,
                    },
                    Ok(Ok(Listed::Bad(refused))) => {
                        let batch = Batch::single(self.next);
                        self.next += 1;
                        if self.shard.contains(batch.index) && self.filter.admits(batch.index) {
                            self.refused.push(refused_report(batch, refused));
                        }
                        continue;
                    }
                    Ok(Err(e)) => {
                        self.exhausted = true;
                        return Err(e);
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.exhausted = true;
                        break;
                    }
                },
            };
            // A plan steps from slice to slice; a list is read line by line.
            let step = match self.kind {
                Kind::Plan(_) => self.shard.count,
                Kind::Urls(_) => 1,
            };
            self.next = self.next.saturating_add(step);
            let index = job.batch.index;
            if self.shard.contains(index) && self.filter.admits(index) {
                let mut job = job;
                if let Filter::Refresh(stored) = &mut self.filter {
                    job.stored = stored.take(index);
                }
                // Cut by bytes as well as by count: a chunk of long URLs must still fit
                // one frame, or it could never be sent.
                let size = frame_bytes(&job);
                if !jobs.is_empty() && bytes + size > max_bytes {
                    self.held_back = Some(job);
                    break;
                }
                bytes += size;
                if jobs.is_empty() {
                    jobs.reserve_exact(n);
                }
                jobs.push(job);
            }
        }
        Ok(jobs)
    }
}

/// The failed batch that stands for a list line that cannot be fetched: never sent to a
/// worker, recorded with the reason and the start of the line.
fn refused_report(batch: Batch, refused: Refused) -> JobReport {
    JobReport {
        batch,
        url: refused.shown.clone(),
        status: None,
        bytes: 0,
        elapsed_us: 0,
        attempts: 0,
        outcome: Outcome::Failed {
            error: refused.message(),
        },
        chain: None,
        validators: Default::default(),
    }
}

/// Moves `next` over the batches the filter leaves out, a run of them at a time
/// rather than one by one: a resume of a plan near `u64::MAX` batches long must not
/// walk every index its manifest lists. `None` once no batch is left.
fn skip_to_admitted(filter: &Filter, shard: Shard, next: &mut u64) -> Option<u64> {
    let at = match filter {
        Filter::All | Filter::Refresh(_) => Some(*next),
        Filter::Skip(done) => done.next_absent(*next),
        Filter::Only(failed) => failed.next_present(*next),
    }?;
    // Back onto this shard's slice: the next index at or after `next` in it.
    let (rest, want) = (at % shard.count, shard.index);
    let offset = if rest <= want {
        want - rest
    } else {
        shard.count - (rest - want)
    };
    *next = at.checked_add(offset)?;
    Some(*next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::url_input::UrlLines;
    use shared::plan::Span;

    /// The batch indices of the next `n` jobs of `source`.
    fn indices(source: &mut JobSource, n: usize) -> Vec<u64> {
        let jobs = source.take(n, usize::MAX).unwrap();
        jobs.iter().map(|j| j.batch.index).collect()
    }

    #[test]
    fn plan_jobs_come_in_chunks_until_exhausted() {
        let plan = BatchPlan::new(Span { start: 0, end: 25 }, 10).unwrap();
        let mut source = JobSource::plan(plan, Shard::WHOLE, Filter::All);
        assert_eq!(source.total(), Some(3));
        let first = source.take(2, usize::MAX).unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(
            first[1].batch,
            Batch {
                index: 1,
                start: 10,
                end: 20
            }
        );
        let rest = source.take(2, usize::MAX).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].batch.end, 25);
        assert!(source.is_exhausted());
        assert!(source.take(5, usize::MAX).unwrap().is_empty());
    }

    #[test]
    fn filters_skip_done_batches_or_keep_only_failed_ones() {
        let plan = BatchPlan::new(Span { start: 0, end: 100 }, 10).unwrap();
        let mut done = IndexSet::default();
        for i in [0, 3, 9] {
            done.insert(i);
        }
        let mut resume = JobSource::plan(plan, Shard::WHOLE, Filter::Skip(done.clone()));
        assert_eq!(resume.total(), Some(7));
        let left = indices(&mut resume, 100);
        assert_eq!(left, [1, 2, 4, 5, 6, 7, 8]);
        let mut retry = JobSource::plan(plan, Shard::WHOLE, Filter::Only(done));
        assert_eq!(retry.total(), Some(3));
        let again = indices(&mut retry, 100);
        assert_eq!(again, [0, 3, 9]);
    }

    #[test]
    fn a_shard_takes_every_mth_batch_of_a_plan_and_of_a_list() {
        let plan = BatchPlan::new(Span { start: 0, end: 100 }, 10).unwrap();
        let shard = Shard::new(1, 3).unwrap();
        let mut source = JobSource::plan(plan, shard, Filter::All);
        assert_eq!(source.total(), Some(3));
        let got = indices(&mut source, 100);
        assert_eq!(got, [1, 4, 7]);

        let list = UrlList {
            lines: UrlLines::new(Box::new(io::Cursor::new(
                "http://a/u1\nhttp://a/u2\nhttp://a/u3\nhttp://a/u4\nhttp://a/u5\n",
            ))),
            first: "http://a/u0".into(),
            total: Some(6),
        };
        let mut source = JobSource::urls(list, shard, Filter::All, || {}).unwrap();
        assert_eq!(source.total(), Some(2));
        let mut urls = Vec::new();
        while !source.is_exhausted() {
            urls.extend(
                source
                    .take(10, usize::MAX)
                    .unwrap()
                    .into_iter()
                    .map(|j| j.url.unwrap()),
            );
        }
        assert_eq!(urls, ["http://a/u1", "http://a/u4"]);
    }

    #[test]
    fn a_resume_near_the_top_of_u64_jumps_to_what_is_left() {
        let plan = BatchPlan::new(
            Span {
                start: 0,
                end: u64::MAX,
            },
            1,
        )
        .unwrap();
        let shard = Shard::new(1_099_511_627_775, 1_099_511_627_776).unwrap();
        let in_shard = |k: u64| shard.index + k * shard.count;
        let mut failed = IndexSet::default();
        for k in [3, 16_000_000] {
            failed.insert(in_shard(k));
        }
        let mut retry = JobSource::plan(plan, shard, Filter::Only(failed.clone()));
        let got = indices(&mut retry, 10);
        assert_eq!(got, [in_shard(3), in_shard(16_000_000)]);
        assert!(retry.take(10, usize::MAX).unwrap().is_empty());
        assert!(retry.is_exhausted());

        let mut done = IndexSet::default();
        for k in 0..3 {
            done.insert(in_shard(k));
        }
        let mut resume = JobSource::plan(plan, shard, Filter::Skip(done));
        let next = indices(&mut resume, 2);
        assert_eq!(next, [in_shard(3), in_shard(4)]);
    }

    /// Every job of `source`, read to its end in chunks of at most `n` jobs and
    /// `max_bytes`, and the refused lines met on the way.
    fn drain(
        source: &mut JobSource,
        n: usize,
        max_bytes: usize,
    ) -> (Vec<Vec<Job>>, Vec<JobReport>) {
        let (mut chunks, mut refused) = (Vec::new(), Vec::new());
        while !source.is_exhausted() {
            let chunk = source.take(n, max_bytes).unwrap();
            refused.extend(source.take_refused());
            if !chunk.is_empty() {
                chunks.push(chunk);
            }
        }
        (chunks, refused)
    }

    #[test]
    fn chunks_of_long_urls_are_cut_by_bytes_to_fit_a_frame() {
        let long = format!(
            "http://h/{}",
            "a".repeat(crate::url_input::MAX_URL_LEN - 20)
        );
        let text = format!("{long}\n").repeat(600);
        let list = UrlList {
            lines: UrlLines::new(Box::new(io::Cursor::new(text))),
            first: long.clone(),
            total: Some(601),
        };
        let mut source = JobSource::urls(list, Shard::WHOLE, Filter::All, || {}).unwrap();
        let budget = shared::frame::MAX_FRAME_LEN / 2;
        let (chunks, _) = drain(&mut source, 50_000, budget);
        assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), 601);
        assert!(chunks.len() >= 5, "{} chunks", chunks.len());
        for chunk in chunks {
            let frame = shared::frame::encode(&shared::protocol::ToWorker::Jobs(chunk)).unwrap();
            assert!(frame.len() <= budget, "{}", frame.len());
        }
    }

    #[test]
    fn list_lines_that_cannot_be_fetched_become_failed_batches_in_place() {
        let list = UrlList {
            lines: UrlLines::new(Box::new(io::Cursor::new(
                "http://a/2\nhttp://a/b\rX: y\n\nhttp://a/3\n",
            ))),
            first: "http://a/1".into(),
            total: None,
        };
        let mut source = JobSource::urls(list, Shard::WHOLE, Filter::All, || {}).unwrap();
        let (chunks, refused) = drain(&mut source, 10, usize::MAX);
        let indices: Vec<u64> = chunks.concat().iter().map(|j| j.batch.index).collect();
        assert_eq!(indices, [0, 1, 3]);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].batch, Batch::single(2));
        assert_eq!(refused[0].url, "http://a/b\\rX: y");
        assert_eq!(
            refused[0].outcome,
            Outcome::Failed {
                error: "line 2: the URL holds a carriage return (CR)".into()
            }
        );
    }

    #[test]
    fn a_refresh_hands_out_every_job_with_what_its_batch_stored() {
        let dir = tempfile::tempdir().unwrap();
        let plan = BatchPlan::new(Span { start: 0, end: 30 }, 10).unwrap();
        let line = |i: u64| {
            let etag = format!("\"t{i}\"");
            format!(
                r#"{{"index":{i},"start":0,"end":1,"url":"u","status":200,"bytes":2,"elapsed_ms":1.0,"attempts":1,"worker":0,"file":"b{i}","etag":{}}}"#,
                serde_json::Value::from(etag)
            )
        };
        // Batch 1's file is gone: it is fetched unconditionally.
        std::fs::write(dir.path().join("b0"), "ok").unwrap();
        std::fs::write(dir.path().join("b2"), "ok").unwrap();
        let lines: String = (0..3).map(|i| line(i) + "\n").collect();
        std::fs::write(dir.path().join(crate::manifest::FILE_NAME), lines).unwrap();
        let slice = crate::refresh::Slice {
            shard: Shard::WHOLE,
            total: Some(3),
        };
        let stored = crate::refresh::read_stored(dir.path(), slice).unwrap();
        let mut source = JobSource::plan(plan, Shard::WHOLE, Filter::Refresh(stored));
        assert_eq!(source.total(), Some(3));
        let jobs = source.take(10, usize::MAX).unwrap();
        let tags: Vec<Option<String>> = jobs
            .iter()
            .map(|j| j.stored.as_ref().and_then(|s| s.validators.etag.clone()))
            .collect();
        assert_eq!(tags, [Some("\"t0\"".into()), None, Some("\"t2\"".into())]);
        assert!(frame_bytes(&jobs[0]) > frame_bytes(&jobs[1]));
        let frame = shared::frame::encode(&shared::protocol::ToWorker::Jobs(jobs.clone())).unwrap();
        assert!(frame.len() <= jobs.iter().map(frame_bytes).sum::<usize>());
    }

    #[test]
    fn url_list_jobs_carry_their_urls_in_order() {
        let list = UrlList {
            lines: UrlLines::new(Box::new(io::Cursor::new("http://a/2\n\nhttp://a/3\n"))),
            first: "http://a/1".into(),
            total: Some(3),
        };
        let mut source = JobSource::urls(list, Shard::WHOLE, Filter::All, || {}).unwrap();
        let mut jobs = Vec::new();
        while !source.is_exhausted() {
            jobs.extend(source.take(10, usize::MAX).unwrap());
        }
        let urls: Vec<_> = jobs.iter().map(|j| j.url.clone().unwrap()).collect();
        assert_eq!(urls, ["http://a/1", "http://a/2", "http://a/3"]);
        assert_eq!(jobs[2].batch, Batch::single(2));
    }
}
