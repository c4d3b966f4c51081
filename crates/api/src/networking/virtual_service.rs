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
    /// Answer with a redirect instead of forwarding.
    pub redirect: Option<HttpRedirect>,
    /// Answer with a fixed response instead of forwarding.
    pub direct_response: Option<HttpDirectResponse>,
    /// Delegate (not supported yet).
    pub delegate: Option<Loose>,
    /// Path and authority rewrites before forwarding.
    pub rewrite: Option<HttpRewrite>,
    /// Timeout for the whole request, all retries included; absent means none.
    pub timeout: Option<Duration>,
    /// Retry policy.
    pub retries: Option<HttpRetry>,
    /// Fault injection.
    pub fault: Option<HttpFaultInjection>,
    /// Send a copy of each request here too (its response is discarded).
    pub mirror: Option<Destination>,
    /// Several mirrors, each with its own percentage.
    #[serde(default)]
    pub mirrors: Vec<HttpMirrorPolicy>,
    /// Share of requests `mirror` copies; absent means all.
    pub mirror_percentage: Option<Percent>,
    /// Deprecated integer form of `mirrorPercentage`.
    pub mirror_percent: Option<i64>,
    /// Cross-origin resource sharing.
    pub cors_policy: Option<CorsPolicy>,
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
    /// Scheme (`http` or `https`).
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
    /// Query parameters by name; `{}` (or an empty `exact`) tests presence.
    #[serde(default)]
    pub query_params: BTreeMap<String, StringMatch>,
    /// Destination port.
    pub port: Option<u32>,
    /// Case-insensitive exact/prefix uri match.
    pub ignore_uri_case: Option<bool>,
    /// Source workload labels (not supported yet).
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    /// Only requests from proxies in this namespace.
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
    /// Per-destination header edits (applied before the rule's).
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
    /// gRPC status name (`UNAVAILABLE`) or number, answered as HTTP 200 with `grpc-status`.
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

/// `redirect` (Istio's HTTPRedirect): the proxy answers with a 3xx and a `Location`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRedirect {
    /// Replaces the whole path (the query is kept).
    pub uri: Option<String>,
    /// Replaces the matched prefix of the path.
    pub prefix_rewrite: Option<String>,
    /// Replaces the authority.
    pub authority: Option<String>,
    /// Replaces the port.
    pub port: Option<u32>,
    /// `FROM_PROTOCOL_DEFAULT` (80 or 443) or `FROM_REQUEST_PORT`.
    pub derive_port: Option<String>,
    /// Replaces the scheme.
    pub scheme: Option<String>,
    /// The status, default 301.
    pub redirect_code: Option<u32>,
}

/// `directResponse`: a fixed status and body.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpDirectResponse {
    /// The status (200 to 599).
    #[serde(default)]
    pub status: u32,
    /// The body.
    pub body: Option<HttpBody>,
}

/// A direct response's body: text or base64 bytes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpBody {
    /// Text.
    pub string: Option<String>,
    /// Base64-encoded bytes.
    pub bytes: Option<String>,
}

impl HttpBody {
    /// The body's bytes; `None` when `bytes` is not base64.
    pub fn decoded(&self) -> Option<Vec<u8>> {
        use base64::Engine;
        match (&self.string, &self.bytes) {
            (_, Some(b)) => base64::engine::general_purpose::STANDARD.decode(b).ok(),
            (Some(s), None) => Some(s.clone().into_bytes()),
            (None, None) => Some(Vec::new()),
        }
    }
}

/// `rewrite`: what the upstream request gets instead.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRewrite {
    /// Replaces the matched prefix (the whole path for an exact match).
    pub uri: Option<String>,
    /// Replaces the authority (`Host`).
    pub authority: Option<String>,
    /// Rewrites the path with a regex.
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// `uriRegexRewrite`: every match of `match` in the path is replaced by `rewrite` (`\1` for groups).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegexRewrite {
    /// RE2 pattern.
    #[serde(default, rename = "match")]
    pub pattern: String,
    /// Replacement.
    #[serde(default)]
    pub rewrite: String,
}

/// One entry of `mirrors`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpMirrorPolicy {
    /// Where the copy goes.
    #[serde(default)]
    pub destination: Destination,
    /// Share of requests copied; absent means all.
    pub percentage: Option<Percent>,
}

/// `corsPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CorsPolicy {
    /// Origins allowed; the matching origin is echoed back.
    #[serde(default)]
    pub allow_origins: Vec<StringMatch>,
    /// Deprecated exact origins.
    #[serde(default)]
    pub allow_origin: Vec<String>,
    /// `Access-Control-Allow-Methods`.
    #[serde(default)]
    pub allow_methods: Vec<String>,
    /// `Access-Control-Allow-Headers`.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// `Access-Control-Expose-Headers`.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// `Access-Control-Max-Age`.
    pub max_age: Option<Duration>,
    /// `Access-Control-Allow-Credentials`.
    pub allow_credentials: Option<bool>,
    /// `UNSPECIFIED` or `FORWARD` (default: forward preflights from origins that do not match) or `IGNORE`.
    pub unmatched_preflights: Option<String>,
}

/// gRPC status codes by name, as `fault.abort.grpcStatus` may give them.
pub const GRPC_STATUS: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The code of a gRPC status given by name (`UNAVAILABLE`) or number (`14`).
pub fn grpc_status_code(s: &str) -> Option<u32> {
    if let Ok(n) = s.parse::<u32>() {
        return (n < GRPC_STATUS.len() as u32).then_some(n);
    }
    GRPC_STATUS
        .iter()
        .position(|n| *n == s)
        .and_then(|i| u32::try_from(i).ok())
}
