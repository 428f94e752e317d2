//! `--metrics ADDR`: the live Prometheus endpoint of scrapes and load tests, read with
//! a raw TCP GET and scraped by a real Prometheus (Debian's `prometheus`, which
//! `scripts/test` installs when it is missing).

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::common::{
    CHILD_LIMIT, Server, coordinator, eventually, exit_code_within, kill_tree, run, send_signal,
    wait_within,
};

/// Time the endpoint (or Prometheus) gets to show what a test waits for.
const SHOW_LIMIT: Duration = Duration::from_secs(90);

/// A coordinator started with `--metrics 127.0.0.1:0`, and the address it printed.
struct Metered {
    child: Child,
    /// `127.0.0.1:PORT`
    addr: String,
    /// The rest of its stderr, line by line.
    _stderr: mpsc::Receiver<String>,
}

impl Metered {
    fn start(args: &[&str], cwd: &Path) -> Metered {
        let mut child = coordinator()
            .args(args)
            .args(["--metrics", "127.0.0.1:0"])
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the coordinator");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let addr = loop {
            match rx.recv_timeout(CHILD_LIMIT) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("metrics: serving http://") {
                        break url.trim_end_matches("/metrics").to_owned();
                    }
                }
                Err(_) => {
                    kill_tree(&mut child);
                    panic!("the coordinator printed no metrics address");
                }
            }
        };
        assert!(addr.starts_with("127.0.0.1:"), "{addr}");
        Metered {
            child,
            addr,
            _stderr: rx,
        }
    }

    /// Stops it with SIGTERM: it exits 143 (stopped by the signal) or, had the run
    /// just ended, 0.
    fn stop(mut self) {
        send_signal(self.child.id(), "TERM");
        let code = exit_code_within(&mut self.child);
        assert!(matches!(code, None | Some(0 | 143)), "exit {code:?}");
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            kill_tree(&mut self.child);
        }
    }
}

/// A plain HTTP/1.0 GET on a raw TCP stream: (status line and headers, body); `None`
/// when nothing listens yet or the answer is cut short.
fn http_get(addr: &str, path: &str) -> Option<(String, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.to_owned(), body.to_owned()))
}

/// The value of the sample `series` (name and labels as written) on `page`.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Checks the text format: every family has its HELP and TYPE before its samples,
/// every sample is `name{labels} value` with a number for the value.
fn assert_text_format(page: &str) {
    let mut typed: Vec<(String, String)> = Vec::new();
    let mut helped = Vec::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.push(rest.split(' ').next().unwrap().to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "summary"].contains(&kind), "{line}");
            assert_eq!(helped.last().map(String::as_str), Some(name), "{line}");
            typed.push((name.to_owned(), kind.to_owned()));
        } else {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(
                value.parse::<f64>().is_ok() || value == "NaN",
                "not a number: {line}"
            );
            let name = series.split('{').next().unwrap();
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "{line}"
            );
            if let Some(labels) = series.strip_prefix(name) {
                assert!(
                    labels.is_empty() || (labels.starts_with('{') && labels.ends_with("\"}")),
                    "{line}"
                );
            }
            let (family, kind) = typed.last().expect("a sample before any TYPE line");
            let own = name == family
                || (kind == "summary"
                    && (name == format!("{family}_sum") || name == format!("{family}_count")));
            assert!(own, "{line} is not of family {family}");
        }
    }
}

/// A scrape slow enough to watch, with `--metrics`: one item per batch from a
/// server that takes 100-200 ms for each. Returns the server, the run's directory and
/// the run.
fn slow_scrape() -> (Server, tempfile::TempDir, Metered) {
    let server = Server::start(&["--delay", "100..200"]);
    let dir = tempfile::tempdir().unwrap();
    let template = server.tickers_template();
    let args = [
        "--url",
        &template,
        "--range",
        "0..5000",
        "--batch",
        "1",
        "--workers",
        "2",
        "--concurrency",
        "2",
        "--grace",
        "1s",
        "--quiet",
        "--out",
        "out",
    ];
    let run = Metered::start(&args, dir.path());
    (server, dir, run)
}

#[test]
fn a_scrape_serves_its_counters_in_the_text_format_while_it_runs() {
    let (server, _dir, run) = slow_scrape();

    let mut page = String::new();
    let counted = eventually(SHOW_LIMIT, || {
        let Some((head, body)) = http_get(&run.addr, "/metrics") else {
            return false;
        };
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(
            head.contains("Content-Type: text/plain; version=0.0.4"),
            "{head}"
        );
        page = body;
        sample(&page, "coordinator_batches_total{outcome=\"ok\"}").is_some_and(|n| n >= 2.0)
    });
    assert!(counted, "no batches counted within {SHOW_LIMIT:?}:\n{page}");
    assert_text_format(&page);
    let host = format!(
        "coordinator_host_requests_total{{host=\"{}\"}}",
        server.base
    );
    assert!(sample(&page, &host).is_some_and(|n| n >= 2.0), "{page}");
    for series in [
        "coordinator_batches_total{outcome=\"failed\"}",
        "coordinator_batches_total{outcome=\"skipped\"}",
        "coordinator_bytes_total",
        "coordinator_requests_total",
        "coordinator_batches_in_flight",
        "coordinator_requests_in_flight",
        "coordinator_batches_planned",
        "coordinator_batch_duration_seconds{quantile=\"0.5\"}",
        "coordinator_batch_duration_seconds_count",
        "coordinator_worker_batches_total{worker=\"0\"}",
    ] {
        assert!(sample(&page, series).is_some(), "{series} missing:\n{page}");
    }
    assert_eq!(sample(&page, "coordinator_batches_planned"), Some(5000.0));
    // Latencies from a server that waits 100-200 ms.
    let p50 = sample(
        &page,
        "coordinator_batch_duration_seconds{quantile=\"0.5\"}",
    )
    .unwrap();
    assert!((0.09..5.0).contains(&p50), "p50 {p50}");
    let in_flight = sample(&page, "coordinator_requests_in_flight").unwrap();
    assert!(in_flight <= 4.0, "2 workers of 2: {in_flight}");

    // Each worker's loop lag shows while it runs, not only once it has left.
    let lag = "coordinator_worker_loop_lag_max_seconds{worker=\"1\"}";
    let live = eventually(SHOW_LIMIT, || {
        http_get(&run.addr, "/metrics").is_some_and(|(_, page)| sample(&page, lag).is_some())
    });
    assert!(live, "no live loop lag for worker 1");

    let (head, _) = http_get(&run.addr, "/nothing").unwrap();
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    run.stop();
}

#[test]
fn a_load_test_serves_responses_statuses_and_latency() {
    let server = Server::start(&["--delay", "1..2"]);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}/api/tickers/?start=0&limit=1", server.base);
    let run = Metered::start(
        &["load", "-z", "120s", "-c", "2", "-w", "1", "--quiet", &url],
        dir.path(),
    );
    let mut page = String::new();
    let counted = eventually(SHOW_LIMIT, || {
        page = http_get(&run.addr, "/metrics")
            .map(|r| r.1)
            .unwrap_or_default();
        sample(&page, "coordinator_load_responses_total").is_some_and(|n| n > 0.0)
    });
    assert!(counted, "no responses counted:\n{page}");
    assert_text_format(&page);
    assert!(
        sample(
            &page,
            "coordinator_load_responses_by_status_total{code=\"200\"}"
        )
        .is_some_and(|n| n > 0.0),
        "{page}"
    );
    assert_eq!(
        sample(&page, "coordinator_load_errors_total{kind=\"connect\"}"),
        Some(0.0)
    );
    assert!(
        sample(&page, "coordinator_load_latency_seconds{quantile=\"0.99\"}")
            .is_some_and(|s| s > 0.0 && s < 5.0),
        "{page}"
    );
    assert_eq!(sample(&page, "coordinator_load_connections"), Some(2.0));
    run.stop();
}

#[test]
fn a_bad_metrics_address_is_a_usage_error_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    for (args, says) in [
        (vec!["--metrics", "localhost"], "--metrics"),
        (vec!["--metrics", &taken, "-o", "out"], "cannot listen on"),
        (
            vec!["load", "--metrics", "1.2.3:4", "http://127.0.0.1:1/"],
            "--metrics",
        ),
    ] {
        let out = run(&args, dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    assert!(!dir.path().join("out").exists(), "nothing is written");
}

/// Debian's Prometheus, which `scripts/test` installs when it is missing.
const PROMETHEUS: &str = "/usr/bin/prometheus";

/// A Prometheus on a loopback port, its data in a directory of its own; stopped by
/// its pid on drop.
struct Prometheus {
    child: Child,
    addr: String,
}

impl Prometheus {
    /// Starts one that scrapes `target` (`127.0.0.1:PORT`) every second.
    fn start(target: &str, dir: &Path) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "this test needs Debian's prometheus (scripts/test installs it: apt-get install prometheus)"
        );
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: coordinator\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        // A free port: taken, noted and given back for Prometheus to take.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("starting prometheus");
        Prometheus { child, addr }
    }

    /// The value of the first series an instant query returns, if any.
    fn query(&self, promql: &str) -> Option<f64> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (head, body) = http_get(&self.addr, &format!("/api/v1/query?query={encoded}"))?;
        if !head.contains(" 200 ") {
            return None;
        }
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// SIGTERM to its pid, and a reap; SIGKILL if it has not gone in time.
    fn stop(mut self) {
        send_signal(self.child.id(), "TERM");
        assert!(
            wait_within(&mut self.child, Duration::from_secs(30)).is_some(),
            "prometheus did not stop on SIGTERM"
        );
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn a_real_prometheus_scrapes_the_run_counters() {
    let (server, dir, run) = slow_scrape();
    let prometheus = Prometheus::start(&run.addr, dir.path());

    let mut ok = None;
    let scraped = eventually(SHOW_LIMIT, || {
        ok = prometheus.query("coordinator_batches_total{outcome=\"ok\",job=\"coordinator\"}");
        ok.is_some_and(|n| n >= 1.0)
    });
    let log = fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    assert!(
        scraped,
        "prometheus never had the ok counter (last: {ok:?}); its log:\n{log}"
    );
    assert_eq!(prometheus.query("up{job=\"coordinator\"}"), Some(1.0));
    let host = format!(
        "coordinator_host_requests_total{{host=\"{}\"}}",
        server.base
    );
    assert!(prometheus.query(&host).is_some_and(|n| n >= 1.0), "{host}");
    assert_eq!(
        prometheus.query("coordinator_batches_planned"),
        Some(5000.0)
    );
    // A quantile in seconds from a server that takes 100-200 ms.
    let p99 = prometheus
        .query("coordinator_batch_duration_seconds{quantile=\"0.99\"}")
        .unwrap();
    assert!((0.09..5.0).contains(&p99), "p99 {p99}");
    // The counter grows between scrapes: the run is live.
    let first = ok.unwrap();
    assert!(
        eventually(SHOW_LIMIT, || prometheus
            .query("coordinator_batches_total{outcome=\"ok\"}")
            .is_some_and(|n| n > first)),
        "the ok counter stayed at {first}"
    );
    prometheus.stop();
    run.stop();
}
