//! Numbers: latency histograms (HdrHistogram, nanoseconds) and the median and spread of a figure over
//! rounds. Pure code, no I/O.

use hdrhistogram::Histogram;
use std::time::Duration;

/// Largest latency a histogram holds; longer ones are clamped (a request that slow is a failure anyway).
const MAX_LATENCY_NS: u64 = 60_000_000_000;
/// Three significant digits: 0.1% resolution, enough to tell 129 µs from 130 µs.
const SIGNIFICANT_DIGITS: u8 = 3;

/// Latencies of one worker or of a whole run, in nanoseconds.
#[derive(Clone)]
pub struct Latencies {
    hist: Histogram<u64>,
}

impl std::fmt::Debug for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latencies")
            .field("count", &self.hist.len())
            .finish()
    }
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// An empty histogram.
    pub fn new() -> Latencies {
        Latencies {
            hist: Histogram::new_with_bounds(1, MAX_LATENCY_NS, SIGNIFICANT_DIGITS)
                .expect("constant histogram bounds are valid"),
        }
    }

    /// Records one latency.
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos())
            .unwrap_or(MAX_LATENCY_NS)
            .clamp(1, MAX_LATENCY_NS);
        self.hist.saturating_record(ns);
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides, so `add` cannot fail; saturate rather than panic regardless.
        let _ = self.hist.add(&other.hist);
    }

    /// The recorded values and their counts (nanoseconds), lowest first: what a run hands the
    /// orchestrator so that several short runs of one target can be merged into one distribution.
    pub fn counts(&self) -> Vec<(u64, u64)> {
        self.hist
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    /// A histogram from [`Latencies::counts`]; values outside the bounds are clamped.
    pub fn from_counts(counts: &[(u64, u64)]) -> Latencies {
        let mut l = Latencies::new();
        for &(ns, n) in counts {
            l.hist.saturating_record_n(ns.clamp(1, MAX_LATENCY_NS), n);
        }
        l
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// A quantile (0.0 to 1.0) in microseconds, rounded to 0.1 µs; 0 when empty.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.hist.is_empty() {
            return 0.0;
        }
        round1(self.hist.value_at_quantile(q) as f64 / 1000.0)
    }

    /// P50, P90, P99 and P99.9.
    pub fn summary(&self) -> Percentiles {
        Percentiles {
            p50_us: self.quantile_us(0.50),
            p90_us: self.quantile_us(0.90),
            p99_us: self.quantile_us(0.99),
            p999_us: self.quantile_us(0.999),
        }
    }
}

/// The four percentiles every result carries, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Percentiles {
    /// P50.
    pub p50_us: f64,
    /// P90.
    pub p90_us: f64,
    /// P99.
    pub p99_us: f64,
    /// P99.9.
    pub p999_us: f64,
}

/// Rounds to one decimal.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The median of some figures (the mean of the two middle ones for an even count); `None` when empty.
/// NaNs are ignored.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The smallest and largest figure; `None` when empty. NaNs are ignored.
pub fn spread(values: &[f64]) -> Option<(f64, f64)> {
    let mut it = values.iter().copied().filter(|x| !x.is_nan());
    let first = it.next()?;
    Some(it.fold((first, first), |(lo, hi), x| (lo.min(x), hi.max(x))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut l = Latencies::new();
        for us in 1..=1000u64 {
            l.record(Duration::from_micros(us));
        }
        let s = l.summary();
        // Three significant digits: within 0.1% of the exact value.
        for (name, got, want) in [
            ("p50", s.p50_us, 500.0),
            ("p90", s.p90_us, 900.0),
            ("p99", s.p99_us, 990.0),
            ("p999", s.p999_us, 999.0),
        ] {
            assert!(
                (got - want).abs() <= want * 0.001 + 0.1,
                "{name}: {got} vs {want}"
            );
        }
        assert_eq!(l.count(), 1000);
    }

    #[test]
    fn merge_adds_counts_and_empty_is_zero() {
        let mut a = Latencies::new();
        let mut b = Latencies::new();
        assert_eq!(a.quantile_us(0.5), 0.0);
        a.record(Duration::from_micros(100));
        b.record(Duration::from_millis(100));
        b.record(Duration::from_millis(100));
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert!(a.quantile_us(0.5) > 99_000.0);
    }

    #[test]
    fn counts_round_trip_and_merge_like_the_histograms() {
        let mut a = Latencies::new();
        let mut b = Latencies::new();
        for us in 1..=500u64 {
            a.record(Duration::from_micros(us));
        }
        for us in 501..=1000u64 {
            b.record(Duration::from_micros(us));
        }
        let back = Latencies::from_counts(&a.counts());
        assert_eq!(back.count(), 500);
        assert_eq!(back.summary(), a.summary());
        let mut merged = Latencies::from_counts(&a.counts());
        merged.merge(&Latencies::from_counts(&b.counts()));
        let mut direct = a.clone();
        direct.merge(&b);
        assert_eq!(merged.count(), 1000);
        assert_eq!(merged.summary(), direct.summary());
        assert!(
            (merged.quantile_us(0.5) - 500.0).abs() <= 0.6,
            "{}",
            merged.quantile_us(0.5)
        );
    }

    #[test]
    fn extreme_latencies_are_clamped_not_lost() {
        let mut l = Latencies::new();
        l.record(Duration::ZERO);
        l.record(Duration::from_secs(3600));
        assert_eq!(l.count(), 2);
        assert!(l.quantile_us(1.0) >= 59_000_000.0);
    }

    #[test]
    fn median_and_spread() {
        type Case<'a> = (&'a str, &'a [f64], Option<f64>, Option<(f64, f64)>);
        let cases: &[Case] = &[
            ("empty", &[], None, None),
            ("one", &[3.0], Some(3.0), Some((3.0, 3.0))),
            ("odd", &[5.0, 1.0, 3.0], Some(3.0), Some((1.0, 5.0))),
            ("even", &[4.0, 1.0, 3.0, 2.0], Some(2.5), Some((1.0, 4.0))),
            ("nan ignored", &[f64::NAN, 2.0], Some(2.0), Some((2.0, 2.0))),
        ];
        for (name, v, m, s) in cases {
            assert_eq!(median(v), *m, "{name}");
            assert_eq!(spread(v), *s, "{name}");
        }
    }
}
