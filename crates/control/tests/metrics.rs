//! weftd's own metrics against a scripted proxy: each `pilot_*` series moves when its event happens
//! (a proxy connects, a response goes out, the proxy refuses one, accepts the next, converges on a
//! change, goes away), and the debug port serves them and the proxies' Prometheus discovery.

use http_body_util::BodyExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use weft_control::debug::{self, DebugState};
use weft_control::view::Snapshot;
use weft_xds::node::ProxyIdentity;
use weft_xds::type_url;

mod support;
use support::{eventually, identity, model, serve, two_services, Served, Stream, REGISTRY};

/// The value of one series (`name{labels}` exactly as written) in `/metrics` text.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// weftd's metrics as `/metrics` would serve them now.
fn scrape(served: &Served) -> String {
    let model = served.model_tx.borrow().model.clone();
    served.metrics.encode(&model)
}

/// Waits until every series in `want` has its value (the server records as it goes, so a response
/// can reach the client before the push that sent it is counted).
async fn metrics_reach(served: &Served, what: &str, want: &[(&str, f64)]) {
    let mut last = String::new();
    let reached = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            last = scrape(served);
            if want.iter().all(|(s, v)| value(&last, s) == Some(*v)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(reached.is_ok(), "{what}: want {want:?} in:\n{last}");
}

#[tokio::test]
async fn each_pilot_metric_moves_when_its_event_happens() {
    let served = serve(REGISTRY).await;
    metrics_reach(
        &served,
        "nothing yet",
        &[
            ("pilot_xds", 0.0),
            ("pilot_xds_pushes{type=\"cds\"}", 0.0),
            ("pilot_services", 1.0),
        ],
    )
    .await;

    // A proxy connects and is sent its clusters.
    let mut s = Stream::open(&served).await;
    s.subscribe(type_url::CLUSTER, &[], HashMap::new(), true)
        .await;
    let cds = s.recv().await;
    metrics_reach(
        &served,
        "connected, clusters pushed",
        &[
            ("pilot_xds", 1.0),
            ("pilot_xds_pushes{type=\"cds\"}", 1.0),
            ("pilot_xds_push_time_count{type=\"cds\"}", 1.0),
            ("pilot_xds_pushes{type=\"eds\"}", 0.0),
        ],
    )
    .await;

    // It refuses them.
    s.nack(&cds, "refused for the test").await;
    metrics_reach(
        &served,
        "the refusal",
        &[
            ("pilot_total_xds_rejects{type=\"cds\"}", 1.0),
            ("pilot_xds_cds_reject", 1.0),
            ("pilot_xds_lds_reject", 0.0),
        ],
    )
    .await;

    // A change, dated two seconds back: the clusters go out again, the proxy accepts them and has
    // converged, two to three seconds after the change began.
    let changed = Snapshot::next(
        model(2, &two_services("127.0.0.1", "127.0.0.2")),
        &served.model_tx.borrow(),
    )
    .changed_since(tokio::time::Instant::now() - Duration::from_secs(2));
    served.model_tx.send(Arc::new(changed)).expect("publish");
    let cds = s.recv().await;
    assert_eq!(cds.type_url, type_url::CLUSTER);
    s.ack(&cds).await;
    metrics_reach(
        &served,
        "accepted and converged",
        &[
            ("pilot_xds_pushes{type=\"cds\"}", 2.0),
            ("pilot_xds_cds_reject", 0.0),
            ("pilot_total_xds_rejects{type=\"cds\"}", 1.0),
            ("pilot_proxy_convergence_time_count", 1.0),
            ("pilot_proxy_convergence_time_bucket{le=\"1\"}", 0.0),
            ("pilot_proxy_convergence_time_bucket{le=\"3\"}", 1.0),
            ("pilot_services", 2.0),
        ],
    )
    .await;

    // A refusal, then the proxy goes away: neither it nor its refusal is counted any more.
    served.publish(3, REGISTRY);
    let cds = s.recv().await;
    s.nack(&cds, "refused again").await;
    metrics_reach(&served, "refused again", &[("pilot_xds_cds_reject", 1.0)]).await;
    drop(s);
    metrics_reach(
        &served,
        "disconnected",
        &[
            ("pilot_xds", 0.0),
            ("pilot_xds_cds_reject", 0.0),
            ("pilot_total_xds_rejects{type=\"cds\"}", 2.0),
            // A refused change is not a convergence.
            ("pilot_proxy_convergence_time_count", 1.0),
        ],
    )
    .await;
}

fn debug_state(served: &Served) -> DebugState {
    DebugState {
        config_dir: "/nonexistent".into(),
        model: served.model_tx.subscribe(),
        status: served.status.clone(),
        metrics: served.metrics.clone(),
    }
}

/// `GET path` on the debug endpoints: content type and body.
async fn get(state: &DebugState, path: &str) -> (String, String) {
    let req = http::Request::get(path).body(()).expect("request");
    let resp = debug::respond(state, req).await;
    assert_eq!(resp.status(), 200, "{path}");
    let ct = resp.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_string();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (ct, String::from_utf8(body.to_vec()).expect("utf-8"))
}

#[tokio::test]
async fn the_debug_port_serves_metrics_as_prometheus_text() {
    let served = serve(REGISTRY).await;
    let (ct, body) = get(&debug_state(&served), "/metrics").await;
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    assert!(
        body.contains("# TYPE pilot_xds gauge\npilot_xds 0\n"),
        "{body}"
    );
}

fn proxy(workload: &str, ip: &str, stats: bool, labels: &[(&str, &str)]) -> ProxyIdentity {
    ProxyIdentity {
        workload: workload.into(),
        ip: ip.into(),
        stats_address: if stats {
            format!("{ip}:15090")
        } else {
            String::new()
        },
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..identity()
    }
}

#[tokio::test]
async fn prometheus_finds_every_connected_proxy_that_serves_metrics() {
    let served = serve(REGISTRY).await;
    let state = debug_state(&served);
    let mut streams = Vec::new();
    for p in [
        proxy(
            "reviews-v2",
            "127.0.0.12",
            true,
            &[("app", "reviews"), ("version", "v2")],
        ),
        proxy("ratings-v1", "127.0.0.11", true, &[("app", "ratings")]),
        // Serves no metrics: not a target.
        proxy("details-v1", "127.0.0.10", false, &[("app", "details")]),
    ] {
        let mut s = Stream::open_as(&served, p).await;
        s.subscribe(type_url::CLUSTER, &[], HashMap::new(), true)
            .await;
        s.recv().await;
        streams.push(s);
    }
    eventually("three proxies connected", || {
        (served.status.snapshot().len() == 3).then_some(())
    })
    .await;
    let (ct, body) = get(&state, "/debug/prometheus_sd").await;
    assert_eq!(ct, "application/json");
    let got: serde_json::Value = serde_json::from_str(&body).expect("json");
    let want = serde_json::json!([
        {
            "targets": ["127.0.0.11:15090"],
            "labels": {
                "__metrics_path__": "/stats/prometheus",
                "namespace": "default",
                "workload": "ratings-v1",
                "app": "ratings",
            },
        },
        {
            "targets": ["127.0.0.12:15090"],
            "labels": {
                "__metrics_path__": "/stats/prometheus",
                "namespace": "default",
                "workload": "reviews-v2",
                "app": "reviews",
                "version": "v2",
            },
        },
    ]);
    assert_eq!(got, want, "{body}");

    // A proxy that goes away is no longer a target.
    streams.remove(0);
    eventually("reviews-v2 gone", || {
        (served.status.snapshot().len() == 2).then_some(())
    })
    .await;
    let (_, body) = get(&state, "/debug/prometheus_sd").await;
    let got: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(got, serde_json::json!([want[0]]), "{body}");
}
