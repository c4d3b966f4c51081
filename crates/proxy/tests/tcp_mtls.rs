//! Mutual TLS on opaque TCP and the peer's identity in metrics, through the real proxy: weftd's CA
//! in-process (127.0.0.1, ephemeral port) issues each workload its certificate, a scripted ADS server
//! gives each proxy the listeners and clusters weftd writes for PeerAuthentication, auto mTLS and an
//! AuthorizationPolicy, and a loopback application echoes. Every wait polls with a deadline (the first
//! certificate arrives when it arrives); nothing asserts on timing.

#[allow(dead_code)]
#[path = "support/fake_ads.rs"]
mod fake_ads;
#[allow(dead_code)]
#[path = "support/net.rs"]
mod net;
#[allow(dead_code)]
#[path = "support/resources.rs"]
mod resources;

use fake_ads::{FakeAds, XdsSet};
use net::{admin_get, eventually, init_logs};
use resources::*;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use weft_control::ca::{self, token::TokenKey, WorkloadId};
use weft_http::tls::ClientTls;
use weft_proxy::identity::client::{CaClient, CaConfig};
use weft_proxy::identity::{Current, Manager};
use weft_proxy::tls::MeshTls;
use weft_proxy::{Args, Config, Proxy, ProxyHandle};
use weft_xds::pb::envoy::config::cluster::v3::{cluster, Cluster};
use weft_xds::pb::envoy::config::core::v3::{
    transport_socket, Metadata, TrafficDirection, TransportSocket,
};
use weft_xds::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use weft_xds::pb::envoy::config::listener::v3::{filter, Filter, Listener};
use weft_xds::pb::envoy::config::rbac::v3::{
    permission, principal, rbac::Action, Permission, Policy, Principal, Rbac as Rules,
};
use weft_xds::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use weft_xds::pb::envoy::extensions::transport_sockets::tls::v3 as xtls;
use weft_xds::pb::google::protobuf::{value, BoolValue, Struct, Value};
use weft_xds::{pack, type_url, Any};

const NETWORK_RBAC: &str = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";
const PRODUCTPAGE: &str = "spiffe://cluster.local/ns/default/sa/productpage";
const REVIEWS: &str = "spiffe://cluster.local/ns/default/sa/reviews";
const RATINGS: &str = "spiffe://cluster.local/ns/default/sa/ratings";
/// Longest a certificate may take to arrive.
const DEADLINE: Duration = Duration::from_secs(20);

// === the mesh: weftd's CA and the workloads' identities ===

/// weftd's CA with its state in a directory of its own, and the key its tokens are signed with.
struct Mesh {
    dir: PathBuf,
    addr: SocketAddr,
    key: TokenKey,
    stop: watch::Sender<bool>,
    /// Stops the test's own identity managers.
    managers: watch::Sender<bool>,
}

impl Mesh {
    async fn start(name: &str) -> Mesh {
        use weft_control::{metrics::Metrics, model::Model, server, view::Snapshot};
        init_logs();
        let dir = std::env::temp_dir().join(format!("weft-tcp-mtls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let model = Model::build(1, &[], weft_api::MeshConfig::default());
        let (_model_tx, model_rx) = watch::channel(Arc::new(Snapshot::new(Arc::new(model))));
        let discovery = server::Discovery::new(
            model_rx,
            Arc::new(server::status::StatusRegistry::default()),
            Metrics::new().xds.clone(),
        );
        let ads = server::grpc::AdsService::new(discovery, 1 << 20);
        let settings = ca::Settings {
            state_dir: dir.clone(),
            source: ca::Source::SelfSigned,
            default_ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(24 * 3600),
            secure_address: "127.0.0.1:0".parse().expect("addr"),
        };
        let (stop, stop_rx) = watch::channel(false);
        let started = ca::start(
            &settings,
            ads,
            Arc::new(|| "cluster.local".to_string()),
            stop_rx,
        )
        .await
        .expect("the CA starts");
        let key = TokenKey::load_or_create(&dir).expect("weftd's token key");
        Mesh {
            dir,
            addr: started.addr,
            key,
            stop,
            managers: watch::channel(false).0,
        }
    }

    /// What a workload with service account `sa` in `default` gives its proxy to obtain its
    /// certificate: the CA's address and root, and a token of its own.
    fn ca_config(&self, sa: &str) -> CaConfig {
        let id = WorkloadId::new("default", sa).expect("valid");
        let token = self.dir.join(format!("{sa}.token"));
        let expires = SystemTime::now() + Duration::from_secs(3600);
        std::fs::write(&token, self.key.issue(&id, expires)).expect("write token");
        CaConfig {
            address: self.addr.to_string(),
            root_cert: self.dir.join("root-cert.pem"),
            token_file: token,
            requested_ttl: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// The certificate of `sa`, as a sidecar of that workload would hold it.
    async fn identity(&self, sa: &str) -> Current {
        let manager = Manager::new(CaClient::new(self.ca_config(sa)));
        let mut current = manager.current();
        tokio::spawn(manager.run(self.managers.subscribe()));
        tokio::time::timeout(DEADLINE, current.wait_for(Option::is_some))
            .await
            .expect("a certificate within the deadline")
            .expect("the manager runs");
        current
    }

    /// A TLS client that presents the certificate of `sa` and accepts any server of the mesh.
    async fn client(&self, sa: &str) -> ClientTls {
        MeshTls::new(self.identity(sa).await).client(vec![], "outbound_.9000_._.reviews")
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.managers.send_replace(true);
        self.stop.send_replace(true);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `settings` without a client certificate: the mesh's server is accepted, nothing is presented.
fn without_certificate(settings: &ClientTls) -> ClientTls {
    #[derive(Debug)]
    struct Nothing;
    impl rustls::client::ResolvesClientCert for Nothing {
        fn resolve(
            &self,
            _: &[&[u8]],
            _: &[rustls::SignatureScheme],
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            None
        }
        fn has_certs(&self) -> bool {
            false
        }
    }
    let mut config = (*settings.config).clone();
    config.client_auth_cert_resolver = Arc::new(Nothing);
    ClientTls {
        id: settings.id + 1000,
        config: Arc::new(config),
        server_name: settings.server_name.clone(),
    }
}

// === the proxies and their xDS ===

/// A proxy for `workload`, with the certificate of service account `sa` when given, on `ads`.
async fn start_proxy(ads: &FakeAds, workload: &str, ca: Option<CaConfig>) -> ProxyHandle {
    let args = <Args as clap::Parser>::try_parse_from([
        "weft-proxy",
        "--workload",
        workload,
        "--ip",
        "127.0.0.1",
        "--outbound-port",
        "0",
        "--stats-port",
        "0",
        "--admin-port",
        "0",
        "--xds-address",
        &ads.url(),
    ])
    .expect("flags parse");
    let mut config = Config::try_from(&args).expect("valid config");
    config.ca = ca;
    let proxy = Proxy::start(config).await.expect("proxy starts");
    let admin = proxy.admin_addr();
    eventually("proxy ready", || async move {
        admin_get(admin, "/ready").await.filter(|(s, _)| *s == 200)
    })
    .await;
    proxy
}

fn sds(name: &str) -> xtls::SdsSecretConfig {
    xtls::SdsSecretConfig {
        name: name.into(),
        ..Default::default()
    }
}

/// Istio's mesh TLS context: the workload certificate from SDS `default`, the roots from `ROOTCA`, the
/// server identities `sans` (any when empty).
fn mesh_context(sans: &[&str]) -> xtls::CommonTlsContext {
    use xtls::common_tls_context::{CombinedCertificateValidationContext, ValidationContextType};
    xtls::CommonTlsContext {
        tls_certificate_sds_secret_configs: vec![sds("default")],
        validation_context_type: Some(ValidationContextType::CombinedValidationContext(
            CombinedCertificateValidationContext {
                default_validation_context: Some(xtls::CertificateValidationContext {
                    match_typed_subject_alt_names: sans
                        .iter()
                        .map(|s| xtls::SubjectAltNameMatcher {
                            san_type: 3,
                            matcher: Some(exact(s)),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }),
                validation_context_sds_secret_config: Some(sds("ROOTCA")),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

fn tls_socket(type_url: &str, msg: &impl prost::Message) -> TransportSocket {
    TransportSocket {
        name: weft_xds::filter_name::TLS_TRANSPORT_SOCKET.into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(Any {
            type_url: type_url.into(),
            value: msg.encode_to_vec(),
        })),
    }
}

/// PeerAuthentication as weftd writes it on an inbound listener.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Strict,
    Permissive,
}

/// `listener` (one filter chain) with the filter chains of `mode`: the TLS chain requiring a client
/// certificate, and for PERMISSIVE the plaintext one beside it.
fn with_mode(listener: Any, mode: Mode) -> Any {
    let mut l: Listener = weft_xds::unpack(&listener).expect("listener");
    let plain = l.filter_chains[0].clone();
    l.filter_chains[0].transport_socket = Some(tls_socket(
        type_url::DOWNSTREAM_TLS_CONTEXT,
        &xtls::DownstreamTlsContext {
            require_client_certificate: Some(BoolValue { value: true }),
            common_tls_context: Some(mesh_context(&[])),
            ..Default::default()
        },
    ));
    if mode == Mode::Permissive {
        l.filter_chains.push(plain);
    }
    pack(type_url::LISTENER, &l)
}

/// `listener` with a network RBAC filter before its `tcp_proxy` that allows only `allowed` (the
/// ALLOW policy weftd writes for `from: [{source: {principals: [...]}}]`).
fn allowing_only(listener: Any, allowed: &str) -> Any {
    let mut l: Listener = weft_xds::unpack(&listener).expect("listener");
    let principal = Principal {
        identifier: Some(principal::Identifier::Authenticated(
            principal::Authenticated {
                principal_name: Some(exact(allowed)),
            },
        )),
    };
    let rules = Rules {
        action: Action::Allow as i32,
        policies: [(
            "ns[default]-policy[only-productpage]-rule[0]".to_string(),
            Policy {
                permissions: vec![Permission {
                    rule: Some(permission::Rule::Any(true)),
                }],
                principals: vec![principal],
                ..Default::default()
            },
        )]
        .into_iter()
        .collect(),
        audit_logging_options: None,
    };
    let rbac = Filter {
        name: "envoy.filters.network.rbac".into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack(
            NETWORK_RBAC,
            &NetworkRbac {
                rules: Some(rules),
                stat_prefix: "tcp.".into(),
                ..Default::default()
            },
        ))),
    };
    for chain in &mut l.filter_chains {
        chain.filters.insert(0, rbac.clone());
    }
    pack(type_url::LISTENER, &l)
}

fn tls_mode_istio() -> Struct {
    Struct {
        fields: [(
            "tlsMode".to_string(),
            Value {
                kind: Some(value::Kind::StringValue("istio".into())),
            },
        )]
        .into(),
    }
}

/// A static cluster with Istio's auto mTLS (TLS to endpoints marked `tlsMode: istio`, expecting one of
/// `sans`), whose one endpoint `ep` has a sidecar.
fn auto_mtls_cluster(name: &str, ep: SocketAddr, sans: &[&str]) -> Any {
    let endpoint = LbEndpoint {
        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
            address: Some(addr(ep)),
            ..Default::default()
        })),
        metadata: Some(Metadata {
            filter_metadata: [(
                weft_xds::filter_name::TRANSPORT_SOCKET_MATCH.to_string(),
                tls_mode_istio(),
            )]
            .into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    pack(
        type_url::CLUSTER,
        &Cluster {
            name: name.into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Static as i32,
            )),
            load_assignment: Some(ClusterLoadAssignment {
                cluster_name: name.into(),
                endpoints: vec![LocalityLbEndpoints {
                    lb_endpoints: vec![endpoint],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            transport_socket_matches: vec![
                cluster::TransportSocketMatch {
                    name: "tlsMode-istio".into(),
                    r#match: Some(tls_mode_istio()),
                    transport_socket: Some(tls_socket(
                        type_url::UPSTREAM_TLS_CONTEXT,
                        &xtls::UpstreamTlsContext {
                            common_tls_context: Some(mesh_context(sans)),
                            sni: "outbound_.9000_._.reviews.default.svc.cluster.local".into(),
                            ..Default::default()
                        },
                    )),
                },
                cluster::TransportSocketMatch {
                    name: "tlsMode-disabled".into(),
                    r#match: Some(Struct::default()),
                    transport_socket: Some(TransportSocket {
                        name: weft_xds::filter_name::RAW_BUFFER.into(),
                        config_type: None,
                    }),
                },
            ],
            ..Default::default()
        },
    )
}

fn xds(clusters: Vec<Any>, listeners: Vec<Any>) -> XdsSet {
    XdsSet {
        version: "1".into(),
        clusters,
        endpoints: vec![],
        listeners,
        routes: vec![],
    }
}

// === the application and its clients ===

/// A TCP application that echoes each connection until the client's end, then ends too.
async fn echo_app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Sends `msg`, ends its side and reads until the other side ends: the echo, or what came before a
/// refusal (a reset or a failed handshake read as an end).
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    msg: &[u8],
) -> Vec<u8> {
    if s.write_all(msg).await.is_err() || s.shutdown().await.is_err() {
        return Vec::new();
    }
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got).await;
    got
}

/// What comes back for `msg` over plaintext TCP to `to`.
async fn plain_echo(to: SocketAddr, msg: &[u8]) -> Vec<u8> {
    match TcpStream::connect(to).await {
        Ok(s) => exchange(s, msg).await,
        Err(_) => Vec::new(),
    }
}

/// What comes back for `msg` over TLS with `settings` to `to` (nothing when the handshake fails).
async fn tls_echo(to: SocketAddr, settings: &ClientTls, msg: &[u8]) -> Vec<u8> {
    let Ok(tcp) = TcpStream::connect(to).await else {
        return Vec::new();
    };
    match weft_http::tls::connect(tcp, settings).await {
        Ok(s) => exchange(s, msg).await,
        Err(_) => Vec::new(),
    }
}

/// Waits until `msg` comes back over TLS (the proxy may not have its certificate yet).
async fn until_tls_echo(to: SocketAddr, settings: &ClientTls, msg: &[u8]) {
    eventually("an echo over mutual TLS", || async {
        (tls_echo(to, settings, msg).await == msg).then_some(())
    })
    .await;
}

/// The proxy's Prometheus lines of `family` with every one of `labels`.
async fn series(proxy: &ProxyHandle, family: &str, labels: &[String]) -> Vec<String> {
    let (_, text) = admin_get(proxy.admin_addr(), "/stats/prometheus")
        .await
        .expect("stats");
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter(|l| labels.iter().all(|n| l.contains(n.as_str())))
        .map(str::to_string)
        .collect()
}

fn label(k: &str, v: &str) -> String {
    format!("{k}=\"{v}\"")
}

/// A server proxy (`reviews`, with its certificate) whose inbound TCP listener in `mode` goes to an
/// echo application, with `edit` applied to the listener; its ADS server and the listener's address.
async fn reviews_tcp(
    mesh: &Mesh,
    mode: Mode,
    edit: impl FnOnce(Any) -> Any,
) -> (FakeAds, ProxyHandle, SocketAddr) {
    let app = echo_app().await;
    let name = "inbound_127.0.0.1_9000";
    let cluster = "inbound|9000||";
    let listener = tcp_listener(
        name,
        "127.0.0.1:0".parse().expect("addr"),
        TrafficDirection::Inbound,
        cluster,
    );
    let set = xds(
        vec![static_cluster(cluster, &[app])],
        vec![edit(with_mode(listener, mode))],
    );
    let ads = FakeAds::start("127.0.0.1:0".parse().expect("addr"), set).await;
    let proxy = start_proxy(&ads, "reviews-v1", Some(mesh.ca_config("reviews"))).await;
    let bound = eventually("inbound TCP bound", || async { proxy.listener_addr(name) }).await;
    (ads, proxy, bound)
}

// === the tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_tcp_takes_only_mutual_tls_and_reports_the_peer() {
    let mesh = Mesh::start("strict").await;
    let (_ads, proxy, bound) = reviews_tcp(&mesh, Mode::Strict, |l| l).await;
    let productpage = mesh.client("productpage").await;

    until_tls_echo(bound, &productpage, b"hello over mTLS").await;
    assert_eq!(
        plain_echo(bound, b"hello in plaintext").await,
        b"",
        "STRICT: plaintext is closed"
    );
    assert_eq!(
        tls_echo(bound, &without_certificate(&productpage), b"no certificate").await,
        b"",
        "STRICT: a TLS client without a certificate is refused"
    );

    // The server's report: mutual TLS, the client's identity and its own.
    let want = [
        label("reporter", "destination"),
        label("source_principal", PRODUCTPAGE),
        label("destination_principal", REVIEWS),
        label("connection_security_policy", "mutual_tls"),
        label("request_protocol", "tcp"),
    ];
    let lines = eventually("the connection's close counted", || async {
        let l = series(&proxy, "istio_tcp_connections_closed_total", &want).await;
        l.iter().any(|l| l.ends_with(" 1")).then_some(l)
    })
    .await;
    assert_eq!(lines.len(), 1, "one connection, one series: {lines:?}");
    let received = series(&proxy, "istio_tcp_received_bytes_total", &want).await;
    assert!(
        received.iter().any(|l| l.ends_with(" 15")),
        "the 15 bytes echoed: {received:?}"
    );
    let plaintext = series(
        &proxy,
        "istio_tcp_connections_opened_total",
        &[label("connection_security_policy", "none")],
    )
    .await;
    assert!(
        plaintext.is_empty(),
        "nothing refused is counted: {plaintext:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_tcp_takes_mutual_tls_and_plaintext() {
    let mesh = Mesh::start("permissive").await;
    let (_ads, proxy, bound) = reviews_tcp(&mesh, Mode::Permissive, |l| l).await;
    let productpage = mesh.client("productpage").await;

    until_tls_echo(bound, &productpage, b"over mTLS").await;
    assert_eq!(plain_echo(bound, b"in plaintext").await, b"in plaintext");
    // A client whose first byte could start nothing else still reaches the application in plaintext.
    assert_eq!(plain_echo(bound, b"\x17 not TLS").await, b"\x17 not TLS");

    // Each series counts its connections once they have closed: one over mutual TLS, two in plaintext.
    for (policy, principal, n) in [("mutual_tls", PRODUCTPAGE, " 1"), ("none", "unknown", " 2")] {
        let want = [
            label("reporter", "destination"),
            label("source_principal", principal),
            label("connection_security_policy", policy),
        ];
        eventually(&format!("{policy} connections closed"), || async {
            let l = series(&proxy, "istio_tcp_connections_closed_total", &want).await;
            l.iter().any(|l| l.ends_with(n)).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tcp_rbac_check_sees_the_peers_principal() {
    let mesh = Mesh::start("rbac").await;
    let (_ads, _proxy, bound) =
        reviews_tcp(&mesh, Mode::Permissive, |l| allowing_only(l, PRODUCTPAGE)).await;
    let productpage = mesh.client("productpage").await;
    let ratings = mesh.client("ratings").await;

    until_tls_echo(bound, &productpage, b"allowed").await;
    assert_eq!(
        tls_echo(bound, &ratings, b"another identity").await,
        b"",
        "an identity the policy does not name is closed"
    );
    assert_eq!(
        plain_echo(bound, b"no identity").await,
        b"",
        "plaintext has no principal: closed"
    );
    assert_eq!(
        tls_echo(bound, &productpage, b"allowed again").await,
        b"allowed again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_tcp_to_a_sidecar_speaks_mutual_tls() {
    let mesh = Mesh::start("outbound").await;
    let (_server_ads, server, inbound) = reviews_tcp(&mesh, Mode::Strict, |l| l).await;

    // The client's sidecar: an egress TCP listener to a cluster whose endpoint is the server's
    // sidecar, with auto mTLS expecting the server's identity.
    let cluster = "outbound|9000||reviews.default.svc.cluster.local";
    let name = "127.0.0.1_9000";
    let egress = tcp_listener(
        name,
        "127.0.0.1:0".parse().expect("addr"),
        TrafficDirection::Outbound,
        cluster,
    );
    let set = xds(
        vec![auto_mtls_cluster(cluster, inbound, &[REVIEWS])],
        vec![egress],
    );
    let client_ads = FakeAds::start("127.0.0.1:0".parse().expect("addr"), set).await;
    let client = start_proxy(
        &client_ads,
        "productpage-v1",
        Some(mesh.ca_config("productpage")),
    )
    .await;
    let egress = eventually("egress TCP bound", || async { client.listener_addr(name) }).await;

    // Plaintext from the application; mutual TLS between the sidecars (the server takes nothing else).
    eventually("an echo through both sidecars", || async {
        (plain_echo(egress, b"through two sidecars").await == b"through two sidecars").then_some(())
    })
    .await;

    // The client's report: the server's identity from its certificate, `unknown` policy (Istio's).
    let source = [
        label("reporter", "source"),
        label("source_principal", PRODUCTPAGE),
        label("destination_principal", REVIEWS),
        label("destination_service", "reviews.default.svc.cluster.local"),
        label("connection_security_policy", "unknown"),
    ];
    eventually("the client's report", || async {
        let l = series(&client, "istio_tcp_connections_closed_total", &source).await;
        l.into_iter().find(|l| !l.ends_with(" 0"))
    })
    .await;
    // The server's: the client's identity, over mutual TLS.
    let destination = [
        label("reporter", "destination"),
        label("source_principal", PRODUCTPAGE),
        label("connection_security_policy", "mutual_tls"),
    ];
    eventually("the server's report", || async {
        let l = series(&server, "istio_tcp_connections_closed_total", &destination).await;
        l.into_iter().find(|l| !l.ends_with(" 0"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_tcp_refuses_a_sidecar_with_another_identity() {
    let mesh = Mesh::start("outbound-san").await;
    let (_server_ads, _server, inbound) = reviews_tcp(&mesh, Mode::Strict, |l| l).await;
    let cluster = "outbound|9000||reviews.default.svc.cluster.local";
    let name = "127.0.0.1_9000";
    let egress = tcp_listener(
        name,
        "127.0.0.1:0".parse().expect("addr"),
        TrafficDirection::Outbound,
        cluster,
    );
    // The cluster expects ratings; the endpoint is reviews.
    let set = xds(
        vec![auto_mtls_cluster(cluster, inbound, &[RATINGS])],
        vec![egress],
    );
    let client_ads = FakeAds::start("127.0.0.1:0".parse().expect("addr"), set).await;
    let client = start_proxy(
        &client_ads,
        "productpage-v1",
        Some(mesh.ca_config("productpage")),
    )
    .await;
    let egress = eventually("egress TCP bound", || async { client.listener_addr(name) }).await;
    let refused = [label("reporter", "source"), label("response_flags", "UF")];
    // Each attempt is refused; once the client has its certificate, the refusal is the SAN check's.
    eventually("a refused connection counted", || async {
        assert_eq!(plain_echo(egress, b"to the wrong identity").await, b"");
        let l = series(&client, "istio_tcp_connections_closed_total", &refused).await;
        l.into_iter().find(|l| !l.ends_with(" 0"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_metrics_say_mutual_tls_and_the_principal_or_none() {
    let mesh = Mesh::start("http").await;
    let app = net::Upstream::start("app", net::Behaviour::Ok).await;
    let name = "inbound_127.0.0.1_9080";
    let cluster = "inbound|9080||";
    let listener = inbound_listener(name, "127.0.0.1:0".parse().expect("addr"), cluster);
    let set = xds(
        vec![static_cluster(cluster, &[app.addr])],
        vec![with_mode(listener, Mode::Permissive)],
    );
    let ads = FakeAds::start("127.0.0.1:0".parse().expect("addr"), set).await;
    let proxy = start_proxy(&ads, "reviews-v1", Some(mesh.ca_config("reviews"))).await;
    let bound = eventually("inbound HTTP bound", || async { proxy.listener_addr(name) }).await;
    let productpage = mesh.client("productpage").await;

    let request = b"GET /reviews/1 HTTP/1.1\r\nhost: reviews:9080\r\nconnection: close\r\n\r\n";
    eventually("an answer over mutual TLS", || async {
        let answer = tls_echo(bound, &productpage, request).await;
        answer.starts_with(b"HTTP/1.1 200").then_some(())
    })
    .await;
    let answer = plain_echo(bound, request).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    let mtls = [
        label("reporter", "destination"),
        label("source_principal", PRODUCTPAGE),
        label("destination_principal", REVIEWS),
        label("response_code", "200"),
        label("connection_security_policy", "mutual_tls"),
    ];
    let plain = [
        label("reporter", "destination"),
        label("source_principal", "unknown"),
        label("destination_principal", "unknown"),
        label("response_code", "200"),
        label("connection_security_policy", "none"),
    ];
    for want in [&mtls, &plain] {
        let lines = eventually("the request counted", || async {
            let l = series(&proxy, "istio_requests_total", want).await;
            (!l.is_empty()).then_some(l)
        })
        .await;
        assert_eq!(lines.len(), 1, "{want:?}: {lines:?}");
        assert!(lines[0].ends_with(" 1"), "{lines:?}");
    }
}

/// Without an identity (no `--ca-token-file`), STRICT fails closed, on TCP and HTTP listeners alike,
/// and PERMISSIVE serves plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_without_an_identity_refuses_and_permissive_serves_plaintext() {
    init_logs();
    let app = echo_app().await;
    let web = net::Upstream::start("app", net::Behaviour::Ok).await;
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let listeners = [
        ("inbound_strict_tcp", Mode::Strict, true),
        ("inbound_permissive_tcp", Mode::Permissive, true),
        ("inbound_strict_http", Mode::Strict, false),
    ];
    let set = xds(
        vec![
            static_cluster("tcp", &[app]),
            static_cluster("http", &[web.addr]),
        ],
        listeners
            .iter()
            .map(|(name, mode, tcp)| {
                let l = match tcp {
                    true => tcp_listener(name, any, TrafficDirection::Inbound, "tcp"),
                    false => inbound_listener(name, any, "http"),
                };
                with_mode(l, *mode)
            })
            .collect(),
    );
    let ads = FakeAds::start(any, set).await;
    let proxy = start_proxy(&ads, "reviews-v1", None).await;
    let bound = |name: &'static str| {
        let proxy = &proxy;
        eventually(name, move || async move { proxy.listener_addr(name) })
    };
    let strict_tcp = bound("inbound_strict_tcp").await;
    let permissive_tcp = bound("inbound_permissive_tcp").await;
    let strict_http = bound("inbound_strict_http").await;

    assert_eq!(
        plain_echo(strict_tcp, b"plaintext").await,
        b"",
        "STRICT TCP"
    );
    assert_eq!(
        plain_echo(permissive_tcp, b"plaintext").await,
        b"plaintext",
        "PERMISSIVE TCP"
    );
    let request = b"GET / HTTP/1.1\r\nhost: reviews\r\nconnection: close\r\n\r\n";
    assert_eq!(plain_echo(strict_http, request).await, b"", "STRICT HTTP");
    assert_eq!(web.hits(), 0, "nothing reached the application");
    // A TLS client gets no handshake either: the proxy has no certificate to answer with.
    let mesh = Mesh::start("no-identity").await;
    let productpage = mesh.client("productpage").await;
    assert_eq!(tls_echo(strict_tcp, &productpage, b"over TLS").await, b"");
}
