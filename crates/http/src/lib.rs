//! Weft's HTTP codecs: HTTP/1.1 (server and pooled client), HTTP/2 (server, shared client, frames and
//! HPACK), the accept loop that tells them apart, and the sockets they run on.
//!
//! The crate knows nothing of xDS, routes or clusters: a server hands each request to a [`server::Handler`]
//! and writes the response it gets back; the client ([`upstream::Upstream`]) sends a request to the
//! endpoint address it is given. Every limit and defence, with its default, the RFC section or CVE it
//! answers, and the test that holds it, is listed in this crate's `README.md`.
#![deny(unsafe_code)]
// audited exceptions, each with a SAFETY comment and a test: `h1::codec::valid_value`, `h2::field_value`,
// `net::recv_into`, `net::Listener::try_from`, `net::Listener::defer_accept`
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod body;
pub mod date;
pub mod drain;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod h1;
pub mod h2;
pub mod limits;
pub mod net;
pub mod server;
#[cfg(test)]
mod test_util;
pub mod tls;
pub mod upstream;

pub use body::{Body, BodyError, Observer};
pub use h2::field_value;
pub use limits::Limits;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use tokio::sync::watch;

/// Request bodies with a `content-length` up to this size are read whole by the HTTP/1.1 server before
/// its handler runs (the proxy buffers them to retry anyway); larger or unsized bodies are streamed.
pub const WHOLE_BODY_LIMIT: u64 = 64 * 1024;

/// A full body from bytes.
pub fn full(b: impl Into<Bytes>) -> Body {
    Body::full(b.into())
}

/// A plain response with a status and a text body.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// Resolves once a stop flag turns true (or its sender is gone). Cancellation-safe: it only observes.
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, before any other await.
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// `n` in decimal ASCII, written at the end of `digits` (no formatting machinery on the request path).
pub fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &digits[at..]
}

/// Bytes per slab of [`slab_cut`].
const SLAB: usize = 4096;

thread_local! {
    static VALUE_SLAB: std::cell::RefCell<bytes::BytesMut> =
        std::cell::RefCell::new(bytes::BytesMut::new());
}

/// Bytes made per request (`x-request-id` and `x-envoy-upstream-service-time` values, the head an HTTP/1.1
/// upstream is sent), written by `write` into a per-thread slab and cut from it.
/// `HeaderValue::from_bytes` allocated for each value, and again when a retryable request's headers were
/// copied for the first try (`Bytes` turns a vector into a shared buffer on its first clone); a slab
/// allocates once per `SLAB` bytes and its pieces clone by reference count. A slab is freed when the last
/// piece cut from it is. A piece longer than the room left makes its own allocation (correct, only slower).
pub fn slab_cut(write: impl FnOnce(&mut bytes::BytesMut)) -> Bytes {
    VALUE_SLAB.with(|slab| {
        let mut slab = slab.borrow_mut();
        if slab.capacity() - slab.len() < SLAB / 8 {
            *slab = bytes::BytesMut::with_capacity(SLAB);
        }
        write(&mut slab);
        slab.split().freeze()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slab_pieces_are_separate_and_survive_their_slab() {
        // Enough pieces to fill several slabs: each keeps its own bytes after the slab moved on.
        let pieces: Vec<(String, Bytes)> = (0..1000)
            .map(|i| {
                let text = format!("{i:036}");
                let b = slab_cut(|s| s.extend_from_slice(text.as_bytes()));
                (text, b)
            })
            .collect();
        for (text, b) in &pieces {
            assert_eq!(b, text.as_bytes());
        }
        let long = "x".repeat(SLAB + 1);
        assert_eq!(slab_cut(|s| s.extend_from_slice(long.as_bytes())), long);
    }

    #[test]
    fn decimals() {
        for n in [0, 7, 10, 1234, u64::MAX] {
            assert_eq!(decimal(n, &mut [0; 20]), n.to_string().as_bytes());
        }
    }
}
