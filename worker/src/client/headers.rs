//! The request headers a run asks for (`--header`, `--user-agent`) and its method and
//! body (`-X`, `-d`, `--data-json`), checked once.

use http::Method;
use http::header::{CONNECTION, HeaderMap, HeaderName, HeaderValue, TRANSFER_ENCODING, UPGRADE};
use shared::request::RequestSpec;
use thiserror::Error;

use super::{Ask, ClientError, Handoff};

/// A configuration that cannot be turned into an HTTP client.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A `--header` whose name is not a valid HTTP header name.
    #[error("`{0}` is not a valid header name")]
    HeaderName(String),
    /// A `--header` whose value is not a valid HTTP header value (the value is not shown).
    #[error("the value of `{0}` is not a valid header value")]
    HeaderValue(String),
    /// A `--user-agent` that is not a valid header value.
    #[error("not a valid header value")]
    UserAgent,
    /// A `--request` that is not a method HTTP can send.
    #[error("`{0}` is not an HTTP method: use a token such as POST, PUT or PATCH")]
    Method(String),
    /// A `Content-Type` for the body that is not a valid header value.
    #[error("the Content-Type of the body is not a valid header value")]
    ContentType,
}

impl ConfigError {
    /// The command-line flag the error is about.
    pub fn flag(&self) -> &'static str {
        match self {
            ConfigError::HeaderName(_) | ConfigError::HeaderValue(_) => "--header",
            ConfigError::UserAgent => "--user-agent",
            ConfigError::Method(_) => "--request",
            ConfigError::ContentType => "--header",
        }
    }
}

/// The run's method and the headers that go with it, parsed once for every client.
#[derive(Debug, Clone)]
pub struct Verb {
    /// The method of a request as the run asks for it.
    pub method: Method,
    /// The body's `Content-Type`, sent with the body.
    pub content_type: Option<HeaderValue>,
    /// An `Accept` for every request.
    pub accept: Option<HeaderValue>,
    /// Whether requests as asked carry a `Content-Length` (see
    /// [`RequestSpec::is_framed`]).
    pub framed: bool,
    /// Whether a request as asked may be sent again after a failure: its method is
    /// idempotent, or `--retry-non-idempotent` says so.
    pub repeatable: bool,
}

impl Verb {
    /// The checked form of `spec`; `retry_any` is `--retry-non-idempotent`.
    pub fn new(spec: &RequestSpec, retry_any: bool) -> Result<Verb, ConfigError> {
        let method = Method::from_bytes(spec.method.as_bytes())
            .ok()
            .filter(|m| *m != Method::CONNECT)
            .ok_or_else(|| ConfigError::Method(spec.method.clone()))?;
        let value = |v: &Option<String>| v.as_deref().map(HeaderValue::from_str).transpose();
        Ok(Verb {
            method,
            content_type: value(&spec.content_type).map_err(|_| ConfigError::ContentType)?,
            accept: value(&spec.accept)
                .map_err(|_| ConfigError::HeaderValue("Accept".to_owned()))?,
            framed: spec.is_framed(),
            repeatable: retry_any || spec.is_idempotent(),
        })
    }

    /// What a lean client does with a compressed answer to `ask` from `url`, which
    /// only reqwest decodes: hand the request to reqwest, which sends it again; or,
    /// for a request that may not be sent twice, fail.
    pub fn encoded_answer(&self, url: String, ask: Ask<'_>) -> ClientError {
        if ask != Ask::Get && !self.repeatable {
            return ClientError::Other(format!(
                "the answer came compressed (Content-Encoding), which only --compressed decodes, and a {} is not sent twice",
                self.method
            ));
        }
        ClientError::NeedsFullClient(Handoff {
            url,
            hops: 0,
            as_get: ask == Ask::Get,
        })
    }

    /// Whether responses to the request as asked have no body (RFC 9110 §9.3.2).
    pub fn is_head(&self) -> bool {
        self.method == Method::HEAD
    }
}

/// `--header` pairs as a header map; values are marked sensitive, so that they are
/// never logged (nor indexed by HTTP/2 header compression).
pub fn header_map(pairs: &[(String, String)]) -> Result<HeaderMap, ConfigError> {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        let key = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ConfigError::HeaderName(name.clone()))?;
        let mut value =
            HeaderValue::from_str(value).map_err(|_| ConfigError::HeaderValue(name.clone()))?;
        value.set_sensitive(true);
        headers.append(key, value);
    }
    Ok(headers)
}

/// `(name, value)` pairs as the headers of an HTTP/2 request.
pub fn request_headers(pairs: &[(String, String)]) -> Result<HeaderMap, ConfigError> {
    let mut headers = header_map(pairs)?;
    strip_connection_headers(&mut headers);
    Ok(headers)
}

/// Connection-specific headers do not exist in HTTP/2 (RFC 9113, 8.2.2).
pub fn strip_connection_headers(headers: &mut HeaderMap) {
    for name in [CONNECTION, TRANSFER_ENCODING, UPGRADE] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}
