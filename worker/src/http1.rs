//! A lean HTTP/1.1 client exchange, in the manner of wrk: the request is bytes prepared
//! ahead, the response head is parsed in place with `httparse`, and the body
//! (Content-Length, chunked, or up to the close) is counted, or kept up to a limit.
//! Load tests count; scrapes of `http://` URLs keep.

use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes read from the socket at a time, at least.
const READ_SIZE: usize = 8 * 1024;
/// Response heads with more headers than this are refused.
const MAX_HEADERS: usize = 64;
/// Response heads longer than this are refused.
const MAX_HEAD: usize = 64 * 1024;

/// A whole response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Body bytes (after chunk framing).
    pub body: u64,
    /// Whether the connection may carry another request.
    pub keep_alive: bool,
    /// When the first byte of the response arrived.
    pub first_byte: Instant,
    /// The `Location` header of a redirect (3xx).
    pub location: Option<String>,
    /// The `Retry-After` header of a 429 or 503.
    pub retry_after: Option<String>,
    /// Whether the body came with a `Content-Encoding` other than identity.
    pub encoded: bool,
}

/// How reading a response failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// The body is longer than the limit it was to be kept under.
    TooLarge(u64),
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

/// Where body bytes go: counted only, or also kept under a limit.
pub enum Keep<'a> {
    /// Count them.
    Count,
    /// Append them to this vector, failing past `max` bytes.
    Into(&'a mut Vec<u8>, u64),
}

/// Reads one response from `io`, using `buf` (emptied first) as the read buffer.
pub async fn read_response(
    io: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    keep: Keep<'_>,
) -> Result<Response, ReadError> {
    buf.clear();
    let mut first_byte = None;
    // The head.
    let (head, framing, head_len) = loop {
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
                let (parsed, framing) = interpret(&head).ok_or(ReadError::Malformed)?;
                break (parsed, framing, len);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            _ => return Err(ReadError::Malformed),
        }
    };
    let mut head = head;
    head.first_byte = first_byte.unwrap_or_else(Instant::now);
    if let (Keep::Into(_, max), Framing::Length(len)) = (&keep, &framing)
        && len > max
    {
        return Err(ReadError::TooLarge(*len));
    }
    let mut body = Body {
        buf,
        pos: head_len,
        count: 0,
        keep,
    };
    if let (Keep::Into(out, _), Framing::Length(len)) = (&mut body.keep, &framing) {
        out.reserve(*len as usize);
    }
    match framing {
        Framing::Length(len) => body.exactly(io, len).await?,
        Framing::Chunked => body.chunked(io).await?,
        Framing::UntilClose => loop {
            let all = body.available() as u64;
            body.take(all)?;
            body.buf.clear();
            body.pos = 0;
            if fill(io, body.buf).await? == 0 {
                break;
            }
        },
    }
    head.body = body.count;
    Ok(head)
}

/// What the head says, and how the body is framed.
fn interpret(head: &httparse::Response<'_, '_>) -> Option<(Response, Framing)> {
    let status = head.code?;
    let mut keep_alive = head.version? == 1;
    let mut framing = if status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::Length(0)
    } else {
        Framing::UntilClose
    };
    let (mut location, mut retry_after, mut encoded) = (None, None, false);
    let text = |v: &[u8]| std::str::from_utf8(v).ok().map(|t| t.trim().to_owned());
    for h in head.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            if !matches!(framing, Framing::Chunked) {
                framing = Framing::Length(std::str::from_utf8(h.value).ok()?.trim().parse().ok()?);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if h.value
                .windows(7)
                .any(|w| w.eq_ignore_ascii_case(b"chunked"))
            {
                framing = Framing::Chunked;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            if h.value.windows(5).any(|w| w.eq_ignore_ascii_case(b"close")) {
                keep_alive = false;
            } else if h
                .value
                .windows(10)
                .any(|w| w.eq_ignore_ascii_case(b"keep-alive"))
            {
                keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case("location") && (300..400).contains(&status) {
            location = text(h.value);
        } else if name.eq_ignore_ascii_case("retry-after") {
            retry_after = text(h.value);
        } else if name.eq_ignore_ascii_case("content-encoding") {
            encoded |= !h.value.eq_ignore_ascii_case(b"identity");
        }
    }
    if matches!(framing, Framing::UntilClose) {
        keep_alive = false;
    }
    let response = Response {
        status,
        body: 0,
        keep_alive,
        first_byte: Instant::now(),
        location,
        retry_after,
        encoded,
    };
    Some((response, framing))
}

/// Appends what the socket has to `buf`; 0 at the end of the stream.
async fn fill(io: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> Result<usize, ReadError> {
    buf.reserve(READ_SIZE);
    io.read_buf(buf).await.map_err(|_| ReadError::Incomplete)
}

/// The body being read: `buf[pos..]` is read and not yet consumed.
struct Body<'a, 'k> {
    buf: &'a mut Vec<u8>,
    pos: usize,
    count: u64,
    keep: Keep<'k>,
}

impl Body<'_, '_> {
    fn available(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Consumes `n` available bytes of body: counted, and kept if asked.
    fn take(&mut self, n: u64) -> Result<(), ReadError> {
        let bytes = &self.buf[self.pos..self.pos + n as usize];
        if let Keep::Into(out, max) = &mut self.keep {
            if out.len() as u64 + n > *max {
                return Err(ReadError::TooLarge(out.len() as u64 + n));
            }
            out.extend_from_slice(bytes);
        }
        self.pos += n as usize;
        self.count += n;
        Ok(())
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
            self.take(take)?;
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

/// `Name: value` lines for `headers`, to send with every request of a connection
/// (with `Connection: close` when it is not to be kept).
pub fn header_lines<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    keep_alive: bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out
}

/// Writes a GET for `path` on `host` with the prepared `header_lines` to `out`.
pub fn write_request(out: &mut Vec<u8>, path: &str, host: &str, header_lines: &[u8]) {
    out.reserve(32 + path.len() + host.len() + header_lines.len());
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(header_lines);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(wire: &[u8]) -> (Result<Response, ReadError>, usize) {
        // A reader that hands out 3 bytes at a time, to exercise every partial path.
        let mut io = tokio_test_reader(wire);
        let mut buf = Vec::new();
        let first = read_response(&mut io, &mut buf, Keep::Count).await;
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
    fn kept_bodies_are_whole_and_bounded() {
        let wire: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        let mut body = Vec::new();
        let r = run(async {
            let mut io = tokio_test_reader(wire);
            read_response(&mut io, &mut Vec::new(), Keep::Into(&mut body, 100)).await
        });
        assert_eq!(r.unwrap().body, 11);
        assert_eq!(body, b"hello world");
        let mut small = Vec::new();
        let r = run(async {
            let mut io =
                tokio_test_reader(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world");
            read_response(&mut io, &mut Vec::new(), Keep::Into(&mut small, 10)).await
        });
        assert_eq!(r, Err(ReadError::TooLarge(11)));
        let r = run(async {
            let mut io = tokio_test_reader(
                b"HTTP/1.1 302 Found\r\nLocation: /next?a=1\r\nContent-Length: 0\r\n\r\n",
            );
            read_response(&mut io, &mut Vec::new(), Keep::Count).await
        })
        .unwrap();
        assert_eq!((r.status, r.location.as_deref()), (302, Some("/next?a=1")));
    }

    #[test]
    fn requests_are_plain_get_lines() {
        let mut out = Vec::new();
        write_request(
            &mut out,
            "/a?b=1",
            "h:80",
            &header_lines([("X-K", "v")], false),
        );
        assert_eq!(
            out,
            b"GET /a?b=1 HTTP/1.1\r\nHost: h:80\r\nX-K: v\r\nConnection: close\r\n\r\n"
        );
    }
}
