//! The HTTP/1.1 client against scripted upstreams that write raw bytes, so that every framing case and
//! every way of breaking the protocol can be produced exactly.

use super::*;
use crate::body::BodyError;
use crate::upstream::H1Pool;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderValue};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::net::TcpStream;

/// What a scripted upstream does with each request it reads, in order, one entry per request.
#[derive(Clone)]
enum Step {
    /// Writes these pieces, each once the client has read the one before (so that each arrives as a
    /// read of its own), and keeps the connection.
    Answer(Vec<&'static [u8]>),
    /// Writes these bytes and closes.
    AnswerAndClose(&'static [u8]),
    /// Closes without answering.
    Close,
}

/// A raw upstream on one connection per `steps` list: it reads each request whole (head, then a
/// `content-length` or chunked body), records its bytes, and does the next step.
struct Scripted {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Every byte received so far, on every connection, as it arrives.
    received: Arc<Mutex<Vec<u8>>>,
}

impl Scripted {
    /// Waits until the upstream has received `bytes` (a request's piece that proves how far the client
    /// has sent it).
    async fn received(&self, bytes: &[u8]) {
        crate::test_util::eventually("the upstream to receive the bytes", || async {
            let got = self.received.lock().expect("received");
            got.windows(bytes.len()).any(|w| w == bytes).then_some(())
        })
        .await;
    }
}

async fn scripted(conns: Vec<Vec<Step>>) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let requests = Arc::new(Mutex::new(Vec::new()));
    let received = Arc::new(Mutex::new(Vec::new()));
    let (recorded, all) = (requests.clone(), received.clone());
    tokio::spawn(async move {
        for steps in conns {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let (recorded, all) = (recorded.clone(), all.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for step in steps {
                    let Some(req) = read_request(&mut s, &mut buf, &all).await else {
                        return;
                    };
                    recorded.lock().expect("requests").push(req);
                    match step {
                        Step::Answer(pieces) => {
                            for p in pieces {
                                if s.write_all(p).await.is_err() {
                                    return;
                                }
                                crate::test_util::eventually("the client to read", || async {
                                    crate::test_util::read_by_peer(&s).then_some(())
                                })
                                .await;
                            }
                        }
                        Step::AnswerAndClose(bytes) => {
                            let _ = s.write_all(bytes).await;
                            return;
                        }
                        Step::Close => return,
                    }
                }
                // Keeps the connection open until the client closes it.
                let _ = s.read(&mut [0u8; 1]).await;
            });
        }
    });
    Scripted {
        addr,
        requests,
        received,
    }
}

/// Reads one request (head and body) off `s`, with `buf` holding bytes read past the previous one; every
/// byte read is also added to `all`.
async fn read_request(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    all: &Mutex<Vec<u8>>,
) -> Option<Vec<u8>> {
    let mut chunk = [0u8; 4096];
    let more = |buf: &mut Vec<u8>, chunk: &[u8]| {
        buf.extend_from_slice(chunk);
        all.lock().expect("received").extend_from_slice(chunk);
    };
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => more(buf, &chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let end = if let Some(l) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
    {
        head_end + l.trim().parse::<usize>().expect("length")
    } else if head.contains("transfer-encoding: chunked") {
        loop {
            if let Some(i) = buf[head_end..].windows(5).position(|w| w == b"0\r\n\r\n") {
                // Good enough for these tests' bodies: the last chunk, with no trailers.
                break head_end + i + 5;
            }
            if let Some(i) = buf[head_end..].windows(3).position(|w| w == b"\n0\r") {
                if let Some(j) = buf[head_end + i..]
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                {
                    break head_end + i + j + 4;
                }
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => more(buf, &chunk[..n]),
            }
        }
    } else {
        head_end
    };
    while buf.len() < end {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => more(buf, &chunk[..n]),
        }
    }
    Some(buf.drain(..end).collect())
}

/// A pool and a new connection to `addr` that returns to it.
async fn connect(addr: SocketAddr) -> (Arc<H1Pool>, Conn) {
    let pool = Arc::new(H1Pool::default());
    let s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let key = crate::upstream::Key { addr, tls: 0 };
    let conn = Conn::new(crate::net::Io::Plain(s), key, Arc::downgrade(&pool));
    (pool, conn)
}

fn request(method: Method, path: &'static str, body: Body) -> Request<Body> {
    let mut req = Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = http::Uri::from_static(path);
    req.headers_mut()
        .insert(HOST, HeaderValue::from_static("up.test"));
    req
}

fn get(path: &'static str) -> Request<Body> {
    request(Method::GET, path, Body::empty())
}

/// The body's data and trailers, read to the end.
async fn read_all(resp: Response<Body>) -> Result<(Bytes, Option<HeaderMap>), BodyError> {
    let collected = resp.into_body().collect().await?;
    let trailers = collected.trailers().cloned();
    Ok((collected.to_bytes(), trailers))
}

#[tokio::test]
async fn content_length_bodies_arrive_in_pieces_and_the_connection_is_reused() {
    let up = scripted(vec![vec![
        Step::Answer(vec![
            b"HTTP/1.1 200 OK\r\ncont",
            b"ent-length: 11\r\nx-a: 1\r\nx-a: 2\r\n\r\nhel",
            b"lo world",
        ]),
        Step::Answer(vec![b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok"]),
    ]])
    .await;
    let (pool, conn) = connect(up.addr).await;
    let resp = conn.send(get("/a?b=c"), false).await.expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), Version::HTTP_11);
    let values: Vec<_> = resp.headers().get_all("x-a").iter().collect();
    assert_eq!(values, ["1", "2"], "repeated fields keep their order");
    assert_eq!(resp.body().size_hint().exact(), Some(11));
    assert_eq!(read_all(resp).await.expect("body").0, "hello world");

    let conn = pool
        .checkout(crate::upstream::Key {
            addr: up.addr,
            tls: 0,
        })
        .expect("pooled");
    let resp = conn.send(get("/second"), true).await.expect("second");
    assert_eq!(resp.status(), 201);
    assert_eq!(read_all(resp).await.expect("body").0, "ok");
    assert_eq!(pool.idle(up.addr), 1);

    let requests = up.requests.lock().expect("requests").clone();
    assert_eq!(
        String::from_utf8_lossy(&requests[0]),
        "GET /a?b=c HTTP/1.1\r\nhost: up.test\r\n\r\n",
        "a GET without a body says nothing of its length"
    );
}

#[tokio::test]
async fn chunked_bodies_are_decoded_with_their_trailers() {
    let up = scripted(vec![vec![
        Step::Answer(vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel",
            b"lo\r\n6;ext=1\r\n world\r",
            b"\n0\r\nx-sum: 42\r\n\r\n",
        ]),
        Step::Answer(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n",
        ]),
    ]])
    .await;
    let (pool, conn) = connect(up.addr).await;
    let resp = conn.send(get("/"), false).await.expect("response");
    assert_eq!(resp.body().size_hint().exact(), None);
    let (data, trailers) = read_all(resp).await.expect("body");
    assert_eq!(data, "hello world");
    assert_eq!(trailers.expect("trailers")["x-sum"], "42");

    let conn = pool
        .checkout(crate::upstream::Key {
            addr: up.addr,
            tls: 0,
        })
        .expect("reused after the trailers");
    let resp = conn.send(get("/"), true).await.expect("second");
    let (data, trailers) = read_all(resp).await.expect("body");
    assert_eq!(data, "0123456789", "upper-case hex sizes and header names");
    assert!(trailers.is_none());
    assert_eq!(pool.idle(up.addr), 1);
}

#[tokio::test]
async fn a_body_without_length_runs_to_the_close_and_the_connection_is_not_reused() {
    let up = scripted(vec![vec![Step::AnswerAndClose(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end",
    )]])
    .await;
    let (pool, conn) = connect(up.addr).await;
    let resp = conn.send(get("/"), false).await.expect("response");
    assert_eq!(read_all(resp).await.expect("body").0, "until the end");
    assert_eq!(pool.idle(up.addr), 0);
}

#[tokio::test]
async fn head_204_and_304_have_no_body_whatever_their_headers_say() {
    let up = scripted(vec![vec![
        Step::Answer(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n"]),
        Step::Answer(vec![b"HTTP/1.1 204 No Content\r\n\r\n"]),
        Step::Answer(vec![
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
        ]),
        Step::Answer(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlast"]),
    ]])
    .await;
    let (pool, mut conn) = connect(up.addr).await;
    for (i, method) in [Method::HEAD, Method::GET, Method::GET]
        .into_iter()
        .enumerate()
    {
        let resp = conn
            .send(request(method, "/", Body::empty()), i > 0)
            .await
            .expect("response");
        assert!(resp.body().is_end_stream(), "request {i}");
        if i == 0 {
            assert_eq!(
                resp.headers()[CONTENT_LENGTH],
                "1000",
                "HEAD keeps the length"
            );
        }
        assert_eq!(read_all(resp).await.expect("body").0, "");
        conn = pool
            .checkout(crate::upstream::Key {
                addr: up.addr,
                tls: 0,
            })
            .expect("back at once");
    }
    let resp = conn.send(get("/"), true).await.expect("last");
    assert_eq!(
        read_all(resp).await.expect("body").0,
        "last",
        "the framing held"
    );
}

#[tokio::test]
async fn interim_responses_are_skipped() {
    let up = scripted(vec![vec![Step::Answer(vec![
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    ])]])
    .await;
    let (_pool, conn) = connect(up.addr).await;
    let resp = conn.send(get("/"), false).await.expect("response");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("link").is_none());
    assert_eq!(read_all(resp).await.expect("body").0, "ok");
}

#[tokio::test]
async fn broken_responses_are_errors_that_say_what_broke() {
    let huge: &'static [u8] = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nx-big: {}\r\n\r\n",
            "a".repeat(MAX_HEAD + 10)
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let heads: Vec<(&'static [u8], &str)> = vec![
        (
            b"HTTP/1.1 2OO OK\r\n\r\n",
            "invalid upstream response: malformed head",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabc",
            "conflicting content-length",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "content-length",
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
            "101",
        ),
        (
            b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            "invalid upstream response: malformed head",
        ),
        (
            b"HTTP/1.1 200 OK\r\nconte",
            "closed the connection before a complete response head",
        ),
        (b"", "closed the connection before a complete response head"),
        (huge, "larger than"),
    ];
    for (head, want) in heads {
        let up = scripted(vec![vec![Step::AnswerAndClose(head)]]).await;
        let (_pool, conn) = connect(up.addr).await;
        match conn.send(get("/"), false).await {
            Ok(_) => panic!("{head:?}: want an error with {want:?}"),
            Err(e) => {
                let msg = e.error.to_string();
                assert!(
                    msg.contains(want),
                    "{:?}: {msg}",
                    String::from_utf8_lossy(&head[..head.len().min(60)])
                );
                assert!(!e.stale, "a fresh connection is never stale");
            }
        }
    }

    let bodies: Vec<(&'static [u8], &str)> = vec![
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc",
            "in the middle of the response body",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            "chunk size line",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcX\r\n",
            "not followed by CRLF",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n",
            "in the middle of the response body",
        ),
    ];
    for (resp, want) in bodies {
        let up = scripted(vec![vec![Step::AnswerAndClose(resp)]]).await;
        let (pool, conn) = connect(up.addr).await;
        let r = conn.send(get("/"), false).await.expect("the head is fine");
        match read_all(r).await {
            Ok(b) => panic!("want an error with {want:?}, read {b:?}"),
            Err(e) => assert!(e.to_string().contains(want), "{e}"),
        }
        assert_eq!(pool.idle(up.addr), 0);
    }
}

#[tokio::test]
async fn connections_that_cannot_be_trusted_again_are_not_reused() {
    let cases: Vec<&'static [u8]> = vec![
        // Said so.
        b"HTTP/1.1 200 OK\r\nconnection: keep-alive, Close\r\ncontent-length: 2\r\n\r\nok",
        // HTTP/1.0 without keep-alive.
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
        // Bytes after the response that no request asked for.
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",
        // Both framings: the length is ignored.
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ];
    for bytes in cases {
        let up = scripted(vec![vec![Step::Answer(vec![bytes])]]).await;
        let (pool, conn) = connect(up.addr).await;
        let resp = conn.send(get("/"), false).await.expect("response");
        assert_eq!(read_all(resp).await.expect("body").0, "ok");
        assert_eq!(pool.idle(up.addr), 0, "{}", String::from_utf8_lossy(bytes));
    }
    // HTTP/1.0 with keep-alive is kept.
    let up = scripted(vec![vec![Step::Answer(vec![
        b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok",
    ])]])
    .await;
    let (pool, conn) = connect(up.addr).await;
    let resp = conn.send(get("/"), false).await.expect("response");
    assert_eq!(resp.version(), Version::HTTP_10);
    read_all(resp).await.expect("body");
    assert_eq!(pool.idle(up.addr), 1);
}

#[tokio::test]
async fn request_bodies_are_framed_by_their_size() {
    let ok: &'static [u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
    let up = scripted(vec![vec![
        Step::Answer(vec![ok]),
        Step::Answer(vec![ok]),
        Step::Answer(vec![ok]),
        Step::Answer(vec![ok]),
    ]])
    .await;
    let (pool, conn) = connect(up.addr).await;
    // A whole body: its length, and the body in the same write.
    let mut req = request(Method::POST, "/p", Body::full(Bytes::from_static(b"abc")));
    req.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from_static("999"));
    conn.send(req, false).await.expect("whole");
    // An empty POST says so.
    let conn = pool
        .checkout(crate::upstream::Key {
            addr: up.addr,
            tls: 0,
        })
        .expect("pooled");
    conn.send(request(Method::POST, "/e", Body::empty()), true)
        .await
        .expect("empty");
    // A streamed body of unknown length goes chunked, its trailers after the last chunk.
    let conn = pool
        .checkout(crate::upstream::Key {
            addr: up.addr,
            tls: 0,
        })
        .expect("pooled");
    let (body, mut feed) = streamed_body().await;
    let sending = tokio::spawn(async move {
        conn.send(request(Method::PUT, "/s", body), true)
            .await
            .expect("streamed")
    });
    // Streamed: the first chunk goes out before the second exists.
    feed.send(b"2\r\nab\r\n").await;
    up.received(b"\r\n\r\n2\r\nab\r\n").await;
    feed.send(b"1\r\nc\r\n0\r\nx-t: 1\r\n\r\n").await;
    sending.await.expect("task");
    // A streamed body of known length goes with it.
    let conn = pool
        .checkout(crate::upstream::Key {
            addr: up.addr,
            tls: 0,
        })
        .expect("pooled");
    let (body, mut feed) = streamed_body_of_length(4).await;
    let sending = tokio::spawn(async move {
        conn.send(request(Method::PUT, "/l", body), true)
            .await
            .expect("known length")
    });
    feed.send(b"wx").await;
    up.received(b"content-length: 4\r\n\r\nwx").await;
    feed.send(b"yz").await;
    sending.await.expect("task");

    let requests: Vec<String> = up
        .requests
        .lock()
        .expect("requests")
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect();
    assert_eq!(
        requests[0], "POST /p HTTP/1.1\r\nhost: up.test\r\ncontent-length: 3\r\n\r\nabc",
        "the body's own length wins over a stale header"
    );
    assert_eq!(
        requests[1],
        "POST /e HTTP/1.1\r\nhost: up.test\r\ncontent-length: 0\r\n\r\n"
    );
    assert_eq!(
        requests[2],
        "PUT /s HTTP/1.1\r\nhost: up.test\r\ntransfer-encoding: chunked\r\n\r\n\
         2\r\nab\r\n1\r\nc\r\n0\r\nx-t: 1\r\n\r\n"
    );
    assert_eq!(
        requests[3],
        "PUT /l HTTP/1.1\r\nhost: up.test\r\ncontent-length: 4\r\n\r\nwxyz"
    );
}

/// Feeds raw HTTP/1.1 body bytes to a hyper server connection, whose request body (`Incoming`) is the
/// streamed body under test.
struct Feed(tokio::io::DuplexStream);

impl Feed {
    async fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).await.expect("feed");
    }
}

/// A streamed request body, chunked (its bytes fed as chunks with their framing).
async fn streamed_body() -> (Body, Feed) {
    streamed("transfer-encoding: chunked").await
}

/// A streamed request body of `n` bytes.
async fn streamed_body_of_length(n: usize) -> (Body, Feed) {
    streamed(&format!("content-length: {n}")).await
}

async fn streamed(framing: &str) -> (Body, Feed) {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = Mutex::new(Some(tx));
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        if let Some(tx) = tx.lock().expect("tx").take() {
            let _ = tx.send(req.into_body());
        }
        // Never answers: the connection only reads the body for the test.
        std::future::pending::<Result<Response<Body>, std::convert::Infallible>>()
    });
    tokio::spawn(
        hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(server), svc),
    );
    client
        .write_all(format!("POST /in HTTP/1.1\r\nhost: in\r\n{framing}\r\n\r\n").as_bytes())
        .await
        .expect("head");
    let body = rx.await.expect("the request body");
    (Body::incoming(body), Feed(client))
}

#[tokio::test]
async fn a_pooled_connection_closed_as_the_request_went_out_is_stale_and_replayable_when_idempotent(
) {
    let ok: &'static [u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let up = scripted(vec![
        vec![Step::Answer(vec![ok]), Step::Close],
        vec![Step::Answer(vec![ok]), Step::Close],
        vec![Step::Answer(vec![ok])],
        vec![Step::Close],
    ])
    .await;
    let (pool, conn) = connect(up.addr).await;
    read_all(conn.send(get("/1"), false).await.expect("first"))
        .await
        .expect("body");
    // Taken from the pool before the upstream closes it: the check at checkout cannot see it.
    let conn = pool
        .checkout(crate::upstream::Key {
            addr: up.addr,
            tls: 0,
        })
        .expect("pooled");
    let mut req = request(Method::PUT, "/2", Body::full(Bytes::from_static(b"put")));
    req.headers_mut()
        .insert("x-try", HeaderValue::from_static("1"));
    let err = conn.send(req, true).await.expect_err("closed unanswered");
    assert!(err.stale, "{:?}", err.error);
    let replay = err
        .replay
        .expect("a PUT with a whole body can be sent again");
    // Sent again, on a new connection, byte for byte.
    let (_, fresh) = connect(up.addr).await;
    let resp = fresh.resend(replay, false, false).await.expect("answered");
    assert_eq!(read_all(resp).await.expect("body").0, "ok");
    {
        let requests = up.requests.lock().expect("requests");
        assert_eq!(requests[1], requests[2]);
        assert_eq!(
            String::from_utf8_lossy(&requests[2]),
            "PUT /2 HTTP/1.1\r\nhost: up.test\r\nx-try: 1\r\ncontent-length: 3\r\n\r\nput"
        );
    }
    // A POST is stale too, but is not sent again.
    let (pool, conn) = connect(up.addr).await;
    read_all(conn.send(get("/3"), false).await.expect("third"))
        .await
        .expect("body");
    let conn = pool
        .checkout(crate::upstream::Key {
            addr: up.addr,
            tls: 0,
        })
        .expect("pooled");
    let err = conn
        .send(
            request(Method::POST, "/4", Body::full(Bytes::from_static(b"x"))),
            true,
        )
        .await
        .expect_err("closed");
    assert!(err.stale && err.replay.is_none(), "{err:?}");
    // On a fresh connection the same close is an upstream failure, not staleness.
    let (_, conn) = connect(up.addr).await;
    let err = conn.send(get("/5"), false).await.expect_err("closed");
    assert!(!err.stale && err.replay.is_none(), "{err:?}");
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_not_handed_out() {
    let up = scripted(vec![vec![Step::AnswerAndClose(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    )]])
    .await;
    let (pool, conn) = connect(up.addr).await;
    read_all(conn.send(get("/"), false).await.expect("response"))
        .await
        .expect("body");
    assert_eq!(pool.idle(up.addr), 1, "nothing said it would close");
    crate::test_util::eventually("the close to reach the pooled connection", || async {
        crate::test_util::closed_by(up.addr).then_some(())
    })
    .await;
    assert!(
        pool.checkout(crate::upstream::Key {
            addr: up.addr,
            tls: 0
        })
        .is_none(),
        "the close is seen at checkout"
    );
    assert_eq!(pool.idle(up.addr), 0);
}

#[tokio::test]
async fn an_upstream_that_answers_before_the_request_body_ends_is_heard() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut chunk).await.expect("read");
            buf.extend_from_slice(&chunk[..n]);
        }
        s.write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\n\r\nbig!")
            .await
            .expect("write");
        // Keeps reading (and dropping) what comes, as a server draining a refused body does.
        while s.read(&mut chunk).await.is_ok_and(|n| n > 0) {}
    });
    let (pool, conn) = connect(addr).await;
    let (body, mut feed) = streamed_body().await;
    feed.send(b"3\r\nabc\r\n").await;
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        conn.send(request(Method::POST, "/upload", body), false),
    )
    .await
    .expect("the answer does not wait for the body")
    .expect("response");
    assert_eq!(resp.status(), 413);
    assert_eq!(read_all(resp).await.expect("body").0, "big!");
    assert_eq!(
        pool.idle(addr),
        0,
        "the request was not sent whole: the connection is closed"
    );
}

#[test]
fn field_lines_encoded_once_go_after_the_requests_fields() {
    let mut headers = HeaderMap::new();
    headers.insert("x-a", "1".parse().unwrap());
    let head = Head::encode_with(
        &Method::GET,
        "/p",
        Some("svc:80"),
        headers,
        b"x-envoy-peer-metadata-id: n\r\n",
    );
    assert_eq!(
        &head.bytes[..],
        &b"GET /p HTTP/1.1\r\nhost: svc:80\r\nx-a: 1\r\nx-envoy-peer-metadata-id: n\r\n"[..]
    );
}
