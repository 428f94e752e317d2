//! A lean HTTP/1.1 client exchange for load tests, in the manner of wrk: the request is
//! bytes prepared ahead, the response head is parsed in place with `httparse`, and the
//! body is counted, not kept (Content-Length, chunked, or up to the close). One read
//! buffer per connection is reused for every response.

use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes read from the socket at a time, at least.
const READ_SIZE: usize = 16 * 1024;
/// Response heads with more headers than this are refused.
const MAX_HEADERS: usize = 64;
/// Response heads longer than this are refused.
const MAX_HEAD: usize = 64 * 1024;

/// A whole response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Body bytes (after chunk framing).
    pub body: u64,
    /// Whether the connection may carry another request.
    pub keep_alive: bool,
    /// When the first byte of the response arrived.
    pub first_byte: Instant,
}

/// How reading a response failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// The connection ended (or failed) before any byte of a response.
    Closed,
    /// The connection ended (or failed) inside the response.
    Incomplete,
    /// The bytes are not an HTTP/1.x response.
    Malformed,
}

enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// Reads one response from `io`, using `buf` (emptied first) as the read buffer.
pub async fn read_response(
    io: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> Result<Response, ReadError> {
    buf.clear();
    let mut first_byte = None;
    // The head.
    let (status, keep_alive, framing, head_len) = loop {
        if fill(io, buf).await? == 0 {
            return Err(if buf.is_empty() {
                ReadError::Closed
            } else {
                ReadError::Incomplete
            });
        }
        first_byte.get_or_insert_with(Instant::now);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut head = httparse::Response::new(&mut headers);
        match head.parse(buf) {
            Ok(httparse::Status::Complete(len)) => {
                let parsed = interpret(&head).ok_or(ReadError::Malformed)?;
                break (parsed.0, parsed.1, parsed.2, len);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            _ => return Err(ReadError::Malformed),
        }
    };
    let first_byte = first_byte.unwrap_or_else(Instant::now);
    let mut body = Body {
        buf,
        pos: head_len,
        count: 0,
    };
    let keep_alive = match framing {
        Framing::Length(len) => {
            body.exactly(io, len).await?;
            keep_alive
        }
        Framing::Chunked => {
            body.chunked(io).await?;
            keep_alive
        }
        Framing::UntilClose => {
            body.count += (body.buf.len() - body.pos) as u64;
            body.buf.clear();
            while fill(io, body.buf).await? > 0 {
                body.count += body.buf.len() as u64;
                body.buf.clear();
            }
            false
        }
    };
    Ok(Response {
        status,
        body: body.count,
        keep_alive,
        first_byte,
    })
}

/// Status, keep-alive and framing of a parsed head.
fn interpret(head: &httparse::Response<'_, '_>) -> Option<(u16, bool, Framing)> {
    let status = head.code?;
    let mut keep_alive = head.version? == 1;
    let mut framing = if status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::Length(0)
    } else {
        Framing::UntilClose
    };
    for h in head.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            if !matches!(framing, Framing::Chunked) {
                framing = Framing::Length(std::str::from_utf8(h.value).ok()?.trim().parse().ok()?);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if h.value
                .windows(7)
                .any(|w| w.eq_ignore_ascii_case(b"chunked"))
            {
                framing = Framing::Chunked;
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            if h.value.windows(5).any(|w| w.eq_ignore_ascii_case(b"close")) {
                keep_alive = false;
            } else if h
                .value
                .windows(10)
                .any(|w| w.eq_ignore_ascii_case(b"keep-alive"))
            {
                keep_alive = true;
            }
        }
    }
    if matches!(framing, Framing::UntilClose) {
        keep_alive = false;
    }
    Some((status, keep_alive, framing))
}

/// Appends what the socket has to `buf`; 0 at the end of the stream.
async fn fill(io: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> Result<usize, ReadError> {
    buf.reserve(READ_SIZE);
    io.read_buf(buf).await.map_err(|_| ReadError::Incomplete)
}

/// The body being counted: `buf[pos..]` is read and not yet consumed.
struct Body<'a> {
    buf: &'a mut Vec<u8>,
    pos: usize,
    count: u64,
}

impl Body<'_> {
    fn available(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Drops what was consumed and reads more; the end of the stream is an error here.
    async fn more(&mut self, io: &mut (impl AsyncRead + Unpin)) -> Result<(), ReadError> {
        self.buf.drain(..self.pos);
        self.pos = 0;
        match fill(io, self.buf).await? {
            0 => Err(ReadError::Incomplete),
            _ => Ok(()),
        }
    }

    /// Counts exactly `len` body bytes.
    async fn exactly(
        &mut self,
        io: &mut (impl AsyncRead + Unpin),
        mut len: u64,
    ) -> Result<(), ReadError> {
        loop {
            let take = (self.available() as u64).min(len);
            self.pos += take as usize;
            self.count += take;
            len -= take;
            if len == 0 {
                return Ok(());
            }
            self.more(io).await?;
        }
    }

    /// Counts a chunked body, trailers included.
    async fn chunked(&mut self, io: &mut (impl AsyncRead + Unpin)) -> Result<(), ReadError> {
        loop {
            let size = loop {
                match httparse::parse_chunk_size(&self.buf[self.pos..]) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.pos += used;
                        break size;
                    }
                    Ok(httparse::Status::Partial) => self.more(io).await?,
                    Err(_) => return Err(ReadError::Malformed),
                }
            };
            if size == 0 {
                return self.trailers(io).await;
            }
            let before = self.count;
            self.exactly(io, size).await?;
            debug_assert_eq!(self.count - before, size);
            while self.available() < 2 {
                self.more(io).await?;
            }
            if &self.buf[self.pos..self.pos + 2] != b"\r\n" {
                return Err(ReadError::Malformed);
            }
            self.pos += 2;
        }
    }

    /// Skips trailer lines up to the empty line that ends a chunked body.
    async fn trailers(&mut self, io: &mut (impl AsyncRead + Unpin)) -> Result<(), ReadError> {
        loop {
            match self.buf[self.pos..].windows(2).position(|w| w == b"\r\n") {
                Some(0) => {
                    self.pos += 2;
                    return Ok(());
                }
                Some(end) => self.pos += end + 2,
                None => self.more(io).await?,
            }
        }
    }
}

/// Writes the request line and headers of a GET for `path` to `out`.
pub fn write_request(
    out: &mut Vec<u8>,
    path: &str,
    host: &str,
    headers: &[(String, String)],
    keep_alive: bool,
) {
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(wire: &[u8]) -> (Result<Response, ReadError>, usize) {
        // A reader that hands out 3 bytes at a time, to exercise every partial path.
        let mut io = tokio_test_reader(wire);
        let mut buf = Vec::new();
        let first = read_response(&mut io, &mut buf).await;
        (first, buf.len())
    }

    fn tokio_test_reader(wire: &[u8]) -> impl AsyncRead + Unpin + '_ {
        struct Trickle<'a>(&'a [u8]);
        impl AsyncRead for Trickle<'_> {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                out: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                let n = self.0.len().min(3).min(out.remaining());
                out.put_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                std::task::Poll::Ready(Ok(()))
            }
        }
        Trickle(wire)
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn content_length_bodies_are_counted_exactly() {
        let (r, _) = run(read_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello worldEXTRA",
        ));
        let r = r.unwrap();
        assert_eq!((r.status, r.body, r.keep_alive), (200, 11, true));
    }

    #[test]
    fn chunked_bodies_and_trailers_are_counted() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nb;ext=1\r\n world, all\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let r = run(read_all(wire)).0.unwrap();
        assert_eq!((r.status, r.body, r.keep_alive), (200, 16, true));
    }

    #[test]
    fn close_delimited_bodies_end_the_connection() {
        let r = run(read_all(b"HTTP/1.0 200 OK\r\n\r\nabcdef")).0.unwrap();
        assert_eq!((r.body, r.keep_alive), (6, false));
        let r = run(read_all(
            b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        ))
        .0
        .unwrap();
        assert_eq!((r.status, r.body, r.keep_alive), (404, 0, false));
        let r = run(read_all(b"HTTP/1.1 204 No Content\r\n\r\n")).0.unwrap();
        assert_eq!((r.status, r.body, r.keep_alive), (204, 0, true));
    }

    #[test]
    fn cut_and_garbled_responses_are_errors() {
        assert_eq!(run(read_all(b"")).0, Err(ReadError::Closed));
        assert_eq!(
            run(read_all(b"HTTP/1.1 200 OK\r\nContent-Le")).0,
            Err(ReadError::Incomplete)
        );
        assert_eq!(
            run(read_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf"
            ))
            .0,
            Err(ReadError::Incomplete)
        );
        assert_eq!(
            run(read_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"
            ))
            .0,
            Err(ReadError::Incomplete)
        );
        assert_eq!(
            run(read_all(b"SSH-2.0-OpenSSH\r\n\r\n")).0,
            Err(ReadError::Malformed)
        );
        assert_eq!(
            run(read_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
            ))
            .0,
            Err(ReadError::Malformed)
        );
    }

    #[test]
    fn requests_are_plain_get_lines() {
        let mut out = Vec::new();
        write_request(
            &mut out,
            "/a?b=1",
            "h:80",
            &[("X-K".into(), "v".into())],
            false,
        );
        assert_eq!(
            out,
            b"GET /a?b=1 HTTP/1.1\r\nHost: h:80\r\nX-K: v\r\nConnection: close\r\n\r\n"
        );
    }
}
