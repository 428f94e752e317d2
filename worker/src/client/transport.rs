//! The byte streams under every lean client: a TCP connection, or TLS over one. Both
//! are set up here, timed apart (TCP connect, then TLS handshake), so that a load
//! report can show each.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use shared::config::TlsOptions;
use shared::proxy::Proxy;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::client::ClientError;
use crate::tls::{self, TlsError};

/// A connection's byte stream.
pub enum Stream {
    /// Plain TCP (`http://`).
    Plain(TcpStream),
    /// TLS over TCP (`https://`). Boxed: rustls' state is large, and a plain stream
    /// should not carry room for it.
    Tls(Box<TlsConn>),
}

/// A TLS connection, and the TLS error that ended it, once one did.
pub struct TlsConn {
    io: TlsStream<TcpStream>,
    failure: Failure,
}

/// Where a connection's TLS error is kept for whoever asks after the connection is
/// gone (HTTP/2 hands its streams only a copy of the error's text).
pub type Failure = Arc<OnceLock<rustls::Error>>;

impl TlsConn {
    fn keep<T>(&self, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(e)) = &polled
            && let Some(error) = tls::rustls_error(e)
        {
            let _ = self.failure.set(error.clone());
        }
        polled
    }
}

impl Stream {
    /// Whether the connection, waiting for its next request, has nothing to read: no
    /// byte on the socket and none decrypted but unread.
    pub fn is_quiet(&mut self) -> bool {
        match self {
            Stream::Plain(tcp) => is_quiet(tcp),
            Stream::Tls(tls) => {
                let (tcp, session) = tls.io.get_mut();
                is_quiet(tcp)
                    && session
                        .process_new_packets()
                        .is_ok_and(|state| state.plaintext_bytes_to_read() == 0)
            }
        }
    }
}

impl Stream {
    /// The TLS error that ended this connection, if one did: a fatal alert from the
    /// server (a refused client certificate shows only after the handshake, in TLS
    /// 1.3) is kept by the session and said again here.
    pub fn tls_failure(&mut self) -> Option<rustls::Error> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(tls) => match tls.failure.get() {
                Some(error) => Some(error.clone()),
                None => tls.io.get_mut().1.process_new_packets().err(),
            },
        }
    }

    /// Whether TLS chose HTTP/2 by ALPN.
    pub fn is_h2(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(tls) => tls.io.get_ref().1.alpn_protocol() == Some(b"h2"),
        }
    }

    /// Where the TLS error that ends this connection will be kept.
    pub fn failure_slot(&self) -> Option<Failure> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(tls) => Some(Arc::clone(&tls.failure)),
        }
    }

    /// The error of a request whose connection to `authority` failed after it was
    /// set up: a TLS failure said for people when the session knows one, else
    /// `otherwise`.
    pub fn failure(&mut self, authority: &str, otherwise: ClientError) -> ClientError {
        match self.tls_failure() {
            Some(error) => tls_client_error(&error, authority),
            None => otherwise,
        }
    }
}

/// A TLS failure with `authority` as a request's error: final when another attempt
/// would meet it again.
pub fn tls_client_error(error: &rustls::Error, authority: &str) -> ClientError {
    let described = tls::describe(error, authority);
    match tls::is_permanent(error) {
        true => ClientError::Tls(described),
        false => ClientError::Reset(described),
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => {
                let polled = Pin::new(&mut s.io).poll_read(cx, buf);
                s.keep(polled)
            }
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => {
                let polled = Pin::new(&mut s.io).poll_write(cx, buf);
                s.keep(polled)
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut s.io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut s.io).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => {
                let polled = Pin::new(&mut s.io).poll_write_vectored(cx, bufs);
                s.keep(polled)
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.io.is_write_vectored(),
        }
    }
}

/// How a connection could not be set up.
#[derive(Debug)]
pub enum ConnectError {
    /// The TCP connection failed or timed out.
    Tcp(String),
    /// The proxy would not open a tunnel; `final` when asking again would not help
    /// (it wants credentials, or refuses the destination).
    Proxy {
        /// What it said.
        message: String,
        /// Whether another attempt would meet the same answer.
        last: bool,
    },
    /// The TLS handshake failed: the rustls error when there is one (a certificate, an
    /// alert), else what the socket said.
    Tls(Option<rustls::Error>, String),
}

impl ConnectError {
    /// The error of a request whose connection to `authority` could not be set up:
    /// an untrusted certificate or a refused handshake is final, the rest may pass.
    pub fn into_client_error(self, authority: &str) -> ClientError {
        match self {
            ConnectError::Tcp(message) | ConnectError::Tls(None, message) => {
                ClientError::Connect(message)
            }
            ConnectError::Proxy { message, last } => match last {
                true => ClientError::Other(message),
                false => ClientError::Connect(message),
            },
            ConnectError::Tls(Some(error), message) => match tls::is_permanent(&error) {
                true => tls_client_error(&error, authority),
                false => ClientError::Connect(message),
            },
        }
    }
}

/// A set-up connection, and what each step took.
pub struct Connected {
    /// The stream.
    pub stream: Stream,
    /// The TCP connect.
    pub tcp: Duration,
    /// The TLS handshake, for `https://`.
    pub handshake: Option<Duration>,
}

/// Opens connections: plain, or TLS with one client configuration for all of them (so
/// that sessions resume across connections to a host).
#[derive(Clone)]
pub struct Connector {
    tls: Option<TlsConnector>,
}

impl Connector {
    /// A connector for plain TCP only.
    pub fn plain() -> Connector {
        Connector { tls: None }
    }

    /// A connector that also speaks TLS as `options` say, offering `alpn`.
    pub fn with_tls(options: &TlsOptions, alpn: &[&[u8]]) -> Result<Connector, TlsError> {
        let config = tls::client_config(options, alpn)?;
        Ok(Connector {
            tls: Some(TlsConnector::from(Arc::new(config))),
        })
    }

    /// Connects to `authority` (`host:port`), through `proxy` when there is one; `tls`
    /// asks for a TLS handshake with the authority's host after the TCP connect
    /// (through a `CONNECT` tunnel when proxied). A plain connection to a proxy is to
    /// the proxy: its requests must name their whole URL.
    pub async fn connect(
        &self,
        authority: &str,
        tls: bool,
        proxy: Option<&Proxy>,
        timeout: Duration,
    ) -> Result<Connected, ConnectError> {
        let started = Instant::now();
        let to = proxy.map_or(authority, |p| p.authority.as_str());
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(to))
            .await
            .map_err(|_| ConnectError::Tcp(format!("connecting to {to} timed out")))?
            .map_err(|e| ConnectError::Tcp(format!("connecting to {to}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        if !tls {
            return Ok(Connected {
                stream: Stream::Plain(tcp),
                tcp: started.elapsed(),
                handshake: None,
            });
        }
        // Boxed: a TLS handshake's state is large, and every plain connection being
        // made (ten thousand at the start of a run) would otherwise carry room for it.
        Box::pin(self.secure(tcp, authority, proxy, started, timeout)).await
    }

    /// The TLS half of [`Connector::connect`]: the proxy's tunnel, if any, then the
    /// handshake with `authority`, within what is left of `timeout`.
    async fn secure(
        &self,
        mut tcp: TcpStream,
        authority: &str,
        proxy: Option<&Proxy>,
        started: Instant,
        timeout: Duration,
    ) -> Result<Connected, ConnectError> {
        if let Some(proxy) = proxy {
            let left = timeout.saturating_sub(started.elapsed());
            tokio::time::timeout(left, tunnel(&mut tcp, authority, proxy))
                .await
                .map_err(|_| ConnectError::Proxy {
                    message: format!(
                        "{PROXY_FAILURE}{} did not open a tunnel in time",
                        proxy.shown
                    ),
                    last: false,
                })??;
        }
        let tcp_time = started.elapsed();
        let Some(connector) = &self.tls else {
            return Err(ConnectError::Tls(
                None,
                "TLS is not set up in this client".into(),
            ));
        };
        let host = host_of(authority);
        let name = tls::server_name(host).map_err(|e| ConnectError::Tls(None, e))?;
        let left = timeout.saturating_sub(tcp_time);
        let stream = tokio::time::timeout(left, connector.connect(name, tcp))
            .await
            .map_err(|_| {
                ConnectError::Tls(None, format!("TLS handshake with {authority} timed out"))
            })?
            .map_err(|e| {
                let cause = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .cloned();
                ConnectError::Tls(cause, format!("TLS handshake with {authority}: {e}"))
            })?;
        Ok(Connected {
            stream: Stream::Tls(Box::new(TlsConn {
                io: stream,
                failure: Failure::default(),
            })),
            tcp: tcp_time,
            handshake: Some(started.elapsed() - tcp_time),
        })
    }
}

/// Whether a connection that waits for its next request has nothing to read: no byte
/// and no end of stream. Asked of the socket itself (a peek that does not wait), not
/// of the event loop's readiness, which may not have seen the latest bytes yet.
fn is_quiet(stream: &TcpStream) -> bool {
    use nix::sys::socket::{MsgFlags, recv};
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
    matches!(
        recv(stream.as_raw_fd(), &mut byte, flags),
        Err(nix::errno::Errno::EAGAIN)
    )
}

/// How the message of every failure the proxy caused starts.
const PROXY_FAILURE: &str = "the proxy ";

/// Whether a batch's `error` was the proxy's doing (no tunnel, credentials refused):
/// a failure every batch to that host through that proxy meets, not the host's answer.
pub fn is_proxy_failure(error: &str) -> bool {
    error.starts_with(PROXY_FAILURE)
}

/// Asks `proxy` on `tcp` for a tunnel to `authority` (`CONNECT`), and reads its answer
/// up to the end of its head: the bytes after it belong to the destination.
async fn tunnel(tcp: &mut TcpStream, authority: &str, proxy: &Proxy) -> Result<(), ConnectError> {
    let failed = |message: String, last: bool| ConnectError::Proxy { message, last };
    let shown = &proxy.shown;
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(credentials) = &proxy.authorization {
        request.push_str(&format!("Proxy-Authorization: {credentials}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| failed(format!("{PROXY_FAILURE}{shown}: {e}"), false))?;
    // Byte by byte: a tunnel's first bytes after the head are the destination's, and
    // must not be read here. A head is small and comes once per connection.
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_PROXY_HEAD {
            return Err(failed(
                format!("{PROXY_FAILURE}{shown} sent a head over 16 KiB"),
                false,
            ));
        }
        match tcp.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            Ok(_) => {
                return Err(failed(
                    format!(
                        "{PROXY_FAILURE}{shown} closed the connection before answering CONNECT"
                    ),
                    false,
                ));
            }
            Err(e) => return Err(failed(format!("{PROXY_FAILURE}{shown}: {e}"), false)),
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let status = match response.parse(&head) {
        Ok(httparse::Status::Complete(_)) => response.code.unwrap_or(0),
        _ => {
            return Err(failed(
                format!("{PROXY_FAILURE}{shown} answered CONNECT with something that is not HTTP"),
                false,
            ));
        }
    };
    match status {
        200..=299 => Ok(()),
        // 407 is the proxy's status for it; some (tinyproxy) answer 401.
        401 | 407 => Err(failed(
            format!(
                "{PROXY_FAILURE}{shown} wants credentials ({status}): give them in the proxy URL, http://USER:PASSWORD@HOST:PORT"
            ),
            true,
        )),
        403 | 405 => Err(failed(
            format!("{PROXY_FAILURE}{shown} refused a tunnel to {authority} ({status})"),
            true,
        )),
        _ => Err(failed(
            format!("{PROXY_FAILURE}{shown} answered CONNECT {authority} with {status}"),
            false,
        )),
    }
}

/// The longest proxy answer head read.
const MAX_PROXY_HEAD: usize = 16 * 1024;

/// The host of `host:port` (brackets kept for IPv6, as in URLs).
pub fn host_of(authority: &str) -> &str {
    match authority.rfind(':') {
        Some(i) if !authority[i + 1..].contains(']') => &authority[..i],
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn the_host_of_an_authority_keeps_ipv6_brackets() {
        assert_eq!(host_of("example.com:443"), "example.com");
        assert_eq!(host_of("[::1]:8443"), "[::1]");
        assert_eq!(host_of("[::1]"), "[::1]");
        assert_eq!(host_of("localhost"), "localhost");
    }
}
