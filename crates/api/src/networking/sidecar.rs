//! Sidecar: which services a proxy sees (egress scoping), so large meshes send each proxy only what it
//! can call.

use crate::networking::WorkloadSelector;
use serde::{Deserialize, Serialize};

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

/// One `egress` entry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EgressListener {
    /// Port (not supported yet: egress applies to every port).
    pub port: Option<Loose>,
    /// Bind address (not supported yet).
    pub bind: Option<String>,
    /// Capture mode (not supported yet).
    pub capture_mode: Option<String>,
    /// `namespace/dnsName` entries.
    #[serde(default)]
    pub hosts: Vec<String>,
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
