//! Load testing: what a worker is asked to do ([`LoadSpec`]) and what it reports
//! ([`LoadStats`]): counts and HDR histograms that merge across seconds and workers, so
//! memory stays constant however long the run.

use std::fmt;

use hdrhistogram::Histogram;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use crate::plan::BatchPlan;
use crate::template::Template;

/// One worker's share of a load test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadSpec {
    /// `host:port` to connect to (and the `Host` header).
    pub authority: String,
    /// Request paths, taken in turn.
    pub targets: Targets,
    /// Connections this worker keeps.
    pub connections: u32,
    /// Requests this worker sends in all, if the run is counted.
    pub requests: Option<u64>,
    /// How long this worker sends, if the run is timed, in milliseconds.
    pub duration_ms: Option<u64>,
    /// Requests per second this worker sends, if the rate is fixed.
    pub rate: Option<f64>,
    /// Reuse connections; otherwise one new connection per request.
    pub keepalive: bool,
    /// The method and body of every request; the body is rendered with the batch of
    /// a [`Targets::Plan`].
    pub request: crate::request::RequestSpec,
    /// Speak HTTP/2 with prior knowledge, this many requests in flight on each
    /// connection; `None` for HTTP/1.1.
    pub http2_streams: Option<u32>,
    /// Whole-request timeout, in milliseconds.
    pub timeout_ms: u64,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Speak TLS (`https://`), trusting what these options say.
    pub tls: Option<crate::config::TlsOptions>,
    /// The forward proxy the requests go through, if any.
    pub proxy: Option<crate::proxy::Proxy>,
}

/// The paths a load test requests, in turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Targets {
    /// These paths (with query), in turn.
    Paths(Vec<String>),
    /// A path template over the batches of a plan, in turn.
    Plan {
        /// Path and query with placeholders.
        template: Template,
        /// The batches.
        plan: BatchPlan,
    },
}

impl Targets {
    /// The batch of request number `n` of a plan (counting from 0, wrapping around).
    pub fn values(&self, n: u64) -> Option<crate::template::Values> {
        match self {
            Targets::Paths(_) => None,
            Targets::Plan { plan, .. } => plan.batch(n % plan.len().max(1)).map(|b| b.values()),
        }
    }

    /// The path of request number `n` (counting from 0, wrapping around).
    pub fn path(&self, n: u64) -> String {
        match self {
            Targets::Paths(paths) if paths.is_empty() => "/".to_owned(),
            Targets::Paths(paths) => paths[(n % paths.len() as u64) as usize].clone(),
            Targets::Plan { template, plan } => match plan.batch(n % plan.len().max(1)) {
                Some(batch) => template.render(&batch.values()),
                None => "/".to_owned(),
            },
        }
    }
}

/// Errors by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCounts {
    /// The connection could not be made.
    pub connect: u64,
    /// No whole response within the timeout.
    pub timeout: u64,
    /// The server closed or reset the connection before the response.
    pub reset: u64,
    /// The response body failed half-way.
    pub read: u64,
    /// The TLS handshake failed (a certificate not trusted, a refused client
    /// certificate, ...).
    pub tls: u64,
}

impl ErrorCounts {
    /// All errors.
    pub fn total(&self) -> u64 {
        self.connect + self.timeout + self.reset + self.read + self.tls
    }

    fn merge(&mut self, o: &ErrorCounts) {
        self.tls += o.tls;
        self.connect += o.connect;
        self.timeout += o.timeout;
        self.reset += o.reset;
        self.read += o.read;
    }
}

/// What a worker measured, over a second or a whole run. Times are in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadStats {
    /// Responses received whole (any status).
    pub responses: u64,
    /// Body bytes received.
    pub bytes: u64,
    /// Responses by HTTP status.
    pub statuses: Vec<(u16, u64)>,
    /// Requests that failed, by kind.
    pub errors: ErrorCounts,
    /// Service time: request sent to last body byte.
    pub latency: Hist,
    /// With a fixed rate: intended send time to last body byte (no coordinated omission).
    pub intended: Hist,
    /// TCP connection set-up.
    pub connect: Hist,
    /// TLS handshake, after the TCP connect.
    pub handshake: Hist,
    /// Request sent to response head.
    pub ttfb: Hist,
    /// With a fixed rate: how late requests were sent (the generator falling behind).
    pub lateness: Hist,
}

impl LoadStats {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &LoadStats) {
        self.responses += other.responses;
        self.bytes += other.bytes;
        for &(status, n) in &other.statuses {
            self.count_status(status, n);
        }
        self.errors.merge(&other.errors);
        self.latency.merge(&other.latency);
        self.intended.merge(&other.intended);
        self.connect.merge(&other.connect);
        self.handshake.merge(&other.handshake);
        self.ttfb.merge(&other.ttfb);
        self.lateness.merge(&other.lateness);
    }

    /// Counts `n` responses with `status`.
    pub fn count_status(&mut self, status: u16, n: u64) {
        match self.statuses.iter_mut().find(|(s, _)| *s == status) {
            Some((_, count)) => *count += n,
            None => self.statuses.push((status, n)),
        }
    }

    /// Requests finished, answered or failed.
    pub fn finished(&self) -> u64 {
        self.responses + self.errors.total()
    }
}

/// A worker's closing report of a load test.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Everything it measured.
    pub stats: LoadStats,
    /// CPU time the worker process used (user + system), in microseconds.
    pub cpu_us: u64,
    /// Peak resident memory of the worker process, in KiB.
    pub max_rss_kib: u64,
    /// Time from its first request to its last response, in microseconds.
    pub wall_us: u64,
}

/// An HDR histogram of microseconds (1 µs to 1 h, 3 significant digits) that travels
/// over the pipes as its recorded `(value, count)` pairs.
#[derive(Clone)]
pub struct Hist(Histogram<u64>);

/// Largest value recorded; larger ones saturate.
const HIST_MAX_US: u64 = 3_600_000_000;

impl Default for Hist {
    fn default() -> Self {
        // Constant bounds that hdrhistogram accepts.
        Hist(Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("valid histogram bounds"))
    }
}

impl Hist {
    /// Records one value, in microseconds.
    pub fn record(&mut self, us: u64) {
        self.0.saturating_record(us.clamp(1, HIST_MAX_US));
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Hist) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// Values recorded.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value at quantile `q` (0.0 to 1.0), in microseconds.
    pub fn quantile(&self, q: f64) -> u64 {
        self.0.value_at_quantile(q)
    }

    /// The largest value, in microseconds.
    pub fn max(&self) -> u64 {
        self.0.max()
    }

    /// How many values were over `us` microseconds.
    pub fn count_over(&self, us: u64) -> u64 {
        self.len() - self.0.count_between(0, us)
    }

    /// The mean, in microseconds.
    pub fn mean(&self) -> f64 {
        self.0.mean()
    }

    /// `(upper bound, count)` of log-spaced buckets, each twice as wide as the one
    /// before (upper bounds are powers of two microseconds), from the bucket of the
    /// smallest value to that of the largest. Latencies spread over orders of
    /// magnitude: equal-width buckets would put nearly every value in the first.
    pub fn log_buckets(&self) -> Vec<(u64, u64)> {
        if self.is_empty() {
            return Vec::new();
        }
        let bucket = |us: u64| us.max(1).next_power_of_two().trailing_zeros() as usize;
        let (lo, hi) = (bucket(self.0.min()), bucket(self.0.max()));
        let mut out: Vec<(u64, u64)> = (lo..=hi).map(|k| (1u64 << k, 0)).collect();
        for v in self.0.iter_recorded() {
            out[bucket(v.value_iterated_to()) - lo].1 += v.count_at_value();
        }
        out
    }
}

impl fmt::Debug for Hist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hist(n={}, max={})", self.len(), self.max())
    }
}

impl PartialEq for Hist {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Serialize for Hist {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let pairs: Vec<(u64, u64)> = self
            .0
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        let mut seq = s.serialize_seq(Some(pairs.len()))?;
        for pair in &pairs {
            seq.serialize_element(pair)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Hist {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = Hist;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence of (value, count) pairs")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Hist, A::Error> {
                let mut hist = Hist::default();
                while let Some((value, count)) = seq.next_element::<(u64, u64)>()? {
                    hist.0
                        .saturating_record_n(value.clamp(1, HIST_MAX_US), count);
                }
                Ok(hist)
            }
        }
        d.deserialize_seq(Pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode, encode};
    use crate::plan::Span;

    #[test]
    fn stats_survive_a_frame_and_merge() {
        let mut a = LoadStats::default();
        for us in 1..=1000 {
            a.latency.record(us);
        }
        a.responses = 1000;
        a.count_status(200, 990);
        a.count_status(503, 10);
        a.errors.timeout = 2;
        let back: LoadStats = decode(&encode(&a).unwrap()).unwrap();
        assert_eq!(back, a);
        let mut merged = back.clone();
        merged.merge(&a);
        assert_eq!(merged.responses, 2000);
        assert_eq!(merged.statuses, [(200, 1980), (503, 20)]);
        assert_eq!(merged.latency.len(), 2000);
        assert_eq!(merged.finished(), 2004);
        let p50 = merged.latency.quantile(0.5);
        assert!((495..=505).contains(&p50), "{p50}");
    }

    #[test]
    fn histograms_stay_small_however_many_values() {
        let mut h = Hist::default();
        for i in 0..1_000_000u64 {
            h.record(100 + i % 5000);
        }
        let frame = encode(&h).unwrap();
        assert!(frame.len() < 64 * 1024, "{} bytes", frame.len());
        assert_eq!(h.log_buckets().iter().map(|b| b.1).sum::<u64>(), 1_000_000);
    }

    #[test]
    fn log_buckets_double_and_keep_the_empty_ones_between() {
        let mut h = Hist::default();
        for us in [3, 900, 1_000, 1_024, 5_000] {
            h.record(us);
        }
        let buckets = h.log_buckets();
        assert_eq!(buckets.first(), Some(&(4, 1)));
        assert_eq!(buckets.last(), Some(&(8_192, 1)));
        assert_eq!(buckets.len(), 12);
        let at = |upper| buckets.iter().find(|b| b.0 == upper).map(|b| b.1);
        assert_eq!((at(1_024), at(2_048), at(512)), (Some(3), Some(0), Some(0)));
    }

    #[test]
    fn targets_cycle_through_paths_and_plans() {
        let paths = Targets::Paths(vec!["/a".into(), "/b".into()]);
        assert_eq!(
            [paths.path(0), paths.path(1), paths.path(2)],
            ["/a", "/b", "/a"]
        );
        let plan = Targets::Plan {
            template: Template::parse("/t?s={start}").unwrap(),
            plan: BatchPlan::new(Span { start: 0, end: 30 }, 10).unwrap(),
        };
        assert_eq!([plan.path(1), plan.path(3)], ["/t?s=10", "/t?s=0"]);
    }
}
