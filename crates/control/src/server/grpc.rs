//! The ADS gRPC service, routed by hand so responses can be sent as pre-encoded frames ([`super::wire`]).
//!
//! Requests are decoded with tonic's own streaming decoder; responses are the frames each connection
//! task queues, ending with the gRPC status in the trailers.

use super::wire::Frames;
use super::{Discovery, Protocol, Req, Requests};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::Frame;
use std::convert::Infallible;
use std::future::{ready, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::codec::Streaming;
use tonic::server::NamedService;
use tonic::Status;
use tonic_prost::ProstDecoder;

const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// What a connection task sends down its response stream.
pub enum Out {
    /// One encoded message.
    Message(Frames),
    /// The end of the stream, with this status.
    End(Status),
}

/// The service tonic's router serves under the ADS name.
#[derive(Clone)]
pub struct AdsService {
    discovery: Arc<Discovery>,
    max_message: usize,
}

impl AdsService {
    /// Serves `discovery`, refusing request messages larger than `max_message` bytes.
    pub fn new(discovery: Discovery, max_message: usize) -> AdsService {
        AdsService {
            discovery: Arc::new(discovery),
            max_message,
        }
    }
}

impl NamedService for AdsService {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for AdsService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let peer = req
            .extensions()
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|i| i.remote_addr());
        if req
            .headers()
            .get("grpc-encoding")
            .is_some_and(|e| e != "identity")
        {
            return ready(Ok(Status::unimplemented(
                "weftd does not accept compressed ADS requests",
            )
            .into_http()));
        }
        let path = req.uri().path().to_string();
        let body = req.into_body();
        let (tx, rx) = mpsc::channel(super::STREAM_BUFFER);
        let max = self.max_message;
        match path.as_str() {
            SOTW_PATH => {
                let requests = decode(body, max, Req::from_sotw);
                self.discovery.serve(Protocol::Sotw, requests, tx, peer);
            }
            DELTA_PATH => {
                let requests = decode(body, max, Req::from_delta);
                self.discovery.serve(Protocol::Delta, requests, tx, peer);
            }
            _ => return ready(Ok(Status::unimplemented(path).into_http())),
        }
        let mut resp = http::Response::new(tonic::body::Body::new(ResponseBody {
            rx,
            current: Vec::new().into_iter(),
            done: false,
        }));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        ready(Ok(resp))
    }
}

/// The request stream of one ADS call, decoded by tonic and turned into [`Req`]s.
fn decode<M>(body: tonic::body::Body, max_message: usize, into: fn(M) -> Req) -> Requests
where
    M: prost::Message + Default + Send + 'static,
{
    let stream =
        Streaming::<M>::new_request(ProstDecoder::default(), body, None, Some(max_message));
    Box::pin(stream.map(move |r| r.map(into)))
}

/// A response stream: the queued frames in order, then the status as trailers.
struct ResponseBody {
    rx: mpsc::Receiver<Out>,
    current: std::vec::IntoIter<Bytes>,
    done: bool,
}

fn trailers(status: &Status) -> HeaderMap {
    let mut h = HeaderMap::new();
    if status.add_header(&mut h).is_err() {
        h.insert("grpc-status", HeaderValue::from_static("13"));
    }
    h
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        loop {
            if let Some(b) = self.current.next() {
                if b.is_empty() {
                    continue;
                }
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if self.done {
                return Poll::Ready(None);
            }
            match self.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Out::Message(f))) => self.current = f.0.into_iter(),
                Poll::Ready(Some(Out::End(s))) => {
                    self.done = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers(&s)))));
                }
                Poll::Ready(None) => {
                    self.done = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers(&Status::ok(""))))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        false
    }
}
