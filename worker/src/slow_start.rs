//! Per-host slow start (`--adaptive on`): the first requests a worker sends to a host
//! go at a rate that starts at [`FIRST_RATE`] and doubles every [`DOUBLING`], after a
//! first burst of [`BURST`], until [`ENDS_AFTER`] (about two million a second by then).
//!
//! Why: a host that counts requests per second (`429` above R a second) answers fast,
//! so a worker that starts all its `--concurrency` requests at once sends hundreds over
//! R before the first `429` can slow anyone down (at `-c 256` and 2 workers against
//! R = 200, 312 of the first 512). Ramping the rate bounds that overshoot to what goes
//! out while the first `429` travels back (a few milliseconds at the ramp's rate), and
//! costs a host that answers slowly nothing it would notice: the ramp passes 5,000
//! requests within 75 ms, about as fast as a worker opens their connections.
//! A rate from the coordinator ends the ramp (the adaptive rate takes over).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

// tokio's clock, so that tests can run it paused.
use tokio::time::Instant;

/// Requests that go at once.
const BURST: u64 = 64;
/// The rate after the burst, per second.
const FIRST_RATE: f64 = 2000.0;
/// The rate doubles this often.
const DOUBLING: Duration = Duration::from_millis(10);
/// The ramp is over this long after a host's first request.
const ENDS_AFTER: Duration = Duration::from_millis(100);

/// One host's ramp in one worker.
pub struct Ramp {
    start: Instant,
    /// Requests that took a turn.
    taken: AtomicU64,
    /// Set when the coordinator sets the host's rate.
    ended: AtomicBool,
}

impl Ramp {
    /// A ramp starting now, with the host's first request.
    pub fn new() -> Ramp {
        Ramp {
            start: Instant::now(),
            taken: AtomicU64::new(0),
            ended: AtomicBool::new(false),
        }
    }

    /// When the next request may go: `None` for at once.
    pub fn turn(&self) -> Option<Instant> {
        if self.ended.load(Ordering::Relaxed) {
            return None;
        }
        let now = Instant::now();
        if now >= self.start + ENDS_AFTER {
            self.end();
            return None;
        }
        let n = self.taken.fetch_add(1, Ordering::Relaxed);
        let at = self.start + send_time(n);
        (at > now).then_some(at)
    }

    /// From now on requests go at once (as far as the ramp is concerned).
    pub fn end(&self) {
        self.ended.store(true, Ordering::Relaxed);
    }
}

/// How long after the ramp's start its `n`th request (from 0) may go: the time by
/// which `BURST + FIRST_RATE * ∫ 2^(t/DOUBLING) dt` reaches `n + 1`.
fn send_time(n: u64) -> Duration {
    if n < BURST {
        return Duration::ZERO;
    }
    let doubling = DOUBLING.as_secs_f64();
    let beyond = (n - BURST + 1) as f64;
    let t = doubling * (1.0 + beyond * std::f64::consts::LN_2 / (FIRST_RATE * doubling)).log2();
    Duration::from_secs_f64(t).min(ENDS_AFTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burst_goes_at_once_then_the_rate_doubles_until_the_end() {
        assert_eq!(send_time(0), Duration::ZERO);
        assert_eq!(send_time(BURST - 1), Duration::ZERO);
        // Right after the burst, about FIRST_RATE: the next request half a
        // millisecond later.
        let first = send_time(BURST).as_secs_f64();
        assert!((first - 1.0 / FIRST_RATE).abs() < 1e-4, "{first}");
        // 5,000 requests within 75 ms, and every later one by the end.
        assert!(send_time(5_000) < Duration::from_millis(75));
        assert_eq!(send_time(10_000_000), ENDS_AFTER);
        // Each 10 ms lets about twice as many go as the 10 ms before.
        let count_by = |ms: u64| {
            (0..100_000)
                .filter(|&n| send_time(n) <= Duration::from_millis(ms))
                .count() as f64
        };
        let (a, b, c) = (count_by(30), count_by(40), count_by(50));
        let ratio = (c - b) / (b - a);
        assert!((ratio - 2.0).abs() < 0.1, "{ratio}");
    }

    #[tokio::test(start_paused = true)]
    async fn turns_wait_their_time_and_an_ended_ramp_lets_all_go() {
        let ramp = Ramp::new();
        for _ in 0..BURST {
            assert_eq!(ramp.turn(), None);
        }
        let next = ramp.turn().expect("past the burst, a request waits");
        assert!(next > Instant::now());
        ramp.end();
        assert_eq!(ramp.turn(), None);
        // Past its end a ramp lets everything go, and remembers it.
        let late = Ramp::new();
        tokio::time::advance(ENDS_AFTER).await;
        for _ in 0..100_000 {
            assert_eq!(late.turn(), None);
        }
        assert!(late.ended.load(Ordering::Relaxed));
    }
}
