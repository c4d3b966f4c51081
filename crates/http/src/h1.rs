//! HTTP/1.1 to upstreams: Weft's own client side of the protocol, driven by the request that holds the
//! connection.
//!
//! hyper's client connection runs in a task of its own and takes each request through a channel and
//! gives back the response through a oneshot; the request's task and the connection's task then hand
//! every exchange to each other. Here the request's own future writes the head, reads the response
//! head, and the response body reads the rest straight from the socket, with no task, channel or copy
//! between them. Measured with `bench/instructions` (callgrind, HTTP/1.1 keep-alive, 1 KiB responses,
//! 1,000 req/s): 30,764 instructions per proxied request on hyper's client, 22,155 on this one.
//!
//! A connection (`Conn`) is one boxed state, allocated once when it connects: its socket, a read buffer
//! and a write buffer that are reused for every exchange, and the exchange under way. It moves between
//! the pool, the request's future and the response body as a pointer. Body bytes read from the socket are
//! handed on as slices of the read buffer (`Bytes`), not copied; header values are slices of the head.
//!
//! Framing follows RFC 9112: the request body goes with `content-length` when its size is known and
//! chunked otherwise; the response body is delimited by `transfer-encoding: chunked`, by `content-length`,
//! or by the upstream closing, and has none for `HEAD`, 1xx, 204 and 304. Interim responses (100, 102,
//! 103) are skipped. While the response streams, the rest of the request body keeps being sent, so an
//! upstream that answers as it reads (an echo, a transcoder) is served both ways. A connection is reused
//! only when the exchange ended cleanly on both sides: the whole request sent, the whole response read
//! and nothing after it, and neither side said `connection: close`.

pub(crate) mod codec;
pub mod server;

use super::Body;
use bytes::{Buf, Bytes, BytesMut};
use codec::{Chunk, Decoded, Framing, Invalid, Spans, WriteError, Writer, MAX_HEADERS};
use http::header::{HeaderMap, HOST};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use std::future::poll_fn;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Weak;
use std::task::{ready, Context, Poll};

use super::upstream::H1Pool;

pub use codec::MAX_HEAD;

/// What went wrong on an upstream HTTP/1.1 connection.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the socket failed.
    #[error("upstream connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The upstream closed the connection before the whole response head.
    #[error("upstream closed the connection before a complete response head")]
    ClosedBeforeHead,
    /// The upstream closed the connection in the middle of the response body.
    #[error("upstream closed the connection in the middle of the response body")]
    ClosedInBody,
    /// The response broke HTTP/1.1's rules.
    #[error("invalid upstream response: {0}")]
    Invalid(#[from] Invalid),
    /// The request body, read from downstream, failed.
    #[error("cannot read the request body: {0}")]
    RequestBody(Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// A failure of the connection itself, which a stale pooled connection would also show.
    fn is_connection_loss(&self) -> bool {
        matches!(self, Error::ClosedBeforeHead)
            || matches!(self, Error::Io(e) if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
            ))
    }
}

/// Why an exchange failed, and whether the request may be sent again on another connection.
#[derive(Debug)]
pub struct ExchangeError {
    /// What failed.
    pub error: Error,
    /// The connection had served an earlier exchange, nothing of a response arrived, and it broke as an
    /// upstream's idle close would break it: the request is sent again when it can be (the caller
    /// decides by method and body).
    pub stale: bool,
    /// The request's head and whole body as they were written, for that second sending; `None` when
    /// the body was streamed.
    pub replay: Option<Replay>,
}

/// A request already encoded, with its body held whole: what a stale connection's request is sent
/// again with.
#[derive(Debug)]
pub struct Replay {
    head: Vec<u8>,
    body: Bytes,
}

/// A request's head as an HTTP/1.1 upstream is sent it: the request line and the fields, without the
/// framing ones (the body's framing is the connection's to write). It is encoded once per request and
/// every try sends the same bytes: before, each try was given its own copy of the request's header map
/// (two allocations, and a reallocation when the copy was reused for a response head), which it encoded
/// and dropped.
#[derive(Debug, Clone)]
pub struct Head {
    bytes: Bytes,
    /// An empty body still gets `content-length: 0` (the request had one, or its method expects a body).
    length: bool,
    /// `HEAD`: the response has no body.
    head_only: bool,
    /// An idempotent method: the request may be sent again when a pooled connection proves stale.
    idempotent: bool,
}

impl Head {
    /// Encodes `method path_and_query HTTP/1.1` and the fields of `headers`, with `host: authority` first
    /// when `headers` have no `Host`. The map is given back for reuse by the next head parsed.
    pub fn encode(
        method: &Method,
        path_and_query: &str,
        authority: Option<&str>,
        headers: HeaderMap,
    ) -> Head {
        Head::encode_with(method, path_and_query, authority, headers, &[])
    }

    /// [`Head::encode`], and after the fields of `headers` the field lines `extra`, already encoded
    /// (`name: value\r\n` each, names in lower case): fields the caller adds to every request, which it
    /// encodes once rather than inserting into each request's map.
    pub fn encode_with(
        method: &Method,
        path_and_query: &str,
        authority: Option<&str>,
        headers: HeaderMap,
        extra: &[u8],
    ) -> Head {
        let mut had_length = false;
        let bytes = super::slab_cut(|out| {
            out.extend_from_slice(method.as_str().as_bytes());
            out.extend_from_slice(b" ");
            out.extend_from_slice(path_and_query.as_bytes());
            out.extend_from_slice(b" HTTP/1.1\r\n");
            if let Some(a) = authority.filter(|_| !headers.contains_key(HOST)) {
                out.extend_from_slice(b"host: ");
                out.extend_from_slice(a.as_bytes());
                out.extend_from_slice(codec::CRLF);
            }
            had_length = codec::push_fields(out, &headers, true).length;
            out.extend_from_slice(extra);
        });
        codec::recycle(headers);
        Head {
            bytes,
            length: had_length || matches!(*method, Method::POST | Method::PUT | Method::PATCH),
            head_only: *method == Method::HEAD,
            idempotent: is_idempotent(method),
        }
    }

    /// A request's head, encoded, and its body.
    pub fn of(req: Request<Body>) -> (Head, Body) {
        let (parts, body) = req.into_parts();
        let head = Head::encode(
            &parts.method,
            parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            parts.uri.authority().map(|a| a.as_str()),
            parts.headers,
        );
        (head, body)
    }

    /// Whether the request is a `HEAD` (its response has no body).
    pub fn is_head(&self) -> bool {
        self.head_only
    }
}

/// An upstream HTTP/1.1 connection with its buffers.
pub struct Conn(Box<State>);

struct State {
    io: crate::net::Io,
    key: crate::upstream::Key,
    /// Where the connection goes back when an exchange ends cleanly.
    pool: Weak<H1Pool>,
    /// When (in the pool's sweeps) it went idle; set by the pool.
    idle_since: u32,
    /// Bytes read and not yet handed on.
    rbuf: BytesMut,
    /// The request being written.
    writer: Writer,
    /// Where the fields of the response head being read lie.
    spans: Spans,
    /// How the current response's body is delimited.
    framing: Framing,
    /// Whether the connection may carry another exchange after this one.
    reusable: bool,
    /// Whether any byte of a response arrived in this exchange.
    received: bool,
    /// Whether the request could be sent again on another connection (idempotent, its body held whole).
    replayable: bool,
    /// That body, for sending again (`writer.out.data` is consumed as it is written).
    replay_body: Bytes,
    /// Writing the request failed: nothing more is written in this exchange.
    send_failed: bool,
    /// Requests sent on it so far.
    served: u32,
}

impl Conn {
    /// A connection on a connected socket, returned to `pool` after each clean exchange.
    pub(crate) fn new(io: crate::net::Io, key: crate::upstream::Key, pool: Weak<H1Pool>) -> Conn {
        Conn(Box::new(State {
            io,
            key,
            pool,
            idle_since: 0,
            rbuf: BytesMut::with_capacity(codec::READ_BUF),
            writer: Writer::new(),
            spans: Spans::default(),
            framing: Framing::Done,
            reusable: true,
            received: false,
            replayable: false,
            replay_body: Bytes::new(),
            send_failed: false,
            served: 0,
        }))
    }

    /// Counts a request about to be sent; with `max` requests (0: no limit) sent, the connection is not
    /// reused after this exchange (Envoy's `max_requests_per_connection`).
    pub fn count_request(&mut self, max: u32) {
        let s = &mut *self.0;
        s.served = s.served.saturating_add(1);
        if max > 0 && s.served >= max {
            s.reusable = false;
        }
    }

    /// The endpoint it is connected to.
    pub fn addr(&self) -> SocketAddr {
        self.0.key.addr
    }

    /// The pool's key: the endpoint and the TLS settings it was made with.
    pub(crate) fn key(&self) -> crate::upstream::Key {
        self.0.key
    }

    /// When it went idle, in the pool's sweeps.
    pub fn idle_since(&self) -> u32 {
        self.0.idle_since
    }

    /// Marks it idle since `t`.
    pub fn set_idle_since(&mut self, t: u32) {
        self.0.idle_since = t;
    }

    /// Whether an idle connection can take a request: the upstream has neither closed it nor sent
    /// anything unasked. Costs a `recv` only when the socket was readable (as it stays after a response
    /// that was read to its end in one go, until a read finds nothing).
    pub fn is_usable(&mut self) -> bool {
        let s = &mut *self.0;
        if !s.reusable || !s.rbuf.is_empty() {
            return false;
        }
        s.io.is_quiet(&mut s.rbuf)
    }

    /// Sends `req` and reads the response head, as `send_head` with the request's head encoded first.
    #[cfg(test)]
    pub fn send(
        self,
        req: Request<Body>,
        reused: bool,
    ) -> impl std::future::Future<Output = Result<Response<Body>, ExchangeError>> + Send {
        let (head, body) = Head::of(req);
        self.send_head(&head, body, reused)
    }

    /// Sends a request (its head encoded earlier, its body) and reads the response head; the response's
    /// body reads the rest from this connection and puts it back in the pool at its end. `reused`: the
    /// connection served an exchange before.
    ///
    /// The head is copied into the connection's write buffer before the future is returned, so the
    /// future holds the connection (a pointer) and not the request.
    pub fn send_head(
        mut self,
        head: &Head,
        body: Body,
        reused: bool,
    ) -> impl std::future::Future<Output = Result<Response<Body>, ExchangeError>> + Send {
        self.0.start(head, body);
        self.finish(head.head_only, reused)
    }

    /// Sends a request encoded earlier (on a connection that turned out stale) and reads the response
    /// head, as `send`.
    pub fn resend(
        mut self,
        replay: Replay,
        head_only: bool,
        reused: bool,
    ) -> impl std::future::Future<Output = Result<Response<Body>, ExchangeError>> + Send {
        let s = &mut *self.0;
        let w = &mut s.writer;
        w.out.clear();
        w.out.pre = replay.head;
        w.out.data = replay.body;
        w.body = None;
        w.chunked = false;
        s.framing = Framing::Done;
        s.received = false;
        s.replayable = false;
        s.replay_body = Bytes::new();
        s.send_failed = false;
        self.finish(head_only, reused)
    }

    async fn finish(
        mut self,
        head_only: bool,
        reused: bool,
    ) -> Result<Response<Body>, ExchangeError> {
        match poll_fn(|cx| self.0.poll_head(cx, head_only)).await {
            // No body (`HEAD`, 204, 304, `content-length: 0`): the connection goes back at once, as a
            // reader may never poll a body that says it has ended.
            Ok(parts) if self.0.can_reuse() => {
                if let Some(pool) = self.0.pool.upgrade() {
                    pool.checkin(self);
                }
                Ok(Response::from_parts(parts, Body::empty()))
            }
            Ok(parts) => Ok(Response::from_parts(
                parts,
                Body::upstream1(ResponseBody(Some(self))),
            )),
            Err(error) => {
                let s = &mut *self.0;
                let stale = reused && !s.received && error.is_connection_loss();
                let replay = (stale && s.replayable).then(|| Replay {
                    head: std::mem::take(&mut s.writer.out.pre),
                    body: std::mem::take(&mut s.replay_body),
                });
                Err(ExchangeError {
                    error,
                    stale,
                    replay,
                })
            }
        }
    }
}

/// Methods RFC 9110 calls idempotent: the ones sent again when a pooled connection proves stale.
fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

impl State {
    /// Copies the request head and queues the body (held whole, it goes in the same write).
    fn start(&mut self, head: &Head, body: Body) {
        self.received = false;
        self.send_failed = false;
        self.framing = Framing::Done;
        let out = &mut self.writer.out;
        out.clear();
        out.pre.extend_from_slice(&head.bytes);
        // Requests always have a length or chunks.
        self.writer.queue_body(body, head.length, true);
        self.replayable = head.idempotent && self.writer.body.is_none();
        self.replay_body = if self.replayable {
            self.writer.out.data.clone()
        } else {
            Bytes::new()
        };
    }

    /// Whether part of the request is still to be written.
    fn sending(&self) -> bool {
        !self.send_failed && self.writer.is_pending()
    }

    /// Stops writing after a failed write: the upstream may have answered and closed its reading side,
    /// so its response is still read; the connection is not reused.
    fn stop_sending(&mut self) {
        self.send_failed = true;
        self.writer.body = None;
        self.reusable = false;
    }

    /// Writes what is queued and takes the request body's frames until it ends or must wait.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        match ready!(self.writer.poll_write(&mut self.io, cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(WriteError::Io(e)) => Poll::Ready(Err(Error::Io(e))),
            Err(WriteError::Body(e)) => {
                self.reusable = false;
                Poll::Ready(Err(Error::RequestBody(e.into())))
            }
        }
    }

    /// Reads more into the read buffer; `Ok(0)` when the upstream closed.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let n = ready!(self.io.poll_fill(&mut self.rbuf, cx))?;
        self.received |= n > 0;
        Poll::Ready(Ok(n))
    }

    /// Sends the request (as far as it goes without waiting) and reads up to the final response's head.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        head_only: bool,
    ) -> Poll<Result<http::response::Parts, Error>> {
        if self.sending() {
            match self.poll_send(cx) {
                Poll::Ready(Err(Error::Io(_))) => self.stop_sending(),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                _ => {}
            }
        }
        loop {
            if !self.rbuf.is_empty() {
                match self.parse_head(head_only)? {
                    Some(parts) => return Poll::Ready(Ok(parts)),
                    None if self.rbuf.len() >= MAX_HEAD => {
                        return Poll::Ready(Err(Invalid::TooLarge.into()))
                    }
                    None => {}
                }
            }
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(Error::ClosedBeforeHead));
            }
        }
    }

    /// Parses a final response head from the read buffer, skipping interim (1xx) ones; `None` when more
    /// bytes are needed.
    fn parse_head(&mut self, head_only: bool) -> Result<Option<http::response::Parts>, Error> {
        loop {
            let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut []);
            let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut parsed,
                &self.rbuf,
                &mut fields,
            ) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(e) => return Err(Invalid::Parse(e).into()),
            };
            let code = parsed.code.unwrap_or(0);
            let status = StatusCode::from_u16(code).map_err(|_| Invalid::Rule("status code"))?;
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(Invalid::Rule(
                    "101 Switching Protocols to a request that asked for no upgrade",
                )
                .into());
            }
            if status.is_informational() {
                self.rbuf.advance(len);
                continue;
            }
            let http10 = parsed.version == Some(0);
            self.spans.record(&self.rbuf, parsed.headers);
            let head = self.rbuf.split_to(len).freeze();
            let (headers, fields) = self.spans.read(&head)?;
            let (length, chunked) = (fields.length, fields.chunked);
            let mut close = fields.close || (http10 && !fields.keep_alive);
            self.framing = if head_only
                || status == StatusCode::NO_CONTENT
                || status == StatusCode::NOT_MODIFIED
            {
                Framing::Done
            } else {
                match (chunked, length) {
                    (Some(true), l) => {
                        // Both: the length is ignored, and the connection is not trusted again.
                        close |= l.is_some();
                        Framing::Chunked(Chunk::Size)
                    }
                    (Some(false), _) => {
                        close = true;
                        Framing::UntilClose
                    }
                    (None, Some(n)) => Framing::length(n),
                    (None, None) => {
                        close = true;
                        Framing::UntilClose
                    }
                }
            };
            if close {
                self.reusable = false;
            }
            let mut resp = Response::new(());
            *resp.status_mut() = status;
            *resp.version_mut() = if http10 {
                Version::HTTP_10
            } else {
                Version::HTTP_11
            };
            *resp.headers_mut() = headers;
            return Ok(Some(resp.into_parts().0));
        }
    }

    /// The next frame of the response body; the request body keeps being sent meanwhile.
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if self.sending() {
            match self.poll_send(cx) {
                Poll::Ready(Err(e @ Error::RequestBody(_))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Err(_)) => self.stop_sending(),
                _ => {}
            }
        }
        loop {
            match self.framing.decode(&mut self.rbuf) {
                Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(Decoded::Trailers(t)) => return Poll::Ready(Some(Ok(Frame::trailers(t)))),
                Ok(Decoded::End) => return Poll::Ready(None),
                Ok(Decoded::More) => {}
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
            // More bytes are needed.
            match ready!(self.poll_fill(cx)) {
                Ok(0) if self.framing == Framing::UntilClose => {
                    self.framing = Framing::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    self.reusable = false;
                    return Poll::Ready(Some(Err(Error::ClosedInBody)));
                }
                Ok(_) => {}
                Err(e) => {
                    self.reusable = false;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    /// Whether the exchange ended cleanly on both sides, so the connection can carry another.
    fn can_reuse(&self) -> bool {
        self.reusable && self.framing == Framing::Done && !self.sending() && self.rbuf.is_empty()
    }
}

/// A response body read from its upstream connection; the connection goes back to its pool once the
/// body has been read to its end, and is closed if the body is dropped before.
pub struct ResponseBody(Option<Conn>);

impl ResponseBody {
    fn done(&mut self) {
        if let Some(conn) = self.0.take() {
            if conn.0.can_reuse() {
                if let Some(pool) = conn.0.pool.upgrade() {
                    pool.checkin(conn);
                }
            }
        }
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(c) => f.debug_tuple("ResponseBody").field(&c.0.framing).finish(),
            None => f.write_str("ResponseBody(Done)"),
        }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let Some(conn) = self.0.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = conn.0.poll_body(cx);
        match &polled {
            // A reader may stop as soon as `is_end_stream` says so (the HTTP/2 server does), so the
            // connection goes back with the last frame rather than on a `None` that may never be polled.
            Poll::Ready(Some(Ok(_))) if conn.0.framing == Framing::Done => self.done(),
            Poll::Ready(None) => self.done(),
            Poll::Ready(Some(Err(_))) => self.0 = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(|c| c.0.framing == Framing::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.0.as_ref().map(|c| c.0.framing) {
            None | Some(Framing::Done) => SizeHint::with_exact(0),
            Some(Framing::Length(n)) => SizeHint::with_exact(n),
            Some(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
