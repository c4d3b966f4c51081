//! OpenTelemetry's OTLP for traces: the protobuf messages of
//! `opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest` ([`pb`], field numbers as in
//! opentelemetry-proto v1), OTLP/JSON for reading, and the mapping to and from the span model.
//!
//! The mapping (the same both ways, so Weft's spans survive a round trip):
//! - `service.name` (a resource attribute) is the local endpoint's service; spans are grouped into one
//!   `ResourceSpans` per service, under one scope named `weft`;
//! - ids are big-endian bytes (16 for a trace, 8 for a span; no parent is empty bytes);
//! - `start_time_unix_nano` and `end_time_unix_nano` are the timestamp and timestamp + duration, in ns;
//! - kinds `SERVER`, `CLIENT`, `PRODUCER`, `CONSUMER` map to the same kinds; `INTERNAL` and
//!   `UNSPECIFIED` to none;
//! - the local endpoint's address and port are `network.local.address` and `network.local.port`, the
//!   remote endpoint's `network.peer.address`, `network.peer.port` and `peer.service`
//!   (OpenTelemetry's semantic conventions);
//! - tags are string attributes; read attributes of other types become their text (arrays and maps as
//!   JSON), as OpenTelemetry's Zipkin exporter does;
//! - an `error` tag sets status `ERROR`; status `ERROR` read without an `error` attribute adds the tag
//!   `error` with the status message (or `true`);
//! - annotations are events.
//!
//! Zipkin's `debug` and `shared` have no OTLP field and are lost; so are links, `tracestate`, other
//! resource attributes and the scope.

use crate::id::{SpanId, TraceId};
use crate::span::{tag_key, tags, Annotation, Endpoint, Kind, Span, Str};
use prost::Message;
use std::net::IpAddr;

/// `service.name`.
pub const SERVICE_NAME: &str = "service.name";
/// `network.local.address`.
pub const LOCAL_ADDRESS: &str = "network.local.address";
/// `network.local.port`.
pub const LOCAL_PORT: &str = "network.local.port";
/// `network.peer.address`.
pub const PEER_ADDRESS: &str = "network.peer.address";
/// `network.peer.port`.
pub const PEER_PORT: &str = "network.peer.port";
/// `peer.service`.
pub const PEER_SERVICE: &str = "peer.service";

/// The OTLP protobuf messages (opentelemetry-proto v1: `collector/trace/v1/trace_service.proto`,
/// `trace/v1/trace.proto`, `common/v1/common.proto`, `resource/v1/resource.proto`), and
/// `google.rpc.Status` for error bodies. Fields Weft never reads or writes (the profiles' string
/// indexes, entity references) are left out; prost skips them when it reads.
pub mod pb {
    #![allow(missing_docs)]

    /// `opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }

    /// `opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceResponse {
        #[prost(message, optional, tag = "1")]
        pub partial_success: Option<ExportTracePartialSuccess>,
    }

    /// `opentelemetry.proto.collector.trace.v1.ExportTracePartialSuccess`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTracePartialSuccess {
        #[prost(int64, tag = "1")]
        pub rejected_spans: i64,
        #[prost(string, tag = "2")]
        pub error_message: String,
    }

    /// `opentelemetry.proto.trace.v1.ResourceSpans`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
        #[prost(string, tag = "3")]
        pub schema_url: String,
    }

    /// `opentelemetry.proto.resource.v1.Resource`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
        #[prost(uint32, tag = "2")]
        pub dropped_attributes_count: u32,
    }

    /// `opentelemetry.proto.trace.v1.ScopeSpans`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
        #[prost(string, tag = "3")]
        pub schema_url: String,
    }

    /// `opentelemetry.proto.common.v1.InstrumentationScope`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InstrumentationScope {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
        #[prost(message, repeated, tag = "3")]
        pub attributes: Vec<KeyValue>,
        #[prost(uint32, tag = "4")]
        pub dropped_attributes_count: u32,
    }

    /// `opentelemetry.proto.trace.v1.Span`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(string, tag = "3")]
        pub trace_state: String,
        #[prost(bytes = "vec", tag = "4")]
        pub parent_span_id: Vec<u8>,
        #[prost(fixed32, tag = "16")]
        pub flags: u32,
        #[prost(string, tag = "5")]
        pub name: String,
        #[prost(enumeration = "SpanKind", tag = "6")]
        pub kind: i32,
        #[prost(fixed64, tag = "7")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "8")]
        pub end_time_unix_nano: u64,
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
        #[prost(uint32, tag = "10")]
        pub dropped_attributes_count: u32,
        #[prost(message, repeated, tag = "11")]
        pub events: Vec<Event>,
        #[prost(uint32, tag = "12")]
        pub dropped_events_count: u32,
        #[prost(message, repeated, tag = "13")]
        pub links: Vec<Link>,
        #[prost(uint32, tag = "14")]
        pub dropped_links_count: u32,
        #[prost(message, optional, tag = "15")]
        pub status: Option<Status>,
    }

    /// `opentelemetry.proto.trace.v1.Span.SpanKind`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum SpanKind {
        Unspecified = 0,
        Internal = 1,
        Server = 2,
        Client = 3,
        Producer = 4,
        Consumer = 5,
    }

    /// `opentelemetry.proto.trace.v1.Span.Event`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        #[prost(fixed64, tag = "1")]
        pub time_unix_nano: u64,
        #[prost(string, tag = "2")]
        pub name: String,
        #[prost(message, repeated, tag = "3")]
        pub attributes: Vec<KeyValue>,
        #[prost(uint32, tag = "4")]
        pub dropped_attributes_count: u32,
    }

    /// `opentelemetry.proto.trace.v1.Span.Link`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Link {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(string, tag = "3")]
        pub trace_state: String,
        #[prost(message, repeated, tag = "4")]
        pub attributes: Vec<KeyValue>,
        #[prost(uint32, tag = "5")]
        pub dropped_attributes_count: u32,
        #[prost(fixed32, tag = "6")]
        pub flags: u32,
    }

    /// `opentelemetry.proto.trace.v1.Status` (field 1 is reserved).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(enumeration = "StatusCode", tag = "3")]
        pub code: i32,
    }

    /// `opentelemetry.proto.trace.v1.Status.StatusCode`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum StatusCode {
        Unset = 0,
        Ok = 1,
        Error = 2,
    }

    /// `opentelemetry.proto.common.v1.KeyValue`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }

    /// `opentelemetry.proto.common.v1.AnyValue`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4, 5, 6, 7")]
        pub value: Option<any_value::Value>,
    }

    /// `AnyValue`'s one-of.
    pub mod any_value {
        /// `opentelemetry.proto.common.v1.AnyValue.value`.
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(string, tag = "1")]
            StringValue(String),
            #[prost(bool, tag = "2")]
            BoolValue(bool),
            #[prost(int64, tag = "3")]
            IntValue(i64),
            #[prost(double, tag = "4")]
            DoubleValue(f64),
            #[prost(message, tag = "5")]
            ArrayValue(super::ArrayValue),
            #[prost(message, tag = "6")]
            KvlistValue(super::KeyValueList),
            #[prost(bytes = "vec", tag = "7")]
            BytesValue(Vec<u8>),
        }
    }

    /// `opentelemetry.proto.common.v1.ArrayValue`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ArrayValue {
        #[prost(message, repeated, tag = "1")]
        pub values: Vec<AnyValue>,
    }

    /// `opentelemetry.proto.common.v1.KeyValueList`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValueList {
        #[prost(message, repeated, tag = "1")]
        pub values: Vec<KeyValue>,
    }

    /// `google.rpc.Status`, the body of an OTLP/HTTP error response (details left out).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RpcStatus {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
    }
}

mod json;

use pb::any_value::Value;

/// Why an OTLP request cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not an `ExportTraceServiceRequest` in protobuf.
    #[error("invalid protobuf: {0}")]
    Protobuf(prost::DecodeError),
    /// Not OTLP/JSON.
    #[error("invalid JSON: {0}")]
    Json(serde_json::Error),
    /// A field is wrong (`resourceSpans[0].scopeSpans[0].spans[3].traceId`).
    #[error("{path}: {reason}")]
    Field {
        /// Where, with OTLP/JSON's field names.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// The scope Weft's spans are reported under.
const SCOPE: &str = "weft";

/// `spans` as one export request: one `ResourceSpans` per local service, in order of first appearance.
pub fn encode(spans: &[Span]) -> pb::ExportTraceServiceRequest {
    let mut groups: Vec<(Option<&Str>, Vec<pb::Span>)> = Vec::new();
    for s in spans {
        let service = s
            .local_endpoint
            .as_ref()
            .and_then(|e| e.service_name.as_ref());
        let at = match groups.iter().position(|(n, _)| *n == service) {
            Some(at) => at,
            None => {
                groups.push((service, Vec::new()));
                groups.len() - 1
            }
        };
        groups[at].1.push(to_pb(s));
    }
    pb::ExportTraceServiceRequest {
        resource_spans: groups
            .into_iter()
            .map(|(service, spans)| pb::ResourceSpans {
                resource: Some(pb::Resource {
                    attributes: service
                        .map(|s| vec![string_kv(SERVICE_NAME, s)])
                        .unwrap_or_default(),
                    dropped_attributes_count: 0,
                }),
                scope_spans: vec![pb::ScopeSpans {
                    scope: Some(pb::InstrumentationScope {
                        name: SCOPE.to_string(),
                        version: env!("CARGO_PKG_VERSION").to_string(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

/// `spans` as the protobuf body of an OTLP/HTTP export.
pub fn encode_to_vec(spans: &[Span]) -> Vec<u8> {
    encode(spans).encode_to_vec()
}

/// Reads the protobuf body of an OTLP/HTTP export.
pub fn decode(body: &[u8]) -> Result<Vec<Span>, DecodeError> {
    let req = pb::ExportTraceServiceRequest::decode(body).map_err(DecodeError::Protobuf)?;
    from_request(&req)
}

/// Reads an OTLP/JSON export (ids in hex, enums as numbers, 64-bit integers as strings or numbers).
pub fn decode_json(body: &[u8]) -> Result<Vec<Span>, DecodeError> {
    let req = json::decode(body)?;
    from_request(&req)
}

/// The spans of an export request.
pub fn from_request(req: &pb::ExportTraceServiceRequest) -> Result<Vec<Span>, DecodeError> {
    let n = req
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    let mut out = Vec::with_capacity(n);
    for (i, rs) in req.resource_spans.iter().enumerate() {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == SERVICE_NAME)
            .and_then(|kv| kv.value.as_ref())
            .map(any_text)
            .filter(|s| !s.is_empty())
            .map(Str::from);
        for (j, ss) in rs.scope_spans.iter().enumerate() {
            for (k, s) in ss.spans.iter().enumerate() {
                let at = || format!("resourceSpans[{i}].scopeSpans[{j}].spans[{k}]");
                out.push(from_pb(s, service.clone(), at)?);
            }
        }
    }
    Ok(out)
}

fn to_pb(s: &Span) -> pb::Span {
    let mut attributes = Vec::with_capacity(s.tags.len() + 5);
    if let Some(e) = &s.local_endpoint {
        endpoint_attributes(e, LOCAL_ADDRESS, LOCAL_PORT, &mut attributes);
    }
    if let Some(e) = &s.remote_endpoint {
        if let Some(n) = &e.service_name {
            attributes.push(string_kv(PEER_SERVICE, n));
        }
        endpoint_attributes(e, PEER_ADDRESS, PEER_PORT, &mut attributes);
    }
    attributes.extend(s.tags.iter().map(|(k, v)| string_kv(k, v)));
    let start = s.timestamp.saturating_mul(1000);
    pb::Span {
        trace_id: s.trace_id.get().to_be_bytes().to_vec(),
        span_id: s.id.get().to_be_bytes().to_vec(),
        parent_span_id: s
            .parent_id
            .map(|p| p.get().to_be_bytes().to_vec())
            .unwrap_or_default(),
        name: s.name.to_string(),
        kind: match s.kind {
            None => pb::SpanKind::Unspecified,
            Some(Kind::Server) => pb::SpanKind::Server,
            Some(Kind::Client) => pb::SpanKind::Client,
            Some(Kind::Producer) => pb::SpanKind::Producer,
            Some(Kind::Consumer) => pb::SpanKind::Consumer,
        } as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start.saturating_add(s.duration.saturating_mul(1000)),
        attributes,
        events: s
            .annotations
            .iter()
            .map(|a| pb::Event {
                time_unix_nano: a.timestamp.saturating_mul(1000),
                name: a.value.to_string(),
                ..Default::default()
            })
            .collect(),
        status: s.is_error().then(|| pb::Status {
            message: String::new(),
            code: pb::StatusCode::Error as i32,
        }),
        ..Default::default()
    }
}

fn endpoint_attributes(e: &Endpoint, addr: &str, port: &str, out: &mut Vec<pb::KeyValue>) {
    let ip = e.ipv4.map(IpAddr::V4).or(e.ipv6.map(IpAddr::V6));
    if let Some(ip) = ip {
        out.push(string_kv(addr, &ip.to_string()));
    }
    if let Some(ip6) = e.ipv6.filter(|_| e.ipv4.is_some()) {
        // Both families: the second address has no conventional name; keep it anyway.
        out.push(string_kv(&format!("{addr}.ipv6"), &ip6.to_string()));
    }
    if let Some(p) = e.port {
        out.push(pb::KeyValue {
            key: port.to_string(),
            value: Some(pb::AnyValue {
                value: Some(Value::IntValue(i64::from(p))),
            }),
        });
    }
}

fn string_kv(key: &str, value: &str) -> pb::KeyValue {
    pb::KeyValue {
        key: key.to_string(),
        value: Some(pb::AnyValue {
            value: Some(Value::StringValue(value.to_string())),
        }),
    }
}

fn from_pb(
    s: &pb::Span,
    service: Option<Str>,
    at: impl Fn() -> String,
) -> Result<Span, DecodeError> {
    let bad = |field: &str, reason: String| DecodeError::Field {
        path: format!("{}.{field}", at()),
        reason,
    };
    let trace_id = <[u8; 16]>::try_from(&s.trace_id[..])
        .ok()
        .and_then(|b| TraceId::new(u128::from_be_bytes(b)))
        .ok_or_else(|| bad("traceId", id_reason(&s.trace_id, 16)))?;
    let id = span_id(&s.span_id).ok_or_else(|| bad("spanId", id_reason(&s.span_id, 8)))?;
    let parent_id = match &s.parent_span_id[..] {
        [] => None,
        p => Some(span_id(p).ok_or_else(|| bad("parentSpanId", id_reason(p, 8)))?),
    };
    let kind = match pb::SpanKind::try_from(s.kind) {
        Ok(pb::SpanKind::Server) => Some(Kind::Server),
        Ok(pb::SpanKind::Client) => Some(Kind::Client),
        Ok(pb::SpanKind::Producer) => Some(Kind::Producer),
        Ok(pb::SpanKind::Consumer) => Some(Kind::Consumer),
        _ => None,
    };
    let mut local = Endpoint {
        service_name: service,
        ..Endpoint::default()
    };
    let mut remote = Endpoint::default();
    let mut span_tags = Vec::with_capacity(s.attributes.len());
    for kv in &s.attributes {
        let Some(v) = &kv.value else { continue };
        match kv.key.as_str() {
            LOCAL_ADDRESS => {
                if let Ok(ip) = any_text(v).parse() {
                    local.set_ip(ip);
                    continue;
                }
            }
            PEER_ADDRESS => {
                if let Ok(ip) = any_text(v).parse() {
                    remote.set_ip(ip);
                    continue;
                }
            }
            LOCAL_PORT | PEER_PORT => {
                if let Some(p) = port(v) {
                    let e = if kv.key == LOCAL_PORT {
                        &mut local
                    } else {
                        &mut remote
                    };
                    e.port = Some(p);
                    continue;
                }
            }
            PEER_SERVICE => {
                remote.service_name = Some(Str::from(any_text(v)));
                continue;
            }
            k if k.ends_with(".ipv6")
                && (k.starts_with(LOCAL_ADDRESS) || k.starts_with(PEER_ADDRESS)) =>
            {
                if let Ok(ip) = any_text(v).parse() {
                    let e = if k.starts_with(LOCAL_ADDRESS) {
                        &mut local
                    } else {
                        &mut remote
                    };
                    e.ipv6 = Some(ip);
                    continue;
                }
            }
            _ => {}
        }
        span_tags.push((tag_key(&kv.key), Str::from(any_text(v))));
    }
    let failed = s
        .status
        .as_ref()
        .is_some_and(|st| st.code == pb::StatusCode::Error as i32);
    if failed && !span_tags.iter().any(|(k, _)| k == tags::ERROR) {
        let message = s
            .status
            .as_ref()
            .map(|st| st.message.as_str())
            .unwrap_or("");
        let value = if message.is_empty() {
            Str::from("true")
        } else {
            Str::copy(message)
        };
        span_tags.push((Str::from(tags::ERROR), value));
    }
    let timestamp = s.start_time_unix_nano / 1000;
    Ok(Span {
        trace_id,
        id,
        parent_id,
        name: Str::copy(&s.name),
        kind,
        timestamp,
        duration: (s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano)) / 1000,
        local_endpoint: (!local.is_empty()).then_some(local),
        remote_endpoint: (!remote.is_empty()).then_some(remote),
        annotations: s
            .events
            .iter()
            .map(|e| Annotation {
                timestamp: e.time_unix_nano / 1000,
                value: Str::copy(&e.name),
            })
            .collect(),
        tags: span_tags,
        debug: false,
        shared: false,
    })
}

fn span_id(b: &[u8]) -> Option<SpanId> {
    <[u8; 8]>::try_from(b)
        .ok()
        .and_then(|b| SpanId::new(u64::from_be_bytes(b)))
}

fn id_reason(b: &[u8], want: usize) -> String {
    if b.len() == want {
        "is zero".to_string()
    } else {
        format!("must be {want} bytes, not {}", b.len())
    }
}

fn port(v: &pb::AnyValue) -> Option<u16> {
    match &v.value {
        Some(Value::IntValue(i)) => u16::try_from(*i).ok().filter(|p| *p != 0),
        Some(Value::StringValue(s)) => s.parse().ok().filter(|p| *p != 0),
        _ => None,
    }
}

/// An attribute value as text: strings as they are, the rest as OpenTelemetry's Zipkin exporter writes
/// them (numbers and booleans as their text, arrays and maps as JSON, bytes as base64).
fn any_text(v: &pb::AnyValue) -> String {
    match &v.value {
        None => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BytesValue(b)) => base64(b),
        _ => any_json(v).to_string(),
    }
}

fn any_json(v: &pb::AnyValue) -> serde_json::Value {
    use serde_json::Value as J;
    match &v.value {
        None => J::Null,
        Some(Value::StringValue(s)) => J::String(s.clone()),
        Some(Value::BoolValue(b)) => J::Bool(*b),
        Some(Value::IntValue(i)) => J::from(*i),
        Some(Value::DoubleValue(d)) => J::from(*d),
        Some(Value::ArrayValue(a)) => J::Array(a.values.iter().map(any_json).collect()),
        Some(Value::KvlistValue(l)) => J::Object(
            l.values
                .iter()
                .map(|kv| {
                    let v = kv.value.as_ref().map(any_json).unwrap_or(J::Null);
                    (kv.key.clone(), v)
                })
                .collect(),
        ),
        Some(Value::BytesValue(b)) => J::String(base64(b)),
    }
}

fn base64(b: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | (u32::from(c) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{istio_span, span_pair};

    /// What survives OTLP: everything but `debug` and `shared`.
    fn without_zipkin_only(mut s: Span) -> Span {
        s.debug = false;
        s.shared = false;
        s
    }

    #[test]
    fn spans_round_trip_through_protobuf_and_group_by_service() {
        let (client, server) = span_pair();
        let spans = vec![client, server, istio_span(1), istio_span(2)];
        let req = encode(&spans);
        let services: Vec<String> = req
            .resource_spans
            .iter()
            .map(|r| {
                any_text(
                    r.resource.as_ref().expect("resource").attributes[0]
                        .value
                        .as_ref()
                        .expect("v"),
                )
            })
            .collect();
        assert_eq!(services, ["productpage.default", "reviews.default"]);
        assert_eq!(req.resource_spans[1].scope_spans[0].spans.len(), 3);
        let back = decode(&req.encode_to_vec()).expect("decodes");
        // Grouping reorders: the productpage span first, then the reviews spans in order.
        let want: Vec<Span> = spans.into_iter().map(without_zipkin_only).collect();
        assert_eq!(back, want);
    }

    #[test]
    fn the_wire_is_otlp() {
        let (client, server) = span_pair();
        let req = encode(&[client, server]);
        let s = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(hex(&s.trace_id), "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(hex(&s.span_id), "e457b5a2e4d86bd1");
        assert_eq!(hex(&s.parent_span_id), "05e3ac9a4f6e3b90");
        assert_eq!(s.kind, pb::SpanKind::Client as i32);
        assert_eq!(s.start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(s.end_time_unix_nano, 1_700_000_000_002_500_000);
        assert_eq!(s.status, None);
        let keys: Vec<&str> = s.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "network.local.address",
                "network.local.port",
                "network.peer.address",
                "network.peer.port",
                "http.method",
                "http.status_code",
                "upstream_cluster"
            ]
        );
        let failed = &req.resource_spans[1].scope_spans[0].spans[0];
        assert_eq!(
            failed.status.as_ref().map(|s| s.code),
            Some(pb::StatusCode::Error as i32)
        );
        // Field numbers, checked on the bytes: Span.trace_id is field 1 (tag 0x0a), Span.flags is
        // fixed32 field 16 (tag 0x85 0x01), start_time_unix_nano fixed64 field 7 (tag 0x39).
        let one = pb::Span {
            trace_id: vec![1; 16],
            flags: 1,
            start_time_unix_nano: 2,
            ..Default::default()
        };
        let b = one.encode_to_vec();
        assert_eq!(&b[..2], &[0x0a, 16]);
        assert!(b.windows(2).any(|w| w == [0x85, 0x01]));
        assert!(b.contains(&0x39));
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn foreign_attributes_and_status_are_read() {
        let kv = |k: &str, v: Value| pb::KeyValue {
            key: k.into(),
            value: Some(pb::AnyValue { value: Some(v) }),
        };
        let req = pb::ExportTraceServiceRequest {
            resource_spans: vec![pb::ResourceSpans {
                resource: Some(pb::Resource {
                    attributes: vec![kv(SERVICE_NAME, Value::StringValue("checkout".into()))],
                    dropped_attributes_count: 0,
                }),
                scope_spans: vec![pb::ScopeSpans {
                    spans: vec![pb::Span {
                        trace_id: vec![0xab; 16],
                        span_id: vec![0xcd; 8],
                        name: "charge".into(),
                        kind: pb::SpanKind::Internal as i32,
                        start_time_unix_nano: 5_000,
                        end_time_unix_nano: 1_000,
                        attributes: vec![
                            kv("retries", Value::IntValue(3)),
                            kv("ok", Value::BoolValue(false)),
                            kv("ratio", Value::DoubleValue(0.5)),
                            kv(
                                "list",
                                Value::ArrayValue(pb::ArrayValue {
                                    values: vec![pb::AnyValue {
                                        value: Some(Value::IntValue(1)),
                                    }],
                                }),
                            ),
                            kv("raw", Value::BytesValue(b"hi!?".to_vec())),
                            kv(PEER_SERVICE, Value::StringValue("bank".into())),
                            kv(PEER_PORT, Value::IntValue(443)),
                        ],
                        status: Some(pb::Status {
                            message: "card declined".into(),
                            code: pb::StatusCode::Error as i32,
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
        };
        let spans = from_request(&req).expect("reads");
        let s = &spans[0];
        assert_eq!(s.kind, None, "INTERNAL has no Zipkin kind");
        assert_eq!(s.duration, 0, "an end before the start is no duration");
        assert_eq!(
            s.remote_endpoint,
            Some(Endpoint {
                service_name: Some(Str::from("bank")),
                port: Some(443),
                ..Endpoint::default()
            })
        );
        let got: Vec<(&str, &str)> = s.tags.iter().map(|(k, v)| (&**k, &**v)).collect();
        assert_eq!(
            got,
            [
                ("retries", "3"),
                ("ok", "false"),
                ("ratio", "0.5"),
                ("list", "[1]"),
                ("raw", "aGkhPw=="),
                ("error", "card declined"),
            ]
        );
    }

    #[test]
    fn bad_ids_name_the_span() {
        let mut req = encode(&[istio_span(1), istio_span(2)]);
        req.resource_spans[0].scope_spans[0].spans[1].trace_id = vec![1; 8];
        let e = decode(&req.encode_to_vec()).expect_err("short trace id");
        assert_eq!(
            e.to_string(),
            "resourceSpans[0].scopeSpans[0].spans[1].traceId: must be 16 bytes, not 8"
        );
        req.resource_spans[0].scope_spans[0].spans[1].trace_id = vec![0; 16];
        let e = decode(&req.encode_to_vec()).expect_err("zero trace id");
        assert_eq!(
            e.to_string(),
            "resourceSpans[0].scopeSpans[0].spans[1].traceId: is zero"
        );
        req.resource_spans[0].scope_spans[0].spans[1].trace_id = vec![1; 16];
        req.resource_spans[0].scope_spans[0].spans[1].parent_span_id = vec![1; 3];
        let e = decode(&req.encode_to_vec()).expect_err("bad parent");
        assert_eq!(
            e.to_string(),
            "resourceSpans[0].scopeSpans[0].spans[1].parentSpanId: must be 8 bytes, not 3"
        );
        let e = decode(b"\xff\xff\xff").expect_err("not protobuf");
        assert!(e.to_string().starts_with("invalid protobuf: "), "{e}");
    }
}
