//! Zero-copy forwarding on Linux: bytes go socket → pipe → socket with `splice(2)`, as page references
//! inside the kernel, instead of being copied into the proxy's buffer and back out.
//!
//! Each direction has its own pipe (two file descriptors, no memory until bytes are in flight). The
//! sockets' readiness comes from tokio (`readable`/`writable` then `try_io`), so a splice that would
//! block clears the readiness it found and waits for the next, as a `recv` would.
//!
//! No `unsafe` here: `pipe2` and `splice` go through rustix, which makes each the one system call the
//! libc wrappers made (directly, without libc's `errno`), and the half-close through socket2's
//! `shutdown`, the same `shutdown(2)`.

use rustix::pipe::{PipeFlags, SpliceFlags};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The most one splice moves (the default pipe holds 64 KiB).
const CHUNK: usize = 64 * 1024;

/// One direction's pipe and how many bytes sit in it.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    held: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (read, write) = rustix::pipe::pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        Ok(Pipe {
            read,
            write,
            held: 0,
        })
    }
}

/// Moves up to `len` bytes from `from` to `to` without blocking; `Ok(0)` from a socket is its end. No
/// offsets: both ends are a socket or a pipe.
fn splice(from: impl AsFd, to: impl AsFd, len: usize) -> io::Result<usize> {
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    Ok(rustix::pipe::splice(from, None, to, None, len, flags)?)
}

/// Closes the write side of `s` (its peer reads the end), keeping its read side open.
fn shutdown_write(s: &TcpStream) -> io::Result<()> {
    socket2::SockRef::from(s).shutdown(std::net::Shutdown::Write)
}

/// Forwards `from` to `to` until `from` ends, then passes the end on, adding each write's bytes to
/// `moved` as it lands.
async fn one_way(from: &TcpStream, to: &TcpStream, moved: &AtomicU64) -> io::Result<()> {
    let mut pipe = Pipe::new()?;
    loop {
        if pipe.held == 0 {
            from.readable().await?;
            let n = match from.try_io(Interest::READABLE, || splice(from, &pipe.write, CHUNK)) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                // ENOTCONN: the peer is already gone, which is the end either way.
                match shutdown_write(to) {
                    Err(e) if e.kind() != io::ErrorKind::NotConnected => return Err(e),
                    _ => return Ok(()),
                }
            }
            pipe.held = n;
        }
        to.writable().await?;
        match to.try_io(Interest::WRITABLE, || splice(&pipe.read, to, pipe.held)) {
            Ok(n) => {
                pipe.held -= n;
                moved.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// Forwards both ways until both have ended, counting the bytes moved `a` → `b` and `b` → `a` as they
/// go. An error on either side ends both (the caller drops the sockets).
pub(super) async fn bidirectional(
    a: &TcpStream,
    b: &TcpStream,
    a_to_b: &AtomicU64,
    b_to_a: &AtomicU64,
) -> io::Result<()> {
    tokio::try_join!(one_way(a, b, a_to_b), one_way(b, a, b_to_a)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::test_pair as pair;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Both directions at once, several pipes' worth each, and each end passed on when its side closes:
    /// the server finishes first while the client is still sending.
    #[tokio::test]
    async fn moves_both_ways_and_passes_each_end_on() {
        let (mut client, down) = pair().await;
        let (up, mut server) = pair().await;
        let counts = std::sync::Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let c = counts.clone();
        let forward = tokio::spawn(async move { bidirectional(&down, &up, &c.0, &c.1).await });
        let to_server: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let to_client: Vec<u8> = (0..700_000u32).map(|i| (i % 239) as u8).collect();
        let (tc, ts) = (to_client.clone(), to_server.clone());
        let server_side = tokio::spawn(async move {
            server.write_all(&tc).await.expect("server writes");
            server.shutdown().await.expect("server FIN");
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.expect("server reads");
            assert!(got == ts, "server got {} bytes", got.len());
        });
        let (mut rd, mut wr) = client.split();
        let reading = async {
            let mut got = Vec::new();
            rd.read_to_end(&mut got).await.expect("client reads");
            got
        };
        let writing = async {
            wr.write_all(&to_server).await.expect("client writes");
            wr.shutdown().await.expect("client FIN");
        };
        let (got, ()) = tokio::join!(reading, writing);
        assert!(got == to_client, "client got {} bytes", got.len());
        server_side.await.expect("server side");
        forward.await.expect("task").expect("forwarded");
        let moved = (
            counts.0.load(Ordering::Relaxed),
            counts.1.load(Ordering::Relaxed),
        );
        assert_eq!(moved, (1_000_000, 700_000));
    }
}
