//! Envoy's `JwtAuthentication` (the `envoy.filters.http.jwt_authn` filter's config) compiled, once per
//! push, into [`JwtAuthn`]: providers with their keys parsed and their token places merged, rules with
//! their path matchers, requirement trees resolved to provider indexes. What weft does not implement is
//! refused with the field named (the listener is NACKed), never ignored, because an ignored security
//! field would let requests through that Envoy refuses.

use super::extract::{self, Location, Place};
use super::token::{normalize_audience, Jwks};
use super::{JwtAuthn, Live, Provider, Requirement, Rule};
use crate::config::route::{PathMatch, RouteMatch};
use http::header::HeaderName;
use std::collections::BTreeMap;
use weft_xds::pb::envoy::config::core::v3::data_source;
use weft_xds::pb::envoy::config::route::v3 as xroute;
use weft_xds::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    jwt_provider::JwksSourceSpecifier, jwt_requirement::RequiresType,
    requirement_rule::RequirementType, JwtAuthentication, JwtProvider, JwtRequirement,
};

/// The filter's type URL.
pub const TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication";
/// The filter's name, as Istio names it.
pub const FILTER_NAME: &str = "envoy.filters.http.jwt_authn";
/// Envoy's clock skew when a provider sets none (`clock_skew_seconds: 0`).
pub const DEFAULT_CLOCK_SKEW: u64 = 60;

/// Why a `JwtAuthentication` was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The filter's config does not decode.
    #[error("does not decode as JwtAuthentication")]
    Decode(#[source] weft_xds::DecodeError),
    /// A field weft cannot honour, or an invalid value.
    #[error("{field}: {why}")]
    Field {
        /// The field's path (`providers["origins-0"].remote_jwks`).
        field: String,
        /// What is wrong.
        why: String,
    },
}

fn field_error(field: impl Into<String>, why: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        why: why.into(),
    }
}

impl TryFrom<&weft_xds::Any> for JwtAuthn {
    type Error = ConfigError;

    fn try_from(any: &weft_xds::Any) -> Result<Self, ConfigError> {
        let c: JwtAuthentication = weft_xds::unpack(any).map_err(ConfigError::Decode)?;
        JwtAuthn::try_from(&c)
    }
}

impl TryFrom<&JwtAuthentication> for JwtAuthn {
    type Error = ConfigError;

    fn try_from(c: &JwtAuthentication) -> Result<Self, ConfigError> {
        if c.filter_state_rules.is_some() {
            return Err(field_error("filter_state_rules", "not supported"));
        }
        // Sorted by name: indexes, and the issuer lookup's "first provider", do not depend on the
        // map's order.
        let sorted: BTreeMap<&String, &JwtProvider> = c.providers.iter().collect();
        let mut providers = Vec::with_capacity(sorted.len());
        let mut index = BTreeMap::new();
        for (i, (name, p)) in sorted.into_iter().enumerate() {
            providers.push(provider(name, p)?);
            index.insert(name.as_str(), i);
        }
        let compile = Compile {
            providers: &providers,
            index: &index,
        };
        let mut rules = Vec::with_capacity(c.rules.len());
        for (i, r) in c.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            let matcher = route_match(r.r#match.as_ref(), &at)?;
            let requirement = match &r.requirement_type {
                None => Requirement::AllowAll,
                Some(RequirementType::Requires(req)) => {
                    compile.requirement(req, &format!("{at}.requires"))?
                }
                Some(RequirementType::RequirementName(name)) => {
                    let req = c.requirement_map.get(name).ok_or_else(|| {
                        field_error(
                            format!("{at}.requirement_name"),
                            format!("{name:?} is not in requirement_map"),
                        )
                    })?;
                    compile.requirement(req, &format!("requirement_map[{name:?}]"))?
                }
            };
            let mut sanitize = Vec::new();
            requirement.output_headers(&providers, &mut sanitize);
            rules.push(Rule {
                matcher,
                requirement,
                sanitize,
            });
        }
        Ok(JwtAuthn {
            providers,
            rules,
            bypass_cors_preflight: c.bypass_cors_preflight,
            strip_failure_response: c.strip_failure_response,
            _live: Live::new(),
        })
    }
}

/// A header name from config, or an error naming the field.
fn header_name(name: &str, field: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| field_error(field, format!("{name:?} is not a valid header name")))
}

/// One provider.
fn provider(name: &str, p: &JwtProvider) -> Result<Provider, ConfigError> {
    let at = format!("providers[{name:?}]");
    let unsupported = |f: &str, why: &str| field_error(format!("{at}.{f}"), why.to_string());
    if p.subjects.is_some() {
        return Err(unsupported("subjects", "not supported"));
    }
    if p.require_expiration {
        return Err(unsupported("require_expiration", "not supported"));
    }
    if p.max_lifetime.is_some() {
        return Err(unsupported("max_lifetime", "not supported"));
    }
    let jwks_text = match &p.jwks_source_specifier {
        Some(JwksSourceSpecifier::LocalJwks(ds)) => match &ds.specifier {
            Some(data_source::Specifier::InlineString(s)) => s.clone(),
            Some(data_source::Specifier::InlineBytes(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => {
                return Err(unsupported(
                    "local_jwks",
                    "only inline_string and inline_bytes are supported",
                ))
            }
        },
        Some(JwksSourceSpecifier::RemoteJwks(_)) => {
            return Err(unsupported(
                "remote_jwks",
                "not supported: weft-proxy verifies with local_jwks (weftd fetches jwksUri and inlines the keys, as istiod does by default)",
            ))
        }
        None => return Err(unsupported("local_jwks", "a provider needs its keys")),
    };
    // As Envoy: a bad JWKS leaves the provider without keys (every token it checks fails with
    // "Jwks doesn't have any valid public key"), and is logged rather than refused, since the JWKS
    // comes from an identity provider, not from the operator.
    let keys = match Jwks::parse(&jwks_text) {
        Ok(k) => k,
        Err(why) => {
            tracing::warn!(provider = %name, issuer = %p.issuer, reason = %why, "invalid JWKS; every token of this provider will be refused");
            Jwks::default()
        }
    };
    let mut locations = Vec::new();
    for (i, h) in p.from_headers.iter().enumerate() {
        let name = header_name(&h.name, &format!("{at}.from_headers[{i}].name"))?;
        extract::add(
            &mut locations,
            Place::Header {
                name,
                prefix: h.value_prefix.clone(),
            },
            &p.issuer,
        );
    }
    for q in &p.from_params {
        extract::add(&mut locations, Place::Param(q.clone()), &p.issuer);
    }
    for c in &p.from_cookies {
        extract::add(&mut locations, Place::Cookie(c.clone()), &p.issuer);
    }
    if locations.is_empty() {
        for place in extract::default_places() {
            extract::add(&mut locations, place, &p.issuer);
        }
    }
    let payload_header = match p.forward_payload_header.as_str() {
        "" => None,
        h => Some(header_name(h, &format!("{at}.forward_payload_header"))?),
    };
    let mut claim_headers = Vec::with_capacity(p.claim_to_headers.len());
    for (i, c) in p.claim_to_headers.iter().enumerate() {
        let f = format!("{at}.claim_to_headers[{i}]");
        let header = header_name(&c.header_name, &format!("{f}.header_name"))?;
        let path: Vec<String> = if c.claim_path.is_empty() {
            c.claim_name.split('.').map(str::to_string).collect()
        } else {
            c.claim_path.iter().map(|s| s.key.clone()).collect()
        };
        if path.iter().any(String::is_empty) {
            return Err(field_error(
                format!("{f}.claim_name"),
                format!("{:?} is not a claim name", c.claim_name),
            ));
        }
        claim_headers.push((header, path));
    }
    Ok(Provider {
        name: name.to_string(),
        issuer: p.issuer.clone(),
        audiences: p
            .audiences
            .iter()
            .map(|a| normalize_audience(a).to_string())
            .collect(),
        keys,
        locations,
        forward: p.forward,
        payload_header,
        pad_payload: p.pad_forward_payload_header,
        claim_headers,
        clock_skew: match p.clock_skew_seconds {
            0 => DEFAULT_CLOCK_SKEW,
            s => u64::from(s),
        },
        space_delimited: p
            .normalize_payload_in_metadata
            .as_ref()
            .map(|n| n.space_delimited_claims.clone())
            .unwrap_or_default(),
    })
}

/// A rule's match: a path prefix or an exact path, as Istio writes them (`prefix: /`). Other
/// conditions are refused rather than dropped: dropping one would verify tokens on requests the rule
/// does not cover, or skip those it does.
fn route_match(m: Option<&xroute::RouteMatch>, at: &str) -> Result<RouteMatch, ConfigError> {
    use xroute::route_match::PathSpecifier;
    let m = m.ok_or_else(|| field_error(format!("{at}.match"), "is required"))?;
    let path = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) => PathMatch::Prefix(p.clone()),
        Some(PathSpecifier::Path(p)) => PathMatch::Exact(p.clone()),
        _ => {
            return Err(field_error(
                format!("{at}.match"),
                "only prefix and path are supported",
            ))
        }
    };
    let others = [
        ("headers", !m.headers.is_empty()),
        ("query_parameters", !m.query_parameters.is_empty()),
        ("cookies", !m.cookies.is_empty()),
        ("grpc", m.grpc.is_some()),
        ("tls_context", m.tls_context.is_some()),
        ("dynamic_metadata", !m.dynamic_metadata.is_empty()),
        ("filter_state", !m.filter_state.is_empty()),
        ("runtime_fraction", m.runtime_fraction.is_some()),
    ];
    if let Some((f, _)) = others.iter().find(|(_, set)| *set) {
        return Err(field_error(format!("{at}.match.{f}"), "not supported"));
    }
    Ok(RouteMatch {
        path,
        case_sensitive: m.case_sensitive.as_ref().is_none_or(|b| b.value),
        headers: Vec::new(),
        query: Vec::new(),
    })
}

/// What requirement trees are compiled against.
struct Compile<'a> {
    providers: &'a [Provider],
    index: &'a BTreeMap<&'a str, usize>,
}

impl Compile<'_> {
    fn provider(&self, name: &str, at: &str) -> Result<usize, ConfigError> {
        self.index.get(name).copied().ok_or_else(|| {
            field_error(
                at.to_string(),
                format!("provider {name:?} is not configured"),
            )
        })
    }

    /// One requirement. In `requires_any`, the bypass (`allow_missing` or `allow_missing_or_failed`,
    /// the latter winning when both are there) is moved last and looks for tokens where its sibling
    /// providers do, as Envoy builds it.
    fn requirement(&self, r: &JwtRequirement, at: &str) -> Result<Requirement, ConfigError> {
        Ok(match &r.requires_type {
            None => Requirement::AllowAll,
            Some(RequiresType::ProviderName(n)) => Requirement::Provider {
                provider: self.provider(n, &format!("{at}.provider_name"))?,
                audiences: None,
            },
            Some(RequiresType::ProviderAndAudiences(p)) => Requirement::Provider {
                provider: self.provider(
                    &p.provider_name,
                    &format!("{at}.provider_and_audiences.provider_name"),
                )?,
                audiences: Some(
                    p.audiences
                        .iter()
                        .map(|a| normalize_audience(a).to_string())
                        .collect(),
                ),
            },
            // Outside `requires_any` a bypass has no sibling providers, so no place to look: it
            // finds no token and passes (Envoy's behaviour too).
            Some(RequiresType::AllowMissing(_)) => Requirement::AllowMissing {
                locations: Vec::new(),
                or_failed: false,
            },
            Some(RequiresType::AllowMissingOrFailed(_)) => Requirement::AllowMissing {
                locations: Vec::new(),
                or_failed: true,
            },
            Some(RequiresType::ExtractOnlyWithoutValidation(_)) => {
                return Err(field_error(
                    format!("{at}.extract_only_without_validation"),
                    "not supported",
                ))
            }
            Some(RequiresType::RequiresAll(l)) => {
                if l.requirements.is_empty() {
                    return Err(field_error(
                        format!("{at}.requires_all.requirements"),
                        "is empty",
                    ));
                }
                let mut out = Vec::with_capacity(l.requirements.len());
                for (i, r) in l.requirements.iter().enumerate() {
                    out.push(self.requirement(r, &format!("{at}.requires_all.requirements[{i}]"))?);
                }
                Requirement::All(out)
            }
            Some(RequiresType::RequiresAny(l)) => {
                if l.requirements.is_empty() {
                    return Err(field_error(
                        format!("{at}.requires_any.requirements"),
                        "is empty",
                    ));
                }
                let mut out = Vec::with_capacity(l.requirements.len());
                let mut bypass: Option<bool> = None;
                let mut siblings = Vec::new();
                for (i, r) in l.requirements.iter().enumerate() {
                    let at = format!("{at}.requires_any.requirements[{i}]");
                    match &r.requires_type {
                        Some(RequiresType::AllowMissing(_)) => {
                            bypass = Some(bypass.unwrap_or(false));
                        }
                        Some(RequiresType::AllowMissingOrFailed(_)) => bypass = Some(true),
                        _ => {
                            let c = self.requirement(r, &at)?;
                            if let Requirement::Provider { provider, .. } = &c {
                                siblings.push(*provider);
                            }
                            out.push(c);
                        }
                    }
                }
                if let Some(or_failed) = bypass {
                    let mut locations: Vec<Location> = Vec::new();
                    for &p in &siblings {
                        let p = &self.providers[p];
                        for l in &p.locations {
                            extract::add(&mut locations, l.place.clone(), &p.issuer);
                        }
                    }
                    out.push(Requirement::AllowMissing {
                        locations,
                        or_failed,
                    });
                }
                Requirement::Any(out)
            }
        })
    }
}

impl Requirement {
    /// The headers the providers this requirement may run write (payload and claim headers): a
    /// request's own copies are removed first, so that the upstream can trust them (Envoy's
    /// `sanitizePayloadHeaders`).
    fn output_headers(&self, providers: &[Provider], out: &mut Vec<HeaderName>) {
        fn add(p: &Provider, out: &mut Vec<HeaderName>) {
            for h in p
                .payload_header
                .iter()
                .chain(p.claim_headers.iter().map(|c| &c.0))
            {
                if !out.contains(h) {
                    out.push(h.clone());
                }
            }
        }
        match self {
            Requirement::Provider { provider, .. } => add(&providers[*provider], out),
            Requirement::AllowMissing { locations, .. } => {
                // Every provider whose issuer may be found at these places.
                for p in providers {
                    if locations.iter().any(|l| l.allows(&p.issuer)) {
                        add(p, out);
                    }
                }
            }
            Requirement::Any(v) | Requirement::All(v) => {
                for r in v {
                    r.output_headers(providers, out);
                }
            }
            Requirement::AllowAll => {}
        }
    }
}
