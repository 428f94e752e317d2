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
use crossbeam_channel::{RecvTimeoutError, bounded};
use shared::loadtest::{LoadReport, LoadStats};
use shared::protocol::{FromWorker, PROTOCOL_VERSION, Task, ToWorker};

use self::report::{Results, WorkerResult};
use self::spec::LoadPlan;
use self::timeline::{Seconds, Timeline};
use crate::cli::LoadArgs;
use crate::error::UsageError;
use crate::exit::{Exit, print_stdout};
use crate::pool::{Event, Source, WorkerProc};
use crate::report_file;
use crate::signals::{Signals, StopCause};

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
    let file = match &plan.timeline {
        Some(path) => Some(File::create(path).map_err(|e| {
            UsageError::new(
                "--timeline",
                format!("cannot create {}: {e}", path.display()),
            )
        })?),
        None => None,
    };
    let mut timeline = Timeline::new(file, args.report.is_some(), plan.rate, &plan.target);
    let signals = Signals::install().context("installing signal handlers")?;
    let (tx, events) = bounded(1024);
    let mut procs = Vec::with_capacity(plan.specs.len());
    for (slot, spec) in plan.specs.iter().enumerate() {
        let hello = ToWorker::Hello {
            version: PROTOCOL_VERSION,
            worker: slot as u32,
            // Not pinned, unlike a scrape's workers: the server under test often shares
            // these cores, and a worker pinned to the core it is using waits there
            // instead of moving to a free one (measured against nginx on 2 cores:
            // 48K requests/s unpinned against 30K pinned, and less CPU per request).
            cpu: None,
            task: Task::Load(Box::new(spec.clone())),
        };
        let source = Source {
            slot,
            spawn: slot as u64,
        };
        let proc = WorkerProc::spawn(source, &hello, tx.clone())
            .with_context(|| format!("starting worker {slot}"))?;
        procs.push(proc);
    }
    let workers = procs.len();
    let pids: Vec<u32> = procs.iter().map(WorkerProc::pid).collect();
    let mut reports: Vec<Option<LoadReport>> = vec![None; workers];
    let mut done = vec![false; workers];
    let mut seconds = Seconds::new(workers);
    let mut live = Live::new(&plan);
    let mut stopping: Option<(StopCause, Instant)> = None;

    let outcome = (|| -> anyhow::Result<()> {
        while !done.iter().all(|d| *d) {
            if let Some(signal) = signals.take() {
                if stopping.is_some() {
                    break;
                }
                stopping = Some((signal, Instant::now() + STOP_GRACE));
                for proc in &mut procs {
                    let _ = proc.send(&ToWorker::Stop);
                }
            }
            if stopping.is_some_and(|(_, until)| Instant::now() >= until) {
                break;
            }
            let event = match events.recv_timeout(Duration::from_millis(100)) {
                Ok(event) => event,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => bail!("all workers are gone"),
            };
            match event {
                Event::Message(Source { slot, .. }, FromWorker::LoadTick { second, stats }) => {
                    seconds.add(slot, second, &stats);
                }
                Event::Message(Source { slot, .. }, FromWorker::LoadDone(report)) => {
                    seconds.finished(slot);
                    reports[slot] = Some(*report);
                }
                Event::Message(Source { slot, .. }, FromWorker::Bye(_)) => done[slot] = true,
                Event::Message(_, FromWorker::Ready { .. }) => {}
                Event::Message(Source { slot, .. }, FromWorker::Fatal(error)) => {
                    bail!("worker {slot}: {error}")
                }
                Event::Message(Source { slot, .. }, other) => {
                    bail!("worker {slot} sent {other:?} in a load test")
                }
                Event::Closed(Source { slot, .. }, error) => {
                    if !done[slot] {
                        let why =
                            error.map_or_else(|| "its pipe closed".to_owned(), |e| e.to_string());
                        bail!(
                            "worker {slot} (pid {}) stopped during the load test: {why}",
                            pids[slot]
                        );
                    }
                }
            }
            for (second, s) in seconds.ready() {
                live.second(second, &s.stats);
                timeline
                    .record(second, &s)
                    .context("writing the timeline")?;
            }
        }
        Ok(())
    })();
    live.finish();
    let grace = if stopping.is_some() {
        Duration::ZERO
    } else {
        STOP_GRACE
    };
    for proc in &mut procs {
        let _ = proc.stop(grace);
    }
    outcome?;
    for (second, s) in seconds.rest() {
        timeline
            .record(second, &s)
            .context("writing the timeline")?;
    }
    let kept = timeline.finish().context("writing the timeline")?;
    if let (Some(path), Some(lines)) = (&args.report, kept) {
        let title = format!("Load test of {}", plan.target);
        let mut run = ::report::Run::from_timeline(lines.as_slice(), &title)
            .context("reading the timeline")?;
        run.kind = ::report::Kind::Load { rate: plan.rate };
        report_file::write(path, &run).with_context(|| format!("writing {}", path.display()))?;
    }

    let (own_cpu, own_rss) = worker::own_usage();
    let results = Results::new(
        reports
            .into_iter()
            .zip(pids)
            .filter_map(|(r, pid)| r.map(|report| WorkerResult { pid, report }))
            .collect(),
        own_cpu,
        own_rss,
    );
    let measured = results.measured(plan.rate.is_some());
    let breached: Vec<String> = plan
        .thresholds
        .iter()
        .filter(|t| t.breached(&measured))
        .map(|t| format!("{t} (measured {})", t.show(t.actual(&measured))))
        .collect();
    let report = if plan.json {
        format!("{}\n", results.to_json(&plan, &breached))
    } else {
        results.render(&plan)
    };
    print_stdout(&report).context("printing the report")?;
    for b in &breached {
        eprintln!("threshold failed: {b}");
    }
    Ok(match stopping {
        Some((cause, _)) => cause.exit(),
        None if !breached.is_empty() => Exit::SomeFailed,
        None => Exit::Ok,
    })
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
        let bar = indicatif::ProgressBar::with_draw_target(
            len,
            indicatif::ProgressDrawTarget::stderr_with_hz(4),
        );
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
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
                eprintln!("[{:>4}s] {line}", second + 1)
            }
            Live::Plain | Live::Off => {}
        }
    }

    fn finish(&self) {
        if let Live::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
