//! Open-loop pacing: a fixed schedule of send times, released by one OS thread, and the latency rule that
//! corrects for coordinated omission.
//!
//! The schedule is absolute (request `i` is due at `start + i / rate`), so a late release does not push the
//! following ones back and the offered rate stays the rate asked for. The pacer thread sleeps until each
//! due time (`nanosleep`, tens of microseconds of slack, where tokio's timer wheel has a 1 ms tick that
//! would release requests in bursts) and hands the request, stamped with its release time, to worker
//! `i mod K`. A worker that is still waiting for an earlier response leaves the ticket queued; its latency
//! is measured from the release time all the same, so a stall of the system under test shows in every
//! request it delayed, not only in the one that was in flight (the error wrk2 and `oha
//! --latency-correction` correct too).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// When request `i` is due.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Time of request 0.
    pub start: Instant,
    /// Requests per second.
    pub rate: u32,
    /// Length of the run; requests due at or after `start + duration` are not sent.
    pub duration: Duration,
}

impl Schedule {
    /// Offset of request `i` from `start`.
    pub fn offset(&self, i: u64) -> Duration {
        // u128 keeps the product exact for any run length.
        let ns = u128::from(i) * 1_000_000_000 / u128::from(self.rate.max(1));
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// How many requests the run holds.
    pub fn total(&self) -> u64 {
        let n = self.duration.as_nanos() * u128::from(self.rate) / 1_000_000_000;
        u64::try_from(n).unwrap_or(u64::MAX)
    }
}

/// A request released by the pacer: latency is measured from `released`.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    /// When the pacer released it (its due time plus the sleep's slack).
    pub released: Instant,
}

/// Latency of a request with CO correction: from its release, whatever the worker was doing then.
pub fn corrected_latency(ticket: Ticket, done: Instant) -> Duration {
    done.saturating_duration_since(ticket.released)
}

/// Runs the schedule on its own thread, handing ticket `i` to `workers[i % workers.len()]`. Stops early
/// when `stop` is set. Dropping the senders at the end tells each worker that nothing more comes.
pub fn spawn(
    schedule: Schedule,
    workers: Vec<UnboundedSender<Ticket>>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<u64>> {
    std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || {
            let total = schedule.total();
            let k = workers.len().max(1) as u64;
            let mut sent = 0;
            for i in 0..total {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let due = schedule.start + schedule.offset(i);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let ticket = Ticket {
                    released: Instant::now(),
                };
                if let Some(w) = workers.get((i % k) as usize) {
                    // A closed channel means that worker gave up; its share is simply not sent.
                    if w.send(ticket).is_ok() {
                        sent += 1;
                    }
                }
            }
            sent
        })
}

/// What one worker does with a queue of release times and a server with known service times: the model
/// the tests use to check the correction (`service[i]` is how long request `i` takes once sent).
/// Returns each request's latency as recorded (`corrected` true) or as a closed-loop tool would see it
/// (from the moment it was actually sent).
pub fn simulate_worker(
    releases: &[Duration],
    service: &[Duration],
    corrected: bool,
) -> Vec<Duration> {
    let mut free_at = Duration::ZERO;
    releases
        .iter()
        .zip(service)
        .map(|(&released, &took)| {
            let sent = released.max(free_at);
            let done = sent + took;
            free_at = done;
            if corrected {
                done - released
            } else {
                done - sent
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Latencies;

    #[test]
    fn schedule_is_absolute_and_exact() {
        let s = Schedule {
            start: Instant::now(),
            rate: 3000,
            duration: Duration::from_secs(8),
        };
        assert_eq!(s.total(), 24_000);
        assert_eq!(s.offset(0), Duration::ZERO);
        assert_eq!(s.offset(3), Duration::from_millis(1));
        // No drift from adding rounded intervals: request 2999 is at 999.666… ms, request 3000 at 1 s.
        assert_eq!(s.offset(2999), Duration::from_nanos(999_666_666));
        assert_eq!(s.offset(3000), Duration::from_secs(1));
    }

    #[test]
    fn a_stall_shows_in_p99_only_with_the_correction() {
        // 1,000 req/s for 2 s on one connection; each request takes 100 µs except request 1000, which
        // stalls 200 ms. A closed-loop view sees one slow request; the corrected view sees the ~200
        // requests that were due during the stall wait too.
        let n = 2000;
        let releases: Vec<Duration> = (0..n).map(|i| Duration::from_millis(i as u64)).collect();
        let mut service = vec![Duration::from_micros(100); n];
        service[1000] = Duration::from_millis(200);
        let hist = |v: Vec<Duration>| {
            let mut h = Latencies::new();
            v.into_iter().for_each(|d| h.record(d));
            h
        };
        let corrected = hist(simulate_worker(&releases, &service, true));
        let naive = hist(simulate_worker(&releases, &service, false));
        assert!(
            naive.quantile_us(0.99) < 200.0,
            "naive p99 {}",
            naive.quantile_us(0.99)
        );
        assert!(
            corrected.quantile_us(0.99) > 150_000.0,
            "corrected p99 {}",
            corrected.quantile_us(0.99)
        );
        // The ~200 delayed requests waited from 200 ms down to 0: the slowest 5% waited over 100 ms.
        assert!(
            corrected.quantile_us(0.95) > 50_000.0,
            "corrected p95 {}",
            corrected.quantile_us(0.95)
        );
        // Before the stall both views agree.
        assert!((corrected.quantile_us(0.25) - 100.0).abs() < 1.0);
    }

    #[test]
    fn no_stall_no_difference() {
        let releases: Vec<Duration> = (0..100).map(Duration::from_millis).collect();
        let service = vec![Duration::from_micros(300); 100];
        assert_eq!(
            simulate_worker(&releases, &service, true),
            simulate_worker(&releases, &service, false)
        );
    }

    #[test]
    fn the_pacer_keeps_the_rate_and_spreads_the_tickets() {
        // 2,000 req/s for 250 ms: 500 tickets, round robin over 4 workers, each due 0.5 ms after the
        // one before.
        let (txs, mut rxs): (Vec<_>, Vec<_>) = (0..4)
            .map(|_| tokio::sync::mpsc::unbounded_channel())
            .unzip();
        let start = Instant::now() + Duration::from_millis(5);
        let schedule = Schedule {
            start,
            rate: 2000,
            duration: Duration::from_millis(250),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let sent = spawn(schedule, txs, stop)
            .expect("spawn")
            .join()
            .expect("join");
        assert_eq!(sent, 500);
        for (w, rx) in rxs.iter_mut().enumerate() {
            let mut released = Vec::new();
            while let Ok(t) = rx.try_recv() {
                released.push(t.released);
            }
            assert_eq!(released.len(), 125, "worker {w}");
            // Worker w's k-th ticket is ticket 4k + w: never released before it is due, so never in a
            // burst ahead of the schedule. How soon after its due time it goes is the machine's (a
            // loaded one stalls the thread): measured by the benchmarks, not asserted here.
            for (k, at) in released.iter().enumerate() {
                let due = start + schedule.offset(4 * k as u64 + w as u64);
                assert!(
                    *at >= due,
                    "worker {w}, ticket {k}: released before it was due"
                );
            }
        }
    }

    #[test]
    fn corrected_latency_counts_from_release() {
        let t0 = Instant::now();
        let ticket = Ticket { released: t0 };
        assert_eq!(
            corrected_latency(ticket, t0 + Duration::from_millis(3)),
            Duration::from_millis(3)
        );
        assert_eq!(corrected_latency(ticket, t0), Duration::ZERO);
    }
}
