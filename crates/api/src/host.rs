//! Host names: Istio qualifies a short name with the namespace of the resource that wrote it.

/// The mesh's DNS suffix for services.
pub const CLUSTER_DOMAIN: &str = "svc.cluster.local";

/// Qualifies `reviews` (written in namespace `default`) as `reviews.default.svc.cluster.local`. A name
/// with a dot is taken as fully qualified and kept as written (lowercased), as Istio does: `reviews.prod`
/// is the host `reviews.prod`, not the service `reviews` of namespace `prod` (write
/// `reviews.prod.svc.cluster.local` for that), and `httpbin.org` stays `httpbin.org`.
pub fn qualify(host: &str, namespace: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    if host.starts_with('*') || host.contains('.') || host.contains(':') {
        return host;
    }
    format!("{host}.{namespace}.{CLUSTER_DOMAIN}")
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
            // Istio takes a name with a dot as fully qualified.
            ("reviews.prod", "default", "reviews.prod"),
            ("reviews.prod.svc", "default", "reviews.prod.svc"),
            ("httpbin.org", "default", "httpbin.org"),
            ("10.0.0.1", "default", "10.0.0.1"),
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
