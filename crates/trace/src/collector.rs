//! weftd's trace collector: the HTTP endpoints that feed the [`TraceStore`] and query it, in Zipkin's
//! shape so a console can be pointed at a real Zipkin instead.
//!
//! Ingestion, on both the Zipkin port and the OTLP/HTTP port:
//! - `POST /api/v2/spans`: Zipkin v2 JSON (any content type but protobuf and thrift, so `curl -d` works);
//!   `202 Accepted`;
//! - `POST /v1/traces`: OTLP/HTTP, `application/x-protobuf` or `application/json`; `200` with an empty
//!   `ExportTraceServiceResponse` in the same encoding.
//!
//! Queries, on the Zipkin port (JSON, with `access-control-allow-origin: *` so a console on another
//! port can read them):
//! - `GET /api/v2/services`, `GET /api/v2/spans?serviceName=`, `GET /api/v2/remoteServices?serviceName=`;
//! - `GET /api/v2/traces?serviceName=&remoteServiceName=&spanName=&annotationQuery=&minDuration=&maxDuration=&endTs=&lookback=&limit=`
//!   and Weft's `errorsOnly=true`;
//! - `GET /api/v2/trace/{traceId}`.
//!
//! Bad input is a `400` whose body names what is wrong (OTLP's in a `google.rpc.Status`, as OTLP/HTTP
//! asks); a body over [`MAX_BODY`] is a `413`; a compressed body a `415`. Bodies are read at most
//! [`MAX_CONCURRENT_BODIES`] at a time and decoded off the runtime threads, so memory stays bounded
//! whatever the clients send.

use crate::id::TraceId;
use crate::otlp::{self, pb};
use crate::span::{now_micros, Span};
use crate::store::{Query, TraceStore, DEFAULT_LIMIT, DEFAULT_LOOKBACK_MS};
use crate::zipkin;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::StatusCode;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use prost::Message;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn, Instrument};

/// The largest request body taken (a batch of 512 Istio spans is about 600 KB of JSON).
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// Bodies read and decoded at once; more requests wait their turn (bounds memory at about
/// `MAX_CONCURRENT_BODIES * MAX_BODY` plus what decoding makes of it).
pub const MAX_CONCURRENT_BODIES: usize = 4;
/// Longest a client may take to send a body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a client may take to send a request's head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once per port; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long open connections get to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The collector's counters.
#[derive(Debug, Default)]
pub struct CollectorStats {
    requests: AtomicU64,
    spans: AtomicU64,
    rejected: AtomicU64,
}

impl CollectorStats {
    /// Ingestion requests accepted.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Spans received in accepted requests.
    pub fn spans(&self) -> u64 {
        self.spans.load(Ordering::Relaxed)
    }

    /// Ingestion requests refused (400, 413, 415).
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct Shared {
    store: Arc<TraceStore>,
    stats: Arc<CollectorStats>,
    bodies: Arc<Semaphore>,
    max_body: usize,
}

/// The routes of the OTLP/HTTP port: ingestion only.
pub fn ingest_router(store: Arc<TraceStore>, stats: Arc<CollectorStats>) -> Router {
    ingest_routes().with_state(shared(store, stats, MAX_BODY))
}

/// The routes of the Zipkin port: ingestion and queries.
pub fn zipkin_router(store: Arc<TraceStore>, stats: Arc<CollectorStats>) -> Router {
    zipkin_router_with(store, stats, MAX_BODY)
}

/// [`zipkin_router`] with another body bound (tests use a small one).
pub(crate) fn zipkin_router_with(
    store: Arc<TraceStore>,
    stats: Arc<CollectorStats>,
    max_body: usize,
) -> Router {
    // The ingestion routes of `ingest_routes`, with the query API beside them.
    Router::new()
        .route("/api/v2/spans", get(span_names).post(post_zipkin))
        .route("/v1/traces", post(post_otlp))
        .route("/api/v2/services", get(services))
        .route("/api/v2/remoteServices", get(remote_services))
        .route("/api/v2/traces", get(traces))
        .route("/api/v2/trace/{trace_id}", get(trace))
        .with_state(shared(store, stats, max_body))
}

fn shared(store: Arc<TraceStore>, stats: Arc<CollectorStats>, max_body: usize) -> Shared {
    Shared {
        store,
        stats,
        bodies: Arc::new(Semaphore::new(MAX_CONCURRENT_BODIES)),
        max_body,
    }
}

fn ingest_routes() -> Router<Shared> {
    Router::new()
        .route("/api/v2/spans", post(post_zipkin))
        .route("/v1/traces", post(post_otlp))
}

// === ingestion ===

/// A refused request: status and message.
struct Refusal(StatusCode, String);

impl Refusal {
    fn bad(message: impl Into<String>) -> Refusal {
        Refusal(StatusCode::BAD_REQUEST, message.into())
    }
}

/// Reads a body within the bounds, one of [`MAX_CONCURRENT_BODIES`] at a time, and decodes it off the
/// runtime threads; stores what it decodes.
async fn ingest(
    s: &Shared,
    headers: &HeaderMap,
    body: Body,
    decode: impl FnOnce(&[u8]) -> Result<Vec<Span>, String> + Send + 'static,
) -> Result<(), Refusal> {
    if let Some(enc) = headers.get(CONTENT_ENCODING) {
        if !enc.as_bytes().eq_ignore_ascii_case(b"identity") {
            return Err(Refusal(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "content-encoding {} is not supported; send the body uncompressed",
                    String::from_utf8_lossy(enc.as_bytes())
                ),
            ));
        }
    }
    let too_large = || {
        Refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {} bytes", s.max_body),
        )
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > s.max_body as u64) {
        return Err(too_large());
    }
    let _permit = s
        .bodies
        .acquire()
        .await
        .map_err(|_| Refusal(StatusCode::SERVICE_UNAVAILABLE, "shutting down".into()))?;
    let bytes =
        match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, s.max_body).collect()).await {
            Err(_) => {
                return Err(Refusal(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("request body not received within {BODY_TIMEOUT:?}"),
                ))
            }
            Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
            Ok(Err(e)) => return Err(Refusal::bad(format!("cannot read the request body: {e}"))),
            Ok(Ok(c)) => c.to_bytes(),
        };
    let (store, stats) = (s.store.clone(), s.stats.clone());
    tokio::task::spawn_blocking(move || {
        let spans = decode(&bytes)?;
        // Counted before they are stored: whoever sees the spans sees the request counted.
        stats.requests.fetch_add(1, Ordering::Relaxed);
        stats.spans.fetch_add(spans.len() as u64, Ordering::Relaxed);
        store.insert(spans);
        Ok::<(), String>(())
    })
    .await
    .map_err(|_| Refusal(StatusCode::INTERNAL_SERVER_ERROR, "decoding failed".into()))?
    .map_err(Refusal::bad)
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

async fn post_zipkin(State(s): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let ct = content_type(&headers);
    let r = if ct == "application/x-protobuf" || ct == "application/x-thrift" {
        Err(Refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Zipkin's {ct} encoding is not supported; send v2 JSON (content-type: application/json)"),
        ))
    } else {
        ingest(&s, &headers, body, |b| {
            zipkin::decode(b).map_err(|e| e.to_string())
        })
        .await
    };
    match r {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(Refusal(status, message)) => {
            s.stats.rejected.fetch_add(1, Ordering::Relaxed);
            debug!(%status, %message, "zipkin spans refused");
            text(status, message)
        }
    }
}

async fn post_otlp(State(s): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let ct = content_type(&headers);
    let json = ct == "application/json";
    let r = if json {
        ingest(&s, &headers, body, |b| {
            otlp::decode_json(b).map_err(|e| e.to_string())
        })
        .await
    } else if ct == "application/x-protobuf" {
        ingest(&s, &headers, body, |b| {
            otlp::decode(b).map_err(|e| e.to_string())
        })
        .await
    } else {
        Err(Refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "content-type {ct:?} is not OTLP/HTTP; send application/x-protobuf or application/json"
            ),
        ))
    };
    match r {
        Ok(()) if json => typed(
            StatusCode::OK,
            "application/json",
            Bytes::from_static(b"{}"),
        ),
        Ok(()) => typed(
            StatusCode::OK,
            "application/x-protobuf",
            pb::ExportTraceServiceResponse::default()
                .encode_to_vec()
                .into(),
        ),
        Err(Refusal(status, message)) => {
            s.stats.rejected.fetch_add(1, Ordering::Relaxed);
            debug!(%status, %message, "otlp spans refused");
            // OTLP/HTTP: an error body is a google.rpc.Status in the request's encoding.
            let status_msg = pb::RpcStatus {
                code: grpc_code(status),
                message,
            };
            if json {
                let body =
                    serde_json::json!({"code": status_msg.code, "message": status_msg.message});
                typed(status, "application/json", body.to_string().into())
            } else {
                typed(
                    status,
                    "application/x-protobuf",
                    status_msg.encode_to_vec().into(),
                )
            }
        }
    }
}

/// The gRPC code OTLP pairs with an HTTP status.
fn grpc_code(status: StatusCode) -> i32 {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => 3, // INVALID_ARGUMENT
        StatusCode::PAYLOAD_TOO_LARGE => 8,                                // RESOURCE_EXHAUSTED
        StatusCode::REQUEST_TIMEOUT => 4,                                  // DEADLINE_EXCEEDED
        StatusCode::SERVICE_UNAVAILABLE => 14,                             // UNAVAILABLE
        _ => 13,                                                           // INTERNAL
    }
}

// === queries ===

async fn services(State(s): State<Shared>) -> Response {
    json(&s.store.services())
}

async fn span_names(State(s): State<Shared>, RawQuery(q): RawQuery) -> Response {
    match required_service(q.as_deref()) {
        Ok(name) => json(&s.store.span_names(&name)),
        Err(m) => text(StatusCode::BAD_REQUEST, m),
    }
}

async fn remote_services(State(s): State<Shared>, RawQuery(q): RawQuery) -> Response {
    match required_service(q.as_deref()) {
        Ok(name) => json(&s.store.remote_services(&name)),
        Err(m) => text(StatusCode::BAD_REQUEST, m),
    }
}

fn required_service(q: Option<&str>) -> Result<String, String> {
    for (k, v) in pairs(q.unwrap_or(""))? {
        if k == "serviceName" && !v.is_empty() {
            return Ok(v);
        }
    }
    Err("serviceName is required".into())
}

async fn traces(State(s): State<Shared>, RawQuery(q): RawQuery) -> Response {
    let query = match parse_query(q.as_deref().unwrap_or(""), now_micros() / 1000) {
        Ok(q) => q,
        Err(m) => return text(StatusCode::BAD_REQUEST, m),
    };
    let store = s.store.clone();
    // A scan of every trace, and an encoding of up to `limit` of them: off the runtime threads.
    let body = tokio::task::spawn_blocking(move || {
        let found = store.traces(&query);
        let lists: Vec<zipkin::List<'_>> = found.iter().map(|t| zipkin::List(t)).collect();
        serde_json::to_vec(&lists).unwrap_or_default()
    })
    .await
    .unwrap_or_default();
    json_bytes(body)
}

async fn trace(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    let Some(trace_id) = TraceId::parse_lenient(&id) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("traceId {id:?} is not 16 or 32 hex digits (or is zero)"),
        );
    };
    match s.store.trace(trace_id) {
        Some(spans) => json_bytes(zipkin::encode(&spans)),
        None => text(StatusCode::NOT_FOUND, format!("trace {trace_id} not found")),
    }
}

/// Zipkin's query parameters; unknown ones are ignored, as Zipkin does.
pub fn parse_query(q: &str, now_ms: u64) -> Result<Query, String> {
    let mut out = Query {
        end_ts: now_ms,
        lookback: DEFAULT_LOOKBACK_MS,
        limit: DEFAULT_LIMIT,
        ..Query::default()
    };
    let number = |k: &str, v: &str, unit: &str| {
        v.parse::<u64>()
            .map_err(|_| format!("{k}: {v:?} is not a whole number of {unit}"))
    };
    for (k, v) in pairs(q)? {
        let v = v.as_str();
        match k.as_str() {
            "serviceName" if !v.is_empty() => out.service_name = Some(v.to_string()),
            "remoteServiceName" if !v.is_empty() => out.remote_service_name = Some(v.to_string()),
            "spanName" if !v.is_empty() && v != "all" => out.span_name = Some(v.to_string()),
            "annotationQuery" if !v.is_empty() => {
                out.annotation_query = v
                    .split(" and ")
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(|t| match t.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (t.to_string(), None),
                    })
                    .collect()
            }
            "minDuration" if !v.is_empty() => {
                out.min_duration = Some(number(&k, v, "microseconds")?)
            }
            "maxDuration" if !v.is_empty() => {
                out.max_duration = Some(number(&k, v, "microseconds")?)
            }
            "endTs" if !v.is_empty() => out.end_ts = number(&k, v, "milliseconds")?,
            "lookback" if !v.is_empty() => out.lookback = number(&k, v, "milliseconds")?,
            "limit" if !v.is_empty() => {
                let n = number(&k, v, "traces")?;
                if n == 0 {
                    return Err("limit: must be greater than 0".into());
                }
                out.limit = usize::try_from(n).unwrap_or(usize::MAX);
            }
            "errorsOnly" => {
                out.errors_only = match v {
                    "true" => true,
                    "false" | "" => false,
                    _ => return Err(format!("errorsOnly: {v:?} is not true or false")),
                }
            }
            _ => {}
        }
    }
    if let (Some(min), Some(max)) = (out.min_duration, out.max_duration) {
        if min > max {
            return Err(format!(
                "minDuration ({min}) is greater than maxDuration ({max})"
            ));
        }
    }
    Ok(out)
}

/// A query string's pairs, percent-decoded (`+` is a space).
fn pairs(q: &str) -> Result<Vec<(String, String)>, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let byte = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("{s:?}: bad percent-encoding"))?;
                out.push(byte);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?}: not UTF-8"))
}

fn text(status: StatusCode, message: String) -> Response {
    typed(status, "text/plain; charset=utf-8", Bytes::from(message))
}

fn json<T: serde::Serialize>(v: &T) -> Response {
    json_bytes(serde_json::to_vec(v).unwrap_or_default())
}

fn json_bytes(body: Vec<u8>) -> Response {
    let mut r = typed(StatusCode::OK, "application/json", Bytes::from(body));
    r.headers_mut().insert(
        http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

fn typed(status: StatusCode, content_type: &'static str, body: Bytes) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

// === serving ===

/// Zipkin's port: its collector and query API.
pub const ZIPKIN_PORT: u16 = 9411;
/// OpenTelemetry's OTLP/HTTP port.
pub const OTLP_HTTP_PORT: u16 = 4318;

/// A collector port's flag value: an address to listen on, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Listen {
    /// Not served.
    Off,
    /// Served on this address.
    At(SocketAddr),
}

impl Listen {
    /// The address, when on.
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            Listen::Off => None,
            Listen::At(a) => Some(a),
        }
    }
}

impl std::str::FromStr for Listen {
    type Err = String;

    /// `off`, or an address such as `127.0.0.1:9411` or `[::1]:9411`.
    fn from_str(s: &str) -> Result<Listen, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Listen::Off);
        }
        s.parse()
            .map(Listen::At)
            .map_err(|_| format!("{s:?} is not an address (ip:port) or off"))
    }
}

/// Which listener a [`BindError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// The Zipkin port (collector and queries).
    Zipkin,
    /// The OTLP/HTTP port (collector).
    OtlpHttp,
}

impl std::fmt::Display for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Listener::Zipkin => "zipkin",
            Listener::OtlpHttp => "otlp-http",
        })
    }
}

/// A collector port could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind the {which} trace collector on {addr}")]
pub struct BindError {
    /// Which one.
    pub which: Listener,
    /// Where.
    pub addr: SocketAddr,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// The collector's bound ports and the store they feed; [`Collector::serve`] runs them.
pub struct Collector {
    zipkin: Option<TcpListener>,
    otlp: Option<TcpListener>,
    store: Arc<TraceStore>,
    stats: Arc<CollectorStats>,
}

impl Collector {
    /// Binds the Zipkin port (ingestion and queries) and the OTLP/HTTP port (ingestion), each when
    /// given, both feeding `store`.
    pub async fn bind(
        zipkin: Option<SocketAddr>,
        otlp: Option<SocketAddr>,
        store: Arc<TraceStore>,
    ) -> Result<Collector, BindError> {
        let bind = |which, addr: Option<SocketAddr>| async move {
            match addr {
                None => Ok(None),
                Some(addr) => TcpListener::bind(addr)
                    .await
                    .map(Some)
                    .map_err(|source| BindError {
                        which,
                        addr,
                        source,
                    }),
            }
        };
        Ok(Collector {
            zipkin: bind(Listener::Zipkin, zipkin).await?,
            otlp: bind(Listener::OtlpHttp, otlp).await?,
            store,
            stats: Arc::default(),
        })
    }

    /// The Zipkin port's address, when bound.
    pub fn zipkin_addr(&self) -> Option<SocketAddr> {
        self.zipkin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The OTLP/HTTP port's address, when bound.
    pub fn otlp_addr(&self) -> Option<SocketAddr> {
        self.otlp.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The store.
    pub fn store(&self) -> &Arc<TraceStore> {
        &self.store
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<CollectorStats> {
        &self.stats
    }

    /// Serves until `shutdown` resolves, then gives open connections [`SHUTDOWN_GRACE`] to finish.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut ports = JoinSet::new();
        if let Some(l) = self.zipkin {
            info!(address = ?l.local_addr().ok(), bounds = ?self.store.bounds(), "zipkin trace collector and query API serving");
            let router = zipkin_router(self.store.clone(), self.stats.clone());
            ports.spawn(
                serve(l, router, stop_rx.clone())
                    .instrument(tracing::info_span!("trace_collector", port = "zipkin")),
            );
        }
        if let Some(l) = self.otlp {
            info!(address = ?l.local_addr().ok(), "otlp-http trace collector serving");
            let router = ingest_router(self.store.clone(), self.stats.clone());
            ports.spawn(
                serve(l, router, stop_rx.clone())
                    .instrument(tracing::info_span!("trace_collector", port = "otlp-http")),
            );
        }
        shutdown.await;
        let _ = stop_tx.send(true);
        while ports.join_next().await.is_some() {}
    }
}

/// Serves `router` on `listener` over HTTP/1.1 until `stop` turns true.
pub async fn serve(listener: TcpListener, router: Router, mut stop: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) if conns.len() < MAX_CONNECTIONS => {
                    conns.spawn(connection(stream, router.clone(), stop.clone()));
                }
                Ok(_) => debug!("too many connections; one closed"),
                Err(e) => {
                    // Out of descriptors, most likely: let connections close before trying again.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = stopped(&mut stop) => break,
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        conns.abort_all();
    }
}

/// Resolves once `stop` is true or its sender is gone; cancellation-safe (it only observes).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn connection(stream: TcpStream, router: Router, mut stop: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let mut router = router.clone();
        // The router is always ready; its error type is `Infallible`.
        tower_service::Service::call(&mut router, req)
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => if let Err(e) = r {
            debug!(error = %e, "connection ended with an error");
        },
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

#[cfg(test)]
mod tests;
