//! The signing key and the chain above it: a self-signed root kept in the state directory, or the four
//! files of Istio's `cacerts` secret. Signs workload CSRs and weftd's own serving certificate.
//!
//! The generated root is ECDSA P-256 (Istio's default is RSA 2048; it offers ECDSA with
//! `ECC_SIGNATURE_ALGORITHM=ECDSA`): ring, the workspace's one crypto provider, cannot generate RSA
//! keys, and P-256 signs faster and makes smaller certificates and handshakes. A plugged-in RSA key
//! signs as well as an ECDSA one.

use super::{read, write_new, Error};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Why a CSR was not signed; each message says what is wrong with the request.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// Not a PEM `CERTIFICATE REQUEST`.
    #[error("the CSR is not PEM: want one -----BEGIN CERTIFICATE REQUEST----- block")]
    NotPem,
    /// Not PKCS#10.
    #[error("the CSR does not parse as PKCS#10: {0}")]
    Parse(String),
    /// The self-signature is wrong.
    #[error("the CSR's signature does not verify with its own public key")]
    Signature,
    /// A key type the CA does not sign for.
    #[error("the CSR's public key is not supported (ECDSA P-256 or P-384, RSA, Ed25519): {0}")]
    Key(String),
    /// The SPIFFE ID is not an IA5 string.
    #[error("the identity {0:?} cannot be a URI SAN")]
    Identity(String),
    /// Signing failed.
    #[error("cannot sign the certificate")]
    Sign(#[source] rcgen::Error),
}

/// The CA: its signing key and certificate, and the chain it returns above each leaf.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// Above a leaf: the intermediates (the signing certificate first when it is not the root), then
    /// the root; one PEM certificate each.
    above: Vec<String>,
    /// The root, as DER.
    root: CertificateDer<'static>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("chain_length", &self.above.len())
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// Loads the root from `dir` (`root-cert.pem`, `ca-key.pem`), or generates one there on first
    /// start: ECDSA P-256, valid ten years, the key file readable by its owner only.
    pub fn load_or_create(dir: &Path) -> Result<Authority, Error> {
        super::create_private_dir(dir)?;
        let cert = dir.join(super::files::ROOT_CERT);
        let key = dir.join(super::files::CA_KEY);
        match (cert.exists(), key.exists()) {
            (true, true) => {}
            (false, false) => generate_root(&cert, &key)?,
            (true, false) => {
                return Err(Error::HalfRoot {
                    present: cert,
                    missing: key,
                })
            }
            (false, true) => {
                return Err(Error::HalfRoot {
                    present: key,
                    missing: cert,
                })
            }
        }
        let (ca_der, ca_pem, keypair) = load_signer(&cert, &key)?;
        Authority::build(ca_der.clone(), keypair, vec![ca_pem], ca_der, &cert)
    }

    /// Loads Istio's `cacerts`: signs with `ca_cert`/`ca_key`; a leaf's chain is the leaf, the
    /// certificates of `cert_chain` (with `ca_cert` first, added when the file leaves it out), and the
    /// root last (once, when `cert_chain` ends with it already).
    pub fn from_cacerts(files: &super::CaCerts) -> Result<Authority, Error> {
        let (ca_der, _, keypair) = load_signer(&files.ca_cert, &files.ca_key)?;
        let root = certificates(&files.root_cert)?
            .into_iter()
            .next()
            .ok_or_else(|| no_cert(&files.root_cert))?;
        let mut above: Vec<CertificateDer<'static>> = certificates(&files.cert_chain)?;
        if above.first() != Some(&ca_der) {
            above.insert(0, ca_der.clone());
        }
        while above.last() == Some(&root) {
            above.pop();
        }
        above.push(root.clone());
        let above = above.iter().map(pem).collect();
        Authority::build(ca_der, keypair, above, root, &files.ca_cert)
    }

    fn build(
        ca_der: CertificateDer<'static>,
        key: KeyPair,
        above: Vec<String>,
        root: CertificateDer<'static>,
        ca_path: &Path,
    ) -> Result<Authority, Error> {
        let issuer = Issuer::from_ca_cert_der(&ca_der, key).map_err(|e| Error::Pem {
            path: ca_path.to_path_buf(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
        Ok(Authority {
            issuer,
            above,
            root,
        })
    }

    /// The root certificate, PEM: what proxies trust.
    pub fn root_pem(&self) -> String {
        pem(&self.root)
    }

    /// The root certificate.
    pub fn root(&self) -> &CertificateDer<'static> {
        &self.root
    }

    /// Signs `csr_pem` for `spiffe_id`, valid `ttl` from now: the CSR's public key and nothing else of
    /// it. Returns the chain, one PEM certificate each: leaf, intermediates, root.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        spiffe_id: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, SignError> {
        let key = csr_public_key(csr_pem)?;
        let uri = spiffe_id
            .to_string()
            .try_into()
            .map_err(|_| SignError::Identity(spiffe_id.to_string()))?;
        let now = SystemTime::now();
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names = vec![SanType::URI(uri)];
        p.not_before = now.into();
        p.not_after = (now + ttl).into();
        p.serial_number = Some(serial());
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.is_ca = IsCa::ExplicitNoCa;
        p.use_authority_key_identifier_extension = true;
        let leaf = p.signed_by(&key, &self.issuer).map_err(SignError::Sign)?;
        let mut chain = Vec::with_capacity(1 + self.above.len());
        chain.push(leaf.pem());
        chain.extend(self.above.iter().cloned());
        Ok(chain)
    }

    /// A certificate for weftd's own TLS port with these DNS names and IPs, and its new key: the
    /// chain is the leaf and the intermediates (not the root).
    pub fn issue_server(
        &self,
        dns: &[&str],
        ips: &[IpAddr],
        ttl: Duration,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
        let generate = |source| Error::Generate {
            action: "issue weftd's serving certificate",
            source,
        };
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, "weftd");
        for d in dns {
            let name = d.to_string().try_into().map_err(generate)?;
            p.subject_alt_names.push(SanType::DnsName(name));
        }
        p.subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let now = SystemTime::now();
        p.not_before = now.into();
        p.not_after = (now + ttl).into();
        p.serial_number = Some(serial());
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.is_ca = IsCa::ExplicitNoCa;
        p.use_authority_key_identifier_extension = true;
        let leaf = p.signed_by(&key, &self.issuer).map_err(generate)?;
        let mut chain = vec![leaf.der().clone()];
        // Intermediates only: the client has the root.
        for c in &self.above[..self.above.len().saturating_sub(1)] {
            if let Some(der) = CertificateDer::pem_slice_iter(c.as_bytes())
                .next()
                .and_then(Result::ok)
            {
                chain.push(der);
            }
        }
        let key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        Ok((chain, key))
    }
}

/// Generates the self-signed root into `cert` and `key`.
fn generate_root(cert: &Path, key: &Path) -> Result<(), Error> {
    let generate = |source| Error::Generate {
        action: "generate the root",
        source,
    };
    let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::OrganizationName, "Weft");
    p.distinguished_name
        .push(DnType::CommonName, "Weft root CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    // An hour back: a proxy whose clock is a little behind still accepts the root.
    let now = SystemTime::now();
    p.not_before = now
        .checked_sub(Duration::from_secs(3600))
        .unwrap_or(now)
        .into();
    p.not_after = (now + super::ROOT_TTL).into();
    p.serial_number = Some(serial());
    let root = p.self_signed(&pair).map_err(generate)?;
    write_new(key, pair.serialize_pem().as_bytes(), true)?;
    write_new(cert, root.pem().as_bytes(), false)?;
    tracing::info!(root = %cert.display(), "generated a new root certificate");
    Ok(())
}

/// Reads a signing certificate and its key, and checks that they belong together and that the
/// certificate is still valid.
fn load_signer(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(CertificateDer<'static>, String, KeyPair), Error> {
    let cert = certificates(cert_path)?
        .into_iter()
        .next()
        .ok_or_else(|| no_cert(cert_path))?;
    let key = keypair(key_path)?;
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, parsed) = X509Certificate::from_der(cert.as_ref()).map_err(|e| Error::Pem {
        path: cert_path.to_path_buf(),
        reason: format!("the certificate does not parse: {e}"),
    })?;
    if parsed.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
        return Err(Error::KeyMismatch {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
        });
    }
    let not_after = parsed.validity().not_after.timestamp();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if not_after <= now {
        return Err(Error::Expired {
            path: cert_path.to_path_buf(),
            not_after,
        });
    }
    let text = pem(&cert);
    Ok((cert, text, key))
}

/// Every certificate of a PEM file.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = read(path)?;
    CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem {
            path: path.to_path_buf(),
            reason: format!("bad PEM: {e}"),
        })
}

fn no_cert(path: &Path) -> Error {
    Error::Pem {
        path: path.to_path_buf(),
        reason: "no CERTIFICATE block".into(),
    }
}

/// A private key file: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`, as Istio's sample `cacerts`)
/// or SEC1 (`EC PRIVATE KEY`); the last two are wrapped into PKCS#8, the only form rcgen on ring reads.
fn keypair(path: &Path) -> Result<KeyPair, Error> {
    let bytes = read(path)?;
    let bad = |reason: String| Error::Pem {
        path: path.to_path_buf(),
        reason,
    };
    let key =
        PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| bad(format!("no private key: {e}")))?;
    let pkcs8 = match &key {
        PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
        PrivateKeyDer::Pkcs1(k) => pkcs8::from_pkcs1(k.secret_pkcs1_der()),
        PrivateKeyDer::Sec1(k) => pkcs8::from_sec1(k.secret_sec1_der())
            .ok_or_else(|| bad("an EC key on a curve other than P-256 or P-384".into()))?,
        _ => return Err(bad("an unknown private key format".into())),
    };
    KeyPair::try_from(pkcs8.as_slice())
        .map_err(|e| bad(format!("not an ECDSA P-256/P-384, RSA or Ed25519 key: {e}")))
}

/// The public key of a PEM CSR whose self-signature verifies.
///
/// rcgen's `CertificateSigningRequestParams::from_pem` verifies the signature too (through
/// x509-parser's `verify` feature), but it refuses CSRs carrying extensions it does not model and takes
/// the key's algorithm from the signature's; only the key matters here, so the CSR is read with
/// x509-parser and the key from its SubjectPublicKeyInfo.
fn csr_public_key(csr_pem: &str) -> Result<rcgen::SubjectPublicKeyInfo, SignError> {
    use x509_parser::prelude::{FromDer, X509CertificationRequest};
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|_| SignError::NotPem)?;
    let (_, csr) = X509CertificationRequest::from_der(der.as_ref())
        .map_err(|e| SignError::Parse(e.to_string()))?;
    csr.verify_signature().map_err(|_| SignError::Signature)?;
    rcgen::SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
        .map_err(|e| SignError::Key(e.to_string()))
}

/// A random positive 128-bit serial.
fn serial() -> SerialNumber {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    // SystemRandom fails only when the OS has no randomness; a clock-derived serial is then unique
    // enough for a serial (it is not a secret).
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        b = t.to_be_bytes();
    }
    // Positive, and sixteen bytes long in DER.
    b[0] = (b[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&b)
}

fn pem(der: &CertificateDer<'_>) -> String {
    use std::fmt::Write;
    let b64 = base64_encode(der.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        let _ = writeln!(out, "{}", String::from_utf8_lossy(line));
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Standard base64 with padding (PEM's).
fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// Wrapping PKCS#1 and SEC1 keys into PKCS#8 (RFC 5208), by hand: three DER elements.
mod pkcs8 {
    /// `rsaEncryption` with NULL parameters.
    const RSA: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    /// `id-ecPublicKey` with `prime256v1`.
    const EC_P256: &[u8] = &[
        0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
        0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ];
    /// `id-ecPublicKey` with `secp384r1`.
    const EC_P384: &[u8] = &[
        0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81,
        0x04, 0x00, 0x22,
    ];
    /// The named-curve OIDs as they appear inside a SEC1 key's parameters.
    const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

    pub(super) fn from_pkcs1(key: &[u8]) -> Vec<u8> {
        wrap(RSA, key)
    }

    /// SEC1 names its curve in its parameters; a key without them cannot be placed.
    pub(super) fn from_sec1(key: &[u8]) -> Option<Vec<u8>> {
        let alg = if contains(key, P256_OID) {
            EC_P256
        } else if contains(key, P384_OID) {
            EC_P384
        } else {
            return None;
        };
        Some(wrap(alg, key))
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    fn wrap(alg: &[u8], key: &[u8]) -> Vec<u8> {
        let mut body = vec![0x02, 0x01, 0x00]; // version 0
        body.extend_from_slice(alg);
        body.push(0x04); // OCTET STRING
        length(&mut body, key.len());
        body.extend_from_slice(key);
        let mut out = vec![0x30];
        length(&mut out, body.len());
        out.extend_from_slice(&body);
        out
    }

    fn length(out: &mut Vec<u8>, n: usize) {
        if n < 0x80 {
            out.push(n as u8);
        } else {
            let bytes = n.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
    }
}

/// Where a test's files go: a fresh directory under the system's temporary one.
#[cfg(test)]
pub(crate) fn test_dir(name: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "weftd-ca-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[cfg(test)]
mod tests;
