//! Messages on the pipes: the coordinator writes [`ToWorker`] frames to a worker's stdin,
//! the worker answers with [`FromWorker`] frames on its stdout.
//!
//! A session is: `Hello` → `Ready`, then any number of `Jobs` answered by one `Done` per
//! job, then `Finish` (or EOF on stdin) → `Bye` and exit. `Stop` ends a session early:
//! queued jobs are dropped unreported and the coordinator hands them out again later.
//!
//! A load-test session is: `Hello` with [`Task::Load`] → `Ready`, a `LoadTick` every
//! second, then `LoadDone` and `Bye` when the spec is met or `Stop` (or EOF) arrives.

use serde::{Deserialize, Serialize};

use crate::chain::PageReport;
use crate::config::WorkerConfig;
use crate::loadtest::{LoadReport, LoadSpec, LoadStats};
use crate::plan::Batch;
use crate::refresh::{Stored, Validators};

/// Bumped whenever a message changes shape; both sides must agree.
pub const PROTOCOL_VERSION: u32 = 2;

/// One batch to fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Which batch of the plan.
    pub batch: Batch,
    /// The URL, for URL-list plans and a chain's later pages; `None` means "render
    /// the URL template".
    pub url: Option<String>,
    /// Under `--follow-next`, the page of the batch's chain, from 1: the worker reads
    /// the next page from it.
    pub page: Option<u64>,
    /// What an earlier run stored for the batch, on a `--refresh`: the request is
    /// conditional on its validators.
    pub stored: Option<Box<Stored>>,
}

/// Coordinator → worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToWorker {
    /// First message: who the worker is and what it does.
    Hello {
        /// The coordinator's [`PROTOCOL_VERSION`].
        version: u32,
        /// The worker's slot number, from 0.
        worker: u32,
        /// CPU to pin the worker to, when there is one core per worker.
        cpu: Option<usize>,
        /// Scrape or load test.
        task: Task,
    },
    /// More batches to fetch.
    Jobs(Vec<Job>),
    /// No more jobs will come: finish what is in flight, say `Bye` and exit.
    Finish,
    /// Stop early: start no queued job (they go unreported), finish those in flight,
    /// say `Bye` and exit.
    Stop,
    /// Nothing new will come, only jobs of a worker that died: connections that
    /// finish from now on are closed rather than kept for jobs that will not come.
    Drained,
    /// The rate at which this worker may send to a host that answered 429 or 503
    /// (adaptive throttling); `None` lifts it.
    HostRate {
        /// `scheme://host:port`.
        origin: String,
        /// Requests per second, this worker's share.
        rate: Option<f64>,
    },
}

/// What a worker does in its session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Task {
    /// Fetch and store the jobs it is sent.
    Scrape(Box<WorkerConfig>),
    /// Load-test: send requests as the spec says and report statistics.
    Load(Box<LoadSpec>),
}

/// How a batch ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The body is on disk under this file name (relative to the out dir).
    Saved {
        /// File name.
        file: String,
    },
    /// The body itself, when the coordinator writes it (`--out -`).
    Fetched {
        /// Body bytes.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// A refresh's conditional request was answered 304 Not Modified: the file stored
    /// before is kept as it is.
    Unchanged {
        /// File name, as stored before.
        file: String,
    },
    /// No file was written.
    Failed {
        /// What went wrong, for people.
        error: String,
    },
    /// Not fetched on purpose, which is no failure: the coordinator decided so before
    /// any worker held the batch.
    Skipped {
        /// Why.
        why: Skip,
    },
}

/// Why a batch was not fetched on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Skip {
    /// The host's robots.txt disallows its URL (or the host gave no usable robots.txt
    /// because of a server error or no answer: RFC 9309 then disallows everything).
    Robots,
}

impl Skip {
    /// The word the manifest and the summary use.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Robots => "robots",
        }
    }
}

/// The result of one batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReport {
    /// Which batch.
    pub batch: Batch,
    /// The URL fetched.
    pub url: String,
    /// HTTP status of the last response, if one came.
    pub status: Option<u16>,
    /// Body bytes received (after decompression).
    pub bytes: u64,
    /// Time from first request to stored file, in microseconds.
    pub elapsed_us: u64,
    /// Requests made for this batch.
    pub attempts: u32,
    /// File or error.
    pub outcome: Outcome,
    /// Under `--follow-next`, the page and the next page it names.
    pub chain: Option<PageReport>,
    /// The validators of the last response (`ETag`, `Last-Modified`), for the next
    /// `--refresh`.
    pub validators: Validators,
}

/// Totals a worker sends when it leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStats {
    /// HTTP requests sent.
    pub requests: u64,
    /// Largest event-loop scheduling lag seen, in microseconds.
    pub max_loop_lag_us: u64,
}

/// Worker → coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FromWorker {
    /// Answer to `Hello`: the worker is ready for jobs.
    Ready {
        /// The worker's [`PROTOCOL_VERSION`].
        version: u32,
        /// The worker's process id.
        pid: u32,
    },
    /// One batch finished, stored or failed.
    Done(JobReport),
    /// The worker could not go on (e.g. bad configuration); it exits next.
    Fatal(String),
    /// Answer to `Finish`: nothing is in flight any more; the worker exits next.
    Bye(WorkerStats),
    /// Load test: what the last second brought (`second` counts from 0).
    LoadTick {
        /// Seconds since the worker started sending.
        second: u32,
        /// That second's numbers.
        stats: Box<LoadStats>,
    },
    /// Load test: the worker's closing report; `Bye` follows.
    LoadDone(Box<LoadReport>),
    /// The worst event-loop lag of the worker so far, in microseconds (sent once a
    /// second while it grows, for live metrics).
    LoopLag {
        /// Microseconds.
        max_us: u64,
    },
    /// A host answered 429 or 503 (or sent `Retry-After` with one): it wants fewer
    /// requests. Sent as it happens, so that every worker slows down at once.
    Throttled {
        /// `scheme://host:port`.
        origin: String,
    },
}
