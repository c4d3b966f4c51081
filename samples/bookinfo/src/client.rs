//! Outbound HTTP calls, through the sidecar as an explicit HTTP proxy.
//!
//! With a proxy configured, every connection is dialled to the proxy whatever the destination, and is marked as
//! proxied so hyper keeps the request target in absolute form (`GET http://reviews:9080/reviews/0 HTTP/1.1`), the
//! way curl talks to an `http_proxy`. Connections are pooled and kept alive per destination authority.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::config::{ProxyAddr, SERVICE_PORT};

/// Longest wait for a TCP connection to the proxy or destination.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response body read from a downstream service; Bookinfo's are a few hundred bytes.
const MAX_BODY: usize = 1 << 20;
/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// A downstream response, body fully read.
#[derive(Clone, Debug)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// Body bytes.
    pub body: Bytes,
}

/// Why a downstream call failed.
#[derive(Debug)]
pub enum CallError {
    /// The URL or headers could not form a request.
    Request(http::Error),
    /// Connecting or exchanging the request failed.
    Transport(hyper_util::client::legacy::Error),
    /// Reading the response body failed or it was too large.
    Body(String),
    /// No complete response within the deadline.
    Timeout(Duration),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Request(e) => write!(f, "cannot build request: {e}"),
            CallError::Transport(e) => write!(f, "request failed: {e}"),
            CallError::Body(e) => write!(f, "cannot read response body: {e}"),
            CallError::Timeout(d) => write!(f, "no response within {d:?}"),
        }
    }
}

impl std::error::Error for CallError {}

/// Client for calls to other Bookinfo services; cheap to clone (the pool is shared).
#[derive(Clone, Debug)]
pub struct Upstream {
    client: Client<Connector, Full<Bytes>>,
}

impl Upstream {
    /// A client that dials `proxy` for every call, or each destination directly when `None`.
    pub fn new(proxy: Option<ProxyAddr>) -> Self {
        let connector = Connector {
            proxy: proxy.map(Arc::new),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(connector);
        Upstream { client }
    }

    /// `GET http://<service>:9080<path>` with `headers`, the whole exchange bounded by `timeout`.
    pub async fn get(
        &self,
        service: &str,
        path: &str,
        headers: HeaderMap,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        self.get_authority(&format!("{service}:{SERVICE_PORT}"), path, headers, timeout)
            .await
    }

    /// `GET http://<authority><path>` with `headers`, the whole exchange bounded by `timeout`.
    pub async fn get_authority(
        &self,
        authority: &str,
        path: &str,
        headers: HeaderMap,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(format!("http://{authority}{path}"))
            .body(Full::new(Bytes::new()))
            .map_err(CallError::Request)?;
        req.headers_mut().extend(headers);
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(CallError::Transport)?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| CallError::Body(e.to_string()))?
                .to_bytes();
            Ok(Reply { status, body })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| CallError::Timeout(timeout))?
    }
}

/// Dials the proxy (or the destination when there is none).
#[derive(Clone, Debug)]
pub struct Connector {
    proxy: Option<Arc<ProxyAddr>>,
}

impl tower_service::Service<Uri> for Connector {
    type Response = Conn;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Conn>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let proxy = self.proxy.clone();
        Box::pin(async move {
            let (host, port, proxied) = match &proxy {
                Some(p) => (p.host.clone(), p.port, true),
                None => {
                    let host = dst.host().ok_or_else(|| {
                        io::Error::new(io::ErrorKind::InvalidInput, "destination has no host")
                    })?;
                    let host = host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string();
                    (host, dst.port_u16().unwrap_or(80), false)
                }
            };
            let stream =
                tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port)))
                    .await
                    .map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("connect to {host}:{port} timed out"),
                        )
                    })??;
            stream.set_nodelay(true)?;
            Ok(Conn {
                io: TokioIo::new(stream),
                proxied,
            })
        })
    }
}

/// A TCP connection that tells hyper whether it leads to a proxy.
#[derive(Debug)]
pub struct Conn {
    io: TokioIo<TcpStream>,
    proxied: bool,
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new().proxy(self.proxied)
    }
}

impl Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const WAIT: Duration = Duration::from_secs(10);

    /// Reads one request head from `sock`, answers 200 "ok", and returns the head as text.
    async fn answer_one(sock: &mut TcpStream) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = sock.read(&mut byte).await.expect("read request");
            assert_eq!(n, 1, "connection closed mid-request");
            head.push(byte[0]);
        }
        sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .expect("write response");
        String::from_utf8(head).expect("ascii head")
    }

    #[tokio::test]
    async fn proxied_requests_use_absolute_form_on_one_kept_alive_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let up = Upstream::new(Some(ProxyAddr {
            host: "127.0.0.1".into(),
            port,
        }));
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let first = answer_one(&mut sock).await;
            let second = answer_one(&mut sock).await;
            (first, second)
        });
        let mut h = HeaderMap::new();
        h.insert("x-request-id", "rid-1".parse().expect("value"));
        let r = up
            .get("reviews", "/reviews/0", h, WAIT)
            .await
            .expect("first call");
        assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"ok"[..]));
        let r = up
            .get("reviews", "/reviews/1", HeaderMap::new(), WAIT)
            .await
            .expect("second call");
        assert_eq!(r.status, StatusCode::OK);
        let (first, second) = tokio::time::timeout(WAIT, server)
            .await
            .expect("in time")
            .expect("server");
        assert!(
            first.starts_with("GET http://reviews:9080/reviews/0 HTTP/1.1\r\n"),
            "{first}"
        );
        assert!(
            first
                .to_ascii_lowercase()
                .contains("\r\nhost: reviews:9080\r\n"),
            "{first}"
        );
        assert!(first.contains("x-request-id: rid-1\r\n"), "{first}");
        assert!(
            second.starts_with("GET http://reviews:9080/reviews/1 HTTP/1.1\r\n"),
            "{second}"
        );
    }

    #[tokio::test]
    async fn direct_requests_use_origin_form() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let up = Upstream::new(None);
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            answer_one(&mut sock).await
        });
        let r = up
            .get_authority(&addr.to_string(), "/details/0", HeaderMap::new(), WAIT)
            .await
            .expect("call");
        assert_eq!(r.status, StatusCode::OK);
        let head = tokio::time::timeout(WAIT, server)
            .await
            .expect("in time")
            .expect("server");
        assert!(head.starts_with("GET /details/0 HTTP/1.1\r\n"), "{head}");
    }

    #[tokio::test]
    async fn timeouts_and_refusals_are_errors() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Accept and hold the connection without answering.
        let holder = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
        let up = Upstream::new(None);
        let err = up
            .get_authority(
                &addr.to_string(),
                "/",
                HeaderMap::new(),
                Duration::from_millis(200),
            )
            .await
            .expect_err("must time out");
        assert!(matches!(err, CallError::Timeout(_)), "{err}");
        drop(holder);

        let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let closed_addr = closed.local_addr().expect("addr");
        drop(closed);
        let err = up
            .get_authority(&closed_addr.to_string(), "/", HeaderMap::new(), WAIT)
            .await
            .expect_err("must be refused");
        assert!(matches!(err, CallError::Transport(_)), "{err}");
    }
}
