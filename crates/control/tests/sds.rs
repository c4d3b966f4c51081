//! SDS on the ADS stream: `ROOTCA` to a proxy that asks for it (state of the world and delta), never
//! `default`, nothing while there is no root, and the new roots when they change.

use prost::Message;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use weft_control::metrics::Metrics;
use weft_control::server::grpc::AdsService;
use weft_control::server::status::StatusRegistry;
use weft_control::server::Discovery;
use weft_control::view::Snapshot;
use weft_xds::ads::{AggregatedDiscoveryServiceClient, DiscoveryRequest, DiscoveryResponse};
use weft_xds::pb::envoy::config::core::v3::data_source::Specifier;
use weft_xds::pb::envoy::extensions::transport_sockets::tls::v3::{secret, Secret};
use weft_xds::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use weft_xds::type_url;

mod support;
use support::{identity, model, REGISTRY};

const ROOT_A: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
const ROOT_B: &str = "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n";

/// A served Discovery: the roots' sender, and the model's, which must live as long as the streams.
struct Served {
    roots: watch::Sender<Option<Arc<str>>>,
    _model: watch::Sender<Arc<Snapshot>>,
}

/// A Discovery serving `REGISTRY` and the roots `root` (changed through the returned sender), on
/// loopback.
async fn serve(root: Option<&str>) -> (Served, std::net::SocketAddr) {
    let (model_tx, model_rx) = watch::channel(Arc::new(Snapshot::new(model(1, REGISTRY))));
    let (roots_tx, roots) = weft_control::sds::roots(root.map(str::to_string));
    let listener =
        weft_control::server::listen("127.0.0.1:0".parse().expect("address")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let metrics = Arc::new(Metrics::new());
    let discovery = Discovery::new(
        model_rx,
        Arc::new(StatusRegistry::default()),
        metrics.xds.clone(),
    )
    .with_roots(roots);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AdsService::new(discovery, 16 * 1024 * 1024))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (
        Served {
            roots: roots_tx,
            _model: model_tx,
        },
        addr,
    )
}

/// The PEM of a `ROOTCA` secret.
fn pem_of(any: &weft_xds::Any) -> String {
    assert_eq!(any.type_url, type_url::SECRET);
    let s = Secret::decode(any.value.as_slice()).expect("a secret");
    assert_eq!(s.name, "ROOTCA");
    match s.r#type {
        Some(secret::Type::ValidationContext(v)) => match v.trusted_ca.and_then(|d| d.specifier) {
            Some(Specifier::InlineBytes(b)) => String::from_utf8(b).expect("utf-8"),
            other => panic!("trusted_ca: {other:?}"),
        },
        other => panic!("not a validation context: {other:?}"),
    }
}

struct Sotw {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

impl Sotw {
    async fn open(addr: std::net::SocketAddr) -> Sotw {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        let (tx, req_rx) = mpsc::channel(8);
        let rx = client
            .stream_aggregated_resources(ReceiverStream::new(req_rx))
            .await
            .expect("stream")
            .into_inner();
        Sotw { tx, rx }
    }
    async fn send(&self, r: DiscoveryRequest) {
        self.tx.send(r).await.expect("send");
    }
    async fn recv(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(5), self.rx.message())
            .await
            .expect("a response within 5 s")
            .expect("stream ok")
            .expect("not closed")
    }
    /// Asks for secrets `names`, answering `last` (or first, with the node).
    async fn secrets(&self, names: &[&str], last: Option<&DiscoveryResponse>, nack: bool) {
        self.send(DiscoveryRequest {
            node: last.is_none().then(|| identity().to_node()),
            type_url: type_url::SECRET.into(),
            version_info: last.map(|r| r.version_info.clone()).unwrap_or_default(),
            response_nonce: last.map(|r| r.nonce.clone()).unwrap_or_default(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            error_detail: nack.then(|| weft_xds::pb::google::rpc::Status {
                code: 3,
                message: "bad root".into(),
                details: vec![],
            }),
            ..Default::default()
        })
        .await;
    }
    /// A fence: a request for clusters, answered at once; what came before it arrives first.
    async fn fence(&mut self) -> DiscoveryResponse {
        self.send(DiscoveryRequest {
            type_url: type_url::CLUSTER.into(),
            ..Default::default()
        })
        .await;
        let r = self.recv().await;
        assert_eq!(r.type_url, type_url::CLUSTER, "nothing before the fence");
        r
    }
}

#[tokio::test]
async fn sotw_serves_rootca_and_the_new_roots_when_they_change() {
    let (served, addr) = serve(Some(ROOT_A)).await;
    let mut s = Sotw::open(addr).await;
    // Envoy asks for its own certificate too; weftd serves only the roots.
    s.secrets(&["default", "ROOTCA"], None, false).await;
    let r = s.recv().await;
    assert_eq!(r.type_url, type_url::SECRET);
    assert_eq!(r.resources.len(), 1, "ROOTCA only");
    assert_eq!(pem_of(&r.resources[0]), ROOT_A);
    s.secrets(&["default", "ROOTCA"], Some(&r), false).await;
    // The ACK asks for nothing new.
    s.fence().await;
    served.roots.send_replace(Some(Arc::from(ROOT_B)));
    let r2 = s.recv().await;
    assert_eq!(pem_of(&r2.resources[0]), ROOT_B);
    assert_ne!(r2.version_info, r.version_info);
    assert_ne!(r2.nonce, r.nonce);
}

#[tokio::test]
async fn sotw_refused_roots_are_not_sent_again_until_they_change() {
    let (served, addr) = serve(Some(ROOT_A)).await;
    let mut s = Sotw::open(addr).await;
    s.secrets(&["ROOTCA"], None, false).await;
    let r = s.recv().await;
    s.secrets(&["ROOTCA"], Some(&r), true).await;
    // The refusal is handled before the fence: a resend would come first.
    s.fence().await;
    served.roots.send_replace(Some(Arc::from(ROOT_B)));
    let r2 = s.recv().await;
    assert_eq!(pem_of(&r2.resources[0]), ROOT_B);
}

#[tokio::test]
async fn nothing_until_a_root_exists_and_nothing_for_a_proxy_that_does_not_watch_it() {
    let (served, addr) = serve(None).await;
    let mut watching = Sotw::open(addr).await;
    watching.secrets(&["ROOTCA"], None, false).await;
    watching.fence().await;
    served.roots.send_replace(Some(Arc::from(ROOT_A)));
    let r = watching.recv().await;
    assert_eq!(pem_of(&r.resources[0]), ROOT_A);
    let mut other = Sotw::open(addr).await;
    other.secrets(&["default"], None, false).await;
    other.fence().await;
}

async fn recv(rx: &mut Streaming<DeltaDiscoveryResponse>) -> DeltaDiscoveryResponse {
    tokio::time::timeout(Duration::from_secs(5), rx.message())
        .await
        .expect("a response within 5 s")
        .expect("ok")
        .expect("open")
}

#[tokio::test]
async fn delta_subscribes_resumes_and_unsubscribes() {
    let (served, addr) = serve(Some(ROOT_A)).await;
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let (tx, req_rx) = mpsc::channel(8);
    let mut rx: Streaming<DeltaDiscoveryResponse> = client
        .delta_aggregated_resources(ReceiverStream::new(req_rx))
        .await
        .expect("delta")
        .into_inner();
    tx.send(DeltaDiscoveryRequest {
        node: Some(identity().to_node()),
        type_url: type_url::SECRET.into(),
        resource_names_subscribe: vec!["ROOTCA".into()],
        ..Default::default()
    })
    .await
    .expect("send");
    let r = recv(&mut rx).await;
    assert_eq!(r.resources.len(), 1);
    assert_eq!(r.resources[0].name, "ROOTCA");
    let version = r.resources[0].version.clone();
    assert_eq!(version.len(), 16);
    assert_eq!(
        pem_of(r.resources[0].resource.as_ref().expect("resource")),
        ROOT_A
    );
    tx.send(DeltaDiscoveryRequest {
        type_url: type_url::SECRET.into(),
        response_nonce: r.nonce.clone(),
        ..Default::default()
    })
    .await
    .expect("ack");
    // Unsubscribed: a new root is not sent.
    tx.send(DeltaDiscoveryRequest {
        type_url: type_url::SECRET.into(),
        resource_names_unsubscribe: vec!["ROOTCA".into()],
        ..Default::default()
    })
    .await
    .expect("unsubscribe");
    served.roots.send_replace(Some(Arc::from(ROOT_B)));
    // Subscribed again: the current roots come.
    tx.send(DeltaDiscoveryRequest {
        type_url: type_url::SECRET.into(),
        resource_names_subscribe: vec!["ROOTCA".into()],
        ..Default::default()
    })
    .await
    .expect("subscribe");
    let r2 = recv(&mut rx).await;
    assert_eq!(
        pem_of(r2.resources[0].resource.as_ref().expect("resource")),
        ROOT_B
    );

    // A proxy that reconnects holding the current roots is not sent them again.
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let (tx, req_rx) = mpsc::channel(8);
    let mut rx: Streaming<DeltaDiscoveryResponse> = client
        .delta_aggregated_resources(ReceiverStream::new(req_rx))
        .await
        .expect("delta")
        .into_inner();
    tx.send(DeltaDiscoveryRequest {
        node: Some(identity().to_node()),
        type_url: type_url::SECRET.into(),
        resource_names_subscribe: vec!["ROOTCA".into()],
        initial_resource_versions: HashMap::from([(
            "ROOTCA".to_string(),
            r2.resources[0].version.clone(),
        )]),
        ..Default::default()
    })
    .await
    .expect("send");
    // A fence: the first request for endpoints is answered at once, and comes first.
    tx.send(DeltaDiscoveryRequest {
        type_url: type_url::ENDPOINT.into(),
        resource_names_subscribe: vec!["outbound|1||fence.test".into()],
        ..Default::default()
    })
    .await
    .expect("fence");
    let f = recv(&mut rx).await;
    assert_eq!(f.type_url, type_url::ENDPOINT, "no secret before the fence");
}
