//! The RBAC filters of a workload, rendered compactly and compared with what istiod generates for the
//! same policies (its `pilot/pkg/security/authz/builder/testdata` shapes).

use super::*;
use crate::security::ext_authz;
use crate::security::tests::{labels, model_of, MeshConfigText};
use weft_xds::pb::envoy::config::rbac::v3::Rbac as XRbac;
use weft_xds::pb::envoy::extensions::filters::http::ext_authz::v3::ExtAuthz as XHttpAuthz;
use weft_xds::pb::envoy::extensions::filters::http::rbac::v3::Rbac as XHttpRbac;
use weft_xds::pb::envoy::extensions::filters::network::ext_authz::v3::ExtAuthz as XNetAuthz;
use weft_xds::pb::envoy::extensions::filters::network::rbac::v3::Rbac as XNetworkRbac;
use weft_xds::pb::envoy::r#type::matcher::v3::value_matcher::MatchPattern as VP;
use weft_xds::pb::envoy::r#type::matcher::v3::ListStringMatcher;

// === a compact rendering of the protos ===

fn s(m: &StringMatcher) -> String {
    let i = if m.ignore_case { "_i" } else { "" };
    match &m.match_pattern {
        Some(MatchPattern::Exact(v)) => format!("exact{i} {v}"),
        Some(MatchPattern::Prefix(v)) => format!("prefix{i} {v}"),
        Some(MatchPattern::Suffix(v)) => format!("suffix{i} {v}"),
        Some(MatchPattern::SafeRegex(r)) => format!("regex{i} {}", r.regex),
        other => format!("{other:?}"),
    }
}

fn header(h: &HeaderMatcher) -> String {
    match &h.header_match_specifier {
        Some(HeaderMatchSpecifier::PresentMatch(true)) => format!("header({} present)", h.name),
        Some(HeaderMatchSpecifier::StringMatch(m)) => format!("header({} {})", h.name, s(m)),
        other => format!("header({} {other:?})", h.name),
    }
}

fn value(v: &ValueMatcher) -> String {
    match &v.match_pattern {
        Some(VP::StringMatch(m)) => s(m),
        Some(VP::ListMatch(l)) => match &l.match_pattern {
            Some(list_matcher::MatchPattern::OneOf(o)) => format!("one_of({})", value(o)),
            None => "list()".into(),
        },
        Some(VP::OrMatch(o)) => format!(
            "or({})",
            o.value_matchers
                .iter()
                .map(value)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => format!("{other:?}"),
    }
}

fn metadata(m: &MetadataMatcher) -> String {
    let path: Vec<String> = m
        .path
        .iter()
        .map(|p| match &p.segment {
            Some(Segment::Key(k)) => k.clone(),
            None => "?".into(),
        })
        .collect();
    let v = m.value.as_ref().map(value).unwrap_or_default();
    format!("metadata({} [{}] {v})", m.filter, path.join(", "))
}

fn cidr_s(c: &CidrRange) -> String {
    format!(
        "{}/{}",
        c.address_prefix,
        c.prefix_len.as_ref().map(|l| l.value).unwrap_or(0)
    )
}

#[allow(deprecated)]
fn perm(p: &Permission) -> String {
    use permission::Rule as R;
    let list = |ps: &[Permission]| ps.iter().map(perm).collect::<Vec<_>>().join(", ");
    match &p.rule {
        Some(R::Any(true)) => "any".into(),
        Some(R::AndRules(set)) => format!("and({})", list(&set.rules)),
        Some(R::OrRules(set)) => format!("or({})", list(&set.rules)),
        Some(R::NotRule(p)) => format!("not({})", perm(p)),
        Some(R::Header(h)) => header(h),
        Some(R::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(m)),
        })) => format!("path({})", s(m)),
        Some(R::UriTemplate(t)) => {
            let any = t.typed_config.as_ref().expect("typed config");
            assert_eq!(any.type_url, URI_TEMPLATE_TYPE);
            assert_eq!(t.name, "uri-template");
            let c: UriTemplateMatchConfig = weft_xds::unpack(any).expect("decodes");
            format!("template({})", c.path_template)
        }
        Some(R::DestinationPort(n)) => format!("port({n})"),
        Some(R::DestinationIp(c)) => format!("dst_ip({})", cidr_s(c)),
        Some(R::RequestedServerName(m)) => format!("sni({})", s(m)),
        Some(R::Metadata(m)) => metadata(m),
        other => format!("{other:?}"),
    }
}

#[allow(deprecated)]
fn prin(p: &Principal) -> String {
    use principal::Identifier as I;
    let list = |ps: &[Principal]| ps.iter().map(prin).collect::<Vec<_>>().join(", ");
    match &p.identifier {
        Some(I::Any(true)) => "any".into(),
        Some(I::AndIds(set)) => format!("and({})", list(&set.ids)),
        Some(I::OrIds(set)) => format!("or({})", list(&set.ids)),
        Some(I::NotId(p)) => format!("not({})", prin(p)),
        Some(I::Authenticated(a)) => {
            format!(
                "authn({})",
                a.principal_name.as_ref().map(s).unwrap_or_default()
            )
        }
        Some(I::DirectRemoteIp(c)) => format!("direct_remote_ip({})", cidr_s(c)),
        Some(I::RemoteIp(c)) => format!("remote_ip({})", cidr_s(c)),
        Some(I::Header(h)) => header(h),
        Some(I::Metadata(m)) => metadata(m),
        other => format!("{other:?}"),
    }
}

/// `ACTION`, then each policy by name: `name: permissions [..] principals [..]`.
fn engine(r: &XRbac) -> Vec<String> {
    let action = RbacAction::try_from(r.action)
        .map(|a| a.as_str_name())
        .unwrap_or("?");
    let mut out = vec![action.to_string()];
    let mut names: Vec<&String> = r.policies.keys().collect();
    names.sort();
    for n in names {
        let p = &r.policies[n];
        let perms: Vec<String> = p.permissions.iter().map(perm).collect();
        let prins: Vec<String> = p.principals.iter().map(prin).collect();
        out.push(format!(
            "  {n}: permissions [{}] principals [{}]",
            perms.join(", "),
            prins.join(", ")
        ));
    }
    out
}

/// Each HTTP filter: `rules:` and `shadow:` engines, with the shadow stat prefix.
fn http(model: &Model, ns: &str, l: &[(&str, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    for f in rbac_http_filters(model, ns, &labels(l)) {
        let Some(http_filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            panic!("no typed config");
        };
        if f.name == ext_authz::HTTP_EXT_AUTHZ_FILTER {
            assert_eq!(any.type_url, ext_authz::HTTP_EXT_AUTHZ_TYPE);
            out.extend(http_ext_authz(&weft_xds::unpack(any).expect("decodes")));
            continue;
        }
        assert_eq!(f.name, HTTP_RBAC_FILTER);
        assert_eq!(any.type_url, HTTP_RBAC_TYPE);
        let c: XHttpRbac = weft_xds::unpack(any).expect("decodes as Envoy's type");
        out.push("filter".into());
        if let Some(r) = &c.rules {
            out.extend(engine(r).into_iter().map(|l| format!("rules {l}")));
        }
        if let Some(r) = &c.shadow_rules {
            out.push(format!("shadow prefix {}", c.shadow_rules_stat_prefix));
            out.extend(engine(r).into_iter().map(|l| format!("shadow {l}")));
        }
    }
    out
}

/// Each network filter on `port`, like [`http`].
fn tcp(model: &Model, ns: &str, l: &[(&str, &str)], port: u32) -> Vec<String> {
    let mut out = Vec::new();
    for f in rbac_network_filters(model, ns, &labels(l), port) {
        let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            panic!("no typed config");
        };
        if f.name == ext_authz::NETWORK_EXT_AUTHZ_FILTER {
            assert_eq!(any.type_url, ext_authz::NETWORK_EXT_AUTHZ_TYPE);
            let c: XNetAuthz = weft_xds::unpack(any).expect("decodes");
            assert_eq!(c.stat_prefix, TCP_STAT_PREFIX);
            out.push(format!(
                "ext_authz fail_open={} when {}",
                c.failure_mode_allow,
                c.filter_enabled_metadata
                    .as_ref()
                    .map(metadata)
                    .unwrap_or_default()
            ));
            out.push(format!(
                "  {}",
                grpc(c.grpc_service.as_ref().expect("grpc"))
            ));
            continue;
        }
        assert_eq!(f.name, NETWORK_RBAC_FILTER);
        assert_eq!(any.type_url, NETWORK_RBAC_TYPE);
        let c: XNetworkRbac = weft_xds::unpack(any).expect("decodes as Envoy's type");
        assert_eq!(c.stat_prefix, TCP_STAT_PREFIX);
        out.push("filter".into());
        if let Some(r) = &c.rules {
            out.extend(engine(r).into_iter().map(|l| format!("rules {l}")));
        }
        if let Some(r) = &c.shadow_rules {
            out.push(format!("shadow prefix {}", c.shadow_rules_stat_prefix));
            out.extend(engine(r).into_iter().map(|l| format!("shadow {l}")));
        }
    }
    out
}

fn list(l: &Option<ListStringMatcher>) -> String {
    let items: Vec<String> = l.iter().flat_map(|l| l.patterns.iter().map(s)).collect();
    format!("[{}]", items.join(", "))
}

fn secs(d: &Option<weft_xds::pb::google::protobuf::Duration>) -> String {
    d.as_ref()
        .map(|d| format!("{}.{:03}s", d.seconds, d.nanos / 1_000_000))
        .unwrap_or("-".into())
}

fn grpc(g: &weft_xds::pb::envoy::config::core::v3::GrpcService) -> String {
    use weft_xds::pb::envoy::config::core::v3::grpc_service::TargetSpecifier;
    let Some(TargetSpecifier::EnvoyGrpc(e)) = &g.target_specifier else {
        panic!("envoy_grpc");
    };
    format!(
        "grpc {} authority {} timeout {}",
        e.cluster_name,
        e.authority,
        secs(&g.timeout)
    )
}

/// An HTTP ext_authz filter: when it runs, then what it calls and how.
#[allow(deprecated)] // `authorization_request.allowed_headers`: what istiod sends
fn http_ext_authz(c: &XHttpAuthz) -> Vec<String> {
    use weft_xds::pb::envoy::config::core::v3::http_uri::HttpUpstreamType;
    use weft_xds::pb::envoy::extensions::filters::http::ext_authz::v3::ext_authz::Services;
    let mut out = vec![format!(
        "ext_authz fail_open={} status_on_error={} body={} when {}",
        c.failure_mode_allow,
        c.status_on_error.as_ref().map_or(0, |s| s.code),
        c.with_request_body
            .as_ref()
            .map_or("-".to_string(), |b| format!(
                "{}/{}/{}",
                b.max_request_bytes, b.allow_partial_message, b.pack_as_bytes
            )),
        c.filter_enabled_metadata
            .as_ref()
            .map(metadata)
            .unwrap_or_default()
    )];
    assert_eq!(c.transport_api_version, 2, "V3");
    match c.services.as_ref().expect("a service") {
        Services::GrpcService(g) => out.push(format!("  {}", grpc(g))),
        Services::HttpService(h) => {
            let uri = h.server_uri.as_ref().expect("server_uri");
            let Some(HttpUpstreamType::Cluster(cluster)) = &uri.http_upstream_type else {
                panic!("cluster");
            };
            out.push(format!(
                "  http {cluster} uri {} timeout {} path_prefix {:?}",
                uri.uri,
                secs(&uri.timeout),
                h.path_prefix
            ));
            if let Some(r) = &h.authorization_request {
                let add: Vec<String> = r
                    .headers_to_add
                    .iter()
                    .map(|h| format!("{}={}", h.key, h.value))
                    .collect();
                out.push(format!(
                    "  request headers {} add [{}]",
                    list(&r.allowed_headers),
                    add.join(", ")
                ));
            }
            if let Some(r) = &h.authorization_response {
                out.push(format!(
                    "  response upstream {} client {} client_on_success {}",
                    list(&r.allowed_upstream_headers),
                    list(&r.allowed_client_headers),
                    list(&r.allowed_client_headers_on_success)
                ));
            }
        }
    }
    out
}

fn ap(name: &str, spec: &str) -> String {
    format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: foo}}\nspec:\n{spec}---\n")
}

const NEVER: &str = "permissions [not(any)] principals [not(any)]";
const ALL: &str = "permissions [and(any)] principals [and(any)]";

#[test]
fn http_table() {
    let cases: Vec<(&str, String, Vec<String>)> = vec![
        ("no policy, no filter", String::new(), vec![]),
        (
            "allow-nothing",
            ap("allow-nothing", "  {}\n"),
            vec![
                "filter".into(),
                "rules ALLOW".into(),
                format!("rules   ns[foo]-policy[allow-nothing]-rule[0]: {NEVER}"),
            ],
        ),
        (
            "allow-all",
            ap("allow-all", "  rules:\n  - {}\n"),
            vec![
                "filter".into(),
                "rules ALLOW".into(),
                format!("rules   ns[foo]-policy[allow-all]-rule[0]: {ALL}"),
            ],
        ),
        (
            "DENY on /admin, no ALLOW filter",
            ap(
                "deny-admin",
                "  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths: [/admin, /admin/*]\n",
            ),
            vec![
                "filter".into(),
                "rules DENY".into(),
                "rules   ns[foo]-policy[deny-admin]-rule[0]: permissions [and(or(path(exact /admin), path(prefix /admin/)))] principals [and(any)]".into(),
            ],
        ),
        (
            "principals, with spiffe:// put back",
            ap(
                "principals",
                "  rules:\n  - from:\n    - source:\n        principals: [cluster.local/ns/default/sa/sleep, \"*/sa/admin\", \"cluster.local/ns/x/*\", \"*\"]\n",
            ),
            vec![
                "filter".into(),
                "rules ALLOW".into(),
                "rules   ns[foo]-policy[principals]-rule[0]: permissions [and(any)] principals [and(or(authn(exact spiffe://cluster.local/ns/default/sa/sleep), authn(regex spiffe://.*/sa/admin), authn(prefix spiffe://cluster.local/ns/x/), authn(regex .+)))]".into(),
            ],
        ),
        (
            "namespaces and notNamespaces",
            ap(
                "namespaces",
                "  rules:\n  - from:\n    - source:\n        namespaces: [test, \"prod-*\"]\n        notNamespaces: [prod-old]\n",
            ),
            vec![
                "filter".into(),
                "rules ALLOW".into(),
                "rules   ns[foo]-policy[namespaces]-rule[0]: permissions [and(any)] principals [and(or(authn(regex .*/ns/test/.*), authn(regex .*/ns/prod-.*/.*)), not(or(authn(regex .*/ns/prod-old/.*))))]".into(),
            ],
        ),
        (
            "notMethods",
            ap(
                "no-delete",
                "  rules:\n  - to:\n    - operation:\n        notMethods: [DELETE, PATCH]\n",
            ),
            vec![
                "filter".into(),
                "rules ALLOW".into(),
                "rules   ns[foo]-policy[no-delete]-rule[0]: permissions [and(not(or(header(:method exact DELETE), header(:method exact PATCH))))] principals [and(any)]".into(),
            ],
        ),
        (
            "when request.headers",
            ap(
                "headers",
                "  rules:\n  - when:\n    - key: request.headers[X-Token]\n      values: [abc, \"*\", \"Bearer *\"]\n",
            ),
            vec![
                "filter".into(),
                "rules ALLOW".into(),
                "rules   ns[foo]-policy[headers]-rule[0]: permissions [and(any)] principals [and(or(header(x-token exact abc), header(x-token present), header(x-token prefix Bearer )))]".into(),
            ],
        ),
        (
            "hosts ignore case, ports, templates, SNI and destination IP",
            ap(
                "ops",
                "  rules:\n  - to:\n    - operation:\n        hosts: [Example.com, \"*.example.com\"]\n        ports: [\"8080\"]\n        paths: [\"/api/{*}/items/{**}\"]\n    when:\n    - key: connection.sni\n      values: [\"*.local\"]\n    - key: destination.ip\n      notValues: [10.0.0.0/8]\n",
            ),
            vec![
                "filter".into(),
                "rules ALLOW".into(),
                "rules   ns[foo]-policy[ops]-rule[0]: permissions [and(or(header(:authority exact_i Example.com), header(:authority suffix_i .example.com)), or(template(/api/*/items/**)), or(port(8080)), or(sni(suffix .local)), not(or(dst_ip(10.0.0.0/8))))] principals [and(any)]".into(),
            ],
        ),
        (
            "service accounts, trust domains and IPs",
            ap(
                "ids",
                "  rules:\n  - from:\n    - source:\n        serviceAccounts: [sleep, other/curl]\n        trustDomains: [\"*.corp\"]\n        ipBlocks: [10.1.0.0/16, 10.2.3.4]\n        notRemoteIpBlocks: [192.0.2.1]\n",
            ),
            vec![
                "filter".into(),
                "rules ALLOW".into(),
                "rules   ns[foo]-policy[ids]-rule[0]: permissions [and(any)] principals [and(or(authn(regex spiffe://.+/ns/foo/(.+/|)sa/sleep(/.+)?), authn(regex spiffe://.+/ns/other/(.+/|)sa/curl(/.+)?)), or(authn(regex spiffe://[^/]*\\.corp/.*)), not(or(remote_ip(192.0.2.1/32))), or(direct_remote_ip(10.1.0.0/16), direct_remote_ip(10.2.3.4/32)))]".into(),
            ],
        ),
        (
            "request principals and JWT claims, in istio_authn",
            ap(
                "jwt",
                "  rules:\n  - from:\n    - source:\n        requestPrincipals: [\"https://issuer.example/*\"]\n    when:\n    - key: request.auth.claims[groups]\n      values: [admins, ops]\n    - key: request.auth.audiences\n      notValues: [legacy]\n    - key: request.auth.claims[nested][key]\n      values: [a]\n",
            ),
            vec![
                "filter".into(),
                "rules ALLOW".into(),
                "rules   ns[foo]-policy[jwt]-rule[0]: permissions [and(any)] principals [and(or(metadata(istio_authn [request.auth.principal] prefix https://issuer.example/)), metadata(istio_authn [request.auth.claims, groups] or(one_of(or(exact admins, exact ops)), or(exact admins, exact ops))), not(metadata(istio_authn [request.auth.audiences] or(one_of(exact legacy), exact legacy))), metadata(istio_authn [request.auth.claims, nested, key] or(one_of(exact a), exact a)))]".into(),
            ],
        ),
        (
            "from and to entries are ORed, each rule a policy",
            ap(
                "two",
                "  rules:\n  - from:\n    - source: {namespaces: [a]}\n    - source: {namespaces: [b]}\n    to:\n    - operation: {methods: [GET]}\n    - operation: {methods: [POST], paths: [/data]}\n  - to:\n    - operation: {paths: [/healthz]}\n",
            ),
            vec![
                "filter".into(),
                "rules ALLOW".into(),
                "rules   ns[foo]-policy[two]-rule[0]: permissions [and(or(header(:method exact GET))), and(or(header(:method exact POST)), or(path(exact /data)))] principals [and(or(authn(regex .*/ns/a/.*))), and(or(authn(regex .*/ns/b/.*)))]".into(),
                "rules   ns[foo]-policy[two]-rule[1]: permissions [and(or(path(exact /healthz)))] principals [and(any)]".into(),
            ],
        ),
        (
            "AUDIT, DENY and ALLOW: three filters in that order",
            ap("allow", "  rules:\n  - {}\n")
                + &ap("deny", "  action: DENY\n  rules:\n  - to:\n    - operation: {ports: [\"9000\"]}\n")
                + &ap("audit", "  action: AUDIT\n  rules:\n  - {}\n"),
            vec![
                "filter".into(),
                "rules LOG".into(),
                format!("rules   ns[foo]-policy[audit]-rule[0]: {ALL}"),
                "filter".into(),
                "rules DENY".into(),
                "rules   ns[foo]-policy[deny]-rule[0]: permissions [and(or(port(9000)))] principals [and(any)]".into(),
                "filter".into(),
                "rules ALLOW".into(),
                format!("rules   ns[foo]-policy[allow]-rule[0]: {ALL}"),
            ],
        ),
        (
            "dry run: shadow rules only",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: dry\n  namespace: foo\n  annotations: {istio.io/dry-run: \"true\"}\nspec:\n  action: DENY\n  rules:\n  - to:\n    - operation: {paths: [/headers], ports: [\"80\"]}\n".into(),
            vec![
                "filter".into(),
                "shadow prefix istio_dry_run_deny_".into(),
                "shadow DENY".into(),
                "shadow   ns[foo]-policy[dry]-rule[0]: permissions [and(or(path(exact /headers)), or(port(80)))] principals [and(any)]".into(),
            ],
        ),
        (
            "a dry run beside an enforced policy",
            ap("real", "  rules:\n  - {}\n")
                + "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: dry\n  namespace: foo\n  annotations: {istio.io/dry-run: \"true\"}\nspec: {}\n---\n",
            vec![
                "filter".into(),
                "rules ALLOW".into(),
                format!("rules   ns[foo]-policy[real]-rule[0]: {ALL}"),
                "shadow prefix istio_dry_run_allow_".into(),
                "shadow ALLOW".into(),
                format!("shadow   ns[foo]-policy[dry]-rule[0]: {NEVER}"),
            ],
        ),
        (
            "CUSTOM fails closed: a DENY filter first, as istiod's for a provider it cannot use",
            ap("ext", "  action: CUSTOM\n  provider: {name: opa}\n  rules:\n  - to:\n    - operation: {paths: [/admin]}\n")
                + &ap("all", "  rules:\n  - {}\n"),
            vec![
                "filter".into(),
                "rules DENY".into(),
                "rules   istio-ext-authz-opa-ns[foo]-policy[ext]-rule[0]-deny-due-to-bad-CUSTOM-action: permissions [and(or(path(exact /admin)))] principals [and(any)]".into(),
                "filter".into(),
                "rules ALLOW".into(),
                format!("rules   ns[foo]-policy[all]-rule[0]: {ALL}"),
            ],
        ),
    ];
    for (name, text, want) in cases {
        let model = model_of(&text, MeshConfigText(""));
        assert_eq!(http(&model, "foo", &[("app", "web")]), want, "case {name}");
    }
}

#[test]
fn tcp_table() {
    let cases: Vec<(&str, String, u32, Vec<String>)> = vec![
        (
            "ALLOW rule with HTTP-only fields does not match: an ALLOW filter with no policy",
            ap("http-only", "  rules:\n  - to:\n    - operation: {methods: [GET]}\n"),
            8080,
            vec!["filter".into(), "rules ALLOW".into()],
        ),
        (
            "ALLOW: the HTTP-only rule goes, the TCP one stays",
            ap(
                "mixed",
                "  rules:\n  - from:\n    - source: {requestPrincipals: [\"*\"]}\n  - from:\n    - source: {principals: [cluster.local/ns/foo/sa/db-client]}\n    to:\n    - operation: {ports: [\"5432\"]}\n",
            ),
            5432,
            vec![
                "filter".into(),
                "rules ALLOW".into(),
                "rules   ns[foo]-policy[mixed]-rule[1]: permissions [and(or(port(5432)))] principals [and(or(authn(exact spiffe://cluster.local/ns/foo/sa/db-client)))]".into(),
            ],
        ),
        (
            "DENY rule with HTTP-only fields matches on the rest",
            ap(
                "deny-post",
                "  action: DENY\n  rules:\n  - to:\n    - operation:\n        methods: [POST]\n        ports: [\"8080\"]\n    when:\n    - key: request.headers[x-a]\n      values: [b]\n",
            ),
            8080,
            vec![
                "filter".into(),
                "rules DENY".into(),
                "rules   ns[foo]-policy[deny-post]-rule[0]: permissions [and(or(port(8080)))] principals [and(any)]".into(),
            ],
        ),
        (
            "DENY rule with HTTP-only fields alone denies every connection",
            ap("deny-admin", "  action: DENY\n  rules:\n  - to:\n    - operation: {paths: [/admin]}\n"),
            9000,
            vec![
                "filter".into(),
                "rules DENY".into(),
                format!("rules   ns[foo]-policy[deny-admin]-rule[0]: {ALL}"),
            ],
        ),
        (
            "a rule for another port is left out of this listener's filter",
            ap(
                "ports",
                "  action: DENY\n  rules:\n  - to:\n    - operation: {ports: [\"8080\"]}\n  - to:\n    - operation: {notPorts: [\"9000\"]}\n  - to:\n    - operation: {ports: [\"9000\"]}\n",
            ),
            9000,
            vec![
                "filter".into(),
                "rules DENY".into(),
                "rules   ns[foo]-policy[ports]-rule[2]: permissions [and(or(port(9000)))] principals [and(any)]".into(),
            ],
        ),
        (
            "allow-nothing on TCP",
            ap("allow-nothing", "  {}\n"),
            9000,
            vec![
                "filter".into(),
                "rules ALLOW".into(),
                format!("rules   ns[foo]-policy[allow-nothing]-rule[0]: {NEVER}"),
            ],
        ),
    ];
    for (name, text, port, want) in cases {
        let model = model_of(&text, MeshConfigText(""));
        assert_eq!(
            tcp(&model, "foo", &[("app", "db")], port),
            want,
            "case {name}"
        );
    }
}

#[test]
fn principals_are_written_for_every_trust_domain_alias() {
    let text = ap(
        "aliases",
        "  rules:\n  - from:\n    - source:\n        principals: [cluster.local/ns/foo/sa/a, other.td/ns/foo/sa/b]\n        notTrustDomains: [new.td]\n",
    );
    let model = model_of(
        &text,
        MeshConfigText("trustDomain: new.td\ntrustDomainAliases: [old.td]\n"),
    );
    assert_eq!(
        http(&model, "foo", &[]),
        [
            "filter",
            "rules ALLOW",
            "rules   ns[foo]-policy[aliases]-rule[0]: permissions [and(any)] principals [and(or(authn(exact spiffe://new.td/ns/foo/sa/a), authn(exact spiffe://old.td/ns/foo/sa/a), authn(exact spiffe://other.td/ns/foo/sa/b)), not(or(authn(prefix spiffe://new.td/), authn(prefix spiffe://old.td/))))]",
        ]
    );
}

#[test]
fn policies_apply_only_to_the_workloads_they_select() {
    let text = ap(
        "reviews",
        "  selector: {matchLabels: {app: reviews}}\n  action: DENY\n  rules:\n  - {}\n",
    );
    let model = model_of(&text, MeshConfigText(""));
    assert_eq!(http(&model, "foo", &[("app", "reviews")]).len(), 3);
    assert!(http(&model, "foo", &[("app", "ratings")]).is_empty());
    assert!(http(&model, "bar", &[("app", "reviews")]).is_empty());
}

#[test]
fn one_model_always_encodes_to_the_same_bytes() {
    // Many policies, so a HashMap would almost surely encode them in another order some time.
    let mut text = String::new();
    for i in 0..40 {
        text += &ap(
            &format!("p{i:02}"),
            "  rules:\n  - to:\n    - operation: {paths: [/a]}\n",
        );
    }
    let model = model_of(&text, MeshConfigText(""));
    let bytes = |_: usize| -> Vec<Vec<u8>> {
        rbac_http_filters(&model, "foo", &BTreeMap::new())
            .into_iter()
            .map(|f| match f.config_type {
                Some(http_filter::ConfigType::TypedConfig(a)) => a.value,
                _ => Vec::new(),
            })
            .collect()
    };
    let first = bytes(0);
    for i in 1..20 {
        assert_eq!(bytes(i), first, "encoding {i}");
    }
    // Re-encoding Envoy's own type gives the same policies (the wire format is Envoy's).
    let decoded: XHttpRbac = weft_xds::unpack(&Any {
        type_url: HTTP_RBAC_TYPE.into(),
        value: first[0].clone(),
    })
    .expect("decodes");
    assert_eq!(decoded.rules.expect("rules").policies.len(), 40);
}

#[test]
fn quote_meta_escapes_re2_metacharacters() {
    assert_eq!(
        quote_meta("a.b*c(d)|[e]{f}^$+?\\"),
        "a\\.b\\*c\\(d\\)\\|\\[e\\]\\{f\\}\\^\\$\\+\\?\\\\"
    );
    assert_eq!(quote_meta("prod-1_x"), "prod-1_x");
}

/// The authorizers of the CUSTOM tests: in MeshConfig, and their services in the registry.
const PROVIDERS: &str = "rootNamespace: istio-system\nextensionProviders:\n\
- name: http-authz\n  envoyExtAuthzHttp:\n    service: ext-authz.foo.svc.cluster.local\n    port: 8000\n    pathPrefix: /check\n    timeout: 2s\n    failOpen: true\n    includeRequestHeadersInCheck: [x-ext-authz, x-pre-*]\n    includeAdditionalHeadersInCheck: {x-added: yes}\n    headersToUpstreamOnAllow: [x-user]\n    headersToDownstreamOnDeny: [x-reason]\n    headersToDownstreamOnAllow: ['*-cookie']\n\
- name: grpc-authz\n  envoyExtAuthzGrpc:\n    service: foo/ext-authz\n    port: 9000\n    statusOnError: '503'\n    includeRequestBodyInCheck: {maxRequestBytes: 4096, allowPartialMessage: true}\n\
- name: lost\n  envoyExtAuthzGrpc: {service: nowhere.foo.svc.cluster.local, port: 9000}\n\
- name: zipkin\n  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}\n";

fn ext_authz_service() -> String {
    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ext-authz, namespace: foo}\nspec:\n  hosts: [ext-authz.foo.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - {number: 8000, name: http, protocol: HTTP}\n  - {number: 9000, name: grpc, protocol: GRPC}\n  endpoints:\n  - address: 127.0.0.9\n---\n".into()
}

fn custom(name: &str, provider: &str, rules: &str) -> String {
    ap(
        name,
        &format!("  action: CUSTOM\n  provider: {{name: {provider}}}\n  rules:\n{rules}"),
    )
}

const ADMIN: &str = "  - to:\n    - operation: {paths: [/admin]}\n";

#[test]
fn custom_table() {
    let cases: Vec<(&str, String, Vec<String>)> = vec![
        (
            "HTTP provider: marking RBAC, ext_authz, then the ALLOW filter",
            ext_authz_service() + &custom("ext", "http-authz", ADMIN) + &ap("all", "  rules:\n  - {}\n"),
            vec![
                "filter".into(),
                "shadow prefix istio_ext_authz_".into(),
                "shadow DENY".into(),
                "shadow   istio-ext-authz-http-authz-ns[foo]-policy[ext]-rule[0]: permissions [and(or(path(exact /admin)))] principals [and(any)]".into(),
                "ext_authz fail_open=true status_on_error=0 body=- when metadata(envoy.filters.http.rbac [istio_ext_authz_shadow_effective_policy_id] prefix istio-ext-authz-http-authz-)".into(),
                "  http outbound|8000||ext-authz.foo.svc.cluster.local uri http://ext-authz.foo.svc.cluster.local timeout 2.000s path_prefix \"/check\"".into(),
                "  request headers [exact x-ext-authz, prefix x-pre-] add [x-added=yes]".into(),
                "  response upstream [exact x-user] client [exact x-reason] client_on_success [suffix -cookie]".into(),
                "filter".into(),
                "rules ALLOW".into(),
                format!("rules   ns[foo]-policy[all]-rule[0]: {ALL}"),
            ],
        ),
        (
            "gRPC provider named ns/host, two policies in one marking filter",
            ext_authz_service() + &custom("a", "grpc-authz", ADMIN) + &custom("b", "grpc-authz", "  - {}\n"),
            vec![
                "filter".into(),
                "shadow prefix istio_ext_authz_".into(),
                "shadow DENY".into(),
                "shadow   istio-ext-authz-grpc-authz-ns[foo]-policy[a]-rule[0]: permissions [and(or(path(exact /admin)))] principals [and(any)]".into(),
                format!("shadow   istio-ext-authz-grpc-authz-ns[foo]-policy[b]-rule[0]: {ALL}"),
                "ext_authz fail_open=false status_on_error=503 body=4096/true/false when metadata(envoy.filters.http.rbac [istio_ext_authz_shadow_effective_policy_id] prefix istio-ext-authz-grpc-authz-)".into(),
                "  grpc outbound|9000||ext-authz.foo.svc.cluster.local authority outbound_.9000_._.ext-authz.foo.svc.cluster.local timeout 600.000s".into(),
            ],
        ),
        (
            "a provider whose service is not in the registry fails closed",
            ext_authz_service() + &custom("ext", "lost", ADMIN),
            vec![
                "filter".into(),
                "rules DENY".into(),
                "rules   istio-ext-authz-lost-ns[foo]-policy[ext]-rule[0]-deny-due-to-bad-CUSTOM-action: permissions [and(or(path(exact /admin)))] principals [and(any)]".into(),
            ],
        ),
        (
            "a provider of another kind fails closed",
            ext_authz_service() + &custom("ext", "zipkin", ADMIN),
            vec![
                "filter".into(),
                "rules DENY".into(),
                "rules   istio-ext-authz-zipkin-ns[foo]-policy[ext]-rule[0]-deny-due-to-bad-CUSTOM-action: permissions [and(or(path(exact /admin)))] principals [and(any)]".into(),
            ],
        ),
        (
            "two providers on one workload: both deny what they match, as istiod does",
            ext_authz_service() + &custom("a", "http-authz", ADMIN) + &custom("b", "grpc-authz", "  - {}\n"),
            vec![
                "filter".into(),
                "rules DENY".into(),
                format!("rules   istio-ext-authz-grpc-authz-ns[foo]-policy[b]-rule[0]-deny-due-to-bad-CUSTOM-action: {ALL}"),
                "filter".into(),
                "rules DENY".into(),
                "rules   istio-ext-authz-http-authz-ns[foo]-policy[a]-rule[0]-deny-due-to-bad-CUSTOM-action: permissions [and(or(path(exact /admin)))] principals [and(any)]".into(),
            ],
        ),
        (
            "a dry-run CUSTOM policy is left out",
            ext_authz_service()
                + "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: dry\n  namespace: foo\n  annotations: {istio.io/dry-run: \"true\"}\nspec:\n  action: CUSTOM\n  provider: {name: http-authz}\n  rules: [{}]\n---\n",
            vec![],
        ),
    ];
    for (name, text, want) in cases {
        let model = model_of(&text, MeshConfigText(PROVIDERS));
        assert_eq!(http(&model, "foo", &[("app", "web")]), want, "case {name}");
    }
}

#[test]
fn custom_on_tcp_takes_a_grpc_provider_only() {
    let cases: Vec<(&str, String, Vec<String>)> = vec![
        (
            "gRPC provider: network marking RBAC and ext_authz",
            ext_authz_service() + &custom("ext", "grpc-authz", "  - from:\n    - source: {ipBlocks: [10.0.0.0/8]}\n"),
            vec![
                "filter".into(),
                "shadow prefix istio_ext_authz_".into(),
                "shadow DENY".into(),
                "shadow   istio-ext-authz-grpc-authz-ns[foo]-policy[ext]-rule[0]: permissions [and(any)] principals [and(or(direct_remote_ip(10.0.0.0/8)))]".into(),
                "ext_authz fail_open=false when metadata(envoy.filters.network.rbac [istio_ext_authz_shadow_effective_policy_id] prefix istio-ext-authz-grpc-authz-)".into(),
                "  grpc outbound|9000||ext-authz.foo.svc.cluster.local authority outbound_.9000_._.ext-authz.foo.svc.cluster.local timeout 600.000s".into(),
            ],
        ),
        (
            "HTTP provider: nothing on TCP",
            ext_authz_service() + &custom("ext", "http-authz", "  - {}\n"),
            vec![],
        ),
        (
            "a provider that cannot be used still fails closed",
            ext_authz_service() + &custom("ext", "nope", "  - {}\n"),
            vec![
                "filter".into(),
                "rules DENY".into(),
                format!("rules   istio-ext-authz-nope-ns[foo]-policy[ext]-rule[0]-deny-due-to-bad-CUSTOM-action: {ALL}"),
            ],
        ),
    ];
    for (name, text, want) in cases {
        let model = model_of(&text, MeshConfigText(PROVIDERS));
        assert_eq!(
            tcp(&model, "foo", &[("app", "web")], 5432),
            want,
            "case {name}"
        );
    }
}
