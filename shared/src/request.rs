//! What every request of a run sends besides its URL and the `--header`s: the method
//! and a body (`-X`, `-d`, `--data-json`), the same for a scrape and a load test.

use serde::{Deserialize, Serialize};

use crate::template::Template;

/// The method of every request, its body and the headers that describe them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestSpec {
    /// The method as given (methods are case-sensitive): `GET` unless the run says
    /// otherwise.
    pub method: String,
    /// The body, rendered per batch with the URL's placeholders; `None` sends none.
    pub body: Option<Template>,
    /// The body's `Content-Type`: it goes wherever the body goes, and is dropped with
    /// it when a redirect turns the request into a GET.
    pub content_type: Option<String>,
    /// An `Accept` header for every request, wherever a redirect leads
    /// (`--data-json`).
    pub accept: Option<String>,
}

impl Default for RequestSpec {
    fn default() -> Self {
        RequestSpec {
            method: "GET".to_owned(),
            body: None,
            content_type: None,
            accept: None,
        }
    }
}

impl RequestSpec {
    /// Whether sending the request twice has the effect of sending it once, so that a
    /// failed attempt may be made again (RFC 9110 §9.2.2).
    pub fn is_idempotent(&self) -> bool {
        is_idempotent(&self.method)
    }

    /// Whether requests carry a `Content-Length`: they have a body, or their method
    /// is one whose requests are expected to (then an empty one).
    pub fn is_framed(&self) -> bool {
        self.body.is_some() || matches!(self.method.as_str(), "POST" | "PUT" | "PATCH")
    }
}

/// Whether `method` is idempotent: GET, HEAD, PUT, DELETE, OPTIONS and TRACE are
/// (RFC 9110 §9.2.2); POST, PATCH and every method HTTP does not define are not.
pub fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_idempotent_methods_of_http_are_idempotent() {
        for method in ["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"] {
            assert!(is_idempotent(method), "{method}");
        }
        for method in ["POST", "PATCH", "post", "get", "PURGE", "QUERY"] {
            assert!(!is_idempotent(method), "{method}");
        }
    }

    #[test]
    fn a_request_is_framed_when_it_has_a_body_or_its_method_expects_one() {
        let get = RequestSpec::default();
        assert!(!get.is_framed() && get.is_idempotent());
        let post = RequestSpec {
            method: "POST".into(),
            ..RequestSpec::default()
        };
        assert!(post.is_framed() && !post.is_idempotent());
        let get_with_body = RequestSpec {
            body: Some(Template::parse_body("x").expect("template")),
            ..RequestSpec::default()
        };
        assert!(get_with_body.is_framed());
    }
}
