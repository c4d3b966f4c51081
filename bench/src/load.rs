//! The load generator: five workloads, open loop at a fixed rate (with coordinated-omission correction,
//! see [`pacer`]) or closed loop as fast as possible, on one current-thread tokio runtime so that it costs
//! one core at most (it shares CPU 0 with the upstream).
//!
//! Workers are tasks; each owns one client (one HTTP/1.1 connection, a handle on a shared h2c connection,
//! a fresh connection per request, or one TCP stream) and its own histogram, merged at the end.

pub mod pacer;

use crate::proto;
use crate::stats::{round1, Latencies};
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// How long one request may take before it counts as an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after the schedule ends queued requests may still finish.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// Bytes per write in the TCP stream workload; one write is one "request" in the results.
pub const TCP_CHUNK: usize = 16 * 1024;
/// Bytes written on each connection of the `tcp-new-conn` workload.
pub const TCP_NEW_CONN_SIZE: usize = 1024;
/// Size of the gRPC request message (the response is [`proto::BODY_SIZE`]).
const GRPC_REQUEST_SIZE: usize = 128;

/// What traffic to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Workload {
    /// HTTP/1.1 GETs over keep-alive connections, 1 KiB responses.
    #[serde(rename = "http1-keepalive-1k")]
    Http1KeepAlive,
    /// HTTP/2 (h2c) GETs, many concurrent streams on few connections.
    #[serde(rename = "http2-streams")]
    Http2Streams,
    /// gRPC unary calls (HTTP/2 POST, length-prefixed messages, `grpc-status` checked).
    #[serde(rename = "grpc-unary")]
    GrpcUnary,
    /// Opaque TCP: write as fast as possible; throughput in bytes.
    #[serde(rename = "tcp-stream")]
    TcpStream,
    /// HTTP/1.1, a new TCP connection per request.
    #[serde(rename = "http1-new-conn")]
    Http1NewConn,
    /// Opaque TCP, a new connection per exchange: connect, write [`TCP_NEW_CONN_SIZE`] bytes, half-close,
    /// read until the far end closes. A TCP proxy opens a new upstream connection for each, so between
    /// two mesh hops every exchange is one TLS handshake: what the handshake costs.
    #[serde(rename = "tcp-new-conn")]
    TcpNewConn,
}

impl Workload {
    /// Every workload, in report order.
    pub const ALL: [Workload; 6] = [
        Workload::Http1KeepAlive,
        Workload::Http2Streams,
        Workload::GrpcUnary,
        Workload::TcpStream,
        Workload::Http1NewConn,
        Workload::TcpNewConn,
    ];

    /// Its name on the command line and in the results.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Http1KeepAlive => "http1-keepalive-1k",
            Workload::Http2Streams => "http2-streams",
            Workload::GrpcUnary => "grpc-unary",
            Workload::TcpStream => "tcp-stream",
            Workload::Http1NewConn => "http1-new-conn",
            Workload::TcpNewConn => "tcp-new-conn",
        }
    }

    /// Opaque TCP on the wire (the target's TCP port).
    pub fn is_tcp(self) -> bool {
        matches!(self, Workload::TcpStream | Workload::TcpNewConn)
    }

    /// HTTP/2 on the wire.
    pub fn is_h2(self) -> bool {
        matches!(self, Workload::Http2Streams | Workload::GrpcUnary)
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Workload::ALL.iter().map(|w| w.name()).collect();
                format!("unknown workload {s:?}; one of {}", names.join(", "))
            })
    }
}

/// Offered load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rate {
    /// Open loop at this many requests per second.
    Fixed(u32),
    /// Closed loop, as fast as the connections go.
    Max,
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rate::Fixed(n) => write!(f, "{n}"),
            Rate::Max => f.write_str("max"),
        }
    }
}

impl std::str::FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "max" {
            return Ok(Rate::Max);
        }
        match s.parse::<u32>() {
            Ok(n) if n > 0 => Ok(Rate::Fixed(n)),
            _ => Err(format!(
                "rate {s:?} is neither a positive number nor \"max\""
            )),
        }
    }
}

impl Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Rate::Fixed(n) => s.serialize_u32(*n),
            Rate::Max => s.serialize_str("max"),
        }
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => s.parse().map_err(serde::de::Error::custom),
            serde_json::Value::Number(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Rate::Fixed)
                .ok_or_else(|| serde::de::Error::custom("rate out of range")),
            other => Err(serde::de::Error::custom(format!("bad rate {other}"))),
        }
    }
}

/// One run of the load generator.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Where to connect.
    pub target: SocketAddr,
    /// `Host` (HTTP/1.1) or `:authority` (HTTP/2); the target address when absent.
    pub host: Option<String>,
    /// What to send.
    pub workload: Workload,
    /// How fast.
    pub rate: Rate,
    /// For how long.
    pub duration: Duration,
    /// TCP connections (HTTP/1.1, TCP) or h2c connections (HTTP/2); for new-connection, the most
    /// requests in flight.
    pub connections: usize,
    /// Concurrent streams per h2c connection.
    pub streams: usize,
}

/// What `weft-bench load --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadResult {
    /// P50 latency, µs.
    pub p50_us: f64,
    /// P90 latency, µs.
    pub p90_us: f64,
    /// P99 latency, µs.
    pub p99_us: f64,
    /// P99.9 latency, µs.
    pub p999_us: f64,
    /// Successful requests per second over the run.
    pub rps: f64,
    /// Failed requests (status, gRPC status, I/O, timeout, or never sent in time).
    pub errors: u64,
    /// Successful requests.
    pub requests: u64,
    /// Response body bytes received (TCP: bytes written).
    pub bytes: u64,
    /// Length of the measured interval, seconds.
    pub duration_s: f64,
    /// The latency histogram as (nanoseconds, count) pairs, when asked for (`--histogram`): the
    /// orchestrator merges the slices of one target's run with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub histogram: Vec<(u64, u64)>,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `tcp-stream` is closed loop only.
    #[error("workload tcp-stream measures throughput only: use --rate max")]
    TcpNeedsMax,
    /// No worker could connect.
    #[error("cannot connect to {addr}")]
    Connect {
        /// Target.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The pacer thread did not start.
    #[error("cannot start the pacer thread")]
    Pacer(#[source] std::io::Error),
}

/// One worker's tally.
#[derive(Debug, Default)]
struct Tally {
    latencies: Latencies,
    requests: u64,
    errors: u64,
    bytes: u64,
}

/// Why one request failed (only counted; kept for the first-error message).
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("i/o")]
    Io(#[from] std::io::Error),
    #[error("http")]
    Http(#[from] hyper::Error),
    #[error("status {0}")]
    Status(StatusCode),
    #[error("grpc-status {0:?}")]
    Grpc(Option<String>),
    #[error("timeout")]
    Timeout,
}

/// A connection-owning client for one worker.
enum Client {
    H1 {
        addr: SocketAddr,
        send: Option<http1::SendRequest<Full<Bytes>>>,
    },
    H2 {
        addr: SocketAddr,
        send: http2::SendRequest<Full<Bytes>>,
    },
    NewConn {
        addr: SocketAddr,
    },
    Tcp {
        stream: TcpStream,
    },
    TcpNewConn {
        addr: SocketAddr,
    },
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

async fn h1_handshake(addr: SocketAddr) -> Result<http1::SendRequest<Full<Bytes>>, RequestError> {
    let io = TokioIo::new(connect(addr).await?);
    let (send, conn) = http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

async fn h2_handshake(addr: SocketAddr) -> Result<http2::SendRequest<Full<Bytes>>, RequestError> {
    let io = TokioIo::new(connect(addr).await?);
    let (send, conn) = http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .handshake(io)
        .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// The requests a workload sends, built once.
struct RequestTemplate {
    workload: Workload,
    authority: String,
    grpc_body: Bytes,
}

impl RequestTemplate {
    fn new(cfg: &LoadConfig) -> RequestTemplate {
        RequestTemplate {
            workload: cfg.workload,
            authority: cfg.host.clone().unwrap_or_else(|| cfg.target.to_string()),
            grpc_body: proto::grpc_frame(&[b'q'; GRPC_REQUEST_SIZE]),
        }
    }

    fn build(&self) -> Request<Full<Bytes>> {
        let b = Request::builder();
        let b = match self.workload {
            Workload::GrpcUnary => b
                .method(Method::POST)
                .uri(format!("http://{}{}", self.authority, proto::GRPC_PATH))
                .header(header::CONTENT_TYPE, "application/grpc")
                .header(header::TE, "trailers"),
            Workload::Http2Streams => b.uri(format!("http://{}/", self.authority)),
            // HTTP/1.1: origin form and a Host header, as a client of an explicit proxy that routes by
            // Host (weft-proxy, Istio's outbound) sends it.
            _ => b.uri("/").header(header::HOST, &self.authority),
        };
        let b = if self.workload == Workload::Http1NewConn {
            b.header(header::CONNECTION, "close")
        } else {
            b
        };
        let body = if self.workload == Workload::GrpcUnary {
            Full::new(self.grpc_body.clone())
        } else {
            Full::new(Bytes::new())
        };
        b.body(body).expect("static request parts are valid")
    }
}

impl Client {
    async fn open(
        cfg: &LoadConfig,
        shared_h2: Option<http2::SendRequest<Full<Bytes>>>,
    ) -> Result<Client, RequestError> {
        let addr = cfg.target;
        Ok(match cfg.workload {
            Workload::Http1KeepAlive => Client::H1 {
                addr,
                send: Some(h1_handshake(addr).await?),
            },
            Workload::Http2Streams | Workload::GrpcUnary => Client::H2 {
                addr,
                send: match shared_h2 {
                    Some(s) => s,
                    None => h2_handshake(addr).await?,
                },
            },
            Workload::Http1NewConn => Client::NewConn { addr },
            Workload::TcpStream => Client::Tcp {
                stream: connect(addr).await?,
            },
            Workload::TcpNewConn => Client::TcpNewConn { addr },
        })
    }

    /// Sends one request (TCP: one chunk) and returns the bytes it moved.
    async fn one(&mut self, tpl: &RequestTemplate, chunk: &[u8]) -> Result<u64, RequestError> {
        match self {
            Client::H1 { addr, send } => {
                let mut s = match send.take() {
                    Some(s) if s.is_ready() => s,
                    _ => h1_handshake(*addr).await?,
                };
                s.ready().await?;
                let resp = s.send_request(tpl.build()).await?;
                let n = read_http(resp, tpl.workload).await?;
                *send = Some(s);
                Ok(n)
            }
            Client::H2 { addr, send } => {
                if send.is_closed() {
                    *send = h2_handshake(*addr).await?;
                }
                send.ready().await?;
                let resp = send.send_request(tpl.build()).await?;
                read_http(resp, tpl.workload).await
            }
            Client::NewConn { addr } => {
                let mut s = h1_handshake(*addr).await?;
                s.ready().await?;
                let resp = s.send_request(tpl.build()).await?;
                read_http(resp, tpl.workload).await
            }
            Client::Tcp { stream } => {
                stream.write_all(chunk).await?;
                Ok(chunk.len() as u64)
            }
            Client::TcpNewConn { addr } => {
                let mut s = connect(*addr).await?;
                let msg = chunk.get(..TCP_NEW_CONN_SIZE).unwrap_or(chunk);
                s.write_all(msg).await?;
                s.shutdown().await?;
                // The sink closes when it reads our end; the proxies pass the close back.
                let mut buf = [0u8; 256];
                while s.read(&mut buf).await? > 0 {}
                Ok(msg.len() as u64)
            }
        }
    }
}

async fn read_http(
    resp: http::Response<hyper::body::Incoming>,
    workload: Workload,
) -> Result<u64, RequestError> {
    let status = resp.status();
    let header_grpc = resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let collected = resp.into_body().collect().await?;
    let trailer_grpc = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let n = collected.to_bytes().len() as u64;
    if status != StatusCode::OK {
        return Err(RequestError::Status(status));
    }
    if workload == Workload::GrpcUnary {
        let grpc = trailer_grpc.or(header_grpc);
        if grpc.as_deref() != Some("0") {
            return Err(RequestError::Grpc(grpc));
        }
    }
    Ok(n)
}

/// Runs one request with the timeout and tallies it.
async fn tally_one(
    client: &mut Client,
    tpl: &RequestTemplate,
    chunk: &[u8],
    tally: &mut Tally,
    first_error: &mut Option<String>,
) -> Instant {
    let r = tokio::time::timeout(REQUEST_TIMEOUT, client.one(tpl, chunk))
        .await
        .unwrap_or(Err(RequestError::Timeout));
    let done = Instant::now();
    match r {
        Ok(n) => {
            tally.requests += 1;
            tally.bytes += n;
        }
        Err(e) => {
            tally.errors += 1;
            if first_error.is_none() {
                *first_error = Some(format!("{e}: {:?}", std::error::Error::source(&e)));
            }
            // Do not spin on a dead target.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    done
}

/// Runs a workload and returns its figures. Connections are opened before the clock starts.
pub async fn run(cfg: &LoadConfig) -> Result<LoadResult, Error> {
    if cfg.workload == Workload::TcpStream && cfg.rate != Rate::Max {
        return Err(Error::TcpNeedsMax);
    }
    let connections = cfg.connections.max(1);
    let workers = if cfg.workload.is_h2() {
        connections * cfg.streams.max(1)
    } else {
        connections
    };
    // h2c connections shared by the workers (HTTP/2's point: many streams, few connections).
    let mut shared = Vec::new();
    if cfg.workload.is_h2() {
        for _ in 0..connections {
            shared.push(
                h2_handshake(cfg.target)
                    .await
                    .map_err(|e| connect_error(cfg, e))?,
            );
        }
    }
    let mut clients = Vec::with_capacity(workers);
    for k in 0..workers {
        let c = Client::open(cfg, shared.get(k % connections.max(1)).cloned())
            .await
            .map_err(|e| connect_error(cfg, e))?;
        clients.push(c);
    }
    drop(shared);
    let tpl = Arc::new(RequestTemplate::new(cfg));
    let chunk: Arc<[u8]> = vec![b'x'; TCP_CHUNK].into();
    // One unmeasured request per worker: the first exchange on a connection (HTTP/2 settings, the
    // target's own upstream connection) is not what a run at steady state measures.
    for c in &mut clients {
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, c.one(&tpl, &chunk)).await;
    }
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));

    let start = Instant::now();
    let end = start + cfg.duration;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    let mut pacer = None;
    match cfg.rate {
        Rate::Max => {
            for mut client in clients {
                let tpl = tpl.clone();
                let chunk = chunk.clone();
                let fe = first_error.clone();
                tasks.spawn(async move {
                    let mut tally = Tally::default();
                    let mut err = None;
                    while Instant::now() < end {
                        let sent = Instant::now();
                        let ok_before = tally.requests;
                        let done = tally_one(&mut client, &tpl, &chunk, &mut tally, &mut err).await;
                        if tally.requests > ok_before {
                            tally.latencies.record(done - sent);
                        }
                    }
                    note_error(&fe, err);
                    tally
                });
            }
        }
        Rate::Fixed(rate) => {
            let mut senders = Vec::with_capacity(clients.len());
            for mut client in clients {
                let (tx, mut rx) = mpsc::unbounded_channel::<pacer::Ticket>();
                senders.push(tx);
                let tpl = tpl.clone();
                let chunk = chunk.clone();
                let fe = first_error.clone();
                let hard_end = end + DRAIN_GRACE;
                tasks.spawn(async move {
                    let mut tally = Tally::default();
                    let mut err = None;
                    while let Some(ticket) = rx.recv().await {
                        if Instant::now() > hard_end {
                            // Still queued long after the run: the target could not keep up.
                            tally.errors += 1 + drain_count(&mut rx);
                            break;
                        }
                        let ok_before = tally.requests;
                        let done = tally_one(&mut client, &tpl, &chunk, &mut tally, &mut err).await;
                        if tally.requests > ok_before {
                            tally
                                .latencies
                                .record(pacer::corrected_latency(ticket, done));
                        }
                    }
                    note_error(&fe, err);
                    tally
                });
            }
            let schedule = pacer::Schedule {
                start,
                rate,
                duration: cfg.duration,
            };
            pacer = Some(pacer::spawn(schedule, senders, stop.clone()).map_err(Error::Pacer)?);
        }
    }
    let mut total = Tally::default();
    while let Some(r) = tasks.join_next().await {
        if let Ok(t) = r {
            total.latencies.merge(&t.latencies);
            total.requests += t.requests;
            total.errors += t.errors;
            total.bytes += t.bytes;
        }
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(p) = pacer {
        let _ = tokio::task::spawn_blocking(move || p.join()).await;
    }
    let measured = match cfg.rate {
        // Open loop: the schedule's length is the interval the offered load covers.
        Rate::Fixed(_) => cfg.duration,
        Rate::Max => start.elapsed(),
    };
    if let Some(e) = first_error.lock().ok().and_then(|g| g.clone()) {
        eprintln!("weft-bench load: first error: {e}");
    }
    let p = total.latencies.summary();
    Ok(LoadResult {
        p50_us: p.p50_us,
        p90_us: p.p90_us,
        p99_us: p.p99_us,
        p999_us: p.p999_us,
        rps: round1(total.requests as f64 / measured.as_secs_f64().max(1e-9)),
        errors: total.errors,
        requests: total.requests,
        bytes: total.bytes,
        duration_s: (measured.as_secs_f64() * 1000.0).round() / 1000.0,
        histogram: total.latencies.counts(),
    })
}

fn drain_count(rx: &mut mpsc::UnboundedReceiver<pacer::Ticket>) -> u64 {
    let mut n = 0;
    while rx.try_recv().is_ok() {
        n += 1;
    }
    n
}

fn note_error(slot: &std::sync::Mutex<Option<String>>, err: Option<String>) {
    if let (Some(e), Ok(mut g)) = (err, slot.lock()) {
        if g.is_none() {
            *g = Some(e);
        }
    }
}

fn connect_error(cfg: &LoadConfig, e: RequestError) -> Error {
    let source = match e {
        RequestError::Io(e) => e,
        other => std::io::Error::other(other.to_string()),
    };
    Error::Connect {
        addr: cfg.target,
        source,
    }
}

/// Sends one request of a workload (TCP: connects and writes a chunk); for readiness checks.
pub async fn probe(
    target: SocketAddr,
    host: Option<String>,
    workload: Workload,
) -> anyhow::Result<()> {
    let cfg = LoadConfig {
        target,
        host,
        workload,
        rate: Rate::Max,
        duration: Duration::ZERO,
        connections: 1,
        streams: 1,
    };
    let tpl = RequestTemplate::new(&cfg);
    let chunk = vec![b'x'; 1024];
    let attempt = async {
        let mut c = Client::open(&cfg, None).await?;
        c.one(&tpl, &chunk).await
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, attempt).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(anyhow::anyhow!(
            "{workload} probe of {target}: {e} ({:?})",
            std::error::Error::source(&e)
        )),
        Err(_) => Err(anyhow::anyhow!("{workload} probe of {target}: timeout")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for w in Workload::ALL {
            assert_eq!(w.name().parse::<Workload>(), Ok(w));
            assert_eq!(
                serde_json::to_value(w).expect("ser"),
                serde_json::json!(w.name())
            );
        }
        assert!("http3".parse::<Workload>().is_err());
    }

    #[test]
    fn rates_parse_and_serialize() {
        let cases = [
            ("1000", Some(Rate::Fixed(1000))),
            ("max", Some(Rate::Max)),
            ("0", None),
            ("fast", None),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<Rate>().ok(), want, "{s}");
        }
        assert_eq!(
            serde_json::to_value(Rate::Fixed(5000)).expect("ser"),
            serde_json::json!(5000)
        );
        assert_eq!(
            serde_json::to_value(Rate::Max).expect("ser"),
            serde_json::json!("max")
        );
        let back: Rate = serde_json::from_value(serde_json::json!("max")).expect("de");
        assert_eq!(back, Rate::Max);
    }

    #[test]
    fn load_result_has_the_published_keys() {
        let r = LoadResult {
            p50_us: 1.0,
            p90_us: 2.0,
            p99_us: 3.0,
            p999_us: 4.0,
            rps: 5.0,
            errors: 0,
            requests: 6,
            bytes: 7,
            duration_s: 1.0,
            histogram: Vec::new(),
        };
        let v = serde_json::to_value(&r).expect("ser");
        for k in [
            "p50_us", "p90_us", "p99_us", "p999_us", "rps", "errors", "requests", "bytes",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
    }

    #[test]
    fn requests_carry_host_and_grpc_framing() {
        let mut cfg = LoadConfig {
            target: "127.0.0.1:1".parse().expect("addr"),
            host: Some("upstream:8080".into()),
            workload: Workload::Http1KeepAlive,
            rate: Rate::Max,
            duration: Duration::ZERO,
            connections: 1,
            streams: 1,
        };
        let r = RequestTemplate::new(&cfg).build();
        assert_eq!(r.headers()[header::HOST], "upstream:8080");
        assert_eq!(r.uri(), "/");
        cfg.workload = Workload::GrpcUnary;
        let r = RequestTemplate::new(&cfg).build();
        assert_eq!(r.method(), Method::POST);
        assert_eq!(r.uri(), "http://upstream:8080/weft.bench.Echo/Unary");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/grpc");
        cfg.workload = Workload::Http1NewConn;
        cfg.host = None;
        let r = RequestTemplate::new(&cfg).build();
        assert_eq!(r.headers()[header::HOST], "127.0.0.1:1");
        assert_eq!(r.headers()[header::CONNECTION], "close");
    }
}
