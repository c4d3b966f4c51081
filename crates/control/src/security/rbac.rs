//! AuthorizationPolicy → Envoy's RBAC filters, as istiod generates them (`pilot/pkg/security/authz`):
//! pure functions of the model and a workload.
//!
//! **Filters.** One filter per action the workload's policies use, in Istio's order: CUSTOM, AUDIT
//! (action `LOG`: marks, never denies), DENY, ALLOW. HTTP listeners get `envoy.filters.http.rbac`, TCP listeners
//! `envoy.filters.network.rbac` (stat prefix `tcp.`). A workload without ALLOW policies gets no ALLOW
//! filter, so what DENY does not deny is allowed; one with ALLOW policies gets an ALLOW filter even when
//! none of their rules can match, and that filter denies everything. A policy annotated
//! `istio.io/dry-run: "true"` goes into the filter's `shadow_rules` (stat prefix `istio_dry_run_allow_` or
//! `istio_dry_run_deny_`) instead of `rules`; a filter whose policies are all dry runs has no `rules`,
//! so it enforces nothing.
//!
//! **CUSTOM.** The enforced CUSTOM policies of a workload name one provider (Istio allows one per
//! workload). When MeshConfig has it as `envoyExtAuthzHttp` or `envoyExtAuthzGrpc` and its service is in
//! the registry, their rules (names `istio-ext-authz-<provider>-ns[..]-policy[..]-rule[i]`) become the
//! `shadow_rules` of an RBAC filter that only marks the requests they match (stat prefix
//! `istio_ext_authz_`), followed by the `ext_authz` filter those marks enable ([`super::ext_authz`]).
//! On a TCP listener that takes a gRPC provider (the network filters); an HTTP provider's policies
//! do nothing there, as in Istio. A provider that cannot be used (not in MeshConfig, another kind, a
//! service not in the registry), or more than one provider on a workload, fails closed the way istiod
//! does: a DENY filter denies what the rules match (names suffixed
//! `-deny-due-to-bad-CUSTOM-action`). A dry-run CUSTOM policy is left out.
//!
//! **Policies.** Each rule of a policy is one Envoy policy named `ns[<ns>]-policy[<name>]-rule[<i>]`; a
//! policy without rules is one that never matches (`not_rule: any`, `not_id: any`), named `rule[0]`.
//! A rule's `from` entries become its principals, its `to` entries its permissions (one `any` when
//! absent), each an `and` of the fields set, each field an `or` of its values (`not_*` forms and
//! `notValues` are `not_id` / `not_rule` of that `or`); `when` conditions are added to every principal
//! (identity keys) or permission (connection keys).
//!
//! | Istio | Envoy |
//! |---|---|
//! | `principals`, `source.principal` | `authenticated.principal_name`, `spiffe://` put back; trust domain aliases expanded |
//! | `namespaces`, `source.namespace` | `authenticated.principal_name` regex `.*/ns/<ns>/.*` |
//! | `serviceAccounts`, `source.serviceAccount` | `authenticated.principal_name` regex `spiffe://.+/ns/<ns>/(.+/\|)sa/<sa>(/.+)?` |
//! | `trustDomains`, `source.trustDomain` | `authenticated.principal_name` prefix `spiffe://<td>/` |
//! | `ipBlocks`, `source.ip` | `direct_remote_ip` |
//! | `remoteIpBlocks`, `remote.ip` | `remote_ip` |
//! | `requestPrincipals`, `request.auth.principal` | `metadata` `istio_authn` `[request.auth.principal]`, a string |
//! | `request.auth.audiences`, `.presenter`, `.claims[a][b]` | `metadata` `istio_authn` `[request.auth.audiences]` (`[request.auth.claims, a, b]`), a string or a list holding one |
//! | `request.headers[h]` | `header` `h` |
//! | `hosts` | `header` `:authority`, ignoring case |
//! | `methods` | `header` `:method` |
//! | `paths` | `url_path`; with `{*}`/`{**}`, `uri_template` (`*`/`**`) |
//! | `ports`, `destination.port` | `destination_port` |
//! | `destination.ip` | `destination_ip` |
//! | `connection.sni` | `requested_server_name` |
//! | `experimental.envoy.filters.f[k]` | `metadata` `envoy.filters.f` `[k]` |
//!
//! Strings take Istio's forms: `abc` exact, `abc*` prefix, `*abc` suffix, `*` any non-empty value.
//!
//! **TCP.** HTTP-only fields (`hosts`, `methods`, `paths`, `requestPrincipals`, `request.headers`,
//! `request.auth.*`) cannot match a connection: an ALLOW rule using one is left out (it never
//! matches), a DENY or AUDIT rule drops them and matches on the rest. A network filter is built for one
//! listener port, and rules whose `to` names only other ports (or excludes this one) are left out.
//!
//! **Encoding.** Envoy's `RBAC.policies` is a map, which prost generates as a `HashMap` and encodes in
//! a different order every time; the filters here are encoded with the policies sorted by name, so one
//! model always gives the same bytes (and the same xDS version).

use super::authorization_policies;
use crate::model::Model;
use std::collections::BTreeMap;
use weft_api::security::authorization_policy::{
    is_path_template, parse_cidr, parse_port, Action, ConditionKey, Operation, Rule, Source,
};
use weft_api::security::is_dry_run;
use weft_api::MeshConfig;
use weft_xds::pb::envoy::config::core::v3::{CidrRange, TypedExtensionConfig};
use weft_xds::pb::envoy::config::listener::v3::{filter, Filter};
use weft_xds::pb::envoy::config::rbac::v3::{
    permission, principal, rbac::Action as RbacAction, Permission, Policy, Principal,
};
use weft_xds::pb::envoy::config::route::v3::{header_matcher::HeaderMatchSpecifier, HeaderMatcher};
use weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpFilter,
};
use weft_xds::pb::envoy::extensions::path::r#match::uri_template::v3::UriTemplateMatchConfig;
use weft_xds::pb::envoy::r#type::matcher::v3::{
    list_matcher, metadata_matcher::path_segment::Segment, metadata_matcher::PathSegment,
    path_matcher, string_matcher::MatchPattern, value_matcher, ListMatcher, MetadataMatcher,
    OrMatcher, PathMatcher, RegexMatcher, StringMatcher, ValueMatcher,
};
use weft_xds::pb::google::protobuf::UInt32Value;
use weft_xds::{pack, Any};

/// The HTTP RBAC filter's name.
pub const HTTP_RBAC_FILTER: &str = "envoy.filters.http.rbac";
/// The network RBAC filter's name.
pub const NETWORK_RBAC_FILTER: &str = "envoy.filters.network.rbac";
/// The type of the HTTP RBAC filter's config.
pub const HTTP_RBAC_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
/// The type of the network RBAC filter's config.
pub const NETWORK_RBAC_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";
/// The type of the URI template matcher in a `uri_template` permission.
pub const URI_TEMPLATE_TYPE: &str =
    "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig";
/// The dynamic metadata namespace of the request's JWT result (Istio's `istio_authn` filter).
pub const ISTIO_AUTHN: &str = "istio_authn";
/// The network RBAC filter's stat prefix, as Istio sets it.
pub const TCP_STAT_PREFIX: &str = "tcp.";
/// The stat prefix of dry-run ALLOW policies.
pub const DRY_RUN_ALLOW_PREFIX: &str = "istio_dry_run_allow_";
/// The stat prefix of dry-run DENY policies.
pub const DRY_RUN_DENY_PREFIX: &str = "istio_dry_run_deny_";

/// The authorization filters of a workload in `namespace` with `labels`, for its HTTP connection
/// manager: CUSTOM (the marking `envoy.filters.http.rbac` and `envoy.filters.http.ext_authz`, or a
/// DENY RBAC filter when the provider cannot be used), then the AUDIT, DENY and ALLOW
/// `envoy.filters.http.rbac` filters, those the workload's policies use; empty when no
/// AuthorizationPolicy applies.
pub fn rbac_http_filters(
    model: &Model,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<HttpFilter> {
    let typed = |name: &str, any: Any| HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any)),
        ..Default::default()
    };
    let mut out = Vec::new();
    for e in build(model, namespace, labels, None) {
        match e {
            Engine::Rbac(b) => out.push(typed(HTTP_RBAC_FILTER, b.http())),
            Engine::ExtAuthz { shadow, authz } => {
                out.push(typed(HTTP_RBAC_FILTER, Built::marking(shadow).http()));
                out.push(typed(
                    super::ext_authz::HTTP_EXT_AUTHZ_FILTER,
                    authz.http(HTTP_RBAC_FILTER),
                ));
            }
        }
    }
    out
}

/// The filters of a workload's TCP listener on `port` (the workload port), to go before `tcp_proxy`:
/// CUSTOM (the marking `envoy.filters.network.rbac` and `envoy.filters.network.ext_authz` of a gRPC
/// provider, or a DENY RBAC filter), then the AUDIT, DENY and ALLOW `envoy.filters.network.rbac`;
/// empty when no AuthorizationPolicy applies.
pub fn rbac_network_filters(
    model: &Model,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    port: u32,
) -> Vec<Filter> {
    let typed = |name: &str, any: Any| Filter {
        name: name.into(),
        config_type: Some(filter::ConfigType::TypedConfig(any)),
    };
    let mut out = Vec::new();
    for e in build(model, namespace, labels, Some(port)) {
        match e {
            Engine::Rbac(b) => out.push(typed(NETWORK_RBAC_FILTER, b.network())),
            Engine::ExtAuthz { shadow, authz } => {
                // An HTTP provider cannot check a connection: its policies do nothing on TCP.
                let Some(any) = authz.network(NETWORK_RBAC_FILTER) else {
                    continue;
                };
                out.push(typed(NETWORK_RBAC_FILTER, Built::marking(shadow).network()));
                out.push(typed(super::ext_authz::NETWORK_EXT_AUTHZ_FILTER, any));
            }
        }
    }
    out
}

/// What one filter (or, for CUSTOM with a usable provider, pair of filters) is built from.
#[derive(Debug)]
enum Engine {
    /// An RBAC filter.
    Rbac(Built),
    /// The marking RBAC filter's shadow rules and the ext_authz filter they enable.
    ExtAuthz {
        shadow: wire::Rbac,
        authz: Box<super::ext_authz::Resolved>,
    },
}

/// The RBAC engines of one action: the enforced policies and the dry-run ones.
#[derive(Debug, Default)]
struct Built {
    rules: Option<wire::Rbac>,
    shadow: Option<wire::Rbac>,
    /// The shadow stat prefix, when not the dry-run one of the shadow rules' action.
    shadow_prefix: Option<&'static str>,
}

impl Built {
    /// The RBAC filter that only marks requests for ext_authz: the CUSTOM rules as shadow rules.
    fn marking(shadow: wire::Rbac) -> Built {
        Built {
            rules: None,
            shadow: Some(shadow),
            shadow_prefix: Some(super::ext_authz::SHADOW_PREFIX),
        }
    }

    fn shadow_prefix(&self) -> String {
        if let Some(p) = self.shadow_prefix {
            return p.into();
        }
        match self.shadow.as_ref().map(|s| s.action) {
            Some(a) if a == RbacAction::Allow as i32 => DRY_RUN_ALLOW_PREFIX.into(),
            Some(a) if a == RbacAction::Deny as i32 => DRY_RUN_DENY_PREFIX.into(),
            _ => String::new(),
        }
    }

    fn http(self) -> Any {
        let shadow_rules_stat_prefix = self.shadow_prefix();
        pack(
            HTTP_RBAC_TYPE,
            &wire::HttpRbac {
                rules: self.rules,
                shadow_rules: self.shadow,
                shadow_rules_stat_prefix,
            },
        )
    }

    fn network(self) -> Any {
        let shadow_rules_stat_prefix = self.shadow_prefix();
        pack(
            NETWORK_RBAC_TYPE,
            &wire::NetworkRbac {
                rules: self.rules,
                shadow_rules: self.shadow,
                stat_prefix: TCP_STAT_PREFIX.into(),
                shadow_rules_stat_prefix,
            },
        )
    }
}

/// The engines of a workload, in filter order: CUSTOM, then one per other action in use. `tcp` is the
/// listener port of a TCP listener, `None` for HTTP.
fn build(
    model: &Model,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    tcp: Option<u32>,
) -> Vec<Engine> {
    let policies = authorization_policies(model, namespace, labels);
    if policies.is_empty() {
        return Vec::new();
    }
    let trust = trust_domains(&model.mesh);
    let mut out = custom(model, &policies, &trust, tcp);
    for (action, engine) in [
        (Action::Audit, RbacAction::Log),
        (Action::Deny, RbacAction::Deny),
        (Action::Allow, RbacAction::Allow),
    ] {
        let mut built = Built::default();
        let mut any = false;
        for r in &policies {
            let Some(ap) = r.as_authorization_policy().filter(|p| p.action == action) else {
                continue;
            };
            let dry_run = is_dry_run(r);
            any = true;
            let target = if dry_run {
                &mut built.shadow
            } else {
                &mut built.rules
            };
            let rbac = target.get_or_insert_with(|| wire::Rbac {
                action: engine as i32,
                policies: BTreeMap::new(),
            });
            let ctx = Ctx {
                policy_namespace: &r.metadata.namespace,
                trust: &trust,
                tcp,
                allow: action == Action::Allow,
            };
            add_rules(rbac, &ap.rules, &ctx, |i| {
                policy_name(&r.metadata.namespace, &r.metadata.name, i)
            });
        }
        if any {
            out.push(Engine::Rbac(built));
        }
    }
    out
}

/// One Envoy policy per rule (named by `name_of`), or one that never matches for a policy without
/// rules.
fn add_rules(rbac: &mut wire::Rbac, rules: &[Rule], ctx: &Ctx, name_of: impl Fn(usize) -> String) {
    if rules.is_empty() {
        rbac.policies.insert(name_of(0), match_never());
        return;
    }
    for (i, rule) in rules.iter().enumerate() {
        if let Some(p) = generate(rule, ctx) {
            rbac.policies.insert(name_of(i), p);
        }
    }
}

/// The CUSTOM engines: per provider, the marking rules and the ext_authz filter, or (a provider that
/// cannot be used, or several providers) a DENY filter of the same rules.
fn custom(
    model: &Model,
    policies: &[&std::sync::Arc<weft_api::Resource>],
    trust: &[String],
    tcp: Option<u32>,
) -> Vec<Engine> {
    let mut by_provider: BTreeMap<&str, wire::Rbac> = BTreeMap::new();
    for r in policies {
        let Some(ap) = r
            .as_authorization_policy()
            .filter(|p| p.action == Action::Custom)
        else {
            continue;
        };
        if is_dry_run(r) {
            // Istio still calls the authorizer for a dry-run CUSTOM policy (its own TODO); weft
            // leaves it out, so a dry run never changes a request.
            continue;
        }
        // The analyzer refuses a CUSTOM policy without a provider; one here is unchecked.
        let Some(provider) = ap.provider.as_ref().map(|p| p.name.as_str()) else {
            continue;
        };
        let rbac = by_provider.entry(provider).or_insert_with(|| wire::Rbac {
            action: RbacAction::Deny as i32,
            policies: BTreeMap::new(),
        });
        let ctx = Ctx {
            policy_namespace: &r.metadata.namespace,
            trust,
            tcp,
            allow: false,
        };
        add_rules(rbac, &ap.rules, &ctx, |i| {
            ext_authz_policy_name(provider, &r.metadata.namespace, &r.metadata.name, i)
        });
    }
    let several = by_provider.len();
    let mut out = Vec::new();
    for (provider, rbac) in by_provider {
        let resolved = if several > 1 {
            Err(format!(
                "{several} CUSTOM providers on one workload (Istio allows one)"
            ))
        } else {
            super::ext_authz::resolve(model, provider).map_err(|e| e.to_string())
        };
        match resolved {
            Ok(authz) => out.push(Engine::ExtAuthz {
                shadow: rbac,
                authz: Box::new(authz),
            }),
            Err(why) => {
                tracing::debug!(provider, %why, "CUSTOM provider cannot be used; denying what its policies match");
                let policies = rbac
                    .policies
                    .into_iter()
                    .map(|(name, p)| (format!("{name}{BAD_CUSTOM_SUFFIX}"), p))
                    .collect();
                out.push(Engine::Rbac(Built {
                    rules: Some(wire::Rbac {
                        action: RbacAction::Deny as i32,
                        policies,
                    }),
                    ..Default::default()
                }));
            }
        }
    }
    out
}

/// Appended to the names of CUSTOM rules denied because their provider cannot be used.
pub const BAD_CUSTOM_SUFFIX: &str = "-deny-due-to-bad-CUSTOM-action";

/// Istio's name of the Envoy policy for rule `i` of a policy.
pub fn policy_name(namespace: &str, name: &str, i: usize) -> String {
    format!("ns[{namespace}]-policy[{name}]-rule[{i}]")
}

/// Istio's name of the Envoy policy for rule `i` of a CUSTOM policy of `provider` (the prefix is what
/// the ext_authz filter's `filter_enabled_metadata` looks for).
pub fn ext_authz_policy_name(provider: &str, namespace: &str, name: &str, i: usize) -> String {
    format!(
        "{}-{provider}-{}",
        super::ext_authz::MATCH_PREFIX,
        policy_name(namespace, name, i)
    )
}

/// Istio's name of the DENY policy it puts in place of rule `i` of a CUSTOM policy whose provider it
/// cannot use.
pub fn custom_policy_name(provider: &str, namespace: &str, name: &str, i: usize) -> String {
    format!(
        "{}{BAD_CUSTOM_SUFFIX}",
        ext_authz_policy_name(provider, namespace, name, i)
    )
}

/// The mesh's trust domain, then its aliases: principals of one are written for all of them.
fn trust_domains(mesh: &MeshConfig) -> Vec<String> {
    let mut out = vec![mesh.trust_domain.clone()];
    out.extend(
        mesh.trust_domain_aliases
            .iter()
            .filter(|a| **a != mesh.trust_domain)
            .cloned(),
    );
    out
}

/// What generating one rule needs.
struct Ctx<'a> {
    /// The policy's namespace (the default namespace of `serviceAccounts`).
    policy_namespace: &'a str,
    /// The trust domain and its aliases.
    trust: &'a [String],
    /// The listener port, for TCP.
    tcp: Option<u32>,
    /// An ALLOW policy: a value that cannot be matched drops its whole rule (rather than the value).
    allow: bool,
}

/// An attribute a rule tests, as Envoy can express it.
#[derive(Debug, Clone, PartialEq)]
enum Attr {
    Principal,
    RequestPrincipal,
    ServiceAccount,
    TrustDomain,
    Namespace,
    RemoteIp,
    SourceIp,
    Header(String),
    Audiences,
    Presenter,
    Claims(Vec<String>),
    Host,
    Method,
    Path,
    Port,
    DestinationIp,
    Sni,
    EnvoyFilter { filter: String, key: String },
}

impl Attr {
    fn from_key(k: ConditionKey) -> Attr {
        match k {
            ConditionKey::RequestHeader(h) => Attr::Header(h),
            ConditionKey::SourceIp => Attr::SourceIp,
            ConditionKey::RemoteIp => Attr::RemoteIp,
            ConditionKey::SourceNamespace => Attr::Namespace,
            ConditionKey::SourcePrincipal => Attr::Principal,
            ConditionKey::SourceServiceAccount => Attr::ServiceAccount,
            ConditionKey::SourceTrustDomain => Attr::TrustDomain,
            ConditionKey::RequestPrincipal => Attr::RequestPrincipal,
            ConditionKey::RequestAudiences => Attr::Audiences,
            ConditionKey::RequestPresenter => Attr::Presenter,
            ConditionKey::RequestClaims(c) => Attr::Claims(c),
            ConditionKey::DestinationIp => Attr::DestinationIp,
            ConditionKey::DestinationPort => Attr::Port,
            ConditionKey::ConnectionSni => Attr::Sni,
            ConditionKey::EnvoyFilter { filter, key } => Attr::EnvoyFilter { filter, key },
        }
    }

    /// Tested on the connection or request (a permission), not on the caller (a principal).
    fn is_permission(&self) -> bool {
        matches!(
            self,
            Attr::Host
                | Attr::Method
                | Attr::Path
                | Attr::Port
                | Attr::DestinationIp
                | Attr::Sni
                | Attr::EnvoyFilter { .. }
        )
    }

    fn is_http_only(&self) -> bool {
        matches!(
            self,
            Attr::RequestPrincipal
                | Attr::Header(_)
                | Attr::Audiences
                | Attr::Presenter
                | Attr::Claims(_)
                | Attr::Host
                | Attr::Method
                | Attr::Path
        )
    }
}

/// One field of a rule: the attribute, its values and its negative values.
#[derive(Debug, Clone)]
struct Term {
    attr: Attr,
    values: Vec<String>,
    not_values: Vec<String>,
}

impl Term {
    fn new(attr: Attr, values: &[String], not_values: &[String]) -> Option<Term> {
        (!values.is_empty() || !not_values.is_empty()).then(|| Term {
            attr,
            values: values.to_vec(),
            not_values: not_values.to_vec(),
        })
    }
}

/// The rule cannot match (an ALLOW rule with something it cannot express): leave it out.
struct Skip;

/// The Envoy policy for one rule; `None` when the rule is left out.
fn generate(rule: &Rule, ctx: &Ctx) -> Option<Policy> {
    let mut base_principal = Vec::new();
    let mut base_permission = Vec::new();
    for c in &rule.when {
        let Ok(key) = ConditionKey::parse(&c.key) else {
            // The analyzer refuses unknown keys; one here means an unchecked resource. Istio drops the
            // rule of an ALLOW policy and the condition of any other.
            if ctx.allow {
                return None;
            }
            continue;
        };
        let attr = Attr::from_key(key);
        let to = if attr.is_permission() {
            &mut base_permission
        } else {
            &mut base_principal
        };
        to.extend(Term::new(attr, &c.values, &c.not_values));
    }
    let mut principals = Vec::new();
    for from in &rule.from {
        let mut terms = from.source.as_ref().map(source_terms).unwrap_or_default();
        terms.extend(base_principal.iter().cloned());
        principals.push(principal_and(&terms, ctx).ok()?);
    }
    if rule.from.is_empty() {
        principals.push(principal_and(&base_principal, ctx).ok()?);
    }
    let mut permissions = Vec::new();
    for to in &rule.to {
        if to
            .operation
            .as_ref()
            .is_some_and(|op| !serves_port(op, ctx.tcp))
        {
            continue;
        }
        let mut terms = to
            .operation
            .as_ref()
            .map(operation_terms)
            .unwrap_or_default();
        terms.extend(base_permission.iter().cloned());
        permissions.push(permission_and(&terms, ctx).ok()?);
    }
    if rule.to.is_empty() {
        permissions.push(permission_and(&base_permission, ctx).ok()?);
    }
    if permissions.is_empty() {
        // Every operation is for another port of this TCP listener's workload.
        return None;
    }
    Some(Policy {
        permissions,
        principals,
        ..Default::default()
    })
}

/// Whether an operation can match on the TCP listener port (always, for HTTP).
fn serves_port(op: &Operation, tcp: Option<u32>) -> bool {
    let Some(port) = tcp else {
        return true;
    };
    let has = |list: &[String]| list.iter().any(|p| parse_port(p) == Some(port));
    (op.ports.is_empty() || has(&op.ports)) && !has(&op.not_ports)
}

/// A source's fields in Istio's order (the order its generator puts them in the `and`).
fn source_terms(s: &Source) -> Vec<Term> {
    [
        Term::new(Attr::Principal, &s.principals, &s.not_principals),
        Term::new(
            Attr::RequestPrincipal,
            &s.request_principals,
            &s.not_request_principals,
        ),
        Term::new(
            Attr::ServiceAccount,
            &s.service_accounts,
            &s.not_service_accounts,
        ),
        Term::new(Attr::TrustDomain, &s.trust_domains, &s.not_trust_domains),
        Term::new(Attr::Namespace, &s.namespaces, &s.not_namespaces),
        Term::new(Attr::RemoteIp, &s.remote_ip_blocks, &s.not_remote_ip_blocks),
        Term::new(Attr::SourceIp, &s.ip_blocks, &s.not_ip_blocks),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// An operation's fields in Istio's order.
fn operation_terms(o: &Operation) -> Vec<Term> {
    [
        Term::new(Attr::Host, &o.hosts, &o.not_hosts),
        Term::new(Attr::Method, &o.methods, &o.not_methods),
        Term::new(Attr::Path, &o.paths, &o.not_paths),
        Term::new(Attr::Port, &o.ports, &o.not_ports),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Principals of one value of an attribute; `Err` when it cannot be expressed.
type One<T> = Result<T, ()>;

/// `and` of the terms' principals (`any` when there are none).
fn principal_and(terms: &[Term], ctx: &Ctx) -> Result<Principal, Skip> {
    let mut and = Vec::new();
    for t in terms {
        if ctx.tcp.is_some() && t.attr.is_http_only() {
            if ctx.allow {
                return Err(Skip);
            }
            continue;
        }
        let (values, not_values) = match t.attr {
            Attr::Principal => (
                with_aliases(&t.values, ctx.trust),
                with_aliases(&t.not_values, ctx.trust),
            ),
            Attr::TrustDomain => (
                expand_trust_domains(&t.values, ctx.trust),
                expand_trust_domains(&t.not_values, ctx.trust),
            ),
            _ => (t.values.clone(), t.not_values.clone()),
        };
        for (list, negate) in [(values, false), (not_values, true)] {
            if list.is_empty() {
                continue;
            }
            let p = match &t.attr {
                Attr::Audiences | Attr::Presenter | Attr::Claims(_) => {
                    Some(claim_principal(&t.attr, &list))
                }
                _ => {
                    let mut or = Vec::new();
                    for v in &list {
                        match value_principal(&t.attr, v, ctx) {
                            Ok(p) => or.push(p),
                            Err(()) if ctx.allow => return Err(Skip),
                            Err(()) => {}
                        }
                    }
                    (!or.is_empty()).then(|| {
                        principal(principal::Identifier::OrIds(principal::Set { ids: or }))
                    })
                }
            };
            if let Some(p) = p {
                and.push(if negate {
                    principal(principal::Identifier::NotId(Box::new(p)))
                } else {
                    p
                });
            }
        }
    }
    if and.is_empty() {
        and.push(principal(principal::Identifier::Any(true)));
    }
    Ok(principal(principal::Identifier::AndIds(principal::Set {
        ids: and,
    })))
}

/// `and` of the terms' permissions (`any` when there are none).
fn permission_and(terms: &[Term], ctx: &Ctx) -> Result<Permission, Skip> {
    let mut and = Vec::new();
    for t in terms {
        if ctx.tcp.is_some() && t.attr.is_http_only() {
            if ctx.allow {
                return Err(Skip);
            }
            continue;
        }
        for (list, negate) in [(&t.values, false), (&t.not_values, true)] {
            let mut or = Vec::new();
            for v in list {
                match value_permission(&t.attr, v) {
                    Ok(p) => or.push(p),
                    Err(()) if ctx.allow => return Err(Skip),
                    Err(()) => {}
                }
            }
            if or.is_empty() {
                continue;
            }
            let p = permission(permission::Rule::OrRules(permission::Set { rules: or }));
            and.push(if negate {
                permission(permission::Rule::NotRule(Box::new(p)))
            } else {
                p
            });
        }
    }
    if and.is_empty() {
        and.push(permission(permission::Rule::Any(true)));
    }
    Ok(permission(permission::Rule::AndRules(permission::Set {
        rules: and,
    })))
}

fn principal(id: principal::Identifier) -> Principal {
    Principal {
        identifier: Some(id),
    }
}

fn permission(rule: permission::Rule) -> Permission {
    Permission { rule: Some(rule) }
}

/// A policy that matches nothing, for a policy without rules.
fn match_never() -> Policy {
    Policy {
        permissions: vec![permission(permission::Rule::NotRule(Box::new(permission(
            permission::Rule::Any(true),
        ))))],
        principals: vec![principal(principal::Identifier::NotId(Box::new(
            principal(principal::Identifier::Any(true)),
        )))],
        ..Default::default()
    }
}

/// The principal of one value.
fn value_principal(attr: &Attr, v: &str, ctx: &Ctx) -> One<Principal> {
    use principal::Identifier as I;
    let authenticated = |m: StringMatcher| {
        principal(I::Authenticated(principal::Authenticated {
            principal_name: Some(m),
        }))
    };
    Ok(match attr {
        Attr::Principal => authenticated(string_matcher_with_prefix(v, "spiffe://")),
        Attr::Namespace => {
            let ns: Vec<String> = v.split('*').map(quote_meta).collect();
            authenticated(regex(&format!(".*/ns/{}/.*", ns.join(".*"))))
        }
        Attr::ServiceAccount => {
            let (ns, sa) = v.split_once('/').unwrap_or((ctx.policy_namespace, v));
            authenticated(regex(&format!(
                "spiffe://.+/ns/{}/(.+/|)sa/{}(/.+)?",
                quote_meta(ns),
                quote_meta(sa)
            )))
        }
        Attr::TrustDomain => authenticated(match v.split_once('*') {
            _ if v == "*" => exact_kind(MatchPattern::Prefix("spiffe://".into())),
            None => exact_kind(MatchPattern::Prefix(format!("spiffe://{v}/"))),
            Some((a, b)) => regex(&format!(
                "spiffe://{}[^/]*{}/.*",
                quote_meta(a),
                quote_meta(b)
            )),
        }),
        Attr::SourceIp => principal(I::DirectRemoteIp(cidr(v)?)),
        Attr::RemoteIp => principal(I::RemoteIp(cidr(v)?)),
        Attr::Header(name) => principal(I::Header(header_matcher(name, v, false))),
        Attr::RequestPrincipal => metadata_principal(MetadataMatcher {
            filter: ISTIO_AUTHN.into(),
            path: keys(&["request.auth.principal"]),
            value: Some(ValueMatcher {
                match_pattern: Some(value_matcher::MatchPattern::StringMatch(string_matcher(v))),
            }),
            invert: false,
        }),
        _ => return Err(()),
    })
}

/// The principal of `request.auth.audiences`, `.presenter` or `.claims[..]` for all its values: the
/// JWT result's value is a string or a list, and either matches when it holds one of the values (as
/// Istio's matcher for JWT claims).
fn claim_principal(attr: &Attr, values: &[String]) -> Principal {
    let path: Vec<String> = match attr {
        Attr::Audiences => vec!["request.auth.audiences".into()],
        Attr::Presenter => vec!["request.auth.presenter".into()],
        Attr::Claims(c) => std::iter::once("request.auth.claims".to_string())
            .chain(c.iter().cloned())
            .collect(),
        _ => Vec::new(),
    };
    let mut each: Vec<ValueMatcher> = values
        .iter()
        .map(|v| ValueMatcher {
            match_pattern: Some(value_matcher::MatchPattern::StringMatch(string_matcher(v))),
        })
        .collect();
    let value = if each.len() == 1 {
        each.remove(0)
    } else {
        ValueMatcher {
            match_pattern: Some(value_matcher::MatchPattern::OrMatch(OrMatcher {
                value_matchers: each,
            })),
        }
    };
    let list = ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::ListMatch(Box::new(
            ListMatcher {
                match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(value.clone()))),
            },
        ))),
    };
    metadata_principal(MetadataMatcher {
        filter: ISTIO_AUTHN.into(),
        path: path.into_iter().map(key).collect(),
        value: Some(ValueMatcher {
            match_pattern: Some(value_matcher::MatchPattern::OrMatch(OrMatcher {
                value_matchers: vec![list, value],
            })),
        }),
        invert: false,
    })
}

/// `metadata` is deprecated in Envoy for `sourced_metadata`, which means the same with the source
/// DYNAMIC; Istio sends `metadata`, and so does weft.
#[allow(deprecated)]
fn metadata_principal(m: MetadataMatcher) -> Principal {
    principal(principal::Identifier::Metadata(m))
}

#[allow(deprecated)]
fn metadata_permission(m: MetadataMatcher) -> Permission {
    permission(permission::Rule::Metadata(m))
}

/// The permission of one value.
fn value_permission(attr: &Attr, v: &str) -> One<Permission> {
    use permission::Rule as R;
    Ok(match attr {
        Attr::Host => permission(R::Header(header_matcher(":authority", v, true))),
        Attr::Method => permission(R::Header(header_matcher(":method", v, false))),
        Attr::Path if is_path_template(v) => {
            let template = v.replace("{**}", "**").replace("{*}", "*");
            permission(R::UriTemplate(TypedExtensionConfig {
                name: "uri-template".into(),
                typed_config: Some(pack(
                    URI_TEMPLATE_TYPE,
                    &UriTemplateMatchConfig {
                        path_template: template,
                    },
                )),
            }))
        }
        Attr::Path => permission(R::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(string_matcher(v))),
        })),
        Attr::Port => permission(R::DestinationPort(parse_port(v).ok_or(())?)),
        Attr::DestinationIp => permission(R::DestinationIp(cidr(v)?)),
        Attr::Sni => permission(R::RequestedServerName(string_matcher(v))),
        Attr::EnvoyFilter { filter, key: k } => {
            let inner = v.strip_prefix('[').and_then(|x| x.strip_suffix(']'));
            let value = match inner {
                Some(item) => value_matcher::MatchPattern::ListMatch(Box::new(ListMatcher {
                    match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(
                        ValueMatcher {
                            match_pattern: Some(value_matcher::MatchPattern::StringMatch(
                                string_matcher(item),
                            )),
                        },
                    ))),
                })),
                None => value_matcher::MatchPattern::StringMatch(string_matcher(v)),
            };
            metadata_permission(MetadataMatcher {
                filter: filter.clone(),
                path: vec![key(k.clone())],
                value: Some(ValueMatcher {
                    match_pattern: Some(value),
                }),
                invert: false,
            })
        }
        _ => return Err(()),
    })
}

fn key(k: String) -> PathSegment {
    PathSegment {
        segment: Some(Segment::Key(k)),
    }
}

fn keys(ks: &[&str]) -> Vec<PathSegment> {
    ks.iter().map(|k| key(k.to_string())).collect()
}

fn cidr(v: &str) -> One<CidrRange> {
    let (_, len) = parse_cidr(v).ok_or(())?;
    let address = v.split_once('/').map(|(a, _)| a).unwrap_or(v);
    Ok(CidrRange {
        address_prefix: address.to_string(),
        prefix_len: Some(UInt32Value { value: len }),
    })
}

fn exact_kind(p: MatchPattern) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(p),
        ignore_case: false,
    }
}

fn regex(re: &str) -> StringMatcher {
    exact_kind(MatchPattern::SafeRegex(RegexMatcher {
        regex: re.to_string(),
        ..Default::default()
    }))
}

/// Istio's string forms: `*` any non-empty value, `*abc` suffix, `abc*` prefix, else exact.
fn string_matcher(v: &str) -> StringMatcher {
    string_matcher_with_prefix(v, "")
}

/// [`string_matcher`] of `prefix` + `v`, where `*` alone ignores the prefix (as Istio's).
fn string_matcher_with_prefix(v: &str, prefix: &str) -> StringMatcher {
    if v == "*" {
        regex(".+")
    } else if let Some(suffix) = v.strip_prefix('*') {
        if prefix.is_empty() {
            exact_kind(MatchPattern::Suffix(suffix.to_string()))
        } else {
            regex(&format!("{}.*{}", quote_meta(prefix), quote_meta(suffix)))
        }
    } else if let Some(p) = v.strip_suffix('*') {
        exact_kind(MatchPattern::Prefix(format!("{prefix}{p}")))
    } else {
        exact_kind(MatchPattern::Exact(format!("{prefix}{v}")))
    }
}

/// A header matcher with Istio's string forms; `*` is presence.
fn header_matcher(name: &str, v: &str, ignore_case: bool) -> HeaderMatcher {
    let spec = if v == "*" {
        HeaderMatchSpecifier::PresentMatch(true)
    } else {
        let mut m = string_matcher(v);
        m.ignore_case = ignore_case;
        HeaderMatchSpecifier::StringMatch(m)
    };
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(spec),
        ..Default::default()
    }
}

/// Go's `regexp.QuoteMeta`: RE2's metacharacters escaped.
fn quote_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Principals written for the mesh's trust domain (or `cluster.local`, which Istio reads as the local
/// one) are written for each of its aliases too, as Istio's trust domain bundle does.
fn with_aliases(principals: &[String], trust: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in principals {
        let parts: Vec<&str> = p.split('/').collect();
        let td = parts.first().copied().unwrap_or_default();
        let ours = trust.iter().any(|t| t == td || suffix_match(t, td)) || td == "cluster.local";
        if parts.len() != 5 || td == "*" || !ours || trust.len() < 2 {
            if !out.contains(p) {
                out.push(p.clone());
            }
            continue;
        }
        for t in trust {
            let q = if suffix_match(t, td) {
                p.clone()
            } else {
                format!("{t}/{}", parts[1..].join("/"))
            };
            if !out.contains(&q) {
                out.push(q);
            }
        }
    }
    out
}

/// `*abc` matches `xabc`.
fn suffix_match(value: &str, pattern: &str) -> bool {
    pattern
        .strip_prefix('*')
        .is_some_and(|s| value.ends_with(s))
}

/// A trust domain of the bundle stands for all of them.
fn expand_trust_domains(values: &[String], trust: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        let group: Vec<String> = if trust.contains(v) {
            trust.to_vec()
        } else {
            vec![v.clone()]
        };
        for g in group {
            if !out.contains(&g) {
                out.push(g);
            }
        }
    }
    out
}

/// The RBAC messages with their policies in a `BTreeMap`: the same wire format as envoy-types'
/// (whose `HashMap` encodes in a random order), encoded in name order.
mod wire {
    use std::collections::BTreeMap;
    use weft_xds::pb::envoy::config::rbac::v3::Policy;

    /// `envoy.config.rbac.v3.RBAC`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Rbac {
        #[prost(int32, tag = "1")]
        pub action: i32,
        #[prost(btree_map = "string, message", tag = "2")]
        pub policies: BTreeMap<String, Policy>,
    }

    /// `envoy.extensions.filters.http.rbac.v3.RBAC`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct HttpRbac {
        #[prost(message, optional, tag = "1")]
        pub rules: Option<Rbac>,
        #[prost(message, optional, tag = "2")]
        pub shadow_rules: Option<Rbac>,
        #[prost(string, tag = "3")]
        pub shadow_rules_stat_prefix: String,
    }

    /// `envoy.extensions.filters.network.rbac.v3.RBAC`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct NetworkRbac {
        #[prost(message, optional, tag = "1")]
        pub rules: Option<Rbac>,
        #[prost(message, optional, tag = "2")]
        pub shadow_rules: Option<Rbac>,
        #[prost(string, tag = "3")]
        pub stat_prefix: String,
        #[prost(string, tag = "5")]
        pub shadow_rules_stat_prefix: String,
    }
}

#[cfg(test)]
mod tests;
