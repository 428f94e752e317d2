//! `coordinator load`: an HTTP load test with one single-threaded generator per worker
//! process. Workers send a summary of every second and a closing report with HDR
//! histograms over the same bincode pipes as a scrape; the coordinator merges them into
//! a live view, an optional per-second timeline and the final report.

mod report;
mod spec;
mod thresholds;
mod timeline;

use std::fs::File;
use std::io::{self, IsTerminal};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shared::loadtest::{LoadReport, LoadStats};
use shared::protocol::{FromWorker, PROTOCOL_VERSION, Task, ToWorker};

use self::report::{Results, WorkerResult};
use self::spec::LoadPlan;
use self::timeline::{Seconds, Timeline};
use crate::cli::LoadArgs;
use crate::error::UsageError;
use crate::exit::{Exit, print_stdout};
use crate::messages;
use crate::metrics::{Exporter, LoadMetrics};
use crate::pool::{Event, Next, WorkerId, WorkerPool};
use crate::report_file;
use crate::signals::StopCause;

/// Time workers get to finish their in-flight requests after a stop.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Time between plain progress lines when stderr is not a terminal.
const PLAIN_EVERY: u32 = 5;

/// Runs `coordinator load`.
pub fn run(args: &LoadArgs) -> anyhow::Result<Exit> {
    let plan = LoadPlan::from_args(args)?;
    if let Some(path) = &args.report {
        report_file::check(path)?;
    }
    let exporter = Exporter::start(args.metrics)?;
    // A report is drawn from the timeline: without --timeline, one is written beside the
    // report and removed once it is drawn.
    let spill = match (&plan.timeline, &args.report) {
        (None, Some(report)) => Some(Spill::beside(report)?),
        _ => None,
    };
    let timeline_path = plan
        .timeline
        .as_deref()
        .or(spill.as_ref().map(|s| s.0.as_path()));
    let file = match timeline_path {
        Some(path) => Some(File::create(path).map_err(|e| {
            UsageError::new(
                "--timeline",
                format!("cannot create {}: {e}", path.display()),
            )
        })?),
        None => None,
    };
    let mut timeline = Timeline::new(file, plan.rate, &plan.target);
    let mut test = LoadTest::start(&plan, &exporter)?;
    let mut live = Live::new(&plan);
    let outcome = test.collect(&mut live, &mut timeline);
    live.finish();
    let grace = if test.stopping.is_some() {
        Duration::ZERO
    } else {
        STOP_GRACE
    };
    test.pool.stop_all(grace);
    outcome?;
    for (second, s) in test.seconds.rest() {
        test.metrics.second(&s.stats);
        timeline
            .record(second, &s)
            .context("writing the timeline")?;
    }
    test.metrics.publish(true);
    timeline.finish().context("writing the timeline")?;
    if let (Some(path), Some(lines)) = (&args.report, timeline_path) {
        let title = format!("Load test of {}", plan.target);
        let lines = io::BufReader::new(File::open(lines).context("reading the timeline")?);
        let mut run =
            ::report::Run::from_timeline(lines, &title).context("reading the timeline")?;
        run.kind = ::report::Kind::Load { rate: plan.rate };
        report_file::write(path, &run).with_context(|| format!("writing {}", path.display()))?;
    }
    let stopping = test.stopping;
    conclude(&plan, test.results(), stopping)
}

/// Prints the report, checks the thresholds: the exit code.
fn conclude(
    plan: &LoadPlan,
    results: Results,
    stopping: Option<(StopCause, Instant)>,
) -> anyhow::Result<Exit> {
    let measured = results.measured(plan.rate.is_some());
    let breached: Vec<String> = plan
        .thresholds
        .iter()
        .filter(|t| t.breached(&measured))
        .map(|t| format!("{t} (measured {})", t.show(t.actual(&measured))))
        .collect();
    let report = if plan.json {
        format!("{}\n", results.to_json(plan, &breached))
    } else {
        results.render(plan)
    };
    print_stdout(&report).context("printing the report")?;
    for b in &breached {
        messages::line(format_args!("threshold failed: {b}"));
    }
    Ok(match stopping {
        Some((cause, _)) => cause.exit(),
        None if !breached.is_empty() => Exit::SomeFailed,
        None => Exit::Ok,
    })
}

/// A load test under way: its workers, and what they reported.
struct LoadTest {
    pool: WorkerPool,
    pids: Vec<u32>,
    reports: Vec<Option<LoadReport>>,
    done: Vec<bool>,
    seconds: Seconds,
    /// The live `--metrics` numbers (nothing without it).
    metrics: LoadMetrics,
    /// Set once a stop was asked for: why, and until when workers may finish.
    stopping: Option<(StopCause, Instant)>,
}

impl LoadTest {
    /// Starts one generator per worker of `plan`.
    fn start(plan: &LoadPlan, exporter: &Exporter) -> anyhow::Result<LoadTest> {
        let workers = plan.specs.len();
        let mut pool = WorkerPool::new(workers).context("setting up the workers")?;
        let mut pids = Vec::with_capacity(workers);
        for (slot, spec) in plan.specs.iter().enumerate() {
            let hello = ToWorker::Hello {
                version: PROTOCOL_VERSION,
                worker: slot as u32,
                // Not pinned, unlike a scrape's workers: the server under test often
                // shares these cores, and a worker pinned to the core it is using waits
                // there instead of moving to a free one (measured against nginx on 2
                // cores: 48K requests/s unpinned against 30K pinned, and less CPU per
                // request).
                cpu: None,
                task: Task::Load(Box::new(spec.clone())),
            };
            let pid = pool
                .spawn(slot, &hello)
                .with_context(|| format!("starting worker {slot}"))?;
            pids.push(pid);
        }
        Ok(LoadTest {
            pool,
            pids,
            reports: vec![None; workers],
            done: vec![false; workers],
            seconds: Seconds::new(workers),
            metrics: exporter.load(
                workers,
                plan.specs.iter().map(|s| u64::from(s.connections)).sum(),
            ),
            stopping: None,
        })
    }

    /// Takes the workers' reports until every one said `Bye`, or a stop ran out of
    /// time, or a second signal came; every second goes to `live` and `timeline` once
    /// all workers have reported it.
    fn collect(&mut self, live: &mut Live, timeline: &mut Timeline) -> anyhow::Result<()> {
        while !self.done.iter().all(|d| *d) {
            let until = self.stopping.map(|(_, until)| until);
            let event = match self.pool.next(until) {
                Next::Event(event) => event,
                // Only a stop's grace has a time limit.
                Next::Timeout => break,
            };
            match event {
                Event::Signal(cause) => {
                    if self.stopping.is_some() {
                        break;
                    }
                    self.stopping = Some((cause, Instant::now() + STOP_GRACE));
                    for slot in 0..self.done.len() {
                        let _ = self.pool.send(slot, &ToWorker::Stop);
                    }
                }
                event => self.handle(event)?,
            }
            for (second, s) in self.seconds.ready() {
                live.second(second, &s.stats);
                self.metrics.second(&s.stats);
                timeline
                    .record(second, &s)
                    .context("writing the timeline")?;
            }
        }
        Ok(())
    }

    fn handle(&mut self, event: Event) -> anyhow::Result<()> {
        match event {
            Event::Message(WorkerId { slot, .. }, FromWorker::LoadTick { second, stats }) => {
                self.seconds.add(slot, second, &stats);
            }
            Event::Message(WorkerId { slot, .. }, FromWorker::LoadDone(report)) => {
                self.seconds.finished(slot);
                self.reports[slot] = Some(*report);
            }
            Event::Message(WorkerId { slot, .. }, FromWorker::Bye(stats)) => {
                self.metrics.worker_left(slot, &stats);
                self.done[slot] = true;
            }
            Event::Message(WorkerId { slot, .. }, FromWorker::LoopLag { max_us }) => {
                self.metrics.worker_lag(slot, max_us);
            }
            Event::Message(_, FromWorker::Ready { .. }) | Event::Signal(_) | Event::Input => {}
            Event::Message(WorkerId { slot, .. }, FromWorker::Fatal(error)) => {
                bail!("worker {slot}: {error}")
            }
            Event::Message(WorkerId { slot, .. }, other) => {
                bail!("worker {slot} sent {other:?} in a load test")
            }
            Event::Closed(WorkerId { slot, .. }, error) => {
                if !self.done[slot] {
                    let why = error.map_or_else(|| "its pipe closed".to_owned(), |e| e.to_string());
                    bail!(
                        "worker {slot} (pid {}) stopped during the load test: {why}",
                        self.pids[slot]
                    );
                }
            }
        }
        Ok(())
    }

    /// What the workers reported at the end, with this process's own usage.
    fn results(self) -> Results {
        let (own_cpu, own_rss) = shared::usage::own_usage();
        Results::new(
            self.reports
                .into_iter()
                .zip(self.pids)
                .filter_map(|(r, pid)| r.map(|report| WorkerResult { pid, report }))
                .collect(),
            own_cpu,
            own_rss,
        )
    }
}

/// The live view on stderr: a bar on a terminal, a plain line every few seconds
/// otherwise, nothing with --quiet or --json.
enum Live {
    Bar(indicatif::ProgressBar),
    Plain,
    Off,
}

impl Live {
    fn new(plan: &LoadPlan) -> Live {
        if plan.quiet || plan.json {
            return Live::Off;
        }
        if !io::stderr().is_terminal() {
            return Live::Plain;
        }
        let len = plan.duration.map(|d| d.as_secs()).or(plan.requests);
        let bar = indicatif::ProgressBar::with_draw_target(len, crate::terminal::stderr_target(4));
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        messages::show_bar(&bar);
        Live::Bar(bar)
    }

    fn second(&mut self, second: u32, s: &LoadStats) {
        let line = format!(
            "{} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
            s.responses,
            s.latency.quantile(0.5) as f64 / 1e3,
            s.latency.quantile(0.99) as f64 / 1e3,
            s.errors.total()
        );
        match self {
            Live::Bar(bar) => {
                if bar.length().is_some_and(|l| l > 1000) {
                    bar.inc(s.finished());
                } else {
                    bar.set_position(u64::from(second) + 1);
                }
                bar.set_message(line);
            }
            Live::Plain if (second + 1).is_multiple_of(PLAIN_EVERY) => {
                messages::line(format_args!("[{:>4}s] {line}", second + 1))
            }
            Live::Plain | Live::Off => {}
        }
    }

    fn finish(&self) {
        if let Live::Bar(bar) = self {
            messages::hide_bar();
            bar.finish_and_clear();
        }
    }
}

/// A timeline file of the test's own, beside its report: removed when dropped.
struct Spill(std::path::PathBuf);

impl Spill {
    fn beside(report: &std::path::Path) -> Result<Spill, UsageError> {
        let name = report.file_name().unwrap_or_default().to_string_lossy();
        let path = report.with_file_name(format!(".{name}.timeline.{}.part", std::process::id()));
        outdir::create_fresh(&path).map_err(|e| {
            UsageError::new(
                "--report",
                format!("cannot write beside {}: {e}", report.display()),
            )
        })?;
        Ok(Spill(path))
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
