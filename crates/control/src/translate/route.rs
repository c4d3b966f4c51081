//! VirtualService rules → Envoy routes (RDS), one route configuration per service port.

use super::{duration, inbound_cluster_name, outbound_cluster_name};
use crate::model::Model;
use crate::registry::Service;
use weft_api::host::qualify;
use weft_api::networking::gateway::qualify_gateway;
use weft_api::networking::virtual_service::{
    grpc_status_code, CorsPolicy, Destination, HeaderOperations, Headers, HttpMatchRequest,
    HttpRedirect, HttpRetry, HttpRewrite, HttpRoute, StringMatch,
};
use weft_api::networking::Percent;
use weft_api::Resource;
use weft_xds::pb::envoy::config::core::v3::data_source::Specifier as DataSourceSpecifier;
use weft_xds::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use weft_xds::pb::envoy::config::core::v3::{
    DataSource, HeaderValue, HeaderValueOption, RuntimeFractionalPercent,
};
use weft_xds::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use weft_xds::pb::envoy::config::route::v3::query_parameter_matcher::QueryParameterMatchSpecifier;
use weft_xds::pb::envoy::config::route::v3::redirect_action::{
    PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier,
};
use weft_xds::pb::envoy::config::route::v3::route::Action;
use weft_xds::pb::envoy::config::route::v3::route_action::{
    ClusterSpecifier, HostRewriteSpecifier, RequestMirrorPolicy,
};
use weft_xds::pb::envoy::config::route::v3::route_match::PathSpecifier;
use weft_xds::pb::envoy::config::route::v3::weighted_cluster::ClusterWeight;
use weft_xds::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy, Route,
    RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
};
use weft_xds::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
use weft_xds::pb::envoy::extensions::filters::common::fault::v3::FaultDelay;
use weft_xds::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy as XdsCorsPolicy;
use weft_xds::pb::envoy::extensions::filters::http::fault::v3::fault_abort::ErrorType;
use weft_xds::pb::envoy::extensions::filters::http::fault::v3::{FaultAbort, HttpFault};
use weft_xds::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use weft_xds::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher,
};
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
        routes: routes_for(model, svc, proxy_ns, port),
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

fn routes_for(model: &Model, svc: &Service, proxy_ns: &str, port: u32) -> Vec<Route> {
    match model.virtual_services.get(&svc.hostname) {
        Some(vs_res) if vs_res.as_virtual_service().is_some() => {
            virtual_service_routes(model, vs_res, port, None, proxy_ns)
        }
        _ => vec![default_route(model, svc, port)],
    }
}

/// The routes of one VirtualService's HTTP rules, for requests that came to `port` (a sidecar's
/// service port, or a gateway server's port): what sidecars and gateways share. `gateway` is the
/// `namespace/name` of the gateway the routes are for, `None` for sidecars (`mesh`): a match that names
/// `gateways` applies only to those. `proxy_ns` is the namespace of the proxies the routes are for: on
/// sidecars, a match with a `sourceNamespace` applies only there (Istio decides this when it
/// translates, too).
pub fn virtual_service_routes(
    model: &Model,
    vs_res: &Resource,
    port: u32,
    gateway: Option<&str>,
    proxy_ns: &str,
) -> Vec<Route> {
    let Some(vs) = vs_res.as_virtual_service() else {
        return Vec::new();
    };
    let ns = &vs_res.metadata.namespace;
    let mut out = Vec::new();
    for rule in &vs.http {
        let action = rule_action(model, ns, rule, port);
        let dest_headers = single_destination_headers(rule);
        let matches: Vec<(Option<&HttpMatchRequest>, RouteMatch)> = if rule.matches.is_empty() {
            vec![(None, prefix_match("/"))]
        } else {
            rule.matches
                .iter()
                .filter(|m| m.port.is_none_or(|p| p == port))
                .filter(|m| match_applies_to(m, ns, gateway))
                .filter(|m| source_namespace_applies(m, gateway, proxy_ns))
                .map(|m| (Some(m), route_match(m)))
                .collect()
        };
        for (m, rm) in matches {
            let name = m
                .and_then(|m| m.name.clone())
                .or_else(|| rule.name.clone())
                .unwrap_or_default();
            let mut action = action.clone();
            if let (Action::Route(a), Some(rw)) = (&mut action, &rule.rewrite) {
                rewrite(a, rw, m);
            }
            let mut route = Route {
                name,
                r#match: Some(rm),
                action: Some(action),
                ..Default::default()
            };
            if let Some(h) = dest_headers {
                header_edits(&mut route, h);
            }
            if let Some(h) = &rule.headers {
                header_edits(&mut route, h);
            }
            if let Some(fault) = &rule.fault {
                route.typed_per_filter_config.insert(
                    filter_name::FAULT.into(),
                    pack(type_url::HTTP_FAULT, &http_fault(fault)),
                );
            }
            if let Some(c) = &rule.cors_policy {
                route.typed_per_filter_config.insert(
                    filter_name::CORS.into(),
                    pack(type_url::CORS_POLICY, &cors_policy(c)),
                );
            }
            out.push(route);
        }
    }
    out
}

/// Whether a match's `sourceNamespace` admits the proxies the routes are for. Istio applies it to
/// sidecars only (a rule bound to gateways must include `mesh` for it to apply), so gateways ignore it.
fn source_namespace_applies(m: &HttpMatchRequest, gateway: Option<&str>, proxy_ns: &str) -> bool {
    gateway.is_some() || m.source_namespace.as_deref().is_none_or(|s| s == proxy_ns)
}

/// Whether a match applies where the routes go: its `gateways` (when it names any) must include this
/// gateway, or `mesh` for sidecars. Without `gateways`, the VirtualService's own binding decides.
fn match_applies_to(m: &HttpMatchRequest, ns: &str, gateway: Option<&str>) -> bool {
    if m.gateways.is_empty() {
        return true;
    }
    m.gateways.iter().any(|g| match gateway {
        None => g == "mesh",
        Some(key) => g != "mesh" && qualify_gateway(g, ns) == key,
    })
}

/// Istio's `rewrite`: `uri` replaces the matched prefix (the whole path after an exact match; after a
/// regex match, the whole path too), `authority` the `Host`, `uriRegexRewrite` every match of a regex.
fn rewrite(a: &mut RouteAction, rw: &HttpRewrite, m: Option<&HttpMatchRequest>) {
    if let Some(uri) = &rw.uri {
        let regex_matched = m.is_some_and(|m| m.uri.as_ref().is_some_and(|u| u.regex.is_some()));
        if regex_matched {
            a.regex_rewrite = Some(RegexMatchAndSubstitute {
                pattern: Some(RegexMatcher {
                    regex: "^.*$".into(),
                    ..Default::default()
                }),
                substitution: uri.clone(),
            });
        } else {
            a.prefix_rewrite = uri.clone();
        }
    }
    if let Some(re) = &rw.uri_regex_rewrite {
        a.regex_rewrite = Some(RegexMatchAndSubstitute {
            pattern: Some(RegexMatcher {
                regex: re.pattern.clone(),
                ..Default::default()
            }),
            substitution: re.rewrite.clone(),
        });
    }
    if let Some(host) = &rw.authority {
        a.host_rewrite_specifier = Some(HostRewriteSpecifier::HostRewriteLiteral(host.clone()));
    }
}

/// The route's action: forward (with mirrors), redirect or answer directly.
fn rule_action(model: &Model, ns: &str, rule: &HttpRoute, port: u32) -> Action {
    if let Some(r) = &rule.redirect {
        return Action::Redirect(redirect_action(r, port));
    }
    if let Some(d) = &rule.direct_response {
        return Action::DirectResponse(DirectResponseAction {
            status: d.status,
            body: d.body.as_ref().and_then(|b| {
                let bytes = b.decoded()?;
                Some(DataSource {
                    specifier: Some(match (&b.string, bytes) {
                        (Some(s), _) if b.bytes.is_none() => {
                            DataSourceSpecifier::InlineString(s.clone())
                        }
                        (_, bytes) => DataSourceSpecifier::InlineBytes(bytes),
                    }),
                    ..Default::default()
                })
            }),
            ..Default::default()
        });
    }
    let mut a = route_action(model, ns, rule, port);
    a.request_mirror_policies = mirror_policies(model, ns, rule, port);
    Action::Route(a)
}

fn redirect_action(r: &HttpRedirect, port: u32) -> RedirectAction {
    let code = match r.redirect_code.unwrap_or(301) {
        302 => RedirectResponseCode::Found,
        303 => RedirectResponseCode::SeeOther,
        307 => RedirectResponseCode::TemporaryRedirect,
        308 => RedirectResponseCode::PermanentRedirect,
        _ => RedirectResponseCode::MovedPermanently,
    };
    // Istio resolves FROM_REQUEST_PORT when it translates: the port the request came to is the
    // route's. FROM_PROTOCOL_DEFAULT (the default) leaves the port to the scheme.
    let port_redirect = match (r.port, r.derive_port.as_deref()) {
        (Some(p), _) => p,
        (None, Some("FROM_REQUEST_PORT")) => port,
        _ => 0,
    };
    RedirectAction {
        host_redirect: r.authority.clone().unwrap_or_default(),
        port_redirect,
        response_code: code as i32,
        scheme_rewrite_specifier: r.scheme.clone().map(SchemeRewriteSpecifier::SchemeRedirect),
        path_rewrite_specifier: match (&r.uri, &r.prefix_rewrite) {
            (Some(u), _) => Some(PathRewriteSpecifier::PathRedirect(u.clone())),
            (None, Some(p)) => Some(PathRewriteSpecifier::PrefixRewrite(p.clone())),
            (None, None) => None,
        },
        ..Default::default()
    }
}

/// `mirror` (with `mirrorPercentage`, or the deprecated `mirrorPercent`; 100% when neither) and
/// `mirrors` (each with its own percentage), to mirror policies on known services.
fn mirror_policies(
    model: &Model,
    ns: &str,
    rule: &HttpRoute,
    port: u32,
) -> Vec<RequestMirrorPolicy> {
    let single = rule.mirror.as_ref().map(|d| {
        let pct = match (rule.mirror_percentage, rule.mirror_percent) {
            (None, None) => 100.0,
            (p, legacy) => p
                .map(|p| p.value)
                .or(legacy.map(|v| v as f64))
                .unwrap_or(0.0),
        };
        (d, pct)
    });
    let many = rule
        .mirrors
        .iter()
        .map(|m| (&m.destination, m.percentage.map_or(100.0, |p| p.value)));
    single
        .into_iter()
        .chain(many)
        .filter_map(|(d, pct)| {
            let cluster = destination_cluster(model, ns, d, port)?;
            Some(RequestMirrorPolicy {
                cluster,
                runtime_fraction: Some(RuntimeFractionalPercent {
                    default_value: Some(fraction(Some(Percent { value: pct }), None)),
                    ..Default::default()
                }),
                trace_sampled: Some(BoolValue { value: false }),
                ..Default::default()
            })
        })
        .collect()
}

/// The outbound cluster of a destination, when its service is known.
fn destination_cluster(model: &Model, ns: &str, d: &Destination, port: u32) -> Option<String> {
    let host = qualify(&d.host, ns);
    let svc = model.services.get(&host)?;
    let p = svc.port_for(d.port.map(|p| p.number), port);
    Some(outbound_cluster_name(
        p,
        d.subset.as_deref().unwrap_or(""),
        &host,
    ))
}

/// Istio's CORS policy as Envoy's cors filter takes it per route.
fn cors_policy(c: &CorsPolicy) -> XdsCorsPolicy {
    let exact = c.allow_origin.iter().map(|o| StringMatch {
        exact: Some(o.clone()),
        ..Default::default()
    });
    let origins = c
        .allow_origins
        .iter()
        .cloned()
        .chain(exact)
        .filter_map(|m| {
            Some(StringMatcher {
                match_pattern: Some(string_matcher(&m)?),
                ignore_case: false,
            })
        })
        .collect();
    XdsCorsPolicy {
        allow_origin_string_match: origins,
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age: c
            .max_age
            .map(|d| d.get().as_secs().to_string())
            .unwrap_or_default(),
        allow_credentials: c.allow_credentials.map(|value| BoolValue { value }),
        forward_not_matching_preflights: Some(BoolValue {
            value: c.unmatched_preflights.as_deref() != Some("IGNORE"),
        }),
        ..Default::default()
    }
}

/// With one destination, its header edits go on the route (before the rule's own, so they apply
/// first, as a weighted cluster's do); several destinations carry theirs on each weighted cluster.
fn single_destination_headers(rule: &HttpRoute) -> Option<&Headers> {
    match rule.route.as_slice() {
        [d] => d.headers.as_ref(),
        _ => None,
    }
}

fn default_route(model: &Model, svc: &Service, port: u32) -> Route {
    let cluster = outbound_cluster_name(port, "", &svc.hostname);
    Route {
        name: "default".into(),
        r#match: Some(prefix_match("/")),
        action: Some(Action::Route(RouteAction {
            hash_policy: super::policy::hash_policy_of_cluster(model, &cluster),
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster)),
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
    if let Some(scheme) = &m.scheme {
        headers.push(header_matcher(":scheme", scheme, false));
    }
    // `{}` tests presence; an empty `exact` matches `?name` and `?name=` (Envoy's empty value).
    let query_parameters = m
        .query_params
        .iter()
        .map(|(name, sm)| QueryParameterMatcher {
            name: name.clone(),
            query_parameter_match_specifier: Some(match string_matcher(sm) {
                Some(p) => QueryParameterMatchSpecifier::StringMatch(StringMatcher {
                    match_pattern: Some(p),
                    ignore_case: false,
                }),
                None => QueryParameterMatchSpecifier::PresentMatch(true),
            }),
        })
        .collect();
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
        query_parameters,
        ..Default::default()
    }
}

fn route_action(model: &Model, ns: &str, rule: &HttpRoute, port: u32) -> RouteAction {
    let weights_given = rule.route.iter().any(|d| d.weight.is_some());
    let mut clusters: Vec<(String, u32, Option<&Headers>)> = rule
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
            Some((name, weight, d.headers.as_ref()))
        })
        .filter(|(_, w, _)| *w > 0 || rule.route.len() == 1)
        .collect();
    // One destination's header edits go on the route (`single_destination_headers`).
    let cluster_specifier = if clusters.len() == 1 {
        clusters.pop().map(|(n, _, _)| ClusterSpecifier::Cluster(n))
    } else {
        Some(ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: clusters
                .into_iter()
                .map(|(name, w, h)| {
                    let mut cw = ClusterWeight {
                        name,
                        weight: Some(UInt32Value { value: w }),
                        ..Default::default()
                    };
                    if let Some(req) = h.and_then(|h| h.request.as_ref()) {
                        cw.request_headers_to_add = header_options(req);
                        cw.request_headers_to_remove = req.remove.clone();
                    }
                    if let Some(resp) = h.and_then(|h| h.response.as_ref()) {
                        cw.response_headers_to_add = header_options(resp);
                        cw.response_headers_to_remove = resp.remove.clone();
                    }
                    cw
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
        hash_policy: super::policy::route_hash_policy(model, cluster_names(&cluster_specifier)),
        cluster_specifier,
        timeout: Some(duration(timeout)),
        retry_policy: retry,
        ..Default::default()
    }
}

/// The clusters a route action sends to.
fn cluster_names(spec: &Option<ClusterSpecifier>) -> impl Iterator<Item = &str> {
    let (one, many) = match spec {
        Some(ClusterSpecifier::Cluster(c)) => (Some(c.as_str()), &[][..]),
        Some(ClusterSpecifier::WeightedClusters(w)) => (None, &w.clusters[..]),
        _ => (None, &[][..]),
    };
    one.into_iter().chain(many.iter().map(|c| c.name.as_str()))
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
            let error_type = match (&a.grpc_status, a.http_status) {
                (Some(g), _) => ErrorType::GrpcStatus(grpc_status_code(g)?),
                (None, Some(h)) => ErrorType::HttpStatus(u32::try_from(h).ok()?),
                (None, None) => return None,
            };
            Some(FaultAbort {
                error_type: Some(error_type),
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

fn header_edits(route: &mut Route, h: &Headers) {
    if let Some(req) = &h.request {
        route.request_headers_to_add.extend(header_options(req));
        route
            .request_headers_to_remove
            .extend(req.remove.iter().cloned());
    }
    if let Some(resp) = &h.response {
        route.response_headers_to_add.extend(header_options(resp));
        route
            .response_headers_to_remove
            .extend(resp.remove.iter().cloned());
    }
}
