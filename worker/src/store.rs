//! Storing a body: written to an unnamed file and linked into place once whole (or to
//! a temp file beside its final name, then renamed; see [`outdir::Dir`]), by a writer
//! thread of the worker's own, so that disk waits never stall the event loop.
//!
//! One thread per worker rather than the runtime's blocking pool: files are written one
//! after the other as they come, with no hand-off between pool threads per file and no
//! pool threads contending for the lock of the one output directory.

use std::io;
use std::path::PathBuf;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Sender, unbounded};
use outdir::Dir;

/// Files written before their completions are reported, at most.
const MAX_BATCH: usize = 64;

/// How long a lone file waits for others to join its batch.
const GATHER: std::time::Duration = std::time::Duration::from_millis(1);

/// A file to store, and what to do once it is written (or not).
struct Job {
    name: String,
    body: bytes::Bytes,
    done: Box<dyn FnOnce(String, io::Result<()>) + Send>,
}

/// The writer thread of one worker, for one output directory. Dropping it lets the
/// thread finish the files it was given, and waits for that: no temp file is left
/// half-written when the worker exits.
pub struct Writer {
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread that writes into `dir`.
    pub fn start(dir: PathBuf) -> io::Result<Writer> {
        let dir = Dir::open(dir)?;
        let (jobs, queue) = unbounded::<Job>();
        let thread = thread::Builder::new()
            .name("writer".into())
            .spawn(move || {
                // What is queued is written as one batch, and only then reported: the
                // event loop wakes once for the batch rather than once per file.
                let mut batch = Vec::new();
                while let Ok(first) = queue.recv() {
                    batch.push(first);
                    if queue.is_empty() {
                        // A trickle of files gathers for a moment, so that this thread
                        // and the event loop wake once per batch, not once per file.
                        thread::sleep(GATHER);
                    }
                    batch.extend(queue.try_iter().take(MAX_BATCH - 1));
                    let written: Vec<_> = batch
                        .iter()
                        .map(|job| dir.write_atomic(&job.name, &job.body))
                        .collect();
                    for (job, result) in batch.drain(..).zip(written) {
                        (job.done)(job.name, result);
                    }
                }
            })?;
        Ok(Writer {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Writes `body` to `name` atomically (readers see the whole file or none), then
    /// calls `done` with the name and the result, on the writer thread. Completions go
    /// straight from there to where they are needed, without waking the event loop
    /// once per file.
    pub fn submit(
        &self,
        name: String,
        body: bytes::Bytes,
        done: impl FnOnce(String, io::Result<()>) + Send + 'static,
    ) {
        let job = Job {
            name,
            body,
            done: Box::new(done),
        };
        let Some(jobs) = &self.jobs else {
            return (job.done)(job.name, Err(io::Error::other("the writer has stopped")));
        };
        if let Err(unsent) = jobs.send(job) {
            let job = unsent.0;
            (job.done)(
                job.name,
                Err(io::Error::other("the writer thread has stopped")),
            );
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn the_writer_thread_stores_files_and_reports_failures() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("taken")).unwrap();
        fs::write(dir.path().join("taken/x"), b"").unwrap();
        let writer = Writer::start(dir.path().to_owned()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for name in ["a.json", "taken"] {
            let tx = tx.clone();
            writer.submit(name.into(), "[1]".into(), move |back, r| {
                tx.send((name, back == name, r.is_ok())).unwrap()
            });
        }
        drop(writer);
        let results: Vec<_> = rx.try_iter().collect();
        assert_eq!(results, [("a.json", true, true), ("taken", true, false)]);
        assert_eq!(fs::read(dir.path().join("a.json")).unwrap(), b"[1]");
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["a.json", "taken"]);
    }
}
