//! The event loop of one worker: read jobs, run them under a concurrency limit, write
//! one report per job, and leave when told to finish.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use shared::config::WorkerConfig;
use shared::frame::FrameError;
use shared::protocol::{FromWorker, Job, PROTOCOL_VERSION, ToWorker, WorkerStats};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit, mpsc, watch};

use crate::client::ConfigError;
use crate::fault::{FAULT_VAR, Fault, FaultKind};
use crate::fetch::{Fetched, Fetcher};
use crate::ipc::{FrameReader, FrameWriter, Outgoing};
use crate::lag::LagProbe;

/// Why a worker stopped before its coordinator told it to.
#[derive(Debug, Error)]
pub enum WorkerError {
    /// A pipe failed or carried a bad frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The process could not be set up.
    #[error("worker set-up: {0}")]
    Io(#[from] io::Error),
    /// The coordinator speaks another protocol version.
    #[error("protocol version {theirs} from the coordinator, this worker speaks {ours}")]
    Version {
        /// This worker's version.
        ours: u32,
        /// The coordinator's version.
        theirs: u32,
    },
    /// A message that is not valid at this point of the session.
    #[error("unexpected message from the coordinator: {0}")]
    Unexpected(String),
    /// The configuration in the handshake cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The TLS settings in the handshake cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The coordinator exited before this worker could tie its life to it.
    #[error("the coordinator is gone")]
    Orphaned,
}

/// Runs one worker session on `input`/`output` (the pipes to the coordinator), after the
/// `Hello` has been read. Returns once `Finish` or EOF arrived and every job reported.
pub async fn serve(
    input: impl AsyncRead + Unpin + Send + 'static,
    output: impl AsyncWrite + Unpin + Send + 'static,
    config: WorkerConfig,
) -> Result<(), WorkerError> {
    let mut writer = FrameWriter::new(output);
    let fetcher = match Fetcher::new(&config) {
        Ok(f) => Arc::new(f),
        Err(e) => {
            writer
                .send(&FromWorker::Fatal(format!("{}: {e}", e.flag())))
                .await?;
            return Err(e.into());
        }
    };
    let ready = FromWorker::Ready {
        version: PROTOCOL_VERSION,
        pid: std::process::id(),
    };
    writer.send(&ready).await?;

    let mut lag = LagProbe::start();
    // Reports wait here only while their frames are written; at most one per job the
    // coordinator has handed out, so the coordinator's credit bounds this queue.
    let (report_tx, report_rx) = mpsc::unbounded_channel();
    fetcher.report_throttles(&report_tx);
    lag.report_to(report_tx.downgrade());
    let reporting = tokio::spawn(writer.forward(report_rx));
    let fault = Fault::from_env().map(Arc::new);

    let (stop_tx, stop_rx) = watch::channel(false);
    let jobs = read_jobs(input, stop_tx, Arc::clone(&fetcher));
    let slots = Slots::new(config.concurrency);
    let outcome = run_jobs(jobs, stop_rx, &fetcher, &slots, &report_tx, fault).await;

    // Every job slot back means every job has reported.
    let _all = slots.all_reported().await;
    let stats = WorkerStats {
        requests: fetcher.requests.load(Ordering::Relaxed),
        max_loop_lag_us: lag.max_us(),
    };
    let _ = report_tx.send(Outgoing::Message(FromWorker::Bye(stats)));
    drop(report_tx);
    let written = reporting
        .await
        .map_err(|e| io::Error::other(format!("report writer: {e}")))?;
    outcome.and(written)
}

/// Reads frames on a task of its own so that the pipe is always drained, whatever the
/// fetches are doing. The coordinator's credit bounds how many jobs can be waiting.
/// `Stop` is signalled out of band so that it overtakes the queued jobs.
fn read_jobs(
    input: impl AsyncRead + Unpin + Send + 'static,
    stop: watch::Sender<bool>,
    fetcher: Arc<Fetcher>,
) -> mpsc::UnboundedReceiver<Result<Incoming, WorkerError>> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut reader = FrameReader::new(input);
        loop {
            let item = match reader.next::<ToWorker>().await {
                Ok(Some(ToWorker::Jobs(jobs))) => Ok(Incoming::Jobs(jobs)),
                // After the last jobs: acted on once they have all started.
                Ok(Some(ToWorker::Drained)) => Ok(Incoming::Drained),
                Ok(Some(ToWorker::Finish) | None) => break,
                Ok(Some(ToWorker::Stop)) => {
                    let _ = stop.send(true);
                    break;
                }
                Ok(Some(ToWorker::HostRate { origin, rate })) => {
                    fetcher.hosts().set_rate(&origin, rate);
                    continue;
                }
                Ok(Some(other)) => Err(WorkerError::Unexpected(format!("{other:?}"))),
                Err(e) => Err(e.into()),
            };
            let failed = item.is_err();
            if tx.send(item).is_err() || failed {
                break;
            }
        }
    });
    rx
}

/// What a worker lets run at once. `--concurrency` counts requests in flight: a
/// request's slot is given back once its answer is whole, not once its file is
/// written, so that a writer busy with a batch of files does not leave the
/// connections idle. Files waiting for the writer are bounded on their own (at most
/// as many as requests in flight), so that a stalled disk stops the fetching rather
/// than let finished jobs pile up; their bodies are held to `--body-budget` besides.
struct Slots {
    requests: Arc<Semaphore>,
    /// A job from its start to its report: a request slot's worth plus its file's.
    jobs: Arc<Semaphore>,
    jobs_limit: u32,
}

impl Slots {
    fn new(concurrency: u32) -> Slots {
        let limit = concurrency.max(1);
        let jobs_limit = limit.saturating_mul(2);
        Slots {
            requests: Arc::new(Semaphore::new(limit as usize)),
            jobs: Arc::new(Semaphore::new(jobs_limit as usize)),
            jobs_limit,
        }
    }

    /// Waits for a job slot, then a request slot.
    async fn acquire(&self) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let job = Arc::clone(&self.jobs).acquire_owned().await.ok()?;
        let request = Arc::clone(&self.requests).acquire_owned().await.ok()?;
        Some((job, request))
    }

    /// Completes once every job started has reported.
    async fn all_reported(&self) -> Option<SemaphorePermit<'_>> {
        self.jobs.acquire_many(self.jobs_limit).await.ok()
    }
}

/// What the coordinator's frames bring to the job loop, in their order.
enum Incoming {
    Jobs(Vec<Job>),
    /// No job will come after these.
    Drained,
}

async fn run_jobs(
    mut jobs: mpsc::UnboundedReceiver<Result<Incoming, WorkerError>>,
    mut stop: watch::Receiver<bool>,
    fetcher: &Arc<Fetcher>,
    slots: &Slots,
    reports: &mpsc::UnboundedSender<Outgoing>,
    fault: Option<Arc<Fault>>,
) -> Result<(), WorkerError> {
    loop {
        let chunk = tokio::select! {
            chunk = jobs.recv() => match chunk {
                Some(chunk) => chunk?,
                None => return Ok(()),
            },
            _ = stopped(&mut stop) => return Ok(()),
        };
        let chunk = match chunk {
            Incoming::Jobs(chunk) => chunk,
            Incoming::Drained => {
                // Every job has started: a connection that finishes once the last of
                // them has taken one would only idle until exit. Until then they are
                // kept, also while the queue is empty for a moment between two chunks:
                // each job would otherwise make a connection of its own (over TLS, a
                // handshake).
                fetcher.expect_more_jobs(false);
                continue;
            }
        };
        for job in chunk {
            let (job_slot, request_slot) = tokio::select! {
                slots = slots.acquire() => match slots {
                    Some(slots) => slots,
                    None => return Ok(()),
                },
                _ = stopped(&mut stop) => return Ok(()),
            };
            tokio::select! {
                () = fetcher.pace() => {}
                _ = stopped(&mut stop) => return Ok(()),
            }
            let storer = Arc::clone(fetcher);
            let reports = reports.clone();
            let fault = fault.clone();
            fetcher.spawn(job, move |fetched| {
                let fault = fault.and_then(|f| f.on_job_done());
                if let Some(FaultKind::Block(time)) = fault {
                    std::thread::sleep(time);
                }
                // The answer is whole: the next request may go. The job slot is given
                // back once the job has reported, so that every job slot back means
                // every job reported. A stored body reports from the writer thread;
                // injected faults strike once the job's file is in place.
                drop(request_slot);
                let finish = move |report, charge| {
                    let _ = reports.send(Outgoing::Report(FromWorker::Done(report), charge));
                    drop(job_slot);
                    match fault {
                        Some(FaultKind::Panic) => panic!("injected by {FAULT_VAR}"),
                        Some(FaultKind::Garbage) => {
                            let _ = reports.send(Outgoing::Garbage);
                        }
                        _ => {}
                    }
                };
                match fetched {
                    Fetched::Done(report, charge) => finish(report, charge),
                    Fetched::Store {
                        report,
                        body,
                        charge,
                    } => storer.store(report, body, charge, |report| finish(report, None)),
                }
            });
        }
    }
}

/// Completes once `Stop` arrived; never, if the reader ended without one.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn a_request_slot_comes_back_before_its_file_is_written_and_files_waiting_are_bounded() {
        let slots = Slots::new(2);
        let first = slots.acquire().now_or_never().flatten().expect("slot 1");
        let second = slots.acquire().now_or_never().flatten().expect("slot 2");
        assert!(
            slots.acquire().now_or_never().is_none(),
            "two requests are in flight"
        );

        // Both answers are whole; their files wait for the writer.
        let (job1, request1) = first;
        let (job2, request2) = second;
        drop((request1, request2));
        let third = slots.acquire().now_or_never().flatten().expect("slot 3");
        let fourth = slots.acquire().now_or_never().flatten().expect("slot 4");
        let (job3, request3) = third;
        let (job4, request4) = fourth;
        drop((request3, request4));
        assert!(
            slots.acquire().now_or_never().is_none(),
            "no request is in flight, but as many files as requests wait for the writer"
        );
        assert!(slots.all_reported().now_or_never().is_none());

        drop(job1);
        let fifth = slots.acquire().now_or_never().flatten().expect("slot 5");
        drop((job2, job3, job4));
        assert!(
            slots.all_reported().now_or_never().is_none(),
            "the fifth job has not reported"
        );
        drop(fifth);
        assert!(slots.all_reported().now_or_never().flatten().is_some());
    }
}
