//! The jobs of a run, produced lazily: a batch plan is computed on demand, and a URL
//! list is read line by line on a thread of its own into a bounded channel, so that a
//! list of millions of lines (or a slow stdin) never sits in memory or blocks dispatch.

use std::io;
use std::thread;

use crossbeam_channel::{Receiver, TryRecvError, bounded};
use shared::plan::{Batch, BatchPlan};
use shared::protocol::Job;

use crate::settings::{UrlList, next_url};

/// URLs read ahead of dispatch at most.
const READ_AHEAD: usize = 4096;

/// Where jobs come from.
pub struct JobSource {
    kind: Kind,
    total: Option<u64>,
    handed_out: u64,
    exhausted: bool,
}

enum Kind {
    Plan(BatchPlan),
    Urls(Receiver<io::Result<String>>),
}

impl JobSource {
    /// Every batch of `plan`, in order.
    pub fn plan(plan: BatchPlan) -> JobSource {
        JobSource {
            kind: Kind::Plan(plan),
            total: Some(plan.len()),
            handed_out: 0,
            exhausted: plan.is_empty(),
        }
    }

    /// Every URL of `list`, in order, one job each.
    pub fn urls(list: UrlList) -> io::Result<JobSource> {
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
            total,
            handed_out: 0,
            exhausted: false,
        })
    }

    /// Number of jobs in all, when known up front.
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
        let mut jobs = Vec::with_capacity(n);
        while jobs.len() < n && !self.exhausted {
            let job = match &self.kind {
                Kind::Plan(plan) => match plan.batch(self.handed_out) {
                    Some(batch) => Job { batch, url: None },
                    None => {
                        self.exhausted = true;
                        break;
                    }
                },
                Kind::Urls(rx) => match rx.try_recv() {
                    Ok(Ok(url)) => Job {
                        batch: Batch::single(self.handed_out),
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
            self.handed_out += 1;
            jobs.push(job);
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
        let mut source = JobSource::plan(plan);
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
    fn url_list_jobs_carry_their_urls_in_order() {
        let list = UrlList {
            reader: Box::new(io::Cursor::new("http://a/2\n\nhttp://a/3\n")),
            first: "http://a/1".into(),
            total: Some(3),
        };
        let mut source = JobSource::urls(list).unwrap();
        let mut jobs = Vec::new();
        while !source.is_exhausted() {
            jobs.extend(source.take(10).unwrap());
        }
        let urls: Vec<_> = jobs.iter().map(|j| j.url.clone().unwrap()).collect();
        assert_eq!(urls, ["http://a/1", "http://a/2", "http://a/3"]);
        assert_eq!(jobs[2].batch, Batch::single(2));
    }
}
