//! The merged, immutable view of config and registry that every push reads. A change builds a new
//! `Model`; nothing mutates one in place.

use crate::registry::{self, Service};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use weft_api::host::qualify;
use weft_api::networking::gateway::qualify_gateway;
use weft_api::{MeshConfig, Resource};

/// One generation of config.
#[derive(Debug, Default)]
pub struct Model {
    /// Increases with every model built; used as the xDS version.
    pub generation: u64,
    /// Services by FQDN.
    pub services: BTreeMap<String, Arc<Service>>,
    /// VirtualServices that apply to sidecars, by qualified host; the first (by namespace/name) wins, as
    /// sidecars do not merge VirtualServices for one host.
    pub virtual_services: BTreeMap<String, Arc<Resource>>,
    /// Gateways by `namespace/name`.
    pub gateways: BTreeMap<String, Arc<Resource>>,
    /// VirtualServices bound to each gateway (by the gateway's `namespace/name`) through their
    /// `gateways`, in namespace/name order.
    pub gateway_virtual_services: BTreeMap<String, Vec<Arc<Resource>>>,
    /// DestinationRules by qualified host (first by namespace/name).
    pub destination_rules: BTreeMap<String, Arc<Resource>>,
    /// Sidecar resources by `namespace/name`.
    pub sidecars: BTreeMap<String, Arc<Resource>>,
    /// Telemetry resources by `namespace/name` ([`crate::telemetry`] picks those of a proxy).
    pub telemetries: BTreeMap<String, Arc<Resource>>,
    /// PeerAuthentications, AuthorizationPolicies and RequestAuthentications by namespace
    /// ([`crate::security`] picks those of a workload).
    pub security: crate::security::Index,
    /// The protocols of the service ports each workload serves, by instance IP, then port number: what
    /// decides whether a proxy's inbound listener for that port carries HTTP or opaque TCP.
    pub instance_ports: HashMap<String, BTreeMap<u32, PortProtocols>>,
    /// Mesh settings.
    pub mesh: MeshConfig,
    /// The JWKS weftd fetched for RequestAuthentications' `jwksUri` ([`crate::jwks`]), inlined by
    /// [`crate::authn`]; set by whoever builds the model (empty from [`Model::build_with`]).
    pub jwks: Arc<crate::jwks::Keys>,
    /// The accepted resources this model was built from.
    pub resources: Vec<Arc<Resource>>,
    /// Problems found when the config was last read (errors and warnings).
    pub diagnostics: Vec<weft_api::Diagnostic>,
}

impl Model {
    /// Builds a model from accepted resources (sorted by kind/namespace/name by the caller's map).
    pub fn build(generation: u64, resources: &[Arc<Resource>], mesh: MeshConfig) -> Model {
        Self::build_with(generation, resources, mesh, Vec::new())
    }

    /// Like [`Model::build`], keeping the diagnostics of the read for `/debug/configz`.
    pub fn build_with(
        generation: u64,
        resources: &[Arc<Resource>],
        mesh: MeshConfig,
        diagnostics: Vec<weft_api::Diagnostic>,
    ) -> Model {
        let services = registry::build(resources);
        let mut virtual_services = BTreeMap::new();
        let mut destination_rules = BTreeMap::new();
        let mut sidecars = BTreeMap::new();
        let mut gateways = BTreeMap::new();
        let mut gateway_virtual_services: BTreeMap<String, Vec<Arc<Resource>>> = BTreeMap::new();
        for r in resources {
            let ns = &r.metadata.namespace;
            if let Some(vs) = r.as_virtual_service() {
                // Istio: `gateways` binds the rules to those gateways; without it, or with `mesh`
                // among them, they apply to sidecars.
                let mut bound = std::collections::BTreeSet::new();
                for g in &vs.gateways {
                    let q = qualify_gateway(g, ns);
                    if q != "mesh" && bound.insert(q.clone()) {
                        gateway_virtual_services
                            .entry(q)
                            .or_default()
                            .push(r.clone());
                    }
                }
                if !vs.applies_to_sidecars() {
                    continue;
                }
                for h in &vs.hosts {
                    virtual_services
                        .entry(qualify(h, ns))
                        .or_insert_with(|| r.clone());
                }
            } else if r.as_gateway().is_some() {
                gateways.insert(format!("{ns}/{}", r.metadata.name), r.clone());
            } else if r.as_sidecar().is_some() {
                sidecars.insert(format!("{ns}/{}", r.metadata.name), r.clone());
            } else if let Some(dr) = r.as_destination_rule() {
                destination_rules
                    .entry(qualify(&dr.host, ns))
                    .or_insert_with(|| r.clone());
            }
        }
        let instance_ports = instance_ports(&services);
        Model {
            telemetries: crate::telemetry::index(resources),
            security: crate::security::Index::new(resources),
            generation,
            instance_ports,
            services,
            virtual_services,
            gateways,
            gateway_virtual_services,
            destination_rules,
            sidecars,
            mesh,
            jwks: Arc::default(),
            resources: resources.to_vec(),
            diagnostics,
        }
    }

    /// Whether the inbound listener of the workload at `ip` for service port `port` carries opaque TCP:
    /// some service with this workload as an instance declares `port` as TCP and none declares it as
    /// HTTP. Everything else (HTTP, a port no service declares) keeps the HTTP listener.
    pub fn inbound_is_tcp(&self, ip: &str, port: u32) -> bool {
        self.instance_ports
            .get(ip)
            .and_then(|ports| ports.get(&port))
            .is_some_and(|p| p.tcp && !p.http)
    }

    /// Subset labels for `host`/`subset`, if a DestinationRule defines them.
    pub fn subset_labels(&self, host: &str, subset: &str) -> Option<&BTreeMap<String, String>> {
        let dr = self.destination_rules.get(host)?.as_destination_rule()?;
        dr.subsets
            .iter()
            .find(|s| s.name == subset)
            .map(|s| &s.labels)
    }

    /// The Sidecar that scopes a workload, as Istio picks it: one in the workload's namespace whose
    /// selector matches its labels, else the namespace's one without a selector, else the root
    /// namespace's one without a selector. Ties go to the first by name.
    pub fn sidecar_for(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<&Arc<Resource>> {
        fn in_ns<'a, 'b>(
            m: &'a Model,
            ns: &'b str,
        ) -> impl Iterator<Item = &'a Arc<Resource>> + use<'a, 'b> {
            m.sidecars
                .values()
                .filter(move |r| r.metadata.namespace == ns)
        }
        let selector = |r: &Arc<Resource>| {
            r.as_sidecar()
                .and_then(|s| s.workload_selector.as_ref())
                .map(|w| w.labels.clone())
        };
        in_ns(self, namespace)
            .find(|r| {
                selector(r).is_some_and(|sel| weft_api::networking::labels_match(&sel, labels))
            })
            .or_else(|| in_ns(self, namespace).find(|r| selector(r).is_none()))
            .or_else(|| in_ns(self, &self.mesh.root_namespace).find(|r| selector(r).is_none()))
    }
}

/// Which protocols the services of one workload declare for one port number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortProtocols {
    /// Some service declares it HTTP (HTTP, HTTP2, GRPC, GRPC-WEB).
    pub http: bool,
    /// Some service declares it TCP.
    pub tcp: bool,
}

/// Indexes the services' ports by instance IP, once per model, so each proxy's inbound listeners cost a
/// lookup rather than a walk over every service.
fn instance_ports(
    services: &BTreeMap<String, Arc<Service>>,
) -> HashMap<String, BTreeMap<u32, PortProtocols>> {
    let mut out: HashMap<String, BTreeMap<u32, PortProtocols>> = HashMap::new();
    for svc in services.values() {
        for instance in &svc.instances {
            let ports = out.entry(instance.ip.clone()).or_default();
            for p in &svc.ports {
                let e = ports.entry(p.number).or_default();
                e.http |= p.is_http();
                e.tcp |= p.is_tcp();
            }
        }
    }
    out
}
