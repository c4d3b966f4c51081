//! Helpers the crate's tests share.

use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// Polls `check` with a growing delay until it returns `Some`, or panics naming `what` after 15 s (of the
/// runtime's clock: under a paused clock the deadline passes as the clock is advanced).
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut delay = Duration::from_millis(1);
    loop {
        // A check that hangs counts against the deadline too.
        if let Ok(Some(v)) = tokio::time::timeout_at(deadline, check()).await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}
