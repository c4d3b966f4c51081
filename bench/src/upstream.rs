//! The upstream every target forwards to: HTTP/1.1 keep-alive and h2c (prior knowledge) on the same port
//! (hyper-util's auto builder), a 1 KiB answer to any request, a gRPC unary answer to
//! `POST /weft.bench.Echo/Unary`; or, for the TCP workload, a sink that reads and discards.
//! Runs on a current-thread runtime: it shares CPU 0 with the load generator.

use crate::proto::{grpc_frame, BODY_SIZE, GRPC_PATH};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// Which server to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// HTTP/1.1 + h2c + gRPC unary.
    Http,
    /// TCP sink.
    Tcp,
}

/// A body of at most one data frame and optional trailers: all the upstream ever sends.
#[derive(Debug, Default)]
pub struct Body {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // Exact when there are no trailers, so HTTP/1.1 answers carry content-length.
        let n = self.data.as_ref().map_or(0, |d| d.len() as u64);
        if self.trailers.is_none() {
            SizeHint::with_exact(n)
        } else {
            let mut h = SizeHint::new();
            h.set_lower(n);
            h
        }
    }
}

/// The answers, built once.
#[derive(Clone)]
struct Answers {
    plain: Bytes,
    grpc: Bytes,
}

async fn answer(
    answers: Answers,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let is_grpc = req.method() == Method::POST
        && req.uri().path() == GRPC_PATH
        && req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    // Read the whole request, as a real server would.
    let _ = req.into_body().collect().await;
    let resp = if is_grpc {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/grpc")
            .body(Body {
                data: Some(answers.grpc),
                trailers: Some(trailers),
            })
    } else {
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Body {
                data: Some(answers.plain),
                trailers: None,
            })
    };
    Ok(resp.expect("static response parts are valid"))
}

/// Serves HTTP on a bound listener until the task is dropped.
pub async fn serve_http(listener: TcpListener) {
    let answers = Answers {
        plain: Bytes::from(vec![b'w'; BODY_SIZE]),
        grpc: grpc_frame(&[b'g'; BODY_SIZE]),
    };
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Usually EMFILE under a connection storm: back off instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let answers = answers.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| answer(answers.clone(), req));
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// Reads and discards every connection's bytes until the task is dropped.
pub async fn serve_tcp(listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            continue;
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
        });
    }
}

/// Binds every address and serves them all.
pub async fn run(addrs: &[SocketAddr], kind: Kind) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for &addr in addrs {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot bind {addr}: {e}"))?;
        match kind {
            Kind::Http => tasks.spawn(serve_http(l)),
            Kind::Tcp => tasks.spawn(serve_tcp(l)),
        };
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}
