//! Upstream test servers that answer with their name and the headers they received, an HTTP client that
//! talks to the proxy (absolute-form, Host-addressed, or HTTP/2 prior knowledge), and polling helpers.

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// 200 with name and headers.
    Ok,
    /// 503 for the first `n` requests, then 200.
    FailFirst(usize),
    /// Never answers.
    Hang,
    /// 200 with `Connection: close`: one request per connection.
    ConnectionClose,
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// Connections accepted.
    pub conns: Arc<AtomicUsize>,
}

impl Upstream {
    pub async fn start(name: &'static str, behaviour: Behaviour) -> Upstream {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), name, behaviour).await
    }

    pub async fn start_on(addr: SocketAddr, name: &'static str, behaviour: Behaviour) -> Upstream {
        let listener = TcpListener::bind(addr).await.expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let conns = Arc::new(AtomicUsize::new(0));
        let c = conns.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let h = h.clone();
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let n = h.fetch_add(1, Ordering::SeqCst);
                            async move {
                                let mut lines: Vec<String> = req
                                    .headers()
                                    .iter()
                                    .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
                                    .collect();
                                // HTTP/2 carries the authority in the URI (`:authority`).
                                if let Some(a) = req.uri().authority() {
                                    lines.push(format!(":authority: {a}"));
                                }
                                lines.sort();
                                let body = format!("{name}\n{}\n", lines.join("\n"));
                                let status = match behaviour {
                                    Behaviour::FailFirst(k) if n < k => {
                                        StatusCode::SERVICE_UNAVAILABLE
                                    }
                                    Behaviour::Hang => {
                                        std::future::pending::<()>().await;
                                        StatusCode::OK
                                    }
                                    _ => StatusCode::OK,
                                };
                                let mut resp = http::Response::builder()
                                    .status(status)
                                    .header("x-upstream", name)
                                    .header("x-drop-me", "1");
                                if matches!(behaviour, Behaviour::ConnectionClose) {
                                    resp = resp.header("connection", "close");
                                }
                                let resp =
                                    resp.body(Full::new(Bytes::from(body))).expect("response");
                                Ok::<_, Infallible>(resp)
                            }
                        });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream { addr, hits, conns }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    /// The first line of the body: the upstream's name.
    pub fn upstream(&self) -> &str {
        self.body.lines().next().unwrap_or_default()
    }

    pub fn flags(&self) -> String {
        self.headers
            .get("x-weft-response-flags")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    }

    /// Whether the upstream saw this header line (`name: value`).
    pub fn upstream_saw(&self, line: &str) -> bool {
        self.body.lines().any(|l| l == line)
    }
}

/// How the request names its destination.
#[derive(Debug, Clone, Copy)]
pub enum Form {
    /// `GET http://authority/path HTTP/1.1`.
    Absolute,
    /// `GET /path HTTP/1.1` + `Host: authority`.
    Host,
    /// HTTP/2 prior knowledge, `:authority`.
    H2,
}

pub async fn send(
    proxy: SocketAddr,
    form: Form,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Resp, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(proxy).await?;
    let io = TokioIo::new(stream);
    let uri = match form {
        Form::Absolute | Form::H2 => format!("http://{authority}{path}"),
        Form::Host => path.to_string(),
    };
    let mut b = Request::builder().uri(uri);
    if !matches!(form, Form::H2) {
        b = b.header("host", authority);
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = match form {
        Form::H2 => {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            let req = b
                .version(http::Version::HTTP_2)
                .body(Empty::<Bytes>::new())?;
            sender.send_request(req).await?
        }
        _ => {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            sender.send_request(b.body(Empty::<Bytes>::new())?).await?
        }
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// `n` sequential `GET /path` with `Host: authority` on one keep-alive HTTP/1.1 connection to the proxy,
/// panicking on transport errors.
pub async fn get_sequential(proxy: SocketAddr, authority: &str, path: &str, n: usize) -> Vec<Resp> {
    let stream = TcpStream::connect(proxy)
        .await
        .expect("connect to the proxy");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    let conn = tokio::spawn(conn);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let req = Request::builder()
            .uri(path)
            .header("host", authority)
            .body(Empty::<Bytes>::new())
            .expect("request");
        // The connection takes the next request only once it has finished with the last response
        // (sending without waiting fails with "connection was not ready").
        sender
            .ready()
            .await
            .unwrap_or_else(|e| panic!("request {i} to {authority}{path}: connection: {e}"));
        let resp = sender
            .send_request(req)
            .await
            .unwrap_or_else(|e| panic!("request {i} to {authority}{path}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        out.push(Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    drop(sender);
    let _ = conn.await;
    out
}

/// `GET http://authority/path` through the proxy, panicking on transport errors.
pub async fn get(proxy: SocketAddr, authority: &str, path: &str) -> Resp {
    send(proxy, Form::Absolute, authority, path, &[])
        .await
        .unwrap_or_else(|e| panic!("GET http://{authority}{path} via {proxy}: {e}"))
}

/// Polls `check` with a growing delay until it returns `Some`, or panics naming `what` after 15 s.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut delay = Duration::from_millis(10);
    loop {
        // A check that hangs (a request the proxy never answers) counts against the deadline too.
        if let Ok(Some(v)) = tokio::time::timeout_at(deadline, check()).await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

/// Test logs at `warn` (or what `RUST_LOG` says), captured by the test harness.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Starts a proxy on 127.0.0.1 (every port the system's choice) that takes its config from the ADS
/// server at `ads`, with `extra` flags (its `--workload` if given, else productpage-v1), and waits
/// until it is ready.
pub async fn start_proxy_with(ads: &str, extra: &[&str]) -> weft_proxy::ProxyHandle {
    init_logs();
    let mut flags = vec!["weft-proxy"];
    if !extra.contains(&"--workload") {
        flags.extend(["--workload", "productpage-v1"]);
    }
    flags.extend([
        "--ip",
        "127.0.0.1",
        "--outbound-port",
        "0",
        "--stats-port",
        "0",
        "--admin-port",
        "0",
        "--xds-address",
        ads,
    ]);
    flags.extend_from_slice(extra);
    let args = <weft_proxy::Args as clap::Parser>::try_parse_from(flags).expect("flags parse");
    let config = weft_proxy::Config::try_from(&args).expect("valid config");
    let proxy = weft_proxy::Proxy::start(config)
        .await
        .expect("proxy starts");
    let admin = proxy.admin_addr();
    eventually("proxy ready", || async move {
        admin_get(admin, "/ready").await.filter(|(s, _)| *s == 200)
    })
    .await;
    proxy
}

/// `GET http://admin/path` status and body.
pub async fn admin_get(admin: SocketAddr, path: &str) -> Option<(u16, String)> {
    let r = send(admin, Form::Host, &admin.to_string(), path, &[])
        .await
        .ok()?;
    Some((r.status, r.body))
}

/// An h2c upstream shaped like a gRPC server: it answers every request with its body, `content-type:
/// application/grpc`, `x-saw-te` with the `te` it got, and the trailers `grpc-status: 0` and `grpc-message:
/// echoed <n> bytes`. Returns its
/// address and the number of connections it accepted.
pub async fn grpc_echo() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let conns = Arc::new(AtomicUsize::new(0));
    let counted = conns.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let te = req.headers().get("te").cloned();
                        let body = req.into_body().collect().await?.to_bytes();
                        let mut trailers = HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        let message = format!("echoed {} bytes", body.len());
                        trailers.insert(
                            "grpc-message",
                            http::HeaderValue::from_str(&message).expect("ascii"),
                        );
                        let body = Full::new(body)
                            .with_trailers(async move { Some(Ok::<_, Infallible>(trailers)) });
                        let mut resp = http::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(body)
                            .expect("response");
                        if let Some(te) = te {
                            resp.headers_mut().insert("x-saw-te", te);
                        }
                        Ok::<_, hyper::Error>(resp)
                    });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, conns)
}

/// What came back for a gRPC-shaped call.
#[derive(Debug)]
pub struct GrpcResp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

/// A gRPC-shaped call over a new HTTP/2 prior-knowledge connection to the proxy: `POST path` to
/// `authority` with `body`, the response body and trailers read to their end.
pub async fn grpc_call(
    proxy: SocketAddr,
    authority: &str,
    path: &str,
    body: &'static [u8],
) -> Result<GrpcResp, Box<dyn std::error::Error + Send + Sync>> {
    let io = TokioIo::new(TcpStream::connect(proxy).await?);
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method("POST")
        .uri(format!("http://{authority}{path}"))
        .version(http::Version::HTTP_2)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(body)))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let collected = resp.into_body().collect().await?;
    let trailers = collected.trailers().cloned();
    Ok(GrpcResp {
        status,
        headers,
        body: collected.to_bytes(),
        trailers,
    })
}

/// Bytes `/big` answers and the echo tests send.
pub const BIG: usize = 2 << 20;
/// The size of each chunk those bodies are written in.
pub const CHUNK: usize = 16 << 10;

/// Chunk `i` of a big body: `CHUNK` bytes of `i % 251`.
pub fn big_chunk(i: usize) -> Bytes {
    Bytes::from(vec![(i % 251) as u8; CHUNK])
}

/// A request body streaming the big body with no length, as a client uploading it would.
pub type BigUpload = http_body_util::StreamBody<
    futures::channel::mpsc::Receiver<Result<hyper::body::Frame<Bytes>, Infallible>>,
>;

/// The big body as a streamed request body, fed a chunk at a time as it is read by a task (awaited to
/// see it ended; it stops early if the body is dropped).
pub fn big_upload() -> (BigUpload, tokio::task::JoinHandle<()>) {
    use futures::SinkExt;
    let (mut tx, rx) = futures::channel::mpsc::channel(1);
    let feeder = tokio::spawn(async move {
        for i in 0..BIG / CHUNK {
            let frame = hyper::body::Frame::data(big_chunk(i));
            if tx.send(Ok(frame)).await.is_err() {
                return;
            }
        }
    });
    (http_body_util::StreamBody::new(rx), feeder)
}

/// Checks an echo of `big_upload`'s body: 200, the big body back whole, and the feeder done.
pub async fn assert_big_echo(
    resp: http::Response<hyper::body::Incoming>,
    feeder: tokio::task::JoinHandle<()>,
    round: usize,
) {
    assert_eq!(resp.status(), 200, "round {round}");
    let echoed = resp.into_body().collect().await.expect("echo").to_bytes();
    feeder.await.expect("feeder");
    assert!(
        is_big(&echoed),
        "round {round}: {} bytes echoed",
        echoed.len()
    );
}

/// Whether `body` is the big body: `BIG` bytes made of `big_chunk(0)`, `big_chunk(1)`, ….
pub fn is_big(body: &[u8]) -> bool {
    body.len() == BIG
        && body
            .chunks(CHUNK)
            .enumerate()
            .all(|(i, c)| c.iter().all(|&b| b == (i % 251) as u8))
}

/// An HTTP/1.1 upstream that streams back the body of every `POST` as it arrives, and answers
/// `GET /big` with the big body in chunked encoding. Returns its address and the connections it
/// accepted.
pub async fn echo_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let conns = Arc::new(AtomicUsize::new(0));
    let counted = conns.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let svc =
                hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let body = if req.method() == http::Method::POST {
                        req.into_body().boxed()
                    } else {
                        let chunks = futures::stream::iter(
                            (0..BIG / CHUNK).map(|i| Ok(hyper::body::Frame::data(big_chunk(i)))),
                        );
                        http_body_util::StreamBody::new(chunks).boxed()
                    };
                    Ok::<_, Infallible>(http::Response::new(body))
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    (addr, conns)
}

/// What became of a `/hang` request on [`h2_echo`].
#[derive(Debug, PartialEq, Eq)]
pub enum Hang {
    /// It reached the upstream's handler.
    Started,
    /// It was given up: its stream was reset, so hyper dropped the handler.
    GivenUp,
}

/// An h2c upstream that streams back the body of every request as it arrives, except `/hang`, which it
/// never answers. Returns its address, the connections it accepted, and a channel that tells what
/// becomes of each `/hang` request.
pub async fn h2_echo() -> (
    SocketAddr,
    Arc<AtomicUsize>,
    tokio::sync::mpsc::UnboundedReceiver<Hang>,
) {
    h2_echo_with(None).await
}

/// `h2_echo`, allowing at most `max_streams` streams open at once on a connection (as an application's
/// HTTP/2 server does: hyper's default is 200).
pub async fn h2_echo_with(
    max_streams: Option<u32>,
) -> (
    SocketAddr,
    Arc<AtomicUsize>,
    tokio::sync::mpsc::UnboundedReceiver<Hang>,
) {
    /// Says so on the channel when dropped.
    struct Dropped(tokio::sync::mpsc::UnboundedSender<Hang>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            let _ = self.0.send(Hang::GivenUp);
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let conns = Arc::new(AtomicUsize::new(0));
    let counted = conns.clone();
    let (gave_up, given_up) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let gave_up = gave_up.clone();
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let hang = (req.uri().path() == "/hang").then(|| Dropped(gave_up.clone()));
                async move {
                    if let Some(dropped) = hang {
                        let _ = dropped.0.send(Hang::Started);
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, Infallible>(http::Response::new(req.into_body()))
                }
            });
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder.max_concurrent_streams(max_streams);
            tokio::spawn(builder.serve_connection(TokioIo::new(stream), svc));
        }
    });
    (addr, conns, given_up)
}
