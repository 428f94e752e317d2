//! A scrape's live metrics: batches by outcome, bytes, requests and retries, per host,
//! in flight, latency, per worker.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use hdrhistogram::Histogram;
use shared::plan::Shard;
use shared::protocol::{JobReport, Outcome, WorkerStats};

use super::text::{Kind, Page};
use crate::prepare::Target;
use crate::source::Filter;

use super::{Hist, Publisher, Snapshot, Window, WorkerRow, note_lag, render_workers};

/// Hosts named in labels at most; the rest are counted as `other`.
const MAX_HOSTS: usize = 500;

/// Batch latencies for quantiles: 1 µs to 1 h at 2 significant digits (the page shows
/// quantiles to 1 %, and the loop copies this a few times a second).
#[derive(Clone)]
struct Latency(Histogram<u64>);

impl Hist for Latency {
    fn empty() -> Self {
        Latency(
            Histogram::new_with_bounds(1, 3_600_000_000, 2)
                .expect("constant histogram bounds are valid"),
        )
    }
    fn add(&mut self, other: &Self) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.0.add(&other.0);
    }
    fn count(&self) -> u64 {
        self.0.len()
    }
    fn at(&self, q: f64) -> u64 {
        self.0.value_at_quantile(q)
    }
}

/// One host's counts.
#[derive(Clone, Default)]
struct HostRow {
    requests: u64,
    ok: u64,
    failed: u64,
}

/// What a scrape's page shows.
#[derive(Clone)]
pub(super) struct ScrapeState {
    planned: Option<u64>,
    skipped: u64,
    /// Batches robots.txt disallows.
    robots: u64,
    ok: u64,
    failed: u64,
    bytes: u64,
    requests: u64,
    retries: BTreeMap<String, u64>,
    hosts: HashMap<String, HostRow>,
    batches_in_flight: u64,
    requests_in_flight: u64,
    latency: Window<Latency>,
    latency_sum_us: u64,
    latency_count: u64,
    worker_batches: Vec<u64>,
    workers: Vec<WorkerRow>,
}

/// The loop's recorder of a scrape; does nothing without `--metrics`.
pub struct ScrapeMetrics {
    publisher: Publisher,
    concurrency: u64,
    state: ScrapeState,
    /// A buffer for the origin of each report's URL.
    origin: String,
}

impl ScrapeMetrics {
    pub(super) fn new(
        publisher: Publisher,
        workers: usize,
        concurrency: u32,
        planned: Option<u64>,
    ) -> ScrapeMetrics {
        ScrapeMetrics {
            publisher,
            concurrency: u64::from(concurrency.max(1)),
            state: ScrapeState {
                planned,
                skipped: 0,
                robots: 0,
                ok: 0,
                failed: 0,
                bytes: 0,
                requests: 0,
                retries: BTreeMap::new(),
                hosts: HashMap::new(),
                batches_in_flight: 0,
                requests_in_flight: 0,
                latency: Window::new(),
                latency_sum_us: 0,
                latency_count: 0,
                worker_batches: vec![0; workers],
                workers: vec![WorkerRow::default(); workers],
            },
            origin: String::new(),
        }
    }

    /// Batches of the plan this run leaves out (done before, for `--resume`; or not
    /// failed before, for `--retry-failed`).
    pub fn set_skipped(&mut self, skipped: u64) {
        self.state.skipped = skipped;
    }

    /// Counts one finished batch of worker `slot`.
    pub fn record(&mut self, slot: usize, report: &JobReport) {
        if !self.publisher.enabled() {
            return;
        }
        let s = &mut self.state;
        if matches!(report.outcome, Outcome::Skipped { .. }) {
            // Neither fetched nor failed, by no worker and with no request.
            s.robots += 1;
            return;
        }
        let ok = !matches!(report.outcome, Outcome::Failed { .. });
        if ok {
            s.ok += 1;
        } else {
            s.failed += 1;
        }
        s.bytes += report.bytes;
        let attempts = u64::from(report.attempts);
        s.requests += attempts;
        if attempts > 1 {
            *s.retries.entry(retry_cause(report)).or_default() += attempts - 1;
        }
        if let Some(n) = s.worker_batches.get_mut(slot) {
            *n += 1;
        }
        origin(&report.url, &mut self.origin);
        let mut key = self.origin.as_str();
        if !s.hosts.contains_key(key) {
            if s.hosts.len() >= MAX_HOSTS {
                key = "other";
            }
            s.hosts.entry(key.to_owned()).or_default();
        }
        if let Some(host) = s.hosts.get_mut(key) {
            host.requests += attempts;
            if ok {
                host.ok += 1;
            } else {
                host.failed += 1;
            }
        }
        // Failed batches that never reached a worker (refused list lines) took no time.
        if attempts > 0 {
            let us = report.elapsed_us.max(1);
            s.latency_sum_us += us;
            s.latency_count += 1;
            s.latency.current(Instant::now()).0.saturating_record(us);
        }
    }

    /// Notes the totals a worker of `slot` sent when it left.
    pub fn worker_left(&mut self, slot: usize, stats: &WorkerStats) {
        self.worker_lag(slot, stats.max_loop_lag_us);
    }

    /// Notes the worst event-loop lag a worker of `slot` has seen so far.
    pub fn worker_lag(&mut self, slot: usize, max_us: u64) {
        note_lag(&mut self.state.workers, slot, max_us);
    }

    /// Copies the numbers for the server when a copy is due (`held`: the batches each
    /// worker holds); `last` copies them whatever the time, at the end of the run.
    pub fn publish(&mut self, held: impl Iterator<Item = usize>, last: bool) {
        let now = Instant::now();
        if !self.publisher.wanted(now, last) {
            return;
        }
        let (mut batches, mut requests) = (0, 0);
        for n in held {
            batches += n as u64;
            requests += (n as u64).min(self.concurrency);
        }
        self.state.batches_in_flight = batches;
        self.state.requests_in_flight = requests;
        // Rotated here too, so that a quiet run's quantiles age out.
        self.state.latency.current(now);
        let state = &self.state;
        self.publisher
            .publish(now, last, || Snapshot::Scrape(Box::new(state.clone())));
    }
}

impl Default for ScrapeMetrics {
    /// A recorder that records nothing.
    fn default() -> ScrapeMetrics {
        ScrapeMetrics::new(Publisher::new(None), 0, 1, None)
    }
}

/// Batches of the run's share of the plan that `filter` leaves out: done before
/// (`--resume`), or not failed before (`--retry-failed`, when the plan's length is
/// known).
pub fn skipped_batches(target: &Target, shard: Shard, filter: &Filter) -> u64 {
    let planned = match target {
        Target::Template(plan) | Target::Builtin { plan, .. } => Some(shard.len_of(plan.len())),
        Target::UrlList(list) => list.total.map(|t| shard.len_of(t)),
    };
    match filter {
        Filter::All | Filter::Refresh(_) => 0,
        Filter::Skip(done) => done.len(),
        Filter::Only(failed) => planned.map_or(0, |p| p.saturating_sub(failed.len())),
    }
}

/// Why a batch's attempts after the first were made, as far as its report tells: the
/// status of its last response when it failed with one, `network` when it failed
/// without (connect errors, resets, timeouts, cut-off bodies), `recovered` when it
/// succeeded in the end (the report does not say what the failed attempts met).
fn retry_cause(report: &JobReport) -> String {
    match (&report.outcome, report.status) {
        (Outcome::Failed { error }, Some(code)) if error.starts_with("HTTP ") => {
            format!("http_{code}")
        }
        (Outcome::Failed { .. }, _) => "network".to_owned(),
        _ => "recovered".to_owned(),
    }
}

/// Writes `scheme://host:port` of `url` into `out` (the port spelled out, no user
/// info); `other` when the URL has no scheme.
fn origin(url: &str, out: &mut String) {
    out.clear();
    let Some((scheme, rest)) = url.split_once("://") else {
        out.push_str("other");
        return;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let has_port = match host_port.rfind(']') {
        Some(end) => host_port[end..].contains(':'),
        None => host_port.contains(':'),
    };
    out.push_str(&scheme.to_ascii_lowercase());
    out.push_str("://");
    out.push_str(&host_port.to_ascii_lowercase());
    if !has_port {
        out.push_str(if scheme.eq_ignore_ascii_case("https") {
            ":443"
        } else {
            ":80"
        });
    }
}

impl ScrapeState {
    /// The page.
    pub(super) fn render(&self) -> String {
        let mut page = Page::new();
        page.single("coordinator_up", Kind::Gauge, "1 while the run goes.", 1u64);
        if let Some(planned) = self.planned {
            page.single(
                "coordinator_batches_planned",
                Kind::Gauge,
                "Batches this run fetches (its share of the plan, less those a resume leaves out).",
                planned,
            );
        }
        let name = "coordinator_batches_total";
        page.family(
            name,
            Kind::Counter,
            "Batches finished by outcome: ok (stored), failed, skipped (left out by --resume or --retry-failed), robots (disallowed by the host's robots.txt, not fetched).",
        );
        page.sample(name, &[("outcome", "ok")], self.ok);
        page.sample(name, &[("outcome", "failed")], self.failed);
        page.sample(name, &[("outcome", "skipped")], self.skipped);
        page.sample(name, &[("outcome", "robots")], self.robots);
        page.single(
            "coordinator_bytes_total",
            Kind::Counter,
            "Body bytes received.",
            self.bytes,
        );
        page.single(
            "coordinator_requests_total",
            Kind::Counter,
            "HTTP requests made (attempts of finished batches).",
            self.requests,
        );
        let name = "coordinator_retries_total";
        page.family(
            name,
            Kind::Counter,
            "Attempts after the first, by cause: http_CODE or network for batches that failed, recovered for batches that succeeded after retries.",
        );
        for (cause, n) in &self.retries {
            page.sample(name, &[("cause", cause)], *n);
        }
        page.single(
            "coordinator_batches_in_flight",
            Kind::Gauge,
            "Batches handed to workers and not yet reported (queued in a worker or being fetched).",
            self.batches_in_flight,
        );
        page.single(
            "coordinator_requests_in_flight",
            Kind::Gauge,
            "Batches being fetched: per worker, those it holds up to its --concurrency.",
            self.requests_in_flight,
        );
        let mut hosts: Vec<(&String, &HostRow)> = self.hosts.iter().collect();
        hosts.sort_by(|a, b| a.0.cmp(b.0));
        let name = "coordinator_host_requests_total";
        page.family(
            name,
            Kind::Counter,
            "HTTP requests per host (scheme://host:port).",
        );
        for (host, row) in &hosts {
            page.sample(name, &[("host", host)], row.requests);
        }
        let name = "coordinator_host_batches_total";
        page.family(
            name,
            Kind::Counter,
            "Batches finished per host and outcome.",
        );
        for (host, row) in &hosts {
            page.sample(name, &[("host", host), ("outcome", "ok")], row.ok);
            page.sample(name, &[("host", host), ("outcome", "failed")], row.failed);
        }
        page.summary_seconds(
            "coordinator_batch_duration_seconds",
            "Time from a batch's first request to its stored file, retries included; quantiles over the last 30 to 60 s.",
            &self.latency.quantiles(),
            self.latency_sum_us as f64 / 1e6,
            self.latency_count,
        );
        let name = "coordinator_worker_batches_total";
        page.family(name, Kind::Counter, "Batches finished per worker slot.");
        for (slot, n) in self.worker_batches.iter().enumerate() {
            page.sample(name, &[("worker", &slot.to_string())], *n);
        }
        render_workers(&mut page, &self.workers);
        page.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::plan::Batch;
    use std::sync::{Arc, Mutex};

    fn origin_of(url: &str) -> String {
        let mut out = String::new();
        origin(url, &mut out);
        out
    }

    #[test]
    fn hosts_are_scheme_host_and_port() {
        assert_eq!(
            origin_of("http://127.0.0.1:8080/a?b"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            origin_of("https://u:p@Example.com/x"),
            "https://example.com:443"
        );
        assert_eq!(origin_of("http://example.com?q"), "http://example.com:80");
        assert_eq!(origin_of("http://[::1]/"), "http://[::1]:80");
        assert_eq!(origin_of("http://[::1]:81/"), "http://[::1]:81");
        assert_eq!(origin_of("nonsense"), "other");
    }

    #[test]
    fn reports_become_counters_by_outcome_host_and_cause() {
        let mut m = ScrapeMetrics::new(Publisher::new(None), 2, 4, Some(10));
        // Disabled: nothing is counted.
        let report = |i: u64, attempts: u32, failed: Option<(&str, u16)>| JobReport {
            batch: Batch::single(i),
            url: format!("http://h:1/{i}"),
            status: Some(failed.map_or(200, |f| f.1)),
            bytes: 100,
            elapsed_us: 2000,
            attempts,
            outcome: match failed {
                Some((error, _)) => Outcome::Failed {
                    error: error.into(),
                },
                None => Outcome::Saved { file: "f".into() },
            },
            chain: None,
            validators: Default::default(),
        };
        m.record(0, &report(0, 1, None));
        assert_eq!(m.state.ok, 0);
        m.publisher = Publisher::new(Some(Arc::new(Mutex::new(Snapshot::Starting))));
        m.set_skipped(3);
        m.record(0, &report(0, 1, None));
        m.record(1, &report(1, 3, None));
        m.record(
            1,
            &report(2, 4, Some(("HTTP 503 Service Unavailable", 503))),
        );
        m.worker_lag(1, 1500);
        m.publish([5usize, 1].into_iter(), true);
        let page = m.state.render();
        for line in [
            "coordinator_batches_total{outcome=\"ok\"} 2",
            "coordinator_batches_total{outcome=\"failed\"} 1",
            "coordinator_batches_total{outcome=\"skipped\"} 3",
            "coordinator_bytes_total 300",
            "coordinator_requests_total 8",
            "coordinator_retries_total{cause=\"http_503\"} 3",
            "coordinator_retries_total{cause=\"recovered\"} 2",
            "coordinator_batches_in_flight 6",
            "coordinator_requests_in_flight 5",
            "coordinator_host_requests_total{host=\"http://h:1\"} 8",
            "coordinator_host_batches_total{host=\"http://h:1\",outcome=\"failed\"} 1",
            "coordinator_batch_duration_seconds_count 3",
            "coordinator_worker_batches_total{worker=\"1\"} 2",
            "coordinator_worker_loop_lag_max_seconds{worker=\"1\"} 0.0015",
        ] {
            assert!(page.lines().any(|l| l == line), "{line} not in\n{page}");
        }
        assert!(!page.contains("loop_lag_max_seconds{worker=\"0\"}"));
        assert!(
            page.contains("coordinator_batch_duration_seconds{quantile=\"0.5\"} 0.00200"),
            "{page}"
        );
    }
}
