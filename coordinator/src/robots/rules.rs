//! What one host's robots.txt says to this run, read as RFC 9309 reads a fetch of it:
//! a file that came (2xx) is parsed for the product token of `--user-agent`; a 4xx (or
//! redirects that lead nowhere) means there is none, and everything is allowed; a 5xx
//! or no answer at all means everything is disallowed for the run (§2.3.1.3, §2.3.1.4).

use std::time::Duration;

use shared::config::TLS_ERROR_PREFIX;
use shared::protocol::{JobReport, Outcome};
use texting_robots::Robot;

/// Bytes of a robots.txt that are parsed: RFC 9309 §2.5 asks a crawler to parse at
/// least 500 KiB, and lets it ignore the rest.
pub const PARSED_BYTES: usize = 500 * 1024;

/// Longest Crawl-delay taken as given; a larger one is taken as this (a day between
/// requests is already no crawl at all).
const MAX_CRAWL_DELAY: Duration = Duration::from_secs(24 * 3600);

/// The rules of one host for this run.
#[derive(Debug)]
pub enum Rules {
    /// Everything may be fetched: the host has no robots.txt.
    AllowAll,
    /// Nothing may be fetched: its robots.txt could not be had.
    DisallowAll,
    /// What the file says to this run's product token.
    Parsed(Box<Robot>),
    /// A file with no `Disallow` rule that is not empty: nothing it says can forbid
    /// a URL, whichever group applies (RFC 9309 §2.2.2: a URL that no rule matches
    /// may be fetched).
    NothingDisallowed,
}

impl Rules {
    /// Whether `url` (of this host) may be fetched.
    pub fn allows(&self, url: &str) -> bool {
        match self {
            Rules::AllowAll => true,
            Rules::DisallowAll => false,
            Rules::Parsed(robot) => robot.allowed(url),
            Rules::NothingDisallowed => true,
        }
    }

    /// Whether every URL of the host may be fetched: no URL needs to be read.
    pub fn allows_all(&self) -> bool {
        matches!(self, Rules::AllowAll | Rules::NothingDisallowed)
    }
}

/// A host's rules, and what else its robots.txt said.
#[derive(Debug)]
pub struct Verdict {
    /// What may be fetched.
    pub rules: Rules,
    /// The `Crawl-delay` of the group that applies, when there is one.
    pub crawl_delay: Option<Duration>,
    /// Why everything is disallowed, for a warning: the status or error that stood
    /// in for the file (`None` when the rules came from a file, or allow everything).
    pub trouble: Option<String>,
}

/// The product token of a `User-Agent`: what robots.txt groups are matched against
/// (RFC 9309 §2.2.1), its first word up to a `/`: `coordinator/0.1.0` is
/// `coordinator`, `Mozilla/5.0 (compatible; Foo/1)` is `Mozilla`.
pub fn product_token(user_agent: &str) -> &str {
    user_agent
        .split(|c: char| c == '/' || c.is_whitespace())
        .next()
        .unwrap_or_default()
}

/// What the fetch of a host's robots.txt, reported as `report`, means for `token`.
pub fn judge(report: &JobReport, token: &str) -> Verdict {
    let allow = Verdict {
        rules: Rules::AllowAll,
        crawl_delay: None,
        trouble: None,
    };
    let disallow = |trouble: String| Verdict {
        rules: Rules::DisallowAll,
        crawl_delay: None,
        trouble: Some(trouble),
    };
    match (&report.outcome, report.status) {
        (Outcome::Fetched { body }, _) => parse(body, token),
        // "Unavailable": no robots.txt, so no rules (§2.3.1.3).
        (Outcome::Failed { .. }, Some(400..=499)) => allow,
        // Redirects that lead to no file are unavailable too (§2.3.1.2).
        (Outcome::Failed { .. }, Some(300..=399)) => allow,
        (Outcome::Failed { error }, _) if worker::is_redirect_failure(error) => allow,
        // The run's own way to the host refuses it (an untrusted certificate, a refused
        // client certificate, a proxy that wants credentials or refuses the tunnel):
        // its batches would meet the same refusal, so they go out and fail with its
        // advice rather than pass as skipped.
        (Outcome::Failed { error }, None)
            if error.starts_with(TLS_ERROR_PREFIX) || worker::is_proxy_failure(error) =>
        {
            allow
        }
        // "Unreachable": a server error or no answer disallows everything (§2.3.1.4).
        (Outcome::Failed { error }, _) => disallow(error.clone()),
        (Outcome::Saved { .. } | Outcome::Skipped { .. } | Outcome::Unchanged { .. }, _) => {
            disallow("robots.txt was not fetched".to_owned())
        }
    }
}

/// The rules of a robots.txt that came. One the parser cannot read disallows
/// everything: a file that is there but not understood is no permission.
fn parse(body: &[u8], token: &str) -> Verdict {
    match Robot::new(token, cut(body)) {
        Ok(robot) => Verdict {
            crawl_delay: robot.delay.and_then(|secs| {
                Duration::try_from_secs_f32(secs)
                    .ok()
                    .map(|d| d.min(MAX_CRAWL_DELAY))
                    .filter(|d| !d.is_zero())
            }),
            rules: match disallows_something(cut(body)) {
                true => Rules::Parsed(Box::new(robot)),
                false => Rules::NothingDisallowed,
            },
            trouble: None,
        },
        Err(e) => Verdict {
            rules: Rules::DisallowAll,
            crawl_delay: None,
            trouble: Some(format!("robots.txt cannot be parsed ({e:#})")),
        },
    }
}

/// Whether a robots.txt may hold a `Disallow` rule with a path (an empty one disallows
/// nothing, RFC 9309 §2.2.2). Errs towards yes: every spelling the parser takes as
/// `Disallow` ("disalow", "diasllow", ...) starts with `di`, so any such line with a
/// value counts.
fn disallows_something(body: &[u8]) -> bool {
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    body.split(|&b| b == b'\n' || b == b'\r').any(|line| {
        let line = line.split(|&b| b == b'#').next().unwrap_or_default();
        let line = line.trim_ascii();
        if line.len() < 2 || !line[..2].eq_ignore_ascii_case(b"di") {
            return false;
        }
        // The value: after the key and a colon, or after spaces.
        let key_end = line
            .iter()
            .position(|&b| b == b':' || b.is_ascii_whitespace())
            .unwrap_or(line.len());
        let rest = line[key_end..].trim_ascii();
        !rest
            .strip_prefix(b":")
            .unwrap_or(rest)
            .trim_ascii()
            .is_empty()
    })
}

/// The first [`PARSED_BYTES`] of `body`, ended at a line's end so that no rule is
/// read cut in half.
fn cut(body: &[u8]) -> &[u8] {
    if body.len() <= PARSED_BYTES {
        return body;
    }
    let head = &body[..PARSED_BYTES];
    match head.iter().rposition(|&b| b == b'\n') {
        Some(end) => &head[..=end],
        None => head,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_a_disallow_rule_allows_all_without_reading_urls() {
        for body in [
            "User-agent: *\nAllow: /\n",
            "User-agent: *\nDisallow:\nCrawl-delay: 1\n",
            "# Disallow: /commented\nUser-agent: x\nAllow: /a # Disallow: /b\n",
        ] {
            let verdict = parse(body.as_bytes(), "coordinator");
            assert!(verdict.rules.allows_all(), "{body:?}");
        }
        // Any spelling the parser reads as Disallow, with a value, keeps the rules.
        for body in [
            "User-agent: *\nDisallow: /private\n",
            "User-agent: *\ndisalow: /private\n",
            "User-agent: *\nDISALLOW /private\n",
            "User-agent: *\r\nDiasllow : /private\r\n",
            "\u{feff}Disallow: /private\n",
        ] {
            let verdict = parse(body.as_bytes(), "coordinator");
            assert!(!verdict.rules.allows_all(), "{body:?}");
            assert!(
                !verdict.rules.allows("http://h/private/x"),
                "{body:?}: the parser disallows it"
            );
        }
    }
    use shared::plan::Batch;

    fn report(status: Option<u16>, outcome: Outcome) -> JobReport {
        JobReport {
            batch: Batch::single(0),
            url: "http://h/robots.txt".into(),
            status,
            bytes: 0,
            elapsed_us: 1,
            attempts: 1,
            outcome,
            chain: None,
            validators: Default::default(),
        }
    }

    fn file(text: &str) -> JobReport {
        report(
            Some(200),
            Outcome::Fetched {
                body: text.as_bytes().to_vec(),
            },
        )
    }

    fn failed(status: Option<u16>, error: &str) -> JobReport {
        report(
            status,
            Outcome::Failed {
                error: error.into(),
            },
        )
    }

    #[test]
    fn the_product_token_is_the_first_word_of_the_user_agent() {
        assert_eq!(product_token("coordinator/0.1.0"), "coordinator");
        assert_eq!(product_token("Mozilla/5.0 (compatible; X/1)"), "Mozilla");
        assert_eq!(product_token("mybot"), "mybot");
        assert_eq!(product_token(""), "");
    }

    #[test]
    fn the_group_of_our_token_applies_before_the_catch_all_one() {
        let text = "User-agent: *\nDisallow: /\n\nUser-agent: Coordinator\nDisallow: /private\nCrawl-delay: 2.5\n";
        let ours = judge(&file(text), "coordinator");
        assert!(ours.rules.allows("http://h/public?x=1"));
        assert!(!ours.rules.allows("http://h/private/a"));
        assert_eq!(ours.crawl_delay, Some(Duration::from_millis(2500)));
        let other = judge(&file(text), "otherbot");
        assert!(!other.rules.allows("http://h/public"));
        assert_eq!(other.crawl_delay, None);
        // The longest match decides, and robots.txt itself is always allowed.
        let allow = judge(&file("User-agent: *\nDisallow: /a\nAllow: /a/b\n"), "x");
        assert!(allow.rules.allows("http://h/a/b/c"));
        assert!(!allow.rules.allows("http://h/a/c"));
        assert!(allow.rules.allows("http://h/robots.txt"));
    }

    #[test]
    fn statuses_and_failures_mean_what_rfc_9309_says() {
        for status in [400, 401, 403, 404, 410, 429] {
            let v = judge(&failed(Some(status), "HTTP 4xx"), "c");
            assert!(v.rules.allows("http://h/x"), "{status}");
            assert!(v.trouble.is_none());
        }
        for (status, error) in [
            (Some(500), "HTTP 500 Internal Server Error"),
            (Some(503), "HTTP 503 Service Unavailable"),
            (None, "connection refused"),
            (None, "no whole response within --timeout 30s"),
        ] {
            let v = judge(&failed(status, error), "c");
            assert!(!v.rules.allows("http://h/x"), "{error}");
            assert_eq!(v.trouble.as_deref(), Some(error));
        }
        let lost = failed(None, "more than 5 redirects (--max-redirects)");
        assert!(judge(&lost, "c").rules.allows("http://h/x"));
        let refused = failed(None, "TLS certificate of h is not trusted: use --cacert");
        assert!(judge(&refused, "c").rules.allows("http://h/x"));
        let proxy = failed(
            None,
            "the proxy http://p:3128 wants credentials (407): give them",
        );
        assert!(judge(&proxy, "c").rules.allows("http://h/x"));
    }

    #[test]
    fn an_empty_file_allows_everything_and_a_huge_one_is_cut_at_a_line() {
        assert!(judge(&file(""), "c").rules.allows("http://h/x"));
        let mut text = "User-agent: *\nDisallow: /early\n".to_owned();
        while text.len() < PARSED_BYTES {
            text.push_str("# filler line that says nothing at all\n");
        }
        text.push_str("Disallow: /late\n");
        let v = judge(&file(&text), "c");
        assert!(!v.rules.allows("http://h/early"));
        assert!(v.rules.allows("http://h/late"), "past 500 KiB is not read");
        assert!(cut(text.as_bytes()).ends_with(b"\n"));
    }

    #[test]
    fn a_crawl_delay_that_is_no_duration_is_none() {
        for text in ["Crawl-delay: 0", "Crawl-delay: -3", "Crawl-delay: soon"] {
            let v = judge(&file(&format!("User-agent: *\n{text}\n")), "c");
            assert_eq!(v.crawl_delay, None, "{text}");
        }
        let v = judge(&file("User-agent: *\nCrawl-delay: 1e12\n"), "c");
        assert_eq!(v.crawl_delay, Some(MAX_CRAWL_DELAY));
    }
}
