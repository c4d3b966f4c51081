//! The console's JSON API over real HTTP, fed by fake proxies on loopback that serve synthetic Istio
//! metrics: the proxies are in weftd's status registry as the ADS server puts them there (with a stats
//! address), the test scrapes through the console's "scrape now" hook at times it chooses, and
//! `/api/graph` and `/api/metrics` answer with exactly the rates those scrapes imply. No sleeps.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::watch;
use weft_control::console::{self, Console, Settings};
use weft_control::model::Model;
use weft_control::server::status::{ProxyStatus, StatusRegistry};
use weft_control::view::Snapshot;
use weft_xds::node::ProxyIdentity;

/// One fake proxy: serves whatever `page` holds at `/stats/prometheus`.
struct FakeProxy {
    addr: SocketAddr,
    page: Arc<Mutex<String>>,
}

async fn fake_proxy(stop: watch::Receiver<bool>) -> FakeProxy {
    let page = Arc::new(Mutex::new(String::new()));
    let served = page.clone();
    let router = axum::Router::new().route(
        "/stats/prometheus",
        axum::routing::get(move || {
            let text = served.lock().expect("lock").clone();
            async move { text }
        }),
    );
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(weft_trace::collector::serve(l, router, stop));
    FakeProxy { addr, page }
}

/// Istio's labels for a call from `from` to `to` (both `app-version`) reported by `reporter`.
fn labels(reporter: &str, from: &str, to: &str, code: u16) -> String {
    let (fa, fv) = from.rsplit_once('-').expect("app-version");
    let (ta, tv) = to.rsplit_once('-').expect("app-version");
    format!(
        "reporter=\"{reporter}\",source_workload=\"{from}\",source_canonical_service=\"{fa}\",\
         source_canonical_revision=\"{fv}\",source_workload_namespace=\"default\",\
         source_principal=\"unknown\",source_app=\"{fa}\",source_version=\"{fv}\",\
         source_cluster=\"Kubernetes\",destination_workload=\"{to}\",\
         destination_workload_namespace=\"default\",destination_principal=\"unknown\",\
         destination_app=\"{ta}\",destination_version=\"{tv}\",\
         destination_service=\"{ta}.default.svc.cluster.local\",destination_canonical_service=\"{ta}\",\
         destination_canonical_revision=\"{tv}\",destination_service_name=\"{ta}\",\
         destination_service_namespace=\"default\",destination_cluster=\"Kubernetes\",\
         request_protocol=\"http\",response_code=\"{code}\",grpc_response_status=\"\",\
         response_flags=\"-\",connection_security_policy=\"unknown\""
    )
}

/// One series: `n` requests, `fast` of them within 10 ms and the rest within 100 ms; in the order
/// and shape a weft-proxy writes them (OpenMetrics text, `le` last).
fn series(l: &str, n: u64, fast: u64) -> String {
    let mut s = format!("istio_requests_total{{{l}}} {n}\n");
    s.push_str(&format!(
        "istio_request_duration_milliseconds_sum{{{l}}} {}\n",
        fast * 5 + (n - fast) * 50
    ));
    s.push_str(&format!(
        "istio_request_duration_milliseconds_count{{{l}}} {n}\n"
    ));
    for (le, v) in [("0.5", 0), ("10.0", fast), ("100.0", n), ("+Inf", n)] {
        s.push_str(&format!(
            "istio_request_duration_milliseconds_bucket{{{l},le=\"{le}\"}} {v}\n"
        ));
    }
    s
}

fn page(parts: &[String]) -> String {
    format!(
        "# HELP istio_requests Requests served.\n# TYPE istio_requests counter\n{}# EOF\n",
        parts.concat()
    )
}

fn register(status: &StatusRegistry, conn: u64, workload: &str, stats: SocketAddr) {
    let (app, version) = workload.rsplit_once('-').expect("app-version");
    let identity = ProxyIdentity {
        workload: workload.into(),
        namespace: "default".into(),
        labels: [("app", app), ("version", version)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ip: "127.0.0.1".into(),
        stats_address: stats.to_string(),
        ..ProxyIdentity::default()
    };
    status.insert(conn, ProxyStatus::new(identity.node_id(), identity));
}

async fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = console::http::get(
        &addr.to_string(),
        path,
        std::time::Duration::from_secs(5),
        1 << 20,
    )
    .await
    .expect("console answers");
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("json")
}

#[tokio::test]
async fn graph_and_metrics_from_two_scrapes_of_fake_proxies() {
    let (stop_tx, stop) = watch::channel(false);
    let productpage = fake_proxy(stop.clone()).await;
    let reviews = fake_proxy(stop.clone()).await;
    let status = Arc::new(StatusRegistry::default());
    register(&status, 1, "productpage-v1", productpage.addr);
    register(&status, 2, "reviews-v2", reviews.addr);
    // A proxy that advertises no stats address is not scraped; one whose address refuses counts as
    // failed and does not stop the round.
    register(
        &status,
        3,
        "ratings-v1",
        "127.0.0.1:1".parse().expect("addr"),
    );

    let model = Arc::new(Model::build(1, &[], Default::default()));
    let (_model_tx, model_rx) = watch::channel(Arc::new(Snapshot::new(model)));
    let settings = Settings {
        address: None,
        scrape_interval: std::time::Duration::from_secs(15),
        retention: std::time::Duration::from_secs(3600),
        prometheus_url: None,
        tracing_url: None,
    };
    let store = Arc::new(weft_trace::TraceStore::new(Default::default()));
    let c = Console::new(settings, status, model_rx, store);
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(c.clone().serve_routes(l, stop.clone()));

    // Scrape 1, at t0: productpage has sent reviews 100 requests (source side); reviews-v2 has
    // answered 90 of them (destination side: it misses some, the source's numbers win).
    let t0 = console::source::now_ms();
    let pp_to_reviews = labels("source", "productpage-v1", "reviews-v2", 200);
    let pp_to_reviews_503 = labels("source", "productpage-v1", "reviews-v2", 503);
    let at_reviews = labels("destination", "productpage-v1", "reviews-v2", 200);
    *productpage.page.lock().expect("lock") = page(&[
        series(&pp_to_reviews, 100, 100),
        series(&pp_to_reviews_503, 0, 0),
    ]);
    *reviews.page.lock().expect("lock") = page(&[series(&at_reviews, 90, 90)]);
    let r = c.scrape_now(t0).await;
    assert_eq!((r.scraped, r.failed), (2, 1));
    let g = get_json(addr, "/api/graph?window=1m").await;
    assert_eq!(
        g["edges"].as_array().map(Vec::len),
        Some(0),
        "one scrape has no rate: {g}"
    );

    // Scrape 2, 30 s later: 60 more requests, 45 fast and 15 slow; 15 more that failed with 503.
    *productpage.page.lock().expect("lock") = page(&[
        series(&pp_to_reviews, 160, 145),
        series(&pp_to_reviews_503, 15, 15),
    ]);
    *reviews.page.lock().expect("lock") = page(&[series(&at_reviews, 150, 150)]);
    let r = c.scrape_now(t0 + 30_000).await;
    assert_eq!((r.scraped, r.failed), (2, 1));

    let g = get_json(addr, "/api/graph?window=1m").await;
    assert_eq!(g["timestamp_ms"], t0 + 30_000);
    let ids: Vec<&str> = g["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        ids,
        [
            "service:reviews.default.svc.cluster.local",
            "workload:default/productpage-v1",
            "workload:default/reviews-v2"
        ]
    );
    let node = &g["nodes"][2];
    assert_eq!(
        (
            &node["kind"],
            &node["app"],
            &node["version"],
            &node["workload"]
        ),
        (
            &"workload".into(),
            &"reviews".into(),
            &"v2".into(),
            &"reviews-v2".into()
        )
    );
    // (60 + 15) requests in 30 s, 15 of them failed; the slow 15 of 75 put P99 in (10, 100] ms.
    let edges = g["edges"].as_array().expect("edges");
    assert_eq!(edges.len(), 2, "{g}");
    let e = &edges[0];
    assert_eq!(e["source"], "service:reviews.default.svc.cluster.local");
    assert_eq!(e["target"], "workload:default/reviews-v2");
    assert_eq!(e["protocol"], "http");
    assert_eq!(e["rps"], 2.5);
    assert_eq!(e["error_ratio"], 0.2);
    let p99 = e["p99_ms"].as_f64().expect("p99");
    // rank 0.99 × 75 = 74.25; 60 within 10 ms, 15 in (10, 100]: 10 + 90 × 14.25 / 15.
    assert!((p99 - 95.5).abs() < 1e-9, "p99 {p99}");
    assert_eq!(e["bytes"], 0.0);
    assert_eq!(edges[1]["source"], "workload:default/productpage-v1");
    assert_eq!(edges[1]["rps"], 2.5);
    assert_eq!(
        g["nodes"][2]["error_ratio"], 0.2,
        "reviews-v2 is marked failing"
    );

    // Golden metrics for reviews-v2, inbound: the destination's report, 60 requests in 30 s.
    let m = get_json(
        addr,
        "/api/metrics?kind=workload&name=reviews-v2&direction=inbound&range=30s&step=15s&window=30s",
    )
    .await;
    assert_eq!(m["t"].as_array().map(Vec::len), Some(3), "{m}");
    assert_eq!(m["rps"][2], 2.0, "{m}");
    assert_eq!(m["success_rate"][2], 1.0);
    // rank 30 of 60, all in (0.5, 10]: 0.5 + 9.5 × 30 / 60.
    assert_eq!(m["p50_ms"][2], 5.25);
    // And outbound from productpage: the source's report, failures included.
    let m = get_json(
        addr,
        "/api/metrics?kind=workload&name=productpage-v1&direction=outbound&range=30s&step=15s&window=30s",
    )
    .await;
    assert_eq!(m["rps"][2], 2.5);
    let success = m["success_rate"][2].as_f64().expect("a rate");
    assert!((success - 0.8).abs() < 1e-9, "{m}");

    // Bad parameters are refused with the parameter named.
    let (code, body) = console::http::get(
        &addr.to_string(),
        "/api/graph?window=soon",
        std::time::Duration::from_secs(5),
        1 << 20,
    )
    .await
    .expect("answer");
    assert_eq!(code, 400);
    assert!(String::from_utf8_lossy(&body).starts_with("window: \"soon\""));

    // The page and its libraries are served from the binary.
    for path in [
        "/",
        "/console.js",
        "/vendor/cytoscape.min.js",
        "/vendor/uPlot.iife.min.js",
    ] {
        let (code, body) = console::http::get(
            &addr.to_string(),
            path,
            std::time::Duration::from_secs(5),
            1 << 20,
        )
        .await
        .expect("answer");
        assert_eq!(code, 200, "{path}");
        assert!(body.len() > 1000, "{path}");
    }
    let _ = stop_tx.send(true);
}
