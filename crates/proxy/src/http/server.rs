//! Accepting connections and serving HTTP/1.1 (keep-alive) and HTTP/2 prior knowledge on them, with a
//! graceful drain when the listener is told to stop.

use super::Body;
use futures::future::BoxFuture;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

/// A request handler: every request gets a response (errors become local responses inside).
pub type Handler =
    Arc<dyn Fn(Request<Incoming>) -> BoxFuture<'static, Response<Body>> + Send + Sync>;

/// Pending connections the kernel queues for a listener (tokio's and mio's default).
const BACKLOG: u32 = 1024;

/// Binds a TCP listener (`SO_REUSEADDR`, as `TcpListener::bind` does) with `TCP_NODELAY` set on it: on
/// Linux accepted connections inherit it, which saves a `setsockopt` per connection.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// An accepted connection whose `shutdown(2)` is left to `close(2)`. hyper shuts the write side down
/// before it drops a finished connection, which is a system call per connection that tells the peer
/// nothing the close right after does not (both send FIN after any unsent data).
struct Downstream(TcpStream);

impl AsyncRead for Downstream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Downstream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
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
        // Inherited from the listener on Linux (see `bind`).
        #[cfg(not(target_os = "linux"))]
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
                let conn = builder.serve_connection(TokioIo::new(Downstream(stream)), svc);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections accepted on a listener from `bind` have TCP_NODELAY without a call of their own.
    #[tokio::test]
    async fn accepted_connections_inherit_nodelay() {
        let listener = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        assert!(accepted.nodelay().expect("getsockopt"));
        drop(client);
    }
}
