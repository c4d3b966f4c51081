//! TLS towards a cluster with certificates from files: a DestinationRule's `tls` modes SIMPLE and MUTUAL
//! as weftd writes them (an `UpstreamTlsContext` whose `tls_certificates` and `validation_context` name
//! files, or carry the PEM inline). Everything is read and checked when the cluster arrives, so a file
//! that cannot be read, a key that is not the certificate's or a matcher the proxy cannot apply rejects the
//! cluster (a NACK naming the field and the path) and the last good configuration stays; handshakes then
//! use the rustls settings made here and read no file.
//!
//! What the server's certificate must be, as Envoy checks it:
//! - with `trusted_ca` (DestinationRule `caCertificates`), or `system_root_certs` (no `caCertificates`:
//!   the system's bundle, looked for where Go's `crypto/x509` looks on Linux, [`SYSTEM_ROOTS`]), a chain to
//!   those roots, valid now, for server authentication;
//! - with `match_subject_alt_names` or `match_typed_subject_alt_names` (DestinationRule
//!   `subjectAltNames`), one of those names among its SANs (exact; DNS, URI or IP; a certificate's
//!   `*.example.com` covers one label, as Envoy's DNS match does);
//! - with no validation context at all (`insecureSkipVerify: true`), anything.
//!
//! Envoy checks no host name when there is no SAN matcher. Istio (1.20 and later, with its defaults
//! `ENABLE_AUTO_SNI` and `VERIFY_CERTIFICATE_AT_CLIENT`) adds Envoy's `auto_sni` and `auto_san_validation`
//! when the DestinationRule sets no `sni` and no `subjectAltNames` (and does not skip verification): the
//! SNI is then the request's host and the certificate must be valid for it. weftd writes neither option,
//! so the proxy applies that rule itself, per cluster: when `sni` is empty, an Istio outbound cluster
//! (`outbound|<port>|<subset>|<host>`) sends its host as SNI, and with roots but no SAN matcher the
//! certificate must be valid for that host (its DNS or IP SANs, as a browser checks). The request's
//! own `Host` is not used (it would make a pool per host); for a service's cluster it is the same name.
//! A cluster of another name sends no SNI unless `sni` says, and checks no name (Envoy).

use super::{cert_error, provider};
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, TrustAnchor, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::CertificateError;
use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use weft_http::tls::ClientTls;
use weft_xds::pb::envoy::config::core::v3::{data_source::Specifier, DataSource};
use weft_xds::pb::envoy::extensions::transport_sockets::tls::v3 as xtls;
use weft_xds::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};

/// Where the system's root certificates are looked for, first readable one wins: the list Go's
/// `crypto/x509` tries on Linux (Debian and Ubuntu first). `SSL_CERT_FILE` and `SSL_CERT_DIR` are not
/// read (the proxy reads no environment outside its flags).
pub const SYSTEM_ROOTS: [&str; 6] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The first pool id of settings made from files. The mesh's settings (`MeshTls::client`) count from 1,
/// so the two never share an id, hence never a pooled connection.
pub const FIRST_ID: u32 = 1 << 31;

/// The largest file read as a certificate, key or bundle (Debian's bundle is about 220 KiB): a path
/// such as `/dev/zero` is refused instead of read forever.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// Why TLS settings from files were refused. Each names the field (under the `UpstreamTlsContext`) and,
/// where a file is involved, its path.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A file could not be read.
    #[error("{field}: cannot read {path}")]
    Read {
        /// The field naming it.
        field: String,
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A data source holds no PEM of the kind wanted, or invalid PEM.
    #[error("{field}: no {kind} in {from}")]
    NoPem {
        /// The field.
        field: String,
        /// `certificate`, `private key`.
        kind: &'static str,
        /// The path, or `inline data`.
        from: String,
        /// The PEM parser's reason.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A root certificate is not usable as a trust anchor.
    #[error("{field}: certificate {index} in {from} is not a usable root")]
    Root {
        /// The field.
        field: String,
        /// Its position among the file's certificates.
        index: usize,
        /// The path, or `inline data`.
        from: String,
        /// webpki's reason.
        #[source]
        source: webpki::Error,
    },
    /// The private key is of a kind the crypto provider cannot sign with.
    #[error("common_tls_context.tls_certificates[0].private_key: {from} is not a usable key")]
    Key {
        /// The path, or `inline data`.
        from: String,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
    /// The private key is not the one of the certificate.
    #[error("common_tls_context.tls_certificates[0]: the private key in {key} does not match the certificate in {chain}")]
    KeyMismatch {
        /// Where the chain came from.
        chain: String,
        /// Where the key came from.
        key: String,
    },
    /// No system bundle was found.
    #[error("{field}: no system root certificates (tried {tried})")]
    NoSystemRoots {
        /// The field (`system_root_certs`).
        field: String,
        /// The paths tried.
        tried: String,
    },
    /// A field is missing.
    #[error("{field} is missing")]
    Missing {
        /// The field.
        field: String,
    },
    /// A setting the proxy does not implement.
    #[error("{field}: {what} is not supported")]
    Unsupported {
        /// The field.
        field: String,
        /// What in it.
        what: String,
    },
}

/// A name the server's certificate must carry (one of a cluster's list is enough).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum San {
    /// A DNS SAN (`match_typed_subject_alt_names` of type DNS).
    Dns(String),
    /// A URI SAN (type URI: a SPIFFE ID).
    Uri(String),
    /// An IP address SAN (type IP_ADDRESS).
    Ip(IpAddr),
    /// Any SAN of these kinds, or an email one, with this value (the untyped `match_subject_alt_names`,
    /// what Istio writes for `subjectAltNames`).
    Any(String),
}

/// A cluster's TLS settings made from files, ready to connect with.
#[derive(Clone)]
pub struct FileTls {
    /// The rustls settings and SNI, with their pool id (equal settings, equal id).
    pub tls: ClientTls,
    /// What they were made from, for logs and `Debug`: roots, certificate, names.
    pub summary: Arc<str>,
}

impl PartialEq for FileTls {
    fn eq(&self, other: &Self) -> bool {
        self.tls.id == other.tls.id
    }
}

impl Eq for FileTls {}

impl std::fmt::Debug for FileTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileTls")
            .field("id", &self.tls.id)
            .field("summary", &self.summary)
            .finish()
    }
}

/// Whether settings with pool id `id` were made from files (so not the mesh's mutual TLS).
pub fn is_files_id(id: u32) -> bool {
    id >= FIRST_ID
}

/// Reads an upstream TLS context whose certificates are not the mesh's (see the module's note).
/// `cluster` is the cluster's name: an Istio outbound name gives the SNI when `sni` is empty.
pub fn read(u: &xtls::UpstreamTlsContext, cluster: &str) -> Result<FileTls, FilesError> {
    let common = u.common_tls_context.clone().unwrap_or_default();
    let c = &common;
    if !c.tls_certificate_sds_secret_configs.is_empty() {
        return Err(unsupported(
            "common_tls_context.tls_certificate_sds_secret_configs",
            "an SDS certificate beside certificates from files",
        ));
    }
    if c.tls_certificate_provider_instance.is_some() {
        return Err(unsupported(
            "common_tls_context.tls_certificate_provider_instance",
            "a certificate provider",
        ));
    }
    if c.tls_certificates.len() > 1 {
        return Err(unsupported(
            "common_tls_context.tls_certificates",
            "more than one certificate",
        ));
    }
    let client = c
        .tls_certificates
        .first()
        .map(client_certificate)
        .transpose()?;
    let validation = validation(c.validation_context_type.as_ref())?;
    let (roots, sans) = match validation {
        Some((roots, sans)) => (Some(roots), sans),
        None => (None, Vec::new()),
    };

    // SNI: the context's, else (Istio's auto SNI) the host of an Istio outbound cluster.
    let (sni, auto) = if u.sni.is_empty() {
        let host = cluster
            .strip_prefix("outbound|")
            .and_then(|r| r.splitn(3, '|').nth(2))
            .and_then(|h| ServerName::try_from(h.to_string()).ok());
        (host, true)
    } else {
        let name = ServerName::try_from(u.sni.clone()).map_err(|_| FilesError::Unsupported {
            field: "sni".into(),
            what: format!("{:?} (not a DNS name or IP address)", u.sni),
        })?;
        (Some(name), false)
    };
    // Istio's auto SAN validation: no names given, roots to check against, no `sni`.
    let check_name = (auto && sans.is_empty() && roots.is_some())
        .then(|| sni.clone())
        .flatten();

    let alpn: Vec<Vec<u8>> = c
        .alpn_protocols
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();

    let id = id_of(
        &roots,
        client.as_ref(),
        &sans,
        sni.as_ref(),
        check_name.is_some(),
        &alpn,
    );
    let summary = summary(
        &roots,
        client.as_ref(),
        &sans,
        sni.as_ref(),
        check_name.is_some(),
    );
    let verifier = Arc::new(FilesServer {
        roots: roots.map(|r| r.anchors),
        sans,
        name: check_name,
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client {
        Some(c) => {
            builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(c.key)))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn;
    config.enable_sni = sni.is_some();
    // rustls wants a name even when it sends none; the verifier above ignores the one it is given.
    let server_name =
        sni.unwrap_or_else(|| ServerName::IpAddress(IpAddr::from([0, 0, 0, 0]).into()));
    Ok(FileTls {
        tls: ClientTls {
            id,
            config: Arc::new(config),
            server_name,
        },
        summary: summary.into(),
    })
}

/// A gateway server's TLS from files (Istio's Gateway `tls` SIMPLE and MUTUAL, as weftd writes it: a
/// `DownstreamTlsContext` whose `tls_certificates` and `validation_context` name files), ready to accept
/// with. Read when the listener arrives: a file that cannot be read or a key that is not the
/// certificate's rejects the listener (NACK) naming the field and path.
#[derive(Clone)]
pub struct ServerFiles {
    /// The rustls settings.
    pub config: Arc<rustls::ServerConfig>,
    /// Equal for equal inputs (the bytes read): a listener is rebound when its TLS changes.
    pub id: u32,
    /// What they were made from, for logs and `Debug`.
    pub summary: Arc<str>,
}

impl PartialEq for ServerFiles {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for ServerFiles {}

impl std::fmt::Debug for ServerFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerFiles")
            .field("id", &self.id)
            .field("summary", &self.summary)
            .finish()
    }
}

/// Whether a downstream TLS context carries its certificate itself (files or inline), rather than
/// from SDS as the mesh's does.
pub fn is_files_server(d: &xtls::DownstreamTlsContext) -> bool {
    d.common_tls_context
        .as_ref()
        .is_some_and(|c| !c.tls_certificates.is_empty())
}

/// Reads a gateway server's TLS (see [`ServerFiles`]). With `require_client_certificate`, a client
/// must present a certificate that chains to `validation_context.trusted_ca` (MUTUAL); without, none
/// is asked for (SIMPLE).
pub fn read_server(d: &xtls::DownstreamTlsContext) -> Result<ServerFiles, FilesError> {
    let common = d.common_tls_context.clone().unwrap_or_default();
    let c = &common;
    if !c.tls_certificate_sds_secret_configs.is_empty() {
        return Err(unsupported(
            "common_tls_context.tls_certificate_sds_secret_configs",
            "an SDS certificate beside certificates from files",
        ));
    }
    if c.tls_certificates.len() != 1 {
        return Err(unsupported(
            "common_tls_context.tls_certificates",
            "other than one certificate",
        ));
    }
    for (set, what) in [
        (d.require_sni.is_some_and(|b| b.value), "require_sni"),
        (d.session_ticket_keys_type.is_some(), "session_ticket_keys"),
        (d.ocsp_staple_policy != 0, "ocsp_staple_policy"),
        (c.tls_params.is_some(), "common_tls_context.tls_params"),
    ] {
        if set {
            return Err(unsupported(what, what));
        }
    }
    let server = client_certificate(&c.tls_certificates[0])?;
    let validation = validation(c.validation_context_type.as_ref())?;
    let require = d.require_client_certificate.is_some_and(|b| b.value);
    let roots = match (validation, require) {
        (Some((_, sans)), _) if !sans.is_empty() => {
            return Err(unsupported(
                "common_tls_context.validation_context.match_subject_alt_names",
                "client names on a server",
            ))
        }
        (Some((roots, _)), true) => Some(roots),
        (None, true) => {
            return Err(FilesError::Missing {
                field: "common_tls_context.validation_context.trusted_ca".into(),
            })
        }
        (Some(_), false) => {
            return Err(unsupported(
                "common_tls_context.validation_context",
                "verifying optional client certificates (require_client_certificate false)",
            ))
        }
        (None, false) => None,
    };
    let alpn: Vec<Vec<u8>> = c
        .alpn_protocols
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    let id = id_of(&roots, Some(&server), &[], None, require, &alpn);
    let summary = format!(
        "certificate {} key {}, {}",
        server.chain_from,
        server.key_from,
        match &roots {
            Some(r) => format!("client certificates required, roots from {}", r.from),
            None => "no client certificate".into(),
        }
    );
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3");
    let builder = match &roots {
        Some(r) => {
            let mut store = rustls::RootCertStore::empty();
            store.roots.extend(r.anchors.iter().cloned());
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(store),
                provider(),
            )
            .build()
            .map_err(|e| FilesError::Unsupported {
                field: "common_tls_context.validation_context.trusted_ca".into(),
                what: format!("these roots ({e})"),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config =
        builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(server.key)));
    config.alpn_protocols = alpn;
    Ok(ServerFiles {
        config: Arc::new(config),
        id,
        summary: summary.into(),
    })
}

fn unsupported(field: &str, what: &str) -> FilesError {
    FilesError::Unsupported {
        field: field.into(),
        what: what.into(),
    }
}

// === reading data sources ===

/// A data source's bytes and where they came from (a path, or `inline data`).
struct Loaded {
    bytes: Vec<u8>,
    from: String,
}

/// Reads `ds` (the field `field`): a file, or inline bytes or text.
fn load(ds: Option<&DataSource>, field: &str) -> Result<Loaded, FilesError> {
    let missing = || FilesError::Missing {
        field: field.into(),
    };
    match ds.and_then(|d| d.specifier.as_ref()).ok_or_else(missing)? {
        Specifier::Filename(path) if path.is_empty() => Err(missing()),
        Specifier::Filename(path) => Ok(Loaded {
            bytes: read_file(path).map_err(|source| FilesError::Read {
                field: field.into(),
                path: path.clone(),
                source,
            })?,
            from: path.clone(),
        }),
        Specifier::InlineBytes(b) => Ok(Loaded {
            bytes: b.clone(),
            from: "inline data".into(),
        }),
        Specifier::InlineString(s) => Ok(Loaded {
            bytes: s.clone().into_bytes(),
            from: "inline data".into(),
        }),
        Specifier::EnvironmentVariable(_) => Err(unsupported(field, "environment_variable")),
    }
}

/// A regular file's bytes, at most [`MAX_FILE_BYTES`]. On a multi-threaded runtime the read runs with
/// the worker handed over to the others (`block_in_place`), so requests are not held behind a slow disk.
pub fn read_file(path: &str) -> std::io::Result<Vec<u8>> {
    let read = || {
        use std::io::{Error, ErrorKind};
        if !std::fs::metadata(path)?.is_file() {
            return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
        }
        let mut bytes = Vec::new();
        std::fs::File::open(path)?
            .take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(Error::new(
                ErrorKind::InvalidData,
                format!("larger than {MAX_FILE_BYTES} bytes"),
            ));
        }
        Ok(bytes)
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(read)
        }
        _ => read(),
    }
}

/// The certificates of a PEM data source (none is an error).
fn certificates(l: &Loaded, field: &str) -> Result<Vec<CertificateDer<'static>>, FilesError> {
    let pem_error = |source| FilesError::NoPem {
        field: field.into(),
        kind: "PEM certificate",
        from: l.from.clone(),
        source,
    };
    let certs = CertificateDer::pem_slice_iter(&l.bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certs.is_empty() {
        return Err(pem_error(rustls::pki_types::pem::Error::NoItemsFound));
    }
    Ok(certs)
}

// === the client certificate ===

/// A client certificate and key, and where they came from.
struct Client {
    key: CertifiedKey,
    chain_from: String,
    key_from: String,
    /// The key's DER, for the pool id only.
    key_der: Vec<u8>,
}

fn client_certificate(t: &xtls::TlsCertificate) -> Result<Client, FilesError> {
    const AT: &str = "common_tls_context.tls_certificates[0]";
    for (set, what) in [
        (t.pkcs12.is_some(), "pkcs12"),
        (t.private_key_provider.is_some(), "private_key_provider"),
        (t.password.is_some(), "password"),
        (t.watched_directory.is_some(), "watched_directory"),
    ] {
        if set {
            return Err(unsupported(&format!("{AT}.{what}"), what));
        }
    }
    let chain_field = format!("{AT}.certificate_chain");
    let chain_src = load(t.certificate_chain.as_ref(), &chain_field)?;
    let chain = certificates(&chain_src, &chain_field)?;
    let key_field = format!("{AT}.private_key");
    let key_src = load(t.private_key.as_ref(), &key_field)?;
    // PKCS#8, SEC1 (`EC PRIVATE KEY`) and PKCS#1 (`RSA PRIVATE KEY`) alike.
    let key =
        PrivateKeyDer::from_pem_slice(&key_src.bytes).map_err(|source| FilesError::NoPem {
            field: key_field.clone(),
            kind: "PEM private key",
            from: key_src.from.clone(),
            source,
        })?;
    let key_der = key.secret_der().to_vec();
    let signer = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|source| FilesError::Key {
            from: key_src.from.clone(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        // A key whose public half the provider cannot tell is taken on trust, as rustls does.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(FilesError::KeyMismatch {
                chain: chain_src.from,
                key: key_src.from,
            })
        }
        Err(source) => {
            return Err(FilesError::NoPem {
                field: chain_field,
                kind: "usable certificate",
                from: chain_src.from,
                source: rustls::pki_types::pem::Error::Base64Decode(source.to_string()),
            })
        }
    }
    Ok(Client {
        key: certified,
        chain_from: chain_src.from,
        key_from: key_src.from,
        key_der,
    })
}

// === the server's certificate ===

/// Roots to check the server's chain against.
struct Roots {
    anchors: Arc<[TrustAnchor<'static>]>,
    /// Where they came from.
    from: String,
}

/// The roots and names of a validation context; `None`: nothing is checked.
fn validation(
    v: Option<&xtls::common_tls_context::ValidationContextType>,
) -> Result<Option<(Roots, Vec<San>)>, FilesError> {
    use xtls::common_tls_context::ValidationContextType as V;
    const AT: &str = "common_tls_context.validation_context";
    let v = match v {
        None => return Ok(None),
        Some(V::ValidationContext(v)) => v,
        Some(_) => {
            return Err(unsupported(
                "common_tls_context",
                "a validation context from SDS with certificates from files",
            ))
        }
    };
    #[allow(deprecated)] // match_subject_alt_names: what Istio writes
    let refused = [
        (v.crl.is_some(), "crl"),
        (
            !v.verify_certificate_spki.is_empty(),
            "verify_certificate_spki",
        ),
        (
            !v.verify_certificate_hash.is_empty(),
            "verify_certificate_hash",
        ),
        (v.allow_expired_certificate, "allow_expired_certificate"),
        (v.trust_chain_verification != 0, "trust_chain_verification"),
        (
            v.custom_validator_config.is_some(),
            "custom_validator_config",
        ),
        (
            v.ca_certificate_provider_instance.is_some(),
            "ca_certificate_provider_instance",
        ),
        (v.watched_directory.is_some(), "watched_directory"),
    ];
    for (set, what) in refused {
        if set {
            return Err(unsupported(&format!("{AT}.{what}"), what));
        }
    }
    let sans = sans(v)?;
    let roots = match (&v.trusted_ca, &v.system_root_certs) {
        (Some(ca), _) => {
            let field = format!("{AT}.trusted_ca");
            let l = load(Some(ca), &field)?;
            let mut anchors = Vec::new();
            for (index, cert) in certificates(&l, &field)?.iter().enumerate() {
                let a =
                    webpki::anchor_from_trusted_cert(cert).map_err(|source| FilesError::Root {
                        field: field.clone(),
                        index,
                        from: l.from.clone(),
                        source,
                    })?;
                anchors.push(a.to_owned());
            }
            Roots {
                anchors: anchors.into(),
                from: l.from,
            }
        }
        (None, Some(_)) => system_roots(&format!("{AT}.system_root_certs"))?,
        // Envoy: names without roots to check the chain against would prove nothing; no roots and no
        // names is no verification.
        (None, None) if sans.is_empty() => return Ok(None),
        (None, None) => {
            return Err(unsupported(
                &format!("{AT}.match_subject_alt_names"),
                "a SAN match without trusted_ca or system_root_certs",
            ))
        }
    };
    Ok(Some((roots, sans)))
}

/// The system's roots, read from the first readable bundle of [`SYSTEM_ROOTS`] once per process.
fn system_roots(field: &str) -> Result<Roots, FilesError> {
    static CACHE: OnceLock<(Arc<[TrustAnchor<'static>]>, String)> = OnceLock::new();
    if let Some((anchors, from)) = CACHE.get() {
        return Ok(Roots {
            anchors: anchors.clone(),
            from: from.clone(),
        });
    }
    let (anchors, from) =
        read_system_roots(&SYSTEM_ROOTS).ok_or_else(|| FilesError::NoSystemRoots {
            field: field.into(),
            tried: SYSTEM_ROOTS.join(", "),
        })?;
    let (anchors, from) = CACHE.get_or_init(|| (anchors, from));
    Ok(Roots {
        anchors: anchors.clone(),
        from: from.clone(),
    })
}

/// The usable roots of the first of `paths` that has any, and its path. A bundle's certificates that
/// webpki cannot use are skipped, as every TLS library does with the system's.
fn read_system_roots(paths: &[&str]) -> Option<(Arc<[TrustAnchor<'static>]>, String)> {
    paths.iter().find_map(|p| {
        let bytes = read_file(p).ok()?;
        let anchors: Vec<TrustAnchor<'static>> = CertificateDer::pem_slice_iter(&bytes)
            .filter_map(Result::ok)
            .filter_map(|c| {
                webpki::anchor_from_trusted_cert(&c)
                    .ok()
                    .map(|a| a.to_owned())
            })
            .collect();
        (!anchors.is_empty()).then(|| (anchors.into(), p.to_string()))
    })
}

/// The names of a validation context, typed and untyped, exact matches only.
fn sans(v: &xtls::CertificateValidationContext) -> Result<Vec<San>, FilesError> {
    const AT: &str = "common_tls_context.validation_context";
    let exact = |m: &StringMatcher, field: &str| -> Result<String, FilesError> {
        match &m.match_pattern {
            Some(MatchPattern::Exact(e)) if !m.ignore_case => Ok(e.clone()),
            _ => Err(unsupported(
                field,
                "a match other than exact (case-sensitive)",
            )),
        }
    };
    let mut out = Vec::new();
    for (i, m) in v.match_typed_subject_alt_names.iter().enumerate() {
        let field = format!("{AT}.match_typed_subject_alt_names[{i}]");
        let Some(matcher) = &m.matcher else {
            return Err(FilesError::Missing {
                field: format!("{field}.matcher"),
            });
        };
        let value = exact(matcher, &field)?;
        // SanType: EMAIL 1, DNS 2, URI 3, IP_ADDRESS 4, OTHER_NAME 5.
        out.push(match m.san_type {
            2 => San::Dns(value),
            3 => San::Uri(value),
            4 => San::Ip(value.parse().map_err(|_| FilesError::Unsupported {
                field: field.clone(),
                what: format!("{value:?} as an IP address"),
            })?),
            t => return Err(unsupported(&field, &format!("SAN type {t}"))),
        });
    }
    #[allow(deprecated)] // match_subject_alt_names: what Istio writes
    for (i, m) in v.match_subject_alt_names.iter().enumerate() {
        let field = format!("{AT}.match_subject_alt_names[{i}]");
        out.push(San::Any(exact(m, &field)?));
    }
    Ok(out)
}

/// Whether a certificate's DNS name `cert` covers `want`: equal but for case, or a `*.` wildcard for
/// exactly one leftmost label (Envoy's DNS SAN match).
fn dns_match(cert: &str, want: &str) -> bool {
    if cert.eq_ignore_ascii_case(want) {
        return true;
    }
    match (cert.strip_prefix("*."), want.split_once('.')) {
        (Some(rest), Some((label, want_rest))) => {
            !label.is_empty() && !rest.is_empty() && rest.eq_ignore_ascii_case(want_rest)
        }
        _ => false,
    }
}

/// Whether the certificate `der` carries one of `sans`.
fn has_san(der: &[u8], sans: &[San]) -> bool {
    use x509_parser::extensions::GeneralName as G;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return false;
    };
    let names = &ext.value.general_names;
    let ip = |b: &[u8]| -> Option<IpAddr> {
        match b.len() {
            4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
            _ => None,
        }
    };
    sans.iter().any(|want| {
        names.iter().any(|n| match (want, n) {
            (San::Dns(w), G::DNSName(d)) => dns_match(d, w),
            (San::Uri(w), G::URI(u)) => u == w,
            (San::Ip(w), G::IPAddress(b)) => ip(b) == Some(*w),
            (San::Any(w), G::DNSName(d)) => dns_match(d, w),
            (San::Any(w), G::URI(u) | G::RFC822Name(u)) => u == w,
            (San::Any(w), G::IPAddress(b)) => ip(b).is_some_and(|a| w.parse() == Ok(a)),
            _ => false,
        })
    })
}

/// The server's certificate checked as the cluster says (see the module's note).
#[derive(Debug)]
struct FilesServer {
    /// `None`: nothing is checked.
    roots: Option<Arc<[TrustAnchor<'static>]>>,
    sans: Vec<San>,
    /// Istio's auto SAN validation: the certificate must be valid for this name.
    name: Option<ServerName<'static>>,
}

impl ServerCertVerifier for FilesServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let ee = webpki::EndEntityCert::try_from(end_entity).map_err(cert_error)?;
        ee.verify_for_usage(
            provider().signature_verification_algorithms.all,
            roots,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(cert_error)?;
        if !self.sans.is_empty() {
            if has_san(end_entity.as_ref(), &self.sans) {
                return Ok(ServerCertVerified::assertion());
            }
            tracing::debug!(expected = ?self.sans, "upstream certificate has none of the expected names");
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            ));
        }
        if let Some(name) = &self.name {
            ee.verify_is_valid_for_subject_name(name)
                .map_err(cert_error)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    super::provider_signatures!();
}

// === pool ids ===

/// The pool id of settings: equal inputs (the bytes read, not the paths) give the same id, so clusters
/// with the same settings share connections to a shared endpoint, and a file whose content changed
/// gives new settings a new id. Ids are never reused; one is made per distinct setting seen.
fn id_of(
    roots: &Option<Roots>,
    client: Option<&Client>,
    sans: &[San],
    sni: Option<&ServerName<'static>>,
    check_name: bool,
    alpn: &[Vec<u8>],
) -> u32 {
    static IDS: OnceLock<Mutex<HashMap<[u8; 32], u32>>> = OnceLock::new();
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    let mut part = |b: &[u8]| {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    };
    match roots {
        Some(r) => {
            part(b"roots");
            for a in r.anchors.iter() {
                part(a.subject.as_ref());
                part(a.subject_public_key_info.as_ref());
            }
        }
        None => part(b"no verification"),
    }
    if let Some(c) = client {
        for cert in &c.key.cert {
            part(cert.as_ref());
        }
        part(&c.key_der);
    }
    for s in sans {
        part(format!("{s:?}").as_bytes());
    }
    part(format!("{sni:?} {check_name}").as_bytes());
    for p in alpn {
        part(p);
    }
    let digest = h.finish();
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    let mut ids = IDS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let next = FIRST_ID.saturating_add(ids.len() as u32);
    *ids.entry(key).or_insert(next)
}

fn summary(
    roots: &Option<Roots>,
    client: Option<&Client>,
    sans: &[San],
    sni: Option<&ServerName<'static>>,
    check_name: bool,
) -> String {
    let roots = match roots {
        Some(r) => format!("roots from {}", r.from),
        None => "server not verified".into(),
    };
    let client = match client {
        Some(c) => format!("certificate {} key {}", c.chain_from, c.key_from),
        None => "no client certificate".into(),
    };
    let sni = match sni {
        Some(s) => s.to_str().into_owned(),
        None => "none".into(),
    };
    format!("{roots}, {client}, names {sans:?}, sni {sni}, name checked {check_name}")
}

#[cfg(test)]
mod tests;
