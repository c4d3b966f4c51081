//! Mutual TLS in the xDS weftd sends, in Istio's shape so that an Envoy accepts it as it accepts
//! istiod's:
//!
//! - **Outbound clusters** ([`client_tls`], [`ClientTls::apply`]). With no DestinationRule `tls`, Istio's
//!   auto mTLS (`enableAutoMtls`, on by default): `transport_socket_matches` that speak ISTIO_MUTUAL to
//!   endpoints labelled `tlsMode: istio` ([`endpoint_metadata`]) and plaintext to the rest. A
//!   DestinationRule's `tls` (per subset, per port, or for the host) overrides it: `ISTIO_MUTUAL`,
//!   `SIMPLE` and `MUTUAL` (certificates from files) become a `transport_socket`, `DISABLE` plaintext.
//! - **Endpoints** ([`endpoint_metadata`]). A workload has a sidecar when its labels carry
//!   `security.istio.io/tlsMode: istio` ([`TLS_MODE_LABEL`]): Istio's injector adds that label to pods, and
//!   WorkloadEntries of VMs with a sidecar carry it too. In directory mode, label the WorkloadEntries.
//! - **Inbound listeners** ([`secure_inbound`]). By the workload port's PeerAuthentication mode: STRICT
//!   takes TLS with a client certificate only, PERMISSIVE TLS and plaintext (told apart by the TLS
//!   inspector), DISABLE plaintext only.
//!
//! Certificates are never inlined: every TLS context names the SDS secrets `default` (the workload's
//! own, which the proxy makes itself) and `ROOTCA` (the mesh's roots, which weftd serves: [`crate::sds`]).
//! Which PeerAuthentication applies is the security module's; this one only shapes the chains.

use crate::model::Model;
use crate::registry::Service;
use crate::sds;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tracing::warn;
use weft_api::networking::destination_rule::{ClientTlsSettings, DestinationRule, TrafficPolicy};
use weft_api::networking::service_entry::ServicePort;
use weft_api::security::peer_authentication::effective_mode;
use weft_api::security::MtlsMode;
use weft_api::Resource;
use weft_xds::pb::envoy::config::cluster::v3::cluster::TransportSocketMatch;
use weft_xds::pb::envoy::config::cluster::v3::Cluster;
use weft_xds::pb::envoy::config::core::v3::{
    data_source, transport_socket, DataSource, Metadata, TransportSocket,
};
use weft_xds::pb::envoy::config::listener::v3::{
    listener_filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
};
use weft_xds::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use weft_xds::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use weft_xds::pb::envoy::extensions::transport_sockets::tls::v3::{
    certificate_validation_context::SystemRootCerts, common_tls_context,
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, TlsCertificate,
    UpstreamTlsContext,
};
use weft_xds::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use weft_xds::pb::google::protobuf::{value::Kind, BoolValue, Struct, Value};
use weft_xds::{filter_name, pack, type_url};

/// The label that says a workload runs a sidecar (Istio's injector sets it on pods).
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
/// [`TLS_MODE_LABEL`]'s value for a workload with a sidecar, and the `tlsMode` endpoint metadata that
/// auto mTLS matches.
pub const TLS_MODE_ISTIO: &str = "istio";
/// The `transport_socket_matches` entry for endpoints with a sidecar (Istio's name).
pub const MATCH_ISTIO: &str = "tlsMode-istio";
/// The `transport_socket_matches` entry for every other endpoint (Istio's name).
pub const MATCH_DISABLED: &str = "tlsMode-disabled";
/// ALPN a sidecar offers another sidecar (Istio's `ALPNInMeshWithMxc`): the peer-metadata exchange, then
/// Istio's own marker.
pub const ALPN_IN_MESH: [&str; 2] = ["istio-peer-exchange", "istio"];
/// ALPN an inbound TLS listener accepts.
pub const ALPN_INBOUND: [&str; 2] = ["h2", "http/1.1"];
/// The filter chain match of TLS connections, as the TLS inspector reports them.
pub const TRANSPORT_TLS: &str = "tls";
/// The filter chain match of plaintext connections.
pub const TRANSPORT_RAW_BUFFER: &str = "raw_buffer";
/// The raw buffer transport socket's (empty) config.
pub const RAW_BUFFER_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";
/// The TLS inspector's (empty) config.
pub const TLS_INSPECTOR_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";

/// A DestinationRule `tls` weftd cannot turn into a cluster's TLS. The cluster is left out rather than
/// sent in plaintext: requests routed to it fail instead of leaving unencrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `credentialName` names a Kubernetes secret weftd cannot read for sidecars yet.
    #[error("DestinationRule {rule}: {field}.credentialName: credentialName is not supported for sidecars yet; give clientCertificate, privateKey and caCertificates as files")]
    CredentialName {
        /// `namespace/name`.
        rule: String,
        /// `spec.trafficPolicy.tls`, `spec.subsets[1].trafficPolicy.portLevelSettings[0].tls`, ….
        field: String,
    },
    /// MUTUAL without its client certificate or key.
    #[error("DestinationRule {rule}: {field}: mode MUTUAL needs clientCertificate and privateKey")]
    MutualWithoutCertificate {
        /// `namespace/name`.
        rule: String,
        /// The `tls` field's path.
        field: String,
    },
    /// A mode that is none of Istio's.
    #[error("DestinationRule {rule}: {field}.mode: unknown TLS mode {mode:?} (DISABLE, SIMPLE, MUTUAL or ISTIO_MUTUAL)")]
    Mode {
        /// `namespace/name`.
        rule: String,
        /// The `tls` field's path.
        field: String,
        /// The mode as written.
        mode: String,
    },
}

/// The PeerAuthentications of one model, gathered once per translation so that asking for a port's
/// mode costs a walk over the policies, not over every resource.
#[derive(Debug)]
pub struct PeerPolicies<'a> {
    policies: Vec<&'a Resource>,
    root_namespace: &'a str,
}

impl<'a> PeerPolicies<'a> {
    /// The PeerAuthentications of `model`.
    pub fn of(model: &'a Model) -> PeerPolicies<'a> {
        PeerPolicies {
            policies: model
                .resources
                .iter()
                .filter(|r| r.as_peer_authentication().is_some())
                .map(|r| &**r)
                .collect(),
            root_namespace: &model.mesh.root_namespace,
        }
    }

    /// The mode of workload port `port` of a workload in `namespace` with `labels`, with Istio's
    /// precedence (PERMISSIVE when no policy says otherwise).
    pub fn mode(&self, namespace: &str, labels: &BTreeMap<String, String>, port: u32) -> MtlsMode {
        effective_mode(
            self.policies.iter().copied(),
            self.root_namespace,
            namespace,
            labels,
            port,
        )
        .mode
    }

    /// The mode of `namespace` from the mesh's and the namespace's policies only, leaving out those
    /// that select workloads: Istio's best-effort guess of a service's mode for auto mTLS
    /// (`BestEffortInferServiceMTLSMode`), since a service's workloads may differ.
    pub fn namespace_mode(&self, namespace: &str) -> MtlsMode {
        self.mode(namespace, &BTreeMap::new(), 0)
    }
}

/// How one outbound cluster reaches its endpoints.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientTls {
    /// Plaintext to every endpoint: DestinationRule `DISABLE`, auto mTLS off, a mesh-external service,
    /// or a namespace whose PeerAuthentication disables mTLS.
    Plaintext,
    /// Istio's auto mTLS: this context towards endpoints with a sidecar, plaintext towards the rest.
    Auto(UpstreamTlsContext),
    /// This context towards every endpoint, as a DestinationRule asks.
    Always(UpstreamTlsContext),
}

impl ClientTls {
    /// Sets the cluster's `transport_socket` or `transport_socket_matches`.
    pub fn apply(self, cluster: &mut Cluster) {
        match self {
            ClientTls::Plaintext => {}
            ClientTls::Always(ctx) => cluster.transport_socket = Some(tls_socket(&ctx)),
            ClientTls::Auto(ctx) => {
                cluster.transport_socket_matches = vec![
                    TransportSocketMatch {
                        name: MATCH_ISTIO.into(),
                        r#match: Some(tls_mode_istio()),
                        transport_socket: Some(tls_socket(&ctx)),
                    },
                    TransportSocketMatch {
                        name: MATCH_DISABLED.into(),
                        r#match: Some(Struct::default()),
                        transport_socket: Some(raw_buffer_socket()),
                    },
                ]
            }
        }
    }
}

/// Sets the client TLS of cluster `outbound|<port>|<subset>|<host>` ([`client_tls`]). False, with a
/// warning naming the DestinationRule and the field, when the cluster must be left out.
pub fn secure_cluster(
    model: &Model,
    peers: &PeerPolicies<'_>,
    svc: &Service,
    port: &ServicePort,
    subset: &str,
    cluster: &mut Cluster,
) -> bool {
    match client_tls(
        model,
        svc,
        port,
        subset,
        peers.namespace_mode(&svc.namespace),
    ) {
        Ok(tls) => {
            tls.apply(cluster);
            true
        }
        Err(e) => {
            warn!(cluster = %cluster.name, error = %e, "cluster left out");
            false
        }
    }
}

/// Whether what decides the client TLS of a service, besides the service and its DestinationRule, is
/// the same in both models: the mesh's auto mTLS switch and trust domain, and the PeerAuthentications.
/// When it is not, no service may keep its clusters from the previous generation.
pub fn same_client_tls_inputs(old: &Model, new: &Model) -> bool {
    old.mesh.enable_auto_mtls == new.mesh.enable_auto_mtls
        && old.mesh.trust_domain == new.mesh.trust_domain
        && old.mesh.root_namespace == new.mesh.root_namespace
        && PeerPolicies::of(old).policies == PeerPolicies::of(new).policies
}

/// The SNI a sidecar sends to another for a cluster (Istio's `outbound_.<port>_.<subset>_.<host>`, so
/// `outbound_.9080_._.<host>` for no subset): the server side can tell which cluster a connection is
/// for.
pub fn istio_sni(port: u32, subset: &str, host: &str) -> String {
    format!("outbound_.{port}_.{subset}_.{host}")
}

/// A workload's SPIFFE identity: `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// The identities a client accepts from a service's endpoints: the SPIFFE id of each of its workloads'
/// service accounts (`default` when a WorkloadEntry names none), sorted, each once.
pub fn service_identities(model: &Model, svc: &Service) -> Vec<String> {
    let accounts: BTreeSet<&str> = svc
        .instances
        .iter()
        .map(|i| i.service_account.as_deref().unwrap_or("default"))
        .collect();
    accounts
        .into_iter()
        .map(|sa| spiffe_id(&model.mesh.trust_domain, &svc.namespace, sa))
        .collect()
}

/// The client TLS of cluster `outbound|<port>|<subset>|<host>`; `subset` is empty for the service's
/// own cluster. `namespace_mode` is the PeerAuthentication mode of the service's namespace (the mesh's
/// or the namespace's, without workload policies: Istio's best-effort guess of a service's mode), which
/// turns auto mTLS off when it is DISABLE.
pub fn client_tls(
    model: &Model,
    svc: &Service,
    port: &ServicePort,
    subset: &str,
    namespace_mode: MtlsMode,
) -> Result<ClientTls, Error> {
    let rule = model.destination_rules.get(&svc.hostname);
    let chosen = rule
        .and_then(|r| r.as_destination_rule())
        .and_then(|dr| destination_rule_tls(dr, port.number, subset));
    let sni = istio_sni(port.number, subset, &svc.hostname);
    let Some((tls, field)) = chosen else {
        let auto = model.mesh.enable_auto_mtls.unwrap_or(true)
            && !svc.mesh_external
            && namespace_mode != MtlsMode::Disable;
        return Ok(if auto {
            ClientTls::Auto(istio_mutual(service_identities(model, svc), sni))
        } else {
            ClientTls::Plaintext
        });
    };
    let rule = rule
        .map(|r| format!("{}/{}", r.metadata.namespace, r.metadata.name))
        .unwrap_or_default();
    let mode = tls.mode.as_deref().unwrap_or("DISABLE");
    match mode {
        "DISABLE" => Ok(ClientTls::Plaintext),
        "ISTIO_MUTUAL" => {
            let sans = if tls.subject_alt_names.is_empty() {
                service_identities(model, svc)
            } else {
                tls.subject_alt_names.clone()
            };
            let sni = tls.sni.clone().filter(|s| !s.is_empty()).unwrap_or(sni);
            Ok(ClientTls::Always(istio_mutual(sans, sni)))
        }
        "SIMPLE" | "MUTUAL" => {
            if tls
                .credential_name
                .as_deref()
                .is_some_and(|c| !c.is_empty())
            {
                return Err(Error::CredentialName { rule, field });
            }
            let mutual = mode == "MUTUAL";
            let certificate = match (&tls.client_certificate, &tls.private_key) {
                (Some(chain), Some(key)) if mutual && !chain.is_empty() && !key.is_empty() => {
                    Some(TlsCertificate {
                        certificate_chain: Some(file(chain)),
                        private_key: Some(file(key)),
                        ..Default::default()
                    })
                }
                _ if mutual => return Err(Error::MutualWithoutCertificate { rule, field }),
                _ => None,
            };
            Ok(ClientTls::Always(files_tls(tls, certificate)))
        }
        other => Err(Error::Mode {
            rule,
            field,
            mode: other.to_string(),
        }),
    }
}

/// The `tls` a DestinationRule sets for a port of one subset (empty: none), with its field path, as
/// Istio merges them: the subset's port-level settings, the subset's policy, the host's port-level
/// settings, the host's policy, the first that sets `tls`.
fn destination_rule_tls<'a>(
    dr: &'a DestinationRule,
    port: u32,
    subset: &str,
) -> Option<(&'a ClientTlsSettings, String)> {
    let of_policy = |tp: &'a TrafficPolicy, at: &str| {
        let port_level = tp
            .port_level_settings
            .iter()
            .enumerate()
            .find_map(|(i, p)| {
                p.port
                    .as_ref()
                    .filter(|s| s.number == port)
                    .and(p.tls.as_ref())
                    .map(|t| (t, format!("{at}.portLevelSettings[{i}].tls")))
            });
        port_level.or_else(|| tp.tls.as_ref().map(|t| (t, format!("{at}.tls"))))
    };
    let subset_tls = (!subset.is_empty())
        .then(|| {
            dr.subsets
                .iter()
                .enumerate()
                .find(|(_, s)| s.name == subset)
        })
        .flatten()
        .and_then(|(i, s)| {
            let tp = s.traffic_policy.as_ref()?;
            of_policy(tp, &format!("spec.subsets[{i}].trafficPolicy"))
        });
    subset_tls.or_else(|| {
        dr.traffic_policy
            .as_ref()
            .and_then(|tp| of_policy(tp, "spec.trafficPolicy"))
    })
}

/// ISTIO_MUTUAL towards a peer with one of `sans` (any when empty), sending `sni`: the proxy's own
/// certificate (`default`) and the mesh's roots (`ROOTCA`), both over SDS.
pub fn istio_mutual(sans: Vec<String>, sni: String) -> UpstreamTlsContext {
    UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds::sds_config(sds::DEFAULT)],
            validation_context_type: Some(combined_validation(sans)),
            alpn_protocols: ALPN_IN_MESH.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        sni,
        ..Default::default()
    }
}

/// SIMPLE or MUTUAL with certificates from files: the client's `certificate` for MUTUAL, the roots of
/// `caCertificates` (the system's when absent), the peer's names from `subjectAltNames`, nothing
/// verified with `insecureSkipVerify`.
fn files_tls(tls: &ClientTlsSettings, certificate: Option<TlsCertificate>) -> UpstreamTlsContext {
    #[allow(deprecated)] // match_subject_alt_names: see `exact_matchers`
    let validation = (!tls.insecure_skip_verify.unwrap_or(false)).then(|| {
        let ca = tls.ca_certificates.as_deref().filter(|c| !c.is_empty());
        CertificateValidationContext {
            trusted_ca: ca.map(file),
            system_root_certs: ca.is_none().then_some(SystemRootCerts {}),
            match_subject_alt_names: exact_matchers(tls.subject_alt_names.clone()),
            ..Default::default()
        }
    });
    UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificates: certificate.into_iter().collect(),
            validation_context_type: validation
                .map(common_tls_context::ValidationContextType::ValidationContext),
            ..Default::default()
        }),
        sni: tls.sni.clone().unwrap_or_default(),
        ..Default::default()
    }
}

/// Names accepted as the peer's (empty: any the roots vouch for), and the roots from `ROOTCA`.
#[allow(deprecated)] // match_subject_alt_names: see `exact_matchers`
fn combined_validation(sans: Vec<String>) -> common_tls_context::ValidationContextType {
    common_tls_context::ValidationContextType::CombinedValidationContext(
        common_tls_context::CombinedCertificateValidationContext {
            default_validation_context: Some(CertificateValidationContext {
                match_subject_alt_names: exact_matchers(sans),
                ..Default::default()
            }),
            validation_context_sds_secret_config: Some(sds::sds_config(sds::ROOTCA)),
            ..Default::default()
        },
    )
}

/// Names matched exactly, for `match_subject_alt_names`: deprecated in Envoy for
/// `match_typed_subject_alt_names`, but what Istio sends and every Envoy and weft-proxy read.
fn exact_matchers(names: Vec<String>) -> Vec<StringMatcher> {
    names
        .into_iter()
        .map(|n| StringMatcher {
            match_pattern: Some(MatchPattern::Exact(n)),
            ignore_case: false,
        })
        .collect()
}

fn file(path: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::Filename(path.to_string())),
        ..Default::default()
    }
}

fn tls_socket(ctx: &UpstreamTlsContext) -> TransportSocket {
    TransportSocket {
        name: filter_name::TLS_TRANSPORT_SOCKET.into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack(
            type_url::UPSTREAM_TLS_CONTEXT,
            ctx,
        ))),
    }
}

fn raw_buffer_socket() -> TransportSocket {
    TransportSocket {
        name: filter_name::RAW_BUFFER.into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack(
            RAW_BUFFER_TYPE,
            &RawBuffer {},
        ))),
    }
}

/// `{tlsMode: istio}`: what auto mTLS's first match asks of an endpoint's metadata, and what an endpoint
/// with a sidecar carries.
fn tls_mode_istio() -> Struct {
    Struct {
        fields: HashMap::from([(
            "tlsMode".to_string(),
            Value {
                kind: Some(Kind::StringValue(TLS_MODE_ISTIO.into())),
            },
        )]),
    }
}

/// The metadata of an endpoint whose workload has these labels: `envoy.transport_socket_match:
/// {tlsMode: istio}` when it has a sidecar ([`TLS_MODE_LABEL`]), none otherwise.
pub fn endpoint_metadata(labels: &BTreeMap<String, String>) -> Option<Metadata> {
    let sidecar = labels.get(TLS_MODE_LABEL).map(String::as_str) == Some(TLS_MODE_ISTIO);
    sidecar.then(|| Metadata {
        filter_metadata: HashMap::from([(
            filter_name::TRANSPORT_SOCKET_MATCH.to_string(),
            tls_mode_istio(),
        )]),
        ..Default::default()
    })
}

/// What an inbound TLS chain presents and asks for: the proxy's certificate (`default`), a client
/// certificate that chains to `ROOTCA` (any identity: authorization policies judge it).
pub fn inbound_tls() -> DownstreamTlsContext {
    DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds::sds_config(sds::DEFAULT)],
            validation_context_type: Some(combined_validation(Vec::new())),
            alpn_protocols: ALPN_INBOUND.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    }
}

/// Shapes an inbound listener of one plaintext filter chain for `mode`: STRICT keeps one chain, for TLS
/// connections, with [`inbound_tls`]; PERMISSIVE adds a second with the same filters for plaintext;
/// both get the TLS inspector, which tells the two apart. DISABLE leaves the listener as it is.
pub fn secure_inbound(listener: &mut Listener, mode: MtlsMode) {
    if mode == MtlsMode::Disable {
        return;
    }
    let Some(plain) = listener.filter_chains.first().cloned() else {
        return;
    };
    let tls = FilterChain {
        filter_chain_match: Some(FilterChainMatch {
            transport_protocol: TRANSPORT_TLS.into(),
            ..Default::default()
        }),
        transport_socket: Some(TransportSocket {
            name: filter_name::TLS_TRANSPORT_SOCKET.into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(pack(
                type_url::DOWNSTREAM_TLS_CONTEXT,
                &inbound_tls(),
            ))),
        }),
        ..plain.clone()
    };
    let raw = FilterChain {
        filter_chain_match: Some(FilterChainMatch {
            transport_protocol: TRANSPORT_RAW_BUFFER.into(),
            ..Default::default()
        }),
        ..plain
    };
    listener.filter_chains = match mode {
        MtlsMode::Strict => vec![tls],
        _ => vec![tls, raw],
    };
    listener.listener_filters = vec![ListenerFilter {
        name: filter_name::TLS_INSPECTOR.into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pack(
            TLS_INSPECTOR_TYPE,
            &TlsInspector::default(),
        ))),
        ..Default::default()
    }];
}

#[cfg(test)]
mod tests;
