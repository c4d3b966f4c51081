//! Opaque TCP, Envoy's `tcp_proxy`: every accepted connection goes to one endpoint of the listener's
//! cluster, and bytes are copied both ways until both sides have closed.
//!
//! The cluster is looked up in the current snapshot when a connection is accepted, so an LDS or EDS
//! change applies to the next connection without rebinding; a connection keeps the endpoint it got. A FIN
//! from one side is passed on as a FIN (a half-close), and the other direction carries on until it ends
//! too. One connect attempt per connection (Envoy's default): when it fails the downstream connection is
//! closed. Plaintext on both sides never enters the proxy's memory on Linux: see [`splice`].
//!
//! Mutual TLS, as for HTTP: an inbound listener whose filter chains say STRICT takes only a TLS
//! handshake with a client certificate from the mesh's roots, PERMISSIVE takes TLS or plaintext (told
//! apart by the first byte, peeked), DISABLE plaintext (see [`crate::tls::Inbound`]). The client's SPIFFE
//! ID goes to the network RBAC check and to the metrics. Towards the cluster, the connection is mutual
//! TLS to an endpoint as the HTTP path's would be (ISTIO_MUTUAL to every endpoint, auto mTLS to those
//! with a sidecar), the server's identity checked against the cluster's expected names. A side with TLS
//! is copied through a buffer ([`counted`]).
//!
//! Istio's TCP byte metrics are reported while a connection is open, as Istio's stats filter does: the
//! copy counts what it moves in two atomics of the connection's own, and every reporting interval (the
//! listener's `tcp_reporting_duration`, 15 s by default) what moved since the last report is added to
//! the connection's series; the rest is added when it closes.

mod counted;
#[cfg(target_os = "linux")]
mod splice;

use crate::config::cluster::Cluster;
use crate::config::listener::{Direction, RouteSource};
use crate::error::Flags;
use crate::telemetry::metrics::{PeerRef, Reporter, Security, TcpKey, TcpSeries};
use crate::telemetry::overrides::{self as ov, Custom, Overrides};
use crate::tls::Downstream;
use crate::Shared;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use weft_http::net::{Accepted, Listener};
use weft_http::tls::{ServerTls, TlsIo};

/// How long an inbound connection with TLS may take to send its first byte, which tells a TLS client
/// from a plaintext one: Envoy's default `listener_filters_timeout` for its TLS inspector. Past it,
/// PERMISSIVE goes on in plaintext (Istio sets `continue_on_listener_filters_timeout`, so a protocol
/// whose server speaks first still works) and STRICT closes.
pub const DETECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Accepts until `stop` turns true, then gives the open connections up to `drain` to finish and closes
/// the rest. A connection accepted while `max_connections` are open is closed at once. With `tls`, a
/// connection is mutual TLS (and plaintext too when it allows).
pub(crate) async fn serve(
    shared: Arc<Shared>,
    name: Arc<str>,
    listener: Listener,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
    max_connections: usize,
    tls: Option<ServerTls>,
) {
    let mut conns = JoinSet::new();
    let mut stopped = std::pin::pin!(crate::stopped(&mut stop));
    loop {
        while conns.try_join_next().is_some() {}
        let Some((stream, peer)) = weft_http::net::accept(&listener, stopped.as_mut(), &name).await
        else {
            break;
        };
        if conns.len() >= max_connections {
            tracing::debug!(listener = %name, peer = %peer, max = max_connections, "connection limit reached, closing");
            drop(stream);
            continue;
        }
        conns.spawn(forward(
            shared.clone(),
            name.clone(),
            stream,
            peer,
            tls.clone(),
        ));
    }
    drop(listener);
    tracing::info!(listener = %name, "TCP listener stopped, draining");
    let all = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(drain, all).await.is_err() {
        tracing::info!(listener = %name, "drain timeout, closing remaining TCP connections");
    }
}

/// One side of a connection: the socket, or TLS over it (boxed: a session is several KB).
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsIo>),
}

/// Where a connection goes: its cluster's name, one of its endpoints and the connect timeout.
struct Destination {
    cluster: Arc<str>,
    addr: SocketAddr,
    /// The endpoint's index in the cluster's set (outlier reports).
    index: usize,
    /// The cluster as the snapshot has it (its connect timeout, service and TLS settings).
    config: Arc<Cluster>,
    /// Whether the connection to `addr` is mutual TLS (the cluster's settings): to every endpoint, or
    /// (auto mTLS) to this one because it has a sidecar.
    tls: bool,
}

/// Why a connection has nowhere to go: the cluster's name when there is one, and Envoy's flag.
struct Nowhere {
    cluster: Option<Arc<str>>,
    flag: Flags,
}

/// Where a connection accepted on `listener` goes now.
fn destination(shared: &Shared, listener: &str) -> Result<Destination, Nowhere> {
    let snap = shared.snapshot.load();
    let cluster = match snap.listeners.get(listener).map(|l| &l.value.routes) {
        Some(RouteSource::Tcp(c)) => c.pick(fastrand::u64(..)).clone(),
        _ => {
            return Err(Nowhere {
                cluster: None,
                flag: Flags::NR,
            })
        }
    };
    let Some(c) = snap.clusters.get(&*cluster) else {
        return Err(Nowhere {
            cluster: Some(cluster),
            flag: Flags::NC,
        });
    };
    let p = &c.policy;
    // No request to hash on: a hashing balancer picks at random, as Envoy's does without a hash.
    match c
        .endpoints
        .choose(p.lb, c.table.as_deref(), None, p.outlier.as_deref())
    {
        Some(picked) => Ok(Destination {
            addr: picked.addr,
            index: picked.index,
            tls: matches!(&c.tls, Some((_, always)) if *always || picked.sidecar),
            config: c.clone(),
            cluster,
        }),
        None => Err(Nowhere {
            cluster: Some(cluster),
            flag: Flags::UH,
        }),
    }
}

/// Phase: TLS on an inbound connection whose listener has it. The first byte says whether the client
/// starts a handshake; a plaintext client is taken only when the listener allows it (PERMISSIVE).
/// `None`: refused or failed (logged), and closed.
async fn accept_tls(
    tcp: TcpStream,
    tls: &ServerTls,
    listener: &str,
    peer: SocketAddr,
) -> Option<(Stream, Option<Arc<str>>, Option<Arc<str>>)> {
    let mut first = [0u8; 1];
    // Peeked, not read: a plaintext connection goes on with every byte still in the socket.
    let handshake = match tokio::time::timeout(DETECT_TIMEOUT, tcp.peek(&mut first)).await {
        Ok(Ok(1)) => first[0] == weft_http::tls::HANDSHAKE_RECORD,
        // Closed or failed before a byte.
        Ok(_) => return None,
        Err(_) => false,
    };
    if !handshake {
        if tls.allow_plaintext {
            return Some((Stream::Plain(tcp), None, None));
        }
        // STRICT: closed without a byte, as Envoy's listener with no plaintext filter chain.
        tracing::debug!(listener, peer = %peer, "plaintext refused: the listener requires mutual TLS");
        return None;
    }
    match weft_http::tls::accept(bytes::Bytes::new(), tcp, tls).await {
        Ok(s) => {
            let client = s.peer();
            let principal = client
                .certificate
                .as_ref()
                .and_then(crate::tls::uri_san)
                .map(Arc::from);
            let sni = client.sni.map(Arc::from);
            Some((Stream::Tls(Box::new(s)), principal, sni))
        }
        Err(e) => {
            tracing::debug!(listener, peer = %peer, error = %e, "TLS refused");
            None
        }
    }
}

/// One connection, from connect to both closes.
async fn forward(
    shared: Arc<Shared>,
    listener: Arc<str>,
    down: Accepted,
    peer: SocketAddr,
    tls: Option<ServerTls>,
) {
    // Copied both ways until both close: it waits on its socket from the start.
    let tcp = match down.into_registered() {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(listener = %listener, error = %e, "cannot register the connection");
            return;
        }
    };
    let (inbound, stats, local, every, (rbac, ext_authz)) = shared
        .snapshot
        .load()
        .listeners
        .get(&*listener)
        .map(|l| {
            let l = &l.value;
            let stats = l.stats.clone().filter(|o| o.touches_tcp());
            let every = Some(l.tcp_reporting);
            let inbound = l.direction == Direction::Inbound;
            let authz = (l.rbac.clone(), l.ext_authz.clone());
            (inbound, stats, l.address, every, authz)
        })
        .unwrap_or_default();
    let local = tcp.local_addr().ok().or(local);
    // Phase: TLS, when the listener has it (its mode at bind time).
    let (mut down, principal, sni) = match &tls {
        None => (Stream::Plain(tcp), None, None),
        Some(tls) => match accept_tls(tcp, tls, &listener, peer).await {
            Some(accepted) => accepted,
            None => return,
        },
    };
    let mtls = matches!(down, Stream::Tls(_));
    let mut client = Downstream {
        peer,
        local,
        principal,
        sni,
        security: Security::default(),
    };
    // The server's report: the client's identity from its certificate, this proxy's own.
    if let (Some(t), true) = (&shared.telemetry, inbound && mtls) {
        client.security = t.security(
            true,
            client.principal.as_deref(),
            crate::tls::own_id(shared.identity.as_ref()).as_deref(),
        );
    }
    let conn = Conn {
        inbound,
        stats,
        peer,
        local,
        security: client.security.clone(),
    };
    // Phase: the network RBAC filters, on the connection as it is accepted (after its handshake: the
    // peer's identity is a principal); denied, it is closed at once and goes nowhere (Envoy's `RBAC`
    // flag).
    // Phase: the network ext_authz filter (a CUSTOM policy's gRPC authorizer), for a connection its
    // marking rules match, before the RBAC filters; denied, it is closed at once (Envoy's `UAEX`).
    if let Some(ext) = &ext_authz {
        let peer = crate::ext_authz::Peer {
            source: client.peer,
            destination: client.local.unwrap_or(client.peer),
            principal: client.principal.clone(),
            sni: client.sni.clone(),
        };
        if ext.applies(&peer.subject(None), None)
            && !Box::pin(ext.check_connection(&shared, &peer)).await
        {
            access(&listener, &client, None, None, (0, 0), Flags::UAEX);
            Tally::open(&shared, conn, None, None, None).close(Flags::UAEX, (0, 0));
            return;
        }
    }
    if let Some(rbac) = &rbac {
        if !crate::authz::allows_connection(rbac, &listener, &client) {
            access(&listener, &client, None, None, (0, 0), Flags::RBAC);
            Tally::open(&shared, conn, None, None, None).close(Flags::RBAC, (0, 0));
            return;
        }
    }
    let Destination {
        cluster,
        addr,
        index,
        config,
        tls: upstream_tls,
    } = match destination(&shared, &listener) {
        Ok(d) => d,
        Err(n) => {
            access(
                &listener,
                &client,
                n.cluster.as_deref(),
                None,
                (0, 0),
                n.flag,
            );
            Tally::open(&shared, conn, None, n.cluster.as_deref(), None).close(n.flag, (0, 0));
            return;
        }
    };
    // Phase: the cluster's circuit breaker (`max_connections`); over it, closed at once (`UO`).
    let _slot = match config.policy.limits.as_deref() {
        None => None,
        Some(l) => match l.tcp_connection() {
            Some(slot) => Some(slot),
            None => {
                access(&listener, &client, Some(&cluster), None, (0, 0), Flags::UO);
                Tally::open(&shared, conn, None, Some(&cluster), None).close(Flags::UO, (0, 0));
                return;
            }
        },
    };
    let connect_timeout = config.connect_timeout;
    let service = config.service.clone();
    // The connection's one timer: the connect timeout, then moved on to the reports (`copy_reporting`).
    // A timer joins tokio's timer wheel under the driver's lock when first polled and leaves it the
    // same way when dropped; moving it later while it waits is a compare-and-swap. So reports while
    // open cost a short connection no lock beyond the connect timeout it always had.
    let mut timer = std::pin::pin!(Some(tokio::time::sleep(connect_timeout)));
    // The connect first, as `tokio::time::timeout` polls it: an immediate connect never arms the timer.
    // Cancellation: losing to the timer drops the connect attempt, which is the timeout.
    let connected = tokio::select! {
        biased;
        r = TcpStream::connect(addr) => r,
        () = fired(timer.as_mut()) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("connect timed out after {connect_timeout:?}"),
        )),
    };
    // Then mutual TLS, when the cluster speaks it to this endpoint (under the handshake's own timeout).
    let upstream = match (connected, &config.tls) {
        (Ok(s), Some((settings, _))) if upstream_tls => {
            let _ = s.set_nodelay(true);
            weft_http::tls::connect(s, settings)
                .await
                .map(|t| Stream::Tls(Box::new(t)))
        }
        (r, _) => r.map(|s| {
            let _ = s.set_nodelay(true);
            Stream::Plain(s)
        }),
    };
    // Outlier detection: a failed connect (or handshake) is a local-origin failure, a connect a success.
    if let Some(cfg) = config.policy.outlier.as_deref() {
        use crate::balance::outlier::Outcome;
        let outcome = match &upstream {
            Ok(_) => Outcome::Response(200),
            Err(_) => Outcome::LocalFailure,
        };
        config.endpoints.report(index, outcome, cfg);
    }
    let mut up = match upstream {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(listener = %listener, endpoint = %addr, error = %e, "upstream connect failed");
            access(
                &listener,
                &client,
                Some(&cluster),
                Some(addr),
                (0, 0),
                Flags::UF,
            );
            Tally::open(&shared, conn, service, Some(&cluster), Some(addr))
                .close(Flags::UF, (0, 0));
            return;
        }
    };
    // The client's report: the server's identity from its certificate, this proxy's own.
    let conn = match (&up, &shared.telemetry) {
        (Stream::Tls(t), Some(telemetry)) if !inbound => {
            let server = t.peer().certificate.as_ref().and_then(crate::tls::uri_san);
            let own = crate::tls::own_id(shared.identity.as_ref());
            Conn {
                security: telemetry.security(true, server.as_deref(), own.as_deref()),
                ..conn
            }
        }
        _ => conn,
    };
    let mut tally = Tally::open(&shared, conn, service, Some(&cluster), Some(addr));
    let moved = Moved::default();
    let every = every.filter(|_| tally.reports());
    if every.is_none() {
        // Nothing to add while open: the timer goes now, as the connect timeout's did.
        timer.set(None);
    }
    let copying = copy(&mut down, &mut up, &moved);
    let ended = copy_reporting(copying, &moved, &mut tally, timer.as_mut(), every).await;
    let bytes = moved.load();
    let flags = match ended {
        Ok(()) => Flags::default(),
        Err(e) => {
            // A reset on either side ends both: dropping the sockets closes them.
            tracing::debug!(listener = %listener, endpoint = %addr, error = %e, "TCP connection ended with error");
            Flags::UC
        }
    };
    access(&listener, &client, Some(&cluster), Some(addr), bytes, flags);
    tally.close(flags, bytes);
}

/// Runs `copying` to its end and, every `every` until then, adds what it has `moved` since the last
/// time to the connection's series (`None`: only at close). `timer` is the connection's one timer,
/// armed or not by the connect.
async fn copy_reporting(
    copying: impl std::future::Future<Output = std::io::Result<()>>,
    moved: &Moved,
    tally: &mut Tally,
    mut timer: Pin<&mut Option<Sleep>>,
    every: Option<Duration>,
) -> std::io::Result<()> {
    let mut copying = std::pin::pin!(copying);
    let Some(every) = every else {
        return copying.await;
    };
    loop {
        // Later than the connect timeout's deadline, a waiting timer moves without the driver's lock;
        // one that has fired, or was never polled, registers again.
        match Instant::now().checked_add(every) {
            Some(at) => {
                if let Some(t) = timer.as_mut().as_pin_mut() {
                    t.reset(at);
                }
            }
            // Past the clock's end: reported at close only.
            None => timer.set(None),
        }
        tokio::select! {
            biased;
            // Cancellation: the copy is polled by reference, so a report between two polls loses
            // nothing; the end comes first when both are ready, and close adds the rest.
            ended = &mut copying => return ended,
            () = fired(timer.as_mut()) => tally.report(moved),
        }
    }
}

/// Waits until `timer` fires; forever when there is none.
async fn fired(timer: Pin<&mut Option<Sleep>>) {
    match timer.as_pin_mut() {
        Some(t) => t.await,
        None => std::future::pending().await,
    }
}

/// What a connection's metrics need to know of it when it is accepted.
struct Conn {
    inbound: bool,
    /// The listener's metric overrides, when they change a TCP metric.
    stats: Option<Arc<Overrides>>,
    /// The client.
    peer: SocketAddr,
    /// The listener's address.
    local: Option<SocketAddr>,
    /// Its TLS, as the labels say it: the downstream's on an inbound listener, the upstream's on an
    /// outbound one.
    security: Security,
}

/// The bytes a connection has moved each way so far, counted by the copy as it writes them and read
/// by its reports and at close. Each is a counter read on its own, so `Relaxed`; atomics (not cells)
/// because the copy and the reports are two borrows in one `Send` future.
#[derive(Debug, Default)]
struct Moved {
    /// From the client to the endpoint: Istio's received bytes.
    to_upstream: AtomicU64,
    /// From the endpoint to the client: Istio's sent bytes.
    to_downstream: AtomicU64,
}

impl Moved {
    /// `(to upstream, to downstream)` so far.
    fn load(&self) -> (u64, u64) {
        (
            self.to_upstream.load(Ordering::Relaxed),
            self.to_downstream.load(Ordering::Relaxed),
        )
    }
}

/// A connection's TCP metrics: opened when accepted, its bytes added while it is open (to the series
/// without flags) and the rest with its flags when it closes.
/// Plaintext TCP carries no metadata exchange (Istio's needs mutual TLS), so the peer is `unknown`.
/// On a listener with metric overrides, the tag expressions are evaluated once, when the connection
/// has its destination, and the connection's series is the custom one of those values.
struct Tally {
    telemetry: Option<Arc<crate::telemetry::Telemetry>>,
    reporter: Reporter,
    /// The connection's TLS, as its labels say it.
    security: Security,
    service: Option<Arc<crate::telemetry::Service>>,
    custom: Option<Custom<TcpKey>>,
    /// The series while the connection is open (no flags yet), found when it opened.
    open: Option<Arc<TcpSeries>>,
    /// The bytes already added to a series, `(to upstream, to downstream)`.
    reported: (u64, u64),
}

impl Tally {
    fn open(
        shared: &Shared,
        conn: Conn,
        service: Option<Arc<crate::telemetry::Service>>,
        cluster: Option<&str>,
        upstream: Option<SocketAddr>,
    ) -> Tally {
        let mut t = Tally {
            telemetry: shared.telemetry.clone(),
            reporter: if conn.inbound {
                Reporter::Destination
            } else {
                Reporter::Source
            },
            security: conn.security,
            service,
            custom: None,
            open: None,
            reported: (0, 0),
        };
        if let (Some(o), Some(key)) = (conn.stats, t.key(Flags::default())) {
            t.custom = Some(ov::tcp_key(
                key, o, cluster, upstream, conn.peer, conn.local,
            ));
        }
        t.open = t.series(Flags::default());
        if let Some(s) = t.open.as_ref().filter(|_| !t.drops(ov::TCP_OPENED)) {
            s.opened.fetch_add(1, Ordering::Relaxed);
        }
        t
    }

    fn key(&self, flags: Flags) -> Option<TcpKey> {
        let t = self.telemetry.as_ref()?;
        Some(TcpKey {
            reporter: self.reporter,
            peer: PeerRef(t.unknown_peer()),
            security: self.security.clone(),
            service: self.service.clone().unwrap_or_else(|| t.unknown_service()),
            flags,
        })
    }

    /// The connection's series for `flags`; `None` when no TCP metric is recorded (all dropped) or
    /// past the bound.
    fn series(&self, flags: Flags) -> Option<Arc<TcpSeries>> {
        let t = self.telemetry.as_ref()?;
        let key = self.key(flags)?;
        match &self.custom {
            None => t.metrics.tcp(key),
            Some(c) if c.overrides().drops_all_tcp() => None,
            Some(c) => t.metrics.tcp_custom(&c.with_key(key)),
        }
    }

    /// Whether the overrides drop `metric`.
    fn drops(&self, metric: ov::Metric) -> bool {
        self.custom.as_ref().is_some_and(|c| c.drops(metric))
    }

    /// Whether reports while open would add anything: the connection has a series and keeps a byte
    /// metric.
    fn reports(&self) -> bool {
        self.open.is_some() && !(self.drops(ov::TCP_RECEIVED) && self.drops(ov::TCP_SENT))
    }

    /// Adds what the connection has `moved` since the last report to its series.
    fn report(&mut self, moved: &Moved) {
        if let Some(s) = &self.open {
            self.reported = self.add_bytes(s, moved.load());
        }
    }

    /// Adds to `s` the part of `total` (`(to upstream, to downstream)` so far) not yet reported,
    /// leaving out dropped metrics; returns `total`, now reported.
    fn add_bytes(&self, s: &TcpSeries, total: (u64, u64)) -> (u64, u64) {
        let received = total.0.saturating_sub(self.reported.0);
        if received > 0 && !self.drops(ov::TCP_RECEIVED) {
            s.received.fetch_add(received, Ordering::Relaxed);
        }
        let sent = total.1.saturating_sub(self.reported.1);
        if sent > 0 && !self.drops(ov::TCP_SENT) {
            s.sent.fetch_add(sent, Ordering::Relaxed);
        }
        total
    }

    /// Closes the connection with `flags`, after it moved `total`: `(to upstream, to downstream)`,
    /// received from the client and sent to it. The bytes go in before the close is counted.
    fn close(self, flags: Flags, total: (u64, u64)) {
        let other;
        let series = if flags == Flags::default() {
            self.open.as_deref()
        } else {
            other = self.series(flags);
            other.as_deref()
        };
        let Some(s) = series else {
            return;
        };
        self.add_bytes(s, total);
        if !self.drops(ov::TCP_CLOSED) {
            s.closed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Copies both ways until both sides have ended, counting into `moved` as it goes: `splice(2)` on
/// Linux, a buffer per direction elsewhere.
///
/// Measured with the benchmark's tcp-stream workload (16 KiB writes, 4 connections, one worker),
/// interleaved: one hop moved 3,499 and 3,473 MB per CPU-second with `splice`, 2,004 and 2,014 with
/// tokio's `copy_bidirectional` (16 KiB buffers); two hops 1,599 and 1,423 against 1,009 and 1,014.
/// With TLS on either side, the bytes go through rustls, so through a buffer ([`counted`]).
async fn copy(down: &mut Stream, up: &mut Stream, moved: &Moved) -> std::io::Result<()> {
    let (to_up, to_down) = (&moved.to_upstream, &moved.to_downstream);
    match (down, up) {
        #[cfg(target_os = "linux")]
        (Stream::Plain(d), Stream::Plain(u)) => splice::bidirectional(d, u, to_up, to_down).await,
        #[cfg(not(target_os = "linux"))]
        (Stream::Plain(d), Stream::Plain(u)) => counted::bidirectional(d, u, to_up, to_down).await,
        (Stream::Plain(d), Stream::Tls(u)) => {
            counted::bidirectional(d, &mut **u, to_up, to_down).await
        }
        (Stream::Tls(d), Stream::Plain(u)) => {
            counted::bidirectional(&mut **d, u, to_up, to_down).await
        }
        (Stream::Tls(d), Stream::Tls(u)) => {
            counted::bidirectional(&mut **d, &mut **u, to_up, to_down).await
        }
    }
}

/// The access line of a TCP connection (target `access`, as HTTP requests'), with Envoy's flags.
/// The client's SPIFFE ID is there when it came over mutual TLS (`-` otherwise).
fn access(
    listener: &str,
    client: &Downstream,
    cluster: Option<&str>,
    upstream: Option<SocketAddr>,
    (sent, received): (u64, u64),
    flags: Flags,
) {
    tracing::debug!(
        target: "access",
        listener,
        peer = %client.peer,
        peer_principal = client.principal.as_deref().unwrap_or("-"),
        cluster = cluster.unwrap_or("-"),
        upstream = ?upstream,
        bytes_to_upstream = sent,
        bytes_to_downstream = received,
        flags = %flags,
        "tcp connection"
    );
}

/// A connected pair of loopback sockets, for the copies' tests.
#[cfg(test)]
async fn test_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let a = tokio::net::TcpStream::connect(l.local_addr().expect("addr"));
    let (a, b) = tokio::join!(a, l.accept());
    (a.expect("connect"), b.expect("accept").0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Telemetry;
    use tokio::sync::oneshot;

    fn shared() -> Arc<Shared> {
        let id = weft_xds::node::ProxyIdentity {
            workload: "productpage-v1".into(),
            namespace: "default".into(),
            ..Default::default()
        };
        Shared::with_telemetry(Some(Arc::new(Telemetry::new(&id, "Kubernetes"))))
    }

    /// An outbound connection's tally on a listener with `stats`, its series without flags and with
    /// `UC`.
    fn tally(
        shared: &Shared,
        stats: Option<Arc<Overrides>>,
    ) -> (Tally, Arc<TcpSeries>, Arc<TcpSeries>) {
        let conn = Conn {
            inbound: false,
            stats,
            peer: "127.0.0.1:5000".parse().expect("addr"),
            local: None,
            security: Security::default(),
        };
        let t = Tally::open(shared, conn, None, Some("c"), None);
        let ok = t.series(Flags::default()).expect("series");
        let uc = t.series(Flags::UC).expect("series");
        (t, ok, uc)
    }

    /// `(received, sent, opened, closed)` of `s`.
    fn read(s: &TcpSeries) -> (u64, u64, u64, u64) {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        (r(&s.received), r(&s.sent), r(&s.opened), r(&s.closed))
    }

    /// A copy that ends when the test says, with what it says.
    fn copy_ending() -> (
        oneshot::Sender<std::io::Result<()>>,
        impl std::future::Future<Output = std::io::Result<()>>,
    ) {
        let (tx, rx) = oneshot::channel();
        (tx, async move { rx.await.unwrap_or(Ok(())) })
    }

    /// Reports add what moved since the last one, once an interval has passed; the rest goes in at
    /// close, on the series of the close's flags: each byte counted once.
    #[tokio::test(start_paused = true)]
    async fn reports_add_each_interval_and_close_adds_the_rest() {
        let shared = shared();
        let (mut t, ok, uc) = tally(&shared, None);
        assert!(t.reports());
        let moved = Moved::default();
        let (end, copying) = copy_ending();
        let every = Duration::from_secs(15);
        let mut timer = std::pin::pin!(Some(tokio::time::sleep(Duration::from_secs(10))));
        let run = copy_reporting(copying, &moved, &mut t, timer.as_mut(), Some(every));
        let script = async {
            let step = |up: u64, down: u64| {
                moved.to_upstream.fetch_add(up, Ordering::Relaxed);
                moved.to_downstream.fetch_add(down, Ordering::Relaxed);
            };
            let half = every / 2;
            step(100, 40);
            tokio::time::sleep(half).await;
            assert_eq!(read(&ok), (0, 0, 1, 0), "before the first interval");
            tokio::time::sleep(half + Duration::from_millis(5)).await;
            assert_eq!(read(&ok), (100, 40, 1, 0), "one interval");
            step(7, 0);
            tokio::time::sleep(every).await;
            assert_eq!(read(&ok), (107, 40, 1, 0), "the next adds what moved since");
            tokio::time::sleep(every).await;
            assert_eq!(read(&ok), (107, 40, 1, 0), "nothing moved, nothing added");
            step(3, 2);
            let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
            end.send(Err(reset)).expect("copy waiting");
        };
        let (ended, ()) = tokio::join!(run, script);
        assert!(ended.is_err());
        t.close(Flags::UC, moved.load());
        assert_eq!(read(&ok), (107, 40, 1, 0), "reported while open");
        assert_eq!(read(&uc), (3, 2, 0, 1), "the rest, with the close");
    }

    /// Overrides hold while open: a dropped metric is never added; with both byte metrics dropped,
    /// nothing is reported while open and the timer is not kept.
    #[tokio::test(start_paused = true)]
    async fn reports_leave_dropped_metrics_out() {
        let shared = shared();
        let sent_dropped =
            ov::of_json(r#"{"metrics": [{"name": "tcp_sent_bytes_total", "drop": true}]}"#);
        let (mut t, ok, _) = tally(&shared, Some(sent_dropped));
        let moved = Moved::default();
        let (end, copying) = copy_ending();
        let every = Duration::from_secs(1);
        let mut timer = std::pin::pin!(Some(tokio::time::sleep(every)));
        let run = copy_reporting(copying, &moved, &mut t, timer.as_mut(), Some(every));
        let script = async {
            moved.to_upstream.fetch_add(10, Ordering::Relaxed);
            moved.to_downstream.fetch_add(20, Ordering::Relaxed);
            tokio::time::sleep(every * 3).await;
            assert_eq!(read(&ok), (10, 0, 1, 0));
            moved.to_upstream.fetch_add(1, Ordering::Relaxed);
            end.send(Ok(())).expect("copy waiting");
        };
        let (ended, ()) = tokio::join!(run, script);
        assert!(ended.is_ok());
        t.close(Flags::default(), moved.load());
        assert_eq!(read(&ok), (11, 0, 1, 1));

        let bytes_dropped = ov::of_json(
            r#"{"metrics": [{"name": "tcp_sent_bytes_total", "drop": true},
                {"name": "tcp_received_bytes_total", "drop": true}]}"#,
        );
        let (t, ok, _) = tally(&shared, Some(bytes_dropped));
        assert!(!t.reports(), "nothing to add while open");
        t.close(Flags::default(), (5, 5));
        assert_eq!(read(&ok), (0, 0, 1, 1));
    }
}
