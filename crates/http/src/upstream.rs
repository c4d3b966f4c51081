//! Upstream connections.
//!
//! HTTP/1.1 runs on Weft's own client (`h1`) and pool, keyed by endpoint address: a request pops an idle
//! connection of the endpoint it was given (or connects, with `TCP_NODELAY` and the cluster's connect
//! timeout), sends on it, and the connection goes back on the endpoint's idle stack only once the
//! response body has been read to its end. A connection is thus never shared by two requests, and one
//! whose body was abandoned, or that failed or closed, is dropped rather than reused. No task runs for a
//! connection: the request's future and then its response body drive it, so an idle connection that the
//! upstream closed is found out when it is taken (a readable socket is checked with one `recv`), and a
//! request that meets a close the check could not see (the upstream closed it as the request went out)
//! is sent again on another connection when it is idempotent and its body was held whole, as browsers
//! and Go's client do. The pool lock guards a push or a pop and is never held across an await.
//!
//! HTTP/2 prior knowledge (h2c, used for gRPC and HTTP/2 downstreams) runs on one connection per endpoint
//! (Weft's own HTTP/2 client, see `h2::client`), shared by every request to that endpoint (streams are
//! multiplexed on it). Only one connect per endpoint is in flight at a time: requests that arrive while it
//! is under way wait for its outcome. A connection that closes (GOAWAY, reset, the upstream went away) is
//! replaced on the next request; one unused for `POOL_IDLE_TIMEOUT` is dropped by the sweeper, and the
//! client then ends it with its last stream.

use super::h1;
use super::Body;
use crate::tls::ClientTls;
use bytes::Bytes;
use http::{Request, Response};
use std::collections::HashMap;
use std::future::poll_fn;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// What tells pooled connections apart: the endpoint, and the TLS settings they were made with
/// ([`ClientTls::id`], 0 for plaintext). Two connections with equal keys are interchangeable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    /// The endpoint's address.
    pub addr: SocketAddr,
    /// The TLS settings' id; 0 is plaintext.
    pub tls: u32,
}

impl Key {
    fn of(addr: SocketAddr, tls: Option<&ClientTls>) -> Key {
        Key {
            addr,
            tls: tls.map_or(0, |t| t.id),
        }
    }
}

/// How long an idle pooled connection is kept at least (HTTP/1.1: since its last response; HTTP/2: since
/// its last request); the sweep closes it within `POOL_SWEEP_INTERVAL` after that.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the pools are swept for connections idle past `POOL_IDLE_TIMEOUT`.
const POOL_SWEEP_INTERVAL: Duration = Duration::from_secs(15);
/// Sweeps a connection stays idle before the next sweep closes it.
const IDLE_SWEEPS: u32 = (POOL_IDLE_TIMEOUT.as_secs() / POOL_SWEEP_INTERVAL.as_secs()) as u32;

/// The pools' clock: the number of sweeps so far. Stamping a connection with it is an atomic load, where
/// `Instant::now()` was two clock reads on every request.
#[derive(Default)]
struct Ticks(AtomicU32);

impl Ticks {
    fn now(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    /// Moves the clock on by one sweep and returns the new time.
    fn advance(&self) -> u32 {
        self.0.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
    }
}

/// Whether a connection stamped `since` has been idle too long at sweep `now`.
fn idle_too_long(now: u32, since: u32) -> bool {
    now.wrapping_sub(since) > IDLE_SWEEPS
}

/// A pool the sweeper cleans.
trait Sweep: Send + Sync + 'static {
    /// Advances the pool's clock and drops the connections idle too long (and closed ones).
    fn sweep_once(&self);
}

/// Sweeps `pool` every `POOL_SWEEP_INTERVAL` until it is dropped.
async fn sweeper<P: Sweep>(pool: Weak<P>) {
    loop {
        tokio::time::sleep(POOL_SWEEP_INTERVAL).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        pool.sweep_once();
    }
}

/// Why talking to an upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The TCP connect failed (refused, unreachable, …).
    #[error("TCP connect failed")]
    Connect(#[source] std::io::Error),
    /// The TCP connect did not finish within the cluster's connect timeout.
    #[error("TCP connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The TLS handshake failed (the peer's certificate was not trusted, or not the expected identity;
    /// the peer refused ours).
    #[error(transparent)]
    Tls(std::io::Error),
    /// HTTP/1.1: the exchange on the connection failed.
    #[error(transparent)]
    Http1(h1::Error),
    /// HTTP/2: the exchange on the connection failed.
    #[error(transparent)]
    Http2(super::h2::ClientError),
    /// HTTP/2: another request's connect to this endpoint failed while this one waited for it.
    #[error("TCP connect failed: {0}")]
    SharedConnect(String),
}

impl UpstreamError {
    /// Whether the upstream refused the stream unprocessed (HTTP/2 `REFUSED_STREAM`), which a route's
    /// `refused-stream` retry policy retries.
    pub fn is_refused_stream(&self) -> bool {
        matches!(
            self,
            UpstreamError::Http2(super::h2::ClientError::Reset(
                super::h2::Reason::REFUSED_STREAM
            ))
        )
    }
}

/// Whether a failure happened before the request could be sent (`UF`) or after (`UC`), or was the
/// downstream's.
#[derive(Debug)]
pub enum Failure {
    /// No connection could be made.
    Connect(UpstreamError),
    /// The connection failed or closed before a complete response head.
    Reset(UpstreamError),
    /// The request body, read from downstream as it was sent, broke (a malformed chunk, a client gone
    /// mid-body): the client's fault, not the upstream's, so it is neither retried nor counted against
    /// the upstream.
    RequestBody(UpstreamError),
}

impl Failure {
    /// An HTTP/1.1 exchange's error, with a broken request body told apart from the upstream's failures.
    fn h1(e: h1::Error) -> Failure {
        if matches!(e, h1::Error::RequestBody(_)) {
            Failure::RequestBody(UpstreamError::Http1(e))
        } else {
            Failure::Reset(UpstreamError::Http1(e))
        }
    }

    /// An HTTP/2 exchange's error, as `h1`.
    fn h2(e: super::h2::ClientError) -> Failure {
        if matches!(e, super::h2::ClientError::Body(_)) {
            Failure::RequestBody(UpstreamError::Http2(e))
        } else {
            Failure::Reset(UpstreamError::Http2(e))
        }
    }
}

/// The upstream side of the proxy: the HTTP/1.1 and HTTP/2 pools.
pub struct Upstream {
    h1: Arc<H1Pool>,
    h2: Arc<H2Pool>,
}

impl Default for Upstream {
    fn default() -> Self {
        Self::new()
    }
}

impl Upstream {
    /// No connections yet.
    pub fn new() -> Upstream {
        Upstream {
            h1: Arc::new(H1Pool::default()),
            h2: Arc::new(H2Pool::default()),
        }
    }

    /// Sends an HTTP/1.1 request (its head encoded, its body) to `addr` on an idle pooled connection, or
    /// on a new one.
    ///
    /// A plain function returning an `async move` block, not an `async fn`: the block captures the
    /// arguments once, where an `async fn` would hold them and their local copies side by side in every
    /// request's future.
    #[allow(clippy::manual_async_fn)] // on purpose, see above
    ///
    /// `max_requests`: the requests a connection carries before it is closed (a cluster's
    /// `max_requests_per_connection`; 0: no limit).
    #[allow(clippy::too_many_arguments)]
    pub fn send_h1<'a>(
        &'a self,
        addr: SocketAddr,
        tls: Option<&'a ClientTls>,
        connect_timeout: Duration,
        max_requests: u32,
        head: h1::Head,
        body: Body,
    ) -> impl std::future::Future<Output = Result<Response<Body>, Failure>> + Send + 'a {
        async move {
            let key = Key::of(addr, tls);
            let (mut conn, reused) = match self.h1.checkout(key) {
                Some(c) => (c, true),
                // Boxed: the connect's state is large and rarely needed, and every request's future
                // would otherwise carry (and copy) its size.
                None => (
                    Box::pin(connect_h1(&self.h1, key, tls, connect_timeout)).await?,
                    false,
                ),
            };
            conn.count_request(max_requests);
            match conn.send_head(&head, body, reused).await {
                Ok(resp) => Ok(resp),
                // The upstream closed a pooled connection (say, on its idle timeout) as the request
                // went out, and nothing came back: send it again. (Boxed, as rare.)
                Err(h1::ExchangeError {
                    stale: true,
                    replay: Some(replay),
                    error,
                }) => {
                    tracing::debug!(endpoint = %addr, %error, "pooled connection was closed by the upstream, sending again");
                    Box::pin(self.resend_h1(key, tls, connect_timeout, replay, head.is_head()))
                        .await
                }
                Err(e) => Err(Failure::h1(e.error)),
            }
        }
    }

    /// Sends again a request that met a stale pooled connection, on another (a stale one again costs a
    /// try; a new connection is never stale).
    async fn resend_h1(
        &self,
        key: Key,
        tls: Option<&ClientTls>,
        connect_timeout: Duration,
        mut replay: h1::Replay,
        head_only: bool,
    ) -> Result<Response<Body>, Failure> {
        for _ in 0..2 {
            let (conn, reused) = match self.h1.checkout(key) {
                Some(c) => (c, true),
                None => (
                    connect_h1(&self.h1, key, tls, connect_timeout).await?,
                    false,
                ),
            };
            match conn.resend(replay, head_only, reused).await {
                Ok(resp) => return Ok(resp),
                Err(h1::ExchangeError {
                    stale: true,
                    replay: Some(r),
                    ..
                }) => replay = r,
                Err(e) => return Err(Failure::h1(e.error)),
            }
        }
        let conn = connect_h1(&self.h1, key, tls, connect_timeout).await?;
        conn.resend(replay, head_only, false)
            .await
            .map_err(|e| Failure::h1(e.error))
    }

    /// Sends an HTTP/2 request (absolute URI: its authority becomes `:authority`) to `addr` on the
    /// endpoint's shared connection, or on a new one.
    /// (A plain function returning an `async move` block, as `send_h1`.)
    #[allow(clippy::manual_async_fn)] // on purpose, see `send_h1`
    ///
    /// `extra`: fields added after the request's, already encoded by [`encode_fields`].
    pub fn send_h2<'a>(
        &'a self,
        addr: SocketAddr,
        tls: Option<&'a ClientTls>,
        connect_timeout: Duration,
        req: Request<Body>,
        extra: &'a EncodedFields,
    ) -> impl std::future::Future<Output = Result<Response<Body>, Failure>> + Send + 'a {
        async move {
            let key = Key::of(addr, tls);
            let mut attempts = 0;
            let mut req = req;
            loop {
                let (conn, reused) = self.h2.checkout(key, tls, connect_timeout).await?;
                attempts += 1;
                let sent = match poll_fn(|cx| conn.conn.poll_ready(cx)).await {
                    Ok(()) => conn.conn.send(req, &extra.0),
                    Err(e) => Err(Box::new((e, req))),
                };
                match sent {
                    Ok(response) => {
                        return response.await.map_err(Failure::h2);
                    }
                    // Not sent: the shared connection failed, or the upstream said GOAWAY, before this
                    // request opened a stream (nothing reached the upstream, so it goes on a new
                    // connection), or another request took the last stream the upstream allows since
                    // this one saw room (it waits for the next).
                    Err(refused) => {
                        let (e, r) = *refused;
                        let closed = conn.is_closed();
                        if !e.is_unprocessed() || attempts >= 3 || (closed && !reused) {
                            return Err(Failure::Reset(UpstreamError::Http2(e)));
                        }
                        if closed {
                            tracing::debug!(endpoint = %addr, error = %e, "shared connection closed, reconnecting");
                            self.h2.forget(key);
                        }
                        req = r;
                    }
                }
            }
        }
    }

    /// Idle HTTP/1.1 connections to `addr` (tests).
    #[cfg(test)]
    fn idle_h1(&self, addr: SocketAddr) -> usize {
        self.h1.lock().get(&Key::of(addr, None)).map_or(0, Vec::len)
    }
}

/// Fields encoded once, in HPACK literals that leave the dynamic table alone, for [`Upstream::send_h2`]
/// to add to requests: a sidecar's own fields go on every request it sends, and inserting them into each
/// request's header map (a hash and a probe each, and often the map's growth) was 730 instructions a
/// request.
#[derive(Debug, Clone, Default)]
pub struct EncodedFields(Bytes);

impl EncodedFields {
    /// No fields.
    pub const EMPTY: EncodedFields = EncodedFields(Bytes::new());
}

/// Encodes `fields` for [`Upstream::send_h2`].
pub fn encode_fields<'a>(
    fields: impl IntoIterator<Item = (&'a http::HeaderName, &'a http::HeaderValue)>,
) -> EncodedFields {
    let mut out = bytes::BytesMut::new();
    for (name, value) in fields {
        crate::h2::hpack::encode_field(name, value, &mut out);
    }
    EncodedFields(out.freeze())
}

/// Connects to `addr` within `connect_timeout`, with `TCP_NODELAY`.
async fn connect_tcp(addr: SocketAddr, connect_timeout: Duration) -> Result<TcpStream, Failure> {
    let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(Failure::Connect(UpstreamError::Connect(e))),
        Err(_) => {
            return Err(Failure::Connect(UpstreamError::ConnectTimeout(
                connect_timeout,
            )))
        }
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Connects to `addr`, then does the TLS handshake when `tls` is given.
async fn connect_io(
    addr: SocketAddr,
    tls: Option<&ClientTls>,
    connect_timeout: Duration,
) -> Result<crate::net::Io, Failure> {
    let stream = connect_tcp(addr, connect_timeout).await?;
    match tls {
        None => Ok(crate::net::Io::Plain(stream)),
        Some(tls) => match crate::tls::connect(stream, tls).await {
            Ok(s) => Ok(crate::net::Io::Tls(Box::new(s))),
            Err(e) => Err(Failure::Connect(UpstreamError::Tls(e))),
        },
    }
}

/// Connects to the key's endpoint, for `pool`.
async fn connect_h1(
    pool: &Arc<H1Pool>,
    key: Key,
    tls: Option<&ClientTls>,
    connect_timeout: Duration,
) -> Result<h1::Conn, Failure> {
    let io = connect_io(key.addr, tls, connect_timeout).await?;
    Ok(h1::Conn::new(io, key, Arc::downgrade(pool)))
}

/// Idle HTTP/1.1 connections by endpoint, most recently used last.
#[derive(Default)]
pub(super) struct H1Pool {
    idle: Mutex<HashMap<Key, Vec<h1::Conn>, BuildHasherDefault<AddrHasher>>>,
    ticks: Ticks,
    sweeper: AtomicBool,
}

impl H1Pool {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Key, Vec<h1::Conn>, BuildHasherDefault<AddrHasher>>>
    {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used idle connection to `addr` that the upstream has not closed. (Ones idle
    /// too long are left to the sweep: a connection's idle time is only known to a sweep interval
    /// anyway.)
    pub(super) fn checkout(&self, key: Key) -> Option<h1::Conn> {
        loop {
            let mut conn = self.lock().get_mut(&key)?.pop()?;
            // Checked outside the lock: it may cost a system call.
            if conn.is_usable() {
                return Some(conn);
            }
        }
    }

    /// Idle connections to `addr` (tests).
    #[cfg(test)]
    pub(super) fn idle(&self, addr: SocketAddr) -> usize {
        self.lock().get(&Key::of(addr, None)).map_or(0, Vec::len)
    }

    /// Puts a connection whose exchange ended cleanly back for reuse.
    pub(super) fn checkin(self: &Arc<Self>, mut conn: h1::Conn) {
        conn.set_idle_since(self.ticks.now());
        self.lock().entry(conn.key()).or_default().push(conn);
        if !self.sweeper.swap(true, Ordering::Relaxed) {
            tokio::spawn(sweeper(Arc::downgrade(self)));
        }
    }
}

impl Sweep for H1Pool {
    fn sweep_once(&self) {
        let now = self.ticks.advance();
        // Drop the expired connections after releasing the lock.
        let mut expired = Vec::new();
        self.lock().retain(|_, stack| {
            // Most recently used last: everything below the first keeper has been idle longer.
            let keep_from = stack
                .iter()
                .position(|c| !idle_too_long(now, c.idle_since()))
                .unwrap_or(stack.len());
            expired.extend(stack.drain(..keep_from));
            !stack.is_empty()
        });
        drop(expired);
    }
}

/// The outcome a waiting request gets from the request that connects for it.
type Connected = Result<H2Conn, Failure>;

/// A shared HTTP/2 connection.
#[derive(Clone)]
struct H2Conn {
    conn: super::h2::Connection,
}

impl H2Conn {
    fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }
}

/// What the HTTP/2 pool holds for an endpoint.
enum H2Slot {
    /// A connection, and when a request last took it.
    Ready {
        conn: H2Conn,
        /// The pool's time (in sweeps) when a request last took it.
        used: u32,
    },
    /// A connect is under way; these requests wait for its outcome.
    Connecting(Vec<oneshot::Sender<Connected>>),
}

/// One HTTP/2 connection per endpoint, shared by all requests to it.
#[derive(Default)]
struct H2Pool {
    conns: Mutex<HashMap<Key, H2Slot, BuildHasherDefault<AddrHasher>>>,
    ticks: Ticks,
    sweeper: AtomicBool,
}

impl H2Pool {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Key, H2Slot, BuildHasherDefault<AddrHasher>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The endpoint's connection, and whether it served requests before this one; connects (or waits
    /// for the connect another request started) when there is none.
    async fn checkout(
        self: &Arc<Self>,
        key: Key,
        tls: Option<&ClientTls>,
        connect_timeout: Duration,
    ) -> Result<(H2Conn, bool), Failure> {
        loop {
            let waiting = {
                let mut conns = self.lock();
                match conns.get_mut(&key) {
                    Some(H2Slot::Ready { conn, used }) if !conn.is_closed() => {
                        *used = self.ticks.now();
                        return Ok((conn.clone(), true));
                    }
                    Some(H2Slot::Connecting(waiters)) => {
                        let (tx, rx) = oneshot::channel();
                        waiters.push(tx);
                        Some(rx)
                    }
                    // None, or a closed connection: this request connects.
                    _ => {
                        conns.insert(key, H2Slot::Connecting(Vec::new()));
                        None
                    }
                }
            };
            match waiting {
                // Boxed, as for HTTP/1.1: rare, and large.
                None => {
                    return Box::pin(self.connect(key, tls, connect_timeout))
                        .await
                        .map(|s| (s, false))
                }
                Some(rx) => match rx.await {
                    Ok(connected) => return connected.map(|s| (s, false)),
                    // The connecting request was cancelled before it finished: start over.
                    Err(_) => continue,
                },
            }
        }
    }

    /// Connects for the `Connecting` slot this request put in the pool, then fills it (or clears it on
    /// failure) and tells the requests that waited.
    async fn connect(
        self: &Arc<Self>,
        key: Key,
        tls: Option<&ClientTls>,
        connect_timeout: Duration,
    ) -> Result<H2Conn, Failure> {
        /// Clears the slot when the connecting request is dropped midway (a route timeout, a client that
        /// went away), so the waiters start over instead of waiting forever.
        struct Abandoned<'a> {
            pool: &'a H2Pool,
            key: Key,
            armed: bool,
        }
        impl Drop for Abandoned<'_> {
            fn drop(&mut self) {
                if self.armed {
                    let mut conns = self.pool.lock();
                    if matches!(conns.get(&self.key), Some(H2Slot::Connecting(_))) {
                        conns.remove(&self.key);
                    }
                }
            }
        }
        let mut abandoned = Abandoned {
            pool: self,
            key,
            armed: true,
        };
        let result = connect_h2(key.addr, tls, connect_timeout).await;
        abandoned.armed = false;
        let previous = {
            let mut conns = self.lock();
            match &result {
                Ok(conn) => conns.insert(
                    key,
                    H2Slot::Ready {
                        conn: conn.clone(),
                        used: self.ticks.now(),
                    },
                ),
                Err(_) => conns.remove(&key),
            }
        };
        if let Some(H2Slot::Connecting(waiters)) = previous {
            for w in waiters {
                let _ = w.send(match &result {
                    Ok(s) => Ok(s.clone()),
                    Err(f) => Err(f.for_waiter()),
                });
            }
        }
        if result.is_ok() && !self.sweeper.swap(true, Ordering::Relaxed) {
            tokio::spawn(sweeper(Arc::downgrade(self)));
        }
        result
    }

    /// Drops the endpoint's connection after it refused a request unsent, so the next request connects.
    fn forget(&self, key: Key) {
        let mut conns = self.lock();
        if matches!(conns.get(&key), Some(H2Slot::Ready { .. })) {
            conns.remove(&key);
        }
    }
}

impl Failure {
    /// The same failure for a request that waited on this one's connect.
    fn for_waiter(&self) -> Failure {
        match self {
            Failure::Connect(UpstreamError::Connect(e)) => Failure::Connect(
                UpstreamError::Connect(std::io::Error::new(e.kind(), e.to_string())),
            ),
            Failure::Connect(UpstreamError::ConnectTimeout(d)) => {
                Failure::Connect(UpstreamError::ConnectTimeout(*d))
            }
            Failure::Connect(e) | Failure::Reset(e) | Failure::RequestBody(e) => {
                Failure::Connect(UpstreamError::SharedConnect(e.to_string()))
            }
        }
    }
}

/// Connects to `addr`, does the HTTP/2 handshake and starts the connection's task.
async fn connect_h2(
    addr: SocketAddr,
    tls: Option<&ClientTls>,
    connect_timeout: Duration,
) -> Result<H2Conn, Failure> {
    let io = connect_io(addr, tls, connect_timeout).await?;
    let (conn, task) = super::h2::handshake(io);
    // Boxed: the connection's state is several KB, and tokio moves a task's future as it spawns it.
    tokio::spawn(Box::pin(async move {
        if let Err(e) = task.await {
            tracing::debug!(endpoint = %addr, error = %e, "upstream HTTP/2 connection ended with error");
        }
    }));
    Ok(H2Conn { conn })
}

/// Drops HTTP/2 connections no request took for `POOL_IDLE_TIMEOUT`, and closed ones. h2 closes a
/// dropped connection once its last stream ends.
impl Sweep for H2Pool {
    fn sweep_once(&self) {
        let now = self.ticks.advance();
        let mut expired = Vec::new();
        self.lock().retain(|_, slot| match slot {
            H2Slot::Ready { conn, used } => {
                let keep = !idle_too_long(now, *used) && !conn.is_closed();
                if !keep {
                    expired.push(conn.clone());
                }
                keep
            }
            H2Slot::Connecting(_) => true,
        });
        // The connections go after the lock is released.
        drop(expired);
    }
}

/// A small multiplicative hasher for endpoint addresses (`SipHash` costs more than the rest of a pool
/// lookup). The keys come from the control plane, not from clients, so flooding is not a concern.
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::eventually;
    use bytes::Bytes;
    use http_body::Frame;
    use http_body_util::BodyExt;
    use hyper::body::Incoming;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// What the scripted upstream does after each response.
    #[derive(Clone, Copy)]
    enum After {
        /// Keeps the connection for the next request.
        KeepAlive,
        /// Closes the connection without saying so.
        Close,
        /// Sends `Connection: close`, then closes.
        ConnectionClose,
    }

    /// A raw HTTP/1.1 upstream (requests without bodies) that counts the connections it accepts.
    async fn upstream(after: After) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let conns = Arc::new(AtomicUsize::new(0));
        let counted = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                            }
                        }
                        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0);
                        buf.drain(..end + 4);
                        let body = format!("conn {n}");
                        let close = match after {
                            After::ConnectionClose => "connection: close\r\n",
                            _ => "",
                        };
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{close}\r\n{body}",
                            body.len()
                        );
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                        if !matches!(after, After::KeepAlive) {
                            return;
                        }
                    }
                });
            }
        });
        (addr, conns)
    }

    /// `req` through the pool, as the request path sends it: head encoded, then sent.
    fn send(
        up: &Upstream,
        addr: SocketAddr,
        connect_timeout: Duration,
        req: Request<Body>,
    ) -> impl std::future::Future<Output = Result<Response<Body>, Failure>> + '_ {
        let (head, body) = h1::Head::of(req);
        up.send_h1(addr, None, connect_timeout, 0, head, body)
    }

    /// `GET /` through the pool; the body read to its end.
    async fn get(up: &Upstream, addr: SocketAddr) -> String {
        let mut req = Request::new(crate::full(""));
        *req.uri_mut() = http::Uri::from_static("/");
        req.headers_mut()
            .insert(http::header::HOST, http::HeaderValue::from_static("up"));
        let resp = send(up, addr, Duration::from_secs(1), req)
            .await
            .unwrap_or_else(|e| panic!("request to {addr}: {e:?}"));
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    }

    #[tokio::test]
    async fn sequential_requests_reuse_one_connection() {
        let (addr, conns) = upstream(After::KeepAlive).await;
        let up = Upstream::new();
        for _ in 0..5 {
            assert_eq!(get(&up, addr).await, "conn 1");
            assert_eq!(
                up.idle_h1(addr),
                1,
                "back in the pool once the body is read"
            );
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_requests_never_share_a_connection() {
        let (addr, conns) = upstream(After::KeepAlive).await;
        let up = Upstream::new();
        let mut req = Request::new(crate::full(""));
        *req.uri_mut() = http::Uri::from_static("/");
        let first = send(&up, addr, Duration::from_secs(1), req)
            .await
            .expect("first");
        // The first body is not read yet: its connection is taken, so the second request connects.
        assert_eq!(up.idle_h1(addr), 0);
        assert_eq!(get(&up, addr).await, "conn 2");
        drop(first);
        assert_eq!(
            up.idle_h1(addr),
            1,
            "an abandoned body does not return its connection"
        );
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_closed_connection_is_not_reused() {
        let (addr, conns) = upstream(After::Close).await;
        let up = Upstream::new();
        assert_eq!(get(&up, addr).await, "conn 1");
        // The upstream hung up after answering, without saying so. Whether the close has arrived
        // when the connection is taken (the check at checkout drops it) or only as the request goes
        // out (nothing comes back, and the GET is sent again), the request gets a new connection.
        for i in 2..=4 {
            assert_eq!(get(&up, addr).await, format!("conn {i}"));
        }
        // Waiting until the close is there: the check at checkout finds it.
        assert_eq!(get(&up, addr).await, "conn 5");
        eventually("the close to reach the pooled connection", || async {
            crate::test_util::closed_by(addr).then_some(())
        })
        .await;
        assert_eq!(up.idle_h1(addr), 1, "pooled, closed by the upstream since");
        assert_eq!(get(&up, addr).await, "conn 6");
        assert_eq!(conns.load(Ordering::SeqCst), 6);
    }

    #[tokio::test]
    async fn connection_close_from_the_upstream_is_honoured() {
        let (addr, conns) = upstream(After::ConnectionClose).await;
        let up = Upstream::new();
        // No waiting in between: the connection said it closes, so it is never handed out again.
        for i in 1..=3 {
            assert_eq!(get(&up, addr).await, format!("conn {i}"));
        }
        assert_eq!(conns.load(Ordering::SeqCst), 3);
    }

    /// An h2c upstream answering `conn N` (N counts its connections); `kill` closes every connection
    /// it has accepted so far.
    struct H2Upstream {
        addr: SocketAddr,
        conns: Arc<AtomicUsize>,
        tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    }

    impl H2Upstream {
        async fn start() -> H2Upstream {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let conns = Arc::new(AtomicUsize::new(0));
            let tasks = Arc::new(Mutex::new(Vec::new()));
            let (counted, spawned) = (conns.clone(), tasks.clone());
            tokio::spawn(async move {
                while let Ok((s, _)) = listener.accept().await {
                    let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                    let svc =
                        hyper::service::service_fn(move |req: Request<Incoming>| async move {
                            // The fields a caller added encoded (`x-added-*`), after the connection.
                            let added: String = req
                                .headers()
                                .iter()
                                .filter(|(k, _)| k.as_str().starts_with("x-added-"))
                                .map(|(k, v)| format!(" {k}={}", v.to_str().unwrap_or("?")))
                                .collect();
                            Ok::<_, std::convert::Infallible>(Response::new(crate::full(format!(
                                "conn {n}{added}"
                            ))))
                        });
                    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc);
                    let task = tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    spawned.lock().expect("tasks").push(task);
                }
            });
            H2Upstream { addr, conns, tasks }
        }

        fn kill(&self) {
            for t in self.tasks.lock().expect("tasks").drain(..) {
                t.abort();
            }
        }
    }

    /// `GET /` over HTTP/2 through the pool; the body read to its end.
    async fn get_h2(up: &Upstream, addr: SocketAddr) -> Result<String, Failure> {
        get_h2_with(up, addr, &EncodedFields::EMPTY).await
    }

    /// [`get_h2`] with fields added encoded.
    async fn get_h2_with(
        up: &Upstream,
        addr: SocketAddr,
        extra: &EncodedFields,
    ) -> Result<String, Failure> {
        let mut req = Request::new(crate::full(""));
        *req.uri_mut() = http::Uri::from_static("http://up/");
        *req.version_mut() = http::Version::HTTP_2;
        req.headers_mut()
            .insert("x-own", http::HeaderValue::from_static("kept"));
        let resp = up
            .send_h2(addr, None, Duration::from_secs(1), req, extra)
            .await?;
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn h2_requests_share_one_connection_even_when_they_start_together() {
        let upstream = H2Upstream::start().await;
        let up = Upstream::new();
        // All start before any connection exists: one connects, the others wait for it.
        let all = futures::future::join_all((0..8).map(|_| get_h2(&up, upstream.addr))).await;
        for r in all {
            assert_eq!(r.expect("request"), "conn 1");
        }
        assert_eq!(get_h2(&up, upstream.addr).await.expect("later"), "conn 1");
        assert_eq!(upstream.conns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn fields_encoded_once_reach_the_upstream_on_every_request() {
        let upstream = H2Upstream::start().await;
        let up = Upstream::new();
        let (a, b) = (
            http::HeaderName::from_static("x-added-a"),
            http::HeaderName::from_static("x-added-b"),
        );
        let (va, vb) = (
            http::HeaderValue::from_static("1"),
            http::HeaderValue::from_static("two"),
        );
        let extra = encode_fields([(&a, &va), (&b, &vb)]);
        // Several on one connection: the literals leave the upstream's table of fields as it was.
        for _ in 0..3 {
            assert_eq!(
                get_h2_with(&up, upstream.addr, &extra)
                    .await
                    .expect("request"),
                "conn 1 x-added-a=1 x-added-b=two"
            );
            assert_eq!(get_h2(&up, upstream.addr).await.expect("plain"), "conn 1");
        }
    }

    #[tokio::test]
    async fn a_closed_h2_connection_is_replaced() {
        let upstream = H2Upstream::start().await;
        let up = Upstream::new();
        assert_eq!(get_h2(&up, upstream.addr).await.expect("first"), "conn 1");
        upstream.kill();
        // Once the connection's task has seen the close, the next request gets a new connection.
        eventually("the shared connection to close", || async {
            let closed = up.h2.lock().values().all(|slot| match slot {
                H2Slot::Ready { conn, .. } => conn.is_closed(),
                H2Slot::Connecting(_) => false,
            });
            closed.then_some(())
        })
        .await;
        assert_eq!(get_h2(&up, upstream.addr).await.expect("second"), "conn 2");
        assert_eq!(get_h2(&up, upstream.addr).await.expect("third"), "conn 2");
        assert_eq!(upstream.conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn h2_connect_failure_reaches_every_waiting_request() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let up = Upstream::new();
        let all = futures::future::join_all((0..4).map(|_| get_h2(&up, closed))).await;
        for r in all {
            match r {
                Err(Failure::Connect(UpstreamError::Connect(e))) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused)
                }
                other => panic!("want a connect error, got {other:?}"),
            }
        }
        assert!(up.h2.lock().is_empty(), "a failed connect leaves no slot");
    }

    #[tokio::test]
    async fn an_abandoned_h2_connect_does_not_strand_its_waiters() {
        use futures::FutureExt;
        let upstream = H2Upstream::start().await;
        let up = Upstream::new();
        // The first request starts the connect (a new socket is never ready on its first poll)…
        let mut connecting = Box::pin(get_h2(&up, upstream.addr));
        assert!(connecting.as_mut().now_or_never().is_none());
        assert!(matches!(
            up.h2.lock().get(&Key::of(upstream.addr, None)),
            Some(H2Slot::Connecting(_))
        ));
        // …a second waits for it…
        let waiter = get_h2(&up, upstream.addr);
        tokio::pin!(waiter);
        assert!(waiter.as_mut().now_or_never().is_none());
        // …and the first goes away midway, as on a route timeout.
        drop(connecting);
        assert!(up.h2.lock().is_empty(), "the abandoned slot is cleared");
        let body = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("not stranded")
            .expect("connects itself");
        assert!(body.starts_with("conn "), "{body}");
    }

    #[tokio::test]
    async fn idle_connections_are_swept_after_the_idle_timeout_and_not_before() {
        let (addr, _) = upstream(After::KeepAlive).await;
        let h2 = H2Upstream::start().await;
        let up = Upstream::new();
        get(&up, addr).await;
        get_h2(&up, h2.addr).await.expect("h2");
        let h2_held = |up: &Upstream| up.h2.lock().contains_key(&Key::of(h2.addr, None));
        // Sweeps a connection survives idle: POOL_IDLE_TIMEOUT's worth of them.
        for i in 0..IDLE_SWEEPS {
            up.h1.sweep_once();
            up.h2.sweep_once();
            assert_eq!(up.idle_h1(addr), 1, "HTTP/1.1 kept after {} sweeps", i + 1);
            assert!(h2_held(&up), "HTTP/2 kept after {} sweeps", i + 1);
        }
        // Used again just before the next sweep: its idle time starts over.
        get(&up, addr).await;
        up.h1.sweep_once();
        up.h2.sweep_once();
        assert_eq!(up.idle_h1(addr), 1, "a reused connection is kept");
        assert!(
            !h2_held(&up),
            "an HTTP/2 connection idle too long is dropped"
        );
        for _ in 0..IDLE_SWEEPS {
            up.h1.sweep_once();
        }
        assert_eq!(up.idle_h1(addr), 0, "then dropped once idle too long");
    }

    /// An HTTP/1.1 upstream on hyper's server answering `BIG` bytes in 16 KiB chunks (chunked
    /// encoding); it counts its connections.
    async fn big_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let conns = Arc::new(AtomicUsize::new(0));
        let counted = conns.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let svc = hyper::service::service_fn(|_req: Request<Incoming>| async move {
                    let chunks = futures::stream::iter((0..BIG / CHUNK).map(|i| {
                        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![
                            (i % 251)
                                as u8;
                            CHUNK
                        ])))
                    }));
                    Ok::<_, std::convert::Infallible>(Response::new(
                        http_body_util::StreamBody::new(chunks),
                    ))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc),
                );
            }
        });
        (addr, conns)
    }

    const BIG: usize = 2 << 20;
    const CHUNK: usize = 16 << 10;

    #[tokio::test]
    async fn a_large_body_streams_with_backpressure_and_the_connection_is_reused() {
        let (addr, conns) = big_upstream().await;
        let up = Upstream::new();
        for round in 0..2 {
            // 2 MiB down, pushed by the upstream faster than it is read: the body drives the connection
            // with the reader's backpressure.
            let mut req = Request::new(crate::full(""));
            *req.uri_mut() = http::Uri::from_static("/big");
            req.headers_mut()
                .insert(http::header::HOST, http::HeaderValue::from_static("up"));
            let resp = send(&up, addr, Duration::from_secs(5), req)
                .await
                .expect("GET /big");
            let mut body = resp.into_body();
            let mut got = Vec::with_capacity(BIG);
            let read = async {
                while let Some(frame) = body.frame().await {
                    got.extend_from_slice(&frame.expect("frame").into_data().expect("data"));
                    tokio::task::yield_now().await;
                }
            };
            tokio::time::timeout(Duration::from_secs(10), read)
                .await
                .expect("the body is read to its end, not stalled");
            assert_eq!(got.len(), BIG, "round {round}");
            assert!(got
                .chunks(CHUNK)
                .enumerate()
                .all(|(i, c)| c.iter().all(|&b| b == (i % 251) as u8)));
        }
        assert_eq!(up.idle_h1(addr), 1, "one connection, back in the pool");
        assert_eq!(conns.load(Ordering::SeqCst), 1, "and it served both");
    }

    #[tokio::test]
    async fn connect_failure_is_a_connect_error() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let up = Upstream::new();
        let req = Request::new(crate::full(""));
        match send(&up, closed, Duration::from_secs(1), req).await {
            Err(Failure::Connect(UpstreamError::Connect(_))) => {}
            other => panic!("want a connect error, got {other:?}"),
        }
    }
}
