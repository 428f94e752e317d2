//! `--refresh`: a finished run fetched again with `If-None-Match` / `If-Modified-Since`
//! from the validators its manifest stored, against the built-in server (which tags its
//! pages) and nginx (whose static files carry both validators). A 304 keeps the file
//! as it is (same inode, same mtime), a 200 replaces it, a failure leaves it.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::common::{
    self, CHILD_LIMIT, Nginx, Server, assert_exit, coordinator, eventually, manifest,
    manifest_lines, output_of, run, send_signal, spawn_piped,
};

/// Each file of `out` but the manifest and run.json: (inode, mtime in ns, bytes).
fn snapshot(out: &Path) -> BTreeMap<String, (u64, i128, Vec<u8>)> {
    common::file_names(out)
        .into_iter()
        .filter(|name| name != "manifest.jsonl" && name != "run.json")
        .map(|name| {
            let path = out.join(&name);
            let meta = fs::symlink_metadata(&path).unwrap();
            let mtime = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
            (name, (meta.ino(), mtime, fs::read(&path).unwrap()))
        })
        .collect()
}

/// The `refresh` object of a `--json` summary: changed, unchanged, failed.
fn refreshed(stdout: &[u8]) -> (u64, u64, u64) {
    let summary: serde_json::Value = serde_json::from_slice(stdout).expect("a JSON summary");
    let counts = &summary["refresh"];
    let n = |k: &str| counts[k].as_u64().unwrap_or_else(|| panic!("{summary}"));
    (n("changed"), n("unchanged"), n("failed"))
}

/// Lines of the manifest by batch index; fails on a batch with two lines.
fn lines_by_index(out: &Path) -> BTreeMap<u64, serde_json::Value> {
    let lines = manifest(out);
    let count = lines.len();
    let by_index: BTreeMap<u64, serde_json::Value> = lines
        .into_iter()
        .map(|l| (l["index"].as_u64().unwrap(), l))
        .collect();
    assert_eq!(by_index.len(), count, "one manifest line per batch");
    by_index
}

#[test]
fn a_refresh_where_nothing_changed_keeps_every_file_untouched_on_every_client_path() {
    let dir = tempfile::tempdir().unwrap();
    let first = run(&["-o", "out", "--range", "0..200", "-w", "2"], dir.path());
    assert_exit(&first, 0);
    let out = dir.path().join("out");
    let tags: BTreeMap<u64, serde_json::Value> = lines_by_index(&out)
        .into_iter()
        .map(|(i, l)| (i, l["etag"].clone()))
        .collect();
    assert!(tags.values().all(|t| t.is_string()), "{tags:?}");
    let before = snapshot(&out);
    assert_eq!(before.len(), 20);
    // The built-in target is started anew on another port each time: the plan is the
    // same, and so are its pages.
    for client in [&[][..], &["--http2"], &["--compressed"]] {
        let mut cmd = coordinator();
        cmd.args(["--refresh", "-o", "out", "--json", "-w", "2"])
            .args(client)
            .current_dir(dir.path());
        let again = output_of(&mut cmd);
        assert_exit(&again, 0);
        assert_eq!(refreshed(&again.stdout), (0, 20, 0), "{client:?}");
        for (i, line) in lines_by_index(&out) {
            assert_eq!(line["refresh"], "unchanged", "{client:?}: {line}");
            assert_eq!(line["status"], 304, "{client:?}: {line}");
            assert_eq!(
                line["etag"], tags[&i],
                "{client:?}: the validators are kept"
            );
            assert!(line["last_modified"].is_string(), "{line}");
        }
        assert_eq!(snapshot(&out), before, "{client:?}: files untouched");
    }
    assert_exit(&run(&["verify", "out"], dir.path()), 0);
}

/// A scrape of `urls.txt` into `out` as `p{index}.json`. The servers' logs and stops
/// concern the pages alone: no robots.txt.
const SCRAPE_LIST: [&str; 8] = [
    "--urls",
    "urls.txt",
    "--name",
    "p{index}.json",
    "-o",
    "out",
    "--robots",
    "ignore",
];

/// A URL list of pages of 10 coins: `(server, first coin)` a line.
fn url_list(pages: &[(&Server, u64)]) -> String {
    pages
        .iter()
        .map(|(server, start)| format!("{}/api/tickers/?start={start}&limit=10\n", server.base))
        .collect()
}

#[test]
fn a_refresh_replaces_the_pages_that_changed_and_keeps_the_file_of_one_that_fails() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    let same = Server::start(&["--coins", "1000"]);
    let pages: Vec<(&Server, u64)> = (0..6).map(|i| (&same, i * 10)).collect();
    fs::write(&list, url_list(&pages)).unwrap();
    let scrape = SCRAPE_LIST;
    assert_exit(&run(&scrape, dir.path()), 0);
    let out = dir.path().join("out");
    let before = snapshot(&out);

    // Over HTTP/1.1, byte for byte: the server answers a tag it sent with a bare 304.
    let first = lines_by_index(&out);
    let tag = first[&0]["etag"].as_str().unwrap().to_owned();
    let (head, body) = same.get(
        "/api/tickers/?start=0&limit=10",
        &format!("If-None-Match: {tag}\r\n"),
    );
    assert!(head.starts_with("HTTP/1.1 304 Not Modified\r\n"), "{head}");
    assert!(head.contains(&format!("etag: {tag}")), "{head}");
    assert!(body.is_empty());

    // The last three pages now come from a server with more coins: other bytes.
    let more = Server::start(&["--coins", "2000"]);
    let pages: Vec<(&Server, u64)> = (0..6)
        .map(|i| (if i < 3 { &same } else { &more }, i * 10))
        .collect();
    fs::write(&list, url_list(&pages)).unwrap();
    let refresh = [
        "--refresh",
        "-o",
        "out",
        "--json",
        "--retries",
        "0",
        "--robots",
        "ignore",
    ];
    let again = run(&refresh, dir.path());
    assert_exit(&again, 0);
    assert_eq!(refreshed(&again.stdout), (3, 3, 0));
    let after = snapshot(&out);
    let lines = lines_by_index(&out);
    for i in 0..6u64 {
        let name = format!("p{i}.json");
        if i < 3 {
            assert_eq!(after[&name], before[&name], "page {i} untouched");
            assert_eq!(lines[&i]["refresh"], "unchanged");
        } else {
            let (ino, _, bytes) = &after[&name];
            assert_eq!(*bytes, tickers::tickers_json(i * 10, 10, 2000).into_bytes());
            assert_ne!(
                *ino, before[&name].0,
                "page {i} replaced, not rewritten in place"
            );
            assert_eq!(lines[&i]["refresh"], "changed");
            assert_eq!(lines[&i]["bytes"], bytes.len());
            assert_ne!(lines[&i]["etag"], first[&i]["etag"], "new validators");
        }
    }

    // The second server goes away: its pages fail, and keep what they had.
    let changed = snapshot(&out);
    drop(more);
    let failing = run(&refresh, dir.path());
    assert_exit(&failing, 1);
    assert_eq!(refreshed(&failing.stdout), (0, 3, 3));
    assert_eq!(snapshot(&out), changed, "no file touched");
    let lines = lines_by_index(&out);
    for i in 3..6u64 {
        let line = &lines[&i];
        assert_eq!(line["refresh"], "failed", "{line}");
        assert_eq!(line["file"], format!("p{i}.json"), "{line}");
        assert!(line["error"].is_string(), "{line}");
        assert_eq!(line["bytes"], changed[&format!("p{i}.json")].2.len());
        assert!(
            line["etag"].is_string(),
            "the validators of the kept file: {line}"
        );
    }
    // Every batch still has its whole file.
    assert_exit(&run(&["verify", "out"], dir.path()), 0);
}

#[test]
fn against_nginx_only_the_files_that_changed_are_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    // nginx's workers run as nobody: what they read must be readable by all.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let www = dir.path().join("www");
    fs::create_dir(&www).unwrap();
    let long_ago = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    let page = |i: usize, version: &str| format!("{{\"page\":{i},\"v\":\"{version}\"}}");
    for i in 0..12 {
        let path = www.join(format!("p{i}.json"));
        fs::write(&path, page(i, "one")).unwrap();
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
    }
    let log_format = "$status $request_uri $http_if_none_match";
    let nginx = Nginx::start(dir.path(), &www, "", "", log_format);
    let urls: String = (0..12)
        .map(|i| format!("http://127.0.0.1:{}/p{i}.json\n", nginx.port))
        .collect();
    fs::write(dir.path().join("urls.txt"), urls).unwrap();
    let scrape = SCRAPE_LIST;
    assert_exit(&run(&scrape, dir.path()), 0);
    let out = dir.path().join("out");
    let first = lines_by_index(&out);
    for line in first.values() {
        assert!(line["etag"].is_string(), "nginx tags its files: {line}");
        assert_eq!(
            line["last_modified"], "Sun, 13 Sep 2020 12:26:40 GMT",
            "{line}"
        );
    }
    let before = snapshot(&out);

    // Four files change on the server: one keeps its size, the others grow.
    let changed = [2usize, 5, 7, 11];
    for i in changed {
        let version = if i == 2 { "two" } else { "second" };
        fs::write(www.join(format!("p{i}.json")), page(i, version)).unwrap();
    }
    let log = dir.path().join("access.log");
    let logged = || fs::read_to_string(&log).unwrap_or_default();
    let seen = logged().lines().count();
    let refresh = ["--refresh", "-o", "out", "--json", "--robots", "ignore"];
    let again = run(&refresh, dir.path());
    assert_exit(&again, 0);
    assert_eq!(refreshed(&again.stdout), (4, 8, 0));
    // nginx writes a log line once it has answered: waited for, not assumed.
    assert!(eventually(Duration::from_secs(10), || logged()
        .lines()
        .count()
        >= seen + 12));
    let requests: Vec<String> = logged().lines().skip(seen).map(str::to_owned).collect();
    assert_eq!(requests.len(), 12, "{requests:?}");
    for i in 0..12usize {
        let status = if changed.contains(&i) { 200 } else { 304 };
        // nginx logs a quote as \x22.
        let tag = first[&(i as u64)]["etag"]
            .as_str()
            .unwrap()
            .replace('"', "\\x22");
        let want = format!("{status} /p{i}.json {tag}");
        assert!(requests.contains(&want), "{want} not in {requests:?}");
    }
    let after = snapshot(&out);
    let lines = lines_by_index(&out);
    for i in 0..12usize {
        let name = format!("p{i}.json");
        if changed.contains(&i) {
            let version = if i == 2 { "two" } else { "second" };
            assert_eq!(after[&name].2, page(i, version).into_bytes());
            assert_eq!(lines[&(i as u64)]["refresh"], "changed");
        } else {
            assert_eq!(after[&name], before[&name], "{name} untouched");
            assert_eq!(lines[&(i as u64)]["refresh"], "unchanged");
        }
    }
    // reqwest's path (--compressed) sends the conditions too: nothing changed since.
    let third = run(
        &["--refresh", "-o", "out", "--json", "--compressed"],
        dir.path(),
    );
    assert_exit(&third, 0);
    assert_eq!(refreshed(&third.stdout), (0, 12, 0));
    assert_eq!(snapshot(&out), after);
}

#[test]
fn a_refresh_killed_midway_is_tidied_by_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    assert_exit(&run(&["-o", "out", "--range", "0..200"], dir.path()), 0);
    let out = dir.path().join("out");
    let before = snapshot(&out);
    // One batch at a time, 300 ms each: six seconds for the whole refresh.
    let mut slow = coordinator();
    slow.args(["--refresh", "-o", "out", "-q", "-w", "1", "-c", "1"])
        .args(["--builtin-delay", "300..300"])
        .current_dir(dir.path());
    let mut child = spawn_piped(&mut slow);
    let appended = eventually(CHILD_LIMIT, || manifest_lines(&out) > 20);
    send_signal(child.id(), "KILL");
    let _ = common::exit_code_within(&mut child);
    assert!(appended, "no refresh line was written");
    // The batches it reached have two lines now, the old and the new.
    let lines = manifest_lines(&out);
    assert!(lines > 20 && lines < 40, "{lines} lines");
    let verify = run(&["verify", "out"], dir.path());
    assert_exit(&verify, 1);
    assert!(String::from_utf8_lossy(&verify.stderr).contains("more than one manifest line"));
    let again = run(&["--refresh", "-o", "out", "--json"], dir.path());
    assert_exit(&again, 0);
    assert_eq!(refreshed(&again.stdout), (0, 20, 0));
    assert_eq!(lines_by_index(&out).len(), 20);
    assert_eq!(snapshot(&out), before);
    assert_exit(&run(&["verify", "out"], dir.path()), 0);
}

#[test]
fn a_refresh_needs_a_finished_run_and_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |args: &[&str], why: &str| {
        let result = run(args, dir.path());
        assert_exit(&result, 2);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    };
    refused(
        &["--refresh", "-o", "none"],
        "--refresh: none holds no run to continue",
    );
    refused(&["--refresh", "-o", "-"], "--out -: writes no manifest");
    refused(&["--refresh", "--resume"], "cannot be used with");
    assert!(!dir.path().join("none").exists());
    assert_exit(&run(&["-o", "out", "--range", "0..100"], dir.path()), 0);
    // Three of its ten batches lose their lines: the run is not finished.
    let out = dir.path().join("out");
    let text = fs::read_to_string(out.join("manifest.jsonl")).unwrap();
    let kept: String = text.lines().take(7).map(|l| format!("{l}\n")).collect();
    fs::write(out.join("manifest.jsonl"), &kept).unwrap();
    let record = fs::read(out.join("run.json")).unwrap();
    refused(
        &["--refresh", "-o", "out"],
        "holds an unfinished run: 3 of its 10 batches have no manifest line; finish it with --resume first",
    );
    // Nothing was written.
    assert_eq!(
        fs::read_to_string(out.join("manifest.jsonl")).unwrap(),
        kept
    );
    assert_eq!(fs::read(out.join("run.json")).unwrap(), record);
    // Another plan is refused as a resume refuses it.
    refused(
        &["--refresh", "-o", "out", "--range", "0..50"],
        "holds a run of another plan",
    );
}
