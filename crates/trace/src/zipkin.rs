//! Zipkin's v2 JSON: a list of spans, as `POST /api/v2/spans` takes them and the query API returns them
//! (<https://zipkin.io/zipkin-api/#/default/post_spans>): hex ids, `timestamp` and `duration` in
//! microseconds, `kind` `CLIENT`/`SERVER`/`PRODUCER`/`CONSUMER`, `localEndpoint` and `remoteEndpoint`
//! (`serviceName`, `ipv4`, `ipv6`, `port`), `annotations`, `tags` of strings, `debug` and `shared`.
//!
//! The decoder is as lenient as Zipkin's own where Zipkin is (ids of 1 to 32 or 16 hex digits in either
//! case, tag values that are numbers or booleans, unknown fields) and refuses what Zipkin refuses, with an
//! error that names the span and the field. It keeps what it reads as it is: lower-casing names for
//! queries is the store's business.

use crate::id::{SpanId, TraceId};
use crate::span::{tag_key, Annotation, Endpoint, Kind, Span, Str};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Why a body is not a list of Zipkin v2 spans.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or JSON of the wrong shape (serde's message, with line and column).
    #[error("invalid JSON: {0}")]
    Json(serde_json::Error),
    /// The body is JSON, but not a list.
    #[error("expected a JSON list of spans")]
    NotAList,
    /// A field of one span is wrong.
    #[error("span {index}: {field}: {reason}")]
    Field {
        /// The span's position in the list, from 0.
        index: usize,
        /// The field (`traceId`, `localEndpoint.ipv4`, `annotations[2].value`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// `spans` as a Zipkin v2 JSON list.
pub fn encode(spans: &[Span]) -> Vec<u8> {
    let mut out = Vec::with_capacity(spans.len() * 900);
    encode_into(spans, &mut out);
    out
}

/// `spans` as a Zipkin v2 JSON list, appended to `out`.
pub fn encode_into(spans: &[Span], out: &mut Vec<u8>) {
    // Serializing into a vector fails only if a map key is not a string, which these never are.
    let _ = serde_json::to_writer(&mut *out, &List(spans));
}

/// Spans encoded as a JSON list (what the query API's `/api/v2/traces` returns, a list of these).
pub struct List<'a>(pub &'a [Span]);

impl Serialize for List<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for span in self.0 {
            seq.serialize_element(&Json(span))?;
        }
        seq.end()
    }
}

/// One span in Zipkin v2 JSON.
struct Json<'a>(&'a Span);

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let span = self.0;
        let mut m = s.serialize_map(None)?;
        let mut buf = [0u8; 32];
        m.serialize_entry("traceId", hex(span.trace_id.write_hex(&mut buf)))?;
        let mut buf = [0u8; 16];
        if let Some(p) = span.parent_id {
            m.serialize_entry("parentId", hex(p.write_hex(&mut buf)))?;
        }
        m.serialize_entry("id", hex(span.id.write_hex(&mut buf)))?;
        if let Some(k) = span.kind {
            m.serialize_entry("kind", k.as_str())?;
        }
        if !span.name.is_empty() {
            m.serialize_entry("name", &span.name)?;
        }
        if span.timestamp != 0 {
            m.serialize_entry("timestamp", &span.timestamp)?;
        }
        if span.duration != 0 {
            m.serialize_entry("duration", &span.duration)?;
        }
        if let Some(e) = span.local_endpoint.as_ref().filter(|e| !e.is_empty()) {
            m.serialize_entry("localEndpoint", &JsonEndpoint(e))?;
        }
        if let Some(e) = span.remote_endpoint.as_ref().filter(|e| !e.is_empty()) {
            m.serialize_entry("remoteEndpoint", &JsonEndpoint(e))?;
        }
        if !span.annotations.is_empty() {
            m.serialize_entry("annotations", &JsonAnnotations(&span.annotations))?;
        }
        if !span.tags.is_empty() {
            m.serialize_entry("tags", &JsonTags(&span.tags))?;
        }
        if span.debug {
            m.serialize_entry("debug", &true)?;
        }
        if span.shared {
            m.serialize_entry("shared", &true)?;
        }
        m.end()
    }
}

fn hex(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or_default()
}

struct JsonEndpoint<'a>(&'a Endpoint);

impl Serialize for JsonEndpoint<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut m = s.serialize_map(None)?;
        if let Some(n) = &e.service_name {
            m.serialize_entry("serviceName", n)?;
        }
        if let Some(ip) = e.ipv4 {
            m.serialize_entry("ipv4", &ip)?;
        }
        if let Some(ip) = e.ipv6 {
            m.serialize_entry("ipv6", &ip)?;
        }
        if let Some(p) = e.port {
            m.serialize_entry("port", &p)?;
        }
        m.end()
    }
}

struct JsonAnnotations<'a>(&'a [Annotation]);

impl Serialize for JsonAnnotations<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for a in self.0 {
            seq.serialize_element(&JsonAnnotation(a))?;
        }
        seq.end()
    }
}

struct JsonAnnotation<'a>(&'a Annotation);

impl Serialize for JsonAnnotation<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("timestamp", &self.0.timestamp)?;
        m.serialize_entry("value", &self.0.value)?;
        m.end()
    }
}

struct JsonTags<'a>(&'a [(Str, Str)]);

impl Serialize for JsonTags<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

// === decode ===

/// Reads a Zipkin v2 JSON list of spans.
pub fn decode(body: &[u8]) -> Result<Vec<Span>, DecodeError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'[') {
        // A clearer message than serde's "invalid type" for the common mistakes (an object, v1 JSON
        // with a wrapper, an empty body).
        return match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Err(e) => Err(DecodeError::Json(e)),
            Ok(_) => Err(DecodeError::NotAList),
        };
    }
    let raw: Vec<RawSpan<'_>> = serde_json::from_slice(body).map_err(DecodeError::Json)?;
    raw.into_iter()
        .enumerate()
        .map(|(index, r)| {
            r.into_span().map_err(|(field, reason)| DecodeError::Field {
                index,
                field,
                reason,
            })
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpan<'a> {
    #[serde(borrow, default)]
    trace_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    parent_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(default)]
    timestamp: Option<u64>,
    #[serde(default)]
    duration: Option<u64>,
    #[serde(borrow, default)]
    local_endpoint: Option<RawEndpoint<'a>>,
    #[serde(borrow, default)]
    remote_endpoint: Option<RawEndpoint<'a>>,
    #[serde(borrow, default)]
    annotations: Option<Vec<RawAnnotation<'a>>>,
    #[serde(borrow, default)]
    tags: Option<RawTags<'a>>,
    #[serde(default)]
    debug: Option<bool>,
    #[serde(default)]
    shared: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEndpoint<'a> {
    #[serde(borrow, default)]
    service_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    ipv4: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    ipv6: Option<Cow<'a, str>>,
    #[serde(default)]
    port: Option<u16>,
}

#[derive(Deserialize)]
struct RawAnnotation<'a> {
    #[serde(default)]
    timestamp: Option<u64>,
    #[serde(borrow, default)]
    value: Option<Cow<'a, str>>,
}

/// Tags in the order they came, values as text (Zipkin reads numbers and booleans as their text).
struct RawTags<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

type FieldError = (String, String);

fn field_error(field: &str, reason: impl Into<String>) -> FieldError {
    (field.to_string(), reason.into())
}

impl RawSpan<'_> {
    fn into_span(self) -> Result<Span, FieldError> {
        let trace_id = match self.trace_id.as_deref() {
            None => return Err(field_error("traceId", "missing")),
            Some(t) => TraceId::parse_lenient(t).ok_or_else(|| {
                field_error(
                    "traceId",
                    format!("{t:?} is not 16 or 32 hex digits (or is zero)"),
                )
            })?,
        };
        let id = match self.id.as_deref() {
            None => return Err(field_error("id", "missing")),
            Some(s) => SpanId::parse_lenient(s).ok_or_else(|| {
                field_error("id", format!("{s:?} is not 16 hex digits (or is zero)"))
            })?,
        };
        let parent_id = match self.parent_id.as_deref() {
            None => None,
            Some(s) => Some(SpanId::parse_lenient(s).ok_or_else(|| {
                field_error(
                    "parentId",
                    format!("{s:?} is not 16 hex digits (or is zero)"),
                )
            })?),
        };
        let kind = match self.kind.as_deref() {
            None => None,
            Some("CLIENT") => Some(Kind::Client),
            Some("SERVER") => Some(Kind::Server),
            Some("PRODUCER") => Some(Kind::Producer),
            Some("CONSUMER") => Some(Kind::Consumer),
            Some(k) => {
                return Err(field_error(
                    "kind",
                    format!("{k:?} is not CLIENT, SERVER, PRODUCER or CONSUMER"),
                ))
            }
        };
        let local_endpoint = endpoint("localEndpoint", self.local_endpoint)?;
        let remote_endpoint = endpoint("remoteEndpoint", self.remote_endpoint)?;
        let annotations = self
            .annotations
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, a)| match (a.timestamp, a.value) {
                (Some(timestamp), Some(value)) => Ok(Annotation {
                    timestamp,
                    value: Str::from(value.into_owned()),
                }),
                (None, _) => Err(field_error(
                    &format!("annotations[{i}].timestamp"),
                    "missing",
                )),
                (_, None) => Err(field_error(&format!("annotations[{i}].value"), "missing")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tags = self
            .tags
            .map(|t| {
                t.0.into_iter()
                    .map(|(k, v)| (tag_key(&k), Str::from(v.into_owned())))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Span {
            trace_id,
            id,
            parent_id,
            name: self
                .name
                .map(|n| Str::from(n.into_owned()))
                .unwrap_or_else(|| Str::from("")),
            kind,
            timestamp: self.timestamp.unwrap_or(0),
            duration: self.duration.unwrap_or(0),
            local_endpoint,
            remote_endpoint,
            annotations,
            tags,
            debug: self.debug.unwrap_or(false),
            shared: self.shared.unwrap_or(false),
        })
    }
}

fn endpoint(field: &str, raw: Option<RawEndpoint<'_>>) -> Result<Option<Endpoint>, FieldError> {
    let Some(raw) = raw else { return Ok(None) };
    let ipv4 = match raw.ipv4.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<Ipv4Addr>().map_err(|_| {
            field_error(
                &format!("{field}.ipv4"),
                format!("{s:?} is not an IPv4 address"),
            )
        })?),
    };
    let ipv6 = match raw.ipv6.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<Ipv6Addr>().map_err(|_| {
            field_error(
                &format!("{field}.ipv6"),
                format!("{s:?} is not an IPv6 address"),
            )
        })?),
    };
    let e = Endpoint {
        service_name: raw
            .service_name
            .filter(|s| !s.is_empty())
            .map(|s| Str::from(s.into_owned())),
        ipv4,
        ipv6,
        port: raw.port.filter(|p| *p != 0),
    };
    Ok((!e.is_empty()).then_some(e))
}

impl<'de: 'a, 'a> Deserialize<'de> for RawTags<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Tags<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Tags<'a> {
            type Value = RawTags<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string tags")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<RawTags<'a>, M::Error> {
                let mut tags = Vec::with_capacity(m.size_hint().unwrap_or(16));
                while let Some((k, v)) = m.next_entry::<Cow<'a, str>, TagValue<'a>>()? {
                    tags.push((k, v.0));
                }
                Ok(RawTags(tags))
            }
        }
        d.deserialize_map(Tags(std::marker::PhantomData))
    }
}

/// A tag's value: a string, or a number or boolean read as its text.
struct TagValue<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for TagValue<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = TagValue<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string tag value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<TagValue<'a>, E> {
                Ok(TagValue(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TagValue<'a>, E> {
                Ok(TagValue(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<TagValue<'a>, E> {
                Ok(TagValue(Cow::Owned(v)))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<TagValue<'a>, E> {
                Ok(TagValue(Cow::Borrowed(if v { "true" } else { "false" })))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TagValue<'a>, E> {
                Ok(TagValue(Cow::Owned(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TagValue<'a>, E> {
                Ok(TagValue(Cow::Owned(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<TagValue<'a>, E> {
                Ok(TagValue(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{istio_span, span_pair};

    #[test]
    fn a_list_round_trips() {
        let (client, server) = span_pair();
        let spans = vec![client, server, istio_span(3)];
        let json = encode(&spans);
        let back = decode(&json).expect("decodes");
        assert_eq!(back, spans);
    }

    #[test]
    fn the_encoding_is_zipkins() {
        let (client, _) = span_pair();
        let v: serde_json::Value = serde_json::from_slice(&encode(&[client])).expect("json");
        let want = serde_json::json!([{
            "traceId": "80f198ee56343ba864fe8b2a57d3eff7",
            "parentId": "05e3ac9a4f6e3b90",
            "id": "e457b5a2e4d86bd1",
            "kind": "CLIENT",
            "name": "reviews.default.svc.cluster.local:9080/*",
            "timestamp": 1_700_000_000_000_000u64,
            "duration": 2500,
            "localEndpoint": {"serviceName": "productpage.default", "ipv4": "127.0.1.1", "port": 9080},
            "remoteEndpoint": {"ipv6": "::1", "port": 9080},
            "annotations": [{"timestamp": 1_700_000_000_000_100u64, "value": "retry"}],
            "tags": {"http.method": "GET", "http.status_code": "200", "upstream_cluster": "outbound|9080||reviews.default.svc.cluster.local"},
        }]);
        assert_eq!(v, want);
    }

    #[test]
    fn what_zipkin_takes_leniently() {
        let body = br#"[{"traceId":"A","id":"B","parentId":"1","kind":"SERVER","unknown":{"x":1},
            "tags":{"n":5,"b":true,"f":1.5,"s":"x"},"localEndpoint":{"serviceName":"","port":0},
            "remoteEndpoint":null,"timestamp":null}]"#;
        let spans = decode(body).expect("decodes");
        let s = &spans[0];
        assert_eq!(s.trace_id.to_string(), "000000000000000a");
        assert_eq!(s.id.to_string(), "000000000000000b");
        assert_eq!(s.local_endpoint, None, "an empty endpoint is none");
        let tags: Vec<(&str, &str)> = s.tags.iter().map(|(k, v)| (&**k, &**v)).collect();
        assert_eq!(tags, [("n", "5"), ("b", "true"), ("f", "1.5"), ("s", "x")]);
        assert_eq!(decode(b" [ ] ").expect("empty list"), vec![]);
    }

    #[test]
    fn bad_input_names_the_problem() {
        let cases: &[(&str, &str)] = &[
            (
                "",
                "invalid JSON: EOF while parsing a value at line 1 column 0",
            ),
            ("{\"traceId\":\"a\"}", "expected a JSON list of spans"),
            ("[{\"id\":\"1\"}]", "span 0: traceId: missing"),
            (
                "[{\"traceId\":\"1\",\"id\":\"1\"},{\"traceId\":\"xyz\",\"id\":\"1\"}]",
                "span 1: traceId: \"xyz\" is not 16 or 32 hex digits (or is zero)",
            ),
            ("[{\"traceId\":\"1\"}]", "span 0: id: missing"),
            (
                "[{\"traceId\":\"1\",\"id\":\"00000000000000000\"}]",
                "span 0: id: \"00000000000000000\" is not 16 hex digits (or is zero)",
            ),
            (
                "[{\"traceId\":\"1\",\"id\":\"1\",\"parentId\":\"\"}]",
                "span 0: parentId: \"\" is not 16 hex digits (or is zero)",
            ),
            (
                "[{\"traceId\":\"1\",\"id\":\"1\",\"kind\":\"client\"}]",
                "span 0: kind: \"client\" is not CLIENT, SERVER, PRODUCER or CONSUMER",
            ),
            (
                "[{\"traceId\":\"1\",\"id\":\"1\",\"localEndpoint\":{\"ipv4\":\"1.2.3\"}}]",
                "span 0: localEndpoint.ipv4: \"1.2.3\" is not an IPv4 address",
            ),
            (
                "[{\"traceId\":\"1\",\"id\":\"1\",\"remoteEndpoint\":{\"ipv6\":\"1.2.3.4\"}}]",
                "span 0: remoteEndpoint.ipv6: \"1.2.3.4\" is not an IPv6 address",
            ),
            (
                "[{\"traceId\":\"1\",\"id\":\"1\",\"annotations\":[{\"value\":\"x\"}]}]",
                "span 0: annotations[0].timestamp: missing",
            ),
            (
                "[{\"traceId\":\"1\",\"id\":\"1\",\"tags\":{\"a\":{}}}]",
                "invalid JSON: invalid type: map, expected a string tag value at line 1 column 39",
            ),
            (
                "[{\"traceId\":\"1\",\"id\":\"1\",\"timestamp\":-1}]",
                "invalid JSON: invalid value: integer `-1`, expected u64 at line 1 column 39",
            ),
            (
                "[{\"traceId\":\"1\",\"id\":\"1\",\"localEndpoint\":{\"port\":70000}}]",
                "invalid JSON: invalid value: integer `70000`, expected u16 at line 1 column 54",
            ),
        ];
        for (body, want) in cases {
            let got = decode(body.as_bytes()).expect_err(body).to_string();
            assert_eq!(&got, want, "{body}");
        }
    }
}
