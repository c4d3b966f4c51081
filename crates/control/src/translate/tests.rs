//! Translation tests: named cases of Istio YAML in, Envoy resources out, plus a golden file of a whole
//! proxy's config (regenerate with `WEFT_UPDATE_GOLDEN=1`, review the diff).

use super::*;
use std::sync::Arc;
use weft_api::parse_file;
use weft_xds::pb::envoy::config::core::v3::data_source::Specifier as DataSourceSpecifier;
use weft_xds::pb::envoy::config::route::v3::query_parameter_matcher::QueryParameterMatchSpecifier;
use weft_xds::pb::envoy::config::route::v3::redirect_action::{
    PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier,
};
use weft_xds::pb::envoy::config::route::v3::route::Action;
use weft_xds::pb::envoy::config::route::v3::route_action::{
    ClusterSpecifier, HostRewriteSpecifier,
};
use weft_xds::pb::envoy::config::route::v3::route_match::PathSpecifier;
use weft_xds::pb::envoy::config::route::v3::{Route, RouteConfiguration};
use weft_xds::unpack;

const REGISTRY: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1}
spec: {address: 127.0.1.12, labels: {app: reviews, version: v1}, serviceAccount: bookinfo-reviews}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2}
spec: {address: 127.0.1.13, labels: {app: reviews, version: v2}, serviceAccount: bookinfo-reviews}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
";

pub(super) fn model(extra: &str) -> Model {
    let mut p = parse_file("registry.yaml", REGISTRY);
    let e = parse_file("extra.yaml", extra);
    assert!(p.diagnostics.is_empty() && e.diagnostics.is_empty());
    p.resources.extend(e.resources);
    let all: Vec<weft_api::Resource> = p.resources.clone();
    let problems: Vec<String> = weft_api::analyze(&all)
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect();
    assert!(problems.is_empty(), "{problems:?}");
    let res: Vec<Arc<weft_api::Resource>> = p.resources.into_iter().map(Arc::new).collect();
    Model::build(1, &res, weft_api::MeshConfig::default())
}

fn proxy(ns: &str) -> ProxyIdentity {
    ProxyIdentity {
        workload: "productpage-v1".into(),
        namespace: ns.into(),
        ip: "127.0.1.10".into(),
        inbound_ports: vec![(9080, 19080)],
        ..Default::default()
    }
}

fn routes(extra: &str) -> Vec<Route> {
    let m = model(extra);
    let res = for_proxy(&m, &proxy("default"));
    let rc: RouteConfiguration =
        unpack(&res.of(type_url::ROUTE).expect("routes")["9080"]).expect("decodes");
    rc.virtual_hosts[0].routes.clone()
}

fn action(r: &Route) -> &weft_xds::pb::envoy::config::route::v3::RouteAction {
    match &r.action {
        Some(Action::Route(a)) => a,
        other => panic!("not a route action: {other:?}"),
    }
}

#[test]
fn names_follow_istio() {
    let m = model("");
    let res = for_proxy(&m, &proxy("default"));
    let names = |t: &str| -> Vec<String> { res.of(t).expect("type").keys().cloned().collect() };
    assert_eq!(
        names(type_url::CLUSTER),
        vec![
            "inbound|9080||",
            "outbound|9080|v1|reviews.default.svc.cluster.local",
            "outbound|9080|v2|reviews.default.svc.cluster.local",
            "outbound|9080||reviews.default.svc.cluster.local",
        ]
    );
    assert_eq!(
        names(type_url::LISTENER),
        vec!["0.0.0.0_9080", "inbound_127.0.1.10_9080"]
    );
    assert_eq!(names(type_url::ROUTE), vec!["9080"]);
    let cla: ClusterLoadAssignment = unpack(
        &res.of(type_url::ENDPOINT).expect("eds")
            ["outbound|9080|v2|reviews.default.svc.cluster.local"],
    )
    .expect("decodes");
    assert_eq!(
        cla.endpoints[0].lb_endpoints.len(),
        1,
        "subset v2 has one endpoint"
    );
}

#[test]
fn domains_depend_on_the_proxy_namespace() {
    let m = model("");
    for (ns, want) in [
        (
            "default",
            vec![
                "reviews.default.svc.cluster.local:9080",
                "reviews.default.svc.cluster.local",
                "reviews:9080",
                "reviews",
                "reviews.default:9080",
                "reviews.default",
                "reviews.default.svc:9080",
                "reviews.default.svc",
            ],
        ),
        (
            "other",
            vec![
                "reviews.default.svc.cluster.local:9080",
                "reviews.default.svc.cluster.local",
                "reviews.default:9080",
                "reviews.default",
                "reviews.default.svc:9080",
                "reviews.default.svc",
            ],
        ),
    ] {
        let services: Vec<&crate::registry::Service> = m.services.values().map(|s| &**s).collect();
        let rc = route_configuration(&m, &services, ns, 9080);
        assert_eq!(rc.virtual_hosts[0].domains, want, "proxy in {ns}");
    }
}

#[test]
fn table_of_rules() {
    struct Case {
        name: &'static str,
        http: &'static str,
        check: fn(&[Route]),
    }
    let cases = [
        Case {
            name: "no virtual service: default route with Istio's retries",
            http: "",
            check: |r| {
                let a = action(&r[0]);
                assert_eq!(
                    a.cluster_specifier,
                    Some(ClusterSpecifier::Cluster("outbound|9080||reviews.default.svc.cluster.local".into()))
                );
                let rp = a.retry_policy.as_ref().expect("default retries");
                assert_eq!(rp.num_retries.as_ref().map(|n| n.value), Some(2));
                assert_eq!(rp.retriable_status_codes, vec![503]);
                assert_eq!(a.timeout.as_ref().map(|t| t.seconds), Some(0));
            },
        },
        Case {
            name: "header match then fallback",
            http: "  - match: [{headers: {end-user: {exact: jason}}}]\n    route: [{destination: {host: reviews, subset: v2}}]\n  - route: [{destination: {host: reviews, subset: v1}}]\n",
            check: |r| {
                assert_eq!(r.len(), 2);
                let m = r[0].r#match.as_ref().expect("match");
                assert_eq!(m.headers[0].name, "end-user");
                assert_eq!(
                    action(&r[1]).cluster_specifier,
                    Some(ClusterSpecifier::Cluster("outbound|9080|v1|reviews.default.svc.cluster.local".into()))
                );
            },
        },
        Case {
            name: "weights",
            http: "  - route:\n    - {destination: {host: reviews, subset: v1}, weight: 50}\n    - {destination: {host: reviews, subset: v2}, weight: 50}\n",
            check: |r| match &action(&r[0]).cluster_specifier {
                Some(ClusterSpecifier::WeightedClusters(w)) => {
                    let got: Vec<(String, u32)> = w
                        .clusters
                        .iter()
                        .map(|c| (c.name.clone(), c.weight.as_ref().map(|v| v.value).unwrap_or(0)))
                        .collect();
                    assert_eq!(got[0].1 + got[1].1, 100);
                    assert!(got[1].0.contains("|v2|"));
                }
                other => panic!("{other:?}"),
            },
        },
        Case {
            name: "uri matches, OR across matches",
            http: "  - match: [{uri: {exact: /a}}, {uri: {prefix: /b}}, {uri: {regex: \"/c/[0-9]+\"}, ignoreUriCase: true}]\n    route: [{destination: {host: reviews}}]\n",
            check: |r| {
                assert_eq!(r.len(), 3);
                let p = |i: usize| r[i].r#match.as_ref().and_then(|m| m.path_specifier.clone());
                assert_eq!(p(0), Some(PathSpecifier::Path("/a".into())));
                assert_eq!(p(1), Some(PathSpecifier::Prefix("/b".into())));
                assert!(matches!(p(2), Some(PathSpecifier::SafeRegex(_))));
                assert_eq!(r[2].r#match.as_ref().and_then(|m| m.case_sensitive).map(|b| b.value), Some(false));
            },
        },
        Case {
            name: "timeout, retries, headers",
            http: "  - timeout: 3s\n    retries: {attempts: 3, perTryTimeout: 1s, retryOn: \"5xx,503\"}\n    headers: {request: {set: {x-a: \"1\"}, add: {x-b: \"2\"}, remove: [x-c]}}\n    route: [{destination: {host: reviews}}]\n",
            check: |r| {
                let a = action(&r[0]);
                assert_eq!(a.timeout.as_ref().map(|t| t.seconds), Some(3));
                let rp = a.retry_policy.as_ref().expect("retries");
                assert_eq!(rp.retry_on, "5xx,retriable-status-codes");
                assert_eq!(rp.retriable_status_codes, vec![503]);
                assert_eq!(rp.num_retries.as_ref().map(|n| n.value), Some(3));
                assert_eq!(r[0].request_headers_to_add.len(), 2);
                assert_eq!(r[0].request_headers_to_remove, vec!["x-c".to_string()]);
            },
        },
        Case {
            name: "fault replaces timeout and retries",
            http: "  - fault: {delay: {fixedDelay: 7s, percentage: {value: 50}}, abort: {httpStatus: 500, percentage: {value: 100}}}\n    timeout: 1s\n    route: [{destination: {host: reviews}}]\n",
            check: |r| {
                let a = action(&r[0]);
                assert!(a.retry_policy.is_none());
                assert_eq!(a.timeout.as_ref().map(|t| t.seconds), Some(0));
                let f: HttpFault = unpack(&r[0].typed_per_filter_config[filter_name::FAULT]).expect("fault");
                let d = f.delay.expect("delay");
                assert_eq!(d.percentage.map(|p| p.numerator), Some(500_000));
                assert_eq!(f.abort.and_then(|a| a.percentage).map(|p| p.numerator), Some(1_000_000));
            },
        },
        Case {
            name: "redirect",
            http: "  - match: [{uri: {prefix: /old}}]\n    redirect: {uri: /new, authority: web.example, scheme: https, redirectCode: 308}\n  - redirect: {prefixRewrite: /v2, derivePort: FROM_REQUEST_PORT}\n",
            check: |r| {
                let Some(Action::Redirect(a)) = &r[0].action else { panic!("{:?}", r[0].action) };
                assert_eq!(a.host_redirect, "web.example");
                assert_eq!(a.response_code, RedirectResponseCode::PermanentRedirect as i32);
                assert_eq!(a.scheme_rewrite_specifier, Some(SchemeRewriteSpecifier::SchemeRedirect("https".into())));
                assert_eq!(a.path_rewrite_specifier, Some(PathRewriteSpecifier::PathRedirect("/new".into())));
                assert_eq!(a.port_redirect, 0);
                let Some(Action::Redirect(b)) = &r[1].action else { panic!("{:?}", r[1].action) };
                assert_eq!(b.port_redirect, 9080, "FROM_REQUEST_PORT is the route's port");
                assert_eq!(b.response_code, RedirectResponseCode::MovedPermanently as i32);
                assert_eq!(b.path_rewrite_specifier, Some(PathRewriteSpecifier::PrefixRewrite("/v2".into())));
            },
        },
        Case {
            name: "direct response",
            http: "  - match: [{uri: {exact: /t}}]\n    directResponse: {status: 418, body: {string: teapot}}\n  - directResponse: {status: 200, body: {bytes: aGk=}}\n",
            check: |r| {
                let Some(Action::DirectResponse(a)) = &r[0].action else { panic!("{:?}", r[0].action) };
                assert_eq!(a.status, 418);
                assert_eq!(a.body.as_ref().and_then(|b| b.specifier.clone()), Some(DataSourceSpecifier::InlineString("teapot".into())));
                let Some(Action::DirectResponse(b)) = &r[1].action else { panic!("{:?}", r[1].action) };
                assert_eq!(b.body.as_ref().and_then(|b| b.specifier.clone()), Some(DataSourceSpecifier::InlineBytes(b"hi".to_vec())));
            },
        },
        Case {
            name: "rewrite: prefix, exact, regex match, authority, regex rewrite",
            http: "  - match: [{uri: {prefix: /a}}, {uri: {exact: /b}}, {uri: {regex: \"/c.*\"}}]\n    rewrite: {uri: /z, authority: r:9080}\n    route: [{destination: {host: reviews}}]\n  - rewrite: {uriRegexRewrite: {match: \"^/x/(.*)$\", rewrite: \"/\\\\1\"}}\n    route: [{destination: {host: reviews}}]\n",
            check: |r| {
                assert_eq!(action(&r[0]).prefix_rewrite, "/z");
                assert_eq!(action(&r[1]).prefix_rewrite, "/z", "an exact match's whole path is its prefix");
                let re = action(&r[2]).regex_rewrite.clone().expect("regex match rewrites the whole path");
                assert_eq!(re.pattern.map(|p| p.regex), Some("^.*$".into()));
                assert_eq!(re.substitution, "/z");
                assert_eq!(action(&r[0]).host_rewrite_specifier, Some(HostRewriteSpecifier::HostRewriteLiteral("r:9080".into())));
                let re = action(&r[3]).regex_rewrite.clone().expect("regex rewrite");
                assert_eq!(re.pattern.map(|p| p.regex), Some("^/x/(.*)$".into()));
                assert_eq!(re.substitution, "/\\1");
            },
        },
        Case {
            name: "destination headers: one on the route, several on each cluster",
            http: "  - headers: {request: {set: {x-rule: \"1\"}}}\n    route: [{destination: {host: reviews}, headers: {request: {set: {x-dest: \"1\"}}, response: {remove: [x-r]}}}]\n  - route:\n    - {destination: {host: reviews, subset: v1}, weight: 50, headers: {request: {set: {x-v: \"1\"}}}}\n    - {destination: {host: reviews, subset: v2}, weight: 50}\n",
            check: |r| {
                let keys: Vec<String> = r[0].request_headers_to_add.iter().filter_map(|h| Some(h.header.as_ref()?.key.clone())).collect();
                assert_eq!(keys, vec!["x-dest", "x-rule"], "destination's first");
                assert_eq!(r[0].response_headers_to_remove, vec!["x-r".to_string()]);
                let Some(ClusterSpecifier::WeightedClusters(w)) = &action(&r[1]).cluster_specifier else { panic!() };
                assert_eq!(w.clusters[0].request_headers_to_add[0].header.as_ref().map(|h| h.key.as_str()), Some("x-v"));
                assert!(w.clusters[1].request_headers_to_add.is_empty());
            },
        },
        Case {
            name: "mirrors and their percentages",
            http: "  - mirror: {host: reviews, subset: v2}\n    mirrorPercentage: {value: 25}\n    route: [{destination: {host: reviews, subset: v1}}]\n  - mirror: {host: reviews}\n    mirrorPercent: 5\n    route: [{destination: {host: reviews}}]\n  - mirrors: [{destination: {host: reviews, subset: v1}}, {destination: {host: reviews, subset: v2}, percentage: {value: 50}}]\n    route: [{destination: {host: reviews}}]\n",
            check: |r| {
                let mp = |i: usize| -> Vec<(String, u32)> {
                    action(&r[i]).request_mirror_policies.iter().map(|m| {
                        (m.cluster.clone(), m.runtime_fraction.as_ref().and_then(|f| f.default_value.as_ref()).map_or(0, |p| p.numerator))
                    }).collect()
                };
                assert_eq!(mp(0), vec![("outbound|9080|v2|reviews.default.svc.cluster.local".to_string(), 250_000)]);
                assert_eq!(mp(1), vec![("outbound|9080||reviews.default.svc.cluster.local".to_string(), 50_000)]);
                assert_eq!(mp(2), vec![
                    ("outbound|9080|v1|reviews.default.svc.cluster.local".to_string(), 1_000_000),
                    ("outbound|9080|v2|reviews.default.svc.cluster.local".to_string(), 500_000),
                ]);
            },
        },
        Case {
            name: "cors policy per route",
            http: "  - corsPolicy: {allowOrigins: [{exact: \"https://a.example\"}, {prefix: \"https://b.\"}], allowMethods: [GET, POST], allowHeaders: [x-a, x-b], exposeHeaders: [x-c], maxAge: 24h, allowCredentials: true, unmatchedPreflights: IGNORE}\n    route: [{destination: {host: reviews}}]\n",
            check: |r| {
                let c: weft_xds::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy =
                    unpack(&r[0].typed_per_filter_config[filter_name::CORS]).expect("cors");
                assert_eq!(c.allow_origin_string_match.len(), 2);
                assert_eq!(c.allow_methods, "GET,POST");
                assert_eq!(c.allow_headers, "x-a,x-b");
                assert_eq!(c.expose_headers, "x-c");
                assert_eq!(c.max_age, "86400");
                assert_eq!(c.allow_credentials.map(|b| b.value), Some(true));
                assert_eq!(c.forward_not_matching_preflights.map(|b| b.value), Some(false));
            },
        },
        Case {
            name: "scheme, query parameters, match gateways",
            http: "  - match: [{scheme: {exact: https}, queryParams: {v: {exact: \"2\"}, debug: {}}}, {gateways: [gw]}, {gateways: [mesh], uri: {prefix: /m}}]\n    route: [{destination: {host: reviews}}]\n",
            check: |r| {
                assert_eq!(r.len(), 2, "the match bound to gateway gw is not for sidecars");
                let m = r[0].r#match.as_ref().expect("match");
                assert_eq!(m.headers[0].name, ":scheme");
                let q: Vec<(String, bool)> = m.query_parameters.iter().map(|q| (q.name.clone(), matches!(q.query_parameter_match_specifier, Some(QueryParameterMatchSpecifier::PresentMatch(true))))).collect();
                assert_eq!(q, vec![("debug".to_string(), true), ("v".to_string(), false)]);
                assert_eq!(r[1].r#match.as_ref().and_then(|m| m.path_specifier.clone()), Some(PathSpecifier::Prefix("/m".into())));
            },
        },
        Case {
            name: "sourceNamespace: only for proxies of that namespace",
            http: "  - match: [{sourceNamespace: other, uri: {prefix: /o}}, {sourceNamespace: default, uri: {prefix: /d}}]\n    route: [{destination: {host: reviews}}]\n",
            check: |r| {
                assert_eq!(r.len(), 1, "the proxy is in default");
                assert_eq!(r[0].r#match.as_ref().and_then(|m| m.path_specifier.clone()), Some(PathSpecifier::Prefix("/d".into())));
            },
        },
        Case {
            name: "grpc abort",
            http: "  - fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}\n    route: [{destination: {host: reviews}}]\n",
            check: |r| {
                let f: HttpFault = unpack(&r[0].typed_per_filter_config[filter_name::FAULT]).expect("fault");
                assert_eq!(f.abort.and_then(|a| a.error_type), Some(weft_xds::pb::envoy::extensions::filters::http::fault::v3::fault_abort::ErrorType::GrpcStatus(14)));
            },
        },
        Case {
            name: "attempts 0 disables retries",
            http: "  - retries: {attempts: 0}\n    route: [{destination: {host: reviews}}]\n",
            check: |r| assert!(action(&r[0]).retry_policy.is_none()),
        },
    ];
    for case in cases {
        let extra = if case.http.is_empty() {
            String::new()
        } else {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews]\n  http:\n{}",
                case.http
            )
        };
        let got = std::panic::catch_unwind(|| (case.check)(&routes(&extra)));
        assert!(got.is_ok(), "case failed: {}", case.name);
    }
}

#[test]
fn golden_productpage_config() {
    let m = model(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{headers: {end-user: {exact: jason}}}]\n    route: [{destination: {host: reviews, subset: v2}}]\n  - route: [{destination: {host: reviews, subset: v1}}]\n",
    );
    let res = for_proxy(&m, &proxy("default"));
    let mut dump = serde_json::Map::new();
    for (t, items) in &res.by_type {
        let rendered: Vec<serde_json::Value> = items
            .values()
            .map(|a| weft_xds::json::any_to_json(a).unwrap_or_else(|e| panic!("renders: {e:?}")))
            .collect();
        dump.insert(type_url::short(t).to_string(), rendered.into());
    }
    let got = serde_json::to_string_pretty(&dump).expect("json") + "\n";
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/productpage-proxy.json"
    );
    if std::env::var_os("WEFT_UPDATE_GOLDEN").is_some() {
        std::fs::write(path, &got).expect("write golden");
    }
    let want = std::fs::read_to_string(path).expect("golden file (WEFT_UPDATE_GOLDEN=1 to create)");
    assert_eq!(
        got, want,
        "translation changed: review, then WEFT_UPDATE_GOLDEN=1"
    );
}

const OTHER_NAMESPACE: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: billing, namespace: payments}
spec:
  hosts: [billing.payments.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.2.1}]
";

fn cluster_names(res: &ProxyResources) -> Vec<String> {
    res.of(type_url::CLUSTER)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn sidecar_scopes_what_a_proxy_sees() {
    let billing = "outbound|8080||billing.payments.svc.cluster.local";
    // No Sidecar: every service.
    let m = model(OTHER_NAMESPACE);
    assert!(cluster_names(&for_proxy(&m, &proxy("default"))).contains(&billing.to_string()));

    // A namespace-wide Sidecar with `./*`: only its own namespace (and no listener for port 8080).
    let own_ns = format!(
        "{OTHER_NAMESPACE}---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: default}}
spec:
  egress: [{{hosts: [./*]}}]
"
    );
    let m = model(&own_ns);
    let res = for_proxy(&m, &proxy("default"));
    let names = cluster_names(&res);
    assert!(!names.contains(&billing.to_string()), "{names:?}");
    assert!(names.contains(&"outbound|9080||reviews.default.svc.cluster.local".to_string()));
    assert!(!res
        .of(type_url::LISTENER)
        .unwrap()
        .contains_key("0.0.0.0_8080"));
    // A proxy in another namespace is not scoped by it.
    assert!(cluster_names(&for_proxy(&m, &proxy("payments"))).contains(&billing.to_string()));

    // A mesh-wide default in the root namespace: `./*` is each proxy's own namespace; a selector
    // Sidecar in the namespace wins over it.
    let root = format!(
        "{OTHER_NAMESPACE}---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: istio-system}}
spec:
  egress: [{{hosts: [./*]}}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: pp, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: productpage}}}}
  egress: [{{hosts: [./*, payments/billing.payments.svc.cluster.local]}}]
"
    );
    let m = model(&root);
    assert!(!cluster_names(&for_proxy(&m, &proxy("default"))).contains(&billing.to_string()));
    let mut pp = proxy("default");
    pp.labels.insert("app".into(), "productpage".into());
    assert!(cluster_names(&for_proxy(&m, &pp)).contains(&billing.to_string()));
    let in_payments = cluster_names(&for_proxy(&m, &proxy("payments")));
    assert_eq!(in_payments, ["inbound|9080||", billing]);
}

/// A TCP service with two TCP ports (one by protocol, one by name), a TLS port weft does not serve, and
/// a subset.
const DB: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db}
spec:
  hosts: [db.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9000, name: tcp, protocol: TCP}
  - {number: 9001, name: tcp-replica}
  - {number: 9443, name: tls, protocol: TLS}
  endpoints:
  - {address: 127.0.50.2, labels: {version: v1}}
  - {address: 127.0.50.3, ports: {tcp: 19000}, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db}
spec:
  host: db
  subsets:
  - {name: v1, labels: {version: v1}}
";

const DB_9000: &str = "outbound|9000||db.default.svc.cluster.local";

fn names_of(res: &ProxyResources, t: &str) -> Vec<String> {
    res.of(t)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn endpoints_of(res: &ProxyResources, cluster: &str) -> Vec<(String, u32)> {
    let cla: ClusterLoadAssignment =
        unpack(&res.of(type_url::ENDPOINT).expect("eds")[cluster]).expect("decodes");
    cla.endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .map(|e| match &e.host_identifier {
            Some(HostIdentifier::Endpoint(ep)) => {
                match ep.address.as_ref().and_then(|a| a.address.as_ref()) {
                    Some(AddressKind::SocketAddress(sa)) => (
                        sa.address.clone(),
                        match sa.port_specifier {
                            Some(PortSpecifier::PortValue(p)) => p,
                            _ => 0,
                        },
                    ),
                    other => panic!("not a socket address: {other:?}"),
                }
            }
            other => panic!("not an endpoint: {other:?}"),
        })
        .collect()
}

fn listener_of(res: &ProxyResources, name: &str) -> Listener {
    let l = res
        .of(type_url::LISTENER)
        .and_then(|m| m.get(name))
        .unwrap_or_else(|| {
            panic!(
                "no listener {name}: {:?}",
                names_of(res, type_url::LISTENER)
            )
        });
    unpack(l).expect("decodes")
}

fn socket_of(l: &Listener) -> (String, u32) {
    match l.address.as_ref().and_then(|a| a.address.as_ref()) {
        Some(AddressKind::SocketAddress(sa)) => (
            sa.address.clone(),
            match sa.port_specifier {
                Some(PortSpecifier::PortValue(p)) => p,
                _ => 0,
            },
        ),
        other => panic!("{}: not a socket address: {other:?}", l.name),
    }
}

/// The listener's only filter: its name and its typed config. An inbound listener has a chain for
/// mTLS and one for plaintext (PERMISSIVE, [`mtls::secure_inbound`]), with the same filters.
fn only_filter(l: &Listener) -> (&str, &Any) {
    let filters = &l.filter_chains[0].filters;
    for c in &l.filter_chains {
        assert_eq!(
            &c.filters, filters,
            "{}: the same filters in every chain",
            l.name
        );
    }
    assert_eq!(filters.len(), 1, "{}: one filter", l.name);
    match &filters[0].config_type {
        Some(filter::ConfigType::TypedConfig(any)) => (filters[0].name.as_str(), any),
        other => panic!("{}: no typed config: {other:?}", l.name),
    }
}

fn tcp_proxy_to(cluster: &str) -> TcpProxy {
    TcpProxy {
        stat_prefix: cluster.into(),
        cluster_specifier: Some(TcpClusterSpecifier::Cluster(cluster.into())),
        ..Default::default()
    }
}

/// The listener carries opaque TCP to `cluster`, and nothing else.
fn assert_tcp_proxy(l: &Listener, cluster: &str) {
    let (name, any) = only_filter(l);
    assert_eq!(name, filter_name::TCP_PROXY, "{}", l.name);
    assert_eq!(any.type_url, type_url::TCP_PROXY, "{}", l.name);
    let tcp: TcpProxy = unpack(any).expect("decodes");
    assert_eq!(tcp, tcp_proxy_to(cluster), "{}", l.name);
}

#[test]
fn tcp_service_ports_get_clusters_and_endpoints_but_no_virtual_listener() {
    let m = model(DB);
    let res = for_proxy(&m, &proxy("default"));
    let db = |port: u32, subset: &str| {
        outbound_cluster_name(port, subset, "db.default.svc.cluster.local")
    };
    let clusters = cluster_names(&res);
    for name in [db(9000, ""), db(9000, "v1"), db(9001, ""), db(9001, "v1")] {
        assert!(clusters.contains(&name), "{name} in {clusters:?}");
    }
    assert!(
        !clusters.iter().any(|c| c.starts_with("outbound|9443|")),
        "TLS stays unserved: {clusters:?}"
    );
    let c: Cluster = unpack(&res.of(type_url::CLUSTER).expect("cds")[DB_9000]).expect("decodes");
    assert_eq!(
        c.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
    );
    assert_eq!(
        c.eds_cluster_config.map(|e| e.service_name),
        Some(DB_9000.to_string())
    );
    assert_eq!(
        endpoints_of(&res, DB_9000),
        [
            ("127.0.50.2".to_string(), 9000),
            ("127.0.50.3".to_string(), 19000)
        ]
    );
    assert_eq!(
        endpoints_of(&res, &db(9000, "v1")),
        [("127.0.50.2".to_string(), 9000)],
        "the subset selects by label"
    );
    assert_eq!(
        names_of(&res, type_url::ENDPOINT).len(),
        clusters
            .iter()
            .filter(|c| c.starts_with("outbound|"))
            .count(),
        "one load assignment per outbound cluster"
    );
    // HTTP as before: virtual listeners and route tables only for the HTTP port.
    assert_eq!(
        names_of(&res, type_url::LISTENER),
        ["0.0.0.0_9080", "inbound_127.0.1.10_9080"]
    );
    assert_eq!(names_of(&res, type_url::ROUTE), ["9080"]);
}

/// A Sidecar in `default` for the workloads labelled app=bench-client, with the given egress entries.
fn bench_client_sidecar(egress: &str) -> String {
    format!(
        "{DB}---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: bench-client, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: bench-client}}}}
  egress:
{egress}"
    )
}

fn bench_client() -> ProxyIdentity {
    let mut p = proxy("default");
    p.workload = "bench-client".into();
    p.ip = "127.0.50.1".into();
    p.labels.insert("app".into(), "bench-client".into());
    p
}

#[test]
fn egress_tcp_port_is_a_listener_on_the_workload_ip() {
    let m = model(&bench_client_sidecar(
        "  - port: {number: 9000, protocol: TCP, name: tcp}\n    hosts: [./db.default.svc.cluster.local]\n",
    ));
    let res = for_proxy(&m, &bench_client());
    let l = listener_of(&res, "127.0.50.1_9000");
    assert_eq!(socket_of(&l), ("127.0.50.1".to_string(), 9000));
    assert_eq!(l.traffic_direction, TrafficDirection::Outbound as i32);
    assert_eq!(l.bind_to_port, None, "binds");
    assert_tcp_proxy(&l, DB_9000);
    // The entry scopes what the proxy sees, as an entry without a port does.
    let clusters = cluster_names(&res);
    assert!(clusters.contains(&DB_9000.to_string()), "{clusters:?}");
    assert!(
        !clusters.iter().any(|c| c.contains("reviews")),
        "{clusters:?}"
    );
    assert_eq!(
        names_of(&res, type_url::LISTENER),
        ["127.0.50.1_9000", "inbound_127.0.50.1_9080"],
        "no HTTP port visible, so no virtual listener"
    );
    // A workload the Sidecar does not select gets no egress listener and sees everything.
    let other = for_proxy(&m, &proxy("default"));
    assert_eq!(
        names_of(&other, type_url::LISTENER),
        ["0.0.0.0_9080", "inbound_127.0.1.10_9080"]
    );
}

#[test]
fn tcp_rules_of_a_virtual_service_pick_the_egress_listeners_clusters() {
    let egress = "  - port: {number: 9000, protocol: TCP, name: tcp}\n    hosts: [./db.default.svc.cluster.local]\n";
    let tcp_of = |rules: &str| -> TcpProxy {
        let vs = format!("---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: db}}\nspec:\n  hosts: [db]\n  tcp:\n{rules}");
        let m = model(&(bench_client_sidecar(egress) + &vs));
        let res = for_proxy(&m, &bench_client());
        let l = listener_of(&res, "127.0.50.1_9000");
        let (_, any) = only_filter(&l);
        unpack(any).expect("decodes")
    };
    let v1 = outbound_cluster_name(9000, "v1", "db.default.svc.cluster.local");
    // Istio's TCP traffic shifting: 80% to v1, 20% to the rest of the service.
    let split = tcp_of("  - match: [{port: 9000}]\n    route:\n    - {destination: {host: db, subset: v1}, weight: 80}\n    - {destination: {host: db}, weight: 20}\n");
    assert_eq!(split.stat_prefix, DB_9000, "stats keep the service's name");
    let Some(TcpClusterSpecifier::WeightedClusters(w)) = split.cluster_specifier else {
        panic!("not weighted: {split:?}");
    };
    let got: Vec<(&str, u32)> = w
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight))
        .collect();
    assert_eq!(got, [(v1.as_str(), 80), (DB_9000, 20)]);
    // One destination: a plain cluster.
    let all_v1 = tcp_of("  - route: [{destination: {host: db, subset: v1}}]\n");
    assert_eq!(
        all_v1.cluster_specifier,
        Some(TcpClusterSpecifier::Cluster(v1.clone()))
    );
    // Rules whose match does not admit the connection leave the service's own cluster.
    for rules in [
        "  - match: [{port: 9001}]\n    route: [{destination: {host: db, subset: v1}}]\n",
        "  - match: [{sourceLabels: {app: other}}]\n    route: [{destination: {host: db, subset: v1}}]\n",
        "  - match: [{destinationSubnets: [10.0.0.0/8]}]\n    route: [{destination: {host: db, subset: v1}}]\n",
        "  - match: [{sourceNamespace: prod}]\n    route: [{destination: {host: db, subset: v1}}]\n",
    ] {
        assert_eq!(tcp_of(rules), tcp_proxy_to(DB_9000), "{rules}");
    }
    // The listener's own address is the connection's destination.
    let by_subnet = tcp_of("  - match: [{destinationSubnets: [127.0.50.0/24], sourceLabels: {app: bench-client}}]\n    route: [{destination: {host: db, subset: v1}}]\n");
    assert_eq!(
        by_subnet.cluster_specifier,
        Some(TcpClusterSpecifier::Cluster(v1))
    );
}

#[test]
fn egress_bind_sets_the_address_and_the_name() {
    let m = model(&bench_client_sidecar(
        "  - port: {number: 9000, name: tcp-db}\n    bind: 127.0.50.9\n    captureMode: NONE\n    hosts: [./*]\n",
    ));
    let res = for_proxy(&m, &bench_client());
    let l = listener_of(&res, "127.0.50.9_9000");
    assert_eq!(socket_of(&l), ("127.0.50.9".to_string(), 9000));
    assert_tcp_proxy(&l, DB_9000);
    assert!(
        !names_of(&res, type_url::LISTENER).contains(&"127.0.50.1_9000".to_string()),
        "no listener on the default address"
    );
}

#[test]
fn egress_picks_the_first_service_by_name_with_the_port() {
    // `cache` sorts first but lacks port 9000; `adb` and `db` both have it.
    let more = "---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cache}
spec:
  hosts: [cache.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9001, name: tcp, protocol: TCP}]
  endpoints: [{address: 127.0.50.4}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: adb}
spec:
  hosts: [adb.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  endpoints: [{address: 127.0.50.5}]
";
    let several = format!(
        "{}{more}",
        bench_client_sidecar(
            "  - port: {number: 9000, protocol: TCP}\n    hosts: [./*]\n  - port: {number: 9001, protocol: TCP}\n    hosts: [./db.default.svc.cluster.local]\n"
        )
    );
    let res = for_proxy(&model(&several), &bench_client());
    assert_tcp_proxy(
        &listener_of(&res, "127.0.50.1_9000"),
        "outbound|9000||adb.default.svc.cluster.local",
    );
    // Each entry selects among its own hosts: `cache` has 9001 but is not among them.
    assert_tcp_proxy(
        &listener_of(&res, "127.0.50.1_9001"),
        "outbound|9001||db.default.svc.cluster.local",
    );

    // No selected service has the port: no listener (and a warning in the log), the rest as usual.
    let none = bench_client_sidecar(
        "  - port: {number: 9999, protocol: TCP}\n    hosts: [./*]\n  - port: {number: 9000, protocol: TCP}\n    hosts: [./reviews.default.svc.cluster.local]\n",
    );
    let res = for_proxy(&model(&none), &bench_client());
    assert_eq!(
        names_of(&res, type_url::LISTENER),
        ["0.0.0.0_9080", "inbound_127.0.50.1_9080"]
    );
    assert!(cluster_names(&res).contains(&DB_9000.to_string()));
}

#[test]
fn egress_listener_never_takes_an_address_or_name_already_in_use() {
    // Port 9080 on the workload's own IP is its inbound listener's address.
    let m = model(&bench_client_sidecar(
        "  - port: {number: 9080, protocol: TCP}\n    hosts: [./*]\n",
    ));
    let res = for_proxy(&m, &bench_client());
    assert_eq!(
        names_of(&res, type_url::LISTENER),
        ["0.0.0.0_9080", "inbound_127.0.50.1_9080"]
    );
    let inbound = listener_of(&res, "inbound_127.0.50.1_9080");
    assert_eq!(
        only_filter(&inbound).0,
        filter_name::HTTP_CONNECTION_MANAGER
    );
    // 0.0.0.0_9080 is the HTTP virtual listener of port 9080.
    let m = model(&bench_client_sidecar(
        "  - port: {number: 9080, protocol: TCP}\n    bind: 0.0.0.0\n    hosts: [./*]\n",
    ));
    let res = for_proxy(&m, &bench_client());
    let virtual_9080 = listener_of(&res, "0.0.0.0_9080");
    assert_eq!(
        only_filter(&virtual_9080).0,
        filter_name::HTTP_CONNECTION_MANAGER
    );
    // 0.0.0.0 on a port no HTTP service uses is fine.
    let m = model(&bench_client_sidecar(
        "  - port: {number: 9000, protocol: TCP}\n    bind: 0.0.0.0\n    hosts: [./*]\n",
    ));
    assert_tcp_proxy(
        &listener_of(&for_proxy(&m, &bench_client()), "0.0.0.0_9000"),
        DB_9000,
    );
}

#[test]
fn inbound_port_of_a_tcp_service_is_a_tcp_listener() {
    // The proxy of db's first endpoint: 9000 is TCP, 9080 is declared by no service of it (HTTP).
    let mut db = proxy("default");
    db.ip = "127.0.50.2".into();
    db.inbound_ports = vec![(9000, 19000), (9080, 19080)];
    let res = for_proxy(&model(DB), &db);
    let l = listener_of(&res, "inbound_127.0.50.2_9000");
    assert_eq!(socket_of(&l), ("127.0.50.2".to_string(), 9000));
    assert_eq!(l.traffic_direction, TrafficDirection::Inbound as i32);
    assert_eq!(l.bind_to_port, None, "binds");
    assert_tcp_proxy(&l, "inbound|9000||");
    let http = listener_of(&res, "inbound_127.0.50.2_9080");
    assert_eq!(only_filter(&http).0, filter_name::HTTP_CONNECTION_MANAGER);
    assert!(cluster_names(&res).contains(&"inbound|9000||".to_string()));

    // Another service declaring 9000 as HTTP for the same workload: HTTP wins.
    let both = format!(
        "{DB}---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: db-admin}}
spec:
  hosts: [db-admin.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9000, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.50.2}}]
"
    );
    let res = for_proxy(&model(&both), &db);
    let l = listener_of(&res, "inbound_127.0.50.2_9000");
    assert_eq!(only_filter(&l).0, filter_name::HTTP_CONNECTION_MANAGER);
    // The proxy of another workload (not an instance of db) keeps HTTP on 9000.
    let mut other = db.clone();
    other.ip = "127.0.50.8".into();
    let res = for_proxy(&model(DB), &other);
    let l = listener_of(&res, "inbound_127.0.50.8_9000");
    assert_eq!(only_filter(&l).0, filter_name::HTTP_CONNECTION_MANAGER);
}

#[test]
fn meshconfig_access_logs_reach_every_http_listener() {
    use weft_xds::pb::envoy::config::core::v3::substitution_format_string::Format as F;
    use weft_xds::pb::envoy::extensions::access_loggers::file::v3::{
        file_access_log::AccessLogFormat, FileAccessLog,
    };
    let file = |logs: &[XAccessLog]| -> FileAccessLog {
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].name, "envoy.access_loggers.file");
        match &logs[0].config_type {
            Some(
                weft_xds::pb::envoy::config::accesslog::v3::access_log::ConfigType::TypedConfig(a),
            ) => unpack(a).expect("FileAccessLog"),
            other => panic!("{other:?}"),
        }
    };
    let mut mesh = weft_api::MeshConfig::default();
    assert!(access_logs(&mesh).is_empty(), "off by default, as in Istio");

    mesh.access_log_file = Some("/dev/stdout".into());
    let text = file(&access_logs(&mesh));
    assert_eq!(
        (text.path.as_str(), text.access_log_format),
        ("/dev/stdout", None)
    );

    mesh.access_log_encoding = Some("JSON".into());
    let json = file(&access_logs(&mesh));
    let Some(AccessLogFormat::LogFormat(f)) = json.access_log_format else {
        panic!("no format");
    };
    let Some(F::JsonFormat(st)) = f.format else {
        panic!("not JSON");
    };
    assert_eq!(st.fields.len(), 24);
    assert!(st.fields.contains_key("upstream_cluster"));

    mesh.access_log_encoding = None;
    mesh.access_log_format = Some("%REQ(:METHOD)% %RESPONSE_CODE%\n".into());
    let custom = file(&access_logs(&mesh));
    let Some(AccessLogFormat::LogFormat(f)) = custom.access_log_format else {
        panic!("no format");
    };
    assert!(matches!(f.format, Some(F::TextFormatSource(_))));

    // Every HTTP connection manager carries it: the outbound virtual listeners and the inbound ones.
    let p = parse_file("registry.yaml", REGISTRY);
    let res: Vec<Arc<weft_api::Resource>> = p.resources.into_iter().map(Arc::new).collect();
    let m = Model::build(1, &res, mesh);
    let out = for_proxy(&m, &proxy("default"));
    let listeners = out.of(type_url::LISTENER).expect("listeners");
    assert!(listeners.len() >= 2, "{:?}", listeners.keys());
    for (name, any) in listeners {
        let l: Listener = unpack(any).expect("listener");
        let f = &l.filter_chains[0].filters[0];
        let Some(filter::ConfigType::TypedConfig(hcm)) = &f.config_type else {
            panic!("{name}");
        };
        let hcm: HttpConnectionManager = unpack(hcm).expect("hcm");
        assert_eq!(file(&hcm.access_log).path, "/dev/stdout", "{name}");
    }
}

#[test]
fn meshconfig_tracing_reaches_every_http_listener() {
    use weft_xds::pb::envoy::config::trace::v3::{
        tracing::http::ConfigType, OpenTelemetryConfig, ZipkinConfig,
    };
    let mesh =
        |yaml: &str| -> weft_api::MeshConfig { parse_file("mesh.yaml", yaml).mesh.expect("mesh") };
    assert!(
        tracing(&weft_api::MeshConfig::default()).is_none(),
        "no provider: no tracing"
    );
    assert!(tracing(&mesh(
        "enableTracing: false\ndefaultConfig: {tracing: {zipkin: {address: 'z:9411'}}}"
    ))
    .is_none());
    // A bad value refuses the MeshConfig when it is read, naming the field.
    let bad = parse_file(
        "mesh.yaml",
        "defaultConfig: {tracing: {sampling: 200, zipkin: {address: 'z:9411'}}}",
    );
    assert!(bad.mesh.is_none());
    assert_eq!(bad.diagnostics[0].field, "defaultConfig.tracing.sampling");

    let zipkin =
        mesh("defaultConfig: {tracing: {sampling: 100, zipkin: {address: '10.0.0.9:9411'}}}");
    let t = tracing(&zipkin).expect("on");
    assert_eq!(t.random_sampling.expect("sampling").value, 100.0);
    let p = t.provider.expect("provider");
    assert_eq!(p.name, "envoy.tracers.zipkin");
    let Some(ConfigType::TypedConfig(any)) = &p.config_type else {
        panic!("{p:?}")
    };
    let z: ZipkinConfig = unpack(any).expect("ZipkinConfig");
    assert_eq!(z.collector_cluster, "10.0.0.9:9411");
    assert_eq!(z.collector_hostname, "10.0.0.9");
    assert_eq!(z.collector_endpoint, "/api/v2/spans");
    assert_eq!(z.collector_endpoint_version, 1, "HTTP_JSON");

    let otel = mesh(
        "extensionProviders: [{name: otel, opentelemetry: {service: otel.obs.svc.cluster.local, port: 4318, http: {path: /v1/traces}}}]\ndefaultProviders: {tracing: [otel]}",
    );
    let t = tracing(&otel).expect("on");
    assert_eq!(
        t.random_sampling.expect("sampling").value,
        1.0,
        "Istio's default"
    );
    let p = t.provider.expect("provider");
    assert_eq!(p.name, "envoy.tracers.opentelemetry");
    let Some(ConfigType::TypedConfig(any)) = &p.config_type else {
        panic!("{p:?}")
    };
    let o: OpenTelemetryConfig = unpack(any).expect("OpenTelemetryConfig");
    let uri = o.http_service.and_then(|h| h.http_uri).expect("http_uri");
    assert_eq!(uri.uri, "http://otel.obs.svc.cluster.local:4318/v1/traces");

    // Every HTTP connection manager carries it.
    let p = parse_file("registry.yaml", REGISTRY);
    let res: Vec<Arc<weft_api::Resource>> = p.resources.into_iter().map(Arc::new).collect();
    let m = Model::build(1, &res, zipkin);
    let out = for_proxy(&m, &proxy("default"));
    let listeners = out.of(type_url::LISTENER).expect("listeners");
    assert!(listeners.len() >= 2, "{:?}", listeners.keys());
    for (name, any) in listeners {
        let l: Listener = unpack(any).expect("listener");
        let f = &l.filter_chains[0].filters[0];
        let Some(filter::ConfigType::TypedConfig(hcm)) = &f.config_type else {
            panic!("{name}");
        };
        let hcm: HttpConnectionManager = unpack(hcm).expect("hcm");
        assert!(hcm.tracing.is_some(), "{name}");
    }
}

/// The connection manager of a listener's first filter chain.
fn hcm_of(l: &Listener) -> HttpConnectionManager {
    let f = l.filter_chains[0]
        .filters
        .iter()
        .find(|f| f.name == filter_name::HTTP_CONNECTION_MANAGER)
        .expect("hcm");
    let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
        panic!("{f:?}");
    };
    unpack(any).expect("hcm")
}

/// The stats plugin config of an `istio.stats` filter, as JSON.
fn stats_json(any: &Any) -> serde_json::Value {
    assert_eq!(any.type_url, type_url::TYPED_STRUCT);
    let ts: weft_xds::TypedStruct = unpack(any).expect("TypedStruct");
    assert_eq!(ts.type_url, type_url::ISTIO_STATS_CONFIG);
    fn json(v: &weft_xds::pb::google::protobuf::Value) -> serde_json::Value {
        use weft_xds::pb::google::protobuf::value::Kind;
        match &v.kind {
            Some(Kind::StringValue(s)) => s.clone().into(),
            Some(Kind::BoolValue(b)) => (*b).into(),
            Some(Kind::ListValue(l)) => l.values.iter().map(json).collect(),
            Some(Kind::StructValue(s)) => s
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), json(v)))
                .collect::<serde_json::Map<_, _>>()
                .into(),
            other => panic!("{other:?}"),
        }
    }
    json(&weft_xds::pb::google::protobuf::Value {
        kind: Some(weft_xds::pb::google::protobuf::value::Kind::StructValue(
            ts.value.expect("value"),
        )),
    })
}

#[test]
fn telemetry_resources_reach_the_listeners_they_apply_to() {
    use weft_xds::pb::envoy::config::accesslog::v3::access_log_filter::FilterSpecifier;
    use weft_xds::pb::envoy::config::accesslog::v3::extension_filter;
    use weft_xds::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter;
    let telemetry = "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh, namespace: istio-system}
spec:
  metrics:
  - overrides:
    - match: {metric: REQUEST_SIZE}
      disabled: true
    - match: {metric: REQUEST_COUNT}
      tagOverrides:
        user: {value: \"request.headers['x-user']\"}
        request_protocol: {operation: REMOVE}
  tracing:
  - customTags:
      team: {literal: {value: bookinfo}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: errors, namespace: default}
spec:
  accessLogging:
  - providers: [{name: envoy}]
    filter: {expression: 'response.code >= 400'}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: productpage, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  tracing:
  - match: {mode: CLIENT}
    randomSamplingPercentage: 100
  - match: {mode: SERVER}
    disableSpanReporting: true
";
    let mesh = parse_file(
        "mesh.yaml",
        "defaultConfig: {tracing: {sampling: 1, zipkin: {address: '10.0.0.9:9411'}}}",
    )
    .mesh
    .expect("mesh");
    let mut p = parse_file("registry.yaml", REGISTRY);
    let t = parse_file("telemetry.yaml", telemetry);
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    p.resources.extend(t.resources);
    let res: Vec<Arc<weft_api::Resource>> = p.resources.into_iter().map(Arc::new).collect();
    let m = Model::build(1, &res, mesh);
    let mut pp = proxy("default");
    pp.labels = [("app".to_string(), "productpage".to_string())].into();
    let out = for_proxy(&m, &pp);
    for (name, client) in [("0.0.0.0_9080", true), ("inbound_127.0.1.10_9080", false)] {
        let hcm = hcm_of(&listener_of(&out, name));
        // Metrics: Istio's stats filter, before the router.
        let names: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                filter_name::CORS,
                filter_name::FAULT,
                "istio.stats",
                filter_name::ROUTER
            ],
            "{name}"
        );
        let Some(http_filter::ConfigType::TypedConfig(any)) = &hcm.http_filters[2].config_type
        else {
            panic!("{name}");
        };
        assert_eq!(
            stats_json(any),
            serde_json::json!({"metrics": [
                {"name": "request_bytes", "drop": true},
                {"name": "requests_total", "dimensions": {"user": "request.headers['x-user']"}, "tags_to_remove": ["request_protocol"]},
            ]}),
            "{name}"
        );
        // Access logs: the namespace's rule, with Envoy's CEL filter.
        assert_eq!(hcm.access_log.len(), 1, "{name}");
        let Some(FilterSpecifier::ExtensionFilter(ext)) = hcm.access_log[0]
            .filter
            .as_ref()
            .and_then(|f| f.filter_specifier.clone())
        else {
            panic!("{name}: no filter");
        };
        assert_eq!(ext.name, "envoy.access_loggers.extension_filters.cel");
        let Some(extension_filter::ConfigType::TypedConfig(any)) = &ext.config_type else {
            panic!("{name}");
        };
        let cel: ExpressionFilter = unpack(any).expect("ExpressionFilter");
        assert_eq!(cel.expression, "response.code >= 400");
        // Tracing: the workload's sampling outbound, span reporting off inbound, the mesh's tags.
        let tr = hcm.tracing.expect("tracing");
        assert_eq!(tr.custom_tags.len(), 1, "{name}");
        assert_eq!(tr.custom_tags[0].tag, "team");
        if client {
            assert_eq!(tr.random_sampling.expect("sampling").value, 100.0);
            assert!(tr.provider.is_some());
        } else {
            assert_eq!(
                tr.random_sampling.expect("sampling").value,
                1.0,
                "MeshConfig's"
            );
            assert!(tr.provider.is_none(), "span reporting off");
        }
    }
    // Another workload of the namespace: no workload rule, the mesh's sampling.
    let other = for_proxy(&m, &proxy("default"));
    let hcm = hcm_of(&listener_of(&other, "0.0.0.0_9080"));
    assert_eq!(
        hcm.tracing
            .expect("tracing")
            .random_sampling
            .expect("s")
            .value,
        1.0
    );
    // Another namespace: no access log (MeshConfig has none), the mesh's metrics.
    let elsewhere = for_proxy(&m, &proxy("prod"));
    let hcm = hcm_of(&listener_of(&elsewhere, "0.0.0.0_9080"));
    assert!(hcm.access_log.is_empty());
    assert_eq!(hcm.http_filters.len(), 4);
    // Without Telemetry resources, no stats filter at all.
    let plain = model("");
    let hcm = hcm_of(&listener_of(
        &for_proxy(&plain, &proxy("default")),
        "0.0.0.0_9080",
    ));
    assert_eq!(hcm.http_filters.len(), 3);
    assert!(hcm.request_id_extension.is_none());
}

#[test]
fn authorization_policies_become_rbac_filters_on_inbound_listeners() {
    const POLICIES: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: [/admin*]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-get, namespace: default}
spec:
  rules: [{to: [{operation: {methods: [GET]}}]}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: default}
spec:
  jwtRules: [{issuer: issuer.example, jwks: '{\"keys\":[]}'}]
";
    let names = |hcm: &HttpConnectionManager| -> Vec<String> {
        hcm.http_filters.iter().map(|f| f.name.clone()).collect()
    };
    // HTTP: jwt_authn, then DENY, then ALLOW, before the fault filter and the router, on every chain
    // (mTLS and plaintext alike).
    let res = for_proxy(&model(POLICIES), &proxy("default"));
    let l = listener_of(&res, "inbound_127.0.1.10_9080");
    assert!(l.filter_chains.len() >= 2, "mTLS and plaintext chains");
    for chain in 0..l.filter_chains.len() {
        let mut one = l.clone();
        one.filter_chains = vec![l.filter_chains[chain].clone()];
        let hcm = hcm_of(&one);
        let n = names(&hcm);
        assert_eq!(
            &n[..5],
            [
                "envoy.filters.http.jwt_authn",
                "envoy.filters.http.rbac",
                "envoy.filters.http.rbac",
                filter_name::CORS,
                filter_name::FAULT
            ],
            "{n:?}"
        );
        // Istio's default path normalization (BASE) on the connection manager the policies check.
        assert_eq!(hcm.normalize_path, Some(BoolValue { value: true }));
        assert!(!hcm.merge_slashes);
    }
    // Another namespace's proxy gets none of them.
    let other = for_proxy(&model(POLICIES), &proxy("other"));
    let l = listener_of(&other, "inbound_127.0.1.10_9080");
    assert!(!names(&hcm_of(&l)).iter().any(|n| n.contains("rbac")));

    // TCP: the network RBAC filter before tcp_proxy.
    let mut db = proxy("default");
    db.ip = "127.0.50.2".into();
    db.inbound_ports = vec![(9000, 19000)];
    let res = for_proxy(&model(&format!("{DB}---\n{POLICIES}")), &db);
    let l = listener_of(&res, "inbound_127.0.50.2_9000");
    let filters: Vec<&str> = l.filter_chains[0]
        .filters
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(
        filters.first(),
        Some(&"envoy.filters.network.rbac"),
        "{filters:?}"
    );
    assert_eq!(filters.last(), Some(&filter_name::TCP_PROXY), "{filters:?}");
}

#[test]
fn meshconfig_path_normalization_sets_the_inbound_connection_manager() {
    let with = |yaml: &str| {
        let mesh = parse_file("mesh.yaml", yaml).mesh.expect("mesh");
        let mut m = model("");
        m.mesh = mesh;
        let res = for_proxy(&m, &proxy("default"));
        hcm_of(&listener_of(&res, "inbound_127.0.1.10_9080"))
    };
    use weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::PathWithEscapedSlashesAction as Escaped;
    let none = with("pathNormalization: {normalization: NONE}");
    assert_eq!(none.normalize_path, None);
    let merge = with("pathNormalization: {normalization: MERGE_SLASHES}");
    assert_eq!(merge.normalize_path, Some(BoolValue { value: true }));
    assert!(merge.merge_slashes);
    assert_eq!(
        merge.path_with_escaped_slashes_action,
        Escaped::ImplementationSpecificDefault as i32
    );
    let decode = with("pathNormalization: {normalization: DECODE_AND_MERGE_SLASHES}");
    assert!(decode.merge_slashes);
    assert_eq!(
        decode.path_with_escaped_slashes_action,
        Escaped::UnescapeAndForward as i32
    );
    // A value Istio does not have refuses the MeshConfig.
    let bad = parse_file("mesh.yaml", "pathNormalization: {normalization: LOWERCASE}");
    assert!(bad.mesh.is_none());
    assert!(
        bad.diagnostics
            .iter()
            .any(|d| d.message.contains("LOWERCASE")
                || d.field.contains("pathNormalization")
                || d.message.contains("pathNormalization")),
        "{:?}",
        bad.diagnostics
    );
}
