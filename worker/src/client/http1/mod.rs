//! A lean HTTP/1.1 client exchange, in the manner of wrk: the request is bytes prepared
//! ahead, the response head is parsed in place with `httparse`, and the body
//! (Content-Length, chunked, or up to the close) is counted, or kept up to a limit.
//! Load tests count; scrapes of `http://` URLs keep.
//!
//! The framing rules of RFC 9112 §6.3 and RFC 9110 §15.2 are followed exactly, because
//! a reader that guesses stores the wrong bytes: interim (1xx) responses are skipped,
//! conflicting lengths are an error, every buffer has a cap, and a connection that
//! holds bytes after its response is never reused.

use std::time::Instant;

use shared::refresh::Validators;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::budget::Charge;

/// Bytes read from the socket at a time, at least.
const READ_SIZE: usize = 8 * 1024;
/// Response heads with more headers than this are refused.
const MAX_HEADERS: usize = 64;
/// Response heads, and the trailers of a chunked body, longer than this are refused.
pub const MAX_HEAD: usize = 64 * 1024;
/// A chunk-size line (extensions included) longer than this is refused.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Interim (1xx) responses skipped before the final one, at most.
const MAX_INTERIM: usize = 16;
/// Room reserved up front for a body announced by `Content-Length`, at most: a length
/// is a claim, not bytes, so the rest grows with what arrives.
const MAX_RESERVE: u64 = 64 * 1024;

/// What a response's head said, and how many body bytes followed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// HTTP status.
    pub status: u16,
    /// Body bytes (after chunk framing).
    pub body: u64,
    /// Whether the connection may carry another request: the server allows it and no
    /// byte followed the response.
    pub keep_alive: bool,
    /// When the first byte of the response arrived.
    pub first_byte: Instant,
    /// The `Location` header of a redirect (3xx).
    pub location: Option<String>,
    /// The `Retry-After` header of a 429 or 503.
    pub retry_after: Option<String>,
    /// The `Link` header fields, joined by `, ` when there are several (RFC 8288
    /// §3: the same as one field listing them all).
    pub link: Option<String>,
    /// Whether the body came with a `Content-Encoding` (or a transfer coding) other
    /// than identity and chunked.
    pub encoded: bool,
    /// Its `ETag` and `Last-Modified`, when they were asked for: a scrape keeps them
    /// for the next `--refresh`; a load test, which only counts, reads past them.
    pub validators: Validators,
}

/// How reading a response failed. After any of these the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// The body is longer than the limit it was to be kept under.
    TooLarge(u64),
    /// The connection ended cleanly before any byte of a response.
    Closed,
    /// The connection failed (reset) before any byte of a response.
    Reset,
    /// The connection ended (or failed) inside the response.
    Incomplete,
    /// A body that ends with the connection ended with a TLS connection closed without
    /// close_notify: a cut-off body would look the same, so it is not taken.
    Unterminated,
    /// The bytes break HTTP/1.1's rules; the text says which.
    Malformed(&'static str),
}

impl ReadError {
    /// What went wrong, in a few words.
    pub fn describe(&self) -> String {
        match self {
            ReadError::TooLarge(n) => format!("body of {n} bytes or more is over the limit"),
            ReadError::Closed => "connection closed before the response".to_owned(),
            ReadError::Reset => "connection reset before the response".to_owned(),
            ReadError::Incomplete => "connection closed inside the response".to_owned(),
            ReadError::Unterminated => "the TLS connection closed without close_notify, and \
                                        the body ends with the connection: it may be cut off"
                .to_owned(),
            ReadError::Malformed(why) => format!("bad response: {why}"),
        }
    }
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
    /// Append them to this vector, failing past `max` bytes; a charge on the worker's
    /// body budget, if any, is made to cover them before each read.
    Into(&'a mut Vec<u8>, u64, Option<&'a mut Charge>),
}

/// Reads one response from `io`, using `buf` (emptied first) as the read buffer.
/// Interim responses (1xx but 101) before it are read and skipped. A body that is kept
/// comes with its validators; one that is counted, without.
pub async fn read_response(
    io: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    keep: Keep<'_>,
) -> Result<Head, ReadError> {
    let validators = matches!(keep, Keep::Into(..));
    let (mut head, framing, head_end) = read_head(io, buf, validators).await?;
    if let (Keep::Into(_, max, _), Framing::Length(len)) = (&keep, &framing)
        && len > max
    {
        return Err(ReadError::TooLarge(*len));
    }
    let mut body = Body {
        buf,
        pos: head_end,
        count: 0,
        keep,
    };
    if let (Keep::Into(out, _, _), Framing::Length(len)) = (&mut body.keep, &framing) {
        out.reserve((*len).min(MAX_RESERVE) as usize);
    }
    match framing {
        Framing::Length(len) => body.exactly(io, len).await?,
        Framing::Chunked => body.chunked(io).await?,
        Framing::UntilClose => loop {
            let all = body.available() as u64;
            body.take(all)?;
            body.buf.clear();
            body.pos = 0;
            body.charge().await;
            match fill(io, body.buf).await {
                Ok(0) => break,
                Ok(_) => {}
                // rustls' word for a close without close_notify; plain TCP never says it.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Err(ReadError::Unterminated);
                }
                Err(_) => return Err(ReadError::Incomplete),
            }
        },
    }
    // Bytes after the response were never asked for: whatever they are, the
    // connection cannot be trusted with another request.
    if body.available() > 0 {
        head.keep_alive = false;
    }
    head.body = body.count;
    Ok(head)
}

/// Reads the response to a HEAD request from `io`, using `buf` (emptied first) as the
/// read buffer: its head alone, whatever length it announces (RFC 9110 §9.3.2), with
/// its validators when `validators` asks for them.
pub async fn read_head_response(
    io: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    validators: bool,
) -> Result<Head, ReadError> {
    let (mut head, _, head_end) = read_head(io, buf, validators).await?;
    // Bytes after the head were never asked for.
    head.keep_alive &= buf.len() == head_end;
    Ok(head)
}

/// Reads the head of the final response into `buf` (emptied first), skipping interim
/// ones: what it says (its validators too when `validators`), how its body is framed,
/// and where in `buf` the body starts.
async fn read_head(
    io: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    validators: bool,
) -> Result<(Head, Framing, usize), ReadError> {
    buf.clear();
    let mut first_byte = None;
    // Start of the head being parsed: interim heads before it are skipped.
    let mut start = 0;
    let mut interim = 0;
    let (mut head, framing, head_end) = loop {
        if buf.len() > start {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut headers);
            match parsed.parse(&buf[start..]) {
                Ok(httparse::Status::Complete(len)) => match parsed.code {
                    Some(101) => return Err(ReadError::Malformed("101 Switching Protocols")),
                    Some(100..=199) => {
                        interim += 1;
                        if interim > MAX_INTERIM {
                            return Err(ReadError::Malformed("too many interim (1xx) responses"));
                        }
                        start += len;
                        continue;
                    }
                    _ => {
                        let (head, framing) = interpret(&parsed, validators)?;
                        break (head, framing, start + len);
                    }
                },
                Ok(httparse::Status::Partial) if buf.len() - start < MAX_HEAD => {}
                Ok(httparse::Status::Partial) => {
                    return Err(ReadError::Malformed("response head over 64 KiB"));
                }
                Err(_) => return Err(ReadError::Malformed("not an HTTP/1.x response")),
            }
        }
        // Skipped interim heads need no room.
        buf.drain(..start);
        start = 0;
        let nothing_yet = buf.is_empty() && interim == 0;
        match fill(io, buf).await {
            Ok(0) if nothing_yet => return Err(ReadError::Closed),
            Err(_) if nothing_yet => return Err(ReadError::Reset),
            Ok(0) | Err(_) => return Err(ReadError::Incomplete),
            Ok(_) => {
                first_byte.get_or_insert_with(Instant::now);
            }
        }
    };
    head.first_byte = first_byte.unwrap_or_else(Instant::now);
    Ok((head, framing, head_end))
}

/// What the head of a final response says (with its validators when `validators`),
/// and how its body is framed.
fn interpret(
    head: &httparse::Response<'_, '_>,
    validators: bool,
) -> Result<(Head, Framing), ReadError> {
    let status = head.code.ok_or(ReadError::Malformed("no status"))?;
    // HTTP/1.1 keeps a connection unless told otherwise, HTTP/1.0 only when asked.
    let (mut close, mut asked_to_keep) = (false, false);
    let mut length: Option<u64> = None;
    // Whether there is a Transfer-Encoding, and whether its last coding is chunked.
    let mut transfer: Option<bool> = None;
    let (mut location, mut retry_after, mut encoded) = (None, None, false);
    let mut link: Option<String> = None;
    let (mut etag, mut last_modified) = (None, None);
    let text = |v: &[u8]| std::str::from_utf8(v).ok().map(|t| t.trim().to_owned());
    for h in head.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            // A list of equal values is one length (RFC 9110 §8.6); any difference,
            // in one field or across fields, leaves the length unknown.
            for item in h.value.split(|&b| b == b',') {
                let item = item.trim_ascii();
                let value = parse_digits(item).ok_or(ReadError::Malformed("bad Content-Length"))?;
                if length.is_some_and(|l| l != value) {
                    return Err(ReadError::Malformed("conflicting Content-Length values"));
                }
                length = Some(value);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            for coding in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if coding.is_empty() {
                    continue;
                }
                let chunked = coding.eq_ignore_ascii_case(b"chunked");
                encoded |= !chunked && !coding.eq_ignore_ascii_case(b"identity");
                transfer = Some(chunked);
            }
            transfer.get_or_insert(false);
        } else if name.eq_ignore_ascii_case("connection") {
            for option in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                close |= option.eq_ignore_ascii_case(b"close");
                asked_to_keep |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("location") && (300..400).contains(&status) {
            location = text(h.value);
        } else if name.eq_ignore_ascii_case("retry-after") {
            retry_after = text(h.value);
        } else if name.eq_ignore_ascii_case("link")
            && let Some(value) = text(h.value)
        {
            crate::client::add_link(&mut link, &value);
        } else if name.eq_ignore_ascii_case("content-encoding") {
            encoded |= !h.value.trim_ascii().eq_ignore_ascii_case(b"identity");
        } else if validators && name.eq_ignore_ascii_case("etag") {
            etag = std::str::from_utf8(h.value).ok();
        } else if validators && name.eq_ignore_ascii_case("last-modified") {
            last_modified = std::str::from_utf8(h.value).ok();
        }
    }
    if transfer.is_some() && length.is_some() {
        // RFC 9112 §6.3: a message smuggling attempt or a broken server; either way
        // the length is not known for sure.
        return Err(ReadError::Malformed(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    let framing = match (status, transfer, length) {
        (204 | 304, _, _) => Framing::Length(0),
        (_, Some(true), _) => Framing::Chunked,
        (_, Some(false), _) => Framing::UntilClose,
        (_, None, Some(len)) => Framing::Length(len),
        (_, None, None) => Framing::UntilClose,
    };
    let keep_alive = !close
        && (head.version == Some(1) || asked_to_keep)
        && !matches!(framing, Framing::UntilClose);
    let response = Head {
        status,
        body: 0,
        keep_alive,
        first_byte: Instant::now(),
        location,
        retry_after,
        link,
        encoded,
        validators: match validators {
            true => Validators::new(etag, last_modified),
            false => Validators::default(),
        },
    };
    Ok((response, framing))
}

/// `1*DIGIT` as a number; anything else (signs, spaces, overflow) is `None`.
fn parse_digits(text: &[u8]) -> Option<u64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Appends what the socket has to `buf`; `Ok(0)` at the end of the stream, `Err` when
/// the connection failed.
async fn fill(io: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> std::io::Result<usize> {
    buf.reserve(READ_SIZE);
    io.read_buf(buf).await
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
        if let Keep::Into(out, max, _) = &mut self.keep {
            if out.len() as u64 + n > *max {
                return Err(ReadError::TooLarge(out.len() as u64 + n));
            }
            out.extend_from_slice(bytes);
        }
        self.pos += n as usize;
        self.count += n;
        Ok(())
    }

    /// Waits until the kept body's charge covers it and one more read.
    async fn charge(&mut self) {
        if let Keep::Into(out, _, Some(charge)) = &mut self.keep {
            charge
                .cover(out.capacity().max(out.len() + READ_SIZE))
                .await;
        }
    }

    /// Drops what was consumed and reads more; the end of the stream is an error here.
    async fn more(&mut self, io: &mut (impl AsyncRead + Unpin)) -> Result<(), ReadError> {
        self.buf.drain(..self.pos);
        self.pos = 0;
        self.charge().await;
        match fill(io, self.buf).await {
            Ok(0) | Err(_) => Err(ReadError::Incomplete),
            Ok(_) => Ok(()),
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
                    Ok(httparse::Status::Partial) if self.available() < MAX_CHUNK_LINE => {
                        self.more(io).await?;
                    }
                    Ok(httparse::Status::Partial) => {
                        return Err(ReadError::Malformed("chunk-size line over 4 KiB"));
                    }
                    Err(_) => return Err(ReadError::Malformed("bad chunk size")),
                }
            };
            if size == 0 {
                return self.trailers(io).await;
            }
            self.exactly(io, size).await?;
            while self.available() < 2 {
                self.more(io).await?;
            }
            if &self.buf[self.pos..self.pos + 2] != b"\r\n" {
                return Err(ReadError::Malformed("chunk not followed by CRLF"));
            }
            self.pos += 2;
        }
    }

    /// Skips trailer lines up to the empty line that ends a chunked body; they may take
    /// [`MAX_HEAD`] bytes in all.
    async fn trailers(&mut self, io: &mut (impl AsyncRead + Unpin)) -> Result<(), ReadError> {
        let mut seen = 0;
        loop {
            match self.buf[self.pos..].windows(2).position(|w| w == b"\r\n") {
                Some(0) => {
                    self.pos += 2;
                    return Ok(());
                }
                Some(end) => {
                    seen += end + 2;
                    self.pos += end + 2;
                }
                None => self.more(io).await?,
            }
            if seen + self.available() > MAX_HEAD {
                return Err(ReadError::Malformed("trailers over 64 KiB"));
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

/// What a request carries after its head: the header lines that describe it (its
/// `Content-Type`) and its bytes. `Content-Length` is written from them.
#[derive(Debug, Clone, Copy)]
pub struct Content<'a> {
    /// Prepared `Name: value` lines, e.g. `Content-Type: application/json\r\n`.
    pub header_lines: &'a [u8],
    /// The body.
    pub bytes: &'a [u8],
}

/// Writes a request of `method` for `path` on `host` with the prepared `header_lines`
/// and, if any, its `content` to `out`.
pub fn write_request(
    out: &mut Vec<u8>,
    method: &str,
    path: &str,
    host: &str,
    header_lines: &[u8],
    content: Option<Content<'_>>,
) {
    let content_len = content.map_or(0, |c| 40 + c.header_lines.len() + c.bytes.len());
    out.reserve(32 + method.len() + path.len() + host.len() + header_lines.len() + content_len);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(header_lines);
    let Some(content) = content else {
        out.extend_from_slice(b"\r\n");
        return;
    };
    out.extend_from_slice(content.header_lines);
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(content.bytes.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(content.bytes);
}

#[cfg(test)]
mod oracle;
#[cfg(test)]
mod tests;
