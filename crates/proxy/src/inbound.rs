//! The inbound side: binds the listeners LDS asks for (`traffic_direction: INBOUND`, a socket address,
//! `bind_to_port` not false), starts new ones and stops removed ones when LDS changes, and routes their
//! requests through each listener's own (inline) route table to the local application.

use crate::http::{self, server, Entry};
use crate::Shared;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

struct Running {
    configured: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Reconciles bound inbound listeners with every new snapshot until shutdown, then drains them.
pub(crate) async fn manage(shared: Arc<Shared>, drain: Duration) {
    let mut generation = shared.generation.subscribe();
    let mut shutdown = shared.shutdown.subscribe();
    let mut running: HashMap<String, Running> = HashMap::new();
    loop {
        reconcile(&shared, &mut running, drain).await;
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

async fn reconcile(shared: &Arc<Shared>, running: &mut HashMap<String, Running>, drain: Duration) {
    let snap = shared.snapshot.load_full();
    let desired: HashMap<&str, SocketAddr> = snap
        .listeners
        .values()
        .filter(|l| l.value.binds_inbound())
        .filter_map(|l| Some((l.value.name.as_str(), l.value.address?)))
        .collect();

    let stale: Vec<String> = running
        .iter()
        .filter(|(name, r)| desired.get(name.as_str()) != Some(&r.configured))
        .map(|(name, _)| name.clone())
        .collect();
    for name in stale {
        if let Some(r) = running.remove(&name) {
            tracing::info!(listener = %name, addr = %r.configured, "stopping inbound listener");
            r.stop.send_replace(true);
            if let Ok(mut m) = shared.inbound_bound.lock() {
                m.remove(&name);
            }
            // Wait for it to release its port before a replacement binds the same address.
            let _ = r.task.await;
        }
    }

    for (name, addr) in desired {
        if running.contains_key(name) {
            continue;
        }
        let listener = match server::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                // Keep the others; the next LDS update retries.
                tracing::error!(listener = %name, addr = %addr, error = %e, "cannot bind inbound listener");
                continue;
            }
        };
        let bound = listener.local_addr().unwrap_or(addr);
        tracing::info!(listener = %name, addr = %bound, "inbound listener bound");
        if let Ok(mut m) = shared.inbound_bound.lock() {
            m.insert(name.to_string(), bound);
        }
        let (stop, stop_rx) = watch::channel(false);
        let s = shared.clone();
        let entry_name: Arc<str> = Arc::from(name);
        let handler: server::Handler = Arc::new(move |req| {
            let s = s.clone();
            Box::pin(http::handle(s, Entry::Inbound(entry_name.clone()), req))
        });
        let task = tokio::spawn(server::serve("inbound", listener, handler, stop_rx, drain));
        running.insert(
            name.to_string(),
            Running {
                configured: addr,
                stop,
                task,
            },
        );
    }
}
