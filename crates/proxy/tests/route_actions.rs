//! End to end, through a real proxy on loopback: the route actions and options VirtualService rules
//! translate to (redirects, direct responses, rewrites, mirrors, CORS, query matches, gRPC aborts).
//! Upstreams report what they received on channels; nothing waits by sleeping.

#[allow(dead_code)]
#[path = "support/fake_ads.rs"]
mod fake_ads;
#[path = "support/net.rs"]
#[allow(dead_code)]
mod net;
#[allow(dead_code)]
#[path = "support/resources.rs"]
mod resources;

use bytes::Bytes;
use fake_ads::{FakeAds, XdsSet};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use net::{eventually, get, grpc_call, send, start_proxy_with, Behaviour, Form, Upstream};
use resources::*;
use std::convert::Infallible;
use std::net::SocketAddr;
use tokio::sync::mpsc;
use weft_proxy::ProxyHandle;
use weft_xds::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use weft_xds::pb::envoy::config::core::v3::{data_source::Specifier, DataSource};
use weft_xds::pb::envoy::config::route::v3::query_parameter_matcher::QueryParameterMatchSpecifier;
use weft_xds::pb::envoy::config::route::v3::redirect_action::{
    PathRewriteSpecifier, SchemeRewriteSpecifier,
};
use weft_xds::pb::envoy::config::route::v3::route::Action;
use weft_xds::pb::envoy::config::route::v3::route_action::{
    HostRewriteSpecifier, RequestMirrorPolicy,
};
use weft_xds::pb::envoy::config::route::v3::{
    DirectResponseAction, QueryParameterMatcher, RedirectAction, Route, VirtualHost,
};
use weft_xds::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use weft_xds::pb::envoy::extensions::filters::http::fault::v3::{
    fault_abort, FaultAbort, HttpFault,
};
use weft_xds::pb::envoy::r#type::v3::FractionalPercent;
use weft_xds::pb::google::protobuf::BoolValue;
use weft_xds::{filter_name, pack, type_url};

const V1: &str = "outbound|9080|v1|reviews.default.svc.cluster.local";
const SHADOW: &str = "outbound|9080|v2|reviews.default.svc.cluster.local";
/// A cluster whose one endpoint refuses connections.
const DEAD: &str = "outbound|9080|dead|reviews.default.svc.cluster.local";
const REVIEWS: &[&str] = &["reviews", "reviews:9080"];

fn set(clusters: &[(&str, &[SocketAddr])], routes: Vec<Route>) -> XdsSet {
    let vhosts: Vec<VirtualHost> = vec![vhost("reviews", REVIEWS, routes)];
    XdsSet {
        version: "1".into(),
        clusters: clusters.iter().map(|(n, _)| eds_cluster(n)).collect(),
        endpoints: clusters.iter().map(|(n, eps)| cla(n, eps)).collect(),
        listeners: vec![outbound_listener(9080)],
        routes: vec![route_config("9080", vhosts)],
    }
}

/// The ADS server (kept alive by the caller) and a proxy that has applied `set`.
async fn proxy_with(set: XdsSet) -> (FakeAds, ProxyHandle) {
    let ads = FakeAds::start("127.0.0.1:0".parse().expect("addr"), set).await;
    let proxy = start_proxy_with(&ads.url(), &[]).await;
    let out = proxy.outbound_addr();
    eventually("routes applied", || async move {
        let r = send(out, Form::Host, "reviews:9080", "/ready", &[])
            .await
            .ok()?;
        (r.status != 404).then_some(())
    })
    .await;
    (ads, proxy)
}

fn with_action(prefix: &str, action: Action) -> Route {
    let mut r = route_to(prefix, "");
    r.action = Some(action);
    r
}

/// What a recording upstream received.
#[derive(Debug)]
struct Seen {
    host: String,
    path: String,
    body: Bytes,
}

/// An HTTP/1.1 and HTTP/2 upstream that answers 200 `name` and sends what it received on the channel.
async fn recording(name: &'static str) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        async move {
                            let host = req
                                .uri()
                                .authority()
                                .map(|a| a.to_string())
                                .or_else(|| {
                                    req.headers()
                                        .get("host")
                                        .and_then(|v| v.to_str().ok())
                                        .map(String::from)
                                })
                                .unwrap_or_default();
                            let path = req
                                .uri()
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let _ = tx.send(Seen { host, path, body });
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(name))))
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, rx)
}

/// `method path` with `Host: reviews:9080`, `headers` and `body` over HTTP/1.1.
async fn request(
    proxy: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static [u8],
) -> (http::response::Parts, Bytes) {
    let io = TokioIo::new(
        tokio::net::TcpStream::connect(proxy)
            .await
            .expect("connect"),
    );
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut b = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "reviews:9080");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = sender
        .send_request(
            b.body(Full::new(Bytes::from_static(body)))
                .expect("request"),
        )
        .await
        .expect("response");
    let (parts, body) = resp.into_parts();
    (parts, body.collect().await.expect("body").to_bytes())
}

fn header<'a>(parts: &'a http::response::Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_and_direct_responses_are_answered_by_the_proxy() {
    let v1 = Upstream::start("reviews-v1", Behaviour::Ok).await;
    let mut teapot = with_action(
        "/teapot",
        Action::DirectResponse(DirectResponseAction {
            status: 418,
            body: Some(DataSource {
                specifier: Some(Specifier::InlineString("short and stout".into())),
                ..Default::default()
            }),
            ..Default::default()
        }),
    );
    teapot.response_headers_to_add = vec![resources::header("content-type", "application/json", 2)];
    let routes = vec![
        with_action(
            "/old",
            Action::Redirect(RedirectAction {
                path_rewrite_specifier: Some(PathRewriteSpecifier::PrefixRewrite("/new".into())),
                response_code: 4,
                ..Default::default()
            }),
        ),
        with_action(
            "/secure",
            Action::Redirect(RedirectAction {
                host_redirect: "web.example".into(),
                scheme_rewrite_specifier: Some(SchemeRewriteSpecifier::SchemeRedirect(
                    "https".into(),
                )),
                ..Default::default()
            }),
        ),
        teapot,
        with_action(
            "/empty",
            Action::DirectResponse(DirectResponseAction {
                status: 204,
                ..Default::default()
            }),
        ),
        route_to("/", V1),
    ];
    let (_ads, proxy) = proxy_with(set(&[(V1, &[v1.addr])], routes)).await;
    let out = proxy.outbound_addr();
    let hits = v1.hits();

    let cases: &[(&str, &str, u16, Option<&str>, &str)] = &[
        (
            "prefix redirect keeps the rest and the query",
            "/old/x?q=1",
            308,
            Some("http://reviews:9080/new/x?q=1"),
            "",
        ),
        (
            "host and scheme redirect",
            "/secure/p",
            301,
            Some("https://web.example/secure/p"),
            "",
        ),
        ("direct response", "/teapot", 418, None, "short and stout"),
        ("direct response without body", "/empty", 204, None, ""),
    ];
    for (name, path, status, location, body) in cases {
        let r = get(out, "reviews:9080", path).await;
        assert_eq!(r.status, *status, "case {name}");
        assert_eq!(
            r.headers.get("location").and_then(|v| v.to_str().ok()),
            *location,
            "case {name}"
        );
        assert_eq!(r.body, *body, "case {name}");
        assert_eq!(r.flags(), "-", "case {name}: Envoy sets no flag on these");
    }
    let r = get(out, "reviews:9080", "/teapot").await;
    assert_eq!(
        r.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/json"[..]),
        "the route's response header edits apply"
    );
    assert_eq!(v1.hits(), hits, "nothing went upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_change_what_the_upstream_gets() {
    let (up, mut seen) = recording("reviews-v1").await;
    let mut prefix = route_to("/v1/", V1);
    action(&mut prefix).prefix_rewrite = "/v2/".into();
    action(&mut prefix).host_rewrite_specifier = Some(HostRewriteSpecifier::HostRewriteLiteral(
        "ratings:8080".into(),
    ));
    let mut regex = route_to("/users/", V1);
    action(&mut regex).regex_rewrite = Some(
        weft_xds::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute {
            pattern: Some(weft_xds::pb::envoy::r#type::matcher::v3::RegexMatcher {
                regex: "^/users/([0-9]+)/profile$".into(),
                ..Default::default()
            }),
            substitution: "/profiles/\\1".into(),
        },
    );
    let routes = vec![prefix, regex, route_to("/", V1)];
    let (_ads, proxy) = proxy_with(set(&[(V1, &[up])], routes)).await;
    let out = proxy.outbound_addr();
    while seen.try_recv().is_ok() {}

    for (form, name) in [(Form::Host, "HTTP/1.1"), (Form::H2, "HTTP/2")] {
        let r = send(out, form, "reviews:9080", "/v1/items?page=2", &[])
            .await
            .expect("send");
        assert_eq!(r.status, 200, "{name}");
        let s = seen.recv().await.expect("upstream request");
        assert_eq!(
            (s.host.as_str(), s.path.as_str()),
            ("ratings:8080", "/v2/items?page=2"),
            "{name}"
        );

        let r = send(out, form, "reviews:9080", "/users/42/profile?x=1", &[])
            .await
            .expect("send");
        assert_eq!(r.status, 200, "{name}");
        let s = seen.recv().await.expect("upstream request");
        assert_eq!(
            (s.host.as_str(), s.path.as_str()),
            ("reviews:9080", "/profiles/42?x=1"),
            "{name}"
        );
    }
}

fn mirror(cluster: &str, per_million: u32) -> RequestMirrorPolicy {
    RequestMirrorPolicy {
        cluster: cluster.into(),
        runtime_fraction: Some(RuntimeFractionalPercent {
            default_value: Some(FractionalPercent {
                numerator: per_million,
                denominator: 2,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_get_a_copy_with_the_shadow_host() {
    let (main, mut main_seen) = recording("reviews-v1").await;
    let (shadow, mut shadow_seen) = recording("reviews-v2").await;
    // A port nobody listens on: the mirror to it fails, the request it copies does not.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let mut mirrored = route_to("/mirrored", V1);
    action(&mut mirrored).request_mirror_policies =
        vec![mirror(DEAD, 1_000_000), mirror(SHADOW, 1_000_000)];
    let mut never = route_to("/never", V1);
    action(&mut never).request_mirror_policies = vec![mirror(SHADOW, 0)];
    let routes = vec![mirrored, never, route_to("/", V1)];
    let (_ads, proxy) = proxy_with(set(
        &[(V1, &[main]), (SHADOW, &[shadow]), (DEAD, &[dead])],
        routes,
    ))
    .await;
    let out = proxy.outbound_addr();
    while main_seen.try_recv().is_ok() {}

    let (parts, body) = request(out, "POST", "/mirrored/a?b=1", &[], b"payload").await;
    assert_eq!(
        (parts.status.as_u16(), &body[..]),
        (200, &b"reviews-v1"[..])
    );
    let m = main_seen.recv().await.expect("main request");
    assert_eq!(
        (m.host.as_str(), &m.body[..]),
        ("reviews:9080", &b"payload"[..])
    );
    let s = shadow_seen.recv().await.expect("mirrored request");
    assert_eq!(
        (s.host.as_str(), s.path.as_str(), &s.body[..]),
        ("reviews-shadow:9080", "/mirrored/a?b=1", &b"payload"[..])
    );

    // HTTP/2: the shadow authority too.
    let r = send(out, Form::H2, "reviews:9080", "/mirrored/h2", &[])
        .await
        .expect("send");
    assert_eq!(r.status, 200);
    let s = shadow_seen.recv().await.expect("mirrored h2 request");
    assert_eq!(
        (s.host.as_str(), s.path.as_str()),
        ("reviews-shadow:9080", "/mirrored/h2")
    );

    // 0%: never copied. The request after it is, so the shadow's next request shows which went.
    let r = get(out, "reviews:9080", "/never").await;
    assert_eq!(r.status, 200);
    let r = get(out, "reviews:9080", "/mirrored/after").await;
    assert_eq!(r.status, 200);
    let s = shadow_seen.recv().await.expect("mirrored request");
    assert_eq!(s.path, "/mirrored/after");
}

fn cors_route(prefix: &str, forward_unmatched: bool) -> Route {
    let mut r = route_to(prefix, V1);
    r.typed_per_filter_config.insert(
        filter_name::CORS.into(),
        pack(
            type_url::CORS_POLICY,
            &CorsPolicy {
                allow_origin_string_match: vec![
                    exact("https://app.example"),
                    resources::prefix("https://dev."),
                ],
                allow_methods: "GET,POST".into(),
                allow_headers: "x-token".into(),
                expose_headers: "x-total".into(),
                max_age: "600".into(),
                allow_credentials: Some(BoolValue { value: true }),
                forward_not_matching_preflights: Some(BoolValue {
                    value: forward_unmatched,
                }),
                ..Default::default()
            },
        ),
    );
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_are_answered_and_allowed_origins_echoed() {
    let v1 = Upstream::start("reviews-v1", Behaviour::Ok).await;
    let routes = vec![cors_route("/ignore", false), cors_route("/", true)];
    let (_ads, proxy) = proxy_with(set(&[(V1, &[v1.addr])], routes)).await;
    let out = proxy.outbound_addr();
    let preflight = |origin: &'static str| {
        [
            ("origin", origin),
            ("access-control-request-method", "POST"),
        ]
    };

    // An allowed origin's preflight: answered here, with the policy.
    let hits = v1.hits();
    let (p, body) = request(
        out,
        "OPTIONS",
        "/api",
        &preflight("https://app.example"),
        b"",
    )
    .await;
    assert_eq!(p.status, 200);
    assert!(body.is_empty());
    assert_eq!(
        header(&p, "access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(header(&p, "access-control-allow-methods"), Some("GET,POST"));
    assert_eq!(header(&p, "access-control-allow-headers"), Some("x-token"));
    assert_eq!(header(&p, "access-control-max-age"), Some("600"));
    assert_eq!(header(&p, "access-control-allow-credentials"), Some("true"));
    assert_eq!(header(&p, "x-weft-response-flags"), None);
    assert_eq!(v1.hits(), hits, "the preflight did not go upstream");

    // Another origin's preflight: forwarded (Envoy's default), or answered bare (IGNORE).
    let (p, body) = request(
        out,
        "OPTIONS",
        "/api",
        &preflight("https://evil.example"),
        b"",
    )
    .await;
    assert_eq!(
        (p.status.as_u16(), body.starts_with(b"reviews-v1")),
        (200, true)
    );
    assert_eq!(header(&p, "access-control-allow-origin"), None);
    let hits = v1.hits();
    let (p, _) = request(
        out,
        "OPTIONS",
        "/ignore",
        &preflight("https://evil.example"),
        b"",
    )
    .await;
    assert_eq!(p.status, 200);
    assert_eq!(header(&p, "access-control-allow-origin"), None);
    assert_eq!(v1.hits(), hits, "an ignored preflight does not go upstream");

    // A request from an allowed origin: forwarded, the origin echoed with the exposed headers.
    let (p, body) = request(
        out,
        "GET",
        "/api",
        &[("origin", "https://dev.example")],
        b"",
    )
    .await;
    assert!(body.starts_with(b"reviews-v1"));
    assert_eq!(
        header(&p, "access-control-allow-origin"),
        Some("https://dev.example")
    );
    assert_eq!(header(&p, "access-control-expose-headers"), Some("x-total"));
    assert_eq!(
        header(&p, "access-control-allow-methods"),
        None,
        "preflights only"
    );
    let (p, _) = request(
        out,
        "GET",
        "/api",
        &[("origin", "https://evil.example")],
        b"",
    )
    .await;
    assert_eq!(header(&p, "access-control-allow-origin"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_parameters_pick_the_route() {
    let v1 = Upstream::start("reviews-v1", Behaviour::Ok).await;
    let v2 = Upstream::start("reviews-v2", Behaviour::Ok).await;
    let mut by_query = route_to("/", SHADOW);
    if let Some(m) = by_query.r#match.as_mut() {
        m.query_parameters = vec![
            QueryParameterMatcher {
                name: "v".into(),
                query_parameter_match_specifier: Some(QueryParameterMatchSpecifier::StringMatch(
                    exact("2"),
                )),
            },
            QueryParameterMatcher {
                name: "debug".into(),
                query_parameter_match_specifier: Some(QueryParameterMatchSpecifier::PresentMatch(
                    true,
                )),
            },
        ];
    }
    let routes = vec![by_query, route_to("/", V1)];
    let (_ads, proxy) = proxy_with(set(&[(V1, &[v1.addr]), (SHADOW, &[v2.addr])], routes)).await;
    let out = proxy.outbound_addr();
    let cases = [
        ("both", "/p?debug&v=2", "reviews-v2"),
        ("one missing", "/p?v=2", "reviews-v1"),
        ("other value", "/p?v=3&debug=1", "reviews-v1"),
        ("no query", "/p", "reviews-v1"),
    ];
    for (name, path, want) in cases {
        let r = get(out, "reviews:9080", path).await;
        assert_eq!((r.status, r.upstream()), (200, want), "case {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_aborts_are_trailers_only_responses() {
    let v1 = Upstream::start("reviews-v1", Behaviour::Ok).await;
    let mut r = route_to("/", V1);
    r.typed_per_filter_config.insert(
        filter_name::FAULT.into(),
        pack(
            type_url::HTTP_FAULT,
            &HttpFault {
                abort: Some(FaultAbort {
                    error_type: Some(fault_abort::ErrorType::GrpcStatus(14)),
                    percentage: Some(FractionalPercent {
                        numerator: 100,
                        denominator: 0,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
    );
    let (_ads, proxy) = proxy_with(set(&[(V1, &[v1.addr])], vec![r])).await;
    let resp = grpc_call(
        proxy.outbound_addr(),
        "reviews:9080",
        "/pkg.Svc/Call",
        b"\0\0\0\0\0",
    )
    .await
    .expect("grpc call");
    assert_eq!(resp.status, 200);
    let h = |n: &str| resp.headers.get(n).and_then(|v| v.to_str().ok());
    assert_eq!(h("grpc-status"), Some("14"));
    assert_eq!(h("content-type"), Some("application/grpc"));
    assert_eq!(h("x-weft-response-flags"), Some("FI"));
    assert_eq!(v1.hits(), 0);
}
