//! A tiny HTTP/1.1 responder on a thread of its own: `GET /metrics` (or `/`) answers
//! the page, anything else 404 or 405, one connection at a time, each closed after its
//! answer. It reads at most a request head and waits for it a short time, so a slow or
//! hostile client holds it up for that time at most, and never the run.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use super::text::CONTENT_TYPE;

/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client gets to send its request, and to take the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Answers requests on `listener` for as long as the process lives, with the page
/// `render` makes at the time of each request.
pub fn serve(listener: TcpListener, render: impl Fn() -> String) {
    for stream in listener.incoming() {
        // A failed accept (a client gone at once, out of descriptors) ends nothing.
        let Ok(stream) = stream else { continue };
        let _ = answer(stream, &render);
    }
}

fn answer(mut stream: TcpStream, render: &impl Fn() -> String) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let head = read_head(&mut stream)?;
    let (status, body) = match request_line(&head) {
        Some((method, _)) if method != "GET" && method != "HEAD" => {
            ("405 Method Not Allowed", "only GET\n".to_owned())
        }
        Some((_, "/metrics" | "/")) => ("200 OK", render()),
        Some(_) => ("404 Not Found", "try /metrics\n".to_owned()),
        None => ("400 Bad Request", "bad request\n".to_owned()),
    };
    let head_only = head.starts_with(b"HEAD ");
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(response.as_bytes())?;
    if !head_only {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}

/// Reads until the blank line that ends a request head (or `MAX_HEAD` bytes, or EOF).
fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while head.len() < MAX_HEAD && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

/// The method and the path (without its query) of a request head.
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target);
    Some((method, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_give_method_and_path() {
        assert_eq!(
            request_line(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(request_line(b"GET / HTTP/1.0\r\n\r\n"), Some(("GET", "/")));
        assert_eq!(request_line(b"nonsense\r\n\r\n"), None);
        assert_eq!(request_line(b"GET / SPDY/3\r\n\r\n"), None);
    }
}
