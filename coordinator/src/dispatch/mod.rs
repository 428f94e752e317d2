//! The run: start the workers, hand out jobs in chunks as they report, record every
//! report in the manifest, then stop the workers and summarise.
//!
//! Hand-out is dynamic: each worker holds at most a window of jobs, topped up a chunk at
//! a time as its reports come in, so a slow worker never holds the tail of the run. The
//! coordinator remembers what each worker holds: a worker that dies is replaced and its
//! jobs are handed out again, so every job ends up in the manifest exactly once.

mod conclude;
mod handout;
mod route;
mod stall;
mod throttle;
mod tls_stop;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shared::config::WorkerConfig;
use shared::plan::Shard;
use shared::protocol::{FromWorker, Job, PROTOCOL_VERSION, Task, ToWorker};
use shared::template::Template;

use self::route::{Router, origin_of};
use self::stall::{Stall, stall_verdict};
use self::throttle::Throttle;
use self::tls_stop::TlsWatch;
use crate::chain::Chains;
use crate::cli::RobotsMode;
use crate::exit::Exit;
use crate::manifest::{self, Manifest};
use crate::messages;
use crate::metrics::{Exporter, ScrapeMetrics};
use crate::plan::{Output, RunLimits};
use crate::pool::{Event, Next, WorkerId, WorkerPool};
use crate::prepare::{Settings, Target};
use crate::progress::Progress;
use crate::refresh::Appended;
use crate::robots::Gate;
use crate::signals::StopCause;
use crate::sink::Sink;
use crate::source::{Filter, JobSource};
use crate::summary::RunStats;
use crate::target::BuiltinServer;

/// How often the loop wakes when nothing arrives: the stall watchdog's period.
const TICK: Duration = Duration::from_secs(1);
/// Bytes of jobs in one `Jobs` frame at most: half the frame limit, which leaves room
/// for the message's own few bytes, while a chunk of short URLs is still cut by count.
const MAX_CHUNK_BYTES: usize = shared::frame::MAX_FRAME_LEN / 2;
/// Time a worker gets to leave after its stdin closed at the end of a run.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs a checked scrape to the end, or until a signal stops it.
pub fn run(settings: Settings, exporter: &Exporter) -> anyhow::Result<Exit> {
    let Settings {
        workers,
        cpus,
        target,
        output,
        worker: mut config,
        shard,
        filter,
        limits,
        quiet,
        json,
        chains,
        robots,
    } = settings;
    let pool = WorkerPool::new(workers as usize).context("setting up the workers")?;
    let skipped = crate::metrics::skipped_batches(&target, shard, &filter);
    let refresh = match &filter {
        Filter::Refresh(stored) => Some(stored.appended()),
        _ => None,
    };
    // Declared first so that it is dropped last, after every worker has stopped.
    let (source, builtin) = open_source(target, shard, filter, &mut config, &pool)?;
    let sink = match &output {
        Output::Dir(dir) => Sink::Manifest(Manifest::open(dir).context("opening the manifest")?),
        Output::Stdout => Sink::stdout(),
    };
    // A resume counts the whole plan: what earlier invocations did, and what this one
    // does.
    let whole = source.whole();
    let before = whole
        .zip(source.total())
        .map_or(0, |(whole, left)| whole.saturating_sub(left));
    let open_chains = chains.as_ref().map_or(0, |c| c.open.len());
    if source.total() == Some(0) && before > 0 && open_chains == 0 {
        // Nothing left: no worker is started.
        if !quiet {
            let what = match chains {
                Some(_) => {
                    "chains of the plan are in the manifest already, each at its end or failed"
                }
                None => "batches of the plan are in the manifest already",
            };
            messages::line(format_args!("nothing to fetch: all {before} {what}"));
        }
        return Ok(Exit::Ok);
    }
    // A chain's pages are not known up front: its progress counts pages, with no total.
    let (shown_whole, shown_before, planned) = match chains {
        Some(_) => (None, 0, None),
        None => (whole, before, source.total()),
    };
    let progress = Progress::new(shown_whole, shown_before, quiet || json);
    let mut dispatch = Dispatch::new(pool, cpus, config, source, sink, progress, limits);
    dispatch.stats.set_plan(whole, shown_before);
    if let Some(plan) = chains {
        let (chains, resumed) = Chains::new(plan);
        dispatch.chains = Some(chains);
        dispatch.retry.extend(resumed);
    }
    if refresh.is_some() {
        dispatch.refresh = refresh;
        dispatch.stats.set_refresh();
    }
    dispatch.metrics = exporter.scrape(workers as usize, dispatch.config.concurrency, planned);
    dispatch.metrics.set_skipped(skipped);
    if robots == RobotsMode::Obey {
        let wake = dispatch.pool.sender();
        // The loop sleeps until something happens: an answer is something.
        let gate = Gate::start(&dispatch.config, move || {
            let _ = wake.try_send(Event::Input);
        })?;
        dispatch.robots = Some(gate);
    }
    let result = dispatch.start().and_then(|()| dispatch.run());
    if let Some(gate) = &dispatch.robots {
        dispatch.stats.set_robots(gate.tally());
    }
    dispatch.publish_metrics(true);
    dispatch.progress.finish();
    // Whatever happened, no worker outlives the run and no temp file stays behind.
    dispatch.stop_workers();
    drop(builtin);
    // A worker that exits cleanly has finished or removed every temp file it made;
    // searching a hundred thousand names for none would delay every run's end.
    let cleaned = match &output {
        Output::Dir(dir) if dispatch.untidy => {
            manifest::remove_temp_files(dir).context("removing temp files")
        }
        _ => Ok(()),
    };
    // A refresh appended a new line for each batch it reached: the old ones go.
    let tidied = match (&output, &dispatch.refresh) {
        (Output::Dir(dir), Some(appended)) => appended
            .tidy(dir)
            .context("tidying the manifest after the refresh"),
        _ => Ok(()),
    };
    let stopped_by = result?;
    cleaned?;
    tidied?;
    if let Some(chains) = &dispatch.chains {
        dispatch.stats.set_chains(chains.tally, chains.unfinished());
    }
    conclude::conclude(&dispatch.stats, stopped_by, &output, quiet, json)
}

/// The jobs of the run, and the built-in server when the target is the built-in API
/// (whose URL template `config` then gets).
fn open_source(
    target: Target,
    shard: Shard,
    filter: Filter,
    config: &mut WorkerConfig,
    pool: &WorkerPool,
) -> anyhow::Result<(JobSource, Option<BuiltinServer>)> {
    Ok(match target {
        Target::Template(plan) => (JobSource::plan(plan, shard, filter), None),
        Target::Builtin { plan, delay_ms } => {
            let server = BuiltinServer::start(tickers::Options {
                delay_ms,
                ..tickers::Options::default()
            })
            .context("starting the built-in target")?;
            config.url = Some(Template::parse(&server.url_template())?);
            (JobSource::plan(plan, shard, filter), Some(server))
        }
        Target::UrlList(list) => {
            let wake = pool.sender();
            // The loop sleeps until something happens: lines read are something.
            let ready = move || {
                let _ = wake.try_send(Event::Input);
            };
            let source =
                JobSource::urls(list, shard, filter, ready).context("reading the URL list")?;
            (source, None)
        }
    })
}

/// One worker slot.
struct Slot {
    /// Jobs handed out and not yet reported, by batch index.
    held: HashMap<u64, Job>,
    /// `Finish` or `Stop` was sent.
    finishing: bool,
    /// `Bye` came, or the worker is gone for good.
    done: bool,
    /// When it last reported (or was started).
    last_report: Instant,
    /// Whether its current silence was already warned about.
    warned: bool,
    /// `Drained` was sent: nothing new will come to it.
    drained: bool,
}

struct Dispatch {
    pool: WorkerPool,
    slots: Vec<Slot>,
    cpus: Vec<usize>,
    config: WorkerConfig,
    source: JobSource,
    /// Jobs of dead workers, and the next pages of chains, handed out before new ones.
    retry: VecDeque<Job>,
    /// Under `--follow-next`, the chains: which are open, and what they fetched.
    chains: Option<Chains>,
    sink: Sink,
    stats: RunStats,
    /// The live `--metrics` numbers (nothing without it).
    metrics: ScrapeMetrics,
    progress: Progress,
    /// Jobs per `Jobs` message.
    chunk: usize,
    /// Jobs one worker holds at most.
    window: usize,
    restarts: u32,
    max_restarts: u32,
    /// Whether a worker ended other than by exiting cleanly, and so may have left a
    /// temp file: only then is the output directory searched for them at the end.
    untidy: bool,
    grace: Duration,
    deadline: Option<Instant>,
    stall_timeout: Duration,
    last_stall_check: Instant,
    /// Set once a stop was asked for: why, and until when workers may finish.
    stopping: Option<(StopCause, Instant)>,
    /// Whether the run's first batches all fail with one TLS error.
    tls_watch: TlsWatch,
    /// With per-host limits: which worker each host goes to, and the jobs waiting
    /// for each worker.
    router: Option<Router>,
    routed: Vec<VecDeque<Job>>,
    /// The adaptive rates of throttled hosts (`--adaptive on`).
    throttle: Option<Throttle>,
    /// With `--robots obey`, where fresh jobs wait for their host's robots.txt.
    robots: Option<Gate>,
    /// The hosts whose `Crawl-delay` the workers were told.
    delayed: std::collections::HashSet<String>,
    /// On a `--refresh`, whose lines say what became of each batch: the batches that
    /// have a new line.
    refresh: Option<Appended>,
}

impl Dispatch {
    fn new(
        pool: WorkerPool,
        cpus: Vec<usize>,
        config: WorkerConfig,
        source: JobSource,
        sink: Sink,
        progress: Progress,
        limits: RunLimits,
    ) -> Dispatch {
        let workers = pool.slots();
        let concurrency = config.concurrency as usize;
        // A worker holds its requests in flight, as many files waiting for its writer,
        // and a queue as deep again, so that it never waits for the next chunk.
        let window = 3 * concurrency;
        // Small enough that every worker gets several chunks of a short run, large
        // enough that a long run costs few messages.
        let per_worker = source
            .total()
            .map_or(u64::MAX, |t| t / (workers as u64 * 8));
        let chunk = (per_worker.min((concurrency / 2).max(1) as u64) as usize).max(1);
        Dispatch {
            pool,
            slots: (0..workers)
                .map(|_| Slot {
                    held: HashMap::new(),
                    finishing: false,
                    done: false,
                    last_report: Instant::now(),
                    warned: false,
                    drained: false,
                })
                .collect(),
            cpus,
            source,
            retry: VecDeque::new(),
            chains: None,
            sink,
            stats: RunStats::new(workers),
            metrics: ScrapeMetrics::default(),
            progress,
            chunk,
            window,
            restarts: 0,
            max_restarts: limits.max_restarts,
            untidy: false,
            grace: limits.grace,
            deadline: limits.deadline.map(|d| Instant::now() + d),
            stall_timeout: limits.stall_timeout,
            last_stall_check: Instant::now(),
            stopping: None,
            tls_watch: TlsWatch::default(),
            router: (!config.per_host.is_none())
                .then(|| Router::new(workers, config.url.as_ref().map(|t| t.as_str()))),
            routed: (0..workers).map(|_| VecDeque::new()).collect(),
            throttle: config.adaptive.then(|| Throttle::new(Instant::now())),
            robots: None,
            delayed: std::collections::HashSet::new(),
            refresh: None,
            config,
        }
    }

    fn start(&mut self) -> anyhow::Result<()> {
        for slot in 0..self.slots.len() {
            self.spawn(slot)?;
        }
        self.top_up_all()
    }

    fn spawn(&mut self, slot: usize) -> anyhow::Result<()> {
        let hello = ToWorker::Hello {
            version: PROTOCOL_VERSION,
            worker: slot as u32,
            cpu: self.cpus.get(slot).copied(),
            task: Task::Scrape(Box::new(self.config.clone())),
        };
        let pid = self
            .pool
            .spawn(slot, &hello)
            .with_context(|| format!("starting worker {slot}"))?;
        self.stats.set_pid(slot, pid);
        let s = &mut self.slots[slot];
        s.finishing = false;
        s.done = false;
        s.last_report = Instant::now();
        s.warned = false;
        s.drained = false;
        Ok(())
    }

    /// Runs until every worker said `Bye`; returns what stopped it early, if anything.
    /// It sleeps until an event comes (a report, a worker's end, a signal, input) or
    /// one of its clocks (the watchdog's tick, the deadline, the grace) runs out.
    fn run(&mut self) -> anyhow::Result<Option<StopCause>> {
        while !self.slots.iter().all(|s| s.done) {
            self.publish_metrics(false);
            if self.stopping.is_none() && self.deadline.is_some_and(|d| Instant::now() >= d) {
                self.begin_stop(StopCause::Deadline);
            }
            self.check_stalls()?;
            let raised = match &mut self.throttle {
                Some(throttle) => throttle.tick(Instant::now()),
                None => Vec::new(),
            };
            for (origin, rate) in raised {
                self.send_rate(&origin, rate);
            }
            if self
                .stopping
                .is_some_and(|(_, until)| Instant::now() >= until)
            {
                break;
            }
            if self.pool.is_idle() {
                // Nothing queued: a good moment to make the manifest durable.
                self.sink.flush().context("writing the manifest")?;
            }
            match self.pool.next(Some(self.wake_at())) {
                Next::Event(Event::Signal(cause)) => {
                    if self.stopping.is_some() {
                        // A second signal: stop at once.
                        break;
                    }
                    self.begin_stop(cause);
                }
                // More of a URL list, a robots.txt answer, or a tick: jobs may be
                // waiting for room.
                Next::Event(Event::Input) | Next::Timeout => self.top_up_all()?,
                Next::Event(event) => self.handle(event)?,
            }
        }
        if self
            .stopping
            .is_none_or(|(cause, _)| cause != StopCause::OutputClosed)
        {
            self.sink.flush().context("writing the manifest")?;
        }
        Ok(self.stopping.map(|(signal, _)| signal))
    }

    /// When the loop must wake even if nothing happens.
    fn wake_at(&self) -> Instant {
        let mut at = self.last_stall_check + TICK;
        if let Some(deadline) = self.deadline {
            at = at.min(deadline);
        }
        if let Some((_, until)) = self.stopping {
            at = at.min(until);
        }
        if let Some(raise) = self.throttle.as_ref().and_then(Throttle::wake_at) {
            at = at.min(raise);
        }
        at
    }

    /// Makes each `Crawl-delay` robots.txt gave a host's rate, for every worker,
    /// unless the run sets `--per-host-rate`: one request per delay, all workers
    /// together. Applied once per host as its robots.txt comes in, before any of its
    /// batches is handed out (they wait for it).
    pub(super) fn apply_crawl_delays(&mut self) {
        if self.config.per_host.rate.is_some() {
            return;
        }
        let Some(gate) = &self.robots else {
            return;
        };
        let new: Vec<(String, f64)> = gate
            .crawl_delays()
            .iter()
            .filter(|(origin, _)| !self.delayed.contains(*origin))
            .map(|(origin, delay)| (origin.clone(), 1.0 / delay.as_secs_f64().max(1e-3)))
            .collect();
        for (origin, rate) in new {
            self.delayed.insert(origin.clone());
            // The workers name hosts with their port spelled out.
            self.send_rate(&origin_of(&format!("{origin}/")), Some(rate));
        }
    }

    /// Tells every running worker its share of `origin`'s adaptive rate: all of it
    /// when hosts are routed (one worker sends to it), else an equal part.
    fn send_rate(&mut self, origin: &str, rate: Option<f64>) {
        let running: Vec<usize> = (0..self.slots.len())
            .filter(|&s| self.pool.is_running(s) && !self.slots[s].done)
            .collect();
        let share = match self.router {
            Some(_) => rate,
            None => rate.map(|r| r / running.len().max(1) as f64),
        };
        for slot in running {
            let message = ToWorker::HostRate {
                origin: origin.to_owned(),
                rate: share,
            };
            if let Err(e) = self.pool.send(slot, &message) {
                messages::warn(format_args!("sending a host's rate to worker {slot}: {e}"));
            }
        }
    }

    fn handle(&mut self, event: Event) -> anyhow::Result<()> {
        match event {
            Event::Message(WorkerId { slot, .. }, FromWorker::Ready { version, pid }) => {
                if version != PROTOCOL_VERSION {
                    bail!(
                        "worker {slot} (pid {pid}) speaks protocol {version}, not {PROTOCOL_VERSION}"
                    );
                }
            }
            Event::Message(WorkerId { slot, .. }, FromWorker::Done(mut report)) => {
                let s = &mut self.slots[slot];
                s.last_report = Instant::now();
                s.warned = false;
                self.record(slot, &mut report)?;
                if let Some(throttle) = &mut self.throttle
                    && !matches!(report.outcome, shared::protocol::Outcome::Failed { .. })
                {
                    throttle.served(&origin_of(&report.url), Instant::now());
                }
                if self.tls_watch.stop_after(&report) && self.stopping.is_none() {
                    self.begin_stop(StopCause::TlsFailing);
                }
                self.top_up(slot)?;
                if self.chains.is_some() {
                    // A chain's next page goes to whichever worker has room, and the
                    // end of the last chain lets every idle worker finish.
                    self.top_up_all()?;
                }
            }
            Event::Message(WorkerId { slot, .. }, FromWorker::Bye(stats)) => {
                self.metrics.worker_left(slot, &stats);
                self.stats.add_worker_stats(slot, stats);
                let s = &mut self.slots[slot];
                s.done = true;
                // Jobs a stopped worker never started are handed out by a later --resume.
                s.held.clear();
            }
            Event::Message(WorkerId { slot, .. }, FromWorker::LoopLag { max_us }) => {
                self.metrics.worker_lag(slot, max_us);
            }
            Event::Message(_, FromWorker::Throttled { origin }) => {
                let cut = self
                    .throttle
                    .as_mut()
                    .and_then(|t| t.throttled(&origin, Instant::now()));
                if let Some(rate) = cut {
                    self.send_rate(&origin, Some(rate));
                }
            }
            Event::Message(WorkerId { slot, .. }, FromWorker::Fatal(error)) => {
                bail!("worker {slot}: {error}")
            }
            Event::Message(
                WorkerId { slot, .. },
                FromWorker::LoadTick { .. } | FromWorker::LoadDone(_),
            ) => {
                bail!("worker {slot} sent load-test reports in a scrape")
            }
            Event::Closed(WorkerId { slot, .. }, error) => {
                if !self.slots[slot].done {
                    let why = error.map_or_else(|| "its pipe closed".to_owned(), |e| e.to_string());
                    self.replace_worker(slot, &why)?;
                }
            }
            Event::Signal(_) | Event::Input => {}
        }
        Ok(())
    }

    /// A worker died (killed, crashed, or sent a frame that does not decode): reap it,
    /// start another in its slot and hand its jobs out again.
    fn replace_worker(&mut self, slot: usize, why: &str) -> anyhow::Result<()> {
        self.untidy = true;
        let status = self.pool.reap(slot);
        let s = &mut self.slots[slot];
        let mut orphaned: Vec<Job> = s.held.drain().map(|(_, job)| job).collect();
        orphaned.sort_by_key(|j| j.batch.index);
        let count = orphaned.len();
        self.retry.extend(orphaned);
        if self.stopping.is_some() {
            self.slots[slot].done = true;
            return Ok(());
        }
        self.restarts += 1;
        if self.restarts > self.max_restarts {
            bail!(
                "worker {slot} stopped unexpectedly ({why}; {status}) and {} restarts were used up (--max-restarts)",
                self.max_restarts
            );
        }
        messages::warn(format_args!(
            "worker {slot} stopped unexpectedly ({why}; {status}); restarting it and handing out its {count} batches again"
        ));
        self.spawn(slot)?;
        self.top_up_all()
    }

    /// The watchdog: a worker that holds batches and has reported nothing for half the
    /// stall timeout is named on stderr; past the whole timeout it is replaced and its
    /// batches are handed out again.
    fn check_stalls(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        if now.duration_since(self.last_stall_check) < Duration::from_secs(1) {
            return Ok(());
        }
        self.last_stall_check = now;
        for slot in 0..self.slots.len() {
            let running = self.pool.is_running(slot);
            let pid = self.pool.pid(slot).unwrap_or(0);
            let s = &mut self.slots[slot];
            if s.held.is_empty() || s.done || !running {
                continue;
            }
            let quiet = now.duration_since(s.last_report);
            let oldest = s.held.keys().min().copied().unwrap_or_default();
            let what = format!(
                "holds {} batches (oldest: batch {oldest}) and has reported nothing for {:.0}s",
                s.held.len(),
                quiet.as_secs_f64()
            );
            match stall_verdict(quiet, self.stall_timeout, s.warned) {
                Stall::Replace => {
                    self.replace_worker(slot, &format!("stalled: it {what}, over --stall-timeout"))?
                }
                Stall::Warn => {
                    s.warned = true;
                    messages::warn(format_args!("worker {slot} (pid {pid}) {what}"));
                }
                Stall::Fine => {}
            }
        }
        Ok(())
    }

    fn begin_stop(&mut self, signal: StopCause) {
        self.stopping = Some((signal, Instant::now() + self.grace));
        let in_flight: usize = self.slots.iter().map(|s| s.held.len()).sum();
        messages::line(format_args!(
            "{}: handing out no more batches; waiting up to {:.0}s for those in flight (at most {in_flight}); Ctrl-C again stops at once",
            signal.describe(),
            self.grace.as_secs_f64()
        ));
        for (slot, s) in self.slots.iter_mut().enumerate() {
            if !s.done && self.pool.is_running(slot) {
                s.finishing = true;
                let _ = self.pool.send(slot, &ToWorker::Stop);
            }
        }
    }

    /// Stops every worker that is still running and reaps it: all at once, with the
    /// end-of-run grace, or none once a stop ran out of time.
    fn stop_workers(&mut self) {
        let grace = if self.stopping.is_some() {
            Duration::ZERO
        } else {
            STOP_GRACE
        };
        for (slot, stopped) in self.pool.stop_all(grace) {
            self.untidy |= !stopped.as_ref().is_ok_and(|status| status.success());
            match stopped {
                Ok(status) if status.success() || !self.slots[slot].done => {}
                Ok(status) => messages::warn(format_args!("worker {slot} {status}")),
                Err(e) => messages::warn(format_args!("stopping worker {slot}: {e}")),
            }
        }
    }
}
