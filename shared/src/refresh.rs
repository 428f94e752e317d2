//! What a conditional re-fetch (`--refresh`) knows of a stored body: the validators its
//! server sent with it (`ETag`, `Last-Modified`), which the next request of the same
//! batch sends back (`If-None-Match`, `If-Modified-Since`) so that the server can answer
//! 304 Not Modified instead of the body.

use serde::{Deserialize, Serialize};

/// Longest validator kept, in bytes: an entity tag or an HTTP date is a few dozen; a
/// longer value is not one, and is not sent back.
pub const MAX_VALIDATOR: usize = 1024;

/// The validators of one response, as the server wrote them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validators {
    /// The `ETag` header (an entity tag, quoted, maybe weak: `W/"…"`).
    pub etag: Option<String>,
    /// The `Last-Modified` header (an HTTP date).
    pub last_modified: Option<String>,
}

impl Validators {
    /// Validators of these header values, each kept only when it can be sent back as a
    /// header value as it is (see [`is_sendable`]).
    pub fn new(etag: Option<&str>, last_modified: Option<&str>) -> Validators {
        let keep = |v: Option<&str>| {
            v.map(str::trim)
                .filter(|v| is_sendable(v))
                .map(str::to_owned)
        };
        Validators {
            etag: keep(etag),
            last_modified: keep(last_modified),
        }
    }

    /// Whether there is neither.
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }

    /// These, with what `older` has where these have nothing: a 304 sends the
    /// validators it would have sent with the body, and may leave some out.
    pub fn or(self, older: &Validators) -> Validators {
        Validators {
            etag: self.etag.or_else(|| older.etag.clone()),
            last_modified: self.last_modified.or_else(|| older.last_modified.clone()),
        }
    }
}

/// Whether `value` can go into a request header as it is: not empty, at most
/// [`MAX_VALIDATOR`] bytes, visible ASCII and inner spaces only. A manifest is a file
/// anyone may edit: what it says is never written onto the wire unchecked.
pub fn is_sendable(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_VALIDATOR
        && value.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
        && !value.starts_with(' ')
        && !value.ends_with(' ')
}

/// What an earlier run stored for a batch, and what a refresh of it needs: the file
/// stays as it is on a 304, and stays too when the refresh fails.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The file's name inside the output directory.
    pub file: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// What its server sent with it (maybe nothing: then the refresh asks
    /// unconditionally).
    pub validators: Validators,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_values_that_can_be_sent_back_are_kept() {
        let v = Validators::new(Some(" W/\"abc\" "), Some("Tue, 14 Nov 2023 22:13:20 GMT"));
        assert_eq!(v.etag.as_deref(), Some("W/\"abc\""));
        assert_eq!(
            v.last_modified.as_deref(),
            Some("Tue, 14 Nov 2023 22:13:20 GMT")
        );
        for bad in [
            "",
            "a\r\nX-Injected: 1",
            "tab\there",
            "caf\u{e9}",
            &"x".repeat(2000),
        ] {
            assert!(Validators::new(Some(bad), None).is_empty(), "{bad:?}");
        }
    }

    #[test]
    fn a_304_keeps_the_older_validators_it_does_not_repeat() {
        let older = Validators::new(Some("\"1\""), Some("Mon, 01 Jan 2024 00:00:00 GMT"));
        let fresh = Validators::new(Some("\"2\""), None);
        let merged = fresh.or(&older);
        assert_eq!(merged.etag.as_deref(), Some("\"2\""));
        assert_eq!(merged.last_modified, older.last_modified);
    }
}
