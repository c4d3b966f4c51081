//! The ADS server against a scripted client: first pushes, ACK and NACK bookkeeping, and incremental
//! pushes when the model changes.

use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use weft_xds::ads::{AggregatedDiscoveryServiceClient, DiscoveryRequest, DiscoveryResponse};
use weft_xds::type_url;

mod support;
use support::{identity, serve, Served, REGISTRY};

struct Harness {
    served: Served,
    req_tx: mpsc::Sender<DiscoveryRequest>,
    resp: Streaming<DiscoveryResponse>,
}

async fn start() -> Harness {
    let served = serve(REGISTRY).await;
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", served.addr))
        .await
        .expect("connect");
    let (req_tx, req_rx) = mpsc::channel(8);
    let resp = client
        .stream_aggregated_resources(ReceiverStream::new(req_rx))
        .await
        .expect("stream")
        .into_inner();
    Harness {
        served,
        req_tx,
        resp,
    }
}

impl Harness {
    async fn send(&self, req: DiscoveryRequest) {
        self.req_tx.send(req).await.expect("send");
    }
    async fn recv(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(5), self.resp.message())
            .await
            .expect("a response within 5 s")
            .expect("stream ok")
            .expect("not closed")
    }
    async fn ack(&self, r: &DiscoveryResponse, names: &[&str]) {
        self.send(DiscoveryRequest {
            type_url: r.type_url.clone(),
            version_info: r.version_info.clone(),
            response_nonce: r.nonce.clone(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await;
    }
    async fn status_of(&self, t: &str) -> String {
        // The server records asynchronously; poll briefly.
        for _ in 0..100 {
            let snap = self.served.status.snapshot();
            if let Some(p) = snap.first() {
                let s = p.types[t].status;
                if s != "STALE" {
                    return s.to_string();
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        "STALE".into()
    }
}

#[tokio::test]
async fn subscribe_ack_nack_and_incremental_push() {
    let mut h = start().await;
    h.send(DiscoveryRequest {
        node: Some(identity().to_node()),
        type_url: type_url::CLUSTER.into(),
        ..Default::default()
    })
    .await;
    let cds = h.recv().await;
    assert_eq!(cds.type_url, type_url::CLUSTER);
    assert_eq!(cds.version_info, "1");
    assert_eq!(cds.resources.len(), 2, "inbound and outbound clusters");
    h.ack(&cds, &[]).await;
    assert_eq!(h.status_of("CDS").await, "SYNCED");

    let eds_name = "outbound|9080||reviews.default.svc.cluster.local";
    h.send(DiscoveryRequest {
        type_url: type_url::ENDPOINT.into(),
        resource_names: vec![eds_name.into()],
        ..Default::default()
    })
    .await;
    let eds = h.recv().await;
    assert_eq!(eds.resources.len(), 1);
    h.ack(&eds, &[eds_name]).await;
    assert_eq!(h.status_of("EDS").await, "SYNCED");

    // An endpoint change: only EDS is pushed (clusters did not change).
    let changed = REGISTRY.replace("127.0.0.1", "127.0.0.9");
    h.served.publish(2, &changed);
    let push = h.recv().await;
    assert_eq!(push.type_url, type_url::ENDPOINT, "only EDS changed");
    assert_eq!(push.version_info, "2");
    // NACK it: recorded with the reason, status STALE.
    h.send(DiscoveryRequest {
        type_url: type_url::ENDPOINT.into(),
        version_info: "1".into(),
        response_nonce: push.nonce.clone(),
        resource_names: vec![eds_name.into()],
        error_detail: Some(weft_xds::pb::google::rpc::Status {
            code: 3,
            message: "endpoint 127.0.0.9: refused for the test".into(),
            details: vec![],
        }),
        ..Default::default()
    })
    .await;
    let mut nack = None;
    for _ in 0..100 {
        nack = h.served.status.snapshot()[0].types["EDS"].nack.clone();
        if nack.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        nack.as_deref(),
        Some("endpoint 127.0.0.9: refused for the test")
    );
    assert_eq!(h.served.status.snapshot()[0].types["EDS"].status, "STALE");
    assert_eq!(
        h.served.status.snapshot()[0].types["LDS"].status,
        "NOT SENT"
    );

    // Disconnecting removes the proxy from the status.
    drop(h.req_tx);
    for _ in 0..100 {
        if h.served.status.snapshot().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("proxy still listed after disconnect");
}

#[tokio::test]
async fn a_stream_without_a_node_is_refused() {
    let mut h = start().await;
    h.send(DiscoveryRequest {
        type_url: type_url::CLUSTER.into(),
        ..Default::default()
    })
    .await;
    let err = tokio::time::timeout(Duration::from_secs(5), h.resp.message())
        .await
        .expect("answer")
        .expect_err("refused");
    assert_eq!(err.message(), "first request on the stream carries no node");
}
