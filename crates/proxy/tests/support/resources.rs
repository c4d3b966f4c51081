//! Builders for the Envoy resources weftd sends (see crates/xds/README.md), for tests.

use std::net::SocketAddr;
use weft_xds::pb::envoy::config::cluster::v3::{cluster, Cluster};
use weft_xds::pb::envoy::config::core::v3::{
    address, socket_address::PortSpecifier, Address, HeaderValue, HeaderValueOption, SocketAddress,
    TrafficDirection,
};
use weft_xds::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use weft_xds::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use weft_xds::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, route_match::PathSpecifier, weighted_cluster,
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
};
use weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager, Rds,
};
use weft_xds::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use weft_xds::pb::google::protobuf::{BoolValue, Duration as PbDuration, UInt32Value};
use weft_xds::{pack, type_url, Any};

pub fn addr(a: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: a.ip().to_string(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(a.port()))),
            ..Default::default()
        })),
    }
}

pub fn dur_ms(ms: u64) -> PbDuration {
    PbDuration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

pub fn eds_cluster(name: &str) -> Any {
    pack(
        type_url::CLUSTER,
        &Cluster {
            name: name.into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32,
            )),
            eds_cluster_config: Some(cluster::EdsClusterConfig {
                service_name: name.into(),
                ..Default::default()
            }),
            connect_timeout: Some(dur_ms(1000)),
            ..Default::default()
        },
    )
}

/// A cluster of a type weft refuses (`LOGICAL_DNS`), to provoke a NACK.
pub fn logical_dns_cluster(name: &str) -> Any {
    pack(
        type_url::CLUSTER,
        &Cluster {
            name: name.into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::LogicalDns as i32,
            )),
            ..Default::default()
        },
    )
}

fn cla_msg(name: &str, eps: &[SocketAddr]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: eps
                .iter()
                .map(|a| LbEndpoint {
                    host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                        address: Some(addr(*a)),
                        ..Default::default()
                    })),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub fn cla(name: &str, eps: &[SocketAddr]) -> (String, Any) {
    (
        name.to_string(),
        pack(type_url::ENDPOINT, &cla_msg(name, eps)),
    )
}

pub fn static_cluster(name: &str, eps: &[SocketAddr]) -> Any {
    pack(
        type_url::CLUSTER,
        &Cluster {
            name: name.into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Static as i32,
            )),
            load_assignment: Some(cla_msg(name, eps)),
            ..Default::default()
        },
    )
}

/// A listener with one filter chain of one network filter (`bind = false`: virtual).
fn listener(name: &str, a: SocketAddr, bind: bool, dir: TrafficDirection, filter: Filter) -> Any {
    pack(
        type_url::LISTENER,
        &Listener {
            name: name.into(),
            address: Some(addr(a)),
            bind_to_port: (!bind).then_some(BoolValue { value: false }),
            traffic_direction: dir as i32,
            filter_chains: vec![FilterChain {
                filters: vec![filter],
                ..Default::default()
            }],
            ..Default::default()
        },
    )
}

fn hcm_listener(
    name: &str,
    a: SocketAddr,
    bind: bool,
    dir: TrafficDirection,
    routes: RouteSpecifier,
) -> Any {
    let hcm = HttpConnectionManager {
        stat_prefix: name.into(),
        route_specifier: Some(routes),
        ..Default::default()
    };
    let filter = Filter {
        name: weft_xds::filter_name::HTTP_CONNECTION_MANAGER.into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack(
            type_url::HTTP_CONNECTION_MANAGER,
            &hcm,
        ))),
    };
    listener(name, a, bind, dir, filter)
}

/// The virtual outbound listener `0.0.0.0_<port>` using RDS `<port>`.
pub fn outbound_listener(port: u16) -> Any {
    hcm_listener(
        &format!("0.0.0.0_{port}"),
        SocketAddr::from(([0, 0, 0, 0], port)),
        false,
        TrafficDirection::Outbound,
        RouteSpecifier::Rds(Rds {
            route_config_name: port.to_string(),
            ..Default::default()
        }),
    )
}

/// A gateway's listener (what weftd writes for a Gateway server): bound, outbound, RDS `rds`, with
/// `tls` as its filter chain's transport socket.
#[allow(dead_code)] // gateway.rs only
pub fn gateway_listener(
    name: &str,
    a: SocketAddr,
    rds: &str,
    tls: Option<weft_xds::pb::envoy::config::core::v3::TransportSocket>,
) -> Any {
    let any = hcm_listener(
        name,
        a,
        true,
        TrafficDirection::Outbound,
        RouteSpecifier::Rds(Rds {
            route_config_name: rds.into(),
            ..Default::default()
        }),
    );
    let mut l: Listener = weft_xds::unpack(&any).expect("listener");
    l.filter_chains[0].transport_socket = tls;
    pack(type_url::LISTENER, &l)
}

/// A bound listener proxying opaque TCP to `cluster` (`tcp_proxy`).
pub fn tcp_listener(name: &str, a: SocketAddr, dir: TrafficDirection, cluster: &str) -> Any {
    use weft_xds::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
        tcp_proxy::ClusterSpecifier, TcpProxy,
    };
    let tcp = TcpProxy {
        stat_prefix: cluster.into(),
        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
        ..Default::default()
    };
    let filter = Filter {
        name: weft_xds::filter_name::TCP_PROXY.into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack(
            type_url::TCP_PROXY,
            &tcp,
        ))),
    };
    listener(name, a, true, dir, filter)
}

/// An inbound listener with an inline table routing everything to `cluster`.
pub fn inbound_listener(name: &str, a: SocketAddr, cluster: &str) -> Any {
    let rc = RouteConfiguration {
        name: cluster.into(),
        virtual_hosts: vec![vhost("inbound", &["*"], vec![route_to("/", cluster)])],
        ..Default::default()
    };
    hcm_listener(
        name,
        a,
        true,
        TrafficDirection::Inbound,
        RouteSpecifier::RouteConfig(rc),
    )
}

pub fn route_to(prefix: &str, cluster: &str) -> Route {
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix(prefix.into())),
            ..Default::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
            timeout: Some(dur_ms(0)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

pub fn weighted(prefix: &str, clusters: &[(&str, u32)]) -> Route {
    let mut r = route_to(prefix, "");
    if let Some(Action::Route(a)) = r.action.as_mut() {
        a.cluster_specifier = Some(ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: clusters
                .iter()
                .map(|(n, w)| weighted_cluster::ClusterWeight {
                    name: n.to_string(),
                    weight: Some(UInt32Value { value: *w }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }));
    }
    r
}

pub fn action(r: &mut Route) -> &mut RouteAction {
    match r.action.as_mut() {
        Some(Action::Route(a)) => a,
        _ => panic!("route has no route action"),
    }
}

pub fn header(k: &str, v: &str, append_action: i32) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        }),
        append_action,
        ..Default::default()
    }
}

pub fn vhost(name: &str, domains: &[&str], routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
        ..Default::default()
    }
}

pub fn route_config(name: &str, vhosts: Vec<VirtualHost>) -> (String, Any) {
    (
        name.to_string(),
        pack(
            type_url::ROUTE,
            &RouteConfiguration {
                name: name.into(),
                virtual_hosts: vhosts,
                ..Default::default()
            },
        ),
    )
}

/// A case-sensitive string matcher for exactly `s`.
pub fn exact(s: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Exact(s.into())),
        ignore_case: false,
    }
}

/// A case-sensitive string matcher for what starts with `s`.
pub fn prefix(s: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Prefix(s.into())),
        ignore_case: false,
    }
}
