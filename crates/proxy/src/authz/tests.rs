//! Engines and filters: ALLOW, DENY and LOG, allow-nothing, several filters in order, shadow rules, and
//! the configs that are refused, on policies shaped as Istio generates them.

use super::*;
use crate::authz::matcher::tests::{
    exact, header, id, metadata, parts, perm, plain, prefix, regex, url_path,
};
use std::collections::HashMap;
use weft_xds::pb::envoy::config::rbac::v3::{
    permission::{self, Rule},
    principal::{self, Identifier},
    Permission as XPermission, Policy as XPolicy, Principal as XPrincipal,
};
use weft_xds::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use weft_xds::pb::envoy::r#type::matcher::v3::value_matcher;

fn rbac(action: XAction, policies: Vec<(&str, XPolicy)>) -> XRbac {
    XRbac {
        action: action as i32,
        policies: policies
            .into_iter()
            .map(|(n, p)| (n.to_string(), p))
            .collect::<HashMap<_, _>>(),
        audit_logging_options: None,
    }
}

fn policy(permissions: Vec<XPermission>, principals: Vec<XPrincipal>) -> XPolicy {
    XPolicy {
        permissions,
        principals,
        ..Default::default()
    }
}

fn any_perm() -> XPermission {
    perm(Rule::Any(true))
}

fn any_id() -> XPrincipal {
    id(Identifier::Any(true))
}

fn path_is(p: &str) -> XPermission {
    perm(Rule::UrlPath(url_path(exact(p))))
}

fn method_is(m: &str) -> XPermission {
    perm(Rule::Header(header(
        ":method",
        Some(HeaderMatchSpecifier::StringMatch(exact(m))),
    )))
}

fn principal_is(spiffe: &str) -> XPrincipal {
    id(Identifier::Authenticated(principal::Authenticated {
        principal_name: Some(exact(spiffe)),
    }))
}

fn and(rules: Vec<XPermission>) -> XPermission {
    perm(Rule::AndRules(permission::Set { rules }))
}

/// An HTTP filter's config packed as weftd sends it.
fn http_any(rules: Option<XRbac>, shadow: Option<XRbac>) -> weft_xds::Any {
    weft_xds::pack(
        HTTP_RBAC_TYPE,
        &XHttpRbac {
            rules,
            shadow_rules: shadow,
            ..Default::default()
        },
    )
}

fn compiled(filters: Vec<weft_xds::Any>) -> Rbac {
    let filters = filters
        .iter()
        .map(|a| Filter::http(a).unwrap_or_else(|e| panic!("compiles: {e}")))
        .collect();
    Rbac::new(filters).expect("has rules")
}

fn deny(policy: Option<&str>) -> Decision {
    Decision::Deny {
        policy: policy.map(Arc::from),
    }
}

#[test]
fn allow_deny_and_log() {
    let s = plain();
    let get_admin = parts("GET", "/admin", &[]);
    let get_home = parts("GET", "/", &[]);
    let post_home = parts("POST", "/", &[]);

    // DENY: denied iff a policy matches, naming it.
    let deny_admin = compiled(vec![http_any(
        Some(rbac(
            XAction::Deny,
            vec![(
                "ns[default]-policy[no-admin]-rule[0]",
                policy(vec![path_is("/admin")], vec![any_id()]),
            )],
        )),
        None,
    )]);
    assert_eq!(
        deny_admin.check_http(&s, &get_admin),
        deny(Some("ns[default]-policy[no-admin]-rule[0]"))
    );
    assert_eq!(deny_admin.check_http(&s, &get_home), Decision::Allow);

    // ALLOW: allowed iff a policy matches; otherwise denied with no policy.
    let allow_get = compiled(vec![http_any(
        Some(rbac(
            XAction::Allow,
            vec![("get", policy(vec![method_is("GET")], vec![any_id()]))],
        )),
        None,
    )]);
    assert_eq!(allow_get.check_http(&s, &get_home), Decision::Allow);
    assert_eq!(allow_get.check_http(&s, &post_home), deny(None));

    // LOG never denies.
    let log = compiled(vec![http_any(
        Some(rbac(
            XAction::Log,
            vec![("all", policy(vec![any_perm()], vec![any_id()]))],
        )),
        None,
    )]);
    assert_eq!(log.check_http(&s, &get_admin), Decision::Allow);

    // A policy needs one of its permissions and one of its principals.
    let two = compiled(vec![http_any(
        Some(rbac(
            XAction::Allow,
            vec![(
                "productpage-get",
                policy(
                    vec![path_is("/x"), method_is("GET")],
                    vec![
                        principal_is("spiffe://cluster.local/ns/default/sa/other"),
                        principal_is("spiffe://cluster.local/ns/default/sa/productpage"),
                    ],
                ),
            )],
        )),
        None,
    )]);
    let productpage = Subject {
        principal: Some("spiffe://cluster.local/ns/default/sa/productpage"),
        ..plain()
    };
    assert_eq!(two.check_http(&productpage, &get_home), Decision::Allow);
    assert_eq!(two.check_http(&productpage, &post_home), deny(None));
    assert_eq!(two.check_http(&plain(), &get_home), deny(None), "plaintext");
}

#[test]
fn allow_with_no_policy_denies_everything() {
    // Istio's `spec: {}` ALLOW policy: allow-nothing.
    let nothing = compiled(vec![http_any(Some(rbac(XAction::Allow, vec![])), None)]);
    for (m, p) in [("GET", "/"), ("POST", "/admin"), ("GET", "/healthz")] {
        assert_eq!(nothing.check_http(&plain(), &parts(m, p, &[])), deny(None));
    }
    assert_eq!(nothing.check_tcp(&plain()), deny(None));
    // DENY with no policy denies nothing.
    let none = compiled(vec![http_any(Some(rbac(XAction::Deny, vec![])), None)]);
    assert_eq!(
        none.check_http(&plain(), &parts("GET", "/", &[])),
        Decision::Allow
    );
}

#[test]
fn filters_run_in_order_and_the_first_denial_stands() {
    // As Istio orders them: DENY, then ALLOW.
    let r = compiled(vec![
        http_any(
            Some(rbac(
                XAction::Deny,
                vec![
                    (
                        "z-admin",
                        policy(
                            vec![perm(Rule::UrlPath(url_path(prefix("/admin"))))],
                            vec![any_id()],
                        ),
                    ),
                    (
                        "a-admin-get",
                        policy(
                            vec![and(vec![path_is("/admin"), method_is("GET")])],
                            vec![any_id()],
                        ),
                    ),
                ],
            )),
            None,
        ),
        http_any(
            Some(rbac(
                XAction::Allow,
                vec![("get", policy(vec![method_is("GET")], vec![any_id()]))],
            )),
            None,
        ),
    ]);
    let s = plain();
    // Both DENY policies match: the first by name is reported, as Envoy's sorted map does.
    assert_eq!(
        r.check_http(&s, &parts("GET", "/admin", &[])),
        deny(Some("a-admin-get"))
    );
    assert_eq!(
        r.check_http(&s, &parts("POST", "/admin/x", &[])),
        deny(Some("z-admin"))
    );
    assert_eq!(r.check_http(&s, &parts("GET", "/ok", &[])), Decision::Allow);
    assert_eq!(r.check_http(&s, &parts("POST", "/ok", &[])), deny(None));
}

#[test]
fn shadow_rules_report_and_never_decide() {
    let audit = rbac(
        XAction::Deny,
        vec![("dry-run", policy(vec![path_is("/admin")], vec![any_id()]))],
    );
    // Shadow only: nothing enforced.
    let r = compiled(vec![http_any(None, Some(audit.clone()))]);
    let s = plain();
    let admin = parts("GET", "/admin", &[]);
    assert!(r.has_shadow());
    assert_eq!(r.check_http(&s, &admin), Decision::Allow);
    assert_eq!(r.shadow_http(&s, &admin), Some(deny(Some("dry-run"))));
    assert_eq!(
        r.shadow_http(&s, &parts("GET", "/", &[])),
        Some(Decision::Allow)
    );
    assert_eq!(r.shadow_tcp(&s), Some(Decision::Allow));
    // With enforced rules beside: each says its own.
    let r = compiled(vec![http_any(
        Some(rbac(
            XAction::Allow,
            vec![("all", policy(vec![any_perm()], vec![any_id()]))],
        )),
        Some(audit),
    )]);
    assert_eq!(r.check_http(&s, &admin), Decision::Allow);
    assert_eq!(r.shadow_http(&s, &admin), Some(deny(Some("dry-run"))));
    // No shadow rules: nothing to report.
    let r = compiled(vec![http_any(Some(rbac(XAction::Deny, vec![])), None)]);
    assert!(!r.has_shadow());
    assert_eq!(r.shadow_http(&s, &admin), None);
}

#[test]
fn filters_without_rules_make_no_rbac() {
    let empty = Filter::http(&http_any(None, None)).expect("valid");
    assert!(Rbac::new(vec![empty]).is_none());
    assert!(Rbac::new(vec![]).is_none());
}

#[test]
fn tcp_connections_are_checked_without_a_request() {
    use weft_xds::pb::envoy::extensions::filters::network::rbac::v3::rbac::EnforcementType;
    let network = |rules: XRbac| {
        weft_xds::pack(
            NETWORK_RBAC_TYPE,
            &XNetworkRbac {
                rules: Some(rules),
                stat_prefix: "tcp.".into(),
                enforcement_type: EnforcementType::Continuous as i32,
                ..Default::default()
            },
        )
    };
    let blocked = id(Identifier::DirectRemoteIp(
        weft_xds::pb::envoy::config::core::v3::CidrRange {
            address_prefix: "10.0.0.1".into(),
            prefix_len: Some(weft_xds::pb::google::protobuf::UInt32Value { value: 32 }),
        },
    ));
    let r = Rbac::new(vec![Filter::network(&network(rbac(
        XAction::Deny,
        vec![("block", policy(vec![any_perm()], vec![blocked]))],
    )))
    .expect("valid")])
    .expect("rules");
    assert_eq!(r.check_tcp(&plain()), deny(Some("block")));
    let other = Subject {
        source: "10.0.0.9:1".parse().expect("addr"),
        ..plain()
    };
    assert_eq!(r.check_tcp(&other), Decision::Allow);
    // An HTTP-only permission on TCP: a DENY on a path denies no connection; an ALLOW on one allows
    // none (Istio drops such rules from ALLOW policies and keeps them in DENY ones for that reason).
    let deny_path = Rbac::new(vec![Filter::network(&network(rbac(
        XAction::Deny,
        vec![("p", policy(vec![path_is("/admin")], vec![any_id()]))],
    )))
    .expect("valid")])
    .expect("rules");
    assert_eq!(deny_path.check_tcp(&plain()), Decision::Allow);
}

#[test]
#[allow(deprecated)] // `metadata`, which Istio sends
fn jwt_principals_as_current_istio_sends_them() {
    // requestPrincipals: ["https://issuer.example/alice"]: iss and sub claims of Envoy's JWT filter.
    use value_matcher::MatchPattern as V;
    let claim = |c: &str, v: &str| {
        id(Identifier::Metadata(metadata(
            matcher::JWT_AUTHN,
            &["payload", c],
            V::StringMatch(exact(v)),
        )))
    };
    let alice = id(Identifier::AndIds(principal::Set {
        ids: vec![
            claim("iss", "https://issuer.example"),
            claim("sub", "alice"),
        ],
    }));
    let r = compiled(vec![http_any(
        Some(rbac(
            XAction::Allow,
            vec![("jwt", policy(vec![any_perm()], vec![alice]))],
        )),
        None,
    )]);
    let token: serde_json::Value = serde_json::json!({
        "request.auth.principal": "https://issuer.example/alice",
        "request.auth.claims": {"iss": "https://issuer.example", "sub": "alice"},
    });
    let with = Subject {
        auth: Some(&token),
        ..plain()
    };
    let req = parts("GET", "/", &[]);
    assert_eq!(r.check_http(&with, &req), Decision::Allow);
    assert_eq!(r.check_http(&plain(), &req), deny(None), "no token");
}

fn refused(any: &weft_xds::Any) -> String {
    match Filter::http(any) {
        Ok(f) => panic!("compiled: {f:?}"),
        Err(e) => {
            let mut s = e.to_string();
            let mut cur = std::error::Error::source(&e);
            while let Some(c) = cur {
                s.push_str(": ");
                s.push_str(&c.to_string());
                cur = c.source();
            }
            s
        }
    }
}

#[test]
fn refusals_name_the_field() {
    let ok = || policy(vec![any_perm()], vec![any_id()]);
    let with = |p: XPolicy| http_any(Some(rbac(XAction::Deny, vec![("p", p)])), None);
    let mut bad_action = rbac(XAction::Allow, vec![]);
    bad_action.action = 7;
    let mut audit = rbac(XAction::Allow, vec![]);
    audit.audit_logging_options = Some(Default::default());
    let cases: Vec<(weft_xds::Any, &str)> = vec![
        (
            http_any(Some(bad_action), None),
            "rules.action: 7 is not ALLOW, DENY or LOG",
        ),
        (
            http_any(None, Some(audit)),
            "shadow_rules.audit_logging_options: audit logging is not supported",
        ),
        (
            with(XPolicy {
                condition: Some(Default::default()),
                ..ok()
            }),
            "rules.policies[\"p\"].condition: a CEL condition is not supported",
        ),
        (
            with(policy(vec![], vec![any_id()])),
            "rules.policies[\"p\"].permissions: is empty",
        ),
        (
            with(policy(vec![any_perm()], vec![])),
            "rules.policies[\"p\"].principals: is empty",
        ),
        (
            with(policy(
                vec![any_perm(), perm(Rule::UrlPath(url_path(regex("(a"))))],
                vec![any_id()],
            )),
            "rules.policies[\"p\"].permissions[1].url_path.path.safe_regex.regex: regex \"(a\" does not compile",
        ),
        (
            weft_xds::pack(
                HTTP_RBAC_TYPE,
                &XHttpRbac {
                    matcher: Some(Default::default()),
                    ..Default::default()
                },
            ),
            "matcher: a matcher tree is not supported",
        ),
        (
            weft_xds::pack(NETWORK_RBAC_TYPE, &XNetworkRbac::default()),
            "typed_config: type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC (expected type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC)",
        ),
        (
            weft_xds::Any {
                type_url: HTTP_RBAC_TYPE.into(),
                value: vec![0xff, 0xff],
            },
            "typed_config type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC does not decode",
        ),
    ];
    for (any, want) in cases {
        let e = refused(&any);
        assert!(e.starts_with(want), "{e}\nwanted {want}");
    }
    let delayed = weft_xds::pack(
        NETWORK_RBAC_TYPE,
        &XNetworkRbac {
            delay_deny: Some(weft_xds::pb::google::protobuf::Duration {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        },
    );
    assert_eq!(
        Filter::network(&delayed)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err("delay_deny: a delayed denial is not supported".to_string())
    );
}
