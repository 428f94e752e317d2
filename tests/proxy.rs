//! Forward proxies for real: Debian's tinyproxy, started on a loopback port, carries
//! the requests of scrapes and load tests (plain ones in absolute form, https:// ones
//! through CONNECT to the private CA's server); its log shows what went through.

use std::fs;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::common::{self, Server, assert_exit, coordinator, eventually, output_of};
use crate::tls::Pki;

/// A tinyproxy on a free loopback port, killed on drop.
struct Tinyproxy {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tinyproxy {
    /// Starts one; `extra` are more lines of its configuration.
    fn start(extra: &str) -> Tinyproxy {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("tinyproxy.log");
        // tinyproxy takes no port 0: a free port is found, and another tried should
        // someone take it first.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let conf = dir.path().join("tinyproxy.conf");
            fs::write(
                &conf,
                format!(
                    "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 200\nLogLevel Info\nLogFile \"{}\"\n{extra}\n",
                    log.display()
                ),
            )
            .unwrap();
            let mut child = Command::new("tinyproxy")
                .args(["-d", "-c"])
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("tinyproxy (Debian's package; scripts/test installs it)");
            let up = eventually(Duration::from_secs(10), || {
                matches!(child.try_wait(), Ok(None))
                    && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            if up {
                return Tinyproxy {
                    child,
                    port,
                    log,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("tinyproxy did not start");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The lines of its log that contain `needle`.
    fn logged(&self, needle: &str) -> usize {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary, with no proxy variable of the test's own environment.
fn coordinator_without_proxy_env() -> Command {
    let mut cmd = coordinator();
    for var in ["http_proxy", "https_proxy", "all_proxy", "no_proxy"] {
        cmd.env_remove(var).env_remove(var.to_ascii_uppercase());
    }
    cmd
}

/// A scrape of 0..100 of `server`'s tickers into `cwd/out`; of the proxy variables
/// only `env` counts.
fn scrape(server: &Server, extra: &[&str], env: &[(&str, &str)], cwd: &std::path::Path) -> Output {
    let mut cmd = coordinator_without_proxy_env();
    cmd.args([
        "--url",
        &server.tickers_template(),
        "--range",
        "0..100",
        "-o",
        "out",
    ])
    .args(extra)
    .envs(env.iter().copied())
    .current_dir(cwd);
    output_of(&mut cmd)
}

#[test]
fn plain_requests_go_through_the_proxy_in_absolute_form_on_every_client_path() {
    let proxy = Tinyproxy::start("");
    let server = Server::start(&[]);
    let via = format!("GET {}/api/tickers/?start=", server.base);
    let url = proxy.url();
    for client in [&[][..], &["--compressed"]] {
        let dir = tempfile::tempdir().unwrap();
        let before = proxy.logged(&via);
        let flags = [&["--proxy", url.as_str()][..], client].concat();
        let out = scrape(&server, &flags, &[], dir.path());
        assert_exit(&out, 0);
        common::assert_complete_run(&dir.path().join("out"), 100);
        assert_eq!(proxy.logged(&via) - before, 10, "{client:?}");
    }
}

#[test]
fn the_proxy_variables_are_honoured_and_no_proxy_bypasses_them() {
    let proxy = Tinyproxy::start("");
    let server = Server::start(&[]);
    let via = format!("GET {}/api/tickers/?start=", server.base);
    let url = proxy.url();
    let cases: [(&[(&str, &str)], usize); 5] = [
        (&[("http_proxy", &url)], 10),
        (&[("HTTP_PROXY", &url)], 10),
        (&[("ALL_PROXY", &url)], 10),
        (&[("http_proxy", &url), ("NO_PROXY", "127.0.0.1")], 0),
        (
            &[("http_proxy", &url), ("no_proxy", "localhost,127.0.0.0/8")],
            0,
        ),
    ];
    for (env, through) in cases {
        let dir = tempfile::tempdir().unwrap();
        let before = proxy.logged(&via);
        let out = scrape(&server, &[], env, dir.path());
        assert_exit(&out, 0);
        common::assert_complete_run(&dir.path().join("out"), 100);
        assert_eq!(proxy.logged(&via) - before, through, "{env:?}");
    }
    // --noproxy replaces NO_PROXY.
    let dir = tempfile::tempdir().unwrap();
    let before = proxy.logged(&via);
    let env = [("http_proxy", url.as_str()), ("NO_PROXY", "127.0.0.1")];
    let out = scrape(&server, &["--noproxy", "example.com"], &env, dir.path());
    assert_exit(&out, 0);
    assert_eq!(proxy.logged(&via) - before, 10);
}

#[test]
fn https_goes_through_a_connect_tunnel_trusting_the_private_ca() {
    let proxy = Tinyproxy::start("");
    let pki = Pki::new();
    let server = pki.server("server", &[]);
    let ca = pki.file("ca.pem");
    let tunnel = format!("CONNECT 127.0.0.1:{}", server.port());
    for client in [&[][..], &["--http2"], &["--compressed"]] {
        let dir = tempfile::tempdir().unwrap();
        let before = proxy.logged(&tunnel);
        let flags = [&["--cacert", ca.as_str()][..], client].concat();
        let env = [("https_proxy", proxy.url())];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = scrape(&server, &flags, &env, dir.path());
        assert_exit(&out, 0);
        common::assert_complete_run(&dir.path().join("out"), 100);
        assert!(
            proxy.logged(&tunnel) > before,
            "{client:?}: no CONNECT logged"
        );
    }
}

#[test]
fn proxy_credentials_are_sent_and_never_shown() {
    let proxy = Tinyproxy::start("BasicAuth scraper s3cr3t-pw");
    let server = Server::start(&[]);
    let pki = Pki::new();
    let tls_server = pki.server("server", &[]);
    let good = format!("http://scraper:s3cr3t-pw@127.0.0.1:{}", proxy.port);
    let bad = format!("http://scraper:wr0ng-pw@127.0.0.1:{}", proxy.port);
    let ca = pki.file("ca.pem");
    for target in [&server, &tls_server] {
        let dir = tempfile::tempdir().unwrap();
        let out = scrape(
            target,
            &["--proxy", &good, "--cacert", &ca],
            &[],
            dir.path(),
        );
        assert_exit(&out, 0);
        common::assert_complete_run(&dir.path().join("out"), 100);

        let dir = tempfile::tempdir().unwrap();
        let out = scrape(target, &["--proxy", &bad, "--cacert", &ca], &[], dir.path());
        assert_exit(&out, 1);
        for line in common::manifest(&dir.path().join("out")) {
            let error = line["error"].as_str().unwrap();
            // tinyproxy answers a plain request 401, a CONNECT 407.
            assert!(error.contains("407") || error.contains("401"), "{error}");
            assert_eq!(
                line["attempts"], 1,
                "{error}: wrong credentials are not retried"
            );
        }
        let everything = format!(
            "{}{}{}",
            String::from_utf8_lossy(&out.stderr),
            fs::read_to_string(dir.path().join("out/manifest.jsonl")).unwrap(),
            fs::read_to_string(dir.path().join("out/run.json")).unwrap(),
        );
        assert!(!everything.contains("wr0ng-pw"), "{everything}");
    }
    // A bad proxy URL is a usage error that hides the password too.
    let dir = tempfile::tempdir().unwrap();
    let out = scrape(
        &server,
        &["--proxy", "socks5://u:hidden-pw@h:1"],
        &[],
        dir.path(),
    );
    assert_exit(&out, 2);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("hidden-pw"));
}

#[test]
fn load_tests_go_through_the_proxy_too() {
    let proxy = Tinyproxy::start("");
    let server = Server::start(&[]);
    let pki = Pki::new();
    let tls_server = pki.server("server", &[]);
    let ca = pki.file("ca.pem");
    for (target, flags) in [
        (&server, &[][..]),
        (&tls_server, &["--cacert", ca.as_str()][..]),
        (&tls_server, &["--cacert", ca.as_str(), "--http2"][..]),
    ] {
        let url = format!("{}/api/tickers/?start=0&limit=10", target.base);
        let mut cmd = coordinator_without_proxy_env();
        cmd.args([
            "load",
            &url,
            "-n",
            "200",
            "-c",
            "4",
            "--json",
            "--proxy",
            &proxy.url(),
        ])
        .args(flags);
        let out = output_of(&mut cmd);
        assert_exit(&out, 0);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["statuses"]["200"], 200, "{flags:?}: {report}");
        assert_eq!(report["requests"], 200, "{flags:?}: {report}");
    }
    assert!(proxy.logged(&format!("GET {}/api/tickers/", server.base)) >= 200);
    assert!(proxy.logged(&format!("CONNECT 127.0.0.1:{}", tls_server.port())) >= 2);
}

#[test]
fn proxy_credentials_go_to_the_proxy_alone_never_through_a_tunnel() {
    let proxy = Tinyproxy::start("BasicAuth scraper s3cr3t-pw");
    let pki = Pki::new();
    let server = pki.server("server", &[]);
    let ca = pki.file("ca.pem");
    let via = format!("http://scraper:s3cr3t-pw@127.0.0.1:{}", proxy.port);
    let tunnel = format!("CONNECT 127.0.0.1:{}", server.port());
    // The built-in server's /echo says whether a request carried Proxy-Authorization.
    let url = format!("{}/echo?start={{start}}", server.base);
    for client in [&[][..], &["--http2"], &["--compressed"]] {
        let dir = tempfile::tempdir().unwrap();
        let before = proxy.logged(&tunnel);
        let mut cmd = coordinator_without_proxy_env();
        cmd.args([
            "--url", &url, "--range", "0..3", "--batch", "1", "-o", "out",
        ])
        .args(["--proxy", &via, "--cacert", &ca, "--robots", "ignore", "-q"])
        .args(client)
        .current_dir(dir.path());
        let out = output_of(&mut cmd);
        assert_exit(&out, 0);
        // tinyproxy let the tunnel through: it was given the credentials.
        assert!(
            proxy.logged(&tunnel) > before,
            "{client:?}: no CONNECT logged"
        );
        for i in 0..3 {
            let page = fs::read(dir.path().join(format!("out/batch{i}-{}.json", i + 1))).unwrap();
            let echo: serde_json::Value = serde_json::from_slice(&page).unwrap();
            assert_eq!(echo["path"], "/echo", "{client:?}: {echo}");
            assert_eq!(echo["proxy_authorization"], false, "{client:?}: {echo}");
        }
    }
}
