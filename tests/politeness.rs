//! Per-host politeness across worker processes: `--per-host-rate` and
//! `--per-host-concurrency` counted server-side, and adaptive throttling against a
//! server that answers 429 above a rate (`serve --max-rate`).

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{self, Server, assert_exit, coordinator, output_of};

/// A keep-alive HTTP/1.1 server that answers every request `ok` after `delay`, and
/// records when each request came and how many were in flight at most.
struct Counting {
    port: u16,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    most: Arc<AtomicUsize>,
}

impl Counting {
    fn start(delay: Duration) -> Counting {
        Counting::with_robots(delay, None)
    }

    /// One that answers `/robots.txt` with `robots` (not counted as a request).
    fn with_robots(delay: Duration, robots: Option<&'static str>) -> Counting {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let most = Arc::new(AtomicUsize::new(0));
        let now = Arc::new(AtomicUsize::new(0));
        let (a, m) = (Arc::clone(&arrivals), Arc::clone(&most));
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (a, m, now) = (Arc::clone(&a), Arc::clone(&m), Arc::clone(&now));
                thread::spawn(move || serve(stream, delay, robots, &a, &m, &now));
            }
        });
        Counting {
            port,
            arrivals,
            most,
        }
    }

    /// The most requests that arrived within any one second.
    fn busiest_second(&self) -> usize {
        let mut times = self.arrivals.lock().unwrap().clone();
        times.sort();
        (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|t| t.duration_since(times[i]) < Duration::from_secs(1))
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    fn requests(&self) -> usize {
        self.arrivals.lock().unwrap().len()
    }

    /// When its first and last requests came.
    fn span(&self) -> (Instant, Instant) {
        let times = self.arrivals.lock().unwrap();
        (*times.iter().min().unwrap(), *times.iter().max().unwrap())
    }
}

/// Serves one connection. A request's arrival time is the kernel's receive timestamp of
/// its first bytes (SO_TIMESTAMPNS), not when this thread got to run: on a busy machine
/// a thread woken late would bunch arrivals that were spread on the wire.
fn serve(
    stream: TcpStream,
    delay: Duration,
    robots: Option<&str>,
    arrivals: &Mutex<Vec<Instant>>,
    most: &AtomicUsize,
    now: &AtomicUsize,
) {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};
    use nix::sys::time::TimeSpec;
    use std::os::fd::AsRawFd;
    setsockopt(&stream, sockopt::ReceiveTimestampns, &true).unwrap();
    // The kernel's clock is the wall clock: taken against `Instant` once.
    let wall = |ts: TimeSpec| {
        let at = Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32);
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        Instant::now() - since_epoch.saturating_sub(at)
    };
    let mut writer = stream.try_clone().unwrap();
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let mut cmsg = nix::cmsg_space!(TimeSpec);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let Ok(msg) = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        ) else {
            return;
        };
        let received = msg.bytes;
        let stamp = msg.cmsgs().ok().and_then(|mut c| {
            c.find_map(|m| match m {
                ControlMessageOwned::ScmTimestampns(ts) => Some(ts),
                _ => None,
            })
        });
        if received == 0 {
            return;
        }
        let starts = pending.is_empty();
        pending.extend_from_slice(&buf[..received]);
        if let Some(text) = robots
            && pending.starts_with(b"GET /robots.txt ")
        {
            if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                pending.drain(..end + 4);
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", text.len());
                if writer.write_all(head.as_bytes()).is_err()
                    || writer.write_all(text.as_bytes()).is_err()
                {
                    return;
                }
            }
            continue;
        }
        if starts {
            arrivals
                .lock()
                .unwrap()
                .push(stamp.map_or_else(Instant::now, wall));
        }
        // One request at a time per connection: answered once its head is whole.
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            pending.drain(..end + 4);
            let in_flight = now.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(in_flight, Ordering::SeqCst);
            thread::sleep(delay);
            now.fetch_sub(1, Ordering::SeqCst);
            if writer
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .is_err()
            {
                return;
            }
        }
    }
}

/// A URL list of `n` URLs on each of `servers`, interleaved, written into `dir`.
fn url_list(dir: &std::path::Path, servers: &[&Counting], n: usize) -> std::path::PathBuf {
    let mut list = String::new();
    for i in 0..n {
        for s in servers {
            list.push_str(&format!("http://127.0.0.1:{}/p{i}\n", s.port));
        }
    }
    let path = dir.join("urls.txt");
    std::fs::write(&path, list).unwrap();
    path
}

#[test]
fn a_per_host_rate_holds_for_all_workers_together_and_hosts_go_in_parallel() {
    let (a, b) = (
        Counting::start(Duration::ZERO),
        Counting::start(Duration::ZERO),
    );
    let dir = tempfile::tempdir().unwrap();
    let list = url_list(dir.path(), &[&a, &b], 120);
    let mut cmd = coordinator();
    cmd.arg("--urls")
        .arg(&list)
        // The server counts every request: no robots.txt among them.
        .args(["--robots", "ignore"])
        .args(["-w", "4", "--per-host-rate", "50", "-o", "out"])
        .current_dir(dir.path());
    let out = output_of(&mut cmd);
    assert_exit(&out, 0);
    assert_eq!(common::manifest_lines(&dir.path().join("out")), 240);
    for server in [&a, &b] {
        assert_eq!(server.requests(), 120);
        let busiest = server.busiest_second();
        assert!(busiest <= 51, "{busiest} requests within one second");
    }
    // The two hosts were fetched side by side, not one after the other.
    let (a_first, a_last) = a.span();
    let (b_first, b_last) = b.span();
    assert!(b_first < a_last && a_first < b_last);
}

#[test]
fn a_crawl_delay_in_robots_txt_becomes_the_hosts_rate_for_every_worker() {
    let server = Counting::with_robots(Duration::ZERO, Some("User-agent: *\nCrawl-delay: 0.1\n"));
    let dir = tempfile::tempdir().unwrap();
    let list = url_list(dir.path(), &[&server], 40);
    let mut cmd = coordinator();
    cmd.arg("--urls")
        .arg(&list)
        .args(["-w", "2", "-o", "out"])
        .current_dir(dir.path());
    let out = output_of(&mut cmd);
    assert_exit(&out, 0);
    assert_eq!(server.requests(), 40);
    // One request per 100 ms, both workers together (each keeps to its half).
    let busiest = server.busiest_second();
    assert!(busiest <= 12, "{busiest} requests within one second");
}

#[test]
fn a_per_host_concurrency_holds_for_all_workers_together() {
    let server = Counting::start(Duration::from_millis(30));
    let dir = tempfile::tempdir().unwrap();
    let list = url_list(dir.path(), &[&server], 60);
    let mut cmd = coordinator();
    cmd.arg("--urls")
        .arg(&list)
        // The server counts every request: no robots.txt among them.
        .args(["--robots", "ignore"])
        .args([
            "-w",
            "2",
            "-c",
            "50",
            "--per-host-concurrency",
            "3",
            "-o",
            "out",
        ])
        .current_dir(dir.path());
    let out = output_of(&mut cmd);
    assert_exit(&out, 0);
    assert_eq!(server.requests(), 60);
    let most = server.most.load(Ordering::SeqCst);
    assert!((1..=3).contains(&most), "{most} in flight at once");
}

/// The JSON summary of a scrape of 0..5000 (500 batches) from `server` with `extra`.
fn throttled_run(server: &Server, extra: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = coordinator();
    cmd.args(["--url", &server.tickers_template(), "--range", "0..5000"])
        .args([
            "-w",
            "2",
            "-c",
            "32",
            "--retries",
            "30",
            "--json",
            "-o",
            "out",
        ])
        .args(extra)
        .current_dir(dir.path());
    let out = output_of(&mut cmd);
    assert_exit(&out, 0);
    common::assert_complete_run(&dir.path().join("out"), 5000);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_host_that_answers_429_is_slowed_down_for_every_worker() {
    let server = Server::start(&["--max-rate", "100"]);
    let adaptive = throttled_run(&server, &[]);
    let blind = throttled_run(&server, &["--adaptive", "off"]);
    let extra = |s: &serde_json::Value| s["requests"].as_u64().unwrap() - 500;
    // Every request over 500 was answered 429; the adaptive run sent far fewer.
    assert!(
        extra(&adaptive) * 2 < extra(&blind),
        "429s: {} adaptive, {} without",
        extra(&adaptive),
        extra(&blind)
    );
}

#[test]
fn bad_politeness_flags_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (flags, says) in [
        (&["--per-host-rate", "0"][..], "--per-host-rate"),
        (&["--per-host-rate", "fast"], "--per-host-rate"),
        (&["--per-host-concurrency", "0"], "--per-host-concurrency"),
        (&["--adaptive", "maybe"], "--adaptive"),
    ] {
        common::assert_usage_error("http://127.0.0.1:9/{start}", flags, says, dir.path());
    }
    let server = common::output_of(coordinator().args([
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--max-rate",
        "0",
    ]));
    assert_exit(&server, 2);
}

#[test]
fn a_new_hosts_first_requests_ramp_up_instead_of_going_all_at_once() {
    let server = Counting::start(Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let list = url_list(dir.path(), &[&server], 600);
    let mut cmd = coordinator();
    cmd.arg("--urls")
        .arg(&list)
        .args(["--robots", "ignore", "-w", "1", "-o", "out"])
        .current_dir(dir.path());
    let out = output_of(&mut cmd);
    assert_exit(&out, 0);
    let mut times = server.arrivals.lock().unwrap().clone();
    assert_eq!(times.len(), 600);
    times.sort();
    // 256 may be in flight (the default -c), but after a burst of 64 the rate starts at
    // 2,000/s and doubles every 10 ms: the 400th request goes 36 ms after the first.
    let spread = times[399] - times[0];
    assert!(
        spread >= Duration::from_millis(20),
        "400 requests within {spread:?}"
    );
}

/// A server whose first answer is `429` with `Retry-After: 2`, sent at once; every other
/// request is answered `ok` 300 ms after it came. Records when each came, and when the
/// 429 went.
struct Refusing {
    port: u16,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    refused_at: Arc<Mutex<Option<Instant>>>,
}

impl Refusing {
    fn start() -> Refusing {
        use std::io::Read;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let refused_at = Arc::new(Mutex::new(None));
        let (a, r) = (Arc::clone(&arrivals), Arc::clone(&refused_at));
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (a, r) = (Arc::clone(&a), Arc::clone(&r));
                thread::spawn(move || {
                    let mut pending = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        let Ok(n) = stream.read(&mut buf) else { return };
                        if n == 0 {
                            return;
                        }
                        pending.extend_from_slice(&buf[..n]);
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            pending.drain(..end + 4);
                            let first = {
                                let mut refused = r.lock().unwrap();
                                let first = refused.is_none();
                                if first {
                                    *refused = Some(Instant::now());
                                } else {
                                    a.lock().unwrap().push(Instant::now());
                                }
                                first
                            };
                            let answer: &[u8] = if first {
                                b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\nContent-Length: 0\r\n\r\n"
                            } else {
                                thread::sleep(Duration::from_millis(300));
                                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                            };
                            if stream.write_all(answer).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Refusing {
            port,
            arrivals,
            refused_at,
        }
    }

    /// How long after the 429 went each later request came, in order.
    fn after_refusal(&self) -> Vec<Duration> {
        let refused = self.refused_at.lock().unwrap().unwrap();
        let mut times: Vec<Duration> = self
            .arrivals
            .lock()
            .unwrap()
            .iter()
            .map(|t| t.saturating_duration_since(refused))
            .collect();
        times.sort();
        times
    }
}

/// Scrapes 24 URLs from a fresh [`Refusing`] with 8 in flight and `extra`.
fn refused_run(extra: &[&str]) -> Refusing {
    let server = Refusing::start();
    let dir = tempfile::tempdir().unwrap();
    let list: String = (0..24)
        .map(|i| format!("http://127.0.0.1:{}/p{i}\n", server.port))
        .collect();
    std::fs::write(dir.path().join("urls.txt"), list).unwrap();
    let mut cmd = coordinator();
    cmd.args(["--urls", "urls.txt", "--robots", "ignore"])
        .args(["-w", "1", "-c", "8", "-o", "out"])
        .args(extra)
        .current_dir(dir.path());
    let out = output_of(&mut cmd);
    assert_exit(&out, 0);
    assert_eq!(common::manifest_lines(&dir.path().join("out")), 24);
    server
}

#[test]
fn retry_after_holds_every_request_to_the_host_not_only_the_retry() {
    // The 7 other requests of the first 8 were sent with the refused one; every later
    // request waits out the host's Retry-After: 2.
    let held = refused_run(&[]).after_refusal();
    assert_eq!(held.len(), 24);
    assert!(
        held[7..].iter().all(|t| *t >= Duration::from_secs(2)),
        "requests came during the host's Retry-After: {held:?}"
    );
    // Without the adaptive control only the refused request waits.
    let blind = refused_run(&["--adaptive", "off"]).after_refusal();
    assert!(
        blind[7] < Duration::from_millis(1500),
        "the 8th request waited {:?}",
        blind[7]
    );
}
