//! The server side of HTTP/2 (RFC 9113), Weft's own: a downstream connection is one task that owns
//! everything about it, so nothing on it is locked but a streaming request body's queue.
//!
//! The task reads frames, decodes header blocks straight into the proxy's request types (`hpack`), runs
//! each stream's handler in a `FuturesUnordered` inside it, writes each response's frames into the one
//! write buffer as they are made, and writes that buffer once per round, so that the answers ready
//! together go out in one system call. On the `h2` crate the same work was about 18,000 instructions per
//! request more (`bench/instructions`, `WORKLOAD=http2-streams`): frames queued as enums, a lock per
//! stream operation, header maps converted to its own field type and back, and a copy of every value.
//!
//! Flow control both ways: a response body's next frame is read only while the client's windows have
//! room, and a request body's bytes are given back to the client's windows as the handler consumes them
//! (half a window at a time), so a slow upstream holds back the client instead of filling memory.

use super::frame::{self, Head, Reason, Setting};
use super::guard::{Flood, Guard, MAX_CONTINUATIONS};
use super::hpack::{self, Name};
use crate::limits::Limits;
use crate::{date, h1, Body};
use bytes::{Buf, Bytes, BytesMut};
use futures::stream::FuturesUnordered;
use futures::task::AtomicWaker;
use futures::StreamExt;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version};
use http_body::{Body as _, Frame, SizeHint};
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

/// The window this side gives each stream and the connection (hyper's server default, kept).
const WINDOW: u32 = 1024 * 1024;
/// The largest header list accepted (RFC 9113 6.5.2's size: names, values and 32 per field).
const MAX_HEADER_LIST_SIZE: usize = 16 * 1024;
/// The largest header block (HEADERS and its CONTINUATIONs) accepted before decoding.
const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// What the decoder's dynamic table may hold (the default; this side never sends another).
const HEADER_TABLE_SIZE: usize = 4096;
/// Written bytes held before the task stops reading and stops polling bodies until the socket takes some.
const WRITE_HIGH: usize = 256 * 1024;
/// Reads handled in one round before the task yields to others.
const READS_PER_ROUND: usize = 16;
/// The payload of the server's keepalive PINGs, to tell their acknowledgements from others.
const KEEPALIVE_PING: [u8; 8] = *b"weft-kap";

/// Why a connection ended other than cleanly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connection I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the client broke HTTP/2 ({reason}): {why}")]
    Protocol { reason: Reason, why: &'static str },
    #[error("the client did not answer a keepalive PING in time")]
    KeepaliveTimeout,
}

fn broke<T>(reason: Reason, why: &'static str) -> Result<T, Error> {
    Err(Error::Protocol { reason, why })
}

impl From<frame::Broke> for Error {
    fn from(frame::Broke(reason, why): frame::Broke) -> Error {
        Error::Protocol { reason, why }
    }
}

impl From<Flood> for Error {
    fn from(f: Flood) -> Error {
        Error::Protocol {
            reason: f.reason(),
            why: f.0,
        }
    }
}

/// Why a request body could not be read whole.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the request stream was reset ({0})")]
pub struct StreamError(Reason);

/// What the connection and a stream's handler and body share.
struct Shared {
    /// Set once the stream is reset (either side) or the connection ends: the handler is dropped.
    reset: AtomicBool,
    handler: AtomicWaker,
    recv: Mutex<Recv>,
    conn: Arc<ConnShared>,
}

/// A request body as it arrives.
#[derive(Default)]
struct Recv {
    data: super::DataQueue,
    trailers: Option<HeaderMap>,
    end: bool,
    error: Option<Reason>,
    waker: Option<Waker>,
    /// Bytes handed on since the connection last gave them back to the stream's window.
    released: usize,
}

/// What bodies tell the connection: bytes they handed on, to give back to the client's windows.
#[derive(Default)]
struct ConnShared {
    released: AtomicUsize,
    waker: AtomicWaker,
}

impl Shared {
    fn recv(&self) -> std::sync::MutexGuard<'_, Recv> {
        // A panic while holding it leaves a queue that is still whole.
        self.recv.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the stream for its handler and its body.
    fn reset(&self, reason: Reason) {
        self.reset.store(true, Ordering::Release);
        self.handler.wake();
        let mut recv = self.recv();
        if !recv.end {
            recv.error = Some(reason);
        }
        if let Some(w) = recv.waker.take() {
            drop(recv);
            w.wake();
        }
    }
}

/// A request body received on a stream of a served connection.
pub struct RequestBody {
    shared: Arc<Shared>,
    length: Option<u64>,
}

impl RequestBody {
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        let mut recv = self.shared.recv();
        if let Some(data) = recv.data.pop() {
            recv.released += data.len();
            drop(recv);
            let conn = &self.shared.conn;
            conn.released.fetch_add(data.len(), Ordering::AcqRel);
            conn.waker.wake();
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(t) = recv.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        if recv.end {
            return Poll::Ready(None);
        }
        if let Some(reason) = recv.error {
            return Poll::Ready(Some(Err(StreamError(reason))));
        }
        match &recv.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => recv.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        let recv = self.shared.recv();
        recv.end && recv.data.is_empty() && recv.trailers.is_none()
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody")
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

pin_project_lite::pin_project! {
    /// A stream's handler: gives up (dropping the handler's future, which cancels its upstream request)
    /// once the stream is reset.
    struct Handling<F> {
        id: u32,
        shared: Arc<Shared>,
        #[pin]
        fut: F,
    }
}

impl<F: Future<Output = Response<Body>>> Future for Handling<F> {
    type Output = (u32, Option<Response<Body>>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.shared.reset.load(Ordering::Acquire) {
            return Poll::Ready((*this.id, None));
        }
        this.shared.handler.register(cx.waker());
        if this.shared.reset.load(Ordering::Acquire) {
            return Poll::Ready((*this.id, None));
        }
        this.fut.poll(cx).map(|r| (*this.id, Some(r)))
    }
}

/// A response being sent.
enum Send {
    /// The handler is running.
    Waiting,
    /// The body is being sent.
    Body(Box<Sending>),
    /// END_STREAM sent.
    Done,
}

struct Sending {
    body: Body,
    /// Bytes read from the body that the windows had no room for yet.
    pending: Bytes,
    /// END_STREAM goes with the last of `pending`.
    end_after_pending: bool,
}

struct Stream {
    shared: Arc<Shared>,
    /// The client has not sent END_STREAM yet.
    recv_open: bool,
    /// What the client may still send on it.
    recv_window: i64,
    /// `content-length`, checked against the DATA received.
    length: Option<u64>,
    received: u64,
    send_window: i64,
    send: Send,
    /// The connection's tick at the stream's last activity (a frame either way, its answer).
    seen: u32,
}

/// A header block being received across CONTINUATION frames.
struct Partial {
    stream: u32,
    end_stream: bool,
    block: BytesMut,
}

type StreamMap = HashMap<u32, Stream, foldhash::fast::FixedState>;

struct Conn<T, H, F> {
    io: T,
    handler: H,
    rbuf: BytesMut,
    wbuf: BytesMut,
    decoder: hpack::Decoder,
    streams: StreamMap,
    handling: FuturesUnordered<Pin<Box<Handling<F>>>>,
    /// Streams whose response body is being sent.
    sending: Vec<u32>,
    shared: Arc<ConnShared>,
    preface_seen: bool,
    settings_seen: bool,
    /// The client's settings.
    peer_initial_window: i64,
    peer_max_frame: usize,
    /// What this side may still send on the connection, and what the client may.
    send_window: i64,
    recv_window: i64,
    /// Received bytes not yet given back to the connection's window.
    conn_unreleased: usize,
    /// The highest stream id the client has opened.
    last_stream: u32,
    /// The defences against floods and resets.
    guard: Guard,
    limits: Limits,
    continuation: Option<Partial>,
    /// CONTINUATION frames in the header block being received.
    continuations: u32,
    /// The connection's timeouts: one timer, woken once per tick (see `poll_timer`).
    timer: Option<Pin<Box<Sleep>>>,
    timer_polled: bool,
    tick: Option<Duration>,
    /// Ticks so far, and the tick of the last frame read, of the last time a stream was open, and of the
    /// keepalive PING waiting for its acknowledgement.
    ticks: u32,
    last_read: u32,
    last_busy: u32,
    ping_sent: Option<u32>,
    /// GOAWAY sent (draining) or received: no new streams.
    going_away: bool,
    read_closed: bool,
    /// A connection error: GOAWAY is written, and the task ends once it has gone out.
    failed: Option<Error>,
}

/// Serves HTTP/2 (prior knowledge: the preface is the first thing `io` yields) with `handler` under
/// `limits`, until the client closes the connection or, once `draining` has said so, the streams open at
/// the GOAWAY end.
pub(crate) async fn serve_with<T, H, F>(
    io: T,
    handler: H,
    mut draining: impl FnMut(&mut Context<'_>) -> bool,
    limits: Limits,
) -> Result<(), Error>
where
    T: AsyncRead + AsyncWrite + Unpin,
    H: Fn(Request<Body>) -> F,
    F: Future<Output = Response<Body>>,
{
    let tick = limits.tick(true);
    let mut conn = Conn {
        io,
        handler,
        rbuf: h1::codec::read_buf(),
        wbuf: BytesMut::with_capacity(16 * 1024),
        decoder: hpack::Decoder::new(HEADER_TABLE_SIZE),
        streams: StreamMap::default(),
        handling: FuturesUnordered::new(),
        sending: Vec::new(),
        shared: Arc::new(ConnShared::default()),
        preface_seen: false,
        settings_seen: false,
        peer_initial_window: frame::DEFAULT_WINDOW,
        peer_max_frame: frame::DEFAULT_MAX_FRAME_SIZE,
        send_window: frame::DEFAULT_WINDOW,
        recv_window: i64::from(WINDOW),
        conn_unreleased: 0,
        last_stream: 0,
        guard: Guard::default(),
        limits,
        continuation: None,
        continuations: 0,
        timer: None,
        timer_polled: false,
        tick,
        ticks: 0,
        last_read: 0,
        last_busy: 0,
        ping_sent: None,
        going_away: false,
        read_closed: false,
        failed: None,
    };
    frame::settings(
        &mut conn.wbuf,
        &[
            (
                frame::SETTINGS_MAX_CONCURRENT_STREAMS,
                limits.http2_max_concurrent_streams,
            ),
            (frame::SETTINGS_INITIAL_WINDOW_SIZE, WINDOW),
            (
                frame::SETTINGS_MAX_HEADER_LIST_SIZE,
                MAX_HEADER_LIST_SIZE as u32,
            ),
        ],
    );
    frame::window_update(&mut conn.wbuf, 0, WINDOW - frame::DEFAULT_WINDOW as u32);
    let mut asked = false;
    poll_fn(|cx| {
        if !asked && conn.failed.is_none() && draining(cx) {
            asked = true;
            conn.go_away(Reason::NO_ERROR);
        }
        conn.poll(cx)
    })
    .await
}

impl<T, H, F> Conn<T, H, F>
where
    T: AsyncRead + AsyncWrite + Unpin,
    H: Fn(Request<Body>) -> F,
    F: Future<Output = Response<Body>>,
{
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.shared.waker.register(cx.waker());
        self.poll_timer(cx);
        let mut reads = 0;
        loop {
            if self.failed.is_some() {
                return self.poll_fail(cx);
            }
            let mut progress = false;
            // The streams first: what they answer goes into this round's write.
            while let Poll::Ready(Some((id, resp))) = self.handling.poll_next_unpin(cx) {
                if let Some(resp) = resp {
                    self.respond(id, resp, cx);
                }
            }
            if self.shared.released.load(Ordering::Acquire) > 0 {
                self.give_back();
            }
            if !self.sending.is_empty() {
                self.poll_bodies(cx);
            }
            if self.wbuf.len() < WRITE_HIGH && !self.read_closed && reads < READS_PER_ROUND {
                match self.poll_read(cx) {
                    Poll::Ready(Ok(())) => {
                        reads += 1;
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => {
                        self.fail(e);
                        continue;
                    }
                    Poll::Pending => {}
                }
            }
            if !self.wbuf.is_empty() {
                let held_back = self.wbuf.len() >= WRITE_HIGH;
                match self.poll_write(cx) {
                    // Reading and bodies stopped for the write go on.
                    Poll::Ready(Ok(())) => {
                        self.guard.flushed();
                        progress |= held_back;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Pending => {}
                }
            }
            if (self.going_away || self.read_closed)
                && self.streams.is_empty()
                && self.handling.is_empty()
                && self.wbuf.is_empty()
            {
                return Poll::Ready(Ok(()));
            }
            if !progress {
                return Poll::Pending;
            }
            if reads >= READS_PER_ROUND {
                // Fair to the other tasks on this thread: go on in a moment.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
    }

    /// After a connection error: sends what is written (GOAWAY last), then ends.
    fn poll_fail(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        while !self.wbuf.is_empty() {
            match self.poll_write(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => break,
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        })
    }

    /// Ends the connection: GOAWAY with the error's code (none when the peer is gone), every stream
    /// reset.
    fn fail(&mut self, e: Error) {
        match &e {
            Error::Protocol { reason, why } => {
                tracing::debug!(%reason, why, "closing the connection");
                frame::goaway(&mut self.wbuf, self.last_stream, *reason);
            }
            Error::Io(_) | Error::KeepaliveTimeout => self.wbuf.clear(),
        }
        for (_, s) in self.streams.drain() {
            s.shared.reset(Reason::CANCEL);
        }
        self.handling.clear();
        self.failed = Some(e);
    }

    /// Looks after the connection's timeouts once per tick. The timer's state is one atomic load when it
    /// has not fired, so a request pays nothing for it (see `limits::Watchdog` for why ticks).
    fn poll_timer(&mut self, cx: &mut Context<'_>) {
        let Some(tick) = self.tick else {
            return;
        };
        loop {
            let sleep = match &mut self.timer {
                Some(s) => {
                    if self.timer_polled && !s.is_elapsed() {
                        return;
                    }
                    s
                }
                None => self
                    .timer
                    .insert(Box::pin(tokio::time::sleep_until(Instant::now() + tick))),
            };
            if sleep.as_mut().poll(cx).is_pending() {
                self.timer_polled = true;
                return;
            }
            sleep.as_mut().reset(Instant::now() + tick);
            self.timer_polled = false;
            self.ticks = self.ticks.wrapping_add(1);
            self.on_tick(tick);
        }
    }

    /// A tick: the keepalive PING, the idle timeout, the streams' idle timeout.
    fn on_tick(&mut self, tick: Duration) {
        let now = self.ticks;
        let quiet = |since: u32| tick.saturating_mul(now.wrapping_sub(since));
        let limits = self.limits;
        if !self.streams.is_empty() || !self.handling.is_empty() {
            self.last_busy = now;
        }
        if !limits.http2_keepalive_interval.is_zero() {
            match self.ping_sent {
                Some(sent) if quiet(sent) >= limits.http2_keepalive_timeout => {
                    tracing::debug!("keepalive PING unanswered, closing");
                    self.fail(Error::KeepaliveTimeout);
                    return;
                }
                Some(_) => {}
                None if quiet(self.last_read) >= limits.http2_keepalive_interval => {
                    frame::ping(&mut self.wbuf, &KEEPALIVE_PING);
                    self.ping_sent = Some(now);
                }
                None => {}
            }
        }
        if !limits.idle_timeout.is_zero()
            && self.streams.is_empty()
            && self.handling.is_empty()
            && quiet(self.last_busy) >= limits.idle_timeout
        {
            tracing::debug!("idle timeout");
            self.go_away(Reason::NO_ERROR);
        }
        if !limits.stream_idle_timeout.is_zero() {
            let expired: Vec<u32> = self
                .streams
                .iter()
                .filter(|(_, s)| quiet(s.seen) >= limits.stream_idle_timeout)
                .map(|(&id, _)| id)
                .collect();
            for id in expired {
                self.stream_timeout(id);
            }
        }
    }

    /// A stream on which nothing happened for the stream idle timeout: answered 408 when nothing of its
    /// answer has gone yet (as Envoy does), reset otherwise; its handler is dropped either way.
    fn stream_timeout(&mut self, id: u32) {
        let Some(s) = self.streams.remove(&id) else {
            return;
        };
        tracing::debug!(stream = id, "stream idle timeout");
        if matches!(s.send, Send::Waiting) {
            frame::headers(&mut self.wbuf, id, true, self.peer_max_frame, |dst| {
                hpack::encode_status(http::StatusCode::REQUEST_TIMEOUT, dst)
            });
            if s.recv_open {
                frame::rst_stream(&mut self.wbuf, id, Reason::NO_ERROR);
            }
        } else {
            frame::rst_stream(&mut self.wbuf, id, Reason::CANCEL);
        }
        self.forget(s, Reason::CANCEL);
    }

    /// Sends GOAWAY: the streams opened so far are served, later ones ignored.
    fn go_away(&mut self, reason: Reason) {
        if !self.going_away {
            self.going_away = true;
            frame::goaway(&mut self.wbuf, self.last_stream, reason);
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        super::poll_write_all(&mut self.io, &mut self.wbuf, cx)
    }

    /// Reads once and handles the whole frames read.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let n = std::task::ready!(super::poll_read_into(&mut self.io, &mut self.rbuf, cx))?;
        if n == 0 {
            self.read_closed = true;
            // The client sends nothing more: a request whose body has not all come never will. Its
            // handler is dropped and its body fails, which cancels its upstream stream; left waiting, the
            // abandoned uploads of one client held the shared upstream connection's streams until
            // HTTP/2 to the application stopped. Requests already whole are still answered.
            let waiting: Vec<u32> = self
                .streams
                .iter()
                .filter(|(_, s)| s.recv_open)
                .map(|(&id, _)| id)
                .collect();
            for id in waiting {
                if let Some(s) = self.streams.remove(&id) {
                    self.forget(s, Reason::CANCEL);
                }
            }
            if !self.preface_seen || self.continuation.is_some() {
                return Poll::Ready(broke(Reason::PROTOCOL_ERROR, "closed inside a frame"));
            }
            return Poll::Ready(Ok(()));
        }
        self.last_read = self.ticks;
        Poll::Ready(self.frames())
    }

    /// Handles every whole frame in the read buffer.
    fn frames(&mut self) -> Result<(), Error> {
        if !self.preface_seen {
            let have = self.rbuf.len().min(frame::PREFACE.len());
            if self.rbuf[..have] != frame::PREFACE[..have] {
                return broke(Reason::PROTOCOL_ERROR, "not the HTTP/2 connection preface");
            }
            if have < frame::PREFACE.len() {
                return Ok(());
            }
            self.rbuf.advance(frame::PREFACE.len());
            self.preface_seen = true;
        }
        while self.failed.is_none() {
            let continuing = self.continuation.as_ref().map(|p| p.stream);
            let Some(head) = frame::next_head(&self.rbuf, self.settings_seen, continuing)? else {
                break;
            };
            match head.kind {
                frame::DATA | frame::HEADERS | frame::CONTINUATION => {
                    let mut whole = self.rbuf.split_to(frame::HEAD_LEN + head.len);
                    whole.advance(frame::HEAD_LEN);
                    match head.kind {
                        frame::DATA => self.data(head, whole.freeze())?,
                        frame::HEADERS => self.headers(head, whole.freeze())?,
                        _ => self.continuation(head, &whole)?,
                    }
                }
                _ => {
                    let whole = self.rbuf.split_to(frame::HEAD_LEN + head.len);
                    self.control(head, &whole[frame::HEAD_LEN..])?;
                }
            }
        }
        if self.rbuf.is_empty() {
            // Rewound to its start, with no allocation, when nothing else holds a part of it.
            self.rbuf.clear();
        }
        Ok(())
    }

    fn control(&mut self, head: Head, payload: &[u8]) -> Result<(), Error> {
        match head.kind {
            frame::SETTINGS => self.settings(head, payload),
            frame::PING => {
                if head.stream != 0 {
                    return broke(Reason::PROTOCOL_ERROR, "PING on a stream");
                }
                if head.len != 8 {
                    return broke(Reason::FRAME_SIZE_ERROR, "PING not 8 bytes long");
                }
                if head.has(frame::ACK) {
                    if payload == KEEPALIVE_PING {
                        self.ping_sent = None;
                    }
                } else {
                    self.guard.control()?;
                    self.guard.queued_control()?;
                    frame::ping_ack(&mut self.wbuf, payload);
                }
                Ok(())
            }
            frame::WINDOW_UPDATE => {
                self.guard.window_update()?;
                self.window_update(head, payload)
            }
            frame::RST_STREAM => {
                if head.len != 4 {
                    return broke(Reason::FRAME_SIZE_ERROR, "RST_STREAM not 4 bytes long");
                }
                if head.stream == 0 {
                    return broke(Reason::PROTOCOL_ERROR, "RST_STREAM on stream 0");
                }
                if self.is_idle(head.stream) {
                    return broke(Reason::PROTOCOL_ERROR, "RST_STREAM on an idle stream");
                }
                let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                if let Some(s) = self.streams.remove(&head.stream) {
                    let premature = matches!(s.send, Send::Waiting);
                    self.forget(s, Reason(code));
                    // Streams opened and reset at once cost the proxy a routed request each while never
                    // counting against the concurrency limit ("rapid reset", CVE-2023-44487): a client
                    // that resets most of its recent streams before their answer is cut off.
                    if premature {
                        self.guard.unanswered()?;
                    }
                }
                Ok(())
            }
            frame::PRIORITY => {
                if head.stream == 0 {
                    return broke(Reason::PROTOCOL_ERROR, "PRIORITY on stream 0");
                }
                self.guard.priority()?;
                if head.len != 5 {
                    return self.refuse(head.stream, Reason::FRAME_SIZE_ERROR);
                }
                if dependency(payload) == head.stream {
                    // A stream error (RFC 9113 5.3.1), but a server may not reset an idle stream: on
                    // one, the connection's error (5.4.1 allows it), as the `h2` crate and nghttp2 do.
                    if head.stream > self.last_stream {
                        return broke(Reason::PROTOCOL_ERROR, "an idle stream depends on itself");
                    }
                    return self.refuse(head.stream, Reason::PROTOCOL_ERROR);
                }
                Ok(())
            }
            frame::GOAWAY => {
                if head.stream != 0 {
                    return broke(Reason::PROTOCOL_ERROR, "GOAWAY on a stream");
                }
                // The client starts no more streams; those open are finished.
                self.going_away = true;
                Ok(())
            }
            frame::PUSH_PROMISE => broke(Reason::PROTOCOL_ERROR, "PUSH_PROMISE from a client"),
            // Unknown types are ignored (RFC 9113 4.1).
            _ => Ok(()),
        }
    }

    fn settings(&mut self, head: Head, payload: &[u8]) -> Result<(), Error> {
        let Some(settings) = frame::settings_in(&head, payload)? else {
            return Ok(());
        };
        self.guard.control()?;
        self.settings_seen = true;
        for setting in settings {
            match setting? {
                Setting::EnablePush(0 | 1) => {}
                Setting::EnablePush(_) => {
                    return broke(Reason::PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH not 0 or 1");
                }
                Setting::InitialWindowSize(value) => {
                    // Applies to the open streams too (RFC 9113 6.9.2).
                    let delta = value - self.peer_initial_window;
                    self.peer_initial_window = value;
                    for s in self.streams.values_mut() {
                        s.send_window += delta;
                        if s.send_window > frame::MAX_WINDOW {
                            return broke(
                                Reason::FLOW_CONTROL_ERROR,
                                "a stream window above 2^31-1",
                            );
                        }
                    }
                }
                Setting::MaxFrameSize(n) => self.peer_max_frame = n,
                // The encoder never indexes, so the client's table size does not matter; a server
                // does not push, so neither does the client's stream limit; the rest are unknown.
                Setting::MaxConcurrentStreams(_) | Setting::Other => {}
            }
        }
        self.guard.queued_control()?;
        frame::settings_ack(&mut self.wbuf);
        Ok(())
    }

    fn window_update(&mut self, head: Head, payload: &[u8]) -> Result<(), Error> {
        let inc = frame::window_increment(&head, payload)?;
        if head.stream == 0 {
            self.send_window += inc;
            if self.send_window > frame::MAX_WINDOW {
                return broke(
                    Reason::FLOW_CONTROL_ERROR,
                    "the connection window above 2^31-1",
                );
            }
            return Ok(());
        }
        if self.is_idle(head.stream) {
            return broke(Reason::PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream");
        }
        let Some(s) = self.streams.get_mut(&head.stream) else {
            // Closed: frames may still be on their way (RFC 9113 6.9).
            return Ok(());
        };
        s.seen = self.ticks;
        if inc == 0 {
            // A reset the client makes the server make ("MadeYouReset"): counted as the client's.
            return self.refuse(head.stream, Reason::PROTOCOL_ERROR);
        }
        s.send_window += inc;
        if s.send_window > frame::MAX_WINDOW {
            return self.refuse(head.stream, Reason::FLOW_CONTROL_ERROR);
        }
        Ok(())
    }

    fn data(&mut self, head: Head, payload: Bytes) -> Result<(), Error> {
        if head.stream == 0 {
            return broke(Reason::PROTOCOL_ERROR, "DATA on stream 0");
        }
        if self.is_idle(head.stream) {
            return broke(Reason::PROTOCOL_ERROR, "DATA on an idle stream");
        }
        let data = frame::unpad(&head, payload)?;
        let end = head.has(frame::END_STREAM);
        self.guard.payload(data.is_empty() && !end)?;
        if !end {
            self.guard.data(data.len())?;
        }
        // The whole frame counts against the windows, padding too.
        let flow = head.len;
        self.recv_window -= flow as i64;
        if self.recv_window < 0 {
            return broke(
                Reason::FLOW_CONTROL_ERROR,
                "DATA beyond the connection window",
            );
        }
        let padding = flow - data.len();
        let id = head.stream;
        let Some(s) = self.streams.get_mut(&id) else {
            self.unreleased(flow);
            return self.reset_closed(id);
        };
        s.seen = self.ticks;
        if !s.recv_open {
            self.unreleased(flow);
            return self.refuse(id, Reason::STREAM_CLOSED);
        }
        s.recv_window -= flow as i64;
        if s.recv_window < 0 {
            self.unreleased(flow);
            return self.refuse(id, Reason::FLOW_CONTROL_ERROR);
        }
        s.received += data.len() as u64;
        if s.length
            .is_some_and(|n| s.received > n || (end && s.received != n))
        {
            self.unreleased(flow);
            return self.refuse(id, Reason::PROTOCOL_ERROR);
        }
        if end {
            s.recv_open = false;
        }
        let len = data.len();
        {
            let mut recv = s.shared.recv();
            if len > 0 {
                recv.data.push(data);
            }
            recv.end |= end;
            if let Some(w) = recv.waker.take() {
                drop(recv);
                w.wake();
            }
        }
        if padding > 0 {
            // Never handed on, so given back at once.
            self.unreleased(padding);
            if let Some(s) = self.streams.get_mut(&id) {
                s.shared.recv().released += padding;
            }
        }
        if end {
            self.close_if_done(id);
        }
        Ok(())
    }

    fn headers(&mut self, head: Head, payload: Bytes) -> Result<(), Error> {
        if head.stream == 0 {
            return broke(Reason::PROTOCOL_ERROR, "HEADERS on stream 0");
        }
        let mut block = frame::unpad(&head, payload)?;
        if head.has(frame::PRIORITY_FLAG) {
            if block.len() < 5 {
                return broke(
                    Reason::FRAME_SIZE_ERROR,
                    "HEADERS too short for its priority",
                );
            }
            let dep = dependency(&block[..5]);
            block.advance(5);
            if dep == head.stream {
                // Decoded all the same, to keep the table in step.
                self.decoder
                    .decode(&block, |_, _| {})
                    .map_err(|_| compression())?;
                self.close_idle(head.stream);
                return self.refuse(head.stream, Reason::PROTOCOL_ERROR);
            }
        }
        let end_stream = head.has(frame::END_STREAM);
        let end_headers = head.has(frame::END_HEADERS);
        self.guard
            .payload(block.is_empty() && !end_headers && !end_stream)?;
        if end_headers {
            return self.header_block(head.stream, end_stream, block);
        }
        self.continuations = 0;
        let mut b = BytesMut::with_capacity(block.len() * 2);
        b.extend_from_slice(&block);
        self.continuation = Some(Partial {
            stream: head.stream,
            end_stream,
            block: b,
        });
        Ok(())
    }

    fn continuation(&mut self, head: Head, payload: &[u8]) -> Result<(), Error> {
        let Some(p) = &mut self.continuation else {
            return broke(Reason::PROTOCOL_ERROR, "CONTINUATION without HEADERS");
        };
        if p.block.len() + payload.len() > MAX_HEADER_BLOCK {
            return broke(Reason::ENHANCE_YOUR_CALM, "a header block over 64 KiB");
        }
        // A flood of CONTINUATION frames (CVE-2024-27316, CVE-2024-28182): empty ones end the
        // connection at the second in a row, and a block takes a bounded number of them.
        let end_headers = head.has(frame::END_HEADERS);
        self.guard.payload(payload.is_empty() && !end_headers)?;
        self.continuations += 1;
        if self.continuations > MAX_CONTINUATIONS {
            return broke(
                Reason::ENHANCE_YOUR_CALM,
                "a header block in too many CONTINUATION frames",
            );
        }
        p.block.extend_from_slice(payload);
        if !end_headers {
            return Ok(());
        }
        let Some(p) = self.continuation.take() else {
            return Ok(());
        };
        self.header_block(p.stream, p.end_stream, p.block.freeze())
    }

    /// A whole header block: a request, or a request's trailers.
    fn header_block(&mut self, id: u32, end_stream: bool, block: Bytes) -> Result<(), Error> {
        if let Some(s) = self.streams.get_mut(&id) {
            // Trailers.
            let mut fields = Fields::new(true);
            self.decoder
                .decode(&block, |name, value| fields.field(name, value))
                .map_err(|_| compression())?;
            s.seen = self.ticks;
            if !s.recv_open {
                return self.refuse(id, Reason::STREAM_CLOSED);
            }
            if !end_stream || fields.malformed.is_some() {
                return self.refuse(id, Reason::PROTOCOL_ERROR);
            }
            if s.length.is_some_and(|n| s.received != n) {
                return self.refuse(id, Reason::PROTOCOL_ERROR);
            }
            s.recv_open = false;
            {
                let mut recv = s.shared.recv();
                recv.trailers = Some(fields.headers);
                recv.end = true;
                if let Some(w) = recv.waker.take() {
                    drop(recv);
                    w.wake();
                }
            }
            self.close_if_done(id);
            return Ok(());
        }
        if id.is_multiple_of(2) {
            return broke(Reason::PROTOCOL_ERROR, "a client stream with an even id");
        }
        if id <= self.last_stream {
            return broke(Reason::PROTOCOL_ERROR, "HEADERS on a closed stream");
        }
        let mut fields = Fields::new(false);
        self.decoder
            .decode(&block, |name, value| fields.field(name, value))
            .map_err(|_| compression())?;
        if self.going_away {
            // After GOAWAY: ignored (the client knows from the GOAWAY's last id that it was not served).
            return Ok(());
        }
        self.last_stream = id;
        // A stream that never reaches the handler is judged with those reset before their answer: a
        // client cannot keep its share of resets low with refused or malformed streams between them.
        if self.streams.len() >= self.limits.http2_max_concurrent_streams as usize {
            self.guard.queued_control()?;
            frame::rst_stream(&mut self.wbuf, id, Reason::REFUSED_STREAM);
            self.guard.unanswered()?;
            return Ok(());
        }
        if fields.too_large {
            // Answered rather than reset, as the client can do something about it.
            frame::headers(&mut self.wbuf, id, true, self.peer_max_frame, |dst| {
                hpack::encode_status(http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, dst)
            });
            if !end_stream {
                frame::rst_stream(&mut self.wbuf, id, Reason::NO_ERROR);
            }
            self.guard.unanswered()?;
            return Ok(());
        }
        let request = match fields.request() {
            Ok(r) => r,
            Err(why) => {
                tracing::debug!(stream = id, why, "malformed request");
                return self.refuse_new(id);
            }
        };
        let length = match content_length(request.headers()) {
            Ok(n) => n,
            Err(()) => return self.refuse_new(id),
        };
        if end_stream && length.is_some_and(|n| n != 0) {
            return self.refuse_new(id);
        }
        self.guard.opened();
        self.last_busy = self.ticks;
        let shared = Arc::new(Shared {
            reset: AtomicBool::new(false),
            handler: AtomicWaker::new(),
            recv: Mutex::new(Recv {
                end: end_stream,
                ..Recv::default()
            }),
            conn: self.shared.clone(),
        });
        let body = if end_stream {
            Body::empty()
        } else {
            Body::h2_request(RequestBody {
                shared: shared.clone(),
                length,
            })
        };
        let (parts, ()) = request.into_parts();
        let fut = (self.handler)(Request::from_parts(parts, body));
        self.streams.insert(
            id,
            Stream {
                shared: shared.clone(),
                recv_open: !end_stream,
                recv_window: i64::from(WINDOW),
                length,
                received: 0,
                send_window: self.peer_initial_window,
                send: Send::Waiting,
                seen: self.ticks,
            },
        );
        // Boxed: `push` moves the future three times on its way into its task, and a stream's future is a
        // request's (2 KB); the box is moved instead.
        self.handling.push(Box::pin(Handling { id, shared, fut }));
        Ok(())
    }

    /// Whether `id` names a stream the client has not opened yet.
    fn is_idle(&self, id: u32) -> bool {
        id > self.last_stream && self.continuation.as_ref().is_none_or(|p| p.stream != id)
    }

    /// Resets a stream: RST_STREAM, and its handler and body are told.
    fn reset(&mut self, id: u32, reason: Reason) {
        frame::rst_stream(&mut self.wbuf, id, reason);
        if let Some(s) = self.streams.remove(&id) {
            self.forget(s, reason);
        }
    }

    /// A stream this server resets as its HEADERS arrive is closed from then on (RFC 9113 5.1): a
    /// later HEADERS on it is on a closed stream, not a new request.
    fn close_idle(&mut self, id: u32) {
        if id % 2 == 1 && id > self.last_stream && !self.streams.contains_key(&id) {
            self.last_stream = id;
        }
    }

    /// A frame on a stream that is closed: STREAM_CLOSED (RFC 9113 5.1), a reset the client caused.
    fn reset_closed(&mut self, id: u32) -> Result<(), Error> {
        self.guard.queued_control()?;
        frame::rst_stream(&mut self.wbuf, id, Reason::STREAM_CLOSED);
        self.guard.local_error_reset(false)?;
        Ok(())
    }

    /// Resets a stream for the client's error (a stream error of RFC 9113): counted, since each such
    /// reset can cancel a request the proxy already routed ("MadeYouReset", CVE-2025-8671).
    fn refuse(&mut self, id: u32, reason: Reason) -> Result<(), Error> {
        let unanswered = self
            .streams
            .get(&id)
            .is_some_and(|s| matches!(s.send, Send::Waiting));
        self.guard.queued_control()?;
        self.reset(id, reason);
        self.guard.local_error_reset(unanswered)?;
        Ok(())
    }

    /// Resets a new stream whose request is malformed (RFC 9113 8.1.1).
    fn refuse_new(&mut self, id: u32) -> Result<(), Error> {
        self.guard.queued_control()?;
        frame::rst_stream(&mut self.wbuf, id, Reason::PROTOCOL_ERROR);
        self.guard.local_error_reset(true)?;
        Ok(())
    }

    /// A stream is gone: its handler is dropped and its body fails; what it received and never handed on
    /// is given back to the connection's window.
    fn forget(&mut self, s: Stream, reason: Reason) {
        let queued: usize = {
            let mut recv = s.shared.recv();
            recv.data.clear()
        };
        s.shared.reset(reason);
        self.unreleased(queued);
    }

    /// Bytes of the connection's window to give back (received, not to be handed on).
    fn unreleased(&mut self, n: usize) {
        self.conn_unreleased += n;
        self.window_updates();
    }

    /// Gives the bytes that bodies handed on back to the windows, half a window at a time.
    fn give_back(&mut self) {
        let n = self.shared.released.swap(0, Ordering::AcqRel);
        self.conn_unreleased += n;
        for (&id, s) in self.streams.iter_mut() {
            if !s.recv_open {
                continue;
            }
            let mut recv = s.shared.recv();
            if recv.released >= WINDOW as usize / 2 {
                let inc = std::mem::take(&mut recv.released);
                drop(recv);
                s.recv_window += inc as i64;
                frame::window_update(&mut self.wbuf, id, inc as u32);
            }
        }
        self.window_updates();
    }

    fn window_updates(&mut self) {
        if self.conn_unreleased >= WINDOW as usize / 2 {
            let inc = std::mem::take(&mut self.conn_unreleased);
            self.recv_window += inc as i64;
            frame::window_update(&mut self.wbuf, 0, inc as u32);
        }
    }

    /// Closes a stream that both sides have ended.
    fn close_if_done(&mut self, id: u32) {
        if let Some(s) = self.streams.get(&id) {
            if !s.recv_open && matches!(s.send, Send::Done) {
                self.streams.remove(&id);
            }
        }
    }

    /// A handler's response: its head is written, and its body sent as the windows allow.
    fn respond(&mut self, id: u32, resp: Response<Body>, cx: &mut Context<'_>) {
        if !self.streams.contains_key(&id) {
            return;
        }
        let (mut parts, body) = resp.into_parts();
        // As hyper's server did (and Envoy does): a date when the response has none, and the length of a
        // body whose size is known.
        if !parts.headers.contains_key(header::DATE) {
            parts.headers.insert(header::DATE, date::header_value());
        }
        if let Some(n) = body.size_hint().exact() {
            if !parts.headers.contains_key(header::CONTENT_LENGTH) {
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            }
        }
        let end = body.is_end_stream();
        write_head(
            &mut self.wbuf,
            id,
            end,
            self.peer_max_frame,
            |dst| hpack::encode_status(parts.status, dst),
            &parts.headers,
        );
        h1::codec::recycle(parts.headers);
        self.guard.answered();
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        s.seen = self.ticks;
        if end {
            s.send = Send::Done;
            self.finish(id);
            return;
        }
        s.send = Send::Body(Box::new(Sending {
            body,
            pending: Bytes::new(),
            end_after_pending: false,
        }));
        self.sending.push(id);
        self.send_body(id, cx);
    }

    /// Our side ended: the stream closes, or, when the client is still sending, it is told to stop
    /// (RST_STREAM with NO_ERROR, RFC 9113 8.1).
    fn finish(&mut self, id: u32) {
        let Some(s) = self.streams.get(&id) else {
            return;
        };
        if s.recv_open {
            self.reset(id, Reason::NO_ERROR);
        } else {
            self.streams.remove(&id);
        }
    }

    fn poll_bodies(&mut self, cx: &mut Context<'_>) {
        let mut i = 0;
        while i < self.sending.len() {
            let id = self.sending[i];
            if self.send_body(id, cx) {
                self.sending.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Sends what the windows allow of a stream's body; true once it is done with (sent, or the stream
    /// gone).
    fn send_body(&mut self, id: u32, cx: &mut Context<'_>) -> bool {
        loop {
            let Some(s) = self.streams.get_mut(&id) else {
                return true;
            };
            let Send::Body(sending) = &mut s.send else {
                return true;
            };
            if !sending.pending.is_empty() {
                let room = s
                    .send_window
                    .min(self.send_window)
                    .min(self.peer_max_frame as i64);
                if room <= 0 {
                    return false;
                }
                let n = (room as usize).min(sending.pending.len());
                let chunk = sending.pending.split_to(n);
                let end = sending.end_after_pending && sending.pending.is_empty();
                frame::data(&mut self.wbuf, id, &chunk, end);
                s.send_window -= n as i64;
                s.seen = self.ticks;
                self.send_window -= n as i64;
                self.guard.data_sent();
                if end {
                    s.send = Send::Done;
                    self.finish(id);
                    return true;
                }
                continue;
            }
            if sending.end_after_pending {
                frame::data(&mut self.wbuf, id, &[], true);
                s.send = Send::Done;
                self.finish(id);
                return true;
            }
            if self.wbuf.len() >= WRITE_HIGH {
                return false;
            }
            match Pin::new(&mut sending.body).poll_frame(cx) {
                Poll::Pending => return false,
                Poll::Ready(None) => sending.end_after_pending = true,
                Poll::Ready(Some(Ok(f))) => match f.into_data() {
                    Ok(data) => {
                        sending.end_after_pending = sending.body.is_end_stream();
                        sending.pending = data;
                    }
                    Err(f) => {
                        if let Ok(trailers) = f.into_trailers() {
                            write_head(
                                &mut self.wbuf,
                                id,
                                true,
                                self.peer_max_frame,
                                |_| {},
                                &trailers,
                            );
                            s.send = Send::Done;
                            self.finish(id);
                            return true;
                        }
                    }
                },
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!(stream = id, error = %e, "response body not sent whole");
                    self.reset(id, Reason::INTERNAL_ERROR);
                    return true;
                }
            }
        }
    }
}

impl<T, H, F> Drop for Conn<T, H, F> {
    fn drop(&mut self) {
        // Bodies still held elsewhere (a request body being sent upstream) fail rather than wait forever.
        for (_, s) in self.streams.drain() {
            s.shared.reset(Reason::CANCEL);
        }
        h1::codec::give_back(std::mem::take(&mut self.rbuf));
    }
}

fn compression() -> Error {
    Error::Protocol {
        reason: Reason::COMPRESSION_ERROR,
        why: "a header block HPACK cannot decode",
    }
}

/// The stream a PRIORITY payload (or a HEADERS frame's priority part) depends on.
fn dependency(p: &[u8]) -> u32 {
    match p {
        [a, b, c, d, ..] => u32::from_be_bytes([*a, *b, *c, *d]) & 0x7fff_ffff,
        _ => 0,
    }
}

/// A DATA or HEADERS payload without its padding.
/// Writes a response head or trailers: `pseudo` writes the pseudo-header fields, then the regular ones
/// follow, less those that HTTP/2 forbids (RFC 9113 8.2.2), which are dropped as Envoy drops them.
fn write_head(
    wbuf: &mut BytesMut,
    id: u32,
    end: bool,
    max_frame: usize,
    pseudo: impl FnOnce(&mut BytesMut),
    headers: &HeaderMap,
) {
    frame::headers(wbuf, id, end, max_frame, |dst| {
        pseudo(dst);
        for (name, value) in headers {
            if !is_connection_specific(name) {
                hpack::encode_field(name, value, dst);
            }
        }
    });
}

fn is_connection_specific(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == "keep-alive"
        || name == "proxy-connection"
}

/// `content-length`, when there is one; `Err` when it is not a number or several disagree.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    let mut length = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        let n = std::str::from_utf8(v.as_bytes())
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(())?;
        if length.is_some_and(|l| l != n) {
            return Err(());
        }
        length = Some(n);
    }
    Ok(length)
}

/// A header block's fields as they are decoded, checked as RFC 9113 8.2 and 8.3 ask.
struct Fields {
    trailers: bool,
    method: Option<Bytes>,
    scheme: Option<Bytes>,
    authority: Option<Bytes>,
    path: Option<Bytes>,
    headers: HeaderMap,
    regular_seen: bool,
    /// `host` fields: how many, and the first one's value.
    hosts: u8,
    host: Option<Bytes>,
    size: usize,
    too_large: bool,
    malformed: Option<&'static str>,
}

impl Fields {
    fn new(trailers: bool) -> Fields {
        Fields {
            trailers,
            method: None,
            scheme: None,
            authority: None,
            path: None,
            headers: h1::codec::header_map(16),
            regular_seen: false,
            hosts: 0,
            host: None,
            size: 0,
            too_large: false,
            malformed: None,
        }
    }

    fn field(&mut self, name: Name, value: Bytes) {
        let slot = match name {
            Name::Header(name) => {
                self.regular_seen = true;
                self.size += name.as_str().len() + value.len() + 32;
                if self.size > MAX_HEADER_LIST_SIZE {
                    self.too_large = true;
                    return;
                }
                if is_connection_specific(&name)
                    || (name == header::TE && value.as_ref() != b"trailers")
                {
                    self.malformed = Some("a connection-specific field");
                    return;
                }
                if name == header::HOST {
                    self.hosts = self.hosts.saturating_add(1);
                    self.host.get_or_insert_with(|| value.clone());
                }
                match super::field_value(value) {
                    Some(v) => {
                        self.headers.append(name, v);
                    }
                    None => self.malformed = Some("a field value with a forbidden byte"),
                }
                return;
            }
            Name::Malformed => {
                self.malformed = Some("a field name not allowed in HTTP/2");
                return;
            }
            Name::Status => {
                self.malformed = Some(":status in a request");
                return;
            }
            Name::Protocol => {
                // Extended CONNECT is not offered (no SETTINGS_ENABLE_CONNECT_PROTOCOL).
                self.malformed = Some(":protocol without extended CONNECT");
                return;
            }
            Name::Method => &mut self.method,
            Name::Scheme => &mut self.scheme,
            Name::Authority => &mut self.authority,
            Name::Path => &mut self.path,
        };
        self.size += value.len() + 32 + 8;
        if self.trailers {
            self.malformed = Some("a pseudo-header field in trailers");
        } else if self.regular_seen {
            self.malformed = Some("a pseudo-header field after a regular one");
        } else if slot.is_some() {
            self.malformed = Some("a pseudo-header field twice");
        } else {
            *slot = Some(value);
        }
    }

    /// The request the fields make (a body comes later).
    fn request(mut self) -> Result<Request<()>, &'static str> {
        if let Some(why) = self.malformed {
            return Err(why);
        }
        let method = self.method.take().ok_or("no :method")?;
        let method = Method::from_bytes(&method).map_err(|_| "a malformed :method")?;
        let mut uri = http::uri::Parts::default();
        if let Some(a) = self.authority.take() {
            uri.authority =
                Some(Authority::from_maybe_shared(a).map_err(|_| "a malformed :authority")?);
        }
        if method == Method::CONNECT {
            if uri.authority.is_none() || self.scheme.is_some() || self.path.is_some() {
                return Err("CONNECT without :authority, or with :scheme or :path");
            }
        } else {
            let scheme = self.scheme.take().ok_or("no :scheme")?;
            let path = self.path.take().ok_or("no :path")?;
            if path.is_empty() {
                return Err("an empty :path");
            }
            if uri.authority.is_some() {
                uri.scheme = Some(match &scheme[..] {
                    b"http" => Scheme::HTTP,
                    b"https" => Scheme::HTTPS,
                    other => Scheme::try_from(other).map_err(|_| "a malformed :scheme")?,
                });
            }
            uri.path_and_query =
                Some(PathAndQuery::from_maybe_shared(path).map_err(|_| "a malformed :path")?);
        }
        // A request names one authority: two `host` fields, or one that differs from `:authority`, could
        // be routed as one service and read by the application as another (RFC 9113, 8.3.1).
        if self.hosts > 1 {
            return Err("several host fields");
        }
        if let (Some(host), Some(authority)) = (&self.host, &uri.authority) {
            let scheme = uri.scheme.as_ref().map_or("http", |s| s.as_str());
            if !same_authority(host, authority.as_str().as_bytes(), scheme) {
                return Err("a host field that differs from :authority");
            }
        }
        let uri = Uri::from_parts(uri).map_err(|_| "a malformed request target")?;
        let mut req = Request::new(());
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_2;
        *req.headers_mut() = std::mem::take(&mut self.headers);
        Ok(req)
    }
}

/// Whether two authorities name the same host and port, as RFC 3986 (6.2.2, 6.2.3) compares them: the
/// host in any case, and a port that is the scheme's default the same as none.
fn same_authority(a: &[u8], b: &[u8], scheme: &str) -> bool {
    let default = match scheme {
        "https" => &b":443"[..],
        _ => b":80",
    };
    let trim = |x: &'_ [u8]| -> usize {
        if x.len() > default.len() && x.ends_with(default) {
            x.len() - default.len()
        } else {
            x.len()
        }
    };
    let (a, b) = (&a[..trim(a)], &b[..trim(b)]);
    a.eq_ignore_ascii_case(b)
}

#[cfg(test)]
mod tests {
    use super::same_authority;

    #[test]
    fn authorities_compare_as_rfc_3986_normalizes_them() {
        let cases: &[(&str, &str, &str, bool)] = &[
            ("reviews:9080", "reviews:9080", "http", true),
            ("Reviews:9080", "reviews:9080", "http", true),
            ("reviews", "reviews:80", "http", true),
            ("reviews:443", "reviews", "https", true),
            ("[::1]:80", "[::1]", "http", true),
            ("reviews:443", "reviews", "http", false),
            ("ratings:9080", "reviews:9080", "http", false),
            ("reviews:9080", "reviews:908", "http", false),
            ("reviews", "reviews:9080", "http", false),
            ("", "reviews", "http", false),
        ];
        for (a, b, scheme, want) in cases {
            assert_eq!(
                same_authority(a.as_bytes(), b.as_bytes(), scheme),
                *want,
                "{a} vs {b} ({scheme})"
            );
            assert_eq!(
                same_authority(b.as_bytes(), a.as_bytes(), scheme),
                *want,
                "{b} vs {a} ({scheme})"
            );
        }
    }
}
