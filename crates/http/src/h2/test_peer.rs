//! The raw-frame HTTP/2 peer both conformance suites speak through: `conformance.rs` as a client of the
//! server, `client_conformance.rs` as an upstream server of the client. It owns what is the same on both
//! sides of the wire, over any transport (the suites use an in-memory pipe and loopback TCP): the frame
//! constants, writing frames (DATA within the remote's windows), reading them, and what every endpoint
//! must do (answer PINGs and SETTINGS, count WINDOW_UPDATEs, give DATA back to the remote's windows with
//! `auto_window`). Opening streams and sending requests, or accepting them and answering, is each suite's.
//!
//! `recv` is the raw frame reader, which skips nothing; `next` does the duties above first. Every frame
//! the remote sends is checked as it arrives: no larger than our SETTINGS_MAX_FRAME_SIZE; no more DATA
//! than our connection and stream windows allow (while a SETTINGS is not ACKed, the larger of the old and
//! the new value); stream frames only on odd streams (nobody here pushes) that are open: opened by us
//! when we are the client, and by the remote, with increasing ids and no more open at once than our
//! SETTINGS_MAX_CONCURRENT_STREAMS, when we are the server; nothing after its RST_STREAM, and nothing but
//! WINDOW_UPDATE, RST_STREAM or PRIORITY after its END_STREAM; no other frame inside a header block, and
//! header blocks that HPACK decodes.

use super::hpack::{self, Decoder, Name};
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderName, HeaderValue};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

// Frame types (RFC 9113, 6).
pub(super) const DATA: u8 = 0x0;
pub(super) const HEADERS: u8 = 0x1;
pub(super) const PRIORITY: u8 = 0x2;
pub(super) const RST_STREAM: u8 = 0x3;
pub(super) const SETTINGS: u8 = 0x4;
pub(super) const PUSH_PROMISE: u8 = 0x5;
pub(super) const PING: u8 = 0x6;
pub(super) const GOAWAY: u8 = 0x7;
pub(super) const WINDOW_UPDATE: u8 = 0x8;
pub(super) const CONTINUATION: u8 = 0x9;

// Flags.
pub(super) const END_STREAM: u8 = 0x1;
pub(super) const ACK: u8 = 0x1;
pub(super) const END_HEADERS: u8 = 0x4;
pub(super) const PADDED: u8 = 0x8;
pub(super) const PRIORITY_FLAG: u8 = 0x20;

// Error codes (RFC 9113, 7).
pub(super) const NO_ERROR: u32 = 0x0;
pub(super) const PROTOCOL_ERROR: u32 = 0x1;
pub(super) const INTERNAL_ERROR: u32 = 0x2;
pub(super) const FLOW_CONTROL_ERROR: u32 = 0x3;
pub(super) const STREAM_CLOSED: u32 = 0x5;
pub(super) const FRAME_SIZE_ERROR: u32 = 0x6;
pub(super) const REFUSED_STREAM: u32 = 0x7;
pub(super) const CANCEL: u32 = 0x8;
pub(super) const COMPRESSION_ERROR: u32 = 0x9;
pub(super) const ENHANCE_YOUR_CALM: u32 = 0xb;

// Settings (RFC 9113, 6.5.2).
pub(super) const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
pub(super) const SETTINGS_ENABLE_PUSH: u16 = 0x2;
pub(super) const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub(super) const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub(super) const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

pub(super) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How long a read, a write or a wait may take: only so that a broken endpoint fails a test instead of
/// hanging it.
pub(super) const WAIT: Duration = Duration::from_secs(5);
pub(super) const DEFAULT_MAX_FRAME_SIZE: usize = 16_384;
pub(super) const DEFAULT_WINDOW: i64 = 65_535;

/// A frame as read from the wire. `fields` is the decoded header block on the frame that ends one
/// (HEADERS or CONTINUATION with END_HEADERS); `block_end_stream` says whether its HEADERS had END_STREAM;
/// `opens` says whether its HEADERS opened the stream (the remote is a client: a request, not trailers).
pub(super) struct Frame {
    pub(super) ty: u8,
    pub(super) flags: u8,
    pub(super) stream: u32,
    pub(super) payload: Bytes,
    pub(super) fields: Option<Vec<(Name, Bytes)>>,
    pub(super) block_end_stream: bool,
    pub(super) opens: bool,
}

impl Frame {
    pub(super) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The error code of a RST_STREAM or GOAWAY.
    pub(super) fn error_code(&self) -> u32 {
        let at = if self.ty == GOAWAY { 4 } else { 0 };
        assert!(self.payload.len() >= at + 4, "short {self:?}");
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }

    /// A GOAWAY's last stream id.
    pub(super) fn last_stream(&self) -> u32 {
        assert!(self.payload.len() >= 8, "short {self:?}");
        u32::from_be_bytes(self.payload[..4].try_into().unwrap()) & 0x7fff_ffff
    }

    /// A DATA frame's data, without padding.
    pub(super) fn data(&self) -> Bytes {
        if self.has(PADDED) {
            let pad = self.payload[0] as usize;
            self.payload.slice(1..self.payload.len() - pad)
        } else {
            self.payload.clone()
        }
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = [
            "DATA",
            "HEADERS",
            "PRIORITY",
            "RST_STREAM",
            "SETTINGS",
            "PUSH_PROMISE",
            "PING",
            "GOAWAY",
            "WINDOW_UPDATE",
            "CONTINUATION",
        ]
        .get(self.ty as usize)
        .copied()
        .unwrap_or("unknown");
        let shown = &self.payload[..self.payload.len().min(32)];
        write!(
            f,
            "{name}(type {:#x}, flags {:#x}, stream {}, {} bytes: {shown:02x?})",
            self.ty,
            self.flags,
            self.stream,
            self.payload.len()
        )?;
        if let Some(fields) = &self.fields {
            write!(f, " {fields:?}")?;
        }
        Ok(())
    }
}

/// Which side of the connection the peer takes; the remote, under test, takes the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// We open the streams; the remote (a server) may answer only on those.
    Client,
    /// The remote (a client) opens the streams.
    Server,
}

/// How a connection ended: the remote's GOAWAY (then the close), or a close without one.
#[derive(Debug, PartialEq)]
pub(super) enum Ended {
    GoAway { last_stream: u32, code: u32 },
    Closed,
}

/// What a stream-level check found: a RST_STREAM on the stream, or a connection error (a GOAWAY).
#[derive(Debug, PartialEq)]
pub(super) enum StreamEnd {
    Reset(u32),
    GoAway(u32),
}

/// A message's body as read to END_STREAM by `read_body`.
#[derive(Debug, Default)]
pub(super) struct Received {
    pub(super) data: Vec<u8>,
    /// The size of each DATA frame's payload.
    pub(super) frames: Vec<usize>,
    /// The trailers' fields, if the body ended with them.
    pub(super) trailers: Option<Vec<(Name, Bytes)>>,
}

/// One connection, spoken to in raw frames, over any transport.
pub(super) struct Peer<T> {
    pub(super) io: T,
    role: Role,
    decoder: Decoder,
    /// A header block waiting for its CONTINUATION: its stream, whether its HEADERS had END_STREAM,
    /// whether it opened the stream, and its bytes so far.
    partial: Option<(u32, bool, bool, BytesMut)>,
    /// The remote's settings, as received.
    pub(super) remote_settings: HashMap<u16, u32>,
    /// Our settings sent and not yet ACKed, oldest first, and ours as the remote has ACKed them.
    pub(super) pending: VecDeque<Vec<(u16, u32)>>,
    applied: HashMap<u16, u32>,
    /// Whether `next` gives back each DATA frame's bytes at once (connection and stream).
    pub(super) auto_window: bool,
    /// How much DATA the remote may still send on the connection; each stream's change from our initial
    /// window (our WINDOW_UPDATEs less its DATA).
    pub(super) conn_recv_window: i64,
    stream_recv_delta: HashMap<u32, i64>,
    /// Bytes of DATA (padding included) received on each stream.
    pub(super) received: HashMap<u32, usize>,
    /// Our send windows: the connection's, and each stream's change from the remote's initial size.
    conn_send_window: i64,
    stream_send_delta: HashMap<u32, i64>,
    /// The next stream we open (as a client).
    pub(super) next_stream: u32,
    /// Streams opened (by us as a client, by the remote as a server); the highest the remote opened.
    opened: HashSet<u32>,
    pub(super) last_stream: u32,
    /// Streams the remote ended or reset; streams we ended or reset.
    pub(super) remote_ended: HashSet<u32>,
    pub(super) remote_reset: HashSet<u32>,
    local_ended: HashSet<u32>,
    local_reset: HashSet<u32>,
    /// Frames of streams set aside while reading something else.
    pub(super) stash: HashMap<u32, VecDeque<Frame>>,
    /// Stream WINDOW_UPDATEs received (stream, increment).
    pub(super) stream_updates: Vec<(u32, u32)>,
    /// PINGs sent by `fence` and others, each with its count as its data.
    pings: u64,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Peer<T> {
    pub(super) fn new(io: T, role: Role) -> Peer<T> {
        Peer {
            io,
            role,
            decoder: Decoder::new(4096),
            partial: None,
            remote_settings: HashMap::new(),
            pending: VecDeque::new(),
            applied: HashMap::new(),
            auto_window: true,
            conn_recv_window: DEFAULT_WINDOW,
            stream_recv_delta: HashMap::new(),
            received: HashMap::new(),
            conn_send_window: DEFAULT_WINDOW,
            stream_send_delta: HashMap::new(),
            next_stream: 1,
            opened: HashSet::new(),
            last_stream: 0,
            remote_ended: HashSet::new(),
            remote_reset: HashSet::new(),
            local_ended: HashSet::new(),
            local_reset: HashSet::new(),
            stash: HashMap::new(),
            stream_updates: Vec::new(),
            pings: 0,
        }
    }

    /// The remote, for messages.
    fn remote(&self) -> &'static str {
        match self.role {
            Role::Client => "the server",
            Role::Server => "the client",
        }
    }

    // ----- Writing -----

    /// Writes raw bytes. A write error (the remote closed) is ignored: the reads that follow see it.
    pub(super) async fn write(&mut self, bytes: &[u8]) {
        let written = timeout(WAIT, self.io.write_all(bytes)).await;
        let _ = written.expect("write timed out");
    }

    /// Writes one frame, whatever its contents; DATA counts against our send windows.
    pub(super) async fn send(&mut self, ty: u8, flags: u8, stream: u32, payload: impl AsRef<[u8]>) {
        let payload = payload.as_ref();
        match ty {
            DATA => {
                self.conn_send_window -= payload.len() as i64;
                *self.stream_send_delta.entry(stream).or_default() -= payload.len() as i64;
            }
            HEADERS if self.role == Role::Client => {
                self.opened.insert(stream);
            }
            RST_STREAM => {
                self.local_reset.insert(stream);
            }
            _ => {}
        }
        if matches!(ty, DATA | HEADERS) && flags & END_STREAM != 0 {
            self.local_ended.insert(stream);
        }
        self.write(&frame(ty, flags, stream, payload)).await;
    }

    pub(super) async fn send_settings(&mut self, settings: &[(u16, u32)]) {
        self.pending.push_back(settings.to_vec());
        self.send(SETTINGS, 0, 0, settings_payload(settings)).await;
    }

    pub(super) async fn window_update(&mut self, stream: u32, increment: u32) {
        if stream == 0 {
            self.conn_recv_window += increment as i64;
        } else {
            *self.stream_recv_delta.entry(stream).or_default() += increment as i64;
        }
        self.send(WINDOW_UPDATE, 0, stream, increment.to_be_bytes())
            .await;
    }

    pub(super) async fn rst(&mut self, stream: u32, code: u32) {
        self.send(RST_STREAM, 0, stream, code.to_be_bytes()).await;
    }

    pub(super) async fn goaway(&mut self, last_stream: u32, code: u32) {
        let mut p = Vec::new();
        p.put_u32(last_stream);
        p.put_u32(code);
        self.send(GOAWAY, 0, 0, p).await;
    }

    /// Sends `data` on `stream` in DATA frames, as the remote's windows and maximum frame size allow,
    /// reading (and setting aside) frames while the windows are shut.
    pub(super) async fn send_body(&mut self, stream: u32, data: &[u8], end: bool) {
        let max_frame = self.remote_setting(SETTINGS_MAX_FRAME_SIZE, DEFAULT_MAX_FRAME_SIZE as u32);
        let mut sent = 0;
        while sent < data.len() {
            let room = self
                .conn_send_window
                .min(self.stream_send_window(stream))
                .min(max_frame as i64)
                .min((data.len() - sent) as i64);
            if room <= 0 {
                self.step("while a body waits for window").await;
                continue;
            }
            let chunk = &data[sent..sent + room as usize];
            sent += chunk.len();
            let flags = if end && sent == data.len() {
                END_STREAM
            } else {
                0
            };
            self.send(DATA, flags, stream, chunk).await;
        }
    }

    pub(super) fn stream_send_window(&self, stream: u32) -> i64 {
        let initial = self.remote_setting(SETTINGS_INITIAL_WINDOW_SIZE, DEFAULT_WINDOW as u32);
        initial as i64 + self.stream_send_delta.get(&stream).copied().unwrap_or(0)
    }

    pub(super) fn remote_setting(&self, id: u16, default: u32) -> u32 {
        self.remote_settings.get(&id).copied().unwrap_or(default)
    }

    // ----- Reading -----

    /// The next frame from the remote, raw; `None` once the remote has closed the connection.
    pub(super) async fn recv(&mut self) -> Option<Frame> {
        let mut head = [0u8; 9];
        match timeout(WAIT, self.io.read_exact(&mut head)).await {
            Err(_) => panic!("no frame from {} within {WAIT:?}", self.remote()),
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                return None
            }
            Ok(Err(e)) => panic!("reading failed: {e}"),
            Ok(Ok(_)) => {}
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (ty, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff;
        let max = self.max_frame();
        assert!(
            len <= max,
            "a frame of {len} bytes (type {ty:#x}), over our SETTINGS_MAX_FRAME_SIZE ({max})"
        );
        let mut payload = vec![0; len];
        timeout(WAIT, self.io.read_exact(&mut payload))
            .await
            .expect("a frame's payload did not arrive")
            .expect("the connection closed inside a frame");
        let mut f = Frame {
            ty,
            flags,
            stream,
            payload: payload.into(),
            fields: None,
            block_end_stream: false,
            opens: false,
        };
        self.check_and_decode(&mut f);
        Some(f)
    }

    /// The remote's first frame, which must be SETTINGS (3.4), not yet ACKed.
    pub(super) async fn first_settings(&mut self) -> Frame {
        let f = self
            .recv()
            .await
            .expect("connection closed in the handshake");
        assert!(
            f.ty == SETTINGS && !f.has(ACK) && f.stream == 0,
            "{}'s first frame must be SETTINGS: {f:?}",
            self.remote()
        );
        f
    }

    /// One of our settings as the remote may be using it: while a change is not ACKed, the larger of the
    /// old and the new (`default` when never set).
    fn largest_setting(&self, id: u16, default: u32) -> u32 {
        let applied = self.applied.get(&id).copied().unwrap_or(default);
        self.pending
            .iter()
            .flatten()
            .filter(|(i, _)| *i == id)
            .fold(applied, |m, &(_, v)| m.max(v))
    }

    /// The largest frame the remote may send.
    fn max_frame(&self) -> usize {
        self.largest_setting(SETTINGS_MAX_FRAME_SIZE, DEFAULT_MAX_FRAME_SIZE as u32) as usize
    }

    /// The most streams the remote may open at once: our SETTINGS_MAX_CONCURRENT_STREAMS once ACKed (the
    /// larger of old and new while a change is not).
    fn max_concurrent(&self) -> Option<u32> {
        self.applied
            .get(&SETTINGS_MAX_CONCURRENT_STREAMS)
            .map(|_| self.largest_setting(SETTINGS_MAX_CONCURRENT_STREAMS, 0))
    }

    /// Streams open (or half-closed).
    fn active(&self) -> usize {
        self.opened
            .iter()
            .filter(|s| {
                !(self.remote_reset.contains(s)
                    || self.local_reset.contains(s)
                    || (self.remote_ended.contains(s) && self.local_ended.contains(s)))
            })
            .count()
    }

    /// Checks a received frame against what the remote may send, and decodes header blocks.
    fn check_and_decode(&mut self, f: &mut Frame) {
        assert!(
            self.partial.is_none() || f.ty == CONTINUATION,
            "{f:?} inside a header block"
        );
        let s = f.stream;
        if s != 0 && f.ty != PRIORITY {
            self.check_stream(f);
        }
        match f.ty {
            DATA => {
                let len = f.payload.len() as i64;
                *self.received.entry(s).or_default() += len as usize;
                self.conn_recv_window -= len;
                assert!(
                    self.conn_recv_window >= 0,
                    "{} sent DATA {} bytes over the connection window",
                    self.remote(),
                    -self.conn_recv_window
                );
                let delta = self.stream_recv_delta.entry(s).or_default();
                *delta -= len;
                let delta = *delta;
                let initial =
                    self.largest_setting(SETTINGS_INITIAL_WINDOW_SIZE, DEFAULT_WINDOW as u32);
                let window = i64::from(initial) + delta;
                assert!(
                    window >= 0,
                    "DATA on stream {s}: {} bytes over its window",
                    -window
                );
            }
            HEADERS => {
                let mut p = f.payload.clone();
                let mut end = p.len();
                let mut at = 0;
                if f.has(PADDED) {
                    end -= p[0] as usize;
                    at = 1;
                }
                if f.has(PRIORITY_FLAG) {
                    at += 5;
                }
                p = p.slice(at..end);
                self.partial = Some((s, f.has(END_STREAM), f.opens, BytesMut::from(&p[..])));
            }
            CONTINUATION => {
                let partial = self.partial.as_mut().expect("CONTINUATION without HEADERS");
                assert_eq!(partial.0, s, "CONTINUATION on another stream");
                partial.3.extend_from_slice(&f.payload);
            }
            RST_STREAM => {
                self.remote_reset.insert(s);
            }
            _ => {}
        }
        if matches!(f.ty, HEADERS | CONTINUATION) && f.has(END_HEADERS) {
            let (_, end_stream, opens, block) = self.partial.take().unwrap();
            let (mut fields, remote) = (Vec::new(), self.remote());
            self.decoder
                .decode(&block.freeze(), |name, value| fields.push((name, value)))
                .unwrap_or_else(|e| panic!("{remote} sent a header block we cannot decode: {e}"));
            f.fields = Some(fields);
            f.block_end_stream = end_stream;
            f.opens = opens;
            if end_stream {
                self.remote_ended.insert(s);
            }
        }
        if f.ty == DATA && f.has(END_STREAM) {
            self.remote_ended.insert(s);
        }
    }

    /// Checks that the remote may send `f` (not PRIORITY) on its stream; a client's HEADERS on a new
    /// stream opens it.
    fn check_stream(&mut self, f: &mut Frame) {
        let s = f.stream;
        assert!(s % 2 == 1, "{f:?} on an even stream");
        let new = self.role == Role::Server && f.ty == HEADERS && !self.opened.contains(&s);
        assert!(new || self.opened.contains(&s), "{f:?} on an idle stream");
        assert!(
            !self.remote_reset.contains(&s),
            "{f:?} after its RST_STREAM"
        );
        assert!(
            !self.remote_ended.contains(&s) || matches!(f.ty, WINDOW_UPDATE | RST_STREAM),
            "{f:?} on a stream {} ended",
            self.remote()
        );
        if new {
            assert!(
                s > self.last_stream,
                "stream {s} opened after stream {}",
                self.last_stream
            );
            if let Some(max) = self.max_concurrent() {
                assert!(
                    self.active() < max as usize,
                    "stream {s} opened with {} streams open, over SETTINGS_MAX_CONCURRENT_STREAMS {max}",
                    self.active()
                );
            }
            self.opened.insert(s);
            self.last_stream = s;
            f.opens = true;
        }
    }

    /// The next frame, once our own duties are done: the remote's WINDOW_UPDATEs are counted, its PINGs
    /// answered, its SETTINGS recorded and ACKed, and its ACKs of ours applied (none of these is
    /// returned); with `auto_window`, each DATA frame's bytes are given back to the remote.
    pub(super) async fn next(&mut self) -> Option<Frame> {
        loop {
            let f = self.recv().await?;
            if let Some(f) = self.duties(f).await {
                return Some(f);
            }
        }
    }

    /// Does what `next` does for a frame: `None` if that was all there was to do with it.
    pub(super) async fn duties(&mut self, f: Frame) -> Option<Frame> {
        match f.ty {
            WINDOW_UPDATE => {
                assert_eq!(f.payload.len(), 4, "{f:?}");
                let inc = u32::from_be_bytes(f.payload[..].try_into().unwrap()) & 0x7fff_ffff;
                assert!(inc > 0, "a WINDOW_UPDATE of 0: {f:?}");
                if f.stream == 0 {
                    self.conn_send_window += inc as i64;
                } else {
                    *self.stream_send_delta.entry(f.stream).or_default() += inc as i64;
                    self.stream_updates.push((f.stream, inc));
                }
                None
            }
            PING if !f.has(ACK) => {
                assert_eq!((f.stream, f.payload.len()), (0, 8), "{f:?}");
                self.send(PING, ACK, 0, &f.payload).await;
                None
            }
            SETTINGS if f.has(ACK) => {
                assert_eq!(f.stream, 0, "{f:?}");
                assert!(f.payload.is_empty(), "a SETTINGS ACK with a payload: {f:?}");
                let settings = self.pending.pop_front().expect("an ACK of no SETTINGS");
                self.applied.extend(settings);
                None
            }
            SETTINGS => {
                assert_eq!(f.stream, 0, "{f:?}");
                self.remote_settings.extend(parse_settings(&f.payload));
                self.send(SETTINGS, ACK, 0, []).await;
                None
            }
            DATA if self.auto_window && !f.payload.is_empty() => {
                let n = f.payload.len() as u32;
                self.window_update(0, n).await;
                if !f.has(END_STREAM) {
                    self.window_update(f.stream, n).await;
                }
                Some(f)
            }
            _ => Some(f),
        }
    }

    /// Reads one frame: does what `next` does, and sets a frame of a stream aside (`when` says what for,
    /// if it is a frame of the connection or the connection closed).
    pub(super) async fn step(&mut self, when: &str) {
        let f = self
            .recv()
            .await
            .unwrap_or_else(|| panic!("connection closed {when}"));
        if let Some(f) = self.duties(f).await {
            assert!(f.stream != 0, "unexpected {f:?} {when}");
            self.stash.entry(f.stream).or_default().push_back(f);
        }
    }

    /// Reads (setting frames of streams aside) until the remote has ACKed every SETTINGS we sent.
    pub(super) async fn settled(&mut self) {
        while !self.pending.is_empty() {
            self.step("before the SETTINGS ACK").await;
        }
    }

    /// The next frame of `stream` (set aside earlier, or read now, setting aside other streams' frames).
    /// Panics at a frame on stream 0 or at the connection's end.
    pub(super) async fn next_on(&mut self, stream: u32) -> Frame {
        if let Some(f) = self.stash.get_mut(&stream).and_then(VecDeque::pop_front) {
            return f;
        }
        loop {
            let f = self
                .next()
                .await
                .unwrap_or_else(|| panic!("connection closed while reading stream {stream}"));
            if f.stream == stream {
                return f;
            }
            assert!(
                f.stream != 0,
                "unexpected {f:?} while reading stream {stream}"
            );
            self.stash.entry(f.stream).or_default().push_back(f);
        }
    }

    /// Reads `stream`'s body to END_STREAM, on DATA or on trailers (its head already read).
    pub(super) async fn read_body(&mut self, stream: u32) -> Received {
        let mut body = Received::default();
        loop {
            let mut f = self.next_on(stream).await;
            match f.ty {
                DATA => {
                    body.data.extend_from_slice(&f.data());
                    body.frames.push(f.payload.len());
                    if f.has(END_STREAM) {
                        return body;
                    }
                }
                HEADERS | CONTINUATION => {
                    if let Some(fields) = f.fields.take() {
                        assert!(f.block_end_stream, "trailers without END_STREAM: {f:?}");
                        body.trailers = Some(fields);
                        return body;
                    }
                }
                RST_STREAM => panic!("stream {stream} reset, code {}", f.error_code()),
                _ => panic!("unexpected {f:?} in a body"),
            }
        }
    }

    /// The next PING's data: a count, so that each ACK can be told from the others.
    pub(super) fn ping_data(&mut self) -> [u8; 8] {
        self.pings += 1;
        self.pings.to_be_bytes()
    }

    /// Sends a PING and expects its ACK, with the same data, as the next frame.
    pub(super) async fn ping(&mut self, data: [u8; 8]) {
        self.send(PING, 0, 0, data).await;
        let f = self.next().await.expect("connection closed");
        assert_eq!((f.ty, f.flags & ACK, f.stream), (PING, ACK, 0), "{f:?}");
        assert_eq!(&f.payload[..], &data, "a PING ACK with other data");
    }

    /// Sends a PING and reads to its ACK (the remote has then read everything sent before it), setting
    /// frames of streams aside. Any DATA past a window on the way fails in `check_and_decode`.
    pub(super) async fn fence(&mut self) {
        let data = self.ping_data();
        self.send(PING, 0, 0, data).await;
        loop {
            let f = self
                .next()
                .await
                .expect("connection closed before a PING ACK");
            if f.ty == PING && f.has(ACK) {
                assert_eq!(&f.payload[..], &data, "a PING ACK with other data");
                return;
            }
            assert!(f.stream != 0, "unexpected {f:?} before a PING ACK");
            self.stash.entry(f.stream).or_default().push_back(f);
        }
    }

    /// Expects a connection error: a GOAWAY with one of `codes` (skipping frames of streams), then the
    /// close; gives the GOAWAY's last stream.
    pub(super) async fn expect_goaway(&mut self, codes: &[u32]) -> u32 {
        match self.connection_end().await {
            Ended::GoAway { last_stream, code } => {
                assert!(
                    codes.contains(&code),
                    "GOAWAY code {code}, not one of {codes:?}"
                );
                last_stream
            }
            Ended::Closed => panic!("the connection closed without a GOAWAY"),
        }
    }

    /// Reads to the connection's end, skipping frames of streams: the remote's GOAWAY (then the close)
    /// or the close. Panics at any other frame on stream 0.
    pub(super) async fn connection_end(&mut self) -> Ended {
        loop {
            let Some(f) = self.next().await else {
                return Ended::Closed;
            };
            if f.stream != 0 {
                continue;
            }
            assert_eq!(f.ty, GOAWAY, "expected GOAWAY, got {f:?}");
            let (last_stream, code) = (f.last_stream(), f.error_code());
            self.expect_close().await;
            return Ended::GoAway { last_stream, code };
        }
    }

    /// Reads until the remote closes the connection.
    pub(super) async fn expect_close(&mut self) {
        while let Some(f) = self.recv().await {
            assert!(
                matches!(f.ty, GOAWAY | WINDOW_UPDATE | PING | SETTINGS) || f.stream != 0,
                "unexpected {f:?} before the close"
            );
        }
    }

    /// Expects `stream` to be reset with one of `codes` (frames of other streams are set aside).
    pub(super) async fn expect_rst(&mut self, stream: u32, codes: &[u32]) {
        match self.stream_end(stream).await {
            StreamEnd::Reset(code) => assert!(
                codes.contains(&code),
                "stream {stream} reset with {code}, not one of {codes:?}"
            ),
            StreamEnd::GoAway(code) => panic!("connection error {code}, not a reset of {stream}"),
        }
    }

    /// Expects a stream error on `stream` (RST_STREAM) or a connection error (GOAWAY), with one of
    /// `codes`.
    pub(super) async fn expect_stream_or_connection_error(
        &mut self,
        stream: u32,
        codes: &[u32],
    ) -> StreamEnd {
        let end = self.stream_end(stream).await;
        let (StreamEnd::Reset(code) | StreamEnd::GoAway(code)) = end;
        assert!(codes.contains(&code), "{end:?}, not with one of {codes:?}");
        end
    }

    /// Reads until `stream`'s RST_STREAM or the connection's GOAWAY (then the close); frames of other
    /// streams are set aside, and any other frame of `stream` fails.
    pub(super) async fn stream_end(&mut self, stream: u32) -> StreamEnd {
        loop {
            let f = match self.stash.get_mut(&stream).and_then(VecDeque::pop_front) {
                Some(f) => f,
                None => self.next().await.expect("connection closed without GOAWAY"),
            };
            match (f.stream, f.ty) {
                (s, RST_STREAM) if s == stream => return StreamEnd::Reset(f.error_code()),
                (s, _) if s == stream => panic!("expected RST_STREAM on {stream}, got {f:?}"),
                (0, GOAWAY) => {
                    let code = f.error_code();
                    self.expect_close().await;
                    return StreamEnd::GoAway(code);
                }
                (0, _) => panic!("unexpected {f:?} while waiting for RST_STREAM on {stream}"),
                (s, _) => self.stash.entry(s).or_default().push_back(f),
            }
        }
    }
}

/// A frame's bytes: the 9-byte header and the payload.
pub(super) fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(9 + payload.len());
    b.put_uint(payload.len() as u64, 3);
    b.put_u8(ty);
    b.put_u8(flags);
    b.put_u32(stream);
    b.extend_from_slice(payload);
    b
}

pub(super) fn settings_payload(settings: &[(u16, u32)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (id, value) in settings {
        b.put_u16(*id);
        b.put_u32(*value);
    }
    b
}

pub(super) fn parse_settings(payload: &[u8]) -> Vec<(u16, u32)> {
    assert_eq!(payload.len() % 6, 0, "SETTINGS of {} bytes", payload.len());
    payload
        .chunks(6)
        .map(|c| {
            let id = u16::from_be_bytes([c[0], c[1]]);
            (id, u32::from_be_bytes(c[2..6].try_into().unwrap()))
        })
        .collect()
}

/// A header block from the HPACK module: the `pseudo` fields, then the regular `fields` (none of either:
/// a trailers block, or a head without them).
pub(super) fn header_block(pseudo: &[(Name, &str)], fields: &[(&str, &str)]) -> Bytes {
    let mut b = BytesMut::new();
    for (name, value) in pseudo {
        hpack::encode_pseudo(name, value.as_bytes(), &mut b);
    }
    for (name, value) in fields {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        hpack::encode_field(&name, &HeaderValue::from_str(value).unwrap(), &mut b);
    }
    b.freeze()
}

/// A header block written by hand, each field a literal without indexing with a literal name (RFC 7541,
/// 6.2.2), so that it can say anything: upper case, unknown pseudo-headers, any order.
pub(super) fn literal_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (name, value) in fields {
        assert!(name.len() < 127 && value.len() < 127);
        b.push(0x00);
        b.push(name.len() as u8);
        b.extend_from_slice(name.as_bytes());
        b.push(value.len() as u8);
        b.extend_from_slice(value.as_bytes());
    }
    b
}

/// `len` bytes of a pattern that shows a byte out of place.
pub(super) fn pattern(len: usize) -> Bytes {
    (0..len).map(|i| (i % 251) as u8).collect()
}
