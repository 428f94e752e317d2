//! From `coordinator load` flags to one checked [`LoadSpec`] per worker.

use std::path::PathBuf;
use std::time::Duration;

use shared::http_url::split_http_url;
use shared::loadtest::{LoadSpec, Targets};
use shared::plan::{BatchPlan, Span};
use shared::template::Template;

use super::thresholds::Threshold;
use crate::cli::LoadArgs;
use crate::cpus;
use crate::error::UsageError;
use crate::open_files;
use crate::parse::{parse_duration, parse_header, parse_rate};
use crate::plan::MAX_WORKERS;
use crate::request::RequestText;
use crate::url_input;

/// Connections one worker keeps at most.
const MAX_CONNECTIONS: u32 = 200_000;

/// A checked load test.
pub struct LoadPlan {
    /// One spec per worker.
    pub specs: Vec<LoadSpec>,
    /// What is tested, for the report.
    pub target: String,
    /// Connections in all.
    pub connections: u32,
    /// Rate in all, requests per second.
    pub rate: Option<f64>,
    /// Requests in flight on each connection over HTTP/2; `None` for HTTP/1.1.
    pub http2_streams: Option<u32>,
    /// Requests in all, if counted.
    pub requests: Option<u64>,
    /// Length, if timed.
    pub duration: Option<Duration>,
    /// Thresholds that fail the test.
    pub thresholds: Vec<Threshold>,
    /// Where the per-second lines go.
    pub timeline: Option<PathBuf>,
    /// Report as JSON.
    pub json: bool,
    /// No progress.
    pub quiet: bool,
}

impl LoadPlan {
    /// Checks every flag.
    pub fn from_args(args: &LoadArgs) -> Result<LoadPlan, UsageError> {
        let available = cpus::usable_cpus();
        let workers = args.workers.unwrap_or(available.len().max(1) as u32);
        if workers == 0 || workers > MAX_WORKERS {
            return Err(UsageError::new(
                "--workers",
                format!("{workers} is out of range: use 1 to {MAX_WORKERS}"),
            ));
        }
        if args.connections == 0 || args.connections > MAX_CONNECTIONS {
            return Err(UsageError::new(
                "--connections",
                format!(
                    "{} is out of range: use 1 to {MAX_CONNECTIONS}",
                    args.connections
                ),
            ));
        }
        // Never more workers than connections: each drives at least one.
        let workers = workers.min(args.connections);
        let per_worker = (args.connections as u64).div_ceil(workers as u64);
        open_files::check("--connections", per_worker, open_files::raise())?;
        let (tls, authority, targets, target) = targets(args)?;
        let tls = match tls {
            true => {
                let options = crate::trust::options(&args.tls);
                crate::trust::check(&options)?;
                Some(options)
            }
            false => None,
        };
        let proxies = crate::proxy::settings(&args.proxy, &|name| std::env::var(name).ok())?;
        let host = authority
            .rsplit_once(':')
            .map_or(authority.as_str(), |(host, _)| host);
        let proxy = proxies.for_target(tls.is_some(), host).cloned();
        if proxy.is_some() && args.http2 && tls.is_none() {
            return Err(UsageError::new(
                "--http2",
                "h2c (HTTP/2 on http://) cannot go through an HTTP proxy: test over https://, or bypass the proxy with --noproxy",
            ));
        }
        let duration = duration_of(args)?;
        let rate = match &args.rate {
            Some(text) => Some(parse_rate(text).map_err(|e| UsageError::new("--rate", e))?),
            None => None,
        };
        let timeout = parse_duration(&args.timeout).map_err(|e| UsageError::new("--timeout", e))?;
        let http2_streams = match (args.http2, args.streams) {
            (false, _) => None,
            (true, Some(0)) => return Err(UsageError::new("--streams", "must be at least 1")),
            (true, streams) => Some(streams.unwrap_or(1)),
        };
        let mut headers = args
            .headers
            .iter()
            .map(|h| parse_header(h))
            .collect::<Result<Vec<_>, _>>()?;
        let request_text =
            RequestText::from_args(&args.request, &|path| std::fs::read(path))?.unwrap_or_default();
        let request = request_text.spec(&mut headers)?;
        let rendered = request.body.as_ref().is_some_and(|b| b.has_placeholders());
        if let (true, Targets::Paths(_), Some((flag, _))) = (rendered, &targets, &request_text.body)
        {
            return Err(UsageError::new(
                flag.name(),
                "placeholders in the body are rendered only with --url TEMPLATE --range START..END",
            ));
        }
        if args.http2 {
            worker::http2_request_headers(&headers).map_err(|e| UsageError::new("--header", e))?;
        }
        let thresholds = args
            .fail_if
            .iter()
            .map(|t| t.parse().map_err(|e| UsageError::new("--fail-if", e)))
            .collect::<Result<Vec<_>, _>>()?;
        let share = |total: u64, i: u32| {
            total / workers as u64 + u64::from((i as u64) < total % workers as u64)
        };
        let specs = (0..workers)
            .map(|i| LoadSpec {
                authority: authority.clone(),
                targets: targets.clone(),
                connections: share(args.connections as u64, i) as u32,
                requests: args.requests.map(|n| share(n, i)),
                duration_ms: duration.map(|d| d.as_millis() as u64),
                rate: rate.map(|r| r / workers as f64),
                keepalive: !args.no_keepalive,
                request: request.clone(),
                http2_streams,
                timeout_ms: timeout.as_millis() as u64,
                headers: headers.clone(),
                tls: tls.clone(),
                proxy: proxy.clone(),
            })
            // A worker with no request to send would only idle.
            .filter(|s| s.requests != Some(0))
            .collect::<Vec<_>>();
        Ok(LoadPlan {
            specs,
            target,
            connections: args.connections,
            rate,
            http2_streams,
            requests: args.requests,
            duration,
            thresholds,
            timeline: args.timeline.clone(),
            json: args.json,
            quiet: args.quiet,
        })
    }
}

/// How long the test runs: `--duration`, or until `--requests` are done, or 10 s.
fn duration_of(args: &LoadArgs) -> Result<Option<Duration>, UsageError> {
    match (&args.duration, args.requests) {
        (Some(_), Some(_)) => Err(UsageError::new(
            "--duration",
            "give --duration or --requests, not both",
        )),
        (Some(text), None) => Ok(Some(
            parse_duration(text).map_err(|e| UsageError::new("--duration", e))?,
        )),
        (None, Some(0)) => Err(UsageError::new("--requests", "must be at least 1")),
        (None, Some(_)) => Ok(None),
        (None, None) => Ok(Some(Duration::from_secs(10))),
    }
}

/// Whether to speak TLS, `host:port`, the paths, and a description.
fn targets(args: &LoadArgs) -> Result<(bool, String, Targets, String), UsageError> {
    if args.url.is_none() && args.range.is_some() {
        return Err(UsageError::new("--range", "goes with --url TEMPLATE"));
    }
    if let Some(template) = &args.url {
        let range = args
            .range
            .as_ref()
            .ok_or_else(|| UsageError::new("--url", "a URL template needs --range START..END"))?;
        let span: Span = range.parse().map_err(|e| UsageError::new("--range", e))?;
        let plan = BatchPlan::new(span, args.batch).map_err(|e| UsageError::new("--range", e))?;
        let normalized = url_input::normalize_template(template, &[])
            .map_err(|e| UsageError::new("--url", format!("the template {e}")))?;
        let template = normalized.as_str().to_owned();
        let split = split_http_url(&template).map_err(|e| UsageError::new("--url", e))?;
        let (authority, path) = (split.authority, split.path);
        if authority.contains('{') {
            return Err(UsageError::new(
                "--url",
                "placeholders may stand in the path and query, not in the host",
            ));
        }
        let template_path = Template::parse(&path).map_err(|e| UsageError::new("--url", e))?;
        let text = format!("{template} over {range} in batches of {}", args.batch);
        return Ok((
            split.tls,
            authority.into_owned(),
            Targets::Plan {
                template: template_path,
                plan,
            },
            text,
        ));
    }
    if args.urls.is_empty() {
        return Err(UsageError::new(
            "load",
            "give a URL to test (or --url TEMPLATE --range START..END)",
        ));
    }
    let mut origin = None;
    let mut paths = Vec::new();
    for url in &args.urls {
        // Parsed and percent-encoded like a scrape's URLs: nothing raw reaches the
        // request line.
        let url = url_input::normalize(url).map_err(|e| UsageError::new("load", e))?;
        let split = split_http_url(&url).map_err(|e| UsageError::new("load", e))?;
        let this = (split.tls, split.authority.into_owned());
        if *origin.get_or_insert_with(|| this.clone()) != this {
            return Err(UsageError::new(
                "load",
                "all URLs must be on one host:port and scheme",
            ));
        }
        paths.push(split.path.into_owned());
    }
    let text = if args.urls.len() == 1 {
        args.urls[0].clone()
    } else {
        format!(
            "{} URLs on {}",
            args.urls.len(),
            origin.as_ref().map(|o| o.1.as_str()).unwrap_or_default()
        )
    };
    let (tls, authority) = origin.unwrap_or_default();
    Ok((tls, authority, Targets::Paths(paths), text))
}
