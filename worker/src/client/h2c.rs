//! Scrape fetches of plain `http://` URLs over HTTP/2 with prior knowledge (h2c), on
//! the `h2` crate directly (hyper's client would add a task, a channel and a callback
//! per request on top of it): a worker's requests to one `host:port` go as streams
//! on a few shared connections (`--http2-streams` to a connection, 100 by default), so
//! ten thousand requests in flight cost a hundred sockets, accepts and handshakes or
//! fewer, not ten thousand. Used with `--http2`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use http::header::{
    ACCEPT, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, LINK, LOCATION,
    RETRY_AFTER, USER_AGENT,
};
use http::uri::Authority;
use http::{HeaderMap, Request, Uri};
use shared::config::{TlsOptions, WorkerConfig};
use shared::proxy::ProxyConfig;
use shared::refresh::Validators;
use tokio::io::BufReader;

use super::headers::strip_connection_headers;
use super::transport::{self, Connector};
use super::{Ask, ClientError, Exchange, Response, Verb, conditional, one_line, redirect};
use crate::budget::{Budget, Charge};

/// Flow-control windows: large, so that a thousand streams answering at once are not
/// held back waiting for window updates (hyper's defaults).
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// An open connection: the handle that starts streams on it, and whether it ended.
#[derive(Clone)]
struct Sender {
    send: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
    /// The TLS error that ended the connection, if one did.
    tls_failure: Option<transport::Failure>,
}

impl Sender {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

/// One connection: made by the first request sent on it while the others wait, then
/// shared by up to `--http2-streams` requests.
struct Connection {
    /// The `host:port` it goes to, parsed once for all the requests on it.
    authority: Authority,
    /// Whether it speaks TLS (`https://`).
    tls: bool,
    sender: tokio::sync::OnceCell<Sender>,
    /// Requests on it now, counting those waiting for it to open.
    streams: AtomicUsize,
}

/// A request's place on a connection, given back when the request is over.
struct Stream(Arc<Connection>);

impl Drop for Stream {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The HTTP/2 client of one worker.
pub struct H2cClient {
    /// The connections to each `host:port`: plain ones, then TLS ones.
    connections: [Mutex<HashMap<String, Vec<Arc<Connection>>>>; 2],
    /// Connections without TLS.
    plain: Connector,
    /// What TLS trusts; its connector is made on the first `https://` URL.
    tls_options: TlsOptions,
    tls: OnceLock<Result<Connector, String>>,
    /// The forward proxies.
    proxy: ProxyConfig,
    /// Sent to the job's own origin (`User-Agent`, `--header`s).
    headers: HeaderMap,
    /// Sent after a redirect to another origin (`User-Agent`, and the `Accept` of
    /// `--data-json`).
    anonymous: HeaderMap,
    /// The run's method, and what goes with it.
    verb: Verb,
    /// Requests one connection carries at once; more open another connection.
    streams_per_connection: usize,
    connect_timeout: Duration,
    max_redirects: u32,
    /// The worker's body budget.
    budget: Arc<Budget>,
    /// Whether any response came yet: until one does, a failure may well be a server
    /// that does not speak HTTP/2, and the error says so.
    answered: AtomicBool,
}

impl H2cClient {
    /// A client for `config` that sends `verb`, and `headers` to the origin of each
    /// job's URL but only their `User-Agent` (and `verb`'s `Accept`) elsewhere.
    pub fn new(
        config: &WorkerConfig,
        verb: Verb,
        mut headers: HeaderMap,
        budget: Arc<Budget>,
    ) -> H2cClient {
        strip_connection_headers(&mut headers);
        let mut anonymous = HeaderMap::new();
        if let Some(agent) = headers.get(USER_AGENT) {
            anonymous.insert(USER_AGENT, agent.clone());
        }
        if let Some(accept) = &verb.accept {
            for map in [&mut headers, &mut anonymous] {
                map.entry(ACCEPT).or_insert_with(|| accept.clone());
            }
        }
        H2cClient {
            connections: Default::default(),
            plain: Connector::plain(),
            tls_options: config.tls.clone(),
            tls: OnceLock::new(),
            proxy: config.proxy.clone(),
            headers,
            anonymous,
            verb,
            streams_per_connection: config.http2_streams.max(1) as usize,
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            max_redirects: config.max_redirects,
            answered: AtomicBool::new(false),
            budget,
        }
    }

    /// A place on a connection to `authority` with a stream to spare, and a handle that
    /// starts streams on it; a new connection if there is none.
    async fn sender(
        &self,
        tls: bool,
        authority: &str,
    ) -> Result<(SendRequest<Bytes>, Stream), ClientError> {
        let stream = {
            let mut connections = self.connections[usize::from(tls)]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let open = match connections.get_mut(authority) {
                Some(open) => open,
                None => connections.entry(authority.to_owned()).or_default(),
            };
            // Requests still on a closed connection fail and are retried.
            open.retain(|c| !c.sender.get().is_some_and(Sender::is_closed));
            let spare = open
                .iter()
                .find(|c| c.streams.load(Ordering::Relaxed) < self.streams_per_connection);
            let connection = match spare {
                Some(connection) => Arc::clone(connection),
                None => {
                    let connection = Arc::new(Connection {
                        authority: Authority::try_from(authority).map_err(|e| {
                            ClientError::BadUrl(format!("`{authority}` is not a valid host: {e}"))
                        })?,
                        tls,
                        sender: tokio::sync::OnceCell::new(),
                        streams: AtomicUsize::new(0),
                    });
                    open.push(Arc::clone(&connection));
                    connection
                }
            };
            connection.streams.fetch_add(1, Ordering::Relaxed);
            Stream(connection)
        };
        let sender = match stream.0.sender.get() {
            Some(sender) => sender,
            // Boxed: only a connection's first requests wait here, and the state of
            // the wait should not size every request's.
            None => {
                let connect = || self.connect(authority, tls);
                Box::pin(stream.0.sender.get_or_try_init(connect)).await?
            }
        };
        Ok((sender.send.clone(), stream))
    }

    /// Sends the request `ask` says for `path` on `send`, to the connection's host.
    /// Not async, like what it calls: the request is never part of the waiting
    /// request's state.
    fn send(
        &self,
        mut send: SendRequest<Bytes>,
        stream: &Stream,
        path: &str,
        ask: Ask<'_>,
        trusted: bool,
    ) -> Result<h2::client::ResponseFuture, ClientError> {
        let authority = &stream.0.authority;
        let request = self
            .request(stream.0.tls, authority, path, ask, trusted)
            .map_err(|e| {
                ClientError::BadUrl(format!(
                    "`{}://{authority}{path}` is not a valid URL: {e}",
                    scheme(stream.0.tls)
                ))
            })?;
        let body = match ask {
            Ask::Own(body) if !body.bytes().is_empty() => {
                Some(Bytes::copy_from_slice(body.bytes()))
            }
            _ => None,
        };
        let reset = |e: h2::Error| ClientError::Reset(self.explain(one_line(&e)));
        // No `ready()` first: a handle of its own has no request of its own waiting to
        // open, which is all that would make it wait (streams over the server's limit
        // are queued by the connection either way).
        let (response, mut outgoing) = send.send_request(request, body.is_none()).map_err(reset)?;
        if let Some(body) = body {
            // Queued whole: the connection sends it as the flow-control window opens.
            outgoing.send_data(body, true).map_err(reset)?;
        }
        Ok(response)
    }

    /// The request `ask` says for `path` on `authority`, with the client's headers
    /// (all of them when `trusted`).
    fn request(
        &self,
        tls: bool,
        authority: &Authority,
        path: &str,
        ask: Ask<'_>,
        trusted: bool,
    ) -> Result<Request<()>, http::Error> {
        let uri = Uri::builder()
            .scheme(scheme(tls))
            .authority(authority.clone())
            .path_and_query(path)
            .build()?;
        let mut request = Request::new(());
        *request.uri_mut() = uri;
        *request.headers_mut() = if trusted {
            self.headers.clone()
        } else {
            self.anonymous.clone()
        };
        if let Ask::Own(body) = ask {
            *request.method_mut() = self.verb.method.clone();
            let headers = request.headers_mut();
            if let Some(kind) = &self.verb.content_type {
                headers.insert(CONTENT_TYPE, kind.clone());
            }
            if self.verb.framed {
                headers.insert(CONTENT_LENGTH, HeaderValue::from(body.bytes().len()));
            }
            if let Some(conditions) = body.validators() {
                conditional::insert(conditions, headers);
            }
        }
        Ok(request)
    }

    /// `error`, with a hint while no response has come on any connection.
    fn explain(&self, error: String) -> String {
        if self.answered.load(Ordering::Relaxed) {
            error
        } else {
            format!(
                "{error} (no HTTP/2 answer yet: --http2 needs a server that speaks HTTP/2: h2c on http://, ALPN h2 on https://)"
            )
        }
    }

    /// Reads a response body whole, charging it to the budget as it comes: the server
    /// may send more only once the budget covers what came.
    async fn read_body(
        &self,
        mut body: h2::RecvStream,
        max_body: u64,
    ) -> Result<(Bytes, Charge), ClientError> {
        let mut charge = Charge::new(&self.budget);
        // One chunk is kept as it came; more are joined.
        let mut first: Option<Bytes> = None;
        let mut joined = BytesMut::new();
        let mut len = 0u64;
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| {
                ClientError::Read(format!("the response was cut off: {}", one_line(&e)))
            })?;
            len += chunk.len() as u64;
            if len > max_body {
                return Err(ClientError::TooLarge(len));
            }
            charge.cover(len as usize).await;
            let _ = body.flow_control().release_capacity(chunk.len());
            match first.take() {
                None if joined.is_empty() => first = Some(chunk),
                earlier => {
                    if let Some(earlier) = earlier {
                        joined.extend_from_slice(&earlier);
                    }
                    joined.extend_from_slice(&chunk);
                }
            }
        }
        Ok((first.unwrap_or_else(|| joined.freeze()), charge))
    }

    async fn connect(&self, authority: &str, tls: bool) -> Result<Sender, ClientError> {
        let connector = match tls {
            false => &self.plain,
            true => self
                .tls
                .get_or_init(|| {
                    Connector::with_tls(&self.tls_options, crate::tls::ALPN_H2)
                        .map_err(|e| e.to_string())
                })
                .as_ref()
                .map_err(|e| ClientError::Other(e.clone()))?,
        };
        let proxy = self.proxy.for_target(tls, transport::host_of(authority));
        if proxy.is_some() && !tls {
            return Err(ClientError::Other(format!(
                "http://{authority} is behind a proxy, and h2c (--http2 on http://) cannot go through one: use https://, or reach it directly with --noproxy"
            )));
        }
        let stream = connector
            .connect(authority, tls, proxy, self.connect_timeout)
            .await
            .map_err(|e| e.into_client_error(authority))?
            .stream;
        self.start(authority, stream).await
    }

    /// Starts HTTP/2 on a connection to `authority`.
    async fn start(
        &self,
        authority: &str,
        stream: transport::Stream,
    ) -> Result<Sender, ClientError> {
        let failed = |e: String| ClientError::Connect(format!("connecting to {authority}: {e}"));
        let tls_failure = stream.failure_slot();
        let (send, connection) = handshake(stream)
            .await
            .map_err(|e| failed(self.explain(one_line(&e))))?;
        let closed = Arc::new(AtomicBool::new(false));
        let ended = Arc::clone(&closed);
        // Runs until the last handle is dropped or the connection fails; a failure
        // reaches the requests on it, which report and retry it.
        tokio::spawn(async move {
            let _ = connection.await;
            ended.store(true, Ordering::Relaxed);
        });
        Ok(Sender {
            send,
            closed,
            tls_failure,
        })
    }
}

impl H2cClient {
    /// Whether requests to `authority` over TLS have an HTTP/2 connection to go on:
    /// one that ALPN chose for an HTTP/1.1 client ([`Self::adopt`]).
    pub fn serves(&self, authority: &str) -> bool {
        let connections = self.connections[1]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        connections.get(authority).is_some_and(|open| {
            open.iter()
                .any(|c| c.sender.get().is_some_and(|s| !s.is_closed()))
        })
    }

    /// Takes on a TLS connection to `authority` on which ALPN chose HTTP/2: the
    /// requests to that host go on it from now on, and more connections to it, when
    /// they are needed, speak HTTP/2 from the start.
    pub async fn adopt(
        &self,
        authority: &str,
        stream: transport::Stream,
    ) -> Result<(), ClientError> {
        let parsed = Authority::try_from(authority)
            .map_err(|e| ClientError::BadUrl(format!("`{authority}` is not a valid host: {e}")))?;
        let sender = self.start(authority, stream).await?;
        let connection = Arc::new(Connection {
            authority: parsed,
            tls: true,
            sender: tokio::sync::OnceCell::new_with(Some(sender)),
            streams: AtomicUsize::new(0),
        });
        self.connections[1]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(authority.to_owned())
            .or_default()
            .push(connection);
        Ok(())
    }
}

impl Exchange for H2cClient {
    /// One request and response on the connection to `authority`.
    ///
    /// Ordered so that little is held across the waits: the request is built once the
    /// connection is there, and the response head is read and dropped before its body
    /// streams in. Ten thousand requests in flight each carry this state.
    async fn exchange(
        &self,
        tls: bool,
        authority: &str,
        path: &str,
        ask: Ask<'_>,
        max_body: u64,
        trusted: bool,
    ) -> Result<(Response, Option<String>), ClientError> {
        // The stream's place is held until its body is read.
        let (send, stream) = self.sender(tls, authority).await?;
        // h2 passes on only the text of an I/O error: a TLS failure (an alert refusing
        // the client's certificate) is asked of the connection itself.
        let reset = |e: h2::Error| {
            let failure = stream.0.sender.get().and_then(|s| s.tls_failure.as_ref());
            match failure.and_then(|f| f.get()) {
                Some(tls) => transport::tls_client_error(tls, authority),
                None => ClientError::Reset(self.explain(one_line(&e))),
            }
        };
        let response = self.send(send, &stream, path, ask, trusted)?;
        let (head, body) = response.await.map_err(reset)?.into_parts();
        self.answered.store(true, Ordering::Relaxed);
        // The length of an answer to a HEAD is the length of a body never sent.
        let announced_max = match ask {
            Ask::Own(_) if self.verb.is_head() => u64::MAX,
            _ => max_body,
        };
        let HeadFacts {
            status,
            location,
            retry_after,
            link,
            validators,
        } = read_head(head, announced_max, || {
            self.verb
                .encoded_answer(format!("{}://{authority}{path}", scheme(tls)), ask)
        })?;
        // Boxed: the body's state (its chunks, its charge) exists only while it
        // streams in; the state every request carries while it waits stays small.
        let (body, charge) = Box::pin(self.read_body(body, max_body)).await?;
        let fetched = Response {
            status,
            body,
            retry_after,
            link,
            url: None,
            validators,
            charge: Some(charge),
        };
        Ok((fetched, location))
    }

    fn max_redirects(&self) -> u32 {
        self.max_redirects
    }

    fn method(&self) -> &http::Method {
        &self.verb.method
    }
}

fn scheme(tls: bool) -> &'static str {
    match tls {
        true => "https",
        false => "http",
    }
}

/// What the client keeps of a response head.
struct HeadFacts {
    status: u16,
    /// A followed redirect's `Location`.
    location: Option<String>,
    retry_after: Option<String>,
    /// The `Link` fields, joined.
    link: Option<String>,
    /// `ETag` and `Last-Modified`, for the next `--refresh`.
    validators: Validators,
}

/// What a response head says: status, a redirect's `Location`, `Retry-After`, `Link`
/// and the validators; an error for a compressed body (the full client decodes those) or a
/// declared length over `max_body`.
fn read_head(
    head: http::response::Parts,
    max_body: u64,
    encoded: impl Fn() -> ClientError,
) -> Result<HeadFacts, ClientError> {
    let text = |name| {
        head.headers
            .get(name)
            .and_then(|v: &http::HeaderValue| v.to_str().ok())
    };
    if text(CONTENT_ENCODING).is_some_and(|e| !e.eq_ignore_ascii_case("identity")) {
        return Err(encoded());
    }
    if let Some(len) = text(CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok())
        && len > max_body
    {
        return Err(ClientError::TooLarge(len));
    }
    let status = head.status.as_u16();
    let location = text(LOCATION)
        .filter(|_| redirect::is_followed(status))
        .map(str::to_owned);
    let mut link = None;
    for value in head.headers.get_all(LINK) {
        if let Ok(value) = value.to_str() {
            crate::client::add_link(&mut link, value);
        }
    }
    Ok(HeadFacts {
        status,
        location,
        retry_after: text(RETRY_AFTER).map(str::to_owned),
        link,
        validators: conditional::of(&head.headers),
    })
}

/// Streams opened on a new connection before the server's settings say how many it
/// takes (RFC 9113 asks servers to allow at least 100); the rest wait for them. Sent
/// all at once, streams over a lower limit would be refused and go through the retry
/// backoff.
const STREAMS_BEFORE_SETTINGS: usize = 100;

/// Bytes read from the socket at once. h2 reads 8 KiB at a time; a server that
/// answers many streams together sends several times that in one write.
const READ_BUFFER: usize = 32 * 1024;

/// A connection as h2 reads and writes it.
pub(crate) type Io = BufReader<transport::Stream>;

/// Starts HTTP/2 with prior knowledge on `stream`: the handle that opens streams, and
/// the connection, to be run on a task of its own.
pub(crate) async fn handshake(
    stream: transport::Stream,
) -> Result<(SendRequest<Bytes>, h2::client::Connection<Io, Bytes>), h2::Error> {
    h2::client::Builder::new()
        .initial_max_send_streams(STREAMS_BEFORE_SETTINGS)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake::<_, Bytes>(BufReader::with_capacity(READ_BUFFER, stream))
        .await
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::budget::Budget;
    use crate::client::Payload;
    use shared::config::RetryPolicy;
    use shared::template::Template;

    /// A worker's configuration for tests: HTTP/2 with `streams` per connection.
    pub(crate) fn config(streams: u32) -> WorkerConfig {
        WorkerConfig {
            url: None,
            name: Template::parse("batch{start}").expect("template"),
            out_dir: None,
            concurrency: 100,
            headers: Vec::new(),
            request: shared::request::RequestSpec::default(),
            user_agent: "test".into(),
            timeout_ms: 30_000,
            connect_timeout_ms: 10_000,
            max_body: 1 << 20,
            body_budget: 1 << 30,
            retry: RetryPolicy {
                retries: 0,
                statuses: Vec::new(),
                base_ms: 1,
                max_ms: 1,
                retry_after_max_ms: 1,
                max_time_ms: 1,
                non_idempotent: false,
            },
            max_redirects: 0,
            location_trusted: false,
            rate: None,
            compressed: false,
            http2: true,
            http2_streams: streams,
            tls: Default::default(),
            proxy: Default::default(),
            per_host: Default::default(),
            adaptive: false,
            follow_next: None,
        }
    }

    fn verb() -> Verb {
        Verb::new(&shared::request::RequestSpec::default(), false).expect("GET")
    }

    /// An h2c server that lets `limit` streams open at once on a connection and
    /// answers each with its own path after a moment.
    async fn limited_server(limit: u32) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((io, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut builder = h2::server::Builder::new();
                    builder.max_concurrent_streams(limit);
                    let Ok(mut connection) = builder.handshake::<_, Bytes>(io).await else {
                        return;
                    };
                    while let Some(Ok((request, mut respond))) = connection.accept().await {
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            let body = Bytes::from(request.uri().path().to_owned());
                            let head = http::Response::new(());
                            if let Ok(mut stream) = respond.send_response(head, false) {
                                let _ = stream.send_data(body, true);
                            }
                        });
                    }
                });
            }
        });
        addr
    }

    /// `count` requests sent at once, each for its own page; every one must be
    /// answered with its page (a stream the server refused would fail its request:
    /// there are no retries here).
    async fn all_answered(client: &H2cClient, authority: &str, count: usize) {
        let requests = (0..count).map(|n| async move {
            let path = format!("/page/{n}");
            let (fetched, _) = client
                .exchange(
                    false,
                    authority,
                    &path,
                    Ask::Own(&Payload::default()),
                    1 << 20,
                    true,
                )
                .await
                .unwrap_or_else(|e| panic!("request {n}: {e:?}"));
            (path, fetched)
        });
        let answers = tokio::time::timeout(
            Duration::from_secs(30),
            futures_util::future::join_all(requests),
        )
        .await
        .expect("all answered");
        for (path, fetched) in answers {
            assert_eq!(fetched.status, 200);
            assert_eq!(fetched.body, path.as_bytes());
        }
    }

    #[tokio::test]
    async fn requests_over_the_servers_stream_limit_wait_for_a_stream_even_before_its_settings() {
        // The fewest streams a server should allow; all sent at once on a new
        // connection, before its settings are in.
        let addr = limited_server(100).await;
        let client = H2cClient::new(
            &config(1_000),
            verb(),
            HeaderMap::new(),
            Budget::new(1 << 30),
        );
        all_answered(&client, &addr.to_string(), 300).await;
    }

    #[tokio::test]
    async fn a_server_limit_below_the_clients_own_cap_is_obeyed_once_its_settings_are_in() {
        // 3 streams at once, far below the client's --http2-streams of 100 (and its cap
        // of 100 before the settings): requests past the server's limit must wait for a
        // stream, or the server refuses them.
        let addr = limited_server(3).await;
        let client = H2cClient::new(&config(100), verb(), HeaderMap::new(), Budget::new(1 << 30));
        let authority = addr.to_string();
        // The first answer comes after the server's settings, its limit among them:
        // streams sent before a client knows the limit may be refused (and retried).
        all_answered(&client, &authority, 1).await;
        all_answered(&client, &authority, 20).await;
    }
}
