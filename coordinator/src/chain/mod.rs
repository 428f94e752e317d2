//! Chains of pages (`--follow-next`) as the coordinator keeps them.
//!
//! A chain is sequential: page `n + 1` is known only once page `n` has come. So the
//! coordinator hands out a chain's first page like any batch, and creates the job of
//! its next page when that page's report arrives, from the next page the worker read
//! in it (the coordinator never parses a body). One page of a chain is in flight at a
//! time, held by one worker like any job: a worker that dies has it handed out again,
//! and the report that comes is recorded once, with the next page's job created in
//! the same step. Each page therefore gets exactly one manifest line, and the
//! manifest alone says where every chain stands ([`scan`] reads it back for a resume
//! and for `verify`).

pub mod scan;

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use shared::chain::ChainEnd;
use shared::plan::Batch;
use shared::protocol::{Job, JobReport, Outcome};

/// A chain an earlier run left unfinished, and where it goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The chain's batch (its index is the chain's).
    pub batch: Batch,
    /// The page to fetch next, from 1.
    pub page: u64,
    /// Its URL.
    pub url: String,
    /// The URLs the chain fetched already, as [`url_key`]s: a loop back to one of them
    /// ends it.
    pub seen: HashSet<u64>,
}

impl Open {
    /// The job that fetches the page.
    pub fn job(&self) -> Job {
        Job {
            batch: self.batch,
            url: Some(self.url.clone()),
            page: Some(self.page),
            stored: None,
        }
    }
}

/// What a `--follow-next` run starts with.
#[derive(Debug, Default)]
pub struct ChainPlan {
    /// `--max-pages`.
    pub max_pages: Option<u64>,
    /// The chains an earlier run left unfinished (`--resume`), or whose failed page
    /// is fetched again (`--retry-failed`).
    pub open: Vec<Open>,
}

/// How many chains ended, and how, in this invocation.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChainTally {
    /// At a page that names no next page.
    pub last: u64,
    /// At a page whose next page the chain fetched already.
    pub loops: u64,
    /// At page `--max-pages`.
    pub max_pages: u64,
    /// At a page that failed.
    pub failed: u64,
}

impl ChainTally {
    /// Chains that ended, however.
    pub fn ended(&self) -> u64 {
        self.last + self.loops + self.max_pages + self.failed
    }
}

/// The chains of a run: which are open, what each fetched (for loops), and how many
/// ended how.
#[derive(Debug)]
pub struct Chains {
    max_pages: Option<u64>,
    /// The URLs each open chain fetched, as [`url_key`]s; a chain's set goes when it
    /// ends, so that memory follows the chains in flight, not the run.
    seen: HashMap<u64, HashSet<u64>>,
    /// Chains started and not ended: in flight, or queued to be handed out again.
    open: u64,
    /// Chains that ended in this invocation.
    pub tally: ChainTally,
}

impl Chains {
    /// The chains of a run that starts with `plan`, and the jobs that continue the
    /// chains an earlier run left open.
    pub fn new(plan: ChainPlan) -> (Chains, Vec<Job>) {
        let jobs = plan.open.iter().map(Open::job).collect();
        let chains = Chains {
            max_pages: plan.max_pages,
            open: plan.open.len() as u64,
            seen: plan
                .open
                .into_iter()
                .map(|open| (open.batch.index, open.seen))
                .collect(),
            tally: ChainTally::default(),
        };
        (chains, jobs)
    }

    /// Makes `job`, a batch of the plan, the first page of its chain.
    pub fn start(&mut self, job: &mut Job) {
        job.page = Some(1);
        self.open += 1;
    }

    /// Whether every chain started has ended.
    pub fn all_ended(&self) -> bool {
        self.open == 0
    }

    /// Chains started and not ended (a stopped run leaves them to `--resume`).
    pub fn unfinished(&self) -> u64 {
        self.open
    }

    /// Takes in the report of a chain's page: marks it as the chain's last when the
    /// chain ends there, and returns the job of the next page when it goes on.
    pub fn on_report(&mut self, report: &mut JobReport) -> Option<Job> {
        let index = report.batch.index;
        let chain = report.chain.as_mut()?;
        if matches!(report.outcome, Outcome::Failed { .. }) {
            self.tally.failed += 1;
            self.close(index);
            return None;
        }
        let seen = self.seen.entry(index).or_default();
        seen.insert(url_key(&report.url));
        let end = match &chain.next {
            None => Some(ChainEnd::Last),
            Some(next) if seen.contains(&url_key(&next.url)) => Some(ChainEnd::Loop),
            Some(_) if self.max_pages.is_some_and(|max| chain.page >= max) => {
                Some(ChainEnd::MaxPages)
            }
            Some(_) => None,
        };
        if let Some(end) = end {
            chain.end = Some(end);
            match end {
                ChainEnd::Last => self.tally.last += 1,
                ChainEnd::Loop => self.tally.loops += 1,
                ChainEnd::MaxPages => self.tally.max_pages += 1,
            }
            self.close(index);
            return None;
        }
        let next = chain.next.as_ref()?;
        Some(Job {
            batch: report.batch,
            url: Some(next.url.clone()),
            page: Some(chain.page + 1),
            stored: None,
        })
    }

    fn close(&mut self, index: u64) {
        self.seen.remove(&index);
        self.open = self.open.saturating_sub(1);
    }
}

/// A URL as a chain remembers it: a 64-bit hash, so that a chain of a million pages
/// costs 8 MB of memory rather than its URLs (two URLs of one chain share a hash with
/// a chance of about one in 10^13 at that length).
pub fn url_key(url: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    url.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::chain::{NextPage, PageReport};

    fn report(index: u64, page: u64, url: &str, next: Option<&str>) -> JobReport {
        JobReport {
            validators: Default::default(),
            batch: Batch::single(index),
            url: url.to_owned(),
            status: Some(200),
            bytes: 1,
            elapsed_us: 1,
            attempts: 1,
            outcome: Outcome::Saved { file: "f".into() },
            chain: Some(PageReport {
                page,
                next: next.map(|url| NextPage {
                    url: url.to_owned(),
                    cursor: None,
                }),
                end: None,
            }),
        }
    }

    #[test]
    fn a_chain_goes_on_until_no_next_a_loop_or_max_pages() {
        let (mut chains, jobs) = Chains::new(ChainPlan {
            max_pages: Some(3),
            open: Vec::new(),
        });
        assert!(jobs.is_empty());
        for i in 0..3 {
            let mut job = Job {
                batch: Batch::single(i),
                url: None,
                page: None,
                stored: None,
            };
            chains.start(&mut job);
            assert_eq!(job.page, Some(1));
        }
        // Chain 0: a next page, then none.
        let mut r = report(0, 1, "http://h/0", Some("http://h/0?p=2"));
        let next = chains.on_report(&mut r).unwrap();
        assert_eq!(
            (next.url.as_deref(), next.page, r.chain.unwrap().end),
            (Some("http://h/0?p=2"), Some(2), None)
        );
        let mut r = report(0, 2, "http://h/0?p=2", None);
        assert!(chains.on_report(&mut r).is_none());
        assert_eq!(r.chain.unwrap().end, Some(ChainEnd::Last));
        // Chain 1: page 2 names page 1 again.
        let mut r = report(1, 1, "http://h/1", Some("http://h/1?p=2"));
        chains.on_report(&mut r).unwrap();
        let mut r = report(1, 2, "http://h/1?p=2", Some("http://h/1"));
        assert!(chains.on_report(&mut r).is_none());
        assert_eq!(r.chain.unwrap().end, Some(ChainEnd::Loop));
        // Chain 2: cut at --max-pages 3.
        for page in 1..3 {
            let mut r = report(
                2,
                page,
                &format!("http://h/2?p={page}"),
                Some(&format!("http://h/2?p={}", page + 1)),
            );
            assert!(chains.on_report(&mut r).is_some());
        }
        assert!(!chains.all_ended());
        let mut r = report(2, 3, "http://h/2?p=3", Some("http://h/2?p=4"));
        assert!(chains.on_report(&mut r).is_none());
        assert_eq!(r.chain.unwrap().end, Some(ChainEnd::MaxPages));
        assert!(chains.all_ended());
        assert_eq!(
            chains.tally,
            ChainTally {
                last: 1,
                loops: 1,
                max_pages: 1,
                failed: 0
            }
        );
        assert!(chains.seen.is_empty(), "ended chains forget their URLs");
    }

    #[test]
    fn a_failed_page_ends_its_chain_and_a_resumed_chain_remembers_its_urls() {
        let mut seen = HashSet::new();
        seen.insert(url_key("http://h/5"));
        let (mut chains, jobs) = Chains::new(ChainPlan {
            max_pages: None,
            open: vec![Open {
                batch: Batch::single(5),
                page: 2,
                url: "http://h/5?p=2".into(),
                seen,
            }],
        });
        assert_eq!(jobs.len(), 1);
        assert_eq!(
            (jobs[0].page, jobs[0].url.as_deref()),
            (Some(2), Some("http://h/5?p=2"))
        );
        let mut r = report(5, 2, "http://h/5?p=2", Some("http://h/5"));
        assert!(
            chains.on_report(&mut r).is_none(),
            "a loop to page 1 of the earlier run"
        );
        assert_eq!(r.chain.unwrap().end, Some(ChainEnd::Loop));

        let (mut chains, _) = Chains::new(ChainPlan::default());
        let mut job = Job {
            batch: Batch::single(0),
            url: None,
            page: None,
            stored: None,
        };
        chains.start(&mut job);
        let mut r = report(0, 1, "http://h/0", None);
        r.outcome = Outcome::Failed {
            error: "HTTP 404".into(),
        };
        assert!(chains.on_report(&mut r).is_none());
        assert_eq!(r.chain.unwrap().end, None, "a failure is not an end");
        assert_eq!(chains.tally.failed, 1);
        assert!(chains.all_ended());
    }
}
