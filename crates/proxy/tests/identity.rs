//! The workload identity end to end, in-process: weftd's CA on its TLS port (127.0.0.1, ephemeral port)
//! and the proxy's identity manager asking it for short-lived certificates. Waits are on the watch
//! channel, each bounded by a deadline; nothing asserts on timing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use weft_control::ca::{self, token::TokenKey, WorkloadId};
use weft_proxy::identity::client::{CaClient, CaConfig};
use weft_proxy::identity::{Error, Manager};

/// Longest any one wait may take.
const DEADLINE: Duration = Duration::from_secs(20);

fn state_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weft-identity-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A weftd CA on 127.0.0.1:0 with its state in `dir`; returns it with the stop switch.
async fn start_ca(dir: &Path) -> (ca::Started, watch::Sender<bool>) {
    use weft_control::{metrics::Metrics, model::Model, server, view::Snapshot};
    let model = Model::build(1, &[], weft_api::MeshConfig::default());
    let (_model_tx, model_rx) = watch::channel(Arc::new(Snapshot::new(Arc::new(model))));
    let discovery = server::Discovery::new(
        model_rx,
        Arc::new(server::status::StatusRegistry::default()),
        Metrics::new().xds.clone(),
    );
    let ads = server::grpc::AdsService::new(discovery, 1 << 20);
    let settings = ca::Settings {
        state_dir: dir.to_path_buf(),
        source: ca::Source::SelfSigned,
        default_ttl: Duration::from_secs(24 * 3600),
        max_ttl: Duration::from_secs(90 * 24 * 3600),
        secure_address: "127.0.0.1:0".parse().expect("addr"),
    };
    let (stop_tx, stop) = watch::channel(false);
    let started = ca::start(
        &settings,
        ads,
        Arc::new(|| "cluster.local".to_string()),
        stop,
    )
    .await
    .expect("the CA starts");
    (started, stop_tx)
}

/// Writes the root and a token for `default/reviews` (signed with `key`) beside the state, and returns
/// a client config for them.
fn client_config(dir: &Path, started: &ca::Started, key: &TokenKey, ttl: Duration) -> CaConfig {
    let id = WorkloadId::new("default", "reviews").expect("valid");
    let token = dir.join("reviews.token");
    std::fs::write(
        &token,
        key.issue(&id, SystemTime::now() + Duration::from_secs(3600)),
    )
    .expect("write token");
    CaConfig {
        address: started.addr.to_string(),
        root_cert: dir.join("root-cert.pem"),
        token_file: token,
        requested_ttl: Some(ttl),
        timeout: Duration::from_secs(10),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_obtains_its_certificate_over_tls_and_rotates_it() {
    let dir = state_dir("rotate");
    let (started, stop) = start_ca(&dir).await;
    let key = TokenKey::load_or_create(&dir).expect("weftd's token key");
    // A 2 s certificate: renewed after about 1 s.
    let config = client_config(&dir, &started, &key, Duration::from_secs(2));
    let manager = Manager::new(CaClient::new(config));
    let mut current = manager.current();
    assert!(
        current.borrow().is_none(),
        "nothing before the first answer"
    );
    let (proxy_stop_tx, proxy_stop) = watch::channel(false);
    let task = tokio::spawn(manager.run(proxy_stop));

    let first = tokio::time::timeout(DEADLINE, current.wait_for(Option::is_some))
        .await
        .expect("a certificate within the deadline")
        .expect("the manager runs")
        .clone()
        .expect("some");
    assert_eq!(
        &*first.spiffe_id,
        "spiffe://cluster.local/ns/default/sa/reviews"
    );
    assert_eq!(
        first.not_after.duration_since(first.not_before).ok(),
        Some(Duration::from_secs(2)),
        "the lifetime asked for"
    );
    assert_eq!(first.chain.len(), 1, "leaf only: the root is in roots");
    let root_pem = std::fs::read_to_string(dir.join("root-cert.pem")).expect("root");
    assert_eq!(started.root_pem, root_pem);
    assert_eq!(first.roots.len(), 1);

    // What the TLS data path will do with it: a server config from the chain and key, and a client
    // verifier on the roots that accepts the leaf (chain, validity, clientAuth usage).
    rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(first.chain.clone(), first.key.clone_key())
        .expect("the key matches the leaf");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(first.roots[0].clone()).expect("root");
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .expect("verifier");
    verifier
        .verify_client_cert(
            first.leaf(),
            &first.chain[1..],
            rustls_pki_types::UnixTime::now(),
        )
        .expect("the leaf chains to the mesh root");

    let second = tokio::time::timeout(
        DEADLINE,
        current.wait_for(|c| c.as_ref().is_some_and(|i| i.serial != first.serial)),
    )
    .await
    .expect("rotated within the deadline")
    .expect("the manager runs")
    .clone()
    .expect("some");
    assert_eq!(second.spiffe_id, first.spiffe_id);
    assert!(second.not_before >= first.not_before);
    assert_ne!(
        second.key.secret_der(),
        first.key.secret_der(),
        "a new key each time"
    );

    proxy_stop_tx.send_replace(true);
    tokio::time::timeout(DEADLINE, task)
        .await
        .expect("the manager stops")
        .expect("no panic");
    stop.send_replace(true);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_token_or_another_root_gets_no_certificate() {
    let dir = state_dir("refuse");
    let (started, stop) = start_ca(&dir).await;

    // A token signed with a key that is not weftd's.
    let forger = TokenKey::from_bytes(&[7; 32]).expect("key");
    let config = client_config(&dir, &started, &forger, Duration::from_secs(60));
    let err = CaClient::new(config.clone())
        .fetch()
        .await
        .expect_err("forged");
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Request { .. })
            && msg.contains("Unauthenticated")
            && msg.contains("token signature does not verify"),
        "{msg}"
    );

    // weftd's real token, but the proxy trusts another root: the handshake fails.
    let key = TokenKey::load_or_create(&dir).expect("weftd's token key");
    let mut config = client_config(&dir, &started, &key, Duration::from_secs(60));
    let other = dir.join("other-root.pem");
    let k = rcgen::KeyPair::generate().expect("key");
    let mut p = rcgen::CertificateParams::default();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(&other, p.self_signed(&k).expect("root").pem()).expect("write");
    config.root_cert = other;
    let err = CaClient::new(config.clone())
        .fetch()
        .await
        .expect_err("untrusted");
    assert!(
        err.to_string()
            .starts_with(&format!("certificate request to {} failed", started.addr)),
        "{err}"
    );

    // And with the right root, the same client gets its certificate.
    config.root_cert = dir.join("root-cert.pem");
    let id = CaClient::new(config).fetch().await.expect("issued");
    assert_eq!(
        &*id.spiffe_id,
        "spiffe://cluster.local/ns/default/sa/reviews"
    );

    stop.send_replace(true);
    let _ = std::fs::remove_dir_all(&dir);
}
