//! A scripted ADS server for tests: serves whatever `XdsSet` the test sets (all of CDS/LDS, the requested
//! names of EDS/RDS), pushes again when the set changes, and hands every received request and sent
//! response to the test over channels. `kill` ends its streams and closes its port.

use std::collections::HashMap;
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
use weft_xds::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
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

pub struct FakeAds {
    pub addr: SocketAddr,
    pub set: watch::Sender<XdsSet>,
    pub requests: mpsc::UnboundedReceiver<DiscoveryRequest>,
    pub responses: mpsc::UnboundedReceiver<DiscoveryResponse>,
    kill: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct Svc {
    set: watch::Receiver<XdsSet>,
    requests: mpsc::UnboundedSender<DiscoveryRequest>,
    responses: mpsc::UnboundedSender<DiscoveryResponse>,
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
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented("delta xds"))
    }
}

async fn killed(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|k| *k).await.map(|_| ());
}

impl FakeAds {
    /// Starts on `addr` (port 0 for an ephemeral one) serving `initial`.
    pub async fn start(addr: SocketAddr, initial: XdsSet) -> FakeAds {
        let listener = TcpListener::bind(addr).await.expect("bind fake ads");
        let addr = listener.local_addr().expect("addr");
        let (set, set_rx) = watch::channel(initial);
        let (req_tx, requests) = mpsc::unbounded_channel();
        let (resp_tx, responses) = mpsc::unbounded_channel();
        let (kill, kill_rx) = watch::channel(false);
        let svc = Svc {
            set: set_rx,
            requests: req_tx,
            responses: resp_tx,
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
