//! Why a run stops early: SIGINT, SIGTERM and SIGHUP (they arrive as events of the
//! [`crate::pool::WorkerPool`]; the first asks for a graceful stop, a second one for an
//! immediate one), the run's --deadline, or a reader of stdout that went away.
//!
//! SIGHUP (a closed terminal or SSH session) stops a run like SIGTERM: by default it
//! would kill the coordinator at once, and with it every worker, with batches in flight
//! and the manifest unflushed.

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
    /// The first batches all failed with the same TLS error: exit code 1.
    TlsFailing,
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
            StopCause::TlsFailing => Exit::SomeFailed,
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
            StopCause::TlsFailing => {
                "stopped early: the first 50 batches all failed with the same TLS error"
            }
        }
    }
}
