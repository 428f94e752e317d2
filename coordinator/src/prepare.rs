//! Acting on a checked [`Plan`]: every side effect of starting a scrape, in one place
//! and in this order: the URL list is opened and checked, the open-file limit raised,
//! then the output directory created and squared with an earlier run there.

use std::fs;
use std::path::Path;

use shared::config::WorkerConfig;
use shared::http_url::redact_password;
use shared::plan::{BatchPlan, Shard, Span};

use crate::chain::ChainPlan;
use crate::cli::RobotsMode;
use crate::error::{UsageError, usage};
use crate::open_files;
use crate::plan::{Output, Plan, RunLimits, TargetSpec};
use crate::refresh;
use crate::resume::{self, Mode, RunRecord};
use crate::source::Filter;
use crate::url_list::{UrlList, url_list};

/// Where the URLs come from, ready to be read.
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

/// A prepared run: what [`crate::dispatch`] needs.
pub struct Settings {
    /// Worker processes to start.
    pub workers: u32,
    /// CPUs to pin workers to, one each; empty when there are fewer CPUs than workers.
    pub cpus: Vec<usize>,
    /// What to fetch.
    pub target: Target,
    /// Where the bodies go (the directory exists and is writable).
    pub output: Output,
    /// Settings every worker gets; `url` is filled in once the target is known.
    pub worker: WorkerConfig,
    /// The slice of the plan this run owns.
    pub shard: Shard,
    /// Which jobs of the slice this run fetches (all, or what a resume leaves).
    pub filter: Filter,
    /// Time limits of the run as a whole.
    pub limits: RunLimits,
    /// No progress and no summary.
    pub quiet: bool,
    /// The summary as one JSON object (on stdout, or stderr with `--out -`).
    pub json: bool,
    /// Under `--follow-next`: `--max-pages`, and the chains an earlier run left open.
    pub chains: Option<ChainPlan>,
    /// Whether robots.txt is obeyed.
    pub robots: RobotsMode,
}

/// Prepares `plan`: the first place a scrape reads or writes anything.
pub fn prepare(plan: Plan) -> Result<Settings, UsageError> {
    let Plan {
        workers,
        cpus,
        target,
        output,
        mode,
        mut worker,
        rate,
        shard,
        limits,
        quiet,
        json,
        url_text,
        name_text,
        request,
        max_pages,
        robots,
    } = plan;
    crate::trust::check(&worker.tls)?;
    let mut record = record(&target, url_text.as_deref(), &name_text, shard).with_request(&request);
    record.insecure = worker.tls.insecure;
    record.follow_next = worker.follow_next.as_ref().map(ToString::to_string);
    record.max_pages = max_pages;
    let target = match target {
        TargetSpec::Template(plan) => Target::Template(plan),
        TargetSpec::Builtin { plan, delay_ms } => Target::Builtin { plan, delay_ms },
        TargetSpec::UrlList(path) => Target::UrlList(url_list(&path)?),
    };
    let workers = workers.min(batch_bound(&target, shard, &Filter::All));
    // Under HTTP/2 a worker's requests share a few connections per host.
    if !worker.http2 {
        check_open_files(&target, workers, worker.concurrency)?;
    }
    let (filter, open) = match &output {
        Output::Dir(dir) => {
            let slice = refresh::Slice {
                shard,
                total: plan_total(&target),
            };
            prepare_dir(dir, mode, &record, worker.url.as_ref(), slice)?
        }
        Output::Stdout => (Filter::All, Vec::new()),
    };
    // A resume may leave fewer batches than the plan has (and chains to go on).
    let bound = batch_bound(&target, shard, &filter).saturating_add(open.len() as u32);
    let workers = workers.min(bound);
    let chains = worker
        .follow_next
        .is_some()
        .then(|| ChainPlan { max_pages, open });
    // Each worker keeps to its share, so that all together keep to the rate.
    worker.rate = rate.map(|rate| rate / workers as f64);
    let cpus = if cpus.len() >= workers as usize {
        cpus
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
        quiet,
        json,
        chains,
        robots,
    })
}

/// Creates the output directory, checks it can be written and squares it with an
/// earlier run there (whose batches are `slice`). This is the first thing a run writes.
fn prepare_dir(
    dir: &Path,
    mode: Mode,
    record: &RunRecord,
    template: Option<&shared::template::Template>,
    slice: refresh::Slice,
) -> Result<(Filter, Vec<crate::chain::Open>), UsageError> {
    let shown = dir.display();
    if matches!(mode, Mode::Resume | Mode::RetryFailed | Mode::Refresh) && !dir.is_dir() {
        Err(usage(
            mode.flag(),
            format!("{shown} holds no run to continue"),
        ))?;
    }
    if dir.exists() && !dir.is_dir() {
        Err(usage(
            "--out",
            format!("{shown} exists and is not a directory"),
        ))?;
    }
    fs::create_dir_all(dir).map_err(|e| usage("--out", format!("cannot create {shown}: {e}")))?;
    let probe = dir.join(".coordinator-write-test");
    outdir::create_fresh(&probe)
        .and_then(|_| fs::remove_file(&probe))
        .map_err(|e| usage("--out", format!("{shown} is not writable: {e}")))?;
    resume::prepare(dir, mode, record, template, slice)
}

/// Batches in the whole plan, when known up front.
fn plan_total(target: &Target) -> Option<u64> {
    match target {
        Target::Template(plan) | Target::Builtin { plan, .. } => Some(plan.len()),
        Target::UrlList(list) => list.total,
    }
}

/// Most workers the batches of this run can keep busy: one per batch when their number
/// is known up front (a plan, or a URL list in a file), and at least one. More would
/// start only to stop again: `--workers 1024` for 200 batches starts 200.
fn batch_bound(target: &Target, shard: Shard, filter: &Filter) -> u32 {
    plan_total(target).map_or(u32::MAX, |t| {
        filter.count(shard.len_of(t)).clamp(1, u64::from(u32::MAX)) as u32
    })
}

/// Checks that each worker can hold its connections, after raising the limit as far
/// as allowed; the built-in target also holds the server's end of every one of them.
fn check_open_files(target: &Target, workers: u32, concurrency: u32) -> Result<(), UsageError> {
    let limit = open_files::raise();
    let per_worker = plan_total(target).map_or(concurrency as u64, |t| {
        t.div_ceil(workers as u64).min(concurrency as u64)
    });
    open_files::check("--concurrency", per_worker, limit)?;
    if matches!(target, Target::Builtin { .. }) {
        open_files::check("--concurrency", per_worker * workers as u64, limit)?;
    }
    Ok(())
}

/// The plan as `run.json` records it.
fn record(target: &TargetSpec, url: Option<&str>, name: &str, shard: Shard) -> RunRecord {
    let range = |plan: &BatchPlan| (Some(plan.span().to_string()), Some(plan.size()));
    let (kind, source, (range, batch)) = match target {
        // Stored and shown without its password: a resume compares this form, so the
        // password must be given again, and may differ.
        TargetSpec::Template(plan) => (
            "template",
            url.map(|u| redact_password(u).into_owned()),
            range(plan),
        ),
        TargetSpec::Builtin { plan, .. } => ("builtin", None, range(plan)),
        // Absolute, so that verify finds the list from anywhere.
        TargetSpec::UrlList(path) => (
            "urls",
            Some(
                fs::canonicalize(path)
                    .unwrap_or_else(|_| path.clone())
                    .display()
                    .to_string(),
            ),
            (None, None),
        ),
    };
    RunRecord {
        target: kind.to_owned(),
        source,
        range,
        batch,
        name: name.to_owned(),
        shard: (shard != Shard::WHOLE).then(|| shard.to_string()),
        insecure: false,
        method: None,
        data: None,
        data_json: None,
        follow_next: None,
        max_pages: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::url_input::UrlLines;
    use std::io;

    #[test]
    fn no_more_workers_than_batches_are_started() {
        let plan = BatchPlan::new(Span { start: 0, end: 200 }, 10).unwrap();
        let target = Target::Template(plan);
        assert_eq!(batch_bound(&target, Shard::WHOLE, &Filter::All), 20);
        let shard = Shard::new(1, 4).unwrap();
        assert_eq!(batch_bound(&target, shard, &Filter::All), 5);
        let mut done = crate::index_set::IndexSet::default();
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
}
