//! DestinationRule: subsets and traffic policy for a host.

use crate::duration::Duration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

type Loose = serde_yaml_ng::Value;

/// `spec` of a DestinationRule.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DestinationRule {
    /// The host the rule is for.
    #[serde(default)]
    pub host: String,
    /// Policy for the whole host.
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named subsets by endpoint labels.
    #[serde(default)]
    pub subsets: Vec<Subset>,
    /// Namespaces this is visible to.
    #[serde(default)]
    pub export_to: Vec<String>,
    /// Which client workloads get this rule (Istio's `type.v1beta1.WorkloadSelector`: `matchLabels`).
    pub workload_selector: Option<crate::telemetry::Selector>,
}

/// A named group of endpoints.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Subset {
    /// Name used by routes.
    #[serde(default)]
    pub name: String,
    /// Endpoint labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Policy overriding the host's for this subset.
    pub traffic_policy: Option<TrafficPolicy>,
}

/// Load balancing, connection pool, outlier detection and TLS towards a destination.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficPolicy {
    /// Load balancer.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection pool limits.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Passive health checking.
    pub outlier_detection: Option<OutlierDetection>,
    /// Client TLS.
    pub tls: Option<ClientTlsSettings>,
    /// Per-port overrides.
    #[serde(default)]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    /// Tunnel settings.
    pub tunnel: Option<Loose>,
    /// PROXY protocol.
    pub proxy_protocol: Option<Loose>,
    /// Retry budget.
    pub retry_budget: Option<Loose>,
}

/// Per-port traffic policy.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortTrafficPolicy {
    /// Port.
    pub port: Option<crate::networking::virtual_service::PortSelector>,
    /// Load balancer.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection pool.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Outlier detection.
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS.
    pub tls: Option<ClientTlsSettings>,
}

/// Load balancer choice.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoadBalancerSettings {
    /// `ROUND_ROBIN`, `LEAST_REQUEST`, `RANDOM`, `PASSTHROUGH`, `LEAST_CONN`, `UNSPECIFIED`.
    pub simple: Option<String>,
    /// Consistent hashing (session affinity).
    pub consistent_hash: Option<ConsistentHashLb>,
    /// Locality load balancing.
    pub locality_lb_setting: Option<Loose>,
    /// Zone-aware load balancing.
    pub zone_aware_lb_setting: Option<Loose>,
    /// Slow start (deprecated form).
    pub warmup_duration_secs: Option<Duration>,
    /// Slow start.
    pub warmup: Option<Loose>,
}

/// Connection pool limits.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConnectionPoolSettings {
    /// TCP limits.
    pub tcp: Option<TcpSettings>,
    /// HTTP limits.
    pub http: Option<HttpSettings>,
}

/// TCP connection pool limits.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpSettings {
    /// Max connections.
    pub max_connections: Option<i64>,
    /// Connect timeout.
    pub connect_timeout: Option<Duration>,
    /// TCP keepalive probes on upstream connections.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Max connection duration.
    pub max_connection_duration: Option<Duration>,
    /// Idle timeout.
    pub idle_timeout: Option<Duration>,
}

/// `connectionPool.tcp.tcpKeepalive`: SO_KEEPALIVE and its timers (OS defaults when unset).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpKeepalive {
    /// Unanswered probes before the connection is dropped.
    pub probes: Option<i64>,
    /// Idle time before the first probe.
    pub time: Option<Duration>,
    /// Time between probes.
    pub interval: Option<Duration>,
}

/// `loadBalancer.consistentHash`: one hash key (`httpHeaderName`, `httpCookie`, `useSourceIp`,
/// `httpQueryParameterName`) and one algorithm (`ringHash`, the default, or `maglev`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConsistentHashLb {
    /// Hash on this request header.
    pub http_header_name: Option<String>,
    /// Hash on this cookie, generated when absent.
    pub http_cookie: Option<HttpCookie>,
    /// Hash on the client's IP address.
    pub use_source_ip: Option<bool>,
    /// Hash on this query parameter.
    pub http_query_parameter_name: Option<String>,
    /// Ketama-style ring.
    pub ring_hash: Option<RingHash>,
    /// Maglev table.
    pub maglev: Option<MagLev>,
    /// Deprecated form of `ringHash.minimumRingSize`.
    pub minimum_ring_size: Option<i64>,
}

/// The cookie of `consistentHash.httpCookie`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpCookie {
    /// Cookie name (required).
    #[serde(default)]
    pub name: String,
    /// Path set on a generated cookie.
    pub path: Option<String>,
    /// Lifetime of a generated cookie (0s: a session cookie).
    pub ttl: Option<Duration>,
    /// Further attributes of a generated cookie.
    #[serde(default)]
    pub attributes: Vec<Loose>,
}

/// `consistentHash.ringHash`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RingHash {
    /// Minimum number of virtual nodes on the ring (default 1024).
    pub minimum_ring_size: Option<i64>,
}

/// `consistentHash.maglev`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MagLev {
    /// Lookup table size, a prime (default 65537).
    pub table_size: Option<i64>,
}

/// HTTP connection pool limits.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpSettings {
    /// Max pending requests.
    pub http1_max_pending_requests: Option<i64>,
    /// Max active requests.
    pub http2_max_requests: Option<i64>,
    /// Requests per connection.
    pub max_requests_per_connection: Option<i64>,
    /// Max concurrent retries.
    pub max_retries: Option<i64>,
    /// Idle timeout.
    pub idle_timeout: Option<Duration>,
    /// HTTP/2 upgrade.
    pub h2_upgrade_policy: Option<String>,
    /// Use the client's protocol upstream.
    pub use_client_protocol: Option<bool>,
    /// Max concurrent streams.
    pub max_concurrent_streams: Option<i64>,
    /// HTTP/2 keepalive.
    pub http2_keep_alive: Option<Loose>,
}

/// Outlier detection.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutlierDetection {
    /// Deprecated.
    pub consecutive_errors: Option<i64>,
    /// Consecutive 5xx before ejection.
    #[serde(rename = "consecutive5xxErrors")]
    pub consecutive_5xx_errors: Option<i64>,
    /// Consecutive gateway errors.
    pub consecutive_gateway_errors: Option<i64>,
    /// Split local-origin errors.
    pub split_external_local_origin_errors: Option<bool>,
    /// Local-origin failures.
    pub consecutive_local_origin_failures: Option<i64>,
    /// Sweep interval.
    pub interval: Option<Duration>,
    /// Base ejection time.
    pub base_ejection_time: Option<Duration>,
    /// Max ejection percent.
    pub max_ejection_percent: Option<i64>,
    /// Min health percent.
    pub min_health_percent: Option<i64>,
    /// Codes that count as errors.
    #[serde(default)]
    pub outlier_detection_http_error_codes: Vec<i64>,
}

/// Client TLS.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientTlsSettings {
    /// `DISABLE`, `SIMPLE`, `MUTUAL`, `ISTIO_MUTUAL`.
    pub mode: Option<String>,
    /// Client certificate path.
    pub client_certificate: Option<String>,
    /// Private key path.
    pub private_key: Option<String>,
    /// CA path.
    pub ca_certificates: Option<String>,
    /// Secret name.
    pub credential_name: Option<String>,
    /// SANs to verify.
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    /// SNI.
    pub sni: Option<String>,
    /// Skip verification.
    pub insecure_skip_verify: Option<bool>,
    /// CRL path.
    pub ca_crl: Option<String>,
}
