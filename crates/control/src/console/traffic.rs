//! What every page of the console is computed from, whichever source it came from: [`Traffic`] rows,
//! one per label set of Istio's standard metrics over a window, with request rate, latency histogram
//! and TCP byte rates; and the arithmetic on them (quantiles from buckets, error classes, sums).

use std::sync::Arc;

/// The labels of Istio's standard metrics that the console groups by (`SPEC.md` §3.1), in this order
/// in [`Labels::NAMES`]. The rest (principals, canonical names, clusters, `grpc_response_status`,
/// `connection_security_policy`) are summed over.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels {
    /// `reporter`: `source` or `destination`.
    pub reporter: Arc<str>,
    /// `source_workload`.
    pub source_workload: Arc<str>,
    /// `source_workload_namespace`.
    pub source_namespace: Arc<str>,
    /// `source_app`.
    pub source_app: Arc<str>,
    /// `source_version`.
    pub source_version: Arc<str>,
    /// `destination_workload`.
    pub destination_workload: Arc<str>,
    /// `destination_workload_namespace`.
    pub destination_namespace: Arc<str>,
    /// `destination_app`.
    pub destination_app: Arc<str>,
    /// `destination_version`.
    pub destination_version: Arc<str>,
    /// `destination_service` (the FQDN).
    pub destination_service: Arc<str>,
    /// `request_protocol`: `http`, `grpc` or `tcp`.
    pub protocol: Arc<str>,
    /// `response_code` (empty for TCP).
    pub response_code: Arc<str>,
    /// `response_flags`.
    pub response_flags: Arc<str>,
}

impl Labels {
    /// The Prometheus label names, in field order.
    pub const NAMES: [&'static str; 13] = [
        "reporter",
        "source_workload",
        "source_workload_namespace",
        "source_app",
        "source_version",
        "destination_workload",
        "destination_workload_namespace",
        "destination_app",
        "destination_version",
        "destination_service",
        "request_protocol",
        "response_code",
        "response_flags",
    ];

    /// The value of one of [`Labels::NAMES`].
    pub fn get(&self, name: &str) -> Option<&str> {
        Some(match name {
            "reporter" => &self.reporter,
            "source_workload" => &self.source_workload,
            "source_workload_namespace" => &self.source_namespace,
            "source_app" => &self.source_app,
            "source_version" => &self.source_version,
            "destination_workload" => &self.destination_workload,
            "destination_workload_namespace" => &self.destination_namespace,
            "destination_app" => &self.destination_app,
            "destination_version" => &self.destination_version,
            "destination_service" => &self.destination_service,
            "request_protocol" => &self.protocol,
            "response_code" => &self.response_code,
            "response_flags" => &self.response_flags,
            _ => return None,
        })
    }

    /// Builds a label set from `get(name)` for each of [`Labels::NAMES`] (absent: empty), sharing
    /// strings through `intern`.
    pub fn from_fn<'a>(
        mut get: impl FnMut(&str) -> Option<&'a str>,
        mut intern: impl FnMut(&str) -> Arc<str>,
    ) -> Labels {
        let mut v = Labels::NAMES.map(|n| intern(get(n).unwrap_or_default()));
        let mut take = |i: usize| std::mem::replace(&mut v[i], Arc::from(""));
        Labels {
            reporter: take(0),
            source_workload: take(1),
            source_namespace: take(2),
            source_app: take(3),
            source_version: take(4),
            destination_workload: take(5),
            destination_namespace: take(6),
            destination_app: take(7),
            destination_version: take(8),
            destination_service: take(9),
            protocol: take(10),
            response_code: take(11),
            response_flags: take(12),
        }
    }

    /// Whether a request with these labels failed: a 5xx, no response at all (`0`), or a response flag
    /// other than an injected delay (`DI`). TCP series (no code) fail only by their flags.
    pub fn is_error(&self) -> bool {
        let code_failed = match self.response_code.parse::<u16>() {
            Ok(c) => c == 0 || c >= 500,
            Err(_) => false,
        };
        code_failed
            || self
                .response_flags
                .split(',')
                .any(|f| !matches!(f, "" | "-" | "DI"))
    }

    /// Whether the series is Istio's TCP metrics' (`request_protocol="tcp"`).
    pub fn is_tcp(&self) -> bool {
        &*self.protocol == "tcp"
    }
}

/// One label set's traffic over a window, as rates per second.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Traffic {
    /// Its labels.
    pub labels: Arc<Labels>,
    /// `istio_requests_total`, per second.
    pub rps: f64,
    /// `istio_request_duration_milliseconds_bucket`, per second: (upper bound in ms, cumulative rate),
    /// sorted by bound, `+Inf` last.
    pub buckets: Vec<(f64, f64)>,
    /// `istio_tcp_sent_bytes_total`, bytes per second.
    pub tcp_sent: f64,
    /// `istio_tcp_received_bytes_total`, bytes per second.
    pub tcp_received: f64,
}

/// Traffic summed over some label sets: what an edge, a node or one point of a chart shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    /// Requests per second.
    pub rps: f64,
    /// Failed requests per second (see [`Labels::is_error`]).
    pub error_rps: f64,
    /// Cumulative latency buckets, summed (bound in ms, rate).
    pub buckets: Vec<(f64, f64)>,
    /// TCP bytes per second, both ways.
    pub tcp_bytes: f64,
}

impl Totals {
    /// Adds one row.
    pub fn add(&mut self, t: &Traffic) {
        self.rps += t.rps;
        if t.labels.is_error() {
            self.error_rps += t.rps;
        }
        self.tcp_bytes += t.tcp_sent + t.tcp_received;
        add_buckets(&mut self.buckets, &t.buckets);
    }

    /// Failed requests over all requests; 0 with no requests.
    pub fn error_ratio(&self) -> f64 {
        if self.rps > 0.0 {
            self.error_rps / self.rps
        } else {
            0.0
        }
    }

    /// The `q` quantile of latency in ms, as Prometheus's `histogram_quantile` computes it; `None`
    /// with no observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        histogram_quantile(q, &self.buckets)
    }
}

/// Adds cumulative buckets `b` into `a` bound by bound (bounds missing from `a` are inserted: series
/// with other buckets still sum correctly at the bounds both have).
pub fn add_buckets(a: &mut Vec<(f64, f64)>, b: &[(f64, f64)]) {
    for &(le, v) in b {
        match a.binary_search_by(|(x, _)| x.total_cmp(&le)) {
            Ok(i) => a[i].1 += v,
            Err(i) => a.insert(i, (le, v)),
        }
    }
}

/// The `q` quantile (0..=1) of a cumulative histogram sorted by bound, as Prometheus's
/// `histogram_quantile`: the bucket holding the rank `q × total`, interpolated linearly within it (the
/// first bucket from 0); a rank in the `+Inf` bucket gives the highest finite bound. `None` with no
/// observations or no finite bucket.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last().map(|b| b.1)?;
    if total.is_nan() || total <= 0.0 || !q.is_finite() {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let width = count - below;
            if width <= 0.0 {
                return Some(le);
            }
            return Some(lower + (le - lower) * (rank - below) / width);
        }
        lower = le;
        below = count;
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(code: &str, flags: &str) -> Labels {
        Labels {
            response_code: code.into(),
            response_flags: flags.into(),
            ..Labels::default()
        }
    }

    #[test]
    fn error_classes() {
        let cases = [
            ("200", "-", false),
            ("404", "-", false),
            ("404", "NR", true),
            ("503", "-", true),
            ("503", "UF,URX", true),
            ("500", "FI", true),
            ("0", "DC", true),
            ("200", "DI", false),
            ("", "-", false),
            ("", "UF", true),
        ];
        for (code, flags, want) in cases {
            assert_eq!(labels(code, flags).is_error(), want, "{code} {flags}");
        }
    }

    #[test]
    fn quantiles_from_buckets_as_prometheus_computes_them() {
        // 100 observations: 10 up to 1 ms, 80 in (1, 5], 10 in (5, 10].
        let b = [
            (1.0, 10.0),
            (5.0, 90.0),
            (10.0, 100.0),
            (f64::INFINITY, 100.0),
        ];
        let q = |x| histogram_quantile(x, &b).expect("observations");
        assert_eq!(q(0.05), 0.5, "interpolated from 0 in the first bucket");
        assert_eq!(q(0.5), 1.0 + 4.0 * 40.0 / 80.0);
        assert_eq!(q(0.9), 5.0);
        assert_eq!(q(0.99), 5.0 + 5.0 * 9.0 / 10.0);
        assert_eq!(q(1.0), 10.0);
        // A rank in the +Inf bucket: the highest finite bound.
        let over = [(1.0, 1.0), (f64::INFINITY, 10.0)];
        assert_eq!(histogram_quantile(0.99, &over), Some(1.0));
        // Nothing observed.
        assert_eq!(
            histogram_quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 0.0)]),
            None
        );
        assert_eq!(histogram_quantile(0.5, &[]), None);
    }

    #[test]
    fn totals_sum_rates_errors_and_buckets() {
        let mut t = Totals::default();
        let ok = Arc::new(labels("200", "-"));
        let failed = Arc::new(labels("503", "UF"));
        t.add(&Traffic {
            labels: ok,
            rps: 3.0,
            buckets: vec![(1.0, 1.0), (5.0, 3.0), (f64::INFINITY, 3.0)],
            ..Traffic::default()
        });
        t.add(&Traffic {
            labels: failed,
            rps: 1.0,
            buckets: vec![(1.0, 0.0), (5.0, 1.0), (f64::INFINITY, 1.0)],
            ..Traffic::default()
        });
        assert_eq!(t.rps, 4.0);
        assert_eq!(t.error_ratio(), 0.25);
        assert_eq!(
            t.buckets,
            vec![(1.0, 1.0), (5.0, 4.0), (f64::INFINITY, 4.0)]
        );
        assert_eq!(t.quantile(0.5), Some(1.0 + 4.0 * 1.0 / 3.0));
    }
}
