//! Measures how late the event loop wakes a timer: a blocked loop shows up here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(50);

/// A background task that records the worst scheduling lag of this event loop.
pub struct LagProbe {
    max_us: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
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
        LagProbe { max_us, task }
    }

    /// The worst lag seen so far, in microseconds.
    pub fn max_us(&self) -> u64 {
        self.max_us.load(Ordering::Relaxed)
    }
}

impl Drop for LagProbe {
    fn drop(&mut self) {
        self.task.abort();
    }
}
