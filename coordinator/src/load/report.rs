//! The load-test report: merged worker statistics as text (like wrk and oha print) or
//! JSON, with the generator's own CPU and memory, and a warning when the generator
//! rather than the server was the bottleneck.

use std::fmt::Write as _;
use std::time::Duration;

use shared::loadtest::{Hist, LoadReport, LoadStats};

use super::spec::LoadPlan;
use super::thresholds::Measured;
use crate::numbers;
use crate::summary::bytes;

/// A worker busier than this share of one core was probably the bottleneck.
const BUSY_SHARE: f64 = 0.9;
/// A request sent later than this after its due time was sent late (timers have a
/// resolution of 1 ms, so up to that is the clock, not the generator).
const LATE_US: u64 = 5_000;

/// One worker's result.
pub struct WorkerResult {
    /// Its process id.
    pub pid: u32,
    /// Its closing report.
    pub report: LoadReport,
}

/// Everything measured.
pub struct Results {
    /// All workers' statistics merged.
    pub total: LoadStats,
    /// Per worker.
    pub workers: Vec<WorkerResult>,
    /// Length of the test: the longest worker's.
    pub wall: Duration,
    /// CPU time of the coordinator process, microseconds.
    pub coordinator_cpu_us: u64,
    /// Peak resident memory of the coordinator, KiB.
    pub coordinator_rss_kib: u64,
}

impl Results {
    /// Merges the workers' reports.
    pub fn new(
        workers: Vec<WorkerResult>,
        coordinator_cpu_us: u64,
        coordinator_rss_kib: u64,
    ) -> Results {
        let mut total = LoadStats::default();
        for w in &workers {
            total.merge(&w.report.stats);
        }
        let wall =
            Duration::from_micros(workers.iter().map(|w| w.report.wall_us).max().unwrap_or(0));
        Results {
            total,
            workers,
            wall,
            coordinator_cpu_us,
            coordinator_rss_kib,
        }
    }

    fn rps(&self) -> f64 {
        self.total.responses as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn cpu_us(&self) -> u64 {
        self.coordinator_cpu_us + self.workers.iter().map(|w| w.report.cpu_us).sum::<u64>()
    }

    fn rss_kib(&self) -> u64 {
        self.coordinator_rss_kib
            + self
                .workers
                .iter()
                .map(|w| w.report.max_rss_kib)
                .sum::<u64>()
    }

    /// CPU time of the generator (all its processes) per finished request, µs.
    fn cpu_per_request_us(&self) -> f64 {
        self.cpu_us() as f64 / self.total.finished().max(1) as f64
    }

    /// Workers that used nearly a whole core: the generator was the bottleneck there.
    fn busy_workers(&self) -> Vec<(usize, f64)> {
        self.workers
            .iter()
            .enumerate()
            .map(|(i, w)| (i, w.report.cpu_us as f64 / w.report.wall_us.max(1) as f64))
            .filter(|(_, share)| *share >= BUSY_SHARE)
            .collect()
    }

    /// Values for `--fail-if`: latency from the intended send time when the rate is
    /// fixed (what a user waiting on that schedule sees), else service time; errors
    /// are failed requests and 5xx responses.
    pub fn measured(&self, fixed_rate: bool) -> Measured {
        let t = &self.total;
        let latency = if fixed_rate {
            t.intended.clone()
        } else {
            t.latency.clone()
        };
        let server_errors: u64 = t
            .statuses
            .iter()
            .filter(|(s, _)| *s >= 500)
            .map(|(_, n)| n)
            .sum();
        Measured {
            mean_us: latency.mean(),
            max_us: latency.max() as f64,
            quantile: Box::new(move |q| latency.quantile(q) as f64),
            errors: (t.errors.total() + server_errors) as f64,
            requests: self.total.finished() as f64,
            rps: self.rps(),
        }
    }

    /// The report for people.
    pub fn render(&self, plan: &LoadPlan) -> String {
        let t = &self.total;
        let secs = self.wall.as_secs_f64().max(1e-9);
        let mut out = String::new();
        let s = |n: u64| if n == 1 { "" } else { "s" };
        let workers = self.workers.len() as u64;
        let _ = writeln!(
            out,
            "Load test of {}: {workers} worker{}, {} connection{}{}{}, {:.2} s",
            plan.target,
            s(workers),
            plan.connections,
            s(plan.connections as u64),
            plan.http2_streams.map_or(String::new(), |m| format!(
                " (HTTP/2, {m} stream{} each)",
                s(m.into())
            )),
            plan.rate
                .map_or(String::new(), |r| format!(", --rate {r}/s")),
            secs
        );
        let errors = t.errors.total();
        let _ = writeln!(
            out,
            "  requests     {} responses ({:.1}/s), {} body ({}/s), {errors} errors ({:.3}%)",
            t.responses,
            self.rps(),
            bytes(t.bytes as f64),
            bytes(t.bytes as f64 / secs),
            100.0 * errors as f64 / t.finished().max(1) as f64
        );
        let _ = writeln!(out, "  service time {}", quantiles(&t.latency));
        if plan.rate.is_some() {
            let _ = writeln!(
                out,
                "  from intended send (no coordinated omission) {}",
                quantiles(&t.intended)
            );
            let late = t.lateness.count_over(LATE_US);
            let _ = writeln!(
                out,
                "  send lateness p99 {}, max {}; {late} requests ({:.2}%) went out over 5 ms late{}",
                ms(t.lateness.quantile(0.99)),
                ms(t.lateness.max()),
                100.0 * late as f64 / t.lateness.len().max(1) as f64,
                if late * 100 > t.lateness.len() {
                    ": the generator fell behind the rate"
                } else {
                    ""
                }
            );
        }
        let _ = writeln!(
            out,
            "  connect      {} ({} connections made)",
            quantiles(&t.connect),
            t.connect.len()
        );
        if !t.handshake.is_empty() {
            let _ = writeln!(out, "  TLS handshake {}", quantiles(&t.handshake));
        }
        let _ = writeln!(out, "  first byte   {}", quantiles(&t.ttfb));
        let mut statuses = t.statuses.clone();
        statuses.sort_unstable();
        let codes: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        let _ = writeln!(
            out,
            "  status codes {}",
            if codes.is_empty() {
                "none".to_owned()
            } else {
                codes.join(", ")
            }
        );
        let e = &t.errors;
        let _ = writeln!(
            out,
            "  errors       connect {}, TLS {}, timeout {}, reset {}, read {}",
            e.connect, e.tls, e.timeout, e.reset, e.read
        );
        let _ = writeln!(
            out,
            "  service time histogram (log-spaced buckets, upper bounds)"
        );
        let buckets = t.latency.log_buckets();
        let most = buckets.iter().map(|b| b.1).max().unwrap_or(1).max(1);
        for (upper, n) in buckets {
            let bar = "■".repeat((40 * n / most) as usize);
            let _ = writeln!(out, "    {:>10} | {bar} {n}", ms(upper));
        }
        self.render_workers(&mut out);
        out
    }

    /// Each worker's share and cost, and the generator's in all.
    fn render_workers(&self, out: &mut String) {
        for (i, w) in self.workers.iter().enumerate() {
            let r = &w.report;
            let _ = writeln!(
                out,
                "  worker {i} (pid {}): {} requests, CPU {:.2} s ({:.1} µs/request, {:.0}% of a core), peak RSS {}",
                w.pid,
                r.stats.finished(),
                r.cpu_us as f64 / 1e6,
                r.cpu_us as f64 / r.stats.finished().max(1) as f64,
                100.0 * r.cpu_us as f64 / r.wall_us.max(1) as f64,
                bytes(r.max_rss_kib as f64 * 1024.0)
            );
        }
        let _ = writeln!(
            out,
            "  generator    CPU {:.2} s in all processes = {:.1} µs/request; peak RSS {} in all processes",
            self.cpu_us() as f64 / 1e6,
            self.cpu_per_request_us(),
            bytes(self.rss_kib() as f64 * 1024.0)
        );
        for (i, share) in self.busy_workers() {
            let _ = writeln!(
                out,
                "warning: worker {i} used {:.0}% of a core: the generator, not the server, may be the bottleneck",
                share * 100.0
            );
        }
    }

    /// The report as JSON.
    pub fn to_json(&self, plan: &LoadPlan, breached: &[String]) -> serde_json::Value {
        let t = &self.total;
        let workers: Vec<_> = self
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                serde_json::json!({
                    "worker": i,
                    "pid": w.pid,
                    "requests": w.report.stats.finished(),
                    "responses": w.report.stats.responses,
                    "cpu_s": numbers::secs(w.report.cpu_us as f64 / 1e6),
                    "wall_s": numbers::secs(w.report.wall_us as f64 / 1e6),
                    "max_rss_bytes": w.report.max_rss_kib * 1024,
                    "latency_ms": quantiles_json(&w.report.stats.latency),
                })
            })
            .collect();
        serde_json::json!({
            "target": plan.target,
            "connections": plan.connections,
            "http2_streams": plan.http2_streams,
            "rate": plan.rate.map(numbers::rate),
            "wall_s": numbers::secs(self.wall.as_secs_f64()),
            "responses": t.responses,
            "requests": t.finished(),
            "rps": numbers::rate(self.rps()),
            "bytes": t.bytes,
            "statuses": t.statuses.iter().map(|(s, n)| (s.to_string(), serde_json::json!(n))).collect::<serde_json::Map<_, _>>(),
            "errors": {
                "connect": t.errors.connect,
                "tls": t.errors.tls,
                "timeout": t.errors.timeout,
                "reset": t.errors.reset,
                "read": t.errors.read,
            },
            "latency_ms": quantiles_json(&t.latency),
            "intended_latency_ms": if plan.rate.is_some() { quantiles_json(&t.intended) } else { serde_json::Value::Null },
            "lateness_ms": if plan.rate.is_some() { quantiles_json(&t.lateness) } else { serde_json::Value::Null },
            "connect_ms": quantiles_json(&t.connect),
            "tls_handshake_ms": quantiles_json(&t.handshake),
            "ttfb_ms": quantiles_json(&t.ttfb),
            "generator": {
                "cpu_s": numbers::secs(self.cpu_us() as f64 / 1e6),
                "cpu_us_per_request": numbers::rate(self.cpu_per_request_us()),
                "max_rss_bytes": self.rss_kib() * 1024,
                "bottleneck_workers": self.busy_workers().iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            },
            "workers": workers,
            "failed_thresholds": breached,
        })
    }
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1e3)
}

fn quantiles(h: &Hist) -> String {
    if h.is_empty() {
        return "n/a".to_owned();
    }
    format!(
        "p50 {}, p90 {}, p99 {}, p99.9 {}, max {} (mean {:.2} ms)",
        ms(h.quantile(0.5)),
        ms(h.quantile(0.9)),
        ms(h.quantile(0.99)),
        ms(h.quantile(0.999)),
        ms(h.max()),
        h.mean() / 1e3
    )
}

fn quantiles_json(h: &Hist) -> serde_json::Value {
    if h.is_empty() {
        return serde_json::Value::Null;
    }
    let ms = numbers::us_as_ms;
    serde_json::json!({
        "p50": ms(h.quantile(0.5)),
        "p90": ms(h.quantile(0.9)),
        "p99": ms(h.quantile(0.99)),
        "p99.9": ms(h.quantile(0.999)),
        "max": ms(h.max()),
        "mean": numbers::ms(h.mean() / 1e3),
        "count": h.len(),
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use shared::loadtest::LoadReport;

    use super::*;
    use crate::cli::{Cli, Command};
    use crate::numbers::{decimals_by_unit, too_precise};

    #[test]
    fn the_json_report_has_no_number_with_more_decimals_than_its_unit_allows() {
        let cli = Cli::try_parse_from([
            "coordinator",
            "load",
            "-w",
            "2",
            "--rate",
            "333.33333",
            "http://127.0.0.1:9/",
        ])
        .unwrap();
        let Some(Command::Load(args)) = cli.command else {
            panic!("not a load command");
        };
        let plan = LoadPlan::from_args(&args).unwrap();
        let worker = |pid: u32, skew: u64| {
            let mut stats = LoadStats::default();
            for i in 0..1000u64 {
                let us = 773 + i * 1001 + skew;
                stats.latency.record(us);
                stats.intended.record(us + 17);
                stats.lateness.record(i % 13);
                stats.connect.record(101 + i);
                stats.ttfb.record(us / 3);
                stats.responses += 1;
                stats.bytes += 777;
            }
            stats.count_status(200, 1000);
            WorkerResult {
                pid,
                report: LoadReport {
                    stats,
                    cpu_us: 1_234_567,
                    max_rss_kib: 4321,
                    wall_us: 3_000_001 + skew,
                },
            }
        };
        let results = Results::new(vec![worker(1, 0), worker(2, 7)], 77_777, 999);
        let json = results.to_json(&plan, &[]);
        let found = too_precise(&json, &decimals_by_unit);
        assert!(found.is_empty(), "too many decimals: {found:?}\n{json}");
        assert_eq!(json["rate"], 333.3);
        let text = results.render(&plan);
        assert!(!text.contains("666.6666"), "{text}");
    }
}
