//! Measures how late the event loop wakes a timer: a blocked loop shows up here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shared::protocol::FromWorker;
use tokio::sync::mpsc;

use crate::ipc::Outgoing;

const TICK: Duration = Duration::from_millis(50);

/// A background task that records the worst scheduling lag of this event loop.
pub struct LagProbe {
    max_us: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
    /// Sends the worst lag to the coordinator once a second while it grows.
    reporting: Option<tokio::task::JoinHandle<()>>,
}

impl LagProbe {
    /// Starts probing on the current runtime.
    pub fn start() -> Self {
        let max_us = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&max_us);
        let task = tokio::spawn(async move {
            loop {
                let due = Instant::now() + TICK;
                tokio::time::sleep(TICK).await;
                let late = Instant::now().saturating_duration_since(due);
                seen.fetch_max(late.as_micros() as u64, Ordering::Relaxed);
            }
        });
        LagProbe {
            max_us,
            task,
            reporting: None,
        }
    }

    /// Sends the worst lag so far to the coordinator (for `--metrics`) after the first
    /// second and each second in which it grew. Weakly: the report channel closes when the session's own sender
    /// goes.
    pub fn report_to(&mut self, reports: mpsc::WeakUnboundedSender<Outgoing>) {
        let seen = Arc::clone(&self.max_us);
        self.reporting = Some(tokio::spawn(async move {
            let mut sent = None;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let max_us = seen.load(Ordering::Relaxed);
                if sent.is_some_and(|sent| max_us <= sent) {
                    continue;
                }
                let Some(reports) = reports.upgrade() else {
                    return;
                };
                let _ = reports.send(Outgoing::Message(FromWorker::LoopLag { max_us }));
                sent = Some(max_us);
            }
        }));
    }

    /// The worst lag seen so far, in microseconds.
    pub fn max_us(&self) -> u64 {
        self.max_us.load(Ordering::Relaxed)
    }
}

impl Drop for LagProbe {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(reporting) = &self.reporting {
            reporting.abort();
        }
    }
}
