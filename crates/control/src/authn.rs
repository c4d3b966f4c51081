//! RequestAuthentication → Envoy's `envoy.filters.http.jwt_authn` filter for a sidecar's inbound HTTP
//! listeners, as istiod builds it (`pilot/pkg/security/authn`, `convertToEnvoyJwtConfig`): the JWT rules
//! of every RequestAuthentication that applies to the workload, sorted by issuer, each one provider named
//! `origins-<i>` (Istio's names, which `istioctl proxy-config` users know), and one rule for `/`:
//! `requires_any` of the provider and `allow_missing` for one provider; for several, `requires_any` of
//! each provider and of `requires_all` of their optional forms. A request without a token passes
//! unauthenticated; a bad token is refused (SPEC.md §2.3).
//!
//! Keys are inlined (`local_jwks`): a rule's `jwks` as given; for `jwksUri` (or OpenID discovery when a
//! rule has neither) the JWKS weftd fetched ([`crate::jwks`], through the model's
//! [`Model::jwks`]), or, until a first fetch succeeds, [`STAND_IN_JWKS`], a key nobody holds, so that
//! every token of that issuer is refused rather than accepted unchecked (istiod does the same).
//!
//! Which policies apply follows Istio: those of the root namespace and of the workload's namespace
//! whose selector (if any) the workload's labels satisfy; one with a `targetRef` attaches to a gateway
//! or waypoint, never to a sidecar.

use crate::jwks::{Keys, Source, Wanted, DEFAULT_TIMEOUT};
use crate::model::Model;
use std::collections::{BTreeMap, BTreeSet};
use weft_api::security::request_authentication::JwtRule;
use weft_api::Resource;
use weft_xds::node::ProxyIdentity;
use weft_xds::pb::envoy::config::core::v3::{data_source, DataSource};
use weft_xds::pb::envoy::config::listener::v3::{filter, Listener};
use weft_xds::pb::envoy::config::route::v3::{route_match::PathSpecifier, RouteMatch};
use weft_xds::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    jwt_provider::{JwksSourceSpecifier, NormalizePayload},
    jwt_requirement::RequiresType,
    requirement_rule::RequirementType,
    JwtAuthentication, JwtClaimToHeader, JwtHeader, JwtProvider, JwtRequirement,
    JwtRequirementAndList, JwtRequirementOrList, RequirementRule,
};
use weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpConnectionManager, HttpFilter,
};

/// The filter's name (Istio's `EnvoyJwtFilterName`).
pub const FILTER_NAME: &str = "envoy.filters.http.jwt_authn";
/// The filter config's type URL.
pub const TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication";
/// Where Envoy puts a verified payload in the request's metadata (Istio's `EnvoyJwtFilterPayload`).
pub const PAYLOAD_IN_METADATA: &str = "payload";
/// Claims always read as space-separated lists (Istio's defaults for `spaceDelimitedClaims`).
pub const SPACE_DELIMITED_CLAIMS: [&str; 2] = ["permission", "scope"];
/// The keys inlined for a source not fetched yet: a 2048-bit RSA public key whose private half was
/// thrown away when it was made, so no token verifies (weft's own key; istiod inlines one of its own
/// for the same purpose).
pub const STAND_IN_JWKS: &str = r#"{"keys":[{"kty":"RSA","e":"AQAB","n":"pFKOGFMVy1r23A4U4YJ3Uf2TvvoJoVNmr8DBDNSSM4A95Lj2n5MdRmZE-CBBN0EVr5BXDzlb2aFHHZzr5ZPFvJ1qUPye0RlA35rWVU-aWvc6NJNVmmofrMcgjAJyNsEuJ8vE38HndAkR0agWhqE5hi6YXU1LSbH9_935mkLyLeXKSX9HAYIjhLTIzgZOjWC7fTnIqrg0p5oJcs143Dyc-8w-dt31nE7jmrvo8OeNNqcF7mRsJOoQzaA25Og4KV9H-dPp1R_pnD9p6Rgs9fcA2bQPUlYOfOu7ibae9ZhklT8zEiSe9R8IqWP1hOCFRApyksCo-kTR6wkl3HjG5zDspw"}]}"#;

/// The RequestAuthentications that apply to a workload in `namespace` with `labels`: the root
/// namespace's, then the namespace's, each by name (the model's resources are sorted).
pub fn applicable<'a>(
    model: &'a Model,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<&'a Resource> {
    let root = model.mesh.root_namespace.as_str();
    let mut out = Vec::new();
    for ns in [root, namespace] {
        for r in model
            .resources
            .iter()
            .filter(|r| r.metadata.namespace == ns)
        {
            let Some(ra) = r.as_request_authentication() else {
                continue;
            };
            if ra.target_ref.is_some() || !ra.target_refs.is_empty() {
                continue;
            }
            let selected = ra
                .selector
                .as_ref()
                .is_none_or(|s| weft_api::networking::labels_match(&s.match_labels, labels));
            if selected {
                out.push(&**r);
            }
        }
        if ns == namespace {
            break;
        }
    }
    out
}

/// Where a rule's keys come from when weftd fetches them: `None` for inline `jwks`.
pub fn source_of(rule: &JwtRule) -> Option<Source> {
    if rule.jwks.is_some() {
        return None;
    }
    Some(Source {
        issuer: rule.issuer.clone(),
        jwks_uri: rule.jwks_uri.clone(),
    })
}

/// Every source the model's RequestAuthentications name, with the longest timeout given for it: what
/// [`crate::jwks::Jwks::want`] is told after each config change.
pub fn jwks_sources(model: &Model) -> Wanted {
    let mut out = Wanted::new();
    for r in &model.resources {
        let Some(ra) = r.as_request_authentication() else {
            continue;
        };
        for rule in &ra.jwt_rules {
            let Some(s) = source_of(rule) else { continue };
            let t = rule.timeout.map_or(DEFAULT_TIMEOUT, |d| d.get());
            let e = out.entry(s).or_insert(t);
            *e = (*e).max(t);
        }
    }
    out
}

/// The `jwt_authn` filter for `proxy`'s inbound HTTP listeners, `None` when no RequestAuthentication
/// with a JWT rule applies to it.
pub fn jwt_filter(model: &Model, proxy: &ProxyIdentity) -> Option<HttpFilter> {
    let policies = applicable(model, &proxy.namespace, &proxy.labels);
    let rules: Vec<&JwtRule> = policies
        .iter()
        .filter_map(|r| r.as_request_authentication())
        .flat_map(|ra| ra.jwt_rules.iter())
        .collect();
    let config = jwt_authentication(&rules, &model.jwks)?;
    Some(HttpFilter {
        name: FILTER_NAME.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(weft_xds::pack(
            TYPE_URL, &config,
        ))),
        ..Default::default()
    })
}

/// Puts `filter` first among the HTTP filters of every connection manager in `listener` (every filter
/// chain: plaintext and mTLS alike), where Istio puts `jwt_authn`: before RBAC and the router.
pub fn add_jwt_filter(listener: &mut Listener, filter: Option<&HttpFilter>) {
    let Some(f) = filter else { return };
    let chains = listener
        .filter_chains
        .iter_mut()
        .chain(listener.default_filter_chain.iter_mut());
    for nf in chains.flat_map(|c| c.filters.iter_mut()) {
        let Some(filter::ConfigType::TypedConfig(any)) = &mut nf.config_type else {
            continue;
        };
        if any.type_url != weft_xds::type_url::HTTP_CONNECTION_MANAGER {
            continue;
        }
        // Built by weftd a moment ago: it decodes.
        let Ok(mut hcm) = weft_xds::unpack::<HttpConnectionManager>(any) else {
            continue;
        };
        hcm.http_filters.insert(0, f.clone());
        *any = weft_xds::pack(weft_xds::type_url::HTTP_CONNECTION_MANAGER, &hcm);
    }
}

fn requirement(t: RequiresType) -> JwtRequirement {
    JwtRequirement {
        requires_type: Some(t),
    }
}

/// Istio's filter config for these rules (in policy order; they are sorted by issuer here, stably),
/// with keys from `keys` for the fetched ones. `None` for no rules.
pub fn jwt_authentication(rules: &[&JwtRule], keys: &Keys) -> Option<JwtAuthentication> {
    if rules.is_empty() {
        return None;
    }
    let mut rules = rules.to_vec();
    rules.sort_by(|a, b| a.issuer.cmp(&b.issuer));
    let mut providers = std::collections::HashMap::new();
    let mut names = Vec::with_capacity(rules.len());
    for (i, rule) in rules.iter().enumerate() {
        let name = format!("origins-{i}");
        providers.insert(name.clone(), provider(rule, keys));
        names.push(name);
    }
    let by_name = |n: &str| requirement(RequiresType::ProviderName(n.to_string()));
    let optional = |n: &str| {
        requirement(RequiresType::RequiresAny(JwtRequirementOrList {
            requirements: vec![
                by_name(n),
                requirement(RequiresType::AllowMissing(Default::default())),
            ],
        }))
    };
    let requires = if let [only] = names.as_slice() {
        optional(only)
    } else {
        // Any provider's token; or, when several providers read the same place, each token valid for
        // its provider or absent (Istio's outer OR, for providers sharing a location).
        let mut any: Vec<JwtRequirement> = names.iter().map(|n| by_name(n)).collect();
        any.push(requirement(RequiresType::RequiresAll(
            JwtRequirementAndList {
                requirements: names.iter().map(|n| optional(n)).collect(),
            },
        )));
        requirement(RequiresType::RequiresAny(JwtRequirementOrList {
            requirements: any,
        }))
    };
    Some(JwtAuthentication {
        providers,
        rules: vec![RequirementRule {
            r#match: Some(RouteMatch {
                path_specifier: Some(PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            requirement_type: Some(RequirementType::Requires(requires)),
        }],
        bypass_cors_preflight: true,
        ..Default::default()
    })
}

/// One rule as an Envoy provider.
fn provider(rule: &JwtRule, keys: &Keys) -> JwtProvider {
    let jwks = match (&rule.jwks, source_of(rule)) {
        (Some(inline), _) => inline.clone(),
        (None, Some(s)) => keys.jwks(&s).unwrap_or(STAND_IN_JWKS).to_string(),
        (None, None) => STAND_IN_JWKS.to_string(),
    };
    let space_delimited: BTreeSet<String> = rule
        .space_delimited_claims
        .iter()
        .cloned()
        .chain(SPACE_DELIMITED_CLAIMS.iter().map(|c| c.to_string()))
        .collect();
    JwtProvider {
        issuer: rule.issuer.clone(),
        audiences: rule.audiences.clone(),
        forward: rule.forward_original_token,
        forward_payload_header: rule.output_payload_to_header.clone().unwrap_or_default(),
        payload_in_metadata: PAYLOAD_IN_METADATA.into(),
        normalize_payload_in_metadata: Some(NormalizePayload {
            space_delimited_claims: space_delimited.into_iter().collect(),
        }),
        from_headers: rule
            .from_headers
            .iter()
            .map(|h| JwtHeader {
                name: h.name.clone(),
                value_prefix: h.prefix.clone(),
            })
            .collect(),
        from_params: rule.from_params.clone(),
        from_cookies: rule.from_cookies.clone(),
        claim_to_headers: rule
            .output_claim_to_headers
            .iter()
            .map(|c| JwtClaimToHeader {
                header_name: c.header.clone(),
                claim_name: c.claim.clone(),
                ..Default::default()
            })
            .collect(),
        jwks_source_specifier: Some(JwksSourceSpecifier::LocalJwks(DataSource {
            specifier: Some(data_source::Specifier::InlineString(jwks)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwks::Entry;
    use std::sync::Arc;

    /// A model of these resources (YAML), every one accepted.
    fn model(yaml: &str) -> Model {
        let p = weft_api::parse_file("policies.yaml", yaml);
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        let res: Vec<Arc<Resource>> = p.resources.into_iter().map(Arc::new).collect();
        Model::build(1, &res, weft_api::MeshConfig::default())
    }

    fn proxy(ns: &str, labels: &[(&str, &str)]) -> ProxyIdentity {
        ProxyIdentity {
            workload: "reviews-v1".into(),
            namespace: ns.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            service_account: "reviews".into(),
            ip: "127.0.1.12".into(),
            inbound_ports: vec![(9080, 9080)],
            admin_address: String::new(),
            stats_address: String::new(),
            router: false,
        }
    }

    fn config(m: &Model, p: &ProxyIdentity) -> Option<JwtAuthentication> {
        let f = jwt_filter(m, p)?;
        assert_eq!(f.name, FILTER_NAME);
        let Some(http_filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            panic!("typed config");
        };
        assert_eq!(any.type_url, TYPE_URL);
        Some(weft_xds::unpack(any).expect("decodes"))
    }

    fn jwks_of(c: &JwtAuthentication, provider: &str) -> String {
        match &c.providers[provider].jwks_source_specifier {
            Some(JwksSourceSpecifier::LocalJwks(DataSource {
                specifier: Some(data_source::Specifier::InlineString(s)),
                ..
            })) => s.clone(),
            other => panic!("not inline: {other:?}"),
        }
    }

    const POLICIES: &str = r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: mesh, namespace: istio-system}
spec:
  jwtRules:
  - issuer: https://z.example
    jwksUri: https://z.example/jwks
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: reviews, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  jwtRules:
  - issuer: https://a.example
    audiences: [bookinfo]
    jwks: '{"keys":[]}'
    fromHeaders: [{name: x-jwt, prefix: "Token "}]
    fromParams: [jwt]
    fromCookies: [session]
    outputPayloadToHeader: x-jwt-payload
    outputClaimToHeaders: [{header: x-sub, claim: sub}]
    forwardOriginalToken: true
    spaceDelimitedClaims: [roles, scope]
    timeout: 2s
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ratings, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  jwtRules: [{issuer: https://r.example, jwksUri: http://r.example/jwks}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: gateway, namespace: default}
spec:
  targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: gw}
  jwtRules: [{issuer: https://g.example, jwksUri: http://g.example/jwks}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: other, namespace: other}
spec:
  jwtRules: [{issuer: https://o.example, jwksUri: http://o.example/jwks}]
"#;

    #[test]
    fn policies_apply_as_istio_selects_them() {
        let m = model(POLICIES);
        let names = |ns: &str, labels: &[(&str, &str)]| -> Vec<String> {
            let p = proxy(ns, labels);
            applicable(&m, &p.namespace, &p.labels)
                .iter()
                .map(|r| format!("{}/{}", r.metadata.namespace, r.metadata.name))
                .collect()
        };
        assert_eq!(
            names("default", &[("app", "reviews")]),
            ["istio-system/mesh", "default/reviews"],
            "the root namespace's, then the selector that matches; not the targetRef one"
        );
        assert_eq!(
            names("default", &[("app", "productpage")]),
            ["istio-system/mesh"]
        );
        assert_eq!(names("other", &[]), ["istio-system/mesh", "other/other"]);
        assert_eq!(names("istio-system", &[]), ["istio-system/mesh"]);
    }

    #[test]
    fn the_filter_is_istios_for_the_rules_of_the_workload() {
        let m = model(POLICIES);
        let c = config(&m, &proxy("default", &[("app", "reviews")])).expect("a filter");
        // Sorted by issuer: a (inline) then z (fetched).
        let a = &c.providers["origins-0"];
        assert_eq!(a.issuer, "https://a.example");
        assert_eq!(a.audiences, ["bookinfo"]);
        assert_eq!(jwks_of(&c, "origins-0"), r#"{"keys":[]}"#);
        assert_eq!(
            (
                a.from_headers[0].name.as_str(),
                a.from_headers[0].value_prefix.as_str()
            ),
            ("x-jwt", "Token ")
        );
        assert_eq!(
            (a.from_params.clone(), a.from_cookies.clone()),
            (vec!["jwt".to_string()], vec!["session".to_string()])
        );
        assert_eq!(a.forward_payload_header, "x-jwt-payload");
        assert_eq!(a.claim_to_headers[0].header_name, "x-sub");
        assert_eq!(a.claim_to_headers[0].claim_name, "sub");
        assert!(a.forward);
        assert_eq!(a.payload_in_metadata, "payload");
        assert_eq!(
            a.normalize_payload_in_metadata
                .as_ref()
                .map(|n| n.space_delimited_claims.clone()),
            Some(vec!["permission".into(), "roles".into(), "scope".into()])
        );
        let z = &c.providers["origins-1"];
        assert_eq!(z.issuer, "https://z.example");
        assert!(!z.forward && z.forward_payload_header.is_empty());
        assert_eq!(jwks_of(&c, "origins-1"), STAND_IN_JWKS, "not fetched yet");
        assert!(c.bypass_cors_preflight);
        // Istio's requirement for two providers.
        let rule = &c.rules[0];
        assert!(matches!(
            &rule.r#match,
            Some(RouteMatch { path_specifier: Some(PathSpecifier::Prefix(p)), .. }) if p == "/"
        ));
        let Some(RequirementType::Requires(JwtRequirement {
            requires_type: Some(RequiresType::RequiresAny(any)),
        })) = &rule.requirement_type
        else {
            panic!("requires_any");
        };
        let shape: Vec<String> = any
            .requirements
            .iter()
            .map(|r| match &r.requires_type {
                Some(RequiresType::ProviderName(n)) => n.clone(),
                Some(RequiresType::RequiresAll(all)) => {
                    format!("all of {}", all.requirements.len())
                }
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(shape, ["origins-0", "origins-1", "all of 2"]);

        // One provider: requires_any of it and allow_missing.
        let c = config(&m, &proxy("default", &[("app", "productpage")])).expect("a filter");
        assert_eq!(c.providers.len(), 1);
        let Some(RequirementType::Requires(JwtRequirement {
            requires_type: Some(RequiresType::RequiresAny(any)),
        })) = &c.rules[0].requirement_type
        else {
            panic!("requires_any");
        };
        assert!(matches!(
            any.requirements.as_slice(),
            [JwtRequirement { requires_type: Some(RequiresType::ProviderName(n)) },
             JwtRequirement { requires_type: Some(RequiresType::AllowMissing(_)) }] if n == "origins-0"
        ));
        // No policy: no filter.
        let none = model("apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: x, namespace: ns}\nspec: {selector: {matchLabels: {app: x}}, jwtRules: [{issuer: i, jwksUri: 'http://i/k'}]}\n");
        assert!(config(&none, &proxy("default", &[])).is_none());
    }

    #[test]
    fn fetched_keys_are_inlined_and_sources_listed() {
        let mut m = model(POLICIES);
        let z = Source {
            issuer: "https://z.example".into(),
            jwks_uri: Some("https://z.example/jwks".into()),
        };
        let fetched = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AA"}]}"#;
        let mut keys = Keys::default();
        keys.entries.insert(
            z.clone(),
            Entry {
                jwks: Some(Arc::from(fetched)),
                error: None,
            },
        );
        m.jwks = Arc::new(keys);
        let c = config(&m, &proxy("other", &[])).expect("a filter");
        // o.example sorts first.
        assert_eq!(c.providers["origins-1"].issuer, "https://z.example");
        assert_eq!(jwks_of(&c, "origins-1"), fetched);
        assert_eq!(jwks_of(&c, "origins-0"), STAND_IN_JWKS);
        let sources = jwks_sources(&m);
        let uris: Vec<Option<&str>> = sources.keys().map(|s| s.jwks_uri.as_deref()).collect();
        assert_eq!(
            uris,
            [
                Some("http://g.example/jwks"),
                Some("http://o.example/jwks"),
                Some("http://r.example/jwks"),
                Some("https://z.example/jwks")
            ],
            "every rule that names a URI, inline jwks not"
        );
        assert!(sources.values().all(|t| *t == DEFAULT_TIMEOUT));
    }
}
