//! The built-in target: a paged crypto tickers API like the one in the seed article,
//! `GET /api/tickers/?start=S&limit=L`, answering deterministic JSON (the same query
//! always gets the same bytes) after a configurable random delay.
//!
//! [`Faults`] make it misbehave on purpose, over real sockets, so that clients' retries
//! and error handling can be tested: 500s, 429 with `Retry-After`, dropped connections,
//! truncated bodies and stalls.

use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::time::Duration;

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use shared::plan::Span;
use tokio::net::TcpListener;
use tower_http::compression::CompressionLayer;
use tower_http::set_header::SetResponseHeaderLayer;

/// Largest `limit` one request may ask for.
pub const MAX_LIMIT: u64 = 10_000;

/// Fixed `info.time` so that responses are byte-for-byte reproducible.
const EPOCH: u64 = 1_700_000_000;

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
        }
    }
}

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default)]
    start: u64,
    #[serde(default = "default_limit")]
    limit: u64,
    /// Redirects to answer with before the page itself, to exercise clients.
    #[serde(default)]
    hops: u32,
    /// `csv` for a CSV page instead of JSON.
    format: Option<String>,
}

fn default_limit() -> u64 {
    100
}

/// The HTTP routes of the built-in API.
pub fn app(options: Options) -> Router {
    let mut router = Router::new()
        .route("/api/tickers/", get(tickers))
        .route("/api/tickers", get(tickers))
        .with_state(options);
    if options.faults.drop > 0.0 {
        router = router.layer(SetResponseHeaderLayer::overriding(
            header::CONNECTION,
            HeaderValue::from_static("close"),
        ));
    }
    if options.compress {
        router = router.layer(CompressionLayer::new());
    }
    router
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

/// Streams one HTTP/2 connection may carry at once. hyper's default of 200 would queue
/// all but 200 of the seed's ten thousand requests behind the first ones; this is a
/// test target, made to take as many as a client sends.
const MAX_STREAMS: u32 = 1_000_000;

/// Serves the API on `listener` until `shutdown` completes, then lets the connections
/// finish what they are answering. Each connection speaks HTTP/1.1 or, when it opens
/// with the HTTP/2 preface (h2c with prior knowledge), HTTP/2.
pub async fn serve(
    listener: TcpListener,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let service = TowerToHyperService::new(app(options));
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http2().max_concurrent_streams(MAX_STREAMS);
    let connections = GracefulShutdown::new();
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
        let connection = http
            .serve_connection(TokioIo::new(stream), service.clone())
            .into_owned();
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            // A client that goes away mid-response is the client's business.
            let _ = connection.await;
        });
    }
    connections.shutdown().await;
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

async fn tickers(State(options): State<Options>, Query(page): Query<Page>) -> Response {
    if page.limit > MAX_LIMIT {
        let msg = format!("limit must be at most {MAX_LIMIT}\n");
        return (StatusCode::BAD_REQUEST, msg).into_response();
    }
    if page.hops > 0 {
        let next = format!(
            "/api/tickers/?start={}&limit={}&hops={}",
            page.start,
            page.limit,
            page.hops - 1
        );
        return (StatusCode::FOUND, [(header::LOCATION, next)]).into_response();
    }
    let faults = options.faults;
    if Faults::hit(faults.throttle) {
        let wait = faults.retry_after_s.to_string();
        return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, wait)]).into_response();
    }
    if Faults::hit(faults.fail) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "injected failure\n").into_response();
    }
    let mut delay = random_delay(options.delay_ms);
    if Faults::hit(faults.stall) {
        delay += Duration::from_millis(faults.stall_ms);
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (body, kind) = match page.format.as_deref() {
        None | Some("json") => (
            tickers_json(page.start, page.limit, options.coins),
            "application/json",
        ),
        Some("csv") => (
            tickers_csv(page.start, page.limit, options.coins),
            "text/csv",
        ),
        Some(other) => {
            let msg = format!("unknown format `{other}`: use json or csv\n");
            return (StatusCode::BAD_REQUEST, msg).into_response();
        }
    };
    if Faults::hit(faults.truncate) {
        return truncated(body);
    }
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// The whole length announced, half the bytes sent, then the connection fails.
fn truncated(body: String) -> Response {
    let len = body.len();
    let mut half = body.into_bytes();
    half.truncate(len / 2);
    // The failure comes a moment after the first half, so that the half is on the
    // wire before the connection is torn down.
    let chunks = futures_util::stream::unfold(Some(half), |half| async move {
        match half {
            Some(half) => Some((Ok::<_, io::Error>(half), None)),
            None => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let cut = io::Error::new(io::ErrorKind::ConnectionAborted, "injected truncation");
                Some((Err(cut), None))
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        Body::from_stream(chunks),
    )
        .into_response()
}

fn random_delay(span: Span) -> Duration {
    let ms = if span.end > span.start {
        fastrand::u64(span.start..=span.end)
    } else {
        span.start
    };
    Duration::from_millis(ms)
}

/// The exact body served for `?start=start&limit=limit` when `coins` coins exist.
pub fn tickers_json(start: u64, limit: u64, coins: u64) -> String {
    let end = start.saturating_add(limit).min(coins);
    let mut out = String::with_capacity(320 * (end.saturating_sub(start) as usize) + 64);
    out.push_str("{\"data\":[");
    for (i, n) in (start..end).enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_coin(&mut out, n);
    }
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "],\"info\":{{\"coins_num\":{coins},\"time\":{EPOCH}}}}}"
    );
    out
}

/// splitmix64: a fixed, well-mixed function of the coin number.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn symbol(h: u64) -> String {
    (0..3 + (h % 2) as u32)
        .map(|i| char::from(b'A' + ((h >> (8 * i + 8)) % 26) as u8))
        .collect()
}

/// The exact body served for `?start=start&limit=limit&format=csv`.
pub fn tickers_csv(start: u64, limit: u64, coins: u64) -> String {
    let end = start.saturating_add(limit).min(coins);
    let mut out = String::from("rank,nameid,symbol\n");
    for n in start..end {
        let _ = writeln!(out, "{},coin-{n},{}", n + 1, symbol(mix(n)));
    }
    out
}

/// One coin's object. Written with `itoa` rather than `format!`: the server answers
/// tens of thousands of pages a second here, and formatting was a third of its user time.
fn write_coin(out: &mut String, n: u64) {
    let h = mix(n);
    let cents = h % 10_000_000 + 1;
    let supply = (h >> 20) % 1_000_000_000 + 1_000;
    let change = |shift: u32| ((h >> shift) % 2001) as i64 - 1000;
    let mut num = itoa::Buffer::new();
    out.push_str("{\"id\":\"");
    out.push_str(num.format(n + 90));
    out.push_str("\",\"symbol\":\"");
    for i in 0..3 + (h % 2) as u32 {
        out.push(char::from(b'A' + ((h >> (8 * i + 8)) % 26) as u8));
    }
    out.push_str("\",\"name\":\"Coin ");
    out.push_str(num.format(n));
    out.push_str("\",\"nameid\":\"coin-");
    out.push_str(num.format(n));
    out.push_str("\",\"rank\":");
    out.push_str(num.format(n + 1));
    out.push_str(",\"price_usd\":\"");
    push_hundredths(out, cents as i64);
    out.push_str("\",\"percent_change_24h\":\"");
    push_hundredths(out, change(11));
    out.push_str("\",\"percent_change_1h\":\"");
    push_hundredths(out, change(23));
    out.push_str("\",\"percent_change_7d\":\"");
    push_hundredths(out, change(37));
    out.push_str("\",\"market_cap_usd\":\"");
    out.push_str(num.format((cents / 100).saturating_mul(supply)));
    out.push_str(".00\",\"csupply\":\"");
    out.push_str(num.format(supply));
    out.push_str(".00\",\"tsupply\":\"");
    out.push_str(num.format(supply));
    out.push_str("\"}");
}

/// `v` hundredths as a decimal with two places: `-5.07`, `0.40`, `216.39`.
fn push_hundredths(out: &mut String, v: i64) {
    if v < 0 {
        out.push('-');
    }
    let v = v.unsigned_abs();
    out.push_str(itoa::Buffer::new().format(v / 100));
    out.push('.');
    out.push(char::from(b'0' + (v % 100 / 10) as u8));
    out.push(char::from(b'0' + (v % 10) as u8));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of every page are part of the API: runs are verified against them.
    #[test]
    fn pages_keep_their_exact_bytes() {
        let fnv = |b: &[u8]| {
            b.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &x| {
                (h ^ x as u64).wrapping_mul(0x100_0000_01b3)
            })
        };
        let big = tickers_json(0, 100_000, 1_000_000_000);
        assert_eq!(
            (big.len(), fnv(big.as_bytes())),
            (27_483_346, 0xad4b_69f1_27fa_927e)
        );
        assert_eq!(
            tickers_json(998, 10, 1000),
            r#"{"data":[{"id":"1088","symbol":"ZWX","name":"Coin 998","nameid":"coin-998","rank":999,"price_usd":"21670.39","percent_change_24h":"-5.67","percent_change_1h":"-0.47","percent_change_7d":"2.39","market_cap_usd":"13937699613310.00","csupply":"643179493.00","tsupply":"643179493"},{"id":"1089","symbol":"HWU","name":"Coin 999","nameid":"coin-999","rank":1000,"price_usd":"49520.93","percent_change_24h":"-4.60","percent_change_1h":"-7.47","percent_change_7d":"-7.72","market_cap_usd":"5182353223920.00","csupply":"104651721.00","tsupply":"104651721"}],"info":{"coins_num":1000,"time":1700000000}}"#
        );
    }

    #[test]
    fn same_page_gives_the_same_bytes() {
        assert_eq!(tickers_json(100, 10, 1_000), tickers_json(100, 10, 1_000));
        assert_ne!(tickers_json(100, 10, 1_000), tickers_json(110, 10, 1_000));
    }

    #[test]
    fn page_holds_limit_coins_and_stops_at_the_end() {
        let page = tickers_json(0, 10, 1_000);
        assert_eq!(page.matches("\"nameid\"").count(), 10);
        assert!(page.contains("\"nameid\":\"coin-9\"") && !page.contains("coin-10\""));
        assert_eq!(
            tickers_json(995, 10, 1_000).matches("\"nameid\"").count(),
            5
        );
        assert_eq!(
            tickers_json(2_000, 10, 1_000).matches("\"nameid\"").count(),
            0
        );
    }

    #[test]
    fn csv_pages_list_the_same_coins() {
        let csv = tickers_csv(5, 3, 1_000);
        assert_eq!(csv.lines().count(), 4);
        assert!(csv.starts_with("rank,nameid,symbol\n6,coin-5,"));
        assert!(
            tickers_json(5, 3, 1_000)
                .contains(csv.lines().nth(1).unwrap().rsplit(',').next().unwrap())
        );
    }

    #[test]
    fn delay_stays_inside_its_span() {
        for _ in 0..100 {
            let d = random_delay(Span { start: 2, end: 4 }).as_millis();
            assert!((2..=4).contains(&d));
        }
        assert!(random_delay(Span { start: 0, end: 0 }).is_zero());
    }
}
