//! A real Prometheus (Debian's, run by `scripts/prometheus`) scraping a running mesh with the
//! configuration `weft install prometheus` prints: weftd's metrics arrive, and every query of the
//! control-plane dashboard returns data; the proxies are found through weftd and scraped, and with
//! Bookinfo's traffic every HTTP query of the mesh, service and workload dashboards returns data too
//! (their TCP queries need TCP traffic: they must only be PromQL Prometheus accepts).
//! `every_dashboard_has_data_in_a_running_mesh` requires every query's data, against a Prometheus
//! you point it at.

use anyhow::bail;
use std::time::{Duration, Instant};
use weft_e2e::grafana;
use weft_e2e::prometheus::{run_dashboard, Prometheus};
use weft_e2e::{eventually, Mesh};

const DR: &str = "networking/destination-rule-all.yaml";
const ALL_V1: &str = "networking/virtual-service-all-v1.yaml";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scraping_the_mesh_fills_the_dashboards() {
    let started = Instant::now();
    let mesh = Mesh::start(26).await.expect("mesh starts");
    mesh.all_synced(Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));

    // The configuration a user would take, scraping every second.
    let out = mesh.weft(&["install", "prometheus", "--scrape-interval", "1s"]);
    assert!(
        out.status.success(),
        "weft install prometheus: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = String::from_utf8(out.stdout).expect("utf-8");
    let prom = Prometheus::start("127.26.0.9", &config)
        .await
        .unwrap_or_else(|e| panic!("Prometheus starts: {e:#}"));
    let logs = || format!("==> prometheus <==\n{}\n{}", prom.log(), mesh.logs());

    // weftd is scraped, with the six proxies connected.
    eventually("weftd scraped", Duration::from_secs(30), || async {
        if prom
            .query("sum(pilot_xds{job=\"weftd\",app=\"weftd\"}) == 6")
            .await?
            .is_empty()
        {
            bail!("not yet");
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));

    // A change: weftd pushes it, the proxies acknowledge it and have converged.
    mesh.apply(DR);
    mesh.apply(ALL_V1);
    eventually("a convergence recorded", Duration::from_secs(30), || async {
        let q = "sum(pilot_proxy_convergence_time_count) > 0 and sum(pilot_xds_pushes{type=\"rds\"}) > 0";
        if prom.query(q).await?.is_empty() {
            bail!("not yet");
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));

    // Every proxy is found through weftd and scraped.
    eventually("six proxies scraped", Duration::from_secs(30), || async {
        if prom
            .query("count(up{job=\"weft-proxies\"} == 1) == 6")
            .await?
            .is_empty()
        {
            bail!("{:?}", prom.query("up{job=\"weft-proxies\"}").await?);
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    // Every query of the control-plane dashboard returns data.
    let cp = grafana::load("weft-control-plane.json").expect("dashboard");
    let vars = cp.default_values();
    let report = eventually(
        "every control-plane query has data",
        Duration::from_secs(30),
        || async {
            let r = run_dashboard(&prom.addr, &cp, &vars).await;
            if !r.all_have_data() {
                bail!("{r}");
            }
            Ok(r)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    println!("{report}");

    // With traffic, every HTTP query of the mesh, service and workload dashboards returns data from
    // the proxies' metrics. Bookinfo sends no opaque TCP, so the TCP queries are only checked to be
    // PromQL Prometheus accepts, and printed.
    let others: Vec<_> = ["weft-mesh.json", "weft-service.json", "weft-workload.json"]
        .into_iter()
        .map(|f| grafana::load(f).expect("dashboard"))
        .collect();
    let reports = eventually(
        "every HTTP query of the proxies' dashboards has data",
        Duration::from_secs(30),
        || async {
            for _ in 0..5 {
                mesh.productpage(None).await?;
            }
            let mut reports = Vec::new();
            for d in &others {
                let r = run_dashboard(&prom.addr, d, &d.default_values()).await;
                let http_empty = r.empty.iter().any(|q| !q.expr.contains("istio_tcp_"));
                if !r.failed.is_empty() || http_empty {
                    bail!("{r}");
                }
                reports.push(r);
            }
            Ok(reports)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    for r in reports {
        println!("{r}");
    }
    println!("took {} ms", started.elapsed().as_millis());
}

/// For a person: every query of every dashboard against the
/// Prometheus at `WEFT_PROMETHEUS` (`host:port`), say one started by `scripts/prometheus` with the
/// configuration of `weft install prometheus` beside `weft demo` (tests/README.md). Prints each
/// dashboard's empty queries; fails if there are any.
#[tokio::test]
#[ignore = "needs a Prometheus scraping a mesh with traffic: WEFT_PROMETHEUS=host:port"]
async fn every_dashboard_has_data_in_a_running_mesh() {
    let addr = std::env::var("WEFT_PROMETHEUS").expect("WEFT_PROMETHEUS=host:port");
    let mut complete = true;
    for d in grafana::load_all().expect("dashboards") {
        let r = run_dashboard(&addr, &d, &d.default_values()).await;
        println!("{r}");
        complete &= r.all_have_data();
    }
    assert!(complete, "some queries returned nothing (above)");
}
