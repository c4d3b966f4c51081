//! `istio.v1.auth.IstioCertificateService/CreateCertificate`: authenticate the caller by its token,
//! sign its CSR for the identity the token names, in the trust domain MeshConfig names now.

use super::authority::Authority;
use super::token::TokenKey;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tonic::Status;
use tracing::{info, warn};
use weft_xds::ca::{
    CertificateServer, CertificateService, IstioCertificateRequest, IstioCertificateResponse,
    AUTHORIZATION,
};

/// The trust domain at the time of a request (MeshConfig's `trustDomain`, which may change).
pub type TrustDomain = Arc<dyn Fn() -> String + Send + Sync>;

/// Lifetimes of workload certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl {
    /// When the caller asks for none.
    pub default: Duration,
    /// The most a caller gets.
    pub max: Duration,
}

impl Ttl {
    /// The lifetime for a request's `validity_duration` (seconds): the default when it is 0 or less,
    /// else that, capped at the maximum.
    pub fn pick(&self, validity_duration: i64) -> Duration {
        if validity_duration <= 0 {
            self.default
        } else {
            Duration::from_secs(validity_duration as u64).min(self.max)
        }
    }
}

/// The CA's gRPC service.
pub struct CaService {
    authority: Arc<Authority>,
    tokens: Arc<TokenKey>,
    trust_domain: TrustDomain,
    ttl: Ttl,
}

impl CaService {
    /// Signs with `authority` for callers whose token `tokens` verifies.
    pub fn new(
        authority: Arc<Authority>,
        tokens: Arc<TokenKey>,
        trust_domain: TrustDomain,
        ttl: Ttl,
    ) -> CaService {
        CaService {
            authority,
            tokens,
            trust_domain,
            ttl,
        }
    }

    /// The service, ready for a tonic router.
    pub fn into_server(self) -> CertificateServer<CaService> {
        CertificateServer::new(Arc::new(self))
    }
}

/// The token of `authorization: Bearer <token>`.
fn bearer(metadata: &tonic::metadata::MetadataMap) -> Result<&str, Status> {
    let value = metadata.get(AUTHORIZATION).ok_or_else(|| {
        Status::unauthenticated("no credential: send the metadata 'authorization: Bearer <token>'")
    })?;
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization metadata is not ASCII"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| {
            Status::unauthenticated("the authorization metadata is not 'Bearer <token>'")
        })?;
    Ok(token.trim())
}

impl CertificateService for CaService {
    async fn create_certificate(
        &self,
        request: tonic::Request<IstioCertificateRequest>,
    ) -> Result<IstioCertificateResponse, Status> {
        let peer = request
            .extensions()
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|i| i.remote_addr());
        let peer = peer.map(|p| p.to_string()).unwrap_or_default();
        let id = match bearer(request.metadata()).and_then(|t| {
            self.tokens
                .verify(t, SystemTime::now())
                .map_err(|e| Status::unauthenticated(e.to_string()))
        }) {
            Ok(id) => id,
            Err(status) => {
                warn!(
                    peer,
                    reason = status.message(),
                    "certificate request refused"
                );
                return Err(status);
            }
        };
        let spiffe_id = id.spiffe_id(&(self.trust_domain)());
        let req = request.into_inner();
        let ttl = self.ttl.pick(req.validity_duration);
        let authority = self.authority.clone();
        let sid = spiffe_id.clone();
        // Signing is a few hundred microseconds of CPU (more with an RSA key): off the runtime.
        let signed = tokio::task::spawn_blocking(move || authority.sign_csr(&req.csr, &sid, ttl))
            .await
            .map_err(|_| Status::internal("the signing task failed"))?;
        match signed {
            Ok(cert_chain) => {
                info!(peer, spiffe_id, ttl = ?ttl, "certificate issued");
                Ok(IstioCertificateResponse { cert_chain })
            }
            Err(e) => {
                warn!(peer, spiffe_id, reason = %e, "certificate request refused");
                Err(Status::invalid_argument(e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::WorkloadId;

    #[test]
    fn the_lifetime_is_the_default_or_the_request_capped() {
        let t = Ttl {
            default: Duration::from_secs(24 * 3600),
            max: Duration::from_secs(90 * 24 * 3600),
        };
        let cases: &[(i64, u64)] = &[
            (0, 24 * 3600),
            (-5, 24 * 3600),
            (60, 60),
            (1, 1),
            (i64::MAX, 90 * 24 * 3600),
        ];
        for (asked, got) in cases {
            assert_eq!(t.pick(*asked), Duration::from_secs(*got), "asked {asked}");
        }
    }

    fn service(dir: &std::path::Path) -> (CaService, Arc<TokenKey>) {
        let authority = Arc::new(Authority::load_or_create(dir).expect("ca"));
        let tokens = Arc::new(TokenKey::load_or_create(dir).expect("key"));
        let s = CaService::new(
            authority,
            tokens.clone(),
            Arc::new(|| "example.org".to_string()),
            Ttl {
                default: Duration::from_secs(3600),
                max: Duration::from_secs(7200),
            },
        );
        (s, tokens)
    }

    fn csr() -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        rcgen::CertificateParams::default()
            .serialize_request(&key)
            .and_then(|r| r.pem())
            .expect("csr")
    }

    fn request(
        token: Option<&str>,
        csr: String,
        validity: i64,
    ) -> tonic::Request<IstioCertificateRequest> {
        let mut r = tonic::Request::new(IstioCertificateRequest {
            csr,
            validity_duration: validity,
            metadata: None,
        });
        if let Some(t) = token {
            r.metadata_mut()
                .insert(AUTHORIZATION, t.parse().expect("ascii"));
        }
        r
    }

    fn leaf_of(resp: &IstioCertificateResponse) -> (String, i64) {
        use rustls_pki_types::pem::PemObject;
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let der = rustls_pki_types::CertificateDer::from_pem_slice(resp.cert_chain[0].as_bytes())
            .expect("pem");
        let (_, c) = X509Certificate::from_der(der.as_ref()).expect("parses");
        let san = c.subject_alternative_name().expect("ok").expect("some");
        let uri = match san.value.general_names.as_slice() {
            [GeneralName::URI(u)] => u.to_string(),
            other => panic!("one URI SAN, got {other:?}"),
        };
        let life = c.validity().not_after.timestamp() - c.validity().not_before.timestamp();
        (uri, life)
    }

    #[tokio::test]
    async fn the_identity_comes_from_the_token_in_the_current_trust_domain() {
        let dir = crate::ca::authority::test_dir("service");
        let (s, tokens) = service(&dir);
        let id = WorkloadId::new("shop", "cart").expect("valid");
        let token = tokens.issue(&id, SystemTime::now() + Duration::from_secs(60));
        let resp = s
            .create_certificate(request(Some(&format!("Bearer {token}")), csr(), 0))
            .await
            .expect("issued");
        assert_eq!(resp.cert_chain.len(), 2);
        assert_eq!(
            leaf_of(&resp),
            ("spiffe://example.org/ns/shop/sa/cart".to_string(), 3600),
            "the default lifetime"
        );
        let resp = s
            .create_certificate(request(Some(&format!("Bearer {token}")), csr(), 100_000))
            .await
            .expect("issued");
        assert_eq!(leaf_of(&resp).1, 7200, "capped");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn unauthenticated_and_bad_requests_get_the_status_saying_why() {
        let dir = crate::ca::authority::test_dir("refuse");
        let (s, tokens) = service(&dir);
        let id = WorkloadId::new("shop", "cart").expect("valid");
        let good = format!(
            "Bearer {}",
            tokens.issue(&id, SystemTime::now() + Duration::from_secs(60))
        );
        let expired = format!(
            "Bearer {}",
            tokens.issue(&id, SystemTime::now() - Duration::from_secs(1))
        );
        let forged = format!(
            "Bearer {}",
            TokenKey::from_bytes(&[9; 32])
                .expect("key")
                .issue(&id, SystemTime::now() + Duration::from_secs(60))
        );
        use tonic::Code;
        let cases: &[(&str, Option<&str>, String, Code, &str)] = &[
            (
                "no token",
                None,
                csr(),
                Code::Unauthenticated,
                "no credential: send the metadata 'authorization: Bearer <token>'",
            ),
            (
                "not bearer",
                Some("Basic abc"),
                csr(),
                Code::Unauthenticated,
                "the authorization metadata is not 'Bearer <token>'",
            ),
            (
                "forged",
                Some(&forged),
                csr(),
                Code::Unauthenticated,
                "token signature does not verify: forged, altered, or issued by another weftd",
            ),
            (
                "expired",
                Some(&expired),
                csr(),
                Code::Unauthenticated,
                "token expired at unix time",
            ),
            (
                "malformed",
                Some("Bearer nonsense"),
                csr(),
                Code::Unauthenticated,
                "malformed token",
            ),
            (
                "garbage CSR",
                Some(&good),
                "garbage".into(),
                Code::InvalidArgument,
                "the CSR is not PEM",
            ),
        ];
        for (name, token, csr, code, msg) in cases {
            let status = s
                .create_certificate(request(*token, csr.clone(), 0))
                .await
                .expect_err(name);
            assert_eq!(status.code(), *code, "case {name}: {status:?}");
            assert!(
                status.message().starts_with(msg),
                "case {name}: {}",
                status.message()
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
