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

use super::Body;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Body as _, Frame, SizeHint};
use std::future::poll_fn;
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Weak;
use std::task::{ready, Context, Poll};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use super::upstream::H1Pool;

/// The read buffer's size, allocated once per connection.
const READ_BUF: usize = 8 * 1024;
/// Below this much free space the read buffer is grown (or, once its earlier bytes are released,
/// rewound) before a read.
const READ_MIN: usize = 1024;
/// The largest response head (status line, headers, and the same for the trailers) accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields a response head (or its trailers) may have: hyper's limit.
const MAX_HEADERS: usize = 100;
/// The longest chunk-size line (size and extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;

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
    /// The response head (or the trailers) went past `MAX_HEAD`.
    #[error("upstream response head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// The response head could not be parsed.
    #[error("malformed upstream response head: {0}")]
    Parse(httparse::Error),
    /// The response broke HTTP/1.1's rules in another way.
    #[error("invalid upstream response: {0}")]
    Invalid(&'static str),
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

/// An upstream HTTP/1.1 connection with its buffers.
pub struct Conn(Box<State>);

struct State {
    io: TcpStream,
    addr: SocketAddr,
    /// Where the connection goes back when an exchange ends cleanly.
    pool: Weak<H1Pool>,
    /// When (in the pool's sweeps) it went idle; set by the pool.
    idle_since: u32,
    /// Bytes read and not yet handed on.
    rbuf: BytesMut,
    /// The request bytes to write.
    out: Out,
    /// The rest of the request body; `None` once it has all been taken.
    body: Option<Body>,
    /// Whether the request body goes chunked.
    chunked: bool,
    /// How the current response's body is delimited.
    framing: Framing,
    /// Whether the connection may carry another exchange after this one.
    reusable: bool,
    /// Whether any byte of a response arrived in this exchange.
    received: bool,
    /// Whether the request could be sent again on another connection (idempotent, its body held whole).
    replayable: bool,
    /// That body, for sending again (`out.data` is consumed as it is written).
    replay_body: Bytes,
    /// Writing the request failed: nothing more is written in this exchange.
    send_failed: bool,
}

/// Bytes waiting to be written: an encoded part (the head, a chunk-size line, the trailers), the data
/// of a body frame, and a fixed ending (the chunk's CRLF, the last chunk), written with one `writev`.
struct Out {
    pre: Vec<u8>,
    pos: usize,
    data: Bytes,
    post: &'static [u8],
}

impl Out {
    fn is_empty(&self) -> bool {
        self.pos == self.pre.len() && self.data.is_empty() && self.post.is_empty()
    }

    fn advance(&mut self, mut n: usize) {
        let a = (self.pre.len() - self.pos).min(n);
        self.pos += a;
        n -= a;
        let b = self.data.len().min(n);
        self.data.advance(b);
        n -= b;
        self.post = &self.post[n.min(self.post.len())..];
    }
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes remain.
    Length(u64),
    /// Chunked, in this state.
    Chunked(Chunk),
    /// Up to the upstream's close.
    UntilClose,
    /// Read to its end.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// A chunk-size line comes next.
    Size,
    /// This many bytes of the chunk's data remain.
    Data(u64),
    /// The CRLF after a chunk's data comes next.
    DataEnd,
    /// The trailer section (perhaps empty) after the last chunk comes next.
    Trailers,
}

/// The end of a chunk's data; the same followed by the last chunk and an empty trailer section.
const CRLF: &[u8] = b"\r\n";
const CRLF_LAST: &[u8] = b"\r\n0\r\n\r\n";
const LAST: &[u8] = b"0\r\n\r\n";

impl Conn {
    /// A connection on a connected socket, returned to `pool` after each clean exchange.
    pub fn new(io: TcpStream, addr: SocketAddr, pool: Weak<H1Pool>) -> Conn {
        Conn(Box::new(State {
            io,
            addr,
            pool,
            idle_since: 0,
            rbuf: BytesMut::with_capacity(READ_BUF),
            out: Out {
                pre: Vec::with_capacity(512),
                pos: 0,
                data: Bytes::new(),
                post: &[],
            },
            body: None,
            chunked: false,
            framing: Framing::Done,
            reusable: true,
            received: false,
            replayable: false,
            replay_body: Bytes::new(),
            send_failed: false,
        }))
    }

    /// The endpoint it is connected to.
    pub fn addr(&self) -> SocketAddr {
        self.0.addr
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
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match s.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                s.reserve();
                match s.io.try_read_buf(&mut s.rbuf) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
                    // Closed, failed, or bytes nobody asked for.
                    _ => false,
                }
            }
        }
    }

    /// Sends `req` and reads the response head; the response's body reads the rest from this connection
    /// and puts it back in the pool at its end. `reused`: the connection served an exchange before.
    ///
    /// The request is encoded before the future is returned, so the future holds the connection (a
    /// pointer) and not the request.
    pub fn send(
        mut self,
        req: Request<Body>,
        reused: bool,
    ) -> impl std::future::Future<Output = Result<Response<Body>, ExchangeError>> + Send {
        let head_only = req.method() == Method::HEAD;
        let replayable = is_idempotent(req.method());
        self.0.start(req, replayable);
        self.finish(head_only, reused)
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
        s.out.pre = replay.head;
        s.out.pos = 0;
        s.out.data = replay.body;
        s.out.post = &[];
        s.body = None;
        s.chunked = false;
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
                    head: std::mem::take(&mut s.out.pre),
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
    /// Encodes the request head and queues the body (held whole, it goes in the same write).
    fn start(&mut self, req: Request<Body>, idempotent: bool) {
        let (parts, body) = req.into_parts();
        self.received = false;
        self.send_failed = false;
        self.framing = Framing::Done;
        let out = &mut self.out;
        out.pre.clear();
        out.pos = 0;
        out.post = &[];
        let pre = &mut out.pre;
        pre.extend_from_slice(parts.method.as_str().as_bytes());
        pre.push(b' ');
        pre.extend_from_slice(
            parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .as_bytes(),
        );
        pre.extend_from_slice(b" HTTP/1.1\r\n");
        if !parts.headers.contains_key(HOST) {
            if let Some(a) = parts.uri.authority() {
                pre.extend_from_slice(b"host: ");
                pre.extend_from_slice(a.as_str().as_bytes());
                pre.extend_from_slice(CRLF);
            }
        }
        let mut had_length = false;
        for (name, value) in &parts.headers {
            // The framing is this connection's own, written below from the body.
            if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
                had_length |= name == CONTENT_LENGTH;
                continue;
            }
            pre.extend_from_slice(name.as_str().as_bytes());
            pre.extend_from_slice(b": ");
            pre.extend_from_slice(value.as_bytes());
            pre.extend_from_slice(CRLF);
        }
        let (whole, rest) = body.into_whole();
        self.chunked = false;
        self.replayable = idempotent && whole.is_some();
        self.replay_body = Bytes::new();
        match (whole, rest) {
            (Some(data), _) => {
                // A body with no bytes gets `content-length: 0` only where one is expected.
                if !data.is_empty()
                    || had_length
                    || matches!(parts.method, Method::POST | Method::PUT | Method::PATCH)
                {
                    pre.extend_from_slice(b"content-length: ");
                    push_decimal(pre, data.len() as u64);
                    pre.extend_from_slice(CRLF);
                }
                pre.extend_from_slice(CRLF);
                if self.replayable {
                    self.replay_body = data.clone();
                }
                out.data = data;
                self.body = None;
            }
            (None, Some(body)) => {
                match body.size_hint().exact() {
                    Some(n) => {
                        pre.extend_from_slice(b"content-length: ");
                        push_decimal(pre, n);
                        pre.extend_from_slice(CRLF);
                    }
                    None => {
                        pre.extend_from_slice(b"transfer-encoding: chunked\r\n");
                        self.chunked = true;
                    }
                }
                pre.extend_from_slice(CRLF);
                out.data = Bytes::new();
                self.body = Some(body);
            }
            (None, None) => {
                pre.extend_from_slice(CRLF);
                out.data = Bytes::new();
                self.body = None;
            }
        }
    }

    /// Whether part of the request is still to be written.
    fn sending(&self) -> bool {
        !self.send_failed && (self.body.is_some() || !self.out.is_empty())
    }

    /// Stops writing after a failed write: the upstream may have answered and closed its reading side,
    /// so its response is still read; the connection is not reused.
    fn stop_sending(&mut self) {
        self.send_failed = true;
        self.body = None;
        self.reusable = false;
    }

    /// Writes what is queued and takes the request body's frames until it ends or must wait.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            while !self.out.is_empty() {
                let out = &self.out;
                let slices = [
                    IoSlice::new(&out.pre[out.pos..]),
                    IoSlice::new(&out.data),
                    IoSlice::new(out.post),
                ];
                let n = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices))?;
                if n == 0 {
                    return Poll::Ready(Err(
                        std::io::Error::from(std::io::ErrorKind::WriteZero).into()
                    ));
                }
                self.out.advance(n);
            }
            let Some(body) = self.body.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            let frame = ready!(Pin::new(&mut *body).poll_frame(cx));
            let ended = body.is_end_stream();
            let out = &mut self.out;
            out.pre.clear();
            out.pos = 0;
            match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) => {
                        if self.chunked {
                            push_hex(&mut out.pre, data.len() as u64);
                            out.pre.extend_from_slice(CRLF);
                            out.post = if ended { CRLF_LAST } else { CRLF };
                        }
                        out.data = data;
                        if ended {
                            self.body = None;
                        }
                        continue;
                    }
                    Err(frame) => {
                        if let (Ok(trailers), true) = (frame.into_trailers(), self.chunked) {
                            out.pre.extend_from_slice(b"0\r\n");
                            for (name, value) in &trailers {
                                out.pre.extend_from_slice(name.as_str().as_bytes());
                                out.pre.extend_from_slice(b": ");
                                out.pre.extend_from_slice(value.as_bytes());
                                out.pre.extend_from_slice(CRLF);
                            }
                            out.pre.extend_from_slice(CRLF);
                            self.body = None;
                            continue;
                        }
                    }
                },
                Some(Err(e)) => {
                    self.body = None;
                    self.reusable = false;
                    return Poll::Ready(Err(Error::RequestBody(e.into())));
                }
                None => {
                    if self.chunked {
                        out.post = LAST;
                    }
                    self.body = None;
                    continue;
                }
            }
            if ended {
                if self.chunked {
                    out.post = LAST;
                }
                self.body = None;
            }
        }
    }

    /// Makes room in the read buffer: rewinds it to its start when its earlier bytes have all been
    /// released (the usual case, with no allocation), or grows it.
    fn reserve(&mut self) {
        if self.rbuf.capacity() - self.rbuf.len() < READ_MIN {
            self.rbuf.reserve(READ_BUF);
        }
    }

    /// Reads more into the read buffer; `Ok(0)` when the upstream closed.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        self.reserve();
        loop {
            ready!(self.io.poll_read_ready(cx))?;
            match self.io.try_read_buf(&mut self.rbuf) {
                Ok(n) => {
                    self.received |= n > 0;
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
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
                        return Poll::Ready(Err(Error::HeadTooLarge))
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
                Err(e) => return Err(Error::Parse(e)),
            };
            let code = parsed.code.unwrap_or(0);
            let status = StatusCode::from_u16(code).map_err(|_| Error::Invalid("status code"))?;
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(Error::Invalid(
                    "101 Switching Protocols to a request that asked for no upgrade",
                ));
            }
            if status.is_informational() {
                self.rbuf.advance(len);
                continue;
            }
            let http10 = parsed.version == Some(0);
            // Where each field lies in the head, so that the head can be split off the buffer and shared
            // by the header values without parsing it twice.
            let base = self.rbuf.as_ptr() as usize;
            let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
            let count = parsed.headers.len();
            for (span, f) in spans.iter_mut().zip(parsed.headers.iter()) {
                *span = (
                    (f.name.as_ptr() as usize - base) as u32,
                    f.name.len() as u32,
                    (f.value.as_ptr() as usize - base) as u32,
                    f.value.len() as u32,
                );
            }
            let head = self.rbuf.split_to(len).freeze();
            let mut headers = HeaderMap::with_capacity(count);
            let mut length: Option<u64> = None;
            let mut chunked = None;
            let mut close = http10;
            for &(no, nl, vo, vl) in &spans[..count] {
                let (no, nl, vo, vl) = (no as usize, nl as usize, vo as usize, vl as usize);
                let raw = &head[vo..vo + vl];
                let name = HeaderName::from_bytes(&head[no..no + nl])
                    .map_err(|_| Error::Invalid("header name"))?;
                if name == CONTENT_LENGTH {
                    let n = parse_length(raw).ok_or(Error::Invalid("content-length"))?;
                    if length.is_some_and(|l| l != n) {
                        return Err(Error::Invalid("conflicting content-length headers"));
                    }
                    length = Some(n);
                } else if name == TRANSFER_ENCODING {
                    chunked = Some(last_token_is(raw, b"chunked"));
                } else if name == CONNECTION {
                    if has_token(raw, b"close") {
                        close = true;
                    } else if http10 && has_token(raw, b"keep-alive") {
                        close = false;
                    }
                }
                let value = HeaderValue::from_maybe_shared(head.slice(vo..vo + vl))
                    .map_err(|_| Error::Invalid("header value"))?;
                headers.append(name, value);
            }
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
                    (None, Some(0)) => Framing::Done,
                    (None, Some(n)) => Framing::Length(n),
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
            match self.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(n) | Framing::Chunked(Chunk::Data(n)) if !self.rbuf.is_empty() => {
                    let take = (self.rbuf.len() as u64).min(n);
                    let data = self.rbuf.split_to(take as usize).freeze();
                    self.framing = match self.framing {
                        Framing::Length(_) if take == n => Framing::Done,
                        Framing::Length(_) => Framing::Length(n - take),
                        _ if take == n => Framing::Chunked(Chunk::DataEnd),
                        _ => Framing::Chunked(Chunk::Data(n - take)),
                    };
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::UntilClose if !self.rbuf.is_empty() => {
                    let data = self.rbuf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Chunked(Chunk::Size) if !self.rbuf.is_empty() => {
                    match httparse::parse_chunk_size(&self.rbuf) {
                        Ok(httparse::Status::Complete((used, size))) => {
                            self.rbuf.advance(used);
                            self.framing = Framing::Chunked(if size == 0 {
                                Chunk::Trailers
                            } else {
                                Chunk::Data(size)
                            });
                            continue;
                        }
                        Ok(httparse::Status::Partial) if self.rbuf.len() < MAX_CHUNK_LINE => {}
                        _ => return Poll::Ready(Some(Err(Error::Invalid("chunk size line")))),
                    }
                }
                Framing::Chunked(Chunk::DataEnd) if self.rbuf.len() >= 2 => {
                    if &self.rbuf[..2] != CRLF {
                        return Poll::Ready(Some(Err(Error::Invalid(
                            "chunk data not followed by CRLF",
                        ))));
                    }
                    self.rbuf.advance(2);
                    self.framing = Framing::Chunked(Chunk::Size);
                    continue;
                }
                Framing::Chunked(Chunk::Trailers) if self.rbuf.len() >= 2 => {
                    if &self.rbuf[..2] == CRLF {
                        self.rbuf.advance(2);
                        self.framing = Framing::Done;
                        return Poll::Ready(None);
                    }
                    match self.parse_trailers() {
                        Ok(Some(trailers)) => {
                            self.framing = Framing::Done;
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        Ok(None) if self.rbuf.len() < MAX_HEAD => {}
                        Ok(None) => return Poll::Ready(Some(Err(Error::HeadTooLarge))),
                        Err(e) => return Poll::Ready(Some(Err(e))),
                    }
                }
                _ => {}
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

    /// Parses the trailer section after the last chunk; `None` when more bytes are needed.
    fn parse_trailers(&mut self) -> Result<Option<HeaderMap>, Error> {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let len = match httparse::parse_headers(&self.rbuf, &mut fields) {
            Ok(httparse::Status::Complete((len, _))) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(Error::Parse(e)),
        };
        let block = self.rbuf.split_to(len).freeze();
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let Ok(httparse::Status::Complete((_, fields))) =
            httparse::parse_headers(&block, &mut fields)
        else {
            return Err(Error::Invalid("trailers"));
        };
        let mut trailers = HeaderMap::with_capacity(fields.len());
        for f in fields {
            let name = HeaderName::from_bytes(f.name.as_bytes())
                .map_err(|_| Error::Invalid("trailer name"))?;
            let value = HeaderValue::from_maybe_shared(block.slice_ref(f.value))
                .map_err(|_| Error::Invalid("trailer value"))?;
            trailers.append(name, value);
        }
        Ok(Some(trailers))
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
            // A reader may stop as soon as `is_end_stream` says so (hyper's server does), so the
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

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(super::decimal(n, &mut [0u8; 20]));
}

/// Appends `n` in hexadecimal (a chunk size).
fn push_hex(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(n & 15) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// A `content-length` value: digits only (a list of equal values, which some servers send, included).
fn parse_length(v: &[u8]) -> Option<u64> {
    let mut found = None;
    for part in v.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        if found.is_some_and(|f| f != n) {
            return None;
        }
        found = Some(n);
    }
    found
}

/// Whether a comma-separated header value holds `token` (ASCII case-insensitive).
fn has_token(v: &[u8], token: &[u8]) -> bool {
    v.split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Whether the last of a comma-separated header value's tokens is `token` (ASCII case-insensitive).
fn last_token_is(v: &[u8], token: &[u8]) -> bool {
    v.rsplit(|&b| b == b',')
        .next()
        .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests;
