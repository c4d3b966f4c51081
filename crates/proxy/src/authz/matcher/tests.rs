//! Each matcher against hand-built subjects and request heads, and each refusal's message.
// `metadata`, `source_ip` and the legacy header specifiers: what Istio sends.
#![allow(deprecated)]

use super::*;
use crate::authz::Subject;
use weft_xds::pb::envoy::config::core::v3::TypedExtensionConfig;
use weft_xds::pb::envoy::config::rbac::v3::{permission, principal};
use weft_xds::pb::envoy::r#type::matcher::v3::{
    metadata_matcher::PathSegment, ListMatcher, RegexMatcher,
};
use weft_xds::pb::envoy::r#type::v3::{Int32Range, Int64Range};
use weft_xds::pb::google::protobuf::UInt32Value;

// === builders ===

pub(crate) fn exact(s: &str) -> XStringMatcher {
    pattern(MatchPattern::Exact(s.into()), false)
}

pub(crate) fn prefix(s: &str) -> XStringMatcher {
    pattern(MatchPattern::Prefix(s.into()), false)
}

pub(crate) fn regex(s: &str) -> XStringMatcher {
    pattern(
        MatchPattern::SafeRegex(RegexMatcher {
            regex: s.into(),
            ..Default::default()
        }),
        false,
    )
}

pub(crate) fn pattern(p: MatchPattern, ignore_case: bool) -> XStringMatcher {
    XStringMatcher {
        match_pattern: Some(p),
        ignore_case,
    }
}

pub(crate) fn perm(rule: Rule) -> XPermission {
    XPermission { rule: Some(rule) }
}

pub(crate) fn id(i: Identifier) -> XPrincipal {
    XPrincipal {
        identifier: Some(i),
    }
}

pub(crate) fn url_path(m: XStringMatcher) -> PathMatcher {
    PathMatcher {
        rule: Some(path_matcher::Rule::Path(m)),
    }
}

pub(crate) fn header(name: &str, spec: Option<HeaderMatchSpecifier>) -> XHeaderMatcher {
    XHeaderMatcher {
        name: name.into(),
        header_match_specifier: spec,
        ..Default::default()
    }
}

pub(crate) fn cidr(addr: &str, len: Option<u32>) -> CidrRange {
    CidrRange {
        address_prefix: addr.into(),
        prefix_len: len.map(|value| UInt32Value { value }),
    }
}

pub(crate) fn metadata(
    filter: &str,
    path: &[&str],
    value: value_matcher::MatchPattern,
) -> XMetadataMatcher {
    XMetadataMatcher {
        filter: filter.into(),
        path: path
            .iter()
            .map(|k| PathSegment {
                segment: Some(Segment::Key(k.to_string())),
            })
            .collect(),
        value: Some(XValueMatcher {
            match_pattern: Some(value),
        }),
        invert: false,
    }
}

/// A request head: `uri` in origin or absolute form, and headers.
pub(crate) fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).expect("request").into_parts().0
}

/// A plaintext subject from 10.0.0.1:5000 to 10.0.0.2:9080.
pub(crate) fn plain() -> Subject<'static> {
    Subject {
        source: "10.0.0.1:5000".parse().expect("addr"),
        destination: "10.0.0.2:9080".parse().expect("addr"),
        principal: None,
        sni: None,
        auth: None,
    }
}

fn at() -> At<'static> {
    At::root("p")
}

fn permission(rule: Rule) -> Permission {
    Permission::compile(&perm(rule), &at()).unwrap_or_else(|e| panic!("compiles: {e}"))
}

fn principal_of(i: Identifier) -> Principal {
    Principal::compile(&id(i), &at()).unwrap_or_else(|e| panic!("compiles: {e}"))
}

fn http_input<'a>(s: &'a Subject<'a>, p: &'a http::request::Parts) -> Input<'a> {
    Input {
        subject: s,
        http: Some(p),
    }
}

fn tcp_input<'a>(s: &'a Subject<'a>) -> Input<'a> {
    Input {
        subject: s,
        http: None,
    }
}

fn refusal(rule: Rule) -> String {
    match Permission::compile(&perm(rule), &at()) {
        Ok(p) => panic!("compiled: {p:?}"),
        Err(e) => error_chain(&e),
    }
}

fn refusal_id(i: Identifier) -> String {
    match Principal::compile(&id(i), &at()) {
        Ok(p) => panic!("compiled: {p:?}"),
        Err(e) => error_chain(&e),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

// === strings ===

#[test]
fn string_matchers() {
    let m = |p: MatchPattern, ic: bool| {
        StrMatch::compile(&pattern(p, ic), &at()).unwrap_or_else(|e| panic!("{e}"))
    };
    type P = MatchPattern;
    let re = |s: &str| {
        P::SafeRegex(RegexMatcher {
            regex: s.into(),
            ..Default::default()
        })
    };
    let cases: Vec<(&str, StrMatch, &str, bool)> = vec![
        ("exact", m(P::Exact("/admin".into()), false), "/admin", true),
        (
            "exact, longer",
            m(P::Exact("/admin".into()), false),
            "/admin/x",
            false,
        ),
        (
            "exact, case",
            m(P::Exact("/admin".into()), false),
            "/ADMIN",
            false,
        ),
        (
            "exact, ignore case",
            m(P::Exact("/Admin".into()), true),
            "/aDMIN",
            true,
        ),
        ("exact empty", m(P::Exact(String::new()), false), "", true),
        (
            "prefix",
            m(P::Prefix("/api/".into()), false),
            "/api/v1",
            true,
        ),
        (
            "prefix, shorter value",
            m(P::Prefix("/api/".into()), false),
            "/api",
            false,
        ),
        (
            "prefix, ignore case",
            m(P::Prefix("/API/".into()), true),
            "/api/v1",
            true,
        ),
        ("suffix", m(P::Suffix(".svc".into()), false), "a.svc", true),
        (
            "suffix, ignore case",
            m(P::Suffix(".SVC".into()), true),
            "a.svc",
            true,
        ),
        (
            "suffix, no",
            m(P::Suffix(".svc".into()), false),
            "a.svcx",
            false,
        ),
        (
            "contains",
            m(P::Contains("/ns/".into()), false),
            "td/ns/x",
            true,
        ),
        (
            "contains, ignore case",
            m(P::Contains("/NS/".into()), true),
            "td/ns/x",
            true,
        ),
        (
            "contains, no",
            m(P::Contains("/ns/".into()), false),
            "td/nsx",
            false,
        ),
        (
            "regex, whole value",
            m(re(".*/ns/foo/.*"), false),
            "spiffe://td/ns/foo/sa/x",
            true,
        ),
        ("regex, not a part", m(re("foo"), false), "xfoox", false),
        (
            "regex, alternation anchored",
            m(re("a|b"), false),
            "ab",
            false,
        ),
        (
            "regex ignores ignore_case (Envoy)",
            m(re("abc"), true),
            "ABC",
            false,
        ),
        ("regex .+ needs a character", m(re(".+"), false), "", false),
    ];
    for (name, m, v, want) in cases {
        assert_eq!(m.matches(v.as_bytes()), want, "{name}: {v:?}");
    }
}

#[test]
fn string_matcher_refusals() {
    let refused = |p: Option<MatchPattern>| {
        let m = XStringMatcher {
            match_pattern: p,
            ignore_case: false,
        };
        match StrMatch::compile(&m, &At::root("requested_server_name")) {
            Ok(m) => panic!("compiled: {m:?}"),
            Err(e) => error_chain(&e),
        }
    };
    let cases: Vec<(Option<MatchPattern>, &str)> = vec![
        (None, "requested_server_name: no match pattern is set"),
        (
            Some(MatchPattern::Prefix(String::new())),
            "requested_server_name.prefix: is empty (Envoy requires at least one character)",
        ),
        (
            Some(MatchPattern::Suffix(String::new())),
            "requested_server_name.suffix: is empty (Envoy requires at least one character)",
        ),
        (
            Some(MatchPattern::Custom(Default::default())),
            "requested_server_name.custom: the string matcher extension \"\" is not supported",
        ),
    ];
    for (p, want) in cases {
        assert_eq!(refused(p), want);
    }
    let e = refused(Some(regex("(").match_pattern.expect("set")));
    assert!(
        e.starts_with("requested_server_name.safe_regex.regex: regex \"(\" does not compile: regex parse error"),
        "{e}"
    );
    // A regex over the size limit is refused quickly, as routes' are.
    let e = refused(Some(regex(r"\w{1000}").match_pattern.expect("set")));
    assert!(e.contains("exceeds size limit"), "{e}");
}

// === headers ===

#[test]
fn header_matchers() {
    use HeaderMatchSpecifier as H;
    let s = plain();
    let req = parts(
        "GET",
        "/productpage?u=1",
        &[
            ("host", "productpage:9080"),
            ("x-user", "alice"),
            ("x-tag", "a"),
            ("x-tag", "b"),
            ("x-count", "42"),
        ],
    );
    let sm = |m: XStringMatcher| Some(H::StringMatch(m));
    let inverted = |mut h: XHeaderMatcher| {
        h.invert_match = true;
        h
    };
    let cases: Vec<(&str, XHeaderMatcher, bool)> = vec![
        ("exact", header("x-user", sm(exact("alice"))), true),
        ("exact, other", header("x-user", sm(exact("bob"))), false),
        ("name case", header("X-User", sm(exact("alice"))), true),
        (
            "legacy exact",
            header("x-user", Some(H::ExactMatch("alice".into()))),
            true,
        ),
        (
            "legacy exact empty: any value",
            header("x-user", Some(H::ExactMatch(String::new()))),
            true,
        ),
        (
            "legacy prefix",
            header("x-user", Some(H::PrefixMatch("al".into()))),
            true,
        ),
        (
            "legacy suffix",
            header("x-user", Some(H::SuffixMatch("ce".into()))),
            true,
        ),
        (
            "legacy contains",
            header("x-user", Some(H::ContainsMatch("lic".into()))),
            true,
        ),
        (
            "legacy regex",
            header(
                "x-user",
                Some(H::SafeRegexMatch(RegexMatcher {
                    regex: "a.*e".into(),
                    ..Default::default()
                })),
            ),
            true,
        ),
        ("no specifier: present", header("x-user", None), true),
        (
            "present",
            header("x-user", Some(H::PresentMatch(true))),
            true,
        ),
        (
            "present, missing",
            header("x-none", Some(H::PresentMatch(true))),
            false,
        ),
        (
            "absent, missing",
            header("x-none", Some(H::PresentMatch(false))),
            true,
        ),
        (
            "absent, present",
            header("x-user", Some(H::PresentMatch(false))),
            false,
        ),
        ("repeated, joined", header("x-tag", sm(exact("a,b"))), true),
        (
            "repeated, one value",
            header("x-tag", sm(exact("a"))),
            false,
        ),
        (
            "range in",
            header(
                "x-count",
                Some(H::RangeMatch(Int64Range { start: 40, end: 43 })),
            ),
            true,
        ),
        (
            "range end excluded",
            header(
                "x-count",
                Some(H::RangeMatch(Int64Range { start: 0, end: 42 })),
            ),
            false,
        ),
        (
            "range, not a number",
            header(
                "x-user",
                Some(H::RangeMatch(Int64Range { start: 0, end: 9 })),
            ),
            false,
        ),
        (":method", header(":method", sm(exact("GET"))), true),
        (
            ":authority from host",
            header(":authority", sm(exact("productpage:9080"))),
            true,
        ),
        (
            "host is the authority",
            header("host", sm(prefix("productpage"))),
            true,
        ),
        (
            ":path has the query",
            header(":path", sm(exact("/productpage?u=1"))),
            true,
        ),
        (":scheme", header(":scheme", sm(exact("http"))), true),
        // Envoy: an inverted matcher does not match a missing header, except presence.
        (
            "inverted",
            inverted(header("x-user", sm(exact("bob")))),
            true,
        ),
        (
            "inverted, missing",
            inverted(header("x-none", sm(exact("bob")))),
            false,
        ),
        (
            "inverted present, missing",
            inverted(header("x-none", Some(H::PresentMatch(true)))),
            true,
        ),
        (
            "inverted absent, missing",
            inverted(header("x-none", Some(H::PresentMatch(false)))),
            false,
        ),
        (
            "missing as empty",
            XHeaderMatcher {
                treat_missing_header_as_empty: true,
                ..header("x-none", sm(regex("^$|x")))
            },
            true,
        ),
    ];
    for (name, h, want) in cases {
        let p = permission(Rule::Header(h.clone()));
        assert_eq!(p.matches(&http_input(&s, &req)), want, "{name}");
        // The same matcher as a principal.
        let i = principal_of(Identifier::Header(h));
        assert_eq!(i.matches(&http_input(&s, &req)), want, "{name} (principal)");
    }
    // An absolute-form request's authority is its URI's.
    let abs = parts("POST", "http://reviews:9080/r", &[("host", "reviews:9080")]);
    let p = permission(Rule::Header(header(
        ":authority",
        sm(exact("reviews:9080")),
    )));
    assert!(p.matches(&http_input(&s, &abs)));
    // A TCP connection has no header: only absence matches.
    let tcp = tcp_input(&s);
    assert!(!permission(Rule::Header(header(":method", sm(exact("GET"))))).matches(&tcp));
    assert!(permission(Rule::Header(header("x-user", Some(H::PresentMatch(false))))).matches(&tcp));
}

#[test]
fn header_matcher_refusals() {
    use HeaderMatchSpecifier as H;
    let cases: Vec<(XHeaderMatcher, &str)> = vec![
        (
            header(":protocol", None),
            "p.header.name: the pseudo-header \":protocol\" is not supported",
        ),
        (
            header("bad name", None),
            "p.header.name: \"bad name\" is not a header name",
        ),
        (
            header("x", Some(H::PrefixMatch(String::new()))),
            "p.header.prefix_match: is empty",
        ),
        (
            header("x", Some(H::RangeMatch(Int64Range { start: 5, end: 1 }))),
            "p.header.range_match: start 5 is after end 1",
        ),
    ];
    for (h, want) in cases {
        assert_eq!(refusal(Rule::Header(h)), want);
    }
}

// === paths ===

#[test]
fn url_paths_leave_the_query_out() {
    let s = plain();
    let p = permission(Rule::UrlPath(url_path(exact("/admin"))));
    for (uri, want) in [
        ("/admin", true),
        ("/admin?x=1", true),
        ("/admin/", false),
        ("http://h/admin?q", true),
        ("/other?/admin", false),
    ] {
        assert_eq!(
            p.matches(&http_input(&s, &parts("GET", uri, &[]))),
            want,
            "{uri}"
        );
    }
    assert!(!p.matches(&tcp_input(&s)), "no path on TCP");
    let i = principal_of(Identifier::UrlPath(url_path(prefix("/api/"))));
    assert!(i.matches(&http_input(&s, &parts("GET", "/api/v1", &[]))));
    assert!(!i.matches(&tcp_input(&s)));
    assert_eq!(
        refusal(Rule::UrlPath(PathMatcher { rule: None })),
        "p.url_path: no rule is set"
    );
}

fn template(t: &str) -> Rule {
    Rule::UriTemplate(TypedExtensionConfig {
        name: "envoy.path.match.uri_template.uri_template_matcher".into(),
        typed_config: Some(weft_xds::pack(
            URI_TEMPLATE_TYPE,
            &UriTemplateMatchConfig {
                path_template: t.into(),
            },
        )),
    })
}

#[test]
fn uri_templates_as_istio_sends_them() {
    let s = plain();
    let cases: &[(&str, &str, bool)] = &[
        ("/store/*/items", "/store/1/items", true),
        ("/store/*/items", "/store/1/2/items", false),
        ("/store/*/items", "/store//items", false),
        ("/store/*/items", "/store/1/items?x=1", true),
        ("/store/**", "/store/a/b/c", true),
        ("/store/**", "/store/", true),
        ("/store/**", "/store", false),
        ("/**.mpd", "/content/123/manifest.mpd", true),
        ("/**.mpd", "/content/123/manifest.mp4", false),
        ("/a.b/*", "/aXb/c", false),
        ("/", "/", true),
    ];
    for (t, path, want) in cases {
        let p = permission(template(t));
        assert_eq!(
            p.matches(&http_input(&s, &parts("GET", path, &[]))),
            *want,
            "{t} on {path}"
        );
    }
    let refusals: &[(&str, &str)] = &[
        ("store/*", "does not start with /"),
        (
            "/{name}/x",
            "has a named variable, which weft does not support",
        ),
        ("/**/x", "has something after **, which must come last"),
        ("/a//b", "has an empty segment"),
        ("/a*b", "has a character a path template may not hold"),
    ];
    for (t, why) in refusals {
        assert_eq!(
            refusal(template(t)),
            format!("p.uri_template.typed_config.path_template: {t:?} {why}")
        );
    }
    let other = Rule::UriTemplate(TypedExtensionConfig {
        name: "x".into(),
        typed_config: Some(weft_xds::pack(
            "type.googleapis.com/x.Y",
            &UriTemplateMatchConfig::default(),
        )),
    });
    assert_eq!(
        refusal(other),
        format!("p.uri_template.typed_config: type.googleapis.com/x.Y (only {URI_TEMPLATE_TYPE} is) is not supported")
    );
}

// === connection attributes ===

#[test]
fn destination_and_sni() {
    let mut s = plain();
    let req = parts("GET", "/", &[]);
    let cases: Vec<(&str, Rule, bool)> = vec![
        ("port", Rule::DestinationPort(9080), true),
        ("other port", Rule::DestinationPort(9081), false),
        (
            "range",
            Rule::DestinationPortRange(Int32Range {
                start: 9000,
                end: 9081,
            }),
            true,
        ),
        (
            "range end excluded",
            Rule::DestinationPortRange(Int32Range {
                start: 9000,
                end: 9080,
            }),
            false,
        ),
        (
            "ip /32",
            Rule::DestinationIp(cidr("10.0.0.2", Some(32))),
            true,
        ),
        (
            "ip /24",
            Rule::DestinationIp(cidr("10.0.0.99", Some(24))),
            true,
        ),
        (
            "other ip",
            Rule::DestinationIp(cidr("10.0.1.2", Some(32))),
            false,
        ),
        (
            "no sni reads as empty",
            Rule::RequestedServerName(exact("")),
            true,
        ),
        ("sni", Rule::RequestedServerName(exact("reviews")), false),
    ];
    for (name, rule, want) in cases {
        let p = permission(rule);
        assert_eq!(p.matches(&http_input(&s, &req)), want, "{name}");
        assert_eq!(p.matches(&tcp_input(&s)), want, "{name} (tcp)");
    }
    s.sni = Some("outbound_.9080_._.reviews.default.svc.cluster.local");
    let p = permission(Rule::RequestedServerName(pattern(
        MatchPattern::Suffix(".svc.cluster.local".into()),
        false,
    )));
    assert!(p.matches(&tcp_input(&s)));
    assert_eq!(
        refusal(Rule::DestinationPort(70000)),
        "p.destination_port: 70000 is not a port"
    );
    assert_eq!(
        refusal(Rule::DestinationPortRange(Int32Range { start: 9, end: 1 })),
        "p.destination_port_range: start 9 is after end 1"
    );
}

#[test]
fn source_addresses() {
    let mut s = plain();
    let cases: Vec<(&str, CidrRange, &str, bool)> = vec![
        ("ipv4 /32", cidr("10.0.0.1", Some(32)), "10.0.0.1", true),
        (
            "ipv4 /32 other",
            cidr("10.0.0.1", Some(32)),
            "10.0.0.3",
            false,
        ),
        ("ipv4 /8", cidr("10.1.2.3", Some(8)), "10.200.0.1", true),
        ("ipv4 /0", cidr("0.0.0.0", Some(0)), "192.168.1.1", true),
        (
            "unset length is /0",
            cidr("1.2.3.4", None),
            "10.9.9.9",
            true,
        ),
        (
            "ipv6 /64",
            cidr("2001:db8::", Some(64)),
            "2001:db8::7",
            true,
        ),
        (
            "ipv6 /64 other",
            cidr("2001:db8::", Some(64)),
            "2001:db9::7",
            false,
        ),
        ("families differ", cidr("0.0.0.0", Some(0)), "::1", false),
        (
            "mapped ipv4 is ipv4",
            cidr("10.0.0.0", Some(8)),
            "::ffff:10.0.0.1",
            true,
        ),
    ];
    for (name, c, from, want) in cases {
        s.source = SocketAddr::new(from.parse().expect("ip"), 1);
        for i in [
            Identifier::DirectRemoteIp(c.clone()),
            Identifier::SourceIp(c.clone()),
            Identifier::RemoteIp(c),
        ] {
            assert_eq!(principal_of(i).matches(&tcp_input(&s)), want, "{name}");
        }
    }
    assert_eq!(
        refusal_id(Identifier::DirectRemoteIp(cidr("10.0.0.0", Some(33)))),
        "p.direct_remote_ip.prefix_len: 33 is longer than an IPv4 address"
    );
    assert_eq!(
        refusal_id(Identifier::RemoteIp(cidr("10.0.0", Some(8)))),
        "p.remote_ip.address_prefix: \"10.0.0\" is not an IP address"
    );
}
use std::net::SocketAddr;

#[test]
fn authenticated_principals() {
    let auth = |m: Option<XStringMatcher>| {
        principal_of(Identifier::Authenticated(principal::Authenticated {
            principal_name: m,
        }))
    };
    let mtls = Subject {
        principal: Some("spiffe://cluster.local/ns/default/sa/productpage"),
        ..plain()
    };
    let cases: Vec<(&str, Principal, bool, bool)> = vec![
        // (name, matcher, on mutual TLS, on plaintext)
        ("any authenticated", auth(None), true, false),
        (
            "exact",
            auth(Some(exact(
                "spiffe://cluster.local/ns/default/sa/productpage",
            ))),
            true,
            false,
        ),
        (
            "other",
            auth(Some(exact("spiffe://cluster.local/ns/default/sa/x"))),
            false,
            false,
        ),
        (
            "namespace",
            auth(Some(regex(".*/ns/default/.*"))),
            true,
            false,
        ),
        ("anyone: .+", auth(Some(regex(".+"))), true, false),
        (
            "not: plaintext matches",
            Principal::Not(Box::new(auth(Some(regex(".+"))))),
            false,
            true,
        ),
    ];
    for (name, p, on_mtls, on_plain) in cases {
        assert_eq!(p.matches(&tcp_input(&mtls)), on_mtls, "{name} on mTLS");
        assert_eq!(
            p.matches(&tcp_input(&plain())),
            on_plain,
            "{name} on plaintext"
        );
    }
}

// === metadata ===

#[test]
fn jwt_metadata() {
    use value_matcher::MatchPattern as V;
    let auth: Value = serde_json::json!({
        "request.auth.principal": "https://issuer.example/alice",
        "request.auth.audiences": "bookinfo",
        "request.auth.presenter": "web",
        "request.auth.claims": {
            "iss": "https://issuer.example",
            "sub": "alice",
            "groups": ["dev", "admin"],
            "nested": {"level": "deep"},
            "n": 3,
            "verified": true,
        }
    });
    let s = Subject {
        auth: Some(&auth),
        ..plain()
    };
    let string = |m| V::StringMatch(m);
    let one_of = |m| {
        V::ListMatch(Box::new(ListMatcher {
            match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(XValueMatcher {
                match_pattern: Some(V::StringMatch(m)),
            }))),
        }))
    };
    let cases: Vec<(&str, XMetadataMatcher, bool)> = vec![
        (
            "request principal",
            metadata(
                ISTIO_AUTHN,
                &["request.auth.principal"],
                string(exact("https://issuer.example/alice")),
            ),
            true,
        ),
        (
            "any request principal",
            metadata(
                ISTIO_AUTHN,
                &["request.auth.principal"],
                string(regex(".+")),
            ),
            true,
        ),
        (
            "audience",
            metadata(
                ISTIO_AUTHN,
                &["request.auth.audiences"],
                string(exact("bookinfo")),
            ),
            true,
        ),
        (
            "presenter",
            metadata(
                ISTIO_AUTHN,
                &["request.auth.presenter"],
                string(exact("other")),
            ),
            false,
        ),
        (
            "claim in list",
            metadata(
                ISTIO_AUTHN,
                &["request.auth.claims", "groups"],
                one_of(exact("admin")),
            ),
            true,
        ),
        (
            "claim not in list",
            metadata(
                ISTIO_AUTHN,
                &["request.auth.claims", "groups"],
                one_of(exact("ops")),
            ),
            false,
        ),
        (
            "list match on a string",
            metadata(
                ISTIO_AUTHN,
                &["request.auth.claims", "sub"],
                one_of(exact("alice")),
            ),
            false,
        ),
        (
            "nested claim",
            metadata(
                ISTIO_AUTHN,
                &["request.auth.claims", "nested", "level"],
                string(exact("deep")),
            ),
            true,
        ),
        (
            "present",
            metadata(
                ISTIO_AUTHN,
                &["request.auth.claims", "sub"],
                V::PresentMatch(true),
            ),
            true,
        ),
        (
            "missing is not present",
            metadata(
                ISTIO_AUTHN,
                &["request.auth.claims", "none"],
                V::PresentMatch(true),
            ),
            false,
        ),
        (
            "missing is not null",
            metadata(
                ISTIO_AUTHN,
                &["request.auth.claims", "none"],
                V::NullMatch(Default::default()),
            ),
            false,
        ),
        (
            "bool",
            metadata(
                ISTIO_AUTHN,
                &["request.auth.claims", "verified"],
                V::BoolMatch(true),
            ),
            true,
        ),
        (
            "number",
            metadata(
                ISTIO_AUTHN,
                &["request.auth.claims", "n"],
                V::DoubleMatch(weft_xds::pb::envoy::r#type::matcher::v3::DoubleMatcher {
                    match_pattern: Some(double_matcher::MatchPattern::Exact(3.0)),
                }),
            ),
            true,
        ),
        (
            "or",
            metadata(
                ISTIO_AUTHN,
                &["request.auth.claims", "sub"],
                V::OrMatch(weft_xds::pb::envoy::r#type::matcher::v3::OrMatcher {
                    value_matchers: vec![
                        XValueMatcher {
                            match_pattern: Some(one_of(exact("alice"))),
                        },
                        XValueMatcher {
                            match_pattern: Some(string(exact("alice"))),
                        },
                    ],
                }),
            ),
            true,
        ),
        // Current Istio: Envoy's JWT filter, claims under `payload`.
        (
            "jwt_authn iss",
            metadata(
                JWT_AUTHN,
                &["payload", "iss"],
                string(exact("https://issuer.example")),
            ),
            true,
        ),
        (
            "jwt_authn sub",
            metadata(JWT_AUTHN, &["payload", "sub"], string(exact("bob"))),
            false,
        ),
        (
            "jwt_authn list",
            metadata(JWT_AUTHN, &["payload", "groups"], one_of(exact("dev"))),
            true,
        ),
    ];
    for (name, m, want) in cases {
        let p = permission(Rule::Metadata(m.clone()));
        assert_eq!(
            p.matches(&http_input(&s, &parts("GET", "/", &[]))),
            want,
            "{name}"
        );
        let i = principal_of(Identifier::Metadata(m.clone()));
        assert_eq!(i.matches(&tcp_input(&s)), want, "{name} (principal)");
        // Inverted, it says the opposite.
        let inverted = XMetadataMatcher { invert: true, ..m };
        assert_eq!(
            principal_of(Identifier::Metadata(inverted)).matches(&tcp_input(&s)),
            !want,
            "{name} inverted"
        );
    }
    // No JWT result: nothing is present.
    let any_principal = principal_of(Identifier::Metadata(metadata(
        ISTIO_AUTHN,
        &["request.auth.principal"],
        string(regex(".+")),
    )));
    assert!(!any_principal.matches(&tcp_input(&plain())));
    // Sourced from the dynamic metadata, the same.
    let sourced = principal_of(Identifier::SourcedMetadata(SourcedMetadata {
        metadata_matcher: Some(metadata(
            ISTIO_AUTHN,
            &["request.auth.principal"],
            string(regex(".+")),
        )),
        metadata_source: MetadataSource::Dynamic as i32,
    }));
    assert!(sourced.matches(&tcp_input(&s)));
}

#[test]
fn metadata_refusals() {
    use value_matcher::MatchPattern as V;
    let present = V::PresentMatch(true);
    let cases: Vec<(XMetadataMatcher, &str)> = vec![
        (
            metadata("envoy.filters.http.ext_authz", &["x"], present.clone()),
            "p.metadata.filter: metadata of filter \"envoy.filters.http.ext_authz\" (weft has \"istio_authn\" and \"envoy.filters.http.jwt_authn\") is not supported",
        ),
        (
            metadata(JWT_AUTHN, &["https://issuer", "sub"], present.clone()),
            "p.metadata.path: under \"envoy.filters.http.jwt_authn\" only the key \"payload\" (the JWT payload) is known",
        ),
        (metadata(ISTIO_AUTHN, &[], present.clone()), "p.metadata.path: is empty"),
        (
            XMetadataMatcher {
                value: None,
                ..metadata(ISTIO_AUTHN, &["x"], present.clone())
            },
            "p.metadata.value: is not set",
        ),
    ];
    for (m, want) in cases {
        assert_eq!(refusal(Rule::Metadata(m)), want);
    }
    assert_eq!(
        refusal(Rule::SourcedMetadata(SourcedMetadata {
            metadata_matcher: Some(metadata(ISTIO_AUTHN, &["x"], present)),
            metadata_source: MetadataSource::Route as i32,
        })),
        "p.sourced_metadata.metadata_source: metadata other than DYNAMIC is not supported"
    );
}

// === combinations ===

#[test]
fn sets_and_negation() {
    let s = plain();
    let req = parts("GET", "/admin", &[]);
    let get = || {
        perm(Rule::Header(header(
            ":method",
            Some(HeaderMatchSpecifier::StringMatch(exact("GET"))),
        )))
    };
    let admin = || perm(Rule::UrlPath(url_path(exact("/admin"))));
    let other = || perm(Rule::UrlPath(url_path(exact("/other"))));
    let set = |rules| permission::Set { rules };
    let cases: Vec<(&str, Rule, bool)> = vec![
        ("any", Rule::Any(true), true),
        ("and", Rule::AndRules(set(vec![get(), admin()])), true),
        (
            "and, one fails",
            Rule::AndRules(set(vec![get(), other()])),
            false,
        ),
        ("or", Rule::OrRules(set(vec![other(), admin()])), true),
        ("or, none", Rule::OrRules(set(vec![other()])), false),
        ("not", Rule::NotRule(Box::new(other())), true),
        (
            "not not",
            Rule::NotRule(Box::new(perm(Rule::NotRule(Box::new(admin()))))),
            true,
        ),
    ];
    for (name, rule, want) in cases {
        assert_eq!(
            permission(rule).matches(&http_input(&s, &req)),
            want,
            "{name}"
        );
    }
    let ids = |ids| principal::Set { ids };
    let any = || id(Identifier::Any(true));
    let nobody = || id(Identifier::NotId(Box::new(any())));
    assert!(principal_of(Identifier::AndIds(ids(vec![any(), any()]))).matches(&tcp_input(&s)));
    assert!(!principal_of(Identifier::AndIds(ids(vec![any(), nobody()]))).matches(&tcp_input(&s)));
    assert!(principal_of(Identifier::OrIds(ids(vec![nobody(), any()]))).matches(&tcp_input(&s)));
    // What Envoy refuses, refused with the place.
    let cases: Vec<(Rule, &str)> = vec![
        (Rule::Any(false), "p.any: must be true when set"),
        (Rule::AndRules(set(vec![])), "p.and_rules.rules: is empty"),
        (
            Rule::OrRules(set(vec![admin(), XPermission { rule: None }])),
            "p.or_rules.rules[1]: no rule is set",
        ),
        (
            Rule::NotRule(Box::new(perm(Rule::AndRules(set(vec![get(), perm(Rule::UrlPath(url_path(regex("["))))]))))),
            "p.not_rule.and_rules.rules[1].url_path.path.safe_regex.regex: regex \"[\" does not compile",
        ),
        (
            Rule::Matcher(TypedExtensionConfig {
                name: "envoy.rbac.matchers.upstream_ip_port".into(),
                typed_config: None,
            }),
            "p.matcher: the matcher extension \"envoy.rbac.matchers.upstream_ip_port\" is not supported",
        ),
    ];
    for (rule, want) in cases {
        let e = refusal(rule);
        assert!(e.starts_with(want), "{e}");
    }
    let cases: Vec<(Identifier, &str)> = vec![
        (Identifier::Any(false), "p.any: must be true when set"),
        (Identifier::OrIds(ids(vec![])), "p.or_ids.ids: is empty"),
        (Identifier::FilterState(Default::default()), "p.filter_state: a filter state matcher is not supported"),
        (
            Identifier::Custom(TypedExtensionConfig {
                name: "envoy.rbac.principals.mtls_authenticated".into(),
                typed_config: None,
            }),
            "p.custom: the principal extension \"envoy.rbac.principals.mtls_authenticated\" is not supported",
        ),
    ];
    for (i, want) in cases {
        assert_eq!(refusal_id(i), want);
    }
    assert_eq!(
        match Principal::compile(&XPrincipal { identifier: None }, &at()) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        },
        "p: no identifier is set"
    );
}
