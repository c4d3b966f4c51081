//! RequestAuthentication: which JWTs a workload accepts
//! ([Istio's reference](https://istio.io/latest/docs/reference/config/security/request_authentication/)).
//! A request with an invalid token is refused (401); one without a token passes as unauthenticated, and
//! AuthorizationPolicies decide with what the token said (`requestPrincipals`, `request.auth.*`).

use super::{check_scope, Problems, Selector, TargetRef};
use crate::duration::Duration;
use serde::{Deserialize, Serialize};

/// `spec` of a RequestAuthentication.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestAuthentication {
    /// Workloads of the namespace this applies to (of every namespace, in the root namespace).
    pub selector: Option<Selector>,
    /// A gateway or waypoint to attach to: such a policy applies to no sidecar.
    pub target_ref: Option<TargetRef>,
    /// Several of those.
    #[serde(default)]
    pub target_refs: Vec<TargetRef>,
    /// The issuers accepted, each with its keys and where its tokens are found.
    #[serde(default)]
    pub jwt_rules: Vec<JwtRule>,
}

/// `jwtRules[]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwtRule {
    /// The `iss` a token must carry (required).
    #[serde(default)]
    pub issuer: String,
    /// Accepted `aud` values, any of which matches; empty: any audience.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Where to fetch the JSON Web Key Set (`http://` or `https://`).
    pub jwks_uri: Option<String>,
    /// The JSON Web Key Set inline (not with `jwksUri`).
    pub jwks: Option<String>,
    /// Headers the token is read from; with `fromParams` and `fromCookies` empty, the default is
    /// `Authorization: Bearer <token>` and the `access_token` query parameter.
    #[serde(default)]
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters the token is read from.
    #[serde(default)]
    pub from_params: Vec<String>,
    /// A header the verified payload (base64url JSON) is forwarded in.
    pub output_payload_to_header: Option<String>,
    /// Cookies the token is read from.
    #[serde(default)]
    pub from_cookies: Vec<String>,
    /// Keep the token in the request forwarded upstream (default: removed).
    #[serde(default)]
    pub forward_original_token: bool,
    /// Claims copied into request headers.
    #[serde(default)]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// How long a JWKS fetch may take (default 5 s).
    pub timeout: Option<Duration>,
    /// Claims whose string value is a space-separated list (in addition to `scope` and `permission`).
    #[serde(default)]
    pub space_delimited_claims: Vec<String>,
}

/// `fromHeaders[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwtHeader {
    /// Header name (required).
    #[serde(default)]
    pub name: String,
    /// A prefix removed before the token (`Bearer `).
    #[serde(default)]
    pub prefix: String,
}

/// `outputClaimToHeaders[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimToHeader {
    /// The header to set.
    #[serde(default)]
    pub header: String,
    /// The claim (nested claims joined with `.`).
    #[serde(default)]
    pub claim: String,
}

fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl RequestAuthentication {
    /// Checks this resource on its own.
    pub(crate) fn validate(&self, p: &mut Problems) {
        check_scope(
            p,
            self.selector.as_ref(),
            self.target_ref.as_ref(),
            &self.target_refs,
        );
        for (i, rule) in self.jwt_rules.iter().enumerate() {
            rule.validate(p, &format!("spec.jwtRules[{i}]"));
        }
    }
}

impl JwtRule {
    fn validate(&self, p: &mut Problems, f: &str) {
        if self.issuer.is_empty() {
            p.error(
                format!("{f}.issuer"),
                "jwtRules",
                "issuer is required (the iss claim tokens must carry)",
            );
        }
        for (i, a) in self.audiences.iter().enumerate() {
            if a.is_empty() {
                p.error(format!("{f}.audiences[{i}]"), "audiences", "empty audience");
            }
        }
        match (&self.jwks_uri, &self.jwks) {
            (Some(_), Some(_)) => p.error(
                format!("{f}.jwks"),
                "jwks:",
                "give jwks or jwksUri, not both",
            ),
            (Some(uri), None) => {
                let scheme_ok = ["http://", "https://"]
                    .iter()
                    .any(|s| uri.strip_prefix(s).is_some_and(|rest| !rest.is_empty()));
                if !scheme_ok {
                    p.error(
                        format!("{f}.jwksUri"),
                        "jwksUri",
                        format!("jwksUri {uri:?} is not an http:// or https:// URL"),
                    );
                }
            }
            (None, Some(jwks)) => {
                let keys = serde_json::from_str::<serde_json::Value>(jwks)
                    .ok()
                    .and_then(|v| v.get("keys").map(|k| k.is_array()));
                if keys != Some(true) {
                    p.error(
                        format!("{f}.jwks"),
                        "jwks:",
                        "jwks is not a JSON Web Key Set (a JSON object with a \"keys\" array)",
                    );
                }
            }
            (None, None) => {}
        }
        for (i, h) in self.from_headers.iter().enumerate() {
            if !is_header_name(&h.name) {
                p.error(
                    format!("{f}.fromHeaders[{i}].name"),
                    "fromHeaders",
                    format!("{:?} is not a header name", h.name),
                );
            }
        }
        for (i, q) in self.from_params.iter().enumerate() {
            if q.is_empty() {
                p.error(
                    format!("{f}.fromParams[{i}]"),
                    "fromParams",
                    "empty parameter name",
                );
            }
        }
        for (i, c) in self.from_cookies.iter().enumerate() {
            if c.is_empty() {
                p.error(
                    format!("{f}.fromCookies[{i}]"),
                    "fromCookies",
                    "empty cookie name",
                );
            }
        }
        if let Some(h) = &self.output_payload_to_header {
            if !is_header_name(h) {
                p.error(
                    format!("{f}.outputPayloadToHeader"),
                    "outputPayloadToHeader",
                    format!("{h:?} is not a header name"),
                );
            }
        }
        for (i, c) in self.output_claim_to_headers.iter().enumerate() {
            let cf = format!("{f}.outputClaimToHeaders[{i}]");
            if c.claim.is_empty() {
                p.error(
                    format!("{cf}.claim"),
                    "outputClaimToHeaders",
                    "claim is required",
                );
            }
            if !is_header_name(&c.header) {
                p.error(
                    format!("{cf}.header"),
                    "outputClaimToHeaders",
                    format!("{:?} is not a header name", c.header),
                );
            }
        }
        if self.timeout.is_some_and(|t| t.get().is_zero()) {
            p.error(
                format!("{f}.timeout"),
                "timeout",
                "timeout must be more than 0",
            );
        }
    }
}
