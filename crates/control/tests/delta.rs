//! The incremental (delta) ADS server against a scripted client: wildcard and named subscriptions, only
//! what changed in each response, removals, a reconnect that skips what the proxy already holds, and
//! what a NACK leaves to send again.

use std::collections::{BTreeSet, HashMap};
use weft_xds::type_url;

mod support;
use support::{names, serve, two_services, Stream, EDS_RATINGS, EDS_REVIEWS, REGISTRY};

fn with_ratings(registry: &str) -> String {
    format!(
        "{registry}---\n{}",
        registry
            .replace("reviews", "ratings")
            .replace("127.0.0.1", "127.0.0.3")
    )
}

#[tokio::test]
async fn delta_sends_only_what_changed_and_removals() {
    let served = serve(REGISTRY).await;
    let mut s = Stream::open(&served).await;
    s.subscribe(type_url::CLUSTER, &[], HashMap::new(), true)
        .await;
    let cds = s.recv().await;
    assert_eq!(cds.type_url, type_url::CLUSTER);
    assert_eq!(names(&cds), ["inbound|9080||", EDS_REVIEWS]);
    assert!(cds.resources.iter().all(|r| !r.version.is_empty()));
    assert_eq!(cds.system_version_info, "1");
    s.ack(&cds).await;
    s.subscribe(type_url::ENDPOINT, &[EDS_REVIEWS], HashMap::new(), false)
        .await;
    let eds = s.recv().await;
    assert_eq!(names(&eds), [EDS_REVIEWS]);
    s.ack(&eds).await;

    // An endpoint change: one EDS resource, no CDS.
    served.publish(2, &REGISTRY.replace("127.0.0.1", "127.0.0.9"));
    let push = s.recv().await;
    assert_eq!(push.type_url, type_url::ENDPOINT);
    assert_eq!(names(&push), [EDS_REVIEWS]);
    assert_ne!(push.resources[0].version, eds.resources[0].version);
    s.ack(&push).await;
    s.quiet().await;

    // A new service: CDS carries only the new cluster; its EDS comes once subscribed.
    let two = with_ratings(&REGISTRY.replace("127.0.0.1", "127.0.0.9"));
    served.publish(3, &two);
    let push = s.recv().await;
    assert_eq!(push.type_url, type_url::CLUSTER);
    assert_eq!(names(&push), [EDS_RATINGS], "only the added cluster");
    s.ack(&push).await;
    s.subscribe(type_url::ENDPOINT, &[EDS_RATINGS], HashMap::new(), false)
        .await;
    let eds = s.recv().await;
    assert_eq!(names(&eds), [EDS_RATINGS]);
    s.ack(&eds).await;

    // The service goes: CDS and EDS say it was removed.
    served.publish(4, &REGISTRY.replace("127.0.0.1", "127.0.0.9"));
    let mut removed = Vec::new();
    for _ in 0..2 {
        let r = s.recv().await;
        assert!(r.resources.is_empty(), "{r:?}");
        removed.push((r.type_url.clone(), r.removed_resources.clone()));
        s.ack(&r).await;
    }
    removed.sort();
    assert_eq!(
        removed,
        [
            (type_url::CLUSTER.to_string(), vec![EDS_RATINGS.to_string()]),
            (
                type_url::ENDPOINT.to_string(),
                vec![EDS_RATINGS.to_string()]
            ),
        ]
    );

    // A name weftd does not have is answered as removed.
    s.subscribe(
        type_url::ENDPOINT,
        &["outbound|1||nope"],
        HashMap::new(),
        false,
    )
    .await;
    let r = s.recv().await;
    assert_eq!(r.removed_resources, ["outbound|1||nope"]);

    // ACKs are recorded per type.
    let st = &served.status.snapshot()[0];
    assert_eq!(st.types["CDS"].acked_version, "4");
    assert_eq!(st.types["CDS"].status, "SYNCED");
}

#[tokio::test]
async fn delta_reconnect_skips_what_the_proxy_holds() {
    let served = serve(REGISTRY).await;
    let mut s = Stream::open(&served).await;
    s.subscribe(type_url::CLUSTER, &[], HashMap::new(), true)
        .await;
    let cds = s.recv().await;
    assert_eq!(cds.resources.len(), 2);
    let held: HashMap<String, String> = cds
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    drop(s);

    // Same versions: the first answer carries nothing.
    let mut s = Stream::open(&served).await;
    s.subscribe(type_url::CLUSTER, &[], held.clone(), true)
        .await;
    let r = s.recv().await;
    assert!(
        r.resources.is_empty() && r.removed_resources.is_empty(),
        "{r:?}"
    );
    drop(s);

    // One stale version and one name that no longer exists.
    let mut stale = held.clone();
    stale.insert(EDS_REVIEWS.into(), "0".into());
    stale.insert(
        "outbound|9080||gone.default.svc.cluster.local".into(),
        "1".into(),
    );
    let mut s = Stream::open(&served).await;
    s.subscribe(type_url::CLUSTER, &[], stale, true).await;
    let r = s.recv().await;
    assert_eq!(names(&r), [EDS_REVIEWS]);
    assert_eq!(
        r.removed_resources,
        ["outbound|9080||gone.default.svc.cluster.local"]
    );
}

#[tokio::test]
async fn delta_splits_large_responses_and_syncs_on_the_last() {
    let many: Vec<String> = (0..600)
        .map(|i| {
            REGISTRY
                .replace("reviews", &format!("s{i}"))
                .replace("127.0.0.1", "127.0.0.5")
        })
        .collect();
    let served = serve(&many.join("---\n")).await;
    let mut s = Stream::open(&served).await;
    s.subscribe(type_url::CLUSTER, &[], HashMap::new(), true)
        .await;
    let first = s.recv().await;
    let second = s.recv().await;
    assert_eq!(
        first.resources.len() + second.resources.len(),
        601,
        "600 outbound + 1 inbound"
    );
    assert!(first.resources.len() <= 500 && second.resources.len() <= 500);
    assert_ne!(first.nonce, second.nonce);
    // ACK of the first part: still waiting for the last (once weftd has handled the ACK: it has when it
    // answers the fence sent after it).
    s.ack(&first).await;
    s.quiet().await;
    assert_eq!(served.status.snapshot()[0].types["CDS"].status, "STALE");
    s.ack(&second).await;
    served
        .type_status("CDS", "CDS SYNCED after the last part was ACKed", |t| {
            t.status == "SYNCED"
        })
        .await;
}

/// Where `reviews` and `ratings` are subscribed and acknowledged at generation 1 (endpoints
/// 127.0.0.1 and 127.0.0.3).
async fn both_endpoints_acked() -> (support::Served, Stream) {
    let served = serve(&two_services("127.0.0.1", "127.0.0.3")).await;
    let mut s = Stream::open(&served).await;
    s.subscribe(type_url::CLUSTER, &[], HashMap::new(), true)
        .await;
    let cds = s.recv().await;
    s.ack(&cds).await;
    s.subscribe(
        type_url::ENDPOINT,
        &[EDS_REVIEWS, EDS_RATINGS],
        HashMap::new(),
        false,
    )
    .await;
    let eds = s.recv().await;
    assert_eq!(names(&eds), [EDS_RATINGS, EDS_REVIEWS]);
    s.ack(&eds).await;
    served
        .type_status("EDS", "EDS SYNCED", |t| t.status == "SYNCED")
        .await;
    (served, s)
}

/// The proxy refuses a response carrying a good change (reviews) and a bad one (ratings), so it
/// holds neither; fixing only ratings must bring reviews again too, unchanged since the refused
/// response.
#[tokio::test]
async fn delta_resends_the_good_resources_of_a_refused_response() {
    let (served, mut s) = both_endpoints_acked().await;
    served.publish(2, &two_services("127.0.0.9", "127.0.0.66"));
    let refused = s.recv().await;
    assert_eq!(names(&refused), [EDS_RATINGS, EDS_REVIEWS]);
    s.nack(
        &refused,
        "ratings: endpoint 127.0.0.66 refused for the test",
    )
    .await;
    let eds = served
        .type_status("EDS", "the NACK recorded", |t| t.nack.is_some())
        .await;
    assert_eq!(eds.status, "STALE");
    assert_eq!(eds.acked_version, "1", "still what the proxy accepted");
    assert_eq!(
        eds.nack.as_deref(),
        Some("ratings: endpoint 127.0.0.66 refused for the test")
    );

    served.publish(3, &two_services("127.0.0.9", "127.0.0.7"));
    let fixed = s.recv().await;
    assert_eq!(fixed.type_url, type_url::ENDPOINT);
    assert_eq!(fixed.system_version_info, "3");
    assert_eq!(
        names(&fixed),
        [EDS_RATINGS, EDS_REVIEWS],
        "reviews did not change, but the proxy refused it"
    );
    let version = |r: &weft_xds::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse,
                   name: &str| {
        r.resources
            .iter()
            .find(|x| x.name == name)
            .map(|x| x.version.clone())
    };
    assert_eq!(version(&fixed, EDS_REVIEWS), version(&refused, EDS_REVIEWS));
    s.ack(&fixed).await;
    let eds = served
        .type_status("EDS", "EDS SYNCED", |t| t.status == "SYNCED")
        .await;
    assert_eq!((eds.acked_version.as_str(), eds.nack), ("3", None));
}

/// A fix published while the bad response is still unanswered is not sent on top of it: weftd
/// waits for the answer, then sends the fix with everything the refused response carried.
#[tokio::test]
async fn delta_waits_for_the_answer_before_sending_more_of_a_type() {
    let (served, mut s) = both_endpoints_acked().await;
    served.publish(2, &two_services("127.0.0.9", "127.0.0.66"));
    let refused = s.recv().await;
    assert_eq!(names(&refused), [EDS_RATINGS, EDS_REVIEWS]);
    served.publish(3, &two_services("127.0.0.9", "127.0.0.7"));
    s.nack(
        &refused,
        "ratings: endpoint 127.0.0.66 refused for the test",
    )
    .await;
    let fixed = s.recv().await;
    assert_eq!(
        (fixed.type_url.as_str(), fixed.system_version_info.as_str()),
        (type_url::ENDPOINT, "3")
    );
    assert_eq!(names(&fixed), [EDS_RATINGS, EDS_REVIEWS]);
    s.ack(&fixed).await;
    served
        .type_status("EDS", "EDS SYNCED", |t| t.status == "SYNCED")
        .await;
}

/// A first config in parts: the proxy refuses the first part and accepts the last. The type stays
/// STALE with the reason, and the next generation sends the refused part again, though nothing in it
/// changed.
#[tokio::test]
async fn delta_resends_a_refused_part_of_a_large_response() {
    let many = |ip: &str| -> String {
        (0..600)
            .map(|i| {
                REGISTRY
                    .replace("reviews", &format!("s{i}"))
                    .replace("127.0.0.1", ip)
            })
            .collect::<Vec<_>>()
            .join("---\n")
    };
    let served = serve(&many("127.0.0.5")).await;
    let mut s = Stream::open(&served).await;
    s.subscribe(type_url::CLUSTER, &[], HashMap::new(), true)
        .await;
    let first = s.recv().await;
    let second = s.recv().await;
    s.nack(&first, "cluster s1: refused for the test").await;
    s.ack(&second).await;

    // Endpoints only: the clusters are as they were.
    served.publish(2, &many("127.0.0.6"));
    let r = s.recv().await;
    // Sent only once the last part was answered, which must not have counted as in sync.
    let cds = served.status.snapshot()[0].types["CDS"].clone();
    assert_eq!(cds.status, "STALE");
    assert_eq!(
        cds.nack.as_deref(),
        Some("cluster s1: refused for the test")
    );
    assert_eq!(cds.acked_version, "", "no first config was accepted whole");
    assert_eq!(cds.sent_version, "2");
    // Every part of this response, however many.
    let mut parts = vec![r];
    while parts.iter().map(|p| p.resources.len()).sum::<usize>() < cds.resources {
        parts.push(s.recv().await);
    }
    let mut again = BTreeSet::new();
    for p in &parts {
        assert_eq!(
            (p.type_url.as_str(), p.system_version_info.as_str()),
            (type_url::CLUSTER, "2"),
            "only clusters are due"
        );
        again.extend(p.resources.iter().map(|x| x.name.clone()));
        s.ack(p).await;
    }
    let refused: BTreeSet<String> = first.resources.iter().map(|r| r.name.clone()).collect();
    assert!(
        refused.is_subset(&again),
        "the refused part is sent again: {:?} missing",
        refused.difference(&again).collect::<Vec<_>>()
    );
    served
        .type_status("CDS", "CDS SYNCED", |t| t.status == "SYNCED")
        .await;
}
