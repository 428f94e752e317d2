//! End-to-end tests of the pipeline side: `--out -` JSON Lines, `--json`, streaming
//! `--urls -`.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use crate::common::*;
use base64::Engine as _;

const COINS: u64 = 1_000_000_000;

#[test]
fn out_dash_streams_one_json_line_per_batch_with_the_body_inside() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let url = server.tickers_template();
    let result = run(
        &["--url", &url, "--range", "0..500", "--out", "-"],
        dir.path(),
    );
    assert_exit(&result, 0);
    let stdout = String::from_utf8(result.stdout).unwrap();
    let mut seen = Vec::new();
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let start = v["start"].as_u64().unwrap();
        let expected: serde_json::Value =
            serde_json::from_str(&tickers::tickers_json(start, 10, COINS)).unwrap();
        assert_eq!(v["body"], expected, "the body is embedded as JSON");
        assert_eq!(v["status"], 200);
        seen.push(v["index"].as_u64().unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..50).collect::<Vec<_>>());
    assert!(
        file_names(dir.path()).is_empty(),
        "nothing is written to disk"
    );
    assert!(String::from_utf8_lossy(&result.stderr).contains("done: 50 batches ok"));
}

#[test]
fn a_body_that_is_not_json_travels_as_base64() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    std::fs::write(
        &list,
        format!("{}/api/tickers/?start=7&limit=4&format=csv\n", server.base),
    )
    .unwrap();
    let result = run(
        &["--urls", list.to_str().unwrap(), "--out", "-"],
        dir.path(),
    );
    assert_eq!(result.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    assert!(v["body"].is_null());
    let body = base64::engine::general_purpose::STANDARD
        .decode(v["body_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(body, tickers::tickers_csv(7, 4, COINS).into_bytes());
}

#[test]
fn a_closed_stdout_ends_the_run_promptly_and_quietly() {
    let server = Server::start(&["--delay", "1..3"]);
    let dir = tempfile::tempdir().unwrap();
    let url = server.tickers_template();
    let mut child = spawn_piped(
        coordinator()
            .args(["--workers", "2", "--url", &url])
            .args(["--range", "0..10000000", "--out", "-"])
            .current_dir(dir.path()),
    );
    // Like `| head -n 5`: five lines are read, then the pipe is closed.
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let (close, closed) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        for _ in 0..5 {
            let mut line = String::new();
            let _ = stdout.read_line(&mut line);
            let _ = lines_tx.send(line);
        }
        let _ = closed.recv();
    });
    for _ in 0..5 {
        let Ok(line) = lines.recv_timeout(LIMIT) else {
            kill_tree(&mut child);
            panic!("no batch line on stdout");
        };
        assert!(line.starts_with("{\"index\":"), "{line}");
    }
    let workers = wait_for_workers(child.id(), 2);
    drop(close);
    let output = wait_output(child, LIMIT);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.to_lowercase().contains("broken pipe"),
        "{stderr}"
    );
    assert!(
        workers.iter().all(|&p| !process_alive(p)),
        "the workers are gone"
    );
}

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn json_summary_goes_to_stdout_and_parses() {
    let dir = tempfile::tempdir().unwrap();
    let result = run(&["--range", "0..200", "--json"], dir.path());
    assert_eq!(result.status.code(), Some(0));
    let summary: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(summary["ok"], 20);
    assert_eq!(summary["failed"], 0);
    assert_eq!(summary["exit_code"], 0);
    assert!(!summary["workers"].as_array().unwrap().is_empty());
    assert!(summary["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert!(
        result.stderr.is_empty(),
        "no text summary or progress with --json"
    );
}

#[test]
fn urls_from_stdin_are_fetched_before_stdin_ends() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mut child = coordinator()
        .args(["--workers", "1", "--urls", "-", "--out", "-"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    writeln!(stdin, "{}/api/tickers/?start=0&limit=1", server.base).unwrap();
    stdin.flush().unwrap();
    let first = lines
        .recv_timeout(LIMIT)
        .expect("the first URL is fetched while stdin is open");
    assert!(first.contains("\"index\":0"), "{first}");
    writeln!(stdin, "{}/api/tickers/?start=1&limit=1", server.base).unwrap();
    drop(stdin);
    let second = lines.recv_timeout(LIMIT).unwrap();
    assert!(second.contains("\"index\":1"), "{second}");
    assert_eq!(exit_code_within(&mut child), Some(0));
}
