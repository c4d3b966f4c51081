//! VirtualService `tcp` rules → where a `tcp_proxy` sends a connection: the first rule of the host's
//! VirtualService (for sidecars) that admits the connection's port and the client's namespace and
//! labels, to its destinations by weight; without one, the service's own cluster.

use super::outbound_cluster_name;
use crate::model::Model;
use weft_api::host::qualify;
use weft_api::networking::virtual_service::l4::{Connection, TcpRoute};
use weft_xds::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::{
    weighted_cluster::ClusterWeight, ClusterSpecifier, WeightedCluster,
};

/// The clusters for a connection `c` to `host` (a registry FQDN) through a sidecar's listener.
pub fn clusters_for(model: &Model, host: &str, c: &Connection) -> ClusterSpecifier {
    let port = c.port;
    let own = || ClusterSpecifier::Cluster(outbound_cluster_name(port, "", host));
    let Some(vs_res) = model.virtual_services.get(host) else {
        return own();
    };
    let Some(vs) = vs_res.as_virtual_service() else {
        return own();
    };
    let ns = &vs_res.metadata.namespace;
    let Some(rule) = vs.tcp.iter().find(|r| r.admits(c, ns)) else {
        return own();
    };
    specifier(model, &vs_res.metadata.namespace, rule, port).unwrap_or_else(own)
}

/// A rule's destinations as a cluster or weighted clusters; `None` when none is in the registry.
/// Weights as Istio reads them: without any, each destination counts once; with some, a missing one is
/// 0; a single destination takes everything whatever its weight.
pub(super) fn specifier(
    model: &Model,
    ns: &str,
    rule: &TcpRoute,
    port: u32,
) -> Option<ClusterSpecifier> {
    let weights_given = rule.route.iter().any(|d| d.weight.is_some());
    let mut clusters: Vec<(String, u32)> = rule
        .route
        .iter()
        .filter_map(|d| {
            let host = qualify(&d.destination.host, ns);
            let svc = model.services.get(&host)?;
            let p = svc.port_for(d.destination.port.map(|p| p.number), port);
            let subset = d.destination.subset.as_deref().unwrap_or("");
            let weight = match (weights_given, d.weight) {
                (false, _) => 1,
                (true, Some(w)) => u32::try_from(w).unwrap_or(0),
                (true, None) => 0,
            };
            Some((outbound_cluster_name(p, subset, &host), weight))
        })
        .filter(|(_, w)| *w > 0 || rule.route.len() == 1)
        .collect();
    match clusters.len() {
        0 => None,
        1 => clusters.pop().map(|(n, _)| ClusterSpecifier::Cluster(n)),
        _ => Some(ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: clusters
                .into_iter()
                .map(|(name, weight)| ClusterWeight {
                    name,
                    weight,
                    ..Default::default()
                })
                .collect(),
        })),
    }
}
