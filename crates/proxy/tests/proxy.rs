//! End-to-end tests of weft-proxy in-process: a scripted ADS server, hyper upstreams and the proxy, all on
//! loopback with ephemeral ports. Every wait polls with a deadline; nothing asserts on timing.

#[path = "support/fake_ads.rs"]
mod fake_ads;
#[path = "support/net.rs"]
mod net;
// The string matchers are for the policy tests.
#[allow(dead_code)]
#[path = "support/resources.rs"]
mod resources;

use fake_ads::{version_of, DeltaMode, FakeAds, XdsSet};
use net::{admin_get, eventually, get, send, start_proxy_with, Behaviour, Form, Upstream};
use resources::*;
use std::net::SocketAddr;
use weft_proxy::ProxyHandle;
use weft_xds::ads::DiscoveryRequest;
use weft_xds::pb::envoy::config::route::v3::{
    route_match::PathSpecifier, RetryPolicy, VirtualHost,
};
use weft_xds::pb::envoy::extensions::filters::common::fault::v3::{fault_delay, FaultDelay};
use weft_xds::pb::envoy::extensions::filters::http::fault::v3::{
    fault_abort, FaultAbort, HttpFault,
};
use weft_xds::pb::envoy::r#type::matcher::v3::RegexMatcher;
use weft_xds::pb::envoy::r#type::v3::FractionalPercent;
use weft_xds::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use weft_xds::pb::google::protobuf::UInt32Value;
use weft_xds::{pack, type_url};

const V1: &str = "outbound|9080|v1|reviews.default.svc.cluster.local";
const V2: &str = "outbound|9080|v2|reviews.default.svc.cluster.local";
const REVIEWS: &[&str] = &[
    "reviews",
    "reviews:9080",
    "reviews.default.svc.cluster.local:9080",
];

/// A set with EDS clusters (name, endpoints) and one RDS table "9080" of these virtual hosts.
fn set(version: &str, clusters: &[(&str, &[SocketAddr])], vhosts: Vec<VirtualHost>) -> XdsSet {
    XdsSet {
        version: version.into(),
        clusters: clusters.iter().map(|(n, _)| eds_cluster(n)).collect(),
        endpoints: clusters.iter().map(|(n, eps)| cla(n, eps)).collect(),
        listeners: vec![outbound_listener(9080)],
        routes: vec![route_config("9080", vhosts)],
    }
}

async fn start_proxy(ads: &str) -> ProxyHandle {
    start_proxy_with(ads, &[]).await
}

/// Waits until `GET http://authority/path` through the proxy satisfies `ok`.
async fn until(
    proxy: &ProxyHandle,
    authority: &str,
    path: &str,
    what: &str,
    ok: impl Fn(&net::Resp) -> bool,
) {
    let addr = proxy.outbound_addr();
    eventually(what, || {
        let ok = &ok;
        async move {
            let r = send(addr, Form::Absolute, authority, path, &[])
                .await
                .ok()?;
            ok(&r).then_some(())
        }
    })
    .await;
}

/// A proxy whose one route sends `echo:9080` to the upstream at `echo`, and its ADS server (kept alive by
/// the caller).
async fn proxy_to_echo(echo: SocketAddr) -> (FakeAds, ProxyHandle) {
    let ads = FakeAds::start(
        "127.0.0.1:0".parse().expect("addr"),
        set(
            "1",
            &[("echo", &[echo])],
            vec![vhost("echo", &["echo:9080"], vec![route_to("/", "echo")])],
        ),
    )
    .await;
    let proxy = start_proxy(&ads.url()).await;
    (ads, proxy)
}

/// The first message on `rx` that `f` accepts (skipping others), within the `eventually` deadline.
async fn next_matching<T: Send>(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>,
    what: &str,
    f: impl Fn(&T) -> bool,
) -> T {
    eventually(what, || {
        let got = loop {
            match rx.try_recv() {
                Ok(r) if f(&r) => break Some(r),
                Ok(_) => continue,
                Err(_) => break None,
            }
        };
        async move { got }
    })
    .await
}

async fn next_request(
    ads: &mut FakeAds,
    what: &str,
    f: impl Fn(&DiscoveryRequest) -> bool,
) -> DiscoveryRequest {
    next_matching(&mut ads.requests, what, f).await
}

async fn next_delta(
    ads: &mut FakeAds,
    what: &str,
    f: impl Fn(&DeltaDiscoveryRequest) -> bool,
) -> DeltaDiscoveryRequest {
    next_matching(&mut ads.delta_requests, what, f).await
}

async fn next_delta_response(
    ads: &mut FakeAds,
    what: &str,
    f: impl Fn(&DeltaDiscoveryResponse) -> bool,
) -> DeltaDiscoveryResponse {
    next_matching(&mut ads.delta_responses, what, f).await
}

fn resource_names(r: &DeltaDiscoveryResponse) -> Vec<&str> {
    r.resources.iter().map(|r| r.name.as_str()).collect()
}

/// The proxy's `/clusters` text.
async fn clusters(proxy: &ProxyHandle) -> String {
    admin_get(proxy.admin_addr(), "/clusters")
        .await
        .expect("clusters")
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_authority_in_absolute_form_host_header_and_h2() {
    let v1 = Upstream::start("reviews-v1", Behaviour::Ok).await;
    let ratings = Upstream::start("ratings-v1", Behaviour::Ok).await;
    let ads = FakeAds::start(
        "127.0.0.1:0".parse().expect("addr"),
        set(
            "1",
            &[
                (V1, &[v1.addr]),
                ("outbound|9080||ratings", &[ratings.addr]),
            ],
            vec![
                vhost("reviews", REVIEWS, vec![route_to("/", V1)]),
                vhost(
                    "ratings",
                    &["ratings", "ratings:9080"],
                    vec![route_to("/", "outbound|9080||ratings")],
                ),
            ],
        ),
    )
    .await;
    let proxy = start_proxy(&ads.url()).await;
    until(&proxy, "reviews:9080", "/", "reviews route", |r| {
        r.status == 200
    })
    .await;
    let out = proxy.outbound_addr();

    let cases: &[(&str, Form, &str, &str)] = &[
        (
            "absolute form",
            Form::Absolute,
            "reviews:9080",
            "reviews-v1",
        ),
        ("host header", Form::Host, "ratings:9080", "ratings-v1"),
        (
            "host header, case-insensitive",
            Form::Host,
            "RATINGS:9080",
            "ratings-v1",
        ),
        ("h2 prior knowledge", Form::H2, "reviews:9080", "reviews-v1"),
    ];
    for (name, form, authority, want) in cases {
        let r = send(out, *form, authority, "/reviews/0?x=1", &[])
            .await
            .unwrap_or_else(|e| panic!("case {name}: {e}"));
        assert_eq!(r.status, 200, "case {name}: {r:?}");
        assert_eq!(r.upstream(), *want, "case {name}");
        if matches!(form, Form::H2) {
            // HTTP/2 upstreams get the authority as `:authority` and no `Host` (RFC 9113, 8.3.1).
            assert!(
                r.upstream_saw(&format!(":authority: {authority}")),
                "case {name}: authority kept: {}",
                r.body
            );
            assert!(!r.body.contains("\nhost: "), "case {name}: {}", r.body);
        } else {
            assert!(
                r.upstream_saw(&format!("host: {authority}")),
                "case {name}: Host kept: {}",
                r.body
            );
        }
        assert!(
            r.body
                .lines()
                .any(|l| l.starts_with("x-request-id: ") && l.len() == 14 + 36),
            "case {name}: request id generated: {}",
            r.body
        );
    }

    // An existing request id is kept.
    let r = send(
        out,
        Form::Absolute,
        "reviews:9080",
        "/",
        &[("x-request-id", "abc")],
    )
    .await
    .expect("send");
    assert!(r.upstream_saw("x-request-id: abc"), "{}", r.body);

    // A request routed by its absolute-form target reaches the application with that target's authority
    // as `Host`, whatever `Host` the client sent (RFC 9112, 3.2.2): routed as reviews, never read as
    // ratings.
    let back = tcp_exchange(
        out,
        b"GET http://reviews:9080/ HTTP/1.1\r\nhost: ratings:9080\r\nconnection: close\r\n\r\n",
    )
    .await
    .expect("exchange");
    let (head, body) = back.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200 "), "{back}");
    assert!(body.starts_with("reviews-v1"), "{back}");
    assert!(body.lines().any(|l| l == "host: reviews:9080"), "{back}");
    assert!(!body.contains("ratings"), "{back}");
    // Two `Host` fields are refused before routing (RFC 9112, 3.2), in origin and absolute form.
    for req in [
        &b"GET / HTTP/1.1\r\nhost: reviews:9080\r\nhost: ratings:9080\r\n\r\n"[..],
        b"GET http://reviews:9080/ HTTP/1.1\r\nhost: reviews:9080\r\nhost: ratings:9080\r\n\r\n",
    ] {
        let back = tcp_exchange(out, req).await.expect("exchange");
        assert!(back.starts_with("HTTP/1.1 400 "), "{back}");
        assert!(back.contains("several host header fields"), "{back}");
    }

    // Over HTTP/2, a `host` field that names another authority than `:authority` makes the request
    // malformed (RFC 9113, 8.3.1): the stream is reset, nothing is routed; the same authority in
    // another case passes.
    let err = send(
        out,
        Form::H2,
        "reviews:9080",
        "/",
        &[("host", "ratings:9080")],
    )
    .await
    .expect_err("a host that differs from :authority is refused");
    assert!(format!("{err:?}").contains("PROTOCOL_ERROR"), "{err:?}");
    let r = send(
        out,
        Form::H2,
        "reviews:9080",
        "/",
        &[("host", "Reviews:9080")],
    )
    .await
    .expect("same authority");
    assert_eq!(r.upstream(), "reviews-v1");

    // A request body that breaks HTTP/1.1's chunked framing is the client's error: 400 with `DPE`, not
    // an upstream failure (503 `UC`), and not retried.
    let back = tcp_exchange(
        out,
        b"POST / HTTP/1.1\r\nhost: reviews:9080\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
    )
    .await
    .expect("exchange");
    assert!(back.starts_with("HTTP/1.1 400 "), "{back}");
    assert!(back.contains("x-weft-response-flags: DPE\r\n"), "{back}");
    assert!(back.contains("connection: close\r\n"), "{back}");

    // Unknown host on a known port, and an unknown port: 404 NR.
    for (name, authority) in [
        ("unknown host", "details:9080"),
        ("unknown port", "reviews:1234"),
    ] {
        let r = get(out, authority, "/").await;
        assert_eq!((r.status, r.flags().as_str()), (404, "NR"), "case {name}");
    }

    // The admin endpoints show what was applied.
    let (status, clusters) = admin_get(proxy.admin_addr(), "/clusters")
        .await
        .expect("clusters");
    assert_eq!(status, 200);
    assert!(
        clusters.contains(&format!("{V1}::{}::health_flags::healthy", v1.addr)),
        "{clusters}"
    );
    let (status, dump) = admin_get(proxy.admin_addr(), "/config_dump")
        .await
        .expect("dump");
    assert_eq!(status, 200);
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("json");
    let types: Vec<&str> = dump["configs"]
        .as_array()
        .expect("configs")
        .iter()
        .filter_map(|c| c["@type"].as_str())
        .collect();
    assert_eq!(
        types,
        [
            "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
            "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
        ]
    );
    let route = &dump["configs"][3]["dynamic_route_configs"][0];
    // Over delta each resource shows its own version; the type's section shows the system version.
    let route_version = version_of(&ads.set.borrow().routes[0].1);
    assert_eq!(route["version_info"], route_version.as_str());
    assert_eq!(dump["configs"][0]["version_info"], "1");
    assert_eq!(route["route_config"]["name"], "9080", "{route}");
    assert_eq!(
        route["route_config"]["@type"],
        "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
    );
    assert_eq!(
        dump["configs"][2]["dynamic_listeners"][0]["name"], "0.0.0.0_9080",
        "{dump}"
    );
    assert_eq!(
        admin_get(proxy.admin_addr(), "/nope").await.map(|r| r.0),
        Some(404)
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_clusters_split_traffic() {
    let v1 = Upstream::start("reviews-v1", Behaviour::Ok).await;
    let v2 = Upstream::start("reviews-v2", Behaviour::Ok).await;
    let ads = FakeAds::start(
        "127.0.0.1:0".parse().expect("addr"),
        set(
            "1",
            &[(V1, &[v1.addr]), (V2, &[v2.addr])],
            vec![vhost(
                "reviews",
                REVIEWS,
                vec![weighted("/", &[(V1, 50), (V2, 50)])],
            )],
        ),
    )
    .await;
    let proxy = start_proxy(&ads.url()).await;
    until(&proxy, "reviews:9080", "/", "reviews route", |r| {
        r.status == 200
    })
    .await;
    let (mut a, mut b) = (0, 0);
    for _ in 0..200 {
        match get(proxy.outbound_addr(), "reviews:9080", "/")
            .await
            .upstream()
        {
            "reviews-v1" => a += 1,
            "reviews-v2" => b += 1,
            other => panic!("unexpected upstream {other}"),
        }
    }
    // With p = 0.5 over 200 tries, fewer than 50 on a side has probability below 1e-12.
    assert!(a >= 50 && b >= 50, "v1 {a}, v2 {b}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_carry_version_and_nonce_and_bad_config_is_nacked() {
    let v1 = Upstream::start("reviews-v1", Behaviour::Ok).await;
    let v2 = Upstream::start("reviews-v2", Behaviour::Ok).await;
    let good = set(
        "1",
        &[(V1, &[v1.addr]), (V2, &[v2.addr])],
        vec![vhost("reviews", REVIEWS, vec![route_to("/", V1)])],
    );
    let mut ads = FakeAds::start("127.0.0.1:0".parse().expect("addr"), good.clone()).await;
    let proxy = start_proxy_with(&ads.url(), &["--xds-protocol", "sotw"]).await;
    until(&proxy, "reviews:9080", "/", "v1 serving", |r| {
        r.upstream() == "reviews-v1"
    })
    .await;

    // The first request carries the node; CDS and LDS are wildcards.
    let first = next_request(&mut ads, "first request", |_| true).await;
    let node = first.node.expect("node on first request");
    assert_eq!(
        node.id,
        "sidecar~127.0.0.1~productpage-v1.default~default.svc.cluster.local"
    );
    assert!(first.resource_names.is_empty());

    // Each type is ACKed with the version and nonce it was sent.
    let mut sent = Vec::new();
    let mut received = Vec::new();
    eventually("an ACK of every type", || {
        while let Ok(r) = ads.responses.try_recv() {
            sent.push(r);
        }
        while let Ok(r) = ads.requests.try_recv() {
            received.push(r);
        }
        let all = type_url::ALL.iter().all(|url| {
            sent.iter()
                .any(|s| s.type_url == *url && received.iter().any(|r| r.response_nonce == s.nonce))
        });
        async move { all.then_some(()) }
    })
    .await;
    for url in type_url::ALL {
        let resp = sent.iter().find(|r| r.type_url == url).expect("sent");
        let ack = received
            .iter()
            .find(|r| r.type_url == url && r.response_nonce == resp.nonce)
            .expect("acked");
        assert_eq!(ack.version_info, "1", "{url}");
        assert!(ack.error_detail.is_none(), "{url}: {:?}", ack.error_detail);
        if url == type_url::ENDPOINT {
            assert_eq!(ack.resource_names, vec![V1.to_string(), V2.to_string()]);
        }
        if url == type_url::ROUTE {
            assert_eq!(ack.resource_names, vec!["9080".to_string()]);
        }
    }

    // Version 2 routes to v2 but has a broken regex in a later route: NACKed, v1 keeps serving.
    let mut bad_route = route_to("/", V2);
    if let Some(m) = bad_route.r#match.as_mut() {
        m.path_specifier = Some(PathSpecifier::SafeRegex(RegexMatcher {
            regex: "(".into(),
            ..Default::default()
        }));
    }
    let mut bad = good.clone();
    bad.version = "2".into();
    bad.routes = vec![route_config(
        "9080",
        vec![vhost(
            "reviews.default.svc.cluster.local:9080",
            REVIEWS,
            vec![route_to("/", V2), bad_route],
        )],
    )];
    ads.update(bad);
    let nack = next_request(&mut ads, "RDS NACK", |r| {
        r.type_url == type_url::ROUTE && r.error_detail.is_some()
    })
    .await;
    assert_eq!(
        nack.version_info, "1",
        "NACK carries the previous good version"
    );
    let detail = nack.error_detail.expect("detail");
    assert_eq!(detail.code, 3);
    assert!(
        detail.message.starts_with(
            "route config \"9080\": virtual host \"reviews.default.svc.cluster.local:9080\": route 1: invalid regex \"(\""
        ),
        "{}",
        detail.message
    );
    for _ in 0..5 {
        assert_eq!(
            get(proxy.outbound_addr(), "reviews:9080", "/")
                .await
                .upstream(),
            "reviews-v1"
        );
    }

    // A fixed version 3 is applied.
    let mut fixed = good;
    fixed.version = "3".into();
    fixed.routes = vec![route_config(
        "9080",
        vec![vhost("reviews", REVIEWS, vec![route_to("/", V2)])],
    )];
    ads.update(fixed);
    until(&proxy, "reviews:9080", "/", "v2 after fix", |r| {
        r.upstream() == "reviews-v2"
    })
    .await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_timeouts_and_upstream_failures() {
    let flaky = Upstream::start("flaky", Behaviour::FailFirst(1)).await;
    let always = Upstream::start("always-503", Behaviour::FailFirst(usize::MAX)).await;
    let hang = Upstream::start("hang", Behaviour::Hang).await;
    let closed = {
        // A port with nothing listening: bind, read the address, close.
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let retry = |on: &str, n: u32, per_try_ms: Option<u64>| RetryPolicy {
        retry_on: on.into(),
        num_retries: Some(UInt32Value { value: n }),
        per_try_timeout: per_try_ms.map(dur_ms),
        ..Default::default()
    };
    let with_retry =
        |prefix: &str, cluster: &str, p: Option<RetryPolicy>, timeout_ms: Option<u64>| {
            let mut r = route_to(prefix, cluster);
            action(&mut r).retry_policy = p;
            if let Some(t) = timeout_ms {
                action(&mut r).timeout = Some(dur_ms(t));
            }
            r
        };
    let ads = FakeAds::start(
        "127.0.0.1:0".parse().expect("addr"),
        XdsSet {
            version: "1".into(),
            clusters: vec![
                eds_cluster("flaky"),
                eds_cluster("always"),
                eds_cluster("hang"),
                eds_cluster("closed"),
                eds_cluster("empty"),
            ],
            endpoints: vec![
                cla("flaky", &[flaky.addr]),
                cla("always", &[always.addr]),
                cla("hang", &[hang.addr]),
                cla("closed", &[closed]),
            ],
            listeners: vec![outbound_listener(9080)],
            routes: vec![route_config(
                "9080",
                vec![vhost(
                    "svc",
                    &["svc:9080"],
                    vec![
                        with_retry("/flaky", "flaky", Some(retry("5xx", 2, None)), None),
                        with_retry(
                            "/always",
                            "always",
                            Some(retry("gateway-error", 2, None)),
                            None,
                        ),
                        with_retry("/no-retry", "always", None, None),
                        with_retry("/per-try", "hang", Some(retry("5xx", 1, Some(100))), None),
                        with_retry("/route-timeout", "hang", None, Some(150)),
                        with_retry(
                            "/closed",
                            "closed",
                            Some(retry("connect-failure", 1, None)),
                            None,
                        ),
                        route_to("/empty", "empty"),
                        route_to("/missing", "no-such-cluster"),
                    ],
                )],
            )],
        },
    )
    .await;
    let proxy = start_proxy(&ads.url()).await;
    until(&proxy, "svc:9080", "/empty", "routes applied", |r| {
        r.status != 404
    })
    .await;
    let out = proxy.outbound_addr();

    // The flaky upstream fails its first request with 503; the route retries and succeeds.
    assert_eq!(flaky.hits(), 0);
    let r = get(out, "svc:9080", "/flaky").await;
    assert_eq!(
        (r.status, r.upstream(), r.flags()),
        (200, "flaky", "-".to_string()),
        "{r:?}"
    );
    assert_eq!(flaky.hits(), 2, "first try failed, the retry succeeded");

    let cases: &[(&str, &str, u16, &str)] = &[
        ("retries exhausted on 503", "/always", 503, "URX"),
        ("no retry policy passes 503 through", "/no-retry", 503, "-"),
        (
            "per-try timeout then last try timeout",
            "/per-try",
            504,
            "URX,UT",
        ),
        ("route timeout", "/route-timeout", 504, "UT"),
        ("connect failure after retries", "/closed", 503, "UF,URX"),
        ("no endpoints", "/empty", 503, "UH"),
        ("unknown cluster", "/missing", 503, "NC"),
    ];
    for (name, path, status, flags) in cases {
        let r = get(out, "svc:9080", path).await;
        assert_eq!(
            (r.status, r.flags()),
            (*status, flags.to_string()),
            "case {name}: {}",
            r.body
        );
    }
    let before = always.hits();
    get(out, "svc:9080", "/always").await;
    assert_eq!(always.hits() - before, 3, "1 try + 2 retries");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_bodies_and_trailers_pass_through_one_shared_upstream_connection() {
    let (echo, conns) = net::grpc_echo().await;
    let (_ads, proxy) = proxy_to_echo(echo).await;
    let out = proxy.outbound_addr();
    eventually("the route to apply", || async {
        let r = net::grpc_call(out, "echo:9080", "/weft.Echo/Call", b"ping")
            .await
            .ok()?;
        (r.status == 200).then_some(())
    })
    .await;
    // Four calls, each on its own downstream connection, two of them at once.
    let calls = [
        net::grpc_call(out, "echo:9080", "/weft.Echo/Call", b"one"),
        net::grpc_call(out, "echo:9080", "/weft.Echo/Call", b"two"),
    ];
    let mut results = futures::future::join_all(calls).await;
    results.push(net::grpc_call(out, "echo:9080", "/weft.Echo/Call", b"three").await);
    results.push(net::grpc_call(out, "echo:9080", "/weft.Echo/Call", b"").await);
    for (r, want) in results
        .into_iter()
        .zip([&b"one"[..], b"two", b"three", b""])
    {
        let r = r.expect("call");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(&r.body[..], want, "{r:?}");
        // gRPC's `te: trailers` reaches the upstream (hop-by-hop, but the one TE HTTP/2 allows).
        assert_eq!(
            r.headers.get("x-saw-te").map(|v| v.as_bytes()),
            Some(&b"trailers"[..]),
            "{r:?}"
        );
        let trailers = r.trailers.expect("trailers passed through");
        assert_eq!(
            trailers.get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"0"[..])
        );
        assert_eq!(
            trailers.get("grpc-message").and_then(|v| v.to_str().ok()),
            Some(format!("echoed {} bytes", want.len()).as_str())
        );
    }
    assert_eq!(
        conns.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "every call multiplexed on one upstream connection"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused_and_closed_ones_replaced() {
    let keep = Upstream::start("keep", Behaviour::Ok).await;
    let close = Upstream::start("close", Behaviour::ConnectionClose).await;
    let ads = FakeAds::start(
        "127.0.0.1:0".parse().expect("addr"),
        set(
            "1",
            &[("keep", &[keep.addr]), ("close", &[close.addr])],
            vec![vhost(
                "svc",
                &["svc:9080"],
                vec![route_to("/keep", "keep"), route_to("/close", "close")],
            )],
        ),
    )
    .await;
    let proxy = start_proxy(&ads.url()).await;
    until(&proxy, "svc:9080", "/close", "routes applied", |r| {
        r.status == 200
    })
    .await;
    let out = proxy.outbound_addr();

    // Sequential requests on one downstream keep-alive connection share one upstream connection.
    let before = keep.conns();
    let rs = net::get_sequential(out, "svc:9080", "/keep", 10).await;
    assert!(
        rs.iter().all(|r| r.status == 200 && r.upstream() == "keep"),
        "{rs:?}"
    );
    assert_eq!(
        keep.conns() - before,
        1,
        "one upstream connection for 10 requests"
    );

    // An upstream that answers with `Connection: close` gets a fresh connection for every request,
    // and the header is not passed on: the downstream connection stays open.
    let before = close.conns();
    let rs = net::get_sequential(out, "svc:9080", "/close", 5).await;
    assert!(
        rs.iter().all(|r| r.status == 200
            && r.upstream() == "close"
            && !r.headers.contains_key("connection")),
        "{rs:?}"
    );
    assert_eq!(
        close.conns() - before,
        5,
        "one upstream connection per request"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways_on_one_upstream_connection() {
    use http_body_util::BodyExt;
    let (echo, conns) = net::echo_upstream().await;
    let (_ads, proxy) = proxy_to_echo(echo).await;
    until(&proxy, "echo:9080", "/big", "routes applied", |r| {
        r.status == 200
    })
    .await;
    let before = conns.load(std::sync::atomic::Ordering::SeqCst);

    let stream = tokio::net::TcpStream::connect(proxy.outbound_addr())
        .await
        .expect("connect");
    let (mut client, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let exchange = async {
        for round in 0..2 {
            // Up: streamed with no length (too big to buffer for retries), echoed back as it arrives.
            let (upload, feeder) = net::big_upload();
            let req = http::Request::post("/upload")
                .header("host", "echo:9080")
                .body(upload.boxed())
                .expect("request");
            client
                .ready()
                .await
                .expect("the downstream connection stays open");
            let resp = client
                .send_request(req)
                .await
                .expect("POST through the proxy");
            net::assert_big_echo(resp, feeder, round).await;

            // Down: 2 MiB in chunked encoding.
            let req = http::Request::get("/big")
                .header("host", "echo:9080")
                .body(http_body_util::Empty::new().map_err(|e| match e {}).boxed())
                .expect("request");
            client
                .ready()
                .await
                .expect("the downstream connection stays open");
            let resp = client
                .send_request(req)
                .await
                .expect("GET through the proxy");
            assert_eq!(resp.status(), 200, "round {round}");
            let body = resp.into_body().collect().await.expect("big").to_bytes();
            assert!(net::is_big(&body), "round {round}: {} bytes", body.len());
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), exchange)
        .await
        .expect("8 MiB through the proxy without a stall");
    assert_eq!(
        conns.load(std::sync::atomic::Ordering::SeqCst) - before,
        0,
        "the upstream connection that answered the route probe served all four"
    );
    proxy.shutdown().await;
}

/// HTTP/2 both sides: bodies larger than every flow-control window stream up and back down on one
/// downstream and one upstream connection (the proxy must hand the peers' windows back as it forwards),
/// and a client that resets its stream cancels the upstream request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_bodies_stream_both_ways_and_resets_cancel_the_upstream_request() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let (echo, conns, mut hang) = net::h2_echo().await;
    let (_ads, proxy) = proxy_to_echo(echo).await;
    let out = proxy.outbound_addr();
    eventually("the route to apply", || async {
        let r = net::grpc_call(out, "echo:9080", "/probe", b"x")
            .await
            .ok()?;
        (r.status == 200).then_some(())
    })
    .await;

    let stream = tokio::net::TcpStream::connect(out).await.expect("connect");
    let (mut client, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let exchange = async {
        // Three rounds of 2 MiB: 6 MiB on each connection, past the proxy's windows (1 MiB as a server,
        // 5 MiB per connection as a client) unless it releases what it forwards.
        for round in 0..3 {
            let (upload, feeder) = net::big_upload();
            let req = http::Request::post("http://echo:9080/upload")
                .body(upload)
                .expect("request");
            let resp = client
                .send_request(req)
                .await
                .expect("POST through the proxy");
            net::assert_big_echo(resp, feeder, round).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), exchange)
        .await
        .expect("6 MiB each way through the proxy without a stall");

    // A request the upstream never answers, given up by the client once it reached the upstream: its
    // reset reaches the upstream.
    let (_open, rx) = futures::channel::mpsc::channel(1);
    let req = http::Request::get("http://echo:9080/hang")
        .body(http_body_util::StreamBody::new(rx))
        .expect("request");
    let mut waiting = Box::pin(client.send_request(req));
    let started = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        tokio::select! {
            answered = &mut waiting => panic!("/hang answered: {answered:?}"),
            started = hang.recv() => started,
        }
    })
    .await
    .expect("/hang reaches the upstream");
    assert_eq!(started, Some(net::Hang::Started));
    drop(waiting);
    let gone = tokio::time::timeout(std::time::Duration::from_secs(10), hang.recv())
        .await
        .expect("the upstream request is cancelled when the client resets its stream");
    assert_eq!(gone, Some(net::Hang::GivenUp));
    assert_eq!(
        conns.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "every stream on the one upstream connection"
    );
    proxy.shutdown().await;
}

/// An HPACK literal field without indexing, with a literal name (RFC 7541, 6.2.2): enough to write a
/// request's header block by hand.
fn hpack_literal(block: &mut Vec<u8>, name: &str, value: &str) {
    block.push(0);
    block.push(name.len() as u8);
    block.extend_from_slice(name.as_bytes());
    block.push(value.len() as u8);
    block.extend_from_slice(value.as_bytes());
}

/// An HTTP/2 frame's bytes.
fn h2_frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[ty, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A client opens HTTP/2 uploads whose bodies never come, then closes its connection with no
/// RST_STREAM and no GOAWAY. The proxy must give up their upstream streams: left open, they used up
/// the application's stream limit on the shared upstream connection, and every HTTP/2 request through
/// the sidecar then hung.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_h2_uploads_release_their_upstream_streams() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::io::AsyncWriteExt;
    let limit = 20;
    let (echo, _conns, _given_up) = net::h2_echo_with(Some(limit)).await;
    let (_ads, proxy) = proxy_to_echo(echo).await;
    let out = proxy.outbound_addr();
    eventually("the route to apply", || async {
        let r = net::grpc_call(out, "echo:9080", "/probe", b"x")
            .await
            .ok()?;
        (r.status == 200).then_some(())
    })
    .await;

    // Twice the upstream's limit of uploads, with no body.
    let mut hostile = tokio::net::TcpStream::connect(out).await.expect("connect");
    let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    wire.extend(h2_frame(0x4, 0, 0, &[]));
    for i in 0..2 * limit {
        let mut block = Vec::new();
        for (n, v) in [
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", "echo:9080"),
            (":path", "/upload"),
        ] {
            hpack_literal(&mut block, n, v);
        }
        wire.extend(h2_frame(0x1, 0x4, 2 * i + 1, &block));
    }
    hostile.write_all(&wire).await.expect("write");
    // As many as the upstream allows reached it, which answers at once (the body echoed as it comes;
    // the rest wait for a stream): read their response heads, then close normally.
    let mut heads = 0;
    let mut buf = Vec::new();
    while heads < limit {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tokio::io::AsyncReadExt::read(&mut hostile, &mut chunk),
        )
        .await
        .expect("the uploads' answers")
        .expect("read");
        assert!(n > 0, "closed after {heads} answers");
        buf.extend_from_slice(&chunk[..n]);
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            if buf[3] == 0x1 {
                heads += 1;
            }
            buf.drain(..9 + len);
        }
    }
    hostile.shutdown().await.expect("shutdown");
    drop(hostile);

    // HTTP/2 through the sidecar still works: more requests than the upstream's limit, at once.
    let stream = tokio::net::TcpStream::connect(out).await.expect("connect");
    let (client, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let calls = (0..limit + 5).map(|i| {
        let mut client = client.clone();
        async move {
            let req = http::Request::post("http://echo:9080/after")
                .body(http_body_util::Full::new(bytes::Bytes::from(format!(
                    "call {i}"
                ))))
                .expect("request");
            let resp = client.send_request(req).await.expect("answered");
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .expect("body")
                .to_bytes();
            assert_eq!(body, format!("call {i}").as_bytes());
        }
    });
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        futures::future::join_all(calls),
    )
    .await
    .expect(
        "HTTP/2 through the sidecar hangs: the abandoned uploads still hold the upstream's streams",
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_and_header_edits() {
    let v1 = Upstream::start("reviews-v1", Behaviour::Ok).await;
    let fault = |abort: Option<u32>, delay_ms: Option<u64>| HttpFault {
        abort: abort.map(|s| FaultAbort {
            error_type: Some(fault_abort::ErrorType::HttpStatus(s)),
            percentage: Some(FractionalPercent {
                numerator: 1_000_000,
                denominator: 2,
            }),
            ..Default::default()
        }),
        delay: delay_ms.map(|ms| FaultDelay {
            fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(dur_ms(ms))),
            percentage: Some(FractionalPercent {
                numerator: 100,
                denominator: 0,
            }),
        }),
        ..Default::default()
    };
    let with_fault = |prefix: &str, f: HttpFault| {
        let mut r = route_to(prefix, V1);
        r.typed_per_filter_config.insert(
            weft_xds::filter_name::FAULT.into(),
            pack(type_url::HTTP_FAULT, &f),
        );
        r
    };
    let mut headers_route = route_to("/headers", V1);
    headers_route.request_headers_to_add = vec![
        header("x-set", "set-value", 2),
        header("x-add", "added", 0),
        header("x-absent-only", "fallback", 1),
    ];
    headers_route.request_headers_to_remove = vec!["x-remove".into()];
    headers_route.response_headers_to_add = vec![header("x-resp", "r1", 2)];
    headers_route.response_headers_to_remove = vec!["x-drop-me".into()];
    let ads = FakeAds::start(
        "127.0.0.1:0".parse().expect("addr"),
        set(
            "1",
            &[(V1, &[v1.addr])],
            vec![vhost(
                "reviews",
                REVIEWS,
                vec![
                    with_fault("/abort", fault(Some(500), None)),
                    with_fault("/delay", fault(None, Some(20))),
                    with_fault("/both", fault(Some(418), Some(1))),
                    headers_route,
                    route_to("/", V1),
                ],
            )],
        ),
    )
    .await;
    let proxy = start_proxy(&ads.url()).await;
    until(&proxy, "reviews:9080", "/", "routes applied", |r| {
        r.status == 200
    })
    .await;
    let out = proxy.outbound_addr();

    let cases: &[(&str, &str, u16, &str, &str)] = &[
        ("abort", "/abort", 500, "FI", "fault filter abort"),
        ("delay then forward", "/delay", 200, "DI", "reviews-v1"),
        (
            "delay then abort",
            "/both",
            418,
            "DI,FI",
            "fault filter abort",
        ),
    ];
    for (name, path, status, flags, body) in cases {
        let r = get(out, "reviews:9080", path).await;
        assert_eq!(
            (r.status, r.flags()),
            (*status, flags.to_string()),
            "case {name}"
        );
        assert_eq!(
            r.body.lines().next().unwrap_or_default(),
            *body,
            "case {name}"
        );
    }

    let r = send(
        out,
        Form::Host,
        "reviews:9080",
        "/headers",
        &[
            ("x-set", "client"),
            ("x-add", "client"),
            ("x-remove", "bye"),
            ("x-absent-only", "client"),
        ],
    )
    .await
    .expect("send");
    assert_eq!(r.status, 200);
    for line in [
        "x-set: set-value",
        "x-add: client",
        "x-add: added",
        "x-absent-only: client",
    ] {
        assert!(r.upstream_saw(line), "upstream saw {line:?}: {}", r.body);
    }
    for gone in ["x-set: client", "x-remove: bye", "x-absent-only: fallback"] {
        assert!(
            !r.upstream_saw(gone),
            "upstream did not see {gone:?}: {}",
            r.body
        );
    }
    assert_eq!(
        r.headers.get("x-resp").map(|v| v.as_bytes()),
        Some(&b"r1"[..])
    );
    assert!(
        r.headers.get("x-drop-me").is_none(),
        "response header removed"
    );
    assert_eq!(
        r.headers.get("x-upstream").map(|v| v.as_bytes()),
        Some(&b"reviews-v1"[..])
    );
    proxy.shutdown().await;
}

/// A TCP upstream that reads until the client's FIN, then answers `<name> got <bytes>` and closes.
async fn tcp_answering(name: &'static str) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let a = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                if s.read_to_end(&mut got).await.is_ok() {
                    let reply = format!("{name} got {}", String::from_utf8_lossy(&got));
                    let _ = s.write_all(reply.as_bytes()).await;
                }
            });
        }
    });
    a
}

/// Sends `data` over TCP to `to`, closes the write side, and reads the answer to its end.
async fn tcp_exchange(to: SocketAddr, data: &[u8]) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(to).await?;
    s.write_all(data).await?;
    s.shutdown().await?;
    let mut back = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut back))
        .await
        .map_err(|_| std::io::Error::other("no answer in 10 s"))??;
    Ok(String::from_utf8_lossy(&back).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_listener_from_lds_proxies_bytes_both_ways() {
    use weft_xds::pb::envoy::config::core::v3::TrafficDirection;
    let (a, b) = (tcp_answering("a").await, tcp_answering("b").await);
    let name = "127.0.0.1_9000";
    let cluster = "outbound|9000||sink.default.svc.cluster.local";
    let mut s = set("1", &[], vec![]);
    s.clusters.push(eds_cluster(cluster));
    s.endpoints.push(cla(cluster, &[a, b]));
    s.listeners.push(tcp_listener(
        name,
        "127.0.0.1:0".parse().expect("addr"),
        TrafficDirection::Outbound,
        cluster,
    ));
    let ads = FakeAds::start("127.0.0.1:0".parse().expect("addr"), s.clone()).await;
    let proxy = start_proxy(&ads.url()).await;
    let bound = eventually("TCP listener bound", || async { proxy.listener_addr(name) }).await;

    // Bytes reach the upstream, the client's FIN too (the upstream answers only after it), and the
    // answer and the upstream's FIN come back. Connections are spread over both endpoints.
    let big = vec![b'x'; 200_000];
    let mut seen = Vec::new();
    for _ in 0..4 {
        let back = tcp_exchange(bound, &big).await.expect("exchange");
        let (who, rest) = back.split_once(" got ").expect("an answer");
        assert_eq!(rest.len(), big.len(), "all bytes through");
        seen.push(who.to_string());
    }
    seen.sort();
    assert_eq!(seen, ["a", "a", "b", "b"]);

    // An EDS change applies to the next connection, on the same bound listener.
    s.version = "2".into();
    s.endpoints = vec![cla(cluster, &[b])];
    ads.update(s.clone());
    eventually("new endpoints used", || async {
        let both = [
            tcp_exchange(bound, b"1").await.ok()?,
            tcp_exchange(bound, b"2").await.ok()?,
        ];
        (both == ["b got 1", "b got 2"]).then_some(())
    })
    .await;
    assert_eq!(proxy.listener_addr(name), Some(bound));

    // A dead endpoint: the connection is closed without an answer.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    s.version = "3".into();
    s.endpoints = vec![cla(cluster, &[dead])];
    ads.update(s.clone());
    eventually("dead endpoint closes the connection", || async {
        tcp_exchange(bound, b"x")
            .await
            .map_or(true, |back| back.is_empty())
            .then_some(())
    })
    .await;

    // Removing the listener closes its port.
    s.version = "4".into();
    s.listeners.clear();
    ads.update(s);
    eventually("TCP listener stopped", || async {
        proxy.listener_addr(name).is_none().then_some(())
    })
    .await;
    assert!(tokio::net::TcpStream::connect(bound).await.is_err());
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_tcp_listener_forwards_to_the_app() {
    use weft_xds::pb::envoy::config::core::v3::TrafficDirection;
    let app = tcp_answering("app").await;
    let name = "inbound_127.0.0.1_9000";
    let mut s = set("1", &[], vec![]);
    s.clusters.push(static_cluster("inbound|9000||", &[app]));
    s.listeners.push(tcp_listener(
        name,
        "127.0.0.1:0".parse().expect("addr"),
        TrafficDirection::Inbound,
        "inbound|9000||",
    ));
    let ads = FakeAds::start("127.0.0.1:0".parse().expect("addr"), s).await;
    let proxy = start_proxy(&ads.url()).await;
    let bound = eventually("inbound TCP bound", || async { proxy.listener_addr(name) }).await;
    assert_eq!(
        tcp_exchange(bound, b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("exchange"),
        "app got GET / HTTP/1.1\r\n\r\n",
        "bytes pass untouched, HTTP-looking or not"
    );
    // Istio's TCP metrics, as the destination: 18 bytes in, 26 out, one connection each way. Plaintext
    // TCP exchanges no metadata, so the source is unknown.
    let tcp = [
        ("reporter", "destination"),
        ("source_workload", "unknown"),
        ("destination_workload", "productpage-v1"),
        ("request_protocol", "tcp"),
        ("response_flags", "-"),
        ("connection_security_policy", "none"),
    ];
    // The connection's series are written as each direction ends, so all four are waited for; a wrong
    // value never settles and fails the wait.
    let want = [
        ("istio_tcp_connections_opened_total", 1.0),
        ("istio_tcp_connections_closed_total", 1.0),
        ("istio_tcp_received_bytes_total", 18.0),
        ("istio_tcp_sent_bytes_total", 26.0),
    ];
    let text = eventually("TCP metrics", || async {
        let t = stats(&proxy).await;
        want.iter()
            .all(|(family, v)| sample(&t, family, &tcp) == Some(*v))
            .then_some(t)
    })
    .await;
    assert!(
        !text.contains("response_code=\"0\",request_protocol=\"tcp\""),
        "{text}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_listener_from_lds_forwards_to_the_app() {
    let app = Upstream::start("app", Behaviour::Ok).await;
    let inbound_name = "inbound_127.0.0.1_9080";
    let mut s = set("1", &[], vec![]);
    s.clusters
        .push(static_cluster("inbound|9080||", &[app.addr]));
    s.listeners.push(inbound_listener(
        inbound_name,
        "127.0.0.1:0".parse().expect("addr"),
        "inbound|9080||",
    ));
    let ads = FakeAds::start("127.0.0.1:0".parse().expect("addr"), s.clone()).await;
    let proxy = start_proxy(&ads.url()).await;
    let bound = eventually("inbound bound", || async {
        proxy.listener_addr(inbound_name)
    })
    .await;
    let r = send(bound, Form::Host, "reviews:9080", "/reviews/1", &[])
        .await
        .expect("inbound");
    assert_eq!((r.status, r.upstream()), (200, "app"), "{r:?}");
    assert!(r.upstream_saw("host: reviews:9080"), "{}", r.body);

    // Removing the listener from LDS stops it.
    s.version = "2".into();
    s.listeners.retain(|l| {
        let l: weft_xds::pb::envoy::config::listener::v3::Listener =
            weft_xds::unpack(l).expect("listener");
        l.name != inbound_name
    });
    ads.update(s);
    eventually("inbound stopped", || async {
        proxy.listener_addr(inbound_name).is_none().then_some(())
    })
    .await;
    eventually("inbound port closed", || async move {
        send(bound, Form::Host, "reviews:9080", "/", &[])
            .await
            .is_err()
            .then_some(())
    })
    .await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_serving_without_xds_and_reconnects() {
    let v1 = Upstream::start("reviews-v1", Behaviour::Ok).await;
    let v2 = Upstream::start("reviews-v2", Behaviour::Ok).await;
    let clusters: &[(&str, &[SocketAddr])] = &[(V1, &[v1.addr]), (V2, &[v2.addr])];
    let ads = FakeAds::start(
        "127.0.0.1:0".parse().expect("addr"),
        set(
            "1",
            clusters,
            vec![vhost("reviews", REVIEWS, vec![route_to("/", V1)])],
        ),
    )
    .await;
    let ads_addr = ads.addr;
    let proxy = start_proxy_with(&ads.url(), &["--xds-protocol", "sotw"]).await;
    until(&proxy, "reviews:9080", "/", "v1 serving", |r| {
        r.upstream() == "reviews-v1"
    })
    .await;

    ads.kill().await;
    for _ in 0..10 {
        let r = get(proxy.outbound_addr(), "reviews:9080", "/").await;
        assert_eq!(r.upstream(), "reviews-v1", "last snapshot keeps serving");
    }
    assert_eq!(
        admin_get(proxy.admin_addr(), "/ready").await.map(|r| r.0),
        Some(200)
    );

    // weftd comes back on the same address with new routes: the proxy reconnects and applies them.
    let mut ads = FakeAds::start(
        ads_addr,
        set(
            "2",
            clusters,
            vec![vhost("reviews", REVIEWS, vec![route_to("/", V2)])],
        ),
    )
    .await;
    until(&proxy, "reviews:9080", "/", "v2 after reconnect", |r| {
        r.upstream() == "reviews-v2"
    })
    .await;
    let again = next_request(&mut ads, "node on the new stream", |r| r.node.is_some()).await;
    assert_eq!(
        again.version_info, "1",
        "resubscribes with the version it holds"
    );
    proxy.shutdown().await;
}

// === delta xDS ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_initial_sync_serves_traffic() {
    let v1 = Upstream::start("reviews-v1", Behaviour::Ok).await;
    let initial = set(
        "1",
        &[(V1, &[v1.addr])],
        vec![vhost("reviews", REVIEWS, vec![route_to("/", V1)])],
    );
    let mut ads = FakeAds::start("127.0.0.1:0".parse().expect("addr"), initial.clone()).await;
    let proxy = start_proxy(&ads.url()).await;
    until(&proxy, "reviews:9080", "/", "v1 serving", |r| {
        r.upstream() == "reviews-v1"
    })
    .await;

    // The stream's first message opens the CDS wildcard and is the only one with the node.
    let first = next_delta(&mut ads, "first delta request", |_| true).await;
    assert_eq!(first.type_url, type_url::CLUSTER);
    assert_eq!(
        first.node.expect("node on the first message").id,
        "sidecar~127.0.0.1~productpage-v1.default~default.svc.cluster.local"
    );
    assert!(first.resource_names_subscribe.is_empty(), "wildcard");
    assert!(
        first.initial_resource_versions.is_empty(),
        "nothing held yet"
    );

    // Every response is ACKed by nonce; EDS and RDS are subscribed by name, LDS as a wildcard.
    let mut sent = Vec::new();
    let mut received = Vec::new();
    eventually("an ACK of every type", || {
        while let Ok(r) = ads.delta_responses.try_recv() {
            sent.push(r);
        }
        while let Ok(r) = ads.delta_requests.try_recv() {
            received.push(r);
        }
        let all = type_url::ALL.iter().all(|url| {
            sent.iter()
                .any(|s| s.type_url == *url && received.iter().any(|r| r.response_nonce == s.nonce))
        });
        async move { all.then_some(()) }
    })
    .await;
    for r in &received {
        assert!(r.node.is_none(), "node only on the first message: {r:?}");
        assert!(r.error_detail.is_none(), "no NACK: {r:?}");
    }
    let opened = |url: &str| {
        received
            .iter()
            .find(|r| r.type_url == url && r.response_nonce.is_empty())
            .unwrap_or_else(|| panic!("a subscription of {url}"))
            .resource_names_subscribe
            .clone()
    };
    assert_eq!(opened(type_url::ENDPOINT), [V1]);
    assert_eq!(opened(type_url::LISTENER), Vec::<String>::new());
    assert_eq!(opened(type_url::ROUTE), ["9080"]);
    assert!(
        ads.requests.try_recv().is_err(),
        "no state-of-the-world stream was opened"
    );

    // /config_dump shows each resource with its own (opaque) version.
    let (_, dump) = admin_get(proxy.admin_addr(), "/config_dump")
        .await
        .expect("dump");
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("json");
    let route = &dump["configs"][3]["dynamic_route_configs"][0];
    assert_eq!(route["route_config"]["name"], "9080", "{route}");
    assert_eq!(
        route["version_info"],
        version_of(&initial.routes[0].1).as_str()
    );
    assert_eq!(dump["configs"][0]["version_info"], "1", "system version");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_added_changed_and_removed_resources_take_effect() {
    let v1 = Upstream::start("reviews-v1", Behaviour::Ok).await;
    let v1b = Upstream::start("reviews-v1b", Behaviour::Ok).await;
    let v2 = Upstream::start("reviews-v2", Behaviour::Ok).await;
    let vhosts = || {
        vec![vhost(
            "reviews",
            REVIEWS,
            vec![route_to("/v2", V2), route_to("/", V1)],
        )]
    };
    let mut ads = FakeAds::start(
        "127.0.0.1:0".parse().expect("addr"),
        set("1", &[(V1, &[v1.addr])], vhosts()),
    )
    .await;
    let proxy = start_proxy(&ads.url()).await;
    until(&proxy, "reviews:9080", "/", "v1 serving", |r| {
        r.upstream() == "reviews-v1"
    })
    .await;
    let r = get(proxy.outbound_addr(), "reviews:9080", "/v2").await;
    assert_eq!((r.status, r.flags().as_str()), (503, "NC"), "no v2 yet");

    // Added: only the new cluster travels, and its endpoints follow.
    ads.update(set("2", &[(V1, &[v1.addr]), (V2, &[v2.addr])], vhosts()));
    let cds = next_delta_response(&mut ads, "CDS adding v2", |r| {
        r.type_url == type_url::CLUSTER && r.system_version_info == "2"
    })
    .await;
    assert_eq!(resource_names(&cds), [V2]);
    assert!(cds.removed_resources.is_empty());
    until(&proxy, "reviews:9080", "/v2", "v2 added", |r| {
        r.upstream() == "reviews-v2"
    })
    .await;

    // Changed: v1's endpoints move; only its load assignment travels.
    ads.update(set("3", &[(V1, &[v1b.addr]), (V2, &[v2.addr])], vhosts()));
    let eds = next_delta_response(&mut ads, "EDS changing v1", |r| {
        r.type_url == type_url::ENDPOINT && r.system_version_info == "3"
    })
    .await;
    assert_eq!(resource_names(&eds), [V1]);
    until(&proxy, "reviews:9080", "/", "v1 moved", |r| {
        r.upstream() == "reviews-v1b"
    })
    .await;
    assert_eq!(
        get(proxy.outbound_addr(), "reviews:9080", "/v2")
            .await
            .upstream(),
        "reviews-v2",
        "the unchanged cluster still serves"
    );

    // Removed: v2 goes from CDS; its route now finds no cluster.
    ads.update(set("4", &[(V1, &[v1b.addr])], vhosts()));
    let cds = next_delta_response(&mut ads, "CDS removing v2", |r| {
        r.type_url == type_url::CLUSTER && r.system_version_info == "4"
    })
    .await;
    assert!(cds.resources.is_empty(), "{cds:?}");
    assert_eq!(cds.removed_resources, [V2]);
    until(&proxy, "reviews:9080", "/v2", "v2 removed", |r| {
        r.status == 503 && r.flags() == "NC"
    })
    .await;
    let text = clusters(&proxy).await;
    assert!(!text.contains(V2), "{text}");
    assert!(text.contains(&format!("{V1}::{}", v1b.addr)), "{text}");

    // A route table changes alone (the listener does not): requests follow it.
    let rerouted = vec![vhost(
        "reviews",
        REVIEWS,
        vec![route_to("/v2", V1), route_to("/", V1)],
    )];
    ads.update(set("5", &[(V1, &[v1b.addr])], rerouted));
    until(&proxy, "reviews:9080", "/v2", "v2 rerouted to v1", |r| {
        r.upstream() == "reviews-v1b"
    })
    .await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_eds_subscriptions_follow_clusters() {
    let v1 = Upstream::start("reviews-v1", Behaviour::Ok).await;
    let v2 = Upstream::start("reviews-v2", Behaviour::Ok).await;
    let vhosts = || vec![vhost("reviews", REVIEWS, vec![route_to("/", V1)])];
    let mut ads = FakeAds::start(
        "127.0.0.1:0".parse().expect("addr"),
        set("1", &[(V1, &[v1.addr])], vhosts()),
    )
    .await;
    let proxy = start_proxy(&ads.url()).await;
    let opened = next_delta(&mut ads, "EDS opened", |r| {
        r.type_url == type_url::ENDPOINT && !r.resource_names_subscribe.is_empty()
    })
    .await;
    assert_eq!(opened.resource_names_subscribe, [V1]);

    // A cluster comes: its name is subscribed, nothing unsubscribed.
    ads.update(set("2", &[(V1, &[v1.addr]), (V2, &[v2.addr])], vhosts()));
    let sub = next_delta(&mut ads, "EDS subscribe v2", |r| {
        r.type_url == type_url::ENDPOINT && !r.resource_names_subscribe.is_empty()
    })
    .await;
    assert_eq!(sub.resource_names_subscribe, [V2]);
    assert!(sub.resource_names_unsubscribe.is_empty());
    assert!(sub.response_nonce.is_empty(), "not an ACK");
    assert!(sub.node.is_none());
    eventually("v2 endpoints", || {
        let p = &proxy;
        async move {
            clusters(p)
                .await
                .contains(&format!("{V2}::{}", v2.addr))
                .then_some(())
        }
    })
    .await;

    // A cluster goes: its name is unsubscribed.
    ads.update(set("3", &[(V2, &[v2.addr])], vhosts()));
    let unsub = next_delta(&mut ads, "EDS unsubscribe v1", |r| {
        r.type_url == type_url::ENDPOINT && !r.resource_names_unsubscribe.is_empty()
    })
    .await;
    assert_eq!(unsub.resource_names_unsubscribe, [V1]);
    assert!(unsub.resource_names_subscribe.is_empty());

    // A listener comes with a new route table: RDS follows the same way.
    let mut s = set("4", &[(V2, &[v2.addr])], vhosts());
    s.listeners.push(outbound_listener(9090));
    s.routes.push(route_config(
        "9090",
        vec![vhost("r", &["reviews:9090"], vec![route_to("/", V2)])],
    ));
    ads.update(s);
    let rds = next_delta(&mut ads, "RDS subscribe 9090", |r| {
        r.type_url == type_url::ROUTE && !r.resource_names_subscribe.is_empty()
    })
    .await;
    assert_eq!(rds.resource_names_subscribe, ["9090"]);
    until(&proxy, "reviews:9090", "/", "9090 served", |r| {
        r.upstream() == "reviews-v2"
    })
    .await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_nack_keeps_the_old_snapshot_and_the_next_update_applies() {
    let v1 = Upstream::start("reviews-v1", Behaviour::Ok).await;
    let v2 = Upstream::start("reviews-v2", Behaviour::Ok).await;
    let clusters_ok: &[(&str, &[SocketAddr])] = &[(V1, &[v1.addr]), (V2, &[v2.addr])];
    let good = set(
        "1",
        clusters_ok,
        vec![vhost("reviews", REVIEWS, vec![route_to("/", V1)])],
    );
    let mut ads = FakeAds::start("127.0.0.1:0".parse().expect("addr"), good.clone()).await;
    let proxy = start_proxy(&ads.url()).await;
    until(&proxy, "reviews:9080", "/", "v1 serving", |r| {
        r.upstream() == "reviews-v1"
    })
    .await;

    // Version 2 adds a good cluster and a refused one in the same CDS response: all of it is NACKed.
    let mut bad = good.clone();
    bad.version = "2".into();
    bad.clusters.push(eds_cluster("extra"));
    bad.endpoints.push(cla("extra", &[v2.addr]));
    bad.clusters.push(logical_dns_cluster("dns"));
    ads.update(bad.clone());
    let sent = next_delta_response(&mut ads, "CDS version 2", |r| {
        r.type_url == type_url::CLUSTER && r.system_version_info == "2"
    })
    .await;
    assert_eq!(resource_names(&sent), ["dns", "extra"]);
    let nack = next_delta(&mut ads, "CDS NACK", |r| {
        r.type_url == type_url::CLUSTER && r.error_detail.is_some()
    })
    .await;
    assert_eq!(nack.response_nonce, sent.nonce);
    let detail = nack.error_detail.expect("detail");
    assert_eq!(detail.code, 3);
    assert_eq!(
        detail.message,
        "cluster \"dns\": unsupported cluster type LOGICAL_DNS"
    );
    for _ in 0..5 {
        assert_eq!(
            get(proxy.outbound_addr(), "reviews:9080", "/")
                .await
                .upstream(),
            "reviews-v1",
            "the old snapshot serves"
        );
    }
    let text = clusters(&proxy).await;
    assert!(!text.contains("extra") && !text.contains("dns"), "{text}");

    // Version 3 drops the refused cluster and moves the route to v2. The server believes "extra" was
    // delivered and does not resend it; the proxy never took it, so it must not appear now.
    let mut fixed = bad;
    fixed.version = "3".into();
    fixed.clusters.pop();
    fixed.routes = vec![route_config(
        "9080",
        vec![vhost("reviews", REVIEWS, vec![route_to("/", V2)])],
    )];
    ads.update(fixed);
    let cds = next_delta_response(&mut ads, "CDS version 3", |r| {
        r.type_url == type_url::CLUSTER && r.system_version_info == "3"
    })
    .await;
    assert_eq!(cds.removed_resources, ["dns"]);
    let no_extra = |r: &DeltaDiscoveryRequest| {
        assert!(
            !r.resource_names_subscribe.iter().any(|n| n == "extra"),
            "no EDS subscription for a rejected cluster: {r:?}"
        );
    };
    let ack = next_delta(&mut ads, "CDS version 3 ACK", |r| {
        no_extra(r);
        r.response_nonce == cds.nonce
    })
    .await;
    assert!(ack.error_detail.is_none(), "{:?}", ack.error_detail);
    until(&proxy, "reviews:9080", "/", "v2 after the fix", |r| {
        r.upstream() == "reviews-v2"
    })
    .await;
    let text = clusters(&proxy).await;
    assert!(
        !text.contains("extra"),
        "a rejected resource is not merged later: {text}"
    );
    assert!(text.contains(V1) && text.contains(V2), "{text}");
    while let Ok(r) = ads.delta_requests.try_recv() {
        no_extra(&r);
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_reconnect_sends_initial_resource_versions() {
    let v1 = Upstream::start("reviews-v1", Behaviour::Ok).await;
    let v2 = Upstream::start("reviews-v2", Behaviour::Ok).await;
    let clusters_ok: &[(&str, &[SocketAddr])] = &[(V1, &[v1.addr]), (V2, &[v2.addr])];
    let before = set(
        "1",
        clusters_ok,
        vec![vhost("reviews", REVIEWS, vec![route_to("/", V1)])],
    );
    let mut ads = FakeAds::start("127.0.0.1:0".parse().expect("addr"), before.clone()).await;
    let ads_addr = ads.addr;
    let proxy = start_proxy(&ads.url()).await;
    until(&proxy, "reviews:9080", "/", "v1 serving", |r| {
        r.upstream() == "reviews-v1"
    })
    .await;
    // Everything applied: wait for the RDS ACK.
    let rds = next_delta_response(&mut ads, "RDS sent", |r| r.type_url == type_url::ROUTE).await;
    next_delta(&mut ads, "RDS ACK", |r| r.response_nonce == rds.nonce).await;

    ads.kill().await;
    for _ in 0..10 {
        let r = get(proxy.outbound_addr(), "reviews:9080", "/").await;
        assert_eq!(r.upstream(), "reviews-v1", "last snapshot keeps serving");
    }

    // weftd comes back with only the route changed.
    let after = set(
        "2",
        clusters_ok,
        vec![vhost("reviews", REVIEWS, vec![route_to("/", V2)])],
    );
    let mut ads = FakeAds::start(ads_addr, after.clone()).await;
    until(&proxy, "reviews:9080", "/", "v2 after reconnect", |r| {
        r.upstream() == "reviews-v2"
    })
    .await;
    let versions = |s: &XdsSet, url: &str| -> std::collections::HashMap<String, String> {
        s.named(url)
            .iter()
            .map(|(n, a)| (n.clone(), version_of(a)))
            .collect()
    };
    for url in type_url::ALL {
        let first = next_delta(&mut ads, "first request of each type", |r| {
            r.type_url == url
        })
        .await;
        assert_eq!(
            first.initial_resource_versions,
            versions(&before, url),
            "{url}: what the proxy held"
        );
        assert_eq!(first.node.is_some(), url == type_url::CLUSTER, "{url}");
        match url {
            type_url::ENDPOINT => assert_eq!(first.resource_names_subscribe, [V1, V2]),
            type_url::ROUTE => assert_eq!(first.resource_names_subscribe, ["9080"]),
            _ => assert!(first.resource_names_subscribe.is_empty(), "{url}"),
        }
    }
    // The server could skip what did not change: only the route travelled again.
    let mut sent = Vec::new();
    while let Ok(r) = ads.delta_responses.try_recv() {
        sent.push(r);
    }
    let travelled: Vec<&str> = sent.iter().flat_map(resource_names).collect();
    assert_eq!(travelled, ["9080"], "{sent:?}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_to_sotw_when_delta_is_unimplemented() {
    let v1 = Upstream::start("reviews-v1", Behaviour::Ok).await;
    let v2 = Upstream::start("reviews-v2", Behaviour::Ok).await;
    let clusters_ok: &[(&str, &[SocketAddr])] = &[(V1, &[v1.addr]), (V2, &[v2.addr])];
    let mut ads = FakeAds::start_with(
        "127.0.0.1:0".parse().expect("addr"),
        set(
            "1",
            clusters_ok,
            vec![vhost("reviews", REVIEWS, vec![route_to("/", V1)])],
        ),
        DeltaMode::Unimplemented,
    )
    .await;
    let proxy = start_proxy(&ads.url()).await;
    until(&proxy, "reviews:9080", "/", "v1 serving", |r| {
        r.upstream() == "reviews-v1"
    })
    .await;
    let first = next_request(&mut ads, "state-of-the-world request", |_| true).await;
    assert!(
        first.node.is_some(),
        "the fallback stream starts with the node"
    );
    assert_eq!(first.type_url, type_url::CLUSTER);

    // Updates keep flowing over state of the world.
    ads.update(set(
        "2",
        clusters_ok,
        vec![vhost("reviews", REVIEWS, vec![route_to("/", V2)])],
    ));
    until(&proxy, "reviews:9080", "/", "v2 over sotw", |r| {
        r.upstream() == "reviews-v2"
    })
    .await;
    next_request(&mut ads, "RDS ACK of version 2", |r| {
        r.type_url == type_url::ROUTE && r.version_info == "2" && r.error_detail.is_none()
    })
    .await;
    proxy.shutdown().await;
}

/// The value of the sample of `family` whose labels include every `name="value"` of `labels`, in a
/// Prometheus text exposition.
fn sample(text: &str, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(family) && l[family.len()..].starts_with('{'))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn stats(proxy: &ProxyHandle) -> String {
    admin_get(proxy.admin_addr(), "/stats/prometheus")
        .await
        .map(|(_, b)| b)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_metrics_from_both_sidecars_with_exchanged_metadata() {
    // reviews-v2's sidecar: an inbound listener to its application.
    let app = Upstream::start("reviews-app", Behaviour::Ok).await;
    let inbound = "inbound_127.0.0.1_9080";
    let reviews = "outbound|9080||reviews.default.svc.cluster.local";
    let dead = "outbound|9080||ratings.default.svc.cluster.local";
    let mut s = set(
        "1",
        &[],
        vec![
            vhost("reviews", &["reviews:9080"], vec![route_to("/", reviews)]),
            vhost("ratings", &["ratings:9080"], vec![route_to("/", dead)]),
        ],
    );
    s.clusters
        .push(static_cluster("inbound|9080||", &[app.addr]));
    s.listeners.push(inbound_listener(
        inbound,
        "127.0.0.1:0".parse().expect("addr"),
        "inbound|9080||",
    ));
    let ads = FakeAds::start("127.0.0.1:0".parse().expect("addr"), s.clone()).await;
    let server = start_proxy_with(
        &ads.url(),
        &[
            "--workload",
            "reviews-v2",
            "--labels",
            "app=reviews,version=v2",
        ],
    )
    .await;
    let server_in = eventually("inbound bound", || async { server.listener_addr(inbound) }).await;

    // productpage-v1's sidecar sends reviews to it; ratings has no one listening.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    s.version = "2".into();
    s.clusters.push(eds_cluster(reviews));
    s.endpoints.push(cla(reviews, &[server_in]));
    s.clusters.push(eds_cluster(dead));
    s.endpoints.push(cla(dead, &[closed]));
    ads.update(s);
    let client = start_proxy_with(&ads.url(), &["--labels", "app=productpage,version=v1"]).await;
    until(&client, "reviews:9080", "/", "reviews routed", |r| {
        r.status == 200
    })
    .await;
    for _ in 0..2 {
        let r = get(client.outbound_addr(), "reviews:9080", "/reviews/0").await;
        assert_eq!(r.status, 200);
        // The metadata exchange is the sidecars' own: neither application sees it.
        assert!(!r.body.contains("x-envoy-peer-metadata"), "{}", r.body);
        assert!(
            !r.headers.contains_key("x-envoy-peer-metadata"),
            "{:?}",
            r.headers
        );
        assert!(!r.headers.contains_key("x-envoy-peer-metadata-id"));
    }
    assert_eq!(
        get(client.outbound_addr(), "ratings:9080", "/")
            .await
            .status,
        503
    );
    assert_eq!(
        get(client.outbound_addr(), "nowhere:9080", "/")
            .await
            .status,
        404
    );
    // A client without a sidecar, straight to the inbound listener.
    let r = send(server_in, Form::Host, "reviews:9080", "/", &[])
        .await
        .expect("direct");
    assert_eq!(r.status, 200);

    let source = [
        ("reporter", "source"),
        ("source_workload", "productpage-v1"),
        ("source_canonical_service", "productpage"),
        ("source_canonical_revision", "v1"),
        ("source_workload_namespace", "default"),
        ("source_app", "productpage"),
        ("source_version", "v1"),
        ("source_cluster", "Kubernetes"),
        ("destination_workload", "reviews-v2"),
        ("destination_app", "reviews"),
        ("destination_version", "v2"),
        ("destination_canonical_service", "reviews"),
        ("destination_service", "reviews.default.svc.cluster.local"),
        ("destination_service_name", "reviews"),
        ("destination_service_namespace", "default"),
        ("request_protocol", "http"),
        ("response_code", "200"),
        ("response_flags", "-"),
        ("connection_security_policy", "unknown"),
    ];
    // Counted as each response ends, which may be just after the client has read it.
    let text = eventually("source metrics", || async {
        let t = stats(&client).await;
        (sample(&t, "istio_requests_total", &source)? >= 3.0).then_some(t)
    })
    .await;
    assert_eq!(
        sample(&text, "istio_requests_total", &source),
        Some(3.0),
        "{text}"
    );
    let count = [
        ("reporter", "source"),
        ("destination_workload", "reviews-v2"),
    ];
    assert_eq!(
        sample(&text, "istio_request_duration_milliseconds_count", &count),
        Some(3.0),
        "{text}"
    );
    assert!(
        sample(&text, "istio_response_bytes_sum", &count).is_some_and(|b| b > 0.0),
        "{text}"
    );
    assert!(
        text.contains("istio_request_duration_milliseconds_bucket{"),
        "{text}"
    );
    // Failures, with their flags; the dead endpoint never answered, so its peer is unknown.
    let uf = [
        ("reporter", "source"),
        ("destination_workload", "unknown"),
        ("destination_service", "ratings.default.svc.cluster.local"),
        ("response_code", "503"),
    ];
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("istio_requests_total{")
                && uf.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .unwrap_or_else(|| panic!("no UF series: {text}"));
    assert!(line.contains("UF"), "{line}");
    let nr = [
        ("reporter", "source"),
        ("destination_service", "unknown"),
        ("response_code", "404"),
        ("response_flags", "NR"),
    ];
    assert_eq!(
        sample(&text, "istio_requests_total", &nr),
        Some(1.0),
        "{text}"
    );

    // The server's sidecar reports the same requests as their destination.
    let destination = [
        ("reporter", "destination"),
        ("source_workload", "productpage-v1"),
        ("source_app", "productpage"),
        ("source_principal", "unknown"),
        ("destination_workload", "reviews-v2"),
        ("destination_canonical_revision", "v2"),
        ("destination_service", "reviews.default.svc.cluster.local"),
        ("destination_service_name", "reviews"),
        ("response_code", "200"),
        ("connection_security_policy", "none"),
    ];
    let text = eventually("destination metrics", || async {
        let t = stats(&server).await;
        (sample(&t, "istio_requests_total", &destination)? >= 3.0).then_some(t)
    })
    .await;
    assert_eq!(
        sample(&text, "istio_requests_total", &destination),
        Some(3.0),
        "{text}"
    );
    // The client without a sidecar is `unknown`, as Istio labels a peer outside the mesh.
    let outside = [
        ("reporter", "destination"),
        ("source_workload", "unknown"),
        ("source_canonical_service", "unknown"),
        ("destination_workload", "reviews-v2"),
    ];
    assert_eq!(
        sample(&text, "istio_requests_total", &outside),
        Some(1.0),
        "{text}"
    );
    client.shutdown().await;
    server.shutdown().await;
}

/// `listener` (an HTTP one) with its connection manager changed by `edit`.
fn edit_hcm(
    listener: &weft_xds::Any,
    edit: impl FnOnce(
        &mut weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager,
    ),
) -> weft_xds::Any {
    use weft_xds::pb::envoy::config::listener::v3::{filter, Listener};
    let mut l: Listener = weft_xds::unpack(listener).expect("listener");
    let f = &mut l.filter_chains[0].filters[0];
    let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type else {
        panic!("no hcm");
    };
    let mut hcm = weft_xds::unpack(any).expect("hcm");
    edit(&mut hcm);
    *any = pack(type_url::HTTP_CONNECTION_MANAGER, &hcm);
    pack(type_url::LISTENER, &l)
}

/// `listener` (an HTTP one) with Envoy's file access logger writing to `path` in `format` (text; none:
/// Istio's default).
fn with_access_log(listener: weft_xds::Any, path: &str, format: Option<&str>) -> weft_xds::Any {
    use weft_xds::pb::envoy::config::accesslog::v3::{access_log, AccessLog};
    use weft_xds::pb::envoy::config::core::v3::{
        data_source, substitution_format_string, DataSource, SubstitutionFormatString,
    };
    use weft_xds::pb::envoy::extensions::access_loggers::file::v3::{
        file_access_log, FileAccessLog,
    };
    edit_hcm(&listener, |hcm| {
        let file = FileAccessLog {
            path: path.into(),
            access_log_format: format.map(|text| {
                file_access_log::AccessLogFormat::LogFormat(SubstitutionFormatString {
                    format: Some(substitution_format_string::Format::TextFormatSource(
                        DataSource {
                            specifier: Some(data_source::Specifier::InlineString(text.into())),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                })
            }),
        };
        hcm.access_log = vec![AccessLog {
            name: "envoy.access_loggers.file".into(),
            config_type: Some(access_log::ConfigType::TypedConfig(pack(
                type_url::FILE_ACCESS_LOG,
                &file,
            ))),
            ..Default::default()
        }];
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_logs_in_istios_format_and_bad_formats_refused() {
    let app = Upstream::start("app", Behaviour::Ok).await;
    let dir = std::env::temp_dir().join(format!("weft-access-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("sidecar.log");
    let inbound = "inbound_127.0.0.1_9080";
    let mut s = set("1", &[], vec![]);
    s.clusters
        .push(static_cluster("inbound|9080||", &[app.addr]));
    s.listeners.push(with_access_log(
        inbound_listener(
            inbound,
            "127.0.0.1:0".parse().expect("addr"),
            "inbound|9080||",
        ),
        &path.display().to_string(),
        None,
    ));
    let mut ads = FakeAds::start("127.0.0.1:0".parse().expect("addr"), s.clone()).await;
    let proxy = start_proxy_with(&ads.url(), &["--xds-protocol", "sotw"]).await;
    let bound = eventually("inbound bound", || async { proxy.listener_addr(inbound) }).await;
    let r = send(
        bound,
        Form::Host,
        "reviews:9080",
        "/reviews/0?x=1",
        &[("x-request-id", "req-42"), ("user-agent", "test-agent")],
    )
    .await
    .expect("inbound");
    assert_eq!(r.status, 200);
    let line = eventually("a logged line", || async {
        let text = std::fs::read_to_string(&path).ok()?;
        text.lines().next().map(str::to_string)
    })
    .await;
    // Istio's default text format, field by field.
    assert!(line.starts_with('['), "{line}");
    for part in [
        "] \"GET /reviews/0?x=1 HTTP/1.1\" 200 - - - \"-\" 0 ",
        " \"-\" \"test-agent\" \"req-42\" \"reviews:9080\" ",
        &format!(" \"{}\" inbound|9080|| - - - - -", app.addr),
    ] {
        assert!(line.contains(part), "{part:?} in {line}");
    }
    // A request without an id is logged with the one this hop made: the one the application got.
    let r = send(bound, Form::Host, "reviews:9080", "/second", &[])
        .await
        .expect("inbound");
    let id = r
        .body
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("an id upstream")
        .to_string();
    let line = eventually("the second line", || async {
        let text = std::fs::read_to_string(&path).ok()?;
        text.lines().nth(1).map(str::to_string)
    })
    .await;
    assert!(line.contains(&format!(" \"{id}\" ")), "{id} in {line}");

    // A format with an operator Weft does not know is refused (NACK), naming it; the old one serves.
    s.version = "2".into();
    s.listeners.retain(|l| {
        let l: weft_xds::pb::envoy::config::listener::v3::Listener =
            weft_xds::unpack(l).expect("listener");
        l.name != inbound
    });
    s.listeners.push(with_access_log(
        inbound_listener(
            inbound,
            "127.0.0.1:0".parse().expect("addr"),
            "inbound|9080||",
        ),
        &path.display().to_string(),
        Some("%NO_SUCH_THING%"),
    ));
    ads.update(s);
    let nack = next_request(&mut ads, "LDS NACK", |r| {
        r.type_url == type_url::LISTENER && r.error_detail.is_some()
    })
    .await;
    let detail = nack.error_detail.expect("detail").message;
    assert!(
        detail.contains("%NO_SUCH_THING% is not an operator Weft knows"),
        "{detail}"
    );
    assert_eq!(
        send(bound, Form::Host, "reviews:9080", "/", &[])
            .await
            .expect("still serving")
            .status,
        200
    );
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `listener` (an HTTP one) with Envoy's Zipkin tracer sending to `collector` (`host:port`, in
/// `collector_cluster` as weftd writes it) at `percent`.
fn with_tracing(listener: &weft_xds::Any, collector: &str, percent: f64) -> weft_xds::Any {
    use weft_xds::pb::envoy::config::trace::v3::{tracing, zipkin_config, ZipkinConfig};
    use weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        http_connection_manager::Tracing,
    };
    edit_hcm(listener, |hcm| {
        let zipkin = ZipkinConfig {
            collector_cluster: collector.into(),
            collector_endpoint: "/api/v2/spans".into(),
            collector_endpoint_version: zipkin_config::CollectorEndpointVersion::HttpJson as i32,
            ..Default::default()
        };
        hcm.tracing = Some(Tracing {
            random_sampling: Some(weft_xds::pb::envoy::r#type::v3::Percent { value: percent }),
            provider: Some(tracing::Http {
                name: "envoy.tracers.zipkin".into(),
                config_type: Some(tracing::http::ConfigType::TypedConfig(pack(
                    type_url::ZIPKIN_CONFIG,
                    &zipkin,
                ))),
            }),
            ..Default::default()
        });
    })
}

/// A Zipkin collector on loopback: keeps every span POSTed to it (as JSON).
struct Zipkin {
    addr: SocketAddr,
    spans: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl Zipkin {
    async fn start() -> Zipkin {
        use http_body_util::BodyExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let spans = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = spans.clone();
        tokio::spawn(async move {
            while let Ok((io, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let kept = kept.clone();
                            async move {
                                let ok = req.uri().path() == "/api/v2/spans";
                                let body = req.into_body().collect().await?.to_bytes();
                                if let (true, Ok(serde_json::Value::Array(list))) =
                                    (ok, serde_json::from_slice(&body))
                                {
                                    kept.lock().expect("spans").extend(list);
                                }
                                let mut r = hyper::Response::new(http_body_util::Empty::<
                                    bytes::Bytes,
                                >::new(
                                ));
                                *r.status_mut() = if ok {
                                    hyper::StatusCode::ACCEPTED
                                } else {
                                    hyper::StatusCode::NOT_FOUND
                                };
                                Ok::<_, hyper::Error>(r)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
                        .await;
                });
            }
        });
        Zipkin { addr, spans }
    }

    fn of_trace(&self, trace: &str) -> Vec<serde_json::Value> {
        self.spans
            .lock()
            .expect("spans")
            .iter()
            .filter(|s| s["traceId"] == trace)
            .cloned()
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_from_both_sidecars_form_one_trace() {
    let zipkin = Zipkin::start().await;
    let collector = zipkin.addr.to_string();
    // reviews-v2's sidecar: an inbound listener to its application, tracing at 100 %.
    let app = Upstream::start("reviews-app", Behaviour::Ok).await;
    let inbound = "inbound_127.0.0.1_9080";
    let reviews = "outbound|9080||reviews.default.svc.cluster.local";
    let mut s = set(
        "1",
        &[],
        vec![vhost(
            "reviews",
            &["reviews:9080"],
            vec![route_to("/", reviews)],
        )],
    );
    s.listeners = s
        .listeners
        .iter()
        .map(|l| with_tracing(l, &collector, 100.0))
        .collect();
    s.clusters
        .push(static_cluster("inbound|9080||", &[app.addr]));
    s.listeners.push(with_tracing(
        &inbound_listener(
            inbound,
            "127.0.0.1:0".parse().expect("addr"),
            "inbound|9080||",
        ),
        &collector,
        100.0,
    ));
    let ads = FakeAds::start("127.0.0.1:0".parse().expect("addr"), s.clone()).await;
    let server = start_proxy_with(
        &ads.url(),
        &[
            "--workload",
            "reviews-v2",
            "--labels",
            "app=reviews,version=v2",
        ],
    )
    .await;
    let server_in = eventually("inbound bound", || async { server.listener_addr(inbound) }).await;
    // productpage-v1's sidecar sends reviews to it.
    s.version = "2".into();
    s.clusters.push(eds_cluster(reviews));
    s.endpoints.push(cla(reviews, &[server_in]));
    ads.update(s);
    let client = start_proxy_with(&ads.url(), &["--labels", "app=productpage,version=v1"]).await;
    until(&client, "reviews:9080", "/", "reviews routed", |r| {
        r.status == 200
    })
    .await;

    // A request the caller has decided not to sample: propagated as such, never reported.
    let unsampled = "aaaaaaaaaaaaaaaa";
    let r = send(
        client.outbound_addr(),
        Form::Absolute,
        "reviews:9080",
        "/reviews/1",
        &[
            ("x-b3-traceid", unsampled),
            ("x-b3-spanid", "bbbbbbbbbbbbbbbb"),
            ("x-b3-sampled", "0"),
        ],
    )
    .await
    .expect("unsampled");
    assert_eq!(r.status, 200);
    assert!(
        r.body.to_ascii_lowercase().contains("x-b3-sampled: 0"),
        "{}",
        r.body
    );

    // One request with a trace id of the test's choosing: a client span and a server span.
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let r = send(
        client.outbound_addr(),
        Form::Absolute,
        "reviews:9080",
        "/reviews/0",
        &[
            ("traceparent", &format!("00-{trace}-b7ad6b7169203331-01")),
            ("x-request-id", "req-7"),
        ],
    )
    .await
    .expect("traced");
    assert_eq!(r.status, 200);
    let spans = eventually("two spans", || async {
        let s = zipkin.of_trace(trace);
        (s.len() >= 2).then_some(s)
    })
    .await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let client_span = spans
        .iter()
        .find(|s| s["kind"] == "CLIENT")
        .expect("client span");
    let server_span = spans
        .iter()
        .find(|s| s["kind"] == "SERVER")
        .expect("server span");
    assert_eq!(
        client_span["parentId"], "b7ad6b7169203331",
        "the caller's span"
    );
    assert_eq!(server_span["parentId"], client_span["id"], "{spans:#?}");
    assert_ne!(server_span["id"], client_span["id"]);
    assert_eq!(
        client_span["localEndpoint"]["serviceName"],
        "productpage.default"
    );
    assert_eq!(
        server_span["localEndpoint"]["serviceName"],
        "reviews.default"
    );
    for (span, cluster, service) in [
        (client_span, reviews, "productpage"),
        (server_span, "inbound|9080||", "reviews"),
    ] {
        let tags = &span["tags"];
        assert_eq!(tags["upstream_cluster"], cluster, "{span:#}");
        assert_eq!(tags["istio.canonical_service"], service, "{span:#}");
        assert_eq!(tags["http.method"], "GET", "{span:#}");
        assert_eq!(
            tags["http.url"], "http://reviews:9080/reviews/0",
            "{span:#}"
        );
        assert_eq!(tags["http.status_code"], "200", "{span:#}");
        assert_eq!(tags["response_flags"], "-", "{span:#}");
        assert_eq!(tags["component"], "proxy", "{span:#}");
        assert_eq!(tags["guid:x-request-id"], "req-7", "{span:#}");
        assert!(
            tags["node_id"]
                .as_str()
                .is_some_and(|n| n.starts_with("sidecar~")),
            "{span:#}"
        );
        assert!(tags.get("error").is_none(), "{span:#}");
        // Named as Istio names them: the service's host and port.
        assert_eq!(
            span["name"], "reviews.default.svc.cluster.local:9080/*",
            "{span:#}"
        );
    }
    // What each exporter sent is counted with the proxy's metrics.
    for p in [&client, &server] {
        eventually("spans sent counted", || async {
            let t = stats(p).await;
            t.lines()
                .filter(|l| l.starts_with("weft_trace_spans_sent_total{collector=\"http://"))
                .any(|l| !l.ends_with(" 0"))
                .then_some(())
        })
        .await;
    }
    // Both exporters send in order, so the unsampled request's spans would have arrived by now.
    assert!(
        zipkin.of_trace(unsampled).is_empty(),
        "x-b3-sampled: 0 honoured"
    );
    assert!(zipkin
        .of_trace(&format!("0000000000000000{unsampled}"))
        .is_empty());
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_down_fails_no_request_and_a_bad_tracer_is_refused() {
    let app = Upstream::start("app", Behaviour::Ok).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let inbound = "inbound_127.0.0.1_9080";
    let listener = || {
        inbound_listener(
            inbound,
            "127.0.0.1:0".parse().expect("addr"),
            "inbound|9080||",
        )
    };
    let mut s = set("1", &[], vec![]);
    s.clusters
        .push(static_cluster("inbound|9080||", &[app.addr]));
    s.listeners.push(with_tracing(&listener(), &closed, 100.0));
    let mut ads = FakeAds::start("127.0.0.1:0".parse().expect("addr"), s.clone()).await;
    let proxy = start_proxy_with(&ads.url(), &["--xds-protocol", "sotw"]).await;
    let bound = eventually("inbound bound", || async { proxy.listener_addr(inbound) }).await;
    let started = std::time::Instant::now();
    for i in 0..20 {
        let r = send(bound, Form::Host, "reviews:9080", "/", &[])
            .await
            .expect("inbound");
        assert_eq!(r.status, 200, "request {i}");
        // The application still gets this hop's context.
        assert!(
            r.body.to_ascii_lowercase().contains("traceparent: 00-"),
            "{}",
            r.body
        );
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The collector's refusals are counted where the proxy's metrics are.
    eventually("export failures counted", || async {
        let t = stats(&proxy).await;
        t.lines()
            .filter(|l| l.starts_with("weft_trace_export_failures_total{collector="))
            .any(|l| !l.ends_with(" 0"))
            .then_some(())
    })
    .await;

    // A tracer weft does not have refuses the listener (NACK naming the field); the old one serves.
    s.version = "2".into();
    s.listeners.retain(|l| {
        let l: weft_xds::pb::envoy::config::listener::v3::Listener =
            weft_xds::unpack(l).expect("listener");
        l.name != inbound
    });
    s.listeners.push(with_tracing(&listener(), "", 100.0));
    ads.update(s);
    let nack = next_request(&mut ads, "LDS NACK", |r| {
        r.type_url == type_url::LISTENER && r.error_detail.is_some()
    })
    .await;
    let detail = nack.error_detail.expect("detail").message;
    assert!(
        detail.contains("tracing: provider \"envoy.tracers.zipkin\": collector_cluster is empty"),
        "{detail}"
    );
    assert_eq!(
        send(bound, Form::Host, "reviews:9080", "/", &[])
            .await
            .expect("still serving")
            .status,
        200
    );
    proxy.shutdown().await;
}

/// `listener` (an HTTP one) with Istio's stats filter, whose config's `metrics` are `entries`.
fn with_stats(
    listener: weft_xds::Any,
    entries: Vec<weft_xds::pb::google::protobuf::Value>,
) -> weft_xds::Any {
    use weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        http_filter, HttpFilter,
    };
    use weft_xds::pb::google::protobuf::{value::Kind, ListValue, Struct, Value};
    edit_hcm(&listener, |hcm| {
        let metrics = Value {
            kind: Some(Kind::ListValue(ListValue { values: entries })),
        };
        let config = weft_xds::TypedStruct {
            type_url: type_url::ISTIO_STATS_CONFIG.into(),
            value: Some(Struct {
                fields: [("metrics".to_string(), metrics)].into_iter().collect(),
            }),
        };
        hcm.http_filters.insert(
            0,
            HttpFilter {
                name: "istio.stats".into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(pack(
                    type_url::TYPED_STRUCT,
                    &config,
                ))),
                ..Default::default()
            },
        );
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_dropped_records_nothing_and_still_exchanges_metadata() {
    use weft_xds::pb::google::protobuf::{value::Kind, Struct, Value};
    let app = Upstream::start("app", Behaviour::Ok).await;
    let (off, on) = ("inbound_127.0.0.1_9080", "inbound_127.0.0.1_9081");
    let any = "127.0.0.1:0".parse().expect("addr");
    let mut s = set("1", &[], vec![]);
    s.clusters
        .push(static_cluster("inbound|9080||", &[app.addr]));
    // A Telemetry disabling ALL_METRICS: one entry, no name (every metric), dropped.
    let drop_all = Value {
        kind: Some(Kind::StructValue(Struct {
            fields: [(
                "drop".to_string(),
                Value {
                    kind: Some(Kind::BoolValue(true)),
                },
            )]
            .into_iter()
            .collect(),
        })),
    };
    s.listeners.push(with_stats(
        inbound_listener(off, any, "inbound|9080||"),
        vec![drop_all],
    ));
    s.listeners
        .push(inbound_listener(on, any, "inbound|9080||"));
    let ads = FakeAds::start(any, s).await;
    let proxy = start_proxy_with(&ads.url(), &["--workload", "reviews-v1"]).await;
    let off_addr = eventually("off bound", || async { proxy.listener_addr(off) }).await;
    let on_addr = eventually("on bound", || async { proxy.listener_addr(on) }).await;
    let peer = [(
        "x-envoy-peer-metadata-id",
        "sidecar~127.0.0.9~productpage-v1.default~default.svc.cluster.local",
    )];
    for _ in 0..3 {
        let r = send(off_addr, Form::Host, "dropped:9080", "/", &peer)
            .await
            .expect("off");
        assert_eq!(r.status, 200);
        // The exchange goes on: the peer's field taken off, this sidecar's put on the response.
        assert!(!r.body.contains("x-envoy-peer-metadata"), "{}", r.body);
        assert!(
            r.headers.contains_key("x-envoy-peer-metadata-id"),
            "{:?}",
            r.headers
        );
    }
    let r = send(on_addr, Form::Host, "kept:9080", "/", &peer)
        .await
        .expect("on");
    assert_eq!(r.status, 200);
    let kept = [
        ("reporter", "destination"),
        ("destination_service_name", "kept"),
    ];
    let text = eventually("the kept listener's series", || async {
        let t = stats(&proxy).await;
        sample(&t, "istio_requests_total", &kept).map(|_| t)
    })
    .await;
    assert!(
        !text.contains("destination_service_name=\"dropped\""),
        "{text}"
    );
    proxy.shutdown().await;
}

/// A TCP upstream that writes back every byte it reads twice, and closes after the client's FIN.
async fn tcp_doubling() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let a = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = s.read(&mut buf).await {
                    for _ in 0..2 {
                        if s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
                let _ = s.shutdown().await;
            });
        }
    });
    a
}

/// `listener` (a TCP one) with Istio's stats filter before `tcp_proxy`, its config's fields `fields`.
fn with_tcp_stats(
    listener: weft_xds::Any,
    fields: Vec<(&str, weft_xds::pb::google::protobuf::Value)>,
) -> weft_xds::Any {
    use weft_xds::pb::envoy::config::listener::v3::{filter, Filter, Listener};
    use weft_xds::pb::google::protobuf::Struct;
    let mut l: Listener = weft_xds::unpack(&listener).expect("listener");
    let config = weft_xds::TypedStruct {
        type_url: type_url::ISTIO_STATS_CONFIG.into(),
        value: Some(Struct {
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }),
    };
    l.filter_chains[0].filters.insert(
        0,
        Filter {
            name: weft_xds::filter_name::ISTIO_STATS.into(),
            config_type: Some(filter::ConfigType::TypedConfig(pack(
                type_url::TYPED_STRUCT,
                &config,
            ))),
        },
    );
    pack(type_url::LISTENER, &l)
}

/// Reads exactly `n` bytes from `s`, within 10 s.
async fn read_n(s: &mut tokio::net::TcpStream, n: usize) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0; n];
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_exact(&mut buf))
        .await
        .expect("answer in 10 s")
        .expect("read");
    buf
}

/// Closes the write side of `s` and reads the rest until the other side's FIN, within 10 s.
async fn finish(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.shutdown().await.expect("FIN");
    let mut rest = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("end in 10 s")
        .expect("read");
    rest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_bytes_are_reported_while_the_connection_is_open() {
    use tokio::io::AsyncWriteExt;
    use weft_xds::pb::envoy::config::core::v3::TrafficDirection;
    use weft_xds::pb::google::protobuf::{value::Kind, ListValue, Struct, Value};
    let text = |s: &str| Value {
        kind: Some(Kind::StringValue(s.into())),
    };
    let obj = |fields: Vec<(&str, Value)>| Value {
        kind: Some(Kind::StructValue(Struct {
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        })),
    };
    let app = tcp_doubling().await;
    let (plain, tagged) = ("127.0.0.1_9000", "127.0.0.1_9001");
    let plain_cluster = "outbound|9000||plain.default.svc.cluster.local";
    let tagged_cluster = "outbound|9001||tagged.default.svc.cluster.local";
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let mut s = set("1", &[], vec![]);
    s.clusters.push(static_cluster(plain_cluster, &[app]));
    s.clusters.push(static_cluster(tagged_cluster, &[app]));
    // Istio's stats config writes the interval as a protobuf Duration in JSON.
    let every = ("tcp_reporting_duration", text("0.05s"));
    s.listeners.push(with_tcp_stats(
        tcp_listener(plain, any, TrafficDirection::Outbound, plain_cluster),
        vec![every.clone()],
    ));
    // Overrides still apply to what is reported while open: sent bytes dropped, received ones tagged.
    let metrics = Value {
        kind: Some(Kind::ListValue(ListValue {
            values: vec![
                obj(vec![
                    ("name", text("tcp_sent_bytes_total")),
                    (
                        "drop",
                        Value {
                            kind: Some(Kind::BoolValue(true)),
                        },
                    ),
                ]),
                obj(vec![
                    ("name", text("tcp_received_bytes_total")),
                    ("dimensions", obj(vec![("tunnel", text("'yes'"))])),
                ]),
            ],
        })),
    };
    s.listeners.push(with_tcp_stats(
        tcp_listener(tagged, any, TrafficDirection::Outbound, tagged_cluster),
        vec![every, ("metrics", metrics)],
    ));
    let ads = FakeAds::start(any, s).await;
    let proxy = start_proxy(&ads.url()).await;
    let plain_addr = eventually("plain bound", || async { proxy.listener_addr(plain) }).await;
    let tagged_addr = eventually("tagged bound", || async { proxy.listener_addr(tagged) }).await;
    let (received, sent) = (
        "istio_tcp_received_bytes_total",
        "istio_tcp_sent_bytes_total",
    );
    let (opened, closed) = (
        "istio_tcp_connections_opened_total",
        "istio_tcp_connections_closed_total",
    );
    let p = [
        ("reporter", "source"),
        ("destination_service_name", "plain"),
        ("response_flags", "-"),
    ];
    // The bytes of a connection still open, each way, as the client and the upstream moved them.
    let shows = |want: (f64, f64)| {
        let proxy = &proxy;
        let p = &p;
        move || async move {
            let t = stats(proxy).await;
            let now = (sample(&t, received, p), sample(&t, sent, p));
            (now == (Some(want.0), Some(want.1))).then_some(t)
        }
    };

    let mut c = tokio::net::TcpStream::connect(plain_addr)
        .await
        .expect("connect");
    c.write_all(&[b'a'; 1000]).await.expect("write");
    assert_eq!(read_n(&mut c, 2000).await, [b'a'; 2000]);
    let t = eventually("bytes reported while open", shows((1000.0, 2000.0))).await;
    assert_eq!(sample(&t, opened, &p), Some(1.0), "{t}");
    assert_eq!(sample(&t, closed, &p), Some(0.0), "still open: {t}");
    // The next report adds only what moved since the last one.
    c.write_all(&[b'b'; 500]).await.expect("write");
    assert_eq!(read_n(&mut c, 1000).await, [b'b'; 1000]);
    let t = eventually("more bytes reported while open", shows((1500.0, 3000.0))).await;
    assert_eq!(sample(&t, closed, &p), Some(0.0), "still open: {t}");
    // The last bytes and the close: the totals are exactly what crossed, nothing counted twice.
    c.write_all(&[b'c'; 250]).await.expect("write");
    assert_eq!(finish(&mut c).await, [b'c'; 500]);
    let t = eventually("closed", || async {
        let t = stats(&proxy).await;
        (sample(&t, closed, &p) == Some(1.0)).then_some(t)
    })
    .await;
    for (family, want) in [
        (opened, 1.0),
        (closed, 1.0),
        (received, 1750.0),
        (sent, 3500.0),
    ] {
        assert_eq!(sample(&t, family, &p), Some(want), "{family} in {t}");
    }

    // With overrides: received bytes reported while open on the tagged series; sent ones never.
    let g = [
        ("reporter", "source"),
        ("destination_service_name", "tagged"),
    ];
    let tagged_received = [g[0], g[1], ("tunnel", "yes")];
    let mut c = tokio::net::TcpStream::connect(tagged_addr)
        .await
        .expect("connect");
    c.write_all(&[b'd'; 100]).await.expect("write");
    assert_eq!(read_n(&mut c, 200).await, [b'd'; 200]);
    let t = eventually("tagged bytes reported while open", || async {
        let t = stats(&proxy).await;
        (sample(&t, received, &tagged_received) == Some(100.0)).then_some(t)
    })
    .await;
    assert_eq!(sample(&t, closed, &g), Some(0.0), "still open: {t}");
    assert_eq!(finish(&mut c).await, b"");
    let t = eventually("tagged closed", || async {
        let t = stats(&proxy).await;
        (sample(&t, closed, &g) == Some(1.0)).then_some(t)
    })
    .await;
    assert_eq!(sample(&t, received, &tagged_received), Some(100.0), "{t}");
    assert_eq!(sample(&t, sent, &g), None, "dropped: {t}");
    proxy.shutdown().await;
}
