//! External authorization through the real proxy: an inbound listener whose connection manager carries
//! the marking RBAC filter and Envoy's ext_authz filter, in the shape weftd (and istiod) sends for a
//! CUSTOM AuthorizationPolicy on `/admin`; authorizers written here (HTTP and gRPC) on 127.0.0.1, a
//! scripted ADS server and a loopback application that echoes the headers it got.

// The helpers tests/proxy.rs shares; this file uses a part of them.
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
use net::{admin_get, eventually, send, start_proxy_with, Behaviour, Form, Resp, Upstream};
use resources::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use weft_proxy::ProxyHandle;
use weft_xds::pb::envoy::config::core::v3::{
    grpc_service, http_uri, GrpcService, HeaderValue as XHeaderValue, HeaderValueOption, HttpUri,
};
use weft_xds::pb::envoy::config::rbac::v3::{
    permission, principal, rbac::Action, Permission, Policy, Principal, Rbac as Rules,
};
use weft_xds::pb::envoy::extensions::filters::http::ext_authz::v3::{
    ext_authz::Services, AuthorizationRequest, AuthorizationResponse, ExtAuthz, HttpService,
};
use weft_xds::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpConnectionManager, HttpFilter,
};
use weft_xds::pb::envoy::r#type::matcher::v3::{
    metadata_matcher::{path_segment::Segment, PathSegment},
    path_matcher, value_matcher, ListStringMatcher, MetadataMatcher, PathMatcher, ValueMatcher,
};
use weft_xds::pb::envoy::service::auth::v3::{
    authorization_server::{Authorization, AuthorizationServer},
    check_response, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use weft_xds::{pack, type_url};

const LISTENER: &str = "inbound_127.0.0.1_9080";
const APP: &str = "inbound|9080||";
const AUTHZ: &str = "outbound|8000||ext-authz.foo.svc.cluster.local";

async fn start_proxy(ads: &str) -> ProxyHandle {
    // The NACK test reads the state-of-the-world requests.
    start_proxy_with(ads, &["--workload", "reviews-v1", "--xds-protocol", "sotw"]).await
}

// === what weftd sends ===

/// The marking filter of `action: CUSTOM, provider: {name: authz}, rules: [{to: [{operation:
/// {paths: ["/admin*"]}}]}]`: shadow rules only.
fn marking_rbac() -> HttpFilter {
    let p = Policy {
        permissions: vec![Permission {
            rule: Some(permission::Rule::UrlPath(PathMatcher {
                rule: Some(path_matcher::Rule::Path(prefix("/admin"))),
            })),
        }],
        principals: vec![Principal {
            identifier: Some(principal::Identifier::Any(true)),
        }],
        ..Default::default()
    };
    HttpFilter {
        name: "envoy.filters.http.rbac".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack(
            "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            &HttpRbac {
                shadow_rules: Some(Rules {
                    action: Action::Deny as i32,
                    policies: [(
                        "istio-ext-authz-authz-ns[default]-policy[ext]-rule[0]".to_string(),
                        p,
                    )]
                    .into_iter()
                    .collect(),
                    audit_logging_options: None,
                }),
                shadow_rules_stat_prefix: "istio_ext_authz_".into(),
                ..Default::default()
            },
        ))),
        ..Default::default()
    }
}

fn enabled_by_mark() -> MetadataMatcher {
    MetadataMatcher {
        filter: "envoy.filters.http.rbac".into(),
        path: vec![PathSegment {
            segment: Some(Segment::Key(
                "istio_ext_authz_shadow_effective_policy_id".into(),
            )),
        }],
        value: Some(ValueMatcher {
            match_pattern: Some(value_matcher::MatchPattern::StringMatch(prefix(
                "istio-ext-authz-authz-",
            ))),
        }),
        ..Default::default()
    }
}

fn list(names: &[&str]) -> Option<ListStringMatcher> {
    Some(ListStringMatcher {
        patterns: names.iter().map(|n| exact(n)).collect(),
    })
}

/// The HTTP service of the provider: `pathPrefix: /check`, `includeRequestHeadersInCheck:
/// [x-ext-authz]`, `headersToUpstreamOnAllow: [x-user]`, `headersToDownstreamOnAllow: [x-allowed-by]`,
/// `headersToDownstreamOnDeny: [x-ext-authz-check-result]`.
#[allow(deprecated)] // `authorization_request.allowed_headers`: what istiod sends
fn http_ext_authz(timeout_ms: u64, fail_open: bool) -> ExtAuthz {
    ExtAuthz {
        transport_api_version: 2,
        failure_mode_allow: fail_open,
        filter_enabled_metadata: Some(enabled_by_mark()),
        services: Some(Services::HttpService(HttpService {
            server_uri: Some(HttpUri {
                uri: "http://ext-authz.foo.svc.cluster.local".into(),
                http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(AUTHZ.into())),
                timeout: Some(dur_ms(timeout_ms)),
            }),
            path_prefix: "/check".into(),
            authorization_request: Some(AuthorizationRequest {
                allowed_headers: list(&["x-ext-authz"]),
                headers_to_add: vec![XHeaderValue {
                    key: "x-added".into(),
                    value: "by-weft".into(),
                    ..Default::default()
                }],
            }),
            authorization_response: Some(AuthorizationResponse {
                allowed_upstream_headers: list(&["x-user"]),
                allowed_client_headers: list(&["x-ext-authz-check-result"]),
                allowed_client_headers_on_success: list(&["x-allowed-by"]),
                ..Default::default()
            }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn grpc_ext_authz(timeout_ms: u64) -> ExtAuthz {
    ExtAuthz {
        transport_api_version: 2,
        filter_enabled_metadata: Some(enabled_by_mark()),
        services: Some(Services::GrpcService(GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc {
                    cluster_name: AUTHZ.into(),
                    authority: AUTHZ.replace('|', "_."),
                    ..Default::default()
                },
            )),
            timeout: Some(dur_ms(timeout_ms)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The inbound listener with the marking RBAC and `ext` (none: no authorization at all).
fn guarded_listener(ext: Option<&ExtAuthz>) -> weft_xds::Any {
    use weft_xds::pb::envoy::config::listener::v3::{filter, Listener};
    let l = inbound_listener(LISTENER, "127.0.0.1:0".parse().expect("addr"), APP);
    let mut l: Listener = weft_xds::unpack(&l).expect("listener");
    let f = &mut l.filter_chains[0].filters[0];
    let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type else {
        panic!("no hcm");
    };
    let mut hcm: HttpConnectionManager = weft_xds::unpack(any).expect("hcm");
    if let Some(ext) = ext {
        hcm.http_filters = vec![
            marking_rbac(),
            HttpFilter {
                name: "envoy.filters.http.ext_authz".into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(pack(
                    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
                    ext,
                ))),
                ..Default::default()
            },
        ];
    }
    *any = pack(type_url::HTTP_CONNECTION_MANAGER, &hcm);
    pack(type_url::LISTENER, &l)
}

fn xds(version: &str, app: SocketAddr, authz: SocketAddr, ext: Option<&ExtAuthz>) -> XdsSet {
    XdsSet {
        version: version.into(),
        clusters: vec![static_cluster(APP, &[app]), static_cluster(AUTHZ, &[authz])],
        endpoints: vec![],
        listeners: vec![guarded_listener(ext)],
        routes: vec![],
    }
}

// === the authorizers ===

/// What an authorizer saw of one check.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP authorizer: `x-ext-authz: allow` is 200 with `x-user: alice` and `x-allowed-by: http`;
/// `hang` never answers; anything else is 403 with a body and two headers, one the client may see.
struct HttpAuthorizer {
    addr: SocketAddr,
    checks: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn http_authorizer() -> HttpAuthorizer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let checks = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (c, s) = (checks.clone(), seen.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (c, s) = (c.clone(), s.clone());
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        c.fetch_add(1, Ordering::SeqCst);
                        let verdict = req
                            .headers()
                            .get("x-ext-authz")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        s.lock().expect("lock").push(Seen {
                            method: req.method().to_string(),
                            path: req.uri().to_string(),
                            headers: req
                                .headers()
                                .iter()
                                .map(|(k, v)| {
                                    (k.to_string(), v.to_str().unwrap_or_default().to_string())
                                })
                                .collect(),
                        });
                        async move {
                            let r = match verdict.as_str() {
                            "allow" => http::Response::builder()
                                .status(200)
                                .header("x-user", "alice")
                                .header("x-allowed-by", "http")
                                .header("x-not-forwarded", "1")
                                .body(http_body_util::Full::new(bytes::Bytes::new())),
                            "hang" => {
                                std::future::pending::<()>().await;
                                unreachable!("pending never ends")
                            }
                            _ => http::Response::builder()
                                .status(403)
                                .header("x-ext-authz-check-result", "denied")
                                .header("x-internal", "secret")
                                .body(http_body_util::Full::new(bytes::Bytes::from(
                                    "denied by ext_authz for header `x-ext-authz: allow` not found",
                                ))),
                        };
                            Ok::<_, std::convert::Infallible>(r.expect("response"))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    HttpAuthorizer { addr, checks, seen }
}

/// A gRPC authorizer (`envoy.service.auth.v3.Authorization`): `x-ext-authz: allow` is OK with header
/// edits; anything else a 401 denial with a body and a header.
#[derive(Clone, Default)]
struct GrpcAuthorizer {
    seen: Arc<Mutex<Vec<CheckRequest>>>,
}

#[tonic::async_trait]
impl Authorization for GrpcAuthorizer {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let req = request.into_inner();
        self.seen.lock().expect("lock").push(req.clone());
        let allow = req
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .and_then(|h| h.headers.get("x-ext-authz"))
            .is_some_and(|v| v == "allow");
        let header = |k: &str, v: &str| HeaderValueOption {
            header: Some(XHeaderValue {
                key: k.into(),
                value: v.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let resp = if allow {
            CheckResponse {
                status: Some(weft_xds::pb::google::rpc::Status::default()),
                http_response: Some(check_response::HttpResponse::OkResponse(OkHttpResponse {
                    headers: vec![header("x-user", "bob")],
                    headers_to_remove: vec!["x-remove-me".into()],
                    response_headers_to_add: vec![header("x-allowed-by", "grpc")],
                    ..Default::default()
                })),
                ..Default::default()
            }
        } else {
            CheckResponse {
                status: Some(weft_xds::pb::google::rpc::Status {
                    code: 7,
                    ..Default::default()
                }),
                http_response: Some(check_response::HttpResponse::DeniedResponse(
                    DeniedHttpResponse {
                        status: Some(weft_xds::pb::envoy::r#type::v3::HttpStatus { code: 401 }),
                        headers: vec![header("x-why", "no header")],
                        body: "denied by the gRPC authorizer".into(),
                    },
                )),
                ..Default::default()
            }
        };
        Ok(tonic::Response::new(resp))
    }
}

async fn grpc_authorizer() -> (SocketAddr, GrpcAuthorizer) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let authz = GrpcAuthorizer::default();
    let served = authz.clone();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(served))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    (addr, authz)
}

// === helpers ===

async fn get(at: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Resp {
    send(at, Form::Host, "reviews:9080", path, headers)
        .await
        .expect("an answer")
}

async fn stats(proxy: &ProxyHandle) -> String {
    admin_get(proxy.admin_addr(), "/stats/prometheus")
        .await
        .map(|(_, t)| t)
        .unwrap_or_default()
}

fn header<'a>(r: &'a Resp, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

/// A port nothing listens on: bound, then closed.
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}

// === the tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_authorizer_allows_and_denies_what_the_custom_rules_match() {
    let app = Upstream::start("reviews-app", Behaviour::Ok).await;
    let authz = http_authorizer().await;
    let ext = http_ext_authz(5_000, false);
    let ads = FakeAds::start(
        "127.0.0.1:0".parse().expect("addr"),
        xds("1", app.addr, authz.addr, Some(&ext)),
    )
    .await;
    let proxy = start_proxy(&ads.url()).await;
    let inbound = eventually("inbound bound", || async { proxy.listener_addr(LISTENER) }).await;

    // Allowed: the authorizer's x-user goes upstream, its x-allowed-by back to the client.
    let r = get(
        inbound,
        "/admin/users?id=1",
        &[
            ("x-ext-authz", "allow"),
            ("authorization", "Bearer t"),
            ("x-secret", "s"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.upstream_saw("x-user: alice"), "{r:?}");
    assert!(!r.upstream_saw("x-not-forwarded: 1"), "{r:?}");
    assert_eq!(header(&r, "x-allowed-by"), Some("http"), "{r:?}");
    // What the authorizer was asked: the method, the prefixed path, Envoy's default headers, the
    // included and the added ones, nothing else.
    let seen = authz.seen.lock().expect("lock")[0].clone();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path, "/check/admin/users?id=1");
    assert_eq!(seen.header("host"), Some("reviews:9080"));
    assert_eq!(seen.header("authorization"), Some("Bearer t"));
    assert_eq!(seen.header("x-ext-authz"), Some("allow"));
    assert_eq!(seen.header("x-added"), Some("by-weft"));
    assert_eq!(seen.header("content-length"), Some("0"));
    assert_eq!(seen.header("x-secret"), None);

    // Denied: the authorizer's status and body, the header the client may see, Envoy's UAEX flag; the
    // application never sees it.
    let hits = app.hits();
    let r = get(inbound, "/admin", &[("x-ext-authz", "deny")]).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(
        r.body,
        "denied by ext_authz for header `x-ext-authz: allow` not found"
    );
    assert_eq!(header(&r, "x-ext-authz-check-result"), Some("denied"));
    assert_eq!(header(&r, "x-internal"), None);
    assert_eq!(r.flags(), "UAEX");
    assert_eq!(app.hits(), hits);

    // Outside the CUSTOM rules the authorizer is never asked.
    let checks = authz.checks.load(Ordering::SeqCst);
    for path in ["/", "/productpage", "/ADMIN"] {
        let r = get(inbound, path, &[]).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
    }
    assert_eq!(authz.checks.load(Ordering::SeqCst), checks);

    // The denial is counted with its flag.
    let text = eventually("the denial counted", || {
        let p = &proxy;
        async move {
            let t = stats(p).await;
            t.lines()
                .any(|l| {
                    l.starts_with("istio_requests_total{")
                        && l.contains("response_code=\"403\"")
                        && l.contains("response_flags=\"UAEX\"")
                })
                .then_some(t)
        }
    })
    .await;
    assert!(text.contains("istio_requests_total"));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorizer_down_or_too_slow_gives_403_unless_the_filter_fails_open() {
    let app = Upstream::start("reviews-app", Behaviour::Ok).await;
    let down = closed_port().await;
    let ads = FakeAds::start(
        "127.0.0.1:0".parse().expect("addr"),
        xds("1", app.addr, down, Some(&http_ext_authz(5_000, false))),
    )
    .await;
    let proxy = start_proxy(&ads.url()).await;
    let inbound = eventually("inbound bound", || async { proxy.listener_addr(LISTENER) }).await;
    let r = get(inbound, "/admin", &[("x-ext-authz", "allow")]).await;
    assert_eq!((r.status, r.flags().as_str()), (403, "UAEX"), "{r:?}");
    // Outside the rules, nothing is asked and nothing fails.
    assert_eq!(get(inbound, "/", &[]).await.status, 200);

    // failOpen: the request goes on.
    ads.update(xds("2", app.addr, down, Some(&http_ext_authz(200, true))));
    eventually("fail open in force", || async {
        let r = get(inbound, "/admin", &[]).await;
        (r.status == 200).then_some(())
    })
    .await;

    // A hanging authorizer: the short timeout answers 403.
    let authz = http_authorizer().await;
    ads.update(xds(
        "3",
        app.addr,
        authz.addr,
        Some(&http_ext_authz(200, false)),
    ));
    // (The clusters may change before the listener does: until both have, a failing-open answer.)
    let r = eventually("the hanging authorizer timed out", || async {
        let r = get(inbound, "/admin", &[("x-ext-authz", "hang")]).await;
        (r.status == 403).then_some(r)
    })
    .await;
    assert_eq!(r.flags(), "UAEX", "{r:?}");
    assert!(authz.checks.load(Ordering::SeqCst) > 0);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_authorizer_gets_envoys_attributes_and_decides() {
    let app = Upstream::start("reviews-app", Behaviour::Ok).await;
    let (addr, authz) = grpc_authorizer().await;
    let ads = FakeAds::start(
        "127.0.0.1:0".parse().expect("addr"),
        xds("1", app.addr, addr, Some(&grpc_ext_authz(5_000))),
    )
    .await;
    let proxy = start_proxy(&ads.url()).await;
    let inbound = eventually("inbound bound", || async { proxy.listener_addr(LISTENER) }).await;

    let r = get(
        inbound,
        "/admin?x=1",
        &[
            ("x-ext-authz", "allow"),
            ("x-remove-me", "1"),
            ("x-request-id", "req-1"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.upstream_saw("x-user: bob"), "{r:?}");
    assert!(!r.upstream_saw("x-remove-me: 1"), "{r:?}");
    assert_eq!(header(&r, "x-allowed-by"), Some("grpc"), "{r:?}");
    let check = authz.seen.lock().expect("lock")[0].clone();
    let a = check.attributes.expect("attributes");
    let http = a.request.and_then(|r| r.http).expect("http");
    assert_eq!(http.method, "GET");
    assert_eq!(http.path, "/admin?x=1");
    assert_eq!(http.host, "reviews:9080");
    assert_eq!(http.scheme, "http");
    assert_eq!(http.protocol, "HTTP/1.1");
    assert_eq!(http.id, "req-1");
    assert_eq!(
        http.headers.get(":path").map(String::as_str),
        Some("/admin?x=1")
    );
    assert_eq!(
        http.headers.get("x-ext-authz").map(String::as_str),
        Some("allow")
    );
    let source = format!("{:?}", a.source.expect("source").address);
    assert!(source.contains("127.0.0.1"), "{source}");

    let r = get(inbound, "/admin", &[]).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.body, "denied by the gRPC authorizer");
    assert_eq!(header(&r, "x-why"), Some("no header"));
    assert_eq!(r.flags(), "UAEX");

    let before = authz.seen.lock().expect("lock").len();
    assert_eq!(get(inbound, "/reviews/1", &[]).await.status, 200);
    assert_eq!(authz.seen.lock().expect("lock").len(), before);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_weft_cannot_honour_is_nacked_and_the_last_good_one_stays() {
    let app = Upstream::start("reviews-app", Behaviour::Ok).await;
    let authz = http_authorizer().await;
    let mut ads = FakeAds::start(
        "127.0.0.1:0".parse().expect("addr"),
        xds(
            "1",
            app.addr,
            authz.addr,
            Some(&http_ext_authz(5_000, false)),
        ),
    )
    .await;
    let proxy = start_proxy(&ads.url()).await;
    let inbound = eventually("inbound bound", || async { proxy.listener_addr(LISTENER) }).await;
    let mut bad = http_ext_authz(5_000, false);
    if let Some(Services::HttpService(h)) = &mut bad.services {
        h.path_override = "/elsewhere".into();
    }
    ads.update(xds("2", app.addr, authz.addr, Some(&bad)));
    let nack = eventually("a NACK of the listener", || {
        let mut got = None;
        while let Ok(r) = ads.requests.try_recv() {
            if let (true, Some(e)) = (r.type_url == type_url::LISTENER, r.error_detail) {
                got = Some(e.message);
            }
        }
        async move { got }
    })
    .await;
    assert!(
        nack.contains(
            "http_filters[1] \"envoy.filters.http.ext_authz\": http_service.path_override: a path override is not supported"
        ),
        "{nack}"
    );
    // The last good filter still checks.
    let r = get(inbound, "/admin", &[]).await;
    assert_eq!((r.status, r.flags().as_str()), (403, "UAEX"), "{r:?}");
    let r = get(inbound, "/admin", &[("x-ext-authz", "allow")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    proxy.shutdown().await;
}

/// A gRPC authorizer that allows every connection while `allow` is set.
#[derive(Clone, Default)]
struct Switch {
    allow: Arc<std::sync::atomic::AtomicBool>,
    checks: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl Authorization for Switch {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        let has_source = request
            .get_ref()
            .attributes
            .as_ref()
            .and_then(|a| a.source.as_ref())
            .is_some_and(|s| s.address.is_some());
        let code = if self.allow.load(Ordering::SeqCst) && has_source {
            0
        } else {
            7
        };
        Ok(tonic::Response::new(CheckResponse {
            status: Some(weft_xds::pb::google::rpc::Status {
                code,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }
}

/// A TCP listener with the network marking RBAC (every connection) and the network ext_authz filter
/// to the gRPC authorizer, before `tcp_proxy` to `APP`.
fn guarded_tcp_listener() -> weft_xds::Any {
    use weft_xds::pb::envoy::config::core::v3::TrafficDirection;
    use weft_xds::pb::envoy::config::listener::v3::{filter, Filter, Listener};
    use weft_xds::pb::envoy::extensions::filters::network::ext_authz::v3::ExtAuthz as NetAuthz;
    use weft_xds::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetRbac;
    let l = tcp_listener(
        LISTENER,
        "127.0.0.1:0".parse().expect("addr"),
        TrafficDirection::Inbound,
        APP,
    );
    let mut l: Listener = weft_xds::unpack(&l).expect("listener");
    let any_policy = Policy {
        permissions: vec![Permission {
            rule: Some(permission::Rule::Any(true)),
        }],
        principals: vec![Principal {
            identifier: Some(principal::Identifier::Any(true)),
        }],
        ..Default::default()
    };
    let marking = NetRbac {
        stat_prefix: "tcp.".into(),
        shadow_rules: Some(Rules {
            action: Action::Deny as i32,
            policies: [(
                "istio-ext-authz-authz-ns[default]-policy[ext]-rule[0]".to_string(),
                any_policy,
            )]
            .into_iter()
            .collect(),
            audit_logging_options: None,
        }),
        shadow_rules_stat_prefix: "istio_ext_authz_".into(),
        ..Default::default()
    };
    let Some(Services::GrpcService(grpc)) = grpc_ext_authz(5_000).services else {
        panic!("grpc");
    };
    let mut enabled = enabled_by_mark();
    enabled.filter = "envoy.filters.network.rbac".into();
    let ext = NetAuthz {
        stat_prefix: "tcp.".into(),
        grpc_service: Some(grpc),
        transport_api_version: 2,
        filter_enabled_metadata: Some(enabled),
        ..Default::default()
    };
    let filters = &mut l.filter_chains[0].filters;
    filters.insert(
        0,
        Filter {
            name: "envoy.filters.network.ext_authz".into(),
            config_type: Some(filter::ConfigType::TypedConfig(pack(
                "type.googleapis.com/envoy.extensions.filters.network.ext_authz.v3.ExtAuthz",
                &ext,
            ))),
        },
    );
    filters.insert(
        0,
        Filter {
            name: "envoy.filters.network.rbac".into(),
            config_type: Some(filter::ConfigType::TypedConfig(pack(
                "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
                &marking,
            ))),
        },
    );
    pack(type_url::LISTENER, &l)
}

/// One line sent on a new connection to `at`, and what came back before the connection closed or
/// a second passed.
async fn echo_through(at: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(at).await else {
        return String::new();
    };
    let _ = s.write_all(b"ping\n").await;
    let mut buf = [0u8; 16];
    match tokio::time::timeout(std::time::Duration::from_secs(1), s.read(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        _ => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_authorizer_checks_tcp_connections() {
    // An application that echoes what it reads.
    let app = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let app_addr = app.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = app.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let authz_addr = listener.local_addr().expect("addr");
    let switch = Switch::default();
    let served = switch.clone();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(served))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    let set = XdsSet {
        version: "1".into(),
        clusters: vec![
            static_cluster(APP, &[app_addr]),
            static_cluster(AUTHZ, &[authz_addr]),
        ],
        endpoints: vec![],
        listeners: vec![guarded_tcp_listener()],
        routes: vec![],
    };
    let ads = FakeAds::start("127.0.0.1:0".parse().expect("addr"), set).await;
    let proxy = start_proxy(&ads.url()).await;
    let inbound = eventually("inbound bound", || async { proxy.listener_addr(LISTENER) }).await;
    // Denied: closed before a byte goes through.
    assert_eq!(echo_through(inbound).await, "");
    assert!(switch.checks.load(Ordering::SeqCst) > 0);
    // Allowed: the connection goes on to the application.
    switch.allow.store(true, Ordering::SeqCst);
    assert_eq!(echo_through(inbound).await, "ping\n");
    proxy.shutdown().await;
}
