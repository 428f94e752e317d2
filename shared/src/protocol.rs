//! Messages on the pipes: the coordinator writes [`ToWorker`] frames to a worker's stdin,
//! the worker answers with [`FromWorker`] frames on its stdout.
//!
//! A session is: `Hello` → `Ready`, then any number of `Jobs` answered by one `Done` per
//! job, then `Finish` (or EOF on stdin) → `Bye` and exit. `Stop` ends a session early:
//! queued jobs are dropped unreported and the coordinator hands them out again later.

use serde::{Deserialize, Serialize};

use crate::config::WorkerConfig;
use crate::plan::Batch;

/// Bumped whenever a message changes shape; both sides must agree.
pub const PROTOCOL_VERSION: u32 = 1;

/// One batch to fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Which batch of the plan.
    pub batch: Batch,
    /// The URL, for URL-list plans; `None` means "render the URL template".
    pub url: Option<String>,
}

/// Coordinator → worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToWorker {
    /// First message: who the worker is and how it works.
    Hello {
        /// The coordinator's [`PROTOCOL_VERSION`].
        version: u32,
        /// The worker's slot number, from 0.
        worker: u32,
        /// Fetch and storage settings.
        config: Box<WorkerConfig>,
    },
    /// More batches to fetch.
    Jobs(Vec<Job>),
    /// No more jobs will come: finish what is in flight, say `Bye` and exit.
    Finish,
    /// Stop early: start no queued job (they go unreported), finish those in flight,
    /// say `Bye` and exit.
    Stop,
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
    /// No file was written.
    Failed {
        /// What went wrong, for people.
        error: String,
    },
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}
