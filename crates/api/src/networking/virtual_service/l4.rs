//! VirtualService `tcp[]` and `tls[]` rules: opaque TCP routed by port and source, TLS by SNI, each to
//! weighted destinations. weftd serves `tcp[]` on a proxy's TCP listeners; `tls[]` is parsed for the
//! analyzer, which refuses it until the proxy reads SNI.

use super::Destination;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// One `tcp[]` rule: the first whose match holds takes the connection.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpRoute {
    /// Conditions, ORed; empty matches every connection.
    #[serde(default, rename = "match")]
    pub matches: Vec<L4MatchAttributes>,
    /// Weighted destinations.
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

/// One `tls[]` rule.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsRoute {
    /// Conditions, ORed (each needs `sniHosts`).
    #[serde(default, rename = "match")]
    pub matches: Vec<TlsMatchAttributes>,
    /// Weighted destinations.
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

/// What a TCP connection must have for a `tcp[]` rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct L4MatchAttributes {
    /// Destination IPs or CIDRs.
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    /// The port the connection came to.
    pub port: Option<u32>,
    /// Labels the client workload must have.
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways this match applies to (instead of the VirtualService's).
    #[serde(default)]
    pub gateways: Vec<String>,
    /// The client workload's namespace.
    pub source_namespace: Option<String>,
    /// Deprecated source subnet.
    pub source_subnet: Option<String>,
}

/// What a TLS connection must have for a `tls[]` rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsMatchAttributes {
    /// Server names (SNI), wildcards allowed.
    #[serde(default)]
    pub sni_hosts: Vec<String>,
    /// Destination IPs or CIDRs.
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    /// The port the connection came to.
    pub port: Option<u32>,
    /// Labels the client workload must have.
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways this match applies to.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// The client workload's namespace.
    pub source_namespace: Option<String>,
}

/// A weighted destination of a `tcp[]` or `tls[]` rule.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteDestination {
    /// Where to send.
    pub destination: Destination,
    /// Relative weight.
    pub weight: Option<i64>,
}

/// A TCP connection as a listener sees it, for matching `tcp` rules.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    /// The gateway (`namespace/name`) whose server took it; `None` on a sidecar.
    pub gateway: Option<&'a str>,
    /// The address it was made to (an explicit listener's own address).
    pub destination: IpAddr,
    /// The port it was made to.
    pub port: u32,
    /// The client workload's namespace (a gateway's own, on a gateway).
    pub namespace: &'a str,
    /// The client workload's labels (a gateway's own, on a gateway).
    pub labels: &'a BTreeMap<String, String>,
}

impl L4MatchAttributes {
    /// Whether a connection matches. A match naming `gateways` applies to those only (`mesh`: sidecars);
    /// its names are qualified with `vs_namespace`, the VirtualService's.
    pub fn admits(&self, c: &Connection, vs_namespace: &str) -> bool {
        let here = match c.gateway {
            None => "mesh".to_string(),
            Some(g) => g.to_string(),
        };
        (self.gateways.is_empty()
            || self
                .gateways
                .iter()
                .any(|g| crate::networking::gateway::qualify_gateway(g, vs_namespace) == here))
            && self.port.is_none_or(|p| p == c.port)
            && self
                .source_namespace
                .as_deref()
                .is_none_or(|ns| ns == c.namespace)
            && crate::networking::labels_match(&self.source_labels, c.labels)
            && (self.destination_subnets.is_empty()
                || self
                    .destination_subnets
                    .iter()
                    .any(|s| subnet_contains(s, c.destination) == Some(true)))
    }
}

impl TcpRoute {
    /// Whether the rule, of a VirtualService in `vs_namespace`, takes the connection.
    pub fn admits(&self, c: &Connection, vs_namespace: &str) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.admits(c, vs_namespace))
    }
}

/// Whether `subnet` (`10.0.0.0/8`, `10.1.2.3`, `fd00::/8`) contains `ip`; `None` when it does not parse.
pub fn subnet_contains(subnet: &str, ip: IpAddr) -> Option<bool> {
    let (addr, len) = match subnet.split_once('/') {
        Some((a, l)) => (a.parse::<IpAddr>().ok()?, Some(l.parse::<u8>().ok()?)),
        None => (subnet.parse::<IpAddr>().ok()?, None),
    };
    let prefix = |a: u128, b: u128, bits: u8, width: u8| {
        if bits > width {
            return None;
        }
        let shift = u32::from(width - bits);
        Some(bits == 0 || (a >> shift) == (b >> shift))
    };
    match (addr, ip) {
        (IpAddr::V4(a), IpAddr::V4(b)) => prefix(
            u128::from(u32::from(a)),
            u128::from(u32::from(b)),
            len.unwrap_or(32),
            32,
        ),
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            prefix(u128::from(a), u128::from(b), len.unwrap_or(128), 128)
        }
        // Of the other family: it contains nothing of this one (if it is a subnet at all).
        _ => {
            let width = if addr.is_ipv4() { 32 } else { 128 };
            (len.is_none_or(|l| l <= width)).then_some(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_contain_their_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(subnet_contains("10.0.0.0/8", ip("10.9.8.7")), Some(true));
        assert_eq!(subnet_contains("10.0.0.0/8", ip("11.0.0.1")), Some(false));
        assert_eq!(subnet_contains("10.1.2.3", ip("10.1.2.3")), Some(true));
        assert_eq!(subnet_contains("10.1.2.3", ip("10.1.2.4")), Some(false));
        assert_eq!(subnet_contains("0.0.0.0/0", ip("1.2.3.4")), Some(true));
        assert_eq!(subnet_contains("fd00::/8", ip("fd12::1")), Some(true));
        assert_eq!(subnet_contains("fd00::/8", ip("10.0.0.1")), Some(false));
        assert_eq!(subnet_contains("10.0.0.0/33", ip("10.0.0.1")), None);
        assert_eq!(subnet_contains("ten/8", ip("10.0.0.1")), None);
    }

    #[test]
    fn a_rule_admits_by_port_source_and_destination() {
        let rule: TcpRoute = serde_yaml_ng::from_str(
            "match: [{port: 9000, sourceLabels: {app: productpage}, destinationSubnets: [127.0.1.0/24]}]\nroute: [{destination: {host: echo}}]",
        )
        .expect("parses");
        let labels: BTreeMap<String, String> =
            [("app".to_string(), "productpage".to_string())].into();
        let c = Connection {
            gateway: None,
            destination: "127.0.1.10".parse().expect("ip"),
            port: 9000,
            namespace: "default",
            labels: &labels,
        };
        assert!(rule.admits(&c, "default"));
        assert!(!rule.admits(&Connection { port: 9001, ..c }, "default"));
        assert!(!rule.admits(
            &Connection {
                destination: "127.0.2.1".parse().expect("ip"),
                ..c
            },
            "default"
        ));
        assert!(!rule.admits(
            &Connection {
                labels: &BTreeMap::new(),
                ..c
            },
            "default"
        ));
        let any: TcpRoute =
            serde_yaml_ng::from_str("route: [{destination: {host: echo}}]").expect("parses");
        assert!(any.admits(&Connection { port: 1, ..c }, "default"));
        let gateway_only: TcpRoute = serde_yaml_ng::from_str(
            "match: [{gateways: [gw]}]\nroute: [{destination: {host: echo}}]",
        )
        .expect("parses");
        assert!(!gateway_only.admits(&c, "default"));
        // On the gateway it names (qualified with the VirtualService's namespace), it applies.
        let at_gw = Connection {
            gateway: Some("default/gw"),
            ..c
        };
        assert!(gateway_only.admits(&at_gw, "default"));
        assert!(!gateway_only.admits(&at_gw, "other"));
    }
}
