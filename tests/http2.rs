//! `--http2`: h2c with prior knowledge against the built-in server, over real sockets.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::thread;
use std::time::Duration;

use crate::common::*;

#[test]
fn requests_go_as_streams_a_hundred_to_a_connection() {
    // Each page waits 200 ms, so that all 400 requests are in flight together.
    let server = Server::start(&["--delay", "200..200"]);
    let port = server.port();
    let dir = tempfile::tempdir().unwrap();
    let url = server.tickers_template();
    let mut child = coordinator()
        // Without the coordinator's own robots.txt connection, which stays open.
        .args([
            "--http2",
            "--workers",
            "2",
            "--concurrency",
            "200",
            "--robots",
            "ignore",
        ])
        .args([
            "--url", &url, "--range", "0..4000", "--out", "out", "--quiet",
        ])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut most = 0;
    let mut status = None;
    let finished = eventually(CHILD_LIMIT, || {
        most = most.max(connections_to(port));
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if !finished {
        kill_tree(&mut child);
    }
    assert!(finished, "the run did not finish");
    assert_eq!(status.unwrap().code(), Some(0));
    assert_complete_run(&dir.path().join("out"), 4000);
    // Two workers with 200 in flight each, 100 streams to a connection; over
    // HTTP/1.1 the same run holds up to 400 connections.
    assert!(
        (1..=4).contains(&most),
        "{most} connections for 400 requests in flight: they did not share them"
    );
}

#[test]
fn an_http1_only_server_sees_the_preface_and_the_batch_fails_with_a_reason() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (seen_tx, seen) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut preface = [0u8; 24];
        stream.read_exact(&mut preface).unwrap();
        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        let _ = seen_tx.send(preface);
    });
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}/p?start={{start}}&limit={{limit}}");
    // The server takes one connection: that of the batch, not of robots.txt.
    let flags = ["--http2", "--retries", "0", "--robots", "ignore"];
    let result = scrape(&url, "0..10", &flags, dir.path());
    assert_exit(&result, 1);
    let preface = seen
        .recv_timeout(Duration::from_secs(10))
        .expect("the server got a connection");
    assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    let lines = manifest(&dir.path().join("out"));
    assert_eq!(lines.len(), 1);
    assert!(lines[0]["file"].is_null(), "{}", lines[0]);
    assert!(
        lines[0]["error"].as_str().unwrap().contains("h2c"),
        "{}",
        lines[0]
    );
}

#[test]
fn retries_get_every_batch_through_a_hostile_server_over_http2() {
    retries_get_every_batch_through(hostile_server(), &["--http2"]);
}

#[test]
fn redirects_are_followed_over_http2() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "{}/api/tickers/?start={{start}}&limit={{limit}}&hops=3",
        server.base
    );
    let result = scrape(&url, "0..20", &["--http2"], dir.path());
    assert_exit(&result, 0);
    assert_complete_run(&dir.path().join("out"), 20);
}

#[test]
fn large_bodies_arrive_whole_over_many_frames_and_the_body_cap_holds() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let url = server.tickers_template();
    // 5,000 coins a page: about 1.3 MB, far more than one HTTP/2 frame.
    let result = scrape(
        &url,
        "0..10000",
        &["--http2", "--batch", "5000"],
        dir.path(),
    );
    assert_exit(&result, 0);
    for start in [0, 5000] {
        let file = dir
            .path()
            .join(format!("out/batch{start}-{}.json", start + 5000));
        assert_eq!(
            fs::read(file).unwrap(),
            tickers::tickers_json(start, 5000, 1_000_000_000).into_bytes()
        );
    }
    let capped = tempfile::tempdir().unwrap();
    let result = scrape(
        &url,
        "0..5000",
        &["--http2", "--batch", "5000", "--max-body", "100KiB"],
        capped.path(),
    );
    assert_exit(&result, 1);
    let lines = manifest(&capped.path().join("out"));
    let error = lines[0]["error"].as_str().unwrap();
    assert!(error.contains("over --max-body"), "{error}");
    assert_eq!(
        file_names(&capped.path().join("out")),
        ["manifest.jsonl", "run.json"].map(String::from).into(),
        "no batch file"
    );
}
