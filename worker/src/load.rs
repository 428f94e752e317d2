//! The load generator of one worker: `connections` HTTP/1.1 connections on hyper
//! directly (no pool, no redirects, no decompression: the lean path), each sending
//! requests back to back, or at the times a fixed rate gives them. Every response is
//! recorded into HDR histograms; a summary of each second goes to the coordinator, and
//! a whole-run report at the end, so memory is the same after a minute or a day.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONNECTION, HOST, HeaderName, HeaderValue};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use nix::sys::resource::{UsageWho, getrusage};
use shared::load::{LoadReport, LoadSpec, LoadStats};
use shared::protocol::{FromWorker, PROTOCOL_VERSION, ToWorker, WorkerStats};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::LocalSet;

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
    let ready = FromWorker::Ready {
        version: PROTOCOL_VERSION,
        pid: std::process::id(),
    };
    writer.send(&ready).await?;
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let writing = tokio::spawn(writer.forward(out_rx));
    let stop = watch_for_stop(input);
    let lag = LagProbe::start();

    let state = Rc::new(State::new(spec, stop)?);
    let local = LocalSet::new();
    let (wall, total) = local
        .run_until(async {
            let ticker = tokio::task::spawn_local(tick(Rc::clone(&state), out_tx.clone()));
            let drivers: Vec<_> = (0..state.spec.connections.max(1))
                .map(|_| tokio::task::spawn_local(drive(Rc::clone(&state))))
                .collect();
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

    let usage = getrusage(UsageWho::RUSAGE_SELF).ok();
    let cpu_us = usage.map_or(0, |u| {
        let us = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
        us(u.user_time()) + us(u.system_time())
    });
    let report = LoadReport {
        stats: total,
        cpu_us,
        max_rss_kib: usage.map_or(0, |u| u.max_rss().max(0) as u64),
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

/// What the connections of one worker share (one thread: `Rc` and `Cell` suffice).
struct State {
    spec: LoadSpec,
    host: HeaderValue,
    headers: Vec<(HeaderName, HeaderValue)>,
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
    fn new(spec: LoadSpec, stop: watch::Receiver<bool>) -> Result<State, WorkerError> {
        let bad = |what: &str| WorkerError::Unexpected(format!("load spec: invalid {what}"));
        let host = HeaderValue::from_str(&spec.authority).map_err(|_| bad("authority"))?;
        let headers = spec
            .headers
            .iter()
            .map(|(k, v)| {
                let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| bad("header name"))?;
                let mut value = HeaderValue::from_str(v).map_err(|_| bad("header value"))?;
                value.set_sensitive(true);
                Ok((name, value))
            })
            .collect::<Result<_, WorkerError>>()?;
        let started = Instant::now();
        Ok(State {
            deadline: spec
                .duration_ms
                .map(|ms| started + Duration::from_millis(ms)),
            spec,
            host,
            headers,
            started,
            next: Cell::new(0),
            seconds: Cell::new(0),
            stop,
            recorder: RefCell::new(Recorder::default()),
        })
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

    fn request(&self, n: u64) -> Option<Request<Empty<Bytes>>> {
        let uri: Uri = self.spec.targets.path(n).parse().ok()?;
        let mut req = Request::get(uri).body(Empty::new()).ok()?;
        let headers = req.headers_mut();
        headers.insert(HOST, self.host.clone());
        if !self.spec.keepalive {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        for (k, v) in &self.headers {
            headers.append(k.clone(), v.clone());
        }
        Some(req)
    }

    fn record(&self, f: impl FnOnce(&mut LoadStats)) {
        f(&mut self.recorder.borrow_mut().second);
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
enum Failure {
    Connect,
    Reset,
    Read,
}

/// One connection: claim a request, send it, record the answer, again.
async fn drive(state: Rc<State>) {
    let mut conn: Option<SendRequest<Empty<Bytes>>> = None;
    let timeout = Duration::from_millis(state.spec.timeout_ms);
    while let Some(slot) = state.claim() {
        if let Some(due) = slot.due {
            tokio::time::sleep_until(due.into()).await;
        }
        let sent = Instant::now();
        let result = tokio::time::timeout(timeout, exchange(&state, &mut conn, slot.n)).await;
        let done = Instant::now();
        let us = |d: Duration| d.as_micros() as u64;
        let answered = matches!(result, Ok(Ok(_)));
        state.record(|s| match result {
            Ok(Ok(answer)) => {
                s.responses += 1;
                s.bytes += answer.bytes;
                s.count_status(answer.status, 1);
                s.latency.record(us(done - answer.sent));
                s.ttfb.record(us(answer.head - answer.sent));
                if let Some(connect) = answer.connect {
                    s.connect.record(us(connect));
                }
                if let Some(due) = slot.due {
                    s.intended.record(us(done.saturating_duration_since(due)));
                    s.lateness.record(us(sent.saturating_duration_since(due)));
                }
            }
            Ok(Err(Failure::Connect)) => s.errors.connect += 1,
            Ok(Err(Failure::Reset)) => s.errors.reset += 1,
            Ok(Err(Failure::Read)) => s.errors.read += 1,
            Err(_) => s.errors.timeout += 1,
        });
        if !answered || !state.spec.keepalive {
            conn = None;
        }
    }
}

/// A whole response.
struct Answer {
    status: u16,
    bytes: u64,
    /// When the request went out (after any connection set-up).
    sent: Instant,
    /// When the response head arrived.
    head: Instant,
    /// Connection set-up time, when this request needed a new connection.
    connect: Option<Duration>,
}

async fn exchange(
    state: &State,
    conn: &mut Option<SendRequest<Empty<Bytes>>>,
    n: u64,
) -> Result<Answer, Failure> {
    let mut connect = None;
    let sender = match conn {
        Some(sender) => sender,
        None => {
            let started = Instant::now();
            let stream = TcpStream::connect(&state.spec.authority)
                .await
                .map_err(|_| Failure::Connect)?;
            let _ = stream.set_nodelay(true);
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|_| Failure::Connect)?;
            tokio::task::spawn_local(async move {
                let _ = connection.await;
            });
            connect = Some(started.elapsed());
            conn.insert(sender)
        }
    };
    sender.ready().await.map_err(|_| Failure::Reset)?;
    let request = state.request(n).ok_or(Failure::Connect)?;
    let sent = Instant::now();
    let response = sender
        .send_request(request)
        .await
        .map_err(|_| Failure::Reset)?;
    let head = Instant::now();
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Failure::Read)?;
        if let Some(data) = frame.data_ref() {
            bytes += data.len() as u64;
        }
    }
    Ok(Answer {
        status,
        bytes,
        sent,
        head,
        connect,
    })
}
