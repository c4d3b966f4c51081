//! A scripted ADS server for tests: serves whatever `XdsSet` the test sets (all of CDS/LDS, the requested
//! names of EDS/RDS), pushes again when the set changes, and hands every received request and sent
//! response to the test over channels. `kill` ends its streams and closes its port.
//!
//! It speaks both protocols. State of the world resends every subscribed type on a change. Delta keeps,
//! per stream and type, what it believes the client holds (name → version, the version being a hash of
//! the resource's bytes, so it is the same across server restarts) and sends only what differs, names
//! that went away in `removed_resources`, and names subscribed but unknown as removed too. Started with
//! [`DeltaMode::Unimplemented`] it answers delta with `Unimplemented`, as a server without it would.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hasher};
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};
use weft_xds::ads::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer, DiscoveryRequest,
    DiscoveryResponse,
};
use weft_xds::pb::envoy::config::cluster::v3::Cluster;
use weft_xds::pb::envoy::config::listener::v3::Listener;
use weft_xds::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use weft_xds::{type_url, Any};

/// The resources the server serves, with one version for all.
#[derive(Debug, Clone, Default)]
pub struct XdsSet {
    pub version: String,
    pub clusters: Vec<Any>,
    pub listeners: Vec<Any>,
    /// (cluster name, resource)
    pub endpoints: Vec<(String, Any)>,
    /// (route config name, resource)
    pub routes: Vec<(String, Any)>,
}

impl XdsSet {
    fn response(&self, url: &str, names: &[String], nonce: String) -> DiscoveryResponse {
        let pick = |v: &Vec<(String, Any)>| -> Vec<Any> {
            v.iter()
                .filter(|(n, _)| names.contains(n))
                .map(|(_, a)| a.clone())
                .collect()
        };
        let resources = match url {
            type_url::CLUSTER => self.clusters.clone(),
            type_url::LISTENER => self.listeners.clone(),
            type_url::ENDPOINT => pick(&self.endpoints),
            _ => pick(&self.routes),
        };
        DiscoveryResponse {
            version_info: self.version.clone(),
            resources,
            type_url: url.to_string(),
            nonce,
            ..Default::default()
        }
    }
}

impl XdsSet {
    /// Every resource of type `url`, by name.
    pub fn named(&self, url: &str) -> BTreeMap<String, Any> {
        match url {
            type_url::CLUSTER => self
                .clusters
                .iter()
                .map(|a| {
                    let c: Cluster = weft_xds::unpack(a).expect("cluster");
                    (c.name, a.clone())
                })
                .collect(),
            type_url::LISTENER => self
                .listeners
                .iter()
                .map(|a| {
                    let l: Listener = weft_xds::unpack(a).expect("listener");
                    (l.name, a.clone())
                })
                .collect(),
            type_url::ENDPOINT => self.endpoints.iter().cloned().collect(),
            _ => self.routes.iter().cloned().collect(),
        }
    }
}

/// The delta version the fake gives a resource: a hash of its bytes.
pub fn version_of(any: &Any) -> String {
    let mut h = DefaultHasher::new();
    h.write(&any.value);
    format!("{:016x}", h.finish())
}

/// How the fake answers `DeltaAggregatedResources`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaMode {
    /// Serves it.
    Serve,
    /// Answers `Unimplemented`, like a state-of-the-world-only server.
    Unimplemented,
}

/// One delta stream's view of one type.
#[derive(Debug, Default)]
struct DeltaType {
    /// `None`: wildcard.
    names: Option<BTreeSet<String>>,
    /// What the client is believed to hold: name → version.
    sent: HashMap<String, String>,
    /// Names newly subscribed: answered even if unchanged, and as removed if unknown.
    fresh: BTreeSet<String>,
}

impl DeltaType {
    fn wants(&self, name: &str) -> bool {
        self.names.as_ref().is_none_or(|n| n.contains(name))
    }

    /// What differs between `set` and what the client holds, or `None` if nothing (and not `always`).
    fn diff(
        &mut self,
        url: &str,
        set: &XdsSet,
        nonce: String,
        always: bool,
    ) -> Option<DeltaDiscoveryResponse> {
        let current: BTreeMap<String, Any> = set
            .named(url)
            .into_iter()
            .filter(|(n, _)| self.wants(n))
            .collect();
        let mut resources = Vec::new();
        for (name, any) in &current {
            let version = version_of(any);
            if self.sent.get(name) != Some(&version) || self.fresh.contains(name) {
                self.sent.insert(name.clone(), version.clone());
                resources.push(Resource {
                    name: name.clone(),
                    version,
                    resource: Some(any.clone()),
                    ..Default::default()
                });
            }
        }
        let mut removed: BTreeSet<String> = self
            .sent
            .keys()
            .filter(|n| !current.contains_key(*n))
            .cloned()
            .collect();
        removed.extend(
            self.fresh
                .iter()
                .filter(|n| !current.contains_key(*n))
                .cloned(),
        );
        self.fresh.clear();
        for n in &removed {
            self.sent.remove(n);
        }
        if resources.is_empty() && removed.is_empty() && !always {
            return None;
        }
        Some(DeltaDiscoveryResponse {
            system_version_info: set.version.clone(),
            resources,
            type_url: url.to_string(),
            removed_resources: removed.into_iter().collect(),
            nonce,
            ..Default::default()
        })
    }
}

pub struct FakeAds {
    pub addr: SocketAddr,
    pub set: watch::Sender<XdsSet>,
    pub requests: mpsc::UnboundedReceiver<DiscoveryRequest>,
    pub responses: mpsc::UnboundedReceiver<DiscoveryResponse>,
    pub delta_requests: mpsc::UnboundedReceiver<DeltaDiscoveryRequest>,
    pub delta_responses: mpsc::UnboundedReceiver<DeltaDiscoveryResponse>,
    kill: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct Svc {
    set: watch::Receiver<XdsSet>,
    requests: mpsc::UnboundedSender<DiscoveryRequest>,
    responses: mpsc::UnboundedSender<DiscoveryResponse>,
    delta_requests: mpsc::UnboundedSender<DeltaDiscoveryRequest>,
    delta_responses: mpsc::UnboundedSender<DeltaDiscoveryResponse>,
    delta: DeltaMode,
    kill: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Svc {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let mut set = self.set.clone();
        let mut kill = self.kill.clone();
        let requests = self.requests.clone();
        let responses = self.responses.clone();
        tokio::spawn(async move {
            let mut subs: HashMap<String, Vec<String>> = HashMap::new();
            let mut n = 0u64;
            let mut send = |url: &str, names: &[String], set: &XdsSet| {
                n += 1;
                let r = set.response(url, names, format!("{}-{n}", type_url::short(url)));
                let _ = responses.send(r.clone());
                r
            };
            loop {
                tokio::select! {
                    m = inbound.message() => {
                        let Ok(Some(req)) = m else { break };
                        let _ = requests.send(req.clone());
                        let changed = subs.get(&req.type_url) != Some(&req.resource_names);
                        subs.insert(req.type_url.clone(), req.resource_names.clone());
                        if req.response_nonce.is_empty() || changed {
                            let current = set.borrow().clone();
                            let r = send(&req.type_url, &req.resource_names, &current);
                            if tx.send(Ok(r)).await.is_err() { break }
                        }
                    }
                    c = set.changed() => {
                        if c.is_err() { break }
                        let current = set.borrow_and_update().clone();
                        for url in type_url::ALL {
                            if let Some(names) = subs.get(url).cloned() {
                                let r = send(url, &names, &current);
                                if tx.send(Ok(r)).await.is_err() { break }
                            }
                        }
                    }
                    _ = killed(&mut kill) => break,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        if self.delta == DeltaMode::Unimplemented {
            return Err(Status::unimplemented("delta xds"));
        }
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let mut set = self.set.clone();
        let mut kill = self.kill.clone();
        let requests = self.delta_requests.clone();
        let responses = self.delta_responses.clone();
        tokio::spawn(async move {
            let mut types: BTreeMap<&'static str, DeltaType> = BTreeMap::new();
            let mut n = 0u64;
            let mut nonce = |url: &str| {
                n += 1;
                format!("{}-{n}", type_url::short(url))
            };
            loop {
                tokio::select! {
                    m = inbound.message() => {
                        let Ok(Some(req)) = m else { break };
                        let _ = requests.send(req.clone());
                        let Some(url) = type_url::ALL.into_iter().find(|u| *u == req.type_url) else {
                            continue;
                        };
                        let first = !types.contains_key(url);
                        let t = types.entry(url).or_default();
                        if first {
                            let wildcard = url == type_url::CLUSTER
                                || url == type_url::LISTENER
                                || req.resource_names_subscribe.iter().any(|n| n == "*");
                            t.names = (!wildcard).then(BTreeSet::new);
                            t.sent = req.initial_resource_versions.clone().into_iter().collect();
                        }
                        for name in &req.resource_names_unsubscribe {
                            if let Some(names) = t.names.as_mut() {
                                names.remove(name);
                            }
                            t.sent.remove(name);
                        }
                        for name in req.resource_names_subscribe.iter().filter(|n| *n != "*") {
                            if let Some(names) = t.names.as_mut() {
                                names.insert(name.clone());
                            }
                            if !first {
                                t.fresh.insert(name.clone());
                            }
                        }
                        if first || !t.fresh.is_empty() {
                            let current = set.borrow().clone();
                            if let Some(r) = t.diff(url, &current, nonce(url), first) {
                                let _ = responses.send(r.clone());
                                if tx.send(Ok(r)).await.is_err() { break }
                            }
                        }
                    }
                    c = set.changed() => {
                        if c.is_err() { break }
                        let current = set.borrow_and_update().clone();
                        for (url, t) in types.iter_mut() {
                            if let Some(r) = t.diff(url, &current, nonce(url), false) {
                                let _ = responses.send(r.clone());
                                if tx.send(Ok(r)).await.is_err() { break }
                            }
                        }
                    }
                    _ = killed(&mut kill) => break,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn killed(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|k| *k).await.map(|_| ());
}

impl FakeAds {
    /// Starts on `addr` (port 0 for an ephemeral one) serving `initial` over both protocols.
    pub async fn start(addr: SocketAddr, initial: XdsSet) -> FakeAds {
        Self::start_with(addr, initial, DeltaMode::Serve).await
    }

    /// Starts on `addr` serving `initial`, answering delta as `delta` says.
    pub async fn start_with(addr: SocketAddr, initial: XdsSet, delta: DeltaMode) -> FakeAds {
        let listener = TcpListener::bind(addr).await.expect("bind fake ads");
        let addr = listener.local_addr().expect("addr");
        let (set, set_rx) = watch::channel(initial);
        let (req_tx, requests) = mpsc::unbounded_channel();
        let (resp_tx, responses) = mpsc::unbounded_channel();
        let (delta_req_tx, delta_requests) = mpsc::unbounded_channel();
        let (delta_resp_tx, delta_responses) = mpsc::unbounded_channel();
        let (kill, kill_rx) = watch::channel(false);
        let svc = Svc {
            set: set_rx,
            requests: req_tx,
            responses: resp_tx,
            delta_requests: delta_req_tx,
            delta_responses: delta_resp_tx,
            delta,
            kill: kill_rx.clone(),
        };
        let mut k = kill_rx;
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(AggregatedDiscoveryServiceServer::new(svc))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                    killed(&mut k).await
                })
                .await;
        });
        FakeAds {
            addr,
            set,
            requests,
            responses,
            delta_requests,
            delta_responses,
            kill,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves a new set (pushed to every stream).
    pub fn update(&self, set: XdsSet) {
        self.set.send_replace(set);
    }

    /// Ends every stream and closes the port.
    pub async fn kill(self) {
        self.kill.send_replace(true);
        self.task.abort();
        let _ = self.task.await;
    }
}
