//! CUSTOM AuthorizationPolicies → Envoy's `ext_authz` filter, as istiod generates it
//! (`pilot/pkg/security/authz/builder/extauthz.go`): the provider named in `provider.name` is read from
//! MeshConfig's `extensionProviders` ([`weft_api::mesh::ExtAuthz`]), its `service` is resolved in the
//! registry like any outbound host, and the filter calls the cluster `outbound|<port>||<host>`.
//!
//! The filter runs only for requests the CUSTOM rules matched: those rules go, as a DENY engine, into
//! the `shadow_rules` of an RBAC filter just before it (stat prefix `istio_ext_authz_`), which enforces
//! nothing but records the policy that matched under `istio_ext_authz_shadow_effective_policy_id`;
//! the ext_authz filter's `filter_enabled_metadata` asks for a value starting with
//! `istio-ext-authz-<provider>-`, the prefix of those rules' names. [`super::rbac`] places both.
//!
//! A gRPC provider also gives the network `ext_authz` filter for TCP listeners; an HTTP provider
//! cannot check a connection, so on TCP its policies do nothing (Istio ignores them there too).

use crate::model::Model;
use crate::translate::outbound_cluster_name;
use weft_api::host::qualify;
use weft_api::mesh::ext_authz::{BodyInCheck, ExtAuthzHttp};
use weft_api::mesh::ExtAuthz;
use weft_xds::pb::envoy::config::core::v3::{
    grpc_service, http_uri, ApiVersion, GrpcService, HeaderValue, HttpUri,
};
use weft_xds::pb::envoy::extensions::filters::http::ext_authz::v3 as http_authz;
use weft_xds::pb::envoy::extensions::filters::network::ext_authz::v3 as net_authz;
use weft_xds::pb::envoy::r#type::matcher::v3::{
    metadata_matcher::{path_segment::Segment, PathSegment},
    string_matcher::MatchPattern,
    value_matcher, ListStringMatcher, MetadataMatcher, StringMatcher, ValueMatcher,
};
use weft_xds::pb::envoy::r#type::v3::HttpStatus;
use weft_xds::pb::google::protobuf::Duration as PbDuration;
use weft_xds::{pack, Any};

/// The HTTP ext_authz filter's name.
pub const HTTP_EXT_AUTHZ_FILTER: &str = "envoy.filters.http.ext_authz";
/// The network ext_authz filter's name.
pub const NETWORK_EXT_AUTHZ_FILTER: &str = "envoy.filters.network.ext_authz";
/// The type of the HTTP ext_authz filter's config.
pub const HTTP_EXT_AUTHZ_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz";
/// The type of the network ext_authz filter's config.
pub const NETWORK_EXT_AUTHZ_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.ext_authz.v3.ExtAuthz";
/// The shadow stat prefix of the RBAC filter that marks requests for ext_authz (Istio's).
pub const SHADOW_PREFIX: &str = "istio_ext_authz_";
/// The dynamic metadata key the marking RBAC filter writes the matched policy under.
pub const EFFECTIVE_POLICY_KEY: &str = "istio_ext_authz_shadow_effective_policy_id";
/// The prefix of the CUSTOM rules' policy names.
pub const MATCH_PREFIX: &str = "istio-ext-authz";

/// Why a CUSTOM policy's provider cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Not in MeshConfig, or not an authorizer.
    #[error(transparent)]
    Unusable(#[from] weft_api::mesh::ext_authz::Unusable),
    /// Its service is not in the registry.
    #[error("provider {provider:?}: service {service:?} is not in the service registry")]
    NoService {
        /// The provider.
        provider: String,
        /// Its `service`.
        service: String,
    },
}

/// A provider resolved for one workload: the filters that call it.
#[derive(Debug, Clone)]
pub struct Resolved {
    provider: String,
    authz: ExtAuthz,
    host: String,
    cluster: String,
}

/// The provider `name` of `model`'s MeshConfig with its service found in the registry.
pub fn resolve(model: &Model, name: &str) -> Result<Resolved, ProviderError> {
    let authz = model.mesh.ext_authz_provider(name)?;
    let service = authz.service();
    // `ns/host` names the namespace a short host is qualified in, and whose service it must be; a
    // bare host is looked up as written (qualified in the root namespace when short).
    let (ns, host) = match service.split_once('/') {
        Some((ns, h)) => (Some(ns), qualify(h, ns)),
        None => (None, qualify(service, &model.mesh.root_namespace)),
    };
    let found = model
        .services
        .get(&host)
        .filter(|s| ns.is_none_or(|ns| s.namespace == ns));
    if found.is_none() {
        return Err(ProviderError::NoService {
            provider: name.to_string(),
            service: service.to_string(),
        });
    }
    let cluster = outbound_cluster_name(authz.port(), "", &host);
    Ok(Resolved {
        provider: name.to_string(),
        authz,
        host,
        cluster,
    })
}

impl Resolved {
    /// Whether it can check TCP connections (a gRPC provider).
    pub fn is_grpc(&self) -> bool {
        matches!(self.authz, ExtAuthz::Grpc(_))
    }

    /// The prefix of the names of the CUSTOM rules this provider checks.
    pub fn policy_prefix(&self) -> String {
        format!("{MATCH_PREFIX}-{}-", self.provider)
    }

    /// The cluster of the authorizer.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    fn enabled_by(&self, rbac_filter: &str) -> MetadataMatcher {
        MetadataMatcher {
            filter: rbac_filter.into(),
            path: vec![PathSegment {
                segment: Some(Segment::Key(EFFECTIVE_POLICY_KEY.into())),
            }],
            value: Some(ValueMatcher {
                match_pattern: Some(value_matcher::MatchPattern::StringMatch(StringMatcher {
                    match_pattern: Some(MatchPattern::Prefix(self.policy_prefix())),
                    ignore_case: false,
                })),
            }),
            ..Default::default()
        }
    }

    fn grpc_service(&self) -> GrpcService {
        GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc {
                    cluster_name: self.cluster.clone(),
                    // `|` is not allowed in an authority: Istio's replacement.
                    authority: self.cluster.replace('|', "_."),
                    ..Default::default()
                },
            )),
            timeout: Some(duration(self.authz.timeout())),
            ..Default::default()
        }
    }

    fn status_on_error(&self) -> Option<HttpStatus> {
        let set = match &self.authz {
            ExtAuthz::Http(h) => h.status_on_error.as_deref(),
            ExtAuthz::Grpc(g) => g.status_on_error.as_deref(),
        }
        .is_some_and(|s| !s.is_empty());
        set.then(|| HttpStatus {
            code: i32::from(self.authz.status_on_error()),
        })
    }

    /// The `envoy.filters.http.ext_authz` config, enabled by `envoy.filters.http.rbac`'s mark.
    pub fn http(&self, rbac_filter: &str) -> Any {
        let services = match &self.authz {
            ExtAuthz::Http(h) => http_authz::ext_authz::Services::HttpService(self.http_service(h)),
            ExtAuthz::Grpc(_) => http_authz::ext_authz::Services::GrpcService(self.grpc_service()),
        };
        let clear_route_cache = match &self.authz {
            ExtAuthz::Grpc(g) => g.clear_route_cache.unwrap_or(false),
            ExtAuthz::Http(_) => false,
        };
        let config = http_authz::ExtAuthz {
            transport_api_version: ApiVersion::V3 as i32,
            failure_mode_allow: self.authz.fail_open(),
            with_request_body: self.authz.body().map(buffer_settings),
            clear_route_cache,
            status_on_error: self.status_on_error(),
            filter_enabled_metadata: Some(self.enabled_by(rbac_filter)),
            services: Some(services),
            ..Default::default()
        };
        pack(HTTP_EXT_AUTHZ_TYPE, &config)
    }

    /// The `envoy.filters.network.ext_authz` config (a gRPC provider only), enabled by
    /// `envoy.filters.network.rbac`'s mark.
    pub fn network(&self, rbac_filter: &str) -> Option<Any> {
        if !self.is_grpc() {
            return None;
        }
        let config = net_authz::ExtAuthz {
            stat_prefix: super::rbac::TCP_STAT_PREFIX.into(),
            grpc_service: Some(self.grpc_service()),
            failure_mode_allow: self.authz.fail_open(),
            transport_api_version: ApiVersion::V3 as i32,
            filter_enabled_metadata: Some(self.enabled_by(rbac_filter)),
            ..Default::default()
        };
        Some(pack(NETWORK_EXT_AUTHZ_TYPE, &config))
    }

    // `authorization_request.allowed_headers` is deprecated in Envoy for the filter-level field, but it
    // is what istiod sends, and what the proxy reads.
    #[allow(deprecated)]
    fn http_service(&self, h: &ExtAuthzHttp) -> http_authz::HttpService {
        let included: Vec<&String> = h
            .include_request_headers_in_check
            .iter()
            .chain(&h.include_headers_in_check)
            .collect();
        let additional: Vec<HeaderValue> = h
            .include_additional_headers_in_check
            .iter()
            .map(|(k, v)| HeaderValue {
                key: k.clone(),
                value: v.clone(),
                ..Default::default()
            })
            .collect();
        let authorization_request = (!included.is_empty() || !additional.is_empty()).then(|| {
            http_authz::AuthorizationRequest {
                allowed_headers: headers(included),
                headers_to_add: additional,
            }
        });
        let response = [
            &h.headers_to_upstream_on_allow,
            &h.headers_to_downstream_on_deny,
            &h.headers_to_downstream_on_allow,
        ];
        let authorization_response =
            response
                .iter()
                .any(|l| !l.is_empty())
                .then(|| http_authz::AuthorizationResponse {
                    allowed_upstream_headers: headers(&h.headers_to_upstream_on_allow),
                    allowed_client_headers: headers(&h.headers_to_downstream_on_deny),
                    allowed_client_headers_on_success: headers(&h.headers_to_downstream_on_allow),
                    ..Default::default()
                });
        http_authz::HttpService {
            server_uri: Some(HttpUri {
                // Required by Envoy, unused by the filter: istiod writes the host.
                uri: format!("http://{}", self.host),
                http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(self.cluster.clone())),
                timeout: Some(duration(self.authz.timeout())),
            }),
            path_prefix: h.path_prefix.clone().unwrap_or_default(),
            authorization_request,
            authorization_response,
            ..Default::default()
        }
    }
}

/// Istio's header patterns: `x-*` a prefix, `*-x` a suffix, anything else exact.
fn headers<'a>(list: impl IntoIterator<Item = &'a String>) -> Option<ListStringMatcher> {
    let patterns: Vec<StringMatcher> = list
        .into_iter()
        .map(|h| {
            let p = if let Some(p) = h.strip_suffix('*') {
                MatchPattern::Prefix(p.to_string())
            } else if let Some(s) = h.strip_prefix('*') {
                MatchPattern::Suffix(s.to_string())
            } else {
                MatchPattern::Exact(h.clone())
            };
            StringMatcher {
                match_pattern: Some(p),
                ignore_case: false,
            }
        })
        .collect();
    (!patterns.is_empty()).then_some(ListStringMatcher { patterns })
}

fn buffer_settings(b: BodyInCheck) -> http_authz::BufferSettings {
    http_authz::BufferSettings {
        max_request_bytes: b.max_request_bytes,
        allow_partial_message: b.allow_partial_message,
        pack_as_bytes: b.pack_as_bytes,
    }
}

fn duration(d: std::time::Duration) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}
