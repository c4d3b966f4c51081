//! Shared by the ADS tests: a model from YAML, a served Discovery, a proxy identity.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use weft_control::model::Model;
use weft_control::server::grpc::AdsService;
use weft_control::server::status::StatusRegistry;
use weft_control::server::Discovery;
use weft_control::view::Snapshot;
use weft_xds::node::ProxyIdentity;

pub const REGISTRY: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 9080, name: http, protocol: HTTP}]\n  endpoints: [{address: 127.0.0.1, labels: {version: v1}}]\n";

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
    pub addr: SocketAddr,
}

impl Served {
    /// Publishes the next generation.
    pub fn publish(&self, generation: u64, yaml: &str) {
        let next = Snapshot::next(model(generation, yaml), &self.model_tx.borrow());
        self.model_tx.send(Arc::new(next)).expect("publish");
    }
}

pub async fn serve(yaml: &str) -> Served {
    let (model_tx, model_rx) = watch::channel(Arc::new(Snapshot::new(model(1, yaml))));
    let status = Arc::new(StatusRegistry::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let svc = AdsService::new(Discovery::new(model_rx, status.clone()), 16 * 1024 * 1024);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Served {
        model_tx,
        status,
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
