//! Pooled upstream clients: HTTP/1.1 and HTTP/2 prior knowledge, over a connector with TCP_NODELAY and the
//! cluster's connect timeout. One pair of clients per distinct connect timeout, created on first use and
//! kept for the life of the process, so pools survive configuration changes.

use super::Body;
use arc_swap::ArcSwap;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The h1 and h2 clients for one connect timeout.
#[derive(Clone)]
pub struct Clients {
    /// HTTP/1.1 with keep-alive.
    pub h1: Client<HttpConnector, Body>,
    /// HTTP/2 prior knowledge (h2c).
    pub h2: Client<HttpConnector, Body>,
}

impl Clients {
    fn new(connect_timeout: Duration) -> Clients {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        connector.enforce_http(true);
        let h1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector.clone());
        let h2 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(true)
            .build(connector);
        Clients { h1, h2 }
    }
}

/// The client sets, by connect timeout.
pub struct Upstream {
    by_timeout: ArcSwap<HashMap<Duration, Clients>>,
    /// Serialises the rare insertion of a new timeout; never held across an await.
    insert: Mutex<()>,
}

impl Default for Upstream {
    fn default() -> Self {
        Self::new()
    }
}

impl Upstream {
    /// No clients yet.
    pub fn new() -> Upstream {
        Upstream {
            by_timeout: ArcSwap::from_pointee(HashMap::new()),
            insert: Mutex::new(()),
        }
    }

    /// The clients for a connect timeout. The common case is one atomic load and a map lookup.
    pub fn clients(&self, connect_timeout: Duration) -> Clients {
        if let Some(c) = self.by_timeout.load().get(&connect_timeout) {
            return c.clone();
        }
        let _guard = self.insert.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.by_timeout.load_full();
        if let Some(c) = current.get(&connect_timeout) {
            return c.clone();
        }
        let clients = Clients::new(connect_timeout);
        let mut next = (*current).clone();
        next.insert(connect_timeout, clients.clone());
        self.by_timeout.store(Arc::new(next));
        clients
    }
}
