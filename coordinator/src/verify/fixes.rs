//! What fetches the gaps: `--print-command` (one command per shard that has any) and
//! `--print-urls` (the gaps' URLs), written as they are made.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use shared::http_url::redact_password;
use shared::plan::Shard;
use shared::template::{Template, Var};

use super::findings::Findings;
use super::{Run, batch_plan};
use crate::cli::VerifyArgs;
use crate::error::UsageError;
use crate::messages;
use crate::resume::RunRecord;
use crate::url_input::{Listed, UrlLines};

/// `--print-command` and `--print-urls`: written as they are made, since the gaps of a
/// huge plan may be more than memory holds.
pub fn print_fixes(
    args: &VerifyArgs,
    runs: &[Run],
    by_shard: &BTreeMap<u64, &Run>,
    f: &Findings,
) -> anyhow::Result<()> {
    let first = &runs[0];
    let count = f.count;
    let mut out = io::BufWriter::new(io::stdout().lock());
    if args.print_command {
        // A shard with no directory starts afresh, beside the directories given.
        let missing = (0..count).filter(|k| !by_shard.contains_key(k));
        for index in missing {
            let shard = Shard { index, count };
            if f.total.is_some_and(|t| shard.len_of(t) > 0) {
                let dir = sibling_dir(&first.dir, first.shard.index, index);
                let record = RunRecord {
                    shard: Some(shard.to_string()),
                    ..first.record.clone()
                };
                writeln!(out, "{}", command(&Run { dir, record, shard }, ""))?;
            }
        }
        for run in by_shard.values() {
            let tally = &f.tallies[&run.shard.index];
            if tally.absent > 0 || tally.file_bad > 0 || tally.unfinished > 0 {
                writeln!(out, "{}", command(run, "--resume"))?;
            }
            if tally.failed > 0 {
                writeln!(out, "{}", command(run, "--retry-failed"))?;
            }
        }
    }
    if args.print_urls && f.gap_count() > 0 {
        if let Some(method) = &first.record.method {
            messages::warn(format_args!(
                "the run sent {method} requests: its URLs alone do not fetch the gaps (--print-command does)"
            ));
        }
        print_urls(
            &first.record,
            f.gaps().map(|(i, _)| i),
            &f.chain_urls,
            &mut out,
        )?;
    }
    out.flush()?;
    Ok(())
}

/// The command that fetches a shard's gaps: the plan's flags, the shard, the directory.
fn command(run: &Run, mode: &str) -> String {
    let r = &run.record;
    let mut words = vec!["coordinator".to_owned()];
    match (r.target.as_str(), &r.source) {
        ("template", Some(url)) => words.extend(["--url".to_owned(), quote(url)]),
        ("urls", Some(path)) => words.extend(["--urls".to_owned(), quote(path)]),
        _ => {}
    }
    if let (Some(range), Some(batch)) = (&r.range, r.batch) {
        words.extend([
            "--range".to_owned(),
            range.clone(),
            "--batch".to_owned(),
            batch.to_string(),
        ]);
    }
    words.extend(["--name".to_owned(), quote(&r.name)]);
    if let Some(follow) = &r.follow_next {
        words.extend(["--follow-next".to_owned(), quote(follow)]);
    }
    if let Some(max) = r.max_pages {
        words.extend(["--max-pages".to_owned(), max.to_string()]);
    }
    let request = [
        ("-X", &r.method),
        ("--data", &r.data),
        ("--data-json", &r.data_json),
    ];
    for (flag, value) in request {
        if let Some(value) = value {
            words.extend([flag.to_owned(), quote(value)]);
        }
    }
    if let Some(shard) = &r.shard {
        words.extend(["--shard".to_owned(), shard.clone()]);
    }
    words.extend(["--out".to_owned(), quote(&run.dir.display().to_string())]);
    if !mode.is_empty() {
        words.push(mode.to_owned());
    }
    words.join(" ")
}

/// The directory for shard `index` beside `dir` of shard `of`: `out/shard-1` gives
/// `out/shard-3`; any other name gets `-shard-3` appended.
fn sibling_dir(dir: &Path, of: u64, index: u64) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let of = of.to_string();
    let stem = name.strip_suffix(of.as_str()).filter(|s| !s.is_empty());
    let sibling = match stem {
        Some(stem) => format!("{stem}{index}"),
        None => format!("{name}-shard-{index}"),
    };
    dir.with_file_name(sibling)
}

/// Single-quotes `s` for a POSIX shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Writes the URLs of the batches `indices` (in order) to `out`, one per line: for a
/// chain that stands past its first page, the URL it goes on from (`chain_urls`).
fn print_urls(
    record: &RunRecord,
    indices: impl Iterator<Item = u64>,
    chain_urls: &BTreeMap<u64, String>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if let (Some(plan), Some(url)) = (batch_plan(record)?, &record.source) {
        let template = Template::parse_allowing(url, &[Var::Cursor])
            .map_err(|e| UsageError::new("verify", e))?;
        // The template in the record has its password redacted already.
        for i in indices {
            match (chain_urls.get(&i), plan.batch(i)) {
                (Some(url), _) => writeln!(out, "{url}")?,
                (None, Some(batch)) => writeln!(out, "{}", template.render(&batch.values()))?,
                (None, None) => {}
            }
        }
        return Ok(());
    }
    let Some(path) = record
        .source
        .as_deref()
        .filter(|p| *p != "-" && record.target == "urls")
    else {
        anyhow::bail!(
            "--print-urls: the plan's URLs cannot be recovered (built-in target or stdin list)"
        );
    };
    let file = File::open(path).with_context(|| format!("reading {path}"))?;
    let mut lines = UrlLines::new(BufReader::new(file));
    let mut wanted = indices.peekable();
    let mut i = 0;
    loop {
        while let Some(url) = wanted.peek().and_then(|i| chain_urls.get(i)) {
            writeln!(out, "{url}")?;
            wanted.next();
        }
        let (Some(&next), Some(item)) = (wanted.peek(), lines.next_item()?) else {
            break;
        };
        if i == next {
            // A line that is not a URL cannot be fetched again: there is none to print.
            if let Listed::Url(url) = item {
                writeln!(out, "{}", redact_password(&url))?;
            }
            wanted.next();
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_shards_get_a_directory_beside_the_others() {
        assert_eq!(
            sibling_dir(Path::new("out/shard-1"), 1, 3),
            Path::new("out/shard-3")
        );
        assert_eq!(
            sibling_dir(Path::new("/x/run"), 0, 2),
            Path::new("/x/run-shard-2")
        );
    }

    #[test]
    fn a_command_repeats_the_method_and_body_of_the_run() {
        let record = RunRecord {
            target: "template".into(),
            source: Some("http://h/s".into()),
            range: Some("0..100".into()),
            batch: Some(10),
            name: "b{index}".into(),
            shard: Some("1/2".into()),
            method: Some("POST".into()),
            data: None,
            data_json: Some(r#"{"o":{start}}"#.into()),
            follow_next: None,
            max_pages: None,
            insecure: false,
        };
        let run = Run {
            dir: PathBuf::from("out"),
            record,
            shard: Shard { index: 1, count: 2 },
        };
        assert_eq!(
            command(&run, "--resume"),
            r#"coordinator --url 'http://h/s' --range 0..100 --batch 10 --name 'b{index}' -X 'POST' --data-json '{"o":{start}}' --shard 1/2 --out 'out' --resume"#
        );
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("a'b"), r"'a'\''b'");
        assert_eq!(
            quote("http://h/?s={start}&l=1"),
            "'http://h/?s={start}&l=1'"
        );
    }
}
