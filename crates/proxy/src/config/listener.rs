//! Listeners: Envoy's `Listener` converted into what the proxy needs — the address to bind (inbound) or the
//! port it stands for (virtual outbound), and where its routes come from (RDS name or inline table).

use super::route::{RouteConfig, RouteError};
use super::SocketAddressError;
use std::net::SocketAddr;
use std::sync::Arc;
use weft_xds::pb::envoy::config::listener::v3 as xlistener;
use weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
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
    /// Not an HTTP listener.
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
}

impl Listener {
    /// Whether this is an inbound listener the proxy should bind.
    pub fn binds_inbound(&self) -> bool {
        self.bind && self.direction == Direction::Inbound && self.address.is_some()
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
        let filters = l
            .filter_chains
            .iter()
            .chain(l.default_filter_chain.iter())
            .flat_map(|fc| fc.filters.iter());
        for f in filters {
            let Some(xlistener::filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                continue;
            };
            if any.type_url != weft_xds::type_url::HTTP_CONNECTION_MANAGER {
                continue;
            }
            let hcm: HttpConnectionManager =
                weft_xds::unpack(any).map_err(|source| ListenerError::Hcm {
                    filter: f.name.clone(),
                    source,
                })?;
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
        })
    }
}
