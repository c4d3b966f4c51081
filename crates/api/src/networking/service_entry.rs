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
        port_protocol(self.protocol.as_deref(), &self.name)
    }

    /// True for protocols the HTTP proxy handles.
    pub fn is_http(&self) -> bool {
        matches!(
            self.effective_protocol().as_str(),
            "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB"
        )
    }

    /// True for opaque TCP (`protocol: TCP`, or no protocol and a name `tcp` or `tcp-…`): weftd serves
    /// its clusters and endpoints, and TCP listeners where a Sidecar or an inbound port asks for one.
    pub fn is_tcp(&self) -> bool {
        self.effective_protocol() == "TCP"
    }
}

/// Istio's protocol selection for a port: the `protocol` field when set, else the port name up to its
/// first `-` (`tcp-db` → TCP, `http` → HTTP), upper case. A name without a known prefix gives a protocol
/// weft does not serve (`tcpx` → TCPX).
pub fn port_protocol(protocol: Option<&str>, name: &str) -> String {
    match protocol {
        Some(p) => p.to_ascii_uppercase(),
        None => name
            .split('-')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_comes_from_the_field_then_the_name_prefix() {
        let port = |protocol: Option<&str>, name: &str| ServicePort {
            number: 9000,
            protocol: protocol.map(str::to_string),
            name: name.into(),
            target_port: None,
        };
        let cases = [
            ("field", port(Some("TCP"), "http"), "TCP", true, false),
            (
                "field, any case",
                port(Some("tcp"), "db"),
                "TCP",
                true,
                false,
            ),
            ("name alone", port(None, "tcp"), "TCP", true, false),
            (
                "name with a suffix",
                port(None, "tcp-db"),
                "TCP",
                true,
                false,
            ),
            (
                "name that only starts with tcp",
                port(None, "tcpx"),
                "TCPX",
                false,
                false,
            ),
            ("http name", port(None, "http-web"), "HTTP", false, true),
            ("grpc field", port(Some("GRPC"), "tcp"), "GRPC", false, true),
            (
                "tls is neither",
                port(Some("TLS"), "tls"),
                "TLS",
                false,
                false,
            ),
        ];
        for (case, p, proto, tcp, http) in cases {
            assert_eq!(p.effective_protocol(), proto, "{case}");
            assert_eq!(p.is_tcp(), tcp, "{case}");
            assert_eq!(p.is_http(), http, "{case}");
        }
    }
}
