//! HTML reports of real runs, opened in a real headless browser (Debian's chromium):
//! the charts must be in the page the browser parsed, and the screenshot must show them.

use std::path::Path;
use std::process::Command;

use crate::common::{Server, assert_exit, output_of, run, scrape};

/// The browser: Debian's chromium, which `scripts/test` installs when it is missing.
fn chromium() -> Command {
    let path = Path::new("/usr/bin/chromium");
    assert!(
        path.exists(),
        "these tests need Debian's chromium (scripts/test installs it: apt-get install chromium)"
    );
    let mut cmd = Command::new(path);
    // As this machine's probe starts it: no sandbox as root, nothing that calls out.
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ]);
    cmd
}

/// The DOM chromium builds from `page`.
fn dom_of(page: &Path, profile: &Path) -> String {
    let out = output_of(
        chromium()
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--dump-dom")
            .arg(format!("file://{}", page.display())),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A screenshot of `page`, decoded: its width, height and RGB pixels.
fn screenshot(page: &Path, profile: &Path, png: &Path) -> (u32, u32, Vec<u8>) {
    let out = output_of(
        chromium()
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--window-size=900,2400")
            .arg(format!("--screenshot={}", png.display()))
            .arg(format!("file://{}", page.display())),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb, "{info:?}");
    pixels.truncate(info.buffer_size());
    (info.width, info.height, pixels)
}

/// How many pixels have exactly the colour `rgb`.
fn count_color(pixels: &[u8], rgb: [u8; 3]) -> usize {
    pixels.chunks_exact(3).filter(|p| **p == rgb).count()
}

#[test]
fn a_scrape_report_draws_its_charts_in_a_real_browser() {
    // Some batches fail (HTTP 500, no retry), so the status chart has two layers.
    let server = Server::start(&["--delay", "0..30", "--fail-rate", "0.2"]);
    let dir = tempfile::tempdir().unwrap();
    let template = server.tickers_template();
    let result = scrape(
        &template,
        "0..2000",
        &[
            "--batch",
            "10",
            "-w",
            "2",
            "-c",
            "8",
            "--retries",
            "0",
            "-q",
            "--report",
            "report.html",
        ],
        dir.path(),
    );
    assert_exit(&result, 1);
    let page = dir.path().join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("<script") && !html.contains("http-equiv"),
        "self-contained"
    );
    assert!(
        html.contains(&format!("http://127.0.0.1:{}", server.port())),
        "the host table"
    );

    let dom = dom_of(&page, &dir.path().join("profile"));
    assert_eq!(
        dom.matches("<svg").count(),
        5,
        "five charts in the parsed page"
    );
    assert!(
        dom.matches("<polyline").count() >= 4,
        "throughput and latency lines"
    );
    assert!(
        dom.matches("class=\"bar\"").count() >= 10,
        "bars of the histogram, statuses, workers"
    );
    assert!(dom.contains(">500<"), "the 500s are in the status legend");

    let (width, height, pixels) = screenshot(
        &page,
        &dir.path().join("profile"),
        &dir.path().join("shot.png"),
    );
    assert_eq!((width, height), (900, 2400));
    let white = count_color(&pixels, [255, 255, 255]);
    let total = pixels.len() / 3;
    assert!(
        white < total * 97 / 100,
        "the screenshot is blank ({white} of {total} white)"
    );
    // The chart colours themselves: blue lines and bars, red failures, the histogram's
    // purple and the workers' green.
    for rgb in [
        [0x1f, 0x77, 0xb4],
        [0xd6, 0x27, 0x28],
        [0x94, 0x67, 0xbd],
        [0x2c, 0xa0, 0x2c],
    ] {
        assert!(
            count_color(&pixels, rgb) > 200,
            "too little of {rgb:02x?} on the screenshot"
        );
    }
}

#[test]
fn a_load_report_at_a_rate_shows_latency_from_the_intended_send_time() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}/api/tickers/?start=0&limit=10", server.base);
    let result = run(
        &[
            "load",
            "-w",
            "2",
            "-c",
            "4",
            "-z",
            "2s",
            "--rate",
            "200",
            "--quiet",
            "--report",
            "load.html",
            "--timeline",
            "timeline.jsonl",
            &url,
        ],
        dir.path(),
    );
    assert_exit(&result, 0);
    let html = std::fs::read_to_string(dir.path().join("load.html")).unwrap();
    assert_eq!(
        html.matches("<svg").count(),
        6,
        "five charts and the intended-time one"
    );
    assert!(html.contains("from the intended send time"));
    assert!(html.contains("worker 1"));

    // Without --timeline the seconds wait in a file of the test's own, not in memory,
    // and it is gone once the report is drawn.
    let only = tempfile::tempdir().unwrap();
    let args = [
        "load", "-w", "1", "-c", "2", "-z", "1s", "--quiet", "--report", "r.html", &url,
    ];
    assert_exit(&run(&args, only.path()), 0);
    let left: Vec<_> = std::fs::read_dir(only.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, ["r.html"]);
    let html = std::fs::read_to_string(only.path().join("r.html")).unwrap();
    assert!(html.contains("worker 0"), "{html}");

    // The same report, made afterwards from the timeline.
    let again = run(
        &["report", "timeline.jsonl", "-o", "again.html"],
        dir.path(),
    );
    assert_exit(&again, 0);
    let again = std::fs::read_to_string(dir.path().join("again.html")).unwrap();
    assert_eq!(again.matches("<svg").count(), 6);
    assert!(again.contains("worker 1") && again.contains("from the intended send time"));
}

#[test]
fn a_report_is_made_afterwards_from_a_run_directory_and_bad_paths_are_usage_errors() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    assert_exit(
        &scrape(&server.tickers_template(), "0..100", &["-q"], dir.path()),
        0,
    );
    assert_exit(&run(&["report", "out", "-o", "r.html"], dir.path()), 0);
    let html = std::fs::read_to_string(dir.path().join("r.html")).unwrap();
    assert!(
        html.contains("<td>batches stored</td><td>10</td>"),
        "{html}"
    );

    for (args, needle) in [
        (
            &["report", "nowhere", "-o", "x.html"][..],
            "cannot read nowhere",
        ),
        (
            &["report", "out", "-o", "no/such/dir/x.html"][..],
            "no directory no/such/dir",
        ),
        (
            &[
                "--url",
                "http://127.0.0.1:9/{start}",
                "-o",
                "-",
                "--report",
                "x.html",
            ][..],
            "needs an --out directory",
        ),
    ] {
        let result = run(args, dir.path());
        assert_exit(&result, 2);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    assert!(!dir.path().join("x.html").exists());
}
