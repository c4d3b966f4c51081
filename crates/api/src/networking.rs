//! `networking.istio.io` resources. Field names follow Istio's protos (camelCase in YAML); unknown fields
//! are refused. Fields weft parses but does not enforce yet are typed loosely and reported by the analyzer.

pub mod destination_rule;
pub mod gateway;
pub mod service_entry;
pub mod sidecar;
pub mod virtual_service;

pub use destination_rule::DestinationRule;
pub use gateway::Gateway;
pub use service_entry::{ServiceEntry, WorkloadEntry};
pub use sidecar::Sidecar;
pub use virtual_service::VirtualService;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A label selector as networking resources write it: `{labels: {k: v}}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadSelector {
    /// Labels that must all match.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// True when every selector label is present with the same value.
pub fn labels_match(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// `{value: <0..100>}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Percent {
    /// Percentage, 0 to 100.
    #[serde(default)]
    pub value: f64,
}
