//! End-to-end tests: the real `coordinator` binary, real worker processes, real HTTP over
//! loopback sockets, real files.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use crate::common::*;

const COINS: u64 = 1_000_000_000;

#[test]
fn two_workers_scrape_ten_thousand_items_into_one_thousand_exact_files() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let url = server.tickers_template();
    let result = run(
        &[
            "--workers",
            "2",
            "--url",
            &url,
            "--range",
            "0..10000",
            "--batch",
            "10",
            "--out",
            out.to_str().unwrap(),
        ],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(0), "{stderr}");

    let names = file_names(&out);
    let expected: BTreeSet<String> = (0..1000)
        .map(|i| format!("batch{}-{}.json", i * 10, i * 10 + 10))
        .chain(["manifest.jsonl".to_owned(), "run.json".to_owned()])
        .collect();
    assert_eq!(
        names, expected,
        "exactly the batch files and the manifest, no temp files"
    );

    for i in 0..1000u64 {
        let body = fs::read(out.join(format!("batch{}-{}.json", i * 10, i * 10 + 10))).unwrap();
        assert_eq!(
            body,
            tickers::tickers_json(i * 10, 10, COINS).into_bytes(),
            "batch {i}"
        );
    }
    let (_, served) = server.get("/api/tickers/?start=4560&limit=10", "");
    assert_eq!(fs::read(out.join("batch4560-4570.json")).unwrap(), served);

    let lines = manifest(&out);
    assert_eq!(lines.len(), 1000);
    let indices: BTreeSet<u64> = lines.iter().map(|l| l["index"].as_u64().unwrap()).collect();
    assert_eq!(
        indices,
        (0..1000).collect(),
        "every batch once, no duplicates"
    );
    for line in &lines {
        assert_eq!(line["status"], 200);
        assert!(
            line["error"].is_null() && line["file"].is_string(),
            "{line}"
        );
        let file = out.join(line["file"].as_str().unwrap());
        assert_eq!(
            fs::metadata(file).unwrap().len(),
            line["bytes"].as_u64().unwrap()
        );
    }
    let by_worker: BTreeSet<u64> = lines
        .iter()
        .map(|l| l["worker"].as_u64().unwrap())
        .collect();
    assert_eq!(by_worker, BTreeSet::from([0, 1]), "both workers fetched");

    let pids = worker_pids(&stderr);
    assert_eq!(pids.len(), 2, "{stderr}");
    assert_ne!(pids[0], pids[1]);
    assert!(pids.iter().all(|&p| p != std::process::id() && p != 0));
    assert!(
        eventually(Duration::from_secs(5), || pids
            .iter()
            .all(|&p| !process_alive(p))),
        "worker processes are gone after the run"
    );
}

#[test]
fn the_readme_default_command_scrapes_the_builtin_target_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let result = run(&[], dir.path());
    assert_exit(&result, 0);
    let out = dir.path().join("out");
    assert_eq!(manifest(&out).len(), 100);
    assert_eq!(
        fs::read(out.join("batch990-1000.json")).unwrap(),
        tickers::tickers_json(990, 10, COINS).into_bytes()
    );
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains("done: 100 batches ok, 0 failed"),
        "{stderr}"
    );
}

#[test]
fn a_url_list_from_stdin_is_fetched_one_file_per_line() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mut child = coordinator()
        .args([
            "--workers",
            "2",
            "--urls",
            "-",
            "--name",
            "page{index}.json",
            "--out",
            "out",
        ])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "# five pages\n").unwrap();
    for i in 0..5 {
        writeln!(
            stdin,
            "{}/api/tickers/?start={}&limit=3",
            server.base,
            i * 3
        )
        .unwrap();
    }
    drop(stdin);
    let result = wait_output(child, CHILD_LIMIT);
    assert_exit(&result, 0);
    let out = dir.path().join("out");
    for i in 0..5u64 {
        let body = fs::read(out.join(format!("page{i}.json"))).unwrap();
        assert_eq!(body, tickers::tickers_json(i * 3, 3, COINS).into_bytes());
    }
    assert_eq!(manifest(&out).len(), 5);
}

#[test]
fn a_url_list_file_with_failing_urls_exits_one_and_lists_the_failures() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    fs::write(
        &list,
        format!(
            "{0}/api/tickers/?start=0&limit=2\n{0}/no/such/page\n{0}/api/tickers/?limit=999999\n",
            server.base
        ),
    )
    .unwrap();
    let result = run(
        &["--urls", list.to_str().unwrap(), "--out", "out"],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(1), "{stderr}");
    let out = dir.path().join("out");
    let mut lines = manifest(&out);
    lines.sort_by_key(|l| l["index"].as_u64());
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[1]["status"], 404);
    assert_eq!(lines[2]["status"], 400);
    assert!(lines[1]["error"].as_str().unwrap().contains("404"));
    assert!(lines[1]["file"].is_null());
    assert_eq!(
        file_names(&out),
        BTreeSet::from(["batch0-1.json", "manifest.jsonl", "run.json"].map(String::from))
    );
    assert!(stderr.contains("1 batches ok, 2 failed"), "{stderr}");
}

#[test]
fn a_second_run_into_the_same_directory_needs_overwrite() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let url = server.tickers_template();
    let args = [
        "--url",
        url.as_str(),
        "--range",
        "0..50",
        "--out",
        "out",
        "--quiet",
    ];
    assert_eq!(run(&args, dir.path()).status.code(), Some(0));
    let again = run(&args, dir.path());
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--overwrite"));

    let smaller = [
        "--url",
        url.as_str(),
        "--range",
        "0..20",
        "--out",
        "out",
        "--quiet",
        "--overwrite",
    ];
    assert_eq!(run(&smaller, dir.path()).status.code(), Some(0));
    let out = dir.path().join("out");
    assert_eq!(manifest(&out).len(), 2);
    assert_eq!(
        file_names(&out),
        [
            "batch0-10.json",
            "batch10-20.json",
            "manifest.jsonl",
            "run.json"
        ]
        .map(String::from)
        .into(),
        "files of the old run are gone with its manifest"
    );
}

/// A server that answers every request with `{}` and a closed connection, and hands
/// over the head of each request it got (request line and headers).
fn capturing_server() -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
            if tx
                .send(String::from_utf8_lossy(&head).into_owned())
                .is_err()
            {
                return;
            }
        }
    });
    (format!("http://{addr}"), rx)
}

#[test]
fn headers_are_sent_but_never_written_to_the_manifest_or_stderr() {
    let (base, heads) = capturing_server();
    // The lean HTTP/1.1 client, and reqwest (which --compressed takes).
    for extra in [&[][..], &["--compressed"][..]] {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("{base}/p?start={{start}}&limit={{limit}}");
        let mut flags = vec![
            "-H",
            "Authorization: Bearer s3cr3t-token",
            "-H",
            "X-Extra: two",
            "--user-agent",
            "probe/1.0",
            // Three heads are read: those of the batches alone.
            "--robots",
            "ignore",
        ];
        flags.extend_from_slice(extra);
        let result = scrape(&url, "0..30", &flags, dir.path());
        assert_exit(&result, 0);
        let mut lines: Vec<String> = (0..3)
            .map(|_| heads.recv_timeout(CHILD_LIMIT).expect("a request came"))
            .map(|head| {
                head.lines().next().unwrap_or("").to_owned() + "\n" + &head.to_ascii_lowercase()
            })
            .collect();
        lines.sort();
        for (i, head) in lines.iter().enumerate() {
            let start = i * 10;
            assert!(
                head.starts_with(&format!("GET /p?start={start}&limit=10 HTTP/1.1\n")),
                "{extra:?}: {head}"
            );
            for header in [
                "\r\nauthorization: bearer s3cr3t-token\r\n",
                "\r\nx-extra: two\r\n",
                "\r\nuser-agent: probe/1.0\r\n",
            ] {
                assert!(head.contains(header), "{extra:?}: {header:?} in {head}");
            }
        }
        let manifest_text = fs::read_to_string(dir.path().join("out/manifest.jsonl")).unwrap();
        assert!(!manifest_text.contains("s3cr3t"));
        assert!(!String::from_utf8_lossy(&result.stderr).contains("s3cr3t"));
    }
}

#[test]
fn serve_exits_zero_when_stopped_by_a_signal() {
    for signal in ["INT", "TERM"] {
        let server = Server::start(&[]);
        let (head, _) = server.get("/api/tickers/?start=0&limit=1", "");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(server.stop_with(signal).code(), Some(0), "SIG{signal}");
    }
}

#[test]
fn bad_input_is_one_line_on_stderr_exit_two_and_nothing_created() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("empty.txt");
    fs::write(&list, "\n# nothing\n").unwrap();
    let empty_list = list.to_str().unwrap();
    let t = "http://127.0.0.1:9/?s={start}";
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--range", "10..5"], "reversed"),
        (vec!["--range", "5..5"], "empty"),
        (vec!["--range", "a..b"], "START..END"),
        (vec!["--batch", "0"], "--batch"),
        (vec!["--workers", "0"], "--workers"),
        (vec!["--workers", "100000"], "--workers"),
        (vec!["--concurrency", "0"], "--concurrency"),
        (
            vec!["--url", "http://127.0.0.1:9/?s={stat}", "--range", "0..10"],
            "{stat}",
        ),
        (vec!["--url", t], "--range"),
        (
            vec!["--url", "ftp://127.0.0.1/{start}", "--range", "0..10"],
            "scheme",
        ),
        (
            vec!["--url", t, "--urls", empty_list],
            "cannot be used with",
        ),
        (vec!["--urls", empty_list], "no URL"),
        (vec!["--urls", "/nonexistent/urls.txt"], "cannot read"),
        (vec!["--name", "../{start}.json"], "--name"),
        (vec!["--name", "same.json"], "--name"),
        (vec!["--timeout", "soon"], "--timeout"),
        (vec!["--header", "no-colon"], "--header"),
        (vec!["--header", "Bad Name: x"], "--header"),
        (vec!["--bogus"], "--bogus"),
        (vec!["--user-agent", "bad\u{7f}agent"], "--user-agent"),
        (
            vec!["--url", t, "--range", "0..10", "--builtin-delay", "1..2"],
            "cannot be used with",
        ),
        (vec!["--builtin-delay", "9..1"], "--builtin-delay"),
        (vec!["--retry-on", "500,abc"], "--retry-on"),
        (vec!["--max-body", "0"], "--max-body"),
        (vec!["--http2", "--http2-streams", "0"], "--http2-streams"),
        (vec!["--deadline", "0s"], "--deadline"),
        (vec!["--resume", "--overwrite"], "cannot be used with"),
        (vec!["--resume"], "no run to continue"),
    ];
    for (args, needle) in cases {
        let mut all = args.clone();
        all.extend(["--out", "out"]);
        let result = run(&all, dir.path());
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        let flag = stderr.split_whitespace().nth(1).unwrap_or("");
        assert_eq!(
            stderr.matches(flag).count(),
            1,
            "{args:?} repeats itself: {stderr}"
        );
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(
            !dir.path().join("out").exists(),
            "{args:?} created the out dir"
        );
    }
}

#[test]
fn an_out_dir_that_cannot_be_written_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("file"), b"x").unwrap();
    let result = run(&["--out", "file/sub"], dir.path());
    assert_eq!(result.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&result.stderr).starts_with("error: --out"));
}

#[test]
fn serve_answers_the_same_bytes_for_the_same_page() {
    let server = Server::start(&["--delay", "1..5"]);
    let (head, a) = server.get("/api/tickers/?start=100&limit=10", "");
    let (_, b) = server.get("/api/tickers/?start=100&limit=10", "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(a, b);
    assert_eq!(a, tickers::tickers_json(100, 10, COINS).into_bytes());
}

#[test]
fn serve_on_a_port_another_server_holds_is_a_usage_error() {
    let server = Server::start(&[]);
    let addr = server.base.trim_start_matches("http://");
    let dir = tempfile::tempdir().unwrap();
    let result = run(&["serve", "--addr", addr], dir.path());
    assert_exit(&result, 2);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.starts_with("error: --addr: cannot listen"),
        "{stderr}"
    );
    // The first server still answers, on every one of its event loops.
    for start in 0..20 {
        let (head, _) = server.get(&format!("/api/tickers/?start={start}&limit=1"), "");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
}

#[test]
fn compressed_responses_are_stored_decoded() {
    let server = Server::start(&["--compress"]);
    let (head, _) = server.get(
        "/api/tickers/?start=0&limit=50",
        "Accept-Encoding: gzip\r\n",
    );
    assert!(
        head.to_ascii_lowercase().contains("content-encoding: gzip"),
        "{head}"
    );
    let (head, _) = server.get("/api/tickers/?start=0&limit=50", "Accept-Encoding: br\r\n");
    assert!(
        head.to_ascii_lowercase().contains("content-encoding: br"),
        "{head}"
    );

    // Over HTTP/1.1, and over HTTP/2 (reqwest with prior knowledge).
    for extra in [&[][..], &["--http2"][..]] {
        let dir = tempfile::tempdir().unwrap();
        let url = server.tickers_template();
        let mut args = vec![
            "--url",
            &url,
            "--range",
            "0..500",
            "--batch",
            "50",
            "--out",
            "out",
            "--compressed",
        ];
        args.extend_from_slice(extra);
        let result = run(&args, dir.path());
        assert_exit(&result, 0);
        for i in 0..10u64 {
            let body = fs::read(dir.path().join(format!(
                "out/batch{}-{}.json",
                i * 50,
                i * 50 + 50
            )))
            .unwrap();
            assert_eq!(body, tickers::tickers_json(i * 50, 50, COINS).into_bytes());
        }
    }
}

#[test]
fn redirects_are_followed_up_to_the_limit() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    fs::write(
        &list,
        format!(
            "{0}/api/tickers/?start=0&limit=2&hops=2\n{0}/api/tickers/?start=0&limit=2&hops=3\n",
            server.base
        ),
    )
    .unwrap();
    let result = run(
        &[
            "--urls",
            list.to_str().unwrap(),
            "--max-redirects",
            "2",
            "--out",
            "out",
        ],
        dir.path(),
    );
    assert_exit(&result, 1);
    let mut lines = manifest(&dir.path().join("out"));
    lines.sort_by_key(|l| l["index"].as_u64());
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(
        fs::read(dir.path().join("out/batch0-1.json")).unwrap(),
        tickers::tickers_json(0, 2, COINS).into_bytes()
    );
    assert!(
        lines[1]["error"].as_str().unwrap().contains("redirect"),
        "{}",
        lines[1]
    );
}

/// The binary under `sh` with the open-file limits set first (`ulimit` needs no
/// privilege to lower them).
fn run_with_open_files(
    soft: u32,
    hard: u32,
    args: &[&str],
    cwd: &std::path::Path,
) -> std::process::Output {
    output_of(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -Sn {soft} && ulimit -Hn {hard} && exec \"$0\" \"$@\""
            ))
            .arg(env!("CARGO_BIN_EXE_coordinator"))
            .args(args)
            .current_dir(cwd),
    )
}

#[test]
fn more_connections_than_open_files_allow_is_a_usage_error_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let t = "http://127.0.0.1:9/?s={start}";
    let cases: [&[&str]; 3] = [
        &[
            "--url",
            t,
            "--range",
            "0..100000",
            "--concurrency",
            "1000",
            "--out",
            "out",
        ],
        // The built-in target holds the other end of every connection, in-process.
        &[
            "--workers",
            "2",
            "--concurrency",
            "200",
            "--range",
            "0..100000",
            "--out",
            "out",
        ],
        &[
            "load",
            "-w",
            "1",
            "-c",
            "1000",
            "-n",
            "10",
            "http://127.0.0.1:9/",
        ],
    ];
    for args in cases {
        let result = run_with_open_files(300, 300, args, dir.path());
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains("limit is 300"), "{args:?}: {stderr}");
        assert!(!dir.path().join("out").exists(), "{args:?}");
    }
    // A short list needs no more connections than it has URLs.
    let server = Server::start(&[]);
    let list = dir.path().join("urls.txt");
    fs::write(
        &list,
        format!("{}/api/tickers/?start=0&limit=2\n", server.base),
    )
    .unwrap();
    let result = run_with_open_files(
        300,
        300,
        &[
            "--urls",
            list.to_str().unwrap(),
            "--concurrency",
            "5000",
            "--retries",
            "0",
            "--out",
            "out",
        ],
        dir.path(),
    );
    assert_exit(&result, 0);
    assert_eq!(
        fs::read(dir.path().join("out/batch0-1.json")).unwrap(),
        tickers::tickers_json(0, 2, COINS).into_bytes()
    );
}

#[test]
fn a_low_soft_open_file_limit_is_raised_to_the_hard_one() {
    // 300 requests held open at once by one worker need more descriptors than the soft
    // limit of 100 gives; without raising it they would fail with EMFILE.
    let server = Server::start(&["--delay", "300..300"]);
    let dir = tempfile::tempdir().unwrap();
    let url = server.tickers_template();
    let result = run_with_open_files(
        100,
        2000,
        &[
            "--workers",
            "1",
            "--concurrency",
            "300",
            "--retries",
            "0",
            "--url",
            &url,
            "--range",
            "0..3000",
            "--out",
            "out",
            "--quiet",
        ],
        dir.path(),
    );
    assert_exit(&result, 0);
    assert_complete_run(&dir.path().join("out"), 3000);
}

#[test]
fn a_batch_file_that_cannot_be_written_is_a_failed_batch_and_leaves_no_temp_file() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // A non-empty directory where batch 1's file would go: the rename onto it fails.
    fs::create_dir_all(out.join("batch10-20.json")).unwrap();
    fs::write(out.join("batch10-20.json/x"), b"").unwrap();
    let result = scrape(
        &server.tickers_template(),
        "0..30",
        &["--quiet"],
        dir.path(),
    );
    assert_exit(&result, 1);
    let lines = manifest(&out);
    assert_eq!(lines.len(), 3);
    for line in &lines {
        let index = line["index"].as_u64().unwrap();
        if index == 1 {
            let error = line["error"].as_str().unwrap();
            assert!(error.starts_with("writing batch10-20.json: "), "{error}");
        } else {
            assert!(line["file"].is_string(), "{line}");
        }
    }
    let names = file_names(&out);
    assert!(names.iter().all(|n| !outdir::is_temp_file(n)), "{names:?}");
    assert!(names.contains("batch0-10.json") && names.contains("batch20-30.json"));
}
