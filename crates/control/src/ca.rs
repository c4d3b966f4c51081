//! weftd's certificate authority: the signing key and root ([`authority`]), the per-workload tokens that
//! authenticate callers ([`token`]), Istio's `CreateCertificate` API ([`service`]) and the TLS port that
//! serves it beside xDS ([`tls`]).
//!
//! A caller's identity comes from its token only: the CSR gives the public key and nothing else, so a
//! proxy can never obtain a certificate for another workload.

pub mod authority;
pub mod service;
pub mod tls;
pub mod token;

use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Default lifetime of a workload certificate (Istio: DEFAULT_WORKLOAD_CERT_TTL).
pub const DEFAULT_WORKLOAD_CERT_TTL: &str = "24h";
/// Longest lifetime a caller may ask for (Istio: MAX_WORKLOAD_CERT_TTL, 90 days).
pub const DEFAULT_MAX_WORKLOAD_CERT_TTL: &str = "2160h";
/// Lifetime of the self-signed root (Istio: CITADEL_SELF_SIGNED_CA_CERT_TTL, 10 years).
pub const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Lifetime of weftd's own serving certificate; renewed at half of it.
pub const SERVING_CERT_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// The port of the secure server (Istio's istiod 15012: xDS and CA over TLS).
pub const SECURE_PORT: u16 = 15012;

/// File names in `--state-dir`.
pub mod files {
    /// The self-signed root certificate (PEM): the trust anchor proxies are given.
    pub const ROOT_CERT: &str = "root-cert.pem";
    /// The root's private key (PKCS#8 PEM), mode 0600.
    pub const CA_KEY: &str = "ca-key.pem";
    /// The HMAC-SHA256 key that signs workload tokens (32 raw bytes), mode 0600.
    pub const TOKEN_KEY: &str = "token-key";
}

/// Where the CA's key material comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Source {
    /// A root generated into the state directory on first start, and reused after.
    SelfSigned,
    /// The four files of Istio's `cacerts` secret.
    Plugged(CaCerts),
}

/// The files of Istio's `cacerts` secret (`/etc/cacerts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaCerts {
    /// `ca-cert.pem`: the certificate that signs workload certificates.
    pub ca_cert: PathBuf,
    /// `ca-key.pem`: its private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub ca_key: PathBuf,
    /// `cert-chain.pem`: the chain from `ca-cert` towards the root.
    pub cert_chain: PathBuf,
    /// `root-cert.pem`: the root.
    pub root_cert: PathBuf,
}

/// The CA's validated settings.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// The state directory (the generated root, the token key).
    pub state_dir: PathBuf,
    /// Where the signing key comes from.
    pub source: Source,
    /// Lifetime of a workload certificate when the caller asks for none.
    pub default_ttl: Duration,
    /// Longest lifetime a caller may ask for.
    pub max_ttl: Duration,
    /// The TLS port serving the CA and xDS.
    pub secure_address: std::net::SocketAddr,
}

/// Why the CA cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done (`read`, `write`, `create`).
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM of the kind expected.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The state directory has one of the root's two files but not the other.
    #[error(
        "{present} exists but {missing} does not: restore it, or remove both to generate a new root \
         (every workload certificate will then need reissuing)"
    )]
    HalfRoot {
        /// The file that exists.
        present: PathBuf,
        /// The file that does not.
        missing: PathBuf,
    },
    /// The signing certificate does not match its key.
    #[error("{cert} does not certify the key in {key}")]
    KeyMismatch {
        /// The certificate.
        cert: PathBuf,
        /// The key.
        key: PathBuf,
    },
    /// The signing certificate has expired.
    #[error("{path} expired at unix time {not_after}: replace it (or remove the state directory's root files to generate a new one)")]
    Expired {
        /// The certificate.
        path: PathBuf,
        /// Its end of validity, in seconds since the epoch.
        not_after: i64,
    },
    /// rcgen could not generate or sign.
    #[error("cannot {action}")]
    Generate {
        /// What was being done.
        action: &'static str,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// The TLS server could not be configured.
    #[error("cannot configure TLS for the secure port")]
    Tls(#[source] rustls::Error),
    /// The secure port could not be bound.
    #[error("cannot bind the secure port (CA and xDS over TLS) on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A blocking task (loading or generating keys) panicked.
    #[error("the task loading the CA's keys failed")]
    Task,
}

/// The running secure port.
pub struct Started {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The root proxies must trust, PEM.
    pub root_pem: String,
    /// The gRPC server (CA and ADS); ends after shutdown.
    pub server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    /// Renews weftd's serving certificate; ends at shutdown.
    pub renew: tokio::task::JoinHandle<()>,
}

/// Loads (or, on first start, generates) the key material, binds the secure port and serves on it,
/// over TLS, the CA and `ads` (the same ADS service as the plaintext port), until `shutdown` is true.
pub async fn start(
    settings: &Settings,
    ads: crate::server::grpc::AdsService,
    trust_domain: service::TrustDomain,
    shutdown: watch::Receiver<bool>,
) -> Result<Started, Error> {
    let s = settings.clone();
    let loaded = tokio::task::spawn_blocking(move || -> Result<_, Error> {
        let authority = match &s.source {
            Source::SelfSigned => authority::Authority::load_or_create(&s.state_dir)?,
            Source::Plugged(files) => authority::Authority::from_cacerts(files)?,
        };
        let tokens = token::TokenKey::load_or_create(&s.state_dir)?;
        let serving = tls::ServingCert::issue(&authority, tls::Names::for_bind(s.secure_address))?;
        Ok((Arc::new(authority), Arc::new(tokens), Arc::new(serving)))
    })
    .await
    .map_err(|_| Error::Task)?;
    let (authority, tokens, serving) = loaded?;
    let bind = |source| Error::Bind {
        addr: settings.secure_address,
        source,
    };
    let listener = crate::server::listen(settings.secure_address).map_err(bind)?;
    let addr = listener.local_addr().map_err(bind)?;
    let tls = serving.server_config()?;
    let ttl = service::Ttl {
        default: settings.default_ttl,
        max: settings.max_ttl,
    };
    let ca = service::CaService::new(authority.clone(), tokens, trust_domain, ttl).into_server();
    let mut stop = shutdown.clone();
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(ca)
        .add_service(ads)
        .serve_with_incoming_shutdown(tls::incoming(listener, tls), async move {
            let _ = stop.wait_for(|s| *s).await;
        });
    let root_pem = authority.root_pem();
    let renew = tokio::spawn(serving.renew(authority, shutdown));
    Ok(Started {
        addr,
        root_pem,
        server: tokio::spawn(server),
        renew,
    })
}

impl Error {
    fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
        move |source| Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A workload as the CA knows it: a namespace and a service account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadId {
    /// The namespace (a DNS-1123 label).
    pub namespace: String,
    /// The service account (a DNS-1123 subdomain).
    pub service_account: String,
}

impl WorkloadId {
    /// Checks both names as Kubernetes does; the error names the field.
    pub fn new(namespace: &str, service_account: &str) -> Result<WorkloadId, String> {
        if !is_dns_label(namespace) {
            return Err(format!(
                "namespace {namespace:?} is not a DNS-1123 label (lowercase letters, digits and '-', \
                 at most 63)"
            ));
        }
        if !is_dns_subdomain(service_account) {
            return Err(format!(
                "service account {service_account:?} is not a DNS-1123 subdomain (lowercase letters, \
                 digits, '-' and '.', at most 253)"
            ));
        }
        Ok(WorkloadId {
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        })
    }

    /// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
    pub fn spiffe_id(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }
}

/// Creates `dir` (and its parents) if missing, readable by its owner only.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), Error> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(Error::io("create", dir))
}

/// Writes `contents` to `path`, which must not exist, through a temporary file renamed into place, so
/// a reader never sees half a file. `private`: mode 0600 (keys); else 0644.
pub(crate) fn write_new(path: &Path, contents: &[u8], private: bool) -> Result<(), Error> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, if private { 0o600 } else { 0o644 });
    #[cfg(not(unix))]
    let _ = private;
    let mut f = o.open(&tmp).map_err(Error::io("create", &tmp))?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .map_err(Error::io("write", &tmp))?;
    // A hard link fails when `path` exists: two weftds (or weftd and `weftd token`) racing to create
    // the same file keep the first one's.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked.map_err(Error::io("create", path))
}

/// Reads a whole file.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(Error::io("read", path))
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_names_follow_kubernetes() {
        let ok = WorkloadId::new("default", "bookinfo-productpage").expect("valid");
        assert_eq!(
            ok.spiffe_id("cluster.local"),
            "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
        );
        assert!(WorkloadId::new("default", "a.b-c").is_ok());
        let bad: &[(&str, &str, &str)] = &[
            ("", "sa", "namespace \"\""),
            ("Default", "sa", "namespace \"Default\""),
            ("a:b", "sa", "namespace \"a:b\""),
            ("ns", "", "service account \"\""),
            ("ns", "a/b", "service account \"a/b\""),
            ("ns", "-a", "service account \"-a\""),
        ];
        for (ns, sa, want) in bad {
            let err = WorkloadId::new(ns, sa).expect_err(want);
            assert!(err.starts_with(want), "{err}");
        }
    }
}
