//! Fault injection for the end-to-end tests, off unless `COORDINATOR_WORKER_FAULT` is
//! set: `KIND:AFTER:MARKER` makes the first worker that finishes AFTER jobs (and wins
//! the race to create the file MARKER, so that it happens once per run) misbehave.
//! KIND is `panic`, `garbage` (a frame that does not decode) or `block-MS` (its event
//! loop blocked for MS milliseconds).

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The environment variable that turns fault injection on.
pub const FAULT_VAR: &str = "COORDINATOR_WORKER_FAULT";

/// What the worker does wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Panics (and so aborts) in a job task.
    Panic,
    /// Writes bytes that are not a frame to the coordinator.
    Garbage,
    /// Blocks its event loop.
    Block(Duration),
}

/// An armed fault.
#[derive(Debug)]
pub struct Fault {
    kind: FaultKind,
    after: u64,
    marker: PathBuf,
    done: AtomicU64,
}

impl Fault {
    /// The fault the environment asks for, if any.
    pub fn from_env() -> Option<Fault> {
        Self::parse(&std::env::var(FAULT_VAR).ok()?)
    }

    fn parse(spec: &str) -> Option<Fault> {
        let mut parts = spec.splitn(3, ':');
        let kind = match parts.next()? {
            "panic" => FaultKind::Panic,
            "garbage" => FaultKind::Garbage,
            other => FaultKind::Block(Duration::from_millis(
                other.strip_prefix("block-")?.parse().ok()?,
            )),
        };
        Some(Fault {
            kind,
            after: parts.next()?.parse().ok()?,
            marker: PathBuf::from(parts.next()?),
            done: AtomicU64::new(0),
        })
    }

    /// Counts one finished job; returns the fault when it is due here and now.
    pub fn on_job_done(&self) -> Option<FaultKind> {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let first = done == self.after
            && OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&self.marker)
                .is_ok();
        first.then_some(self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_fires_once_per_marker() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("m");
        let spec = format!("block-25:2:{}", marker.display());
        let fault = Fault::parse(&spec).unwrap();
        assert_eq!(fault.on_job_done(), None);
        assert_eq!(
            fault.on_job_done(),
            Some(FaultKind::Block(Duration::from_millis(25)))
        );
        let again = Fault::parse(&spec).unwrap();
        again.on_job_done();
        assert_eq!(
            again.on_job_done(),
            None,
            "the marker exists: another worker fired it"
        );
        assert!(Fault::parse("explode:1:/x").is_none());
    }
}
