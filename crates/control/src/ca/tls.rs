//! weftd's TLS port (Istio's 15012): its own serving certificate, signed by the CA and renewed at half
//! its lifetime, and the stream of handshaken connections tonic serves the CA and xDS on.

use super::authority::Authority;
use super::Error;
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::{debug, info, warn};

/// Longest a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The DNS names weftd's certificate carries: istiod's service name (so clients configured for
/// Istio verify it), `weftd`, and `localhost`.
pub const DNS_NAMES: [&str; 3] = ["istiod.istio-system.svc", "weftd", "localhost"];

/// The names and addresses weftd's serving certificate carries for a port bound on `bind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// DNS names.
    pub dns: Vec<String>,
    /// IP addresses: the bound one, or both loopbacks when bound on every address.
    pub ips: Vec<IpAddr>,
}

impl Names {
    /// [`DNS_NAMES`] and `bind`'s IP.
    pub fn for_bind(bind: SocketAddr) -> Names {
        let ips = if bind.ip().is_unspecified() {
            vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ]
        } else {
            vec![bind.ip()]
        };
        Names {
            dns: DNS_NAMES.iter().map(|s| s.to_string()).collect(),
            ips,
        }
    }
}

/// The serving certificate, swapped whole when renewed; handshakes in progress keep theirs.
#[derive(Debug)]
pub struct ServingCert {
    current: ArcSwap<CertifiedKey>,
    names: Names,
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl ServingCert {
    /// A certificate from `authority` for `names`.
    pub fn issue(authority: &Authority, names: Names) -> Result<ServingCert, Error> {
        let first = certified(authority, &names)?;
        Ok(ServingCert {
            current: ArcSwap::from_pointee(first),
            names,
        })
    }

    /// The TLS server configuration: TLS 1.2 and 1.3, HTTP/2, no client certificate (callers
    /// authenticate with tokens).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, Error> {
        let mut c = rustls::ServerConfig::builder_with_provider(weft_http::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(Error::Tls)?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        c.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(c))
    }

    /// Renews the certificate at half its lifetime until `shutdown` is true.
    pub async fn renew(
        self: Arc<Self>,
        authority: Arc<Authority>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            // Cancellation-safe: both branches only wait.
            tokio::select! {
                _ = tokio::time::sleep(super::SERVING_CERT_TTL / 2) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let (a, names) = (authority.clone(), self.names.clone());
            match tokio::task::spawn_blocking(move || certified(&a, &names)).await {
                Ok(Ok(next)) => {
                    self.current.store(Arc::new(next));
                    info!("renewed weftd's serving certificate");
                }
                Ok(Err(e)) => warn!(error = %e, "cannot renew weftd's serving certificate"),
                Err(_) => warn!("the serving certificate's renewal task failed"),
            }
        }
    }
}

fn certified(authority: &Authority, names: &Names) -> Result<CertifiedKey, Error> {
    let dns: Vec<&str> = names.dns.iter().map(String::as_str).collect();
    let (chain, key) = authority.issue_server(&dns, &names.ips, super::SERVING_CERT_TTL)?;
    let signing = weft_http::tls::provider()
        .key_provider
        .load_private_key(key)
        .map_err(Error::Tls)?;
    Ok(CertifiedKey::new(chain, signing))
}

/// A connection after its TLS handshake, as tonic serves it; reports the TCP addresses as a plaintext
/// connection does (the ADS server reads the peer from them).
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: TcpConnectInfo,
}

impl Connected for TlsConn {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts on `listener` and hands each connection to the stream once its handshake is done (each
/// handshake in its own task, bounded by [`HANDSHAKE_TIMEOUT`]). The accept task ends when the stream
/// is dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsConn, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            // Cancellation-safe: `accept` loses nothing when `closed` wins.
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, most likely: wait a moment rather than spin.
                    warn!(error = %e, "secure port: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let info = TcpConnectInfo {
                local_addr: tcp.local_addr().ok(),
                remote_addr: Some(remote),
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(inner)) => {
                        let _ = tx.send(Ok(TlsConn { inner, info })).await;
                    }
                    Ok(Err(e)) => {
                        debug!(peer = %remote, error = %e, "secure port: TLS handshake failed")
                    }
                    Err(_) => debug!(peer = %remote, "secure port: TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_istiods_weftds_and_the_bound_ip() {
        let n = Names::for_bind("127.0.0.9:15012".parse().expect("addr"));
        assert_eq!(n.dns, ["istiod.istio-system.svc", "weftd", "localhost"]);
        assert_eq!(n.ips, ["127.0.0.9".parse::<IpAddr>().expect("ip")]);
        let n = Names::for_bind("0.0.0.0:15012".parse().expect("addr"));
        assert_eq!(n.ips.len(), 2, "both loopbacks");
    }
}
