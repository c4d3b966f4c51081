//! Where the console's metrics come from: a [`MetricsSource`] answers two questions, every label
//! set's traffic over the last window (the graph) and the same at each step of a range (the charts).
//! [`Builtin`] answers from weftd's own scrapes ([`Window`]); [`Prometheus`] from a Prometheus server's
//! HTTP API, with PromQL shaped like Istio's dashboards' (`sum by (…) (rate(istio_requests_total[…]))`
//! and `histogram_quantile` over `istio_request_duration_milliseconds_bucket`). Both return the same
//! [`Traffic`] rows, so every page is computed once, from either.

use super::http::{self, Url};
use super::traffic::{Labels, Traffic};
use super::window::{Window, DURATION_BUCKET, REQUESTS, TCP_RECEIVED, TCP_SENT};
use super::BoxFuture;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why a source could not answer.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The HTTP exchange with the source failed.
    #[error(transparent)]
    Http(#[from] http::Error),
    /// Prometheus answered something other than a successful query result.
    #[error("prometheus query {query:?} failed: {reason}")]
    Query {
        /// The PromQL.
        query: String,
        /// Prometheus's error, or what was wrong with its answer.
        reason: String,
    },
    /// A computation task failed.
    #[error("console task failed")]
    Task,
}

/// Label equalities picking the traffic of one chart (`destination_workload="reviews-v1"`, …); the
/// names are [`Labels::NAMES`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(pub Vec<(&'static str, String)>);

impl Selector {
    /// Whether `l` has every value.
    pub fn matches(&self, l: &Labels) -> bool {
        self.0.iter().all(|(k, v)| l.get(k) == Some(v.as_str()))
    }

    /// As a PromQL label matcher list, values escaped.
    fn promql(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        parts.join(",")
    }
}

/// A range of points: `steps` points `step` apart ending at `end` (ms), each over `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// Last point, ms since the epoch; `None`: the source's latest data.
    pub end: Option<u64>,
    /// How far back the first point is.
    pub range: Duration,
    /// Between points.
    pub step: Duration,
    /// What each point's rates are taken over.
    pub window: Duration,
}

/// Traffic at each point of a range: (ms since the epoch, rows), oldest first.
pub type Points = Vec<(u64, Vec<Traffic>)>;

/// A source of Istio's standard metrics for the console.
pub trait MetricsSource: Send + Sync {
    /// `built-in` or `prometheus <url>`, for the status line.
    fn describe(&self) -> String;
    /// Every label set's traffic over the `window` up to the latest data; returns that time (ms since
    /// the epoch) with the rows.
    fn traffic(&self, window: Duration) -> BoxFuture<'_, Result<(u64, Vec<Traffic>), SourceError>>;
    /// The traffic that `selector` picks at each point of `range`, oldest first.
    fn range<'a>(
        &'a self,
        selector: &'a Selector,
        range: Range,
    ) -> BoxFuture<'a, Result<Points, SourceError>>;
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Wall-clock time in ms since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}

// === impl Builtin ===

/// weftd's own scrapes.
pub struct Builtin {
    window: Arc<Mutex<Window>>,
}

impl Builtin {
    /// Answers from `window`.
    pub fn new(window: Arc<Mutex<Window>>) -> Builtin {
        Builtin { window }
    }

    /// Runs `f` on the window off the runtime threads (a range over an hour of points is a few ms).
    async fn with_window<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Window) -> T + Send + 'static,
    ) -> Result<T, SourceError> {
        let window = self.window.clone();
        tokio::task::spawn_blocking(move || {
            let w = window.lock().unwrap_or_else(|p| p.into_inner());
            f(&w)
        })
        .await
        .map_err(|_| SourceError::Task)
    }
}

impl MetricsSource for Builtin {
    fn describe(&self) -> String {
        "built-in".into()
    }

    fn traffic(&self, window: Duration) -> BoxFuture<'_, Result<(u64, Vec<Traffic>), SourceError>> {
        Box::pin(self.with_window(move |w| {
            let end = w.latest().unwrap_or_else(now_ms);
            (end, w.traffic(end, millis(window), |_| true))
        }))
    }

    fn range<'a>(
        &'a self,
        selector: &'a Selector,
        range: Range,
    ) -> BoxFuture<'a, Result<Points, SourceError>> {
        let selector = selector.clone();
        Box::pin(self.with_window(move |w| {
            let end = range.end.or(w.latest()).unwrap_or_else(now_ms);
            steps(end, range)
                .map(|t| {
                    (
                        t,
                        w.traffic(t, millis(range.window), |l| selector.matches(l)),
                    )
                })
                .collect()
        }))
    }
}

/// The points of `range` ending at `end`, oldest first (at most 11,000, Prometheus's own limit).
fn steps(end: u64, range: Range) -> impl Iterator<Item = u64> {
    let step = millis(range.step).max(1);
    let n = (millis(range.range) / step).min(11_000);
    (0..=n).rev().map(move |i| end.saturating_sub(i * step))
}

// === impl Prometheus ===

/// A Prometheus server's HTTP API (`/api/v1/query`, `/api/v1/query_range`).
pub struct Prometheus {
    url: Url,
}

/// How long a query may take.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read.
const MAX_ANSWER: usize = 64 * 1024 * 1024;

impl Prometheus {
    /// A source querying the Prometheus at `url`.
    pub fn new(url: Url) -> Prometheus {
        Prometheus { url }
    }

    /// The four queries behind [`Traffic`]: request rate, latency buckets, TCP bytes each way. Each
    /// sums over every label but those of [`Labels`] (and `le`), as Istio's dashboards do.
    fn queries(selector: &Selector, window: Duration) -> [(&'static str, String); 4] {
        let by = Labels::NAMES.join(",");
        let w = format!("{}s", window.as_secs().max(1));
        let sel = selector.promql();
        let q = |metric: &str, extra: &str| {
            format!("sum by ({by}{extra}) (rate({metric}{{{sel}}}[{w}]))")
        };
        [
            (REQUESTS, q(REQUESTS, "")),
            (DURATION_BUCKET, q(DURATION_BUCKET, ",le")),
            (TCP_SENT, q(TCP_SENT, "")),
            (TCP_RECEIVED, q(TCP_RECEIVED, "")),
        ]
    }

    async fn query(
        &self,
        path_and_query: String,
        promql: &str,
    ) -> Result<serde_json::Value, SourceError> {
        let (status, body) = self
            .url
            .get(&path_and_query, QUERY_TIMEOUT, MAX_ANSWER)
            .await?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| SourceError::Query {
                query: promql.into(),
                reason: format!("answer is not JSON ({e}); HTTP {status}"),
            })?;
        if v["status"] != "success" {
            return Err(SourceError::Query {
                query: promql.into(),
                reason: v["error"].as_str().unwrap_or("no error given").to_string(),
            });
        }
        Ok(v["data"]["result"].clone())
    }
}

/// Folds one query's result series into `rows` (keyed by time and labels): `metric` says which field
/// the values go to.
fn fold(
    rows: &mut BTreeMap<u64, HashMap<Labels, Traffic>>,
    metric: &str,
    series: &serde_json::Value,
) {
    for s in series.as_array().into_iter().flatten() {
        let m = &s["metric"];
        let labels = Labels::from_fn(|n| m[n].as_str(), |v: &str| Arc::from(v));
        let le = m["le"].as_str().and_then(|l| match l {
            "+Inf" => Some(f64::INFINITY),
            _ => l.parse::<f64>().ok(),
        });
        // An instant vector has one `value`; a range's series a list of `values`.
        let values = s["values"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| vec![s["value"].clone()]);
        for point in &values {
            let (Some(t), Some(v)) = (
                point[0].as_f64(),
                point[1].as_str().and_then(|v| v.parse::<f64>().ok()),
            ) else {
                continue;
            };
            if !v.is_finite() {
                continue; // NaN from a rate over nothing
            }
            let row = rows
                .entry((t * 1000.0) as u64)
                .or_default()
                .entry(labels.clone())
                .or_insert_with(|| Traffic {
                    labels: Arc::new(labels.clone()),
                    ..Traffic::default()
                });
            match metric {
                REQUESTS => row.rps += v,
                TCP_SENT => row.tcp_sent += v,
                TCP_RECEIVED => row.tcp_received += v,
                DURATION_BUCKET => {
                    if let Some(le) = le {
                        super::traffic::add_buckets(&mut row.buckets, &[(le, v)]);
                    }
                }
                _ => {}
            }
        }
    }
}

fn sorted(rows: HashMap<Labels, Traffic>) -> Vec<Traffic> {
    let mut v: Vec<Traffic> = rows.into_values().collect();
    v.sort_by(|a, b| a.labels.cmp(&b.labels));
    v
}

impl MetricsSource for Prometheus {
    fn describe(&self) -> String {
        format!("prometheus {}", self.url)
    }

    fn traffic(&self, window: Duration) -> BoxFuture<'_, Result<(u64, Vec<Traffic>), SourceError>> {
        Box::pin(async move {
            let at = now_ms();
            let mut rows = BTreeMap::new();
            for (metric, promql) in Self::queries(&Selector::default(), window) {
                let path = format!(
                    "/api/v1/query?query={}&time={:.3}",
                    http::encode(&promql),
                    at as f64 / 1000.0
                );
                let result = self.query(path, &promql).await?;
                fold(&mut rows, metric, &result);
            }
            let rows = rows.into_values().next().unwrap_or_default();
            Ok((at, sorted(rows)))
        })
    }

    fn range<'a>(
        &'a self,
        selector: &'a Selector,
        range: Range,
    ) -> BoxFuture<'a, Result<Points, SourceError>> {
        Box::pin(async move {
            let end = range.end.unwrap_or_else(now_ms);
            let start = end.saturating_sub(millis(range.range));
            let mut rows = BTreeMap::new();
            for (metric, promql) in Self::queries(selector, range.window) {
                let path = format!(
                    "/api/v1/query_range?query={}&start={:.3}&end={:.3}&step={}",
                    http::encode(&promql),
                    start as f64 / 1000.0,
                    end as f64 / 1000.0,
                    range.step.as_secs_f64().max(0.001)
                );
                let result = self.query(path, &promql).await?;
                fold(&mut rows, metric, &result);
            }
            Ok(rows.into_iter().map(|(t, r)| (t, sorted(r))).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promql_is_shaped_like_istios_dashboards() {
        let sel = Selector(vec![
            ("reporter", "destination".into()),
            ("destination_workload", "re\"views".into()),
        ]);
        let q = Prometheus::queries(&sel, Duration::from_secs(60));
        assert_eq!(
            q[0].1,
            "sum by (reporter,source_workload,source_workload_namespace,source_app,source_version,\
             destination_workload,destination_workload_namespace,destination_app,destination_version,\
             destination_service,request_protocol,response_code,response_flags) \
             (rate(istio_requests_total{reporter=\"destination\",destination_workload=\"re\\\"views\"}[60s]))"
        );
        assert!(q[1].1.starts_with("sum by (reporter,"), "{}", q[1].1);
        assert!(q[1]
            .1
            .contains(",response_flags,le) (rate(istio_request_duration_milliseconds_bucket{"));
    }

    #[test]
    fn prometheus_answers_fold_into_traffic_rows() {
        let labels = r#""reporter":"source","source_workload":"productpage-v1","destination_workload":"details-v1","response_code":"200""#;
        let instant = |v: &str| {
            serde_json::from_str::<serde_json::Value>(&format!(
                r#"[{{"metric":{{{labels}}},"value":[1700000000.5,"{v}"]}}]"#
            ))
            .expect("json")
        };
        let buckets: serde_json::Value = serde_json::from_str(&format!(
            r#"[{{"metric":{{{labels},"le":"+Inf"}},"value":[1700000000.5,"2"]}},
                {{"metric":{{{labels},"le":"10"}},"value":[1700000000.5,"1"]}},
                {{"metric":{{{labels},"le":"5"}},"value":[1700000000.5,"NaN"]}}]"#
        ))
        .expect("json");
        let mut rows = BTreeMap::new();
        fold(&mut rows, REQUESTS, &instant("2"));
        fold(&mut rows, DURATION_BUCKET, &buckets);
        let (t, rows) = rows.into_iter().next().expect("one time");
        assert_eq!(t, 1_700_000_000_500);
        let rows = sorted(rows);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].rps, 2.0);
        assert_eq!(&*rows[0].labels.destination_workload, "details-v1");
        assert_eq!(
            &*rows[0].labels.destination_service, "",
            "absent labels are empty"
        );
        assert_eq!(rows[0].buckets, vec![(10.0, 1.0), (f64::INFINITY, 2.0)]);
    }

    #[test]
    fn builtin_ranges_step_back_from_the_latest_scrape() {
        let r = Range {
            end: None,
            range: Duration::from_secs(60),
            step: Duration::from_secs(15),
            window: Duration::from_secs(30),
        };
        let v: Vec<u64> = steps(100_000, r).collect();
        assert_eq!(v, [40_000, 55_000, 70_000, 85_000, 100_000]);
    }
}
