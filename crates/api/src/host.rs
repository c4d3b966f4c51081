//! Host names: Istio qualifies a short name with the namespace of the resource that wrote it.

/// The mesh's DNS suffix for services.
pub const CLUSTER_DOMAIN: &str = "svc.cluster.local";

/// Qualifies `reviews` (written in namespace `default`) as `reviews.default.svc.cluster.local`.
/// Names that already contain a dot are left as they are, except `name.ns` and `name.ns.svc`, which are
/// completed to the FQDN as Kubernetes DNS would.
pub fn qualify(host: &str, namespace: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    if host.starts_with('*') {
        return host;
    }
    let parts: Vec<&str> = host.split('.').collect();
    match parts.len() {
        1 => format!("{host}.{namespace}.{CLUSTER_DOMAIN}"),
        2 => format!("{host}.{CLUSTER_DOMAIN}"),
        3 if parts[2] == "svc" => format!("{host}.cluster.local"),
        _ => host,
    }
}

/// For `reviews.default.svc.cluster.local`, returns `Some(("reviews", "default"))`.
pub fn split_service_fqdn(fqdn: &str) -> Option<(&str, &str)> {
    let rest = fqdn.strip_suffix(CLUSTER_DOMAIN)?.strip_suffix('.')?;
    let (name, ns) = rest.split_once('.')?;
    if ns.contains('.') {
        return None;
    }
    Some((name, ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualifies_like_istio() {
        let cases = [
            ("reviews", "default", "reviews.default.svc.cluster.local"),
            ("reviews.prod", "default", "reviews.prod.svc.cluster.local"),
            (
                "reviews.prod.svc",
                "default",
                "reviews.prod.svc.cluster.local",
            ),
            ("Reviews", "default", "reviews.default.svc.cluster.local"),
            ("api.example.com", "default", "api.example.com"),
            ("*.example.com", "default", "*.example.com"),
        ];
        for (host, ns, want) in cases {
            assert_eq!(qualify(host, ns), want, "{host} in {ns}");
        }
        assert_eq!(
            split_service_fqdn("reviews.default.svc.cluster.local"),
            Some(("reviews", "default"))
        );
        assert_eq!(split_service_fqdn("api.example.com"), None);
    }
}
