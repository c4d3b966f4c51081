//! Listeners: Envoy's `Listener` converted into what the proxy needs — the address to bind (inbound) or the
//! port it stands for (virtual outbound), and where its routes come from (RDS name or inline table) —
//! and its telemetry: the access log (with its CEL filter), tracing, and Istio's `istio.stats` filter
//! (an HTTP filter, or a network filter before `tcp_proxy`), which carries the Telemetry API's metric
//! overrides as a `TypedStruct` of Istio's stats plugin config, and how often open TCP connections
//! report their bytes (`tcp_reporting_duration`).

use super::route::{RouteConfig, RouteError};
use super::SocketAddressError;
use crate::authz::{self, PathNormalization};
use crate::telemetry::access_log::{self as access_log_format, AccessLog, Format};
use crate::telemetry::overrides::{self, Overrides};
use crate::telemetry::spans::Tracing;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use weft_xds::pb::envoy::config::accesslog::v3::{
    access_log, access_log_filter::FilterSpecifier, extension_filter, AccessLog as XAccessLog,
};
use weft_xds::pb::envoy::config::core::v3::{data_source, substitution_format_string};
use weft_xds::pb::envoy::config::listener::v3 as xlistener;
use weft_xds::pb::envoy::extensions::access_loggers::file::v3::{file_access_log, FileAccessLog};
use weft_xds::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter;
use weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter, HttpConnectionManager,
};
use weft_xds::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    tcp_proxy::{ClusterSpecifier, WeightedCluster as TcpWeighted},
    TcpProxy,
};

/// Why a listener was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// The address is unusable.
    #[error("address")]
    Address(#[from] SocketAddressError),
    /// The HTTP connection manager does not decode.
    #[error("filter {filter:?} does not decode as HttpConnectionManager")]
    Hcm {
        /// The filter's name.
        filter: String,
        /// prost's error.
        #[source]
        source: weft_xds::DecodeError,
    },
    /// The inline route configuration is invalid.
    #[error("route config {name:?}")]
    InlineRoute {
        /// The route configuration's name.
        name: String,
        /// What was wrong.
        #[source]
        source: RouteError,
    },
    /// Scoped routes are not implemented.
    #[error("scoped_routes are not supported")]
    ScopedRoutes,
    /// The TCP proxy does not decode.
    #[error("filter {filter:?} does not decode as TcpProxy")]
    TcpProxy {
        /// The filter's name.
        filter: String,
        /// prost's error.
        #[source]
        source: weft_xds::DecodeError,
    },
    /// The TCP proxy names no cluster, or weighted clusters with no name or no positive weight.
    #[error("filter {filter:?}: TcpProxy needs `cluster`, or `weighted_clusters` with named clusters and a positive weight")]
    TcpProxyCluster {
        /// The filter's name.
        filter: String,
    },
    /// The filter chains' TLS (PeerAuthentication) cannot be used.
    #[error("{why}")]
    Tls {
        /// What is wrong, naming the chain and field.
        why: String,
    },
    /// The connection manager's tracing cannot be used.
    #[error("tracing: {why}")]
    Tracing {
        /// What is wrong, naming the field.
        why: String,
    },
    /// The connection manager's file access log cannot be used.
    #[error("access_log {why}")]
    AccessLog {
        /// What is wrong, naming the logger.
        why: String,
    },
    /// The `jwt_authn` filter (RequestAuthentication) cannot be used.
    #[error("{filter}")]
    Jwt {
        /// Which filter: `http_filters[0] "envoy.filters.http.jwt_authn"`.
        filter: String,
        /// What is wrong, naming the field.
        #[source]
        source: crate::authn::ConfigError,
    },
    /// An RBAC filter (AuthorizationPolicy) cannot be used.
    #[error("{filter}")]
    Rbac {
        /// Which filter: `http_filters[2] "envoy.filters.http.rbac"` or
        /// `filter "envoy.filters.network.rbac"`.
        filter: String,
        /// What is wrong, naming the field.
        #[source]
        source: authz::RbacError,
    },
    /// An ext_authz filter (a CUSTOM AuthorizationPolicy) cannot be used.
    #[error("{filter}")]
    ExtAuthz {
        /// Which filter: `http_filters[1] "envoy.filters.http.ext_authz"` or
        /// `filter "envoy.filters.network.ext_authz"`.
        filter: String,
        /// What is wrong, naming the field.
        #[source]
        source: crate::ext_authz::ConfigError,
    },
    /// The connection manager's path normalization cannot be used.
    #[error("path normalization: {why}")]
    PathNormalization {
        /// What is wrong, naming the field.
        why: String,
    },
    /// Istio's stats filter (the Telemetry API's metric overrides) cannot be used.
    #[error("{filter}: {why}")]
    Stats {
        /// Which filter: `filter "istio.stats"` (network) or `http_filters[1] "istio.stats"`.
        filter: String,
        /// What is wrong, naming the field.
        why: String,
    },
}

/// Traffic direction of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Unspecified.
    Unspecified,
    /// Towards the local application.
    Inbound,
    /// From the local application.
    Outbound,
}

/// Where a listener's routes come from.
#[derive(Debug, Clone)]
pub enum RouteSource {
    /// RDS, by route configuration name.
    Rds(String),
    /// An inline table.
    Inline(Arc<RouteConfig>),
    /// Not HTTP: opaque TCP to this cluster, or these weighted ones (`tcp_proxy`).
    Tcp(TcpClusters),
    /// Neither HTTP nor TCP: nothing the proxy serves.
    None,
}

/// Where a TCP listener's connections go: one cluster, or one of several picked by weight per
/// connection (a VirtualService `tcp` rule's weighted destinations).
#[derive(Debug, Clone)]
pub enum TcpClusters {
    /// Every connection to this cluster.
    One(Arc<str>),
    /// Each connection to one of these, with probability proportional to its weight.
    Weighted {
        /// The clusters and their weights (some positive).
        clusters: Arc<[(Arc<str>, u32)]>,
        /// The sum of the weights (> 0).
        total: u64,
    },
}

impl TcpClusters {
    /// The cluster for a connection whose roll (`0..u64::MAX`, uniform) is `roll`.
    pub fn pick(&self, roll: u64) -> &Arc<str> {
        match self {
            TcpClusters::One(c) => c,
            TcpClusters::Weighted { clusters, total } => {
                let i =
                    crate::balance::pick_weighted(clusters, |(_, w)| *w, roll % total).unwrap_or(0);
                &clusters[i].0
            }
        }
    }

    /// Every cluster it may send to.
    pub fn names(&self) -> impl Iterator<Item = &Arc<str>> {
        let (one, many) = match self {
            TcpClusters::One(c) => (Some(c), &[][..]),
            TcpClusters::Weighted { clusters, .. } => (None, &clusters[..]),
        };
        one.into_iter().chain(many.iter().map(|(c, _)| c))
    }
}

/// A listener.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Its name (`inbound_127.0.1.4_9080`, `0.0.0.0_9080`).
    pub name: String,
    /// Its socket address, if it has one.
    pub address: Option<SocketAddr>,
    /// Whether the proxy binds it (`bind_to_port`, default true).
    pub bind: bool,
    /// Traffic direction.
    pub direction: Direction,
    /// Its routes.
    pub routes: RouteSource,
    /// Its HTTP access log (Envoy's file access logger in its connection manager), if any.
    pub access_log: Option<Arc<AccessLog>>,
    /// Its tracing (the connection manager's `tracing`), if any.
    pub tracing: Option<Arc<Tracing>>,
    /// Its metric overrides (Istio's `istio.stats` filter), when they change anything.
    pub stats: Option<Arc<Overrides>>,
    /// How often its open TCP connections add their bytes to their metrics: the stats filter's
    /// `tcp_reporting_duration`, else Istio's 15 s.
    pub tcp_reporting: Duration,
    /// Its request authentication (Envoy's `jwt_authn` HTTP filter), if any.
    pub jwt: Option<Arc<crate::authn::JwtAuthn>>,
    /// Its RBAC filters (AuthorizationPolicy): the HTTP ones of its connection manager or the network
    /// ones before `tcp_proxy`, in order; `None` when there is nothing to check.
    pub rbac: Option<Arc<authz::Rbac>>,
    /// Its ext_authz filter (CUSTOM AuthorizationPolicy), with the RBAC filter that marks what it
    /// checks; `None` when there is none.
    pub ext_authz: Option<Arc<crate::ext_authz::ExtAuthz>>,
    /// How its connection manager normalizes request paths, before routing and RBAC.
    pub path_normalization: PathNormalization,
    /// Whether it takes mutual TLS, plaintext, or both (its filter chains' transport sockets).
    pub tls: crate::tls::Inbound,
    /// A gateway server's TLS from certificate files (SIMPLE or MUTUAL), read when the listener
    /// arrived; `None` for every other listener.
    pub server_tls: Option<crate::tls::files::ServerFiles>,
}

impl Listener {
    /// Whether the proxy binds this listener: an inbound one (HTTP or TCP), an outbound TCP one (a
    /// Sidecar egress port), or a gateway's (an outbound HTTP one that binds: a Gateway server's port).
    /// A sidecar's outbound HTTP goes through the explicit proxy and its virtual listeners.
    pub fn binds(&self) -> bool {
        self.bind
            && self.address.is_some()
            && (self.direction == Direction::Inbound || self.is_tcp() || self.is_gateway())
    }

    /// Whether this is a gateway's listener: outbound, bound, HTTP (routes from RDS or inline).
    pub fn is_gateway(&self) -> bool {
        self.bind
            && self.direction == Direction::Outbound
            && matches!(self.routes, RouteSource::Rds(_) | RouteSource::Inline(_))
    }

    /// Whether this listener proxies opaque TCP.
    pub fn is_tcp(&self) -> bool {
        matches!(self.routes, RouteSource::Tcp(_))
    }

    /// Whether this is a virtual outbound listener (the port index for the explicit proxy).
    pub fn is_virtual_outbound(&self) -> bool {
        !self.bind && self.direction != Direction::Inbound && self.address.is_some()
    }
}

/// `weighted_clusters` of a `tcp_proxy`; `None` when a cluster has no name or no weight is positive.
fn weighted_tcp(w: &TcpWeighted) -> Option<TcpClusters> {
    if w.clusters.iter().any(|c| c.name.is_empty()) {
        return None;
    }
    let clusters: Arc<[(Arc<str>, u32)]> = w
        .clusters
        .iter()
        .map(|c| (Arc::from(c.name.as_str()), c.weight))
        .collect();
    let total = crate::balance::total_weight(&clusters, |(_, w)| *w);
    (total > 0).then_some(TcpClusters::Weighted { clusters, total })
}

impl TryFrom<&xlistener::Listener> for Listener {
    type Error = ListenerError;

    fn try_from(l: &xlistener::Listener) -> Result<Self, ListenerError> {
        let address = match &l.address {
            Some(a) => Some(super::socket_addr(a)?),
            None => None,
        };
        let direction = match l.traffic_direction {
            1 => Direction::Inbound,
            2 => Direction::Outbound,
            _ => Direction::Unspecified,
        };
        let mut routes = RouteSource::None;
        let mut access_log = None;
        let mut tracing = None;
        let mut stats = None;
        let mut tcp_reporting = overrides::DEFAULT_TCP_REPORTING;
        let mut jwt = None;
        let mut rbac = Vec::new();
        let mut ext_authz = None;
        let mut path_normalization = PathNormalization::default();
        let server_tls = crate::tls::server_files(l).map_err(|why| ListenerError::Tls { why })?;
        let tls = match server_tls {
            Some(_) => crate::tls::Inbound::Plaintext,
            None => crate::tls::inbound(l).map_err(|why| ListenerError::Tls { why })?,
        };
        let filters = l
            .filter_chains
            .iter()
            .chain(l.default_filter_chain.iter())
            .flat_map(|fc| fc.filters.iter());
        for f in filters {
            let typed = match &f.config_type {
                Some(xlistener::filter::ConfigType::TypedConfig(any)) => Some(any),
                _ => None,
            };
            // Before `tcp_proxy`, so seen first.
            if let Some(r) = authz::Filter::of_network(&f.name, typed) {
                rbac.push(r.map_err(|source| ListenerError::Rbac {
                    filter: format!("filter {:?}", f.name),
                    source,
                })?);
                continue;
            }
            if crate::ext_authz::is_network(&f.name, typed) {
                let filter = || format!("filter {:?}", f.name);
                if ext_authz.is_some() {
                    return Err(ListenerError::ExtAuthz {
                        filter: filter(),
                        source: crate::ext_authz::ConfigError::Unsupported {
                            field: "ext_authz",
                            what: "a second ext_authz filter".into(),
                        },
                    });
                }
                let e =
                    crate::ext_authz::ExtAuthz::network(typed, &mut rbac).map_err(|source| {
                        ListenerError::ExtAuthz {
                            filter: filter(),
                            source,
                        }
                    })?;
                ext_authz = Some(Arc::new(e));
                continue;
            }
            let Some(xlistener::filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                continue;
            };
            // Before `tcp_proxy`, so seen first.
            if let Some(o) = stats_filter(any, || format!("filter {:?}", f.name))? {
                stats = o.overrides;
                tcp_reporting = o.tcp_reporting;
                continue;
            }
            if any.type_url == weft_xds::type_url::TCP_PROXY {
                let tcp: TcpProxy =
                    weft_xds::unpack(any).map_err(|source| ListenerError::TcpProxy {
                        filter: f.name.clone(),
                        source,
                    })?;
                routes = match tcp.cluster_specifier {
                    Some(ClusterSpecifier::Cluster(c)) if !c.is_empty() => {
                        RouteSource::Tcp(TcpClusters::One(Arc::from(c)))
                    }
                    Some(ClusterSpecifier::WeightedClusters(w)) => {
                        RouteSource::Tcp(weighted_tcp(&w).ok_or_else(|| {
                            ListenerError::TcpProxyCluster {
                                filter: f.name.clone(),
                            }
                        })?)
                    }
                    _ => {
                        return Err(ListenerError::TcpProxyCluster {
                            filter: f.name.clone(),
                        })
                    }
                };
                break;
            }
            if any.type_url != weft_xds::type_url::HTTP_CONNECTION_MANAGER {
                continue;
            }
            if ext_authz.is_some() {
                return Err(ListenerError::ExtAuthz {
                    filter: format!("filter {:?}", crate::ext_authz::NETWORK_FILTER),
                    source: crate::ext_authz::ConfigError::Unsupported {
                        field: "ext_authz",
                        what: "a network ext_authz filter before an HTTP connection manager".into(),
                    },
                });
            }
            if !rbac.is_empty() {
                return Err(ListenerError::Rbac {
                    filter: format!("filter {:?}", authz::NETWORK_RBAC_FILTER),
                    source: authz::RbacError::BeforeHttp,
                });
            }
            let hcm: HttpConnectionManager =
                weft_xds::unpack(any).map_err(|source| ListenerError::Hcm {
                    filter: f.name.clone(),
                    source,
                })?;
            path_normalization = PathNormalization::from_hcm(&hcm)
                .map_err(|why| ListenerError::PathNormalization { why })?;
            access_log = file_access_log(&hcm.access_log)
                .map_err(|why| ListenerError::AccessLog { why })?
                .map(Arc::new);
            tracing = Tracing::from_hcm(hcm.tracing.as_ref())
                .map_err(|why| ListenerError::Tracing { why })?
                .map(Arc::new);
            for (i, h) in hcm.http_filters.iter().enumerate() {
                let typed = match &h.config_type {
                    Some(http_filter::ConfigType::TypedConfig(any)) => Some(any),
                    _ => None,
                };
                if let Some(r) = authz::Filter::of_http(&h.name, typed, h.disabled) {
                    rbac.push(r.map_err(|source| ListenerError::Rbac {
                        filter: format!("http_filters[{i}] {:?}", h.name),
                        source,
                    })?);
                    continue;
                }
                if crate::ext_authz::is_http(&h.name, typed) {
                    let filter = || format!("http_filters[{i}] {:?}", h.name);
                    if ext_authz.is_some() {
                        return Err(ListenerError::ExtAuthz {
                            filter: filter(),
                            source: crate::ext_authz::ConfigError::Unsupported {
                                field: "ext_authz",
                                what: "a second ext_authz filter".into(),
                            },
                        });
                    }
                    let e = crate::ext_authz::ExtAuthz::http(typed, h.disabled, &mut rbac)
                        .map_err(|source| ListenerError::ExtAuthz {
                            filter: filter(),
                            source,
                        })?;
                    ext_authz = Some(Arc::new(e));
                    continue;
                }
                let Some(http_filter::ConfigType::TypedConfig(any)) = &h.config_type else {
                    continue;
                };
                if let Some(o) = stats_filter(any, || format!("http_filters[{i}] {:?}", h.name))? {
                    stats = o.overrides;
                }
                if any.type_url == crate::authn::TYPE_URL {
                    let j = crate::authn::JwtAuthn::try_from(any).map_err(|source| {
                        ListenerError::Jwt {
                            filter: format!("http_filters[{i}] {:?}", h.name),
                            source,
                        }
                    })?;
                    jwt = Some(Arc::new(j));
                }
            }
            routes = match hcm.route_specifier {
                Some(RouteSpecifier::Rds(rds)) => RouteSource::Rds(rds.route_config_name),
                Some(RouteSpecifier::RouteConfig(rc)) => {
                    RouteSource::Inline(Arc::new(RouteConfig::try_from(&rc).map_err(|source| {
                        ListenerError::InlineRoute {
                            name: rc.name.clone(),
                            source,
                        }
                    })?))
                }
                Some(RouteSpecifier::ScopedRoutes(_)) => return Err(ListenerError::ScopedRoutes),
                None => RouteSource::None,
            };
            break;
        }
        if server_tls.is_some() && !matches!(routes, RouteSource::Rds(_) | RouteSource::Inline(_)) {
            return Err(ListenerError::Tls {
                why: "a TLS chain with certificates from files needs an HTTP connection manager"
                    .into(),
            });
        }
        Ok(Listener {
            tls,
            server_tls,
            name: l.name.clone(),
            address,
            bind: l.bind_to_port.as_ref().map(|b| b.value).unwrap_or(true),
            direction,
            routes,
            access_log,
            tracing,
            stats,
            tcp_reporting,
            jwt,
            rbac: authz::Rbac::new(rbac).map(Arc::new),
            ext_authz,
            path_normalization,
        })
    }
}

/// What a listener takes from Istio's stats filter.
struct StatsFilter {
    /// Its overrides, `None` when they change nothing.
    overrides: Option<Arc<Overrides>>,
    /// Its `tcp_reporting_duration`, else the default.
    tcp_reporting: Duration,
}

/// Istio's stats filter config, when `any` is one (a `TypedStruct` of `stats.PluginConfig`).
/// `Ok(None)`: another filter. `filter` names the filter for an error.
fn stats_filter(
    any: &weft_xds::Any,
    filter: impl Fn() -> String,
) -> Result<Option<StatsFilter>, ListenerError> {
    use weft_xds::type_url::{ISTIO_STATS_CONFIG, TYPED_STRUCT, UDPA_TYPED_STRUCT};
    if any.type_url != TYPED_STRUCT && any.type_url != UDPA_TYPED_STRUCT {
        return Ok(None);
    }
    let ts: weft_xds::TypedStruct = weft_xds::unpack(any).map_err(|e| ListenerError::Stats {
        filter: filter(),
        why: format!("{e}"),
    })?;
    if ts.type_url != ISTIO_STATS_CONFIG {
        return Ok(None);
    }
    let config = ts.value.unwrap_or_default();
    let error = |why| ListenerError::Stats {
        filter: filter(),
        why,
    };
    let o = Overrides::from_config(&config).map_err(error)?;
    let tcp_reporting = overrides::tcp_reporting_duration(&config).map_err(error)?;
    Ok(Some(StatsFilter {
        overrides: (!o.is_empty()).then(|| o.shared()),
        tcp_reporting: tcp_reporting.unwrap_or(overrides::DEFAULT_TCP_REPORTING),
    }))
}

/// The file access log among a connection manager's access loggers: its path and format (Istio's
/// text format when it gives none). Another kind of logger is ignored; a bad format is an error.
fn file_access_log(logs: &[XAccessLog]) -> Result<Option<AccessLog>, String> {
    for l in logs {
        let Some(access_log::ConfigType::TypedConfig(any)) = &l.config_type else {
            continue;
        };
        if any.type_url != weft_xds::type_url::FILE_ACCESS_LOG {
            continue;
        }
        let file: FileAccessLog = weft_xds::unpack(any).map_err(|e| format!("{}: {e}", l.name))?;
        let format = match file.access_log_format {
            None => Format::istio_text(),
            Some(file_access_log::AccessLogFormat::LogFormat(f)) => match f.format {
                Some(substitution_format_string::Format::TextFormatSource(src)) => {
                    match src.specifier {
                        Some(data_source::Specifier::InlineString(s)) => Format::Text(
                            access_log_format::parse(&s).map_err(|e| format!("{}: {e}", l.name))?,
                        ),
                        _ => {
                            return Err(format!(
                                "{}: only an inline text format is supported",
                                l.name
                            ))
                        }
                    }
                }
                Some(substitution_format_string::Format::JsonFormat(st)) => {
                    let mut keys = Vec::new();
                    for (k, v) in &st.fields {
                        let Some(weft_xds::pb::google::protobuf::value::Kind::StringValue(f)) =
                            &v.kind
                        else {
                            return Err(format!(
                                "{}: JSON key {k:?} is not a format string",
                                l.name
                            ));
                        };
                        keys.push((
                            k.clone(),
                            access_log_format::parse(f).map_err(|e| format!("{}: {e}", l.name))?,
                        ));
                    }
                    keys.sort_by(|a, b| a.0.cmp(&b.0));
                    Format::Json(keys)
                }
                _ => Format::istio_text(),
            },
            Some(_) => return Err(format!("{}: only log_format is supported", l.name)),
        };
        let path = if file.path.is_empty() {
            "/dev/stdout".to_string()
        } else {
            file.path
        };
        let log = AccessLog::new(path, format);
        let log = match &l.filter {
            None => log,
            Some(f) => {
                let src = cel_filter(f.filter_specifier.as_ref())
                    .map_err(|e| format!("{}: filter: {e}", l.name))?;
                let expr = weft_cel::parse(&src)
                    .map_err(|e| format!("{}: filter: CEL expression {src:?} {e}", l.name))?;
                log.with_filter(expr, &src)
                    .map_err(|e| format!("{}: {e}", l.name))?
            }
        };
        return Ok(Some(log));
    }
    Ok(None)
}

/// The expression of Envoy's CEL extension filter; another kind of filter is refused (logging more
/// than was asked would be worse than refusing).
fn cel_filter(f: Option<&FilterSpecifier>) -> Result<String, String> {
    let Some(FilterSpecifier::ExtensionFilter(x)) = f else {
        return Err(format!(
            "only the CEL extension filter ({}) is supported",
            weft_xds::filter_name::CEL_ACCESS_LOG_FILTER
        ));
    };
    let Some(extension_filter::ConfigType::TypedConfig(any)) = &x.config_type else {
        return Err(format!("{:?} has no typed_config", x.name));
    };
    if any.type_url != weft_xds::type_url::CEL_ACCESS_LOG_FILTER {
        return Err(format!(
            "{:?}: {} is not supported (only {} is)",
            x.name,
            any.type_url,
            weft_xds::type_url::CEL_ACCESS_LOG_FILTER
        ));
    }
    let e: ExpressionFilter = weft_xds::unpack(any).map_err(|e| format!("{:?}: {e}", x.name))?;
    Ok(e.expression)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_xds::pb::envoy::config::core::v3::{
        address, socket_address::PortSpecifier, Address, SocketAddress,
    };
    use weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager;
    use weft_xds::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::WeightedCluster;

    fn tcp(spec: Option<ClusterSpecifier>, direction: i32) -> xlistener::Listener {
        let proxy = TcpProxy {
            stat_prefix: "s".into(),
            cluster_specifier: spec,
            ..Default::default()
        };
        xlistener::Listener {
            name: "127.0.0.1_9000".into(),
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: "127.0.0.1".into(),
                    port_specifier: Some(PortSpecifier::PortValue(9000)),
                    ..Default::default()
                })),
            }),
            traffic_direction: direction,
            filter_chains: vec![xlistener::FilterChain {
                filters: vec![xlistener::Filter {
                    name: weft_xds::filter_name::TCP_PROXY.into(),
                    config_type: Some(xlistener::filter::ConfigType::TypedConfig(weft_xds::pack(
                        weft_xds::type_url::TCP_PROXY,
                        &proxy,
                    ))),
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn tcp_proxy_listeners_bind_in_both_directions() {
        let c = || Some(ClusterSpecifier::Cluster("outbound|9000||sink".into()));
        for direction in [1, 2] {
            let l = Listener::try_from(&tcp(c(), direction)).expect("valid");
            assert!(l.is_tcp() && l.binds(), "{l:?}");
            assert!(
                matches!(&l.routes, RouteSource::Tcp(TcpClusters::One(n)) if &**n == "outbound|9000||sink")
            );
            assert_eq!(l.address, Some("127.0.0.1:9000".parse().expect("addr")));
        }
        // A virtual (unbound) TCP listener is not bound.
        let mut x = tcp(c(), 2);
        x.bind_to_port = Some(weft_xds::pb::google::protobuf::BoolValue { value: false });
        assert!(!Listener::try_from(&x).expect("valid").binds());
    }

    #[test]
    fn tcp_proxy_weighted_clusters_split_connections_by_weight() {
        use weft_xds::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::weighted_cluster::ClusterWeight;
        let w = |name: &str, weight: u32| ClusterWeight {
            name: name.into(),
            weight,
            ..Default::default()
        };
        let spec = ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: vec![
                w("outbound|9000|v1|echo", 80),
                w("outbound|9000|v2|echo", 20),
                w("outbound|9000|v3|echo", 0),
            ],
        });
        let l = Listener::try_from(&tcp(Some(spec), 2)).expect("valid");
        let RouteSource::Tcp(c) = &l.routes else {
            panic!("not TCP: {l:?}");
        };
        // Rolls 0..80 go to v1, 80..100 to v2, never v3 (weight 0).
        assert_eq!(&**c.pick(0), "outbound|9000|v1|echo");
        assert_eq!(&**c.pick(79), "outbound|9000|v1|echo");
        assert_eq!(&**c.pick(80), "outbound|9000|v2|echo");
        assert_eq!(&**c.pick(99), "outbound|9000|v2|echo");
        assert_eq!(&**c.pick(100), "outbound|9000|v1|echo");
        let mut counts = [0u32; 3];
        for roll in 0..1000u64 {
            let name = c.pick(roll.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let i = ["v1", "v2", "v3"]
                .iter()
                .position(|v| name.contains(v))
                .expect("known");
            counts[i] += 1;
        }
        assert_eq!(counts[2], 0, "{counts:?}");
        assert!((700..=900).contains(&counts[0]), "{counts:?}");
        assert_eq!(c.names().count(), 3);
    }

    #[test]
    fn tcp_proxy_without_one_cluster_is_refused() {
        use weft_xds::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::weighted_cluster::ClusterWeight;
        let weighted = ClusterSpecifier::WeightedClusters(WeightedCluster::default());
        let zero = ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: vec![ClusterWeight {
                name: "c".into(),
                weight: 0,
                ..Default::default()
            }],
        });
        let unnamed = ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: vec![ClusterWeight {
                weight: 1,
                ..Default::default()
            }],
        });
        for spec in [
            None,
            Some(ClusterSpecifier::Cluster(String::new())),
            Some(weighted),
            Some(zero),
            Some(unnamed),
        ] {
            let e = Listener::try_from(&tcp(spec, 2)).expect_err("refused");
            assert!(matches!(e, ListenerError::TcpProxyCluster { .. }), "{e}");
        }
    }

    /// Istio's stats filter config: `metrics` entries, as weftd sends them.
    fn stats_any(entries: &str) -> weft_xds::Any {
        let v: serde_json::Value = serde_json::from_str(entries).expect("json");
        let fields = crate::telemetry::overrides::struct_of_json(&v);
        weft_xds::pack(
            weft_xds::type_url::TYPED_STRUCT,
            &weft_xds::TypedStruct {
                type_url: weft_xds::type_url::ISTIO_STATS_CONFIG.into(),
                value: Some(fields),
            },
        )
    }

    /// An inbound HTTP listener whose connection manager has `stats` (Istio's stats filter entries),
    /// a file access log with the CEL `filter`, and `tracing`.
    fn http_listener(
        stats: Option<&str>,
        filter: Option<&str>,
        tracing: Option<http_connection_manager::Tracing>,
    ) -> xlistener::Listener {
        use weft_xds::pb::envoy::config::accesslog::v3::{AccessLogFilter, ExtensionFilter};
        use weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
        let mut l = tcp(None, 1);
        let access_log = XAccessLog {
            name: weft_xds::filter_name::FILE_ACCESS_LOG.into(),
            filter: filter.map(|e| AccessLogFilter {
                filter_specifier: Some(FilterSpecifier::ExtensionFilter(ExtensionFilter {
                    name: weft_xds::filter_name::CEL_ACCESS_LOG_FILTER.into(),
                    config_type: Some(extension_filter::ConfigType::TypedConfig(weft_xds::pack(
                        weft_xds::type_url::CEL_ACCESS_LOG_FILTER,
                        &ExpressionFilter {
                            expression: e.into(),
                            ..Default::default()
                        },
                    ))),
                })),
            }),
            config_type: Some(access_log::ConfigType::TypedConfig(weft_xds::pack(
                weft_xds::type_url::FILE_ACCESS_LOG,
                &FileAccessLog {
                    path: "/dev/null".into(),
                    ..Default::default()
                },
            ))),
        };
        let hcm = HttpConnectionManager {
            stat_prefix: "inbound_0.0.0.0_9080".into(),
            route_specifier: Some(RouteSpecifier::Rds(
                weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::Rds {
                    route_config_name: "r".into(),
                    ..Default::default()
                },
            )),
            http_filters: stats
                .into_iter()
                .map(|e| HttpFilter {
                    name: weft_xds::filter_name::ISTIO_STATS.into(),
                    config_type: Some(http_filter::ConfigType::TypedConfig(stats_any(e))),
                    ..Default::default()
                })
                .collect(),
            access_log: vec![access_log],
            tracing,
            ..Default::default()
        };
        l.filter_chains[0].filters = vec![xlistener::Filter {
            name: weft_xds::filter_name::HTTP_CONNECTION_MANAGER.into(),
            config_type: Some(xlistener::filter::ConfigType::TypedConfig(weft_xds::pack(
                weft_xds::type_url::HTTP_CONNECTION_MANAGER,
                &hcm,
            ))),
        }];
        l
    }

    fn tracing(
        tags: Vec<weft_xds::pb::envoy::r#type::tracing::v3::CustomTag>,
    ) -> http_connection_manager::Tracing {
        http_connection_manager::Tracing {
            random_sampling: Some(weft_xds::pb::envoy::r#type::v3::Percent { value: 0.0 }),
            custom_tags: tags,
            ..Default::default()
        }
    }

    #[test]
    fn telemetry_api_settings_are_read() {
        use weft_xds::pb::envoy::r#type::tracing::v3::{custom_tag, CustomTag};
        let stats = r#"{"metrics": [
            {"name": "request_bytes", "drop": true},
            {"dimensions": {"user": "request.headers['end-user']"},
             "tags_to_remove": ["request_protocol"]}
        ]}"#;
        let tags = vec![
            CustomTag {
                tag: "team".into(),
                r#type: Some(custom_tag::Type::Literal(custom_tag::Literal {
                    value: "blue".into(),
                })),
            },
            CustomTag {
                tag: "user".into(),
                r#type: Some(custom_tag::Type::RequestHeader(custom_tag::Header {
                    name: "End-User".into(),
                    default_value: "nobody".into(),
                })),
            },
        ];
        let x = http_listener(
            Some(stats),
            Some("response.code >= 400"),
            Some(tracing(tags)),
        );
        let l = Listener::try_from(&x).expect("valid");
        let o = l.stats.as_ref().expect("overrides");
        assert!(o.drops(crate::telemetry::overrides::REQUEST_BYTES));
        assert!(o.touches_http());
        let log = l.access_log.as_ref().expect("access log");
        assert!(log.filter.is_some());
        let t = l.tracing.as_ref().expect("tracing");
        assert!(
            t.report.is_none(),
            "no provider: no spans, context propagated"
        );
        assert_eq!(t.custom_tags.len(), 2);
        assert!(matches!(&t.custom_tags[1].1,
            crate::telemetry::spans::CustomTag::Header { name, default }
                if name == "end-user" && &**default == "nobody"));

        // Overrides that change nothing are no overrides; the network filter before tcp_proxy counts.
        let x = http_listener(Some(r#"{"metrics": []}"#), None, None);
        let l = Listener::try_from(&x).expect("valid");
        assert!(l.stats.is_none() && l.access_log.as_ref().is_some_and(|a| a.filter.is_none()));
        let mut x = tcp(Some(ClusterSpecifier::Cluster("c".into())), 1);
        x.filter_chains[0].filters.insert(
            0,
            xlistener::Filter {
                name: weft_xds::filter_name::ISTIO_STATS.into(),
                config_type: Some(xlistener::filter::ConfigType::TypedConfig(stats_any(
                    r#"{"metrics": [{"name": "tcp_sent_bytes_total", "drop": true}]}"#,
                ))),
            },
        );
        let l = Listener::try_from(&x).expect("valid");
        assert!(l.is_tcp() && l.stats.as_ref().is_some_and(|o| o.touches_tcp()));
        assert_eq!(l.tcp_reporting, Duration::from_secs(15), "Istio's default");
    }

    /// A TCP listener to cluster `c` with Istio's stats filter of `config` (JSON) before `tcp_proxy`.
    fn tcp_with_stats(config: &str) -> xlistener::Listener {
        let mut x = tcp(Some(ClusterSpecifier::Cluster("c".into())), 1);
        x.filter_chains[0].filters.insert(
            0,
            xlistener::Filter {
                name: weft_xds::filter_name::ISTIO_STATS.into(),
                config_type: Some(xlistener::filter::ConfigType::TypedConfig(stats_any(
                    config,
                ))),
            },
        );
        x
    }

    #[test]
    fn the_stats_filter_sets_how_often_tcp_connections_report() {
        let x = tcp(Some(ClusterSpecifier::Cluster("c".into())), 1);
        let l = Listener::try_from(&x).expect("valid");
        assert_eq!(l.tcp_reporting, Duration::from_secs(15), "no stats filter");
        // The interval alone: no overrides, and the interval applies.
        let l = Listener::try_from(&tcp_with_stats(r#"{"tcp_reporting_duration": "0.050s"}"#))
            .expect("valid");
        assert!(l.stats.is_none());
        assert_eq!(l.tcp_reporting, Duration::from_millis(50));
        let e = Listener::try_from(&tcp_with_stats(r#"{"tcp_reporting_duration": "5m"}"#))
            .expect_err("refused");
        assert_eq!(
            e.to_string(),
            "filter \"istio.stats\": tcp_reporting_duration: \"5m\" is not a duration (seconds ending in \"s\", such as \"15s\" or \"0.5s\")"
        );
    }

    #[test]
    fn bad_telemetry_settings_refuse_the_listener_naming_the_field() {
        use weft_xds::pb::envoy::config::accesslog::v3::{AccessLogFilter, StatusCodeFilter};
        use weft_xds::pb::envoy::r#type::tracing::v3::{custom_tag, CustomTag};
        let tag = |t: custom_tag::Type| {
            Some(tracing(vec![CustomTag {
                tag: "k".into(),
                r#type: Some(t),
            }]))
        };
        let mut status_filter = http_listener(None, None, None);
        {
            let xlistener::filter::ConfigType::TypedConfig(any) = status_filter.filter_chains[0]
                .filters[0]
                .config_type
                .as_mut()
                .expect("hcm")
            else {
                panic!("typed");
            };
            let mut hcm: HttpConnectionManager = weft_xds::unpack(any).expect("hcm");
            hcm.access_log[0].filter = Some(AccessLogFilter {
                filter_specifier: Some(FilterSpecifier::StatusCodeFilter(StatusCodeFilter {
                    comparison: None,
                })),
            });
            *any = weft_xds::pack(weft_xds::type_url::HTTP_CONNECTION_MANAGER, &hcm);
        }
        let cases: Vec<(&str, xlistener::Listener, &str)> = vec![
            (
                "a tag expression outside the subset",
                http_listener(
                    Some(r#"{"metrics": [{"dimensions": {"u": "response.code + 1"}}]}"#),
                    None,
                    None,
                ),
                "http_filters[0] \"istio.stats\": metrics[0].dimensions.u: CEL expression \"response.code + 1\" at offset 14: arithmetic is not supported",
            ),
            (
                "a metric weft does not record",
                http_listener(Some(r#"{"metrics": [{"name": "my_metric"}]}"#), None, None),
                "http_filters[0] \"istio.stats\": metrics[0].name: \"my_metric\" is not a metric weft records",
            ),
            (
                "an access-log filter outside the subset",
                http_listener(None, Some("size(request.path) > 3"), None),
                "access_log envoy.access_loggers.file: filter: CEL expression \"size(request.path) > 3\" at offset 0: function size() is not supported (weft supports has, string, int, and the methods startsWith, endsWith, contains)",
            ),
            (
                "an access-log filter of another kind",
                status_filter,
                "access_log envoy.access_loggers.file: filter: only the CEL extension filter (envoy.access_loggers.extension_filters.cel) is supported",
            ),
            (
                "a metadata span tag",
                http_listener(
                    None,
                    None,
                    tag(custom_tag::Type::Metadata(Default::default())),
                ),
                "tracing: custom_tags[0] \"k\": only literal, environment and request_header tags are supported",
            ),
        ];
        for (name, x, want) in cases {
            let e = Listener::try_from(&x).expect_err(name);
            assert_eq!(e.to_string(), want, "{name}");
        }
        let mut x = tcp(Some(ClusterSpecifier::Cluster("c".into())), 1);
        x.filter_chains[0].filters.insert(
            0,
            xlistener::Filter {
                name: weft_xds::filter_name::ISTIO_STATS.into(),
                config_type: Some(xlistener::filter::ConfigType::TypedConfig(stats_any(
                    r#"{"metrics": [{"drop": "yes"}]}"#,
                ))),
            },
        );
        let e = Listener::try_from(&x).expect_err("network filter");
        assert_eq!(
            e.to_string(),
            "filter \"istio.stats\": metrics[0].drop: not a boolean"
        );
    }

    /// `filter`'s connection manager (an HTTP listener's) edited by `edit`.
    fn with_hcm(
        mut x: xlistener::Listener,
        edit: impl FnOnce(&mut HttpConnectionManager),
    ) -> xlistener::Listener {
        let Some(xlistener::filter::ConfigType::TypedConfig(any)) =
            x.filter_chains[0].filters[0].config_type.as_mut()
        else {
            panic!("typed");
        };
        let mut hcm: HttpConnectionManager = weft_xds::unpack(any).expect("hcm");
        edit(&mut hcm);
        *any = weft_xds::pack(weft_xds::type_url::HTTP_CONNECTION_MANAGER, &hcm);
        x
    }

    /// An RBAC config with `action` and one policy `p` matching everyone on any request.
    fn rbac_rules(action: i32) -> weft_xds::pb::envoy::config::rbac::v3::Rbac {
        use weft_xds::pb::envoy::config::rbac::v3::{
            permission, principal, Permission, Policy, Principal,
        };
        let p = Policy {
            permissions: vec![Permission {
                rule: Some(permission::Rule::Any(true)),
            }],
            principals: vec![Principal {
                identifier: Some(principal::Identifier::Any(true)),
            }],
            ..Default::default()
        };
        weft_xds::pb::envoy::config::rbac::v3::Rbac {
            action,
            policies: [("p".to_string(), p)].into_iter().collect(),
            audit_logging_options: None,
        }
    }

    fn http_rbac(
        rules: Option<weft_xds::pb::envoy::config::rbac::v3::Rbac>,
    ) -> weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter
    {
        use weft_xds::pb::envoy::extensions::filters::http::rbac::v3::Rbac;
        weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter {
            name: authz::HTTP_RBAC_FILTER.into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(weft_xds::pack(
                authz::HTTP_RBAC_TYPE,
                &Rbac {
                    rules,
                    ..Default::default()
                },
            ))),
            ..Default::default()
        }
    }

    fn network_rbac(rules: weft_xds::pb::envoy::config::rbac::v3::Rbac) -> xlistener::Filter {
        use weft_xds::pb::envoy::extensions::filters::network::rbac::v3::Rbac;
        xlistener::Filter {
            name: authz::NETWORK_RBAC_FILTER.into(),
            config_type: Some(xlistener::filter::ConfigType::TypedConfig(weft_xds::pack(
                authz::NETWORK_RBAC_TYPE,
                &Rbac {
                    rules: Some(rules),
                    stat_prefix: "tcp.".into(),
                    ..Default::default()
                },
            ))),
        }
    }

    /// A plaintext caller with no identity, the one the listener tests check requests of.
    fn plain_subject() -> authz::Subject<'static> {
        authz::Subject {
            source: "10.0.0.1:1".parse().expect("addr"),
            destination: "10.0.0.2:9080".parse().expect("addr"),
            principal: None,
            sni: None,
            auth: None,
        }
    }

    #[test]
    fn rbac_filters_and_path_normalization_are_read() {
        use authz::Decision;
        let subject = plain_subject();
        let req = ::http::Request::new(()).into_parts().0;
        // No RBAC filter, nothing said of paths: nothing to check, nothing to normalize.
        let l = Listener::try_from(&http_listener(None, None, None)).expect("valid");
        assert!(l.rbac.is_none() && l.path_normalization.is_none());
        // Istio's DENY then ALLOW, and its BASE normalization; a filter without rules adds nothing.
        let x = with_hcm(http_listener(None, None, None), |hcm| {
            hcm.normalize_path = Some(weft_xds::pb::google::protobuf::BoolValue { value: true });
            hcm.http_filters = vec![
                http_rbac(None),
                http_rbac(Some(rbac_rules(1))),
                http_rbac(Some(rbac_rules(0))),
            ];
        });
        let l = Listener::try_from(&x).expect("valid");
        assert_eq!(l.path_normalization, PathNormalization::BASE);
        let rbac = l.rbac.as_ref().expect("rbac");
        assert_eq!(
            rbac.check_http(&subject, &req),
            Decision::Deny {
                policy: Some("p".into())
            }
        );
        // A network RBAC filter before tcp_proxy.
        let mut x = tcp(Some(ClusterSpecifier::Cluster("c".into())), 1);
        x.filter_chains[0]
            .filters
            .insert(0, network_rbac(rbac_rules(1)));
        let l = Listener::try_from(&x).expect("valid");
        assert!(l.is_tcp());
        assert!(l.rbac.as_ref().expect("rbac").check_tcp(&subject).is_deny());
    }

    #[test]
    fn bad_rbac_and_normalization_refuse_the_listener_naming_the_filter() {
        let mut bad_action = rbac_rules(0);
        bad_action.action = 5;
        let mut disabled = http_rbac(Some(rbac_rules(0)));
        disabled.disabled = true;
        let mut untyped = http_rbac(None);
        untyped.config_type = None;
        let cases: Vec<(&str, xlistener::Listener, &str)> = vec![
            (
                "a bad action",
                with_hcm(http_listener(None, None, None), |h| h.http_filters = vec![http_rbac(Some(bad_action.clone()))]),
                "http_filters[0] \"envoy.filters.http.rbac\": rules.action: 5 is not ALLOW, DENY or LOG",
            ),
            (
                "disabled",
                with_hcm(http_listener(None, None, None), |h| h.http_filters = vec![disabled]),
                "http_filters[0] \"envoy.filters.http.rbac\": disabled: an HTTP filter enabled per route is not supported",
            ),
            (
                "no typed config",
                with_hcm(http_listener(None, None, None), |h| h.http_filters = vec![untyped]),
                "http_filters[0] \"envoy.filters.http.rbac\": typed_config: not set (weft reads only a typed_config)",
            ),
            (
                "redirect",
                with_hcm(http_listener(None, None, None), |h| h.path_with_escaped_slashes_action = 3),
                "path normalization: path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT is not supported",
            ),
            (
                "network RBAC before a connection manager",
                {
                    let mut x = http_listener(None, None, None);
                    x.filter_chains[0].filters.insert(0, network_rbac(rbac_rules(0)));
                    x
                },
                "filter \"envoy.filters.network.rbac\": a network RBAC filter before an HTTP connection manager is not supported (weft checks HTTP requests with the HTTP RBAC filter in http_filters)",
            ),
            (
                "a bad network RBAC",
                {
                    let mut x = tcp(Some(ClusterSpecifier::Cluster("c".into())), 1);
                    x.filter_chains[0].filters.insert(0, network_rbac(bad_action));
                    x
                },
                "filter \"envoy.filters.network.rbac\": rules.action: 5 is not ALLOW, DENY or LOG",
            ),
        ];
        for (name, x, want) in cases {
            let e = Listener::try_from(&x).expect_err(name);
            let mut chain = e.to_string();
            let mut cur = std::error::Error::source(&e);
            while let Some(c) = cur {
                chain.push_str(": ");
                chain.push_str(&c.to_string());
                cur = c.source();
            }
            assert_eq!(chain, want, "{name}");
        }
    }

    /// The RBAC filter istiod puts before ext_authz: rules that only mark (`/admin*` here).
    fn marking_rbac(
        prefix: &str,
    ) -> weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter
    {
        use weft_xds::pb::envoy::config::rbac::v3::{
            permission, principal, Permission, Policy, Principal,
        };
        use weft_xds::pb::envoy::extensions::filters::http::rbac::v3::Rbac;
        use weft_xds::pb::envoy::r#type::matcher::v3::{
            path_matcher, string_matcher::MatchPattern, PathMatcher, StringMatcher,
        };
        let admin = Policy {
            permissions: vec![Permission {
                rule: Some(permission::Rule::UrlPath(PathMatcher {
                    rule: Some(path_matcher::Rule::Path(StringMatcher {
                        match_pattern: Some(MatchPattern::Prefix("/admin".into())),
                        ignore_case: false,
                    })),
                })),
            }],
            principals: vec![Principal {
                identifier: Some(principal::Identifier::Any(true)),
            }],
            ..Default::default()
        };
        let shadow = weft_xds::pb::envoy::config::rbac::v3::Rbac {
            action: 1,
            policies: [(
                "istio-ext-authz-a-ns[foo]-policy[x]-rule[0]".to_string(),
                admin,
            )]
            .into_iter()
            .collect(),
            audit_logging_options: None,
        };
        weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter {
            name: authz::HTTP_RBAC_FILTER.into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(weft_xds::pack(
                authz::HTTP_RBAC_TYPE,
                &Rbac {
                    shadow_rules: Some(shadow),
                    shadow_rules_stat_prefix: prefix.into(),
                    ..Default::default()
                },
            ))),
            ..Default::default()
        }
    }

    /// An HTTP ext_authz filter as istiod sends it, edited by `edit`.
    fn ext_authz(
        edit: impl FnOnce(&mut weft_xds::pb::envoy::extensions::filters::http::ext_authz::v3::ExtAuthz),
    ) -> weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter
    {
        use weft_xds::pb::envoy::config::core::v3::{http_uri, HttpUri};
        use weft_xds::pb::envoy::extensions::filters::http::ext_authz::v3::{
            ext_authz::Services, ExtAuthz, HttpService,
        };
        use weft_xds::pb::envoy::r#type::matcher::v3::{
            metadata_matcher::{path_segment::Segment, PathSegment},
            string_matcher::MatchPattern,
            value_matcher, MetadataMatcher, StringMatcher, ValueMatcher,
        };
        let mut c = ExtAuthz {
            transport_api_version: 2,
            filter_enabled_metadata: Some(MetadataMatcher {
                filter: authz::HTTP_RBAC_FILTER.into(),
                path: vec![PathSegment {
                    segment: Some(Segment::Key(
                        "istio_ext_authz_shadow_effective_policy_id".into(),
                    )),
                }],
                value: Some(ValueMatcher {
                    match_pattern: Some(value_matcher::MatchPattern::StringMatch(StringMatcher {
                        match_pattern: Some(MatchPattern::Prefix("istio-ext-authz-a-".into())),
                        ignore_case: false,
                    })),
                }),
                ..Default::default()
            }),
            services: Some(Services::HttpService(HttpService {
                server_uri: Some(HttpUri {
                    uri: "http://authz".into(),
                    http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(
                        "outbound|80||authz".into(),
                    )),
                    timeout: Some(weft_xds::pb::google::protobuf::Duration {
                        seconds: 1,
                        nanos: 0,
                    }),
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        edit(&mut c);
        weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter {
            name: crate::ext_authz::HTTP_FILTER.into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(weft_xds::pack(
                crate::ext_authz::HTTP_TYPE,
                &c,
            ))),
            ..Default::default()
        }
    }

    #[test]
    fn ext_authz_takes_its_marking_rbac_filter() {
        let subject = plain_subject();
        let x = with_hcm(http_listener(None, None, None), |hcm| {
            hcm.http_filters = vec![
                marking_rbac("istio_ext_authz_"),
                ext_authz(|_| {}),
                http_rbac(Some(rbac_rules(0))),
            ];
        });
        let l = Listener::try_from(&x).expect("valid");
        let ext = l.ext_authz.as_ref().expect("ext_authz");
        let req = |path: &str| {
            ::http::Request::get(path)
                .body(())
                .expect("request")
                .into_parts()
                .0
        };
        assert!(ext.applies(&subject, Some(&req("/admin/x"))));
        assert!(!ext.applies(&subject, Some(&req("/"))));
        // The marking filter is the ext_authz filter's: the listener's RBAC is the ALLOW one alone,
        // with no shadow rules.
        let rbac = l.rbac.as_ref().expect("rbac");
        assert!(!rbac.has_shadow());
        assert!(!rbac.check_http(&subject, &req("/")).is_deny());
        // No `filter_enabled_metadata`: every request.
        let x = with_hcm(http_listener(None, None, None), |hcm| {
            hcm.http_filters = vec![ext_authz(|c| c.filter_enabled_metadata = None)];
        });
        let l = Listener::try_from(&x).expect("valid");
        assert!(l
            .ext_authz
            .as_ref()
            .expect("ext")
            .applies(&subject, Some(&req("/"))));
        assert!(l.rbac.is_none());
    }

    #[test]
    fn bad_ext_authz_refuses_the_listener_naming_the_filter_and_field() {
        use weft_xds::pb::envoy::config::core::v3::{grpc_service, GrpcService};
        use weft_xds::pb::envoy::extensions::filters::http::ext_authz::v3::ext_authz::Services;
        let mut disabled = ext_authz(|_| {});
        disabled.disabled = true;
        let chain = |filters: Vec<_>| {
            with_hcm(http_listener(None, None, None), |h| {
                h.http_filters = filters
            })
        };
        let cases: Vec<(&str, xlistener::Listener, &str)> = vec![
            (
                "no marking filter",
                chain(vec![ext_authz(|_| {})]),
                "http_filters[0] \"envoy.filters.http.ext_authz\": filter_enabled_metadata: no earlier envoy.filters.http.rbac filter has shadow rules writing \"istio_ext_authz_shadow_effective_policy_id\"",
            ),
            (
                "a marking filter under another prefix",
                chain(vec![marking_rbac("other_"), ext_authz(|_| {})]),
                "http_filters[1] \"envoy.filters.http.ext_authz\": filter_enabled_metadata: no earlier envoy.filters.http.rbac filter has shadow rules writing \"istio_ext_authz_shadow_effective_policy_id\"",
            ),
            (
                "RBAC rules before it",
                chain(vec![http_rbac(Some(rbac_rules(1))), marking_rbac("istio_ext_authz_"), ext_authz(|_| {})]),
                "http_filters[2] \"envoy.filters.http.ext_authz\": ext_authz: an envoy.filters.http.rbac filter with rules before it is not supported",
            ),
            (
                "two of them",
                chain(vec![ext_authz(|c| c.filter_enabled_metadata = None), ext_authz(|c| c.filter_enabled_metadata = None)]),
                "http_filters[1] \"envoy.filters.http.ext_authz\": ext_authz: a second ext_authz filter is not supported",
            ),
            (
                "disabled",
                chain(vec![disabled]),
                "http_filters[0] \"envoy.filters.http.ext_authz\": disabled: an HTTP filter enabled per route is not supported",
            ),
            (
                "google_grpc",
                chain(vec![ext_authz(|c| {
                    c.filter_enabled_metadata = None;
                    c.services = Some(Services::GrpcService(GrpcService {
                        target_specifier: Some(grpc_service::TargetSpecifier::GoogleGrpc(Default::default())),
                        ..Default::default()
                    }));
                })]),
                "http_filters[0] \"envoy.filters.http.ext_authz\": grpc_service: google_grpc (weft calls through envoy_grpc) is not supported",
            ),
            (
                "no timeout",
                chain(vec![ext_authz(|c| {
                    c.filter_enabled_metadata = None;
                    if let Some(Services::HttpService(h)) = &mut c.services {
                        if let Some(u) = &mut h.server_uri {
                            u.timeout = None;
                        }
                    }
                })]),
                "http_filters[0] \"envoy.filters.http.ext_authz\": http_service.server_uri.timeout: is not set",
            ),
            (
                "a bad status",
                chain(vec![ext_authz(|c| {
                    c.filter_enabled_metadata = None;
                    c.status_on_error = Some(weft_xds::pb::envoy::r#type::v3::HttpStatus { code: 1000 });
                })]),
                "http_filters[0] \"envoy.filters.http.ext_authz\": status_on_error: 1000 is not an HTTP status",
            ),
        ];
        for (name, x, want) in cases {
            let e = Listener::try_from(&x).expect_err(name);
            let mut chain = e.to_string();
            let mut cur = std::error::Error::source(&e);
            while let Some(c) = cur {
                chain.push_str(": ");
                chain.push_str(&c.to_string());
                cur = c.source();
            }
            assert_eq!(chain, want, "{name}");
        }
    }
}
