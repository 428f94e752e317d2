//! Fetching one job: render its URL (and its request body), send it through the right
//! client, retry as the policy allows, and describe the outcome; the body goes to the
//! writer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use shared::chain::PageReport;
use shared::config::{RetryPolicy, WorkerConfig};
use shared::plan::Batch;
use shared::protocol::{Job, JobReport, Outcome};
use shared::refresh::{Stored, Validators};
use shared::template::{Template, Values};

use crate::budget::{Budget, Charge};
use crate::client::full::FullClient;
use crate::client::h2c::H2cClient;
use crate::client::pool::Http1Client;
use crate::client::redirect::follow_redirects;
use crate::client::{Ask, ClientError, ConfigError, Exchange, Payload, Response, Verb};
use crate::hosts::HostGates;
use crate::ipc::Outgoing;
use crate::next::NextRule;
use crate::pace::Pacer;
use crate::retry::{self, Failure};
use crate::store;
use shared::protocol::FromWorker;
use tokio::sync::mpsc;

/// A fetched job. Its charge on the body budget goes with it until its bytes have
/// left the worker.
pub enum Fetched {
    /// Nothing left to do: the report is final (it holds the body under `--out -`).
    Done(JobReport, Option<Charge>),
    /// `body` is still to be stored under the file name of the report's
    /// [`Outcome::Saved`]; [`Fetcher::store`] settles the report.
    Store {
        /// The report, as it stands if the write succeeds.
        report: JobReport,
        /// The body.
        body: Bytes,
        /// What the body holds of the budget.
        charge: Option<Charge>,
    },
}

/// A lean client a job's task is built around: which of the fetcher's clients it is.
trait Lean: Exchange + Send + Sync + 'static {
    fn of(fetcher: &Fetcher) -> Option<&Self>;
}

impl Lean for Http1Client {
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
        _: bool,
        _: &str,
        _: &str,
        _: Ask<'_>,
        _: u64,
        _: bool,
    ) -> Result<(Response, Option<String>), ClientError> {
        match *self {}
    }

    fn max_redirects(&self) -> u32 {
        match *self {}
    }

    fn method(&self) -> &http::Method {
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
    /// The request body's template (`-d`, `--data-json`), rendered like the URL.
    body: Option<Template>,
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
    plain: Option<Http1Client>,
    /// The HTTP/2 client for plain `http://` URLs under `--http2`.
    h2c: Option<H2cClient>,
    timeout: Duration,
    /// Where a page names the next one (`--follow-next`).
    next: Option<NextRule>,
    /// HTTP requests sent so far.
    pub requests: AtomicU64,
    /// Per-host limits and adaptive rates.
    hosts: Arc<HostGates>,
    /// Whether hosts that answer 429 or 503 are reported.
    adaptive: bool,
    /// Where they are reported (the session's report channel).
    /// Weak: the channel must close when the session's own sender goes.
    throttles: OnceLock<mpsc::WeakUnboundedSender<Outgoing>>,
}

/// What a response said besides its status and body: its `Link` fields and, after
/// redirects, the URL that answered. Read only for chain pages.
type Meta = (Option<String>, Option<String>);

impl Fetcher {
    /// A fetcher for `config`; fails on headers that HTTP does not allow.
    pub fn new(config: &WorkerConfig) -> Result<Self, ConfigError> {
        // The memory the bodies of this worker may take at once, whichever client reads
        // them.
        let budget = Budget::new(config.body_budget);
        let verb = Verb::new(&config.request, config.retry.non_idempotent)?;
        let mut retry = config.retry.clone();
        if !verb.repeatable {
            // A POST that failed may still have been applied: one attempt only.
            retry.retries = 0;
        }
        let full = FullClient::new(config, verb.clone(), Arc::clone(&budget))?;
        let lean = !config.compressed;
        let h2c = (lean && config.http2).then(|| {
            H2cClient::new(
                config,
                verb.clone(),
                full.all_headers(),
                Arc::clone(&budget),
            )
        });
        // Without --http2, a TLS host may still choose HTTP/2 by ALPN.
        let plain = (lean && !config.http2).then(|| {
            let h2 = H2cClient::new(
                config,
                verb.clone(),
                full.all_headers(),
                Arc::clone(&budget),
            );
            Http1Client::new(config, verb, budget, Some(h2))
        });
        Ok(Fetcher {
            full,
            url: config.url.clone(),
            body: config.request.body.clone(),
            name: config.name.clone(),
            out_dir: config.out_dir.as_ref().map(PathBuf::from),
            writer: OnceLock::new(),
            max_body: config.max_body,
            location_trusted: config.location_trusted,
            retry,
            pacer: config.rate.filter(|r| *r > 0.0).map(Pacer::catching_up),
            plain,
            h2c,
            timeout: Duration::from_millis(config.timeout_ms),
            next: config
                .follow_next
                .as_ref()
                .and_then(|follow| NextRule::new(follow, config.url.as_ref())),
            requests: AtomicU64::new(0),
            hosts: Arc::new(HostGates::new(config.per_host, config.adaptive)),
            adaptive: config.adaptive,
            throttles: OnceLock::new(),
        })
    }

    /// Fetches one job on a task of its own and hands what came of it to `done`.
    ///
    /// Each kind of client gets a task type of its own, sized for its own exchange: an
    /// HTTP/2 job's task carries no room for an HTTP/1.1 exchange nor for reqwest's,
    /// and needs no second allocation for its own.
    pub fn spawn(self: &Arc<Self>, job: Job, done: impl FnOnce(Fetched) + Send + 'static) {
        if let Some(plain) = &self.plain {
            plain.job_coming();
            tokio::spawn(self.run::<Http1Client>(job).map(done));
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
        let Job {
            batch,
            url,
            page,
            stored,
        } = job;
        let url = match (url, &self.url) {
            (Some(url), _) => url,
            (None, Some(template)) => template.render(&batch.values()),
            (None, None) => String::new(),
        };
        // Empty, and no allocation, for a run that sends no body.
        let body = match &self.body {
            Some(template) => Payload::new(template.render(&batch.values()).into_bytes()),
            None => Payload::default(),
        };
        // On a refresh, the request asks for the body only if it changed; a 304 keeps
        // the file stored before, under its name.
        let (body, kept) = match stored {
            Some(stored) => {
                let Stored {
                    file, validators, ..
                } = *stored;
                (body.on_condition(Some(validators)), Some(file))
            }
            None => (body, None),
        };
        let this = Arc::clone(self);
        async move {
            let started = Instant::now();
            let mut attempts = 0;
            let (status, fetched, charge, meta, validators): (_, _, _, Meta, _) = loop {
                attempts += 1;
                let failure = match this.attempt::<C>(&url, &body).await {
                    Ok(r) => {
                        let meta = (r.link, r.url);
                        break (Some(r.status), Ok(r.body), r.charge, meta, r.validators);
                    }
                    Err(failure) => failure,
                };
                let wait = retry::wait(
                    &this.retry,
                    &failure,
                    attempts,
                    started.elapsed(),
                    fastrand::f64(),
                );
                match wait {
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
                    Err(error) => {
                        let nothing = (None, None);
                        break (
                            failure.status,
                            Err(error),
                            None,
                            nothing,
                            Validators::default(),
                        );
                    }
                }
            };
            let (fetched, chain) = match page {
                None => (fetched, None),
                // Boxed, as the other rare paths are.
                Some(page) => Box::pin(this.follow(batch, page, &url, fetched, meta)).await,
            };
            let ended = Ended {
                status,
                fetched,
                validators,
                kept,
                attempts,
                chain,
            };
            match this.settle(batch, url, ended, started) {
                (report, Some(body)) => Fetched::Store {
                    report,
                    body,
                    charge,
                },
                (report, None) => Fetched::Done(report, charge),
            }
        }
    }

    /// A chain page's part of the report: the next page it names, read from a page
    /// that came. A page whose next page cannot be read fails, so that its chain is
    /// not taken for ended.
    async fn follow(
        self: &Arc<Self>,
        batch: Batch,
        page: u64,
        url: &str,
        fetched: Result<Bytes, String>,
        (link, answered): Meta,
    ) -> (Result<Bytes, String>, Option<PageReport>) {
        let report = |next| {
            Some(PageReport {
                page,
                next,
                end: None,
            })
        };
        let (Some(rule), Ok(body)) = (&self.next, &fetched) else {
            return (fetched, report(None));
        };
        let values = Values {
            page,
            ..batch.values()
        };
        let page_url = answered.unwrap_or_else(|| url.to_owned());
        let found = if rule.is_slow(body) {
            // A long body is searched on a blocking thread: the loop serves the
            // other requests meanwhile.
            let this = Arc::clone(self);
            let body = body.clone();
            tokio::task::spawn_blocking(move || match &this.next {
                Some(rule) => rule.next_page(&values, &page_url, &body, link.as_deref()),
                None => Ok(None),
            })
            .await
            .unwrap_or_else(|e| Err(format!("reading the next page: {e}")))
        } else {
            rule.next_page(&values, &page_url, body, link.as_deref())
        };
        match found {
            Ok(next) => (fetched, report(next)),
            Err(error) => (Err(error), report(None)),
        }
    }

    /// The job's report, and its body if it is to be stored.
    fn settle(
        &self,
        batch: Batch,
        url: String,
        ended: Ended,
        started: Instant,
    ) -> (JobReport, Option<Bytes>) {
        let Ended {
            status,
            fetched,
            validators,
            kept,
            attempts,
            chain,
        } = ended;
        let bytes = fetched.as_ref().map_or(0, |body| body.len() as u64);
        let (outcome, to_store, validators) = match (fetched, kept) {
            // Only a conditional request takes a 304 for an answer (see `attempt`).
            (Ok(_), Some(file)) if status == Some(304) => {
                (Outcome::Unchanged { file }, None, validators)
            }
            (Ok(body), _) if self.out_dir.is_some() => {
                let values = Values {
                    page: chain.as_ref().map_or(1, |c| c.page),
                    ..batch.values()
                };
                let file = self.name.render(&values);
                (Outcome::Saved { file }, Some(body), validators)
            }
            (Ok(body), _) => (Outcome::Fetched { body: body.into() }, None, validators),
            (Err(error), _) => (Outcome::Failed { error }, None, Validators::default()),
        };
        let report = JobReport {
            batch,
            url,
            status,
            bytes,
            elapsed_us: started.elapsed().as_micros() as u64,
            attempts,
            outcome,
            chain,
            validators,
        };
        (report, to_store)
    }

    /// Stores the body of a [`Fetched::Store`] on the writer thread (started on first
    /// use), then hands its settled report to `done`, on that thread.
    pub fn store(
        &self,
        mut report: JobReport,
        body: Bytes,
        charge: Option<Charge>,
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
            // A chain's next page comes a moment after its page is reported: the
            // connection it will take is kept for it.
            plain.retain_connections(more || self.next.is_some());
        }
    }

    /// One request of `url` with `body`: a 2xx response, whole, or a 304 to a
    /// conditional request. Plain `http://` URLs go through the lean client `C` where
    /// there is one, the rest through reqwest.
    ///
    /// Not an `async fn`: its arguments would be kept twice in the future's state.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    fn attempt<C: Lean>(
        &self,
        url: &str,
        body: &Payload,
    ) -> impl Future<Output = Result<Response, Failure>> {
        async move {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let fetched = match C::of(self) {
                Some(client) => {
                    let ask = Ask::Own(body);
                    let gates = &self.hosts;
                    let trusted = self.location_trusted;
                    let fetch = follow_redirects(client, gates, url, ask, self.max_body, trusted);
                    match tokio::time::timeout(self.timeout, fetch).await {
                        Ok(fetched) => fetched,
                        Err(_) => {
                            return Err(Failure::retryable(format!(
                                "no whole response within --timeout {:?}",
                                self.timeout
                            )));
                        }
                    }
                }
                // Boxed: in a run with a lean client this is the rare path, and its state
                // should not size every task.
                _ => {
                    let fetch =
                        self.full
                            .fetch(&self.hosts, url, url, 0, Ask::Own(body), self.max_body);
                    Box::pin(fetch).await
                }
            };
            let response = match fetched {
                // Moved whole into its own boxed future: a result kept in this one across
                // the wait would size every request in flight.
                handed @ Err(ClientError::NeedsFullClient(_)) => {
                    Box::pin(self.hand_off(url, handed, body)).await
                }
                fetched => fetched,
            }
            .map_err(|e| Failure::from_client(e, self.max_body))?;
            let status = response.status;
            let not_modified = status == 304 && body.validators().is_some();
            if !(200..300).contains(&status) && !not_modified {
                let failure = Failure::status(status, response.retry_after.as_deref(), &self.retry);
                if matches!(status, 429 | 503) {
                    self.throttled(url, failure.retry_after);
                }
                return Err(failure);
            }
            Ok(response)
        }
    }

    /// Fetches with reqwest what a lean client handed over (`handed`, a
    /// `NeedsFullClient`): a compressed answer, or a redirect to a URL it cannot take.
    async fn hand_off(
        &self,
        url: &str,
        handed: Result<Response, ClientError>,
        body: &Payload,
    ) -> Result<Response, ClientError> {
        let next = match handed {
            Err(ClientError::NeedsFullClient(next)) => next,
            other => return other,
        };
        let ask = if next.as_get {
            Ask::Get
        } else {
            Ask::Own(body)
        };
        let fetch = self
            .full
            .fetch(&self.hosts, url, &next.url, next.hops, ask, self.max_body);
        fetch.await
    }

    /// Under `--adaptive on`, tells the coordinator that the host of `url` asked for
    /// fewer requests, and holds this worker's requests to it for the `Retry-After` it
    /// sent (up to `--retry-after-max`): the header asks for no new request before
    /// then, not only for no retry of this one.
    fn throttled(&self, url: &str, retry_after: Option<Duration>) {
        let Some(reports) = self.throttles.get().and_then(|weak| weak.upgrade()) else {
            return;
        };
        let Ok(split) = shared::http_url::split_http_url(url) else {
            return;
        };
        let origin = crate::hosts::origin(split.tls, &split.authority);
        if let Some(wait) = retry_after.filter(|w| !w.is_zero()) {
            let wait = wait.min(Duration::from_millis(self.retry.retry_after_max_ms));
            self.hosts.hold(&origin, tokio::time::Instant::now() + wait);
        }
        let _ = reports.send(Outgoing::Message(FromWorker::Throttled { origin }));
    }

    /// Sends the hosts that answer 429 or 503 to the coordinator on `reports`.
    pub fn report_throttles(&self, reports: &mpsc::UnboundedSender<Outgoing>) {
        if self.adaptive {
            let _ = self.throttles.set(reports.downgrade());
        }
    }

    /// The per-host gates, for the coordinator's adaptive rates.
    pub fn hosts(&self) -> &Arc<HostGates> {
        &self.hosts
    }
}

/// How a job's attempts ended: the last status, the body (or the error) and its
/// validators, the file a 304 keeps, how many attempts it took, and under
/// `--follow-next` the page's place in its chain.
struct Ended {
    status: Option<u16>,
    fetched: Result<Bytes, String>,
    validators: Validators,
    kept: Option<String>,
    attempts: u32,
    /// Under `--follow-next`, the page and the next page it names.
    chain: Option<PageReport>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten thousand requests in flight are ten thousand of these tasks, so their size is
    /// the memory of a run: it grew from 808 to 1,240 bytes once without anyone seeing
    /// (CHANGELOG, session 9). Release builds make it a little smaller than this build.
    #[test]
    fn a_request_in_flight_stays_small() {
        let mut config = crate::client::h2c::tests::config(100);
        config.http2 = false;
        config.url = Some(Template::parse("http://127.0.0.1:1/?start={start}").expect("url"));
        let fetcher = Arc::new(Fetcher::new(&config).expect("fetcher"));
        let job = || Job {
            batch: Batch {
                index: 0,
                start: 0,
                end: 10,
            },
            url: None,
            page: None,
            stored: None,
        };
        let http1 = std::mem::size_of_val(&fetcher.run::<Http1Client>(job()));
        let http2 = std::mem::size_of_val(&fetcher.run::<H2cClient>(job()));
        assert!(http1 <= 960, "an HTTP/1.1 request's task is {http1} bytes");
        assert!(http2 <= 832, "an HTTP/2 request's task is {http2} bytes");
    }
}
