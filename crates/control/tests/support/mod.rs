//! Shared by the ADS tests: a model from YAML, a served Discovery, a proxy identity, a scripted delta
//! client.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use weft_control::metrics::Metrics;
use weft_control::model::Model;
use weft_control::server::grpc::AdsService;
use weft_control::server::status::{StatusRegistry, TypeStatus};
use weft_control::server::Discovery;
use weft_control::view::Snapshot;
use weft_xds::ads::AggregatedDiscoveryServiceClient;
use weft_xds::node::ProxyIdentity;
use weft_xds::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use weft_xds::type_url;

pub const REGISTRY: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 9080, name: http, protocol: HTTP}]\n  endpoints: [{address: 127.0.0.1, labels: {version: v1}}]\n";

/// The load assignments of the two services of [`two_services`].
pub const EDS_REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";
pub const EDS_RATINGS: &str = "outbound|9080||ratings.default.svc.cluster.local";

/// [`REGISTRY`]'s `reviews` and a `ratings` beside it, each with one endpoint at the given address.
pub fn two_services(reviews_ip: &str, ratings_ip: &str) -> String {
    format!(
        "{}---\n{}",
        REGISTRY.replace("127.0.0.1", reviews_ip),
        REGISTRY
            .replace("reviews", "ratings")
            .replace("127.0.0.1", ratings_ip)
    )
}

pub fn model(generation: u64, yaml: &str) -> Arc<Model> {
    let p = weft_api::parse_file("m.yaml", yaml);
    assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
    let res: Vec<_> = p.resources.into_iter().map(Arc::new).collect();
    Arc::new(Model::build(
        generation,
        &res,
        weft_api::MeshConfig::default(),
    ))
}

/// A served Discovery on loopback.
pub struct Served {
    pub model_tx: watch::Sender<Arc<Snapshot>>,
    pub status: Arc<StatusRegistry>,
    pub metrics: Arc<Metrics>,
    pub addr: SocketAddr,
}

impl Served {
    /// Publishes the next generation.
    pub fn publish(&self, generation: u64, yaml: &str) {
        let next = Snapshot::next(model(generation, yaml), &self.model_tx.borrow());
        self.model_tx.send(Arc::new(next)).expect("publish");
    }

    /// The status of type `t` (`CDS`, `EDS`, …) of the one connected proxy, once `ready` holds for it
    /// (the server records asynchronously); panics naming `what` after 5 s.
    pub async fn type_status(
        &self,
        t: &str,
        what: &str,
        ready: impl Fn(&TypeStatus) -> bool,
    ) -> TypeStatus {
        eventually(what, || {
            let snap = self.status.snapshot();
            let s = snap.first()?.types.get(t)?;
            ready(s).then(|| s.clone())
        })
        .await
    }
}

/// Polls `f` until it returns a value, with a growing delay; panics naming `what` after 5 s.
pub async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut delay = Duration::from_millis(1);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within 5 s: {what}"
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

pub async fn serve(yaml: &str) -> Served {
    let (model_tx, model_rx) = watch::channel(Arc::new(Snapshot::new(model(1, yaml))));
    let status = Arc::new(StatusRegistry::default());
    let listener =
        weft_control::server::listen("127.0.0.1:0".parse().expect("address")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let metrics = Arc::new(Metrics::new());
    let discovery = Discovery::new(model_rx, status.clone(), metrics.xds.clone());
    let svc = AdsService::new(discovery, 16 * 1024 * 1024);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Served {
        model_tx,
        status,
        metrics,
        addr,
    }
}

pub fn identity() -> ProxyIdentity {
    ProxyIdentity {
        workload: "productpage-v1".into(),
        namespace: "default".into(),
        ip: "127.0.0.2".into(),
        inbound_ports: vec![(9080, 19080)],
        admin_address: "127.0.0.2:15000".into(),
        ..Default::default()
    }
}

/// A scripted delta (incremental) ADS client.
pub struct Stream {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
    node: ProxyIdentity,
    /// Fences sent so far (see [`Stream::quiet`]).
    fences: usize,
    /// The types subscribed to so far.
    subscribed: std::collections::HashSet<String>,
}

impl Stream {
    /// A delta stream for the proxy [`identity`].
    pub async fn open(served: &Served) -> Stream {
        Stream::open_as(served, identity()).await
    }

    /// A delta stream for the proxy `node` (sent with the first subscription).
    pub async fn open_as(served: &Served, node: ProxyIdentity) -> Stream {
        let mut client =
            AggregatedDiscoveryServiceClient::connect(format!("http://{}", served.addr))
                .await
                .expect("connect");
        let (tx, req_rx) = mpsc::channel(8);
        let rx = client
            .delta_aggregated_resources(ReceiverStream::new(req_rx))
            .await
            .expect("delta is served")
            .into_inner();
        Stream {
            tx,
            rx,
            node,
            fences: 0,
            subscribed: Default::default(),
        }
    }

    pub async fn send(&self, r: DeltaDiscoveryRequest) {
        self.tx.send(r).await.expect("send");
    }

    /// Subscribes to `names` of type `t`; `first` sends the node (the stream's first request).
    pub async fn subscribe(
        &mut self,
        t: &str,
        names: &[&str],
        initial: HashMap<String, String>,
        first: bool,
    ) {
        self.subscribed.insert(t.to_string());
        self.send(DeltaDiscoveryRequest {
            node: first.then(|| self.node.to_node()),
            type_url: t.into(),
            resource_names_subscribe: names.iter().map(|s| s.to_string()).collect(),
            initial_resource_versions: initial,
            ..Default::default()
        })
        .await;
    }

    pub async fn recv(&mut self) -> DeltaDiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(5), self.rx.message())
            .await
            .expect("a response within 5 s")
            .expect("stream ok")
            .expect("not closed")
    }

    pub async fn ack(&self, r: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        })
        .await;
    }

    /// Refuses `r`, as weft-proxy does: the nonce and an error naming the reason.
    pub async fn nack(&self, r: &DeltaDiscoveryResponse, reason: &str) {
        self.send(DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            error_detail: Some(weft_xds::pb::google::rpc::Status {
                code: 3,
                message: reason.into(),
                details: vec![],
            }),
            ..Default::default()
        })
        .await;
    }

    /// Nothing is on its way: the answer to a fence comes next. The fence subscribes to a load
    /// assignment no service has, which weftd answers at once (with its removal, or, as the stream's
    /// first endpoint request, with nothing); a stream's requests are handled in order, so anything
    /// weftd sent before handling it arrives first. The fence is acknowledged, and stays subscribed
    /// (nothing ever has that name). Needs no endpoint response unanswered.
    pub async fn quiet(&mut self) {
        self.fences += 1;
        let name = format!("outbound|1||fence-{}.test", self.fences);
        let removed = if self.subscribed.contains(type_url::ENDPOINT) {
            vec![name.clone()]
        } else {
            vec![]
        };
        self.subscribe(type_url::ENDPOINT, &[&name], HashMap::new(), false)
            .await;
        let m = self.recv().await;
        assert!(
            m.type_url == type_url::ENDPOINT
                && m.resources.is_empty()
                && m.removed_resources == removed,
            "unexpected response: {m:?}"
        );
        self.ack(&m).await;
    }
}

/// The resource names of a delta response, sorted.
pub fn names(r: &DeltaDiscoveryResponse) -> Vec<&str> {
    let mut v: Vec<&str> = r.resources.iter().map(|r| r.name.as_str()).collect();
    v.sort();
    v
}
