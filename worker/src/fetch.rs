//! Fetching one job: render its URL, GET it, store the body, describe the outcome.

use std::error::Error as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::redirect::Policy;
use shared::config::WorkerConfig;
use shared::protocol::{Job, JobReport, Outcome};
use shared::template::Template;
use thiserror::Error;

use crate::store;

/// A configuration that cannot be turned into an HTTP client.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A `--header` whose name is not a valid HTTP header name.
    #[error("--header: `{0}` is not a valid header name")]
    HeaderName(String),
    /// A `--header` whose value is not a valid HTTP header value (the value is not shown).
    #[error("--header: the value of `{0}` is not a valid header value")]
    HeaderValue(String),
    /// A `--user-agent` that is not a valid header value.
    #[error("--user-agent is not a valid header value")]
    UserAgent,
    /// The client could not be built.
    #[error("HTTP client: {0}")]
    Client(String),
}

/// Fetches jobs for one worker: one HTTP client with keep-alive, shared by all requests.
pub struct Fetcher {
    client: reqwest::Client,
    url: Option<Template>,
    name: Template,
    out_dir: PathBuf,
    /// HTTP requests sent so far.
    pub requests: AtomicU64,
}

impl Fetcher {
    /// Builds the client for `config`; fails on headers that HTTP does not allow.
    pub fn new(config: &WorkerConfig) -> Result<Self, ConfigError> {
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let key = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ConfigError::HeaderName(name.clone()))?;
            let mut val =
                HeaderValue::from_str(value).map_err(|_| ConfigError::HeaderValue(name.clone()))?;
            val.set_sensitive(true);
            headers.append(key, val);
        }
        let user_agent =
            HeaderValue::from_str(&config.user_agent).map_err(|_| ConfigError::UserAgent)?;
        let client = reqwest::Client::builder()
            .user_agent(user_agent)
            .default_headers(headers)
            .timeout(Duration::from_millis(config.timeout_ms))
            .redirect(Policy::limited(config.max_redirects as usize))
            .pool_max_idle_per_host(config.concurrency as usize)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ConfigError::Client(e.to_string()))?;
        Ok(Fetcher {
            client,
            url: config.url.clone(),
            name: config.name.clone(),
            out_dir: PathBuf::from(&config.out_dir),
            requests: AtomicU64::new(0),
        })
    }

    /// Fetches and stores one job; never fails, the report says what happened.
    pub async fn run(&self, job: Job) -> JobReport {
        let values = job.batch.values();
        let url = match (job.url, &self.url) {
            (Some(url), _) => url,
            (None, Some(template)) => template.render(&values),
            (None, None) => String::new(),
        };
        let started = Instant::now();
        let mut status = None;
        let mut bytes = 0;
        let outcome = match self.fetch(&url, &mut status).await {
            Ok(body) => {
                bytes = body.len() as u64;
                let file = self.name.render(&values);
                match store::save(self.out_dir.clone(), file.clone(), body).await {
                    Ok(()) => Outcome::Saved { file },
                    Err(e) => Outcome::Failed {
                        error: format!("writing {file}: {e}"),
                    },
                }
            }
            Err(error) => Outcome::Failed { error },
        };
        JobReport {
            batch: job.batch,
            url,
            status,
            bytes,
            elapsed_us: started.elapsed().as_micros() as u64,
            attempts: 1,
            outcome,
        }
    }

    async fn fetch(&self, url: &str, status: &mut Option<u16>) -> Result<bytes::Bytes, String> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let response = self.client.get(url).send().await.map_err(describe)?;
        *status = Some(response.status().as_u16());
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        response.bytes().await.map_err(describe)
    }
}

/// The error and its causes on one line, e.g. "error sending request: connection refused".
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
