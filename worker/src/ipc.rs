//! Async framing over the worker's pipes, on top of `shared::frame`.

use std::io;

use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::frame::{FrameError, HEADER_LEN, decode_payload, encode_into, payload_len};
use shared::protocol::FromWorker;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::budget::Charge;

/// Reads frames from the coordinator.
pub struct FrameReader<R> {
    inner: BufReader<R>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps a pipe.
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner: BufReader::new(inner),
        }
    }

    /// The next message; `None` on a clean EOF between frames.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        if self.inner.fill_buf().await?.is_empty() {
            return Ok(None);
        }
        let mut header = [0; HEADER_LEN];
        self.inner
            .read_exact(&mut header)
            .await
            .map_err(truncated)?;
        let mut payload = vec![0; payload_len(header)?];
        self.inner
            .read_exact(&mut payload)
            .await
            .map_err(truncated)?;
        decode_payload(&payload).map(Some)
    }
}

fn truncated(e: io::Error) -> FrameError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    }
}

/// What the report writer sends.
#[derive(Debug)]
pub enum Outgoing {
    /// A message, framed.
    Message(FromWorker),
    /// A job's report, framed; its charge on the body budget is given back once the
    /// frame is written.
    Report(FromWorker, Option<Charge>),
    /// Bytes that are no frame (fault injection only).
    Garbage,
}

/// A length prefix far over the frame limit, then noise.
const GARBAGE: &[u8] = b"\xff\xff\xff\x7fnot a frame";

/// Writes frames to the coordinator, several per `write` when they queue up.
pub struct FrameWriter<W> {
    inner: W,
    buf: Vec<u8>,
    /// The budget the bodies in `buf` hold, until they are written.
    charges: Vec<Charge>,
}

/// Frames gathered into one write at most.
const MAX_GATHER: usize = 256;

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// Wraps a pipe.
    pub fn new(inner: W) -> Self {
        FrameWriter {
            inner,
            buf: Vec::with_capacity(8 * 1024),
            charges: Vec::new(),
        }
    }

    /// Writes one message and flushes.
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), FrameError> {
        encode_into(msg, &mut self.buf)?;
        self.flush().await
    }

    /// Writes every message from `rx` until it closes.
    pub async fn forward(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Outgoing>,
    ) -> Result<(), super::WorkerError> {
        while let Some(item) = rx.recv().await {
            self.add(item)?;
            for _ in 1..MAX_GATHER {
                match rx.try_recv() {
                    Ok(item) => self.add(item)?,
                    Err(_) => break,
                }
            }
            self.flush().await?;
        }
        Ok(())
    }

    fn add(&mut self, item: Outgoing) -> Result<(), FrameError> {
        match item {
            Outgoing::Message(msg) => encode_into(&msg, &mut self.buf),
            Outgoing::Report(msg, charge) => {
                self.charges.extend(charge);
                encode_into(&msg, &mut self.buf)
            }
            Outgoing::Garbage => {
                self.buf.extend_from_slice(GARBAGE);
                Ok(())
            }
        }
    }

    async fn flush(&mut self) -> Result<(), FrameError> {
        self.inner.write_all(&self.buf).await?;
        self.inner.flush().await?;
        self.buf.clear();
        self.charges.clear();
        Ok(())
    }
}
