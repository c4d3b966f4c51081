//! A parsed Istio resource: kind, metadata, typed spec, and where it came from.

use crate::networking::{
    DestinationRule, Gateway, ServiceEntry, Sidecar, VirtualService, WorkloadEntry,
};
use crate::security::{
    AuthorizationPolicy, PeerAuthentication, RequestAuthentication, SECURITY_VERSIONS,
};
use crate::telemetry::{Telemetry, TELEMETRY_VERSIONS};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

type Loose = serde_yaml_ng::Value;

/// The kinds weft reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    /// networking.istio.io VirtualService.
    VirtualService,
    /// networking.istio.io DestinationRule.
    DestinationRule,
    /// networking.istio.io ServiceEntry.
    ServiceEntry,
    /// networking.istio.io WorkloadEntry.
    WorkloadEntry,
    /// networking.istio.io Sidecar.
    Sidecar,
    /// networking.istio.io Gateway.
    Gateway,
    /// telemetry.istio.io Telemetry.
    Telemetry,
    /// security.istio.io PeerAuthentication.
    PeerAuthentication,
    /// security.istio.io AuthorizationPolicy.
    AuthorizationPolicy,
    /// security.istio.io RequestAuthentication.
    RequestAuthentication,
}

impl Kind {
    /// The kind as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::Sidecar => "Sidecar",
            Kind::Gateway => "Gateway",
            Kind::Telemetry => "Telemetry",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::RequestAuthentication => "RequestAuthentication",
        }
    }

    /// Reads a `kind:` value.
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "VirtualService" => Kind::VirtualService,
            "DestinationRule" => Kind::DestinationRule,
            "ServiceEntry" => Kind::ServiceEntry,
            "WorkloadEntry" => Kind::WorkloadEntry,
            "Sidecar" => Kind::Sidecar,
            "Gateway" => Kind::Gateway,
            "Telemetry" => Kind::Telemetry,
            "PeerAuthentication" => Kind::PeerAuthentication,
            "AuthorizationPolicy" => Kind::AuthorizationPolicy,
            "RequestAuthentication" => Kind::RequestAuthentication,
            _ => return None,
        })
    }

    /// The API versions that serve this kind.
    pub fn versions(self) -> &'static [&'static str] {
        match self {
            Kind::Telemetry => &TELEMETRY_VERSIONS,
            Kind::PeerAuthentication | Kind::AuthorizationPolicy | Kind::RequestAuthentication => {
                &SECURITY_VERSIONS
            }
            _ => &NETWORKING_VERSIONS,
        }
    }

    /// Lower-case short form for file names (`virtualservice`).
    pub fn file_stem(self) -> String {
        self.as_str().to_ascii_lowercase()
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// API versions accepted for networking kinds.
pub const NETWORKING_VERSIONS: [&str; 3] = [
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];

/// Istio kinds weft knows but does not serve yet, with the group they belong to.
pub const LATER_KINDS: [&str; 5] = [
    "WorkloadGroup",
    "EnvoyFilter",
    "ProxyConfig",
    "WasmPlugin",
    "TrafficExtension",
];

/// Kubernetes object metadata; the fields `kubectl get -o yaml` writes are accepted.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Name (required).
    #[serde(default)]
    pub name: String,
    /// Namespace (default `default`).
    #[serde(default)]
    pub namespace: String,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Ignored.
    pub generate_name: Option<Loose>,
    /// Ignored.
    pub uid: Option<Loose>,
    /// Ignored.
    pub resource_version: Option<Loose>,
    /// Ignored.
    pub generation: Option<Loose>,
    /// Ignored.
    pub creation_timestamp: Option<Loose>,
    /// Ignored.
    pub managed_fields: Option<Loose>,
    /// Ignored.
    pub owner_references: Option<Loose>,
    /// Ignored.
    pub finalizers: Option<Loose>,
}

/// A typed spec.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Spec {
    /// VirtualService.
    VirtualService(VirtualService),
    /// DestinationRule (boxed: its traffic policy makes it the largest spec).
    DestinationRule(Box<DestinationRule>),
    /// ServiceEntry.
    ServiceEntry(ServiceEntry),
    /// WorkloadEntry.
    WorkloadEntry(WorkloadEntry),
    /// Sidecar.
    Sidecar(Sidecar),
    /// Gateway.
    Gateway(Gateway),
    /// Telemetry (boxed: three lists of rules).
    Telemetry(Box<Telemetry>),
    /// PeerAuthentication.
    PeerAuthentication(PeerAuthentication),
    /// AuthorizationPolicy (boxed: rules).
    AuthorizationPolicy(Box<AuthorizationPolicy>),
    /// RequestAuthentication (boxed: JWT rules).
    RequestAuthentication(Box<RequestAuthentication>),
}

/// What identifies a resource: kind, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ResourceKey {
    /// Kind.
    pub kind: Kind,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// One resource read from a file.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    /// As written (`networking.istio.io/v1beta1`).
    pub api_version: String,
    /// Kind.
    pub kind: Kind,
    /// Metadata, namespace defaulted.
    pub metadata: ObjectMeta,
    /// Typed spec.
    pub spec: Spec,
    /// File it came from.
    pub file: String,
    /// Line of the document's first line.
    pub line: usize,
    /// The document's text, used to locate fields for messages.
    #[serde(skip)]
    pub text: String,
}

impl Resource {
    /// Kind, namespace, name.
    pub fn key(&self) -> ResourceKey {
        ResourceKey {
            kind: self.kind,
            namespace: self.metadata.namespace.clone(),
            name: self.metadata.name.clone(),
        }
    }

    /// The line of the first line in this document containing `needle`, or the document's first line.
    pub fn line_of(&self, needle: &str) -> usize {
        if needle.is_empty() {
            return self.line;
        }
        self.text
            .lines()
            .position(|l| l.contains(needle))
            .map(|i| self.line + i)
            .unwrap_or(self.line)
    }

    /// The VirtualService spec, if this is one.
    pub fn as_virtual_service(&self) -> Option<&VirtualService> {
        match &self.spec {
            Spec::VirtualService(v) => Some(v),
            _ => None,
        }
    }

    /// The DestinationRule spec, if this is one.
    pub fn as_destination_rule(&self) -> Option<&DestinationRule> {
        match &self.spec {
            Spec::DestinationRule(v) => Some(v.as_ref()),
            _ => None,
        }
    }

    /// The ServiceEntry spec, if this is one.
    pub fn as_service_entry(&self) -> Option<&ServiceEntry> {
        match &self.spec {
            Spec::ServiceEntry(v) => Some(v),
            _ => None,
        }
    }

    /// The WorkloadEntry spec, if this is one.
    pub fn as_workload_entry(&self) -> Option<&WorkloadEntry> {
        match &self.spec {
            Spec::WorkloadEntry(v) => Some(v),
            _ => None,
        }
    }

    /// The Telemetry spec, if this is one.
    pub fn as_telemetry(&self) -> Option<&Telemetry> {
        match &self.spec {
            Spec::Telemetry(v) => Some(v.as_ref()),
            _ => None,
        }
    }

    /// The Gateway spec, if this is one.
    pub fn as_gateway(&self) -> Option<&Gateway> {
        match &self.spec {
            Spec::Gateway(v) => Some(v),
            _ => None,
        }
    }

    /// The Sidecar spec, if this is one.
    pub fn as_sidecar(&self) -> Option<&Sidecar> {
        match &self.spec {
            Spec::Sidecar(v) => Some(v),
            _ => None,
        }
    }

    /// The PeerAuthentication spec, if this is one.
    pub fn as_peer_authentication(&self) -> Option<&PeerAuthentication> {
        match &self.spec {
            Spec::PeerAuthentication(v) => Some(v),
            _ => None,
        }
    }

    /// The AuthorizationPolicy spec, if this is one.
    pub fn as_authorization_policy(&self) -> Option<&AuthorizationPolicy> {
        match &self.spec {
            Spec::AuthorizationPolicy(v) => Some(v.as_ref()),
            _ => None,
        }
    }

    /// The RequestAuthentication spec, if this is one.
    pub fn as_request_authentication(&self) -> Option<&RequestAuthentication> {
        match &self.spec {
            Spec::RequestAuthentication(v) => Some(v.as_ref()),
            _ => None,
        }
    }
}
