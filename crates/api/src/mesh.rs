//! MeshConfig: mesh-wide settings, read from `mesh.yaml` in the config directory (the same YAML as Istio's
//! `istio` ConfigMap `mesh` key or `istioctl --meshConfigFile`).

use crate::duration::Duration;
use crate::networking::virtual_service::HttpRetry;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub mod ext_authz;

pub use ext_authz::{ExtAuthz, ProviderError};

type Loose = serde_yaml_ng::Value;

/// Mesh-wide settings. Unknown fields are refused; fields weft does not use yet are accepted as written.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshConfig {
    /// Namespace whose policies apply mesh-wide (default `istio-system`).
    #[serde(default = "default_root_namespace")]
    pub root_namespace: String,
    /// Trust domain (default `cluster.local`).
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    /// Trust domain aliases.
    #[serde(default)]
    pub trust_domain_aliases: Vec<String>,
    /// Upstream connect timeout (default 10 s).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// The retry policy routes get when their VirtualService sets none.
    pub default_http_retry_policy: Option<HttpRetry>,
    /// Automatic mTLS (later issue).
    pub enable_auto_mtls: Option<bool>,
    /// Access log file; empty or absent: none (weft-proxy's HTTP listeners log to it).
    pub access_log_file: Option<String>,
    /// Access log encoding: `TEXT` (default) or `JSON`.
    pub access_log_encoding: Option<String>,
    /// Access log format: Envoy's format string (text), or a JSON object of keys to format strings.
    pub access_log_format: Option<String>,
    /// Tracing switch (default true); see [`MeshConfig::tracing`].
    pub enable_tracing: Option<bool>,
    /// Proxy defaults; weft reads `tracing.sampling` and `tracing.zipkin.address` ([`MeshConfig::tracing`]).
    pub default_config: Option<Loose>,
    /// `ALLOW_ANY` / `REGISTRY_ONLY`.
    pub outbound_traffic_policy: Option<Loose>,
    /// Inbound policy.
    pub inbound_traffic_policy: Option<Loose>,
    /// Extension providers; weft reads the `zipkin` and `opentelemetry` tracers ([`MeshConfig::tracing`]),
    /// `envoyFileAccessLog` loggers and the `envoyExtAuthzHttp` / `envoyExtAuthzGrpc` authorizers of
    /// CUSTOM AuthorizationPolicies ([`MeshConfig::ext_authz_providers`]).
    pub extension_providers: Option<Loose>,
    /// Default providers; weft reads `tracing` ([`MeshConfig::tracing`]).
    pub default_providers: Option<Loose>,
    /// Locality load balancing (later issue).
    pub locality_lb_setting: Option<Loose>,
    /// Prometheus merge (later issue).
    pub enable_prometheus_merge: Option<bool>,
    /// Default exportTo for services.
    pub default_service_export_to: Option<Vec<String>>,
    /// Default exportTo for VirtualServices.
    pub default_virtual_service_export_to: Option<Vec<String>>,
    /// Default exportTo for DestinationRules.
    pub default_destination_rule_export_to: Option<Vec<String>>,
    /// Outbound capture port.
    pub proxy_listen_port: Option<u32>,
    /// Inbound capture port.
    pub proxy_inbound_listen_port: Option<u32>,
    /// How inbound sidecars normalize request paths before authorization and routing (Istio's
    /// `pathNormalization`; `BASE` when absent).
    pub path_normalization: Option<PathNormalization>,
    /// Mesh id.
    pub mesh_id: Option<String>,
}

fn default_root_namespace() -> String {
    "istio-system".into()
}
fn default_trust_domain() -> String {
    "cluster.local".into()
}
fn default_connect_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(10))
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            root_namespace: default_root_namespace(),
            trust_domain: default_trust_domain(),
            trust_domain_aliases: Vec::new(),
            connect_timeout: default_connect_timeout(),
            default_http_retry_policy: None,
            enable_auto_mtls: None,
            access_log_file: None,
            access_log_encoding: None,
            access_log_format: None,
            enable_tracing: None,
            default_config: None,
            outbound_traffic_policy: None,
            inbound_traffic_policy: None,
            extension_providers: None,
            default_providers: None,
            locality_lb_setting: None,
            enable_prometheus_merge: None,
            default_service_export_to: None,
            default_virtual_service_export_to: None,
            default_destination_rule_export_to: None,
            proxy_listen_port: None,
            proxy_inbound_listen_port: None,
            path_normalization: None,
            mesh_id: None,
        }
    }
}

/// MeshConfig `pathNormalization`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PathNormalization {
    /// The normalization; `DEFAULT` (or absent) is `BASE`.
    #[serde(default)]
    pub normalization: PathNormalizationMode,
}

/// What `pathNormalization.normalization` does to a path, as Istio defines its values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PathNormalizationMode {
    /// `BASE`.
    #[default]
    Default,
    /// Paths are forwarded as received: no normalization at all.
    None,
    /// RFC 3986 normalization: `%XX` of unreserved characters decoded, `.` and `..` segments resolved,
    /// `\` made `/`.
    Base,
    /// `BASE`, and `//` merged into `/`.
    MergeSlashes,
    /// `MERGE_SLASHES`, and `%2F` / `%5C` decoded before.
    DecodeAndMergeSlashes,
}

impl MeshConfig {
    /// The path normalization in force (`BASE` when unset).
    pub fn path_normalization(&self) -> PathNormalizationMode {
        match self.path_normalization.map(|p| p.normalization) {
            None | Some(PathNormalizationMode::Default) => PathNormalizationMode::Base,
            Some(m) => m,
        }
    }
}

/// File names read as MeshConfig rather than as Istio resources.
pub fn is_mesh_file(file_name: &str) -> bool {
    matches!(
        file_name,
        "mesh.yaml" | "mesh.yml" | "meshconfig.yaml" | "meshconfig.yml"
    )
}

/// Where a proxy sends its spans, as MeshConfig chooses it.
#[derive(Debug, Clone, PartialEq)]
pub enum TracingProvider {
    /// Zipkin v2 JSON to `http://{address}/api/v2/spans`.
    Zipkin {
        /// `host:port`.
        address: String,
    },
    /// OTLP/HTTP protobuf to `http://{address}{path}`.
    OpenTelemetry {
        /// `host:port`.
        address: String,
        /// The request path (`/v1/traces` unless given).
        path: String,
    },
}

/// MeshConfig's tracing, read: what every HTTP connection manager gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    /// Percent of requests sampled when the caller has not decided (0 to 100).
    pub sampling: f64,
    /// The collector.
    pub provider: TracingProvider,
}

/// A MeshConfig tracing setting weft cannot use.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TracingError {
    /// The field, as written in MeshConfig (`defaultConfig.tracing.sampling`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// A file access log as a provider describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAccessLog {
    /// The file.
    pub path: String,
    /// JSON lines (else text).
    pub json: bool,
    /// The text format string, or for JSON an object of keys to format strings as JSON text; `None`:
    /// Istio's default of the encoding.
    pub format: Option<String>,
}

/// Istio's default sampling percentage (`PILOT_TRACE_SAMPLING`'s default).
pub const DEFAULT_TRACE_SAMPLING: f64 = 1.0;
/// The path of OTLP/HTTP's trace export.
pub const OTLP_HTTP_PATH: &str = "/v1/traces";

impl MeshConfig {
    /// Tracing as Istio reads it: off when `enableTracing` is false; else the provider named first in
    /// `defaultProviders.tracing` (a `zipkin` or an `opentelemetry` one of `extensionProviders`), else
    /// the legacy `defaultConfig.tracing.zipkin.address`; none when neither is set. The sampling is
    /// `defaultConfig.tracing.sampling` (percent, default 1.0).
    pub fn tracing(&self) -> Result<Option<Tracing>, TracingError> {
        if self.enable_tracing == Some(false) {
            return Ok(None);
        }
        let err = |field: &str, message: String| TracingError {
            field: field.to_string(),
            message,
        };
        let legacy = self.default_config.as_ref().and_then(|d| d.get("tracing"));
        let sampling = match legacy.and_then(|t| t.get("sampling")) {
            None | Some(Loose::Null) => DEFAULT_TRACE_SAMPLING,
            Some(v) => match v.as_f64() {
                Some(p) if (0.0..=100.0).contains(&p) => p,
                _ => {
                    return Err(err(
                        "defaultConfig.tracing.sampling",
                        format!("{} is not a percentage from 0 to 100", yaml_text(v)),
                    ))
                }
            },
        };
        let chosen = match self
            .default_providers
            .as_ref()
            .and_then(|d| d.get("tracing"))
        {
            None | Some(Loose::Null) => None,
            Some(Loose::Sequence(names)) => match names.first() {
                None => None,
                Some(Loose::String(n)) => Some(n.as_str()),
                Some(v) => {
                    return Err(err(
                        "defaultProviders.tracing[0]",
                        format!("{} is not a provider name", yaml_text(v)),
                    ))
                }
            },
            Some(v) => {
                return Err(err(
                    "defaultProviders.tracing",
                    format!("{} is not a list of provider names", yaml_text(v)),
                ))
            }
        };
        if let Some(name) = chosen {
            let provider = self.extension_provider(name)?;
            return Ok(Some(Tracing { sampling, provider }));
        }
        let address = legacy
            .and_then(|t| t.get("zipkin"))
            .and_then(|z| z.get("address"));
        match address {
            None | Some(Loose::Null) => Ok(None),
            Some(Loose::String(a)) if is_host_port(a) => Ok(Some(Tracing {
                sampling,
                provider: TracingProvider::Zipkin { address: a.clone() },
            })),
            Some(v) => Err(err(
                "defaultConfig.tracing.zipkin.address",
                format!("{} is not host:port", yaml_text(v)),
            )),
        }
    }

    /// The provider names of `defaultProviders.<kind>` (`tracing`, `metrics`, `accessLogging`); names
    /// that are not strings are skipped (MeshConfig's read refuses them for tracing).
    pub fn default_providers(&self, kind: &str) -> Vec<String> {
        match self.default_providers.as_ref().and_then(|d| d.get(kind)) {
            Some(Loose::Sequence(names)) => names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The access log of provider `name`: Istio's built-in `envoy` (MeshConfig's `accessLogFile`, else
    /// `/dev/stdout`, in MeshConfig's encoding and format), or an `envoyFileAccessLog` of
    /// `extensionProviders`. The error says why another provider cannot be used.
    pub fn access_log_provider(&self, name: &str) -> Result<FileAccessLog, String> {
        if name == "envoy" {
            return Ok(FileAccessLog {
                path: self
                    .access_log_file
                    .clone()
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "/dev/stdout".into()),
                json: self
                    .access_log_encoding
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case("JSON")),
                format: self.access_log_format.clone().filter(|f| !f.is_empty()),
            });
        }
        let list = match &self.extension_providers {
            Some(Loose::Sequence(l)) => l.as_slice(),
            _ => &[],
        };
        let Some(p) = list
            .iter()
            .find(|p| p.get("name").and_then(Loose::as_str) == Some(name))
        else {
            return Err(format!(
                "no extensionProviders entry is named {name:?} (and it is not the built-in envoy)"
            ));
        };
        let Some(file) = p.get("envoyFileAccessLog") else {
            return Err(format!(
                "provider {name:?} is not an envoyFileAccessLog provider (the access log weft has)"
            ));
        };
        let path = file
            .get("path")
            .and_then(Loose::as_str)
            .filter(|p| !p.is_empty())
            .unwrap_or("/dev/stdout")
            .to_string();
        let format = file.get("logFormat");
        if let Some(labels) = format.and_then(|f| f.get("labels")) {
            let Some(map) = labels.as_mapping() else {
                return Err(format!("provider {name:?}: logFormat.labels is not a map"));
            };
            let mut keys = BTreeMap::new();
            for (k, v) in map {
                if let (Some(k), Some(v)) = (k.as_str(), v.as_str()) {
                    keys.insert(k.to_string(), v.to_string());
                }
            }
            return Ok(FileAccessLog {
                path,
                json: true,
                format: serde_json::to_string(&keys).ok(),
            });
        }
        Ok(FileAccessLog {
            path,
            json: false,
            format: format
                .and_then(|f| f.get("text"))
                .and_then(Loose::as_str)
                .map(str::to_string),
        })
    }

    /// The tracing provider `name` of `extensionProviders`.
    pub fn extension_provider(&self, name: &str) -> Result<TracingProvider, TracingError> {
        let list = match &self.extension_providers {
            Some(Loose::Sequence(l)) => l.as_slice(),
            _ => &[],
        };
        let Some((i, p)) = list
            .iter()
            .enumerate()
            .find(|(_, p)| p.get("name").and_then(Loose::as_str) == Some(name))
        else {
            return Err(TracingError {
                field: "defaultProviders.tracing[0]".into(),
                message: format!("no extensionProviders entry is named {name:?}"),
            });
        };
        let field = |f: &str| format!("extensionProviders[{i}].{f}");
        let address = |kind: &str, body: &Loose| -> Result<String, TracingError> {
            let service = body.get("service").and_then(Loose::as_str).unwrap_or("");
            let port = body.get("port").and_then(Loose::as_u64);
            match (service, port) {
                (s, Some(p)) if !s.is_empty() && (1..=65535).contains(&p) => Ok(format!("{s}:{p}")),
                _ => Err(TracingError {
                    field: field(kind),
                    message: "needs service (a host) and port (1 to 65535)".into(),
                }),
            }
        };
        if let Some(z) = p.get("zipkin") {
            return Ok(TracingProvider::Zipkin {
                address: address("zipkin", z)?,
            });
        }
        if let Some(o) = p.get("opentelemetry") {
            let address = address("opentelemetry", o)?;
            let Some(http) = o.get("http") else {
                return Err(TracingError {
                    field: field("opentelemetry"),
                    message: "OTLP over gRPC is not supported by weft yet; set http: {path: /v1/traces} and the OTLP/HTTP port".into(),
                });
            };
            let path = match http.get("path").and_then(Loose::as_str) {
                None | Some("") => OTLP_HTTP_PATH.to_string(),
                Some(p) if p.starts_with('/') => p.to_string(),
                Some(p) => {
                    return Err(TracingError {
                        field: field("opentelemetry.http.path"),
                        message: format!("{p:?} does not start with /"),
                    })
                }
            };
            return Ok(TracingProvider::OpenTelemetry { address, path });
        }
        Err(TracingError {
            field: field("name"),
            message: format!(
                "provider {name:?} is not a zipkin or opentelemetry provider (the tracers weft has)"
            ),
        })
    }
}

/// `host:port` with a port from 1 to 65535.
fn is_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

fn yaml_text(v: &Loose) -> String {
    serde_yaml_ng::to_string(v)
        .map(|s| s.trim_end().to_string())
        .unwrap_or_else(|_| format!("{v:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(yaml: &str) -> MeshConfig {
        serde_yaml_ng::from_str(yaml).expect("mesh")
    }

    #[test]
    fn tracing_from_legacy_zipkin_and_extension_providers() {
        assert_eq!(MeshConfig::default().tracing(), Ok(None));
        let t =
            mesh("defaultConfig: {tracing: {sampling: 100, zipkin: {address: '10.0.0.1:9411'}}}")
                .tracing()
                .expect("ok")
                .expect("on");
        assert_eq!(t.sampling, 100.0);
        assert_eq!(
            t.provider,
            TracingProvider::Zipkin {
                address: "10.0.0.1:9411".into()
            }
        );
        let t = mesh(
            "extensionProviders: [{name: otel, opentelemetry: {service: otel.observability, port: 4318, http: {}}}]\ndefaultProviders: {tracing: [otel]}",
        )
        .tracing()
        .expect("ok")
        .expect("on");
        assert_eq!(t.sampling, 1.0);
        assert_eq!(
            t.provider,
            TracingProvider::OpenTelemetry {
                address: "otel.observability:4318".into(),
                path: "/v1/traces".into()
            }
        );
        let off =
            mesh("enableTracing: false\ndefaultConfig: {tracing: {zipkin: {address: 'z:9411'}}}");
        assert_eq!(off.tracing(), Ok(None));
    }

    #[test]
    fn bad_tracing_names_the_field() {
        for (yaml, field) in [
            ("defaultConfig: {tracing: {sampling: 101, zipkin: {address: 'z:9411'}}}", "defaultConfig.tracing.sampling"),
            ("defaultConfig: {tracing: {zipkin: {address: zipkin}}}", "defaultConfig.tracing.zipkin.address"),
            ("defaultProviders: {tracing: [nope]}", "defaultProviders.tracing[0]"),
            ("extensionProviders: [{name: z, zipkin: {service: zipkin}}]\ndefaultProviders: {tracing: [z]}", "extensionProviders[0].zipkin"),
            ("extensionProviders: [{name: o, opentelemetry: {service: o, port: 4317}}]\ndefaultProviders: {tracing: [o]}", "extensionProviders[0].opentelemetry"),
            ("extensionProviders: [{name: d, datadog: {service: d, port: 8126}}]\ndefaultProviders: {tracing: [d]}", "extensionProviders[0].name"),
        ] {
            let e = mesh(yaml).tracing().expect_err(yaml);
            assert_eq!(e.field, field, "{yaml}: {e}");
        }
    }
}
