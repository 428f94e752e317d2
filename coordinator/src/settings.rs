//! From the command line to a checked plan: every flag is validated here, before any
//! process is started or any file is written (ripgrep's low-args → high-args split).

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sched::{CpuSet, sched_getaffinity};
use nix::unistd::Pid;
use shared::config::{RetryPolicy, WorkerConfig};
use shared::http_url::redact_password;
use shared::plan::{BatchPlan, Shard, Span};
use shared::template::{Template, Var};
use thiserror::Error;

use crate::cli::RunArgs;
use crate::open_files;
use crate::resume::{self, Mode, RunRecord};
use crate::scheduler;
use crate::source::Filter;
use crate::url_input::{self, Listed, UrlLines};

/// Most worker processes one coordinator starts.
pub const MAX_WORKERS: u32 = 1024;
/// Most requests one worker keeps in flight.
pub const MAX_CONCURRENCY: u32 = 100_000;
/// Range of the default job on the built-in target.
const BUILTIN_RANGE: Span = Span {
    start: 0,
    end: 1000,
};

/// Bad input: the flag it concerns and what is wrong with it. Exit code 2.
#[derive(Debug, Error)]
#[error("{flag}: {problem}")]
pub struct UsageError {
    flag: &'static str,
    problem: String,
}

impl UsageError {
    /// A problem with `flag`.
    pub fn new(flag: &'static str, problem: impl ToString) -> UsageError {
        UsageError {
            flag,
            problem: problem.to_string(),
        }
    }
}

fn usage(flag: &'static str, problem: impl ToString) -> UsageError {
    UsageError::new(flag, problem)
}

/// Where the URLs come from.
pub enum Target {
    /// A URL template over a batch plan.
    Template(BatchPlan),
    /// The built-in tickers API, started in-process, over a batch plan.
    Builtin {
        /// The batches.
        plan: BatchPlan,
        /// Response delay of the server, in ms.
        delay_ms: Span,
    },
    /// One URL per line.
    UrlList(UrlList),
}

/// A URL list, opened and checked to hold at least one URL.
pub struct UrlList {
    /// Where the lines come from.
    pub lines: UrlLines<Box<dyn BufRead + Send>>,
    /// The first URL, already read from `reader`.
    pub first: String,
    /// Number of URLs, when it could be counted up front (files, not stdin).
    pub total: Option<u64>,
}

/// Where the bodies go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Batch files and manifest.jsonl in this directory (exists and is writable).
    Dir(PathBuf),
    /// One JSON line per batch on stdout (`--out -`).
    Stdout,
}

/// A checked run.
pub struct Settings {
    /// Worker processes to start.
    pub workers: u32,
    /// CPUs to pin workers to, one each; empty when there are fewer CPUs than workers.
    pub cpus: Vec<usize>,
    /// What to fetch.
    pub target: Target,
    /// Where the bodies go.
    pub output: Output,
    /// Settings every worker gets; `url` is filled in once the target is known.
    pub worker: WorkerConfig,
    /// The slice of the plan this run owns.
    pub shard: Shard,
    /// Which jobs of the slice this run fetches (all, or what a resume leaves).
    pub filter: Filter,
    /// Time limits of the run as a whole.
    pub limits: RunLimits,
    /// Worker restarts allowed.
    pub max_restarts: u32,
    /// No progress and no summary.
    pub quiet: bool,
    /// The summary as one JSON object (on stdout, or stderr with `--out -`).
    pub json: bool,
}

/// Time limits of the run as a whole.
#[derive(Debug, Clone, Copy)]
pub struct RunLimits {
    /// Time in-flight batches get after SIGINT/SIGTERM.
    pub grace: Duration,
    /// Whole-run time limit.
    pub deadline: Option<Duration>,
    /// Silence after which a worker holding batches is restarted.
    pub stall_timeout: Duration,
}

/// Bodies on stdout travel inside frames: they must fit one, with room for the rest.
const MAX_INLINE_BODY: u64 = (shared::frame::MAX_FRAME_LEN - 64 * 1024) as u64;

impl Settings {
    /// Checks every flag, then prepares the output directory.
    pub fn from_args(args: RunArgs) -> anyhow::Result<Settings> {
        let available = usable_cpus();
        let workers = args.workers.unwrap_or(available.len().max(1) as u32);
        if workers == 0 || workers > MAX_WORKERS {
            Err(usage(
                "--workers",
                format!("{workers} is out of range: use 1 to {MAX_WORKERS}"),
            ))?;
        }
        if args.concurrency == 0 || args.concurrency > MAX_CONCURRENCY {
            let problem = format!(
                "{} is out of range: use 1 to {MAX_CONCURRENCY}",
                args.concurrency
            );
            Err(usage("--concurrency", problem))?;
        }
        let output = if args.out == Path::new("-") {
            Output::Stdout
        } else {
            Output::Dir(args.out.clone())
        };
        let mode = match (args.overwrite, args.resume, args.retry_failed) {
            (true, _, _) => Mode::Overwrite,
            (_, true, _) => Mode::Resume,
            (_, _, true) => Mode::RetryFailed,
            _ => Mode::Fresh,
        };
        if output == Output::Stdout && mode != Mode::Fresh {
            Err(usage(
                "--out -",
                "writes no manifest, so it cannot be combined with --resume, --retry-failed or --overwrite",
            ))?;
        }
        let (mut worker, limits) = worker_config(&args)?;
        let rate = match &args.rate {
            Some(text) => Some(parse_rate(text).map_err(|e| usage("--rate", e))?),
            None => None,
        };
        if output == Output::Stdout {
            worker.out_dir = None;
            worker.max_body = worker.max_body.min(MAX_INLINE_BODY);
        }
        let target = target(&args, worker.url.is_some())?;
        let shard = match args.shard.as_deref() {
            None => Shard::WHOLE,
            Some("auto") => scheduler::shard_from_env(|v| std::env::var(v).ok())
                .map_err(|e| usage("--shard auto", e))?,
            Some(text) => text.parse().map_err(|e| usage("--shard", e))?,
        };
        let workers = workers.min(batch_bound(&target, shard, &Filter::All));
        // Under HTTP/2 a worker's requests share a few connections per host.
        if !args.http2 {
            check_open_files(&target, workers, args.concurrency)?;
        }
        let filter = match &output {
            Output::Dir(dir) => prepare_dir(dir, mode, &record(&args, &target, shard))?,
            Output::Stdout => Filter::All,
        };
        // A resume may leave fewer batches than the plan has.
        let workers = workers.min(batch_bound(&target, shard, &filter));
        // Each worker keeps to its share, so that all together keep to the rate.
        worker.rate = rate.map(|rate| rate / workers as f64);
        let cpus = if available.len() >= workers as usize {
            available
        } else {
            Vec::new()
        };
        Ok(Settings {
            workers,
            cpus,
            target,
            output,
            worker,
            shard,
            filter,
            limits,
            max_restarts: args.max_restarts,
            quiet: args.quiet,
            json: args.json,
        })
    }
}

/// What every worker gets, and the run's time limits, from the flags.
fn worker_config(args: &RunArgs) -> Result<(WorkerConfig, RunLimits), UsageError> {
    let duration =
        |flag: &'static str, text: &str| parse_duration(text).map_err(|e| usage(flag, e));
    let timeout = duration("--timeout", &args.timeout)?;
    let retry_max_time = duration("--retry-max-time", &args.retry_max_time)?;
    let retry = RetryPolicy {
        retries: args.retries,
        statuses: parse_statuses(&args.retry_on)?,
        base_ms: millis(duration("--backoff", &args.backoff)?),
        max_ms: millis(duration("--backoff-max", &args.backoff_max)?),
        retry_after_max_ms: millis(duration("--retry-after-max", &args.retry_after_max)?),
        max_time_ms: millis(retry_max_time),
    };
    let limits = RunLimits {
        grace: duration("--grace", &args.grace)?,
        deadline: match &args.deadline {
            Some(text) => Some(duration("--deadline", text)?),
            None => None,
        },
        stall_timeout: match &args.stall_timeout {
            Some(text) => duration("--stall-timeout", text)?,
            None => retry_max_time + timeout + Duration::from_secs(30),
        },
    };
    let url = match &args.url {
        Some(url) => Some(url_template(url)?),
        None => None,
    };
    let headers = args
        .headers
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    let worker = WorkerConfig {
        url,
        name: name_template(&args.name)?,
        out_dir: Some(args.out.to_string_lossy().into_owned()),
        concurrency: args.concurrency,
        headers,
        user_agent: args.user_agent.clone(),
        timeout_ms: millis(timeout),
        connect_timeout_ms: millis(duration("--connect-timeout", &args.connect_timeout)?),
        max_body: parse_size(&args.max_body).map_err(|e| usage("--max-body", e))?,
        body_budget: parse_size(&args.body_budget).map_err(|e| usage("--body-budget", e))?,
        retry,
        max_redirects: args.max_redirects,
        location_trusted: args.location_trusted,
        rate: None,
        compressed: args.compressed,
        http2: args.http2,
        http2_streams: match args.http2_streams {
            0 => return Err(usage("--http2-streams", "must be at least 1")),
            n => n,
        },
    };
    // Building one client here catches headers HTTP does not allow.
    worker::Fetcher::new(&worker).map_err(|e| usage(e.flag(), e))?;
    Ok((worker, limits))
}

/// Creates the output directory, checks it can be written and squares it with an
/// earlier run there. This is the first thing a run writes.
fn prepare_dir(dir: &Path, mode: Mode, record: &RunRecord) -> Result<Filter, UsageError> {
    let shown = dir.display();
    if matches!(mode, Mode::Resume | Mode::RetryFailed) && !dir.is_dir() {
        let flag = if mode == Mode::Resume {
            "--resume"
        } else {
            "--retry-failed"
        };
        Err(usage(flag, format!("{shown} holds no run to continue")))?;
    }
    if dir.exists() && !dir.is_dir() {
        Err(usage(
            "--out",
            format!("{shown} exists and is not a directory"),
        ))?;
    }
    fs::create_dir_all(dir).map_err(|e| usage("--out", format!("cannot create {shown}: {e}")))?;
    let probe = dir.join(".coordinator-write-test");
    worker::create_fresh(&probe)
        .and_then(|_| fs::remove_file(&probe))
        .map_err(|e| usage("--out", format!("{shown} is not writable: {e}")))?;
    resume::prepare(dir, mode, record)
}

fn target(args: &RunArgs, has_url: bool) -> Result<Target, UsageError> {
    if let Some(path) = &args.urls {
        return url_list(path).map(Target::UrlList);
    }
    let range = match &args.range {
        Some(r) => r.parse::<Span>().map_err(|e| usage("--range", e))?,
        None if has_url => Err(usage("--url", "a URL template needs --range START..END"))?,
        None => BUILTIN_RANGE,
    };
    let plan = BatchPlan::new(range, args.batch).map_err(|e| match e {
        shared::plan::PlanError::ZeroBatch => usage("--batch", "must be at least 1"),
        e => usage("--range", e),
    })?;
    if has_url {
        return Ok(Target::Template(plan));
    }
    let delay_ms = match &args.builtin_delay {
        Some(delay) => delay
            .parse::<Span>()
            .map_err(|e| usage("--builtin-delay", e))?,
        None => Span { start: 0, end: 0 },
    };
    Ok(Target::Builtin { plan, delay_ms })
}

/// Most workers the batches of this run can keep busy: one per batch when their number
/// is known up front (a plan, or a URL list in a file), and at least one. More would
/// start only to stop again: `--workers 1024` for 200 batches starts 200.
fn batch_bound(target: &Target, shard: Shard, filter: &Filter) -> u32 {
    let total = match target {
        Target::Template(plan) | Target::Builtin { plan, .. } => Some(plan.len()),
        Target::UrlList(list) => list.total,
    };
    total.map_or(u32::MAX, |t| {
        filter.count(shard.len_of(t)).clamp(1, u64::from(u32::MAX)) as u32
    })
}

/// Checks that each worker can hold its connections, after raising the limit as far
/// as allowed; the built-in target also holds the server's end of every one of them.
fn check_open_files(target: &Target, workers: u32, concurrency: u32) -> Result<(), UsageError> {
    let limit = open_files::raise();
    let total = match target {
        Target::Template(plan) | Target::Builtin { plan, .. } => Some(plan.len()),
        Target::UrlList(list) => list.total,
    };
    let per_worker = total.map_or(concurrency as u64, |t| {
        t.div_ceil(workers as u64).min(concurrency as u64)
    });
    open_files::check("--concurrency", per_worker, limit)?;
    if matches!(target, Target::Builtin { .. }) {
        open_files::check("--concurrency", per_worker * workers as u64, limit)?;
    }
    Ok(())
}

fn url_template(text: &str) -> Result<Template, UsageError> {
    url_input::normalize_template(text).map_err(|e| usage("--url", format!("the template {e}")))
}

fn name_template(text: &str) -> Result<Template, UsageError> {
    let template = Template::parse(text).map_err(|e| usage("--name", e))?;
    if ![Var::Start, Var::End, Var::Index]
        .iter()
        .any(|v| template.uses(*v))
    {
        Err(usage(
            "--name",
            "must contain {start}, {end} or {index}, or every batch would get the same file",
        ))?;
    }
    if text.contains('/') || text.contains('\\') || text.contains('\0') {
        Err(usage(
            "--name",
            "must be a plain file name inside --out, without / or \\",
        ))?;
    }
    if text.starts_with('.') {
        Err(usage(
            "--name",
            "must not start with `.` (hidden and temporary files do)",
        ))?;
    }
    Ok(template)
}

fn parse_header(text: &str) -> Result<(String, String), UsageError> {
    match text.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        }
        // The value may be a secret: name only the part before it.
        _ => Err(usage("--header", "expected 'Name: value'")),
    }
}

fn url_list(path: &Path) -> Result<UrlList, UsageError> {
    let (reader, total, origin): (Box<dyn BufRead + Send>, _, _) = if path == Path::new("-") {
        (
            Box::new(BufReader::new(io::stdin())),
            None,
            "stdin".to_owned(),
        )
    } else {
        let origin = path.display().to_string();
        let unreadable = |e: io::Error| usage("--urls", format!("cannot read {origin}: {e}"));
        // Every line is checked before anything starts: a bad one is named here.
        let total = UrlLines::new(BufReader::new(File::open(path).map_err(unreadable)?))
            .count()
            .map_err(unreadable)?
            .map_err(|refused| usage("--urls", format!("{origin}: {}", refused.message())))?;
        let file = File::open(path).map_err(unreadable)?;
        (Box::new(BufReader::new(file)), Some(total), origin)
    };
    let mut lines = UrlLines::new(reader);
    let first = match lines.next_item() {
        Err(e) => Err(usage("--urls", format!("cannot read {origin}: {e}")))?,
        Ok(None) => Err(usage("--urls", format!("{origin} holds no URL")))?,
        Ok(Some(Listed::Bad(refused))) => {
            Err(usage("--urls", format!("{origin}: {}", refused.message())))?
        }
        Ok(Some(Listed::Url(url))) => url,
    };
    Ok(UrlList {
        lines,
        first,
        total,
    })
}

/// The plan as `run.json` records it.
fn record(args: &RunArgs, target: &Target, shard: Shard) -> RunRecord {
    let range = |plan: &BatchPlan| (Some(plan.span().to_string()), Some(plan.size()));
    let (kind, source, (range, batch)) = match target {
        // Stored and shown without its password: a resume compares this form, so the
        // password must be given again, and may differ.
        Target::Template(plan) => (
            "template",
            args.url.as_deref().map(|u| redact_password(u).into_owned()),
            range(plan),
        ),
        Target::Builtin { plan, .. } => ("builtin", None, range(plan)),
        // Absolute, so that verify finds the list from anywhere.
        Target::UrlList(_) => (
            "urls",
            args.urls.as_ref().map(|p| {
                std::fs::canonicalize(p)
                    .unwrap_or_else(|_| p.clone())
                    .display()
                    .to_string()
            }),
            (None, None),
        ),
    };
    RunRecord {
        target: kind.to_owned(),
        source,
        range,
        batch,
        name: args.name.clone(),
        shard: (shard != Shard::WHOLE).then(|| shard.to_string()),
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

fn parse_statuses(text: &str) -> Result<Vec<u16>, UsageError> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match s.parse::<u16>() {
            Ok(code) if (100..=599).contains(&code) => Ok(code),
            _ => Err(usage(
                "--retry-on",
                format!("`{s}` is not an HTTP status (100 to 599)"),
            )),
        })
        .collect()
}

/// Requests per second: a positive number, e.g. `200` or `0.5`.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!(
            "`{text}` is not a positive number of requests per second"
        )),
    }
}

/// `65536`, `64KiB`, `64MiB`, `1GiB` (also KB, MB, GB as powers of 1000).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (e.g. 64MiB, 500KB, 1048576)"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "`{text}` has an unknown unit `{other}`: use B, KiB, MiB, GiB, KB, MB or GB"
            ));
        }
    };
    match value.checked_mul(scale) {
        Some(0) => Err(format!("`{text}` must be more than zero")),
        Some(bytes) => Ok(bytes),
        None => Err(format!("`{text}` is too large")),
    }
}

/// `30s`, `500ms`, `2m`, `1h`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. 30s, 500ms, 2m)"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("`{text}` has an unknown unit: use ms, s, m or h")),
    };
    if seconds <= 0.0 || !seconds.is_finite() {
        return Err(format!("`{text}` must be more than zero"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// CPUs this process may run on.
pub fn usable_cpus() -> Vec<usize> {
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        for bad in ["", "0", "-1s", "10x", "s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("500KB").unwrap(), 500_000);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        for bad in ["", "0", "12XB", "MiB", "99999999999999GiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_more_workers_than_batches_are_started() {
        let plan = BatchPlan::new(Span { start: 0, end: 200 }, 10).unwrap();
        let target = Target::Template(plan);
        assert_eq!(batch_bound(&target, Shard::WHOLE, &Filter::All), 20);
        let shard = Shard::new(1, 4).unwrap();
        assert_eq!(batch_bound(&target, shard, &Filter::All), 5);
        let mut done = crate::source::IndexSet::default();
        for i in [1, 5, 9, 13, 17] {
            done.insert(i);
        }
        // Everything done: one worker still starts, and stops at once.
        assert_eq!(batch_bound(&target, shard, &Filter::Skip(done)), 1);
        let stdin = Target::UrlList(UrlList {
            lines: UrlLines::new(Box::new(io::empty())),
            first: "http://h/".into(),
            total: None,
        });
        assert_eq!(batch_bound(&stdin, Shard::WHOLE, &Filter::All), u32::MAX);
    }

    #[test]
    fn retry_statuses_are_checked() {
        assert_eq!(parse_statuses("429, 503").unwrap(), [429, 503]);
        assert!(parse_statuses("429,abc").is_err());
        assert!(parse_statuses("700").is_err());
    }

    #[test]
    fn name_templates_that_collide_or_escape_are_refused() {
        assert!(name_template("batch{start}-{end}.json").is_ok());
        assert!(name_template("page{index}.html").is_ok());
        for bad in [
            "same.json",
            "{limit}.json",
            "../{start}",
            "/tmp/{start}",
            "a/{start}",
            ".{start}",
            "{nope}",
        ] {
            assert!(name_template(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn headers_need_a_name_and_a_colon() {
        assert_eq!(
            parse_header("Authorization: Bearer x").unwrap(),
            ("Authorization".into(), "Bearer x".into())
        );
        let err = parse_header("secret-token").unwrap_err().to_string();
        assert!(!err.contains("secret-token"));
        assert!(parse_header(": v").is_err());
    }
}
