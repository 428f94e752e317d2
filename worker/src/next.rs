//! The next page a page names (`--follow-next`): the value at a JSON pointer in its
//! body, or the `rel="next"` of its `Link` header, made into the URL to fetch.
//!
//! A JSON value that is a URL, absolute or relative to the page, is followed. When
//! `--url` has a `{cursor}`, a value that is not an absolute URL is a bare cursor and
//! goes into it instead (a number too). Missing, `null` and `""` mean "no next page".
//!
//! The pointer is walked while the body is parsed, without building the document:
//! every value off the path is skipped unallocated, so a page of megabytes costs one
//! pass over its bytes and no tree (`serde_json::Value::pointer` is the oracle in the
//! tests).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use shared::chain::{FollowNext, NextPage, pointer_tokens};
use shared::template::{Template, Values, Var};
use url::Url;

/// Longest next URL followed, as long as a URL the coordinator takes in.
const MAX_URL_LEN: usize = 64 * 1024;

/// Bodies longer than this are searched off the event loop: a parse of a few hundred
/// KiB takes long enough to delay every other request of the worker.
pub const INLINE_BODY: usize = 256 * 1024;

/// How one run reads next pages.
#[derive(Debug)]
pub struct NextRule {
    follow: FollowNext,
    /// The pointer's reference tokens, unescaped (JSON only).
    tokens: Vec<String>,
    /// `--url`, when it has a `{cursor}`: bare cursors go into it.
    cursor_template: Option<Template>,
}

impl NextRule {
    /// The rule for `follow`, with the run's URL template (if any). `None` when the
    /// pointer does not parse, which the coordinator has checked already.
    pub fn new(follow: &FollowNext, template: Option<&Template>) -> Option<NextRule> {
        let tokens = match follow {
            FollowNext::Json(pointer) => pointer_tokens(pointer)?,
            FollowNext::Link => Vec::new(),
        };
        Some(NextRule {
            follow: follow.clone(),
            tokens,
            cursor_template: template.filter(|t| t.uses(Var::Cursor)).cloned(),
        })
    }

    /// Whether reading `body` may take long enough to belong off the event loop.
    pub fn is_slow(&self, body: &[u8]) -> bool {
        matches!(self.follow, FollowNext::Json(_)) && body.len() > INLINE_BODY
    }

    /// The next page of the page at `page_url` (the URL that answered, after
    /// redirects) with this `body` and `Link` header, in the chain whose URL template
    /// renders with `values`. `Ok(None)` ends the chain; an error says why the page
    /// cannot be followed (the page then fails, so that a resume does not take it for
    /// the chain's last).
    pub fn next_page(
        &self,
        values: &Values,
        page_url: &str,
        body: &[u8],
        link: Option<&str>,
    ) -> Result<Option<NextPage>, String> {
        let text = match &self.follow {
            FollowNext::Link => match link.and_then(next_link) {
                Some(target) => return self.url(page_url, target).map(Some),
                None => return Ok(None),
            },
            FollowNext::Json(_) => self.json_value(body)?,
        };
        let Some((text, is_number)) = text else {
            return Ok(None);
        };
        match &self.cursor_template {
            Some(template) if !is_absolute(&text) => {
                let url = template.render_cursor(values, &text);
                self.check_len(&url)?;
                Ok(Some(NextPage {
                    url,
                    cursor: Some(text),
                }))
            }
            None if is_number => Err(format!(
                "--follow-next {}: the next page is the number {text}: put {{cursor}} in --url to use it as a cursor",
                self.follow
            )),
            _ => self.url(page_url, &text).map(Some),
        }
    }

    /// The value at the pointer as text (and whether it was a number); `None` for no
    /// next page.
    fn json_value(&self, body: &[u8]) -> Result<Option<(String, bool)>, String> {
        let follow = &self.follow;
        let value = value_at(body, &self.tokens)
            .map_err(|e| format!("--follow-next {follow}: the body is not JSON: {e}"))?;
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some((s, false))),
            Some(Value::Number(n)) => Ok(Some((n.to_string(), true))),
            Some(other) => Err(format!(
                "--follow-next {follow}: the value there is {}, not a URL or a cursor",
                kind(&other)
            )),
        }
    }

    /// `target` resolved against `base` as a browser resolves a link.
    fn url(&self, base: &str, target: &str) -> Result<NextPage, String> {
        let bad = |why: String| {
            format!(
                "--follow-next {}: the next page `{}` is not a URL: {why}",
                self.follow,
                shown(target)
            )
        };
        let url = Url::parse(base)
            .and_then(|base| base.join(target.trim()))
            .map_err(|e| bad(e.to_string()))?;
        match url.scheme() {
            "http" | "https" if url.host_str().is_some() => {}
            "http" | "https" => return Err(bad("no host".to_owned())),
            other => return Err(bad(format!("unsupported scheme `{other}`"))),
        }
        let url = String::from(url);
        self.check_len(&url)?;
        Ok(NextPage { url, cursor: None })
    }

    fn check_len(&self, url: &str) -> Result<(), String> {
        if url.len() > MAX_URL_LEN {
            return Err(format!(
                "--follow-next {}: the next page's URL is longer than {MAX_URL_LEN} bytes",
                self.follow
            ));
        }
        Ok(())
    }
}

/// Whether `text` is an absolute `http:` or `https:` URL.
fn is_absolute(text: &str) -> bool {
    let text = text.trim_start();
    ["http://", "https://"].iter().any(|scheme| {
        text.get(..scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
    })
}

/// The start of a value, for a message.
fn shown(text: &str) -> String {
    match text.char_indices().nth(100) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Bool(_) => "a boolean",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
        Value::Null | Value::Number(_) | Value::String(_) => "a scalar",
    }
}

/// The `rel="next"` target of a `Link` header (RFC 8288 §3): the URI reference of the
/// first link whose `rel` lists `next`. Commas and semicolons inside `<…>` and inside
/// quoted strings belong to them; a link that does not parse is skipped.
pub fn next_link(header: &str) -> Option<&str> {
    let mut rest = header;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
        if rest.is_empty() {
            return None;
        }
        let Some(after) = rest.strip_prefix('<') else {
            rest = skip_link(rest);
            continue;
        };
        let close = after.find('>')?;
        let target = &after[..close];
        let (rels, after_params) = rel_of(&after[close + 1..]);
        if rels.is_some_and(|rels| {
            rels.split_ascii_whitespace()
                .any(|r| r.eq_ignore_ascii_case("next"))
        }) {
            return Some(target);
        }
        rest = after_params;
    }
}

/// The value of the first `rel` parameter of one link's parameters (`; rel="next";
/// title=…`), and what follows the link.
fn rel_of(params: &str) -> (Option<String>, &str) {
    let mut rel = None;
    let mut rest = params;
    loop {
        rest = rest.trim_start();
        let Some(after) = rest.strip_prefix(';') else {
            // A comma (or the end) ends the link; anything else is skipped to it.
            return (rel, skip_link(rest));
        };
        let after = after.trim_start();
        let name_end = after
            .find(|c: char| c == '=' || c == ';' || c == ',' || c.is_ascii_whitespace())
            .unwrap_or(after.len());
        let name = &after[..name_end];
        let mut next = after[name_end..].trim_start();
        let mut value = None;
        if let Some(v) = next.strip_prefix('=') {
            let (text, left) = param_value(v.trim_start());
            value = Some(text);
            next = left;
        }
        // RFC 8288 §3.3: only the first `rel` counts.
        if name.eq_ignore_ascii_case("rel") && rel.is_none() {
            rel = Some(value.unwrap_or_default());
        }
        rest = next;
    }
}

/// A parameter's value, a token or a quoted string (backslash escapes undone), and
/// what follows it.
fn param_value(text: &str) -> (String, &str) {
    let Some(quoted) = text.strip_prefix('"') else {
        let end = text.find([';', ',']).unwrap_or(text.len());
        return (text[..end].trim_end().to_owned(), &text[end..]);
    };
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (value, &quoted[i + 1..]),
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    value.push(escaped);
                }
            }
            c => value.push(c),
        }
    }
    // An unclosed quote takes the rest.
    (value, "")
}

/// What follows the link `text` starts inside: past the next comma that is not in a
/// `<…>` or a quoted string.
fn skip_link(text: &str) -> &str {
    let (mut quoted, mut bracketed, mut escaped) = (false, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' if !bracketed => quoted = !quoted,
            '<' if !quoted => bracketed = true,
            '>' if !quoted => bracketed = false,
            ',' if !quoted && !bracketed => return &text[i + 1..],
            _ => {}
        }
    }
    ""
}

/// The value at `tokens` (a JSON pointer's reference tokens) in the JSON `body`, found
/// in one pass that builds nothing off the path; `None` when there is none. The whole
/// body must be JSON.
pub fn value_at(body: &[u8], tokens: &[String]) -> Result<Option<Value>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = Walk { tokens }.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Deserializes the value the tokens lead to from here, skipping the rest.
struct Walk<'t> {
    tokens: &'t [String],
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = Option<Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match self.tokens.split_first() {
            None => serde::Deserialize::deserialize(d).map(Some),
            Some((token, rest)) => d.deserialize_any(Step { token, rest }),
        }
    }
}

/// One step down the path: into the member named `token`, or the element at it.
struct Step<'t> {
    token: &'t str,
    rest: &'t [String],
}

impl<'de> Visitor<'de> for Step<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    // A scalar has nothing inside: the path leads nowhere.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut matched = false;
        while let Some(hit) = map.next_key_seed(KeyIs(self.token))? {
            if hit && !matched {
                matched = true;
                found = map.next_value_seed(Walk { tokens: self.rest })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let wanted = array_index(self.token);
        let mut found = None;
        let mut i = 0;
        loop {
            if Some(i) == wanted {
                match seq.next_element_seed(Walk { tokens: self.rest })? {
                    Some(value) => found = value,
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(found)
    }
}

/// An array index as RFC 6901 writes it: `0`, or digits without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    if !digits || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

/// Whether a member's name is the token, compared without allocating it.
struct KeyIs<'t>(&'t str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(pointer: &str) -> Vec<String> {
        pointer_tokens(pointer).unwrap()
    }

    #[test]
    fn the_walk_finds_what_value_pointer_finds() {
        let docs = [
            r#"{"next":"/p?c=2","data":[1,2,{"next":"no"}],"meta":{"next_cursor":"abc","n":7}}"#,
            r#"{"a/b":{"m~n":[10,{"x":null},"s"]},"":{"":1},"0":[{"1":true}]}"#,
            r#"[{"next":null},[1,[2,[3]]],"x"]"#,
            r#""just a string""#,
            r#"{"deep":{"a":{"b":{"c":{"d":[0,1,2,3,4,5,6,7,8,9,10,11]}}}}}"#,
        ];
        let pointers = [
            "",
            "/",
            "/next",
            "/data",
            "/data/2",
            "/data/2/next",
            "/data/3",
            "/data/-",
            "/data/01",
            "/meta/next_cursor",
            "/meta/n",
            "/meta/n/x",
            "/a~1b/m~0n/1/x",
            "/a~1b/m~0n/2",
            "//",
            "/0/0/1",
            "/0/next",
            "/1/1/1/0",
            "/2",
            "/deep/a/b/c/d/11",
            "/deep/a/b/c/d/12",
            "/missing/x",
        ];
        for doc in docs {
            let whole: Value = serde_json::from_str(doc).unwrap();
            for pointer in pointers {
                let walked = value_at(doc.as_bytes(), &tokens(pointer)).unwrap();
                assert_eq!(
                    walked.as_ref(),
                    whole.pointer(pointer),
                    "{pointer} in {doc}"
                );
            }
        }
    }

    #[test]
    fn a_body_that_is_not_json_or_has_bytes_after_it_is_an_error() {
        for bad in ["", "{", "{\"next\":\"a\"} x", "<html>", "{\"a\":1,}"] {
            assert!(value_at(bad.as_bytes(), &tokens("/next")).is_err(), "{bad}");
        }
        assert!(value_at(b" {\"next\":1} \n", &tokens("/next")).is_ok());
    }

    #[test]
    fn link_headers_give_the_first_rel_next() {
        let github = r#"<https://api.github.com/repositories/1/issues?page=2>; rel="next", <https://api.github.com/repositories/1/issues?page=5>; rel="last""#;
        assert_eq!(
            next_link(github),
            Some("https://api.github.com/repositories/1/issues?page=2")
        );
        // Commas and semicolons inside the URL and inside quoted strings, other
        // parameters first, several relation types, unquoted and upper case.
        let tricky = r#"</a?x=1,2;3>; title="a, b; rel=next"; rel="prev", </b>; title*=UTF-8'de'n%c3%a4chste; rel="last NEXT""#;
        assert_eq!(next_link(tricky), Some("/b"));
        assert_eq!(next_link("</c>;rel=next"), Some("/c"));
        assert_eq!(next_link(r#"</d>; rel="next"; rel="prev""#), Some("/d"));
        assert_eq!(
            next_link(r#"</e>; rel="prev"; rel="next""#),
            None,
            "the first rel counts"
        );
        assert_eq!(next_link(r#"</f>; rel="nextpage""#), None);
        assert_eq!(
            next_link(r#"garbage; rel="next", </g>; rel="next""#),
            Some("/g")
        );
        assert_eq!(
            next_link(r#"</h>; rel="next"#),
            Some("/h"),
            "an unclosed quote"
        );
        assert_eq!(next_link("<unclosed; rel=next"), None);
        assert_eq!(next_link(""), None);
    }

    fn values() -> Values {
        Values {
            index: 4,
            start: 4,
            end: 5,
            page: 1,
        }
    }

    fn rule(follow: &str, template: Option<&str>) -> NextRule {
        let template = template.map(|t| Template::parse_allowing(t, &[Var::Cursor]).unwrap());
        NextRule::new(&follow.parse().unwrap(), template.as_ref()).unwrap()
    }

    fn next(rule: &NextRule, body: &str, link: Option<&str>) -> Result<Option<NextPage>, String> {
        rule.next_page(&values(), "http://h:81/api/x?a=1", body.as_bytes(), link)
    }

    fn url(page: Result<Option<NextPage>, String>) -> String {
        page.unwrap().unwrap().url
    }

    #[test]
    fn json_links_are_resolved_against_the_page() {
        let r = rule("json:/next", None);
        assert_eq!(
            url(next(&r, r#"{"next":"/api/x?c=2"}"#, None)),
            "http://h:81/api/x?c=2"
        );
        assert_eq!(
            url(next(&r, r#"{"next":"?c=3"}"#, None)),
            "http://h:81/api/x?c=3"
        );
        assert_eq!(
            url(next(&r, r#"{"next":"y b"}"#, None)),
            "http://h:81/api/y%20b"
        );
        assert_eq!(
            url(next(&r, r#"{"next":"https://o/z"}"#, None)),
            "https://o/z"
        );
        for end in [
            r#"{}"#,
            r#"{"next":null}"#,
            r#"{"next":""}"#,
            r#"{"next":"  "}"#,
        ] {
            assert_eq!(next(&r, end, None), Ok(None), "{end}");
        }
        let number = next(&r, r#"{"next":2}"#, None).unwrap_err();
        assert!(number.contains("put {cursor} in --url"), "{number}");
        let object = next(&r, r#"{"next":{"u":1}}"#, None).unwrap_err();
        assert!(object.contains("an object, not a URL"), "{object}");
        let scheme = next(&r, r#"{"next":"ftp://h/x"}"#, None).unwrap_err();
        assert!(scheme.contains("unsupported scheme `ftp`"), "{scheme}");
        let html = next(&r, "<html>", None).unwrap_err();
        assert!(
            html.starts_with("--follow-next json:/next: the body is not JSON"),
            "{html}"
        );
    }

    #[test]
    fn bare_cursors_go_into_the_template_and_absolute_urls_are_followed() {
        let r = rule(
            "json:/meta/next_cursor",
            Some("http://h/api?i={index}&c={cursor}"),
        );
        let page = next(&r, r#"{"meta":{"next_cursor":"a+b/c=="}}"#, None)
            .unwrap()
            .unwrap();
        assert_eq!(page.url, "http://h/api?i=4&c=a%2Bb%2Fc%3D%3D");
        assert_eq!(page.cursor.as_deref(), Some("a+b/c=="));
        let number = next(&r, r#"{"meta":{"next_cursor":12}}"#, None)
            .unwrap()
            .unwrap();
        assert_eq!(number.url, "http://h/api?i=4&c=12");
        let absolute = next(&r, r#"{"meta":{"next_cursor":"HTTP://o/p"}}"#, None)
            .unwrap()
            .unwrap();
        assert_eq!(
            (absolute.url.as_str(), absolute.cursor),
            ("http://o/p", None)
        );
    }

    #[test]
    fn link_headers_are_resolved_against_the_page_and_the_body_is_not_read() {
        let r = rule("link", None);
        let link = Some(r#"</api/x?c=2>; rel="next""#);
        assert_eq!(url(next(&r, "not json", link)), "http://h:81/api/x?c=2");
        assert_eq!(next(&r, "", Some(r#"</l>; rel="last""#)), Ok(None));
        assert_eq!(next(&r, "", None), Ok(None));
        assert!(!r.is_slow(&vec![b' '; INLINE_BODY + 1]));
        assert!(rule("json:/next", None).is_slow(&vec![b' '; INLINE_BODY + 1]));
    }
}
