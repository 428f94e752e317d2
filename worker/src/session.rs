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
use tokio::sync::{Semaphore, mpsc, watch};

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
    let limit = config.concurrency.max(1) as usize;
    let slots = Arc::new(Semaphore::new(limit));
    let outcome = run_jobs(jobs, stop_rx, &fetcher, &slots, &report_tx, fault).await;

    // Every slot back means every job has reported.
    let _all = slots.acquire_many(limit as u32).await;
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
    slots: &Arc<Semaphore>,
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
            let slot = tokio::select! {
                slot = Arc::clone(slots).acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => return Ok(()),
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
                // The slot is given back once the job has reported, so that every slot
                // back means every job reported. A stored body reports from the writer
                // thread; injected faults strike once the job's file is in place.
                let finish = move |report, charge| {
                    let _ = reports.send(Outgoing::Report(FromWorker::Done(report), charge));
                    drop(slot);
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
