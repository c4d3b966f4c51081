//! Authorization through the real proxy: inbound listeners whose connection manager carries Envoy's RBAC
//! HTTP filter and path normalization, and whose TCP filter chain carries the network RBAC filter, in
//! the shape weftd (and istiod) sends for an AuthorizationPolicy; a scripted ADS server and a loopback
//! application. Requests are written byte for byte, so every spelling of a path reaches the proxy as
//! sent.

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
use net::{admin_get, eventually, start_proxy_with};
use resources::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use weft_proxy::ProxyHandle;
use weft_xds::pb::envoy::config::core::v3::{CidrRange, TrafficDirection};
use weft_xds::pb::envoy::config::rbac::v3::{
    permission, principal, rbac::Action, Permission, Policy, Principal, Rbac as Rules,
};
use weft_xds::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::PathWithEscapedSlashesAction, http_filter, HttpConnectionManager,
    HttpFilter,
};
use weft_xds::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use weft_xds::pb::envoy::r#type::matcher::v3::{
    path_matcher, string_matcher::MatchPattern, PathMatcher, StringMatcher,
};
use weft_xds::pb::google::protobuf::{BoolValue, UInt32Value};
use weft_xds::{pack, type_url};

const HTTP_RBAC: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
const NETWORK_RBAC: &str = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";

async fn start_proxy(ads: &str) -> ProxyHandle {
    start_proxy_with(ads, &["--workload", "reviews-v1"]).await
}

/// An application that answers every request 200 with the path (and query) it received.
async fn path_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| {
                        let body = req
                            .uri()
                            .path_and_query()
                            .map_or("", |p| p.as_str())
                            .to_string();
                        async move {
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from(body)),
                            ))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// What came back for a request written as raw bytes.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

/// `GET <target> HTTP/1.1`, exactly as given, on a new connection; the answer is read to its end.
async fn get_raw(to: SocketAddr, target: &str) -> Answer {
    let mut s = TcpStream::connect(to).await.expect("connect");
    let head = format!("GET {target} HTTP/1.1\r\nhost: reviews:9080\r\nconnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line for {target:?}: {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

fn path(m: StringMatcher) -> Permission {
    Permission {
        rule: Some(permission::Rule::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(m)),
        })),
    }
}

fn any_principal() -> Principal {
    Principal {
        identifier: Some(principal::Identifier::AndIds(principal::Set {
            ids: vec![Principal {
                identifier: Some(principal::Identifier::Any(true)),
            }],
        })),
    }
}

/// The DENY rules istiod generates for `action: DENY, rules: [{to: [{operation: {paths: ["/admin",
/// "/admin/*"]}}]}]` (policy `ns[default]-policy[no-admin]-rule[0]`).
fn deny_admin() -> Rules {
    let p = Policy {
        permissions: vec![Permission {
            rule: Some(permission::Rule::AndRules(permission::Set {
                rules: vec![Permission {
                    rule: Some(permission::Rule::OrRules(permission::Set {
                        rules: vec![path(exact("/admin")), path(prefix("/admin/"))],
                    })),
                }],
            })),
        }],
        principals: vec![any_principal()],
        ..Default::default()
    };
    Rules {
        action: Action::Deny as i32,
        policies: [("ns[default]-policy[no-admin]-rule[0]".to_string(), p)]
            .into_iter()
            .collect(),
        audit_logging_options: None,
    }
}

/// The inbound HTTP listener `name` to `cluster`, with Istio's `MERGE_SLASHES` normalization and, when
/// `rbac`, the DENY on `/admin` in its HTTP filters.
fn guarded_listener(name: &str, cluster: &str, rbac: bool) -> weft_xds::Any {
    use weft_xds::pb::envoy::config::listener::v3::{filter, Listener};
    let l = inbound_listener(name, "127.0.0.1:0".parse().expect("addr"), cluster);
    let mut l: Listener = weft_xds::unpack(&l).expect("listener");
    let f = &mut l.filter_chains[0].filters[0];
    let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type else {
        panic!("no hcm");
    };
    let mut hcm: HttpConnectionManager = weft_xds::unpack(any).expect("hcm");
    hcm.normalize_path = Some(BoolValue { value: true });
    hcm.merge_slashes = true;
    hcm.path_with_escaped_slashes_action = PathWithEscapedSlashesAction::KeepUnchanged as i32;
    if rbac {
        hcm.http_filters = vec![HttpFilter {
            name: "envoy.filters.http.rbac".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack(
                HTTP_RBAC,
                &HttpRbac {
                    rules: Some(deny_admin()),
                    shadow_rules_stat_prefix: "istio_dry_run_allow_".into(),
                    ..Default::default()
                },
            ))),
            ..Default::default()
        }];
    }
    *any = pack(type_url::HTTP_CONNECTION_MANAGER, &hcm);
    pack(type_url::LISTENER, &l)
}

async fn stats(proxy: &ProxyHandle) -> String {
    admin_get(proxy.admin_addr(), "/stats/prometheus")
        .await
        .map(|(_, t)| t)
        .unwrap_or_default()
}

/// The value of the sample of `family` whose labels include all of `labels`.
fn sample(text: &str, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(family) && l[family.len()..].starts_with('{'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_on_admin_holds_for_every_spelling() {
    let app = path_echo().await;
    let name = "inbound_127.0.0.1_9080";
    let cluster = "inbound|9080||";
    let with_rbac = |version: &str, rbac: bool| XdsSet {
        version: version.into(),
        clusters: vec![static_cluster(cluster, &[app])],
        endpoints: vec![],
        listeners: vec![guarded_listener(name, cluster, rbac)],
        routes: vec![],
    };
    let ads = FakeAds::start("127.0.0.1:0".parse().expect("addr"), with_rbac("1", true)).await;
    let proxy = start_proxy(&ads.url()).await;
    let bound = eventually("inbound bound", || async { proxy.listener_addr(name) }).await;

    // Every spelling that reaches /admin once normalized (Istio's MERGE_SLASHES), and one path under
    // it; upper case does not reach it (Istio matches paths case-sensitively).
    for target in [
        "/admin",
        "/admin?x=1",
        "//admin",
        "/./admin",
        "/x/../admin",
        "/x/y/../../admin",
        "/%61dmin",
        "/%61%64%6D%69%6E",
        "/%2e/admin",
        "/x/%2E%2E/admin",
        "/x\\..\\admin",
        "///admin//",
        "/admin/users/1",
        "/public/../admin/x",
        "http://reviews:9080/x/../admin",
    ] {
        let a = get_raw(bound, target).await;
        assert_eq!(
            (a.status, a.body.as_str()),
            (403, "RBAC: access denied"),
            "{target}: {a:?}"
        );
        assert_eq!(
            a.headers.get("x-weft-response-flags").map(String::as_str),
            Some("RBAC"),
            "{target}"
        );
    }
    // Everything else reaches the application, normalized as the policy judged it.
    for (target, forwarded) in [
        ("/", "/"),
        ("/ADMIN", "/ADMIN"),
        ("/administrator", "/administrator"),
        ("/public//x/./y/../z?q=/admin", "/public/x/z?q=/admin"),
        ("/%7Euser/%61", "/~user/a"),
        ("/x/..%2Fadmin", "/x/..%2Fadmin"),
        ("/a%20b", "/a%20b"),
    ] {
        let a = get_raw(bound, target).await;
        assert_eq!(
            (a.status, a.body.as_str()),
            (200, forwarded),
            "{target}: {a:?}"
        );
    }
    // A path Envoy refuses to normalize is answered 400 and goes nowhere.
    let a = get_raw(bound, "/a%00b").await;
    assert_eq!(a.status, 400, "{a:?}");

    // Metrics record the denials as local responses with Envoy's flag.
    let denied = [
        ("reporter", "destination"),
        ("response_code", "403"),
        ("response_flags", "RBAC"),
    ];
    let text = eventually("403 metrics", || async {
        let t = stats(&proxy).await;
        sample(&t, "istio_requests_total", &denied).map(|_| t)
    })
    .await;
    assert_eq!(
        sample(&text, "istio_requests_total", &denied),
        Some(15.0),
        "{text}"
    );

    // A push without the policy: /admin is served, with no rebind.
    ads.update(with_rbac("2", false));
    eventually("policy removed", || async {
        (get_raw(bound, "/./admin").await.status == 200).then_some(())
    })
    .await;
    assert_eq!(get_raw(bound, "//admin").await.body, "/admin");
    assert_eq!(proxy.listener_addr(name), Some(bound));
    proxy.shutdown().await;
}

/// A TCP application that answers every connection with "app" and closes.
async fn tcp_app() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let _ = s.write_all(b"app").await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, accepted)
}

/// What a client bound to `from` reads from `to` until the connection ends (empty when it is closed
/// at once).
async fn tcp_read_from(from: &str, to: SocketAddr) -> String {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("addr"))
        .expect("bind the client");
    let mut s = socket.connect(to).await.expect("connect");
    let mut got = Vec::new();
    // A reset is an end too.
    let _ = s.read_to_end(&mut got).await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_rbac_closes_connections_from_a_denied_source() {
    let (app, accepted) = tcp_app().await;
    let name = "inbound_127.0.0.1_9000";
    let cluster = "inbound|9000||";
    // The DENY istiod generates for `from: [{source: {ipBlocks: ["127.0.0.2"]}}]` on a TCP port.
    let blocked = Principal {
        identifier: Some(principal::Identifier::OrIds(principal::Set {
            ids: vec![Principal {
                identifier: Some(principal::Identifier::DirectRemoteIp(CidrRange {
                    address_prefix: "127.0.0.2".into(),
                    prefix_len: Some(UInt32Value { value: 32 }),
                })),
            }],
        })),
    };
    let rules = Rules {
        action: Action::Deny as i32,
        policies: [(
            "ns[default]-policy[block]-rule[0]".to_string(),
            Policy {
                permissions: vec![Permission {
                    rule: Some(permission::Rule::Any(true)),
                }],
                principals: vec![blocked],
                ..Default::default()
            },
        )]
        .into_iter()
        .collect(),
        audit_logging_options: None,
    };
    let listener = {
        use weft_xds::pb::envoy::config::listener::v3::{filter, Filter, Listener};
        let l = tcp_listener(
            name,
            "127.0.0.1:0".parse().expect("addr"),
            TrafficDirection::Inbound,
            cluster,
        );
        let mut l: Listener = weft_xds::unpack(&l).expect("listener");
        l.filter_chains[0].filters.insert(
            0,
            Filter {
                name: "envoy.filters.network.rbac".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack(
                    NETWORK_RBAC,
                    &NetworkRbac {
                        rules: Some(rules),
                        stat_prefix: "tcp.".into(),
                        ..Default::default()
                    },
                ))),
            },
        );
        pack(type_url::LISTENER, &l)
    };
    let set = XdsSet {
        version: "1".into(),
        clusters: vec![static_cluster(cluster, &[app])],
        endpoints: vec![],
        listeners: vec![listener],
        routes: vec![],
    };
    let ads = FakeAds::start("127.0.0.1:0".parse().expect("addr"), set).await;
    let proxy = start_proxy(&ads.url()).await;
    let bound = eventually("inbound TCP bound", || async { proxy.listener_addr(name) }).await;

    assert_eq!(
        tcp_read_from("127.0.0.1", bound).await,
        "app",
        "allowed source"
    );
    assert_eq!(
        tcp_read_from("127.0.0.2", bound).await,
        "",
        "denied source: closed"
    );
    assert_eq!(
        tcp_read_from("127.0.0.3", bound).await,
        "app",
        "another source"
    );
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the denied connection never reached the application"
    );
    let closed = [("reporter", "destination"), ("response_flags", "RBAC")];
    let text = eventually("TCP metrics", || async {
        let t = stats(&proxy).await;
        sample(&t, "istio_tcp_connections_closed_total", &closed).map(|_| t)
    })
    .await;
    assert_eq!(
        sample(&text, "istio_tcp_connections_closed_total", &closed),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "istio_tcp_connections_opened_total",
            &[("reporter", "destination")]
        ),
        Some(3.0),
        "{text}"
    );
    proxy.shutdown().await;
}

/// Not a test: the workload whose instructions `bench/instructions`' method counts for one RBAC check
/// (see the README's "Authorization"): 100,000 checks of a request by an Istio-shaped pair of filters,
/// DENY then ALLOW, five policies in all, the request allowed by the last one, and 100,000 normalizations of a path that is already normal.
/// Run under callgrind with `--toggle-collect` on `check_http` and `normalize_path`.
#[test]
#[ignore = "a workload for callgrind, not a test"]
fn rbac_check_workload() {
    use std::hint::black_box;
    use weft_proxy::authz::{normalize_path, Filter, PathNormalization, Rbac, Subject};
    let header_is = |name: &str, value: &str| {
        Permission {
        rule: Some(permission::Rule::Header(
            weft_xds::pb::envoy::config::route::v3::HeaderMatcher {
                name: name.into(),
                header_match_specifier: Some(
                    weft_xds::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier::StringMatch(
                        exact(value),
                    ),
                ),
                ..Default::default()
            },
        )),
    }
    };
    let authenticated = |m: StringMatcher| Principal {
        identifier: Some(principal::Identifier::Authenticated(
            principal::Authenticated {
                principal_name: Some(m),
            },
        )),
    };
    let regex = |r: &str| StringMatcher {
        match_pattern: Some(MatchPattern::SafeRegex(
            weft_xds::pb::envoy::r#type::matcher::v3::RegexMatcher {
                regex: r.into(),
                ..Default::default()
            },
        )),
        ignore_case: false,
    };
    let policy = |permissions, principals| Policy {
        permissions,
        principals,
        ..Default::default()
    };
    let blocked_ip = Principal {
        identifier: Some(principal::Identifier::DirectRemoteIp(CidrRange {
            address_prefix: "10.9.0.0".into(),
            prefix_len: Some(UInt32Value { value: 16 }),
        })),
    };
    let deny = Rules {
        action: Action::Deny as i32,
        policies: [
            (
                "ns[default]-policy[no-admin]-rule[0]".to_string(),
                deny_admin()
                    .policies
                    .remove("ns[default]-policy[no-admin]-rule[0]")
                    .expect("policy"),
            ),
            (
                "ns[default]-policy[block]-rule[0]".to_string(),
                policy(
                    vec![Permission {
                        rule: Some(permission::Rule::Any(true)),
                    }],
                    vec![blocked_ip],
                ),
            ),
        ]
        .into_iter()
        .collect(),
        audit_logging_options: None,
    };
    let allow = Rules {
        action: Action::Allow as i32,
        policies: [
            (
                "ns[default]-policy[reviews]-rule[0]".to_string(),
                policy(
                    vec![header_is(":method", "POST")],
                    vec![authenticated(exact(
                        "spiffe://cluster.local/ns/default/sa/reviews",
                    ))],
                ),
            ),
            (
                "ns[default]-policy[ratings]-rule[0]".to_string(),
                policy(
                    vec![path(prefix("/ratings/"))],
                    vec![authenticated(regex(".*/ns/ratings/.*"))],
                ),
            ),
            (
                "ns[default]-policy[productpage]-rule[0]".to_string(),
                policy(
                    vec![header_is(":method", "GET")],
                    vec![authenticated(exact(
                        "spiffe://cluster.local/ns/default/sa/productpage",
                    ))],
                ),
            ),
        ]
        .into_iter()
        .collect(),
        audit_logging_options: None,
    };
    let filter = |rules| {
        Filter::http(&pack(
            HTTP_RBAC,
            &HttpRbac {
                rules: Some(rules),
                ..Default::default()
            },
        ))
        .expect("compiles")
    };
    let rbac = Rbac::new(vec![filter(deny), filter(allow)]).expect("rules");
    let req = http::Request::builder()
        .method("POST")
        .uri("/productpage?u=normal")
        .header("host", "productpage:9080")
        .header("user-agent", "curl/8.5.0")
        .header("accept", "*/*")
        .header("x-request-id", "8f0c6e9a-9c3c-4a5e-8d4c-0b2f0a6c1e77")
        .header("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7")
        .body(())
        .expect("request")
        .into_parts()
        .0;
    let s = Subject {
        source: "10.1.0.7:44312".parse().expect("addr"),
        destination: "10.1.0.9:9080".parse().expect("addr"),
        principal: Some("spiffe://cluster.local/ns/default/sa/reviews"),
        sni: Some("outbound_.9080_._.productpage.default.svc.cluster.local"),
        auth: None,
    };
    // Every policy is looked at: neither DENY matches, and the ALLOW that does is the last by name.
    assert!(!rbac.check_http(&s, &req).is_deny());
    for _ in 0..100_000 {
        black_box(rbac.check_http(black_box(&s), black_box(&req)));
    }
    for _ in 0..100_000 {
        black_box(
            normalize_path(black_box("/productpage?u=normal"), PathNormalization::BASE).is_ok(),
        );
    }
}
