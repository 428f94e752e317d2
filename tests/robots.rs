//! `--robots obey|ignore`: each host's robots.txt is fetched once per run by the
//! coordinator, whatever the number of workers, before any batch of that host goes
//! out; a batch it disallows is skipped (recorded, never fetched, no failure, never
//! fetched again by `--resume`); RFC 9309's reading of 4xx, 5xx, no answer and
//! redirects. Against the built-in server's `--robots-txt` and raw-socket servers
//! that count what they were asked.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::common::{Server, assert_exit, manifest, run};
use crate::http_trust::{RawServer, Request};

/// A raw 200 answer with `body`.
fn ok(s: &mut TcpStream, body: &str) -> std::io::Result<()> {
    write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A raw answer with `status` and no body (`extra` header lines, each ended by CRLF).
fn empty(s: &mut TcpStream, status: &str, extra: &str) -> std::io::Result<()> {
    write!(s, "HTTP/1.1 {status}\r\n{extra}Content-Length: 0\r\n\r\n")
}

/// The targets a server was asked for, in the order the requests arrived.
type Arrivals = Arc<Mutex<Vec<String>>>;

/// A server whose robots.txt is `robots`, and whose every other page is its own path;
/// and what it is asked for, noted as each request arrives (before it is answered).
fn server_with(robots: &'static str) -> (RawServer, Arrivals) {
    let arrivals = Arrivals::default();
    let log = Arc::clone(&arrivals);
    let server = RawServer::start(move |s, r| {
        log.lock().unwrap().push(r.target.clone());
        if r.target == "/robots.txt" {
            ok(s, robots)
        } else {
            ok(s, &r.target)
        }
    });
    (server, arrivals)
}

/// The targets a raw server was asked for (in the order it answered them).
fn targets(server: &RawServer) -> Vec<String> {
    let seen = server.seen.lock().unwrap();
    seen.iter().map(|r: &Request| r.target.clone()).collect()
}

/// Writes `urls` as a URL list in `dir`; its path.
fn url_list(dir: &Path, urls: &[String]) -> String {
    let path = dir.join("urls.txt");
    std::fs::write(&path, urls.join("\n") + "\n").unwrap();
    path.display().to_string()
}

/// The manifest lines of `out` by batch index: `Some(file)` for a stored batch,
/// `None` for a skipped one; any other line fails the test.
fn stored_or_skipped(out: &Path) -> std::collections::BTreeMap<u64, Option<String>> {
    manifest(out)
        .iter()
        .map(|line| {
            let index = line["index"].as_u64().unwrap();
            match (&line["file"], &line["skipped"]) {
                (serde_json::Value::String(file), serde_json::Value::Null) => {
                    (index, Some(file.clone()))
                }
                (serde_json::Value::Null, skipped) => {
                    assert_eq!(skipped, "robots", "{line}");
                    assert_eq!(line["attempts"], 0, "{line}");
                    (index, None)
                }
                _ => panic!("neither stored nor skipped: {line}"),
            }
        })
        .collect()
}

#[test]
fn robots_txt_is_fetched_once_per_host_before_any_batch_although_three_workers_run() {
    // Host a keeps everyone out of /private; host b keeps our product token out of
    // everything and lets every other crawler in.
    let (a, a_asked) = server_with("User-agent: *\nDisallow: /private\n");
    let (b, b_asked) =
        server_with("User-agent: otherbot\nDisallow:\n\nUser-agent: coordinator\nDisallow: /\n");
    let dir = tempfile::tempdir().unwrap();
    let urls: Vec<String> = (0..120)
        .map(|i| match i % 3 {
            0 => a.url(&format!("/public/{i}")),
            1 => a.url(&format!("/private/{i}")),
            _ => b.url(&format!("/any/{i}")),
        })
        .collect();
    let list = url_list(dir.path(), &urls);
    let result = run(
        &[
            "--urls",
            &list,
            "-o",
            "out",
            "-w",
            "3",
            "-c",
            "4",
            "--user-agent",
            "Coordinator/9.9 (tests)",
            "--json",
        ],
        dir.path(),
    );
    assert_exit(&result, 0);
    let summary: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(
        (summary["ok"].as_u64(), summary["failed"].as_u64()),
        (Some(40), Some(0))
    );
    assert_eq!(summary["skipped"], 80);
    assert_eq!(summary["robots"]["hosts"], 2);
    assert_eq!(summary["robots"]["with_rules"], 2);
    assert_eq!(summary["requests"], 40, "no request for a skipped batch");
    let workers = summary["workers"].as_array().unwrap();
    assert!(workers.len() == 3, "{summary}");
    // Counted server-side: one robots.txt each, asked before any page, with the run's
    // User-Agent; no disallowed page was ever asked for.
    for (server, asked, pages) in [(&a, &a_asked, 40), (&b, &b_asked, 0)] {
        let seen = asked.lock().unwrap().clone();
        assert_eq!(
            seen.first().map(String::as_str),
            Some("/robots.txt"),
            "{seen:?}"
        );
        let robots = seen.iter().filter(|t| *t == "/robots.txt").count();
        assert_eq!(robots, 1, "{seen:?}");
        assert_eq!(seen.len() - 1, pages, "{seen:?}");
        let log = server.seen.lock().unwrap();
        assert_eq!(log[0].header("user-agent"), Some("Coordinator/9.9 (tests)"));
    }
    assert!(targets(&a).iter().all(|t| !t.starts_with("/private")));
    let out = dir.path().join("out");
    let lines = stored_or_skipped(&out);
    assert_eq!(lines.len(), 120, "every batch once");
    for (i, line) in &lines {
        assert_eq!(line.is_some(), i % 3 == 0, "batch {i}: {line:?}");
    }

    // A resume fetches nothing again, and verify counts the run complete.
    let resumed = run(&["--resume", "-o", "out", "--json"], dir.path());
    assert_exit(&resumed, 0);
    assert_eq!(manifest(&out).len(), 120);
    assert_eq!(targets(&b).len(), 1, "no second robots.txt, no page");
    let verify = run(&["verify", "out"], dir.path());
    assert_exit(&verify, 0);
    let text = String::from_utf8_lossy(&verify.stderr);
    assert!(text.contains("skipped: 80 batches"), "{text}");
}

#[test]
fn two_built_in_servers_with_their_own_robots_txt_each_keep_their_rules_over_both_http_versions() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let odd = write(
        "odd.txt",
        "User-agent: *\nDisallow: /api/tickers/?start=1\n",
    );
    let none = write("none.txt", "User-agent: *\nDisallow: /\nCrawl-delay: 3\n");
    let first = Server::start(&["--robots-txt", &odd]);
    let second = Server::start(&["--robots-txt", &none]);
    let (head, body) = first.get("/robots.txt", "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, std::fs::read(&odd).unwrap());
    let mut urls: Vec<String> = (0..20)
        .map(|i| format!("{}/api/tickers/?start={i}&limit=2", first.base))
        .collect();
    urls.extend((0..5).map(|i| format!("{}/api/tickers/?start={i}&limit=2", second.base)));
    let list = url_list(dir.path(), &urls);
    for (out, http2) in [("h1", false), ("h2", true)] {
        let mut args = vec!["--urls", &list, "-o", out, "-w", "2", "--json"];
        if http2 {
            args.push("--http2");
        }
        let result = run(&args, dir.path());
        assert_exit(&result, 0);
        let summary: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
        assert_eq!(summary["robots"]["crawl_delays"], 1, "{summary}");
        let lines = stored_or_skipped(&dir.path().join(out));
        // `Disallow: /api/tickers/?start=1` is a prefix: start=1 and 10..=19 too.
        let fetched: Vec<u64> = lines
            .iter()
            .filter(|(_, file)| file.is_some())
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(fetched, [0, 2, 3, 4, 5, 6, 7, 8, 9], "{out}");
        assert_eq!(lines.len(), 25, "{out}");
    }
}

#[test]
fn server_errors_or_no_answer_disallow_everything_while_4xx_and_lost_redirects_allow_it() {
    let failing = RawServer::start(|s, r| match r.target.as_str() {
        "/robots.txt" => empty(s, "503 Service Unavailable", ""),
        target => ok(s, target),
    });
    // Closes the connection without a word: no answer at all.
    let silent = RawServer::start(|s, r| match r.target.as_str() {
        "/robots.txt" => Err(std::io::Error::other("hang up")),
        target => ok(s, target),
    });
    let missing = RawServer::start(|s, r| match r.target.as_str() {
        "/robots.txt" => empty(s, "404 Not Found", ""),
        target => ok(s, target),
    });
    // Two hops to the real file, which keeps everyone out of /x.
    let moved = RawServer::start(|s, r| match r.target.as_str() {
        "/robots.txt" => empty(s, "301 Moved Permanently", "Location: /a/robots.txt\r\n"),
        "/a/robots.txt" => empty(s, "302 Found", "Location: /b/robots.txt\r\n"),
        "/b/robots.txt" => ok(s, "User-agent: *\nDisallow: /x\n"),
        target => ok(s, target),
    });
    // Redirects forever: past five hops robots.txt is unavailable, as a 4xx is.
    let looping = RawServer::start(|s, r| match r.target.as_str() {
        t if t.ends_with("robots.txt") => empty(s, "302 Found", &format!("Location: /r{t}\r\n")),
        target => ok(s, target),
    });
    let dir = tempfile::tempdir().unwrap();
    let servers = [&failing, &silent, &missing, &moved, &looping];
    let urls: Vec<String> = servers
        .iter()
        .flat_map(|s| [s.url("/x/1"), s.url("/y/2")])
        .collect();
    let list = url_list(dir.path(), &urls);
    let mut args = vec!["--urls", &list];
    args.extend("-o out -w 2 --retries 1 --backoff 10ms".split(' '));
    let result = run(&args, dir.path());
    assert_exit(&result, 0);
    let stderr = String::from_utf8_lossy(&result.stderr);
    for server in [&failing, &silent] {
        let warned = format!("{}: ", server.url("/robots.txt"));
        assert!(stderr.contains(&warned), "{warned} in {stderr}");
    }
    assert!(stderr.contains("RFC 9309"), "{stderr}");
    assert!(stderr.contains("2 unreachable or failing"), "{stderr}");
    let lines = stored_or_skipped(&dir.path().join("out"));
    let stored: Vec<u64> = lines
        .iter()
        .filter(|(_, f)| f.is_some())
        .map(|(i, _)| *i)
        .collect();
    // failing 0 1, silent 2 3: skipped; missing 4 5: both; moved 6 7: /y only;
    // looping 8 9: both.
    assert_eq!(stored, [4, 5, 7, 8, 9]);
    for server in [&failing, &silent] {
        let seen = targets(server);
        assert!(seen.iter().all(|t| t == "/robots.txt"), "{seen:?}");
        assert_eq!(seen.len(), 2, "the first try and one retry: {seen:?}");
    }
    let hops = targets(&looping)
        .iter()
        .filter(|t| t.ends_with("robots.txt"))
        .count();
    assert_eq!(hops, 6, "the file and five redirects, once");
}

#[test]
fn robots_ignore_asks_for_no_robots_txt_and_fetches_every_batch() {
    let (closed, _) = server_with("User-agent: *\nDisallow: /\n");
    let dir = tempfile::tempdir().unwrap();
    let url = closed.url("/p?start={start}");
    let args = [
        "--url", &url, "--range", "0..30", "--batch", "3", "-o", "out", "--robots", "ignore",
    ];
    let result = run(&args, dir.path());
    assert_exit(&result, 0);
    let seen = targets(&closed);
    assert_eq!(seen.len(), 10, "{seen:?}");
    assert!(!seen.iter().any(|t| t == "/robots.txt"), "{seen:?}");
    assert!(
        stored_or_skipped(&dir.path().join("out"))
            .values()
            .all(Option::is_some)
    );

    // Obeyed, the same template skips every batch and still exits 0 (no failure).
    let result = run(
        &[
            "--url", &url, "--range", "0..30", "--batch", "3", "-o", "again",
        ],
        dir.path(),
    );
    assert_exit(&result, 0);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains("0 batches ok, 0 failed, 10 skipped (robots.txt)"),
        "{stderr}"
    );
    assert_eq!(targets(&closed).len(), 11, "one robots.txt more, no page");
    assert!(
        stored_or_skipped(&dir.path().join("again"))
            .values()
            .all(Option::is_none)
    );
}
