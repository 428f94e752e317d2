//! The load generator of one worker: `connections` HTTP/1.1 connections on the lean
//! client of [`crate::client::http1`] (no pool, no redirects, no decompression), each sending
//! requests back to back, or at the times a fixed rate gives them; or, with `--http2`,
//! `connections` HTTP/2 connections with `streams` requests in flight on each
//! ([`http2`]). Every response is
//! recorded into HDR histograms; a summary of each second goes to the coordinator, and
//! a whole-run report at the end, so memory is the same after a minute or a day.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shared::loadtest::{LoadReport, LoadSpec, LoadStats, Targets};
use shared::protocol::{FromWorker, PROTOCOL_VERSION, ToWorker, WorkerStats};
use shared::template::Template;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::LocalSet;

use crate::client::Verb;
use crate::client::http1::{self, Content, ReadError};
use crate::client::transport::{Connected, Connector, Stream};
use crate::tls;

mod http2;
use crate::ipc::{FrameReader, FrameWriter, Outgoing};
use crate::lag::LagProbe;
use crate::session::WorkerError;

/// Runs one load-test session after the `Hello`.
pub async fn run(
    input: impl AsyncRead + Unpin + Send + 'static,
    output: impl AsyncWrite + Unpin + Send + 'static,
    spec: LoadSpec,
) -> Result<(), WorkerError> {
    let mut writer = FrameWriter::new(output);
    // Checked by the coordinator; a worker of another build still says why it stops.
    let verb = match Verb::new(&spec.request, false) {
        Ok(verb) => verb,
        Err(e) => {
            let fatal = FromWorker::Fatal(format!("{}: {e}", e.flag()));
            writer.send(&fatal).await?;
            return Err(e.into());
        }
    };
    let connector = match &spec.tls {
        None => Ok(Connector::plain()),
        Some(options) => {
            let alpn = match spec.http2_streams {
                Some(_) => tls::ALPN_H2,
                None => tls::ALPN_HTTP1,
            };
            Connector::with_tls(options, alpn)
        }
    };
    let connector = match connector {
        Ok(connector) => connector,
        Err(e) => {
            writer.send(&FromWorker::Fatal(e.to_string())).await?;
            return Err(e.into());
        }
    };
    let ready = FromWorker::Ready {
        version: PROTOCOL_VERSION,
        pid: std::process::id(),
    };
    writer.send(&ready).await?;
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let writing = tokio::spawn(writer.forward(out_rx));
    let stop = watch_for_stop(input);
    let mut lag = LagProbe::start();
    lag.report_to(out_tx.downgrade());

    let state = Rc::new(State::new(spec, verb, connector, stop));
    let local = LocalSet::new();
    let (wall, total) = local
        .run_until(async {
            let ticker = tokio::task::spawn_local(tick(Rc::clone(&state), out_tx.clone()));
            let connections = state.spec.connections.max(1);
            let drivers: Vec<_> = match state.spec.http2_streams {
                None => (0..connections)
                    .map(|_| tokio::task::spawn_local(drive(Rc::clone(&state))))
                    .collect(),
                Some(streams) => (0..connections)
                    .flat_map(|_| {
                        let connection = Rc::new(http2::Connection::default());
                        let state = Rc::clone(&state);
                        (0..streams.max(1)).map(move |_| {
                            tokio::task::spawn_local(http2::drive(
                                Rc::clone(&state),
                                Rc::clone(&connection),
                            ))
                        })
                    })
                    .collect(),
            };
            for driver in drivers {
                let _ = driver.await;
            }
            ticker.abort();
            let wall = state.started.elapsed();
            // The last, partial second goes out like the others.
            let last = take_second(&state);
            let msg = FromWorker::LoadTick {
                second: state.seconds.get(),
                stats: Box::new(last),
            };
            let _ = out_tx.send(Outgoing::Message(msg));
            (wall, std::mem::take(&mut state.recorder.borrow_mut().total))
        })
        .await;
    // The aborted ticker still holds a report sender until its LocalSet goes.
    drop(local);

    let (cpu_us, max_rss_kib) = shared::usage::own_usage();
    let report = LoadReport {
        stats: total,
        cpu_us,
        max_rss_kib,
        wall_us: wall.as_micros() as u64,
    };
    let requests = report.stats.finished();
    let _ = out_tx.send(Outgoing::Message(FromWorker::LoadDone(Box::new(report))));
    let stats = WorkerStats {
        requests,
        max_loop_lag_us: lag.max_us(),
    };
    let _ = out_tx.send(Outgoing::Message(FromWorker::Bye(stats)));
    drop(out_tx);
    writing
        .await
        .map_err(|e| std::io::Error::other(format!("report writer: {e}")))?
}

/// `true` once the coordinator says `Stop` or `Finish`, or goes away.
fn watch_for_stop(input: impl AsyncRead + Unpin + Send + 'static) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut reader = FrameReader::new(input);
        while let Ok(Some(msg)) = reader.next::<ToWorker>().await {
            if matches!(msg, ToWorker::Stop | ToWorker::Finish) {
                break;
            }
        }
        let _ = tx.send(true);
    });
    rx
}

/// The body of every request of a load test.
enum Body {
    /// None.
    Empty,
    /// The same bytes for every request.
    Fixed(Bytes),
    /// Rendered with the batch of each request of a plan.
    Rendered(Template),
}

/// What the connections of one worker share (one thread: `Rc` and `Cell` suffice).
struct State {
    spec: LoadSpec,
    /// Opens the connections (TLS for `https://`).
    connector: Connector,
    /// The method of every request, and what goes with it.
    verb: Verb,
    /// The body of every request.
    body: Body,
    /// Whole requests, prepared once, for a list of paths.
    prepared: Vec<Vec<u8>>,
    /// Header lines of every request, for paths rendered per request.
    header_lines: Vec<u8>,
    /// The header line that describes a body (`Content-Type`), if any.
    content_lines: Vec<u8>,
    /// The headers of every request over HTTP/2.
    h2_headers: http::HeaderMap,
    /// The URI of every request over HTTP/2, parsed once.
    h2_uris: http2::Uris,
    started: Instant,
    deadline: Option<Instant>,
    /// Number of the next request to claim.
    next: Cell<u64>,
    /// Seconds reported so far.
    seconds: Cell<u32>,
    stop: watch::Receiver<bool>,
    recorder: RefCell<Recorder>,
}

#[derive(Default)]
struct Recorder {
    second: LoadStats,
    total: LoadStats,
}

/// A claimed request: its number, and with a fixed rate, when it is due.
struct Slot {
    n: u64,
    due: Option<Instant>,
}

impl State {
    fn new(spec: LoadSpec, verb: Verb, connector: Connector, stop: watch::Receiver<bool>) -> State {
        let request = &spec.request;
        let accept = request.accept.as_deref().map(|a| ("Accept", a));
        let headers = spec.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        // Through a proxy, plain requests carry its credentials (a tunnel's do not).
        let credentials = match (&spec.proxy, &spec.tls) {
            (Some(proxy), None) => proxy.authorization.as_deref(),
            _ => None,
        };
        let proxy_header = credentials.map(|c| ("Proxy-Authorization", c));
        let all = accept.into_iter().chain(headers).chain(proxy_header);
        let header_lines = http1::header_lines(all, spec.keepalive);
        let content_type = request.content_type.as_deref();
        let content_lines = http1::header_lines(content_type.map(|t| ("Content-Type", t)), true);
        let body = match (&request.body, &spec.targets) {
            (None, _) => Body::Empty,
            (Some(t), Targets::Plan { .. }) if t.has_placeholders() => Body::Rendered(t.clone()),
            (Some(t), _) => Body::Fixed(Bytes::from(t.as_str().to_owned())),
        };
        let mut state = State {
            deadline: None,
            h2_headers: http::HeaderMap::new(),
            h2_uris: http2::Uris::Rendered(None),
            connector,
            verb,
            body,
            prepared: Vec::new(),
            header_lines,
            content_lines,
            next: Cell::new(0),
            seconds: Cell::new(0),
            stop,
            recorder: RefCell::new(Recorder::default()),
            spec,
            started: Instant::now(),
        };
        if let Targets::Paths(paths) = &state.spec.targets {
            let mut prepared = Vec::with_capacity(paths.len());
            for n in 0..paths.len() as u64 {
                let mut request = Vec::new();
                state.write(&mut request, n);
                prepared.push(request);
            }
            state.prepared = prepared;
        }
        if state.spec.http2_streams.is_some() {
            // Checked by the coordinator; needed only over HTTP/2.
            let mut headers =
                crate::client::request_headers(&state.spec.headers).unwrap_or_default();
            if let Some(accept) = &state.verb.accept {
                headers
                    .entry(http::header::ACCEPT)
                    .or_insert_with(|| accept.clone());
            }
            if let Some(kind) = &state.verb.content_type {
                headers.insert(http::header::CONTENT_TYPE, kind.clone());
            }
            state.h2_headers = headers;
            state.h2_uris = http2::Uris::new(&state.spec);
        }
        state.started = Instant::now();
        state.deadline = state
            .spec
            .duration_ms
            .map(|ms| state.started + Duration::from_millis(ms));
        state
    }

    /// The body of request number `n`, if requests have one.
    fn body(&self, n: u64) -> Option<Bytes> {
        match &self.body {
            Body::Empty => None,
            Body::Fixed(bytes) => Some(bytes.clone()),
            Body::Rendered(template) => {
                let values = self.spec.targets.values(n)?;
                Some(Bytes::from(template.render(&values)))
            }
        }
    }

    /// Writes the bytes of request number `n` into `out`.
    fn write(&self, out: &mut Vec<u8>, n: u64) {
        let path = self.spec.targets.path(n);
        let path = request_target(&self.spec, &path);
        let body = self.body(n);
        let content = self.verb.framed.then(|| Content {
            header_lines: &self.content_lines,
            bytes: body.as_deref().unwrap_or_default(),
        });
        let (method, authority) = (self.verb.method.as_str(), &self.spec.authority);
        http1::write_request(out, method, &path, authority, &self.header_lines, content);
    }

    /// The next request to send, or `None` when the run is over.
    fn claim(&self) -> Option<Slot> {
        if *self.stop.borrow() {
            return None;
        }
        let n = self.next.get();
        if self.spec.requests.is_some_and(|total| n >= total) {
            return None;
        }
        let due = self
            .spec
            .rate
            .map(|rate| self.started + Duration::from_secs_f64(n as f64 / rate));
        let limit = self.deadline;
        if limit.is_some_and(|end| due.unwrap_or_else(Instant::now) >= end) {
            return None;
        }
        self.next.set(n + 1);
        Some(Slot { n, due })
    }

    /// The bytes of request number `n`: prepared, or written into `scratch`.
    fn request<'a>(&'a self, n: u64, scratch: &'a mut Vec<u8>) -> &'a [u8] {
        if !self.prepared.is_empty() {
            return &self.prepared[(n % self.prepared.len() as u64) as usize];
        }
        scratch.clear();
        self.write(scratch, n);
        scratch
    }

    /// Records how request `slot`, sent at `sent`, went; it ends now.
    fn record_result(
        &self,
        result: Result<Result<Answer, ErrorKind>, tokio::time::error::Elapsed>,
        slot: &Slot,
        sent: Instant,
    ) {
        let done = Instant::now();
        let us = |d: Duration| d.as_micros() as u64;
        let s = &mut self.recorder.borrow_mut().second;
        match result {
            Ok(Ok(answer)) => {
                s.responses += 1;
                s.bytes += answer.bytes;
                s.count_status(answer.status, 1);
                s.latency.record(us(done - answer.sent));
                s.ttfb
                    .record(us(answer.first_byte.saturating_duration_since(answer.sent)));
                if let Some(connect) = answer.connect {
                    s.connect.record(us(connect.tcp));
                    if let Some(handshake) = connect.handshake {
                        s.handshake.record(us(handshake));
                    }
                }
                if let Some(due) = slot.due {
                    s.intended.record(us(done.saturating_duration_since(due)));
                    s.lateness.record(us(sent.saturating_duration_since(due)));
                }
            }
            Ok(Err(ErrorKind::Connect)) => s.errors.connect += 1,
            Ok(Err(ErrorKind::Tls)) => s.errors.tls += 1,
            Ok(Err(ErrorKind::Reset | ErrorKind::Closed)) => s.errors.reset += 1,
            Ok(Err(ErrorKind::Read)) => s.errors.read += 1,
            Err(_) => s.errors.timeout += 1,
        }
    }
}

/// What the request line names: the path, or through a proxy (plain HTTP) the whole
/// URL.
fn request_target<'a>(spec: &LoadSpec, path: &'a str) -> std::borrow::Cow<'a, str> {
    match (&spec.proxy, &spec.tls) {
        (Some(_), None) => format!("http://{}{path}", spec.authority).into(),
        _ => path.into(),
    }
}

/// The statistics of the second that is ending, counted into the total.
fn take_second(state: &State) -> LoadStats {
    let mut rec = state.recorder.borrow_mut();
    let stats = std::mem::take(&mut rec.second);
    rec.total.merge(&stats);
    stats
}

/// Sends the summary of each second to the coordinator.
async fn tick(state: Rc<State>, out: mpsc::UnboundedSender<Outgoing>) {
    let mut every = tokio::time::interval_at(
        tokio::time::Instant::from_std(state.started) + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    loop {
        every.tick().await;
        let msg = FromWorker::LoadTick {
            second: state.seconds.get(),
            stats: Box::new(take_second(&state)),
        };
        if out.send(Outgoing::Message(msg)).is_err() {
            return;
        }
        state.seconds.set(state.seconds.get() + 1);
    }
}

/// How one request failed.
enum ErrorKind {
    Connect,
    /// The connection ended before any byte of the answer (counted as a reset).
    Closed,
    /// The TLS handshake failed.
    Tls,
    Reset,
    Read,
}

/// One open connection and its read buffer.
struct Conn {
    stream: Stream,
    buf: Vec<u8>,
}

/// One connection: claim a request, send it, record the answer, again.
async fn drive(state: Rc<State>) {
    let mut conn: Option<Conn> = None;
    let mut scratch = Vec::new();
    let timeout = Duration::from_millis(state.spec.timeout_ms);
    while let Some(slot) = state.claim() {
        if let Some(due) = slot.due {
            tokio::time::sleep_until(due.into()).await;
            // A connection that got bytes (or its end) while it waited is not reused:
            // they would be taken for the next answer.
            if conn.as_mut().is_some_and(|c| !c.stream.is_quiet()) {
                conn = None;
            }
        }
        let sent = Instant::now();
        let reused = conn.is_some();
        let mut result =
            tokio::time::timeout(timeout, exchange(&state, &mut conn, &mut scratch, slot.n)).await;
        // A kept connection the server closed while it idled (a proxy or server that
        // keeps none, without saying so): the request goes again on a new one, as
        // HTTP clients do; it is not the server failing.
        if reused && matches!(result, Ok(Err(ErrorKind::Closed))) {
            conn = None;
            result =
                tokio::time::timeout(timeout, exchange(&state, &mut conn, &mut scratch, slot.n))
                    .await;
        }
        let reusable = matches!(&result, Ok(Ok(answer)) if answer.keep_alive);
        state.record_result(result, &slot, sent);
        if !reusable || !state.spec.keepalive {
            conn = None;
        }
    }
}

/// A whole response.
struct Answer {
    status: u16,
    bytes: u64,
    keep_alive: bool,
    /// When the request went out (after any connection set-up).
    sent: Instant,
    /// When the first byte of the response arrived.
    first_byte: Instant,
    /// Connection set-up times, when this request needed a new connection.
    connect: Option<SetUp>,
}

/// What setting up a connection took.
#[derive(Clone, Copy)]
struct SetUp {
    /// The TCP connect.
    tcp: Duration,
    /// The TLS handshake after it.
    handshake: Option<Duration>,
}

impl State {
    /// A new connection to the target, and what setting it up took.
    async fn connect(&self) -> Result<(Stream, SetUp), ErrorKind> {
        let timeout = Duration::from_millis(self.spec.timeout_ms);
        let tls = self.spec.tls.is_some();
        let Connected {
            stream,
            tcp,
            handshake,
        } = self
            .connector
            .connect(&self.spec.authority, tls, self.spec.proxy.as_ref(), timeout)
            .await
            .map_err(|e| match e {
                crate::client::transport::ConnectError::Tcp(_)
                | crate::client::transport::ConnectError::Proxy { .. } => ErrorKind::Connect,
                crate::client::transport::ConnectError::Tls(..) => ErrorKind::Tls,
            })?;
        Ok((stream, SetUp { tcp, handshake }))
    }
}

async fn exchange(
    state: &State,
    conn: &mut Option<Conn>,
    scratch: &mut Vec<u8>,
    n: u64,
) -> Result<Answer, ErrorKind> {
    let mut connect = None;
    let conn = match conn {
        Some(conn) => conn,
        None => {
            let (stream, set_up) = state.connect().await?;
            connect = Some(set_up);
            conn.insert(Conn {
                stream,
                buf: Vec::with_capacity(16 * 1024),
            })
        }
    };
    let request = state.request(n, scratch);
    let sent = Instant::now();
    conn.stream
        .write_all(request)
        .await
        .map_err(|_| ErrorKind::Closed)?;
    let response = if state.verb.is_head() {
        http1::read_head_response(&mut conn.stream, &mut conn.buf, false).await
    } else {
        http1::read_response(&mut conn.stream, &mut conn.buf, http1::Keep::Count).await
    };
    let response = response.map_err(|e| match e {
        ReadError::Closed | ReadError::Reset => ErrorKind::Closed,
        ReadError::Incomplete
        | ReadError::Unterminated
        | ReadError::Malformed(_)
        | ReadError::TooLarge(_) => ErrorKind::Read,
    })?;
    Ok(Answer {
        status: response.status,
        bytes: response.body,
        keep_alive: response.keep_alive,
        sent,
        first_byte: response.first_byte,
        connect,
    })
}
