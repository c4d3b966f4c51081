//! The buffered copy: tokio's `copy_bidirectional` through a buffer per direction, each side's writes
//! counted as they land, so that a connection's reports see its bytes while it is open. It serves a
//! connection with TLS on either side (whose bytes must pass through rustls), and plaintext on systems
//! without `splice(2)`.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Each direction's buffer: a whole TLS record's plaintext (RFC 8446, 5.1), so a read from a TLS side
/// takes a record at once and a write to one makes full records.
const BUFFER: usize = 16 * 1024;

/// A stream whose writes add their bytes to `written`; reads pass through.
struct Counted<'a, T> {
    io: &'a mut T,
    written: &'a AtomicU64,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut *self.io).poll_write(cx, buf))?;
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut *self.io).poll_write_vectored(cx, bufs))?;
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }
}

/// Forwards both ways until both have ended (each end passed on as a FIN, or a TLS close_notify and
/// then a FIN), counting the bytes moved `a` → `b` and `b` → `a` as they go.
pub(super) async fn bidirectional<A, B>(
    a: &mut A,
    b: &mut B,
    a_to_b: &AtomicU64,
    b_to_a: &AtomicU64,
) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut a = Counted {
        io: a,
        written: b_to_a,
    };
    let mut b = Counted {
        io: b,
        written: a_to_b,
    };
    tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, BUFFER, BUFFER)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::test_pair as pair;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The counts grow while the connection is open and end at what crossed each way. On this
    /// single-threaded runtime a byte the other end has read was counted in the same poll that wrote
    /// it, so the counts are exact at each step.
    #[tokio::test]
    async fn counts_each_way_while_open_and_to_the_end() {
        let (mut client, mut down) = pair().await;
        let (mut up, mut server) = pair().await;
        let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let c = counts.clone();
        let forward =
            tokio::spawn(async move { bidirectional(&mut down, &mut up, &c.0, &c.1).await });
        let now = || {
            (
                counts.0.load(Ordering::Relaxed),
                counts.1.load(Ordering::Relaxed),
            )
        };

        client.write_all(&[1; 3000]).await.expect("client writes");
        let mut got = vec![0; 3000];
        server.read_exact(&mut got).await.expect("server reads");
        server.write_all(&[2; 500]).await.expect("server writes");
        let mut back = vec![0; 500];
        client.read_exact(&mut back).await.expect("client reads");
        assert_eq!(now(), (3000, 500), "while open");

        client.write_all(&[3; 70_000]).await.expect("client writes");
        client.shutdown().await.expect("client FIN");
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.expect("server reads");
        assert_eq!(rest.len(), 70_000);
        server.shutdown().await.expect("server FIN");
        let mut end = Vec::new();
        client.read_to_end(&mut end).await.expect("client reads");
        assert!(end.is_empty());
        forward.await.expect("task").expect("forwarded");
        assert_eq!(now(), (73_000, 500), "at the end");
    }
}
