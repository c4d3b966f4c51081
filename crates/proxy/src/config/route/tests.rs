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
        match route.forward().map(|a| &a.target).expect("forwards") {
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

fn prefix(p: &str) -> PathMatch {
    PathMatch::Prefix(p.into())
}

#[test]
fn path_rewrites_replace_what_the_route_matched() {
    let re = |p: &str, s: &str| {
        PathRewrite::Regex(regex::Regex::new(p).expect("regex"), super::substitution(s))
    };
    let cases: Vec<(&str, PathRewrite, PathMatch, &str, Option<&str>)> = vec![
        ("keep", PathRewrite::Keep, prefix("/"), "/a?x=1", None),
        (
            "prefix",
            PathRewrite::Prefix("/v2".into()),
            prefix("/v1"),
            "/v1/users?x=1",
            Some("/v2/users?x=1"),
        ),
        (
            "prefix to root",
            PathRewrite::Prefix("/".into()),
            prefix("/api/"),
            "/api/x",
            Some("/x"),
        ),
        (
            "exact: whole path, query kept",
            PathRewrite::Prefix("/new".into()),
            PathMatch::Exact("/old".into()),
            "/old?q",
            Some("/new?q"),
        ),
        (
            "regex match: whole path",
            PathRewrite::Prefix("/z".into()),
            PathMatch::Regex(regex::Regex::new("^/c.*$").expect("re")),
            "/cat",
            Some("/z"),
        ),
        (
            "path keeps the query",
            PathRewrite::Path("/b".into()),
            prefix("/"),
            "/a?x=1",
            Some("/b?x=1"),
        ),
        (
            "path with its own query",
            PathRewrite::Path("/b?y=2".into()),
            prefix("/"),
            "/a?x=1",
            Some("/b?y=2"),
        ),
        (
            "regex with a group, query kept",
            re("^/x/(.*)$", "/\\1/y"),
            prefix("/"),
            "/x/abc?q=1",
            Some("/abc/y?q=1"),
        ),
        (
            "regex dollar is literal",
            re("a", "$b"),
            prefix("/"),
            "/a",
            Some("/$b"),
        ),
        (
            "prefix longer than a case-insensitive path",
            PathRewrite::Prefix("/n".into()),
            prefix("/long"),
            "/lo",
            Some("/n"),
        ),
    ];
    for (name, rw, matched, pq, want) in cases {
        assert_eq!(rw.apply(&matched, pq).as_deref(), want, "case {name}");
    }
}

#[test]
fn redirect_locations() {
    let redirect =
        |scheme: Option<&str>, host: Option<&str>, port: u16, path: PathRewrite| Redirect {
            scheme: scheme.map(String::from),
            host: host.map(String::from),
            port,
            path,
            strip_query: false,
            status: http::StatusCode::MOVED_PERMANENTLY,
        };
    let cases = vec![
        (
            "path only",
            redirect(None, None, 0, PathRewrite::Path("/new".into())),
            "reviews:9080",
            "/old?a=1",
            "http://reviews:9080/new?a=1",
        ),
        (
            "host and https drop the port",
            redirect(Some("https"), Some("web.example"), 0, PathRewrite::Keep),
            "reviews:9080",
            "/p",
            "https://web.example/p",
        ),
        (
            "new scheme drops the request's port",
            redirect(Some("https"), None, 0, PathRewrite::Keep),
            "reviews:9080",
            "/p",
            "https://reviews/p",
        ),
        (
            "explicit port",
            redirect(None, Some("web.example:1"), 8443, PathRewrite::Keep),
            "reviews:9080",
            "/p",
            "http://web.example:8443/p",
        ),
        (
            "prefix rewrite",
            redirect(None, None, 0, PathRewrite::Prefix("/v2".into())),
            "reviews",
            "/v1/x",
            "http://reviews/v2/x",
        ),
    ];
    for (name, r, authority, pq, want) in cases {
        assert_eq!(
            r.location(&prefix("/v1"), "http", authority, pq),
            want,
            "case {name}"
        );
    }
    let mut strip = redirect(None, None, 0, PathRewrite::Keep);
    strip.strip_query = true;
    assert_eq!(
        strip.location(&prefix("/"), "http", "a", "/p?q"),
        "http://a/p"
    );
}

#[test]
fn query_parameters_match_their_first_value() {
    use xroute::query_parameter_matcher::QueryParameterMatchSpecifier as Q;
    let q = |name: &str, spec: Option<Q>| xroute::QueryParameterMatcher {
        name: name.into(),
        query_parameter_match_specifier: spec,
    };
    let exact = |v: &str| {
        Some(Q::StringMatch(StringMatcher {
            match_pattern: Some(MatchPattern::Exact(v.into())),
            ignore_case: false,
        }))
    };
    let cases: Vec<(&str, xroute::QueryParameterMatcher, &str, bool)> = vec![
        ("exact", q("v", exact("2")), "/a?x=1&v=2", true),
        ("exact, other value", q("v", exact("2")), "/a?v=3", false),
        (
            "first value counts",
            q("v", exact("2")),
            "/a?v=3&v=2",
            false,
        ),
        ("absent", q("v", exact("2")), "/a", false),
        (
            "present",
            q("debug", Some(Q::PresentMatch(true))),
            "/a?debug",
            true,
        ),
        (
            "present with a value",
            q("debug", None),
            "/a?x&debug=1",
            true,
        ),
        (
            "present, absent",
            q("debug", Some(Q::PresentMatch(true))),
            "/a?debugx=1",
            false,
        ),
        (
            "empty exact matches a bare name",
            q("k", exact("")),
            "/a?k",
            true,
        ),
        (
            "regex",
            q(
                "id",
                Some(Q::StringMatch(StringMatcher {
                    match_pattern: Some(MatchPattern::SafeRegex(regex("[0-9]+"))),
                    ignore_case: false,
                })),
            ),
            "/a?id=42",
            true,
        ),
    ];
    let h = http::HeaderMap::new();
    for (name, qm, pq, want) in cases {
        let mut r = xroute(PathSpecifier::Prefix("/".into()), vec![], "c");
        if let Some(m) = r.r#match.as_mut() {
            m.query_parameters = vec![qm];
        }
        let route = convert_route(&r).expect(name);
        let req = RequestView {
            method: &http::Method::GET,
            authority: "a",
            path_and_query: pq,
            scheme: "http",
            headers: &h,
        };
        assert_eq!(route.matcher.matches(&req), want, "case {name}");
    }
}

#[test]
fn answering_actions_convert_and_bad_ones_are_named() {
    use weft_xds::pb::envoy::config::core::v3::{data_source::Specifier, DataSource};
    use xroute::redirect_action::{PathRewriteSpecifier, SchemeRewriteSpecifier};
    let with = |action: Action| XRoute {
        r#match: Some(XRouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(action),
        ..Default::default()
    };
    let redirect = with(Action::Redirect(xroute::RedirectAction {
        host_redirect: "web.example".into(),
        response_code: 4,
        scheme_rewrite_specifier: Some(SchemeRewriteSpecifier::SchemeRedirect("https".into())),
        path_rewrite_specifier: Some(PathRewriteSpecifier::PathRedirect("/n".into())),
        ..Default::default()
    }));
    let r = convert_route(&redirect).expect("redirect");
    let super::Action::Redirect(rd) = &r.action else {
        panic!("{:?}", r.action)
    };
    assert_eq!(rd.status, http::StatusCode::PERMANENT_REDIRECT);
    assert!(r.forward().is_none());

    let direct = with(Action::DirectResponse(xroute::DirectResponseAction {
        status: 418,
        body: Some(DataSource {
            specifier: Some(Specifier::InlineString("teapot".into())),
            ..Default::default()
        }),
        ..Default::default()
    }));
    let r = convert_route(&direct).expect("direct");
    let super::Action::Direct(d) = &r.action else {
        panic!("{:?}", r.action)
    };
    assert_eq!((d.status.as_u16(), &d.body[..]), (418, &b"teapot"[..]));

    let bad: Vec<(&str, XRoute, &str)> = vec![
        (
            "redirect code",
            with(Action::Redirect(xroute::RedirectAction {
                response_code: 9,
                ..Default::default()
            })),
            "redirect: response_code: 9 is not a redirect code",
        ),
        (
            "redirect host",
            with(Action::Redirect(xroute::RedirectAction {
                host_redirect: "a b".into(),
                ..Default::default()
            })),
            "redirect: host_redirect: \"a b\" is not a host",
        ),
        (
            "redirect port",
            with(Action::Redirect(xroute::RedirectAction {
                port_redirect: 70000,
                ..Default::default()
            })),
            "redirect: port_redirect: 70000 is not a port",
        ),
        (
            "direct status",
            with(Action::DirectResponse(xroute::DirectResponseAction {
                status: 100,
                ..Default::default()
            })),
            "direct_response: status 100 is not 200 to 599",
        ),
        (
            "direct body from a file",
            with(Action::DirectResponse(xroute::DirectResponseAction {
                status: 200,
                body: Some(DataSource {
                    specifier: Some(Specifier::Filename("/etc/passwd".into())),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            "direct_response: a body from a file is not supported",
        ),
    ];
    for (name, r, want) in bad {
        assert_eq!(
            convert_route(&r).expect_err(name).to_string(),
            want,
            "case {name}"
        );
    }
}

#[test]
fn forward_extras_convert_and_bad_ones_are_named() {
    use weft_xds::pb::envoy::config::core::v3::RuntimeFractionalPercent;
    use weft_xds::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
    use weft_xds::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute;
    use xroute::route_action::{HostRewriteSpecifier, RequestMirrorPolicy};
    let edit = |f: &dyn Fn(&mut XRouteAction)| {
        let mut r = xroute(PathSpecifier::Prefix("/".into()), vec![], "c");
        if let Some(Action::Route(a)) = r.action.as_mut() {
            f(a);
        }
        r
    };
    let good = edit(&|a| {
        a.prefix_rewrite = "/v2".into();
        a.host_rewrite_specifier = Some(HostRewriteSpecifier::HostRewriteLiteral("r:9080".into()));
        a.request_mirror_policies = vec![RequestMirrorPolicy {
            cluster: "shadow".into(),
            runtime_fraction: Some(RuntimeFractionalPercent {
                default_value: Some(FractionalPercent {
                    numerator: 25,
                    denominator: 0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }];
    });
    let r = convert_route(&good).expect("good");
    let a = r.forward().expect("forwards");
    assert!(
        matches!(a.rewrite.as_ref().map(|r| &r.path), Some(PathRewrite::Prefix(p)) if p == "/v2")
    );
    assert_eq!(a.mirrors[0].percent.per_million, 250_000);
    assert_eq!(a.mirrors[0].cluster, "shadow");

    let cors = |c: CorsPolicy| {
        let mut r = xroute(PathSpecifier::Prefix("/".into()), vec![], "c");
        r.typed_per_filter_config.insert(
            weft_xds::filter_name::CORS.into(),
            weft_xds::pack(weft_xds::type_url::CORS_POLICY, &c),
        );
        r
    };
    let ok = convert_route(&cors(CorsPolicy {
        allow_origin_string_match: vec![StringMatcher {
            match_pattern: Some(MatchPattern::Exact("https://a.example".into())),
            ignore_case: false,
        }],
        allow_methods: "GET,POST".into(),
        max_age: "60".into(),
        ..Default::default()
    }))
    .expect("cors");
    let c = ok.cors.expect("cors policy");
    assert!(c.allows("https://a.example") && !c.allows("https://b.example"));
    assert!(c.forward_unmatched_preflights, "Envoy's default");

    let regex_rewrite = |re: &str| {
        edit(&|a| {
            a.regex_rewrite = Some(RegexMatchAndSubstitute {
                pattern: Some(regex(re)),
                substitution: "/".into(),
            })
        })
    };
    let bad: Vec<(&str, XRoute, &str)> = vec![
        ("regex rewrite", regex_rewrite("("), "invalid regex \"(\""),
        ("both rewrites", edit(&|a| {
            a.prefix_rewrite = "/a".into();
            a.regex_rewrite = Some(RegexMatchAndSubstitute { pattern: Some(regex("a")), substitution: "b".into() });
        }), "prefix_rewrite: only one of prefix_rewrite, regex_rewrite may be set"),
        ("host rewrite", edit(&|a| a.host_rewrite_specifier = Some(HostRewriteSpecifier::HostRewriteLiteral("a b".into()))), "host_rewrite_literal: \"a b\" is not an authority"),
        ("mirror without cluster", edit(&|a| a.request_mirror_policies = vec![RequestMirrorPolicy::default()]), "request_mirror_policies[0]: cluster is required (cluster_header is not supported)"),
        ("cors max age", cors(CorsPolicy { max_age: "1h".into(), ..Default::default() }), "typed_per_filter_config[\"envoy.filters.http.cors\"]: max_age: \"1h\" is not a number of seconds"),
    ];
    for (name, r, want) in bad {
        let err = convert_route(&r).expect_err(name).to_string();
        assert!(err.starts_with(want), "case {name}: {err}");
    }

    // A gRPC abort is a status 0 to 16.
    let fault = |code: u32| {
        let mut r = xroute(PathSpecifier::Prefix("/".into()), vec![], "c");
        r.typed_per_filter_config.insert(
            weft_xds::filter_name::FAULT.into(),
            weft_xds::pack(
                weft_xds::type_url::HTTP_FAULT,
                &HttpFault {
                    abort: Some(
                        weft_xds::pb::envoy::extensions::filters::http::fault::v3::FaultAbort {
                            error_type: Some(fault_abort::ErrorType::GrpcStatus(code)),
                            ..Default::default()
                        },
                    ),
                    ..Default::default()
                },
            ),
        );
        r
    };
    let r = convert_route(&fault(14)).expect("grpc abort");
    assert_eq!(
        r.fault.and_then(|f| f.abort).map(|a| a.0),
        Some(Abort::Grpc(14))
    );
    assert_eq!(
        convert_route(&fault(17)).expect_err("17").to_string(),
        "unsupported fault grpc_status above 16"
    );
}
