//! What a report shows, and how it is read from what a run leaves behind: a scrape's
//! `manifest.jsonl` (one line per batch) or a load test's `--timeline` (one line per
//! second).

use std::collections::BTreeMap;
use std::io::{self, BufRead};

use serde::Deserialize;

/// Which kind of run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// A scrape: batches into files.
    Scrape,
    /// A load test, at a fixed rate or as fast as it goes.
    Load {
        /// `--rate`, requests per second.
        rate: Option<f64>,
    },
}

/// One second of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Second {
    /// Batches stored, or responses received.
    pub ok: u64,
    /// Batches or requests that failed.
    pub failed: u64,
    /// Body bytes.
    pub bytes: u64,
    /// Latency percentiles, in milliseconds: p50, p90, p99.
    pub latency_ms: Option<[f64; 3]>,
    /// With `--rate`: latency from the intended send time, p50 and p99.
    pub intended_ms: Option<[f64; 2]>,
    /// Responses by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Failures by cause.
    pub errors: BTreeMap<String, u64>,
}

/// What one host got.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    /// `scheme://host:port`.
    pub name: String,
    /// Batches or requests.
    pub requests: u64,
    /// Of which failed.
    pub failed: u64,
    /// Body bytes.
    pub bytes: u64,
    /// Median latency, in milliseconds.
    pub p50_ms: f64,
}

/// Everything a report shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// What the page is titled.
    pub title: String,
    /// Scrape or load.
    pub kind: Kind,
    /// Second by second, from the first.
    pub seconds: Vec<Second>,
    /// The latency histogram: `(upper bound in ms, count)` on log-spaced buckets.
    pub latency: Vec<(f64, u64)>,
    /// Batches or requests per worker.
    pub workers: Vec<u64>,
    /// Per host, busiest first.
    pub hosts: Vec<Host>,
    /// Input lines that could not be read, and were left out.
    pub unreadable: u64,
}

/// The fields of a manifest line a report needs.
#[derive(Deserialize)]
struct Batch {
    #[serde(default)]
    at_ms: u64,
    elapsed_ms: f64,
    status: Option<u16>,
    bytes: u64,
    worker: u32,
    url: String,
    #[serde(default)]
    error: Option<String>,
    /// Why the batch was not fetched on purpose (robots.txt): such a line took no
    /// request and no time, and is left out of the charts.
    #[serde(default)]
    skipped: Option<String>,
}

/// One line of a load test's timeline.
#[derive(Deserialize)]
struct Tick {
    second: u64,
    responses: u64,
    errors: u64,
    #[serde(default)]
    bytes: u64,
    p50_ms: f64,
    #[serde(default)]
    p90_ms: Option<f64>,
    p99_ms: f64,
    #[serde(default)]
    intended_p50_ms: Option<f64>,
    #[serde(default)]
    intended_p99_ms: Option<f64>,
    #[serde(default)]
    statuses: BTreeMap<u16, u64>,
    #[serde(default)]
    error_kinds: BTreeMap<String, u64>,
    /// `(upper bound in µs, count)` of the second's log-spaced latency buckets.
    #[serde(default)]
    hist: Vec<(u64, u64)>,
    #[serde(default)]
    workers: Vec<u64>,
    #[serde(default)]
    rate: Option<f64>,
    #[serde(default)]
    target: Option<String>,
}

impl Run {
    /// A scrape run from its manifest's lines.
    pub fn from_manifest(reader: impl BufRead, title: &str) -> io::Result<Run> {
        let mut batches = Vec::new();
        let mut unreadable = 0;
        for line in reader.split(b'\n') {
            match serde_json::from_slice::<Batch>(&line?) {
                Ok(batch) if batch.skipped.is_some() => {}
                Ok(batch) => batches.push(batch),
                Err(_) => unreadable += 1,
            }
        }
        let start = batches.iter().map(|b| b.at_ms).min().unwrap_or(0);
        let mut latencies: Vec<Vec<f64>> = Vec::new();
        let mut seconds: Vec<Second> = Vec::new();
        let mut workers: Vec<u64> = Vec::new();
        let mut hosts: BTreeMap<String, (u64, u64, u64, Vec<f64>)> = BTreeMap::new();
        let mut all = Vec::with_capacity(batches.len());
        for b in &batches {
            let i = ((b.at_ms - start) / 1000) as usize;
            if seconds.len() <= i {
                seconds.resize_with(i + 1, Second::default);
                latencies.resize_with(i + 1, Vec::new);
            }
            let second = &mut seconds[i];
            let failed = b.error.is_some();
            if failed {
                second.failed += 1;
            } else {
                second.ok += 1;
            }
            second.bytes += b.bytes;
            if let Some(status) = b.status {
                *second.statuses.entry(status).or_default() += 1;
            }
            // A failure with a status shows as that status; the others by their cause.
            if let (Some(error), None) = (&b.error, b.status) {
                *second.errors.entry(cause(error).to_owned()).or_default() += 1;
            }
            latencies[i].push(b.elapsed_ms);
            all.push(b.elapsed_ms);
            let w = b.worker as usize;
            if workers.len() <= w {
                workers.resize(w + 1, 0);
            }
            workers[w] += 1;
            let host = hosts.entry(origin(&b.url)).or_default();
            host.0 += 1;
            host.1 += u64::from(failed);
            host.2 += b.bytes;
            host.3.push(b.elapsed_ms);
        }
        for (second, values) in seconds.iter_mut().zip(&mut latencies) {
            second.latency_ms = percentiles(values, [0.5, 0.9, 0.99]);
        }
        let mut hosts: Vec<Host> = hosts
            .into_iter()
            .map(|(name, (requests, failed, bytes, mut ms))| Host {
                name,
                requests,
                failed,
                bytes,
                p50_ms: percentiles(&mut ms, [0.5]).map_or(0.0, |p| p[0]),
            })
            .collect();
        hosts.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.name.cmp(&b.name)));
        Ok(Run {
            title: title.to_owned(),
            kind: Kind::Scrape,
            seconds,
            latency: log_buckets(all.iter().map(|ms| (ms * 1000.0) as u64)),
            workers,
            hosts,
            unreadable,
        })
    }

    /// A load test from its timeline's lines.
    pub fn from_timeline(reader: impl BufRead, title: &str) -> io::Result<Run> {
        let mut seconds: Vec<Second> = Vec::new();
        let mut hist: BTreeMap<u64, u64> = BTreeMap::new();
        let mut workers: Vec<u64> = Vec::new();
        let (mut rate, mut target) = (None, None);
        let mut unreadable = 0;
        for line in reader.split(b'\n') {
            let Ok(tick) = serde_json::from_slice::<Tick>(&line?) else {
                unreadable += 1;
                continue;
            };
            let i = tick.second.saturating_sub(1) as usize;
            if seconds.len() <= i {
                seconds.resize_with(i + 1, Second::default);
            }
            seconds[i] = Second {
                ok: tick.responses,
                failed: tick.errors,
                bytes: tick.bytes,
                latency_ms: (tick.responses > 0)
                    .then(|| [tick.p50_ms, tick.p90_ms.unwrap_or(tick.p50_ms), tick.p99_ms]),
                intended_ms: tick
                    .intended_p50_ms
                    .zip(tick.intended_p99_ms)
                    .map(|(a, b)| [a, b]),
                statuses: tick.statuses,
                errors: tick.error_kinds,
            };
            for (upper, n) in tick.hist {
                *hist.entry(upper).or_default() += n;
            }
            if workers.len() < tick.workers.len() {
                workers.resize(tick.workers.len(), 0);
            }
            for (w, n) in tick.workers.iter().enumerate() {
                workers[w] += n;
            }
            rate = rate.or(tick.rate);
            target = target.or(tick.target);
        }
        let hosts = target
            .map(|name| {
                let requests = seconds.iter().map(|s| s.ok + s.failed).sum();
                let failed = seconds.iter().map(|s| s.failed).sum();
                let bytes = seconds.iter().map(|s| s.bytes).sum();
                let p50_ms = median_of_buckets(&hist);
                vec![Host {
                    name,
                    requests,
                    failed,
                    bytes,
                    p50_ms,
                }]
            })
            .unwrap_or_default();
        Ok(Run {
            title: title.to_owned(),
            kind: Kind::Load { rate },
            seconds,
            latency: hist
                .into_iter()
                .map(|(upper, n)| (upper as f64 / 1000.0, n))
                .collect(),
            workers,
            hosts,
            unreadable,
        })
    }
}

/// A failure's cause in a word, for the chart of errors over time.
fn cause(error: &str) -> &'static str {
    let e = error.to_ascii_lowercase();
    let causes = [
        ("http ", "HTTP status"),
        ("tls ", "TLS"),
        ("--max-body", "body too large"),
        ("redirect", "redirect"),
        ("timed out", "timeout"),
        ("--timeout", "timeout"),
        ("connect", "connect"),
        ("reset", "reset"),
        ("writing", "write"),
        ("closed", "read"),
        ("bad response", "read"),
        ("cut off", "read"),
    ];
    causes
        .iter()
        .find(|(needle, _)| e.contains(needle))
        .map_or("other", |(_, cause)| cause)
}

/// `scheme://host[:port]` of a URL, without credentials; the URL itself when it has
/// no scheme.
fn origin(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or(authority);
    format!("{}://{host}", scheme.to_ascii_lowercase())
}

/// The values at quantiles `qs` of `values` (sorted here), nearest rank.
fn percentiles<const N: usize>(values: &mut [f64], qs: [f64; N]) -> Option<[f64; N]> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(qs.map(|q| values[((q * n as f64).ceil() as usize).clamp(1, n) - 1]))
}

/// Counts of microsecond values on log-spaced buckets (upper bounds powers of two),
/// as `(upper bound in ms, count)`, the empty buckets between included.
fn log_buckets(values: impl Iterator<Item = u64>) -> Vec<(f64, u64)> {
    let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
    for us in values {
        *counts
            .entry(us.max(1).next_power_of_two().trailing_zeros())
            .or_default() += 1;
    }
    let (Some(&lo), Some(&hi)) = (counts.keys().next(), counts.keys().next_back()) else {
        return Vec::new();
    };
    (lo..=hi)
        .map(|k| {
            (
                (1u64 << k) as f64 / 1000.0,
                counts.get(&k).copied().unwrap_or(0),
            )
        })
        .collect()
}

/// The upper bound of the bucket that holds the median, in ms.
fn median_of_buckets(hist: &BTreeMap<u64, u64>) -> f64 {
    let total: u64 = hist.values().sum();
    let mut seen = 0;
    for (upper, n) in hist {
        seen += n;
        if seen * 2 >= total {
            return *upper as f64 / 1000.0;
        }
    }
    0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"{"index":0,"start":0,"end":10,"url":"http://u:p@a:80/x","status":200,"bytes":100,"elapsed_ms":2.0,"attempts":1,"worker":0,"at_ms":1000,"file":"f0"}
{"index":1,"start":10,"end":20,"url":"http://a:80/y","status":200,"bytes":50,"elapsed_ms":4.0,"attempts":1,"worker":1,"at_ms":1500,"file":"f1"}
{"index":2,"start":20,"end":30,"url":"https://b/z","status":503,"bytes":0,"elapsed_ms":90.0,"attempts":4,"worker":1,"at_ms":3100,"error":"HTTP 503 Service Unavailable"}
not json
{"index":3,"start":30,"end":40,"url":"https://b/w","status":null,"bytes":0,"elapsed_ms":30000.0,"attempts":1,"worker":0,"at_ms":3200,"error":"no whole response within --timeout 30s"}
{"index":4,"start":40,"end":50,"url":"http://c/private","status":null,"bytes":0,"elapsed_ms":0.0,"attempts":0,"worker":0,"at_ms":3300,"skipped":"robots"}
"#;

    #[test]
    fn a_manifest_becomes_seconds_workers_hosts_and_a_histogram() {
        let run = Run::from_manifest(MANIFEST.as_bytes(), "t").unwrap();
        assert_eq!(run.unreadable, 1);
        assert_eq!(run.seconds.len(), 3);
        assert_eq!((run.seconds[0].ok, run.seconds[0].bytes), (2, 150));
        assert_eq!(run.seconds[0].latency_ms, Some([2.0, 4.0, 4.0]));
        assert_eq!(run.seconds[1], Second::default());
        let third = &run.seconds[2];
        assert_eq!((third.ok, third.failed), (0, 2));
        assert_eq!(third.statuses.get(&503), Some(&1));
        assert_eq!(third.errors.get("HTTP status"), None, "shown as its status");
        assert_eq!(third.errors.get("timeout"), Some(&1));
        assert_eq!(run.workers, [2, 2]);
        let names: Vec<&str> = run.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            ["http://a:80", "https://b"],
            "a skipped line is no host's"
        );
        assert_eq!((run.hosts[1].failed, run.hosts[0].bytes), (2, 150));
        assert_eq!(run.latency.iter().map(|b| b.1).sum::<u64>(), 4);
        assert_eq!(run.latency.first(), Some(&(2.048, 1)));
    }

    #[test]
    fn a_timeline_becomes_seconds_with_its_rate_and_target() {
        let lines = r#"{"second":1,"responses":10,"rps":10,"errors":1,"p50_ms":1.0,"p90_ms":2.0,"p99_ms":3.0,"bytes":5,"statuses":{"200":10},"error_kinds":{"connect":1},"hist":[[1024,6],[2048,4]],"workers":[6,4],"rate":10.0,"intended_p50_ms":1.5,"intended_p99_ms":9.0,"target":"http://h:1"}
{"second":2,"responses":10,"rps":10,"errors":0,"p50_ms":1.0,"p99_ms":2.0}
"#;
        let run = Run::from_timeline(lines.as_bytes(), "t").unwrap();
        assert_eq!(run.kind, Kind::Load { rate: Some(10.0) });
        assert_eq!(run.seconds[0].intended_ms, Some([1.5, 9.0]));
        assert_eq!(run.seconds[1].latency_ms, Some([1.0, 1.0, 2.0]));
        assert_eq!(run.latency, [(1.024, 6), (2.048, 4)]);
        assert_eq!(run.workers, [6, 4]);
        assert_eq!(run.hosts[0].requests, 21);
    }
}
