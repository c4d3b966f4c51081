//! TLS on both sides of a connection: the settings a listener accepts with ([`ServerTls`]) and an upstream
//! connects with ([`ClientTls`]), what the server learned of its peer ([`PeerTls`]), and the stream both
//! run on ([`TlsIo`]).
//!
//! The crate knows nothing of certificates' meaning: the proxy builds the rustls configs (its identity, the
//! mesh's roots, which names it accepts) and reads the peer's identity from the certificate handed back.
//!
//! The codecs write a buffer and go on reading once the write has returned, without a flush (a socket has
//! nothing to flush). tokio-rustls accepts plaintext into its session and returns the count even when
//! the socket would not take all of the records it made of it; the rest waits for the next write or a
//! flush. So [`TlsIo`] reports a write done only once its records are all on the socket: it holds the
//! count back (returning `Pending`, with the socket's waker registered) until the flush completes, and
//! hands it over when the codec polls the write again, as the codecs do until a buffer is written.

use bytes::{Buf, Bytes};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The crypto provider of every TLS connection Weft makes or accepts (sidecars, weftd's port 15012, the
/// CA and JWKS clients): rustls on ring, with Envoy's preferences instead of rustls' own.
///
/// rustls 0.23.48 lists P-384 first among ring's key exchange groups and AES-256 first among its
/// suites. Two rustls peers then agree on P-384, whose ring code has no assembly on x86-64: 71% of two
/// sidecars' CPU on `tcp-new-conn` went to it (`perf record`), about 3.5 ms a connection. Envoy
/// (BoringSSL) offers X25519 then P-256, and prefers AES-128-GCM when the CPU has AES instructions; so
/// does this, keeping the other algorithms after them so that no peer rustls accepted is refused.
///
/// ring rather than aws-lc-rs: it builds without cmake or a C toolchain beyond `cc`, and rcgen and
/// jsonwebtoken use it too, so the tree has one copy of the primitives. rustls 0.23.48 marks ring's
/// provider deprecated for its lack of post-quantum key exchange.
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::{cipher_suite as cs, default_provider, kx_group};
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            Arc::new(rustls::crypto::CryptoProvider {
                cipher_suites: vec![
                    cs::TLS13_AES_128_GCM_SHA256,
                    cs::TLS13_AES_256_GCM_SHA384,
                    cs::TLS13_CHACHA20_POLY1305_SHA256,
                    cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                    cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                    cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                    cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                    cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                    cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
                ],
                kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
                ..default_provider()
            })
        })
        .clone()
}

/// How long a TLS handshake may take, either side, before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first byte of a TLS record carrying a handshake message (RFC 8446, 5.1: `ContentType.handshake`):
/// how a listener that accepts both tells a TLS client from a plaintext one.
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// How a listener accepts connections: TLS with `config`, and plaintext too when `allow_plaintext`
/// (Istio's PERMISSIVE; STRICT refuses it).
#[derive(Clone)]
pub struct ServerTls {
    /// The rustls settings (the proxy's certificate, the client certificates it requires).
    pub config: Arc<rustls::ServerConfig>,
    /// Whether a connection that does not start with a TLS handshake is served in plaintext.
    pub allow_plaintext: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("allow_plaintext", &self.allow_plaintext)
            .finish_non_exhaustive()
    }
}

/// How an upstream connection is made over TLS.
#[derive(Clone)]
pub struct ClientTls {
    /// Tells connections apart in the pools: connections with equal ids are interchangeable (same
    /// settings: roots, client certificate, expected peer names, SNI, ALPN). 0 is plaintext's.
    pub id: u32,
    /// The rustls settings.
    pub config: Arc<rustls::ClientConfig>,
    /// The name sent as SNI (and the one a standard verifier checks).
    pub server_name: rustls::pki_types::ServerName<'static>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("id", &self.id)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// What a TLS server learned of its client in the handshake.
#[derive(Debug, Clone, Default)]
pub struct PeerTls {
    /// The client's leaf certificate, when it presented one.
    pub certificate: Option<rustls::pki_types::CertificateDer<'static>>,
    /// The server name the client asked for (SNI).
    pub sni: Option<Box<str>>,
    /// The application protocol agreed (ALPN).
    pub alpn: Option<Box<[u8]>>,
}

/// A connection's first bytes, read before its protocol was known, then the socket.
#[derive(Debug)]
pub struct Prefixed {
    first: Bytes,
    stream: TcpStream,
}

impl Prefixed {
    /// `first`, then `stream`.
    pub fn new(first: Bytes, stream: TcpStream) -> Prefixed {
        Prefixed { first, stream }
    }

    /// The socket.
    pub fn get_ref(&self) -> &TcpStream {
        &self.stream
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.first.is_empty() {
            let n = self.first.len().min(buf.remaining());
            buf.put_slice(&self.first[..n]);
            self.first.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A TLS connection, either side, whose writes complete only once on the socket (see the module's note).
pub struct TlsIo {
    inner: tokio_rustls::TlsStream<Prefixed>,
    /// Bytes a write took into the session whose records are not all on the socket yet.
    held: Option<usize>,
}

impl std::fmt::Debug for TlsIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIo").finish_non_exhaustive()
    }
}

impl TlsIo {
    /// The socket under it.
    pub fn tcp(&self) -> &TcpStream {
        self.inner.get_ref().0.get_ref()
    }

    /// What the server side learned of its client.
    pub fn peer(&self) -> PeerTls {
        let (_, conn) = self.inner.get_ref();
        PeerTls {
            certificate: conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.clone().into_owned()),
            sni: match &self.inner {
                tokio_rustls::TlsStream::Server(s) => s.get_ref().1.server_name().map(Box::from),
                tokio_rustls::TlsStream::Client(_) => None,
            },
            alpn: conn.alpn_protocol().map(Box::from),
        }
    }

    /// Completes a held write: `Ready` once every record is on the socket.
    fn poll_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<usize>>> {
        match self.held {
            None => Poll::Ready(Ok(None)),
            Some(n) => {
                ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
                self.held = None;
                Poll::Ready(Ok(Some(n)))
            }
        }
    }

    /// After the session took `n` bytes: done if its records are all out, else held (see the module's note).
    fn settle(&mut self, n: usize, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(n)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                self.held = Some(n);
                Poll::Pending
            }
        }
    }
}

impl AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(n) = ready!(self.poll_held(cx))? {
            return Poll::Ready(Ok(n));
        }
        let n = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        self.settle(n, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(n) = ready!(self.poll_held(cx))? {
            return Poll::Ready(Ok(n));
        }
        let n = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, bufs))?;
        self.settle(n, cx)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_held(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_held(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Why a TLS handshake failed.
fn handshake_error(e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("TLS handshake failed: {e}"))
}

/// The server side of a handshake on a connection whose first bytes (`first`) were read already.
pub async fn accept(first: Bytes, stream: TcpStream, tls: &ServerTls) -> io::Result<TlsIo> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
    let io = Prefixed::new(first, stream);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
        Ok(Ok(s)) => Ok(TlsIo {
            inner: tokio_rustls::TlsStream::Server(s),
            held: None,
        }),
        Ok(Err(e)) => Err(handshake_error(e)),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

/// The client side of a handshake on a new connection.
pub async fn connect(stream: TcpStream, tls: &ClientTls) -> io::Result<TlsIo> {
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let io = Prefixed::new(Bytes::new(), stream);
    match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        connector.connect(tls.server_name.clone(), io),
    )
    .await
    {
        Ok(Ok(s)) => Ok(TlsIo {
            inner: tokio_rustls::TlsStream::Client(s),
            held: None,
        }),
        Ok(Err(e)) => Err(handshake_error(e)),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

#[cfg(test)]
mod tests;
