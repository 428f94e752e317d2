//! `--rate`: a worker's requests spaced evenly at its share of the rate.

use std::sync::Mutex;
use std::time::Duration;

// tokio's clock, so that tests can run it paused.
use tokio::time::Instant;

/// Spaces requests evenly at a fixed rate: each takes the next free send time.
pub struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    /// Requests at `per_second`, from now.
    pub fn new(per_second: f64) -> Pacer {
        Pacer {
            interval: Duration::from_secs_f64(1.0 / per_second),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for this request's send time.
    pub async fn wait(&self) {
        let at = {
            // One thread uses it, so the lock is never contended; a poisoned lock
            // still holds a valid time.
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let at = (*next).max(Instant::now());
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_are_spaced_by_the_interval_even_when_they_come_at_once() {
        let pacer = Pacer::new(4.0);
        let start = Instant::now();
        let mut sent = Vec::new();
        for _ in 0..5 {
            pacer.wait().await;
            sent.push(start.elapsed());
        }
        let ms: Vec<u128> = sent.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 250, 500, 750, 1000]);
    }
}
