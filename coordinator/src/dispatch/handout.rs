//! Handing jobs out and taking reports in: each worker holds at most a window of jobs,
//! topped up a chunk at a time (cut by bytes too, so that a frame can always carry it)
//! as its reports come in; every report goes to the manifest once.

use std::io;
use std::time::Instant;

use anyhow::Context;
use shared::protocol::{Job, JobReport, ToWorker};
use shared::refresh::Stored;

use super::{Dispatch, MAX_CHUNK_BYTES};
use crate::chain::Chains;
use crate::manifest::Entry;
use crate::messages;
use crate::pool::Event;
use crate::refresh;
use crate::robots::Gate;
use crate::signals::StopCause;
use crate::sink::Sink;
use crate::source::frame_bytes;

impl Dispatch {
    pub(super) fn record(&mut self, slot: usize, report: &mut JobReport) -> anyhow::Result<()> {
        let index = report.batch.index;
        let page = report.chain.as_ref().map(|c| c.page);
        let held = &mut self.slots[slot].held;
        // One page of a chain is in flight at a time: the batch and the page name it.
        if held.get(&index).is_none_or(|job| job.page != page) {
            // Not ours to record twice: the manifest holds each batch once.
            messages::warn(format_args!(
                "worker {slot} reported batch {index} it did not hold"
            ));
            return Ok(());
        }
        let Some(job) = held.remove(&index) else {
            return Ok(());
        };
        // The next page's job is made as its page is recorded, in one step: each page
        // of a chain is handed out, and recorded, once.
        let next = self.chains.as_mut().and_then(|c| c.on_report(report));
        self.write_report(slot, report, job.stored.as_deref())?;
        self.retry.extend(next);
        Ok(())
    }

    /// Writes a report to the manifest (or stdout) and counts it for `slot`; on a
    /// refresh, its line says what became of the file `stored` before.
    fn write_report(
        &mut self,
        slot: usize,
        report: &JobReport,
        stored: Option<&Stored>,
    ) -> anyhow::Result<()> {
        let recorded = match (&mut self.sink, &mut self.refresh) {
            (Sink::Manifest(manifest), Some(appended)) => {
                let entry = refresh::line(Entry::new(slot as u32, report), report, stored);
                let recorded = manifest.record(&entry);
                if recorded.is_ok() {
                    appended.note(report.batch.index);
                }
                recorded
            }
            (sink, _) => sink.record(slot as u32, report),
        };
        match recorded {
            Err(e)
                if e.kind() == io::ErrorKind::BrokenPipe
                    && matches!(self.sink, Sink::Stdout(_)) =>
            {
                // The reader of stdout is gone (`| head`): end now, quietly.
                self.stopping = Some((StopCause::OutputClosed, Instant::now()));
                return Ok(());
            }
            recorded => recorded.context("writing the manifest")?,
        }
        self.stats.record(slot, report);
        self.metrics.record(slot, report);
        let all = self.stats.all();
        self.progress.update(all.done(), all.failed);
        Ok(())
    }

    /// Copies the live metrics for the `--metrics` server when a copy is due, or
    /// whatever the time when it is the `last`.
    pub(super) fn publish_metrics(&mut self, last: bool) {
        let held = self.slots.iter().map(|s| s.held.len());
        self.metrics.publish(held, last);
    }

    pub(super) fn top_up_all(&mut self) -> anyhow::Result<()> {
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

    pub(super) fn top_up(&mut self, slot: usize) -> anyhow::Result<()> {
        self.give_chunk(slot)?;
        self.finish_if_drained(slot)
    }

    /// Sends `slot` one chunk if it has room for a whole one; whether it did.
    fn give_chunk(&mut self, slot: usize) -> anyhow::Result<bool> {
        let s = &self.slots[slot];
        if s.finishing || !self.pool.is_running(slot) || s.held.len() + self.chunk > self.window {
            return Ok(false);
        }
        if self.router.is_some() {
            self.route_more(slot)?;
            let queue = &mut self.routed[slot];
            let mut jobs: Vec<Job> = Vec::with_capacity(self.chunk);
            let mut bytes = 0;
            while jobs.len() < self.chunk
                && let Some(job) = queue.front()
                && (jobs.is_empty() || bytes + frame_bytes(job) <= MAX_CHUNK_BYTES)
                && let Some(job) = queue.pop_front()
            {
                bytes += frame_bytes(&job);
                jobs.push(job);
            }
            return self.send_chunk(slot, jobs);
        }
        if self.retry.is_empty() && self.fresh_exhausted() {
            return Ok(false);
        }
        let mut jobs: Vec<Job> = Vec::with_capacity(self.chunk);
        // Cut by bytes as well as by count, so that the frame can always be sent.
        let mut bytes = 0;
        while jobs.len() < self.chunk
            && let Some(job) = self.retry.front()
            && (jobs.is_empty() || bytes + frame_bytes(job) <= MAX_CHUNK_BYTES)
            && let Some(job) = self.retry.pop_front()
        {
            bytes += frame_bytes(&job);
            jobs.push(job);
        }
        if jobs.len() < self.chunk && bytes < MAX_CHUNK_BYTES {
            let fresh = self.take_fresh(self.chunk - jobs.len(), MAX_CHUNK_BYTES - bytes)?;
            jobs.extend(fresh);
        }
        self.record_unsent(slot)?;
        self.send_chunk(slot, jobs)
    }

    /// Up to `n` jobs (`max_bytes` of frame) that were never handed out: read from the
    /// source, past robots.txt, each starting its chain under `--follow-next`.
    fn take_fresh(&mut self, n: usize, max_bytes: usize) -> anyhow::Result<Vec<Job>> {
        let fresh = match &mut self.robots {
            Some(gate) => gate.take(&mut self.source, n, max_bytes),
            None => self.source.take(n, max_bytes),
        };
        let mut fresh = fresh.context("reading the URL list")?;
        // The answers taken in may carry a Crawl-delay: the workers hear of it before
        // they get the host's batches.
        self.apply_crawl_delays();
        if let Some(chains) = &mut self.chains {
            // Each batch of the plan starts a chain.
            fresh.iter_mut().for_each(|job| chains.start(job));
        }
        Ok(fresh)
    }

    /// Records, as `slot`'s, the jobs no worker ever holds: list lines that cannot be
    /// fetched fail in place, and batches robots.txt disallows are skipped in place.
    fn record_unsent(&mut self, slot: usize) -> anyhow::Result<()> {
        for report in self.source.take_refused() {
            self.write_report(slot, &report, None)?;
        }
        let (skipped, more_now) = self
            .robots
            .as_mut()
            .map(Gate::take_skipped)
            .unwrap_or_default();
        for report in skipped {
            self.write_report(slot, &report, None)?;
        }
        if more_now {
            // A slice of a plan robots.txt disallows was recorded; the rest follows
            // on the loop's next turn, so that signals and the deadline are seen
            // between slices.
            let _ = self.pool.sender().try_send(Event::Input);
        }
        Ok(())
    }

    /// Moves jobs from the retry queue and the source to the queues of the workers
    /// their hosts belong to, until `slot` has a chunk waiting or no queue may grow:
    /// the queues hold a few windows' worth in all, so that one host's long run in the
    /// source holds up the others only that long.
    fn route_more(&mut self, slot: usize) -> anyhow::Result<()> {
        let cap = self.window * 2;
        while self.router.is_some()
            && self.routed[slot].len() < self.chunk
            && self.routed.iter().all(|q| q.len() < cap)
        {
            let job = match self.retry.pop_front() {
                Some(job) => job,
                None => match self.take_fresh(1, MAX_CHUNK_BYTES)?.pop() {
                    Some(job) => job,
                    None => break,
                },
            };
            if let Some(router) = &mut self.router {
                let owner = router.owner(job.url.as_deref());
                self.routed[owner].push_back(job);
            }
        }
        self.record_unsent(slot)
    }

    /// Sends `jobs` to `slot` (nothing when there are none); whether it sent.
    fn send_chunk(&mut self, slot: usize, jobs: Vec<Job>) -> anyhow::Result<bool> {
        if jobs.is_empty() {
            return Ok(false);
        }
        let s = &mut self.slots[slot];
        s.held
            .extend(jobs.iter().map(|j| (j.batch.index, j.clone())));
        if let Err(e) = self.pool.send(slot, &ToWorker::Jobs(jobs)) {
            // The worker is going away; its reader reports that and its jobs move on.
            messages::warn(format_args!("sending jobs to worker {slot}: {e}"));
        }
        Ok(true)
    }

    /// Whether every job of the source has been handed out or recorded: none is left
    /// to read, and none waits for its host's robots.txt.
    fn fresh_exhausted(&self) -> bool {
        self.source.is_exhausted() && self.robots.as_ref().is_none_or(Gate::is_empty)
    }

    fn finish_if_drained(&mut self, slot: usize) -> anyhow::Result<()> {
        // An open chain may still bring a next page for any worker.
        let drained = self.fresh_exhausted()
            && self.retry.is_empty()
            && self.routed[slot].is_empty()
            && self.chains.as_ref().is_none_or(Chains::all_ended);
        let s = &mut self.slots[slot];
        if drained && !s.drained && !s.finishing && self.pool.is_running(slot) {
            s.drained = true;
            if let Err(e) = self.pool.send(slot, &ToWorker::Drained) {
                messages::warn(format_args!("telling worker {slot} it is drained: {e}"));
            }
        }
        if drained && s.held.is_empty() && !s.finishing && self.pool.is_running(slot) {
            s.finishing = true;
            if let Err(e) = self.pool.send(slot, &ToWorker::Finish) {
                messages::warn(format_args!("finishing worker {slot}: {e}"));
            }
        }
        Ok(())
    }
}
