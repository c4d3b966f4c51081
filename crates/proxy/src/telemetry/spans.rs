//! Distributed tracing (`SPEC.md` §3.3): a listener whose connection manager has `tracing` propagates
//! the trace context of each request and reports a span per sampled request (a server span inbound, a
//! client span outbound) to its collector, through one exporter per collector (weft-trace).
//!
//! `tracing` without a `provider` (what weftd sends for the Telemetry API's `disableSpanReporting`)
//! still propagates the context, sampling decision included; no span is made or reported. Its
//! `custom_tags` (literal, environment variable, request header, each with Envoy's semantics) are
//! added to every span.

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
use weft_xds::pb::envoy::r#type::tracing::v3::{custom_tag, CustomTag as XCustomTag};

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

/// One of a listener's custom span tags (Envoy's `custom_tags`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomTag {
    /// A fixed value.
    Literal(Str),
    /// The proxy's environment variable `name` (read at startup), else `default`.
    Environment {
        /// The variable.
        name: String,
        /// The value when it is not set.
        default: Str,
    },
    /// The request header `name`, else `default`.
    Header {
        /// The header.
        name: http::HeaderName,
        /// The value when the request has none.
        default: Str,
    },
}

/// A listener's tracing, from its connection manager's `tracing`.
#[derive(Debug)]
pub struct Tracing {
    /// The sampling percentage (Envoy's `random_sampling`, 100 when unset).
    pub sampler: Sampler,
    /// Where spans go; `None`: the context is propagated and no span reported.
    pub report: Option<Report>,
    /// Tags added to every span, by tag name.
    pub custom_tags: Vec<(Str, CustomTag)>,
    /// The tags that are the same in every span (literals and environment variables), resolved on
    /// the first sampled request.
    fixed_tags: OnceLock<Vec<(Str, Str)>>,
}

/// Where a listener's spans go.
#[derive(Debug)]
pub struct Report {
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
    /// Reads a connection manager's `tracing`; `None` when it has none. Without a `provider`, the
    /// context is propagated and no span is reported. A provider weft does not have, one it cannot
    /// send to, or a custom tag it cannot read is an error naming the field.
    pub fn from_hcm(t: Option<&HcmTracing>) -> Result<Option<Tracing>, String> {
        let Some(t) = t else { return Ok(None) };
        // Envoy's default when `random_sampling` is absent; weftd always sends one (MeshConfig's
        // sampling, Istio's 1 % by default, or the Telemetry API's randomSamplingPercentage).
        let percent = t.random_sampling.as_ref().map_or(100.0, |p| p.value);
        let sampler =
            Sampler::from_percent(percent).map_err(|e| format!("random_sampling: {e}"))?;
        let custom_tags = t
            .custom_tags
            .iter()
            .enumerate()
            .map(|(i, c)| custom_tag(i, c))
            .collect::<Result<_, _>>()?;
        let report = match &t.provider {
            Some(p) => Some(Report::from_provider(p)?),
            None => None,
        };
        Ok(Some(Tracing {
            sampler,
            report,
            custom_tags,
            fixed_tags: OnceLock::new(),
        }))
    }

    /// The literal and environment tags, resolved once with the proxy's environment.
    fn fixed_tags(&self, t: &Telemetry) -> &[(Str, Str)] {
        self.fixed_tags.get_or_init(|| {
            self.custom_tags
                .iter()
                .filter_map(|(k, c)| {
                    let v = match c {
                        CustomTag::Literal(v) => v.clone(),
                        CustomTag::Environment { name, default } => t
                            .environment(name)
                            .map_or_else(|| default.clone(), Str::copy),
                        CustomTag::Header { .. } => return None,
                    };
                    // Envoy sets no tag whose value is empty.
                    (!v.is_empty()).then(|| (k.clone(), v))
                })
                .collect()
        })
    }
}

/// `custom_tags[i]`: literal, environment or request header (metadata tags are refused).
fn custom_tag(i: usize, c: &XCustomTag) -> Result<(Str, CustomTag), String> {
    if c.tag.is_empty() {
        return Err(format!("custom_tags[{i}].tag: empty"));
    }
    let what = format!("custom_tags[{i}] {:?}", c.tag);
    let tag = match &c.r#type {
        Some(custom_tag::Type::Literal(l)) => CustomTag::Literal(Str::copy(&l.value)),
        Some(custom_tag::Type::Environment(e)) => {
            if e.name.is_empty() {
                return Err(format!("{what}: environment.name: empty"));
            }
            CustomTag::Environment {
                name: e.name.clone(),
                default: Str::copy(&e.default_value),
            }
        }
        Some(custom_tag::Type::RequestHeader(h)) => CustomTag::Header {
            name: http::HeaderName::from_bytes(h.name.to_ascii_lowercase().as_bytes()).map_err(
                |_| {
                    format!(
                        "{what}: request_header.name: {:?} is not a header name",
                        h.name
                    )
                },
            )?,
            default: Str::copy(&h.default_value),
        },
        Some(custom_tag::Type::Metadata(_) | custom_tag::Type::Value(_)) => {
            return Err(format!(
                "{what}: only literal, environment and request_header tags are supported"
            ))
        }
        None => return Err(format!("{what}: no type")),
    };
    Ok((Str::copy(&c.tag), tag))
}

impl Report {
    fn from_provider(
        p: &weft_xds::pb::envoy::config::trace::v3::tracing::Http,
    ) -> Result<Report, String> {
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
        Ok(Report {
            provider,
            collector,
            path,
            reporter: OnceLock::new(),
        })
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
    /// The listener's custom tags, with their values for this request.
    pub(crate) custom_tags: Vec<(Str, Str)>,
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
    let reporter = cfg.report.as_ref()?.reporter(t, snap)?;
    let mut custom_tags = cfg.fixed_tags(t).to_vec();
    for (k, c) in &cfg.custom_tags {
        if let CustomTag::Header { name, default } = c {
            let v = match parts.headers.get(name).and_then(|v| v.to_str().ok()) {
                Some(v) => Str::copy(v),
                None => default.clone(),
            };
            if !v.is_empty() {
                custom_tags.push((k.clone(), v));
            }
        }
    }
    let request_id = incoming
        .request_id()
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let authority = crate::http::authority_of(&parts.uri, &parts.headers).unwrap_or("-");
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    // Named as Istio's route decorators name them, `<service host>:<port>/*`: inbound, the service the
    // authority names (a client span is renamed by its cluster when it reports).
    let name = match (kind, crate::http::port_of(authority)) {
        (Kind::Server, Some(port)) => {
            let service = t.inbound_service(Some(authority));
            if service.host == super::peer::UNKNOWN {
                format!("{authority}/*")
            } else {
                format!("{}:{port}/*", service.host)
            }
        }
        _ => format!("{authority}/*"),
    };
    Some(Box::new(Traced {
        name,
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
        custom_tags,
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
        let name = match self.cluster.as_deref().and_then(operation) {
            Some(n) => n,
            None => self.name,
        };
        let mut span = Span::new(&self.ctx, self.kind, name, self.start_us);
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
        for (k, v) in self.custom_tags {
            span.tag(k, v);
        }
        self.reporter.report(span);
    }
}

/// The operation name of a request sent to an outbound cluster (`outbound|<port>|<subset>|<host>`):
/// `<host>:<port>/*`, as Istio's outbound route decorators have it.
fn operation(cluster: &str) -> Option<String> {
    let mut f = cluster.strip_prefix("outbound|")?.splitn(3, '|');
    let (port, _subset, host) = (f.next()?, f.next()?, f.next()?);
    (!host.is_empty() && !port.is_empty()).then(|| format!("{host}:{port}/*"))
}

/// What every span of this proxy says about it.
#[derive(Debug)]
pub struct TraceTags {
    /// Istio's proxy tags.
    pub proxy: weft_trace::ProxyTags,
    /// The local service, `{app}.{namespace}`.
    pub service: Str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_xds::pb::envoy::r#type::tracing::v3::{custom_tag, CustomTag as X};

    fn telemetry() -> Telemetry {
        let id = weft_xds::node::ProxyIdentity {
            workload: "reviews-v1".into(),
            namespace: "default".into(),
            ..Default::default()
        };
        let env = [("POD_ZONE".to_string(), "zone-a".to_string())];
        Telemetry::new(&id, "Kubernetes")
            .with_environment(crate::telemetry::Environment(env.into_iter().collect()))
    }

    fn hcm(percent: f64, tags: Vec<X>) -> HcmTracing {
        HcmTracing {
            random_sampling: Some(weft_xds::pb::envoy::r#type::v3::Percent { value: percent }),
            custom_tags: tags,
            ..Default::default()
        }
    }

    /// A listener's tracing whose spans go to a reporter that drops them (the test reads `Traced`).
    fn reporting(h: &HcmTracing) -> Tracing {
        let mut t = Tracing::from_hcm(Some(h)).expect("valid").expect("tracing");
        t.report = Some(Report {
            provider: Provider::Zipkin,
            collector: Collector::Address("127.0.0.1:9".into()),
            path: ZIPKIN_PATH.into(),
            reporter: OnceLock::from(Some(Reporter::disabled())),
        });
        t
    }

    fn request(headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().uri("http://reviews:9080/r");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request").into_parts().0
    }

    /// The sampled flag written on the request (W3C's last two digits).
    fn sampled_flag(parts: &http::request::Parts) -> String {
        let tp = parts.headers.get("traceparent").expect("traceparent");
        tp.to_str().expect("ascii")[53..].to_string()
    }

    #[test]
    fn sampling_zero_and_a_hundred_percent() {
        let (t, snap) = (telemetry(), Snapshot::default());
        for (percent, sampled) in [(0.0, false), (100.0, true)] {
            let cfg = reporting(&hcm(percent, vec![]));
            for _ in 0..50 {
                let mut parts = request(&[]);
                let traced = start(&t, &snap, &cfg, Kind::Server, &mut parts);
                assert_eq!(traced.is_some(), sampled, "{percent} %");
                assert_eq!(sampled_flag(&parts), if sampled { "01" } else { "00" });
            }
        }
        // Absent, Envoy's default: every request.
        let mut h = hcm(0.0, vec![]);
        h.random_sampling = None;
        let cfg = reporting(&h);
        assert!(start(&t, &snap, &cfg, Kind::Server, &mut request(&[])).is_some());
        // A caller's decision wins over 0 %.
        let cfg = reporting(&hcm(0.0, vec![]));
        let mut parts = request(&[("x-b3-sampled", "1")]);
        assert!(start(&t, &snap, &cfg, Kind::Server, &mut parts).is_some());
    }

    #[test]
    fn spans_are_named_by_service_host_and_port() {
        let (t, snap) = (telemetry(), Snapshot::default());
        let cfg = reporting(&hcm(100.0, vec![]));
        // Inbound, the service the authority names, in the proxy's namespace.
        let traced = start(&t, &snap, &cfg, Kind::Server, &mut request(&[])).expect("sampled");
        assert_eq!(traced.name, "reviews.default.svc.cluster.local:9080/*");
        // Outbound, the cluster's service, known when the span reports.
        assert_eq!(
            operation("outbound|9080|v2|reviews.prod.svc.cluster.local").as_deref(),
            Some("reviews.prod.svc.cluster.local:9080/*")
        );
        for other in ["inbound|9080||", "outbound|9080||", "BlackHoleCluster"] {
            assert_eq!(operation(other), None, "{other}");
        }
    }

    #[test]
    fn without_a_provider_the_context_still_propagates() {
        let (t, snap) = (telemetry(), Snapshot::default());
        let cfg = Tracing::from_hcm(Some(&hcm(100.0, vec![])))
            .expect("valid")
            .expect("tracing");
        assert!(cfg.report.is_none());
        let mut parts = request(&[]);
        assert!(start(&t, &snap, &cfg, Kind::Client, &mut parts).is_none());
        assert_eq!(
            sampled_flag(&parts),
            "01",
            "sampled, propagated, not reported"
        );
        assert!(parts.headers.contains_key("x-b3-traceid"));
    }

    #[test]
    fn span_tags_it_cannot_read_are_refused_naming_them() {
        let one = |t: Option<custom_tag::Type>, name: &str| {
            hcm(
                1.0,
                vec![X {
                    tag: name.into(),
                    r#type: t,
                }],
            )
        };
        let cases = [
            (
                one(Some(custom_tag::Type::Metadata(Default::default())), "k"),
                "custom_tags[0] \"k\": only literal, environment and request_header tags are supported",
            ),
            (
                one(
                    Some(custom_tag::Type::RequestHeader(custom_tag::Header {
                        name: "a b".into(),
                        default_value: String::new(),
                    })),
                    "k",
                ),
                "custom_tags[0] \"k\": request_header.name: \"a b\" is not a header name",
            ),
            (
                one(Some(custom_tag::Type::Environment(Default::default())), "k"),
                "custom_tags[0] \"k\": environment.name: empty",
            ),
            (one(None, "k"), "custom_tags[0] \"k\": no type"),
            (
                one(
                    Some(custom_tag::Type::Literal(custom_tag::Literal {
                        value: "v".into(),
                    })),
                    "",
                ),
                "custom_tags[0].tag: empty",
            ),
            (hcm(100.5, vec![]), "random_sampling: trace sampling percentage 100.5 is not between 0 and 100"),
        ];
        for (h, want) in cases {
            let e = Tracing::from_hcm(Some(&h)).expect_err(want);
            assert_eq!(e, want);
        }
    }

    #[test]
    fn custom_tags_literal_header_and_environment() {
        let tag = |k: &str, t: custom_tag::Type| X {
            tag: k.into(),
            r#type: Some(t),
        };
        let header = |name: &str, default: &str| {
            custom_tag::Type::RequestHeader(custom_tag::Header {
                name: name.into(),
                default_value: default.into(),
            })
        };
        let env = |name: &str, default: &str| {
            custom_tag::Type::Environment(custom_tag::Environment {
                name: name.into(),
                default_value: default.into(),
            })
        };
        let cfg = reporting(&hcm(
            100.0,
            vec![
                tag(
                    "team",
                    custom_tag::Type::Literal(custom_tag::Literal {
                        value: "blue".into(),
                    }),
                ),
                tag("user", header("End-User", "anonymous")),
                tag("agent", header("user-agent", "")),
                tag("zone", env("POD_ZONE", "none")),
                tag("region", env("POD_REGION", "eu")),
                tag("rack", env("POD_RACK", "")),
            ],
        ));
        let (t, snap) = (telemetry(), Snapshot::default());
        let tags = |parts: &mut http::request::Parts| -> Vec<(String, String)> {
            let traced = start(&t, &snap, &cfg, Kind::Server, parts).expect("sampled");
            let mut v: Vec<_> = traced
                .custom_tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            v.sort();
            v
        };
        let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        // Header present; the default when absent; no tag when absent without a default (Envoy
        // sets no empty tag); environment read at startup, else its default.
        assert_eq!(
            tags(&mut request(&[
                ("end-user", "jason"),
                ("user-agent", "curl")
            ])),
            pairs(&[
                ("agent", "curl"),
                ("region", "eu"),
                ("team", "blue"),
                ("user", "jason"),
                ("zone", "zone-a")
            ])
        );
        assert_eq!(
            tags(&mut request(&[])),
            pairs(&[
                ("region", "eu"),
                ("team", "blue"),
                ("user", "anonymous"),
                ("zone", "zone-a")
            ])
        );
    }
}
