//! Authorization through the real proxy: an inbound TCP listener whose filter chain carries the network
//! RBAC filter in the shape weftd (and istiod) sends for an AuthorizationPolicy; a scripted ADS server
//! and a loopback application.

// The helpers tests/proxy.rs shares; this file uses a part of them.
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
use net::{admin_get, eventually};
use resources::*;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use weft_proxy::{Args, Config, Proxy, ProxyHandle};
use weft_xds::pb::envoy::config::core::v3::{CidrRange, TrafficDirection};
use weft_xds::pb::envoy::config::rbac::v3::{
    permission, principal, rbac::Action, Permission, Policy, Principal, Rbac as Rules,
};
use weft_xds::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use weft_xds::pb::google::protobuf::UInt32Value;
use weft_xds::{pack, type_url};

const NETWORK_RBAC: &str = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

async fn start_proxy(ads: &str) -> ProxyHandle {
    init_logs();
    let args = <Args as clap::Parser>::try_parse_from([
        "weft-proxy",
        "--workload",
        "reviews-v1",
        "--ip",
        "127.0.0.1",
        "--outbound-port",
        "0",
        "--stats-port",
        "0",
        "--admin-port",
        "0",
        "--xds-address",
        ads,
    ])
    .expect("flags parse");
    let config = Config::try_from(&args).expect("valid config");
    let proxy = Proxy::start(config).await.expect("proxy starts");
    let admin = proxy.admin_addr();
    eventually("proxy ready", || async move {
        admin_get(admin, "/ready").await.filter(|(s, _)| *s == 200)
    })
    .await;
    proxy
}

async fn stats(proxy: &ProxyHandle) -> String {
    admin_get(proxy.admin_addr(), "/stats/prometheus")
        .await
        .map(|(_, t)| t)
        .unwrap_or_default()
}

/// The value of the sample of `family` whose labels include all of `labels`.
fn sample(text: &str, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(family) && l[family.len()..].starts_with('{'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}

/// A TCP application that answers every connection with "app" and closes.
async fn tcp_app() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let _ = s.write_all(b"app").await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, accepted)
}

/// What a client bound to `from` reads from `to` until the connection ends (empty when it is closed
/// at once).
async fn tcp_read_from(from: &str, to: SocketAddr) -> String {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("addr"))
        .expect("bind the client");
    let mut s = socket.connect(to).await.expect("connect");
    let mut got = Vec::new();
    // A reset is an end too.
    let _ = s.read_to_end(&mut got).await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_rbac_closes_connections_from_a_denied_source() {
    let (app, accepted) = tcp_app().await;
    let name = "inbound_127.0.0.1_9000";
    let cluster = "inbound|9000||";
    // The DENY istiod generates for `from: [{source: {ipBlocks: ["127.0.0.2"]}}]` on a TCP port.
    let blocked = Principal {
        identifier: Some(principal::Identifier::OrIds(principal::Set {
            ids: vec![Principal {
                identifier: Some(principal::Identifier::DirectRemoteIp(CidrRange {
                    address_prefix: "127.0.0.2".into(),
                    prefix_len: Some(UInt32Value { value: 32 }),
                })),
            }],
        })),
    };
    let rules = Rules {
        action: Action::Deny as i32,
        policies: [(
            "ns[default]-policy[block]-rule[0]".to_string(),
            Policy {
                permissions: vec![Permission {
                    rule: Some(permission::Rule::Any(true)),
                }],
                principals: vec![blocked],
                ..Default::default()
            },
        )]
        .into_iter()
        .collect(),
        audit_logging_options: None,
    };
    let listener = {
        use weft_xds::pb::envoy::config::listener::v3::{filter, Filter, Listener};
        let l = tcp_listener(
            name,
            "127.0.0.1:0".parse().expect("addr"),
            TrafficDirection::Inbound,
            cluster,
        );
        let mut l: Listener = weft_xds::unpack(&l).expect("listener");
        l.filter_chains[0].filters.insert(
            0,
            Filter {
                name: "envoy.filters.network.rbac".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack(
                    NETWORK_RBAC,
                    &NetworkRbac {
                        rules: Some(rules),
                        stat_prefix: "tcp.".into(),
                        ..Default::default()
                    },
                ))),
            },
        );
        pack(type_url::LISTENER, &l)
    };
    let set = XdsSet {
        version: "1".into(),
        clusters: vec![static_cluster(cluster, &[app])],
        endpoints: vec![],
        listeners: vec![listener],
        routes: vec![],
    };
    let ads = FakeAds::start("127.0.0.1:0".parse().expect("addr"), set).await;
    let proxy = start_proxy(&ads.url()).await;
    let bound = eventually("inbound TCP bound", || async { proxy.listener_addr(name) }).await;

    assert_eq!(
        tcp_read_from("127.0.0.1", bound).await,
        "app",
        "allowed source"
    );
    assert_eq!(
        tcp_read_from("127.0.0.2", bound).await,
        "",
        "denied source: closed"
    );
    assert_eq!(
        tcp_read_from("127.0.0.3", bound).await,
        "app",
        "another source"
    );
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the denied connection never reached the application"
    );
    let closed = [("reporter", "destination"), ("response_flags", "RBAC")];
    let text = eventually("TCP metrics", || async {
        let t = stats(&proxy).await;
        sample(&t, "istio_tcp_connections_closed_total", &closed).map(|_| t)
    })
    .await;
    assert_eq!(
        sample(&text, "istio_tcp_connections_closed_total", &closed),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "istio_tcp_connections_opened_total",
            &[("reporter", "destination")]
        ),
        Some(3.0),
        "{text}"
    );
    proxy.shutdown().await;
}
