//! The Telemetry API through the real binaries: a mesh-wide Telemetry (root namespace) logs only
//! failed requests, and the `default` namespace's Telemetry drops `istio_request_bytes`, removes
//! `request_protocol` from `istio_requests_total` and adds a `user` label, read from the `end-user`
//! request header, to every metric. Both are files written into weftd's config directory; once every
//! sidecar has acknowledged the new listeners, Bookinfo pages signed in as `jason` show up in the
//! sidecars' `/stats/prometheus` with the labels changed, and only a 404 reaches the access log.

use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::time::Duration;
use weft_cli::demo::WORKLOADS;
use weft_e2e::{eventually, Mesh};

const MESH_TELEMETRY: &str = "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: mesh-default
  namespace: istio-system
spec:
  accessLogging:
  - providers:
    - name: envoy
    filter:
      expression: response.code >= 400
";

const NAMESPACE_TELEMETRY: &str = "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: namespace-metrics
  namespace: default
spec:
  metrics:
  - providers:
    - name: prometheus
    overrides:
    - tagOverrides:
        user:
          value: request.headers['end-user']
    - match:
        metric: REQUEST_COUNT
      tagOverrides:
        request_protocol:
          operation: REMOVE
    - match:
        metric: REQUEST_SIZE
      disabled: true
";

/// Every sidecar's `/stats/prometheus`, by workload.
async fn stats(mesh: &Mesh) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for w in &WORKLOADS {
        let addr = format!("{}:15090", mesh.layout.ip(w));
        let (status, text) = weft_cli::http::get(&addr, "/stats/prometheus").await?;
        if status != 200 {
            bail!("{addr} answered {status}");
        }
        out.insert(w.name(), text);
    }
    Ok(out)
}

/// The lines of `family` (`istio_requests_total`) across every sidecar's text.
fn lines<'a>(all: &'a BTreeMap<String, String>, family: &str) -> Vec<&'a str> {
    let prefix = format!("{family}{{");
    all.values()
        .flat_map(|t| t.lines())
        .filter(|l| l.starts_with(&prefix))
        .collect()
}

/// The sum of `family`'s samples across every sidecar.
fn total(all: &BTreeMap<String, String>, family: &str) -> f64 {
    lines(all, family)
        .iter()
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_resources_shape_metrics_and_access_logs() {
    let mesh = Mesh::start(29).await.expect("mesh starts");
    mesh.all_synced(Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));

    // Both Telemetry resources at once; every sidecar's listeners change (metrics on both sides,
    // access logs everywhere).
    let before = mesh.sent_nonces("LDS").await.expect("syncz");
    mesh.write_config("telemetry-mesh.yaml", MESH_TELEMETRY)
        .expect("write the mesh Telemetry");
    mesh.write_config("telemetry-default.yaml", NAMESPACE_TELEMETRY)
        .expect("write the namespace Telemetry");
    mesh.pushed("LDS", &before, Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));
    let baseline = stats(&mesh).await.expect("stats");
    let request_bytes_before = total(&baseline, "istio_request_bytes_count");

    // Pages as jason: productpage calls details and reviews with `end-user: jason`.
    const PAGES: usize = 5;
    for _ in 0..PAGES {
        let (status, _) = mesh.productpage(Some("jason")).await.expect("page");
        assert_eq!(status, 200);
    }
    // Then a request the application answers 404, the one line the access log filter admits.
    let (status, _) = weft_cli::http::get(&mesh.layout.productpage_address(), "/nope")
        .await
        .expect("GET /nope");
    assert_eq!(status, 404);

    // Requests are recorded when their response ends: poll until jason's calls to details are all
    // in (by details' sidecar, reporter="destination"), then read everything once more.
    let after = eventually(
        "jason's requests in the sidecars' metrics",
        Duration::from_secs(20),
        || async {
            let all = stats(&mesh).await?;
            let details = all.get("details-v1").context("details' stats")?;
            let jason = details
                .lines()
                .filter(|l| {
                    l.starts_with("istio_requests_total{")
                        && l.contains("reporter=\"destination\"")
                        && l.contains("user=\"jason\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>();
            if jason < PAGES as f64 {
                bail!("details has {jason} of jason's {PAGES} requests:\n{details}");
            }
            Ok(all)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));

    // istio_requests_total: the new series have `user` and no `request_protocol`.
    let requests = lines(&after, "istio_requests_total");
    let with_user: Vec<&&str> = requests.iter().filter(|l| l.contains(",user=")).collect();
    assert!(!with_user.is_empty(), "{requests:#?}");
    for l in &with_user {
        assert!(!l.contains("request_protocol="), "removed: {l}");
    }
    for side in ["reporter=\"source\"", "reporter=\"destination\""] {
        assert!(
            with_user
                .iter()
                .any(|l| l.contains(side) && l.contains("user=\"jason\"")),
            "jason seen with {side}: {with_user:#?}"
        );
    }
    // The 404 came without `end-user`: its user is `unknown`.
    assert!(
        with_user.iter().any(|l| l.contains("user=\"unknown\"")),
        "{with_user:#?}"
    );

    // istio_request_duration_milliseconds: `user` added, `request_protocol` kept.
    let durations = lines(&after, "istio_request_duration_milliseconds_count");
    assert!(
        durations
            .iter()
            .any(|l| l.contains("request_protocol=\"http\"")
                && l.ends_with(&format!(",user=\"jason\"}} {PAGES}"))
                && l.contains("destination_workload=\"details-v1\"")
                && l.contains("reporter=\"destination\"")),
        "{durations:#?}"
    );

    // istio_request_bytes: dropped. No new series, and the old ones did not grow.
    let sizes = lines(&after, "istio_request_bytes_count");
    assert!(
        !sizes.iter().any(|l| l.contains("user=")),
        "dropped: {sizes:#?}"
    );
    assert_eq!(
        total(&after, "istio_request_bytes_count"),
        request_bytes_before,
        "{sizes:#?}"
    );

    // The access log (productpage's sidecar writes it to its stdout): the 404, none of the pages.
    let log = mesh.log_dir.join("productpage-v1-proxy.log");
    let text = eventually(
        "the 404 in productpage's access log",
        Duration::from_secs(10),
        || async {
            let text = std::fs::read_to_string(&log)
                .with_context(|| format!("cannot read {}", log.display()))?;
            if !text.contains("\"GET /nope HTTP/1.1\" 404") {
                bail!("no 404 line yet");
            }
            Ok(text)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));
    assert!(
        !text.contains("/productpage?u=jason"),
        "only failures are logged:\n{text}"
    );
}
