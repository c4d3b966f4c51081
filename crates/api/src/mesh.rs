//! MeshConfig: mesh-wide settings, read from `mesh.yaml` in the config directory (the same YAML as Istio's
//! `istio` ConfigMap `mesh` key or `istioctl --meshConfigFile`).

use crate::duration::Duration;
use crate::networking::virtual_service::HttpRetry;
use serde::{Deserialize, Serialize};

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
    /// Tracing switch (later issue).
    pub enable_tracing: Option<bool>,
    /// Proxy defaults (later issue).
    pub default_config: Option<Loose>,
    /// `ALLOW_ANY` / `REGISTRY_ONLY`.
    pub outbound_traffic_policy: Option<Loose>,
    /// Inbound policy.
    pub inbound_traffic_policy: Option<Loose>,
    /// Extension providers (later issue).
    pub extension_providers: Option<Loose>,
    /// Default providers (later issue).
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
    /// Path normalization (later issue).
    pub path_normalization: Option<Loose>,
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

/// File names read as MeshConfig rather than as Istio resources.
pub fn is_mesh_file(file_name: &str) -> bool {
    matches!(
        file_name,
        "mesh.yaml" | "mesh.yml" | "meshconfig.yaml" | "meshconfig.yml"
    )
}
