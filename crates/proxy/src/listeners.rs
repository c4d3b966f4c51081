//! The listeners LDS asks the proxy to bind: inbound ones (`traffic_direction: INBOUND`), whose HTTP
//! requests go through each listener's own (inline) route table to the local application or whose TCP goes
//! to it opaquely, outbound TCP ones (a Sidecar egress port), whose connections go to their cluster, and a
//! gateway's (a Gateway server's port, plaintext or TLS from certificate files), whose requests are
//! routed by their authority through the listener's RDS table.
//! Any listener with a socket address and `bind_to_port` not false qualifies. New ones are bound and
//! removed ones stopped (and drained) when LDS changes; one whose address or kind changed is rebound.

use crate::http::{self, Entry};
use crate::tls::{Downstream, Inbound, MeshTls};
use crate::Shared;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weft_http::server;
use weft_http::tls::ServerTls;

/// What a bound listener serves, and its TLS mode. A change of its TLS mode (a PeerAuthentication
/// change) rebinds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Http(Inbound),
    Tcp(Inbound),
    /// A gateway's server port, with the id of its TLS from files (`None`: plaintext).
    Gateway(Option<u32>),
}

/// How a listener in `mode` takes connections: `None` in plaintext, else mutual TLS with the workload's
/// certificate (and plaintext too when PERMISSIVE). Without an identity (no `--ca-token-file`), STRICT
/// fails closed: its TLS has no certificate to answer a handshake with, so every connection is refused;
/// PERMISSIVE serves plaintext only. Until the first certificate arrives, a handshake fails the same
/// way and plaintext is served only by PERMISSIVE.
fn server_tls(shared: &Shared, name: &str, mode: Inbound) -> Option<ServerTls> {
    match (mode, &shared.mesh_tls) {
        (Inbound::Plaintext, _) => None,
        (mode, Some(mesh)) => Some(mesh.server(mode == Inbound::Permissive)),
        (Inbound::Permissive, None) => {
            tracing::warn!(listener = %name, "listener is PERMISSIVE but the proxy has no identity (no --ca-token-file): serving plaintext only");
            None
        }
        (Inbound::Strict, None) => {
            tracing::warn!(listener = %name, "listener requires mutual TLS (STRICT) but the proxy has no identity (no --ca-token-file): refusing every connection");
            // Settings that follow an identity that never comes: no handshake completes.
            let (_, never) = watch::channel(None);
            Some(MeshTls::new(never).server(false))
        }
    }
}

struct Running {
    configured: (SocketAddr, Kind),
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Reconciles bound listeners with every new snapshot until shutdown, then drains them.
pub(crate) async fn manage(shared: Arc<Shared>, drain: Duration, limits: weft_http::Limits) {
    let mut generation = shared.generation.subscribe();
    let mut shutdown = shared.shutdown.subscribe();
    let mut running: HashMap<String, Running> = HashMap::new();
    loop {
        reconcile(&shared, &mut running, drain, limits).await;
        tokio::select! {
            // Both branches only observe watch channels: cancellation-safe.
            r = generation.changed() => if r.is_err() { break },
            _ = crate::stopped(&mut shutdown) => break,
        }
    }
    for (_, r) in running.drain() {
        r.stop.send_replace(true);
        let _ = r.task.await;
    }
}

async fn reconcile(
    shared: &Arc<Shared>,
    running: &mut HashMap<String, Running>,
    drain: Duration,
    limits: weft_http::Limits,
) {
    let snap = shared.snapshot.load_full();
    let desired: HashMap<&str, (SocketAddr, Kind)> = snap
        .listeners
        .values()
        .filter(|l| l.value.binds())
        .filter_map(|l| {
            let kind = if l.value.is_tcp() {
                Kind::Tcp(l.value.tls)
            } else if l.value.direction == crate::config::listener::Direction::Outbound {
                Kind::Gateway(l.value.server_tls.as_ref().map(|t| t.id))
            } else {
                Kind::Http(l.value.tls)
            };
            Some((l.value.name.as_str(), (l.value.address?, kind)))
        })
        .collect();

    let stale: Vec<String> = running
        .iter()
        .filter(|(name, r)| desired.get(name.as_str()) != Some(&r.configured))
        .map(|(name, _)| name.clone())
        .collect();
    for name in stale {
        if let Some(r) = running.remove(&name) {
            tracing::info!(listener = %name, addr = %r.configured.0, "stopping listener");
            r.stop.send_replace(true);
            if let Ok(mut m) = shared.bound.lock() {
                m.remove(&name);
            }
            // Wait for it to release its port before a replacement binds the same address.
            let _ = r.task.await;
        }
    }

    for (name, (addr, kind)) in desired {
        if running.contains_key(name) {
            continue;
        }
        let listener = match weft_http::net::bind(addr) {
            Ok(l) => l,
            Err(e) => {
                // Keep the others; the next LDS update retries.
                tracing::error!(listener = %name, addr = %addr, error = %e, "cannot bind listener");
                continue;
            }
        };
        let bound = listener.local_addr().unwrap_or(addr);
        tracing::info!(listener = %name, addr = %bound, kind = ?kind, "listener bound");
        if let Ok(mut m) = shared.bound.lock() {
            m.insert(name.to_string(), bound);
        }
        let (stop, stop_rx) = watch::channel(false);
        let entry_name: Arc<str> = Arc::from(name);
        let task = match kind {
            Kind::Tcp(mode) => tokio::spawn(crate::tcp::serve(
                shared.clone(),
                entry_name,
                listener,
                stop_rx,
                drain,
                limits.max_connections,
                server_tls(shared, name, mode),
            )),
            Kind::Gateway(_) => {
                // The TLS settings read with this snapshot's listener: the same id, the same files.
                let tls = snap
                    .listeners
                    .get(name)
                    .and_then(|l| l.value.server_tls.as_ref())
                    .map(|t| ServerTls {
                        config: t.config.clone(),
                        allow_plaintext: false,
                    });
                let s = shared.clone();
                // Each connection's peer, for AuthorizationPolicy's `remoteIpBlocks` and `ipBlocks`.
                let make = move |c: server::Connection| {
                    let s = s.clone();
                    let entry = Entry::Gateway(entry_name.clone());
                    let down = Downstream::of(&c);
                    move |req| http::handle(s.clone(), entry.clone(), Some(&down), req)
                };
                tokio::spawn(server::serve_with(
                    "gateway", listener, make, tls, stop_rx, drain, limits,
                ))
            }
            Kind::Http(mode) => {
                let tls = server_tls(shared, name, mode);
                let s = shared.clone();
                // Each connection's handler carries what is known of it (its peer's identity, and
                // what that makes of its requests' metric labels).
                let make = move |c: server::Connection| {
                    let s = s.clone();
                    let entry = Entry::Inbound(entry_name.clone());
                    let mut down = Downstream::of(&c);
                    if let (Some(t), Some(_)) = (&s.telemetry, &c.tls) {
                        let own = crate::tls::own_id(s.identity.as_ref());
                        down.security = t.security(true, down.principal.as_deref(), own.as_deref());
                    }
                    move |req| http::handle(s.clone(), entry.clone(), Some(&down), req)
                };
                tokio::spawn(server::serve_with(
                    "inbound", listener, make, tls, stop_rx, drain, limits,
                ))
            }
        };
        running.insert(
            name.to_string(),
            Running {
                configured: (addr, kind),
                stop,
                task,
            },
        );
    }
}
