//! `--metrics ADDR`: live Prometheus metrics of a scrape or a load test, served from a
//! thread of its own.
//!
//! The run's loop owns its numbers ([`ScrapeMetrics`], [`LoadMetrics`]) as plain
//! fields and, at most every [`PUBLISH_EVERY`], copies them into a shared snapshot with
//! `try_lock`: when the server happens to hold the lock the loop skips that copy and
//! goes on, so it never waits for the server. The server clones the snapshot under the
//! lock and renders the page outside it.

mod load;
mod scrape;
mod server;
mod text;

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;

pub use self::load::LoadMetrics;
pub use self::scrape::{ScrapeMetrics, skipped_batches};
use crate::error::UsageError;
use crate::messages;

/// How often the loop copies its numbers for the server at most.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(200);
/// Latency quantiles cover the last 30 to 60 seconds: two windows of this length.
const WINDOW: Duration = Duration::from_secs(30);
/// Quantiles every latency summary shows.
const QUANTILES: [(&str, f64); 5] = [
    ("0.5", 0.5),
    ("0.9", 0.9),
    ("0.99", 0.99),
    ("0.999", 0.999),
    ("1", 1.0),
];

/// Parses `--metrics ADDR`: an IP address and a port (0 picks a free one).
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!("'{text}' is not an address to listen on: IP:PORT, e.g. 127.0.0.1:9464")
    })
}

/// What the server shows.
#[derive(Clone)]
enum Snapshot {
    /// The run has not published anything yet.
    Starting,
    Scrape(Box<scrape::ScrapeState>),
    Load(Box<load::LoadState>),
}

type Shared = Arc<Mutex<Snapshot>>;

/// The metrics endpoint of a run, or nothing when `--metrics` was not given.
pub struct Exporter {
    shared: Option<Shared>,
}

impl Exporter {
    /// Listens on `addr` (when given) and serves the page from a thread of its own;
    /// prints the address it listens on to stderr. An address that cannot be listened
    /// on is a usage error.
    pub fn start(addr: Option<SocketAddr>) -> anyhow::Result<Exporter> {
        let Some(addr) = addr else {
            return Ok(Exporter { shared: None });
        };
        let listener = TcpListener::bind(addr)
            .map_err(|e| UsageError::new("--metrics", format!("cannot listen on {addr}: {e}")))?;
        let bound = listener.local_addr().unwrap_or(addr);
        let shared: Shared = Arc::new(Mutex::new(Snapshot::Starting));
        let page = Arc::clone(&shared);
        thread::Builder::new()
            .name("metrics".into())
            .spawn(move || server::serve(listener, move || render(&page)))
            .context("starting the metrics server")?;
        messages::line(format_args!("metrics: serving http://{bound}/metrics"));
        Ok(Exporter {
            shared: Some(shared),
        })
    }

    /// The recorder of a scrape with `workers` worker slots, each running
    /// `concurrency` requests at most.
    pub fn scrape(&self, workers: usize, concurrency: u32, planned: Option<u64>) -> ScrapeMetrics {
        ScrapeMetrics::new(
            Publisher::new(self.shared.clone()),
            workers,
            concurrency,
            planned,
        )
    }

    /// The recorder of a load test with `workers` workers.
    pub fn load(&self, workers: usize, connections: u64) -> LoadMetrics {
        LoadMetrics::new(Publisher::new(self.shared.clone()), workers, connections)
    }
}

/// The page as it stands: the snapshot cloned under the lock, rendered outside it.
fn render(shared: &Mutex<Snapshot>) -> String {
    let snapshot = shared
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    match snapshot {
        Snapshot::Starting => {
            let mut page = text::Page::new();
            page.single(
                "coordinator_up",
                text::Kind::Gauge,
                "1 while the run goes.",
                1u64,
            );
            page.finish()
        }
        Snapshot::Scrape(state) => state.render(),
        Snapshot::Load(state) => state.render(),
    }
}

/// The loop's side of the snapshot.
struct Publisher {
    shared: Option<Shared>,
    last: Option<Instant>,
}

impl Publisher {
    fn new(shared: Option<Shared>) -> Publisher {
        Publisher { shared, last: None }
    }

    fn enabled(&self) -> bool {
        self.shared.is_some()
    }

    /// Whether a copy is wanted: it is due, or it is the `last`.
    fn wanted(&self, now: Instant, last: bool) -> bool {
        self.enabled()
            && (last
                || self
                    .last
                    .is_none_or(|at| now.duration_since(at) >= PUBLISH_EVERY))
    }

    /// Copies `snapshot` for the server unless it holds the lock right now; with
    /// `wait`, waits for it (at the end of a run, when the loop has nothing else to do).
    fn publish(&mut self, now: Instant, wait: bool, snapshot: impl FnOnce() -> Snapshot) {
        let Some(shared) = &self.shared else { return };
        let guard = if wait {
            Some(shared.lock().unwrap_or_else(PoisonError::into_inner))
        } else {
            match shared.try_lock() {
                Ok(guard) => Some(guard),
                Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            }
        };
        if let Some(mut guard) = guard {
            *guard = snapshot();
            self.last = Some(now);
        }
    }
}

/// Latency over the last 30 to 60 seconds: the current window and the one before,
/// rotated every [`WINDOW`].
#[derive(Clone)]
struct Window<H> {
    current: H,
    previous: H,
    since: Instant,
}

/// A histogram a [`Window`] can hold.
trait Hist: Clone {
    fn empty() -> Self;
    fn add(&mut self, other: &Self);
    fn count(&self) -> u64;
    fn at(&self, q: f64) -> u64;
}

impl<H: Hist> Window<H> {
    fn new() -> Window<H> {
        Window {
            current: H::empty(),
            previous: H::empty(),
            since: Instant::now(),
        }
    }

    /// The current window, rotated first if its time is up.
    fn current(&mut self, now: Instant) -> &mut H {
        let age = now.duration_since(self.since);
        if age >= 2 * WINDOW {
            self.previous = H::empty();
            self.current = H::empty();
            self.since = now;
        } else if age >= WINDOW {
            self.previous = std::mem::replace(&mut self.current, H::empty());
            self.since = now;
        }
        &mut self.current
    }

    /// The quantiles of both windows, `None` when they are empty.
    fn quantiles(&self) -> Vec<(&'static str, Option<u64>)> {
        let mut both = self.current.clone();
        both.add(&self.previous);
        QUANTILES
            .iter()
            .map(|&(name, q)| (name, (both.count() > 0).then(|| both.at(q))))
            .collect()
    }
}

/// Per worker slot: what the workers said about their event loops.
#[derive(Clone, Default)]
struct WorkerRow {
    /// The worst event-loop lag reported, in microseconds, once the worker said it.
    lag_max_us: Option<u64>,
}

/// Notes a worst event-loop lag of `max_us` reported by a worker of `slot`.
fn note_lag(workers: &mut [WorkerRow], slot: usize, max_us: u64) {
    if let Some(w) = workers.get_mut(slot) {
        w.lag_max_us = Some(w.lag_max_us.unwrap_or(0).max(max_us));
    }
}

/// The per-worker families both kinds of run show.
fn render_workers(page: &mut text::Page, workers: &[WorkerRow]) {
    let name = "coordinator_worker_loop_lag_max_seconds";
    page.family(
        name,
        text::Kind::Gauge,
        "Worst event-loop scheduling lag of each worker slot, as its workers reported it.",
    );
    for (slot, w) in workers.iter().enumerate() {
        if let Some(us) = w.lag_max_us {
            page.sample(name, &[("worker", &slot.to_string())], us as f64 / 1e6);
        }
    }
}
