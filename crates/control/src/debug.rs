//! weftd's debug and readiness endpoints (`--debug-address`, Istio's 15014): `/ready`, `/metrics`
//! (weftd's own, see [`crate::metrics`]), `/debug/syncz`, `/debug/configz`,
//! `/debug/config_dump?proxyID=…`, and `/debug/prometheus_sd` (where Prometheus finds the proxies'
//! metrics).

use crate::metrics::{self, Metrics};
use crate::server::status::{ProxyStatus, StatusRegistry};
use crate::translate;
use crate::view::Snapshot;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::debug;

/// What the debug endpoints read.
#[derive(Clone)]
pub struct DebugState {
    /// The config directory (reported so `weft apply` can find it).
    pub config_dir: PathBuf,
    /// The current snapshot.
    pub model: watch::Receiver<Arc<Snapshot>>,
    /// Proxy sync status.
    pub status: Arc<StatusRegistry>,
    /// weftd's metrics.
    pub metrics: Arc<Metrics>,
}

fn json_response(code: StatusCode, v: &serde_json::Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(v).unwrap_or_default();
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

fn text(code: StatusCode, s: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(s.to_string())))
        .unwrap_or_default()
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Where a proxy serves Istio's standard metrics on its stats port (Envoy's path, kept by Istio).
pub const PROXY_METRICS_PATH: &str = "/stats/prometheus";

/// Prometheus's HTTP service discovery for the connected proxies that advertise a stats address
/// (`STATS_ADDRESS` in their node metadata): one target group per proxy, labelled with the metrics
/// path and the workload's namespace, name, `app` and `version` (those two when it has the labels).
/// Sorted by node id, as `proxies` is.
pub fn prometheus_sd(proxies: &[ProxyStatus]) -> serde_json::Value {
    let groups: Vec<serde_json::Value> = proxies
        .iter()
        .filter(|p| !p.identity.stats_address.is_empty())
        .map(|p| {
            let id = &p.identity;
            let mut labels = serde_json::Map::new();
            labels.insert("__metrics_path__".into(), PROXY_METRICS_PATH.into());
            labels.insert("namespace".into(), id.namespace.clone().into());
            labels.insert("workload".into(), id.workload.clone().into());
            for key in ["app", "version"] {
                if let Some(v) = id.labels.get(key) {
                    labels.insert(key.into(), v.clone().into());
                }
            }
            json!({ "targets": [id.stats_address], "labels": labels })
        })
        .collect();
    serde_json::Value::Array(groups)
}

/// Answers one request: `/metrics` off the async runtime (it reads `/proc`), the rest at once.
pub async fn respond<B>(state: &DebugState, req: Request<B>) -> Response<Full<Bytes>> {
    if req.method() == Method::GET && req.uri().path() == "/metrics" {
        let metrics = state.metrics.clone();
        let model = state.model.borrow().model.clone();
        return match tokio::task::spawn_blocking(move || metrics.encode(&model)).await {
            Ok(body) => Response::builder()
                .header("content-type", metrics::CONTENT_TYPE)
                .body(Full::new(Bytes::from(body)))
                .unwrap_or_default(),
            Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "metrics task failed\n"),
        };
    }
    handle(state, &req)
}

/// Answers one request other than `/metrics` (see [`respond`]).
fn handle<B>(state: &DebugState, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    let model = state.model.borrow().model.clone();
    match req.uri().path() {
        "/ready" => text(StatusCode::OK, "ready\n"),
        "/debug/prometheus_sd" => {
            json_response(StatusCode::OK, &prometheus_sd(&state.status.snapshot()))
        }
        "/debug/syncz" => {
            let v = serde_json::to_value(state.status.snapshot()).unwrap_or_default();
            json_response(StatusCode::OK, &v)
        }
        "/debug/configz" => {
            let resources: Vec<serde_json::Value> = model
                .resources
                .iter()
                .map(|r| serde_json::to_value(r.as_ref()).unwrap_or_default())
                .collect();
            let diagnostics: Vec<String> =
                model.diagnostics.iter().map(|d| d.to_string()).collect();
            let v = json!({
                "configDir": state.config_dir,
                "generation": model.generation,
                "mesh": model.mesh,
                "resources": resources,
                "diagnostics": diagnostics,
            });
            json_response(StatusCode::OK, &v)
        }
        "/debug/config_dump" => {
            let q = req.uri().query().unwrap_or_default();
            let Some(id) = query_param(q, "proxyID") else {
                return text(
                    StatusCode::BAD_REQUEST,
                    "missing ?proxyID=<node id or workload>\n",
                );
            };
            let found = state
                .status
                .snapshot()
                .into_iter()
                .find(|p| p.node_id == id || p.identity.workload == id);
            let Some(p) = found else {
                return text(StatusCode::NOT_FOUND, &format!("no connected proxy {id}\n"));
            };
            let res = translate::for_proxy(&model, &p.identity);
            let mut out = serde_json::Map::new();
            for (t, items) in &res.by_type {
                let rendered: Vec<serde_json::Value> = items
                    .values()
                    .filter_map(|a| weft_xds::json::any_to_json(a).ok())
                    .collect();
                out.insert(weft_xds::type_url::short(t).to_string(), rendered.into());
            }
            json_response(StatusCode::OK, &serde_json::Value::Object(out))
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Serves the debug endpoints on `listener` until `shutdown` fires.
pub async fn serve(listener: TcpListener, state: DebugState, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                debug!(error = %e, "debug accept failed");
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&state, req).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await
            {
                debug!(error = %e, "debug connection ended");
            }
        });
    }
}
