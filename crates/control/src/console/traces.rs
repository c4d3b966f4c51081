//! Where the console's traces come from: a [`TraceSource`] in the shape of Zipkin's v2 query API
//! (services, a search, one trace), answering in Zipkin v2 JSON. [`Builtin`] reads weftd's own
//! [`TraceStore`] (fed by its collector); [`Zipkin`] asks a Zipkin server (`--tracing-url`). The
//! console turns either answer into the same [`Summary`] list and span waterfall.

use super::http::{self, Url};
use super::source::SourceError;
use super::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use weft_trace::store::{Query, TraceStore};

/// A trace search, as the console's traces page asks it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Search {
    /// Only traces with a span of this service.
    pub service: Option<String>,
    /// Only traces with a span of this service lasting at least this long, µs.
    pub min_duration_us: Option<u64>,
    /// Only traces with a failed span.
    pub errors_only: bool,
    /// How far back, ms.
    pub lookback_ms: u64,
    /// Most traces.
    pub limit: usize,
}

/// A source of traces in Zipkin's shape: each span a Zipkin v2 JSON object.
pub trait TraceSource: Send + Sync {
    /// `built-in` or `zipkin <url>`.
    fn describe(&self) -> String;
    /// Service names, sorted.
    fn services(&self) -> BoxFuture<'_, Result<Vec<String>, SourceError>>;
    /// The traces that match, most recent first.
    fn search<'a>(&'a self, s: &'a Search) -> BoxFuture<'a, Result<Vec<Vec<Value>>, SourceError>>;
    /// One trace's spans; `None` when the source has no such trace.
    fn trace<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Vec<Value>>, SourceError>>;
}

/// weftd's own trace store.
pub struct Builtin {
    store: Arc<TraceStore>,
}

impl Builtin {
    /// Reads `store`.
    pub fn new(store: Arc<TraceStore>) -> Builtin {
        Builtin { store }
    }
}

fn spans_json(spans: &[weft_trace::Span]) -> Vec<Value> {
    serde_json::from_slice(&weft_trace::zipkin::encode(spans)).unwrap_or_default()
}

impl TraceSource for Builtin {
    fn describe(&self) -> String {
        "built-in".into()
    }

    fn services(&self) -> BoxFuture<'_, Result<Vec<String>, SourceError>> {
        let names = self
            .store
            .services()
            .iter()
            .map(|s| s.to_string())
            .collect();
        Box::pin(async move { Ok(names) })
    }

    fn search<'a>(&'a self, s: &'a Search) -> BoxFuture<'a, Result<Vec<Vec<Value>>, SourceError>> {
        let q = Query {
            service_name: s.service.clone(),
            min_duration: s.min_duration_us,
            errors_only: s.errors_only,
            lookback: s.lookback_ms,
            limit: s.limit,
            ..Query::default()
        };
        let store = self.store.clone();
        Box::pin(async move {
            // A scan of every stored trace: off the runtime threads.
            tokio::task::spawn_blocking(move || {
                store.traces(&q).iter().map(|t| spans_json(t)).collect()
            })
            .await
            .map_err(|_| SourceError::Task)
        })
    }

    fn trace<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Vec<Value>>, SourceError>> {
        let found = weft_trace::TraceId::parse_lenient(id)
            .and_then(|id| self.store.trace(id))
            .map(|spans| spans_json(&spans));
        Box::pin(async move { Ok(found) })
    }
}

/// A Zipkin server's query API.
pub struct Zipkin {
    url: Url,
}

const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_ANSWER: usize = 32 * 1024 * 1024;

impl Zipkin {
    /// Asks the Zipkin at `url`.
    pub fn new(url: Url) -> Zipkin {
        Zipkin { url }
    }

    async fn get(&self, path: &str) -> Result<Option<Value>, SourceError> {
        let (status, body) = self.url.get(path, TIMEOUT, MAX_ANSWER).await?;
        if status == 404 {
            return Ok(None);
        }
        if status != 200 {
            return Err(SourceError::Http(http::Error::Status {
                authority: self.url.authority.clone(),
                path: path.into(),
                status,
            }));
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| SourceError::Query {
                query: path.into(),
                reason: format!("answer is not JSON: {e}"),
            })
    }
}

/// Zipkin's `/api/v2/traces` query for a search. "Errors only" is Zipkin's `annotationQuery=error`
/// (a span with an `error` tag).
pub fn zipkin_query(s: &Search) -> String {
    let mut q = format!(
        "/api/v2/traces?limit={}&lookback={}",
        s.limit, s.lookback_ms
    );
    if let Some(svc) = &s.service {
        q.push_str(&format!("&serviceName={}", http::encode(svc)));
    }
    if let Some(d) = s.min_duration_us {
        q.push_str(&format!("&minDuration={d}"));
    }
    if s.errors_only {
        q.push_str("&annotationQuery=error");
    }
    q
}

impl TraceSource for Zipkin {
    fn describe(&self) -> String {
        format!("zipkin {}", self.url)
    }

    fn services(&self) -> BoxFuture<'_, Result<Vec<String>, SourceError>> {
        Box::pin(async move {
            let v = self.get("/api/v2/services").await?.unwrap_or_default();
            Ok(serde_json::from_value(v).unwrap_or_default())
        })
    }

    fn search<'a>(&'a self, s: &'a Search) -> BoxFuture<'a, Result<Vec<Vec<Value>>, SourceError>> {
        Box::pin(async move {
            let v = self.get(&zipkin_query(s)).await?.unwrap_or_default();
            Ok(serde_json::from_value(v).unwrap_or_default())
        })
    }

    fn trace<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Vec<Value>>, SourceError>> {
        Box::pin(async move {
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(None);
            }
            let v = self.get(&format!("/api/v2/trace/{id}")).await?;
            Ok(v.and_then(|v| serde_json::from_value(v).ok()))
        })
    }
}

/// One line of the trace list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Trace id (hex).
    pub trace_id: String,
    /// The root span's service (the earliest span's, without a root).
    pub root_service: String,
    /// The root span's name.
    pub root_name: String,
    /// Start, µs since the epoch.
    pub start_us: u64,
    /// From the first span's start to the last one's end, µs.
    pub duration_us: u64,
    /// Spans.
    pub spans: usize,
    /// Services, sorted.
    pub services: Vec<String>,
    /// Whether a span failed (an `error` tag, or an HTTP status of 500 or more).
    pub error: bool,
}

/// Whether a Zipkin span failed.
pub fn span_failed(span: &Value) -> bool {
    let tags = &span["tags"];
    tags.get("error").is_some()
        || tags["http.status_code"]
            .as_str()
            .and_then(|c| c.parse::<u16>().ok())
            .is_some_and(|c| c >= 500)
}

/// Summarises a trace's Zipkin spans; `None` for an empty trace.
pub fn summarise(spans: &[Value]) -> Option<Summary> {
    let first = spans.first()?;
    let start = |s: &Value| s["timestamp"].as_u64().unwrap_or(u64::MAX);
    let end = |s: &Value| start(s).saturating_add(s["duration"].as_u64().unwrap_or(0));
    let start_us = spans.iter().map(start).min().unwrap_or(0);
    let end_us = spans
        .iter()
        .map(end)
        .filter(|e| *e != u64::MAX)
        .max()
        .unwrap_or(start_us);
    let root = spans
        .iter()
        .filter(|s| s["parentId"].is_null())
        .min_by_key(|s| start(s))
        .or_else(|| spans.iter().min_by_key(|s| start(s)))
        .unwrap_or(first);
    let service = |s: &Value| {
        s["localEndpoint"]["serviceName"]
            .as_str()
            .map(str::to_string)
    };
    let services: BTreeSet<String> = spans.iter().filter_map(service).collect();
    Some(Summary {
        trace_id: first["traceId"].as_str().unwrap_or_default().to_string(),
        root_service: service(root).unwrap_or_default(),
        root_name: root["name"].as_str().unwrap_or_default().to_string(),
        start_us,
        duration_us: end_us.saturating_sub(start_us),
        spans: spans.len(),
        services: services.into_iter().collect(),
        error: spans.iter().any(span_failed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_of_a_bookinfo_trace() {
        let spans: Vec<Value> = serde_json::from_str(
            r#"[
            {"traceId":"aa","id":"1","name":"productpage.default.svc.cluster.local:9080/*","timestamp":1000,"duration":5000,
             "localEndpoint":{"serviceName":"productpage.default"},"tags":{"http.status_code":"200"}},
            {"traceId":"aa","id":"2","parentId":"1","name":"reviews","timestamp":2000,"duration":4500,
             "localEndpoint":{"serviceName":"productpage.default"},"tags":{"http.status_code":"503","response_flags":"UF"}},
            {"traceId":"aa","id":"3","parentId":"2","name":"reviews","timestamp":2100,"duration":100,
             "localEndpoint":{"serviceName":"reviews.default"}}
            ]"#,
        )
        .expect("json");
        let s = summarise(&spans).expect("a trace");
        assert_eq!(s.trace_id, "aa");
        assert_eq!(s.root_service, "productpage.default");
        assert_eq!((s.start_us, s.duration_us, s.spans), (1000, 6500 - 1000, 3));
        assert_eq!(s.services, ["productpage.default", "reviews.default"]);
        assert!(s.error, "a 503 span");
        assert_eq!(summarise(&[]), None);
    }

    #[test]
    fn zipkin_queries() {
        let s = Search {
            service: Some("reviews.default".into()),
            min_duration_us: Some(100_000),
            errors_only: true,
            lookback_ms: 3_600_000,
            limit: 20,
        };
        assert_eq!(
            zipkin_query(&s),
            "/api/v2/traces?limit=20&lookback=3600000&serviceName=reviews.default&minDuration=100000&annotationQuery=error"
        );
    }
}
