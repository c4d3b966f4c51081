//! rustls' two crypto providers measured the way a sidecar uses them, in one process with no network:
//! mutual-TLS handshakes between two P-256 SPIFFE certificates (both sides' CPU), and 16 KiB records
//! sealed by one side and opened by the other. Each provider runs with Weft's preferences (X25519 and
//! P-256, AES-128-GCM first: `weft_http::tls::provider`) and with its own defaults.
//!
//!     cargo run --release --manifest-path bench/tls-providers/Cargo.toml

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConnection, ServerConnection};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HANDSHAKES: u32 = 2_000;
const RECORD: usize = 16 * 1024;
const BYTES: usize = 1 << 30;

struct Pki {
    root: CertificateDer<'static>,
    server: (CertificateDer<'static>, PrivateKeyDer<'static>),
    client: (CertificateDer<'static>, PrivateKeyDer<'static>),
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let root = ca.self_signed(&ca_key).expect("root").der().clone();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf = |name: &str| {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        p.subject_alt_names.push(rcgen::SanType::URI(
            format!("spiffe://cluster.local/ns/default/sa/{name}")
                .try_into()
                .expect("uri"),
        ));
        let cert = p.signed_by(&key, &issuer).expect("leaf");
        (
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    };
    Pki {
        root,
        server: leaf("server"),
        client: leaf("client"),
    }
}

fn configs(
    provider: &Arc<CryptoProvider>,
    pki: &Pki,
) -> (Arc<rustls::ClientConfig>, Arc<rustls::ServerConfig>) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.root.clone()).expect("root");
    let roots = Arc::new(roots);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .expect("verifier");
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![pki.server.0.clone()], pki.server.1.clone_key())
        .expect("server");
    let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![pki.client.0.clone()], pki.client.1.clone_key())
        .expect("client");
    // Sidecars do not resume sessions with each other here: every handshake is a full one.
    client.resumption = rustls::client::Resumption::disabled();
    (Arc::new(client), Arc::new(server))
}

/// Moves what each side has to say to the other until neither has more.
fn pump(c: &mut ClientConnection, s: &mut ServerConnection, wire: &mut Vec<u8>) {
    loop {
        let mut moved = false;
        while c.wants_write() {
            wire.clear();
            c.write_tls(wire).expect("client writes");
            let mut rd = &wire[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd).expect("server reads");
                s.process_new_packets().expect("server");
            }
            moved = true;
        }
        while s.wants_write() {
            wire.clear();
            s.write_tls(wire).expect("server writes");
            let mut rd = &wire[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd).expect("client reads");
                c.process_new_packets().expect("client");
            }
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

fn connect(
    client: &Arc<rustls::ClientConfig>,
    server: &Arc<rustls::ServerConfig>,
    wire: &mut Vec<u8>,
) -> (ClientConnection, ServerConnection) {
    let name = ServerName::try_from("localhost").expect("name");
    let mut c = ClientConnection::new(client.clone(), name).expect("client");
    let mut s = ServerConnection::new(server.clone()).expect("server");
    pump(&mut c, &mut s, wire);
    assert!(!c.is_handshaking() && !s.is_handshaking());
    (c, s)
}

/// The calling thread's CPU time (user and system) from `/proc/thread-self/stat`, in ticks of 10 ms
/// (Linux's USER_HZ): fine for runs of seconds, and no libc binding needed.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .expect("fields")
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

fn measure(name: &str, provider: CryptoProvider, pki: &Pki) {
    let provider = Arc::new(provider);
    let (client, server) = configs(&provider, pki);
    let mut wire = Vec::with_capacity(64 * 1024);
    let (c, _) = connect(&client, &server, &mut wire);
    let group = c
        .negotiated_key_exchange_group()
        .map(|g| format!("{:?}", g.name()))
        .unwrap_or_default();
    let suite = c
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();

    let (t0, w0) = (cpu(), Instant::now());
    for _ in 0..HANDSHAKES {
        connect(&client, &server, &mut wire);
    }
    let (hs_cpu, hs_wall) = (cpu() - t0, w0.elapsed());

    let (mut c, mut s) = connect(&client, &server, &mut wire);
    let record = vec![0x5au8; RECORD];
    let mut plain = vec![0u8; RECORD];
    let (t0, w0) = (cpu(), Instant::now());
    let mut moved = 0;
    while moved < BYTES {
        c.writer().write_all(&record).expect("seal");
        wire.clear();
        while c.wants_write() {
            c.write_tls(&mut wire).expect("client writes");
        }
        let mut rd = &wire[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).expect("server reads");
            s.process_new_packets().expect("open");
        }
        let mut got = 0;
        while got < RECORD {
            got += s.reader().read(&mut plain[got..]).expect("read");
        }
        moved += RECORD;
    }
    let (bulk_cpu, bulk_wall) = (cpu() - t0, w0.elapsed());
    let mb = BYTES as f64 / 1e6;
    println!(
        "| {name} | {group} | {suite} | {:.0} µs | {:.0} µs | {:.0} MB/s | {:.0} MB/s |",
        hs_cpu.as_secs_f64() * 1e6 / f64::from(HANDSHAKES),
        hs_wall.as_secs_f64() * 1e6 / f64::from(HANDSHAKES),
        mb / bulk_cpu.as_secs_f64().max(1e-9),
        mb / bulk_wall.as_secs_f64(),
    );
}

/// Weft's preferences on `p`'s primitives (`weft_http::tls::provider`).
fn weft_order(mut p: CryptoProvider) -> CryptoProvider {
    use rustls::{CipherSuite as C, NamedGroup as G};
    let suite_rank = |s: &rustls::SupportedCipherSuite| match s.suite() {
        C::TLS13_AES_128_GCM_SHA256 => 0,
        C::TLS13_AES_256_GCM_SHA384 => 1,
        _ => 2,
    };
    p.cipher_suites.sort_by_key(suite_rank);
    p.kx_groups
        .retain(|g| matches!(g.name(), G::X25519 | G::secp256r1 | G::secp384r1));
    p.kx_groups.sort_by_key(|g| match g.name() {
        G::X25519 => 0,
        G::secp256r1 => 1,
        _ => 2,
    });
    p
}

/// AES-128-GCM alone, with ring and no record layer: 16 KiB sealed, then opened, in place. What any TLS
/// stack must spend on a byte at least, whatever its buffering; the floor under mTLS's cost on a stream.
fn raw_aes_128_gcm() {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &[7u8; 16]).expect("key"));
    let nonce = |seq: u64| {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&seq.to_be_bytes());
        Nonce::assume_unique_for_key(n)
    };
    // A TLS 1.3 application-data record's header as its additional data.
    let aad = [23u8, 3, 3, 0x40, 0x11];
    let mut buf = vec![0x5au8; RECORD + 16];
    let (t0, w0) = (cpu(), Instant::now());
    let (mut moved, mut seq) = (0, 0u64);
    while moved < BYTES {
        let tag = key
            .seal_in_place_separate_tag(nonce(seq), Aad::from(aad), &mut buf[..RECORD])
            .expect("seal");
        buf[RECORD..].copy_from_slice(tag.as_ref());
        let plain = key
            .open_in_place(nonce(seq), Aad::from(aad), &mut buf)
            .expect("open");
        assert_eq!(plain.len(), RECORD);
        seq += 1;
        moved += RECORD;
    }
    let (c, w) = (cpu() - t0, w0.elapsed());
    let mb = BYTES as f64 / 1e6;
    println!(
        "| ring, AES-128-GCM alone (no record layer) | — | — | — | — | {:.0} MB/s | {:.0} MB/s |",
        mb / c.as_secs_f64().max(1e-9),
        mb / w.as_secs_f64(),
    );
}

#[allow(deprecated)]
fn main() {
    let pki = pki();
    println!("{HANDSHAKES} mutual-TLS 1.3 handshakes (P-256 certificates, no resumption), then {} MiB in {} KiB records, one thread", BYTES >> 20, RECORD >> 10);
    println!();
    println!("| provider | group | suite | handshake CPU (both sides) | handshake wall | seal + open, per CPU-s | wall |");
    println!("|---|---|---|---|---|---|---|");
    measure(
        "ring, its defaults",
        rustls::crypto::ring::default_provider(),
        &pki,
    );
    measure(
        "ring, Weft's order",
        weft_order(rustls::crypto::ring::default_provider()),
        &pki,
    );
    measure(
        "aws-lc-rs, its defaults",
        rustls::crypto::aws_lc_rs::default_provider(),
        &pki,
    );
    measure(
        "aws-lc-rs, Weft's order",
        weft_order(rustls::crypto::aws_lc_rs::default_provider()),
        &pki,
    );
    raw_aes_128_gcm();
}
