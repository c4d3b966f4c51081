//! What each connected proxy was sent and acknowledged, per xDS type: the data behind
//! `weft proxy-status` and `/debug/syncz`.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use weft_xds::node::ProxyIdentity;
use weft_xds::type_url;

/// One type's sync state for one proxy.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeStatus {
    /// `SYNCED`, `STALE` or `NOT SENT`.
    pub status: &'static str,
    /// Version of the last response sent.
    pub sent_version: String,
    /// Nonce of the last response sent.
    pub sent_nonce: String,
    /// Last version the proxy acknowledged.
    pub acked_version: String,
    /// Nonce of that acknowledgement.
    pub acked_nonce: String,
    /// The proxy's reason when it refused the last response.
    pub nack: Option<String>,
    /// Resources in the last response.
    pub resources: usize,
    /// How many names are subscribed (absent for wildcard subscriptions).
    pub subscribed: Option<usize>,
}

impl TypeStatus {
    fn refresh(&mut self) {
        self.status = if self.sent_nonce.is_empty() {
            "NOT SENT"
        } else if self.acked_nonce == self.sent_nonce && self.nack.is_none() {
            "SYNCED"
        } else {
            "STALE"
        };
    }
}

/// One proxy's status.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyStatus {
    /// xDS node id.
    pub node_id: String,
    /// What the proxy said it is.
    pub identity: ProxyIdentity,
    /// By short type name (`CDS`, `EDS`, `LDS`, `RDS`).
    pub types: BTreeMap<&'static str, TypeStatus>,
}

impl ProxyStatus {
    /// A newly connected proxy: nothing sent yet.
    pub fn new(node_id: String, identity: ProxyIdentity) -> Self {
        let types = type_url::ALL
            .iter()
            .map(|t| {
                let mut s = TypeStatus::default();
                s.refresh();
                (type_url::short(t), s)
            })
            .collect();
        ProxyStatus {
            node_id,
            identity,
            types,
        }
    }
}

/// Every connected proxy's status. A short `Mutex` section per update; never held across an await.
#[derive(Debug, Default)]
pub struct StatusRegistry {
    proxies: Mutex<BTreeMap<u64, ProxyStatus>>,
}

impl StatusRegistry {
    fn with(&self, conn: u64, t: &str, f: impl FnOnce(&mut TypeStatus)) {
        let mut g = self.proxies.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ts) = g
            .get_mut(&conn)
            .and_then(|p| p.types.get_mut(type_url::short(t)))
        {
            f(ts);
            ts.refresh();
        }
    }

    /// A proxy connected.
    pub fn insert(&self, conn: u64, status: ProxyStatus) {
        let mut g = self.proxies.lock().unwrap_or_else(|p| p.into_inner());
        g.insert(conn, status);
    }

    /// A proxy disconnected.
    pub fn remove(&self, conn: u64) {
        let mut g = self.proxies.lock().unwrap_or_else(|p| p.into_inner());
        g.remove(&conn);
    }

    /// A response went out.
    pub fn record_sent(&self, conn: u64, t: &str, version: &str, nonce: &str, count: usize) {
        self.with(conn, t, |s| {
            s.sent_version = version.into();
            s.sent_nonce = nonce.into();
            s.resources = count;
        });
    }

    /// The proxy accepted a response.
    pub fn record_ack(&self, conn: u64, t: &str, version: &str, nonce: &str) {
        self.with(conn, t, |s| {
            s.acked_version = version.into();
            s.acked_nonce = nonce.into();
            s.nack = None;
        });
    }

    /// The proxy refused a response.
    pub fn record_nack(&self, conn: u64, t: &str, _nonce: &str, reason: &str) {
        self.with(conn, t, |s| s.nack = Some(reason.into()));
    }

    /// The names a proxy watches changed.
    pub fn record_subscription(&self, conn: u64, t: &str, names: Option<usize>) {
        self.with(conn, t, |s| s.subscribed = names);
    }

    /// A copy of every proxy's status, sorted by node id.
    pub fn snapshot(&self) -> Vec<ProxyStatus> {
        let g = self.proxies.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<ProxyStatus> = g.values().cloned().collect();
        v.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        v
    }
}
