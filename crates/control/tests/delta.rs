//! The incremental (delta) ADS server against a scripted client: wildcard and named subscriptions, only
//! what changed in each response, removals, and a reconnect that skips what the proxy already holds.

use std::collections::HashMap;
use std::time::Duration;
use weft_xds::type_url;

mod support;
use support::{names, serve, Stream, REGISTRY};

const EDS_REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";
const EDS_RATINGS: &str = "outbound|9080||ratings.default.svc.cluster.local";

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
    // ACK of the first part: still waiting for the last.
    s.ack(&first).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(served.status.snapshot()[0].types["CDS"].status, "STALE");
    s.ack(&second).await;
    for _ in 0..100 {
        if served.status.snapshot()[0].types["CDS"].status == "SYNCED" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("CDS not SYNCED after the last part was ACKed");
}
