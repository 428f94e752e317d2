//! Per-host politeness in a worker: `--per-host-rate` and `--per-host-concurrency`,
//! and the rate the coordinator sets for a host that answers 429 or 503 (adaptive
//! throttling). A host is an origin: scheme, host and port.
//!
//! Exact across processes because the coordinator routes every host to one worker
//! when per-host limits are set: that worker alone sends to it (requests redirected
//! to another host are limited here too, by this worker's own count). The adaptive
//! rate is set by the coordinator for every worker at once (see
//! `coordinator/src/dispatch/throttle.rs`); until it sets one, a host's first requests
//! ramp up (see [`crate::slow_start`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use shared::config::PerHostLimits;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::pace::Pacer;
use crate::slow_start::Ramp;

/// Hosts with no request waiting or in flight are forgotten beyond this many, so that a
/// run over a million hosts keeps a bounded map.
const KEEP_IDLE: usize = 4096;

/// The gates of every host this worker sends to.
pub struct HostGates {
    limits: PerHostLimits,
    /// Whether a host's first requests ramp up (`--adaptive on`).
    slow_start: bool,
    gates: Mutex<HashMap<String, Arc<Gate>>>,
    /// The size at which the map is next pruned of idle gates: [`KEEP_IDLE`], or twice
    /// what the last pruning left when more hosts than that are busy (each new host
    /// would otherwise walk the whole map: with `--adaptive on` every host has a gate).
    prune_at: AtomicUsize,
    /// Whether a host ever got a gate: until then every request passes without a
    /// lock (the hot path of a run with no limits).
    any: AtomicBool,
}

/// One host's gate.
struct Gate {
    /// Requests in flight, at most `--per-host-concurrency`.
    slots: Option<Arc<Semaphore>>,
    /// `--per-host-rate`, or the adaptive rate when it is lower.
    pacer: Mutex<Option<Arc<Pacer>>>,
    /// The rate the user set, if any.
    fixed: Option<f64>,
    /// The slow start of the host's first requests, under `--adaptive on`.
    ramp: Option<Ramp>,
    /// No request goes before this (the host's `Retry-After`, under `--adaptive on`).
    hold: Mutex<Option<Instant>>,
}

/// Leave to send one request to a host; the host's slot is given back when it drops.
pub struct HostPermit {
    _slot: Option<OwnedSemaphorePermit>,
}

impl HostGates {
    /// Gates for `limits`, and for the adaptive rates (with a slow start of each host
    /// when `adaptive`).
    pub fn new(limits: PerHostLimits, adaptive: bool) -> HostGates {
        HostGates {
            limits,
            slow_start: adaptive,
            gates: Mutex::new(HashMap::new()),
            prune_at: AtomicUsize::new(KEEP_IDLE),
            any: AtomicBool::new(false),
        }
    }

    fn gate(&self, origin: &str) -> Arc<Gate> {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(gate) = gates.get(origin) {
            return Arc::clone(gate);
        }
        if gates.len() >= self.prune_at.load(Ordering::Relaxed) {
            // Only this map holds an idle gate, and its slots are all free.
            gates.retain(|_, gate| Arc::strong_count(gate) > 1 || !gate.is_idle());
            let next = KEEP_IDLE.max(2 * gates.len());
            self.prune_at.store(next, Ordering::Relaxed);
        }
        let gate = Arc::new(Gate {
            slots: self
                .limits
                .concurrency
                .map(|n| Arc::new(Semaphore::new(n.max(1) as usize))),
            pacer: Mutex::new(self.limits.rate.map(|r| Arc::new(Pacer::new(r)))),
            fixed: self.limits.rate,
            ramp: self.slow_start.then(Ramp::new),
            hold: Mutex::new(None),
        });
        gates.insert(origin.to_owned(), Arc::clone(&gate));
        self.any.store(true, Ordering::Relaxed);
        gate
    }

    /// Waits until a request to `authority` (over TLS when `tls`) may go: a slot of
    /// its concurrency, then its turn in the host's slow start, then its turn at its
    /// rate. At once, with nothing allocated, while no host can have a limit.
    pub async fn enter(&self, tls: bool, authority: &str) -> HostPermit {
        if !self.is_active() {
            return HostPermit { _slot: None };
        }
        let gate = self.gate(&origin(tls, authority));
        let slot = match &gate.slots {
            Some(slots) => Arc::clone(slots).acquire_owned().await.ok(),
            None => None,
        };
        if let Some(at) = gate.ramp.as_ref().and_then(Ramp::turn) {
            tokio::time::sleep_until(at).await;
        }
        // A hold set while this request slept holds it too.
        while let Some(until) = gate.held_until() {
            tokio::time::sleep_until(until).await;
        }
        // Read after the ramp: a rate set meanwhile holds for this request.
        let pacer = gate.pacer.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(pacer) = pacer {
            pacer.wait().await;
        }
        HostPermit { _slot: slot }
    }

    /// Sets the adaptive rate of `origin` for this worker (`None`: no adaptive limit).
    /// The lower of it and `--per-host-rate` holds.
    pub fn set_rate(&self, origin: &str, rate: Option<f64>) {
        let gate = self.gate(origin);
        if let Some(ramp) = &gate.ramp {
            ramp.end();
        }
        let rate = match (rate, gate.fixed) {
            (Some(a), Some(f)) => Some(a.min(f)),
            (a, f) => a.or(f),
        };
        let mut pacer = gate.pacer.lock().unwrap_or_else(|e| e.into_inner());
        match (rate.filter(|r| *r > 0.0), pacer.as_ref()) {
            // One schedule: requests waiting for a turn keep theirs.
            (Some(rate), Some(current)) => current.set_rate(rate),
            (Some(rate), None) => *pacer = Some(Arc::new(Pacer::new(rate))),
            (None, _) => *pacer = None,
        }
    }

    /// Holds every request to `origin` until `until`, those waiting for their turn at
    /// its rate included: the host sent `Retry-After`.
    pub fn hold(&self, origin: &str, until: Instant) {
        let gate = self.gate(origin);
        let mut hold = gate.hold.lock().unwrap_or_else(|e| e.into_inner());
        *hold = Some(hold.map_or(until, |h| h.max(until)));
        if let Some(pacer) = gate
            .pacer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            pacer.hold_until(until);
        }
    }

    /// Whether any request may have to wait: limits are set, hosts start slowly, or a
    /// host has an adaptive rate.
    pub fn is_active(&self) -> bool {
        !self.limits.is_none() || self.slow_start || self.any_adaptive()
    }

    fn any_adaptive(&self) -> bool {
        self.any.load(Ordering::Relaxed)
    }
}

impl Gate {
    /// The end of the host's hold, if it is still on.
    fn held_until(&self) -> Option<Instant> {
        let hold = *self.hold.lock().unwrap_or_else(|e| e.into_inner());
        hold.filter(|until| *until > Instant::now())
    }

    /// No request in flight nor waiting for its turn: forgetting the gate loses
    /// nothing a request could see (its rate comes back with the coordinator's next
    /// change, and a new ramp lets a burst go, as an idle host may take).
    fn is_idle(&self) -> bool {
        let free = self
            .slots
            .as_ref()
            .is_none_or(|s| s.available_permits() > 0);
        let paced = {
            let pacer = self.pacer.lock().unwrap_or_else(|e| e.into_inner());
            pacer.as_ref().is_some_and(|p| !p.is_idle())
        };
        free && !paced && self.held_until().is_none()
    }
}

/// The origin of `url` as the gates name hosts: `scheme://host:port`.
pub fn origin(tls: bool, authority: &str) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{authority}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_host_gets_its_rate_and_concurrency_and_others_are_apart() {
        let gates = Arc::new(HostGates::new(
            PerHostLimits {
                rate: Some(10.0),
                concurrency: Some(2),
            },
            false,
        ));
        let start = tokio::time::Instant::now();
        let a1 = gates.enter(false, "a:80").await;
        let _a2 = gates.enter(false, "a:80").await;
        // A third request to a waits for a slot; one to b does not.
        let _b = gates.enter(false, "b:80").await;
        let waiting = {
            let gates = Arc::clone(&gates);
            tokio::spawn(async move { gates.enter(false, "a:80").await })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiting.is_finished());
        drop(a1);
        let _a3 = waiting.await.unwrap();
        // At 10/s, a's second request went 100 ms after its first.
        assert!(start.elapsed() >= Duration::from_secs(5));
    }

    #[tokio::test]
    async fn idle_gates_are_dropped_and_busy_ones_do_not_make_every_new_host_walk_the_map() {
        let gates = HostGates::new(
            PerHostLimits {
                rate: None,
                concurrency: Some(1),
            },
            true,
        );
        // More busy hosts than KEEP_IDLE: each holds its one slot.
        let mut busy = Vec::new();
        for i in 0..KEEP_IDLE + 10 {
            busy.push(gates.enter(false, &format!("busy{i}:80")).await);
        }
        let pruned_at = gates.prune_at.load(Ordering::Relaxed);
        assert!(pruned_at >= 2 * KEEP_IDLE, "{pruned_at}");
        // Once they are done, the next pruning drops them.
        drop(busy);
        for i in 0..pruned_at {
            let _idle = gates.enter(false, &format!("idle{i}:80")).await;
        }
        let left = gates.gates.lock().unwrap().len();
        assert!(left < KEEP_IDLE + 10, "{left} gates kept");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_stops_every_request_to_its_host_paced_ones_too() {
        let gates = Arc::new(HostGates::new(PerHostLimits::default(), true));
        gates.set_rate("http://a:80", Some(10.0));
        let start = tokio::time::Instant::now();
        let _first = gates.enter(false, "a:80").await;
        // The next one waits its turn at 10/s; the host then says Retry-After: 3.
        let paced = {
            let gates = Arc::clone(&gates);
            tokio::spawn(async move { gates.enter(false, "a:80").await })
        };
        tokio::task::yield_now().await;
        gates.hold("http://a:80", start + Duration::from_secs(3));
        let _b = gates.enter(false, "b:80").await;
        assert!(start.elapsed() < Duration::from_millis(50), "b is not held");
        let _p = paced.await.unwrap();
        assert!(start.elapsed() >= Duration::from_secs(3));
        let _n = gates.enter(false, "a:80").await;
        assert!(
            start.elapsed() >= Duration::from_millis(3100),
            "then 10/s again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_hosts_first_requests_ramp_up_until_a_rate_is_set() {
        let gates = HostGates::new(PerHostLimits::default(), true);
        let start = tokio::time::Instant::now();
        for _ in 0..64 {
            let _p = gates.enter(false, "a:80").await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        for _ in 0..100 {
            let _p = gates.enter(false, "a:80").await;
        }
        let ramped = start.elapsed();
        assert!(ramped > Duration::ZERO && ramped < Duration::from_millis(100));
        gates.set_rate("http://a:80", None);
        for _ in 0..1000 {
            let _p = gates.enter(false, "a:80").await;
        }
        assert_eq!(start.elapsed(), ramped);
        // Without --adaptive on, no ramp.
        let blind = HostGates::new(PerHostLimits::default(), false);
        assert!(!blind.is_active());
    }

    #[tokio::test(start_paused = true)]
    async fn the_adaptive_rate_holds_below_the_users_rate() {
        let gates = HostGates::new(
            PerHostLimits {
                rate: Some(100.0),
                concurrency: None,
            },
            false,
        );
        gates.set_rate("http://a:80", Some(4.0));
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            let _p = gates.enter(false, "a:80").await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        gates.set_rate("http://a:80", None);
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            let _p = gates.enter(false, "a:80").await;
        }
        assert!(start.elapsed() <= Duration::from_millis(50));
    }
}
