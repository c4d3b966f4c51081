//! The limits and timeouts a server puts on its downstream connections, and the one timer per connection
//! that enforces the timeouts.
//!
//! The names are Envoy's (`HttpConnectionManager` and `Http2ProtocolOptions`), so an operator who tuned
//! Envoy knows them; the defaults are those of Envoy's guidance for proxies that face untrusted clients
//! ("Configuring Envoy as an edge proxy"), where Envoy's own defaults leave a defence off. Zero turns a
//! timeout off, as in Envoy.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Envoy's `request_headers_timeout` in its edge guidance (off by default in Envoy; hyper's was 30 s).
pub const DEFAULT_REQUEST_HEADERS_TIMEOUT: Duration = Duration::from_secs(10);
/// Envoy's `common_http_protocol_options.idle_timeout` default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Envoy's `stream_idle_timeout` default.
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Connections one listener keeps open at once. Envoy has no default (its edge guidance caps the whole
/// process at 50,000); a sidecar's few listeners each get a share that leaves descriptors for the others
/// and for upstream connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Streams a client may have open at once on one HTTP/2 connection (Envoy's edge guidance: 100; hyper's
/// server: 200, which Weft kept when it replaced hyper).
pub const DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS: u32 = 200;
/// How long an HTTP/2 PING may go unanswered before the connection is closed (Envoy's
/// `connection_keepalive.timeout` has no default; hyper's and gRPC's are 20 s).
pub const DEFAULT_HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// What a server allows its downstream connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Envoy's `request_headers_timeout`: the most time from a request head's first byte to its end (a
    /// client that sends a head slowly, "slowloris"); answered 408 and closed. Zero: none.
    pub request_headers_timeout: Duration,
    /// Envoy's `idle_timeout`: how long a connection may stay open with no request on it (HTTP/1.1
    /// between requests, HTTP/2 with no stream open); then it is closed (HTTP/2: GOAWAY first). Zero:
    /// none.
    pub idle_timeout: Duration,
    /// Envoy's `stream_idle_timeout`: how long a request may go with nothing happening on it, downstream
    /// or upstream (no body bytes read, none written, no answer); then it is answered 408 when nothing
    /// has been sent of its response yet, and ended otherwise. Zero: none.
    pub stream_idle_timeout: Duration,
    /// Connections the listener keeps open at once; one more is closed as soon as it is accepted (Envoy's
    /// listener connection limit; its `downstream_cx_overflow`).
    pub max_connections: usize,
    /// Envoy's `http2_protocol_options.max_concurrent_streams`: streams a client may have open at once
    /// on one HTTP/2 connection; more are refused (`REFUSED_STREAM`).
    pub http2_max_concurrent_streams: u32,
    /// Envoy's `connection_keepalive.interval`: an HTTP/2 connection that received nothing for this
    /// long is sent a PING. Zero: none (Envoy's default).
    pub http2_keepalive_interval: Duration,
    /// Envoy's `connection_keepalive.timeout`: a PING unanswered this long closes the connection.
    pub http2_keepalive_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            request_headers_timeout: DEFAULT_REQUEST_HEADERS_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            stream_idle_timeout: DEFAULT_STREAM_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            http2_max_concurrent_streams: DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS,
            http2_keepalive_interval: Duration::ZERO,
            http2_keepalive_timeout: DEFAULT_HTTP2_KEEPALIVE_TIMEOUT,
        }
    }
}

impl Limits {
    /// How often a connection looks at its timeouts: a quarter of the shortest inactivity timeout in
    /// force (for HTTP/2, its keepalive's too), so that one fires between its time and a quarter more.
    /// `None` when none is.
    pub(crate) fn tick(&self, http2: bool) -> Option<Duration> {
        let keepalive = http2 && !self.http2_keepalive_interval.is_zero();
        [
            self.idle_timeout,
            self.stream_idle_timeout,
            if keepalive {
                self.http2_keepalive_interval
            } else {
                Duration::ZERO
            },
            if keepalive {
                self.http2_keepalive_timeout
            } else {
                Duration::ZERO
            },
        ]
        .into_iter()
        .filter(|d| !d.is_zero())
        .min()
        .map(|d| (d / 4).max(Duration::from_millis(1)))
    }
}

/// What a connection is waiting for, for its watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waiting {
    /// The next request (HTTP/1.1 between requests; HTTP/2 with no stream open).
    Idle,
    /// The rest of a request head whose first bytes have arrived.
    Head,
    /// The downstream or the upstream, during a request.
    Stream,
}

/// Which timeout expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    Idle,
    Head,
    Stream,
}

/// One timer per connection for its timeouts.
///
/// Arming a timer for every request (a clock read and a re-registration each time) would cost every
/// request; hyper's 30 s header timer did, and showed in the profile of keep-alive load. The watchdog
/// instead wakes its connection once per tick (a quarter of the shortest timeout: 75 s by default) and
/// counts the ticks in a row with nothing happening: any wake of the connection that its timer did not
/// cause is something happening. A request pays for no clock read and no timer operation, only for
/// polling an armed timer when it has to wait. The price is precision: an inactivity timeout fires
/// between its time and a tick later. The head timeout, armed only while a head waits for its rest,
/// is exact.
pub(crate) struct Watchdog {
    /// The three timeouts it enforces, in milliseconds (0: none): a connection's future is copied
    /// whole several times over its life, so it carries these rather than the whole `Limits`.
    head_ms: u32,
    idle_ms: u32,
    stream_ms: u32,
    tick: Option<Duration>,
    /// Armed at the first wait, then always at the next tick or an earlier head deadline.
    sleep: Option<Pin<Box<Sleep>>>,
    next_tick: Option<Instant>,
    /// Ticks in a row in which nothing but the timer woke the connection.
    quiet: u32,
    /// Something woke the connection since the last tick.
    active: bool,
    /// When the head now waiting must be whole.
    head_deadline: Option<Instant>,
    /// The timer has been polled since it was last set: it will wake the connection, and until it has
    /// elapsed, looking at it is one atomic load.
    polled: bool,
}

impl Watchdog {
    pub(crate) fn new(limits: &Limits) -> Watchdog {
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        Watchdog {
            tick: limits.tick(false),
            head_ms: ms(limits.request_headers_timeout),
            idle_ms: ms(limits.idle_timeout),
            stream_ms: ms(limits.stream_idle_timeout),
            sleep: None,
            next_tick: None,
            quiet: 0,
            active: false,
            head_deadline: None,
            polled: false,
        }
    }

    /// The head that was waiting is whole: its deadline goes.
    pub(crate) fn head_done(&mut self) {
        self.head_deadline = None;
    }

    /// Called when the connection is about to wait for `waiting` (its other work is pending): ready with
    /// the timeout that expired, if one did; otherwise the connection is woken at the next tick or
    /// deadline. Every call that its timer did not cause counts as something happening.
    #[inline]
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>, waiting: Waiting) -> Poll<Expired> {
        // The usual call, once per wait of every request: the timer is armed and registered, and has not
        // fired.
        if self.polled && waiting != Waiting::Head {
            if let Some(s) = &self.sleep {
                if !s.is_elapsed() {
                    self.active = true;
                    return Poll::Pending;
                }
            }
        }
        self.poll_slow(cx, waiting)
    }

    #[inline(never)]
    fn poll_slow(&mut self, cx: &mut Context<'_>, waiting: Waiting) -> Poll<Expired> {
        let head_timeout = Duration::from_millis(u64::from(self.head_ms));
        let head = waiting == Waiting::Head && self.head_ms > 0;
        if self.tick.is_none() && !head {
            return Poll::Pending;
        }
        if head && self.head_deadline.is_none() {
            self.head_deadline = Some(Instant::now() + head_timeout);
        }
        let sleep = match &mut self.sleep {
            Some(s) => {
                if !s.is_elapsed() {
                    self.active = true;
                    if self.polled && !head {
                        return Poll::Pending;
                    }
                }
                s
            }
            None => {
                // The first wait: nothing else has happened yet but the connection itself.
                self.active = true;
                let first = match (self.tick, self.head_deadline.filter(|_| head)) {
                    (Some(t), Some(d)) => (Instant::now() + t).min(d),
                    (Some(t), None) => Instant::now() + t,
                    (None, Some(d)) => d,
                    (None, None) => return Poll::Pending,
                };
                self.next_tick = self.tick.map(|t| Instant::now() + t);
                self.sleep.insert(Box::pin(tokio::time::sleep_until(first)))
            }
        };
        if let Some(d) = self.head_deadline.filter(|_| head) {
            if d < sleep.deadline() {
                sleep.as_mut().reset(d);
            }
        }
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                self.polled = true;
                return Poll::Pending;
            }
            let now = Instant::now();
            if let Some(d) = self.head_deadline.filter(|_| head) {
                if now >= d {
                    return Poll::Ready(Expired::Head);
                }
            }
            match (self.tick, self.next_tick) {
                (Some(tick), Some(at)) if now >= at => {
                    if std::mem::take(&mut self.active) {
                        self.quiet = 0;
                    } else {
                        self.quiet = self.quiet.saturating_add(1);
                    }
                    self.next_tick = Some(now + tick);
                    let quiet_for = self.tick.unwrap_or_default().saturating_mul(self.quiet);
                    let timeout = match waiting {
                        Waiting::Idle => self.idle_ms,
                        Waiting::Stream | Waiting::Head => self.stream_ms,
                    };
                    let expired =
                        timeout > 0 && quiet_for >= Duration::from_millis(u64::from(timeout));
                    if expired {
                        return Poll::Ready(match waiting {
                            Waiting::Idle => Expired::Idle,
                            _ => Expired::Stream,
                        });
                    }
                }
                _ => {}
            }
            let next = match (self.next_tick, self.head_deadline.filter(|_| head)) {
                (Some(t), Some(d)) => t.min(d),
                (Some(t), None) => t,
                (None, Some(d)) => d,
                (None, None) => return Poll::Pending,
            };
            sleep.as_mut().reset(next);
        }
    }

    /// Ticks of quiet so far (tests).
    #[cfg(test)]
    pub(crate) fn quiet_ticks(&self) -> u32 {
        self.quiet
    }

    /// For how long it has seen nothing happen, in whole ticks (tests).
    #[cfg(test)]
    pub(crate) fn quiet_time(&self) -> Duration {
        self.tick.unwrap_or_default().saturating_mul(self.quiet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    fn limits(idle: u64, stream: u64, head: u64) -> Limits {
        Limits {
            idle_timeout: Duration::from_secs(idle),
            stream_idle_timeout: Duration::from_secs(stream),
            request_headers_timeout: Duration::from_secs(head),
            ..Limits::default()
        }
    }

    /// Waits as `waiting` until a timeout expires; the time it took.
    async fn wait(w: &mut Watchdog, waiting: Waiting) -> (Expired, Duration) {
        let start = Instant::now();
        let e = poll_fn(|cx| w.poll(cx, waiting)).await;
        (e, start.elapsed())
    }

    #[test]
    fn the_tick_is_a_quarter_of_the_shortest_timeout_in_force() {
        assert_eq!(
            Limits::default().tick(false),
            Some(Duration::from_secs(75)),
            "5 min / 4"
        );
        assert_eq!(limits(40, 0, 10).tick(false), Some(Duration::from_secs(10)));
        assert_eq!(limits(0, 0, 10).tick(false), None);
        let keepalive = Limits {
            http2_keepalive_interval: Duration::from_secs(30),
            ..Limits::default()
        };
        assert_eq!(keepalive.tick(false), Some(Duration::from_secs(75)));
        assert_eq!(
            keepalive.tick(true),
            Some(Duration::from_secs(5)),
            "20 s / 4"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_expires_between_its_timeout_and_a_tick_later() {
        let mut w = Watchdog::new(&limits(40, 0, 0));
        let (e, took) = wait(&mut w, Waiting::Idle).await;
        assert_eq!(e, Expired::Idle);
        // The first tick sees the wait begin (activity), then four quiet ticks of 10 s.
        assert_eq!(took, Duration::from_secs(50));
        assert!(took >= Duration::from_secs(40) && took <= Duration::from_secs(50));
        assert_eq!(w.quiet_time(), Duration::from_secs(40));
    }

    #[tokio::test(start_paused = true)]
    async fn activity_puts_the_timeout_off() {
        let mut w = Watchdog::new(&limits(40, 0, 0));
        let start = Instant::now();
        // Something happens every 15 s for a minute: no expiry, whatever the ticks see.
        for _ in 0..4 {
            let woke = tokio::time::timeout(
                Duration::from_secs(15),
                poll_fn(|cx| w.poll(cx, Waiting::Idle)),
            )
            .await;
            assert!(woke.is_err(), "expired while active");
            assert!(w.quiet_ticks() <= 1, "{}", w.quiet_ticks());
        }
        // Then quiet: it expires 40 to 50 s after the last activity.
        let (e, _) = wait(&mut w, Waiting::Idle).await;
        assert_eq!(e, Expired::Idle);
        let since_last = start.elapsed() - Duration::from_secs(60);
        assert!(
            since_last >= Duration::from_secs(40) && since_last <= Duration::from_secs(50),
            "{since_last:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_head_expires_at_its_deadline_exactly() {
        let mut w = Watchdog::new(&limits(3600, 300, 10));
        let (e, took) = wait(&mut w, Waiting::Head).await;
        assert_eq!((e, took), (Expired::Head, Duration::from_secs(10)));
        // The next head gets its own deadline once the last one is done with.
        w.head_done();
        let (e, took) = wait(&mut w, Waiting::Head).await;
        assert_eq!((e, took), (Expired::Head, Duration::from_secs(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_keeps_trickling_in_still_expires_at_its_deadline() {
        // Slowloris: a byte every second is activity, but the head's deadline does not move.
        let mut w = Watchdog::new(&limits(3600, 300, 10));
        let start = Instant::now();
        let e = loop {
            match tokio::time::timeout(
                Duration::from_secs(1),
                poll_fn(|cx| w.poll(cx, Waiting::Head)),
            )
            .await
            {
                Ok(e) => break e,
                Err(_) => continue,
            }
        };
        assert_eq!(
            (e, start.elapsed()),
            (Expired::Head, Duration::from_secs(10))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_stream_expires_after_the_stream_idle_timeout() {
        let mut w = Watchdog::new(&limits(3600, 300, 10));
        let (e, took) = wait(&mut w, Waiting::Stream).await;
        assert_eq!(e, Expired::Stream);
        assert!(
            took >= Duration::from_secs(300) && took <= Duration::from_secs(375),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_expires_when_every_timeout_is_off() {
        let mut w = Watchdog::new(&limits(0, 0, 0));
        for waiting in [Waiting::Idle, Waiting::Head, Waiting::Stream] {
            let r = tokio::time::timeout(
                Duration::from_secs(100_000),
                poll_fn(|cx| w.poll(cx, waiting)),
            )
            .await;
            assert!(r.is_err(), "{waiting:?}");
        }
    }
}
