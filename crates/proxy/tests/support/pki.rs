//! Certificates for the TLS tests, made with rcgen when they run, and a directory to write them to as an
//! operator's files would be.

use std::path::PathBuf;

/// A directory of the test's own under the system's temporary one, removed when dropped.
pub struct Dir(PathBuf);

impl Dir {
    /// `name` tells apart the tests of one binary; the process id, the binaries.
    pub fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("weft-proxy-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        Dir(d)
    }

    /// Writes `content` to the file `name` in it, and returns the file's path.
    pub fn write(&self, name: &str, content: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, content).expect("write");
        p.to_string_lossy().into_owned()
    }

    /// The path of the file `name` in it, written or not.
    pub fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A test CA.
pub struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub pem: String,
    pub der: rustls::pki_types::CertificateDer<'static>,
}

/// A certificate and its key, as DER (for a peer written here) and PEM (for the proxy's files).
pub struct Leaf {
    pub chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    pub key: rustls::pki_types::PrivateKeyDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    /// A self-signed root whose common name is `name`.
    pub fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name
            .push(rcgen::DnType::CommonName, name.to_string());
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).expect("root");
        Ca {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: rcgen::Issuer::new(p, key),
        }
    }

    /// A leaf for `sans` (DNS names, and URIs such as SPIFFE IDs), good for servers and clients.
    pub fn leaf(&self, sans: &[&str]) -> Leaf {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        p.subject_alt_names = sans
            .iter()
            .map(|s| {
                if s.contains("://") {
                    rcgen::SanType::URI(s.to_string().try_into().expect("uri"))
                } else {
                    rcgen::SanType::DnsName(s.to_string().try_into().expect("dns"))
                }
            })
            .collect();
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &self.issuer).expect("leaf");
        Leaf {
            chain: vec![cert.der().clone()],
            key: rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("der"),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}
