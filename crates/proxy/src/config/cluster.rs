//! Clusters and their endpoints: Envoy's `Cluster` and `ClusterLoadAssignment` converted into the
//! proxy's form. Endpoint sets are built once when their resource arrives, so their round-robin position
//! survives snapshots that do not change them.

use super::SocketAddressError;
use crate::balance::limits::Limits;
use crate::balance::{hash, outlier, EndpointSet, Lb};
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
    /// A load balancer weft does not implement.
    #[error("lb_policy: unsupported load balancer {0}")]
    LbPolicy(String),
    /// A ring or table size out of range.
    #[error("{field}: {value} is out of range ({expected})")]
    LbSize {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// What is accepted.
        expected: &'static str,
    },
    /// A duration that is negative or out of range.
    #[error("{0}: invalid duration")]
    Duration(&'static str),
    /// A percentage over 100.
    #[error("{field}: {value} is not a percentage")]
    Percent {
        /// The field.
        field: &'static str,
        /// Its value.
        value: f64,
    },
    /// The upstream HTTP protocol options do not decode.
    #[error("typed_extension_protocol_options: cannot decode {0}")]
    ProtocolOptions(String),
}

/// The key of Envoy's upstream HTTP protocol options in `typed_extension_protocol_options`.
pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

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
    /// Its traffic policy: load balancer, circuit breakers, outlier detection.
    pub policy: Policy,
}

/// A cluster's load balancer, circuit breakers and outlier detection. The circuit breakers' counters
/// are behind an `Arc`, so a cluster unchanged by an update keeps them (its converted form is reused).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// The load balancer.
    pub lb: Lb,
    /// The circuit breakers' thresholds and counters; `None`: no limits.
    pub limits: Option<Arc<Limits>>,
    /// Outlier detection; `None`: off.
    pub outlier: Option<Arc<outlier::Config>>,
    /// Requests per upstream connection (`max_requests_per_connection`); 0: unlimited.
    pub max_requests_per_connection: u32,
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
    /// Its traffic policy.
    pub policy: Policy,
    /// The consistent-hash table over its endpoints, for a hashing load balancer.
    pub table: Option<Arc<hash::Table>>,
}

/// A protobuf duration as a `Duration`; `field` names it in the error.
fn duration(
    d: &weft_xds::pb::google::protobuf::Duration,
    field: &'static str,
) -> Result<Duration, ClusterError> {
    let secs = u64::try_from(d.seconds).map_err(|_| ClusterError::Duration(field))?;
    let nanos = u32::try_from(d.nanos).map_err(|_| ClusterError::Duration(field))?;
    if nanos >= 1_000_000_000 {
        return Err(ClusterError::Duration(field));
    }
    Ok(Duration::new(secs, nanos))
}

/// The load balancer of `lb_policy` and `lb_config`.
fn lb(c: &xcluster::Cluster) -> Result<Lb, ClusterError> {
    use xcluster::cluster::{LbConfig, LbPolicy};
    let policy = LbPolicy::try_from(c.lb_policy)
        .map_err(|_| ClusterError::LbPolicy(c.lb_policy.to_string()))?;
    Ok(match policy {
        LbPolicy::RoundRobin => Lb::RoundRobin,
        LbPolicy::LeastRequest => Lb::LeastRequest,
        LbPolicy::Random => Lb::Random,
        LbPolicy::RingHash => {
            let min = match &c.lb_config {
                Some(LbConfig::RingHashLbConfig(r)) => {
                    r.minimum_ring_size.as_ref().map(|v| v.value)
                }
                _ => None,
            }
            .unwrap_or(hash::DEFAULT_RING_SIZE);
            if !(1..=hash::MAX_RING_SIZE).contains(&min) {
                return Err(ClusterError::LbSize {
                    field: "ring_hash_lb_config.minimum_ring_size",
                    value: min,
                    expected: "1 to 8388608",
                });
            }
            Lb::Hash(hash::Kind::Ring(min))
        }
        LbPolicy::Maglev => {
            let size = match &c.lb_config {
                Some(LbConfig::MaglevLbConfig(m)) => m.table_size.as_ref().map(|v| v.value),
                _ => None,
            }
            .unwrap_or(hash::DEFAULT_MAGLEV_SIZE);
            if !(2..=5_000_011).contains(&size)
                || !(2..).take_while(|d| d * d <= size).all(|d| size % d != 0)
            {
                return Err(ClusterError::LbSize {
                    field: "maglev_lb_config.table_size",
                    value: size,
                    expected: "a prime up to 5000011",
                });
            }
            Lb::Hash(hash::Kind::Maglev(size))
        }
        other => return Err(ClusterError::LbPolicy(other.as_str_name().to_string())),
    })
}

/// The default-priority circuit breaker thresholds (Envoy's HIGH priority is not used by Istio).
fn limits(c: &xcluster::Cluster) -> Option<Arc<Limits>> {
    let t = c
        .circuit_breakers
        .as_ref()?
        .thresholds
        .iter()
        .find(|t| t.priority == 0)?;
    // weft applies no limit where none is set (Envoy would apply 1024); weftd sets every threshold.
    let v = |x: &Option<weft_xds::pb::google::protobuf::UInt32Value>| {
        x.as_ref().map_or(u32::MAX, |v| v.value)
    };
    Limits::new(
        v(&t.max_connections),
        v(&t.max_pending_requests),
        v(&t.max_requests),
        v(&t.max_retries),
    )
    .map(Arc::new)
}

/// Outlier detection from `outlier_detection` and `common_lb_config.healthy_panic_threshold`.
fn outlier_config(c: &xcluster::Cluster) -> Result<Option<Arc<outlier::Config>>, ClusterError> {
    let Some(od) = &c.outlier_detection else {
        return Ok(None);
    };
    let d = outlier::Config::default();
    let u = |x: &Option<weft_xds::pb::google::protobuf::UInt32Value>, default: u32| {
        x.as_ref().map_or(default, |v| v.value)
    };
    let dur =
        |x: &Option<weft_xds::pb::google::protobuf::Duration>,
         field: &'static str,
         default: Duration| { x.as_ref().map_or(Ok(default), |v| duration(v, field)) };
    let percent = |value: u32, field: &'static str| {
        if value > 100 {
            Err(ClusterError::Percent {
                field,
                value: f64::from(value),
            })
        } else {
            Ok(value)
        }
    };
    let panic_percent = c
        .common_lb_config
        .as_ref()
        .and_then(|l| l.healthy_panic_threshold.as_ref())
        .map_or(d.panic_percent, |p| p.value);
    if !(0.0..=100.0).contains(&panic_percent) {
        return Err(ClusterError::Percent {
            field: "common_lb_config.healthy_panic_threshold",
            value: panic_percent,
        });
    }
    Ok(Some(Arc::new(outlier::Config {
        consecutive_5xx: u(&od.consecutive_5xx, d.consecutive_5xx),
        enforcing_5xx: percent(
            u(&od.enforcing_consecutive_5xx, d.enforcing_5xx),
            "outlier_detection.enforcing_consecutive_5xx",
        )?,
        consecutive_gateway: u(&od.consecutive_gateway_failure, d.consecutive_gateway),
        enforcing_gateway: percent(
            u(
                &od.enforcing_consecutive_gateway_failure,
                d.enforcing_gateway,
            ),
            "outlier_detection.enforcing_consecutive_gateway_failure",
        )?,
        split_local_origin: od.split_external_local_origin_errors,
        consecutive_local: u(&od.consecutive_local_origin_failure, d.consecutive_local),
        enforcing_local: percent(
            u(
                &od.enforcing_consecutive_local_origin_failure,
                d.enforcing_local,
            ),
            "outlier_detection.enforcing_consecutive_local_origin_failure",
        )?,
        interval: dur(&od.interval, "outlier_detection.interval", d.interval)?,
        base_ejection: dur(
            &od.base_ejection_time,
            "outlier_detection.base_ejection_time",
            d.base_ejection,
        )?,
        max_ejection: dur(
            &od.max_ejection_time,
            "outlier_detection.max_ejection_time",
            d.max_ejection,
        )?,
        max_ejection_percent: percent(
            u(&od.max_ejection_percent, d.max_ejection_percent),
            "outlier_detection.max_ejection_percent",
        )?,
        panic_percent,
    })))
}

/// `max_requests_per_connection` from the upstream HTTP protocol options; 0: unlimited.
fn max_requests_per_connection(c: &xcluster::Cluster) -> Result<u32, ClusterError> {
    use weft_xds::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
    let Some(any) = c
        .typed_extension_protocol_options
        .get(HTTP_PROTOCOL_OPTIONS)
    else {
        return Ok(0);
    };
    let bad = || ClusterError::ProtocolOptions(HTTP_PROTOCOL_OPTIONS.to_string());
    if any.type_url.rsplit('/').next() != Some(HTTP_PROTOCOL_OPTIONS) {
        return Err(bad());
    }
    let o: HttpProtocolOptions = weft_xds::unpack(any).map_err(|_| bad())?;
    Ok(o.common_http_protocol_options
        .and_then(|c| c.max_requests_per_connection)
        .map_or(0, |v| v.value))
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
        let policy = Policy {
            lb: lb(c)?,
            limits: limits(c),
            outlier: outlier_config(c)?,
            max_requests_per_connection: max_requests_per_connection(c)?,
        };
        Ok(ClusterConfig {
            name: c.name.clone(),
            discovery,
            connect_timeout,
            tls,
            policy,
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

#[cfg(test)]
mod tests {
    use super::*;
    use weft_xds::pb::envoy::config::cluster::v3::{
        circuit_breakers::Thresholds, cluster, CircuitBreakers, Cluster as XdsCluster,
        OutlierDetection,
    };
    use weft_xds::pb::google::protobuf::{Duration as PbDuration, UInt32Value, UInt64Value};

    fn base() -> XdsCluster {
        XdsCluster {
            name: "outbound|9080||r".into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32,
            )),
            ..Default::default()
        }
    }

    fn u(value: u32) -> Option<UInt32Value> {
        Some(UInt32Value { value })
    }

    #[test]
    fn policies_convert() {
        let mut c = base();
        c.lb_policy = cluster::LbPolicy::Maglev as i32;
        c.lb_config = Some(cluster::LbConfig::MaglevLbConfig(cluster::MaglevLbConfig {
            table_size: Some(UInt64Value { value: 131 }),
        }));
        c.circuit_breakers = Some(CircuitBreakers {
            thresholds: vec![Thresholds {
                max_connections: u(1),
                max_pending_requests: u(2),
                max_requests: u(u32::MAX),
                ..Default::default()
            }],
            ..Default::default()
        });
        c.outlier_detection = Some(OutlierDetection {
            consecutive_5xx: u(1),
            base_ejection_time: Some(PbDuration {
                seconds: 3,
                nanos: 0,
            }),
            max_ejection_percent: u(100),
            ..Default::default()
        });
        let opts = weft_xds::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions {
            common_http_protocol_options: Some(
                weft_xds::pb::envoy::config::core::v3::HttpProtocolOptions {
                    max_requests_per_connection: u(1),
                    ..Default::default()
                },
            ),
            ..Default::default()
        };
        c.typed_extension_protocol_options.insert(
            HTTP_PROTOCOL_OPTIONS.into(),
            weft_xds::pack(
                &format!("type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}"),
                &opts,
            ),
        );
        let p = ClusterConfig::try_from(&c).expect("valid").policy;
        assert_eq!(p.lb, Lb::Hash(hash::Kind::Maglev(131)));
        let l = p.limits.expect("limits");
        assert_eq!(l.thresholds(), [1, 2, u32::MAX, u32::MAX]);
        let o = p.outlier.expect("outlier detection");
        assert_eq!(o.consecutive_5xx, 1);
        assert_eq!(o.base_ejection, Duration::from_secs(3));
        assert_eq!(o.max_ejection_percent, 100);
        assert_eq!(o.consecutive_gateway, 5, "Envoy's defaults for the rest");
        assert_eq!(o.panic_percent, 50.0);
        assert_eq!(p.max_requests_per_connection, 1);

        let plain = ClusterConfig::try_from(&base()).expect("valid").policy;
        assert_eq!(plain.lb, Lb::RoundRobin);
        assert!(plain.limits.is_none() && plain.outlier.is_none());
        assert_eq!(plain.max_requests_per_connection, 0);
    }

    #[test]
    fn bad_policies_are_rejected_naming_the_field() {
        let cases: Vec<(&str, XdsCluster, &str)> = vec![
            (
                "original destination",
                XdsCluster {
                    lb_policy: cluster::LbPolicy::ClusterProvided as i32,
                    ..base()
                },
                "lb_policy: unsupported load balancer CLUSTER_PROVIDED",
            ),
            (
                "unknown lb",
                XdsCluster {
                    lb_policy: 99,
                    ..base()
                },
                "lb_policy: unsupported load balancer 99",
            ),
            (
                "table not prime",
                XdsCluster {
                    lb_policy: cluster::LbPolicy::Maglev as i32,
                    lb_config: Some(cluster::LbConfig::MaglevLbConfig(cluster::MaglevLbConfig {
                        table_size: Some(UInt64Value { value: 100 }),
                    })),
                    ..base()
                },
                "maglev_lb_config.table_size: 100 is out of range (a prime up to 5000011)",
            ),
            (
                "ring of 0",
                XdsCluster {
                    lb_policy: cluster::LbPolicy::RingHash as i32,
                    lb_config: Some(cluster::LbConfig::RingHashLbConfig(
                        cluster::RingHashLbConfig {
                            minimum_ring_size: Some(UInt64Value { value: 0 }),
                            ..Default::default()
                        },
                    )),
                    ..base()
                },
                "ring_hash_lb_config.minimum_ring_size: 0 is out of range (1 to 8388608)",
            ),
            (
                "negative ejection time",
                XdsCluster {
                    outlier_detection: Some(OutlierDetection {
                        base_ejection_time: Some(PbDuration {
                            seconds: -1,
                            nanos: 0,
                        }),
                        ..Default::default()
                    }),
                    ..base()
                },
                "outlier_detection.base_ejection_time: invalid duration",
            ),
            (
                "ejection percent over 100",
                XdsCluster {
                    outlier_detection: Some(OutlierDetection {
                        max_ejection_percent: u(101),
                        ..Default::default()
                    }),
                    ..base()
                },
                "outlier_detection.max_ejection_percent: 101 is not a percentage",
            ),
            (
                "protocol options of another type",
                {
                    let mut c = base();
                    c.typed_extension_protocol_options.insert(
                        HTTP_PROTOCOL_OPTIONS.into(),
                        weft_xds::pack("type.googleapis.com/google.protobuf.UInt32Value", &UInt32Value { value: 1 }),
                    );
                    c
                },
                "typed_extension_protocol_options: cannot decode envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            ),
        ];
        for (name, c, want) in cases {
            match ClusterConfig::try_from(&c) {
                Ok(_) => panic!("case {name}: accepted"),
                Err(e) => assert_eq!(e.to_string(), want, "case {name}"),
            }
        }
    }
}
