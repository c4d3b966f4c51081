use super::*;
use weft_xds::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, HeaderMatcher, Route as XRoute,
    RouteAction as XRouteAction, RouteConfiguration, RouteMatch as XRouteMatch,
    VirtualHost as XVirtualHost,
};
use weft_xds::pb::envoy::r#type::matcher::v3::RegexMatcher;
use weft_xds::pb::google::protobuf::BoolValue;

fn xroute(path: PathSpecifier, headers: Vec<HeaderMatcher>, cluster: &str) -> XRoute {
    XRoute {
        r#match: Some(XRouteMatch {
            path_specifier: Some(path),
            headers,
            ..Default::default()
        }),
        action: Some(Action::Route(XRouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn table(vhosts: Vec<(&str, Vec<&str>, Vec<XRoute>)>) -> RouteConfiguration {
    RouteConfiguration {
        name: "9080".into(),
        virtual_hosts: vhosts
            .into_iter()
            .map(|(name, domains, routes)| XVirtualHost {
                name: name.into(),
                domains: domains.into_iter().map(String::from).collect(),
                routes,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn hm(name: &str, spec: HeaderMatchSpecifier, invert: bool) -> HeaderMatcher {
    HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(spec),
        invert_match: invert,
        ..Default::default()
    }
}

fn sm(p: MatchPattern) -> HeaderMatchSpecifier {
    HeaderMatchSpecifier::StringMatch(StringMatcher {
        match_pattern: Some(p),
        ignore_case: false,
    })
}

fn regex(r: &str) -> RegexMatcher {
    RegexMatcher {
        regex: r.into(),
        ..Default::default()
    }
}

fn matches(m: &RouteMatch, method: &str, path: &str, headers: &[(&str, &str)]) -> bool {
    let mut h = http::HeaderMap::new();
    for (k, v) in headers {
        h.append(
            http::header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            http::HeaderValue::from_str(v).expect("value"),
        );
    }
    let method = http::Method::from_bytes(method.as_bytes()).expect("method");
    m.matches(&RequestView {
        method: &method,
        authority: "reviews:9080",
        path_and_query: path,
        scheme: "http",
        headers: &h,
    })
}

#[test]
fn route_matching_table() {
    struct Case {
        name: &'static str,
        path: PathSpecifier,
        case_sensitive: Option<bool>,
        headers: Vec<HeaderMatcher>,
        method: &'static str,
        req_path: &'static str,
        req_headers: &'static [(&'static str, &'static str)],
        want: bool,
    }
    let p = |s: &str| PathSpecifier::Prefix(s.into());
    let case = |name, path, req_path, want| Case {
        name,
        path,
        case_sensitive: None,
        headers: vec![],
        method: "GET",
        req_path,
        req_headers: &[],
        want,
    };
    let cases = vec![
        case("prefix hit", p("/api"), "/api/v1", true),
        case("prefix miss", p("/api"), "/ap", false),
        case("prefix covers query", p("/a"), "/a?x=1", true),
        case("prefix is case sensitive", p("/API"), "/api", false),
        Case {
            case_sensitive: Some(false),
            ..case("prefix case-insensitive", p("/API"), "/api/x", true)
        },
        case("exact hit", PathSpecifier::Path("/a".into()), "/a", true),
        case(
            "exact ignores query",
            PathSpecifier::Path("/a".into()),
            "/a?b=c",
            true,
        ),
        case("exact miss", PathSpecifier::Path("/a".into()), "/a/", false),
        Case {
            case_sensitive: Some(false),
            ..case(
                "exact case-insensitive",
                PathSpecifier::Path("/Login".into()),
                "/LOGIN",
                true,
            )
        },
        case(
            "regex full match",
            PathSpecifier::SafeRegex(regex("/r/[0-9]+")),
            "/r/12",
            true,
        ),
        case(
            "regex is anchored",
            PathSpecifier::SafeRegex(regex("/r/[0-9]+")),
            "/r/12/x",
            false,
        ),
        case(
            "regex ignores query",
            PathSpecifier::SafeRegex(regex("/r")),
            "/r?q=1",
            true,
        ),
        Case {
            headers: vec![hm(
                "end-user",
                sm(MatchPattern::Exact("jason".into())),
                false,
            )],
            req_headers: &[("end-user", "jason")],
            ..case("header exact hit", p("/"), "/", true)
        },
        Case {
            headers: vec![hm(
                "end-user",
                sm(MatchPattern::Exact("jason".into())),
                false,
            )],
            req_headers: &[("end-user", "jasonx")],
            ..case("header exact miss", p("/"), "/", false)
        },
        Case {
            headers: vec![hm(
                "end-user",
                sm(MatchPattern::Exact("jason".into())),
                false,
            )],
            ..case("header absent", p("/"), "/", false)
        },
        Case {
            headers: vec![hm("x-v", sm(MatchPattern::Prefix("v1".into())), false)],
            req_headers: &[("x-v", "v1.2")],
            ..case("header prefix", p("/"), "/", true)
        },
        Case {
            headers: vec![hm(
                "x-v",
                sm(MatchPattern::SafeRegex(regex("v[12]"))),
                false,
            )],
            req_headers: &[("x-v", "v2")],
            ..case("header regex", p("/"), "/", true)
        },
        Case {
            headers: vec![hm(
                "x-v",
                sm(MatchPattern::SafeRegex(regex("v[12]"))),
                false,
            )],
            req_headers: &[("x-v", "v22")],
            ..case("header regex anchored", p("/"), "/", false)
        },
        Case {
            headers: vec![hm("x-v", HeaderMatchSpecifier::PresentMatch(true), false)],
            req_headers: &[("x-v", "")],
            ..case("header present", p("/"), "/", true)
        },
        Case {
            headers: vec![hm("x-v", HeaderMatchSpecifier::PresentMatch(true), false)],
            ..case("header not present", p("/"), "/", false)
        },
        Case {
            headers: vec![hm("x-v", sm(MatchPattern::Exact("a".into())), true)],
            req_headers: &[("x-v", "b")],
            ..case("header inverted", p("/"), "/", true)
        },
        Case {
            headers: vec![hm("x-v", sm(MatchPattern::Exact("a".into())), true)],
            ..case("inverted matches absent header", p("/"), "/", true)
        },
        Case {
            headers: vec![hm("x-v", sm(MatchPattern::Exact("a,b".into())), false)],
            req_headers: &[("x-v", "a"), ("x-v", "b")],
            ..case("repeated header joined", p("/"), "/", true)
        },
        Case {
            headers: vec![hm(":method", sm(MatchPattern::Exact("POST".into())), false)],
            method: "POST",
            ..case("method hit", p("/"), "/", true)
        },
        Case {
            headers: vec![hm(":method", sm(MatchPattern::Exact("POST".into())), false)],
            ..case("method miss", p("/"), "/", false)
        },
        Case {
            headers: vec![hm(
                ":authority",
                sm(MatchPattern::Prefix("reviews".into())),
                false,
            )],
            ..case("authority pseudo-header", p("/"), "/", true)
        },
        Case {
            headers: vec![hm(":path", sm(MatchPattern::Suffix("=1".into())), false)],
            ..case("path pseudo-header has query", p("/"), "/a?x=1", true)
        },
    ];
    for c in cases {
        let r = xroute(c.path.clone(), c.headers.clone(), "c");
        let mut r = r;
        if let Some(m) = r.r#match.as_mut() {
            m.case_sensitive = c.case_sensitive.map(|value| BoolValue { value });
        }
        let route = convert_route(&r).unwrap_or_else(|e| panic!("case {}: {e}", c.name));
        assert_eq!(
            matches(&route.matcher, c.method, c.req_path, c.req_headers),
            c.want,
            "case {}",
            c.name
        );
    }
}

#[test]
fn first_matching_route_wins() {
    let rc = table(vec![(
        "reviews",
        vec!["*"],
        vec![
            xroute(
                PathSpecifier::Prefix("/".into()),
                vec![hm(
                    "end-user",
                    sm(MatchPattern::Exact("jason".into())),
                    false,
                )],
                "v2",
            ),
            xroute(PathSpecifier::Prefix("/api".into()), vec![], "api"),
            xroute(PathSpecifier::Prefix("/".into()), vec![], "v1"),
        ],
    )]);
    let rc = RouteConfig::try_from(&rc).expect("valid");
    let vh = rc.find_virtual_host("reviews:9080").expect("vhost");
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            "jason goes to v2 even on /api",
            "/api",
            &[("end-user", "jason")],
            "v2",
        ),
        ("api before catch-all", "/api/x", &[], "api"),
        ("catch-all last", "/", &[], "v1"),
    ];
    for (name, path, headers, want) in cases {
        let mut h = http::HeaderMap::new();
        for (k, v) in *headers {
            h.insert(
                http::header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                http::HeaderValue::from_str(v).expect("value"),
            );
        }
        let req = RequestView {
            method: &http::Method::GET,
            authority: "reviews:9080",
            path_and_query: path,
            scheme: "http",
            headers: &h,
        };
        let route = vh.find_route(&req).expect(name);
        match &route.action.target {
            Target::Cluster(c) => assert_eq!(c, want, "case {name}"),
            other => panic!("case {name}: {other:?}"),
        }
    }
}

#[test]
fn domain_matching_table() {
    let rc = table(vec![
        (
            "reviews",
            vec![
                "reviews",
                "reviews:9080",
                "Reviews.Default.svc.cluster.local",
            ],
            vec![],
        ),
        ("ratings-port-only", vec!["ratings:9080"], vec![]),
        ("wild-suffix", vec!["*.example.com"], vec![]),
        ("wild-longer-suffix", vec!["*.api.example.com"], vec![]),
        ("wild-prefix", vec!["static.*"], vec![]),
        ("catch-all", vec!["*"], vec![]),
    ]);
    let rc = RouteConfig::try_from(&rc).expect("valid");
    let cases: &[(&str, &str, &str)] = &[
        ("bare host", "reviews", "reviews"),
        ("host with port", "reviews:9080", "reviews"),
        (
            "host with other port matches bare domain",
            "reviews:1234",
            "reviews",
        ),
        (
            "case-insensitive",
            "REVIEWS.default.svc.cluster.local:9080",
            "reviews",
        ),
        (
            "port-only domain with port",
            "ratings:9080",
            "ratings-port-only",
        ),
        ("port-only domain without port", "ratings", "catch-all"),
        ("suffix wildcard", "a.example.com", "wild-suffix"),
        (
            "longest suffix wins",
            "x.api.example.com",
            "wild-longer-suffix",
        ),
        ("suffix needs a label", "example.com", "catch-all"),
        ("prefix wildcard", "static.local:80", "wild-prefix"),
        ("unknown host", "details:9080", "catch-all"),
    ];
    for (name, authority, want) in cases {
        let vh = rc.find_virtual_host(authority).expect(name);
        assert_eq!(vh.name, *want, "case {name}");
    }
    let no_catch_all =
        RouteConfig::try_from(&table(vec![("r", vec!["reviews"], vec![])])).expect("valid");
    assert!(
        no_catch_all.find_virtual_host("details").is_none(),
        "no vhost without catch-all"
    );

    // A mesh-sized table (indexed): every host found, the first vhost in order wins a shared domain,
    // and a host with a port that only a later vhost lists exactly still goes to the earliest match.
    let names: Vec<String> = (0..1000).map(|i| format!("svc-{i}")).collect();
    let mut vhosts: Vec<(&str, Vec<&str>, Vec<XRoute>)> = names
        .iter()
        .map(|n| (n.as_str(), vec![n.as_str()], vec![]))
        .collect();
    vhosts.push(("dup", vec!["svc-7", "svc-8:80"], vec![]));
    let big = RouteConfig::try_from(&table(vhosts)).expect("valid");
    for i in [0, 7, 500, 999] {
        let want = format!("svc-{i}");
        assert_eq!(
            big.find_virtual_host(&format!("{want}:80"))
                .expect("found")
                .name,
            want
        );
    }
    assert_eq!(
        big.find_virtual_host("svc-8:80").expect("found").name,
        "svc-8"
    );
    assert!(big.find_virtual_host("svc-1000").is_none());
}

#[test]
fn fault_percentages() {
    let cases: &[(&str, u32, i32, u32)] = &[
        ("hundred", 50, 0, 500_000),
        ("ten thousand", 25, 1, 2_500),
        ("million", 1, 2, 1),
        ("over 100% caps", 200, 0, 1_000_000),
        ("zero", 0, 2, 0),
    ];
    for (name, numerator, denominator, want) in cases {
        let p = Percent::from_fractional(&FractionalPercent {
            numerator: *numerator,
            denominator: *denominator,
        })
        .expect(name);
        assert_eq!(p.per_million, *want, "case {name}");
    }
    let err = Percent::from_fractional(&FractionalPercent {
        numerator: 1,
        denominator: 7,
    })
    .expect_err("bad denominator");
    assert_eq!(err.to_string(), "percentage has unknown denominator 7");
    let half = Percent {
        per_million: 500_000,
    };
    assert!(half.hits(0) && half.hits(499_999) && !half.hits(500_000));
    assert!(!Percent { per_million: 0 }.hits(0), "0% never hits");
    assert!(
        Percent {
            per_million: 1_000_000
        }
        .hits(999_999),
        "100% always hits"
    );
}

#[test]
fn retry_on_parsing() {
    let cases: &[(&str, &str, RetryOn)] = &[
        ("empty", "", RetryOn::default()),
        ("5xx", "5xx", RetryOn::FIVE_XX),
        (
            "list with spaces",
            "gateway-error, connect-failure",
            RetryOn(RetryOn::GATEWAY_ERROR.0 | RetryOn::CONNECT_FAILURE.0),
        ),
        (
            "istio default",
            "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
            RetryOn(
                RetryOn::CONNECT_FAILURE.0 | RetryOn::REFUSED_STREAM.0 | RetryOn::STATUS_CODES.0,
            ),
        ),
        (
            "reset and 4xx",
            "reset,retriable-4xx",
            RetryOn(RetryOn::RESET.0 | RetryOn::FOUR_XX.0),
        ),
        (
            "reset-before-request",
            "reset-before-request",
            RetryOn::CONNECT_FAILURE,
        ),
    ];
    for (name, s, want) in cases {
        assert_eq!(RetryOn::parse(s).expect(name), *want, "case {name}");
    }
    let err = RetryOn::parse("5xx,bogus").expect_err("unknown");
    assert_eq!(err.to_string(), "retry_on: unknown condition \"bogus\"");
}

#[test]
fn retry_policy_decisions() {
    use crate::error::RetryClass as C;
    let policy = |on: &str, codes: Vec<u16>| RetryPolicy {
        on: RetryOn::parse(on).expect("parses"),
        num_retries: 2,
        per_try_timeout: None,
        status_codes: codes,
    };
    let cases: Vec<(&str, RetryPolicy, Result<u16, C>, bool)> = vec![
        ("5xx retries 503", policy("5xx", vec![]), Ok(503), true),
        ("5xx retries 500", policy("5xx", vec![]), Ok(500), true),
        ("5xx not 404", policy("5xx", vec![]), Ok(404), false),
        (
            "5xx retries connect failure",
            policy("5xx", vec![]),
            Err(C::ConnectFailure),
            true,
        ),
        (
            "5xx retries timeout",
            policy("5xx", vec![]),
            Err(C::Timeout),
            true,
        ),
        (
            "gateway-error not 500",
            policy("gateway-error", vec![]),
            Ok(500),
            false,
        ),
        (
            "gateway-error 502",
            policy("gateway-error", vec![]),
            Ok(502),
            true,
        ),
        (
            "connect-failure not 503",
            policy("connect-failure", vec![]),
            Ok(503),
            false,
        ),
        (
            "connect-failure not reset",
            policy("connect-failure", vec![]),
            Err(C::Reset),
            false,
        ),
        (
            "reset retries reset",
            policy("reset", vec![]),
            Err(C::Reset),
            true,
        ),
        (
            "status codes",
            policy("retriable-status-codes", vec![418]),
            Ok(418),
            true,
        ),
        (
            "status codes need the condition",
            policy("5xx", vec![418]),
            Ok(418),
            false,
        ),
        (
            "retriable-4xx is 409",
            policy("retriable-4xx", vec![]),
            Ok(409),
            true,
        ),
        (
            "nothing retries never",
            policy("5xx", vec![]),
            Err(C::Never),
            false,
        ),
    ];
    for (name, p, outcome, want) in cases {
        let got = match outcome {
            Ok(s) => p.retries_status(s),
            Err(c) => p.retries_failure(c),
        };
        assert_eq!(got, want, "case {name}");
    }
}

#[test]
fn conversion_errors_name_the_place() {
    let bad_regex = table(vec![(
        "reviews.default.svc.cluster.local:9080",
        vec!["reviews"],
        vec![
            xroute(PathSpecifier::Prefix("/".into()), vec![], "ok"),
            xroute(PathSpecifier::SafeRegex(regex("(")), vec![], "c"),
        ],
    )]);
    let err = crate::config::ConfigError::Route {
        name: "9080".into(),
        source: RouteConfig::try_from(&bad_regex).expect_err("bad regex"),
    };
    let msg = err.chain();
    assert!(
        msg.starts_with(
            "route config \"9080\": virtual host \"reviews.default.svc.cluster.local:9080\": route 1: invalid regex \"(\": "
        ),
        "{msg}"
    );

    let mut bad_header = xroute(
        PathSpecifier::Prefix("/".into()),
        vec![hm("x", sm(MatchPattern::SafeRegex(regex("[a-"))), false)],
        "c",
    );
    let err = convert_route(&bad_header).expect_err("bad header regex");
    assert!(err.to_string().contains("invalid regex \"[a-\""), "{err}");
    // Over the size limit: 1 MB of automaton (Unicode \w), refused in milliseconds rather than built.
    let big = xroute(PathSpecifier::SafeRegex(regex(r"\w{1,100}")), vec![], "c");
    let err = convert_route(&big).expect_err("regex over the size limit");
    assert_eq!(
        crate::config::ConfigError::Route {
            name: "9080".into(),
            source: err,
        }
        .chain(),
        "route config \"9080\": invalid regex \"\\\\w{1,100}\": Compiled regex exceeds size limit of 1048576 bytes."
    );
    bad_header.r#match = None;
    bad_header.action = None;
    let err = convert_route(&bad_header).expect_err("no action");
    assert_eq!(err.to_string(), "unsupported route action (none)");

    let mut r = xroute(PathSpecifier::Prefix("/".into()), vec![], "c");
    if let Some(Action::Route(a)) = r.action.as_mut() {
        a.retry_policy = Some(weft_xds::pb::envoy::config::route::v3::RetryPolicy {
            retry_on: "sometimes".into(),
            ..Default::default()
        });
    }
    let err = convert_route(&r).expect_err("bad retry_on");
    assert_eq!(err.to_string(), "retry_on: unknown condition \"sometimes\"");
}

#[test]
fn ports_are_stripped_only_when_they_are_ports() {
    assert_eq!(
        strip_port("reviews.default.svc:9080"),
        "reviews.default.svc"
    );
    assert_eq!(strip_port("reviews"), "reviews");
    assert_eq!(strip_port("[::1]:8080"), "[::1]");
    assert_eq!(strip_port("[::1]"), "[::1]");
    assert_eq!(strip_port("host:"), "host:");
    assert_eq!(strip_port("host:http"), "host:http");
    assert_eq!(strip_port("a:b:80"), "a:b");
}
