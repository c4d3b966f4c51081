//! Istio's CA API, `istio.v1.auth.IstioCertificateService` (Istio's `security/v1alpha1/ca.proto`): the
//! messages with Istio's field numbers, a typed client call, and a server that routes the one method to
//! a [`CertificateService`]. Written by hand: the API is one unary method and `envoy-types` does not
//! carry it. weftd serves it; weft-proxy calls it.
//!
//! The caller authenticates with the gRPC metadata `authorization: Bearer <token>` ([`AUTHORIZATION`]);
//! the answer is the chain in PEM, one certificate per element, leaf first and root last.

use crate::pb::google::protobuf::Struct;
use std::sync::Arc;
use tonic::codegen::{http, Body, BoxFuture, Bytes, Context, Poll, StdError};

/// The service's full name.
pub const SERVICE_NAME: &str = "istio.v1.auth.IstioCertificateService";
/// The method's path.
pub const CREATE_CERTIFICATE_PATH: &str =
    "/istio.v1.auth.IstioCertificateService/CreateCertificate";
/// The metadata key carrying the caller's credential (`Bearer <token>`).
pub const AUTHORIZATION: &str = "authorization";

/// `istio.v1.auth.IstioCertificateRequest`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct IstioCertificateRequest {
    /// PEM-encoded PKCS#10 certificate request; only its public key is used.
    #[prost(string, tag = "1")]
    pub csr: String,
    /// Requested lifetime in seconds; 0 or less asks for the CA's default.
    #[prost(int64, tag = "3")]
    pub validity_duration: i64,
    /// Optional metadata (`ImpersonatedIdentity`, `CertSigner`); weftd reads none of it.
    #[prost(message, optional, tag = "4")]
    pub metadata: Option<Struct>,
}

/// `istio.v1.auth.IstioCertificateResponse`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct IstioCertificateResponse {
    /// The chain, one PEM certificate per element: leaf, intermediates, root last.
    #[prost(string, repeated, tag = "1")]
    pub cert_chain: Vec<String>,
}

/// Calls `CreateCertificate` on `channel` with `Bearer <token>`; the channel's connection (TLS) is the
/// caller's.
pub async fn create_certificate<T>(
    channel: T,
    token: &str,
    request: IstioCertificateRequest,
) -> Result<IstioCertificateResponse, tonic::Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("CA not ready: {}", e.into())))?;
    let mut req = tonic::Request::new(request);
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| tonic::Status::invalid_argument("the token is not a valid header value"))?;
    req.metadata_mut().insert(AUTHORIZATION, value);
    let path = http::uri::PathAndQuery::from_static(CREATE_CERTIFICATE_PATH);
    grpc.unary(req, path, tonic_prost::ProstCodec::default())
        .await
        .map(tonic::Response::into_inner)
}

/// What a CA implements to be served by [`CertificateServer`].
pub trait CertificateService: Send + Sync + 'static {
    /// Signs the request's CSR for the identity its metadata authenticates.
    fn create_certificate(
        &self,
        request: tonic::Request<IstioCertificateRequest>,
    ) -> impl std::future::Future<Output = Result<IstioCertificateResponse, tonic::Status>> + Send;
}

/// Serves a [`CertificateService`] under [`SERVICE_NAME`] (add it to a tonic router).
pub struct CertificateServer<S> {
    inner: Arc<S>,
}

impl<S> CertificateServer<S> {
    /// Serves `inner`.
    pub fn new(inner: Arc<S>) -> Self {
        CertificateServer { inner }
    }
}

impl<S> Clone for CertificateServer<S> {
    fn clone(&self) -> Self {
        CertificateServer {
            inner: self.inner.clone(),
        }
    }
}

impl<S> tonic::server::NamedService for CertificateServer<S> {
    const NAME: &'static str = SERVICE_NAME;
}

/// The one method, as tonic's unary machinery wants it.
struct Create<S>(Arc<S>);

impl<S: CertificateService> tonic::server::UnaryService<IstioCertificateRequest> for Create<S> {
    type Response = IstioCertificateResponse;
    type Future = BoxFuture<tonic::Response<IstioCertificateResponse>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<IstioCertificateRequest>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move {
            inner
                .create_certificate(request)
                .await
                .map(tonic::Response::new)
        })
    }
}

impl<S, B> tonic::codegen::Service<http::Request<B>> for CertificateServer<S>
where
    S: CertificateService,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != CREATE_CERTIFICATE_PATH {
            let path = req.uri().path().to_string();
            return Box::pin(async move { Ok(tonic::Status::unimplemented(path).into_http()) });
        }
        let method = Create(self.inner.clone());
        Box::pin(async move {
            // A CSR is a few hundred bytes; the chain a few kilobytes.
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
                .apply_max_message_size_config(Some(64 * 1024), None);
            Ok(grpc.unary(method, req).await)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn field_numbers_are_istios() {
        let req = IstioCertificateRequest {
            csr: "x".into(),
            validity_duration: 60,
            metadata: Some(Struct::default()),
        };
        // Tag 1 string, tag 3 varint, tag 4 message: keys 0x0a, 0x18, 0x22.
        assert_eq!(
            req.encode_to_vec(),
            vec![0x0a, 1, b'x', 0x18, 60, 0x22, 0],
            "csr=1, validity_duration=3, metadata=4"
        );
        let resp = IstioCertificateResponse {
            cert_chain: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            resp.encode_to_vec(),
            vec![0x0a, 1, b'a', 0x0a, 1, b'b'],
            "cert_chain=1, repeated"
        );
    }
}
