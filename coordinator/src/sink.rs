//! Where finished batches are recorded: the manifest beside the batch files, or, with
//! `--out -`, one JSON line per batch on stdout with the body inside (as JSON when it is
//! JSON, else base64), flushed per line so that a pipeline sees each batch at once.

use std::io::{self, BufWriter, Stdout, Write};

use base64::Engine as _;
use serde::Serialize;
use serde_json::value::RawValue;
use shared::protocol::{JobReport, Outcome};

use crate::manifest::{Entry, Manifest};

/// The record of finished batches.
pub enum Sink {
    /// manifest.jsonl in the output directory.
    Manifest(Manifest),
    /// JSON Lines on stdout.
    Stdout(BufWriter<Stdout>),
}

/// One line on stdout: the manifest entry and the body.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    entry: Entry,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<JsonBody<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_base64: Option<String>,
}

/// A JSON body: as received when it is on one line, else re-written on one line so
/// that every record stays one line.
#[derive(Serialize)]
#[serde(untagged)]
enum JsonBody<'a> {
    Raw(&'a RawValue),
    Compact(serde_json::Value),
}

impl<'a> JsonBody<'a> {
    fn of(bytes: &'a [u8]) -> Option<JsonBody<'a>> {
        let raw = serde_json::from_slice::<&RawValue>(bytes).ok()?;
        if raw.get().contains('\n') {
            serde_json::from_str(raw.get()).ok().map(JsonBody::Compact)
        } else {
            Some(JsonBody::Raw(raw))
        }
    }
}

impl Sink {
    /// JSON Lines on this process's stdout.
    pub fn stdout() -> Sink {
        Sink::Stdout(BufWriter::with_capacity(64 * 1024, io::stdout()))
    }

    /// Records one finished batch of worker `worker`. On stdout, an error of kind
    /// `BrokenPipe` means the reader is gone.
    pub fn record(&mut self, worker: u32, report: &JobReport) -> io::Result<()> {
        let entry = Entry::new(worker, report);
        match self {
            Sink::Manifest(manifest) => manifest.record(&entry),
            Sink::Stdout(out) => {
                let body = match &report.outcome {
                    Outcome::Fetched { body } => Some(body.as_slice()),
                    _ => None,
                };
                let json = body.and_then(JsonBody::of);
                let body_base64 = match (&json, body) {
                    (None, Some(b)) => Some(base64::engine::general_purpose::STANDARD.encode(b)),
                    _ => None,
                };
                let line = Line {
                    entry,
                    body: json,
                    body_base64,
                };
                serde_json::to_writer(&mut *out, &line)?;
                out.write_all(b"\n")?;
                out.flush()
            }
        }
    }

    /// Makes what was recorded durable (the manifest) or visible (stdout).
    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Manifest(manifest) => manifest.flush(),
            Sink::Stdout(out) => out.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_stay_on_one_line() {
        let pretty = b"{\n  \"a\": [1, 2],\n  \"b\": \"x\"\n}\n";
        let line = serde_json::to_string(&JsonBody::of(pretty).unwrap()).unwrap();
        assert_eq!(line, r#"{"a":[1,2],"b":"x"}"#);
        let compact = br#"{"z":1,"a":2}"#;
        let line = serde_json::to_string(&JsonBody::of(compact).unwrap()).unwrap();
        assert_eq!(
            line, r#"{"z":1,"a":2}"#,
            "one-line bodies are kept as received"
        );
        assert!(JsonBody::of(b"rank,nameid\n1,coin-0\n").is_none());
    }
}
