//! Scrape fetches of plain `http://` URLs on the lean HTTP/1.1 client of
//! [`crate::http1`]: a keep-alive pool per worker, no read buffer while a response is
//! awaited (ten thousand requests in flight cost their sockets, not 16 KiB each), and
//! redirects followed by hand. `https://` URLs, and runs that ask for compressed bodies,
//! go through reqwest instead.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use shared::config::WorkerConfig;
use shared::http_url::split_http_url;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::budget::Charge;
use crate::http1::{self, Keep, ReadError};
use crate::redirect;

/// A response kept whole.
pub struct Fetched {
    /// HTTP status.
    pub status: u16,
    /// The body.
    pub body: Bytes,
    /// Its `Retry-After` header, if any.
    pub retry_after: Option<String>,
}

/// How a plain fetch failed.
#[derive(Debug)]
pub enum PlainError {
    /// No connection could be made.
    Connect(String),
    /// The connection failed before a whole response head came.
    Reset(String),
    /// The response was cut off or garbled.
    Read(String),
    /// The body is over the limit.
    TooLarge(u64),
    /// A redirect that cannot be followed (too many, or a bad `Location`).
    Redirect(String),
    /// The URL (first or after a redirect) needs the full client: TLS or a
    /// compressed body.
    NeedsFullClient(Handoff),
}

/// A request the full client takes over from a lean one.
#[derive(Debug)]
pub struct Handoff {
    /// The URL to fetch.
    pub url: String,
    /// Redirects followed to reach it.
    pub hops: u32,
}

/// The client of one worker.
pub struct PlainClient {
    /// Idle keep-alive connections by `host:port`.
    idle: Mutex<HashMap<String, Vec<TcpStream>>>,
    /// Whether connections are worth keeping: only while more jobs are waiting.
    retain: AtomicBool,
    /// Header lines sent to the job's own origin (`User-Agent`, `--header`s).
    extra: Vec<u8>,
    /// Header lines sent after a redirect to another origin (`User-Agent`).
    anonymous: Vec<u8>,
    connect_timeout: Duration,
    max_redirects: u32,
    max_idle: usize,
}

impl PlainClient {
    /// A client for `config` (whose headers were checked by the coordinator).
    pub fn new(config: &WorkerConfig) -> PlainClient {
        let agent = std::iter::once(("User-Agent", config.user_agent.as_str()));
        let headers = config.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let extra = http1::header_lines(agent.clone().chain(headers), true);
        PlainClient {
            idle: Mutex::new(HashMap::new()),
            retain: AtomicBool::new(true),
            extra,
            anonymous: http1::header_lines(agent, true),
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            max_redirects: config.max_redirects,
            max_idle: config.concurrency as usize,
        }
    }

    fn settle(
        &self,
        authority: &str,
        stream: TcpStream,
        result: Result<(Fetched, Option<String>, bool), PlainError>,
    ) -> Result<(Fetched, Option<String>), PlainError> {
        let (fetched, location, keep_alive) = result?;
        if keep_alive {
            self.put_idle(authority, stream);
        }
        Ok((fetched, location))
    }

    async fn once(
        &self,
        stream: &mut TcpStream,
        authority: &str,
        path: &str,
        max_body: u64,
        trusted: bool,
        charge: &mut Charge,
    ) -> Result<(Fetched, Option<String>, bool), PlainError> {
        let mut request = Vec::new();
        let headers = if trusted {
            &self.extra
        } else {
            &self.anonymous
        };
        http1::write_request(&mut request, path, authority, headers);
        stream
            .write_all(&request)
            .await
            .map_err(|e| PlainError::Reset(e.to_string()))?;
        drop(request);
        // Nothing is allocated for the response until it starts to arrive. Polling for
        // readiness keeps no waiter node in the task, unlike `readable()`: a smaller
        // task for every request in flight.
        std::future::poll_fn(|cx| stream.poll_read_ready(cx))
            .await
            .map_err(|e| PlainError::Reset(e.to_string()))?;
        let mut buf = Vec::new();
        let mut body = Vec::new();
        // Boxed: the reader's state exists only while a response streams in, not for the
        // seconds a slow server takes to answer.
        let response = Box::pin(http1::read_response(
            stream,
            &mut buf,
            Keep::Into(&mut body, max_body, Some(charge)),
        ))
        .await
        .map_err(|e| match e {
            ReadError::Closed | ReadError::Reset => PlainError::Reset(e.describe()),
            ReadError::Incomplete | ReadError::Malformed(_) => PlainError::Read(e.describe()),
            ReadError::TooLarge(n) => PlainError::TooLarge(n),
        })?;
        if response.encoded {
            return Err(PlainError::NeedsFullClient(Handoff {
                url: format!("http://{authority}{path}"),
                hops: 0,
            }));
        }
        let location = response
            .location
            .filter(|_| redirect::is_followed(response.status));
        let fetched = Fetched {
            status: response.status,
            body: Bytes::from(body),
            retry_after: response.retry_after,
        };
        Ok((fetched, location, response.keep_alive))
    }

    async fn connect(&self, authority: &str) -> Result<TcpStream, PlainError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(authority))
            .await
            .map_err(|_| PlainError::Connect(format!("connecting to {authority} timed out")))?
            .map_err(|e| PlainError::Connect(format!("connecting to {authority}: {e}")))?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Keeps finished connections for reuse (`true`), or closes them (`false`, which
    /// also closes the idle ones). Ten thousand connections left idle at the end of a
    /// run would otherwise all be closed at once when the worker exits.
    pub fn retain_connections(&self, retain: bool) {
        if self.retain.swap(retain, Ordering::Relaxed) != retain && !retain {
            self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }

    /// An idle connection to `authority` that is still quiet: one the server closed,
    /// or sent bytes on that nobody asked for, is dropped.
    fn take_idle(&self, authority: &str) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let conns = idle.get_mut(authority)?;
        while let Some(stream) = conns.pop() {
            if is_quiet(&stream) {
                return Some(stream);
            }
        }
        None
    }

    fn put_idle(&self, authority: &str, stream: TcpStream) {
        if !self.retain.load(Ordering::Relaxed) {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let conns = idle.entry(authority.to_owned()).or_default();
        if conns.len() < self.max_idle {
            conns.push(stream);
        }
    }
}

/// Whether a connection that waits for its next request has nothing to read: no byte
/// and no end of stream. Asked of the socket itself (a peek that does not wait), not
/// of the event loop's readiness, which may not have seen the latest bytes yet.
pub fn is_quiet(stream: &TcpStream) -> bool {
    use nix::sys::socket::{MsgFlags, recv};
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
    matches!(
        recv(stream.as_raw_fd(), &mut byte, flags),
        Err(nix::errno::Errno::EAGAIN)
    )
}

/// One request and response of a lean client.
pub trait Exchange {
    /// GETs `path` from `authority`: the response, and the `Location` of a redirect.
    /// The `--header`s go along only when `trusted` (see [`crate::redirect`]); the
    /// body is kept within the worker's budget through `charge`.
    fn exchange(
        &self,
        authority: &str,
        path: &str,
        max_body: u64,
        trusted: bool,
        charge: &mut Charge,
    ) -> impl Future<Output = Result<(Fetched, Option<String>), PlainError>> + Send;

    /// Redirects followed at most.
    fn max_redirects(&self) -> u32;
}

impl Exchange for PlainClient {
    /// One request and response; a pooled connection that turns out to be closed is
    /// replaced by a fresh one once.
    async fn exchange(
        &self,
        authority: &str,
        path: &str,
        max_body: u64,
        trusted: bool,
        charge: &mut Charge,
    ) -> Result<(Fetched, Option<String>), PlainError> {
        if let Some(mut stream) = self.take_idle(authority) {
            let result = self
                .once(&mut stream, authority, path, max_body, trusted, charge)
                .await;
            match result {
                Err(PlainError::Reset(_)) => {}
                result => return self.settle(authority, stream, result),
            }
        }
        let mut stream = Box::pin(self.connect(authority)).await?;
        let result = self
            .once(&mut stream, authority, path, max_body, trusted, charge)
            .await;
        self.settle(authority, stream, result)
    }

    fn max_redirects(&self) -> u32 {
        self.max_redirects
    }
}

/// GETs `url` (an `http://` URL) through `client`, following its redirects; the
/// `--header`s go to `url`'s origin only, or everywhere when `trust_all`. The clients
/// have no `get` of their own: an `async fn` around this one would add a layer of
/// state to every request in flight.
pub async fn follow_redirects(
    client: &impl Exchange,
    url: &str,
    max_body: u64,
    trust_all: bool,
    charge: &mut Charge,
) -> Result<Fetched, PlainError> {
    // Owned only after a redirect: a request in flight holds no copy of its URL.
    let mut redirected: Option<(String, bool)> = None;
    let mut hops = 0;
    loop {
        let (at, trusted) = match &redirected {
            Some((next, trusted)) => (next.as_str(), *trusted),
            None => (url, true),
        };
        let (authority, path) = split_http_url(at).map_err(|_| {
            PlainError::NeedsFullClient(Handoff {
                url: at.to_owned(),
                hops,
            })
        })?;
        let (fetched, location) = client
            .exchange(&authority, &path, max_body, trusted, charge)
            .await?;
        let Some(location) = location else {
            return Ok(fetched);
        };
        // The redirect's own body is not kept.
        drop(fetched);
        charge.release();
        if hops == client.max_redirects() {
            return Err(PlainError::Redirect(format!(
                "more than {} redirects (--max-redirects)",
                client.max_redirects()
            )));
        }
        hops += 1;
        let next = String::from(redirect::resolve(at, &location)?);
        let trusted = trust_all || redirect::same_origin(url, &next);
        redirected = Some((next, trusted));
    }
}
