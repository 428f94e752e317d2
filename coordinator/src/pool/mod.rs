//! The worker processes of a run, for scrapes and load tests alike: started in slots,
//! one event channel for everything that happens to them (their frames, the end of
//! their pipes, and the signals this process gets, forwarded by a thread), and one way
//! to stop them all: close every stdin, one shared grace, then SIGTERM, then SIGKILL,
//! like nextest, and always a final `wait()`.

mod process;

use std::io;
use std::process::ExitStatus;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use nix::sys::signal::Signal;
use shared::frame::FrameError;
use shared::protocol::{FromWorker, ToWorker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

use crate::signals::StopCause;

pub use process::WORKER_COMMAND;
use process::WorkerProc;

/// Which worker process an event comes from: its slot, and which of the processes
/// started in that slot (a replaced worker's last events must not be taken for its
/// successor's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerId {
    /// The slot.
    pub slot: usize,
    /// Unique per process started.
    pub spawn: u64,
}

/// What happens to a run's workers, and to the run.
#[derive(Debug)]
pub enum Event {
    /// A message from a worker.
    Message(WorkerId, FromWorker),
    /// The worker's stdout closed: cleanly (`None`) or on a bad frame.
    Closed(WorkerId, Option<FrameError>),
    /// This process got SIGINT, SIGTERM or SIGHUP.
    Signal(StopCause),
    /// More input is ready (a URL list being read, a host's robots.txt answer).
    Input,
}

/// What waiting for an event gave.
// One `Next` is made per event and moved once: its size costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Next {
    /// An event.
    Event(Event),
    /// Nothing before the time asked for.
    Timeout,
}

/// Time a worker gets after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(1);

/// The workers of a run.
pub struct WorkerPool {
    procs: Vec<Option<WorkerProc>>,
    /// Per slot: the current process, and whether its stdout has closed.
    current: Vec<(u64, bool)>,
    spawned: u64,
    events: Receiver<Event>,
    sender: Sender<Event>,
    signals: Option<(Handle, JoinHandle<()>)>,
}

impl WorkerPool {
    /// A pool of `slots` empty slots; from now on SIGINT, SIGTERM and SIGHUP arrive as
    /// events.
    pub fn new(slots: usize) -> io::Result<WorkerPool> {
        // Reader threads wait when the run falls behind: that bounds memory.
        let (sender, events) = bounded(1024);
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        let handle = signals.handle();
        let forward = sender.clone();
        let thread = thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    let cause = match signal {
                        SIGINT => StopCause::Interrupt,
                        SIGTERM => StopCause::Terminate,
                        _ => StopCause::Hangup,
                    };
                    if forward.send(Event::Signal(cause)).is_err() {
                        return;
                    }
                }
            })?;
        Ok(WorkerPool {
            procs: (0..slots).map(|_| None).collect(),
            current: vec![(0, false); slots],
            spawned: 0,
            events,
            sender,
            signals: Some((handle, thread)),
        })
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.procs.len()
    }

    /// A sender of events into the pool's channel (for input that becomes ready).
    pub fn sender(&self) -> Sender<Event> {
        self.sender.clone()
    }

    /// Starts a worker in `slot` (which must be empty) and sends it `hello`.
    pub fn spawn(&mut self, slot: usize, hello: &ToWorker) -> io::Result<u32> {
        self.spawned += 1;
        let source = WorkerId {
            slot,
            spawn: self.spawned,
        };
        let proc = WorkerProc::spawn(source, hello, self.sender.clone())?;
        let pid = proc.pid();
        self.procs[slot] = Some(proc);
        self.current[slot] = (source.spawn, false);
        Ok(pid)
    }

    /// Whether `slot` holds a running worker.
    pub fn is_running(&self, slot: usize) -> bool {
        self.procs[slot].is_some()
    }

    /// The process id of the worker in `slot`.
    pub fn pid(&self, slot: usize) -> Option<u32> {
        self.procs[slot].as_ref().map(WorkerProc::pid)
    }

    /// Writes `msg` to the worker in `slot`.
    pub fn send(&mut self, slot: usize, msg: &ToWorker) -> Result<(), FrameError> {
        match &mut self.procs[slot] {
            Some(proc) => proc.send(msg),
            None => Err(FrameError::Io(io::ErrorKind::BrokenPipe.into())),
        }
    }

    /// Whether no event is waiting.
    pub fn is_idle(&self) -> bool {
        self.events.is_empty()
    }

    /// The next event from a current worker (a replaced one's are dropped), or the run;
    /// waits until `until` at most (for ever with `None`).
    pub fn next(&mut self, until: Option<Instant>) -> Next {
        loop {
            let event = match until {
                Some(at) => match self.events.recv_deadline(at) {
                    Ok(event) => event,
                    Err(RecvTimeoutError::Timeout) => return Next::Timeout,
                    // The pool holds a sender itself: this cannot happen.
                    Err(RecvTimeoutError::Disconnected) => return Next::Timeout,
                },
                None => match self.events.recv() {
                    Ok(event) => event,
                    Err(_) => return Next::Timeout,
                },
            };
            let source = match &event {
                Event::Message(source, _) | Event::Closed(source, _) => *source,
                Event::Signal(_) | Event::Input => return Next::Event(event),
            };
            let (spawn, closed) = &mut self.current[source.slot];
            if *spawn != source.spawn {
                continue;
            }
            if matches!(event, Event::Closed(..)) {
                *closed = true;
            }
            return Next::Event(event);
        }
    }

    /// Reaps the worker in `slot`, which died or is to be replaced: the slot is empty
    /// after. Says what became of it.
    pub fn reap(&mut self, slot: usize) -> String {
        match self.procs[slot].take() {
            Some(mut proc) => {
                let pid = proc.pid();
                let status = proc
                    .reap()
                    .map_or_else(|e| e.to_string(), |st| st.to_string());
                format!("pid {pid}, {status}")
            }
            None => "not running".to_owned(),
        }
    }

    /// Stops every worker: every stdin is closed at once, then all get `grace` together
    /// to leave (their pipes closing is the sign), then SIGTERM and [`TERM_GRACE`], then
    /// SIGKILL; each is reaped. Returns how each ended, by slot.
    pub fn stop_all(&mut self, grace: Duration) -> Vec<(usize, io::Result<ExitStatus>)> {
        for proc in self.procs.iter_mut().flatten() {
            proc.close_stdin();
        }
        self.await_closed(Instant::now() + grace);
        // Late: still holding its pipe, or not gone a moment after closing it.
        let moment = Instant::now() + Duration::from_millis(200);
        let mut late = Vec::new();
        for slot in 0..self.procs.len() {
            let closed = self.current[slot].1;
            if let Some(proc) = &mut self.procs[slot]
                && !(closed && proc.wait_until(moment).is_ok_and(|s| s.is_some()))
            {
                proc.signal(Signal::SIGTERM);
                late.push(slot);
            }
        }
        if !late.is_empty() {
            let deadline = Instant::now() + TERM_GRACE;
            self.await_closed(deadline);
            for &slot in &late {
                if let Some(proc) = &mut self.procs[slot] {
                    let _ = proc.wait_until(deadline);
                }
            }
        }
        (0..self.procs.len())
            .filter_map(|slot| Some((slot, self.procs[slot].take()?.reap())))
            .collect()
    }

    /// Waits until every running worker's stdout has closed, or `deadline`; events that
    /// come meanwhile are dropped (the run is over).
    fn await_closed(&mut self, deadline: Instant) {
        while (0..self.procs.len()).any(|s| self.procs[s].is_some() && !self.current[s].1) {
            if let Next::Timeout = self.next(Some(deadline)) {
                return;
            }
        }
    }
}

impl Drop for WorkerPool {
    /// No worker outlives the pool, and the signal thread ends with it.
    fn drop(&mut self) {
        for proc in self.procs.iter_mut().flatten() {
            proc.signal(Signal::SIGKILL);
        }
        for slot in 0..self.procs.len() {
            if let Some(mut proc) = self.procs[slot].take() {
                let _ = proc.reap();
            }
        }
        if let Some((handle, thread)) = self.signals.take() {
            handle.close();
            let _ = thread.join();
        }
    }
}
