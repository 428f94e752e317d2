//! `/api/cursor/`: a cursor-paged API, as most real paged APIs are. Each page names
//! the next one three ways at once: an opaque cursor in the body
//! (`meta.next_cursor`), a relative URL in the body (`next`), and a `Link:
//! <…>; rel="next"` header, as GitHub's API sends. The last page names none.
//!
//! `GET /api/cursor/?chain=C&pages=N&limit=L&cursor=X` is page `X` of chain `C`, a
//! chain of `N` pages (default 10) of `L` coins each (default 10); no cursor (or an
//! empty one) is page 1. `&loop=K` makes the last page name page `K` as its next, a
//! chain that never ends. Pages are deterministic: the same query always gets the
//! same bytes ([`cursor_page`]).

use std::fmt::Write as _;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use h2::server::SendResponse;
use serde::Deserialize;

use crate::pages::{mix, write_coin};
use crate::{Faults, MAX_LIMIT, Options};

/// The paths the endpoint answers on: the trailing slash is optional.
const ROUTES: [&str; 2] = ["/api/cursor/", "/api/cursor"];

/// Most pages one chain may have.
pub const MAX_PAGES: u64 = 1_000_000;

/// Whether the endpoint answers on `path`.
pub(crate) fn is_route(path: &str) -> bool {
    ROUTES.contains(&path)
}

/// The paths, for the router.
pub(crate) fn routes() -> [&'static str; 2] {
    ROUTES
}

#[derive(Debug, Deserialize)]
struct Query {
    #[serde(default)]
    chain: u64,
    #[serde(default = "default_pages")]
    pages: u64,
    #[serde(default = "default_limit")]
    limit: u64,
    #[serde(default)]
    cursor: String,
    /// The page the last page points back to; 0 for none.
    #[serde(default, rename = "loop")]
    loop_to: u64,
}

fn default_pages() -> u64 {
    10
}

fn default_limit() -> u64 {
    10
}

/// What one request gets.
pub(crate) struct CursorReply {
    pub status: StatusCode,
    /// The `Link` header of a page that has a next.
    pub link: Option<String>,
    /// JSON for a page, text for an error.
    pub body: String,
    /// Whether `body` is JSON.
    pub json: bool,
    /// How long to wait before answering.
    pub delay: Duration,
}

impl CursorReply {
    fn error(status: StatusCode, body: String) -> CursorReply {
        CursorReply {
            status,
            link: None,
            body,
            json: false,
            delay: Duration::ZERO,
        }
    }
}

/// Decides the answer to `GET /api/cursor/?{query}`.
pub(crate) fn answer(options: &Options, query: Option<&str>) -> CursorReply {
    let q: Query = match serde_urlencoded::from_str(query.unwrap_or("")) {
        Ok(q) => q,
        Err(e) => return CursorReply::error(StatusCode::BAD_REQUEST, format!("bad query: {e}\n")),
    };
    if q.limit > MAX_LIMIT || q.pages == 0 || q.pages > MAX_PAGES || q.loop_to > q.pages {
        let msg = format!(
            "limit must be at most {MAX_LIMIT}, pages 1 to {MAX_PAGES}, loop at most pages\n"
        );
        return CursorReply::error(StatusCode::BAD_REQUEST, msg);
    }
    let page = match page_of(q.chain, &q.cursor) {
        Some(page) if page <= q.pages => page,
        _ => {
            let msg = format!("`{}` is not a cursor of chain {}\n", q.cursor, q.chain);
            return CursorReply::error(StatusCode::BAD_REQUEST, msg);
        }
    };
    let faults = options.faults;
    if Faults::hit(faults.fail) {
        let msg = "injected failure\n".to_owned();
        return CursorReply::error(StatusCode::INTERNAL_SERVER_ERROR, msg);
    }
    let (body, next) = page_and_next(q.chain, page, q.pages, q.limit, q.loop_to);
    let link = next.map(|next| {
        format!(
            "<{next}>; rel=\"next\", <{}>; rel=\"first\"",
            path_of(q.chain, 0, q.pages, q.limit, q.loop_to)
        )
    });
    CursorReply {
        status: StatusCode::OK,
        link,
        body,
        json: true,
        delay: crate::random_delay(options.delay_ms),
    }
}

impl CursorReply {
    fn content_type(&self) -> &'static str {
        if self.json {
            "application/json"
        } else {
            "text/plain; charset=utf-8"
        }
    }
}

/// The endpoint for axum (HTTP/1.1, and HTTP/2 when responses are compressed).
pub(crate) async fn handler(State(options): State<Options>, RawQuery(query): RawQuery) -> Response {
    let reply = answer(&options, query.as_deref());
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let kind = reply.content_type();
    let mut response = (reply.status, [(header::CONTENT_TYPE, kind)], reply.body).into_response();
    if let Some(link) = reply.link
        && let Ok(link) = HeaderValue::try_from(link)
    {
        response.headers_mut().insert(header::LINK, link);
    }
    response
}

/// Sends `reply` on an HTTP/2 stream once its delay has passed (a task of its own: the
/// endpoint is for tests and examples, not for the hundred thousand streams the
/// connection's timer queue is made for).
pub(crate) async fn send_h2(mut respond: SendResponse<Bytes>, reply: CursorReply, head: bool) {
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = http::Response::new(());
    *response.status_mut() = reply.status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(reply.content_type()),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(reply.body.len()));
    if let Some(link) = reply.link
        && let Ok(link) = HeaderValue::try_from(link)
    {
        headers.insert(header::LINK, link);
    }
    if let Ok(mut stream) = respond.send_response(response, head)
        && !head
    {
        let _ = stream.send_data(Bytes::from(reply.body), true);
    }
}

/// The exact body of page `page` (from 1) of chain `chain`, a chain of `pages` pages
/// of `limit` coins whose last page names page `loop_to` as its next (0: none).
pub fn cursor_page(chain: u64, page: u64, pages: u64, limit: u64, loop_to: u64) -> String {
    page_and_next(chain, page, pages, limit, loop_to).0
}

/// The cursor of page `page` of chain `chain`: opaque, and with `+`, `/` or `=` in it
/// (base64 of the page number scrambled per chain), so that a client must encode it.
pub fn cursor_of(chain: u64, page: u64) -> String {
    base64(page ^ mix(chain ^ CURSOR_SALT))
}

/// Mixed into the cursors so that chains do not share them.
const CURSOR_SALT: u64 = 0x6375_7273_6f72;

/// The page a cursor stands for in `chain`: 1 for none, `None` for one this server
/// never gave out.
fn page_of(chain: u64, cursor: &str) -> Option<u64> {
    if cursor.is_empty() {
        return Some(1);
    }
    let page = unbase64(cursor)? ^ mix(chain ^ CURSOR_SALT);
    (page >= 1).then_some(page)
}

/// The page's body and the path of its next page.
fn page_and_next(
    chain: u64,
    page: u64,
    pages: u64,
    limit: u64,
    loop_to: u64,
) -> (String, Option<String>) {
    let next_page = if page < pages {
        Some(page + 1)
    } else {
        (loop_to > 0).then_some(loop_to)
    };
    let first = chain
        .saturating_mul(pages)
        .saturating_add(page - 1)
        .saturating_mul(limit);
    let mut out = String::with_capacity(320 * limit as usize + 256);
    let _ = write!(out, "{{\"chain\":{chain},\"page\":{page},\"data\":[");
    for (i, n) in (first..first.saturating_add(limit)).enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_coin(&mut out, n);
    }
    out.push_str("],\"meta\":{\"next_cursor\":");
    let next = next_page.map(|p| path_of(chain, p, pages, limit, loop_to));
    match (next_page, &next) {
        (Some(p), Some(path)) => {
            let _ = write!(out, "\"{}\"}},\"next\":\"{path}\"}}", cursor_of(chain, p));
        }
        _ => out.push_str("null},\"next\":null}"),
    }
    (out, next)
}

/// The path and query of page `page` of a chain (page 0 and 1: no cursor).
fn path_of(chain: u64, page: u64, pages: u64, limit: u64, loop_to: u64) -> String {
    let mut path = format!("/api/cursor/?chain={chain}&pages={pages}&limit={limit}");
    if loop_to > 0 {
        let _ = write!(path, "&loop={loop_to}");
    }
    if page > 1 {
        path.push_str("&cursor=");
        for b in cursor_of(chain, page).bytes() {
            match b {
                b'+' => path.push_str("%2B"),
                b'/' => path.push_str("%2F"),
                b'=' => path.push_str("%3D"),
                b => path.push(char::from(b)),
            }
        }
    }
    path
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The eight bytes of `n` (big-endian) in standard base64, with its padding.
fn base64(n: u64) -> String {
    let bytes = n.to_be_bytes();
    let mut out = String::with_capacity(12);
    for chunk in bytes.chunks(3) {
        let word = chunk
            .iter()
            .enumerate()
            .fold(0u32, |w, (i, &b)| w | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((word >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The number [`base64`] made, or `None`.
fn unbase64(text: &str) -> Option<u64> {
    let mut bits: u128 = 0;
    let digits = text.strip_suffix('=')?;
    if digits.len() != 11 {
        return None;
    }
    for c in digits.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)?;
        bits = (bits << 6) | v as u128;
    }
    // 66 bits: the two lowest are the padding's zeros.
    (bits & 3 == 0).then_some((bits >> 2) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_opaque_and_read_back() {
        for chain in [0, 1, 7, u64::MAX] {
            for page in [2, 3, 40, MAX_PAGES] {
                let cursor = cursor_of(chain, page);
                assert_eq!(cursor.len(), 12);
                assert_eq!(page_of(chain, &cursor), Some(page), "{cursor}");
            }
        }
        assert_eq!(page_of(3, ""), Some(1));
        assert_eq!(page_of(3, "nonsense"), None);
        // A cursor of one chain means nothing (or another page) in another.
        assert_ne!(page_of(4, &cursor_of(3, 2)), Some(2));
        let all: String = (2..200).map(|p| cursor_of(0, p)).collect();
        assert!(all.contains('+') || all.contains('/'), "{all}");
    }

    #[test]
    fn a_chain_names_each_next_page_and_ends() {
        let options = Options::default();
        let first = answer(&options, Some("chain=2&pages=3&limit=2"));
        assert_eq!(first.status, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_str(&first.body).unwrap();
        assert_eq!(
            (v["chain"].as_u64(), v["page"].as_u64()),
            (Some(2), Some(1))
        );
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        let cursor = v["meta"]["next_cursor"].as_str().unwrap().to_owned();
        assert_eq!(cursor, cursor_of(2, 2));
        let next = v["next"].as_str().unwrap().to_owned();
        assert!(next.starts_with("/api/cursor/?chain=2&pages=3&limit=2&cursor="));
        assert_eq!(
            first.link.as_deref(),
            Some(
                format!(
                    r#"<{next}>; rel="next", </api/cursor/?chain=2&pages=3&limit=2>; rel="first""#
                )
                .as_str()
            )
        );
        let second = answer(&options, next.split_once('?').map(|(_, q)| q));
        assert_eq!(second.body, cursor_page(2, 2, 3, 2, 0));
        let last = answer(
            &options,
            Some(&format!("chain=2&pages=3&limit=2&cursor={}", "x")),
        );
        assert_eq!(last.status, StatusCode::BAD_REQUEST);
        let third = cursor_page(2, 3, 3, 2, 0);
        assert!(
            third.ends_with(r#""meta":{"next_cursor":null},"next":null}"#),
            "{third}"
        );
        let looped = cursor_page(2, 3, 3, 2, 2);
        assert!(looped.contains(&cursor_of(2, 2)), "{looped}");
        // Chains hold different coins.
        assert_ne!(cursor_page(0, 1, 3, 2, 0), cursor_page(1, 1, 3, 2, 0));
        for bad in ["pages=0", "limit=10001", "pages=2&loop=3", "chain=x"] {
            assert_eq!(
                answer(&options, Some(bad)).status,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }
}
