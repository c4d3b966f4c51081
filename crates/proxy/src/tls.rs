//! Mutual TLS with the workload's identity: the rustls settings of an inbound listener (the workload's
//! certificate, client certificates required and checked against the mesh's roots) and of an upstream
//! connection to a sidecar (the workload's certificate as the client's, the server's chain checked against
//! the mesh's roots and its SPIFFE identity against the names the cluster expects).
//!
//! Certificates rotate (see `identity`): the settings are made once per listener or cluster and read the
//! current identity at each handshake, through a cache rebuilt only when the identity changes. Requests
//! never touch any of this; only handshakes do.
//!
//! SPIFFE certificates name their workload with a URI SAN and no DNS name, which rustls' standard server
//! verifier cannot check: the chain is verified here with webpki (rustls' own) and the URI compared with
//! the expected identities, as Envoy's `match_subject_alt_names` does.

use crate::identity::{Current, Identity};
use arc_swap::ArcSwapOption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use weft_http::tls::{ClientTls, ServerTls};

/// ALPN a sidecar offers another: Istio's names for mesh mTLS, which a server may use to tell the mesh's
/// TLS from an application's own.
pub const MESH_ALPN: [&[u8]; 2] = [b"istio-peer-exchange", b"istio"];

/// The crypto provider for every TLS connection: ring. It builds without cmake or a C toolchain
/// beyond `cc` and is what rcgen and jsonwebtoken use too, so the tree has one copy of the primitives.
/// (rustls 0.23.48 marks ring's provider deprecated because it has no post-quantum key exchange;
/// aws-lc-rs has, and is the candidate when the handshake cost is compared: see the README.)
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// What a handshake needs of the current identity, made once per identity.
struct Built {
    identity: Arc<Identity>,
    key: Arc<CertifiedKey>,
    anchors: Vec<rustls::pki_types::TrustAnchor<'static>>,
    client_verifier: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Built")
            .field("identity", &self.identity.spiffe_id)
            .finish_non_exhaustive()
    }
}

/// Why the current identity cannot be used for TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// No certificate yet (the CA has not answered).
    #[error("no workload certificate yet")]
    NoIdentity,
    /// The key or a certificate is unusable.
    #[error("the workload certificate is unusable: {0}")]
    Unusable(String),
}

/// The mesh's TLS for one proxy: settings that follow its identity.
pub struct MeshTls {
    current: Current,
    built: ArcSwapOption<BuiltCell>,
    /// Ids of the client settings made so far, by (expected identities, SNI): equal settings share an
    /// id, so their connections share a pool.
    ids: Mutex<HashMap<(Vec<String>, String), u32>>,
}

/// The cache's entry (a newtype: `ArcSwapOption` wants a sized, non-dyn type).
#[derive(Debug)]
struct BuiltCell(Built);

impl std::fmt::Debug for MeshTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshTls").finish_non_exhaustive()
    }
}

impl MeshTls {
    /// Settings following `current`.
    pub fn new(current: Current) -> Arc<MeshTls> {
        Arc::new(MeshTls {
            current,
            built: ArcSwapOption::empty(),
            ids: Mutex::new(HashMap::new()),
        })
    }

    /// Whether the proxy has a certificate now.
    pub fn ready(&self) -> bool {
        self.current.borrow().is_some()
    }

    /// The current identity's handshake material, rebuilt when the identity changed.
    fn built(&self) -> Result<Arc<BuiltCell>, TlsError> {
        let identity = self.current.borrow().clone().ok_or(TlsError::NoIdentity)?;
        if let Some(b) = self.built.load_full() {
            if Arc::ptr_eq(&b.0.identity, &identity) {
                return Ok(b);
            }
        }
        let b = Arc::new(BuiltCell(build(identity)?));
        self.built.store(Some(b.clone()));
        Ok(b)
    }

    /// An inbound listener's settings: the workload's certificate, client certificates required.
    pub fn server(self: &Arc<Self>, allow_plaintext: bool) -> ServerTls {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring supports TLS 1.2 and 1.3")
            .with_client_cert_verifier(Arc::new(MeshClients(self.clone())))
            .with_cert_resolver(Arc::new(MeshCert(self.clone())));
        config.alpn_protocols = MESH_ALPN
            .iter()
            .chain([&b"h2"[..], b"http/1.1"].iter())
            .map(|p| p.to_vec())
            .collect();
        ServerTls {
            config: Arc::new(config),
            allow_plaintext,
        }
    }

    /// An upstream's settings: the workload's certificate as the client's, the server's identity one of
    /// `sans` (any identity the mesh's roots vouch for when empty), `sni` sent.
    pub fn client(self: &Arc<Self>, sans: Vec<String>, sni: &str) -> ClientTls {
        let id = {
            let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
            let next = ids.len() as u32 + 1;
            *ids.entry((sans.clone(), sni.to_string())).or_insert(next)
        };
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring supports TLS 1.2 and 1.3")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(MeshServer {
                mesh: self.clone(),
                sans,
            }))
            .with_client_cert_resolver(Arc::new(MeshCert(self.clone())));
        config.alpn_protocols = MESH_ALPN.iter().map(|p| p.to_vec()).collect();
        // The SNI is Istio's cluster name (`outbound_.9080_.v1_.reviews...`); a name rustls cannot send
        // falls back to one it can (the server does not route on it).
        let server_name = ServerName::try_from(sni.to_string())
            .unwrap_or_else(|_| ServerName::try_from("istio").expect("a valid DNS name"));
        ClientTls {
            id,
            config: Arc::new(config),
            server_name,
        }
    }
}

/// Makes the handshake material of an identity.
fn build(identity: Arc<Identity>) -> Result<Built, TlsError> {
    let signer = provider()
        .key_provider
        .load_private_key(identity.key.clone_key())
        .map_err(|e| TlsError::Unusable(format!("private key: {e}")))?;
    let key = Arc::new(CertifiedKey::new(identity.chain.clone(), signer));
    let mut roots = rustls::RootCertStore::empty();
    let mut anchors = Vec::new();
    for r in &identity.roots {
        roots
            .add(r.clone())
            .map_err(|e| TlsError::Unusable(format!("root certificate: {e}")))?;
        let a = webpki::anchor_from_trusted_cert(r)
            .map_err(|e| TlsError::Unusable(format!("root certificate: {e}")))?;
        anchors.push(a.to_owned());
    }
    let client_verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| TlsError::Unusable(format!("client verifier: {e}")))?;
    Ok(Built {
        identity,
        key,
        anchors,
        client_verifier,
    })
}

/// The workload's certificate, for both sides of a handshake.
#[derive(Debug)]
struct MeshCert(Arc<MeshTls>);

impl rustls::server::ResolvesServerCert for MeshCert {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match self.0.built() {
            Ok(b) => Some(b.0.key.clone()),
            Err(e) => {
                tracing::debug!(error = %e, "no certificate for an inbound handshake");
                None
            }
        }
    }
}

impl rustls::client::ResolvesClientCert for MeshCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.built().ok().map(|b| b.0.key.clone())
    }

    fn has_certs(&self) -> bool {
        self.0.ready()
    }
}

/// Client certificates checked against the current roots.
#[derive(Debug)]
struct MeshClients(Arc<MeshTls>);

impl MeshClients {
    fn verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        self.0
            .built()
            .map(|b| b.0.client_verifier.clone())
            .map_err(|e| rustls::Error::General(e.to_string()))
    }
}

impl ClientCertVerifier for MeshClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verifier()?
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A sidecar's certificate: a chain to the current roots, and one of the expected identities.
#[derive(Debug)]
struct MeshServer {
    mesh: Arc<MeshTls>,
    sans: Vec<String>,
}

fn cert_error(e: webpki::Error) -> rustls::Error {
    let kind = match e {
        webpki::Error::UnknownIssuer => CertificateError::UnknownIssuer,
        webpki::Error::CertExpired { .. } => CertificateError::Expired,
        webpki::Error::CertNotValidYet { .. } => CertificateError::NotValidYet,
        webpki::Error::BadDer | webpki::Error::BadDerTime => CertificateError::BadEncoding,
        other => CertificateError::Other(rustls::OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(kind)
}

impl ServerCertVerifier for MeshServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let built = self
            .mesh
            .built()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let ee = webpki::EndEntityCert::try_from(end_entity).map_err(cert_error)?;
        ee.verify_for_usage(
            provider().signature_verification_algorithms.all,
            &built.0.anchors,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(cert_error)?;
        if self.sans.is_empty() {
            return Ok(ServerCertVerified::assertion());
        }
        match uri_san(end_entity) {
            Some(id) if self.sans.iter().any(|s| *s == id) => Ok(ServerCertVerified::assertion()),
            found => {
                tracing::debug!(expected = ?self.sans, found = ?found, "upstream identity not expected");
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A certificate's first URI SAN (a workload's SPIFFE ID).
pub fn uri_san(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests;
