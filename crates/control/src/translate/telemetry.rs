//! Telemetry rules ([`crate::telemetry::Applied`]) → Envoy's fields: the connection manager's
//! `tracing` (`random_sampling`, `custom_tags`, no `provider` when span reporting is off) and
//! `request_id_extension`, its `access_log` (file loggers, each with Envoy's CEL `extension_filter`
//! when the rule has a filter), and Istio's `istio.stats` filter (HTTP and network), whose config is a
//! `xds.type.v3.TypedStruct` of Istio's stats plugin config: `metrics: [{name, dimensions,
//! tags_to_remove, drop}]`.
//!
//! When no Telemetry rule speaks of tracing or access logs for a side, MeshConfig's settings hold
//! ([`super::tracing`], [`super::access_logs`]); without metric overrides there is no stats filter, so a
//! proxy without Telemetry gets exactly what it got before.

use crate::telemetry::{Applied, MetricRule};
use std::collections::BTreeMap;
use tracing::warn;
use weft_api::MeshConfig;
use weft_xds::pb::envoy::config::accesslog::v3::{
    access_log_filter::FilterSpecifier, extension_filter, AccessLog as XAccessLog, AccessLogFilter,
    ExtensionFilter,
};
use weft_xds::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter;
use weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::Tracing, http_filter, HttpFilter, RequestIdExtension,
};
use weft_xds::pb::envoy::extensions::request_id::uuid::v3::UuidRequestIdConfig;
use weft_xds::pb::envoy::r#type::tracing::v3::{custom_tag, CustomTag};
use weft_xds::pb::google::protobuf::{value::Kind, BoolValue, ListValue, Struct, Value};
use weft_xds::{filter_name, pack, type_url, TypedStruct};

/// The connection manager's tracing for one side: the rules' when some apply, else MeshConfig's.
pub fn tracing(mesh: &MeshConfig, applied: &Applied) -> Option<Tracing> {
    let Some(t) = &applied.tracing else {
        return super::tracing(mesh);
    };
    let provider = match &t.provider {
        Some(name) => match mesh.extension_provider(name) {
            Ok(p) => Some(p),
            Err(e) => {
                warn!(provider = %name, error = %e, "Telemetry tracing provider unusable; no tracing");
                return None;
            }
        },
        None => match mesh.tracing() {
            Ok(Some(m)) => Some(m.provider),
            _ => None,
        },
    };
    // No provider at all: nowhere to report, so no tracing (as Istio).
    let provider = provider?;
    let sampling = t.sampling.unwrap_or_else(|| {
        mesh.tracing()
            .ok()
            .flatten()
            .map_or(weft_api::mesh::DEFAULT_TRACE_SAMPLING, |m| m.sampling)
    });
    let custom_tags = t
        .custom_tags
        .iter()
        .filter_map(|(tag, c)| {
            let r#type = if let Some(l) = &c.literal {
                custom_tag::Type::Literal(custom_tag::Literal {
                    value: l.value.clone(),
                })
            } else if let Some(e) = &c.environment {
                custom_tag::Type::Environment(custom_tag::Environment {
                    name: e.name.clone(),
                    default_value: e.default_value.clone().unwrap_or_default(),
                })
            } else if let Some(h) = &c.header {
                custom_tag::Type::RequestHeader(custom_tag::Header {
                    name: h.name.clone(),
                    default_value: h.default_value.clone().unwrap_or_default(),
                })
            } else {
                return None;
            };
            Some(CustomTag {
                tag: tag.clone(),
                r#type: Some(r#type),
            })
        })
        .collect();
    Some(Tracing {
        random_sampling: Some(weft_xds::pb::envoy::r#type::v3::Percent { value: sampling }),
        // Span reporting off: the connection manager still traces (context is propagated), with no
        // tracer to report to.
        provider: (!t.disable_span_reporting).then(|| super::tracing_provider(&provider)),
        custom_tags,
        ..Default::default()
    })
}

/// The connection manager's `request_id_extension`, when a rule turns off sampling by request id (on
/// is Envoy's default and needs none).
pub fn request_id_extension(applied: &Applied) -> Option<RequestIdExtension> {
    let t = applied.tracing.as_ref()?;
    (!t.use_request_id_for_trace_sampling).then(|| RequestIdExtension {
        typed_config: Some(pack(
            type_url::UUID_REQUEST_ID,
            &UuidRequestIdConfig {
                use_request_id_for_trace_sampling: Some(BoolValue { value: false }),
                ..Default::default()
            },
        )),
    })
}

/// The connection manager's access logs for one side: the rules' when some apply (one file logger per
/// provider not disabled, with its filter), else MeshConfig's.
pub fn access_logs(mesh: &MeshConfig, applied: &Applied) -> Vec<XAccessLog> {
    let Some(logs) = &applied.access_logs else {
        return super::access_logs(mesh);
    };
    let mut out = Vec::new();
    for (name, rule) in logs.iter().filter(|(_, r)| !r.disabled) {
        let file = match mesh.access_log_provider(name) {
            Ok(f) => f,
            Err(e) => {
                warn!(provider = %name, error = %e, "Telemetry access log provider unusable");
                continue;
            }
        };
        let mut log = super::file_access_log(&file.path, file.json, file.format.as_deref());
        log.filter = rule.filter.as_ref().map(|expression| AccessLogFilter {
            filter_specifier: Some(FilterSpecifier::ExtensionFilter(ExtensionFilter {
                name: filter_name::CEL_ACCESS_LOG_FILTER.into(),
                config_type: Some(extension_filter::ConfigType::TypedConfig(pack(
                    type_url::CEL_ACCESS_LOG_FILTER,
                    &ExpressionFilter {
                        expression: expression.clone(),
                        ..Default::default()
                    },
                ))),
            })),
        });
        out.push(log);
    }
    out
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

/// Istio's stats plugin config for the metric overrides: one entry per metric with overrides.
fn stats_config(metrics: &BTreeMap<&'static str, MetricRule>) -> TypedStruct {
    let entries = metrics
        .iter()
        .map(|(name, rule)| {
            let mut fields = BTreeMap::new();
            fields.insert("name".to_string(), string(name));
            if !rule.dimensions.is_empty() {
                let dims = rule
                    .dimensions
                    .iter()
                    .map(|(k, v)| (k.clone(), string(v)))
                    .collect();
                fields.insert(
                    "dimensions".into(),
                    Value {
                        kind: Some(Kind::StructValue(Struct { fields: dims })),
                    },
                );
            }
            if !rule.tags_to_remove.is_empty() {
                let values = rule.tags_to_remove.iter().map(|t| string(t)).collect();
                fields.insert(
                    "tags_to_remove".into(),
                    Value {
                        kind: Some(Kind::ListValue(ListValue { values })),
                    },
                );
            }
            if rule.drop {
                fields.insert(
                    "drop".into(),
                    Value {
                        kind: Some(Kind::BoolValue(true)),
                    },
                );
            }
            Value {
                kind: Some(Kind::StructValue(Struct {
                    fields: fields.into_iter().collect(),
                })),
            }
        })
        .collect();
    let mut fields = BTreeMap::new();
    fields.insert(
        "metrics".to_string(),
        Value {
            kind: Some(Kind::ListValue(ListValue { values: entries })),
        },
    );
    TypedStruct {
        type_url: type_url::ISTIO_STATS_CONFIG.into(),
        value: Some(Struct {
            fields: fields.into_iter().collect(),
        }),
    }
}

/// The `istio.stats` HTTP filter, when the side has metric overrides.
pub fn stats_http_filter(applied: &Applied) -> Option<HttpFilter> {
    if applied.metrics.is_empty() {
        return None;
    }
    Some(HttpFilter {
        name: filter_name::ISTIO_STATS.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack(
            type_url::TYPED_STRUCT,
            &stats_config(&applied.metrics),
        ))),
        ..Default::default()
    })
}

/// The `istio.stats` network filter (before `tcp_proxy`), when the side has metric overrides.
pub fn stats_network_filter(
    applied: &Applied,
) -> Option<weft_xds::pb::envoy::config::listener::v3::Filter> {
    use weft_xds::pb::envoy::config::listener::v3::{filter, Filter};
    if applied.metrics.is_empty() {
        return None;
    }
    Some(Filter {
        name: filter_name::ISTIO_STATS.into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack(
            type_url::TYPED_STRUCT,
            &stats_config(&applied.metrics),
        ))),
    })
}
