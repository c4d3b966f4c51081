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
    let printable = b.iter().fold(true, |ok, &c| {
        ok & (c.wrapping_sub(0x20) < 0x5f || c == b'\t')
    });
    if !printable {
        return http::HeaderValue::from_maybe_shared(b).ok();
    }
    // SAFETY: the constructor requires UTF-8. The fold above found every byte to be tab or in 0x20..=0x7e
    // (`c - 0x20 < 0x5f`, wrapping, so bytes below 0x20 fail too): ASCII, hence UTF-8. Those are also
    // exactly the ASCII bytes `HeaderValue::from_maybe_shared` accepts (it refuses the other control
    // bytes and 0x7f), so the value is the one the checked constructor would make, same bytes, shared
    // not copied: `field_values_match_the_checked_constructor` runs every byte value through both.
    #[allow(unsafe_code)]
    Some(unsafe { http::HeaderValue::from_maybe_shared_unchecked(b) })
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
