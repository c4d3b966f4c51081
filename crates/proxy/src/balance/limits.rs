//! Circuit breaking (Envoy's `circuit_breakers.thresholds`, Istio's `connectionPool`): per-cluster
//! counters of connections in use, requests waiting for one, requests and retries in flight. Taking and
//! giving back a slot is an atomic compare-and-swap; only a request that must wait for a connection
//! (`max_pending_requests`) parks, on a `Notify`. A request over a limit is answered 503 `UO`.
//!
//! The counters live in the cluster's converted config behind an `Arc`, so they carry over snapshots
//! that do not change the cluster, and requests in flight give back their slots to the counters they
//! took them from.
//!
//! HTTP/1.1 connections carry one request at a time, so "connections in use" is the HTTP/1.1 requests
//! being sent or awaiting their response head (the slot is given back when the head arrives, not when
//! the body has been read); HTTP/2 shares one connection per endpoint, so only `max_requests` applies to
//! it. Opaque TCP counts its connections against `max_connections`.

use std::sync::atomic::{AtomicU32, Ordering};
use tokio::sync::Notify;

/// A cluster's thresholds and the counters held against them.
#[derive(Debug, Default)]
pub struct Limits {
    /// `max_connections`.
    pub max_connections: u32,
    /// `max_pending_requests`.
    pub max_pending: u32,
    /// `max_requests`.
    pub max_requests: u32,
    /// `max_retries`.
    pub max_retries: u32,
    connections: AtomicU32,
    pending: AtomicU32,
    requests: AtomicU32,
    retries: AtomicU32,
    freed: Notify,
}

impl PartialEq for Limits {
    fn eq(&self, o: &Limits) -> bool {
        self.thresholds() == o.thresholds()
    }
}

/// Takes one of `max` slots of `counter`; false when all are taken.
fn take(counter: &AtomicU32, max: u32) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

/// A request went over a limit (`UO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

impl Limits {
    /// Limits with these thresholds (`u32::MAX`: none); `None` when nothing is limited, so that the
    /// request path of an unlimited cluster touches no counter.
    pub fn new(
        max_connections: u32,
        max_pending: u32,
        max_requests: u32,
        max_retries: u32,
    ) -> Option<Limits> {
        let l = Limits {
            max_connections,
            max_pending,
            max_requests,
            max_retries,
            ..Limits::default()
        };
        (l.thresholds() != [u32::MAX; 4]).then_some(l)
    }

    /// The four thresholds.
    pub fn thresholds(&self) -> [u32; 4] {
        [
            self.max_connections,
            self.max_pending,
            self.max_requests,
            self.max_retries,
        ]
    }

    /// Admits a request: `Ok` with its slots, `Err(Some(slots))` when it must wait for a connection
    /// ([`Limits::wait_for_connection`]), `Err(None)` on overflow. `h1`: the request takes a connection
    /// of its own.
    pub fn admit(&self, h1: bool) -> Result<Admitted<'_>, Option<Admitted<'_>>> {
        if !take(&self.requests, self.max_requests) {
            return Err(None);
        }
        let mut a = Admitted {
            limits: self,
            connection: false,
        };
        if !h1 || self.max_connections == u32::MAX {
            return Ok(a);
        }
        if take(&self.connections, self.max_connections) {
            a.connection = true;
            return Ok(a);
        }
        Err(Some(a))
    }

    /// Waits, as one of at most `max_pending` requests, until a connection is free; `Overflow` when
    /// that many wait already. Cancel-safe: dropping it gives back what it took.
    pub async fn wait_for_connection<'a>(
        &'a self,
        mut a: Admitted<'a>,
    ) -> Result<Admitted<'a>, Overflow> {
        if !take(&self.pending, self.max_pending) {
            return Err(Overflow);
        }
        struct Pending<'a>(&'a AtomicU32);
        impl Drop for Pending<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _pending = Pending(&self.pending);
        loop {
            let notified = self.freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if take(&self.connections, self.max_connections) {
                a.connection = true;
                return Ok(a);
            }
            notified.await;
        }
    }

    /// A retry slot, or `None` when `max_retries` retries are under way.
    pub fn retry(&self) -> Option<Slot<'_>> {
        // `then`, not `then_some`: a slot made and dropped on refusal would give back one not taken.
        take(&self.retries, self.max_retries).then(|| Slot(&self.retries))
    }

    /// A connection slot for opaque TCP, or `None` at `max_connections`.
    pub fn tcp_connection(&self) -> Option<Slot<'_>> {
        take(&self.connections, self.max_connections).then(|| Slot(&self.connections))
    }

    /// Requests in flight, connections in use, requests waiting, retries under way (tests, admin).
    pub fn in_use(&self) -> [u32; 4] {
        [
            self.requests.load(Ordering::Relaxed),
            self.connections.load(Ordering::Relaxed),
            self.pending.load(Ordering::Relaxed),
            self.retries.load(Ordering::Relaxed),
        ]
    }
}

/// A request's slots; given back on drop.
#[derive(Debug)]
pub struct Admitted<'a> {
    limits: &'a Limits,
    connection: bool,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        let l = self.limits;
        if self.connection {
            l.connections.fetch_sub(1, Ordering::AcqRel);
            if l.pending.load(Ordering::Acquire) > 0 {
                l.freed.notify_one();
            }
        }
        l.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One slot of a counter; given back on drop.
#[derive(Debug)]
pub struct Slot<'a>(&'a AtomicU32);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_thresholds_means_no_counters() {
        assert!(Limits::new(u32::MAX, u32::MAX, u32::MAX, u32::MAX).is_none());
        assert!(Limits::new(1, u32::MAX, u32::MAX, u32::MAX).is_some());
    }

    #[test]
    fn requests_over_max_requests_overflow_and_slots_come_back() {
        let l = Limits::new(u32::MAX, u32::MAX, 2, 1).expect("limited");
        let a = l.admit(false).expect("first");
        let b = l.admit(true).expect("second");
        assert!(matches!(l.admit(false), Err(None)), "third overflows");
        drop(a);
        let c = l.admit(false).expect("a slot came back");
        assert_eq!(l.in_use(), [2, 0, 0, 0]);
        drop((b, c));
        let r = l.retry().expect("one retry");
        assert!(l.retry().is_none(), "max_retries 1");
        drop(r);
        assert!(l.retry().is_some());
        assert_eq!(l.in_use(), [0, 0, 0, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn http1_requests_wait_for_a_connection_up_to_max_pending() {
        let l = std::sync::Arc::new(Limits::new(1, 1, u32::MAX, u32::MAX).expect("limited"));
        let first = l.admit(true).expect("takes the connection");
        let Err(Some(waiting)) = l.admit(true) else {
            panic!("second must wait")
        };
        let l2 = l.clone();
        let waiter = tokio::spawn(async move {
            let Err(Some(w)) = l2.admit(true) else {
                panic!("must wait")
            };
            l2.wait_for_connection(w).await.map(drop)
        });
        tokio::task::yield_now().await;
        assert_eq!(l.in_use(), [3, 1, 1, 0], "one pending");
        assert_eq!(
            l.wait_for_connection(waiting).await.map(drop),
            Err(Overflow),
            "a second pending request overflows"
        );
        drop(first);
        assert_eq!(
            waiter.await.expect("joins"),
            Ok(()),
            "the pending one got it"
        );
        assert_eq!(l.in_use(), [0, 0, 0, 0]);
        // HTTP/2 requests take no connection slot.
        let _h1 = l.admit(true).expect("h1");
        assert!(l.admit(false).is_ok(), "h2 is not limited by connections");
    }
}
