//! Why a run stops early: SIGINT, SIGTERM and SIGHUP, noted by flags that the dispatch
//! loop polls (the first asks for a graceful stop, a second one for an immediate one),
//! or the run's --deadline.
//!
//! SIGHUP (a closed terminal or SSH session) stops a run like SIGTERM: by default it
//! would kill the coordinator at once, and with it every worker, with batches in flight
//! and the manifest unflushed.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::exit::Exit;

/// What asked the run to stop before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// SIGINT (Ctrl-C): exit code 130.
    Interrupt,
    /// SIGTERM: exit code 143.
    Terminate,
    /// SIGHUP: exit code 129.
    Hangup,
    /// --deadline passed: exit code 4.
    Deadline,
    /// The reader of `--out -` closed the pipe: exit code 0, as for `head`.
    OutputClosed,
}

impl StopCause {
    /// The exit code for a run stopped this way.
    pub fn exit(self) -> Exit {
        match self {
            StopCause::Interrupt => Exit::Interrupted,
            StopCause::Terminate => Exit::Terminated,
            StopCause::Hangup => Exit::HungUp,
            StopCause::Deadline => Exit::Deadline,
            StopCause::OutputClosed => Exit::Ok,
        }
    }

    /// For people.
    pub fn describe(self) -> &'static str {
        match self {
            StopCause::Interrupt => "stopped by SIGINT",
            StopCause::Terminate => "stopped by SIGTERM",
            StopCause::Hangup => "stopped by SIGHUP",
            StopCause::Deadline => "stopped at the --deadline",
            StopCause::OutputClosed => "stopped: the reader of stdout went away",
        }
    }
}

/// The installed handlers.
pub struct Signals {
    interrupt: Arc<AtomicBool>,
    terminate: Arc<AtomicBool>,
    hangup: Arc<AtomicBool>,
}

impl Signals {
    /// Installs the handlers for this process.
    pub fn install() -> io::Result<Signals> {
        let interrupt = Arc::new(AtomicBool::new(false));
        let terminate = Arc::new(AtomicBool::new(false));
        let hangup = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(SIGINT, Arc::clone(&interrupt))?;
        signal_hook::flag::register(SIGTERM, Arc::clone(&terminate))?;
        signal_hook::flag::register(SIGHUP, Arc::clone(&hangup))?;
        Ok(Signals {
            interrupt,
            terminate,
            hangup,
        })
    }

    /// A signal that arrived since the last call, if any.
    pub fn take(&self) -> Option<StopCause> {
        if self.interrupt.swap(false, Ordering::Relaxed) {
            Some(StopCause::Interrupt)
        } else if self.terminate.swap(false, Ordering::Relaxed) {
            Some(StopCause::Terminate)
        } else if self.hangup.swap(false, Ordering::Relaxed) {
            Some(StopCause::Hangup)
        } else {
            None
        }
    }
}
