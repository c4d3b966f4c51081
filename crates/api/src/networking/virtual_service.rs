//! VirtualService: ordered HTTP routing rules for a set of hosts.

use crate::duration::Duration;
use crate::networking::Percent;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub mod l4;

type Loose = serde_yaml_ng::Value;

/// `spec` of a VirtualService.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VirtualService {
    /// Hosts this applies to (short names are qualified with the resource's namespace).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Gateways; empty means `mesh` (all sidecars).
    #[serde(default)]
    pub gateways: Vec<String>,
    /// HTTP rules, first match wins.
    #[serde(default)]
    pub http: Vec<HttpRoute>,
    /// TLS passthrough rules, by SNI (parsed; refused by the analyzer until the proxy reads SNI).
    #[serde(default)]
    pub tls: Vec<l4::TlsRoute>,
    /// Opaque TCP rules, first match wins.
    #[serde(default)]
    pub tcp: Vec<l4::TcpRoute>,
    /// Namespaces this is visible to.
    #[serde(default)]
    pub export_to: Vec<String>,
}

impl VirtualService {
    /// True when the rules apply to sidecars (`gateways` empty or containing `mesh`).
    pub fn applies_to_sidecars(&self) -> bool {
        self.gateways.is_empty() || self.gateways.iter().any(|g| g == "mesh")
    }
}

/// One HTTP rule.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRoute {
    /// Rule name (shown as the Envoy route name).
    pub name: Option<String>,
    /// Conditions, ORed; empty matches everything.
    #[serde(default, rename = "match")]
    pub matches: Vec<HttpMatchRequest>,
    /// Weighted destinations.
    #[serde(default)]
    pub route: Vec<HttpRouteDestination>,
    /// Redirect (not supported yet).
    pub redirect: Option<Loose>,
    /// Direct response (not supported yet).
    pub direct_response: Option<Loose>,
    /// Delegate (not supported yet).
    pub delegate: Option<Loose>,
    /// Rewrite (not supported yet).
    pub rewrite: Option<Loose>,
    /// Timeout for the whole request, all retries included; absent means none.
    pub timeout: Option<Duration>,
    /// Retry policy.
    pub retries: Option<HttpRetry>,
    /// Fault injection.
    pub fault: Option<HttpFaultInjection>,
    /// Mirror (not supported yet).
    pub mirror: Option<Loose>,
    /// Mirrors (not supported yet).
    #[serde(default)]
    pub mirrors: Vec<Loose>,
    /// Mirror percentage (not supported yet).
    pub mirror_percentage: Option<Loose>,
    /// Deprecated mirror percent (not supported yet).
    pub mirror_percent: Option<Loose>,
    /// CORS (not supported yet).
    pub cors_policy: Option<Loose>,
    /// Header edits.
    pub headers: Option<Headers>,
}

/// Conditions of one match; fields are ANDed.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpMatchRequest {
    /// Match name.
    pub name: Option<String>,
    /// Path.
    pub uri: Option<StringMatch>,
    /// Scheme (not supported yet).
    pub scheme: Option<StringMatch>,
    /// Method.
    pub method: Option<StringMatch>,
    /// Authority (Host).
    pub authority: Option<StringMatch>,
    /// Headers by lowercase name; `{}` tests presence.
    #[serde(default)]
    pub headers: BTreeMap<String, StringMatch>,
    /// Headers that must not match.
    #[serde(default)]
    pub without_headers: BTreeMap<String, StringMatch>,
    /// Query parameters (not supported yet).
    #[serde(default)]
    pub query_params: BTreeMap<String, StringMatch>,
    /// Destination port.
    pub port: Option<u32>,
    /// Case-insensitive exact/prefix uri match.
    pub ignore_uri_case: Option<bool>,
    /// Source workload labels (not supported yet).
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    /// Source namespace (not supported yet).
    pub source_namespace: Option<String>,
    /// Gateways (not supported yet).
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Stat prefix (accepted, unused).
    pub stat_prefix: Option<String>,
}

/// One of `exact`, `prefix`, `regex` (RE2, whole string). All empty means "present".
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StringMatch {
    /// Exact.
    pub exact: Option<String>,
    /// Prefix.
    pub prefix: Option<String>,
    /// RE2 regex, whole-string match.
    pub regex: Option<String>,
}

/// A weighted destination.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteDestination {
    /// Where to send.
    pub destination: Destination,
    /// Relative weight.
    pub weight: Option<i64>,
    /// Per-destination header edits (not supported yet).
    pub headers: Option<Headers>,
}

/// A service, optionally a subset and port of it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Destination {
    /// Registry host, short or FQDN.
    #[serde(default)]
    pub host: String,
    /// Subset name from a DestinationRule.
    pub subset: Option<String>,
    /// Port, needed when the service has several.
    pub port: Option<PortSelector>,
}

/// `{number: 9080}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PortSelector {
    /// Port number.
    pub number: u32,
}

/// Retry policy.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRetry {
    /// Retries after the first try; 0 disables.
    pub attempts: Option<i64>,
    /// Timeout of each try.
    pub per_try_timeout: Option<Duration>,
    /// Conditions, comma separated (Envoy names or status codes).
    pub retry_on: Option<String>,
    /// Accepted, unused (single locality).
    pub retry_remote_localities: Option<bool>,
    /// Accepted, unused.
    pub retry_ignore_previous_hosts: Option<bool>,
    /// Base backoff interval (accepted, not enforced yet).
    pub backoff: Option<Duration>,
}

/// Fault injection.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpFaultInjection {
    /// Delay before forwarding.
    pub delay: Option<FaultDelay>,
    /// Answer with an error instead of forwarding.
    pub abort: Option<FaultAbort>,
}

/// A fixed delay for a share of requests.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FaultDelay {
    /// The delay.
    pub fixed_delay: Option<Duration>,
    /// Exponential delay (not supported).
    pub exponential_delay: Option<Duration>,
    /// Share of requests; absent means none.
    pub percentage: Option<Percent>,
    /// Deprecated integer percent.
    pub percent: Option<i64>,
}

/// An error response for a share of requests.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FaultAbort {
    /// HTTP status to answer with.
    pub http_status: Option<i64>,
    /// gRPC status (not supported yet).
    pub grpc_status: Option<String>,
    /// HTTP/2 error (not supported).
    pub http2_error: Option<String>,
    /// Share of requests; absent means none.
    pub percentage: Option<Percent>,
}

/// Request and response header edits.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Headers {
    /// On the request to the upstream.
    pub request: Option<HeaderOperations>,
    /// On the response to the client.
    pub response: Option<HeaderOperations>,
}

/// `set` overwrites, `add` appends, `remove` deletes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderOperations {
    /// Overwrite or add.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Append.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Remove.
    #[serde(default)]
    pub remove: Vec<String>,
}
