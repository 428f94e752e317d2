//! `-X`, `-d` and `--data-json`: the method and body of every request of a scrape or a
//! load test, read (`@FILE`) and checked before anything starts.

use std::io;
use std::path::Path;

use shared::request::RequestSpec;
use shared::template::Template;

use crate::cli::RequestArgs;
use crate::error::{UsageError, usage};

/// Largest request body (or body template), in bytes: it goes to every worker in its
/// handshake and is recorded in `run.json`.
pub const MAX_BODY: usize = 4 << 20;

/// Which flag gave the body: it decides the `Content-Type` (and `Accept`) sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFlag {
    /// `-d`/`--data`: a form, `application/x-www-form-urlencoded`.
    Data,
    /// `--data-json`: JSON, `application/json`.
    Json,
}

impl BodyFlag {
    /// The flag, for messages.
    pub fn name(self) -> &'static str {
        match self {
            BodyFlag::Data => "--data",
            BodyFlag::Json => "--data-json",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            BodyFlag::Data => "application/x-www-form-urlencoded",
            BodyFlag::Json => "application/json",
        }
    }
}

/// The method and body of a run as text, files read: what `run.json` records and a
/// resume compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestText {
    /// The method that is sent: `-X`, or POST with a body, or GET.
    pub method: String,
    /// The body template and the flag that gave it.
    pub body: Option<(BodyFlag, String)>,
}

impl Default for RequestText {
    fn default() -> Self {
        RequestText {
            method: "GET".to_owned(),
            body: None,
        }
    }
}

impl RequestText {
    /// The method and body the flags give (an `@FILE` read through `read`); `None`
    /// when none of `-X`, `-d` and `--data-json` is given.
    pub fn from_args(
        args: &RequestArgs,
        read: &dyn Fn(&Path) -> io::Result<Vec<u8>>,
    ) -> Result<Option<RequestText>, UsageError> {
        let body = match (&args.data_json, args.data.as_slice()) {
            (Some(json), _) => Some((BodyFlag::Json, body_text(BodyFlag::Json, json, read)?)),
            (None, []) => None,
            (None, parts) => {
                let parts = parts
                    .iter()
                    .map(|part| body_text(BodyFlag::Data, part, read))
                    .collect::<Result<Vec<_>, _>>()?;
                Some((BodyFlag::Data, parts.join("&")))
            }
        };
        if args.method.is_none() && body.is_none() {
            return Ok(None);
        }
        let method = match &args.method {
            Some(method) => method.clone(),
            // As curl: a body without a method is a POST.
            None => "POST".to_owned(),
        };
        Ok(Some(RequestText { method, body }))
    }

    /// The request these flags ask for, taking a `Content-Type` (and `Accept`) given
    /// by `headers`, the checked `--header`s: a `Content-Type` there goes with the body
    /// (and leaves `headers`), wherever the body goes.
    pub fn spec(&self, headers: &mut Vec<(String, String)>) -> Result<RequestSpec, UsageError> {
        check_method(&self.method)?;
        let Some((flag, text)) = &self.body else {
            return Ok(RequestSpec {
                method: self.method.clone(),
                ..RequestSpec::default()
            });
        };
        if self.method == "HEAD" {
            return Err(usage(flag.name(), "a HEAD request has no body"));
        }
        if text.len() > MAX_BODY {
            let problem = format!("the body is over {} MiB", MAX_BODY >> 20);
            return Err(usage(flag.name(), problem));
        }
        let body = Template::parse_body(text).map_err(|e| usage(flag.name(), e))?;
        let named = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        let accept = (*flag == BodyFlag::Json && !named("accept")).then_some("application/json");
        let mut content_type = None;
        headers.retain(|(name, value)| {
            let is_type = name.eq_ignore_ascii_case("content-type");
            if is_type {
                content_type.get_or_insert_with(|| value.clone());
            }
            !is_type
        });
        Ok(RequestSpec {
            method: self.method.clone(),
            body: Some(body),
            content_type: Some(content_type.unwrap_or_else(|| flag.content_type().to_owned())),
            accept: accept.map(str::to_owned),
        })
    }
}

/// The text of a body flag's value: the value itself, or the file an `@FILE` names.
fn body_text(
    flag: BodyFlag,
    value: &str,
    read: &dyn Fn(&Path) -> io::Result<Vec<u8>>,
) -> Result<String, UsageError> {
    let Some(path) = value.strip_prefix('@') else {
        return Ok(value.to_owned());
    };
    let bytes = read(Path::new(path))
        .map_err(|e| usage(flag.name(), format!("cannot read {path}: {e}")))?;
    String::from_utf8(bytes).map_err(|_| {
        usage(
            flag.name(),
            format!("{path} is not UTF-8 text: a body here is text"),
        )
    })
}

/// A method HTTP can send: a token (RFC 9110 §5.6.2), and not CONNECT, which opens a
/// tunnel rather than asking for a page.
fn check_method(method: &str) -> Result<(), UsageError> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if method.is_empty() || !method.bytes().all(tchar) {
        return Err(usage(
            "--request",
            format!(
                "`{}` is not an HTTP method: use a token such as POST, PUT or PATCH",
                method.escape_debug()
            ),
        ));
    }
    if method.eq_ignore_ascii_case("CONNECT") {
        return Err(usage(
            "--request",
            "CONNECT opens a tunnel: it cannot fetch a batch",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(method: Option<&str>, data: &[&str], json: Option<&str>) -> RequestArgs {
        RequestArgs {
            method: method.map(str::to_owned),
            data: data.iter().map(|d| (*d).to_owned()).collect(),
            data_json: json.map(str::to_owned),
        }
    }

    fn no_files(path: &Path) -> io::Result<Vec<u8>> {
        match path.to_str() {
            Some("body.txt") => Ok(b"a={start}&b={index}".to_vec()),
            Some("binary") => Ok(vec![0xff, 0xfe]),
            _ => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }

    fn text(
        method: Option<&str>,
        data: &[&str],
        json: Option<&str>,
    ) -> Result<Option<RequestText>, UsageError> {
        RequestText::from_args(&args(method, data, json), &no_files)
    }

    #[test]
    fn a_body_without_a_method_is_a_post_and_no_flag_is_nothing() {
        assert_eq!(text(None, &[], None).unwrap(), None);
        let post = text(None, &["a=1", "b=2"], None).unwrap().unwrap();
        assert_eq!(post.method, "POST");
        assert_eq!(post.body, Some((BodyFlag::Data, "a=1&b=2".to_owned())));
        let put = text(Some("PUT"), &[], Some("{}")).unwrap().unwrap();
        assert_eq!(
            (put.method.as_str(), put.body),
            ("PUT", Some((BodyFlag::Json, "{}".to_owned())))
        );
        let file = text(None, &["@body.txt"], None).unwrap().unwrap();
        assert_eq!(file.body.unwrap().1, "a={start}&b={index}");
    }

    #[test]
    fn files_that_cannot_be_read_or_are_not_text_are_usage_errors() {
        let missing = text(None, &["@nope.txt"], None).unwrap_err().to_string();
        assert!(
            missing.starts_with("--data: cannot read nope.txt"),
            "{missing}"
        );
        let binary = text(None, &[], Some("@binary")).unwrap_err().to_string();
        assert!(
            binary.starts_with("--data-json: binary is not UTF-8"),
            "{binary}"
        );
    }

    #[test]
    fn a_form_and_json_each_bring_their_content_type_unless_a_header_names_one() {
        let mut headers = vec![("X-Key".to_owned(), "k".to_owned())];
        let form = text(None, &["a={start}"], None)
            .unwrap()
            .unwrap()
            .spec(&mut headers)
            .unwrap();
        assert_eq!(
            form.content_type.as_deref(),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(form.accept, None);
        let json = text(None, &[], Some(r#"{"o":{start}}"#)).unwrap().unwrap();
        let spec = json.spec(&mut headers).unwrap();
        assert_eq!(spec.content_type.as_deref(), Some("application/json"));
        assert_eq!(spec.accept.as_deref(), Some("application/json"));
        assert_eq!(headers.len(), 1);
        // A --header's Content-Type goes with the body; its Accept stays a header.
        let mut given = vec![
            (
                "content-type".to_owned(),
                "application/vnd.api+json".to_owned(),
            ),
            ("Accept".to_owned(), "*/*".to_owned()),
        ];
        let spec = json.spec(&mut given).unwrap();
        assert_eq!(
            spec.content_type.as_deref(),
            Some("application/vnd.api+json")
        );
        assert_eq!(spec.accept, None);
        assert_eq!(given, [("Accept".to_owned(), "*/*".to_owned())]);
        // Without a body, a --header's Content-Type is just a header.
        let mut alone = vec![("Content-Type".to_owned(), "text/plain".to_owned())];
        let delete = text(Some("DELETE"), &[], None)
            .unwrap()
            .unwrap()
            .spec(&mut alone)
            .unwrap();
        assert_eq!(
            (delete.body, delete.content_type, alone.len()),
            (None, None, 1)
        );
    }

    #[test]
    fn bad_methods_bodies_and_placeholders_are_refused_naming_their_flag() {
        let spec = |method: Option<&str>, data: &[&str], json: Option<&str>| {
            text(method, data, json)
                .unwrap()
                .unwrap()
                .spec(&mut Vec::new())
                .unwrap_err()
                .to_string()
        };
        assert!(
            spec(Some("PO ST"), &[], None).starts_with("--request: `PO ST` is not an HTTP method")
        );
        assert!(spec(Some(""), &[], None).starts_with("--request"));
        assert!(spec(Some("CONNECT"), &[], None).contains("tunnel"));
        assert!(spec(Some("HEAD"), &["x"], None).starts_with("--data: a HEAD request has no body"));
        let unknown = spec(None, &[], Some(r#"{"a":{stat}}"#));
        assert!(
            unknown.starts_with("--data-json: unknown placeholder `{stat}`"),
            "{unknown}"
        );
        let big = "x".repeat(MAX_BODY + 1);
        assert!(spec(None, &[&big], None).contains("over 4 MiB"));
    }
}
