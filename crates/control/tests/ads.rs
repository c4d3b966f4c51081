//! The ADS server against a scripted client: first pushes, ACK and NACK bookkeeping, incremental
//! pushes when the model changes, and what a NACK leaves to send again.

use prost::Message;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use weft_xds::ads::{AggregatedDiscoveryServiceClient, DiscoveryRequest, DiscoveryResponse};
use weft_xds::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use weft_xds::type_url;

mod support;
use support::{
    eventually, identity, serve, two_services, Served, EDS_RATINGS, EDS_REVIEWS, REGISTRY,
};

struct Harness {
    served: Served,
    req_tx: mpsc::Sender<DiscoveryRequest>,
    resp: Streaming<DiscoveryResponse>,
}

async fn start() -> Harness {
    start_with(REGISTRY).await
}

async fn start_with(yaml: &str) -> Harness {
    let served = serve(yaml).await;
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
    /// Type `t`'s status once it is no longer STALE (the server records the answer asynchronously).
    async fn status_of(&self, t: &str) -> String {
        eventually(&format!("{t} answered"), || {
            let snap = self.served.status.snapshot();
            let s = snap.first()?.types[t].status;
            (s != "STALE").then(|| s.to_string())
        })
        .await
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
    let nack = eventually("the NACK recorded", || {
        h.served.status.snapshot()[0].types["EDS"].nack.clone()
    })
    .await;
    assert_eq!(nack, "endpoint 127.0.0.9: refused for the test");
    assert_eq!(h.served.status.snapshot()[0].types["EDS"].status, "STALE");
    assert_eq!(
        h.served.status.snapshot()[0].types["LDS"].status,
        "NOT SENT"
    );

    // Disconnecting removes the proxy from the status.
    drop(h.req_tx);
    eventually("the proxy unlisted after its disconnect", || {
        h.served.status.snapshot().is_empty().then_some(())
    })
    .await;
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

/// The names of the load assignments in a state-of-the-world EDS response, sorted.
fn eds_names(r: &DiscoveryResponse) -> Vec<String> {
    let mut v: Vec<String> = r
        .resources
        .iter()
        .map(|a| {
            ClusterLoadAssignment::decode(&a.value[..])
                .expect("a load assignment")
                .cluster_name
        })
        .collect();
    v.sort();
    v
}

impl Harness {
    async fn nack(&self, r: &DiscoveryResponse, good_version: &str, names: &[&str], reason: &str) {
        self.send(DiscoveryRequest {
            type_url: r.type_url.clone(),
            version_info: good_version.into(),
            response_nonce: r.nonce.clone(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            error_detail: Some(weft_xds::pb::google::rpc::Status {
                code: 3,
                message: reason.into(),
                details: vec![],
            }),
            ..Default::default()
        })
        .await;
    }

    /// Clusters and both services' endpoints at generation 1, acknowledged.
    async fn both_endpoints_acked(&mut self) {
        self.send(DiscoveryRequest {
            node: Some(identity().to_node()),
            type_url: type_url::CLUSTER.into(),
            ..Default::default()
        })
        .await;
        let cds = self.recv().await;
        self.ack(&cds, &[]).await;
        self.send(DiscoveryRequest {
            type_url: type_url::ENDPOINT.into(),
            resource_names: vec![EDS_REVIEWS.into(), EDS_RATINGS.into()],
            ..Default::default()
        })
        .await;
        let eds = self.recv().await;
        assert_eq!(eds_names(&eds), [EDS_RATINGS, EDS_REVIEWS]);
        self.ack(&eds, &[EDS_REVIEWS, EDS_RATINGS]).await;
        self.served
            .type_status("EDS", "EDS SYNCED", |t| t.status == "SYNCED")
            .await;
    }
}

/// The proxy refuses an EDS response carrying a good change (reviews) and a bad one (ratings), so it
/// keeps the versions it had; fixing only ratings must bring reviews again too.
#[tokio::test]
async fn sotw_resends_the_good_resources_of_a_refused_response() {
    let mut h = start_with(&two_services("127.0.0.1", "127.0.0.3")).await;
    h.both_endpoints_acked().await;
    h.served
        .publish(2, &two_services("127.0.0.9", "127.0.0.66"));
    let refused = h.recv().await;
    assert_eq!(
        (refused.type_url.as_str(), refused.version_info.as_str()),
        (type_url::ENDPOINT, "2")
    );
    assert_eq!(eds_names(&refused), [EDS_RATINGS, EDS_REVIEWS]);
    h.nack(
        &refused,
        "1",
        &[EDS_REVIEWS, EDS_RATINGS],
        "ratings: endpoint 127.0.0.66 refused for the test",
    )
    .await;
    let eds = h
        .served
        .type_status("EDS", "the NACK recorded", |t| t.nack.is_some())
        .await;
    assert_eq!((eds.status, eds.acked_version.as_str()), ("STALE", "1"));
    assert_eq!(eds.sent_version, "2");

    h.served.publish(3, &two_services("127.0.0.9", "127.0.0.7"));
    let fixed = h.recv().await;
    assert_eq!(
        (fixed.type_url.as_str(), fixed.version_info.as_str()),
        (type_url::ENDPOINT, "3")
    );
    assert_eq!(
        eds_names(&fixed),
        [EDS_RATINGS, EDS_REVIEWS],
        "reviews did not change, but the proxy refused it"
    );
    h.ack(&fixed, &[EDS_REVIEWS, EDS_RATINGS]).await;
    let eds = h
        .served
        .type_status("EDS", "EDS SYNCED", |t| t.status == "SYNCED")
        .await;
    assert_eq!((eds.acked_version.as_str(), eds.nack), ("3", None));
}

/// A fix published while the bad response is still unanswered goes out after the answer, with what
/// the refused response carried.
#[tokio::test]
async fn sotw_waits_for_the_answer_before_sending_more_of_a_type() {
    let mut h = start_with(&two_services("127.0.0.1", "127.0.0.3")).await;
    h.both_endpoints_acked().await;
    h.served
        .publish(2, &two_services("127.0.0.9", "127.0.0.66"));
    let refused = h.recv().await;
    assert_eq!(eds_names(&refused), [EDS_RATINGS, EDS_REVIEWS]);
    h.served.publish(3, &two_services("127.0.0.9", "127.0.0.7"));
    h.nack(
        &refused,
        "1",
        &[EDS_REVIEWS, EDS_RATINGS],
        "ratings: endpoint 127.0.0.66 refused for the test",
    )
    .await;
    let fixed = h.recv().await;
    assert_eq!(
        (fixed.type_url.as_str(), fixed.version_info.as_str()),
        (type_url::ENDPOINT, "3")
    );
    assert_eq!(eds_names(&fixed), [EDS_RATINGS, EDS_REVIEWS]);
}
