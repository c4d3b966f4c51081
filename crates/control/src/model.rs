//! The merged, immutable view of config and registry that every push reads. A change builds a new
//! `Model`; nothing mutates one in place.

use crate::registry::{self, Service};
use std::collections::BTreeMap;
use std::sync::Arc;
use weft_api::host::qualify;
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
    /// DestinationRules by qualified host (first by namespace/name).
    pub destination_rules: BTreeMap<String, Arc<Resource>>,
    /// Sidecar resources by `namespace/name`.
    pub sidecars: BTreeMap<String, Arc<Resource>>,
    /// Mesh settings.
    pub mesh: MeshConfig,
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
        for r in resources {
            let ns = &r.metadata.namespace;
            if let Some(vs) = r.as_virtual_service() {
                if !vs.applies_to_sidecars() {
                    continue;
                }
                for h in &vs.hosts {
                    virtual_services
                        .entry(qualify(h, ns))
                        .or_insert_with(|| r.clone());
                }
            } else if r.as_sidecar().is_some() {
                sidecars.insert(format!("{ns}/{}", r.metadata.name), r.clone());
            } else if let Some(dr) = r.as_destination_rule() {
                destination_rules
                    .entry(qualify(&dr.host, ns))
                    .or_insert_with(|| r.clone());
            }
        }
        Model {
            generation,
            services,
            virtual_services,
            destination_rules,
            sidecars,
            mesh,
            resources: resources.to_vec(),
            diagnostics,
        }
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
