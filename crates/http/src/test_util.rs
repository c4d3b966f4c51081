//! Helpers the crate's tests share: the one poll-until helper (`eventually`), what the kernel says of
//! a loopback connection (so that a test waits for the bytes or the close it needs rather than
//! sleeping), and a waker that counts its wakes.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};
use std::time::Duration;
use tokio::net::TcpStream;
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

/// One IPv4 TCP socket as Linux lists it in `/proc/net/tcp`.
#[derive(Debug, Clone, Copy)]
struct Row {
    local: SocketAddr,
    remote: SocketAddr,
    /// `TCP_ESTABLISHED` is 1 (include/net/tcp_states.h).
    state: u8,
    /// Bytes written and not yet acknowledged by the peer's kernel.
    tx_queue: u32,
    /// Bytes received and not yet read by the application.
    rx_queue: u32,
}

const ESTABLISHED: u8 = 1;

/// Every IPv4 TCP socket of the network namespace, or `None` where there is no `/proc/net/tcp` (not
/// Linux).
fn rows() -> Option<Vec<Row>> {
    let text = std::fs::read_to_string("/proc/net/tcp").ok()?;
    // `0100007F:1F90`: the address's four bytes as the kernel holds them (network order), printed as a
    // native-endian `u32`; the port in host order.
    let addr = |s: &str| -> Option<SocketAddr> {
        let (ip, port) = s.split_once(':')?;
        let ip = u32::from_str_radix(ip, 16).ok()?.to_ne_bytes();
        let port = u16::from_str_radix(port, 16).ok()?;
        Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
    };
    let rows = text.lines().skip(1).filter_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (tx, rx) = f.get(4)?.split_once(':')?;
        Some(Row {
            local: addr(f.get(1)?)?,
            remote: addr(f.get(2)?)?,
            state: u8::from_str_radix(f.get(3)?, 16).ok()?,
            tx_queue: u32::from_str_radix(tx, 16).ok()?,
            rx_queue: u32::from_str_radix(rx, 16).ok()?,
        })
    });
    Some(rows.collect())
}

/// Whether every byte written on `stream` (a loopback connection) has been read by the process at the
/// other end: the peer's kernel acknowledged all of it, and the peer socket's receive queue is empty. A
/// peer socket that is gone has read all it ever will. Where the kernel's table cannot be read (not
/// Linux), true: the callers then lose the guarantee, not their meaning.
pub(crate) fn read_by_peer(stream: &TcpStream) -> bool {
    let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) else {
        return true;
    };
    let Some(rows) = rows() else {
        return true;
    };
    let mine = rows.iter().find(|r| r.local == local && r.remote == peer);
    let theirs = rows.iter().find(|r| r.local == peer && r.remote == local);
    mine.is_none_or(|r| r.tx_queue == 0) && theirs.is_none_or(|r| r.rx_queue == 0)
}

/// Whether the peer's close (its FIN) has reached `stream`, after any bytes it sent before it.
pub(crate) fn close_reached(stream: &TcpStream) -> bool {
    let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) else {
        return true;
    };
    rows().is_none_or(|rows| {
        rows.iter()
            .find(|r| r.local == local && r.remote == peer)
            .is_none_or(|r| r.state != ESTABLISHED)
    })
}

/// Whether every connection of this host to `remote` has been closed by `remote`'s side (none is still
/// established: each has had the FIN, or is gone). For connections a test does not hold, such as a
/// pool's.
pub(crate) fn closed_by(remote: SocketAddr) -> bool {
    rows().is_none_or(|rows| {
        rows.iter()
            .filter(|r| r.remote == remote)
            .all(|r| r.state != ESTABLISHED)
    })
}

/// A waker that counts how often it was woken, for futures a test polls by hand.
#[derive(Default)]
pub(crate) struct WakeCount(AtomicUsize);

impl WakeCount {
    /// A new counter and a waker that adds to it.
    pub(crate) fn new() -> (Arc<WakeCount>, Waker) {
        let count = Arc::new(WakeCount::default());
        let waker = Waker::from(count.clone());
        (count, waker)
    }

    /// Wakes so far.
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Wake for WakeCount {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}
