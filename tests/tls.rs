//! HTTPS for real: a private CA and its certificates made here (rcgen), served by the
//! built-in server (`serve --tls-cert --tls-key [--tls-client-ca]`), fetched by the
//! real binary in scrape and load runs, through every client path.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    date_time_ymd,
};

use crate::common::{self, Nginx, Server, assert_exit, coordinator, output_of};

/// The certificates of one test, as PEM files in a directory.
pub struct Pki {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Pki {
    /// A CA, and signed by it: `server` (localhost, 127.0.0.1), `expired` (the same
    /// names, valid in 2020 only), `elsewhere` (other.example only); a second CA for
    /// clients and its `client` certificate.
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let (ca, ca_key) = authority("test server CA");
        fs::write(path.join("ca.pem"), ca.pem()).unwrap();
        let local = || vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let leaf = |name: &str, params: CertificateParams, issuer, issuer_key| {
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, issuer, issuer_key).unwrap();
            fs::write(path.join(format!("{name}.pem")), cert.pem()).unwrap();
            fs::write(path.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        };
        leaf(
            "server",
            CertificateParams::new(local()).unwrap(),
            &ca,
            &ca_key,
        );
        let mut expired = CertificateParams::new(local()).unwrap();
        expired.not_before = date_time_ymd(2020, 1, 1);
        expired.not_after = date_time_ymd(2020, 12, 31);
        leaf("expired", expired, &ca, &ca_key);
        let elsewhere = CertificateParams::new(vec!["other.example".to_owned()]).unwrap();
        leaf("elsewhere", elsewhere, &ca, &ca_key);
        let (client_ca, client_ca_key) = authority("test client CA");
        fs::write(path.join("client-ca.pem"), client_ca.pem()).unwrap();
        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client
            .distinguished_name
            .push(DnType::CommonName, "test client");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        leaf("client", client, &client_ca, &client_ca_key);
        Pki { _dir: dir, path }
    }

    /// The path of one of its files, e.g. `ca.pem`.
    pub fn file(&self, name: &str) -> String {
        self.path.join(name).display().to_string()
    }

    /// The built-in server over HTTPS with the certificate `name`, and `extra` flags.
    pub fn server(&self, name: &str, extra: &[&str]) -> Server {
        let cert = self.file(&format!("{name}.pem"));
        let key = self.file(&format!("{name}.key"));
        let mut args = vec!["--tls-cert", &cert, "--tls-key", &key];
        args.extend_from_slice(extra);
        Server::start(&args)
    }
}

fn authority(name: &str) -> (rcgen::Certificate, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    (params.self_signed(&key).unwrap(), key)
}

/// A scrape of `range` from `server`'s tickers into `cwd/out`, with `extra` flags and
/// `env` set; the system's own trust settings are taken away so that only what the
/// test gives counts.
fn scrape(
    server: &Server,
    range: &str,
    extra: &[&str],
    env: &[(&str, &str)],
    cwd: &Path,
) -> Output {
    let mut cmd = coordinator();
    cmd.args([
        "--url",
        &server.tickers_template(),
        "--range",
        range,
        "-o",
        "out",
    ])
    .args(extra)
    .env_remove("SSL_CERT_FILE")
    .env_remove("SSL_CERT_DIR")
    .current_dir(cwd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    output_of(&mut cmd)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_untrusted_certificate_fails_each_batch_once_and_says_what_to_do() {
    let pki = Pki::new();
    let server = pki.server("server", &[]);
    for client in [&[][..], &["--http2"], &["--compressed"]] {
        let dir = tempfile::tempdir().unwrap();
        let out = scrape(&server, "0..50", client, &[], dir.path());
        assert_exit(&out, 1);
        let host = format!("127.0.0.1:{}", server.port());
        for line in common::manifest(&dir.path().join("out")) {
            let error = line["error"].as_str().unwrap();
            assert!(
                error.contains(&host)
                    && error.contains("unknown authority")
                    && error.contains("--cacert"),
                "{client:?}: {error}"
            );
            assert_eq!(
                line["attempts"], 1,
                "{client:?}: a certificate is not retried"
            );
        }
        assert!(
            stderr(&out).contains("unknown authority"),
            "{}",
            stderr(&out)
        );
        assert_eq!(
            common::file_names(&dir.path().join("out")),
            ["manifest.jsonl", "run.json"].map(String::from).into()
        );
    }
}

#[test]
fn cacert_and_ssl_cert_file_trust_a_private_ca_on_every_client_path() {
    let pki = Pki::new();
    let server = pki.server("server", &[]);
    let ca = pki.file("ca.pem");
    type Env<'a> = &'a [(&'a str, &'a str)];
    let cases: [(&[&str], Env); 5] = [
        (&["--cacert", &ca], &[]),
        (&["--cacert", &ca, "--http2"], &[]),
        (&["--cacert", &ca, "--compressed"], &[]),
        (&[], &[("SSL_CERT_FILE", &ca)]),
        (&["--http2"], &[("SSL_CERT_FILE", &ca)]),
    ];
    for (flags, env) in cases {
        let dir = tempfile::tempdir().unwrap();
        let out = scrape(&server, "0..200", flags, env, dir.path());
        assert_exit(&out, 0);
        common::assert_complete_run(&dir.path().join("out"), 200);
    }
}

#[test]
fn ssl_cert_dir_is_read_as_openssl_reads_it() {
    let pki = Pki::new();
    let server = pki.server("server", &[]);
    let certs = tempfile::tempdir().unwrap();
    fs::copy(pki.file("ca.pem"), certs.path().join("private-ca.pem")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs.path().display().to_string();
    let out = scrape(
        &server,
        "0..50",
        &[],
        &[("SSL_CERT_DIR", &certs)],
        dir.path(),
    );
    assert_exit(&out, 0);
    common::assert_complete_run(&dir.path().join("out"), 50);
}

#[test]
fn insecure_trusts_any_certificate_and_says_so() {
    let pki = Pki::new();
    let server = pki.server("elsewhere", &[]);
    let dir = tempfile::tempdir().unwrap();
    let out = scrape(&server, "0..50", &["-k"], &[], dir.path());
    assert_exit(&out, 0);
    common::assert_complete_run(&dir.path().join("out"), 50);
    let warnings = stderr(&out).matches("warning: --insecure").count();
    assert_eq!(warnings, 1, "{}", stderr(&out));
    let record = fs::read_to_string(dir.path().join("out/run.json")).unwrap();
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(record["insecure"], true);
}

#[test]
fn an_expired_and_a_wrong_host_certificate_fail_with_their_own_messages() {
    let pki = Pki::new();
    let ca = pki.file("ca.pem");
    for (name, expected) in [
        ("expired", "certificate has expired"),
        ("elsewhere", "not valid for the name 127.0.0.1"),
    ] {
        let server = pki.server(name, &[]);
        for client in [&[][..], &["--http2"], &["--compressed"]] {
            let dir = tempfile::tempdir().unwrap();
            let flags = [&["--cacert", ca.as_str()][..], client].concat();
            let out = scrape(&server, "0..20", &flags, &[], dir.path());
            assert_exit(&out, 1);
            for line in common::manifest(&dir.path().join("out")) {
                let error = line["error"].as_str().unwrap();
                assert!(error.contains(expected), "{name} {client:?}: {error}");
                assert_eq!(line["attempts"], 1);
            }
        }
    }
}

#[test]
fn a_server_that_asks_for_a_client_certificate_gets_one_from_cert_and_key() {
    let pki = Pki::new();
    let client_ca = pki.file("client-ca.pem");
    let server = pki.server("server", &["--tls-client-ca", &client_ca]);
    let (ca, cert, key) = (
        pki.file("ca.pem"),
        pki.file("client.pem"),
        pki.file("client.key"),
    );
    for client in [&[][..], &["--http2"], &["--compressed"]] {
        let dir = tempfile::tempdir().unwrap();
        let trusted = [&["--cacert", ca.as_str()][..], client].concat();
        let out = scrape(&server, "0..20", &trusted, &[], dir.path());
        assert_exit(&out, 1);
        for line in common::manifest(&dir.path().join("out")) {
            let error = line["error"].as_str().unwrap();
            assert!(
                error.contains("--cert FILE --key FILE"),
                "{client:?}: {error}"
            );
            assert_eq!(line["attempts"], 1, "{client:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let with_cert = [&trusted[..], &["--cert", &cert, "--key", &key]].concat();
        let out = scrape(&server, "0..100", &with_cert, &[], dir.path());
        assert_exit(&out, 0);
        common::assert_complete_run(&dir.path().join("out"), 100);
    }
}

#[test]
fn a_run_whose_first_fifty_batches_meet_the_same_tls_error_stops_early() {
    let pki = Pki::new();
    let server = pki.server("server", &[]);
    let dir = tempfile::tempdir().unwrap();
    // 2,000 batches, a few in flight at a time: walking them all would take a while.
    let out = scrape(
        &server,
        "0..20000",
        &["-w", "1", "-c", "4"],
        &[],
        dir.path(),
    );
    assert_exit(&out, 1);
    let lines = common::manifest_lines(&dir.path().join("out"));
    assert!((50..200).contains(&lines), "{lines} batches recorded");
    assert!(
        stderr(&out).contains("the first 50 batches all failed with the same TLS error"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unusable_tls_files_are_usage_errors_before_anything_is_written() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not.pem");
    fs::write(&not_pem, "hello").unwrap();
    let not_pem = not_pem.display().to_string();
    let (cert, other_key) = (pki.file("client.pem"), pki.file("server.key"));
    let cases: [(&[&str], &str); 5] = [
        (
            &["--cacert", "/no/such/ca.pem"],
            "--cacert: /no/such/ca.pem: No such file",
        ),
        (&["--cacert", &not_pem], "no PEM certificate"),
        (&["--cert", &cert, "--key", &not_pem], "no PEM private key"),
        (&["--cert", &cert, "--key", &other_key], "--cert"),
        (&["--cert", &cert], "--key"),
    ];
    for (flags, expected) in cases {
        common::assert_usage_error("https://127.0.0.1:9/{start}", flags, expected, dir.path());
    }
}

/// `load` against `server`'s first tickers page with `flags`: the report as JSON.
fn load(server: &Server, flags: &[&str]) -> serde_json::Value {
    let url = format!("{}/api/tickers/?start=0&limit=10", server.base);
    let mut cmd = coordinator();
    cmd.args(["load", &url, "-n", "400", "-c", "4", "--json"])
        .args(flags)
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    let out = output_of(&mut cmd);
    assert_exit(&out, 0);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn load_tests_https_over_both_http_versions_with_and_without_keepalive() {
    let pki = Pki::new();
    let server = pki.server("server", &[]);
    let ca = pki.file("ca.pem");
    let cases: [(&[&str], u64); 5] = [
        (&["--cacert", &ca], 4),
        (&["--cacert", &ca, "--no-keepalive"], 400),
        (&["--cacert", &ca, "--http2", "--streams", "4"], 4),
        (&["-k", "--http2"], 4),
        (&["--cacert", &ca, "--http2", "--no-keepalive"], 400),
    ];
    for (flags, handshakes) in cases {
        let report = load(&server, flags);
        assert_eq!(report["statuses"]["200"], 400, "{flags:?}: {report}");
        assert_eq!(report["errors"]["tls"], 0, "{flags:?}");
        let tls = &report["tls_handshake_ms"];
        assert!(tls["p50"].as_f64().unwrap() > 0.0, "{flags:?}: {report}");
        assert_eq!(tls["count"], handshakes, "{flags:?}: {report}");
    }
}

#[test]
fn a_load_test_without_trust_counts_tls_errors() {
    let pki = Pki::new();
    let server = pki.server("server", &[]);
    let url = format!("{}/api/tickers/?start=0&limit=10", server.base);
    let mut cmd = coordinator();
    cmd.args(["load", &url, "-n", "20", "-c", "2", "--json"])
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    let out = output_of(&mut cmd);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors"]["tls"], 20, "{report}");
    assert_eq!(report["responses"], 0);
}

/// What nginx over TLS needs: the certificates, a directory for its files and its
/// `www`, all readable by its workers (they run as nobody), and the `server` lines
/// that name the certificate and key.
fn nginx_tls_setup() -> (Pki, tempfile::TempDir, PathBuf, String) {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new();
    fs::set_permissions(&pki.path, fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let www = dir.path().join("www");
    fs::create_dir(&www).unwrap();
    let tls = format!(
        "ssl_certificate {};\n    ssl_certificate_key {};",
        pki.file("server.pem"),
        pki.file("server.key")
    );
    (pki, dir, www, tls)
}

#[test]
fn nginx_over_tls_with_a_private_ca_serves_every_client_path() {
    let (pki, dir, www, tls) = nginx_tls_setup();
    let pages: Vec<String> = (0..20)
        .map(|i| format!("{{\"page\":{i},\"text\":\"{}\"}}", "x".repeat(i * 500)))
        .collect();
    for (i, page) in pages.iter().enumerate() {
        fs::write(www.join(format!("p{i}.json")), page).unwrap();
    }
    let nginx = Nginx::start(dir.path(), &www, "ssl http2", &tls, "$server_protocol");
    let urls: String = (0..pages.len())
        .map(|i| format!("https://localhost:{}/p{i}.json\n", nginx.port))
        .collect();
    fs::write(dir.path().join("urls.txt"), urls).unwrap();
    let ca = pki.file("ca.pem");
    // ALPN picks HTTP/2 unless the run asks for HTTP/1.1 only (--compressed does).
    let protocols = [
        (&[][..], "HTTP/2.0"),
        (&["--http2"], "HTTP/2.0"),
        (&["--compressed"], "HTTP/1.1"),
    ];
    for (client, protocol) in protocols {
        let log = dir.path().join("access.log");
        let before = fs::read_to_string(&log).unwrap_or_default().lines().count();
        let run = tempfile::tempdir().unwrap();
        let mut cmd = coordinator();
        cmd.args(["--urls"])
            .arg(dir.path().join("urls.txt"))
            .args(["--name", "p{index}.json", "-o", "out", "--cacert", &ca])
            // nginx's log holds the pages' lines alone.
            .args(["--robots", "ignore"])
            .args(client)
            .current_dir(run.path());
        let out = output_of(&mut cmd);
        assert_exit(&out, 0);
        for (i, page) in pages.iter().enumerate() {
            let got = fs::read_to_string(run.path().join(format!("out/p{i}.json"))).unwrap();
            assert_eq!(&got, page, "{client:?} page {i}");
        }
        // nginx writes a log line once it has sent its answer: waited for, not assumed.
        let read = || -> Vec<String> {
            let text = fs::read_to_string(&log).unwrap_or_default();
            text.lines().skip(before).map(str::to_owned).collect()
        };
        let all_in = common::eventually(std::time::Duration::from_secs(10), || {
            read().len() >= pages.len()
        });
        let lines = read();
        assert!(
            all_in && lines.len() == pages.len(),
            "{client:?}: {lines:?}"
        );
        assert!(lines.iter().all(|l| l == protocol), "{client:?}: {lines:?}");
    }
    // Without the CA nginx's certificate is refused like any other.
    let run = tempfile::tempdir().unwrap();
    let mut cmd = coordinator();
    cmd.args(["--urls"])
        .arg(dir.path().join("urls.txt"))
        .args(["-o", "out"])
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .current_dir(run.path());
    let out = output_of(&mut cmd);
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("unknown authority"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_burst_to_a_new_tls_host_makes_one_connection_for_http2_and_a_full_pool_for_http1() {
    use std::os::unix::fs::PermissionsExt;
    let (pki, dir, www, tls) = nginx_tls_setup();
    for i in 0..300 {
        fs::write(www.join(format!("p{i}.json")), format!("{{\"page\":{i}}}")).unwrap();
    }
    let ca = pki.file("ca.pem");
    // ALPN offers h2 and http/1.1: the first connection's answer decides for the 40
    // requests that wait for it.
    for (listen, http2) in [("ssl http2", true), ("ssl", false)] {
        let home = dir.path().join(if http2 { "h2" } else { "h1" });
        fs::create_dir(&home).unwrap();
        fs::set_permissions(&home, fs::Permissions::from_mode(0o755)).unwrap();
        // $connection numbers every connection nginx accepts, used or not.
        let nginx = Nginx::start(&home, &www, listen, &tls, "$connection");
        let scrape = |count: usize| {
            let urls: String = (0..count)
                .map(|i| format!("https://localhost:{}/p{i}.json\n", nginx.port))
                .collect();
            let run = tempfile::tempdir().unwrap();
            fs::write(run.path().join("urls.txt"), urls).unwrap();
            let mut cmd = coordinator();
            cmd.args(["--urls", "urls.txt", "-o", "out", "--cacert", &ca])
                .args(["--robots", "ignore", "-w", "1", "-c", "40"])
                .current_dir(run.path());
            assert_exit(&output_of(&mut cmd), 0);
        };
        let log = home.join("access.log");
        let ids = || -> Vec<u64> {
            let text = fs::read_to_string(&log).unwrap_or_default();
            text.lines().filter_map(|l| l.parse().ok()).collect()
        };
        scrape(300);
        // nginx logs a request once answered: waited for, not assumed.
        assert!(common::eventually(
            std::time::Duration::from_secs(10),
            || ids().len() == 300
        ));
        let run_ids: std::collections::BTreeSet<u64> = ids().into_iter().collect();
        // The next connection anyone makes shows how many the run opened in all.
        scrape(1);
        assert!(common::eventually(
            std::time::Duration::from_secs(10),
            || ids().len() == 301
        ));
        let next = *ids().last().unwrap();
        let first = *run_ids.first().unwrap();
        let opened = next - first;
        if http2 {
            assert_eq!((run_ids.len(), opened), (1, 1), "{run_ids:?}, next {next}");
        } else {
            // One per request in flight, each used to the end of the run.
            assert!(run_ids.len() <= 40, "{} connections", run_ids.len());
            assert_eq!(opened, run_ids.len() as u64, "{run_ids:?}, next {next}");
        }
    }
}

#[test]
fn an_http2_load_test_without_keepalive_opens_a_connection_per_request_on_nginx() {
    let (pki, dir, www, tls) = nginx_tls_setup();
    fs::write(www.join("page.json"), "{\"ok\":true}").unwrap();
    // $connection numbers every connection nginx accepts.
    let nginx = Nginx::start(
        dir.path(),
        &www,
        "ssl http2",
        &tls,
        "$server_protocol $connection",
    );
    let url = format!("https://localhost:{}/page.json", nginx.port);
    let log = dir.path().join("access.log");
    let lines = || -> Vec<String> {
        let text = fs::read_to_string(&log).unwrap_or_default();
        text.lines().map(str::to_owned).collect()
    };
    let mut seen = 0;
    for (keepalive, requests) in [(false, 60), (true, 60)] {
        let mut cmd = coordinator();
        cmd.args([
            "load",
            &url,
            "-n",
            &requests.to_string(),
            "-c",
            "3",
            "-w",
            "1",
        ])
        .args(["--http2", "--json", "--cacert", &pki.file("ca.pem")]);
        if !keepalive {
            cmd.arg("--no-keepalive");
        }
        let out = output_of(&mut cmd);
        assert_exit(&out, 0);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["statuses"]["200"], requests, "{report}");
        // nginx logs a request once answered: waited for, not assumed.
        let all_in = common::eventually(std::time::Duration::from_secs(10), || {
            lines().len() >= seen + requests
        });
        let run: Vec<String> = lines().split_off(seen);
        seen += run.len();
        assert!(all_in && run.len() == requests, "{run:?}");
        assert!(run.iter().all(|l| l.starts_with("HTTP/2.0 ")), "{run:?}");
        let connections: std::collections::BTreeSet<&str> =
            run.iter().filter_map(|l| l.split(' ').nth(1)).collect();
        let expected = if keepalive { 3 } else { requests };
        assert_eq!(
            connections.len(),
            expected,
            "keep-alive {keepalive}: {run:?}"
        );
    }
}

/// A TLS server on raw sockets (rustls) that answers every request with `page` as a
/// body ended by closing the connection, with a TLS close_notify or without one.
fn close_delimited_server(pki: &Pki, page: &'static [u8], close_notify: bool) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::io::{Read, Write};
    use std::sync::Arc;
    let certs = CertificateDer::pem_file_iter(pki.file("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.file("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let config = Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let config = Arc::clone(&config);
            std::thread::spawn(move || -> std::io::Result<()> {
                let conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
                let mut tls = rustls::StreamOwned::new(conn, stream);
                let mut head = Vec::new();
                let mut chunk = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = tls.read(&mut chunk)?;
                    if n == 0 {
                        return Ok(());
                    }
                    head.extend_from_slice(&chunk[..n]);
                }
                // No Content-Length, not chunked: the body ends where the connection does.
                tls.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
                tls.write_all(page)?;
                tls.flush()?;
                if close_notify {
                    tls.conn.send_close_notify();
                    tls.flush()?;
                }
                // Dropped: the TCP connection closes.
                Ok(())
            });
        }
    });
    port
}

#[test]
fn a_body_ended_by_a_close_counts_over_tls_only_with_close_notify() {
    const PAGE: &[u8] = b"{\"page\":\"ended by the close\"}";
    let pki = Pki::new();
    let ca = pki.file("ca.pem");
    // The lean HTTP/1.1 client, and reqwest (which --compressed takes).
    for client in [&[][..], &["--compressed"]] {
        for close_notify in [true, false] {
            let port = close_delimited_server(&pki, PAGE, close_notify);
            let dir = tempfile::tempdir().unwrap();
            let url = format!("https://localhost:{port}/p?start={{start}}");
            let flags = [
                "--batch",
                "1",
                "--cacert",
                &ca,
                "--robots",
                "ignore",
                "--retries",
                "0",
            ];
            let out = common::scrape(&url, "0..1", &[&flags[..], client].concat(), dir.path());
            let page = dir.path().join("out/batch0-1.json");
            if close_notify {
                assert_exit(&out, 0);
                assert_eq!(fs::read(&page).unwrap(), PAGE, "{client:?}");
                continue;
            }
            // Without close_notify a cut-off body and a whole one look the same: the
            // attempt fails rather than store what may be part of a page.
            assert_exit(&out, 1);
            assert!(!page.exists(), "{client:?}");
            let lines = common::manifest(&dir.path().join("out"));
            assert!(lines[0]["file"].is_null(), "{client:?}: {}", lines[0]);
            let error = lines[0]["error"].as_str().unwrap();
            assert!(error.contains("close_notify"), "{client:?}: {error}");
        }
    }
}
