//! The admin server on `--admin-ip:--admin-port` (localhost only): `GET /ready`, `GET /config_dump` (Envoy's `ConfigDump` shape),
//! `GET /clusters` (Envoy's text format), `GET /certs` (the workload certificate, Envoy's shape), `GET /stats/prometheus` (Istio's metrics), `POST /quitquitquit`. Loopback only in every deployment weft
//! supports, so it has no authentication.

use crate::config::{Snapshot, Stored};
use crate::Shared;
use http::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use weft_http::net::Listener;
use weft_http::{server, text, Body};
use weft_xds::type_url;

const DUMP_PREFIX: &str = "type.googleapis.com/envoy.admin.v3.";

/// Serves the admin listener until shutdown.
pub(crate) async fn serve(shared: Arc<Shared>, listener: Listener) {
    let stop = shared.shutdown.subscribe();
    let s = shared.clone();
    let handler = move |req| std::future::ready(handle(&s, req));
    // The admin port's clients are local tools: a handful of connections.
    let limits = weft_http::Limits {
        max_connections: 64,
        ..weft_http::Limits::default()
    };
    server::serve(
        "admin",
        listener,
        handler,
        stop,
        Duration::from_millis(200),
        limits,
    )
    .await;
}

/// Serves Istio's Prometheus stats (`GET /stats/prometheus`) on their own port until shutdown.
pub(crate) async fn serve_stats(shared: Arc<Shared>, listener: Listener) {
    let stop = shared.shutdown.subscribe();
    let s = shared.clone();
    let handler = move |req: Request<Body>| {
        std::future::ready(match (req.method(), req.uri().path()) {
            (&Method::GET, "/stats/prometheus") | (&Method::GET, "/metrics") => stats(&s),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        })
    };
    // Scrapers: a handful of connections.
    let limits = weft_http::Limits {
        max_connections: 64,
        ..weft_http::Limits::default()
    };
    server::serve(
        "stats",
        listener,
        handler,
        stop,
        Duration::from_millis(200),
        limits,
    )
    .await;
}

/// Istio's standard metrics in Prometheus's text format.
fn stats(shared: &Shared) -> Response<Body> {
    let body = shared
        .telemetry
        .as_ref()
        .map(|t| t.encode())
        .unwrap_or_default();
    let mut r = text(StatusCode::OK, body);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(crate::telemetry::CONTENT_TYPE),
    );
    r
}

fn handle(shared: &Shared, req: Request<Body>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/stats/prometheus") => stats(shared),
        (&Method::GET, "/ready") | (&Method::GET, "/healthz/ready") => {
            if shared.is_ready() {
                text(StatusCode::OK, "LIVE\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "PRE_INITIALIZING\n")
            }
        }
        (&Method::GET, "/config_dump") => {
            let snap = shared.snapshot.load_full();
            let body = serde_json::to_string_pretty(&config_dump(&snap)).unwrap_or_default();
            let mut r = text(StatusCode::OK, body);
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            r
        }
        (&Method::GET, "/certs") => {
            let current = shared.identity.as_ref().and_then(|c| c.borrow().clone());
            let body =
                serde_json::to_string_pretty(&crate::identity::certs::dump(current.as_deref()))
                    .unwrap_or_default();
            let mut r = text(StatusCode::OK, body);
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            r
        }
        (&Method::GET, "/clusters") => {
            text(StatusCode::OK, clusters_text(&shared.snapshot.load_full()))
        }
        (&Method::POST, "/quitquitquit") => {
            tracing::info!("quitquitquit received on admin");
            shared.request_shutdown();
            text(StatusCode::OK, "OK\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Envoy's `/clusters` text: one `<cluster>::<ip:port>::health_flags::healthy` line per endpoint.
pub fn clusters_text(snap: &Snapshot) -> String {
    let mut names: Vec<&String> = snap.clusters.keys().collect();
    names.sort();
    let mut out = String::new();
    for name in names {
        let Some(c) = snap.clusters.get(name) else {
            continue;
        };
        let _ = writeln!(out, "{name}::observability_name::{name}");
        for ep in c.endpoints.endpoints() {
            let _ = writeln!(out, "{name}::{ep}::health_flags::healthy");
        }
    }
    out
}

/// Envoy's `ConfigDump`: clusters, endpoints, listeners, routes, each resource with its version and time.
pub fn config_dump(snap: &Snapshot) -> Value {
    let r = &snap.resources;
    let version = |t: &str| r.versions.get(t).cloned().unwrap_or_default();
    let entries = |m: &dyn Fn(&str, Value, &str, SystemTime) -> Value,
                   items: Vec<(&String, Value, &str, SystemTime)>| {
        items
            .into_iter()
            .map(|(name, v, ver, t)| m(name, v, ver, t))
            .collect::<Vec<Value>>()
    };
    let clusters = entries(
        &|_, v, ver, t| json!({"version_info": ver, "cluster": v, "last_updated": rfc3339(t)}),
        rendered(&r.clusters),
    );
    let endpoints = entries(
        &|_, v, ver, t| json!({"version_info": ver, "endpoint_config": v, "last_updated": rfc3339(t)}),
        rendered(&r.endpoints),
    );
    let listeners = entries(
        &|name, v, ver, t| json!({"name": name, "active_state": {"version_info": ver, "listener": v, "last_updated": rfc3339(t)}}),
        rendered(&r.listeners),
    );
    let routes = entries(
        &|_, v, ver, t| json!({"version_info": ver, "route_config": v, "last_updated": rfc3339(t)}),
        rendered(&r.routes),
    );
    json!({"configs": [
        {"@type": format!("{DUMP_PREFIX}ClustersConfigDump"), "version_info": version(type_url::CLUSTER), "dynamic_active_clusters": clusters},
        {"@type": format!("{DUMP_PREFIX}EndpointsConfigDump"), "dynamic_endpoint_configs": endpoints},
        {"@type": format!("{DUMP_PREFIX}ListenersConfigDump"), "version_info": version(type_url::LISTENER), "dynamic_listeners": listeners},
        {"@type": format!("{DUMP_PREFIX}RoutesConfigDump"), "dynamic_route_configs": routes},
    ]})
}

fn rendered<T>(m: &BTreeMap<String, Arc<Stored<T>>>) -> Vec<(&String, Value, &str, SystemTime)> {
    m.iter()
        .map(|(name, s)| {
            let v = weft_xds::json::any_to_json(&s.raw)
                .unwrap_or_else(|e| json!({"@type": s.raw.type_url, "error": e.to_string()}));
            (name, v, s.version.as_str(), s.last_updated)
        })
        .collect()
}

/// `2024-05-01T12:00:00.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's civil calendar algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        let cases: &[(u64, &str)] = &[
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400, "2000-02-29T00:00:00.000Z"),
            (1_714_564_800, "2024-05-01T12:00:00.000Z"),
        ];
        for (secs, want) in cases {
            let t = UNIX_EPOCH + Duration::from_secs(*secs);
            assert_eq!(rfc3339(t), *want, "case {secs}");
        }
    }
}
