//! What a sidecar tells weftd about itself: the node metadata keys (see the crate README) and helpers to
//! build and read them.

use crate::pb::envoy::config::core::v3::Node;
use crate::pb::google::protobuf::{value::Kind, Struct, Value};
use std::collections::BTreeMap;

/// Workload instance name.
pub const NAME: &str = "NAME";
/// Workload name.
pub const WORKLOAD_NAME: &str = "WORKLOAD_NAME";
/// Namespace.
pub const NAMESPACE: &str = "NAMESPACE";
/// Labels, a struct of strings.
pub const LABELS: &str = "LABELS";
/// Service account.
pub const SERVICE_ACCOUNT: &str = "SERVICE_ACCOUNT";
/// The workload's addresses, comma separated.
pub const INSTANCE_IPS: &str = "INSTANCE_IPS";
/// `servicePort:appPort` pairs, comma separated.
pub const INBOUND_PORTS: &str = "INBOUND_PORTS";
/// The proxy's admin address.
pub const ADMIN_ADDRESS: &str = "ADMIN_ADDRESS";
/// Where the proxy serves its Prometheus metrics (`ip:port`, Istio's 15090), which weftd's console
/// scrapes and its Prometheus service discovery lists.
pub const STATS_ADDRESS: &str = "STATS_ADDRESS";

/// The node id's type of a sidecar.
pub const NODE_TYPE_SIDECAR: &str = "sidecar";
/// The node id's type of a gateway (Istio's ingress and egress gateways).
pub const NODE_TYPE_ROUTER: &str = "router";

/// A sidecar's identity and ports, as carried in its node metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProxyIdentity {
    /// Workload name (`reviews-v1`).
    pub workload: String,
    /// Namespace (`default`).
    pub namespace: String,
    /// Workload labels.
    pub labels: BTreeMap<String, String>,
    /// Service account.
    pub service_account: String,
    /// The workload's IP address.
    pub ip: String,
    /// (service port, application port) pairs.
    pub inbound_ports: Vec<(u16, u16)>,
    /// The admin address, `ip:port`.
    pub admin_address: String,
    /// The Prometheus stats address, `ip:port`; empty when the proxy serves none.
    pub stats_address: String,
    /// A gateway (Istio's node type `router`: `weft-proxy --gateway`), with no application beside it,
    /// rather than a sidecar. Carried as the node id's first field, as Istio's proxies carry it.
    pub router: bool,
}

impl ProxyIdentity {
    /// Istio's node id: `sidecar~<ip>~<workload>.<ns>~<ns>.svc.cluster.local` (`router~…` for a
    /// gateway).
    pub fn node_id(&self) -> String {
        format!(
            "{}~{}~{}.{}~{}.svc.cluster.local",
            self.node_type(),
            self.ip,
            self.workload,
            self.namespace,
            self.namespace
        )
    }

    /// Istio's node type: `sidecar`, or `router` for a gateway.
    pub fn node_type(&self) -> &'static str {
        if self.router {
            NODE_TYPE_ROUTER
        } else {
            NODE_TYPE_SIDECAR
        }
    }

    /// The xDS `Node` a proxy sends on its first request.
    pub fn to_node(&self) -> Node {
        let mut fields = std::collections::HashMap::new();
        let s = |v: &str| Value {
            kind: Some(Kind::StringValue(v.to_string())),
        };
        fields.insert(NAME.into(), s(&self.workload));
        fields.insert(WORKLOAD_NAME.into(), s(&self.workload));
        fields.insert(NAMESPACE.into(), s(&self.namespace));
        fields.insert(SERVICE_ACCOUNT.into(), s(&self.service_account));
        fields.insert(INSTANCE_IPS.into(), s(&self.ip));
        fields.insert(ADMIN_ADDRESS.into(), s(&self.admin_address));
        if !self.stats_address.is_empty() {
            fields.insert(STATS_ADDRESS.into(), s(&self.stats_address));
        }
        let ports: Vec<String> = self
            .inbound_ports
            .iter()
            .map(|(svc, app)| format!("{svc}:{app}"))
            .collect();
        fields.insert(INBOUND_PORTS.into(), s(&ports.join(",")));
        let labels = self.labels.iter().map(|(k, v)| (k.clone(), s(v))).collect();
        fields.insert(
            LABELS.into(),
            Value {
                kind: Some(Kind::StructValue(Struct { fields: labels })),
            },
        );
        Node {
            id: self.node_id(),
            cluster: format!("{}.{}", self.workload, self.namespace),
            metadata: Some(Struct { fields }),
            ..Default::default()
        }
    }

    /// Reads an identity back from a `Node`. Missing keys become empty values; a malformed port pair is an
    /// error naming the key and the value.
    pub fn from_node(node: &Node) -> Result<Self, NodeError> {
        let empty = Struct::default();
        let md = node.metadata.as_ref().unwrap_or(&empty);
        let get = |k: &str| -> String {
            match md.fields.get(k).and_then(|v| v.kind.as_ref()) {
                Some(Kind::StringValue(s)) => s.clone(),
                _ => String::new(),
            }
        };
        let mut labels = BTreeMap::new();
        if let Some(Kind::StructValue(st)) = md.fields.get(LABELS).and_then(|v| v.kind.as_ref()) {
            for (k, v) in &st.fields {
                if let Some(Kind::StringValue(s)) = &v.kind {
                    labels.insert(k.clone(), s.clone());
                }
            }
        }
        let ports_raw = get(INBOUND_PORTS);
        let inbound_ports = parse_inbound_ports(&ports_raw).map_err(|_| NodeError::Ports {
            value: ports_raw.clone(),
        })?;
        let ip = get(INSTANCE_IPS)
            .split(',')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        Ok(ProxyIdentity {
            workload: get(WORKLOAD_NAME),
            namespace: get(NAMESPACE),
            labels,
            service_account: get(SERVICE_ACCOUNT),
            ip,
            inbound_ports,
            admin_address: get(ADMIN_ADDRESS),
            stats_address: get(STATS_ADDRESS),
            router: node.id.split('~').next() == Some(NODE_TYPE_ROUTER),
        })
    }
}

/// Node metadata that cannot be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeError {
    /// `INBOUND_PORTS` is not a list of `servicePort:appPort` pairs.
    #[error("node metadata {INBOUND_PORTS}={value:?} is not a list of servicePort:appPort pairs")]
    Ports {
        /// The value received.
        value: String,
    },
}

/// Parses `9080:19080,9443:19443` (a bare `9080` means the application uses the same port).
pub fn parse_inbound_ports(s: &str) -> Result<Vec<(u16, u16)>, std::num::ParseIntError> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (svc, app) = part.split_once(':').unwrap_or((part, part));
        out.push((svc.trim().parse()?, app.trim().parse()?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_through_a_node() {
        let id = ProxyIdentity {
            workload: "reviews-v1".into(),
            namespace: "default".into(),
            labels: [
                ("app".into(), "reviews".into()),
                ("version".into(), "v1".into()),
            ]
            .into(),
            service_account: "bookinfo-reviews".into(),
            ip: "127.0.1.4".into(),
            inbound_ports: vec![(9080, 19080)],
            admin_address: "127.0.1.4:15000".into(),
            stats_address: "127.0.1.4:15090".into(),
            router: false,
        };
        let node = id.to_node();
        assert_eq!(
            node.id,
            "sidecar~127.0.1.4~reviews-v1.default~default.svc.cluster.local"
        );
        assert_eq!(ProxyIdentity::from_node(&node), Ok(id.clone()));
        let gw = ProxyIdentity {
            workload: "istio-ingressgateway".into(),
            namespace: "istio-system".into(),
            router: true,
            ..id
        };
        let node = gw.to_node();
        assert_eq!(
            node.id,
            "router~127.0.1.4~istio-ingressgateway.istio-system~istio-system.svc.cluster.local"
        );
        assert_eq!(ProxyIdentity::from_node(&node), Ok(gw));
    }

    #[test]
    fn bad_ports_name_the_key() {
        let mut node = ProxyIdentity::default().to_node();
        node.metadata.as_mut().expect("metadata").fields.insert(
            INBOUND_PORTS.into(),
            Value {
                kind: Some(Kind::StringValue("http".into())),
            },
        );
        let err = ProxyIdentity::from_node(&node).expect_err("bad ports");
        assert_eq!(
            err.to_string(),
            "node metadata INBOUND_PORTS=\"http\" is not a list of servicePort:appPort pairs"
        );
    }

    #[test]
    fn bare_port_means_same_app_port() {
        assert_eq!(
            parse_inbound_ports("9080, 9443:19443"),
            Ok(vec![(9080, 9080), (9443, 19443)])
        );
    }
}
