//! The workload's identity: its own key, the certificate weftd's CA issues for it, and the rotation that
//! keeps that certificate fresh.
//!
//! The proxy makes an ECDSA P-256 key that never leaves the process, sends a CSR to weftd's
//! `istio.v1.auth.IstioCertificateService/CreateCertificate` over TLS (verifying weftd with
//! `--ca-root-cert`) with the token of `--ca-token-file`, and publishes the result as one immutable
//! [`Identity`] on a watch channel ([`Current`]). It asks again at half the certificate's lifetime (±1%
//! jitter, Istio's `SECRET_GRACE_PERIOD_RATIO`), retrying with backoff while the old certificate serves.
//! A rotation only swaps what the channel holds: connections made with the old certificate keep it, new
//! handshakes use the new one. Building rustls configs from an [`Identity`] is the TLS module's job.

pub mod certs;
pub mod client;
pub mod rotate;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::watch;

/// A workload's certificate and key, as issued; immutable, swapped whole on rotation.
#[derive(Debug)]
pub struct Identity {
    /// The SPIFFE ID the certificate names, e.g. `spiffe://cluster.local/ns/default/sa/bookinfo-productpage`.
    pub spiffe_id: Arc<str>,
    /// The certificate chain: leaf first, then intermediates (not the root).
    pub chain: Vec<CertificateDer<'static>>,
    /// The workload's private key (PKCS#8).
    pub key: PrivateKeyDer<'static>,
    /// The root(s) the CA returned last in its chain: the mesh's trust anchors.
    pub roots: Vec<CertificateDer<'static>>,
    /// Start of the leaf's validity.
    pub not_before: SystemTime,
    /// End of the leaf's validity.
    pub not_after: SystemTime,
    /// The leaf's serial number, in lowercase hex.
    pub serial: String,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            spiffe_id: self.spiffe_id.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            roots: self.roots.clone(),
            not_before: self.not_before,
            not_after: self.not_after,
            serial: self.serial.clone(),
        }
    }
}

/// Follows the current identity: `None` until the first certificate, then each rotation.
pub type Current = watch::Receiver<Option<Arc<Identity>>>;

/// Why an identity could not be obtained or understood.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file given by a flag could not be read.
    #[error("cannot read {what} {path}")]
    Read {
        /// Which file (`--ca-root-cert`, `--ca-token-file`).
        what: &'static str,
        /// Its path.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The root file holds no certificate.
    #[error("{path} holds no PEM certificate")]
    NoRoot {
        /// The file.
        path: std::path::PathBuf,
    },
    /// The token file is empty.
    #[error("token file {path} is empty")]
    EmptyToken {
        /// The file.
        path: std::path::PathBuf,
    },
    /// The CA could not be reached or refused the request.
    #[error("certificate request to {address} failed: {reason}")]
    Request {
        /// The CA's address.
        address: String,
        /// What went wrong (gRPC status or transport error).
        reason: String,
    },
    /// The CA's answer is not a usable chain.
    #[error("the CA's answer is not a usable certificate chain: {0}")]
    Chain(String),
    /// The workload's key or CSR could not be made.
    #[error("cannot make the workload key or CSR")]
    Key(#[source] rcgen::Error),
    /// The TLS client for the CA could not be configured.
    #[error("cannot configure TLS towards the CA")]
    Tls(#[source] rustls::Error),
}

impl Identity {
    /// Builds an identity from the CA's answer (PEM certificates, leaf first, root last) and the key the
    /// CSR was made with. The leaf must carry exactly one URI SAN, the SPIFFE ID.
    pub fn from_chain(
        chain_pem: &[String],
        key: PrivateKeyDer<'static>,
    ) -> Result<Identity, Error> {
        let mut certs = Vec::with_capacity(chain_pem.len());
        for (i, pem) in chain_pem.iter().enumerate() {
            let der = first_pem_certificate(pem)
                .ok_or_else(|| Error::Chain(format!("element {i} is not a PEM certificate")))?;
            certs.push(der);
        }
        if certs.is_empty() {
            return Err(Error::Chain("it is empty".into()));
        }
        // Istio's answer is leaf, intermediates, root; a one-element answer is a leaf signed by a root
        // the proxy already trusts, and carries no root.
        let roots = if certs.len() > 1 {
            certs.split_off(certs.len() - 1)
        } else {
            Vec::new()
        };
        let leaf = parse_leaf(&certs[0])?;
        Ok(Identity {
            spiffe_id: leaf.spiffe_id.into(),
            chain: certs,
            key,
            roots,
            not_before: leaf.not_before,
            not_after: leaf.not_after,
            serial: leaf.serial,
        })
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// Whether `now` is within the leaf's validity.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now < self.not_after
    }
}

/// What [`Identity::from_chain`] reads from a leaf.
pub(crate) struct Leaf {
    pub(crate) spiffe_id: String,
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
    pub(crate) serial: String,
}

/// Reads a leaf's SPIFFE ID, validity and serial.
pub(crate) fn parse_leaf(der: &CertificateDer<'_>) -> Result<Leaf, Error> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| Error::Chain(format!("the leaf does not parse: {e}")))?;
    let uris: Vec<&str> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(Error::Chain(format!("the leaf's SAN does not parse: {e}"))),
    };
    let spiffe_id = match uris.as_slice() {
        [one] if one.starts_with("spiffe://") => one.to_string(),
        _ => {
            return Err(Error::Chain(format!(
                "the leaf names {} URI SANs ({uris:?}), not one spiffe:// ID",
                uris.len()
            )))
        }
    };
    let time = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64)
        } else {
            SystemTime::UNIX_EPOCH
        }
    };
    Ok(Leaf {
        spiffe_id,
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
        serial: cert.tbs_certificate.raw_serial_as_string().replace(':', ""),
    })
}

/// The first `CERTIFICATE` block of a PEM text, as DER.
pub(crate) fn first_pem_certificate(pem: &str) -> Option<CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .and_then(Result::ok)
}

/// Keeps the workload's certificate current: started from `lib.rs` when `--ca-token-file` is given.
/// [`Manager::current`] hands out the receiving side; [`Manager::run`] is the rotation loop.
pub struct Manager {
    tx: watch::Sender<Option<Arc<Identity>>>,
    source: Option<client::CaClient>,
}

impl Manager {
    /// A manager that asks `client`'s CA; nothing is requested until [`Manager::run`].
    pub fn new(client: client::CaClient) -> Manager {
        Manager {
            tx: watch::channel(None).0,
            source: Some(client),
        }
    }

    /// A manager that holds `identity` and never rotates it (tests, and identities from files).
    pub fn fixed(identity: Identity) -> Manager {
        Manager {
            tx: watch::channel(Some(Arc::new(identity))).0,
            source: None,
        }
    }

    /// Follows the current identity.
    pub fn current(&self) -> Current {
        self.tx.subscribe()
    }

    /// Obtains the first certificate and rotates it until `shutdown` becomes true. A fixed manager
    /// returns at shutdown.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        match self.source {
            Some(client) => rotate::run(client, self.tx, shutdown).await,
            None => crate::stopped(&mut shutdown).await,
        }
    }
}
