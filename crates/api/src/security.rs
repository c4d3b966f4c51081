//! `security.istio.io` PeerAuthentication, AuthorizationPolicy and RequestAuthentication
//! ([Istio's reference](https://istio.io/latest/docs/reference/config/security/)): their YAML shape (unknown
//! fields refused), the checks of one resource, the checks against the rest of the config (a policy that
//! selects no workload, a DestinationRule that sends plaintext to workloads under STRICT mTLS), and the
//! precedence rules that decide which PeerAuthentication mode a workload's port gets.
//!
//! Which AuthorizationPolicies and RequestAuthentications apply to a proxy, and their translation into
//! Envoy's RBAC filters, are weftd's (`crates/control/src/security`); enforcing them is weft-proxy's.

pub mod authorization_policy;
pub mod checks;
pub mod peer_authentication;
pub mod request_authentication;

/// `selector` of the security kinds (Istio's `type.v1beta1.WorkloadSelector`: `{matchLabels: {…}}`),
/// the same type the Telemetry API uses.
pub use crate::telemetry::Selector;
pub use authorization_policy::{AuthorizationPolicy, ConditionKey};
pub use peer_authentication::{MtlsMode, PeerAuthentication};
pub use request_authentication::RequestAuthentication;

use crate::resource::{Resource, Spec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// API versions accepted for the security kinds (one schema for both, as in Istio).
pub const SECURITY_VERSIONS: [&str; 2] = ["security.istio.io/v1", "security.istio.io/v1beta1"];

/// The annotation that makes an AuthorizationPolicy a dry run: evaluated and logged, never enforced.
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// `targetRef` / `targetRefs[]` (Istio's `type.v1beta1.PolicyTargetReference`). Istio attaches such a
/// policy to a gateway or a waypoint only, never to a sidecar, so in weft it applies to nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetRef {
    /// API group of the target (`gateway.networking.k8s.io`, `""` for core).
    #[serde(default)]
    pub group: String,
    /// Kind of the target (`Gateway`, `GatewayClass`, `Service`, `ServiceEntry`).
    #[serde(default)]
    pub kind: String,
    /// Name of the target.
    #[serde(default)]
    pub name: String,
    /// Namespace (cross-namespace references are refused by Istio).
    #[serde(default)]
    pub namespace: String,
}

/// One problem in a security resource: the field path as users write it, a text to find its line, and
/// the message. The analyzer turns these into diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `spec.rules[0].when[1].key`.
    pub field: String,
    /// A text on the field's line.
    pub needle: String,
    /// What is wrong.
    pub message: String,
    /// A warning accepts the resource.
    pub warning: bool,
}

/// Collects problems for one resource.
#[derive(Debug, Default)]
pub(crate) struct Problems(pub(crate) Vec<Problem>);

impl Problems {
    pub(crate) fn error(
        &mut self,
        field: impl Into<String>,
        needle: &str,
        message: impl Into<String>,
    ) {
        self.0.push(Problem {
            field: field.into(),
            needle: needle.to_string(),
            message: message.into(),
            warning: false,
        });
    }

    pub(crate) fn warn(
        &mut self,
        field: impl Into<String>,
        needle: &str,
        message: impl Into<String>,
    ) {
        self.0.push(Problem {
            field: field.into(),
            needle: needle.to_string(),
            message: message.into(),
            warning: true,
        });
    }
}

/// Checks one security resource on its own; other kinds have no problems here.
pub fn validate(r: &Resource) -> Vec<Problem> {
    let mut p = Problems::default();
    match &r.spec {
        Spec::PeerAuthentication(pa) => pa.validate(&mut p),
        Spec::AuthorizationPolicy(ap) => {
            ap.validate(&mut p);
            if let Some(v) = r.metadata.annotations.get(DRY_RUN_ANNOTATION) {
                if parse_bool(v).is_none() {
                    p.error(
                        format!("metadata.annotations.{DRY_RUN_ANNOTATION}"),
                        DRY_RUN_ANNOTATION,
                        format!("{v:?} is not a boolean (\"true\" or \"false\")"),
                    );
                }
            }
        }
        Spec::RequestAuthentication(ra) => ra.validate(&mut p),
        _ => {}
    }
    p.0
}

/// Whether an AuthorizationPolicy resource is a dry run (`istio.io/dry-run: "true"`).
pub fn is_dry_run(r: &Resource) -> bool {
    r.metadata
        .annotations
        .get(DRY_RUN_ANNOTATION)
        .and_then(|v| parse_bool(v))
        .unwrap_or(false)
}

/// Go's `strconv.ParseBool`, which Istio reads the dry-run annotation with.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The selector and targets every security kind has, checked alike: at most one of them, no empty label
/// key, no wildcard, and a warning for a target (weft has no gateway or waypoint to attach it to).
pub(crate) fn check_scope(
    p: &mut Problems,
    selector: Option<&Selector>,
    target_ref: Option<&TargetRef>,
    target_refs: &[TargetRef],
) {
    let set = usize::from(selector.is_some())
        + usize::from(target_ref.is_some())
        + usize::from(!target_refs.is_empty());
    if set > 1 {
        p.error(
            "spec.selector",
            "selector",
            "only one of selector, targetRef and targetRefs can be set",
        );
    }
    if let Some(s) = selector {
        if s.match_labels.is_empty() {
            p.warn(
                "spec.selector.matchLabels",
                "selector",
                "a selector without labels selects every workload of the namespace (leave selector out to say so)",
            );
        }
        for (k, v) in &s.match_labels {
            let f = format!("spec.selector.matchLabels.{k}");
            if k.is_empty() {
                p.error(f, "matchLabels", "a label key must not be empty");
            } else if k.contains('*') || v.contains('*') {
                p.error(f, k, "wildcards are not supported in a selector");
            }
        }
    }
    let field = if target_ref.is_some() {
        Some("targetRef")
    } else if !target_refs.is_empty() {
        Some("targetRefs")
    } else {
        None
    };
    if let Some(f) = field {
        p.warn(
            format!("spec.{f}"),
            f,
            "a targetRef attaches a policy to a gateway or waypoint, which weft does not have: this policy applies to no sidecar (select workloads with selector.matchLabels)",
        );
    }
    for (i, t) in target_ref.into_iter().chain(target_refs).enumerate() {
        let f = if target_ref.is_some() {
            "spec.targetRef".to_string()
        } else {
            format!("spec.targetRefs[{i}]")
        };
        if t.name.is_empty() {
            p.error(format!("{f}.name"), "name", "a target name is required");
        }
        if t.kind.is_empty() {
            p.error(format!("{f}.kind"), "kind", "a target kind is required");
        }
        if !t.namespace.is_empty() {
            p.error(
                format!("{f}.namespace"),
                &t.namespace,
                "cross-namespace targets are not supported (as in Istio)",
            );
        }
    }
}

/// The selector's labels when it has some: `None` selects the whole namespace.
pub(crate) fn selector_labels(selector: Option<&Selector>) -> Option<&BTreeMap<String, String>> {
    selector.map(|s| &s.match_labels).filter(|l| !l.is_empty())
}

#[cfg(test)]
mod tests;
