//! `http://` and `https://` URLs, split into what a bare HTTP client needs: whether
//! to speak TLS, the `host:port` to connect to (and send as `Host`) and the path with
//! its query.

use std::borrow::Cow;

/// A URL as a bare HTTP client uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split<'a> {
    /// `https://`: speak TLS.
    pub tls: bool,
    /// `host:port`, the port always given (80 or 443 by default).
    pub authority: Cow<'a, str>,
    /// `/path?query`.
    pub path: Cow<'a, str>,
}

/// `http[s]://host[:port]/path?query` split up, borrowed from `url` where its parts
/// appear in it as they are.
pub fn split_http_url(url: &str) -> Result<Split<'_>, String> {
    let (tls, rest) = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (false, rest),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (true, rest),
        Some((scheme, _)) => {
            return Err(format!("unsupported scheme `{scheme}`: use http or https"));
        }
        None => {
            let shown = redact_password(url);
            return Err(format!(
                "`{shown}` is not an absolute http:// or https:// URL"
            ));
        }
    };
    let (host, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'?' => {
            (&rest[..i], Cow::Owned(format!("/{}", &rest[i..])))
        }
        Some(i) => (&rest[..i], Cow::Borrowed(&rest[i..])),
        None => (rest, Cow::Borrowed("/")),
    };
    if host.is_empty() || host.contains('@') {
        return Err(format!("`{}` has no plain host", redact_password(url)));
    }
    let authority = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()) && !host.ends_with(']'))
    {
        Cow::Borrowed(host)
    } else {
        Cow::Owned(format!("{host}:{}", if tls { 443 } else { 80 }))
    };
    Ok(Split {
        tls,
        authority,
        path,
    })
}

/// What a password in a URL is shown as.
pub const REDACTED: &str = "***";

/// `url` with the password of its `user:password@` part, if any, replaced by
/// [`REDACTED`]: the form in which a URL is shown or stored (manifest, run record,
/// messages). Borrowed when there is nothing to hide, which is nearly always.
pub fn redact_password(url: &str) -> Cow<'_, str> {
    let Some((_, rest)) = url.split_once("://") else {
        return Cow::Borrowed(url);
    };
    let authority_start = url.len() - rest.len();
    // The authority ends where the path, query or fragment begins.
    let authority = &rest[..rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len())];
    // Only the last `@` ends the user information: earlier ones belong to it.
    let Some(at) = authority.rfind('@') else {
        return Cow::Borrowed(url);
    };
    let Some(colon) = authority[..at].find(':') else {
        return Cow::Borrowed(url);
    };
    if colon + 1 == at {
        // An empty password hides nothing.
        return Cow::Borrowed(url);
    }
    let from = authority_start + colon + 1;
    let to = authority_start + at;
    Cow::Owned(format!("{}{REDACTED}{}", &url[..from], &url[to..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_and_nothing_else() {
        assert_eq!(
            redact_password("http://user:s3cret@h:8080/a?b=c@d:e"),
            "http://user:***@h:8080/a?b=c@d:e"
        );
        assert_eq!(
            redact_password("https://u:p@ss:w@rd@h/x"),
            "https://u:***@h/x"
        );
        for kept in [
            "http://h/a?user=x:y@z",
            "http://user@h/",
            "http://user:@h/",
            "http://h:80/@x",
            "not a url",
            "http://u:p",
        ] {
            assert!(matches!(redact_password(kept), Cow::Borrowed(_)), "{kept}");
        }
    }

    #[test]
    fn http_urls_split_into_authority_and_path() {
        let split = |url| {
            let s = split_http_url(url).unwrap();
            (s.tls, s.authority.into_owned(), s.path.into_owned())
        };
        let owned = |tls, a: &str, p: &str| (tls, a.to_owned(), p.to_owned());
        assert_eq!(
            split("http://127.0.0.1:8080/a?b=1"),
            owned(false, "127.0.0.1:8080", "/a?b=1")
        );
        assert_eq!(split("http://localhost"), owned(false, "localhost:80", "/"));
        assert_eq!(split("http://h?x=1"), owned(false, "h:80", "/?x=1"));
        assert_eq!(split("HTTPS://h/x"), owned(true, "h:443", "/x"));
        assert_eq!(split("https://[::1]:8443/"), owned(true, "[::1]:8443", "/"));
        assert!(split_http_url("ftp://h/").is_err());
        assert!(split_http_url("h/x").is_err());
    }
}
