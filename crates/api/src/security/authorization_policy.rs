//! AuthorizationPolicy: who may do what to a workload
//! ([Istio's reference](https://istio.io/latest/docs/reference/config/security/authorization-policy/)), the
//! condition keys weft knows ([Istio's list](https://istio.io/latest/docs/reference/config/security/conditions/)),
//! and the checks of one policy.

use super::{check_scope, Problems, Selector, TargetRef};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// `spec` of an AuthorizationPolicy.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationPolicy {
    /// Workloads of the namespace this applies to (of every namespace, in the root namespace); without
    /// it, every workload of the namespace (of the mesh, in the root namespace).
    pub selector: Option<Selector>,
    /// A gateway or waypoint to attach to: such a policy applies to no sidecar.
    pub target_ref: Option<TargetRef>,
    /// Several of those.
    #[serde(default)]
    pub target_refs: Vec<TargetRef>,
    /// A request matches the policy when it matches one rule. No rules: it matches nothing (an ALLOW
    /// policy without rules denies everything).
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// What a match does (default ALLOW).
    #[serde(default)]
    pub action: Action,
    /// The external authorizer of a CUSTOM policy.
    pub provider: Option<ExtensionProvider>,
}

/// `action`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// Allow a request only if it matches some ALLOW policy of the workload (the default).
    #[default]
    Allow,
    /// Deny a request that matches.
    Deny,
    /// Mark a matching request for audit logging; no effect on the decision.
    Audit,
    /// Ask the external authorizer named by `provider` about a matching request.
    Custom,
}

impl Action {
    /// The action as Istio writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "ALLOW",
            Action::Deny => "DENY",
            Action::Audit => "AUDIT",
            Action::Custom => "CUSTOM",
        }
    }
}

/// `provider`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExtensionProvider {
    /// A name of MeshConfig's `extensionProviders` (an `envoyExtAuthzHttp` or `envoyExtAuthzGrpc`).
    #[serde(default)]
    pub name: String,
}

/// `rules[]`: matches when one `from`, one `to` and every `when` match; a missing section matches
/// anything, so `{}` matches every request.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    /// Sources.
    #[serde(default)]
    pub from: Vec<From>,
    /// Operations.
    #[serde(default)]
    pub to: Vec<To>,
    /// Conditions.
    #[serde(default)]
    pub when: Vec<Condition>,
}

/// `rules[].from[]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct From {
    /// The source (required).
    pub source: Option<Source>,
}

/// `rules[].to[]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct To {
    /// The operation (required).
    pub operation: Option<Operation>,
}

/// `from[].source`: fields are ANDed, the values of one field ORed. Every string takes Istio's exact,
/// `prefix*`, `*suffix` and `*` (present) forms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Source {
    /// Peer identities from the peer certificate, `<trust-domain>/ns/<namespace>/sa/<account>` (no
    /// `spiffe://`).
    #[serde(default)]
    pub principals: Vec<String>,
    /// Negative match of `principals`.
    #[serde(default)]
    pub not_principals: Vec<String>,
    /// Request identities from the JWT, `<iss>/<sub>`.
    #[serde(default)]
    pub request_principals: Vec<String>,
    /// Negative match of `requestPrincipals`.
    #[serde(default)]
    pub not_request_principals: Vec<String>,
    /// Namespaces from the peer certificate.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Negative match of `namespaces`.
    #[serde(default)]
    pub not_namespaces: Vec<String>,
    /// Service accounts from the peer certificate, `<namespace>/<account>` or `<account>` (the policy's
    /// namespace); no wildcards, at most 16, not with `principals` or `namespaces`.
    #[serde(default)]
    pub service_accounts: Vec<String>,
    /// Negative match of `serviceAccounts`.
    #[serde(default)]
    pub not_service_accounts: Vec<String>,
    /// Source addresses of the IP packet, IPs or CIDR ranges.
    #[serde(default)]
    pub ip_blocks: Vec<String>,
    /// Negative match of `ipBlocks`.
    #[serde(default)]
    pub not_ip_blocks: Vec<String>,
    /// Original client addresses (`X-Forwarded-For` or PROXY protocol), IPs or CIDR ranges.
    #[serde(default)]
    pub remote_ip_blocks: Vec<String>,
    /// Negative match of `remoteIpBlocks`.
    #[serde(default)]
    pub not_remote_ip_blocks: Vec<String>,
    /// Trust domains from the peer certificate.
    #[serde(default)]
    pub trust_domains: Vec<String>,
    /// Negative match of `trustDomains`.
    #[serde(default)]
    pub not_trust_domains: Vec<String>,
}

/// `to[].operation`: fields are ANDed, the values of one field ORed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Operation {
    /// `Host` / `:authority`, matched case-insensitively (HTTP only).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Negative match of `hosts`.
    #[serde(default)]
    pub not_hosts: Vec<String>,
    /// Destination ports, as strings.
    #[serde(default)]
    pub ports: Vec<String>,
    /// Negative match of `ports`.
    #[serde(default)]
    pub not_ports: Vec<String>,
    /// Methods (HTTP only; gRPC is always POST).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Negative match of `methods`.
    #[serde(default)]
    pub not_methods: Vec<String>,
    /// Normalized paths without the query (HTTP only); `{*}` and `{**}` are URI-template operators.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Negative match of `paths`.
    #[serde(default)]
    pub not_paths: Vec<String>,
}

/// `rules[].when[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Condition {
    /// An attribute ([`ConditionKey`]).
    #[serde(default)]
    pub key: String,
    /// Values, any of which matches.
    #[serde(default)]
    pub values: Vec<String>,
    /// Values none of which may match.
    #[serde(default)]
    pub not_values: Vec<String>,
}

/// The condition keys weft knows, as the analyzer lists them.
pub const CONDITION_KEYS: [&str; 15] = [
    "request.headers[<name>]",
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "source.serviceAccount",
    "source.trustDomain",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "request.auth.claims[<name>]",
    "destination.ip",
    "destination.port",
    "connection.sni",
    "experimental.envoy.filters.<filter>[<key>]",
];

/// A `when[].key`, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionKey {
    /// `request.headers[<name>]`: a request header (HTTP only); the name lowercased.
    RequestHeader(String),
    /// `source.ip`: the packet's source address.
    SourceIp,
    /// `remote.ip`: the original client address.
    RemoteIp,
    /// `source.namespace`: from the peer certificate.
    SourceNamespace,
    /// `source.principal`: the peer certificate's identity, without `spiffe://`.
    SourcePrincipal,
    /// `source.serviceAccount`: `<namespace>/<account>` from the peer certificate.
    SourceServiceAccount,
    /// `source.trustDomain`: from the peer certificate.
    SourceTrustDomain,
    /// `request.auth.principal`: the JWT's `<iss>/<sub>` (HTTP only).
    RequestPrincipal,
    /// `request.auth.audiences`: the JWT's `aud` (HTTP only).
    RequestAudiences,
    /// `request.auth.presenter`: the JWT's `azp` (HTTP only).
    RequestPresenter,
    /// `request.auth.claims[a][b]`: a JWT claim, nested names in order (HTTP only).
    RequestClaims(Vec<String>),
    /// `destination.ip`: the address the connection was made to.
    DestinationIp,
    /// `destination.port`: the port the connection was made to.
    DestinationPort,
    /// `connection.sni`: the TLS server name.
    ConnectionSni,
    /// `experimental.envoy.filters.<filter>[<key>]`: a key of a filter's dynamic metadata.
    EnvoyFilter {
        /// `envoy.filters.<filter>`.
        filter: String,
        /// The key.
        key: String,
    },
}

impl ConditionKey {
    /// Reads a key; the error says why it is refused.
    pub fn parse(key: &str) -> Result<ConditionKey, String> {
        let bracketed = |prefix: &str| -> Result<String, String> {
            let rest = &key[prefix.len()..];
            match rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                Some(name) if !name.is_empty() => Ok(name.to_string()),
                _ => Err(format!(
                    "key {key:?} needs a name in brackets: {prefix}[<name>]"
                )),
            }
        };
        Ok(match key {
            "source.ip" => ConditionKey::SourceIp,
            "remote.ip" => ConditionKey::RemoteIp,
            "source.namespace" => ConditionKey::SourceNamespace,
            "source.principal" => ConditionKey::SourcePrincipal,
            "source.serviceAccount" => ConditionKey::SourceServiceAccount,
            "source.trustDomain" => ConditionKey::SourceTrustDomain,
            "request.auth.principal" => ConditionKey::RequestPrincipal,
            "request.auth.audiences" => ConditionKey::RequestAudiences,
            "request.auth.presenter" => ConditionKey::RequestPresenter,
            "destination.ip" => ConditionKey::DestinationIp,
            "destination.port" => ConditionKey::DestinationPort,
            "connection.sni" => ConditionKey::ConnectionSni,
            "destination.namespace" => {
                return Err(format!(
                    "key {key:?} is replaced by the policy's namespace (Istio refuses it)"
                ))
            }
            "destination.name" | "destination.user" => {
                return Err(format!(
                    "key {key:?} was only supported by Istio's v1alpha1 RBAC (Istio refuses it)"
                ))
            }
            k if k.starts_with("request.headers") => {
                let name = bracketed("request.headers")?;
                if !is_header_name(&name) {
                    return Err(format!("{name:?} in key {key:?} is not a header name"));
                }
                ConditionKey::RequestHeader(name.to_ascii_lowercase())
            }
            k if k.starts_with("request.auth.claims") => {
                let rest = &k["request.auth.claims".len()..];
                let names = claim_names(rest).ok_or_else(|| {
                    format!("key {key:?} needs a claim name in brackets: request.auth.claims[<name>] (nested: [<a>][<b>])")
                })?;
                ConditionKey::RequestClaims(names)
            }
            k if k.starts_with("destination.labels") => {
                return Err(format!(
                    "key {key:?} is replaced by the policy's selector (Istio refuses it)"
                ))
            }
            k if k.starts_with("experimental.envoy.filters.") => {
                let path = &k["experimental.".len()..];
                match path.split_once('[') {
                    Some((filter, rest))
                        if filter.len() > "envoy.filters.".len()
                            && rest.len() > 1
                            && rest.ends_with(']') =>
                    {
                        ConditionKey::EnvoyFilter {
                            filter: filter.to_string(),
                            key: rest[..rest.len() - 1].to_string(),
                        }
                    }
                    _ => {
                        return Err(format!(
                            "key {key:?} needs the form experimental.envoy.filters.<filter>[<key>]"
                        ))
                    }
                }
            }
            _ => {
                return Err(format!(
                    "unknown condition key {key:?} (weft knows {})",
                    CONDITION_KEYS.join(", ")
                ))
            }
        })
    }

    /// Whether the attribute exists only for HTTP requests: on a TCP connection an ALLOW rule using it
    /// does not match and a DENY rule ignores it (so it matches), as Istio defines.
    pub fn is_http_only(&self) -> bool {
        matches!(
            self,
            ConditionKey::RequestHeader(_)
                | ConditionKey::RequestPrincipal
                | ConditionKey::RequestAudiences
                | ConditionKey::RequestPresenter
                | ConditionKey::RequestClaims(_)
        )
    }
}

/// `[a][b]` → `[a, b]`; `[a]` → `[a]`, as Istio reads nested claim names. `None` when not bracketed.
fn claim_names(s: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        let name = &inner[..end];
        if name.is_empty() || name.contains('[') {
            // Not a clean run of [..][..]: Istio reads the whole bracketed text as one name.
            let whole = s.strip_prefix('[')?.strip_suffix(']')?;
            return (!whole.is_empty()).then(|| vec![whole.to_string()]);
        }
        out.push(name.to_string());
        rest = &inner[end + 1..];
    }
    (!out.is_empty()).then_some(out)
}

fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:".contains(&b))
}

/// Parses an IP address or a CIDR range (`10.0.0.0/8`, `::1/128`).
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u32)> {
    match s.split_once('/') {
        Some((ip, len)) => {
            let ip: IpAddr = ip.parse().ok()?;
            let len: u32 = len.parse().ok()?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            (len <= max).then_some((ip, len))
        }
        None => {
            let ip: IpAddr = s.parse().ok()?;
            Some((ip, if ip.is_ipv4() { 32 } else { 128 }))
        }
    }
}

/// Parses a port as Istio writes them in rules (`"8080"`).
pub fn parse_port(s: &str) -> Option<u32> {
    s.parse::<u32>().ok().filter(|p| *p <= 65535)
}

/// Whether a path uses the `{*}` or `{**}` URI-template operators.
pub fn is_path_template(path: &str) -> bool {
    path.contains("{*}") || path.contains("{**}")
}

/// Istio's check of a path template: `{**}` only as the last operator, `{`/`}` only in an operator, and in
/// a template, segments of RFC 3986 path characters only (no `*` outside an operator).
fn path_template_problem(path: &str) -> Option<&'static str> {
    let template = is_path_template(path);
    let mut seen_any = false;
    for glob in path.trim_matches('/').split('/') {
        if glob == "{*}" || glob == "{**}" {
            if seen_any {
                return Some("{**} must be the last operator of a path template");
            }
            seen_any = glob == "{**}";
            continue;
        }
        if glob.contains(['{', '}']) {
            return Some("'{' and '}' are only allowed as the whole segments {*} and {**}");
        }
        if template
            && (glob.is_empty()
                || !glob
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&b)))
        {
            return Some("a path template's other segments must be non-empty runs of path characters (no '*': use {*} or {**})");
        }
    }
    None
}

/// The canonical form of a peer identity in a rule: `<trust-domain>/ns/<namespace>/sa/<account>`.
fn principal_form_ok(p: &str) -> bool {
    let parts: Vec<&str> = p.split('/').collect();
    parts.len() == 5 && parts[1] == "ns" && parts[3] == "sa" && parts.iter().all(|s| !s.is_empty())
}

impl Source {
    fn is_empty(&self) -> bool {
        *self == Source::default()
    }

    /// The fields and their values, with their YAML names.
    fn lists(&self) -> [(&'static str, &Vec<String>); 14] {
        [
            ("principals", &self.principals),
            ("notPrincipals", &self.not_principals),
            ("requestPrincipals", &self.request_principals),
            ("notRequestPrincipals", &self.not_request_principals),
            ("namespaces", &self.namespaces),
            ("notNamespaces", &self.not_namespaces),
            ("serviceAccounts", &self.service_accounts),
            ("notServiceAccounts", &self.not_service_accounts),
            ("ipBlocks", &self.ip_blocks),
            ("notIpBlocks", &self.not_ip_blocks),
            ("remoteIpBlocks", &self.remote_ip_blocks),
            ("notRemoteIpBlocks", &self.not_remote_ip_blocks),
            ("trustDomains", &self.trust_domains),
            ("notTrustDomains", &self.not_trust_domains),
        ]
    }

    /// Whether it sets a field TCP traffic has (all but the request principals).
    pub fn has_tcp_fields(&self) -> bool {
        self.lists()
            .iter()
            .any(|(name, v)| !v.is_empty() && !name.contains("equestPrincipals"))
    }
}

impl Operation {
    fn is_empty(&self) -> bool {
        *self == Operation::default()
    }

    fn lists(&self) -> [(&'static str, &Vec<String>); 8] {
        [
            ("hosts", &self.hosts),
            ("notHosts", &self.not_hosts),
            ("ports", &self.ports),
            ("notPorts", &self.not_ports),
            ("methods", &self.methods),
            ("notMethods", &self.not_methods),
            ("paths", &self.paths),
            ("notPaths", &self.not_paths),
        ]
    }

    /// Whether it sets a field only HTTP has (hosts, methods, paths and their `not` forms).
    pub fn has_http_fields(&self) -> bool {
        !(self.hosts.is_empty()
            && self.not_hosts.is_empty()
            && self.methods.is_empty()
            && self.not_methods.is_empty()
            && self.paths.is_empty()
            && self.not_paths.is_empty())
    }
}

/// Checks the values of one list field (`f` is its path) by what the field holds.
fn check_values(p: &mut Problems, f: &str, name: &str, values: &[String]) {
    for (i, v) in values.iter().enumerate() {
        let vf = format!("{f}[{i}]");
        if v.is_empty() {
            p.error(vf, name, "empty value");
            continue;
        }
        match name {
            "ipBlocks" | "notIpBlocks" | "remoteIpBlocks" | "notRemoteIpBlocks"
                if parse_cidr(v).is_none() =>
            {
                p.error(vf, v, format!("{v:?} is not an IP address or CIDR range"));
            }
            "ports" | "notPorts" if parse_port(v).is_none() => {
                p.error(vf, v, format!("{v:?} is not a port (0 to 65535)"));
            }
            "principals" | "notPrincipals" => check_principal(p, vf, v),
            "serviceAccounts" | "notServiceAccounts" => check_service_account(p, vf, v),
            "trustDomains" | "notTrustDomains" => check_trust_domain(p, vf, v),
            "paths" | "notPaths" => {
                if let Some(why) = path_template_problem(v) {
                    p.error(vf, v, format!("path {v:?}: {why}"));
                }
            }
            "methods" | "notMethods" if v.bytes().any(|b| b.is_ascii_lowercase()) => {
                p.warn(
                    vf,
                    v,
                    format!("method {v:?} never matches: methods are matched exactly and requests with lower-case methods are refused"),
                );
            }
            _ => {}
        }
    }
}

fn check_principal(p: &mut Problems, f: String, v: &str) {
    if let Some(rest) = v.strip_prefix("spiffe://") {
        p.error(
            f,
            v,
            format!("principal {v:?} has the spiffe:// scheme, which AuthorizationPolicy principals leave out: write {rest:?}"),
        );
    } else if !v.contains('*') && !principal_form_ok(v) {
        p.warn(
            f,
            v,
            format!("principal {v:?} is not of the form <trust-domain>/ns/<namespace>/sa/<service-account>: no mesh workload has it"),
        );
    }
}

fn check_service_account(p: &mut Problems, f: String, v: &str) {
    if v.contains('*') {
        p.error(
            f,
            v,
            format!("service account {v:?}: wildcards are not allowed"),
        );
    } else if v.len() > 320 {
        p.error(f, v, "a service account is at most 320 characters");
    } else if v.matches('/').count() > 1 || v.starts_with('/') || v.ends_with('/') {
        p.error(
            f,
            v,
            format!("service account {v:?} is not of the form <account> or <namespace>/<account>"),
        );
    }
}

fn check_trust_domain(p: &mut Problems, f: String, v: &str) {
    let stars = v.matches('*').count();
    if stars > 1 || (stars == 1 && v != "*" && !v.starts_with('*') && !v.ends_with('*')) {
        p.error(
            f,
            v,
            format!("trust domain {v:?}: one '*' at most, at the start or the end"),
        );
    } else if v.contains('/') {
        p.error(f, v, format!("trust domain {v:?} must not contain '/'"));
    }
}

/// Checks a condition's values for its key.
fn check_condition_values(p: &mut Problems, f: &str, key: &ConditionKey, c: &Condition) {
    for (list, values) in [("values", &c.values), ("notValues", &c.not_values)] {
        let name = match key {
            ConditionKey::SourceIp | ConditionKey::RemoteIp | ConditionKey::DestinationIp => {
                "ipBlocks"
            }
            ConditionKey::DestinationPort => "ports",
            ConditionKey::SourcePrincipal => "principals",
            ConditionKey::SourceServiceAccount => "serviceAccounts",
            ConditionKey::SourceTrustDomain => "trustDomains",
            _ => "",
        };
        check_values(p, &format!("{f}.{list}"), name, values);
        if name == "serviceAccounts" && values.len() > 16 {
            p.error(format!("{f}.{list}"), list, "at most 16 service accounts");
        }
    }
}

impl AuthorizationPolicy {
    /// Checks this resource on its own.
    pub(crate) fn validate(&self, p: &mut Problems) {
        check_scope(
            p,
            self.selector.as_ref(),
            self.target_ref.as_ref(),
            &self.target_refs,
        );
        match (self.action, &self.provider) {
            (Action::Custom, None) => p.error(
                "spec.provider",
                "CUSTOM",
                "a CUSTOM policy needs provider.name (one of MeshConfig's extensionProviders)",
            ),
            (Action::Custom, Some(pr)) if pr.name.is_empty() => p.error(
                "spec.provider.name",
                "provider",
                "provider.name must not be empty",
            ),
            (Action::Allow | Action::Deny | Action::Audit, Some(_)) => p.error(
                "spec.provider",
                "provider",
                format!(
                    "provider is for CUSTOM policies only (this one is {})",
                    self.action.as_str()
                ),
            ),
            _ => {}
        }
        if self.rules.is_empty() && matches!(self.action, Action::Deny | Action::Custom) {
            p.error(
                "spec.rules",
                "spec",
                format!(
                    "a {} policy without rules never matches (as in Istio, it is refused): add an empty rule {{}} to match every request",
                    self.action.as_str()
                ),
            );
        }
        for (i, rule) in self.rules.iter().enumerate() {
            self.validate_rule(p, &format!("spec.rules[{i}]"), rule);
        }
    }

    fn validate_rule(&self, p: &mut Problems, f: &str, rule: &Rule) {
        let custom = self.action == Action::Custom;
        let mut tcp_from = false;
        let mut has_from = false;
        for (j, from) in rule.from.iter().enumerate() {
            let ff = format!("{f}.from[{j}].source");
            let Some(src) = &from.source else {
                p.error(ff, "from", "a from entry needs a source");
                continue;
            };
            has_from = true;
            if src.is_empty() {
                p.error(ff, "source", "a source needs at least one field");
                continue;
            }
            tcp_from |= src.has_tcp_fields();
            let has_sa = !src.service_accounts.is_empty() || !src.not_service_accounts.is_empty();
            let has_id = !src.principals.is_empty()
                || !src.not_principals.is_empty()
                || !src.namespaces.is_empty()
                || !src.not_namespaces.is_empty();
            if has_sa && has_id {
                p.error(
                    format!("{ff}.serviceAccounts"),
                    "erviceAccounts",
                    "serviceAccounts cannot be set with principals or namespaces (the same identity, said twice)",
                );
            }
            for (name, values) in src.lists() {
                check_values(p, &format!("{ff}.{name}"), name, values);
                if name.ends_with("erviceAccounts") && values.len() > 16 {
                    p.error(format!("{ff}.{name}"), name, "at most 16 service accounts");
                }
                let peer = !name.contains("pBlocks");
                if custom && peer && !values.is_empty() {
                    p.error(
                        format!("{ff}.{name}"),
                        name,
                        format!("{name} is not supported with the CUSTOM action (as in Istio)"),
                    );
                }
            }
        }
        let mut tcp_to = false;
        let mut has_to = false;
        for (j, to) in rule.to.iter().enumerate() {
            let tf = format!("{f}.to[{j}].operation");
            let Some(op) = &to.operation else {
                p.error(tf, "to", "a to entry needs an operation");
                continue;
            };
            has_to = true;
            if op.is_empty() {
                p.error(tf, "operation", "an operation needs at least one field");
                continue;
            }
            tcp_to |= !op.ports.is_empty() || !op.not_ports.is_empty();
            for (name, values) in op.lists() {
                check_values(p, &format!("{tf}.{name}"), name, values);
            }
        }
        for (j, c) in rule.when.iter().enumerate() {
            let cf = format!("{f}.when[{j}]");
            if c.key.is_empty() {
                p.error(format!("{cf}.key"), "when", "key is required");
                continue;
            }
            let key = match ConditionKey::parse(&c.key) {
                Ok(k) => k,
                Err(why) => {
                    p.error(format!("{cf}.key"), &c.key, why);
                    continue;
                }
            };
            if c.values.is_empty() && c.not_values.is_empty() {
                p.error(cf.clone(), &c.key, "a condition needs values or notValues");
            }
            check_condition_values(p, &cf, &key, c);
            let peer = matches!(
                key,
                ConditionKey::SourceNamespace
                    | ConditionKey::SourceServiceAccount
                    | ConditionKey::SourceTrustDomain
                    | ConditionKey::SourcePrincipal
                    | ConditionKey::RequestPrincipal
                    | ConditionKey::RequestAudiences
                    | ConditionKey::RequestPresenter
                    | ConditionKey::RequestClaims(_)
            );
            if custom && peer {
                p.error(
                    format!("{cf}.key"),
                    &c.key,
                    format!(
                        "{} is not supported with the CUSTOM action (as in Istio)",
                        c.key
                    ),
                );
            }
        }
        // Istio's warning: a DENY rule whose only fields are HTTP ones matches every TCP connection.
        if self.action == Action::Deny
            && ((has_from && !has_to && !tcp_from) || (has_to && !tcp_to))
        {
            p.warn(
                f.to_string(),
                "DENY",
                "this DENY rule uses only HTTP fields in from or to, so it denies every TCP connection to the selected workloads; name the ports it is for",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_keys_are_read_like_istio() {
        let ok: &[(&str, ConditionKey)] = &[
            (
                "request.headers[X-Token]",
                ConditionKey::RequestHeader("x-token".into()),
            ),
            ("source.ip", ConditionKey::SourceIp),
            ("source.serviceAccount", ConditionKey::SourceServiceAccount),
            (
                "request.auth.claims[groups]",
                ConditionKey::RequestClaims(vec!["groups".into()]),
            ),
            (
                "request.auth.claims[nested][key]",
                ConditionKey::RequestClaims(vec!["nested".into(), "key".into()]),
            ),
            (
                "request.auth.claims[a.b]",
                ConditionKey::RequestClaims(vec!["a.b".into()]),
            ),
            (
                "experimental.envoy.filters.network.mysql_proxy[db.table]",
                ConditionKey::EnvoyFilter {
                    filter: "envoy.filters.network.mysql_proxy".into(),
                    key: "db.table".into(),
                },
            ),
        ];
        for (k, want) in ok {
            assert_eq!(ConditionKey::parse(k).as_ref(), Ok(want), "{k}");
        }
        for (k, want) in [
            ("request.headers", "key \"request.headers\" needs a name in brackets: request.headers[<name>]"),
            ("request.headers[]", "key \"request.headers[]\" needs a name in brackets: request.headers[<name>]"),
            ("destination.labels[app]", "key \"destination.labels[app]\" is replaced by the policy's selector (Istio refuses it)"),
            ("request.auth.claims", "key \"request.auth.claims\" needs a claim name in brackets: request.auth.claims[<name>] (nested: [<a>][<b>])"),
        ] {
            assert_eq!(ConditionKey::parse(k), Err(want.to_string()), "{k}");
        }
    }

    #[test]
    fn path_templates_follow_istios_rules() {
        for (path, ok) in [
            ("/foo/{*}", true),
            ("/foo/{**}/", true),
            ("/foo/{*}/bar/{**}", true),
            ("/admin*", true),
            ("/*/baz/{*}", false),
            ("/**/baz/{*}", false),
            ("/{**}/foo/{*}", false),
            ("/foo/{*}.txt", false),
            ("/foo/{bar}", false),
        ] {
            assert_eq!(path_template_problem(path).is_none(), ok, "{path}");
        }
    }

    #[test]
    fn cidrs_and_ports() {
        assert_eq!(parse_cidr("10.0.0.0/8").map(|c| c.1), Some(8));
        assert_eq!(parse_cidr("10.1.2.3").map(|c| c.1), Some(32));
        assert_eq!(parse_cidr("2001:db8::/32").map(|c| c.1), Some(32));
        assert!(parse_cidr("10.0.0.0/33").is_none());
        assert!(parse_cidr("example.com").is_none());
        assert_eq!(parse_port("8080"), Some(8080));
        assert_eq!(parse_port("65536"), None);
        assert_eq!(parse_port("http"), None);
    }
}
