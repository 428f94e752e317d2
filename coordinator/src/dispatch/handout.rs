//! Handing jobs out and taking reports in: each worker holds at most a window of jobs,
//! topped up a chunk at a time (cut by bytes too, so that a frame can always carry it)
//! as its reports come in; every report goes to the manifest once.

use std::io;
use std::time::Instant;

use anyhow::Context;
use shared::protocol::{Job, JobReport, ToWorker};

use super::{Dispatch, MAX_CHUNK_BYTES};
use crate::chain::Chains;
use crate::messages;
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
        held.remove(&index);
        // The next page's job is made as its page is recorded, in one step: each page
        // of a chain is handed out, and recorded, once.
        let next = self.chains.as_mut().and_then(|c| c.on_report(report));
        self.write_report(slot, report)?;
        self.retry.extend(next);
        Ok(())
    }

    /// Writes a report to the manifest (or stdout) and counts it for `slot`.
    fn write_report(&mut self, slot: usize, report: &JobReport) -> anyhow::Result<()> {
        match self.sink.record(slot as u32, report) {
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
        self.progress.update(all.ok + all.failed, all.failed);
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
        if self.retry.is_empty() && self.source.is_exhausted() {
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
            let mut new = self
                .source
                .take(self.chunk - jobs.len(), MAX_CHUNK_BYTES - bytes)
                .context("reading the URL list")?;
            if let Some(chains) = &mut self.chains {
                // Each batch of the plan starts a chain.
                new.iter_mut().for_each(|job| chains.start(job));
            }
            jobs.extend(new);
        }
        // List lines that cannot be fetched fail in place; no worker ever holds them.
        for report in self.source.take_refused() {
            self.write_report(slot, &report)?;
        }
        self.send_chunk(slot, jobs)
    }

    /// Moves jobs from the retry queue and the source to the queues of the workers
    /// their hosts belong to, until `slot` has a chunk waiting or no queue may grow:
    /// the queues hold a few windows' worth in all, so that one host's long run in the
    /// source holds up the others only that long.
    fn route_more(&mut self, slot: usize) -> anyhow::Result<()> {
        let Some(router) = &mut self.router else {
            return Ok(());
        };
        let cap = self.window * 2;
        while self.routed[slot].len() < self.chunk && self.routed.iter().all(|q| q.len() < cap) {
            let job = match self.retry.pop_front() {
                Some(job) => job,
                None => match self
                    .source
                    .take(1, MAX_CHUNK_BYTES)
                    .context("reading the URL list")?
                    .pop()
                {
                    Some(job) => job,
                    None => break,
                },
            };
            let owner = router.owner(job.url.as_deref());
            self.routed[owner].push_back(job);
        }
        for report in self.source.take_refused() {
            self.write_report(slot, &report)?;
        }
        Ok(())
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

    fn finish_if_drained(&mut self, slot: usize) -> anyhow::Result<()> {
        // An open chain may still bring a next page for any worker.
        let drained = self.source.is_exhausted()
            && self.retry.is_empty()
            && self.routed[slot].is_empty()
            && self.chains.as_ref().is_none_or(Chains::all_ended);
        let s = &mut self.slots[slot];
        if drained && s.held.is_empty() && !s.finishing && self.pool.is_running(slot) {
            s.finishing = true;
            if let Err(e) = self.pool.send(slot, &ToWorker::Finish) {
                messages::warn(format_args!("finishing worker {slot}: {e}"));
            }
        }
        Ok(())
    }
}
