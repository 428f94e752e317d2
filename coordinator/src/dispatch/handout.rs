//! Handing jobs out and taking reports in: each worker holds at most a window of jobs,
//! topped up a chunk at a time (cut by bytes too, so that a frame can always carry it)
//! as its reports come in; every report goes to the manifest once.

use std::io;
use std::time::Instant;

use anyhow::Context;
use shared::protocol::{Job, JobReport, ToWorker};
use shared::refresh::Stored;

use super::{Dispatch, MAX_CHUNK_BYTES};
use crate::manifest::Entry;
use crate::messages;
use crate::refresh;
use crate::signals::StopCause;
use crate::sink::Sink;
use crate::source::frame_bytes;

impl Dispatch {
    pub(super) fn record(&mut self, slot: usize, report: &JobReport) -> anyhow::Result<()> {
        let Some(job) = self.slots[slot].held.remove(&report.batch.index) else {
            // Not ours to record twice: the manifest holds each batch once.
            messages::warn(format_args!(
                "worker {slot} reported batch {} it did not hold",
                report.batch.index
            ));
            return Ok(());
        };
        self.write_report(slot, report, job.stored.as_deref())
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
            jobs.extend(
                self.source
                    .take(self.chunk - jobs.len(), MAX_CHUNK_BYTES - bytes)
                    .context("reading the URL list")?,
            );
        }
        // List lines that cannot be fetched fail in place; no worker ever holds them.
        for report in self.source.take_refused() {
            self.write_report(slot, &report, None)?;
        }
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
        let drained = self.source.is_exhausted() && self.retry.is_empty();
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
