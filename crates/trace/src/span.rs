//! The span model both formats map to (Zipkin v2's, which OTLP's maps onto): ids, name, kind, start and
//! duration in microseconds, local and remote endpoints, annotations and string tags; and Istio's
//! standard tags ([`ProxyTags`], [`RequestTags`]), set the way Envoy sets them for Istio.

use crate::id::{SpanId, TraceId};
use crate::propagation::Context;
use serde::{Serialize, Serializer};
use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Deref;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// An immutable string that clones for the price of a counter (or nothing, when static): span names,
/// tag keys and values that are the same in every span of a proxy (`node_id`, `istio.mesh_id`) are
/// made once and shared.
#[derive(Clone)]
pub struct Str(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Shared(Arc<str>),
}

/// A span's kind. Weft's proxies report `Client` (the calling side) and `Server` (the called side);
/// the others are read from other tracers and kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The calling side of a request.
    Client,
    /// The called side of a request.
    Server,
    /// A message producer.
    Producer,
    /// A message consumer.
    Consumer,
}

/// Where a span ran, or whom it talked to (Zipkin's `Endpoint`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// The service, lowercase (Zipkin lower-cases what it stores).
    pub service_name: Option<Str>,
    /// Its IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// Its IPv6 address.
    pub ipv6: Option<Ipv6Addr>,
    /// Its port.
    pub port: Option<u16>,
}

/// A timestamped event in a span (Zipkin's annotation, OTLP's event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Annotation {
    /// When, in microseconds since the epoch.
    pub timestamp: u64,
    /// What happened.
    pub value: Str,
}

/// One span: one side of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    /// The trace.
    pub trace_id: TraceId,
    /// This span.
    pub id: SpanId,
    /// The span that caused this one; `None` at the root.
    pub parent_id: Option<SpanId>,
    /// The operation (Istio: `{host}:{port}/*`, e.g. `reviews.default.svc.cluster.local:9080/*`).
    pub name: Str,
    /// Client or server.
    pub kind: Option<Kind>,
    /// When it started, in microseconds since the epoch; 0 when unknown (Zipkin leaves it out).
    pub timestamp: u64,
    /// How long it took, in microseconds; 0 when unknown.
    pub duration: u64,
    /// This side's service, address and port.
    pub local_endpoint: Option<Endpoint>,
    /// The other side's.
    pub remote_endpoint: Option<Endpoint>,
    /// Events in the span.
    pub annotations: Vec<Annotation>,
    /// Tags, in the order they were set (keys are not repeated by this crate, but may be by others).
    pub tags: Vec<(Str, Str)>,
    /// B3's debug flag.
    pub debug: bool,
    /// The span shares its id with the other side's (Zipkin's `shared`, for a server span that reuses
    /// its client's id; Weft's proxies never do).
    pub shared: bool,
}

/// Microseconds since the Unix epoch, now (0 if the clock is before the epoch).
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

// === impl Span ===

impl Span {
    /// A span for this hop's `ctx`: its trace, id, parent and debug flag, with the name, kind and start
    /// given and everything else empty.
    pub fn new(ctx: &Context, kind: Kind, name: impl Into<Str>, timestamp: u64) -> Span {
        Span {
            trace_id: ctx.trace_id(),
            id: ctx.span_id(),
            parent_id: ctx.parent_id(),
            name: name.into(),
            kind: Some(kind),
            timestamp,
            duration: 0,
            local_endpoint: None,
            remote_endpoint: None,
            annotations: Vec::new(),
            tags: Vec::new(),
            debug: ctx.debug(),
            shared: false,
        }
    }

    /// Adds a tag.
    pub fn tag(&mut self, key: impl Into<Str>, value: impl Into<Str>) {
        self.tags.push((key.into(), value.into()));
    }

    /// The value of the first tag named `key`.
    pub fn tag_value(&self, key: &str) -> Option<&Str> {
        self.tags.iter().find(|(k, _)| &**k == key).map(|(_, v)| v)
    }

    /// Whether the span records an error (it has an `error` tag, as Zipkin's UI reads it).
    pub fn is_error(&self) -> bool {
        self.tag_value(tags::ERROR).is_some()
    }

    /// Sets Istio's standard tags from what the proxy knows about itself and about this request, in
    /// the order Envoy sets them, and `error: true` when the status is 5xx, or 0 (no response), or a
    /// response flag is set.
    pub fn istio_tags(&mut self, proxy: &ProxyTags, req: &RequestTags<'_>) {
        let mut digits = [0u8; 20];
        let cluster = text(req.upstream_cluster);
        self.tags.reserve(21);
        self.tag(tags::NODE_ID, proxy.node_id.clone());
        self.tag(tags::ZONE, proxy.zone.clone());
        self.tag(tags::GUID_X_REQUEST_ID, text(req.request_id.unwrap_or("-")));
        self.tag(tags::HTTP_URL, text(truncate(req.url, MAX_PATH_TAG_LENGTH)));
        self.tag(tags::HTTP_METHOD, known(req.method, &METHODS));
        self.tag(tags::DOWNSTREAM_CLUSTER, "-");
        self.tag(tags::USER_AGENT, text(req.user_agent.unwrap_or("-")));
        self.tag(tags::HTTP_PROTOCOL, known(req.protocol, &PROTOCOLS));
        self.tag(tags::PEER_ADDRESS, peer(req.peer_address));
        self.tag(tags::REQUEST_SIZE, decimal(req.request_size, &mut digits));
        self.tag(tags::RESPONSE_SIZE, decimal(req.response_size, &mut digits));
        self.tag(tags::COMPONENT, "proxy");
        self.tag(tags::UPSTREAM_CLUSTER, cluster.clone());
        self.tag(tags::UPSTREAM_CLUSTER_NAME, cluster);
        self.tag(
            tags::HTTP_STATUS_CODE,
            decimal(u64::from(req.status), &mut digits),
        );
        self.tag(tags::RESPONSE_FLAGS, text(req.response_flags));
        self.tag(
            tags::ISTIO_CANONICAL_REVISION,
            proxy.canonical_revision.clone(),
        );
        self.tag(
            tags::ISTIO_CANONICAL_SERVICE,
            proxy.canonical_service.clone(),
        );
        self.tag(tags::ISTIO_MESH_ID, proxy.mesh_id.clone());
        self.tag(tags::ISTIO_NAMESPACE, proxy.namespace.clone());
        let failed = req.status == 0
            || req.status >= 500
            || !(req.response_flags.is_empty() || req.response_flags == "-");
        if failed {
            self.tag(tags::ERROR, "true");
        }
    }
}

/// Istio's `maxPathTagLength` default: longer `http.url` values are cut.
pub const MAX_PATH_TAG_LENGTH: usize = 256;

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

const METHODS: [&str; 9] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];
const PROTOCOLS: [&str; 4] = ["HTTP/1.1", "HTTP/2", "HTTP/1.0", "HTTP/3"];

/// One of a few common values as a static string, so their tags share one copy; else a copy.
fn known(v: &str, common: &[&'static str]) -> Str {
    match common.iter().find(|k| **k == v) {
        Some(k) => Str::from(*k),
        None => Str::copy(v),
    }
}

/// A request's text as a tag value; "-" and "" without a copy.
fn text(v: &str) -> Str {
    match v {
        "-" => Str::from("-"),
        "" => Str::from(""),
        v => Str::copy(v),
    }
}

fn peer(a: Option<SocketAddr>) -> Str {
    match a {
        Some(a) => Str::from(a.to_string()),
        None => Str::from("-"),
    }
}

fn decimal(mut n: u64, digits: &mut [u8; 20]) -> Str {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    Str::copy(std::str::from_utf8(&digits[at..]).unwrap_or("0"))
}

/// What a proxy knows about itself for Istio's span tags: set once at startup and shared by every span.
#[derive(Clone, Debug)]
pub struct ProxyTags {
    /// `node_id`: the proxy's xDS node id (`sidecar~10.0.0.1~productpage-v1-abc.default~default.svc.cluster.local`).
    pub node_id: Str,
    /// `zone`: the locality's zone, or empty.
    pub zone: Str,
    /// `istio.mesh_id` (Istio's default `cluster.local`).
    pub mesh_id: Str,
    /// `istio.namespace`: the workload's namespace.
    pub namespace: Str,
    /// `istio.canonical_service`: the `service.istio.io/canonical-name` label, else `app`, else the
    /// workload name.
    pub canonical_service: Str,
    /// `istio.canonical_revision`: the `service.istio.io/canonical-revision` label, else `version`,
    /// else `latest`.
    pub canonical_revision: Str,
}

/// What one request contributes to Istio's span tags.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestTags<'a> {
    /// `http.method`.
    pub method: &'a str,
    /// `http.url`: `scheme://authority/path?query`, cut at 256 bytes (Istio's `maxPathTagLength`).
    pub url: &'a str,
    /// `http.protocol`: `HTTP/1.1`, `HTTP/2`.
    pub protocol: &'a str,
    /// `http.status_code`; 0 when no response was received.
    pub status: u16,
    /// `response_flags` (`-` for none, else Envoy's flags, `UF,URX`).
    pub response_flags: &'a str,
    /// `upstream_cluster` (and `upstream_cluster.name`): `outbound|9080||reviews.default.svc.cluster.local`.
    pub upstream_cluster: &'a str,
    /// `peer.address`: the downstream peer's address.
    pub peer_address: Option<SocketAddr>,
    /// `request_size`: request body bytes.
    pub request_size: u64,
    /// `response_size`: response body bytes.
    pub response_size: u64,
    /// `guid:x-request-id`.
    pub request_id: Option<&'a str>,
    /// `user_agent`.
    pub user_agent: Option<&'a str>,
}

/// The tag keys Istio's proxies set, and the ones the OTLP mapping uses for endpoints.
pub mod tags {
    /// `node_id`.
    pub const NODE_ID: &str = "node_id";
    /// `zone`.
    pub const ZONE: &str = "zone";
    /// `guid:x-request-id`.
    pub const GUID_X_REQUEST_ID: &str = "guid:x-request-id";
    /// `http.url`.
    pub const HTTP_URL: &str = "http.url";
    /// `http.method`.
    pub const HTTP_METHOD: &str = "http.method";
    /// `downstream_cluster`.
    pub const DOWNSTREAM_CLUSTER: &str = "downstream_cluster";
    /// `user_agent`.
    pub const USER_AGENT: &str = "user_agent";
    /// `http.protocol`.
    pub const HTTP_PROTOCOL: &str = "http.protocol";
    /// `peer.address`.
    pub const PEER_ADDRESS: &str = "peer.address";
    /// `request_size`.
    pub const REQUEST_SIZE: &str = "request_size";
    /// `response_size`.
    pub const RESPONSE_SIZE: &str = "response_size";
    /// `component` (always `proxy`).
    pub const COMPONENT: &str = "component";
    /// `upstream_cluster`.
    pub const UPSTREAM_CLUSTER: &str = "upstream_cluster";
    /// `upstream_cluster.name`.
    pub const UPSTREAM_CLUSTER_NAME: &str = "upstream_cluster.name";
    /// `http.status_code`.
    pub const HTTP_STATUS_CODE: &str = "http.status_code";
    /// `response_flags`.
    pub const RESPONSE_FLAGS: &str = "response_flags";
    /// `istio.canonical_revision`.
    pub const ISTIO_CANONICAL_REVISION: &str = "istio.canonical_revision";
    /// `istio.canonical_service`.
    pub const ISTIO_CANONICAL_SERVICE: &str = "istio.canonical_service";
    /// `istio.mesh_id`.
    pub const ISTIO_MESH_ID: &str = "istio.mesh_id";
    /// `istio.namespace`.
    pub const ISTIO_NAMESPACE: &str = "istio.namespace";
    /// `error`.
    pub const ERROR: &str = "error";

    /// Every key above: decoders use these static copies instead of allocating one per span.
    pub const KNOWN: [&str; 21] = [
        NODE_ID,
        ZONE,
        GUID_X_REQUEST_ID,
        HTTP_URL,
        HTTP_METHOD,
        DOWNSTREAM_CLUSTER,
        USER_AGENT,
        HTTP_PROTOCOL,
        PEER_ADDRESS,
        REQUEST_SIZE,
        RESPONSE_SIZE,
        COMPONENT,
        UPSTREAM_CLUSTER,
        UPSTREAM_CLUSTER_NAME,
        HTTP_STATUS_CODE,
        RESPONSE_FLAGS,
        ISTIO_CANONICAL_REVISION,
        ISTIO_CANONICAL_SERVICE,
        ISTIO_MESH_ID,
        ISTIO_NAMESPACE,
        ERROR,
    ];
}

/// A tag key as decoded: one of [`tags::KNOWN`] as a static string, else a new one.
pub(crate) fn tag_key(k: &str) -> Str {
    match tags::KNOWN.iter().find(|known| **known == k) {
        Some(known) => Str::from(*known),
        None => Str::copy(k),
    }
}

// === impl Endpoint ===

impl Endpoint {
    /// An endpoint for a service at an address.
    pub fn new(service_name: Option<Str>, addr: Option<SocketAddr>) -> Endpoint {
        let mut e = Endpoint {
            service_name,
            ..Endpoint::default()
        };
        if let Some(a) = addr {
            e.set_ip(a.ip());
            e.port = Some(a.port()).filter(|p| *p != 0);
        }
        e
    }

    /// Sets the address of its family.
    pub fn set_ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => self.ipv4 = Some(v4),
            IpAddr::V6(v6) => self.ipv6 = Some(v6),
        }
    }

    /// Whether nothing is set (Zipkin leaves such an endpoint out).
    pub fn is_empty(&self) -> bool {
        self.service_name.is_none()
            && self.ipv4.is_none()
            && self.ipv6.is_none()
            && self.port.is_none()
    }
}

// === impl Kind ===

impl Kind {
    /// Zipkin's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Client => "CLIENT",
            Kind::Server => "SERVER",
            Kind::Producer => "PRODUCER",
            Kind::Consumer => "CONSUMER",
        }
    }
}

// === impl Str ===

impl Str {
    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Shared(s) => s,
        }
    }

    /// The text in lower case, without a copy when it is lower case already.
    pub fn to_lowercase(&self) -> Str {
        if self.bytes().any(|b| b.is_ascii_uppercase()) || !self.is_ascii() {
            Str::from(self.as_str().to_lowercase())
        } else {
            self.clone()
        }
    }

    /// Whether it is static text (never counted, never interned).
    pub(crate) fn is_static(&self) -> bool {
        matches!(self.0, Repr::Static(_))
    }

    /// How many `Str`s share its text (1 for static text, which has no count).
    pub(crate) fn shares(&self) -> usize {
        match &self.0 {
            Repr::Static(_) => 1,
            Repr::Shared(s) => Arc::strong_count(s),
        }
    }
}

impl Deref for Str {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Str {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Str {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&'static str> for Str {
    fn from(s: &'static str) -> Str {
        Str(Repr::Static(s))
    }
}

impl From<String> for Str {
    fn from(s: String) -> Str {
        Str(Repr::Shared(Arc::from(s)))
    }
}

impl From<Arc<str>> for Str {
    fn from(s: Arc<str>) -> Str {
        Str(Repr::Shared(s))
    }
}

impl From<&String> for Str {
    fn from(s: &String) -> Str {
        Str(Repr::Shared(Arc::from(s.as_str())))
    }
}

impl Str {
    /// A shared copy of borrowed text (the `From<&'static str>` conversion keeps static text as is).
    pub fn copy(s: &str) -> Str {
        Str(Repr::Shared(Arc::from(s)))
    }
}

impl PartialEq for Str {
    fn eq(&self, other: &Str) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Str {}

impl PartialEq<str> for Str {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Str {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialOrd for Str {
    fn partial_cmp(&self, other: &Str) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Str {
    fn cmp(&self, other: &Str) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Str {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl fmt::Display for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for Str {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::propagation::Incoming;

    fn proxy() -> ProxyTags {
        ProxyTags {
            node_id: Str::from(
                "sidecar~127.0.1.1~productpage-v1.default~default.svc.cluster.local",
            ),
            zone: Str::from(""),
            mesh_id: Str::from("cluster.local"),
            namespace: Str::from("default"),
            canonical_service: Str::from("productpage"),
            canonical_revision: Str::from("v1"),
        }
    }

    #[test]
    fn istio_tags_as_envoy_sets_them() {
        let ctx = Incoming::default().child(SpanId::random(), true);
        let mut span = Span::new(
            &ctx,
            Kind::Client,
            "reviews.default.svc.cluster.local:9080/*",
            1,
        );
        let url = format!("http://reviews:9080/{}", "é".repeat(200));
        span.istio_tags(
            &proxy(),
            &RequestTags {
                method: "GET",
                url: &url,
                protocol: "HTTP/1.1",
                status: 200,
                response_flags: "-",
                upstream_cluster: "outbound|9080||reviews.default.svc.cluster.local",
                peer_address: Some("127.0.1.1:40000".parse().expect("addr")),
                request_size: 0,
                response_size: 1234,
                request_id: Some("6f1a5f3c-0e8b-4f5e-9f3a-1d2c3b4a5e6f"),
                user_agent: None,
            },
        );
        let tag = |k: &str| span.tag_value(k).map(|v| v.to_string());
        assert_eq!(tag("http.status_code").as_deref(), Some("200"));
        assert_eq!(tag("response_size").as_deref(), Some("1234"));
        assert_eq!(tag("request_size").as_deref(), Some("0"));
        assert_eq!(tag("component").as_deref(), Some("proxy"));
        assert_eq!(tag("peer.address").as_deref(), Some("127.0.1.1:40000"));
        assert_eq!(
            tag("istio.canonical_service").as_deref(),
            Some("productpage")
        );
        assert_eq!(
            tag("guid:x-request-id").as_deref(),
            Some("6f1a5f3c-0e8b-4f5e-9f3a-1d2c3b4a5e6f")
        );
        let u = tag("http.url").expect("url");
        assert!(
            u.len() <= 256 && url.starts_with(&u),
            "cut on a character boundary"
        );
        assert!(!span.is_error());
        for key in tags::KNOWN.iter().filter(|k| **k != tags::ERROR) {
            assert!(span.tag_value(key).is_some(), "{key} is set");
        }
    }

    #[test]
    fn errors_are_tagged() {
        let ctx = Incoming::default().child(SpanId::random(), true);
        for (status, flags, error) in [
            (200, "-", false),
            (404, "-", false),
            (500, "-", true),
            (503, "UF,URX", true),
            (200, "DC", true),
            (0, "-", true),
        ] {
            let mut span = Span::new(&ctx, Kind::Server, "x", 1);
            let req = RequestTags {
                status,
                response_flags: flags,
                ..RequestTags::default()
            };
            span.istio_tags(&proxy(), &req);
            assert_eq!(span.is_error(), error, "{status} {flags}");
        }
    }
}
