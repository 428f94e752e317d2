//! The settings a worker receives in its handshake: everything it needs to fetch and
//! store a batch, checked by the coordinator before any worker starts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::request::RequestSpec;
use crate::template::Template;

/// How a worker fetches and stores its batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerConfig {
    /// URL template for range plans; `None` when every job carries its own URL.
    pub url: Option<Template>,
    /// File name template, relative to `out_dir`.
    pub name: Template,
    /// Directory the batch files are written to; `None` sends bodies back in the
    /// reports instead.
    pub out_dir: Option<String>,
    /// Requests this worker keeps in flight at most.
    pub concurrency: u32,
    /// Extra request headers, `(name, value)`. Never logged.
    pub headers: Vec<(String, String)>,
    /// The method and body of every request.
    pub request: RequestSpec,
    /// `User-Agent` header.
    pub user_agent: String,
    /// Whole-request timeout in milliseconds.
    pub timeout_ms: u64,
    /// Connection set-up timeout in milliseconds.
    pub connect_timeout_ms: u64,
    /// Largest body accepted, in bytes; a larger one fails the batch unbuffered.
    pub max_body: u64,
    /// Bytes of response bodies the worker holds at once at most, beyond one body of
    /// up to `max_body`; requests wait for room rather than exceed it.
    pub body_budget: u64,
    /// When and how failed requests are tried again.
    pub retry: RetryPolicy,
    /// Redirects followed at most.
    pub max_redirects: u32,
    /// Send the `headers` after a redirect to another origin too (`--location-trusted`);
    /// otherwise they go only to the origin of the job's URL.
    pub location_trusted: bool,
    /// Requests per second this worker sends at most (its share of `--rate`).
    pub rate: Option<f64>,
    /// Ask for gzip/brotli bodies and decode them (always through the full client);
    /// otherwise plain `http://` URLs take the lean client.
    pub compressed: bool,
    /// Speak HTTP/2 only, with prior knowledge on plain `http://` (h2c): a worker's
    /// requests to one host share one connection.
    pub http2: bool,
    /// HTTP/2 requests one connection carries at once; more open another connection.
    pub http2_streams: u32,
    /// Which servers are trusted over TLS, and what the client shows of itself.
    pub tls: TlsOptions,
    /// The forward proxies, and the hosts that bypass them.
    pub proxy: crate::proxy::ProxyConfig,
    /// This worker's limits per host (the coordinator routes each host to one worker
    /// when there are any, so they hold for the run as a whole).
    pub per_host: PerHostLimits,
    /// Report hosts that answer 429 or 503, so that the coordinator can slow them down
    /// for every worker (`--adaptive on`).
    pub adaptive: bool,
    /// Where each page names its next page (`--follow-next`); `None` fetches each job
    /// alone.
    pub follow_next: Option<crate::chain::FollowNext>,
}

/// Limits per host: scheme, host and port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PerHostLimits {
    /// Requests per second at most (`--per-host-rate`).
    pub rate: Option<f64>,
    /// Requests in flight at most (`--per-host-concurrency`).
    pub concurrency: Option<u32>,
}

impl PerHostLimits {
    /// Whether neither limit is set.
    pub fn is_none(&self) -> bool {
        self.rate.is_none() && self.concurrency.is_none()
    }
}

/// TLS trust and client identity, the same in scrape and load runs. Paths are absolute:
/// the coordinator has read each file once before any worker starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsOptions {
    /// PEM file of the certificate authorities to trust instead of the system's store
    /// (`--cacert`).
    pub ca_file: Option<String>,
    /// Accept any server certificate (`--insecure`).
    pub insecure: bool,
    /// PEM file of the client certificate chain (`--cert`).
    pub client_cert: Option<String>,
    /// PEM file of the client certificate's private key (`--key`).
    pub client_key: Option<String>,
}

/// How a TLS failure starts in a manifest line, so that every reader (summary,
/// metrics, the early stop) can tell it from the others.
pub const TLS_ERROR_PREFIX: &str = "TLS ";

/// Statuses retried unless told otherwise: timeouts, throttling and the 5xx family
/// that usually passes (including Cloudflare's 522 and 524).
pub const DEFAULT_RETRY_STATUSES: [u16; 8] = [408, 429, 500, 502, 503, 504, 522, 524];

/// Retries with exponential backoff and full jitter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts after the first, at most.
    pub retries: u32,
    /// HTTP statuses worth another attempt.
    pub statuses: Vec<u16>,
    /// Backoff before the first retry, in milliseconds; it doubles each time.
    pub base_ms: u64,
    /// Largest backoff, in milliseconds.
    pub max_ms: u64,
    /// Largest `Retry-After` honoured, in milliseconds.
    pub retry_after_max_ms: u64,
    /// Time one batch may take in all, retries and waits included, in milliseconds.
    pub max_time_ms: u64,
    /// Retry requests whose method is not idempotent too (`--retry-non-idempotent`);
    /// otherwise they get one attempt.
    pub non_idempotent: bool,
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 for the first), for a uniform random
    /// `unit` in `[0, 1)`: full jitter over `min(max, base * 2^(retry-1))`.
    pub fn backoff(&self, retry: u32, unit: f64) -> Duration {
        let exp = self
            .base_ms
            .saturating_mul(1u64 << retry.saturating_sub(1).min(32))
            .min(self.max_ms);
        Duration::from_millis((exp as f64 * unit.clamp(0.0, 1.0)) as u64)
    }

    /// Whether `status` is worth another attempt.
    pub fn retries_status(&self, status: u16) -> bool {
        self.statuses.contains(&status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            retries: 5,
            statuses: DEFAULT_RETRY_STATUSES.to_vec(),
            base_ms: 100,
            max_ms: 1_000,
            retry_after_max_ms: 60_000,
            max_time_ms: 60_000,
            non_idempotent: false,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_full_jitter() {
        let p = policy();
        assert_eq!(p.backoff(1, 0.999_999), Duration::from_millis(99));
        assert_eq!(p.backoff(3, 0.5), Duration::from_millis(200));
        assert_eq!(p.backoff(10, 0.5), Duration::from_millis(500));
        assert_eq!(p.backoff(200, 1.0), Duration::from_millis(1_000));
        assert_eq!(p.backoff(2, 0.0), Duration::ZERO);
    }

    #[test]
    fn only_listed_statuses_are_retried() {
        let p = policy();
        assert!(p.retries_status(503) && p.retries_status(429));
        assert!(!p.retries_status(404) && !p.retries_status(200));
    }
}
