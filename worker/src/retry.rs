//! Whether a failed attempt is worth another, and how long to wait for it: exponential
//! backoff with full jitter, `Retry-After`, `--retry-max-time`.

use std::time::{Duration, SystemTime};

use shared::config::RetryPolicy;

use crate::client::ClientError;

/// Why one attempt failed, and whether another may succeed.
pub struct Failure {
    /// What went wrong, for the manifest.
    pub error: String,
    /// Whether another attempt may succeed.
    pub retryable: bool,
    /// The HTTP status, when a response came.
    pub status: Option<u16>,
    /// The wait the server asked for.
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// A failure another attempt may mend.
    pub fn retryable(error: String) -> Failure {
        Failure {
            error,
            retryable: true,
            status: None,
            retry_after: None,
        }
    }

    /// A failure no other attempt mends.
    pub fn fatal(error: String, status: Option<u16>) -> Failure {
        Failure {
            error,
            retryable: false,
            status,
            retry_after: None,
        }
    }

    /// Connect errors, resets, timeouts and cut-off bodies pass; a body over the limit,
    /// a redirect that cannot be followed and a bad URL do not.
    pub fn from_client(e: ClientError, max_body: u64) -> Failure {
        match e {
            ClientError::Connect(m)
            | ClientError::Reset(m)
            | ClientError::Read(m)
            | ClientError::Timeout(m) => Failure::retryable(m),
            ClientError::TooLarge(n) => Failure::fatal(
                format!("body of {n} bytes or more is over --max-body {max_body}"),
                None,
            ),
            ClientError::Redirect(m)
            | ClientError::BadUrl(m)
            | ClientError::Tls(m)
            | ClientError::Other(m) => Failure::fatal(m, None),
            ClientError::NeedsFullClient(handoff) => Failure::fatal(handoff.url, None),
        }
    }

    /// A response with a status other than 2xx, and its `Retry-After` header.
    pub fn status(code: u16, retry_after_header: Option<&str>, policy: &RetryPolicy) -> Failure {
        let status =
            http::StatusCode::from_u16(code).map_or_else(|_| code.to_string(), |s| s.to_string());
        Failure {
            error: format!("HTTP {status}"),
            retryable: policy.retries_status(code),
            status: Some(code),
            retry_after: retry_after_header.and_then(|v| retry_after(v, SystemTime::now())),
        }
    }
}

/// How long to wait before attempt `attempts + 1` after `failure`, with `elapsed` spent
/// on the batch so far and `unit` a uniform random number in `[0, 1)`; or the batch's
/// error if there is to be no other attempt.
pub fn wait(
    policy: &RetryPolicy,
    failure: &Failure,
    attempts: u32,
    elapsed: Duration,
    unit: f64,
) -> Result<Duration, String> {
    if !failure.retryable || attempts > policy.retries {
        return Err(failure.error.clone());
    }
    let mut wait = policy.backoff(attempts, unit);
    if let Some(asked) = failure.retry_after {
        wait = wait.max(asked.min(Duration::from_millis(policy.retry_after_max_ms)));
    }
    if elapsed + wait > Duration::from_millis(policy.max_time_ms) {
        return Err(format!(
            "{} (no retry: --retry-max-time would be exceeded)",
            failure.error
        ));
    }
    Ok(wait)
}

/// A `Retry-After` value, in seconds or as an HTTP date, as a wait from `now`.
fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            retries: 3,
            statuses: vec![503],
            base_ms: 100,
            max_ms: 1_000,
            retry_after_max_ms: 5_000,
            max_time_ms: 10_000,
            non_idempotent: false,
        }
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after("7", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(retry_after(&later, now), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn waits_grow_honour_retry_after_up_to_its_cap_and_stop_at_the_limits() {
        let p = policy();
        let busy = Failure::status(503, None, &p);
        assert_eq!(
            wait(&p, &busy, 1, Duration::ZERO, 0.5),
            Ok(Duration::from_millis(50))
        );
        assert_eq!(
            wait(&p, &busy, 3, Duration::ZERO, 0.5),
            Ok(Duration::from_millis(200))
        );
        assert!(
            wait(&p, &busy, 4, Duration::ZERO, 0.5).is_err(),
            "past --retries"
        );
        let asked = Failure::status(503, Some("3"), &p);
        assert_eq!(
            wait(&p, &asked, 1, Duration::ZERO, 0.5),
            Ok(Duration::from_secs(3))
        );
        let greedy = Failure::status(503, Some("60"), &p);
        assert_eq!(
            wait(&p, &greedy, 1, Duration::ZERO, 0.5),
            Ok(Duration::from_secs(5))
        );
        let late = wait(&p, &greedy, 1, Duration::from_secs(8), 0.5).unwrap_err();
        assert!(late.contains("--retry-max-time"), "{late}");
        let missing = Failure::status(404, None, &p);
        assert_eq!(
            wait(&p, &missing, 1, Duration::ZERO, 0.5),
            Err("HTTP 404 Not Found".into())
        );
    }
}
