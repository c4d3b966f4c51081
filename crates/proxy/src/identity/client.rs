//! One certificate request to weftd's CA: a fresh ECDSA P-256 key and its CSR, a TLS connection that
//! verifies weftd with `--ca-root-cert`, and `CreateCertificate` with the token of `--ca-token-file`.
//! Both files are read again for every request: tokens rotate, and so may roots.

use super::{Error, Identity};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tonic::codegen::{BoxFuture, Context, Poll, Service};
use weft_xds::ca::{create_certificate, IstioCertificateRequest};

/// Where and how to ask for certificates.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaConfig {
    /// weftd's secure address, `host:port` (Istio: CA_ADDR); the host is also the name weftd's
    /// certificate must carry.
    pub address: String,
    /// PEM file of the root(s) that verify weftd's serving certificate.
    pub root_cert: PathBuf,
    /// File holding the workload's token.
    pub token_file: PathBuf,
    /// Lifetime asked for (`validity_duration`); `None`: the CA's default.
    pub requested_ttl: Option<Duration>,
    /// Longest a request may take: connect, handshake and answer.
    pub timeout: Duration,
}

/// Asks weftd's CA for certificates.
#[derive(Debug, Clone)]
pub struct CaClient {
    config: Arc<CaConfig>,
}

impl CaClient {
    /// A client for `config`; nothing is read or connected until [`CaClient::fetch`].
    pub fn new(config: CaConfig) -> CaClient {
        CaClient {
            config: Arc::new(config),
        }
    }

    /// The CA's address.
    pub fn address(&self) -> &str {
        &self.config.address
    }

    /// Makes a key and a CSR and asks the CA for a certificate.
    pub async fn fetch(&self) -> Result<Identity, Error> {
        let c = &*self.config;
        let token = read(&c.token_file, "--ca-token-file").await?;
        let token = String::from_utf8_lossy(&token).trim().to_string();
        if token.is_empty() {
            return Err(Error::EmptyToken {
                path: c.token_file.clone(),
            });
        }
        let roots = read(&c.root_cert, "--ca-root-cert").await?;
        let connector = tls_connector(&c.address, &roots, &c.root_cert)?;
        let (key, csr) = key_and_csr()?;
        let request = IstioCertificateRequest {
            csr,
            validity_duration: c.requested_ttl.map_or(0, |d| d.as_secs() as i64),
            metadata: None,
        };
        let failed = |reason: String| Error::Request {
            address: c.address.clone(),
            reason,
        };
        // The URI only routes the request; TLS is the connector's. `http` keeps tonic from wanting a
        // TLS configuration of its own.
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", c.address))
            .map_err(|e| failed(e.to_string()))?
            .connect_timeout(c.timeout)
            .timeout(c.timeout);
        let call = async {
            let channel = endpoint
                .connect_with_connector(connector)
                .await
                .map_err(|e| failed(error_chain(&e)))?;
            create_certificate(channel, &token, request)
                .await
                .map_err(|s| failed(format!("{:?}: {}", s.code(), s.message())))
        };
        let response = tokio::time::timeout(c.timeout, call)
            .await
            .map_err(|_| failed(format!("no answer within {:?}", c.timeout)))??;
        let identity = Identity::from_chain(&response.cert_chain, key)?;
        check_key(identity.leaf(), &identity.key)?;
        Ok(identity)
    }
}

async fn read(path: &std::path::Path, what: &'static str) -> Result<Vec<u8>, Error> {
    tokio::fs::read(path).await.map_err(|source| Error::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// A TLS client that trusts the certificates of `pem`, speaking HTTP/2.
fn client_config(pem: &[u8], path: &std::path::Path) -> Result<rustls::ClientConfig, Error> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(pem).filter_map(Result::ok) {
        roots.add(der).map_err(Error::Tls)?;
    }
    if roots.is_empty() {
        return Err(Error::NoRoot {
            path: path.to_path_buf(),
        });
    }
    let mut config = rustls::ClientConfig::builder_with_provider(weft_http::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(Error::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A new ECDSA P-256 key and a CSR signed with it. The CSR names nothing: the CA takes the identity
/// from the token, and only the public key from the CSR.
pub(crate) fn key_and_csr() -> Result<(PrivateKeyDer<'static>, String), Error> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(Error::Key)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(Error::Key)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((der, csr))
}

/// Refuses a leaf whose public key is not the one the CSR carried.
fn check_key(leaf: &CertificateDer<'_>, key: &PrivateKeyDer<'_>) -> Result<(), Error> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| Error::Chain(format!("the leaf does not parse: {e}")))?;
    let pair = rcgen::KeyPair::try_from(key).map_err(Error::Key)?;
    use rcgen::PublicKeyData;
    if cert.public_key().subject_public_key.data.as_ref() != pair.der_bytes() {
        return Err(Error::Chain(
            "the leaf certifies another public key than the CSR's".into(),
        ));
    }
    Ok(())
}

/// The host of `host:port` or `[v6]:port`.
fn host_of(address: &str) -> Option<&str> {
    let (host, _port) = address.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

/// An error and its causes, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A connector to `address` (`host:port`) over TLS that trusts the roots of `pem` (read from `path`):
/// weftd's TLS port, for the CA and for xDS over `https://`.
pub(crate) fn tls_connector(
    address: &str,
    pem: &[u8],
    path: &std::path::Path,
) -> Result<Connector, Error> {
    let tls = client_config(pem, path)?;
    let failed = |reason: String| Error::Request {
        address: address.to_string(),
        reason,
    };
    let host = host_of(address).ok_or_else(|| failed("no host in the address".into()))?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| failed(format!("{host:?} is not a DNS name or IP address")))?;
    Ok(Connector {
        address: address.to_string(),
        name,
        tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
    })
}

/// Connects tonic's channel over TCP and TLS to weftd's TLS port.
#[derive(Clone)]
pub(crate) struct Connector {
    address: String,
    name: ServerName<'static>,
    tls: tokio_rustls::TlsConnector,
}

type Tls = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl Service<http::Uri> for Connector {
    type Response = Tls;
    type Error = std::io::Error;
    type Future = BoxFuture<Tls, std::io::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(&this.address).await?;
            tcp.set_nodelay(true)?;
            let tls = this.tls.connect(this.name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_read_from_the_address() {
        let cases: &[(&str, Option<&str>)] = &[
            ("127.0.0.1:15012", Some("127.0.0.1")),
            (
                "istiod.istio-system.svc:15012",
                Some("istiod.istio-system.svc"),
            ),
            ("[::1]:15012", Some("::1")),
            (":15012", None),
            ("weftd", None),
        ];
        for (addr, want) in cases {
            assert_eq!(host_of(addr), *want, "{addr}");
        }
    }

    #[test]
    fn the_csr_is_signed_by_the_key_and_names_nothing() {
        use x509_parser::prelude::{FromDer, X509CertificationRequest};
        let (key, pem) = key_and_csr().expect("key and csr");
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
            .map(|d: rustls_pki_types::CertificateSigningRequestDer<'_>| d.as_ref().to_vec())
            .expect("a PEM CSR");
        let (_, csr) = X509CertificationRequest::from_der(&der).expect("parses");
        csr.verify_signature().expect("self-signed");
        assert!(csr
            .certification_request_info
            .subject
            .iter()
            .next()
            .is_none());
        let pair = rcgen::KeyPair::try_from(&key).expect("pkcs8");
        use rcgen::PublicKeyData;
        assert_eq!(
            csr.certification_request_info
                .subject_pki
                .subject_public_key
                .data
                .as_ref(),
            pair.der_bytes()
        );
    }
}
