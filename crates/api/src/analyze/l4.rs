//! Checks of VirtualService `tcp` rules.

use super::Out;
use crate::networking::virtual_service::l4::subnet_contains;
use crate::networking::VirtualService;

pub(super) fn validate_tcp(out: &mut Out, vs: &VirtualService) {
    let any_ip: std::net::IpAddr = [0, 0, 0, 0].into();
    for (i, rule) in vs.tcp.iter().enumerate() {
        let f = format!("spec.tcp[{i}]");
        if rule.route.is_empty() {
            out.error(format!("{f}.route"), "tcp", "a tcp rule needs route");
        }
        for (j, m) in rule.matches.iter().enumerate() {
            let mf = format!("{f}.match[{j}]");
            if let Some(p) = m.port {
                if p == 0 || p > 65535 {
                    out.error(
                        format!("{mf}.port"),
                        "port",
                        format!("port {p} out of range"),
                    );
                }
            }
            for (k, s) in m.destination_subnets.iter().enumerate() {
                if subnet_contains(s, any_ip).is_none() {
                    out.error(
                        format!("{mf}.destinationSubnets[{k}]"),
                        s,
                        format!("{s:?} is not an IP address or CIDR (10.0.0.0/8)"),
                    );
                }
            }
            if m.source_subnet.is_some() {
                out.error(
                    format!("{mf}.sourceSubnet"),
                    "sourceSubnet",
                    "sourceSubnet is deprecated and not supported by weft; match the client by sourceLabels or sourceNamespace",
                );
            }
        }
        super::validate_destinations(
            out,
            &f,
            rule.route.iter().map(|d| (&d.destination, d.weight)),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::parse::parse_file;

    const REGISTRY: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: echo}\nspec:\n  hosts: [tcp-echo.default.svc.cluster.local]\n  addresses: [10.0.0.7]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 9000, name: tcp, protocol: TCP}]\n  workloadSelector: {labels: {app: tcp-echo}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: echo}\nspec:\n  host: tcp-echo\n  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]\n";

    fn run(tcp: &str) -> Vec<String> {
        let text = format!("{REGISTRY}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: echo}}\nspec:\n  hosts: [tcp-echo]\n  tcp:\n{tcp}");
        let p = parse_file("x.yaml", &text);
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        crate::analyze(&p.resources)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn istio_tcp_traffic_shifting_rules_are_accepted() {
        // Istio's tcp-echo-20-v2.yaml, without its gateway.
        let shift = "  - match: [{port: 9000}]\n    route:\n    - destination: {host: tcp-echo, port: {number: 9000}, subset: v1}\n      weight: 80\n    - destination: {host: tcp-echo, port: {number: 9000}, subset: v2}\n      weight: 20\n";
        assert_eq!(run(shift), Vec::<String>::new());
    }

    #[test]
    fn bad_tcp_rules_name_the_field() {
        let cases = [
            ("  - match: [{port: 9000}]\n", "x.yaml:24: VirtualService default/echo: spec.tcp[0].route: a tcp rule needs route"),
            ("  - match: [{destinationSubnets: [10.0.0.0/40]}]\n    route: [{destination: {host: tcp-echo}}]\n", "x.yaml:24: VirtualService default/echo: spec.tcp[0].match[0].destinationSubnets[0]: \"10.0.0.0/40\" is not an IP address or CIDR (10.0.0.0/8)"),
            ("  - match: [{sourceSubnet: 10.0.0.0/8}]\n    route: [{destination: {host: tcp-echo}}]\n", "x.yaml:24: VirtualService default/echo: spec.tcp[0].match[0].sourceSubnet: sourceSubnet is deprecated and not supported by weft; match the client by sourceLabels or sourceNamespace"),
            ("  - route: [{destination: {host: tcp-echo, subset: v3}}]\n", "x.yaml:24: VirtualService default/echo: spec.tcp[0].route[0].destination.subset: [IST0101] subset \"v3\" is not defined by any DestinationRule for host tcp-echo.default.svc.cluster.local"),
            ("  - route: [{destination: {host: nope}}]\n", "x.yaml:24: VirtualService default/echo: spec.tcp[0].route[0].destination.host: [IST0101] host nope.default.svc.cluster.local is not in the service registry (no ServiceEntry declares it)"),
            ("  - route: [{destination: {host: tcp-echo, subset: v1}, weight: 0}, {destination: {host: tcp-echo, subset: v2}, weight: 0}]\n", "x.yaml:24: VirtualService default/echo: spec.tcp[0].route: weights add up to 0: no destination would get traffic"),
        ];
        for (tcp, want) in cases {
            let got = run(tcp);
            assert!(
                got.iter()
                    .any(|d| d.split(':').skip(2).eq(want.split(':').skip(2))),
                "{tcp}\nwant {want}\ngot {got:?}"
            );
        }
    }
}
