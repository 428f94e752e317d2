//! Process-level set-up: tie the worker's life to the coordinator's, take the handshake,
//! pin to a core, then run the event loop on a `current_thread` runtime.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;

use nix::sched::{CpuSet, sched_setaffinity};
use nix::sys::prctl;
use nix::sys::signal::Signal;
use nix::unistd::{Pid, getppid};
use shared::frame::read_frame;
use shared::protocol::{PROTOCOL_VERSION, Task, ToWorker};
use tokio::net::unix::pipe;

use crate::generator;
use crate::session::{self, WorkerError};

/// Runs a worker on this process's stdin and stdout until the coordinator says
/// `Finish` or goes away. `parent` is the coordinator's pid.
pub fn run_process(parent: u32) -> Result<(), WorkerError> {
    die_with_parent(parent)?;
    abort_on_panic();
    let stdin = io::stdin().as_fd().try_clone_to_owned()?;
    let stdout = io::stdout().as_fd().try_clone_to_owned()?;

    // The handshake is read unbuffered so that no byte of the next frame is taken
    // from the pipe before the event loop owns it.
    let mut handshake = File::from(stdin);
    let (cpu, task) = match read_frame::<ToWorker>(&mut handshake)? {
        Some(ToWorker::Hello {
            version, cpu, task, ..
        }) if version == PROTOCOL_VERSION => (cpu, task),
        Some(ToWorker::Hello { version, .. }) => {
            return Err(WorkerError::Version {
                ours: PROTOCOL_VERSION,
                theirs: version,
            });
        }
        Some(other) => return Err(WorkerError::Unexpected(format!("{other:?}"))),
        None => return Ok(()),
    };
    pin(cpu)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(8)
        .build()?;
    runtime.block_on(async move {
        let input = pipe::Receiver::from_file(handshake)?;
        let output = pipe::Sender::from_owned_fd(stdout)?;
        match task {
            Task::Scrape(config) => session::serve(input, output, *config).await,
            Task::Load(spec) => generator::run(input, output, *spec).await,
        }
    })
}

/// The kernel kills this process when the coordinator dies; if it already died before
/// that was set up, leave at once.
fn die_with_parent(parent: u32) -> Result<(), WorkerError> {
    prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
    if getppid().as_raw() as u32 != parent {
        return Err(WorkerError::Orphaned);
    }
    Ok(())
}

/// A panicking task would otherwise vanish with its job; dying makes the loss visible to
/// the coordinator, which sees the pipe close.
fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
}

fn pin(cpu: Option<usize>) -> Result<(), WorkerError> {
    let Some(cpu) = cpu else { return Ok(()) };
    let mut set = CpuSet::new();
    set.set(cpu).map_err(io::Error::from)?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(io::Error::from)?;
    Ok(())
}
