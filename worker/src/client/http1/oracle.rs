//! The reader against a reference: hyper's HTTP/1.1 client reads the same responses,
//! and ours, handed them in random pieces, must agree on status and body. Garbage
//! never panics, never grows a buffer past its cap and never passes for a response.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadBuf};

use super::*;

/// A reader that hands out `wire` in pieces of the sizes given, in turn.
struct Pieces<'a> {
    wire: &'a [u8],
    sizes: &'a [usize],
    next: usize,
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let size = self.sizes[self.next % self.sizes.len()];
        self.next += 1;
        let n = self.wire.len().min(size).min(out.remaining());
        out.put_slice(&self.wire[..n]);
        self.wire = &self.wire[n..];
        Poll::Ready(Ok(()))
    }
}

#[derive(Debug, Clone)]
enum Framing {
    Length,
    Chunked {
        sizes: Vec<usize>,
        ext: bool,
        trailers: usize,
    },
    Close,
}

/// A valid response: its wire bytes, and the status and body it carries.
fn response() -> impl Strategy<Value = (Vec<u8>, u16, Vec<u8>)> {
    let framing = prop_oneof![
        Just(Framing::Length),
        (
            prop::collection::vec(1usize..300, 1..8),
            any::<bool>(),
            0usize..3
        )
            .prop_map(|(sizes, ext, trailers)| Framing::Chunked {
                sizes,
                ext,
                trailers
            }),
        Just(Framing::Close),
    ];
    (
        prop::collection::vec(prop::sample::select(vec![100u16, 102, 103]), 0..3),
        prop::sample::select(vec![200u16, 201, 204, 304, 404, 500]),
        prop::collection::vec(any::<u8>(), 0..2000),
        framing,
    )
        .prop_map(|(interim, status, body, framing)| {
            let mut wire = Vec::new();
            for code in interim {
                wire.extend(format!("HTTP/1.1 {code} Interim\r\nLink: </x>\r\n\r\n").bytes());
            }
            wire.extend(format!("HTTP/1.1 {status} Whatever\r\nX-A: b\r\n").bytes());
            let body = if matches!(status, 204 | 304) {
                Vec::new()
            } else {
                body
            };
            match framing {
                _ if matches!(status, 204 | 304) => wire.extend(b"\r\n"),
                Framing::Length => {
                    wire.extend(format!("Content-Length: {}\r\n\r\n", body.len()).bytes());
                    wire.extend(&body);
                }
                Framing::Chunked {
                    sizes,
                    ext,
                    trailers,
                } => {
                    wire.extend(b"Transfer-Encoding: chunked\r\n\r\n");
                    let mut rest = &body[..];
                    for size in sizes.iter().cycle() {
                        if rest.is_empty() {
                            break;
                        }
                        let (chunk, more) = rest.split_at((*size).min(rest.len()));
                        let ext = if ext { ";name=\"v\"" } else { "" };
                        wire.extend(format!("{:x}{ext}\r\n", chunk.len()).bytes());
                        wire.extend(chunk);
                        wire.extend(b"\r\n");
                        rest = more;
                    }
                    wire.extend(b"0\r\n");
                    for t in 0..trailers {
                        wire.extend(format!("X-Trailer-{t}: v\r\n").bytes());
                    }
                    wire.extend(b"\r\n");
                }
                Framing::Close => {
                    wire.extend(b"Connection: close\r\n\r\n");
                    wire.extend(&body);
                }
            }
            (wire, status, body)
        })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// What hyper's client makes of `wire`, sent after its request, then the end.
async fn hyper_reads(wire: Vec<u8>) -> Option<(u16, Vec<u8>)> {
    let (ours, mut theirs) = tokio::io::duplex(1 << 20);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(ours))
        .await
        .ok()?;
    tokio::spawn(conn);
    tokio::spawn(async move {
        let mut request = vec![0; 4096];
        let _ = theirs.read(&mut request).await;
        let _ = theirs.write_all(&wire).await;
        let _ = theirs.shutdown().await;
        // Held until the client is done reading.
        let _ = theirs.read(&mut request).await;
    });
    let request = http::Request::get("/").body(Empty::<Bytes>::new()).ok()?;
    let response = send.send_request(request).await.ok()?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, body.to_vec()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn valid_responses_in_any_pieces_read_as_hyper_reads_them(
        (wire, status, body) in response(),
        sizes in prop::collection::vec(1usize..200, 1..10),
    ) {
        let rt = runtime();
        let reference = rt.block_on(hyper_reads(wire.clone()));
        prop_assert_eq!(reference.as_ref(), Some(&(status, body.clone())));
        let mut kept = Vec::new();
        let mut io = Pieces { wire: &wire, sizes: &sizes, next: 0 };
        let ours = rt
            .block_on(read_response(&mut io, &mut Vec::new(), Keep::Into(&mut kept, 1 << 20, None)))
            .map(|r| r.status);
        prop_assert_eq!(ours, Ok(status));
        prop_assert_eq!(kept, body);
    }

    #[test]
    fn garbage_never_panics_never_outgrows_the_caps_and_is_no_response(
        head in prop::sample::select(vec![&b""[..], b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 9"]),
        garbage in prop::collection::vec(any::<u8>(), 0..100_000),
        sizes in prop::collection::vec(1usize..70_000, 1..5),
    ) {
        let mut wire = head.to_vec();
        wire.extend(&garbage);
        let mut buf = Vec::new();
        let mut kept = Vec::new();
        let mut io = Pieces { wire: &wire, sizes: &sizes, next: 0 };
        let result = runtime().block_on(read_response(&mut io, &mut buf, Keep::Into(&mut kept, 4096, None)));
        prop_assert!(buf.capacity() <= 4 * MAX_HEAD, "read buffer grew to {}", buf.capacity());
        prop_assert!(kept.len() <= 4096);
        if head.is_empty() && !garbage.starts_with(b"HTTP/1.") {
            prop_assert!(result.is_err());
        }
    }
}
