//! The client side of HTTP/2 (RFC 9113), Weft's own: one connection per upstream endpoint, shared by every
//! request to it, from any task.
//!
//! A connection's state sits behind one lock, taken briefly: a request encodes its HEADERS straight into
//! the connection's write buffer and wakes the connection's task, which writes the buffer out and reads
//! frames, decoding response heads into the proxy's types and queueing DATA for the bodies. A response
//! future and a response body read their stream's part of the state under the same lock. On the `h2`
//! crate this was about 14,000 instructions per proxied request more (`bench/instructions`,
//! `WORKLOAD=http2-streams`): frames queued as enums through a stream store, header maps converted to its
//! own field type and back, and a copy of every value.
//!
//! Flow control both ways: a request body's next frame is read only while the upstream's windows have
//! room, and a response body's bytes go back to the upstream's windows as the caller reads them (half a
//! window at a time).

use super::frame::{self, Head, Reason, Setting};
use super::hpack::{self, Name};
use crate::{h1, Body};
use bytes::{Buf, Bytes, BytesMut};
use futures::task::AtomicWaker;
use http::{header, HeaderMap, HeaderName, Request, Response, StatusCode, Version};
use http_body::{Body as _, Frame, SizeHint};
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite};

/// The window this side gives each stream, and the connection (hyper's client defaults, kept).
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONN_WINDOW: u32 = 5 * 1024 * 1024;
const MAX_HEADER_LIST_SIZE: usize = 16 * 1024;
const MAX_HEADER_BLOCK: usize = 64 * 1024;
const HEADER_TABLE_SIZE: usize = 4096;
/// Written bytes queued before request bodies wait for the connection's task to write them.
const WRITE_HIGH: usize = 256 * 1024;
const READS_PER_ROUND: usize = 16;

/// Why a request on an HTTP/2 connection failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("upstream connection I/O failed: {0}")]
    Io(Arc<std::io::Error>),
    #[error("the upstream broke HTTP/2 ({reason}): {why}")]
    Protocol { reason: Reason, why: &'static str },
    #[error("the upstream closed the connection with {0}")]
    GoAway(Reason),
    #[error("the upstream reset the stream ({0})")]
    Reset(Reason),
    /// The connection is closed, or closing (GOAWAY), and never saw this request: safe to send again.
    #[error("the connection closed before the request was sent")]
    NotSent,
    /// The upstream said (GOAWAY) that it did not process the request: safe to send again.
    #[error("the upstream did not process the request (REFUSED_STREAM)")]
    Unprocessed,
    #[error("the upstream's response is malformed: {0}")]
    Malformed(&'static str),
    #[error("the request body failed: {0}")]
    Body(String),
}

impl Error {
    /// Whether the upstream never processed the request, so that it may go again on another connection.
    pub fn is_unprocessed(&self) -> bool {
        matches!(
            self,
            Error::NotSent | Error::Unprocessed | Error::Reset(Reason::REFUSED_STREAM)
        )
    }
}

fn broke<T>(reason: Reason, why: &'static str) -> Result<T, Error> {
    Err(Error::Protocol { reason, why })
}

impl From<frame::Broke> for Error {
    fn from(frame::Broke(reason, why): frame::Broke) -> Error {
        Error::Protocol { reason, why }
    }
}

/// A handle on a connection, to open streams on it; cloned for every request. The connection closes
/// (GOAWAY, once its streams are done) when the last handle is dropped.
pub(crate) struct Connection {
    conn: Arc<Conn>,
}

impl Clone for Connection {
    fn clone(&self) -> Connection {
        self.conn.handles.fetch_add(1, Ordering::Relaxed);
        Connection {
            conn: self.conn.clone(),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.conn.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.conn.driver.wake();
        }
    }
}

/// What handles, streams and the connection's task share.
struct Conn {
    state: Mutex<State>,
    /// The connection's task.
    driver: AtomicWaker,
    handles: AtomicUsize,
}

impl Conn {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding it leaves state that is still consistent frame by frame.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct State {
    /// Frames to write, appended by requests and by the connection's task.
    wbuf: BytesMut,
    next_id: u32,
    streams: HashMap<u32, Stream, foldhash::fast::FixedState>,
    /// Streams open at the protocol level (counted against the upstream's limit).
    open: usize,
    max_concurrent: usize,
    /// Requests waiting for a stream below the limit.
    waiting: Vec<Waker>,
    /// Requests bodies waiting for the connection window.
    window_waiting: Vec<Waker>,
    peer_initial_window: i64,
    peer_max_frame: usize,
    send_window: i64,
    recv_window: i64,
    unreleased: usize,
    /// Set once no new stream may open: the connection failed, or the upstream sent GOAWAY.
    closed: Option<Error>,
    /// The upstream's GOAWAY: streams above this id were not processed.
    goaway_last: Option<u32>,
}

impl State {
    /// Frames written: the connection's task writes them.
    fn kick(&self, conn: &Conn) {
        if !self.wbuf.is_empty() {
            conn.driver.wake();
        }
    }

    /// A stream closed at the protocol level: one more may open.
    fn close_stream(&mut self, id: u32) {
        if let Some(s) = self.streams.get_mut(&id) {
            if s.open {
                s.open = false;
                self.one_closed();
            }
        }
    }

    fn one_closed(&mut self) {
        self.open -= 1;
        if let Some(w) = self.waiting.pop() {
            w.wake();
        }
    }

    /// Gives back the bytes the caller read, half a window at a time.
    fn release(&mut self, id: u32, n: usize) {
        self.unreleased += n;
        if self.unreleased >= CONN_WINDOW as usize / 2 {
            let inc = std::mem::take(&mut self.unreleased);
            self.recv_window += inc as i64;
            frame::window_update(&mut self.wbuf, 0, inc as u32);
        }
        if let Some(s) = self.streams.get_mut(&id) {
            s.released += n;
            if s.recv_open && s.released >= STREAM_WINDOW as usize / 2 {
                let inc = std::mem::take(&mut s.released);
                s.recv_window += inc as i64;
                frame::window_update(&mut self.wbuf, id, inc as u32);
            }
        }
    }
}

/// A stream's state.
struct Stream {
    /// Not yet closed at the protocol level.
    open: bool,
    /// The upstream has not ended its side.
    recv_open: bool,
    /// This side has not ended its side.
    send_open: bool,
    send_window: i64,
    recv_window: i64,
    released: usize,
    /// The response head, until the response future takes it.
    head: Option<Response<()>>,
    head_seen: bool,
    data: super::DataQueue,
    trailers: Option<HeaderMap>,
    error: Option<Error>,
    /// The response future or body waiting for more.
    recv_waker: Option<Waker>,
    /// The request body waiting for window.
    send_waker: Option<Waker>,
    length: Option<u64>,
    received: u64,
    /// The request was HEAD: no body, whatever the length says.
    head_request: bool,
}

impl Stream {
    fn wake_recv(&mut self) {
        if let Some(w) = self.recv_waker.take() {
            w.wake();
        }
    }

    fn wake_all(&mut self) {
        self.wake_recv();
        if let Some(w) = self.send_waker.take() {
            w.wake();
        }
    }

    fn fail(&mut self, e: Error) {
        if self.error.is_none() && (self.recv_open || self.head.is_none() && !self.head_seen) {
            self.error = Some(e);
        }
        self.recv_open = false;
        self.send_open = false;
        self.wake_all();
    }
}

fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// Starts HTTP/2 (prior knowledge) on `io`: the handle to send requests with, and the connection's task,
/// to be spawned.
pub(crate) fn handshake<T>(io: T) -> (Connection, impl Future<Output = Result<(), Error>>)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut wbuf = BytesMut::with_capacity(16 * 1024);
    wbuf.extend_from_slice(frame::PREFACE);
    frame::settings(
        &mut wbuf,
        &[
            (frame::SETTINGS_ENABLE_PUSH, 0),
            (frame::SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW),
            (
                frame::SETTINGS_MAX_HEADER_LIST_SIZE,
                MAX_HEADER_LIST_SIZE as u32,
            ),
        ],
    );
    frame::window_update(&mut wbuf, 0, CONN_WINDOW - frame::DEFAULT_WINDOW as u32);
    let conn = Arc::new(Conn {
        state: Mutex::new(State {
            wbuf,
            next_id: 1,
            streams: HashMap::default(),
            open: 0,
            // Unlimited until the upstream's SETTINGS say otherwise (RFC 9113 6.5.2).
            max_concurrent: usize::MAX,
            waiting: Vec::new(),
            window_waiting: Vec::new(),
            peer_initial_window: frame::DEFAULT_WINDOW,
            peer_max_frame: frame::DEFAULT_MAX_FRAME_SIZE,
            send_window: frame::DEFAULT_WINDOW,
            recv_window: i64::from(CONN_WINDOW),
            unreleased: 0,
            closed: None,
            goaway_last: None,
        }),
        driver: AtomicWaker::new(),
        handles: AtomicUsize::new(1),
    });
    let mut driver = Driver {
        io,
        conn: conn.clone(),
        rbuf: BytesMut::with_capacity(super::READ_ROOM),
        out: BytesMut::new(),
        decoder: hpack::Decoder::new(HEADER_TABLE_SIZE),
        settings_seen: false,
        continuation: None,
        last_seen: 0,
        read_closed: false,
        goaway_sent: false,
        failing: None,
    };
    let task = async move {
        let r = poll_fn(|cx| driver.poll(cx)).await;
        driver.shut(r.clone().err());
        r
    };
    (Connection { conn }, task)
}

impl Connection {
    /// Whether new requests can no longer go on this connection.
    pub(crate) fn is_closed(&self) -> bool {
        self.conn.lock().closed.is_some()
    }

    /// Ready when a stream may open (the upstream's SETTINGS_MAX_CONCURRENT_STREAMS), or with why none
    /// ever will.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let mut st = self.conn.lock();
        if let Some(e) = &st.closed {
            return Poll::Ready(Err(not_sent(e)));
        }
        if st.open < st.max_concurrent {
            return Poll::Ready(Ok(()));
        }
        st.waiting.push(cx.waker().clone());
        Poll::Pending
    }

    /// Sends `req` (absolute URI, version HTTP/2) on a new stream; the future it returns waits for the
    /// response head. The request body goes out alongside; what is left of it when the head arrives is
    /// sent on by a task of its own.
    ///
    /// The stream is opened here, before the future: the future then holds only what waiting needs, which
    /// keeps every proxied request's future small.
    #[allow(clippy::type_complexity)]
    ///
    /// `extra` is HPACK, already encoded, that goes after the request's fields: fields the caller adds to
    /// every request, encoded once. It must be literals that leave the dynamic table alone (as
    /// [`hpack::encode_field`] writes them), since the table's state at the point they land is not known.
    pub(crate) fn send(
        &self,
        req: Request<Body>,
        extra: &[u8],
    ) -> Result<ResponseFuture, Box<(Error, Request<Body>)>> {
        let end = req.body().is_end_stream();
        let mut st = self.conn.lock();
        if let Some(e) = &st.closed {
            let e = not_sent(e);
            drop(st);
            return Err(Box::new((e, req)));
        }
        if st.open >= st.max_concurrent || st.next_id > frame::MAX_WINDOW as u32 {
            drop(st);
            return Err(Box::new((Error::NotSent, req)));
        }
        let (parts, body) = req.into_parts();
        let id = st.next_id;
        st.next_id += 2;
        let max_frame = st.peer_max_frame;
        frame::headers(&mut st.wbuf, id, end, max_frame, |dst| {
            encode_request(&parts, dst);
            dst.extend_from_slice(extra);
        });
        let send_window = st.peer_initial_window;
        st.streams.insert(
            id,
            Stream {
                open: true,
                recv_open: true,
                send_open: !end,
                send_window,
                recv_window: i64::from(STREAM_WINDOW),
                released: 0,
                head: None,
                head_seen: false,
                data: super::DataQueue::default(),
                trailers: None,
                error: None,
                recv_waker: None,
                send_waker: None,
                length: None,
                received: 0,
                head_request: parts.method == http::Method::HEAD,
            },
        );
        st.open += 1;
        drop(st);
        h1::codec::recycle(parts.headers);
        self.conn.driver.wake();
        let handle = StreamRef {
            conn: self.conn.clone(),
            id,
        };
        // Boxed: a body and its stream held beside the response would make every request's future,
        // bodiless ones too, that much larger.
        let pipe = (!end).then(|| {
            Box::new(Pipe {
                stream: handle.clone_ref(),
                body,
                pending: Bytes::new(),
                end_after_pending: false,
            })
        });
        Ok(ResponseFuture {
            stream: Some(handle),
            pipe,
        })
    }
}

fn not_sent(e: &Error) -> Error {
    match e {
        Error::GoAway(Reason::NO_ERROR) | Error::NotSent | Error::Unprocessed => Error::NotSent,
        e => e.clone(),
    }
}

/// Writes a request's header block: the pseudo-header fields from the URI, then the regular fields less
/// those HTTP/2 forbids (RFC 9113 8.2.2), which are dropped, as Envoy drops them.
fn encode_request(parts: &http::request::Parts, dst: &mut BytesMut) {
    hpack::encode_pseudo(&Name::Method, parts.method.as_str().as_bytes(), dst);
    let scheme = parts.uri.scheme_str().unwrap_or("http");
    hpack::encode_pseudo(&Name::Scheme, scheme.as_bytes(), dst);
    if let Some(a) = parts.uri.authority() {
        hpack::encode_pseudo(&Name::Authority, a.as_str().as_bytes(), dst);
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    hpack::encode_pseudo(&Name::Path, path.as_bytes(), dst);
    for (name, value) in &parts.headers {
        if is_connection_specific(name) || (name == header::TE && value != "trailers") {
            continue;
        }
        hpack::encode_field(name, value, dst);
    }
}

fn is_connection_specific(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == "keep-alive"
        || name == "proxy-connection"
}

/// The right to a stream's state: the request's, then its response body's. Dropping it before the stream
/// ended resets the stream (CANCEL).
struct StreamRef {
    conn: Arc<Conn>,
    id: u32,
}

impl StreamRef {
    /// A second reference, for the request body's pipe, which never resets the stream by being dropped.
    fn clone_ref(&self) -> PipeRef {
        PipeRef {
            conn: self.conn.clone(),
            id: self.id,
        }
    }
}

impl Drop for StreamRef {
    fn drop(&mut self) {
        let mut st = self.conn.lock();
        let Some(mut s) = st.streams.remove(&self.id) else {
            return;
        };
        if s.open {
            frame::rst_stream(&mut st.wbuf, self.id, Reason::CANCEL);
            st.one_closed();
        }
        let unread = s.data.clear();
        if unread > 0 {
            st.release(self.id, unread);
        }
        s.wake_all();
        st.kick(&self.conn);
    }
}

struct PipeRef {
    conn: Arc<Conn>,
    id: u32,
}

/// Waits for a response head while the request body goes out.
pub(crate) struct ResponseFuture {
    stream: Option<StreamRef>,
    pipe: Option<Box<Pipe>>,
}

impl Future for ResponseFuture {
    type Output = Result<Response<Body>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(p) = &mut this.pipe {
            if let Poll::Ready(sent) = Pin::new(&mut **p).poll(cx) {
                if let Err(e) = sent {
                    // The stream is reset: the response reports it, if it has not come already.
                    tracing::debug!(error = %e, "request body not sent whole");
                }
                this.pipe = None;
            }
        }
        let Some(stream) = &this.stream else {
            return Poll::Ready(Err(Error::NotSent));
        };
        let head = {
            let mut st = stream.conn.lock();
            let Some(s) = st.streams.get_mut(&stream.id) else {
                return Poll::Ready(Err(Error::Reset(Reason::CANCEL)));
            };
            match s.head.take() {
                Some(head) => head,
                None => {
                    if let Some(e) = &s.error {
                        return Poll::Ready(Err(e.clone()));
                    }
                    register(&mut s.recv_waker, cx);
                    return Poll::Pending;
                }
            }
        };
        if let Some(p) = this.pipe.take() {
            // The rest of the body goes from a task of its own (a stream of gRPC messages, say).
            tokio::spawn(async move {
                if let Err(e) = p.await {
                    tracing::debug!(error = %e, "request body not sent whole");
                }
            });
        }
        let (parts, ()) = head.into_parts();
        let length = content_length(&parts.headers);
        let body = Body::h2_response(ResponseBody {
            stream: this.stream.take(),
            length,
        });
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .and_then(|v| v.parse().ok())
}

/// A response body received on a stream.
pub struct ResponseBody {
    stream: Option<StreamRef>,
    length: Option<u64>,
}

impl ResponseBody {
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let Some(stream) = &self.stream else {
            return Poll::Ready(None);
        };
        let mut st = stream.conn.lock();
        let Some(s) = st.streams.get_mut(&stream.id) else {
            return Poll::Ready(Some(Err(Error::Reset(Reason::CANCEL))));
        };
        if let Some(data) = s.data.pop() {
            let n = data.len();
            st.release(stream.id, n);
            st.kick(&stream.conn);
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(t) = s.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        if let Some(e) = &s.error {
            return Poll::Ready(Some(Err(e.clone())));
        }
        if !s.recv_open {
            drop(st);
            // Ended: the stream's state goes (no reset, as it is closed or only our side is open).
            self.stream = None;
            return Poll::Ready(None);
        }
        register(&mut s.recv_waker, cx);
        Poll::Pending
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        let Some(stream) = &self.stream else {
            return true;
        };
        let st = stream.conn.lock();
        st.streams.get(&stream.id).is_some_and(|s| {
            !s.recv_open && s.error.is_none() && s.data.is_empty() && s.trailers.is_none()
        })
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("stream", &self.stream.as_ref().map(|s| s.id))
            .field("length", &self.length)
            .finish()
    }
}

/// Sends a request body on its stream, each frame once the windows have room for it.
struct Pipe {
    stream: PipeRef,
    body: Body,
    pending: Bytes,
    end_after_pending: bool,
}

impl Future for Pipe {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let conn = &this.stream.conn;
        let id = this.stream.id;
        loop {
            if !this.pending.is_empty() || this.end_after_pending {
                let mut st = conn.lock();
                let st = &mut *st;
                let Some(s) = st.streams.get_mut(&id) else {
                    return Poll::Ready(Err(Error::Reset(Reason::CANCEL)));
                };
                if !s.send_open {
                    return Poll::Ready(match &s.error {
                        Some(e) => Err(e.clone()),
                        None => Ok(()),
                    });
                }
                if this.pending.is_empty() {
                    frame::data(&mut st.wbuf, id, &[], true);
                    s.send_open = false;
                    close_if_done(st, id);
                    st.kick(conn);
                    return Poll::Ready(Ok(()));
                }
                if st.wbuf.len() >= WRITE_HIGH {
                    // The connection's task wakes the waiting bodies once it has written.
                    st.window_waiting.push(cx.waker().clone());
                    return Poll::Pending;
                }
                let room = s
                    .send_window
                    .min(st.send_window)
                    .min(st.peer_max_frame as i64);
                if room <= 0 {
                    if s.send_window <= 0 {
                        register(&mut s.send_waker, cx);
                    } else {
                        st.window_waiting.push(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
                let n = (room as usize).min(this.pending.len());
                let chunk = this.pending.split_to(n);
                let end = this.end_after_pending && this.pending.is_empty();
                frame::data(&mut st.wbuf, id, &chunk, end);
                s.send_window -= n as i64;
                st.send_window -= n as i64;
                if end {
                    s.send_open = false;
                    close_if_done(st, id);
                }
                st.kick(conn);
                if end {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                None => this.end_after_pending = true,
                Some(Ok(f)) => match f.into_data() {
                    Ok(data) => {
                        this.end_after_pending = this.body.is_end_stream();
                        this.pending = data;
                    }
                    Err(f) => {
                        if let Ok(trailers) = f.into_trailers() {
                            let mut st = conn.lock();
                            let st = &mut *st;
                            let Some(s) = st.streams.get_mut(&id) else {
                                return Poll::Ready(Err(Error::Reset(Reason::CANCEL)));
                            };
                            if !s.send_open {
                                return Poll::Ready(Ok(()));
                            }
                            s.send_open = false;
                            let max_frame = st.peer_max_frame;
                            frame::headers(&mut st.wbuf, id, true, max_frame, |dst| {
                                for (name, value) in &trailers {
                                    hpack::encode_field(name, value, dst);
                                }
                            });
                            close_if_done(st, id);
                            st.kick(conn);
                            return Poll::Ready(Ok(()));
                        }
                    }
                },
                Some(Err(e)) => {
                    let mut st = conn.lock();
                    let st = &mut *st;
                    if let Some(s) = st.streams.get_mut(&id) {
                        if s.open {
                            s.fail(Error::Body(e.to_string()));
                            frame::rst_stream(&mut st.wbuf, id, Reason::CANCEL);
                            st.close_stream(id);
                            st.kick(conn);
                        }
                    }
                    return Poll::Ready(Err(Error::Body(e.to_string())));
                }
            }
        }
    }
}

/// Marks a stream closed at the protocol level once both sides have ended.
fn close_if_done(st: &mut State, id: u32) {
    let Some(s) = st.streams.get_mut(&id) else {
        return;
    };
    if !s.recv_open && !s.send_open {
        st.close_stream(id);
    }
}

/// A header block being received across CONTINUATION frames.
struct Partial {
    stream: u32,
    end_stream: bool,
    block: BytesMut,
}

/// The connection's task: writes what requests queued, reads and dispatches frames.
struct Driver<T> {
    io: T,
    conn: Arc<Conn>,
    rbuf: BytesMut,
    /// What is being written, swapped out of the shared buffer so the lock is not held while writing.
    out: BytesMut,
    decoder: hpack::Decoder,
    settings_seen: bool,
    continuation: Option<Partial>,
    /// The highest stream id the upstream has sent a frame for.
    last_seen: u32,
    read_closed: bool,
    goaway_sent: bool,
    /// A connection error, and its GOAWAY being written.
    failing: Option<Error>,
}

impl<T> Driver<T> {
    /// The connection is over: every stream still waiting fails, and no new one opens.
    fn shut(&mut self, e: Option<Error>) {
        let mut st = self.conn.lock();
        let e = e.unwrap_or(Error::NotSent);
        if st.closed.is_none() {
            st.closed = Some(e.clone());
        }
        let st = &mut *st;
        for s in st.streams.values_mut() {
            if s.open {
                s.open = false;
                st.open -= 1;
            }
            s.fail(e.clone());
        }
        for w in st.waiting.drain(..).chain(st.window_waiting.drain(..)) {
            w.wake();
        }
    }
}

impl<T> Drop for Driver<T> {
    fn drop(&mut self) {
        // Also when the task is dropped unfinished (the runtime shutting down): nothing waits forever.
        self.shut(None);
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Driver<T> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.conn.driver.register(cx.waker());
        if self.failing.is_some() {
            return self.poll_fail(cx);
        }
        let mut reads = 0;
        loop {
            let mut progress = false;
            // Write what requests and frames queued.
            if self.out.is_empty() {
                let mut st = self.conn.lock();
                if !st.wbuf.is_empty() {
                    std::mem::swap(&mut st.wbuf, &mut self.out);
                    // Bodies held back by a full buffer go on.
                    for w in st.window_waiting.drain(..) {
                        w.wake();
                    }
                }
                // No handle left: nothing new can open; the connection ends with its last stream.
                if self.conn.handles.load(Ordering::Acquire) == 0 && !self.goaway_sent {
                    self.goaway_sent = true;
                    if st.closed.is_none() {
                        st.closed = Some(Error::NotSent);
                    }
                    if self.out.is_empty() {
                        std::mem::swap(&mut st.wbuf, &mut self.out);
                    }
                    frame::goaway(&mut self.out, self.last_seen, Reason::NO_ERROR);
                }
                if st.closed.is_some() && st.streams.is_empty() && self.out.is_empty() {
                    return Poll::Ready(Ok(()));
                }
            }
            if !self.out.is_empty() {
                match self.poll_write(cx) {
                    Poll::Ready(Ok(())) => progress = true,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::Io(Arc::new(e)))),
                    Poll::Pending => {}
                }
            }
            if !self.read_closed && reads < READS_PER_ROUND {
                match self.poll_read(cx) {
                    Poll::Ready(Ok(())) => {
                        reads += 1;
                        progress = true;
                    }
                    Poll::Ready(Err(e @ Error::Protocol { .. })) => {
                        // The GOAWAY saying why goes out before the connection closes.
                        self.conn.lock().closed.get_or_insert_with(|| e.clone());
                        self.failing = Some(e);
                        return self.poll_fail(cx);
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            } else if self.read_closed {
                return Poll::Ready(Err(Error::Io(Arc::new(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ))));
            }
            if !progress {
                return Poll::Pending;
            }
            if reads >= READS_PER_ROUND {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
    }

    /// After a connection error: writes what is queued (the GOAWAY last), then ends with the error.
    fn poll_fail(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            if self.out.is_empty() {
                let mut st = self.conn.lock();
                std::mem::swap(&mut st.wbuf, &mut self.out);
                if self.out.is_empty() {
                    break;
                }
            }
            match self.poll_write(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => break,
                Poll::Pending => return Poll::Pending,
            }
        }
        let e = self.failing.take();
        Poll::Ready(Err(e.unwrap_or(Error::NotSent)))
    }

    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        super::poll_write_all(&mut self.io, &mut self.out, cx)
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let n = ready!(super::poll_read_into(&mut self.io, &mut self.rbuf, cx))
            .map_err(|e| Error::Io(Arc::new(e)))?;
        if n == 0 {
            self.read_closed = true;
            return Poll::Ready(Ok(()));
        }
        let conn = self.conn.clone();
        let mut st = conn.lock();
        let r = self.frames(&mut st);
        if let Err(Error::Protocol { reason, .. }) = &r {
            frame::goaway(&mut st.wbuf, self.last_seen, *reason);
            self.goaway_sent = true;
        }
        // What the frames wrote goes out in the next round of this task's loop.
        Poll::Ready(r)
    }

    fn frames(&mut self, st: &mut State) -> Result<(), Error> {
        loop {
            let continuing = self.continuation.as_ref().map(|p| p.stream);
            let Some(head) = frame::next_head(&self.rbuf, self.settings_seen, continuing)? else {
                break;
            };
            let mut whole = self.rbuf.split_to(frame::HEAD_LEN + head.len);
            whole.advance(frame::HEAD_LEN);
            match head.kind {
                frame::DATA => self.data(st, head, whole.freeze())?,
                frame::HEADERS => self.headers(st, head, whole.freeze())?,
                frame::CONTINUATION => self.continuation(st, head, &whole)?,
                frame::SETTINGS => self.settings(st, head, &whole)?,
                frame::PING => {
                    if head.stream != 0 {
                        return broke(Reason::PROTOCOL_ERROR, "PING on a stream");
                    }
                    if head.len != 8 {
                        return broke(Reason::FRAME_SIZE_ERROR, "PING not 8 bytes long");
                    }
                    if !head.has(frame::ACK) {
                        frame::ping_ack(&mut st.wbuf, &whole);
                    }
                }
                frame::WINDOW_UPDATE => self.window_update(st, head, &whole)?,
                frame::RST_STREAM => {
                    if head.len != 4 {
                        return broke(Reason::FRAME_SIZE_ERROR, "RST_STREAM not 4 bytes long");
                    }
                    if head.stream == 0 {
                        return broke(Reason::PROTOCOL_ERROR, "RST_STREAM on stream 0");
                    }
                    self.check_known(st, head.stream)?;
                    let code = Reason(u32::from_be_bytes([whole[0], whole[1], whole[2], whole[3]]));
                    if let Some(s) = st.streams.get_mut(&head.stream) {
                        // NO_ERROR after a whole response: the upstream wants no more of the request
                        // (RFC 9113 8.1); the response stands.
                        if code != Reason::NO_ERROR || s.recv_open {
                            s.fail(Error::Reset(code));
                        } else {
                            s.send_open = false;
                            s.wake_all();
                        }
                        st.close_stream(head.stream);
                    }
                }
                frame::PRIORITY if head.stream == 0 => {
                    return broke(Reason::PROTOCOL_ERROR, "PRIORITY on stream 0");
                }
                frame::GOAWAY => {
                    if head.stream != 0 {
                        return broke(Reason::PROTOCOL_ERROR, "GOAWAY on a stream");
                    }
                    if head.len < 8 {
                        return broke(Reason::FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes");
                    }
                    let last =
                        u32::from_be_bytes([whole[0], whole[1], whole[2], whole[3]]) & 0x7fff_ffff;
                    let code = Reason(u32::from_be_bytes([whole[4], whole[5], whole[6], whole[7]]));
                    self.goaway(st, last, code);
                }
                frame::PUSH_PROMISE => {
                    return broke(Reason::PROTOCOL_ERROR, "PUSH_PROMISE with push disabled")
                }
                // Unknown types are ignored (RFC 9113 4.1).
                _ => {}
            }
        }
        if self.rbuf.is_empty() {
            self.rbuf.clear();
        }
        Ok(())
    }

    /// A frame on a stream this side never opened is a connection error.
    fn check_known(&self, st: &State, id: u32) -> Result<(), Error> {
        if id.is_multiple_of(2) || id >= st.next_id {
            return broke(Reason::PROTOCOL_ERROR, "a frame on a stream never opened");
        }
        Ok(())
    }

    fn goaway(&mut self, st: &mut State, last: u32, code: Reason) {
        st.goaway_last = Some(last.min(st.goaway_last.unwrap_or(u32::MAX)));
        if st.closed.is_none() {
            st.closed = Some(Error::GoAway(code));
        }
        let st = &mut *st;
        let mut closed = Vec::new();
        for (&id, s) in st.streams.iter_mut() {
            if id > last {
                s.fail(Error::Unprocessed);
                closed.push(id);
            } else if code != Reason::NO_ERROR {
                s.fail(Error::GoAway(code));
                closed.push(id);
            }
        }
        for id in closed {
            st.close_stream(id);
        }
    }

    fn settings(&mut self, st: &mut State, head: Head, payload: &[u8]) -> Result<(), Error> {
        let Some(settings) = frame::settings_in(&head, payload)? else {
            return Ok(());
        };
        self.settings_seen = true;
        for setting in settings {
            match setting? {
                Setting::EnablePush(0) => {}
                Setting::EnablePush(_) => {
                    return broke(Reason::PROTOCOL_ERROR, "a server set SETTINGS_ENABLE_PUSH");
                }
                Setting::MaxConcurrentStreams(n) => {
                    st.max_concurrent = n as usize;
                    for w in st.waiting.drain(..) {
                        w.wake();
                    }
                }
                Setting::InitialWindowSize(value) => {
                    // Applies to the open streams too (RFC 9113 6.9.2).
                    let delta = value - st.peer_initial_window;
                    st.peer_initial_window = value;
                    for s in st.streams.values_mut() {
                        s.send_window += delta;
                        if s.send_window > frame::MAX_WINDOW {
                            return broke(
                                Reason::FLOW_CONTROL_ERROR,
                                "a stream window above 2^31-1",
                            );
                        }
                        if delta > 0 {
                            if let Some(w) = s.send_waker.take() {
                                w.wake();
                            }
                        }
                    }
                }
                Setting::MaxFrameSize(n) => st.peer_max_frame = n,
                // The encoder never indexes, so the upstream's table size does not matter.
                Setting::Other => {}
            }
        }
        frame::settings_ack(&mut st.wbuf);
        Ok(())
    }

    fn window_update(&mut self, st: &mut State, head: Head, payload: &[u8]) -> Result<(), Error> {
        let inc = frame::window_increment(&head, payload)?;
        if head.stream == 0 {
            st.send_window += inc;
            if st.send_window > frame::MAX_WINDOW {
                return broke(
                    Reason::FLOW_CONTROL_ERROR,
                    "the connection window above 2^31-1",
                );
            }
            for w in st.window_waiting.drain(..) {
                w.wake();
            }
            return Ok(());
        }
        self.check_known(st, head.stream)?;
        let Some(s) = st.streams.get_mut(&head.stream) else {
            return Ok(());
        };
        if inc == 0 || s.send_window + inc > frame::MAX_WINDOW {
            let reason = if inc == 0 {
                Reason::PROTOCOL_ERROR
            } else {
                Reason::FLOW_CONTROL_ERROR
            };
            self.reset(st, head.stream, reason);
            return Ok(());
        }
        s.send_window += inc;
        if let Some(w) = s.send_waker.take() {
            w.wake();
        }
        Ok(())
    }

    /// Resets a stream from this side: RST_STREAM, and its request and response are told.
    fn reset(&mut self, st: &mut State, id: u32, reason: Reason) {
        frame::rst_stream(&mut st.wbuf, id, reason);
        if let Some(s) = st.streams.get_mut(&id) {
            s.fail(Error::Reset(reason));
            st.close_stream(id);
        }
    }

    fn data(&mut self, st: &mut State, head: Head, payload: Bytes) -> Result<(), Error> {
        if head.stream == 0 {
            return broke(Reason::PROTOCOL_ERROR, "DATA on stream 0");
        }
        self.check_known(st, head.stream)?;
        let data = frame::unpad(&head, payload)?;
        let flow = head.len;
        st.recv_window -= flow as i64;
        if st.recv_window < 0 {
            return broke(
                Reason::FLOW_CONTROL_ERROR,
                "DATA beyond the connection window",
            );
        }
        let id = head.stream;
        let end = head.has(frame::END_STREAM);
        let verdict = match st.streams.get_mut(&id) {
            // Gone (this side dropped it): given back at once.
            None => Some(None),
            Some(s) if !s.head_seen => Some(Some(Reason::PROTOCOL_ERROR)),
            Some(s) if !s.recv_open => Some(Some(Reason::STREAM_CLOSED)),
            Some(s) => {
                s.recv_window -= flow as i64;
                s.received += data.len() as u64;
                if s.recv_window < 0 {
                    Some(Some(Reason::FLOW_CONTROL_ERROR))
                } else if s
                    .length
                    .is_some_and(|n| s.received > n || (end && s.received != n))
                {
                    Some(Some(Reason::PROTOCOL_ERROR))
                } else {
                    let padding = flow - data.len();
                    if !data.is_empty() {
                        s.data.push(data);
                    }
                    if end {
                        s.recv_open = false;
                    }
                    s.wake_recv();
                    if padding > 0 {
                        st.release(id, padding);
                    }
                    if end {
                        close_if_done(st, id);
                    }
                    None
                }
            }
        };
        match verdict {
            None => {}
            Some(None) => st.release(id, flow),
            Some(Some(reason)) => {
                st.release(id, flow);
                self.reset(st, id, reason);
            }
        }
        Ok(())
    }

    fn headers(&mut self, st: &mut State, head: Head, payload: Bytes) -> Result<(), Error> {
        if head.stream == 0 {
            return broke(Reason::PROTOCOL_ERROR, "HEADERS on stream 0");
        }
        self.check_known(st, head.stream)?;
        let mut block = frame::unpad(&head, payload)?;
        if head.has(frame::PRIORITY_FLAG) {
            if block.len() < 5 {
                return broke(
                    Reason::FRAME_SIZE_ERROR,
                    "HEADERS too short for its priority",
                );
            }
            block.advance(5);
        }
        let end_stream = head.has(frame::END_STREAM);
        if head.has(frame::END_HEADERS) {
            return self.header_block(st, head.stream, end_stream, block);
        }
        let mut b = BytesMut::with_capacity(block.len() * 2);
        b.extend_from_slice(&block);
        self.continuation = Some(Partial {
            stream: head.stream,
            end_stream,
            block: b,
        });
        Ok(())
    }

    fn continuation(&mut self, st: &mut State, head: Head, payload: &[u8]) -> Result<(), Error> {
        let Some(p) = &mut self.continuation else {
            return broke(Reason::PROTOCOL_ERROR, "CONTINUATION without HEADERS");
        };
        if p.block.len() + payload.len() > MAX_HEADER_BLOCK {
            return broke(Reason::ENHANCE_YOUR_CALM, "a header block over 64 KiB");
        }
        p.block.extend_from_slice(payload);
        if !head.has(frame::END_HEADERS) {
            return Ok(());
        }
        let Some(p) = self.continuation.take() else {
            return Ok(());
        };
        self.header_block(st, p.stream, p.end_stream, p.block.freeze())
    }

    /// A whole header block: a response head (or an informational one, skipped), or trailers.
    fn header_block(
        &mut self,
        st: &mut State,
        id: u32,
        end_stream: bool,
        block: Bytes,
    ) -> Result<(), Error> {
        self.last_seen = self.last_seen.max(id);
        let mut fields = Fields::new();
        self.decoder
            .decode(&block, |name, value| fields.field(name, value))
            .map_err(|_| Error::Protocol {
                reason: Reason::COMPRESSION_ERROR,
                why: "a header block HPACK cannot decode",
            })?;
        let Some(s) = st.streams.get_mut(&id) else {
            // A stream this side dropped: decoded only to keep the table in step.
            return Ok(());
        };
        if !s.recv_open {
            self.reset(st, id, Reason::STREAM_CLOSED);
            return Ok(());
        }
        if s.head_seen {
            // Trailers.
            if !end_stream || fields.malformed.is_some() || fields.status.is_some() {
                self.reset(st, id, Reason::PROTOCOL_ERROR);
                return Ok(());
            }
            s.trailers = Some(fields.headers);
            s.recv_open = false;
            s.wake_recv();
            close_if_done(st, id);
            return Ok(());
        }
        let status = match (fields.malformed, fields.status) {
            (None, Some(status)) => status,
            _ => {
                self.reset(st, id, Reason::PROTOCOL_ERROR);
                return Ok(());
            }
        };
        if status.is_informational() {
            // 100 Continue, 103 Early Hints: the final head follows.
            if end_stream {
                self.reset(st, id, Reason::PROTOCOL_ERROR);
            }
            h1::codec::recycle(fields.headers);
            return Ok(());
        }
        // A HEAD response carries the length of a body it does not send.
        s.length = if s.head_request {
            None
        } else {
            content_length(&fields.headers)
        };
        let mut resp = Response::new(());
        *resp.status_mut() = status;
        *resp.version_mut() = Version::HTTP_2;
        *resp.headers_mut() = fields.headers;
        s.head = Some(resp);
        s.head_seen = true;
        if end_stream {
            s.recv_open = false;
            s.length = None;
        }
        s.wake_recv();
        if end_stream {
            close_if_done(st, id);
        }
        Ok(())
    }
}

/// A DATA or HEADERS payload without its padding.
/// A response's fields as they are decoded, checked as RFC 9113 8.2 and 8.3.2 ask.
struct Fields {
    status: Option<StatusCode>,
    headers: HeaderMap,
    regular_seen: bool,
    size: usize,
    malformed: Option<&'static str>,
}

impl Fields {
    fn new() -> Fields {
        Fields {
            status: None,
            headers: h1::codec::header_map(16),
            regular_seen: false,
            size: 0,
            malformed: None,
        }
    }

    fn field(&mut self, name: Name, value: Bytes) {
        match name {
            Name::Header(name) => {
                self.regular_seen = true;
                self.size += name.as_str().len() + value.len() + 32;
                if self.size > MAX_HEADER_LIST_SIZE {
                    self.malformed = Some("a header list over the limit");
                    return;
                }
                if is_connection_specific(&name) {
                    self.malformed = Some("a connection-specific field");
                    return;
                }
                match super::field_value(value) {
                    Some(v) => {
                        self.headers.append(name, v);
                    }
                    None => self.malformed = Some("a field value with a forbidden byte"),
                }
            }
            Name::Status => {
                if self.regular_seen {
                    self.malformed = Some(":status after a regular field");
                } else if self.status.is_some() {
                    self.malformed = Some(":status twice");
                } else {
                    match StatusCode::from_bytes(&value) {
                        Ok(s) => self.status = Some(s),
                        Err(_) => self.malformed = Some("a malformed :status"),
                    }
                }
            }
            _ => self.malformed = Some("a request pseudo-header or bad name in a response"),
        }
    }
}
