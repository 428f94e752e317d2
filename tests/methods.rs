//! Methods and bodies (`-X`, `-d`, `--data-json`): what each client path sends for each
//! batch, what redirects make of it, which requests are retried, what a resume keeps,
//! and what a load test sends.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::common::*;
use crate::http_trust::RawServer;

/// A POST-paged API's request: a JSON body with the batch in it.
const JSON_BODY: &str = r#"{"offset":{start},"size":{limit}}"#;

/// What the echo route said about the request of batch file `name` in `out`.
fn echoed(out: &Path, name: &str) -> serde_json::Value {
    let text = fs::read(out.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn a_json_template_is_rendered_for_each_batch_on_every_client_path() {
    let server = Server::start(&[]);
    let url = format!("{}/echo?i={{index}}", server.base);
    for flags in [&[][..], &["--http2"][..], &["--compressed"][..]] {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["-X", "POST", "--data-json", JSON_BODY, "-w", "2", "-q"];
        args.extend_from_slice(flags);
        let result = scrape(&url, "0..95", &args, dir.path());
        assert_exit(&result, 0);
        let out = dir.path().join("out");
        for index in 0..10u64 {
            let (start, end) = (index * 10, (index * 10 + 10).min(95));
            let echo = echoed(&out, &format!("batch{start}-{end}.json"));
            let body = format!(r#"{{"offset":{start},"size":{}}}"#, end - start);
            assert_eq!(echo["body"], body, "{flags:?} batch {index}");
            assert_eq!(echo["method"], "POST", "{flags:?}");
            assert_eq!(echo["path"], "/echo", "{flags:?}");
            assert_eq!(echo["query"], format!("i={index}"), "{flags:?}");
            assert_eq!(echo["content_type"], "application/json", "{flags:?}");
            assert_eq!(echo["accept"], "application/json", "{flags:?}");
        }
    }
}

#[test]
fn a_form_from_a_file_is_a_post_with_its_content_type_unless_a_header_names_one() {
    let server = Server::start(&[]);
    let url = format!("{}/echo", server.base);
    let dir = tempfile::tempdir().unwrap();
    // The file is taken as it is, its newline too.
    fs::write(dir.path().join("form.txt"), "from={start}&n={limit}\n").unwrap();
    let result = scrape(&url, "0..20", &["-d", "@form.txt", "-q"], dir.path());
    assert_exit(&result, 0);
    let echo = echoed(&dir.path().join("out"), "batch10-20.json");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body"], "from=10&n=10\n");
    assert_eq!(echo["content_type"], "application/x-www-form-urlencoded");
    assert!(echo["accept"].is_null());
    // A --header's Content-Type wins, and -d parts are joined with `&`.
    let flags = [
        "-X",
        "PUT",
        "-d",
        "a={index}",
        "-d",
        "b=2",
        "-H",
        "Content-Type: text/plain",
        "--overwrite",
        "-q",
    ];
    let result = scrape(&url, "0..20", &flags, dir.path());
    assert_exit(&result, 0);
    let echo = echoed(&dir.path().join("out"), "batch10-20.json");
    assert_eq!(
        (&echo["method"], &echo["body"], &echo["content_type"]),
        (&"PUT".into(), &"a=1&b=2".into(), &"text/plain".into())
    );
}

/// A server that redirects `/303` and `/307` to `/landed` with that status, and
/// answers `/landed` with a page.
fn redirector() -> RawServer {
    RawServer::start(|s, r| {
        let status = match r.target.split('?').next() {
            Some("/303") => "303 See Other",
            Some("/307") => "307 Temporary Redirect",
            _ => return s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        };
        let answer = format!("HTTP/1.1 {status}\r\nLocation: /landed\r\nContent-Length: 0\r\n\r\n");
        s.write_all(answer.as_bytes())
    })
}

#[test]
fn a_303_turns_a_post_into_a_get_and_a_307_keeps_its_method_and_body() {
    for flags in [&[][..], &["--compressed"][..]] {
        let server = redirector();
        for (path, method, body, kind) in [
            ("/303", "GET", "", None),
            (
                "/307",
                "POST",
                "x=7",
                Some("application/x-www-form-urlencoded"),
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let url = server.url(&format!("{path}?s={{start}}"));
            let mut args = vec!["--batch", "1", "-d", "x={start}", "-q"];
            args.extend_from_slice(flags);
            let result = scrape(&url, "7..8", &args, dir.path());
            assert_exit(&result, 0);
            let seen = server.seen.lock().unwrap();
            let first = seen.iter().rfind(|r| r.target.starts_with(path)).unwrap();
            assert_eq!(
                (first.method.as_str(), &first.body[..]),
                ("POST", &b"x=7"[..])
            );
            let landed = seen.last().unwrap();
            assert_eq!(landed.target, "/landed", "{flags:?} {path}");
            assert_eq!(landed.method, method, "{flags:?} {path}");
            assert_eq!(landed.body, body.as_bytes(), "{flags:?} {path}");
            assert_eq!(landed.header("content-type"), kind, "{flags:?} {path}");
        }
    }
}

/// Requests a server answering 503 to everything got from a one-batch scrape with
/// `flags`, and the scrape's manifest line.
fn requests_against_a_failing_server(flags: &[&str]) -> (usize, serde_json::Value) {
    let server = RawServer::start(|s, _| {
        s.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
    });
    let dir = tempfile::tempdir().unwrap();
    // Requests to the batch alone are counted (a 503 robots.txt would skip it).
    let mut args = vec![
        "--batch",
        "1",
        "--retries",
        "3",
        "--backoff",
        "1ms",
        "-q",
        "--robots",
        "ignore",
    ];
    args.extend_from_slice(flags);
    let result = scrape(&server.url("/p?s={start}"), "0..1", &args, dir.path());
    assert_exit(&result, 1);
    let line = manifest(&dir.path().join("out")).remove(0);
    let count = server.seen.lock().unwrap().len();
    (count, line)
}

#[test]
fn a_post_that_fails_gets_one_attempt_unless_retries_are_asked_for() {
    let (count, line) = requests_against_a_failing_server(&["-X", "POST", "-d", "x"]);
    assert_eq!(count, 1, "a POST is sent once");
    assert_eq!(line["attempts"], 1);
    assert_eq!(line["status"], 503);
    assert_eq!(line["error"], "HTTP 503 Service Unavailable");
    let (count, line) = requests_against_a_failing_server(&["-d", "x", "--retry-non-idempotent"]);
    assert_eq!((count, &line["attempts"]), (4, &4.into()));
    // PUT is idempotent: retried as a GET is.
    let (count, _) = requests_against_a_failing_server(&["-X", "PUT", "-d", "x"]);
    assert_eq!(count, 4);
}

#[test]
fn a_compressed_answer_nobody_asked_for_is_fetched_again_only_for_a_repeatable_request() {
    // `{"ok":1}`, gzipped: the lean client hands such an answer to reqwest, which
    // sends the request again and decodes it.
    const GZIP: &[u8] = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03\xab\x56\xca\xcf\x56\xb2\x32\xac\x05\x00\x09\x8c\x54\x10\x08\x00\x00\x00";
    for (method, requests, exit) in [("PUT", 2, 0), ("POST", 1, 1)] {
        let server = RawServer::start(|s, _| {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
                GZIP.len()
            );
            s.write_all(&[head.as_bytes(), GZIP].concat())
        });
        let dir = tempfile::tempdir().unwrap();
        let flags = [
            "-X",
            method,
            "-d",
            "x={start}",
            "--batch",
            "1",
            "-q",
            "--robots",
            "ignore",
        ];
        let result = scrape(&server.url("/p?s={start}"), "0..1", &flags, dir.path());
        assert_exit(&result, exit);
        let seen = server.seen.lock().unwrap();
        assert_eq!(seen.len(), requests, "{method}");
        for request in seen.iter() {
            assert_eq!(
                (request.method.as_str(), &request.body[..]),
                (method, &b"x=0"[..])
            );
        }
        let line = manifest(&dir.path().join("out")).remove(0);
        if exit == 0 {
            assert_eq!(
                fs::read(dir.path().join("out/batch0-1.json")).unwrap(),
                br#"{"ok":1}"#
            );
        } else {
            let error = line["error"].as_str().unwrap();
            assert!(
                error.contains("--compressed") && error.contains("POST"),
                "{error}"
            );
        }
    }
}

#[test]
fn bad_methods_and_bodies_are_usage_errors_before_anything_is_written() {
    let server = Server::start(&[]);
    let url = format!("{}/echo", server.base);
    let cases: [(&[&str], &str); 6] = [
        (&["-X", "PO ST"], "--request: `PO ST` is not an HTTP method"),
        (&["-X", "CONNECT"], "--request"),
        (&["-d", "@missing.txt"], "--data: cannot read missing.txt"),
        (
            &["--data-json", r#"{"a":{stat}}"#],
            "unknown placeholder `{stat}`",
        ),
        (&["-d", "x", "--data-json", "{}"], "cannot be used with"),
        (&["-X", "HEAD", "-d", "x"], "a HEAD request has no body"),
    ];
    for (flags, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        let result = scrape(&url, "0..10", flags, dir.path());
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(2), "{flags:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{flags:?}: {stderr}");
        assert!(stderr.contains(needle), "{flags:?}: {stderr}");
        assert!(!dir.path().join("out").exists(), "{flags:?} wrote out/");
    }
    let dir = tempfile::tempdir().unwrap();
    let result = run(&["load", &url, "-d", "@missing.txt"], dir.path());
    assert_exit(&result, 2);
    let result = run(&["load", &url, "-d", "n={start}"], dir.path());
    assert_exit(&result, 2);
    assert!(String::from_utf8_lossy(&result.stderr).contains("--url TEMPLATE"));
}

#[test]
fn a_resume_alone_sends_the_recorded_method_and_body_and_refuses_others() {
    let server = Server::start(&[]);
    let url = format!("{}/echo?s={{start}}", server.base);
    let dir = tempfile::tempdir().unwrap();
    let result = scrape(&url, "0..30", &["--data-json", JSON_BODY, "-q"], dir.path());
    assert_exit(&result, 0);
    let out = dir.path().join("out");
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(
        (&record["method"], &record["data_json"]),
        (&"POST".into(), &JSON_BODY.into())
    );
    fs::remove_file(out.join("batch10-20.json")).unwrap();
    let result = run(&["--resume", "-o", "out", "-q"], dir.path());
    assert_exit(&result, 0);
    let echo = echoed(&out, "batch10-20.json");
    assert_eq!(echo["body"], r#"{"offset":10,"size":10}"#);
    assert_eq!(
        (&echo["method"], &echo["content_type"]),
        (&"POST".into(), &"application/json".into())
    );
    for (flags, needle) in [
        (
            &["-X", "PUT"][..],
            "-X/--request PUT here, POST in run.json",
        ),
        (
            &["--data-json", "{}"][..],
            "--data-json a body of 2 bytes here, a body of 33 bytes in run.json",
        ),
        (
            &["-d", "x"][..],
            "--data a body of 1 bytes here, none in run.json",
        ),
    ] {
        let mut args = vec!["--resume", "-o", "out"];
        args.extend_from_slice(flags);
        let result = run(&args, dir.path());
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(needle), "{flags:?}: {stderr}");
    }
}

#[test]
fn load_sends_its_method_and_body_with_every_request() {
    // 200 only for the request asked for, rendered with the batch of its URL.
    let server = RawServer::start(|s, r| {
        let start = r.target.rsplit('=').next().unwrap_or("").to_owned();
        let ok = match r.target.split('?').next() {
            Some("/fixed") => r.method == "POST" && r.body == br#"{"n":1}"#,
            _ => r.method == "PATCH" && r.body == format!("s={start}&e={{x").as_bytes(),
        };
        let status = if ok { "200 OK" } else { "400 Bad Request" };
        s.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
    });
    let fixed = server.url("/fixed");
    let report = load_report(&[&fixed, "--data-json", r#"{"n":1}"#, "-c", "2", "-n", "20"]);
    assert_eq!(report["statuses"]["200"], 20, "{report}");
    let template = server.url("/p?s={start}");
    let flags = ["-X", "PATCH", "-d", "s={start}&e={x", "-c", "1", "-n", "8"];
    let report = load_report(&[&["--url", &template, "--range", "0..40"][..], &flags].concat());
    assert_eq!(report["statuses"]["200"], 8, "{report}");
}

/// The JSON report of a load test of one worker with `args`, which must pass.
fn load_report(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let all = [&["load", "-w", "1", "--json"][..], args].concat();
    let result = run(&all, dir.path());
    assert_exit(&result, 0);
    serde_json::from_slice(&result.stdout).unwrap()
}

#[test]
fn load_over_http2_sends_its_method_and_body_to_the_echo_route() {
    let server = Server::start(&[]);
    let url = format!("{}/echo", server.base);
    let flags = [
        "--http2",
        "--data-json",
        r#"{"n":1}"#,
        "-c",
        "1",
        "-n",
        "10",
    ];
    let report = load_report(&[&[url.as_str()][..], &flags].concat());
    assert_eq!(report["statuses"]["200"], 10, "{report}");
    // Every answer is the echo of exactly this request.
    let echo = serde_json::json!({
        "method": "POST",
        "path": "/echo",
        "query": null,
        "content_type": "application/json",
        "accept": "application/json",
        "body": r#"{"n":1}"#,
        "proxy_authorization": false,
    });
    assert_eq!(report["bytes"], 10 * echo.to_string().len(), "{report}");
}
