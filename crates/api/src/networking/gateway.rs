//! Gateway: the servers (ports, hosts, TLS) a gateway proxy at the edge of the mesh listens on, for the
//! workloads its `selector` picks ([Istio's reference](https://istio.io/latest/docs/reference/config/networking/gateway/)).
//! VirtualServices bind to it through their `gateways`.

use crate::networking::service_entry::port_protocol;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

type Loose = serde_yaml_ng::Value;

/// `spec` of a Gateway.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Gateway {
    /// Labels of the gateway workloads this applies to (`istio: ingressgateway`), in any namespace; empty
    /// selects every gateway workload.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// The servers: one port each, with its hosts and TLS.
    #[serde(default)]
    pub servers: Vec<Server>,
}

/// One server of a Gateway.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Server {
    /// The port the proxy listens on.
    pub port: Option<GatewayPort>,
    /// `namespace/dnsName` hosts (the namespace part optional: `*/` by default).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The IP address to listen on (Istio also takes `unix://` paths, which weft refuses); the proxy's
    /// own address when absent.
    pub bind: Option<String>,
    /// Not implemented by Istio either; refused.
    pub default_endpoint: Option<String>,
    /// Server name, unique among the gateway's servers (used in HTTPS route names).
    pub name: Option<String>,
    /// TLS settings.
    pub tls: Option<ServerTls>,
}

/// `servers[].port`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GatewayPort {
    /// Port number.
    #[serde(default)]
    pub number: u32,
    /// `HTTP`, `HTTPS`, `HTTP2`, `GRPC`, `GRPC-WEB`, `TCP`, `TLS`, `MONGO`.
    #[serde(default)]
    pub protocol: String,
    /// Port name.
    #[serde(default)]
    pub name: String,
    /// Deprecated; refused.
    pub target_port: Option<u32>,
}

impl GatewayPort {
    /// The protocol, upper case (from the name's prefix when `protocol` is empty).
    pub fn effective_protocol(&self) -> String {
        let p = (!self.protocol.is_empty()).then_some(self.protocol.as_str());
        port_protocol(p, &self.name)
    }
}

/// `servers[].tls` ([Istio's ServerTLSSettings](https://istio.io/latest/docs/reference/config/networking/gateway/#ServerTLSSettings)).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerTls {
    /// Answer plain HTTP with a 301 to `https://`.
    #[serde(default)]
    pub https_redirect: bool,
    /// `PASSTHROUGH`, `SIMPLE`, `MUTUAL`, `AUTO_PASSTHROUGH`, `ISTIO_MUTUAL`, `OPTIONAL_MUTUAL`.
    pub mode: Option<String>,
    /// PEM file of the server's certificate chain.
    pub server_certificate: Option<String>,
    /// PEM file of the server's private key.
    pub private_key: Option<String>,
    /// PEM file of the roots client certificates must chain to (MUTUAL).
    pub ca_certificates: Option<String>,
    /// Certificate revocation list (not supported yet).
    pub ca_crl: Option<String>,
    /// A Kubernetes secret holding the certificate (not supported yet).
    pub credential_name: Option<String>,
    /// Several secrets (not supported yet).
    #[serde(default)]
    pub credential_names: Vec<String>,
    /// Several certificates (not supported yet).
    #[serde(default)]
    pub tls_certificates: Vec<Loose>,
    /// A secret holding the client roots (not supported yet).
    pub ca_cert_credential_name: Option<String>,
    /// Client SANs accepted (not supported yet).
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    /// Client key pins (not supported yet).
    #[serde(default)]
    pub verify_certificate_spki: Vec<String>,
    /// Client certificate pins (not supported yet).
    #[serde(default)]
    pub verify_certificate_hash: Vec<String>,
    /// Lowest TLS version (not supported yet).
    pub min_protocol_version: Option<String>,
    /// Highest TLS version (not supported yet).
    pub max_protocol_version: Option<String>,
    /// Cipher suites (not supported yet).
    #[serde(default)]
    pub cipher_suites: Vec<String>,
    /// Skip verifying client certificates (not supported yet).
    pub insecure_skip_verify: Option<bool>,
}

/// The TLS modes of a gateway server that weft serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// The gateway terminates TLS with its certificate.
    Simple,
    /// As SIMPLE, and the client must present a certificate the CA certificates vouch for.
    Mutual,
}

impl ServerTls {
    /// The mode, when it is one weft serves.
    pub fn served_mode(&self) -> Option<TlsMode> {
        match self.mode.as_deref() {
            Some("SIMPLE") => Some(TlsMode::Simple),
            Some("MUTUAL") => Some(TlsMode::Mutual),
            _ => None,
        }
    }
}

/// One parsed `namespace/dnsName` server host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHost {
    /// `*` any, `.` the Gateway's namespace, or a namespace name.
    pub namespace: String,
    /// `*`, `*.suffix`, or an exact host (lower case).
    pub host: String,
}

impl ServerHost {
    /// Parses `ns/host` or `host` (which means `*/host`); `None` when a side is empty.
    pub fn parse(s: &str) -> Option<ServerHost> {
        let (ns, host) = s.split_once('/').unwrap_or(("*", s));
        if ns.is_empty() || host.is_empty() || host.contains('/') {
            return None;
        }
        Some(ServerHost {
            namespace: ns.to_string(),
            host: host.to_ascii_lowercase(),
        })
    }

    /// Whether a VirtualService in `vs_ns` may bind to this server host from a Gateway in `gw_ns`.
    pub fn allows_namespace(&self, gw_ns: &str, vs_ns: &str) -> bool {
        match self.namespace.as_str() {
            "*" => true,
            "." => vs_ns == gw_ns,
            "~" => false,
            ns => ns == vs_ns,
        }
    }
}

/// Whether two host patterns (each exact, `*`, or `*.suffix`) have a host in common, as Istio matches a
/// VirtualService's hosts against a server's.
pub fn hosts_intersect(a: &str, b: &str) -> bool {
    if a == "*" || b == "*" {
        return true;
    }
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(sa), Some(sb)) => sa.ends_with(sb) || sb.ends_with(sa),
        (Some(sa), None) => b.ends_with(sa),
        (None, Some(sb)) => a.ends_with(sb),
        (None, None) => a == b,
    }
}

/// A VirtualService host as a gateway matches it: a short name (no dot) is qualified with the
/// VirtualService's namespace, anything else (`*`, `bookinfo.com`, `*.example.com`) is taken as written,
/// lower case, as Istio does.
pub fn virtual_service_host(host: &str, vs_ns: &str) -> String {
    let h = host.trim().to_ascii_lowercase();
    if h.contains('.') || h.starts_with('*') {
        h
    } else {
        crate::host::qualify(&h, vs_ns)
    }
}

/// `gateways:` entries of a VirtualService, qualified: `mesh`, or `namespace/name` (a bare name is in
/// the VirtualService's namespace).
pub fn qualify_gateway(gateway: &str, vs_ns: &str) -> String {
    if gateway == "mesh" || gateway.contains('/') {
        return gateway.to_string();
    }
    // `name.namespace.svc.cluster.local` is the old form; Istio reads it as namespace/name.
    if let Some((name, rest)) = gateway.split_once('.') {
        let ns = rest.split('.').next().unwrap_or(rest);
        return format!("{ns}/{name}");
    }
    format!("{vs_ns}/{gateway}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_hosts_parse_with_and_without_namespace() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("*", Some(("*", "*"))),
            ("bookinfo.com", Some(("*", "bookinfo.com"))),
            ("./*.example.com", Some((".", "*.example.com"))),
            (
                "prod/Reviews.example.com",
                Some(("prod", "reviews.example.com")),
            ),
            ("/x", None),
            ("ns/", None),
            ("a/b/c", None),
        ];
        for (text, want) in cases {
            let got = ServerHost::parse(text).map(|h| (h.namespace, h.host));
            let want = want.map(|(n, h)| (n.to_string(), h.to_string()));
            assert_eq!(got, want, "{text}");
        }
        let h = ServerHost::parse("./*").expect("host");
        assert!(h.allows_namespace("gw", "gw"));
        assert!(!h.allows_namespace("gw", "other"));
        assert!(ServerHost::parse("*")
            .expect("host")
            .allows_namespace("a", "b"));
        assert!(ServerHost::parse("b/*")
            .expect("host")
            .allows_namespace("a", "b"));
        assert!(!ServerHost::parse("c/*")
            .expect("host")
            .allows_namespace("a", "b"));
    }

    #[test]
    fn hosts_intersect_like_istio() {
        let cases = [
            ("*", "bookinfo.com", true),
            ("bookinfo.com", "*", true),
            ("bookinfo.com", "bookinfo.com", true),
            ("bookinfo.com", "reviews.com", false),
            ("*.example.com", "api.example.com", true),
            ("api.example.com", "*.example.com", true),
            ("*.example.com", "*.api.example.com", true),
            ("*.example.com", "example.org", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(hosts_intersect(a, b), want, "{a} ∩ {b}");
        }
    }

    #[test]
    fn gateway_names_are_qualified_with_the_virtual_service_namespace() {
        assert_eq!(qualify_gateway("mesh", "default"), "mesh");
        assert_eq!(
            qualify_gateway("bookinfo-gateway", "default"),
            "default/bookinfo-gateway"
        );
        assert_eq!(
            qualify_gateway("istio-system/gw", "default"),
            "istio-system/gw"
        );
        assert_eq!(
            qualify_gateway("gw.istio-system.svc.cluster.local", "default"),
            "istio-system/gw"
        );
    }
}
