//! Following redirects by hand, for every client: where a `Location` points, and
//! whether the user's headers may go there.
//!
//! Like curl without `--location-trusted`: the `--header`s (an `Authorization`, a
//! `Cookie`, an API key, whatever they are) go only to the origin (scheme, host and
//! port) of the URL the job asked for. A redirect elsewhere gets the `User-Agent`
//! alone, unless the run trusts every location.
//!
//! What the next hop sends is what browsers and reqwest send: a 303 turns any method
//! but HEAD into a GET without a body, a 301 or 302 turns a POST into one (curl keeps
//! the POST there), and a 307 or 308 keeps the method and the body.

use http::Method;
use shared::http_url::split_http_url;
use url::Url;

use crate::hosts::HostGates;

use super::{Ask, ClientError, Exchange, Handoff, Response};

/// Statuses whose `Location` is followed.
pub fn is_followed(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// What the hop after a redirect with `status` sends, for a run whose method is
/// `method` and a hop that sent `ask`.
pub fn after<'a>(status: u16, method: &Method, ask: Ask<'a>) -> Ask<'a> {
    match (status, ask) {
        (303, Ask::Own(_)) if *method != Method::HEAD => Ask::Get,
        (301 | 302, Ask::Own(_)) if *method == Method::POST => Ask::Get,
        (_, ask) => ask,
    }
}

/// The URL a `Location` header points to, from a request to `base`: resolved as a
/// browser would, with what a browser would percent-encode encoded, so that nothing a
/// server writes there reaches a request line raw.
pub fn resolve(base: &str, location: &str) -> Result<Url, ClientError> {
    let bad = |why: String| ClientError::Redirect(format!("{BAD_LOCATION}{location}`: {why}"));
    let next = Url::parse(base)
        .and_then(|base| base.join(location))
        .map_err(|e| bad(e.to_string()))?;
    match next.scheme() {
        "http" | "https" if next.host_str().is_some() => Ok(next),
        "http" | "https" => Err(bad("no host".to_owned())),
        other => Err(bad(format!("unsupported scheme `{other}`"))),
    }
}

/// Whether `url` has the origin of `original`: the same scheme, host and port (the
/// default port of the scheme when none is written).
pub fn same_origin(original: &str, url: &str) -> bool {
    match (Url::parse(original), Url::parse(url)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

/// Sends what `ask` says to `url` (an `http://` or `https://` URL) through `client`,
/// following its redirects; the `--header`s go to `url`'s origin only, or everywhere
/// when `trust_all`. Each hop waits at the gate of its own host (`gates`). The clients
/// have no `get` of their own: an `async fn` around this one would add a layer of
/// state to every request in flight. Not an `async fn` itself either: its arguments
/// would be kept twice in that state.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
pub fn follow_redirects(
    client: &impl Exchange,
    gates: &HostGates,
    url: &str,
    ask: Ask<'_>,
    max_body: u64,
    trust_all: bool,
) -> impl Future<Output = Result<Response, ClientError>> {
    async move {
        let mut ask = ask;
        // Owned only after a redirect: a request in flight holds no copy of its URL.
        let mut redirected: Option<String> = None;
        let mut hops = 0;
        loop {
            let at = redirected.as_deref().unwrap_or(url);
            // Decided per hop, not kept: the state of every request in flight stays small.
            let trusted = trust_all || redirected.is_none() || same_origin(url, at);
            let split = split_http_url(at).map_err(|_| {
                ClientError::NeedsFullClient(Handoff {
                    url: at.to_owned(),
                    hops,
                    as_get: ask == Ask::Get,
                })
            })?;
            // Boxed: only runs with per-host limits or --adaptive on (the default) wait here.
            let _permit = match gates.is_active() {
                true => Some(Box::pin(gates.enter(split.tls, &split.authority)).await),
                false => None,
            };
            let (fetched, location) = client
                .exchange(
                    split.tls,
                    &split.authority,
                    &split.path,
                    ask,
                    max_body,
                    trusted,
                )
                .await?;
            let Some(location) = location else {
                let mut fetched = fetched;
                fetched.url = redirected;
                return Ok(fetched);
            };
            ask = after(fetched.status, client.method(), ask);
            // The redirect's own body is not kept (nor its charge).
            drop(fetched);
            if hops == client.max_redirects() {
                return Err(too_many(client.max_redirects()));
            }
            hops += 1;
            redirected = Some(String::from(resolve(at, &location)?));
        }
    }
}

/// How the error of a batch whose redirects could not be followed starts (too many,
/// or a `Location` no request can be made of).
const TOO_MANY: &str = "more than ";
const BAD_LOCATION: &str = "redirect to `";

/// The error of a batch that hit `--max-redirects`.
pub fn too_many(max: u32) -> ClientError {
    ClientError::Redirect(format!("{TOO_MANY}{max} redirects (--max-redirects)"))
}

/// Whether a batch's `error` says that its redirects led nowhere: too many of them, or
/// a `Location` that cannot be followed (what robots.txt rules call "unavailable").
pub fn is_redirect_failure(error: &str) -> bool {
    error.starts_with(TOO_MANY) || error.starts_with(BAD_LOCATION)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Payload;

    #[test]
    fn locations_resolve_like_a_browser_would() {
        let at = |loc: &str| resolve("http://h:81/a/b?x=1", loc).map(String::from);
        assert_eq!(at("http://o:82/z").unwrap(), "http://o:82/z");
        assert_eq!(at("/z?q").unwrap(), "http://h:81/z?q");
        assert_eq!(at("//o/z").unwrap(), "http://o/z");
        assert_eq!(at("c").unwrap(), "http://h:81/a/c");
        assert_eq!(at("https://o/z").unwrap(), "https://o/z");
        assert_eq!(at("/a b\tc").unwrap(), "http://h:81/a%20bc");
        assert!(
            matches!(at("ftp://o/z"), Err(ClientError::Redirect(ref m)) if is_redirect_failure(m))
        );
        let ClientError::Redirect(many) = too_many(5) else {
            panic!("too many redirects is a redirect error");
        };
        assert!(is_redirect_failure(&many));
        assert!(!is_redirect_failure("HTTP 503 Service Unavailable"));
    }

    #[test]
    fn redirects_change_the_method_as_browsers_do() {
        let body = Payload::new(b"x=1".to_vec());
        let own = Ask::Own(&body);
        for status in [301, 302, 303] {
            assert_eq!(after(status, &Method::POST, own), Ask::Get, "{status}");
        }
        for status in [307, 308] {
            assert_eq!(after(status, &Method::POST, own), own, "{status}");
        }
        // PUT keeps its method and body on 301 and 302, and loses them on 303.
        assert_eq!(after(302, &Method::PUT, own), own);
        assert_eq!(after(303, &Method::PUT, own), Ask::Get);
        let none = Payload::default();
        assert_eq!(after(303, &Method::HEAD, Ask::Own(&none)), Ask::Own(&none));
        // Once a GET, always a GET.
        assert_eq!(after(307, &Method::POST, Ask::Get), Ask::Get);
    }

    #[test]
    fn an_origin_is_scheme_host_and_port() {
        assert!(same_origin("http://h/a", "http://H:80/b"));
        assert!(!same_origin("http://127.0.0.1:81/", "http://localhost:81/"));
        assert!(!same_origin("http://h/", "https://h/"));
        assert!(!same_origin("http://h:81/", "http://h:82/"));
        assert!(!same_origin("not a url", "not a url"));
    }
}
