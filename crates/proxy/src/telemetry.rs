//! Istio's standard metrics from every sidecar (`SPEC.md` §3.1): each request is recorded once it has
//! ended, by the client's sidecar as `reporter="source"` and by the server's as
//! `reporter="destination"`, with the labels of both workloads (learned by the metadata exchange of
//! [`peer`]) and of the destination service. Served in Prometheus's text format on the stats port
//! (`--stats-port`, Istio's 15090, `/stats/prometheus`) and on the admin port.
//!
//! On the request path: the peer's header is looked up by its bytes, the own headers are shared
//! values cloned, and the response body carries a [`Pending`] record (one allocation) that is written
//! when the body ends: no lock once a label set exists (see [`metrics`]).

pub mod access_log;
pub mod metrics;
pub mod overrides;
pub mod peer;
pub mod spans;

use crate::config::FastMap;
use crate::error::Flags;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::HeaderMap;
use metrics::{Key, Metrics, Observation, PeerRef, Principal, Protocol, Reporter, Security};
use peer::{OwnMetadata, Peer, Peers, UNKNOWN};
use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;
use weft_xds::node::ProxyIdentity;

/// The default port of Istio's Prometheus stats (Envoy's `/stats/prometheus` in a sidecar).
pub const DEFAULT_STATS_PORT: &str = "15090";
/// The content type of the text the stats port serves (OpenMetrics text, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Inbound services inferred from authorities, kept at most.
const MAX_INBOUND_SERVICES: usize = 1024;

/// A destination service as the metric labels name it.
#[derive(Debug, Clone)]
pub struct Service {
    /// `destination_service`: the host.
    pub host: String,
    /// `destination_service_name`.
    pub name: String,
    /// `destination_service_namespace`.
    pub namespace: String,
    /// The host's hash, made once: hashing the host's bytes was a fifth of recording a request.
    hash: u64,
}

// Compared and hashed by host: clusters are rebuilt with each config, and their services must land on
// the same series.
impl PartialEq for Service {
    fn eq(&self, other: &Self) -> bool {
        self.host == other.host
    }
}
impl Eq for Service {}
impl Hash for Service {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash)
    }
}

impl Service {
    /// The service `host`, named `name` in `namespace`.
    pub fn new(host: String, name: String, namespace: String) -> Service {
        use std::hash::BuildHasher as _;
        let hash = foldhash::fast::FixedState::default().hash_one(host.as_bytes());
        Service {
            host,
            name,
            namespace,
            hash,
        }
    }

    /// A service of which nothing is known.
    pub fn unknown() -> Service {
        Service::new(UNKNOWN.into(), UNKNOWN.into(), UNKNOWN.into())
    }

    /// The service of a host: `name.namespace.svc.<domain>` gives both; another host (a ServiceEntry's)
    /// is its own name, in `namespace` when given.
    pub fn of_host(host: &str, namespace: Option<&str>) -> Service {
        let mut parts = host.split('.');
        if let (Some(name), Some(ns), Some("svc")) = (parts.next(), parts.next(), parts.next()) {
            return Service::new(host.to_string(), name.to_string(), ns.to_string());
        }
        Service::new(
            host.to_string(),
            host.to_string(),
            namespace.unwrap_or(UNKNOWN).to_string(),
        )
    }

    /// The service an outbound cluster sends to, from Istio's cluster name
    /// (`outbound|<port>|<subset>|<host>`); `None` for other names.
    pub fn of_cluster(name: &str) -> Option<Service> {
        let host = name.strip_prefix("outbound|")?.splitn(3, '|').nth(2)?;
        (!host.is_empty()).then(|| Service::of_host(host, None))
    }
}

/// A map read with no lock, copied on write under a mutex, with a bound on its size.
#[derive(Debug)]
pub struct Interner<K, V> {
    map: ArcSwap<FastMap<K, V>>,
    write: Mutex<()>,
    max: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> Interner<K, V> {
    /// An empty map of at most `max` entries.
    pub fn new(max: usize) -> Self {
        Interner {
            map: ArcSwap::from_pointee(FastMap::default()),
            write: Mutex::new(()),
            max,
        }
    }

    /// The value of `k`.
    pub fn get<Q>(&self, k: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.load().get(k).cloned()
    }

    /// Adds `k` unless it is there; returns the value kept for `k`, or `None` when the map is full.
    pub fn insert(&self, k: K, v: V) -> Option<V> {
        // A poisoned lock only means another insert panicked; the map itself is always whole.
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.map.load();
        if let Some(v) = current.get(&k) {
            return Some(v.clone());
        }
        if current.len() >= self.max {
            return None;
        }
        let mut next = FastMap::clone(&current);
        next.insert(k, v.clone());
        self.map.store(Arc::new(next));
        Some(v)
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.map.load().len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole map as it is now.
    pub fn snapshot(&self) -> Arc<FastMap<K, V>> {
        self.map.load_full()
    }
}

/// One proxy's telemetry: who it is, what it sends its peers, whom it has met, and its metrics.
#[derive(Debug)]
pub struct Telemetry {
    own: OwnMetadata,
    namespace: String,
    peers: Peers,
    inbound_services: Interner<Bytes, Arc<Service>>,
    unknown_service: Arc<Service>,
    /// The SPIFFE IDs met on connections, one allocation each (see [`Telemetry::principal`]).
    principals: Interner<Arc<str>, Principal>,
    /// The HTTP metrics.
    pub metrics: Metrics,
    /// What every span says about this proxy.
    pub trace_tags: spans::TraceTags,
    /// The span exporters, one per collector (provider and URL), started when first needed.
    exporters: Mutex<Vec<Collecting>>,
    /// The proxy's environment, read at startup, for tracing's environment custom tags.
    environment: Environment,
}

/// Environment variables, which `Debug` does not print (they may hold secrets).
#[derive(Default, Clone)]
pub struct Environment(pub std::collections::BTreeMap<String, String>);

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} variables", self.0.len())
    }
}

/// One span exporter and what it sends to.
struct Collecting {
    provider: weft_trace::exporter::Provider,
    url: String,
    reporter: weft_trace::Reporter,
    _exporter: weft_trace::Exporter,
}

impl std::fmt::Debug for Collecting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collecting")
            .field("provider", &self.provider)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Telemetry of the proxy of `identity`, in the cluster `cluster`.
    pub fn new(identity: &ProxyIdentity, cluster: &str) -> Telemetry {
        let own = Arc::new(Peer::new(
            &identity.workload,
            &identity.namespace,
            &identity.labels,
            cluster,
        ));
        let trace_tags = spans::TraceTags {
            proxy: weft_trace::ProxyTags {
                node_id: identity.node_id().into(),
                zone: "".into(),
                mesh_id: "cluster.local".into(),
                namespace: identity.namespace.clone().into(),
                canonical_service: own.canonical_service.clone().into(),
                canonical_revision: own.canonical_revision.clone().into(),
            },
            service: format!("{}.{}", own.canonical_service, identity.namespace).into(),
        };
        Telemetry {
            trace_tags,
            exporters: Mutex::new(Vec::new()),
            own: OwnMetadata::new(identity, cluster),
            namespace: identity.namespace.clone(),
            peers: Peers::default(),
            inbound_services: Interner::new(MAX_INBOUND_SERVICES),
            unknown_service: Arc::new(Service::unknown()),
            principals: Interner::new(peer::MAX_PEERS),
            metrics: Metrics::new(own),
            environment: Default::default(),
        }
    }

    /// The same, with the proxy's environment variables (`Config::environment`), which tracing's
    /// environment custom tags read.
    pub fn with_environment(mut self, vars: Environment) -> Self {
        self.environment = vars;
        self
    }

    /// The value of the proxy's environment variable `name`, as read at startup.
    pub fn environment(&self, name: &str) -> Option<&str> {
        self.environment.0.get(name).map(String::as_str)
    }

    /// The reporter of the exporter to `url` in `provider`'s format, started now if there is none yet
    /// (on the current runtime); `None` when the URL is unusable (the listener was checked, so only a
    /// cluster's endpoint can be).
    pub fn reporter(
        &self,
        provider: weft_trace::exporter::Provider,
        url: &str,
    ) -> Option<weft_trace::Reporter> {
        let mut exporters = self.exporters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = exporters
            .iter()
            .find(|c| c.provider == provider && c.url == url)
        {
            return Some(c.reporter.clone());
        }
        let config = match weft_trace::exporter::Config::new(provider, url) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "trace collector unusable; spans are not reported");
                return None;
            }
        };
        let (reporter, exporter) = weft_trace::Exporter::start(config);
        tracing::info!(collector = url, ?provider, "reporting spans");
        exporters.push(Collecting {
            provider,
            url: url.to_string(),
            reporter: reporter.clone(),
            _exporter: exporter,
        });
        Some(reporter)
    }

    /// The span exporters' counters: (collector URL, sent, dropped, failed requests).
    pub fn trace_stats(&self) -> Vec<(String, u64, u64, u64)> {
        let exporters = self.exporters.lock().unwrap_or_else(|e| e.into_inner());
        exporters
            .iter()
            .map(|c| {
                let s = c.reporter.stats();
                (c.url.clone(), s.sent(), s.dropped(), s.failed_requests())
            })
            .collect()
    }

    /// Adds this sidecar's metadata headers (to a request sent upstream, or a response sent back).
    pub fn announce(&self, headers: &mut HeaderMap) {
        self.own.insert_into(headers);
    }

    /// This sidecar's metadata as HTTP/1.1 field lines.
    pub fn own_lines(&self) -> &[u8] {
        &self.own.lines
    }

    /// This sidecar's metadata in HPACK.
    pub fn own_fields(&self) -> &weft_http::upstream::EncodedFields {
        &self.own.fields
    }

    /// Removes the peer's metadata headers and returns the peer.
    pub fn take_peer(&self, headers: &mut HeaderMap) -> Arc<Peer> {
        self.peers.take(headers)
    }

    /// The peer `unknown`.
    pub fn unknown_peer(&self) -> Arc<Peer> {
        self.peers.unknown().clone()
    }

    /// The principal `id` as label sets keep it: the same allocation for every connection of that
    /// identity, found with no lock and no allocation once met; `None` (the label says `unknown`) past
    /// the bound of [`peer::MAX_PEERS`] identities. Called once per connection, not per request.
    pub fn principal(&self, id: &str) -> Option<Principal> {
        if let Some(p) = self.principals.get(id) {
            return Some(p);
        }
        let id: Arc<str> = Arc::from(id);
        self.principals.insert(id.clone(), Principal::new(id))
    }

    /// What a connection's TLS tells the labels: whether it is mutual TLS, the other side's SPIFFE ID
    /// (from its certificate) and this proxy's (when it presented its certificate), interned.
    pub fn security(&self, mtls: bool, peer: Option<&str>, local: Option<&str>) -> Security {
        Security {
            mtls,
            peer: peer.and_then(|p| self.principal(p)),
            local: local.and_then(|p| self.principal(p)),
        }
    }

    /// The service `unknown`.
    pub fn unknown_service(&self) -> Arc<Service> {
        self.unknown_service.clone()
    }

    /// The service an inbound request is for, from its authority: the host without its port, a short
    /// name taken in this proxy's namespace (`reviews` is `reviews.<ns>.svc.cluster.local`), as
    /// Istio's inbound stats read it from the host when the cluster does not say.
    pub fn inbound_service(&self, authority: Option<&str>) -> Arc<Service> {
        let Some(authority) = authority else {
            return self.unknown_service.clone();
        };
        if let Some(s) = self.inbound_services.get(authority.as_bytes()) {
            return s;
        }
        let host = match crate::http::last_colon(authority) {
            Some(i) => &authority[..i],
            None => authority,
        };
        let service = Arc::new(
            if host.contains('.') || host.parse::<std::net::IpAddr>().is_ok() {
                Service::of_host(host, Some(&self.namespace))
            } else {
                Service::new(
                    format!("{host}.{}.svc.cluster.local", self.namespace),
                    host.to_string(),
                    self.namespace.clone(),
                )
            },
        );
        self.inbound_services
            .insert(
                Bytes::copy_from_slice(authority.as_bytes()),
                service.clone(),
            )
            .unwrap_or(service)
    }

    /// Writes the metrics in Prometheus's text format.
    pub fn encode(self: &Arc<Self>) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Collect(self.clone())));
        let mut out = String::new();
        // Writing to a String does not fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

#[derive(Debug)]
struct Collect(Arc<Telemetry>);

impl prometheus_client::collector::Collector for Collect {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        use prometheus_client::metrics::{counter::ConstCounter, MetricType};
        // The span exporters' counters, one series per collector: what a full queue dropped and what a
        // collector refused are seen where the proxy's other metrics are.
        let exporters = self.0.trace_stats();
        type Pick = fn(&(String, u64, u64, u64)) -> u64;
        let families: [(&str, &str, Pick); 3] = [
            (
                "weft_trace_spans_sent",
                "Spans a collector accepted.",
                |e| e.1,
            ),
            (
                "weft_trace_spans_dropped",
                "Spans dropped because the export queue was full.",
                |e| e.2,
            ),
            (
                "weft_trace_export_failures",
                "Export requests that failed (collector down or refusing).",
                |e| e.3,
            ),
        ];
        for (name, help, pick) in families {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for e in &exporters {
                let labels = [("collector", e.0.as_str())];
                ConstCounter::new(pick(e)).encode(family.encode_family(&&labels[..])?)?;
            }
        }
        self.0.metrics.encode(encoder)
    }
}

/// gRPC's content type, with or without a subtype.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// A request on its way: what is known before its response's body has ended. Recorded when the
/// response body ends (it rides on it as its observer), or at once when no response is sent.
#[derive(Debug)]
pub struct Pending {
    telemetry: Arc<Telemetry>,
    reporter: Reporter,
    peer: Arc<Peer>,
    /// The connection's TLS, as the labels say it.
    security: Security,
    service: Arc<Service>,
    protocol: Protocol,
    started: Instant,
    code: u16,
    grpc_status: Option<u8>,
    flags: Flags,
    request_bytes: u64,
    response_bytes: u64,
    /// gRPC messages in the request body (counted where it was buffered).
    request_messages: u64,
    response_messages: GrpcFrames,
    /// The listener's access log and what its line needs, when the listener logs.
    log: Option<Box<Logged>>,
    /// The span, when the listener traces and the request is sampled.
    trace: Option<Box<spans::Traced>>,
    /// What the listener's metric overrides read, when it has some.
    stats: Option<Box<overrides::Captured>>,
}

/// A request's access log line in the making.
#[derive(Debug)]
pub struct Logged {
    log: Arc<access_log::AccessLog>,
    /// The request's part of the line.
    pub request: access_log::Request,
}

impl Logged {
    /// Copies what `log`'s format reads from the request as it arrives.
    pub fn new(
        log: Arc<access_log::AccessLog>,
        parts: &http::request::Parts,
        authority: &str,
    ) -> Logged {
        let mut headers = HeaderMap::new();
        for h in &log.headers {
            if let Some(v) = parts.headers.get(h) {
                headers.insert(h.clone(), v.clone());
            }
        }
        Logged {
            request: access_log::Request {
                start: Some(std::time::SystemTime::now()),
                method: parts.method.as_str().to_string(),
                path: parts
                    .uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_string(),
                authority: authority.to_string(),
                protocol: match parts.version {
                    http::Version::HTTP_2 => "HTTP/2",
                    http::Version::HTTP_10 => "HTTP/1.0",
                    _ => "HTTP/1.1",
                },
                headers,
                ..Default::default()
            },
            log,
        }
    }
}

impl Pending {
    /// A request that has just arrived.
    pub fn new(
        telemetry: Arc<Telemetry>,
        reporter: Reporter,
        peer: Arc<Peer>,
        service: Arc<Service>,
        protocol: Protocol,
    ) -> Pending {
        Pending {
            telemetry,
            reporter,
            peer,
            security: Security::default(),
            service,
            protocol,
            started: Instant::now(),
            code: 0,
            grpc_status: None,
            flags: Flags::default(),
            request_bytes: 0,
            response_bytes: 0,
            request_messages: 0,
            response_messages: GrpcFrames::default(),
            log: None,
            trace: None,
            stats: None,
        }
    }

    /// Logs this request to `log` when it ends.
    pub fn log_to(&mut self, logged: Logged) {
        self.log = Some(Box::new(logged));
    }

    /// Records this request with a listener's metric overrides, keeping what their expressions read.
    pub fn stats(&mut self, captured: Box<overrides::Captured>) {
        self.stats = Some(captured);
    }

    /// What the metric overrides read, when the listener has some.
    pub fn captured(&mut self) -> Option<&mut overrides::Captured> {
        self.stats.as_deref_mut()
    }

    /// Reports a span for this request when it ends.
    pub fn trace(&mut self, traced: Box<spans::Traced>) {
        self.trace = Some(traced);
    }

    /// The span in the making, when the request is sampled.
    pub fn traced(&mut self) -> Option<&mut spans::Traced> {
        self.trace.as_deref_mut()
    }

    /// The access log line's request part, when the request is logged.
    pub fn logged(&mut self) -> Option<&mut access_log::Request> {
        self.log.as_mut().map(|l| &mut l.request)
    }

    /// The peer and service, once routing or the response has told them.
    pub fn set_peer(&mut self, peer: Arc<Peer>) {
        self.peer = peer;
    }

    /// The connection's TLS (`connection_security_policy`, the principals), known per connection.
    pub fn set_security(&mut self, security: Security) {
        self.security = security;
    }

    /// The destination service.
    pub fn set_service(&mut self, service: Arc<Service>) {
        self.service = service;
    }

    /// The request body's size, and its gRPC messages when it was read whole.
    pub fn request_body(&mut self, bytes: u64, whole: Option<&Bytes>) {
        self.request_bytes = bytes;
        if let (Protocol::Grpc, Some(b)) = (self.protocol, whole) {
            let mut frames = GrpcFrames::default();
            frames.feed(b);
            self.request_messages = frames.messages;
        }
    }

    /// The response head: its status, its flags, and (for a trailers-only gRPC answer) its
    /// `grpc-status`.
    pub fn response(&mut self, code: u16, flags: Flags, headers: &HeaderMap) {
        self.code = code;
        self.flags = flags;
        if self.protocol == Protocol::Grpc {
            self.grpc_status = grpc_status(headers);
        }
    }

    /// Records the request as it stands.
    pub fn record(mut self) {
        let key = Key {
            reporter: self.reporter,
            peer: PeerRef(self.peer),
            security: self.security,
            service: self.service,
            protocol: self.protocol,
            code: self.code,
            grpc_status: match self.protocol {
                Protocol::Grpc => self.grpc_status,
                Protocol::Http => None,
            },
            flags: self.flags,
        };
        let duration_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let flags = match (&self.log, &self.trace) {
            (None, None) => String::new(),
            _ => self.flags.to_string(),
        };
        if let Some(tr) = self.trace.take() {
            tr.report(
                &self.telemetry,
                &spans::End {
                    code: self.code,
                    flags: &flags,
                    request_bytes: self.request_bytes,
                    response_bytes: self.response_bytes,
                },
            );
        }
        let admitted = |l: &Logged| {
            l.log
                .admits(&l.request, self.code, self.flags, self.grpc_status)
        };
        if let Some(l) = self.log.as_deref().filter(|l| admitted(l)) {
            let line = l.log.format.line(
                &l.request,
                &access_log::Outcome {
                    code: self.code,
                    flags: &flags,
                    received: self.request_bytes,
                    sent: self.response_bytes,
                    duration_ms: duration_us / 1000,
                },
            );
            l.log.write(line);
        }
        let o = Observation {
            duration_us,
            request_bytes: self.request_bytes,
            response_bytes: self.response_bytes,
            request_messages: self.request_messages,
            response_messages: self.response_messages.messages,
        };
        match &self.stats {
            None => self.telemetry.metrics.record(key, &o),
            Some(c) => {
                let end = (self.code, self.flags, key.grpc_status);
                self.telemetry.metrics.record_custom(&key, c, end, &o)
            }
        }
    }
}

impl weft_http::Observer for Pending {
    fn data(&mut self, data: &Bytes) {
        self.response_bytes += data.len() as u64;
        if self.protocol == Protocol::Grpc {
            self.response_messages.feed(data);
        }
    }

    fn trailers(&mut self, trailers: &HeaderMap) {
        if self.protocol == Protocol::Grpc {
            if let Some(s) = grpc_status(trailers) {
                self.grpc_status = Some(s);
            }
        }
    }

    fn end(mut self: Box<Self>, whole: bool) {
        if !whole {
            // The body was cut short: the client went away (Envoy's `DC`), or the upstream did.
            self.flags.insert(Flags::DC);
        }
        self.record();
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<u8> {
    let v = headers.get("grpc-status")?;
    std::str::from_utf8(v.as_bytes()).ok()?.parse().ok()
}

/// Counts gRPC messages (a 1-byte flag and a 4-byte length before each) across data frames.
#[derive(Debug, Default)]
struct GrpcFrames {
    /// Bytes of the current message (or prefix) still to come.
    remaining: u64,
    /// Prefix bytes of the next message read so far.
    prefix: [u8; 5],
    prefix_len: usize,
    messages: u64,
}

impl GrpcFrames {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[..n]);
            self.prefix_len += n;
            data = &data[n..];
            if self.prefix_len == 5 {
                self.messages += 1;
                self.remaining = u64::from(u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]));
                self.prefix_len = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests;
