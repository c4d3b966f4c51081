//! Checks across a whole config that Istio's analyzer makes and a single resource cannot: rules that
//! claim one host twice, Sidecars that overlap or select nothing, TCP services without addresses,
//! rules no request can reach. They report under Istio's message codes and at Istio's level; weftd
//! reports them too but refuses nothing for them (it resolves each conflict deterministically, and
//! says how).

use super::Out;
use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::host::qualify;
use crate::networking::gateway::{hosts_intersect, qualify_gateway, virtual_service_host};
use crate::networking::labels_match;
use crate::networking::virtual_service::{HttpMatchRequest, HttpRoute, StringMatch};
use crate::resource::Resource;
use std::collections::BTreeMap;

/// A workload the registry knows, for selector checks: namespace, labels and where it is declared.
struct Workload<'a> {
    namespace: &'a str,
    labels: &'a BTreeMap<String, String>,
    name: String,
}

fn workloads<'a>(resources: &[&'a Resource]) -> Vec<Workload<'a>> {
    let mut out = Vec::new();
    for r in resources {
        let ns = r.metadata.namespace.as_str();
        if let Some(we) = r.as_workload_entry() {
            out.push(Workload {
                namespace: ns,
                labels: &we.labels,
                name: format!("WorkloadEntry {ns}/{}", r.metadata.name),
            });
        } else if let Some(se) = r.as_service_entry() {
            for (i, ep) in se.endpoints.iter().enumerate() {
                out.push(Workload {
                    namespace: ns,
                    labels: &ep.labels,
                    name: format!("ServiceEntry {ns}/{} endpoint {i}", r.metadata.name),
                });
            }
        }
    }
    out
}

fn names(rs: &[&Resource]) -> String {
    rs.iter()
        .map(|r| format!("{}/{}", r.metadata.namespace, r.metadata.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every mesh-wide check, over the resources that passed their own validation.
pub fn check(resources: &[&Resource]) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    conflicting_mesh_hosts(resources, &mut diags);
    sidecars(resources, &mut diags);
    hosts_not_in_gateways(resources, &mut diags);
    for r in resources {
        let mut out = Out { r, diags: vec![] };
        if let Some(se) = r.as_service_entry() {
            addresses_required(&mut out, se);
        }
        if let Some(dr) = r.as_destination_rule() {
            server_verification(&mut out, dr);
        }
        if let Some(vs) = r.as_virtual_service() {
            destination_ports(&mut out, vs, resources);
        }
        diags.extend(out.diags);
    }
    diags
}

/// IST0109: VirtualServices for sidecars that claim the same host. Sidecars do not merge them: weftd
/// uses the first by namespace/name, and the others' rules for that host are not used.
fn conflicting_mesh_hosts(resources: &[&Resource], diags: &mut Vec<Diagnostic>) {
    let mut by_host: BTreeMap<String, Vec<&Resource>> = BTreeMap::new();
    for r in resources {
        let Some(vs) = r.as_virtual_service() else {
            continue;
        };
        if !vs.applies_to_sidecars() {
            continue;
        }
        let mut seen = std::collections::BTreeSet::new();
        for h in &vs.hosts {
            let q = qualify(h, &r.metadata.namespace);
            if seen.insert(q.clone()) {
                by_host.entry(q).or_default().push(r);
            }
        }
    }
    for (host, mut rs) in by_host {
        if rs.len() < 2 {
            continue;
        }
        rs.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        let all = names(&rs);
        let used = names(&rs[..1]);
        for r in &rs {
            let vs = r.as_virtual_service().expect("filtered above");
            let i = vs
                .hosts
                .iter()
                .position(|h| qualify(h, &r.metadata.namespace) == host)
                .unwrap_or(0);
            let mut out = Out { r, diags: vec![] };
            out.error_coded(
                codes::CONFLICTING_MESH_HOSTS,
                format!("spec.hosts[{i}]"),
                &vs.hosts[i],
                format!("the VirtualServices {all} all define host {host} for sidecars, which do not merge them: only {used} is used; merge them into one resource"),
            );
            diags.extend(out.diags);
        }
    }
}

/// IST0111 (two Sidecars without a selector in one namespace), IST0110 (two Sidecars selecting one
/// workload) and IST0101 (a Sidecar whose selector matches no workload).
fn sidecars(resources: &[&Resource], diags: &mut Vec<Diagnostic>) {
    let wls = workloads(resources);
    let mut defaults: BTreeMap<&str, Vec<&Resource>> = BTreeMap::new();
    let mut selecting: BTreeMap<String, Vec<&Resource>> = BTreeMap::new();
    for r in resources {
        let Some(sc) = r.as_sidecar() else {
            continue;
        };
        let ns = r.metadata.namespace.as_str();
        match &sc.workload_selector {
            None => defaults.entry(ns).or_default().push(r),
            Some(sel) => {
                let mut any = false;
                for w in wls.iter().filter(|w| w.namespace == ns) {
                    if labels_match(&sel.labels, w.labels) {
                        any = true;
                        selecting.entry(w.name.clone()).or_default().push(r);
                    }
                }
                if !any {
                    let labels = sel
                        .labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",");
                    // A warning, where Istio's is an error: a client-only workload has no
                    // WorkloadEntry, and its proxy announces its labels only when it connects.
                    let mut out = Out { r, diags: vec![] };
                    out.warn_coded(
                        codes::REFERENCED_NOT_FOUND,
                        "spec.workloadSelector".into(),
                        "workloadSelector",
                        format!("selector {labels} matches no workload in namespace {ns} (WorkloadEntry or ServiceEntry endpoint): this Sidecar applies only to proxies that connect with these labels"),
                    );
                    diags.extend(out.diags);
                }
            }
        }
    }
    for (ns, mut rs) in defaults {
        if rs.len() < 2 {
            continue;
        }
        rs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let all = names(&rs);
        let used = names(&rs[..1]);
        for r in &rs {
            let mut out = Out { r, diags: vec![] };
            out.error_coded(
                codes::MULTIPLE_DEFAULT_SIDECARS,
                "spec.workloadSelector".into(),
                "",
                format!("the Sidecars {all} in namespace {ns} have no workload selector: weft uses {used} (the first by name); give the others a selector or merge them"),
            );
            diags.extend(out.diags);
        }
    }
    // Report each pair once per workload set: the same Sidecars overlapping on several workloads
    // report the first.
    let mut reported = std::collections::BTreeSet::new();
    for (workload, mut rs) in selecting {
        if rs.len() < 2 {
            continue;
        }
        rs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let all = names(&rs);
        if !reported.insert(all.clone()) {
            continue;
        }
        for r in &rs {
            let mut out = Out { r, diags: vec![] };
            out.error_coded(
                codes::CONFLICTING_SIDECAR_SELECTORS,
                "spec.workloadSelector".into(),
                "workloadSelector",
                format!("the Sidecars {all} select the same workload ({workload}): weft uses the first by name; make their selectors disjoint"),
            );
            diags.extend(out.diags);
        }
    }
}

/// IST0132: a host of a gateway-bound VirtualService that no server of that gateway admits (those rules
/// are served by no listener of that gateway).
fn hosts_not_in_gateways(resources: &[&Resource], diags: &mut Vec<Diagnostic>) {
    let gateways: BTreeMap<String, &Resource> = resources
        .iter()
        .filter(|r| r.as_gateway().is_some())
        .map(|r| (format!("{}/{}", r.metadata.namespace, r.metadata.name), *r))
        .collect();
    for r in resources {
        let Some(vs) = r.as_virtual_service() else {
            continue;
        };
        let vs_ns = r.metadata.namespace.as_str();
        for g in &vs.gateways {
            let q = qualify_gateway(g, vs_ns);
            let Some(gw_res) = gateways.get(&q) else {
                continue;
            };
            let gw = gw_res.as_gateway().expect("filtered above");
            let gw_ns = gw_res.metadata.namespace.as_str();
            for (i, h) in vs.hosts.iter().enumerate() {
                let host = virtual_service_host(h, vs_ns);
                let admitted = gw.servers.iter().any(|s| {
                    s.hosts.iter().any(|sh| {
                        crate::networking::gateway::ServerHost::parse(sh).is_some_and(|sh| {
                            sh.allows_namespace(gw_ns, vs_ns) && hosts_intersect(&sh.host, &host)
                        })
                    })
                });
                if !admitted {
                    let mut out = Out { r, diags: vec![] };
                    out.warn_coded(
                        codes::HOST_NOT_IN_GATEWAY,
                        format!("spec.hosts[{i}]"),
                        h,
                        format!("host {host} is not admitted by any server of gateway {q}: that gateway does not serve these rules for it"),
                    );
                    diags.extend(out.diags);
                }
            }
        }
    }
}

/// IST0134: a TCP port of a ServiceEntry without `addresses`. Nothing but the port tells such a
/// service apart, so its listener takes all TCP traffic to that port.
fn addresses_required(out: &mut Out, se: &crate::networking::ServiceEntry) {
    if !se.addresses.is_empty() {
        return;
    }
    for (i, p) in se.ports.iter().enumerate() {
        let proto = p.effective_protocol();
        if proto.is_empty() || proto == "TCP" {
            out.warn_coded(
                codes::ADDRESSES_REQUIRED,
                format!("spec.ports[{i}]"),
                &format!("number: {}", p.number),
                format!("TCP port {} without spec.addresses: only the port tells this service apart, so it takes every TCP connection to port {}; add the service's addresses", p.number, p.number),
            );
        }
    }
}

/// IST0128 and IST0129: TLS origination (SIMPLE or MUTUAL) without `caCertificates`.
fn server_verification(out: &mut Out, dr: &crate::networking::DestinationRule) {
    let Some(tp) = &dr.traffic_policy else {
        return;
    };
    let unpinned = |t: &crate::networking::destination_rule::ClientTlsSettings| {
        let mode = t.mode.as_deref().unwrap_or("");
        let no_ca =
            t.ca_certificates.as_deref().is_none_or(str::is_empty) && t.credential_name.is_none();
        (matches!(mode, "SIMPLE" | "MUTUAL") && no_ca).then(|| mode.to_string())
    };
    let what = "the server's certificate is checked against this machine's system roots only, and any name they vouch for is accepted unless subjectAltNames is set; set caCertificates to the CA that issues it";
    if let Some(mode) = tp.tls.as_ref().and_then(unpinned) {
        out.warn_coded(
            codes::NO_SERVER_VERIFICATION,
            "spec.trafficPolicy.tls.caCertificates".into(),
            "tls",
            format!(
                "TLS mode {mode} for host {} without caCertificates: {what}",
                dr.host
            ),
        );
    }
    for (i, p) in tp.port_level_settings.iter().enumerate() {
        if let Some(mode) = p.tls.as_ref().and_then(unpinned) {
            let port = p.port.map(|p| p.number).unwrap_or_default();
            out.warn_coded(
                codes::NO_SERVER_VERIFICATION_PORT,
                format!("spec.trafficPolicy.portLevelSettings[{i}].tls.caCertificates"),
                "tls",
                format!(
                    "TLS mode {mode} for host {} port {port} without caCertificates: {what}",
                    dr.host
                ),
            );
        }
    }
}

/// IST0112: a destination without a port, to a service with several.
fn destination_ports(out: &mut Out, vs: &crate::networking::VirtualService, all: &[&Resource]) {
    let ns = out.r.metadata.namespace.clone();
    for (i, rule) in vs.http.iter().enumerate() {
        for (j, d) in rule.route.iter().enumerate() {
            if d.destination.port.is_some() {
                continue;
            }
            let host = qualify(&d.destination.host, &ns);
            let ports: Vec<u32> = all
                .iter()
                .filter_map(|r| r.as_service_entry().map(|se| (r, se)))
                .filter(|(r, se)| {
                    se.hosts
                        .iter()
                        .any(|h| qualify(h, &r.metadata.namespace) == host)
                })
                .flat_map(|(_, se)| se.ports.iter().map(|p| p.number))
                .collect();
            if ports.len() > 1 {
                let list = ports
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                out.error_coded(
                    codes::DESTINATION_PORT_REQUIRED,
                    format!("spec.http[{i}].route[{j}].destination.port"),
                    &format!("host: {}", d.destination.host),
                    format!("service {host} has ports {list}: say which with destination.port"),
                );
            }
        }
    }
}

/// IST0130 and IST0131, for one VirtualService's HTTP rules: a rule after one without matches (which
/// takes every request), and a match that an earlier rule's match already takes (the same conditions,
/// or an earlier uri prefix that covers it with no other condition the later one lacks).
pub(super) fn unreachable_rules(out: &mut Out, rules: &[HttpRoute]) {
    let name = |i: usize| match rules[i].name.as_deref() {
        Some(n) => format!("{n:?} (spec.http[{i}])"),
        None => format!("spec.http[{i}]"),
    };
    let mut catch_all: Option<usize> = None;
    let mut earlier: Vec<(usize, &HttpMatchRequest)> = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        if let Some(c) = catch_all {
            let reason = if rule.matches.is_empty() {
                "only the last rule may have no match".to_string()
            } else {
                format!("{} has no match and takes every request first", name(c))
            };
            out.warn_coded(
                codes::UNREACHABLE_RULE,
                format!("spec.http[{i}]"),
                "",
                format!("rule {} is never used: {reason}", name(i)),
            );
            continue;
        }
        if rule.matches.is_empty() {
            catch_all = Some(i);
            continue;
        }
        let mut covered = 0;
        for (j, m) in rule.matches.iter().enumerate() {
            if let Some((k, _)) = earlier.iter().find(|(_, e)| covers(e, m)) {
                covered += 1;
                out.push_coded(
                    crate::diagnostic::Severity::Warning,
                    Some(codes::INEFFECTIVE_MATCH),
                    format!("spec.http[{i}].match[{j}]"),
                    "",
                    format!(
                        "this match is never used: rule {} matches every request it does",
                        name(*k)
                    ),
                );
            }
        }
        if covered == rule.matches.len() {
            out.warn_coded(
                codes::UNREACHABLE_RULE,
                format!("spec.http[{i}]"),
                "",
                format!(
                    "rule {} is never used: earlier rules take every request its matches do",
                    name(i)
                ),
            );
        }
        earlier.extend(rule.matches.iter().map(|m| (i, m)));
    }
}

/// Whether every request `later` matches is matched by `first` (conservatively: false when unsure).
fn covers(first: &HttpMatchRequest, later: &HttpMatchRequest) -> bool {
    let same = |a: &Option<StringMatch>, b: &Option<StringMatch>| a.is_none() || a == b;
    let uri = match (&first.uri, &later.uri) {
        (None, _) => true,
        (Some(a), Some(b)) if a == b => true,
        (Some(a), Some(b)) => match (&a.prefix, &b.prefix, &b.exact) {
            (Some(p), Some(q), _) | (Some(p), None, Some(q)) => {
                first.ignore_uri_case == later.ignore_uri_case && q.starts_with(p.as_str())
            }
            _ => false,
        },
        (Some(_), None) => false,
    };
    let subset = |a: &BTreeMap<String, StringMatch>, b: &BTreeMap<String, StringMatch>| {
        a.iter().all(|(k, v)| b.get(k) == Some(v))
    };
    uri && (first.uri.is_none() || first.ignore_uri_case == later.ignore_uri_case)
        && same(&first.scheme, &later.scheme)
        && same(&first.method, &later.method)
        && same(&first.authority, &later.authority)
        && subset(&first.headers, &later.headers)
        && subset(&first.without_headers, &later.without_headers)
        && subset(&first.query_params, &later.query_params)
        && (first.port.is_none() || first.port == later.port)
        && first
            .source_labels
            .iter()
            .all(|(k, v)| later.source_labels.get(k) == Some(v))
        && (first.source_namespace.is_none() || first.source_namespace == later.source_namespace)
        && (first.gateways.is_empty() || first.gateways == later.gateways)
}

#[cfg(test)]
mod tests {
    use crate::parse::parse_file;

    /// Reviews (two ports), two workloads, and a DestinationRule with subset v1.
    const REGISTRY: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews.default.svc.cluster.local]
  addresses: [10.0.0.1]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  - {number: 9090, name: http-admin, protocol: HTTP}
  workloadSelector:
    labels: {app: reviews}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings}
spec:
  hosts: [ratings.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector:
    labels: {app: ratings}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1}
spec: {address: 127.0.0.2, labels: {app: reviews, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ratings-v1}
spec: {address: 127.0.0.3, labels: {app: ratings, version: v1}}
"#;

    /// The problems `extra` has, with the registry beside it, as `weft analyze` prints them.
    fn run(extra: &str) -> Vec<String> {
        let mut all = parse_file("registry.yaml", REGISTRY);
        let p = parse_file("x.yaml", extra);
        assert!(p.diagnostics.is_empty(), "parse: {:?}", p.diagnostics);
        all.resources.extend(p.resources);
        crate::analyze(&all.resources)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn vs(name: &str, hosts: &str, http: &str) -> String {
        format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n  hosts: {hosts}\n  http:\n{http}---\n")
    }

    fn sidecar(name: &str, selector: &str) -> String {
        format!("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: {name}}}\nspec:\n{selector}  egress: [{{hosts: [./*]}}]\n---\n")
    }

    const TO_RATINGS: &str = "  - route: [{destination: {host: ratings}}]\n";

    #[test]
    fn ist0109_two_virtual_services_for_one_mesh_host() {
        let text = vs("a", "[ratings]", TO_RATINGS)
            + &vs("b", "[ratings.default.svc.cluster.local]", TO_RATINGS);
        assert_eq!(
            run(&text),
            [
                "x.yaml:5: VirtualService default/a: spec.hosts[0]: [IST0109] the VirtualServices default/a, default/b all define host ratings.default.svc.cluster.local for sidecars, which do not merge them: only default/a is used; merge them into one resource",
                "x.yaml:13: VirtualService default/b: spec.hosts[0]: [IST0109] the VirtualServices default/a, default/b all define host ratings.default.svc.cluster.local for sidecars, which do not merge them: only default/a is used; merge them into one resource",
            ]
        );
        // Bound to a gateway only, the second does not apply to sidecars: no conflict.
        let gw = vs("b", "[ratings]", TO_RATINGS).replace("  http:", "  gateways: [gw]\n  http:");
        let got = run(&(vs("a", "[ratings]", TO_RATINGS) + &gw));
        assert!(got.iter().all(|d| !d.contains("IST0109")), "{got:?}");
    }

    #[test]
    fn ist0111_two_default_sidecars_in_a_namespace() {
        let got = run(&(sidecar("one", "") + &sidecar("two", "")));
        assert_eq!(
            got,
            [
                "x.yaml:1: Sidecar default/one: spec.workloadSelector: [IST0111] the Sidecars default/one, default/two in namespace default have no workload selector: weft uses default/one (the first by name); give the others a selector or merge them",
                "x.yaml:7: Sidecar default/two: spec.workloadSelector: [IST0111] the Sidecars default/one, default/two in namespace default have no workload selector: weft uses default/one (the first by name); give the others a selector or merge them",
            ]
        );
    }

    #[test]
    fn ist0110_sidecars_selecting_one_workload_and_ist0101_selecting_none() {
        let by_app = "  workloadSelector: {labels: {app: reviews}}\n";
        let by_version = "  workloadSelector: {labels: {version: v1, app: reviews}}\n";
        let got = run(&(sidecar("a", by_app) + &sidecar("b", by_version)));
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].starts_with("x.yaml:5: Sidecar default/a: spec.workloadSelector: [IST0110] the Sidecars default/a, default/b select the same workload (WorkloadEntry default/reviews-v1)"), "{got:?}");
        // Disjoint selectors: nothing to report.
        let ratings = "  workloadSelector: {labels: {app: ratings}}\n";
        assert!(run(&(sidecar("a", by_app) + &sidecar("b", ratings))).is_empty());
        // A selector no workload has.
        assert_eq!(
            run(&sidecar("a", "  workloadSelector: {labels: {app: nope}}\n")),
            ["x.yaml:5: Sidecar default/a: spec.workloadSelector: warning: [IST0101] selector app=nope matches no workload in namespace default (WorkloadEntry or ServiceEntry endpoint): this Sidecar applies only to proxies that connect with these labels"]
        );
    }

    #[test]
    fn ist0112_destination_without_port_to_a_service_with_several() {
        let got = run(&vs(
            "r",
            "[reviews]",
            "  - route: [{destination: {host: reviews}}]\n",
        ));
        assert_eq!(
            got,
            ["x.yaml:7: VirtualService default/r: spec.http[0].route[0].destination.port: [IST0112] service reviews.default.svc.cluster.local has ports 9080, 9090: say which with destination.port"]
        );
        let with_port = "  - route: [{destination: {host: reviews, port: {number: 9080}}}]\n";
        assert!(run(&vs("r", "[reviews]", with_port)).is_empty());
    }

    #[test]
    fn ist0130_and_ist0131_rules_no_request_reaches() {
        let http = "  - name: catch-all\n    route: [{destination: {host: ratings}}]\n  - match: [{uri: {prefix: /x}}]\n    route: [{destination: {host: ratings}}]\n";
        assert_eq!(
            run(&vs("r", "[ratings]", http)),
            ["x.yaml:1: VirtualService default/r: spec.http[1]: warning: [IST0130] rule spec.http[1] is never used: \"catch-all\" (spec.http[0]) has no match and takes every request first"]
        );
        // A prefix covers a longer prefix and an exact path under it; a header condition narrows it.
        let http = "  - match: [{uri: {prefix: /api}}]\n    route: [{destination: {host: ratings}}]\n  - match: [{uri: {prefix: /api/v2}}, {uri: {exact: /api/x}}]\n    route: [{destination: {host: ratings}}]\n  - match: [{uri: {prefix: /ap}, headers: {x: {exact: y}}}]\n    route: [{destination: {host: ratings}}]\n";
        let got = run(&vs("r", "[ratings]", http));
        assert_eq!(
            got,
            [
                "x.yaml:1: VirtualService default/r: spec.http[1].match[0]: warning: [IST0131] this match is never used: rule spec.http[0] matches every request it does",
                "x.yaml:1: VirtualService default/r: spec.http[1].match[1]: warning: [IST0131] this match is never used: rule spec.http[0] matches every request it does",
                "x.yaml:1: VirtualService default/r: spec.http[1]: warning: [IST0130] rule spec.http[1] is never used: earlier rules take every request its matches do",
            ]
        );
    }

    #[test]
    fn ist0132_host_a_gateway_does_not_admit() {
        let gw = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [bookinfo.example.com]\n---\n";
        let bound = vs("r", "[shop.example.com]", TO_RATINGS)
            .replace("  http:", "  gateways: [gw]\n  http:");
        assert_eq!(
            run(&format!("{gw}{bound}")),
            ["x.yaml:14: VirtualService default/r: spec.hosts[0]: warning: [IST0132] host shop.example.com is not admitted by any server of gateway default/gw: that gateway does not serve these rules for it"]
        );
        let ok = vs("r", "[bookinfo.example.com]", TO_RATINGS)
            .replace("  http:", "  gateways: [gw]\n  http:");
        assert!(run(&format!("{gw}{ok}")).is_empty());
    }

    #[test]
    fn ist0128_and_ist0129_tls_origination_without_a_ca() {
        let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ratings}\nspec:\n  host: ratings\n  trafficPolicy:\n    tls: {mode: SIMPLE}\n    portLevelSettings:\n    - port: {number: 9080}\n      tls: {mode: SIMPLE}\n";
        let got = run(dr);
        let coded: Vec<&String> = got.iter().filter(|d| d.contains("[IST012")).collect();
        assert_eq!(coded.len(), 2, "{got:?}");
        assert!(coded[0].contains("spec.trafficPolicy.tls.caCertificates: warning: [IST0128] TLS mode SIMPLE for host ratings without caCertificates"), "{got:?}");
        assert!(coded[1].contains("spec.trafficPolicy.portLevelSettings[0].tls.caCertificates: warning: [IST0129] TLS mode SIMPLE for host ratings port 9080"), "{got:?}");
        let pinned = dr.replace("{mode: SIMPLE}", "{mode: SIMPLE, caCertificates: /ca.pem}");
        assert!(run(&pinned).iter().all(|d| !d.contains("[IST012")));
    }

    #[test]
    fn forms_istio_accepts_are_accepted() {
        // A delegate VirtualService has no hosts; a ServiceEntry may have no ports; a DestinationRule's
        // workloadSelector uses matchLabels. None is refused.
        let delegate = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: d}\nspec:\n  http:\n  - route: [{destination: {host: ratings}}]\n---\n";
        let se = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ext}\nspec:\n  hosts: [ext.example.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n---\n";
        let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: dr}\nspec:\n  host: ratings\n  workloadSelector:\n    matchLabels: {app: productpage}\n";
        let got = run(&format!("{delegate}{se}{dr}"));
        assert!(got.iter().all(|d| d.contains("warning")), "{got:?}");
        assert!(
            got.iter()
                .any(|d| d.contains("VirtualService default/d: spec.hosts: warning: no hosts")),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|d| d.contains("ServiceEntry default/ext: spec.ports: warning: no ports")),
            "{got:?}"
        );
        assert!(
            got.iter().any(|d| d.contains(
                "DestinationRule default/dr: spec.workloadSelector: warning: not enforced"
            )),
            "{got:?}"
        );
    }

    #[test]
    fn a_trailing_comment_is_not_part_of_a_printed_name() {
        let p = parse_file(
            "x.yaml",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService # routing\nmetadata:\n  name: reviews # the reviews rule\n  namespace: 'shop' # team\nspec:\n  hostz: [reviews]\n",
        );
        assert_eq!(p.diagnostics.len(), 1, "{:?}", p.diagnostics);
        let d = &p.diagnostics[0];
        assert_eq!(
            (d.kind.as_str(), d.namespace.as_str(), d.name.as_str()),
            ("VirtualService", "shop", "reviews")
        );
    }
}
