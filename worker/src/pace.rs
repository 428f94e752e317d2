//! `--rate`: a worker's requests spaced evenly at its share of the rate.

use std::sync::Mutex;
use std::time::Duration;

// tokio's clock, so that tests can run it paused.
use tokio::time::Instant;

/// Spaces requests evenly at a fixed rate: each takes the next free send time, and no
/// two go out closer than the interval, even when the loop wakes some late (a late
/// wake-up would otherwise bunch requests and put more than the rate in a second).
pub struct Pacer {
    state: Mutex<State>,
}

struct State {
    interval: Duration,
    /// The next free send time.
    next: Instant,
    /// When the last request went (or is set to go).
    last: Option<Instant>,
}

impl Pacer {
    /// Requests at `per_second`, from now.
    pub fn new(per_second: f64) -> Pacer {
        Pacer {
            state: Mutex::new(State {
                interval: interval(per_second),
                next: Instant::now(),
                last: None,
            }),
        }
    }

    /// From now on, requests at `per_second`; the next goes one new interval after the
    /// last.
    pub fn set_rate(&self, per_second: f64) {
        let mut state = self.lock();
        state.interval = interval(per_second);
        if let Some(last) = state.last {
            state.next = last + state.interval;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // One thread uses it, so the lock is never contended; a poisoned lock still
        // holds valid times.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// No request goes before `until`, those already waiting for their turn included;
    /// after it they go one interval apart again.
    pub fn hold_until(&self, until: Instant) {
        let mut state = self.lock();
        state.next = state.next.max(until);
        let before = until.checked_sub(state.interval).unwrap_or(until);
        state.last = Some(state.last.map_or(before, |last| last.max(before)));
    }

    /// Whether no request is waiting for its turn and the next may go at once.
    pub fn is_idle(&self) -> bool {
        self.lock().next <= Instant::now()
    }

    /// Waits for this request's send time.
    pub async fn wait(&self) {
        let at = {
            let mut state = self.lock();
            let at = state.next.max(Instant::now());
            state.next = at + state.interval;
            at
        };
        tokio::time::sleep_until(at).await;
        let go = {
            let mut state = self.lock();
            let now = Instant::now();
            let go = state
                .last
                .map_or(now, |last| now.max(last + state.interval));
            state.last = Some(go);
            state.next = state.next.max(go + state.interval);
            go
        };
        tokio::time::sleep_until(go).await;
    }
}

fn interval(per_second: f64) -> Duration {
    Duration::from_secs_f64(1.0 / per_second.max(1e-3))
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
