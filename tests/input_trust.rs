//! End-to-end tests of what the coordinator takes in and leaves behind, run as a
//! hostile user would: huge batch indices, symlinks in --out, URL lines with spaces,
//! control characters or no end, passwords in URLs, bad manifest lines and signals.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Output, Stdio};

use common::*;

/// Runs the binary with its address space capped at `limit_kib`, so that an allocation
/// sized by hostile input fails at once instead of relying on the machine's overcommit.
fn run_capped(limit_kib: u64, args: &[&str], cwd: &Path) -> Output {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {limit_kib} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_coordinator"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("running coordinator under ulimit")
}

/// A loopback port that nothing listens on: connections to it are refused at once.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Names in `dir` that are temp files of the tool.
fn temp_files(dir: &Path) -> Vec<String> {
    file_names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".part"))
        .collect()
}

#[test]
fn a_shard_near_the_top_of_u64_resumes_and_verifies_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}/?start={{start}}", closed_port());
    let args = [
        "--url",
        &url,
        "--range",
        "0..18446744073709551615",
        "--batch",
        "1",
        "--shard",
        "1099511627775/1099511627776",
        "--workers",
        "1",
        "--retries",
        "0",
        "--deadline",
        "1s",
        "--grace",
        "1s",
        "--quiet",
        "--out",
        "out",
    ];
    let first = run_capped(4 << 20, &args, dir.path());
    assert_exit(&first, 4);
    let out = dir.path().join("out");
    let recorded = manifest_lines(&out);
    assert!(recorded > 0, "the first run recorded no batch");

    let mut resume = args.to_vec();
    resume.push("--resume");
    let again = run_capped(4 << 20, &resume, dir.path());
    assert_exit(&again, 4);
    assert!(manifest_lines(&out) > recorded, "the resume went on");
    assert_eq!(temp_files(&out), Vec::<String>::new());

    let verify = run_capped(4 << 20, &["verify", "out"], dir.path());
    let report = text_of(&verify.stderr);
    assert_exit(&verify, 1);
    assert!(report.contains("gaps: 18446744073709551"), "{report}");
    assert!(report.contains("in shards with no directory"), "{report}");
    assert!(report.contains("incomplete"), "{report}");
}

#[test]
fn an_invalid_utf8_manifest_line_costs_its_batch_only_on_verify_and_resume() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let url = server.tickers_template();
    let first = scrape(&url, "0..50", &["--workers", "1"], dir.path());
    assert_exit(&first, 0);
    let out = dir.path().join("out");
    let path = out.join("manifest.jsonl");
    let text = fs::read(&path).unwrap();
    let mut lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
    assert_eq!(lines.len(), 5);
    lines[1] = b"{\"index\":\xff\xfe not UTF-8}\n";
    fs::write(&path, lines.concat()).unwrap();

    let verify = run(&["verify", "out"], dir.path());
    let report = text_of(&verify.stderr);
    assert_exit(&verify, 1);
    assert!(report.contains("ok: 4 batches"), "{report}");
    assert_eq!(report.matches("skipped 1 unreadable line").count(), 1, "{report}");

    let resume = scrape(&url, "0..50", &["--workers", "1", "--resume"], dir.path());
    let stderr = text_of(&resume.stderr);
    assert_exit(&resume, 0);
    assert!(stderr.contains("done: 1 batches ok"), "{stderr}");
    assert_eq!(stderr.matches("skipped 1 unreadable line").count(), 1, "{stderr}");
    assert_complete_run(&out, 50);
}
