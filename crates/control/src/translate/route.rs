//! VirtualService rules → Envoy routes (RDS), one route configuration per service port.

use super::{duration, inbound_cluster_name, outbound_cluster_name};
use crate::model::Model;
use crate::registry::Service;
use weft_api::host::qualify;
use weft_api::networking::virtual_service::{
    HeaderOperations, HttpMatchRequest, HttpRetry, HttpRoute, StringMatch,
};
use weft_api::networking::Percent;
use weft_api::Resource;
use weft_xds::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use weft_xds::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use weft_xds::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use weft_xds::pb::envoy::config::route::v3::route::Action;
use weft_xds::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use weft_xds::pb::envoy::config::route::v3::route_match::PathSpecifier;
use weft_xds::pb::envoy::config::route::v3::weighted_cluster::ClusterWeight;
use weft_xds::pb::envoy::config::route::v3::{
    HeaderMatcher, RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
    WeightedCluster,
};
use weft_xds::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
use weft_xds::pb::envoy::extensions::filters::common::fault::v3::FaultDelay;
use weft_xds::pb::envoy::extensions::filters::http::fault::v3::fault_abort::ErrorType;
use weft_xds::pb::envoy::extensions::filters::http::fault::v3::{FaultAbort, HttpFault};
use weft_xds::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use weft_xds::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher};
use weft_xds::pb::envoy::r#type::v3::fractional_percent::DenominatorType;
use weft_xds::pb::envoy::r#type::v3::FractionalPercent;
use weft_xds::pb::google::protobuf::{BoolValue, UInt32Value};
use weft_xds::{filter_name, pack, type_url};

/// Istio's retry conditions when a route sets none.
pub const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
/// Istio's retry count when a route sets none.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 2;

/// Whether `svc` has an HTTP port `port` (and so a virtual host in route configuration `<port>`).
pub fn serves_http_port(svc: &Service, port: u32) -> bool {
    svc.ports.iter().any(|p| p.number == port && p.is_http())
}

/// The virtual host of `svc` in route configuration `<port>`, for a proxy in `proxy_ns`.
pub fn virtual_host(model: &Model, svc: &Service, proxy_ns: &str, port: u32) -> VirtualHost {
    VirtualHost {
        name: format!("{}:{port}", svc.hostname),
        domains: domains(svc, proxy_ns, port),
        routes: routes_for(model, svc, port),
        ..Default::default()
    }
}

/// Route configuration `<port>`, encoded from its virtual hosts' encodings (so a caller can reuse the
/// encodings of unchanged services). Decodes equal to [`route_configuration`].
pub fn encode_route_configuration(
    port: u32,
    virtual_hosts: impl Iterator<Item = std::sync::Arc<[u8]>>,
) -> Vec<u8> {
    use prost::Message;
    let mut buf = RouteConfiguration {
        name: port.to_string(),
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    }
    .encode_to_vec();
    for vh in virtual_hosts {
        // Field 2 (virtual_hosts), length-delimited: protobuf merges repeated fields in any order.
        prost::encoding::encode_key(2, prost::encoding::WireType::LengthDelimited, &mut buf);
        prost::encoding::encode_varint(vh.len() as u64, &mut buf);
        buf.extend_from_slice(&vh);
    }
    buf
}

/// The route configuration named `<port>` over `services`, for a proxy in `proxy_ns`.
pub fn route_configuration(
    model: &Model,
    services: &[&Service],
    proxy_ns: &str,
    port: u32,
) -> RouteConfiguration {
    let virtual_hosts = services
        .iter()
        .filter(|s| serves_http_port(s, port))
        .map(|svc| virtual_host(model, svc, proxy_ns, port))
        .collect();
    RouteConfiguration {
        name: port.to_string(),
        virtual_hosts,
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    }
}

/// The inline route configuration of an inbound listener: everything to the application.
pub fn inbound(port: u32) -> RouteConfiguration {
    RouteConfiguration {
        name: inbound_cluster_name(port),
        virtual_hosts: vec![VirtualHost {
            name: format!("inbound|http|{port}"),
            domains: vec!["*".into()],
            routes: vec![Route {
                name: "default".into(),
                r#match: Some(prefix_match("/")),
                action: Some(Action::Route(RouteAction {
                    cluster_specifier: Some(ClusterSpecifier::Cluster(inbound_cluster_name(port))),
                    timeout: Some(duration(std::time::Duration::ZERO)),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    }
}

/// Istio's domains: the FQDN everywhere; `name.ns` and `name.ns.svc` for cluster-local services; the bare
/// short name only for proxies in the service's namespace. Each with and without `:port`.
fn domains(svc: &Service, proxy_ns: &str, port: u32) -> Vec<String> {
    let mut names = vec![svc.hostname.clone()];
    if let Some(short) = &svc.short_name {
        if svc.namespace == proxy_ns {
            names.push(short.clone());
        }
        names.push(format!("{short}.{}", svc.namespace));
        names.push(format!("{short}.{}.svc", svc.namespace));
    }
    names
        .into_iter()
        .flat_map(|n| [format!("{n}:{port}"), n])
        .collect()
}

fn prefix_match(prefix: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(PathSpecifier::Prefix(prefix.to_string())),
        ..Default::default()
    }
}

fn routes_for(model: &Model, svc: &Service, port: u32) -> Vec<Route> {
    match model.virtual_services.get(&svc.hostname) {
        Some(vs_res) if vs_res.as_virtual_service().is_some() => {
            virtual_service_routes(model, vs_res, port)
        }
        _ => vec![default_route(model, svc, port)],
    }
}

/// The routes of one VirtualService's HTTP rules, for requests that came to `port` (a sidecar's
/// service port, or a gateway server's port): what sidecars and gateways share.
pub fn virtual_service_routes(model: &Model, vs_res: &Resource, port: u32) -> Vec<Route> {
    let Some(vs) = vs_res.as_virtual_service() else {
        return Vec::new();
    };
    let ns = &vs_res.metadata.namespace;
    let mut out = Vec::new();
    for rule in &vs.http {
        let action = route_action(model, ns, rule, port);
        let matches: Vec<RouteMatch> = if rule.matches.is_empty() {
            vec![prefix_match("/")]
        } else {
            rule.matches
                .iter()
                .filter(|m| m.port.is_none_or(|p| p == port))
                .map(route_match)
                .collect()
        };
        for (i, m) in matches.into_iter().enumerate() {
            let name = rule
                .matches
                .get(i)
                .and_then(|m| m.name.clone())
                .or_else(|| rule.name.clone())
                .unwrap_or_default();
            let mut route = Route {
                name,
                r#match: Some(m),
                action: Some(Action::Route(action.clone())),
                ..Default::default()
            };
            header_edits(&mut route, rule);
            if let Some(fault) = &rule.fault {
                route.typed_per_filter_config.insert(
                    filter_name::FAULT.into(),
                    pack(type_url::HTTP_FAULT, &http_fault(fault)),
                );
            }
            out.push(route);
        }
    }
    out
}

fn default_route(model: &Model, svc: &Service, port: u32) -> Route {
    Route {
        name: "default".into(),
        r#match: Some(prefix_match("/")),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(outbound_cluster_name(
                port,
                "",
                &svc.hostname,
            ))),
            timeout: Some(duration(std::time::Duration::ZERO)),
            retry_policy: retry_policy(model.mesh.default_http_retry_policy.as_ref()),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn string_matcher(m: &StringMatch) -> Option<MatchPattern> {
    if let Some(v) = &m.exact {
        return Some(MatchPattern::Exact(v.clone()));
    }
    if let Some(v) = &m.prefix {
        return Some(MatchPattern::Prefix(v.clone()));
    }
    m.regex.as_ref().map(|v| {
        MatchPattern::SafeRegex(RegexMatcher {
            regex: v.clone(),
            ..Default::default()
        })
    })
}

fn header_matcher(name: &str, m: &StringMatch, invert: bool) -> HeaderMatcher {
    let spec = match string_matcher(m) {
        Some(p) => HeaderMatchSpecifier::StringMatch(StringMatcher {
            match_pattern: Some(p),
            ignore_case: false,
        }),
        None => HeaderMatchSpecifier::PresentMatch(true),
    };
    HeaderMatcher {
        name: name.to_string(),
        invert_match: invert,
        header_match_specifier: Some(spec),
        ..Default::default()
    }
}

fn route_match(m: &HttpMatchRequest) -> RouteMatch {
    let path_specifier = match &m.uri {
        Some(StringMatch { exact: Some(v), .. }) => PathSpecifier::Path(v.clone()),
        Some(StringMatch {
            prefix: Some(v), ..
        }) => PathSpecifier::Prefix(v.clone()),
        Some(StringMatch { regex: Some(v), .. }) => PathSpecifier::SafeRegex(RegexMatcher {
            regex: v.clone(),
            ..Default::default()
        }),
        _ => PathSpecifier::Prefix("/".into()),
    };
    let mut headers: Vec<HeaderMatcher> = Vec::new();
    if let Some(method) = &m.method {
        headers.push(header_matcher(":method", method, false));
    }
    if let Some(authority) = &m.authority {
        headers.push(header_matcher(":authority", authority, false));
    }
    headers.extend(m.headers.iter().map(|(n, sm)| header_matcher(n, sm, false)));
    headers.extend(
        m.without_headers
            .iter()
            .map(|(n, sm)| header_matcher(n, sm, true)),
    );
    RouteMatch {
        path_specifier: Some(path_specifier),
        case_sensitive: m
            .ignore_uri_case
            .filter(|&i| i)
            .map(|_| BoolValue { value: false }),
        headers,
        ..Default::default()
    }
}

fn route_action(model: &Model, ns: &str, rule: &HttpRoute, port: u32) -> RouteAction {
    let weights_given = rule.route.iter().any(|d| d.weight.is_some());
    let mut clusters: Vec<(String, u32)> = rule
        .route
        .iter()
        .filter_map(|d| {
            let host = qualify(&d.destination.host, ns);
            let svc = model.services.get(&host)?;
            let p = svc.port_for(d.destination.port.map(|p| p.number), port);
            let name =
                outbound_cluster_name(p, d.destination.subset.as_deref().unwrap_or(""), &host);
            let weight = match (weights_given, d.weight) {
                (false, _) => 1,
                (true, Some(w)) => u32::try_from(w).unwrap_or(0),
                (true, None) => 0,
            };
            Some((name, weight))
        })
        .filter(|(_, w)| *w > 0 || rule.route.len() == 1)
        .collect();
    let cluster_specifier = if clusters.len() == 1 {
        clusters.pop().map(|(n, _)| ClusterSpecifier::Cluster(n))
    } else {
        Some(ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: clusters
                .into_iter()
                .map(|(name, w)| ClusterWeight {
                    name,
                    weight: Some(UInt32Value { value: w }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }))
    };
    // Istio: with fault injection on a route, its timeout and retries are not applied.
    let faulted = rule.fault.is_some();
    let timeout = match (faulted, rule.timeout) {
        (false, Some(t)) => t.get(),
        _ => std::time::Duration::ZERO,
    };
    let retry = if faulted {
        None
    } else {
        retry_policy(
            rule.retries
                .as_ref()
                .or(model.mesh.default_http_retry_policy.as_ref()),
        )
    };
    RouteAction {
        cluster_specifier,
        timeout: Some(duration(timeout)),
        retry_policy: retry,
        ..Default::default()
    }
}

/// Envoy's retry policy from Istio's; `None` input means Istio's default (2 attempts on connect failures
/// and 503), `attempts: 0` disables retries.
fn retry_policy(r: Option<&HttpRetry>) -> Option<RetryPolicy> {
    let attempts = match r.and_then(|r| r.attempts) {
        Some(a) => u32::try_from(a).unwrap_or(0),
        None => DEFAULT_RETRY_ATTEMPTS,
    };
    if attempts == 0 {
        return None;
    }
    let on = r
        .and_then(|r| r.retry_on.clone())
        .unwrap_or_else(|| DEFAULT_RETRY_ON.to_string());
    let mut conditions: Vec<&str> = Vec::new();
    let mut codes: Vec<u32> = Vec::new();
    for c in on.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        match c.parse::<u32>() {
            Ok(code) => codes.push(code),
            Err(_) => conditions.push(c),
        }
    }
    if r.and_then(|r| r.retry_on.as_ref()).is_none() {
        codes.push(503);
    }
    if !codes.is_empty() && !conditions.contains(&"retriable-status-codes") {
        conditions.push("retriable-status-codes");
    }
    Some(RetryPolicy {
        retry_on: conditions.join(","),
        num_retries: Some(UInt32Value { value: attempts }),
        per_try_timeout: r.and_then(|r| r.per_try_timeout).map(|t| duration(t.get())),
        retriable_status_codes: codes,
        ..Default::default()
    })
}

fn fraction(p: Option<Percent>, legacy: Option<i64>) -> FractionalPercent {
    let value = p
        .map(|p| p.value)
        .or(legacy.map(|v| v as f64))
        .unwrap_or(0.0);
    FractionalPercent {
        numerator: (value * 10_000.0).round().clamp(0.0, 1_000_000.0) as u32,
        denominator: DenominatorType::Million as i32,
    }
}

fn http_fault(f: &weft_api::networking::virtual_service::HttpFaultInjection) -> HttpFault {
    HttpFault {
        delay: f.delay.as_ref().and_then(|d| {
            Some(FaultDelay {
                fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(duration(
                    d.fixed_delay?.get(),
                ))),
                percentage: Some(fraction(d.percentage, d.percent)),
            })
        }),
        abort: f.abort.as_ref().and_then(|a| {
            Some(FaultAbort {
                error_type: Some(ErrorType::HttpStatus(u32::try_from(a.http_status?).ok()?)),
                percentage: Some(fraction(a.percentage, None)),
                ..Default::default()
            })
        }),
        ..Default::default()
    }
}

fn header_options(ops: &HeaderOperations) -> Vec<HeaderValueOption> {
    let set = ops
        .set
        .iter()
        .map(|(k, v)| (k, v, HeaderAppendAction::OverwriteIfExistsOrAdd));
    let add = ops
        .add
        .iter()
        .map(|(k, v)| (k, v, HeaderAppendAction::AppendIfExistsOrAdd));
    set.chain(add)
        .map(|(k, v, action)| HeaderValueOption {
            header: Some(HeaderValue {
                key: k.clone(),
                value: v.clone(),
                ..Default::default()
            }),
            append_action: action as i32,
            ..Default::default()
        })
        .collect()
}

fn header_edits(route: &mut Route, rule: &HttpRoute) {
    let Some(h) = &rule.headers else {
        return;
    };
    if let Some(req) = &h.request {
        route.request_headers_to_add = header_options(req);
        route.request_headers_to_remove = req.remove.clone();
    }
    if let Some(resp) = &h.response {
        route.response_headers_to_add = header_options(resp);
        route.response_headers_to_remove = resp.remove.clone();
    }
}
