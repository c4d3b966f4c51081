//! OTLP/JSON (the protobuf messages in proto3's JSON mapping, with OTLP's exceptions: trace and span ids
//! in hex, not base64; enums as numbers), read into the protobuf messages so one mapping serves both.

use super::{pb, DecodeError};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;

/// Reads an OTLP/JSON `ExportTraceServiceRequest`.
pub(super) fn decode(body: &[u8]) -> Result<pb::ExportTraceServiceRequest, DecodeError> {
    let req: Export = serde_json::from_slice(body).map_err(DecodeError::Json)?;
    let mut out = pb::ExportTraceServiceRequest::default();
    for (i, rs) in req.resource_spans.into_iter().enumerate() {
        let mut scope_spans = Vec::with_capacity(rs.scope_spans.len());
        for (j, ss) in rs.scope_spans.into_iter().enumerate() {
            let mut spans = Vec::with_capacity(ss.spans.len());
            for (k, s) in ss.spans.into_iter().enumerate() {
                let at =
                    |field: &str| format!("resourceSpans[{i}].scopeSpans[{j}].spans[{k}].{field}");
                spans.push(pb::Span {
                    trace_id: hex_id(&s.trace_id, 16).map_err(|reason| DecodeError::Field {
                        path: at("traceId"),
                        reason,
                    })?,
                    span_id: hex_id(&s.span_id, 8).map_err(|reason| DecodeError::Field {
                        path: at("spanId"),
                        reason,
                    })?,
                    parent_span_id: match s.parent_span_id.as_str() {
                        "" => Vec::new(),
                        p => hex_id(p, 8).map_err(|reason| DecodeError::Field {
                            path: at("parentSpanId"),
                            reason,
                        })?,
                    },
                    name: s.name,
                    kind: s.kind,
                    start_time_unix_nano: s.start_time_unix_nano.0,
                    end_time_unix_nano: s.end_time_unix_nano.0,
                    attributes: key_values(s.attributes),
                    events: s
                        .events
                        .into_iter()
                        .map(|e| pb::Event {
                            time_unix_nano: e.time_unix_nano.0,
                            name: e.name,
                            ..Default::default()
                        })
                        .collect(),
                    status: s.status.map(|st| pb::Status {
                        message: st.message,
                        code: st.code,
                    }),
                    ..Default::default()
                });
            }
            scope_spans.push(pb::ScopeSpans {
                spans,
                ..Default::default()
            });
        }
        out.resource_spans.push(pb::ResourceSpans {
            resource: rs.resource.map(|r| pb::Resource {
                attributes: key_values(r.attributes),
                dropped_attributes_count: 0,
            }),
            scope_spans,
            schema_url: String::new(),
        });
    }
    Ok(out)
}

/// A hex id of `bytes` bytes (either case).
fn hex_id(s: &str, bytes: usize) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    if b.len() != bytes * 2 {
        return Err(format!("{s:?} is not {} hex digits", bytes * 2));
    }
    b.chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| format!("{s:?} is not {} hex digits", bytes * 2))
        })
        .collect()
}

fn key_values(kvs: Vec<KeyValue>) -> Vec<pb::KeyValue> {
    kvs.into_iter()
        .map(|kv| pb::KeyValue {
            key: kv.key,
            value: kv.value.map(any_value),
        })
        .collect()
}

fn any_value(v: AnyValue) -> pb::AnyValue {
    use pb::any_value::Value;
    let value = if let Some(s) = v.string_value {
        Some(Value::StringValue(s))
    } else if let Some(b) = v.bool_value {
        Some(Value::BoolValue(b))
    } else if let Some(i) = v.int_value {
        Some(Value::IntValue(i.0))
    } else if let Some(d) = v.double_value {
        Some(Value::DoubleValue(d))
    } else if let Some(a) = v.array_value {
        Some(Value::ArrayValue(pb::ArrayValue {
            values: a.values.into_iter().map(any_value).collect(),
        }))
    } else if let Some(l) = v.kvlist_value {
        Some(Value::KvlistValue(pb::KeyValueList {
            values: key_values(l.values),
        }))
    } else {
        // Bytes are base64 in JSON: kept as that text.
        v.bytes_value.map(Value::StringValue)
    };
    pb::AnyValue { value }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Export {
    #[serde(default)]
    resource_spans: Vec<ResourceSpans>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceSpans {
    #[serde(default)]
    resource: Option<Resource>,
    #[serde(default)]
    scope_spans: Vec<ScopeSpans>,
}

#[derive(Deserialize)]
struct Resource {
    #[serde(default)]
    attributes: Vec<KeyValue>,
}

#[derive(Deserialize)]
struct ScopeSpans {
    #[serde(default)]
    spans: Vec<Span>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Span {
    #[serde(default)]
    trace_id: String,
    #[serde(default)]
    span_id: String,
    #[serde(default)]
    parent_span_id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    kind: i32,
    #[serde(default)]
    start_time_unix_nano: U64,
    #[serde(default)]
    end_time_unix_nano: U64,
    #[serde(default)]
    attributes: Vec<KeyValue>,
    #[serde(default)]
    events: Vec<Event>,
    #[serde(default)]
    status: Option<Status>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    #[serde(default)]
    time_unix_nano: U64,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    message: String,
    #[serde(default)]
    code: i32,
}

#[derive(Deserialize)]
struct KeyValue {
    key: String,
    #[serde(default)]
    value: Option<AnyValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnyValue {
    #[serde(default)]
    string_value: Option<String>,
    #[serde(default)]
    bool_value: Option<bool>,
    #[serde(default)]
    int_value: Option<I64>,
    #[serde(default)]
    double_value: Option<f64>,
    #[serde(default)]
    array_value: Option<ArrayValue>,
    #[serde(default)]
    kvlist_value: Option<KeyValueList>,
    #[serde(default)]
    bytes_value: Option<String>,
}

#[derive(Deserialize)]
struct ArrayValue {
    #[serde(default)]
    values: Vec<AnyValue>,
}

#[derive(Deserialize)]
struct KeyValueList {
    #[serde(default)]
    values: Vec<KeyValue>,
}

/// A 64-bit unsigned integer as proto3 JSON writes it: a decimal string, or a number.
#[derive(Default)]
struct U64(u64);

/// A 64-bit signed integer, likewise.
struct I64(i64);

impl<'de> Deserialize<'de> for U64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = U64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an unsigned 64-bit integer, as a number or a decimal string")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<U64, E> {
                Ok(U64(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<U64, E> {
                v.parse()
                    .map(U64)
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for I64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = I64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 64-bit integer, as a number or a decimal string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<I64, E> {
                Ok(I64(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<I64, E> {
                i64::try_from(v)
                    .map(I64)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<I64, E> {
                v.parse()
                    .map(I64)
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::super::decode_json;
    use crate::span::Kind;

    #[test]
    fn otlp_json_is_read() {
        let body = br#"{"resourceSpans":[{"resource":{"attributes":[
              {"key":"service.name","value":{"stringValue":"frontend"}}]},
            "scopeSpans":[{"scope":{"name":"my.library"},"spans":[{
              "traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174",
              "parentSpanId":"EEE19B7EC3C1B173","name":"I'm a server span",
              "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,
              "kind":2,"attributes":[{"key":"my.span.attr","value":{"intValue":"42"}}],
              "events":[{"timeUnixNano":"1544712660500000000","name":"cache miss"}],
              "status":{"code":2}}]}]}]}"#;
        let spans = decode_json(body).expect("reads");
        let s = &spans[0];
        assert_eq!(s.trace_id.to_string(), "5b8efff798038103d269b633813fc60c");
        assert_eq!(
            s.parent_id.map(|p| p.to_string()).as_deref(),
            Some("eee19b7ec3c1b173")
        );
        assert_eq!(s.kind, Some(Kind::Server));
        assert_eq!(s.timestamp, 1_544_712_660_000_000);
        assert_eq!(s.duration, 1_000_000);
        assert_eq!(
            s.local_endpoint
                .as_ref()
                .and_then(|e| e.service_name.as_deref()),
            Some("frontend")
        );
        assert_eq!(s.tag_value("my.span.attr").map(|v| &**v), Some("42"));
        assert_eq!(s.tag_value("error").map(|v| &**v), Some("true"));
        assert_eq!(s.annotations[0].timestamp, 1_544_712_660_500_000);
    }

    #[test]
    fn bad_otlp_json_names_the_field() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz","spanId":"EEE19B7EC3C1B174"}]}]}]}"#,
                r#"resourceSpans[0].scopeSpans[0].spans[0].traceId: "xyz" is not 32 hex digits"#,
            ),
            (
                r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":""}]}]}]}"#,
                r#"resourceSpans[0].scopeSpans[0].spans[0].spanId: "" is not 16 hex digits"#,
            ),
            (
                r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"soon"}]}]}]}"#,
                r#"invalid JSON: invalid value: string "soon", expected an unsigned 64-bit integer, as a number or a decimal string at line 1 column 70"#,
            ),
            ("42", "invalid JSON: invalid type: integer `42`, expected struct Export at line 1 column 2"),
        ];
        for (body, want) in cases {
            let got = decode_json(body.as_bytes()).expect_err(body).to_string();
            assert_eq!(&got, want, "{body}");
        }
    }
}
