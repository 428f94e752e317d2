//! `--http2`: h2c with prior knowledge against the built-in server, over real sockets,
//! and against a server written frame by frame that lies about its answers.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// How a frame-by-frame HTTP/2 server answers one request.
#[derive(Clone, Copy, Debug)]
enum H2Answer {
    /// `content-length` says the whole page; half of it comes, then END_STREAM.
    Short,
    /// `content-length` says the whole page; more than it comes, then END_STREAM.
    Long,
    /// `content-length` says the whole page; the headers end the stream.
    Empty,
    /// No length; half the page, then RST_STREAM.
    Reset,
    /// No length; half the page, then the socket is closed.
    Hangup,
    /// The page, as announced.
    Whole,
}

/// The page every request of the frame server is answered with (or a lie about it).
const H2_PAGE: &[u8] = b"{\"page\":\"the truth, whole\"}";

/// An HTTP/2 frame header: length, type, flags, stream.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut frame = len.to_be_bytes()[1..].to_vec();
    frame.extend_from_slice(&[kind, flags]);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The frames of `answer` on `stream`, and whether the connection is closed after them.
fn h2_answer(answer: H2Answer, stream: u32) -> (Vec<u8>, bool) {
    const DATA: u8 = 0;
    const HEADERS: u8 = 1;
    const RST_STREAM: u8 = 3;
    const END_STREAM: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;
    // HPACK, no Huffman: `:status: 200` (static index 8), then `content-length` as a
    // literal without indexing on static name 28 (a 4-bit prefix: 15, then 13).
    let mut block = vec![0x88];
    let length = H2_PAGE.len().to_string();
    let announced = !matches!(answer, H2Answer::Reset | H2Answer::Hangup);
    if announced {
        block.extend_from_slice(&[0x0f, 0x0d, length.len() as u8]);
        block.extend_from_slice(length.as_bytes());
    }
    let half = &H2_PAGE[..H2_PAGE.len() / 2];
    let mut out = Vec::new();
    let headers_flags = match answer {
        H2Answer::Empty => END_HEADERS | END_STREAM,
        _ => END_HEADERS,
    };
    out.extend(h2_frame(HEADERS, headers_flags, stream, &block));
    match answer {
        H2Answer::Short => out.extend(h2_frame(DATA, END_STREAM, stream, half)),
        H2Answer::Long => {
            let more = [H2_PAGE, b" and then some"].concat();
            out.extend(h2_frame(DATA, END_STREAM, stream, &more));
        }
        H2Answer::Empty => {}
        H2Answer::Reset => {
            out.extend(h2_frame(DATA, 0, stream, half));
            // INTERNAL_ERROR
            out.extend(h2_frame(RST_STREAM, 0, stream, &2u32.to_be_bytes()));
        }
        H2Answer::Hangup => out.extend(h2_frame(DATA, 0, stream, half)),
        H2Answer::Whole => out.extend(h2_frame(DATA, END_STREAM, stream, H2_PAGE)),
    }
    (out, matches!(answer, H2Answer::Hangup))
}

/// An HTTP/2 server (prior knowledge) written frame by frame on raw sockets: the n-th
/// request it gets, on any connection, is answered with `answers[n]` (the last one
/// once they run out). It reads frame headers only, never the request's HPACK block.
fn h2_frame_server(answers: Vec<H2Answer>) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&served);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let (answers, count) = (answers.clone(), Arc::clone(&count));
            thread::spawn(move || {
                let mut preface = [0u8; 24];
                if stream.read_exact(&mut preface).is_err() {
                    return;
                }
                // Our SETTINGS: all defaults.
                let _ = stream.write_all(&h2_frame(4, 0, 0, &[]));
                loop {
                    let mut head = [0u8; 9];
                    if stream.read_exact(&mut head).is_err() {
                        return;
                    }
                    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                    let mut payload = vec![0u8; len];
                    if stream.read_exact(&mut payload).is_err() {
                        return;
                    }
                    let (kind, flags) = (head[3], head[4]);
                    let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                    let reply = match kind {
                        // SETTINGS: acknowledged.
                        4 if flags & 1 == 0 => h2_frame(4, 1, 0, &[]),
                        // PING: answered.
                        6 if flags & 1 == 0 => h2_frame(6, 1, 0, &payload),
                        // GOAWAY: the client is done with this connection.
                        7 => return,
                        1 => {
                            let n = count.fetch_add(1, Ordering::SeqCst);
                            let answer = answers[n.min(answers.len() - 1)];
                            let (frames, hang_up) = h2_answer(answer, id);
                            let _ = stream.write_all(&frames);
                            if hang_up {
                                return;
                            }
                            continue;
                        }
                        _ => continue,
                    };
                    let _ = stream.write_all(&reply);
                }
            });
        }
    });
    (port, served)
}

#[test]
fn an_http2_answer_that_lies_about_its_length_or_is_cut_off_is_never_stored() {
    use H2Answer::*;
    let lies = [Short, Long, Empty, Reset, Hangup];
    // Every lie once, then the truth: the batch is retried until its page is whole.
    let (port, served) = h2_frame_server([&lies[..], &[Whole]].concat());
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}/p?start={{start}}");
    let flags = |retries| {
        [
            "--http2",
            "--batch",
            "1",
            "--robots",
            "ignore",
            "--retries",
            retries,
            "--backoff",
            "10ms",
            "--backoff-max",
            "50ms",
            "-q",
        ]
    };
    let result = scrape(&url, "0..1", &flags("10"), dir.path());
    assert_exit(&result, 0);
    let out = dir.path().join("out");
    assert_eq!(fs::read(out.join("batch0-1.json")).unwrap(), H2_PAGE);
    let lines = manifest(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["attempts"], 6, "{}", lines[0]);
    assert_eq!(served.load(Ordering::SeqCst), 6);

    // Only lies, as many as the attempts: the batch fails and no page file is left.
    let (port, served) = h2_frame_server(lies.to_vec());
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}/p?start={{start}}");
    let result = scrape(&url, "0..1", &flags("4"), dir.path());
    assert_exit(&result, 1);
    let out = dir.path().join("out");
    assert!(
        file_names(&out)
            .iter()
            .all(|name| !name.starts_with("batch")),
        "{:?}",
        file_names(&out)
    );
    let lines = manifest(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0]["file"].is_null(), "{}", lines[0]);
    assert_eq!(lines[0]["attempts"], 5, "{}", lines[0]);
    assert_eq!(served.load(Ordering::SeqCst), 5);
}
