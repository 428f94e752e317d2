//! One worker process: a single-threaded tokio event loop that receives jobs on its
//! stdin, keeps up to `concurrency` requests in flight, stores each body atomically and
//! reports one result per job on its stdout.
//!
//! The coordinator starts it by re-executing its own binary in a hidden worker mode;
//! [`run_process`] is that mode's whole body.

mod budget;
mod client;
mod fault;
mod fetch;
mod generator;
mod hosts;
mod ipc;
mod lag;
mod next;
mod pace;
mod process;
mod retry;
mod session;
mod slow_start;
mod store;
pub mod tls;

pub use client::redirect::is_redirect_failure;
pub use client::transport::is_proxy_failure;
pub use client::{ConfigError, request_headers as http2_request_headers};
pub use fault::FAULT_VAR;
pub use fetch::{Fetched, Fetcher};
pub use process::run_process;
pub use session::{WorkerError, serve};
