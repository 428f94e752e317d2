//! Misbehaving HTTP/1.1 servers on raw sockets, each writing exactly the bytes a case
//! needs: the tool must store every page under its own name or fail the batch, never
//! store another batch's bytes, never send a secret to a host a redirect chose, and
//! keep its memory within its caps.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::common::{assert_exit, children_of, coordinator, manifest, run};

/// One request as the server read it: its method, target, head and body.
#[derive(Clone)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) head: String,
    /// As many bytes as its `Content-Length` said.
    pub(crate) body: Vec<u8>,
}

impl Request {
    /// The batch a `/p?start=N` request asks for.
    fn batch(&self) -> u64 {
        let n = self.target.rsplit('=').next().unwrap_or("0");
        n.parse().unwrap_or(0)
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

type Answer = dyn Fn(&mut TcpStream, &Request) -> std::io::Result<()> + Send + Sync;

/// A server on 127.0.0.1:0 that reads requests one after another on each connection
/// and lets `answer` write whatever it likes; it runs until the test ends.
pub(crate) struct RawServer {
    port: u16,
    pub(crate) seen: Arc<Mutex<Vec<Request>>>,
}

impl RawServer {
    pub(crate) fn start(
        answer: impl Fn(&mut TcpStream, &Request) -> std::io::Result<()> + Send + Sync + 'static,
    ) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answer: Arc<Answer> = Arc::new(answer);
        let log = Arc::clone(&seen);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (answer, log) = (Arc::clone(&answer), Arc::clone(&log));
                thread::spawn(move || serve(stream, &*answer, &log));
            }
        });
        RawServer { port, seen }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// Appends what `stream` has to `pending`; `false` at its end or on an error.
fn read_more(stream: &mut TcpStream, pending: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            pending.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

fn serve(mut stream: TcpStream, answer: &Answer, log: &Mutex<Vec<Request>>) {
    let mut pending = Vec::new();
    loop {
        let end = loop {
            if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            if !read_more(&mut stream, &mut pending) {
                return;
            }
        };
        let head = String::from_utf8_lossy(&pending[..end]).into_owned();
        pending.drain(..end);
        let mut words = head.split(' ');
        let method = words.next().unwrap_or("").to_owned();
        let target = words.next().unwrap_or("").to_owned();
        let mut request = Request {
            method,
            target,
            head,
            body: Vec::new(),
        };
        let length = request
            .header("content-length")
            .map_or(0, |n| n.parse().unwrap());
        while pending.len() < length {
            if !read_more(&mut stream, &mut pending) {
                return;
            }
        }
        request.body = pending.drain(..length).collect();
        // Logged before it is answered: a request the answer leads to (a redirect's
        // next hop) comes after it in the log.
        log.lock().unwrap().push(request.clone());
        if answer(&mut stream, &request).is_err() {
            return;
        }
    }
}

/// The page a server gives for `target`: unique per batch.
fn page(target: &str) -> String {
    format!("{{\"page\":\"{target}\"}}")
}

fn ok_response(target: &str) -> Vec<u8> {
    let body = page(target);
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Every file of a `batch{start}-{end}.json` run over `0..n` in batches of 1 holds the
/// page of its own batch.
fn assert_every_file_is_its_own_page(out: &Path, n: u64) {
    for i in 0..n {
        let name = format!("batch{i}-{}.json", i + 1);
        let got =
            std::fs::read_to_string(out.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, page(&format!("/p?start={i}")), "{name}");
    }
}

fn scrape(server: &RawServer, n: u64, extra: &[&str], cwd: &Path) -> std::process::Output {
    let url = server.url("/p?start={start}");
    let range = format!("0..{n}");
    // The servers write what a case needs to every request: robots.txt is not the
    // case (tests/robots.rs is).
    let mut args = vec![
        "--url", &url, "--range", &range, "--batch", "1", "-o", "out", "-q", "--robots", "ignore",
    ];
    args.extend_from_slice(extra);
    run(&args, cwd)
}

#[test]
fn interim_responses_before_the_answer_are_skipped_and_every_file_is_its_own_page() {
    // 103 Early Hints in the same write as the answer for even batches, 30 ms before
    // it for odd ones, and a 100 Continue first for every third.
    let server = RawServer::start(|s, r| {
        let n = r.batch();
        let mut first = Vec::new();
        if n.is_multiple_of(3) {
            first.extend(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        first.extend(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n");
        if n.is_multiple_of(2) {
            first.extend(ok_response(&r.target));
            return s.write_all(&first);
        }
        s.write_all(&first)?;
        thread::sleep(Duration::from_millis(30));
        s.write_all(&ok_response(&r.target))
    });
    let dir = tempfile::tempdir().unwrap();
    let result = scrape(&server, 200, &["-w", "1", "-c", "4"], dir.path());
    assert_exit(&result, 0);
    assert_every_file_is_its_own_page(&dir.path().join("out"), 200);
}

#[test]
fn a_connection_that_got_bytes_nobody_asked_for_is_never_reused() {
    // After each answer the server sends a second, unasked-for response: in the same
    // write for even batches, 20 ms later for odd ones, unless the next request is
    // already there (then HTTP/1.1 cannot tell the bytes from the answer; see the docs).
    let injected = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&injected);
    let server = RawServer::start(move |s, r| {
        let n = r.batch();
        let wrong = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nINJECTED";
        let mut answer = ok_response(&r.target);
        if n.is_multiple_of(2) {
            answer.extend(wrong);
            count.fetch_add(1, Ordering::Relaxed);
            return s.write_all(&answer);
        }
        s.write_all(&answer)?;
        thread::sleep(Duration::from_millis(20));
        s.set_nonblocking(true)?;
        let mut peek = [0u8; 1];
        let next_request_waits = s.peek(&mut peek).is_ok();
        s.set_nonblocking(false)?;
        if !next_request_waits {
            count.fetch_add(1, Ordering::Relaxed);
            s.write_all(wrong)?;
        }
        Ok(())
    });
    let dir = tempfile::tempdir().unwrap();
    // Paced, so that connections wait in the pool while the bytes come.
    let result = scrape(
        &server,
        40,
        &["-w", "1", "-c", "2", "--rate", "20"],
        dir.path(),
    );
    assert_exit(&result, 0);
    assert_every_file_is_its_own_page(&dir.path().join("out"), 40);
    assert!(
        injected.load(Ordering::Relaxed) >= 20,
        "the server injected too rarely to test anything"
    );
}

#[test]
fn conflicting_content_lengths_fail_the_batch_instead_of_cutting_the_body() {
    let server = RawServer::start(|s, r| {
        let body = page(&r.target);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Length: 3\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes())?;
        s.write_all(body.as_bytes())
    });
    let dir = tempfile::tempdir().unwrap();
    let result = scrape(
        &server,
        5,
        &["-w", "1", "--retries", "1", "--backoff", "1ms"],
        dir.path(),
    );
    assert_exit(&result, 1);
    let out = dir.path().join("out");
    let entries = manifest(&out);
    assert_eq!(entries.len(), 5);
    for entry in &entries {
        let error = entry["error"].as_str().unwrap_or_default();
        assert!(error.contains("conflicting Content-Length"), "{entry}");
        assert!(entry["file"].is_null(), "{entry}");
    }
    assert_eq!(
        crate::common::file_names(&out),
        ["manifest.jsonl", "run.json"].map(String::from).into()
    );
}

/// A server that redirects `/start` to `/landing` on `localhost` (another origin than
/// the `127.0.0.1` the run asks for) and answers `/landing`.
fn cross_origin_redirector() -> RawServer {
    let port = Arc::new(Mutex::new(0u16));
    let own = Arc::clone(&port);
    let server = RawServer::start(move |s, r| {
        if r.target.starts_with("/start") {
            let to = format!("http://localhost:{}/landing", own.lock().unwrap());
            let head = format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n");
            s.write_all(head.as_bytes())
        } else {
            s.write_all(&ok_response(&r.target))
        }
    });
    *port.lock().unwrap() = server.port;
    server
}

/// The `Authorization`, `X-Api-Key` and `Host` a request came with.
type Seen = (Option<String>, Option<String>, Option<String>);

/// The headers each path received, from the server's log.
fn received(server: &RawServer) -> BTreeMap<String, Vec<Seen>> {
    let mut by_path: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for r in server.seen.lock().unwrap().iter() {
        let path = r.target.split('?').next().unwrap_or("").to_owned();
        let own = |name| r.header(name).map(str::to_owned);
        by_path.entry(path).or_default().push((
            own("authorization"),
            own("x-api-key"),
            own("host"),
        ));
    }
    by_path
}

#[test]
fn header_secrets_never_follow_a_redirect_to_another_origin() {
    for client in [&[][..], &["--compressed"][..]] {
        let server = cross_origin_redirector();
        let dir = tempfile::tempdir().unwrap();
        let url = server.url("/start?start={start}");
        let mut args = vec![
            "--url",
            &url,
            "--range",
            "0..2",
            "--batch",
            "1",
            "-o",
            "out",
            "-q",
            "-H",
            "Authorization: Bearer s3cret",
            "-H",
            "X-Api-Key: k3y",
        ];
        args.extend_from_slice(client);
        assert_exit(&run(&args, dir.path()), 0);
        let got = received(&server);
        for (auth, key, _) in &got["/start"] {
            assert_eq!(
                (auth.as_deref(), key.as_deref()),
                (Some("Bearer s3cret"), Some("k3y")),
                "{client:?}"
            );
        }
        assert_eq!(got["/landing"].len(), 2, "{client:?}");
        for (auth, key, host) in &got["/landing"] {
            assert!(
                host.as_deref().is_some_and(|h| h.starts_with("localhost")),
                "{host:?}"
            );
            assert_eq!(
                (auth, key),
                (&None, &None),
                "{client:?}: a secret reached localhost"
            );
        }
        // Trusted on purpose: they go along.
        let server = cross_origin_redirector();
        let url = server.url("/start?start={start}");
        args[1] = &url;
        args.extend(["--location-trusted", "--overwrite"]);
        assert_exit(&run(&args, dir.path()), 0);
        for (auth, key, _) in &received(&server)["/landing"] {
            assert_eq!(
                (auth.as_deref(), key.as_deref()),
                (Some("Bearer s3cret"), Some("k3y")),
                "{client:?}"
            );
        }
    }
}

/// Scrapes `0..n` from `server` in batches of 1, all `n` at once on one worker with no
/// retry, plus `extra`; returns the run's output and the peak resident memory (VmHWM)
/// of its workers in KiB, sampled until the run ends. `limit_kib` sets an
/// address-space limit on the run, as `ulimit -v` does.
fn watch_workers(
    server: &RawServer,
    n: u64,
    extra: &[&str],
    cwd: &Path,
    limit_kib: Option<u64>,
) -> (std::process::Output, u64) {
    let url = server.url("/p?start={start}");
    let (range, c) = (format!("0..{n}"), n.to_string());
    let mut args = vec![
        "--url",
        &url,
        "--range",
        &range,
        "--batch",
        "1",
        "-o",
        "out",
        "-q",
        "-w",
        "1",
        "-c",
        &c,
        "--retries",
        "0",
        // The servers write what a case needs to every request: robots.txt is not
        // the case (tests/robots.rs is).
        "--robots",
        "ignore",
    ];
    args.extend_from_slice(extra);
    let mut cmd = match limit_kib {
        // Address-space limit for the run and its workers, as `ulimit -v` sets it.
        Some(kib) => {
            let mut sh = std::process::Command::new("sh");
            sh.arg("-c")
                .arg(format!("ulimit -v {kib} && exec \"$0\" \"$@\""))
                .arg(env!("CARGO_BIN_EXE_coordinator"))
                .args(args);
            sh
        }
        None => {
            let mut c = coordinator();
            c.args(args);
            c
        }
    };
    cmd.current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (peak, done) = (Arc::clone(&peak), Arc::clone(&done));
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                for worker in children_of(pid) {
                    let status = std::fs::read_to_string(format!("/proc/{worker}/status"))
                        .unwrap_or_default();
                    let hwm = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmHWM:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                        .unwrap_or(0);
                    peak.fetch_max(hwm, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let output = crate::common::wait_output(child, crate::common::CHILD_LIMIT);
    done.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    (output, peak.load(Ordering::Relaxed))
}

#[test]
fn endless_trailers_and_chunk_extensions_fail_within_the_caps() {
    // Half the batches get an endless trailer, half an endless chunk extension.
    let server = RawServer::start(|s, r| {
        let n = r.batch();
        let start: &[u8] = if n.is_multiple_of(2) {
            b"0\r\nX-T: "
        } else {
            b"5;x="
        };
        s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")?;
        s.write_all(start)?;
        let filler = [b'a'; 64 * 1024];
        // Until the client hangs up, or 64 MiB per request at most.
        for _ in 0..1024 {
            s.write_all(&filler)?;
        }
        Ok(())
    });
    let dir = tempfile::tempdir().unwrap();
    let (result, peak_kib) = watch_workers(&server, 16, &[], dir.path(), None);
    assert_exit(&result, 1);
    for entry in manifest(&dir.path().join("out")) {
        let error = entry["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("over 64 KiB") || error.contains("over 4 KiB"),
            "{entry}"
        );
    }
    assert!(peak_kib < 200 * 1024, "a worker grew to {peak_kib} KiB");
}

#[test]
fn an_announced_length_is_not_memory_the_worker_takes() {
    // 60 MB announced to each of 20 requests at once, a few bytes sent: under a 1 GB
    // address-space limit a worker that reserved the claims would abort.
    let server = RawServer::start(|s, _| {
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 60000000\r\n\r\nhello")?;
        thread::sleep(Duration::from_millis(300));
        Err(std::io::ErrorKind::ConnectionAborted.into())
    });
    let dir = tempfile::tempdir().unwrap();
    let (result, _) = watch_workers(&server, 20, &[], dir.path(), Some(1_000_000));
    assert_exit(&result, 1);
    let entries = manifest(&dir.path().join("out"));
    assert_eq!(entries.len(), 20);
    for entry in entries {
        let error = entry["error"].as_str().unwrap_or_default();
        assert!(error.contains("closed inside the response"), "{entry}");
    }
}

#[test]
fn a_reset_before_the_answer_is_reported_as_a_reset() {
    let server = RawServer::start(|s, _| {
        // SO_LINGER 0: close sends a RST instead of a FIN.
        socket2::SockRef::from(&*s).set_linger(Some(Duration::ZERO))?;
        Err(std::io::ErrorKind::ConnectionReset.into())
    });
    let dir = tempfile::tempdir().unwrap();
    let result = scrape(&server, 1, &["--retries", "0"], dir.path());
    assert_exit(&result, 1);
    let entry = &manifest(&dir.path().join("out"))[0];
    assert!(
        entry["error"]
            .as_str()
            .unwrap_or_default()
            .contains("reset"),
        "{entry}"
    );
}

#[test]
fn endless_bodies_wait_for_the_body_budget_instead_of_growing_the_worker() {
    // Sixteen endless bodies at once. Without a budget each grows to --max-body
    // (16 x 32 MiB); with one, the worker holds the budget plus one overdraft.
    let server = RawServer::start(|s, _| {
        s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
        let filler = [b'x'; 64 * 1024];
        for _ in 0..(40 * 16) {
            s.write_all(&filler)?;
        }
        Ok(())
    });
    let dir = tempfile::tempdir().unwrap();
    let (result, peak_kib) = watch_workers(
        &server,
        16,
        &[
            "--timeout",
            "120s",
            "--max-body",
            "32MiB",
            "--body-budget",
            "32MiB",
        ],
        dir.path(),
        None,
    );
    assert_exit(&result, 1);
    let entries = manifest(&dir.path().join("out"));
    assert_eq!(entries.len(), 16);
    for entry in entries {
        let error = entry["error"].as_str().unwrap_or_default();
        assert!(error.contains("over --max-body"), "{entry}");
    }
    // Budget + one overdraft = 64 MiB of bodies, plus the process itself.
    assert!(peak_kib < 110 * 1024, "a worker grew to {peak_kib} KiB");
    assert!(
        peak_kib > 32 * 1024,
        "the bodies never reached the budget ({peak_kib} KiB)"
    );
}
