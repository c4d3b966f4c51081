//! A real Prometheus (Debian's, run by `scripts/prometheus`) scraping a running mesh with the
//! configuration `weft install prometheus` prints: weftd's metrics arrive, and every query of the
//! control-plane dashboard returns data; the proxies are found through weftd and scraped, and with
//! Bookinfo's traffic every HTTP query of the mesh, service and workload dashboards returns data too
//! (their TCP queries need TCP traffic: they must only be PromQL Prometheus accepts).
//! `a_known_traffic_pattern_reads_back_exactly_in_promql` sends a known pattern through the demo
//! (reviews split 50/50 between v1 and v3, then ratings aborting half its calls) and checks the
//! numbers Istio's dashboard queries return against what the pages themselves said.
//! `every_dashboard_has_data_in_a_running_mesh` requires every query's data, against a Prometheus
//! you point it at.

use anyhow::{bail, Context};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use weft_e2e::grafana;
use weft_e2e::prometheus::{run_dashboard, Prometheus};
use weft_e2e::{eventually, reviews_version_of, Mesh};

const DR: &str = "networking/destination-rule-all.yaml";
const ALL_V1: &str = "networking/virtual-service-all-v1.yaml";
const FIFTY_V3: &str = "networking/virtual-service-reviews-50-v3.yaml";

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

    // weftd is scraped, with the six sidecars and the ingress gateway connected.
    eventually("weftd scraped", Duration::from_secs(30), || async {
        if prom
            .query("sum(pilot_xds{job=\"weftd\",app=\"weftd\"}) == 7")
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

    // Every proxy (the six sidecars and the ingress gateway) is found through weftd and scraped.
    eventually("seven proxies scraped", Duration::from_secs(30), || async {
        if prom
            .query("count(up{job=\"weft-proxies\"} == 1) == 7")
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

/// Pages per batch of the known pattern.
const PAGES: usize = 200;

/// Half of every call to ratings aborted with a 500 by the caller's sidecar (Istio's fault
/// injection task, for everyone rather than for jason).
const RATINGS_ABORT_HALF: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - fault:
      abort:
        percentage:
          value: 50
        httpStatus: 500
    route:
    - destination:
        host: ratings
        subset: v1
";

/// A Bookinfo service's FQDN, as `destination_service` has it.
fn svc(name: &str) -> String {
    format!("{name}.default.svc.cluster.local")
}

/// Seconds since the epoch, as Prometheus writes sample times.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// An instant query's series as `label values joined by "|"` → value (NaN stays NaN).
async fn series(
    prom: &Prometheus,
    promql: &str,
    by: &[&str],
) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for s in prom.query(promql).await? {
        let key: Vec<&str> = by
            .iter()
            .map(|l| s["metric"][*l].as_str().unwrap_or(""))
            .collect();
        let v = s["value"][1]
            .as_str()
            .with_context(|| format!("no value in {s}"))?;
        let v: f64 = v
            .parse()
            .with_context(|| format!("{v:?} is not a number"))?;
        out.insert(key.join("|"), v);
    }
    Ok(out)
}

/// Counter sums the known-pattern checks read, each the aggregation of an Istio dashboard panel over
/// the counter itself (the panels take `rate()` of it; a difference of two readings is exact).
const COUNTERS: [(&str, &str, &[&str]); 5] = [
    // Istio's mesh dashboard, "HTTP/gRPC workloads" (the server side, by workload) and "Requests by
    // service" (the client side, by service).
    (
        "by workload, reporter=destination",
        r#"sum by (destination_workload) (istio_requests_total{reporter="destination"})"#,
        &["destination_workload"],
    ),
    (
        "by service, reporter=source",
        r#"sum by (destination_service) (istio_requests_total{reporter="source"})"#,
        &["destination_service"],
    ),
    // The workload dashboard, "Inbound requests by source workload and response code", for ratings,
    // from both sides.
    (
        "ratings by source, code and flags, reporter=source",
        r#"sum by (source_workload, response_code, response_flags) (istio_requests_total{reporter="source",destination_service=~"ratings.default.svc.cluster.local"})"#,
        &["source_workload", "response_code", "response_flags"],
    ),
    (
        "ratings by source, code and flags, reporter=destination",
        r#"sum by (source_workload, response_code, response_flags) (istio_requests_total{reporter="destination",destination_service=~"ratings.default.svc.cluster.local"})"#,
        &["source_workload", "response_code", "response_flags"],
    ),
    // The mesh dashboard's "5xxs", by response flag.
    (
        "5xx by flags, reporter=source",
        r#"sum by (response_flags) (istio_requests_total{reporter="source",response_code=~"5.."})"#,
        &["response_flags"],
    ),
];

/// Readings of [`COUNTERS`], by name.
type Readings = BTreeMap<&'static str, BTreeMap<String, f64>>;

async fn read_counters(prom: &Prometheus) -> anyhow::Result<Readings> {
    let mut out = BTreeMap::new();
    for (name, q, by) in COUNTERS {
        out.insert(name, series(prom, q, by).await?);
    }
    Ok(out)
}

/// What each counter sum grew by from `before` to `after` (zeros left out).
fn growth(before: &Readings, after: &Readings) -> Readings {
    let mut out = BTreeMap::new();
    for (name, series) in after {
        let mut d = BTreeMap::new();
        for (k, v) in series {
            let was = before
                .get(name)
                .and_then(|b| b.get(k))
                .copied()
                .unwrap_or(0.0);
            if *v != was {
                d.insert(k.clone(), v - was);
            }
        }
        out.insert(*name, d);
    }
    out
}

/// Waits until Prometheus holds a scrape of each of the seven proxies (the gateway's too) that began after `since` (a
/// quarter of a second after the last response, so no request of before is still being recorded),
/// then reads the counters: the baseline a batch is measured from. (`timestamp()` of a selector, not
/// of an expression: that would be the evaluation's time.)
async fn settled_counters(prom: &Prometheus, since: f64) -> anyhow::Result<Readings> {
    let q = format!(
        r#"count(timestamp(up{{job="weft-proxies"}}) > {:.3}) == 7"#,
        since + 0.25
    );
    eventually(
        "a scrape of every proxy after the last page",
        Duration::from_secs(30),
        || async {
            if prom.query(&q).await?.is_empty() {
                bail!(
                    "{:?}",
                    prom.query(r#"timestamp(up{job="weft-proxies"})"#).await?
                );
            }
            Ok(())
        },
    )
    .await?;
    read_counters(prom).await
}

/// One batch's pages as the pages told it.
#[derive(Debug, Default)]
struct Batch {
    /// Pages served by each reviews workload.
    by_reviews: BTreeMap<String, usize>,
    /// Pages whose reviews had no stars: ratings failed for them.
    ratings_unavailable: usize,
}

impl Batch {
    fn served_by(&self, workload: &str) -> usize {
        self.by_reviews.get(workload).copied().unwrap_or(0)
    }
}

/// Sends `n` pages one after another, each of which must be whole (200, naming its reviews); with
/// `until`, stops early once what the pages said satisfies it.
async fn send_pages(
    mesh: &Mesh,
    n: usize,
    until: Option<&dyn Fn(&Batch) -> bool>,
) -> anyhow::Result<Batch> {
    let mut b = Batch::default();
    for i in 0..n {
        let (status, page) = mesh.productpage(None).await?;
        if status != 200 {
            bail!("page {i}: {status}\n{page}");
        }
        let v = reviews_version_of(&page).with_context(|| format!("page {i} names no reviews"))?;
        *b.by_reviews.entry(v).or_insert(0) += 1;
        if page.contains("Ratings service is currently unavailable") {
            b.ratings_unavailable += 1;
        }
        if until.is_some_and(|u| u(&b)) {
            return Ok(b);
        }
    }
    if until.is_some() {
        bail!("not seen in {n} pages: {b:?}");
    }
    Ok(b)
}

/// Pages until every series a batch will grow exists and has been scraped before the batch starts:
/// Prometheus cannot tell a counter born between two scrapes from one that was there, so `rate()`
/// over a series that first appears inside a batch misses the batch (Istio's dashboards have the same
/// blind spot with a new series).
async fn warm_up(mesh: &Mesh, until: &dyn Fn(&Batch) -> bool) -> anyhow::Result<Batch> {
    send_pages(mesh, 50, Some(until)).await
}

/// `n` Bernoulli(½) trials: the successes' bounds at four standard deviations (a false alarm about
/// once in 16,000 runs).
fn half_of(n: usize) -> std::ops::RangeInclusive<usize> {
    let mean = n as f64 / 2.0;
    let four_sd = 4.0 * (n as f64 / 4.0).sqrt();
    ((mean - four_sd).floor().max(0.0) as usize)..=((mean + four_sd).ceil() as usize)
}

/// The growth `g` must equal `want` exactly for each counter sum named; `Err` says what differs.
fn expect_growth(g: &Readings, want: &[(&str, BTreeMap<String, f64>)]) -> anyhow::Result<()> {
    let mut wrong = Vec::new();
    for (name, w) in want {
        let got = g.get(name).cloned().unwrap_or_default();
        if &got != w {
            wrong.push(format!("{name}: got {got:?}, want {w:?}"));
        }
    }
    if !wrong.is_empty() {
        bail!("{}", wrong.join("\n"));
    }
    Ok(())
}

fn counts(pairs: &[(String, usize)]) -> BTreeMap<String, f64> {
    pairs
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.clone(), *n as f64))
        .collect()
}

/// The dashboard queries of panel `title` in `dashboard`, run with the dashboards' variables matching
/// everything and `$__rate_interval` at 1m (the whole of a batch and its wait).
async fn panel(
    prom: &Prometheus,
    dashboard: &grafana::Dashboard,
    title: &str,
) -> anyhow::Result<Vec<(String, Vec<Value>)>> {
    let mut vars = dashboard.default_values();
    vars.insert("__rate_interval".into(), "1m".into());
    let mut out = Vec::new();
    for q in dashboard.queries() {
        let grafana::Source::Panel { title: t, .. } = &q.source else {
            continue;
        };
        if t == title {
            let promql = grafana::expand(&q.expr, &vars)?;
            let r = prom.query(&promql).await?;
            out.push((promql, r));
        }
    }
    if out.is_empty() {
        bail!("no panel {title:?} in {}", dashboard.title());
    }
    Ok(out)
}

fn value_of(s: &Value) -> f64 {
    s["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_traffic_pattern_reads_back_exactly_in_promql() {
    let started = Instant::now();
    let mesh = Mesh::start(27).await.expect("mesh starts");
    mesh.all_synced(Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));
    let out = mesh.weft(&["install", "prometheus", "--scrape-interval", "1s"]);
    assert!(out.status.success(), "weft install prometheus failed");
    let prom = Prometheus::start("127.27.0.9", &String::from_utf8_lossy(&out.stdout))
        .await
        .unwrap_or_else(|e| panic!("Prometheus starts: {e:#}"));
    let logs = || format!("==> prometheus <==\n{}\n{}", prom.log(), mesh.logs());
    let mesh_dashboard = grafana::load("weft-mesh.json").expect("dashboard");

    // Reviews half to v1, half to v3 (Istio's traffic-shifting task), in force in every proxy.
    let before = mesh.sent_nonces("RDS").await.expect("syncz");
    mesh.apply(DR);
    mesh.apply(FIFTY_V3);
    mesh.pushed("RDS", &before, Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));

    // 1. 200 pages. Baseline: the counters once every proxy is scraped with no traffic in flight,
    // after pages from both reviews versions.
    warm_up(&mesh, &|b| {
        b.served_by("reviews-v1") > 0 && b.served_by("reviews-v3") > 0
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    let base = settled_counters(&prom, unix_now())
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    let b1 = send_pages(&mesh, PAGES, None)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    let (v1, v3) = (b1.served_by("reviews-v1"), b1.served_by("reviews-v3"));
    println!("batch 1: {b1:?}");
    assert_eq!(v1 + v3, PAGES, "only v1 and v3 serve reviews: {b1:?}");
    assert!(
        half_of(PAGES).contains(&v1),
        "50/50 within 4 sd: {b1:?} ({:?})",
        half_of(PAGES)
    );
    assert_eq!(b1.ratings_unavailable, 0, "{b1:?}");
    let want1 = [
        (
            "by workload, reporter=destination",
            counts(&[
                ("productpage-v1".into(), PAGES),
                ("details-v1".into(), PAGES),
                ("reviews-v1".into(), v1),
                ("reviews-v3".into(), v3),
                ("ratings-v1".into(), v3),
            ]),
        ),
        (
            "by service, reporter=source",
            counts(&[
                (svc("details"), PAGES),
                (svc("reviews"), PAGES),
                (svc("ratings"), v3),
            ]),
        ),
        (
            "ratings by source, code and flags, reporter=source",
            counts(&[("reviews-v3|200|-".into(), v3)]),
        ),
        (
            "ratings by source, code and flags, reporter=destination",
            counts(&[("reviews-v3|200|-".into(), v3)]),
        ),
        ("5xx by flags, reporter=source", BTreeMap::new()),
    ];
    let g1 = eventually("batch 1 scraped", Duration::from_secs(30), || async {
        let g = growth(&base, &read_counters(&prom).await?);
        expect_growth(&g, &want1)?;
        Ok(g)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    println!("batch 1 in Prometheus: {g1:?}");

    // Success rate, mesh-wide and per service (the mesh dashboard's panels): all 100 %.
    for title in ["Success rate", "Success rate by service"] {
        for (q, r) in panel(&prom, &mesh_dashboard, title).await.expect("panel") {
            assert!(!r.is_empty(), "{title}: {q} returned nothing");
            for s in &r {
                assert_eq!(value_of(s), 1.0, "{title}: {q}: {s}");
            }
        }
    }
    // P50/P90/P99 by workload (the mesh dashboard's workload table), in milliseconds: a number for
    // every workload that served the batch, ordered, and under
    // five seconds (the histogram's buckets interpolated; a loaded CI machine is slow, not broken).
    let mut quantiles: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
    for (q, r) in panel(&prom, &mesh_dashboard, "HTTP/gRPC workloads")
        .await
        .expect("panel")
    {
        let Some(p) = q
            .strip_prefix("histogram_quantile(")
            .and_then(|r| r.split(',').next())
        else {
            continue;
        };
        for s in &r {
            let w = s["metric"]["destination_workload"]
                .as_str()
                .unwrap_or("")
                .to_string();
            quantiles
                .entry(w)
                .or_default()
                .push((p.to_string(), value_of(s)));
        }
    }
    println!("latency quantiles (ms): {quantiles:?}");
    for w in [
        "productpage-v1",
        "details-v1",
        "reviews-v1",
        "reviews-v3",
        "ratings-v1",
    ] {
        let qs = quantiles
            .get(w)
            .unwrap_or_else(|| panic!("no quantiles for {w}: {quantiles:?}"));
        let ps: Vec<String> = qs.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(ps, ["0.50", "0.90", "0.99"], "{w}: {qs:?}");
        let vs: Vec<f64> = qs.iter().map(|(_, v)| *v).collect();
        assert!(
            vs.iter().all(|v| v.is_finite() && *v > 0.0 && *v < 5000.0),
            "{w}: {qs:?}"
        );
        assert!(vs[0] <= vs[1] && vs[1] <= vs[2], "{w}: ordered: {qs:?}");
    }

    // 2. Ratings aborts half its calls: another 200 pages. reviews-v3 shows "ratings unavailable"
    // for each abort (and still answers 200), so the pages say how many there were.
    let before = mesh.sent_nonces("RDS").await.expect("syncz");
    mesh.write_config("ratings-abort.yaml", RATINGS_ABORT_HALF)
        .expect("write");
    mesh.pushed("RDS", &before, Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    warm_up(&mesh, &|b| b.ratings_unavailable > 0)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    let base = settled_counters(&prom, unix_now())
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    let b2 = send_pages(&mesh, PAGES, None)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    println!("batch 2: {b2:?}");
    let (v1, v3) = (b2.served_by("reviews-v1"), b2.served_by("reviews-v3"));
    let aborted = b2.ratings_unavailable;
    assert_eq!(v1 + v3, PAGES, "{b2:?}");
    assert!(
        half_of(v3).contains(&aborted),
        "about half of {v3} ratings calls aborted: {b2:?} ({:?})",
        half_of(v3)
    );
    let want2 = [
        (
            "by workload, reporter=destination",
            counts(&[
                ("productpage-v1".into(), PAGES),
                ("details-v1".into(), PAGES),
                ("reviews-v1".into(), v1),
                ("reviews-v3".into(), v3),
                // An aborted call never leaves reviews-v3's sidecar.
                ("ratings-v1".into(), v3 - aborted),
            ]),
        ),
        (
            "by service, reporter=source",
            counts(&[
                (svc("details"), PAGES),
                (svc("reviews"), PAGES),
                (svc("ratings"), v3),
            ]),
        ),
        (
            "ratings by source, code and flags, reporter=source",
            counts(&[
                ("reviews-v3|200|-".into(), v3 - aborted),
                ("reviews-v3|500|FI".into(), aborted),
            ]),
        ),
        (
            "ratings by source, code and flags, reporter=destination",
            counts(&[("reviews-v3|200|-".into(), v3 - aborted)]),
        ),
        // The 5xx share of the batch: every 5xx is a fault injection, about half of ratings' calls.
        (
            "5xx by flags, reporter=source",
            counts(&[("FI".into(), aborted)]),
        ),
    ];
    let g2 = eventually("batch 2 scraped", Duration::from_secs(30), || async {
        let g = growth(&base, &read_counters(&prom).await?);
        expect_growth(&g, &want2)?;
        Ok(g)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    println!("batch 2 in Prometheus: {g2:?}");

    println!(
        "5xx share of ratings' calls: {aborted}/{v3} = {:.2}",
        aborted as f64 / v3 as f64
    );
    // The dashboards see it: ratings' success rate is under 100 %, the mesh's 5xxs above zero.
    let by_service = panel(&prom, &mesh_dashboard, "Success rate by service")
        .await
        .expect("panel");
    let ratings_rate = by_service[0]
        .1
        .iter()
        .find(|s| s["metric"]["destination_service"] == svc("ratings"))
        .map(value_of)
        .expect("ratings' success rate");
    assert!(ratings_rate < 1.0 && ratings_rate > 0.0, "{ratings_rate}");
    let fives = panel(&prom, &mesh_dashboard, "5xxs").await.expect("panel");
    assert!(value_of(&fives[0].1[0]) > 0.0, "{fives:?}");
    println!("took {} ms", started.elapsed().as_millis());
}
