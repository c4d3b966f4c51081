//! The HTTP/1.1 server against raw clients that write exact bytes, so that every framing case, keep-alive
//! rule and broken request can be produced, and the bytes answered checked whole.

use super::*;
use crate::drain::Drain;
use crate::limits::Limits;
use http::HeaderValue;
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;

/// What the test handler does, by path:
/// - `/echo`: answers 200 with `<method> <target> <version>` and a line per request header, then
///   `body=` and the request body read whole, and the trailers as `trailer <name>: <value>` lines;
/// - `/stream`: answers 200 with the request body itself as the response body, streamed as it is read;
/// - `/ignore`: answers 200 `ignored` without reading the request body;
/// - `/close`: answers 200 `bye` with `connection: close`;
/// - `/length`: answers 200 with `content-length: 5` and no body of its own (for HEAD);
/// - `/empty`: answers 204;
/// - `/dated`: answers 200 with a `date` of its own;
/// - `/hang`: never answers.
async fn handle(req: Request<Body>) -> Response<Body> {
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/hang" => std::future::pending().await,
        "/stream" => Response::new(req.into_body()),
        "/ignore" => text(StatusCode::OK, "ignored"),
        "/close" => {
            let mut r = text(StatusCode::OK, "bye");
            r.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            r
        }
        "/length" => {
            let mut r = Response::new(Body::empty());
            r.headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from_static("5"));
            r
        }
        "/empty" => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        "/dated" => {
            let mut r = text(StatusCode::OK, "dated");
            r.headers_mut().insert(
                http::header::DATE,
                HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
            );
            r
        }
        _ => {
            let mut out = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
            for (n, v) in req.headers() {
                out.push_str(&format!("{n}: {}\n", v.to_str().unwrap_or("?")));
            }
            match req.into_body().collect().await {
                Ok(all) => {
                    let trailers = all.trailers().cloned();
                    out.push_str("body=");
                    out.push_str(&String::from_utf8_lossy(&all.to_bytes()));
                    for (n, v) in trailers.iter().flatten() {
                        out.push_str(&format!("\ntrailer {n}: {}", v.to_str().unwrap_or("?")));
                    }
                }
                Err(e) => out.push_str(&format!("body error: {e}")),
            }
            text(StatusCode::OK, out)
        }
    }
}

/// A server on a loopback port, serving each connection with `serve` as the listener does, and the
/// drain that stops it.
async fn server() -> (SocketAddr, Arc<Drain>) {
    server_with(Limits::default()).await
}

/// `server`, with these limits.
async fn server_with(limits: Limits) -> (SocketAddr, Arc<Drain>) {
    let listener = crate::net::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let drain = Arc::new(Drain::new(limits));
    let d = drain.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let mut watch = d.watch();
            tokio::spawn(async move {
                serve(s, BytesMut::with_capacity(8192), &handle, &mut watch).await;
            });
        }
    });
    (addr, drain)
}

/// Writes `parts`, each once the server has read the one before (so that each arrives as a read of its
/// own), closes its writing side, then reads until the server closes; everything it answered.
async fn talk(addr: SocketAddr, parts: &[&[u8]]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    for p in parts {
        s.write_all(p).await.expect("write");
        read_by_server(&s).await;
    }
    s.shutdown().await.expect("shutdown");
    read_to_close(&mut s).await
}

/// Waits until the server has read everything written on `s` (or closed it).
async fn read_by_server(s: &TcpStream) {
    crate::test_util::eventually("the server to read what was sent", || async {
        crate::test_util::read_by_peer(s).then_some(())
    })
    .await;
}

async fn read_to_close(s: &mut TcpStream) -> String {
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut all))
        .await
        .expect("the server closes the connection")
        .expect("read");
    String::from_utf8_lossy(&all).into_owned()
}

/// Reads one response with a `content-length` body (or none) from a kept-alive connection.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> String {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse::<usize>().expect("length"));
            if buf.len() >= end + 4 + len {
                let all: Vec<u8> = buf.drain(..end + 4 + len).collect();
                return String::from_utf8_lossy(&all).into_owned();
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("a response")
            .expect("read");
        assert!(n > 0, "closed before a whole response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn requests_on_a_kept_alive_connection_are_answered_in_order_even_pipelined() {
    let (addr, _drain) = server().await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut buf = Vec::new();
    s.write_all(b"GET /echo?a=1 HTTP/1.1\r\nhost: a.test\r\nx-one: 1\r\n\r\n")
        .await
        .expect("write");
    let first = read_response(&mut s, &mut buf).await;
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
    assert!(
        first.ends_with("\r\n\r\nGET /echo?a=1 HTTP/1.1\nhost: a.test\nx-one: 1\nbody="),
        "{first}"
    );
    assert!(!first.contains("connection: close"), "{first}");
    // Two at once: the second waits in the buffer while the first is answered.
    s.write_all(
        b"POST /echo HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\nabcGET /echo HTTP/1.1\r\nhost: b\r\n\r\n",
    )
    .await
    .expect("write");
    let second = read_response(&mut s, &mut buf).await;
    assert!(second.ends_with("content-length: 3\nbody=abc"), "{second}");
    let third = read_response(&mut s, &mut buf).await;
    assert!(third.contains("\nhost: b\nbody="), "{third}");
    // The client's close ends it.
    drop(s);
}

#[tokio::test]
async fn request_bodies_are_read_by_their_framing() {
    let (addr, _drain) = server().await;
    // Chunked, with extensions and trailers, in pieces.
    let answer = talk(
        addr,
        &[
            b"POST /echo HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n3;x=y\r\nab",
            b"c\r\n2\r\nde\r\n0\r\nx-sum: 5\r\n\r\n",
        ],
    )
    .await;
    assert!(
        answer.contains(
            "transfer-encoding: chunked\nconnection: close\nbody=abcde\ntrailer x-sum: 5"
        ),
        "{answer}"
    );
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    // A length above what is read whole streams, with its size known to the reader.
    let big = vec![b'z'; 100_000];
    let head = format!(
        "POST /stream HTTP/1.1\r\nhost: a\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        big.len()
    );
    let answer = talk(addr, &[head.as_bytes(), &big[..50_000], &big[50_000..]]).await;
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
    assert!(head.contains("content-length: 100000"), "{head}");
    assert_eq!(body.len(), 100_000);
    // A chunked body streamed back goes chunked, trailers and all.
    let answer = talk(
        addr,
        &[
            b"POST /stream HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
            b"4\r\nwxyz\r\n",
            b"0\r\nx-t: 1\r\n\r\n",
        ],
    )
    .await;
    assert!(
        answer.contains("transfer-encoding: chunked\r\n"),
        "{answer}"
    );
    assert!(
        answer.ends_with("\r\n\r\n4\r\nwxyz\r\n0\r\nx-t: 1\r\n\r\n"),
        "{answer}"
    );
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body_is_read() {
    let (addr, _drain) = server().await;
    for path in ["/echo", "/stream"] {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.expect("write");
        let mut buf = [0u8; 25];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
            .await
            .expect("an interim response before the body is sent")
            .expect("read");
        assert_eq!(&buf, CONTINUE);
        s.write_all(b"body").await.expect("write");
        let mut rest = Vec::new();
        let answer = read_response(&mut s, &mut rest).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("body"), "{answer}");
        // Answered here, so not passed on.
        assert!(!answer.contains("expect"), "{answer}");
    }
}

#[tokio::test]
async fn http10_closes_unless_asked_to_keep_alive() {
    let (addr, _drain) = server().await;
    let answer = talk(addr, &[b"GET /echo HTTP/1.0\r\nhost: a\r\n\r\n"]).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(!answer.contains("connection:"), "{answer}");
    assert!(answer.contains("GET /echo HTTP/1.0"), "{answer}");

    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut buf = Vec::new();
    for _ in 0..2 {
        s.write_all(b"GET /echo HTTP/1.0\r\nhost: a\r\nconnection: keep-alive\r\n\r\n")
            .await
            .expect("write");
        let answer = read_response(&mut s, &mut buf).await;
        assert!(
            answer.contains("\r\nconnection: keep-alive\r\n"),
            "{answer}"
        );
    }
    // A transfer coding in an HTTP/1.0 request is faulty framing (RFC 9112 6.1): refused, and the
    // connection closed.
    s.write_all(
        b"POST /stream HTTP/1.0\r\nhost: a\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    )
    .await
    .expect("write");
    let answer = read_to_close(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(!answer.contains("keep-alive"), "{answer}");
}

#[tokio::test]
async fn the_connection_closes_when_either_side_says_so() {
    let (addr, _drain) = server().await;
    let answer = talk(
        addr,
        &[b"GET /echo HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\nGET /never HTTP/1.1\r\n\r\n"],
    )
    .await;
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 1, "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    let answer = talk(addr, &[b"GET /close HTTP/1.1\r\nhost: a\r\n\r\n"]).await;
    assert_eq!(answer.matches("connection: close").count(), 1, "{answer}");
    assert!(answer.ends_with("\r\n\r\nbye"), "{answer}");
}

#[tokio::test]
async fn head_204_and_local_bodies_are_framed_as_http_says() {
    let (addr, _drain) = server().await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"HEAD /length HTTP/1.1\r\nhost: a\r\n\r\nHEAD /ignore HTTP/1.1\r\nhost: a\r\n\r\nGET /empty HTTP/1.1\r\nhost: a\r\n\r\nGET /close HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .expect("write");
    let all = read_to_close(&mut s).await;
    // Every answer is dated (RFC 9110, 6.6.1); the rest of each head is compared whole.
    assert_eq!(all.matches("\r\ndate: ").count(), 4, "{all}");
    let all: String = all
        .split_inclusive("\r\n")
        .filter(|l| !l.starts_with("date: "))
        .collect();
    let responses: Vec<&str> = all.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(responses.len(), 4, "{all}");
    // HEAD: the handler's length stands, and no body follows.
    assert_eq!(responses[0], "200 OK\r\ncontent-length: 5\r\n\r\n");
    // HEAD of a local body: its length, no bytes.
    assert_eq!(
        responses[1],
        "200 OK\r\ncontent-type: text/plain\r\ncontent-length: 7\r\n\r\n"
    );
    assert_eq!(responses[2], "204 No Content\r\n\r\n");
    assert!(responses[3].ends_with("bye"), "{all}");
}

#[tokio::test]
async fn answers_are_dated_unless_their_handler_dated_them() {
    let (addr, _drain) = server().await;
    let answer = talk(
        addr,
        &[b"GET /dated HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n"],
    )
    .await;
    let dates: Vec<&str> = answer.lines().filter(|l| l.starts_with("date: ")).collect();
    assert_eq!(dates, ["date: Sun, 06 Nov 1994 08:49:37 GMT"], "{answer}");
    let answer = talk(
        addr,
        &[b"GET /ignore HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n"],
    )
    .await;
    let dates: Vec<&str> = answer
        .lines()
        .filter_map(|l| l.strip_prefix("date: "))
        .collect();
    assert_eq!(dates.len(), 1, "{answer}");
    let date = httpdate::parse_http_date(dates[0]).expect("an HTTP date");
    let age = std::time::SystemTime::now()
        .duration_since(date)
        .unwrap_or_default();
    assert!(age < Duration::from_secs(60), "{answer}");
}

#[tokio::test]
async fn broken_requests_are_answered_with_the_reason_and_closed() {
    let (addr, _drain) = server().await;
    let huge = format!(
        "GET / HTTP/1.1\r\nx-big: {}\r\n\r\n",
        "a".repeat(MAX_HEAD + 10)
    );
    let cases: Vec<(&[u8], &str)> = vec![
        (b"GARBAGE\r\n\r\n", "400 Bad Request"),
        (
            b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
            "malformed request head",
        ),
        (b"GET / HTTP/2.0\r\n\r\n", "505 HTTP Version Not Supported"),
        (
            b"POST / HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabc",
            "conflicting content-length",
        ),
        (
            b"POST / HTTP/1.1\r\ncontent-length: -1\r\n\r\n",
            "invalid content-length",
        ),
        (
            b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3, 3\r\n\r\nabc",
            "invalid content-length",
        ),
        (
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
            "both transfer-encoding and content-length",
        ),
        (
            b"POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n",
            "501 Not Implemented",
        ),
        (
            b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            "501 Not Implemented",
        ),
        (
            b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n",
            "501 Not Implemented",
        ),
        (
            b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n",
            "501 Not Implemented",
        ),
        (huge.as_bytes(), "431 Request Header Fields Too Large"),
        // RFC 9112, 3.2: one `Host`, an authority, present in HTTP/1.1.
        (
            b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
            "several host header fields",
        ),
        (
            b"GET / HTTP/1.1\r\nhost: a\r\nHost: a\r\n\r\n",
            "several host header fields",
        ),
        (
            b"GET / HTTP/1.1\r\nhost: a/b\r\n\r\n",
            "invalid host header field",
        ),
        (
            b"GET / HTTP/1.1\r\nhost: a b\r\n\r\n",
            "invalid host header field",
        ),
        (
            b"GET / HTTP/1.1\r\nhost: user@a\r\n\r\n",
            "invalid host header field",
        ),
        (b"GET / HTTP/1.1\r\n\r\n", "no host header field"),
        (
            b"POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            "transfer-encoding in an HTTP/1.0 request",
        ),
        (b"GET http://a/ HTTP/1.1\r\n\r\n", "no host header field"),
    ];
    for (req, want) in cases {
        let answer = talk(addr, &[req]).await;
        assert!(
            answer.contains(want),
            "{:?}: {answer}",
            String::from_utf8_lossy(&req[..req.len().min(60)])
        );
        assert!(answer.contains("connection: close"), "{answer}");
    }
    // A broken chunked body reaches the handler as an error, and the connection closes after the answer.
    let answer = talk(
        addr,
        &[b"POST /echo HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"],
    )
    .await;
    assert!(
        answer.contains("body error: invalid request body: chunk size line"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_body_its_handler_leaves_unread_ends_the_connection_after_the_answer() {
    let (addr, _drain) = server().await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        b"POST /ignore HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await
    .expect("write");
    let answer = read_to_close(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("ignored"), "{answer}");
    // A body read whole before the handler does not stop the connection from being reused.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut buf = Vec::new();
    for _ in 0..2 {
        s.write_all(b"POST /ignore HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello")
            .await
            .expect("write");
        let answer = read_response(&mut s, &mut buf).await;
        assert!(answer.ends_with("ignored"), "{answer}");
    }
}

#[tokio::test]
async fn a_client_gone_in_the_middle_of_a_body_is_an_error_for_its_reader() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
    let listener = crate::net::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let drain = Arc::new(Drain::default());
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let handler = move |req: Request<Body>| {
        let tx = tx.lock().expect("tx").take();
        let _ = started_tx.send(());
        async move {
            let result = req.into_body().collect().await.map(|_| ());
            if let Some(tx) = tx {
                let _ = tx.send(result.map_err(|e| e.to_string()));
            }
            text(StatusCode::OK, "")
        }
    };
    let mut watch = drain.watch();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.expect("accept");
        serve(s, BytesMut::new(), &handler, &mut watch).await;
    });
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 100000\r\n\r\npart")
        .await
        .expect("write");
    // Gone once its handler is reading the body.
    started.recv().await.expect("the handler was called");
    drop(s);
    let got = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("the body ends")
        .expect("sent");
    assert_eq!(
        got,
        Err("downstream closed the connection in the middle of the request body".to_string())
    );
}

#[tokio::test]
async fn draining_closes_idle_connections_and_ends_busy_ones_after_their_answer() {
    let (addr, drain) = server().await;
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    let mut buf = Vec::new();
    idle.write_all(b"GET /echo HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .expect("write");
    read_response(&mut idle, &mut buf).await;
    let mut busy = TcpStream::connect(addr).await.expect("connect");
    // A request whose body is still coming when the drain starts.
    busy.write_all(b"POST /echo HTTP/1.1\r\nhost: a\r\ncontent-length: 100000\r\n\r\nab")
        .await
        .expect("write");
    // Read means in flight: the server's task reads, parses the head and calls the handler in one
    // turn, and this test's task runs only between its turns (one thread).
    read_by_server(&busy).await;
    drain.start();
    assert_eq!(read_to_close(&mut idle).await, "");
    busy.write_all(&vec![b'c'; 99_998]).await.expect("write");
    let answer = read_to_close(&mut busy).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
}

/// Field values skip `HeaderValue`'s byte check (`codec::valid_value`) because the parser allows only the
/// bytes that check would: every byte, at the start, in the middle and at the end of a value long enough to
/// go through httparse's vector paths, is either refused with the head or kept in a valid value.
#[test]
fn parsed_values_are_header_values() {
    let mut spans = Spans::default();
    let mut kept = 0;
    for b in 0..=255u8 {
        for at in [0, 17, 40, 79] {
            let mut value = vec![b'v'; 80];
            value[at] = b;
            let mut head = b"GET / HTTP/1.1\r\nhost: a\r\nx-v: ".to_vec();
            head.extend_from_slice(&value);
            head.extend_from_slice(b"\r\n\r\n");
            let mut buf = BytesMut::from(&head[..]);
            let Ok(Some((req, _))) = parse(&mut buf, &mut spans) else {
                continue;
            };
            let got = req.headers().get("x-v").expect("the field");
            assert!(
                HeaderValue::from_bytes(got.as_bytes()).is_ok(),
                "byte {b:#04x} at {at} kept in an invalid value"
            );
            kept += 1;
        }
    }
    // Tab, space to `~` and 0x80 to 0xff are kept where they are inside a value.
    assert!(kept >= (1 + 95 + 128) * 2, "only {kept} heads parsed");
}

/// Limits whose timeouts are short enough for a test to wait for (their precision is
/// `limits::tests`', under a paused clock).
fn short(head_ms: u64, idle_ms: u64, stream_ms: u64) -> Limits {
    Limits {
        request_headers_timeout: Duration::from_millis(head_ms),
        idle_timeout: Duration::from_millis(idle_ms),
        stream_idle_timeout: Duration::from_millis(stream_ms),
        ..Limits::default()
    }
}

#[tokio::test]
async fn a_head_that_does_not_come_whole_in_time_is_answered_408() {
    // Slowloris: a head begun and never finished.
    let (addr, _drain) = server_with(short(200, 0, 0)).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nhost: a\r\nx-slow: ")
        .await
        .expect("write");
    let answer = read_to_close(&mut s).await;
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer}"
    );
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(answer.ends_with("request head timeout\n"), "{answer}");
}

#[tokio::test]
async fn a_kept_alive_connection_with_no_request_is_closed_after_the_idle_timeout() {
    let (addr, _drain) = server_with(short(0, 200, 0)).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut buf = Vec::new();
    s.write_all(b"GET /ignore HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .expect("write");
    let answer = read_response(&mut s, &mut buf).await;
    assert!(answer.ends_with("ignored"), "{answer}");
    // Nothing more is sent: the server closes, with nothing more to say.
    let rest = read_to_close(&mut s).await;
    assert_eq!(rest, "");
}

#[tokio::test]
async fn a_request_nothing_happens_on_is_answered_408_after_the_stream_idle_timeout() {
    let (addr, _drain) = server_with(short(0, 0, 200)).await;
    // The handler never answers.
    let answer = talk(addr, &[b"GET /hang HTTP/1.1\r\nhost: a\r\n\r\n"]).await;
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer}"
    );
    assert!(answer.ends_with("stream timeout\n"), "{answer}");
    // A body that stops coming: read whole before the handler (64 KiB or less), or streamed to it.
    for req in [
        &b"POST /echo HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\nabc"[..],
        b"POST /echo HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n",
    ] {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(req).await.expect("write");
        let answer = read_to_close(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    }
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_and_the_others_go_on() {
    use crate::server::serve as listen;
    let listener = crate::net::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let server = tokio::spawn(listen(
        "test",
        listener,
        handle,
        stop_rx,
        Duration::from_secs(1),
        limits,
    ));
    let get = b"GET /ignore HTTP/1.1\r\nhost: a\r\n\r\n";
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let mut buf = Vec::new();
        s.write_all(get).await.expect("write");
        let answer = read_response(&mut s, &mut buf).await;
        assert!(answer.ends_with("ignored"), "{answer}");
        open.push((s, buf));
    }
    // A third is closed at once, unanswered (a reset or a plain close, as the kernel sees it).
    let mut third = TcpStream::connect(addr).await.expect("connect");
    let _ = third.write_all(get).await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), third.read_to_end(&mut rest))
        .await
        .expect("the third connection is closed");
    assert!(
        read.is_err() || rest.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
    // The first two are still served; once one closes, a new one is accepted.
    for (s, buf) in &mut open {
        s.write_all(get).await.expect("write");
        let answer = read_response(s, buf).await;
        assert!(answer.ends_with("ignored"), "{answer}");
    }
    drop(open.pop());
    let answer = crate::test_util::eventually("a connection is accepted again", || async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(get).await.ok()?;
        let mut buf = Vec::new();
        let answer = tokio::time::timeout(Duration::from_secs(1), read_response(&mut s, &mut buf))
            .await
            .ok()?;
        Some(answer)
    })
    .await;
    assert!(answer.ends_with("ignored"), "{answer}");
    stop.send_replace(true);
    server.await.expect("server");
}

#[test]
fn a_head_is_parsed_again_only_when_a_line_has_ended_since() {
    let head = b"GET / HTTP/1.1\r\nhost: a\r\nx-long: aaaaaaaa";
    assert!(worth_parsing(head, 0), "the first try always parses");
    assert!(!worth_parsing(head, head.len()), "nothing new");
    assert!(
        !worth_parsing(head, head.len() - 4),
        "no line's end in the new bytes"
    );
    assert!(worth_parsing(head, 10), "a line ended since");
    let mut more = head.to_vec();
    more.extend_from_slice(b"\r\n\r\n");
    assert!(worth_parsing(&more, head.len()));
    assert!(
        !worth_parsing(&more, more.len() + 1),
        "past the end: nothing new"
    );
}

#[tokio::test]
async fn a_head_sent_a_byte_at_a_time_is_read_whole() {
    let (addr, _drain) = server().await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let head = b"GET /echo HTTP/1.1\r\nhost: a\r\nx-one: 1\r\nconnection: close\r\n\r\n";
    for b in head.iter() {
        s.write_all(&[*b]).await.expect("write");
        read_by_server(&s).await;
    }
    let answer = read_to_close(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("x-one: 1\n"), "{answer}");
}
