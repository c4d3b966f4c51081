//! External authorization, Envoy's `envoy.filters.http.ext_authz` and `envoy.filters.network.ext_authz`
//! as weftd (and istiod) send them for a CUSTOM AuthorizationPolicy: the filter config is compiled once
//! per push ([`ExtAuthz`]), and a request (or, for the network filter, a connection) that the marking
//! RBAC filter's shadow rules matched is checked with the authorizer before the DENY/ALLOW RBAC
//! filters run.
//!
//! - **Which requests.** `filter_enabled_metadata` names the `shadow_effective_policy_id` of an RBAC
//!   filter earlier in the chain (Istio: prefix `istio_ext_authz_`, value prefix
//!   `istio-ext-authz-<provider>-`). That filter is taken out of the RBAC chain and evaluated here, on
//!   its shadow rules only; without `filter_enabled_metadata` every request is checked.
//! - **HTTP service.** The check is a request to the cluster of `server_uri` with the original method,
//!   `path_prefix` + the original path, Envoy's default headers (`Host`, `Authorization`,
//!   `Content-Length`) and those `allowed_headers` match, plus `headers_to_add`. 200 allows, copying the
//!   `allowed_upstream_headers` of the answer onto the request and `allowed_client_headers_on_success`
//!   onto the response; a 5xx is an error; any other status denies with the answer's status, body and
//!   `allowed_client_headers` (all of them when unset).
//! - **gRPC service.** `envoy.service.auth.v3.Authorization/Check` on the cluster of `envoy_grpc`, with
//!   the attributes Envoy fills: source and destination addresses and principals, the request's id,
//!   method, headers, path, host, scheme, protocol, size and body when asked. `OK` allows, applying the
//!   `ok_response` header edits; anything else denies with the `denied_response` (403 by default).
//! - **Errors.** No cluster, no endpoint, a refused connection, a reset, a malformed answer or the
//!   timeout give `status_on_error` (403 by default) with Envoy's `UAEX` flag, unless
//!   `failure_mode_allow`; so do denials.
//!
//! Connections to the authorizer are the proxy's pooled upstream connections ([`weft_http::upstream`]),
//! with the cluster's TLS. Whatever the config holds that this module does not implement refuses the
//! listener, naming the field.

use crate::authz::{self, Subject};
use crate::config::cluster::Cluster;
use crate::Shared;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Version};
use http_body_util::BodyExt;
use prost::Message;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use weft_http::{h1, upstream, Body};
use weft_xds::pb::envoy::config::core::v3::{
    address, grpc_service, header_value_option::HeaderAppendAction, http_uri, socket_address,
    Address, HeaderValueOption, SocketAddress,
};
use weft_xds::pb::envoy::extensions::filters::http::ext_authz::v3 as xhttp;
use weft_xds::pb::envoy::extensions::filters::network::ext_authz::v3 as xnet;
use weft_xds::pb::envoy::r#type::matcher::v3::{
    metadata_matcher::path_segment::Segment, string_matcher::MatchPattern, value_matcher,
    ListStringMatcher, MetadataMatcher, StringMatcher,
};
use weft_xds::pb::envoy::service::auth::v3::{
    attribute_context, check_response, AttributeContext, CheckRequest, CheckResponse,
};

/// The HTTP ext_authz filter's name.
pub const HTTP_FILTER: &str = "envoy.filters.http.ext_authz";
/// The network ext_authz filter's name.
pub const NETWORK_FILTER: &str = "envoy.filters.network.ext_authz";
/// The type of the HTTP ext_authz filter's config.
pub const HTTP_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz";
/// The type of the network ext_authz filter's config.
pub const NETWORK_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.ext_authz.v3.ExtAuthz";
/// Envoy's timeout of a gRPC check when `grpc_service.timeout` is unset.
pub const DEFAULT_GRPC_TIMEOUT: Duration = Duration::from_millis(200);
/// The gRPC method of a check.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";
/// The most of an authorizer's answer read (a denial's body, a gRPC message); more is an error.
const MAX_ANSWER: usize = 1 << 20;
/// The most of a request body read for a check (what the HTTP/1.1 server reads whole anyway, or
/// `max_request_bytes` when larger).
const BODY_READ_LIMIT: usize = weft_http::WHOLE_BODY_LIMIT as usize;

static NO_FIELDS: upstream::EncodedFields = upstream::EncodedFields::EMPTY;

/// Why an ext_authz filter's config was refused: the field, and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config does not decode as its type.
    #[error("typed_config {type_url} does not decode")]
    Decode {
        /// The type.
        type_url: &'static str,
        /// prost's error.
        #[source]
        source: weft_xds::DecodeError,
    },
    /// A filter of this name whose config is another type, or none.
    #[error("typed_config: {what}")]
    Type {
        /// What it has.
        what: String,
    },
    /// Something Envoy has that Weft does not implement.
    #[error("{field}: {what} is not supported")]
    Unsupported {
        /// The field.
        field: &'static str,
        /// What.
        what: String,
    },
    /// Something Envoy would refuse too.
    #[error("{field}: {why}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        why: String,
    },
}

fn unsupported(field: &'static str, what: impl Into<String>) -> ConfigError {
    ConfigError::Unsupported {
        field,
        what: what.into(),
    }
}

fn invalid(field: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        why: why.into(),
    }
}

/// How many compiled filters exist: while there are none, a request asks no listener for one.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Whether any listener may have an ext_authz filter: false means none has.
pub(crate) fn any_live() -> bool {
    LIVE.load(Ordering::Relaxed) != 0
}

struct Live;

impl Live {
    fn new() -> Live {
        LIVE.fetch_add(1, Ordering::Relaxed);
        Live
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A header name list (`ListStringMatcher`), matched on lowercase names as Envoy's ext_authz does.
#[derive(Debug, Default)]
struct Names(Vec<Pattern>);

#[derive(Debug)]
enum Pattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
}

impl Names {
    fn compile(l: Option<&ListStringMatcher>, field: &'static str) -> Result<Names, ConfigError> {
        let mut out = Vec::new();
        for m in l.iter().flat_map(|l| &l.patterns) {
            let p = match &m.match_pattern {
                Some(MatchPattern::Exact(v)) => Pattern::Exact(v.to_ascii_lowercase()),
                Some(MatchPattern::Prefix(v)) => Pattern::Prefix(v.to_ascii_lowercase()),
                Some(MatchPattern::Suffix(v)) => Pattern::Suffix(v.to_ascii_lowercase()),
                Some(MatchPattern::Contains(v)) => Pattern::Contains(v.to_ascii_lowercase()),
                _ => {
                    return Err(unsupported(
                        field,
                        "a pattern other than exact, prefix, suffix or contains",
                    ))
                }
            };
            out.push(p);
        }
        Ok(Names(out))
    }

    fn matches(&self, name: &str) -> bool {
        self.0.iter().any(|p| match p {
            Pattern::Exact(v) => name == v,
            Pattern::Prefix(v) => name.starts_with(v.as_str()),
            Pattern::Suffix(v) => name.ends_with(v.as_str()),
            Pattern::Contains(v) => name.contains(v.as_str()),
        })
    }
}

/// `with_request_body`.
#[derive(Debug, Clone, Copy)]
struct BodySettings {
    max: usize,
    partial: bool,
    raw: bool,
}

/// Which requests are checked: those the marking RBAC filter's shadow rules matched with a policy name
/// of this form.
#[derive(Debug)]
struct Marker {
    rbac: authz::Filter,
    value: Value,
}

#[derive(Debug)]
enum Value {
    Exact(String),
    Prefix(String),
}

/// The HTTP authorization service.
#[derive(Debug)]
struct HttpService {
    path_prefix: String,
    allowed: Names,
    to_add: Vec<(HeaderName, HeaderValue)>,
    upstream: Names,
    /// `None`: every header of a denial goes to the client.
    client: Option<Names>,
    client_on_success: Names,
}

#[derive(Debug)]
enum Service {
    Http(HttpService),
    Grpc { authority: http::uri::Authority },
}

/// A listener's ext_authz filter, compiled: immutable, shared by the requests of a snapshot.
#[derive(Debug)]
pub struct ExtAuthz {
    marker: Option<Marker>,
    cluster: Arc<str>,
    timeout: Duration,
    fail_open: bool,
    status_on_error: StatusCode,
    body: Option<BodySettings>,
    service: Service,
    _live: LiveGuard,
}

/// [`Live`] with a `Debug`.
struct LiveGuard(#[allow(dead_code)] Live);

impl std::fmt::Debug for LiveGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

fn unpack<M: Message + Default>(
    any: &weft_xds::Any,
    type_url: &'static str,
) -> Result<M, ConfigError> {
    if any.type_url != type_url {
        return Err(ConfigError::Type {
            what: format!("{} (expected {type_url})", any.type_url),
        });
    }
    weft_xds::unpack(any).map_err(|source| ConfigError::Decode { type_url, source })
}

/// Whether the HTTP filter named `name` with `config` is ext_authz.
pub fn is_http(name: &str, config: Option<&weft_xds::Any>) -> bool {
    name == HTTP_FILTER || config.is_some_and(|a| a.type_url == HTTP_TYPE)
}

/// Whether the network filter named `name` with `config` is ext_authz.
pub fn is_network(name: &str, config: Option<&weft_xds::Any>) -> bool {
    name == NETWORK_FILTER || config.is_some_and(|a| a.type_url == NETWORK_TYPE)
}

impl ExtAuthz {
    /// Compiles an HTTP ext_authz filter. `earlier`: the RBAC filters before it in the chain; the one
    /// whose shadow rules enable it is taken out of them.
    pub fn http(
        config: Option<&weft_xds::Any>,
        disabled: bool,
        earlier: &mut Vec<authz::Filter>,
    ) -> Result<ExtAuthz, ConfigError> {
        if disabled {
            return Err(unsupported("disabled", "an HTTP filter enabled per route"));
        }
        let Some(any) = config else {
            return Err(ConfigError::Type {
                what: "not set (weft reads only a typed_config)".into(),
            });
        };
        let c: xhttp::ExtAuthz = unpack(any, HTTP_TYPE)?;
        if c.filter_enabled.is_some() {
            return Err(unsupported("filter_enabled", "a runtime fraction"));
        }
        if c.deny_at_disable.is_some() {
            return Err(unsupported("deny_at_disable", "a runtime flag"));
        }
        if c.failure_mode_allow_header_add {
            return Err(unsupported("failure_mode_allow_header_add", "true"));
        }
        if c.include_peer_certificate {
            return Err(unsupported("include_peer_certificate", "true"));
        }
        if !c.metadata_context_namespaces.is_empty()
            || !c.typed_metadata_context_namespaces.is_empty()
        {
            return Err(unsupported(
                "metadata_context_namespaces",
                "dynamic metadata in the check",
            ));
        }
        if c.shadow_mode {
            return Err(unsupported("shadow_mode", "true"));
        }
        if c.allowed_headers.is_some() || c.disallowed_headers.is_some() {
            return Err(unsupported(
                "allowed_headers",
                "a header list on the filter (weft reads http_service.authorization_request)",
            ));
        }
        let status_on_error = status_of(c.status_on_error.as_ref().map(|s| s.code))?;
        let body = c
            .with_request_body
            .as_ref()
            .map(body_settings)
            .transpose()?;
        let (cluster, timeout, service) = match &c.services {
            Some(xhttp::ext_authz::Services::HttpService(h)) => http_service(h)?,
            Some(xhttp::ext_authz::Services::GrpcService(g)) => {
                let (cluster, timeout, authority) = grpc(g)?;
                (cluster, timeout, Service::Grpc { authority })
            }
            None => return Err(invalid("services", "neither http_service nor grpc_service")),
        };
        let marker = marker(
            c.filter_enabled_metadata.as_ref(),
            authz::HTTP_RBAC_FILTER,
            earlier,
        )?;
        Ok(ExtAuthz {
            marker,
            cluster,
            timeout,
            fail_open: c.failure_mode_allow,
            status_on_error,
            body,
            service,
            _live: LiveGuard(Live::new()),
        })
    }

    /// Compiles a network ext_authz filter, as [`ExtAuthz::http`].
    pub fn network(
        config: Option<&weft_xds::Any>,
        earlier: &mut Vec<authz::Filter>,
    ) -> Result<ExtAuthz, ConfigError> {
        let Some(any) = config else {
            return Err(ConfigError::Type {
                what: "not set (weft reads only a typed_config)".into(),
            });
        };
        let c: xnet::ExtAuthz = unpack(any, NETWORK_TYPE)?;
        if c.include_peer_certificate {
            return Err(unsupported("include_peer_certificate", "true"));
        }
        if c.include_tls_session {
            return Err(unsupported("include_tls_session", "true"));
        }
        let Some(g) = &c.grpc_service else {
            return Err(invalid("grpc_service", "is not set"));
        };
        let (cluster, timeout, authority) = grpc(g)?;
        let marker = marker(
            c.filter_enabled_metadata.as_ref(),
            authz::NETWORK_RBAC_FILTER,
            earlier,
        )?;
        Ok(ExtAuthz {
            marker,
            cluster,
            timeout,
            fail_open: c.failure_mode_allow,
            status_on_error: StatusCode::FORBIDDEN,
            body: None,
            service: Service::Grpc { authority },
            _live: LiveGuard(Live::new()),
        })
    }

    /// Whether a request from `s` is checked: its marking rules matched (or there are none).
    pub(crate) fn applies(&self, s: &Subject<'_>, http: Option<&http::request::Parts>) -> bool {
        let Some(m) = &self.marker else {
            return true;
        };
        match (m.rbac.shadow_policy(s, http), &m.value) {
            (Some(p), Value::Exact(v)) => p == v,
            (Some(p), Value::Prefix(v)) => p.starts_with(v.as_str()),
            (None, _) => false,
        }
    }
}

fn status_of(code: Option<i32>) -> Result<StatusCode, ConfigError> {
    match code {
        None | Some(0) => Ok(StatusCode::FORBIDDEN),
        Some(c) => u16::try_from(c)
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or_else(|| invalid("status_on_error", format!("{c} is not an HTTP status"))),
    }
}

fn body_settings(b: &xhttp::BufferSettings) -> Result<BodySettings, ConfigError> {
    if b.max_request_bytes == 0 {
        return Err(invalid(
            "with_request_body.max_request_bytes",
            "must be at least 1",
        ));
    }
    Ok(BodySettings {
        max: b.max_request_bytes as usize,
        partial: b.allow_partial_message,
        raw: b.pack_as_bytes,
    })
}

fn duration(
    d: &weft_xds::pb::google::protobuf::Duration,
    field: &'static str,
) -> Result<Duration, ConfigError> {
    let secs = u64::try_from(d.seconds).map_err(|_| invalid(field, "is negative"))?;
    let nanos = u32::try_from(d.nanos).map_err(|_| invalid(field, "is negative"))?;
    Ok(Duration::new(secs, nanos))
}

// `authorization_request.allowed_headers` is deprecated in Envoy for the filter-level field, but it is
// what istiod sends.
#[allow(deprecated)]
fn http_service(h: &xhttp::HttpService) -> Result<(Arc<str>, Duration, Service), ConfigError> {
    let Some(uri) = &h.server_uri else {
        return Err(invalid("http_service.server_uri", "is not set"));
    };
    let cluster = match &uri.http_upstream_type {
        Some(http_uri::HttpUpstreamType::Cluster(c)) if !c.is_empty() => Arc::from(c.as_str()),
        _ => return Err(invalid("http_service.server_uri.cluster", "is not set")),
    };
    let timeout = match &uri.timeout {
        Some(d) => duration(d, "http_service.server_uri.timeout")?,
        None => return Err(invalid("http_service.server_uri.timeout", "is not set")),
    };
    if !h.path_override.is_empty() {
        return Err(unsupported("http_service.path_override", "a path override"));
    }
    if h.retry_policy.is_some() {
        return Err(unsupported(
            "http_service.retry_policy",
            "retries of the check",
        ));
    }
    if !h.path_prefix.is_empty()
        && (!h.path_prefix.starts_with('/')
            || http::uri::PathAndQuery::try_from(h.path_prefix.as_str()).is_err())
    {
        return Err(invalid(
            "http_service.path_prefix",
            format!("{:?} is not a path", h.path_prefix),
        ));
    }
    let req = h.authorization_request.as_ref();
    let allowed = Names::compile(
        req.and_then(|r| r.allowed_headers.as_ref()),
        "http_service.authorization_request.allowed_headers",
    )?;
    let mut to_add = Vec::new();
    for o in req.iter().flat_map(|r| &r.headers_to_add) {
        let bad = || {
            invalid(
                "http_service.authorization_request.headers_to_add",
                "not a valid header",
            )
        };
        let name = HeaderName::from_bytes(o.key.as_bytes()).map_err(|_| bad())?;
        let value = HeaderValue::from_str(&o.value).map_err(|_| bad())?;
        to_add.push((name, value));
    }
    let resp = h.authorization_response.as_ref();
    if resp.is_some_and(|r| r.allowed_upstream_headers_to_append.is_some()) {
        return Err(unsupported(
            "http_service.authorization_response.allowed_upstream_headers_to_append",
            "appending",
        ));
    }
    if resp.is_some_and(|r| r.dynamic_metadata_from_headers.is_some()) {
        return Err(unsupported(
            "http_service.authorization_response.dynamic_metadata_from_headers",
            "dynamic metadata",
        ));
    }
    let upstream = Names::compile(
        resp.and_then(|r| r.allowed_upstream_headers.as_ref()),
        "http_service.authorization_response.allowed_upstream_headers",
    )?;
    let client = resp
        .and_then(|r| r.allowed_client_headers.as_ref())
        .map(|l| {
            Names::compile(
                Some(l),
                "http_service.authorization_response.allowed_client_headers",
            )
        })
        .transpose()?;
    let client_on_success = Names::compile(
        resp.and_then(|r| r.allowed_client_headers_on_success.as_ref()),
        "http_service.authorization_response.allowed_client_headers_on_success",
    )?;
    Ok((
        cluster,
        timeout,
        Service::Http(HttpService {
            path_prefix: h.path_prefix.clone(),
            allowed,
            to_add,
            upstream,
            client,
            client_on_success,
        }),
    ))
}

fn grpc(
    g: &weft_xds::pb::envoy::config::core::v3::GrpcService,
) -> Result<(Arc<str>, Duration, http::uri::Authority), ConfigError> {
    let Some(grpc_service::TargetSpecifier::EnvoyGrpc(e)) = &g.target_specifier else {
        return Err(unsupported(
            "grpc_service",
            "google_grpc (weft calls through envoy_grpc)",
        ));
    };
    if e.cluster_name.is_empty() {
        return Err(invalid(
            "grpc_service.envoy_grpc.cluster_name",
            "is not set",
        ));
    }
    if !g.initial_metadata.is_empty() {
        return Err(unsupported("grpc_service.initial_metadata", "metadata"));
    }
    let name = if e.authority.is_empty() {
        &e.cluster_name
    } else {
        &e.authority
    };
    let authority =
        http::uri::Authority::try_from(name.replace('|', "_.").as_str()).map_err(|_| {
            invalid(
                "grpc_service.envoy_grpc.authority",
                format!("{name:?} is not an authority"),
            )
        })?;
    let timeout = match &g.timeout {
        Some(d) => duration(d, "grpc_service.timeout")?,
        None => DEFAULT_GRPC_TIMEOUT,
    };
    Ok((Arc::from(e.cluster_name.as_str()), timeout, authority))
}

/// The marking RBAC filter `filter_enabled_metadata` names, taken out of `earlier`; no RBAC filter
/// with rules may come before ext_authz (weft checks with the authorizer before any RBAC decision).
fn marker(
    m: Option<&MetadataMatcher>,
    rbac_filter: &str,
    earlier: &mut Vec<authz::Filter>,
) -> Result<Option<Marker>, ConfigError> {
    let marker = match m {
        None => None,
        Some(m) => {
            const F: &str = "filter_enabled_metadata";
            let only = || {
                unsupported(
                    F,
                    format!(
                        "anything but the shadow_effective_policy_id of an earlier {rbac_filter} filter"
                    ),
                )
            };
            if m.filter != rbac_filter || m.invert || m.path.len() != 1 {
                return Err(only());
            }
            let Some(Segment::Key(key)) = &m.path[0].segment else {
                return Err(only());
            };
            let value = match m.value.as_ref().and_then(|v| v.match_pattern.as_ref()) {
                Some(value_matcher::MatchPattern::StringMatch(StringMatcher {
                    match_pattern: Some(MatchPattern::Prefix(p)),
                    ignore_case: false,
                })) => Value::Prefix(p.clone()),
                Some(value_matcher::MatchPattern::StringMatch(StringMatcher {
                    match_pattern: Some(MatchPattern::Exact(p)),
                    ignore_case: false,
                })) => Value::Exact(p.clone()),
                _ => {
                    return Err(unsupported(
                        F,
                        "a value other than an exact or prefix string",
                    ))
                }
            };
            let Some(i) = earlier.iter().rposition(|f| f.writes_shadow_key(key)) else {
                return Err(invalid(
                    F,
                    format!("no earlier {rbac_filter} filter has shadow rules writing {key:?}"),
                ));
            };
            let rbac = earlier.remove(i);
            if rbac.enforces() {
                return Err(unsupported(F, "a marking RBAC filter that also has rules"));
            }
            Some(Marker { rbac, value })
        }
    };
    if earlier.iter().any(authz::Filter::enforces) {
        return Err(unsupported(
            "ext_authz",
            format!("an {rbac_filter} filter with rules before it"),
        ));
    }
    Ok(marker)
}

// === the check ===

/// The connection a request came on, owned: the check outlives the borrow of the connection.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub(crate) source: SocketAddr,
    pub(crate) destination: SocketAddr,
    pub(crate) principal: Option<Arc<str>>,
    pub(crate) sni: Option<Arc<str>>,
}

impl Peer {
    pub(crate) fn subject<'a>(&'a self, auth: Option<&'a serde_json::Value>) -> Subject<'a> {
        Subject {
            source: self.source,
            destination: self.destination,
            principal: self.principal.as_deref(),
            sni: self.sni.as_deref(),
            auth,
        }
    }
}

/// What the authorizer said of a request.
#[derive(Debug)]
pub enum Verdict {
    /// Go on, with these edits.
    Allow(Allowed),
    /// Refuse with this response.
    Deny(Box<Denied>),
}

/// The edits an OK answer asks for.
#[derive(Debug, Default)]
pub struct Allowed {
    /// Set on the request sent upstream (replacing any of the name).
    set: Vec<(HeaderName, HeaderValue)>,
    /// Appended to the request.
    append: Vec<(HeaderName, HeaderValue)>,
    /// Removed from the request.
    remove: Vec<HeaderName>,
    /// Added to the response sent downstream.
    pub(crate) response: Vec<(HeaderName, HeaderValue, bool)>,
}

impl Allowed {
    /// Applies the request edits.
    pub(crate) fn apply(&mut self, headers: &mut HeaderMap) {
        for n in self.remove.drain(..) {
            headers.remove(n);
        }
        for (n, v) in self.set.drain(..) {
            headers.insert(n, v);
        }
        for (n, v) in self.append.drain(..) {
            headers.append(n, v);
        }
    }

    /// Adds the response headers.
    pub(crate) fn apply_response(self, headers: &mut HeaderMap) {
        for (n, v, append) in self.response {
            if append {
                headers.append(n, v);
            } else {
                headers.insert(n, v);
            }
        }
    }
}

/// A denial: the response the client gets.
#[derive(Debug)]
pub struct Denied {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

/// Why the authorizer could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The snapshot has no such cluster.
    #[error("cluster {0} not found")]
    NoCluster(Arc<str>),
    /// The cluster has no endpoint.
    #[error("no healthy upstream in cluster {0}")]
    NoEndpoint(Arc<str>),
    /// Connecting, sending or receiving failed.
    #[error("authorizer {addr} failed")]
    Upstream {
        /// The endpoint.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: upstream::UpstreamError,
    },
    /// The answer's body could not be read, or was too long.
    #[error("cannot read the authorizer's answer")]
    Answer,
    /// The check took longer than the filter's timeout.
    #[error("the authorizer did not answer within {0:?}")]
    Timeout(Duration),
    /// The HTTP authorizer answered a 5xx.
    #[error("the authorizer answered {0}")]
    Status(StatusCode),
    /// The gRPC authorizer failed the call, or its answer does not decode.
    #[error("the authorizer's gRPC answer is an error: {0}")]
    Grpc(String),
    /// The request could not be read or turned into a check.
    #[error("cannot build the check request")]
    Request,
}

/// The outcome of a check, for the request path.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Allowed (or failed open): these edits.
    Allow(Allowed),
    /// The response to give instead.
    Refuse(crate::error::ProxyError),
}

impl ExtAuthz {
    /// Checks an HTTP request with the authorizer, under the filter's timeout. The body is read first
    /// when the filter sends it, and put back whole.
    pub(crate) async fn check_request(
        &self,
        shared: &Shared,
        peer: &Peer,
        parts: &http::request::Parts,
        body: &mut Body,
    ) -> Outcome {
        let request_body = match self.body {
            None => None,
            Some(b) => match read_body(body, b).await {
                Ok(bytes) => Some(bytes),
                Err(e) => return Outcome::Refuse(e),
            },
        };
        let snap = shared.snapshot.load();
        let cluster = snap.clusters.get(&*self.cluster).cloned();
        drop(snap);
        let call = async {
            let cluster = cluster.ok_or_else(|| CheckError::NoCluster(self.cluster.clone()))?;
            match &self.service {
                Service::Http(h) => {
                    self.call_http(h, shared, &cluster, parts, request_body.as_ref())
                        .await
                }
                Service::Grpc { authority } => {
                    let req = check_request(
                        shared,
                        peer,
                        Some((parts, request_body.as_ref(), self.body)),
                    );
                    self.call_grpc(authority, shared, &cluster, req).await
                }
            }
        };
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(CheckError::Timeout(self.timeout)),
        };
        self.outcome(result, peer)
    }

    /// Checks a TCP connection with the (gRPC) authorizer: whether it may go on.
    pub(crate) async fn check_connection(&self, shared: &Shared, peer: &Peer) -> bool {
        let snap = shared.snapshot.load();
        let cluster = snap.clusters.get(&*self.cluster).cloned();
        drop(snap);
        let call = async {
            let cluster = cluster.ok_or_else(|| CheckError::NoCluster(self.cluster.clone()))?;
            match &self.service {
                Service::Grpc { authority } => {
                    self.call_grpc(
                        authority,
                        shared,
                        &cluster,
                        check_request(shared, peer, None),
                    )
                    .await
                }
                Service::Http(_) => Err(CheckError::Request),
            }
        };
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(CheckError::Timeout(self.timeout)),
        };
        matches!(self.outcome(result, peer), Outcome::Allow(_))
    }

    fn outcome(&self, result: Result<Verdict, CheckError>, peer: &Peer) -> Outcome {
        match result {
            Ok(Verdict::Allow(a)) => Outcome::Allow(a),
            Ok(Verdict::Deny(d)) => {
                tracing::debug!(target: "rbac", peer = %peer.source, status = d.status.as_u16(), "denied by the external authorizer");
                Outcome::Refuse(crate::error::ProxyError::ExtAuthzDenied(d))
            }
            Err(e) if self.fail_open => {
                tracing::debug!(target: "rbac", peer = %peer.source, error = %e, "external authorizer failed; failing open");
                Outcome::Allow(Allowed::default())
            }
            Err(e) => {
                tracing::debug!(target: "rbac", peer = %peer.source, error = %e, "external authorizer failed");
                Outcome::Refuse(crate::error::ProxyError::ExtAuthzError {
                    status: self.status_on_error,
                    source: e,
                })
            }
        }
    }

    /// An endpoint of the cluster and the TLS to speak to it, as the router picks them.
    fn endpoint<'c>(
        &self,
        cluster: &'c Cluster,
    ) -> Result<(SocketAddr, Option<&'c weft_http::tls::ClientTls>), CheckError> {
        let (addr, sidecar) = cluster
            .endpoints
            .pick_with_sidecar()
            .ok_or_else(|| CheckError::NoEndpoint(self.cluster.clone()))?;
        let tls = match &cluster.tls {
            Some((tls, always)) if *always || sidecar => Some(tls),
            _ => None,
        };
        Ok((addr, tls))
    }

    async fn call_http(
        &self,
        h: &HttpService,
        shared: &Shared,
        cluster: &Cluster,
        parts: &http::request::Parts,
        body: Option<&Bytes>,
    ) -> Result<Verdict, CheckError> {
        let (addr, tls) = self.endpoint(cluster)?;
        // Envoy's check request: Host, the original method and path (after the prefix),
        // Authorization and the allowed headers, a Content-Length for what is sent.
        let mut headers = HeaderMap::new();
        let authority = crate::http::authority_of(&parts.uri, &parts.headers).unwrap_or_default();
        if let Ok(v) = HeaderValue::from_str(authority) {
            headers.insert(header::HOST, v);
        }
        for (name, value) in &parts.headers {
            let keep = name == header::AUTHORIZATION || h.allowed.matches(name.as_str());
            if keep && name != header::HOST && name != header::CONTENT_LENGTH {
                headers.append(name.clone(), value.clone());
            }
        }
        for (n, v) in &h.to_add {
            headers.insert(n.clone(), v.clone());
        }
        let body = body.cloned().unwrap_or_default();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let path = format!("{}{pq}", h.path_prefix);
        let head = h1::Head::encode_with(&parts.method, &path, None, headers, &[]);
        let resp = shared
            .upstream
            .send_h1(
                addr,
                tls,
                cluster.connect_timeout,
                0,
                head,
                Body::full(body),
            )
            .await
            .map_err(|f| upstream_error(addr, f))?;
        let (rparts, rbody) = resp.into_parts();
        let bytes = read_answer(rbody).await?.0;
        let status = rparts.status;
        if status == StatusCode::OK {
            let mut allowed = Allowed::default();
            for (n, v) in &rparts.headers {
                if h.upstream.matches(n.as_str()) {
                    allowed.set.push((n.clone(), v.clone()));
                }
                if h.client_on_success.matches(n.as_str()) {
                    allowed.response.push((n.clone(), v.clone(), true));
                }
            }
            return Ok(Verdict::Allow(allowed));
        }
        if status.is_server_error() {
            return Err(CheckError::Status(status));
        }
        let mut out = HeaderMap::new();
        for (n, v) in &rparts.headers {
            let hop = matches!(
                *n,
                header::HOST
                    | header::CONTENT_LENGTH
                    | header::TRANSFER_ENCODING
                    | header::CONNECTION
                    | header::UPGRADE
                    | header::TE
                    | header::TRAILER
            ) || n.as_str() == "keep-alive";
            let allowed = h.client.as_ref().is_none_or(|c| c.matches(n.as_str()));
            if !hop && allowed {
                out.append(n.clone(), v.clone());
            }
        }
        Ok(Verdict::Deny(Box::new(Denied {
            status,
            headers: out,
            body: bytes,
        })))
    }

    async fn call_grpc(
        &self,
        authority: &http::uri::Authority,
        shared: &Shared,
        cluster: &Cluster,
        check: CheckRequest,
    ) -> Result<Verdict, CheckError> {
        let (addr, tls) = self.endpoint(cluster)?;
        let msg = check.encode_to_vec();
        let mut framed = BytesMut::with_capacity(5 + msg.len());
        framed.put_u8(0);
        framed.put_u32(u32::try_from(msg.len()).map_err(|_| CheckError::Request)?);
        framed.put_slice(&msg);
        let uri = http::Uri::builder()
            .scheme(if tls.is_some() { "https" } else { "http" })
            .authority(authority.clone())
            .path_and_query(CHECK_PATH)
            .build()
            .map_err(|_| CheckError::Request)?;
        let mut req = Request::new(Body::full(framed.freeze()));
        *req.method_mut() = Method::POST;
        *req.version_mut() = Version::HTTP_2;
        *req.uri_mut() = uri;
        let h = req.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        if let Ok(v) = HeaderValue::from_str(&format!("{}m", self.timeout.as_millis().max(1))) {
            h.insert("grpc-timeout", v);
        }
        let resp = shared
            .upstream
            .send_h2(addr, tls, cluster.connect_timeout, req, &NO_FIELDS)
            .await
            .map_err(|f| upstream_error(addr, f))?;
        let (rparts, rbody) = resp.into_parts();
        if rparts.status != StatusCode::OK {
            return Err(CheckError::Grpc(format!("HTTP status {}", rparts.status)));
        }
        let (bytes, trailers) = read_answer(rbody).await?;
        // The status is in the trailers, or in the headers of a trailers-only answer.
        let grpc_status = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| rparts.headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok());
        if grpc_status != Some(0) {
            return Err(CheckError::Grpc(format!(
                "grpc-status {}",
                grpc_status.map_or("missing".to_string(), |s| s.to_string())
            )));
        }
        let mut b = bytes;
        if b.len() < 5 || b[0] != 0 {
            return Err(CheckError::Grpc("not one uncompressed message".into()));
        }
        b.advance(1);
        let len = b.get_u32() as usize;
        if b.len() != len {
            return Err(CheckError::Grpc("not one whole message".into()));
        }
        let r = CheckResponse::decode(b).map_err(|e| CheckError::Grpc(e.to_string()))?;
        Ok(grpc_verdict(r))
    }
}

/// What a `CheckResponse` says.
fn grpc_verdict(r: CheckResponse) -> Verdict {
    let ok = r.status.as_ref().is_none_or(|s| s.code == 0);
    if ok {
        let mut allowed = Allowed::default();
        if let Some(check_response::HttpResponse::OkResponse(o)) = r.http_response {
            for opt in &o.headers {
                if let Some((n, v, append)) = header_option(opt) {
                    if append {
                        allowed.append.push((n, v));
                    } else {
                        allowed.set.push((n, v));
                    }
                }
            }
            for name in &o.headers_to_remove {
                // Envoy never removes the pseudo-headers or Host.
                match HeaderName::from_bytes(name.as_bytes()) {
                    Ok(n) if n != header::HOST => allowed.remove.push(n),
                    _ => {}
                }
            }
            for opt in &o.response_headers_to_add {
                if let Some(h) = header_option(opt) {
                    allowed.response.push(h);
                }
            }
        }
        return Verdict::Allow(allowed);
    }
    let mut denied = Denied {
        status: StatusCode::FORBIDDEN,
        headers: HeaderMap::new(),
        body: Bytes::new(),
    };
    if let Some(check_response::HttpResponse::DeniedResponse(d)) = r.http_response {
        if let Some(s) = d
            .status
            .as_ref()
            .and_then(|s| u16::try_from(s.code).ok())
            .and_then(|c| StatusCode::from_u16(c).ok())
            .filter(|s| s.as_u16() >= 200)
        {
            denied.status = s;
        }
        for opt in &d.headers {
            if let Some((n, v, append)) = header_option(opt) {
                if append {
                    denied.headers.append(n, v);
                } else {
                    denied.headers.insert(n, v);
                }
            }
        }
        denied.body = Bytes::from(d.body);
    }
    Verdict::Deny(Box::new(denied))
}

/// A header edit: name, value, and whether it appends (Envoy's `append`, else `append_action`).
#[allow(deprecated)]
fn header_option(o: &HeaderValueOption) -> Option<(HeaderName, HeaderValue, bool)> {
    let h = o.header.as_ref()?;
    let name = HeaderName::from_bytes(h.key.as_bytes()).ok()?;
    let value = if h.raw_value.is_empty() {
        HeaderValue::from_str(&h.value).ok()?
    } else {
        HeaderValue::from_bytes(&h.raw_value).ok()?
    };
    let append = match o.append.as_ref() {
        Some(a) => a.value,
        None => o.append_action == HeaderAppendAction::AppendIfExistsOrAdd as i32,
    };
    Some((name, value, append))
}

fn upstream_error(addr: SocketAddr, f: upstream::Failure) -> CheckError {
    let source = match f {
        upstream::Failure::Connect(e)
        | upstream::Failure::Reset(e)
        | upstream::Failure::RequestBody(e) => e,
    };
    CheckError::Upstream { addr, source }
}

/// An answer's body (at most [`MAX_ANSWER`] bytes) and trailers.
async fn read_answer(body: Body) -> Result<(Bytes, Option<HeaderMap>), CheckError> {
    let limited = http_body_util::Limited::new(body, MAX_ANSWER);
    let collected = limited.collect().await.map_err(|_| CheckError::Answer)?;
    let trailers = collected.trailers().cloned();
    Ok((collected.to_bytes(), trailers))
}

/// Reads the request body for the check and puts it back whole. Envoy buffers up to
/// `max_request_bytes`; weft reads the whole body (up to the larger of that and the HTTP/1.1 server's
/// whole-body size): one too long is 413, as Envoy answers without `allow_partial_message`.
async fn read_body(body: &mut Body, b: BodySettings) -> Result<Bytes, crate::error::ProxyError> {
    let limit = b.max.max(BODY_READ_LIMIT);
    let taken = std::mem::replace(body, Body::empty());
    let collected = http_body_util::Limited::new(taken, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                crate::error::ProxyError::ExtAuthzBodyTooLarge
            } else {
                crate::error::ProxyError::DownstreamBody { source: e }
            }
        })?
        .to_bytes();
    *body = Body::full(collected.clone());
    if collected.len() > b.max && !b.partial {
        return Err(crate::error::ProxyError::ExtAuthzBodyTooLarge);
    }
    Ok(collected.slice(..collected.len().min(b.max)))
}

fn socket_address(a: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: a.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                a.port(),
            ))),
            ..Default::default()
        })),
    }
}

/// The `CheckRequest` of a connection and, for HTTP, its request (head, the body read for the check,
/// how it is sent), with the attributes Envoy fills.
fn check_request(
    shared: &Shared,
    peer: &Peer,
    http: Option<(&http::request::Parts, Option<&Bytes>, Option<BodySettings>)>,
) -> CheckRequest {
    let own = crate::tls::own_id(shared.identity.as_ref());
    let source = attribute_context::Peer {
        address: Some(socket_address(peer.source)),
        principal: peer.principal.as_deref().unwrap_or_default().to_string(),
        ..Default::default()
    };
    let destination = attribute_context::Peer {
        address: Some(socket_address(peer.destination)),
        principal: own.as_deref().unwrap_or_default().to_string(),
        ..Default::default()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let time = weft_xds::pb::google::protobuf::Timestamp {
        seconds: i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(now.subsec_nanos()).unwrap_or(0),
    };
    let request = http.map(|(parts, body, settings)| {
        let authority = crate::http::authority_of(&parts.uri, &parts.headers).unwrap_or_default();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut headers = std::collections::HashMap::new();
        for (n, v) in &parts.headers {
            let v = String::from_utf8_lossy(v.as_bytes());
            headers
                .entry(n.as_str().to_string())
                .and_modify(|e: &mut String| {
                    e.push(',');
                    e.push_str(&v);
                })
                .or_insert_with(|| v.into_owned());
        }
        headers.insert(":authority".into(), authority.to_string());
        headers.insert(":method".into(), parts.method.as_str().to_string());
        headers.insert(":path".into(), path.to_string());
        headers.insert(":scheme".into(), "http".into());
        let protocol = match parts.version {
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        };
        let size = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(-1);
        let (text, raw) = match (body, settings) {
            (Some(b), Some(s)) if s.raw => (String::new(), b.to_vec()),
            (Some(b), _) => (String::from_utf8_lossy(b).into_owned(), Vec::new()),
            (None, _) => (String::new(), Vec::new()),
        };
        attribute_context::Request {
            time: Some(time),
            http: Some(attribute_context::HttpRequest {
                id: parts
                    .headers
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
                method: parts.method.as_str().to_string(),
                headers,
                path: path.to_string(),
                host: authority.to_string(),
                scheme: "http".into(),
                size,
                protocol: protocol.into(),
                body: text,
                raw_body: raw,
                ..Default::default()
            }),
        }
    });
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(source),
            destination: Some(destination),
            request: Some(request.unwrap_or(attribute_context::Request {
                time: Some(time),
                http: None,
            })),
            ..Default::default()
        }),
    }
}
