//! The console's routes: its pages and libraries (embedded in weftd), and the JSON API behind them.
//! The shapes are documented in the crate README; every handler answers `400` with a message naming
//! the parameter for a bad query, and `502` naming the source when the source fails.

use super::graph;
use super::http::query_pairs;
use super::source::{Range, Selector};
use super::traces::{summarise, Search};
use super::Console;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

/// The embedded front end: path, content type, bytes.
const ASSETS: [(&str, &str, &[u8]); 10] = [
    ("/", HTML, include_bytes!("../../console/index.html")),
    (
        "/console.js",
        JS,
        include_bytes!("../../console/console.js"),
    ),
    (
        "/console.css",
        CSS,
        include_bytes!("../../console/console.css"),
    ),
    (
        "/vendor/cytoscape.min.js",
        JS,
        include_bytes!("../../console/vendor/cytoscape.min.js"),
    ),
    (
        "/vendor/uPlot.iife.min.js",
        JS,
        include_bytes!("../../console/vendor/uPlot.iife.min.js"),
    ),
    (
        "/vendor/uPlot.min.css",
        CSS,
        include_bytes!("../../console/vendor/uPlot.min.css"),
    ),
    (
        "/vendor/cytoscape.LICENSE",
        TEXT,
        include_bytes!("../../console/vendor/cytoscape.LICENSE"),
    ),
    (
        "/vendor/uPlot.LICENSE",
        TEXT,
        include_bytes!("../../console/vendor/uPlot.LICENSE"),
    ),
    (
        "/vendor/SHA256SUMS",
        TEXT,
        include_bytes!("../../console/vendor/SHA256SUMS"),
    ),
    ("/favicon.ico", TEXT, b""),
];
const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// The longest window or range asked of the console.
pub const MAX_RANGE: Duration = Duration::from_secs(24 * 3600);
/// Points a chart may have at most.
pub const MAX_POINTS: u64 = 11_000;

/// The routes, over `console`.
pub fn router(console: Console) -> Router {
    let mut r = Router::new();
    for (path, content_type, bytes) in ASSETS {
        r = r.route(
            path,
            get(move || async move {
                let mut resp = Response::new(Body::from(bytes));
                resp.headers_mut()
                    .insert(CONTENT_TYPE, http::HeaderValue::from_static(content_type));
                resp
            }),
        );
    }
    r.route("/api/status", get(status))
        .route("/api/graph", get(graph))
        .route("/api/metrics", get(metrics))
        .route("/api/traces", get(traces))
        .route("/api/traces/{id}", get(trace))
        .route("/api/trace-services", get(trace_services))
        .route("/api/config", get(config))
        .with_state(console)
}

fn text(status: StatusCode, message: String) -> Response {
    let mut r = Response::new(Body::from(message + "\n"));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, http::HeaderValue::from_static(TEXT));
    r
}

/// A bad query: 400 with the message.
fn bad(message: String) -> Response {
    text(StatusCode::BAD_REQUEST, message)
}

fn json(v: &Value) -> Response {
    let mut r = Response::new(Body::from(serde_json::to_vec(v).unwrap_or_default()));
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    h.insert(CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    r
}

/// A source's failure, with its cause chain.
fn failed(what: &str, e: &dyn std::error::Error) -> Response {
    let mut message = format!("{what}: {e}");
    let mut cause = e.source();
    while let Some(c) = cause {
        message.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text(StatusCode::BAD_GATEWAY, message)
}

/// The query's parameters, by name (the last of a repeated name wins).
struct Params(Vec<(String, String)>);

impl Params {
    fn new(q: Option<String>) -> Params {
        Params(query_pairs(q.as_deref().unwrap_or_default()))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    fn duration(&self, key: &str, default: Duration) -> Result<Duration, String> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        let d = weft_api::Duration::parse(v)
            .map(|d| d.get())
            .map_err(|e| format!("{key}: {v:?}: {e}"))?;
        if d < Duration::from_secs(1) || d > MAX_RANGE {
            return Err(format!("{key}: {v:?} must be between 1s and 24h"));
        }
        Ok(d)
    }

    fn number(&self, key: &str, default: u64) -> Result<u64, String> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("{key}: {v:?} is not a whole number")),
        }
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

async fn status(State(c): State<Console>) -> Response {
    let s = &c.inner.settings;
    let window = c.inner.builtin.as_ref().map(|(w, _)| {
        let w = w.lock().unwrap_or_else(|p| p.into_inner());
        json!({ "stats": w.stats(), "latest_scrape_ms": w.latest() })
    });
    json(&json!({
        "metrics": c.inner.metrics.describe(),
        "traces": c.inner.traces.describe(),
        "scrape_interval_s": s.scrape_interval.as_secs_f64(),
        "retention_s": s.retention.as_secs_f64(),
        "window": window,
    }))
}

async fn graph(State(c): State<Console>, RawQuery(q): RawQuery) -> Response {
    let p = Params::new(q);
    let window = match p.duration("window", Duration::from_secs(60)) {
        Ok(w) => w,
        Err(e) => return bad(e),
    };
    match c.inner.metrics.traffic(window).await {
        Ok((at, rows)) => {
            let g = graph::build(&rows);
            json(&json!({
                "window_s": window.as_secs_f64(),
                "timestamp_ms": at,
                "source": c.inner.metrics.describe(),
                "nodes": g.nodes,
                "edges": g.edges,
            }))
        }
        Err(e) => failed("metrics source", &e),
    }
}

/// The label equalities of a chart: a workload's or a service's traffic, inbound (as its servers'
/// sidecars report it) or outbound (as its clients' sidecars report it, Istio's dashboards' choice).
/// A service's outbound traffic is that of the workloads with its `app`.
pub fn selector(
    kind: &str,
    name: &str,
    namespace: &str,
    direction: &str,
) -> Result<Selector, String> {
    let ns = namespace.to_string();
    let s = match (kind, direction) {
        ("workload", "inbound") => vec![
            ("reporter", "destination".into()),
            ("destination_workload", name.into()),
            ("destination_workload_namespace", ns),
        ],
        ("workload", "outbound") => vec![
            ("reporter", "source".into()),
            ("source_workload", name.into()),
            ("source_workload_namespace", ns),
        ],
        ("service", "inbound") => {
            let host = if name.contains('.') {
                name.to_string()
            } else {
                format!("{name}.{namespace}.svc.cluster.local")
            };
            vec![
                ("reporter", "destination".into()),
                ("destination_service", host),
            ]
        }
        ("service", "outbound") => vec![
            ("reporter", "source".into()),
            ("source_app", name.split('.').next().unwrap_or(name).into()),
            ("source_workload_namespace", ns),
        ],
        ("workload" | "service", d) => {
            return Err(format!("direction: {d:?} is not inbound or outbound"))
        }
        (k, _) => return Err(format!("kind: {k:?} is not workload or service")),
    };
    Ok(Selector(s))
}

async fn metrics(State(c): State<Console>, RawQuery(q): RawQuery) -> Response {
    let p = Params::new(q);
    let Some(name) = p.get("name") else {
        return bad("name: required".into());
    };
    let kind = p.get("kind").unwrap_or("workload");
    let namespace = p.get("namespace").unwrap_or("default");
    let direction = p.get("direction").unwrap_or("inbound");
    let sel = match selector(kind, name, namespace, direction) {
        Ok(s) => s,
        Err(e) => return bad(e),
    };
    let interval = c.inner.settings.scrape_interval.max(Duration::from_secs(1));
    let (range, step) = match (
        p.duration("range", Duration::from_secs(1800)),
        p.duration("step", interval),
    ) {
        (Ok(r), Ok(s)) => (r, s),
        (Err(e), _) | (_, Err(e)) => return bad(e),
    };
    if range.as_millis() / step.as_millis().max(1) > u128::from(MAX_POINTS) {
        return bad(format!("range/step: more than {MAX_POINTS} points"));
    }
    // Istio's dashboards rate over a minute; never less than two scrapes.
    let default_window = Duration::from_secs(60).max(2 * step).max(2 * interval);
    let window = match p.duration("window", default_window) {
        Ok(w) => w,
        Err(e) => return bad(e),
    };
    let r = Range {
        end: None,
        range,
        step,
        window,
    };
    let points = match c.inner.metrics.range(&sel, r).await {
        Ok(p) => p,
        Err(e) => return failed("metrics source", &e),
    };
    let mut t = Vec::with_capacity(points.len());
    let (mut rps, mut success) = (Vec::new(), Vec::new());
    let (mut p50, mut p90, mut p99) = (Vec::new(), Vec::new(), Vec::new());
    for (at, rows) in &points {
        let mut tot = super::traffic::Totals::default();
        rows.iter().for_each(|r| tot.add(r));
        t.push(*at as f64 / 1000.0);
        // No series had two points in this window: no data, not zero.
        rps.push(if rows.is_empty() {
            Value::Null
        } else {
            json!(tot.rps)
        });
        success.push(if tot.rps > 0.0 {
            json!(1.0 - tot.error_ratio())
        } else {
            Value::Null
        });
        p50.push(json!(tot.quantile(0.5)));
        p90.push(json!(tot.quantile(0.9)));
        p99.push(json!(tot.quantile(0.99)));
    }
    json(&json!({
        "kind": kind,
        "name": name,
        "namespace": namespace,
        "direction": direction,
        "step_s": step.as_secs_f64(),
        "window_s": window.as_secs_f64(),
        "t": t,
        "rps": rps,
        "success_rate": success,
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
    }))
}

async fn traces(State(c): State<Console>, RawQuery(q): RawQuery) -> Response {
    let p = Params::new(q);
    let (min_ms, limit) = match (p.number("minDurationMs", 0), p.number("limit", 20)) {
        (Ok(m), Ok(l)) => (m, l),
        (Err(e), _) | (_, Err(e)) => return bad(e),
    };
    let lookback = match p.duration("lookback", Duration::from_secs(3600)) {
        Ok(l) => l,
        Err(e) => return bad(e),
    };
    let search = Search {
        service: p.get("service").map(str::to_string),
        min_duration_us: (min_ms > 0).then(|| min_ms.saturating_mul(1000)),
        errors_only: p.flag("errorsOnly"),
        lookback_ms: u64::try_from(lookback.as_millis()).unwrap_or(u64::MAX),
        limit: usize::try_from(limit.clamp(1, 1000)).unwrap_or(1000),
    };
    match c.inner.traces.search(&search).await {
        Ok(found) => {
            let list: Vec<_> = found.iter().filter_map(|t| summarise(t)).collect();
            json(&json!({ "source": c.inner.traces.describe(), "traces": list }))
        }
        Err(e) => failed("tracing source", &e),
    }
}

async fn trace(State(c): State<Console>, Path(id): Path<String>) -> Response {
    match c.inner.traces.trace(&id).await {
        Ok(Some(spans)) => json(&json!({ "trace_id": id, "spans": spans })),
        Ok(None) => text(StatusCode::NOT_FOUND, format!("trace {id} not found")),
        Err(e) => failed("tracing source", &e),
    }
}

async fn trace_services(State(c): State<Console>) -> Response {
    match c.inner.traces.services().await {
        Ok(s) => json(&json!({ "services": s })),
        Err(e) => failed("tracing source", &e),
    }
}

async fn config(State(c): State<Console>) -> Response {
    let model = c.inner.model.borrow().model.clone();
    let resources: Vec<Value> = model
        .resources
        .iter()
        .map(|r| serde_json::to_value(r.as_ref()).unwrap_or_default())
        .collect();
    let findings: Vec<Value> = model
        .diagnostics
        .iter()
        .map(|d| {
            json!({
                "severity": if d.is_error() { "error" } else { "warning" },
                "message": d.to_string(),
            })
        })
        .collect();
    json(&json!({
        "generation": model.generation,
        "resources": resources,
        "proxies": c.inner.status.snapshot(),
        "findings": findings,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_for_each_chart() {
        let s = |k, n, d| selector(k, n, "default", d);
        assert_eq!(
            s("workload", "reviews-v1", "inbound"),
            Ok(Selector(vec![
                ("reporter", "destination".into()),
                ("destination_workload", "reviews-v1".into()),
                ("destination_workload_namespace", "default".into()),
            ]))
        );
        assert_eq!(
            s("service", "reviews", "inbound"),
            Ok(Selector(vec![
                ("reporter", "destination".into()),
                (
                    "destination_service",
                    "reviews.default.svc.cluster.local".into()
                ),
            ]))
        );
        assert_eq!(
            s("service", "reviews.default.svc.cluster.local", "outbound").map(|s| s.0[1].1.clone()),
            Ok("reviews".into())
        );
        assert_eq!(
            s("pod", "x", "inbound"),
            Err("kind: \"pod\" is not workload or service".into())
        );
        assert_eq!(
            s("service", "x", "sideways"),
            Err("direction: \"sideways\" is not inbound or outbound".into())
        );
    }
}
