//! Validation: each resource on its own, then the set as a whole (references between resources).
//! Errors refuse a resource; warnings accept it and tell the user what weft does not enforce yet.

use crate::codes;
use crate::diagnostic::{Diagnostic, Severity};
use crate::host::qualify;
use crate::networking::gateway::{qualify_gateway, ServerHost};
use crate::networking::sidecar::CaptureMode;
use crate::networking::virtual_service::{
    grpc_status_code, CorsPolicy, Destination, HeaderOperations, HttpDirectResponse, HttpRedirect,
    HttpRewrite, HttpRoute, StringMatch,
};
use crate::networking::{
    DestinationRule, Gateway, ServiceEntry, Sidecar, VirtualService, WorkloadEntry,
};
use crate::resource::{Kind, Resource, Spec};
use std::collections::{BTreeMap, BTreeSet};

/// Retry conditions Istio accepts in `retryOn` besides numeric status codes.
pub const RETRY_ON: [&str; 16] = [
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// The largest compiled size a `regex` match may have. Under the regex crate's default, 10 MB, a ten-byte
/// pattern (`\w{1,100}`: Unicode `\w` is large) took 0.1 s to compile and megabytes in every proxy that
/// routes with it, and one over the default took 0.2 s to refuse; at 1 MB, refusing takes about 15 ms.
/// Envoy's RE2 refuses much smaller programs by default. weft-proxy applies the same limit when it
/// converts routes, so what passes here is not refused there.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

struct Out<'a> {
    r: &'a Resource,
    diags: Vec<Diagnostic>,
}

impl<'a> Out<'a> {
    fn push(&mut self, severity: Severity, field: String, needle: &str, message: String) {
        self.push_coded(severity, None, field, needle, message);
    }
    fn push_coded(
        &mut self,
        severity: Severity,
        code: Option<&'static str>,
        field: String,
        needle: &str,
        message: String,
    ) {
        self.diags.push(Diagnostic {
            severity,
            file: self.r.file.clone(),
            line: self.r.line_of(needle),
            kind: self.r.kind.to_string(),
            namespace: self.r.metadata.namespace.clone(),
            name: self.r.metadata.name.clone(),
            field,
            message,
            code,
        });
    }
    fn error(&mut self, field: String, needle: &str, message: impl Into<String>) {
        self.push(Severity::Error, field, needle, message.into());
    }
    fn warn(&mut self, field: String, needle: &str, message: impl Into<String>) {
        self.push(Severity::Warning, field, needle, message.into());
    }
    /// An error Istio's analyzer reports under `code`.
    fn error_coded(
        &mut self,
        code: &'static str,
        field: String,
        needle: &str,
        message: impl Into<String>,
    ) {
        self.push_coded(Severity::Error, Some(code), field, needle, message.into());
    }
    /// A warning Istio's analyzer reports under `code`.
    fn warn_coded(
        &mut self,
        code: &'static str,
        field: String,
        needle: &str,
        message: impl Into<String>,
    ) {
        self.push_coded(Severity::Warning, Some(code), field, needle, message.into());
    }
}

/// Validates one resource on its own.
pub fn validate(r: &Resource) -> Vec<Diagnostic> {
    let mut out = Out { r, diags: vec![] };
    match &r.spec {
        Spec::VirtualService(vs) => validate_vs(&mut out, vs),
        Spec::DestinationRule(dr) => validate_dr(&mut out, dr),
        Spec::ServiceEntry(se) => validate_se(&mut out, se),
        Spec::WorkloadEntry(we) => validate_we(&mut out, "spec", we),
        Spec::Sidecar(sc) => validate_sidecar(&mut out, sc),
        Spec::Gateway(gw) => validate_gateway(&mut out, gw),
        Spec::PeerAuthentication(_)
        | Spec::AuthorizationPolicy(_)
        | Spec::RequestAuthentication(_) => {
            for p in crate::security::validate(r) {
                let severity = if p.warning {
                    Severity::Warning
                } else {
                    Severity::Error
                };
                out.push(severity, p.field, &p.needle, p.message);
            }
        }
        Spec::Telemetry(t) => {
            for p in t.validate() {
                let severity = if p.warning {
                    Severity::Warning
                } else {
                    Severity::Error
                };
                out.push(severity, p.field, &p.needle, p.message);
            }
        }
    }
    out.diags
}

mod l4;
mod mesh;

pub use mesh::check as check_mesh;

const NOT_YET: &str = "not supported by weft yet";

fn validate_string_match(out: &mut Out, field: String, m: &StringMatch, allow_empty: bool) {
    let set = [&m.exact, &m.prefix, &m.regex]
        .iter()
        .filter(|v| v.is_some())
        .count();
    if set > 1 {
        out.error(
            field.clone(),
            "",
            "only one of exact, prefix, regex may be set",
        );
    }
    if set == 0 && !allow_empty {
        out.error(field.clone(), "", "one of exact, prefix, regex is required");
    }
    if let Some(re) = &m.regex {
        let compiled = regex::RegexBuilder::new(&format!("^(?:{re})$"))
            .size_limit(REGEX_SIZE_LIMIT)
            .build();
        if let Err(e) = compiled {
            let first = regex_reason(&e);
            out.error_coded(
                codes::SCHEMA,
                format!("{field}.regex"),
                re,
                format!("invalid regex {re:?}: {first}"),
            );
        }
    }
}

/// The last line of the regex crate's error, without its `error: ` prefix.
fn regex_reason(e: &regex::Error) -> String {
    let s = e.to_string();
    let last = s.lines().last().unwrap_or_default().trim();
    last.strip_prefix("error: ").unwrap_or(last).to_string()
}

fn validate_header_ops(out: &mut Out, field: &str, ops: &HeaderOperations) {
    for name in ops
        .set
        .keys()
        .chain(ops.add.keys())
        .chain(ops.remove.iter())
    {
        if http_header_name_invalid(name) {
            out.error(
                field.to_string(),
                name,
                format!("invalid header name {name:?}"),
            );
        }
    }
}

fn http_header_name_invalid(name: &str) -> bool {
    name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn validate_percent(out: &mut Out, field: String, value: f64) {
    if !(0.0..=100.0).contains(&value) {
        out.error(
            field,
            "percentage",
            format!("percentage {value} is not between 0 and 100"),
        );
    }
}

fn gateway_name_invalid(g: &str) -> bool {
    g.is_empty()
        || g.split('/').count() > 2
        || g.split('/').any(str::is_empty)
        || g.split_once('/').is_some_and(|(_, n)| n == "mesh")
}

/// Redirect codes Envoy's `RedirectAction` can send.
pub const REDIRECT_CODES: [u32; 5] = [301, 302, 303, 307, 308];

/// The largest `directResponse` body weft accepts (Envoy's own default limit is 4 KiB unless the route
/// table raises it; weftd raises it to this).
pub const DIRECT_RESPONSE_BODY_LIMIT: usize = 1 << 20;

fn validate_redirect(out: &mut Out, f: &str, r: &HttpRedirect) {
    if r.uri.is_some() && r.prefix_rewrite.is_some() {
        out.error(
            format!("{f}.prefixRewrite"),
            "prefixRewrite",
            "only one of uri, prefixRewrite may be set",
        );
    }
    if let Some(u) = &r.uri {
        if !u.starts_with('/') {
            out.error(
                format!("{f}.uri"),
                "uri:",
                format!("uri {u:?} must start with /"),
            );
        }
    }
    if let Some(a) = &r.authority {
        if a.is_empty() || a.bytes().any(|b| b.is_ascii_whitespace() || b == b'/') {
            out.error(
                format!("{f}.authority"),
                "authority:",
                format!("authority {a:?} is not a host[:port]"),
            );
        }
    }
    if let Some(p) = r.port {
        if p == 0 || p > 65535 {
            out.error(
                format!("{f}.port"),
                "port:",
                format!("port {p} out of range"),
            );
        }
        if r.derive_port.is_some() {
            out.error(
                format!("{f}.derivePort"),
                "derivePort",
                "only one of port, derivePort may be set",
            );
        }
    }
    if let Some(d) = &r.derive_port {
        if !matches!(d.as_str(), "FROM_PROTOCOL_DEFAULT" | "FROM_REQUEST_PORT") {
            out.error(
                format!("{f}.derivePort"),
                "derivePort",
                format!("{d:?} is not FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT"),
            );
        }
    }
    if let Some(s) = &r.scheme {
        let ok = s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
        if !ok {
            out.error(
                format!("{f}.scheme"),
                "scheme:",
                format!("{s:?} is not a URI scheme"),
            );
        }
    }
    if let Some(c) = r.redirect_code {
        if !REDIRECT_CODES.contains(&c) {
            out.error(
                format!("{f}.redirectCode"),
                "redirectCode",
                format!("redirectCode {c} is not 301, 302, 303, 307 or 308"),
            );
        }
    }
}

fn validate_direct_response(out: &mut Out, f: &str, d: &HttpDirectResponse) {
    if !(200..=599).contains(&d.status) {
        out.error(
            format!("{f}.status"),
            "status",
            format!("status {} is not between 200 and 599", d.status),
        );
    }
    let Some(b) = &d.body else {
        return;
    };
    if b.string.is_some() && b.bytes.is_some() {
        out.error(
            format!("{f}.body"),
            "body",
            "only one of string, bytes may be set",
        );
        return;
    }
    match b.decoded() {
        None => out.error(
            format!("{f}.body.bytes"),
            "bytes",
            "bytes is not valid base64",
        ),
        Some(v) if v.len() > DIRECT_RESPONSE_BODY_LIMIT => out.error(
            format!("{f}.body"),
            "body",
            format!(
                "body is {} bytes, more than the {DIRECT_RESPONSE_BODY_LIMIT} allowed",
                v.len()
            ),
        ),
        Some(_) => {}
    }
}

fn validate_rewrite(out: &mut Out, f: &str, rw: &HttpRewrite) {
    if rw.uri.is_none() && rw.authority.is_none() && rw.uri_regex_rewrite.is_none() {
        out.error(
            f.to_string(),
            "rewrite",
            "rewrite needs uri, authority or uriRegexRewrite",
        );
    }
    if let Some(re) = &rw.uri_regex_rewrite {
        if rw.uri.is_some() {
            out.error(
                format!("{f}.uriRegexRewrite"),
                "uriRegexRewrite",
                "only one of uri, uriRegexRewrite may be set",
            );
        }
        if re.pattern.is_empty() {
            out.error(
                format!("{f}.uriRegexRewrite.match"),
                "uriRegexRewrite",
                "match is required",
            );
        } else if let Err(e) = regex::RegexBuilder::new(&re.pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
        {
            let last = regex_reason(&e);
            out.error(
                format!("{f}.uriRegexRewrite.match"),
                "match:",
                format!("invalid regex {:?}: {last}", re.pattern),
            );
        }
    }
    if let Some(a) = &rw.authority {
        if a.is_empty() || a.bytes().any(|b| b.is_ascii_whitespace() || b == b'/') {
            out.error(
                format!("{f}.authority"),
                "authority:",
                format!("authority {a:?} is not a host[:port]"),
            );
        }
    }
}

fn validate_mirrors(out: &mut Out, f: &str, route: &HttpRoute) {
    if route.mirror.is_some() && !route.mirrors.is_empty() {
        out.error(
            format!("{f}.mirrors"),
            "mirrors:",
            "only one of mirror, mirrors may be set",
        );
    }
    if route.mirror.is_none()
        && (route.mirror_percentage.is_some() || route.mirror_percent.is_some())
    {
        out.warn(
            format!("{f}.mirrorPercentage"),
            "mirrorPercent",
            "has no effect without mirror",
        );
    }
    if let Some(d) = &route.mirror {
        if d.host.is_empty() {
            out.error(format!("{f}.mirror.host"), "mirror:", "host is required");
        }
    }
    if let Some(p) = route.mirror_percentage {
        validate_percent(out, format!("{f}.mirrorPercentage.value"), p.value);
    }
    if let Some(p) = route.mirror_percent {
        validate_percent(out, format!("{f}.mirrorPercent"), p as f64);
    }
    for (k, m) in route.mirrors.iter().enumerate() {
        if m.destination.host.is_empty() {
            out.error(
                format!("{f}.mirrors[{k}].destination.host"),
                "mirrors:",
                "host is required",
            );
        }
        if let Some(p) = m.percentage {
            validate_percent(out, format!("{f}.mirrors[{k}].percentage.value"), p.value);
        }
    }
}

fn validate_cors(out: &mut Out, f: &str, c: &CorsPolicy) {
    for (k, o) in c.allow_origins.iter().enumerate() {
        validate_string_match(out, format!("{f}.allowOrigins[{k}]"), o, false);
    }
    for (k, m) in c.allow_methods.iter().enumerate() {
        if http_header_name_invalid(m) {
            out.error(
                format!("{f}.allowMethods[{k}]"),
                "allowMethods",
                format!("{m:?} is not an HTTP method"),
            );
        }
    }
    for (list, name) in [
        (&c.allow_headers, "allowHeaders"),
        (&c.expose_headers, "exposeHeaders"),
    ] {
        for (k, h) in list.iter().enumerate() {
            if http_header_name_invalid(h) {
                out.error(
                    format!("{f}.{name}[{k}]"),
                    name,
                    format!("invalid header name {h:?}"),
                );
            }
        }
    }
    if let Some(d) = c.max_age {
        if d.get().subsec_nanos() != 0 {
            out.error(
                format!("{f}.maxAge"),
                "maxAge",
                "maxAge must be whole seconds",
            );
        }
    }
    if let Some(u) = &c.unmatched_preflights {
        if !matches!(u.as_str(), "UNSPECIFIED" | "FORWARD" | "IGNORE") {
            out.error(
                format!("{f}.unmatchedPreflights"),
                "unmatchedPreflights",
                format!("{u:?} is not UNSPECIFIED, FORWARD or IGNORE"),
            );
        }
    }
}

fn validate_vs(out: &mut Out, vs: &VirtualService) {
    if vs.hosts.is_empty() {
        // Istio's delegate form: rules another VirtualService includes with `delegate`.
        out.warn(
            "spec.hosts".into(),
            "",
            "no hosts: this VirtualService applies only where another one delegates to it",
        );
    }
    for (i, h) in vs.hosts.iter().enumerate() {
        if h == "*" && vs.applies_to_sidecars() {
            out.error(
                format!("spec.hosts[{i}]"),
                h,
                "host \"*\" is only valid for gateways",
            );
        }
    }
    for (i, g) in vs.gateways.iter().enumerate() {
        if gateway_name_invalid(g) {
            out.error(
                format!("spec.gateways[{i}]"),
                "gateways",
                format!("{g:?} is not `mesh`, a Gateway name or namespace/name"),
            );
        }
    }
    if !vs.tls.is_empty() {
        out.error(
            "spec.tls".into(),
            "tls:",
            format!("tls routes are {NOT_YET}"),
        );
    }
    l4::validate_tcp(out, vs);
    for (i, route) in vs.http.iter().enumerate() {
        validate_http_route(out, &format!("spec.http[{i}]"), route);
    }
    mesh::unreachable_rules(out, &vs.http);
}

fn validate_http_route(out: &mut Out, f: &str, route: &HttpRoute) {
    if route.delegate.is_some() {
        out.error(format!("{f}.delegate"), "delegate:", NOT_YET);
    }
    if route.route.is_empty()
        && route.redirect.is_none()
        && route.direct_response.is_none()
        && route.delegate.is_none()
    {
        out.error(
            format!("{f}.route"),
            "",
            "a rule needs route, redirect, directResponse or delegate",
        );
    }
    // Istio: one action per rule.
    let actions = [
        ("route", !route.route.is_empty()),
        ("redirect", route.redirect.is_some()),
        ("directResponse", route.direct_response.is_some()),
        ("delegate", route.delegate.is_some()),
    ];
    let set: Vec<&str> = actions.iter().filter(|a| a.1).map(|a| a.0).collect();
    if set.len() > 1 {
        out.error(
            format!("{f}.{}", set[1]),
            &format!("{}:", set[1]),
            format!("only one of {} may be set", set.join(", ")),
        );
    }
    if let Some(r) = &route.redirect {
        validate_redirect(out, &format!("{f}.redirect"), r);
        if route.rewrite.is_some() {
            out.error(
                format!("{f}.rewrite"),
                "rewrite:",
                "rewrite cannot be used with redirect",
            );
        }
    }
    if let Some(d) = &route.direct_response {
        validate_direct_response(out, &format!("{f}.directResponse"), d);
    }
    if let Some(rw) = &route.rewrite {
        validate_rewrite(out, &format!("{f}.rewrite"), rw);
    }
    validate_mirrors(out, f, route);
    if let Some(c) = &route.cors_policy {
        validate_cors(out, &format!("{f}.corsPolicy"), c);
    }
    for (j, m) in route.matches.iter().enumerate() {
        let mf = format!("{f}.match[{j}]");
        for (name, sm) in [
            ("uri", &m.uri),
            ("method", &m.method),
            ("authority", &m.authority),
        ] {
            if let Some(sm) = sm {
                validate_string_match(out, format!("{mf}.{name}"), sm, false);
            }
        }
        if let Some(sm) = &m.scheme {
            validate_string_match(out, format!("{mf}.scheme"), sm, false);
        }
        for (name, sm) in &m.query_params {
            if name.is_empty() {
                out.error(
                    format!("{mf}.queryParams"),
                    "queryParams:",
                    "query parameter names must not be empty",
                );
            }
            validate_string_match(out, format!("{mf}.queryParams.{name}"), sm, true);
        }
        if !m.source_labels.is_empty() {
            out.error(format!("{mf}.sourceLabels"), "sourceLabels:", NOT_YET);
        }
        if m.source_namespace.as_deref() == Some("") {
            out.error(
                format!("{mf}.sourceNamespace"),
                "sourceNamespace:",
                "sourceNamespace must not be empty",
            );
        }
        for (k, g) in m.gateways.iter().enumerate() {
            if gateway_name_invalid(g) {
                out.error(
                    format!("{mf}.gateways[{k}]"),
                    "gateways",
                    format!("{g:?} is not `mesh`, a Gateway name or namespace/name"),
                );
            }
        }
        for (map_name, map) in [
            ("headers", &m.headers),
            ("withoutHeaders", &m.without_headers),
        ] {
            for (name, sm) in map {
                if http_header_name_invalid(name) || name.bytes().any(|b| b.is_ascii_uppercase()) {
                    out.error(
                        format!("{mf}.{map_name}.{name}"),
                        name,
                        "header names must be lowercase tokens",
                    );
                }
                validate_string_match(out, format!("{mf}.{map_name}.{name}"), sm, true);
            }
        }
        if let Some(p) = m.port {
            if p == 0 || p > 65535 {
                out.error(
                    format!("{mf}.port"),
                    "port:",
                    format!("port {p} out of range"),
                );
            }
        }
    }
    validate_destinations(
        out,
        f,
        route.route.iter().map(|d| (&d.destination, d.weight)),
    );
    for (j, d) in route.route.iter().enumerate() {
        let df = format!("{f}.route[{j}]");
        if let Some(h) = &d.headers {
            if let Some(ops) = &h.request {
                validate_header_ops(out, &format!("{df}.headers.request"), ops);
            }
            if let Some(ops) = &h.response {
                validate_header_ops(out, &format!("{df}.headers.response"), ops);
            }
        }
    }
    if let Some(t) = route.timeout {
        if t.get() > std::time::Duration::ZERO && t.get() < std::time::Duration::from_millis(1) {
            out.error(
                format!("{f}.timeout"),
                "timeout",
                "timeout must be at least 1ms",
            );
        }
    }
    if let Some(r) = &route.retries {
        if let Some(a) = r.attempts {
            if a < 0 {
                out.error(
                    format!("{f}.retries.attempts"),
                    "attempts",
                    "attempts must not be negative",
                );
            }
        }
        if let Some(t) = r.per_try_timeout {
            if t.get() < std::time::Duration::from_millis(1) {
                out.error(
                    format!("{f}.retries.perTryTimeout"),
                    "perTryTimeout",
                    "perTryTimeout must be at least 1ms",
                );
            }
        }
        if let Some(on) = &r.retry_on {
            for cond in on.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                let numeric_ok = cond
                    .parse::<u16>()
                    .map(|c| (100..600).contains(&c))
                    .unwrap_or(false);
                if !numeric_ok && !RETRY_ON.contains(&cond) {
                    out.error(
                        format!("{f}.retries.retryOn"),
                        "retryOn",
                        format!("unknown retry condition {cond:?}"),
                    );
                }
            }
        }
    }
    if let Some(fault) = &route.fault {
        let ff = format!("{f}.fault");
        if fault.delay.is_none() && fault.abort.is_none() {
            out.error(ff.clone(), "fault", "fault needs delay or abort");
        }
        if let Some(d) = &fault.delay {
            if d.exponential_delay.is_some() {
                out.error(
                    format!("{ff}.delay.exponentialDelay"),
                    "exponentialDelay",
                    NOT_YET,
                );
            }
            match d.fixed_delay {
                None if d.exponential_delay.is_none() => out.error(
                    format!("{ff}.delay.fixedDelay"),
                    "delay",
                    "fixedDelay is required",
                ),
                Some(t) if t.get() < std::time::Duration::from_millis(1) => out.error(
                    format!("{ff}.delay.fixedDelay"),
                    "fixedDelay",
                    "fixedDelay must be at least 1ms",
                ),
                _ => {}
            }
            if let Some(p) = d.percentage {
                validate_percent(out, format!("{ff}.delay.percentage.value"), p.value);
            }
            if let Some(p) = d.percent {
                validate_percent(out, format!("{ff}.delay.percent"), p as f64);
            }
        }
        if let Some(a) = &fault.abort {
            if let Some(g) = &a.grpc_status {
                if grpc_status_code(g).is_none() {
                    out.error(
                        format!("{ff}.abort.grpcStatus"),
                        "grpcStatus",
                        format!("{g:?} is not a gRPC status name (UNAVAILABLE) or code (0 to 16)"),
                    );
                }
                if a.http_status.is_some() {
                    out.error(
                        format!("{ff}.abort.grpcStatus"),
                        "grpcStatus",
                        "only one of httpStatus, grpcStatus may be set",
                    );
                }
            }
            if a.http2_error.is_some() {
                out.error(format!("{ff}.abort.http2Error"), "http2Error", NOT_YET);
            }
            match a.http_status {
                Some(s) if !(200..=599).contains(&s) => out.error(
                    format!("{ff}.abort.httpStatus"),
                    "httpStatus",
                    format!("httpStatus {s} is not between 200 and 599"),
                ),
                None if a.grpc_status.is_none() && a.http2_error.is_none() => out.error(
                    format!("{ff}.abort.httpStatus"),
                    "abort",
                    "httpStatus is required",
                ),
                _ => {}
            }
            if let Some(p) = a.percentage {
                validate_percent(out, format!("{ff}.abort.percentage.value"), p.value);
            }
        }
    }
    if let Some(h) = &route.headers {
        if let Some(ops) = &h.request {
            validate_header_ops(out, &format!("{f}.headers.request"), ops);
        }
        if let Some(ops) = &h.response {
            validate_header_ops(out, &format!("{f}.headers.response"), ops);
        }
    }
}

/// The weighted destinations of rule `f` (`route[]` of an HTTP or TCP rule): each needs a host, a
/// non-empty subset if any, a port in range, a weight that is not negative; several with weights that
/// all add up to 0 would get no traffic.
fn validate_destinations<'a>(
    out: &mut Out,
    f: &str,
    dests: impl ExactSizeIterator<
        Item = (
            &'a crate::networking::virtual_service::Destination,
            Option<i64>,
        ),
    >,
) {
    let several = dests.len() > 1;
    let (mut total, mut all_weighted) = (0i64, true);
    for (j, (d, weight)) in dests.enumerate() {
        let df = format!("{f}.route[{j}]");
        if d.host.is_empty() {
            out.error(
                format!("{df}.destination.host"),
                "destination",
                "host is required",
            );
        }
        if d.subset.as_deref() == Some("") {
            out.error(
                format!("{df}.destination.subset"),
                "subset",
                "subset must not be empty",
            );
        }
        if let Some(p) = d.port {
            if p.number == 0 || p.number > 65535 {
                out.error(
                    format!("{df}.destination.port.number"),
                    "number",
                    "port out of range",
                );
            }
        }
        match weight {
            Some(w) if w < 0 => out.error(
                format!("{df}.weight"),
                "weight",
                "weight must not be negative",
            ),
            Some(w) => total += w,
            None => all_weighted = false,
        }
    }
    if several && all_weighted && total == 0 {
        out.error(
            format!("{f}.route"),
            "weight",
            "weights add up to 0: no destination would get traffic",
        );
    }
}

fn validate_dr(out: &mut Out, dr: &DestinationRule) {
    if dr.host.is_empty() {
        out.error("spec.host".into(), "", "host is required");
    }
    if dr.workload_selector.is_some() {
        out.warn(
            "spec.workloadSelector".into(),
            "workloadSelector",
            "not enforced by weft yet: this rule applies to every client workload",
        );
    }
    let mut seen = BTreeSet::new();
    for (i, s) in dr.subsets.iter().enumerate() {
        if s.name.is_empty() {
            out.error(
                format!("spec.subsets[{i}].name"),
                "subsets",
                "subset name is required",
            );
        } else if !seen.insert(s.name.as_str()) {
            out.error(
                format!("spec.subsets[{i}].name"),
                &format!("name: {}", s.name),
                format!("duplicate subset {:?}", s.name),
            );
        }
        if let Some(tp) = &s.traffic_policy {
            validate_traffic_policy(out, &format!("spec.subsets[{i}].trafficPolicy"), tp);
        }
    }
    if let Some(tp) = &dr.traffic_policy {
        validate_traffic_policy(out, "spec.trafficPolicy", tp);
    }
}

/// The most entries `portLevelSettings` may have (Istio's limit).
const MAX_PORT_LEVEL_SETTINGS: usize = 4096;

/// A `trafficPolicy` of a DestinationRule or one of its subsets, at field path `at`.
fn validate_traffic_policy(
    out: &mut Out,
    at: &str,
    tp: &crate::networking::destination_rule::TrafficPolicy,
) {
    validate_policy_parts(
        out,
        at,
        tp.load_balancer.as_ref(),
        tp.connection_pool.as_ref(),
        tp.outlier_detection.as_ref(),
    );
    if tp.port_level_settings.len() > MAX_PORT_LEVEL_SETTINGS {
        out.error(
            format!("{at}.portLevelSettings"),
            "portLevelSettings",
            format!("at most {MAX_PORT_LEVEL_SETTINGS} entries are allowed"),
        );
    }
    let mut ports = BTreeSet::new();
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let f = format!("{at}.portLevelSettings[{i}]");
        match pl.port.map(|p| p.number) {
            None | Some(0) => out.error(format!("{f}.port.number"), "port", "port is required"),
            Some(n) if n > 65535 => out.error(
                format!("{f}.port.number"),
                &format!("number: {n}"),
                format!("port {n} out of range"),
            ),
            Some(n) => {
                if !ports.insert(n) {
                    out.error(
                        format!("{f}.port.number"),
                        &format!("number: {n}"),
                        format!("duplicate settings for port {n}"),
                    );
                }
            }
        }
        validate_policy_parts(
            out,
            &f,
            pl.load_balancer.as_ref(),
            pl.connection_pool.as_ref(),
            pl.outlier_detection.as_ref(),
        );
    }
    for (name, present) in [
        ("tunnel", tp.tunnel.is_some()),
        ("proxyProtocol", tp.proxy_protocol.is_some()),
        ("retryBudget", tp.retry_budget.is_some()),
    ] {
        if present {
            out.warn(
                format!("{at}.{name}"),
                &format!("{name}:"),
                "not enforced by weft yet",
            );
        }
    }
}

fn validate_policy_parts(
    out: &mut Out,
    at: &str,
    lb: Option<&crate::networking::destination_rule::LoadBalancerSettings>,
    cp: Option<&crate::networking::destination_rule::ConnectionPoolSettings>,
    od: Option<&crate::networking::destination_rule::OutlierDetection>,
) {
    if let Some(lb) = lb {
        validate_load_balancer(out, &format!("{at}.loadBalancer"), lb);
    }
    if let Some(cp) = cp {
        validate_connection_pool(out, &format!("{at}.connectionPool"), cp);
    }
    if let Some(od) = od {
        validate_outlier_detection(out, &format!("{at}.outlierDetection"), od);
    }
}

/// An integer field that Envoy carries as a `uint32` (0 is "unset" in Istio's protobuf).
fn validate_u32(out: &mut Out, field: String, key: &str, v: Option<i64>) {
    if let Some(v) = v {
        if !(0..=i64::from(u32::MAX)).contains(&v) {
            out.error(
                field,
                key,
                format!("{v} is out of range (0 to {})", u32::MAX),
            );
        }
    }
}

/// A duration field that must be at least `min` when set.
fn validate_min_duration(
    out: &mut Out,
    field: String,
    key: &str,
    v: Option<crate::duration::Duration>,
    min: std::time::Duration,
) {
    if let Some(d) = v {
        if d.0 < min {
            out.error(field, key, format!("must be at least {min:?}"));
        }
    }
}

/// A percentage field (0 to 100).
fn validate_whole_percent(out: &mut Out, field: String, key: &str, v: Option<i64>) {
    if let Some(v) = v {
        if !(0..=100).contains(&v) {
            out.error(field, key, format!("{v} is not a percentage (0 to 100)"));
        }
    }
}

/// The simple load balancers weft implements (`UNSPECIFIED` is weft's default, round robin; `LEAST_CONN`
/// is Istio's deprecated name for `LEAST_REQUEST`).
const SIMPLE_LB: [&str; 5] = [
    "UNSPECIFIED",
    "ROUND_ROBIN",
    "LEAST_REQUEST",
    "LEAST_CONN",
    "RANDOM",
];

/// Envoy's largest ring (`ring_hash_lb_config.maximum_ring_size` caps it at 8M).
const MAX_RING_SIZE: i64 = 8 * 1024 * 1024;
/// Envoy's largest Maglev table.
const MAX_MAGLEV_TABLE: i64 = 5_000_011;

/// An HTTP token (RFC 9110): what header and cookie names are made of.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn is_prime(n: i64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

fn validate_load_balancer(
    out: &mut Out,
    at: &str,
    lb: &crate::networking::destination_rule::LoadBalancerSettings,
) {
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        out.error(
            at.to_string(),
            "consistentHash",
            "only one of simple, consistentHash may be set",
        );
    }
    if let Some(simple) = &lb.simple {
        if simple == "PASSTHROUGH" {
            out.error(
                format!("{at}.simple"),
                "simple",
                format!("PASSTHROUGH is {NOT_YET}"),
            );
        } else if !SIMPLE_LB.contains(&simple.as_str()) {
            out.error(
                format!("{at}.simple"),
                "simple",
                format!("unknown load balancer {simple:?}"),
            );
        }
    }
    if let Some(ch) = &lb.consistent_hash {
        let f = format!("{at}.consistentHash");
        let keys = [
            ch.http_header_name.is_some(),
            ch.http_cookie.is_some(),
            ch.use_source_ip == Some(true),
            ch.http_query_parameter_name.is_some(),
        ]
        .iter()
        .filter(|k| **k)
        .count();
        if keys != 1 {
            out.error(
                f.clone(),
                "consistentHash",
                "exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName is required",
            );
        }
        if let Some(h) = &ch.http_header_name {
            if !is_token(h) {
                out.error(
                    format!("{f}.httpHeaderName"),
                    "httpHeaderName",
                    format!("invalid header name {h:?}"),
                );
            }
        }
        if let Some(q) = &ch.http_query_parameter_name {
            if q.is_empty() {
                out.error(
                    format!("{f}.httpQueryParameterName"),
                    "httpQueryParameterName",
                    "must not be empty",
                );
            }
        }
        if let Some(c) = &ch.http_cookie {
            if c.name.is_empty() {
                out.error(
                    format!("{f}.httpCookie.name"),
                    "httpCookie",
                    "cookie name is required",
                );
            } else if !is_token(&c.name) {
                out.error(
                    format!("{f}.httpCookie.name"),
                    "name:",
                    format!("invalid cookie name {:?}", c.name),
                );
            }
            if c.path
                .as_deref()
                .is_some_and(|p| p.chars().any(|ch| ch == ';' || !(' '..='~').contains(&ch)))
            {
                out.error(
                    format!("{f}.httpCookie.path"),
                    "path:",
                    "invalid cookie path",
                );
            }
            if !c.attributes.is_empty() {
                out.warn(
                    format!("{f}.httpCookie.attributes"),
                    "attributes",
                    "not enforced by weft yet",
                );
            }
        }
        if ch.ring_hash.is_some() && ch.maglev.is_some() {
            out.error(
                f.clone(),
                "maglev",
                "only one of ringHash, maglev may be set",
            );
        }
        if ch.minimum_ring_size.is_some() && (ch.ring_hash.is_some() || ch.maglev.is_some()) {
            out.error(
                format!("{f}.minimumRingSize"),
                "minimumRingSize",
                "the deprecated minimumRingSize cannot be set with ringHash or maglev",
            );
        }
        let ring = ch
            .ring_hash
            .as_ref()
            .and_then(|r| r.minimum_ring_size)
            .map(|v| (format!("{f}.ringHash.minimumRingSize"), v))
            .or(ch
                .minimum_ring_size
                .map(|v| (format!("{f}.minimumRingSize"), v)));
        if let Some((field, v)) = ring {
            if !(1..=MAX_RING_SIZE).contains(&v) {
                out.error(
                    field,
                    "minimumRingSize",
                    format!("{v} is out of range (1 to {MAX_RING_SIZE})"),
                );
            }
        }
        if let Some(t) = ch.maglev.as_ref().and_then(|m| m.table_size) {
            if !(1..=MAX_MAGLEV_TABLE).contains(&t) || !is_prime(t) {
                out.error(
                    format!("{f}.maglev.tableSize"),
                    "tableSize",
                    format!("{t} is not a prime number up to {MAX_MAGLEV_TABLE}"),
                );
            }
        }
    }
    for (name, present) in [
        ("localityLbSetting", lb.locality_lb_setting.is_some()),
        ("zoneAwareLbSetting", lb.zone_aware_lb_setting.is_some()),
        ("warmupDurationSecs", lb.warmup_duration_secs.is_some()),
        ("warmup", lb.warmup.is_some()),
    ] {
        if present {
            out.warn(
                format!("{at}.{name}"),
                &format!("{name}:"),
                "not enforced by weft yet",
            );
        }
    }
}

fn validate_connection_pool(
    out: &mut Out,
    at: &str,
    cp: &crate::networking::destination_rule::ConnectionPoolSettings,
) {
    const MS: std::time::Duration = std::time::Duration::from_millis(1);
    if let Some(tcp) = &cp.tcp {
        let f = format!("{at}.tcp");
        validate_u32(
            out,
            format!("{f}.maxConnections"),
            "maxConnections",
            tcp.max_connections,
        );
        validate_min_duration(
            out,
            format!("{f}.connectTimeout"),
            "connectTimeout",
            tcp.connect_timeout,
            MS,
        );
        validate_min_duration(
            out,
            format!("{f}.maxConnectionDuration"),
            "maxConnectionDuration",
            tcp.max_connection_duration,
            MS,
        );
        if let Some(k) = &tcp.tcp_keepalive {
            let kf = format!("{f}.tcpKeepalive");
            validate_u32(out, format!("{kf}.probes"), "probes", k.probes);
            let s = std::time::Duration::from_secs(1);
            validate_min_duration(out, format!("{kf}.time"), "time:", k.time, s);
            validate_min_duration(out, format!("{kf}.interval"), "interval", k.interval, s);
        }
        // weftd translates these for Envoy; weft-proxy does not apply them yet.
        for (name, present) in [
            ("idleTimeout", tcp.idle_timeout.is_some()),
            (
                "maxConnectionDuration",
                tcp.max_connection_duration.is_some(),
            ),
            ("tcpKeepalive", tcp.tcp_keepalive.is_some()),
        ] {
            if present {
                out.warn(
                    format!("{f}.{name}"),
                    &format!("{name}:"),
                    "not enforced by weft yet",
                );
            }
        }
    }
    if let Some(h) = &cp.http {
        let f = format!("{at}.http");
        for (key, v) in [
            ("http1MaxPendingRequests", h.http1_max_pending_requests),
            ("http2MaxRequests", h.http2_max_requests),
            ("maxRequestsPerConnection", h.max_requests_per_connection),
            ("maxRetries", h.max_retries),
        ] {
            validate_u32(out, format!("{f}.{key}"), key, v);
        }
        if let Some(p) = &h.h2_upgrade_policy {
            if !matches!(p.as_str(), "DEFAULT" | "DO_NOT_UPGRADE" | "UPGRADE") {
                out.error(
                    format!("{f}.h2UpgradePolicy"),
                    "h2UpgradePolicy",
                    format!("unknown policy {p:?} (DEFAULT, DO_NOT_UPGRADE, UPGRADE)"),
                );
            }
        }
        // weft-proxy speaks the client's protocol upstream (as `useClientProtocol: true`): an upgrade
        // to HTTP/2 is not made.
        let upgrade = h.h2_upgrade_policy.as_deref() == Some("UPGRADE");
        for (name, present) in [
            ("idleTimeout", h.idle_timeout.is_some()),
            ("h2UpgradePolicy", upgrade),
            ("maxConcurrentStreams", h.max_concurrent_streams.is_some()),
            ("http2KeepAlive", h.http2_keep_alive.is_some()),
        ] {
            if present {
                out.warn(
                    format!("{f}.{name}"),
                    &format!("{name}:"),
                    "not enforced by weft yet",
                );
            }
        }
    }
}

fn validate_outlier_detection(
    out: &mut Out,
    at: &str,
    od: &crate::networking::destination_rule::OutlierDetection,
) {
    const MS: std::time::Duration = std::time::Duration::from_millis(1);
    for (key, v) in [
        ("consecutive5xxErrors", od.consecutive_5xx_errors),
        ("consecutiveGatewayErrors", od.consecutive_gateway_errors),
        (
            "consecutiveLocalOriginFailures",
            od.consecutive_local_origin_failures,
        ),
    ] {
        validate_u32(out, format!("{at}.{key}"), key, v);
    }
    validate_min_duration(out, format!("{at}.interval"), "interval", od.interval, MS);
    validate_min_duration(
        out,
        format!("{at}.baseEjectionTime"),
        "baseEjectionTime",
        od.base_ejection_time,
        MS,
    );
    validate_whole_percent(
        out,
        format!("{at}.maxEjectionPercent"),
        "maxEjectionPercent",
        od.max_ejection_percent,
    );
    validate_whole_percent(
        out,
        format!("{at}.minHealthPercent"),
        "minHealthPercent",
        od.min_health_percent,
    );
    if od.consecutive_errors.is_some() {
        out.warn(
            format!("{at}.consecutiveErrors"),
            "consecutiveErrors",
            "deprecated and not enforced by weft; use consecutive5xxErrors",
        );
    }
    if !od.outlier_detection_http_error_codes.is_empty() {
        out.warn(
            format!("{at}.outlierDetectionHttpErrorCodes"),
            "outlierDetectionHttpErrorCodes",
            "not enforced by weft yet",
        );
    }
}

fn validate_se(out: &mut Out, se: &ServiceEntry) {
    if se.hosts.is_empty() {
        out.error(
            "spec.hosts".into(),
            "hosts",
            "at least one host is required",
        );
    }
    for (i, h) in se.hosts.iter().enumerate() {
        if h == "*" {
            out.error(format!("spec.hosts[{i}]"), h, "host \"*\" is not allowed");
        }
    }
    if se.ports.is_empty() {
        // Istio accepts it; with no port there is nothing to listen on or route to.
        out.warn(
            "spec.ports".into(),
            "",
            "no ports: weft serves a ServiceEntry on its ports only, so these hosts get no cluster or listener",
        );
    }
    let mut names = BTreeSet::new();
    for (i, p) in se.ports.iter().enumerate() {
        if p.number == 0 || p.number > 65535 {
            out.error(
                format!("spec.ports[{i}].number"),
                "number",
                format!("port {} out of range", p.number),
            );
        }
        if p.name.is_empty() {
            out.error(
                format!("spec.ports[{i}].name"),
                "ports",
                "port name is required",
            );
        } else if !names.insert(p.name.as_str()) {
            out.error(
                format!("spec.ports[{i}].name"),
                &p.name,
                format!("duplicate port name {:?}", p.name),
            );
        }
        let proto = p.effective_protocol();
        const KNOWN: [&str; 12] = [
            "HTTP", "HTTP2", "HTTPS", "GRPC", "GRPC-WEB", "TCP", "TLS", "UDP", "MONGO", "REDIS",
            "MYSQL", "",
        ];
        if p.protocol.is_some() && !KNOWN.contains(&proto.as_str()) {
            out.error(
                format!("spec.ports[{i}].protocol"),
                "protocol",
                format!("unknown protocol {proto:?}"),
            );
        } else if !p.is_http() && !p.is_tcp() {
            out.warn(
                format!("spec.ports[{i}].protocol"),
                "protocol",
                format!(
                    "only HTTP and TCP ports are served by weft yet; port {} ({proto}) gets no cluster or listener",
                    p.number
                ),
            );
        }
    }
    match se.location.as_deref() {
        None | Some("MESH_EXTERNAL") | Some("MESH_INTERNAL") => {}
        Some(other) => out.error(
            "spec.location".into(),
            "location",
            format!("unknown location {other:?}"),
        ),
    }
    match se.resolution.as_deref() {
        Some("STATIC") => {}
        None | Some("NONE") | Some("DNS") | Some("DNS_ROUND_ROBIN") | Some("DYNAMIC_DNS") => out
            .warn(
                "spec.resolution".into(),
                "resolution",
                "only STATIC resolution is implemented yet: this service gets no endpoints",
            ),
        Some(other) => out.error(
            "spec.resolution".into(),
            "resolution",
            format!("unknown resolution {other:?}"),
        ),
    }
    if !se.endpoints.is_empty() && se.workload_selector.is_some() {
        out.error(
            "spec.workloadSelector".into(),
            "workloadSelector",
            "endpoints and workloadSelector are mutually exclusive",
        );
    }
    if se.workload_selector.is_some() && se.location.as_deref() != Some("MESH_INTERNAL") {
        out.error(
            "spec.workloadSelector".into(),
            "workloadSelector",
            "workloadSelector needs location MESH_INTERNAL",
        );
    }
    for (i, ep) in se.endpoints.iter().enumerate() {
        validate_we(out, &format!("spec.endpoints[{i}]"), ep);
        for port_name in ep.ports.keys() {
            if !se.ports.iter().any(|p| &p.name == port_name) {
                out.error(
                    format!("spec.endpoints[{i}].ports.{port_name}"),
                    port_name,
                    format!("no service port is named {port_name:?}"),
                );
            }
        }
    }
}

/// Server protocols a gateway serves.
const GATEWAY_HTTP: [&str; 4] = ["HTTP", "HTTP2", "GRPC", "GRPC-WEB"];

fn validate_gateway(out: &mut Out, gw: &Gateway) {
    if gw.servers.is_empty() {
        out.error(
            "spec.servers".into(),
            "servers",
            "at least one server is required",
        );
    }
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut ports: BTreeMap<u32, usize> = BTreeMap::new();
    for (i, s) in gw.servers.iter().enumerate() {
        let f = format!("spec.servers[{i}]");
        let mut https = false;
        match &s.port {
            None => out.error(format!("{f}.port"), "servers", "port is required"),
            Some(p) => {
                if p.number == 0 || p.number > 65535 {
                    out.error(
                        format!("{f}.port.number"),
                        "number",
                        format!("port {} out of range", p.number),
                    );
                }
                if let Some(first) = ports.insert(p.number, i) {
                    out.error(
                        format!("{f}.port.number"),
                        "number",
                        format!(
                            "port {} is already the port of spec.servers[{first}]: several servers on one port are {NOT_YET}",
                            p.number
                        ),
                    );
                }
                let proto = p.effective_protocol();
                https = proto == "HTTPS";
                match proto.as_str() {
                    "" => out.error(
                        format!("{f}.port.protocol"),
                        "port",
                        "protocol is required",
                    ),
                    p if GATEWAY_HTTP.contains(&p) || p == "HTTPS" => {}
                    // Opaque TCP, routed by VirtualService tcp rules.
                    "TCP" | "MONGO" => {}
                    "TLS" => out.error(
                        format!("{f}.port.protocol"),
                        "protocol",
                        format!("gateway servers with protocol TLS are {NOT_YET} (HTTP, HTTPS and TCP are)"),
                    ),
                    _ => out.error(
                        format!("{f}.port.protocol"),
                        "protocol",
                        format!("unknown protocol {proto:?} (HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TCP, TLS, MONGO)"),
                    ),
                }
                if p.target_port.is_some() {
                    out.error(format!("{f}.port.targetPort"), "targetPort", NOT_YET);
                }
            }
        }
        if s.hosts.is_empty() {
            out.error(
                format!("{f}.hosts"),
                "hosts",
                "at least one host is required",
            );
        }
        for (j, h) in s.hosts.iter().enumerate() {
            if ServerHost::parse(h).is_none() {
                out.error(
                    format!("{f}.hosts[{j}]"),
                    h,
                    format!("{h:?} is not a host or namespace/host (e.g. *, bookinfo.com, ./*)"),
                );
            }
        }
        if let Some(b) = &s.bind {
            if b.starts_with("unix://") {
                out.error(
                    format!("{f}.bind"),
                    "bind",
                    format!("unix domain sockets are {NOT_YET}"),
                );
            } else if b.parse::<std::net::IpAddr>().is_err() {
                out.error(
                    format!("{f}.bind"),
                    "bind",
                    format!("bind {b:?} is not an IP address"),
                );
            }
        }
        if s.default_endpoint.is_some() {
            out.error(format!("{f}.defaultEndpoint"), "defaultEndpoint", NOT_YET);
        }
        if let Some(n) = s.name.as_deref() {
            if let Some(first) = names.insert(n, i) {
                out.error(
                    format!("{f}.name"),
                    n,
                    format!("name {n:?} is already the name of spec.servers[{first}]"),
                );
            }
        }
        validate_server_tls(out, &f, s.tls.as_ref(), https);
    }
}

fn validate_server_tls(
    out: &mut Out,
    f: &str,
    tls: Option<&crate::networking::gateway::ServerTls>,
    https: bool,
) {
    let Some(t) = tls else {
        if https {
            out.error(
                format!("{f}.tls"),
                "HTTPS",
                "an HTTPS server needs tls (mode SIMPLE or MUTUAL)",
            );
        }
        return;
    };
    let tf = format!("{f}.tls");
    let unsupported: [(&str, bool); 12] = [
        ("caCrl", t.ca_crl.is_some()),
        ("credentialName", t.credential_name.is_some()),
        ("credentialNames", !t.credential_names.is_empty()),
        ("tlsCertificates", !t.tls_certificates.is_empty()),
        ("caCertCredentialName", t.ca_cert_credential_name.is_some()),
        ("subjectAltNames", !t.subject_alt_names.is_empty()),
        (
            "verifyCertificateSpki",
            !t.verify_certificate_spki.is_empty(),
        ),
        (
            "verifyCertificateHash",
            !t.verify_certificate_hash.is_empty(),
        ),
        ("minProtocolVersion", t.min_protocol_version.is_some()),
        ("maxProtocolVersion", t.max_protocol_version.is_some()),
        ("cipherSuites", !t.cipher_suites.is_empty()),
        ("insecureSkipVerify", t.insecure_skip_verify.is_some()),
    ];
    for (name, present) in unsupported {
        if present {
            out.error(format!("{tf}.{name}"), &format!("{name}:"), NOT_YET);
        }
    }
    use crate::networking::gateway::TlsMode;
    match (t.mode.as_deref(), https) {
        (None, false) => {
            for (name, present) in [
                ("serverCertificate", t.server_certificate.is_some()),
                ("privateKey", t.private_key.is_some()),
                ("caCertificates", t.ca_certificates.is_some()),
            ] {
                if present {
                    out.error(
                        format!("{tf}.{name}"),
                        &format!("{name}:"),
                        "certificates are only for HTTPS servers",
                    );
                }
            }
        }
        (Some(_), false) => out.error(
            format!("{tf}.mode"),
            "mode",
            "a TLS mode is only for HTTPS servers (on HTTP, only httpsRedirect)",
        ),
        (None, true) => out.error(
            format!("{tf}.mode"),
            "tls",
            "an HTTPS server needs tls.mode SIMPLE or MUTUAL",
        ),
        (Some(m), true) => match t.served_mode() {
            Some(mode) => {
                if t.credential_name.is_none() {
                    for (name, value) in [
                        ("serverCertificate", &t.server_certificate),
                        ("privateKey", &t.private_key),
                    ] {
                        if value.as_deref().is_none_or(str::is_empty) {
                            out.error(
                                format!("{tf}.{name}"),
                                "tls",
                                format!("{name} is required with mode {m}"),
                            );
                        }
                    }
                }
                match mode {
                    TlsMode::Mutual if t.ca_certificates.as_deref().is_none_or(str::is_empty) => {
                        out.error(
                            format!("{tf}.caCertificates"),
                            "tls",
                            "caCertificates is required with mode MUTUAL",
                        )
                    }
                    TlsMode::Simple if t.ca_certificates.is_some() => out.error(
                        format!("{tf}.caCertificates"),
                        "caCertificates",
                        "caCertificates is only used with mode MUTUAL",
                    ),
                    _ => {}
                }
            }
            None if matches!(
                m,
                "PASSTHROUGH" | "AUTO_PASSTHROUGH" | "ISTIO_MUTUAL" | "OPTIONAL_MUTUAL"
            ) =>
            {
                out.error(
                    format!("{tf}.mode"),
                    "mode",
                    format!("mode {m} is {NOT_YET} (SIMPLE and MUTUAL are)"),
                )
            }
            None => out.error(
                format!("{tf}.mode"),
                "mode",
                format!("unknown mode {m:?} (PASSTHROUGH, SIMPLE, MUTUAL, AUTO_PASSTHROUGH, ISTIO_MUTUAL, OPTIONAL_MUTUAL)"),
            ),
        },
    }
}

fn validate_sidecar(out: &mut Out, sc: &Sidecar) {
    if !sc.ingress.is_empty() {
        out.error("spec.ingress".into(), "ingress", NOT_YET);
    }
    if sc.inbound_connection_pool.is_some() {
        out.error(
            "spec.inboundConnectionPool".into(),
            "inboundConnectionPool",
            NOT_YET,
        );
    }
    if sc.outbound_traffic_policy.is_some() {
        out.warn(
            "spec.outboundTrafficPolicy".into(),
            "outboundTrafficPolicy",
            "not enforced yet: traffic to hosts outside the registry is refused (REGISTRY_ONLY)",
        );
    }
    if sc.egress.is_empty() {
        out.error(
            "spec.egress".into(),
            "",
            "at least one egress entry is required",
        );
    }
    // Listeners by (bind, port): two entries may not claim one address.
    let mut listeners: BTreeMap<(&str, u32), usize> = BTreeMap::new();
    for (i, e) in sc.egress.iter().enumerate() {
        let f = format!("spec.egress[{i}]");
        if let Some(p) = &e.port {
            if p.number == 0 || p.number > 65535 {
                out.error(
                    format!("{f}.port.number"),
                    "number",
                    format!("port {} out of range", p.number),
                );
            }
            let proto = p.effective_protocol();
            if proto.is_empty() {
                out.error(
                    format!("{f}.port.protocol"),
                    "port",
                    "protocol is required (weft serves TCP egress ports only, yet)",
                );
            } else if !p.is_tcp() {
                out.error(
                    format!("{f}.port.protocol"),
                    p.protocol.as_deref().unwrap_or("port"),
                    format!("egress ports with protocol {proto} are {NOT_YET} (only TCP)"),
                );
            }
            let bind = e.bind.as_deref().unwrap_or_default();
            if let Some(first) = listeners.insert((bind, p.number), i) {
                out.error(
                    format!("{f}.port.number"),
                    "number",
                    format!(
                        "port {} is already the port of spec.egress[{first}] on the same bind address",
                        p.number
                    ),
                );
            }
        } else if e.bind.is_some() {
            out.error(
                format!("{f}.bind"),
                "bind",
                "bind needs port: only an egress entry with a port is a listener",
            );
        }
        if let Some(Err(bind)) = e.bind_ip() {
            out.error(
                format!("{f}.bind"),
                bind,
                format!("bind {bind:?} is not an IP address"),
            );
        }
        if e.capture_mode == Some(CaptureMode::Iptables) {
            out.error(
                format!("{f}.captureMode"),
                "captureMode",
                "weft has no iptables capture yet: use DEFAULT or NONE, and have the application connect to the listener's address",
            );
        }
        if e.hosts.is_empty() {
            out.error(
                format!("spec.egress[{i}].hosts"),
                "",
                "at least one host is required",
            );
        }
        for (j, h) in e.hosts.iter().enumerate() {
            if crate::networking::sidecar::EgressHost::parse(h).is_none() {
                out.error(
                    format!("spec.egress[{i}].hosts[{j}]"),
                    h,
                    format!(
                        "{h:?} is not of the form namespace/dnsName (e.g. ./* or istio-system/*)"
                    ),
                );
            }
        }
    }
}

fn validate_we(out: &mut Out, f: &str, we: &WorkloadEntry) {
    match we.address.as_deref() {
        None | Some("") => out.error(format!("{f}.address"), "", "address is required"),
        Some(a) if a.parse::<std::net::IpAddr>().is_err() => out.error(
            format!("{f}.address"),
            a,
            format!("address {a:?} is not an IP address (hostnames need DNS resolution, not implemented yet)"),
        ),
        _ => {}
    }
    for (name, port) in &we.ports {
        if *port == 0 || *port > 65535 {
            out.error(
                format!("{f}.ports.{name}"),
                name,
                format!("port {port} out of range"),
            );
        }
    }
}

/// The registry view the cross-checks need: service hosts with their ports, DR subsets by host.
#[derive(Default)]
pub struct Index {
    services: BTreeMap<String, Vec<u32>>,
    subsets: BTreeMap<String, BTreeSet<String>>,
    /// Gateways by `namespace/name`.
    gateways: BTreeSet<String>,
    security: crate::security::checks::Index,
}

impl Index {
    /// Indexes a set of resources once, for [`check_references_in`] over each of them.
    pub fn new(resources: &[&Resource]) -> Index {
        index(resources)
    }
}

fn index(resources: &[&Resource]) -> Index {
    let mut idx = Index {
        security: crate::security::checks::Index::new(resources),
        ..Index::default()
    };
    for r in resources {
        match &r.spec {
            Spec::ServiceEntry(se) => {
                for h in &se.hosts {
                    let ports = se.ports.iter().map(|p| p.number).collect();
                    idx.services
                        .insert(qualify(h, &r.metadata.namespace), ports);
                }
            }
            Spec::Gateway(_) => {
                idx.gateways
                    .insert(format!("{}/{}", r.metadata.namespace, r.metadata.name));
            }
            Spec::DestinationRule(dr) => {
                let e = idx
                    .subsets
                    .entry(qualify(&dr.host, &r.metadata.namespace))
                    .or_default();
                e.extend(dr.subsets.iter().map(|s| s.name.clone()));
            }
            _ => {}
        }
    }
    idx
}

/// Checks one resource against the others (hosts and subsets it references). Pass the set it lives in.
pub fn check_references(r: &Resource, set: &[&Resource]) -> Vec<Diagnostic> {
    check_references_in(r, &index(set))
}

fn check_destination(out: &mut Out, idx: &Index, ns: &str, df: &str, d: &Destination) {
    if d.host.is_empty() {
        return;
    }
    let host = qualify(&d.host, ns);
    let Some(ports) = idx.services.get(&host) else {
        out.error_coded(
            codes::REFERENCED_NOT_FOUND,
            format!("{df}.host"),
            &format!("host: {}", d.host),
            format!("host {host} is not in the service registry (no ServiceEntry declares it)"),
        );
        return;
    };
    if let Some(p) = d.port {
        if !ports.contains(&p.number) {
            out.error_coded(
                codes::REFERENCED_NOT_FOUND,
                format!("{df}.port.number"),
                &format!("number: {}", p.number),
                format!("service {host} has no port {}", p.number),
            );
        }
    }
    if let Some(subset) = &d.subset {
        let defined = idx.subsets.get(&host).is_some_and(|s| s.contains(subset));
        if !defined {
            out.error_coded(
                codes::REFERENCED_NOT_FOUND,
                format!("{df}.subset"),
                &format!("subset: {subset}"),
                format!("subset {subset:?} is not defined by any DestinationRule for host {host}"),
            );
        }
    }
}

/// [`check_references`] against a prebuilt index (linear, not quadratic, over a whole config).
pub fn check_references_in(r: &Resource, idx: &Index) -> Vec<Diagnostic> {
    let mut out = Out { r, diags: vec![] };
    for p in crate::security::checks::check(r, &idx.security) {
        out.warn(p.field, &p.needle, p.message);
    }
    match &r.spec {
        Spec::VirtualService(vs) => {
            for (i, g) in vs.gateways.iter().enumerate() {
                let q = qualify_gateway(g, &r.metadata.namespace);
                if q != "mesh" && !idx.gateways.contains(&q) {
                    out.warn_coded(
                        codes::REFERENCED_NOT_FOUND,
                        format!("spec.gateways[{i}]"),
                        g,
                        format!("gateway {q} is not defined: no gateway serves these rules"),
                    );
                }
            }
            for (i, route) in vs.http.iter().enumerate() {
                let dests = route
                    .route
                    .iter()
                    .enumerate()
                    .map(|(j, d)| {
                        (
                            format!("spec.http[{i}].route[{j}].destination"),
                            &d.destination,
                        )
                    })
                    .chain(
                        route
                            .mirror
                            .iter()
                            .map(|d| (format!("spec.http[{i}].mirror"), d)),
                    )
                    .chain(route.mirrors.iter().enumerate().map(|(k, m)| {
                        (
                            format!("spec.http[{i}].mirrors[{k}].destination"),
                            &m.destination,
                        )
                    }));
                for (df, d) in dests {
                    check_destination(&mut out, idx, &r.metadata.namespace, &df, d);
                }
            }
            for (i, rule) in vs.tcp.iter().enumerate() {
                for (j, d) in rule.route.iter().enumerate() {
                    let df = format!("spec.tcp[{i}].route[{j}].destination");
                    check_destination(&mut out, idx, &r.metadata.namespace, &df, &d.destination);
                }
            }
        }
        Spec::DestinationRule(dr) => {
            let host = qualify(&dr.host, &r.metadata.namespace);
            if !host.starts_with('*') && !idx.services.contains_key(&host) {
                out.warn_coded(
                    codes::UNKNOWN_DR_HOST,
                    "spec.host".into(),
                    "host",
                    format!("host {host} is not in the service registry: this rule has no effect"),
                );
            }
        }
        _ => {}
    }
    out.diags
}

/// Validates every resource, then the references between them, and reports duplicates. Returns all
/// problems, errors and warnings, in file order.
pub fn analyze(resources: &[Resource]) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    let mut seen: BTreeMap<(Kind, &str, &str), &Resource> = BTreeMap::new();
    let mut valid: Vec<&Resource> = Vec::new();
    for r in resources {
        let key = (
            r.kind,
            r.metadata.namespace.as_str(),
            r.metadata.name.as_str(),
        );
        if let Some(first) = seen.get(&key) {
            diags.push(Diagnostic {
                severity: Severity::Error,
                file: r.file.clone(),
                line: r.line,
                kind: r.kind.to_string(),
                namespace: r.metadata.namespace.clone(),
                name: r.metadata.name.clone(),
                field: "metadata.name".into(),
                message: format!("already defined at {}:{}", first.file, first.line),
                code: None,
            });
            continue;
        }
        seen.insert(key, r);
        let own = validate(r);
        let ok = !own.iter().any(Diagnostic::is_error);
        diags.extend(own);
        if ok {
            valid.push(r);
        }
    }
    let idx = index(&valid);
    for r in &valid {
        diags.extend(check_references_in(r, &idx));
    }
    diags.extend(mesh::check(&valid));
    diags.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    diags
}

/// The CUSTOM AuthorizationPolicies whose `provider.name` MeshConfig's `extensionProviders` cannot
/// serve (no entry of that name, or one that is not `envoyExtAuthzHttp` / `envoyExtAuthzGrpc`): a
/// warning each, as weftd then denies every request the policy's rules match (Istio does the same).
pub fn check_custom_providers(resources: &[Resource], mesh: &crate::MeshConfig) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    for r in resources {
        let Some(ap) = r.as_authorization_policy() else {
            continue;
        };
        if ap.action != crate::security::authorization_policy::Action::Custom {
            continue;
        }
        let Some(name) = ap.provider.as_ref().map(|p| p.name.as_str()) else {
            continue;
        };
        if name.is_empty() {
            continue;
        }
        if let Err(e) = mesh.ext_authz_provider(name) {
            let mut out = Out { r, diags: vec![] };
            out.warn(
                "spec.provider.name".into(),
                &format!("name: {name}"),
                format!("{e}: requests this policy matches are denied"),
            );
            diags.extend(out.diags);
        }
    }
    diags
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_file;

    #[test]
    fn custom_policies_with_unusable_providers_are_warned_of() {
        let ap = |name: &str, provider: &str| {
            format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: foo}}\nspec:\n  action: CUSTOM\n  provider:\n    name: {provider}\n  rules: [{{}}]\n---\n")
        };
        let text = [
            ap("ok", "authz"),
            ap("missing", "nope"),
            ap("tracer", "zipkin"),
        ]
        .concat();
        let p = parse_file("ap.yaml", &text);
        let mesh: crate::MeshConfig = serde_yaml_ng::from_str(
            "extensionProviders: [{name: authz, envoyExtAuthzHttp: {service: a.foo.svc.cluster.local, port: 80}}, {name: zipkin, zipkin: {service: z, port: 9411}}]",
        )
        .expect("mesh");
        let got: Vec<String> = check_custom_providers(&p.resources, &mesh)
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(
            got,
            vec![
                "ap.yaml:16: AuthorizationPolicy foo/missing: spec.provider.name: warning: no extensionProviders entry is named \"nope\": requests this policy matches are denied".to_string(),
                "ap.yaml:25: AuthorizationPolicy foo/tracer: spec.provider.name: warning: extensionProviders entry \"zipkin\" is not an envoyExtAuthzHttp or envoyExtAuthzGrpc provider: requests this policy matches are denied".to_string(),
            ]
        );
    }

    const REGISTRY: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - {number: 9080, name: http, protocol: HTTP}\n  workloadSelector:\n    labels: {app: reviews}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: reviews\nspec:\n  host: reviews\n  subsets:\n  - name: v1\n    labels: {version: v1}\n";

    fn run(extra: &str) -> Vec<String> {
        let mut all = parse_file("registry.yaml", REGISTRY);
        let p = parse_file("vs.yaml", extra);
        assert!(p.diagnostics.is_empty(), "parse: {:?}", p.diagnostics);
        all.resources.extend(p.resources);
        analyze(&all.resources)
            .iter()
            .map(|d| d.to_string())
            .collect()
    }

    fn vs(http: &str) -> String {
        format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews]\n  http:\n{http}")
    }

    #[test]
    fn valid_config_has_no_problems() {
        assert!(run(&vs(
            "  - route:\n    - destination: {host: reviews, subset: v1}\n"
        ))
        .is_empty());
    }

    #[test]
    fn http_features_weft_serves_have_no_problems() {
        let cases: &[(&str, &str)] = &[
            ("redirect", "  - redirect: {uri: /b, authority: x.example, scheme: https, derivePort: FROM_PROTOCOL_DEFAULT, redirectCode: 308}\n"),
            ("direct response", "  - directResponse: {status: 503, body: {bytes: aGk=}}\n"),
            ("rewrite", "  - match: [{uri: {prefix: /a}}]\n    rewrite: {uri: /b, authority: r:9080}\n    route:\n    - destination: {host: reviews}\n"),
            ("regex rewrite", "  - rewrite: {uriRegexRewrite: {match: \"^/a/(.*)\", rewrite: \"/\\\\1\"}}\n    route:\n    - destination: {host: reviews}\n"),
            ("mirrors", "  - mirrors: [{destination: {host: reviews, subset: v1}, percentage: {value: 50}}]\n    route:\n    - destination: {host: reviews}\n"),
            ("mirror", "  - mirror: {host: reviews}\n    mirrorPercentage: {value: 10}\n    route:\n    - destination: {host: reviews}\n"),
            ("cors", "  - corsPolicy: {allowOrigins: [{exact: https://a.example}, {regex: \"https://.*\\\\.b\\\\.example\"}], allowMethods: [GET, POST], allowHeaders: [x-a], exposeHeaders: [x-b], maxAge: 24h, allowCredentials: true, unmatchedPreflights: IGNORE}\n    route:\n    - destination: {host: reviews}\n"),
            ("match fields", "  - match:\n    - scheme: {exact: https}\n      queryParams: {v: {exact: \"1\"}, debug: {}}\n      gateways: [mesh]\n      sourceNamespace: default\n    route:\n    - destination: {host: reviews, subset: v1}\n      headers: {request: {set: {x-v: \"1\"}}}\n"),
            ("grpc abort", "  - fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}\n    route:\n    - destination: {host: reviews}\n"),
        ];
        for (name, http) in cases {
            assert_eq!(run(&vs(http)), Vec::<String>::new(), "case {name}");
        }
    }

    #[test]
    fn table_of_problems() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "undefined subset",
                "  - route:\n    - destination:\n        host: reviews\n        subset: v4\n",
                "vs.yaml:11: VirtualService default/reviews: spec.http[0].route[0].destination.subset: [IST0101] subset \"v4\" is not defined by any DestinationRule for host reviews.default.svc.cluster.local",
            ),
            (
                "unknown host",
                "  - route:\n    - destination:\n        host: nope\n",
                "vs.yaml:10: VirtualService default/reviews: spec.http[0].route[0].destination.host: [IST0101] host nope.default.svc.cluster.local is not in the service registry (no ServiceEntry declares it)",
            ),
            (
                "bad regex",
                "  - match:\n    - uri:\n        regex: \"/a(\"\n    route:\n    - destination: {host: reviews}\n",
                "vs.yaml:10: VirtualService default/reviews: spec.http[0].match[0].uri.regex: [IST0106] invalid regex \"/a(\": unclosed group",
            ),
            (
                "regex over the size limit",
                "  - match:\n    - uri:\n        regex: '\\w{1,100}'\n    route:\n    - destination: {host: reviews}\n",
                "vs.yaml:10: VirtualService default/reviews: spec.http[0].match[0].uri.regex: [IST0106] invalid regex \"\\\\w{1,100}\": Compiled regex exceeds size limit of 1048576 bytes.",
            ),
            (
                "two string matchers",
                "  - match:\n    - uri: {exact: /a, prefix: /b}\n    route:\n    - destination: {host: reviews}\n",
                "vs.yaml:1: VirtualService default/reviews: spec.http[0].match[0].uri: only one of exact, prefix, regex may be set",
            ),
            (
                "unknown retry condition",
                "  - retries: {attempts: 2, retryOn: \"5xx,sometimes\"}\n    route:\n    - destination: {host: reviews}\n",
                "vs.yaml:8: VirtualService default/reviews: spec.http[0].retries.retryOn: unknown retry condition \"sometimes\"",
            ),
            (
                "abort status out of range",
                "  - fault: {abort: {httpStatus: 700, percentage: {value: 100}}}\n    route:\n    - destination: {host: reviews}\n",
                "vs.yaml:8: VirtualService default/reviews: spec.http[0].fault.abort.httpStatus: httpStatus 700 is not between 200 and 599",
            ),
            (
                "percentage over 100",
                "  - fault: {delay: {fixedDelay: 1s, percentage: {value: 150}}}\n    route:\n    - destination: {host: reviews}\n",
                "vs.yaml:8: VirtualService default/reviews: spec.http[0].fault.delay.percentage.value: percentage 150 is not between 0 and 100",
            ),
            (
                "redirect code",
                "  - redirect: {uri: /b, redirectCode: 304}\n",
                "vs.yaml:8: VirtualService default/reviews: spec.http[0].redirect.redirectCode: redirectCode 304 is not 301, 302, 303, 307 or 308",
            ),
            (
                "redirect port and derivePort",
                "  - redirect: {port: 8080, derivePort: FROM_REQUEST_PORT}\n",
                "vs.yaml:8: VirtualService default/reviews: spec.http[0].redirect.derivePort: only one of port, derivePort may be set",
            ),
            (
                "redirect unknown derivePort",
                "  - redirect: {derivePort: FROM_NOWHERE}\n",
                "vs.yaml:8: VirtualService default/reviews: spec.http[0].redirect.derivePort: \"FROM_NOWHERE\" is not FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT",
            ),
            (
                "redirect and route",
                "  - redirect: {uri: /b}\n    route:\n    - destination: {host: reviews}\n",
                "vs.yaml:8: VirtualService default/reviews: spec.http[0].redirect: only one of route, redirect may be set",
            ),
            (
                "redirect with rewrite",
                "  - redirect: {uri: /b}\n    rewrite: {uri: /c}\n",
                "vs.yaml:9: VirtualService default/reviews: spec.http[0].rewrite: rewrite cannot be used with redirect",
            ),
            (
                "direct response status",
                "  - directResponse: {status: 150}\n",
                "vs.yaml:8: VirtualService default/reviews: spec.http[0].directResponse.status: status 150 is not between 200 and 599",
            ),
            (
                "direct response bad base64",
                "  - directResponse: {status: 200, body: {bytes: \"!!\"}}\n",
                "vs.yaml:8: VirtualService default/reviews: spec.http[0].directResponse.body.bytes: bytes is not valid base64",
            ),
            (
                "direct response two bodies",
                "  - directResponse: {status: 200, body: {string: a, bytes: YQ==}}\n",
                "vs.yaml:8: VirtualService default/reviews: spec.http[0].directResponse.body: only one of string, bytes may be set",
            ),
            (
                "rewrite regex",
                "  - rewrite: {uriRegexRewrite: {match: \"/a(\", rewrite: /b}}\n    route:\n    - destination: {host: reviews}\n",
                "vs.yaml:8: VirtualService default/reviews: spec.http[0].rewrite.uriRegexRewrite.match: invalid regex \"/a(\": unclosed group",
            ),
            (
                "rewrite uri and regex",
                "  - rewrite: {uri: /x, uriRegexRewrite: {match: /a, rewrite: /b}}\n    route:\n    - destination: {host: reviews}\n",
                "vs.yaml:8: VirtualService default/reviews: spec.http[0].rewrite.uriRegexRewrite: only one of uri, uriRegexRewrite may be set",
            ),
            (
                "mirror to unknown host",
                "  - mirror: {host: nope}\n    route:\n    - destination: {host: reviews}\n",
                "vs.yaml:8: VirtualService default/reviews: spec.http[0].mirror.host: [IST0101] host nope.default.svc.cluster.local is not in the service registry (no ServiceEntry declares it)",
            ),
            (
                "mirror and mirrors",
                "  - mirror: {host: reviews}\n    mirrors: [{destination: {host: reviews}}]\n    route:\n    - destination: {host: reviews}\n",
                "vs.yaml:9: VirtualService default/reviews: spec.http[0].mirrors: only one of mirror, mirrors may be set",
            ),
            (
                "mirror percentage over 100",
                "  - mirrors: [{destination: {host: reviews}, percentage: {value: 101}}]\n    route:\n    - destination: {host: reviews}\n",
                "vs.yaml:8: VirtualService default/reviews: spec.http[0].mirrors[0].percentage.value: percentage 101 is not between 0 and 100",
            ),
            (
                "cors origin without matcher",
                "  - corsPolicy: {allowOrigins: [{}]}\n    route:\n    - destination: {host: reviews}\n",
                "vs.yaml:1: VirtualService default/reviews: spec.http[0].corsPolicy.allowOrigins[0]: one of exact, prefix, regex is required",
            ),
            (
                "cors bad header",
                "  - corsPolicy: {allowHeaders: [\"a b\"]}\n    route:\n    - destination: {host: reviews}\n",
                "vs.yaml:8: VirtualService default/reviews: spec.http[0].corsPolicy.allowHeaders[0]: invalid header name \"a b\"",
            ),
            (
                "cors unmatched preflights",
                "  - corsPolicy: {unmatchedPreflights: DROP}\n    route:\n    - destination: {host: reviews}\n",
                "vs.yaml:8: VirtualService default/reviews: spec.http[0].corsPolicy.unmatchedPreflights: \"DROP\" is not UNSPECIFIED, FORWARD or IGNORE",
            ),
            (
                "query param regex",
                "  - match:\n    - queryParams: {v: {regex: \"(\"}}\n    route:\n    - destination: {host: reviews}\n",
                "vs.yaml:9: VirtualService default/reviews: spec.http[0].match[0].queryParams.v.regex: [IST0106] invalid regex \"(\": unclosed group",
            ),
            (
                "match gateway name",
                "  - match:\n    - gateways: [a/b/c]\n    route:\n    - destination: {host: reviews}\n",
                "vs.yaml:9: VirtualService default/reviews: spec.http[0].match[0].gateways[0]: \"a/b/c\" is not `mesh`, a Gateway name or namespace/name",
            ),
            (
                "source labels not yet",
                "  - match:\n    - sourceLabels: {app: x}\n    route:\n    - destination: {host: reviews}\n",
                "vs.yaml:9: VirtualService default/reviews: spec.http[0].match[0].sourceLabels: not supported by weft yet",
            ),
            (
                "unknown grpc status",
                "  - fault: {abort: {grpcStatus: SOMETIMES, percentage: {value: 100}}}\n    route:\n    - destination: {host: reviews}\n",
                "vs.yaml:8: VirtualService default/reviews: spec.http[0].fault.abort.grpcStatus: \"SOMETIMES\" is not a gRPC status name (UNAVAILABLE) or code (0 to 16)",
            ),
            (
                "delegate not yet",
                "  - delegate: {name: other}\n",
                "vs.yaml:8: VirtualService default/reviews: spec.http[0].delegate: not supported by weft yet",
            ),
            (
                "destination header name",
                "  - route:\n    - destination: {host: reviews}\n      headers: {request: {set: {\"a b\": x}}}\n",
                "vs.yaml:10: VirtualService default/reviews: spec.http[0].route[0].headers.request: invalid header name \"a b\"",
            ),
            (
                "no route",
                "  - name: empty\n",
                "vs.yaml:1: VirtualService default/reviews: spec.http[0].route: a rule needs route, redirect, directResponse or delegate",
            ),
        ];
        for (name, http, want) in cases {
            let got = run(&vs(http));
            assert_eq!(got, vec![want.to_string()], "case {name}");
        }
    }

    const GATEWAY: &str = "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n";

    /// A Gateway with `servers` (indented list items) and the VirtualService bound to it.
    fn gateway(servers: &str) -> String {
        format!("{GATEWAY}{servers}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: ingress\nspec:\n  hosts: [\"*\"]\n  gateways: [gw]\n  http:\n  - route:\n    - destination: {{host: reviews}}\n")
    }

    #[test]
    fn gateways_that_weft_serves_have_no_problems() {
        let cases = [
            "  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n",
            "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [./bookinfo.com, \"*/x.example.com\"]\n    tls: {httpsRedirect: true}\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [bookinfo.com]\n    tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}\n",
            "  - port: {number: 8443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    bind: 127.0.0.1\n    name: mtls\n    tls: {mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem}\n",
        ];
        for servers in cases {
            assert_eq!(run(&gateway(servers)), Vec::<String>::new(), "{servers}");
        }
    }

    #[test]
    fn gateway_problems_name_the_field() {
        let http = "  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n";
        let cases: &[(&str, String, &str)] = &[
            (
                "passthrough",
                "  - port: {number: 443, name: tls, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls:\n      mode: PASSTHROUGH\n".into(),
                "vs.yaml:11: Gateway default/gw: spec.servers[0].tls.mode: mode PASSTHROUGH is not supported by weft yet (SIMPLE and MUTUAL are)",
            ),
            (
                "istio mutual",
                "  - port: {number: 443, name: tls, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls:\n      mode: ISTIO_MUTUAL\n".into(),
                "vs.yaml:11: Gateway default/gw: spec.servers[0].tls.mode: mode ISTIO_MUTUAL is not supported by weft yet (SIMPLE and MUTUAL are)",
            ),
            (
                "tls server",
                "  - port: {number: 31400, name: tls, protocol: TLS}\n    hosts: [\"*\"]\n".into(),
                "vs.yaml:8: Gateway default/gw: spec.servers[0].port.protocol: gateway servers with protocol TLS are not supported by weft yet (HTTP, HTTPS and TCP are)",
            ),
            (
                "credentialName",
                "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls:\n      mode: SIMPLE\n      credentialName: bookinfo-secret\n".into(),
                "vs.yaml:12: Gateway default/gw: spec.servers[0].tls.credentialName: not supported by weft yet",
            ),
            (
                "https without tls",
                "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n".into(),
                "vs.yaml:8: Gateway default/gw: spec.servers[0].tls: an HTTPS server needs tls (mode SIMPLE or MUTUAL)",
            ),
            (
                "mutual without roots",
                "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls: {mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem}\n".into(),
                "vs.yaml:10: Gateway default/gw: spec.servers[0].tls.caCertificates: caCertificates is required with mode MUTUAL",
            ),
            (
                "simple without a key",
                "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls: {mode: SIMPLE, serverCertificate: /c.pem}\n".into(),
                "vs.yaml:10: Gateway default/gw: spec.servers[0].tls.privateKey: privateKey is required with mode SIMPLE",
            ),
            (
                "a mode on plain HTTP",
                "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n    tls:\n      mode: SIMPLE\n".into(),
                "vs.yaml:11: Gateway default/gw: spec.servers[0].tls.mode: a TLS mode is only for HTTPS servers (on HTTP, only httpsRedirect)",
            ),
            (
                "bad host",
                "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [a/b/c]\n".into(),
                "vs.yaml:9: Gateway default/gw: spec.servers[0].hosts[0]: \"a/b/c\" is not a host or namespace/host (e.g. *, bookinfo.com, ./*)",
            ),
            (
                "unix bind",
                "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n    bind: unix:///var/run/gw.sock\n".into(),
                "vs.yaml:10: Gateway default/gw: spec.servers[0].bind: unix domain sockets are not supported by weft yet",
            ),
            (
                "two servers on one port",
                format!("{http}{http}"),
                "vs.yaml:8: Gateway default/gw: spec.servers[1].port.number: port 8080 is already the port of spec.servers[0]: several servers on one port are not supported by weft yet",
            ),
            (
                "targetPort",
                "  - port: {number: 80, name: http, protocol: HTTP, targetPort: 8080}\n    hosts: [\"*\"]\n".into(),
                "vs.yaml:8: Gateway default/gw: spec.servers[0].port.targetPort: not supported by weft yet",
            ),
        ];
        for (name, servers, want) in cases {
            // (A refused Gateway is also "not defined" for its VirtualService: a warning there.)
            let got: Vec<String> = run(&gateway(servers))
                .into_iter()
                .filter(|d| d.contains(" Gateway default/gw: "))
                .collect();
            assert_eq!(got, vec![want.to_string()], "case {name}");
        }
        assert_eq!(
            run(&format!("{GATEWAY}    []\n")),
            ["vs.yaml:7: Gateway default/gw: spec.servers: at least one server is required"]
        );
    }

    #[test]
    fn virtual_services_bind_to_gateways_by_name() {
        let vs = |gateways: &str| {
            format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: ingress\nspec:\n  hosts: [bookinfo.com]\n  gateways: {gateways}\n  http:\n  - route:\n    - destination: {{host: reviews}}\n")
        };
        assert_eq!(
            run(&vs("[mesh, istio-system/gw]")),
            ["vs.yaml:7: VirtualService default/ingress: spec.gateways[1]: warning: [IST0101] gateway istio-system/gw is not defined: no gateway serves these rules"]
        );
        assert_eq!(
            run(&vs("[a/b/c]")),
            ["vs.yaml:7: VirtualService default/ingress: spec.gateways[0]: \"a/b/c\" is not `mesh`, a Gateway name or namespace/name"]
        );
        // A gateway's VirtualService is checked against the registry as a sidecar's is.
        let bad = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: ingress\nspec:\n  hosts: [\"*\"]\n  gateways: [gw]\n  http:\n  - route:\n    - destination: {host: nowhere}\n";
        let got = run(&format!("{GATEWAY}  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [\"*\"]\n---\n{bad}"));
        assert_eq!(
            got,
            ["vs.yaml:20: VirtualService default/ingress: spec.http[0].route[0].destination.host: [IST0101] host nowhere.default.svc.cluster.local is not in the service registry (no ServiceEntry declares it)"]
        );
    }

    #[test]
    fn sidecar_problems() {
        let sc = |spec: &str| {
            format!("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: default\nspec:\n{spec}")
        };
        assert!(run(&sc("  egress:\n  - hosts: [./*, istio-system/*]\n")).is_empty());
        assert_eq!(
            run(&sc("  egress:\n  - hosts: [reviews]\n")),
            ["vs.yaml:7: Sidecar default/default: spec.egress[0].hosts[0]: \"reviews\" is not of the form namespace/dnsName (e.g. ./* or istio-system/*)"]
        );
        assert_eq!(
            run(&sc(
                "  ingress:\n  - port: {number: 9080}\n  egress:\n  - hosts: [./*]\n"
            )),
            ["vs.yaml:6: Sidecar default/default: spec.ingress: not supported by weft yet"]
        );
    }

    #[test]
    fn sidecar_egress_ports() {
        let sc = |egress: &str| {
            format!("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: default\nspec:\n  egress:\n{egress}")
        };
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "tcp port with bind and captureMode NONE, beside a scoping entry",
                "  - port: {number: 9000, protocol: TCP, name: tcp}\n    bind: 127.0.50.2\n    captureMode: NONE\n    hosts: [./*]\n  - hosts: [istio-system/*]\n",
                &[],
            ),
            (
                "tcp from the port name, DEFAULT capture, IPv6 bind",
                "  - port: {number: 9000, name: tcp-db}\n    bind: \"::1\"\n    captureMode: DEFAULT\n    hosts: [./*]\n",
                &[],
            ),
            (
                "iptables capture",
                "  - port: {number: 9000, protocol: TCP}\n    captureMode: IPTABLES\n    hosts: [./*]\n",
                &["vs.yaml:8: Sidecar default/default: spec.egress[0].captureMode: weft has no iptables capture yet: use DEFAULT or NONE, and have the application connect to the listener's address"],
            ),
            (
                "http egress port",
                "  - port: {number: 9080, protocol: HTTP, name: http}\n    hosts: [./*]\n",
                &["vs.yaml:7: Sidecar default/default: spec.egress[0].port.protocol: egress ports with protocol HTTP are not supported by weft yet (only TCP)"],
            ),
            (
                "no protocol at all",
                "  - port: {number: 9000}\n    hosts: [./*]\n",
                &["vs.yaml:7: Sidecar default/default: spec.egress[0].port.protocol: protocol is required (weft serves TCP egress ports only, yet)"],
            ),
            (
                "bind is not an IP",
                "  - hosts: [./*]\n  - port: {number: 9000, protocol: TCP}\n    bind: db.local\n    hosts: [./*]\n",
                &["vs.yaml:9: Sidecar default/default: spec.egress[1].bind: bind \"db.local\" is not an IP address"],
            ),
            (
                "bind without a port",
                "  - bind: 127.0.0.1\n    hosts: [./*]\n",
                &["vs.yaml:7: Sidecar default/default: spec.egress[0].bind: bind needs port: only an egress entry with a port is a listener"],
            ),
            (
                "port out of range",
                "  - port: {number: 70000, protocol: TCP}\n    hosts: [./*]\n",
                &["vs.yaml:7: Sidecar default/default: spec.egress[0].port.number: port 70000 out of range"],
            ),
            (
                "two listeners on one address",
                "  - port: {number: 9000, protocol: TCP}\n    hosts: [./*]\n  - port: {number: 9000, protocol: TCP}\n    hosts: [istio-system/*]\n",
                &["vs.yaml:7: Sidecar default/default: spec.egress[1].port.number: port 9000 is already the port of spec.egress[0] on the same bind address"],
            ),
        ];
        for (name, egress, want) in cases {
            assert_eq!(run(&sc(egress)), *want, "case {name}");
        }
        // Fields weft does not know are refused when the file is read, naming the field.
        for (name, egress, want) in [
            (
                "unknown field inside port",
                "  - port: {number: 9000, protocol: TCP, targetPort: 9001}\n    hosts: [./*]\n",
                "vs.yaml:7: Sidecar default/default: spec.egress[0].port.targetPort: [IST0106] unknown field (known fields: number, protocol, name)",
            ),
            (
                "unknown capture mode",
                "  - port: {number: 9000, protocol: TCP}\n    captureMode: EBPF\n    hosts: [./*]\n",
                "vs.yaml:8: Sidecar default/default: spec.egress[0].captureMode: [IST0106] unknown variant `EBPF`, expected one of `DEFAULT`, `IPTABLES`, `NONE`",
            ),
        ] {
            let p = parse_file("vs.yaml", &sc(egress));
            let got: Vec<String> = p.diagnostics.iter().map(|d| d.to_string()).collect();
            assert_eq!(got, [want], "case {name}");
            assert!(p.resources.is_empty(), "case {name}: refused");
        }
    }

    #[test]
    fn service_entry_port_protocols() {
        let se = |ports: &str| {
            format!("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: db\nspec:\n  hosts: [db.default.svc.cluster.local]\n  addresses: [10.0.0.9]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n{ports}  endpoints: [{{address: 127.0.50.2}}]\n")
        };
        // TCP is served (clusters and endpoints): no warning, by protocol or by name.
        assert!(run(&se("  - {number: 9000, name: tcp, protocol: TCP}\n")).is_empty());
        assert!(run(&se("  - {number: 9000, name: tcp-db}\n")).is_empty());
        // Without addresses, only the port tells a TCP service apart (IST0134).
        let bare =
            se("  - {number: 9000, name: tcp-db}\n").replace("  addresses: [10.0.0.9]\n", "");
        assert_eq!(
            run(&bare),
            ["vs.yaml:10: ServiceEntry default/db: spec.ports[0]: warning: [IST0134] TCP port 9000 without spec.addresses: only the port tells this service apart, so it takes every TCP connection to port 9000; add the service's addresses"]
        );
        assert_eq!(
            run(&se("  - {number: 9443, name: tls, protocol: TLS}\n")),
            ["vs.yaml:11: ServiceEntry default/db: spec.ports[0].protocol: warning: only HTTP and TCP ports are served by weft yet; port 9443 (TLS) gets no cluster or listener"]
        );
    }

    #[test]
    fn duplicates_are_refused_naming_the_first() {
        let got = run(&format!(
            "{}---\n{}",
            vs("  - route:\n    - destination: {host: reviews}\n"),
            vs("  - route:\n    - destination: {host: reviews}\n")
        ));
        assert_eq!(
            got,
            vec!["vs.yaml:11: VirtualService default/reviews: metadata.name: already defined at vs.yaml:1".to_string()]
        );
    }

    #[test]
    fn unenforced_policy_is_a_warning() {
        let text = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: ratings\nspec:\n  host: reviews\n  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n    tunnel: {}\n";
        let p = parse_file("dr.yaml", text);
        let d = validate(&p.resources[0]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].severity, Severity::Warning);
        assert_eq!(
            d[0].to_string(),
            "dr.yaml:10: DestinationRule default/ratings: spec.trafficPolicy.tunnel: warning: not enforced by weft yet"
        );
    }

    /// A DestinationRule with `policy` (YAML indented under `trafficPolicy:`) as its host's policy.
    fn dr_with(policy: &str) -> Vec<String> {
        let text = format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: r\nspec:\n  host: reviews\n  trafficPolicy:\n{policy}");
        let p = parse_file("dr.yaml", &text);
        assert!(p.diagnostics.is_empty(), "parse: {:?}", p.diagnostics);
        validate(&p.resources[0])
            .iter()
            .map(|d| d.to_string())
            .collect()
    }

    #[test]
    fn traffic_policies_are_validated_naming_the_field() {
        const P: &str = "dr.yaml:";
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "circuit breaking as Istio's task writes it",
                "    connectionPool:\n      tcp: {maxConnections: 1, connectTimeout: 1s}\n      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1, http2MaxRequests: 10, maxRetries: 3, h2UpgradePolicy: DO_NOT_UPGRADE, useClientProtocol: true}\n    outlierDetection:\n      consecutive5xxErrors: 1\n      consecutiveGatewayErrors: 2\n      consecutiveLocalOriginFailures: 2\n      splitExternalLocalOriginErrors: true\n      interval: 1s\n      baseEjectionTime: 3m\n      maxEjectionPercent: 100\n      minHealthPercent: 50\n",
                &[],
            ),
            (
                "pool settings weftd translates but weft-proxy does not apply",
                "    connectionPool:\n      tcp: {maxConnectionDuration: 1h, tcpKeepalive: {probes: 3, time: 10s, interval: 5s}}\n      http: {idleTimeout: 30s, h2UpgradePolicy: UPGRADE}\n",
                &[
                    "9: DestinationRule default/r: spec.trafficPolicy.connectionPool.tcp.maxConnectionDuration: warning: not enforced by weft yet",
                    "9: DestinationRule default/r: spec.trafficPolicy.connectionPool.tcp.tcpKeepalive: warning: not enforced by weft yet",
                    "10: DestinationRule default/r: spec.trafficPolicy.connectionPool.http.idleTimeout: warning: not enforced by weft yet",
                    "10: DestinationRule default/r: spec.trafficPolicy.connectionPool.http.h2UpgradePolicy: warning: not enforced by weft yet",
                ],
            ),
            ("least request", "    loadBalancer: {simple: LEAST_REQUEST}\n", &[]),
            ("random", "    loadBalancer: {simple: RANDOM}\n", &[]),
            (
                "ring hash on a header",
                "    loadBalancer:\n      consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 4096}}\n",
                &[],
            ),
            (
                "maglev on a cookie",
                "    loadBalancer:\n      consistentHash:\n        httpCookie: {name: user, path: /, ttl: 0s}\n        maglev: {tableSize: 65537}\n",
                &[],
            ),
            (
                "source ip and query parameter",
                "    loadBalancer:\n      consistentHash: {useSourceIp: true}\n    portLevelSettings:\n    - port: {number: 9080}\n      loadBalancer:\n        consistentHash: {httpQueryParameterName: u}\n",
                &[],
            ),
            (
                "unknown simple",
                "    loadBalancer:\n      simple: FASTEST\n",
                &["9: DestinationRule default/r: spec.trafficPolicy.loadBalancer.simple: unknown load balancer \"FASTEST\""],
            ),
            (
                "passthrough is refused",
                "    loadBalancer:\n      simple: PASSTHROUGH\n",
                &["9: DestinationRule default/r: spec.trafficPolicy.loadBalancer.simple: PASSTHROUGH is not supported by weft yet"],
            ),
            (
                "two hash keys",
                "    loadBalancer:\n      consistentHash:\n        httpHeaderName: x\n        useSourceIp: true\n",
                &["9: DestinationRule default/r: spec.trafficPolicy.loadBalancer.consistentHash: exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName is required"],
            ),
            (
                "no hash key",
                "    loadBalancer:\n      consistentHash:\n        maglev: {}\n",
                &["9: DestinationRule default/r: spec.trafficPolicy.loadBalancer.consistentHash: exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName is required"],
            ),
            (
                "cookie without a name, both algorithms",
                "    loadBalancer:\n      consistentHash:\n        httpCookie: {ttl: 10s}\n        ringHash: {}\n        maglev: {}\n",
                &[
                    "10: DestinationRule default/r: spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name: cookie name is required",
                    "12: DestinationRule default/r: spec.trafficPolicy.loadBalancer.consistentHash: only one of ringHash, maglev may be set",
                ],
            ),
            (
                "bad header name, ring too large, table not prime",
                "    loadBalancer:\n      consistentHash: {httpHeaderName: \"a b\", ringHash: {minimumRingSize: 0}}\n    portLevelSettings:\n    - port: {number: 80}\n      loadBalancer:\n        consistentHash: {useSourceIp: true, maglev: {tableSize: 65536}}\n",
                &[
                    "9: DestinationRule default/r: spec.trafficPolicy.loadBalancer.consistentHash.httpHeaderName: invalid header name \"a b\"",
                    "9: DestinationRule default/r: spec.trafficPolicy.loadBalancer.consistentHash.ringHash.minimumRingSize: 0 is out of range (1 to 8388608)",
                    "13: DestinationRule default/r: spec.trafficPolicy.portLevelSettings[0].loadBalancer.consistentHash.maglev.tableSize: 65536 is not a prime number up to 5000011",
                ],
            ),
            (
                "negative limits and a short timeout",
                "    connectionPool:\n      tcp:\n        maxConnections: -1\n        connectTimeout: 0s\n      http:\n        http1MaxPendingRequests: 4294967296\n        h2UpgradePolicy: SOMETIMES\n",
                &[
                    "10: DestinationRule default/r: spec.trafficPolicy.connectionPool.tcp.maxConnections: -1 is out of range (0 to 4294967295)",
                    "11: DestinationRule default/r: spec.trafficPolicy.connectionPool.tcp.connectTimeout: must be at least 1ms",
                    "13: DestinationRule default/r: spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests: 4294967296 is out of range (0 to 4294967295)",
                    "14: DestinationRule default/r: spec.trafficPolicy.connectionPool.http.h2UpgradePolicy: unknown policy \"SOMETIMES\" (DEFAULT, DO_NOT_UPGRADE, UPGRADE)",
                ],
            ),
            (
                "outlier percentages and times",
                "    outlierDetection:\n      consecutive5xxErrors: -2\n      baseEjectionTime: 0s\n      maxEjectionPercent: 101\n      minHealthPercent: -1\n",
                &[
                    "9: DestinationRule default/r: spec.trafficPolicy.outlierDetection.consecutive5xxErrors: -2 is out of range (0 to 4294967295)",
                    "10: DestinationRule default/r: spec.trafficPolicy.outlierDetection.baseEjectionTime: must be at least 1ms",
                    "11: DestinationRule default/r: spec.trafficPolicy.outlierDetection.maxEjectionPercent: 101 is not a percentage (0 to 100)",
                    "12: DestinationRule default/r: spec.trafficPolicy.outlierDetection.minHealthPercent: -1 is not a percentage (0 to 100)",
                ],
            ),
            (
                "port level without a port, twice the same port",
                "    portLevelSettings:\n    - loadBalancer: {simple: RANDOM}\n    - port: {number: 81}\n    - port: {number: 81}\n",
                &[
                    "8: DestinationRule default/r: spec.trafficPolicy.portLevelSettings[0].port.number: port is required",
                    "10: DestinationRule default/r: spec.trafficPolicy.portLevelSettings[2].port.number: duplicate settings for port 81",
                ],
            ),
            (
                "locality is not enforced yet",
                "    loadBalancer:\n      localityLbSetting: {enabled: true}\n",
                &["9: DestinationRule default/r: spec.trafficPolicy.loadBalancer.localityLbSetting: warning: not enforced by weft yet"],
            ),
        ];
        for (name, policy, want) in cases {
            let want: Vec<String> = want.iter().map(|w| format!("{P}{w}")).collect();
            assert_eq!(dr_with(policy), want, "case {name}");
        }
    }

    #[test]
    fn subset_policies_are_validated_at_their_path() {
        let text = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: r\nspec:\n  host: reviews\n  subsets:\n  - name: v1\n    labels: {version: v1}\n    trafficPolicy:\n      loadBalancer: {simple: NEAREST}\n";
        let p = parse_file("dr.yaml", text);
        let got: Vec<String> = validate(&p.resources[0])
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(
            got,
            ["dr.yaml:11: DestinationRule default/r: spec.subsets[0].trafficPolicy.loadBalancer.simple: unknown load balancer \"NEAREST\""]
        );
    }
}
