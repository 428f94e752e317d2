//! The run: start the workers, hand out jobs in chunks as they report, record every
//! report in the manifest, then stop the workers and summarise.
//!
//! Hand-out is dynamic: each worker holds at most a window of jobs, topped up a chunk at
//! a time as its reports come in, so a slow worker never holds the tail of the run.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail};
use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError, bounded};
use shared::config::WorkerConfig;
use shared::protocol::{FromWorker, Job, JobReport, PROTOCOL_VERSION, ToWorker};
use shared::template::Template;

use crate::exit::Exit;
use crate::manifest::{self, Entry, Manifest};
use crate::pool::{Event, WorkerProc};
use crate::progress::Progress;
use crate::settings::{Settings, Target};
use crate::source::JobSource;
use crate::summary::RunStats;
use crate::target::BuiltinServer;

/// How often the loop wakes when nothing arrives (progress lines, a URL list that is
/// still being read).
const TICK: Duration = Duration::from_millis(20);
/// Time a worker gets to leave after its stdin closed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs a checked scrape to the end.
pub fn run(settings: Settings) -> anyhow::Result<Exit> {
    let Settings {
        workers,
        cpus,
        target,
        out_dir,
        worker: mut config,
        quiet,
    } = settings;

    // Declared first so that it is dropped last, after every worker has stopped.
    let mut builtin = None;
    let source = match target {
        Target::Template(plan) => JobSource::plan(plan),
        Target::Builtin { plan, delay_ms } => {
            let server = BuiltinServer::start(tickers::Options {
                delay_ms,
                ..tickers::Options::default()
            })
            .context("starting the built-in target")?;
            config.url = Some(Template::parse(&server.url_template())?);
            builtin = Some(server);
            JobSource::plan(plan)
        }
        Target::UrlList(list) => JobSource::urls(list).context("reading the URL list")?,
    };
    let manifest = Manifest::open(&out_dir).context("opening the manifest")?;
    let progress = Progress::new(source.total(), quiet);
    let mut dispatch =
        Dispatch::start(workers as usize, &cpus, config, source, manifest, progress)?;
    let result = dispatch.run();
    dispatch.progress.finish();
    result?;
    dispatch.stop_workers();
    drop(builtin);

    let stats = &dispatch.stats;
    if !quiet {
        let path = out_dir.join(manifest::FILE_NAME);
        eprint!("{}", stats.render(&path.display().to_string()));
    }
    Ok(if stats.all().failed > 0 {
        Exit::SomeFailed
    } else {
        Exit::Ok
    })
}

/// One worker slot.
struct Slot {
    proc: WorkerProc,
    /// Jobs handed out and not yet reported, by batch index.
    held: HashMap<u64, Job>,
    /// `Finish` was sent.
    finishing: bool,
    /// `Bye` came.
    done: bool,
}

struct Dispatch {
    slots: Vec<Slot>,
    source: JobSource,
    events: Receiver<Event>,
    manifest: Manifest,
    stats: RunStats,
    progress: Progress,
    /// Jobs per `Jobs` message.
    chunk: usize,
    /// Jobs one worker holds at most.
    window: usize,
}

impl Dispatch {
    fn start(
        workers: usize,
        cpus: &[usize],
        config: WorkerConfig,
        source: JobSource,
        manifest: Manifest,
        progress: Progress,
    ) -> anyhow::Result<Dispatch> {
        let concurrency = config.concurrency as usize;
        let window = 2 * concurrency;
        // Small enough that every worker gets several chunks of a short run, large
        // enough that a long run costs few messages.
        let per_worker = source
            .total()
            .map_or(u64::MAX, |t| t / (workers as u64 * 8));
        let chunk = (per_worker.min((concurrency / 2).max(1) as u64) as usize).max(1);

        // Room for every job a worker can hold, so reader threads rarely wait.
        let (tx, events) = bounded(1024);
        let mut stats = RunStats::new(workers);
        let mut slots = Vec::with_capacity(workers);
        for slot in 0..workers {
            let hello = ToWorker::Hello {
                version: PROTOCOL_VERSION,
                worker: slot as u32,
                config: WorkerConfig {
                    cpu: cpus.get(slot).copied(),
                    ..config.clone()
                },
            };
            let proc = WorkerProc::spawn(slot, &hello, tx.clone())
                .with_context(|| format!("starting worker {slot}"))?;
            stats.set_pid(slot, proc.pid());
            slots.push(Slot {
                proc,
                held: HashMap::new(),
                finishing: false,
                done: false,
            });
        }
        let mut dispatch = Dispatch {
            slots,
            source,
            events,
            manifest,
            stats,
            progress,
            chunk,
            window,
        };
        dispatch.top_up_all()?;
        Ok(dispatch)
    }

    fn run(&mut self) -> anyhow::Result<()> {
        while !self.slots.iter().all(|s| s.done) {
            let event = match self.events.try_recv() {
                Ok(event) => event,
                Err(TryRecvError::Empty) => {
                    // Nothing queued: a good moment to make the manifest durable.
                    self.manifest.flush().context("writing the manifest")?;
                    match self.events.recv_timeout(TICK) {
                        Ok(event) => event,
                        Err(RecvTimeoutError::Timeout) => {
                            self.top_up_all()?;
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => bail!("all workers are gone"),
                    }
                }
                Err(TryRecvError::Disconnected) => bail!("all workers are gone"),
            };
            self.handle(event)?;
        }
        self.manifest.flush().context("writing the manifest")?;
        Ok(())
    }

    fn handle(&mut self, event: Event) -> anyhow::Result<()> {
        match event {
            Event::Message(slot, FromWorker::Ready { version, pid }) => {
                if version != PROTOCOL_VERSION {
                    bail!(
                        "worker {slot} (pid {pid}) speaks protocol {version}, not {PROTOCOL_VERSION}"
                    );
                }
            }
            Event::Message(slot, FromWorker::Done(report)) => {
                self.record(slot, &report)?;
                self.top_up(slot)?;
            }
            Event::Message(slot, FromWorker::Bye(stats)) => {
                self.stats.set_worker_stats(slot, stats);
                self.slots[slot].done = true;
            }
            Event::Message(slot, FromWorker::Fatal(error)) => bail!("worker {slot}: {error}"),
            Event::Closed(slot, error) => {
                let s = &mut self.slots[slot];
                if !s.done {
                    let why = error.map_or_else(|| "exited".to_owned(), |e| e.to_string());
                    let status = s
                        .proc
                        .stop(Duration::ZERO)
                        .map(|st| st.to_string())
                        .unwrap_or_default();
                    bail!(
                        "worker {slot} (pid {}) stopped unexpectedly ({why}; {status}) holding {} batches",
                        s.proc.pid(),
                        s.held.len()
                    );
                }
            }
        }
        Ok(())
    }

    fn record(&mut self, slot: usize, report: &JobReport) -> anyhow::Result<()> {
        if self.slots[slot].held.remove(&report.batch.index).is_none() {
            // Not ours to record twice: the manifest holds each batch once.
            eprintln!(
                "warning: worker {slot} reported batch {} it did not hold",
                report.batch.index
            );
            return Ok(());
        }
        self.manifest
            .record(&Entry::new(slot as u32, report))
            .context("writing the manifest")?;
        self.stats.record(slot, report);
        let all = self.stats.all();
        self.progress.update(all.ok + all.failed, all.failed);
        Ok(())
    }

    fn top_up_all(&mut self) -> anyhow::Result<()> {
        // Round-robin, a chunk at a time, so that a short run is spread evenly.
        loop {
            let mut gave = false;
            for slot in 0..self.slots.len() {
                gave |= self.give_chunk(slot)?;
            }
            if !gave {
                break;
            }
        }
        for slot in 0..self.slots.len() {
            self.finish_if_drained(slot)?;
        }
        Ok(())
    }

    fn top_up(&mut self, slot: usize) -> anyhow::Result<()> {
        self.give_chunk(slot)?;
        self.finish_if_drained(slot)
    }

    /// Sends `slot` one chunk if it has room for a whole one; whether it did.
    fn give_chunk(&mut self, slot: usize) -> anyhow::Result<bool> {
        let s = &mut self.slots[slot];
        if s.finishing || s.held.len() + self.chunk > self.window {
            return Ok(false);
        }
        let jobs = self
            .source
            .take(self.chunk)
            .context("reading the URL list")?;
        if jobs.is_empty() {
            return Ok(false);
        }
        s.held
            .extend(jobs.iter().map(|j| (j.batch.index, j.clone())));
        s.proc
            .send(&ToWorker::Jobs(jobs))
            .with_context(|| format!("sending jobs to worker {slot}"))?;
        Ok(true)
    }

    fn finish_if_drained(&mut self, slot: usize) -> anyhow::Result<()> {
        let s = &mut self.slots[slot];
        if self.source.is_exhausted() && s.held.is_empty() && !s.finishing {
            s.finishing = true;
            s.proc
                .send(&ToWorker::Finish)
                .with_context(|| format!("finishing worker {slot}"))?;
        }
        Ok(())
    }

    fn stop_workers(&mut self) {
        for (slot, s) in self.slots.iter_mut().enumerate() {
            match s.proc.stop(STOP_GRACE) {
                Ok(status) if status.success() => {}
                Ok(status) => eprintln!("warning: worker {slot} {status}"),
                Err(e) => eprintln!("warning: stopping worker {slot}: {e}"),
            }
        }
    }
}
