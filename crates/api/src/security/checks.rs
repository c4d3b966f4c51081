//! The security checks that need the rest of the config: a policy whose selector selects no workload,
//! and a DestinationRule whose TLS mode sends plaintext (DISABLE) or no client certificate (SIMPLE) to
//! workloads whose PeerAuthentication is STRICT. Both are warnings, as in Istio's analyzer: the workloads
//! may come later, and the resource is valid on its own.
//!
//! Workloads, in directory mode, are the WorkloadEntries and the inline endpoints of ServiceEntries,
//! each in its resource's namespace with its labels.

use super::peer_authentication::{effective_mode, MtlsMode};
use super::{selector_labels, Problem, Problems};
use crate::host::qualify;
use crate::mesh::MeshConfig;
use crate::networking::destination_rule::ClientTlsSettings;
use crate::networking::{labels_match, WorkloadEntry};
use crate::resource::{Resource, Spec};
use std::collections::BTreeMap;

/// One workload: its namespace, labels and named ports.
#[derive(Debug, Clone)]
struct Workload {
    namespace: String,
    labels: BTreeMap<String, String>,
    ports: BTreeMap<String, u32>,
}

/// One service port and where its workloads listen.
#[derive(Debug, Clone)]
struct Port {
    number: u32,
    name: String,
    target_port: Option<u32>,
}

/// A service: its ports and the indexes of its workloads.
#[derive(Debug, Clone, Default)]
struct Service {
    ports: Vec<Port>,
    workloads: Vec<usize>,
}

/// What the security checks need of a config, indexed once.
#[derive(Debug, Default)]
pub struct Index {
    root_namespace: String,
    workloads: Vec<Workload>,
    services: BTreeMap<String, Service>,
    peer_authentications: Vec<Resource>,
}

impl Index {
    /// Indexes a set of resources. The root namespace is MeshConfig's default (`istio-system`): the
    /// analyzer reads resources, not the mesh config.
    pub fn new(resources: &[&Resource]) -> Index {
        let mut idx = Index {
            root_namespace: MeshConfig::default().root_namespace,
            ..Index::default()
        };
        let workload = |ns: &str, we: &WorkloadEntry| Workload {
            namespace: ns.to_string(),
            labels: we.labels.clone(),
            ports: we.ports.clone(),
        };
        let mut selected: Vec<(String, String, BTreeMap<String, String>)> = Vec::new();
        for r in resources {
            let ns = r.metadata.namespace.as_str();
            match &r.spec {
                Spec::WorkloadEntry(we) => idx.workloads.push(workload(ns, we)),
                Spec::ServiceEntry(se) => {
                    let mut svc = Service {
                        ports: se
                            .ports
                            .iter()
                            .map(|p| Port {
                                number: p.number,
                                name: p.name.clone(),
                                target_port: p.target_port,
                            })
                            .collect(),
                        workloads: Vec::new(),
                    };
                    for ep in &se.endpoints {
                        svc.workloads.push(idx.workloads.len());
                        idx.workloads.push(workload(ns, ep));
                    }
                    for h in &se.hosts {
                        let host = qualify(h, ns);
                        if let Some(sel) = &se.workload_selector {
                            selected.push((host.clone(), ns.to_string(), sel.labels.clone()));
                        }
                        idx.services.entry(host).or_insert_with(|| svc.clone());
                    }
                }
                Spec::PeerAuthentication(_) => idx.peer_authentications.push((*r).clone()),
                _ => {}
            }
        }
        // WorkloadEntries selected by a ServiceEntry's workloadSelector (same namespace).
        for (host, ns, sel) in selected {
            let members: Vec<usize> = idx
                .workloads
                .iter()
                .enumerate()
                .filter(|(_, w)| w.namespace == ns && labels_match(&sel, &w.labels))
                .map(|(i, _)| i)
                .collect();
            if let Some(svc) = idx.services.get_mut(&host) {
                svc.workloads.extend(members);
            }
        }
        idx
    }

    fn selects_some(&self, ns: &str, sel: &BTreeMap<String, String>, any_namespace: bool) -> bool {
        self.workloads
            .iter()
            .any(|w| (any_namespace || w.namespace == ns) && labels_match(sel, &w.labels))
    }
}

/// Checks one resource against the others; the problems are warnings.
pub fn check(r: &Resource, idx: &Index) -> Vec<Problem> {
    let mut p = Problems::default();
    let ns = r.metadata.namespace.as_str();
    let root = ns == idx.root_namespace;
    let selector = match &r.spec {
        Spec::PeerAuthentication(pa) => {
            if root && pa.match_labels().is_some() {
                p.warn(
                    "spec.selector",
                    "selector",
                    format!("a PeerAuthentication with a selector in the root namespace ({ns}) is ignored, as in Istio: put it in the workloads' namespace"),
                );
                None
            } else {
                pa.match_labels()
            }
        }
        Spec::AuthorizationPolicy(ap) => selector_labels(ap.selector.as_ref()),
        Spec::RequestAuthentication(ra) => selector_labels(ra.selector.as_ref()),
        Spec::DestinationRule(dr) => {
            check_destination_rule(&mut p, r, dr, idx);
            None
        }
        _ => None,
    };
    if let Some(sel) = selector {
        if !idx.selects_some(ns, sel, root) {
            let labels: Vec<String> = sel.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let scope = if root {
                "in any namespace".to_string()
            } else {
                format!("in namespace {ns}")
            };
            p.warn(
                "spec.selector.matchLabels",
                "matchLabels",
                format!(
                    "selects no workload: no WorkloadEntry or ServiceEntry endpoint {scope} has the labels {}",
                    labels.join(",")
                ),
            );
        }
    }
    p.0
}

/// One TLS setting of a DestinationRule: its field, the service port it is for (all: `None`) and the
/// labels of the subset it is for (all: `None`).
type TlsSetting<'a> = (
    String,
    &'a ClientTlsSettings,
    Option<u32>,
    Option<&'a BTreeMap<String, String>>,
);

/// Warns where a DestinationRule's TLS mode (top level, per port, per subset) cannot reach workloads
/// whose port is STRICT.
fn check_destination_rule(
    p: &mut Problems,
    r: &Resource,
    dr: &crate::networking::DestinationRule,
    idx: &Index,
) {
    let host = qualify(&dr.host, &r.metadata.namespace);
    let Some(svc) = idx.services.get(&host) else {
        return;
    };
    let tp = dr.traffic_policy.as_ref();
    // Each TLS setting with its field, the service ports it covers and the subset labels it is for.
    let mut settings: Vec<TlsSetting> = Vec::new();
    if let Some(tls) = tp.and_then(|t| t.tls.as_ref()) {
        settings.push(("spec.trafficPolicy.tls.mode".into(), tls, None, None));
    }
    for (i, pl) in tp
        .map(|t| t.port_level_settings.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if let (Some(tls), Some(port)) = (&pl.tls, &pl.port) {
            settings.push((
                format!("spec.trafficPolicy.portLevelSettings[{i}].tls.mode"),
                tls,
                Some(port.number),
                None,
            ));
        }
    }
    for (i, s) in dr.subsets.iter().enumerate() {
        if let Some(tls) = s.traffic_policy.as_ref().and_then(|t| t.tls.as_ref()) {
            settings.push((
                format!("spec.subsets[{i}].trafficPolicy.tls.mode"),
                tls,
                None,
                Some(&s.labels),
            ));
        }
    }
    for (field, tls, only_port, subset) in settings {
        let mode = tls.mode.as_deref().unwrap_or_default();
        if mode != "DISABLE" && mode != "SIMPLE" {
            continue;
        }
        let conflict = svc
            .ports
            .iter()
            .filter(|sp| only_port.is_none_or(|n| n == sp.number))
            .find_map(|sp| {
                svc.workloads.iter().find_map(|&wi| {
                    let w = &idx.workloads[wi];
                    if subset.is_some_and(|s| !labels_match(s, &w.labels)) {
                        return None;
                    }
                    let port = w
                        .ports
                        .get(&sp.name)
                        .copied()
                        .or(sp.target_port)
                        .unwrap_or(sp.number);
                    let e = effective_mode(
                        &idx.peer_authentications,
                        &idx.root_namespace,
                        &w.namespace,
                        &w.labels,
                        port,
                    );
                    (e.mode == MtlsMode::Strict).then_some((sp.number, e.by))
                })
            });
        if let Some((port, by)) = conflict {
            let what = if mode == "DISABLE" {
                "sends plaintext"
            } else {
                "presents no client certificate"
            };
            let by = by
                .map(|b| {
                    format!(
                        "PeerAuthentication {}/{}",
                        b.metadata.namespace, b.metadata.name
                    )
                })
                .unwrap_or_default();
            p.warn(
                field,
                &format!("mode: {mode}"),
                format!("tls mode {mode} {what} to {host} port {port}, whose workloads require mTLS ({by} is STRICT): its requests will be refused (use ISTIO_MUTUAL, or leave tls out for automatic mTLS)"),
            );
        }
    }
}
