//! The per-second record of a load test: the workers' ticks merged in order, written
//! as JSON lines to `--timeline` (or to a file of its own for `--report`, so that the
//! seconds of a long test wait on disk, not in memory).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};

use shared::loadtest::LoadStats;

/// Per-second statistics from all workers, released once every worker has reported
/// that second (or has finished before it). Each worker reports its seconds in order.
pub struct Seconds {
    pending: BTreeMap<u32, Second>,
    /// Per worker: the next second it will report, and whether it has finished.
    next: Vec<(u32, bool)>,
}

/// One second of all workers.
#[derive(Default)]
pub struct Second {
    /// Their statistics, merged.
    pub stats: LoadStats,
    /// Requests each worker finished in it.
    pub per_worker: Vec<u64>,
}

impl Seconds {
    /// Nothing reported yet by any of `workers`.
    pub fn new(workers: usize) -> Seconds {
        Seconds {
            pending: BTreeMap::new(),
            next: vec![(0, false); workers],
        }
    }

    /// Worker `worker` reported `second`.
    pub fn add(&mut self, worker: usize, second: u32, stats: &LoadStats) {
        let workers = self.next.len();
        let entry = self.pending.entry(second).or_default();
        entry.stats.merge(stats);
        entry.per_worker.resize(workers, 0);
        entry.per_worker[worker] += stats.finished();
        self.next[worker].0 = second + 1;
    }

    /// Worker `worker` will report no more seconds.
    pub fn finished(&mut self, worker: usize) {
        self.next[worker].1 = true;
    }

    /// Seconds, in order, that every worker has accounted for.
    pub fn ready(&mut self) -> Vec<(u32, Second)> {
        let mut out = Vec::new();
        while let Some(entry) = self.pending.first_entry() {
            let second = *entry.key();
            if !self
                .next
                .iter()
                .all(|&(next, finished)| finished || next > second)
            {
                break;
            }
            out.push((second, entry.remove()));
        }
        out
    }

    /// Whatever is left, in order.
    pub fn rest(&mut self) -> Vec<(u32, Second)> {
        std::mem::take(&mut self.pending).into_iter().collect()
    }
}

/// Where the seconds go: a file of JSON lines, if any.
pub struct Timeline {
    file: Option<BufWriter<File>>,
    rate: Option<f64>,
    target: String,
}

impl Timeline {
    /// Seconds written to `file`, if any.
    pub fn new(file: Option<File>, rate: Option<f64>, target: &str) -> Timeline {
        Timeline {
            file: file.map(BufWriter::new),
            rate,
            target: target.to_owned(),
        }
    }

    /// Records second number `second` (from 0).
    pub fn record(&mut self, second: u32, s: &Second) -> io::Result<()> {
        if self.file.is_none() {
            return Ok(());
        }
        let line = format!("{}\n", self.line(second, s));
        match &mut self.file {
            Some(file) => file.write_all(line.as_bytes()),
            None => Ok(()),
        }
    }

    /// Flushes the file.
    pub fn finish(mut self) -> io::Result<()> {
        match &mut self.file {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }

    fn line(&self, second: u32, s: &Second) -> serde_json::Value {
        let st = &s.stats;
        // Whole microseconds: as milliseconds they print with at most three decimals.
        let ms = |us: u64| us as f64 / 1e3;
        let statuses: BTreeMap<String, u64> = st
            .statuses
            .iter()
            .map(|(c, n)| (c.to_string(), *n))
            .collect();
        let e = &st.errors;
        let kinds: BTreeMap<&str, u64> = [
            ("connect", e.connect),
            ("tls", e.tls),
            ("timeout", e.timeout),
            ("reset", e.reset),
            ("read", e.read),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
        let mut line = serde_json::json!({
            "second": second + 1,
            "responses": st.responses,
            "rps": st.responses,
            "errors": e.total(),
            "bytes": st.bytes,
            "p50_ms": ms(st.latency.quantile(0.5)),
            "p90_ms": ms(st.latency.quantile(0.9)),
            "p99_ms": ms(st.latency.quantile(0.99)),
            "statuses": statuses,
            "error_kinds": kinds,
            "hist": st.latency.log_buckets(),
            "workers": s.per_worker,
            "target": self.target,
        });
        if let Some(rate) = self.rate {
            line["rate"] = rate.into();
            line["intended_p50_ms"] = ms(st.intended.quantile(0.5)).into();
            line["intended_p99_ms"] = ms(st.intended.quantile(0.99)).into();
        }
        line
    }
}
