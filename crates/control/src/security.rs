//! Which security policies apply to a workload, as Istio selects them, and the translation of its
//! AuthorizationPolicies into Envoy's RBAC filters ([`rbac`]) and, for CUSTOM ones, its `ext_authz`
//! filter ([`ext_authz`]).
//!
//! - **PeerAuthentication** ([`peer_authentication`]): the mode of one workload port, with Istio's
//!   precedence (port level > workload selector > namespace > mesh, UNSET inherits, PERMISSIVE at the
//!   top); the rules are `weft_api::security::peer_authentication::effective_mode`'s, shared with the
//!   analyzer.
//! - **AuthorizationPolicy** and **RequestAuthentication** ([`authorization_policies`],
//!   [`request_authentications`]): the root namespace's policies, then the workload namespace's, each
//!   applying when it has no selector (or one without labels) or a selector whose labels the workload
//!   has; in the root namespace a selector selects in every namespace. A policy with a `targetRef`
//!   attaches to a gateway or waypoint in Istio, never to a sidecar, so it applies to no workload here.
//!   Istio orders the policies of a namespace by creation time; weft has none in directory mode and
//!   orders them by name (the order only names things: every matching policy applies).
//!
//! Building listeners from this (filter chains per mode, the RBAC filters in the connection manager or
//! before `tcp_proxy`) is `crate::translate`'s; evaluating the filters is weft-proxy's.

pub mod ext_authz;
pub mod rbac;

pub use rbac::{rbac_http_filters, rbac_network_filters};
pub use weft_api::security::MtlsMode;

use crate::model::Model;
use std::collections::BTreeMap;
use std::sync::Arc;
use weft_api::security::{peer_authentication::effective_mode, Selector, TargetRef};
use weft_api::{Kind, Resource};

/// The security resources of a model by namespace, each list sorted by name.
#[derive(Debug, Default, Clone)]
pub struct Index {
    peer_authentications: BTreeMap<String, Vec<Arc<Resource>>>,
    authorization_policies: BTreeMap<String, Vec<Arc<Resource>>>,
    request_authentications: BTreeMap<String, Vec<Arc<Resource>>>,
}

impl Index {
    /// Indexes the security resources among `resources`.
    pub fn new(resources: &[Arc<Resource>]) -> Index {
        let mut idx = Index::default();
        for r in resources {
            let map = match r.kind {
                Kind::PeerAuthentication => &mut idx.peer_authentications,
                Kind::AuthorizationPolicy => &mut idx.authorization_policies,
                Kind::RequestAuthentication => &mut idx.request_authentications,
                _ => continue,
            };
            map.entry(r.metadata.namespace.clone())
                .or_default()
                .push(r.clone());
        }
        for map in [
            &mut idx.peer_authentications,
            &mut idx.authorization_policies,
            &mut idx.request_authentications,
        ] {
            for list in map.values_mut() {
                list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            }
        }
        idx
    }

    /// Whether the model has no security resource at all (so every workload is PERMISSIVE and has no
    /// RBAC filter).
    pub fn is_empty(&self) -> bool {
        self.peer_authentications.is_empty()
            && self.authorization_policies.is_empty()
            && self.request_authentications.is_empty()
    }
}

/// The mTLS mode of workload port `port` (the port the workload listens on, not the service port) of a
/// workload in `namespace` with `labels`.
pub fn peer_authentication(
    model: &Model,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    port: u32,
) -> MtlsMode {
    let root = model.mesh.root_namespace.as_str();
    let by_ns = &model.security.peer_authentications;
    let candidates = [root, namespace]
        .into_iter()
        .filter_map(|ns| by_ns.get(ns))
        .flatten()
        .map(|r| r.as_ref());
    effective_mode(candidates, root, namespace, labels, port).mode
}

/// The AuthorizationPolicies that apply to a workload in `namespace` with `labels`, in Istio's order:
/// the root namespace's, then the namespace's, each by name.
pub fn authorization_policies<'a>(
    model: &'a Model,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<&'a Arc<Resource>> {
    select(
        model,
        &model.security.authorization_policies,
        namespace,
        labels,
        |r| {
            r.as_authorization_policy().map(|p| {
                (
                    p.selector.as_ref(),
                    p.target_ref.as_ref(),
                    p.target_refs.as_slice(),
                )
            })
        },
    )
}

/// The RequestAuthentications that apply to a workload in `namespace` with `labels`, in Istio's order:
/// the root namespace's, then the namespace's, each by name.
pub fn request_authentications<'a>(
    model: &'a Model,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<&'a Arc<Resource>> {
    select(
        model,
        &model.security.request_authentications,
        namespace,
        labels,
        |r| {
            r.as_request_authentication().map(|p| {
                (
                    p.selector.as_ref(),
                    p.target_ref.as_ref(),
                    p.target_refs.as_slice(),
                )
            })
        },
    )
}

type Scope<'a> = (Option<&'a Selector>, Option<&'a TargetRef>, &'a [TargetRef]);

fn select<'a>(
    model: &Model,
    by_ns: &'a BTreeMap<String, Vec<Arc<Resource>>>,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    scope: impl Fn(&'a Resource) -> Option<Scope<'a>>,
) -> Vec<&'a Arc<Resource>> {
    let root = model.mesh.root_namespace.as_str();
    let namespaces: &[&str] = if root == namespace {
        &[namespace]
    } else {
        &[root, namespace]
    };
    let mut out = Vec::new();
    for ns in namespaces {
        for r in by_ns.get(*ns).into_iter().flatten() {
            let Some((selector, target_ref, target_refs)) = scope(r) else {
                continue;
            };
            if target_ref.is_some() || !target_refs.is_empty() {
                continue;
            }
            let selected = selector
                .is_none_or(|s| weft_api::networking::labels_match(&s.match_labels, labels));
            if selected {
                out.push(r);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
