//! Data-path failures and the one place that turns them into an HTTP status and Envoy response flags
//! (`SPEC.md` §3.2). No other code invents a status code for an error.

use std::fmt;
use std::net::SocketAddr;

/// The response header that carries Envoy's `%RESPONSE_FLAGS%` for a response the proxy shaped
/// (omitted when there are none).
pub const RESPONSE_FLAGS_HEADER: &str = "x-weft-response-flags";

/// Envoy response flags, a small bit set printed comma-joined in Envoy's order of mention.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags(u16);

impl Flags {
    /// No healthy upstream (`UH`).
    pub const UH: Flags = Flags(1);
    /// Upstream connection failure (`UF`).
    pub const UF: Flags = Flags(1 << 1);
    /// No route (`NR`).
    pub const NR: Flags = Flags(1 << 2);
    /// Retry limit exceeded (`URX`).
    pub const URX: Flags = Flags(1 << 3);
    /// Cluster not found (`NC`).
    pub const NC: Flags = Flags(1 << 4);
    /// Upstream request timeout (`UT`).
    pub const UT: Flags = Flags(1 << 5);
    /// Upstream connection termination (`UC`).
    pub const UC: Flags = Flags(1 << 6);
    /// Delayed by fault injection (`DI`).
    pub const DI: Flags = Flags(1 << 7);
    /// Aborted by fault injection (`FI`).
    pub const FI: Flags = Flags(1 << 8);
    /// Downstream protocol error (`DPE`).
    pub const DPE: Flags = Flags(1 << 9);
    /// Upstream remote reset (`UR`).
    pub const UR: Flags = Flags(1 << 10);
    /// Downstream connection terminated (`DC`): the client went away before the response ended.
    pub const DC: Flags = Flags(1 << 11);
    /// Denied by an RBAC filter (`RBAC`): AuthorizationPolicy's 403, or a TCP connection closed.
    pub const RBAC: Flags = Flags(1 << 12);
    /// Denied by the external authorizer (`UAEX`): a CUSTOM AuthorizationPolicy's denial, or the
    /// authorizer could not be asked and the filter does not fail open.
    pub const UAEX: Flags = Flags(1 << 13);
    /// Upstream overflow (`UO`): a circuit breaker of the cluster tripped.
    pub const UO: Flags = Flags(1 << 14);

    const NAMES: [(Flags, &'static str); 15] = [
        (Flags::UH, "UH"),
        (Flags::UF, "UF"),
        (Flags::NR, "NR"),
        (Flags::URX, "URX"),
        (Flags::NC, "NC"),
        (Flags::UT, "UT"),
        (Flags::UC, "UC"),
        (Flags::DI, "DI"),
        (Flags::FI, "FI"),
        (Flags::DPE, "DPE"),
        (Flags::UR, "UR"),
        (Flags::DC, "DC"),
        (Flags::RBAC, "RBAC"),
        (Flags::UAEX, "UAEX"),
        (Flags::UO, "UO"),
    ];

    /// Adds the flags of `other`.
    pub fn insert(&mut self, other: Flags) {
        self.0 |= other.0;
    }

    /// True when every flag of `other` is set.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits, for a hash.
    pub fn bits(self) -> u16 {
        self.0
    }

    /// True when no flag is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut first = true;
        for (flag, name) in Flags::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// Whose fault a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something unusable.
    Downstream,
    /// The upstream failed or misbehaved.
    Upstream,
    /// The proxy's configuration had no answer.
    Config,
}

/// Why a request could not be proxied.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No virtual host or route matched.
    #[error("no route for {authority}{path}")]
    NoRoute {
        /// The request's authority.
        authority: String,
        /// The request's path.
        path: String,
    },
    /// The route names a cluster the snapshot does not have.
    #[error("cluster {cluster} not found")]
    ClusterNotFound {
        /// The cluster.
        cluster: String,
    },
    /// The cluster has no endpoints.
    #[error("no healthy upstream in cluster {cluster}")]
    NoHealthyUpstream {
        /// The cluster.
        cluster: String,
    },
    /// A circuit breaker of the cluster tripped (`max_requests`, or `max_connections` with
    /// `max_pending_requests` waiting already).
    #[error("circuit breaker of cluster {cluster} tripped")]
    Overflow {
        /// The cluster.
        cluster: String,
    },
    /// Connecting to the endpoint failed (refused, unreachable, connect timeout).
    #[error("cannot connect to upstream {addr}")]
    UpstreamConnect {
        /// The endpoint.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: weft_http::upstream::UpstreamError,
    },
    /// The connection or stream to the endpoint ended before a response.
    #[error("upstream {addr} reset the request")]
    UpstreamReset {
        /// The endpoint.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: weft_http::upstream::UpstreamError,
    },
    /// One try exceeded `per_try_timeout`.
    #[error("upstream {addr} did not answer within the per-try timeout")]
    PerTryTimeout {
        /// The endpoint.
        addr: SocketAddr,
    },
    /// The route's `timeout` covering every try expired.
    #[error("upstream request timeout")]
    RouteTimeout,
    /// The fault filter aborted the request.
    #[error("fault filter abort with status {status}")]
    FaultAbort {
        /// The configured status.
        status: http::StatusCode,
    },
    /// The fault filter aborted a request with a gRPC status: HTTP 200, `grpc-status` in the head (a
    /// trailers-only response).
    #[error("fault filter abort with grpc-status {code}")]
    FaultAbortGrpc {
        /// The configured gRPC status code.
        code: u32,
    },
    /// The route answers the request itself (a redirect, a direct response, a CORS preflight):
    /// not a failure, but a response made here, with no response flag (as Envoy's router).
    #[error("answered by the route with {}", .0.status)]
    RouteAnswer(Box<RouteAnswer>),
    /// The request has no usable authority.
    #[error("request has no valid authority")]
    BadAuthority,
    /// Reading the downstream request body failed (before or while it was sent upstream): a malformed
    /// chunk, a client gone mid-body.
    #[error("cannot read the request body")]
    DownstreamBody {
        /// What reading it found.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Request authentication (`jwt_authn`) refused the request's token: Envoy's 401 (403 for a
    /// disallowed audience) with its reason as the body, and no response flag.
    #[error("request authentication refused the request")]
    Unauthenticated(#[source] Box<crate::authn::Rejected>),
    /// An RBAC filter (AuthorizationPolicy) denied the request.
    #[error("denied by RBAC policy {}", policy.as_deref().unwrap_or("(no ALLOW policy matched)"))]
    Denied {
        /// The DENY policy that matched; `None` when no ALLOW policy did.
        policy: Option<std::sync::Arc<str>>,
    },
    /// The external authorizer (ext_authz, a CUSTOM AuthorizationPolicy) denied the request: its
    /// status, headers and body go to the client.
    #[error("denied by the external authorizer with status {}", .0.status)]
    ExtAuthzDenied(Box<crate::ext_authz::Denied>),
    /// The external authorizer could not be asked, and its filter does not fail open.
    #[error("external authorization failed")]
    ExtAuthzError {
        /// The filter's `status_on_error`.
        status: http::StatusCode,
        /// What failed.
        #[source]
        source: crate::ext_authz::CheckError,
    },
    /// The request body to send to the external authorizer is longer than it takes.
    #[error("request body too large for the external authorizer")]
    ExtAuthzBodyTooLarge,
    /// The path was refused by normalization (`%00`, an escaped slash where those are refused).
    #[error("path refused")]
    BadPath(#[source] crate::authz::Rejected),
    /// The virtual host requires TLS (a gateway's `httpsRedirect`) and the request came in plaintext:
    /// 301 to the same host and path over `https://`.
    #[error("redirect to {location:?}: TLS required")]
    HttpsRedirect {
        /// `https://<host><path>`.
        location: http::HeaderValue,
    },
    /// The request could not be turned into an upstream request.
    #[error("cannot build the upstream request")]
    BadUpstreamRequest {
        /// http's error.
        #[source]
        source: http::Error,
    },
}

/// A response the route makes itself.
#[derive(Debug)]
pub struct RouteAnswer {
    /// Its status.
    pub status: http::StatusCode,
    /// Its headers (`Location`, CORS headers, the route's response header edits).
    pub headers: http::HeaderMap,
    /// Its body.
    pub body: bytes::Bytes,
}

/// How a failed try counts against a route's `retry_on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// The connection could not be made.
    ConnectFailure,
    /// The connection or stream ended before a response.
    Reset,
    /// The upstream refused the stream (HTTP/2 REFUSED_STREAM).
    RefusedStream,
    /// A per-try timeout.
    Timeout,
    /// Not retryable.
    Never,
}

impl ProxyError {
    /// The status code, response flag and body of the local response for this error.
    pub fn response_parts(&self) -> (http::StatusCode, Flags, &'static str) {
        use http::StatusCode as S;
        match self {
            ProxyError::NoRoute { .. } => (S::NOT_FOUND, Flags::NR, ""),
            ProxyError::ClusterNotFound { .. } => (S::SERVICE_UNAVAILABLE, Flags::NC, ""),
            ProxyError::NoHealthyUpstream { .. } => {
                (S::SERVICE_UNAVAILABLE, Flags::UH, "no healthy upstream")
            }
            ProxyError::Overflow { .. } => (
                S::SERVICE_UNAVAILABLE,
                Flags::UO,
                "upstream connect error or disconnect/reset before headers. reset reason: overflow",
            ),
            ProxyError::UpstreamConnect { .. } => (
                S::SERVICE_UNAVAILABLE,
                Flags::UF,
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
            ),
            ProxyError::UpstreamReset { .. } => (
                S::SERVICE_UNAVAILABLE,
                Flags::UC,
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
            ),
            ProxyError::PerTryTimeout { .. } | ProxyError::RouteTimeout => {
                (S::GATEWAY_TIMEOUT, Flags::UT, "upstream request timeout")
            }
            ProxyError::FaultAbort { status } => (*status, Flags::FI, "fault filter abort"),
            // The gRPC status and message go in the head (`http::local_response`).
            ProxyError::FaultAbortGrpc { .. } => (S::OK, Flags::FI, ""),
            // Status, headers and body come with it (`http::local_response`).
            ProxyError::RouteAnswer(a) => (a.status, Flags::default(), ""),
            ProxyError::BadAuthority => (S::BAD_REQUEST, Flags::DPE, "bad authority"),
            ProxyError::DownstreamBody { .. } => (S::BAD_REQUEST, Flags::DPE, "bad request body"),
            ProxyError::BadUpstreamRequest { .. } => (S::BAD_REQUEST, Flags::DPE, "bad request"),
            ProxyError::Unauthenticated(r) => (r.status(), Flags::default(), r.body()),
            ProxyError::Denied { .. } => (S::FORBIDDEN, Flags::RBAC, crate::authz::DENIED_BODY),
            // The authorizer's own body goes with it (`http::local_response`).
            ProxyError::ExtAuthzDenied(d) => (d.status, Flags::UAEX, ""),
            ProxyError::ExtAuthzError { status, .. } => (*status, Flags::UAEX, ""),
            ProxyError::ExtAuthzBodyTooLarge => {
                (S::PAYLOAD_TOO_LARGE, Flags::default(), "Payload Too Large")
            }
            // Envoy's connection manager answers a path it cannot normalize with a bare 400.
            ProxyError::BadPath(_) => (S::BAD_REQUEST, Flags::default(), ""),
            // Envoy's redirect for `require_tls`: no flag, no body (the location header is added by
            // `http::local_response`).
            ProxyError::HttpsRedirect { .. } => (S::MOVED_PERMANENTLY, Flags::default(), ""),
        }
    }

    /// Whose fault it is.
    pub fn side(&self) -> Side {
        match self {
            ProxyError::NoRoute { .. }
            | ProxyError::ClusterNotFound { .. }
            | ProxyError::NoHealthyUpstream { .. }
            | ProxyError::FaultAbort { .. }
            | ProxyError::FaultAbortGrpc { .. }
            | ProxyError::RouteAnswer(_)
            | ProxyError::HttpsRedirect { .. }
            | ProxyError::Denied { .. }
            | ProxyError::ExtAuthzDenied(_) => Side::Config,
            ProxyError::UpstreamConnect { .. }
            | ProxyError::Overflow { .. }
            | ProxyError::ExtAuthzError { .. }
            | ProxyError::UpstreamReset { .. }
            | ProxyError::PerTryTimeout { .. }
            | ProxyError::RouteTimeout => Side::Upstream,
            ProxyError::BadAuthority
            | ProxyError::DownstreamBody { .. }
            | ProxyError::BadUpstreamRequest { .. }
            | ProxyError::Unauthenticated(_)
            | ProxyError::ExtAuthzBodyTooLarge
            | ProxyError::BadPath(_) => Side::Downstream,
        }
    }

    /// How this failure counts for `retry_on`.
    pub fn retry_class(&self) -> RetryClass {
        match self {
            ProxyError::UpstreamConnect { .. } => RetryClass::ConnectFailure,
            ProxyError::UpstreamReset { source, .. } => {
                if source.is_refused_stream() {
                    RetryClass::RefusedStream
                } else {
                    RetryClass::Reset
                }
            }
            ProxyError::PerTryTimeout { .. } => RetryClass::Timeout,
            _ => RetryClass::Never,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_status_and_flag() {
        let cases: Vec<(&str, ProxyError, u16, &str)> = vec![
            (
                "no route",
                ProxyError::NoRoute {
                    authority: "x".into(),
                    path: "/".into(),
                },
                404,
                "NR",
            ),
            (
                "no cluster",
                ProxyError::ClusterNotFound {
                    cluster: "c".into(),
                },
                503,
                "NC",
            ),
            (
                "no endpoints",
                ProxyError::NoHealthyUpstream {
                    cluster: "c".into(),
                },
                503,
                "UH",
            ),
            ("route timeout", ProxyError::RouteTimeout, 504, "UT"),
            (
                "circuit breaker",
                ProxyError::Overflow {
                    cluster: "c".into(),
                },
                503,
                "UO",
            ),
            (
                "fault",
                ProxyError::FaultAbort {
                    status: http::StatusCode::IM_A_TEAPOT,
                },
                418,
                "FI",
            ),
            ("rbac", ProxyError::Denied { policy: None }, 403, "RBAC"),
            (
                "ext_authz denial",
                ProxyError::ExtAuthzDenied(Box::new(crate::ext_authz::Denied {
                    status: http::StatusCode::UNAUTHORIZED,
                    headers: http::HeaderMap::new(),
                    body: bytes::Bytes::new(),
                })),
                401,
                "UAEX",
            ),
            (
                "ext_authz error",
                ProxyError::ExtAuthzError {
                    status: http::StatusCode::SERVICE_UNAVAILABLE,
                    source: crate::ext_authz::CheckError::Timeout(std::time::Duration::from_secs(
                        1,
                    )),
                },
                503,
                "UAEX",
            ),
            (
                "bad path",
                ProxyError::BadPath(crate::authz::Rejected::Nul),
                400,
                "-",
            ),
            (
                "https redirect",
                ProxyError::HttpsRedirect {
                    location: http::HeaderValue::from_static("https://a/"),
                },
                301,
                "-",
            ),
        ];
        for (name, err, status, flag) in cases {
            let (s, f, _) = err.response_parts();
            assert_eq!(s.as_u16(), status, "case {name}");
            assert_eq!(f.to_string(), flag, "case {name}");
        }
    }

    #[test]
    fn flags_print_comma_joined() {
        let mut f = Flags::UT;
        f.insert(Flags::URX);
        assert_eq!(f.to_string(), "URX,UT");
        f.insert(Flags::RBAC);
        assert_eq!(f.to_string(), "URX,UT,RBAC");
        assert_eq!(Flags::default().to_string(), "-");
    }
}
