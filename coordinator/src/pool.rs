//! Worker processes: started by re-executing this binary in its hidden worker mode, each
//! in its own process group with its stdin and stdout as the two pipes of the protocol.
//! A thread per worker reads its frames into one bounded channel; stopping a worker is
//! close stdin → wait → SIGTERM → wait → SIGKILL, and always a final `wait()`.

use std::io::{self, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shared::frame::{FrameError, read_frame, write_frame};
use shared::protocol::{FromWorker, ToWorker};

/// Which worker process an event comes from: its slot, and which of the processes
/// started in that slot (a replaced worker's last events must not be taken for its
/// successor's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// The slot.
    pub slot: usize,
    /// Unique per process started.
    pub spawn: u64,
}

/// What the reader threads report.
#[derive(Debug)]
pub enum Event {
    /// A message from a worker.
    Message(Source, FromWorker),
    /// The worker's stdout closed: cleanly (`None`) or on a bad frame.
    Closed(Source, Option<FrameError>),
}

impl Event {
    /// The worker it comes from.
    pub fn source(&self) -> Source {
        match self {
            Event::Message(source, _) | Event::Closed(source, _) => *source,
        }
    }
}

/// One running worker process.
pub struct WorkerProc {
    child: Child,
    stdin: Option<ChildStdin>,
    reader: Option<JoinHandle<()>>,
    reaped: bool,
}

impl WorkerProc {
    /// Starts the worker for `source`, sends it `hello` and starts reading its reports.
    pub fn spawn(
        source: Source,
        hello: &ToWorker,
        events: Sender<Event>,
    ) -> io::Result<WorkerProc> {
        let slot = source.slot;
        let mut child = Command::new(std::env::current_exe()?)
            .arg("__worker")
            .arg("--parent")
            .arg(std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own group: a Ctrl-C at the terminal reaches the coordinator, which
            // decides how the workers stop.
            .process_group(0)
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("worker pipes were not created"));
        };
        let reader = thread::Builder::new()
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
            });
        let mut proc = WorkerProc {
            child,
            stdin: Some(stdin),
            reader: None,
            reaped: false,
        };
        proc.reader = Some(reader?);
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

    /// Stops the worker and waits for it: close its stdin and give it `grace` to
    /// leave, then SIGTERM, then SIGKILL.
    pub fn stop(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        self.stdin = None;
        let status = match self.wait_for(grace)? {
            Some(status) => status,
            None => {
                self.signal(Signal::SIGTERM);
                match self.wait_for(Duration::from_secs(1))? {
                    Some(status) => status,
                    None => {
                        self.signal(Signal::SIGKILL);
                        self.child.wait()?
                    }
                }
            }
        };
        self.reaped = true;
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        Ok(status)
    }

    fn wait_for(&mut self, limit: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn signal(&self, signal: Signal) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
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
