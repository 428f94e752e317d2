//! Helpers for the end-to-end tests: the real binary, a real server process, a fresh
//! output directory, and bounded polls of real state.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The longest any process a test starts may run: past it the process (and its
/// process group) is killed and the test fails, so that a hang is a failure under
/// plain `cargo test` too (nextest also ends a test after .config/nextest.toml's
/// slow-timeout).
pub const CHILD_LIMIT: Duration = Duration::from_secs(180);

/// The `coordinator` binary under test.
pub fn coordinator() -> Command {
    Command::new(env!("CARGO_BIN_EXE_coordinator"))
}

/// Runs the binary to the end with no stdin, within [`CHILD_LIMIT`].
pub fn run(args: &[&str], cwd: &Path) -> Output {
    output_of(coordinator().args(args).current_dir(cwd))
}

/// Like [`Command::output`] (no stdin, stdout and stderr captured), but bounded by
/// [`CHILD_LIMIT`]. The command runs in a process group of its own, so that a
/// script and what it started can be killed together when the limit passes.
pub fn output_of(cmd: &mut Command) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    wait_output(child, CHILD_LIMIT)
}

/// Starts `cmd` with no stdin and with stdout and stderr piped.
pub fn spawn_piped(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"))
}

/// Reads a pipe to its end on a thread of its own; the bytes come on the channel.
fn drain(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            let _ = tx.send(bytes);
        });
    } else {
        let _ = tx.send(Vec::new());
    }
    rx
}

/// Waits for `child` to exit, at most `limit`, collecting its piped stdout and
/// stderr. Past the limit the child is killed (with its process group, when it leads
/// one) and the test fails with what it wrote to stderr.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_within(&mut child, limit);
    // Workers inherit stderr and leave with their coordinator, so the pipes close soon
    // after it exits; a pipe still held open by a stray process is not waited for long.
    let collect =
        |rx: mpsc::Receiver<Vec<u8>>| rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    let (stdout, stderr) = (collect(stdout), collect(stderr));
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "pid {} still ran after {limit:?}: killed it; its stderr:\n{}",
            child.id(),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// Waits for `child` to exit, at most `limit`; past it kills it (and its process
/// group, when it leads one), reaps it and returns `None`.
pub fn wait_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let mut status = None;
    eventually(limit, || {
        status = child.try_wait().expect("waiting for a child");
        status.is_some()
    });
    if status.is_none() {
        kill_tree(child);
    }
    status
}

/// SIGKILL to `child`, and to its process group when it leads one; then reaps it.
pub fn kill_tree(child: &mut Child) {
    let pid = child.id();
    if fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat_field(&stat, 5))
        == Some(pid)
    {
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{pid}")])
            .status();
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Field `n` (1-based, as in proc(5)) of a /proc/PID/stat line, for fields after the
/// command name.
fn stat_field(stat: &str, n: usize) -> Option<u32> {
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(n.checked_sub(3)?)?
        .parse()
        .ok()
}

/// The process group of `pid`.
pub fn process_group(pid: u32) -> Option<u32> {
    stat_field(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?, 5)
}

/// Waits for `child` to exit within [`CHILD_LIMIT`] and returns its exit code (None
/// when a signal ended it); fails the test (after killing it) when it does not.
#[track_caller]
pub fn exit_code_within(child: &mut Child) -> Option<i32> {
    match wait_within(child, CHILD_LIMIT) {
        Some(status) => code_of(&status),
        None => panic!(
            "pid {} still ran after {CHILD_LIMIT:?}: killed it",
            child.id()
        ),
    }
}

/// `coordinator serve` on a free loopback port, stopped and reaped on drop.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT` (`https://` when it serves TLS)
    pub base: String,
}

impl Server {
    /// Starts the built-in API with extra `serve` flags.
    pub fn start(extra: &[&str]) -> Server {
        let mut child = coordinator()
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting coordinator serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let Ok(line) = rx.recv_timeout(CHILD_LIMIT) else {
            kill_tree(&mut child);
            panic!("coordinator serve gave no address in {CHILD_LIMIT:?}");
        };
        assert!(
            line.starts_with("http://127.0.0.1:") || line.starts_with("https://127.0.0.1:"),
            "server said {line:?}"
        );
        Server {
            child,
            base: line.trim().to_owned(),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.base.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Sends `signal` to the server and waits (within [`CHILD_LIMIT`]) for it to exit.
    pub fn stop_with(mut self, signal: &str) -> ExitStatus {
        send_signal(self.child.id(), signal);
        match wait_within(&mut self.child, CHILD_LIMIT) {
            Some(status) => status,
            None => panic!("the server did not stop on SIG{signal}: killed it"),
        }
    }

    /// The paged tickers URL template on this server.
    pub fn tickers_template(&self) -> String {
        format!("{}/api/tickers/?start={{start}}&limit={{limit}}", self.base)
    }

    /// GET `path` with a plain HTTP/1.1 request; returns (head, body).
    pub fn get(&self, path: &str, extra_headers: &str) -> (String, Vec<u8>) {
        let addr = self.base.trim_start_matches("http://");
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra_headers}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        (head, raw[split + 4..].to_vec())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Names of the files in `dir`, sorted.
pub fn file_names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// The manifest's lines, parsed.
pub fn manifest(dir: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(dir.join("manifest.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("manifest line is JSON"))
        .collect()
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Polls `cond` until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Worker pids named in the summary ("worker N (pid P)").
pub fn worker_pids(stderr: &str) -> Vec<u32> {
    stderr
        .lines()
        .filter_map(|l| {
            l.strip_prefix("worker ")?
                .split("(pid ")
                .nth(1)?
                .split(')')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// Established client connections to `port` on this machine (the client's end of
/// each: its remote port is `port`), from /proc/net/tcp.
pub fn connections_to(port: u16) -> usize {
    let table = fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port = fields[2].rsplit(':').next().unwrap();
            u16::from_str_radix(remote_port, 16).unwrap() == port && fields[3] == "01"
        })
        .count()
}

/// Direct children of `pid`, from /proc.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Waits until `pid` has exactly `n` children (its workers) and returns them; fails
/// the test when it never has.
#[track_caller]
pub fn wait_for_workers(pid: u32, n: usize) -> Vec<u32> {
    let mut workers = Vec::new();
    let found = eventually(CHILD_LIMIT, || {
        workers = children_of(pid);
        workers.len() == n
    });
    assert!(
        found,
        "pid {pid} has {workers:?} as children, not {n} workers"
    );
    workers
}

/// Waits until at least `n` client connections to `port` are established; fails the
/// test when they never are.
#[track_caller]
pub fn wait_for_connections(port: u16, n: usize) {
    assert!(
        eventually(CHILD_LIMIT, || connections_to(port) >= n),
        "fewer than {n} connections to port {port}"
    );
}

/// Sends `signal` (e.g. "KILL", "INT") to `pid` with kill(1).
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -s {signal} {pid}");
}

/// Lines in the manifest so far (0 when there is none yet).
pub fn manifest_lines(dir: &Path) -> usize {
    fs::read_to_string(dir.join("manifest.jsonl")).map_or(0, |t| t.lines().count())
}

/// Checks that `out` holds exactly the batch files of `0..items` in batches of 10, each
/// with the bytes the built-in API serves, and a manifest with each batch once.
pub fn assert_complete_run(out: &Path, items: u64) {
    let batches = items / 10;
    let lines = manifest(out);
    let indices: BTreeSet<u64> = lines.iter().map(|l| l["index"].as_u64().unwrap()).collect();
    assert_eq!(lines.len() as u64, batches, "one manifest line per batch");
    assert_eq!(indices, (0..batches).collect(), "every batch once");
    assert!(
        lines.iter().all(|l| l["file"].is_string()),
        "every batch stored"
    );
    assert_run_files(
        out,
        (0..batches).map(|i| format!("batch{}-{}.json", i * 10, i * 10 + 10)),
    );
    for i in 0..batches {
        let body = fs::read(out.join(format!("batch{}-{}.json", i * 10, i * 10 + 10))).unwrap();
        assert_eq!(
            body,
            tickers::tickers_json(i * 10, 10, 1_000_000_000).into_bytes(),
            "batch {i}"
        );
    }
}

/// Checks that `out` holds exactly the files `names`, the manifest and `run.json`: no
/// other file, and no temp file.
#[track_caller]
pub fn assert_run_files(out: &Path, names: impl IntoIterator<Item = String>) {
    let mut expected: BTreeSet<String> = names.into_iter().collect();
    expected.insert("manifest.jsonl".to_owned());
    expected.insert("run.json".to_owned());
    assert_eq!(
        file_names(out),
        expected,
        "exactly the batch files, no temp files"
    );
}

/// `PATH` with the directory of the binary under test first, for a script that runs
/// `coordinator` by name.
pub fn path_with_binary() -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_coordinator"))
        .parent()
        .expect("the binary is in a directory");
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Scrapes `url` (a template) over `range` into `cwd/out` with `extra` flags.
pub fn scrape(url: &str, range: &str, extra: &[&str], cwd: &Path) -> Output {
    let mut args = vec!["--url", url, "--range", range, "--out", "out"];
    args.extend_from_slice(extra);
    run(&args, cwd)
}

/// Asserts the exit code of a finished run, showing its stderr when it differs.
#[track_caller]
pub fn assert_exit(result: &Output, code: i32) {
    assert_eq!(
        code_of(&result.status),
        Some(code),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
}

/// A hostile server: 20% 500s, 5% 429 with Retry-After, 5% dropped connections, 5%
/// truncated bodies.
pub fn hostile_server() -> Server {
    Server::start(&[
        "--fail-rate",
        "0.2",
        "--throttle-rate",
        "0.05",
        "--retry-after",
        "1",
        "--drop-rate",
        "0.05",
        "--truncate-rate",
        "0.05",
    ])
}

/// Scrapes 2,000 items from `server` with generous retries and `extra` flags, and checks
/// that every batch arrived exact although some needed retries.
pub fn retries_get_every_batch_through(server: Server, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = vec![
        "--retries",
        "20",
        "--backoff",
        "10ms",
        "--backoff-max",
        "100ms",
    ];
    flags.extend_from_slice(extra);
    let result = scrape(&server.tickers_template(), "0..2000", &flags, dir.path());
    assert_exit(&result, 0);
    let out = dir.path().join("out");
    assert_complete_run(&out, 2000);
    let retried = manifest(&out)
        .iter()
        .filter(|l| l["attempts"].as_u64().unwrap() > 1)
        .count();
    assert!(
        retried > 10,
        "only {retried} batches needed a retry: were faults injected?"
    );
}

/// The exit code as a shell reports it: 128 + N for a death by signal N (the
/// coordinator dies by the SIGINT or SIGTERM that stopped it, as a shell expects).
pub fn code_of(status: &ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt as _;
    status.code().or_else(|| status.signal().map(|s| 128 + s))
}

/// Runs a scrape of `url` into `dir/out` with `flags`, and asserts that it is a usage
/// error (exit 2) that says `says` and writes nothing.
#[track_caller]
pub fn assert_usage_error(url: &str, flags: &[&str], says: &str, dir: &Path) {
    let mut args = vec!["--url", url, "--range", "0..10", "-o", "out"];
    args.extend_from_slice(flags);
    let out = run(&args, dir);
    assert_exit(&out, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(says), "{flags:?}: {stderr}");
    assert!(!dir.join("out").exists(), "{flags:?} wrote its --out");
}

/// nginx (Debian's nginx-light) serving the static files of `www` on a free loopback
/// port, with these `listen` parameters (e.g. `ssl http2`) and extra `server`
/// directives; each request is logged as `log_format` says to `dir/access.log`.
/// Stopped on drop.
pub struct Nginx {
    child: Child,
    /// The port it listens on.
    pub port: u16,
}

impl Nginx {
    /// Starts nginx with its configuration, pid file and logs in `dir`.
    pub fn start(dir: &Path, www: &Path, listen: &str, server: &str, log_format: &str) -> Nginx {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.join("nginx.conf");
        fs::write(
            &conf,
            format!(
                "pid {dir}/nginx.pid;\nerror_log {dir}/error.log;\nevents {{}}\nhttp {{\n  log_format custom '{log_format}';\n  access_log {dir}/access.log custom;\n  server {{\n    listen 127.0.0.1:{port} {listen};\n    {server}\n    root {www};\n  }}\n}}\n",
                dir = dir.display(),
                www = www.display(),
            ),
        )
        .unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (Debian's nginx-light; scripts/test installs it)");
        let mut nginx = Nginx { child, port };
        let up = eventually(Duration::from_secs(10), || {
            matches!(nginx.child.try_wait(), Ok(None))
                && TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(
            up,
            "nginx did not start: {:?}",
            fs::read_to_string(dir.join("error.log"))
        );
        nginx
    }
}

impl Drop for Nginx {
    /// SIGTERM, which nginx's master passes on to its workers before it exits (a
    /// SIGKILL would leave them orphaned); SIGKILL only if it does not exit in time.
    fn drop(&mut self) {
        send_signal(self.child.id(), "TERM");
        if wait_within(&mut self.child, Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
