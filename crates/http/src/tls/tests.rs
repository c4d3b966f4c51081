//! TLS through the server and the pools: both protocols, large bodies (writes the socket cannot take at
//! once), pooling by settings, and what a listener that requires TLS does with plaintext.

use super::*;
use crate::limits::Limits;
use crate::server::{serve_with, Connection};
use crate::upstream::Upstream;
use crate::{full, Body};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// A CA, a server certificate and a client certificate it signed.
struct Pki {
    root: rustls::pki_types::CertificateDer<'static>,
    server: (
        rustls::pki_types::CertificateDer<'static>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
    client: (
        rustls::pki_types::CertificateDer<'static>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf = |san: rcgen::SanType| {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        p.subject_alt_names = vec![san];
        let cert = p.signed_by(&key, &issuer).expect("leaf");
        (
            cert.der().clone(),
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der"),
        )
    };
    Pki {
        root: ca_cert.der().clone(),
        server: leaf(rcgen::SanType::DnsName(
            "localhost".try_into().expect("name"),
        )),
        client: leaf(rcgen::SanType::URI(
            "spiffe://cluster.local/ns/default/sa/client"
                .try_into()
                .expect("uri"),
        )),
    }
}

fn roots(pki: &Pki) -> Arc<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.root.clone()).expect("root");
    Arc::new(roots)
}

fn server_tls(pki: &Pki, allow_plaintext: bool) -> ServerTls {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(pki), provider())
            .build()
            .expect("verifier");
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![pki.server.0.clone()], pki.server.1.clone_key())
        .expect("server config");
    ServerTls {
        config: Arc::new(config),
        allow_plaintext,
    }
}

fn client_tls(pki: &Pki, id: u32) -> ClientTls {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots(pki))
        .with_client_auth_cert(vec![pki.client.0.clone()], pki.client.1.clone_key())
        .expect("client config");
    ClientTls {
        id,
        config: Arc::new(config),
        server_name: rustls::pki_types::ServerName::try_from("localhost").expect("name"),
    }
}

/// A server answering `/<n>` with `n` bytes and the client's certificate length in a header; counts
/// connections.
struct Server {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    _stop: watch::Sender<bool>,
}

async fn server(tls: ServerTls) -> Server {
    let listener = crate::net::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let make = move |c: Connection| {
        counted.fetch_add(1, Ordering::SeqCst);
        let cert = c
            .tls
            .as_ref()
            .and_then(|t| t.certificate.as_ref())
            .map_or(0, |c| c.len());
        move |req: Request<Body>| async move {
            let n: usize = req.uri().path()[1..].parse().unwrap_or(0);
            let mut r = Response::new(full(vec![b'x'; n]));
            r.headers_mut()
                .insert("client-cert", cert.to_string().parse().expect("value"));
            r
        }
    };
    let (stop, stop_rx) = watch::channel(false);
    tokio::spawn(serve_with(
        "test",
        listener,
        make,
        Some(tls),
        stop_rx,
        Duration::from_secs(1),
        Limits::default(),
    ));
    Server {
        addr,
        connections,
        _stop: stop,
    }
}

fn get(path: &str) -> crate::h1::Head {
    let req = Request::builder()
        .uri(format!("http://localhost{path}"))
        .header("host", "localhost")
        .body(Body::empty())
        .expect("request");
    crate::h1::Head::of(req).0
}

async fn body_len(resp: Response<Body>) -> usize {
    resp.into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .len()
}

#[tokio::test]
async fn http1_over_mutual_tls_pools_by_settings_and_carries_large_bodies() {
    let pki = pki();
    let s = server(server_tls(&pki, false)).await;
    let up = Upstream::new();
    let tls = client_tls(&pki, 7);
    // A body larger than the socket buffers: the server's writes are held until on the socket.
    for n in [10, 4 << 20, 10] {
        let resp = up
            .send_h1(
                s.addr,
                Some(&tls),
                Duration::from_secs(5),
                0,
                get(&format!("/{n}")),
                Body::empty(),
            )
            .await
            .expect("response");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_ne!(
            resp.headers()["client-cert"],
            "0",
            "the server saw the client certificate"
        );
        assert_eq!(body_len(resp).await, n);
    }
    assert_eq!(
        s.connections.load(Ordering::SeqCst),
        1,
        "one pooled TLS connection"
    );
    // Other settings to the same address make their own connection.
    let other = client_tls(&pki, 8);
    let resp = up
        .send_h1(
            s.addr,
            Some(&other),
            Duration::from_secs(5),
            0,
            get("/1"),
            Body::empty(),
        )
        .await
        .expect("response");
    assert_eq!(body_len(resp).await, 1);
    assert_eq!(s.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn http2_over_mutual_tls() {
    let pki = pki();
    let s = server(server_tls(&pki, false)).await;
    let up = Upstream::new();
    let tls = client_tls(&pki, 1);
    for n in [3, 1 << 20] {
        let req = Request::builder()
            .uri(format!("http://localhost/{n}"))
            .body(Body::empty())
            .expect("request");
        let resp = up
            .send_h2(
                s.addr,
                Some(&tls),
                Duration::from_secs(5),
                req,
                &Default::default(),
            )
            .await
            .expect("response");
        assert_eq!(body_len(resp).await, n);
    }
    assert_eq!(s.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_listener_requiring_tls_closes_plaintext_and_a_permissive_one_serves_both() {
    let pki = pki();
    let strict = server(server_tls(&pki, false)).await;
    let mut c = tokio::net::TcpStream::connect(strict.addr)
        .await
        .expect("connect");
    c.write_all(b"GET /1 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got).await;
    assert!(
        got.is_empty(),
        "plaintext got {:?}",
        String::from_utf8_lossy(&got)
    );

    let permissive = server(server_tls(&pki, true)).await;
    let up = Upstream::new();
    let plain = up
        .send_h1(
            permissive.addr,
            None,
            Duration::from_secs(5),
            0,
            get("/2"),
            Body::empty(),
        )
        .await
        .expect("plaintext response");
    assert_eq!(plain.headers()["client-cert"], "0");
    assert_eq!(body_len(plain).await, 2);
    let tls = client_tls(&pki, 1);
    let secured = up
        .send_h1(
            permissive.addr,
            Some(&tls),
            Duration::from_secs(5),
            0,
            get("/3"),
            Body::empty(),
        )
        .await
        .expect("TLS response");
    assert_ne!(secured.headers()["client-cert"], "0");
    assert_eq!(body_len(secured).await, 3);
}

#[tokio::test]
async fn a_server_whose_certificate_is_not_trusted_is_a_connect_failure() {
    let pki = pki();
    let s = server(server_tls(&pki, false)).await;
    let stranger = self::pki();
    let tls = client_tls(&stranger, 1);
    let err = up_err(
        Upstream::new()
            .send_h1(
                s.addr,
                Some(&tls),
                Duration::from_secs(5),
                0,
                get("/1"),
                Body::empty(),
            )
            .await,
    );
    assert!(err.contains("TLS handshake failed"), "{err}");
}

fn up_err(r: Result<Response<Body>, crate::upstream::Failure>) -> String {
    match r {
        Ok(_) => panic!("expected a failure"),
        Err(crate::upstream::Failure::Connect(e)) => e.to_string(),
        Err(e) => panic!("expected a connect failure, got {e:?}"),
    }
}

/// Two peers on `provider()` agree on what Envoy would (X25519, AES-128-GCM), not on rustls' own first
/// choices (P-384, whose ring code is generic and cost 3.5 ms a handshake, and AES-256-GCM).
#[test]
fn peers_agree_on_x25519_and_aes_128() {
    let pki = pki();
    let server = server_tls(&pki, false).config;
    let client = client_tls(&pki, 1).config;
    let mut c = rustls::ClientConnection::new(client, "localhost".try_into().expect("name"))
        .expect("client");
    let mut s = rustls::ServerConnection::new(server).expect("server");
    let mut wire = Vec::new();
    for _ in 0..10 {
        if !c.is_handshaking() && !s.is_handshaking() {
            break;
        }
        wire.clear();
        c.write_tls(&mut wire).expect("client writes");
        s.read_tls(&mut &wire[..]).expect("server reads");
        s.process_new_packets().expect("server handshake");
        wire.clear();
        s.write_tls(&mut wire).expect("server writes");
        c.read_tls(&mut &wire[..]).expect("client reads");
        c.process_new_packets().expect("client handshake");
    }
    assert!(!c.is_handshaking() && !s.is_handshaking());
    for (group, suite) in [
        (
            c.negotiated_key_exchange_group(),
            c.negotiated_cipher_suite(),
        ),
        (
            s.negotiated_key_exchange_group(),
            s.negotiated_cipher_suite(),
        ),
    ] {
        assert_eq!(group.map(|g| g.name()), Some(rustls::NamedGroup::X25519));
        assert_eq!(
            suite.map(|s| s.suite()),
            Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
        );
    }
}
