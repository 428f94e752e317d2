//! Chains of pages linked by "next" (`--follow-next`): which link a page's next page
//! is read from, and what a page's report says about it.
//!
//! Each batch of a plan (each line of a URL list) starts a chain; page `n + 1` of a
//! chain is the page that page `n` names as its next. A worker reads the next page
//! from the body or the headers and reports it; the coordinator decides whether the
//! chain goes on and hands its next page out.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Where a page names the next one (`--follow-next`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FollowNext {
    /// The value at this RFC 6901 JSON pointer in the body (`json:/next`): a URL,
    /// absolute or relative, or a bare cursor for `{cursor}` of `--url`.
    Json(String),
    /// The `Link` header's `rel="next"` (RFC 8288), as GitHub's API sends it.
    Link,
}

/// Why a `--follow-next` value was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FollowNextError {
    /// Neither `json:POINTER` nor `link`.
    #[error("`{0}` is neither json:POINTER (e.g. json:/next) nor link")]
    Unknown(String),
    /// A pointer that is neither empty nor starts with `/`.
    #[error("`{0}`: a JSON pointer is empty or starts with / (RFC 6901), e.g. json:/next")]
    Pointer(String),
    /// A `~` not followed by `0` or `1` in the pointer.
    #[error("`{0}`: in a JSON pointer `~` is written ~0 and `/` inside a key ~1 (RFC 6901)")]
    Escape(String),
}

impl FromStr for FollowNext {
    type Err = FollowNextError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "link" {
            return Ok(FollowNext::Link);
        }
        let Some(pointer) = s.strip_prefix("json:") else {
            return Err(FollowNextError::Unknown(s.to_owned()));
        };
        if !(pointer.is_empty() || pointer.starts_with('/')) {
            return Err(FollowNextError::Pointer(s.to_owned()));
        }
        if pointer_tokens(pointer).is_none() {
            return Err(FollowNextError::Escape(s.to_owned()));
        }
        Ok(FollowNext::Json(pointer.to_owned()))
    }
}

impl fmt::Display for FollowNext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FollowNext::Json(pointer) => write!(f, "json:{pointer}"),
            FollowNext::Link => f.write_str("link"),
        }
    }
}

/// The reference tokens of a JSON pointer, unescaped (`~1` is `/`, `~0` is `~`);
/// `None` when a `~` is followed by anything else. `""` is the whole document.
pub fn pointer_tokens(pointer: &str) -> Option<Vec<String>> {
    if pointer.is_empty() {
        return Some(Vec::new());
    }
    pointer
        .strip_prefix('/')?
        .split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => out.push('~'),
                    Some('1') => out.push('/'),
                    _ => return None,
                }
            }
            Some(out)
        })
        .collect()
}

/// The next page a page names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextPage {
    /// Its absolute URL: a link resolved against the page's URL, or `--url` rendered
    /// with the cursor.
    pub url: String,
    /// The bare cursor the page gave, when it gave one rather than a URL: a resume
    /// renders `--url` with it again (the URL in the manifest has no password).
    pub cursor: Option<String>,
}

/// Why a chain ends at a page; the manifest's `chain_end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChainEnd {
    /// The page names no next page (missing, null or empty).
    Last,
    /// Its next page is a URL this chain fetched already.
    Loop,
    /// It is page `--max-pages` of its chain.
    MaxPages,
}

impl ChainEnd {
    /// The word the manifest and the summary use.
    pub fn as_str(self) -> &'static str {
        match self {
            ChainEnd::Last => "last",
            ChainEnd::Loop => "loop",
            ChainEnd::MaxPages => "max-pages",
        }
    }
}

/// A chain page's part of its report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageReport {
    /// Page number in its chain, from 1.
    pub page: u64,
    /// The next page it names, if any (read only from a page that was stored).
    pub next: Option<NextPage>,
    /// Set by the coordinator when the chain ends at this page.
    pub end: Option<ChainEnd>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_next_takes_a_pointer_or_link_and_refuses_the_rest() {
        assert_eq!("link".parse(), Ok(FollowNext::Link));
        assert_eq!("json:/next".parse(), Ok(FollowNext::Json("/next".into())));
        assert_eq!("json:".parse(), Ok(FollowNext::Json(String::new())));
        assert_eq!(
            "json:/meta/next_cursor"
                .parse::<FollowNext>()
                .unwrap()
                .to_string(),
            "json:/meta/next_cursor"
        );
        assert!(matches!(
            "json:next".parse::<FollowNext>(),
            Err(FollowNextError::Pointer(_))
        ));
        assert!(matches!(
            "json:/a~2b".parse::<FollowNext>(),
            Err(FollowNextError::Escape(_))
        ));
        for bad in ["", "Link", "header", "xml:/a"] {
            assert!(
                matches!(bad.parse::<FollowNext>(), Err(FollowNextError::Unknown(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn pointer_tokens_are_unescaped_as_rfc_6901_says() {
        assert_eq!(pointer_tokens(""), Some(vec![]));
        assert_eq!(pointer_tokens("/"), Some(vec![String::new()]));
        assert_eq!(
            pointer_tokens("/a~1b/m~0n/0"),
            Some(vec!["a/b".into(), "m~n".into(), "0".into()])
        );
        // ~01 is `~1` as text, not `/`.
        assert_eq!(pointer_tokens("/~01"), Some(vec!["~1".into()]));
        assert_eq!(pointer_tokens("/a~"), None);
        assert_eq!(pointer_tokens("a"), None);
    }
}
