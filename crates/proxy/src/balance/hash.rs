//! Consistent hashing over a cluster's endpoints: a ring (Envoy's `RING_HASH`) and a Maglev table
//! (`MAGLEV`), built when a snapshot is built and only read by requests. Both place endpoints by a hash
//! of their address, so a table rebuilt for the same endpoints is the same table, and removing an
//! endpoint moves only the keys that went to it (ring) or few more (Maglev).

use std::net::SocketAddr;

/// Envoy's default `minimum_ring_size`.
pub const DEFAULT_RING_SIZE: u64 = 1024;
/// The most virtual nodes a ring gets (Envoy's default `maximum_ring_size`).
pub const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;
/// Envoy's default Maglev table size (a prime).
pub const DEFAULT_MAGLEV_SIZE: u64 = 65_537;

/// 64-bit FNV-1a followed by a SplitMix64 finalizer: fixed, so every proxy and every rebuild hashes a
/// key alike (a cookie sent through any sidecar reaches the same endpoint).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// SplitMix64's finalizer: spreads FNV's weak low bits.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn addr_key(addr: &SocketAddr, salt: u64) -> u64 {
    let mut buf = [0u8; 26];
    let n = match addr.ip() {
        std::net::IpAddr::V4(v4) => {
            buf[..4].copy_from_slice(&v4.octets());
            4
        }
        std::net::IpAddr::V6(v6) => {
            buf[..16].copy_from_slice(&v6.octets());
            16
        }
    };
    buf[n..n + 2].copy_from_slice(&addr.port().to_be_bytes());
    buf[n + 2..n + 10].copy_from_slice(&salt.to_le_bytes());
    hash_bytes(&buf[..n + 10])
}

/// Which consistent-hash table, with its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A ring of at least this many virtual nodes.
    Ring(u64),
    /// A Maglev table of this (prime) size.
    Maglev(u64),
}

/// A built table: maps a request's hash to an endpoint index.
#[derive(Debug)]
pub struct Table {
    kind: Kind,
    /// The endpoints it was built for, in order.
    endpoints: Vec<SocketAddr>,
    /// Ring: (point, endpoint index) sorted by point. Maglev: unused.
    ring: Vec<(u64, u32)>,
    /// Maglev: endpoint index per slot. Ring: unused.
    slots: Vec<u32>,
}

impl Table {
    /// A table of `kind` over `endpoints` (empty endpoints: a table that picks nothing).
    pub fn build(kind: Kind, endpoints: &[SocketAddr]) -> Table {
        let mut t = Table {
            kind,
            endpoints: endpoints.to_vec(),
            ring: Vec::new(),
            slots: Vec::new(),
        };
        if endpoints.is_empty() {
            return t;
        }
        match kind {
            Kind::Ring(min) => {
                let n = endpoints.len() as u64;
                let min = min.clamp(1, MAX_RING_SIZE);
                // Each endpoint gets the same number of points, so the ring has at least `min`
                // (Envoy scales by weight; weft's endpoints are unweighted), rounded up to a power of
                // two: adding or removing an endpoint then seldom changes the others' points, and
                // moves only the keys of the endpoint that came or went.
                let per = min
                    .div_ceil(n)
                    .max(1)
                    .next_power_of_two()
                    .min((MAX_RING_SIZE / n).max(1));
                t.ring.reserve((per * n) as usize);
                for (i, a) in endpoints.iter().enumerate() {
                    for k in 0..per {
                        t.ring.push((addr_key(a, k), i as u32));
                    }
                }
                t.ring.sort_unstable();
            }
            Kind::Maglev(size) => {
                let m = size.max(1) as usize;
                // Each endpoint's preference list is offset + j * skip (mod m); slots are filled by
                // taking turns, each endpoint claiming its next free preferred slot (Maglev, NSDI '16).
                let perms: Vec<(u64, u64)> = endpoints
                    .iter()
                    .map(|a| {
                        let offset = addr_key(a, 0x6d61_676c) % m as u64;
                        let skip = if m > 1 {
                            addr_key(a, 0x736b_6970) % (m as u64 - 1) + 1
                        } else {
                            1
                        };
                        (offset, skip)
                    })
                    .collect();
                let mut next = vec![0u64; endpoints.len()];
                let mut slots = vec![u32::MAX; m];
                let mut filled = 0;
                'fill: loop {
                    for (i, (offset, skip)) in perms.iter().enumerate() {
                        let mut c = (offset + next[i] * skip) % m as u64;
                        while slots[c as usize] != u32::MAX {
                            next[i] += 1;
                            c = (offset + next[i] * skip) % m as u64;
                        }
                        slots[c as usize] = i as u32;
                        next[i] += 1;
                        filled += 1;
                        if filled == m {
                            break 'fill;
                        }
                    }
                }
                t.slots = slots;
            }
        }
        t
    }

    /// Whether this table is the one `kind` over `endpoints` would build.
    pub fn is_for(&self, kind: Kind, endpoints: &[SocketAddr]) -> bool {
        self.kind == kind && self.endpoints == endpoints
    }

    /// The endpoint index for a request hash.
    pub fn pick(&self, hash: u64) -> Option<usize> {
        match self.kind {
            Kind::Ring(_) => {
                if self.ring.is_empty() {
                    return None;
                }
                let at = self.ring.partition_point(|(p, _)| *p < hash);
                let (_, i) = self.ring.get(at).or_else(|| self.ring.first())?;
                Some(*i as usize)
            }
            Kind::Maglev(_) => {
                if self.slots.is_empty() {
                    return None;
                }
                let slot = (hash % self.slots.len() as u64) as usize;
                self.slots.get(slot).map(|i| *i as usize)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: usize) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 9080)))
            .collect()
    }

    /// The endpoint each of `keys` maps to.
    fn owners(t: &Table, eps: &[SocketAddr], keys: u64) -> Vec<SocketAddr> {
        (0..keys)
            .map(|k| eps[t.pick(hash_bytes(&k.to_le_bytes())).expect("pick")])
            .collect()
    }

    #[test]
    fn rebuilding_for_the_same_endpoints_maps_every_key_alike() {
        let eps = addrs(7);
        for kind in [Kind::Ring(1024), Kind::Maglev(65_537)] {
            let a = owners(&Table::build(kind, &eps), &eps, 2000);
            let b = owners(&Table::build(kind, &eps), &eps, 2000);
            assert_eq!(
                a, b,
                "{kind:?}: a new push of the same endpoints moves nothing"
            );
        }
    }

    #[test]
    fn removing_an_endpoint_moves_few_keys() {
        let eps = addrs(10);
        let fewer: Vec<SocketAddr> = eps.iter().copied().filter(|a| *a != eps[3]).collect();
        const KEYS: u64 = 10_000;
        for (kind, most_moved) in [(Kind::Ring(1024), 0.0), (Kind::Maglev(65_537), 0.05)] {
            let before = owners(&Table::build(kind, &eps), &eps, KEYS);
            let after = owners(&Table::build(kind, &fewer), &fewer, KEYS);
            let on_removed = before.iter().filter(|a| **a == eps[3]).count();
            let moved_others = before
                .iter()
                .zip(&after)
                .filter(|(b, a)| **b != eps[3] && b != a)
                .count();
            assert!(
                (700..=1300).contains(&on_removed),
                "{kind:?}: the removed endpoint had {on_removed} of {KEYS} keys"
            );
            assert!(
                moved_others as f64 <= most_moved * KEYS as f64,
                "{kind:?}: {moved_others} keys of remaining endpoints moved"
            );
        }
    }

    #[test]
    fn keys_spread_over_endpoints() {
        let eps = addrs(5);
        for kind in [Kind::Ring(1024), Kind::Maglev(65_537)] {
            let got = owners(&Table::build(kind, &eps), &eps, 10_000);
            for a in &eps {
                let n = got.iter().filter(|g| *g == a).count();
                assert!((1500..=2500).contains(&n), "{kind:?}: {a} got {n} of 10000");
            }
        }
        assert_eq!(Table::build(Kind::Ring(8), &[]).pick(1), None);
        assert_eq!(Table::build(Kind::Maglev(7), &[]).pick(1), None);
    }
}
