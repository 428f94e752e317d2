//! The jobs of a run, produced lazily: a batch plan is computed on demand, and a URL
//! list is read line by line on a thread of its own into a bounded channel, so that a
//! list of millions of lines (or a slow stdin) never sits in memory or blocks dispatch.

use std::io;
use std::thread;

use crossbeam_channel::{Receiver, TryRecvError, bounded};
use shared::plan::{Batch, BatchPlan, Shard};
use shared::protocol::Job;

use crate::settings::{UrlList, next_url};

/// URLs read ahead of dispatch at most.
const READ_AHEAD: usize = 4096;

/// A set of batch indices, one bit each: a plan of ten million batches costs 1.25 MB.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IndexSet {
    words: Vec<u64>,
    len: u64,
}

impl IndexSet {
    /// Adds `index`.
    pub fn insert(&mut self, index: u64) {
        let word = (index / 64) as usize;
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let bit = 1 << (index % 64);
        if self.words[word] & bit == 0 {
            self.words[word] |= bit;
            self.len += 1;
        }
    }

    /// Whether `index` is in the set.
    pub fn contains(&self, index: u64) -> bool {
        self.words
            .get((index / 64) as usize)
            .is_some_and(|w| w & (1 << (index % 64)) != 0)
    }

    /// Number of indices in the set.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The indices, in order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &bits)| {
            (0..64u64)
                .filter(move |b| bits & (1 << b) != 0)
                .map(move |b| w as u64 * 64 + b)
        })
    }
}

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
}

impl Filter {
    fn admits(&self, index: u64) -> bool {
        match self {
            Filter::All => true,
            Filter::Skip(set) => !set.contains(index),
            Filter::Only(set) => set.contains(index),
        }
    }

    /// How many of `total` jobs pass.
    fn count(&self, total: u64) -> u64 {
        match self {
            Filter::All => total,
            Filter::Skip(set) => total.saturating_sub(set.len()),
            Filter::Only(set) => set.len(),
        }
    }
}

/// Where jobs come from.
pub struct JobSource {
    kind: Kind,
    shard: Shard,
    filter: Filter,
    total: Option<u64>,
    /// Position in the plan or list of the next candidate.
    next: u64,
    exhausted: bool,
}

enum Kind {
    Plan(BatchPlan),
    Urls(Receiver<io::Result<String>>),
}

impl JobSource {
    /// Every batch of `plan`, in order.
    pub fn plan(plan: BatchPlan, shard: Shard, filter: Filter) -> JobSource {
        JobSource {
            kind: Kind::Plan(plan),
            total: Some(filter.count(shard.len_of(plan.len()))),
            shard,
            filter,
            next: shard.index,
            exhausted: plan.is_empty(),
        }
    }

    /// Every URL of `list`, in order, one job each.
    pub fn urls(list: UrlList, shard: Shard, filter: Filter) -> io::Result<JobSource> {
        let (tx, rx) = bounded(READ_AHEAD);
        let UrlList {
            mut reader,
            first,
            total,
        } = list;
        thread::Builder::new()
            .name("url-list".into())
            .spawn(move || {
                if tx.send(Ok(first)).is_err() {
                    return;
                }
                loop {
                    let next = next_url(&mut reader).transpose();
                    let Some(item) = next else { return };
                    let failed = item.is_err();
                    if tx.send(item).is_err() || failed {
                        return;
                    }
                }
            })?;
        Ok(JobSource {
            kind: Kind::Urls(rx),
            total: total.map(|t| filter.count(shard.len_of(t))),
            shard,
            filter,
            next: 0,
            exhausted: false,
        })
    }

    /// Number of jobs this run fetches, when known up front.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// Whether every job has been handed out.
    pub fn is_exhausted(&self) -> bool {
        self.exhausted
    }

    /// Up to `n` jobs that are ready now (fewer, or none, while a list is still being
    /// read). A URL list that cannot be read further is an error.
    pub fn take(&mut self, n: usize) -> io::Result<Vec<Job>> {
        // Allocated once a job is found: a URL list still being read often has none.
        let mut jobs = Vec::new();
        while jobs.len() < n && !self.exhausted {
            let job = match &self.kind {
                Kind::Plan(plan) => match plan.batch(self.next) {
                    Some(batch) => Job { batch, url: None },
                    None => {
                        self.exhausted = true;
                        break;
                    }
                },
                Kind::Urls(rx) => match rx.try_recv() {
                    Ok(Ok(url)) => Job {
                        batch: Batch::single(self.next),
                        url: Some(url),
                    },
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
                if jobs.is_empty() {
                    jobs.reserve_exact(n);
                }
                jobs.push(job);
            }
        }
        Ok(jobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::plan::Span;

    #[test]
    fn plan_jobs_come_in_chunks_until_exhausted() {
        let plan = BatchPlan::new(Span { start: 0, end: 25 }, 10).unwrap();
        let mut source = JobSource::plan(plan, Shard::WHOLE, Filter::All);
        assert_eq!(source.total(), Some(3));
        let first = source.take(2).unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(
            first[1].batch,
            Batch {
                index: 1,
                start: 10,
                end: 20
            }
        );
        let rest = source.take(2).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].batch.end, 25);
        assert!(source.is_exhausted());
        assert!(source.take(5).unwrap().is_empty());
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
        let left: Vec<u64> = resume
            .take(100)
            .unwrap()
            .iter()
            .map(|j| j.batch.index)
            .collect();
        assert_eq!(left, [1, 2, 4, 5, 6, 7, 8]);
        let mut retry = JobSource::plan(plan, Shard::WHOLE, Filter::Only(done));
        assert_eq!(retry.total(), Some(3));
        let again: Vec<u64> = retry
            .take(100)
            .unwrap()
            .iter()
            .map(|j| j.batch.index)
            .collect();
        assert_eq!(again, [0, 3, 9]);
    }

    #[test]
    fn a_shard_takes_every_mth_batch_of_a_plan_and_of_a_list() {
        let plan = BatchPlan::new(Span { start: 0, end: 100 }, 10).unwrap();
        let shard = Shard::new(1, 3).unwrap();
        let mut source = JobSource::plan(plan, shard, Filter::All);
        assert_eq!(source.total(), Some(3));
        let got: Vec<u64> = source
            .take(100)
            .unwrap()
            .iter()
            .map(|j| j.batch.index)
            .collect();
        assert_eq!(got, [1, 4, 7]);

        let list = UrlList {
            reader: Box::new(io::Cursor::new("u1\nu2\nu3\nu4\nu5\n")),
            first: "u0".into(),
            total: Some(6),
        };
        let mut source = JobSource::urls(list, shard, Filter::All).unwrap();
        assert_eq!(source.total(), Some(2));
        let mut urls = Vec::new();
        while !source.is_exhausted() {
            urls.extend(source.take(10).unwrap().into_iter().map(|j| j.url.unwrap()));
        }
        assert_eq!(urls, ["u1", "u4"]);
    }

    #[test]
    fn index_sets_count_each_index_once() {
        let mut set = IndexSet::default();
        for i in [5, 5, 64, 1_000_000] {
            set.insert(i);
        }
        assert_eq!(set.len(), 3);
        assert!(set.contains(64) && set.contains(1_000_000) && !set.contains(63));
    }

    #[test]
    fn url_list_jobs_carry_their_urls_in_order() {
        let list = UrlList {
            reader: Box::new(io::Cursor::new("http://a/2\n\nhttp://a/3\n")),
            first: "http://a/1".into(),
            total: Some(3),
        };
        let mut source = JobSource::urls(list, Shard::WHOLE, Filter::All).unwrap();
        let mut jobs = Vec::new();
        while !source.is_exhausted() {
            jobs.extend(source.take(10).unwrap());
        }
        let urls: Vec<_> = jobs.iter().map(|j| j.url.clone().unwrap()).collect();
        assert_eq!(urls, ["http://a/1", "http://a/2", "http://a/3"]);
        assert_eq!(jobs[2].batch, Batch::single(2));
    }
}
