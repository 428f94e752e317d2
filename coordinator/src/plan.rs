//! From the command line to a checked plan, reading and writing nothing: every flag is
//! validated here, before any process is started or any file is written (ripgrep's
//! low-args → high-args). [`crate::prepare`] then acts on the plan.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shared::chain::FollowNext;
use shared::config::{PerHostLimits, RetryPolicy, WorkerConfig};
use shared::plan::{BatchPlan, Shard, Span};
use shared::template::{Template, Var};

use crate::cli::{RobotsMode, RunArgs};
use crate::error::{UsageError, usage};
use crate::parse::{millis, parse_header, parse_rate, parse_statuses};
use crate::request::RequestText;
use crate::resume::{Mode, RunRecord};
use crate::scheduler;
use crate::url_input;

/// Most worker processes one coordinator starts.
pub const MAX_WORKERS: u32 = 1024;
/// Most requests one worker keeps in flight.
pub const MAX_CONCURRENCY: u32 = 100_000;
/// Items per batch unless `--batch` says otherwise.
pub const DEFAULT_BATCH: u64 = 10;
/// File names unless `--name` says otherwise.
pub const DEFAULT_NAME: &str = "batch{start}-{end}.json";
/// File names of `--follow-next` runs unless `--name` says otherwise: chain, page.
pub const DEFAULT_CHAIN_NAME: &str = "{index}-{page}.json";
/// Range of the default job on the built-in target.
const BUILTIN_RANGE: Span = Span {
    start: 0,
    end: 1000,
};
/// Bodies on stdout travel inside frames: they must fit one, with room for the rest.
const MAX_INLINE_BODY: u64 = (shared::frame::MAX_FRAME_LEN - 64 * 1024) as u64;

/// What the process is given besides its command line: read once, by the caller, so
/// that a plan can be made without touching the system.
pub struct Env<'a> {
    /// The CPUs this process may run on.
    pub cpus: Vec<usize>,
    /// Environment variables (for `--shard auto`).
    pub var: &'a dyn Fn(&str) -> Option<String>,
    /// Reads a whole file (for `--data @FILE`).
    pub read: &'a dyn Fn(&Path) -> io::Result<Vec<u8>>,
}

/// Where the URLs come from, as the command line names it.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetSpec {
    /// A URL template over a batch plan.
    Template(BatchPlan),
    /// The built-in tickers API over a batch plan.
    Builtin {
        /// The batches.
        plan: BatchPlan,
        /// Response delay of the server, in ms.
        delay_ms: Span,
    },
    /// One URL per line of this file (`-`: stdin).
    UrlList(PathBuf),
}

/// Where the bodies go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Batch files and manifest.jsonl in this directory.
    Dir(PathBuf),
    /// One JSON line per batch on stdout (`--out -`).
    Stdout,
}

/// Time limits of the run as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// Time in-flight batches get after SIGINT/SIGTERM.
    pub grace: Duration,
    /// Whole-run time limit.
    pub deadline: Option<Duration>,
    /// Silence after which a worker holding batches is restarted.
    pub stall_timeout: Duration,
    /// Worker restarts allowed.
    pub max_restarts: u32,
}

/// A checked scrape, before anything is read or written.
#[derive(Debug)]
pub struct Plan {
    /// Worker processes asked for (fewer start when there are fewer batches).
    pub workers: u32,
    /// The CPUs this process may run on.
    pub cpus: Vec<usize>,
    /// What to fetch.
    pub target: TargetSpec,
    /// Where the bodies go.
    pub output: Output,
    /// How an earlier run in the output directory is treated.
    pub mode: Mode,
    /// Settings every worker gets (`rate` is set once the number of workers is known).
    pub worker: WorkerConfig,
    /// `--rate`, all workers together.
    pub rate: Option<f64>,
    /// The slice of the plan this run owns.
    pub shard: Shard,
    /// Time limits of the run as a whole.
    pub limits: RunLimits,
    /// No progress and no summary.
    pub quiet: bool,
    /// The summary as one JSON object.
    pub json: bool,
    /// `--url` as given, for the run's record.
    pub url_text: Option<String>,
    /// `--name` as given, for the run's record.
    pub name_text: String,
    /// The method and body, for the run's record.
    pub request: RequestText,
    /// `--max-pages`: pages one chain fetches at most (with `--follow-next`, which is
    /// in `worker`).
    pub max_pages: Option<u64>,
    /// Whether robots.txt is obeyed.
    pub robots: RobotsMode,
}

impl Plan {
    /// Checks every flag of a scrape. `earlier` is the plan recorded in `--out`'s
    /// `run.json`, read by the caller for `--resume`, `--retry-failed` and `--refresh`:
    /// when the command line names no plan, that one is taken.
    pub fn from_args(
        args: &RunArgs,
        env: &Env<'_>,
        earlier: Option<&RunRecord>,
    ) -> Result<Plan, UsageError> {
        let request = request_text(args, env, earlier)?;
        let args = &recorded_plan(args, earlier)?;
        let workers = args.workers.unwrap_or(env.cpus.len().max(1) as u32);
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
        let mode = match (args.overwrite, args.resume, args.retry_failed, args.refresh) {
            (true, ..) => Mode::Overwrite,
            (_, true, ..) => Mode::Resume,
            (_, _, true, _) => Mode::RetryFailed,
            (.., true) => Mode::Refresh,
            _ => Mode::Fresh,
        };
        if output == Output::Stdout && mode != Mode::Fresh {
            Err(usage(
                "--out -",
                "writes no manifest, so it cannot be combined with --resume, --retry-failed, --refresh or --overwrite",
            ))?;
        }
        let (mut worker, limits) = worker_config(args, &request, env.var)?;
        let rate = match &args.rate {
            Some(text) => Some(parse_rate(text).map_err(|e| usage("--rate", e))?),
            None => None,
        };
        if output == Output::Stdout {
            worker.out_dir = None;
            worker.max_body = worker.max_body.min(MAX_INLINE_BODY);
        }
        let target = target(args, worker.url.is_some())?;
        let max_pages = match (args.max_pages, &worker.follow_next) {
            (Some(_), None) => Err(usage("--max-pages", "goes with --follow-next"))?,
            (Some(0), _) => Err(usage("--max-pages", "must be at least 1"))?,
            (max, _) => max,
        };
        if worker.follow_next.is_some() && matches!(target, TargetSpec::Builtin { .. }) {
            Err(usage(
                "--follow-next",
                "needs --url or --urls: the built-in tickers API names no next page (its /api/cursor/ does)",
            ))?;
        }
        let shard = match args.shard.as_deref() {
            None => Shard::WHOLE,
            Some("auto") => {
                scheduler::shard_from_env(env.var).map_err(|e| usage("--shard auto", e))?
            }
            Some(text) => text.parse().map_err(|e| usage("--shard", e))?,
        };
        let name_text = args
            .name
            .clone()
            .unwrap_or_else(|| default_name(&worker.follow_next).to_owned());
        Ok(Plan {
            workers,
            cpus: env.cpus.clone(),
            target,
            output,
            mode,
            worker,
            rate,
            shard,
            limits,
            quiet: args.quiet,
            json: args.json,
            url_text: args.url.clone(),
            name_text,
            request,
            max_pages,
            robots: args.robots,
        })
    }
}

/// The file names of a run whose `--name` is not given.
fn default_name(follow: &Option<FollowNext>) -> &'static str {
    match follow {
        Some(_) => DEFAULT_CHAIN_NAME,
        None => DEFAULT_NAME,
    }
}

/// The method and body of the run: as the flags give them, or, when a `--resume`,
/// `--retry-failed` or `--refresh` gives none of `-X`, `-d` and `--data-json`, as
/// `earlier` recorded them. Given ones are checked against the record when the
/// directory is prepared.
fn request_text(
    args: &RunArgs,
    env: &Env<'_>,
    earlier: Option<&RunRecord>,
) -> Result<RequestText, UsageError> {
    if let Some(given) = RequestText::from_args(&args.request, env.read)? {
        return Ok(given);
    }
    let continuing = args.resume || args.retry_failed || args.refresh;
    Ok(match earlier.filter(|_| continuing) {
        Some(record) => record.request(),
        None => RequestText::default(),
    })
}

/// `args`, with the plan of `earlier` filled in when `--resume`, `--retry-failed` or
/// `--refresh` names none of its own. A plan the command line does name is checked
/// against the record when the output directory is prepared.
fn recorded_plan(args: &RunArgs, earlier: Option<&RunRecord>) -> Result<RunArgs, UsageError> {
    let mut args = args.clone();
    let continuing = args.resume || args.retry_failed || args.refresh;
    let named = args.url.is_some()
        || args.urls.is_some()
        || args.range.is_some()
        || args.batch.is_some()
        || args.name.is_some()
        || args.shard.is_some()
        || args.follow_next.is_some()
        || args.max_pages.is_some();
    let Some(record) = earlier.filter(|_| continuing && !named) else {
        return Ok(args);
    };
    match record.target.as_str() {
        "template" => {
            let url = record.source.clone().unwrap_or_default();
            if url.contains("***") {
                let flag = match (args.resume, args.refresh) {
                    (true, _) => "--resume",
                    (_, true) => "--refresh",
                    _ => "--retry-failed",
                };
                return Err(usage(
                    flag,
                    "run.json holds the URL template without its password: give --url again",
                ));
            }
            args.url = Some(url);
        }
        "urls" => args.urls = record.source.clone().map(PathBuf::from),
        _ => {}
    }
    args.range = record.range.clone();
    args.batch = record.batch;
    args.name = Some(record.name.clone());
    args.shard = record.shard.clone();
    args.follow_next = record.follow_next.clone();
    args.max_pages = record.max_pages;
    Ok(args)
}

/// What every worker gets, and the run's time limits, from the flags.
fn worker_config(
    args: &RunArgs,
    request: &RequestText,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<(WorkerConfig, RunLimits), UsageError> {
    let (timeout, retry_max_time) = (args.timeout, args.retry_max_time);
    let retry = RetryPolicy {
        retries: args.retries,
        statuses: parse_statuses(&args.retry_on)?,
        base_ms: millis(args.backoff),
        max_ms: millis(args.backoff_max),
        retry_after_max_ms: millis(args.retry_after_max),
        max_time_ms: millis(retry_max_time),
        non_idempotent: args.retry_non_idempotent,
    };
    let limits = RunLimits {
        grace: args.grace,
        deadline: args.deadline,
        stall_timeout: args
            .stall_timeout
            .unwrap_or(retry_max_time + timeout + Duration::from_secs(30)),
        max_restarts: args.max_restarts,
    };
    let follow_next = match &args.follow_next {
        Some(text) => Some(
            text.parse::<FollowNext>()
                .map_err(|e| usage("--follow-next", e))?,
        ),
        None => None,
    };
    let url = match &args.url {
        Some(url) => Some(url_template(url, &follow_next)?),
        None => None,
    };
    let mut headers = args
        .headers
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    let request = request.spec(&mut headers)?;
    let worker = WorkerConfig {
        url,
        name: name_template(
            args.name.as_deref().unwrap_or(default_name(&follow_next)),
            follow_next.is_some(),
        )?,
        out_dir: Some(args.out.to_string_lossy().into_owned()),
        concurrency: args.concurrency,
        headers,
        request,
        user_agent: args.user_agent.clone(),
        timeout_ms: millis(timeout),
        connect_timeout_ms: millis(args.connect_timeout),
        max_body: args.max_body,
        body_budget: args.body_budget,
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
        tls: crate::trust::options(&args.tls),
        proxy: crate::proxy::settings(&args.proxy, var)?,
        per_host: PerHostLimits {
            rate: match &args.per_host_rate {
                Some(text) => Some(parse_rate(text).map_err(|e| usage("--per-host-rate", e))?),
                None => None,
            },
            concurrency: match args.per_host_concurrency {
                Some(0) => return Err(usage("--per-host-concurrency", "must be at least 1")),
                n => n,
            },
        },
        adaptive: args.adaptive == "on",
        follow_next,
    };
    // Building one client here catches headers HTTP does not allow.
    worker::Fetcher::new(&worker).map_err(|e| usage(e.flag(), e))?;
    Ok((worker, limits))
}

fn target(args: &RunArgs, has_url: bool) -> Result<TargetSpec, UsageError> {
    if let Some(path) = &args.urls {
        return Ok(TargetSpec::UrlList(path.clone()));
    }
    let range = match &args.range {
        Some(r) => r.parse::<Span>().map_err(|e| usage("--range", e))?,
        None if has_url => Err(usage("--url", "a URL template needs --range START..END"))?,
        None => BUILTIN_RANGE,
    };
    let plan = BatchPlan::new(range, args.batch.unwrap_or(DEFAULT_BATCH)).map_err(|e| match e {
        shared::plan::PlanError::ZeroBatch => usage("--batch", "must be at least 1"),
        e => usage("--range", e),
    })?;
    if has_url {
        return Ok(TargetSpec::Template(plan));
    }
    let delay_ms = match &args.builtin_delay {
        Some(delay) => delay
            .parse::<Span>()
            .map_err(|e| usage("--builtin-delay", e))?,
        None => Span { start: 0, end: 0 },
    };
    Ok(TargetSpec::Builtin { plan, delay_ms })
}

/// The `--url` template; `{cursor}` is a placeholder when pages name their next by a
/// JSON value (which may be a bare cursor).
fn url_template(text: &str, follow: &Option<FollowNext>) -> Result<Template, UsageError> {
    if text.contains("{page}") {
        Err(usage(
            "--url",
            "`{page}` goes in --name: a chain's later pages are the URLs its pages name",
        ))?;
    }
    let extra: &[Var] = match follow {
        Some(FollowNext::Json(_)) => &[Var::Cursor],
        _ if text.contains("{cursor}") => Err(usage(
            "--url",
            "`{cursor}` takes the cursor a page names: it needs --follow-next json:POINTER",
        ))?,
        _ => &[],
    };
    url_input::normalize_template(text, extra)
        .map_err(|e| usage("--url", format!("the template {e}")))
}

/// The `--name` template; `{page}` is a placeholder in a run that follows chains, and
/// there it must be named, or a chain's pages would share a file.
fn name_template(text: &str, chains: bool) -> Result<Template, UsageError> {
    let extra: &[Var] = if chains { &[Var::Page] } else { &[] };
    if !chains && text.contains("{page}") {
        Err(usage(
            "--name",
            "`{page}` numbers the pages of a chain: it needs --follow-next",
        ))?;
    }
    let template = Template::parse_allowing(text, extra).map_err(|e| usage("--name", e))?;
    if ![Var::Start, Var::End, Var::Index]
        .iter()
        .any(|v| template.uses(*v))
    {
        Err(usage(
            "--name",
            "must contain {start}, {end} or {index}, or every batch would get the same file",
        ))?;
    }
    if chains && !template.uses(Var::Page) {
        Err(usage(
            "--name",
            "must contain {page} with --follow-next, or the pages of a chain would share a file",
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn plan_with(args: &[&str], vars: &[(&str, &str)]) -> Result<Plan, UsageError> {
        let argv = std::iter::once("coordinator").chain(args.iter().copied());
        let cli = crate::cli::Cli::try_parse_from(argv).expect("arguments clap accepts");
        let lookup = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        };
        let env = Env {
            cpus: vec![0, 1],
            var: &lookup,
            read: &|_| Err(io::ErrorKind::NotFound.into()),
        };
        Plan::from_args(&cli.run, &env, None)
    }

    fn plan(args: &[&str]) -> Result<Plan, UsageError> {
        plan_with(args, &[])
    }

    #[test]
    fn a_plan_is_made_without_touching_the_filesystem() {
        // Neither the output directory nor the URL list exists: a plan does not look.
        let p = plan(&["--urls", "/no/such/list", "-o", "/no/such/dir", "--resume"]).unwrap();
        assert_eq!(p.target, TargetSpec::UrlList("/no/such/list".into()));
        assert_eq!(p.output, Output::Dir("/no/such/dir".into()));
        assert_eq!((p.mode, p.workers), (Mode::Resume, 2));
        let k8s = [("JOB_COMPLETION_INDEX", "3"), ("JOB_COMPLETIONS", "4")];
        let p = plan_with(&["--range", "0..100", "--shard", "auto", "-w", "8"], &k8s).unwrap();
        assert!(matches!(p.target, TargetSpec::Builtin { .. }));
        assert_eq!((p.workers, p.shard.to_string()), (8, "3/4".to_owned()));
        let half = plan_with(&["--shard", "auto"], &k8s[..1]).unwrap_err();
        assert!(half.to_string().contains("JOB_COMPLETIONS"), "{half}");
    }

    #[test]
    fn a_resume_that_names_no_plan_takes_the_recorded_one() {
        let record = RunRecord {
            target: "template".into(),
            source: Some("http://h/x?s={start}".into()),
            range: Some("0..100".into()),
            batch: Some(5),
            name: "p{index}".into(),
            shard: Some("1/4".into()),
            insecure: false,
            method: Some("POST".into()),
            data: None,
            data_json: Some(r#"{"o":{start}}"#.into()),
            follow_next: None,
            max_pages: None,
        };
        let argv = ["coordinator", "--resume", "-o", "/no/such/dir"];
        let cli = crate::cli::Cli::try_parse_from(argv).expect("arguments clap accepts");
        let env = Env {
            cpus: vec![0],
            var: &|_| None,
            read: &|_| Err(io::ErrorKind::NotFound.into()),
        };
        let p = Plan::from_args(&cli.run, &env, Some(&record)).unwrap();
        assert!(matches!(p.target, TargetSpec::Template(plan) if plan.size() == 5));
        assert_eq!(
            (p.shard.to_string(), p.name_text.as_str()),
            ("1/4".to_owned(), "p{index}")
        );
        assert_eq!(p.url_text.as_deref(), Some("http://h/x?s={start}"));
        // The method and body too, with the content type their flag gives.
        assert_eq!(p.worker.request.method, "POST");
        let body = p.worker.request.body.as_ref().map(|b| b.as_str());
        assert_eq!(body, Some(r#"{"o":{start}}"#));
        assert_eq!(
            p.worker.request.content_type.as_deref(),
            Some("application/json")
        );
        // A password was never recorded: it must be given again.
        let hidden = RunRecord {
            source: Some("http://u:***@h/x?s={start}".into()),
            ..record.clone()
        };
        let err = Plan::from_args(&cli.run, &env, Some(&hidden)).unwrap_err();
        assert!(err.to_string().contains("give --url again"), "{err}");
        // A plan on the command line is taken as given (and checked against the record
        // when the directory is prepared).
        let argv = [
            "coordinator",
            "--resume",
            "--range",
            "0..7",
            "-o",
            "/no/such/dir",
        ];
        let cli = crate::cli::Cli::try_parse_from(argv).expect("arguments clap accepts");
        let p = Plan::from_args(&cli.run, &env, Some(&record)).unwrap();
        assert!(matches!(p.target, TargetSpec::Builtin { .. }));
    }

    #[test]
    fn bad_values_are_usage_errors_naming_their_flag() {
        for (args, flag) in [
            (&["-w", "0"][..], "--workers"),
            (&["-c", "0"][..], "--concurrency"),
            (&["-o", "-", "--resume"][..], "--out -"),
            (&["--rate", "0"][..], "--rate"),
            (&["--url", "http://h/{start}"][..], "--url"),
            (&["--name", "same.json"][..], "--name"),
            (&["-H", "X-Bad Name: v"][..], "--header"),
            (&["-X", "GET POST"][..], "--request"),
            (&["-d", "@/no/such/body"][..], "--data"),
            (&["--data-json", "{\"a\":{nope}}"][..], "--data-json"),
        ] {
            let err = plan(args).unwrap_err().to_string();
            assert!(err.starts_with(flag), "{args:?}: {err}");
        }
    }

    #[test]
    fn name_templates_that_collide_or_escape_are_refused() {
        assert!(name_template("batch{start}-{end}.json", false).is_ok());
        assert!(name_template("page{index}.html", false).is_ok());
        assert!(name_template("{index}-{page}.json", true).is_ok());
        assert!(name_template("{index}-{page}.json", false).is_err());
        assert!(name_template("{index}.json", true).is_err());
        assert!(name_template("{page}.json", true).is_err());
        for bad in [
            "same.json",
            "{limit}.json",
            "../{start}",
            "/tmp/{start}",
            "a/{start}",
            ".{start}",
            "{nope}",
        ] {
            assert!(name_template(bad, false).is_err(), "{bad}");
        }
    }
}
