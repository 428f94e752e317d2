//! Adaptive throttling (`--adaptive on`, the default): a host that answers 429 or 503
//! slows down for every worker at once, and speeds up again while it answers well.
//!
//! AIMD on each host's request rate, decided here and sent to the workers: on a
//! throttle the rate is cut to 90% of what the host actually served in the last
//! second (at most one cut a second: a cut shows only in requests sent after it); each
//! second without one it grows by 5% of the rate of the cut, and once it is four times the rate of its last
//! cut the limit is lifted. AIMD because it is what converges when many clients share
//! one server (each cut frees room for the others, each raise probes for more), and
//! because a rate, unlike a window of requests in flight, is what servers count
//! (`429` above R requests a second).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How much of the served rate a cut keeps.
const CUT: f64 = 0.9;
/// Growth per second without a throttle, as a share of the rate of the last cut
/// (additive).
const RAISE: f64 = 0.05;
/// A rate this many times its last cut lifts the limit.
const LIFT: f64 = 4.0;

/// The adaptive rates of a run's hosts.
pub struct Throttle {
    hosts: HashMap<String, HostRate>,
    /// Successful batches per host over the last second, in tenths of a second.
    served: HashMap<String, Ring>,
    last_raise: Instant,
    start: Instant,
}

struct HostRate {
    rate: f64,
    cut_at: Instant,
    cut_to: f64,
    /// The most the host served in a second lately (decaying by 5% a second): a rate
    /// below it grows halfway to it each second, as a known good rate.
    peak: f64,
}

/// Counts over the last second, in ten slots of 100 ms.
struct Ring {
    slots: [u64; 10],
    /// The tenth of a second (since the run began) of the newest slot.
    at: u64,
}

impl Ring {
    fn add(&mut self, tenth: u64) {
        self.advance(tenth);
        self.slots[(tenth % 10) as usize] += 1;
    }

    fn advance(&mut self, tenth: u64) {
        if tenth > self.at {
            for t in (self.at + 1)..=tenth.min(self.at + 10) {
                self.slots[(t % 10) as usize] = 0;
            }
            self.at = tenth;
        }
    }

    /// Batches over the last second: what a host that counts requests per second
    /// let through, once it throttles.
    fn last_second(&mut self, tenth: u64) -> u64 {
        self.advance(tenth);
        self.slots.iter().sum()
    }
}

impl Throttle {
    /// No host throttled yet.
    pub fn new(now: Instant) -> Throttle {
        Throttle {
            hosts: HashMap::new(),
            served: HashMap::new(),
            last_raise: now,
            start: now,
        }
    }

    fn tenth(&self, now: Instant) -> u64 {
        (now.duration_since(self.start).as_millis() / 100) as u64
    }

    /// A batch of `origin` was served. Counted for up to 10,000 hosts: what a first cut
    /// starts from.
    pub fn served(&mut self, origin: &str, now: Instant) {
        let tenth = self.tenth(now);
        if let Some(ring) = self.served.get_mut(origin) {
            ring.add(tenth);
            if let Some(host) = self.hosts.get_mut(origin) {
                host.peak = host.peak.max(ring.last_second(tenth) as f64);
            }
        } else if self.served.len() < 10_000 {
            let mut ring = Ring {
                slots: [0; 10],
                at: tenth,
            };
            ring.add(tenth);
            self.served.insert(origin.to_owned(), ring);
        }
    }

    /// `origin` answered 429 or 503: its new rate (all workers together), if this is
    /// a cut.
    pub fn throttled(&mut self, origin: &str, now: Instant) -> Option<f64> {
        let tenth = self.tenth(now);
        // Nothing served yet: no rate to start from; the next throttle decides.
        let served = self.served.get_mut(origin)?.last_second(tenth);
        if served == 0 {
            return None;
        }
        if let Some(host) = self.hosts.get(origin)
            && now.duration_since(host.cut_at) < Duration::from_secs(1)
        {
            return None;
        }
        let rate = (served as f64 * CUT).max(1.0);
        let peak = self.hosts.get(origin).map_or(served as f64, |h| h.peak);
        self.hosts.insert(
            origin.to_owned(),
            HostRate {
                rate,
                cut_at: now,
                cut_to: rate,
                peak,
            },
        );
        Some(rate)
    }

    /// Once a second: the hosts whose rate grows (`Some`) or is lifted (`None`).
    pub fn tick(&mut self, now: Instant) -> Vec<(String, Option<f64>)> {
        if now.duration_since(self.last_raise) < Duration::from_secs(1) {
            return Vec::new();
        }
        self.last_raise = now;
        let mut changes = Vec::new();
        self.hosts.retain(|origin, host| {
            if now.duration_since(host.cut_at) < Duration::from_secs(1) {
                return true;
            }
            let recover = (host.peak * CUT - host.rate) / 2.0;
            host.rate += (host.cut_to * RAISE).max(recover);
            host.peak *= 0.95;
            if host.rate >= host.cut_to * LIFT {
                changes.push((origin.clone(), None));
                return false;
            }
            changes.push((origin.clone(), Some(host.rate)));
            true
        });
        changes
    }

    /// The next time [`Throttle::tick`] has something to do.
    pub fn wake_at(&self) -> Option<Instant> {
        (!self.hosts.is_empty()).then(|| self.last_raise + Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_cuts_once_a_second_and_quiet_seconds_raise_then_lift() {
        let t0 = Instant::now();
        let mut t = Throttle::new(t0);
        for _ in 0..200 {
            t.served("http://h:80", t0);
        }
        let cut = t.throttled("http://h:80", t0).unwrap();
        assert!((cut - 180.0).abs() < 1e-9, "{cut}");
        assert_eq!(
            t.throttled("http://h:80", t0 + Duration::from_millis(500)),
            None
        );
        let mut at = t0;
        let mut rates = Vec::new();
        loop {
            at += Duration::from_secs(1);
            match t.tick(at).pop() {
                Some((_, Some(rate))) => rates.push(rate),
                Some((_, None)) => break,
                None => {}
            }
            assert!(rates.len() < 100, "never lifted");
        }
        assert!(rates.windows(2).all(|w| w[1] > w[0]));
        assert!(t.wake_at().is_none());
    }
}
