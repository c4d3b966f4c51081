//! DestinationRule traffic policy through a real proxy: circuit breakers (503 `UO`), one request per
//! upstream connection, outlier ejection and return, and consistent hashing. Every wait polls with a
//! deadline; load loops are bounded in count.

#[allow(dead_code)]
#[path = "support/fake_ads.rs"]
mod fake_ads;
#[allow(dead_code)]
#[path = "support/net.rs"]
mod net;
#[allow(dead_code)]
#[path = "support/resources.rs"]
mod resources;

use fake_ads::{FakeAds, XdsSet};
use net::{eventually, get, send, start_proxy_with, Behaviour, Form, Upstream};
use resources::*;
use std::net::SocketAddr;
use std::time::Duration;
use weft_proxy::ProxyHandle;
use weft_xds::pb::envoy::config::cluster::v3::{
    circuit_breakers::Thresholds, cluster, CircuitBreakers, Cluster, OutlierDetection,
};
use weft_xds::pb::envoy::config::route::v3::route_action::{hash_policy, HashPolicy};
use weft_xds::pb::google::protobuf::UInt32Value;
use weft_xds::{pack, type_url, Any};

const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

fn u(value: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value })
}

/// An EDS cluster `name` shaped by `edit`.
fn cluster_with(name: &str, edit: impl FnOnce(&mut Cluster)) -> Any {
    let mut c: Cluster = weft_xds::unpack(&eds_cluster(name)).expect("cluster");
    edit(&mut c);
    pack(type_url::CLUSTER, &c)
}

/// A proxy routing `svc:9080` to cluster `svc` (with `hash` as the route's hash policy) over
/// `endpoints`.
async fn proxy_with(
    cluster: Any,
    endpoints: &[SocketAddr],
    hash: Vec<HashPolicy>,
) -> (FakeAds, ProxyHandle) {
    let mut r = route_to("/", "svc");
    action(&mut r).hash_policy = hash;
    let set = XdsSet {
        version: "1".into(),
        clusters: vec![cluster],
        endpoints: vec![cla("svc", endpoints)],
        listeners: vec![outbound_listener(9080)],
        routes: vec![route_config(
            "9080",
            vec![vhost("svc", &["svc:9080"], vec![r])],
        )],
    };
    let ads = FakeAds::start("127.0.0.1:0".parse().expect("addr"), set).await;
    let proxy = start_proxy_with(&ads.url(), &[]).await;
    // Wait until the route and its endpoints are in.
    let addr = proxy.outbound_addr();
    eventually("config applied", || async move {
        let r = tokio::time::timeout(Duration::from_secs(2), get_once(addr))
            .await
            .ok()??;
        (r.status != 404 && !r.flags().contains("NC") && !r.flags().contains("UH")).then_some(())
    })
    .await;
    (ads, proxy)
}

async fn get_once(proxy: SocketAddr) -> Option<net::Resp> {
    send(proxy, Form::Absolute, "svc:9080", "/", &[]).await.ok()
}

#[tokio::test]
async fn circuit_breaker_answers_503_uo_while_the_limit_holds() {
    // Istio's circuit-breaking task: maxConnections 1, http1MaxPendingRequests 1,
    // maxRequestsPerConnection 1, against an upstream that never answers, so slots stay taken.
    let up = Upstream::start("hang", Behaviour::Hang).await;
    let c = cluster_with("svc", |c| {
        c.circuit_breakers = Some(CircuitBreakers {
            thresholds: vec![Thresholds {
                max_connections: u(1),
                max_pending_requests: u(1),
                max_requests: u(u32::MAX),
                max_retries: u(u32::MAX),
                ..Default::default()
            }],
            ..Default::default()
        });
    });
    // Not `proxy_with`: its readiness probe would hang on this upstream.
    let mut r = route_to("/", "svc");
    action(&mut r).timeout = Some(dur_ms(0));
    let set = XdsSet {
        version: "1".into(),
        clusters: vec![c],
        endpoints: vec![cla("svc", &[up.addr])],
        listeners: vec![outbound_listener(9080)],
        routes: vec![route_config(
            "9080",
            vec![vhost("svc", &["svc:9080"], vec![r])],
        )],
    };
    let ads = FakeAds::start("127.0.0.1:0".parse().expect("addr"), set).await;
    let proxy = start_proxy_with(&ads.url(), &[]).await;
    let addr = proxy.outbound_addr();
    // Two requests hold the connection and the one pending slot (they never finish).
    let holders: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { get_once(addr).await }))
        .collect();
    let overflowed = eventually(
        "a request over the limit is answered 503 UO",
        || async move {
            // One that is admitted hangs: give up on it (the proxy then gives its slot back).
            let r = tokio::time::timeout(Duration::from_millis(300), get_once(addr))
                .await
                .ok()??;
            (r.status == 503).then_some(r)
        },
    )
    .await;
    assert_eq!(overflowed.flags(), "UO");
    assert!(
        overflowed.body.contains("overflow"),
        "body: {}",
        overflowed.body
    );
    assert_eq!(
        up.hits(),
        1,
        "only the request on the one connection reached the upstream"
    );
    // While the two hold their slots, every further request overflows at once.
    for i in 0..10 {
        let r = tokio::time::timeout(Duration::from_secs(5), get_once(addr))
            .await
            .expect("an overflow is answered at once")
            .expect("response");
        assert_eq!((r.status, r.flags().as_str()), (503, "UO"), "request {i}");
    }
    for h in holders {
        h.abort();
    }
    drop((ads, proxy));
}

#[tokio::test]
async fn max_requests_per_connection_1_opens_a_connection_per_request() {
    let up = Upstream::start("up", Behaviour::Ok).await;
    let c = cluster_with("svc", |c| {
        let opts = weft_xds::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions {
            common_http_protocol_options: Some(
                weft_xds::pb::envoy::config::core::v3::HttpProtocolOptions {
                    max_requests_per_connection: u(1),
                    ..Default::default()
                },
            ),
            ..Default::default()
        };
        c.typed_extension_protocol_options.insert(
            HTTP_PROTOCOL_OPTIONS.into(),
            pack(
                &format!("type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}"),
                &opts,
            ),
        );
    });
    let (_ads, proxy) = proxy_with(c, &[up.addr], vec![]).await;
    let before = up.conns();
    for _ in 0..3 {
        assert_eq!(
            get(proxy.outbound_addr(), "svc:9080", "/").await.status,
            200
        );
    }
    assert_eq!(
        up.conns() - before,
        3,
        "one upstream connection per request"
    );
}

#[tokio::test]
async fn a_failing_endpoint_is_ejected_and_comes_back_after_the_base_time() {
    // "bad" answers 503 to its first request, then 200.
    let bad = Upstream::start("bad", Behaviour::FailFirst(1)).await;
    let good = Upstream::start("good", Behaviour::Ok).await;
    let c = cluster_with("svc", |c| {
        c.outlier_detection = Some(OutlierDetection {
            consecutive_5xx: u(1),
            base_ejection_time: Some(dur_ms(2_000)),
            max_ejection_percent: u(100),
            ..Default::default()
        });
    });
    // The readiness probe may meet "bad" first and eject it; either way it fails once only.
    let (_ads, proxy) = proxy_with(c, &[bad.addr, good.addr], vec![]).await;
    let addr = proxy.outbound_addr();
    let bad_hits = bad.hits.clone();
    let ejected_at = eventually("the failing endpoint answered 503", || {
        let bad_hits = bad_hits.clone();
        async move {
            if bad_hits.load(std::sync::atomic::Ordering::SeqCst) >= 1 {
                return Some(tokio::time::Instant::now());
            }
            get_once(addr).await;
            None
        }
    })
    .await;
    // Ejected: the next requests all go to "good" (bounded, and well within the 2 s ejection).
    let hits_after_ejection = bad.hits();
    for i in 0..10 {
        let r = get(addr, "svc:9080", "/").await;
        if ejected_at.elapsed() < Duration::from_millis(1_500) {
            assert_eq!((r.status, r.upstream()), (200, "good"), "request {i}");
        }
    }
    if ejected_at.elapsed() < Duration::from_millis(1_500) {
        assert_eq!(
            bad.hits(),
            hits_after_ejection,
            "no request reached the ejected endpoint"
        );
    }
    // After the base ejection time it is picked again (and answers 200 now).
    eventually("the ejected endpoint is back", || async move {
        let r = get_once(addr).await?;
        (r.upstream() == "bad").then_some(())
    })
    .await;
    assert!(
        ejected_at.elapsed() >= Duration::from_secs(2),
        "came back early"
    );
}

#[tokio::test]
async fn ring_hash_keeps_a_header_on_one_endpoint() {
    let ups = [
        Upstream::start("a", Behaviour::Ok).await,
        Upstream::start("b", Behaviour::Ok).await,
        Upstream::start("c", Behaviour::Ok).await,
    ];
    let eps: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let c = cluster_with("svc", |c| c.lb_policy = cluster::LbPolicy::RingHash as i32);
    let hash = vec![HashPolicy {
        policy_specifier: Some(hash_policy::PolicySpecifier::Header(hash_policy::Header {
            header_name: "x-user".into(),
            ..Default::default()
        })),
        ..Default::default()
    }];
    let (_ads, proxy) = proxy_with(c, &eps, hash).await;
    let addr = proxy.outbound_addr();
    let mut owners = std::collections::BTreeSet::new();
    for user in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..5 {
            let r = send(addr, Form::Absolute, "svc:9080", "/", &[("x-user", user)])
                .await
                .expect("response");
            assert_eq!(r.status, 200);
            seen.insert(r.upstream().to_string());
        }
        assert_eq!(seen.len(), 1, "{user} went to {seen:?}");
        owners.extend(seen);
    }
    assert!(owners.len() >= 2, "six users all on {owners:?}");
}

#[tokio::test]
async fn a_generated_cookie_keeps_the_client_on_one_endpoint() {
    let ups = [
        Upstream::start("a", Behaviour::Ok).await,
        Upstream::start("b", Behaviour::Ok).await,
    ];
    let eps: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let c = cluster_with("svc", |c| c.lb_policy = cluster::LbPolicy::Maglev as i32);
    let hash = vec![HashPolicy {
        policy_specifier: Some(hash_policy::PolicySpecifier::Cookie(hash_policy::Cookie {
            name: "session".into(),
            path: "/".into(),
            ttl: Some(dur_ms(60_000)),
            ..Default::default()
        })),
        ..Default::default()
    }];
    let (_ads, proxy) = proxy_with(c, &eps, hash).await;
    let addr = proxy.outbound_addr();
    let first = get(addr, "svc:9080", "/").await;
    let set = first
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a cookie is generated")
        .to_string();
    assert!(set.starts_with("session=\""), "{set}");
    assert!(
        set.contains("Max-Age=60") && set.contains("Path=/"),
        "{set}"
    );
    let cookie = set.split(';').next().expect("name=value").to_string();
    for _ in 0..6 {
        let r = send(
            addr,
            Form::Absolute,
            "svc:9080",
            "/",
            &[("cookie", &cookie)],
        )
        .await
        .expect("response");
        assert_eq!(r.upstream(), first.upstream(), "the cookie's endpoint");
        assert!(
            r.headers.get("set-cookie").is_none(),
            "no new cookie when sent one"
        );
    }
}

#[tokio::test]
async fn tcp_connections_over_max_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use weft_xds::pb::envoy::config::core::v3::TrafficDirection;
    // An upstream that answers once the client has sent everything (so a connection holds until then).
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let up = l.local_addr().expect("addr");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut got = Vec::new();
                if s.read_to_end(&mut got).await.is_ok() {
                    let reply = format!("got {}", String::from_utf8_lossy(&got));
                    let _ = s.write_all(reply.as_bytes()).await;
                }
            });
        }
    });
    let name = "127.0.0.1_9000";
    let cluster = "outbound|9000||sink.default.svc.cluster.local";
    let c = cluster_with(cluster, |c| {
        c.circuit_breakers = Some(CircuitBreakers {
            thresholds: vec![Thresholds {
                max_connections: u(1),
                ..Default::default()
            }],
            ..Default::default()
        });
    });
    let set = XdsSet {
        version: "1".into(),
        clusters: vec![c],
        endpoints: vec![cla(cluster, &[up])],
        listeners: vec![tcp_listener(
            name,
            "127.0.0.1:0".parse().expect("addr"),
            TrafficDirection::Outbound,
            cluster,
        )],
        routes: vec![],
    };
    let ads = FakeAds::start("127.0.0.1:0".parse().expect("addr"), set).await;
    let proxy = start_proxy_with(&ads.url(), &[]).await;
    let bound = eventually("TCP listener bound", || async { proxy.listener_addr(name) }).await;
    // One connection holds the cluster's only slot.
    let mut holder = tokio::net::TcpStream::connect(bound)
        .await
        .expect("connect");
    holder.write_all(b"x").await.expect("write");
    eventually("the first connection reached the upstream", || {
        let n = accepted.load(std::sync::atomic::Ordering::SeqCst);
        async move { (n >= 1).then_some(()) }
    })
    .await;
    // Another is closed at once, with nothing from the upstream (a reset when the proxy closed it with
    // our bytes unread).
    eventually("a second connection is closed", || async move {
        let mut s = tokio::net::TcpStream::connect(bound).await.ok()?;
        let _ = s.write_all(b"y").await;
        let _ = s.shutdown().await;
        let mut back = Vec::new();
        match tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut back)).await {
            Ok(Ok(_)) if back.is_empty() => Some(()),
            Ok(Err(_)) => Some(()),
            _ => None,
        }
    })
    .await;
    // The holder still gets its answer.
    holder.shutdown().await.expect("shutdown");
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), holder.read_to_end(&mut back))
        .await
        .expect("answer in time")
        .expect("read");
    assert_eq!(String::from_utf8_lossy(&back), "got x");
}
