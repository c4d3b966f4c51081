//! ServiceEntry and WorkloadEntry: the service registry in directory mode.

use crate::networking::WorkloadSelector;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `spec` of a ServiceEntry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceEntry {
    /// Hosts.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Virtual IPs.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Ports.
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// `MESH_EXTERNAL` (default) or `MESH_INTERNAL`.
    pub location: Option<String>,
    /// `NONE` (default), `STATIC`, `DNS`, `DNS_ROUND_ROBIN`, `DYNAMIC_DNS`.
    pub resolution: Option<String>,
    /// Inline endpoints.
    #[serde(default)]
    pub endpoints: Vec<WorkloadEntry>,
    /// Select WorkloadEntries by label instead.
    pub workload_selector: Option<WorkloadSelector>,
    /// Namespaces this is visible to.
    #[serde(default)]
    pub export_to: Vec<String>,
    /// SANs.
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
}

/// A service port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePort {
    /// Port number.
    #[serde(default)]
    pub number: u32,
    /// `HTTP`, `HTTP2`, `GRPC`, `TCP`, …
    pub protocol: Option<String>,
    /// Name (required).
    #[serde(default)]
    pub name: String,
    /// Port on the endpoints, when it differs.
    pub target_port: Option<u32>,
}

impl ServicePort {
    /// The protocol, from `protocol` or else the name's prefix (`http-foo` → HTTP), upper case.
    pub fn effective_protocol(&self) -> String {
        if let Some(p) = &self.protocol {
            return p.to_ascii_uppercase();
        }
        let prefix = self.name.split('-').next().unwrap_or_default();
        prefix.to_ascii_uppercase()
    }

    /// True for protocols the HTTP proxy handles.
    pub fn is_http(&self) -> bool {
        matches!(
            self.effective_protocol().as_str(),
            "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB"
        )
    }
}

/// `spec` of a WorkloadEntry, also used inline as a ServiceEntry endpoint.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadEntry {
    /// IP address.
    pub address: Option<String>,
    /// Port by service port name.
    #[serde(default)]
    pub ports: BTreeMap<String, u32>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Network.
    pub network: Option<String>,
    /// Locality.
    pub locality: Option<String>,
    /// Load-balancing weight.
    pub weight: Option<u32>,
    /// Service account.
    pub service_account: Option<String>,
}
