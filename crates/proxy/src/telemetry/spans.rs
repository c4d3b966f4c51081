//! Distributed tracing (`SPEC.md` §3.3): a listener whose connection manager has `tracing` propagates
//! the trace context of each request and reports a span per sampled request (a server span inbound, a
//! client span outbound) to its collector, through one exporter per collector (weft-trace).

use super::Telemetry;
use crate::config::Snapshot;
use http::HeaderMap;
use std::net::SocketAddr;
use std::sync::OnceLock;
use weft_trace::exporter::Provider;
use weft_trace::{Context, Kind, Reporter, Sampler, Span, Str};
use weft_xds::pb::envoy::config::core::v3::http_uri;
use weft_xds::pb::envoy::config::trace::v3::{
    tracing::http::ConfigType, zipkin_config, OpenTelemetryConfig, ZipkinConfig,
};
use weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::Tracing as HcmTracing;

/// Zipkin's span endpoint, Envoy's default `collector_endpoint`.
const ZIPKIN_PATH: &str = "/api/v2/spans";

/// Where a listener's spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Collector {
    /// A `host:port` (what weftd sends where Envoy expects a cluster name).
    Address(String),
    /// A cluster of this proxy: its first endpoint.
    Cluster(String),
}

impl Collector {
    fn of(s: &str) -> Collector {
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Collector::Address(s.to_string())
            }
            _ => Collector::Cluster(s.to_string()),
        }
    }
}

/// A listener's tracing, from its connection manager's `tracing`.
#[derive(Debug)]
pub struct Tracing {
    /// The sampling percentage (Envoy's `random_sampling`, 100 when unset).
    pub sampler: Sampler,
    /// The format.
    pub provider: Provider,
    /// The collector.
    pub collector: Collector,
    /// The collector's path.
    pub path: String,
    /// The exporter's reporter, looked up once (on the first sampled request).
    reporter: OnceLock<Option<Reporter>>,
}

impl Tracing {
    /// Reads a connection manager's `tracing`; `None` when it has none or names no provider. A provider
    /// weft does not have, or one it cannot send to, is an error naming the field.
    pub fn from_hcm(t: Option<&HcmTracing>) -> Result<Option<Tracing>, String> {
        let Some(t) = t else { return Ok(None) };
        let Some(p) = &t.provider else {
            return Ok(None);
        };
        let percent = t.random_sampling.as_ref().map_or(100.0, |p| p.value);
        let sampler =
            Sampler::from_percent(percent).map_err(|e| format!("random_sampling: {e}"))?;
        let Some(ConfigType::TypedConfig(any)) = &p.config_type else {
            return Err(format!("provider {:?}: no typed_config", p.name));
        };
        let (provider, collector, path) = match any.type_url.as_str() {
            weft_xds::type_url::ZIPKIN_CONFIG => {
                let z: ZipkinConfig =
                    weft_xds::unpack(any).map_err(|e| format!("provider {:?}: {e}", p.name))?;
                if z.collector_cluster.is_empty() {
                    return Err(format!("provider {:?}: collector_cluster is empty", p.name));
                }
                if z.collector_endpoint_version
                    != zipkin_config::CollectorEndpointVersion::HttpJson as i32
                {
                    return Err(format!(
                        "provider {:?}: collector_endpoint_version: only HTTP_JSON is supported",
                        p.name
                    ));
                }
                let path = match z.collector_endpoint.as_str() {
                    "" => ZIPKIN_PATH.to_string(),
                    e => e.to_string(),
                };
                (Provider::Zipkin, Collector::of(&z.collector_cluster), path)
            }
            weft_xds::type_url::OPENTELEMETRY_CONFIG => {
                let o: OpenTelemetryConfig =
                    weft_xds::unpack(any).map_err(|e| format!("provider {:?}: {e}", p.name))?;
                let Some(uri) = o.http_service.and_then(|h| h.http_uri) else {
                    return Err(format!(
                        "provider {:?}: http_service: only OTLP over HTTP is supported (grpc_service is not)",
                        p.name
                    ));
                };
                let parsed: http::Uri = uri.uri.parse().map_err(|e| {
                    format!("provider {:?}: http_service.http_uri.uri: {e}", p.name)
                })?;
                let cluster = match uri.http_upstream_type {
                    Some(http_uri::HttpUpstreamType::Cluster(c)) if !c.is_empty() => c,
                    _ => parsed.authority().map(|a| a.to_string()).ok_or_else(|| {
                        format!(
                            "provider {:?}: http_service.http_uri: no cluster and no host",
                            p.name
                        )
                    })?,
                };
                (
                    Provider::OpenTelemetry,
                    Collector::of(&cluster),
                    parsed.path().to_string(),
                )
            }
            other => {
                return Err(format!(
                    "provider {:?}: {other} is not supported (envoy.tracers.zipkin and envoy.tracers.opentelemetry are)",
                    p.name
                ))
            }
        };
        if let Collector::Address(a) = &collector {
            weft_trace::exporter::Config::new(provider, &format!("http://{a}{path}"))
                .map_err(|e| format!("provider {:?}: {e}", p.name))?;
        }
        Ok(Some(Tracing {
            sampler,
            provider,
            collector,
            path,
            reporter: OnceLock::new(),
        }))
    }

    /// The collector's URL, now: a cluster's is its first endpoint's.
    pub fn url(&self, snap: &Snapshot) -> Option<String> {
        let authority = match &self.collector {
            Collector::Address(a) => a.clone(),
            Collector::Cluster(c) => snap
                .clusters
                .get(c)?
                .endpoints
                .endpoints()
                .first()?
                .to_string(),
        };
        Some(format!("http://{authority}{}", self.path))
    }

    /// The reporter for this listener's collector (started on first use, shared by every listener that
    /// sends to the same collector); `None` when the collector's cluster has no endpoint.
    fn reporter(&self, t: &Telemetry, snap: &Snapshot) -> Option<Reporter> {
        self.reporter
            .get_or_init(|| t.reporter(self.provider, &self.url(snap)?))
            .clone()
    }
}

/// A sampled request's span in the making.
#[derive(Debug)]
pub struct Traced {
    pub(crate) ctx: Context,
    pub(crate) kind: Kind,
    pub(crate) start_us: u64,
    pub(crate) reporter: Reporter,
    pub(crate) name: String,
    pub(crate) url: String,
    pub(crate) method: http::Method,
    pub(crate) protocol: &'static str,
    pub(crate) request_id: Option<String>,
    pub(crate) user_agent: Option<String>,
    /// The upstream cluster, once routed.
    pub cluster: Option<String>,
    /// The endpoint of the last try.
    pub upstream: Option<SocketAddr>,
}

/// Starts a request's trace on a listener with tracing: reads the incoming context, decides, makes this
/// hop's span id and writes it on the request (which goes upstream with these headers). Returns the
/// span in the making when the request is sampled.
pub(crate) fn start(
    t: &Telemetry,
    snap: &Snapshot,
    cfg: &Tracing,
    kind: Kind,
    parts: &mut http::request::Parts,
) -> Option<Box<Traced>> {
    let start_us = weft_trace::span::now_micros();
    let headers: &mut HeaderMap = &mut parts.headers;
    // The request id first: every hop's sampling draw and the `guid:x-request-id` tag read it.
    if !headers.contains_key(&weft_trace::propagation::X_REQUEST_ID) {
        headers.insert(
            weft_trace::propagation::X_REQUEST_ID,
            crate::http::request_id_header(),
        );
    }
    let incoming = weft_trace::Incoming::extract(headers);
    let ctx = incoming.child(weft_trace::SpanId::random(), cfg.sampler.decide(&incoming));
    weft_trace::inject_with(
        &ctx,
        headers,
        |b| weft_http::slab_cut(|s| s.extend_from_slice(b)),
        weft_http::field_value,
    );
    if !ctx.sampled() {
        return None;
    }
    let reporter = cfg.reporter(t, snap)?;
    let request_id = incoming
        .request_id()
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let authority = crate::http::authority_of(&parts.uri, &parts.headers).unwrap_or("-");
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    Some(Box::new(Traced {
        name: format!("{authority}/*"),
        url: format!("http://{authority}{path}"),
        ctx,
        kind,
        start_us,
        reporter,
        method: parts.method.clone(),
        protocol: match parts.version {
            http::Version::HTTP_2 => "HTTP/2",
            http::Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        },
        request_id,
        user_agent: parts
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        cluster: None,
        upstream: None,
    }))
}

/// What the end of a request adds to its span.
pub(crate) struct End<'a> {
    pub(crate) code: u16,
    pub(crate) flags: &'a str,
    pub(crate) request_bytes: u64,
    pub(crate) response_bytes: u64,
}

impl Traced {
    /// Reports the span.
    pub(crate) fn report(self, t: &Telemetry, end: &End<'_>) {
        let mut span = Span::new(&self.ctx, self.kind, self.name, self.start_us);
        span.duration = weft_trace::span::now_micros().saturating_sub(self.start_us);
        span.local_endpoint = Some(weft_trace::Endpoint::new(
            Some(t.trace_tags.service.clone()),
            None,
        ));
        span.remote_endpoint = self
            .upstream
            .map(|a| weft_trace::Endpoint::new(None, Some(a)));
        span.istio_tags(
            &t.trace_tags.proxy,
            &weft_trace::RequestTags {
                method: self.method.as_str(),
                url: &self.url,
                protocol: self.protocol,
                status: end.code,
                response_flags: end.flags,
                upstream_cluster: self.cluster.as_deref().unwrap_or("-"),
                peer_address: None,
                request_size: end.request_bytes,
                response_size: end.response_bytes,
                request_id: self.request_id.as_deref(),
                user_agent: self.user_agent.as_deref(),
            },
        );
        self.reporter.report(span);
    }
}

/// What every span of this proxy says about it.
#[derive(Debug)]
pub struct TraceTags {
    /// Istio's proxy tags.
    pub proxy: weft_trace::ProxyTags,
    /// The local service, `{app}.{namespace}`.
    pub service: Str,
}
