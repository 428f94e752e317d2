//! `--follow-next`: chains of pages linked by a cursor, a URL in the body or a `Link`
//! header, against the built-in `/api/cursor/` endpoint and a raw socket: every page
//! once, with the bytes the server serves, through a killed worker, a killed
//! coordinator and `--resume`; `verify` and its fixes; usage errors.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::common::*;
use crate::http_trust::RawServer;

/// Runs the binary with `args` in `dir`, checks that it exits with `code`, and
/// returns its stderr.
#[track_caller]
fn stderr_of(args: &[&str], dir: &Path, code: i32) -> String {
    let result = run(args, dir);
    assert_exit(&result, code);
    String::from_utf8_lossy(&result.stderr).into_owned()
}

/// The built-in server, and a directory to run in.
fn server_and_dir() -> (Server, tempfile::TempDir) {
    (Server::start(&[]), tempfile::tempdir().unwrap())
}

/// The cursor endpoint of `server`, for chain `{index}` of `pages` pages of `limit`.
fn cursor_url(server: &Server, pages: u64, limit: u64) -> String {
    format!(
        "{}/api/cursor/?chain={{index}}&pages={pages}&limit={limit}",
        server.base
    )
}

/// The arguments of a run of one chain per index in `range` of `url` (a template),
/// followed as `follow` says, into `out`, with `extra` flags.
fn chain_args<'a>(
    url: &'a str,
    range: &'a str,
    follow: &'a str,
    out: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "--url",
        url,
        "--range",
        range,
        "--batch",
        "1",
        "--follow-next",
        follow,
        "-o",
        out,
    ];
    args.extend_from_slice(extra);
    args
}

/// Checks that `out` holds exactly pages `1..=pages` of chains `0..chains` (of `limit`
/// coins each), every one once in the manifest with the bytes the server serves, the
/// last of each chain marked as its end.
#[track_caller]
fn assert_whole_chains(out: &Path, chains: u64, pages: u64, limit: u64) {
    let lines = manifest(out);
    let mut seen: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    for line in &lines {
        let key = (
            line["index"].as_u64().unwrap(),
            line["page"].as_u64().unwrap(),
        );
        *seen.entry(key).or_default() += 1;
        assert!(line["file"].is_string(), "{line}");
        let last = key.1 == pages;
        assert_eq!(line["chain_end"].as_str(), last.then_some("last"), "{line}");
        assert_eq!(line["next"].is_string(), !last, "{line}");
    }
    let want: BTreeMap<(u64, u64), usize> = (0..chains)
        .flat_map(|c| (1..=pages).map(move |p| ((c, p), 1)))
        .collect();
    assert_eq!(seen, want, "every page of every chain exactly once");
    assert_run_files(
        out,
        (0..chains).flat_map(|c| (1..=pages).map(move |p| format!("{c}-{p}.json"))),
    );
    for c in 0..chains {
        for p in 1..=pages {
            let body = fs::read(out.join(format!("{c}-{p}.json"))).unwrap();
            assert_eq!(
                body,
                tickers::cursor_page(c, p, pages, limit, 0).into_bytes(),
                "chain {c} page {p}"
            );
        }
    }
}

#[test]
fn a_cursor_a_url_in_the_body_and_a_link_header_are_each_followed_by_every_client() {
    let (server, dir) = server_and_dir();
    let base = cursor_url(&server, 6, 3);
    let with_cursor = format!("{base}&cursor={{cursor}}");
    // The lean HTTP/1.1 client, HTTP/2 and reqwest.
    let cases: [(&str, &str, &[&str], &str); 3] = [
        ("link", &base, &[], "lean"),
        ("json:/next", &base, &["--http2"], "http2"),
        (
            "json:/meta/next_cursor",
            &with_cursor,
            &["--compressed"],
            "compressed",
        ),
    ];
    for (follow, url, extra, name) in cases {
        let out = dir.path().join(name);
        let mut args = chain_args(url, "0..5", follow, name, &["-w", "2"]);
        args.extend_from_slice(extra);
        let stderr = stderr_of(&args, dir.path(), 0);
        assert!(
            stderr.contains("done: 30 pages ok")
                && stderr.contains("chains: 5 ended (5 at their last page, 0 loops"),
            "{follow}: {stderr}"
        );
        assert_whole_chains(&out, 5, 6, 3);
        let verify = run(&["verify", name], dir.path());
        assert_exit(&verify, 0);
    }
    // A bare cursor is recorded beside the URL it made, percent-encoded there.
    let lines = manifest(&dir.path().join("compressed"));
    let first = lines
        .iter()
        .find(|l| l["index"] == 1 && l["page"] == 1)
        .unwrap();
    let cursor = tickers::cursor_of(1, 2);
    assert_eq!(first["next_cursor"].as_str(), Some(cursor.as_str()));
    let encoded = cursor
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    assert!(
        first["next"]
            .as_str()
            .unwrap()
            .ends_with(&format!("&cursor={encoded}")),
        "{first}"
    );
}

#[test]
fn each_list_line_starts_a_chain_that_ends_at_its_last_page_a_loop_or_max_pages() {
    let (server, dir) = server_and_dir();
    let base = format!("{}/api/cursor/?limit=2", server.base);
    let list = format!(
        "{base}&chain=0&pages=3\n{base}&chain=1&pages=4&loop=2\n{base}&chain=2&pages=100\n"
    );
    fs::write(dir.path().join("urls.txt"), list).unwrap();
    let result = run(
        &[
            "--urls",
            "urls.txt",
            "--follow-next",
            "json:/next",
            "--max-pages",
            "5",
            "-o",
            "out",
            "--json",
        ],
        dir.path(),
    );
    assert_exit(&result, 0);
    let summary: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(
        summary["chains"],
        serde_json::json!({"last": 1, "loop": 1, "max_pages": 1, "failed": 0, "unfinished": 0})
    );
    let lines = manifest(&dir.path().join("out"));
    let ends: BTreeMap<u64, (u64, String)> = lines
        .iter()
        .filter(|l| l["chain_end"].is_string())
        .map(|l| {
            let end = l["chain_end"].as_str().unwrap().to_owned();
            (
                l["index"].as_u64().unwrap(),
                (l["page"].as_u64().unwrap(), end),
            )
        })
        .collect();
    assert_eq!(
        ends,
        BTreeMap::from([
            (0, (3, "last".to_owned())),
            (1, (4, "loop".to_owned())),
            (2, (5, "max-pages".to_owned())),
        ])
    );
    // The loop's last page names page 2, which its chain fetched: it is not fetched again.
    assert_eq!(lines.len(), 3 + 4 + 5);
    let loop_last = lines
        .iter()
        .find(|l| l["index"] == 1 && l["page"] == 4)
        .unwrap();
    let page2 = lines
        .iter()
        .find(|l| l["index"] == 1 && l["page"] == 2)
        .unwrap();
    assert_eq!(loop_last["next"], page2["url"]);
    let run_json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.path().join("out/run.json")).unwrap())
            .unwrap();
    assert_eq!(run_json["follow_next"], "json:/next");
    assert_eq!(run_json["max_pages"], 5);
    assert_eq!(run_json["name"], "{index}-{page}.json");
}

#[test]
fn fifty_chains_of_forty_pages_survive_a_killed_worker_and_a_killed_coordinator() {
    let server = Server::start(&["--delay", "5..25"]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let url = cursor_url(&server, 40, 5);
    let args = chain_args(&url, "0..50", "link", "out", &["-w", "2", "-c", "4"]);
    let child = spawn_piped(coordinator().args(args).current_dir(dir.path()));
    let pid = child.id();
    // A worker dies by SIGKILL while its chains are mid-way...
    assert!(eventually(CHILD_LIMIT, || manifest_lines(&out) >= 150));
    let workers = wait_for_workers(pid, 2);
    send_signal(workers[0], "KILL");
    // ...and is replaced; then the coordinator itself dies by SIGKILL.
    assert!(eventually(CHILD_LIMIT, || {
        children_of(pid).len() == 2 && !children_of(pid).contains(&workers[0])
    }));
    assert!(eventually(CHILD_LIMIT, || manifest_lines(&out) >= 600));
    assert!(
        process_alive(pid),
        "the run ended before it could be killed"
    );
    send_signal(pid, "KILL");
    let output = wait_output(child, CHILD_LIMIT);
    assert_eq!(code_of(&output.status), Some(128 + 9));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("stopped unexpectedly"), "{stderr}");
    // The workers go with their coordinator.
    assert!(eventually(CHILD_LIMIT, || workers
        .iter()
        .all(|w| !process_alive(*w))));
    let before = manifest_lines(&out);
    assert!(before < 2000, "{before} pages before the resume");

    let stderr = stderr_of(
        &["--resume", "-o", "out", "-w", "2", "-c", "4"],
        dir.path(),
        0,
    );
    assert!(stderr.contains("0 unfinished"), "{stderr}");
    assert_whole_chains(&out, 50, 40, 5);
    let verify = run(&["verify", "out"], dir.path());
    assert_exit(&verify, 0);
    let stderr = stderr_of(&["--resume", "-o", "out"], dir.path(), 0);
    assert!(
        stderr.contains("nothing to fetch: all 50 chains"),
        "{stderr}"
    );
}

#[test]
fn verify_names_unfinished_broken_and_failed_chains_and_its_commands_fix_them() {
    let (server, dir) = server_and_dir();
    let url = cursor_url(&server, 5, 2);
    let args = chain_args(&url, "0..4", "json:/next", "out", &["-q"]);
    let result = run(&args, dir.path());
    assert_exit(&result, 0);
    let out = dir.path().join("out");
    // Chain 1 loses its last two lines (it stands at page 3, which names page 4);
    // chain 2 loses the file of page 2.
    let text = fs::read_to_string(out.join("manifest.jsonl")).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| {
            !(l.starts_with("{\"index\":1,")
                && (l.contains("\"page\":4") || l.contains("\"page\":5")))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(out.join("manifest.jsonl"), kept).unwrap();
    fs::remove_file(out.join("2-2.json")).unwrap();

    let report = stderr_of(&["verify", "out"], dir.path(), 1);
    for want in [
        "ok: 2 chains, each complete, every page with its whole file",
        "gaps: 2 (0 not in any manifest, 0 failed, 1 with a missing or changed file, 1 unfinished, 0 in shards with no directory)",
        "chain 1 (shard 0/1, out): page 3 names a next page, which is not in the manifest",
        "chain 2 (shard 0/1, out): page 2: 2-2.json is missing",
    ] {
        assert!(report.contains(want), "{want}\n{report}");
    }
    let urls = run(&["verify", "out", "--print-urls"], dir.path());
    let urls = String::from_utf8_lossy(&urls.stdout);
    let cursor = |c: u64, p: u64| {
        tickers::cursor_of(c, p)
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    };
    let lines: Vec<&str> = urls.lines().collect();
    assert_eq!(lines.len(), 2, "{urls}");
    assert!(
        lines[0].contains("chain=1&") && lines[0].ends_with(&cursor(1, 4)),
        "{urls}"
    );
    assert!(
        lines[1].contains("chain=2&") && lines[1].ends_with(&cursor(2, 2)),
        "{urls}"
    );

    let fix = run(&["verify", "out", "--print-command"], dir.path());
    let script = String::from_utf8_lossy(&fix.stdout).into_owned();
    assert!(script.contains("--follow-next 'json:/next'"), "{script}");
    let fixed = output_of(
        Command::new("sh")
            .args(["-c", &script])
            .env("PATH", path_with_binary())
            .current_dir(dir.path()),
    );
    assert_exit(&fixed, 0);
    assert_whole_chains(&out, 4, 5, 2);
    assert_exit(&run(&["verify", "out"], dir.path()), 0);

    // A page whose next cannot be read fails (not stored), and verify says so.
    let tickers = format!("{}/api/tickers/?start={{start}}&limit=2", server.base);
    let args = chain_args(&tickers, "0..2", "json:/info", "bad", &["-q"]);
    let failed = run(&args, dir.path());
    assert_exit(&failed, 1);
    let line = &manifest(&dir.path().join("bad"))[0];
    assert_eq!(
        line["error"].as_str(),
        Some("--follow-next json:/info: the value there is an object, not a URL or a cursor")
    );
    let report = stderr_of(&["verify", "bad"], dir.path(), 1);
    assert!(
        report.contains("chain 0 (shard 0/1, bad): failed: page 1: --follow-next"),
        "{report}"
    );
}

#[test]
fn link_fields_are_joined_a_relative_next_resolves_after_redirects_and_a_failed_page_is_retried() {
    // Page 2 fails the first time it is asked for; page 3 ends the chain.
    let asked = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&asked);
    let server = RawServer::start(move |stream, request| {
        let reply = match request.target.as_str() {
            "/start" => "HTTP/1.1 302 Found\r\nLocation: /dir/a\r\nContent-Length: 0\r\n\r\n",
            "/dir/a" => {
                "HTTP/1.1 200 OK\r\nLink: </other>; rel=\"prev\"\r\nLink: <b?x=1,2>; rel=\"next\"\r\nContent-Length: 1\r\n\r\na"
            }
            "/dir/b?x=1,2" if count.fetch_add(1, Ordering::SeqCst) == 0 => {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
            }
            "/dir/b?x=1,2" => {
                "HTTP/1.1 200 OK\r\nLink: <c>; rel=\"next\", </dir/a>; rel=\"first\"\r\nContent-Length: 1\r\n\r\nb"
            }
            "/dir/c" => "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nc",
            _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        };
        stream.write_all(reply.as_bytes())
    });
    let dir = tempfile::tempdir().unwrap();
    let list = format!("{}\n", server.url("/start"));
    fs::write(dir.path().join("urls.txt"), list).unwrap();
    let args = [
        "--urls",
        "urls.txt",
        "--follow-next",
        "link",
        "-o",
        "out",
        "-q",
    ];
    let result = run(&args, dir.path());
    assert_exit(&result, 1);
    let out = dir.path().join("out");
    let lines = manifest(&out);
    assert_eq!(lines.len(), 2);
    let page2 = server.url("/dir/b?x=1,2");
    assert_eq!(lines[0]["next"].as_str(), Some(page2.as_str()));
    assert_eq!(
        (lines[1]["url"].as_str(), lines[1]["error"].as_str()),
        (Some(page2.as_str()), Some("HTTP 404 Not Found"))
    );
    let report = stderr_of(&["verify", "out"], dir.path(), 1);
    assert!(
        report.contains("failed: page 2: HTTP 404 Not Found"),
        "{report}"
    );
    // A resume leaves a failed chain alone; a retry fetches its failed page and goes on.
    assert_exit(&run(&["--resume", "-o", "out", "-q"], dir.path()), 0);
    assert_eq!(manifest_lines(&out), 2);
    assert_exit(&run(&["--retry-failed", "-o", "out", "-q"], dir.path()), 0);
    let lines = manifest(&out);
    let pages: Vec<(u64, &str)> = lines
        .iter()
        .map(|l| (l["page"].as_u64().unwrap(), l["url"].as_str().unwrap()))
        .collect();
    let page3 = server.url("/dir/c");
    assert_eq!(
        pages,
        [
            (1, server.url("/start").as_str()),
            (2, page2.as_str()),
            (3, page3.as_str())
        ]
    );
    assert_eq!(lines[2]["chain_end"], "last");
    assert_eq!(fs::read(out.join("0-2.json")).unwrap(), b"b");
    assert_exit(&run(&["verify", "out"], dir.path()), 0);
}

#[test]
fn a_page_too_long_to_search_on_the_event_loop_is_searched_beside_it() {
    // 1,500 coins a page: about 480 KB, over the 256 KiB read on the loop.
    let (server, dir) = server_and_dir();
    let url = cursor_url(&server, 3, 1500);
    let args = chain_args(&url, "0..2", "json:/next", "out", &["-q"]);
    assert_exit(&run(&args, dir.path()), 0);
    let out = dir.path().join("out");
    assert!(fs::metadata(out.join("1-2.json")).unwrap().len() > 256 * 1024);
    assert_whole_chains(&out, 2, 3, 1500);
}

#[test]
fn bad_follow_next_flags_are_one_line_usage_errors_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    // U is a URL template; each case's words are split at spaces.
    let url = "http://127.0.0.1:9/api/cursor/?chain={index}";
    for (words, says) in [
        (
            "--url U --range 0..2 --follow-next xml:/a",
            "--follow-next: `xml:/a` is neither",
        ),
        (
            "--url U --range 0..2 --follow-next json:next",
            "starts with / (RFC 6901)",
        ),
        (
            "--url U --range 0..2 --max-pages 3",
            "--max-pages: goes with --follow-next",
        ),
        (
            "--url U --range 0..2 --follow-next link --max-pages 0",
            "--max-pages: must be at least 1",
        ),
        ("--follow-next link", "--follow-next: needs --url or --urls"),
        (
            "--url http://h/?c={cursor} --range 0..2 --follow-next link",
            "`{cursor}` takes the cursor",
        ),
        (
            "--url http://h/?c={cursor} --range 0..2",
            "it needs --follow-next json:POINTER",
        ),
        (
            "--url http://h/?p={page} --range 0..2 --follow-next link",
            "`{page}` goes in --name",
        ),
        (
            "--url U --range 0..2 --follow-next link --name x{index}.json",
            "must contain {page}",
        ),
        (
            "--url U --range 0..2 --name {index}-{page}.json",
            "`{page}` numbers the pages of a chain",
        ),
    ] {
        let args: Vec<&str> = words
            .split(' ')
            .map(|w| if w == "U" { url } else { w })
            .collect();
        let mut all = args.to_vec();
        all.extend(["-o", "out"]);
        let stderr = stderr_of(&all, dir.path(), 2);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            !dir.path().join("out").exists(),
            "{args:?} wrote its output"
        );
    }
    // A resume must follow the chains as they were followed.
    let server = Server::start(&[]);
    let url = cursor_url(&server, 2, 1);
    let first = run(
        &[
            "--url",
            &url,
            "--range",
            "0..2",
            "--follow-next",
            "link",
            "-o",
            "out",
            "-q",
        ],
        dir.path(),
    );
    assert_exit(&first, 0);
    let other = run(
        &[
            "--url",
            &url,
            "--range",
            "0..2",
            "--follow-next",
            "json:/next",
            "-o",
            "out",
            "--resume",
        ],
        dir.path(),
    );
    assert_exit(&other, 2);
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(
        stderr.contains("--follow-next json:/next here, link in run.json"),
        "{stderr}"
    );
}
