//! What the API answers, apart from the HTTP that carries it: one request's query turns
//! into an [`Answer`] when it arrives, which both transports (axum for HTTP/1.1, the
//! lean HTTP/2 server in `h2`) then deliver.

use std::io;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde::Deserialize;
use tower_http::compression::CompressionLayer;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::conditional::{self, Conditions};
use crate::pages::{tickers_csv, tickers_json};
use crate::{Faults, MAX_LIMIT, Options, ROBOTS_PATH, cursor, echo, random_delay};

/// The paths the API answers on: the trailing slash is optional.
const ROUTES: [&str; 2] = ["/api/tickers/", "/api/tickers"];

/// Whether the API answers on `path`.
pub(crate) fn is_route(path: &str) -> bool {
    ROUTES.contains(&path)
}

#[derive(Debug, Deserialize)]
struct Query {
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

/// What one request gets, decided when it arrives.
pub(crate) enum Answer {
    /// Answered at once: an error, a redirect or an injected fault.
    Now(Reply),
    /// A page, sent after a delay.
    Later(Pending),
}

/// A short answer with at most one header of its own.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub header: Option<(HeaderName, String)>,
    pub body: String,
}

impl Reply {
    fn text(status: StatusCode, body: String) -> Answer {
        Answer::Now(Reply {
            status,
            header: None,
            body,
        })
    }
}

/// A page waiting for its delay to pass.
pub(crate) struct Pending {
    pub delay: Duration,
    /// Send half of the announced body, then fail the response.
    pub truncate: bool,
    start: u64,
    limit: u64,
    csv: bool,
    /// What the request's `If-None-Match` or `If-Modified-Since` ask, if it sent any.
    conditions: Option<Box<Conditions>>,
}

impl Pending {
    /// This page, for a request with these headers: conditional if they say so.
    pub fn on_conditions(mut self, headers: &HeaderMap) -> Pending {
        self.conditions = Conditions::of(headers);
        self
    }

    /// Whether the request's conditions say the client holds the page tagged `etag`.
    pub fn not_modified(&self, etag: &str) -> bool {
        self.conditions
            .as_ref()
            .is_some_and(|c| c.not_modified(etag))
    }

    /// The page's body and its content type.
    pub fn render(&self, coins: u64) -> (String, &'static str) {
        if self.csv {
            (tickers_csv(self.start, self.limit, coins), "text/csv")
        } else {
            (
                tickers_json(self.start, self.limit, coins),
                "application/json",
            )
        }
    }
}

/// Decides the answer to `GET /api/tickers/?{query}`.
pub(crate) fn answer(options: &Options, query: Option<&str>) -> Answer {
    let page: Query = match serde_urlencoded::from_str(query.unwrap_or("")) {
        Ok(page) => page,
        Err(e) => return Reply::text(StatusCode::BAD_REQUEST, format!("bad query: {e}\n")),
    };
    if page.limit > MAX_LIMIT {
        let msg = format!("limit must be at most {MAX_LIMIT}\n");
        return Reply::text(StatusCode::BAD_REQUEST, msg);
    }
    let csv = match page.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            let msg = format!("unknown format `{other}`: use json or csv\n");
            return Reply::text(StatusCode::BAD_REQUEST, msg);
        }
    };
    if page.hops > 0 {
        let next = format!(
            "/api/tickers/?start={}&limit={}&hops={}",
            page.start,
            page.limit,
            page.hops - 1
        );
        return Answer::Now(Reply {
            status: StatusCode::FOUND,
            header: Some((header::LOCATION, next)),
            body: String::new(),
        });
    }
    let faults = options.faults;
    if options.max_rate.is_some_and(over_rate) {
        return Answer::Now(Reply {
            status: StatusCode::TOO_MANY_REQUESTS,
            header: Some((header::RETRY_AFTER, "1".to_owned())),
            body: String::new(),
        });
    }
    if Faults::hit(faults.throttle) {
        return Answer::Now(Reply {
            status: StatusCode::TOO_MANY_REQUESTS,
            header: Some((header::RETRY_AFTER, faults.retry_after_s.to_string())),
            body: String::new(),
        });
    }
    if Faults::hit(faults.fail) {
        let msg = "injected failure\n".to_owned();
        return Reply::text(StatusCode::INTERNAL_SERVER_ERROR, msg);
    }
    let mut delay = random_delay(options.delay_ms);
    if Faults::hit(faults.stall) {
        delay += Duration::from_millis(faults.stall_ms);
    }
    Answer::Later(Pending {
        delay,
        truncate: Faults::hit(faults.truncate),
        start: page.start,
        limit: page.limit,
        csv,
        conditions: None,
    })
}

/// Requests of the tickers API answered in the current second of the clock, across
/// every event loop of the process (one server per process).
static THIS_SECOND: std::sync::Mutex<(u64, u64)> = std::sync::Mutex::new((0, 0));

/// Whether this request is over `max` in its second of the wall clock (`serve
/// --max-rate`): counted server-side, as rate-limiting servers count.
fn over_rate(max: u64) -> bool {
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut window = THIS_SECOND.lock().unwrap_or_else(|e| e.into_inner());
    if window.0 != second {
        *window = (second, 0);
    }
    window.1 += 1;
    window.1 > max
}

/// How long a truncated response waits between its half body and its failure, so that
/// the half is on the wire before the response is torn down.
pub(crate) const CUT_AFTER: Duration = Duration::from_millis(20);

/// The API as axum routes: what HTTP/1.1 connections (and HTTP/2 ones when responses
/// are compressed) are served with.
pub(crate) fn app(options: Options) -> Router {
    let echo_route = any(echo).layer(DefaultBodyLimit::max(echo::MAX_BODY));
    let mut router = ROUTES.into_iter().fold(Router::new(), |router, path| {
        router.route(path, get(tickers))
    });
    router = cursor::routes().into_iter().fold(router, |router, path| {
        router.route(path, get(cursor::handler))
    });
    let mut router = router.route(echo::PATH, echo_route);
    if let Some(text) = options.robots_txt {
        let robots = move || async move { ([(header::CONTENT_TYPE, "text/plain")], text) };
        router = router.route(ROBOTS_PATH, get(robots));
    }
    let mut router = router.with_state(options);
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

async fn tickers(
    State(options): State<Options>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let pending = match answer(&options, query.as_deref()) {
        Answer::Now(reply) => {
            let mut response = (reply.status, reply.body).into_response();
            if let Some((name, value)) = reply.header
                && let Ok(value) = HeaderValue::try_from(value)
            {
                response.headers_mut().insert(name, value);
            }
            return response;
        }
        Answer::Later(pending) => pending.on_conditions(&headers),
    };
    if !pending.delay.is_zero() {
        tokio::time::sleep(pending.delay).await;
    }
    let (body, kind) = pending.render(options.coins);
    if pending.truncate {
        return truncated(body, kind);
    }
    let etag = conditional::etag(body.as_bytes());
    let validators = [
        (header::LAST_MODIFIED, conditional::LAST_MODIFIED.to_owned()),
        (header::ETAG, etag),
    ];
    if pending.not_modified(&validators[1].1) {
        return (StatusCode::NOT_MODIFIED, validators).into_response();
    }
    ([(header::CONTENT_TYPE, kind.to_owned())], validators, body).into_response()
}

/// `/echo`: what the request was, as JSON (413 for a body over the limit).
async fn echo(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let text = echo::answer(&method, &uri, &headers, &body);
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

/// The whole length announced, half the bytes sent, then the connection fails.
fn truncated(body: String, kind: &'static str) -> Response {
    let len = body.len();
    let mut half = body.into_bytes();
    half.truncate(len / 2);
    let chunks = futures_util::stream::unfold(Some(half), |half| async move {
        match half {
            Some(half) => Some((Ok::<_, io::Error>(half), None)),
            None => {
                tokio::time::sleep(CUT_AFTER).await;
                let cut = io::Error::new(io::ErrorKind::ConnectionAborted, "injected truncation");
                Some((Err(cut), None))
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, kind.to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        Body::from_stream(chunks),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::plan::Span;

    #[test]
    fn delay_stays_inside_its_span() {
        for _ in 0..100 {
            let d = random_delay(Span { start: 2, end: 4 }).as_millis();
            assert!((2..=4).contains(&d));
        }
        assert!(random_delay(Span { start: 0, end: 0 }).is_zero());
    }

    fn decide(query: &str) -> Answer {
        answer(&Options::default(), Some(query))
    }

    #[test]
    fn queries_decide_the_answer() {
        let Answer::Later(page) = decide("start=20&limit=3") else {
            panic!("a plain page is sent later");
        };
        assert_eq!(page.render(1_000).0, tickers_json(20, 3, 1_000));
        let Answer::Later(page) = decide("start=5&limit=3&format=csv") else {
            panic!("a CSV page is sent later");
        };
        assert_eq!(page.render(1_000), (tickers_csv(5, 3, 1_000), "text/csv"));
        let Answer::Now(hop) = decide("start=1&limit=2&hops=2") else {
            panic!("a hop is answered at once");
        };
        assert_eq!(hop.status, StatusCode::FOUND);
        assert_eq!(
            hop.header,
            Some((
                header::LOCATION,
                "/api/tickers/?start=1&limit=2&hops=1".to_owned()
            ))
        );
        for bad in ["limit=10001", "format=xml", "start=-1", "limit=ten"] {
            let Answer::Now(reply) = decide(bad) else {
                panic!("`{bad}` is answered at once");
            };
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
