//! A load test's live metrics: responses, bytes, errors by kind, status codes and
//! latency, from the per-second ticks once every worker has reported that second.

use std::collections::BTreeMap;
use std::time::Instant;

use shared::loadtest::{ErrorCounts, LoadStats};
use shared::protocol::WorkerStats;

use super::text::{Kind, Page};
use super::{Hist, Publisher, Snapshot, Window, WorkerRow, note_lag, render_workers};

impl Hist for shared::loadtest::Hist {
    fn empty() -> Self {
        Self::default()
    }
    fn add(&mut self, other: &Self) {
        self.merge(other);
    }
    fn count(&self) -> u64 {
        self.len()
    }
    fn at(&self, q: f64) -> u64 {
        self.quantile(q)
    }
}

/// What a load test's page shows.
#[derive(Clone)]
pub(super) struct LoadState {
    connections: u64,
    seconds: u64,
    responses: u64,
    bytes: u64,
    statuses: BTreeMap<u16, u64>,
    errors: ErrorCounts,
    latency: Window<shared::loadtest::Hist>,
    latency_sum_us: f64,
    latency_count: u64,
    workers: Vec<WorkerRow>,
}

/// The loop's recorder of a load test; does nothing without `--metrics`.
pub struct LoadMetrics {
    publisher: Publisher,
    state: LoadState,
}

impl LoadMetrics {
    pub(super) fn new(publisher: Publisher, workers: usize, connections: u64) -> LoadMetrics {
        LoadMetrics {
            publisher,
            state: LoadState {
                connections,
                seconds: 0,
                responses: 0,
                bytes: 0,
                statuses: BTreeMap::new(),
                errors: ErrorCounts::default(),
                latency: Window::new(),
                latency_sum_us: 0.0,
                latency_count: 0,
                workers: vec![WorkerRow::default(); workers],
            },
        }
    }

    /// Counts one second of all workers, and publishes it.
    pub fn second(&mut self, stats: &LoadStats) {
        if !self.publisher.enabled() {
            return;
        }
        let s = &mut self.state;
        s.seconds += 1;
        s.responses += stats.responses;
        s.bytes += stats.bytes;
        for &(status, n) in &stats.statuses {
            *s.statuses.entry(status).or_default() += n;
        }
        s.errors.connect += stats.errors.connect;
        s.errors.tls += stats.errors.tls;
        s.errors.timeout += stats.errors.timeout;
        s.errors.reset += stats.errors.reset;
        s.errors.read += stats.errors.read;
        s.latency_sum_us += stats.latency.mean() * stats.latency.len() as f64;
        s.latency_count += stats.latency.len();
        s.latency.current(Instant::now()).merge(&stats.latency);
        self.publish(false);
    }

    /// Notes the totals a worker of `slot` sent when it left.
    pub fn worker_left(&mut self, slot: usize, stats: &WorkerStats) {
        self.worker_lag(slot, stats.max_loop_lag_us);
    }

    /// Notes the worst event-loop lag a worker of `slot` has seen so far.
    pub fn worker_lag(&mut self, slot: usize, max_us: u64) {
        note_lag(&mut self.state.workers, slot, max_us);
    }

    /// Copies the numbers for the server when a copy is due; `last` copies them
    /// whatever the time, at the end of the test.
    pub fn publish(&mut self, last: bool) {
        let now = Instant::now();
        if !self.publisher.wanted(now, last) {
            return;
        }
        let state = &self.state;
        self.publisher
            .publish(now, last, || Snapshot::Load(Box::new(state.clone())));
    }
}

impl LoadState {
    /// The page.
    pub(super) fn render(&self) -> String {
        let mut page = Page::new();
        page.single("coordinator_up", Kind::Gauge, "1 while the run goes.", 1u64);
        page.single(
            "coordinator_load_connections",
            Kind::Gauge,
            "Connections the load test keeps, all workers together.",
            self.connections,
        );
        page.single(
            "coordinator_load_seconds_total",
            Kind::Counter,
            "Seconds of the test every worker has reported.",
            self.seconds,
        );
        page.single(
            "coordinator_load_responses_total",
            Kind::Counter,
            "Responses received whole (any status).",
            self.responses,
        );
        page.single(
            "coordinator_load_bytes_total",
            Kind::Counter,
            "Body bytes received.",
            self.bytes,
        );
        let name = "coordinator_load_errors_total";
        page.family(
            name,
            Kind::Counter,
            "Requests that failed, by kind: connect, tls, timeout, reset, read.",
        );
        let e = &self.errors;
        for (kind, n) in [
            ("connect", e.connect),
            ("tls", e.tls),
            ("timeout", e.timeout),
            ("reset", e.reset),
            ("read", e.read),
        ] {
            page.sample(name, &[("kind", kind)], n);
        }
        let name = "coordinator_load_responses_by_status_total";
        page.family(name, Kind::Counter, "Responses by HTTP status code.");
        for (code, n) in &self.statuses {
            page.sample(name, &[("code", &code.to_string())], *n);
        }
        page.summary_seconds(
            "coordinator_load_latency_seconds",
            "Service time, request sent to last body byte; quantiles over the last 30 to 60 s.",
            &self.latency.quantiles(),
            self.latency_sum_us / 1e6,
            self.latency_count,
        );
        render_workers(&mut page, &self.workers);
        page.finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn seconds_add_up_into_counters_and_quantiles() {
        let shared = Arc::new(Mutex::new(Snapshot::Starting));
        let mut m = LoadMetrics::new(Publisher::new(Some(shared)), 1, 8);
        let mut second = LoadStats {
            responses: 10,
            bytes: 1000,
            ..LoadStats::default()
        };
        second.count_status(200, 9);
        second.count_status(503, 1);
        second.errors.timeout = 2;
        for _ in 0..10 {
            second.latency.record(3000);
        }
        m.second(&second);
        m.second(&second);
        m.worker_left(0, &WorkerStats::default());
        let page = m.state.render();
        for line in [
            "coordinator_load_responses_total 20",
            "coordinator_load_bytes_total 2000",
            "coordinator_load_errors_total{kind=\"timeout\"} 4",
            "coordinator_load_responses_by_status_total{code=\"503\"} 2",
            "coordinator_load_latency_seconds_count 20",
            "coordinator_worker_loop_lag_max_seconds{worker=\"0\"} 0",
        ] {
            assert!(page.lines().any(|l| l == line), "{line} not in\n{page}");
        }
        // The sum comes from each second's mean: as close as the histogram's buckets.
        assert!(
            page.contains("coordinator_load_latency_seconds_sum 0.060"),
            "{page}"
        );
        assert!(
            page.contains("coordinator_load_latency_seconds{quantile=\"0.99\"} 0.003"),
            "{page}"
        );
    }
}
