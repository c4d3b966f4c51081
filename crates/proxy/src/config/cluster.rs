//! Clusters and their endpoints: Envoy's `Cluster` and `ClusterLoadAssignment` converted into the
//! proxy's form. Endpoint sets are built once when their resource arrives, so their round-robin position
//! survives snapshots that do not change them.

use super::SocketAddressError;
use crate::balance::EndpointSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use weft_xds::pb::envoy::config::cluster::v3 as xcluster;
use weft_xds::pb::envoy::config::endpoint::v3 as xendpoint;

/// Envoy's default `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a cluster or load assignment was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A discovery type weft does not implement.
    #[error("unsupported cluster type {0}")]
    UnsupportedType(String),
    /// `connect_timeout` is negative or out of range.
    #[error("connect_timeout: invalid duration")]
    ConnectTimeout,
    /// An endpoint's address is unusable.
    #[error("endpoint {locality}.{index}")]
    Endpoint {
        /// Index of the locality group.
        locality: usize,
        /// Index in the group.
        index: usize,
        /// What was wrong.
        #[source]
        source: SocketAddressError,
    },
    /// The load assignment of a static cluster is invalid.
    #[error("load_assignment")]
    LoadAssignment(#[source] Box<ClusterError>),
    /// Its TLS settings are ones the proxy does not implement.
    #[error("{0}")]
    Tls(String),
}

/// How a cluster finds its endpoints.
#[derive(Debug, Clone)]
pub enum Discovery {
    /// From EDS, under this service name.
    Eds(String),
    /// Fixed in the cluster.
    Static(Arc<EndpointSet>),
}

/// A cluster as received from CDS.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Its name.
    pub name: String,
    /// Where its endpoints come from.
    pub discovery: Discovery,
    /// Connect timeout towards its endpoints.
    pub connect_timeout: Duration,
    /// How it speaks to its endpoints: plaintext or mutual TLS (see `tls::Upstream`).
    pub tls: crate::tls::Upstream,
}

/// A cluster in a snapshot, with the endpoints it has now (possibly none).
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Its name.
    pub name: String,
    /// Its endpoints.
    pub endpoints: Arc<EndpointSet>,
    /// Connect timeout towards its endpoints.
    pub connect_timeout: Duration,
    /// The service it sends to, as metrics name it (from an outbound cluster's name).
    pub service: Option<Arc<crate::telemetry::Service>>,
    /// Its TLS settings when it speaks mutual TLS, and whether to every endpoint or only to those with a
    /// sidecar; `None`: plaintext (also when the proxy has no identity to speak TLS with).
    pub tls: Option<(weft_http::tls::ClientTls, bool)>,
}

impl TryFrom<&xcluster::Cluster> for ClusterConfig {
    type Error = ClusterError;

    fn try_from(c: &xcluster::Cluster) -> Result<Self, ClusterError> {
        use xcluster::cluster::ClusterDiscoveryType as T;
        let connect_timeout = match &c.connect_timeout {
            None => DEFAULT_CONNECT_TIMEOUT,
            Some(d) => {
                let secs = u64::try_from(d.seconds).map_err(|_| ClusterError::ConnectTimeout)?;
                let nanos = u32::try_from(d.nanos).map_err(|_| ClusterError::ConnectTimeout)?;
                if nanos >= 1_000_000_000 {
                    return Err(ClusterError::ConnectTimeout);
                }
                let d = Duration::new(secs, nanos);
                if d.is_zero() {
                    DEFAULT_CONNECT_TIMEOUT
                } else {
                    d
                }
            }
        };
        let discovery = match &c.cluster_discovery_type {
            Some(T::Type(3)) => {
                let service = c
                    .eds_cluster_config
                    .as_ref()
                    .map(|e| e.service_name.clone())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| c.name.clone());
                Discovery::Eds(service)
            }
            // STATIC (0, also the proto default) and the DNS types with IP literals.
            None | Some(T::Type(0)) => {
                let eps = match &c.load_assignment {
                    Some(la) => {
                        endpoints(la).map_err(|e| ClusterError::LoadAssignment(Box::new(e)))?
                    }
                    None => Vec::new(),
                };
                Discovery::Static(Arc::new(EndpointSet::with_sidecars(eps)))
            }
            Some(T::Type(t)) => {
                let name = xcluster::cluster::DiscoveryType::try_from(*t)
                    .map(|t| t.as_str_name().to_string())
                    .unwrap_or_else(|_| t.to_string());
                return Err(ClusterError::UnsupportedType(name));
            }
            Some(T::ClusterType(ct)) => return Err(ClusterError::UnsupportedType(ct.name.clone())),
        };
        let tls = crate::tls::upstream(c).map_err(ClusterError::Tls)?;
        Ok(ClusterConfig {
            name: c.name.clone(),
            discovery,
            connect_timeout,
            tls,
        })
    }
}

/// The usable endpoint addresses of a load assignment (unhealthy, draining and timed-out hosts left out),
/// each with whether its metadata says it has a sidecar (`tlsMode: istio`).
pub fn endpoints(
    la: &xendpoint::ClusterLoadAssignment,
) -> Result<Vec<(SocketAddr, bool)>, ClusterError> {
    let mut out = Vec::new();
    for (locality, group) in la.endpoints.iter().enumerate() {
        for (index, lb) in group.lb_endpoints.iter().enumerate() {
            // HealthStatus: UNHEALTHY = 2, DRAINING = 3, TIMEOUT = 4.
            if matches!(lb.health_status, 2..=4) {
                continue;
            }
            let Some(xendpoint::lb_endpoint::HostIdentifier::Endpoint(ep)) = &lb.host_identifier
            else {
                continue;
            };
            let Some(addr) = &ep.address else { continue };
            let sa = super::socket_addr(addr).map_err(|source| ClusterError::Endpoint {
                locality,
                index,
                source,
            })?;
            out.push((sa, crate::tls::endpoint_has_sidecar(lb.metadata.as_ref())));
        }
    }
    Ok(out)
}
