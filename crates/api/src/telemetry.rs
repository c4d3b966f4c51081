//! `telemetry.istio.io` Telemetry: per mesh, namespace or workload, which tracing, metrics and access
//! logs the proxies get ([Istio's reference](https://istio.io/latest/docs/reference/config/telemetry/)).
//!
//! This module owns the YAML shape (unknown fields refused), the checks of one resource (ranges, CEL
//! expressions of the subset weft evaluates, tag names) and the names Istio gives its metrics. How the
//! resources of the mesh, a namespace and a workload combine is weftd's (`crates/control`), which also
//! resolves provider names against MeshConfig.

use crate::duration::Duration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// API versions accepted for Telemetry.
pub const TELEMETRY_VERSIONS: [&str; 3] = [
    "telemetry.istio.io/v1",
    "telemetry.istio.io/v1beta1",
    "telemetry.istio.io/v1alpha1",
];

/// `spec` of a Telemetry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Telemetry {
    /// Workloads this applies to; without it (and without a target), the whole namespace, or the mesh
    /// in the root namespace.
    pub selector: Option<Selector>,
    /// A gateway or waypoint to attach to: refused (weft has sidecars only).
    pub target_ref: Option<serde_yaml_ng::Value>,
    /// Several of those: refused likewise.
    #[serde(default)]
    pub target_refs: Vec<serde_yaml_ng::Value>,
    /// Tracing rules.
    #[serde(default)]
    pub tracing: Vec<Tracing>,
    /// Metrics rules.
    #[serde(default)]
    pub metrics: Vec<Metrics>,
    /// Access logging rules.
    #[serde(default)]
    pub access_logging: Vec<AccessLogging>,
}

/// `selector` (Istio's `WorkloadSelector` of the type API).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Selector {
    /// Labels that must all match.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// Which side of a proxy's traffic a rule applies to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkloadMode {
    /// Both (the default).
    #[default]
    ClientAndServer,
    /// Outbound: the proxy as the client's sidecar.
    Client,
    /// Inbound: the proxy as the server's sidecar.
    Server,
}

impl WorkloadMode {
    /// Whether a rule of this mode applies to the `client` (outbound) or server (inbound) side.
    pub fn applies(self, client: bool) -> bool {
        match self {
            WorkloadMode::ClientAndServer => true,
            WorkloadMode::Client => client,
            WorkloadMode::Server => !client,
        }
    }
}

/// `match` of tracing and access logging.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ModeSelector {
    /// The side.
    #[serde(default)]
    pub mode: WorkloadMode,
}

/// `providers[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProviderRef {
    /// A name of MeshConfig's `extensionProviders`, or a built-in (`prometheus`, `envoy`).
    #[serde(default)]
    pub name: String,
}

/// `tracing[]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tracing {
    /// The side.
    #[serde(rename = "match")]
    pub match_: Option<ModeSelector>,
    /// At most one provider (as Istio); none: MeshConfig's `defaultProviders.tracing`.
    #[serde(default)]
    pub providers: Vec<ProviderRef>,
    /// Percent of requests sampled, 0 to 100.
    pub random_sampling_percentage: Option<f64>,
    /// Spans are not reported; trace context is still propagated.
    pub disable_span_reporting: Option<bool>,
    /// Tags added to every span, by tag name.
    #[serde(default)]
    pub custom_tags: BTreeMap<String, CustomTag>,
    /// Whether the sampling draw reads `x-request-id` (so every hop decides alike; Envoy's default).
    pub use_request_id_for_trace_sampling: Option<bool>,
    /// Istio's own span tags (accepted; weft always adds them).
    pub enable_istio_tags: Option<bool>,
    /// Not propagating trace context (refused: not supported by weft yet).
    pub disable_context_propagation: Option<bool>,
}

/// One of `literal`, `environment`, `header` (`formatter` is refused).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CustomTag {
    /// A fixed value.
    pub literal: Option<Literal>,
    /// The proxy's environment variable.
    pub environment: Option<FromName>,
    /// A request header.
    pub header: Option<FromName>,
    /// An access-log format string (not supported by weft yet).
    pub formatter: Option<serde_yaml_ng::Value>,
}

/// `customTags.*.literal`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Literal {
    /// The value.
    #[serde(default)]
    pub value: String,
}

/// `customTags.*.environment` and `customTags.*.header`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FromName {
    /// The variable or header name.
    #[serde(default)]
    pub name: String,
    /// The value when it is absent.
    pub default_value: Option<String>,
}

/// `metrics[]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metrics {
    /// Providers (weft has `prometheus`); none: MeshConfig's `defaultProviders.metrics`.
    #[serde(default)]
    pub providers: Vec<ProviderRef>,
    /// Changes to the standard metrics, applied in order.
    #[serde(default)]
    pub overrides: Vec<MetricsOverrides>,
    /// How often metrics are reported (no effect on Prometheus, which scrapes).
    pub reporting_interval: Option<Duration>,
}

/// `metrics[].overrides[]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricsOverrides {
    /// Which metrics and side; none: every metric, both sides.
    #[serde(rename = "match")]
    pub match_: Option<MetricSelector>,
    /// The metric is not recorded.
    pub disabled: Option<bool>,
    /// Label changes, by label name.
    #[serde(default)]
    pub tag_overrides: BTreeMap<String, TagOverride>,
}

/// `overrides[].match`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricSelector {
    /// One of Istio's standard metrics, or all of them.
    pub metric: Option<IstioMetric>,
    /// A metric by name (weft knows the standard ones: `requests_total`, `istio_requests_total`, …).
    pub custom_metric: Option<String>,
    /// The side.
    #[serde(default)]
    pub mode: WorkloadMode,
}

/// Istio's standard metrics (`MetricSelector.IstioMetric`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum IstioMetric {
    AllMetrics,
    RequestCount,
    RequestDuration,
    RequestSize,
    ResponseSize,
    TcpOpenedConnections,
    TcpClosedConnections,
    TcpSentBytes,
    TcpReceivedBytes,
    GrpcRequestMessages,
    GrpcResponseMessages,
}

impl IstioMetric {
    /// The standard metrics (every one but `ALL_METRICS`) with the name Istio's stats plugin config
    /// gives them (the Prometheus name without `istio_`).
    pub const STANDARD: [(IstioMetric, &'static str); 10] = [
        (IstioMetric::RequestCount, "requests_total"),
        (
            IstioMetric::RequestDuration,
            "request_duration_milliseconds",
        ),
        (IstioMetric::RequestSize, "request_bytes"),
        (IstioMetric::ResponseSize, "response_bytes"),
        (
            IstioMetric::TcpOpenedConnections,
            "tcp_connections_opened_total",
        ),
        (
            IstioMetric::TcpClosedConnections,
            "tcp_connections_closed_total",
        ),
        (IstioMetric::TcpSentBytes, "tcp_sent_bytes_total"),
        (IstioMetric::TcpReceivedBytes, "tcp_received_bytes_total"),
        (IstioMetric::GrpcRequestMessages, "request_messages_total"),
        (IstioMetric::GrpcResponseMessages, "response_messages_total"),
    ];

    /// The stats plugin name of one standard metric; `None` for `ALL_METRICS`.
    pub fn stat_name(self) -> Option<&'static str> {
        IstioMetric::STANDARD
            .iter()
            .find(|(m, _)| *m == self)
            .map(|(_, n)| *n)
    }

    /// A standard metric by `customMetric` name: the stats plugin's (`requests_total`) or the
    /// Prometheus one (`istio_requests_total`).
    pub fn by_name(name: &str) -> Option<IstioMetric> {
        let short = name.strip_prefix("istio_").unwrap_or(name);
        IstioMetric::STANDARD
            .iter()
            .find(|(_, n)| *n == short)
            .map(|(m, _)| *m)
    }
}

/// `tagOverrides.<name>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TagOverride {
    /// `UPSERT` (default) or `REMOVE`.
    #[serde(default)]
    pub operation: TagOperation,
    /// A CEL expression (UPSERT only).
    pub value: Option<String>,
}

/// `tagOverrides.*.operation`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TagOperation {
    /// Add the label, or replace its value.
    #[default]
    Upsert,
    /// Drop the label.
    Remove,
}

/// `accessLogging[]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccessLogging {
    /// The side.
    #[serde(rename = "match")]
    pub match_: Option<ModeSelector>,
    /// Providers (`envoy` or MeshConfig's `envoyFileAccessLog` ones); none: MeshConfig's
    /// `defaultProviders.accessLogging`.
    #[serde(default)]
    pub providers: Vec<ProviderRef>,
    /// Logging off (for these providers).
    pub disabled: Option<bool>,
    /// Only requests for which the expression is true are logged.
    pub filter: Option<Filter>,
}

/// `accessLogging[].filter`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Filter {
    /// A CEL expression.
    #[serde(default)]
    pub expression: String,
}

/// One problem in a Telemetry: the field path as users write it, a text to find its line, and the
/// message. The analyzer turns these into diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `spec.metrics[0].overrides[1].tagOverrides.user.value`.
    pub field: String,
    /// A text on the field's line.
    pub needle: String,
    /// What is wrong.
    pub message: String,
    /// A warning accepts the resource.
    pub warning: bool,
}

fn is_label_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Telemetry {
    /// Checks this resource on its own.
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut p = |field: String, needle: &str, message: String| {
            out.push(Problem {
                field,
                needle: needle.to_string(),
                message,
                warning: false,
            })
        };
        if self.target_ref.is_some() || !self.target_refs.is_empty() {
            let f = if self.target_ref.is_some() {
                "targetRef"
            } else {
                "targetRefs"
            };
            p(
                format!("spec.{f}"),
                f,
                "targetRef attaches a Telemetry to a gateway or waypoint, which weft does not have; select sidecars with selector.matchLabels".into(),
            );
        }
        if let Some(s) = &self.selector {
            if s.match_labels.is_empty() {
                p(
                    "spec.selector.matchLabels".into(),
                    "selector",
                    "a selector needs at least one label (leave selector out to apply to the namespace)".into(),
                );
            }
        }
        for (i, t) in self.tracing.iter().enumerate() {
            let f = format!("spec.tracing[{i}]");
            if t.providers.len() > 1 {
                p(
                    format!("{f}.providers"),
                    "providers",
                    "only one tracing provider can be given (as in Istio)".into(),
                );
            }
            check_provider_names(&mut p, &f, &t.providers);
            if let Some(s) = t.random_sampling_percentage {
                if !(0.0..=100.0).contains(&s) || s.is_nan() {
                    p(
                        format!("{f}.randomSamplingPercentage"),
                        "randomSamplingPercentage",
                        format!("{s} is not a percentage from 0 to 100"),
                    );
                }
            }
            if t.disable_context_propagation == Some(true) {
                p(
                    format!("{f}.disableContextPropagation"),
                    "disableContextPropagation",
                    "not supported by weft yet".into(),
                );
            }
            for (name, tag) in &t.custom_tags {
                let tf = format!("{f}.customTags.{name}");
                let key = format!("{name}:");
                let name = key.as_str();
                if name.is_empty() {
                    p(tf.clone(), "customTags", "a tag name is required".into());
                }
                let set = [
                    tag.literal.is_some(),
                    tag.environment.is_some(),
                    tag.header.is_some(),
                    tag.formatter.is_some(),
                ]
                .iter()
                .filter(|b| **b)
                .count();
                if set != 1 {
                    p(
                        tf.clone(),
                        name,
                        "give exactly one of literal, environment, header".into(),
                    );
                }
                if tag.formatter.is_some() {
                    p(
                        format!("{tf}.formatter"),
                        "formatter",
                        "not supported by weft yet (use literal, environment or header)".into(),
                    );
                }
                if let Some(e) = &tag.environment {
                    if e.name.is_empty() {
                        p(
                            format!("{tf}.environment.name"),
                            name,
                            "a variable name is required".into(),
                        );
                    }
                }
                if let Some(h) = &tag.header {
                    if !is_header_name(&h.name) {
                        p(
                            format!("{tf}.header.name"),
                            name,
                            format!("{:?} is not a header name", h.name),
                        );
                    }
                }
            }
        }
        for (i, m) in self.metrics.iter().enumerate() {
            let f = format!("spec.metrics[{i}]");
            check_provider_names(&mut p, &f, &m.providers);
            for (j, o) in m.overrides.iter().enumerate() {
                let of = format!("{f}.overrides[{j}]");
                if let Some(sel) = &o.match_ {
                    match (&sel.metric, &sel.custom_metric) {
                        (Some(_), Some(_)) => p(
                            format!("{of}.match"),
                            "customMetric",
                            "give metric or customMetric, not both".into(),
                        ),
                        (None, Some(c)) if IstioMetric::by_name(c).is_none() => p(
                            format!("{of}.match.customMetric"),
                            c,
                            format!(
                                "{c:?} is not a metric weft records (custom metric definitions are not supported by weft yet; weft knows {})",
                                IstioMetric::STANDARD.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", ")
                            ),
                        ),
                        _ => {}
                    }
                }
                for (tag, t) in &o.tag_overrides {
                    let tf = format!("{of}.tagOverrides.{tag}");
                    let key = format!("{tag}:");
                    if !is_label_name(tag) {
                        p(
                            tf.clone(),
                            &key,
                            format!(
                                "{tag:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"
                            ),
                        );
                    }
                    match (t.operation, t.value.as_deref()) {
                        (TagOperation::Upsert, None | Some("")) => p(
                            format!("{tf}.value"),
                            &key,
                            "UPSERT needs a value (a CEL expression)".into(),
                        ),
                        (TagOperation::Upsert, Some(v)) => {
                            if let Err(e) = weft_cel::parse(v) {
                                p(
                                    format!("{tf}.value"),
                                    v,
                                    format!("CEL expression {v:?} {e}"),
                                );
                            }
                        }
                        (TagOperation::Remove, _) => {}
                    }
                }
            }
        }
        for (i, a) in self.access_logging.iter().enumerate() {
            let f = format!("spec.accessLogging[{i}]");
            check_provider_names(&mut p, &f, &a.providers);
            if let Some(filter) = &a.filter {
                if let Err(e) = weft_cel::parse(&filter.expression) {
                    p(
                        format!("{f}.filter.expression"),
                        "expression",
                        format!("CEL expression {:?} {e}", filter.expression),
                    );
                }
            }
        }
        for (i, m) in self.metrics.iter().enumerate() {
            if m.reporting_interval.is_some() {
                out.push(Problem {
                    field: format!("spec.metrics[{i}].reportingInterval"),
                    needle: "reportingInterval".into(),
                    message: "no effect: weft's metrics are scraped by Prometheus".into(),
                    warning: true,
                });
            }
        }
        out
    }

    /// The selector's labels, when it has some.
    pub fn match_labels(&self) -> Option<&BTreeMap<String, String>> {
        self.selector.as_ref().map(|s| &s.match_labels)
    }
}

fn check_provider_names(
    p: &mut impl FnMut(String, &str, String),
    f: &str,
    providers: &[ProviderRef],
) {
    for (k, pr) in providers.iter().enumerate() {
        if pr.name.is_empty() {
            p(
                format!("{f}.providers[{k}].name"),
                "providers",
                "a provider name is required".into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::parse::parse_file;

    const HEAD: &str = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: t\n  namespace: istio-system\nspec:\n";

    fn problems(spec: &str) -> Vec<String> {
        let text = format!("{HEAD}{spec}");
        let p = parse_file("t.yaml", &text);
        let mut out: Vec<String> = p.diagnostics.iter().map(|d| d.to_string()).collect();
        for r in &p.resources {
            out.extend(crate::analyze::validate(r).iter().map(|d| d.to_string()));
        }
        out
    }

    #[test]
    fn accepts_istios_examples_in_every_version() {
        let spec = "  selector:\n    matchLabels: {app: reviews}\n  tracing:\n  - match: {mode: SERVER}\n    providers: [{name: zipkin}]\n    randomSamplingPercentage: 12.5\n    disableSpanReporting: false\n    useRequestIdForTraceSampling: true\n    customTags:\n      team: {literal: {value: a}}\n      pod: {environment: {name: POD_NAME, defaultValue: x}}\n      user: {header: {name: x-user}}\n  metrics:\n  - providers: [{name: prometheus}]\n    overrides:\n    - match: {metric: REQUEST_SIZE}\n      disabled: true\n    - match: {metric: ALL_METRICS, mode: CLIENT}\n      tagOverrides:\n        request_protocol: {operation: REMOVE}\n        user: {value: \"request.headers['x-user']\"}\n    - match: {customMetric: istio_requests_total}\n      tagOverrides:\n        host: {value: request.host}\n  accessLogging:\n  - providers: [{name: envoy}]\n    filter: {expression: 'response.code >= 400'}\n  - match: {mode: CLIENT}\n    disabled: true\n";
        for v in super::TELEMETRY_VERSIONS {
            let text = format!("{HEAD}{spec}").replace("telemetry.istio.io/v1", v);
            let p = parse_file("t.yaml", &text);
            assert!(p.diagnostics.is_empty(), "{v}: {:?}", p.diagnostics);
            let r = &p.resources[0];
            assert!(crate::analyze::validate(r).is_empty(), "{v}");
            let t = r.as_telemetry().expect("telemetry");
            assert_eq!(t.tracing[0].random_sampling_percentage, Some(12.5));
            assert_eq!(t.metrics[0].overrides.len(), 3);
        }
    }

    #[test]
    fn each_problem_names_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "unknown field",
                "  tracing:\n  - randomSampling: 5\n",
                "t.yaml:8: Telemetry istio-system/t: spec.tracing[0].randomSampling: [IST0106] unknown field (known fields: match, providers, randomSamplingPercentage, disableSpanReporting, customTags, useRequestIdForTraceSampling, enableIstioTags, disableContextPropagation)",
            ),
            (
                "unknown metric",
                "  metrics:\n  - overrides:\n    - match: {metric: REQUEST_BYTES}\n",
                "t.yaml:9: Telemetry istio-system/t: spec.metrics[0].overrides[0].match.metric: [IST0106] unknown variant `REQUEST_BYTES`, expected one of `ALL_METRICS`, `REQUEST_COUNT`, `REQUEST_DURATION`, `REQUEST_SIZE`, `RESPONSE_SIZE`, `TCP_OPENED_CONNECTIONS`, `TCP_CLOSED_CONNECTIONS`, `TCP_SENT_BYTES`, `TCP_RECEIVED_BYTES`, `GRPC_REQUEST_MESSAGES`, `GRPC_RESPONSE_MESSAGES`",
            ),
            (
                "bad mode",
                "  accessLogging:\n  - match: {mode: BOTH}\n",
                "t.yaml:8: Telemetry istio-system/t: spec.accessLogging[0].match.mode: [IST0106] unknown variant `BOTH`, expected one of `CLIENT_AND_SERVER`, `CLIENT`, `SERVER`",
            ),
            (
                "bad operation",
                "  metrics:\n  - overrides:\n    - tagOverrides:\n        a: {operation: DELETE}\n",
                "t.yaml:10: Telemetry istio-system/t: spec.metrics[0].overrides[0].tagOverrides.a.operation: [IST0106] unknown variant `DELETE`, expected `UPSERT` or `REMOVE`",
            ),
            (
                "sampling out of range",
                "  tracing:\n  - randomSamplingPercentage: 101\n",
                "t.yaml:8: Telemetry istio-system/t: spec.tracing[0].randomSamplingPercentage: 101 is not a percentage from 0 to 100",
            ),
            (
                "target ref",
                "  targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: gw}\n",
                "t.yaml:7: Telemetry istio-system/t: spec.targetRef: targetRef attaches a Telemetry to a gateway or waypoint, which weft does not have; select sidecars with selector.matchLabels",
            ),
            (
                "filter outside the subset",
                "  accessLogging:\n  - filter:\n      expression: size(request.path) > 3\n",
                "t.yaml:9: Telemetry istio-system/t: spec.accessLogging[0].filter.expression: CEL expression \"size(request.path) > 3\" at offset 0: function size() is not supported (weft supports has, string, int, and the methods startsWith, endsWith, contains)",
            ),
            (
                "tag value outside the subset",
                "  metrics:\n  - overrides:\n    - tagOverrides:\n        user: {value: request.user}\n",
                "t.yaml:10: Telemetry istio-system/t: spec.metrics[0].overrides[0].tagOverrides.user.value: CEL expression \"request.user\" at offset 0: unknown attribute \"request.user\" (weft supports request.method, request.path, request.url_path, request.host, request.scheme, request.protocol, request.id, request.useragent, request.referer, response.code, response.grpc_status, response.flags, source.address, source.port, destination.address, destination.port, upstream.address, upstream.port, connection.mtls, xds.cluster_name, request.headers['name'], response.headers['name'])",
            ),
            (
                "upsert without value",
                "  metrics:\n  - overrides:\n    - tagOverrides:\n        user: {operation: UPSERT}\n",
                "t.yaml:10: Telemetry istio-system/t: spec.metrics[0].overrides[0].tagOverrides.user.value: UPSERT needs a value (a CEL expression)",
            ),
            (
                "bad label name",
                "  metrics:\n  - overrides:\n    - tagOverrides:\n        x-user: {operation: REMOVE}\n",
                "t.yaml:10: Telemetry istio-system/t: spec.metrics[0].overrides[0].tagOverrides.x-user: \"x-user\" is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)",
            ),
            (
                "unknown custom metric",
                "  metrics:\n  - overrides:\n    - match: {customMetric: my_metric}\n",
                "t.yaml:9: Telemetry istio-system/t: spec.metrics[0].overrides[0].match.customMetric: \"my_metric\" is not a metric weft records (custom metric definitions are not supported by weft yet; weft knows requests_total, request_duration_milliseconds, request_bytes, response_bytes, tcp_connections_opened_total, tcp_connections_closed_total, tcp_sent_bytes_total, tcp_received_bytes_total, request_messages_total, response_messages_total)",
            ),
            (
                "two tracing providers",
                "  tracing:\n  - providers: [{name: a}, {name: b}]\n",
                "t.yaml:8: Telemetry istio-system/t: spec.tracing[0].providers: only one tracing provider can be given (as in Istio)",
            ),
            (
                "two kinds of custom tag",
                "  tracing:\n  - customTags:\n      t: {literal: {value: a}, header: {name: x}}\n",
                "t.yaml:9: Telemetry istio-system/t: spec.tracing[0].customTags.t: give exactly one of literal, environment, header",
            ),
            (
                "empty selector",
                "  selector: {matchLabels: {}}\n",
                "t.yaml:7: Telemetry istio-system/t: spec.selector.matchLabels: a selector needs at least one label (leave selector out to apply to the namespace)",
            ),
            (
                "reporting interval",
                "  metrics:\n  - reportingInterval: 5s\n",
                "t.yaml:8: Telemetry istio-system/t: spec.metrics[0].reportingInterval: warning: no effect: weft's metrics are scraped by Prometheus",
            ),
        ];
        for (name, spec, want) in cases {
            assert_eq!(problems(spec), vec![want.to_string()], "case {name}");
        }
    }

    #[test]
    fn networking_versions_do_not_serve_telemetry() {
        let text = format!("{HEAD}  tracing: []\n")
            .replace("telemetry.istio.io/v1", "networking.istio.io/v1");
        let p = parse_file("t.yaml", &text);
        assert_eq!(
            p.diagnostics[0].to_string(),
            "t.yaml:1: Telemetry istio-system/t: apiVersion: [IST0106] apiVersion \"networking.istio.io/v1\" does not serve Telemetry (use one of telemetry.istio.io/v1, telemetry.istio.io/v1beta1, telemetry.istio.io/v1alpha1)"
        );
    }
}
