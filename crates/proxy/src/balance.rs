//! Endpoint sets and the choices made over them: a cluster's load balancer (round robin, least
//! request, random, ring hash, Maglev) with outlier ejection, its circuit breakers, and the weighted pick
//! of a cluster among a route's `weighted_clusters`. Lock-free: picks and reports are atomics.

pub mod hash;
pub mod limits;
pub mod outlier;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A cluster's load balancer (Envoy's `lb_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lb {
    /// `ROUND_ROBIN` (weft's default).
    #[default]
    RoundRobin,
    /// `LEAST_REQUEST`: the less loaded of two endpoints picked at random (power of two choices).
    LeastRequest,
    /// `RANDOM`.
    Random,
    /// `RING_HASH` or `MAGLEV`, on the route's hash policy.
    Hash(hash::Kind),
}

/// An endpoint picked for a try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Picked {
    /// Its index in the set (for [`EndpointSet::report`] and [`EndpointSet::state`]).
    pub index: usize,
    /// Its address.
    pub addr: SocketAddr,
    /// Whether it has a sidecar (auto mTLS).
    pub sidecar: bool,
}

/// The endpoints of one cluster with their round-robin position and per-endpoint counters.
///
/// The counters are the only mutable state on the request path; they are atomics, so picking never
/// locks. They live as long as the set: an EDS update that changes the endpoints starts them over.
#[derive(Debug)]
pub struct EndpointSet {
    endpoints: Vec<SocketAddr>,
    /// Which endpoints have a sidecar (auto mTLS speaks TLS to those), by index; empty when none has.
    sidecars: Vec<bool>,
    next: AtomicUsize,
    /// Per endpoint: requests in flight and outlier counters.
    state: Box<[outlier::State]>,
    /// Endpoints ejected (an ejection that ran out counts until a pick notices).
    ejected: AtomicUsize,
    /// The zero of the outlier clock (tokio's, so tests can pause it).
    epoch: tokio::time::Instant,
    /// The consistent-hash table last built for this set, reused by snapshots while the cluster's
    /// algorithm is the same. Locked only when a snapshot is built.
    table: Mutex<Option<Arc<hash::Table>>>,
}

impl Default for EndpointSet {
    fn default() -> Self {
        EndpointSet::new(Vec::new())
    }
}

impl EndpointSet {
    /// A set over these endpoints, starting at a random position so that many proxies do not all start
    /// on the same endpoint.
    pub fn new(endpoints: Vec<SocketAddr>) -> Self {
        let start = if endpoints.is_empty() {
            0
        } else {
            fastrand::usize(..endpoints.len())
        };
        let state = endpoints
            .iter()
            .map(|_| outlier::State::default())
            .collect();
        EndpointSet {
            endpoints,
            sidecars: Vec::new(),
            next: AtomicUsize::new(start),
            state,
            ejected: AtomicUsize::new(0),
            epoch: tokio::time::Instant::now(),
            table: Mutex::new(None),
        }
    }

    /// A set whose endpoints marked `true` have a sidecar (see [`EndpointSet::pick_with_sidecar`]).
    pub fn with_sidecars(endpoints: Vec<(SocketAddr, bool)>) -> Self {
        let sidecars: Vec<bool> = endpoints.iter().map(|e| e.1).collect();
        let mut set = EndpointSet::new(endpoints.into_iter().map(|e| e.0).collect());
        if sidecars.iter().any(|s| *s) {
            set.sidecars = sidecars;
        }
        set
    }

    /// The next endpoint in round-robin order and whether it has a sidecar.
    pub fn pick_with_sidecar(&self) -> Option<(SocketAddr, bool)> {
        if self.endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        let addr = *self.endpoints.get(i)?;
        Some((addr, self.sidecars.get(i).copied().unwrap_or(false)))
    }

    /// The endpoints, in the order received.
    pub fn endpoints(&self) -> &[SocketAddr] {
        &self.endpoints
    }

    /// True when there is nothing to pick.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// The next endpoint in round-robin order, or `None` when the set is empty.
    pub fn pick(&self) -> Option<SocketAddr> {
        if self.endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.endpoints.get(i % self.endpoints.len()).copied()
    }

    /// Endpoint `i`'s counters.
    pub fn state(&self, i: usize) -> Option<&outlier::State> {
        self.state.get(i)
    }

    /// The consistent-hash table of `kind` over these endpoints: the one built before when it is the
    /// same, else a new one (snapshot build only, never a request).
    pub fn table(&self, kind: hash::Kind) -> Arc<hash::Table> {
        let mut held = self.table.lock().unwrap_or_else(|p| p.into_inner());
        match &*held {
            Some(t) if t.is_for(kind, &self.endpoints) => t.clone(),
            _ => {
                let t = Arc::new(hash::Table::build(kind, &self.endpoints));
                *held = Some(t.clone());
                t
            }
        }
    }

    /// Milliseconds on the outlier clock.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Picks an endpoint with `lb` (`table` and `hash` for the hashing ones; no hash: a random pick, as
    /// Envoy), skipping ejected endpoints when `outlier` is set and the set is not in panic. `None` when
    /// the set is empty or every endpoint is ejected.
    pub fn choose(
        &self,
        lb: Lb,
        table: Option<&hash::Table>,
        hash: Option<u64>,
        outlier: Option<&outlier::Config>,
    ) -> Option<Picked> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let first = match (lb, table, hash) {
            (Lb::RoundRobin, ..) => self.next.fetch_add(1, Ordering::Relaxed) % n,
            (Lb::Random, ..) | (Lb::Hash(_), _, None) | (Lb::Hash(_), None, _) => {
                fastrand::usize(..n)
            }
            (Lb::Hash(_), Some(t), Some(h)) => t.pick(h).unwrap_or(0) % n,
            (Lb::LeastRequest, ..) => {
                let a = fastrand::usize(..n);
                let b = fastrand::usize(..n);
                let load = |i: usize| {
                    self.state
                        .get(i)
                        .map_or(0, |s| s.in_flight.load(Ordering::Relaxed))
                };
                if load(b) < load(a) {
                    b
                } else {
                    a
                }
            }
        };
        let index = match outlier {
            Some(cfg) if self.ejected.load(Ordering::Relaxed) > 0 => {
                self.healthy_from(first, cfg)?
            }
            _ => first,
        };
        Some(Picked {
            index,
            addr: *self.endpoints.get(index)?,
            sidecar: self.sidecars.get(index).copied().unwrap_or(false),
        })
    }

    /// The first endpoint from `first` on (in order, wrapping) that is not ejected; `first` itself when
    /// too few are healthy (panic: Envoy then balances over every endpoint).
    fn healthy_from(&self, first: usize, cfg: &outlier::Config) -> Option<usize> {
        let n = self.endpoints.len();
        let ejected = self.ejected.load(Ordering::Relaxed).min(n);
        if ((n - ejected) as f64) * 100.0 < cfg.panic_percent * n as f64 {
            return Some(first);
        }
        let now = self.now_ms();
        for k in 0..n {
            let i = (first + k) % n;
            let s = self.state.get(i)?;
            match s.ejection(now) {
                outlier::Ejection::Ejected => continue,
                outlier::Ejection::Returned => {
                    self.ejected.fetch_sub(1, Ordering::Relaxed);
                    tracing::debug!(endpoint = %self.endpoints[i], "outlier ejection ended");
                    return Some(i);
                }
                outlier::Ejection::Healthy => return Some(i),
            }
        }
        None
    }

    /// Reports a try's outcome against endpoint `i`, ejecting it when a detector fires and fewer than
    /// `max_ejection_percent` of the endpoints are ejected.
    pub fn report(&self, i: usize, outcome: outlier::Outcome, cfg: &outlier::Config) {
        let Some(s) = self.state.get(i) else { return };
        let Some(detector) = s.count(cfg, outcome) else {
            return;
        };
        let n = self.endpoints.len();
        // Recount before deciding (ejections that ran out may not have been noticed by a pick yet).
        let now = self.now_ms();
        let mut ejected = 0;
        for (j, st) in self.state.iter().enumerate() {
            match st.ejection(now) {
                outlier::Ejection::Ejected => ejected += 1,
                outlier::Ejection::Returned => {
                    self.ejected.fetch_sub(1, Ordering::Relaxed);
                    tracing::debug!(endpoint = %self.endpoints[j], "outlier ejection ended");
                }
                outlier::Ejection::Healthy => {}
            }
        }
        if (ejected + 1) * 100 > cfg.max_ejection_percent as usize * n {
            tracing::debug!(endpoint = %self.endpoints[i], ?detector, "outlier not ejected: max_ejection_percent reached");
            return;
        }
        if s.eject(cfg, now) {
            self.ejected.fetch_add(1, Ordering::Relaxed);
            tracing::info!(endpoint = %self.endpoints[i], ?detector, "outlier ejected");
        }
    }

    /// How many endpoints are ejected now (tests, admin).
    pub fn ejected_now(&self) -> usize {
        let now = self.now_ms();
        self.state.iter().filter(|s| s.is_ejected_at(now)).count()
    }

    /// Counts a request in flight to endpoint `i` until the guard drops (least request).
    pub fn in_flight(&self, i: usize) -> Option<InFlight<'_>> {
        let s = self.state.get(i)?;
        s.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(InFlight(s))
    }
}

/// A request in flight to an endpoint; counted off on drop.
#[derive(Debug)]
pub struct InFlight<'a>(&'a outlier::State);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Picks the index of an item with probability proportional to its weight, using `roll` in `0..total`.
/// Items of weight 0 are never picked; `None` when every weight is 0.
pub fn pick_weighted<T>(items: &[T], weight: impl Fn(&T) -> u32, roll: u64) -> Option<usize> {
    let mut acc = 0u64;
    for (i, item) in items.iter().enumerate() {
        acc += u64::from(weight(item));
        if roll < acc {
            return Some(i);
        }
    }
    None
}

/// The sum of the weights.
pub fn total_weight<T>(items: &[T], weight: impl Fn(&T) -> u32) -> u64 {
    items.iter().map(|i| u64::from(weight(i))).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_visits_every_endpoint_in_turn() {
        let eps: Vec<SocketAddr> = (1..=3)
            .map(|i| format!("127.0.0.{i}:80").parse().expect("addr"))
            .collect();
        let set = EndpointSet::new(eps.clone());
        let first: Vec<_> = (0..3).map(|_| set.pick().expect("some")).collect();
        let second: Vec<_> = (0..3).map(|_| set.pick().expect("some")).collect();
        assert_eq!(first, second, "period is the set size");
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(sorted, eps, "each endpoint once per round");
        assert_eq!(EndpointSet::new(vec![]).pick(), None);
        assert_eq!(EndpointSet::with_sidecars(vec![]).pick_with_sidecar(), None);
    }

    #[test]
    fn endpoints_keep_their_sidecar_mark() {
        let a: SocketAddr = "10.0.0.1:80".parse().expect("addr");
        let b: SocketAddr = "10.0.0.2:80".parse().expect("addr");
        let set = EndpointSet::with_sidecars(vec![(a, true), (b, false)]);
        let picks: Vec<_> = (0..4).filter_map(|_| set.pick_with_sidecar()).collect();
        for (addr, sidecar) in picks {
            assert_eq!(sidecar, addr == a);
        }
    }

    fn addrs(n: usize) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([10, 0, 0, i as u8], 80)))
            .collect()
    }

    #[test]
    fn least_request_prefers_the_less_loaded_endpoint() {
        let set = EndpointSet::new(addrs(4));
        // Endpoint 0 has 10 requests in flight, 1 has 1, the others none.
        let busy: Vec<InFlight<'_>> = (0..10).filter_map(|_| set.in_flight(0)).collect();
        let one = set.in_flight(1);
        let mut got = [0usize; 4];
        for _ in 0..4000 {
            let p = set
                .choose(Lb::LeastRequest, None, None, None)
                .expect("pick");
            got[p.index] += 1;
        }
        // Power of two choices: endpoint 0 only when both draws are 0 (1/16), 1 when it is drawn with
        // itself or with 0 (3/16); 2 and 3 share the rest (6/16 each).
        assert!(got[0] <= 400, "busiest picked {} of 4000: {got:?}", got[0]);
        assert!(got[1] < got[2] && got[1] < got[3], "{got:?}");
        assert!(got[2] > 1200 && got[3] > 1200, "{got:?}");
        drop((busy, one));
        assert_eq!(
            set.state(0).map(|s| s.in_flight.load(Ordering::Relaxed)),
            Some(0)
        );
    }

    #[test]
    fn random_reaches_every_endpoint_and_hash_follows_the_table() {
        let eps = addrs(3);
        let set = EndpointSet::new(eps.clone());
        let mut seen = [false; 3];
        for _ in 0..200 {
            seen[set
                .choose(Lb::Random, None, None, None)
                .expect("pick")
                .index] = true;
        }
        assert_eq!(seen, [true; 3]);
        let kind = hash::Kind::Maglev(7);
        let table = set.table(kind);
        assert!(Arc::ptr_eq(&table, &set.table(kind)), "built once per set");
        for h in 0..50u64 {
            let p = set
                .choose(Lb::Hash(kind), Some(&table), Some(h), None)
                .expect("pick");
            assert_eq!(Some(p.index), table.pick(h), "hash {h}");
        }
    }

    fn ejecting() -> outlier::Config {
        outlier::Config {
            consecutive_5xx: 2,
            base_ejection: std::time::Duration::from_secs(30),
            max_ejection_percent: 100,
            panic_percent: 0.0,
            ..outlier::Config::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_ejected_endpoint_is_skipped_until_its_time_is_over() {
        let cfg = ejecting();
        let set = EndpointSet::new(addrs(3));
        set.report(1, outlier::Outcome::Response(500), &cfg);
        assert_eq!(set.ejected_now(), 0, "one 5xx of two");
        set.report(1, outlier::Outcome::Response(503), &cfg);
        assert_eq!(set.ejected_now(), 1);
        for _ in 0..30 {
            let p = set
                .choose(Lb::RoundRobin, None, None, Some(&cfg))
                .expect("pick");
            assert_ne!(p.index, 1, "ejected endpoint picked");
        }
        tokio::time::advance(std::time::Duration::from_millis(29_999)).await;
        assert_eq!(
            set.ejected_now(),
            1,
            "still ejected just before base_ejection_time"
        );
        tokio::time::advance(std::time::Duration::from_millis(1)).await;
        let picked: Vec<usize> = (0..3)
            .filter_map(|_| set.choose(Lb::RoundRobin, None, None, Some(&cfg)))
            .map(|p| p.index)
            .collect();
        assert!(picked.contains(&1), "back after its time: {picked:?}");
        assert_eq!(set.ejected.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn max_ejection_percent_and_panic_keep_endpoints_in_use() {
        let set = EndpointSet::new(addrs(4));
        let quarter = outlier::Config {
            max_ejection_percent: 25,
            ..ejecting()
        };
        for i in 0..4 {
            for _ in 0..2 {
                set.report(i, outlier::Outcome::LocalFailure, &quarter);
            }
        }
        assert_eq!(set.ejected_now(), 1, "at most 25% of 4 endpoints");
        // All ejected with max 100%: no endpoint to pick (503 UH) unless the panic threshold is met.
        let all = ejecting();
        let set = EndpointSet::new(addrs(2));
        for i in 0..2 {
            for _ in 0..2 {
                set.report(i, outlier::Outcome::Response(502), &all);
            }
        }
        assert_eq!(set.ejected_now(), 2);
        assert_eq!(set.choose(Lb::RoundRobin, None, None, Some(&all)), None);
        let panicking = outlier::Config {
            panic_percent: 50.0,
            ..all
        };
        assert!(
            set.choose(Lb::RoundRobin, None, None, Some(&panicking))
                .is_some(),
            "below minHealthPercent ejections are ignored"
        );
    }

    #[test]
    fn weighted_pick_follows_weights() {
        let items = [("a", 80u32), ("b", 20), ("zero", 0)];
        let w = |i: &(&str, u32)| i.1;
        let total = total_weight(&items, w);
        assert_eq!(total, 100);
        let cases: &[(&str, u64, &str)] = &[
            ("lowest roll", 0, "a"),
            ("last of a", 79, "a"),
            ("first of b", 80, "b"),
            ("last roll", 99, "b"),
        ];
        for (name, roll, want) in cases {
            assert_eq!(
                pick_weighted(&items, w, *roll).map(|i| items[i].0),
                Some(*want),
                "case {name}"
            );
        }
        assert_eq!(pick_weighted(&items, w, 100), None, "roll past total");

        // Distribution with a seeded generator: bounded loop, deterministic.
        let mut rng = fastrand::Rng::with_seed(7);
        let mut a = 0;
        for _ in 0..10_000 {
            if pick_weighted(&items, w, rng.u64(..total)).map(|i| items[i].0) == Some("a") {
                a += 1;
            }
        }
        assert!(
            (7_700..=8_300).contains(&a),
            "a picked {a} of 10000 at weight 80"
        );
    }
}
