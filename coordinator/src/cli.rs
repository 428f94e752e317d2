//! The command line as typed: values clap can check alone (numbers, durations, sizes)
//! are typed here; the rest is checked by [`crate::plan`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::parse;

/// The hidden subcommand that writes the man pages.
pub const MAN_COMMAND: &str = "__man";

/// Fetch a very large number of HTTP pages or API batches fast, politely and without
/// losing any: one single-threaded event loop per core, each in its own process.
///
/// With no --url or --urls, scrapes the built-in tickers API (started on a loopback
/// port) over 0..1000 in batches of 10.
#[derive(Debug, Parser)]
#[command(name = "coordinator", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// A scrape run (the default when no subcommand is given).
    #[command(flatten)]
    pub run: RunArgs,
    /// Another mode.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Modes other than a scrape run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the built-in tickers API until Ctrl-C.
    Serve(ServeArgs),
    /// Load-test an HTTP server: N workers drive C connections for a time, a number of
    /// requests or at a fixed rate, and report latency histograms (like wrk, oha, hey).
    Load(Box<LoadArgs>),
    /// Check that the runs in DIR... (one per shard) hold every batch of their plan
    /// exactly once with its whole file; exit 0 if so, 1 if not.
    Verify(VerifyArgs),
    /// Write an HTML report (charts, no script, no network) of a scrape run's directory
    /// or of a load test's --timeline file.
    Report(ReportArgs),
    /// Print a shell completion script on stdout, e.g. `coordinator completions bash >
    /// /etc/bash_completion.d/coordinator`.
    Completions(CompletionsArgs),
    /// Write the man pages (the command and each subcommand) into DIR: how docs/man/
    /// is made.
    #[command(name = MAN_COMMAND, hide = true)]
    Man(ManArgs),
    /// Run as a worker process (started by the coordinator itself).
    #[command(name = crate::pool::WORKER_COMMAND, hide = true)]
    Worker(WorkerArgs),
}

/// A scrape run. With `--resume`, `--retry-failed` or `--refresh` and none of --url,
/// --urls, --range, --batch, --name and --shard, the plan is the one `run.json` in
/// --out holds.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// URL template with {start}, {end}, {limit} and {index} placeholders, e.g.
    /// 'http://127.0.0.1:8080/api/tickers/?start={start}&limit={limit}' (and {cursor}
    /// with --follow-next json:POINTER).
    #[arg(
        long,
        value_name = "TEMPLATE",
        conflicts_with = "urls",
        help_heading = "Input"
    )]
    pub url: Option<String>,

    /// Read one URL per line from FILE ('-' for stdin) instead of a template.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["range", "batch"], help_heading = "Input")]
    pub urls: Option<PathBuf>,

    /// Items to fetch, START..END (END exclusive) [default with the built-in target: 0..1000].
    #[arg(long, value_name = "START..END", help_heading = "Input")]
    pub range: Option<String>,

    /// Items per batch; the last batch may be shorter [default: 10].
    #[arg(long, value_name = "SIZE", help_heading = "Input")]
    pub batch: Option<u64>,

    /// Fetch only slice K of M of the plan (K from 0), e.g. 0/4; `auto` reads it from a
    /// Kubernetes Indexed Job, a Slurm array or COORDINATOR_SHARD_INDEX/COUNT.
    #[arg(long, value_name = "K/M|auto", help_heading = "Input")]
    pub shard: Option<String>,

    /// Follow each page to the next one it names: `json:POINTER`, the value at an RFC
    /// 6901 pointer in the JSON body (e.g. json:/next, json:/meta/next_cursor; a URL,
    /// absolute or relative, is followed, a bare cursor goes into {cursor} of --url),
    /// or `link`, the Link header's rel="next" (as GitHub's API sends). Each --urls
    /// line, or each batch of --url, starts a chain; pages are stored as
    /// {index}-{page}.json unless --name says otherwise.
    #[arg(long, value_name = "json:POINTER|link", help_heading = "Input")]
    pub follow_next: Option<String>,

    /// With --follow-next: pages one chain fetches at most; a chain also ends at a
    /// page that names no next page, or one it fetched already (a loop).
    #[arg(long, value_name = "N", help_heading = "Input")]
    pub max_pages: Option<u64>,

    /// Response delay of the built-in target in ms, MIN..MAX (only without --url/--urls)
    /// [default: 0..0].
    #[arg(long, value_name = "MIN..MAX", conflicts_with_all = ["url", "urls"], help_heading = "Input", hide_short_help = true)]
    pub builtin_delay: Option<String>,

    /// Directory for the batch files and manifest.jsonl; `-` streams one JSON line per
    /// batch to stdout instead (body embedded as JSON, or base64).
    #[arg(
        short,
        long,
        value_name = "DIR",
        default_value = "out",
        help_heading = "Output"
    )]
    pub out: PathBuf,

    /// File name template for each batch, inside --out [default: batch{start}-{end}.json,
    /// or {index}-{page}.json with --follow-next].
    #[arg(long, value_name = "TEMPLATE", help_heading = "Output")]
    pub name: Option<String>,

    /// Start over in an --out directory that already holds a run (its files go).
    #[arg(long, conflicts_with_all = ["resume", "retry_failed"], help_heading = "Output")]
    pub overwrite: bool,

    /// Continue the run in --out: fetch only the batches its manifest does not list.
    #[arg(long, conflicts_with = "retry_failed", help_heading = "Output")]
    pub resume: bool,

    /// Fetch again only the batches the manifest in --out records as failed.
    #[arg(long, help_heading = "Output")]
    pub retry_failed: bool,

    /// Fetch the finished run in --out again, each batch on the condition that it
    /// changed (If-None-Match, If-Modified-Since from its ETag and Last-Modified in the
    /// manifest): a 304 keeps the file, a 200 replaces it, a failure leaves it.
    #[arg(long, conflicts_with_all = ["overwrite", "resume", "retry_failed"], help_heading = "Output")]
    pub refresh: bool,

    /// No progress display and no summary; errors still go to stderr.
    #[arg(short, long, help_heading = "Output")]
    pub quiet: bool,

    /// Print the summary as one JSON object, on stdout (on stderr with --out -).
    #[arg(long, help_heading = "Output")]
    pub json: bool,

    /// After the run, write an HTML report of it to FILE: throughput, latency,
    /// statuses and errors over time, per worker and per host (needs an --out directory).
    #[arg(long, value_name = "FILE.html", help_heading = "Output")]
    pub report: Option<PathBuf>,

    /// Serve live Prometheus metrics of the run on IP:PORT (port 0 picks a free one,
    /// printed on stderr), e.g. 127.0.0.1:9464; GET /metrics.
    #[arg(long, value_name = "ADDR", help_heading = "Output", value_parser = crate::metrics::parse_addr)]
    pub metrics: Option<std::net::SocketAddr>,

    /// Requests each worker keeps in flight.
    #[arg(
        short,
        long,
        value_name = "C",
        default_value_t = 256,
        help_heading = "Requests"
    )]
    pub concurrency: u32,

    /// Extra request header 'Name: value' (repeatable); never logged.
    #[arg(
        short = 'H',
        long = "header",
        value_name = "NAME: VALUE",
        help_heading = "Requests"
    )]
    pub headers: Vec<String>,

    /// The method and body of every request.
    #[command(flatten, next_help_heading = "Requests")]
    pub request: RequestArgs,

    /// User-Agent header.
    #[arg(long, value_name = "TEXT", default_value = concat!("coordinator/", env!("CARGO_PKG_VERSION")), help_heading = "Requests", hide_short_help = true)]
    pub user_agent: String,

    /// Whole-request timeout, e.g. 30s, 500ms, 2m.
    #[arg(long, value_name = "DURATION", default_value = "30s", help_heading = "Requests", value_parser = parse::parse_duration)]
    pub timeout: Duration,

    /// Redirects followed at most.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10,
        help_heading = "Requests"
    )]
    pub max_redirects: u32,

    /// Send the --header values (Authorization, Cookie, API keys, ...) after a redirect
    /// to another scheme, host or port too, like curl's --location-trusted. Without it
    /// they go only to the origin of the batch's own URL.
    #[arg(long, help_heading = "Requests", hide_short_help = true)]
    pub location_trusted: bool,

    /// Ask for gzip or brotli bodies and store them decoded. Without it, plain http://
    /// URLs take a lean HTTP/1.1 client and bodies come as the server sends them.
    #[arg(long, help_heading = "Requests")]
    pub compressed: bool,

    /// Speak HTTP/2 only, with prior knowledge (h2c) on http:// URLs: each worker sends
    /// its requests to a host as streams on a few shared connections, so thousands in
    /// flight need a handful of sockets. The server must speak HTTP/2 (`coordinator
    /// serve` does). Without it, https:// servers may still choose HTTP/2 by ALPN.
    #[arg(long, help_heading = "Requests")]
    pub http2: bool,

    /// With --http2: requests one connection carries at once; more open another
    /// connection. 100 is the least a server must allow; raise it for servers that
    /// allow more (`coordinator serve` allows a million).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 100,
        help_heading = "Requests",
        hide_short_help = true
    )]
    pub http2_streams: u32,

    /// Connection set-up timeout.
    #[arg(long, value_name = "DURATION", default_value = "10s", help_heading = "Requests", hide_short_help = true, value_parser = parse::parse_duration)]
    pub connect_timeout: Duration,

    /// Which https:// servers are trusted, and the client certificate.
    #[command(flatten)]
    pub tls: TlsArgs,

    /// The forward proxy.
    #[command(flatten)]
    pub proxy: ProxyArgs,

    /// Requests per second at most, all workers together (each keeps to its share).
    #[arg(long, value_name = "R", help_heading = "Requests")]
    pub rate: Option<String>,

    /// Requests per second at most to any one host (scheme, host and port), all
    /// workers together: each host is then served by one worker.
    #[arg(long, value_name = "R", help_heading = "Politeness")]
    pub per_host_rate: Option<String>,

    /// Requests in flight at most to any one host, all workers together.
    #[arg(long, value_name = "N", help_heading = "Politeness")]
    pub per_host_concurrency: Option<u32>,

    /// Slow a host down, for every worker, when it answers 429 or 503, and speed it up
    /// again while it answers well (AIMD); hold every request to a host for the
    /// Retry-After it sends; ramp each host's first requests up over 100 ms (after 64
    /// at once).
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = ["on", "off"], help_heading = "Politeness")]
    pub adaptive: String,
    /// Whether each host's robots.txt is fetched (once per run, by the coordinator) and
    /// obeyed for the product token of --user-agent: a batch it disallows is not
    /// fetched and its manifest line says "skipped": "robots". A robots.txt that
    /// answers 4xx allows everything; 5xx or no answer disallows everything for the run.
    #[arg(
        long,
        value_name = "MODE",
        value_enum,
        default_value_t = RobotsMode::Obey,
        help_heading = "Requests"
    )]
    pub robots: RobotsMode,

    /// Largest response body, e.g. 64MiB; a larger one fails its batch unbuffered.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", help_heading = "Requests", value_parser = parse::parse_size)]
    pub max_body: u64,

    /// Memory the response bodies of one worker may take at once, e.g. 256MiB: a
    /// request waits for room rather than go over it (one body of up to --max-body may
    /// go beyond it at a time, so that large bodies never wait for each other forever).
    #[arg(long, value_name = "SIZE", default_value = "256MiB", help_heading = "Requests", hide_short_help = true, value_parser = parse::parse_size)]
    pub body_budget: u64,

    /// Attempts after the first for connect errors, resets, timeouts, cut-off bodies and
    /// the --retry-on statuses.
    #[arg(long, value_name = "N", default_value_t = 3, help_heading = "Retries")]
    pub retries: u32,

    /// HTTP statuses that are retried, comma-separated.
    #[arg(
        long,
        value_name = "CODES",
        default_value = "408,429,500,502,503,504,522,524",
        help_heading = "Retries"
    )]
    pub retry_on: String,

    /// First backoff; it doubles per retry, with full jitter.
    #[arg(long, value_name = "DURATION", default_value = "250ms", help_heading = "Retries", value_parser = parse::parse_duration)]
    pub backoff: Duration,

    /// Retry requests whose method is not idempotent too (POST, PATCH, any method but
    /// GET, HEAD, PUT, DELETE, OPTIONS and TRACE). Without it they get one attempt,
    /// whatever the failure: the server may have acted on a request that failed.
    #[arg(long, help_heading = "Retries")]
    pub retry_non_idempotent: bool,

    /// Largest backoff.
    #[arg(long, value_name = "DURATION", default_value = "30s", help_heading = "Retries", hide_short_help = true, value_parser = parse::parse_duration)]
    pub backoff_max: Duration,

    /// Largest Retry-After honoured (seconds or HTTP date in the header).
    #[arg(long, value_name = "DURATION", default_value = "2m", help_heading = "Retries", hide_short_help = true, value_parser = parse::parse_duration)]
    pub retry_after_max: Duration,

    /// Time one batch may take in all, retries included.
    #[arg(long, value_name = "DURATION", default_value = "5m", help_heading = "Retries", hide_short_help = true, value_parser = parse::parse_duration)]
    pub retry_max_time: Duration,

    /// Worker processes, one event loop each [default: the cores this process may use].
    #[arg(short, long, value_name = "N", help_heading = "Workers")]
    pub workers: Option<u32>,

    /// Worker restarts allowed in one run before it gives up.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10,
        help_heading = "Workers",
        hide_short_help = true
    )]
    pub max_restarts: u32,

    /// A worker that holds batches and reports nothing for this long is restarted and
    /// its batches handed out again [default: --retry-max-time + --timeout + 30s].
    #[arg(long, value_name = "DURATION", help_heading = "Workers", hide_short_help = true, value_parser = parse::parse_duration)]
    pub stall_timeout: Option<Duration>,

    /// On SIGINT/SIGTERM, time in-flight batches get to finish before workers are stopped.
    #[arg(long, value_name = "DURATION", default_value = "10s", help_heading = "Stopping", value_parser = parse::parse_duration)]
    pub grace: Duration,

    /// Stop the whole run after this long (like SIGTERM: in-flight batches get --grace);
    /// exit code 4.
    #[arg(long, value_name = "DURATION", help_heading = "Stopping", value_parser = parse::parse_duration)]
    pub deadline: Option<Duration>,
}

/// What a scrape makes of robots.txt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RobotsMode {
    /// Fetch each host's robots.txt once and skip the batches it disallows.
    Obey,
    /// Fetch no robots.txt; every batch is fetched.
    Ignore,
}

/// TLS trust and client identity, the same in scrape and load runs. Without
/// --cacert or --insecure, servers are checked against the system's store
/// (`SSL_CERT_FILE` and `SSL_CERT_DIR` when set, as OpenSSL-based tools do).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "TLS")]
pub struct TlsArgs {
    /// Trust exactly the certificate authorities in this PEM file instead of the
    /// system's store (as curl's --cacert).
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub cacert: Option<PathBuf>,
    /// Accept any server certificate (a warning says so, and run.json records it).
    #[arg(short = 'k', long)]
    pub insecure: bool,
    /// Client certificate chain (PEM), for servers that ask for one (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
}

/// The forward proxy, the same in scrape and load runs. Without --proxy, the
/// http_proxy, https_proxy, all_proxy and no_proxy variables (either case) are read as
/// curl reads them.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Proxy")]
pub struct ProxyArgs {
    /// Send every request through this HTTP proxy, http://[USER:PASSWORD@]HOST[:PORT]
    /// (https:// targets through a CONNECT tunnel); its password is never shown.
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,
    /// Hosts reached directly, comma-separated: names (with their subdomains),
    /// addresses, CIDR ranges, or '*' for all. Replaces no_proxy.
    #[arg(long, value_name = "LIST")]
    pub noproxy: Option<String>,
}

/// The method and body of every request, in a scrape and in `load`: `-X`, `-d` and
/// `--data-json`, as curl has them.
#[derive(Debug, Clone, Default, Args)]
pub struct RequestArgs {
    /// Request method, e.g. POST, PUT, PATCH, DELETE [default: GET, or POST with a
    /// body]. In a scrape, a request whose method is not idempotent (POST, PATCH, ...)
    /// gets one attempt unless --retry-non-idempotent is given.
    #[arg(short = 'X', long = "request", value_name = "METHOD")]
    pub method: Option<String>,

    /// Request body, with the placeholders of --url rendered per batch
    /// ({start}, {end}, {limit}, {index}); @FILE reads it from FILE. Sends
    /// 'Content-Type: application/x-www-form-urlencoded' unless a --header names one.
    /// Repeated, the parts are joined with '&', as curl does.
    #[arg(short = 'd', long, value_name = "TEXT|@FILE")]
    pub data: Vec<String>,

    /// A JSON request body, like --data but sent with 'Content-Type: application/json'
    /// and 'Accept: application/json' (curl's --json: --json here asks for JSON output).
    /// {start}, {end}, {limit} and {index} are placeholders; other braces are JSON.
    #[arg(long, value_name = "TEXT|@FILE", conflicts_with = "data")]
    pub data_json: Option<String>,
}

/// `coordinator serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free one (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Listen on 127.0.0.1:PORT (short for --addr 127.0.0.1:PORT).
    #[arg(long, value_name = "PORT", conflicts_with = "addr")]
    pub port: Option<u16>,
    /// Random delay per response in ms, MIN..MAX (the seed article's jobs: 2000..4000).
    #[arg(long, value_name = "MIN..MAX", default_value = "0..0")]
    pub delay: String,
    /// Number of coins that exist; later pages are short or empty.
    #[arg(long, default_value_t = 1_000_000_000)]
    pub coins: u64,
    /// Compress responses (gzip, brotli) for clients that accept it.
    #[arg(long)]
    pub compress: bool,
    /// Share of requests answered 500 (0.0 to 1.0), to test retries.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Share of requests answered 429 with Retry-After.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    pub throttle_rate: f64,
    /// Seconds in the Retry-After of a 429.
    #[arg(long, value_name = "SECS", default_value_t = 1)]
    pub retry_after: u64,
    /// Share of connections reset on accept (every response then closes its connection).
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    pub drop_rate: f64,
    /// Share of responses cut off after half the announced body.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    pub truncate_rate: f64,
    /// Share of responses that stall for --stall before answering.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    pub stall_rate: f64,
    /// Length of a stall, e.g. 30s.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub stall: String,
    /// Answer at most R requests of the API per second (counted over the whole
    /// server); the rest get 429 Too Many Requests with Retry-After: 1.
    #[arg(long, value_name = "R")]
    pub max_rate: Option<u64>,
    /// Answer GET /robots.txt with this file (read once, at start); without it,
    /// /robots.txt is a 404, which allows every crawler everything.
    #[arg(long, value_name = "FILE")]
    pub robots_txt: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM); HTTP/2 or HTTP/1.1 by ALPN.
    #[arg(long, value_name = "FILE", requires = "tls_key", help_heading = "TLS")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert", help_heading = "TLS")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by the authorities in this PEM file.
    #[arg(long, value_name = "FILE", requires = "tls_cert", help_heading = "TLS")]
    pub tls_client_ca: Option<PathBuf>,
}

/// `coordinator load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// URLs to request in turn (http://, one host:port).
    #[arg(value_name = "URL")]
    pub urls: Vec<String>,
    /// A URL template instead, with {start}/{end}/{limit}/{index} over --range.
    #[arg(long, value_name = "TEMPLATE", conflicts_with = "urls")]
    pub url: Option<String>,
    /// START..END for --url.
    #[arg(long, value_name = "START..END", requires = "url")]
    pub range: Option<String>,
    /// Items per batch for --url.
    #[arg(long, value_name = "SIZE", default_value_t = 10, requires = "url")]
    pub batch: u64,
    /// Worker processes [default: the cores this process may use].
    #[arg(short, long, value_name = "N")]
    pub workers: Option<u32>,
    /// Connections in all, shared out among the workers.
    #[arg(short, long, value_name = "C", default_value_t = 50)]
    pub connections: u32,
    /// How long to send, e.g. 30s [default: 10s unless --requests].
    #[arg(short = 'z', long, value_name = "DURATION")]
    pub duration: Option<String>,
    /// How many requests to send in all.
    #[arg(short = 'n', long, value_name = "N")]
    pub requests: Option<u64>,
    /// A constant arrival rate in requests per second, all workers together; latency
    /// is then also measured from each request's intended send time.
    #[arg(long, value_name = "R")]
    pub rate: Option<String>,
    /// A new connection for every request (over HTTP/2 too: one stream, then GOAWAY).
    #[arg(long)]
    pub no_keepalive: bool,
    /// Speak HTTP/2 with prior knowledge (h2c): each connection carries --streams
    /// requests at once.
    #[arg(long)]
    pub http2: bool,
    /// With --http2: requests in flight on each connection [default: 1].
    #[arg(
        short = 'm',
        long,
        value_name = "M",
        requires = "http2",
        conflicts_with = "no_keepalive"
    )]
    pub streams: Option<u32>,
    /// Extra request header 'Name: value' (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Which https:// servers are trusted, and the client certificate.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// The forward proxy.
    #[command(flatten)]
    pub proxy: ProxyArgs,
    /// The method and body of every request (placeholders rendered only with --url
    /// TEMPLATE --range).
    #[command(flatten)]
    pub request: RequestArgs,
    /// Whole-request timeout.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub timeout: String,
    /// Write one JSON line per second (requests, errors, p50, p99) to FILE.
    #[arg(long, value_name = "FILE")]
    pub timeline: Option<PathBuf>,
    /// Exit 1 when this holds, e.g. 'p99>50ms', 'errors>0.1%', 'rps<1000' (repeatable).
    /// Latency is from the intended send time with --rate, else service time; errors
    /// are failed requests and 5xx responses.
    #[arg(long, value_name = "EXPR")]
    pub fail_if: Vec<String>,
    /// The report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// No live progress.
    #[arg(short, long)]
    pub quiet: bool,
    /// After the test, write an HTML report of it to FILE: throughput, latency and
    /// errors over time (with --rate also from the intended send time), per worker.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
    /// Serve live Prometheus metrics of the test on IP:PORT (port 0 picks a free one,
    /// printed on stderr), e.g. 127.0.0.1:9464; GET /metrics.
    #[arg(long, value_name = "ADDR", value_parser = crate::metrics::parse_addr)]
    pub metrics: Option<std::net::SocketAddr>,
}

/// `coordinator report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A scrape run's --out directory, or a load test's --timeline file.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// The HTML file to write.
    #[arg(short, long, value_name = "FILE.html")]
    pub output: PathBuf,
}

/// `coordinator verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Output directories of the runs (one per shard).
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Print on stdout the commands that fetch just the gaps.
    #[arg(long)]
    pub print_command: bool,
    /// Print on stdout the URLs of the gaps, one per line.
    #[arg(long)]
    pub print_urls: bool,
}

/// `coordinator completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// `coordinator __man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// The directory to write the pages into (it must exist).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// `coordinator __worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The coordinator's pid: the worker leaves if its parent is another process.
    #[arg(long)]
    pub parent: u32,
}
