//! The proxy's own configuration: typed, validated forms of the Envoy resources weftd sends, and the
//! immutable [`Snapshot`] that requests read.
//!
//! Each resource is converted once, when it arrives (regexes compiled, header names parsed, endpoint sets
//! built); a conversion failure names the resource and the field and NACKs the whole response. A
//! [`Snapshot`] is then assembled from the stored per-type maps, sharing every unchanged part by `Arc`.

pub mod cluster;
pub mod headers;
pub mod listener;
pub mod route;

use crate::balance::EndpointSet;
use cluster::{Cluster, ClusterConfig, ClusterError, Discovery};
use listener::{Listener, ListenerError, RouteSource};
use route::{RouteConfig, RouteError};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;
use weft_xds::pb::envoy::config::core::v3::{address, socket_address::PortSpecifier, Address};
use weft_xds::{type_url, Any};

/// An address that cannot be used as a socket address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SocketAddressError {
    /// Not a socket address (pipe, internal address) or missing.
    #[error("not a socket address")]
    NotSocket,
    /// The host is not an IP literal (weft does not resolve names).
    #[error("{0:?} is not an IP address")]
    Ip(String),
    /// The port is missing, named or out of range.
    #[error("invalid port")]
    Port,
}

/// Converts an Envoy `Address` into a `SocketAddr`.
pub fn socket_addr(a: &Address) -> Result<SocketAddr, SocketAddressError> {
    let Some(address::Address::SocketAddress(sa)) = &a.address else {
        return Err(SocketAddressError::NotSocket);
    };
    let ip: IpAddr = sa
        .address
        .parse()
        .map_err(|_| SocketAddressError::Ip(sa.address.clone()))?;
    let port = match &sa.port_specifier {
        Some(PortSpecifier::PortValue(p)) => {
            u16::try_from(*p).map_err(|_| SocketAddressError::Port)?
        }
        _ => return Err(SocketAddressError::Port),
    };
    Ok(SocketAddr::new(ip, port))
}

/// A resource rejected on arrival; its `Display` chain (see [`ConfigError::chain`]) is the NACK message.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The bytes do not decode as the type.
    #[error("{kind} resource {index} does not decode")]
    Decode {
        /// `CDS`, `LDS`, …
        kind: &'static str,
        /// Position in the response.
        index: usize,
        /// prost's error.
        #[source]
        source: weft_xds::DecodeError,
    },
    /// The resource's type URL is not the response's.
    #[error("{kind} resource {index} has type {type_url}")]
    WrongType {
        /// `CDS`, `LDS`, …
        kind: &'static str,
        /// Position in the response.
        index: usize,
        /// The type it carried.
        type_url: String,
    },
    /// A resource has no name.
    #[error("{kind} resource {index} has no name")]
    NoName {
        /// `CDS`, `LDS`, …
        kind: &'static str,
        /// Position in the response.
        index: usize,
    },
    /// A route configuration is invalid.
    #[error("route config {name:?}")]
    Route {
        /// Its name.
        name: String,
        /// What was wrong.
        #[source]
        source: RouteError,
    },
    /// A listener is invalid.
    #[error("listener {name:?}")]
    Listener {
        /// Its name.
        name: String,
        /// What was wrong.
        #[source]
        source: ListenerError,
    },
    /// A cluster is invalid.
    #[error("cluster {name:?}")]
    Cluster {
        /// Its name.
        name: String,
        /// What was wrong.
        #[source]
        source: ClusterError,
    },
    /// A load assignment is invalid.
    #[error("cluster load assignment {name:?}")]
    Endpoints {
        /// Its cluster name.
        name: String,
        /// What was wrong.
        #[source]
        source: ClusterError,
    },
    /// The response's type is not one weft subscribes to.
    #[error("unexpected type {0}")]
    UnknownType(String),
    /// A delta `Resource` envelope carries no resource (weft does not use TTL heartbeats).
    #[error("{kind} resource {name:?} has no body")]
    NoBody {
        /// `CDS`, `LDS`, …
        kind: &'static str,
        /// The envelope's name.
        name: String,
    },
    /// A delta `Resource` envelope's name is not the name of the resource inside it.
    #[error("{kind} resource {name:?} holds a resource named {inner:?}")]
    NameMismatch {
        /// `CDS`, `LDS`, …
        kind: &'static str,
        /// The envelope's name.
        name: String,
        /// The name inside the resource.
        inner: String,
    },
}

impl ConfigError {
    /// The error and all its causes joined with `": "`, for NACK messages and logs.
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut cur = std::error::Error::source(self);
        while let Some(e) = cur {
            s.push_str(": ");
            s.push_str(&e.to_string());
            cur = e.source();
        }
        s
    }
}

/// A resource as received: its raw form (for `/config_dump`), version, arrival time and converted value.
#[derive(Debug)]
pub struct Stored<T> {
    /// The `Any` received.
    pub raw: Any,
    /// `version_info` of the response that carried it.
    pub version: String,
    /// When it was applied.
    pub last_updated: SystemTime,
    /// The converted form.
    pub value: T,
}

/// Everything applied so far, per type, by resource name.
#[derive(Debug, Default, Clone)]
pub struct Resources {
    /// CDS.
    pub clusters: BTreeMap<String, Arc<Stored<ClusterConfig>>>,
    /// EDS, by cluster name.
    pub endpoints: BTreeMap<String, Arc<Stored<Arc<EndpointSet>>>>,
    /// LDS.
    pub listeners: BTreeMap<String, Arc<Stored<Listener>>>,
    /// RDS.
    pub routes: BTreeMap<String, Arc<Stored<Arc<RouteConfig>>>>,
    /// The `version_info` last applied, by type URL.
    pub versions: BTreeMap<String, String>,
}

/// A converted resource with its name.
pub type Converted<T> = (String, T);

fn decode_any<M: prost::Message + Default>(
    kind: &'static str,
    expected: &str,
    index: usize,
    any: &Any,
) -> Result<M, ConfigError> {
    if any.type_url != expected {
        return Err(ConfigError::WrongType {
            kind,
            index,
            type_url: any.type_url.clone(),
        });
    }
    weft_xds::unpack(any).map_err(|source| ConfigError::Decode {
        kind,
        index,
        source,
    })
}

fn named(kind: &'static str, index: usize, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        Err(ConfigError::NoName { kind, index })
    } else {
        Ok(())
    }
}

/// Converts one CDS resource.
pub fn convert_cluster(index: usize, any: &Any) -> Result<Converted<ClusterConfig>, ConfigError> {
    use weft_xds::pb::envoy::config::cluster::v3::Cluster as XdsCluster;
    let c: XdsCluster = decode_any("CDS", type_url::CLUSTER, index, any)?;
    named("CDS", index, &c.name)?;
    let v = ClusterConfig::try_from(&c).map_err(|source| ConfigError::Cluster {
        name: c.name.clone(),
        source,
    })?;
    Ok((c.name, v))
}

/// Converts one EDS resource.
pub fn convert_endpoints(
    index: usize,
    any: &Any,
) -> Result<Converted<Arc<EndpointSet>>, ConfigError> {
    use weft_xds::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    let la: ClusterLoadAssignment = decode_any("EDS", type_url::ENDPOINT, index, any)?;
    named("EDS", index, &la.cluster_name)?;
    let eps = cluster::endpoints(&la).map_err(|source| ConfigError::Endpoints {
        name: la.cluster_name.clone(),
        source,
    })?;
    Ok((la.cluster_name, Arc::new(EndpointSet::with_sidecars(eps))))
}

/// Converts one LDS resource.
pub fn convert_listener(index: usize, any: &Any) -> Result<Converted<Listener>, ConfigError> {
    use weft_xds::pb::envoy::config::listener::v3::Listener as XdsListener;
    let l: XdsListener = decode_any("LDS", type_url::LISTENER, index, any)?;
    named("LDS", index, &l.name)?;
    let v = Listener::try_from(&l).map_err(|source| ConfigError::Listener {
        name: l.name.clone(),
        source,
    })?;
    Ok((l.name, v))
}

/// Converts one RDS resource.
pub fn convert_route(index: usize, any: &Any) -> Result<Converted<Arc<RouteConfig>>, ConfigError> {
    use weft_xds::pb::envoy::config::route::v3::RouteConfiguration;
    let rc: RouteConfiguration = decode_any("RDS", type_url::ROUTE, index, any)?;
    named("RDS", index, &rc.name)?;
    let v = RouteConfig::try_from(&rc).map_err(|source| ConfigError::Route {
        name: rc.name.clone(),
        source,
    })?;
    Ok((rc.name, Arc::new(v)))
}

/// A hash map for the lookups every request makes (listener, route table, cluster, domain): foldhash
/// instead of std's SipHash, which was about 870 of the proxy's 34,000 instructions per HTTP/1.1 request
/// (callgrind, `bench/instructions`). Keys come from the control plane, so lookups with a client's
/// string reach at most the one bucket the string hashes to: no flooding to fear.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The configuration requests read: immutable, swapped whole.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Listeners by name.
    pub listeners: FastMap<String, Arc<Stored<Listener>>>,
    /// The route tables of the virtual outbound listeners (`0.0.0.0_<port>`), by port: resolved when the
    /// snapshot is built, so that a request makes one lookup where it made two (the listener, then its
    /// table by name: about 110 instructions for the second, `bench/instructions`).
    pub outbound_routes_by_port: FastMap<u16, Arc<RouteConfig>>,
    /// The access logs, tracing and metric overrides of the virtual outbound listeners that have any,
    /// by port.
    pub outbound_telemetry: FastMap<u16, ListenerTelemetry>,
    /// Route tables by name.
    pub routes: FastMap<String, Arc<RouteConfig>>,
    /// Clusters by name, each with its current endpoints.
    pub clusters: FastMap<String, Arc<Cluster>>,
    /// The stored resources, for `/config_dump`.
    pub resources: Resources,
}

/// A listener's per-request telemetry beyond the standard metrics: its access log, its tracing and its
/// metric overrides.
#[derive(Debug, Clone, Default)]
pub struct ListenerTelemetry {
    /// The access log.
    pub access_log: Option<Arc<crate::telemetry::access_log::AccessLog>>,
    /// The tracing.
    pub tracing: Option<Arc<crate::telemetry::spans::Tracing>>,
    /// The metric overrides.
    pub stats: Option<Arc<crate::telemetry::overrides::Overrides>>,
}

/// The route table `listener` uses among `routes`, if it has one.
fn route_table_in(
    routes: &FastMap<String, Arc<RouteConfig>>,
    listener: &Listener,
) -> Option<Arc<RouteConfig>> {
    match &listener.routes {
        RouteSource::Rds(name) => routes.get(name).cloned(),
        RouteSource::Inline(rc) => Some(rc.clone()),
        RouteSource::Tcp(_) | RouteSource::None => None,
    }
}

impl Snapshot {
    /// Assembles a snapshot from the stored resources. Every resource was validated when it arrived, so
    /// this cannot fail; a cluster without a load assignment yet gets an empty endpoint set.
    pub fn build(resources: Resources) -> Snapshot {
        Snapshot::build_with(resources, None)
    }

    /// As `build`, with the clusters that speak mutual TLS given their settings from `mesh` (left
    /// plaintext without it: a proxy with no identity has no certificate to present).
    pub fn build_with(resources: Resources, mesh: Option<&Arc<crate::tls::MeshTls>>) -> Snapshot {
        let listeners: FastMap<_, _> = resources
            .listeners
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let routes: FastMap<String, Arc<RouteConfig>> = resources
            .routes
            .iter()
            .map(|(k, v)| (k.clone(), v.value.clone()))
            .collect();
        let mut outbound_routes_by_port = FastMap::default();
        let mut outbound_telemetry = FastMap::default();
        for l in resources.listeners.values() {
            if let (true, Some(addr)) = (l.value.is_virtual_outbound(), l.value.address) {
                let v = &l.value;
                if v.access_log.is_some() || v.tracing.is_some() || v.stats.is_some() {
                    let t = ListenerTelemetry {
                        access_log: v.access_log.clone(),
                        tracing: v.tracing.clone(),
                        stats: v.stats.clone(),
                    };
                    outbound_telemetry.insert(addr.port(), t);
                }
                if let Some(table) = route_table_in(&routes, &l.value) {
                    outbound_routes_by_port.insert(addr.port(), table);
                }
            }
        }
        let empty = Arc::new(EndpointSet::default());
        let clusters = resources
            .clusters
            .iter()
            .map(|(name, c)| {
                let endpoints = match &c.value.discovery {
                    Discovery::Static(set) => set.clone(),
                    Discovery::Eds(service) => resources
                        .endpoints
                        .get(service)
                        .map(|e| e.value.clone())
                        .unwrap_or_else(|| empty.clone()),
                };
                let tls = match (&c.value.tls, mesh) {
                    (crate::tls::Upstream::Mesh { sans, sni, always }, Some(mesh)) => {
                        Some((mesh.client(sans.clone(), sni), *always))
                    }
                    (crate::tls::Upstream::Files(f), _) => Some((f.tls.clone(), true)),
                    _ => None,
                };
                let policy = c.value.policy.clone();
                let table = match policy.lb {
                    crate::balance::Lb::Hash(kind) => Some(endpoints.table(kind)),
                    _ => None,
                };
                let cluster = Cluster {
                    name: name.clone(),
                    endpoints,
                    connect_timeout: c.value.connect_timeout,
                    service: crate::telemetry::Service::of_cluster(name).map(Arc::new),
                    tls,
                    policy,
                    table,
                };
                (name.clone(), Arc::new(cluster))
            })
            .collect();
        Snapshot {
            listeners,
            outbound_routes_by_port,
            outbound_telemetry,
            routes,
            clusters,
            resources,
        }
    }

    /// The route table a listener uses, if it has one in this snapshot.
    pub fn route_table(&self, listener: &Listener) -> Option<Arc<RouteConfig>> {
        route_table_in(&self.routes, listener)
    }

    /// Names of the EDS services the clusters wait for, sorted.
    pub fn eds_names(resources: &Resources) -> Vec<String> {
        let mut v: Vec<String> = resources
            .clusters
            .values()
            .filter_map(|c| match &c.value.discovery {
                Discovery::Eds(s) => Some(s.clone()),
                Discovery::Static(_) => None,
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Names of the route tables the listeners reference through RDS, sorted.
    pub fn rds_names(resources: &Resources) -> Vec<String> {
        let mut v: Vec<String> = resources
            .listeners
            .values()
            .filter_map(|l| match &l.value.routes {
                RouteSource::Rds(n) => Some(n.clone()),
                _ => None,
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_xds::pack;
    use weft_xds::pb::envoy::config::cluster::v3::{cluster, Cluster as XdsCluster};
    use weft_xds::pb::envoy::config::core::v3::SocketAddress;
    use weft_xds::pb::envoy::config::endpoint::v3::{
        lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint,
        LocalityLbEndpoints,
    };

    fn sock(ip: &str, port: u32) -> Address {
        Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }
    }

    fn cla(name: &str, addrs: Vec<Address>) -> Any {
        pack(
            type_url::ENDPOINT,
            &ClusterLoadAssignment {
                cluster_name: name.into(),
                endpoints: vec![LocalityLbEndpoints {
                    lb_endpoints: addrs
                        .into_iter()
                        .map(|a| LbEndpoint {
                            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                                address: Some(a),
                                ..Default::default()
                            })),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        )
    }

    #[test]
    fn conversion_errors_name_the_resource_and_field() {
        let logical_dns = pack(
            type_url::CLUSTER,
            &XdsCluster {
                name: "dns".into(),
                cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                    cluster::DiscoveryType::LogicalDns as i32,
                )),
                ..Default::default()
            },
        );
        let cases: Vec<(&str, Result<(), ConfigError>, &str)> = vec![
            (
                "unsupported cluster type",
                convert_cluster(0, &logical_dns).map(|_| ()),
                "cluster \"dns\": unsupported cluster type LOGICAL_DNS",
            ),
            (
                "hostname endpoint",
                convert_endpoints(0, &cla("c", vec![sock("reviews", 9080)])).map(|_| ()),
                "cluster load assignment \"c\": endpoint 0.0: \"reviews\" is not an IP address",
            ),
            (
                "port out of range",
                convert_endpoints(0, &cla("c", vec![sock("10.0.0.1", 70000)])).map(|_| ()),
                "cluster load assignment \"c\": endpoint 0.0: invalid port",
            ),
            (
                "garbage bytes",
                convert_route(
                    2,
                    &Any {
                        type_url: type_url::ROUTE.into(),
                        value: vec![0xff, 0xff],
                    },
                )
                .map(|_| ()),
                "RDS resource 2 does not decode: resource of type type.googleapis.com/envoy.config.route.v3.RouteConfiguration does not decode",
            ),
            (
                "wrong type",
                convert_listener(1, &logical_dns).map(|_| ()),
                "LDS resource 1 has type type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ),
        ];
        for (name, result, want) in cases {
            let err = result.expect_err(name);
            assert!(
                err.chain().starts_with(want),
                "case {name}: {}",
                err.chain()
            );
        }
    }

    fn stored<T>(raw: Any, value: T) -> Arc<Stored<T>> {
        Arc::new(Stored {
            raw,
            version: "1".into(),
            last_updated: SystemTime::now(),
            value,
        })
    }

    #[test]
    fn eds_cluster_without_assignment_has_no_endpoints_until_eds_arrives() {
        let c = pack(
            type_url::CLUSTER,
            &XdsCluster {
                name: "outbound|9080||reviews".into(),
                cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                    cluster::DiscoveryType::Eds as i32,
                )),
                ..Default::default()
            },
        );
        let (name, value) = convert_cluster(0, &c).expect("valid");
        let mut r = Resources::default();
        r.clusters.insert(name.clone(), stored(c, value));
        assert_eq!(Snapshot::eds_names(&r), vec![name.clone()]);
        let snap = Snapshot::build(r.clone());
        assert!(snap.clusters[&name].endpoints.is_empty());

        let e = cla(&name, vec![sock("10.0.0.1", 9080)]);
        let (ename, set) = convert_endpoints(0, &e).expect("valid");
        r.endpoints.insert(ename, stored(e, set));
        let snap = Snapshot::build(r);
        assert_eq!(
            snap.clusters[&name].endpoints.endpoints(),
            &["10.0.0.1:9080".parse::<SocketAddr>().expect("addr")]
        );
    }
}
