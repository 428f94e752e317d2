//! The built-in tickers API as a target: in-process for the default job, or on its own
//! with `coordinator serve`.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use anyhow::Context;
use shared::plan::Span;
use tokio::sync::oneshot;

use crate::cli::ServeArgs;
use crate::cpus;
use crate::error::UsageError;
use crate::exit::Exit;
use crate::messages;
use crate::parse::parse_duration;

/// The built-in API on an ephemeral loopback port, served from a thread of this process
/// for as long as the value lives.
pub struct BuiltinServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl BuiltinServer {
    /// Binds `127.0.0.1:0` and starts serving.
    pub fn start(options: tickers::Options) -> io::Result<BuiltinServer> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = {
            let _inside = runtime.enter();
            tickers::listen(SocketAddr::from(([127, 0, 0, 1], 0)))?
        };
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = thread::Builder::new()
            .name("builtin-target".into())
            .spawn(move || {
                let served = runtime.block_on(async move {
                    tickers::serve(listener, options, None, async {
                        let _ = stopped.await;
                    })
                    .await
                });
                if let Err(e) = served {
                    messages::line(format_args!("built-in target: {e}"));
                }
            })?;
        Ok(BuiltinServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The URL template that pages through this server.
    pub fn url_template(&self) -> String {
        format!(
            "http://{}/api/tickers/?start={{start}}&limit={{limit}}",
            self.addr
        )
    }
}

impl Drop for BuiltinServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `coordinator serve`: serves until SIGINT or SIGTERM. The bound address is printed on
/// stdout (`http://127.0.0.1:PORT`) so that scripts can use port 0.
pub fn serve_forever(args: &ServeArgs) -> anyhow::Result<Exit> {
    let (addr, options) = serve_options(args)?;
    let tls = serve_tls(args)?;
    // Every client connection is a descriptor here too.
    crate::open_files::raise();
    let (listeners, bound) = listen_on_every_core(addr)?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stop = Arc::new(stop);
    let mut listeners = listeners.into_iter();
    let (main_runtime, main_listener) = listeners.next().context("no event loop")?;
    // Caught before the address is out: a script may signal the server as soon as it
    // has read it, and the other loops answer requests before this one runs.
    let signals = {
        let _inside = main_runtime.enter();
        StopSignals::new().context("catching SIGINT and SIGTERM")?
    };
    announce(if tls.is_some() { "https" } else { "http" }, bound)?;
    let others = listeners
        .enumerate()
        .map(|(i, (runtime, listener))| {
            let mut stopped = stopped.clone();
            let tls = tls.clone();
            thread::Builder::new()
                .name(format!("serve-{}", i + 1))
                .spawn(move || {
                    runtime.block_on(tickers::serve(listener, options, tls, async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    }))
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .context("starting the server threads")?;
    let signal_stop = Arc::clone(&stop);
    let served = main_runtime.block_on(tickers::serve(main_listener, options, tls, async move {
        signals.recv().await;
        let _ = signal_stop.send(true);
    }));
    // Also when this loop failed: the others must not serve on alone.
    let _ = stop.send(true);
    for other in others {
        other
            .join()
            .map_err(|_| anyhow::anyhow!("a server thread panicked"))??;
    }
    served?;
    Ok(Exit::Ok)
}

/// The address and the server's options, from `serve`'s flags.
fn serve_options(args: &ServeArgs) -> Result<(SocketAddr, tickers::Options), UsageError> {
    let addr: SocketAddr = match args.port {
        Some(port) => SocketAddr::from(([127, 0, 0, 1], port)),
        None => args.addr.parse().map_err(|_| {
            UsageError::new(
                "--addr",
                format!("`{}` is not an IP:PORT address", args.addr),
            )
        })?,
    };
    let delay_ms: Span = args
        .delay
        .parse()
        .map_err(|e| UsageError::new("--delay", e))?;
    let share = |flag: &'static str, value: f64| {
        if (0.0..=1.0).contains(&value) {
            Ok(value)
        } else {
            Err(UsageError::new(
                flag,
                format!("{value} is not a share from 0.0 to 1.0"),
            ))
        }
    };
    let stall = parse_duration(&args.stall).map_err(|e| UsageError::new("--stall", e))?;
    let options = tickers::Options {
        delay_ms,
        coins: args.coins,
        compress: args.compress,
        faults: tickers::Faults {
            fail: share("--fail-rate", args.fail_rate)?,
            throttle: share("--throttle-rate", args.throttle_rate)?,
            retry_after_s: args.retry_after,
            drop: share("--drop-rate", args.drop_rate)?,
            truncate: share("--truncate-rate", args.truncate_rate)?,
            stall: share("--stall-rate", args.stall_rate)?,
            stall_ms: stall.as_millis() as u64,
        },
        max_rate: match args.max_rate {
            Some(0) => return Err(UsageError::new("--max-rate", "must be at least 1")),
            rate => rate,
        },
        robots_txt: match &args.robots_txt {
            Some(path) => Some(robots_txt(path)?),
            None => None,
        },
    };
    Ok((addr, options))
}

/// The text of `serve --robots-txt FILE`, read once. It is kept for the life of the
/// process (which serves it until it exits), so that the server's options stay `Copy`.
fn robots_txt(path: &Path) -> Result<&'static str, UsageError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        UsageError::new(
            "--robots-txt",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    Ok(Box::leak(text.into_boxed_str()))
}

/// The server's TLS set-up, when `--tls-cert` and `--tls-key` ask for HTTPS.
fn serve_tls(args: &ServeArgs) -> Result<Option<Arc<rustls::ServerConfig>>, UsageError> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    tickers::server_config(cert, key, args.tls_client_ca.as_deref())
        .map(Some)
        .map_err(|e| UsageError::new("--tls-cert", e))
}

/// The event loops of the server and where they listen.
type Loops = Vec<(tokio::runtime::Runtime, tokio::net::TcpListener)>;

/// One single-threaded event loop per core, all accepting from the one listening
/// socket: like the workers, no work stealing between threads, and accepts in
/// parallel. (Not SO_REUSEPORT: a second server on a taken port must still fail.)
/// Returns them with the bound address.
fn listen_on_every_core(addr: SocketAddr) -> anyhow::Result<(Loops, SocketAddr)> {
    let loops = cpus::usable_cpus().len().max(1);
    let runtimes = (0..loops)
        .map(|_| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        })
        .collect::<Result<Vec<_>, _>>()
        .context("starting the server runtimes")?;
    let socket = {
        let _inside = runtimes[0].enter();
        tickers::listen(addr)
            .map_err(|e| UsageError::new("--addr", format!("cannot listen on {addr}: {e}")))?
            .into_std()?
    };
    let bound = socket.local_addr()?;
    let mut listeners = Vec::with_capacity(loops);
    for runtime in runtimes {
        let listener = {
            let _inside = runtime.enter();
            tokio::net::TcpListener::from_std(socket.try_clone()?)?
        };
        listeners.push((runtime, listener));
    }
    drop(socket);
    Ok((listeners, bound))
}

/// Prints the address the server listens on: one line on stdout, for scripts, and one
/// for people on stderr.
fn announce(scheme: &str, bound: SocketAddr) -> io::Result<()> {
    let mut stdout = io::stdout();
    writeln!(stdout, "{scheme}://{bound}")?;
    stdout.flush()?;
    messages::line(format_args!(
        "serving the tickers API on {scheme}://{bound}/api/tickers/?start=0&limit=10 (Ctrl-C stops)"
    ));
    Ok(())
}

/// SIGINT and SIGTERM, caught from the moment this is made (within a runtime).
struct StopSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> io::Result<StopSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for either.
    async fn recv(mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}
