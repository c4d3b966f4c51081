//! Route tables: Envoy's `RouteConfiguration` converted (`TryFrom`) into the proxy's own form, with regexes
//! compiled and header names parsed, and the matching that picks a virtual host and a route.

use super::headers::{HeaderEdits, HeaderEditsError};
use http::header::HeaderName;
use regex::Regex;
use std::time::Duration;
use weft_xds::pb::envoy::config::route::v3 as xroute;
use weft_xds::pb::envoy::extensions::filters::common::fault::v3::fault_delay;
use weft_xds::pb::envoy::extensions::filters::http::fault::v3::{fault_abort, HttpFault};
use weft_xds::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use weft_xds::pb::envoy::r#type::v3::FractionalPercent;
use xroute::header_matcher::HeaderMatchSpecifier;
use xroute::route_match::PathSpecifier;

/// Why a route configuration was rejected. Nested variants say where; the leaf says what.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// Inside a virtual host.
    #[error("virtual host {name:?}")]
    VirtualHost {
        /// The virtual host's name.
        name: String,
        /// What was wrong in it.
        #[source]
        source: Box<RouteError>,
    },
    /// Inside a route, by index.
    #[error("route {index}")]
    Route {
        /// Position in the virtual host.
        index: usize,
        /// What was wrong in it.
        #[source]
        source: Box<RouteError>,
    },
    /// A regular expression does not compile.
    #[error("invalid regex {regex:?}")]
    Regex {
        /// The expression.
        regex: String,
        /// The compiler's error.
        #[source]
        source: regex::Error,
    },
    /// A header name is not valid.
    #[error("invalid header name {name:?}")]
    HeaderName {
        /// The name.
        name: String,
    },
    /// A header edit is not valid.
    #[error("invalid header edit")]
    HeaderEdit(#[from] HeaderEditsError),
    /// The route has no forward action or uses one weft does not implement.
    #[error("unsupported route action {0}")]
    UnsupportedAction(&'static str),
    /// A path matcher weft does not implement.
    #[error("unsupported path matcher {0}")]
    UnsupportedPath(&'static str),
    /// A header matcher weft does not implement.
    #[error("header matcher {name:?}: unsupported {what}")]
    UnsupportedHeaderMatch {
        /// The header.
        name: String,
        /// The unsupported part.
        what: &'static str,
    },
    /// `weighted_clusters` has no cluster with a weight.
    #[error("weighted_clusters has no cluster with a positive weight")]
    NoWeights,
    /// `retry_on` names an unknown condition.
    #[error("retry_on: unknown condition {0:?}")]
    RetryOn(String),
    /// A retriable status code is out of range.
    #[error("retriable_status_codes: {0} is not an HTTP status")]
    RetryStatus(u32),
    /// A duration is negative or out of range.
    #[error("{field}: invalid duration")]
    Duration {
        /// The field.
        field: &'static str,
    },
    /// The fault config does not decode.
    #[error("typed_per_filter_config[{filter:?}] does not decode as HTTPFault")]
    Fault {
        /// The filter name.
        filter: String,
        /// prost's error.
        #[source]
        source: weft_xds::DecodeError,
    },
    /// The fault abort status is not an HTTP status.
    #[error("fault abort http_status {0} is not an HTTP status")]
    FaultStatus(u32),
    /// A fault kind weft does not implement.
    #[error("unsupported fault {0}")]
    UnsupportedFault(&'static str),
    /// A fractional percentage has an unknown denominator.
    #[error("percentage has unknown denominator {0}")]
    Denominator(i32),
    /// A redirect's part is not valid.
    #[error("redirect: {field}: {why}")]
    Redirect {
        /// The field (`host_redirect`, `response_code`, …).
        field: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A direct response's status or body is not valid.
    #[error("direct_response: {0}")]
    DirectResponse(String),
    /// A rewrite is not valid.
    #[error("{field}: {why}")]
    Rewrite {
        /// The field (`prefix_rewrite`, `regex_rewrite`, `host_rewrite_literal`).
        field: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A mirror policy is not valid.
    #[error("request_mirror_policies[{index}]: {why}")]
    Mirror {
        /// Its position.
        index: usize,
        /// What is wrong.
        why: String,
    },
    /// The CORS policy does not decode or is not valid.
    #[error("typed_per_filter_config[{filter:?}]: {why}")]
    Cors {
        /// The filter name.
        filter: String,
        /// What is wrong.
        why: String,
    },
}

/// A route table, by name.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Its name (`9080`, `inbound|9080||`).
    pub name: String,
    /// Virtual hosts, in order.
    pub virtual_hosts: Vec<VirtualHost>,
    /// Table-level header edits, applied after the virtual host's.
    pub headers: HeaderEdits,
    /// Exact domains → index of the first virtual host that has them: a table of a thousand services
    /// has eight thousand domains, and a linear scan of them was most of a request's CPU.
    exact: super::FastMap<Box<str>, usize>,
    /// Whether any virtual host has a wildcard domain (only then is the slow scan needed).
    wildcards: bool,
}

/// A virtual host: a set of domains and an ordered route list.
#[derive(Debug, Clone)]
pub struct VirtualHost {
    /// Its name (`reviews.default.svc.cluster.local:9080`).
    pub name: String,
    /// Domain patterns.
    pub domains: Vec<Domain>,
    /// Routes; the first match wins.
    pub routes: Vec<Route>,
    /// Host-level header edits, applied after the route's.
    pub headers: HeaderEdits,
    /// Envoy's `require_tls` (EXTERNAL_ONLY or ALL; Istio's gateway `httpsRedirect`): a request that
    /// did not come over TLS is answered with a 301 to `https://`.
    pub require_tls: bool,
}

/// One domain pattern of a virtual host (lowercased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Domain {
    /// `*`.
    Any,
    /// An exact name, possibly with `:port`.
    Exact(String),
    /// `*.example.com`, stored without the `*`.
    Suffix(String),
    /// `example.*`, stored without the `*`.
    Prefix(String),
}

/// One route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Its name (may be empty).
    pub name: String,
    /// When it applies.
    pub matcher: RouteMatch,
    /// Where it sends the request, or how it answers itself.
    pub action: Action,
    /// Fault injection, if configured.
    pub fault: Option<Fault>,
    /// Route-level header edits.
    pub headers: HeaderEdits,
    /// The CORS policy (Envoy's cors filter, configured per route), boxed: most routes have none.
    pub cors: Option<Box<Cors>>,
}

/// What a route does with a request.
#[derive(Debug, Clone)]
pub enum Action {
    /// Forward it upstream.
    Forward(RouteAction),
    /// Answer with a redirect (Istio `redirect`).
    Redirect(Box<Redirect>),
    /// Answer with a fixed status and body (Istio `directResponse`).
    Direct(Box<DirectResponse>),
}

impl Route {
    /// The forwarding action, unless the route answers itself.
    pub fn forward(&self) -> Option<&RouteAction> {
        match &self.action {
            Action::Forward(a) => Some(a),
            Action::Redirect(_) | Action::Direct(_) => None,
        }
    }
}

/// Envoy's `RedirectAction`: each part replaces the request's own, unset parts are kept.
#[derive(Debug, Clone)]
pub struct Redirect {
    /// `scheme_redirect` (or `https` for `https_redirect`).
    pub scheme: Option<String>,
    /// `host_redirect` (may carry a port).
    pub host: Option<String>,
    /// `port_redirect`; 0 keeps the port, or drops it when the scheme changes (its default port).
    pub port: u16,
    /// How the path changes.
    pub path: PathRewrite,
    /// `strip_query`.
    pub strip_query: bool,
    /// 301, 302, 303, 307 or 308.
    pub status: http::StatusCode,
}

/// How a redirect or a rewrite changes the path.
#[derive(Debug, Clone)]
pub enum PathRewrite {
    /// Unchanged.
    Keep,
    /// The whole path (a query in it replaces the request's).
    Path(String),
    /// The part the route matched: its prefix, or the whole path after an exact or regex match.
    Prefix(String),
    /// Every match of the regex in the path (query excluded) replaced, `$1` style.
    Regex(Regex, String),
}

/// Envoy's `DirectResponseAction`.
#[derive(Debug, Clone)]
pub struct DirectResponse {
    /// The status.
    pub status: http::StatusCode,
    /// The body (may be empty).
    pub body: bytes::Bytes,
}

/// Rewrites applied to the upstream request.
#[derive(Debug, Clone)]
pub struct Rewrite {
    /// `prefix_rewrite` or `regex_rewrite`.
    pub path: PathRewrite,
    /// `host_rewrite_literal`.
    pub host: Option<http::HeaderValue>,
}

/// One `request_mirror_policies` entry: a copy of the request goes to this cluster.
#[derive(Debug, Clone)]
pub struct Mirror {
    /// The cluster.
    pub cluster: String,
    /// Share of requests copied.
    pub percent: Percent,
}

/// A route's CORS policy (Envoy's `envoy.extensions.filters.http.cors.v3.CorsPolicy`), with its header
/// values made once.
#[derive(Debug, Clone)]
pub struct Cors {
    /// Origins allowed; the request's `Origin` is echoed back when one matches.
    pub origins: Vec<StringMatch>,
    /// `Access-Control-Allow-Methods`, on preflights.
    pub allow_methods: Option<http::HeaderValue>,
    /// `Access-Control-Allow-Headers`, on preflights.
    pub allow_headers: Option<http::HeaderValue>,
    /// `Access-Control-Expose-Headers`, on other responses.
    pub expose_headers: Option<http::HeaderValue>,
    /// `Access-Control-Max-Age`, on preflights.
    pub max_age: Option<http::HeaderValue>,
    /// `Access-Control-Allow-Credentials: true`.
    pub allow_credentials: bool,
    /// Preflights from origins that do not match go upstream (Envoy's default); otherwise they are
    /// answered with no CORS headers (Istio `unmatchedPreflights: IGNORE`).
    pub forward_unmatched_preflights: bool,
}

/// The conditions of a route.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    /// The path condition.
    pub path: PathMatch,
    /// `case_sensitive` (applies to prefix and exact; Envoy ignores it for regexes).
    pub case_sensitive: bool,
    /// Header conditions, all of which must hold.
    pub headers: Vec<HeaderMatch>,
    /// Query parameter conditions, all of which must hold.
    pub query: Vec<QueryMatch>,
}

/// A query parameter condition (the first parameter of the name is tested, its value as sent).
#[derive(Debug, Clone)]
pub struct QueryMatch {
    /// The parameter's name.
    pub name: String,
    /// `None`: present; otherwise its value (empty for `?name`) must match.
    pub test: Option<StringMatch>,
}

/// A path condition.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// The path starts with this.
    Prefix(String),
    /// The path without query is exactly this.
    Exact(String),
    /// The path without query fully matches this.
    Regex(Regex),
}

/// Which part of the request a header matcher reads.
#[derive(Debug, Clone)]
pub enum HeaderKey {
    /// `:method`.
    Method,
    /// `:authority` (or `host`).
    Authority,
    /// `:path` (with query).
    Path,
    /// `:scheme`.
    Scheme,
    /// A regular header.
    Name(HeaderName),
}

/// A header condition.
#[derive(Debug, Clone)]
pub struct HeaderMatch {
    /// The header.
    pub key: HeaderKey,
    /// The test.
    pub test: HeaderTest,
    /// Negate the result.
    pub invert: bool,
}

/// The test a header matcher applies.
#[derive(Debug, Clone)]
pub enum HeaderTest {
    /// Presence (`true`) or absence (`false`).
    Present(bool),
    /// A string condition on the (comma-joined) value; absent header fails.
    String(StringMatch),
}

/// A string condition.
#[derive(Debug, Clone)]
pub struct StringMatch {
    /// The pattern.
    pub pattern: StringPattern,
    /// Compare without case (not for regexes).
    pub ignore_case: bool,
}

/// The pattern of a string condition.
#[derive(Debug, Clone)]
pub enum StringPattern {
    /// Equal.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Ends with.
    Suffix(String),
    /// Contains.
    Contains(String),
    /// Full regex match.
    Regex(Regex),
}

/// Where a route sends requests, and how.
#[derive(Debug, Clone)]
pub struct RouteAction {
    /// The cluster or clusters.
    pub target: Target,
    /// Timeout over all tries (`None`: no timeout).
    pub timeout: Option<Duration>,
    /// Retries, if configured.
    pub retry: Option<RetryPolicy>,
    /// Path and host rewrites, boxed: most routes have none.
    pub rewrite: Option<Box<Rewrite>>,
    /// Copies of the request to send, fire and forget.
    pub mirrors: Vec<Mirror>,
    /// What a hashing load balancer hashes (`hash_policy`): the first key the request has.
    pub hash: Box<[HashKey]>,
}

/// One entry of a route's `hash_policy`.
#[derive(Debug, Clone, PartialEq)]
pub enum HashKey {
    /// A request header's value.
    Header(http::HeaderName),
    /// A cookie's value; when the request has none and `ttl` is set, one is generated and set on the
    /// response (with `path`; `ttl` 0: a session cookie).
    Cookie {
        /// The cookie's name.
        name: Box<str>,
        /// Its path attribute.
        path: Box<str>,
        /// Its lifetime, when one is generated.
        ttl: Option<Duration>,
    },
    /// The client's IP address.
    SourceIp,
    /// A query parameter's value.
    Query(Box<str>),
}

/// A route's destination.
#[derive(Debug, Clone)]
pub enum Target {
    /// One cluster.
    Cluster(String),
    /// Several clusters, picked by weight.
    Weighted {
        /// The clusters.
        clusters: Vec<WeightedCluster>,
        /// Sum of the weights (> 0).
        total: u64,
    },
}

/// One entry of `weighted_clusters`.
#[derive(Debug, Clone)]
pub struct WeightedCluster {
    /// The cluster.
    pub name: String,
    /// Its weight.
    pub weight: u32,
    /// Destination-level header edits (applied before the route's).
    pub headers: HeaderEdits,
}

/// Retry conditions, a bit set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn(u8);

impl RetryOn {
    /// `5xx`.
    pub const FIVE_XX: RetryOn = RetryOn(1);
    /// `gateway-error`.
    pub const GATEWAY_ERROR: RetryOn = RetryOn(1 << 1);
    /// `connect-failure` (and `reset-before-request`, whose only case weft can tell apart).
    pub const CONNECT_FAILURE: RetryOn = RetryOn(1 << 2);
    /// `reset`.
    pub const RESET: RetryOn = RetryOn(1 << 3);
    /// `refused-stream`.
    pub const REFUSED_STREAM: RetryOn = RetryOn(1 << 4);
    /// `retriable-status-codes`.
    pub const STATUS_CODES: RetryOn = RetryOn(1 << 5);
    /// `retriable-4xx`.
    pub const FOUR_XX: RetryOn = RetryOn(1 << 6);

    /// True when every condition of `other` is set.
    pub fn contains(self, other: RetryOn) -> bool {
        self.0 & other.0 == other.0
    }

    /// Parses Envoy's comma list. gRPC and header-based conditions are accepted and ignored.
    pub fn parse(s: &str) -> Result<RetryOn, RouteError> {
        let mut on = RetryOn::default();
        for token in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let bit = match token {
                "5xx" => RetryOn::FIVE_XX,
                "gateway-error" => RetryOn::GATEWAY_ERROR,
                "connect-failure" | "reset-before-request" => RetryOn::CONNECT_FAILURE,
                "reset" => RetryOn::RESET,
                "refused-stream" => RetryOn::REFUSED_STREAM,
                "retriable-status-codes" => RetryOn::STATUS_CODES,
                "retriable-4xx" => RetryOn::FOUR_XX,
                // gRPC-only or header-driven conditions: meaningful for gRPC responses, which weft
                // proxies as plain HTTP; accepted so Istio's default policy is not refused.
                "cancelled"
                | "deadline-exceeded"
                | "internal"
                | "resource-exhausted"
                | "unavailable"
                | "envoy-ratelimited"
                | "retriable-headers"
                | "http3-post-connect-failure" => RetryOn::default(),
                other => return Err(RouteError::RetryOn(other.to_string())),
            };
            on.0 |= bit.0;
        }
        Ok(on)
    }
}

/// A route's retry policy.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// When to retry.
    pub on: RetryOn,
    /// Retries after the first try.
    pub num_retries: u32,
    /// Timeout of each try.
    pub per_try_timeout: Option<Duration>,
    /// Statuses retried under `retriable-status-codes`.
    pub status_codes: Vec<u16>,
}

impl RetryPolicy {
    /// Whether an upstream response with this status should be retried.
    pub fn retries_status(&self, status: u16) -> bool {
        (self.on.contains(RetryOn::FIVE_XX) && (500..600).contains(&status))
            || (self.on.contains(RetryOn::GATEWAY_ERROR) && matches!(status, 502..=504))
            || (self.on.contains(RetryOn::FOUR_XX) && status == 409)
            || (self.on.contains(RetryOn::STATUS_CODES) && self.status_codes.contains(&status))
    }

    /// Whether a failed try of this class should be retried.
    pub fn retries_failure(&self, class: crate::error::RetryClass) -> bool {
        use crate::error::RetryClass as C;
        let five = self.on.contains(RetryOn::FIVE_XX);
        match class {
            C::ConnectFailure => {
                five || self.on.contains(RetryOn::GATEWAY_ERROR)
                    || self.on.contains(RetryOn::CONNECT_FAILURE)
            }
            C::Reset => five || self.on.contains(RetryOn::RESET),
            C::RefusedStream => {
                five || self.on.contains(RetryOn::RESET)
                    || self.on.contains(RetryOn::REFUSED_STREAM)
            }
            C::Timeout => five || self.on.contains(RetryOn::GATEWAY_ERROR),
            C::Never => false,
        }
    }
}

/// A fraction of requests, in parts per million.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percent {
    /// Parts per million (capped at 1,000,000).
    pub per_million: u32,
}

impl Percent {
    /// Converts Envoy's `FractionalPercent`.
    pub fn from_fractional(p: &FractionalPercent) -> Result<Percent, RouteError> {
        let scale: u64 = match p.denominator {
            0 => 10_000, // HUNDRED
            1 => 100,    // TEN_THOUSAND
            2 => 1,      // MILLION
            other => return Err(RouteError::Denominator(other)),
        };
        let per_million = (u64::from(p.numerator) * scale).min(1_000_000);
        Ok(Percent {
            per_million: u32::try_from(per_million).unwrap_or(1_000_000),
        })
    }

    /// Whether a request with this `roll` in `0..1_000_000` falls in the fraction.
    pub fn hits(self, roll: u32) -> bool {
        roll < self.per_million
    }
}

/// Fault injection on a route.
#[derive(Debug, Clone, Default)]
pub struct Fault {
    /// Delay some requests by a fixed duration.
    pub delay: Option<(Duration, Percent)>,
    /// Answer some requests with this status.
    pub abort: Option<(Abort, Percent)>,
}

/// How a fault abort answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    /// With this HTTP status.
    Http(http::StatusCode),
    /// With HTTP 200 and this `grpc-status` (a gRPC trailers-only response).
    Grpc(u32),
}

// === conversion ===

impl TryFrom<&xroute::RouteConfiguration> for RouteConfig {
    type Error = RouteError;

    fn try_from(rc: &xroute::RouteConfiguration) -> Result<Self, RouteError> {
        let virtual_hosts = rc
            .virtual_hosts
            .iter()
            .map(|vh| {
                convert_vhost(vh).map_err(|e| RouteError::VirtualHost {
                    name: vh.name.clone(),
                    source: Box::new(e),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(RouteConfig::new(
            rc.name.clone(),
            virtual_hosts,
            HeaderEdits::new(
                &rc.request_headers_to_add,
                &rc.request_headers_to_remove,
                &rc.response_headers_to_add,
                &rc.response_headers_to_remove,
            )?,
        ))
    }
}

fn convert_vhost(vh: &xroute::VirtualHost) -> Result<VirtualHost, RouteError> {
    let domains = vh.domains.iter().map(|d| parse_domain(d)).collect();
    let routes = vh
        .routes
        .iter()
        .enumerate()
        .map(|(index, r)| {
            convert_route(r).map_err(|e| RouteError::Route {
                index,
                source: Box::new(e),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(VirtualHost {
        name: vh.name.clone(),
        domains,
        routes,
        headers: HeaderEdits::new(
            &vh.request_headers_to_add,
            &vh.request_headers_to_remove,
            &vh.response_headers_to_add,
            &vh.response_headers_to_remove,
        )?,
        require_tls: vh.require_tls != 0,
    })
}

/// Parses a virtual host domain pattern.
pub fn parse_domain(d: &str) -> Domain {
    let d = d.to_ascii_lowercase();
    if d == "*" {
        Domain::Any
    } else if let Some(rest) = d.strip_prefix('*') {
        Domain::Suffix(rest.to_string())
    } else if let Some(rest) = d.strip_suffix('*') {
        Domain::Prefix(rest.to_string())
    } else {
        Domain::Exact(d)
    }
}

/// The largest compiled size of a route's regex: weft-api's analyzer applies the same limit
/// (`weft_api::analyze::REGEX_SIZE_LIMIT`), so weftd refuses what this would. Under the regex crate's
/// default, 10 MB, one ten-byte pattern (`\w{1,100}`) took 0.1 s and megabytes per route to convert.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

fn compile_full(regex: &str, ignore_case: bool) -> Result<Regex, RouteError> {
    let flags = if ignore_case { "(?i)" } else { "" };
    let pattern = format!("{flags}^(?:{regex})$");
    let compiled = regex::RegexBuilder::new(&pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build();
    compiled.map_err(|source| RouteError::Regex {
        regex: regex.to_string(),
        source,
    })
}

fn duration(
    d: Option<&weft_xds::pb::google::protobuf::Duration>,
    field: &'static str,
) -> Result<Option<Duration>, RouteError> {
    match d {
        None => Ok(None),
        Some(d) => {
            if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
                return Err(RouteError::Duration { field });
            }
            let secs = u64::try_from(d.seconds).map_err(|_| RouteError::Duration { field })?;
            let nanos = u32::try_from(d.nanos).map_err(|_| RouteError::Duration { field })?;
            let out = Duration::new(secs, nanos);
            Ok((!out.is_zero()).then_some(out))
        }
    }
}

fn convert_route(r: &xroute::Route) -> Result<Route, RouteError> {
    let m = r.r#match.clone().unwrap_or_default();
    let case_sensitive = m.case_sensitive.map(|b| b.value).unwrap_or(true);
    let path = match &m.path_specifier {
        None => PathMatch::Prefix(String::new()),
        Some(PathSpecifier::Prefix(p)) => PathMatch::Prefix(p.clone()),
        Some(PathSpecifier::Path(p)) => PathMatch::Exact(p.clone()),
        Some(PathSpecifier::SafeRegex(re)) => PathMatch::Regex(compile_full(&re.regex, false)?),
        Some(PathSpecifier::PathSeparatedPrefix(_)) => {
            return Err(RouteError::UnsupportedPath("path_separated_prefix"))
        }
        Some(PathSpecifier::ConnectMatcher(_)) => {
            return Err(RouteError::UnsupportedPath("connect_matcher"))
        }
        Some(PathSpecifier::PathMatchPolicy(_)) => {
            return Err(RouteError::UnsupportedPath("path_match_policy"))
        }
    };
    let headers = m
        .headers
        .iter()
        .map(convert_header_match)
        .collect::<Result<_, _>>()?;
    let query = m
        .query_parameters
        .iter()
        .map(convert_query_match)
        .collect::<Result<_, _>>()?;
    let action = match &r.action {
        Some(xroute::route::Action::Route(a)) => Action::Forward(convert_action(a)?),
        Some(xroute::route::Action::Redirect(a)) => {
            Action::Redirect(Box::new(convert_redirect(a)?))
        }
        Some(xroute::route::Action::DirectResponse(a)) => {
            Action::Direct(Box::new(convert_direct(a)?))
        }
        Some(_) => return Err(RouteError::UnsupportedAction("non-forwarding")),
        None => return Err(RouteError::UnsupportedAction("(none)")),
    };
    let fault = match r.typed_per_filter_config.get(weft_xds::filter_name::FAULT) {
        None => None,
        Some(any) => {
            let f: HttpFault = weft_xds::unpack(any).map_err(|source| RouteError::Fault {
                filter: weft_xds::filter_name::FAULT.to_string(),
                source,
            })?;
            Some(convert_fault(&f)?)
        }
    };
    let cors = match r.typed_per_filter_config.get(weft_xds::filter_name::CORS) {
        None => None,
        Some(any) => Some(Box::new(convert_cors(any)?)),
    };
    Ok(Route {
        name: r.name.clone(),
        cors,
        matcher: RouteMatch {
            path,
            case_sensitive,
            headers,
            query,
        },
        action,
        fault,
        headers: HeaderEdits::new(
            &r.request_headers_to_add,
            &r.request_headers_to_remove,
            &r.response_headers_to_add,
            &r.response_headers_to_remove,
        )?,
    })
}

fn convert_string_matcher(s: &StringMatcher, name: &str) -> Result<StringMatch, RouteError> {
    let pattern = match &s.match_pattern {
        Some(MatchPattern::Exact(v)) => StringPattern::Exact(v.clone()),
        Some(MatchPattern::Prefix(v)) => StringPattern::Prefix(v.clone()),
        Some(MatchPattern::Suffix(v)) => StringPattern::Suffix(v.clone()),
        Some(MatchPattern::Contains(v)) => StringPattern::Contains(v.clone()),
        Some(MatchPattern::SafeRegex(re)) => {
            StringPattern::Regex(compile_full(&re.regex, s.ignore_case)?)
        }
        Some(MatchPattern::Custom(_)) => {
            return Err(RouteError::UnsupportedHeaderMatch {
                name: name.to_string(),
                what: "custom string matcher",
            })
        }
        None => StringPattern::Exact(String::new()),
    };
    Ok(StringMatch {
        pattern,
        ignore_case: s.ignore_case,
    })
}

#[allow(deprecated)] // the legacy specifiers are still sent by some control planes
fn convert_header_match(h: &xroute::HeaderMatcher) -> Result<HeaderMatch, RouteError> {
    let key = match h.name.to_ascii_lowercase().as_str() {
        ":method" => HeaderKey::Method,
        ":authority" | "host" => HeaderKey::Authority,
        ":path" => HeaderKey::Path,
        ":scheme" => HeaderKey::Scheme,
        other => HeaderKey::Name(HeaderName::from_bytes(other.as_bytes()).map_err(|_| {
            RouteError::HeaderName {
                name: h.name.clone(),
            }
        })?),
    };
    let plain = |p: StringPattern| {
        HeaderTest::String(StringMatch {
            pattern: p,
            ignore_case: false,
        })
    };
    let test = match &h.header_match_specifier {
        None => HeaderTest::Present(true),
        Some(HeaderMatchSpecifier::PresentMatch(b)) => HeaderTest::Present(*b),
        Some(HeaderMatchSpecifier::StringMatch(s)) => {
            HeaderTest::String(convert_string_matcher(s, &h.name)?)
        }
        Some(HeaderMatchSpecifier::ExactMatch(v)) => plain(StringPattern::Exact(v.clone())),
        Some(HeaderMatchSpecifier::PrefixMatch(v)) => plain(StringPattern::Prefix(v.clone())),
        Some(HeaderMatchSpecifier::SuffixMatch(v)) => plain(StringPattern::Suffix(v.clone())),
        Some(HeaderMatchSpecifier::ContainsMatch(v)) => plain(StringPattern::Contains(v.clone())),
        Some(HeaderMatchSpecifier::SafeRegexMatch(re)) => {
            plain(StringPattern::Regex(compile_full(&re.regex, false)?))
        }
        Some(HeaderMatchSpecifier::RangeMatch(_)) => {
            return Err(RouteError::UnsupportedHeaderMatch {
                name: h.name.clone(),
                what: "range_match",
            })
        }
    };
    Ok(HeaderMatch {
        key,
        test,
        invert: h.invert_match,
    })
}

fn convert_action(a: &xroute::RouteAction) -> Result<RouteAction, RouteError> {
    use xroute::route_action::ClusterSpecifier as C;
    let target = match &a.cluster_specifier {
        Some(C::Cluster(c)) => Target::Cluster(c.clone()),
        Some(C::WeightedClusters(w)) => {
            let clusters: Vec<WeightedCluster> = w
                .clusters
                .iter()
                .map(|c| {
                    Ok(WeightedCluster {
                        name: c.name.clone(),
                        weight: c.weight.as_ref().map(|w| w.value).unwrap_or(0),
                        headers: HeaderEdits::new(
                            &c.request_headers_to_add,
                            &c.request_headers_to_remove,
                            &c.response_headers_to_add,
                            &c.response_headers_to_remove,
                        )?,
                    })
                })
                .collect::<Result<_, RouteError>>()?;
            let total = crate::balance::total_weight(&clusters, |c| c.weight);
            if total == 0 {
                return Err(RouteError::NoWeights);
            }
            Target::Weighted { clusters, total }
        }
        Some(C::ClusterHeader(_)) => return Err(RouteError::UnsupportedAction("cluster_header")),
        Some(_) => return Err(RouteError::UnsupportedAction("cluster_specifier_plugin")),
        None => return Err(RouteError::UnsupportedAction("(no cluster)")),
    };
    let retry = match &a.retry_policy {
        None => None,
        Some(p) => {
            let status_codes = p
                .retriable_status_codes
                .iter()
                .map(|c| {
                    u16::try_from(*c)
                        .ok()
                        .filter(|c| (100..600).contains(c))
                        .ok_or(RouteError::RetryStatus(*c))
                })
                .collect::<Result<_, _>>()?;
            Some(RetryPolicy {
                on: RetryOn::parse(&p.retry_on)?,
                // Envoy's default when `num_retries` is unset is 1.
                num_retries: p.num_retries.as_ref().map(|n| n.value).unwrap_or(1),
                per_try_timeout: duration(p.per_try_timeout.as_ref(), "per_try_timeout")?,
                status_codes,
            })
        }
    };
    let rewrite = convert_rewrite(a)?.map(Box::new);
    let mirrors = a
        .request_mirror_policies
        .iter()
        .enumerate()
        .map(|(index, m)| {
            if m.cluster.is_empty() {
                return Err(RouteError::Mirror {
                    index,
                    why: "cluster is required (cluster_header is not supported)".into(),
                });
            }
            let percent = match m
                .runtime_fraction
                .as_ref()
                .and_then(|f| f.default_value.as_ref())
            {
                Some(p) => Percent::from_fractional(p)?,
                None => Percent {
                    per_million: 1_000_000,
                },
            };
            Ok(Mirror {
                cluster: m.cluster.clone(),
                percent,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(RouteAction {
        target,
        timeout: duration(a.timeout.as_ref(), "timeout")?,
        retry,
        rewrite,
        mirrors,
        hash: hash_keys(&a.hash_policy)?,
    })
}

fn convert_query_match(q: &xroute::QueryParameterMatcher) -> Result<QueryMatch, RouteError> {
    use xroute::query_parameter_matcher::QueryParameterMatchSpecifier as Q;
    if q.name.is_empty() {
        return Err(RouteError::UnsupportedHeaderMatch {
            name: String::new(),
            what: "query parameter without a name",
        });
    }
    let test = match &q.query_parameter_match_specifier {
        None | Some(Q::PresentMatch(true)) => None,
        Some(Q::PresentMatch(false)) => {
            return Err(RouteError::UnsupportedHeaderMatch {
                name: q.name.clone(),
                what: "present_match false",
            })
        }
        Some(Q::StringMatch(s)) => Some(convert_string_matcher(s, &q.name)?),
    };
    Ok(QueryMatch {
        name: q.name.clone(),
        test,
    })
}

/// Envoy's `\1` references become the regex crate's `${1}`; a literal `$` is escaped.
fn substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    chars.next();
                    out.push_str("${");
                    out.push(d);
                    out.push('}');
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            other => out.push(other),
        }
    }
    out
}

fn compile_rewrite_regex(
    m: &weft_xds::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute,
    field: &'static str,
) -> Result<PathRewrite, RouteError> {
    let Some(p) = &m.pattern else {
        return Err(RouteError::Rewrite {
            field,
            why: "pattern is required".into(),
        });
    };
    let re = regex::RegexBuilder::new(&p.regex)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|source| RouteError::Regex {
            regex: p.regex.clone(),
            source,
        })?;
    Ok(PathRewrite::Regex(re, substitution(&m.substitution)))
}

fn convert_rewrite(a: &xroute::RouteAction) -> Result<Option<Rewrite>, RouteError> {
    use xroute::route_action::HostRewriteSpecifier as H;
    let path = match (&a.prefix_rewrite, &a.regex_rewrite) {
        (p, Some(_)) if !p.is_empty() => {
            return Err(RouteError::Rewrite {
                field: "prefix_rewrite",
                why: "only one of prefix_rewrite, regex_rewrite may be set".into(),
            })
        }
        (_, Some(r)) => compile_rewrite_regex(r, "regex_rewrite")?,
        (p, None) if !p.is_empty() => PathRewrite::Prefix(p.clone()),
        _ => PathRewrite::Keep,
    };
    let host = match &a.host_rewrite_specifier {
        None => None,
        Some(H::HostRewriteLiteral(h)) => Some(
            http::HeaderValue::from_str(h)
                .ok()
                .filter(|_| http::uri::Authority::try_from(h.as_str()).is_ok())
                .ok_or_else(|| RouteError::Rewrite {
                    field: "host_rewrite_literal",
                    why: format!("{h:?} is not an authority"),
                })?,
        ),
        Some(_) => {
            return Err(RouteError::Rewrite {
                field: "host_rewrite_specifier",
                why: "only host_rewrite_literal is supported".into(),
            })
        }
    };
    if matches!(path, PathRewrite::Keep) && host.is_none() {
        return Ok(None);
    }
    Ok(Some(Rewrite { path, host }))
}

fn convert_redirect(a: &xroute::RedirectAction) -> Result<Redirect, RouteError> {
    use xroute::redirect_action::{PathRewriteSpecifier as P, SchemeRewriteSpecifier as S};
    let bad = |field: &'static str, why: String| RouteError::Redirect { field, why };
    let status = match a.response_code {
        0 => 301,
        1 => 302,
        2 => 303,
        3 => 307,
        4 => 308,
        other => {
            return Err(bad(
                "response_code",
                format!("{other} is not a redirect code"),
            ))
        }
    };
    let status = http::StatusCode::from_u16(status)
        .map_err(|_| bad("response_code", "not a status".into()))?;
    let scheme = match &a.scheme_rewrite_specifier {
        None => None,
        Some(S::HttpsRedirect(false)) => None,
        Some(S::HttpsRedirect(true)) => Some("https".to_string()),
        Some(S::SchemeRedirect(s)) => {
            if http::uri::Scheme::try_from(s.as_str()).is_err() {
                return Err(bad("scheme_redirect", format!("{s:?} is not a scheme")));
            }
            Some(s.to_ascii_lowercase())
        }
    };
    let host = if a.host_redirect.is_empty() {
        None
    } else {
        if http::uri::Authority::try_from(a.host_redirect.as_str()).is_err() {
            return Err(bad(
                "host_redirect",
                format!("{:?} is not a host", a.host_redirect),
            ));
        }
        Some(a.host_redirect.clone())
    };
    let port = u16::try_from(a.port_redirect).map_err(|_| {
        bad(
            "port_redirect",
            format!("{} is not a port", a.port_redirect),
        )
    })?;
    let path = match &a.path_rewrite_specifier {
        None => PathRewrite::Keep,
        Some(P::PathRedirect(p)) => {
            if !p.starts_with('/') || http::uri::PathAndQuery::try_from(p.as_str()).is_err() {
                return Err(bad("path_redirect", format!("{p:?} is not a path")));
            }
            PathRewrite::Path(p.clone())
        }
        Some(P::PrefixRewrite(p)) => PathRewrite::Prefix(p.clone()),
        Some(P::RegexRewrite(r)) => compile_rewrite_regex(r, "regex_rewrite")?,
        Some(P::PathRewrite(_)) => {
            return Err(bad(
                "path_rewrite",
                "path templates are not supported".into(),
            ))
        }
    };
    Ok(Redirect {
        scheme,
        host,
        port,
        path,
        strip_query: a.strip_query,
        status,
    })
}

fn convert_direct(a: &xroute::DirectResponseAction) -> Result<DirectResponse, RouteError> {
    use weft_xds::pb::envoy::config::core::v3::data_source::Specifier as D;
    let status = u16::try_from(a.status)
        .ok()
        .filter(|s| (200..600).contains(s))
        .and_then(|s| http::StatusCode::from_u16(s).ok())
        .ok_or_else(|| {
            RouteError::DirectResponse(format!("status {} is not 200 to 599", a.status))
        })?;
    if a.body_format.is_some() {
        return Err(RouteError::DirectResponse(
            "body_format is not supported".into(),
        ));
    }
    let body = match a.body.as_ref().and_then(|b| b.specifier.as_ref()) {
        None => bytes::Bytes::new(),
        Some(D::InlineBytes(b)) => bytes::Bytes::from(b.clone()),
        Some(D::InlineString(s)) => bytes::Bytes::from(s.clone()),
        Some(D::Filename(_)) => {
            return Err(RouteError::DirectResponse(
                "a body from a file is not supported".into(),
            ))
        }
        Some(D::EnvironmentVariable(_)) => {
            return Err(RouteError::DirectResponse(
                "a body from an environment variable is not supported".into(),
            ))
        }
    };
    Ok(DirectResponse { status, body })
}

fn convert_cors(any: &weft_xds::Any) -> Result<Cors, RouteError> {
    use weft_xds::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
    let filter = weft_xds::filter_name::CORS;
    let bad = |why: String| RouteError::Cors {
        filter: filter.to_string(),
        why,
    };
    let c: CorsPolicy =
        weft_xds::unpack(any).map_err(|e| bad(format!("does not decode as CorsPolicy: {e}")))?;
    if c.filter_enabled.is_some() || c.shadow_enabled.is_some() {
        return Err(bad(
            "filter_enabled and shadow_enabled are not supported".into()
        ));
    }
    let origins = c
        .allow_origin_string_match
        .iter()
        .map(|m| convert_string_matcher(m, "origin"))
        .collect::<Result<_, _>>()?;
    let value = |field: &str, v: &str| -> Result<Option<http::HeaderValue>, RouteError> {
        if v.is_empty() {
            return Ok(None);
        }
        http::HeaderValue::from_str(v)
            .map(Some)
            .map_err(|_| bad(format!("{field}: {v:?} is not a header value")))
    };
    if !c.max_age.is_empty() && c.max_age.parse::<u64>().is_err() {
        return Err(bad(format!(
            "max_age: {:?} is not a number of seconds",
            c.max_age
        )));
    }
    Ok(Cors {
        origins,
        allow_methods: value("allow_methods", &c.allow_methods)?,
        allow_headers: value("allow_headers", &c.allow_headers)?,
        expose_headers: value("expose_headers", &c.expose_headers)?,
        max_age: value("max_age", &c.max_age)?,
        allow_credentials: c.allow_credentials.is_some_and(|b| b.value),
        forward_unmatched_preflights: c.forward_not_matching_preflights.is_none_or(|b| b.value),
    })
}

fn hash_keys(policies: &[xroute::route_action::HashPolicy]) -> Result<Box<[HashKey]>, RouteError> {
    use xroute::route_action::hash_policy::PolicySpecifier as P;
    policies
        .iter()
        .filter_map(|p| p.policy_specifier.as_ref())
        .map(|spec| match spec {
            P::Header(h) => http::HeaderName::from_bytes(h.header_name.as_bytes())
                .map(HashKey::Header)
                .map_err(|_| RouteError::HeaderName {
                    name: h.header_name.clone(),
                }),
            P::Cookie(c) => Ok(HashKey::Cookie {
                name: c.name.as_str().into(),
                path: c.path.as_str().into(),
                ttl: duration(c.ttl.as_ref(), "hash_policy.cookie.ttl")?
                    .or(c.ttl.as_ref().map(|_| Duration::ZERO)),
            }),
            P::ConnectionProperties(c) if c.source_ip => Ok(HashKey::SourceIp),
            P::ConnectionProperties(_) => Err(RouteError::UnsupportedAction(
                "hash_policy.connection_properties without source_ip",
            )),
            P::QueryParameter(q) => Ok(HashKey::Query(q.name.as_str().into())),
            P::FilterState(_) => Err(RouteError::UnsupportedAction("hash_policy.filter_state")),
        })
        .collect()
}

fn convert_fault(f: &HttpFault) -> Result<Fault, RouteError> {
    let delay = match &f.delay {
        None => None,
        Some(d) => match &d.fault_delay_secifier {
            Some(fault_delay::FaultDelaySecifier::FixedDelay(fd)) => {
                let dur = duration(Some(fd), "fault.delay.fixed_delay")?.unwrap_or_default();
                let pct = match &d.percentage {
                    Some(p) => Percent::from_fractional(p)?,
                    // Envoy: an absent percentage means 100% (Istio always sets one).
                    None => Percent {
                        per_million: 1_000_000,
                    },
                };
                Some((dur, pct))
            }
            Some(fault_delay::FaultDelaySecifier::HeaderDelay(_)) => {
                return Err(RouteError::UnsupportedFault("header_delay"))
            }
            None => None,
        },
    };
    let abort = match &f.abort {
        None => None,
        Some(a) => match &a.error_type {
            Some(fault_abort::ErrorType::HttpStatus(s)) => {
                let status = u16::try_from(*s)
                    .ok()
                    .filter(|s| (200..600).contains(s))
                    .and_then(|s| http::StatusCode::from_u16(s).ok())
                    .ok_or(RouteError::FaultStatus(*s))?;
                let pct = match &a.percentage {
                    Some(p) => Percent::from_fractional(p)?,
                    None => Percent {
                        per_million: 1_000_000,
                    },
                };
                Some((Abort::Http(status), pct))
            }
            Some(fault_abort::ErrorType::GrpcStatus(code)) => {
                // Codes are 0 to 16; anything beyond is not a status a client knows.
                if *code > 16 {
                    return Err(RouteError::UnsupportedFault("grpc_status above 16"));
                }
                let pct = match &a.percentage {
                    Some(p) => Percent::from_fractional(p)?,
                    None => Percent {
                        per_million: 1_000_000,
                    },
                };
                Some((Abort::Grpc(*code), pct))
            }
            Some(fault_abort::ErrorType::HeaderAbort(_)) => {
                return Err(RouteError::UnsupportedFault("header_abort"))
            }
            None => None,
        },
    };
    Ok(Fault { delay, abort })
}

// === matching ===

/// What matching looks at in a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Method.
    pub method: &'a http::Method,
    /// Authority as received (`host[:port]`).
    pub authority: &'a str,
    /// Path with query.
    pub path_and_query: &'a str,
    /// `http` (weft serves plaintext).
    pub scheme: &'a str,
    /// Headers.
    pub headers: &'a http::HeaderMap,
}

impl RouteConfig {
    /// A table, indexed for lookup by domain.
    pub fn new(name: String, virtual_hosts: Vec<VirtualHost>, headers: HeaderEdits) -> RouteConfig {
        let mut exact = super::FastMap::default();
        let mut wildcards = false;
        for (i, vh) in virtual_hosts.iter().enumerate() {
            for d in &vh.domains {
                match d {
                    Domain::Exact(e) => {
                        exact.entry(e.as_str().into()).or_insert(i);
                    }
                    _ => wildcards = true,
                }
            }
        }
        RouteConfig {
            name,
            virtual_hosts,
            headers,
            exact,
            wildcards,
        }
    }

    /// The virtual host for an authority: exact domains (with and without port) first, then the longest
    /// suffix wildcard, then the longest prefix wildcard, then `*` (Envoy's order).
    pub fn find_virtual_host(&self, authority: &str) -> Option<&VirtualHost> {
        self.find_virtual_host_index(authority)
            .and_then(|i| self.virtual_hosts.get(i))
    }

    /// As `find_virtual_host`, its index in `virtual_hosts`.
    pub fn find_virtual_host_index(&self, authority: &str) -> Option<usize> {
        let lowered;
        let full = if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = authority.to_ascii_lowercase();
            lowered.as_str()
        } else {
            authority
        };
        let host = strip_port(full);
        let hit = match (self.exact.get(full), self.exact.get(host)) {
            (Some(&a), Some(&b)) => Some(a.min(b)),
            (a, b) => a.or(b).copied(),
        };
        if hit.is_some() || !self.wildcards {
            return hit;
        }
        // (pattern length, virtual host index)
        let mut best_suffix: Option<(usize, usize)> = None;
        let mut best_prefix: Option<(usize, usize)> = None;
        let mut any: Option<usize> = None;
        for (i, vh) in self.virtual_hosts.iter().enumerate() {
            for d in &vh.domains {
                match d {
                    Domain::Exact(_) => {}
                    Domain::Suffix(s) => {
                        let hit = [full, host]
                            .iter()
                            .any(|h| h.len() > s.len() && h.ends_with(s.as_str()));
                        if hit && best_suffix.is_none_or(|(l, _)| s.len() > l) {
                            best_suffix = Some((s.len(), i));
                        }
                    }
                    Domain::Prefix(p) => {
                        let hit = [full, host]
                            .iter()
                            .any(|h| h.len() > p.len() && h.starts_with(p.as_str()));
                        if hit && best_prefix.is_none_or(|(l, _)| p.len() > l) {
                            best_prefix = Some((p.len(), i));
                        }
                    }
                    Domain::Any => {
                        if any.is_none() {
                            any = Some(i);
                        }
                    }
                }
            }
        }
        best_suffix.or(best_prefix).map(|(_, i)| i).or(any)
    }
}

/// `host:port` → `host` (IPv6 literals keep their brackets).
pub fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(i) => &authority[..=i],
            None => authority,
        };
    }
    match crate::http::last_colon(authority) {
        Some(i)
            if i + 1 < authority.len()
                && authority.as_bytes()[i + 1..].iter().all(u8::is_ascii_digit) =>
        {
            &authority[..i]
        }
        _ => authority,
    }
}

impl PathRewrite {
    /// The new path and query for a request whose route matched with `matched`; `None` when unchanged.
    pub fn apply(&self, matched: &PathMatch, path_and_query: &str) -> Option<String> {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let with_query = |mut p: String| {
            if let Some(q) = query {
                p.push('?');
                p.push_str(q);
            }
            p
        };
        match self {
            PathRewrite::Keep => None,
            PathRewrite::Path(p) if p.contains('?') => Some(p.clone()),
            PathRewrite::Path(p) => Some(with_query(p.clone())),
            // The matched prefix is replaced; after an exact or regex match, the whole path is.
            PathRewrite::Prefix(r) => match matched {
                PathMatch::Prefix(m) => {
                    let rest = path_and_query.get(m.len()..).unwrap_or_default();
                    Some(format!("{r}{rest}"))
                }
                PathMatch::Exact(_) | PathMatch::Regex(_) => Some(with_query(r.clone())),
            },
            PathRewrite::Regex(re, sub) => {
                Some(with_query(re.replace_all(path, sub.as_str()).into_owned()))
            }
        }
    }
}

impl Redirect {
    /// The `Location` for a request (`scheme` it came over, its authority and path) that matched with
    /// `matched`.
    pub fn location(
        &self,
        matched: &PathMatch,
        scheme: &str,
        authority: &str,
        path_and_query: &str,
    ) -> String {
        let new_scheme = self.scheme.as_deref().unwrap_or(scheme);
        let host = match (&self.host, self.port) {
            (Some(h), 0) => h.as_str(),
            (Some(h), _) => strip_port(h),
            // A new scheme drops the request's port: the default port of the new scheme is meant
            // (Istio's FROM_PROTOCOL_DEFAULT).
            (None, 0) if !new_scheme.eq_ignore_ascii_case(scheme) => strip_port(authority),
            (None, 0) => authority,
            (None, _) => strip_port(authority),
        };
        let rewritten = self.path.apply(matched, path_and_query);
        let mut path = rewritten.as_deref().unwrap_or(path_and_query);
        if self.strip_query {
            path = path.split_once('?').map_or(path, |(p, _)| p);
        }
        let mut out = format!("{new_scheme}://{host}");
        if self.port != 0 {
            out.push(':');
            out.push_str(&self.port.to_string());
        }
        out.push_str(path);
        out
    }
}

impl Cors {
    /// Whether `origin` is one of the allowed origins.
    pub fn allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|m| m.matches(origin))
    }
}

impl VirtualHost {
    /// The first route that matches.
    pub fn find_route(&self, req: &RequestView<'_>) -> Option<&Route> {
        self.find_route_index(req).and_then(|i| self.routes.get(i))
    }

    /// As `find_route`, its index in `routes`.
    pub fn find_route_index(&self, req: &RequestView<'_>) -> Option<usize> {
        self.routes.iter().position(|r| r.matcher.matches(req))
    }
}

impl RouteMatch {
    /// Whether the request meets every condition.
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        let path_only = req
            .path_and_query
            .split_once('?')
            .map_or(req.path_and_query, |(p, _)| p);
        let path_ok = match &self.path {
            PathMatch::Prefix(p) => {
                if self.case_sensitive {
                    req.path_and_query.starts_with(p.as_str())
                } else {
                    req.path_and_query.len() >= p.len()
                        && req.path_and_query.as_bytes()[..p.len()]
                            .eq_ignore_ascii_case(p.as_bytes())
                }
            }
            PathMatch::Exact(p) => {
                if self.case_sensitive {
                    path_only == p
                } else {
                    path_only.eq_ignore_ascii_case(p)
                }
            }
            PathMatch::Regex(re) => re.is_match(path_only),
        };
        path_ok
            && self.headers.iter().all(|h| h.matches(req))
            && (self.query.is_empty() || self.query_matches(req.path_and_query))
    }

    fn query_matches(&self, path_and_query: &str) -> bool {
        let query = path_and_query.split_once('?').map_or("", |(_, q)| q);
        self.query.iter().all(|q| {
            // The first parameter of that name, its value as sent (`?name` has an empty value).
            let value = query.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == q.name).then_some(v)
            });
            match (&q.test, value) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(sm), Some(v)) => sm.matches(v),
            }
        })
    }
}

impl HeaderMatch {
    /// Whether the request meets this condition (after inversion).
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        let joined;
        let value: Option<&str> = match &self.key {
            HeaderKey::Method => Some(req.method.as_str()),
            HeaderKey::Authority => Some(req.authority),
            HeaderKey::Path => Some(req.path_and_query),
            HeaderKey::Scheme => Some(req.scheme),
            HeaderKey::Name(n) => {
                let mut values = req.headers.get_all(n).iter();
                match (values.next(), values.next()) {
                    (None, _) => None,
                    (Some(v), None) => v.to_str().ok(),
                    (Some(first), Some(second)) => {
                        // Envoy matches a repeated header on its values joined with ",".
                        let mut s = String::from(first.to_str().unwrap_or_default());
                        for v in std::iter::once(second).chain(values) {
                            s.push(',');
                            s.push_str(v.to_str().unwrap_or_default());
                        }
                        joined = s;
                        Some(joined.as_str())
                    }
                }
            }
        };
        let result = match &self.test {
            HeaderTest::Present(want) => value.is_some() == *want,
            HeaderTest::String(sm) => value.is_some_and(|v| sm.matches(v)),
        };
        result != self.invert
    }
}

impl StringMatch {
    /// Whether `v` meets the pattern.
    pub fn matches(&self, v: &str) -> bool {
        let ic = self.ignore_case;
        match &self.pattern {
            StringPattern::Exact(p) => {
                if ic {
                    v.eq_ignore_ascii_case(p)
                } else {
                    v == p
                }
            }
            StringPattern::Prefix(p) => {
                v.len() >= p.len()
                    && if ic {
                        v.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
                    } else {
                        v.starts_with(p.as_str())
                    }
            }
            StringPattern::Suffix(p) => {
                v.len() >= p.len()
                    && if ic {
                        v.as_bytes()[v.len() - p.len()..].eq_ignore_ascii_case(p.as_bytes())
                    } else {
                        v.ends_with(p.as_str())
                    }
            }
            StringPattern::Contains(p) => {
                if ic {
                    v.to_ascii_lowercase().contains(&p.to_ascii_lowercase())
                } else {
                    v.contains(p.as_str())
                }
            }
            StringPattern::Regex(re) => re.is_match(v),
        }
    }
}

#[cfg(test)]
mod tests;
