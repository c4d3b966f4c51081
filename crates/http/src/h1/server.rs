//! HTTP/1.1 from downstream: Weft's own server side of the protocol, for every listener (HTTP/2 is
//! `h2::server`'s).
//!
//! hyper's server connection parsed each request into its own types, ran a dispatcher between the
//! connection and the service with the request body behind a channel, and encoded the response with
//! checks the proxy does not need (title-case, per-message buffers): about 6,000 of the
//! 22,155 instructions a proxied request cost (callgrind, `bench/instructions`). Here the connection's task
//! reads a head into one buffer that the request's header values and path share, calls the handler, and
//! writes the response head and the first body frame with one `writev`.
//!
//! Request bodies: none (the usual GET) costs nothing; one with a `content-length` up to
//! `WHOLE_BODY_LIMIT` is read whole before the handler runs (the proxy buffers it to retry anyway), a
//! slice of the read buffer; larger and chunked bodies stream through a one-frame channel that this task
//! fills while the handler runs and while the response is written (an upstream may answer as it reads).
//! `Expect: 100-continue` is answered here, as Envoy does, when the body is first read.
//!
//! Keep-alive follows RFC 9112, 9.3: HTTP/1.1 unless `connection: close`, HTTP/1.0 only with
//! `connection: keep-alive`. Pipelined requests are answered in order. A connection whose request body
//! was not read to its end, or whose response ended with the connection, is closed after the response.
//! Heads that break the protocol get a 400 (431 when too large, 501 for a transfer coding other than
//! chunked, 505 for a version other than 1.x) naming what broke, and the connection is closed.

use super::codec::{self, Chunk, Decoded, Framing, Invalid, Spans, Writer, MAX_HEAD, MAX_HEADERS};
use crate::date;
use crate::drain::Watch;
use crate::limits::{Expired, Waiting, Watchdog};
use crate::net::Accepted;
use crate::server::Handler;
use crate::{text, Body, WHOLE_BODY_LIMIT};
use bytes::{Bytes, BytesMut};
use futures::channel::mpsc;
use futures::Stream;
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body as _, Frame, SizeHint};
use std::future::{poll_fn, Future};
use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The interim response to `Expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// How long a connection closed with request bytes unread keeps reading (and dropping) them, so that
/// its close does not reset the connection under the response (RFC 9112, 9.6).
const LINGER: Duration = Duration::from_secs(1);
/// The most bytes read in that time.
const LINGER_BYTES: usize = 1 << 20;

/// What went wrong reading a request body from downstream.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the socket failed.
    #[error("downstream connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The client closed the connection before the end of the body.
    #[error("downstream closed the connection in the middle of the request body")]
    ClosedInBody,
    /// The body's framing broke HTTP/1.1's rules.
    #[error("invalid request body: {0}")]
    Invalid(#[from] Invalid),
}

type Item = Result<Frame<Bytes>, Error>;

/// A request body streamed from its downstream connection, read by the connection's task as it is
/// taken from here.
pub struct RequestBody {
    rx: mpsc::Receiver<Item>,
    /// The bytes still to come, when the body has a `content-length`.
    remaining: Option<u64>,
    ended: bool,
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody")
            .field("remaining", &self.remaining)
            .field("ended", &self.ended)
            .finish()
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let next = ready!(Pin::new(&mut self.rx).poll_next(cx));
        match &next {
            Some(Ok(frame)) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                if let Some(r) = self.remaining.as_mut() {
                    *r = r.saturating_sub(n);
                }
            }
            Some(Err(_)) | None => self.ended = true,
        }
        Poll::Ready(next)
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.remaining == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) if !self.ended => SizeHint::with_exact(n),
            Some(_) => SizeHint::with_exact(0),
            None => SizeHint::default(),
        }
    }
}

/// What a request's head says about its exchange.
#[derive(Debug, Clone, Copy)]
struct Meta {
    http10: bool,
    head_only: bool,
    keep_alive: bool,
    expect_continue: bool,
    framing: Framing,
}

impl Meta {
    /// For an answer that ends the connection.
    const CLOSING: Meta = Meta {
        http10: false,
        head_only: false,
        keep_alive: false,
        expect_continue: false,
        framing: Framing::Done,
    };
}

/// A request head read: the request without its body, and what it says about the exchange.
type Parsed = (Request<()>, Meta);

/// A request that cannot be served: answered with this status and reason, then the connection closes.
struct Refused(StatusCode, &'static str);

/// Streams a request body from the socket into its channel.
struct Pump {
    framing: Framing,
    tx: mpsc::Sender<Item>,
    /// A frame decoded and not yet taken by the channel.
    held: Option<Item>,
}

/// A downstream connection with its buffers.
struct Conn {
    io: Accepted,
    /// Bytes read and not yet used: the head being read, pipelined requests, body bytes.
    rbuf: BytesMut,
    /// The response being written.
    writer: Writer,
    /// Where the fields of the request head being read lie.
    spans: Spans,
    /// The request body being streamed, until its end.
    pump: Option<Pump>,
    /// The request body was not read to its end (its reader went away, or it broke): the connection
    /// cannot carry another request.
    unread: bool,
    /// The connection's timeouts (idle, request head, stream idle).
    watchdog: Watchdog,
    /// Bytes at the front of `rbuf` known not to hold a whole head (see `worth_parsing`).
    head_checked: usize,
}

impl Drop for Conn {
    fn drop(&mut self) {
        codec::give_back(std::mem::take(&mut self.rbuf));
    }
}

/// Serves HTTP/1.1 on a connection whose first bytes are in `rbuf`, until the client closes, a response
/// ends the connection, the listener drains (between requests, or after the current one), or a timeout
/// of `limits` expires.
pub(crate) async fn serve(io: Accepted, rbuf: BytesMut, handler: &impl Handler, watch: &mut Watch) {
    let mut conn = Conn {
        io,
        rbuf,
        writer: Writer::new(),
        spans: Spans::default(),
        pump: None,
        unread: false,
        watchdog: Watchdog::new(watch.limits()),
        head_checked: 0,
    };
    loop {
        let (head, meta) = match poll_fn(|cx| conn.poll_head(cx, watch)).await {
            Some(Ok(request)) => request,
            None => return,
            Some(Err(Refused(status, why))) => {
                tracing::debug!(status = status.as_u16(), why, "bad request head");
                conn.answer(text(status, why), &Meta::CLOSING, true).await;
                conn.linger().await;
                return;
            }
        };
        let body = match conn.body(&meta).await {
            Ok(body) => body,
            Err(Some(Refused(status, why))) => {
                tracing::debug!(status = status.as_u16(), why, "request body timed out");
                conn.answer(text(status, why), &Meta::CLOSING, true).await;
                return;
            }
            Err(None) => return,
        };
        let mut response = pin!(handler(head.map(|()| body)));
        let resp = poll_fn(|cx| {
            conn.poll_pump(cx);
            if let Poll::Ready(r) = response.as_mut().poll(cx) {
                return Poll::Ready(Some(r));
            }
            // Nothing from the upstream, and nothing of the body from the client, for the stream idle
            // timeout: answered 408, as Envoy does (its `SI` flag).
            match conn.watchdog.poll(cx, Waiting::Stream) {
                Poll::Ready(_) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        let Some(resp) = resp else {
            tracing::debug!("stream idle timeout");
            conn.answer(stream_timeout(), &Meta::CLOSING, true).await;
            if conn.pump.take().is_some() || conn.unread {
                conn.linger().await;
            }
            return;
        };
        let close = conn.answer(resp, &meta, watch.is_draining()).await;
        if close || conn.pump.is_some() || conn.unread {
            if conn.pump.take().is_some() || conn.unread {
                conn.linger().await;
            }
            return;
        }
    }
}

impl Conn {
    /// Reads up to a complete request head; `None` when the client closes, or the listener drains,
    /// between requests.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        watch: &mut Watch,
    ) -> Poll<Option<Result<Parsed, Refused>>> {
        loop {
            if !self.rbuf.is_empty() {
                if worth_parsing(&self.rbuf, self.head_checked) {
                    match parse(&mut self.rbuf, &mut self.spans) {
                        Ok(Some(request)) => {
                            self.head_checked = 0;
                            self.watchdog.head_done();
                            return Poll::Ready(Some(Ok(request)));
                        }
                        Ok(None) => self.head_checked = self.rbuf.len(),
                        Err(refused) => return Poll::Ready(Some(Err(refused))),
                    }
                }
                if self.rbuf.len() >= MAX_HEAD {
                    return Poll::Ready(Some(Err(Refused(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "request head too large\n",
                    ))));
                }
            } else if watch.poll_draining(cx) {
                return Poll::Ready(None);
            }
            match self.io.poll_fill(&mut self.rbuf, cx) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(None),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => {
                    // Between requests: the idle timeout; with a head begun: the head's deadline.
                    let waiting = if self.rbuf.is_empty() {
                        Waiting::Idle
                    } else {
                        Waiting::Head
                    };
                    return match ready!(self.watchdog.poll(cx, waiting)) {
                        Expired::Head => Poll::Ready(Some(Err(Refused(
                            StatusCode::REQUEST_TIMEOUT,
                            "request head timeout\n",
                        )))),
                        Expired::Idle | Expired::Stream => {
                            tracing::debug!(?waiting, "idle timeout");
                            Poll::Ready(None)
                        }
                    };
                }
            }
        }
    }

    /// The request's body: empty, read whole, or streamed by `poll_pump`. `Err(None)` when the
    /// connection failed before a body meant to be read whole arrived, `Err(Some(_))` when it did not
    /// arrive within the stream idle timeout.
    async fn body(&mut self, meta: &Meta) -> Result<Body, Option<Refused>> {
        match meta.framing {
            Framing::Done => Ok(Body::empty()),
            Framing::Length(n) if n <= WHOLE_BODY_LIMIT => {
                let n = n as usize;
                if self.rbuf.len() < n {
                    if meta.expect_continue && self.io.write_all(CONTINUE).await.is_err() {
                        return Err(None);
                    }
                    self.rbuf.reserve(n - self.rbuf.len());
                    while self.rbuf.len() < n {
                        let read = poll_fn(|cx| match self.io.poll_fill(&mut self.rbuf, cx) {
                            Poll::Ready(r) => Poll::Ready(Some(r)),
                            Poll::Pending => {
                                ready!(self.watchdog.poll(cx, Waiting::Stream));
                                Poll::Ready(None)
                            }
                        });
                        match read.await {
                            Some(Ok(0) | Err(_)) => return Err(None),
                            Some(Ok(_)) => {}
                            None => {
                                self.unread = true;
                                return Err(Some(Refused(
                                    StatusCode::REQUEST_TIMEOUT,
                                    "request body timeout\n",
                                )));
                            }
                        }
                    }
                }
                Ok(Body::full(self.rbuf.split_to(n).freeze()))
            }
            framing => {
                if meta.expect_continue && self.io.write_all(CONTINUE).await.is_err() {
                    return Err(None);
                }
                let (tx, rx) = mpsc::channel(0);
                self.pump = Some(Pump {
                    framing,
                    tx,
                    held: None,
                });
                let remaining = match framing {
                    Framing::Length(n) => Some(n),
                    _ => None,
                };
                Ok(Body::downstream1(RequestBody {
                    rx,
                    remaining,
                    ended: false,
                }))
            }
        }
    }

    /// Moves the streamed request body on as far as its reader takes it without waiting.
    fn poll_pump(&mut self, cx: &mut Context<'_>) {
        let Some(pump) = self.pump.as_mut() else {
            return;
        };
        loop {
            if let Some(item) = pump.held.take() {
                match pump.tx.poll_ready(cx) {
                    Poll::Pending => {
                        pump.held = Some(item);
                        return;
                    }
                    Poll::Ready(Ok(())) => {
                        let failed = item.is_err();
                        let sent = pump.tx.start_send(item).is_ok();
                        if failed || !sent {
                            self.pump = None;
                            self.unread = true;
                            return;
                        }
                        if pump.framing == Framing::Done {
                            // Dropping the sender ends the body.
                            self.pump = None;
                            return;
                        }
                    }
                    Poll::Ready(Err(_)) => {
                        self.pump = None;
                        self.unread = true;
                        return;
                    }
                }
            }
            if pump.tx.is_closed() {
                // Its reader went away.
                self.pump = None;
                self.unread = true;
                return;
            }
            pump.held = Some(match pump.framing.decode(&mut self.rbuf) {
                Ok(Decoded::Data(d)) => Ok(Frame::data(d)),
                Ok(Decoded::Trailers(t)) => Ok(Frame::trailers(t)),
                Ok(Decoded::End) => {
                    self.pump = None;
                    return;
                }
                Ok(Decoded::More) => match self.io.poll_fill(&mut self.rbuf, cx) {
                    Poll::Pending => return,
                    Poll::Ready(Ok(0)) => Err(Error::ClosedInBody),
                    Poll::Ready(Ok(_)) => continue,
                    Poll::Ready(Err(e)) => Err(Error::Io(e)),
                },
                Err(e) => Err(Error::Invalid(e)),
            });
        }
    }

    /// Writes a response (its head and its body), streaming the request body meanwhile; returns whether
    /// the connection ends with it.
    async fn answer(&mut self, resp: Response<Body>, meta: &Meta, draining: bool) -> bool {
        // A request body already known to be left unread (broken, or abandoned by its reader) ends the
        // connection: the answer says so.
        let close = self.start_response(resp, meta, draining || self.unread);
        let written = poll_fn(|cx| {
            self.poll_pump(cx);
            match self.writer.poll_write(&mut self.io, cx) {
                Poll::Ready(r) => Poll::Ready(r.map_err(Some)),
                // A client that stops reading, or a response body that stops coming.
                Poll::Pending => {
                    ready!(self.watchdog.poll(cx, Waiting::Stream));
                    Poll::Ready(Err(None))
                }
            }
        })
        .await;
        match written {
            Ok(()) => close,
            Err(e) => {
                match e {
                    Some(e) => tracing::debug!(error = ?e, "response not written to its end"),
                    None => tracing::debug!("stream idle timeout writing the response"),
                }
                self.writer.body = None;
                true
            }
        }
    }

    /// Encodes the response head and queues its body; returns whether the connection ends with it.
    fn start_response(&mut self, resp: Response<Body>, meta: &Meta, draining: bool) -> bool {
        let (parts, body) = resp.into_parts();
        let status = parts.status;
        let no_body = meta.head_only
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || status.is_informational();
        let until_close = !no_body && meta.http10 && body.size_hint().exact().is_none();
        let said_close = parts
            .headers
            .get_all(CONNECTION)
            .iter()
            .any(|v| codec::has_token(v.as_bytes(), b"close"));
        let close = !meta.keep_alive || draining || until_close || said_close;

        let w = &mut self.writer;
        w.out.clear();
        w.body = None;
        w.chunked = false;
        let pre = &mut w.out.pre;
        pre.extend_from_slice(b"HTTP/1.1 ");
        pre.extend_from_slice(status.as_str().as_bytes());
        pre.push(b' ');
        pre.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        pre.extend_from_slice(codec::CRLF);
        // Without a body, the fields as they are: a HEAD's `content-length` says what a GET would get.
        let pushed = codec::push_fields(pre, &parts.headers, !no_body);
        let length_given = meta.head_only && parts.headers.contains_key(CONTENT_LENGTH);
        if !pushed.date {
            pre.extend_from_slice(b"date: ");
            date::with_now(|d| pre.extend_from_slice(d));
            pre.extend_from_slice(codec::CRLF);
        }
        codec::recycle(parts.headers);
        if close && !said_close && !meta.http10 {
            pre.extend_from_slice(b"connection: close\r\n");
        } else if !close && meta.http10 {
            pre.extend_from_slice(b"connection: keep-alive\r\n");
        }
        if no_body {
            if meta.head_only && !length_given {
                if let Some(n) = body.size_hint().exact() {
                    codec::push_length(pre, n);
                }
            }
            pre.extend_from_slice(codec::CRLF);
        } else {
            w.queue_body(body, true, !meta.http10);
        }
        close
    }

    /// Before closing with request bytes unread: stops writing, then reads and drops what the client
    /// still sends for a while, so that the close does not reset the connection under the response.
    async fn linger(&mut self) {
        let _ = self.io.shutdown().await;
        // Read into the connection's own buffer: an array here would make every connection's future
        // (which tokio copies whole at spawn and at the end) 4 KB larger.
        let drain = async {
            let mut total = 0;
            while total < LINGER_BYTES {
                self.rbuf.clear();
                match self.io.read_buf(&mut self.rbuf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }
}

/// Whether a head that was incomplete in the first `checked` bytes of `buf` may be whole now: only if
/// the bytes read since hold a line's end. A head is parsed from its start on every try, so a client
/// that sends it a byte at a time (up to 64 KiB) would otherwise cost a parse of everything so far for
/// every byte, quadratic in the head's length; now it costs one per line (at most 101 before the field
/// limit refuses it). The first try, with nothing checked, always parses: a head read whole in one
/// read, the usual case, costs no scan.
fn worth_parsing(buf: &[u8], checked: usize) -> bool {
    checked == 0
        || buf
            .get(checked..)
            .is_some_and(|fresh| fresh.contains(&b'\n'))
}

/// The answer to a request on which nothing happened for the stream idle timeout.
fn stream_timeout() -> Response<Body> {
    text(StatusCode::REQUEST_TIMEOUT, "stream timeout\n")
}

/// Parses a request head from the front of `buf`; `None` when more bytes are needed.
fn parse(buf: &mut BytesMut, spans: &mut Spans) -> Result<Option<Parsed>, Refused> {
    let bad = |why| Refused(StatusCode::BAD_REQUEST, why);
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::Version) => {
            return Err(Refused(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "HTTP version not supported\n",
            ))
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refused(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many header fields\n",
            ))
        }
        Err(_) => return Err(bad("malformed request head\n")),
    };
    let method = Method::from_bytes(parsed.method.unwrap_or("").as_bytes())
        .map_err(|_| bad("invalid method\n"))?;
    let http10 = parsed.version == Some(0);
    let target = parsed.path.unwrap_or("");
    let target_at = target.as_ptr() as usize - buf.as_ptr() as usize;
    let target = target_at..target_at + target.len();
    spans.record(buf, parsed.headers);
    let head = buf.split_to(len).freeze();
    let uri =
        Uri::from_maybe_shared(head.slice(target)).map_err(|_| bad("invalid request target\n"))?;
    let (mut headers, f) = spans.read(&head).map_err(|e| match e {
        Invalid::Rule("conflicting content-length headers") => {
            bad("conflicting content-length headers\n")
        }
        Invalid::Rule("content-length") => bad("invalid content-length\n"),
        _ => bad("invalid header field\n"),
    })?;
    // RFC 9112 6.1: an HTTP/1.0 message's transfer coding is faulty framing, whatever it says (found
    // by the `h1_request` fuzz target: hyper refuses it, and two readers must not disagree).
    if http10 && f.chunked.is_some() {
        return Err(bad("transfer-encoding in an HTTP/1.0 request\n"));
    }
    let framing = match (f.chunked, f.length) {
        // A coding the server does not know, before chunked or in another field, is not read as
        // chunked (RFC 9112 6.1: 501); nor is chunked twice (found by the `h1_request` fuzz target).
        (Some(_), None) if !f.te_only_chunked => {
            return Err(Refused(
                StatusCode::NOT_IMPLEMENTED,
                "transfer coding other than chunked\n",
            ))
        }
        (Some(true), None) => Framing::Chunked(Chunk::Size),
        (Some(true), Some(_)) => {
            return Err(bad("both transfer-encoding and content-length\n"));
        }
        (Some(false), _) => {
            return Err(Refused(
                StatusCode::NOT_IMPLEMENTED,
                "transfer coding other than chunked\n",
            ))
        }
        (None, Some(n)) => Framing::length(n),
        (None, None) => Framing::Done,
    };
    // RFC 9112, 3.2: one `Host`, holding an authority, and none missing from an HTTP/1.1 request. Two
    // could be read as two different services by two readers (the proxy routes on one, the application
    // reads another); a proxy must refuse them rather than choose.
    if f.hosts > 1 {
        return Err(bad("several host header fields\n"));
    }
    if !f.host_valid {
        return Err(bad("invalid host header field\n"));
    }
    if f.hosts == 0 && !http10 {
        return Err(bad("no host header field\n"));
    }
    let expect_continue = f.expect_continue && !http10 && framing != Framing::Done;
    if expect_continue {
        // Answered here.
        headers.remove(EXPECT);
    }
    let meta = Meta {
        http10,
        head_only: method == Method::HEAD,
        keep_alive: if http10 {
            f.keep_alive && !f.close
        } else {
            !f.close
        },
        expect_continue,
        framing,
    };
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = if http10 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    *req.headers_mut() = headers;
    Ok(Some((req, meta)))
}

/// What the server makes of bytes a client sent on a new connection: the first request's head and its
/// whole body, read by the same parse and framing as `serve` (fuzzing: `crate::fuzzing::h1_request`).
#[cfg(feature = "fuzzing")]
pub(crate) fn read_request(mut buf: BytesMut) -> crate::fuzzing::H1Request {
    use crate::fuzzing::H1Request;
    let (head, meta) = match parse(&mut buf, &mut Spans::default()) {
        Ok(Some(p)) => p,
        Ok(None) if buf.len() >= MAX_HEAD => return H1Request::Refused(431),
        Ok(None) => return H1Request::Incomplete,
        Err(Refused(status, _)) => return H1Request::Refused(status.as_u16()),
    };
    let mut framing = meta.framing;
    let mut body = Vec::new();
    let mut trailers = Vec::new();
    let complete = loop {
        match framing.decode(&mut buf) {
            Ok(Decoded::Data(d)) => body.extend_from_slice(&d),
            Ok(Decoded::Trailers(t)) => {
                trailers = t
                    .iter()
                    .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                    .collect();
            }
            Ok(Decoded::End) => break Some(true),
            Ok(Decoded::More) => break Some(false),
            Err(_) => break None,
        }
    };
    H1Request::Request {
        method: head.method().as_str().to_owned(),
        target: head.uri().to_string(),
        headers: head
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect(),
        body: match complete {
            Some(true) => Ok(Some((body, trailers))),
            Some(false) => Ok(None),
            None => Err(()),
        },
    }
}

#[cfg(test)]
mod tests;
