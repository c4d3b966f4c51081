//! Listeners: Envoy's `Listener` converted into what the proxy needs — the address to bind (inbound) or the
//! port it stands for (virtual outbound), and where its routes come from (RDS name or inline table).

use super::route::{RouteConfig, RouteError};
use super::SocketAddressError;
use crate::telemetry::access_log::{self as access_log_format, AccessLog, Format};
use crate::telemetry::spans::Tracing;
use std::net::SocketAddr;
use std::sync::Arc;
use weft_xds::pb::envoy::config::accesslog::v3::{access_log, AccessLog as XAccessLog};
use weft_xds::pb::envoy::config::core::v3::{data_source, substitution_format_string};
use weft_xds::pb::envoy::config::listener::v3 as xlistener;
use weft_xds::pb::envoy::extensions::access_loggers::file::v3::{file_access_log, FileAccessLog};
use weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use weft_xds::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    tcp_proxy::ClusterSpecifier, TcpProxy,
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
    /// The TCP proxy names no single cluster.
    #[error("filter {filter:?}: TcpProxy needs `cluster` (weighted_clusters is not supported)")]
    TcpProxyCluster {
        /// The filter's name.
        filter: String,
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
    /// Not HTTP: opaque TCP to this cluster (`tcp_proxy`).
    Tcp(Arc<str>),
    /// Neither HTTP nor TCP: nothing the proxy serves.
    None,
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
}

impl Listener {
    /// Whether the proxy binds this listener: an inbound one (HTTP or TCP), or an outbound TCP one (a
    /// Sidecar egress port). Outbound HTTP goes through the explicit proxy and its virtual listeners.
    pub fn binds(&self) -> bool {
        self.bind
            && self.address.is_some()
            && (self.direction == Direction::Inbound || self.is_tcp())
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
        let filters = l
            .filter_chains
            .iter()
            .chain(l.default_filter_chain.iter())
            .flat_map(|fc| fc.filters.iter());
        for f in filters {
            let Some(xlistener::filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                continue;
            };
            if any.type_url == weft_xds::type_url::TCP_PROXY {
                let tcp: TcpProxy =
                    weft_xds::unpack(any).map_err(|source| ListenerError::TcpProxy {
                        filter: f.name.clone(),
                        source,
                    })?;
                routes = match tcp.cluster_specifier {
                    Some(ClusterSpecifier::Cluster(c)) if !c.is_empty() => {
                        RouteSource::Tcp(Arc::from(c))
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
            let hcm: HttpConnectionManager =
                weft_xds::unpack(any).map_err(|source| ListenerError::Hcm {
                    filter: f.name.clone(),
                    source,
                })?;
            access_log = file_access_log(&hcm.access_log)
                .map_err(|why| ListenerError::AccessLog { why })?
                .map(Arc::new);
            tracing = Tracing::from_hcm(hcm.tracing.as_ref())
                .map_err(|why| ListenerError::Tracing { why })?
                .map(Arc::new);
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
        Ok(Listener {
            name: l.name.clone(),
            address,
            bind: l.bind_to_port.as_ref().map(|b| b.value).unwrap_or(true),
            direction,
            routes,
            access_log,
            tracing,
        })
    }
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
        return Ok(Some(AccessLog::new(path, format)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_xds::pb::envoy::config::core::v3::{
        address, socket_address::PortSpecifier, Address, SocketAddress,
    };
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
            assert!(matches!(&l.routes, RouteSource::Tcp(n) if &**n == "outbound|9000||sink"));
            assert_eq!(l.address, Some("127.0.0.1:9000".parse().expect("addr")));
        }
        // A virtual (unbound) TCP listener is not bound.
        let mut x = tcp(c(), 2);
        x.bind_to_port = Some(weft_xds::pb::google::protobuf::BoolValue { value: false });
        assert!(!Listener::try_from(&x).expect("valid").binds());
    }

    #[test]
    fn tcp_proxy_without_one_cluster_is_refused() {
        let weighted = ClusterSpecifier::WeightedClusters(WeightedCluster::default());
        for spec in [
            None,
            Some(ClusterSpecifier::Cluster(String::new())),
            Some(weighted),
        ] {
            let e = Listener::try_from(&tcp(spec, 2)).expect_err("refused");
            assert!(matches!(e, ListenerError::TcpProxyCluster { .. }), "{e}");
        }
    }
}
