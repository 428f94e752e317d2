//! `load --http2`: HTTP/2 with prior knowledge (h2c) on the `h2` crate. Each connection
//! carries `streams` drivers, each of which sends a request, waits for the whole
//! response, and sends the next, like an HTTP/1.1 connection does. With
//! `--no-keepalive` a connection carries one request (`streams` is then 1) and closes.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use http::uri::Scheme;
use http::{Request, Uri};
use shared::loadtest::{LoadSpec, Targets};
use tokio::sync::OnceCell;

use super::{Answer, ErrorKind, State};
use crate::client::h2c::handshake;

/// One HTTP/2 connection of the load generator: opened by the first stream that needs
/// it, shared by the others, and opened anew once it fails.
#[derive(Default)]
pub(super) struct Connection {
    current: RefCell<Rc<OnceCell<SendRequest<Bytes>>>>,
}

impl Connection {
    /// Forgets `failed`, if it is still the current connection, so that the next
    /// request opens another.
    fn forget(&self, failed: &Rc<OnceCell<SendRequest<Bytes>>>) {
        let mut current = self.current.borrow_mut();
        if Rc::ptr_eq(&current, failed) {
            *current = Rc::default();
        }
    }
}

/// The URIs of a run's requests over HTTP/2, parsed once: cloning one only counts
/// references.
pub(super) enum Uris {
    /// One per path of a list, in its order (`None`: a path that is no URI).
    Listed(Vec<Option<Uri>>),
    /// The scheme and authority that paths rendered per request go with.
    Rendered(Option<Uri>),
}

impl Uris {
    /// The URIs of `spec`'s requests.
    pub(super) fn new(spec: &LoadSpec) -> Uris {
        let scheme = match spec.tls {
            Some(_) => Scheme::HTTPS,
            None => Scheme::HTTP,
        };
        let with = |path: &str| {
            Uri::builder()
                .scheme(scheme.clone())
                .authority(spec.authority.as_str())
                .path_and_query(path)
                .build()
                .ok()
        };
        match &spec.targets {
            Targets::Paths(paths) if !paths.is_empty() => {
                Uris::Listed(paths.iter().map(|p| with(p)).collect())
            }
            _ => Uris::Rendered(with("/")),
        }
    }

    /// The URI of request `n`.
    fn get(&self, targets: &Targets, n: u64) -> Result<Uri, ErrorKind> {
        match self {
            Uris::Listed(list) if !list.is_empty() => list[(n % list.len() as u64) as usize]
                .clone()
                .ok_or(ErrorKind::Read),
            Uris::Listed(_) | Uris::Rendered(None) => Err(ErrorKind::Read),
            Uris::Rendered(Some(base)) => {
                let mut parts = base.clone().into_parts();
                parts.path_and_query = Some(targets.path(n).parse().map_err(|_| ErrorKind::Read)?);
                Uri::from_parts(parts).map_err(|_| ErrorKind::Read)
            }
        }
    }
}

/// One stream of `connection`: claim a request, send it, record the answer, again.
pub(super) async fn drive(state: Rc<State>, connection: Rc<Connection>) {
    let timeout = Duration::from_millis(state.spec.timeout_ms);
    while let Some(slot) = state.claim() {
        if let Some(due) = slot.due {
            tokio::time::sleep_until(due.into()).await;
        }
        let sent = Instant::now();
        let used = Rc::clone(&connection.current.borrow());
        let result = tokio::time::timeout(timeout, exchange(&state, &used, slot.n)).await;
        // Without keep-alive the connection carried its one request: once its last
        // handle is dropped, the h2 connection says GOAWAY and closes.
        if !state.spec.keepalive || matches!(result, Ok(Err(ErrorKind::Connect | ErrorKind::Reset)))
        {
            connection.forget(&used);
        }
        state.record_result(result, &slot, sent);
    }
}

async fn exchange(
    state: &State,
    connection: &OnceCell<SendRequest<Bytes>>,
    n: u64,
) -> Result<Answer, ErrorKind> {
    let made = Cell::new(None);
    let send = connection
        .get_or_try_init(|| async {
            let (stream, set_up) = state.connect().await?;
            let (send, connection) = handshake(stream).await.map_err(|_| ErrorKind::Connect)?;
            tokio::task::spawn_local(async move {
                let _ = connection.await;
            });
            made.set(Some(set_up));
            Ok(send)
        })
        .await?
        .clone();
    let mut request = Request::new(());
    *request.uri_mut() = state.h2_uris.get(&state.spec.targets, n)?;
    *request.method_mut() = state.verb.method.clone();
    *request.headers_mut() = state.h2_headers.clone();
    let body = state.body(n).filter(|b| !b.is_empty());
    if state.verb.framed {
        let len = body.as_ref().map_or(0, Bytes::len);
        request
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, len.into());
    }
    // Waits while the connection has as many streams open as the server allows.
    let mut send = send.ready().await.map_err(|_| ErrorKind::Reset)?;
    let sent = Instant::now();
    let (response, mut outgoing) = send
        .send_request(request, body.is_none())
        .map_err(|_| ErrorKind::Reset)?;
    if let Some(body) = body {
        // Queued whole: the connection sends it as the flow-control window opens.
        outgoing
            .send_data(body, true)
            .map_err(|_| ErrorKind::Reset)?;
    }
    let response = response.await.map_err(|_| ErrorKind::Reset)?;
    let first_byte = Instant::now();
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = 0;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|_| ErrorKind::Read)?;
        bytes += chunk.len() as u64;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    Ok(Answer {
        status,
        bytes,
        keep_alive: true,
        sent,
        first_byte,
        connect: made.get(),
    })
}
