use super::*;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

const A: &str = "spiffe://cluster.local/ns/default/sa/a";
const B: &str = "spiffe://cluster.local/ns/default/sa/b";

/// A CSR that asks for identity B every way a CSR can: subject CN and a URI SAN.
fn csr_for_b() -> (String, KeyPair) {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, "b");
    p.subject_alt_names = vec![SanType::URI(B.to_string().try_into().expect("ia5"))];
    let csr = p.serialize_request(&key).expect("csr").pem().expect("pem");
    (csr, key)
}

fn der_of(pem_text: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem_text.as_bytes()).expect("a PEM certificate")
}

fn uris(cert: &X509Certificate<'_>) -> Vec<String> {
    cert.subject_alternative_name()
        .expect("SAN parses")
        .map(|s| {
            s.value
                .general_names
                .iter()
                .map(|n| match n {
                    GeneralName::URI(u) => format!("URI:{u}"),
                    other => format!("{other:?}"),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_root_is_generated_once_and_reused_with_a_private_key_file() {
    let dir = test_dir("persist");
    let first = Authority::load_or_create(&dir).expect("generates");
    let second = Authority::load_or_create(&dir).expect("reuses");
    assert_eq!(
        first.root(),
        second.root(),
        "the second start reuses the root"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("root-cert.pem")).expect("root file"),
        first.root_pem()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("ca-key.pem")), 0o600, "key file");
        assert_eq!(mode(&dir), 0o700, "state directory");
    }
    let (_, root) = X509Certificate::from_der(first.root().as_ref()).expect("parses");
    assert!(root.is_ca());
    let years = (root.validity().not_after.timestamp() - root.validity().not_before.timestamp())
        / (365 * 24 * 3600);
    assert_eq!(years, 10, "valid ten years");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn half_a_root_is_refused_naming_both_files() {
    let dir = test_dir("half");
    Authority::load_or_create(&dir).expect("generates");
    std::fs::remove_file(dir.join("ca-key.pem")).expect("remove");
    let err = Authority::load_or_create(&dir).expect_err("half");
    let msg = err.to_string();
    assert!(
        msg.contains("root-cert.pem exists but") && msg.contains("ca-key.pem does not"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_csr_for_another_identity_gets_only_the_callers() {
    let dir = test_dir("sign");
    let ca = Authority::load_or_create(&dir).expect("ca");
    let (csr, key) = csr_for_b();
    let chain = ca
        .sign_csr(&csr, A, Duration::from_secs(3600))
        .expect("signs");
    assert_eq!(chain.len(), 2, "leaf, root");
    assert_eq!(der_of(&chain[1]), *ca.root(), "root last");
    let leaf_der = der_of(&chain[0]);
    let (_, leaf) = X509Certificate::from_der(leaf_der.as_ref()).expect("parses");
    assert_eq!(
        uris(&leaf),
        vec![format!("URI:{A}")],
        "only the caller's SAN"
    );
    assert!(
        leaf.subject().iter().next().is_none(),
        "the CSR's subject is ignored"
    );
    assert_eq!(
        leaf.public_key().subject_public_key.data.as_ref(),
        key.der_bytes(),
        "the CSR's key"
    );
    assert!(!leaf.is_ca());
    let eku = leaf
        .extended_key_usage()
        .expect("parses")
        .expect("present")
        .value;
    assert!(eku.server_auth && eku.client_auth);
    let ku = leaf.key_usage().expect("parses").expect("present").value;
    assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
    let (_, root) = X509Certificate::from_der(ca.root().as_ref()).expect("root");
    leaf.verify_signature(Some(root.public_key()))
        .expect("signed by the root");
    let life = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    assert_eq!(life, 3600);
    // Serials are random.
    let again = ca
        .sign_csr(&csr, A, Duration::from_secs(60))
        .expect("signs");
    let other_der = der_of(&again[0]);
    let (_, other) = X509Certificate::from_der(other_der.as_ref()).expect("parses");
    assert_ne!(leaf.raw_serial(), other.raw_serial());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_csrs_are_refused_naming_the_problem() {
    let dir = test_dir("bad");
    let ca = Authority::load_or_create(&dir).expect("ca");
    let (good, _) = csr_for_b();
    let der = CertificateSigningRequestDer::from_pem_slice(good.as_bytes())
        .expect("pem")
        .as_ref()
        .to_vec();
    let repem = |d: &[u8]| {
        format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64_encode(d)
        )
    };
    // The signature is the last element: change its last byte.
    let mut forged = der.clone();
    if let Some(b) = forged.last_mut() {
        *b ^= 0x01;
    }
    let cases: &[(&str, String, &str)] = &[
        (
            "garbage",
            "hello".into(),
            "the CSR is not PEM: want one -----BEGIN CERTIFICATE REQUEST----- block",
        ),
        (
            "a certificate",
            ca.root_pem(),
            "the CSR is not PEM: want one -----BEGIN CERTIFICATE REQUEST----- block",
        ),
        (
            "not PKCS#10",
            repem(b"\x30\x03\x02\x01\x00"),
            "the CSR does not parse as PKCS#10",
        ),
        (
            "bad signature",
            repem(&forged),
            "the CSR's signature does not verify with its own public key",
        ),
    ];
    for (name, csr, want) in cases {
        let err = ca
            .sign_csr(csr, A, Duration::from_secs(60))
            .expect_err(name);
        assert!(err.to_string().starts_with(want), "case {name}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A root and an intermediate it signed, written as Istio's `cacerts` files; `chain` picks what
/// cert-chain.pem holds.
fn cacerts(dir: &Path, chain: &str, key_pem: Option<&str>) -> (crate::ca::CaCerts, String, String) {
    std::fs::create_dir_all(dir).expect("dir");
    let root_key = KeyPair::generate().expect("key");
    let mut rp = CertificateParams::default();
    rp.distinguished_name = DistinguishedName::new();
    rp.distinguished_name.push(DnType::CommonName, "root");
    rp.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    rp.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let root = rp.self_signed(&root_key).expect("root");
    let root_issuer = Issuer::new(rp, &root_key);
    let int_key = match key_pem {
        Some(p) => keypair_from_text(p),
        None => KeyPair::generate().expect("key"),
    };
    let mut ip = CertificateParams::default();
    ip.distinguished_name = DistinguishedName::new();
    ip.distinguished_name
        .push(DnType::CommonName, "intermediate");
    ip.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ip.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let int = ip.signed_by(&int_key, &root_issuer).expect("intermediate");
    let files = crate::ca::CaCerts {
        ca_cert: dir.join("ca-cert.pem"),
        ca_key: dir.join("ca-key.pem"),
        cert_chain: dir.join("cert-chain.pem"),
        root_cert: dir.join("root-cert.pem"),
    };
    let chain_text = match chain {
        "intermediate+root" => format!("{}{}", int.pem(), root.pem()),
        "intermediate" => int.pem(),
        _ => String::new(),
    };
    std::fs::write(&files.ca_cert, int.pem()).expect("write");
    std::fs::write(
        &files.ca_key,
        key_pem.map_or_else(|| int_key.serialize_pem(), str::to_string),
    )
    .expect("write");
    std::fs::write(&files.cert_chain, chain_text).expect("write");
    std::fs::write(&files.root_cert, root.pem()).expect("write");
    (files, int.pem(), root.pem())
}

fn keypair_from_text(pem_text: &str) -> KeyPair {
    let dir = test_dir("key");
    std::fs::create_dir_all(&dir).expect("dir");
    let p = dir.join("k.pem");
    std::fs::write(&p, pem_text).expect("write");
    let k = keypair(&p).expect("loads");
    let _ = std::fs::remove_dir_all(&dir);
    k
}

#[test]
fn plugged_cacerts_chain_leaf_intermediate_root() {
    for layout in ["intermediate+root", "intermediate", "empty"] {
        let dir = test_dir("cacerts");
        let (files, int_pem, root_pem) = cacerts(&dir, layout, None);
        let ca = Authority::from_cacerts(&files).expect(layout);
        let (csr, _) = csr_for_b();
        let chain = ca
            .sign_csr(&csr, A, Duration::from_secs(60))
            .expect("signs");
        assert_eq!(chain.len(), 3, "{layout}: leaf, intermediate, root");
        assert_eq!(
            der_of(&chain[1]),
            der_of(&int_pem),
            "{layout}: intermediate"
        );
        assert_eq!(der_of(&chain[2]), der_of(&root_pem), "{layout}: root last");
        let leaf_der = der_of(&chain[0]);
        let int_der = der_of(&int_pem);
        let (_, leaf) = X509Certificate::from_der(leaf_der.as_ref()).expect("leaf");
        let (_, int) = X509Certificate::from_der(int_der.as_ref()).expect("int");
        leaf.verify_signature(Some(int.public_key()))
            .expect("signed by the intermediate");
        assert_eq!(leaf.issuer(), int.subject(), "{layout}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn pkcs1_and_sec1_keys_sign() {
    for (name, text) in [
        ("PKCS#1 RSA", include_str!("../testdata/pkcs1-rsa-key.pem")),
        ("SEC1 P-256", include_str!("../testdata/sec1-p256-key.pem")),
    ] {
        let dir = test_dir("keys");
        let (files, int_pem, _) = cacerts(&dir, "intermediate+root", Some(text));
        let ca = Authority::from_cacerts(&files).expect(name);
        let (csr, _) = csr_for_b();
        let chain = ca.sign_csr(&csr, A, Duration::from_secs(60)).expect(name);
        let leaf_der = der_of(&chain[0]);
        let int_der = der_of(&int_pem);
        let (_, leaf) = X509Certificate::from_der(leaf_der.as_ref()).expect("leaf");
        let (_, int) = X509Certificate::from_der(int_der.as_ref()).expect("int");
        leaf.verify_signature(Some(int.public_key())).expect(name);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused() {
    let dir = test_dir("mismatch");
    let (files, _, _) = cacerts(&dir, "intermediate+root", None);
    std::fs::write(
        &files.ca_key,
        KeyPair::generate().expect("key").serialize_pem(),
    )
    .expect("write");
    let err = Authority::from_cacerts(&files).expect_err("mismatch");
    assert_eq!(
        err.to_string(),
        format!(
            "{} does not certify the key in {}",
            files.ca_cert.display(),
            files.ca_key.display()
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_serving_certificate_names_weftd() {
    let dir = test_dir("serving");
    let ca = Authority::load_or_create(&dir).expect("ca");
    let ip: IpAddr = "127.0.0.7".parse().expect("ip");
    let (chain, _key) = ca
        .issue_server(
            &["istiod.istio-system.svc", "weftd", "localhost"],
            &[ip],
            crate::ca::SERVING_CERT_TTL,
        )
        .expect("issues");
    assert_eq!(chain.len(), 1, "no intermediates under a self-signed root");
    let (_, cert) = X509Certificate::from_der(chain[0].as_ref()).expect("parses");
    let names: Vec<String> = cert
        .subject_alternative_name()
        .expect("parses")
        .expect("present")
        .value
        .general_names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names[0].contains("istiod.istio-system.svc"), "{names:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pem_round_trips() {
    for n in 0..5usize {
        let data: Vec<u8> = (0..(100 + n) as u8).collect();
        let text = pem(&CertificateDer::from(data.clone()));
        assert_eq!(der_of(&text).as_ref(), data.as_slice());
    }
}
