//! End-to-end tests of `coordinator load` and of `--rate`, against a real server.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::net::TcpListener;
use std::process::Output;

use common::*;

fn load(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec!["load"];
    all.extend_from_slice(args);
    run(&all, dir.path())
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)))
}

fn page(server: &Server) -> String {
    format!("{}/api/tickers/?start=0&limit=10", server.base)
}

#[test]
fn a_counted_load_test_sends_exactly_n_requests_over_all_workers() {
    let server = Server::start(&[]);
    let out = load(&[&page(&server), "-w", "2", "-c", "8", "-n", "2000", "--json"]);
    assert_exit(&out, 0);
    let r = json(&out);
    assert_eq!(r["requests"], 2000);
    assert_eq!(r["responses"], 2000);
    assert_eq!(r["statuses"]["200"], 2000);
    assert_eq!(
        r["bytes"].as_u64().unwrap(),
        2000 * tickers::tickers_json(0, 10, 1_000_000_000).len() as u64
    );
    let workers = r["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    assert_eq!(
        workers
            .iter()
            .map(|w| w["requests"].as_u64().unwrap())
            .sum::<u64>(),
        2000
    );
    assert_eq!(
        r["connect_ms"]["count"], 8,
        "keep-alive: one connection each"
    );
    assert!(r["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    assert!(r["latency_ms"]["p99"].as_f64().unwrap() >= r["latency_ms"]["p50"].as_f64().unwrap());
    assert!(r["generator"]["cpu_us_per_request"].as_f64().unwrap() > 0.0);
    assert!(r["generator"]["max_rss_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn over_http2_each_connection_carries_its_streams() {
    let server = Server::start(&[]);
    let out = load(&[
        &page(&server),
        "--http2",
        "-m",
        "10",
        "-w",
        "2",
        "-c",
        "4",
        "-n",
        "2000",
        "--json",
    ]);
    assert_exit(&out, 0);
    let r = json(&out);
    assert_eq!(r["responses"], 2000);
    assert_eq!(r["statuses"]["200"], 2000);
    assert_eq!(r["http2_streams"], 10);
    assert_eq!(
        r["bytes"].as_u64().unwrap(),
        2000 * tickers::tickers_json(0, 10, 1_000_000_000).len() as u64
    );
    assert_eq!(r["connect_ms"]["count"], 4, "40 streams on 4 connections");
    assert_eq!(r["errors"]["reset"], 0);
}

#[test]
fn over_http2_a_server_that_does_not_speak_it_gives_errors_not_a_hang() {
    // Answers HTTP/1.1 to whatever comes, then closes.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = std::io::Read::read(&mut stream, &mut [0u8; 1024]);
            let _ = std::io::Write::write_all(
                &mut stream,
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
            );
        }
    });
    let out = load(&[
        &format!("http://{addr}/"),
        "--http2",
        "-c",
        "1",
        "-n",
        "20",
        "--json",
    ]);
    let r = json(&out);
    assert_eq!(r["responses"], 0);
    let errors = &r["errors"];
    let failed: u64 = ["connect", "reset", "read", "timeout"]
        .iter()
        .map(|k| errors[k].as_u64().unwrap())
        .sum();
    assert_eq!(failed, 20, "{errors}");
}

#[test]
fn the_text_report_names_every_section() {
    let server = Server::start(&[]);
    let out = load(&[&page(&server), "-w", "1", "-c", "4", "-n", "300"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for section in [
        "service time p50",
        "connect",
        "first byte",
        "status codes 200: 300",
        "errors       connect 0",
        "histogram",
        "worker 0 (pid",
        "µs/request",
    ] {
        assert!(text.contains(section), "{section}: {text}");
    }
}

#[test]
fn without_keepalive_every_request_opens_a_connection() {
    let server = Server::start(&[]);
    let out = load(&[
        &page(&server),
        "-w",
        "2",
        "-c",
        "4",
        "-n",
        "200",
        "--no-keepalive",
        "--json",
    ]);
    let r = json(&out);
    assert_eq!(r["statuses"]["200"], 200);
    assert_eq!(r["connect_ms"]["count"], 200);
}

#[test]
fn errors_are_counted_by_kind() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = load(&[
        &format!("http://127.0.0.1:{closed}/"),
        "-w",
        "1",
        "-c",
        "2",
        "-n",
        "50",
        "--json",
    ]);
    let r = json(&out);
    assert_eq!(r["errors"]["connect"], 50);
    assert_eq!(r["responses"], 0);

    let server = Server::start(&["--drop-rate", "0.3"]);
    let r = json(&load(&[
        &page(&server),
        "-w",
        "1",
        "-c",
        "4",
        "-n",
        "400",
        "--json",
    ]));
    let e = &r["errors"];
    let failed = e["connect"].as_u64().unwrap() + e["reset"].as_u64().unwrap();
    assert!(failed > 0, "dropped connections show up: {r}");
    assert_eq!(r["requests"], 400);
}

#[test]
fn thresholds_set_the_exit_code() {
    let server = Server::start(&[]);
    let url = page(&server);
    let failing = load(&[
        &url,
        "-w",
        "1",
        "-c",
        "2",
        "-n",
        "200",
        "--fail-if",
        "p99>1us",
        "--fail-if",
        "errors>0",
    ]);
    assert_eq!(failing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failing.stderr);
    assert!(
        stderr.contains("threshold failed: p99>1us (measured"),
        "{stderr}"
    );
    assert!(!stderr.contains("errors>0"), "{stderr}");
    let passing = load(&[
        &url,
        "-w",
        "1",
        "-c",
        "2",
        "-n",
        "200",
        "--fail-if",
        "errors>0.1%",
        "--fail-if",
        "p50>60s",
    ]);
    assert_eq!(passing.status.code(), Some(0));
    let bad = load(&[&url, "--fail-if", "p99 fast"]);
    assert_eq!(bad.status.code(), Some(2));

    let failing_server = Server::start(&["--fail-rate", "1.0"]);
    let five_hundreds = load(&[
        &page(&failing_server),
        "-w",
        "1",
        "-c",
        "2",
        "-n",
        "50",
        "--fail-if",
        "errors>0",
    ]);
    assert_eq!(
        five_hundreds.status.code(),
        Some(1),
        "5xx responses count as errors for --fail-if"
    );
}

#[test]
fn a_fixed_rate_never_sends_more_than_the_schedule_and_writes_a_timeline() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let timeline = dir.path().join("timeline.jsonl");
    let out = load(&[
        &page(&server),
        "-w",
        "2",
        "-c",
        "10",
        "-z",
        "2s",
        "--rate",
        "200",
        "--json",
        "--timeline",
        timeline.to_str().unwrap(),
    ]);
    assert_exit(&out, 0);
    let r = json(&out);
    let sent = r["requests"].as_u64().unwrap();
    assert!((1..=400).contains(&sent), "{sent} requests in 2 s at 200/s");
    assert!(
        r["intended_latency_ms"]["p50"].as_f64().unwrap()
            >= r["latency_ms"]["p50"].as_f64().unwrap()
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&timeline)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 2, "{lines:?}");
    let seconds: Vec<u64> = lines
        .iter()
        .map(|l| l["second"].as_u64().unwrap())
        .collect();
    assert!(seconds.windows(2).all(|w| w[0] < w[1]), "{seconds:?}");
    assert!(
        lines
            .iter()
            .all(|l| l["responses"].as_u64().unwrap() <= 210),
        "{lines:?}"
    );
    let timed: u64 = lines.iter().map(|l| l["responses"].as_u64().unwrap()).sum();
    assert_eq!(
        timed,
        r["responses"].as_u64().unwrap(),
        "the timeline adds up to the total"
    );
}

#[test]
fn a_url_template_spreads_the_load_over_a_range() {
    let server = Server::start(&[]);
    let template = server.tickers_template();
    let r = json(&load(&[
        "--url", &template, "--range", "0..1000", "-w", "1", "-c", "2", "-n", "100", "--json",
    ]));
    assert_eq!(r["statuses"]["200"], 100);
}

#[test]
fn load_mode_rejects_what_it_cannot_do() {
    for (args, says) in [
        (vec!["https://127.0.0.1/"], "https"),
        (
            vec!["http://127.0.0.1:1/", "-n", "5", "-z", "1s"],
            "not both",
        ),
        (
            vec!["http://127.0.0.1:1/a", "http://127.0.0.2:1/b"],
            "one host",
        ),
        (vec![], "give a URL"),
        (vec!["http://127.0.0.1:1/", "-c", "0"], "--connections"),
        (vec!["http://127.0.0.1:1/", "--range", "0..10"], "--range"),
        (
            vec!["http://127.0.0.1:1/", "--http2", "--no-keepalive"],
            "cannot be used with",
        ),
        (vec!["http://127.0.0.1:1/", "-m", "4"], "--http2"),
        (
            vec!["http://127.0.0.1:1/", "--http2", "-m", "0"],
            "--streams",
        ),
        (
            vec!["http://127.0.0.1:1/", "--http2", "-H", "bad name: x"],
            "--header",
        ),
    ] {
        let out = load(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn scrape_rate_spaces_the_requests_of_all_workers() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let url = server.tickers_template();
    // 20 requests at 50/s in all: the last one cannot start before 19/50 s.
    let out = run(
        &[
            "--url",
            &url,
            "--range",
            "0..200",
            "--workers",
            "2",
            "--rate",
            "50",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0));
    let summary = json(&out);
    assert_eq!(summary["ok"], 20);
    assert!(summary["wall_s"].as_f64().unwrap() >= 0.3, "{summary}");
}
