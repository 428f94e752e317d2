//! `/echo`, any method: a JSON object that says what the request was (its method, path,
//! query, `Content-Type`, `Accept`, body, and whether it carried `Proxy-Authorization`,
//! which only a proxy should ever see), so that a test can check exactly what a client
//! sent.

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri, header};

/// The path of the echo route.
pub(crate) const PATH: &str = "/echo";

/// Request bodies longer than this are refused (413).
pub(crate) const MAX_BODY: usize = 1 << 20;

/// The JSON text that answers a request of `method` for `uri` with `headers` and
/// `body`.
pub(crate) fn answer(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> String {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    serde_json::json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "content_type": header(header::CONTENT_TYPE),
        "accept": header(header::ACCEPT),
        "body": String::from_utf8_lossy(body),
        "proxy_authorization": headers.contains_key(header::PROXY_AUTHORIZATION),
    })
    .to_string()
}

/// Reads an HTTP/2 request body whole, at most [`MAX_BODY`] bytes: `None` when it is
/// longer or fails.
pub(crate) async fn read_h2_body(mut body: h2::RecvStream) -> Option<Bytes> {
    let mut whole = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.ok()?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if whole.len() + chunk.len() > MAX_BODY {
            return None;
        }
        whole.extend_from_slice(&chunk);
    }
    Some(Bytes::from(whole))
}

/// The status of a body that could not be read.
pub(crate) const TOO_LARGE: StatusCode = StatusCode::PAYLOAD_TOO_LARGE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_echo_names_method_path_query_types_and_body() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        let uri: Uri = "/echo?s=1".parse().unwrap();
        let text = answer(&Method::POST, &uri, &headers, br#"{"a":1}"#);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["method"], "POST");
        assert_eq!(
            (v["path"].as_str(), v["query"].as_str()),
            (Some("/echo"), Some("s=1"))
        );
        assert_eq!(v["content_type"], "application/json");
        assert!(v["accept"].is_null());
        assert_eq!(v["body"], r#"{"a":1}"#);
        assert_eq!(v["proxy_authorization"], false);
        headers.insert(header::PROXY_AUTHORIZATION, "Basic eDp5".parse().unwrap());
        let text = answer(&Method::GET, &uri, &headers, b"");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["proxy_authorization"], true);
    }
}
