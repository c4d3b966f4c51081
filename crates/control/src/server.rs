//! The ADS server: one task per proxy stream, pushing what changed for that proxy whenever a new model is
//! published, and recording ACKs and NACKs for proxy-status.

pub mod status;

use crate::model::Model;
use crate::translate::{self, ProxyResources};
use status::{ProxyStatus, StatusRegistry};
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn, Instrument};
use weft_xds::ads::{AggregatedDiscoveryService, DiscoveryRequest, DiscoveryResponse};
use weft_xds::node::ProxyIdentity;
use weft_xds::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use weft_xds::{type_url, Any};

/// Responses queued per stream before the stream task waits (a slow proxy slows only itself).
const STREAM_BUFFER: usize = 16;

/// The ADS service.
pub struct Discovery {
    model: watch::Receiver<Arc<Model>>,
    status: Arc<StatusRegistry>,
    next_conn: AtomicU64,
}

impl Discovery {
    /// A service that serves whatever model `model` holds.
    pub fn new(model: watch::Receiver<Arc<Model>>, status: Arc<StatusRegistry>) -> Self {
        Discovery {
            model,
            status,
            next_conn: AtomicU64::new(1),
        }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Discovery {
    type StreamAggregatedResourcesStream = ResponseStream;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let conn = Connection {
            id,
            model: self.model.clone(),
            status: self.status.clone(),
            tx,
            proxy: None,
            types: BTreeMap::new(),
            nonce: 0,
        };
        let span = tracing::info_span!("ads", conn = id, peer = %peer);
        tokio::spawn(conn.run(request.into_inner()).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Err(Status::unimplemented(
            "delta xDS is not served yet: use state-of-the-world ADS (StreamAggregatedResources)",
        ))
    }
}

/// What one stream has asked for and been sent, per type.
#[derive(Default)]
struct TypeState {
    /// `None` = wildcard (CDS, LDS); otherwise the names subscribed.
    names: Option<BTreeSet<String>>,
    /// Hash of each resource last sent, to send only what changed.
    sent: BTreeMap<String, u64>,
    /// Nonce of the last response.
    last_nonce: String,
    /// A request for this type arrived: it is subscribed.
    subscribed: bool,
}

struct Connection {
    id: u64,
    model: watch::Receiver<Arc<Model>>,
    status: Arc<StatusRegistry>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    proxy: Option<ProxyIdentity>,
    types: BTreeMap<&'static str, TypeState>,
    nonce: u64,
}

fn known_type(url: &str) -> Option<&'static str> {
    type_url::ALL.into_iter().find(|t| *t == url)
}

fn hash_any(a: &Any) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    a.value.hash(&mut h);
    h.finish()
}

impl Connection {
    async fn run(mut self, mut inbound: Streaming<DiscoveryRequest>) {
        let mut model_rx = self.model.clone();
        loop {
            tokio::select! {
                // Cancellation-safe: `message()` loses nothing when the other branch wins.
                msg = inbound.message() => match msg {
                    Ok(Some(req)) => {
                        if let Err(e) = self.on_request(req).await {
                            warn!(error = %e, "closing stream");
                            let _ = self.tx.send(Err(e)).await;
                            break;
                        }
                    }
                    Ok(None) => {
                        debug!("proxy closed stream");
                        break;
                    }
                    Err(e) => {
                        debug!(error = %e, "stream error");
                        break;
                    }
                },
                changed = model_rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    if self.proxy.is_some() && self.push_all().await.is_err() {
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

    async fn on_request(&mut self, req: DiscoveryRequest) -> Result<(), Status> {
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
        }
        let Some(t) = known_type(&req.type_url) else {
            warn!(type_url = %req.type_url, "request for a type weftd does not serve");
            return Ok(());
        };
        let state = self.types.entry(t).or_default();
        if !req.response_nonce.is_empty() {
            if req.response_nonce != state.last_nonce {
                // A reply to an older response: superseded, nothing to do (Envoy's rule).
                return Ok(());
            }
            match &req.error_detail {
                Some(err) => {
                    warn!(type_url = type_url::short(t), nonce = %req.response_nonce, reason = %err.message, "nack");
                    self.status
                        .record_nack(self.id, t, &req.response_nonce, &err.message);
                }
                None => {
                    debug!(type_url = type_url::short(t), version = %req.version_info, "ack");
                    self.status
                        .record_ack(self.id, t, &req.version_info, &req.response_nonce);
                }
            }
        }
        let names: Option<BTreeSet<String>> = if t == type_url::CLUSTER || t == type_url::LISTENER {
            None
        } else {
            Some(req.resource_names.iter().cloned().collect())
        };
        let first = !state.subscribed;
        let names_changed = state.names != names;
        state.subscribed = true;
        if names_changed {
            if let Some(new) = &names {
                // Forget what was sent for names no longer watched, so re-subscribing re-sends them.
                state.sent.retain(|k, _| new.contains(k));
            }
            state.names = names;
        }
        self.status
            .record_subscription(self.id, t, state.names.as_ref());
        if first || names_changed {
            let model = self.model.borrow().clone();
            let resources = translate::for_proxy(&model, self.proxy.as_ref().expect("set above"));
            self.push_type(t, &model, &resources, first).await?;
        }
        Ok(())
    }

    /// Pushes every subscribed type, in Envoy's order (clusters, endpoints, listeners, routes).
    async fn push_all(&mut self) -> Result<(), Status> {
        let model = self.model.borrow_and_update().clone();
        let Some(proxy) = self.proxy.as_ref() else {
            return Ok(());
        };
        let resources = translate::for_proxy(&model, proxy);
        for t in type_url::ALL {
            if self.types.get(t).is_some_and(|s| s.subscribed) {
                self.push_type(t, &model, &resources, false).await?;
            }
        }
        Ok(())
    }

    /// Sends `t` if anything in it changed for this proxy. Wildcard types are sent whole; named types only
    /// the named resources that changed. `force` sends even when nothing changed (a first request).
    async fn push_type(
        &mut self,
        t: &'static str,
        model: &Model,
        all: &ProxyResources,
        force: bool,
    ) -> Result<(), Status> {
        let empty = BTreeMap::new();
        let have = all.of(t).unwrap_or(&empty);
        let state = self.types.entry(t).or_default();
        let hashes: BTreeMap<String, u64> = match &state.names {
            None => have.iter().map(|(k, v)| (k.clone(), hash_any(v))).collect(),
            Some(names) => have
                .iter()
                .filter(|(k, _)| names.contains(*k))
                .map(|(k, v)| (k.clone(), hash_any(v)))
                .collect(),
        };
        let to_send: Vec<Any> = match &state.names {
            None => {
                if !force && hashes == state.sent {
                    return Ok(());
                }
                have.values().cloned().collect()
            }
            Some(_) => {
                let changed: Vec<Any> = hashes
                    .iter()
                    .filter(|(k, h)| state.sent.get(*k) != Some(h))
                    .map(|(k, _)| have[k].clone())
                    .collect();
                if changed.is_empty() && !force {
                    return Ok(());
                }
                changed
            }
        };
        match &state.names {
            None => state.sent = hashes,
            Some(_) => state.sent.extend(hashes),
        }
        self.nonce += 1;
        let nonce = format!("{}-{}", self.id, self.nonce);
        state.last_nonce = nonce.clone();
        let version = model.generation.to_string();
        let count = to_send.len();
        let resp = DiscoveryResponse {
            version_info: version.clone(),
            resources: to_send,
            type_url: t.to_string(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        self.status.record_sent(self.id, t, &version, &nonce, count);
        debug!(type_url = type_url::short(t), version = %version, resources = count, "push");
        self.tx
            .send(Ok(resp))
            .await
            .map_err(|_| Status::cancelled("proxy stream closed"))
    }
}
