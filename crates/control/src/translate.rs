//! Istio model → Envoy xDS resources for one proxy, following Istio's naming (see `crates/xds/README.md`).

mod gateway;
pub mod mtls;
pub mod policy;
mod route;
mod tcp;
pub mod telemetry;

use crate::model::Model;
use crate::registry::Service;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use tracing::warn;
use weft_api::mesh::PathNormalizationMode;
use weft_api::networking::service_entry::ServicePort;
use weft_api::networking::sidecar::EgressHost;
use weft_api::networking::virtual_service::l4::Connection;
use weft_xds::node::ProxyIdentity;
use weft_xds::pb::envoy::config::accesslog::v3::AccessLog as XAccessLog;
use weft_xds::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy,
};
use weft_xds::pb::envoy::config::cluster::v3::Cluster;
use weft_xds::pb::envoy::config::core::v3::address::Address as AddressKind;
use weft_xds::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use weft_xds::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use weft_xds::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, Metadata, SocketAddress,
    TrafficDirection,
};
use weft_xds::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use weft_xds::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use weft_xds::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use weft_xds::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use weft_xds::pb::envoy::extensions::filters::http::router::v3::Router;
use weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::{CodecType, RouteSpecifier, Tracing},
    http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use weft_xds::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    tcp_proxy::ClusterSpecifier as TcpClusterSpecifier, TcpProxy,
};
use weft_xds::pb::google::protobuf::{BoolValue, UInt32Value};
use weft_xds::{filter_name, pack, type_url, Any};

pub use route::{encode_route_configuration, route_configuration, serves_http_port, virtual_host};

/// Encodes one virtual host (what [`outbound_except`] asks its caller for, per service and port).
pub fn encode_virtual_host(
    model: &Model,
    svc: &Service,
    proxy_ns: &str,
    port: u32,
) -> std::sync::Arc<[u8]> {
    use prost::Message;
    virtual_host(model, svc, proxy_ns, port)
        .encode_to_vec()
        .into()
}

/// Every resource one proxy should hold, by type URL, each map keyed by resource name.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProxyResources {
    /// By type URL, then name.
    pub by_type: BTreeMap<&'static str, BTreeMap<String, Any>>,
}

impl ProxyResources {
    /// Resources of one type.
    pub fn of(&self, type_url: &str) -> Option<&BTreeMap<String, Any>> {
        self.by_type.get(type_url)
    }
}

/// Istio's outbound cluster name.
pub fn outbound_cluster_name(port: u32, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

/// Istio's inbound cluster name.
pub fn inbound_cluster_name(port: u32) -> String {
    format!("inbound|{port}||")
}

pub(crate) fn duration(d: std::time::Duration) -> weft_xds::pb::google::protobuf::Duration {
    weft_xds::pb::google::protobuf::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn socket_address(ip: &str, port: u32) -> Address {
    Address {
        address: Some(AddressKind::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

pub(crate) fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

/// What a proxy's outbound config depends on besides the model: its namespace (short names resolve in
/// it) and the services it may see. Proxies with equal scopes get identical outbound resources, so weftd
/// translates once per scope, not once per proxy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    /// The proxy's namespace.
    pub namespace: String,
    /// The Sidecar resource (`namespace/name`) limiting what the proxy sees; `None` sees every service.
    pub sidecar: Option<String>,
    /// The workload-level Telemetry (`namespace/name`) of the proxy, which shapes its outbound
    /// listeners ([`crate::telemetry::Chain`]; the mesh's and namespace's follow from the namespace).
    pub telemetry: Option<String>,
    /// A gateway's scope: no sidecar listeners or route tables (its listeners are its Gateways'
    /// servers, [`gateway`]), only the clusters and load assignments.
    pub router: bool,
}

impl Scope {
    /// The scope of `proxy` under `model`.
    pub fn of(model: &Model, proxy: &ProxyIdentity) -> Scope {
        Scope {
            namespace: proxy.namespace.clone(),
            // Istio applies Sidecar resources to sidecars only.
            sidecar: model
                .sidecar_for(&proxy.namespace, &proxy.labels)
                .filter(|_| !proxy.router)
                .map(|r| format!("{}/{}", r.metadata.namespace, r.metadata.name)),
            telemetry: crate::telemetry::Chain::workload_of(model, &proxy.namespace, &proxy.labels),
            router: proxy.router,
        }
    }

    /// Whether a proxy of this scope sees a service: the Sidecar's egress hosts parsed once, then a
    /// cheap test per service.
    pub fn visibility<'a>(&'a self, model: &'a Model) -> impl Fn(&Service) -> bool + 'a {
        let hosts: Option<Vec<weft_api::networking::sidecar::EgressHost>> = self
            .sidecar
            .as_ref()
            .and_then(|id| model.sidecars.get(id))
            .and_then(|r| r.as_sidecar())
            .map(|sc| sc.egress_hosts().collect());
        move |svc: &Service| match &hosts {
            None => true,
            Some(h) => h
                .iter()
                .any(|e| e.allows(&self.namespace, &svc.namespace, &svc.hostname)),
        }
    }
}

/// Translates the model for one proxy: the outbound resources of its scope plus its own ones (inbound,
/// and the listeners of its Sidecar's TCP egress ports).
pub fn for_proxy(model: &Model, proxy: &ProxyIdentity) -> ProxyResources {
    let scope = Scope::of(model, proxy);
    let mut out = outbound(model, &scope);
    for (t, m) in own(model, proxy, &egress_ports(model, &scope)).by_type {
        out.by_type.entry(t).or_default().extend(m);
    }
    out
}

/// One encoded `VirtualHost` message.
pub type EncodedVirtualHost = std::sync::Arc<[u8]>;

/// The outbound resources every proxy of `scope` holds (the bulk of a proxy's config).
pub fn outbound(model: &Model, scope: &Scope) -> ProxyResources {
    let mut out = outbound_backends(model, scope, &|_| false);
    let front = outbound_frontends(
        model,
        scope,
        &mut |svc, port| encode_virtual_host(model, svc, &scope.namespace, port),
        &mut |_, _| false,
    );
    out.by_type.extend(front.by_type);
    out
}

impl Scope {
    /// The scope whose clusters and load assignments equal this one's. They depend only on which services
    /// are visible, not on the proxy's namespace (virtual-host domains do), so every scope without a
    /// Sidecar shares one set.
    pub fn backend_key(&self) -> Scope {
        match self.sidecar {
            None => Scope {
                namespace: String::new(),
                sidecar: None,
                telemetry: None,
                router: false,
            },
            Some(_) => Scope {
                telemetry: None,
                router: false,
                ..self.clone()
            },
        }
    }
}

fn visible_services<'a>(model: &'a Model, scope: &'a Scope) -> Vec<&'a Service> {
    let sees = scope.visibility(model);
    model
        .services
        .values()
        .map(|s| &**s)
        .filter(|s| sees(s))
        .collect()
}

/// Whether a service port gets outbound clusters and load assignments: HTTP and TCP ports do; other
/// protocols (TLS, MONGO, …) are not served yet.
pub fn has_clusters(port: &ServicePort) -> bool {
    port.is_http() || port.is_tcp()
}

/// The names of the outbound clusters (and their load assignments) of one service.
pub fn cluster_names(model: &Model, svc: &Service) -> Vec<String> {
    let subsets = subsets(model, svc);
    svc.ports
        .iter()
        .filter(|p| has_clusters(p))
        .flat_map(|p| {
            std::iter::once(outbound_cluster_name(p.number, "", &svc.hostname)).chain(
                subsets
                    .iter()
                    .map(|s| outbound_cluster_name(p.number, s, &svc.hostname)),
            )
        })
        .collect()
}

/// The clusters and load assignments of the services `scope` sees, except those of the services `reuse`
/// picks (the caller has them from a previous translation of the same inputs).
pub fn outbound_backends(
    model: &Model,
    scope: &Scope,
    reuse: &dyn Fn(&Service) -> bool,
) -> ProxyResources {
    let fresh: Vec<&Service> = visible_services(model, scope)
        .into_iter()
        .filter(|s| !reuse(s))
        .collect();
    let mut out = ProxyResources::default();
    let clusters = out.by_type.entry(type_url::CLUSTER).or_default();
    for (name, c) in outbound_clusters(model, &fresh) {
        clusters.insert(name, pack(type_url::CLUSTER, &c));
    }
    let endpoints = out.by_type.entry(type_url::ENDPOINT).or_default();
    for cla in endpoints_for(model, &fresh) {
        endpoints.insert(cla.cluster_name.clone(), pack(type_url::ENDPOINT, &cla));
    }
    out
}

/// The listeners and route configurations of `scope`. Each route configuration is assembled from
/// `vhost(service, port)`, the encoded virtual host, which the caller may take from a previous
/// translation; it is left out when `has_routes(port, virtual hosts)` says the caller already holds that
/// table built from those same virtual hosts.
pub fn outbound_frontends(
    model: &Model,
    scope: &Scope,
    vhost: &mut dyn FnMut(&Service, u32) -> EncodedVirtualHost,
    has_routes: &mut dyn FnMut(u32, &[EncodedVirtualHost]) -> bool,
) -> ProxyResources {
    let mut out = ProxyResources::default();
    if scope.router {
        return out;
    }
    let visible = visible_services(model, scope);
    let ports = http_ports(&visible);
    let listeners = out.by_type.entry(type_url::LISTENER).or_default();
    for l in outbound_listeners(&ports, model, scope) {
        listeners.insert(l.name.clone(), pack(type_url::LISTENER, &l));
    }
    let routes = out.by_type.entry(type_url::ROUTE).or_default();
    for &port in &ports {
        let hosts: Vec<EncodedVirtualHost> = visible
            .iter()
            .filter(|s| serves_http_port(s, port))
            .map(|s| vhost(s, port))
            .collect();
        if has_routes(port, &hosts) {
            continue;
        }
        let value = encode_route_configuration(port, hosts.into_iter());
        routes.insert(
            port.to_string(),
            Any {
                type_url: type_url::ROUTE.to_string(),
                value,
            },
        );
    }
    out
}

/// The resources only this proxy holds: its inbound listeners and the clusters to its application, and
/// the listeners of its Sidecar's TCP egress ports (`egress`, what [`egress_ports`] gives for its scope),
/// which need the proxy's own IP.
pub fn own(model: &Model, proxy: &ProxyIdentity, egress: &[EgressPort]) -> ProxyResources {
    let mut out = ProxyResources::default();
    let clusters = out.by_type.entry(type_url::CLUSTER).or_default();
    for (name, c) in inbound_clusters(model, proxy) {
        clusters.insert(name, pack(type_url::CLUSTER, &c));
    }
    let listeners = out.by_type.entry(type_url::LISTENER).or_default();
    for l in inbound_listeners(model, proxy)
        .into_iter()
        .chain(egress_listeners(model, proxy, egress))
    {
        listeners.insert(l.name.clone(), pack(type_url::LISTENER, &l));
    }
    if proxy.router {
        let (gw_listeners, gw_routes) = gateway::translate(model, proxy);
        for l in gw_listeners {
            listeners.insert(l.name.clone(), pack(type_url::LISTENER, &l));
        }
        let routes = out.by_type.entry(type_url::ROUTE).or_default();
        for r in gw_routes {
            routes.insert(r.name.clone(), pack(type_url::ROUTE, &r));
        }
    }
    out
}

/// One TCP listener a Sidecar `egress` entry asks for, resolved for a scope: all but the address when
/// `bind` is absent, which is each proxy's own IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPort {
    /// The Sidecar (`namespace/name`), for logs.
    pub sidecar: String,
    /// The listener's port.
    pub port: u32,
    /// `bind`; `None` binds the proxy's own IP.
    pub bind: Option<IpAddr>,
    /// `outbound|<port>||<fqdn>` of the service the entry's hosts select with that port.
    pub cluster: String,
    /// That service's FQDN (its VirtualService's `tcp` rules say where connections go).
    pub host: String,
}

/// The TCP egress listeners of `scope`'s Sidecar: for each `egress` entry with a TCP `port`, the
/// cluster of the first service (by hostname) that the entry's `hosts` select and that has a served
/// (HTTP or TCP) port of that number. An entry that selects no such service gets no listener and a
/// warning, as does one whose listener would take the name of an HTTP virtual listener
/// (`bind: 0.0.0.0` on a port some visible service serves as HTTP).
pub fn egress_ports(model: &Model, scope: &Scope) -> Vec<EgressPort> {
    let Some((id, sidecar)) = scope.sidecar.as_ref().and_then(|id| {
        model
            .sidecars
            .get(id)
            .and_then(|r| r.as_sidecar())
            .map(|sc| (id, sc))
    }) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in &sidecar.egress {
        let Some(port) = e.port.as_ref().filter(|p| p.is_tcp()) else {
            continue;
        };
        // The analyzer refuses a bind that is not an IP; skip rather than guess.
        let bind = match e.bind_ip() {
            None => None,
            Some(Ok(ip)) => Some(ip),
            Some(Err(_)) => continue,
        };
        let hosts: Vec<EgressHost> = e
            .hosts
            .iter()
            .filter_map(|h| EgressHost::parse(h))
            .collect();
        let selected = model.services.values().find(|svc| {
            hosts
                .iter()
                .any(|h| h.allows(&scope.namespace, &svc.namespace, &svc.hostname))
                && svc
                    .ports
                    .iter()
                    .any(|p| p.number == port.number && has_clusters(p))
        });
        let Some(svc) = selected else {
            warn!(
                sidecar = %id,
                namespace = %scope.namespace,
                port = port.number,
                "no service the egress entry's hosts select has this port; no listener"
            );
            continue;
        };
        if bind.is_some_and(|ip| ip == IpAddr::from([0, 0, 0, 0])) {
            let sees = scope.visibility(model);
            let http = model
                .services
                .values()
                .any(|s| sees(s) && route::serves_http_port(s, port.number));
            if http {
                warn!(
                    sidecar = %id,
                    namespace = %scope.namespace,
                    port = port.number,
                    "egress listener 0.0.0.0_<port> would replace the HTTP virtual listener of that port; no listener"
                );
                continue;
            }
        }
        out.push(EgressPort {
            sidecar: id.clone(),
            port: port.number,
            bind,
            cluster: outbound_cluster_name(port.number, "", &svc.hostname),
            host: svc.hostname.clone(),
        });
    }
    out
}

/// The HTTP service ports among `services`: one outbound virtual listener and route config each.
fn http_ports(services: &[&Service]) -> BTreeSet<u32> {
    services
        .iter()
        .flat_map(|s| s.ports.iter().filter(|p| p.is_http()).map(|p| p.number))
        .collect()
}

/// Subset names a DestinationRule defines for a service.
fn subsets(model: &Model, svc: &Service) -> Vec<String> {
    model
        .destination_rules
        .get(&svc.hostname)
        .and_then(|r| r.as_destination_rule())
        .map(|dr| dr.subsets.iter().map(|s| s.name.clone()).collect())
        .unwrap_or_default()
}

fn outbound_clusters(model: &Model, services: &[&Service]) -> Vec<(String, Cluster)> {
    let mut out = Vec::new();
    let peers = mtls::PeerPolicies::of(model);
    for &svc in services {
        for port in svc.ports.iter().filter(|p| has_clusters(p)) {
            for subset in std::iter::once(String::new()).chain(subsets(model, svc)) {
                let name = outbound_cluster_name(port.number, &subset, &svc.hostname);
                let policy = policy::of_model(model, &svc.hostname, port.number, &subset);
                let timeout = policy
                    .pool
                    .and_then(|cp| cp.tcp.as_ref())
                    .and_then(|tcp| tcp.connect_timeout)
                    .unwrap_or(model.mesh.connect_timeout)
                    .get();
                let mut c = Cluster {
                    name: name.clone(),
                    cluster_discovery_type: Some(ClusterDiscoveryType::Type(
                        DiscoveryType::Eds as i32,
                    )),
                    eds_cluster_config: Some(EdsClusterConfig {
                        eds_config: Some(ads()),
                        service_name: name.clone(),
                    }),
                    connect_timeout: Some(duration(timeout)),
                    lb_policy: LbPolicy::RoundRobin as i32,
                    ..Default::default()
                };
                policy::apply(&policy, port.is_http(), &mut c);
                if !mtls::secure_cluster(model, &peers, svc, port, &subset, &mut c) {
                    continue;
                }
                out.push((name, c));
            }
        }
    }
    out
}

fn inbound_clusters(model: &Model, proxy: &ProxyIdentity) -> Vec<(String, Cluster)> {
    let mut out = Vec::new();
    for &(svc_port, app_port) in &proxy.inbound_ports {
        let name = inbound_cluster_name(svc_port.into());
        let c = Cluster {
            name: name.clone(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
            connect_timeout: Some(duration(model.mesh.connect_timeout.get())),
            lb_policy: LbPolicy::RoundRobin as i32,
            load_assignment: Some(load_assignment(
                &name,
                [(proxy.ip.as_str(), u32::from(app_port), None, None)],
            )),
            ..Default::default()
        };
        out.push((name, c));
    }
    out
}

/// A load assignment of endpoints (address, port, weight, metadata).
fn load_assignment<'a>(
    cluster: &str,
    endpoints: impl IntoIterator<Item = (&'a str, u32, Option<u32>, Option<Metadata>)>,
) -> ClusterLoadAssignment {
    let lb_endpoints = endpoints
        .into_iter()
        .map(|(ip, port, weight, metadata)| LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(socket_address(ip, port)),
                ..Default::default()
            })),
            load_balancing_weight: weight.map(|value| UInt32Value { value }),
            metadata,
            ..Default::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: cluster.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// One instance as an endpoint of a service port, marked when it has a sidecar (auto mTLS).
fn endpoint<'a>(
    i: &'a crate::registry::Instance,
    port: &ServicePort,
) -> (&'a str, u32, Option<u32>, Option<Metadata>) {
    (
        i.ip.as_str(),
        i.port_for(port),
        i.weight,
        mtls::endpoint_metadata(&i.labels),
    )
}

fn endpoints_for(model: &Model, services: &[&Service]) -> Vec<ClusterLoadAssignment> {
    let mut out = Vec::new();
    for &svc in services {
        for port in svc.ports.iter().filter(|p| has_clusters(p)) {
            let all = svc.instances.iter().map(|i| endpoint(i, port));
            out.push(load_assignment(
                &outbound_cluster_name(port.number, "", &svc.hostname),
                all,
            ));
            for subset in subsets(model, svc) {
                let Some(sel) = model.subset_labels(&svc.hostname, &subset) else {
                    continue;
                };
                let picked = svc
                    .instances
                    .iter()
                    .filter(|i| weft_api::networking::labels_match(sel, &i.labels))
                    .map(|i| endpoint(i, port));
                out.push(load_assignment(
                    &outbound_cluster_name(port.number, &subset, &svc.hostname),
                    picked,
                ));
            }
        }
    }
    out
}

/// The connection managers' access log, from MeshConfig as Istio reads it: `accessLogFile` (empty: none),
/// `accessLogEncoding` `TEXT` (default) or `JSON`, and `accessLogFormat` (a format string for text, a
/// JSON object of keys to format strings for JSON; empty: Istio's default).
pub fn access_logs(mesh: &weft_api::MeshConfig) -> Vec<XAccessLog> {
    let Some(path) = mesh.access_log_file.as_deref().filter(|p| !p.is_empty()) else {
        return Vec::new();
    };
    let json = mesh
        .access_log_encoding
        .as_deref()
        .is_some_and(|e| e.eq_ignore_ascii_case("JSON"));
    let custom = mesh.access_log_format.as_deref().filter(|f| !f.is_empty());
    vec![file_access_log(path, json, custom)]
}

/// One file access logger: `path`, text or `json` lines, in the `custom` format (a format string for
/// text, a JSON object of keys to format strings for JSON) or Istio's default.
pub(crate) fn file_access_log(path: &str, json: bool, custom: Option<&str>) -> XAccessLog {
    use weft_xds::pb::envoy::config::core::v3::{
        data_source, substitution_format_string, DataSource, SubstitutionFormatString,
    };
    use weft_xds::pb::envoy::extensions::access_loggers::file::v3::{
        file_access_log, FileAccessLog,
    };
    use weft_xds::pb::google::protobuf::{value::Kind, Struct, Value};
    let format = match (json, custom) {
        (false, None) => None,
        (false, Some(text)) => Some(substitution_format_string::Format::TextFormatSource(
            DataSource {
                specifier: Some(data_source::Specifier::InlineString(text.to_string())),
                ..Default::default()
            },
        )),
        (true, custom) => {
            let keys: Vec<(String, String)> = match custom
                .and_then(|c| serde_json::from_str::<BTreeMap<String, String>>(c).ok())
            {
                Some(map) => map.into_iter().collect(),
                None => weft_xds::ISTIO_JSON_ACCESS_LOG
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            };
            let fields = keys
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        Value {
                            kind: Some(Kind::StringValue(v)),
                        },
                    )
                })
                .collect();
            Some(substitution_format_string::Format::JsonFormat(Struct {
                fields,
            }))
        }
    };
    let file = FileAccessLog {
        path: path.to_string(),
        access_log_format: format.map(|f| {
            file_access_log::AccessLogFormat::LogFormat(SubstitutionFormatString {
                format: Some(f),
                ..Default::default()
            })
        }),
    };
    XAccessLog {
        name: filter_name::FILE_ACCESS_LOG.into(),
        config_type: Some(
            weft_xds::pb::envoy::config::accesslog::v3::access_log::ConfigType::TypedConfig(pack(
                type_url::FILE_ACCESS_LOG,
                &file,
            )),
        ),
        ..Default::default()
    }
}

/// The connection managers' tracing, from MeshConfig ([`weft_api::MeshConfig::tracing`]): the sampling
/// percentage and Envoy's Zipkin tracer (`POST /api/v2/spans`, JSON) or OpenTelemetry tracer (OTLP/HTTP).
/// None when tracing is off or no provider is set (or the setting is bad: the read refused it already).
///
/// The collector is named by `host:port` where Envoy expects a cluster name (`collector_cluster`, and
/// the OpenTelemetry `http_uri`'s cluster): weft-proxy reads a `host:port` there directly, and a name
/// it has a cluster for as that cluster's first endpoint. `collector_hostname` is the host, as Istio
/// sets it.
pub fn tracing(mesh: &weft_api::MeshConfig) -> Option<Tracing> {
    let t = match mesh.tracing() {
        Ok(t) => t?,
        Err(e) => {
            warn!(error = %e, "MeshConfig tracing ignored");
            return None;
        }
    };
    Some(Tracing {
        random_sampling: Some(weft_xds::pb::envoy::r#type::v3::Percent { value: t.sampling }),
        provider: Some(tracing_provider(&t.provider)),
        ..Default::default()
    })
}

/// Envoy's Zipkin tracer (`POST /api/v2/spans`, JSON) or OpenTelemetry tracer (OTLP/HTTP) for a
/// provider.
pub(crate) fn tracing_provider(
    provider: &weft_api::mesh::TracingProvider,
) -> weft_xds::pb::envoy::config::trace::v3::tracing::Http {
    use weft_api::mesh::TracingProvider;
    use weft_xds::pb::envoy::config::core::v3::{http_uri, HttpService, HttpUri};
    use weft_xds::pb::envoy::config::trace::v3::{
        tracing::http, tracing::Http, zipkin_config, OpenTelemetryConfig, ZipkinConfig,
    };
    match provider {
        TracingProvider::Zipkin { address } => {
            let host = address
                .rsplit_once(':')
                .map_or(address.as_str(), |(h, _)| h);
            let z = ZipkinConfig {
                collector_cluster: address.clone(),
                collector_endpoint: "/api/v2/spans".into(),
                collector_endpoint_version: zipkin_config::CollectorEndpointVersion::HttpJson
                    as i32,
                collector_hostname: host.to_string(),
                trace_id_128bit: true,
                ..Default::default()
            };
            Http {
                name: filter_name::ZIPKIN_TRACER.into(),
                config_type: Some(http::ConfigType::TypedConfig(pack(
                    type_url::ZIPKIN_CONFIG,
                    &z,
                ))),
            }
        }
        TracingProvider::OpenTelemetry { address, path } => {
            let o = OpenTelemetryConfig {
                http_service: Some(HttpService {
                    http_uri: Some(HttpUri {
                        uri: format!("http://{address}{path}"),
                        timeout: Some(duration(std::time::Duration::from_secs(5))),
                        http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(
                            address.clone(),
                        )),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            };
            Http {
                name: filter_name::OPENTELEMETRY_TRACER.into(),
                config_type: Some(http::ConfigType::TypedConfig(pack(
                    type_url::OPENTELEMETRY_CONFIG,
                    &o,
                ))),
            }
        }
    }
}

/// The connection manager's HTTP filters: CORS and fault (configured per route, as Istio orders them),
/// then Istio's stats filter when the side has metric overrides, then the router.
fn http_filters(applied: &crate::telemetry::Applied) -> Vec<HttpFilter> {
    let stats = telemetry::stats_http_filter(applied);
    [
        Some(HttpFilter {
            name: filter_name::CORS.into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack(
                type_url::CORS,
                &weft_xds::pb::envoy::extensions::filters::http::cors::v3::Cors::default(),
            ))),
            ..Default::default()
        }),
        Some(HttpFilter {
            name: filter_name::FAULT.into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack(
                type_url::HTTP_FAULT,
                &HttpFault::default(),
            ))),
            ..Default::default()
        }),
        stats,
        Some(HttpFilter {
            name: filter_name::ROUTER.into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack(
                type_url::ROUTER,
                &Router::default(),
            ))),
            ..Default::default()
        }),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// A listener with one filter chain of network filters. `bind = false` makes it virtual (the proxy
/// does not listen on its address).
fn listener(
    name: String,
    address: Address,
    direction: TrafficDirection,
    bind: bool,
    filters: Vec<Filter>,
) -> Listener {
    Listener {
        name,
        address: Some(address),
        traffic_direction: direction as i32,
        bind_to_port: (!bind).then_some(BoolValue { value: false }),
        filter_chains: vec![FilterChain {
            filters,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn hcm_filter(hcm: &HttpConnectionManager) -> Filter {
    Filter {
        name: filter_name::HTTP_CONNECTION_MANAGER.into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack(
            type_url::HTTP_CONNECTION_MANAGER,
            hcm,
        ))),
    }
}

/// `tcp_proxy` to `to`, with the service's own cluster name `stat` as stat prefix (as Istio names TCP
/// stats).
fn tcp_proxy_filter(stat: &str, to: TcpClusterSpecifier) -> Filter {
    let tcp = TcpProxy {
        stat_prefix: stat.to_string(),
        cluster_specifier: Some(to),
        ..Default::default()
    };
    Filter {
        name: filter_name::TCP_PROXY.into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack(
            type_url::TCP_PROXY,
            &tcp,
        ))),
    }
}

/// The Telemetry rules of the client (outbound) or server side of proxies in `namespace` whose
/// workload-level Telemetry is `workload`.
fn applied(
    model: &Model,
    namespace: &str,
    workload: Option<&str>,
    client: bool,
) -> crate::telemetry::Applied {
    let chain = crate::telemetry::Chain::with_workload(model, namespace, workload);
    crate::telemetry::apply(&chain.resources(model), &model.mesh, client)
}

/// `stat_prefix` and filters of one HTTP connection manager, with the side's telemetry.
fn hcm_with_telemetry(
    mesh: &weft_api::MeshConfig,
    applied: &crate::telemetry::Applied,
    hcm: HttpConnectionManager,
) -> HttpConnectionManager {
    HttpConnectionManager {
        http_filters: http_filters(applied),
        access_log: telemetry::access_logs(mesh, applied),
        tracing: telemetry::tracing(mesh, applied),
        request_id_extension: telemetry::request_id_extension(applied),
        ..hcm
    }
}

/// The connection manager of an outbound port (a sidecar's, or a gateway server's): routes from RDS
/// table `route_name`, the client side's telemetry.
fn outbound_hcm(
    mesh: &weft_api::MeshConfig,
    client: &crate::telemetry::Applied,
    port: u32,
    route_name: &str,
) -> HttpConnectionManager {
    hcm_with_telemetry(
        mesh,
        client,
        HttpConnectionManager {
            stat_prefix: format!("outbound_0.0.0.0_{port}"),
            codec_type: CodecType::Auto as i32,
            route_specifier: Some(RouteSpecifier::Rds(Rds {
                config_source: Some(ads()),
                route_config_name: route_name.to_string(),
            })),
            ..Default::default()
        },
    )
}

fn outbound_listeners(ports: &BTreeSet<u32>, model: &Model, scope: &Scope) -> Vec<Listener> {
    let mesh = &model.mesh;
    let client = applied(model, &scope.namespace, scope.telemetry.as_deref(), true);
    let mut out = Vec::new();
    for &port in ports {
        let hcm = outbound_hcm(mesh, &client, port, &port.to_string());
        out.push(listener(
            format!("0.0.0.0_{port}"),
            socket_address("0.0.0.0", port),
            TrafficDirection::Outbound,
            false,
            vec![hcm_filter(&hcm)],
        ));
    }
    out
}

/// One listener per inbound port, on the workload's IP: `tcp_proxy` to the application when the port is
/// TCP ([`Model::inbound_is_tcp`]), the HTTP connection manager otherwise.
/// Its filter chains follow the port's PeerAuthentication mode ([`mtls::secure_inbound`]).
fn inbound_listeners(model: &Model, proxy: &ProxyIdentity) -> Vec<Listener> {
    let workload = crate::telemetry::Chain::workload_of(model, &proxy.namespace, &proxy.labels);
    let server = applied(model, &proxy.namespace, workload.as_deref(), false);
    let peers = mtls::PeerPolicies::of(model);
    let jwt = crate::authn::jwt_filter(model, proxy);
    let mut out = Vec::new();
    for &(svc_port, _) in &proxy.inbound_ports {
        let port = u32::from(svc_port);
        let filters = if model.inbound_is_tcp(&proxy.ip, port) {
            // AuthorizationPolicy: network RBAC before anything reads or forwards a byte.
            crate::security::rbac_network_filters(model, &proxy.namespace, &proxy.labels, port)
                .into_iter()
                .chain(telemetry::stats_network_filter(&server))
                .chain([{
                    let c = inbound_cluster_name(port);
                    tcp_proxy_filter(&c, TcpClusterSpecifier::Cluster(c.clone()))
                }])
                .collect()
        } else {
            let mut hcm = hcm_with_telemetry(
                &model.mesh,
                &server,
                HttpConnectionManager {
                    stat_prefix: format!("inbound_0.0.0.0_{port}"),
                    codec_type: CodecType::Auto as i32,
                    route_specifier: Some(RouteSpecifier::RouteConfig(route::inbound(port))),
                    ..Default::default()
                },
            );
            set_path_normalization(&mut hcm, model.mesh.path_normalization());
            // AuthorizationPolicy: RBAC first (after jwt_authn, added below), as Istio orders them.
            let rbac = crate::security::rbac_http_filters(model, &proxy.namespace, &proxy.labels);
            hcm.http_filters.splice(0..0, rbac);
            vec![hcm_filter(&hcm)]
        };
        let mut l = listener(
            format!("inbound_{}_{port}", proxy.ip),
            socket_address(&proxy.ip, port),
            TrafficDirection::Inbound,
            true,
            filters,
        );
        // RequestAuthentication: jwt_authn in the connection manager.
        crate::authn::add_jwt_filter(&mut l, jwt.as_ref());
        // Last, once the filters are complete: the mTLS and plaintext chains get the same ones. The
        // workload port PeerAuthentication's `portLevelMtls` names is the one peers connect to.
        mtls::secure_inbound(&mut l, peers.mode(&proxy.namespace, &proxy.labels, port));
        out.push(l);
    }
    out
}

/// MeshConfig `pathNormalization` on an inbound connection manager, as Istio sets it: `BASE` is
/// `normalize_path`, `MERGE_SLASHES` adds `merge_slashes`, `DECODE_AND_MERGE_SLASHES` also unescapes
/// `%2F` and `%5C`; `NONE` sets nothing.
fn set_path_normalization(hcm: &mut HttpConnectionManager, mode: PathNormalizationMode) {
    use weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::PathWithEscapedSlashesAction as Escaped;
    let (normalize, merge, unescape) = match mode {
        PathNormalizationMode::None => return,
        PathNormalizationMode::Default | PathNormalizationMode::Base => (true, false, false),
        PathNormalizationMode::MergeSlashes => (true, true, false),
        PathNormalizationMode::DecodeAndMergeSlashes => (true, true, true),
    };
    hcm.normalize_path = Some(BoolValue { value: normalize });
    hcm.merge_slashes = merge;
    if unescape {
        hcm.path_with_escaped_slashes_action = Escaped::UnescapeAndForward as i32;
    }
}

/// The proxy's TCP egress listeners, `<bind>_<port>` on `bind` or else its own IP. One that would
/// share its address with an inbound listener (the proxy could not bind both) is left out, with a
/// warning.
fn egress_listeners(model: &Model, proxy: &ProxyIdentity, egress: &[EgressPort]) -> Vec<Listener> {
    if egress.is_empty() {
        return Vec::new();
    }
    let workload = crate::telemetry::Chain::workload_of(model, &proxy.namespace, &proxy.labels);
    let client = applied(model, &proxy.namespace, workload.as_deref(), true);
    let mut out = Vec::new();
    for e in egress {
        let ip = match e.bind {
            Some(ip) => ip.to_string(),
            None => proxy.ip.clone(),
        };
        let on_inbound = ip == proxy.ip
            && proxy
                .inbound_ports
                .iter()
                .any(|&(p, _)| u32::from(p) == e.port);
        if on_inbound {
            warn!(
                proxy = %proxy.node_id(),
                sidecar = %e.sidecar,
                port = e.port,
                "egress port is also an inbound port of this workload; no egress listener"
            );
            continue;
        }
        // The address the application connects to: a `tcp` rule's destinationSubnets match it.
        let destination = ip.parse::<IpAddr>().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        out.push(listener(
            format!("{ip}_{}", e.port),
            socket_address(&ip, e.port),
            TrafficDirection::Outbound,
            true,
            telemetry::stats_network_filter(&client)
                .into_iter()
                .chain([tcp_proxy_filter(
                    &e.cluster,
                    tcp::clusters_for(
                        model,
                        &e.host,
                        &Connection {
                            gateway: None,
                            destination,
                            port: e.port,
                            namespace: &proxy.namespace,
                            labels: &proxy.labels,
                        },
                    ),
                )])
                .collect(),
        ));
    }
    out
}

#[cfg(test)]
mod tests;
