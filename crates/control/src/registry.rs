//! The service registry in directory mode: services from ServiceEntry, endpoints from their inline
//! `endpoints` or from the WorkloadEntries their `workloadSelector` selects (same namespace).

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use weft_api::host::{qualify, split_service_fqdn};
use weft_api::networking::labels_match;
use weft_api::networking::service_entry::ServicePort;
use weft_api::Resource;

/// One service: a host with ports and the instances behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    /// FQDN (`reviews.default.svc.cluster.local`).
    pub hostname: String,
    /// Short name when the host is a cluster-local name (`reviews`).
    pub short_name: Option<String>,
    /// Namespace of the ServiceEntry.
    pub namespace: String,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// Workload instances.
    pub instances: Vec<Instance>,
    /// `location` is not `MESH_INTERNAL` (Istio's default is `MESH_EXTERNAL`): no auto mTLS.
    pub mesh_external: bool,
}

impl Service {
    /// The port a route to this service uses when the destination names none: the only port, or else
    /// the port the request arrived for.
    pub fn port_for(&self, requested: Option<u32>, listener_port: u32) -> u32 {
        match requested {
            Some(p) => p,
            None if self.ports.len() == 1 => self.ports[0].number,
            None => listener_port,
        }
    }
}

/// One endpoint of a service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Instance {
    /// IP address.
    pub ip: String,
    /// Ports by service port name (WorkloadEntry `ports`).
    pub ports: BTreeMap<String, u32>,
    /// Labels, used by subsets.
    pub labels: BTreeMap<String, String>,
    /// Weight.
    pub weight: Option<u32>,
    /// Service account (`serviceAccount`); `None` means `default`.
    pub service_account: Option<String>,
}

impl Instance {
    /// The port on this instance for a service port: the entry's own mapping, else the target port, else
    /// the service port.
    pub fn port_for(&self, sp: &ServicePort) -> u32 {
        self.ports
            .get(&sp.name)
            .copied()
            .or(sp.target_port)
            .unwrap_or(sp.number)
    }
}

/// Builds the registry from accepted resources. Hosts are qualified with the ServiceEntry's namespace.
pub fn build(resources: &[Arc<Resource>]) -> BTreeMap<String, Arc<Service>> {
    let mut services = BTreeMap::new();
    for r in resources {
        let Some(se) = r.as_service_entry() else {
            continue;
        };
        let ns = &r.metadata.namespace;
        let instances: Vec<Instance> = if se.resolution.as_deref() != Some("STATIC") {
            Vec::new()
        } else if let Some(sel) = &se.workload_selector {
            resources
                .iter()
                .filter(|w| &w.metadata.namespace == ns)
                .filter_map(|w| w.as_workload_entry())
                .filter(|we| labels_match(&sel.labels, &we.labels))
                .filter_map(instance)
                .collect()
        } else {
            se.endpoints.iter().filter_map(instance).collect()
        };
        for h in &se.hosts {
            let hostname = qualify(h, ns);
            let short_name = split_service_fqdn(&hostname)
                .filter(|(_, svc_ns)| svc_ns == ns)
                .map(|(n, _)| n.to_string());
            services.entry(hostname.clone()).or_insert_with(|| {
                Arc::new(Service {
                    hostname,
                    short_name,
                    namespace: ns.clone(),
                    ports: se.ports.clone(),
                    instances: instances.clone(),
                    mesh_external: se.location.as_deref() != Some("MESH_INTERNAL"),
                })
            });
        }
    }
    services
}

fn instance(we: &weft_api::networking::WorkloadEntry) -> Option<Instance> {
    Some(Instance {
        ip: we.address.clone()?,
        ports: we.ports.clone(),
        labels: we.labels.clone(),
        weight: we.weight,
        service_account: we.service_account.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_api::parse_file;

    #[test]
    fn workload_selector_picks_entries_in_the_namespace() {
        let text = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 9080, name: http, protocol: HTTP}]\n  workloadSelector: {labels: {app: reviews}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: reviews-v1}\nspec: {address: 127.0.1.12, labels: {app: reviews, version: v1}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: reviews-v2, namespace: other}\nspec: {address: 127.0.1.13, labels: {app: reviews, version: v2}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: ratings}\nspec: {address: 127.0.1.15, ports: {http: 9081}, labels: {app: ratings}}\n";
        let p = parse_file("r.yaml", text);
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        let res: Vec<Arc<Resource>> = p.resources.into_iter().map(Arc::new).collect();
        let reg = build(&res);
        let svc = &reg["reviews.default.svc.cluster.local"];
        assert_eq!(svc.short_name.as_deref(), Some("reviews"));
        let ips: Vec<&str> = svc.instances.iter().map(|i| i.ip.as_str()).collect();
        assert_eq!(ips, vec!["127.0.1.12"]);
        assert_eq!(svc.instances[0].port_for(&svc.ports[0]), 9080);
    }
}
