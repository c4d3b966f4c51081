//! Outlier detection (Envoy's consecutive-error detectors): each try's outcome is reported against its
//! endpoint; an endpoint with too many errors in a row is ejected for `base_ejection_time` × the number
//! of times it has been ejected, and picks skip it until then.
//!
//! Differences from Envoy, chosen to keep the request path free of timers and tasks: an endpoint comes
//! back the first time a pick looks at it after its ejection time (Envoy: at the next `interval` sweep),
//! and its ejection count is decremented lazily, once per `interval` it spent healthy, when it is ejected
//! again. Counters live in the endpoint set, so they start over when EDS changes the endpoints.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Envoy's defaults.
pub const DEFAULT_CONSECUTIVE: u32 = 5;
/// Envoy's default `interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Envoy's default `base_ejection_time`.
pub const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(30);
/// Envoy's default `max_ejection_time`.
pub const DEFAULT_MAX_EJECTION: Duration = Duration::from_secs(300);
/// Envoy's default `max_ejection_percent`.
pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;
/// Envoy's default `healthy_panic_threshold`.
pub const DEFAULT_PANIC_PERCENT: f64 = 50.0;

/// A cluster's outlier detection, converted from Envoy's `outlier_detection` (and the panic threshold
/// of `common_lb_config`).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// 5xx responses in a row that eject (0: never).
    pub consecutive_5xx: u32,
    /// Percent of such ejections enforced.
    pub enforcing_5xx: u32,
    /// 502, 503 and 504 responses in a row that eject (0: never).
    pub consecutive_gateway: u32,
    /// Percent of such ejections enforced (Envoy's default: 0).
    pub enforcing_gateway: u32,
    /// Local-origin failures (connect failure, timeout, reset) count on their own.
    pub split_local_origin: bool,
    /// Local-origin failures in a row that eject, when split.
    pub consecutive_local: u32,
    /// Percent of such ejections enforced.
    pub enforcing_local: u32,
    /// How often an ejection count decays by one.
    pub interval: Duration,
    /// Ejection time per time ejected.
    pub base_ejection: Duration,
    /// The longest ejection.
    pub max_ejection: Duration,
    /// The most endpoints ejected at once, in percent of the set.
    pub max_ejection_percent: u32,
    /// Below this percentage of healthy endpoints, ejections are ignored (panic).
    pub panic_percent: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            consecutive_5xx: DEFAULT_CONSECUTIVE,
            enforcing_5xx: 100,
            consecutive_gateway: DEFAULT_CONSECUTIVE,
            enforcing_gateway: 0,
            split_local_origin: false,
            consecutive_local: DEFAULT_CONSECUTIVE,
            enforcing_local: 100,
            interval: DEFAULT_INTERVAL,
            base_ejection: DEFAULT_BASE_EJECTION,
            max_ejection: DEFAULT_MAX_EJECTION,
            max_ejection_percent: DEFAULT_MAX_EJECTION_PERCENT,
            panic_percent: DEFAULT_PANIC_PERCENT,
        }
    }
}

/// What one try to an endpoint came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this status.
    Response(u16),
    /// No response: the connection failed, timed out or was reset (local origin).
    LocalFailure,
}

/// One endpoint's counters. Plain atomics: reports and picks never lock.
#[derive(Debug, Default)]
pub struct State {
    /// Requests in flight to it (least request).
    pub in_flight: AtomicU32,
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    /// Milliseconds since the set's epoch until which it is ejected; 0: not ejected.
    ejected_until: AtomicU64,
    /// Times ejected (the multiplier of the ejection time).
    ejections: AtomicU32,
    /// When it last came back, in milliseconds since the epoch.
    returned_at: AtomicU64,
}

/// Which detector fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detector {
    /// `consecutive_5xx`.
    Consecutive5xx,
    /// `consecutive_gateway_failure`.
    ConsecutiveGateway,
    /// `consecutive_local_origin_failure`.
    ConsecutiveLocal,
}

/// Adds one to `counter`; true when it reached `threshold` (then it starts over).
fn bump(counter: &AtomicU32, threshold: u32) -> bool {
    if threshold == 0 {
        return false;
    }
    let n = counter.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
    if n >= threshold {
        counter.store(0, Ordering::Relaxed);
        true
    } else {
        false
    }
}

fn enforced(percent: u32) -> bool {
    percent >= 100 || (percent > 0 && fastrand::u32(0..100) < percent)
}

impl State {
    /// Counts `outcome`; the detector that fired, if one did (and its ejection is enforced).
    pub fn count(&self, cfg: &Config, outcome: Outcome) -> Option<Detector> {
        let status = match (outcome, cfg.split_local_origin) {
            (Outcome::LocalFailure, true) => {
                return (bump(&self.consecutive_local, cfg.consecutive_local)
                    && enforced(cfg.enforcing_local))
                .then_some(Detector::ConsecutiveLocal);
            }
            // Not split: a local failure counts as a 503, as in Envoy.
            (Outcome::LocalFailure, false) => 503,
            (Outcome::Response(s), split) => {
                if split {
                    self.consecutive_local.store(0, Ordering::Relaxed);
                }
                s
            }
        };
        if !(500..600).contains(&status) {
            self.consecutive_5xx.store(0, Ordering::Relaxed);
            self.consecutive_gateway.store(0, Ordering::Relaxed);
            return None;
        }
        let mut fired = None;
        if matches!(status, 502..=504) {
            if bump(&self.consecutive_gateway, cfg.consecutive_gateway)
                && enforced(cfg.enforcing_gateway)
            {
                fired = Some(Detector::ConsecutiveGateway);
            }
        } else {
            self.consecutive_gateway.store(0, Ordering::Relaxed);
        }
        if bump(&self.consecutive_5xx, cfg.consecutive_5xx) && enforced(cfg.enforcing_5xx) {
            fired = fired.or(Some(Detector::Consecutive5xx));
        }
        fired
    }

    /// Whether it is ejected at `now` (ms since the epoch). An ejection that has run out is ended here,
    /// once (the caller that ends it gets `Returned`).
    pub fn ejection(&self, now: u64) -> Ejection {
        let until = self.ejected_until.load(Ordering::Relaxed);
        if until == 0 {
            return Ejection::Healthy;
        }
        if now < until {
            return Ejection::Ejected;
        }
        match self
            .ejected_until
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => {
                self.returned_at.store(now, Ordering::Relaxed);
                Ejection::Returned
            }
            Err(_) => Ejection::Healthy,
        }
    }

    /// Whether it is ejected at `now`, without ending a finished ejection.
    pub fn is_ejected_at(&self, now: u64) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now < until
    }

    /// Ejects it at `now`; false when it already was. The ejection lasts `base × times ejected` (capped
    /// by `max_ejection`), the count having decayed by one per `interval` since it last came back.
    pub fn eject(&self, cfg: &Config, now: u64) -> bool {
        let prior = self.ejections.load(Ordering::Relaxed);
        let healthy_for = now.saturating_sub(self.returned_at.load(Ordering::Relaxed));
        let interval = cfg.interval.as_millis().max(1) as u64;
        let decayed =
            prior.saturating_sub(u32::try_from(healthy_for / interval).unwrap_or(u32::MAX));
        let times = decayed.saturating_add(1);
        let base = cfg.base_ejection.as_millis() as u64;
        let cap = (cfg.max_ejection.as_millis() as u64).max(base);
        let until = now + base.saturating_mul(u64::from(times)).min(cap).max(1);
        if self
            .ejected_until
            .compare_exchange(0, until, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        self.ejections.store(times, Ordering::Relaxed);
        true
    }
}

/// An endpoint's ejection state at a pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ejection {
    /// Not ejected.
    Healthy,
    /// Ejected now.
    Ejected,
    /// Its ejection just ran out: healthy again.
    Returned,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_errors_fire_at_the_threshold_and_successes_reset_them() {
        let cfg = Config {
            consecutive_5xx: 3,
            consecutive_gateway: 2,
            enforcing_gateway: 100,
            ..Config::default()
        };
        let s = State::default();
        let r = |st: u16| Outcome::Response(st);
        assert_eq!(s.count(&cfg, r(500)), None);
        assert_eq!(s.count(&cfg, r(200)), None, "success resets");
        assert_eq!(s.count(&cfg, r(500)), None);
        assert_eq!(s.count(&cfg, r(500)), None);
        assert_eq!(s.count(&cfg, r(500)), Some(Detector::Consecutive5xx));
        assert_eq!(s.count(&cfg, r(503)), None);
        assert_eq!(s.count(&cfg, r(502)), Some(Detector::ConsecutiveGateway));
        assert_eq!(
            s.count(&cfg, r(404)),
            None,
            "4xx is a success for outlier detection"
        );
        // Not split: a connect failure is a 503.
        assert_eq!(s.count(&cfg, Outcome::LocalFailure), None);
        assert_eq!(
            s.count(&cfg, Outcome::LocalFailure),
            Some(Detector::ConsecutiveGateway)
        );
    }

    #[test]
    fn split_local_origin_failures_count_apart() {
        let cfg = Config {
            split_local_origin: true,
            consecutive_local: 2,
            consecutive_5xx: 2,
            ..Config::default()
        };
        let s = State::default();
        assert_eq!(s.count(&cfg, Outcome::LocalFailure), None);
        assert_eq!(
            s.count(&cfg, Outcome::Response(500)),
            None,
            "a response resets local"
        );
        assert_eq!(s.count(&cfg, Outcome::LocalFailure), None);
        assert_eq!(
            s.count(&cfg, Outcome::LocalFailure),
            Some(Detector::ConsecutiveLocal)
        );
        assert_eq!(
            s.count(&cfg, Outcome::Response(500)),
            Some(Detector::Consecutive5xx),
            "local failures did not reset the 5xx count"
        );
    }

    #[test]
    fn ejection_time_grows_with_each_ejection_and_decays_when_healthy() {
        let cfg = Config {
            base_ejection: Duration::from_secs(30),
            interval: Duration::from_secs(10),
            ..Config::default()
        };
        let s = State::default();
        assert!(s.eject(&cfg, 1_000));
        assert!(!s.eject(&cfg, 1_001), "already ejected");
        assert_eq!(s.ejection(30_999), Ejection::Ejected);
        assert_eq!(s.ejection(31_000), Ejection::Returned);
        assert_eq!(s.ejection(31_000), Ejection::Healthy);
        // Ejected again at once: twice the base.
        assert!(s.eject(&cfg, 31_000));
        assert_eq!(s.ejection(90_999), Ejection::Ejected);
        assert_eq!(s.ejection(91_000), Ejection::Returned);
        // Healthy for two intervals: the count went from 2 to 0, so the next is 1 × base.
        assert!(s.eject(&cfg, 111_000));
        assert_eq!(s.ejection(140_999), Ejection::Ejected);
        assert_eq!(s.ejection(141_000), Ejection::Returned);
        // Twice a base of 200 s is capped by max_ejection (300 s).
        let capped = Config {
            base_ejection: Duration::from_secs(200),
            ..cfg
        };
        assert!(s.eject(&capped, 141_000));
        assert_eq!(s.ejection(440_999), Ejection::Ejected);
        assert_eq!(s.ejection(441_000), Ejection::Returned);
    }
}
