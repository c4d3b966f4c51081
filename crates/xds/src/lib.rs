//! The xDS transport both sides share: Envoy's protobuf types (re-exported from `envoy-types`), type URLs,
//! the node metadata keys a sidecar reports, `Any` packing, and Envoy-shaped JSON for config dumps.
//!
//! What weftd sends and weft-proxy understands is pinned in this crate's `README.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod ca;
pub mod json;
pub mod node;

/// Envoy's generated protobuf types (`envoy_types::pb`).
pub use envoy_types::pb;

use prost::Message;

/// `google.protobuf.Any`, as prost generates it.
pub type Any = pb::google::protobuf::Any;

/// Type URLs of the resources weft serves, as Envoy names them.
pub mod type_url {
    /// LDS.
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    /// RDS.
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    /// CDS.
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    /// EDS.
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    /// The HTTP connection manager, inside a listener's filter chain.
    pub const HTTP_CONNECTION_MANAGER: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
    /// Fault injection, in a route's `typed_per_filter_config`.
    pub const HTTP_FAULT: &str =
        "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";
    /// Envoy's CORS policy, in a route's `typed_per_filter_config`.
    pub const CORS_POLICY: &str =
        "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy";
    /// The CORS filter's own (empty) config, in a connection manager's filter list.
    pub const CORS: &str = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors";
    /// The router filter.
    pub const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
    /// The TLS transport socket's settings on a cluster.
    pub const UPSTREAM_TLS_CONTEXT: &str =
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
    /// The TLS transport socket's settings on a listener's filter chain.
    pub const DOWNSTREAM_TLS_CONTEXT: &str =
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
    /// An SDS secret (`ROOTCA`: the mesh's trust anchors).
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
    /// The TCP proxy, inside a listener's filter chain.
    pub const TCP_PROXY: &str =
        "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
    /// The file access logger, in a connection manager's `access_log`.
    pub const FILE_ACCESS_LOG: &str =
        "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog";
    /// The Zipkin tracer, in a connection manager's `tracing.provider`.
    pub const ZIPKIN_CONFIG: &str = "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig";
    /// The OpenTelemetry tracer, in a connection manager's `tracing.provider`.
    pub const OPENTELEMETRY_CONFIG: &str =
        "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig";
    /// A config given as a JSON-like struct with the type it stands for ([`crate::TypedStruct`]).
    pub const TYPED_STRUCT: &str = "type.googleapis.com/xds.type.v3.TypedStruct";
    /// The same, under its historical name.
    pub const UDPA_TYPED_STRUCT: &str = "type.googleapis.com/udpa.type.v1.TypedStruct";
    /// Istio's stats filter config (`istio.stats`), carried inside a [`TYPED_STRUCT`].
    pub const ISTIO_STATS_CONFIG: &str = "type.googleapis.com/stats.PluginConfig";
    /// Envoy's CEL access-log filter, in an access log's `filter.extension_filter`.
    pub const CEL_ACCESS_LOG_FILTER: &str =
        "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter";
    /// Envoy's UUID request id extension, in a connection manager's `request_id_extension`.
    pub const UUID_REQUEST_ID: &str =
        "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig";

    /// The four types in the order a proxy should apply them (Envoy's: clusters before endpoints,
    /// listeners before routes).
    pub const ALL: [&str; 4] = [CLUSTER, ENDPOINT, LISTENER, ROUTE];

    /// The short name proxy-status prints (`CDS`, `LDS`, …), or the URL itself when unknown.
    pub fn short(url: &str) -> &str {
        match url {
            LISTENER => "LDS",
            ROUTE => "RDS",
            CLUSTER => "CDS",
            ENDPOINT => "EDS",
            other => other,
        }
    }
}

/// Names of the filters weft puts in listeners and routes (Envoy's well-known names).
pub mod filter_name {
    /// The network filter that runs HTTP.
    pub const HTTP_CONNECTION_MANAGER: &str = "envoy.filters.network.http_connection_manager";
    /// Fault injection.
    pub const FAULT: &str = "envoy.filters.http.fault";
    /// Cross-origin resource sharing.
    pub const CORS: &str = "envoy.filters.http.cors";
    /// The terminal router filter.
    pub const ROUTER: &str = "envoy.filters.http.router";
    /// The network filter that proxies opaque TCP.
    pub const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";
    /// The TLS transport socket.
    pub const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";
    /// The plaintext transport socket.
    pub const RAW_BUFFER: &str = "envoy.transport_sockets.raw_buffer";
    /// The listener filter that reads a connection's first bytes for TLS (SNI, ALPN).
    pub const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
    /// The endpoint metadata namespace that `transport_socket_matches` match on.
    pub const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";
    /// The file access logger.
    pub const FILE_ACCESS_LOG: &str = "envoy.access_loggers.file";
    /// The Zipkin tracer.
    pub const ZIPKIN_TRACER: &str = "envoy.tracers.zipkin";
    /// The OpenTelemetry tracer.
    pub const OPENTELEMETRY_TRACER: &str = "envoy.tracers.opentelemetry";
    /// Istio's stats filter (HTTP and network), which the Telemetry API's metric overrides configure.
    pub const ISTIO_STATS: &str = "istio.stats";
    /// Envoy's CEL access-log filter.
    pub const CEL_ACCESS_LOG_FILTER: &str = "envoy.access_loggers.extension_filters.cel";
    /// Envoy's UUID request id extension.
    pub const UUID_REQUEST_ID: &str = "envoy.request_id.uuid";
}

/// `xds.type.v3.TypedStruct` (also `udpa.type.v1.TypedStruct`, the same fields), which envoy-types does
/// not generate: an extension's config as a `google.protobuf.Struct`, with the type URL of the message
/// it stands for. Istio configures its stats filter this way.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct TypedStruct {
    /// The type the struct stands for (`type.googleapis.com/stats.PluginConfig`).
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// The config, in proto3's JSON mapping.
    #[prost(message, optional, tag = "2")]
    pub value: Option<pb::google::protobuf::Struct>,
}

/// Istio's default JSON access log: its keys, in its order, and the Envoy operator of each. weftd sends
/// it for `accessLogEncoding: JSON`; weft-proxy's parser knows every operator in it.
pub const ISTIO_JSON_ACCESS_LOG: [(&str, &str); 24] = [
    ("start_time", "%START_TIME%"),
    ("route_name", "%ROUTE_NAME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    (
        "connection_termination_details",
        "%CONNECTION_TERMINATION_DETAILS%",
    ),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    (
        "upstream_service_time",
        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    ),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER_RAW%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    (
        "upstream_transport_failure_reason",
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    ),
];

/// Packs a message into an `Any` with the given type URL.
pub fn pack<M: Message>(type_url: &str, msg: &M) -> Any {
    Any {
        type_url: type_url.to_string(),
        value: msg.encode_to_vec(),
    }
}

/// A resource that did not decode as the type its URL claims.
#[derive(Debug, thiserror::Error)]
#[error("resource of type {type_url} does not decode")]
pub struct DecodeError {
    /// The type URL the resource carried.
    pub type_url: String,
    /// What prost said.
    #[source]
    pub source: prost::DecodeError,
}

/// Unpacks an `Any` into `M`.
pub fn unpack<M: Message + Default>(any: &Any) -> Result<M, DecodeError> {
    M::decode(any.value.as_slice()).map_err(|source| DecodeError {
        type_url: any.type_url.clone(),
        source,
    })
}

/// The client and server for ADS, from `envoy-types`.
pub mod ads {
    pub use envoy_types::pb::envoy::service::discovery::v3::{
        aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
        aggregated_discovery_service_server::{
            AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
        },
        DiscoveryRequest, DiscoveryResponse,
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::envoy::config::cluster::v3::Cluster;

    #[test]
    fn pack_then_unpack_round_trips() {
        let c = Cluster {
            name: "outbound|9080||reviews.default.svc.cluster.local".into(),
            ..Default::default()
        };
        let any = pack(type_url::CLUSTER, &c);
        let back: Cluster = unpack(&any).expect("decodes");
        assert_eq!(back.name, c.name);
        assert_eq!(type_url::short(&any.type_url), "CDS");
    }

    #[test]
    fn garbage_is_a_decode_error_naming_the_type() {
        let any = Any {
            type_url: type_url::CLUSTER.into(),
            value: vec![0xff, 0xff, 0xff],
        };
        let err = unpack::<Cluster>(&any).expect_err("garbage");
        assert!(err.to_string().contains("envoy.config.cluster.v3.Cluster"));
    }
}
