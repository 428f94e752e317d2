//! `--robots obey`: the coordinator decides, before a batch is handed out, whether its
//! host's robots.txt lets it be fetched. So robots.txt is fetched once per host per run
//! (not once per worker), by [`fetch`] on a thread of its own, and a host's batches
//! wait here, held by no worker, until its answer is known; [`rules`] reads the answer
//! as RFC 9309 does. A disallowed batch becomes a report of its own
//! ([`Outcome::Skipped`]): recorded in the manifest like any other, never fetched.
//!
//! The host is the origin (scheme, host and port) of the batch's own URL: a redirect
//! to another host is not checked again.
//!
//! Cost: one robots.txt fetch and its parsed rules per host, kept for the run; per
//! batch, a parse of its URL and a hash lookup (and the host's patterns matched against
//! its path when the host has rules).

mod fetch;
mod rules;

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::time::Duration;

use shared::config::WorkerConfig;
use shared::protocol::{Job, JobReport, Outcome, Skip};
use shared::template::Template;

use self::fetch::RobotsFetcher;
use self::rules::{Rules, judge, product_token};
use crate::messages;
use crate::source::{JobSource, frame_bytes};

/// Batches held while their host's robots.txt is fetched, at most: past this, no more
/// are read from the source until answers come.
const MAX_WAITING: usize = 16_384;
/// Skipped batches kept for the loop to record, at most, before it records them: a
/// plan whose host disallows everything is read a slice at a time.
const MAX_SKIPPED: usize = 4096;
/// Hosts whose robots.txt could not be had that are named on stderr; the rest are
/// counted in the summary.
const MAX_WARNINGS: usize = 10;

/// What one host is to the gate.
enum Host {
    /// Its robots.txt was asked for: the batches that wait for it.
    Asked(Vec<Job>),
    /// Its rules are known.
    Known(Rules),
}

/// What robots.txt did in a run, for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RobotsTally {
    /// Hosts whose robots.txt was fetched (or tried).
    pub hosts: u64,
    /// Of which had a file with rules.
    pub with_rules: u64,
    /// Of which had none (4xx): everything allowed.
    pub allow_all: u64,
    /// Of which could not be had (5xx, no answer): everything disallowed.
    pub disallow_all: u64,
    /// Hosts whose rules ask for a `Crawl-delay`.
    pub crawl_delays: u64,
}

/// The jobs of a run on their way from the source to the workers, held until their
/// host's robots.txt is known and let through only where it allows them.
pub struct Gate {
    /// The product token of `--user-agent`, which robots.txt groups are matched with.
    token: String,
    /// The URL template of plan jobs, which carry no URL of their own.
    template: Option<Template>,
    /// The origin of every URL of the template, when no placeholder is in its scheme,
    /// host or port: then a batch of a host whose rules allow everything goes out
    /// without its URL being made and read here.
    fixed_origin: Option<String>,
    fetcher: RobotsFetcher,
    hosts: HashMap<String, Host>,
    /// Jobs that may go out.
    ready: VecDeque<Job>,
    /// Reports of disallowed jobs, to record.
    skipped: Vec<JobReport>,
    /// Jobs in [`Host::Asked`] lists.
    waiting: usize,
    /// The last [`Gate::take`] stopped reading the source only because it had skipped
    /// enough jobs to record first: more can go on at once.
    more_now: bool,
    /// The `Crawl-delay` of each host whose rules ask for one.
    crawl_delays: HashMap<String, Duration>,
    tally: RobotsTally,
}

impl Gate {
    /// A gate for the run configured by `config` (its URL template, `--user-agent`
    /// and client settings); `wake` wakes the dispatch loop when an answer comes.
    pub fn start(
        config: &WorkerConfig,
        wake: impl Fn() + Send + Sync + 'static,
    ) -> anyhow::Result<Gate> {
        Ok(Gate {
            token: product_token(&config.user_agent).to_owned(),
            template: config.url.clone(),
            fixed_origin: config.url.as_ref().and_then(fixed_origin),
            fetcher: RobotsFetcher::start(config, wake)?,
            hosts: HashMap::new(),
            ready: VecDeque::new(),
            skipped: Vec::new(),
            waiting: 0,
            more_now: false,
            crawl_delays: HashMap::new(),
            tally: RobotsTally::default(),
        })
    }

    /// Up to `n` jobs that may be fetched now, of at most `max_bytes` in a frame
    /// unless the first alone is more; jobs are read from `source` as long as there is
    /// room to hold them. Fewer, or none, while robots.txt answers are awaited.
    pub fn take(
        &mut self,
        source: &mut JobSource,
        n: usize,
        max_bytes: usize,
    ) -> io::Result<Vec<Job>> {
        self.collect_answers();
        while self.ready.len() < n
            && self.waiting < MAX_WAITING
            && self.skipped.len() < MAX_SKIPPED
            && !source.is_exhausted()
        {
            let more = source.take(n - self.ready.len(), usize::MAX)?;
            if more.is_empty() {
                break;
            }
            for job in more {
                self.admit(job);
            }
        }
        self.more_now = self.skipped.len() >= MAX_SKIPPED && !source.is_exhausted();
        let mut jobs = Vec::new();
        let mut bytes = 0;
        while jobs.len() < n
            && let Some(job) = self.ready.front()
            && (jobs.is_empty() || bytes + frame_bytes(job) <= max_bytes)
            && let Some(job) = self.ready.pop_front()
        {
            bytes += frame_bytes(&job);
            jobs.push(job);
        }
        Ok(jobs)
    }

    /// The reports of the jobs robots.txt disallowed since the last call, to record,
    /// and whether more jobs can be read at once (the reading stopped so that these
    /// are recorded first, and the loop should come back without waiting).
    pub fn take_skipped(&mut self) -> (Vec<JobReport>, bool) {
        (std::mem::take(&mut self.skipped), self.more_now)
    }

    /// Whether the gate holds nothing: no job waits for an answer, to go out or to be
    /// recorded.
    pub fn is_empty(&self) -> bool {
        self.waiting == 0 && self.ready.is_empty() && self.skipped.is_empty()
    }

    /// The `Crawl-delay` each host's robots.txt asks of this run's product token, by
    /// origin (`scheme://host[:port]`): known before any batch of that host is handed
    /// out. (What a per-host rate takes unless the user set one.)
    pub fn crawl_delays(&self) -> &HashMap<String, Duration> {
        &self.crawl_delays
    }

    /// What robots.txt did so far.
    pub fn tally(&self) -> RobotsTally {
        RobotsTally {
            crawl_delays: self.crawl_delays().len() as u64,
            ..self.tally
        }
    }

    /// Sends `job` on its way: ready, skipped, or held until its host's answer.
    fn admit(&mut self, job: Job) {
        // Made only when needed: a plan job carries no URL.
        let mut url = job.url.clone();
        let origin = match (&url, &self.fixed_origin) {
            (None, Some(fixed)) => Some(Cow::Borrowed(fixed.as_str())),
            _ => origin(url.get_or_insert_with(|| render(&self.template, &job))).map(Cow::Owned),
        };
        // A URL with no origin cannot be fetched at all: its worker says why.
        let Some(origin) = origin else {
            self.ready.push_back(job);
            return;
        };
        match self.hosts.get_mut(origin.as_ref()) {
            Some(Host::Known(rules)) => {
                if rules.allows_all() {
                    self.ready.push_back(job);
                    return;
                }
                let url = url.unwrap_or_else(|| render(&self.template, &job));
                if rules.allows(&url) {
                    self.ready.push_back(job);
                } else {
                    self.skipped.push(skipped(job, url));
                }
            }
            Some(Host::Asked(held)) => {
                held.push(job);
                self.waiting += 1;
            }
            None => {
                let origin = origin.into_owned();
                self.fetcher.ask(origin.clone());
                self.hosts.insert(origin, Host::Asked(vec![job]));
                self.waiting += 1;
                self.tally.hosts += 1;
            }
        }
    }

    /// Takes in the robots.txt answers that came, and lets their hosts' jobs on.
    fn collect_answers(&mut self) {
        let answers: Vec<_> = self.fetcher.answers().collect();
        for (origin, report) in answers {
            let verdict = judge(&report, &self.token);
            match (&verdict.rules, &verdict.trouble) {
                (Rules::DisallowAll, Some(trouble)) => {
                    self.tally.disallow_all += 1;
                    if self.tally.disallow_all as usize <= MAX_WARNINGS {
                        messages::warn(format_args!(
                            "{origin}/robots.txt: {trouble}: none of its batches is fetched in this run (RFC 9309; --robots ignore fetches them)"
                        ));
                    }
                }
                (Rules::DisallowAll, None) => self.tally.disallow_all += 1,
                (Rules::AllowAll, _) => self.tally.allow_all += 1,
                (Rules::Parsed(_) | Rules::NothingDisallowed, _) => self.tally.with_rules += 1,
            }
            if let Some(delay) = verdict.crawl_delay {
                self.crawl_delays.insert(origin.clone(), delay);
            }
            let allows_all = verdict.rules.allows_all();
            let held = match self.hosts.insert(origin, Host::Known(verdict.rules)) {
                Some(Host::Asked(held)) => held,
                _ => Vec::new(),
            };
            self.waiting -= held.len();
            if allows_all {
                // All of them go out, in order. Moved whole: a run of one host holds
                // every batch read so far here, and a second copy would double that.
                if self.ready.is_empty() {
                    self.ready = VecDeque::from(held);
                } else {
                    self.ready.extend(held);
                }
                continue;
            }
            for job in held {
                // Known now: the job goes out or is skipped.
                self.admit(job);
            }
        }
    }
}

/// The URL of a plan job (empty without a template: its worker says why).
fn render(template: &Option<Template>, job: &Job) -> String {
    template
        .as_ref()
        .map_or_else(String::new, |t| t.render(&job.batch.values()))
}

/// The origin every URL of `template` has, when no placeholder is in its scheme, host
/// or port.
fn fixed_origin(template: &Template) -> Option<String> {
    let source = template.as_str();
    let after = source.find("://")? + 3;
    let end = source[after..]
        .find(['/', '?', '#'])
        .map_or(source.len(), |i| after + i);
    let head = &source[..end];
    if head.contains('{') {
        return None;
    }
    origin(head)
}

/// The report of a job robots.txt disallows.
fn skipped(job: Job, url: String) -> JobReport {
    JobReport {
        batch: job.batch,
        url,
        status: None,
        bytes: 0,
        elapsed_us: 0,
        attempts: 0,
        outcome: Outcome::Skipped { why: Skip::Robots },
        // Skipped before its chain started: the chain is not one.
        chain: None,
        validators: Default::default(),
    }
}

/// `scheme://host[:port]` of `url` (the port only when it is not the scheme's own), or
/// `None` for a URL that has none.
fn origin(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let origin = parsed.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_has_a_fixed_origin_unless_a_placeholder_is_in_it() {
        let fixed = |source: &str| fixed_origin(&Template::parse(source).unwrap());
        assert_eq!(
            fixed("https://H.example:443/a?start={start}").as_deref(),
            Some("https://h.example")
        );
        assert_eq!(
            fixed("http://h:8080?q={start}").as_deref(),
            Some("http://h:8080")
        );
        assert_eq!(fixed("http://h{start}.example/a"), None);
        assert_eq!(fixed("http://h:{start}/a"), None);
    }

    #[test]
    fn an_origin_is_scheme_host_and_a_port_that_is_not_the_default() {
        assert_eq!(
            origin("http://u:p@H.example:80/a?b").as_deref(),
            Some("http://h.example")
        );
        assert_eq!(
            origin("https://h:8443/x").as_deref(),
            Some("https://h:8443")
        );
        assert_eq!(
            origin("http://[::1]:81/").as_deref(),
            Some("http://[::1]:81")
        );
        assert_eq!(origin("not a url"), None);
    }
}
