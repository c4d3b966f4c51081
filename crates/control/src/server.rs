//! The ADS server, state of the world and incremental (delta): one task per proxy stream, pushing what
//! changed for that proxy whenever a new snapshot is published, and recording ACKs and NACKs for
//! proxy-status.
//!
//! A response counts as delivered only once the proxy ACKs it. Each type has at most one response
//! (or one delta response in parts) unanswered; what comes due meanwhile is sent once it is answered,
//! computed from what the proxy then holds. A NACK means the proxy applied none of the response
//! (weft-proxy and Envoy alike): weftd goes back to what the proxy held before, and sends every
//! resource the refused response carried again with its next response from a later config
//! generation, changed or not, so a good resource refused beside a bad one is not left behind.
//!
//! Both protocols share one connection state machine; they differ only in how requests name what they
//! want and in how a response says what changed. Resources come from the shared per-scope [`View`]s of
//! the snapshot, so what a proxy was sent is remembered as "that view" (one pointer), not as a copy per
//! proxy, and what changed is the view's cached diff. Responses are written as gRPC frames that point at
//! the views' encoded resources ([`wire`], served by [`grpc`]), so a resource sent to a thousand proxies
//! is encoded once and copied by none of them.
//!
//! Secrets (SDS, on the same stream) are the exception: weftd serves one, `ROOTCA`, from the CA's
//! roots rather than from the model ([`Discovery::with_roots`], [`crate::sds`]), tracked per stream
//! apart from the views and sent again when the roots change.

pub mod grpc;
pub mod status;
pub mod wire;

use crate::metrics::XdsMetrics;
use crate::sds;
use crate::translate::{self, Scope};
use crate::view::{type_index, Res, Snapshot, TypeDiff, View, TYPES};
use bytes::Bytes;
use grpc::Out;
use status::{ProxyStatus, StatusRegistry};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;
use tracing::{debug, info, warn, Instrument};
use weft_xds::ads::{DiscoveryRequest, DiscoveryResponse};
use weft_xds::node::ProxyIdentity;
use weft_xds::pb::envoy::config::core::v3::Node;
use weft_xds::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use weft_xds::type_url;

/// Responses queued per stream before the stream task waits (a slow proxy slows only itself).
const STREAM_BUFFER: usize = 16;
/// Responses with more resources than this hold a push permit until the proxy answers them, so a burst
/// of proxies connecting at once cannot queue gigabytes of encoded config.
const LARGE_PUSH: usize = 64;
/// Large pushes in flight at once.
const LARGE_PUSH_PERMITS: usize = 16;
/// Resources per delta response: a proxy's first config of 10,000 services is sent as several
/// responses, so neither side holds one message of many megabytes (tonic's decoder in the proxy keeps a
/// buffer the size of the largest message it received).
const DELTA_CHUNK: usize = 500;
/// Connections the kernel queues on the xDS listener until weftd accepts them. A fleet reconnecting
/// after weftd restarts opens a thousand streams within milliseconds, while weftd's workers are busy
/// sending first configs. With the 128 that `TcpListener::bind` asks for, the queue overflowed: the
/// kernel dropped SYNs and handshake ACKs, and reset the connections whose handshake it gave up on
/// (`weft-xds-sim --connect-at-once 0`, 1,000 proxies: up to 55 streams lost). Linux caps this at
/// `net.core.somaxconn` (4,096 by default), so this asks for what the machine allows, as Go's
/// listeners (istiod) and Envoy's do.
pub const LISTEN_BACKLOG: u32 = 65_535;

/// Binds the xDS listener on `addr` with a queue of [`LISTEN_BACKLOG`] connections.
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted weftd binds again while the old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The ADS service.
pub struct Discovery {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    roots: Option<sds::Roots>,
    status: Arc<StatusRegistry>,
    metrics: Arc<XdsMetrics>,
    next_conn: AtomicU64,
    large_pushes: Arc<Semaphore>,
}

impl Discovery {
    /// A service that serves whatever snapshot `snapshots` holds, recording each proxy's sync in
    /// `status` and what it pushes and hears back in `metrics`.
    pub fn new(
        snapshots: watch::Receiver<Arc<Snapshot>>,
        status: Arc<StatusRegistry>,
        metrics: Arc<XdsMetrics>,
    ) -> Self {
        Discovery {
            snapshots,
            status,
            metrics,
            next_conn: AtomicU64::new(1),
            large_pushes: Arc::new(Semaphore::new(LARGE_PUSH_PERMITS)),
            roots: None,
        }
    }

    /// Serves the mesh's roots as the SDS secret `ROOTCA` to every proxy that asks for it, and again
    /// to each whenever they change. Without roots, requests for secrets go unanswered (a proxy waits
    /// for them, as Envoy waits for a secret no one has yet).
    pub fn with_roots(mut self, roots: sds::Roots) -> Self {
        self.roots = Some(roots);
        self
    }

    /// Serves one stream of either protocol.
    fn serve(
        &self,
        protocol: Protocol,
        requests: Requests,
        tx: mpsc::Sender<Out>,
        peer: Option<std::net::SocketAddr>,
    ) {
        spawn(self.connection(protocol, tx), requests, peer);
    }

    fn connection(&self, protocol: Protocol, tx: mpsc::Sender<Out>) -> Connection {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        Connection {
            id,
            protocol,
            snapshots: self.snapshots.clone(),
            snap: self.snapshots.borrow().clone(),
            roots: self.roots.clone(),
            secrets: Secrets::default(),
            status: self.status.clone(),
            metrics: self.metrics.clone(),
            large_pushes: self.large_pushes.clone(),
            tx,
            proxy: None,
            converging: None,
            scope: None,
            inbound: None,
            types: Default::default(),
            nonce: 0,
            permit: None,
        }
    }
}

type Requests = Pin<Box<dyn Stream<Item = Result<Req, Status>> + Send>>;

fn spawn(conn: Connection, requests: Requests, peer: Option<std::net::SocketAddr>) {
    let peer = peer.map(|a| a.to_string()).unwrap_or_default();
    let span =
        tracing::info_span!("ads", conn = conn.id, peer = %peer, protocol = conn.protocol.name());
    tokio::spawn(conn.run(requests).instrument(span));
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Sotw,
    Delta,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Sotw => "sotw",
            Protocol::Delta => "delta",
        }
    }
}

/// A request of either protocol.
struct Req {
    node: Option<Node>,
    type_url: String,
    version_info: String,
    response_nonce: String,
    error: Option<String>,
    names: Names,
}

enum Names {
    /// State of the world: the whole list each time.
    Replace(Vec<String>),
    /// Incremental.
    Delta {
        subscribe: Vec<String>,
        unsubscribe: Vec<String>,
        initial: HashMap<String, String>,
    },
}

impl Req {
    fn from_sotw(r: DiscoveryRequest) -> Req {
        Req {
            node: r.node,
            type_url: r.type_url,
            version_info: r.version_info,
            response_nonce: r.response_nonce,
            error: r.error_detail.map(|e| e.message),
            names: Names::Replace(r.resource_names),
        }
    }

    fn from_delta(r: DeltaDiscoveryRequest) -> Req {
        Req {
            node: r.node,
            type_url: r.type_url,
            version_info: String::new(),
            response_nonce: r.response_nonce,
            error: r.error_detail.map(|e| e.message),
            names: Names::Delta {
                subscribe: r.resource_names_subscribe,
                unsubscribe: r.resource_names_unsubscribe,
                initial: r.initial_resource_versions,
            },
        }
    }
}

/// The names a proxy watches of one type.
type NameSet = HashSet<Arc<str>, foldhash::fast::RandomState>;

/// What a proxy watches of one type.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
enum Sub {
    /// Everything weftd has for it (CDS and LDS always; any type a delta client asks `*` for).
    #[default]
    Wildcard,
    /// These names only. Names are shared with the views where they exist, so a thousand proxies
    /// watching ten thousand clusters hold pointers, not copies. Hashed, not ordered: a first push
    /// looks every resource of the view up here, and a B-tree's string compares were a fifth of it.
    Names(NameSet),
}

impl Sub {
    fn has(&self, name: &str) -> bool {
        match self {
            Sub::Wildcard => true,
            Sub::Names(n) => n.contains(name),
        }
    }
    fn count(&self) -> Option<usize> {
        match self {
            Sub::Wildcard => None,
            Sub::Names(n) => Some(n.len()),
        }
    }
}

/// What one stream has asked for and been sent, per type.
#[derive(Default)]
struct TypeState {
    sub: Sub,
    /// A request for this type arrived.
    subscribed: bool,
    /// The view the proxy's copy of the shared resources came from (`None`: nothing sent yet, or the
    /// first response was refused), counting the response in flight as applied.
    view: Option<Arc<View>>,
    /// Versions of the proxy's own (inbound) resources, counted the same way.
    inbound: BTreeMap<String, u64>,
    /// Delta: what the proxy said it holds when it (re)connected; used once, by the first push.
    initial: Option<HashMap<String, String>>,
    /// Names newly subscribed, to send with the next response.
    pending: Vec<Arc<str>>,
    /// The response the proxy has not answered yet.
    flight: Option<Flight>,
    /// A push came due while `flight` was unanswered: it goes out once the answer comes.
    deferred: bool,
    /// Names carried by refused responses: sent again, whatever their version, by the first response
    /// built from a generation after `resend_after` (the refused config itself would only be refused
    /// again).
    resend: NameSet,
    resend_after: u64,
    /// Number of the last response sent (nonce `<conn>-<n>`).
    last_nonce: u64,
    /// The proxy's last answer for this type was a refusal (counted in `pilot_xds_<type>_reject`).
    refusing: bool,
}

/// A response of one type the proxy has not answered yet: one message, or the parts of a large delta
/// response, which the proxy answers one by one.
struct Flight {
    /// Nonce numbers of its parts, `first..=last`.
    first: u64,
    last: u64,
    /// Its version (the model generation), as sent and as a number.
    version: String,
    generation: u64,
    /// What the proxy held before it, which it still holds if it refuses it.
    before_view: Option<Arc<View>>,
    before_inbound: BTreeMap<String, u64>,
    /// Every name it carried, added, changed or removed.
    names: Vec<Arc<str>>,
    /// The proxy refused one of its parts.
    refused: bool,
}

/// SDS on one stream: what the proxy watches of the one secret weftd serves, `ROOTCA`
/// ([`crate::sds`]), and what it was sent. Kept apart from the four types of the views: a secret does
/// not come from the model, and it changes when the CA's root does, not with the config.
#[derive(Default)]
struct Secrets {
    /// A request for secrets arrived.
    subscribed: bool,
    /// The names watched (state of the world: the last request's; delta: the subscriptions).
    sub: Sub,
    /// The version of `ROOTCA` the proxy holds, counting the response in flight as applied (a refused
    /// one too: the same roots would be refused again, so they are sent again only once they change).
    sent: Option<u64>,
    /// Nonce number of the response the proxy has not answered yet; while there is one, a change of
    /// the roots waits for the answer (then `sent` differs from the roots, and they go out).
    flight: Option<u64>,
    /// Nonce number of the last response sent.
    last_nonce: u64,
}

/// One proxy's own resources of one generation, hashed.
struct Inbound {
    generation: u64,
    types: [BTreeMap<String, Res>; 4],
}

struct Connection {
    id: u64,
    protocol: Protocol,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    /// The snapshot this connection last pushed from.
    snap: Arc<Snapshot>,
    /// The mesh's roots, served as `ROOTCA`.
    roots: Option<sds::Roots>,
    secrets: Secrets,
    status: Arc<StatusRegistry>,
    metrics: Arc<XdsMetrics>,
    large_pushes: Arc<Semaphore>,
    tx: mpsc::Sender<Out>,
    proxy: Option<ProxyIdentity>,
    /// When the oldest config change this proxy has not yet acknowledged everything of began
    /// (`pilot_proxy_convergence_time`); `None` when it is in sync or refused part of it.
    converging: Option<Instant>,
    scope: Option<Scope>,
    inbound: Option<Inbound>,
    types: [TypeState; 4],
    nonce: u64,
    /// Held while a large push is unanswered (see [`LARGE_PUSH`]).
    permit: Option<OwnedSemaphorePermit>,
}

/// A resource's version as the proxy sees it: its hash in 16 lowercase hex digits, written without
/// allocating (one per resource per push).
fn version_text(v: u64) -> [u8; 16] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, d) in out.iter_mut().enumerate() {
        *d = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// One response's content, either protocol.
#[derive(Default)]
struct Update {
    /// Added or changed (all, for a state-of-the-world wildcard type): name, encoded `Any`, version.
    resources: Vec<(Arc<str>, Bytes, u64)>,
    removed: Vec<String>,
}

impl Connection {
    async fn run(mut self, mut inbound: Requests) {
        let mut snapshots = self.snapshots.clone();
        let mut roots = self.roots.clone();
        loop {
            tokio::select! {
                // Cancellation-safe: `next()` on a tonic stream loses nothing when the other branch wins.
                msg = inbound.next() => match msg {
                    Some(Ok(req)) => {
                        if let Err(e) = self.on_request(req).await {
                            warn!(error = %e, "closing stream");
                            let _ = self.tx.send(Out::End(e)).await;
                            break;
                        }
                    }
                    None => {
                        debug!("proxy closed stream");
                        break;
                    }
                    Some(Err(e)) => {
                        debug!(error = %e, "stream error");
                        break;
                    }
                },
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let snap = snapshots.borrow_and_update().clone();
                    if self.proxy.is_some() {
                        // A new snapshot of the same generation only carries new diagnostics.
                        if snap.model.generation != self.snap.model.generation {
                            self.converging.get_or_insert(snap.changed_at());
                        }
                        if self.push_all(snap).await.is_err() {
                            break;
                        }
                        self.check_converged();
                    }
                }
                // Cancellation-safe: `changed()` marks nothing seen until it returns.
                () = root_change(&mut roots) => {
                    if self.proxy.is_some() && self.push_secrets().await.is_err() {
                        break;
                    }
                }
            }
        }
        self.status.remove(self.id);
        if let Some(p) = &self.proxy {
            info!(proxy = %p.node_id(), "proxy disconnected");
        }
    }

    async fn on_request(&mut self, req: Req) -> Result<(), Status> {
        if self.proxy.is_none() {
            let node = req.node.as_ref().ok_or_else(|| {
                Status::invalid_argument("first request on the stream carries no node")
            })?;
            let identity = ProxyIdentity::from_node(node)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            info!(proxy = %node.id, workload = %identity.workload, namespace = %identity.namespace, "proxy connected");
            self.status
                .insert(self.id, ProxyStatus::new(node.id.clone(), identity.clone()));
            self.proxy = Some(identity);
            self.metrics.connected();
        }
        if req.type_url == type_url::SECRET {
            return self.on_secret_request(req).await;
        }
        let Some(ti) = type_index(&req.type_url) else {
            warn!(type_url = %req.type_url, "request for a type weftd does not serve");
            return Ok(());
        };
        let t = TYPES[ti];
        let mut due = false;
        if !req.response_nonce.is_empty() {
            let n = self.nonce_number(&req.response_nonce);
            let state = &self.types[ti];
            let in_flight = state
                .flight
                .as_ref()
                .zip(n)
                .is_some_and(|(f, n)| (f.first..=f.last).contains(&n));
            if let (true, Some(n)) = (in_flight, n) {
                due = self.on_answer(ti, &req, n);
            } else if n != Some(state.last_nonce) && self.protocol == Protocol::Sotw {
                // A reply to an older response, sent before the proxy saw the newer one: its answer to
                // that one will carry its current names. A delta request carries only changes, so it
                // is never dropped.
                return Ok(());
            }
        }
        let view = self.view_now();
        let state = &mut self.types[ti];
        let first = !state.subscribed;
        state.subscribed = true;
        let wildcard_type = t == type_url::CLUSTER || t == type_url::LISTENER;
        let intern = |n: &str| -> Arc<str> {
            view.types[ti]
                .get_key_value(n)
                .map(|(k, _)| k.clone())
                .unwrap_or_else(|| Arc::from(n))
        };
        let mut changed_sub = false;
        match req.names {
            Names::Replace(names) => {
                let new = if wildcard_type {
                    Sub::Wildcard
                } else {
                    Sub::Names(names.iter().map(|n| intern(n)).collect())
                };
                if new != state.sub || first {
                    if let (Sub::Names(new_names), old) = (&new, &state.sub) {
                        let added = new_names.iter().filter(|n| first || !old.has(n));
                        state.pending.extend(added.cloned());
                    }
                    state.sub = new;
                    changed_sub = true;
                }
            }
            Names::Delta {
                subscribe,
                unsubscribe,
                initial,
            } => {
                if first {
                    state.initial = Some(initial);
                    let star = subscribe.iter().any(|n| n == "*");
                    // CDS and LDS are always wildcard; other types only when asked for `*`.
                    state.sub = if star || wildcard_type {
                        Sub::Wildcard
                    } else {
                        Sub::Names(NameSet::default())
                    };
                    changed_sub = true;
                }
                if subscribe.iter().any(|n| n == "*") {
                    state.sub = Sub::Wildcard;
                    changed_sub = true;
                }
                if let Sub::Names(set) = &mut state.sub {
                    for n in &unsubscribe {
                        changed_sub |= set.remove(n.as_str());
                    }
                    for n in &subscribe {
                        let n = intern(n);
                        if set.insert(n.clone()) {
                            changed_sub = true;
                            if !first {
                                state.pending.push(n);
                            }
                        }
                    }
                }
            }
        }
        if changed_sub {
            self.status
                .record_subscription(self.id, t, state.sub.count());
        }
        if first || due || !state.pending.is_empty() {
            let snap = self.snap.clone();
            self.push_type(ti, &snap, first).await?;
        }
        self.check_converged();
        Ok(())
    }

    /// Records the convergence time once the proxy has answered everything a config change sent it
    /// and nothing more is due.
    fn check_converged(&mut self) {
        let Some(since) = self.converging else {
            return;
        };
        let settled = self
            .types
            .iter()
            .all(|s| s.flight.is_none() && !s.deferred && s.pending.is_empty());
        if settled {
            self.metrics.converged(since.elapsed());
            self.converging = None;
        }
    }

    /// The number of one of this connection's nonces (`<conn>-<n>`); `None` for any other text.
    fn nonce_number(&self, nonce: &str) -> Option<u64> {
        let (conn, n) = nonce.split_once('-')?;
        if conn.parse::<u64>().ok()? != self.id {
            return None;
        }
        n.parse().ok()
    }

    /// Records the proxy's answer to part `n` of type `ti`'s response in flight. Returns whether a
    /// push waited for it.
    fn on_answer(&mut self, ti: usize, req: &Req, n: u64) -> bool {
        let t = TYPES[ti];
        let state = &mut self.types[ti];
        let Some(flight) = state.flight.as_mut() else {
            return false;
        };
        if let Some(reason) = &req.error {
            warn!(type_url = type_url::short(t), nonce = %req.response_nonce, reason = %reason, "nack");
            self.status
                .record_nack(self.id, t, &req.response_nonce, reason);
            self.metrics.rejected(ti, !state.refusing);
            state.refusing = true;
            flight.refused = true;
        }
        // The parts of a delta response are answered in order; the last answer settles the response.
        if n < flight.last {
            return false;
        }
        let Some(flight) = state.flight.take() else {
            return false;
        };
        if flight.refused {
            // The proxy applied nothing of the refused part, so it holds what it held before the
            // response, except perhaps parts it accepted: go back, and send every name of the response
            // again whether it changes or not.
            state.view = flight.before_view;
            state.inbound = flight.before_inbound;
            state.resend.extend(flight.names);
            state.resend_after = state.resend_after.max(flight.generation);
            // The proxy did not converge on this change; the reject metrics say so.
            self.converging = None;
        } else {
            if std::mem::take(&mut state.refusing) {
                self.metrics.no_longer_refusing(ti);
            }
            let version = if req.version_info.is_empty() {
                &flight.version
            } else {
                &req.version_info
            };
            debug!(type_url = type_url::short(t), version = %version, "ack");
            self.status
                .record_ack(self.id, t, version, &req.response_nonce);
        }
        let due = std::mem::take(&mut state.deferred);
        if self.types.iter().all(|s| s.flight.is_none()) {
            self.permit = None;
        }
        due
    }

    /// The view of this proxy's scope in the connection's current snapshot.
    fn view_now(&mut self) -> Arc<View> {
        let proxy = self.proxy.as_ref().expect("identified before any push");
        let scope = self
            .scope
            .get_or_insert_with(|| Scope::of(&self.snap.model, proxy));
        self.snap.view(scope)
    }

    /// Moves to `snap` and pushes every subscribed type, in Envoy's order (clusters, endpoints,
    /// listeners, routes).
    async fn push_all(&mut self, snap: Arc<Snapshot>) -> Result<(), Status> {
        self.snap = snap;
        self.scope = None;
        for ti in 0..TYPES.len() {
            if self.types[ti].subscribed {
                let snap = self.snap.clone();
                self.push_type(ti, &snap, false).await?;
            }
        }
        Ok(())
    }

    /// The proxy's own resources (inbound, and its egress listeners, taken from `view`, the view of its
    /// scope in `snap`), translated once per generation.
    fn inbound_now(&mut self, snap: &Snapshot, view: &View) -> &Inbound {
        let generation = snap.model.generation;
        if self.inbound.as_ref().map(|i| i.generation) != Some(generation) {
            let proxy = self.proxy.as_ref().expect("identified before any push");
            let mut types: [BTreeMap<String, Res>; 4] = Default::default();
            for (t, m) in translate::own(&snap.model, proxy, &view.egress).by_type {
                if let Some(i) = type_index(t) {
                    types[i] = m.into_iter().map(|(k, v)| (k, Res::new(v))).collect();
                }
            }
            self.inbound = Some(Inbound { generation, types });
        }
        self.inbound.as_ref().expect("set above")
    }

    /// Sends type `ti` if anything in it changed for this proxy since it was last sent. `first`
    /// answers a first request even when there is nothing to say. While the type's last response is
    /// unanswered, only notes that a push is due: what to send depends on the answer.
    async fn push_type(&mut self, ti: usize, snap: &Snapshot, first: bool) -> Result<(), Status> {
        if self.types[ti].flight.is_some() {
            self.types[ti].deferred = true;
            return Ok(());
        }
        // `pilot_xds_push_time`: from here to the last frame queued, waits for a permit included.
        let started = Instant::now();
        let view = self.view_now();
        let protocol = self.protocol;
        let inbound_map = self.inbound_now(snap, &view).types[ti].clone();
        // A large first config waits for its permit before it is built: when a thousand proxies
        // connect at once, each would otherwise hold its whole config (56 bytes a resource, 0.5 to
        // 1 MB at 10,000 services) while it waits, most of weftd's memory in such a storm. A delta
        // proxy that reconnects is not held back: what it already holds is skipped, so its answer is
        // often small.
        let state = &self.types[ti];
        let reconnect = state.initial.as_ref().is_some_and(|i| !i.is_empty());
        if first && !reconnect && self.permit.is_none() {
            let bound = match &state.sub {
                Sub::Wildcard => view.types[ti].len(),
                Sub::Names(n) => n.len(),
            } + inbound_map.len();
            if bound > LARGE_PUSH {
                self.permit = Some(self.large_push_permit().await?);
            }
        }
        let state = &mut self.types[ti];
        let t = TYPES[ti];
        let shared = &view.types[ti];

        // What changed in the shared part, filtered by what the proxy watches.
        let mut update = Update::default();
        let mut any_change = false;
        let pending = std::mem::take(&mut state.pending);
        let had_view = state.view.is_some();
        match state.view.as_deref() {
            None => {
                for (k, r) in shared.iter().filter(|(k, _)| state.sub.has(k)) {
                    update
                        .resources
                        .push((k.clone(), r.encoded.clone(), r.version));
                }
                any_change = true;
            }
            Some(old) if std::ptr::eq(old, &*view) => {}
            Some(old) => {
                let d: Cow<'_, TypeDiff> = view.diff_from(old, ti);
                for k in d.changed.iter().filter(|k| state.sub.has(k)) {
                    let r = &shared[k];
                    update
                        .resources
                        .push((k.clone(), r.encoded.clone(), r.version));
                }
                update.removed.extend(
                    d.removed
                        .iter()
                        .filter(|k| state.sub.has(k))
                        .map(|k| k.to_string()),
                );
                any_change |= !d.changed.is_empty() || !d.removed.is_empty();
            }
        }
        // Names newly subscribed (the first response already carries everything subscribed). A proxy
        // subscribes to every cluster's endpoints at once, so the names already in the update are
        // looked up in a set, not searched: ten thousand of each made this loop most of a first sync.
        let pending = if had_view { pending } else { Vec::new() };
        let in_update: NameSet = if pending.is_empty() {
            NameSet::default()
        } else {
            update.resources.iter().map(|(n, _, _)| n.clone()).collect()
        };
        for k in pending {
            if in_update.contains(&k) {
                continue;
            }
            match shared.get(&k) {
                Some(r) => update
                    .resources
                    .push((k.clone(), r.encoded.clone(), r.version)),
                None if !inbound_map.contains_key(&*k) => update.removed.push(k.to_string()),
                None => {}
            }
            any_change = true;
        }
        // The proxy's own resources.
        for (k, r) in inbound_map.iter().filter(|(k, _)| state.sub.has(k)) {
            if state.inbound.get(k) != Some(&r.version) {
                update
                    .resources
                    .push((Arc::from(k.as_str()), r.encoded.clone(), r.version));
                any_change = true;
            }
        }
        for k in state.inbound.keys() {
            if !inbound_map.contains_key(k) && state.sub.has(k) {
                update.removed.push(k.clone());
                any_change = true;
            }
        }
        // What refused responses carried, as it is now, once the config has moved on.
        if !state.resend.is_empty() && snap.model.generation > state.resend_after {
            let mut in_update: NameSet =
                update.resources.iter().map(|(n, _, _)| n.clone()).collect();
            in_update.extend(update.removed.iter().map(|n| Arc::from(n.as_str())));
            for k in std::mem::take(&mut state.resend) {
                if !state.sub.has(&k) || in_update.contains(&k) {
                    continue;
                }
                if let Some(r) = shared.get(&k) {
                    update
                        .resources
                        .push((k.clone(), r.encoded.clone(), r.version));
                } else if let Some(r) = inbound_map.get(&*k) {
                    update
                        .resources
                        .push((k.clone(), r.encoded.clone(), r.version));
                } else {
                    update.removed.push(k.to_string());
                }
                any_change = true;
            }
        }
        // Delta reconnect: skip what the proxy already holds; remove what it holds that is gone.
        if let Some(initial) = state.initial.take() {
            update.resources.retain(|(k, _, v)| {
                initial.get(&**k).map(String::as_bytes) != Some(&version_text(*v)[..])
            });
            for name in initial.keys() {
                if state.sub.has(name)
                    && !shared.contains_key(name.as_str())
                    && !inbound_map.contains_key(name)
                {
                    update.removed.push(name.clone());
                }
            }
        }
        let before_view = state.view.replace(view.clone());
        let before_inbound = std::mem::replace(
            &mut state.inbound,
            inbound_map
                .iter()
                .map(|(k, r)| (k.clone(), r.version))
                .collect(),
        );
        if !any_change && !first {
            return Ok(());
        }
        let version = snap.model.generation.to_string();
        let wildcard_sotw =
            protocol == Protocol::Sotw && (t == type_url::CLUSTER || t == type_url::LISTENER);
        if wildcard_sotw {
            // State of the world for CDS and LDS: every response is the whole set.
            update.resources = shared
                .iter()
                .map(|(k, r)| (k.clone(), r.encoded.clone(), r.version))
                .chain(
                    inbound_map
                        .iter()
                        .map(|(k, r)| (Arc::from(k.as_str()), r.encoded.clone(), r.version)),
                )
                .collect();
        } else if update.resources.is_empty() && update.removed.is_empty() && !first {
            return Ok(());
        }
        if protocol == Protocol::Sotw && !wildcard_sotw && update.resources.is_empty() && !first {
            // Removals of named types need no message in state of the world.
            return Ok(());
        }
        let count = update.resources.len();
        // One permit per connection, held until every type's last response is answered: a connection
        // never waits for a second permit while holding one (that could deadlock the pool).
        if count > LARGE_PUSH && self.permit.is_none() {
            self.permit = Some(self.large_push_permit().await?);
        }
        // Only once the permit is held: a thousand proxies connecting at once all wait for one, and
        // each name is 16 bytes more per resource of a first config while they wait.
        let names: Vec<Arc<str>> = update
            .resources
            .iter()
            .map(|(n, _, _)| n.clone())
            .chain(update.removed.iter().map(|n| Arc::from(n.as_str())))
            .collect();
        let chunks = match protocol {
            Protocol::Sotw => 1,
            Protocol::Delta => count.div_ceil(DELTA_CHUNK).max(1),
        };
        let first_nonce = self.nonce + 1;
        self.nonce += chunks as u64;
        let nonce = format!("{}-{}", self.id, self.nonce);
        let state = &mut self.types[ti];
        state.last_nonce = self.nonce;
        state.flight = Some(Flight {
            first: first_nonce,
            last: self.nonce,
            version: version.clone(),
            generation: snap.model.generation,
            before_view,
            before_inbound,
            names,
            refused: false,
        });
        self.status.record_sent(self.id, t, &version, &nonce, count);
        debug!(type_url = type_url::short(t), version = %version, resources = count, removed = update.removed.len(), "push");
        match protocol {
            Protocol::Sotw => {
                let head = DiscoveryResponse {
                    version_info: version,
                    type_url: t.to_string(),
                    nonce,
                    ..Default::default()
                };
                let items: Vec<wire::Item<'_>> = update
                    .resources
                    .iter()
                    .map(|(name, any, _)| wire::Item {
                        name,
                        version: b"",
                        any,
                    })
                    .collect();
                self.send(wire::sotw(&head, &items)).await?;
                self.metrics.pushed(ti, started.elapsed());
                Ok(())
            }
            Protocol::Delta => {
                // Removals go with the first part; the proxy ACKs each, and only the last part's ACK
                // counts as the type being in sync. Each part is encoded as it goes out, so a
                // response of thousands of resources never sits whole in memory beside what the
                // stream has queued.
                let mut removed = update.removed;
                for k in 0..chunks {
                    let part = update
                        .resources
                        .get(k * DELTA_CHUNK..((k + 1) * DELTA_CHUNK).min(count))
                        .unwrap_or_default();
                    let versions: Vec<[u8; 16]> =
                        part.iter().map(|(_, _, v)| version_text(*v)).collect();
                    let head = DeltaDiscoveryResponse {
                        system_version_info: version.clone(),
                        removed_resources: std::mem::take(&mut removed),
                        type_url: t.to_string(),
                        nonce: format!("{}-{}", self.id, first_nonce + k as u64),
                        ..Default::default()
                    };
                    let items: Vec<wire::Item<'_>> = part
                        .iter()
                        .zip(&versions)
                        .map(|((name, any, _), v)| wire::Item {
                            name,
                            version: v,
                            any,
                        })
                        .collect();
                    self.send(wire::delta(&head, &items)).await?;
                }
                self.metrics.pushed(ti, started.elapsed());
                Ok(())
            }
        }
    }

    /// A request for secrets: records the answer to the response in flight and what the proxy
    /// watches, then sends `ROOTCA` if the proxy lacks it.
    async fn on_secret_request(&mut self, req: Req) -> Result<(), Status> {
        let n = (!req.response_nonce.is_empty())
            .then(|| self.nonce_number(&req.response_nonce))
            .flatten();
        let s = &mut self.secrets;
        if n.is_some() && n == s.flight {
            s.flight = None;
            match &req.error {
                Some(reason) => {
                    warn!(type_url = "SDS", nonce = %req.response_nonce, reason = %reason, "nack")
                }
                None => debug!(type_url = "SDS", nonce = %req.response_nonce, "ack"),
            }
        } else if !req.response_nonce.is_empty()
            && n != Some(s.last_nonce)
            && self.protocol == Protocol::Sotw
        {
            // An answer to an older response: the answer to the newer one carries the current names.
            return Ok(());
        }
        let first = !s.subscribed;
        s.subscribed = true;
        let current = self
            .roots
            .as_ref()
            .and_then(|r| r.borrow().clone())
            .map(|pem| Res::new(sds::root_ca_resource(&pem)));
        match req.names {
            Names::Replace(names) => {
                s.sub = Sub::Names(names.iter().map(|n| Arc::from(n.as_str())).collect())
            }
            Names::Delta {
                subscribe,
                unsubscribe,
                initial,
            } => {
                if first {
                    s.sub = Sub::Names(NameSet::default());
                    // A proxy that reconnects with the roots it holds is not sent them again.
                    let held = initial.get(sds::ROOTCA).map(String::as_bytes);
                    if current
                        .as_ref()
                        .is_some_and(|r| held == Some(&version_text(r.version)[..]))
                    {
                        s.sent = current.as_ref().map(|r| r.version);
                    }
                }
                if subscribe.iter().any(|n| n == "*") {
                    s.sub = Sub::Wildcard;
                }
                if let Sub::Names(set) = &mut s.sub {
                    for n in &unsubscribe {
                        set.remove(n.as_str());
                    }
                    set.extend(subscribe.iter().map(|n| Arc::from(n.as_str())));
                }
            }
        }
        if !s.sub.has(sds::ROOTCA) {
            // Not watched: what the proxy held of it is dropped with the subscription.
            s.sent = None;
        }
        self.push_secrets().await
    }

    /// Sends `ROOTCA` to a proxy that watches it and does not hold the current roots; tells it the
    /// roots are gone if they are. Waits while a response is unanswered.
    async fn push_secrets(&mut self) -> Result<(), Status> {
        let s = &mut self.secrets;
        if !s.subscribed || !s.sub.has(sds::ROOTCA) || s.flight.is_some() {
            return Ok(());
        }
        let current = self
            .roots
            .as_ref()
            .and_then(|r| r.borrow().clone())
            .map(|pem| Res::new(sds::root_ca_resource(&pem)));
        let (resources, removed): (Vec<Res>, Vec<String>) = match current {
            Some(r) if s.sent != Some(r.version) => (vec![r], Vec::new()),
            None if s.sent.is_some() => (Vec::new(), vec![sds::ROOTCA.to_string()]),
            _ => return Ok(()),
        };
        s.sent = resources.first().map(|r| r.version);
        self.nonce += 1;
        let s = &mut self.secrets;
        s.flight = Some(self.nonce);
        s.last_nonce = self.nonce;
        let nonce = format!("{}-{}", self.id, self.nonce);
        let version = s.sent.map(|v| format!("{v:016x}")).unwrap_or_default();
        let versions: Vec<[u8; 16]> = resources.iter().map(|r| version_text(r.version)).collect();
        let items: Vec<wire::Item<'_>> = resources
            .iter()
            .zip(&versions)
            .map(|(r, v)| wire::Item {
                name: sds::ROOTCA,
                version: match self.protocol {
                    Protocol::Sotw => b"",
                    Protocol::Delta => v,
                },
                any: &r.encoded,
            })
            .collect();
        debug!(type_url = "SDS", version = %version, resources = items.len(), "push");
        let frames = match self.protocol {
            Protocol::Sotw => wire::sotw(
                &DiscoveryResponse {
                    version_info: version,
                    type_url: type_url::SECRET.to_string(),
                    nonce,
                    ..Default::default()
                },
                &items,
            ),
            Protocol::Delta => wire::delta(
                &DeltaDiscoveryResponse {
                    system_version_info: version,
                    removed_resources: removed,
                    type_url: type_url::SECRET.to_string(),
                    nonce,
                    ..Default::default()
                },
                &items,
            ),
        };
        self.send(frames).await
    }

    /// Waits for one of the [`LARGE_PUSH_PERMITS`].
    async fn large_push_permit(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.large_pushes
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("weftd is shutting down"))
    }

    /// Queues one message on the stream; waits while the stream's queue is full.
    async fn send(&self, m: wire::Frames) -> Result<(), Status> {
        self.tx
            .send(Out::Message(m))
            .await
            .map_err(|_| Status::cancelled("proxy stream closed"))
    }
}

/// Returns when the roots change; never when there are none (or their sender is gone).
async fn root_change(roots: &mut Option<sds::Roots>) {
    if let Some(r) = roots {
        if r.changed().await.is_ok() {
            return;
        }
        *roots = None;
    }
    std::future::pending::<()>().await
}

/// The gauges a connection moved go back however its task ends (the stream closed, an error, or the
/// task dropped at shutdown).
impl Drop for Connection {
    fn drop(&mut self) {
        if self.proxy.is_some() {
            self.metrics.disconnected();
        }
        for (ti, s) in self.types.iter().enumerate() {
            if s.refusing {
                self.metrics.no_longer_refusing(ti);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{listen, version_text};
    use std::time::Duration;

    #[test]
    fn versions_are_sixteen_lowercase_hex_digits() {
        for v in [0, 1, 0xabc, 0x0123_4567_89ab_cdef, u64::MAX] {
            assert_eq!(version_text(v), *format!("{v:016x}").as_bytes());
        }
    }

    /// A fleet reconnecting at once while weftd is too busy to accept: the kernel must complete every
    /// handshake and queue the connection, not drop SYNs (with a queue of 128, connections past it
    /// waited for SYN retries, and some were reset).
    #[tokio::test]
    async fn the_xds_listener_queues_a_fleet_connecting_at_once() {
        // Linux caps the queue at net.core.somaxconn (4,096 by default since 5.4).
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(4096);
        let n = 500.min(somaxconn);
        let listener = listen("127.0.0.1:0".parse().expect("address")).expect("bind");
        let addr = listener.local_addr().expect("address");
        // Nothing accepts until every connection is established.
        let connects = (0..n).map(|_| tokio::net::TcpStream::connect(addr));
        let streams = tokio::time::timeout(
            Duration::from_secs(10),
            futures::future::try_join_all(connects),
        )
        .await
        .expect("every handshake completes while nothing accepts")
        .expect("connect");
        for i in 0..n {
            tokio::time::timeout(Duration::from_secs(10), listener.accept())
                .await
                .unwrap_or_else(|_| panic!("connection {i} of {n} queued"))
                .expect("accept");
        }
        drop(streams);
    }
}
