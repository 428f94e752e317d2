//! SIGINT and SIGTERM, noted by flags that the dispatch loop polls: the first asks for
//! a graceful stop, a second one for an immediate one.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::exit::Exit;

/// Which signal asked the run to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT (Ctrl-C): exit code 130.
    Interrupt,
    /// SIGTERM: exit code 143.
    Terminate,
}

impl StopSignal {
    /// The exit code a shell expects after this signal.
    pub fn exit(self) -> Exit {
        match self {
            StopSignal::Interrupt => Exit::Interrupted,
            StopSignal::Terminate => Exit::Terminated,
        }
    }
}

/// The installed handlers.
pub struct Signals {
    interrupt: Arc<AtomicBool>,
    terminate: Arc<AtomicBool>,
}

impl Signals {
    /// Installs the handlers for this process.
    pub fn install() -> io::Result<Signals> {
        let interrupt = Arc::new(AtomicBool::new(false));
        let terminate = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(SIGINT, Arc::clone(&interrupt))?;
        signal_hook::flag::register(SIGTERM, Arc::clone(&terminate))?;
        Ok(Signals {
            interrupt,
            terminate,
        })
    }

    /// A signal that arrived since the last call, if any.
    pub fn take(&self) -> Option<StopSignal> {
        if self.interrupt.swap(false, Ordering::Relaxed) {
            Some(StopSignal::Interrupt)
        } else if self.terminate.swap(false, Ordering::Relaxed) {
            Some(StopSignal::Terminate)
        } else {
            None
        }
    }
}
