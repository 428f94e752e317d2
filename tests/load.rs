//! End-to-end tests of `coordinator load` and of `--rate`, against a real server.

use std::net::TcpListener;
use std::process::{Child, Output};
use std::time::Duration;

use crate::common::*;

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
        ": 1 worker, 4 connections, ",
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
    let url = page(&server);
    for http2 in [&[][..], &["--http2"]] {
        let mut args = vec![&*url, "-w", "2", "-c", "4", "-n", "200", "--no-keepalive"];
        args.extend_from_slice(http2);
        args.push("--json");
        let r = json(&load(&args));
        assert_eq!(r["statuses"]["200"], 200, "{http2:?}: {r}");
        assert_eq!(r["connect_ms"]["count"], 200, "{http2:?}: {r}");
    }
}

#[test]
fn errors_are_counted_by_kind() {
    // Bound but not listening: every connection is refused, and no other socket can
    // take the port while this one holds it.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed = socket.local_addr().unwrap().port();
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
    // Never ahead of the schedule: by the end of second k each of the 2 workers has
    // sent at most 1 + 100 k requests, however late some of them went out (a pause
    // is made up for by a burst, which a per-second cap would take for a fault).
    let mut so_far = 0;
    for l in &lines {
        so_far += l["responses"].as_u64().unwrap();
        let second = l["second"].as_u64().unwrap();
        assert!(
            so_far <= 200 * second + 2,
            "{so_far} by second {second}: {lines:?}"
        );
    }
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
    let page_bytes = |batches: std::ops::Range<u64>| -> u64 {
        batches
            .map(|i| tickers::tickers_json(i * 10, 10, 1_000_000_000).len() as u64)
            .sum()
    };
    // One worker requests each of the 100 batches once; two workers each start at the
    // first batch, so 50 requests each cover batches 0..50 twice.
    for (workers, expected) in [("1", page_bytes(0..100)), ("2", 2 * page_bytes(0..50))] {
        let r = json(&load(&[
            "--url", &template, "--range", "0..1000", "-w", workers, "-c", "2", "-n", "100",
            "--json",
        ]));
        assert_eq!(r["statuses"]["200"], 100, "-w {workers}");
        assert_eq!(r["bytes"], expected, "-w {workers}: the pages of the range");
    }
    // Over HTTP/2 each request's path is rendered onto the URI parsed once.
    let r = json(&load(&[
        "--url", &template, "--range", "0..1000", "--http2", "-w", "1", "-c", "2", "-n", "100",
        "--json",
    ]));
    assert_eq!(r["statuses"]["200"], 100, "--http2");
    assert_eq!(
        r["bytes"],
        page_bytes(0..100),
        "--http2: the pages of the range"
    );
}

#[test]
fn over_http2_a_list_of_paths_is_taken_in_turn() {
    let server = Server::start(&[]);
    let base = &server.base;
    let urls = [0u64, 10, 20].map(|start| format!("{base}/api/tickers/?start={start}&limit=10"));
    let r = json(&load(&[
        &urls[0], &urls[1], &urls[2], "--http2", "-w", "1", "-c", "1", "-n", "30", "--json",
    ]));
    assert_eq!(r["statuses"]["200"], 30);
    let each: u64 = [0u64, 10, 20]
        .map(|start| tickers::tickers_json(start, 10, 1_000_000_000).len() as u64)
        .iter()
        .sum();
    assert_eq!(r["bytes"], 10 * each, "each path ten times");
}

#[test]
fn load_mode_rejects_what_it_cannot_do() {
    for (args, says) in [
        (
            vec!["http://127.0.0.1:1/", "-n", "5", "-z", "1s"],
            "not both",
        ),
        (
            vec!["http://127.0.0.1:1/a", "https://127.0.0.1:1/b"],
            "one host:port and scheme",
        ),
        (
            vec!["http://127.0.0.1:1/a", "http://127.0.0.2:1/b"],
            "one host",
        ),
        (vec![], "give a URL"),
        (vec!["http://127.0.0.1:1/", "-c", "0"], "--connections"),
        (vec!["http://127.0.0.1:1/", "--range", "0..10"], "--range"),
        (
            vec![
                "http://127.0.0.1:1/",
                "--http2",
                "-m",
                "4",
                "--no-keepalive",
            ],
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
    // 40 requests at 20/s in all, 10/s for each of the 2 workers.
    let out = scrape(
        &url,
        "0..400",
        &["--workers", "2", "--rate", "20", "--json"],
        dir.path(),
    );
    assert_exit(&out, 0);
    assert_eq!(json(&out)["ok"], 40);
    let mut at: Vec<u64> = manifest(&dir.path().join("out"))
        .iter()
        .map(|l| l["at_ms"].as_u64().unwrap())
        .collect();
    at.sort_unstable();
    assert_eq!(at.len(), 40);
    // Request n of a worker starts n/10 s after the worker does, so of all 40 the
    // (k+1)-th cannot start before (ceil((k+1)/2) - 1) tenths of a second after the
    // first; the first line may come up to LATE after its request started. A worker
    // that kept to the whole rate instead of its share would be twice as fast.
    const LATE: u64 = 300;
    for (k, &t) in at.iter().enumerate() {
        let earliest = ((k as u64 + 2) / 2 - 1) * 100;
        assert!(
            t - at[0] + LATE >= earliest,
            "line {k} came {} ms after the first (at least {earliest} - {LATE}): {at:?}",
            t - at[0]
        );
    }
}

/// `coordinator load` for a minute with `-w 2`, returned once both workers are up
/// and hold connections to `server`; stdout is piped.
fn start_long_load(server: &Server) -> Child {
    let dir = tempfile::tempdir().unwrap();
    let child = spawn_piped(
        coordinator()
            .args(["load", &page(server), "-w", "2", "-c", "4", "-z", "60s"])
            .arg("--json")
            .current_dir(dir.path()),
    );
    wait_for_workers(child.id(), 2);
    wait_for_connections(server.port(), 4);
    child
}

#[test]
fn load_exits_three_when_it_loses_a_worker() {
    let server = Server::start(&[]);
    let child = start_long_load(&server);
    let workers = children_of(child.id());
    send_signal(workers[0], "KILL");
    let out = wait_output(child, CHILD_LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_exit(&out, 3);
    assert!(stderr.contains("stopped during the load test"), "{stderr}");
    assert!(out.stdout.is_empty(), "no report");
    assert!(!process_alive(workers[1]), "the other worker is gone too");
}

#[test]
fn load_exits_130_or_143_on_a_signal_with_the_report() {
    let server = Server::start(&[]);
    for (signal, code) in [("INT", 130), ("TERM", 143)] {
        let child = start_long_load(&server);
        send_signal(child.id(), signal);
        let out = wait_output(child, Duration::from_secs(60));
        assert_exit(&out, code);
        let r = json(&out);
        assert!(r["responses"].as_u64().unwrap() > 0, "SIG{signal}: {r}");
        assert!(r["wall_s"].as_f64().unwrap() < 60.0, "SIG{signal}: {r}");
    }
}
