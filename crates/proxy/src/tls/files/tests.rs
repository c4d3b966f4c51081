//! Settings from files: what is read, what is refused (by field and path), and what the server's
//! certificate must be. Certificates are made with rcgen when the tests run; RSA (PKCS#1) and SEC1 keys
//! with Debian's `openssl`, which ring cannot make.

use super::*;
use std::path::{Path, PathBuf};
use weft_xds::pb::envoy::config::core::v3::DataSource;
use xtls::common_tls_context::ValidationContextType;

/// A directory of its own under the system's temporary one, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("weft-filetls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        Dir(d)
    }

    fn write(&self, name: &str, content: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, content).expect("write");
        p.to_string_lossy().into_owned()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A test CA.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Ca {
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

    /// A leaf for `sans` (DNS names, `spiffe://` URIs, IP addresses), its PEM and its key's PEM.
    fn leaf(&self, sans: &[&str]) -> (CertificateDer<'static>, String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        p.subject_alt_names = sans
            .iter()
            .map(|s| {
                if let Ok(ip) = s.parse::<IpAddr>() {
                    rcgen::SanType::IpAddress(ip)
                } else if s.contains("://") {
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
        (cert.der().clone(), cert.pem(), key.serialize_pem())
    }
}

fn file(path: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(Specifier::Filename(path.into())),
        ..Default::default()
    })
}

fn exact(s: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Exact(s.into())),
        ..Default::default()
    }
}

/// SIMPLE or MUTUAL as weftd writes it: roots from `ca` (the system's when `None`), the client's
/// certificate when given, `sans` as untyped exact matchers, `sni`.
#[allow(deprecated)]
fn context(
    ca: Option<&str>,
    client: Option<(&str, &str)>,
    sans: &[&str],
    sni: &str,
) -> xtls::UpstreamTlsContext {
    xtls::UpstreamTlsContext {
        common_tls_context: Some(xtls::CommonTlsContext {
            tls_certificates: client
                .map(|(chain, key)| xtls::TlsCertificate {
                    certificate_chain: file(chain),
                    private_key: file(key),
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            validation_context_type: Some(ValidationContextType::ValidationContext(
                xtls::CertificateValidationContext {
                    trusted_ca: ca.and_then(file),
                    system_root_certs: ca
                        .is_none()
                        .then_some(xtls::certificate_validation_context::SystemRootCerts {}),
                    match_subject_alt_names: sans.iter().map(|s| exact(s)).collect(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        sni: sni.into(),
        ..Default::default()
    }
}

const CLUSTER: &str = "outbound|443||api.example.com";

fn refused(u: &xtls::UpstreamTlsContext) -> String {
    super::super::error_chain(&read(u, CLUSTER).expect_err("refused"))
}

#[test]
fn dns_names_match_as_envoy_does() {
    let cases = [
        ("api.example.com", "api.example.com", true),
        ("API.example.com", "api.EXAMPLE.com", true),
        ("*.example.com", "api.example.com", true),
        ("*.example.com", "example.com", false),
        ("*.example.com", "a.b.example.com", false),
        ("*.example.com", ".example.com", false),
        ("api.example.com", "*.example.com", false),
        ("other.example.com", "api.example.com", false),
    ];
    for (cert, want, expected) in cases {
        assert_eq!(dns_match(cert, want), expected, "{cert} for {want}");
    }
}

#[test]
fn roots_client_certificate_and_names_are_read_from_files() {
    let dir = Dir::new("read");
    let ca = Ca::new("root");
    let ca_path = dir.write("ca.pem", &ca.pem);
    let (_, chain, key) = ca.leaf(&["client.example.com"]);
    let chain_path = dir.write("cert.pem", &chain);
    let key_path = dir.write("key.pem", &key);
    let u = context(
        Some(&ca_path),
        Some((&chain_path, &key_path)),
        &["api.example.com"],
        "",
    );
    let f = read(&u, CLUSTER).expect("read");
    assert!(is_files_id(f.tls.id), "{}", f.tls.id);
    assert!(f.summary.contains(&ca_path), "{}", f.summary);
    assert!(f.summary.contains(&chain_path), "{}", f.summary);
    assert!(f.tls.config.client_auth_cert_resolver.has_certs());
    // No `sni`: the Istio cluster's host is sent; names were given, so no name is checked beside them.
    assert_eq!(f.tls.server_name.to_str(), "api.example.com");
    assert!(f.tls.config.enable_sni);
    assert!(f.summary.contains("name checked false"), "{}", f.summary);
    assert!(f.tls.config.alpn_protocols.is_empty());
    // The same bytes give the same id (one pool); other names, another.
    assert_eq!(read(&u, CLUSTER).expect("again").tls.id, f.tls.id);
    let other = context(Some(&ca_path), Some((&chain_path, &key_path)), &["x"], "");
    assert_ne!(read(&other, CLUSTER).expect("other").tls.id, f.tls.id);
}

#[test]
fn sni_is_the_contexts_else_the_istio_clusters_host() {
    let dir = Dir::new("sni");
    let ca_path = dir.write("ca.pem", &Ca::new("root").pem);
    let set = read(
        &context(Some(&ca_path), None, &[], "set.example.com"),
        CLUSTER,
    )
    .expect("read");
    assert_eq!(set.tls.server_name.to_str(), "set.example.com");
    assert!(
        set.summary.contains("name checked false"),
        "{}",
        set.summary
    );
    // Istio's auto SNI and auto SAN validation.
    let auto = read(&context(Some(&ca_path), None, &[], ""), CLUSTER).expect("read");
    assert_eq!(auto.tls.server_name.to_str(), "api.example.com");
    assert!(
        auto.summary.contains("name checked true"),
        "{}",
        auto.summary
    );
    // Not an Istio name: no SNI, no name.
    let none = read(&context(Some(&ca_path), None, &[], ""), "static").expect("read");
    assert!(!none.tls.config.enable_sni);
    assert!(
        none.summary.contains("name checked false"),
        "{}",
        none.summary
    );
    // ALPN as the context says.
    let mut h2 = context(Some(&ca_path), None, &[], "");
    if let Some(c) = h2.common_tls_context.as_mut() {
        c.alpn_protocols = vec!["h2".into()];
    }
    let h2 = read(&h2, CLUSTER).expect("read");
    assert_eq!(h2.tls.config.alpn_protocols, vec![b"h2".to_vec()]);
    assert_ne!(h2.tls.id, auto.tls.id);
}

#[test]
fn unreadable_or_wrong_files_are_refused_by_field_and_path() {
    let dir = Dir::new("refused");
    let ca = Ca::new("root");
    let ca_path = dir.write("ca.pem", &ca.pem);
    let (_, chain, key) = ca.leaf(&["client"]);
    let (_, _, other_key) = ca.leaf(&["other"]);
    let chain_path = dir.write("cert.pem", &chain);
    let key_path = dir.write("key.pem", &key);
    let other_key_path = dir.write("other-key.pem", &other_key);
    let garbage = dir.write("garbage.pem", "not PEM at all\n");
    let missing = dir.0.join("missing.pem").to_string_lossy().into_owned();
    let cases: Vec<(&str, xtls::UpstreamTlsContext, String)> = vec![
        (
            "missing CA",
            context(Some(&missing), None, &[], ""),
            format!("common_tls_context.validation_context.trusted_ca: cannot read {missing}: No such file"),
        ),
        (
            "missing key",
            context(Some(&ca_path), Some((&chain_path, &missing)), &[], ""),
            format!("common_tls_context.tls_certificates[0].private_key: cannot read {missing}"),
        ),
        (
            "a directory as the chain",
            context(Some(&ca_path), Some((&dir.0.to_string_lossy(), &key_path)), &[], ""),
            format!(
                "common_tls_context.tls_certificates[0].certificate_chain: cannot read {}: not a regular file",
                dir.0.to_string_lossy()
            ),
        ),
        (
            "garbage CA",
            context(Some(&garbage), None, &[], ""),
            format!("common_tls_context.validation_context.trusted_ca: no PEM certificate in {garbage}"),
        ),
        (
            "garbage key",
            context(Some(&ca_path), Some((&chain_path, &garbage)), &[], ""),
            format!("common_tls_context.tls_certificates[0].private_key: no PEM private key in {garbage}"),
        ),
        (
            "key of another certificate",
            context(Some(&ca_path), Some((&chain_path, &other_key_path)), &[], ""),
            format!("common_tls_context.tls_certificates[0]: the private key in {other_key_path} does not match the certificate in {chain_path}"),
        ),
    ];
    for (name, u, expected) in cases {
        let e = refused(&u);
        assert!(e.starts_with(&expected), "{name}: {e}");
    }
}

#[test]
fn settings_the_proxy_cannot_apply_are_refused_by_field() {
    let dir = Dir::new("unsupported");
    let ca_path = dir.write("ca.pem", &Ca::new("root").pem);
    let base = context(Some(&ca_path), None, &[], "");
    let with = |f: &dyn Fn(&mut xtls::CertificateValidationContext)| {
        let mut u = base.clone();
        if let Some(ValidationContextType::ValidationContext(v)) = u
            .common_tls_context
            .as_mut()
            .and_then(|c| c.validation_context_type.as_mut())
        {
            f(v);
        }
        u
    };
    let cases: Vec<(xtls::UpstreamTlsContext, &str)> = vec![
        (
            with(&|v| v.crl = file(&ca_path)),
            "common_tls_context.validation_context.crl: crl is not supported",
        ),
        (
            with(&|v| {
                #[allow(deprecated)]
                v.match_subject_alt_names.push(StringMatcher {
                    match_pattern: Some(MatchPattern::Prefix("api".into())),
                    ..Default::default()
                })
            }),
            "common_tls_context.validation_context.match_subject_alt_names[0]: a match other than exact",
        ),
        (
            with(&|v| {
                v.match_typed_subject_alt_names.push(xtls::SubjectAltNameMatcher {
                    san_type: 1,
                    matcher: Some(exact("a@example.com")),
                    ..Default::default()
                })
            }),
            "common_tls_context.validation_context.match_typed_subject_alt_names[0]: SAN type 1 is not supported",
        ),
        (
            with(&|v| {
                v.trusted_ca = None;
                v.system_root_certs = None;
                #[allow(deprecated)]
                v.match_subject_alt_names.push(exact("api.example.com"));
            }),
            "common_tls_context.validation_context.match_subject_alt_names: a SAN match without trusted_ca or system_root_certs is not supported",
        ),
        (
            xtls::UpstreamTlsContext {
                sni: "not a name".into(),
                ..base.clone()
            },
            "sni: \"not a name\" (not a DNS name or IP address) is not supported",
        ),
    ];
    for (u, expected) in cases {
        let e = refused(&u);
        assert!(e.starts_with(expected), "{expected}\n  got {e}");
    }
}

#[test]
fn keys_in_pkcs8_sec1_and_pkcs1_are_read() {
    let dir = Dir::new("keys");
    let ca_path = dir.write("ca.pem", &Ca::new("root").pem);
    // rcgen writes PKCS#8; openssl writes SEC1 (`EC PRIVATE KEY`) and PKCS#1 (`RSA PRIVATE KEY`).
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&dir.0)
            .output()
            .expect("these tests need Debian's openssl");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "sec1.pem",
    ]);
    openssl(&["genrsa", "-traditional", "-out", "pkcs1.pem", "2048"]);
    for key in ["sec1.pem", "pkcs1.pem"] {
        let cert = format!("{key}.crt");
        openssl(&[
            "req",
            "-new",
            "-x509",
            "-key",
            key,
            "-subj",
            "/CN=client",
            "-days",
            "1",
            "-out",
            &cert,
        ]);
        let text = std::fs::read_to_string(dir.0.join(key)).expect("key");
        let kind = if key == "sec1.pem" {
            "EC PRIVATE KEY"
        } else {
            "RSA PRIVATE KEY"
        };
        assert!(text.contains(kind), "{key}: {text}");
        let path = |n: &str| dir.0.join(n).to_string_lossy().into_owned();
        let u = context(Some(&ca_path), Some((&path(&cert), &path(key))), &[], "");
        let f = read(&u, CLUSTER)
            .unwrap_or_else(|e| panic!("{key}: {}", super::super::error_chain(&e)));
        assert!(f.tls.config.client_auth_cert_resolver.has_certs(), "{key}");
    }
}

#[test]
fn inline_data_and_no_validation_are_read() {
    let ca = Ca::new("root");
    let mut u = context(None, None, &[], "");
    if let Some(c) = u.common_tls_context.as_mut() {
        c.validation_context_type = Some(ValidationContextType::ValidationContext(
            xtls::CertificateValidationContext {
                trusted_ca: Some(DataSource {
                    specifier: Some(Specifier::InlineString(ca.pem.clone())),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ));
    }
    let f = read(&u, CLUSTER).expect("inline");
    assert!(
        f.summary.contains("roots from inline data"),
        "{}",
        f.summary
    );
    // insecureSkipVerify: weftd writes no validation context.
    if let Some(c) = u.common_tls_context.as_mut() {
        c.validation_context_type = None;
    }
    let f = read(&u, CLUSTER).expect("no validation");
    assert!(f.summary.contains("server not verified"), "{}", f.summary);
}

#[test]
fn the_system_bundle_is_the_first_readable_path() {
    let dir = Dir::new("system");
    let bundle = dir.write(
        "bundle.pem",
        &format!("{}{}", Ca::new("a").pem, Ca::new("b").pem),
    );
    let missing = dir.0.join("none.pem").to_string_lossy().into_owned();
    let (anchors, from) = read_system_roots(&[&missing, &bundle]).expect("found");
    assert_eq!((anchors.len(), from.as_str()), (2, bundle.as_str()));
    assert!(read_system_roots(&[&missing]).is_none());
    if Path::new(SYSTEM_ROOTS[0]).exists() {
        let f = read(&context(None, None, &[], ""), CLUSTER).expect("system roots");
        assert!(f.summary.contains(SYSTEM_ROOTS[0]), "{}", f.summary);
    }
}

// === the server's certificate ===

fn verifier(roots: Option<&Ca>, sans: Vec<San>, name: Option<&str>) -> FilesServer {
    FilesServer {
        roots: roots.map(|ca| {
            let a = webpki::anchor_from_trusted_cert(&ca.der).expect("anchor");
            Arc::from(vec![a.to_owned()])
        }),
        sans,
        name: name.map(|n| ServerName::try_from(n.to_string()).expect("name")),
    }
}

fn accepts(v: &FilesServer, cert: &CertificateDer<'static>) -> Result<(), String> {
    let any = ServerName::try_from("ignored").expect("name");
    v.verify_server_cert(cert, &[], &any, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn the_servers_certificate_is_checked_as_the_cluster_says() {
    let ca = Ca::new("root");
    let other = Ca::new("other");
    let (cert, _, _) = ca.leaf(&[
        "api.example.com",
        "*.svc.example.com",
        "spiffe://example.com/ns/a/sa/b",
        "10.1.2.3",
    ]);
    let (foreign, _, _) = other.leaf(&["api.example.com"]);
    let dns = |s: &str| San::Dns(s.into());
    let cases: Vec<(&str, FilesServer, &CertificateDer<'static>, bool)> = vec![
        (
            "right CA, no names",
            verifier(Some(&ca), vec![], None),
            &cert,
            true,
        ),
        (
            "wrong CA",
            verifier(Some(&ca), vec![], None),
            &foreign,
            false,
        ),
        (
            "no verification",
            verifier(None, vec![], None),
            &foreign,
            true,
        ),
        (
            "DNS name",
            verifier(Some(&ca), vec![dns("api.example.com")], None),
            &cert,
            true,
        ),
        (
            "wildcard",
            verifier(Some(&ca), vec![dns("x.svc.example.com")], None),
            &cert,
            true,
        ),
        (
            "other DNS name",
            verifier(Some(&ca), vec![dns("evil.example.com")], None),
            &cert,
            false,
        ),
        (
            "one of several",
            verifier(
                Some(&ca),
                vec![dns("evil.example.com"), San::Any("10.1.2.3".into())],
                None,
            ),
            &cert,
            true,
        ),
        (
            "URI",
            verifier(
                Some(&ca),
                vec![San::Uri("spiffe://example.com/ns/a/sa/b".into())],
                None,
            ),
            &cert,
            true,
        ),
        (
            "URI as DNS",
            verifier(Some(&ca), vec![dns("spiffe://example.com/ns/a/sa/b")], None),
            &cert,
            false,
        ),
        (
            "IP",
            verifier(Some(&ca), vec![San::Ip([10, 1, 2, 3].into())], None),
            &cert,
            true,
        ),
        (
            "untyped URI",
            verifier(
                Some(&ca),
                vec![San::Any("spiffe://example.com/ns/a/sa/b".into())],
                None,
            ),
            &cert,
            true,
        ),
        (
            "auto name",
            verifier(Some(&ca), vec![], Some("api.example.com")),
            &cert,
            true,
        ),
        (
            "auto name, other host",
            verifier(Some(&ca), vec![], Some("db.example.com")),
            &cert,
            false,
        ),
        (
            "names before the auto name",
            verifier(
                Some(&ca),
                vec![dns("api.example.com")],
                Some("db.example.com"),
            ),
            &cert,
            true,
        ),
    ];
    for (name, v, c, ok) in cases {
        let got = accepts(&v, c);
        assert_eq!(got.is_ok(), ok, "{name}: {got:?}");
    }
}
