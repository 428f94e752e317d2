//! The built-in target: a paged crypto tickers API like the one in the seed article,
//! `GET /api/tickers/?start=S&limit=L`, answering deterministic JSON (the same query
//! always gets the same bytes) after a configurable random delay; `/api/cursor/`,
//! pages that name their next page by an opaque cursor, a relative URL and a `Link`
//! header (`cursor`); `/echo`, which answers any request with what it was (method,
//! path, query, content type, body); and `/robots.txt`, when it is given one.
//!
//! [`Faults`] make it misbehave on purpose, over real sockets, so that clients' retries
//! and error handling can be tested: 500s, 429 with `Retry-After`, dropped connections,
//! truncated bodies and stalls.
//!
//! Every page carries validators (`ETag`, `Last-Modified`) and a conditional request
//! for a page the client holds is answered 304 Not Modified (`conditional`).
//!
//! HTTP/1.1 connections are served by hyper and axum; connections that open with the
//! HTTP/2 preface (h2c with prior knowledge) by a lean server on the h2 crate (`h2`),
//! except when responses are compressed, which axum's layers do. Both deliver the
//! answers `api` decides.

mod api;
mod coalesce;
mod conditional;
mod cursor;
mod echo;
mod h2;
mod pages;
mod tls;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use shared::plan::Span;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use cursor::{MAX_PAGES, cursor_of, cursor_page};
pub use pages::{tickers_csv, tickers_json};
pub use tls::{TlsSetupError, server_config};

/// Where crawlers look for the server's rules.
pub const ROBOTS_PATH: &str = "/robots.txt";

/// Largest `limit` one request may ask for.
pub const MAX_LIMIT: u64 = 10_000;

/// How the server behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// Each response waits a uniformly random time in this span, in milliseconds.
    pub delay_ms: Span,
    /// Number of coins that exist; pages past the end are short or empty.
    pub coins: u64,
    /// Compress responses (gzip or brotli) for clients that accept it.
    pub compress: bool,
    /// Misbehaviour on purpose.
    pub faults: Faults,
    /// Requests of the API answered per second at most; the rest get 429 with
    /// `Retry-After: 1` (`serve --max-rate`).
    pub max_rate: Option<u64>,
    /// What `GET /robots.txt` answers; `None` answers 404 (no robots.txt: everything
    /// allowed). Read once for the life of the server, so that options stay `Copy`.
    pub robots_txt: Option<&'static str>,
}

/// Shares of requests (0.0 to 1.0) that go wrong, each in its own way.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Faults {
    /// Answer 500 Internal Server Error.
    pub fail: f64,
    /// Answer 429 Too Many Requests with `Retry-After: retry_after_s`.
    pub throttle: f64,
    /// Seconds in the `Retry-After` of a 429.
    pub retry_after_s: u64,
    /// Close new connections before reading a request (every response then closes its
    /// connection, so that each request meets this chance).
    pub drop: f64,
    /// Announce the whole body but send only half of it, then close.
    pub truncate: f64,
    /// Wait `stall_ms` before answering.
    pub stall: f64,
    /// Length of a stall in milliseconds.
    pub stall_ms: u64,
}

impl Faults {
    fn hit(share: f64) -> bool {
        share > 0.0 && fastrand::f64() < share
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            delay_ms: Span { start: 0, end: 0 },
            coins: 1_000_000_000,
            compress: false,
            faults: Faults::default(),
            max_rate: None,
            robots_txt: None,
        }
    }
}

/// Connections waiting to be accepted at most (the kernel caps it at `somaxconn`).
/// tokio's default of 1024 drops SYNs when ten thousand clients connect at once, and
/// each dropped SYN costs its client a one-second retransmission.
const BACKLOG: u32 = 65_535;

/// Listens on `addr` with a deep accept backlog. Call within a tokio runtime.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Serves the API on `listener` until `shutdown` completes, then lets the connections
/// finish what they are answering. Each connection speaks HTTP/1.1 or, when it opens
/// with the HTTP/2 preface (h2c with prior knowledge), HTTP/2; with `tls`, HTTPS, and
/// HTTP/2 or HTTP/1.1 as ALPN chose.
pub async fn serve(
    listener: TcpListener,
    options: Options,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let service = TowerToHyperService::new(api::app(options));
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http2().max_concurrent_streams(h2::MAX_STREAMS);
    let connections = GracefulShutdown::new();
    // The lean HTTP/2 connections watch this, and hold a receiver while they live.
    let (stop, stopped) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    pause_after(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if Faults::hit(options.faults.drop) {
            // A reset rather than a clean close: what a crashed server looks like.
            let _ = stream.set_zero_linger();
            continue;
        }
        let _ = stream.set_nodelay(true);
        let http = http.clone();
        let service = service.clone();
        let watcher = connections.watcher();
        let mut stopped = stopped.clone();
        if let Some(acceptor) = &tls {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let accepted = tokio::select! {
                    accepted = acceptor.accept(stream).into_fallible() => accepted,
                    // A client that connects and says nothing does not hold up a shutdown.
                    _ = stopped.wait_for(|stop| *stop) => return,
                };
                drop(stopped);
                match accepted {
                    Ok(stream) => {
                        let connection = http.serve_connection(TokioIo::new(stream), service);
                        let _ = watcher.watch(connection.into_owned()).await;
                    }
                    // A failed handshake (a missing client certificate, ...) is the
                    // client's to report: the alert must reach it.
                    Err((_, tcp)) => tls::linger(tcp).await,
                }
            });
            continue;
        }
        tokio::spawn(async move {
            let opening = tokio::select! {
                opening = h2::opening(&stream) => opening,
                // A client that connects and says nothing does not hold up a shutdown.
                _ = stopped.wait_for(|stop| *stop) => h2::Opening::Closed,
            };
            match opening {
                h2::Opening::Http2 if !options.compress => {
                    h2::serve(stream, options, stopped).await;
                }
                h2::Opening::Closed => {}
                _ => {
                    drop(stopped);
                    let connection = http.serve_connection(TokioIo::new(stream), service);
                    // A client that goes away mid-response is the client's business.
                    let _ = watcher.watch(connection.into_owned()).await;
                }
            }
        });
    }
    drop(stopped);
    let _ = stop.send(true);
    tokio::join!(connections.shutdown(), stop.closed());
    Ok(())
}

/// After a failed accept: a connection that went away before it was accepted is
/// nothing, while a lack of descriptors or memory needs a moment to pass.
async fn pause_after(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if !matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A uniformly random delay in `span` (milliseconds).
pub(crate) fn random_delay(span: Span) -> Duration {
    let ms = if span.end > span.start {
        fastrand::u64(span.start..=span.end)
    } else {
        span.start
    };
    Duration::from_millis(ms)
}
