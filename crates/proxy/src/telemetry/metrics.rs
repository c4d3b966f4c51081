//! Istio's standard HTTP metrics (`SPEC.md` §3.1): one series per label set, each a few atomic
//! counters and histograms. A request finds its series by a key of shared pointers and small numbers
//! in a copy-on-write table, with no lock and no allocation once the series exists; a new label set
//! takes a lock once. The table is bounded: a label set past the bound is counted, not kept.
//!
//! Encoded for Prometheus by `prometheus-client`'s text encoder (OpenMetrics text), with Istio's names,
//! label order and buckets.

use super::overrides::{self as ov, Captured, Custom, Lookup, SeriesKey};
use super::peer::{Peer, UNKNOWN};
use super::{Interner, Service};
use crate::error::Flags;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Label sets kept at most; requests with a new one past this are counted in
/// `weft_telemetry_series_overflow_total` and not recorded.
pub const MAX_SERIES: usize = 10_000;

/// Envoy's default histogram buckets, which Istio's metrics use: milliseconds for durations, bytes for
/// sizes.
pub const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// [`BUCKETS`] in thousandths, the unit observations are recorded in.
const BOUNDS_MILLI: [u64; BUCKETS.len()] = {
    let mut out = [0; BUCKETS.len()];
    let mut i = 0;
    while i < BUCKETS.len() {
        out[i] = (BUCKETS[i] * 1000.0) as u64;
        i += 1;
    }
    out
};

/// Which side reports (`reporter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reporter {
    /// The client's sidecar (outbound).
    Source,
    /// The server's sidecar (inbound).
    Destination,
}

/// `request_protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1 or HTTP/2.
    Http,
    /// gRPC (`content-type: application/grpc…`).
    Grpc,
}

/// A peer compared by identity: peers are interned, so equal peers are the same allocation.
#[derive(Debug, Clone)]
pub struct PeerRef(pub Arc<Peer>);

impl PartialEq for PeerRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for PeerRef {}
impl Hash for PeerRef {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.0), state)
    }
}

/// A SPIFFE ID interned by the proxy's telemetry (`Telemetry::principal`): equal IDs are one
/// allocation, so a label set compares and hashes it by address, as it does peers.
#[derive(Debug, Clone)]
pub struct Principal(Arc<str>);

impl Principal {
    /// A principal of its own allocation; [`Telemetry::principal`](super::Telemetry::principal) shares
    /// one per SPIFFE ID.
    pub fn new(id: Arc<str>) -> Principal {
        Principal(id)
    }

    /// The SPIFFE ID (`spiffe://td/ns/x/sa/y`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl PartialEq for Principal {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for Principal {}
impl Hash for Principal {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.0) as *const u8, state)
    }
}

/// What a connection's TLS tells the labels: `connection_security_policy` and the principals. Known
/// per connection, shared by its requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Security {
    /// It came over mutual TLS: `connection_security_policy="mutual_tls"` on a destination report
    /// (`none` otherwise; a source report says `unknown`, as Istio's).
    pub mtls: bool,
    /// The other side's SPIFFE ID, from its certificate: `source_principal` on a destination report,
    /// `destination_principal` on a source report; `unknown` without.
    pub peer: Option<Principal>,
    /// This proxy's SPIFFE ID, when its certificate was presented on the connection: the other
    /// principal label.
    pub local: Option<Principal>,
}

impl Security {
    /// One word for a label set's hash: the flag and both principals' addresses.
    fn hash_word(&self) -> u64 {
        let addr = |p: &Option<Principal>| {
            p.as_ref()
                .map_or(0, |p| Arc::as_ptr(&p.0) as *const u8 as usize as u64)
        };
        addr(&self.peer).rotate_left(17) ^ addr(&self.local) ^ u64::from(self.mtls)
    }
}

/// Everything that makes a label set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// `reporter`.
    pub reporter: Reporter,
    /// The other side: the source on a destination report, the destination on a source report.
    pub peer: PeerRef,
    /// The connection's TLS: `connection_security_policy` and the principals.
    pub security: Security,
    /// `destination_service*`.
    pub service: Arc<Service>,
    /// `request_protocol`.
    pub protocol: Protocol,
    /// `response_code`; 0 when no response was sent.
    pub code: u16,
    /// `grpc_response_status`, for gRPC.
    pub grpc_status: Option<u8>,
    /// `response_flags`.
    pub flags: Flags,
}

// Hashed as three words: the small fields packed in one, the peer's address and the service's hash
// (field by field it was 90 instructions a request, `bench/instructions`).
impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let small = u64::from(self.code)
            | u64::from(self.grpc_status.map_or(0x100, u16::from)) << 16
            | u64::from(self.flags.bits()) << 32
            | (self.reporter as u64) << 48
            | (self.protocol as u64) << 56;
        state.write_u64(small);
        self.peer.hash(state);
        self.service.hash(state);
        // Plaintext adds a zero word: one more `write_u64`, no branch on the label set's kind.
        state.write_u64(self.security.hash_word());
    }
}

/// Everything that makes a TCP label set: Istio's labels without `response_code` and
/// `grpc_response_status`, with `request_protocol="tcp"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TcpKey {
    /// `reporter`.
    pub reporter: Reporter,
    /// The other side.
    pub peer: PeerRef,
    /// The connection's TLS: `connection_security_policy` and the principals.
    pub security: Security,
    /// `destination_service*`.
    pub service: Arc<Service>,
    /// `response_flags`.
    pub flags: Flags,
}

/// One TCP label set's metrics.
#[derive(Debug, Default)]
pub struct TcpSeries {
    /// `istio_tcp_connections_opened_total`.
    pub opened: AtomicU64,
    /// `istio_tcp_connections_closed_total`.
    pub closed: AtomicU64,
    /// `istio_tcp_sent_bytes_total`: towards the client (the response direction).
    pub sent: AtomicU64,
    /// `istio_tcp_received_bytes_total`: from the client (the request direction).
    pub received: AtomicU64,
}

/// A histogram of whole numbers (milliseconds, bytes) over [`BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations in each bucket (not cumulative), the last over every bound.
    counts: [AtomicU64; BUCKETS.len() + 1],
    /// The sum, in thousandths.
    sum_milli: AtomicU64,
}

impl Histogram {
    /// Records `value` thousandths (µs for a duration in milliseconds, say).
    pub fn observe_milli(&self, value: u64) {
        // Compared as whole thousandths: a float multiply and conversion per bound searched was most
        // of an observation's cost.
        let i = BOUNDS_MILLI.partition_point(|&b| b < value);
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_milli.fetch_add(value, Relaxed);
    }

    /// Writes this histogram as one sample set.
    pub fn encode_into(
        &self,
        mut m: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)
    }

    /// Sum, count and each bucket's own count (the encoder makes them cumulative).
    pub(super) fn snapshot(&self) -> (f64, u64, [(f64, u64); BUCKETS.len() + 1]) {
        let mut buckets = [(f64::INFINITY, 0); BUCKETS.len() + 1];
        let mut total = 0;
        for (i, c) in self.counts.iter().enumerate() {
            let n = c.load(Relaxed);
            total += n;
            buckets[i] = (BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), n);
        }
        (self.sum_milli.load(Relaxed) as f64 / 1000.0, total, buckets)
    }
}

/// One label set's metrics.
#[derive(Debug, Default)]
pub struct Series {
    /// `istio_requests_total`.
    pub requests: AtomicU64,
    /// `istio_request_duration_milliseconds`.
    pub duration: Histogram,
    /// `istio_request_bytes`.
    pub request_bytes: Histogram,
    /// `istio_response_bytes`.
    pub response_bytes: Histogram,
    /// `istio_request_messages_total` (gRPC).
    pub request_messages: AtomicU64,
    /// `istio_response_messages_total` (gRPC).
    pub response_messages: AtomicU64,
}

/// One finished request, as recorded.
#[derive(Debug, Clone, Copy, Default)]
pub struct Observation {
    /// Request start to the response's end, µs.
    pub duration_us: u64,
    /// Request body bytes.
    pub request_bytes: u64,
    /// Response body bytes.
    pub response_bytes: u64,
    /// gRPC messages from the client.
    pub request_messages: u64,
    /// gRPC messages to the client.
    pub response_messages: u64,
}

/// The HTTP metrics of one proxy, and who it is.
#[derive(Debug)]
pub struct Metrics {
    own: Arc<Peer>,
    series: Interner<Key, Arc<Series>>,
    tcp: Interner<TcpKey, Arc<TcpSeries>>,
    /// Series of listeners with Telemetry API overrides ([`Metrics::record_custom`]): a table of
    /// their own, so requests without overrides look up and hash what they did before.
    custom: Interner<Custom<Key>, Arc<Series>>,
    /// TCP series of listeners with overrides.
    tcp_custom: Interner<Custom<TcpKey>, Arc<TcpSeries>>,
    overflow: AtomicU64,
}

impl Metrics {
    /// No series yet, for the proxy `own`.
    pub fn new(own: Arc<Peer>) -> Metrics {
        Metrics {
            own,
            series: Interner::new(MAX_SERIES),
            tcp: Interner::new(MAX_SERIES),
            custom: Interner::new(MAX_SERIES),
            tcp_custom: Interner::new(MAX_SERIES),
            overflow: AtomicU64::new(0),
        }
    }

    /// Records one request under `key`.
    pub fn record(&self, key: Key, o: &Observation) {
        let series = match self.series.get(&key) {
            Some(s) => s,
            None => match self.series.insert(key, Arc::default()) {
                Some(s) => s,
                None => {
                    self.overflow.fetch_add(1, Relaxed);
                    return;
                }
            },
        };
        series.requests.fetch_add(1, Relaxed);
        series.duration.observe_milli(o.duration_us);
        series
            .request_bytes
            .observe_milli(o.request_bytes.saturating_mul(1000));
        series
            .response_bytes
            .observe_milli(o.response_bytes.saturating_mul(1000));
        if o.request_messages > 0 {
            series
                .request_messages
                .fetch_add(o.request_messages, Relaxed);
        }
        if o.response_messages > 0 {
            series
                .response_messages
                .fetch_add(o.response_messages, Relaxed);
        }
    }

    /// Records one request of a listener with Telemetry API overrides: `key` and the values its tag
    /// expressions give (evaluated here, looked up borrowed: an existing series costs no allocation).
    /// The metrics the overrides drop are left alone.
    pub fn record_custom(
        &self,
        key: &Key,
        c: &Captured,
        (code, flags, grpc_status): (u16, Flags, Option<u8>),
        o: &Observation,
    ) {
        let overrides = c.overrides();
        if overrides.drops_all_http() {
            return;
        }
        let found = c.evaluate(code, flags, grpc_status, |values| {
            let l = Lookup {
                key,
                overrides,
                values,
            };
            match self.custom.get(&l as &dyn SeriesKey<Key>) {
                Some(s) => Some(s),
                None => self.custom.insert(l.to_owned(), Arc::default()),
            }
        });
        let Some(series) = found else {
            self.overflow.fetch_add(1, Relaxed);
            return;
        };
        let drops = |m| overrides.drops(m);
        if !drops(ov::REQUESTS) {
            series.requests.fetch_add(1, Relaxed);
        }
        if !drops(ov::DURATION) {
            series.duration.observe_milli(o.duration_us);
        }
        if !drops(ov::REQUEST_BYTES) {
            (series.request_bytes).observe_milli(o.request_bytes.saturating_mul(1000));
        }
        if !drops(ov::RESPONSE_BYTES) {
            (series.response_bytes).observe_milli(o.response_bytes.saturating_mul(1000));
        }
        if !drops(ov::REQUEST_MESSAGES) && o.request_messages > 0 {
            (series.request_messages).fetch_add(o.request_messages, Relaxed);
        }
        if !drops(ov::RESPONSE_MESSAGES) && o.response_messages > 0 {
            (series.response_messages).fetch_add(o.response_messages, Relaxed);
        }
    }

    /// The TCP series of a connection on a listener with overrides, made when new; `None` (and
    /// counted) past the bound.
    pub fn tcp_custom(&self, key: &Custom<TcpKey>) -> Option<Arc<TcpSeries>> {
        let found = match self.tcp_custom.get(key) {
            Some(s) => Some(s),
            None => self.tcp_custom.insert(key.clone(), Arc::default()),
        };
        if found.is_none() {
            self.overflow.fetch_add(1, Relaxed);
        }
        found
    }

    /// The TCP series of `key`, made when new; `None` (and counted) past the bound.
    pub fn tcp(&self, key: TcpKey) -> Option<Arc<TcpSeries>> {
        let found = match self.tcp.get(&key) {
            Some(s) => Some(s),
            None => self.tcp.insert(key, Arc::default()),
        };
        if found.is_none() {
            self.overflow.fetch_add(1, Relaxed);
        }
        found
    }

    /// Label sets recorded so far.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Requests not recorded because the table of label sets was full.
    pub fn overflow(&self) -> u64 {
        self.overflow.load(Relaxed)
    }

    /// The label values of `key`, in Istio's order.
    #[allow(clippy::too_many_arguments)]
    fn labels<'a>(
        &'a self,
        reporter: Reporter,
        peer: &'a Peer,
        security: &'a Security,
        s: &'a Service,
        protocol: &'a str,
        code: &'a str,
        grpc: &'a str,
        flags: &'a str,
    ) -> Labels<'a> {
        let (source, destination) = match reporter {
            Reporter::Source => (&*self.own, peer),
            Reporter::Destination => (peer, &*self.own),
        };
        // The principals come from the connection's certificates, not from the metadata exchange.
        let theirs = security.peer.as_ref().map_or(UNKNOWN, Principal::as_str);
        let ours = security.local.as_ref().map_or(UNKNOWN, Principal::as_str);
        let (source_principal, destination_principal) = match reporter {
            Reporter::Source => (ours, theirs),
            Reporter::Destination => (theirs, ours),
        };
        [
            (
                "reporter",
                match reporter {
                    Reporter::Source => "source",
                    Reporter::Destination => "destination",
                },
            ),
            ("source_workload", &source.workload),
            ("source_canonical_service", &source.canonical_service),
            ("source_canonical_revision", &source.canonical_revision),
            ("source_workload_namespace", &source.namespace),
            ("source_principal", source_principal),
            ("source_app", &source.app),
            ("source_version", &source.version),
            ("source_cluster", &source.cluster),
            ("destination_workload", &destination.workload),
            ("destination_workload_namespace", &destination.namespace),
            ("destination_principal", destination_principal),
            ("destination_app", &destination.app),
            ("destination_version", &destination.version),
            ("destination_service", &s.host),
            (
                "destination_canonical_service",
                &destination.canonical_service,
            ),
            (
                "destination_canonical_revision",
                &destination.canonical_revision,
            ),
            ("destination_service_name", &s.name),
            ("destination_service_namespace", &s.namespace),
            ("destination_cluster", &destination.cluster),
            ("request_protocol", protocol),
            ("response_code", code),
            ("grpc_response_status", grpc),
            ("response_flags", flags),
            (
                "connection_security_policy",
                // What the server saw; the client does not say (Istio's `unknown`).
                match (reporter, security.mtls) {
                    (Reporter::Source, _) => UNKNOWN,
                    (Reporter::Destination, true) => "mutual_tls",
                    (Reporter::Destination, false) => "none",
                },
            ),
        ]
    }

    /// The label values of an HTTP series, in Istio's order.
    fn key_labels<'a>(
        &'a self,
        key: &'a Key,
        code: &'a str,
        grpc: &'a str,
        flags: &'a str,
    ) -> Labels<'a> {
        let protocol = match key.protocol {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
        };
        self.labels(
            key.reporter,
            &key.peer.0,
            &key.security,
            &key.service,
            protocol,
            code,
            grpc,
            flags,
        )
    }

    /// The label values of a TCP series, in Istio's order.
    fn tcp_labels<'a>(&'a self, key: &'a TcpKey, flags: &'a str) -> TcpLabels<'a> {
        let all = self.labels(
            key.reporter,
            &key.peer.0,
            &key.security,
            &key.service,
            "tcp",
            "",
            "",
            flags,
        );
        let mut out = [("", ""); 23];
        let kept = all
            .into_iter()
            .filter(|(k, _)| !matches!(*k, "response_code" | "grpc_response_status"));
        for (slot, label) in out.iter_mut().zip(kept) {
            *slot = label;
        }
        out
    }

    /// Writes every family in Prometheus's text format.
    pub fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let table = self.series.snapshot();
        // The label values that are numbers and flags, as text, once per series.
        let texts: Vec<(&Key, &Arc<Series>, String, String, String)> = table
            .iter()
            .map(|(k, s)| {
                let grpc = k.grpc_status.map(|g| g.to_string()).unwrap_or_default();
                (k, s, k.code.to_string(), grpc, k.flags.to_string())
            })
            .collect();
        // Series of listeners with overrides, with their numbers and flags as text likewise. When
        // there are any, each family is written through `Grouped`, which adds up the series whose
        // label sets have become equal (a label removed), standard ones included.
        let custom = self.custom.snapshot();
        let custom_texts: Vec<CustomTexts<'_>> = custom
            .iter()
            .map(|(c, s)| {
                let k = c.standard();
                let grpc = k.grpc_status.map(|g| g.to_string()).unwrap_or_default();
                (c, s, k.code.to_string(), grpc, k.flags.to_string())
            })
            .collect();
        type Pick = fn(&Series) -> Value<'_>;
        let families: [(ov::Metric, &str, &str, MetricType, Pick); 6] = [
            (
                ov::REQUESTS,
                "istio_requests",
                "Requests served.",
                MetricType::Counter,
                |s| Value::Counter(&s.requests),
            ),
            (
                ov::DURATION,
                "istio_request_duration_milliseconds",
                "Time from a request's start to its response's end, in milliseconds.",
                MetricType::Histogram,
                |s| Value::Histogram(&s.duration),
            ),
            (
                ov::REQUEST_BYTES,
                "istio_request_bytes",
                "Request body sizes, in bytes.",
                MetricType::Histogram,
                |s| Value::Histogram(&s.request_bytes),
            ),
            (
                ov::RESPONSE_BYTES,
                "istio_response_bytes",
                "Response body sizes, in bytes.",
                MetricType::Histogram,
                |s| Value::Histogram(&s.response_bytes),
            ),
            (
                ov::REQUEST_MESSAGES,
                "istio_request_messages",
                "gRPC messages sent by clients.",
                MetricType::Counter,
                |s| Value::Counter(&s.request_messages),
            ),
            (
                ov::RESPONSE_MESSAGES,
                "istio_response_messages",
                "gRPC messages sent to clients.",
                MetricType::Counter,
                |s| Value::Counter(&s.response_messages),
            ),
        ];
        for (metric, name, help, ty, pick) in families {
            let grpc_only = matches!(metric, ov::REQUEST_MESSAGES | ov::RESPONSE_MESSAGES);
            let mut family = encoder.encode_descriptor(name, help, None, ty)?;
            let mut grouped = Grouped::default();
            for (key, series, code, grpc, flags) in &texts {
                if grpc_only && key.protocol != Protocol::Grpc {
                    continue;
                }
                let labels = self.key_labels(key, code, grpc, flags);
                if !custom_texts.is_empty() {
                    grouped.add(labels.to_vec(), pick(series));
                    continue;
                }
                let labels = &labels[..];
                let m = family.encode_family(&labels)?;
                match pick(series) {
                    Value::Counter(c) => {
                        prometheus_client::metrics::counter::ConstCounter::new(c.load(Relaxed))
                            .encode(m)?
                    }
                    Value::Histogram(h) => h.encode_into(m)?,
                }
            }
            for (c, series, code, grpc, flags) in &custom_texts {
                let key = c.standard();
                if c.drops(metric) || (grpc_only && key.protocol != Protocol::Grpc) {
                    continue;
                }
                let labels = self.key_labels(key, code, grpc, flags);
                grouped.add(c.labels(metric, &labels), pick(series));
            }
            grouped.encode(&mut family)?;
        }
        let tcp = self.tcp.snapshot();
        let tcp_texts: Vec<(&TcpKey, &Arc<TcpSeries>, String)> = tcp
            .iter()
            .map(|(k, s)| (k, s, k.flags.to_string()))
            .collect();
        let tcp_custom = self.tcp_custom.snapshot();
        let tcp_custom_texts: Vec<(&Custom<TcpKey>, &Arc<TcpSeries>, String)> = tcp_custom
            .iter()
            .map(|(c, s)| (c, s, c.standard().flags.to_string()))
            .collect();
        type TcpPick = fn(&TcpSeries) -> &AtomicU64;
        let tcp_families: [(ov::Metric, &str, &str, TcpPick); 4] = [
            (
                ov::TCP_SENT,
                "istio_tcp_sent_bytes",
                "Bytes sent to TCP clients (the response direction).",
                |s| &s.sent,
            ),
            (
                ov::TCP_RECEIVED,
                "istio_tcp_received_bytes",
                "Bytes received from TCP clients (the request direction).",
                |s| &s.received,
            ),
            (
                ov::TCP_OPENED,
                "istio_tcp_connections_opened",
                "TCP connections opened.",
                |s| &s.opened,
            ),
            (
                ov::TCP_CLOSED,
                "istio_tcp_connections_closed",
                "TCP connections closed.",
                |s| &s.closed,
            ),
        ];
        for (metric, name, help, pick) in tcp_families {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            let mut grouped = Grouped::default();
            for (key, series, flags) in &tcp_texts {
                let labels = self.tcp_labels(key, flags);
                if !tcp_custom_texts.is_empty() {
                    grouped.add(labels.to_vec(), Value::Counter(pick(series)));
                    continue;
                }
                let labels = &labels[..];
                let m = family.encode_family(&labels)?;
                prometheus_client::metrics::counter::ConstCounter::new(pick(series).load(Relaxed))
                    .encode(m)?;
            }
            for (c, series, flags) in &tcp_custom_texts {
                if c.drops(metric) {
                    continue;
                }
                let labels = self.tcp_labels(c.standard(), flags);
                grouped.add(c.labels(metric, &labels), Value::Counter(pick(series)));
            }
            grouped.encode(&mut family)?;
        }
        let overflow = encoder.encode_descriptor(
            "weft_telemetry_series_overflow",
            "Requests not recorded in Istio's metrics because their label set was past the bound.",
            None,
            MetricType::Counter,
        )?;
        prometheus_client::metrics::counter::ConstCounter::new(self.overflow()).encode(overflow)?;
        Ok(())
    }
}

enum Value<'a> {
    Counter(&'a AtomicU64),
    Histogram(&'a Histogram),
}

type Labels<'a> = [(&'static str, &'a str); 25];
/// A series with overrides, and its code, gRPC status and flags as text.
type CustomTexts<'a> = (&'a Custom<Key>, &'a Arc<Series>, String, String, String);
type TcpLabels<'a> = [(&'static str, &'a str); 23];

/// Series with Telemetry API overrides, added up by their label sets: removing a label can make two
/// series one, which Prometheus must see once (Envoy's stats add them up likewise).
#[derive(Default)]
struct Grouped<'a> {
    sets: std::collections::BTreeMap<Vec<(&'a str, &'a str)>, Sum>,
}

enum Sum {
    Counter(u64),
    /// Sum, count and buckets (boxed: made at scrape time only).
    Histogram(Box<HistogramSum>),
}

type HistogramSum = (f64, u64, [(f64, u64); BUCKETS.len() + 1]);

impl<'a> Grouped<'a> {
    fn add(&mut self, labels: Vec<(&'a str, &'a str)>, v: Value<'_>) {
        let e = self.sets.entry(labels);
        match (v, e.or_insert_with(|| Sum::Counter(0))) {
            (Value::Counter(c), Sum::Counter(t)) => *t += c.load(Relaxed),
            (Value::Histogram(h), sum) => {
                let (s, c, b) = h.snapshot();
                match sum {
                    Sum::Histogram(total) => {
                        let (ts, tc, tb) = &mut **total;
                        *ts += s;
                        *tc += c;
                        for (t, (_, n)) in tb.iter_mut().zip(b) {
                            t.1 += n;
                        }
                    }
                    other => *other = Sum::Histogram(Box::new((s, c, b))),
                }
            }
            (Value::Counter(_), Sum::Histogram(..)) => {}
        }
    }

    fn encode(
        &self,
        family: &mut prometheus_client::encoding::MetricEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        for (labels, sum) in &self.sets {
            let labels = &labels[..];
            let mut m = family.encode_family(&labels)?;
            match sum {
                Sum::Counter(n) => {
                    prometheus_client::metrics::counter::ConstCounter::new(*n).encode(m)?
                }
                Sum::Histogram(h) => {
                    let (s, c, b) = &**h;
                    m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(*s, *c, b, None)?
                }
            }
        }
        Ok(())
    }
}
