//! One worker process: this binary re-executed through `/proc/self/exe` in its hidden
//! worker mode, in its own process group, with its stdin and stdout as the two pipes
//! of the protocol and its stderr read line by line. A thread reads its frames into the
//! pool's event channel, another its stderr into [`crate::messages`].

use std::io::{self, BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shared::frame::{FrameError, read_frame, write_frame};
use shared::protocol::{FromWorker, ToWorker};

use super::{Event, WorkerId};
use crate::messages;

/// The hidden subcommand a worker runs as, defined once: the pool starts workers with
/// it and `main` recognises it before any parsing.
pub const WORKER_COMMAND: &str = "__worker";

/// The binary that is running now: a rebuilt or replaced file on disk is not what a
/// replacement worker runs.
const OWN_EXE: &str = "/proc/self/exe";

/// One running worker process.
pub struct WorkerProc {
    child: Child,
    stdin: Option<ChildStdin>,
    threads: Vec<JoinHandle<()>>,
    reaped: bool,
}

impl WorkerProc {
    /// Starts the worker for `source`, sends it `hello` and starts reading what it
    /// writes.
    pub fn spawn(
        source: WorkerId,
        hello: &ToWorker,
        events: Sender<Event>,
    ) -> io::Result<WorkerProc> {
        let slot = source.slot;
        let mut child = Command::new(OWN_EXE)
            .arg(WORKER_COMMAND)
            .arg("--parent")
            .arg(std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group: a Ctrl-C at the terminal reaches the coordinator, which
            // decides how the workers stop.
            .process_group(0)
            .spawn()?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("worker pipes were not created"));
        };
        let mut proc = WorkerProc {
            child,
            stdin: Some(stdin),
            threads: Vec::new(),
            reaped: false,
        };
        let frames = thread::Builder::new()
            .name(format!("worker-{slot}"))
            .spawn(move || {
                let mut stdout = BufReader::with_capacity(64 * 1024, stdout);
                loop {
                    let event = match read_frame::<FromWorker>(&mut stdout) {
                        Ok(Some(msg)) => Event::Message(source, msg),
                        Ok(None) => Event::Closed(source, None),
                        Err(e) => Event::Closed(source, Some(e)),
                    };
                    let last = matches!(event, Event::Closed(..));
                    if events.send(event).is_err() || last {
                        return;
                    }
                }
            })?;
        proc.threads.push(frames);
        let lines = thread::Builder::new()
            .name(format!("worker-{slot}-stderr"))
            .spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    match line {
                        Ok(line) => messages::from_worker(slot, &line),
                        Err(_) => return,
                    }
                }
            })?;
        proc.threads.push(lines);
        proc.send(hello).map_err(io::Error::other)?;
        Ok(proc)
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes one message to the worker.
    pub fn send(&mut self, msg: &ToWorker) -> Result<(), FrameError> {
        match &mut self.stdin {
            Some(stdin) => write_frame(stdin, msg),
            None => Err(FrameError::Io(io::ErrorKind::BrokenPipe.into())),
        }
    }

    /// Closes the worker's stdin: it finishes what it holds and leaves.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for it to exit, at most until `deadline`.
    pub fn wait_until(&mut self, deadline: Instant) -> io::Result<Option<ExitStatus>> {
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            // Only while a stop waits for a process that closed its pipes already:
            // its exit is a moment away.
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Sends it `signal`.
    pub fn signal(&self, signal: Signal) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// Reaps it (killing it first if it still runs) and joins its reader threads.
    pub fn reap(&mut self) -> io::Result<ExitStatus> {
        self.stdin = None;
        let status = match self.child.try_wait()? {
            Some(status) => status,
            None => {
                self.signal(Signal::SIGKILL);
                self.child.wait()?
            }
        };
        self.reaped = true;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        Ok(status)
    }
}

impl Drop for WorkerProc {
    /// The backstop: a worker is never left running or unreaped.
    fn drop(&mut self) {
        if !self.reaped {
            self.stdin = None;
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
