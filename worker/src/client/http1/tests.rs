//! The reader against hand-written wire bytes, each case a rule it must keep.

use super::*;

async fn read_all(wire: &[u8]) -> (Result<Head, ReadError>, usize) {
    // A reader that hands out 3 bytes at a time, to exercise every partial path.
    let mut io = tokio_test_reader(wire);
    let mut buf = Vec::new();
    let first = read_response(&mut io, &mut buf, Keep::Count).await;
    (first, buf.len())
}

fn tokio_test_reader(wire: &[u8]) -> impl AsyncRead + Unpin + '_ {
    struct Trickle<'a>(&'a [u8]);
    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            out: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let n = self.0.len().min(3).min(out.remaining());
            out.put_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            std::task::Poll::Ready(Ok(()))
        }
    }
    Trickle(wire)
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn content_length_bodies_are_counted_exactly() {
    let (r, _) = run(read_all(
        b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world",
    ));
    let r = r.unwrap();
    assert_eq!((r.status, r.body, r.keep_alive), (200, 11, true));
}

#[test]
fn chunked_bodies_and_trailers_are_counted() {
    let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nb;ext=1\r\n world, all\r\n0\r\nX-Trailer: 1\r\n\r\n";
    let r = run(read_all(wire)).0.unwrap();
    assert_eq!((r.status, r.body, r.keep_alive), (200, 16, true));
}

#[test]
fn close_delimited_bodies_end_the_connection() {
    let r = run(read_all(b"HTTP/1.0 200 OK\r\n\r\nabcdef")).0.unwrap();
    assert_eq!((r.body, r.keep_alive), (6, false));
    let r = run(read_all(
        b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    ))
    .0
    .unwrap();
    assert_eq!((r.status, r.body, r.keep_alive), (404, 0, false));
    let r = run(read_all(b"HTTP/1.1 204 No Content\r\n\r\n")).0.unwrap();
    assert_eq!((r.status, r.body, r.keep_alive), (204, 0, true));
}

#[test]
fn cut_and_garbled_responses_are_errors() {
    assert_eq!(run(read_all(b"")).0, Err(ReadError::Closed));
    assert_eq!(
        run(read_all(b"HTTP/1.1 200 OK\r\nContent-Le")).0,
        Err(ReadError::Incomplete)
    );
    assert_eq!(
        run(read_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf"
        ))
        .0,
        Err(ReadError::Incomplete)
    );
    assert_eq!(
        run(read_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"
        ))
        .0,
        Err(ReadError::Incomplete)
    );
    assert_eq!(
        run(read_all(b"SSH-2.0-OpenSSH\r\n\r\n")).0,
        Err(ReadError::Malformed("not an HTTP/1.x response"))
    );
    assert_eq!(
        run(read_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
        ))
        .0,
        Err(ReadError::Malformed("bad chunk size"))
    );
}

#[test]
fn kept_bodies_are_whole_and_bounded() {
    let wire: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let mut body = Vec::new();
    let r = run(async {
        let mut io = tokio_test_reader(wire);
        read_response(&mut io, &mut Vec::new(), Keep::Into(&mut body, 100, None)).await
    });
    assert_eq!(r.unwrap().body, 11);
    assert_eq!(body, b"hello world");
    let mut small = Vec::new();
    let r = run(async {
        let mut io = tokio_test_reader(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world");
        read_response(&mut io, &mut Vec::new(), Keep::Into(&mut small, 10, None)).await
    });
    assert_eq!(r, Err(ReadError::TooLarge(11)));
    let r = run(async {
        let mut io = tokio_test_reader(
            b"HTTP/1.1 302 Found\r\nLocation: /next?a=1\r\nContent-Length: 0\r\n\r\n",
        );
        read_response(&mut io, &mut Vec::new(), Keep::Count).await
    })
    .unwrap();
    assert_eq!((r.status, r.location.as_deref()), (302, Some("/next?a=1")));
}

#[test]
fn requests_are_plain_get_lines() {
    let mut out = Vec::new();
    write_request(
        &mut out,
        "GET",
        "/a?b=1",
        "h:80",
        &header_lines([("X-K", "v")], false),
        None,
    );
    assert_eq!(
        out,
        b"GET /a?b=1 HTTP/1.1\r\nHost: h:80\r\nX-K: v\r\nConnection: close\r\n\r\n"
    );
}

#[test]
fn a_request_with_content_says_its_type_and_length_and_ends_with_its_bytes() {
    let mut out = Vec::new();
    let content = Content {
        header_lines: b"Content-Type: application/json\r\n",
        bytes: br#"{"offset":30}"#,
    };
    write_request(&mut out, "POST", "/s", "h:80", b"X-K: v\r\n", Some(content));
    let expected: &[u8] = b"POST /s HTTP/1.1\r\nHost: h:80\r\nX-K: v\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"offset\":30}";
    assert_eq!(out, expected);
    // A POST without a body still says its length is zero.
    out.clear();
    let empty = Content {
        header_lines: b"",
        bytes: b"",
    };
    write_request(&mut out, "POST", "/", "h", b"", Some(empty));
    assert_eq!(
        out,
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
    );
}

#[test]
fn the_answer_to_a_head_request_has_no_body_whatever_length_it_announces() {
    let wire: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n";
    let mut io = wire;
    let r = run(read_head_response(&mut io, &mut Vec::new(), false)).unwrap();
    assert_eq!((r.status, r.body, r.keep_alive), (200, 0, true));
    // Bytes after the head were not asked for: the connection is not reused.
    let mut io: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let r = run(read_head_response(&mut io, &mut Vec::new(), false)).unwrap();
    assert!(!r.keep_alive);
}

/// Reads one response from `wire` handed out whole, keeping the body.
fn read_whole(wire: &[u8]) -> (Result<Head, ReadError>, Vec<u8>) {
    let mut body = Vec::new();
    let mut io = wire;
    let r = run(read_response(
        &mut io,
        &mut Vec::new(),
        Keep::Into(&mut body, 1 << 20, None),
    ));
    (r, body)
}

#[test]
fn interim_responses_are_skipped_whether_they_come_apart_or_together() {
    let wire: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let (r, body) = read_whole(wire);
    let r = r.unwrap();
    assert_eq!((r.status, r.keep_alive, &body[..]), (200, true, &b"ok"[..]));
    let r = run(read_all(wire)).0.unwrap();
    assert_eq!((r.status, r.body), (200, 2));
    // Endless interim responses are refused, not skipped forever.
    let endless = b"HTTP/1.1 103 Early Hints\r\n\r\n".repeat(100);
    assert!(matches!(
        read_whole(&endless).0,
        Err(ReadError::Malformed(_))
    ));
    // Only the final response may switch protocols, and nobody asked for that.
    let switch = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n";
    assert!(matches!(read_whole(switch).0, Err(ReadError::Malformed(_))));
}

#[test]
fn conflicting_lengths_are_errors_and_equal_ones_are_one_length() {
    let bad: [&[u8]; 5] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 3\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 3\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ];
    for wire in bad {
        assert!(
            matches!(read_whole(wire).0, Err(ReadError::Malformed(_))),
            "{}",
            String::from_utf8_lossy(wire)
        );
    }
    let (r, body) =
        read_whole(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5, 5\r\n\r\nhello");
    assert_eq!((r.unwrap().body, &body[..]), (5, &b"hello"[..]));
}

#[test]
fn bytes_after_a_response_forbid_reusing_the_connection() {
    let (r, body) = read_whole(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nWRONG",
    );
    let r = r.unwrap();
    assert_eq!((r.keep_alive, &body[..]), (false, &b"ok"[..]));
}

#[test]
fn endless_trailers_and_chunk_extensions_stop_at_their_caps() {
    let mut trailer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: ".to_vec();
    trailer.extend(std::iter::repeat_n(b'a', 200 * 1024));
    let mut buf = Vec::new();
    let mut io = &trailer[..];
    let r = run(read_response(&mut io, &mut buf, Keep::Count));
    assert_eq!(r, Err(ReadError::Malformed("trailers over 64 KiB")));
    assert!(buf.capacity() <= 4 * MAX_HEAD, "{}", buf.capacity());

    let mut many = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
    many.extend(b"X-T: a\r\n".repeat(20_000));
    let r = read_whole(&many).0;
    assert_eq!(r, Err(ReadError::Malformed("trailers over 64 KiB")));

    let mut extension = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=".to_vec();
    extension.extend(std::iter::repeat_n(b'a', 200 * 1024));
    let mut buf = Vec::new();
    let mut io = &extension[..];
    let r = run(read_response(&mut io, &mut buf, Keep::Count));
    assert_eq!(r, Err(ReadError::Malformed("chunk-size line over 4 KiB")));
    assert!(buf.capacity() <= 4 * MAX_HEAD, "{}", buf.capacity());
}

#[test]
fn an_announced_length_reserves_no_more_than_a_little() {
    // 60 MB announced, 5 bytes sent: the kept body never holds room for the claim.
    let mut body = Vec::new();
    let mut io = &b"HTTP/1.1 200 OK\r\nContent-Length: 60000000\r\n\r\nhello"[..];
    let r = run(read_response(
        &mut io,
        &mut Vec::new(),
        Keep::Into(&mut body, 100_000_000, None),
    ));
    assert_eq!(r, Err(ReadError::Incomplete));
    assert!(
        body.capacity() <= MAX_RESERVE as usize,
        "{}",
        body.capacity()
    );
}

#[test]
fn a_reset_before_the_first_byte_is_a_reset() {
    struct Broken;
    impl AsyncRead for Broken {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()))
        }
    }
    let r = run(read_response(&mut Broken, &mut Vec::new(), Keep::Count));
    assert_eq!(r, Err(ReadError::Reset));
    assert_eq!(
        ReadError::Reset.describe(),
        "connection reset before the response"
    );
}

/// Reads one response from `wire`, keeping its body (up to `max` bytes).
fn read_kept(wire: &[u8], max: u64) -> (Result<Head, ReadError>, Vec<u8>) {
    let mut body = Vec::new();
    let head = run(read_response(
        &mut tokio_test_reader(wire),
        &mut Vec::new(),
        Keep::Into(&mut body, max, None),
    ));
    (head, body)
}

#[test]
fn kept_bodies_come_with_their_validators_and_a_304_has_no_body() {
    let wire: &[u8] = b"HTTP/1.1 200 OK\r\nETag: \"v1\"\r\nLast-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\nContent-Length: 2\r\n\r\nhi";
    let r = read_kept(wire, 100).0.unwrap();
    assert_eq!(r.validators.etag.as_deref(), Some("\"v1\""));
    assert_eq!(
        r.validators.last_modified.as_deref(),
        Some("Tue, 14 Nov 2023 22:13:20 GMT")
    );
    // Counted bodies (a load test) read past them.
    let (counted, _) = run(read_all(wire));
    assert!(counted.unwrap().validators.is_empty());
    // A 304 ends with its head, whatever length it names, and the connection is kept.
    let (r, kept) = read_kept(
        b"HTTP/1.1 304 Not Modified\r\nETag: W/\"v1\"\r\nContent-Length: 2\r\n\r\n",
        100,
    );
    let r = r.unwrap();
    assert_eq!((r.status, r.body, r.keep_alive), (304, 0, true));
    assert_eq!(r.validators.etag.as_deref(), Some("W/\"v1\""));
    assert!(kept.is_empty());
}
