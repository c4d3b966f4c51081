//! Gateway servers → a gateway proxy's listeners and route tables (Istio's node type `router`).
//!
//! For each Gateway whose `selector` matches the proxy's labels, each server becomes a listener on its
//! port (`0.0.0.0_<port>`, bound on `bind` or the proxy's own address) whose connection manager takes its
//! routes from RDS: `http.<port>` for plaintext servers, `https.<port>.<portName>.<gateway>.<namespace>`
//! for HTTPS ones, as Istio names them. A route table holds one virtual host per VirtualService host that
//! the server's hosts admit, among the VirtualServices bound to that Gateway (`gateways:`); its routes are
//! the ones sidecars get from the same rules ([`super::route::virtual_service_routes`]).
//!
//! HTTPS servers (`tls.mode` SIMPLE or MUTUAL) carry a `DownstreamTlsContext` naming the certificate,
//! key and CA files; the proxy reads them. `httpsRedirect` sets `require_tls: ALL` on the server's
//! virtual hosts (Envoy answers plaintext requests with a 301 to `https://`).
//!
//! Several servers on one port (from one or several Gateways selecting the proxy): plaintext ones share
//! `http.<port>`, as in Istio; a port's first server (by Gateway namespace/name, then position) decides
//! whether it is plaintext or TLS, and a later server that disagrees is left out with a warning.

use super::route::virtual_service_routes;
use super::{hcm_filter, socket_address};
use crate::model::Model;
use std::collections::BTreeMap;
use tracing::warn;
use weft_api::networking::gateway::{
    hosts_intersect, virtual_service_host, Gateway, Server, ServerHost, TlsMode,
};
use weft_api::networking::labels_match;
use weft_api::networking::virtual_service::l4::Connection;
use weft_api::Resource;
use weft_xds::node::ProxyIdentity;
use weft_xds::pb::envoy::config::core::v3::{
    data_source, transport_socket, DataSource, TrafficDirection, TransportSocket,
};
use weft_xds::pb::envoy::config::listener::v3::{FilterChain, Listener};
use weft_xds::pb::envoy::config::route::v3::virtual_host::TlsRequirementType;
use weft_xds::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use weft_xds::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::ClusterSpecifier as TcpClusterSpecifier;
use weft_xds::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, CertificateValidationContext, CommonTlsContext,
    DownstreamTlsContext, TlsCertificate,
};
use weft_xds::pb::google::protobuf::BoolValue;
use weft_xds::{filter_name, pack, type_url};

/// One Gateway server that applies to the proxy, with the Gateway it belongs to.
struct Bound<'a> {
    gateway: &'a Resource,
    server: &'a Server,
    port: u32,
    tls: Option<TlsMode>,
}

impl Bound<'_> {
    /// `namespace/name` of the Gateway.
    fn key(&self) -> String {
        format!(
            "{}/{}",
            self.gateway.metadata.namespace, self.gateway.metadata.name
        )
    }

    /// Istio's RDS name for the server.
    fn route_name(&self) -> String {
        match self.tls {
            None => format!("http.{}", self.port),
            Some(_) => {
                let port_name = self
                    .server
                    .port
                    .as_ref()
                    .map(|p| p.name.as_str())
                    .unwrap_or_default();
                format!(
                    "https.{}.{port_name}.{}.{}",
                    self.port, self.gateway.metadata.name, self.gateway.metadata.namespace
                )
            }
        }
    }
}

/// The Gateways whose selector matches the proxy's labels (an empty selector matches every gateway
/// proxy), in namespace/name order.
fn selecting<'a>(model: &'a Model, proxy: &ProxyIdentity) -> Vec<(&'a Resource, &'a Gateway)> {
    model
        .gateways
        .values()
        .filter_map(|r| r.as_gateway().map(|g| (&**r, g)))
        .filter(|(_, g)| labels_match(&g.selector, &proxy.labels))
        .collect()
}

/// The listeners and route tables of a gateway proxy.
pub fn translate(model: &Model, proxy: &ProxyIdentity) -> (Vec<Listener>, Vec<RouteConfiguration>) {
    // Servers by port, the first deciding plaintext or TLS; TCP servers apart.
    let mut by_port: BTreeMap<u32, Vec<Bound>> = BTreeMap::new();
    let mut tcp_ports: BTreeMap<u32, Vec<Bound>> = BTreeMap::new();
    for (r, gw) in selecting(model, proxy) {
        for s in &gw.servers {
            let Some(port) = s.port.as_ref() else {
                continue;
            };
            let proto = port.effective_protocol();
            let tls = match proto.as_str() {
                "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" => None,
                "HTTPS" => match s.tls.as_ref().and_then(|t| t.served_mode()) {
                    Some(m) => Some(m),
                    // The analyzer refuses it; skip rather than guess.
                    None => continue,
                },
                // Opaque TCP (MONGO included: Weft has no Mongo filter, as Istio's is stats only).
                "TCP" | "MONGO" => {
                    tcp_ports.entry(port.number).or_default().push(Bound {
                        gateway: r,
                        server: s,
                        port: port.number,
                        tls: None,
                    });
                    continue;
                }
                _ => continue,
            };
            let b = Bound {
                gateway: r,
                server: s,
                port: port.number,
                tls,
            };
            let servers = by_port.entry(port.number).or_default();
            if let Some(first) = servers.first() {
                if first.tls.is_some() || b.tls.is_some() {
                    warn!(
                        proxy = %proxy.node_id(),
                        port = port.number,
                        gateway = %b.key(),
                        first = %first.key(),
                        "a TLS gateway server shares its port with another server; left out"
                    );
                    continue;
                }
            }
            servers.push(b);
        }
    }
    let mut listeners = Vec::new();
    let mut routes = Vec::new();
    for (port, servers) in &by_port {
        let Some(first) = servers.first() else {
            continue;
        };
        let route_name = first.route_name();
        listeners.push(listener(model, proxy, first, &route_name));
        routes.push(route_table(model, proxy, *port, &route_name, servers));
    }
    for (port, servers) in &tcp_ports {
        if by_port.contains_key(port) {
            warn!(
                proxy = %proxy.node_id(),
                port,
                "a TCP gateway server shares its port with an HTTP one; left out"
            );
            continue;
        }
        listeners.extend(tcp_listener(model, proxy, servers));
    }
    (listeners, routes)
}

/// The address a server listens on: its `bind`, else the proxy's own.
fn server_ip<'a>(b: &'a Bound, proxy: &'a ProxyIdentity) -> &'a str {
    b.server
        .bind
        .as_deref()
        .filter(|b| b.parse::<std::net::IpAddr>().is_ok())
        .unwrap_or(&proxy.ip)
}

/// The listener of the TCP servers on one port: a `tcp_proxy` to the destinations of the first `tcp`
/// rule that takes the connection, among the VirtualServices bound to those servers' Gateways whose
/// hosts the servers admit (as Istio's TCP traffic shifting task routes `tcp-echo` through its
/// gateway). `None`, with a warning, when no rule takes it: nothing would carry its connections.
fn tcp_listener(model: &Model, proxy: &ProxyIdentity, servers: &[Bound]) -> Option<Listener> {
    let first = servers.first()?;
    let port = first.port;
    let ip = server_ip(first, proxy);
    let destination = ip.parse().unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    let spec = servers.iter().find_map(|b| {
        let key = b.key();
        let gw_ns = &b.gateway.metadata.namespace;
        let server_hosts: Vec<ServerHost> = b
            .server
            .hosts
            .iter()
            .filter_map(|h| ServerHost::parse(h))
            .collect();
        let c = Connection {
            gateway: Some(&key),
            destination,
            port,
            namespace: &proxy.namespace,
            labels: &proxy.labels,
        };
        model
            .gateway_virtual_services
            .get(&key)?
            .iter()
            .find_map(|vs_res| {
                let vs = vs_res.as_virtual_service()?;
                let vs_ns = &vs_res.metadata.namespace;
                let admitted = vs.hosts.iter().any(|h| {
                    let host = virtual_service_host(h, vs_ns);
                    server_hosts.iter().any(|sh| {
                        sh.allows_namespace(gw_ns, vs_ns) && hosts_intersect(&sh.host, &host)
                    })
                });
                if !admitted {
                    return None;
                }
                let rule = vs.tcp.iter().find(|r| r.admits(&c, vs_ns))?;
                super::tcp::specifier(model, vs_ns, rule, port)
            })
    });
    let Some(spec) = spec else {
        warn!(
            proxy = %proxy.node_id(),
            port,
            gateway = %first.key(),
            "no VirtualService tcp rule takes this TCP server's connections; no listener"
        );
        return None;
    };
    let stat = match &spec {
        TcpClusterSpecifier::Cluster(c) => c.clone(),
        TcpClusterSpecifier::WeightedClusters(w) => w
            .clusters
            .first()
            .map(|c| c.name.clone())
            .unwrap_or_default(),
    };
    let workload = crate::telemetry::Chain::workload_of(model, &proxy.namespace, &proxy.labels);
    let client = super::applied(model, &proxy.namespace, workload.as_deref(), true);
    // AuthorizationPolicies that select the gateway hold on its TCP servers too, before any byte moves.
    let filters =
        crate::security::rbac_network_filters(model, &proxy.namespace, &proxy.labels, port)
            .into_iter()
            .chain(super::telemetry::stats_network_filter(&client))
            .chain([super::tcp_proxy_filter(&stat, spec)])
            .collect();
    Some(super::listener(
        format!("0.0.0.0_{port}"),
        socket_address(ip, port),
        TrafficDirection::Outbound,
        true,
        filters,
    ))
}

/// The listener of the servers on one port, shaped by the first of them.
fn listener(model: &Model, proxy: &ProxyIdentity, first: &Bound, route_name: &str) -> Listener {
    let port = first.port;
    let ip = server_ip(first, proxy);
    let workload = crate::telemetry::Chain::workload_of(model, &proxy.namespace, &proxy.labels);
    // A gateway reports as a client, as Istio's gateways do (`reporter="source"`).
    let client = super::applied(model, &proxy.namespace, workload.as_deref(), true);
    let mut hcm = super::outbound_hcm(&model.mesh, &client, port, route_name);
    super::set_path_normalization(&mut hcm, model.mesh.path_normalization());
    // The AuthorizationPolicies and RequestAuthentications that select the gateway's workload (or the
    // mesh, or its namespace) apply to its listeners, as on a sidecar's inbound ones: RBAC first, after
    // jwt_authn (added below).
    let rbac = crate::security::rbac_http_filters(model, &proxy.namespace, &proxy.labels);
    hcm.http_filters.splice(0..0, rbac);
    let mut l = Listener {
        name: format!("0.0.0.0_{port}"),
        address: Some(socket_address(ip, port)),
        traffic_direction: TrafficDirection::Outbound as i32,
        filter_chains: vec![FilterChain {
            filters: vec![hcm_filter(&hcm)],
            transport_socket: first.tls.and_then(|mode| tls_socket(first.server, mode)),
            ..Default::default()
        }],
        ..Default::default()
    };
    crate::authn::add_jwt_filter(&mut l, crate::authn::jwt_filter(model, proxy).as_ref());
    l
}

fn file(path: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::Filename(path.to_string())),
        ..Default::default()
    }
}

/// The server's TLS from its certificate files: the proxy reads them when the listener arrives.
fn tls_socket(server: &Server, mode: TlsMode) -> Option<TransportSocket> {
    let t = server.tls.as_ref()?;
    let cert = t.server_certificate.as_deref()?;
    let key = t.private_key.as_deref()?;
    let validation = match (mode, t.ca_certificates.as_deref()) {
        (TlsMode::Mutual, Some(ca)) => Some(ValidationContextType::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(file(ca)),
                ..Default::default()
            },
        )),
        (TlsMode::Mutual, None) => return None,
        (TlsMode::Simple, _) => None,
    };
    let ctx = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificates: vec![TlsCertificate {
                certificate_chain: Some(file(cert)),
                private_key: Some(file(key)),
                ..Default::default()
            }],
            validation_context_type: validation,
            // What Istio's gateways offer.
            alpn_protocols: vec!["h2".into(), "http/1.1".into()],
            ..Default::default()
        }),
        require_client_certificate: Some(BoolValue {
            value: mode == TlsMode::Mutual,
        }),
        ..Default::default()
    };
    Some(TransportSocket {
        name: filter_name::TLS_TRANSPORT_SOCKET.into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack(
            type_url::DOWNSTREAM_TLS_CONTEXT,
            &ctx,
        ))),
    })
}

/// The route table of the servers on one port: a virtual host per VirtualService host each server
/// admits, the first VirtualService (by namespace/name) for a host winning, as for sidecars.
fn route_table(
    model: &Model,
    proxy: &ProxyIdentity,
    port: u32,
    name: &str,
    servers: &[Bound],
) -> RouteConfiguration {
    let mut vhosts: BTreeMap<String, VirtualHost> = BTreeMap::new();
    for b in servers {
        let gw_ns = &b.gateway.metadata.namespace;
        let server_hosts: Vec<ServerHost> = b
            .server
            .hosts
            .iter()
            .filter_map(|h| ServerHost::parse(h))
            .collect();
        let redirect = b.tls.is_none() && b.server.tls.as_ref().is_some_and(|t| t.https_redirect);
        let require_tls = if redirect {
            TlsRequirementType::All
        } else {
            TlsRequirementType::None
        };
        let bound = model
            .gateway_virtual_services
            .get(&b.key())
            .map(Vec::as_slice)
            .unwrap_or_default();
        for vs_res in bound {
            let Some(vs) = vs_res.as_virtual_service() else {
                continue;
            };
            let vs_ns = &vs_res.metadata.namespace;
            for h in &vs.hosts {
                let host = virtual_service_host(h, vs_ns);
                let admitted = server_hosts.iter().any(|sh| {
                    sh.allows_namespace(gw_ns, vs_ns) && hosts_intersect(&sh.host, &host)
                });
                if !admitted || vhosts.contains_key(&host) {
                    continue;
                }
                vhosts.insert(
                    host.clone(),
                    VirtualHost {
                        name: format!("{host}:{port}"),
                        domains: domains(&host, port),
                        routes: virtual_service_routes(
                            model,
                            vs_res,
                            port,
                            Some(&b.key()),
                            &proxy.namespace,
                        ),
                        require_tls: require_tls as i32,
                        ..Default::default()
                    },
                );
            }
        }
        // A redirecting server answers its hosts even with no VirtualService bound: every request
        // is sent to https:// anyway.
        if redirect {
            for sh in &server_hosts {
                if !vhosts.contains_key(&sh.host) {
                    vhosts.insert(
                        sh.host.clone(),
                        VirtualHost {
                            name: format!("{}:{port}", sh.host),
                            domains: domains(&sh.host, port),
                            require_tls: require_tls as i32,
                            ..Default::default()
                        },
                    );
                }
            }
        }
    }
    RouteConfiguration {
        name: name.to_string(),
        virtual_hosts: vhosts.into_values().collect(),
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    }
}

/// A gateway virtual host's domains: the host, and `host:port` (a client may name the port).
fn domains(host: &str, port: u32) -> Vec<String> {
    if host == "*" {
        vec!["*".into()]
    } else {
        vec![host.to_string(), format!("{host}:{port}")]
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::model;
    use super::super::{for_proxy, Scope};
    use super::*;
    use weft_xds::pb::envoy::config::route::v3::route::Action;
    use weft_xds::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
    use weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
    use weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager as Hcm;
    use weft_xds::unpack;

    const GATEWAY: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: ingress}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: [\"*\"]
  - port: {number: 80, name: http-redirect, protocol: HTTP}
    hosts: [./bookinfo.com]
    tls: {httpsRedirect: true}
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [bookinfo.com]
    tls: {mode: MUTUAL, serverCertificate: /certs/cert.pem, privateKey: /certs/key.pem, caCertificates: /certs/ca.pem}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ingress, namespace: ingress}
spec:
  hosts: [bookinfo.com]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /reviews}}]
    route: [{destination: {host: reviews.default.svc.cluster.local, subset: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: everything, namespace: default}
spec:
  hosts: [\"*\"]
  gateways: [ingress/gw]
  http:
  - route: [{destination: {host: reviews}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  gateways: [mesh, gw.ingress.svc.cluster.local]
  http:
  - route: [{destination: {host: reviews, subset: v1}}]
";

    /// Istio's TCP traffic shifting task, as written: tcp-echo behind a TCP server on 31400.
    const TCP_ECHO: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcp-echo, namespace: default}
spec:
  hosts: [tcp-echo.default.svc.cluster.local]
  addresses: [10.0.0.7]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  endpoints:
  - {address: 127.0.60.1, labels: {version: v1}}
  - {address: 127.0.60.2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcp-echo-destination, namespace: default}
spec:
  host: tcp-echo
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tcp-echo-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: [\"*\"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo, namespace: default}
spec:
  hosts: [\"*\"]
  gateways: [tcp-echo-gateway]
  tcp:
  - match: [{port: 31400}]
    route:
    - destination: {host: tcp-echo, port: {number: 9000}, subset: v1}
      weight: 80
    - destination: {host: tcp-echo, port: {number: 9000}, subset: v2}
      weight: 20
";

    #[test]
    fn tcp_servers_carry_connections_to_the_tcp_rules_destinations() {
        use weft_xds::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
        let tcp_of = |yaml: &str| -> Option<TcpProxy> {
            let m = model(yaml);
            let (listeners, _) = translate(&m, &gateway_proxy(&[("istio", "ingressgateway")]));
            let l = listeners.iter().find(|l| l.name == "0.0.0.0_31400")?;
            assert!(l.bind_to_port.is_none(), "bound");
            let f = l.filter_chains[0].filters.last().expect("a filter");
            assert_eq!(f.name, weft_xds::filter_name::TCP_PROXY);
            match &f.config_type {
                Some(
                    weft_xds::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(a),
                ) => Some(unpack(a).expect("tcp_proxy")),
                other => panic!("{other:?}"),
            }
        };
        let tcp = tcp_of(TCP_ECHO).expect("a listener for the TCP server");
        let Some(TcpClusterSpecifier::WeightedClusters(w)) = tcp.cluster_specifier else {
            panic!("not weighted: {tcp:?}");
        };
        let got: Vec<(&str, u32)> = w
            .clusters
            .iter()
            .map(|c| (c.name.as_str(), c.weight))
            .collect();
        assert_eq!(
            got,
            [
                ("outbound|9000|v1|tcp-echo.default.svc.cluster.local", 80),
                ("outbound|9000|v2|tcp-echo.default.svc.cluster.local", 20),
            ]
        );
        // A rule for another port takes nothing: no listener (and a warning).
        assert!(
            tcp_of(&TCP_ECHO.replace("match: [{port: 31400}]", "match: [{port: 31401}]")).is_none()
        );
        // A match for another gateway does not apply here.
        assert!(tcp_of(
            &TCP_ECHO.replace("match: [{port: 31400}]", "match: [{gateways: [other]}]")
        )
        .is_none());
        // The VirtualService bound to the mesh only: nothing for the gateway.
        assert!(tcp_of(
            &TCP_ECHO
                .replace("gateways: [tcp-echo-gateway]", "gateways: [mesh]")
                .replace(
                    "hosts: [\"*\"]\n  gateways",
                    "hosts: [tcp-echo]\n  gateways"
                )
        )
        .is_none());
    }

    fn gateway_proxy(labels: &[(&str, &str)]) -> ProxyIdentity {
        ProxyIdentity {
            workload: "istio-ingressgateway".into(),
            namespace: "istio-system".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ip: "127.0.1.20".into(),
            router: true,
            ..Default::default()
        }
    }

    #[test]
    fn selected_gateways_give_listeners_and_route_tables_named_as_istio() {
        let m = model(GATEWAY);
        let (listeners, routes) = translate(&m, &gateway_proxy(&[("istio", "ingressgateway")]));
        let names: Vec<(&str, String)> = listeners
            .iter()
            .map(|l| {
                let hcm: Hcm = match &l.filter_chains[0].filters[0].config_type {
                    Some(
                        weft_xds::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(
                            a,
                        ),
                    ) => unpack(a).expect("hcm"),
                    other => panic!("{other:?}"),
                };
                let rds = match hcm.route_specifier {
                    Some(RouteSpecifier::Rds(r)) => r.route_config_name,
                    other => panic!("{other:?}"),
                };
                (l.name.as_str(), rds)
            })
            .collect();
        assert_eq!(
            names,
            [
                ("0.0.0.0_80", "http.80".to_string()),
                ("0.0.0.0_8080", "http.8080".to_string()),
                ("0.0.0.0_8443", "https.8443.https.gw.ingress".to_string()),
            ]
        );
        // On the proxy's own address; only the HTTPS one has TLS, from the files, asking for a client
        // certificate.
        let l = &listeners[2];
        assert_eq!(l.traffic_direction, TrafficDirection::Outbound as i32);
        assert!(l.bind_to_port.is_none(), "bound");
        assert!(listeners[0].filter_chains[0].transport_socket.is_none());
        let ts = l.filter_chains[0].transport_socket.as_ref().expect("tls");
        let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
            panic!("{ts:?}")
        };
        let d: DownstreamTlsContext = unpack(any).expect("tls context");
        assert_eq!(
            d.require_client_certificate,
            Some(BoolValue { value: true })
        );
        let c = d.common_tls_context.expect("common");
        assert_eq!(
            c.tls_certificates[0].certificate_chain,
            Some(file("/certs/cert.pem"))
        );
        assert_eq!(
            c.validation_context_type,
            Some(ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(file("/certs/ca.pem")),
                    ..Default::default()
                }
            ))
        );

        let table = |name: &str| {
            routes
                .iter()
                .find(|r| r.name == name)
                .unwrap_or_else(|| panic!("no {name}"))
        };
        // Port 8080 admits every host: every VirtualService, a virtual host for each of their hosts.
        let hosts: Vec<(&str, &[String])> = table("http.8080")
            .virtual_hosts
            .iter()
            .map(|v| (v.name.as_str(), v.domains.as_slice()))
            .collect();
        assert_eq!(
            hosts,
            [
                ("*:8080", ["*".to_string()].as_slice()),
                (
                    "bookinfo.com:8080",
                    ["bookinfo.com".to_string(), "bookinfo.com:8080".to_string()].as_slice()
                ),
                (
                    "reviews.default.svc.cluster.local:8080",
                    [
                        "reviews.default.svc.cluster.local".to_string(),
                        "reviews.default.svc.cluster.local:8080".to_string()
                    ]
                    .as_slice()
                ),
            ]
        );
        // The sidecars' translation of the same rule.
        let vh = &table("http.8080").virtual_hosts[1];
        let Some(Action::Route(a)) = &vh.routes[0].action else {
            panic!("{vh:?}")
        };
        assert_eq!(
            a.cluster_specifier,
            Some(ClusterSpecifier::Cluster(
                "outbound|9080|v2|reviews.default.svc.cluster.local".into()
            ))
        );
        // Port 80 (`./bookinfo.com`): only the gateway's namespace, redirected to https.
        let r80 = table("http.80");
        assert_eq!(r80.virtual_hosts.len(), 1, "{r80:?}");
        assert_eq!(r80.virtual_hosts[0].name, "bookinfo.com:80");
        assert_eq!(
            r80.virtual_hosts[0].require_tls,
            TlsRequirementType::All as i32
        );
        assert_eq!(
            table("https.8443.https.gw.ingress").virtual_hosts[0].require_tls,
            TlsRequirementType::None as i32
        );
    }

    #[test]
    fn only_selected_router_proxies_get_gateway_listeners() {
        let m = model(GATEWAY);
        let (l, r) = translate(&m, &gateway_proxy(&[("istio", "egressgateway")]));
        assert!(l.is_empty() && r.is_empty(), "selector does not match");
        // A router gets no sidecar listeners or route tables, only its gateway ones, and the clusters.
        let res = for_proxy(&m, &gateway_proxy(&[("istio", "ingressgateway")]));
        let names = |t: &str| -> Vec<String> { res.of(t).expect("type").keys().cloned().collect() };
        assert_eq!(
            names(type_url::LISTENER),
            ["0.0.0.0_80", "0.0.0.0_8080", "0.0.0.0_8443"]
        );
        assert_eq!(
            names(type_url::ROUTE),
            ["http.80", "http.8080", "https.8443.https.gw.ingress"]
        );
        assert!(names(type_url::CLUSTER)
            .contains(&"outbound|9080|v2|reviews.default.svc.cluster.local".to_string()));
        // A sidecar with the same labels gets none of them; the `mesh` binding still reaches it.
        let mut sidecar = gateway_proxy(&[("istio", "ingressgateway")]);
        sidecar.router = false;
        assert!(!Scope::of(&m, &sidecar).router);
        let res = for_proxy(&m, &sidecar);
        let routes = res.of(type_url::ROUTE).expect("routes");
        assert_eq!(routes.keys().collect::<Vec<_>>(), ["9080"]);
        assert!(m
            .virtual_services
            .contains_key("reviews.default.svc.cluster.local"));
        assert!(!m.virtual_services.contains_key("*"), "gateway-only rules");
        let mut bound: Vec<&str> = m.gateway_virtual_services["ingress/gw"]
            .iter()
            .map(|r| r.metadata.name.as_str())
            .collect();
        bound.sort();
        assert_eq!(bound, ["everything", "ingress", "reviews"]);
    }

    #[test]
    fn policies_selecting_the_gateway_apply_to_its_listeners() {
        let policy = "---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: ingress}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: DENY
  rules: [{to: [{operation: {paths: [/admin]}}]}]
";
        let filters = |yaml: &str| -> Vec<String> {
            let m = model(yaml);
            let mut proxy = gateway_proxy(&[("istio", "ingressgateway")]);
            proxy.namespace = "ingress".into();
            let (listeners, _) = translate(&m, &proxy);
            assert!(!listeners.is_empty());
            let hcm: Hcm = match &listeners[0].filter_chains[0].filters[0].config_type {
                Some(
                    weft_xds::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(a),
                ) => unpack(a).expect("hcm"),
                other => panic!("{other:?}"),
            };
            hcm.http_filters.into_iter().map(|f| f.name).collect()
        };
        let without = filters(GATEWAY);
        assert!(!without.iter().any(|f| f.contains("rbac")), "{without:?}");
        let with = filters(&format!("{GATEWAY}{policy}"));
        assert_eq!(
            with.first().map(String::as_str),
            Some("envoy.filters.http.rbac"),
            "{with:?}"
        );
    }
}
