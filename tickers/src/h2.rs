//! A lean HTTP/2 server for connections that open with the h2c preface.
//!
//! The seed's experiment at scale (100,000 requests in flight, each answered after
//! 2-4 s) puts client and server on the same two cores, so every microsecond the
//! server spends on an answer is one the client does not get. hyper's HTTP/2 server
//! spawns a task per stream and routes it through the service stack; here a
//! connection is one task: a stream's answer is decided when it arrives ([`answer`])
//! and waits in the connection's timer queue, and the same task that accepts streams
//! sends the answers when they are due.

use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::poll_fn;
use h2::server::SendResponse;
use h2::{Reason, SendStream};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::time::DelayQueue;

use crate::api::{Answer, CUT_AFTER, Pending, Reply, answer, is_route};
use crate::{Options, ROBOTS_PATH, coalesce, conditional, cursor, echo};

/// What a client sends first on an HTTP/2 connection with prior knowledge.
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Streams one connection may carry at once. hyper's default of 200 would queue all
/// but 200 of the seed's ten thousand requests behind the first ones; this is a test
/// target, made to take as many as a client sends.
pub(crate) const MAX_STREAMS: u32 = 1_000_000;

/// Something the connection has to do later.
enum Due {
    /// Send a page.
    Page {
        respond: SendResponse<Bytes>,
        page: Pending,
        head: bool,
    },
    /// Fail a response whose first half went out.
    Cut(SendStream<Bytes>),
}

/// Serves one HTTP/2 connection until the client closes it, or until `stop` turns
/// true and the streams already accepted have been answered.
pub(crate) async fn serve(io: TcpStream, options: Options, mut stop: watch::Receiver<bool>) {
    let mut builder = h2::server::Builder::new();
    builder.max_concurrent_streams(MAX_STREAMS);
    let (io, outbox) = coalesce::split(io);
    let Ok(mut connection) = builder.handshake::<_, Bytes>(io).await else {
        return;
    };
    let mut due = DelayQueue::new();
    let mut due_now = Vec::new();
    let mut stopping = false;
    loop {
        tokio::select! {
            biased;
            () = poll_fn(|cx| take_due(&mut due, &mut due_now, cx)), if !due.is_empty() => {
                for expired in due_now.drain(..) {
                    deliver(expired, &options, &mut due);
                }
            }
            accepted = connection.accept() => match accepted {
                Some(Ok((request, respond))) => begin(request, respond, &options, &mut due),
                // A client that goes away mid-response is the client's business.
                Some(Err(_)) | None => break,
            },
            _ = stop.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                connection.graceful_shutdown();
            }
            // Last: what this round wrote goes out in one piece.
            sent = poll_fn(|cx| outbox.poll_send(cx)) => {
                if sent.is_err() {
                    break;
                }
            }
        }
    }
}

/// Answers due together, taken at once: one round of the connection's task for a
/// batch of them rather than for each (at most `DUE_BATCH`, so that new streams and
/// the outbox are not held back). Pending, with a wakeup registered, while none is due.
fn take_due(due: &mut DelayQueue<Due>, taken: &mut Vec<Due>, cx: &mut Context<'_>) -> Poll<()> {
    while taken.len() < DUE_BATCH {
        match due.poll_expired(cx) {
            Poll::Ready(Some(expired)) => taken.push(expired.into_inner()),
            _ => break,
        }
    }
    if taken.is_empty() {
        Poll::Pending
    } else {
        Poll::Ready(())
    }
}

/// Answers delivered in one round at most.
const DUE_BATCH: usize = 256;

/// Answers a new stream now, or queues its page.
fn begin(
    request: Request<h2::RecvStream>,
    respond: SendResponse<Bytes>,
    options: &Options,
    due: &mut DelayQueue<Due>,
) {
    let head = request.method() == Method::HEAD;
    if request.uri().path() == echo::PATH {
        // Rare, and its body comes later: answered on a task of its own.
        tokio::spawn(answer_echo(request, respond));
        return;
    }
    if cursor::is_route(request.uri().path()) && (head || request.method() == Method::GET) {
        let answer = cursor::answer(options, request.uri().query());
        tokio::spawn(cursor::send_h2(respond, answer, head));
        return;
    }
    if request.uri().path() == ROBOTS_PATH
        && let Some(text) = options.robots_txt
    {
        return reply(respond, StatusCode::OK, None, text.to_owned(), head);
    }
    if !is_route(request.uri().path()) {
        return reply(respond, StatusCode::NOT_FOUND, None, String::new(), head);
    }
    if !(head || request.method() == Method::GET) {
        let allow = Some((header::ALLOW, "GET,HEAD".to_owned()));
        return reply(
            respond,
            StatusCode::METHOD_NOT_ALLOWED,
            allow,
            String::new(),
            head,
        );
    }
    match answer(options, request.uri().query()) {
        Answer::Now(Reply {
            status,
            header,
            body,
        }) => reply(respond, status, header, body, head),
        Answer::Later(page) => {
            let page = page.on_conditions(request.headers());
            if page.delay.is_zero() {
                return send_page(respond, &page, options, head, due);
            }
            let delay = page.delay;
            due.insert(
                Due::Page {
                    respond,
                    page,
                    head,
                },
                delay,
            );
        }
    }
}

/// Answers a request to `/echo` once its body is in.
async fn answer_echo(request: Request<h2::RecvStream>, respond: SendResponse<Bytes>) {
    let (parts, body) = request.into_parts();
    let head = parts.method == Method::HEAD;
    let Some(body) = echo::read_h2_body(body).await else {
        return reply(respond, echo::TOO_LARGE, None, String::new(), head);
    };
    let text = echo::answer(&parts.method, &parts.uri, &parts.headers, &body);
    let kind = Some((header::CONTENT_TYPE, "application/json".to_owned()));
    reply(respond, StatusCode::OK, kind, text, head);
}

fn deliver(due_now: Due, options: &Options, due: &mut DelayQueue<Due>) {
    match due_now {
        Due::Page {
            respond,
            page,
            head,
        } => send_page(respond, &page, options, head, due),
        Due::Cut(mut stream) => stream.send_reset(Reason::INTERNAL_ERROR),
    }
}

fn send_page(
    mut respond: SendResponse<Bytes>,
    page: &Pending,
    options: &Options,
    head: bool,
    due: &mut DelayQueue<Due>,
) {
    let (body, kind) = page.render(options.coins);
    let etag = conditional::etag(body.as_bytes());
    if page.not_modified(&etag) {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        with_validators(&mut response, etag);
        let _ = respond.send_response(response, true);
        return;
    }
    let Some(mut response) = head_of(StatusCode::OK, Some(kind), None, body.len()) else {
        return;
    };
    with_validators(&mut response, etag);
    let Ok(mut stream) = respond.send_response(response, head) else {
        return;
    };
    if head {
        return;
    }
    let mut body = Bytes::from(body);
    if page.truncate {
        let len = body.len();
        body.truncate(len / 2);
        if stream.send_data(body, false).is_ok() {
            due.insert(Due::Cut(stream), CUT_AFTER);
        }
        return;
    }
    let _ = stream.send_data(body, true);
}

fn reply(
    mut respond: SendResponse<Bytes>,
    status: StatusCode,
    header: Option<(http::HeaderName, String)>,
    body: String,
    head: bool,
) {
    let kind = (!body.is_empty()).then_some("text/plain; charset=utf-8");
    let Some(response) = head_of(status, kind, header, body.len()) else {
        return;
    };
    let end = head || body.is_empty();
    if let Ok(mut stream) = respond.send_response(response, end)
        && !end
    {
        let _ = stream.send_data(Bytes::from(body), true);
    }
}

/// Adds a page's `ETag` and `Last-Modified` to its response head.
fn with_validators(response: &mut Response<()>, etag: String) {
    let headers = response.headers_mut();
    headers.insert(
        header::LAST_MODIFIED,
        HeaderValue::from_static(conditional::LAST_MODIFIED),
    );
    // Quotes and hex digits: always a valid value.
    if let Ok(etag) = HeaderValue::try_from(etag) {
        headers.insert(header::ETAG, etag);
    }
}

/// A response head; `None` only if `header` holds bytes a header cannot.
fn head_of(
    status: StatusCode,
    kind: Option<&'static str>,
    header: Option<(http::HeaderName, String)>,
    len: usize,
) -> Option<Response<()>> {
    let mut response = Response::new(());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Some(kind) = kind {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Some((name, value)) = header {
        headers.insert(name, HeaderValue::try_from(value).ok()?);
    }
    Some(response)
}

/// How a connection's first bytes say which protocol it speaks.
pub(crate) enum Opening {
    /// The HTTP/2 preface.
    Http2,
    /// Anything else, taken as HTTP/1.1.
    Other,
    /// The client went away first.
    Closed,
}

/// Looks at a new connection's first bytes without taking them.
pub(crate) async fn opening(io: &TcpStream) -> Opening {
    let mut buf = [0; PREFACE.len()];
    loop {
        match io.peek(&mut buf).await {
            Ok(0) | Err(_) => return Opening::Closed,
            Ok(n) if buf[..n] != PREFACE[..n] => return Opening::Other,
            Ok(n) if n == PREFACE.len() => return Opening::Http2,
            // Part of the preface so far: peek again once more has arrived.
            Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Faults, listen, tickers_json};
    use shared::plan::Span;
    use std::net::SocketAddr;
    use tokio::sync::oneshot;

    /// A server on a free port, and what stops it.
    async fn start(
        options: Options,
    ) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let listener = listen(SocketAddr::from(([127, 0, 0, 1], 0))).expect("listen");
        let addr = listener.local_addr().expect("address");
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            crate::serve(listener, options, None, shutdown)
                .await
                .expect("serve");
        });
        (addr, stop, served)
    }

    /// Every page answered after `ms` milliseconds.
    fn delayed(ms: u64) -> Options {
        Options {
            delay_ms: Span { start: ms, end: ms },
            ..Options::default()
        }
    }

    async fn client(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
        let io = TcpStream::connect(addr).await.expect("connect");
        let (client, connection) = h2::client::handshake(io).await.expect("handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    /// Status, headers and the whole body (or the error that cut it).
    async fn get(
        client: &mut h2::client::SendRequest<Bytes>,
        method: Method,
        path: &str,
    ) -> (StatusCode, http::HeaderMap, Result<Vec<u8>, h2::Error>) {
        let request = Request::builder()
            .method(method)
            .uri(format!("http://localhost{path}"))
            .body(())
            .expect("request");
        let (response, _) = client.send_request(request, true).expect("send");
        let response = response.await.expect("response");
        let status = response.status();
        let headers = response.headers().clone();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            match chunk {
                Ok(chunk) => {
                    let _ = body.flow_control().release_capacity(chunk.len());
                    bytes.extend_from_slice(&chunk);
                }
                Err(e) => return (status, headers, Err(e)),
            }
        }
        (status, headers, Ok(bytes))
    }

    #[tokio::test]
    async fn pages_errors_and_methods_over_h2c() {
        let (addr, stop, served) = start(Options::default()).await;
        let mut client = client(addr).await;
        let coins = Options::default().coins;

        let (status, headers, body) =
            get(&mut client, Method::GET, "/api/tickers/?start=20&limit=3").await;
        let page = tickers_json(20, 3, coins);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            headers[header::CONTENT_LENGTH],
            page.len().to_string().as_str()
        );
        assert_eq!(body.expect("body"), page.as_bytes());

        let (status, headers, body) =
            get(&mut client, Method::HEAD, "/api/tickers?start=20&limit=3").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers[header::CONTENT_LENGTH],
            page.len().to_string().as_str()
        );
        assert!(body.expect("no body").is_empty());

        let (status, headers, _) =
            get(&mut client, Method::GET, "/api/tickers/?limit=2&hops=2").await;
        assert_eq!(status, StatusCode::FOUND);
        assert_eq!(
            headers[header::LOCATION],
            "/api/tickers/?start=0&limit=2&hops=1"
        );

        let (status, _, body) = get(&mut client, Method::GET, "/api/tickers/?limit=10001").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(String::from_utf8_lossy(&body.expect("body")).contains("at most 10000"));
        assert_eq!(
            get(&mut client, Method::GET, "/api/other").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&mut client, Method::POST, "/api/tickers/").await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        let _ = stop.send(());
        drop(client);
        served.await.expect("server ends");
    }

    #[tokio::test]
    async fn pages_carry_validators_and_a_conditional_request_for_one_gets_304() {
        let (addr, _stop, _served) = start(delayed(5)).await;
        let mut client = client(addr).await;
        let path = "/api/tickers/?start=10&limit=4";
        let (status, headers, body) = get(&mut client, Method::GET, path).await;
        let page = tickers_json(10, 4, Options::default().coins);
        assert_eq!(
            (status, body.expect("body")),
            (StatusCode::OK, page.clone().into_bytes())
        );
        let etag = headers[header::ETAG].to_str().expect("ASCII").to_owned();
        assert_eq!(etag, conditional::etag(page.as_bytes()));
        assert_eq!(headers[header::LAST_MODIFIED], conditional::LAST_MODIFIED);
        for (name, value, status) in [
            (
                header::IF_NONE_MATCH,
                etag.as_str(),
                StatusCode::NOT_MODIFIED,
            ),
            (header::IF_NONE_MATCH, "\"other\"", StatusCode::OK),
            (
                header::IF_MODIFIED_SINCE,
                conditional::LAST_MODIFIED,
                StatusCode::NOT_MODIFIED,
            ),
        ] {
            let request = Request::get(format!("http://{addr}{path}"))
                .header(name.clone(), value)
                .body(())
                .expect("request");
            let (response, _) = client.send_request(request, true).expect("send");
            let response = response.await.expect("response");
            assert_eq!(response.status(), status, "{name}: {value}");
            assert_eq!(response.headers()[header::ETAG], etag.as_str());
            let mut received = response.into_body();
            let mut bytes = Vec::new();
            while let Some(chunk) = received.data().await {
                bytes.extend_from_slice(&chunk.expect("chunk"));
            }
            let want = if status == StatusCode::OK {
                page.len()
            } else {
                0
            };
            assert_eq!(bytes.len(), want, "{name}: {value}");
        }
    }

    #[tokio::test]
    async fn the_echo_route_answers_what_a_request_sent_over_h2c() {
        let (addr, _stop, _served) = start(Options::default()).await;
        let mut client = client(addr).await;
        let request = Request::builder()
            .method(Method::PATCH)
            .uri(format!("http://{addr}/echo?x=1"))
            .header(header::CONTENT_TYPE, "text/plain")
            .body(())
            .expect("request");
        let (response, mut body) = client.send_request(request, false).expect("send");
        body.send_data(Bytes::from_static(b"hello"), true)
            .expect("body");
        let response = response.await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        let mut received = response.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = received.data().await {
            text.extend_from_slice(&chunk.expect("chunk"));
        }
        let echo: serde_json::Value = serde_json::from_slice(&text).expect("JSON");
        assert_eq!(echo["method"], "PATCH");
        assert_eq!(
            (echo["path"].as_str(), echo["query"].as_str()),
            (Some("/echo"), Some("x=1"))
        );
        assert_eq!(echo["content_type"], "text/plain");
        assert_eq!(echo["body"], "hello");
    }

    #[tokio::test]
    async fn truncated_pages_announce_the_whole_body_and_fail_after_half() {
        let options = Options {
            faults: Faults {
                truncate: 1.0,
                ..Faults::default()
            },
            ..Options::default()
        };
        let (addr, _stop, _served) = start(options).await;
        let mut client = client(addr).await;
        let (status, headers, body) = get(&mut client, Method::GET, "/api/tickers/?limit=10").await;
        let whole = tickers_json(0, 10, options.coins).len();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_LENGTH], whole.to_string().as_str());
        let e = body.expect_err("the stream is reset");
        assert_eq!(e.reason(), Some(Reason::INTERNAL_ERROR));
    }

    #[tokio::test]
    async fn a_shutdown_answers_the_requests_already_waiting() {
        let (addr, stop, served) = start(delayed(300)).await;
        let mut client = client(addr).await;
        let request = Request::get(format!("http://{addr}/api/tickers/?limit=1"))
            .body(())
            .expect("request");
        let (response, _) = client.send_request(request, true).expect("send");
        // The stream is open at the server once a new one gets its answer.
        let (status, _, _) = get(&mut client, Method::GET, "/api/other").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let _ = stop.send(());
        let response = response.await.expect("answered despite the shutdown");
        assert_eq!(response.status(), StatusCode::OK);
        tokio::time::timeout(Duration::from_secs(10), served)
            .await
            .expect("the server ends once the answer is out")
            .expect("server task");
    }

    #[tokio::test]
    async fn answers_due_together_all_go_out_whatever_the_batch() {
        let options = delayed(200);
        let coins = options.coins;
        let (addr, stop, served) = start(options).await;
        let client = client(addr).await;
        // More streams than one round delivers, all due at the same moment.
        let streams = 3 * DUE_BATCH as u64 + 7;
        let pages = (0..streams).map(|start| {
            let mut client = client.clone();
            async move {
                let path = format!("/api/tickers/?start={start}&limit=2");
                (start, get(&mut client, Method::GET, &path).await)
            }
        });
        let answers = tokio::time::timeout(
            Duration::from_secs(30),
            futures_util::future::join_all(pages),
        )
        .await
        .expect("every stream is answered");
        for (start, (status, _, body)) in answers {
            assert_eq!(status, StatusCode::OK);
            assert_eq!(
                body.expect("body"),
                tickers_json(start, 2, coins).as_bytes(),
                "page at {start}"
            );
        }
        let _ = stop.send(());
        served.await.expect("server task");
    }
}
