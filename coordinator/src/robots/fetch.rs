//! Fetching robots.txt, once per host: on a thread of its own, with a tokio loop and a
//! [`worker::Fetcher`] set up as the run's workers are (TLS trust, proxy, User-Agent,
//! `--header`s, timeouts, retries), so that the dispatch loop never waits for one.
//! Asked for an origin, it answers with the fetch's report and wakes the loop.

use std::sync::Arc;
use std::thread;

use anyhow::Context;
use crossbeam_channel::{Receiver, Sender, unbounded};
use shared::config::WorkerConfig;
use shared::plan::Batch;
use shared::protocol::{Job, JobReport};
use shared::request::RequestSpec;
use tokio::sync::{Semaphore, mpsc};
use worker::{Fetched, Fetcher};

/// Redirects of a robots.txt followed at most (RFC 9309 §2.3.1.2: at least five).
const MAX_REDIRECTS: u32 = 5;
/// Largest robots.txt taken at all; only the first [`super::rules::PARSED_BYTES`] of
/// it are read, and a larger one is no answer.
const MAX_BODY: u64 = 8 << 20;
/// robots.txt fetches in flight at once, to as many hosts.
const IN_FLIGHT: usize = 32;

/// The robots.txt fetcher: ask with [`RobotsFetcher::ask`], collect with
/// [`RobotsFetcher::answers`]. Dropping it ends the thread; fetches still in flight
/// are abandoned.
pub struct RobotsFetcher {
    asks: mpsc::UnboundedSender<String>,
    answers: Receiver<(String, JobReport)>,
}

impl RobotsFetcher {
    /// Starts the thread. `run` is the run's worker configuration; `wake` is called
    /// after each answer, from the fetcher's thread.
    pub fn start(
        run: &WorkerConfig,
        wake: impl Fn() + Send + Sync + 'static,
    ) -> anyhow::Result<RobotsFetcher> {
        let fetcher = Fetcher::new(&config(run)).context("setting up the robots.txt client")?;
        // One request per host: an HTTP/1.1 connection is closed once answered, so that
        // a run over many hosts does not keep one open to each.
        fetcher.expect_more_jobs(false);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the robots.txt loop")?;
        let (asks, asked) = mpsc::unbounded_channel();
        let (answer, answers) = unbounded();
        thread::Builder::new()
            .name("robots".into())
            .spawn(move || {
                runtime.block_on(serve(Arc::new(fetcher), asked, answer, Arc::new(wake)));
                // What is still in flight is not waited for: the run has ended.
                runtime.shutdown_background();
            })
            .context("starting the robots.txt thread")?;
        Ok(RobotsFetcher { asks, answers })
    }

    /// Fetches `origin`'s robots.txt (`origin` is `scheme://host[:port]`).
    pub fn ask(&self, origin: String) {
        // The thread lives as long as this handle: a send fails only if it panicked,
        // and then the host's batches wait until the run is stopped.
        let _ = self.asks.send(origin);
    }

    /// The answers that came since the last call: each origin with the report of its
    /// robots.txt.
    pub fn answers(&self) -> impl Iterator<Item = (String, JobReport)> + '_ {
        self.answers.try_iter()
    }
}

/// The run's configuration as a robots.txt fetch needs it: a plain GET with the run's
/// identity and trust, no body, no file, no `--rate` turn, and five redirects.
fn config(run: &WorkerConfig) -> WorkerConfig {
    WorkerConfig {
        url: None,
        out_dir: None,
        request: RequestSpec::default(),
        rate: None,
        max_redirects: MAX_REDIRECTS,
        max_body: MAX_BODY,
        concurrency: IN_FLIGHT as u32,
        ..run.clone()
    }
}

/// Fetches each origin asked for, [`IN_FLIGHT`] at a time, until the asking side is
/// dropped.
async fn serve(
    fetcher: Arc<Fetcher>,
    mut asked: mpsc::UnboundedReceiver<String>,
    answer: Sender<(String, JobReport)>,
    wake: Arc<dyn Fn() + Send + Sync>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(origin) = asked.recv().await {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let job = Job {
            batch: Batch::single(0),
            url: Some(format!("{origin}/robots.txt")),
            page: None,
            stored: None,
        };
        let (answer, wake) = (answer.clone(), Arc::clone(&wake));
        fetcher.spawn(job, move |fetched| {
            drop(slot);
            let report = match fetched {
                Fetched::Done(report, _) | Fetched::Store { report, .. } => report,
            };
            if answer.send((origin, report)).is_ok() {
                wake();
            }
        });
    }
}
