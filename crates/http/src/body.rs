//! The body of proxied requests and responses: an enum of the four kinds the proxy sends.
//!
//! A boxed trait object (`BoxBody`) cost one allocation per body: the empty body of every GET sent
//! upstream, and every response body returned downstream. Measured at 1,000 req/s with `perf` probes on
//! glibc's `malloc`: 16 allocations per HTTP/1.1 request before, 2 of them these boxes.

use super::{h1, h2};
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
#[cfg(test)]
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A request or response body as the proxy sends it.
pub struct Body(Kind);

enum Kind {
    /// Held whole (a buffered request body, a local response); `None` once sent, or when empty.
    Full(Option<Bytes>),
    /// An HTTP/2 response body, as it arrives from an upstream.
    H2(h2::ResponseBody),
    /// An HTTP/2 request body, as it arrives from a downstream.
    H2Request(h2::RequestBody),
    /// Straight from hyper (tests that feed bodies through hyper's HTTP/1.1 server).
    #[cfg(test)]
    Incoming(Incoming),
    /// An HTTP/1.1 request body streamed from its downstream connection.
    Downstream1(h1::server::RequestBody),
    /// An HTTP/1.1 response body read from its upstream connection, which goes back to the pool at its
    /// end.
    Upstream1(h1::ResponseBody),
}

/// Why reading a body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// An HTTP/2 upstream's response body.
    #[error(transparent)]
    H2(#[from] h2::ClientError),
    /// An HTTP/2 downstream's request body.
    #[error(transparent)]
    H2Request(#[from] h2::StreamError),
    /// hyper's (tests).
    #[cfg(test)]
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    /// An HTTP/1.1 downstream's request body.
    #[error(transparent)]
    Downstream1(#[from] h1::server::Error),
    /// An HTTP/1.1 upstream's response body.
    #[error(transparent)]
    Upstream1(#[from] h1::Error),
}

impl Body {
    /// No bytes.
    pub fn empty() -> Body {
        Body(Kind::Full(None))
    }

    /// These bytes, in one frame.
    pub fn full(b: Bytes) -> Body {
        Body(Kind::Full((!b.is_empty()).then_some(b)))
    }

    /// A body read from a peer through hyper, passed on as it arrives (tests).
    #[cfg(test)]
    pub fn incoming(b: Incoming) -> Body {
        Body(Kind::Incoming(b))
    }

    /// A response body received from an HTTP/2 upstream, passed on as it arrives.
    pub(super) fn h2_response(b: h2::ResponseBody) -> Body {
        Body(Kind::H2(b))
    }

    pub(super) fn h2_request(b: h2::RequestBody) -> Body {
        Body(Kind::H2Request(b))
    }

    pub(super) fn downstream1(b: h1::server::RequestBody) -> Body {
        Body(Kind::Downstream1(b))
    }

    pub(super) fn upstream1(b: h1::ResponseBody) -> Body {
        Body(Kind::Upstream1(b))
    }

    /// The body's bytes when it is held whole (an ended streamed body counts as empty), or else the body
    /// itself, to be streamed.
    pub(super) fn into_whole(self) -> (Option<Bytes>, Option<Body>) {
        match self.0 {
            Kind::Full(b) => (Some(b.unwrap_or_default()), None),
            Kind::H2(b) if b.is_end_stream() => (Some(Bytes::new()), None),
            Kind::H2Request(b) if b.is_end_stream() => (Some(Bytes::new()), None),
            #[cfg(test)]
            Kind::Incoming(b) if b.is_end_stream() => (Some(Bytes::new()), None),
            Kind::Downstream1(b) if b.is_end_stream() => (Some(Bytes::new()), None),
            other => (None, Some(Body(other))),
        }
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Kind::Full(b) => f.debug_tuple("Full").field(b).finish(),
            Kind::H2(b) => b.fmt(f),
            Kind::H2Request(b) => b.fmt(f),
            #[cfg(test)]
            Kind::Incoming(b) => f.debug_tuple("Incoming").field(b).finish(),
            Kind::Downstream1(b) => b.fmt(f),
            Kind::Upstream1(b) => b.fmt(f),
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.get_mut().0 {
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::H2(b) => b.poll_frame(cx).map_err(BodyError::H2),
            Kind::H2Request(b) => b.poll_frame(cx).map_err(BodyError::H2Request),
            #[cfg(test)]
            Kind::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(BodyError::Hyper),
            Kind::Downstream1(b) => Pin::new(b).poll_frame(cx).map_err(BodyError::Downstream1),
            Kind::Upstream1(b) => Pin::new(b).poll_frame(cx).map_err(BodyError::Upstream1),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Full(b) => b.is_none(),
            Kind::H2(b) => b.is_end_stream(),
            Kind::H2Request(b) => b.is_end_stream(),
            #[cfg(test)]
            Kind::Incoming(b) => b.is_end_stream(),
            Kind::Downstream1(b) => b.is_end_stream(),
            Kind::Upstream1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::H2(b) => b.size_hint(),
            Kind::H2Request(b) => b.size_hint(),
            #[cfg(test)]
            Kind::Incoming(b) => b.size_hint(),
            Kind::Downstream1(b) => b.size_hint(),
            Kind::Upstream1(b) => b.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn full_bodies_send_their_bytes_once() {
        let b = Body::full(Bytes::from_static(b"hello"));
        assert!(!b.is_end_stream());
        assert_eq!(b.size_hint().exact(), Some(5));
        assert_eq!(b.collect().await.expect("body").to_bytes(), "hello");

        let mut b = Body::full(Bytes::from_static(b"x"));
        let frame = b.frame().await.expect("a frame").expect("data");
        assert_eq!(frame.into_data().expect("data"), "x");
        assert!(b.is_end_stream());
        assert!(b.frame().await.is_none());
    }

    #[tokio::test]
    async fn empty_bodies_end_at_once() {
        for mut b in [Body::empty(), Body::full(Bytes::new())] {
            assert!(b.is_end_stream());
            assert_eq!(b.size_hint().exact(), Some(0));
            assert!(b.frame().await.is_none());
        }
    }

    #[test]
    fn the_body_stays_small() {
        // It lives inline in the connections' per-request state (the HTTP/1.1 writer's response
        // body, each HTTP/2 stream's) and in every request sent upstream.
        assert!(
            std::mem::size_of::<Body>() <= 160,
            "{}",
            std::mem::size_of::<Body>()
        );
    }
}
