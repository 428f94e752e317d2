//! Writes gathered per round of a connection's task, and sent with one syscall.
//!
//! The h2 crate writes a response's body as its own `writev` (it chains at most one
//! large DATA frame to its buffer, then flushes), so a server answering thousands of
//! streams a second makes a syscall, and a round of loopback delivery and wakeups in
//! the client, per response. Here what h2 writes goes to a buffer, its flushes cost
//! nothing, and the connection's task sends the buffer once it has nothing else to do
//! ([`Outbox::poll_send`]): the answers that fall due together leave together.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Bytes gathered at most before a write is sent at once, whatever the task is doing.
const SEND_AT: usize = 256 * 1024;

/// What has been written and not yet sent.
struct Pending {
    half: OwnedWriteHalf,
    buf: Vec<u8>,
    /// How much of `buf` is already sent.
    sent: usize,
}

impl Pending {
    /// Sends all of `buf`; pending, with a wakeup registered, while the socket is full.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.half).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.buf.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

fn lock(pending: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    // Nothing panics while holding the lock; a poisoned one still holds whole bytes.
    pending
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The connection as the protocol sees it: reads go straight to the socket, writes
/// to the outbox.
pub(crate) struct Io {
    read: OwnedReadHalf,
    pending: Arc<Mutex<Pending>>,
}

/// The connection's task's handle on what its [`Io`] has gathered.
pub(crate) struct Outbox {
    pending: Arc<Mutex<Pending>>,
}

/// Splits a connection into the side given to the protocol and the outbox kept by the
/// task that drives it.
pub(crate) fn split(stream: TcpStream) -> (Io, Outbox) {
    let (read, half) = stream.into_split();
    let pending = Arc::new(Mutex::new(Pending {
        half,
        buf: Vec::new(),
        sent: 0,
    }));
    let outbox = Outbox {
        pending: Arc::clone(&pending),
    };
    (Io { read, pending }, outbox)
}

impl Outbox {
    /// Sends what has been gathered. Never ready while nothing is gathered: call it last
    /// in a round, after whatever may write, so that it completes exactly when it sent.
    pub(crate) fn poll_send(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut pending = lock(&self.pending);
        if pending.buf.is_empty() {
            return Poll::Pending;
        }
        pending.poll_send(cx)
    }
}

impl AsyncRead for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut pending = lock(&self.pending);
        if pending.buf.len() >= SEND_AT {
            ready!(pending.poll_send(cx))?;
        }
        let mut len = 0;
        for slice in data {
            pending.buf.extend_from_slice(slice);
            len += slice.len();
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Nothing to do: the task sends the outbox when its round is over.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut pending = lock(&self.pending);
        ready!(pending.poll_send(cx))?;
        Pin::new(&mut pending.half).poll_shutdown(cx)
    }
}
