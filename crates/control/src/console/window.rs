//! The console's built-in metrics store: the last [`DEFAULT_RETENTION`] of every proxy's scrapes, per
//! series, and the rates over a window that the pages are drawn from.
//!
//! A series is one proxy's one label set (see [`Labels`]); each scrape appends a point (the scrape's
//! time and the series' counters: requests, TCP bytes and the latency buckets). Points older than the
//! retention are dropped at each scrape, and so are series with none left. The number of series is
//! bounded too ([`MAX_SERIES`]); a new label set past it is counted and not kept. So memory is at most
//! `MAX_SERIES × points per series × 311 bytes` (a point with Istio's 20 buckets, allocator overhead
//! included, measured by `demo_window_full`): 75 KB a series at 15 s and 150 MB at the bound; the
//! demo's 13 series, an hour of 5 s scrapes, take 2.9 MB.
//!
//! Counters become rates by difference between scrapes, as Prometheus's `rate()` does: a value lower
//! than the one before is a reset (the proxy restarted), and counts from zero.

use super::text::Sample;
use super::traffic::{Labels, Traffic};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// How long points are kept: an hour, the longest range the charts offer.
pub const DEFAULT_RETENTION_MS: u64 = 3_600_000;
/// [`DEFAULT_RETENTION_MS`] as a text default.
pub const DEFAULT_RETENTION: &str = "1h";
/// Series kept at most (one proxy's one label set each); more are counted in [`Stats::overflow`].
pub const MAX_SERIES: usize = 2_000;

/// The metric names the console reads from a proxy; every other line is skipped unparsed.
pub const REQUESTS: &str = "istio_requests_total";
/// The latency histogram's buckets.
pub const DURATION_BUCKET: &str = "istio_request_duration_milliseconds_bucket";
/// TCP bytes, server to client.
pub const TCP_SENT: &str = "istio_tcp_sent_bytes_total";
/// TCP bytes, client to server.
pub const TCP_RECEIVED: &str = "istio_tcp_received_bytes_total";

/// Whether the console keeps samples of metric `name`.
pub fn wanted(name: &str) -> bool {
    matches!(name, REQUESTS | DURATION_BUCKET | TCP_SENT | TCP_RECEIVED)
}

/// One series of a scrape: the fixed values, and the buckets (bound, count) as they came.
type Scraped = (Vec<f64>, Vec<(f64, f64)>);

/// Values of one series at one scrape: requests, TCP sent, TCP received, then one per latency bucket.
const FIXED: usize = 3;

struct Series {
    /// Bucket bounds (ms), sorted, `+Inf` last; shared by every point.
    bounds: Arc<[f64]>,
    /// (scrape time in ms since the epoch, values), oldest first.
    points: VecDeque<(u64, Box<[f64]>)>,
}

/// The store's counters, for `/api/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Series held.
    pub series: usize,
    /// Points held, over all series.
    pub points: usize,
    /// Label sets refused because [`MAX_SERIES`] were held.
    pub overflow: u64,
    /// Scrape rounds held.
    pub rounds: usize,
}

/// The built-in store (see the module docs).
pub struct Window {
    retention_ms: u64,
    max_series: usize,
    series: HashMap<(Arc<str>, Arc<Labels>), Series>,
    /// When each scrape round ran, oldest first.
    rounds: VecDeque<u64>,
    strings: HashSet<Arc<str>>,
    overflow: u64,
}

impl Window {
    /// An empty store keeping `retention_ms` of points and at most `max_series` series.
    pub fn new(retention_ms: u64, max_series: usize) -> Window {
        Window {
            retention_ms,
            max_series,
            series: HashMap::new(),
            rounds: VecDeque::new(),
            strings: HashSet::new(),
            overflow: 0,
        }
    }

    fn intern(strings: &mut HashSet<Arc<str>>, s: &str) -> Arc<str> {
        if let Some(v) = strings.get(s) {
            return v.clone();
        }
        let v: Arc<str> = Arc::from(s);
        strings.insert(v.clone());
        v
    }

    /// Adds one proxy's scrape, taken at `at_ms`: its samples of the [`wanted`] metrics.
    pub fn insert(&mut self, target: &str, at_ms: u64, samples: &[Sample<'_>]) {
        let target = Self::intern(&mut self.strings, target);
        // The scrape's series, gathered first: a histogram's lines arrive one bucket at a time.
        let mut scraped: HashMap<Arc<Labels>, Scraped> = HashMap::new();
        for s in samples {
            let labels = Labels::from_fn(|n| s.label(n), |v| Self::intern(&mut self.strings, v));
            let entry = scraped
                .entry(Arc::new(labels))
                .or_insert_with(|| (vec![0.0; FIXED], Vec::new()));
            match s.name {
                REQUESTS => entry.0[0] += s.value,
                TCP_SENT => entry.0[1] += s.value,
                TCP_RECEIVED => entry.0[2] += s.value,
                DURATION_BUCKET => {
                    if let Some(le) = s.label("le").and_then(|l| match l {
                        "+Inf" | "Inf" => Some(f64::INFINITY),
                        _ => l.parse::<f64>().ok(),
                    }) {
                        entry.1.push((le, s.value));
                    }
                }
                _ => {}
            }
        }
        for (labels, (mut values, mut buckets)) in scraped {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            buckets.dedup_by(|a, b| a.0 == b.0);
            let key = (target.clone(), labels);
            if self.series.len() >= self.max_series && !self.series.contains_key(&key) {
                self.overflow += 1;
                continue;
            }
            let series = self.series.entry(key).or_insert_with(|| Series {
                bounds: buckets.iter().map(|b| b.0).collect(),
                points: VecDeque::new(),
            });
            // Other bounds than before (the proxy's buckets were reconfigured): start the series over.
            if series.bounds.len() != buckets.len()
                || series.bounds.iter().zip(&buckets).any(|(a, b)| *a != b.0)
            {
                series.bounds = buckets.iter().map(|b| b.0).collect();
                series.points.clear();
            }
            values.extend(buckets.iter().map(|b| b.1));
            if series.points.back().is_some_and(|p| p.0 >= at_ms) {
                continue; // a clock step backwards: keep the points in order
            }
            series.points.push_back((at_ms, values.into_boxed_slice()));
        }
    }

    /// Marks the end of a scrape round at `at_ms` (every proxy scraped, whether it answered): rounds
    /// say how fresh the data are, and points past the retention go.
    pub fn end_round(&mut self, at_ms: u64) {
        self.rounds.push_back(at_ms);
        let oldest = at_ms.saturating_sub(self.retention_ms);
        while self.rounds.front().is_some_and(|t| *t < oldest) {
            self.rounds.pop_front();
        }
        self.series.retain(|_, s| {
            while s.points.front().is_some_and(|p| p.0 < oldest) {
                s.points.pop_front();
            }
            !s.points.is_empty()
        });
        // Strings no series uses any more (a label value of a series gone).
        if self.strings.len() > 4 * (self.series.len() + 64) {
            self.strings.retain(|s| Arc::strong_count(s) > 1);
        }
    }

    /// The time of the last scrape round.
    pub fn latest(&self) -> Option<u64> {
        self.rounds.back().copied()
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        Stats {
            series: self.series.len(),
            points: self.series.values().map(|s| s.points.len()).sum(),
            overflow: self.overflow,
            rounds: self.rounds.len(),
        }
    }

    /// Every label set's traffic over `(end - window, end]`, summed over proxies: the increase of each
    /// counter from the last point at or before the window's start (or the first point inside it) to
    /// the last point at or before `end`, divided by the time between them. A series needs two points
    /// to have a rate. `keep` picks label sets before any arithmetic.
    pub fn traffic(&self, end: u64, window: u64, keep: impl Fn(&Labels) -> bool) -> Vec<Traffic> {
        let start = end.saturating_sub(window);
        let mut out: HashMap<Arc<Labels>, Traffic> = HashMap::new();
        for ((_, labels), s) in &self.series {
            if !keep(labels) {
                continue;
            }
            let Some(rates) = rates(&s.points, start, end) else {
                continue;
            };
            let t = out.entry(labels.clone()).or_insert_with(|| Traffic {
                labels: labels.clone(),
                ..Traffic::default()
            });
            t.rps += rates[0];
            t.tcp_sent += rates[1];
            t.tcp_received += rates[2];
            let buckets: Vec<(f64, f64)> = s
                .bounds
                .iter()
                .copied()
                .zip(rates[FIXED..].iter().copied())
                .collect();
            super::traffic::add_buckets(&mut t.buckets, &buckets);
        }
        let mut v: Vec<Traffic> = out.into_values().collect();
        v.sort_by(|a, b| a.labels.cmp(&b.labels));
        v
    }
}

/// Per-second rates of each value between the last point at or before `start` (else the first after
/// it) and the last at or before `end`, counting resets as Prometheus does; `None` without two points.
fn rates(points: &VecDeque<(u64, Box<[f64]>)>, start: u64, end: u64) -> Option<Vec<f64>> {
    let last = points.partition_point(|p| p.0 <= end).checked_sub(1)?;
    let first = points.partition_point(|p| p.0 <= start).saturating_sub(1);
    if first >= last {
        return None;
    }
    let seconds = (points[last].0 - points[first].0) as f64 / 1000.0;
    let mut increase = vec![0.0; points[first].1.len()];
    for k in first + 1..=last {
        let (prev, cur) = (&points[k - 1].1, &points[k].1);
        for (i, inc) in increase.iter_mut().enumerate() {
            let (p, c) = (
                prev.get(i).copied().unwrap_or(0.0),
                cur.get(i).copied().unwrap_or(0.0),
            );
            // A counter that went down was reset: it counted `c` since.
            *inc += if c >= p { c - p } else { c };
        }
    }
    Some(increase.into_iter().map(|v| v / seconds).collect())
}

#[cfg(test)]
mod tests {
    use super::super::text::parse;
    use super::*;

    fn scrape(w: &mut Window, target: &str, at_s: u64, text: &str) {
        let samples = parse(text).expect("valid");
        w.insert(target, at_s * 1000, &samples);
        w.end_round(at_s * 1000);
    }

    const L: &str = r#"reporter="source",source_workload="a",destination_workload="b",response_code="200",response_flags="-""#;

    fn requests(n: u64) -> String {
        format!("istio_requests_total{{{L}}} {n}\n")
    }

    #[test]
    fn counters_become_rates_between_scrapes() {
        let mut w = Window::new(DEFAULT_RETENTION_MS, MAX_SERIES);
        scrape(&mut w, "p", 0, &requests(100));
        assert!(
            w.traffic(0, 60_000, |_| true).is_empty(),
            "one point, no rate"
        );
        scrape(&mut w, "p", 15, &requests(130));
        scrape(&mut w, "p", 30, &requests(160));
        let t = w.traffic(30_000, 60_000, |_| true);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].rps, 2.0);
        assert_eq!(&*t[0].labels.source_workload, "a");
        // A 15 s window takes the point at its start as the base.
        scrape(&mut w, "p", 45, &requests(220));
        assert_eq!(w.traffic(45_000, 15_000, |_| true)[0].rps, 4.0);
    }

    #[test]
    fn a_counter_reset_counts_from_zero() {
        let mut w = Window::new(DEFAULT_RETENTION_MS, MAX_SERIES);
        scrape(&mut w, "p", 0, &requests(100));
        scrape(&mut w, "p", 10, &requests(150));
        // The proxy restarted and served 20 since.
        scrape(&mut w, "p", 20, &requests(20));
        scrape(&mut w, "p", 30, &requests(50));
        let t = w.traffic(30_000, 30_000, |_| true);
        assert_eq!(t[0].rps, (50.0 + 20.0 + 30.0) / 30.0);
    }

    #[test]
    fn proxies_with_the_same_labels_are_summed_and_buckets_kept() {
        let mut w = Window::new(DEFAULT_RETENTION_MS, MAX_SERIES);
        let text = |n: u64| {
            format!(
                "{}istio_request_duration_milliseconds_bucket{{{L},le=\"10\"}} {n}\n\
                 istio_request_duration_milliseconds_bucket{{{L},le=\"+Inf\"}} {n}\n",
                requests(n)
            )
        };
        for (at, n) in [(0, 0), (10, 10)] {
            let samples_a = text(n);
            let samples_b = text(2 * n);
            w.insert("a", at * 1000, &parse(&samples_a).expect("valid"));
            w.insert("b", at * 1000, &parse(&samples_b).expect("valid"));
            w.end_round(at * 1000);
        }
        let t = w.traffic(10_000, 60_000, |_| true);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].rps, 3.0);
        assert_eq!(t[0].buckets, vec![(10.0, 3.0), (f64::INFINITY, 3.0)]);
    }

    /// The demo's window, full: the pages of the demo's six proxies (saved from a running `weft demo`
    /// into the directory `WEFT_CONSOLE_PAGES`), scraped every 5 s for an hour (720 rounds). Prints
    /// the series, points and the growth of this process's RSS. By hand:
    /// `WEFT_CONSOLE_PAGES=DIR cargo test --release -p weft-control --lib -- --ignored demo_window`.
    #[test]
    #[ignore = "needs saved pages; a measurement, not a check"]
    fn demo_window_full() {
        let dir = std::env::var("WEFT_CONSOLE_PAGES").expect("WEFT_CONSOLE_PAGES=DIR");
        let pages: Vec<(String, String)> = std::fs::read_dir(&dir)
            .expect("dir")
            .map(|e| {
                let p = e.expect("entry").path();
                let text = std::fs::read_to_string(&p).expect("page");
                (p.display().to_string(), text)
            })
            .collect();
        let parsed: Vec<(&str, Vec<Sample<'_>>)> = pages
            .iter()
            .map(|(p, t)| {
                (
                    p.as_str(),
                    super::super::text::parse_wanted(t, wanted).expect("parses"),
                )
            })
            .collect();
        let rss = || {
            let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
            let pages: u64 = statm
                .split(' ')
                .nth(1)
                .and_then(|v| v.parse().ok())
                .expect("rss");
            pages * 4096
        };
        let before = rss();
        let mut w = Window::new(DEFAULT_RETENTION_MS, MAX_SERIES);
        for round in 0..720u64 {
            for (target, samples) in &parsed {
                w.insert(target, round * 5000, samples);
            }
            w.end_round(round * 5000);
        }
        let after = rss();
        let s = w.stats();
        println!(
            "demo window full: {} series, {} points, RSS +{:.2} MB ({} bytes a point)",
            s.series,
            s.points,
            (after - before) as f64 / 1e6,
            (after - before) / s.points.max(1) as u64
        );
        assert_eq!(s.points, s.series * 720);
    }

    #[test]
    fn retention_and_the_series_bound() {
        let mut w = Window::new(60_000, 1);
        scrape(&mut w, "p", 0, &requests(1));
        let other = "istio_requests_total{reporter=\"destination\"} 1\n";
        scrape(&mut w, "p", 10, other);
        assert_eq!(w.stats().series, 1);
        assert_eq!(w.stats().overflow, 1);
        scrape(&mut w, "p", 100, "");
        assert_eq!(w.stats().series, 0, "points older than a minute are gone");
        assert_eq!(w.stats().rounds, 1);
        assert_eq!(w.latest(), Some(100_000));
    }
}
