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

/// A request or response body as the proxy sends it, and what watches it pass, if anything.
pub struct Body(Kind, Option<Watch>);

/// Watches a body pass: telemetry counts its bytes and learns when it ends, without a body type of
/// its own (the servers take this one).
pub trait Observer: Send + Sync + 'static {
    /// A data frame passed.
    fn data(&mut self, data: &Bytes);
    /// The trailers passed.
    fn trailers(&mut self, trailers: &http::HeaderMap);
    /// The body ended: `whole` when its last frame passed, else cut short (an error, or dropped before
    /// its end). Called once.
    fn end(self: Box<Self>, whole: bool);
}

/// Holds an observer until its body ends; dropped first, the body was cut short.
struct Watch(Option<Box<dyn Observer>>);

impl Watch {
    fn end(&mut self, whole: bool) {
        if let Some(o) = self.0.take() {
            o.end(whole);
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.end(false);
    }
}

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
        Body(Kind::Full(None), None)
    }

    /// These bytes, in one frame.
    pub fn full(b: Bytes) -> Body {
        Body(Kind::Full((!b.is_empty()).then_some(b)), None)
    }

    /// A body read from a peer through hyper, passed on as it arrives (tests).
    #[cfg(test)]
    pub fn incoming(b: Incoming) -> Body {
        Body(Kind::Incoming(b), None)
    }

    /// A response body received from an HTTP/2 upstream, passed on as it arrives.
    pub(super) fn h2_response(b: h2::ResponseBody) -> Body {
        Body(Kind::H2(b), None)
    }

    pub(super) fn h2_request(b: h2::RequestBody) -> Body {
        Body(Kind::H2Request(b), None)
    }

    pub(super) fn downstream1(b: h1::server::RequestBody) -> Body {
        Body(Kind::Downstream1(b), None)
    }

    pub(super) fn upstream1(b: h1::ResponseBody) -> Body {
        Body(Kind::Upstream1(b), None)
    }

    /// This body, watched by `observer` from here on. A body that has already ended ends for the
    /// observer at once.
    pub fn observed(self, observer: Box<dyn Observer>) -> Body {
        let mut watch = Watch(Some(observer));
        if self.0.is_end_stream() {
            watch.end(true);
        }
        // An observer already there sees no more: the body is ended for it.
        Body(self.0, Some(watch))
    }

    /// The body's bytes when it is held whole (an ended streamed body counts as empty), or else the body
    /// itself, to be streamed. A body taken whole has passed its observer.
    pub(super) fn into_whole(self) -> (Option<Bytes>, Option<Body>) {
        let Body(kind, watch) = self;
        let whole = match kind {
            Kind::Full(b) => b.unwrap_or_default(),
            Kind::H2(b) if b.is_end_stream() => Bytes::new(),
            Kind::H2Request(b) if b.is_end_stream() => Bytes::new(),
            #[cfg(test)]
            Kind::Incoming(b) if b.is_end_stream() => Bytes::new(),
            Kind::Downstream1(b) if b.is_end_stream() => Bytes::new(),
            other => return (None, Some(Body(other, watch))),
        };
        if let Some(mut w) = watch {
            if let Some(o) = w.0.as_mut() {
                o.data(&whole);
            }
            w.end(true);
        }
        (Some(whole), None)
    }
}

impl Kind {
    fn is_end_stream(&self) -> bool {
        match self {
            Kind::Full(b) => b.is_none(),
            Kind::H2(b) => b.is_end_stream(),
            Kind::H2Request(b) => b.is_end_stream(),
            #[cfg(test)]
            Kind::Incoming(b) => b.is_end_stream(),
            Kind::Downstream1(b) => b.is_end_stream(),
            Kind::Upstream1(b) => b.is_end_stream(),
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
        let this = self.get_mut();
        let polled = match &mut this.0 {
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::H2(b) => b.poll_frame(cx).map_err(BodyError::H2),
            Kind::H2Request(b) => b.poll_frame(cx).map_err(BodyError::H2Request),
            #[cfg(test)]
            Kind::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(BodyError::Hyper),
            Kind::Downstream1(b) => Pin::new(b).poll_frame(cx).map_err(BodyError::Downstream1),
            Kind::Upstream1(b) => Pin::new(b).poll_frame(cx).map_err(BodyError::Upstream1),
        };
        if let Some(watch) = &mut this.1 {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(o) = watch.0.as_mut() {
                        if let Some(d) = frame.data_ref() {
                            o.data(d);
                        } else if let Some(t) = frame.trailers_ref() {
                            o.trailers(t);
                        }
                    }
                    // Writers that know the length stop polling at the last frame.
                    if this.0.is_end_stream() {
                        watch.end(true);
                    }
                }
                Poll::Ready(None) => watch.end(true),
                Poll::Ready(Some(Err(_))) => watch.end(false),
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
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

    /// What an observer saw: data lengths, whether trailers passed, and how the body ended.
    #[derive(Default)]
    struct Seen {
        data: Vec<usize>,
        trailers: bool,
        ended: Option<bool>,
    }

    struct Recorder(std::sync::Arc<std::sync::Mutex<Seen>>);

    impl Observer for Recorder {
        fn data(&mut self, data: &Bytes) {
            self.0.lock().expect("lock").data.push(data.len());
        }
        fn trailers(&mut self, _: &http::HeaderMap) {
            self.0.lock().expect("lock").trailers = true;
        }
        fn end(self: Box<Self>, whole: bool) {
            let mut seen = self.0.lock().expect("lock");
            assert!(seen.ended.is_none(), "ended twice");
            seen.ended = Some(whole);
        }
    }

    fn watched(b: Body) -> (Body, std::sync::Arc<std::sync::Mutex<Seen>>) {
        let seen = std::sync::Arc::default();
        (
            b.observed(Box::new(Recorder(std::sync::Arc::clone(&seen)))),
            seen,
        )
    }

    #[tokio::test]
    async fn an_observer_sees_the_bytes_and_the_end() {
        // Polled to the end: whole, at the last frame (writers that know the length stop there).
        let (mut b, seen) = watched(Body::full(Bytes::from_static(b"hello")));
        assert!(b.frame().await.is_some());
        assert_eq!(seen.lock().expect("lock").data, [5]);
        assert_eq!(seen.lock().expect("lock").ended, Some(true));
        drop(b);
        assert_eq!(seen.lock().expect("lock").ended, Some(true));

        // Already ended: ended at once.
        let (_b, seen) = watched(Body::empty());
        assert_eq!(seen.lock().expect("lock").ended, Some(true));

        // Taken whole by a writer: seen whole.
        let (b, seen) = watched(Body::full(Bytes::from_static(b"abc")));
        let (whole, rest) = b.into_whole();
        assert_eq!(
            (whole.as_deref(), rest.is_none()),
            (Some(&b"abc"[..]), true)
        );
        assert_eq!(seen.lock().expect("lock").data, [3]);
        assert_eq!(seen.lock().expect("lock").ended, Some(true));

        // Dropped before its end: cut short.
        let (b, seen) = watched(Body::full(Bytes::from_static(b"never sent")));
        drop(b);
        let seen = seen.lock().expect("lock");
        assert_eq!(
            (seen.data.len(), seen.trailers, seen.ended),
            (0, false, Some(false))
        );
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
