//! The lean HTTP/1.1 client for `http://` and `https://` URLs, on the wire reader of
//! [`super::http1`]: a keep-alive pool per worker, and no read buffer while a response
//! is awaited (ten thousand requests in flight cost their sockets, not 16 KiB each).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use shared::config::{TlsOptions, WorkerConfig};
use shared::proxy::{Proxy, ProxyConfig};
use tokio::io::AsyncWriteExt;

use super::h2c::H2cClient;
use super::http1::{self, Content, Keep, ReadError};
use super::transport::{Connector, Stream, host_of};
use super::{Ask, ClientError, Exchange, Response, Verb, conditional, redirect};
use crate::budget::{Budget, Charge};
use crate::tls;

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
    /// Whether connections are worth keeping: only while more jobs are waiting.
    retain: AtomicBool,
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
            extra,
            anonymous: http1::header_lines(everywhere, true),
            content_lines: http1::header_lines(content_type.map(|t| ("Content-Type", t)), true),
            verb,
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            max_redirects: config.max_redirects,
            max_idle: config.concurrency as usize,
            budget,
            h2,
        }
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
                    ReadError::Incomplete | ReadError::Malformed(_) => {
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

    /// The proxy a plain request on `stream` to `authority` goes through, if any (a
    /// TLS stream is tunnelled: its requests go as to the server itself).
    fn proxied(&self, stream: &Stream, authority: &str) -> Option<&Proxy> {
        match stream {
            Stream::Plain(_) => self.proxy.for_target(false, host_of(authority)),
            Stream::Tls(_) => None,
        }
    }

    /// Keeps finished connections for reuse (`true`), or closes them (`false`, which
    /// also closes the idle ones). Ten thousand connections left idle at the end of a
    /// run would otherwise all be closed at once when the worker exits.
    pub fn retain_connections(&self, retain: bool) {
        if self.retain.swap(retain, Ordering::Relaxed) != retain && !retain {
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
        if !self.retain.load(Ordering::Relaxed) {
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
    async fn exchange(
        &self,
        tls: bool,
        authority: &str,
        path: &str,
        ask: Ask<'_>,
        max_body: u64,
        trusted: bool,
    ) -> Result<(Response, Option<String>), ClientError> {
        if tls
            && let Some(h2) = &self.h2
            && h2.serves(authority)
        {
            // Boxed: only hosts that chose HTTP/2 come here.
            return Box::pin(h2.exchange(tls, authority, path, ask, max_body, trusted)).await;
        }
        if let Some(mut stream) = self.take_idle(authority, tls) {
            let result = self
                .once(&mut stream, authority, path, ask, max_body, trusted)
                .await;
            let repeatable = ask == Ask::Get || self.verb.repeatable;
            match result {
                Err(ClientError::Reset(_)) if repeatable => {}
                result => return self.settle(authority, stream, result),
            }
        }
        let mut stream = Box::pin(self.connect(authority, tls)).await?;
        if let (true, Some(h2)) = (stream.is_h2(), &self.h2) {
            Box::pin(h2.adopt(authority, stream)).await?;
            return Box::pin(h2.exchange(tls, authority, path, ask, max_body, trusted)).await;
        }
        let result = self
            .once(&mut stream, authority, path, ask, max_body, trusted)
            .await;
        self.settle(authority, stream, result)
    }

    fn max_redirects(&self) -> u32 {
        self.max_redirects
    }

    fn method(&self) -> &http::Method {
        &self.verb.method
    }
}
