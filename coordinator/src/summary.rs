//! Run statistics: latency histograms per worker and in all, and the closing summary.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use shared::http_url::redact_password;
use shared::protocol::{JobReport, Outcome, WorkerStats};

use crate::chain::ChainTally;
use crate::numbers;
use crate::robots::RobotsTally;

/// Failures named in the summary at most; the manifest has them all.
const SHOWN_FAILURES: usize = 5;
/// A worker whose event loop was late by more than this is warned about.
/// (Timer lateness includes the OS scheduler's delays, so a busy machine alone can
/// show tens of milliseconds; the warning is for loops that were really blocked.)
const LAG_WARNING: Duration = Duration::from_millis(500);

/// Counts and latencies of a set of batches.
pub struct Tally {
    /// Batches stored.
    pub ok: u64,
    /// Batches failed.
    pub failed: u64,
    /// Batches not fetched on purpose (robots.txt disallows them).
    pub skipped: u64,
    /// Of the batches stored, those a refresh found unchanged (304): their file was
    /// kept.
    pub unchanged: u64,
    /// Body bytes.
    pub bytes: u64,
    latency_us: Histogram<u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            ok: 0,
            failed: 0,
            skipped: 0,
            unchanged: 0,
            bytes: 0,
            // 1 µs to 1 h at 3 significant digits; larger values saturate.
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant histogram bounds are valid"),
        }
    }

    fn record(&mut self, report: &JobReport) {
        match report.outcome {
            Outcome::Saved { .. } | Outcome::Fetched { .. } => self.ok += 1,
            Outcome::Unchanged { .. } => {
                self.ok += 1;
                self.unchanged += 1;
            }
            Outcome::Failed { .. } => self.failed += 1,
            // Took no time and no request: kept out of the latencies.
            Outcome::Skipped { .. } => {
                self.skipped += 1;
                return;
            }
        }
        self.bytes += report.bytes;
        self.latency_us.saturating_record(report.elapsed_us.max(1));
    }

    fn latency(&self, quantile: f64) -> Duration {
        Duration::from_micros(self.latency_us.value_at_quantile(quantile))
    }

    /// Batches finished: stored, failed or skipped.
    pub fn done(&self) -> u64 {
        self.fetched() + self.skipped
    }

    /// Batches a worker fetched (or tried to): stored or failed.
    fn fetched(&self) -> u64 {
        self.ok + self.failed
    }
}

/// One worker's share.
struct WorkerTally {
    pid: u32,
    tally: Tally,
    stats: WorkerStats,
}

/// Everything the summary reports.
pub struct RunStats {
    started: Instant,
    /// Batches in this run's slice of the plan, when known.
    whole: Option<u64>,
    /// Of which earlier invocations did (a resume continues them).
    before: u64,
    all: Tally,
    workers: Vec<WorkerTally>,
    failures: Vec<(u64, String)>,
    /// Under `--follow-next`: how the chains ended, and how many did not.
    chains: Option<(ChainTally, u64)>,
    /// What robots.txt did (`None` under `--robots ignore`).
    robots: Option<RobotsTally>,
    /// Whether the run is a `--refresh`: the summary then says what changed.
    refresh: bool,
}

impl RunStats {
    /// Starts the clock for `workers` worker slots.
    pub fn new(workers: usize) -> RunStats {
        RunStats {
            started: Instant::now(),
            whole: None,
            before: 0,
            all: Tally::new(),
            workers: (0..workers)
                .map(|_| WorkerTally {
                    pid: 0,
                    tally: Tally::new(),
                    stats: WorkerStats::default(),
                })
                .collect(),
            failures: Vec::new(),
            chains: None,
            robots: None,
            refresh: false,
        }
    }

    /// Notes that the run is a `--refresh`.
    pub fn set_refresh(&mut self) {
        self.refresh = true;
    }

    /// What a refresh made of its batches: changed (a new body), unchanged (304) and
    /// failed (the old file kept); `None` for other runs.
    fn refreshed(&self) -> Option<(u64, u64, u64)> {
        let all = &self.all;
        self.refresh
            .then_some((all.ok - all.unchanged, all.unchanged, all.failed))
    }

    /// Notes how the chains of a `--follow-next` run ended, and how many are left
    /// unfinished.
    pub fn set_chains(&mut self, tally: ChainTally, unfinished: u64) {
        self.chains = Some((tally, unfinished));
    }

    /// Counts one finished batch of worker `slot`.
    pub fn record(&mut self, slot: usize, report: &JobReport) {
        self.all.record(report);
        if matches!(report.outcome, Outcome::Skipped { .. }) {
            // No worker fetched it: it counts for the run alone.
            return;
        }
        self.workers[slot].tally.record(report);
        if let Outcome::Failed { error } = &report.outcome
            && self.failures.len() < SHOWN_FAILURES
        {
            self.failures.push((
                report.batch.index,
                format!("{}: {error}", redact_password(&report.url)),
            ));
        }
    }

    /// Notes the size of the plan's slice and how much of it earlier invocations did.
    pub fn set_plan(&mut self, whole: Option<u64>, before: u64) {
        self.whole = whole;
        self.before = before;
    }

    /// Notes what robots.txt did in the run.
    pub fn set_robots(&mut self, tally: RobotsTally) {
        self.robots = Some(tally);
    }

    /// Notes the process id of the worker in `slot`.
    pub fn set_pid(&mut self, slot: usize, pid: u32) {
        self.workers[slot].pid = pid;
    }

    /// Adds the totals a worker sent when it left (a slot may see several workers).
    pub fn add_worker_stats(&mut self, slot: usize, stats: WorkerStats) {
        let w = &mut self.workers[slot].stats;
        w.requests += stats.requests;
        w.max_loop_lag_us = w.max_loop_lag_us.max(stats.max_loop_lag_us);
    }

    /// Totals so far.
    pub fn all(&self) -> &Tally {
        &self.all
    }

    /// Time since the run started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The closing summary as one JSON object, for scripts.
    pub fn to_json(&self, stopped_by: Option<&str>, exit_code: i32) -> serde_json::Value {
        let wall = self.elapsed().as_secs_f64();
        let latency = |t: &Tally| {
            serde_json::json!({
                "p50": numbers::ms(t.latency(0.5).as_secs_f64() * 1e3),
                "p90": numbers::ms(t.latency(0.9).as_secs_f64() * 1e3),
                "p99": numbers::ms(t.latency(0.99).as_secs_f64() * 1e3),
                "max": numbers::ms(t.latency(1.0).as_secs_f64() * 1e3),
            })
        };
        let workers: Vec<_> = self
            .workers
            .iter()
            .enumerate()
            .map(|(slot, w)| {
                serde_json::json!({
                    "worker": slot,
                    "pid": w.pid,
                    "ok": w.tally.ok,
                    "failed": w.tally.failed,
                    "bytes": w.tally.bytes,
                    "requests": w.stats.requests,
                    "latency_ms": latency(&w.tally),
                    "max_loop_lag_ms": numbers::us_as_ms(w.stats.max_loop_lag_us),
                })
            })
            .collect();
        let robots = self.robots.map(|r| {
            serde_json::json!({
                "hosts": r.hosts,
                "with_rules": r.with_rules,
                "allow_all": r.allow_all,
                "disallow_all": r.disallow_all,
                "crawl_delays": r.crawl_delays,
            })
        });
        serde_json::json!({
            "ok": self.all.ok,
            "failed": self.all.failed,
            "skipped": self.all.skipped,
            "robots": robots,
            "requests": self.workers.iter().map(|w| w.stats.requests).sum::<u64>(),
            "bytes": self.all.bytes,
            "wall_s": numbers::secs(wall),
            "pages_per_s": numbers::rate(self.all.fetched() as f64 / wall.max(1e-9)),
            "latency_ms": latency(&self.all),
            "workers": workers,
            "plan_batches": self.whole,
            "done_before": self.before,
            "chains": self.chains.map(|(t, unfinished)| serde_json::json!({
                "last": t.last,
                "loop": t.loops,
                "max_pages": t.max_pages,
                "failed": t.failed,
                "unfinished": unfinished,
            })),
            "refresh": self.refreshed().map(|(changed, unchanged, failed)| serde_json::json!({
                "changed": changed,
                "unchanged": unchanged,
                "failed": failed,
            })),
            "stopped_by": stopped_by,
            "exit_code": exit_code,
        })
    }

    /// The closing summary, several lines; `record` says where the batches went.
    pub fn render(&self, record: &str) -> String {
        let wall = self.elapsed().as_secs_f64().max(1e-9);
        let all = &self.all;
        let mut out = String::new();
        // Under --follow-next a batch is a chain, and each of its pages a line.
        let unit = if self.chains.is_some() {
            "pages"
        } else {
            "batches"
        };
        let skipped = match all.skipped {
            0 => String::new(),
            n => format!(", {n} skipped (robots.txt)"),
        };
        let _ = writeln!(
            out,
            "done: {} {unit} ok, {} failed{skipped} in {wall:.2} s: {:.1} pages/s, {} ({}/s)",
            all.ok,
            all.failed,
            all.fetched() as f64 / wall,
            bytes(all.bytes as f64),
            bytes(all.bytes as f64 / wall),
        );
        if self.before > 0 {
            let whole = self
                .whole
                .map_or_else(|| "its".to_owned(), |w| w.to_string());
            let _ = writeln!(
                out,
                "plan: {} of {whole} batches done; {} in this invocation",
                self.before + all.done(),
                all.done()
            );
        }
        if let Some((t, unfinished)) = self.chains {
            let _ = writeln!(
                out,
                "chains: {} ended ({} at their last page, {} loops, {} at --max-pages, {} failed), {unfinished} unfinished",
                t.ended(),
                t.last,
                t.loops,
                t.max_pages,
                t.failed,
            );
        }
        // Only when robots.txt made a difference: a host with rules, or one that could
        // not be had.
        if let Some(r) = self.robots.filter(|r| r.with_rules + r.disallow_all > 0) {
            let _ = writeln!(
                out,
                "robots.txt: {} host{}: {} with rules, {} with none (all allowed), {} unreachable or failing (all disallowed){}",
                r.hosts,
                if r.hosts == 1 { "" } else { "s" },
                r.with_rules,
                r.allow_all,
                r.disallow_all,
                match r.crawl_delays {
                    0 => String::new(),
                    n => format!("; a Crawl-delay from {n}"),
                }
            );
        }
        if let Some((changed, unchanged, failed)) = self.refreshed() {
            let _ = writeln!(
                out,
                "refresh: {changed} changed, {unchanged} unchanged, {failed} failed"
            );
        }
        if all.fetched() > 0 {
            let _ = writeln!(
                out,
                "latency: p50 {}, p99 {}, max {}",
                ms(all.latency(0.5)),
                ms(all.latency(0.99)),
                ms(all.latency(1.0)),
            );
        }
        for (slot, w) in self.workers.iter().enumerate() {
            let lag = Duration::from_micros(w.stats.max_loop_lag_us);
            let _ = writeln!(
                out,
                "worker {slot} (pid {}): {} ok, {} failed, {} requests, p50 {}, p99 {}, loop lag max {}{}",
                w.pid,
                w.tally.ok,
                w.tally.failed,
                w.stats.requests,
                ms(w.tally.latency(0.5)),
                ms(w.tally.latency(0.99)),
                ms(lag),
                if lag > LAG_WARNING {
                    " (warning: its event loop was blocked)"
                } else {
                    ""
                },
            );
        }
        for (index, error) in &self.failures {
            let _ = writeln!(out, "failed batch {index}: {error}");
        }
        if all.failed > self.failures.len() as u64 {
            let _ = writeln!(
                out,
                "... and {} more failures",
                all.failed - self.failures.len() as u64
            );
        }
        let _ = writeln!(out, "{record}");
        out
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Bytes in binary units, e.g. "3.2 MiB".
pub fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::plan::Batch;

    fn report(i: u64, us: u64, ok: bool) -> JobReport {
        JobReport {
            batch: Batch::single(i),
            url: format!("http://h/{i}"),
            status: Some(200),
            bytes: 1000,
            elapsed_us: us,
            attempts: 1,
            outcome: if ok {
                Outcome::Saved { file: "f".into() }
            } else {
                Outcome::Failed {
                    error: "HTTP 500".into(),
                }
            },
            chain: None,
            validators: Default::default(),
        }
    }

    #[test]
    fn a_refresh_says_what_changed() {
        let mut stats = RunStats::new(1);
        stats.set_refresh();
        for i in 0..10 {
            let mut r = report(i, 1000, i != 9);
            if i < 6 {
                r.outcome = Outcome::Unchanged { file: "f".into() };
            }
            stats.record(0, &r);
        }
        let text = stats.render("manifest: out/manifest.jsonl");
        assert!(
            text.contains("refresh: 3 changed, 6 unchanged, 1 failed"),
            "{text}"
        );
        let json = stats.to_json(None, 1);
        assert_eq!(json["refresh"]["changed"], 3);
        assert_eq!(json["refresh"]["unchanged"], 6);
        assert_eq!(json["refresh"]["failed"], 1);
        assert!(RunStats::new(1).to_json(None, 0)["refresh"].is_null());
    }

    #[test]
    fn summary_counts_and_percentiles_follow_the_reports() {
        let mut stats = RunStats::new(2);
        for i in 0..100 {
            stats.record((i % 2) as usize, &report(i, (i + 1) * 1000, i != 7));
        }
        assert_eq!(stats.all().ok, 99);
        assert_eq!(stats.all().failed, 1);
        let p50 = stats.all().latency(0.5).as_millis();
        assert!((49..=51).contains(&p50), "{p50}");
        let json = stats.to_json(None, 1);
        assert_eq!(json["ok"], 99);
        assert_eq!(json["workers"][1]["failed"], 1);
        let text = stats.render("manifest: out/manifest.jsonl");
        assert!(text.contains("99 batches ok, 1 failed"));
        assert!(text.contains("failed batch 7: http://h/7: HTTP 500"));
        assert!(text.contains("worker 1 (pid 0): 49 ok, 1 failed"));
    }

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(3.5 * 1024.0 * 1024.0), "3.5 MiB");
    }
}
