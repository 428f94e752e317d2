//! `--rate`: a worker's requests spaced evenly at its share of the rate; and a host's
//! rate (`--per-host-rate`, the adaptive one).

use std::sync::Mutex;
use std::time::Duration;

// tokio's clock, so that tests can run it paused.
use tokio::time::Instant;

/// Spaces requests evenly at a fixed rate: each takes the next free send time, and no
/// two go out closer than the interval times `gap`, even when the loop wakes some late
/// (a late wake-up would otherwise bunch requests and put more than the rate in a
/// second). With a `gap` of 1 every late wake-up delays all later requests (a host's
/// limit is never passed, the run takes longer); below 1 the requests after a late one
/// catch up on their times, at most at the rate divided by `gap`.
pub struct Pacer {
    state: Mutex<State>,
    gap: f64,
}

struct State {
    interval: Duration,
    /// The next free send time.
    next: Instant,
    /// When the last request went (or is set to go).
    last: Option<Instant>,
}

impl Pacer {
    /// Requests at `per_second`, from now, never two closer than the interval: what a
    /// host's limit takes.
    pub fn new(per_second: f64) -> Pacer {
        Pacer::with_gap(per_second, 1.0)
    }

    /// Requests at `per_second` on average, from now: late ones are caught up at up to
    /// 10% over the rate (what `--rate` takes: its run lasts as long as its rate says
    /// on a busy machine too, and no second holds more than 10% over the rate).
    pub fn catching_up(per_second: f64) -> Pacer {
        Pacer::with_gap(per_second, 1.0 / 1.1)
    }

    fn with_gap(per_second: f64, gap: f64) -> Pacer {
        Pacer {
            state: Mutex::new(State {
                interval: interval(per_second),
                next: Instant::now(),
                last: None,
            }),
            gap,
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
        tokio::time::sleep_until(self.take_turn()).await;
        tokio::time::sleep_until(self.release(Instant::now())).await;
    }

    /// This request's place on the schedule: the next free send time.
    fn take_turn(&self) -> Instant {
        let mut state = self.lock();
        let at = state.next.max(Instant::now());
        state.next = at + state.interval;
        at
    }

    /// When a request woken at `now` for its turn goes: not closer to the last than the
    /// interval times `gap`. A strict pacer's schedule moves with it (every later turn
    /// is as late); a catching-up one keeps its schedule, so the next ones catch up.
    fn release(&self, now: Instant) -> Instant {
        let mut state = self.lock();
        let gap = state.interval.mul_f64(self.gap);
        let go = state.last.map_or(now, |last| now.max(last + gap));
        state.last = Some(go);
        if self.gap >= 1.0 {
            state.next = state.next.max(go + state.interval);
        }
        go
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

    #[tokio::test(start_paused = true)]
    async fn after_a_late_wake_up_a_strict_pacer_stays_late_and_a_catching_up_one_catches_up() {
        let start = Instant::now();
        let ms = |t: Instant| t.duration_since(start).as_secs_f64() * 1000.0;
        // Ten requests at 10/s, all waiting; the second one's wake-up comes 50 ms late.
        let sends = |pacer: &Pacer| -> Vec<f64> {
            (0..10)
                .map(|i| {
                    let turn = pacer.take_turn();
                    let woke = match i {
                        1 => turn + Duration::from_millis(50),
                        _ => turn,
                    };
                    ms(pacer.release(woke))
                })
                .collect()
        };
        let strict = sends(&Pacer::new(10.0));
        assert!((strict[9] - 950.0).abs() < 0.01, "{strict:?}");
        let caught = sends(&Pacer::catching_up(10.0));
        assert!((caught[9] - 900.0).abs() < 0.01, "{caught:?}");
        let closest = caught
            .windows(2)
            .map(|w| w[1] - w[0])
            .fold(f64::MAX, f64::min);
        assert!(closest >= 1000.0 / 11.0 - 0.01, "{caught:?}");
    }
}
