//! URL and file-name templates with `{start}`, `{end}`, `{limit}` and `{index}`
//! placeholders, parsed once and rendered per batch without re-parsing. Runs that
//! follow next links also know `{page}` (file names) and `{cursor}` (the URL), but
//! only where they are allowed ([`Template::parse_allowing`]).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A placeholder a template may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Var {
    /// First item of the batch (inclusive).
    Start,
    /// End of the batch (exclusive).
    End,
    /// Number of items in the batch (`end - start`).
    Limit,
    /// Position of the batch in the plan, from 0.
    Index,
    /// Page number in a chain of next links, from 1 (`--follow-next`).
    Page,
    /// The cursor a page named for the next one, percent-encoded; empty for a
    /// chain's first page (`--follow-next json:POINTER`).
    Cursor,
}

impl Var {
    /// The placeholders every template knows.
    const ALL: [(&'static str, Var); 4] = [
        ("start", Var::Start),
        ("end", Var::End),
        ("limit", Var::Limit),
        ("index", Var::Index),
    ];
    /// The placeholders only some templates may name.
    const EXTRA: [(&'static str, Var); 2] = [("page", Var::Page), ("cursor", Var::Cursor)];

    fn from_name(name: &str, extra: &[Var]) -> Option<Var> {
        let allowed = Self::EXTRA.iter().filter(|(_, v)| extra.contains(v));
        Self::ALL
            .iter()
            .chain(allowed)
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }
}

/// The values a template is rendered with: one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Values {
    /// Position of the batch in the plan.
    pub index: u64,
    /// First item (inclusive).
    pub start: u64,
    /// Last item (exclusive).
    pub end: u64,
    /// Page number in a chain, from 1 (1 outside chains).
    pub page: u64,
}

impl Values {
    /// The number `var` stands for; `None` for `{cursor}`, which is text.
    fn get(&self, var: Var) -> Option<u64> {
        match var {
            Var::Start => Some(self.start),
            Var::End => Some(self.end),
            Var::Limit => Some(self.end - self.start),
            Var::Index => Some(self.index),
            Var::Page => Some(self.page),
            Var::Cursor => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Piece {
    Text(String),
    Var(Var),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    source: String,
    pieces: Vec<Piece>,
}

/// Why a template was rejected.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TemplateError {
    /// A `{name}` that is not one of the known placeholders.
    #[error("unknown placeholder `{{{0}}}`: use {{start}}, {{end}}, {{limit}} or {{index}}")]
    UnknownPlaceholder(String),
    /// A `{` without its `}`.
    #[error("`{{` at byte {0} is never closed")]
    Unclosed(usize),
}

impl Template {
    /// Parses `source`, checking every placeholder: `{start}`, `{end}`, `{limit}` and
    /// `{index}`.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        Self::parse_allowing(source, &[])
    }

    /// Parses `source` like [`Template::parse`], taking the placeholders in `extra`
    /// (`{page}`, `{cursor}`) too.
    pub fn parse_allowing(source: &str, extra: &[Var]) -> Result<Self, TemplateError> {
        let mut pieces = Vec::new();
        let mut rest = source;
        let mut offset = 0;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or(TemplateError::Unclosed(offset + open))?;
            let name = &rest[open + 1..open + close];
            let var = Var::from_name(name, extra)
                .ok_or_else(|| TemplateError::UnknownPlaceholder(name.to_owned()))?;
            pieces.push(Piece::Var(var));
            offset += open + close + 1;
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Template {
            source: source.to_owned(),
            pieces,
        })
    }

    /// Parses a request body. Only `{name}`, a name of ASCII letters, digits and `_`,
    /// is a placeholder, and it must be a known one; every other brace is text, so that
    /// a JSON body needs no escaping: `{"offset":{start},"size":{limit}}`.
    pub fn parse_body(source: &str) -> Result<Self, TemplateError> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = source;
        while let Some(open) = rest.find('{') {
            text.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let word = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|&end| end > 0 && after[end..].starts_with('}'));
            let Some(end) = word else {
                text.push('{');
                rest = after;
                continue;
            };
            let name = &after[..end];
            let var = Var::from_name(name, &[])
                .ok_or_else(|| TemplateError::UnknownPlaceholder(name.to_owned()))?;
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Var(var));
            rest = &after[end + 1..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Template {
            source: source.to_owned(),
            pieces,
        })
    }

    /// Whether the template names `var`.
    pub fn uses(&self, var: Var) -> bool {
        self.pieces.contains(&Piece::Var(var))
    }

    /// Whether the template names any placeholder at all.
    pub fn has_placeholders(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Var(_)))
    }

    /// The text the template was parsed from.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Appends the rendering for `values` to `out`; `{cursor}` renders empty.
    pub fn render_into(&self, values: &Values, out: &mut String) {
        self.render_cursor_into(values, "", out);
    }

    /// Appends the rendering for `values` to `out`, with `cursor` percent-encoded in
    /// place of `{cursor}`.
    fn render_cursor_into(&self, values: &Values, cursor: &str, out: &mut String) {
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Var(var) => match values.get(*var) {
                    // Writing to a String cannot fail.
                    Some(n) => {
                        let _ = write!(out, "{n}");
                    }
                    None => encode_component(cursor, out),
                },
            }
        }
    }

    /// Renders the template for `values`.
    pub fn render(&self, values: &Values) -> String {
        self.render_cursor(values, "")
    }

    /// Renders the template for `values` with `cursor` in place of `{cursor}`,
    /// percent-encoded as a query value or path segment must be.
    pub fn render_cursor(&self, values: &Values, cursor: &str) -> String {
        let mut out = String::with_capacity(self.source.len() + 16 + 3 * cursor.len());
        self.render_cursor_into(values, cursor, &mut out);
        out
    }
}

/// Appends `text` to `out` with every byte but the unreserved ones (RFC 3986:
/// letters, digits, `-`, `.`, `_`, `~`) percent-encoded, so that a cursor such as
/// `a+b/c==` stays one value wherever the template puts it.
fn encode_component(text: &str, out: &mut String) {
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: Values = Values {
        index: 3,
        start: 30,
        end: 40,
        page: 1,
    };

    #[test]
    fn renders_every_placeholder() {
        let t =
            Template::parse("http://h/api/?start={start}&limit={limit}&e={end}#{index}").unwrap();
        assert_eq!(t.render(&V), "http://h/api/?start=30&limit=10&e=40#3");
    }

    #[test]
    fn text_without_placeholders_renders_as_is() {
        let t = Template::parse("http://h/static").unwrap();
        assert!(!t.has_placeholders());
        assert_eq!(t.render(&V), "http://h/static");
    }

    #[test]
    fn unknown_placeholder_is_named_in_the_error() {
        let err = Template::parse("x{stat}y").unwrap_err();
        assert_eq!(err, TemplateError::UnknownPlaceholder("stat".into()));
        assert!(err.to_string().contains("{stat}"));
    }

    #[test]
    fn unclosed_brace_is_rejected() {
        assert_eq!(
            Template::parse("ab{start").unwrap_err(),
            TemplateError::Unclosed(2)
        );
    }

    #[test]
    fn a_body_template_takes_only_known_words_in_braces_as_placeholders() {
        let t = Template::parse_body(r#"{"offset":{start},"size":{limit},"q":{}}"#).unwrap();
        assert_eq!(t.render(&V), r#"{"offset":30,"size":10,"q":{}}"#);
        let t = Template::parse_body("{{index}} { start} {end").unwrap();
        assert_eq!(t.render(&V), "{3} { start} {end");
        assert_eq!(
            Template::parse_body(r#"{"a":{stat}}"#).unwrap_err(),
            TemplateError::UnknownPlaceholder("stat".into())
        );
        let plain = Template::parse_body("a=1&b=2").unwrap();
        assert!(!plain.has_placeholders());
        assert_eq!(plain.as_str(), "a=1&b=2");
    }

    #[test]
    fn page_and_cursor_are_placeholders_only_where_allowed() {
        for text in ["p{page}.json", "http://h/?c={cursor}"] {
            assert!(matches!(
                Template::parse(text),
                Err(TemplateError::UnknownPlaceholder(_))
            ));
        }
        assert!(Template::parse_body("{page}").is_err());
        let name = Template::parse_allowing("{index}-{page}.json", &[Var::Page]).unwrap();
        assert_eq!(name.render(&Values { page: 7, ..V }), "3-7.json");
        assert!(Template::parse_allowing("{cursor}", &[Var::Page]).is_err());
        let url =
            Template::parse_allowing("http://h/?i={index}&c={cursor}", &[Var::Cursor]).unwrap();
        assert!(url.uses(Var::Cursor));
        assert_eq!(url.render(&V), "http://h/?i=3&c=");
        assert_eq!(
            url.render_cursor(&V, "a+b/c==~_.-é"),
            "http://h/?i=3&c=a%2Bb%2Fc%3D%3D~_.-%C3%A9"
        );
    }

    #[test]
    fn uses_reports_placeholders() {
        let t = Template::parse("batch{start}-{end}.json").unwrap();
        assert!(t.uses(Var::Start) && t.uses(Var::End));
        assert!(!t.uses(Var::Index));
    }
}
