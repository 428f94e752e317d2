//! End-to-end fault tests: killed workers, signals to the coordinator, resume.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::*;

const LIMIT: Duration = CHILD_LIMIT;

/// A slow-enough run (0..20000 in batches of 10, 8 requests in flight in all) that a
/// test can act while it is under way.
fn start_run(server: &Server, dir: &std::path::Path, extra: &[&str]) -> Child {
    run_command(server, dir, "0..20000", extra)
        .spawn()
        .expect("starting coordinator")
}

/// A run over `range` with 2 workers and 4 requests in flight each, into `dir/out`,
/// with no stdin and its stderr piped.
fn run_command(
    server: &Server,
    dir: &std::path::Path,
    range: &str,
    extra: &[&str],
) -> std::process::Command {
    let url = server.tickers_template();
    let mut cmd = coordinator();
    cmd.args([
        "--workers",
        "2",
        "--concurrency",
        "4",
        "--url",
        &url,
        "--range",
        range,
        "--out",
        "out",
    ])
    .args(extra)
    .current_dir(dir)
    .stdin(Stdio::null())
    .stderr(Stdio::piped());
    cmd
}

fn wait_for_progress(dir: &std::path::Path, lines: usize) {
    let out = dir.join("out");
    assert!(
        eventually(LIMIT, || manifest_lines(&out) >= lines),
        "the run made no progress"
    );
}

fn finish(child: Child) -> (Option<i32>, String) {
    let output = wait_output(child, LIMIT);
    (
        code_of(&output.status),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A run (see [`start_run`]) against a server that answers each request after a
/// minute, returned once all 8 of its requests are in flight (8 connections to the
/// server are established): a graceful stop then has requests to wait for. Its stderr
/// comes line by line on the channel.
struct StuckRun {
    child: Child,
    workers: Vec<u32>,
    stderr: mpsc::Receiver<String>,
    _server: Server,
    dir: tempfile::TempDir,
}

impl StuckRun {
    fn start(extra: &[&str]) -> StuckRun {
        Self::start_with(extra, false)
    }

    /// With `own_group`, the coordinator leads a process group of its own, as a shell
    /// makes a foreground job.
    fn start_with(extra: &[&str], own_group: bool) -> StuckRun {
        let server = Server::start(&["--delay", "60000..60000"]);
        let dir = tempfile::tempdir().unwrap();
        let mut flags = vec!["--timeout", "300s"];
        flags.extend_from_slice(extra);
        let mut cmd = run_command(&server, dir.path(), "0..20000", &flags);
        if own_group {
            cmd.process_group(0);
        }
        let mut child = cmd.spawn().expect("starting coordinator");
        let stderr = lines_of(child.stderr.take().unwrap());
        let workers = wait_for_workers(child.id(), 2);
        wait_for_connections(server.port(), 8);
        StuckRun {
            child,
            workers,
            stderr,
            _server: server,
            dir,
        }
    }

    /// Sends `signal` to the coordinator and waits for it to say it is stopping.
    fn first_signal(&mut self, signal: &str) -> String {
        send_signal(self.child.id(), signal);
        self.expect_line(&format!(
            "stopped by SIG{signal}: handing out no more batches"
        ))
    }

    /// Waits for a line of stderr that contains `needle`.
    #[track_caller]
    fn expect_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line with {needle:?} on stderr: {e}"),
            }
        }
    }

    /// Whether the coordinator is still running `wait` from now (it must not exit by
    /// itself while its requests are in flight).
    fn still_running_after(&mut self, wait: Duration) -> bool {
        !eventually(wait, || self.child.try_wait().unwrap().is_some())
    }

    /// Sends `signal` and returns the exit code and how long the exit took.
    fn last_signal(&mut self, signal: &str) -> (Option<i32>, Duration) {
        let sent = Instant::now();
        send_signal(self.child.id(), signal);
        let code = exit_code_within(&mut self.child);
        (code, sent.elapsed())
    }

    /// The rest of stderr, once the coordinator has exited.
    fn rest_of_stderr(&self) -> String {
        let mut text = String::new();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(10)) {
            text.push_str(&line);
            text.push('\n');
        }
        text
    }
}

impl Drop for StuckRun {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            kill_tree(&mut self.child);
        }
    }
}

/// The lines of a pipe, on a channel, read by a thread of its own.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// The signals pending for `pid` (its own and its process's), from /proc; None once it
/// is gone.
fn pending_signals(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut pending = 0;
    for line in status.lines() {
        if let Some(mask) = line
            .strip_prefix("SigPnd:")
            .or_else(|| line.strip_prefix("ShdPnd:"))
        {
            pending |= u64::from_str_radix(mask.trim(), 16).unwrap();
        }
    }
    Some(pending)
}

#[test]
fn a_worker_killed_mid_run_is_replaced_and_no_batch_is_lost() {
    let server = Server::start(&["--delay", "5..15"]);
    let dir = tempfile::tempdir().unwrap();
    let child = start_run(&server, dir.path(), &[]);
    wait_for_progress(dir.path(), 200);
    let workers = wait_for_workers(child.id(), 2);
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
    let workers = wait_for_workers(child.id(), 2);
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
        stderr.contains(&format!("done: {} batches ok,", 2000 - stopped_at)),
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
    let workers = wait_for_workers(again.id(), 2);
    send_signal(again.id(), "KILL");
    let (code, _) = finish(again);
    assert_eq!(code, Some(128 + 9), "killed by SIGKILL");
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
    let stderr = String::from_utf8_lossy(&same.stderr);
    assert!(
        stderr.contains("nothing to fetch: all 10 batches"),
        "{stderr}"
    );
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
    // The server drops connections before reading them, robots.txt's too: without a
    // retry, one such drop would leave every batch disallowed (RFC 9309).
    let first = scrape(
        &url,
        "0..2000",
        &["--retries", "0", "--robots", "ignore"],
        dir.path(),
    );
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
        &[
            "--retry-failed",
            "--retries",
            "20",
            "--backoff",
            "10ms",
            "--robots",
            "ignore",
        ],
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
        file_names(&dir.path().join("out")),
        ["manifest.jsonl", "run.json"].map(String::from).into(),
        "no batch file"
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
    run_with_fault_on(&Server::start(&["--delay", "1..5"]), kind, extra)
}

/// [`run_with_fault`] against `server`.
fn run_with_fault_on(
    server: &Server,
    kind: &str,
    extra: &[&str],
) -> (Option<i32>, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("fault-fired");
    let output = output_of(run_command(server, dir.path(), "0..5000", extra).env(
        "COORDINATOR_WORKER_FAULT",
        format!("{kind}:50:{}", marker.display()),
    ));
    assert!(marker.exists(), "the fault fired");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (code_of(&output.status), stderr, dir)
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
    // Every request is in flight for a minute, so a graceful stop would wait that long.
    let mut run = StuckRun::start(&["--grace", "120s"]);
    let line = run.first_signal("INT");
    assert!(line.contains("Ctrl-C again stops at once"), "{line}");
    assert!(
        run.still_running_after(Duration::from_secs(1)),
        "the run ended by itself after the first SIGINT: nothing was in flight"
    );
    let (code, took) = run.last_signal("INT");
    assert_eq!(code, Some(130), "{}", run.rest_of_stderr());
    assert!(
        took < Duration::from_secs(30),
        "the second SIGINT took {took:?} to stop the run (requests answer after 60 s)"
    );
    assert!(
        run.workers.iter().all(|&p| !process_alive(p)),
        "no worker is left"
    );
    assert!(
        file_names(&run.dir.path().join("out"))
            .iter()
            .all(|n| !n.ends_with(".part"))
    );
}

#[test]
fn a_worker_replaced_for_stalling_does_not_take_its_successor_down() {
    // The first worker to finish 50 jobs blocks for 40 s: the watchdog replaces it, and
    // the replaced worker's last events must not be taken for its successor's. The
    // stall timeout leaves a healthy new worker on a busy machine ample time to report.
    let (code, stderr, dir) = run_with_fault(
        "block-40000",
        &["--stall-timeout", "8s", "--max-restarts", "1"],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("over --stall-timeout") && stderr.contains("restarting it"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("restarting it").count(), 1, "{stderr}");
    assert_complete_run(&dir.path().join("out"), 5000);
}

#[test]
fn the_first_signal_decides_the_exit_code() {
    for (first, second, code) in [("INT", "TERM", 130), ("TERM", "INT", 143)] {
        let mut run = StuckRun::start(&["--grace", "120s"]);
        run.first_signal(first);
        assert!(
            run.still_running_after(Duration::from_secs(1)),
            "the run ended by itself after SIG{first}"
        );
        let (exit, _) = run.last_signal(second);
        assert_eq!(
            exit,
            Some(code),
            "SIG{first} then SIG{second}: {}",
            run.rest_of_stderr()
        );
    }
}

#[test]
fn when_the_grace_runs_out_workers_get_sigterm_then_sigkill_and_the_exit_code_stays() {
    const SIGTERM_BIT: u64 = 1 << (15 - 1);
    let mut run = StuckRun::start(&["--grace", "1s"]);
    // Stopped workers can neither finish nor act on SIGTERM: it stays pending, and
    // only SIGKILL ends them.
    for &worker in &run.workers {
        send_signal(worker, "STOP");
    }
    run.first_signal("INT");
    // Each worker in turn gets SIGTERM and, a second later, SIGKILL: watch them all
    // until they are gone, noting which had a SIGTERM pending while still there.
    let mut termed = vec![false; run.workers.len()];
    let gone = eventually(LIMIT, || {
        let mut all_gone = true;
        for (k, &worker) in run.workers.iter().enumerate() {
            match pending_signals(worker) {
                Some(pending) if process_alive(worker) => {
                    termed[k] |= pending & SIGTERM_BIT != 0;
                    all_gone = false;
                }
                _ => {}
            }
        }
        all_gone
    });
    assert!(gone, "workers {:?} outlived the grace", run.workers);
    assert_eq!(
        termed,
        vec![true; run.workers.len()],
        "each worker had a SIGTERM pending before the SIGKILL ended it"
    );
    let code = exit_code_within(&mut run.child);
    assert_eq!(code, Some(130), "{}", run.rest_of_stderr());
}

#[test]
fn a_sigint_to_the_process_group_reaches_only_the_coordinator() {
    // As a terminal's Ctrl-C does: SIGINT to every process of the foreground group.
    let mut run = StuckRun::start_with(&["--grace", "120s"], true);
    let leader = run.child.id();
    for &worker in &run.workers {
        assert_ne!(process_group(worker), Some(leader), "worker {worker}");
    }
    let kill_group = |signal: &str| {
        let group = format!("-{leader}");
        let status = std::process::Command::new("kill")
            .args(["-s", signal, "--", &group])
            .status()
            .unwrap();
        assert!(status.success(), "kill -s {signal} -- {group}");
    };
    kill_group("INT");
    run.expect_line("stopped by SIGINT: handing out no more batches");
    // Workers that got the SIGINT would be dead at once (they do not handle it); these
    // finish what they hold, which takes a minute.
    assert!(
        !eventually(Duration::from_secs(1), || run
            .workers
            .iter()
            .any(|&p| !process_alive(p))),
        "a worker died of the terminal's SIGINT"
    );
    kill_group("INT");
    assert_eq!(exit_code_within(&mut run.child), Some(130));
}

#[test]
fn dead_workers_are_not_replaced_once_a_stop_was_asked_for() {
    let mut run = StuckRun::start(&["--grace", "120s"]);
    run.first_signal("INT");
    let (dead, alive) = (run.workers[0], run.workers[1]);
    send_signal(dead, "KILL");
    assert!(
        eventually(LIMIT, || children_of(run.child.id()) == vec![alive]),
        "the killed worker is reaped"
    );
    // A replacement would be started at once; the other worker still waits for its
    // answers, so the run goes on.
    assert!(run.still_running_after(Duration::from_secs(2)));
    assert_eq!(children_of(run.child.id()), vec![alive], "no new worker");
    let (code, _) = run.last_signal("INT");
    assert_eq!(code, Some(130));
    let stderr = run.rest_of_stderr();
    assert!(!stderr.contains("restarting it"), "{stderr}");
    assert_eq!(worker_pids(&stderr), run.workers, "{stderr}");
}

#[test]
fn resume_fetches_again_a_batch_whose_file_size_differs_from_the_manifest() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let url = server.tickers_template();
    assert_exit(&scrape(&url, "0..100", &[], dir.path()), 0);
    let out = dir.path().join("out");
    let shorter = out.join("batch30-40.json");
    let mut body = std::fs::read(&shorter).unwrap();
    body.pop();
    std::fs::write(&shorter, &body).unwrap();
    let longer = out.join("batch70-80.json");
    let mut body = std::fs::read(&longer).unwrap();
    body.push(b'\n');
    std::fs::write(&longer, &body).unwrap();

    let resumed = scrape(&url, "0..100", &["--resume"], dir.path());
    assert_exit(&resumed, 0);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(stderr.contains("done: 2 batches ok, 0 failed"), "{stderr}");
    assert_complete_run(&out, 100);
}

#[test]
fn failed_batches_count_as_finished_for_resume_and_retry_failed_fetches_them() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let url = server.tickers_template();
    // Every page is over 1 KiB: each batch fails, with no retry.
    assert_exit(
        &scrape(&url, "0..30", &["--max-body", "1KiB"], dir.path()),
        1,
    );
    let out = dir.path().join("out");
    let before = std::fs::read_to_string(out.join("manifest.jsonl")).unwrap();
    assert_eq!(manifest(&out).len(), 3);

    // Without the cap the batches would now be stored: none is fetched.
    let resumed = scrape(&url, "0..30", &["--resume"], dir.path());
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    // Failed batches are finished for --resume: nothing is fetched, no worker starts.
    assert!(
        stderr.contains("nothing to fetch: all 3 batches"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("manifest.jsonl")).unwrap(),
        before,
        "the failed lines stay"
    );
    assert_eq!(
        file_names(&out),
        ["manifest.jsonl", "run.json"].map(String::from).into()
    );

    let retried = scrape(&url, "0..30", &["--retry-failed"], dir.path());
    assert_exit(&retried, 0);
    assert_complete_run(&out, 30);
}

#[test]
fn a_run_that_ended_with_exit_three_can_be_resumed() {
    // A worker panics and no restart is allowed: the run ends with exit 3.
    let server = Server::start(&["--delay", "1..5"]);
    let (code, stderr, dir) = run_with_fault_on(&server, "panic", &["--max-restarts", "0"]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("--max-restarts"), "{stderr}");
    let out = dir.path().join("out");
    let stopped_at = manifest_lines(&out);
    assert!(
        stopped_at < 500,
        "{stopped_at} batches before the fatal error"
    );
    assert!(
        file_names(&out).iter().all(|n| !outdir::is_temp_file(n)),
        "no temp files"
    );

    let resumed = scrape(
        &server.tickers_template(),
        "0..5000",
        &["--resume"],
        dir.path(),
    );
    assert_exit(&resumed, 0);
    assert_complete_run(&out, 5000);
}

#[test]
fn retry_failed_refuses_what_the_readme_says_it_refuses() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let url = server.tickers_template();
    assert_exit(
        &scrape(&url, "0..100", &["--shard", "0/2", "--quiet"], dir.path()),
        0,
    );
    std::fs::create_dir(dir.path().join("no-run")).unwrap();
    let unreadable = dir.path().join("unreadable");
    std::fs::create_dir(&unreadable).unwrap();
    std::fs::write(unreadable.join("manifest.jsonl"), "").unwrap();
    std::fs::write(unreadable.join("run.json"), "{ not json").unwrap();
    let cases: [(&[&str], &str, &str); 7] = [
        (
            &["--range", "0..200", "--shard", "0/2"],
            "out",
            "another plan",
        ),
        (
            &["--range", "0..100", "--shard", "1/2"],
            "out",
            "another plan",
        ),
        (&["--range", "0..100"], "no-run", "no run"),
        (&["--range", "0..100"], "fresh", "no run"),
        (&["--range", "0..100"], "unreadable", "run.json"),
        (
            &["--range", "0..100", "--resume"],
            "out",
            "cannot be used with",
        ),
        (
            &["--range", "0..100", "--overwrite"],
            "out",
            "cannot be used with",
        ),
    ];
    let run_json = std::fs::read(dir.path().join("out/run.json")).unwrap();
    for (flags, out, says) in cases {
        let mut args = vec!["--url", url.as_str(), "--out", out, "--retry-failed"];
        args.extend_from_slice(flags);
        let result = run(&args, dir.path());
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(2), "{flags:?} {out}: {stderr}");
        assert!(stderr.contains(says), "{flags:?} {out}: {stderr}");
    }
    let to_stdout = run(
        &[
            "--url",
            &url,
            "--range",
            "0..100",
            "--out",
            "-",
            "--retry-failed",
        ],
        dir.path(),
    );
    assert_exit(&to_stdout, 2);
    assert!(to_stdout.stdout.is_empty());
    assert!(!dir.path().join("fresh").exists(), "nothing was created");
    assert_eq!(
        std::fs::read(dir.path().join("out/run.json")).unwrap(),
        run_json,
        "the run refused left its directory alone"
    );
    assert!(!dir.path().join("no-run/run.json").exists());
}
