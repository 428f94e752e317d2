//! End-to-end tests of what the coordinator takes in and leaves behind, run as a
//! hostile user would: huge batch indices, symlinks in --out, URL lines with spaces,
//! control characters or no end, passwords in URLs, bad manifest lines and signals.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread;

use crate::common::*;

/// Runs the binary with its address space capped at `limit_kib`, so that an allocation
/// sized by hostile input fails at once instead of relying on the machine's overcommit.
fn run_capped(limit_kib: u64, args: &[&str], cwd: &Path) -> Output {
    output_of(
        Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -v {limit_kib} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_coordinator"))
            .args(args)
            .current_dir(cwd),
    )
}

/// A raw HTTP/1.1 server on a free loopback port that answers every request with
/// `status` and an empty body, closing each connection, and sends each request's head
/// (request line and headers, exactly as received) on the channel.
fn raw_server(status: u16) -> (String, mpsc::Receiver<String>) {
    gated_server(status, Gate::open())
}

/// Holds answers back until it is opened.
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn open() -> Arc<Gate> {
        let gate = Gate::closed();
        gate.let_through();
        gate
    }

    fn closed() -> Arc<Gate> {
        Arc::new(Gate {
            open: Mutex::new(false),
            opened: Condvar::new(),
        })
    }

    fn let_through(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    fn wait(&self) {
        let open = self.open.lock().unwrap();
        drop(self.opened.wait_while(open, |open| !*open).unwrap());
    }
}

/// [`raw_server`], whose answers wait for `gate`; heads are sent on the channel as
/// they arrive.
fn gated_server(status: u16, gate: Arc<Gate>) -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let (tx, gate) = (tx.clone(), Arc::clone(&gate));
            thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n")
                    && reader.read_until(b'\n', &mut head).unwrap_or(0) > 0
                {}
                let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
                gate.wait();
                let reply = format!(
                    "HTTP/1.1 {status} Whatever\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(reply.as_bytes());
            });
        }
    });
    (base, rx)
}

/// The request heads `heads` has received so far, waiting up to a bound for `n`.
fn received(heads: &mpsc::Receiver<String>, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| heads.recv_timeout(CHILD_LIMIT).expect("a request came"))
        .collect()
}

/// A loopback port that nothing listens on: connections to it are refused at once.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Starts the binary with `args` in `cwd`, stdin piped for the test to write, stderr
/// piped for [`wait_output`].
fn with_stdin(args: &[&str], cwd: &Path) -> std::process::Child {
    coordinator()
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Names in `dir` that are temp files of the tool.
fn temp_files(dir: &Path) -> Vec<String> {
    file_names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".part"))
        .collect()
}

#[test]
fn a_shard_near_the_top_of_u64_resumes_and_verifies_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}/?start={{start}}", closed_port());
    let args = [
        "--url",
        &url,
        "--range",
        "0..18446744073709551615",
        "--batch",
        "1",
        "--shard",
        "1099511627775/1099511627776",
        "--workers",
        "1",
        "--retries",
        "0",
        "--deadline",
        "1s",
        "--grace",
        "1s",
        "--quiet",
        "--out",
        "out",
        // Failed batches are the case: with robots.txt unreachable they would be
        // skipped instead.
        "--robots",
        "ignore",
    ];
    let first = run_capped(4 << 20, &args, dir.path());
    assert_exit(&first, 4);
    let out = dir.path().join("out");
    let recorded = manifest_lines(&out);
    assert!(recorded > 0, "the first run recorded no batch");

    let mut resume = args.to_vec();
    resume.push("--resume");
    let again = run_capped(4 << 20, &resume, dir.path());
    assert_exit(&again, 4);
    assert!(manifest_lines(&out) > recorded, "the resume went on");
    assert_eq!(temp_files(&out), Vec::<String>::new());

    let verify = run_capped(4 << 20, &["verify", "out"], dir.path());
    let report = text_of(&verify.stderr);
    assert_exit(&verify, 1);
    assert!(report.contains("gaps: 18446744073709551"), "{report}");
    assert!(report.contains("in shards with no directory"), "{report}");
    assert!(report.contains("incomplete"), "{report}");
}

#[test]
fn an_invalid_utf8_manifest_line_costs_its_batch_only_on_verify_and_resume() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let url = server.tickers_template();
    let first = scrape(&url, "0..50", &["--workers", "1"], dir.path());
    assert_exit(&first, 0);
    let out = dir.path().join("out");
    let path = out.join("manifest.jsonl");
    let text = fs::read(&path).unwrap();
    let mut lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
    assert_eq!(lines.len(), 5);
    lines[1] = b"{\"index\":\xff\xfe not UTF-8}\n";
    fs::write(&path, lines.concat()).unwrap();

    let verify = run(&["verify", "out"], dir.path());
    let report = text_of(&verify.stderr);
    assert_exit(&verify, 1);
    assert!(report.contains("ok: 4 batches"), "{report}");
    assert_eq!(
        report.matches("skipped 1 unreadable line").count(),
        1,
        "{report}"
    );

    let resume = scrape(&url, "0..50", &["--workers", "1", "--resume"], dir.path());
    let stderr = text_of(&resume.stderr);
    assert_exit(&resume, 0);
    assert!(stderr.contains("done: 1 batches ok"), "{stderr}");
    assert_eq!(
        stderr.matches("skipped 1 unreadable line").count(),
        1,
        "{stderr}"
    );
    assert_complete_run(&out, 50);
}

#[test]
fn url_lines_and_templates_are_percent_encoded_before_the_request_line() {
    let (base, heads) = raw_server(200);
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    fs::write(&list, format!("{base}/a b\n")).unwrap();
    let result = run(
        &[
            "--urls",
            list.to_str().unwrap(),
            "--out",
            "out",
            "--workers",
            "1",
            // The heads read are those of the batches alone.
            "--robots",
            "ignore",
        ],
        dir.path(),
    );
    assert_exit(&result, 0);
    let head = &received(&heads, 1)[0];
    assert_eq!(head.lines().next(), Some("GET /a%20b HTTP/1.1"), "{head:?}");
    assert_eq!(
        manifest(&dir.path().join("out"))[0]["url"],
        format!("{base}/a%20b")
    );

    let template = format!("{base}/x y/{{start}}");
    let flags = ["--workers", "1", "--overwrite", "--robots", "ignore"];
    let result = scrape(&template, "0..1", &flags, dir.path());
    assert_exit(&result, 0);
    let head = &received(&heads, 1)[0];
    assert_eq!(
        head.lines().next(),
        Some("GET /x%20y/0 HTTP/1.1"),
        "{head:?}"
    );
}

#[test]
fn load_urls_are_percent_encoded_too_and_control_characters_refused() {
    let (base, heads) = raw_server(200);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{base}/a b");
    let result = run(
        &["load", "-w", "1", "-c", "1", "-n", "1", "--quiet", &url],
        dir.path(),
    );
    assert_exit(&result, 0);
    let head = &received(&heads, 1)[0];
    assert_eq!(head.lines().next(), Some("GET /a%20b HTTP/1.1"), "{head:?}");
    let bad = format!("{base}/a\rX-Injected: yes");
    let result = run(&["load", "-n", "1", &bad], dir.path());
    assert_exit(&result, 2);
    assert!(text_of(&result.stderr).contains("carriage return"));
}

#[test]
fn a_control_character_in_a_url_line_is_refused_before_anything_starts() {
    let (base, heads) = raw_server(200);
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    for (bad, why) in [
        (format!("{base}/c\rX-Injected: yes"), "carriage return"),
        (format!("{base}/a\tb"), "tab"),
        (format!("{base}/\u{1b}[2J"), "U+001B"),
    ] {
        fs::write(&list, format!("{base}/ok\n{bad}\n")).unwrap();
        let result = run(
            &["--urls", list.to_str().unwrap(), "--out", "out"],
            dir.path(),
        );
        let stderr = text_of(&result.stderr);
        assert_exit(&result, 2);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("line 2") && stderr.contains(why),
            "{stderr}"
        );
        assert!(!dir.path().join("out").exists(), "nothing is created");
    }
    let template = format!("{base}/{{start}}\rX-Injected: yes");
    let result = scrape(&template, "0..10", &[], dir.path());
    assert_exit(&result, 2);
    assert!(text_of(&result.stderr).contains("carriage return"));
    assert!(!dir.path().join("out").exists(), "nothing is created");
    assert!(heads.try_recv().is_err(), "no request was sent");
}

#[test]
fn a_url_line_over_64_kib_in_a_file_is_a_usage_error_naming_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    let long = format!("http://127.0.0.1:9/{}", "a".repeat(64 * 1024));
    fs::write(&list, format!("# list\nhttp://127.0.0.1:9/ok\n{long}\n")).unwrap();
    let result = run(
        &["--urls", list.to_str().unwrap(), "--out", "out"],
        dir.path(),
    );
    let stderr = text_of(&result.stderr);
    assert_exit(&result, 2);
    assert!(
        stderr.contains("line 3") && stderr.contains("longer than 65536 bytes"),
        "{stderr}"
    );
    assert!(stderr.len() < 1000, "the line itself is not echoed");
    assert!(!dir.path().join("out").exists());
}

/// Peak resident memory of `pid` in KiB, from /proc.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn an_endless_line_on_stdin_fails_its_batch_in_bounded_memory() {
    let (base, _heads) = raw_server(200);
    let dir = tempfile::tempdir().unwrap();
    let args = ["--workers", "1", "--urls", "-", "--out", "out", "--quiet"];
    let mut child = with_stdin(&args, dir.path());
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{base}/first").unwrap();
    // 128 MiB without a newline: once written, the coordinator has read it.
    let piece = vec![b'a'; 1 << 20];
    for _ in 0..128 {
        stdin.write_all(&piece).unwrap();
    }
    stdin.flush().unwrap();
    let peak = peak_rss_kib(child.id());
    writeln!(stdin, "\n{base}/after").unwrap();
    drop(stdin);
    let result = wait_output(child, CHILD_LIMIT);
    assert_exit(&result, 1);
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
    let mut lines = manifest(&dir.path().join("out"));
    lines.sort_by_key(|l| l["index"].as_u64());
    assert_eq!(lines.len(), 3);
    assert!(lines[0]["file"].is_string() && lines[2]["file"].is_string());
    let error = lines[1]["error"].as_str().unwrap();
    assert!(
        error.contains("line 2: the URL is longer than 65536 bytes"),
        "{error}"
    );
    assert!(lines[1]["url"].as_str().unwrap().len() < 1000);
}

#[test]
fn chunks_of_64_kib_urls_handed_out_again_are_cut_to_fit_a_frame() {
    // The server holds every answer back, so that the worker holds every job; once it
    // is killed, its jobs go out again at once in full chunks: 300 jobs of 64 KiB
    // (--concurrency 600, a list of unknown length) would be a 19 MiB frame, over the
    // 16 MiB limit, never sent.
    let gate = Gate::closed();
    let (base, heads) = gated_server(200, Arc::clone(&gate));
    let dir = tempfile::tempdir().unwrap();
    let path = "p".repeat(64 * 1024 - base.len() - 16);
    let lines = 330;
    let mut args = vec![
        "--urls", "-", "--out", "out", "--name", "u{index}", "--quiet",
    ];
    args.extend(["--workers", "1", "--concurrency", "600", "--retries", "0"]);
    // The server holds every answer back, robots.txt's too.
    args.extend(["--robots", "ignore"]);
    args.extend(["--stall-timeout", "20s", "--max-restarts", "1"]);
    let mut child = with_stdin(&args, dir.path());
    let mut stdin = child.stdin.take().unwrap();
    let writer = thread::spawn(move || {
        for i in 0..lines {
            writeln!(stdin, "{base}/{path}?{i}").unwrap();
        }
    });
    assert_eq!(received(&heads, lines).len(), lines, "every job was sent");
    writer.join().unwrap();
    let workers = children_of(child.id());
    assert_eq!(workers.len(), 1, "{workers:?}");
    send_signal(workers[0], "KILL");
    gate.let_through();
    let result = wait_output(child, CHILD_LIMIT);
    assert_exit(&result, 0);
    assert_eq!(manifest_lines(&dir.path().join("out")), lines);
}

#[test]
fn symlinks_in_the_output_directory_are_refused_never_followed() {
    let server = Server::start(&[]);
    let url = server.tickers_template();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let outside = dir.path().join("outside.txt");
    let link = |name: &str| {
        fs::create_dir_all(&out).unwrap();
        std::os::unix::fs::symlink(&outside, out.join(name)).unwrap();
    };

    // A manifest or run record that is a link: an error, and nothing written through.
    for name in ["manifest.jsonl", "run.json"] {
        fs::write(&outside, "").unwrap();
        link(name);
        let result = scrape(&url, "0..30", &[], dir.path());
        let stderr = text_of(&result.stderr);
        assert_exit(&result, 2);
        assert!(
            stderr.contains("symbolic link") && stderr.contains(name),
            "{stderr}"
        );
        assert_eq!(fs::read_to_string(&outside).unwrap(), "", "{name}");
        assert_eq!(file_names(&out).len(), 1, "nothing but the link: {name}");
        fs::remove_dir_all(&out).unwrap();
    }
    // A dangling one too.
    fs::remove_file(&outside).unwrap();
    link("run.json");
    assert_exit(&scrape(&url, "0..30", &[], dir.path()), 2);
    assert!(!outside.exists());
    fs::remove_dir_all(&out).unwrap();

    // The write probe is made afresh, never through a link planted at its name.
    fs::write(&outside, "precious").unwrap();
    link(".coordinator-write-test");
    assert_exit(&scrape(&url, "0..30", &[], dir.path()), 0);
    assert_eq!(fs::read_to_string(&outside).unwrap(), "precious");
    assert_complete_run(&out, 30);

    // A resume, and verify, refuse a manifest or record swapped for a link.
    for name in ["manifest.jsonl", "run.json"] {
        let kept = dir.path().join(format!("kept-{name}"));
        fs::rename(out.join(name), &kept).unwrap();
        fs::copy(&kept, &outside).unwrap();
        link(name);
        let resume = scrape(&url, "0..30", &["--resume"], dir.path());
        assert_exit(&resume, 2);
        assert!(text_of(&resume.stderr).contains("symbolic link"));
        assert_eq!(fs::read(&outside).unwrap(), fs::read(&kept).unwrap());
        let verify = run(&["verify", "out"], dir.path());
        assert_exit(&verify, if name == "run.json" { 2 } else { 3 });
        assert!(text_of(&verify.stderr).contains("symbolic link"));
        fs::remove_file(out.join(name)).unwrap();
        fs::rename(&kept, out.join(name)).unwrap();
    }
    assert_exit(&run(&["verify", "out"], dir.path()), 0);
}

#[test]
fn a_password_in_a_url_is_redacted_everywhere_but_in_the_request() {
    let (base, heads) = raw_server(404);
    let authority = base.trim_start_matches("http://");
    let template = format!("http://user:hunter2@{authority}/p?start={{start}}");
    let dir = tempfile::tempdir().unwrap();
    // The heads read are those of the batches alone (robots.txt goes without the
    // URL's user and password).
    let flags = ["--workers", "1", "--retries", "0", "--robots", "ignore"];
    let result = scrape(&template, "0..20", &flags, dir.path());
    assert_exit(&result, 1);
    // base64("user:hunter2")
    for head in received(&heads, 2) {
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains("authorization: basic dxnlcjpodw50zxiy"),
            "{head}"
        );
    }
    let stderr = text_of(&result.stderr);
    assert!(stderr.contains("user:***@"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    let out = dir.path().join("out");
    for name in ["manifest.jsonl", "run.json"] {
        let text = fs::read_to_string(out.join(name)).unwrap();
        assert!(
            text.contains("user:***@") && !text.contains("hunter2"),
            "{text}"
        );
    }
    let verify = run(&["verify", "--print-command", "out"], dir.path());
    assert_exit(&verify, 1);
    let printed = text_of(&verify.stdout) + &text_of(&verify.stderr);
    assert!(
        printed.contains("user:***@") && !printed.contains("hunter2"),
        "{printed}"
    );
    // The record holds no password, so a resume takes it again, whichever it is.
    let other = template.replace("hunter2", "other");
    let flags = ["--retry-failed", "--retries", "0", "--robots", "ignore"];
    let resume = scrape(&other, "0..20", &flags, dir.path());
    assert_exit(&resume, 1);
    for head in received(&heads, 2) {
        // base64("user:other")
        assert!(
            head.to_ascii_lowercase().contains("basic dxnlcjpvdghlcg=="),
            "{head}"
        );
    }
}

#[test]
fn sighup_stops_a_run_gracefully_like_sigterm() {
    let server = Server::start(&["--delay", "100..100"]);
    let url = server.tickers_template();
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--workers", "1", "--concurrency", "4"];
    let child = coordinator()
        .args(["--url", &url, "--range", "0..2000", "--out", "out"])
        .args(flags)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = dir.path().join("out");
    assert!(eventually(CHILD_LIMIT, || manifest_lines(&out) > 0));
    send_signal(child.id(), "HUP");
    let result = wait_output(child, CHILD_LIMIT);
    let stderr = text_of(&result.stderr);
    assert_exit(&result, 129);
    assert!(
        stderr.contains("stopped by SIGHUP") && stderr.contains("--resume"),
        "{stderr}"
    );
    assert!(manifest(&out).len() < 200, "stopped early");
    let mut resume = flags.to_vec();
    resume.push("--resume");
    assert_exit(&scrape(&url, "0..2000", &resume, dir.path()), 0);
    assert_complete_run(&out, 2000);
}

#[test]
fn no_more_workers_start_than_there_are_batches() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let result = scrape(
        &server.tickers_template(),
        "0..30",
        &["--workers", "64"],
        dir.path(),
    );
    assert_exit(&result, 0);
    let stderr = text_of(&result.stderr);
    assert_eq!(worker_pids(&stderr).len(), 3, "{stderr}");

    let list = dir.path().join("urls.txt");
    let urls = format!(
        "{0}/api/tickers/?start=0&limit=1\n{0}/api/tickers/?start=1&limit=1\n",
        server.base
    );
    fs::write(&list, urls).unwrap();
    let args = [
        "--urls",
        list.to_str().unwrap(),
        "--workers",
        "64",
        "--out",
        "list",
    ];
    let result = run(&args, dir.path());
    assert_exit(&result, 0);
    let stderr = text_of(&result.stderr);
    assert_eq!(worker_pids(&stderr).len(), 2, "{stderr}");
}
