//! The HTTP request path shared by the outbound and inbound listeners, as a fixed order of phases
//! (charted in the crate README): authority → route table → virtual host → route → fault → cluster pick →
//! request header edits → endpoint pick → forward with timeout and retries → response header edits.

use crate::config::cluster::Cluster;
use crate::config::headers::HeaderEdits;
use crate::config::route::{Abort, Action, RequestView, Route, RouteConfig, Target, VirtualHost};
use crate::config::Snapshot;
use crate::error::{Flags, ProxyError, RouteAnswer, RESPONSE_FLAGS_HEADER};
use crate::telemetry::metrics::{Protocol, Reporter};
use crate::telemetry::{self, Pending, Telemetry};
use crate::Shared;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub use weft_http::{full, text, Body, BodyError};
use weft_http::{h1, upstream};

/// Request bodies up to this size are buffered so the request can be retried; larger or unsized bodies are
/// streamed and not retried. The HTTP/1.1 server reads bodies of this size whole before the request path
/// runs.
pub const RETRY_BUFFER_LIMIT: u64 = weft_http::WHOLE_BODY_LIMIT;
/// Envoy's default retry back-off base interval.
const RETRY_BACKOFF_BASE: Duration = Duration::from_millis(25);
/// Envoy's default maximum back-off (10 × base).
const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(250);

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static NO_FIELDS: upstream::EncodedFields = upstream::EncodedFields::EMPTY;
static X_UPSTREAM_TIME: HeaderName = HeaderName::from_static("x-envoy-upstream-service-time");
static X_ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// How long a mirrored request may take when its route sets no timeout. Nobody waits for it; the limit
/// only bounds how long its task and connection live.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(30);

/// Which listener a request came in on.
#[derive(Debug, Clone)]
pub enum Entry {
    /// The outbound explicit proxy: route through the virtual listener of the authority's port.
    Outbound,
    /// An inbound listener, by LDS name: route through its own table.
    Inbound(Arc<str>),
    /// A gateway's listener (a Gateway server's port), by LDS name: route through its table by the
    /// request's authority, as the outbound proxy does; the gateway is the client side of the call.
    Gateway(Arc<str>),
}

/// Handles one request: never fails; errors become local responses with Envoy's status and flags.
///
/// Routing is done here, before the future is made, so the future (boxed by the listeners, one per
/// request) holds only the owned `Plan` and the phases that wait: the fault delay, reading a small body,
/// the upstream exchange. It was 4.2 KB when routing's borrows and the request lived in it too.
///
/// `down`: the connection the request came on (inbound and gateway listeners: its peer and, over mutual
/// TLS, the peer's SPIFFE ID).
pub(crate) fn handle(
    shared: Arc<Shared>,
    entry: Entry,
    down: Option<&crate::tls::Downstream>,
    req: Request<Body>,
) -> impl std::future::Future<Output = Response<Body>> + Send + 'static {
    // The access line needs these after the request is consumed; copy them only when it is on.
    let access = tracing::enabled!(target: "access", tracing::Level::DEBUG).then(|| {
        (
            req.method().clone(),
            req.uri().path().to_string(),
            down.and_then(|d| d.principal.clone()),
        )
    });
    let (mut parts, mut body) = req.into_parts();
    let source = down.map(|d| d.peer.ip());
    // Path normalization (the inbound listener's connection manager), before anything reads the path:
    // telemetry, request authentication, RBAC and routing see the path the application will get.
    let normalized = normalize(&shared, &entry, &mut parts);
    // Telemetry: the request's record, with the peer's metadata taken off an inbound request.
    let pending = shared
        .telemetry
        .as_ref()
        .and_then(|t| telemetry_start(t, &shared, &entry, down, &mut parts));
    // Request authentication (Envoy's jwt_authn), then RBAC with its result (Istio's `request.auth.*`),
    // before routing, as in Envoy's filter chain.
    let authenticated = normalized.and_then(|()| {
        crate::authn::authenticate(&shared, &entry, &mut parts)
            .map_err(|rejected| ProxyError::Unauthenticated(Box::new(rejected)))
    });
    // External authorization (CUSTOM policies) first, when its marking rules match: the check waits,
    // so RBAC and routing move into the future after it (`Deferred`).
    let external = match &authenticated {
        Ok(auth) => ext_authz_for(&shared, &entry, down, &parts, auth.as_ref()),
        Err(_) => None,
    };
    let (mut plan, mut deferred) = match external {
        None => (
            Some(
                authenticated
                    .and_then(|auth| authorize(&shared, &entry, down, &parts, auth.as_ref()))
                    .and_then(|()| prepare(&shared, &entry, source, parts)),
            ),
            None,
        ),
        Some((ext, peer)) => (
            None,
            Some(Box::new(Deferred {
                ext,
                peer,
                source,
                parts,
                auth: authenticated.ok().flatten(),
            })),
        ),
    };
    async move {
        // Recorded as a request that got no response (code 0, `DC`) if dropped before it has one.
        let mut inflight = Inflight(pending);
        let mut flags = Flags::default();
        // What an allowing authorizer adds to the response.
        let mut on_allow = None;
        if let Some(d) = deferred.take() {
            // Boxed: a check is rare, and every request's future would otherwise carry its size.
            plan = Some(match Box::pin(d.run(&shared, &entry, &mut body)).await {
                Ok((p, edits)) => {
                    on_allow = edits;
                    Ok(p)
                }
                Err(e) => Err(e),
            });
        }
        // The plan is used in place: moving it out of the `Result` would give it a second slot.
        let mut resp = match plan
            .as_mut()
            .expect("the plan is made before the future, or by the check in it")
        {
            Ok(plan) => match run(&shared, plan, body, &mut flags).await {
                Ok(r) => r,
                Err(e) => local_response(&e, &mut flags),
            },
            Err(e) => local_response(e, &mut flags),
        };
        if let Some(edits) = on_allow {
            (*edits).apply_response(resp.headers_mut());
        }
        let plan = plan.as_ref().and_then(|p| p.as_ref().ok());
        if !flags.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&flags.to_string()) {
                resp.headers_mut().insert(RESPONSE_FLAGS_HEADER, v);
            }
        }
        match (inflight.0.take(), &shared.telemetry) {
            (Some(mut p), Some(t)) => {
                telemetry_end(t, &entry, &mut p, &mut resp, flags, plan);
                resp = resp.map(|b| b.observed(p));
            }
            // Nothing recorded, but the metadata exchange goes on, as Istio's filter does.
            (None, Some(t)) => match entry {
                Entry::Outbound | Entry::Gateway(_) => drop(t.take_peer(resp.headers_mut())),
                Entry::Inbound(_) => t.announce(resp.headers_mut()),
            },
            _ => {}
        }
        if let Some((method, path, principal)) = access {
            tracing::debug!(
                target: "access",
                entry = ?entry,
                peer_principal = principal.as_deref().unwrap_or("-"),
                method = %method,
                path = %path,
                status = resp.status().as_u16(),
                flags = %flags,
                "request"
            );
        }
        resp
    }
}

/// A request's telemetry record while the request path runs.
/// Boxed from the start, as the response body carries it: the one allocation telemetry makes per
/// request, and the request's future stays small.
struct Inflight(Option<Box<Pending>>);

impl Drop for Inflight {
    fn drop(&mut self) {
        if let Some(mut p) = self.0.take() {
            // The client went away before any response: Envoy's `DC` with no response code.
            p.response(0, Flags::DC, &HeaderMap::new());
            p.record();
        }
    }
}

/// Opens a request's telemetry record. Inbound, the client sidecar's metadata is taken off the request
/// (the application never sees it) and the service is read from the authority; outbound, both come
/// with the cluster and the response. `None` when the listener's Telemetry leaves nothing to do: every
/// HTTP metric dropped, no access log and the request not traced (the peer's headers are still taken
/// off an inbound request).
fn telemetry_start(
    t: &Arc<Telemetry>,
    shared: &Shared,
    entry: &Entry,
    down: Option<&crate::tls::Downstream>,
    parts: &mut http::request::Parts,
) -> Option<Box<Pending>> {
    let protocol = if telemetry::is_grpc(&parts.headers) {
        Protocol::Grpc
    } else {
        Protocol::Http
    };
    let snap = shared.snapshot.load();
    let authority = authority_of(&parts.uri, &parts.headers).unwrap_or_default();
    let (log, tracing, stats) = match entry {
        Entry::Outbound => port_of(authority)
            .and_then(|p| snap.outbound_telemetry.get(&p))
            .map(|t| (t.access_log.clone(), t.tracing.as_ref(), t.stats.as_ref())),
        Entry::Inbound(name) | Entry::Gateway(name) => snap.listeners.get(&**name).map(|l| {
            let l = &l.value;
            (l.access_log.clone(), l.tracing.as_ref(), l.stats.as_ref())
        }),
    }
    .unwrap_or_default();
    // Metric overrides: what their expressions read, kept before tracing and routing edit the request.
    let captured = stats
        .filter(|o| o.touches_http())
        .map(|o| telemetry::overrides::Captured::new(o.clone(), parts, authority));
    // Tracing edits the request's trace headers in place, before routing moves them upstream, and adds
    // the request id when it is missing.
    let traced = tracing.and_then(|cfg| {
        let kind = match entry {
            Entry::Outbound | Entry::Gateway(_) => weft_trace::Kind::Client,
            Entry::Inbound(_) => weft_trace::Kind::Server,
        };
        telemetry::spans::start(t, &snap, cfg, kind, parts)
    });
    // The access line is taken after, so it has the request id this hop made (as Envoy's connection
    // manager makes it before any filter); without tracing, the id is made here for it.
    if log.is_some() && tracing.is_none() && !parts.headers.contains_key(&X_REQUEST_ID) {
        parts
            .headers
            .insert(X_REQUEST_ID.clone(), request_id_header());
    }
    let authority = authority_of(&parts.uri, &parts.headers).unwrap_or_default();
    let logged = log.map(|l| telemetry::Logged::new(l, parts, authority));
    if logged.is_none() && traced.is_none() && stats.is_some_and(|o| o.drops_all_http()) {
        if let Entry::Inbound(_) = entry {
            drop(t.take_peer(&mut parts.headers));
        }
        return None;
    }
    let mut p = Box::new(match entry {
        Entry::Outbound | Entry::Gateway(_) => Pending::new(
            t.clone(),
            Reporter::Source,
            t.unknown_peer(),
            t.unknown_service(),
            protocol,
        ),
        Entry::Inbound(_) => {
            let peer = t.take_peer(&mut parts.headers);
            let service = t.inbound_service(authority_of(&parts.uri, &parts.headers));
            let mut p = Pending::new(t.clone(), Reporter::Destination, peer, service, protocol);
            // The connection's mutual TLS and principals, interned once per connection.
            if let Some(d) = down {
                p.set_security(d.security.clone());
            }
            p
        }
    });
    if let Some(l) = logged {
        p.log_to(l);
    }
    if let Some(tr) = traced {
        p.trace(tr);
    }
    if let Some(c) = captured {
        p.stats(c);
    }
    Some(p)
}

/// Phase: path normalization as the inbound listener's connection manager says (Envoy's `normalize_path`,
/// `merge_slashes`, `path_with_escaped_slashes_action`); the request goes on, and upstream, with the
/// normalized path. A path it refuses is 400. The outbound proxy leaves paths as they are.
fn normalize(
    shared: &Shared,
    entry: &Entry,
    parts: &mut http::request::Parts,
) -> Result<(), ProxyError> {
    let (Entry::Inbound(name) | Entry::Gateway(name)) = entry else {
        return Ok(());
    };
    let opts = match shared.snapshot.load().listeners.get(&**name) {
        Some(l) => l.value.path_normalization,
        None => return Ok(()),
    };
    if opts.is_none() {
        return Ok(());
    }
    crate::authz::normalize_request(parts, opts).map_err(ProxyError::BadPath)
}

/// A request that waits for the external authorizer before RBAC and routing.
struct Deferred {
    ext: Arc<crate::ext_authz::ExtAuthz>,
    peer: crate::ext_authz::Peer,
    /// The client's address (a hashing load balancer's `source_ip`).
    source: Option<std::net::IpAddr>,
    parts: http::request::Parts,
    auth: Option<serde_json::Value>,
}

impl Deferred {
    /// Phase: the check; allowed, its header edits, then RBAC and the phases that do not wait. The
    /// response headers an allowing authorizer adds come back beside the plan.
    async fn run(
        mut self,
        shared: &Shared,
        entry: &Entry,
        body: &mut Body,
    ) -> Result<(Plan, Option<Box<crate::ext_authz::Allowed>>), ProxyError> {
        let mut allowed = match self
            .ext
            .check_request(shared, &self.peer, &self.parts, body)
            .await
        {
            crate::ext_authz::Outcome::Allow(a) => a,
            crate::ext_authz::Outcome::Refuse(e) => return Err(e),
        };
        allowed.apply(&mut self.parts.headers);
        let subject = self.peer.subject(self.auth.as_ref());
        authorize_subject(shared, entry, &subject, &self.parts)?;
        let plan = prepare(shared, entry, self.source, self.parts)?;
        Ok((
            plan,
            (!allowed.response.is_empty()).then(|| Box::new(allowed)),
        ))
    }
}

/// Phase: whether the inbound listener's ext_authz filter checks this request (its marking rules
/// matched), with what the check needs of the connection. While no listener has ext_authz, this is one
/// atomic load.
fn ext_authz_for(
    shared: &Shared,
    entry: &Entry,
    down: Option<&crate::tls::Downstream>,
    parts: &http::request::Parts,
    auth: Option<&serde_json::Value>,
) -> Option<(Arc<crate::ext_authz::ExtAuthz>, crate::ext_authz::Peer)> {
    let (Entry::Inbound(name) | Entry::Gateway(name)) = entry else {
        return None;
    };
    if !crate::ext_authz::any_live() {
        return None;
    }
    let ext = shared
        .snapshot
        .load()
        .listeners
        .get(&**name)
        .and_then(|l| l.value.ext_authz.clone())?;
    let unknown = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    let peer = crate::ext_authz::Peer {
        source: down.map_or(unknown, |d| d.peer),
        destination: down.and_then(|d| d.local).unwrap_or(unknown),
        principal: down.and_then(|d| d.principal.clone()),
        sni: down.and_then(|d| d.sni.clone()),
    };
    ext.applies(&peer.subject(auth), Some(parts))
        .then_some((ext, peer))
}

/// Phase: the inbound (or gateway) listener's RBAC filters (AuthorizationPolicy), on the connection (`down`: peer,
/// local address, the peer's SPIFFE ID over mutual TLS, SNI) and the request with its verified JWT
/// identity (`auth`). A denial is 403 `RBAC: access denied`. While no listener has RBAC, this is one
/// atomic load; a listener without it, one lookup and a branch.
fn authorize(
    shared: &Shared,
    entry: &Entry,
    down: Option<&crate::tls::Downstream>,
    parts: &http::request::Parts,
    auth: Option<&serde_json::Value>,
) -> Result<(), ProxyError> {
    if matches!(entry, Entry::Outbound) || !crate::authz::any_live() {
        return Ok(());
    }
    let unknown = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    let subject = crate::authz::Subject {
        source: down.map_or(unknown, |d| d.peer),
        destination: down.and_then(|d| d.local).unwrap_or(unknown),
        principal: down.and_then(|d| d.principal.as_deref()),
        sni: down.and_then(|d| d.sni.as_deref()),
        auth,
    };
    authorize_subject(shared, entry, &subject, parts)
}

/// [`authorize`] with the subject already made (after an external check).
fn authorize_subject(
    shared: &Shared,
    entry: &Entry,
    subject: &crate::authz::Subject<'_>,
    parts: &http::request::Parts,
) -> Result<(), ProxyError> {
    let (Entry::Inbound(name) | Entry::Gateway(name)) = entry else {
        return Ok(());
    };
    let snap = shared.snapshot.load();
    let Some(rbac) = snap
        .listeners
        .get(&**name)
        .and_then(|l| l.value.rbac.as_ref())
    else {
        return Ok(());
    };
    crate::authz::authorize_request(rbac, subject, parts)
}

/// Completes a request's telemetry record with its response head. Outbound, the server sidecar's
/// metadata is taken off the response; inbound, this sidecar's is put on it.
fn telemetry_end(
    t: &Telemetry,
    entry: &Entry,
    p: &mut Pending,
    resp: &mut Response<Body>,
    flags: Flags,
    plan: Option<&Plan>,
) {
    match entry {
        Entry::Outbound | Entry::Gateway(_) => {
            p.set_peer(t.take_peer(resp.headers_mut()));
            if let Some(s) = plan.and_then(|p| p.cluster.as_ref()?.service.clone()) {
                p.set_service(s);
            }
        }
        Entry::Inbound(_) => t.announce(resp.headers_mut()),
    }
    if let (Some(tr), Some(plan)) = (p.traced(), plan) {
        tr.cluster = plan.cluster.as_ref().map(|c| c.name.clone());
        tr.upstream = plan.prepared.endpoint;
    }
    if let Some(c) = p.captured() {
        let plan = plan.map(|p| (p.cluster.clone(), p.prepared.endpoint));
        let (cluster, endpoint) = plan.unwrap_or_default();
        c.response(resp.headers(), cluster, endpoint);
    }
    if let Some(l) = p.logged() {
        l.response_headers = resp.headers().clone();
        if let Some(plan) = plan {
            l.cluster = plan.cluster.as_ref().map(|c| c.name.clone());
            l.upstream = plan.prepared.endpoint;
        }
    }
    if let Some(plan) = plan {
        match &plan.prepared.body {
            PreparedBody::Buffered(b) => p.request_body(plan.request_len, Some(b)),
            PreparedBody::Streaming(_) => p.request_body(plan.request_len, None),
        }
    }
    p.response(resp.status().as_u16(), flags, resp.headers());
}

/// The one place a `ProxyError` becomes a response.
fn local_response(e: &ProxyError, flags: &mut Flags) -> Response<Body> {
    let (status, flag, body) = e.response_parts();
    flags.insert(flag);
    tracing::debug!(error = %e, side = ?e.side(), "local response");
    // The external authorizer's denial: its own status, headers and body.
    if let ProxyError::ExtAuthzDenied(d) = e {
        let mut r = Response::new(full(d.body.clone()));
        *r.status_mut() = d.status;
        *r.headers_mut() = d.headers.clone();
        return r;
    }
    // A redirect, direct response or CORS preflight: made whole by the route.
    if let ProxyError::RouteAnswer(a) = e {
        let mut r = Response::new(full(a.body.clone()));
        *r.status_mut() = a.status;
        *r.headers_mut() = a.headers.clone();
        return r;
    }
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    // Envoy's fault filter answers a gRPC abort as a trailers-only response.
    if let ProxyError::FaultAbortGrpc { code } = e {
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert(GRPC_STATUS.clone(), HeaderValue::from(*code));
        h.insert(
            GRPC_MESSAGE.clone(),
            HeaderValue::from_static("fault filter abort"),
        );
    }
    if let ProxyError::HttpsRedirect { location } = e {
        r.headers_mut().insert(header::LOCATION, location.clone());
    }
    if let Some(c) = match e {
        ProxyError::Unauthenticated(rejected) => rejected.challenge(),
        _ => None,
    } {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, c.clone());
    }
    if !body.is_empty() {
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    r
}

/// The redirect of a plaintext request to a virtual host that requires TLS: the same host (its port
/// dropped, as the HTTPS server is on its own) and path over `https://`.
fn https_redirect(authority: &str, path_and_query: &str) -> ProxyError {
    let host = crate::config::route::strip_port(authority);
    let location = HeaderValue::from_str(&format!("https://{host}{path_and_query}"))
        .unwrap_or_else(|_| HeaderValue::from_static("https://"));
    ProxyError::HttpsRedirect { location }
}

/// The authority of a request: absolute-form URI first, then `Host`.
pub fn authority_of<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    if let Some(a) = uri.authority() {
        return Some(a.as_str());
    }
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty())
}

/// Where the last `:` of an authority is. A byte loop: `str::rfind` with a `char` pattern took about 150
/// instructions for a 20-byte authority, and routing looks twice per request (`bench/instructions`).
pub fn last_colon(authority: &str) -> Option<usize> {
    authority.bytes().rposition(|b| b == b':')
}

/// The port of an authority (80 when it has none); `None` when the port is not a number.
pub fn port_of(authority: &str) -> Option<u16> {
    let host_end = if authority.starts_with('[') {
        authority.find(']').map(|i| i + 1)?
    } else {
        last_colon(authority).unwrap_or(authority.len())
    };
    match authority.get(host_end..) {
        None | Some("") => Some(80),
        Some(rest) => rest.strip_prefix(':')?.parse().ok(),
    }
}

/// A random UUID v4, as Envoy generates for `x-request-id`.
pub fn uuid_v4() -> String {
    String::from_utf8_lossy(&uuid_v4_ascii()).into_owned()
}

/// A random UUID v4 as a header value, with no intermediate string. Marked sensitive, which HPACK encodes
/// as a literal never indexed: a value seen once gains nothing from the dynamic table, while inserting one
/// per request filled the encoder's table with `x-request-id` entries, each evicting an older one (256
/// instructions per request, `bench/instructions` with `WORKLOAD=http2-streams`).
fn uuid_v4_header() -> HeaderValue {
    let mut v = slab_value(&uuid_v4_ascii());
    v.set_sensitive(true);
    v
}

/// A new `x-request-id` value (a UUID v4), as the request path makes one.
pub(crate) fn request_id_header() -> HeaderValue {
    uuid_v4_header()
}

/// A count of milliseconds as a header value.
fn millis_header(ms: u64) -> HeaderValue {
    slab_value(weft_http::decimal(ms, &mut [0u8; 20]))
}

/// A header value cut from the slab (see `weft_http::slab_cut`).
fn slab_value(bytes: &[u8]) -> HeaderValue {
    let cut = weft_http::slab_cut(|slab| slab.extend_from_slice(bytes));
    // Callers pass digits, hex and dashes: always a valid value.
    weft_http::field_value(cut).unwrap_or_else(|| HeaderValue::from_static(""))
}

/// Each byte's two lowercase hex digits.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    t
};

/// Where each byte's two digits go in a UUID's text (the dashes are at 8, 13, 18 and 23).
const UUID_DIGITS: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];

/// 16 random bytes as a version 4, variant 1 UUID. Two words from the thread's generator and a table of
/// digit pairs: filling 16 bytes and formatting them a nibble at a time with a branch for the dashes took
/// about 350 instructions, once for every request without an `x-request-id` (`bench/instructions`).
fn uuid_v4_ascii() -> [u8; 36] {
    let hi = (fastrand::u64(..) & !0xf000) | 0x4000; // version: the 13th digit is 4
    let lo = (fastrand::u64(..) & !(0xc0 << 56)) | (0x80 << 56); // variant: the 17th digit is 8 to b
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&hi.to_be_bytes());
    bytes[8..].copy_from_slice(&lo.to_be_bytes());
    let mut s = [b'-'; 36];
    for (&b, &at) in bytes.iter().zip(UUID_DIGITS.iter()) {
        s[at..at + 2].copy_from_slice(&HEX_PAIRS[usize::from(b)]);
    }
    s
}

fn route_table(snap: &Snapshot, entry: &Entry, authority: &str) -> Option<Arc<RouteConfig>> {
    match entry {
        Entry::Outbound => {
            let port = port_of(authority)?;
            snap.outbound_routes_by_port.get(&port).cloned()
        }
        Entry::Inbound(name) | Entry::Gateway(name) => {
            let l = snap.listeners.get(&**name)?;
            snap.route_table(&l.value)
        }
    }
}

/// The fields that are the connection's own, not the message's: never forwarded.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
    header::PROXY_AUTHORIZATION,
];

/// `Connection`'s options that name no field (or one in `HOP_BY_HOP`, removed anyway).
fn is_plain_option(token: &str) -> bool {
    ["close", "keep-alive", "upgrade", "te"]
        .iter()
        .any(|o| token.eq_ignore_ascii_case(o))
}

/// Removes the hop-by-hop fields: those of `HOP_BY_HOP` and those `Connection` names (RFC 9110, 7.6.1).
/// Returns which of `Host` and `x-request-id` the fields that stay have: the same pass over the names
/// finds them, where a lookup of each afterwards cost a hash and a probe, about 120 instructions apiece
/// (`bench/instructions`).
fn strip_hop_by_hop(h: &mut HeaderMap) -> Kept {
    // One pass over the names present, and a removal only for those found: usually none is, and a
    // removal (a hash and a probe) for each of the seven names was 5% of a request's instructions. A
    // request with `connection: close` or `keep-alive` (every HTTP/1.0 client's, and many 1.1 clients')
    // made eight removals and an allocated name for `close`, 930 instructions (`bench/instructions`,
    // a new connection per request).
    let mut found = [false; 7];
    let mut kept = Kept::default();
    for name in h.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|n| n == name) {
            found[i] = true;
        }
        kept.host |= name == header::HOST;
        kept.request_id |= name == X_REQUEST_ID;
        kept.peer_metadata |= name.as_str().starts_with("x-envoy-peer-metadata");
    }
    if !found.contains(&true) {
        return kept;
    }
    // Fields named in `Connection` are hop-by-hop too; its usual options name none.
    let tokens = || {
        h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty() && !is_plain_option(t))
    };
    if found[0] && tokens().next().is_some() {
        let named: Vec<HeaderName> = tokens()
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for n in &named {
            h.remove(n);
        }
        // Rare: `Connection` may have named either.
        kept.host &= h.contains_key(header::HOST);
        kept.request_id &= h.contains_key(&X_REQUEST_ID);
    }
    // `te: trailers` is removed like any TE, but reported: gRPC servers ask for it, and HTTP/2 upstreams
    // get it back (Envoy keeps it too).
    kept.te_trailers = found[5]
        && h.get_all(header::TE).iter().all(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .all(|t| t.trim().eq_ignore_ascii_case("trailers"))
            })
        });
    for (name, _) in HOP_BY_HOP.iter().zip(found).filter(|(_, f)| *f) {
        h.remove(name);
    }
    kept
}

/// Fields `strip_hop_by_hop` found among those that stay.
#[derive(Debug, Default, PartialEq)]
struct Kept {
    host: bool,
    request_id: bool,
    /// The request had `te: trailers` and no other transfer coding in TE (removed all the same).
    te_trailers: bool,
    /// The request had a sidecar's metadata field (`x-envoy-peer-metadata` or its `-id`).
    peer_metadata: bool,
}

/// The parts of the request that every try reuses.
struct Prepared {
    upstream: Outgoing,
    body: PreparedBody,
    /// The endpoint of the last try (the access log's `%UPSTREAM_HOST%`).
    endpoint: Option<std::net::SocketAddr>,
}

/// The request as its upstream's protocol takes it.
enum Outgoing {
    /// HTTP/1.1: the head, encoded once for every try (origin form; `Host` is among the fields).
    H1(h1::Head),
    /// HTTP/2: what each try's request is made of.
    H2 {
        method: http::Method,
        path_and_query: PathAndQuery,
        headers: HeaderMap,
        /// `:authority`.
        authority: Authority,
        /// This sidecar's metadata goes with it (outbound).
        announce: bool,
    },
}

enum PreparedBody {
    /// Buffered: every try gets a copy.
    Buffered(Bytes),
    /// Streamed: only one try.
    Streaming(Option<Body>),
}

/// Where routing sent a request: its table (kept alive by the `Arc`) and the positions in it.
struct Routed {
    table: Arc<RouteConfig>,
    vhost: usize,
    route: usize,
    /// The weighted cluster picked, when the route splits traffic (its header edits apply).
    weighted: Option<usize>,
}

impl Routed {
    // The positions were found in this very table, which never changes behind its `Arc`.
    fn vhost(&self) -> &VirtualHost {
        &self.table.virtual_hosts[self.vhost]
    }

    fn route(&self) -> &Route {
        &self.vhost().routes[self.route]
    }

    /// Header edits, most specific first, as Envoy applies them by default.
    fn levels(&self) -> [Option<&HeaderEdits>; 4] {
        let route = self.route();
        let dest = match (route.forward().map(|a| &a.target), self.weighted) {
            (Some(Target::Weighted { clusters, .. }), Some(i)) => {
                clusters.get(i).map(|c| &c.headers)
            }
            _ => None,
        };
        [
            dest,
            Some(&route.headers),
            Some(&self.vhost().headers),
            Some(&self.table.headers),
        ]
    }
}

/// Everything decided about a request before anything waits.
struct Plan {
    /// The request body's length: read whole, or as its framing gave it when streamed (0 unknown).
    request_len: u64,
    routed: Routed,
    /// `None` when the snapshot has no cluster of the picked name.
    cluster: Option<Arc<Cluster>>,
    /// What only some requests need (a fault that hit, CORS, mirrors): boxed, so the request future
    /// of every other request does not carry it.
    extras: Option<Box<Extras>>,
    /// The request's hash, for a cluster that balances by consistent hashing (boxed: every request's
    /// future would carry it otherwise).
    affinity: Option<Box<Affinity>>,
    prepared: Prepared,
}

/// The rarely used part of a plan.
#[derive(Default)]
struct Extras {
    /// The fault delay to inject, when its percentage hit.
    delay: Option<Duration>,
    /// The fault abort to inject, when its percentage hit.
    abort: Option<Abort>,
    /// The request's `Origin`, when the route's CORS policy allows it (echoed on the response).
    cors_origin: Option<HeaderValue>,
    /// Copies of the request to send once its body is read.
    mirrors: Vec<Mirrored>,
}

/// A mirror copy of the request, ready but for its body.
struct Mirrored {
    cluster: Arc<Cluster>,
    upstream: Outgoing,
}

/// A request's consistent hash.
struct Affinity {
    hash: std::num::NonZeroU64,
    /// The cookie generated for it, to set on the response.
    set_cookie: Option<HeaderValue>,
}

/// The phases that do not wait: snapshot, authority, route table, virtual host, route, fault rolls,
/// cluster pick, request header edits.
fn prepare(
    shared: &Shared,
    entry: &Entry,
    source: Option<std::net::IpAddr>,
    parts: http::request::Parts,
) -> Result<Plan, ProxyError> {
    // Phase: snapshot, once for the whole request.
    let snap = shared.snapshot.load();

    // Phase: authority and route table. Both borrow from the request: no copies on the way.
    let h2 = parts.version == Version::HTTP_2;
    let authority = authority_of(&parts.uri, &parts.headers).ok_or(ProxyError::BadAuthority)?;
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let no_route = || ProxyError::NoRoute {
        authority: authority.to_string(),
        path: path_and_query.as_str().to_string(),
    };
    let table = route_table(&snap, entry, authority).ok_or_else(no_route)?;

    // Phase: virtual host and route. A gateway's TLS server is the one place requests come in over
    // `https`.
    let scheme = match entry {
        Entry::Gateway(name) => match snap.listeners.get(&**name) {
            Some(l) if l.value.server_tls.is_some() => "https",
            _ => "http",
        },
        Entry::Outbound | Entry::Inbound(_) => "http",
    };
    let view = RequestView {
        method: &parts.method,
        authority,
        path_and_query: path_and_query.as_str(),
        scheme,
        headers: &parts.headers,
    };
    let vhost = table
        .find_virtual_host_index(authority)
        .ok_or_else(no_route)?;
    // A gateway server's `httpsRedirect`: a plaintext request is sent to https://.
    if table.virtual_hosts[vhost].require_tls {
        if let Entry::Gateway(name) = entry {
            let plaintext = snap
                .listeners
                .get(&**name)
                .is_none_or(|l| l.value.server_tls.is_none());
            if plaintext {
                return Err(https_redirect(authority, path_and_query.as_str()));
            }
        }
    }
    let route = table.virtual_hosts[vhost]
        .find_route_index(&view)
        .ok_or_else(no_route)?;
    let mut routed = Routed {
        table,
        vhost,
        route,
        weighted: None,
    };
    let mut extras: Option<Box<Extras>> = None;

    // Phase: CORS (Envoy's cors filter, before the router): a preflight is answered here; an allowed
    // origin is echoed on the response.
    if let Some(cors) = &routed.route().cors {
        if let Some(origin) = parts.headers.get(header::ORIGIN) {
            let allowed = origin.to_str().is_ok_and(|o| cors.allows(o));
            let preflight = parts.method == http::Method::OPTIONS
                && parts
                    .headers
                    .get(header::ACCESS_CONTROL_REQUEST_METHOD)
                    .is_some_and(|v| !v.is_empty());
            if preflight && (allowed || !cors.forward_unmatched_preflights) {
                let mut headers = HeaderMap::new();
                if allowed {
                    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                    if cors.allow_credentials {
                        headers.insert(
                            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                            HeaderValue::from_static("true"),
                        );
                    }
                    for (name, v) in [
                        (header::ACCESS_CONTROL_ALLOW_METHODS, &cors.allow_methods),
                        (header::ACCESS_CONTROL_ALLOW_HEADERS, &cors.allow_headers),
                        (header::ACCESS_CONTROL_MAX_AGE, &cors.max_age),
                    ] {
                        if let Some(v) = v {
                            headers.insert(name, v.clone());
                        }
                    }
                }
                return Err(route_answer(&routed, StatusCode::OK, headers, Bytes::new()));
            }
            if allowed && !preflight {
                extras.get_or_insert_with(Box::default).cors_origin = Some(origin.clone());
            }
        }
    }

    // Phase: the route's own answers (Envoy's router): a redirect or a direct response.
    match &routed.route().action {
        Action::Forward(_) => {}
        Action::Redirect(r) => {
            let matched = &routed.route().matcher.path;
            let location = r.location(matched, scheme, authority, path_and_query.as_str());
            let mut headers = HeaderMap::new();
            let v = HeaderValue::from_str(&location).map_err(|_| no_route())?;
            headers.insert(header::LOCATION, v);
            return Err(route_answer(&routed, r.status, headers, Bytes::new()));
        }
        Action::Direct(d) => {
            let mut headers = HeaderMap::new();
            if !d.body.is_empty() {
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            }
            return Err(route_answer(&routed, d.status, headers, d.body.clone()));
        }
    }

    // Phase: fault injection rolls (the delay is waited for, then the abort answered, in `run`).
    if let Some(fault) = &routed.route().fault {
        if let Some((d, pct)) = fault.delay {
            if pct.hits(fastrand::u32(0..1_000_000)) {
                extras.get_or_insert_with(Box::default).delay = Some(d);
            }
        }
        if let Some((abort, pct)) = fault.abort {
            if pct.hits(fastrand::u32(0..1_000_000)) {
                extras.get_or_insert_with(Box::default).abort = Some(abort);
            }
        }
    }

    // Phase: cluster pick.
    let (cluster_name, weighted) = pick_cluster(routed.route());
    // A missing cluster is answered after the fault phases, as Envoy's fault filter runs before its router.
    let cluster = snap.clusters.get(cluster_name).cloned();
    routed.weighted = weighted;

    // Phase: the request's hash, when the cluster balances by consistent hashing.
    let affinity = match &cluster {
        Some(c) if matches!(c.policy.lb, crate::balance::Lb::Hash(_)) => {
            let (hash, set_cookie) = request_hash(
                routed.route().forward().map_or(&[][..], |a| &a.hash),
                &parts.headers,
                path_and_query.query(),
                source,
            );
            hash.map(|h| {
                Box::new(Affinity {
                    hash: std::num::NonZeroU64::new(h).unwrap_or(std::num::NonZeroU64::MIN),
                    set_cookie,
                })
            })
        }
        _ => None,
    };

    // Phase: request header edits (most specific first, as Envoy applies them by default).
    // HTTP/1.1 upstreams get `Host` from the authority the request was routed by: a request in absolute
    // form has its `Host` replaced by the target's authority (RFC 9112, 3.2.2), so that a request is never
    // routed as one service and read by the application as another; a `Host` named hop-by-hop comes back.
    // The value is prepared before the headers move: the `Host` value itself (shared bytes) when it is
    // the authority. HTTP/2 upstreams get the authority as `:authority`, from the URI (shared bytes)
    // unless a `Host` edit says otherwise (the HTTP/2 server refuses a client's `Host` that differs from
    // its `:authority`).
    let host = match (h2, parts.uri.authority(), parts.headers.get(header::HOST)) {
        (true, _, _) => None,
        (false, None, Some(v)) => Some((v.clone(), false)),
        (false, Some(a), Some(v)) if v.as_bytes() == a.as_str().as_bytes() => {
            Some((v.clone(), false))
        }
        (false, Some(_), Some(_)) => HeaderValue::from_str(authority).ok().map(|v| (v, true)),
        (false, _, None) => HeaderValue::from_str(authority).ok().map(|v| (v, false)),
    };
    let uri_authority = match (h2, parts.uri.authority()) {
        (false, _) => None,
        (true, Some(a)) => Some(a.clone()),
        (true, None) => Authority::try_from(authority).ok(),
    };
    let mut headers = parts.headers;
    let kept = strip_hop_by_hop(&mut headers);
    if let Some((v, replace)) = host {
        if replace || !kept.host {
            headers.insert(header::HOST, v);
        }
    }
    if !kept.request_id {
        headers.insert(X_REQUEST_ID.clone(), uuid_v4_header());
    }
    // Outbound, this sidecar's metadata goes with the request: in place of any the application sent,
    // encoded once (see `OwnMetadata::lines` and `OwnMetadata::fields`).
    let announce = match (entry, &shared.telemetry) {
        (Entry::Outbound | Entry::Gateway(_), Some(t)) => {
            if kept.peer_metadata {
                headers.remove(&telemetry::peer::PEER_METADATA);
                headers.remove(&telemetry::peer::PEER_METADATA_ID);
            }
            Some(t)
        }
        _ => None,
    };
    for e in routed.levels().iter().flatten() {
        e.request.apply(&mut headers);
    }
    // Phase: rewrites (after the edits, as Envoy's router rewrites the request it sends). The path
    // the client asked for goes along in `x-envoy-original-path`.
    let mut path_and_query = path_and_query;
    if let Some(rw) = routed.route().forward().and_then(|a| a.rewrite.as_deref()) {
        if let Some(p) = rw
            .path
            .apply(&routed.route().matcher.path, path_and_query.as_str())
        {
            let new = PathAndQuery::try_from(p)
                .map_err(|e| ProxyError::BadUpstreamRequest { source: e.into() })?;
            if let Ok(v) = HeaderValue::from_str(path_and_query.as_str()) {
                headers.insert(X_ORIGINAL_PATH.clone(), v);
            }
            path_and_query = new;
        }
        if let Some(h) = &rw.host {
            headers.insert(header::HOST, h.clone());
        }
    }
    // Phase: mirrors, made now from the request as it goes upstream, with `-shadow` on the host.
    if let Some(a) = routed.route().forward().filter(|a| !a.mirrors.is_empty()) {
        let own = announce.map_or(&[][..], |t| t.own_lines());
        for m in &a.mirrors {
            if !m.percent.hits(fastrand::u32(0..1_000_000)) {
                continue;
            }
            let Some(cluster) = snap.clusters.get(&m.cluster).cloned() else {
                tracing::debug!(cluster = %m.cluster, "mirror cluster not found");
                continue;
            };
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .or(uri_authority.as_ref().map(Authority::as_str))
                .unwrap_or_default();
            let shadow = shadow_host(host);
            let mut copy = headers.clone();
            let upstream = if h2 {
                copy.remove(header::HOST);
                let Ok(a) = Authority::try_from(shadow) else {
                    continue;
                };
                Outgoing::H2 {
                    method: parts.method.clone(),
                    path_and_query: path_and_query.clone(),
                    headers: copy,
                    authority: a,
                    announce: announce.is_some(),
                }
            } else {
                let Ok(v) = HeaderValue::from_str(&shadow) else {
                    continue;
                };
                copy.insert(header::HOST, v);
                Outgoing::H1(h1::Head::encode_with(
                    &parts.method,
                    path_and_query.as_str(),
                    None,
                    copy,
                    own,
                ))
            };
            extras
                .get_or_insert_with(Box::default)
                .mirrors
                .push(Mirrored { cluster, upstream });
        }
    }
    let upstream = if h2 {
        // The one TE an HTTP/2 request may carry (RFC 9113, 8.2.2).
        if kept.te_trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        let a = match headers.remove(header::HOST) {
            Some(v) => Authority::try_from(v.as_bytes()).ok(),
            None => uri_authority,
        };
        Outgoing::H2 {
            method: parts.method,
            path_and_query,
            headers,
            authority: a.ok_or(ProxyError::BadAuthority)?,
            announce: announce.is_some(),
        }
    } else {
        Outgoing::H1(h1::Head::encode_with(
            &parts.method,
            path_and_query.as_str(),
            None,
            headers,
            announce.map_or(&[][..], |t| t.own_lines()),
        ))
    };
    Ok(Plan {
        request_len: 0,
        routed,
        cluster,
        extras,
        affinity,
        prepared: Prepared {
            upstream,
            body: PreparedBody::Buffered(Bytes::new()),
            endpoint: None,
        },
    })
}

/// The phases that wait: fault delay and abort, the body, forwarding, response header edits.
async fn run(
    shared: &Arc<Shared>,
    plan: &mut Plan,
    body: Body,
    flags: &mut Flags,
) -> Result<Response<Body>, ProxyError> {
    // Phase: fault injection (delay, then abort).
    if let Some(x) = &plan.extras {
        if let Some(d) = x.delay {
            flags.insert(Flags::DI);
            tokio::time::sleep(d).await;
        }
        match x.abort {
            Some(Abort::Http(status)) => return Err(ProxyError::FaultAbort { status }),
            Some(Abort::Grpc(code)) => return Err(ProxyError::FaultAbortGrpc { code }),
            None => {}
        }
    }
    let Some(cluster) = &plan.cluster else {
        return Err(ProxyError::ClusterNotFound {
            cluster: pick_cluster_name(plan.routed.route(), plan.routed.weighted).to_string(),
        });
    };
    if cluster.endpoints.is_empty() {
        return Err(ProxyError::NoHealthyUpstream {
            cluster: cluster.name.clone(),
        });
    }

    // Phase: body (buffered when small enough to retry).
    plan.request_len = body.size_hint().exact().unwrap_or(0);
    plan.prepared.body = if body.is_end_stream() {
        PreparedBody::Buffered(Bytes::new())
    } else if body
        .size_hint()
        .upper()
        .is_some_and(|u| u <= RETRY_BUFFER_LIMIT)
    {
        let bytes = body
            .collect()
            .await
            .map_err(|source| ProxyError::DownstreamBody {
                source: source.into(),
            })?
            .to_bytes();
        plan.request_len = bytes.len() as u64;
        PreparedBody::Buffered(bytes)
    } else {
        PreparedBody::Streaming(Some(body))
    };

    // Phase: mirrors, sent off with a copy of the body: only a body read whole (up to
    // `RETRY_BUFFER_LIMIT`) can be copied; a streamed one is not mirrored.
    let route = plan.routed.route();
    if let Some(x) = plan.extras.as_mut().filter(|x| !x.mirrors.is_empty()) {
        match &plan.prepared.body {
            PreparedBody::Buffered(b) => {
                let timeout = route
                    .forward()
                    .and_then(|a| a.timeout)
                    .unwrap_or(MIRROR_TIMEOUT);
                for m in x.mirrors.drain(..) {
                    spawn_mirror(shared, m, b.clone(), timeout);
                }
            }
            PreparedBody::Streaming(_) => {
                tracing::debug!("request body streamed: not mirrored");
            }
        }
    }

    // Phase: forward with timeout and retries.
    let started = Instant::now();
    let route = plan.routed.route();
    let hash = plan.affinity.as_ref().map(|a| a.hash);
    let mut resp = forward(shared, cluster, route, hash, &mut plan.prepared, flags).await?;
    let upstream_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);

    // Phase: response header edits.
    strip_hop_by_hop(resp.headers_mut());
    resp.headers_mut()
        .insert(X_UPSTREAM_TIME.clone(), millis_header(upstream_ms));
    for e in plan.routed.levels().iter().flatten() {
        e.response.apply(resp.headers_mut());
    }
    // CORS: an allowed origin is echoed, with the policy's credentials and exposed headers.
    if let (Some(origin), Some(cors)) = (
        plan.extras.as_ref().and_then(|x| x.cors_origin.clone()),
        &plan.routed.route().cors,
    ) {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if cors.allow_credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(v) = &cors.expose_headers {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
    }
    if let Some(cookie) = plan.affinity.as_mut().and_then(|a| a.set_cookie.take()) {
        resp.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(resp)
}

/// A response the route makes itself, with the route's, virtual host's and table's response header
/// edits (Envoy applies them to its router's local responses too).
fn route_answer(
    routed: &Routed,
    status: StatusCode,
    mut headers: HeaderMap,
    body: Bytes,
) -> ProxyError {
    for e in routed.levels().iter().flatten() {
        e.response.apply(&mut headers);
    }
    ProxyError::RouteAnswer(Box::new(RouteAnswer {
        status,
        headers,
        body,
    }))
}

/// Envoy's shadow host: `-shadow` after the host name, before any port (`reviews:9080` →
/// `reviews-shadow:9080`).
fn shadow_host(authority: &str) -> String {
    let host = crate::config::route::strip_port(authority);
    format!("{host}-shadow{}", &authority[host.len()..])
}

/// Sends a mirror copy on its own task: its response is dropped and its failure only logged, so the
/// request it copies never waits for it or sees it fail (Envoy's shadowing). Bounded by `timeout`.
fn spawn_mirror(shared: &Arc<Shared>, m: Mirrored, body: Bytes, timeout: Duration) {
    use tracing::Instrument;
    let shared = shared.clone();
    let span = tracing::debug_span!("mirror", cluster = %m.cluster.name);
    tokio::spawn(
        async move {
            let Some((addr, sidecar)) = m.cluster.endpoints.pick_with_sidecar() else {
                tracing::debug!("no endpoint to mirror to");
                return;
            };
            let tls = match &m.cluster.tls {
                Some((tls, always)) if *always || sidecar => Some(tls),
                _ => None,
            };
            let mut req = Prepared {
                upstream: m.upstream,
                body: PreparedBody::Buffered(body),
                endpoint: None,
            };
            let t = Try {
                addr,
                tls,
                connect_timeout: m.cluster.connect_timeout,
                max_requests: m.cluster.policy.max_requests_per_connection,
                per_try: Some(timeout),
                last: true,
            };
            match try_once(&shared, &mut req, t).await {
                Ok(resp) => tracing::debug!(status = resp.status().as_u16(), "mirrored"),
                Err(e) => tracing::debug!(error = %e, "mirror failed"),
            }
        }
        .instrument(span),
    );
}

/// The hash of a request under a route's `hash_policy`: the first key the request has. A cookie key
/// the request lacks, with a `ttl`, is generated (random) and comes back to be set on the response, as
/// Envoy does; without a key the balancer picks at random.
fn request_hash(
    keys: &[crate::config::route::HashKey],
    headers: &HeaderMap,
    query: Option<&str>,
    source: Option<std::net::IpAddr>,
) -> (Option<u64>, Option<HeaderValue>) {
    use crate::balance::hash::hash_bytes;
    use crate::config::route::HashKey;
    for key in keys {
        match key {
            HashKey::Header(name) => {
                if let Some(v) = headers.get(name) {
                    return (Some(hash_bytes(v.as_bytes())), None);
                }
            }
            HashKey::SourceIp => {
                // Outbound the client is the application, the same for every request: hash on the
                // unspecified address then, so they all go to one endpoint, as Envoy's would.
                let ip = source.unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
                return (Some(hash_bytes(ip.to_string().as_bytes())), None);
            }
            HashKey::Query(name) => {
                let found = query.into_iter().flat_map(|q| q.split('&')).find_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k == &**name).then_some(v)
                });
                if let Some(v) = found {
                    return (Some(hash_bytes(v.as_bytes())), None);
                }
            }
            HashKey::Cookie { name, path, ttl } => {
                let found = headers
                    .get_all(header::COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(';'))
                    .find_map(|c| {
                        let (k, v) = c.trim().split_once('=')?;
                        (k == &**name).then(|| v.trim_matches('"'))
                    });
                if let Some(v) = found {
                    return (Some(hash_bytes(v.as_bytes())), None);
                }
                if let Some(ttl) = ttl {
                    let value = format!("{:016x}", fastrand::u64(..));
                    let mut cookie = format!("{name}=\"{value}\"");
                    if !ttl.is_zero() {
                        cookie.push_str(&format!("; Max-Age={}", ttl.as_secs()));
                    }
                    if !path.is_empty() {
                        cookie.push_str(&format!("; Path={path}"));
                    }
                    cookie.push_str("; HttpOnly");
                    let set = HeaderValue::from_str(&cookie).ok();
                    return (Some(hash_bytes(value.as_bytes())), set);
                }
            }
        }
    }
    (None, None)
}

/// The name of the cluster `pick_cluster` picked.
fn pick_cluster_name(route: &Route, weighted: Option<usize>) -> &str {
    match (route.forward().map(|a| &a.target), weighted) {
        (Some(Target::Cluster(c)), _) => c.as_str(),
        (Some(Target::Weighted { clusters, .. }), Some(i)) => {
            clusters.get(i).map_or("", |c| c.name.as_str())
        }
        (Some(Target::Weighted { .. }), None) | (None, _) => "",
    }
}

/// The cluster a route sends to, and which of its weighted clusters that was.
fn pick_cluster(route: &Route) -> (&str, Option<usize>) {
    let Some(action) = route.forward() else {
        // Routes that answer themselves never get here (`prepare`).
        return ("", None);
    };
    match &action.target {
        Target::Cluster(c) => (c.as_str(), None),
        Target::Weighted { clusters, total } => {
            let roll = fastrand::u64(0..*total);
            match crate::balance::pick_weighted(clusters, |c| c.weight, roll)
                .and_then(|i| Some((clusters.get(i)?, i)))
            {
                Some((c, i)) => (c.name.as_str(), Some(i)),
                // Unreachable while total > 0 (checked at conversion); fall back to the first cluster.
                None => clusters
                    .first()
                    .map(|c| (c.name.as_str(), Some(0)))
                    .unwrap_or(("", None)),
            }
        }
    }
}

/// Runs the tries of a request under the route's timeout.
async fn forward(
    shared: &Shared,
    cluster: &Cluster,
    route: &Route,
    hash: Option<std::num::NonZeroU64>,
    req: &mut Prepared,
    flags: &mut Flags,
) -> Result<Response<Body>, ProxyError> {
    let tries = async {
        let policy = route.forward().and_then(|a| a.retry.as_ref());
        let retryable_body = matches!(req.body, PreparedBody::Buffered(_));
        let max_tries = 1 + match policy {
            Some(p) if retryable_body => p.num_retries,
            _ => 0,
        };
        // What the request holds against the cluster's policy, boxed and only for a cluster with
        // limits or least request: the default path carries a null pointer, allocates nothing.
        let mut held: Option<Box<Held<'_>>> = None;
        // Circuit breakers: the request's slots, held over every try (given back on return).
        if let Some(l) = cluster.policy.limits.as_deref() {
            let admitted = match l.admit(matches!(req.upstream, Outgoing::H1(_))) {
                Ok(a) => a,
                // Boxed: waiting is rare, and every request's future would carry its size.
                Err(Some(a)) => Box::pin(l.wait_for_connection(a))
                    .await
                    .map_err(|_| overflow(cluster))?,
                Err(None) => return Err(overflow(cluster)),
            };
            held.get_or_insert_with(Box::default).admitted = Some(admitted);
        }
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let p = &cluster.policy;
            let picked = cluster
                .endpoints
                .choose(
                    p.lb,
                    cluster.table.as_deref(),
                    hash.map(u64::from),
                    p.outlier.as_deref(),
                )
                .ok_or_else(|| ProxyError::NoHealthyUpstream {
                    cluster: cluster.name.clone(),
                })?;
            let (index, addr, sidecar) = (picked.index, picked.addr, picked.sidecar);
            if p.lb == crate::balance::Lb::LeastRequest {
                held.get_or_insert_with(Box::default).in_flight =
                    cluster.endpoints.in_flight(index);
            }
            req.endpoint = Some(addr);
            // Mutual TLS to every endpoint, or (auto mTLS) to those with a sidecar.
            let tls = match &cluster.tls {
                Some((tls, always)) if *always || sidecar => Some(tls),
                _ => None,
            };
            let try_ = Try {
                addr,
                tls,
                connect_timeout: cluster.connect_timeout,
                max_requests: cluster.policy.max_requests_per_connection,
                per_try: policy.and_then(|p| p.per_try_timeout),
                last: attempt >= max_tries,
            };
            let result = try_once(shared, req, try_).await;
            if let Some(h) = held.as_mut() {
                h.in_flight = None;
            }
            if let Some(cfg) = cluster.policy.outlier.as_deref() {
                use crate::balance::outlier::Outcome;
                let outcome = match &result {
                    Ok(resp) => Some(Outcome::Response(resp.status().as_u16())),
                    Err(ProxyError::DownstreamBody { .. }) => None,
                    Err(_) => Some(Outcome::LocalFailure),
                };
                if let Some(o) = outcome {
                    cluster.endpoints.report(index, o, cfg);
                }
            }
            let may_retry = attempt < max_tries;
            let retry = match (&result, policy) {
                (Ok(resp), Some(p)) => p.retries_status(resp.status().as_u16()),
                (Err(e), Some(p)) => p.retries_failure(e.retry_class()),
                (_, None) => false,
            };
            // `max_retries`: a retry takes a slot for as long as it runs; none left, no retry (`UO`).
            if retry && may_retry {
                if let (Some(l), Some(h)) = (cluster.policy.limits.as_deref(), held.as_mut()) {
                    h.retry = None;
                    match l.retry() {
                        Some(slot) => h.retry = Some(slot),
                        None => {
                            flags.insert(Flags::UO);
                            return result;
                        }
                    }
                }
            }
            if retry && may_retry {
                tracing::debug!(attempt, endpoint = %addr, "retrying");
                let cap = RETRY_BACKOFF_BASE
                    .saturating_mul(1 << (attempt - 1).min(8))
                    .min(RETRY_BACKOFF_MAX);
                let jitter = fastrand::u64(0..=cap.as_millis() as u64);
                tokio::time::sleep(Duration::from_millis(jitter)).await;
                continue;
            }
            if retry && max_tries > 1 {
                flags.insert(Flags::URX);
            }
            return result;
        }
    };
    match route.forward().and_then(|a| a.timeout) {
        None => tries.await,
        Some(t) => match tokio::time::timeout(t, tries).await {
            Ok(r) => r,
            Err(_) => Err(ProxyError::RouteTimeout),
        },
    }
}

/// What a request holds against its cluster's policy while it runs; each gives back its count on drop.
#[derive(Default)]
struct Held<'a> {
    /// Its circuit breaker slots.
    admitted: Option<crate::balance::limits::Admitted<'a>>,
    /// The retry slot of the retry under way.
    retry: Option<crate::balance::limits::Slot<'a>>,
    /// Its mark on the endpoint of the try under way (least request).
    in_flight: Option<crate::balance::InFlight<'a>>,
}

/// The error of a request a circuit breaker turned away.
fn overflow(cluster: &Cluster) -> ProxyError {
    ProxyError::Overflow {
        cluster: cluster.name.clone(),
    }
}

/// One try's endpoint and limits.
#[derive(Clone, Copy)]
struct Try<'a> {
    addr: std::net::SocketAddr,
    /// Its TLS settings, when the cluster speaks mutual TLS to it.
    tls: Option<&'a weft_http::tls::ClientTls>,
    connect_timeout: Duration,
    /// Requests an HTTP/1.1 connection carries before it is closed (0: no limit).
    max_requests: u32,
    per_try: Option<Duration>,
    /// No try follows: the request's headers move into it instead of being copied.
    last: bool,
}

/// One try: the upstream request is built at once, and the future returned is only the exchange (under
/// the per-try timeout), with no copies of the request held beside it.
fn try_once<'a>(
    shared: &'a Shared,
    req: &mut Prepared,
    t: Try<'a>,
) -> impl std::future::Future<Output = Result<Response<Body>, ProxyError>> + Send + 'a {
    use futures::future::{ready, Either, FutureExt};
    let addr = t.addr;
    let body = match &mut req.body {
        PreparedBody::Buffered(b) => Body::full(b.clone()),
        PreparedBody::Streaming(b) => b.take().unwrap_or_else(Body::empty),
    };
    let upstream = &shared.upstream;
    let send = match &mut req.upstream {
        Outgoing::H1(head) => Either::Right(upstream.send_h1(
            addr,
            t.tls,
            t.connect_timeout,
            t.max_requests,
            head.clone(),
            body,
        )),
        Outgoing::H2 {
            method,
            path_and_query,
            headers,
            authority,
            announce,
        } => {
            let mut r = Request::new(body);
            *r.method_mut() = method.clone();
            *r.version_mut() = Version::HTTP_2;
            *r.headers_mut() = if t.last {
                std::mem::take(headers)
            } else {
                headers.clone()
            };
            // The absolute form: h2 takes `:scheme` and `:authority` from it. All parts are shared
            // bytes, so nothing is formatted or parsed.
            let mut uri = http::uri::Parts::default();
            uri.scheme = Some(Scheme::HTTP);
            uri.authority = Some(authority.clone());
            uri.path_and_query = Some(path_and_query.clone());
            match http::Uri::from_parts(uri) {
                Ok(u) => *r.uri_mut() = u,
                Err(e) => {
                    return Either::Left(ready(Err(ProxyError::BadUpstreamRequest {
                        source: e.into(),
                    })))
                }
            }
            let extra = match (&shared.telemetry, announce) {
                (Some(t), true) => t.own_fields(),
                _ => &NO_FIELDS,
            };
            Either::Left(upstream.send_h2(addr, t.tls, t.connect_timeout, r, extra))
        }
    };
    let timed = match t.per_try {
        None => Either::Left(send.map(Ok::<_, tokio::time::error::Elapsed>)),
        Some(d) => Either::Right(tokio::time::timeout(d, send)),
    };
    Either::Right(timed.map(move |r| match r {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(upstream::Failure::Connect(source))) => {
            Err(ProxyError::UpstreamConnect { addr, source })
        }
        Ok(Err(upstream::Failure::Reset(source))) => {
            Err(ProxyError::UpstreamReset { addr, source })
        }
        Ok(Err(upstream::Failure::RequestBody(source))) => Err(ProxyError::DownstreamBody {
            source: source.into(),
        }),
        Err(_) => Err(ProxyError::PerTryTimeout { addr }),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_of_authorities() {
        let cases: &[(&str, Option<u16>)] = &[
            ("reviews:9080", Some(9080)),
            ("reviews", Some(80)),
            ("10.0.0.1:8080", Some(8080)),
            ("[::1]:9080", Some(9080)),
            ("[::1]", Some(80)),
            ("reviews:http", None),
            ("reviews:99999", None),
        ];
        for (a, want) in cases {
            assert_eq!(port_of(a), *want, "case {a}");
        }
    }

    #[test]
    fn request_ids_are_uuid_v4() {
        let id = uuid_v4();
        assert_eq!(id.len(), 36, "{id}");
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            vec![8, 4, 4, 4, 12],
            "{id}"
        );
        assert!(parts[2].starts_with('4'), "{id}");
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(uuid_v4(), id);
        let (a, b) = (uuid_v4_header(), uuid_v4_header());
        assert_eq!(a.len(), 36);
        assert_ne!(a, b);

        // Every digit but the version is random: each position takes every value it may over many ids.
        let mut seen = [[false; 16]; 36];
        for _ in 0..2000 {
            let id = uuid_v4_ascii();
            for (at, &c) in id.iter().enumerate() {
                if matches!(at, 8 | 13 | 18 | 23) {
                    assert_eq!(c, b'-');
                    continue;
                }
                let digit = (c as char).to_digit(16).expect("a hex digit");
                assert!(!c.is_ascii_uppercase());
                seen[at][digit as usize] = true;
            }
        }
        for (at, values) in seen.iter().enumerate() {
            let n = values.iter().filter(|&&v| v).count();
            let want = match at {
                8 | 13 | 18 | 23 => 0,
                14 => 1, // the version
                19 => 4, // the variant: 8, 9, a, b
                _ => 16,
            };
            assert_eq!(n, want, "digit {at} took {n} values");
        }
    }

    /// The size of the future a function returns, without calling it.
    fn future_size<A, B, C, D, F: FnOnce(A, B, C, D) -> Fut, Fut>(_: &F) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// Every request's future is boxed (and its bytes copied) once, and at 1k req/s its cache lines are
    /// cold; it was 4.2 KB before routing moved out of it and the request stopped being held twice.
    /// Telemetry added 72 bytes (its boxed record, the request's length, the last endpoint for the
    /// access log, the body's observer slot); mutual TLS and authorization 72 more (the peer's principal
    /// for the access line, the upstream TLS settings each attempt carries, the wider error); external
    /// authorization 16 more (the boxed deferred check and the boxed response edits it allows); the
    /// gateway entry 8 more (`Entry` has two variants with a listener name now, so a tag of its own);
    /// DestinationRule traffic policy 48 more (the boxed policy state and boxed hash, each a pointer
    /// that stays null by default, the picked endpoint's index for outlier reports, the hash handed to
    /// the tries, the HTTP/1.1 connection's request limit).
    #[test]
    fn a_request_future_stays_small() {
        let size = future_size(&handle);
        assert!(size <= 2288, "handle's future is {size} bytes");
    }

    #[test]
    fn millisecond_values() {
        for (ms, text) in [(0, "0"), (7, "7"), (10, "10"), (1234, "1234")] {
            assert_eq!(millis_header(ms), text);
        }
        assert_eq!(millis_header(u64::MAX), u64::MAX.to_string().as_str());
    }

    #[test]
    fn slab_values_are_separate_and_survive_their_slab() {
        // Enough values to fill several slabs: each keeps its own bytes after the slab moved on.
        let values: Vec<(String, HeaderValue)> = (0..1000)
            .map(|i| {
                let text = format!("{i:036}");
                let v = slab_value(text.as_bytes());
                (text, v)
            })
            .collect();
        for (text, v) in &values {
            assert_eq!(v, text.as_str());
        }
        let long = "x".repeat(5000);
        assert_eq!(slab_value(long.as_bytes()), long.as_str());
        assert_eq!(slab_value(b"after"), "after");
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        // The names left after stripping.
        let kept = |mut h: HeaderMap| {
            let found = strip_hop_by_hop(&mut h);
            let want = Kept {
                host: h.contains_key(header::HOST),
                request_id: h.contains_key(&X_REQUEST_ID),
                te_trailers: found.te_trailers,
                peer_metadata: found.peer_metadata,
            };
            assert_eq!(found, want, "{h:?}");
            h.keys().map(|k| k.to_string()).collect::<Vec<_>>()
        };
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        assert_eq!(kept(h), vec!["x-keep"]);

        // `Host` and `x-request-id` are reported present (checked in `kept`) when no field goes, and gone
        // when `Connection` names them.
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a"));
        h.insert(X_REQUEST_ID.clone(), HeaderValue::from_static("id"));
        assert_eq!(kept(h.clone()), vec!["host", "x-request-id"]);
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Host, X-Request-Id"),
        );
        assert!(kept(h).is_empty());

        // Each one alone, with no `Connection` header to point at it, goes too.
        for name in HOP_BY_HOP.iter() {
            let mut h = HeaderMap::new();
            h.insert("x-keep", HeaderValue::from_static("1"));
            h.insert(name, HeaderValue::from_static("1"));
            assert_eq!(kept(h), vec!["x-keep"], "{name}");
        }
        // Options that name no field leave the rest; named fields go, over several `Connection` fields,
        // in any case, with all their values.
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Keep-Alive"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        assert_eq!(kept(h), vec!["x-keep"]);
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("close, X-One"));
        h.append(header::CONNECTION, HeaderValue::from_static("x-two ,te"));
        h.append("x-one", HeaderValue::from_static("1"));
        h.append("x-one", HeaderValue::from_static("2"));
        h.insert("x-two", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("secret"),
        );
        h.insert("x-keep", HeaderValue::from_static("1"));
        assert_eq!(kept(h), vec!["x-keep"]);
        // `te: trailers` goes, and is reported for HTTP/2 upstreams; any other TE is not.
        for (te, reported) in [
            ("trailers", true),
            ("Trailers", true),
            ("trailers, deflate", false),
            ("gzip", false),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::TE, HeaderValue::from_static(te));
            assert_eq!(strip_hop_by_hop(&mut h).te_trailers, reported, "{te}");
            assert!(h.is_empty(), "{te}");
        }
        let mut h = HeaderMap::new();
        h.insert("x-keep", HeaderValue::from_static("1"));
        assert!(!strip_hop_by_hop(&mut h).te_trailers);
        // None at all: nothing changes.
        let mut h = HeaderMap::new();
        h.insert("x-keep", HeaderValue::from_static("1"));
        h.insert(header::HOST, HeaderValue::from_static("a"));
        assert_eq!(kept(h), vec!["x-keep", "host"]);
    }
}
