//! MeshConfig `extensionProviders[]` of the external authorizer kinds, `envoyExtAuthzHttp` and
//! `envoyExtAuthzGrpc`: what a CUSTOM AuthorizationPolicy names in `provider.name`. Typed and checked
//! here with Istio's defaults (istio/api `mesh/v1alpha1/config.proto`); weftd turns one into Envoy's
//! `ext_authz` filter.

use super::{Loose, MeshConfig};
use crate::duration::Duration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Istio's default for `timeout` when a provider sets none: 600 s, the placeholder istiod writes.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);
/// The status of a request denied because the authorizer could not be asked (Envoy's default).
pub const DEFAULT_STATUS_ON_ERROR: u16 = 403;

/// `envoyExtAuthzHttp`: the authorizer is asked with a plain HTTP request.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ExtAuthzHttp {
    /// The authorizer's host: `ns/host` or a hostname of the registry.
    pub service: String,
    /// Its port (1 to 65535).
    pub port: u32,
    /// How long a check may take (default 600 s).
    pub timeout: Option<Duration>,
    /// Prepended to the request's path in the check request (starts with `/`).
    pub path_prefix: Option<String>,
    /// Let the request through when the authorizer cannot be asked.
    pub fail_open: bool,
    /// The status of a request the authorizer could not be asked about (default 403).
    pub status_on_error: Option<String>,
    /// Request headers sent with the check, beside Envoy's defaults (`x-a`, `x-prefix-*`, `*-suffix`).
    pub include_request_headers_in_check: Vec<String>,
    /// Headers added to the check request.
    pub include_additional_headers_in_check: BTreeMap<String, String>,
    /// Sends the request body with the check.
    pub include_request_body_in_check: Option<BodyInCheck>,
    /// Headers of the authorizer's OK response copied onto the request sent upstream.
    pub headers_to_upstream_on_allow: Vec<String>,
    /// Headers of the authorizer's OK response copied onto the response to the client.
    pub headers_to_downstream_on_allow: Vec<String>,
    /// Headers of the authorizer's denial copied onto the response to the client (empty: all).
    pub headers_to_downstream_on_deny: Vec<String>,
    /// Deprecated name of `includeRequestHeadersInCheck`, still read.
    pub include_headers_in_check: Vec<String>,
}

/// `envoyExtAuthzGrpc`: the authorizer implements `envoy.service.auth.v3.Authorization/Check`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ExtAuthzGrpc {
    /// The authorizer's host: `ns/host` or a hostname of the registry.
    pub service: String,
    /// Its port (1 to 65535).
    pub port: u32,
    /// How long a check may take (default 600 s).
    pub timeout: Option<Duration>,
    /// Let the request through when the authorizer cannot be asked.
    pub fail_open: bool,
    /// The status of a request the authorizer could not be asked about (default 403).
    pub status_on_error: Option<String>,
    /// Sends the request body with the check.
    pub include_request_body_in_check: Option<BodyInCheck>,
    /// Accepted as Istio has it; weft never re-routes after a check.
    pub clear_route_cache: Option<bool>,
}

/// `includeRequestBodyInCheck`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct BodyInCheck {
    /// At most this many bytes of the body go with the check (at least 1).
    pub max_request_bytes: u32,
    /// A longer body is cut to `maxRequestBytes` (else the request is refused with 413).
    pub allow_partial_message: bool,
    /// gRPC: the body goes as bytes (`raw_body`) rather than UTF-8 text.
    pub pack_as_bytes: bool,
}

/// One external authorizer, read and checked.
#[derive(Debug, Clone, PartialEq)]
pub enum ExtAuthz {
    /// `envoyExtAuthzHttp`.
    Http(ExtAuthzHttp),
    /// `envoyExtAuthzGrpc`.
    Grpc(ExtAuthzGrpc),
}

impl ExtAuthz {
    /// `service`, as written.
    pub fn service(&self) -> &str {
        match self {
            ExtAuthz::Http(h) => &h.service,
            ExtAuthz::Grpc(g) => &g.service,
        }
    }

    /// `port`.
    pub fn port(&self) -> u32 {
        match self {
            ExtAuthz::Http(h) => h.port,
            ExtAuthz::Grpc(g) => g.port,
        }
    }

    /// `timeout`, or Istio's default.
    pub fn timeout(&self) -> std::time::Duration {
        match self {
            ExtAuthz::Http(h) => h.timeout,
            ExtAuthz::Grpc(g) => g.timeout,
        }
        .map_or(DEFAULT_TIMEOUT, |d| d.0)
    }

    /// `failOpen`.
    pub fn fail_open(&self) -> bool {
        match self {
            ExtAuthz::Http(h) => h.fail_open,
            ExtAuthz::Grpc(g) => g.fail_open,
        }
    }

    /// `statusOnError`, or 403 (checked when read).
    pub fn status_on_error(&self) -> u16 {
        match self {
            ExtAuthz::Http(h) => h.status_on_error.as_deref(),
            ExtAuthz::Grpc(g) => g.status_on_error.as_deref(),
        }
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_STATUS_ON_ERROR)
    }

    /// `includeRequestBodyInCheck`.
    pub fn body(&self) -> Option<BodyInCheck> {
        match self {
            ExtAuthz::Http(h) => h.include_request_body_in_check,
            ExtAuthz::Grpc(g) => g.include_request_body_in_check,
        }
    }

    /// The YAML key of this kind.
    pub fn kind(&self) -> &'static str {
        match self {
            ExtAuthz::Http(_) => "envoyExtAuthzHttp",
            ExtAuthz::Grpc(_) => "envoyExtAuthzGrpc",
        }
    }
}

/// A MeshConfig extension provider weft cannot use.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ProviderError {
    /// The field, as written in MeshConfig (`extensionProviders[2].envoyExtAuthzHttp.port`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Why a CUSTOM policy's provider cannot be used (weftd then denies what the policy matches).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    /// No entry has the name.
    #[error("no extensionProviders entry is named {0:?}")]
    Missing(String),
    /// The entry is another kind of provider.
    #[error(
        "extensionProviders entry {0:?} is not an envoyExtAuthzHttp or envoyExtAuthzGrpc provider"
    )]
    OtherKind(String),
}

impl MeshConfig {
    fn provider_list(&self) -> &[Loose] {
        match &self.extension_providers {
            Some(Loose::Sequence(l)) => l.as_slice(),
            _ => &[],
        }
    }

    /// Every external authorizer of `extensionProviders`, by name, checked as istiod checks them: the
    /// first problem names its field. Names must be set and unique across all providers.
    pub fn ext_authz_providers(&self) -> Result<BTreeMap<String, ExtAuthz>, ProviderError> {
        let mut out = BTreeMap::new();
        let mut names = std::collections::BTreeSet::new();
        for (i, p) in self.provider_list().iter().enumerate() {
            let at = |f: &str| format!("extensionProviders[{i}].{f}");
            let name = match p.get("name") {
                Some(Loose::String(n)) if !n.is_empty() => n.clone(),
                _ => {
                    return Err(ProviderError {
                        field: at("name"),
                        message: "a provider needs a name".into(),
                    })
                }
            };
            if !names.insert(name.clone()) {
                return Err(ProviderError {
                    field: at("name"),
                    message: format!("{name:?} names an earlier provider too"),
                });
            }
            if let Some(v) = p.get("envoyExtAuthzHttp") {
                let kind = "envoyExtAuthzHttp";
                let h: ExtAuthzHttp = read(v, &at(kind))?;
                check_common(&at(kind), &h.service, h.port, h.status_on_error.as_deref())?;
                check_body(&at(kind), h.include_request_body_in_check)?;
                if let Some(pp) = &h.path_prefix {
                    if !pp.is_empty() && !pp.starts_with('/') {
                        return Err(ProviderError {
                            field: at(&format!("{kind}.pathPrefix")),
                            message: format!("{pp:?} does not start with /"),
                        });
                    }
                    if pp
                        .chars()
                        .any(|c| c.is_ascii_control() || c == ' ' || c == '?' || c == '#')
                    {
                        return Err(ProviderError {
                            field: at(&format!("{kind}.pathPrefix")),
                            message: format!("{pp:?} is not a URL path"),
                        });
                    }
                }
                for (list, values) in [
                    (
                        "includeRequestHeadersInCheck",
                        &h.include_request_headers_in_check,
                    ),
                    ("includeHeadersInCheck", &h.include_headers_in_check),
                    ("headersToUpstreamOnAllow", &h.headers_to_upstream_on_allow),
                    (
                        "headersToDownstreamOnAllow",
                        &h.headers_to_downstream_on_allow,
                    ),
                    (
                        "headersToDownstreamOnDeny",
                        &h.headers_to_downstream_on_deny,
                    ),
                ] {
                    for (j, v) in values.iter().enumerate() {
                        if v.is_empty() || v == "*" {
                            return Err(ProviderError {
                                field: at(&format!("{kind}.{list}[{j}]")),
                                message: format!("{v:?} is not a header name, prefix* or *suffix"),
                            });
                        }
                    }
                }
                for (k, v) in &h.include_additional_headers_in_check {
                    let ok = !k.is_empty()
                        && k.bytes().all(|b| b.is_ascii_graphic() && b != b':')
                        && v.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
                    if !ok {
                        return Err(ProviderError {
                            field: at(&format!("{kind}.includeAdditionalHeadersInCheck")),
                            message: format!("{k:?}: {v:?} is not a valid header"),
                        });
                    }
                }
                out.insert(name, ExtAuthz::Http(h));
            } else if let Some(v) = p.get("envoyExtAuthzGrpc") {
                let kind = "envoyExtAuthzGrpc";
                let g: ExtAuthzGrpc = read(v, &at(kind))?;
                check_common(&at(kind), &g.service, g.port, g.status_on_error.as_deref())?;
                check_body(&at(kind), g.include_request_body_in_check)?;
                out.insert(name, ExtAuthz::Grpc(g));
            }
        }
        Ok(out)
    }

    /// The external authorizer `name`, for a CUSTOM policy. A provider that does not check is left
    /// out when MeshConfig is read, so this only tells a missing name from another kind.
    pub fn ext_authz_provider(&self, name: &str) -> Result<ExtAuthz, Unusable> {
        let found = self
            .provider_list()
            .iter()
            .any(|p| p.get("name").and_then(Loose::as_str) == Some(name));
        if !found {
            return Err(Unusable::Missing(name.to_string()));
        }
        self.ext_authz_providers()
            .ok()
            .and_then(|mut all| all.remove(name))
            .ok_or_else(|| Unusable::OtherKind(name.to_string()))
    }
}

fn read<T: serde::de::DeserializeOwned>(v: &Loose, field: &str) -> Result<T, ProviderError> {
    serde_yaml_ng::from_value(v.clone()).map_err(|e| {
        // serde names the unknown or mistyped field in its message; keep the message, with its line
        // numbers (meaningless in a value) dropped.
        let msg = e.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        ProviderError {
            field: field.to_string(),
            message: msg,
        }
    })
}

fn check_common(
    at: &str,
    service: &str,
    port: u32,
    status_on_error: Option<&str>,
) -> Result<(), ProviderError> {
    if service.is_empty() {
        return Err(ProviderError {
            field: format!("{at}.service"),
            message: "service must be set (a hostname, or namespace/hostname)".into(),
        });
    }
    if service.split('/').count() > 2 || service.split('/').any(str::is_empty) {
        return Err(ProviderError {
            field: format!("{at}.service"),
            message: format!("{service:?} is not a hostname or namespace/hostname"),
        });
    }
    if !(1..=65535).contains(&port) {
        return Err(ProviderError {
            field: format!("{at}.port"),
            message: format!("port must be from 1 to 65535, found {port}"),
        });
    }
    if let Some(s) = status_on_error.filter(|s| !s.is_empty()) {
        if !s.parse::<u16>().is_ok_and(|c| (200..=599).contains(&c)) {
            return Err(ProviderError {
                field: format!("{at}.statusOnError"),
                message: format!("{s:?} is not an HTTP status from 200 to 599"),
            });
        }
    }
    Ok(())
}

fn check_body(at: &str, body: Option<BodyInCheck>) -> Result<(), ProviderError> {
    match body {
        Some(b) if b.max_request_bytes == 0 => Err(ProviderError {
            field: format!("{at}.includeRequestBodyInCheck.maxRequestBytes"),
            message: "must be at least 1".into(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(yaml: &str) -> MeshConfig {
        serde_yaml_ng::from_str(yaml).expect("mesh")
    }

    #[test]
    fn providers_read_with_istio_defaults() {
        let m = mesh(
            "extensionProviders:\n\
             - {name: z, zipkin: {service: z, port: 9411}}\n\
             - name: h\n  envoyExtAuthzHttp:\n    service: foo/ext-authz.foo.svc.cluster.local\n    port: 8000\n    pathPrefix: /check\n    includeRequestHeadersInCheck: [x-ext-authz]\n    headersToUpstreamOnAllow: [x-user]\n    includeRequestBodyInCheck: {maxRequestBytes: 100}\n\
             - {name: g, envoyExtAuthzGrpc: {service: ext-authz.foo.svc.cluster.local, port: 9000, timeout: 2s, failOpen: true, statusOnError: '503'}}\n",
        );
        let all = m.ext_authz_providers().expect("valid");
        assert_eq!(all.len(), 2);
        let h = &all["h"];
        assert_eq!(h.kind(), "envoyExtAuthzHttp");
        assert_eq!(h.timeout(), DEFAULT_TIMEOUT);
        assert_eq!(h.status_on_error(), 403);
        assert!(!h.fail_open());
        assert_eq!(
            h.body(),
            Some(BodyInCheck {
                max_request_bytes: 100,
                ..Default::default()
            })
        );
        let g = &all["g"];
        assert_eq!(g.timeout(), std::time::Duration::from_secs(2));
        assert_eq!(g.status_on_error(), 503);
        assert!(g.fail_open());
        assert_eq!(g.service(), "ext-authz.foo.svc.cluster.local");
        assert_eq!(g.port(), 9000);
        assert_eq!(m.ext_authz_provider("h"), Ok(h.clone()));
        assert_eq!(
            m.ext_authz_provider("z"),
            Err(Unusable::OtherKind("z".into()))
        );
        assert_eq!(
            m.ext_authz_provider("nope"),
            Err(Unusable::Missing("nope".into()))
        );
        assert!(MeshConfig::default()
            .ext_authz_providers()
            .expect("none")
            .is_empty());
    }

    #[test]
    fn bad_providers_name_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "port out of range",
                "[{name: z, zipkin: {}}, {name: a, envoyExtAuthzGrpc: {service: a}}, {name: b, envoyExtAuthzHttp: {service: b, port: 70000}}]",
                "extensionProviders[1].envoyExtAuthzGrpc.port: port must be from 1 to 65535, found 0",
            ),
            (
                "no service",
                "[{name: b, envoyExtAuthzHttp: {port: 80}}]",
                "extensionProviders[0].envoyExtAuthzHttp.service: service must be set (a hostname, or namespace/hostname)",
            ),
            (
                "path prefix",
                "[{name: b, envoyExtAuthzHttp: {service: b, port: 80, pathPrefix: check}}]",
                "extensionProviders[0].envoyExtAuthzHttp.pathPrefix: \"check\" does not start with /",
            ),
            (
                "status",
                "[{name: b, envoyExtAuthzGrpc: {service: b, port: 80, statusOnError: teapot}}]",
                "extensionProviders[0].envoyExtAuthzGrpc.statusOnError: \"teapot\" is not an HTTP status from 200 to 599",
            ),
            (
                "unknown field",
                "[{name: b, envoyExtAuthzGrpc: {service: b, port: 80, pathPrefix: /x}}]",
                "extensionProviders[0].envoyExtAuthzGrpc: unknown field `pathPrefix`, expected one of `service`, `port`, `timeout`, `failOpen`, `statusOnError`, `includeRequestBodyInCheck`, `clearRouteCache`",
            ),
            (
                "body size",
                "[{name: b, envoyExtAuthzHttp: {service: b, port: 80, includeRequestBodyInCheck: {allowPartialMessage: true}}}]",
                "extensionProviders[0].envoyExtAuthzHttp.includeRequestBodyInCheck.maxRequestBytes: must be at least 1",
            ),
            (
                "duplicate name",
                "[{name: b, zipkin: {}}, {name: b, envoyExtAuthzHttp: {service: b, port: 80}}]",
                "extensionProviders[1].name: \"b\" names an earlier provider too",
            ),
            (
                "bad header list",
                "[{name: b, envoyExtAuthzHttp: {service: b, port: 80, headersToUpstreamOnAllow: [x, '*']}}]",
                "extensionProviders[0].envoyExtAuthzHttp.headersToUpstreamOnAllow[1]: \"*\" is not a header name, prefix* or *suffix",
            ),
        ];
        for (name, list, want) in cases {
            let m = mesh(&format!("extensionProviders: {list}"));
            let e = m.ext_authz_providers().expect_err(name);
            assert_eq!(e.to_string(), *want, "case {name}");
        }
    }
}
