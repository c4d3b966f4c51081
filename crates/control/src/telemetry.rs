//! Which Telemetry resources apply to a proxy, and what they add up to, as Istio combines them
//! (<https://istio.io/latest/docs/reference/config/telemetry/>): the mesh's (the root namespace's
//! Telemetry without a selector), then the namespace's (its Telemetry without a selector), then the
//! workload's (a Telemetry of its namespace whose selector matches its labels), each more specific one
//! applied over the one before. Ties within one level go to the first by name.
//!
//! - **Tracing**: each field a more specific rule sets replaces the one before (provider, sampling,
//!   span reporting, request-id sampling); custom tags are merged by name.
//! - **Access logging**: per provider. A rule without providers applies to the providers in force from
//!   the levels before it, else to MeshConfig's `defaultProviders.accessLogging`, else to `envoy`; the
//!   more specific rule's `disabled` and `filter` replace those before for each of its providers.
//! - **Metrics**: overrides apply in order, mesh → namespace → workload (and in order within a
//!   resource), to the metrics and side each matches: `disabled` sets whether the metric is dropped,
//!   `REMOVE` drops a label and `UPSERT` adds or replaces one with an expression. Only rules for the
//!   `prometheus` provider count (none given: MeshConfig's `defaultProviders.metrics`, else
//!   `prometheus`), the one weft records.
//!
//! Rules whose `match.mode` is `CLIENT` apply to the proxy's outbound side, `SERVER` to its inbound
//! side. The translation into xDS is [`crate::translate::telemetry`]'s.

use crate::model::Model;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use weft_api::telemetry::{CustomTag, IstioMetric, TagOperation, Telemetry};
use weft_api::{MeshConfig, Resource};

/// The Telemetry resources that apply to one proxy, least specific first (`namespace/name` each).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Chain {
    /// The root namespace's Telemetry without a selector.
    pub mesh: Option<String>,
    /// The proxy namespace's Telemetry without a selector (none in the root namespace, whose one is
    /// the mesh's).
    pub namespace: Option<String>,
    /// A Telemetry of the proxy's namespace whose selector matches its labels.
    pub workload: Option<String>,
}

fn id(r: &Resource) -> String {
    format!("{}/{}", r.metadata.namespace, r.metadata.name)
}

impl Chain {
    /// The Telemetry resources of a proxy in `namespace` with `labels`.
    pub fn of(model: &Model, namespace: &str, labels: &BTreeMap<String, String>) -> Chain {
        let root = &model.mesh.root_namespace;
        let without_selector = |ns: &str| {
            model
                .telemetries
                .values()
                .find(|r| {
                    r.metadata.namespace == ns
                        && r.as_telemetry().is_some_and(|t| t.selector.is_none())
                })
                .map(|r| id(r))
        };
        let workload = model
            .telemetries
            .values()
            .find(|r| {
                r.metadata.namespace == namespace
                    && r.as_telemetry()
                        .and_then(|t| t.match_labels())
                        .is_some_and(|sel| weft_api::networking::labels_match(sel, labels))
            })
            .map(|r| id(r));
        Chain {
            mesh: without_selector(root),
            namespace: (namespace != root)
                .then(|| without_selector(namespace))
                .flatten(),
            workload,
        }
    }

    /// The workload-level part alone (what makes two proxies of one namespace differ).
    pub fn workload_of(
        model: &Model,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<String> {
        Chain::of(model, namespace, labels).workload
    }

    /// The chain of a proxy in `namespace` whose workload-level Telemetry is `workload`.
    pub fn with_workload(model: &Model, namespace: &str, workload: Option<&str>) -> Chain {
        let mut c = Chain::of(model, namespace, &BTreeMap::new());
        c.workload = workload.map(str::to_string);
        c
    }

    /// The resources, least specific first.
    pub fn resources<'a>(&self, model: &'a Model) -> Vec<&'a Telemetry> {
        [&self.mesh, &self.namespace, &self.workload]
            .into_iter()
            .flatten()
            .filter_map(|id| model.telemetries.get(id))
            .filter_map(|r| r.as_telemetry())
            .collect()
    }
}

/// Tracing as the rules of one side add up; `None` when no rule applies (MeshConfig's tracing holds).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tracing {
    /// The provider, when a rule names one (else MeshConfig's `defaultProviders.tracing`).
    pub provider: Option<String>,
    /// Percent sampled, when a rule sets it (else MeshConfig's `defaultConfig.tracing.sampling`).
    pub sampling: Option<f64>,
    /// Spans are not reported (context is still propagated).
    pub disable_span_reporting: bool,
    /// Custom tags by name.
    pub custom_tags: BTreeMap<String, CustomTag>,
    /// Whether sampling reads `x-request-id` (default true).
    pub use_request_id_for_trace_sampling: bool,
}

/// One access log provider's rule, as the levels add up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessLog {
    /// Logging is off for this provider.
    pub disabled: bool,
    /// Only lines for which this CEL expression is true.
    pub filter: Option<String>,
}

/// One metric's overrides, as they add up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricRule {
    /// Not recorded.
    pub drop: bool,
    /// Labels added or replaced, with their CEL expressions.
    pub dimensions: BTreeMap<String, String>,
    /// Labels removed.
    pub tags_to_remove: BTreeSet<String>,
}

/// What the Telemetry rules give one side of one proxy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// Tracing, when some rule applies.
    pub tracing: Option<Tracing>,
    /// Access logs by provider, when some rule applies.
    pub access_logs: Option<BTreeMap<String, AccessLog>>,
    /// Overrides by metric (stats plugin name, `requests_total`); empty: none.
    pub metrics: BTreeMap<&'static str, MetricRule>,
}

fn provider_names(p: &[weft_api::telemetry::ProviderRef]) -> Vec<String> {
    p.iter().map(|p| p.name.clone()).collect()
}

/// Adds up the rules of `chain` (least specific first) for the `client` (outbound) or server side.
pub fn apply(chain: &[&Telemetry], mesh: &MeshConfig, client: bool) -> Applied {
    let mut out = Applied::default();
    let mode_ok =
        |m: Option<&weft_api::telemetry::ModeSelector>| m.is_none_or(|m| m.mode.applies(client));
    for t in chain {
        for tr in t.tracing.iter().filter(|r| mode_ok(r.match_.as_ref())) {
            let cur = out.tracing.get_or_insert_with(|| Tracing {
                use_request_id_for_trace_sampling: true,
                ..Default::default()
            });
            if let Some(p) = tr.providers.first() {
                cur.provider = Some(p.name.clone());
            }
            if let Some(s) = tr.random_sampling_percentage {
                cur.sampling = Some(s);
            }
            if let Some(d) = tr.disable_span_reporting {
                cur.disable_span_reporting = d;
            }
            if let Some(u) = tr.use_request_id_for_trace_sampling {
                cur.use_request_id_for_trace_sampling = u;
            }
            for (k, v) in &tr.custom_tags {
                cur.custom_tags.insert(k.clone(), v.clone());
            }
        }
        for al in t
            .access_logging
            .iter()
            .filter(|r| mode_ok(r.match_.as_ref()))
        {
            let logs = out.access_logs.get_or_insert_with(BTreeMap::new);
            let mut names = provider_names(&al.providers);
            if names.is_empty() {
                names = logs.keys().cloned().collect();
            }
            if names.is_empty() {
                names = mesh.default_providers("accessLogging");
            }
            if names.is_empty() {
                names = vec!["envoy".into()];
            }
            for n in names {
                logs.insert(
                    n,
                    AccessLog {
                        disabled: al.disabled.unwrap_or(false),
                        filter: al.filter.as_ref().map(|f| f.expression.clone()),
                    },
                );
            }
        }
        for m in &t.metrics {
            let mut names = provider_names(&m.providers);
            if names.is_empty() {
                names = mesh.default_providers("metrics");
            }
            if !names.is_empty() && !names.iter().any(|n| n == "prometheus") {
                continue;
            }
            for o in &m.overrides {
                let sel = o.match_.clone().unwrap_or_default();
                if !sel.mode.applies(client) {
                    continue;
                }
                let which: Vec<IstioMetric> = match (sel.metric, &sel.custom_metric) {
                    (Some(IstioMetric::AllMetrics), _) | (None, None) => {
                        IstioMetric::STANDARD.iter().map(|(m, _)| *m).collect()
                    }
                    (Some(m), _) => vec![m],
                    // The analyzer refuses names weft does not record.
                    (None, Some(c)) => IstioMetric::by_name(c).into_iter().collect(),
                };
                for metric in which {
                    let Some(name) = metric.stat_name() else {
                        continue;
                    };
                    let rule = out.metrics.entry(name).or_default();
                    if let Some(d) = o.disabled {
                        rule.drop = d;
                    }
                    for (tag, t) in &o.tag_overrides {
                        match t.operation {
                            TagOperation::Remove => {
                                rule.dimensions.remove(tag);
                                rule.tags_to_remove.insert(tag.clone());
                            }
                            TagOperation::Upsert => {
                                rule.tags_to_remove.remove(tag);
                                if let Some(v) = &t.value {
                                    rule.dimensions.insert(tag.clone(), v.clone());
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    out.metrics.retain(|_, r| *r != MetricRule::default());
    out
}

/// Telemetry resources by `namespace/name`, for the model.
pub fn index(resources: &[Arc<Resource>]) -> BTreeMap<String, Arc<Resource>> {
    resources
        .iter()
        .filter(|r| r.as_telemetry().is_some())
        .map(|r| (id(r), r.clone()))
        .collect()
}

#[cfg(test)]
mod tests;
