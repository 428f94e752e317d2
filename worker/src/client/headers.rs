//! The request headers a run asks for (`--header`, `--user-agent`), checked once.

use http::header::{CONNECTION, HeaderMap, HeaderName, HeaderValue, TRANSFER_ENCODING, UPGRADE};
use thiserror::Error;

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
}

impl ConfigError {
    /// The command-line flag the error is about.
    pub fn flag(&self) -> &'static str {
        match self {
            ConfigError::HeaderName(_) | ConfigError::HeaderValue(_) => "--header",
            ConfigError::UserAgent => "--user-agent",
        }
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
