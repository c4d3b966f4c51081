//! The drain signal a listener gives its connections: one flag they read on every poll, and one waker each
//! that the listener wakes once when it stops.
//!
//! A `watch` receiver in a `select!` beside each connection did the same, but polling it takes the
//! channel's waiter lock, one lock shared by every connection of the process, on every wake-up of every
//! connection: with more than one worker thread, a contended lock on the request path. Here a poll reads
//! an atomic and compares a waker; the lock is taken when a connection starts, ends, or moves to another
//! waker (never, for a tokio task).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};

/// Set once, when the listener stops; wakes every connection watching it. It also counts the connections
/// still open (one per `Watch`), so the listener can wait for them without holding their tasks: a
/// `JoinSet` cost an allocation, a lock and list work per connection to add and to reap it, about 900
/// instructions (`bench/instructions` with `WORKLOAD=http1-new-conn`).
#[derive(Default)]
pub(crate) struct Drain {
    draining: AtomicBool,
    /// The drain time is up: connections still open end at their next wake-up (`until_closed`).
    closed: AtomicBool,
    /// Watches alive: connections not yet ended.
    live: AtomicUsize,
    /// Told when `live` falls to zero.
    ended: tokio::sync::Notify,
    watchers: Mutex<Watchers>,
    /// What the listener allows its connections: here, so that a connection reaches them through its
    /// `Watch` rather than carrying a copy in its future.
    limits: crate::limits::Limits,
}

/// The registered wakers. A slab: a connection's registration and removal are an index into a vector and
/// a free list, where a `HashMap` hashed its key with SipHash twice per connection.
#[derive(Default)]
struct Watchers {
    wakers: slab::Slab<Waker>,
}

impl Drain {
    fn lock(&self) -> std::sync::MutexGuard<'_, Watchers> {
        self.watchers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes every registered connection; they stay registered, to be woken again by `close`.
    fn wake_all(&self) {
        let wakers: Vec<Waker> = self.lock().wakers.iter().map(|(_, w)| w.clone()).collect();
        for w in wakers {
            w.wake();
        }
    }

    /// Tells every connection to drain, now and from now on.
    pub(crate) fn start(&self) {
        // The flag first: a watcher registering after the lock below sees it (the lock orders the two).
        self.draining.store(true, Ordering::Release);
        self.wake_all();
    }

    /// Ends every connection still open: each returns at its next poll, which this wakes.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake_all();
    }

    /// A drain signal for a listener whose connections run under `limits`.
    pub(crate) fn new(limits: crate::limits::Limits) -> Drain {
        Drain {
            limits,
            ..Drain::default()
        }
    }

    /// Connections open (watches alive).
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Waits until every watch (every connection) has been dropped.
    pub(crate) async fn all_ended(&self) {
        loop {
            let ended = self.ended.notified();
            let mut ended = std::pin::pin!(ended);
            // Registered before the count is read, so a last drop in between is not missed.
            ended.as_mut().enable();
            if self.live.load(Ordering::Acquire) == 0 {
                return;
            }
            ended.await;
        }
    }

    /// A watcher for one connection, counted until it is dropped.
    pub(crate) fn watch(self: &Arc<Self>) -> Watch {
        self.live.fetch_add(1, Ordering::AcqRel);
        Watch {
            drain: self.clone(),
            key: None,
            waker: None,
        }
    }
}

/// Runs `conn` until it ends or the drain's time is up (`Drain::close`), whichever comes first. The task
/// is woken at `close` through the waker its `Watch` registered.
pub(crate) fn until_closed<F: Future<Output = ()>>(drain: Arc<Drain>, conn: F) -> UntilClosed<F> {
    UntilClosed { drain, conn }
}

pin_project_lite::pin_project! {
    /// See [`until_closed`]. A struct rather than an `async fn`: an `async fn` moved `conn` (a connection's
    /// whole future, 3.6 KB) into its own frame at the first poll, a `memcpy` of about 340 instructions
    /// per connection, and its frame held the connection twice over, which made the boxed task twice the
    /// size to copy (`bench/instructions` with `WORKLOAD=http1-new-conn`).
    pub(crate) struct UntilClosed<F> {
        drain: Arc<Drain>,
        #[pin]
        conn: F,
    }
}

impl<F: Future<Output = ()>> Future for UntilClosed<F> {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> std::task::Poll<()> {
        let this = self.project();
        if this.drain.closed.load(Ordering::Acquire) {
            return std::task::Poll::Ready(());
        }
        this.conn.poll(cx)
    }
}

/// One connection's view of the drain signal.
pub(crate) struct Watch {
    drain: Arc<Drain>,
    /// Its place among the drain's wakers, once registered.
    key: Option<usize>,
    /// The waker registered there, to tell whether the task's waker changed without the lock.
    waker: Option<Waker>,
}

impl Watch {
    /// The limits of the listener the connection came from.
    pub(crate) fn limits(&self) -> &crate::limits::Limits {
        &self.drain.limits
    }

    /// Whether the listener is draining; when not, the task in `cx` is woken when it starts.
    pub(crate) fn poll_draining(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            let waker = cx.waker().clone();
            let mut watchers = self.drain.lock();
            match self.key.and_then(|k| watchers.wakers.get_mut(k)) {
                Some(registered) => *registered = waker.clone(),
                None => self.key = Some(watchers.wakers.insert(waker.clone())),
            }
            drop(watchers);
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
            self.drain.lock().wakers.try_remove(k);
        }
        if self.drain.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.drain.ended.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::WakeCount;
    use std::task::Poll;

    // The futures here are polled by hand with a waker that counts its wakes: whether a task would be
    // woken, and whether it would then be done, is read directly rather than guessed from a spawned
    // task some time later.

    #[test]
    fn watchers_are_woken_once_draining_starts_and_forgotten_when_dropped() {
        let drain = Arc::new(Drain::default());
        let (woken, waker) = WakeCount::new();
        let mut cx = Context::from_waker(&waker);
        let mut early = drain.watch();
        // Registered, not yet draining.
        assert!(!early.poll_draining(&mut cx));
        assert_eq!(drain.lock().wakers.len(), 1);
        assert_eq!(woken.get(), 0);
        drain.start();
        assert_eq!(woken.get(), 1, "woken once when draining starts");
        assert!(early.poll_draining(&mut cx));
        // The connection ends: its watcher leaves.
        drop(early);
        assert!(drain.lock().wakers.is_empty());
        // A watcher that starts after the signal sees it at once, and leaves nothing behind.
        let mut late = drain.watch();
        assert!(late.poll_draining(&mut cx));
        drop(late);
        assert!(drain.lock().wakers.is_empty());
    }

    #[test]
    fn a_dropped_watcher_unregisters() {
        let drain = Arc::new(Drain::default());
        let (_, waker) = WakeCount::new();
        let mut w = drain.watch();
        assert!(!w.poll_draining(&mut Context::from_waker(&waker)));
        assert_eq!(drain.lock().wakers.len(), 1);
        drop(w);
        assert!(drain.lock().wakers.is_empty());
    }

    #[test]
    fn the_listener_waits_for_its_connections_and_can_close_them() {
        let drain = Arc::new(Drain::default());
        let (woken, waker) = WakeCount::new();
        let mut cx = Context::from_waker(&waker);
        // None open: nothing to wait for.
        assert!(std::pin::pin!(drain.all_ended()).poll(&mut cx).is_ready());
        let (first, second) = (drain.watch(), drain.watch());
        let mut waiting = Box::pin(drain.all_ended());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        drop(first);
        assert!(
            waiting.as_mut().poll(&mut cx).is_pending(),
            "one connection is still open"
        );
        let before = woken.get();
        drop(second);
        assert!(
            woken.get() > before,
            "the last one to end wakes the listener"
        );
        assert!(waiting.as_mut().poll(&mut cx).is_ready(), "all ended");

        // A connection that never ends by itself ends at `close`, woken through its watcher.
        let mut watch = drain.watch();
        let mut conn = Box::pin(until_closed(
            drain.clone(),
            std::future::poll_fn(move |cx| {
                let _ = watch.poll_draining(cx);
                Poll::<()>::Pending
            }),
        ));
        assert!(conn.as_mut().poll(&mut cx).is_pending());
        let before = woken.get();
        drain.start();
        assert!(woken.get() > before, "woken when draining starts");
        assert!(
            conn.as_mut().poll(&mut cx).is_pending(),
            "draining does not end it"
        );
        let before = woken.get();
        drain.close();
        assert!(woken.get() > before, "woken at the close");
        assert!(conn.as_mut().poll(&mut cx).is_ready(), "closed");
        assert!(
            std::pin::pin!(drain.all_ended()).poll(&mut cx).is_pending(),
            "its watcher lives as long as the connection's future"
        );
        drop(conn);
        assert!(
            std::pin::pin!(drain.all_ended()).poll(&mut cx).is_ready(),
            "its watcher was dropped with it"
        );
    }
}
