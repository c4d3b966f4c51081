//! HTTP/2 client conformance, from RFC 9113's MUSTs for a client (in the spirit of h2spec, from the
//! server's seat): a fake upstream on loopback speaks raw frames, right or deliberately wrong, to the
//! proxy's client (`Upstream::send_h2`, nothing below it), and checks what comes over the wire and what
//! the caller gets.
//!
//! Where the RFC allows alternatives (a stream error or a connection error, failing a request or retrying
//! it elsewhere), each is accepted. A few error codes also accept what the reference client (the `h2`
//! crate) sends instead of the RFC's: those are named `H2_*` below, so that they can be narrowed later.
//!
//! The fake server is the raw-frame peer both suites share (`test_peer.rs`), in a server's role: it does
//! what every server must (it answers the client's PINGs and SETTINGS, counts the client's
//! WINDOW_UPDATEs, and by default opens its receive windows as DATA arrives) in `next`; `recv` is the raw
//! frame reader, which skips nothing. Every frame the client sends is checked as it arrives: no larger
//! than the server's SETTINGS_MAX_FRAME_SIZE (16,384 unless a test raises it), no more DATA than the
//! server's stream and connection windows allow, new streams odd and increasing and no more open at once
//! than SETTINGS_MAX_CONCURRENT_STREAMS, and nothing but WINDOW_UPDATE, RST_STREAM or PRIORITY on a
//! stream the client has ended. Accepting connections, reading requests and answering them are the fake
//! server's own, below.
//!
//! Every wait has a 5-second timeout only so that a broken client fails a test instead of hanging it.

use super::hpack::Name;
use super::test_peer::*;
use crate::upstream::{Failure, Upstream};
use crate::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, Request, Response, Version};
use http_body_util::BodyExt;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// FRAME_SIZE_ERROR, for a SETTINGS frame whose length is not a multiple of 6 (6.5). The `h2` crate,
/// the client before Weft's own, sent PROTOCOL_ERROR (it mapped every error in loading a frame to it).
const H2_FRAME_SIZE_ERROR: &[u32] = &[FRAME_SIZE_ERROR];
/// COMPRESSION_ERROR, for a header block HPACK cannot decode (4.3; the `h2` crate sent PROTOCOL_ERROR).
const H2_COMPRESSION_ERROR: &[u32] = &[COMPRESSION_ERROR];
/// What the text of a request's error (its Display and its sources') must contain when the upstream
/// refused its stream: the proxy's `refused-stream` retry policy looks for "REFUSED_STREAM"
/// (`is_refused_stream` in `error.rs`). The `h2` crate's error said "refused stream before processing
/// any application logic", which that check never matched, so the policy never fired on HTTP/2.
const H2_REFUSED_STREAM_TEXT: &[&str] = &["REFUSED_STREAM"];

// ===== The fake upstream =====

/// A listener on loopback that the proxy's client connects to.
struct Fake {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Fake {
    async fn start() -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        Fake { listener, addr }
    }

    /// The next connection, raw.
    async fn accept_raw(&self) -> TcpStream {
        let (io, _) = timeout(WAIT, self.listener.accept())
            .await
            .expect("the client did not connect")
            .expect("accept");
        // Without it, Nagle's algorithm and delayed ACKs hold each 16 KiB frame back for 40 ms.
        io.set_nodelay(true).expect("nodelay");
        io
    }

    /// The next connection, with the handshake done: `settings` sent and the client's ACKed.
    async fn accept(&self, settings: &[(u16, u32)]) -> Conn {
        let mut c = Conn::new(self.accept_raw().await, Role::Server);
        c.handshake(settings).await;
        c
    }

    /// The next connection, with `settings` sent and ACKed by the client before anything else happens.
    async fn accept_settled(&self, settings: &[(u16, u32)]) -> Conn {
        let mut c = self.accept(settings).await;
        c.settled().await;
        c
    }
}

/// A request head as the server read it.
#[derive(Debug)]
struct Req {
    stream: u32,
    fields: Vec<(Name, Bytes)>,
    end_stream: bool,
}

impl Req {
    fn pseudo(&self, name: &Name) -> Option<&str> {
        let mut values = self.fields.iter().filter(|(n, _)| n == name);
        let v = values.next().map(|(_, v)| std::str::from_utf8(v).unwrap());
        assert!(values.next().is_none(), "{name:?} twice in {self:?}");
        v
    }

    /// A regular field's values.
    fn values(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(n, _)| matches!(n, Name::Header(h) if h == name))
            .map(|(_, v)| std::str::from_utf8(v).unwrap())
            .collect()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.values(name).first().copied()
    }
}

/// One accepted connection: the shared raw-frame peer on a socket, in a server's role.
type Conn = Peer<TcpStream>;

impl Conn {
    /// Reads the preface (exactly) and the client's SETTINGS (its first frame), sends `settings` and
    /// ACKs the client's.
    async fn handshake(&mut self, settings: &[(u16, u32)]) {
        let mut preface = [0u8; 24];
        timeout(WAIT, self.io.read_exact(&mut preface))
            .await
            .expect("no preface")
            .expect("the connection closed in the preface");
        assert_eq!(
            &preface[..],
            PREFACE,
            "the preface: {:?}",
            String::from_utf8_lossy(&preface)
        );
        let f = self.first_settings().await;
        self.remote_settings.extend(parse_settings(&f.payload));
        self.send_settings(settings).await;
        self.send(SETTINGS, ACK, 0, []).await;
    }

    /// A response head (HEADERS with END_HEADERS, and END_STREAM if `end`).
    async fn head(&mut self, stream: u32, status: u16, fields: &[(&str, &str)], end: bool) {
        let flags = END_HEADERS | if end { END_STREAM } else { 0 };
        self.send(HEADERS, flags, stream, response_block(status, fields))
            .await;
    }

    /// A whole response: its head, then `body` (if any) in DATA frames, the last with END_STREAM.
    async fn respond(&mut self, stream: u32, status: u16, fields: &[(&str, &str)], body: &[u8]) {
        self.head(stream, status, fields, body.is_empty()).await;
        if !body.is_empty() {
            self.send_body(stream, body, true).await;
        }
    }

    /// The next request head (HEADERS, with CONTINUATIONs, that opens a stream).
    async fn next_request(&mut self) -> Req {
        let stashed = self
            .stash
            .iter()
            .filter(|(_, q)| q.front().is_some_and(|f| f.opens && f.fields.is_some()))
            .map(|(&s, _)| s)
            .min();
        let mut f = match stashed {
            Some(s) => self.stash.get_mut(&s).unwrap().pop_front().unwrap(),
            None => loop {
                let f = self
                    .next()
                    .await
                    .expect("connection closed while waiting for a request");
                if f.opens && f.fields.is_some() {
                    break f;
                }
                assert!(
                    f.stream != 0,
                    "unexpected {f:?} while waiting for a request"
                );
                self.stash.entry(f.stream).or_default().push_back(f);
            },
        };
        Req {
            stream: f.stream,
            fields: f.fields.take().unwrap(),
            end_stream: f.block_end_stream,
        }
    }
}

/// A response's header block (`status` 0: none), or a trailers block (`fields` alone).
fn response_block(status: u16, fields: &[(&str, &str)]) -> Bytes {
    let status = status.to_string();
    let pseudo = [(Name::Status, status.as_str())];
    header_block(&pseudo[..usize::from(status != "0")], fields)
}

// ===== The client under test =====

fn upstream() -> Arc<Upstream> {
    Arc::new(Upstream::new())
}

/// A request to `addr` (absolute URI, HTTP/2) with `fields`.
fn request(
    method: Method,
    addr: SocketAddr,
    path: &str,
    fields: &[(&str, &str)],
    body: Body,
) -> Request<Body> {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .version(Version::HTTP_2);
    for (name, value) in fields {
        b = b.header(*name, *value);
    }
    b.body(body).unwrap()
}

fn get(addr: SocketAddr, path: &str) -> Request<Body> {
    request(Method::GET, addr, path, &[], Body::empty())
}

/// Sends `req` from a task of its own; the handle gives the response head.
fn send(
    up: &Arc<Upstream>,
    addr: SocketAddr,
    req: Request<Body>,
) -> JoinHandle<Result<Response<Body>, Failure>> {
    let up = up.clone();
    tokio::spawn(async move { up.send_h2(addr, None, WAIT, req, &Default::default()).await })
}

/// A response as the caller read it.
#[derive(Debug)]
struct Got {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

/// What a request came to.
#[derive(Debug)]
enum Outcome {
    Whole(Box<Got>),
    /// No response head: the error's text.
    HeadFailed(String),
    /// A head, then reading the body failed.
    BodyFailed(u16, String),
}

impl Outcome {
    fn whole(self) -> Got {
        match self {
            Outcome::Whole(g) => *g,
            other => panic!("want a whole response, got {other:?}"),
        }
    }

    fn is_failed(&self) -> bool {
        !matches!(self, Outcome::Whole(_))
    }
}

/// Reads a response whole.
async fn read_whole(resp: Response<Body>) -> Outcome {
    let (parts, body) = resp.into_parts();
    match timeout(WAIT, body.collect())
        .await
        .expect("the body never ended")
    {
        Ok(c) => Outcome::Whole(Box::new(Got {
            status: parts.status.as_u16(),
            headers: parts.headers,
            trailers: c.trailers().cloned(),
            body: c.to_bytes(),
        })),
        Err(e) => Outcome::BodyFailed(parts.status.as_u16(), chain(&e)),
    }
}

/// Sends `req` and reads its response whole, from a task of its own.
fn call(up: &Arc<Upstream>, addr: SocketAddr, req: Request<Body>) -> JoinHandle<Outcome> {
    let up = up.clone();
    tokio::spawn(async move {
        match up.send_h2(addr, None, WAIT, req, &Default::default()).await {
            Ok(resp) => read_whole(resp).await,
            Err(f) => Outcome::HeadFailed(failure_text(&f)),
        }
    })
}

/// Waits for a task of the client's.
async fn done<T>(h: JoinHandle<T>) -> T {
    timeout(WAIT, h)
        .await
        .expect("the request did not finish")
        .expect("the request's task panicked")
}

/// An error's text and its sources'.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn failure_text(f: &Failure) -> String {
    match f {
        Failure::Connect(e) | Failure::Reset(e) | Failure::RequestBody(e) => chain(e),
    }
}

/// A request body that ends with trailers: sent chunked, with a trailer, to an HTTP/1.1 server (hyper's)
/// and taken from it as it arrives, since `Body` has no constructor for trailers. The guard keeps the
/// source connection open.
async fn body_with_trailers(data: &[u8], trailer: (&str, &str)) -> (Body, TcpStream) {
    use hyper::body::Incoming;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<Incoming>();
    let tx = Arc::new(Mutex::new(Some(tx)));
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.expect("accept");
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            if let Some(tx) = tx.lock().unwrap().take() {
                let _ = tx.send(req.into_body());
            }
            // Never answers: the body streams on while the test holds it.
            std::future::pending::<Result<Response<Body>, std::convert::Infallible>>()
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
            .await;
    });
    let mut source = TcpStream::connect(addr).await.expect("connect");
    let mut raw = format!(
        "POST / HTTP/1.1\r\nhost: source\r\ntransfer-encoding: chunked\r\ntrailer: {}\r\n\r\n{:x}\r\n",
        trailer.0,
        data.len()
    )
    .into_bytes();
    raw.extend_from_slice(data);
    raw.extend_from_slice(format!("\r\n0\r\n{}: {}\r\n\r\n", trailer.0, trailer.1).as_bytes());
    source.write_all(&raw).await.expect("write");
    let incoming = timeout(WAIT, rx).await.expect("no request").expect("body");
    (Body::incoming(incoming), source)
}

// ===== 1. Preface and SETTINGS (RFC 9113, 3.4 and 6.5) =====

#[tokio::test]
async fn preface_settings_and_acks() {
    let fake = Fake::start().await;
    let up = upstream();
    let first = call(&up, fake.addr, get(fake.addr, "/"));
    // `accept` checks the preface byte for byte and that the client's first frame is SETTINGS;
    // `settled`, that it ACKs ours with an empty ACK.
    let mut c = fake
        .accept_settled(&[
            (SETTINGS_MAX_CONCURRENT_STREAMS, 100),
            (SETTINGS_HEADER_TABLE_SIZE, 4096),
        ])
        .await;
    let push = c.remote_settings.get(&SETTINGS_ENABLE_PUSH).copied();
    assert!(
        matches!(push, None | Some(0)),
        "SETTINGS_ENABLE_PUSH {push:?}: push is not wanted"
    );
    // A later SETTINGS is ACKed too.
    c.send_settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 100_000)])
        .await;
    c.settled().await;
    let r = c.next_request().await;
    c.respond(r.stream, 200, &[], b"ok").await;
    assert_eq!(done(first).await.whole().body, "ok");
}

// ===== 2. Request heads (8.3.1, 8.2.2) and stream ids (5.1.1) =====

#[tokio::test]
async fn a_get_is_one_well_formed_headers_frame_and_its_response_arrives_whole() {
    let fake = Fake::start().await;
    let up = upstream();
    let fields = [("x-custom", "v"), ("te", "trailers"), ("accept", "*/*")];
    let req = request(
        Method::GET,
        fake.addr,
        "/a/b?x=1&y=2",
        &fields,
        Body::empty(),
    );
    let got = call(&up, fake.addr, req);
    let mut c = fake.accept(&[]).await;
    let r = c.next_request().await;
    assert_eq!(r.stream, 1, "the first stream is 1");
    assert!(
        r.end_stream,
        "a GET without a body is HEADERS with END_STREAM"
    );
    assert_eq!(r.pseudo(&Name::Method), Some("GET"));
    assert_eq!(r.pseudo(&Name::Scheme), Some("http"));
    assert_eq!(
        r.pseudo(&Name::Authority),
        Some(fake.addr.to_string().as_str())
    );
    assert_eq!(r.pseudo(&Name::Path), Some("/a/b?x=1&y=2"));
    assert_well_formed(&r);
    assert_eq!(r.values("x-custom"), ["v"]);
    assert_eq!(r.values("te"), ["trailers"]);
    assert_eq!(r.values("accept"), ["*/*"]);
    // The response: a head, then the body in two DATA frames.
    c.head(1, 200, &[("x-resp", "yes")], false).await;
    c.send(DATA, 0, 1, b"hello ").await;
    c.send(DATA, END_STREAM, 1, b"world").await;
    let got = done(got).await.whole();
    assert_eq!(got.status, 200);
    assert_eq!(got.headers["x-resp"], "yes");
    assert_eq!(got.body, "hello world");
    assert_eq!(got.trailers, None);
    // The next requests go on the same connection, on streams 3 and 5.
    for want in [3, 5] {
        let got = call(&up, fake.addr, get(fake.addr, "/next"));
        let r = c.next_request().await;
        assert_eq!(r.stream, want);
        assert_eq!(r.pseudo(&Name::Path), Some("/next"));
        c.respond(r.stream, 204, &[], b"").await;
        assert_eq!(done(got).await.whole().status, 204);
    }
}

/// Pseudo-header fields come first, each at most once, only request ones; no connection-specific
/// field, and `te` only as `trailers` (8.2.2, 8.3).
fn assert_well_formed(r: &Req) {
    let first_regular = r
        .fields
        .iter()
        .position(|(n, _)| matches!(n, Name::Header(_)))
        .unwrap_or(r.fields.len());
    for (i, (name, _)) in r.fields.iter().enumerate() {
        match name {
            Name::Method | Name::Scheme | Name::Authority | Name::Path => {
                assert!(i < first_regular, "{name:?} after a regular field: {r:?}")
            }
            Name::Header(_) => {}
            other => panic!("{other:?} in a request: {r:?}"),
        }
    }
    for name in [Name::Method, Name::Scheme, Name::Path] {
        assert!(r.pseudo(&name).is_some(), "no {name:?}: {r:?}");
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
    ] {
        assert!(r.header(name).is_none(), "{name} sent: {r:?}");
    }
    assert!(r.values("te").iter().all(|v| *v == "trailers"), "te: {r:?}");
}

#[tokio::test]
async fn connection_specific_fields_are_never_sent() {
    let fake = Fake::start().await;
    let addr = fake.addr;
    let up = upstream();
    let server = tokio::spawn(async move {
        // Answers every request up to the clean one; gives the tags it saw.
        let mut c = fake.accept(&[]).await;
        let mut seen = Vec::new();
        loop {
            let r = c.next_request().await;
            assert_well_formed(&r);
            let tag = r.header("x-req").expect("x-req").to_owned();
            c.respond(r.stream, 200, &[], b"").await;
            seen.push(tag.clone());
            if tag == "clean" {
                return (seen, c);
            }
        }
    });
    let dirty = [
        ("x-req", "dirty"),
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("upgrade", "websocket"),
        ("te", "gzip"),
    ];
    // Sent without them, as Envoy sends it (the `h2` crate refused such a request before it reached the
    // wire).
    let dirty = done(call(
        &up,
        addr,
        request(Method::GET, addr, "/", &dirty, Body::empty()),
    ))
    .await;
    let clean = request(Method::GET, addr, "/", &[("x-req", "clean")], Body::empty());
    assert_eq!(done(call(&up, addr, clean)).await.whole().status, 200);
    let (seen, _c) = done(server).await;
    assert!(matches!(dirty, Outcome::Whole(_)), "{dirty:?}");
    assert_eq!(seen, ["dirty", "clean"]);
}

// ===== 3. Request bodies and trailers (8.1) =====

#[tokio::test]
async fn a_post_sends_its_body_in_data_frames_ending_the_stream() {
    let fake = Fake::start().await;
    let up = upstream();
    let body = pattern(40_000);
    let req = request(
        Method::POST,
        fake.addr,
        "/up",
        &[],
        Body::full(body.clone()),
    );
    let got = call(&up, fake.addr, req);
    let mut c = fake.accept(&[]).await;
    let r = c.next_request().await;
    assert!(
        !r.end_stream,
        "HEADERS of a request with a body has no END_STREAM"
    );
    assert_eq!(r.pseudo(&Name::Method), Some("POST"));
    assert_well_formed(&r);
    let b = c.read_body(r.stream).await;
    assert_eq!(b.data.len(), body.len(), "{:?}", b.frames);
    assert!(b.data == body, "the body arrived changed");
    assert!(b.trailers.is_none());
    c.respond(r.stream, 200, &[], b"got it").await;
    assert_eq!(done(got).await.whole().body, "got it");
}

#[tokio::test]
async fn request_trailers_go_as_a_last_headers_with_end_stream() {
    let fake = Fake::start().await;
    let up = upstream();
    let (body, _source) = body_with_trailers(b"payload", ("x-checksum", "42")).await;
    let got = call(
        &up,
        fake.addr,
        request(Method::POST, fake.addr, "/t", &[], body),
    );
    let mut c = fake.accept(&[]).await;
    let r = c.next_request().await;
    assert!(!r.end_stream);
    let b = c.read_body(r.stream).await;
    assert_eq!(b.data, b"payload");
    let trailers = b.trailers.expect("no trailers: the body ended on DATA");
    assert_eq!(
        trailers,
        [(
            Name::Header(HeaderName::from_static("x-checksum")),
            Bytes::from_static(b"42")
        )]
    );
    c.respond(r.stream, 200, &[], b"").await;
    assert_eq!(done(got).await.whole().status, 200);
}

// ===== 4. Reading responses (8.1, 6.1, 6.2, 6.10) =====

/// Starts a GET of `/` and accepts its connection; gives the request's stream.
async fn one_get(fake: &Fake, up: &Arc<Upstream>) -> (JoinHandle<Outcome>, Conn, u32) {
    let got = call(up, fake.addr, get(fake.addr, "/"));
    let mut c = fake.accept(&[]).await;
    let r = c.next_request().await;
    (got, c, r.stream)
}

#[tokio::test]
async fn response_trailers_reach_the_caller() {
    let fake = Fake::start().await;
    let up = upstream();
    let (got, mut c, s) = one_get(&fake, &up).await;
    c.head(s, 200, &[("content-type", "application/grpc")], false)
        .await;
    c.send(DATA, 0, s, b"body").await;
    let trailers = response_block(0, &[("grpc-status", "0"), ("grpc-message", "fine")]);
    c.send(HEADERS, END_HEADERS | END_STREAM, s, trailers).await;
    let got = done(got).await.whole();
    assert_eq!(got.body, "body");
    let t = got.trailers.expect("no trailers");
    assert_eq!(t["grpc-status"], "0");
    assert_eq!(t["grpc-message"], "fine");
    assert_eq!(t.len(), 2);
}

#[tokio::test]
async fn a_response_head_over_continuation_frames_is_read_whole() {
    let fake = Fake::start().await;
    let up = upstream();
    let (got, mut c, s) = one_get(&fake, &up).await;
    let block = response_block(201, &[("x-one", "1"), ("x-two", "2"), ("x-three", "3")]);
    // Cut inside fields, not between them.
    let (a, rest) = block.split_at(3);
    let (b, d) = rest.split_at(rest.len() / 2);
    c.send(HEADERS, 0, s, a).await;
    c.send(CONTINUATION, 0, s, b).await;
    c.send(CONTINUATION, END_HEADERS, s, d).await;
    c.send(DATA, END_STREAM, s, b"continued").await;
    let got = done(got).await.whole();
    assert_eq!(got.status, 201);
    for (name, value) in [("x-one", "1"), ("x-two", "2"), ("x-three", "3")] {
        assert_eq!(got.headers[name], value);
    }
    assert_eq!(got.body, "continued");
}

#[tokio::test]
async fn padded_headers_and_data_are_read_without_their_padding() {
    let fake = Fake::start().await;
    let up = upstream();
    let (got, mut c, s) = one_get(&fake, &up).await;
    // HEADERS: pad length, a priority block (deprecated, but its bytes must be skipped), the block, and
    // 10 bytes of padding.
    let mut p = vec![10u8];
    p.extend_from_slice(&[0, 0, 0, 0, 15]);
    p.extend_from_slice(&response_block(200, &[("x-padded", "yes")]));
    p.extend_from_slice(&[0; 10]);
    c.send(HEADERS, END_HEADERS | PADDED | PRIORITY_FLAG, s, p)
        .await;
    // DATA: 5 bytes of padding, then one with only padding, then one with a pad length of 0.
    let mut p = vec![5u8];
    p.extend_from_slice(b"hello");
    p.extend_from_slice(&[0; 5]);
    c.send(DATA, PADDED, s, p).await;
    c.send(DATA, PADDED, s, [7u8, 0, 0, 0, 0, 0, 0, 0]).await;
    c.send(DATA, PADDED | END_STREAM, s, b"\x00 padded").await;
    let got = done(got).await.whole();
    assert_eq!(got.headers["x-padded"], "yes");
    assert_eq!(got.body, "hello padded");
}

#[tokio::test]
async fn interim_responses_are_skipped() {
    let fake = Fake::start().await;
    let up = upstream();
    let (got, mut c, s) = one_get(&fake, &up).await;
    c.head(s, 100, &[], false).await;
    c.head(s, 103, &[("link", "</style.css>; rel=preload")], false)
        .await;
    c.head(s, 200, &[("x-final", "yes")], false).await;
    c.send(DATA, END_STREAM, s, b"final").await;
    let got = done(got).await.whole();
    assert_eq!(got.status, 200);
    assert_eq!(got.headers["x-final"], "yes");
    assert!(got.headers.get("link").is_none(), "{got:?}");
    assert_eq!(got.body, "final");
}

// ===== 5. Flow control, sending (5.2, 6.9) =====

/// A connection with `settings` in force: a first GET has gone through it.
async fn warmed(fake: &Fake, up: &Arc<Upstream>, settings: &[(u16, u32)]) -> Conn {
    let got = call(up, fake.addr, get(fake.addr, "/warm"));
    let mut c = fake.accept_settled(settings).await;
    let r = c.next_request().await;
    c.respond(r.stream, 200, &[], b"").await;
    assert_eq!(done(got).await.whole().status, 200);
    c
}

/// Reads `stream`'s DATA until `total` bytes in all have come, into `into`; a trailers HEADERS or a
/// reset fails.
async fn read_data_to(c: &mut Conn, stream: u32, total: usize, into: &mut Vec<u8>) -> bool {
    let mut ended = false;
    while into.len() < total && !ended {
        let f = c.next_on(stream).await;
        assert_eq!(f.ty, DATA, "{f:?}");
        into.extend_from_slice(&f.data());
        ended = f.has(END_STREAM);
    }
    ended
}

#[tokio::test]
async fn a_request_body_keeps_within_the_stream_and_connection_windows() {
    let fake = Fake::start().await;
    let up = upstream();
    let mut c = warmed(&fake, &up, &[(SETTINGS_INITIAL_WINDOW_SIZE, 1000)]).await;
    c.auto_window = false;
    let body = pattern(200 * 1024);
    let got = call(
        &up,
        fake.addr,
        request(Method::POST, fake.addr, "/", &[], Body::full(body.clone())),
    );
    let r = c.next_request().await;
    let s = r.stream;
    // Every DATA frame is checked against the windows as it arrives (`check_and_decode`). First the
    // stream's 1,000 bytes, then nothing more until a WINDOW_UPDATE.
    let mut data = Vec::new();
    assert!(!read_data_to(&mut c, s, 1000, &mut data).await);
    assert_eq!(data.len(), 1000);
    c.fence().await;
    assert!(
        c.stash.get(&s).is_none_or(VecDeque::is_empty),
        "DATA over the window"
    );
    // Then the stream's window is made large and the connection's (65,535 less 1,000) is what holds
    // the body back; it is topped up each time it runs out.
    c.window_update(s, 1 << 20).await;
    let (mut conn_exhausted, mut ended) = (0, false);
    while !ended {
        ended = read_data_to(&mut c, s, data.len() + 1, &mut data).await;
        if c.conn_recv_window == 0 {
            conn_exhausted += 1;
            c.window_update(0, DEFAULT_WINDOW as u32).await;
        }
    }
    assert_eq!(data.len(), body.len());
    assert!(data == body, "the body arrived changed");
    assert!(
        conn_exhausted >= 2,
        "the connection window ran out {conn_exhausted} times"
    );
    c.respond(s, 200, &[], b"").await;
    assert_eq!(done(got).await.whole().status, 200);
}

#[tokio::test]
async fn a_settings_change_of_the_initial_window_applies_to_open_streams() {
    let fake = Fake::start().await;
    let up = upstream();
    let mut c = warmed(&fake, &up, &[(SETTINGS_INITIAL_WINDOW_SIZE, 1000)]).await;
    let body = pattern(10_000);
    let got = call(
        &up,
        fake.addr,
        request(Method::POST, fake.addr, "/", &[], Body::full(body.clone())),
    );
    c.auto_window = false;
    let s = c.next_request().await.stream;
    let mut data = Vec::new();
    read_data_to(&mut c, s, 1000, &mut data).await;
    // Up to 3,000: 2,000 more.
    c.send_settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 3000)])
        .await;
    read_data_to(&mut c, s, 3000, &mut data).await;
    assert_eq!(data.len(), 3000);
    // Down to 2,000: the window is -1,000, and a WINDOW_UPDATE of 1,500 opens it to 500.
    c.send_settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 2000)])
        .await;
    c.settled().await;
    c.window_update(s, 1500).await;
    read_data_to(&mut c, s, 3500, &mut data).await;
    assert_eq!(data.len(), 3500);
    c.fence().await;
    // (Any DATA past the window fails in `check_and_decode`.) Then wide open: the rest comes.
    c.send_settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)])
        .await;
    assert!(read_data_to(&mut c, s, body.len(), &mut data).await);
    assert!(data == body, "the body arrived changed");
    c.respond(s, 200, &[], b"").await;
    assert_eq!(done(got).await.whole().status, 200);
}

/// The sizes of the DATA frames that carry a 100,000-byte request body to a server with `settings`
/// (whose window `conn_window` more is given on the connection); the body is checked whole, and answered.
/// `recv` checks every frame against the server's SETTINGS_MAX_FRAME_SIZE.
async fn upload_frames(settings: &[(u16, u32)], conn_window: u32) -> Vec<usize> {
    let fake = Fake::start().await;
    let up = upstream();
    let body = pattern(100_000);
    let got = call(
        &up,
        fake.addr,
        request(Method::POST, fake.addr, "/", &[], Body::full(body.clone())),
    );
    let mut c = fake.accept_settled(settings).await;
    if conn_window > 0 {
        c.window_update(0, conn_window).await;
    }
    let r = c.next_request().await;
    let b = c.read_body(r.stream).await;
    assert!(b.data == body);
    c.respond(r.stream, 200, &[], b"").await;
    assert_eq!(done(got).await.whole().status, 200);
    b.frames
}

#[tokio::test]
async fn data_frames_keep_to_the_servers_max_frame_size() {
    // The server leaves SETTINGS_MAX_FRAME_SIZE at its default, 16,384.
    let frames = upload_frames(&[], 0).await;
    assert!(frames.len() >= 100_000usize.div_ceil(DEFAULT_MAX_FRAME_SIZE));
}

#[tokio::test]
async fn data_frames_grow_to_a_raised_max_frame_size_and_no_further() {
    // Windows large enough that flow control does not cut the frames shorter.
    let settings = [
        (SETTINGS_MAX_FRAME_SIZE, 20_000),
        (SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20),
    ];
    let frames = upload_frames(&settings, 1 << 20).await;
    assert!(
        frames.iter().any(|&n| n > DEFAULT_MAX_FRAME_SIZE),
        "{frames:?}"
    );
}

// ===== 6. Flow control, receiving (5.2, 6.9) =====

#[tokio::test]
async fn a_large_response_is_let_through_by_window_updates_as_it_is_read() {
    let fake = Fake::start().await;
    let up = upstream();
    let (got, mut c, s) = one_get(&fake, &up).await;
    let body = pattern(3 << 20);
    // `send_body` keeps to the client's windows (its SETTINGS_INITIAL_WINDOW_SIZE and connection
    // WINDOW_UPDATEs), waiting for more as they run out.
    c.head(s, 200, &[], false).await;
    c.send_body(s, &body, true).await;
    let got = done(got).await.whole();
    assert_eq!(got.body.len(), body.len());
    assert!(got.body == body, "the body arrived changed");
    let initial = c.remote_setting(SETTINGS_INITIAL_WINDOW_SIZE, DEFAULT_WINDOW as u32) as usize;
    if body.len() > initial {
        assert!(
            c.stream_updates.iter().any(|&(st, _)| st == s),
            "{} bytes through a {initial}-byte window without a WINDOW_UPDATE",
            body.len()
        );
    }
}

#[tokio::test]
async fn data_beyond_the_stream_window_is_a_flow_control_error() {
    let fake = Fake::start().await;
    let up = upstream();
    let head = send(&up, fake.addr, get(fake.addr, "/"));
    let mut c = fake.accept(&[]).await;
    let s = c.next_request().await.stream;
    c.head(s, 200, &[], false).await;
    // The caller holds the body without reading it: the stream's window fills, and one byte more is
    // over it.
    let resp = done(head).await.expect("a response head");
    let window = c.stream_send_window(s) as usize;
    c.send_body(s, &vec![b'x'; window], false).await;
    let window = c.stream_send_window(s);
    assert_eq!(
        window, 0,
        "the client opened the window without the caller reading"
    );
    c.send(DATA, 0, s, b"!").await;
    c.expect_stream_or_connection_error(s, &[FLOW_CONTROL_ERROR])
        .await;
    drop(resp);
}

// ===== 7. PING (6.7) =====

#[tokio::test]
async fn a_ping_is_answered_with_the_same_bytes_and_an_ack_is_not() {
    let fake = Fake::start().await;
    let up = upstream();
    let mut c = warmed(&fake, &up, &[]).await;
    // An unsolicited ACK gets no answer: the next ACK is the PING's.
    c.send(PING, ACK, 0, *b"not-me!!").await;
    c.send(PING, 0, 0, *b"\x00\x01\xfe\xffping").await;
    loop {
        let f = c.next().await.expect("connection closed");
        if f.ty == PING {
            assert_eq!((f.flags, f.stream), (ACK, 0), "{f:?}");
            assert_eq!(&f.payload[..], b"\x00\x01\xfe\xffping", "{f:?}");
            break;
        }
        assert!(f.stream != 0, "unexpected {f:?}");
    }
}

// ===== 8. SETTINGS_MAX_CONCURRENT_STREAMS (5.1.2) =====

#[tokio::test]
async fn max_concurrent_streams_is_kept_to() {
    let fake = Fake::start().await;
    let up = upstream();
    let mut c = warmed(&fake, &up, &[(SETTINGS_MAX_CONCURRENT_STREAMS, 1)]).await;
    // `check_and_decode` fails at a HEADERS that opens a stream while another is open.
    let a = call(&up, fake.addr, get(fake.addr, "/a"));
    let b = call(&up, fake.addr, get(fake.addr, "/b"));
    let first = c.next_request().await;
    c.fence().await;
    c.fence().await;
    c.respond(first.stream, 200, &[], b"first").await;
    let second = c.next_request().await;
    assert!(second.stream > first.stream);
    c.respond(second.stream, 200, &[], b"second").await;
    let (a, b) = (done(a).await.whole(), done(b).await.whole());
    let mut bodies = [a.body, b.body];
    bodies.sort();
    assert_eq!(bodies, [Bytes::from("first"), Bytes::from("second")]);
    let paths = [
        first.pseudo(&Name::Path).unwrap(),
        second.pseudo(&Name::Path).unwrap(),
    ];
    assert!(paths.contains(&"/a") && paths.contains(&"/b"), "{paths:?}");
}

// ===== 9. RST_STREAM (6.4, 8.1, 8.7) =====

#[tokio::test]
async fn refused_stream_fails_the_request_by_name_and_the_connection_goes_on() {
    let fake = Fake::start().await;
    let up = upstream();
    let (got, mut c, s) = one_get(&fake, &up).await;
    c.rst(s, REFUSED_STREAM).await;
    // Today's client does not retry on its own: the caller gets the error (and the route's
    // `refused-stream` policy decides).
    match done(got).await {
        Outcome::HeadFailed(text) => assert!(
            H2_REFUSED_STREAM_TEXT.iter().any(|t| text.contains(t)),
            "{text:?} does not name REFUSED_STREAM"
        ),
        other => panic!("want an error, got {other:?}"),
    }
    let next = call(&up, fake.addr, get(fake.addr, "/next"));
    let r = c.next_request().await;
    assert_eq!(
        r.pseudo(&Name::Path),
        Some("/next"),
        "a retry, not the next request"
    );
    c.respond(r.stream, 200, &[], b"").await;
    assert_eq!(done(next).await.whole().status, 200);
}

#[tokio::test]
async fn a_reset_after_the_head_fails_the_body() {
    let fake = Fake::start().await;
    let up = upstream();
    let (got, mut c, s) = one_get(&fake, &up).await;
    c.head(s, 200, &[], false).await;
    c.send(DATA, 0, s, b"partial").await;
    c.rst(s, INTERNAL_ERROR).await;
    match done(got).await {
        Outcome::BodyFailed(200, text) => assert!(!text.is_empty()),
        other => panic!("want a body error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_no_error_reset_after_a_complete_response_changes_nothing() {
    let fake = Fake::start().await;
    let up = upstream();
    // A GET answered whole, then reset with NO_ERROR before the caller reads the body.
    let head = send(&up, fake.addr, get(fake.addr, "/"));
    let mut c = fake.accept(&[]).await;
    let s = c.next_request().await.stream;
    c.respond(s, 200, &[], b"complete").await;
    c.rst(s, NO_ERROR).await;
    c.fence().await;
    let resp = done(head).await.expect("a response head");
    assert_eq!(read_whole(resp).await.whole().body, "complete");
    // A POST answered whole before its body was sent (8.1: the server may then reset it with NO_ERROR):
    // the caller gets the response, and the client sends no more of the body.
    c.auto_window = false;
    let body = Body::full(pattern(200_000));
    let got = call(
        &up,
        fake.addr,
        request(Method::POST, fake.addr, "/", &[], body),
    );
    let r = c.next_request().await;
    c.respond(r.stream, 200, &[], b"early").await;
    c.rst(r.stream, NO_ERROR).await;
    assert_eq!(done(got).await.whole().body, "early");
    c.fence().await;
    c.stash.remove(&r.stream);
    c.remote_reset.insert(r.stream); // Anything more on it now fails in `check_and_decode`.
    let next = call(&up, fake.addr, get(fake.addr, "/next"));
    let n = c.next_request().await;
    c.respond(n.stream, 200, &[], b"").await;
    assert_eq!(done(next).await.whole().status, 200);
}

// ===== 10. GOAWAY (6.8) =====

/// Two requests open at once (tagged `a` and `b`), on streams 1 and 3 of a new connection.
async fn two_open(
    fake: &Fake,
    up: &Arc<Upstream>,
) -> (JoinHandle<Outcome>, JoinHandle<Outcome>, Conn) {
    let a = call(up, fake.addr, get(fake.addr, "/a"));
    let mut c = fake.accept(&[]).await;
    let r = c.next_request().await;
    assert_eq!((r.stream, r.pseudo(&Name::Path)), (1, Some("/a")));
    let b = call(up, fake.addr, get(fake.addr, "/b"));
    let r = c.next_request().await;
    assert_eq!((r.stream, r.pseudo(&Name::Path)), (3, Some("/b")));
    (a, b, c)
}

#[tokio::test]
async fn goaway_lets_earlier_streams_finish_and_new_requests_go_on_a_new_connection() {
    let fake = Fake::start().await;
    let up = upstream();
    let addr = fake.addr;
    let (a, b, mut c) = two_open(&fake, &up).await;
    c.goaway(1, NO_ERROR).await;
    c.respond(1, 200, &[], b"one").await;
    assert_eq!(done(a).await.whole().body, "one");
    // Stream 3 was not processed: it fails, or is sent again on a new connection.
    let c2 = tokio::spawn(async move {
        let mut c2 = fake.accept(&[]).await;
        let mut paths = Vec::new();
        while !paths.contains(&"/c".to_owned()) {
            let r = c2.next_request().await;
            let path = r.pseudo(&Name::Path).unwrap().to_owned();
            c2.respond(r.stream, 200, &[], path.as_bytes()).await;
            paths.push(path);
        }
        paths
    });
    let b = done(b).await;
    let c_got = done(call(&up, addr, get(addr, "/c"))).await;
    assert_eq!(c_got.whole().body, "/c");
    let paths = done(c2).await;
    match b {
        Outcome::Whole(g) => {
            assert_eq!(g.body, "/b");
            assert_eq!(paths, ["/b", "/c"]);
        }
        failed => {
            assert!(matches!(failed, Outcome::HeadFailed(_)), "{failed:?}");
            assert_eq!(paths, ["/c"]);
        }
    }
    // Nothing new came on the first connection (`check_and_decode` would fail at a stream above 3, or
    // it closed).
    if c.connection_end_or_fence().await {
        assert_eq!(c.last_stream, 3);
    }
}

impl Conn {
    /// A PING's round trip if the connection is still open (true), or its end (false).
    async fn connection_end_or_fence(&mut self) -> bool {
        let data = self.ping_data();
        self.send(PING, 0, 0, data).await;
        loop {
            let Some(f) = self.next().await else {
                return false;
            };
            if f.ty == PING && f.has(ACK) && f.payload[..] == data {
                return true;
            }
            if f.ty == GOAWAY {
                assert_eq!(f.error_code(), NO_ERROR, "{f:?}");
            }
        }
    }
}

#[tokio::test]
async fn goaway_with_an_error_fails_the_open_streams() {
    let fake = Fake::start().await;
    let up = upstream();
    let (a, b, mut c) = two_open(&fake, &up).await;
    c.goaway(3, PROTOCOL_ERROR).await;
    drop(c);
    assert!(done(a).await.is_failed());
    assert!(done(b).await.is_failed());
    let got = call(&up, fake.addr, get(fake.addr, "/again"));
    let mut c = fake.accept(&[]).await;
    let r = c.next_request().await;
    c.respond(r.stream, 200, &[], b"again").await;
    assert_eq!(done(got).await.whole().body, "again");
}

// ===== 11. The connection closing =====

#[tokio::test]
async fn a_close_mid_response_fails_the_body_and_the_next_request_reconnects() {
    let fake = Fake::start().await;
    let up = upstream();
    let (got, mut c, s) = one_get(&fake, &up).await;
    c.head(s, 200, &[], false).await;
    c.send(DATA, 0, s, b"part of it").await;
    drop(c);
    match done(got).await {
        Outcome::BodyFailed(200, text) => assert!(!text.is_empty()),
        other => panic!("want a body error, got {other:?}"),
    }
    let got = call(&up, fake.addr, get(fake.addr, "/again"));
    let mut c = fake.accept(&[]).await;
    let r = c.next_request().await;
    assert_eq!(r.stream, 1, "a new connection starts at stream 1");
    c.respond(r.stream, 200, &[], b"again").await;
    assert_eq!(done(got).await.whole().body, "again");
}

// ===== 12. Protocol errors of the server =====

#[tokio::test]
async fn data_on_a_stream_never_opened_is_a_connection_error() {
    let fake = Fake::start().await;
    let up = upstream();
    let (got, mut c, s) = one_get(&fake, &up).await;
    assert_eq!(s, 1);
    c.send(DATA, 0, 7, b"who?").await;
    // A GOAWAY(PROTOCOL_ERROR) (5.1: DATA on an idle stream); at the least, the connection fails.
    match c.connection_end().await {
        Ended::GoAway { code, .. } => assert_eq!(code, PROTOCOL_ERROR),
        Ended::Closed => {}
    }
    assert!(done(got).await.is_failed());
}

#[tokio::test]
async fn a_push_promise_with_push_disabled_is_a_connection_error() {
    let fake = Fake::start().await;
    let up = upstream();
    let (got, mut c, s) = one_get(&fake, &up).await;
    let mut p = 2u32.to_be_bytes().to_vec();
    let pseudo = [
        (Name::Method, "GET"),
        (Name::Scheme, "http"),
        (Name::Authority, "pushed"),
        (Name::Path, "/pushed"),
    ];
    p.extend_from_slice(&header_block(&pseudo, &[]));
    c.send(PUSH_PROMISE, END_HEADERS, s, p).await;
    c.expect_goaway(&[PROTOCOL_ERROR]).await;
    assert!(done(got).await.is_failed());
}

#[tokio::test]
async fn a_response_without_status_fails_the_request() {
    let fake = Fake::start().await;
    let up = upstream();
    let (got, mut c, s) = one_get(&fake, &up).await;
    // A malformed response: a stream error (or a connection error) of type PROTOCOL_ERROR (8.1.1).
    let block = response_block(0, &[("x-a", "b")]);
    c.send(HEADERS, END_HEADERS, s, &block).await;
    let end = c
        .expect_stream_or_connection_error(s, &[PROTOCOL_ERROR])
        .await;
    assert!(done(got).await.is_failed());
    // With END_STREAM too (the stream is then closed, so a RST_STREAM is not required): the request
    // still fails.
    let got = call(&up, fake.addr, get(fake.addr, "/"));
    if let StreamEnd::GoAway(_) = end {
        c = fake.accept(&[]).await;
    }
    let r = c.next_request().await;
    c.send(HEADERS, END_HEADERS | END_STREAM, r.stream, &block)
        .await;
    assert!(done(got).await.is_failed());
}

#[tokio::test]
async fn settings_of_a_bad_length_is_a_frame_size_error() {
    let fake = Fake::start().await;
    let up = upstream();
    let (got, mut c, _) = one_get(&fake, &up).await;
    c.send(SETTINGS, 0, 0, [0, 4, 0, 0, 1]).await;
    c.expect_goaway(H2_FRAME_SIZE_ERROR).await;
    assert!(done(got).await.is_failed());
}

#[tokio::test]
async fn an_undecodable_header_block_is_a_compression_error() {
    let fake = Fake::start().await;
    let up = upstream();
    let (got, mut c, s) = one_get(&fake, &up).await;
    // An indexed field of index 0 (RFC 7541, 6.1).
    c.send(HEADERS, END_HEADERS, s, [0x80]).await;
    c.expect_goaway(H2_COMPRESSION_ERROR).await;
    assert!(done(got).await.is_failed());
}

// ===== 13. Cancellation (8.7) =====

#[tokio::test]
async fn dropping_the_response_future_cancels_the_stream() {
    let fake = Fake::start().await;
    let up = upstream();
    let head = send(&up, fake.addr, get(fake.addr, "/"));
    let mut c = fake.accept(&[]).await;
    let s = c.next_request().await.stream;
    head.abort();
    assert!(timeout(WAIT, head).await.expect("abort").is_err());
    assert_eq!(c.stream_end(s).await, StreamEnd::Reset(CANCEL));
    assert_still_usable(&fake, &up, &mut c).await;
}

#[tokio::test]
async fn dropping_the_body_half_way_cancels_the_stream() {
    let fake = Fake::start().await;
    let up = upstream();
    let head = send(&up, fake.addr, get(fake.addr, "/"));
    let mut c = fake.accept(&[]).await;
    let s = c.next_request().await.stream;
    c.head(s, 200, &[], false).await;
    c.send(DATA, 0, s, b"first half").await;
    let mut body = done(head).await.expect("a response head").into_body();
    let first = timeout(WAIT, body.frame())
        .await
        .expect("a frame")
        .expect("data")
        .expect("data");
    assert_eq!(first.into_data().unwrap(), "first half");
    drop(body);
    assert_eq!(c.stream_end(s).await, StreamEnd::Reset(CANCEL));
    assert_still_usable(&fake, &up, &mut c).await;
}

/// A next request goes on the same connection and is answered.
async fn assert_still_usable(fake: &Fake, up: &Arc<Upstream>, c: &mut Conn) {
    let got = call(up, fake.addr, get(fake.addr, "/next"));
    let r = c.next_request().await;
    c.respond(r.stream, 200, &[], b"next").await;
    assert_eq!(done(got).await.whole().body, "next");
}
