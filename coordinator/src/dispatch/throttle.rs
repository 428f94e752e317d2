//! Adaptive throttling (`--adaptive on`, the default): a host that answers 429 or 503
//! slows down for every worker at once, and speeds up again while it answers well.
//!
//! AIMD on each host's request rate, decided here and sent to the workers: on a
//! throttle the rate is cut to 90% of what the host actually served in the last
//! second (at most one cut a second: a cut shows only in requests sent after it); each
//! second without one it grows, by 5% of the rate of the cut in the first second and
//! twice as much as the second before in each next one (a probe that stays close to
//! the rate the host refused, yet finds its way back within seconds from a cut that
//! counted a bad second), and once it is four times the rate of its last cut the limit
//! is lifted. AIMD because it is what converges when many clients share one server
//! (each cut frees room for the others, each raise probes for more), and because a
//! rate, unlike a window of requests in flight, is what servers count (`429` above R
//! requests a second).
//!
//! A cut is settled [`SETTLE`] after it: reports of batches served before the `429`
//! may come after it (a worker reports a throttle at once, a batch once its file is
//! written), so a cut made on the spot can count too few; if the last second then
//! shows more served, the rate is set from that. Before any cut, each worker ramps a
//! new host's first requests up (`worker/src/slow_start.rs`), so that the first `429`
//! comes before hundreds more are on their way.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How much of the served rate a cut keeps.
const CUT: f64 = 0.9;
/// Growth in the first second without a throttle, as a share of the rate of the last
/// cut; it doubles each next second.
const RAISE: f64 = 0.05;
/// A rate this many times its last cut lifts the limit.
const LIFT: f64 = 4.0;
/// How long after a cut the reports of what the host served before it are all in.
const SETTLE: Duration = Duration::from_millis(200);

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
    /// Whether the cut was checked against the reports that came after it.
    settled: bool,
    /// Raises since the cut.
    raises: i32,
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
        self.hosts.insert(
            origin.to_owned(),
            HostRate {
                rate,
                cut_at: now,
                cut_to: rate,
                settled: false,
                raises: 0,
            },
        );
        Some(rate)
    }

    /// The hosts whose rate changes: cuts settled [`SETTLE`] after them, and once a
    /// second the rates that grow (`Some`) or are lifted (`None`).
    pub fn tick(&mut self, now: Instant) -> Vec<(String, Option<f64>)> {
        let mut changes = self.settle(now);
        if now.duration_since(self.last_raise) < Duration::from_secs(1) {
            return changes;
        }
        self.last_raise = now;
        self.hosts.retain(|origin, host| {
            if now.duration_since(host.cut_at) < Duration::from_secs(1) {
                return true;
            }
            host.rate += host.cut_to * RAISE * 2f64.powi(host.raises.min(10));
            host.raises += 1;
            if host.rate >= host.cut_to * LIFT {
                changes.push((origin.clone(), None));
                return false;
            }
            changes.push((origin.clone(), Some(host.rate)));
            true
        });
        changes
    }

    /// Raises cuts that counted too few: what the host served in the second up to
    /// [`SETTLE`] after the cut, with every report of it in.
    fn settle(&mut self, now: Instant) -> Vec<(String, Option<f64>)> {
        let tenth = self.tenth(now);
        let mut changes = Vec::new();
        for (origin, host) in &mut self.hosts {
            if host.settled || now.duration_since(host.cut_at) < SETTLE {
                continue;
            }
            host.settled = true;
            let Some(ring) = self.served.get_mut(origin) else {
                continue;
            };
            let rate = ring.last_second(tenth) as f64 * CUT;
            if rate > host.rate {
                host.rate = rate;
                host.cut_to = rate;
                changes.push((origin.clone(), Some(rate)));
            }
        }
        changes
    }

    /// The next time [`Throttle::tick`] has something to do.
    pub fn wake_at(&self) -> Option<Instant> {
        let settle = self
            .hosts
            .values()
            .filter(|host| !host.settled)
            .map(|host| host.cut_at + SETTLE)
            .min();
        let raise = (!self.hosts.is_empty()).then(|| self.last_raise + Duration::from_secs(1));
        settle.into_iter().chain(raise).min()
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

    #[test]
    fn a_cut_made_before_the_reports_came_is_raised_once_they_are_in() {
        let t0 = Instant::now();
        let mut t = Throttle::new(t0);
        for _ in 0..100 {
            t.served("http://h:80", t0);
        }
        assert_eq!(t.throttled("http://h:80", t0), Some(90.0));
        // Batches served before the 429 are reported after it.
        for _ in 0..100 {
            t.served("http://h:80", t0 + Duration::from_millis(50));
        }
        assert_eq!(t.wake_at(), Some(t0 + SETTLE));
        assert!(t.tick(t0 + Duration::from_millis(100)).is_empty());
        assert_eq!(
            t.tick(t0 + SETTLE),
            [("http://h:80".to_owned(), Some(180.0))]
        );
        // Settled once: the next change is the raise a second on.
        assert!(t.tick(t0 + SETTLE + Duration::from_millis(100)).is_empty());
        assert_eq!(t.wake_at(), Some(t0 + Duration::from_secs(1)));
    }
}
