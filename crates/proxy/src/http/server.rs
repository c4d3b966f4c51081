//! Accepting connections and serving HTTP/1.1 (keep-alive) and HTTP/2 prior knowledge on them, with a
//! graceful drain when the listener is told to stop.

use super::Body;
use futures::future::BoxFuture;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

/// A request handler: every request gets a response (errors become local responses inside).
pub type Handler =
    Arc<dyn Fn(Request<Incoming>) -> BoxFuture<'static, Response<Body>> + Send + Sync>;

/// Binds a TCP listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Accepts until `stop` turns true, then asks every connection to finish (HTTP/1: after the current
/// request; HTTP/2: GOAWAY) and waits up to `drain` for them.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    handler: Handler,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let local = listener.local_addr().ok();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // No header-read deadline (Envoy's `request_headers_timeout` is off by default too): hyper's default
    // of 30 s arms a timer on every request, which showed in the profile of keep-alive load.
    builder.http1().header_read_timeout(None);
    builder.http2().timer(TokioTimer::new());
    let mut conns = JoinSet::new();
    loop {
        // Reap finished connection tasks so the set does not grow.
        while conns.try_join_next().is_some() {}
        let accepted = tokio::select! {
            // `accept` is cancellation-safe; `wait_for` only observes.
            r = listener.accept() => r,
            _ = crate::stopped(&mut stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Usually EMFILE or a connection reset during the handshake: back off a little.
                tracing::debug!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let builder = builder.clone();
        let mut conn_stop = stop.clone();
        let span = tracing::debug_span!("conn", listener = name, peer = %peer);
        conns.spawn(
            async move {
                let svc = hyper::service::service_fn(move |req| {
                    let h = handler.clone();
                    async move { Ok::<_, Infallible>(h(req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), svc);
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "connection ended with error");
                        }
                    }
                    _ = crate::stopped(&mut conn_stop) => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            }
            .instrument(span),
        );
    }
    drop(listener);
    tracing::info!(listener = name, addr = ?local, "listener stopped, draining");
    let all = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(drain, all).await.is_err() {
        tracing::info!(
            listener = name,
            "drain timeout, closing remaining connections"
        );
    }
}
