//! Listening sockets, and accepted connections that join tokio's reactor only once they have to wait.
//!
//! tokio's `TcpListener::accept` registers every accepted socket with epoll (`EPOLL_CTL_ADD`) before it is
//! read, and its `TcpStream` deregisters it (`EPOLL_CTL_DEL`) when dropped. The registration queues an
//! event at once (a new socket is writable), and the first read waits for that event even when the
//! request is already in the socket: a turn of the runtime's driver per connection, and two system calls.
//! A connection that sends its request and is answered and closed (`connection: close`, a health check,
//! the new-connection workload of `bench/`) never has to wait on its own socket: the request is there
//! when it is accepted and the response fits the socket's buffer.
//!
//! So an [`Accepted`] connection starts as a plain non-blocking socket, read and written directly, and is
//! registered with the reactor the first time a read or a write would block (a kept-alive connection
//! waiting for its next request, a request still on its way, a slow reader). Registering then loses no
//! wake-up: epoll reports a socket's readiness as of when it is added.

use bytes::BytesMut;
use std::future::Future;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

/// Pending connections the kernel queues for a listener (tokio's and mio's default).
const BACKLOG: u32 = 1024;
/// How long a connection on a listener that defers accepts may wait for its first bytes before it is
/// handed over without them (see `Listener::defer_accept`).
#[cfg(target_os = "linux")]
const DEFER_ACCEPT_SECS: libc::c_int = 1;

/// A listening TCP socket whose accepted connections are not registered with the reactor (see the
/// module's note).
#[derive(Debug)]
pub struct Listener {
    fd: AsyncFd<mio::net::TcpListener>,
}

/// Binds a TCP listener (`SO_REUSEADDR`, as `TcpListener::bind` does) with `TCP_NODELAY` set on it: on
/// Linux accepted connections inherit it, which saves a `setsockopt` per connection.
pub fn bind(addr: SocketAddr) -> io::Result<Listener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    Listener::try_from(socket.listen(BACKLOG)?)
}

impl TryFrom<tokio::net::TcpListener> for Listener {
    type Error = io::Error;

    /// Takes over a tokio listener (a test's, say); it must be used inside a tokio runtime.
    fn try_from(listener: tokio::net::TcpListener) -> io::Result<Listener> {
        // `into_std` leaves the socket non-blocking, as mio needs it.
        let listener = mio::net::TcpListener::from_std(listener.into_std()?);
        // An audited exception to `unsafe_code`: tokio's only non-deprecated constructors of an `AsyncFd`
        // are unsafe (the safe `with_interest` is deprecated as unsound, tokio PR 8587), and tokio's own
        // `TcpListener` registers every accepted socket, which is what this type is for not doing.
        // SAFETY: `register_with_interest` requires the descriptor `as_raw_fd` returns to be open, to be
        // the same on every call and to refer to the same socket until the `AsyncFd` is dropped or taken
        // apart. The mio listener owns its descriptor (moved in from tokio's, so nobody else closes it),
        // returns that one field every time, and closes it only when dropped; the `AsyncFd` owns the
        // listener, never hands it out by value, and drops it after deregistering it. Every test in this
        // module accepts through a listener made here.
        #[allow(unsafe_code)]
        let fd = unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) };
        Ok(Listener {
            fd: fd.map_err(io::Error::from)?,
        })
    }
}

impl Listener {
    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.fd.get_ref().local_addr()
    }

    /// Has the kernel hand over a connection only once its first bytes have arrived (Linux's
    /// `TCP_DEFER_ACCEPT`), for listeners whose clients speak first (HTTP). The request is then in the
    /// socket when it is accepted and read without waiting, where otherwise, under load, the proxy often
    /// accepted a connection between the handshake and the request, and registered it to wait. A client
    /// that connects and sends nothing is handed over after about `DEFER_ACCEPT_SECS` anyway (when the
    /// kernel's repeated SYN-ACK is acknowledged). Not for protocols whose server speaks first, which it
    /// would hold up: opaque TCP listeners do not use it.
    pub fn defer_accept(&self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let secs: libc::c_int = DEFER_ACCEPT_SECS;
            // An audited exception to `unsafe_code`: neither socket2 (0.6) nor rustix (1.1) offers
            // `TCP_DEFER_ACCEPT`, and neither has a safe generic `setsockopt`.
            // SAFETY: setsockopt reads `optlen` bytes at `optval`: here a live, aligned `c_int` on the
            // stack and its size, which is the option's type (tcp(7)); the descriptor is the listener's
            // own, open while `self` is borrowed. Nothing is written. Tested by
            // `a_deferring_listener_hands_a_connection_over_with_its_first_bytes`.
            #[allow(unsafe_code)]
            let r = unsafe {
                libc::setsockopt(
                    self.fd.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_DEFER_ACCEPT,
                    (&secs as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// The next connection, accepted non-blocking and not registered (see `poll_accept`).
    /// Cancellation-safe.
    pub async fn accept(&self) -> io::Result<(Accepted, SocketAddr)> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// The next connection waiting, accepted non-blocking (`accept4` with `SOCK_NONBLOCK`) and not
    /// registered. Spends tokio's cooperative budget, as `TcpListener::poll_accept` does.
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Accepted, SocketAddr)>> {
        loop {
            let mut ready = ready!(self.fd.poll_read_ready(cx))?;
            if let Ok(accepted) = ready.try_io(|fd| fd.get_ref().accept()) {
                return Poll::Ready(accepted.map(|(stream, peer)| {
                    let stream = State::Fresh(std::net::TcpStream::from(stream));
                    (Accepted { state: stream }, peer)
                }));
            }
        }
    }
}

/// The next connection, or `None` once `stopped` (`crate::stopped`, pinned by the caller for all its
/// accepts) has finished. A failed accept (usually EMFILE, or a connection reset during the handshake) is
/// logged and followed by a short back-off.
///
/// The stop future is held across accepts rather than made anew for each: a new one read the watch's
/// value and joined and left its waiter list every time, about 400 instructions per connection
/// (`bench/instructions` with `WORKLOAD=http1-new-conn`); a held one that is already waiting only checks
/// its notification, under the watch's lock.
pub async fn accept(
    listener: &Listener,
    mut stopped: Pin<&mut impl Future<Output = ()>>,
    name: &str,
) -> Option<(Accepted, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            // A waiting connection first: the stop is looked at only when there is none, which saves
            // polling it (a lock) for every connection. A steady stream of connections cannot hide it:
            // the accept spends tokio's cooperative budget and turns pending when the task has used it
            // up. It is cancellation-safe; `stopped` only observes, and is kept by the caller.
            biased;
            r = listener.accept() => r,
            () = stopped.as_mut() => return None,
        };
        match accepted {
            Ok(x) => return Some(x),
            Err(e) => {
                tracing::debug!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// An accepted connection: a plain non-blocking socket until a read or a write on it would block, then a
/// tokio `TcpStream` (see the module's note).
#[derive(Debug)]
pub struct Accepted {
    state: State,
}

#[derive(Debug)]
enum State {
    /// Not registered with the reactor: read and written directly.
    Fresh(std::net::TcpStream),
    Registered(TcpStream),
    /// TLS, terminated here (registered: a handshake waits).
    Tls(Box<crate::tls::TlsIo>),
    /// Registering failed (the error was returned); the socket is closed.
    Gone,
}

impl From<TcpStream> for Accepted {
    /// A connection already registered (a test's, say).
    fn from(stream: TcpStream) -> Accepted {
        Accepted {
            state: State::Registered(stream),
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the connection could not be registered with the runtime",
    )
}

/// Whether `r` is a would-block; an interrupted call counts as one, to be retried after registering.
fn would_block<T>(r: &io::Result<T>) -> bool {
    matches!(r, Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted))
}

impl From<crate::tls::TlsIo> for Accepted {
    /// A connection whose TLS handshake is done.
    fn from(tls: crate::tls::TlsIo) -> Accepted {
        Accepted {
            state: State::Tls(Box::new(tls)),
        }
    }
}

impl Accepted {
    /// Whether it has joined the reactor (it had to wait).
    pub fn is_registered(&self) -> bool {
        matches!(self.state, State::Registered(_) | State::Tls(_))
    }

    /// Whether it is a TLS connection.
    pub fn is_tls(&self) -> bool {
        matches!(self.state, State::Tls(_))
    }

    /// Registers it with the reactor now (a protocol that keeps waiting on it).
    pub fn register(&mut self) -> io::Result<()> {
        match self.state {
            State::Tls(_) => Ok(()),
            _ => self.registered().map(|_| ()),
        }
    }

    /// The tokio stream, registering the socket first if it is not yet.
    fn registered(&mut self) -> io::Result<&mut TcpStream> {
        if let State::Fresh(_) = self.state {
            let State::Fresh(s) = std::mem::replace(&mut self.state, State::Gone) else {
                unreachable!("matched above")
            };
            self.state = State::Registered(TcpStream::from_std(s)?);
        }
        match &mut self.state {
            State::Registered(s) => Ok(s),
            _ => Err(gone()),
        }
    }

    /// The connection as a tokio stream, for the protocols that keep waiting on it (opaque TCP); a TLS
    /// connection is refused (its bytes are not the socket's).
    pub fn into_registered(mut self) -> io::Result<TcpStream> {
        self.registered()?;
        match self.state {
            State::Registered(s) => Ok(s),
            _ => Err(gone()),
        }
    }

    /// The plaintext socket (registered), or the TLS connection.
    pub fn into_io(mut self) -> io::Result<Io> {
        if let State::Tls(_) = self.state {
            let State::Tls(t) = std::mem::replace(&mut self.state, State::Gone) else {
                unreachable!("matched above")
            };
            return Ok(Io::Tls(t));
        }
        self.into_registered().map(Io::Plain)
    }

    /// Reads more into `buf` (grown or rewound first); `Ok(0)` when the peer
    /// closed. Reads the socket directly while it is fresh, and waits only once it is registered.
    pub(crate) fn poll_fill(
        &mut self,
        buf: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        match &mut self.state {
            State::Fresh(s) => {
                crate::h1::codec::reserve(buf);
                let read = recv_into(s, buf);
                if !would_block(&read) {
                    return Poll::Ready(read);
                }
            }
            State::Tls(t) => return poll_fill_tls(t, buf, cx),
            _ => {}
        }
        crate::h1::codec::poll_fill(self.registered()?, buf, cx)
    }
}

/// Reads more plaintext of a TLS connection into `buf`, as `Accepted::poll_fill`.
fn poll_fill_tls(
    t: &mut crate::tls::TlsIo,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    crate::h1::codec::reserve(buf);
    tokio_util::io::poll_read_buf(Pin::new(t), cx, buf)
}

/// A connection the proxy waits on: the plain socket, or TLS over it.
#[derive(Debug)]
pub enum Io {
    /// Plaintext.
    Plain(TcpStream),
    /// TLS (boxed: its session is several KB).
    Tls(Box<crate::tls::TlsIo>),
}

impl Io {
    /// The socket under it.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Io::Plain(s) => s,
            Io::Tls(t) => t.tcp(),
        }
    }

    /// Reads more into `buf` (grown or rewound first); `Ok(0)` when the peer closed.
    pub(crate) fn poll_fill(
        &mut self,
        buf: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        match self {
            Io::Plain(s) => crate::h1::codec::poll_fill(s, buf, cx),
            Io::Tls(t) => poll_fill_tls(t, buf, cx),
        }
    }

    /// Whether an idle connection is still open and has sent nothing unasked (see `h1::Conn::is_usable`);
    /// what a read found is left in `buf`.
    pub(crate) fn is_quiet(&mut self, buf: &mut BytesMut) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self {
            Io::Plain(s) => match s.poll_read_ready(&mut cx) {
                Poll::Pending => true,
                Poll::Ready(Err(_)) => false,
                Poll::Ready(Ok(())) => {
                    crate::h1::codec::reserve(buf);
                    match s.try_read_buf(buf) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
                        // Closed, failed, or bytes nobody asked for.
                        _ => false,
                    }
                }
            },
            // The session reads what came (a TLS 1.3 server's session tickets are taken in without a
            // byte of plaintext) and says `Pending` when no plaintext is there.
            Io::Tls(t) => matches!(poll_fill_tls(t, buf, &mut cx), Poll::Pending),
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(t) => Pin::new(&mut **t).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(t) => Pin::new(&mut **t).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(t) => Pin::new(&mut **t).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(t) => Pin::new(&mut **t).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(t) => Pin::new(&mut **t).poll_shutdown(cx),
        }
    }
}

/// One `recv` into `buf`'s spare capacity, appended to what it holds.
///
/// An audited exception to `unsafe_code`: no safe form costs the same. `BytesMut` lengthens over bytes
/// written through `spare_capacity_mut` only with `set_len` (or `BufMut::advance_mut`), both unsafe.
/// tokio's `try_read_buf` and tokio-util's `poll_read_buf` take that step inside, but the first needs
/// a registered stream, which a fresh one is not (see the module's note), and the second an `AsyncRead`
/// whose `poll_read` would take it itself (`ReadBuf::assume_init`). The safe ways to fill a `ReadBuf`
/// zero its spare capacity first (`initialize_unfilled`, 7 to 8 KiB per read) or copy (`put_slice`).
fn recv_into(s: &std::net::TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    let n = socket2::SockRef::from(s).recv(buf.spare_capacity_mut())?;
    // SAFETY: `set_len` requires the bytes up to the new length to be initialized and within the
    // capacity. Those before `buf.len()` were; `recv` wrote the next `n` (socket2 returns the count the
    // kernel reports, which is at most the length of the slice it was given, the spare capacity).
    // `recv_appends_what_the_socket_holds` checks the bytes, and that a refused read changes nothing.
    #[allow(unsafe_code)]
    unsafe {
        buf.set_len(buf.len() + n)
    };
    Ok(n)
}

impl AsyncRead for Accepted {
    /// Registers first: only the rare readers go through here (the HTTP/1.1 server's linger before a
    /// close); the request path reads with `poll_fill`.
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let State::Tls(t) = &mut self.state {
            return Pin::new(&mut **t).poll_read(cx, buf);
        }
        Pin::new(self.registered()?).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepted {
    /// One buffer is written as a vector of one: `writev` costs what `write` does.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.state {
            State::Fresh(s) => {
                let written = (&*s).write_vectored(bufs);
                if !would_block(&written) {
                    return Poll::Ready(written);
                }
            }
            State::Tls(t) => return Pin::new(&mut **t).poll_write_vectored(cx, bufs),
            _ => {}
        }
        Pin::new(self.registered()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.state {
            State::Tls(t) => Pin::new(&mut **t).poll_flush(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.state {
            State::Fresh(s) => Poll::Ready(s.shutdown(std::net::Shutdown::Write)),
            State::Registered(s) => Pin::new(s).poll_shutdown(cx),
            State::Tls(t) => Pin::new(&mut **t).poll_shutdown(cx),
            State::Gone => Poll::Ready(Err(gone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::task::Poll;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A listener on loopback and a connected client; the connection is accepted by the caller.
    async fn listener() -> (Listener, SocketAddr) {
        let l = bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = l.local_addr().expect("addr");
        (l, addr)
    }

    async fn accept_one(l: &Listener) -> Accepted {
        within(l.accept()).await.expect("accept").0
    }

    /// One `poll_fill` into a fresh buffer: the count and the bytes.
    async fn fill(conn: &mut Accepted) -> (usize, BytesMut) {
        let mut buf = BytesMut::new();
        let n = within(poll_fn(|cx| conn.poll_fill(&mut buf, cx)))
            .await
            .expect("read");
        (n, buf)
    }

    /// `f`'s output, or a failed test when it takes more than 5 s (a lost wake-up, bytes lost).
    async fn within<T>(f: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), f)
            .await
            .expect("waited 5 s")
    }

    /// `recv_into` appends exactly what one `recv` returned after the bytes the buffer held, leaves the
    /// buffer as it was when the read would block, and reads 0 at the peer's close.
    #[test]
    fn recv_appends_what_the_socket_holds() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client =
            std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (server, _) = l.accept().expect("accept");
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(b"held:");
        // One write on loopback is one segment, and a blocking `recv` returns it whole.
        client.write_all(b"hello").expect("write");
        assert_eq!(recv_into(&server, &mut buf).expect("recv"), 5);
        assert_eq!(&buf[..], b"held:hello");
        server.set_nonblocking(true).expect("non-blocking");
        let r = recv_into(&server, &mut buf);
        assert!(would_block(&r), "{r:?}");
        assert_eq!(&buf[..], b"held:hello");
        // A full buffer is grown by the caller; one with less room than the peer sent takes what fits.
        let mut small = BytesMut::with_capacity(3);
        client.write_all(b"0123456789").expect("write");
        server.set_nonblocking(false).expect("blocking");
        let n = recv_into(&server, &mut small).expect("recv");
        let fits = small.capacity().min(10);
        assert_eq!((n, &small[..]), (fits, &b"0123456789"[..fits]));
        drop(client);
        let mut rest = BytesMut::with_capacity(64);
        while recv_into(&server, &mut rest).expect("recv") > 0 {}
        assert_eq!(&rest[..], &b"0123456789"[n..]);
    }

    #[tokio::test]
    async fn a_connection_that_never_waits_is_never_registered() {
        let (l, addr) = listener().await;
        let mut client = TcpStream::connect(addr).await.expect("connect");
        client.write_all(b"hello").await.expect("write");
        let mut conn = accept_one(&l).await;
        // The bytes are in the accepted socket before it is first read (a peek, which leaves them).
        crate::test_util::eventually("the bytes to arrive", || async {
            let State::Fresh(s) = &conn.state else {
                panic!("registered before it was read")
            };
            matches!(s.peek(&mut [0u8; 8]), Ok(5)).then_some(())
        })
        .await;
        let (n, buf) = fill(&mut conn).await;
        assert_eq!((n, &buf[..]), (5, &b"hello"[..]));
        conn.write_all(b"world").await.expect("write");
        assert!(!conn.is_registered(), "nothing waited, nothing registered");
        drop(conn);
        let mut back = Vec::new();
        within(client.read_to_end(&mut back)).await.expect("read");
        assert_eq!(back, b"world");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_deferring_listener_hands_a_connection_over_with_its_first_bytes() {
        let (l, addr) = listener().await;
        l.defer_accept().expect("TCP_DEFER_ACCEPT");
        // Connected, nothing sent: the kernel holds it (for a second) rather than queue it for accept.
        let _silent = TcpStream::connect(addr).await.expect("connect");
        // Connected after it, with its first bytes: handed over first, the silent one still held.
        let mut talking = TcpStream::connect(addr).await.expect("connect");
        talking.write_all(b"GET").await.expect("write");
        let (mut conn, peer) = within(l.accept()).await.expect("accept");
        assert_eq!(
            peer,
            talking.local_addr().expect("addr"),
            "the silent connection was accepted before the first bytes"
        );
        let (n, buf) = fill(&mut conn).await;
        assert_eq!((n, &buf[..]), (3, &b"GET"[..]));
        assert!(!conn.is_registered());
    }

    #[tokio::test]
    async fn bytes_that_come_after_the_accept_are_waited_for() {
        let (l, addr) = listener().await;
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let mut conn = accept_one(&l).await;
        let mut buf = BytesMut::new();
        let mut reading = std::pin::pin!(poll_fn(|cx| conn.poll_fill(&mut buf, cx)));
        // Nothing sent yet: the read waits, and registers to be woken.
        assert!(poll_fn(|cx| Poll::Ready(reading.as_mut().poll(cx).is_pending())).await);
        client.write_all(b"late").await.expect("write");
        let n = within(reading).await.expect("read");
        assert_eq!((n, &buf[..]), (4, &b"late"[..]));
        assert!(conn.is_registered());
        // The close is seen through the registration too.
        drop(client);
        assert_eq!(fill(&mut conn).await.0, 0);
    }

    #[tokio::test]
    async fn a_write_larger_than_the_socket_takes_waits_for_room() {
        let (l, addr) = listener().await;
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let mut conn = accept_one(&l).await;
        // Far more than the two sockets' buffers take in at once. The reader's first read finds nothing
        // and waits, so the writer runs next (one thread), fills them and must wait too.
        let body = vec![7u8; 16 << 20];
        let writer = tokio::spawn(async move {
            conn.write_all(&body).await.expect("write");
            conn.shutdown().await.expect("shutdown");
            conn
        });
        let mut got = Vec::new();
        within(client.read_to_end(&mut got)).await.expect("read");
        assert_eq!(got.len(), 16 << 20);
        assert!(got.iter().all(|&b| b == 7));
        assert!(writer.await.expect("writer").is_registered());
    }

    #[tokio::test]
    async fn an_accept_takes_each_waiting_connection_once() {
        let (l, addr) = listener().await;
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(TcpStream::connect(addr).await.expect("connect"));
        }
        let mut peers = Vec::new();
        for _ in 0..3 {
            let (_, peer) = within(l.accept()).await.expect("accept");
            peers.push(peer);
        }
        let mut locals: Vec<_> = clients
            .iter()
            .map(|c| c.local_addr().expect("addr"))
            .collect();
        peers.sort();
        locals.sort();
        assert_eq!(peers, locals);
        // None left: the next accept is the next connection, not one of these again.
        let fourth = TcpStream::connect(addr).await.expect("connect");
        let (_, peer) = within(l.accept()).await.expect("accept");
        assert_eq!(peer, fourth.local_addr().expect("addr"));
    }
}
