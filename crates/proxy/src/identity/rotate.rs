//! The rotation loop: obtain a certificate, publish it, sleep until half its lifetime (±1% jitter, as
//! Istio's agent: `SECRET_GRACE_PERIOD_RATIO=0.5`, `SECRET_GRACE_PERIOD_RATIO_JITTER=0.01`), obtain the
//! next. A failed request is retried with exponential backoff; the old certificate stays published
//! meanwhile, so only handshakes after its expiry would suffer.

use super::client::CaClient;
use super::{Error, Identity};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tracing::{error, info, warn};

/// Fraction of the lifetime after which a certificate is renewed.
pub const GRACE_RATIO: f64 = 0.5;
/// Largest random change to [`GRACE_RATIO`], so proxies started together do not renew together.
pub const GRACE_JITTER: f64 = 0.01;
/// First delay after a failed request.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest delay between failed requests.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Shortest delay between failed requests, even when the old certificate is about to expire.
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// Where certificates come from (the CA client; a fake in tests).
pub(crate) trait Source: Send + Sync {
    /// One request.
    fn fetch(&self) -> impl Future<Output = Result<Identity, Error>> + Send;
}

impl Source for CaClient {
    fn fetch(&self) -> impl Future<Output = Result<Identity, Error>> + Send {
        CaClient::fetch(self)
    }
}

/// How long after `now` to renew `id`, with `jitter` in [-1, 1] scaling [`GRACE_JITTER`].
pub fn renew_after(id: &Identity, now: SystemTime, jitter: f64) -> Duration {
    let lifetime = id
        .not_after
        .duration_since(id.not_before)
        .unwrap_or_default();
    let ratio = GRACE_RATIO + GRACE_JITTER * jitter.clamp(-1.0, 1.0);
    let at = id.not_before + lifetime.mul_f64(ratio);
    at.duration_since(now).unwrap_or_default()
}

/// Runs until `shutdown` is true: fetch, publish on `tx`, sleep, again.
pub(crate) async fn run<S: Source>(
    source: S,
    tx: watch::Sender<Option<Arc<Identity>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        // Cancellation-safe: dropping a fetch drops its connection; `stopped` only observes.
        let fetched = tokio::select! {
            r = source.fetch() => r,
            _ = crate::stopped(&mut shutdown) => return,
        };
        let delay = match fetched {
            Ok(id) => {
                let delay = renew_after(&id, SystemTime::now(), fastrand::f64() * 2.0 - 1.0);
                info!(
                    spiffe_id = %id.spiffe_id,
                    serial = %id.serial,
                    not_after = %crate::admin::rfc3339(id.not_after),
                    renew_in = ?delay,
                    "workload certificate obtained"
                );
                tx.send_replace(Some(Arc::new(id)));
                backoff = FIRST_BACKOFF;
                delay
            }
            Err(e) => {
                let now = SystemTime::now();
                let remaining = tx
                    .borrow()
                    .as_ref()
                    .and_then(|cur| cur.not_after.duration_since(now).ok());
                let delay = match remaining {
                    // Retry well before the certificate in use expires.
                    Some(left) => backoff.min(left / 2).max(MIN_BACKOFF),
                    None => backoff,
                };
                match remaining {
                    Some(left) => warn!(
                        error = %error_line(&e),
                        valid_for = ?left,
                        retry_in = ?delay,
                        "certificate renewal failed; the current certificate stays in use"
                    ),
                    None => error!(
                        error = %error_line(&e),
                        retry_in = ?delay,
                        "no workload certificate: request failed"
                    ),
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                delay
            }
        };
        // Cancellation-safe: both branches only wait.
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = crate::stopped(&mut shutdown) => return,
        }
    }
}

/// An error and its causes on one line (logs print the chain once).
fn error_line(e: &Error) -> String {
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use tokio::time::Instant;

    /// Issues identities valid from now for `lifetime`, failing the requests whose index is in `fail`;
    /// records when (on tokio's clock) each request came.
    struct Fake {
        lifetime: Duration,
        fail: Vec<usize>,
        calls: AtomicUsize,
        at: Mutex<Vec<Instant>>,
    }

    impl Fake {
        fn new(lifetime: Duration, fail: Vec<usize>) -> Arc<Fake> {
            Arc::new(Fake {
                lifetime,
                fail,
                calls: AtomicUsize::new(0),
                at: Mutex::new(Vec::new()),
            })
        }
    }

    fn identity(serial: usize, lifetime: Duration) -> Identity {
        let now = SystemTime::now();
        Identity {
            spiffe_id: "spiffe://cluster.local/ns/default/sa/reviews".into(),
            chain: Vec::new(),
            key: rustls_pki_types::PrivateKeyDer::Pkcs8(Vec::new().into()),
            roots: Vec::new(),
            not_before: now,
            not_after: now + lifetime,
            serial: format!("{serial:x}"),
        }
    }

    impl Source for Arc<Fake> {
        async fn fetch(&self) -> Result<Identity, Error> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            self.at.lock().expect("lock").push(Instant::now());
            if self.fail.contains(&n) {
                return Err(Error::Request {
                    address: "fake".into(),
                    reason: "refused".into(),
                });
            }
            Ok(identity(n, self.lifetime))
        }
    }

    /// Waits for the identity with `serial`.
    async fn until_serial(rx: &mut super::super::Current, serial: &str) -> Arc<Identity> {
        let got = rx
            .wait_for(|c| c.as_ref().is_some_and(|i| i.serial == serial))
            .await
            .expect("the sender lives");
        got.clone().expect("some")
    }

    #[test]
    fn renewal_is_at_half_the_lifetime_within_the_jitter() {
        let id = identity(1, Duration::from_secs(24 * 3600));
        let nb = id.not_before;
        let cases: &[(f64, u64)] = &[(0.0, 43_200), (1.0, 44_064), (-1.0, 42_336), (7.0, 44_064)];
        for (jitter, secs) in cases {
            assert_eq!(
                renew_after(&id, nb, *jitter),
                Duration::from_secs(*secs),
                "jitter {jitter}"
            );
        }
        // Already past the renewal point: at once.
        assert_eq!(
            renew_after(&id, nb + Duration::from_secs(50_000), 0.0),
            Duration::ZERO
        );
    }

    #[tokio::test(start_paused = true)]
    async fn certificates_are_renewed_at_half_their_lifetime() {
        let fake = Fake::new(Duration::from_secs(3600), vec![]);
        let (tx, mut rx) = watch::channel(None);
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(run(fake.clone(), tx, stop));
        until_serial(&mut rx, "0").await;
        until_serial(&mut rx, "1").await;
        until_serial(&mut rx, "2").await;
        stop_tx.send_replace(true);
        task.await.expect("ends at shutdown");
        let at = fake.at.lock().expect("lock").clone();
        for w in at.windows(2) {
            let gap = w[1] - w[0];
            // 30 min ± 1% of the hour.
            assert!(
                gap >= Duration::from_secs(1764) && gap <= Duration::from_secs(1837),
                "renewed after {gap:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_retried_with_backoff_and_the_old_certificate_stays() {
        // The first request fails twice before succeeding; the renewal fails three times.
        let fake = Fake::new(Duration::from_secs(3600), vec![0, 1, 3, 4, 5]);
        let (tx, mut rx) = watch::channel(None);
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(run(fake.clone(), tx, stop));
        let first = until_serial(&mut rx, "2").await;
        // While the renewal fails, the first certificate is what the channel holds.
        let renewed = until_serial(&mut rx, "6").await;
        assert_ne!(first.serial, renewed.serial);
        stop_tx.send_replace(true);
        task.await.expect("ends at shutdown");
        let at = fake.at.lock().expect("lock").clone();
        let gaps: Vec<u64> = at.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
        assert_eq!(gaps[0], 1, "first retry after 1s: {gaps:?}");
        assert_eq!(gaps[1], 2, "then 2s: {gaps:?}");
        assert!((1764..=1837).contains(&gaps[2]), "renewal: {gaps:?}");
        assert_eq!(&gaps[3..], &[1, 2, 4], "backoff restarts: {gaps:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_a_loop_that_never_got_a_certificate() {
        let fake = Fake::new(Duration::from_secs(3600), (0..1000).collect());
        let (tx, rx) = watch::channel(None);
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(run(fake.clone(), tx, stop));
        // Let it fail a few times (the clock moves only when everything waits).
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(rx.borrow().is_none());
        stop_tx.send_replace(true);
        task.await.expect("ends at shutdown");
        assert!(fake.calls.load(Ordering::SeqCst) >= 3);
    }
}
