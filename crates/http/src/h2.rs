//! HTTP/2, Weft's own codec: `server` serves downstream connections, `client` the shared upstream ones;
//! `frame` and `hpack` are the wire format both speak.
//!
//! It replaced hyper's HTTP/2 layer and then the `h2` crate under it. hyper ran every HTTP/2 request as
//! two extra tasks, a channel and a oneshot (about 15,000 instructions per proxied request,
//! `bench/instructions` with `WORKLOAD=http2-streams`); the `h2` crate queued frames as enums through a
//! stream store under a lock, converted header maps to its own field type and back, and copied every
//! value (another 30,000 or so across the two connections of a proxied request). Here a downstream
//! connection is one task that owns its streams, as Envoy serves a connection's streams on its thread,
//! and header blocks are decoded straight into the proxy's types and encoded straight from them.

mod client;
#[cfg(test)]
mod client_conformance;
#[cfg(test)]
mod conformance;
mod frame;
mod guard;
pub(crate) mod hpack;
mod server;
#[cfg(test)]
mod test_peer;

pub(crate) use client::{handshake, Connection, Error as ClientError, ResponseBody};
pub(crate) use frame::Reason;
#[cfg(feature = "fuzzing")]
pub(crate) use server::Error as ServerError;
pub(crate) use server::{serve_with, RequestBody, StreamError};

use bytes::{Buf, BytesMut};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};

/// Room a read asks for: a whole frame of the default maximum size, with its header.
const READ_ROOM: usize = frame::DEFAULT_MAX_FRAME_SIZE + frame::HEAD_LEN;

/// Reads once into `rbuf`'s spare capacity, first making room for a whole default-sized frame: the number
/// of bytes read, 0 at the end of the stream.
///
/// `poll_read_buf` costs what reading by hand did: it hands `poll_read` the spare capacity as it is (a
/// `ReadBuf` over uninitialized bytes, nothing zeroed or copied) and advances the length by what was
/// read; one `poll_read`, so one `recv` at most. The room is made here, so its own reserve for a full
/// buffer never runs.
fn poll_read_into<T: AsyncRead + Unpin>(
    io: &mut T,
    rbuf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    if rbuf.capacity() - rbuf.len() < READ_ROOM {
        rbuf.reserve(READ_ROOM);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, rbuf)
}

/// Writes the whole of `wbuf`, which is left empty (its capacity kept), then flushes.
fn poll_write_all<T: AsyncWrite + Unpin>(
    io: &mut T,
    wbuf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<()>> {
    while !wbuf.is_empty() {
        let n = ready!(Pin::new(&mut *io).poll_write(cx, wbuf))?;
        if n == 0 {
            return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
        }
        wbuf.advance(n);
    }
    wbuf.clear();
    Pin::new(io).poll_flush(cx)
}

/// A field value decoded from a header block, checked: RFC 9113 8.2.1 forbids NUL, CR and LF, and
/// `HeaderValue` every control byte but tab. The usual value, printable ASCII, is checked eight bytes at
/// a time without branches; `HeaderValue::from_maybe_shared` checks a byte at a time, about 4
/// instructions a byte (`bench/instructions`). Anything else (obs-text) takes that checked path.
pub fn field_value(b: bytes::Bytes) -> Option<http::HeaderValue> {
    if !printable(&b) {
        return http::HeaderValue::from_maybe_shared(b).ok();
    }
    // SAFETY: the constructor requires UTF-8. `printable` found every byte in 0x20..=0x7e: ASCII, hence
    // UTF-8. Those are also ASCII bytes `HeaderValue::from_maybe_shared` accepts (it refuses control
    // bytes but tab, and 0x7f), so the value is the one the checked constructor would make, same bytes,
    // shared not copied; tab and obs-text take the checked path above.
    // `field_values_match_the_checked_constructor` runs every byte value through both.
    #[allow(unsafe_code)]
    Some(unsafe { http::HeaderValue::from_maybe_shared_unchecked(b) })
}

/// Whether every byte is printable ASCII (0x20 to 0x7e), eight bytes at a time: a byte below 0x20 or
/// above 0x7e sets its word's high bit in one of two borrow-free sums (the usual SWAR tests for "a byte
/// less than n" and "a byte more than n"). A fold over the bytes cost about 4 instructions a byte, 150 for
/// the two values the proxy makes per request (`bench/instructions`); this is under one.
#[inline]
fn printable(b: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Bytes below 0x20 (or at 0x80 and above: `!w`'s high bit is clear for those, but `more` catches them).
    let less = |w: u64| w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    // Bytes above 0x7e: adding 1 carries 0x7f into the high bit; high bits set already count too.
    let more = |w: u64| (w.wrapping_add(ONES) | w) & HIGH;
    let mut words = b.chunks_exact(8);
    let mut bad = 0;
    for w in &mut words {
        let w = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        bad |= less(w) | more(w);
    }
    let mut tail = [0x20u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    let w = u64::from_le_bytes(tail);
    bad |= less(w) | more(w);
    bad == 0
}

/// A stream's received DATA, waiting to be read: the first piece held inline, since most streams receive
/// one (a 1 KiB response, a gRPC message), and a `VecDeque` allocated only for more. An empty `VecDeque`
/// allocates on its first push: one `malloc` and `free` per proxied response (`bench/instructions`).
#[derive(Default)]
struct DataQueue {
    first: Option<bytes::Bytes>,
    rest: std::collections::VecDeque<bytes::Bytes>,
}

impl DataQueue {
    fn push(&mut self, b: bytes::Bytes) {
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(b);
        } else {
            self.rest.push_back(b);
        }
    }

    fn pop(&mut self) -> Option<bytes::Bytes> {
        self.first.take().or_else(|| self.rest.pop_front())
    }

    fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_empty()
    }

    /// Empties it, returning how many bytes it held.
    fn clear(&mut self) -> usize {
        let n = self.first.take().map_or(0, |b| b.len())
            + self.rest.iter().map(bytes::Bytes::len).sum::<usize>();
        self.rest.clear();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::DataQueue;
    use bytes::Bytes;

    /// `field_value` skips `HeaderValue`'s check for printable ASCII: for every byte value, alone, at the
    /// start, middle and end of values shorter and longer than the fold's eight-byte steps, and filling a
    /// whole value, it gives what `HeaderValue::from_maybe_shared` gives: the same verdict, the same bytes.
    #[test]
    fn field_values_match_the_checked_constructor() {
        for b in 0..=255u8 {
            let mut values = vec![vec![b; 1], vec![b; 32]];
            for len in [2, 7, 8, 9, 16, 17, 33, 64] {
                for at in [0, len / 2, len - 1] {
                    let mut v = vec![b'v'; len];
                    v[at] = b;
                    values.push(v);
                }
            }
            for v in values {
                let checked = http::HeaderValue::from_maybe_shared(Bytes::from(v.clone())).ok();
                let fast = super::field_value(Bytes::from(v.clone()));
                assert_eq!(
                    fast.as_ref().map(|h| h.as_bytes()),
                    checked.as_ref().map(|h| h.as_bytes()),
                    "byte {b:#04x} in {v:?}"
                );
            }
        }
    }

    /// A read appends to what the buffer holds, with room made for a whole frame first.
    #[tokio::test]
    async fn a_read_appends_after_what_the_buffer_holds() {
        let mut rbuf = bytes::BytesMut::from(&b"ab"[..]);
        let mut io = &b"cdef"[..];
        let n = std::future::poll_fn(|cx| super::poll_read_into(&mut io, &mut rbuf, cx)).await;
        assert_eq!(n.expect("read"), 4);
        assert_eq!(&rbuf[..], b"abcdef");
        assert!(rbuf.capacity() - 2 >= super::READ_ROOM);
        let n = std::future::poll_fn(|cx| super::poll_read_into(&mut io, &mut rbuf, cx)).await;
        assert_eq!(n.expect("the end"), 0);
        assert_eq!(&rbuf[..], b"abcdef");
    }

    #[test]
    fn printable_is_printable_ascii_at_every_position() {
        for len in 0..20 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut v = vec![b'a'; len];
                    v[at] = b;
                    assert_eq!(
                        super::printable(&v),
                        (0x20..=0x7e).contains(&b),
                        "byte {b:#x} at {at} of {len}"
                    );
                }
            }
        }
        assert!(super::printable(b""));
    }

    #[test]
    fn field_values_are_checked() {
        for ok in [&b""[..], b"text/plain", b"a\tb", b"~ !", b"caf\xc3\xa9"] {
            let v = super::field_value(Bytes::from_static(ok)).expect("valid");
            assert_eq!(v.as_bytes(), ok);
        }
        for bad in [&b"a\nb"[..], b"a\rb", b"\0", b"x\x7f", b"\x1f"] {
            assert!(
                super::field_value(Bytes::from_static(bad)).is_none(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn data_queues_keep_their_order() {
        let mut q = DataQueue::default();
        assert!(q.is_empty());
        q.push(Bytes::from_static(b"a"));
        q.push(Bytes::from_static(b"bb"));
        assert_eq!(q.pop().as_deref(), Some(&b"a"[..]));
        // The inline slot is free again, but older bytes wait behind it.
        q.push(Bytes::from_static(b"ccc"));
        assert_eq!(q.pop().as_deref(), Some(&b"bb"[..]));
        assert_eq!(q.pop().as_deref(), Some(&b"ccc"[..]));
        assert!(q.pop().is_none());
        q.push(Bytes::from_static(b"dd"));
        q.push(Bytes::from_static(b"e"));
        assert_eq!(q.clear(), 3);
        assert!(q.is_empty());
    }
}
