//! Sidecar: which services a proxy sees (egress scoping), so large meshes send each proxy only what it
//! can call, and the explicit TCP listeners of its egress ports.

use crate::networking::service_entry::port_protocol;
use crate::networking::WorkloadSelector;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

type Loose = serde_yaml_ng::Value;

/// `spec` of a Sidecar.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Sidecar {
    /// Workloads this applies to; without it, every workload of the namespace without a more specific
    /// Sidecar (and, in the root namespace, of the mesh).
    pub workload_selector: Option<WorkloadSelector>,
    /// Inbound listeners (not supported yet: refused by the analyzer).
    #[serde(default)]
    pub ingress: Vec<Loose>,
    /// What the workload may reach.
    #[serde(default)]
    pub egress: Vec<EgressListener>,
    /// `REGISTRY_ONLY` or `ALLOW_ANY`.
    pub outbound_traffic_policy: Option<Loose>,
    /// Inbound connection pool (not supported yet).
    pub inbound_connection_pool: Option<Loose>,
}

/// One `egress` entry. Without `port` it only scopes what the workload sees; with a TCP `port` it is
/// also a listener the workload connects to (explicit capture: `bind:port`, default the workload's IP).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EgressListener {
    /// The listener's port; only TCP is served yet (the analyzer refuses other protocols).
    pub port: Option<SidecarPort>,
    /// The listener's IP address (Istio also takes `unix://` paths, which weft refuses); the workload's
    /// own IP when absent.
    pub bind: Option<String>,
    /// How traffic reaches the listener; weft has no iptables capture, so `IPTABLES` is refused and
    /// `DEFAULT` and `NONE` both mean the application connects to `bind:port` itself.
    pub capture_mode: Option<CaptureMode>,
    /// `namespace/dnsName` entries.
    #[serde(default)]
    pub hosts: Vec<String>,
}

/// `egress[].port` ([Istio's `SidecarPort`](https://istio.io/latest/docs/reference/config/networking/sidecar/#SidecarPort)).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SidecarPort {
    /// Port number.
    #[serde(default)]
    pub number: u32,
    /// `TCP`, `HTTP`, …; when absent, the name's prefix decides, as for service ports.
    pub protocol: Option<String>,
    /// Name (optional).
    #[serde(default)]
    pub name: String,
}

impl SidecarPort {
    /// The protocol, by Istio's rules ([`port_protocol`]).
    pub fn effective_protocol(&self) -> String {
        port_protocol(self.protocol.as_deref(), &self.name)
    }

    /// True when this port carries opaque TCP, the only egress protocol weft serves yet.
    pub fn is_tcp(&self) -> bool {
        self.effective_protocol() == "TCP"
    }
}

/// `egress[].captureMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaptureMode {
    /// The mesh's default: for weft, no capture (there is no iptables capture yet).
    Default,
    /// Traffic redirected by iptables (refused: weft has no iptables capture yet).
    Iptables,
    /// No capture: the application addresses the listener.
    None,
}

impl EgressListener {
    /// `bind` as an IP address: `None` when absent, `Some(Err(text))` when it does not parse.
    pub fn bind_ip(&self) -> Option<Result<IpAddr, &str>> {
        self.bind
            .as_deref()
            .map(|b| b.parse::<IpAddr>().map_err(|_| b))
    }
}

/// One parsed `namespace/dnsName` egress host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressHost {
    /// `*` any, `.` the Sidecar's namespace, `~` none, or a namespace name.
    pub namespace: String,
    /// `*`, `*.suffix`, or an exact host.
    pub host: String,
}

impl EgressHost {
    /// Parses `ns/host`; `None` when the `/` is missing or a side is empty.
    pub fn parse(s: &str) -> Option<EgressHost> {
        let (ns, host) = s.split_once('/')?;
        if ns.is_empty() || host.is_empty() {
            return None;
        }
        Some(EgressHost {
            namespace: ns.to_string(),
            host: host.to_string(),
        })
    }

    /// Whether a service `hostname` in `service_ns` is reachable under this entry of a Sidecar in
    /// `sidecar_ns`.
    pub fn allows(&self, sidecar_ns: &str, service_ns: &str, hostname: &str) -> bool {
        let ns_ok = match self.namespace.as_str() {
            "*" => true,
            "~" => false,
            "." => service_ns == sidecar_ns,
            ns => service_ns == ns,
        };
        ns_ok
            && match self.host.as_str() {
                "*" => true,
                h if h.starts_with("*.") => hostname.ends_with(&h[1..]),
                h => hostname == h,
            }
    }
}

impl Sidecar {
    /// Every egress host, parsed (unparseable ones are skipped; the analyzer refuses them).
    pub fn egress_hosts(&self) -> impl Iterator<Item = EgressHost> + '_ {
        self.egress
            .iter()
            .flat_map(|e| e.hosts.iter())
            .filter_map(|h| EgressHost::parse(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn egress_host_matching() {
        let h = |s: &str| EgressHost::parse(s).unwrap();
        assert!(h("./*").allows("a", "a", "x.a.svc.cluster.local"));
        assert!(!h("./*").allows("a", "b", "x.b.svc.cluster.local"));
        assert!(h("*/*").allows("a", "b", "x.b.svc.cluster.local"));
        assert!(h("istio-system/*").allows("a", "istio-system", "istiod.istio-system.svc"));
        assert!(!h("~/*").allows("a", "a", "x"));
        assert!(h("*/*.example.com").allows("a", "b", "api.example.com"));
        assert!(!h("*/*.example.com").allows("a", "b", "example.org"));
        assert!(h("b/x.b.svc.cluster.local").allows("a", "b", "x.b.svc.cluster.local"));
        assert!(EgressHost::parse("nohost").is_none());
        assert!(EgressHost::parse("/x").is_none());
    }
}
