//! Conditional requests, for `--refresh` (RFC 9110 §13.1): the validators of a stored
//! body go out as `If-None-Match` and `If-Modified-Since`, and those of a response come
//! in from its `ETag` and `Last-Modified`. Both are sent when both are known, as curl
//! and browsers do; a server that honours `If-None-Match` ignores the other.

use http::header::{ETAG, HeaderMap, HeaderValue, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use shared::refresh::{Validators, is_sendable};

/// The request headers that make a request conditional on `validators`, as
/// `(name, value)` pairs; a value that cannot be sent as it is, is left out.
fn pairs(validators: &Validators) -> impl Iterator<Item = (&'static str, &str)> {
    let etag = validators.etag.as_deref().map(|v| ("If-None-Match", v));
    let date = validators
        .last_modified
        .as_deref()
        .map(|v| ("If-Modified-Since", v));
    etag.into_iter()
        .chain(date)
        .filter(|(_, value)| is_sendable(value))
}

/// `validators` as HTTP/1.1 header lines, appended to `out`.
pub fn append_lines(validators: &Validators, out: &mut Vec<u8>) {
    for (name, value) in pairs(validators) {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// `validators` as headers of an HTTP/2 or reqwest request.
pub fn insert(validators: &Validators, headers: &mut HeaderMap) {
    for (name, value) in pairs(validators) {
        if let Ok(value) = HeaderValue::from_str(value) {
            let name = match name {
                "If-None-Match" => IF_NONE_MATCH,
                _ => IF_MODIFIED_SINCE,
            };
            headers.insert(name, value);
        }
    }
}

/// The validators of a response with these headers.
pub fn of(headers: &HeaderMap) -> Validators {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    Validators::new(text(ETAG), text(LAST_MODIFIED))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validators_go_out_as_conditions_and_come_back_from_a_response() {
        let v = Validators::new(Some("W/\"a1\""), Some("Tue, 14 Nov 2023 22:13:20 GMT"));
        let mut lines = Vec::new();
        append_lines(&v, &mut lines);
        assert_eq!(
            String::from_utf8(lines).unwrap(),
            "If-None-Match: W/\"a1\"\r\nIf-Modified-Since: Tue, 14 Nov 2023 22:13:20 GMT\r\n"
        );
        let mut headers = HeaderMap::new();
        insert(&v, &mut headers);
        assert_eq!(headers[IF_NONE_MATCH], "W/\"a1\"");
        assert_eq!(headers[IF_MODIFIED_SINCE], "Tue, 14 Nov 2023 22:13:20 GMT");
        let mut response = HeaderMap::new();
        response.insert(ETAG, HeaderValue::from_static("\"b2\""));
        assert_eq!(of(&response).etag.as_deref(), Some("\"b2\""));
        assert_eq!(of(&response).last_modified, None);
    }

    #[test]
    fn a_value_that_would_break_the_request_is_never_sent() {
        // Not made by `Validators::new`, as a frame could carry it.
        let v = Validators {
            etag: Some("\"x\"\r\nX-Injected: 1".to_owned()),
            last_modified: None,
        };
        let mut lines = Vec::new();
        append_lines(&v, &mut lines);
        assert!(lines.is_empty());
        let mut headers = HeaderMap::new();
        insert(&v, &mut headers);
        assert!(headers.is_empty());
    }
}
