//! Fetching one job: render its URL, GET it, store the body, describe the outcome.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, LOCATION, RETRY_AFTER, USER_AGENT};
use reqwest::redirect::Policy;
use shared::config::{RetryPolicy, WorkerConfig};
use shared::plan::Batch;
use shared::protocol::{Job, JobReport, Outcome};
use shared::template::Template;
use thiserror::Error;

use crate::budget::{Budget, Charge};
use crate::h2c::H2cClient;
use crate::plain::{Exchange, PlainClient, PlainError, follow_redirects};
use crate::redirect;
use crate::store;

/// A configuration that cannot be turned into an HTTP client.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A `--header` whose name is not a valid HTTP header name.
    #[error("`{0}` is not a valid header name")]
    HeaderName(String),
    /// A `--header` whose value is not a valid HTTP header value (the value is not shown).
    #[error("the value of `{0}` is not a valid header value")]
    HeaderValue(String),
    /// A `--user-agent` that is not a valid header value.
    #[error("not a valid header value")]
    UserAgent,
}

impl ConfigError {
    /// The command-line flag the error is about.
    pub fn flag(&self) -> &'static str {
        match self {
            ConfigError::HeaderName(_) | ConfigError::HeaderValue(_) => "--header",
            ConfigError::UserAgent => "--user-agent",
        }
    }
}

/// A fetched job. Its charge on the body budget goes with it until its bytes have
/// left the worker.
pub enum Fetched {
    /// Nothing left to do: the report is final (it holds the body under `--out -`).
    Done(JobReport, Charge),
    /// `body` is still to be stored under the file name of the report's
    /// [`Outcome::Saved`]; [`Fetcher::store`] settles the report.
    Store {
        /// The report, as it stands if the write succeeds.
        report: JobReport,
        /// The body.
        body: Bytes,
        /// What the body holds of the budget.
        charge: Charge,
    },
}

/// A lean client a job's task is built around: which of the fetcher's clients it is.
trait Lean: Exchange + Send + Sync + 'static {
    fn of(fetcher: &Fetcher) -> Option<&Self>;
}

impl Lean for PlainClient {
    fn of(fetcher: &Fetcher) -> Option<&Self> {
        fetcher.plain.as_ref()
    }
}

impl Lean for H2cClient {
    fn of(fetcher: &Fetcher) -> Option<&Self> {
        fetcher.h2c.as_ref()
    }
}

/// No lean client: every URL goes through reqwest.
enum FullOnly {}

impl Exchange for FullOnly {
    async fn exchange(
        &self,
        _: &str,
        _: &str,
        _: u64,
        _: bool,
        _: &mut Charge,
    ) -> Result<(crate::plain::Fetched, Option<String>), PlainError> {
        match *self {}
    }

    fn max_redirects(&self) -> u32 {
        match *self {}
    }
}

impl Lean for FullOnly {
    fn of(_: &Fetcher) -> Option<&Self> {
        None
    }
}

/// Fetches jobs for one worker: a lean client for plain `http://` URLs (HTTP/1.1, or
/// HTTP/2 under `--http2`) and reqwest for the rest, each keeping its connections alive
/// for the next request.
pub struct Fetcher {
    full: FullClient,
    url: Option<Template>,
    name: Template,
    out_dir: Option<PathBuf>,
    /// Started with the first file, so that a fetcher built only to check a
    /// configuration starts no thread.
    writer: OnceLock<store::Writer>,
    max_body: u64,
    /// Whether `--header`s follow redirects to other origins.
    location_trusted: bool,
    retry: RetryPolicy,
    pacer: Option<Pacer>,
    /// The lean client for plain `http://` URLs, unless compressed bodies or HTTP/2
    /// are asked for.
    plain: Option<PlainClient>,
    /// The HTTP/2 client for plain `http://` URLs under `--http2`.
    h2c: Option<H2cClient>,
    timeout: Duration,
    /// The memory the bodies of this worker may take at once.
    budget: Arc<Budget>,
    /// HTTP requests sent so far.
    pub requests: AtomicU64,
}

/// reqwest, for what the lean client does not do (TLS, compressed bodies). It is built
/// on first use: a worker that only fetches plain `http://` URLs never loads TLS roots
/// or touches the code behind them, and stays smaller for it.
struct FullClient {
    headers: HeaderMap,
    user_agent: HeaderValue,
    timeout: Duration,
    connect_timeout: Duration,
    max_redirects: usize,
    max_idle: usize,
    http2: bool,
    client: OnceLock<Result<reqwest::Client, String>>,
}

impl FullClient {
    fn client(&self) -> Result<&reqwest::Client, Failure> {
        let built = self.client.get_or_init(|| {
            let builder = reqwest::Client::builder();
            let builder = if self.http2 {
                builder.http2_prior_knowledge()
            } else {
                builder
            };
            builder
                .user_agent(self.user_agent.clone())
                .timeout(self.timeout)
                .connect_timeout(self.connect_timeout)
                // Redirects are followed by hand, to decide per hop which headers go.
                .redirect(Policy::none())
                .pool_max_idle_per_host(self.max_idle)
                .tcp_nodelay(true)
                .build()
                .map_err(|e| format!("the HTTP client cannot be built: {e}"))
        });
        built.as_ref().map_err(|e| Failure::fatal(e.clone(), None))
    }
}

/// Spaces requests evenly at a fixed rate: each takes the next free send time.
struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    fn new(per_second: f64) -> Pacer {
        Pacer {
            interval: Duration::from_secs_f64(1.0 / per_second),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for this request's send time.
    async fn wait(&self) {
        let at = {
            // One thread uses it, so the lock is never contended; a poisoned lock
            // still holds a valid time.
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let at = (*next).max(Instant::now());
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at.into()).await;
    }
}

/// Why one attempt failed, and whether another may succeed.
struct Failure {
    error: String,
    retryable: bool,
    status: Option<u16>,
    retry_after: Option<Duration>,
}

impl Failure {
    fn retryable(error: String) -> Failure {
        Failure {
            error,
            retryable: true,
            status: None,
            retry_after: None,
        }
    }

    /// Connect errors, resets and cut-off bodies pass; a body over the limit and a
    /// redirect that cannot be followed do not.
    fn plain(e: PlainError, max_body: u64) -> Failure {
        match e {
            PlainError::Connect(m) | PlainError::Reset(m) | PlainError::Read(m) => {
                Failure::retryable(m)
            }
            PlainError::TooLarge(n) => Failure::fatal(
                format!("body of {n} bytes or more is over --max-body {max_body}"),
                None,
            ),
            PlainError::Redirect(m) => Failure::fatal(m, None),
            PlainError::NeedsFullClient(handoff) => Failure::fatal(handoff.url, None),
        }
    }

    fn fatal(error: String, status: Option<u16>) -> Failure {
        Failure {
            error,
            retryable: false,
            status,
            retry_after: None,
        }
    }

    /// Connect errors, resets, timeouts and cut-off bodies pass; bad URLs and redirect
    /// loops do not.
    fn transport(e: reqwest::Error) -> Failure {
        let retryable = !e.is_builder()
            && !e.is_redirect()
            && (e.is_connect() || e.is_timeout() || e.is_body() || e.is_decode() || e.is_request());
        Failure {
            error: describe(e),
            retryable,
            status: None,
            retry_after: None,
        }
    }
}

impl Fetcher {
    /// A fetcher for `config`; fails on headers that HTTP does not allow.
    pub fn new(config: &WorkerConfig) -> Result<Self, ConfigError> {
        let headers = header_map(&config.headers)?;
        let user_agent =
            HeaderValue::from_str(&config.user_agent).map_err(|_| ConfigError::UserAgent)?;
        let full = FullClient {
            headers,
            user_agent,
            timeout: Duration::from_millis(config.timeout_ms),
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            max_redirects: config.max_redirects as usize,
            max_idle: config.concurrency as usize,
            http2: config.http2,
            client: OnceLock::new(),
        };
        let lean = !config.compressed;
        let h2c = (lean && config.http2).then(|| {
            let mut headers = full.headers.clone();
            headers.insert(USER_AGENT, full.user_agent.clone());
            H2cClient::new(config, headers)
        });
        Ok(Fetcher {
            full,
            url: config.url.clone(),
            name: config.name.clone(),
            out_dir: config.out_dir.as_ref().map(PathBuf::from),
            writer: OnceLock::new(),
            max_body: config.max_body,
            location_trusted: config.location_trusted,
            retry: config.retry.clone(),
            pacer: config.rate.filter(|r| *r > 0.0).map(Pacer::new),
            plain: (lean && !config.http2).then(|| PlainClient::new(config)),
            h2c,
            timeout: Duration::from_millis(config.timeout_ms),
            budget: Budget::new(config.body_budget),
            requests: AtomicU64::new(0),
        })
    }

    /// Fetches one job on a task of its own and hands what came of it to `done`.
    ///
    /// Each kind of client gets a task type of its own, sized for its own exchange: an
    /// HTTP/2 job's task carries no room for an HTTP/1.1 exchange nor for reqwest's,
    /// and needs no second allocation for its own.
    pub fn spawn(self: &Arc<Self>, job: Job, done: impl FnOnce(Fetched) + Send + 'static) {
        if self.plain.is_some() {
            tokio::spawn(self.run::<PlainClient>(job).map(done));
        } else if self.h2c.is_some() {
            tokio::spawn(self.run::<H2cClient>(job).map(done));
        } else {
            tokio::spawn(self.run::<FullOnly>(job).map(done));
        }
    }

    /// Fetches one job, retrying as the policy allows; never fails, the report says
    /// what happened. A body to be stored comes back with it, for [`Fetcher::store`].
    ///
    /// Not an `async fn`: its arguments would stay in the future's state for the whole
    /// request, beside what is made of them, and ten thousand requests in flight each
    /// carry that state.
    fn run<C: Lean>(self: &Arc<Self>, job: Job) -> impl Future<Output = Fetched> + Send + 'static {
        let Job { batch, url } = job;
        let url = match (url, &self.url) {
            (Some(url), _) => url,
            (None, Some(template)) => template.render(&batch.values()),
            (None, None) => String::new(),
        };
        let this = Arc::clone(self);
        async move {
            let started = Instant::now();
            let mut attempts = 0;
            let mut charge = Charge::new(&this.budget);
            let (status, fetched) = loop {
                attempts += 1;
                let failure = match this.attempt::<C>(&url, &mut charge).await {
                    Ok((status, body)) => break (Some(status), Ok(body)),
                    Err(failure) => failure,
                };
                charge.release();
                match this.retry_wait(&failure, attempts, started) {
                    Ok(wait) => {
                        // Boxed, like the other rare paths: a job's task is sized for
                        // its largest state, and ten thousand tasks in flight are all
                        // that size.
                        Box::pin(async {
                            tokio::time::sleep(wait).await;
                            // Retries keep to the rate too.
                            this.pace().await;
                        })
                        .await;
                    }
                    Err(error) => break (failure.status, Err(error)),
                }
            };
            let fetched = this.settle(batch, url, status, fetched, started, attempts);
            match fetched {
                (report, Some(body)) => Fetched::Store {
                    report,
                    body,
                    charge,
                },
                (report, None) => Fetched::Done(report, charge),
            }
        }
    }

    /// How long to wait before another attempt after `failure`, or the batch's error
    /// if there is to be none.
    fn retry_wait(
        &self,
        failure: &Failure,
        attempts: u32,
        started: Instant,
    ) -> Result<Duration, String> {
        if !failure.retryable || attempts > self.retry.retries {
            return Err(failure.error.clone());
        }
        let mut wait = self.retry.backoff(attempts, fastrand::f64());
        if let Some(asked) = failure.retry_after {
            wait = wait.max(asked.min(Duration::from_millis(self.retry.retry_after_max_ms)));
        }
        if started.elapsed() + wait > Duration::from_millis(self.retry.max_time_ms) {
            return Err(format!(
                "{} (no retry: --retry-max-time would be exceeded)",
                failure.error
            ));
        }
        Ok(wait)
    }

    /// The job's report, and its body if it is to be stored.
    fn settle(
        &self,
        batch: Batch,
        url: String,
        status: Option<u16>,
        fetched: Result<Bytes, String>,
        started: Instant,
        attempts: u32,
    ) -> (JobReport, Option<Bytes>) {
        let bytes = fetched.as_ref().map_or(0, |body| body.len() as u64);
        let (outcome, to_store) = match fetched {
            Ok(body) if self.out_dir.is_some() => {
                let file = self.name.render(&batch.values());
                (Outcome::Saved { file }, Some(body))
            }
            Ok(body) => (Outcome::Fetched { body: body.into() }, None),
            Err(error) => (Outcome::Failed { error }, None),
        };
        let report = JobReport {
            batch,
            url,
            status,
            bytes,
            elapsed_us: started.elapsed().as_micros() as u64,
            attempts,
            outcome,
        };
        (report, to_store)
    }

    /// Stores the body of a [`Fetched::Store`] on the writer thread (started on first
    /// use), then hands its settled report to `done`, on that thread.
    pub fn store(
        &self,
        mut report: JobReport,
        body: Bytes,
        charge: Charge,
        done: impl FnOnce(JobReport) + Send + 'static,
    ) {
        let (Outcome::Saved { file }, Some(dir)) = (&mut report.outcome, &self.out_dir) else {
            return done(report);
        };
        // The writer borrows the name and gives it back with the result.
        let file = std::mem::take(file);
        let writer = match self.writer.get() {
            Some(writer) => Ok(writer),
            None => store::Writer::start(dir.clone()).map(|w| self.writer.get_or_init(|| w)),
        };
        let settle = move |file: String, written: std::io::Result<()>| {
            // The bytes are on disk (or will never be): their budget is free again.
            drop(charge);
            report.outcome = match written {
                Ok(()) => Outcome::Saved { file },
                Err(e) => Outcome::Failed {
                    error: format!("writing {file}: {e}"),
                },
            };
            done(report);
        };
        match writer {
            Ok(writer) => writer.submit(file, body, settle),
            Err(e) => settle(file, Err(e)),
        }
    }

    /// Waits for the next send time under `--rate` (at once without one). The session
    /// waits here before it starts a job, so that a stop cuts the wait short.
    pub async fn pace(&self) {
        if let Some(pacer) = &self.pacer {
            pacer.wait().await;
        }
    }

    /// Tells the fetcher whether more jobs are queued behind the running ones: only then
    /// are finished keep-alive connections worth keeping open.
    pub fn expect_more_jobs(&self, more: bool) {
        if let Some(plain) = &self.plain {
            plain.retain_connections(more);
        }
    }

    /// One request: the status and the whole body. Plain `http://` URLs go through the
    /// lean client `C` where there is one, the rest through reqwest.
    async fn attempt<C: Lean>(
        &self,
        url: &str,
        charge: &mut Charge,
    ) -> Result<(u16, Bytes), Failure> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let plain_http = url
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("http://"));
        let fetched = match C::of(self) {
            Some(client) if plain_http => {
                let fetch =
                    follow_redirects(client, url, self.max_body, self.location_trusted, charge);
                tokio::time::timeout(self.timeout, fetch).await
            }
            // Boxed: in a run with a lean client this is the rare path, and its state
            // should not size every task.
            _ => return Box::pin(self.attempt_full(url, url, 0, charge)).await,
        };
        let fetched = match fetched {
            Ok(Ok(fetched)) => fetched,
            Ok(Err(PlainError::NeedsFullClient(next))) => {
                charge.release();
                return Box::pin(self.attempt_full(url, &next.url, next.hops, charge)).await;
            }
            Ok(Err(e)) => return Err(Failure::plain(e, self.max_body)),
            Err(_) => {
                return Err(Failure::retryable(format!(
                    "no whole response within --timeout {:?}",
                    self.timeout
                )));
            }
        };
        let code = fetched.status;
        if !(200..300).contains(&code) {
            return Err(self.status_failure(code, fetched.retry_after.as_deref()));
        }
        Ok((code, fetched.body))
    }

    /// A failure for a response with a status other than 2xx.
    fn status_failure(&self, code: u16, retry_after_header: Option<&str>) -> Failure {
        let status = reqwest::StatusCode::from_u16(code)
            .map_or_else(|_| code.to_string(), |s| s.to_string());
        Failure {
            error: format!("HTTP {status}"),
            retryable: self.retry.retries_status(code),
            status: Some(code),
            retry_after: retry_after_header.and_then(|v| retry_after(v, SystemTime::now())),
        }
    }

    /// One request through reqwest (TLS, decompression) for the job's URL `original`,
    /// starting at `url`, `hops` redirects away from it. Redirects are followed here,
    /// with the `--header`s for `original`'s origin only. The body is read chunk by
    /// chunk, so that one over `max_body` is never buffered whole.
    async fn attempt_full(
        &self,
        original: &str,
        url: &str,
        mut hops: u32,
        charge: &mut Charge,
    ) -> Result<(u16, Bytes), Failure> {
        let client = self.full.client()?;
        let mut at = url.to_owned();
        let mut response = loop {
            let trusted = self.location_trusted || redirect::same_origin(original, &at);
            let request = client.get(&at);
            let request = match trusted {
                true => request.headers(self.full.headers.clone()),
                false => request,
            };
            let response = request.send().await.map_err(Failure::transport)?;
            let location = response
                .headers()
                .get(LOCATION)
                .filter(|_| redirect::is_followed(response.status().as_u16()))
                .and_then(|v| v.to_str().ok());
            let Some(location) = location else {
                break response;
            };
            if hops as usize >= self.full.max_redirects {
                return Err(Failure::fatal(
                    format!(
                        "more than {} redirects (--max-redirects)",
                        self.full.max_redirects
                    ),
                    None,
                ));
            }
            hops += 1;
            at = redirect::resolve(&at, location)
                .map_err(|e| Failure::plain(e, self.max_body))?
                .into();
        };
        let status = response.status();
        let code = status.as_u16();
        if !status.is_success() {
            let header = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok());
            return Err(self.status_failure(code, header));
        }
        let too_big = |len: u64| {
            Failure::fatal(
                format!(
                    "body of {len} bytes or more is over --max-body {}",
                    self.max_body
                ),
                Some(code),
            )
        };
        if let Some(len) = response.content_length()
            && len > self.max_body
        {
            return Err(too_big(len));
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| Failure {
            status: Some(code),
            ..Failure::transport(e)
        })? {
            if (body.len() + chunk.len()) as u64 > self.max_body {
                return Err(too_big((body.len() + chunk.len()) as u64));
            }
            charge.cover(body.len() + chunk.len()).await;
            body.extend_from_slice(&chunk);
        }
        Ok((code, body.freeze()))
    }
}

/// `--header` pairs as a header map; values are marked sensitive, so that they are
/// never logged (nor indexed by HTTP/2 header compression).
pub(crate) fn header_map(pairs: &[(String, String)]) -> Result<HeaderMap, ConfigError> {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        let key = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ConfigError::HeaderName(name.clone()))?;
        let mut value =
            HeaderValue::from_str(value).map_err(|_| ConfigError::HeaderValue(name.clone()))?;
        value.set_sensitive(true);
        headers.append(key, value);
    }
    Ok(headers)
}

/// A `Retry-After` value, in seconds or as an HTTP date, as a wait from `now`.
fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The error and its causes on one line, e.g. "error sending request: connection refused".
fn describe(e: reqwest::Error) -> String {
    one_line(&e.without_url())
}

/// An error and its causes on one line.
pub(crate) fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after("7", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(retry_after(&later, now), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(retry_after("soon", now), None);
    }
}
