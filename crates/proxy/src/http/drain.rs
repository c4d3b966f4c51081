//! The drain signal a listener gives its connections: one flag they read on every poll, and one waker each
//! that the listener wakes once when it stops.
//!
//! A `watch` receiver in a `select!` beside each connection did the same, but polling it takes the
//! channel's waiter lock, one lock shared by every connection of the process, on every wake-up of every
//! connection: with more than one worker thread, a contended lock on the request path. Here a poll reads
//! an atomic and compares a waker; the lock is taken when a connection starts, ends, or moves to another
//! waker (never, for a tokio task).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};

/// Set once, when the listener stops; wakes every connection watching it.
#[derive(Default)]
pub(crate) struct Drain {
    draining: AtomicBool,
    watchers: Mutex<Watchers>,
}

#[derive(Default)]
struct Watchers {
    next: u64,
    wakers: HashMap<u64, Waker>,
}

impl Drain {
    fn lock(&self) -> std::sync::MutexGuard<'_, Watchers> {
        self.watchers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells every connection to drain, now and from now on.
    pub(crate) fn start(&self) {
        // The flag first: a watcher registering after the lock below sees it (the lock orders the two).
        self.draining.store(true, Ordering::Release);
        let wakers: Vec<Waker> = self.lock().wakers.drain().map(|(_, w)| w).collect();
        for w in wakers {
            w.wake();
        }
    }

    /// A watcher for one connection.
    pub(crate) fn watch(self: &Arc<Self>) -> Watch {
        Watch {
            drain: self.clone(),
            key: None,
            waker: None,
        }
    }
}

/// One connection's view of the drain signal.
pub(crate) struct Watch {
    drain: Arc<Drain>,
    /// Its place among the drain's wakers, once registered.
    key: Option<u64>,
    /// The waker registered there, to tell whether the task's waker changed without the lock.
    waker: Option<Waker>,
}

impl Watch {
    /// Whether the listener is draining; when not, the task in `cx` is woken when it starts.
    pub(crate) fn poll_draining(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            let waker = cx.waker().clone();
            let mut watchers = self.drain.lock();
            let key = match self.key {
                Some(k) => k,
                None => {
                    watchers.next += 1;
                    watchers.next
                }
            };
            watchers.wakers.insert(key, waker.clone());
            drop(watchers);
            self.key = Some(key);
            self.waker = Some(waker);
        }
        self.drain.draining.load(Ordering::Acquire)
    }
}

impl Watch {
    /// Whether the listener is draining, without asking to be woken when it starts.
    pub(crate) fn is_draining(&self) -> bool {
        self.drain.draining.load(Ordering::Acquire)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(k) = self.key {
            self.drain.lock().wakers.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::task::Poll;
    use std::time::Duration;

    #[tokio::test]
    async fn watchers_are_woken_once_draining_starts_and_forgotten_when_dropped() {
        let drain = Arc::new(Drain::default());
        let mut early = drain.watch();
        let d = drain.clone();
        let waiter = tokio::spawn(async move {
            poll_fn(|cx| {
                if early.poll_draining(cx) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await
        });
        // Registered, not yet draining.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        assert_eq!(d.lock().wakers.len(), 1);
        drain.start();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("task");
        // A watcher that starts after the signal sees it at once, and leaves nothing behind.
        let mut late = drain.watch();
        assert!(poll_fn(|cx| Poll::Ready(late.poll_draining(cx))).await);
        drop(late);
        assert!(drain.lock().wakers.is_empty());
    }

    #[tokio::test]
    async fn a_dropped_watcher_unregisters() {
        let drain = Arc::new(Drain::default());
        let mut w = drain.watch();
        assert!(!poll_fn(|cx| Poll::Ready(w.poll_draining(cx))).await);
        assert_eq!(drain.lock().wakers.len(), 1);
        drop(w);
        assert!(drain.lock().wakers.is_empty());
    }
}
