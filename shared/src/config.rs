//! The settings a worker receives in its handshake: everything it needs to fetch and
//! store a batch, checked by the coordinator before any worker starts.

use serde::{Deserialize, Serialize};

use crate::template::Template;

/// How a worker fetches and stores its batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerConfig {
    /// URL template for range plans; `None` when every job carries its own URL.
    pub url: Option<Template>,
    /// File name template, relative to `out_dir`.
    pub name: Template,
    /// Directory the batch files are written to.
    pub out_dir: String,
    /// Requests this worker keeps in flight at most.
    pub concurrency: u32,
    /// Extra request headers, `(name, value)`. Never logged.
    pub headers: Vec<(String, String)>,
    /// `User-Agent` header.
    pub user_agent: String,
    /// Whole-request timeout in milliseconds.
    pub timeout_ms: u64,
    /// Redirects followed at most.
    pub max_redirects: u32,
    /// CPU to pin the worker to, when there is one core per worker.
    pub cpu: Option<usize>,
}
