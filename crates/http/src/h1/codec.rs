//! What both sides of Weft's HTTP/1.1 share: reading a head's fields into a `HeaderMap` that shares the
//! head's bytes, decoding a body by its framing (RFC 9112, 6 and 7), and writing a head and a body with
//! its framing in as few `writev`s as the body's frames allow.

use crate::body::BodyError;
use crate::Body;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body as _, Frame};
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncWrite, Interest};
use tokio::net::TcpStream;

/// The most header fields a head (or a trailer section) may have: hyper's limit.
pub(super) const MAX_HEADERS: usize = 100;
/// The largest head (start line and fields, and the same for trailers) accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// The longest chunk-size line (size and extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// A connection's read buffer's size, allocated once per connection.
pub(crate) const READ_BUF: usize = 8 * 1024;
/// Below this much free space a read buffer is grown (or, once its earlier bytes are released,
/// rewound) before a read.
const READ_MIN: usize = 1024;

pub(super) const CRLF: &[u8] = b"\r\n";
/// The end of a chunk's data followed by the last chunk and an empty trailer section.
const CRLF_LAST: &[u8] = b"\r\n0\r\n\r\n";
/// The last chunk and an empty trailer section.
const LAST: &[u8] = b"0\r\n\r\n";

/// How a message broke HTTP/1.1's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// The head (or the trailers) could not be parsed.
    #[error("malformed head: {0}")]
    Parse(httparse::Error),
    /// The head (or the trailers) went past `MAX_HEAD`.
    #[error("head larger than {MAX_HEAD} bytes")]
    TooLarge,
    /// Another rule, named.
    #[error("{0}")]
    Rule(&'static str),
}

/// Makes room in a read buffer: rewinds it to its start when its earlier bytes have all been released
/// (the usual case, with no allocation), or grows it.
pub(crate) fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_MIN {
        buf.reserve(READ_BUF);
    }
}

/// Reads more from `io` into `buf`; `Ok(0)` when the peer closed.
///
/// A read that returns less than it was offered found the socket drained, so the socket's readiness is
/// cleared then (as nginx does), rather than by a further `recv` that would only return `EAGAIN`: that
/// was one system call in three on a kept-alive connection (strace, `bench/instructions`' workload). It
/// is safe with tokio's readiness: data that arrives after the read comes with a new event, which the
/// clearing does not touch, and a close already seen stays seen.
pub(crate) fn poll_fill(
    io: &TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    reserve(buf);
    loop {
        ready!(io.poll_read_ready(cx))?;
        let offered = buf.capacity() - buf.len();
        let mut read = 0;
        let result = io.try_io(Interest::READABLE, || {
            let n = io.try_read_buf(buf)?;
            read = n;
            if n > 0 && n < offered {
                Err(std::io::ErrorKind::WouldBlock.into())
            } else {
                Ok(n)
            }
        });
        match result {
            Ok(n) => return Poll::Ready(Ok(n)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && read > 0 => {
                return Poll::Ready(Ok(read))
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

/// Header fields a head's map has room for beyond its own, so that what the proxy adds (`x-request-id`,
/// `host`, `x-envoy-upstream-service-time`) does not grow it: a full `HeaderMap` grows by reallocating,
/// which cost about 775 instructions per request for each of the two maps (`bench/instructions`).
const HEADROOM: usize = 2;

/// Header maps kept per thread for reuse (see `header_map`).
const POOLED_MAPS: usize = 16;
/// Maps with room for more fields than this are not kept (a rare head with many fields would otherwise
/// keep its large map alive).
const POOLED_MAX_CAPACITY: usize = 48;

thread_local! {
    static MAPS: std::cell::RefCell<Vec<HeaderMap>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A header map with room for `n` fields: one given back by `recycle` on this thread when there is one.
/// Every proxied HTTP/1.1 exchange parses two heads into maps and drops both once their heads are
/// written; a new map costs two allocations and dropping it two frees (`bench/instructions`).
pub(crate) fn header_map(n: usize) -> HeaderMap {
    match MAPS.with(|m| m.borrow_mut().pop()) {
        Some(mut map) => {
            if map.capacity() < n {
                map.reserve(n);
            }
            map
        }
        None => HeaderMap::with_capacity(n),
    }
}

/// Gives a map whose fields have been written back for reuse by `header_map`, emptied.
pub(crate) fn recycle(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > POOLED_MAX_CAPACITY {
        return;
    }
    map.clear();
    MAPS.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() < POOLED_MAPS {
            m.push(map);
        }
    });
}

/// Read buffers kept per thread for the next connection.
const POOLED_READ_BUFS: usize = 16;

thread_local! {
    static READ_BUFS: std::cell::RefCell<Vec<BytesMut>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A downstream connection's read buffer (`READ_BUF` bytes of room): one a connection on this thread gave
/// back when there is one. A new buffer is above glibc's per-thread cache, so allocating and freeing it
/// took the allocator's bins and consolidation every connection, as nginx's per-connection pools avoid.
pub(crate) fn read_buf() -> BytesMut {
    READ_BUFS
        .with(|b| b.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(READ_BUF))
}

/// Gives a connection's read buffer back for `read_buf`: kept when nothing else still holds a part of it
/// (it is then whole again, with no allocation) and it did not grow past twice its size.
pub(crate) fn give_back(mut buf: BytesMut) {
    buf.clear();
    if !buf.try_reclaim(READ_BUF) || buf.capacity() > 2 * READ_BUF {
        return;
    }
    READ_BUFS.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < POOLED_READ_BUFS {
            b.push(buf);
        }
    });
}

/// Where each field of a parsed head lies in it, so that the head can be split off its buffer and shared by
/// the header values without parsing it twice. One per connection, reused for every head: a fixed array
/// for `MAX_HEADERS` fields was zeroed for every head parsed (1.6 KB, about 100 instructions), and copied
/// when returned by value.
#[derive(Default)]
pub(super) struct Spans {
    spans: Vec<(u32, u32, u32, u32)>,
}

impl Spans {
    /// Records the fields of a head parsed from `buf`.
    pub(super) fn record(&mut self, buf: &[u8], fields: &[httparse::Header<'_>]) {
        let base = buf.as_ptr() as usize;
        self.spans.clear();
        self.spans.reserve(fields.len());
        self.spans.extend(fields.iter().map(|f| {
            (
                (f.name.as_ptr() as usize - base) as u32,
                f.name.len() as u32,
                (f.value.as_ptr() as usize - base) as u32,
                f.value.len() as u32,
            )
        }));
    }

    /// The fields as a `HeaderMap` whose values are slices of `head`, and what they say about framing and
    /// the connection.
    pub(super) fn read(&self, head: &Bytes) -> Result<(HeaderMap, Fields), Invalid> {
        let mut headers = header_map(self.spans.len() + HEADROOM);
        let mut f = Fields::default();
        for &(no, nl, vo, vl) in &self.spans {
            let (no, nl, vo, vl) = (no as usize, nl as usize, vo as usize, vl as usize);
            let raw = &head[vo..vo + vl];
            let name = field_name(&head[no..no + nl]).ok_or(Invalid::Rule("header name"))?;
            if name == HOST {
                f.hosts = f.hosts.saturating_add(1);
                f.host_valid &= is_authority(raw);
            } else if name == CONTENT_LENGTH {
                let n = parse_length(raw).ok_or(Invalid::Rule("content-length"))?;
                if f.length.is_some_and(|l| l != n) {
                    return Err(Invalid::Rule("conflicting content-length headers"));
                }
                f.length = Some(n);
            } else if name == TRANSFER_ENCODING {
                f.chunked = Some(last_token_is(raw, b"chunked"));
                f.te_fields = f.te_fields.saturating_add(1);
                f.te_only_chunked =
                    f.te_fields == 1 && raw.trim_ascii().eq_ignore_ascii_case(b"chunked");
            } else if name == CONNECTION {
                f.close |= has_token(raw, b"close");
                f.keep_alive |= has_token(raw, b"keep-alive");
            } else if name == EXPECT {
                f.expect_continue = raw.eq_ignore_ascii_case(b"100-continue");
            }
            let value =
                valid_value(head.slice(vo..vo + vl)).map_err(|_| Invalid::Rule("header value"))?;
            headers.append(name, value);
        }
        Ok((headers, f))
    }
}

/// The name of a parsed field: a constant for the names most requests and responses in a mesh carry,
/// whatever their case. `HeaderName::from_bytes` lowercases every name into a buffer and then matches it,
/// about 110 instructions for a standard name (4 per proxied request in `bench/instructions`), and copies
/// every other name into an allocation of its own: `x-request-id`, the B3 and W3C trace fields and the
/// `x-forwarded-*` ones, on every request of a traced mesh.
fn field_name(raw: &[u8]) -> Option<HeaderName> {
    known_name(raw).or_else(|| HeaderName::from_bytes(raw).ok())
}

/// Whether the token `raw` is `lower` (of the same length, and only `a-z`, `0-9` and `-`) in any case,
/// compared a word at a time: `eq_ignore_ascii_case` lowercases byte by byte, and cost more than the
/// match it replaced. Setting bit 5 of every byte lowercases letters and leaves digits and `-` as they
/// are; the other bytes it could turn into one of those (control bytes) are no token's.
#[inline]
fn eq_token_lowercase(raw: &[u8], lower: &[u8]) -> bool {
    const CASE: u64 = 0x2020_2020_2020_2020;
    let n = raw.len();
    if n != lower.len() {
        return false;
    }
    if n < 8 {
        return raw.iter().zip(lower).all(|(&a, &b)| a | 0x20 == b);
    }
    let word = |s: &[u8], at: usize| {
        u64::from_le_bytes(
            s.get(at..at + 8)
                .and_then(|w| w.try_into().ok())
                .unwrap_or([0; 8]),
        )
    };
    let mut at = 0;
    while at + 8 < n {
        if word(raw, at) | CASE != word(lower, at) {
            return false;
        }
        at += 8;
    }
    // The last word, overlapping the one before when `n` is not a multiple of 8.
    word(raw, n - 8) | CASE == word(lower, n - 8)
}

/// Defines `known_name` (a name's constant, found by its length then its bytes) and `KNOWN_NAMES`.
macro_rules! known_names {
    ($($len:literal => [$($name:literal),+]),+ $(,)?) => {
        fn known_name(raw: &[u8]) -> Option<HeaderName> {
            match raw.len() {
                $($len => {
                    $(if eq_token_lowercase(raw, $name.as_bytes()) {
                        const NAME: HeaderName = HeaderName::from_static($name);
                        return Some(NAME);
                    })+
                    None
                })+
                _ => None,
            }
        }

        #[cfg(test)]
        const KNOWN_NAMES: &[&str] = &[$($($name),+),+];
    };
}

known_names! {
    2 => ["te"],
    3 => ["via", "age"],
    4 => ["host", "date", "etag"],
    6 => ["accept", "cookie", "server", "origin", "expect", "pragma"],
    7 => ["upgrade", "referer", "trailer", "expires"],
    8 => ["location"],
    9 => ["forwarded"],
    10 => ["connection", "user-agent", "set-cookie", "keep-alive", "tracestate", "x-b3-flags"],
    11 => ["traceparent", "x-b3-spanid", "grpc-status"],
    12 => ["content-type", "x-request-id", "x-b3-traceid", "x-b3-sampled", "grpc-message", "grpc-timeout"],
    13 => ["cache-control", "authorization", "last-modified", "accept-ranges", "grpc-encoding"],
    14 => ["content-length", "accept-charset"],
    15 => ["accept-encoding", "accept-language", "x-forwarded-for"],
    16 => ["content-encoding"],
    17 => ["transfer-encoding", "if-modified-since", "x-forwarded-proto", "x-b3-parentspanid"],
    20 => ["grpc-accept-encoding"],
    21 => ["x-envoy-attempt-count", "x-envoy-peer-metadata"],
    23 => ["x-forwarded-client-cert"],
    24 => ["x-envoy-peer-metadata-id"],
    29 => ["x-envoy-upstream-service-time"],
}

/// A header value from bytes known to be valid in one: a field value httparse accepted (its one caller is
/// `Spans::read`, for request and response heads alike). httparse takes the same bytes in a value that
/// `HeaderValue` does (tab, space to `~`, and 0x80 and up: `parsed_values_match_the_checked_constructor`,
/// and the server's `parsed_values_are_header_values`), so checking each byte again, as
/// `HeaderValue::from_maybe_shared` does, was about 4 instructions a byte, 255 per request for parsed
/// values and 90 for the proxy's own (`bench/instructions`). What the unchecked constructor asks is UTF-8,
/// which `is_ascii` checks a word at a time; a value with bytes over 0x7f (obs-text) takes the checked
/// path.
#[inline]
pub(crate) fn valid_value(bytes: Bytes) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    if !bytes.is_ascii() {
        return HeaderValue::from_maybe_shared(bytes);
    }
    debug_assert!(bytes
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b)));
    // SAFETY: the constructor requires UTF-8, and `is_ascii` has just checked that every byte is below
    // 0x80: ASCII, hence UTF-8. That the bytes are also valid in a value (tab, 0x20..=0x7e among ASCII,
    // what `from_maybe_shared` would check) is correctness, not safety, and is httparse's check: with the
    // default configuration both heads are parsed with, it refuses the other control bytes and 0x7f in a
    // value. `parsed_values_match_the_checked_constructor` runs every byte value through the parser and
    // this function and compares with `HeaderValue::from_maybe_shared`: same verdict, same bytes.
    #[allow(unsafe_code)]
    Ok(unsafe { HeaderValue::from_maybe_shared_unchecked(bytes) })
}

/// What a head's fields say about its body and its connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fields {
    /// `content-length`.
    pub length: Option<u64>,
    /// `transfer-encoding` was sent: whether its last coding is chunked.
    pub chunked: Option<bool>,
    /// `connection: close`.
    pub close: bool,
    /// `connection: keep-alive` (what keeps an HTTP/1.0 connection open).
    pub keep_alive: bool,
    /// `expect: 100-continue`.
    pub expect_continue: bool,
    /// How many `transfer-encoding` fields (at most 255), and whether they are one that says only
    /// `chunked` (what a request may use: the server knows no other coding).
    pub te_fields: u8,
    pub te_only_chunked: bool,
    /// How many `host` fields (at most 255).
    pub hosts: u8,
    /// Every `host` field holds an authority (RFC 9112, 3.2; RFC 3986, 3.2).
    pub host_valid: bool,
}

impl Default for Fields {
    fn default() -> Fields {
        Fields {
            length: None,
            chunked: None,
            close: false,
            keep_alive: false,
            expect_continue: false,
            te_fields: 0,
            te_only_chunked: false,
            hosts: 0,
            host_valid: true,
        }
    }
}

/// Bytes an authority may hold without userinfo (RFC 3986, 3.2): unreserved, percent-encoded and
/// sub-delims in a reg-name or an IPv4 address, `[`, `]` and `:` for an IP literal, `:` and digits for a
/// port. Anything else (space, `/`, `?`, `#`, `@`, controls, obs-text) is not an authority: a `Host` with
/// one is refused, as RFC 9112 (3.2) asks, rather than routed on, logged and passed on.
static AUTHORITY_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let ok = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%!$&'()*+,;=:[]";
    let mut i = 0;
    while i < ok.len() {
        t[ok[i] as usize] = true;
        i += 1;
    }
    t
};

/// Whether `v` may be a `Host` value: authority bytes only (an empty value is allowed: RFC 9112, 3.2).
pub(crate) fn is_authority(v: &[u8]) -> bool {
    // A fold without a branch per byte: a `Host` is checked on every request.
    v.iter()
        .fold(true, |ok, &b| ok & AUTHORITY_BYTES[usize::from(b)])
}

/// How a body is delimited, and how far it has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// This many bytes remain.
    Length(u64),
    /// Chunked, in this state.
    Chunked(Chunk),
    /// Up to the peer's close.
    UntilClose,
    /// Read to its end.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    /// A chunk-size line comes next.
    Size,
    /// This many bytes of the chunk's data remain.
    Data(u64),
    /// The CRLF after a chunk's data comes next.
    DataEnd,
    /// The trailer section (perhaps empty) after the last chunk comes next.
    Trailers,
}

/// What decoding found in the buffer.
#[derive(Debug)]
pub(super) enum Decoded {
    /// Body bytes, a slice of the buffer.
    Data(Bytes),
    /// The trailer section: the body has ended.
    Trailers(HeaderMap),
    /// The body has ended.
    End,
    /// More bytes are needed.
    More,
}

impl Framing {
    /// A body framed by `content-length`.
    pub(super) fn length(n: u64) -> Framing {
        if n == 0 {
            Framing::Done
        } else {
            Framing::Length(n)
        }
    }

    /// Takes the body's next piece from `buf`.
    pub(super) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Invalid> {
        loop {
            match *self {
                Framing::Done => return Ok(Decoded::End),
                Framing::Length(n) | Framing::Chunked(Chunk::Data(n)) if !buf.is_empty() => {
                    let take = (buf.len() as u64).min(n);
                    let data = buf.split_to(take as usize).freeze();
                    *self = match *self {
                        Framing::Length(_) if take == n => Framing::Done,
                        Framing::Length(_) => Framing::Length(n - take),
                        _ if take == n => Framing::Chunked(Chunk::DataEnd),
                        _ => Framing::Chunked(Chunk::Data(n - take)),
                    };
                    return Ok(Decoded::Data(data));
                }
                Framing::UntilClose if !buf.is_empty() => {
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                Framing::Chunked(Chunk::Size) if !buf.is_empty() => match chunk_size_line(buf)? {
                    Some((used, size)) => {
                        buf.advance(used);
                        *self = Framing::Chunked(if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        });
                        continue;
                    }
                    None if buf.len() < MAX_CHUNK_LINE => {}
                    None => return Err(Invalid::Rule("chunk size line")),
                },
                Framing::Chunked(Chunk::DataEnd) if buf.len() >= 2 => {
                    if &buf[..2] != CRLF {
                        return Err(Invalid::Rule("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Framing::Chunked(Chunk::Size);
                    continue;
                }
                Framing::Chunked(Chunk::Trailers) if buf.len() >= 2 => {
                    if buf[0] == b'\n' {
                        return Err(Invalid::Rule("chunked body ended by a bare LF"));
                    }
                    if &buf[..2] == CRLF {
                        buf.advance(2);
                        *self = Framing::Done;
                        return Ok(Decoded::End);
                    }
                    match parse_trailers(buf)? {
                        Some(trailers) => {
                            *self = Framing::Done;
                            return Ok(Decoded::Trailers(trailers));
                        }
                        None if buf.len() < MAX_HEAD => {}
                        None => return Err(Invalid::TooLarge),
                    }
                }
                _ => {}
            }
            return Ok(Decoded::More);
        }
    }
}

/// Reads a chunk-size line (RFC 9112 7.1): its length and the size, or `None` until it has ended. One or
/// more hex digits, then optional whitespace and extensions (`;`, then visible characters, spaces and
/// tabs, which are skipped), then CRLF. Stricter than httparse's chunk-size parser, which took an empty
/// size, a bare LF and control bytes in an extension: a reader that takes those and one that refuses
/// them disagree on where a body ends (found by the `h1_request` fuzz target against hyper).
fn chunk_size_line(buf: &[u8]) -> Result<Option<(usize, u64)>, Invalid> {
    let bad = || Invalid::Rule("chunk size line");
    let mut size: u64 = 0;
    let mut at = 0;
    while let Some(&b) = buf.get(at) {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => break,
        };
        if at == 16 {
            // More than 64 bits (hyper's CVE-2021-32714 was an overflow here).
            return Err(Invalid::Rule("chunk size too large"));
        }
        size = size << 4 | u64::from(digit);
        at += 1;
    }
    if at == buf.len() {
        return Ok(None);
    }
    if at == 0 {
        return Err(bad());
    }
    // Whitespace, then the end of the line or an extension.
    while matches!(buf.get(at), Some(b' ' | b'\t')) {
        at += 1;
    }
    let mut in_extension = false;
    while let Some(&b) = buf.get(at) {
        match b {
            b'\r' => {
                return match buf.get(at + 1) {
                    None => Ok(None),
                    Some(b'\n') => Ok(Some((at + 2, size))),
                    Some(_) => Err(bad()),
                };
            }
            b';' => in_extension = true,
            b' ' | b'\t' | 0x21..=0x7e if in_extension => {}
            _ => return Err(bad()),
        }
        at += 1;
    }
    Ok(None)
}

/// Parses the trailer section after the last chunk; `None` when more bytes are needed.
fn parse_trailers(buf: &mut BytesMut) -> Result<Option<HeaderMap>, Invalid> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let len = match httparse::parse_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete((len, _))) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Invalid::Parse(e)),
    };
    // Lines end with CRLF here too (see `chunk_size_line`): httparse takes a bare LF as a line's end.
    let section = &buf[..len];
    if !section.ends_with(b"\r\n\r\n")
        || section
            .iter()
            .enumerate()
            .any(|(i, &b)| b == b'\n' && (i == 0 || section[i - 1] != b'\r'))
    {
        return Err(Invalid::Rule("trailers not ended by CRLF"));
    }
    let block = buf.split_to(len).freeze();
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let Ok(httparse::Status::Complete((_, fields))) = httparse::parse_headers(&block, &mut fields)
    else {
        return Err(Invalid::Rule("trailers"));
    };
    let mut trailers = HeaderMap::with_capacity(fields.len());
    for f in fields {
        let name =
            HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| Invalid::Rule("trailer name"))?;
        let value = HeaderValue::from_maybe_shared(block.slice_ref(f.value))
            .map_err(|_| Invalid::Rule("trailer value"))?;
        trailers.append(name, value);
    }
    Ok(Some(trailers))
}

/// Bytes waiting to be written: an encoded part (a head, a chunk-size line, the trailers), the data of a
/// body frame, and a fixed ending (the chunk's CRLF, the last chunk), written with one `writev`.
pub(super) struct Out {
    pub pre: Vec<u8>,
    pub pos: usize,
    pub data: Bytes,
    pub post: &'static [u8],
}

impl Out {
    pub(super) fn with_capacity(n: usize) -> Out {
        Out {
            pre: Vec::with_capacity(n),
            pos: 0,
            data: Bytes::new(),
            post: &[],
        }
    }

    /// Empties it, keeping `pre`'s allocation.
    pub(super) fn clear(&mut self) {
        self.pre.clear();
        self.pos = 0;
        self.data = Bytes::new();
        self.post = &[];
    }

    pub(super) fn is_empty(&self) -> bool {
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

    /// Writes it all, or as much as the socket takes without waiting.
    fn poll_flush(
        &mut self,
        io: &mut (impl AsyncWrite + Unpin),
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        while !self.is_empty() {
            let slices = [
                IoSlice::new(&self.pre[self.pos..]),
                IoSlice::new(&self.data),
                IoSlice::new(self.post),
            ];
            let n = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

/// Why writing a message failed.
#[derive(Debug)]
pub(super) enum WriteError {
    /// The socket.
    Io(std::io::Error),
    /// Reading the body that was being sent.
    Body(BodyError),
}

/// A message being written: what is queued, and the rest of its body.
pub(super) struct Writer {
    pub out: Out,
    /// The rest of the body; `None` once it has all been taken.
    pub body: Option<Body>,
    /// Whether the body goes chunked.
    pub chunked: bool,
}

impl Writer {
    pub(super) fn new() -> Writer {
        Writer {
            out: Out::with_capacity(512),
            body: None,
            chunked: false,
        }
    }

    /// Whether part of the message is still to be written.
    pub(super) fn is_pending(&self) -> bool {
        self.body.is_some() || !self.out.is_empty()
    }

    /// Queues the body after the head in `out.pre`, which is ended here: a body held whole goes in the
    /// same write as the head, with its `content-length`; a streamed one with `content-length` when its
    /// size is known, else chunked when `may_chunk`, else delimited by the close (HTTP/1.0). `length`:
    /// whether to write `content-length` for a whole body with no bytes. Returns whether the end of the
    /// body is the end of the connection.
    pub(super) fn queue_body(&mut self, body: Body, length: bool, may_chunk: bool) -> bool {
        let (whole, rest) = body.into_whole();
        let pre = &mut self.out.pre;
        self.chunked = false;
        self.body = None;
        let mut until_close = false;
        match (whole, rest) {
            (Some(data), _) => {
                if !data.is_empty() || length {
                    push_length(pre, data.len() as u64);
                }
                self.out.data = data;
            }
            (None, Some(body)) => {
                match body.size_hint().exact() {
                    Some(n) => push_length(pre, n),
                    None if may_chunk => {
                        pre.extend_from_slice(b"transfer-encoding: chunked\r\n");
                        self.chunked = true;
                    }
                    None => until_close = true,
                }
                self.body = Some(body);
            }
            (None, None) => {}
        }
        pre.extend_from_slice(CRLF);
        until_close
    }

    /// Writes what is queued and takes the body's frames until it ends or must wait. A frame that is
    /// ready goes in the same `writev` as what was queued before it (a head and the first frame of its
    /// body, say).
    pub(super) fn poll_write(
        &mut self,
        io: &mut (impl AsyncWrite + Unpin),
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), WriteError>> {
        loop {
            if self.out.data.is_empty() && self.out.post.is_empty() {
                if let Some(body) = self.body.as_mut() {
                    match Pin::new(&mut *body).poll_frame(cx) {
                        Poll::Pending if self.out.is_empty() => return Poll::Pending,
                        Poll::Pending => {}
                        Poll::Ready(frame) => {
                            let ended = body.is_end_stream();
                            if let Err(e) = self.take(frame, ended) {
                                return Poll::Ready(Err(WriteError::Body(e)));
                            }
                            continue;
                        }
                    }
                }
            }
            // What was written stays in `pre` (a stale connection's request is sent again from it) until
            // a frame follows it.
            ready!(self.out.poll_flush(io, cx)).map_err(WriteError::Io)?;
            if self.body.is_none() {
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// Queues a frame of the body (or its end) after what `out` holds.
    fn take(
        &mut self,
        frame: Option<Result<Frame<Bytes>, BodyError>>,
        ended: bool,
    ) -> Result<(), BodyError> {
        let out = &mut self.out;
        if out.pos == out.pre.len() {
            out.pre.clear();
            out.pos = 0;
        }
        let last = if self.chunked { LAST } else { &[] };
        match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if !data.is_empty() {
                        if self.chunked {
                            push_hex(&mut out.pre, data.len() as u64);
                            out.pre.extend_from_slice(CRLF);
                            out.post = if ended { CRLF_LAST } else { CRLF };
                        }
                        out.data = data;
                    } else if ended {
                        out.post = last;
                    }
                }
                Err(frame) => {
                    if let (Ok(trailers), true) = (frame.into_trailers(), self.chunked) {
                        out.pre.extend_from_slice(b"0\r\n");
                        push_fields(&mut out.pre, &trailers, false);
                        out.pre.extend_from_slice(CRLF);
                        self.body = None;
                        return Ok(());
                    }
                    if ended {
                        out.post = last;
                    }
                }
            },
            Some(Err(e)) => {
                self.body = None;
                return Err(e);
            }
            None => {
                out.post = last;
                self.body = None;
                return Ok(());
            }
        }
        if ended {
            self.body = None;
        }
        Ok(())
    }
}

/// What `push_fields` found among the fields.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Pushed {
    /// A `content-length` was there.
    pub length: bool,
    /// A `date` was there.
    pub date: bool,
}

/// Appends `name: value\r\n` for every field, but for the framing ones (`content-length`,
/// `transfer-encoding`) when `skip_framing` (they are then the connection's own). Noting `content-length`
/// and `date` on the way costs a comparison of each name's index, where a lookup in the map afterwards
/// cost a hash and a probe, about 120 instructions (`bench/instructions`).
pub(super) fn push_fields(
    out: &mut impl BufMut,
    headers: &HeaderMap,
    skip_framing: bool,
) -> Pushed {
    let mut found = Pushed::default();
    for (name, value) in headers {
        found.date |= name == DATE;
        if skip_framing && (name == CONTENT_LENGTH || name == TRANSFER_ENCODING) {
            found.length |= name == CONTENT_LENGTH;
            continue;
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(CRLF);
    }
    found
}

/// Appends a `content-length` field.
pub(super) fn push_length(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"content-length: ");
    push_decimal(out, n);
    out.extend_from_slice(CRLF);
}

/// Appends `n` in decimal.
pub(super) fn push_decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(crate::decimal(n, &mut [0u8; 20]));
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
    // One decimal value: RFC 9110 (8.6) lets a recipient take a list of one value repeated, or refuse
    // it; Weft refuses it, as hyper and nginx do (the `h1_request` fuzz target compares with hyper).
    // Several fields that agree are still one length.
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// Whether a comma-separated header value holds `token` (ASCII case-insensitive).
pub(super) fn has_token(v: &[u8], token: &[u8]) -> bool {
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
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    /// Field `x-v` of `head` as a server (a request) or the client (a response) makes it: httparse with
    /// the default configuration both use, then `Spans::read`, whose values come from `valid_value`.
    /// `None` when either refuses the head.
    /// Decodes a chunked body fed in one piece; the data and what ended it.
    fn decode_chunked(input: &[u8]) -> (Vec<u8>, Result<Decoded, Invalid>) {
        let mut buf = BytesMut::from(input);
        let mut framing = Framing::Chunked(Chunk::Size);
        let mut data = Vec::new();
        loop {
            match framing.decode(&mut buf) {
                Ok(Decoded::Data(d)) => data.extend_from_slice(&d),
                other => return (data, other),
            }
        }
    }

    #[test]
    fn chunk_lines_and_trailers_are_bounded() {
        // Extensions are skipped, within the line's limit.
        let (data, end) = decode_chunked(b"3;name=value\r\nabc\r\n0\r\n\r\n");
        assert_eq!(&data[..], b"abc");
        assert!(matches!(end, Ok(Decoded::End)), "{end:?}");
        // A size line that has not ended within 4 KiB: refused, not buffered on.
        let mut long = b"3;".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_CHUNK_LINE));
        let (_, end) = decode_chunked(&long);
        assert!(
            matches!(end, Err(Invalid::Rule("chunk size line"))),
            "{end:?}"
        );
        // Shorter and still coming: more bytes wanted.
        let (_, end) = decode_chunked(&long[..100]);
        assert!(matches!(end, Ok(Decoded::More)), "{end:?}");
        // A size beyond u64, one that is not hex, none at all, a control byte in an extension,
        // something other than an extension after the size.
        for bad in [
            &b"fffffffffffffffff\r\n"[..],
            b"zz\r\n",
            b"-1\r\n",
            b";\r\n",
            b"\r\n",
            b"5;e\x04x=1\r\nhello\r\n",
            b"5 x\r\nhello\r\n",
            b"5\rhello\r\n",
        ] {
            let (_, end) = decode_chunked(bad);
            assert!(end.is_err(), "{:?}: {end:?}", String::from_utf8_lossy(bad));
        }
        // Every line of the framing ends with CRLF: a bare LF would be read one way here and another
        // by a stricter reader (found by the `h1_request` fuzz target against hyper).
        for bare in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5;ext=1\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\n\r\n",
            b"5\r\nhello\r\n0\r\nx-t: v\n\r\n",
            b"5\r\nhello\r\n0\r\nx-t: v\r\n\n",
            b"5\r\nhello\r\n0\r\nx-a: 1\nx-b: 2\r\n\r\n",
        ] {
            // Refused, or (an extension httparse reads on past the LF) never ended: not read whole.
            let (_, end) = decode_chunked(bare);
            assert!(
                !matches!(end, Ok(Decoded::End | Decoded::Trailers(_))),
                "{:?}: {end:?}",
                String::from_utf8_lossy(bare)
            );
        }
        let (data, end) =
            decode_chunked(b"5 ;a=b; c\t\r\nhello\r\nA\r\n0123456789\r\n0\r\nx-t: v\r\n\r\n");
        assert_eq!(&data[..], b"hello0123456789");
        assert!(matches!(end, Ok(Decoded::Trailers(_))), "{end:?}");
        // Trailers beyond 64 KiB without their end.
        let mut trailers = b"0\r\nx-t: ".to_vec();
        trailers.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        let (_, end) = decode_chunked(&trailers);
        assert!(matches!(end, Err(Invalid::TooLarge)), "{end:?}");
    }

    fn parsed_value(head: &[u8], response: bool) -> Option<HeaderValue> {
        let mut fields = [httparse::EMPTY_HEADER; 4];
        let mut spans = Spans::default();
        let buf = Bytes::copy_from_slice(head);
        let config = httparse::ParserConfig::default();
        let status = if response {
            let mut r = httparse::Response::new(&mut fields);
            let status = config.parse_response(&mut r, &buf).ok()?;
            spans.record(&buf, r.headers);
            status
        } else {
            let mut r = httparse::Request::new(&mut fields);
            let status = config.parse_request(&mut r, &buf).ok()?;
            spans.record(&buf, r.headers);
            status
        };
        let httparse::Status::Complete(len) = status else {
            return None;
        };
        let (headers, _) = spans.read(&buf.slice(..len)).ok()?;
        headers.get("x-v").cloned()
    }

    /// `valid_value` skips `HeaderValue`'s byte check for ASCII, trusting httparse's. Every byte value,
    /// at the start, the end and inside an 80-byte value (within and across httparse's 8-, 16- and 32-byte
    /// steps), in a request and a response head: whatever the parser keeps is a value
    /// `HeaderValue::from_maybe_shared` makes of the same bytes, and inside a value (where no whitespace
    /// is trimmed and no line can end) the parser refuses exactly the bytes that constructor refuses.
    #[test]
    fn parsed_values_match_the_checked_constructor() {
        let mut kept = 0;
        for b in 0..=255u8 {
            for at in [0, 1, 7, 8, 15, 16, 17, 31, 32, 40, 63, 78, 79] {
                let mut value = vec![b'v'; 80];
                value[at] = b;
                let checked = HeaderValue::from_maybe_shared(Bytes::from(value.clone())).ok();
                let request = [
                    &b"GET / HTTP/1.1\r\nhost: a\r\nx-v: "[..],
                    &value,
                    b"\r\n\r\n",
                ]
                .concat();
                let response = [&b"HTTP/1.1 200 OK\r\nx-v: "[..], &value, b"\r\n\r\n"].concat();
                for (head, response) in [(request, false), (response, true)] {
                    let parsed = parsed_value(&head, response);
                    if let Some(v) = &parsed {
                        let again =
                            HeaderValue::from_maybe_shared(Bytes::copy_from_slice(v.as_bytes()));
                        assert_eq!(
                            again.as_ref().ok().map(HeaderValue::as_bytes),
                            Some(v.as_bytes()),
                            "byte {b:#04x} at {at} (response: {response}) kept in an invalid value"
                        );
                        kept += 1;
                    }
                    if at != 0 && at != 79 {
                        assert_eq!(
                            parsed.as_ref().map(HeaderValue::as_bytes),
                            checked.as_ref().map(HeaderValue::as_bytes),
                            "byte {b:#04x} at {at} (response: {response})"
                        );
                    }
                }
            }
        }
        // Tab, space to `~` and 0x80 to 0xff, at each place in both heads (those at the edges trimmed).
        assert!(kept >= (1 + 95 + 128) * 13 * 2, "only {kept} values kept");
    }

    async fn fill(io: &TcpStream, buf: &mut BytesMut) -> usize {
        tokio::time::timeout(Duration::from_secs(5), poll_fn(|cx| poll_fill(io, buf, cx)))
            .await
            .expect("the read is woken")
            .expect("read")
    }

    /// A short read clears the socket's readiness without a second `recv`; bytes and a close that come
    /// after it, or with it, are still seen.
    #[tokio::test]
    async fn a_short_read_loses_neither_later_bytes_nor_the_close() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut peer = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (io, _) = listener.accept().await.expect("accept");
        let mut buf = BytesMut::with_capacity(READ_BUF);
        peer.write_all(b"abc").await.expect("write");
        assert_eq!(fill(&io, &mut buf).await, 3);
        // Bytes that come after the short read.
        peer.write_all(b"defg").await.expect("write");
        assert_eq!(fill(&io, &mut buf).await, 4);
        // Bytes and the close together, both there before the read: both are read.
        peer.write_all(b"h").await.expect("write");
        peer.shutdown().await.expect("shutdown");
        crate::test_util::eventually("the close to arrive", || async {
            crate::test_util::close_reached(&io).then_some(())
        })
        .await;
        assert_eq!(fill(&io, &mut buf).await, 1);
        assert_eq!(fill(&io, &mut buf).await, 0);
        assert_eq!(&buf[..], b"abcdefgh");
    }

    #[test]
    fn known_field_names_are_found_in_any_case() {
        for &name in KNOWN_NAMES {
            let upper = name.to_ascii_uppercase();
            for raw in [name, upper.as_str()] {
                let got = known_name(raw.as_bytes()).unwrap_or_else(|| panic!("{raw} not found"));
                assert_eq!(got, HeaderName::from_static(name));
                assert_eq!(got.as_str(), name);
            }
        }
        // Near misses, in each word of a long name and in its overlapping last one.
        for miss in [
            "x-envoy-upstream-service-tima",
            "y-envoy-upstream-service-time",
            "x-envoy-upstreaM-servicE-timf",
        ] {
            assert_eq!(known_name(miss.as_bytes()), None, "{miss}");
        }
        assert_eq!(known_name(b"Content-Lengti"), None);
        assert_eq!(known_name(b"HOSt"), Some(http::header::HOST));
        // Anything else goes the long way, and keeps being refused when it is no name.
        assert_eq!(known_name(b"x-custom"), None);
        assert_eq!(
            field_name(b"X-Custom").expect("a name").as_str(),
            "x-custom"
        );
        assert_eq!(known_name(b"hosts"), None);
        assert_eq!(field_name(b"bad name"), None);
    }

    #[test]
    fn read_buffers_come_back_only_when_whole() {
        // Drain this thread's pool first: the test counts on what it puts there.
        while READ_BUFS.with(|b| b.borrow_mut().pop()).is_some() {}
        let mut buf = read_buf();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let head = buf.split().freeze();
        // A head still held: the buffer is not whole, and is not kept.
        give_back(buf);
        assert_eq!(READ_BUFS.with(|b| b.borrow().len()), 0);
        drop(head);

        let mut buf = read_buf();
        let at = buf.as_ptr();
        buf.extend_from_slice(b"abc");
        drop(buf.split().freeze());
        give_back(buf);
        let again = read_buf();
        assert_eq!(again.as_ptr(), at, "the same allocation, from its start");
        assert!(again.is_empty() && again.capacity() >= READ_BUF);

        // One that grew large is let go.
        let mut big = again;
        big.reserve(8 * READ_BUF);
        give_back(big);
        assert_eq!(READ_BUFS.with(|b| b.borrow().len()), 0);
    }

    #[test]
    fn recycled_header_maps_come_back_empty_with_their_room() {
        let mut map = header_map(4);
        map.insert(CONNECTION, HeaderValue::from_static("close"));
        let room = map.capacity();
        recycle(map);
        let again = header_map(4);
        assert!(again.is_empty());
        assert_eq!(again.capacity(), room);
        // A map asked for more room than a recycled one has gets it.
        recycle(again);
        assert!(header_map(40).capacity() >= 40);
        // Large maps are not kept.
        recycle(HeaderMap::with_capacity(1000));
        assert!(header_map(1).capacity() < 1000);
    }

    #[test]
    fn chunked_bodies_decode_across_pieces_with_their_trailers() {
        let mut framing = Framing::Chunked(Chunk::Size);
        let mut buf = BytesMut::from(&b"3\r\nab"[..]);
        let mut data = Vec::new();
        let mut trailers = None;
        let mut feed: &[&[u8]] = &[b"c\r\n0\r\nx-t", b": 1\r\n\r\n"];
        loop {
            match framing.decode(&mut buf).expect("valid") {
                Decoded::Data(d) => data.extend_from_slice(&d),
                Decoded::Trailers(t) => trailers = Some(t),
                Decoded::End => break,
                Decoded::More => {
                    let (next, rest) = feed.split_first().expect("more bytes");
                    buf.extend_from_slice(next);
                    feed = rest;
                }
            }
        }
        assert_eq!(data, b"abc");
        assert_eq!(trailers.expect("trailers")["x-t"], "1");
        assert!(buf.is_empty());
    }
}
