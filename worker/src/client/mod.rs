//! The HTTP clients of a worker, and what they share. A job's URL goes to one of:
//! - [`pool`]: the lean HTTP/1.1 client, a keep-alive pool on the wire reader of
//!   [`http1`];
//! - [`h2c`]: the lean HTTP/2 client under `--http2`;
//! - [`full`]: reqwest, for compressed bodies.
//!
//! The lean ones speak plain TCP or TLS over the streams of [`transport`], trusting
//! what [`crate::tls`] says.
//!
//! Each answers one request at a time through [`Exchange`] (the lean ones) or its own
//! `get` (reqwest); redirects are followed by hand for all of them ([`redirect`]), so
//! that one rule decides which headers go where.

pub mod conditional;
mod error;
pub mod full;
pub mod h2c;
mod headers;
pub mod http1;
pub mod pool;
pub mod redirect;
pub mod transport;

use bytes::Bytes;
use shared::refresh::Validators;

use crate::budget::Charge;

pub use error::{ClientError, Handoff, one_line};
pub use headers::{ConfigError, Verb, header_map, request_headers};

/// A response kept whole.
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// The body.
    pub body: Bytes,
    /// Its `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// Its `Link` header fields, joined by `, ` (what `--follow-next link` reads).
    pub link: Option<String>,
    /// The URL that answered, when redirects led away from the one asked for: a
    /// relative next link is resolved against it.
    pub url: Option<String>,
    /// Its `ETag` and `Last-Modified` (of a 2xx or a 304), for the next `--refresh`.
    pub validators: Validators,
    /// What the body holds of the worker's budget: taken as the body arrived, given
    /// back when it is dropped (once stored). Requests that wait for an answer hold
    /// none, so that ten thousand in flight carry no charge in their state.
    pub charge: Option<Charge>,
}

/// Adds one `Link` header field's `value` to those of the response so far: several
/// fields are one list (RFC 9110 §5.3).
pub fn add_link(links: &mut Option<String>, value: &str) {
    match links {
        Some(links) => {
            links.push_str(", ");
            links.push_str(value);
        }
        None => *links = Some(value.to_owned()),
    }
}

/// What a job's own request carries besides the run's headers, made once for all its
/// attempts: its body (empty, and no allocation, when the run sends none) and, on a
/// `--refresh`, the validators that make it conditional.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Payload {
    body: Box<[u8]>,
    validators: Option<Box<Validators>>,
}

impl Payload {
    /// A body of these bytes.
    pub fn new(bytes: Vec<u8>) -> Payload {
        Payload {
            body: bytes.into_boxed_slice(),
            validators: None,
        }
    }

    /// This payload, asking for the body only if it is not the one these validators
    /// describe (`If-None-Match`, `If-Modified-Since`); none, or empty ones, ask
    /// unconditionally.
    pub fn on_condition(mut self, validators: Option<Validators>) -> Payload {
        self.validators = validators.filter(|v| !v.is_empty()).map(Box::new);
        self
    }

    /// Its bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.body
    }

    /// The validators the request is conditional on, if it is.
    pub fn validators(&self) -> Option<&Validators> {
        self.validators.as_deref()
    }
}

/// What one hop of a request sends besides its URL and headers. A thin reference: it
/// is held at every level of a request in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask<'a> {
    /// The run's method (`-X`, GET by default) with the job's body (empty when the run
    /// sends none).
    Own(&'a Payload),
    /// GET without a body: what a 303 (or a 301 or 302 after a POST) turns a request
    /// into.
    Get,
}

/// One request and response of a lean client.
pub trait Exchange {
    /// Sends what `ask` says for `path` to `authority` (over TLS when `tls`): the
    /// response, and the
    /// `Location` of a redirect. The `--header`s go along only when `trusted` (see
    /// [`redirect`]); the body is kept within the worker's budget.
    fn exchange(
        &self,
        tls: bool,
        authority: &str,
        path: &str,
        ask: Ask<'_>,
        max_body: u64,
        trusted: bool,
    ) -> impl Future<Output = Result<(Response, Option<String>), ClientError>> + Send;

    /// Redirects followed at most.
    fn max_redirects(&self) -> u32;

    /// The run's method, which decides what a redirect turns a request into.
    fn method(&self) -> &http::Method;
}
