//! End-to-end fault tests: killed workers, signals to the coordinator, resume.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

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

#[test]
fn retries_get_every_batch_through_a_hostile_server() {
    retries_get_every_batch_through(hostile_server(), &[]);
}

#[test]
fn without_retries_failures_are_in_the_manifest_and_retry_failed_fetches_only_those() {
    let server = hostile_server();
    let dir = tempfile::tempdir().unwrap();
    let url = server.tickers_template();
    let first = scrape(&url, "0..2000", &["--retries", "0"], dir.path());
    assert_exit(&first, 1);
    let out = dir.path().join("out");
    let lines = manifest(&out);
    assert_eq!(lines.len(), 200);
    let failed: Vec<_> = lines.iter().filter(|l| l["error"].is_string()).collect();
    assert!(failed.len() > 20, "only {} failures", failed.len());
    assert!(
        failed
            .iter()
            .all(|l| l["file"].is_null() && l["attempts"] == 1)
    );
    assert!(failed.iter().any(|l| l["status"] == 500));
    for l in &failed {
        let name = format!("batch{}-{}.json", l["start"], l["end"]);
        assert!(!out.join(name).exists(), "a failed batch has no file");
    }

    let again = scrape(
        &url,
        "0..2000",
        &["--retry-failed", "--retries", "20", "--backoff", "10ms"],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("done: {} batches ok, 0 failed", failed.len())),
        "{stderr}"
    );
    assert_complete_run(&out, 2000);
}

#[test]
fn retry_after_is_honoured_over_a_shorter_backoff() {
    let server = Server::start(&["--throttle-rate", "0.3", "--retry-after", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let url = server.tickers_template();
    let result = scrape(
        &url,
        "0..400",
        &[
            "--retries",
            "30",
            "--backoff",
            "1ms",
            "--backoff-max",
            "1ms",
        ],
        dir.path(),
    );
    assert_exit(&result, 0);
    let lines = manifest(&dir.path().join("out"));
    let retried: Vec<_> = lines
        .iter()
        .filter(|l| l["attempts"].as_u64().unwrap() > 1)
        .collect();
    assert!(!retried.is_empty());
    for l in retried {
        let waits = l["attempts"].as_u64().unwrap() - 1;
        assert!(
            l["elapsed_ms"].as_f64().unwrap() >= 1000.0 * waits as f64 - 50.0,
            "{l}"
        );
    }
}

#[test]
fn a_body_over_max_body_fails_its_batch_and_writes_nothing() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let url = server.tickers_template();
    let result = scrape(&url, "0..30", &["--max-body", "1KiB"], dir.path());
    assert_eq!(result.status.code(), Some(1));
    let lines = manifest(&dir.path().join("out"));
    assert_eq!(lines.len(), 3);
    assert!(
        lines
            .iter()
            .all(|l| l["error"].as_str().unwrap().contains("--max-body")),
        "{lines:?}"
    );
    assert_eq!(
        file_names(&dir.path().join("out")).len(),
        2,
        "only manifest.jsonl and run.json"
    );
}

#[test]
fn a_stalled_worker_is_named_replaced_and_the_run_gives_up_after_max_restarts() {
    let server = Server::start(&["--stall-rate", "1.0", "--stall", "60s"]);
    let dir = tempfile::tempdir().unwrap();
    let url = server.tickers_template();
    let result = run(
        &[
            "--workers",
            "1",
            "--url",
            &url,
            "--range",
            "0..20",
            "--out",
            "out",
            "--timeout",
            "120s",
            "--stall-timeout",
            "2s",
            "--max-restarts",
            "1",
        ],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("reported nothing for"), "{stderr}");
    assert!(
        stderr.contains("restarting it and handing out its 2 batches again"),
        "{stderr}"
    );
    assert!(
        stderr.lines().last().unwrap().contains("--max-restarts"),
        "{stderr}"
    );
}

#[test]
fn the_deadline_stops_the_run_with_exit_four_and_resume_finishes_it() {
    let server = Server::start(&["--delay", "5..15"]);
    let dir = tempfile::tempdir().unwrap();
    let first = start_run(&server, dir.path(), &["--deadline", "1s"]);
    let (code, stderr) = finish(first);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(
        stderr.contains("--deadline") && stderr.contains("--resume"),
        "{stderr}"
    );
    assert!(manifest_lines(&dir.path().join("out")) < 2000);
    let (code, stderr) = finish(start_run(&server, dir.path(), &["--resume"]));
    assert_eq!(code, Some(0), "{stderr}");
    assert_complete_run(&dir.path().join("out"), 20_000);
}

/// Runs 0..5000 with one injected worker fault (see worker/src/fault.rs).
fn run_with_fault(kind: &str, extra: &[&str]) -> (Option<i32>, String, tempfile::TempDir) {
    let server = Server::start(&["--delay", "1..5"]);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("fault-fired");
    let url = server.tickers_template();
    let output = coordinator()
        .args([
            "--workers",
            "2",
            "--concurrency",
            "4",
            "--url",
            &url,
            "--range",
            "0..5000",
            "--out",
            "out",
        ])
        .args(extra)
        .env(
            "COORDINATOR_WORKER_FAULT",
            format!("{kind}:50:{}", marker.display()),
        )
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("running coordinator");
    assert!(marker.exists(), "the fault fired");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), stderr, dir)
}

#[test]
fn a_worker_that_panics_is_replaced_and_no_batch_is_lost() {
    let (code, stderr, dir) = run_with_fault("panic", &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("restarting it"), "{stderr}");
    assert_complete_run(&dir.path().join("out"), 5000);
}

#[test]
fn a_worker_that_sends_a_frame_that_does_not_decode_is_replaced() {
    let (code, stderr, dir) = run_with_fault("garbage", &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("over the") && stderr.contains("restarting it"),
        "{stderr}"
    );
    assert_complete_run(&dir.path().join("out"), 5000);
}

#[test]
fn a_blocked_event_loop_is_reported_in_the_summary() {
    let (code, stderr, dir) = run_with_fault("block-1500", &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("its event loop was blocked"), "{stderr}");
    assert_complete_run(&dir.path().join("out"), 5000);
}

#[test]
fn a_second_sigint_stops_at_once_without_waiting_for_the_grace() {
    // Every response takes 20-30 s, so a graceful stop would wait that long.
    let server = Server::start(&["--delay", "20000..30000"]);
    let dir = tempfile::tempdir().unwrap();
    let mut child = start_run(&server, dir.path(), &["--grace", "120s"]);
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    assert!(
        eventually(LIMIT, || children_of(child.id()).len() == 2),
        "workers started"
    );
    let workers = children_of(child.id());
    send_signal(child.id(), "INT");
    let stopping = lines
        .recv_timeout(LIMIT)
        .expect("the coordinator says it is stopping");
    assert!(
        stopping.contains("Ctrl-C again stops at once"),
        "{stopping}"
    );
    send_signal(child.id(), "INT");
    assert!(
        eventually(Duration::from_secs(15), || child
            .try_wait()
            .unwrap()
            .is_some()),
        "the second SIGINT did not stop the run at once"
    );
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert!(
        workers.iter().all(|&p| !process_alive(p)),
        "no worker is left"
    );
    assert!(
        file_names(&dir.path().join("out"))
            .iter()
            .all(|n| !n.ends_with(".part"))
    );
}

#[test]
fn a_worker_replaced_for_stalling_does_not_take_its_successor_down() {
    // The first worker to finish 50 jobs blocks for 20 s: the watchdog replaces it, and
    // the replaced worker's last events must not be taken for its successor's.
    let (code, stderr, dir) = run_with_fault(
        "block-20000",
        &["--stall-timeout", "1s", "--max-restarts", "1"],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("over --stall-timeout") && stderr.contains("restarting it"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("restarting it").count(), 1, "{stderr}");
    assert_complete_run(&dir.path().join("out"), 5000);
}
