//! The service graph: workloads (grouped by app and version), the services they call, and the edges
//! between them with request rate, error ratio, P99 latency and TCP bytes, built from [`Traffic`] rows.
//!
//! Each request is reported twice, by the client's sidecar (`reporter="source"`) and by the server's
//! (`reporter="destination"`). The graph takes the source's report, which sees failures the server
//! never does (no route, no healthy upstream, a fault injected at the client); for a (client, service,
//! server) triple that no source reported, such as traffic from outside the mesh, it takes the
//! destination's, as Kiali does. A request goes client workload → service → server workload; one that
//! reached no workload (`destination_workload="unknown"`) ends at the service.

use super::traffic::{Labels, Totals, Traffic};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// What stands for a peer the proxies could not name (Istio's `unknown`).
pub const UNKNOWN: &str = "unknown";

/// A node of the graph.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    /// `workload:<namespace>/<workload>`, `service:<host>` or `unknown`.
    pub id: String,
    /// `workload`, `service` or `unknown`.
    pub kind: &'static str,
    /// The `app` label (for a service, its short name).
    pub app: String,
    /// The `version` label (workloads).
    pub version: String,
    /// Workload name (workloads).
    pub workload: String,
    /// Namespace.
    pub namespace: String,
    /// The service's host (services).
    pub service: String,
    /// Requests per second into this node.
    pub rps_in: f64,
    /// Share of those that failed.
    pub error_ratio: f64,
}

/// An edge of the graph.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Edge {
    /// Source node id.
    pub source: String,
    /// Target node id.
    pub target: String,
    /// `http`, `grpc` or `tcp`.
    pub protocol: String,
    /// Requests per second (0 for TCP).
    pub rps: f64,
    /// Failed requests over requests (5xx, no response, or a failure flag).
    pub error_ratio: f64,
    /// 99th percentile latency in ms; `None` without latency data (TCP).
    pub p99_ms: Option<f64>,
    /// TCP bytes per second, both ways (0 for HTTP).
    pub bytes: f64,
}

/// The graph.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Graph {
    /// Nodes, sorted by id.
    pub nodes: Vec<Node>,
    /// Edges, sorted by source, target and protocol.
    pub edges: Vec<Edge>,
}

fn known(s: &str) -> bool {
    !s.is_empty() && s != UNKNOWN
}

fn workload_id(namespace: &str, workload: &str) -> String {
    format!("workload:{namespace}/{workload}")
}

/// `reviews` and `default` from `reviews.default.svc.cluster.local`; an address (a client that called a
/// sidecar by IP) is its own name.
fn service_parts(host: &str) -> (String, String) {
    let bare = host.rsplit_once(':').map_or(host, |(h, _)| h);
    if host.parse::<std::net::IpAddr>().is_ok() || bare.parse::<std::net::Ipv4Addr>().is_ok() {
        return (host.to_string(), String::new());
    }
    let mut parts = host.split('.');
    let name = parts.next().unwrap_or_default().to_string();
    let namespace = parts.next().unwrap_or_default().to_string();
    (name, namespace)
}

/// Builds the graph from one window's traffic.
pub fn build(rows: &[Traffic]) -> Graph {
    // Which (client, service, server) triples a source reported.
    let triple = |l: &Labels| {
        (
            (l.source_namespace.clone(), l.source_workload.clone()),
            l.destination_service.clone(),
            (
                l.destination_namespace.clone(),
                l.destination_workload.clone(),
            ),
        )
    };
    let by_source: BTreeSet<_> = rows
        .iter()
        .filter(|t| &*t.labels.reporter == "source")
        .map(|t| triple(&t.labels))
        .collect();
    let chosen = rows.iter().filter(|t| match &*t.labels.reporter {
        "source" => true,
        "destination" => !by_source.contains(&triple(&t.labels)),
        _ => false,
    });

    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut edges: BTreeMap<(String, String, String), Totals> = BTreeMap::new();
    for t in chosen {
        let l = &t.labels;
        let source = if known(&l.source_workload) {
            let id = workload_id(&l.source_namespace, &l.source_workload);
            nodes.entry(id.clone()).or_insert_with(|| Node {
                id: id.clone(),
                kind: "workload",
                app: l.source_app.to_string(),
                version: l.source_version.to_string(),
                workload: l.source_workload.to_string(),
                namespace: l.source_namespace.to_string(),
                service: String::new(),
                rps_in: 0.0,
                error_ratio: 0.0,
            });
            id
        } else {
            nodes.entry(UNKNOWN.into()).or_insert_with(|| Node {
                id: UNKNOWN.into(),
                kind: "unknown",
                app: String::new(),
                version: String::new(),
                workload: String::new(),
                namespace: String::new(),
                service: String::new(),
                rps_in: 0.0,
                error_ratio: 0.0,
            });
            UNKNOWN.into()
        };
        let server = known(&l.destination_workload).then(|| {
            let id = workload_id(&l.destination_namespace, &l.destination_workload);
            nodes.entry(id.clone()).or_insert_with(|| Node {
                id: id.clone(),
                kind: "workload",
                app: l.destination_app.to_string(),
                version: l.destination_version.to_string(),
                workload: l.destination_workload.to_string(),
                namespace: l.destination_namespace.to_string(),
                service: String::new(),
                rps_in: 0.0,
                error_ratio: 0.0,
            });
            id
        });
        let service = known(&l.destination_service).then(|| {
            let id = format!("service:{}", l.destination_service);
            nodes.entry(id.clone()).or_insert_with(|| {
                let (name, namespace) = service_parts(&l.destination_service);
                Node {
                    id: id.clone(),
                    kind: "service",
                    app: name,
                    version: String::new(),
                    workload: String::new(),
                    namespace,
                    service: l.destination_service.to_string(),
                    rps_in: 0.0,
                    error_ratio: 0.0,
                }
            });
            id
        });
        let protocol = l.protocol.to_string();
        let mut add = |from: &str, to: &str| {
            edges
                .entry((from.to_string(), to.to_string(), protocol.clone()))
                .or_default()
                .add(t);
        };
        match (&service, &server) {
            (Some(svc), Some(wl)) => {
                add(&source, svc);
                add(svc, wl);
            }
            (Some(svc), None) => add(&source, svc),
            (None, Some(wl)) => add(&source, wl),
            (None, None) => {}
        }
    }

    // A node's inbound totals colour it: the sum of the edges into it.
    let mut inbound: BTreeMap<&str, Totals> = BTreeMap::new();
    for ((_, to, _), t) in &edges {
        let n = inbound.entry(to.as_str()).or_default();
        n.rps += t.rps;
        n.error_rps += t.error_rps;
    }
    for (id, t) in inbound {
        if let Some(n) = nodes.get_mut(id) {
            n.rps_in = t.rps;
            n.error_ratio = t.error_ratio();
        }
    }
    Graph {
        nodes: nodes.into_values().collect(),
        edges: edges
            .into_iter()
            .map(|((source, target, protocol), t)| Edge {
                source,
                target,
                protocol,
                rps: t.rps,
                error_ratio: t.error_ratio(),
                p99_ms: t.quantile(0.99),
                bytes: t.tcp_bytes,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A row: `reporter`, client workload, server workload (app-version), service short name, code,
    /// flags, rate, and how many of those requests took up to 10 ms (the rest up to 100 ms).
    #[allow(clippy::too_many_arguments)]
    fn row(
        reporter: &str,
        from: &str,
        to: &str,
        service: &str,
        code: &str,
        flags: &str,
        rps: f64,
        fast: f64,
    ) -> Traffic {
        let split = |w: &str| match w.rsplit_once('-') {
            Some((app, v)) if known(w) => (app.to_string(), v.to_string()),
            _ => (UNKNOWN.to_string(), UNKNOWN.to_string()),
        };
        let (sa, sv) = split(from);
        let (da, dv) = split(to);
        let labels = Labels {
            reporter: reporter.into(),
            source_workload: from.into(),
            source_namespace: "default".into(),
            source_app: sa.into(),
            source_version: sv.into(),
            destination_workload: to.into(),
            destination_namespace: "default".into(),
            destination_app: da.into(),
            destination_version: dv.into(),
            destination_service: if service == UNKNOWN {
                UNKNOWN.into()
            } else {
                format!("{service}.default.svc.cluster.local").into()
            },
            protocol: "http".into(),
            response_code: code.into(),
            response_flags: flags.into(),
        };
        Traffic {
            labels: Arc::new(labels),
            rps,
            buckets: vec![(10.0, fast), (100.0, rps), (f64::INFINITY, rps)],
            ..Traffic::default()
        }
    }

    fn edge<'a>(g: &'a Graph, from: &str, to: &str) -> &'a Edge {
        g.edges
            .iter()
            .find(|e| e.source == from && e.target == to)
            .unwrap_or_else(|| panic!("no edge {from} -> {to} in {:#?}", g.edges))
    }

    #[test]
    fn bookinfo_from_synthetic_scrapes() {
        let rows = vec![
            // productpage → details: both sides report; the source's numbers win.
            row(
                "source",
                "productpage-v1",
                "details-v1",
                "details",
                "200",
                "-",
                2.0,
                2.0,
            ),
            row(
                "destination",
                "productpage-v1",
                "details-v1",
                "details",
                "200",
                "-",
                1.5,
                1.5,
            ),
            // productpage → reviews, spread over three versions; v3's answers are slow.
            row(
                "source",
                "productpage-v1",
                "reviews-v1",
                "reviews",
                "200",
                "-",
                1.0,
                1.0,
            ),
            row(
                "source",
                "productpage-v1",
                "reviews-v2",
                "reviews",
                "200",
                "-",
                0.5,
                0.5,
            ),
            row(
                "source",
                "productpage-v1",
                "reviews-v3",
                "reviews",
                "200",
                "-",
                0.5,
                0.0,
            ),
            // reviews v2 and v3 → ratings, a quarter of v3's failing.
            row(
                "source",
                "reviews-v2",
                "ratings-v1",
                "ratings",
                "200",
                "-",
                0.5,
                0.5,
            ),
            row(
                "source",
                "reviews-v3",
                "ratings-v1",
                "ratings",
                "200",
                "-",
                0.375,
                0.375,
            ),
            row(
                "source",
                "reviews-v3",
                "ratings-v1",
                "ratings",
                "503",
                "-",
                0.125,
                0.125,
            ),
            // The test client, outside the mesh: only productpage's sidecar reports it.
            row(
                "destination",
                UNKNOWN,
                "productpage-v1",
                "productpage",
                "200",
                "-",
                2.0,
                0.0,
            ),
            // A request no route took: it reached no workload.
            row(
                "source",
                "productpage-v1",
                UNKNOWN,
                UNKNOWN,
                "404",
                "NR",
                0.25,
                0.25,
            ),
        ];
        let g = build(&rows);
        let ids: Vec<&str> = g.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "service:details.default.svc.cluster.local",
                "service:productpage.default.svc.cluster.local",
                "service:ratings.default.svc.cluster.local",
                "service:reviews.default.svc.cluster.local",
                "unknown",
                "workload:default/details-v1",
                "workload:default/productpage-v1",
                "workload:default/ratings-v1",
                "workload:default/reviews-v1",
                "workload:default/reviews-v2",
                "workload:default/reviews-v3",
            ]
        );
        let reviews_v3 = g
            .nodes
            .iter()
            .find(|n| n.workload == "reviews-v3")
            .expect("reviews-v3");
        assert_eq!(
            (reviews_v3.app.as_str(), reviews_v3.version.as_str()),
            ("reviews", "v3")
        );
        let svc = "service:details.default.svc.cluster.local";
        let pp = "workload:default/productpage-v1";
        let e = edge(&g, pp, svc);
        assert_eq!(
            (e.rps, e.error_ratio, e.protocol.as_str()),
            (2.0, 0.0, "http")
        );
        assert!(close(e.p99_ms, 9.9), "all within 10 ms: {:?}", e.p99_ms);
        assert_eq!(edge(&g, svc, "workload:default/details-v1").rps, 2.0);

        let reviews = "service:reviews.default.svc.cluster.local";
        assert_eq!(edge(&g, pp, reviews).rps, 2.0);
        for (v, rps) in [("v1", 1.0), ("v2", 0.5), ("v3", 0.5)] {
            let e = edge(&g, reviews, &format!("workload:default/reviews-{v}"));
            assert_eq!(e.rps, rps, "reviews-{v}");
        }
        let slow = edge(&g, reviews, "workload:default/reviews-v3");
        assert!(
            close(slow.p99_ms, 99.1),
            "v3 answers in 10-100 ms: {:?}",
            slow.p99_ms
        );

        let ratings = "service:ratings.default.svc.cluster.local";
        let e = edge(&g, "workload:default/reviews-v3", ratings);
        assert_eq!((e.rps, e.error_ratio), (0.5, 0.25));
        let ratings_v1 = g
            .nodes
            .iter()
            .find(|n| n.workload == "ratings-v1")
            .expect("ratings");
        assert_eq!(ratings_v1.rps_in, 1.0);
        assert_eq!(ratings_v1.error_ratio, 0.125, "a failing node is marked");
        assert!(
            !edges_from(&g, "workload:default/ratings-v1"),
            "ratings calls nobody"
        );

        // Outside traffic comes from the unknown node, reported by the destination.
        assert_eq!(
            edge(&g, UNKNOWN, "service:productpage.default.svc.cluster.local").rps,
            2.0
        );
        // The unrouted request ends at productpage itself: no service, no workload.
        assert!(g.edges.iter().all(|e| e.target != UNKNOWN));
    }

    #[test]
    fn a_service_called_by_address_is_named_by_it() {
        assert_eq!(
            service_parts("127.0.1.10"),
            ("127.0.1.10".into(), String::new())
        );
        assert_eq!(
            service_parts("127.0.1.10:9080"),
            ("127.0.1.10:9080".into(), String::new())
        );
        assert_eq!(service_parts("::1"), ("::1".into(), String::new()));
        assert_eq!(
            service_parts("reviews.default.svc.cluster.local"),
            ("reviews".into(), "default".into())
        );
    }

    fn close(got: Option<f64>, want: f64) -> bool {
        got.is_some_and(|g| (g - want).abs() < 1e-9)
    }

    fn edges_from(g: &Graph, id: &str) -> bool {
        g.edges.iter().any(|e| e.source == id)
    }

    #[test]
    fn tcp_edges_carry_bytes() {
        let mut t = row(
            "source",
            "productpage-v1",
            "mysql-v1",
            "mysql",
            "",
            "-",
            0.0,
            0.0,
        );
        let mut l = (*t.labels).clone();
        l.protocol = "tcp".into();
        t.labels = Arc::new(l);
        t.buckets.clear();
        t.tcp_sent = 100.0;
        t.tcp_received = 50.0;
        let g = build(&[t]);
        let e = edge(
            &g,
            "workload:default/productpage-v1",
            "service:mysql.default.svc.cluster.local",
        );
        assert_eq!(
            (e.protocol.as_str(), e.bytes, e.p99_ms),
            ("tcp", 150.0, None)
        );
    }
}
