//! The lean HTTP/1.1 client for `http://` and `https://` URLs, on the wire reader of
//! [`super::http1`]: a keep-alive pool per worker, and no read buffer while a response
//! is awaited (ten thousand requests in flight cost their sockets, not 16 KiB each).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use shared::config::{TlsOptions, WorkerConfig};
use shared::proxy::{Proxy, ProxyConfig};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use super::h2c::H2cClient;
use super::http1::{self, Content, Keep, ReadError};
use super::transport::{Connector, Stream, host_of};
use super::{Ask, ClientError, Exchange, Response, Verb, conditional, redirect};
use crate::budget::{Budget, Charge};
use crate::tls;

/// TLS hosts remembered to have answered ALPN with HTTP/1.1; past this many the list
/// starts again (a forgotten host costs its next burst one handshake's wait).
const KNOWN_HTTP1: usize = 10_000;

/// The HTTP/1.1 client of one worker.
pub struct Http1Client {
    /// Idle keep-alive connections by `host:port`: plain ones, then TLS ones.
    idle: [Mutex<HashMap<String, Vec<Stream>>>; 2],
    /// Connections without TLS.
    plain: Connector,
    /// What TLS trusts; its connector is made on the first `https://` URL, so that a
    /// run without one never loads the system's certificates.
    tls_options: TlsOptions,
    tls: OnceLock<Result<Connector, String>>,
    /// The forward proxies.
    proxy: ProxyConfig,
    /// Whether connections are worth keeping: while more jobs may come, and after that
    /// while some job has not asked for its connection yet (`unstarted`).
    retain: AtomicBool,
    /// Jobs handed to the worker's fetcher that have not asked this client for a
    /// connection yet.
    unstarted: AtomicUsize,
    /// Header lines sent to the job's own origin (`User-Agent`, `--header`s).
    extra: Vec<u8>,
    /// Header lines sent after a redirect to another origin (`User-Agent`, and the
    /// `Accept` of `--data-json`).
    anonymous: Vec<u8>,
    /// The run's method, and what goes with it.
    verb: Verb,
    /// The header line that describes a body (`Content-Type`), when there is one.
    content_lines: Vec<u8>,
    connect_timeout: Duration,
    max_redirects: u32,
    max_idle: usize,
    /// The worker's body budget.
    budget: Arc<Budget>,
    /// The HTTP/2 client of the TLS hosts that choose HTTP/2 by ALPN.
    h2: Option<H2cClient>,
    /// TLS hosts whose first connection is being made while HTTP/2 may be chosen: the
    /// requests that come meanwhile wait for its ALPN answer instead of each making a
    /// connection (and a handshake) that HTTP/2 would not need. Each semaphore is
    /// closed once the answer is in.
    probing: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// TLS hosts that answered ALPN with HTTP/1.1: their requests connect side by side.
    http1_hosts: Mutex<HashSet<String>>,
}

/// What [`Http1Client::open_tls`] made: an HTTP/1.1 connection, or one that the HTTP/2
/// client now holds (the host chose HTTP/2).
enum Opened<'a> {
    Http1(Stream),
    Http2(&'a H2cClient),
}

/// A request's part in finding out what a TLS host speaks.
enum Probe<'a> {
    /// This request makes the first connection; others wait until it drops.
    Mine(ProbeGuard<'a>),
    /// Another request's connection will tell: wait until the semaphore is closed.
    Wait(Arc<Semaphore>),
}

/// Ends a probe when dropped: what the connection said (HTTP/2 adopted, or HTTP/1.1
/// remembered) is in place by then, or it failed and the waiters connect on their own.
struct ProbeGuard<'a> {
    client: &'a Http1Client,
    authority: String,
    done: Arc<Semaphore>,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        let mut probing = self
            .client
            .probing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        probing.remove(&self.authority);
        self.done.close();
    }
}

impl Http1Client {
    /// A client for `config` that sends `verb`, whose bodies are charged to `budget`.
    /// A client for `config` whose bodies are charged to `budget`; with `h2`, TLS
    /// offers HTTP/2 too (ALPN), and the hosts that choose it are served by `h2`.
    pub fn new(
        config: &WorkerConfig,
        verb: Verb,
        budget: Arc<Budget>,
        h2: Option<H2cClient>,
    ) -> Http1Client {
        let agent = std::iter::once(("User-Agent", config.user_agent.as_str()));
        let accept = config.request.accept.as_deref().map(|a| ("Accept", a));
        let everywhere = agent.chain(accept);
        let headers = config.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let extra = http1::header_lines(everywhere.clone().chain(headers), true);
        let content_type = config.request.content_type.as_deref();
        Http1Client {
            idle: Default::default(),
            plain: Connector::plain(),
            tls_options: config.tls.clone(),
            tls: OnceLock::new(),
            proxy: config.proxy.clone(),
            retain: AtomicBool::new(true),
            unstarted: AtomicUsize::new(0),
            extra,
            anonymous: http1::header_lines(everywhere, true),
            content_lines: http1::header_lines(content_type.map(|t| ("Content-Type", t)), true),
            verb,
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            max_redirects: config.max_redirects,
            max_idle: config.concurrency as usize,
            budget,
            h2,
            probing: Mutex::default(),
            http1_hosts: Mutex::default(),
        }
    }

    /// Whether this request connects to TLS host `authority` at once, or first waits
    /// for another request's connection to say whether the host speaks HTTP/2.
    fn probe(&self, authority: &str) -> Probe<'_> {
        let mut probing = self.probing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(done) = probing.get(authority) {
            return Probe::Wait(Arc::clone(done));
        }
        let done = Arc::new(Semaphore::new(0));
        probing.insert(authority.to_owned(), Arc::clone(&done));
        Probe::Mine(ProbeGuard {
            client: self,
            authority: authority.to_owned(),
            done,
        })
    }

    fn speaks_http1(&self, authority: &str) -> bool {
        let known = self.http1_hosts.lock().unwrap_or_else(|e| e.into_inner());
        known.contains(authority)
    }

    fn remember_http1(&self, authority: &str) {
        let mut known = self.http1_hosts.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() >= KNOWN_HTTP1 {
            known.clear();
        }
        known.insert(authority.to_owned());
    }

    fn settle(
        &self,
        authority: &str,
        stream: Stream,
        result: Result<(Response, Option<String>, bool), ClientError>,
    ) -> Result<(Response, Option<String>), ClientError> {
        let (fetched, location, keep_alive) = result?;
        if keep_alive {
            self.put_idle(authority, stream);
        }
        Ok((fetched, location))
    }

    /// Writes the request `ask` says into `out`; through `proxy`, naming the whole URL
    /// and carrying the proxy's credentials; conditional when its payload says so.
    fn write(
        &self,
        out: &mut Vec<u8>,
        (authority, path): (&str, &str),
        ask: Ask<'_>,
        trusted: bool,
        proxy: Option<&Proxy>,
    ) {
        let headers = if trusted {
            &self.extra
        } else {
            &self.anonymous
        };
        let conditions = match ask {
            Ask::Own(payload) => payload.validators(),
            Ask::Get => None,
        };
        let target;
        let (path, credentials) = match proxy {
            Some(proxy) => {
                target = format!("http://{authority}{path}");
                (target.as_str(), proxy.authorization.as_deref())
            }
            None => (path, None),
        };
        // The prepared lines as they are, unless this request adds some of its own.
        let with_more;
        let headers = if credentials.is_some() || conditions.is_some() {
            let mut lines = headers.clone();
            if let Some(credentials) = credentials {
                lines.extend_from_slice(b"Proxy-Authorization: ");
                lines.extend_from_slice(credentials.as_bytes());
                lines.extend_from_slice(b"\r\n");
            }
            if let Some(conditions) = conditions {
                conditional::append_lines(conditions, &mut lines);
            }
            with_more = lines;
            &with_more
        } else {
            headers
        };
        match ask {
            Ask::Get => http1::write_request(out, "GET", path, authority, headers, None),
            Ask::Own(body) => {
                let content = self.verb.framed.then_some(Content {
                    header_lines: &self.content_lines,
                    bytes: body.bytes(),
                });
                let method = self.verb.method.as_str();
                http1::write_request(out, method, path, authority, headers, content);
            }
        }
    }

    async fn once(
        &self,
        stream: &mut Stream,
        authority: &str,
        path: &str,
        ask: Ask<'_>,
        max_body: u64,
        trusted: bool,
    ) -> Result<(Response, Option<String>, bool), ClientError> {
        let mut request = Vec::new();
        let proxy = self.proxied(&*stream, authority);
        self.write(&mut request, (authority, path), ask, trusted, proxy);
        let written = stream.write_all(&request).await;
        drop(request);
        if let Err(e) = written {
            return Err(stream.failure(authority, ClientError::Reset(e.to_string())));
        }
        // Nothing is allocated for the response until it starts to arrive. Polling for
        // readiness keeps no waiter node in the task, unlike `readable()`: a smaller
        // task for every request in flight. (TLS may hold decrypted bytes that the
        // socket no longer shows: its reads go straight to the reader.)
        if let Stream::Plain(tcp) = stream {
            std::future::poll_fn(|cx| tcp.poll_read_ready(cx))
                .await
                .map_err(|e| ClientError::Reset(e.to_string()))?;
        }
        // Boxed: the reader's state, its buffers and the body's charge exist only while
        // a response streams in, not for the seconds a slow server takes to answer.
        let read = Box::pin(async {
            let mut buf = Vec::new();
            let mut body = Vec::new();
            let mut charge = Charge::new(&self.budget);
            let head = if ask != Ask::Get && self.verb.is_head() {
                http1::read_head_response(&mut *stream, &mut buf, true).await?
            } else {
                let keep = Keep::Into(&mut body, max_body, Some(&mut charge));
                http1::read_response(&mut *stream, &mut buf, keep).await?
            };
            Ok((head, body, charge))
        })
        .await;
        let (response, body, charge) = match read {
            Ok(read) => read,
            Err(e) => {
                let error = match e {
                    ReadError::Closed | ReadError::Reset => ClientError::Reset(e.describe()),
                    ReadError::Incomplete | ReadError::Unterminated | ReadError::Malformed(_) => {
                        ClientError::Read(e.describe())
                    }
                    ReadError::TooLarge(n) => ClientError::TooLarge(n),
                };
                // A fatal alert (a refused client certificate) reads as a reset.
                return Err(stream.failure(authority, error));
            }
        };
        if response.encoded {
            let scheme = match stream {
                Stream::Plain(_) => "http",
                Stream::Tls(_) => "https",
            };
            let url = format!("{scheme}://{authority}{path}");
            return Err(self.verb.encoded_answer(url, ask));
        }
        let location = response
            .location
            .filter(|_| redirect::is_followed(response.status));
        let fetched = Response {
            status: response.status,
            body: Bytes::from(body),
            retry_after: response.retry_after,
            link: response.link,
            url: None,
            validators: response.validators,
            charge: Some(charge),
        };
        Ok((fetched, location, response.keep_alive))
    }

    async fn connect(&self, authority: &str, tls: bool) -> Result<Stream, ClientError> {
        let connector = match tls {
            false => &self.plain,
            true => self
                .tls
                .get_or_init(|| {
                    let alpn = match self.h2 {
                        Some(_) => tls::ALPN_H2_AND_HTTP1,
                        None => tls::ALPN_HTTP1,
                    };
                    Connector::with_tls(&self.tls_options, alpn).map_err(|e| e.to_string())
                })
                .as_ref()
                .map_err(|e| ClientError::Other(e.clone()))?,
        };
        let proxy = self.proxy.for_target(tls, host_of(authority));
        let connected = connector
            .connect(authority, tls, proxy, self.connect_timeout)
            .await
            .map_err(|e| e.into_client_error(authority))?;
        Ok(connected.stream)
    }

    /// A new TLS connection to `authority` for one request. The first connection to a
    /// host decides by ALPN whether it speaks HTTP/2 (then the connection goes to the
    /// HTTP/2 client, and so do the requests that waited for the answer).
    async fn open_tls(&self, authority: &str) -> Result<Opened<'_>, ClientError> {
        let mut probe = None;
        if let Some(h2) = &self.h2
            && !self.speaks_http1(authority)
        {
            match self.probe(authority) {
                Probe::Mine(guard) => probe = Some(guard),
                Probe::Wait(done) => {
                    // An error once the semaphore is closed: the answer is in.
                    let _ = done.acquire().await;
                    if h2.serves(authority) {
                        return Ok(Opened::Http2(h2));
                    }
                }
            }
        }
        let stream = self.connect(authority, true).await?;
        if let (true, Some(h2)) = (stream.is_h2(), &self.h2) {
            h2.adopt(authority, stream).await?;
            return Ok(Opened::Http2(h2));
        }
        if probe.take().is_some() {
            self.remember_http1(authority);
        }
        Ok(Opened::Http1(stream))
    }

    /// The proxy a plain request on `stream` to `authority` goes through, if any (a
    /// TLS stream is tunnelled: its requests go as to the server itself).
    fn proxied(&self, stream: &Stream, authority: &str) -> Option<&Proxy> {
        match stream {
            Stream::Plain(_) => self.proxy.for_target(false, host_of(authority)),
            Stream::Tls(_) => None,
        }
    }

    /// Keeps finished connections for reuse (`true`), or closes them (`false`) once
    /// every job the worker has started has asked for its connection (the idle ones
    /// too, then). Ten thousand connections left idle at the end of a run would
    /// otherwise all be closed at once when the worker exits.
    pub fn retain_connections(&self, retain: bool) {
        self.retain.store(retain, Ordering::Relaxed);
        self.close_idle_if_done();
    }

    /// A job that may ask for a connection has been handed to the worker.
    pub fn job_coming(&self) {
        self.unstarted.fetch_add(1, Ordering::Relaxed);
    }

    /// A job asks for a connection (retries and redirects ask again: counted down to
    /// 0 at most, which can only close a connection a little early).
    fn job_started(&self) {
        let _ = self
            .unstarted
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Whether a connection that finishes now is kept.
    fn keeps(&self) -> bool {
        self.retain.load(Ordering::Relaxed) || self.unstarted.load(Ordering::Relaxed) > 0
    }

    fn close_idle_if_done(&self) {
        if !self.keeps() {
            for idle in &self.idle {
                idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
            }
        }
    }

    /// An idle connection to `authority` that is still quiet: one the server closed,
    /// or sent bytes on that nobody asked for, is dropped.
    fn take_idle(&self, authority: &str, tls: bool) -> Option<Stream> {
        let mut idle = self.idle[usize::from(tls)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let conns = idle.get_mut(authority)?;
        while let Some(mut stream) = conns.pop() {
            if stream.is_quiet() {
                return Some(stream);
            }
        }
        None
    }

    fn put_idle(&self, authority: &str, stream: Stream) {
        if !self.keeps() {
            return;
        }
        let tls = matches!(stream, Stream::Tls(_));
        let mut idle = self.idle[usize::from(tls)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let conns = idle.entry(authority.to_owned()).or_default();
        if conns.len() < self.max_idle {
            conns.push(stream);
        }
    }
}

impl Exchange for Http1Client {
    /// One request and response; a pooled connection that turns out to be closed is
    /// replaced by a fresh one once, unless the request may not be sent twice (RFC
    /// 9112 §9.3.1: the server may have applied it before the connection failed).
    ///
    /// Not an `async fn`: its arguments would be kept twice in the future's state.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    fn exchange(
        &self,
        tls: bool,
        authority: &str,
        path: &str,
        ask: Ask<'_>,
        max_body: u64,
        trusted: bool,
    ) -> impl Future<Output = Result<(Response, Option<String>), ClientError>> + Send {
        async move {
            self.job_started();
            if tls
                && let Some(h2) = &self.h2
                && h2.serves(authority)
            {
                // Boxed: only hosts that chose HTTP/2 come here.
                return Box::pin(h2.exchange(tls, authority, path, ask, max_body, trusted)).await;
            }
            let idle = self.take_idle(authority, tls);
            // The last job to ask took what it needs: the others only wait for exit.
            self.close_idle_if_done();
            if let Some(mut stream) = idle {
                let result = self
                    .once(&mut stream, authority, path, ask, max_body, trusted)
                    .await;
                let repeatable = ask == Ask::Get || self.verb.repeatable;
                match result {
                    Err(ClientError::Reset(_)) if repeatable => {}
                    result => return self.settle(authority, stream, result),
                }
            }
            // Opening is boxed, and so is all its state (over TLS, the ALPN probe and the
            // handshake too): this future holds only what a request in flight needs, a
            // stream and its exchange, and ten thousand requests in flight are all this
            // future's size.
            let opened = match tls {
                false => Box::pin(self.connect(authority, false))
                    .await
                    .map(Opened::Http1),
                true => Box::pin(self.open_tls(authority)).await,
            };
            let mut stream = match opened? {
                Opened::Http1(stream) => stream,
                Opened::Http2(h2) => {
                    let exchange = h2.exchange(tls, authority, path, ask, max_body, trusted);
                    return Box::pin(exchange).await;
                }
            };
            let result = self
                .once(&mut stream, authority, path, ask, max_body, trusted)
                .await;
            self.settle(authority, stream, result)
        }
    }

    fn max_redirects(&self) -> u32 {
        self.max_redirects
    }

    fn method(&self) -> &http::Method {
        &self.verb.method
    }
}
