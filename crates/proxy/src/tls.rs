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
//!
//! TLS with certificates from files (a DestinationRule's SIMPLE and MUTUAL) is [`files`]'s.

use crate::identity::{Current, Identity};
use arc_swap::ArcSwapOption;
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DistinguishedName, SignatureScheme};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use weft_http::tls::{ClientTls, ServerTls};

/// The handshake-signature half of a certificate verifier, the same for every verifier here: the
/// provider's algorithms (rustls asks each verifier, client and server side, separately).
macro_rules! provider_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &$crate::tls::provider().signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &$crate::tls::provider().signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            $crate::tls::provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}
pub(crate) use provider_signatures;

pub mod files;
pub use files::{FileTls, FilesError};

/// ALPN a sidecar offers another: Istio's names for mesh mTLS, which a server may use to tell the mesh's
/// TLS from an application's own.
pub const MESH_ALPN: [&[u8]; 2] = [b"istio-peer-exchange", b"istio"];

pub use weft_http::tls::provider;

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

    provider_signatures!();
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
            Some(id) if self.sans.contains(&id) => Ok(ServerCertVerified::assertion()),
            found => {
                tracing::debug!(expected = ?self.sans, found = ?found, "upstream identity not expected");
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName,
                ))
            }
        }
    }

    provider_signatures!();
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

/// The workload's SPIFFE ID now, when it has a certificate: the local principal of a connection over
/// mutual TLS (read once per connection, after its handshake).
pub fn own_id(identity: Option<&Current>) -> Option<Arc<str>> {
    let current = identity?;
    let id = current.borrow().as_ref().map(|i| i.spiffe_id.clone());
    id
}

/// How an inbound listener takes connections, from its filter chains: Istio's PeerAuthentication as
/// xDS (a chain whose transport socket is TLS, a chain without one, or both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Inbound {
    /// No TLS chain: plaintext only (DISABLE, or no mTLS configured).
    #[default]
    Plaintext,
    /// Both: mutual TLS and plaintext, told apart by the first byte (PERMISSIVE).
    Permissive,
    /// Only the TLS chain: plaintext is refused (STRICT).
    Strict,
}

/// An upstream cluster's TLS, from its `transport_socket` or `transport_socket_matches`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Upstream {
    /// Plaintext.
    #[default]
    Plaintext,
    /// Mutual TLS with the workload's certificate (SDS `default`, roots `ROOTCA`): to every endpoint
    /// (`always`, a DestinationRule's ISTIO_MUTUAL) or only to those whose metadata says they have a
    /// sidecar (`tlsMode: istio`, Istio's auto mTLS).
    Mesh {
        /// The server identities accepted (`match_subject_alt_names`); empty: any the roots vouch for.
        sans: Vec<String>,
        /// The SNI sent.
        sni: String,
        /// To every endpoint, not only those marked `tlsMode: istio`.
        always: bool,
    },
    /// TLS to every endpoint with certificates from files or inline (a DestinationRule's SIMPLE or
    /// MUTUAL), read when the cluster arrived.
    Files(FileTls),
}

/// What the proxy knows of the connection a request came on.
#[derive(Debug, Clone)]
pub struct Downstream {
    /// The client's address.
    pub peer: std::net::SocketAddr,
    /// The address it connected to.
    pub local: Option<std::net::SocketAddr>,
    /// The client's SPIFFE ID, when it presented a mesh certificate (mutual TLS).
    pub principal: Option<Arc<str>>,
    /// The server name it asked for (SNI), over TLS.
    pub sni: Option<Arc<str>>,
    /// What its TLS tells the metric labels (`connection_security_policy`, the principals), interned
    /// by the telemetry once per connection; plaintext's until set.
    pub security: crate::telemetry::metrics::Security,
}

impl Downstream {
    /// From what the server learned of the connection (the certificate's URI SAN read once, here).
    pub fn of(c: &weft_http::server::Connection) -> Downstream {
        let tls = c.tls.as_ref();
        Downstream {
            peer: c.peer,
            local: c.local,
            principal: tls
                .and_then(|t| t.certificate.as_ref())
                .and_then(uri_san)
                .map(Arc::from),
            sni: tls.and_then(|t| t.sni.as_deref()).map(Arc::from),
            security: Default::default(),
        }
    }
}

/// The SDS secret names Istio's mesh TLS refers to, the only ones the proxy has: its own certificate
/// (made with the CA) and the mesh's roots.
const SDS_CERT: &str = "default";
const SDS_ROOTS: &str = "ROOTCA";

use weft_xds::pb::envoy::extensions::transport_sockets::tls::v3 as xtls;

/// Checks a common TLS context is the mesh's: certificate from SDS `default`, roots from SDS `ROOTCA`,
/// and returns its `match_subject_alt_names` exact values. (An upstream context without SDS is read by
/// [`files`]; an inbound listener's must be the mesh's.)
fn mesh_context(c: Option<&xtls::CommonTlsContext>) -> Result<Vec<String>, String> {
    let Some(c) = c else {
        return Err("common_tls_context is missing".into());
    };
    if !c.tls_certificates.is_empty() {
        return Err("common_tls_context.tls_certificates (certificates from files or inline) is not supported here: only the workload certificate from SDS \"default\"".into());
    }
    if c.tls_certificate_sds_secret_configs.len() != 1
        || c.tls_certificate_sds_secret_configs[0].name != SDS_CERT
    {
        return Err(format!(
            "common_tls_context.tls_certificate_sds_secret_configs: only SDS {SDS_CERT:?} is supported"
        ));
    }
    use xtls::common_tls_context::ValidationContextType as V;
    match &c.validation_context_type {
        Some(V::CombinedValidationContext(cv)) => {
            if cv
                .validation_context_sds_secret_config
                .as_ref()
                .map(|s| s.name.as_str())
                != Some(SDS_ROOTS)
            {
                return Err(format!(
                    "combined_validation_context.validation_context_sds_secret_config: only SDS {SDS_ROOTS:?} is supported"
                ));
            }
            let mut sans = Vec::new();
            if let Some(d) = &cv.default_validation_context {
                use weft_xds::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
                let exact = |m: &weft_xds::pb::envoy::r#type::matcher::v3::StringMatcher,
                             field: String|
                 -> Result<String, String> {
                    match &m.match_pattern {
                        Some(MatchPattern::Exact(e)) => Ok(e.clone()),
                        _ => Err(format!("{field}: only exact matches are supported")),
                    }
                };
                // Istio writes the typed form (URI SANs); the older untyped one is read too.
                for (i, m) in d.match_typed_subject_alt_names.iter().enumerate() {
                    let field =
                        format!("default_validation_context.match_typed_subject_alt_names[{i}]");
                    if m.san_type != 3 {
                        return Err(format!("{field}: only URI SANs (SPIFFE IDs) are supported"));
                    }
                    let Some(matcher) = &m.matcher else {
                        return Err(format!("{field}: matcher is missing"));
                    };
                    sans.push(exact(matcher, field)?);
                }
                #[allow(deprecated)]
                for (i, m) in d.match_subject_alt_names.iter().enumerate() {
                    let field = format!("default_validation_context.match_subject_alt_names[{i}]");
                    sans.push(exact(m, field)?);
                }
            }
            Ok(sans)
        }
        Some(V::ValidationContextSdsSecretConfig(s)) if s.name == SDS_ROOTS => Ok(Vec::new()),
        _ => Err(format!(
            "the validation context must come from SDS {SDS_ROOTS:?} with the workload certificate"
        )),
    }
}

/// Reads a listener's filter chains for TLS (see [`Inbound`]).
pub fn inbound(l: &weft_xds::pb::envoy::config::listener::v3::Listener) -> Result<Inbound, String> {
    let (mut tls, mut plain) = (false, false);
    for (i, fc) in l
        .filter_chains
        .iter()
        .chain(l.default_filter_chain.iter())
        .enumerate()
    {
        let Some(ts) = &fc.transport_socket else {
            plain = true;
            continue;
        };
        let any = match &ts.config_type {
            Some(
                weft_xds::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(a),
            ) => a,
            None => {
                plain = true;
                continue;
            }
        };
        if any.type_url != weft_xds::type_url::DOWNSTREAM_TLS_CONTEXT {
            if ts.name == weft_xds::filter_name::RAW_BUFFER {
                plain = true;
                continue;
            }
            return Err(format!(
                "filter_chains[{i}].transport_socket: {} is not supported",
                any.type_url
            ));
        }
        let d: xtls::DownstreamTlsContext = weft_xds::unpack(any)
            .map_err(|e| format!("filter_chains[{i}].transport_socket: {e}"))?;
        if !d.require_client_certificate.is_some_and(|b| b.value) {
            return Err(format!(
                "filter_chains[{i}].transport_socket: only mutual TLS (require_client_certificate) is supported"
            ));
        }
        mesh_context(d.common_tls_context.as_ref())
            .map_err(|e| format!("filter_chains[{i}].transport_socket: {e}"))?;
        tls = true;
    }
    Ok(match (tls, plain) {
        (false, _) => Inbound::Plaintext,
        (true, true) => Inbound::Permissive,
        (true, false) => Inbound::Strict,
    })
}

/// A gateway listener's TLS from files (see [`files::read_server`]): `Some` when its one filter chain's
/// transport socket is a `DownstreamTlsContext` that carries its own certificate; `None` for anything
/// else, which [`inbound`] reads.
pub fn server_files(
    l: &weft_xds::pb::envoy::config::listener::v3::Listener,
) -> Result<Option<files::ServerFiles>, String> {
    use weft_xds::pb::envoy::config::core::v3::transport_socket::ConfigType;
    let [fc] = l.filter_chains.as_slice() else {
        return Ok(None);
    };
    let Some(ConfigType::TypedConfig(any)) = fc
        .transport_socket
        .as_ref()
        .and_then(|ts| ts.config_type.as_ref())
    else {
        return Ok(None);
    };
    if any.type_url != weft_xds::type_url::DOWNSTREAM_TLS_CONTEXT {
        return Ok(None);
    }
    let d: xtls::DownstreamTlsContext =
        weft_xds::unpack(any).map_err(|e| format!("filter_chains[0].transport_socket: {e}"))?;
    if !files::is_files_server(&d) {
        return Ok(None);
    }
    if l.default_filter_chain.is_some() {
        return Err(
            "default_filter_chain beside a TLS chain with certificates from files is not supported"
                .into(),
        );
    }
    files::read_server(&d)
        .map(Some)
        .map_err(|e| format!("filter_chains[0].transport_socket: {}", error_chain(&e)))
}

/// What an upstream TLS transport socket says.
enum Socket {
    /// The mesh's: expected identities and SNI.
    Mesh(Vec<String>, String),
    /// Certificates from files.
    Files(FileTls),
}

/// Reads an upstream TLS transport socket of the cluster named `cluster`: the mesh's TLS when its
/// certificate comes from SDS, certificates from files (or inline) otherwise.
fn upstream_socket(
    ts: &weft_xds::pb::envoy::config::core::v3::TransportSocket,
    cluster: &str,
) -> Result<Option<Socket>, String> {
    use weft_xds::pb::envoy::config::core::v3::transport_socket::ConfigType;
    let any = match &ts.config_type {
        Some(ConfigType::TypedConfig(a)) => a,
        None => return Ok(None),
    };
    if any.type_url != weft_xds::type_url::UPSTREAM_TLS_CONTEXT {
        if ts.name == weft_xds::filter_name::RAW_BUFFER {
            return Ok(None);
        }
        return Err(format!("{} is not supported", any.type_url));
    }
    let u: xtls::UpstreamTlsContext = weft_xds::unpack(any).map_err(|e| e.to_string())?;
    let from_sds = u
        .common_tls_context
        .as_ref()
        .is_some_and(|c| !c.tls_certificate_sds_secret_configs.is_empty());
    if from_sds {
        let sans = mesh_context(u.common_tls_context.as_ref())?;
        return Ok(Some(Socket::Mesh(sans, u.sni)));
    }
    files::read(&u, cluster)
        .map(|f| Some(Socket::Files(f)))
        .map_err(|e| error_chain(&e))
}

/// An error and its causes, as one line (`ClusterError::Tls` carries text).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Reads a cluster's TLS (see [`Upstream`]).
pub fn upstream(c: &weft_xds::pb::envoy::config::cluster::v3::Cluster) -> Result<Upstream, String> {
    if let Some(ts) = &c.transport_socket {
        return Ok(
            match upstream_socket(ts, &c.name).map_err(|e| format!("transport_socket: {e}"))? {
                Some(Socket::Mesh(sans, sni)) => Upstream::Mesh {
                    sans,
                    sni,
                    always: true,
                },
                Some(Socket::Files(f)) => Upstream::Files(f),
                None => Upstream::Plaintext,
            },
        );
    }
    // Istio's auto mTLS: a TLS socket for endpoints whose metadata matches `tlsMode: istio`, plaintext
    // for the rest (an empty match).
    let mut found = Upstream::Plaintext;
    for (i, m) in c.transport_socket_matches.iter().enumerate() {
        let Some(ts) = &m.transport_socket else {
            continue;
        };
        let settings = upstream_socket(ts, &c.name)
            .map_err(|e| format!("transport_socket_matches[{i}].transport_socket: {e}"))?;
        let mode = m
            .r#match
            .as_ref()
            .and_then(|s| s.fields.get("tlsMode"))
            .and_then(|v| match &v.kind {
                Some(prost_types_kind::StringValue(s)) => Some(s.as_str()),
                _ => None,
            });
        match (settings, mode) {
            (Some(Socket::Mesh(sans, sni)), Some("istio")) => {
                found = Upstream::Mesh {
                    sans,
                    sni,
                    always: false,
                }
            }
            (None, _) => {}
            (Some(_), _) => {
                return Err(format!(
                    "transport_socket_matches[{i}]: only the mesh's TLS socket matching {{tlsMode: istio}} is supported"
                ))
            }
        }
    }
    Ok(found)
}

use weft_xds::pb::google::protobuf::value::Kind as prost_types_kind;

/// Whether an endpoint's metadata marks it as having a sidecar (`envoy.transport_socket_match:
/// {tlsMode: istio}`), so auto mTLS speaks TLS to it.
pub fn endpoint_has_sidecar(
    metadata: Option<&weft_xds::pb::envoy::config::core::v3::Metadata>,
) -> bool {
    metadata
        .and_then(|m| {
            m.filter_metadata
                .get(weft_xds::filter_name::TRANSPORT_SOCKET_MATCH)
        })
        .and_then(|s| s.fields.get("tlsMode"))
        .is_some_and(|v| matches!(&v.kind, Some(prost_types_kind::StringValue(s)) if s == "istio"))
}

#[cfg(test)]
mod tests;
