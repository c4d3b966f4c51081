//! Accepting connections and serving HTTP/1.1 (keep-alive, Weft's own: `h1::server`) and HTTP/2 prior
//! knowledge (Weft's own too: `h2::server`) on them, with a graceful drain when the listener is told to stop.
//!
//! The protocol is told from the connection's first bytes, read once into the buffer that the HTTP/1.1
//! server goes on reading into (or that the HTTP/2 server reads first): the HTTP/2 preface, or anything else for
//! HTTP/1.1. (hyper-util's auto builder read only the preface's 24 bytes first, which cost a second
//! `recvfrom` for every HTTP/1.1 connection.)

use super::drain::{until_closed, Drain, Watch};
use super::h1;
use super::limits::Limits;
use super::Body;
use crate::net::{accept, Accepted, Listener};
use crate::tls::{PeerTls, ServerTls};
use bytes::{Buf, Bytes, BytesMut};
use http::{Request, Response};
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tracing::Instrument;

/// A request handler: every request gets a response (errors become local responses inside). Generic
/// rather than a boxed trait object: the servers then keep each request's future in the connection's own
/// slot,
/// where a `Box<dyn Future>` cost a 2 KB allocation per request (glibc's slow path, above its per-thread
/// cache) and a copy: 590 of 31,300 instructions per proxied request (callgrind, `bench/instructions`).
pub trait Handler: Fn(Request<Body>) -> Self::Future + Clone + Send + Sync + 'static {
    /// The future of one request.
    type Future: Future<Output = Response<Body>> + Send + 'static;
}

impl<H, F> Handler for H
where
    H: Fn(Request<Body>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    type Future = F;
}

/// The HTTP/2 connection preface (RFC 9113, 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An accepted connection: the bytes read to tell its protocol come first, then the socket.
///
/// Its `shutdown(2)` is left to `close(2)`: shutting the write side down just before the close tells the
/// peer nothing the close does not (both send FIN after any unsent data), and cost a system call per
/// connection when hyper, which did so, served HTTP/2 here.
struct Downstream {
    first: Bytes,
    stream: Accepted,
}

impl AsyncRead for Downstream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.first.is_empty() {
            let n = self.first.len().min(buf.remaining());
            buf.put_slice(&self.first[..n]);
            self.first.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Downstream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // TLS sends its close_notify; a plain socket is left to `close(2)` (see above).
        if self.stream.is_tls() {
            return Pin::new(&mut self.stream).poll_shutdown(cx);
        }
        Poll::Ready(Ok(()))
    }
}

/// What a server knows of a connection when it makes the connection's handler (see [`serve_with`]).
#[derive(Debug, Clone)]
pub struct Connection {
    /// The client's address.
    pub peer: SocketAddr,
    /// The address it connected to (the listener's).
    pub local: Option<SocketAddr>,
    /// What the TLS handshake told of the client, when the connection is TLS. Boxed: the connection
    /// is held across the first reads, and inline it made every connection's task 80 bytes larger.
    pub tls: Option<Box<PeerTls>>,
}

/// Makes a connection's handler from what is known of the connection.
pub trait MakeHandler: Fn(Connection) -> Self::Handler + Clone + Send + Sync + 'static {
    /// The handler of one connection.
    type Handler: Handler;
}

impl<M, H> MakeHandler for M
where
    M: Fn(Connection) -> H + Clone + Send + Sync + 'static,
    H: Handler,
{
    type Handler = H;
}

/// Reads a new connection's first bytes: whether it speaks HTTP/2 (the preface), and those bytes in the
/// buffer the HTTP/1.1 server goes on with. `None` when it closes or fails before saying anything.
async fn detect(stream: &mut Accepted) -> Option<(bool, BytesMut)> {
    let mut first = h1::codec::read_buf();
    loop {
        match poll_fn(|cx| stream.poll_fill(&mut first, cx)).await {
            Ok(0) | Err(_) if first.is_empty() => return None,
            // Closed or failed after a few bytes: the server reports what it makes of them.
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let n = first.len().min(H2_PREFACE.len());
        // Decided once the bytes differ from the preface, or once all of it is there; a client that
        // sends the preface in pieces is waited for.
        if first[..n] != H2_PREFACE[..n] || n == H2_PREFACE.len() {
            break;
        }
    }
    Some((first.starts_with(H2_PREFACE), first))
}

/// Reads the first bytes of a connection, or `None` when it closes first or the listener drains.
async fn detect_or_drain(stream: &mut Accepted, watch: &mut Watch) -> Option<(bool, BytesMut)> {
    let mut detecting = std::pin::pin!(detect(stream));
    // The drain flag is read before every poll of the connection (an atomic load): see `drain`.
    poll_fn(|cx| {
        if watch.poll_draining(cx) {
            return Poll::Ready(None);
        }
        detecting.as_mut().poll(cx)
    })
    .await
}

/// One accepted connection, served to its end: TLS first when the listener has it and the client
/// starts a handshake, then HTTP/1.1 or HTTP/2 as its first bytes say.
async fn connection<M: MakeHandler>(
    mut stream: Accepted,
    mut conn: Connection,
    make: M,
    tls: Option<ServerTls>,
    mut watch: Watch,
) {
    let (mut is_h2, mut first) = match detect_or_drain(&mut stream, &mut watch).await {
        Some(d) => d,
        None => return,
    };
    if let Some(tls) = &tls {
        if first.first() == Some(&crate::tls::HANDSHAKE_RECORD) {
            let tcp = match stream.into_registered() {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot register the connection");
                    return;
                }
            };
            let secured = match crate::tls::accept(first.freeze(), tcp, tls).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(peer = %conn.peer, error = %e, "TLS refused");
                    return;
                }
            };
            conn.tls = Some(Box::new(secured.peer()));
            stream = Accepted::from(secured);
            (is_h2, first) = match detect_or_drain(&mut stream, &mut watch).await {
                Some(d) => d,
                None => return,
            };
        } else if !tls.allow_plaintext {
            // STRICT: a plaintext client is closed without a byte (as Envoy's listener with no
            // plaintext filter chain does).
            tracing::debug!(peer = %conn.peer, "plaintext refused: the listener requires mutual TLS");
            return;
        }
    }
    let handler = make(conn);
    if is_h2 {
        // Boxed: an HTTP/2 connection is several KB, and held inline it made every connection's task
        // that large, HTTP/1.1 ones included, while tokio copies a task's future three to six times over
        // its life (spawn, completion, join): 7,000 instructions per connection (`bench/instructions`
        // with `WORKLOAD=http1-new-conn`).
        Box::pin(serve_h2(stream, first, handler, watch)).await;
    } else {
        h1::server::serve(stream, first, &handler, &mut watch).await;
    }
}

/// HTTP/2 (prior knowledge) on a connection whose first bytes are in `first` (see `h2`).
async fn serve_h2(mut stream: Accepted, first: BytesMut, handler: impl Handler, mut watch: Watch) {
    // HTTP/2 waits on its socket for the life of the connection.
    if let Err(e) = stream.register() {
        tracing::debug!(error = %e, "cannot register the connection");
        return;
    }
    let io = Downstream {
        first: first.freeze(),
        stream,
    };
    let limits = *watch.limits();
    if let Err(e) = super::h2::serve_with(io, handler, |cx| watch.poll_draining(cx), limits).await {
        tracing::debug!(error = %e, "connection ended with error");
    }
}

/// Accepts until `stop` turns true, then asks every connection to finish (HTTP/1: after the current
/// request; HTTP/2: GOAWAY) and waits up to `drain` for them. Each connection runs under `limits`; one
/// accepted beyond `limits.max_connections` is closed at once.
pub async fn serve(
    name: &'static str,
    listener: Listener,
    handler: impl Handler,
    stop: watch::Receiver<bool>,
    drain: Duration,
    limits: Limits,
) {
    let make = move |_: Connection| handler.clone();
    serve_with(name, listener, make, None, stop, drain, limits).await
}

/// As [`serve`], with each connection's handler made by `make` from what is known of the connection,
/// and TLS terminated first when `tls` is given (plaintext refused unless it allows it).
pub async fn serve_with(
    name: &'static str,
    listener: Listener,
    make: impl MakeHandler,
    tls: Option<ServerTls>,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
    limits: Limits,
) {
    let local = listener.local_addr().ok();
    // HTTP clients speak first: a connection is accepted with its request (see `defer_accept`).
    if let Err(e) = listener.defer_accept() {
        tracing::debug!(listener = name, error = %e, "TCP_DEFER_ACCEPT not set");
    }
    // The connections' timeouts cost no timer operation per request: see `limits::Watchdog`.
    let signal = Arc::new(Drain::new(limits));
    let mut stopped = std::pin::pin!(crate::stopped(&mut stop));
    loop {
        let Some((stream, peer)) = accept(&listener, stopped.as_mut(), name).await else {
            break;
        };
        if signal.live() >= limits.max_connections {
            // Closed at once (a reset, as the request it came with is unread), so the client learns
            // now rather than waiting in the backlog; the connections open go on.
            tracing::debug!(listener = name, peer = %peer, max = limits.max_connections, "connection limit reached, closing");
            drop(stream);
            continue;
        }
        // Inherited from the listener on Linux (see `bind`).
        #[cfg(not(target_os = "linux"))]
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            peer,
            local,
            tls: None,
        };
        let watch = signal.watch();
        let span = tracing::debug_span!("conn", listener = name, peer = %peer);
        // Boxed before it is spawned: tokio moves a task's future through several frames as it spawns,
        // completes and joins it (nine copies of it per connection), which for a connection's 3.6 KB or
        // more cost more than the allocation (`bench/instructions` with `WORKLOAD=http1-new-conn`). Not
        // joined: the drain signal counts the connections open (see `drain`).
        drop(tokio::spawn(Box::pin(
            until_closed(
                signal.clone(),
                connection(stream, conn, make.clone(), tls.clone(), watch),
            )
            .instrument(span),
        )));
    }
    drop(listener);
    signal.start();
    tracing::info!(listener = name, addr = ?local, "listener stopped, draining");
    if tokio::time::timeout(drain, signal.all_ended())
        .await
        .is_err()
    {
        tracing::info!(
            listener = name,
            "drain timeout, closing remaining connections"
        );
        signal.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpStream;

    /// A listener from `bind` on an ephemeral loopback port, and its address.
    async fn loopback() -> (Listener, SocketAddr) {
        let listener = crate::net::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = listener.local_addr().expect("addr");
        (listener, addr)
    }

    /// A connected pair on loopback: the client's end and the accepted end.
    async fn pair() -> (TcpStream, Accepted) {
        let (listener, addr) = loopback().await;
        let client = TcpStream::connect(addr).await.expect("connect");
        (client, listener.accept().await.expect("accept").0)
    }

    /// What `detect` makes of a client that writes `parts` and then closes; and everything the server
    /// would read afterwards. Each part is written once `detect` has read the one before (or has
    /// decided), so the parts arrive as separate reads.
    async fn detect_from(parts: &[&[u8]]) -> Option<(bool, Vec<u8>)> {
        use tokio::io::AsyncWriteExt;
        let (mut client, mut accepted) = pair().await;
        let detector = tokio::spawn(async move {
            let detected = detect(&mut accepted).await;
            (detected, accepted)
        });
        for p in parts {
            client.write_all(p).await.expect("write");
            crate::test_util::eventually("the part to be read", || async {
                (detector.is_finished() || crate::test_util::read_by_peer(&client)).then_some(())
            })
            .await;
        }
        drop(client);
        let (detected, mut accepted) = detector.await.expect("detector");
        let (h2, first) = detected?;
        let mut all = first.to_vec();
        accepted.read_to_end(&mut all).await.expect("read");
        Some((h2, all))
    }

    #[tokio::test]
    async fn http1_is_told_from_the_first_read_and_nothing_is_lost() {
        let req: &[u8] = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";
        assert_eq!(
            detect_from(&[req, b"more"]).await,
            Some((false, [req, b"more"].concat()))
        );
        // Shorter than the preface, and not a piece of it.
        assert_eq!(detect_from(&[b"GE"]).await, Some((false, b"GE".to_vec())));
    }

    #[tokio::test]
    async fn the_http2_preface_is_recognised_even_in_pieces() {
        let (a, b) = H2_PREFACE.split_at(5);
        let frames: &[u8] = b"\0\0\0\x04\0\0\0\0\0";
        assert_eq!(
            detect_from(&[a, b, frames]).await,
            Some((true, [H2_PREFACE, frames].concat()))
        );
        // A piece of the preface and then something else is HTTP/1.1 (and the HTTP/1.1 server will
        // reject it).
        assert_eq!(
            detect_from(&[b"PRI * HTTP/1.1\r\n"]).await,
            Some((false, b"PRI * HTTP/1.1\r\n".to_vec()))
        );
    }

    #[tokio::test]
    async fn a_connection_that_closes_without_a_byte_is_dropped() {
        assert_eq!(detect_from(&[]).await, None);
    }

    /// The proxy's answers carry a `date` (RFC 9110, 6.6.1) over HTTP/1.1 and HTTP/2 alike.
    #[tokio::test]
    async fn answers_carry_a_date_on_both_protocols() {
        use tokio::io::AsyncWriteExt;
        let s = serving(Duration::from_secs(1)).await;
        let addr = s.addr;
        let mut h1 = TcpStream::connect(addr).await.expect("connect");
        h1.write_all(b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
            .await
            .expect("write");
        let answer = read_to_close(&mut h1, "an HTTP/1.1 answer").await;
        let answer = String::from_utf8_lossy(&answer);
        let dates: Vec<&str> = answer
            .lines()
            .filter_map(|l| l.strip_prefix("date: "))
            .collect();
        assert_eq!(dates.len(), 1, "{answer}");
        assert!(
            httpdate::parse_http_date(dates[0].trim()).is_ok(),
            "{answer}"
        );

        let io = TokioIo::new(TcpStream::connect(addr).await.expect("connect"));
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
        tokio::spawn(conn);
        let req = Request::get("http://a/")
            .body(http_body_util::Empty::<Bytes>::new())
            .expect("request");
        let resp = send.send_request(req).await.expect("h2 answer");
        let dates: Vec<_> = resp.headers().get_all(hyper::header::DATE).iter().collect();
        assert_eq!(dates.len(), 1, "{:?}", resp.headers());
        assert!(httpdate::parse_http_date(dates[0].to_str().expect("ascii")).is_ok());
        drop(send);
        s.stop.send(true).expect("stop");
        tokio::time::timeout(Duration::from_secs(10), s.server)
            .await
            .expect("serve returns")
            .expect("task");
    }

    /// Everything `stream` receives until the server closes it; panics with `what` after 10 s.
    async fn read_to_close(stream: &mut TcpStream, what: &str) -> Vec<u8> {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got))
            .await
            .unwrap_or_else(|_| panic!("{what}"))
            .expect("read");
        got
    }

    /// A listener served with a test handler, and the means to stop it.
    struct Serving {
        addr: SocketAddr,
        stop: watch::Sender<bool>,
        /// A message each time `/slow` or `/hang` starts.
        started: tokio::sync::mpsc::UnboundedReceiver<()>,
        /// Lets every `/slow` request, started or to come, answer.
        release: watch::Sender<bool>,
        server: tokio::task::JoinHandle<()>,
    }

    /// A served test handler: `/slow` answers once released, `/hang` never, each saying on `started`
    /// when it started; anything else answers at once.
    async fn serving(drain: Duration) -> Serving {
        let (listener, addr) = loopback().await;
        let (stop, stop_rx) = watch::channel(false);
        let (started_tx, started) = tokio::sync::mpsc::unbounded_channel::<()>();
        let (release, release_rx) = watch::channel(false);
        let handler = move |req: Request<Body>| {
            let started = started_tx.clone();
            let mut released = release_rx.clone();
            async move {
                match req.uri().path() {
                    "/slow" => {
                        let _ = started.send(());
                        crate::stopped(&mut released).await;
                    }
                    "/hang" => {
                        let _ = started.send(());
                        std::future::pending::<()>().await;
                    }
                    _ => {}
                }
                crate::text(hyper::StatusCode::OK, "done")
            }
        };
        let server = tokio::spawn(serve(
            "test",
            listener,
            handler,
            stop_rx,
            drain,
            Limits::default(),
        ));
        Serving {
            addr,
            stop,
            started,
            release,
            server,
        }
    }

    /// On stop, a request in flight still gets its answer, then its connection closes; an idle
    /// keep-alive connection closes at once; and `serve` returns without waiting out the drain timeout.
    #[tokio::test]
    async fn stopping_drains_connections_gracefully() {
        use tokio::io::AsyncWriteExt;
        let mut s = serving(Duration::from_secs(60)).await;
        let request = |path: &str| format!("GET {path} HTTP/1.1\r\nhost: a\r\n\r\n");
        // An idle keep-alive connection: one exchange done.
        let mut idle = TcpStream::connect(s.addr).await.expect("connect");
        idle.write_all(request("/").as_bytes())
            .await
            .expect("write");
        let mut buf = vec![0u8; 4096];
        let n = idle.read(&mut buf).await.expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        // A request in flight when the stop comes.
        let mut busy = TcpStream::connect(s.addr).await.expect("connect");
        busy.write_all(request("/slow").as_bytes())
            .await
            .expect("write");
        s.started.recv().await.expect("the slow request started");
        s.stop.send(true).expect("stop");
        // The idle connection's close shows the drain has begun; only then is the busy one answered.
        let rest = read_to_close(&mut idle, "the idle connection is closed").await;
        assert!(rest.is_empty(), "{rest:?}");
        s.release.send_replace(true);

        let answer = read_to_close(&mut busy, "the busy connection closes after its answer").await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("done"), "{answer}");
        tokio::time::timeout(Duration::from_secs(10), s.server)
            .await
            .expect("serve returns once its connections are done, not after the 60 s drain timeout")
            .expect("serve");
    }

    /// HTTP/2: on stop, the stream in flight still gets its answer, the client is told GOAWAY, and the
    /// connection closes once that stream is done; `serve` returns without waiting out the drain timeout.
    #[tokio::test]
    async fn stopping_drains_http2_connections_gracefully() {
        use http_body_util::BodyExt;
        let mut s = serving(Duration::from_secs(60)).await;
        let io = TokioIo::new(TcpStream::connect(s.addr).await.expect("connect"));
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
        let conn = tokio::spawn(conn);
        let req = Request::get("http://a/slow")
            .body(http_body_util::Empty::<Bytes>::new())
            .expect("request");
        let answer = tokio::spawn(send.clone().send_request(req));
        s.started.recv().await.expect("the slow request started");
        s.stop.send(true).expect("stop");
        // The connection drains while its stream is still unanswered (a new stream is refused: the
        // server has sent GOAWAY); only then is the stream answered.
        crate::test_util::eventually("a new stream to be refused", || {
            let mut send = send.clone();
            async move {
                let req = Request::get("http://a/")
                    .body(http_body_util::Empty::<Bytes>::new())
                    .expect("request");
                send.send_request(req).await.is_err().then_some(())
            }
        })
        .await;
        assert!(!answer.is_finished(), "answered before it was released");
        s.release.send_replace(true);
        let resp = answer
            .await
            .expect("task")
            .expect("the stream in flight is answered");
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"done");
        tokio::time::timeout(Duration::from_secs(10), conn)
            .await
            .expect("the connection closes after its last stream")
            .expect("task")
            .expect("a clean close");
        tokio::time::timeout(Duration::from_secs(10), s.server)
            .await
            .expect("serve returns once its connections are done, not after the 60 s drain timeout")
            .expect("serve");
    }

    /// A request still unanswered when the drain time is up: its connection is closed and `serve` returns.
    #[tokio::test]
    async fn connections_open_at_the_drain_timeout_are_closed() {
        use tokio::io::AsyncWriteExt;
        let mut s = serving(Duration::from_millis(200)).await;
        let mut hung = TcpStream::connect(s.addr).await.expect("connect");
        hung.write_all(b"GET /hang HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .expect("write");
        s.started.recv().await.expect("the request started");
        s.stop.send(true).expect("stop");
        let answer = read_to_close(
            &mut hung,
            "the connection is closed after the drain timeout",
        )
        .await;
        assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
        tokio::time::timeout(Duration::from_secs(10), s.server)
            .await
            .expect("serve returns")
            .expect("serve");
    }

    /// A connection's task is copied whole by tokio several times over its life (spawn, completion,
    /// join), so it holds no large state inline: the HTTP/2 connection is boxed, and the lingering
    /// close reads into the connection's buffer. With hyper's connection boxed but that buffer inline it
    /// was 7.6 KB; it is 4.0 KB, most of it the handler's future (the TLS peer's details are boxed).
    #[tokio::test]
    async fn a_connection_future_stays_small() {
        let (_client, accepted) = pair().await;
        // A handler whose future is as large as the proxy's is allowed to be (`http::tests`).
        let handler = |_req: Request<Body>| async {
            let pad = [0u8; 2048];
            tokio::task::yield_now().await;
            std::hint::black_box(&pad);
            crate::text(hyper::StatusCode::OK, "")
        };
        let drain = Arc::new(Drain::default());
        let conn = Connection {
            peer: "127.0.0.1:1".parse().expect("addr"),
            local: None,
            tls: None,
        };
        let make = move |_: Connection| handler;
        let future = connection(accepted, conn, make, None, drain.watch());
        let size = std::mem::size_of_val(&future);
        assert!(size <= 4096, "a connection's future is {size} bytes");
    }

    /// Connections accepted on a listener from `bind` have TCP_NODELAY without a call of their own.
    #[tokio::test]
    async fn accepted_connections_inherit_nodelay() {
        let (listener, addr) = loopback().await;
        let client = TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        let accepted = accepted.into_registered().expect("register");
        assert!(accepted.nodelay().expect("getsockopt"));
        drop(client);
    }
}
