//! The live display in a real terminal: runs in tmux (a pane of its own server, on a
//! socket in a temporary directory), the screen read with capture-pane during and
//! after the run, and every byte the program wrote recorded with pipe-pane.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{CHILD_LIMIT, Server, eventually, output_of};

/// The pane's size.
const COLUMNS: usize = 100;
const ROWS: usize = 40;
/// What a bar line of a scrape shows.
const SCRAPE_BAR: &str = " batches · ";
/// What a bar line of a load test shows.
const LOAD_BAR: &str = " req/s, p50 ";

/// A tmux server of the test's own, killed on drop, with one pane running `sh`.
struct Tmux {
    socket: PathBuf,
    /// Everything the pane's programs wrote, as pipe-pane recorded it.
    raw: PathBuf,
    dir: tempfile::TempDir,
}

impl Tmux {
    /// Runs `command` (a shell command line) as the pane's program; it starts once
    /// pipe-pane records, and the pane stays on screen after it ends.
    fn start(command: &str) -> Tmux {
        assert!(
            Command::new("tmux").arg("-V").output().is_ok(),
            "these tests need tmux (apt-get install tmux; scripts/test installs it)"
        );
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("tmux.sock");
        let raw = dir.path().join("raw");
        let tmux = Tmux { socket, raw, dir };
        // The shell outlives a Ctrl-C (its trap runs once the program ended) and
        // writes the program's exit status: waiting for tmux to notice a dead pane
        // is not reliable.
        let pane = format!(
            "trap : INT; tmux -S {} wait-for go && {{ {command}; echo $? > status; }}",
            tmux.socket.display()
        );
        tmux.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            &COLUMNS.to_string(),
            "-y",
            &ROWS.to_string(),
            "-c",
            &tmux.dir.path().to_string_lossy(),
            &pane,
        ]);
        tmux.run(&["set-option", "-g", "remain-on-exit", "on"]);
        let pipe = format!("cat >> {}", tmux.raw.display());
        tmux.run(&["pipe-pane", "-o", &pipe]);
        tmux.run(&["wait-for", "-S", "go"]);
        tmux
    }

    /// Runs a tmux command against this server; its stdout.
    fn run(&self, args: &[&str]) -> String {
        let out = output_of(
            Command::new("tmux")
                .arg("-S")
                .arg(&self.socket)
                .args(args)
                .env_remove("TMUX"),
        );
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The screen's lines and those scrolled off it, trailing blanks removed.
    fn screen(&self) -> Vec<String> {
        self.run(&["capture-pane", "-p", "-S", "-"])
            .lines()
            .map(|l| l.trim_end().to_owned())
            .collect()
    }

    /// Waits (at most [`CHILD_LIMIT`]) for the pane's program to end: its exit
    /// status as the shell saw it (128 + N after signal N).
    fn wait_done(&self) -> i32 {
        let file = self.path().join("status");
        let mut status = String::new();
        let ended = eventually(CHILD_LIMIT, || {
            status = std::fs::read_to_string(&file).unwrap_or_default();
            status.ends_with('\n')
        });
        assert!(
            ended,
            "the program still ran after {CHILD_LIMIT:?}:\n{}",
            self.screen().join("\n")
        );
        status.trim().parse().unwrap()
    }

    /// The recorded bytes, once they hold `last` (pipe-pane copies them a little later).
    fn raw_with(&self, last: &str) -> String {
        let mut text = String::new();
        let copied = eventually(Duration::from_secs(30), || {
            text =
                String::from_utf8_lossy(&std::fs::read(&self.raw).unwrap_or_default()).into_owned();
            text.contains(last)
        });
        assert!(copied, "pipe-pane never recorded {last:?}: {text:?}");
        text
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

/// Polls the screen until a line satisfies `ready`: that line.
fn wait_for_line(tmux: &Tmux, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let mut found = None;
    let mut last = Vec::new();
    let shown = eventually(CHILD_LIMIT, || {
        last = tmux.screen();
        found = last.iter().find(|l| ready(l)).cloned();
        found.is_some()
    });
    assert!(shown, "no {what} on the screen:\n{}", last.join("\n"));
    found.unwrap()
}

/// The number just before `unit` in `line`, e.g. 12 in "… 12/600 batches …".
fn number_before(line: &str, unit: &str) -> Option<f64> {
    let head = &line[..line.find(unit)?];
    let token = head.rsplit([' ', '/', '(']).next()?;
    token.replace(',', "").parse().ok()
}

/// How often the bar was drawn, from the recorded bytes: each draw writes the bar's
/// line once.
fn draws(raw: &str, marker: &str) -> usize {
    raw.matches(marker).count()
}

/// Decimals of every number right before a `/s` in `line` (`85.2/s`, `1,365/s`).
fn rate_decimals(line: &str) -> Vec<usize> {
    line.match_indices("/s")
        .filter_map(|(at, _)| {
            let head = &line[..at];
            let start = head
                .rfind(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
                .map_or(0, |i| i + 1);
            let number = &head[start..];
            (!number.is_empty()).then(|| number.split_once('.').map_or(0, |(_, d)| d.len()))
        })
        .collect()
}

/// The screen once the program ended, checked to hold no line with `bar` (the live
/// display was cleared); its lines and its text.
fn final_screen(tmux: &Tmux, bar: &str) -> (Vec<String>, String) {
    let screen = tmux.screen();
    let text = screen.join("\n");
    assert!(
        !screen.iter().any(|l| l.contains(bar)),
        "the live display is left on the screen:\n{text}"
    );
    (screen, text)
}

/// A live line leaves the last columns free (an echoed `^C` must not wrap).
fn assert_fits(line: &str) {
    assert!(
        line.chars().count() <= COLUMNS - 2,
        "the live line fills the terminal's width: {line:?}"
    );
}

/// The display was drawn at most ~10 times a second over `ran`, give or take `slack`
/// draws (the first, those after a message, this test's clock starting late), and at
/// least `least` times.
fn assert_calm(raw: &str, bar: &str, ran: Duration, slack: usize, least: usize) {
    let drawn = draws(raw, bar);
    let limit = (ran.as_secs_f64() * 10.0).ceil() as usize + slack;
    assert!(
        (least..=limit).contains(&drawn),
        "the live display was drawn {drawn} times in {ran:?} (at least {least}, at most {limit})"
    );
}

#[test]
fn a_scrape_in_a_terminal_draws_its_bar_calmly_prints_above_it_and_clears_it() {
    let bin = env!("CARGO_BIN_EXE_coordinator");
    // About 90 batches a second for 7 s, unless stopped.
    let tmux = Tmux::start(&format!(
        "{bin} --range 0..6000 --builtin-delay 20..60 -w 2 -c 2 -o out"
    ));

    // During: the bar, with rounded numbers, short of the last columns.
    let started = Instant::now();
    let bar = wait_for_line(&tmux, "progress bar with 30 batches done", |l| {
        l.contains(SCRAPE_BAR) && number_before(l, "/600").is_some_and(|n| n >= 30.0)
    });
    assert_fits(&bar);
    assert!(bar.contains(" · ETA "), "{bar}");
    let decimals = rate_decimals(&bar);
    assert!(
        !decimals.is_empty() && decimals.iter().all(|d| *d <= 1),
        "rate not rounded: {bar}"
    );

    // Ctrl-C: the terminal echoes ^C after the bar; the message goes above the bar.
    tmux.run(&["send-keys", "C-c"]);
    let code = tmux.wait_done();
    let ran = started.elapsed();

    let (screen, text) = final_screen(&tmux, SCRAPE_BAR);
    let stop = screen
        .iter()
        .find(|l| l.contains("stopped by SIGINT: handing out no more batches"))
        .unwrap_or_else(|| panic!("no stop message:\n{text}"));
    assert!(
        stop.starts_with("stopped by SIGINT") || stop.starts_with("^Cstopped by SIGINT"),
        "the message shares a line with the bar: {stop:?}"
    );
    assert!(!text.contains("failedstopped"), "{text}");
    let done = screen
        .iter()
        .find(|l| l.starts_with("done: "))
        .unwrap_or_else(|| panic!("no summary:\n{text}"));
    assert!(
        done.contains(" batches ok, 0 failed in "),
        "summary: {done}"
    );
    assert!(
        rate_decimals(done).iter().all(|d| *d <= 1),
        "summary rate not rounded: {done}"
    );
    assert!(
        text.contains("stopped by SIGINT: re-run the same command with --resume"),
        "{text}"
    );
    // Died by SIGINT, as a shell sees it.
    assert_eq!(code, 130);

    // At most ~10 redraws a second over the run.
    let raw = tmux.raw_with("--resume to fetch the rest");
    assert_calm(&raw, SCRAPE_BAR, ran, 5, 3);
}

#[test]
fn a_short_scrape_in_a_terminal_leaves_the_summary_and_no_bar() {
    let bin = env!("CARGO_BIN_EXE_coordinator");
    let started = Instant::now();
    // The built-in API without delay: a run of a fraction of a second.
    let tmux = Tmux::start(&format!("{bin} -w 2 -o out"));
    assert_eq!(tmux.wait_done(), 0);
    let ran = started.elapsed();
    let (screen, text) = final_screen(&tmux, SCRAPE_BAR);
    assert!(
        screen
            .iter()
            .any(|l| l.starts_with("done: 100 batches ok, 0 failed in ")),
        "{text}"
    );
    let raw = tmux.raw_with("manifest: ");
    assert_calm(&raw, SCRAPE_BAR, ran, 3, 0);
    assert!(!raw.contains("warning"), "{raw}");
    assert!(tmux.path().join("out/manifest.jsonl").exists());
}

#[test]
fn a_load_test_in_a_terminal_shows_its_live_line_and_clears_it() {
    let server = Server::start(&["--delay", "1..2"]);
    let bin = env!("CARGO_BIN_EXE_coordinator");
    let tmux = Tmux::start(&format!(
        "{bin} load -w 1 -c 2 -z 3s {}/api/tickers/?start=0",
        server.base
    ));
    let started = Instant::now();
    let live = wait_for_line(&tmux, "live load line", |l| l.contains(LOAD_BAR));
    assert_fits(&live);
    assert_eq!(tmux.wait_done(), 0);
    let ran = started.elapsed();
    let (screen, text) = final_screen(&tmux, LOAD_BAR);
    let requests = screen
        .iter()
        .find(|l| l.trim_start().starts_with("requests "))
        .unwrap_or_else(|| panic!("no report:\n{text}"));
    assert!(
        rate_decimals(requests).iter().all(|d| *d <= 1),
        "{requests}"
    );
    let raw = tmux.raw_with("generator");
    assert_calm(&raw, LOAD_BAR, ran, 3, 1);
}
