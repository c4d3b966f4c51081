//! Opaque TCP through the ADS server: a proxy selected by a Sidecar with a TCP egress port gets the
//! TCP service's cluster, its load assignment and its own egress listener, and each later change (the
//! service's endpoints, the Sidecar) reaches it as only the resources that changed.

use std::collections::HashMap;
use weft_xds::node::ProxyIdentity;
use weft_xds::pb::envoy::config::core::v3::address::Address as AddressKind;
use weft_xds::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use weft_xds::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use weft_xds::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use weft_xds::pb::envoy::config::listener::v3::{filter, Listener};
use weft_xds::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    tcp_proxy::ClusterSpecifier, TcpProxy,
};
use weft_xds::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;
use weft_xds::{filter_name, type_url, unpack};

mod support;
use support::{names, serve, Stream};

const DB_9000: &str = "outbound|9000||db.default.svc.cluster.local";

/// The TCP service (one endpoint at `endpoint`) and a Sidecar giving app=bench-client a TCP egress
/// listener on port 9000 (on `bind`, when given).
fn config(endpoint: &str, bind: Option<&str>) -> String {
    let bind = bind.map(|b| format!("    bind: {b}\n")).unwrap_or_default();
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: db}}
spec:
  hosts: [db.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9000, name: tcp, protocol: TCP}}]
  endpoints: [{{address: {endpoint}}}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: bench-client}}
spec:
  workloadSelector: {{labels: {{app: bench-client}}}}
  egress:
  - port: {{number: 9000, protocol: TCP, name: tcp}}
{bind}    hosts: [./*]
"
    )
}

fn bench_client() -> ProxyIdentity {
    ProxyIdentity {
        workload: "bench-client".into(),
        namespace: "default".into(),
        labels: [("app".to_string(), "bench-client".to_string())].into(),
        ip: "127.0.50.1".into(),
        inbound_ports: vec![(9080, 19080)],
        admin_address: "127.0.50.1:15000".into(),
        ..Default::default()
    }
}

fn endpoint_ips(r: &DeltaDiscoveryResponse) -> Vec<String> {
    let cla: ClusterLoadAssignment =
        unpack(r.resources[0].resource.as_ref().expect("resource")).expect("decodes");
    cla.endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .filter_map(|e| match &e.host_identifier {
            Some(HostIdentifier::Endpoint(ep)) => {
                match ep.address.as_ref().and_then(|a| a.address.as_ref()) {
                    Some(AddressKind::SocketAddress(sa)) => Some(format!(
                        "{}:{}",
                        sa.address,
                        match sa.port_specifier {
                            Some(PortSpecifier::PortValue(p)) => p,
                            _ => 0,
                        }
                    )),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect()
}

/// The TCP proxy's cluster, for a listener whose one filter is `tcp_proxy`.
fn tcp_cluster(r: &DeltaDiscoveryResponse, name: &str) -> String {
    let res = r
        .resources
        .iter()
        .find(|x| x.name == name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", names(r)));
    let l: Listener = unpack(res.resource.as_ref().expect("resource")).expect("decodes");
    let f = &l.filter_chains[0].filters[0];
    assert_eq!(f.name, filter_name::TCP_PROXY, "{name}");
    let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
        panic!("{name}: no typed config");
    };
    let tcp: TcpProxy = unpack(any).expect("decodes");
    match tcp.cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) => c,
        other => panic!("{name}: {other:?}"),
    }
}

#[tokio::test]
async fn tcp_service_and_egress_listener_follow_changes() {
    let served = serve(&config("127.0.50.2", None)).await;
    let mut s = Stream::open_as(&served, bench_client()).await;
    s.subscribe(type_url::CLUSTER, &[], HashMap::new(), true)
        .await;
    let cds = s.recv().await;
    assert_eq!(names(&cds), ["inbound|9080||", DB_9000]);
    s.ack(&cds).await;
    s.subscribe(type_url::ENDPOINT, &[DB_9000], HashMap::new(), false)
        .await;
    let eds = s.recv().await;
    assert_eq!(names(&eds), [DB_9000]);
    assert_eq!(endpoint_ips(&eds), ["127.0.50.2:9000"]);
    s.ack(&eds).await;
    s.subscribe(type_url::LISTENER, &[], HashMap::new(), false)
        .await;
    let lds = s.recv().await;
    assert_eq!(names(&lds), ["127.0.50.1_9000", "inbound_127.0.50.1_9080"]);
    assert_eq!(tcp_cluster(&lds, "127.0.50.1_9000"), DB_9000);
    s.ack(&lds).await;

    // The TCP service's endpoint moves: one load assignment, nothing else.
    served.publish(2, &config("127.0.50.3", None));
    let push = s.recv().await;
    assert_eq!(push.type_url, type_url::ENDPOINT);
    assert_eq!(names(&push), [DB_9000]);
    assert_eq!(endpoint_ips(&push), ["127.0.50.3:9000"]);
    s.ack(&push).await;
    s.quiet().await;

    // The Sidecar binds the listener elsewhere: the new listener and the old one's removal, no
    // clusters (they did not change).
    served.publish(3, &config("127.0.50.3", Some("127.0.50.9")));
    let push = s.recv().await;
    assert_eq!(push.type_url, type_url::LISTENER);
    assert_eq!(names(&push), ["127.0.50.9_9000"]);
    assert_eq!(tcp_cluster(&push, "127.0.50.9_9000"), DB_9000);
    assert_eq!(push.removed_resources, ["127.0.50.1_9000"]);
    s.ack(&push).await;
    s.quiet().await;

    // The Sidecar goes: its listener goes with it.
    let without_sidecar = config("127.0.50.3", None);
    let without_sidecar = without_sidecar
        .split("---\n")
        .next()
        .expect("the service entry");
    served.publish(4, without_sidecar);
    let push = s.recv().await;
    assert_eq!(push.type_url, type_url::LISTENER);
    assert!(push.resources.is_empty(), "{:?}", names(&push));
    assert_eq!(push.removed_resources, ["127.0.50.9_9000"]);
    s.ack(&push).await;
    s.quiet().await;
}
