//! HTTP/2: the server side is Weft's own codec (`server`, with `frame` and `hpack`); the client side,
//! for now, the `h2` crate without hyper's layer over it.
//!
//! hyper ran every HTTP/2 request as two extra tasks: the server spawned one per stream to run the
//! service, and the client handed each request over a channel to its connection's task, which spawned one
//! more to wait for the response and answered through a oneshot. Those tasks, channels and the copies of
//! their futures cost about 15,000 instructions per proxied request (`bench/instructions` with
//! `WORKLOAD=http2-streams`), more than the proxy's whole HTTP/1.1 path. Here instead:
//!
//! - **server** (`server`): a connection is one task that owns its streams, as Envoy serves a
//!   connection's streams on the connection's thread. See that module.
//! - **client**: a request opens its stream from its own task on the endpoint's shared connection and
//!   awaits the response there; only the connection's I/O runs as a task. A request body that is still
//!   streaming when the response head arrives (gRPC's bidirectional streams) is sent on by a task of its
//!   own. Bodies are sent as fast as the peer's flow-control window allows: the next frame is read from
//!   the source only once the window has room. Received data is acknowledged (its window released) as it
//!   is handed on.

#[cfg(test)]
mod conformance;
mod frame;
pub(crate) mod hpack;
mod server;

pub(crate) use server::{serve, RequestBody, StreamError};

use super::Body;
use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use http::{header, HeaderMap, Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};

/// Flow-control windows and limits, as hyper sets them (so that moving off hyper changed no setting).
const CLIENT_CONN_WINDOW: u32 = 5 * 1024 * 1024;
const CLIENT_STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
const CLIENT_SEND_BUFFER: usize = 1024 * 1024;
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// A body received on an HTTP/2 stream: a request body (server) or a response body (client).
pub struct RecvBody {
    recv: RecvStream,
    /// From `content-length`, when the head had a valid one.
    length: Option<u64>,
    data_done: bool,
}

impl RecvBody {
    fn new(recv: RecvStream, headers: &HeaderMap) -> RecvBody {
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        RecvBody {
            recv,
            length,
            data_done: false,
        }
    }

    pub(super) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Handed on, so the peer may send as much again.
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                // A reset with NO_ERROR or CANCEL stops the body without failing it (RFC 9113, 8.1: a
                // server that has answered may reset the request stream with NO_ERROR).
                Some(Err(e)) if matches!(e.reason(), Some(Reason::NO_ERROR | Reason::CANCEL)) => {
                    return Poll::Ready(None)
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    pub(super) fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    pub(super) fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl std::fmt::Debug for RecvBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBody")
            .field("length", &self.length)
            .field("end", &self.recv.is_end_stream())
            .finish()
    }
}

/// Opens a connection's HTTP/2 session (prior knowledge) as a client.
pub(super) async fn handshake<T>(
    io: T,
) -> Result<
    (
        h2::client::SendRequest<Bytes>,
        h2::client::Connection<T, Bytes>,
    ),
    h2::Error,
>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    h2::client::Builder::new()
        .initial_window_size(CLIENT_STREAM_WINDOW)
        .initial_connection_window_size(CLIENT_CONN_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_send_buffer_size(CLIENT_SEND_BUFFER)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .enable_push(false)
        .handshake(io)
        .await
}

/// Sends `req` (absolute URI, version HTTP/2) on a new stream of `sender`'s connection; the future it
/// returns waits for the response head. The request body goes out alongside; what is left of it when the
/// head arrives is sent on by a task of its own.
///
/// The stream is opened here, before the future: the future then holds only what waiting needs (the
/// request itself is gone into the connection's queue), which keeps every proxied request's future small.
pub(super) fn send(
    mut sender: h2::client::SendRequest<Bytes>,
    req: Request<Body>,
) -> Result<impl Future<Output = Result<Response<Body>, h2::Error>>, h2::Error> {
    let (parts, body) = req.into_parts();
    let end = body.is_end_stream();
    let (response, send) = sender.send_request(Request::from_parts(parts, ()), end)?;
    // Boxed: a body and its stream held beside the response would make every request's future, bodiless
    // ones too, that much larger.
    let pipe = (!end).then(|| Box::new(Pipe::new(body, send)));
    Ok(async move {
        let resp = match pipe {
            None => response.await?,
            Some(pipe) => with_body(response, pipe).await?,
        };
        let (parts, recv) = resp.into_parts();
        let body = Body::h2(RecvBody::new(recv, &parts.headers));
        Ok(Response::from_parts(parts, body))
    })
}

/// Waits for the response head while the request body goes out; sends what is left of the body from a
/// task of its own.
async fn with_body(
    mut response: h2::client::ResponseFuture,
    pipe: Box<Pipe>,
) -> Result<Response<RecvStream>, h2::Error> {
    let mut pipe = Some(pipe);
    let resp = poll_fn(|cx| {
        if let Some(p) = &mut pipe {
            if let Poll::Ready(sent) = Pin::new(&mut **p).poll(cx) {
                if let Err(e) = sent {
                    // The stream is reset: the response reports it, if it has not come already.
                    tracing::debug!(error = %e, "request body not sent whole");
                }
                pipe = None;
            }
        }
        Pin::new(&mut response).poll(cx)
    })
    .await;
    if let Some(p) = pipe {
        tokio::spawn(async move {
            if let Err(e) = p.await {
                tracing::debug!(error = %e, "request body not sent whole");
            }
        });
    }
    resp
}

/// Why a body could not be sent whole.
#[derive(Debug, thiserror::Error)]
enum PipeError {
    #[error("reading the body failed: {0}")]
    Source(#[source] super::BodyError),
    #[error("the stream failed: {0}")]
    Stream(#[source] h2::Error),
    #[error("the peer reset the stream ({0})")]
    Reset(Reason),
}

/// Sends a body on a stream, each frame once the stream's window has room for it (the first at once).
struct Pipe {
    body: Body,
    send: SendStream<Bytes>,
    first: bool,
}

impl Pipe {
    fn new(body: Body, send: SendStream<Bytes>) -> Pipe {
        Pipe {
            body,
            send,
            first: true,
        }
    }

    /// Ready once the peer has room for more, or with why it never will.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), PipeError>> {
        if std::mem::take(&mut self.first) {
            return Poll::Ready(Ok(()));
        }
        self.send.reserve_capacity(1);
        if self.send.capacity() > 0 {
            return Poll::Ready(Ok(()));
        }
        match self.send.poll_capacity(cx) {
            Poll::Ready(Some(Ok(_))) => Poll::Ready(Ok(())),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Err(PipeError::Stream(e))),
            Poll::Ready(None) => Poll::Ready(Err(PipeError::Reset(Reason::CANCEL))),
            Poll::Pending => self.poll_reset(cx),
        }
    }

    /// Pending unless the peer reset the stream.
    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), PipeError>> {
        match self.send.poll_reset(cx) {
            Poll::Ready(Ok(reason)) => Poll::Ready(Err(PipeError::Reset(reason))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(PipeError::Stream(e))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Future for Pipe {
    type Output = Result<(), PipeError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            ready!(this.poll_room(cx))?;
            let frame = match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(f) => f,
                Poll::Pending => {
                    // Put back: the room found is still there when the body has more.
                    this.first = true;
                    ready!(this.poll_reset(cx))?;
                    return Poll::Pending;
                }
            };
            let sent = match frame {
                None => this.send.send_data(Bytes::new(), true).map(|()| true),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let end = this.body.is_end_stream();
                        this.send.send_data(data, end).map(|()| end)
                    }
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => this.send.send_trailers(trailers).map(|()| true),
                        Err(_) => Ok(false),
                    },
                },
                Some(Err(e)) => {
                    this.send.send_reset(Reason::INTERNAL_ERROR);
                    return Poll::Ready(Err(PipeError::Source(e)));
                }
            };
            match sent {
                Ok(true) => return Poll::Ready(Ok(())),
                Ok(false) => {}
                Err(e) => return Poll::Ready(Err(PipeError::Stream(e))),
            }
        }
    }
}
