//! URLs as they come in, parsed once at the edge: each `--urls` line and the `--url`
//! template are checked with the `url` crate and stored percent-encoded as a browser
//! would send them (a space becomes `%20`), so that no byte of them can break the
//! request line. Control characters (CR, LF, TAB, the rest of C0, DEL) are refused,
//! never encoded: a CR in a URL is an attempt at header injection, not a typo.

use std::io::{self, BufRead};

use shared::http_url::redact_password;
use shared::template::{Template, Var};
use url::Url;

use crate::lines::{Line, read_capped};

/// Longest URL taken, in bytes, before and after percent-encoding. Longer lines of a
/// URL list are refused without being read into memory whole.
pub const MAX_URL_LEN: usize = 64 * 1024;

/// Bytes of a list line kept while it is read: the URL and some surrounding blanks.
const LINE_CAP: usize = MAX_URL_LEN + 1024;

/// Characters of a refused line that are shown (in the manifest and on stderr).
const SHOWN_CHARS: usize = 120;

/// `text` as the URL to fetch: parsed, with an http or https scheme and a host,
/// percent-encoded; or why it cannot be fetched. The reason never repeats the URL, which
/// may hold a password.
pub fn normalize(text: &str) -> Result<String, String> {
    check_text(text)?;
    let url = Url::parse(text).map_err(|e| format!("is not a URL ({e})"))?;
    let url = check_parsed(url)?;
    if url.len() > MAX_URL_LEN {
        return Err(format!(
            "is longer than {MAX_URL_LEN} bytes once percent-encoded"
        ));
    }
    Ok(url)
}

/// What is wrong with `text` before it is even parsed: its length, or a control
/// character (which the `url` crate would drop or keep silently).
fn check_text(text: &str) -> Result<(), String> {
    if text.len() > MAX_URL_LEN {
        return Err(format!("is longer than {MAX_URL_LEN} bytes"));
    }
    match text.chars().find(char::is_ascii_control) {
        Some(c) => Err(format!("holds {}", describe_control(c))),
        None => Ok(()),
    }
}

fn check_parsed(url: Url) -> Result<String, String> {
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(format!("has the scheme `{other}`: use http or https")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".to_owned());
    }
    Ok(url.into())
}

fn describe_control(c: char) -> String {
    match c {
        '\r' => "a carriage return (CR)".to_owned(),
        '\n' => "a line feed (LF)".to_owned(),
        '\t' => "a tab".to_owned(),
        c => format!("the control character U+{:04X}", c as u32),
    }
}

/// The `--url` template, checked like a URL and percent-encoded around its
/// placeholders.
///
/// Each placeholder is stood in for by a run of digits, which is what it renders to and
/// what the `url` crate leaves as it is, then the text is normalised and the placeholders
/// put back. Where that cannot work (a placeholder as the port or the last part of an
/// IPv4 address: digits that are parsed) the template is taken as written once a sample
/// rendering parses and its text needs no encoding.
///
/// `extra` are the placeholders it may name besides the four (`{cursor}`).
pub fn normalize_template(text: &str, extra: &[Var]) -> Result<Template, String> {
    let template = Template::parse_allowing(text, extra).map_err(|e| e.to_string())?;
    check_text(text)?;
    if let Some(normalized) = normalize_around_placeholders(text) {
        return Template::parse_allowing(&normalized, extra).map_err(|e| e.to_string());
    }
    let sample = template.render(&shared::template::Values {
        index: 1,
        start: 1,
        end: 2,
        page: 1,
    });
    normalize(&sample)?;
    if let Some(c) = text
        .chars()
        .find(|c| !c.is_ascii() || " \"<>`".contains(*c))
    {
        return Err(format!(
            "holds `{c}` where it cannot be percent-encoded for you: write it encoded"
        ));
    }
    Ok(template)
}

/// The placeholders of a template, with the digits that stand for them.
const STAND_INS: [(&str, &str); 6] = [
    ("{start}", "9137046285000001"),
    ("{end}", "9137046285000002"),
    ("{limit}", "9137046285000003"),
    ("{index}", "9137046285000004"),
    ("{page}", "9137046285000005"),
    ("{cursor}", "9137046285000006"),
];

fn normalize_around_placeholders(text: &str) -> Option<String> {
    if STAND_INS.iter().any(|(_, digits)| text.contains(digits)) {
        return None;
    }
    let mut marked = text.to_owned();
    for (name, digits) in STAND_INS {
        marked = marked.replace(name, digits);
    }
    let normalized = normalize(&marked).ok()?;
    let mut back = normalized.clone();
    for (name, digits) in STAND_INS {
        // Each stand-in must come through once per placeholder, untouched.
        if normalized.matches(digits).count() != text.matches(name).count() {
            return None;
        }
        back = back.replace(digits, name);
    }
    Some(back)
}

/// One item of a URL list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    /// A URL to fetch, normalised.
    Url(String),
    /// A line that cannot be fetched.
    Bad(Refused),
}

/// A list line that cannot be fetched, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Line number in the list, from 1.
    pub line: u64,
    /// The start of the line, password redacted and control characters escaped.
    pub shown: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Refused {
    /// For people: `line N: the URL ...`.
    pub fn message(&self) -> String {
        format!("line {}: the URL {}", self.line, self.reason)
    }

    fn new(line: u64, text: &[u8], reason: String) -> Refused {
        let text = String::from_utf8_lossy(text);
        let mut shown: String = redact_password(text.trim())
            .chars()
            .take(SHOWN_CHARS)
            .flat_map(|c| {
                // Shown as `\r`, `\t`, `\u{1b}`: kept visible, never acted on.
                let escaped = c.is_control().then(|| c.escape_default());
                escaped
                    .into_iter()
                    .flatten()
                    .chain((!c.is_control()).then_some(c))
            })
            .collect();
        if text.chars().nth(SHOWN_CHARS).is_some() {
            shown.push('…');
        }
        Refused {
            line,
            shown,
            reason,
        }
    }
}

/// The URLs of a list, one per line; blank lines and `#` comments are skipped. Lines
/// are read with a cap, so that an endless line costs a bounded buffer.
pub struct UrlLines<R> {
    reader: R,
    /// Lines read so far.
    line: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> UrlLines<R> {
    /// The URLs of the list `reader` reads.
    pub fn new(reader: R) -> UrlLines<R> {
        UrlLines {
            reader,
            line: 0,
            buf: Vec::new(),
        }
    }

    /// The next URL, or the next line that is not one; `None` at the end.
    pub fn next_item(&mut self) -> io::Result<Option<Listed>> {
        loop {
            let read = read_capped(&mut self.reader, LINE_CAP, &mut self.buf)?;
            if read == Line::End {
                return Ok(None);
            }
            self.line += 1;
            let start = self.buf.trim_ascii_start();
            if start.is_empty() || start.starts_with(b"#") {
                continue;
            }
            let refuse = |reason: String| Listed::Bad(Refused::new(self.line, &self.buf, reason));
            if read == Line::TooLong {
                return Ok(Some(refuse(format!("is longer than {MAX_URL_LEN} bytes"))));
            }
            let Ok(text) = std::str::from_utf8(&self.buf) else {
                return Ok(Some(refuse("is not valid UTF-8".to_owned())));
            };
            return Ok(Some(match normalize(text.trim()) {
                Ok(url) => Listed::Url(url),
                Err(reason) => refuse(reason),
            }));
        }
    }

    /// Counts the URLs to the end; the first line that is not one is the error.
    pub fn count(mut self) -> io::Result<Result<u64, Refused>> {
        let mut n = 0;
        while let Some(item) = self.next_item()? {
            match item {
                Listed::Url(_) => n += 1,
                Listed::Bad(refused) => return Ok(Err(refused)),
            }
        }
        Ok(Ok(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_percent_encoded_as_a_browser_would() {
        assert_eq!(normalize("http://h/a b").unwrap(), "http://h/a%20b");
        assert_eq!(
            normalize("HTTP://Example.COM:80/p?q=a b&r=\"x\"").unwrap(),
            "http://example.com/p?q=a%20b&r=%22x%22"
        );
        assert_eq!(normalize("http://h/ü").unwrap(), "http://h/%C3%BC");
        assert_eq!(
            normalize("http://127.0.0.1:8080/api/tickers/?start=0&limit=10").unwrap(),
            "http://127.0.0.1:8080/api/tickers/?start=0&limit=10"
        );
    }

    #[test]
    fn control_characters_schemes_and_lengths_are_refused() {
        for (bad, why) in [
            ("http://h/c\rX-Injected: yes", "carriage return"),
            ("http://h/a\tb", "tab"),
            ("http://h/a\u{7f}", "U+007F"),
            ("http://h/\0", "U+0000"),
            ("ftp://h/", "scheme `ftp`"),
            ("h/x", "not a URL"),
            ("http://user:secret@/x", "URL"),
        ] {
            let err = normalize(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
        let long = format!("http://h/{}", "a".repeat(MAX_URL_LEN));
        assert!(normalize(&long).unwrap_err().contains("longer than 65536"));
        // Within the limit as written, over it once encoded.
        let spaces = format!("http://h/{}x", " ".repeat(MAX_URL_LEN / 2));
        assert!(
            normalize(&spaces)
                .unwrap_err()
                .contains("once percent-encoded")
        );
    }

    #[test]
    fn templates_are_encoded_around_their_placeholders() {
        let t =
            normalize_template("http://H/a b/{start}?l={limit}&x={index} y#{end}", &[]).unwrap();
        assert_eq!(
            t.as_str(),
            "http://h/a%20b/{start}?l={limit}&x={index}%20y#{end}"
        );
        // Digits that the parser reads stay as written, once a rendering parses.
        let port = normalize_template("http://10.0.0.{index}:{start}/x", &[]).unwrap();
        assert_eq!(port.as_str(), "http://10.0.0.{index}:{start}/x");
        assert!(normalize_template("http://10.0.0.{index}/a b", &[]).is_err());
        assert!(normalize_template("http://h/{start}\r\nX: y", &[]).is_err());
        assert!(normalize_template("http://h/{nope}", &[]).is_err());
        assert!(normalize_template("http://h/?c={cursor}", &[]).is_err());
        let cursor =
            normalize_template("http://h/a b?c={cursor}&i={index}", &[Var::Cursor]).unwrap();
        assert_eq!(cursor.as_str(), "http://h/a%20b?c={cursor}&i={index}");
    }

    #[test]
    fn list_lines_are_numbered_and_bad_ones_named() {
        let long = "x".repeat(LINE_CAP + 5);
        let text = format!(
            "# comment\n\nhttp://h/1\r\n  http://h/a b  \nhttp://u:pw@h/c\rX: y\nhttp://h/{long}\nhttp://h/\u{1b}[31m\nhttp://h/2"
        );
        let mut lines = UrlLines::new(text.as_bytes());
        let mut items = Vec::new();
        while let Some(item) = lines.next_item().unwrap() {
            items.push(item);
        }
        assert_eq!(items[0], Listed::Url("http://h/1".into()));
        assert_eq!(items[1], Listed::Url("http://h/a%20b".into()));
        let Listed::Bad(cr) = &items[2] else {
            panic!("{:?}", items[2])
        };
        assert_eq!(cr.line, 5);
        assert_eq!(cr.shown, "http://u:***@h/c\\rX: y");
        assert!(
            cr.message()
                .starts_with("line 5: the URL holds a carriage return")
        );
        let Listed::Bad(long) = &items[3] else {
            panic!("{:?}", items[3])
        };
        assert_eq!(long.line, 6);
        assert!(long.reason.contains("longer than 65536 bytes"));
        assert!(long.shown.ends_with('…') && long.shown.chars().count() == SHOWN_CHARS + 1);
        let Listed::Bad(escape) = &items[4] else {
            panic!("{:?}", items[4])
        };
        assert_eq!(escape.shown, "http://h/\\u{1b}[31m");
        assert_eq!(items[5], Listed::Url("http://h/2".into()));
        assert_eq!(items.len(), 6);

        let refused = UrlLines::new(text.as_bytes()).count().unwrap().unwrap_err();
        assert_eq!(refused.line, 5);
        let good = UrlLines::new("http://h/1\n#x\nhttp://h/2\n".as_bytes());
        assert_eq!(good.count().unwrap().unwrap(), 2);
    }
}
