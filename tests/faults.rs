//! End-to-end fault tests: killed workers, signals to the coordinator, resume.

mod common;

use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(120);

/// A slow-enough run (0..20000 in batches of 10, 8 requests in flight in all) that a
/// test can act while it is under way.
fn start_run(server: &Server, dir: &std::path::Path, extra: &[&str]) -> Child {
    let url = server.tickers_template();
    coordinator()
        .args([
            "--workers",
            "2",
            "--concurrency",
            "4",
            "--url",
            &url,
            "--range",
            "0..20000",
            "--out",
            "out",
        ])
        .args(extra)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting coordinator")
}

fn wait_for_progress(dir: &std::path::Path, lines: usize) {
    let out = dir.join("out");
    assert!(
        eventually(LIMIT, || manifest_lines(&out) >= lines),
        "the run made no progress"
    );
}

fn finish(child: Child) -> (Option<i32>, String) {
    let output = child.wait_with_output().expect("waiting for coordinator");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_worker_killed_mid_run_is_replaced_and_no_batch_is_lost() {
    let server = Server::start(&["--delay", "5..15"]);
    let dir = tempfile::tempdir().unwrap();
    let child = start_run(&server, dir.path(), &[]);
    wait_for_progress(dir.path(), 200);
    let workers = children_of(child.id());
    assert_eq!(workers.len(), 2, "two worker processes");
    send_signal(workers[0], "KILL");

    let (code, stderr) = finish(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("restarting it"), "{stderr}");
    assert_complete_run(&dir.path().join("out"), 20_000);
    assert!(!process_alive(workers[0]) && !process_alive(workers[1]));
}

#[test]
fn sigint_stops_cleanly_and_resume_completes_the_run() {
    let server = Server::start(&["--delay", "5..15"]);
    let dir = tempfile::tempdir().unwrap();
    let child = start_run(&server, dir.path(), &[]);
    wait_for_progress(dir.path(), 200);
    let workers = children_of(child.id());
    send_signal(child.id(), "INT");
    let (code, stderr) = finish(child);
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("--resume"), "{stderr}");
    assert!(
        workers.iter().all(|&p| !process_alive(p)),
        "no worker outlives the coordinator"
    );
    let out = dir.path().join("out");
    let stopped_at = manifest_lines(&out);
    assert!(
        stopped_at < 2000,
        "the run stopped early ({stopped_at} batches)"
    );
    assert!(
        file_names(&out).iter().all(|n| !n.ends_with(".part")),
        "no temp files"
    );

    let resumed = start_run(&server, dir.path(), &["--resume"]);
    let (code, stderr) = finish(resumed);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("{} batches ok", 2000 - stopped_at)),
        "{stderr}"
    );
    assert_complete_run(&out, 20_000);
}

#[test]
fn sigterm_exits_143_and_a_killed_coordinator_resumes_too() {
    let server = Server::start(&["--delay", "5..15"]);
    let dir = tempfile::tempdir().unwrap();
    let child = start_run(&server, dir.path(), &[]);
    wait_for_progress(dir.path(), 100);
    send_signal(child.id(), "TERM");
    let (code, stderr) = finish(child);
    assert_eq!(code, Some(143), "{stderr}");

    let again = start_run(&server, dir.path(), &["--resume"]);
    let first = manifest_lines(&dir.path().join("out"));
    assert!(eventually(LIMIT, || manifest_lines(
        &dir.path().join("out")
    ) >= first + 100));
    let workers = children_of(again.id());
    send_signal(again.id(), "KILL");
    let (code, _) = finish(again);
    assert_eq!(code, None, "killed by a signal");
    assert!(
        eventually(Duration::from_secs(10), || workers
            .iter()
            .all(|&p| !process_alive(p))),
        "workers die with their coordinator"
    );

    let last = start_run(&server, dir.path(), &["--resume"]);
    let (code, stderr) = finish(last);
    assert_eq!(code, Some(0), "{stderr}");
    assert_complete_run(&dir.path().join("out"), 20_000);
}

#[test]
fn resume_refuses_another_plan_and_an_empty_directory() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let url = server.tickers_template();
    let first = run(
        &[
            "--url", &url, "--range", "0..100", "--out", "out", "--quiet",
        ],
        dir.path(),
    );
    assert_eq!(first.status.code(), Some(0));
    let other = run(
        &[
            "--url", &url, "--range", "0..200", "--out", "out", "--resume",
        ],
        dir.path(),
    );
    assert_eq!(other.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&other.stderr).contains("another plan"));
    let same = run(
        &[
            "--url", &url, "--range", "0..100", "--out", "out", "--resume",
        ],
        dir.path(),
    );
    assert_eq!(same.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&same.stderr).contains("done: 0 batches ok"));
    let nothing = run(
        &[
            "--url", &url, "--range", "0..100", "--out", "fresh", "--resume",
        ],
        dir.path(),
    );
    assert_eq!(nothing.status.code(), Some(2));
    assert!(!dir.path().join("fresh").join("run.json").exists());
}
