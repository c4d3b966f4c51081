//! Endpoint sets and the choices made over them: round robin over a cluster's endpoints, and the
//! weighted pick of a cluster among a route's `weighted_clusters`. Pure and lock-free.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The endpoints of one cluster with their round-robin position.
///
/// The counter is the only mutable state on the request path; it is an atomic, so picking never locks.
#[derive(Debug, Default)]
pub struct EndpointSet {
    endpoints: Vec<SocketAddr>,
    /// Which endpoints have a sidecar (auto mTLS speaks TLS to those), by index; empty when none has.
    sidecars: Vec<bool>,
    next: AtomicUsize,
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
        EndpointSet {
            endpoints,
            sidecars: Vec::new(),
            next: AtomicUsize::new(start),
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
