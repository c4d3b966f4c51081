//! Named cases of Istio YAML in, the TLS of clusters, endpoints and inbound listeners out.

use super::*;
use crate::translate::{for_proxy, outbound_cluster_name};
use std::sync::Arc;
use weft_api::parse_file;
use weft_xds::node::ProxyIdentity;
use weft_xds::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment,
};
use weft_xds::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::ValidationContextType;
use weft_xds::pb::envoy::extensions::transport_sockets::tls::v3::CommonTlsContext;
use weft_xds::unpack;

/// `reviews` with two workloads with a sidecar (v1 in `bookinfo-reviews`, v2 with no service account)
/// and one without (v3); `ratings` beside it.
const REGISTRY: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}, {number: 9090, name: tcp, protocol: TCP}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1}
spec:
  address: 127.0.1.12
  labels: {app: reviews, version: v1, security.istio.io/tlsMode: istio}
  serviceAccount: bookinfo-reviews
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2}
spec:
  address: 127.0.1.13
  labels: {app: reviews, version: v2, security.istio.io/tlsMode: istio}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v3}
spec: {address: 127.0.1.14, labels: {app: reviews, version: v3}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings}
spec:
  hosts: [ratings.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.1.15, labels: {security.istio.io/tlsMode: istio}, serviceAccount: bookinfo-ratings}]
";

const REVIEWS: &str = "reviews.default.svc.cluster.local";

fn model_with(extra: &str, mesh: weft_api::MeshConfig) -> Model {
    let mut p = parse_file("registry.yaml", REGISTRY);
    let e = parse_file("extra.yaml", extra);
    assert!(
        p.diagnostics.is_empty() && e.diagnostics.is_empty(),
        "{:?} {:?}",
        p.diagnostics,
        e.diagnostics
    );
    p.resources.extend(e.resources);
    let res: Vec<Arc<Resource>> = p.resources.into_iter().map(Arc::new).collect();
    Model::build(1, &res, mesh)
}

fn model(extra: &str) -> Model {
    model_with(extra, weft_api::MeshConfig::default())
}

fn proxy(labels: &[(&str, &str)]) -> ProxyIdentity {
    ProxyIdentity {
        workload: "reviews-v1".into(),
        namespace: "default".into(),
        ip: "127.0.1.12".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        inbound_ports: vec![(9080, 19080), (9090, 19090)],
        ..Default::default()
    }
}

/// Cluster `name` as weftd sends it to a proxy in `default`; `None` when it is left out.
fn cluster(m: &Model, name: &str) -> Option<Cluster> {
    let res = for_proxy(m, &proxy(&[("app", "productpage")]));
    res.of(type_url::CLUSTER)
        .and_then(|c| c.get(name))
        .map(|any| unpack(any).expect("a cluster"))
}

fn upstream(socket: &TransportSocket) -> UpstreamTlsContext {
    assert_eq!(socket.name, "envoy.transport_sockets.tls");
    match &socket.config_type {
        Some(transport_socket::ConfigType::TypedConfig(any)) => unpack(any).expect("tls context"),
        other => panic!("no typed config: {other:?}"),
    }
}

fn common(ctx: &UpstreamTlsContext) -> &CommonTlsContext {
    ctx.common_tls_context.as_ref().expect("common context")
}

#[allow(deprecated)]
fn sans(v: &CertificateValidationContext) -> Vec<String> {
    v.match_subject_alt_names
        .iter()
        .map(|m| match &m.match_pattern {
            Some(MatchPattern::Exact(s)) => s.clone(),
            other => panic!("not exact: {other:?}"),
        })
        .collect()
}

/// The SANs and the ROOTCA reference of an ISTIO_MUTUAL context, checking the rest of its shape.
fn istio_mutual_sans(ctx: &UpstreamTlsContext) -> Vec<String> {
    let c = common(ctx);
    assert_eq!(c.tls_certificate_sds_secret_configs.len(), 1);
    assert_eq!(c.tls_certificate_sds_secret_configs[0].name, "default");
    assert_eq!(c.alpn_protocols, vec!["istio-peer-exchange", "istio"]);
    match &c.validation_context_type {
        Some(ValidationContextType::CombinedValidationContext(v)) => {
            let sds = v
                .validation_context_sds_secret_config
                .as_ref()
                .expect("ROOTCA");
            assert_eq!(sds.name, "ROOTCA");
            sans(v.default_validation_context.as_ref().expect("default"))
        }
        other => panic!("not a combined validation context: {other:?}"),
    }
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn auto_mtls_matches_endpoints_with_a_sidecar_and_speaks_plaintext_to_the_rest() {
    let m = model("");
    for (subset, sni) in [
        ("", "outbound_.9080_._.reviews.default.svc.cluster.local"),
        (
            "v1",
            "outbound_.9080_.v1_.reviews.default.svc.cluster.local",
        ),
    ] {
        let m = if subset.is_empty() {
            model("")
        } else {
            model("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  subsets: [{name: v1, labels: {version: v1}}]\n")
        };
        let c = cluster(&m, &outbound_cluster_name(9080, subset, REVIEWS)).expect("cluster");
        assert!(c.transport_socket.is_none(), "subset {subset:?}");
        let matches = &c.transport_socket_matches;
        assert_eq!(matches.len(), 2, "subset {subset:?}");
        assert_eq!(matches[0].name, "tlsMode-istio");
        assert_eq!(matches[0].r#match, Some(tls_mode_istio()));
        let ctx = upstream(matches[0].transport_socket.as_ref().expect("tls"));
        assert_eq!(ctx.sni, sni);
        assert_eq!(
            istio_mutual_sans(&ctx),
            names(&[
                "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
                "spiffe://cluster.local/ns/default/sa/default",
            ]),
            "every workload's service account, `default` when it names none"
        );
        assert_eq!(matches[1].name, "tlsMode-disabled");
        assert_eq!(matches[1].r#match, Some(Struct::default()), "matches any");
        let raw = matches[1].transport_socket.as_ref().expect("raw buffer");
        assert_eq!(raw.name, "envoy.transport_sockets.raw_buffer");
        let Some(transport_socket::ConfigType::TypedConfig(any)) = &raw.config_type else {
            panic!("raw buffer without config");
        };
        assert_eq!(any.type_url, RAW_BUFFER_TYPE);
    }
    // The TCP port too.
    let tcp = cluster(&m, &outbound_cluster_name(9090, "", REVIEWS)).expect("tcp cluster");
    assert_eq!(tcp.transport_socket_matches.len(), 2);
}

#[test]
fn only_endpoints_labelled_with_a_sidecar_carry_the_tls_mode() {
    let m = model("");
    let res = for_proxy(&m, &proxy(&[]));
    let cla: ClusterLoadAssignment = unpack(
        &res.of(type_url::ENDPOINT).expect("eds")[&outbound_cluster_name(9080, "", REVIEWS)],
    )
    .expect("decodes");
    let marked: Vec<(String, bool)> = cla.endpoints[0]
        .lb_endpoints
        .iter()
        .map(|e| {
            let Some(HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                panic!("no endpoint");
            };
            let Some(weft_xds::pb::envoy::config::core::v3::address::Address::SocketAddress(a)) =
                ep.address.as_ref().and_then(|a| a.address.clone())
            else {
                panic!("no address");
            };
            let md = e.metadata.as_ref().map(|m| {
                assert_eq!(
                    m.filter_metadata["envoy.transport_socket_match"],
                    tls_mode_istio()
                );
            });
            (a.address, md.is_some())
        })
        .collect();
    assert_eq!(
        marked,
        vec![
            ("127.0.1.12".to_string(), true),
            ("127.0.1.13".to_string(), true),
            ("127.0.1.14".to_string(), false),
        ]
    );
}

#[test]
fn no_auto_mtls_when_off_external_or_disabled_for_the_namespace() {
    let off = weft_api::MeshConfig {
        enable_auto_mtls: Some(false),
        ..Default::default()
    };
    let disable_ns = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: default}\nspec: {mtls: {mode: DISABLE}}\n";
    let disable_mesh = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: DISABLE}}\n";
    let strict_ns = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: default}\nspec: {mtls: {mode: STRICT}}\n";
    let disable_workload = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: reviews, namespace: default}\nspec: {selector: {matchLabels: {app: reviews}}, mtls: {mode: DISABLE}}\n";
    let external = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ext}\nspec:\n  hosts: [ext.example.com]\n  resolution: STATIC\n  ports: [{number: 9080, name: http, protocol: HTTP}]\n  endpoints: [{address: 127.0.2.1, labels: {security.istio.io/tlsMode: istio}}]\n";
    // (case, model, cluster, auto mTLS expected)
    let cases = [
        ("default: on", model(""), REVIEWS, true),
        ("enableAutoMtls: false", model_with("", off), REVIEWS, false),
        ("namespace DISABLE", model(disable_ns), REVIEWS, false),
        ("mesh DISABLE", model(disable_mesh), REVIEWS, false),
        ("namespace STRICT", model(strict_ns), REVIEWS, true),
        (
            "a workload policy does not decide for the service",
            model(disable_workload),
            REVIEWS,
            true,
        ),
        (
            "MESH_EXTERNAL (ServiceEntry's default location)",
            model(external),
            "ext.example.com",
            false,
        ),
    ];
    for (name, m, host, auto) in cases {
        let c = cluster(&m, &outbound_cluster_name(9080, "", host)).expect(name);
        assert_eq!(!c.transport_socket_matches.is_empty(), auto, "{name}");
        assert!(c.transport_socket.is_none(), "{name}");
    }
}

/// A DestinationRule for `reviews` with `tls` at `spec.trafficPolicy`.
fn dr_tls(tls: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews}}\nspec:\n  host: reviews\n  trafficPolicy:\n    tls: {tls}\n")
}

#[test]
fn destination_rule_tls_modes() {
    struct Case {
        name: &'static str,
        tls: &'static str,
        check: fn(&Cluster),
    }
    let cases = [
        Case {
            name: "DISABLE: plaintext, no matches",
            tls: "{mode: DISABLE}",
            check: |c| {
                assert!(c.transport_socket.is_none());
                assert!(c.transport_socket_matches.is_empty());
            },
        },
        Case {
            name: "no mode is DISABLE",
            tls: "{sni: a.example}",
            check: |c| {
                assert!(c.transport_socket.is_none());
                assert!(c.transport_socket_matches.is_empty());
            },
        },
        Case {
            name: "ISTIO_MUTUAL: the service's identities and Istio's SNI, for every endpoint",
            tls: "{mode: ISTIO_MUTUAL}",
            check: |c| {
                assert!(c.transport_socket_matches.is_empty());
                let ctx = upstream(c.transport_socket.as_ref().expect("tls"));
                assert_eq!(
                    ctx.sni,
                    "outbound_.9080_._.reviews.default.svc.cluster.local"
                );
                assert_eq!(
                    istio_mutual_sans(&ctx),
                    names(&[
                        "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
                        "spiffe://cluster.local/ns/default/sa/default",
                    ])
                );
            },
        },
        Case {
            name: "ISTIO_MUTUAL with the rule's SNI and SANs",
            tls: "{mode: ISTIO_MUTUAL, sni: reviews.example, subjectAltNames: [spiffe://cluster.local/ns/default/sa/other]}",
            check: |c| {
                let ctx = upstream(c.transport_socket.as_ref().expect("tls"));
                assert_eq!(ctx.sni, "reviews.example");
                assert_eq!(
                    istio_mutual_sans(&ctx),
                    names(&["spiffe://cluster.local/ns/default/sa/other"])
                );
            },
        },
        Case {
            name: "SIMPLE: the CA file, SANs and SNI, no client certificate",
            tls: "{mode: SIMPLE, caCertificates: /etc/certs/ca.pem, subjectAltNames: [reviews.example], sni: reviews.example}",
            check: |c| {
                assert!(c.transport_socket_matches.is_empty());
                let ctx = upstream(c.transport_socket.as_ref().expect("tls"));
                assert_eq!(ctx.sni, "reviews.example");
                let common = common(&ctx);
                assert!(common.tls_certificates.is_empty());
                assert!(common.tls_certificate_sds_secret_configs.is_empty());
                let Some(ValidationContextType::ValidationContext(v)) =
                    &common.validation_context_type
                else {
                    panic!("no validation context: {common:?}");
                };
                assert_eq!(
                    v.trusted_ca.as_ref().and_then(|d| d.specifier.clone()),
                    Some(data_source::Specifier::Filename("/etc/certs/ca.pem".into()))
                );
                assert!(v.system_root_certs.is_none());
                assert_eq!(sans(v), names(&["reviews.example"]));
            },
        },
        Case {
            name: "SIMPLE without caCertificates trusts the system's roots",
            tls: "{mode: SIMPLE}",
            check: |c| {
                let ctx = upstream(c.transport_socket.as_ref().expect("tls"));
                let Some(ValidationContextType::ValidationContext(v)) =
                    &common(&ctx).validation_context_type
                else {
                    panic!("no validation context");
                };
                assert!(v.trusted_ca.is_none());
                assert!(v.system_root_certs.is_some());
                assert_eq!(ctx.sni, "");
            },
        },
        Case {
            name: "SIMPLE with insecureSkipVerify: no validation",
            tls: "{mode: SIMPLE, caCertificates: /etc/certs/ca.pem, insecureSkipVerify: true}",
            check: |c| {
                let ctx = upstream(c.transport_socket.as_ref().expect("tls"));
                assert!(common(&ctx).validation_context_type.is_none());
            },
        },
        Case {
            name: "MUTUAL: the client's certificate and key from files",
            tls: "{mode: MUTUAL, clientCertificate: /etc/certs/cert.pem, privateKey: /etc/certs/key.pem, caCertificates: /etc/certs/ca.pem}",
            check: |c| {
                let ctx = upstream(c.transport_socket.as_ref().expect("tls"));
                let common = common(&ctx);
                assert_eq!(common.tls_certificates.len(), 1);
                let file = |d: &Option<DataSource>| d.as_ref().and_then(|d| d.specifier.clone());
                assert_eq!(
                    file(&common.tls_certificates[0].certificate_chain),
                    Some(data_source::Specifier::Filename("/etc/certs/cert.pem".into()))
                );
                assert_eq!(
                    file(&common.tls_certificates[0].private_key),
                    Some(data_source::Specifier::Filename("/etc/certs/key.pem".into()))
                );
                assert!(matches!(
                    common.validation_context_type,
                    Some(ValidationContextType::ValidationContext(_))
                ));
            },
        },
    ];
    for case in cases {
        let m = model(&dr_tls(case.tls));
        let c = cluster(&m, &outbound_cluster_name(9080, "", REVIEWS))
            .unwrap_or_else(|| panic!("{}: cluster left out", case.name));
        let name = case.name;
        let check = case.check;
        let r = std::panic::catch_unwind(|| check(&c));
        assert!(r.is_ok(), "case {name:?} failed");
    }
}

#[test]
fn subset_and_port_settings_override_the_hosts() {
    let m = model(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    tls: {mode: DISABLE}
    portLevelSettings:
    - {port: {number: 9090}, tls: {mode: ISTIO_MUTUAL}}
  subsets:
  - {name: v1, labels: {version: v1}, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      tls: {mode: ISTIO_MUTUAL}
      portLevelSettings: [{port: {number: 9080}, tls: {mode: DISABLE}}]
  - {name: v3, labels: {version: v3}}
",
    );
    // (cluster, TLS expected)
    for (port, subset, tls) in [
        (9080, "", false),
        (9090, "", true),
        (9080, "v1", true),
        (9090, "v1", true),
        (9080, "v2", false),
        (9090, "v2", true),
        (9080, "v3", false),
        (9090, "v3", true),
    ] {
        let name = outbound_cluster_name(port, subset, REVIEWS);
        let c = cluster(&m, &name).expect("cluster");
        assert_eq!(c.transport_socket.is_some(), tls, "{name}");
        assert!(c.transport_socket_matches.is_empty(), "{name}");
        if tls {
            let ctx = upstream(c.transport_socket.as_ref().expect("tls"));
            assert_eq!(ctx.sni, istio_sni(port, subset, REVIEWS), "{name}");
        }
    }
}

#[test]
fn tls_settings_weftd_cannot_honour_leave_the_cluster_out_with_a_message() {
    let svc_port = |m: &Model| {
        let svc = m.services[REVIEWS].clone();
        let port = svc.ports[0].clone();
        (svc, port)
    };
    let cases = [
        (
            "{mode: SIMPLE, credentialName: reviews-cert}",
            "DestinationRule default/reviews: spec.trafficPolicy.tls.credentialName: credentialName is not supported for sidecars yet; give clientCertificate, privateKey and caCertificates as files",
        ),
        (
            "{mode: MUTUAL, caCertificates: /etc/certs/ca.pem}",
            "DestinationRule default/reviews: spec.trafficPolicy.tls: mode MUTUAL needs clientCertificate and privateKey",
        ),
    ];
    for (tls, message) in cases {
        let m = model(&dr_tls(tls));
        assert!(
            cluster(&m, &outbound_cluster_name(9080, "", REVIEWS)).is_none(),
            "{tls}: left out"
        );
        let (svc, port) = svc_port(&m);
        let e = client_tls(&m, &svc, &port, "", MtlsMode::Permissive).expect_err(tls);
        assert_eq!(e.to_string(), message);
    }
    // A mode the analyzer would refuse, reached anyway: named with its field.
    let m = model("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  subsets: [{name: v1, labels: {version: v1}, trafficPolicy: {tls: {mode: BOGUS}}}]\n");
    let (svc, port) = svc_port(&m);
    let e = client_tls(&m, &svc, &port, "v1", MtlsMode::Permissive).expect_err("bogus");
    assert_eq!(
        e.to_string(),
        "DestinationRule default/reviews: spec.subsets[0].trafficPolicy.tls.mode: unknown TLS mode \"BOGUS\" (DISABLE, SIMPLE, MUTUAL or ISTIO_MUTUAL)"
    );
}

/// The inbound listener of port `port` of [`proxy`] with `labels`, under `extra`.
fn inbound(extra: &str, port: u32) -> Listener {
    let m = model(extra);
    let res = for_proxy(&m, &proxy(&[("app", "reviews"), ("version", "v1")]));
    unpack(&res.of(type_url::LISTENER).expect("lds")[&format!("inbound_127.0.1.12_{port}")])
        .expect("a listener")
}

fn downstream(chain: &FilterChain) -> DownstreamTlsContext {
    let socket = chain.transport_socket.as_ref().expect("tls");
    assert_eq!(socket.name, "envoy.transport_sockets.tls");
    match &socket.config_type {
        Some(transport_socket::ConfigType::TypedConfig(any)) => {
            assert_eq!(any.type_url, type_url::DOWNSTREAM_TLS_CONTEXT);
            unpack(any).expect("tls context")
        }
        other => panic!("no typed config: {other:?}"),
    }
}

/// The transport protocol each chain matches (`None`: the chain matches everything), checking that
/// every chain carries the same filters and that TLS chains require a mesh certificate.
fn chains(l: &Listener) -> Vec<Option<String>> {
    let filters = &l.filter_chains[0].filters;
    l.filter_chains
        .iter()
        .map(|c| {
            assert_eq!(&c.filters, filters, "{}: chains differ in filters", l.name);
            let proto = c
                .filter_chain_match
                .as_ref()
                .map(|m| m.transport_protocol.clone());
            if proto.as_deref() == Some("tls") {
                let ctx = downstream(c);
                assert_eq!(
                    ctx.require_client_certificate,
                    Some(BoolValue { value: true })
                );
                let common = ctx.common_tls_context.expect("common");
                assert_eq!(common.tls_certificate_sds_secret_configs[0].name, "default");
                assert_eq!(common.alpn_protocols, vec!["h2", "http/1.1"]);
                let Some(ValidationContextType::CombinedValidationContext(v)) =
                    common.validation_context_type
                else {
                    panic!("no combined validation");
                };
                assert_eq!(
                    v.validation_context_sds_secret_config.map(|s| s.name),
                    Some("ROOTCA".into())
                );
                assert_eq!(v.default_validation_context, Some(Default::default()));
            } else {
                assert!(c.transport_socket.is_none(), "{}: plaintext chain", l.name);
            }
            proto
        })
        .collect()
}

fn has_tls_inspector(l: &Listener) -> bool {
    match l.listener_filters.as_slice() {
        [] => false,
        [f] => {
            assert_eq!(f.name, "envoy.filters.listener.tls_inspector");
            let Some(listener_filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                panic!("inspector without config");
            };
            assert_eq!(any.type_url, TLS_INSPECTOR_TYPE);
            true
        }
        more => panic!("listener filters: {more:?}"),
    }
}

#[test]
fn inbound_chains_follow_peer_authentication() {
    let pa = |ns: &str, spec: &str| {
        format!("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: pa, namespace: {ns}}}\nspec: {spec}\n")
    };
    let tls = || Some("tls".to_string());
    let raw = || Some("raw_buffer".to_string());
    // (case, policies, port, chains)
    let cases: Vec<(&str, String, u32, Vec<Option<String>>)> = vec![
        ("no policy: PERMISSIVE", String::new(), 9080, vec![tls(), raw()]),
        (
            "namespace STRICT",
            pa("default", "{mtls: {mode: STRICT}}"),
            9080,
            vec![tls()],
        ),
        (
            "mesh STRICT, TCP port",
            pa("istio-system", "{mtls: {mode: STRICT}}"),
            9090,
            vec![tls()],
        ),
        (
            "namespace PERMISSIVE, TCP port",
            pa("default", "{mtls: {mode: PERMISSIVE}}"),
            9090,
            vec![tls(), raw()],
        ),
        (
            "namespace DISABLE: one plaintext chain",
            pa("default", "{mtls: {mode: DISABLE}}"),
            9080,
            vec![None],
        ),
        (
            "workload STRICT, port 9080 DISABLE",
            pa(
                "default",
                "{selector: {matchLabels: {app: reviews}}, mtls: {mode: STRICT}, portLevelMtls: {9080: {mode: DISABLE}}}",
            ),
            9080,
            vec![None],
        ),
        (
            "workload STRICT, other port",
            pa(
                "default",
                "{selector: {matchLabels: {app: reviews}}, mtls: {mode: STRICT}, portLevelMtls: {9080: {mode: DISABLE}}}",
            ),
            9090,
            vec![tls()],
        ),
    ];
    for (name, policies, port, want) in cases {
        let l = inbound(&policies, port);
        assert_eq!(chains(&l), want, "{name}");
        assert_eq!(has_tls_inspector(&l), want != vec![None], "{name}");
    }
}

#[test]
fn identities_and_sni_are_istios() {
    assert_eq!(
        spiffe_id("cluster.local", "default", "bookinfo-reviews"),
        "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
    );
    assert_eq!(
        istio_sni(9080, "", REVIEWS),
        "outbound_.9080_._.reviews.default.svc.cluster.local"
    );
    let m = model_with(
        "",
        weft_api::MeshConfig {
            trust_domain: "example.org".into(),
            ..Default::default()
        },
    );
    let ratings = m.services["ratings.default.svc.cluster.local"].clone();
    assert_eq!(
        service_identities(&m, &ratings),
        names(&["spiffe://example.org/ns/default/sa/bookinfo-ratings"]),
        "inline endpoints' service accounts, in the mesh's trust domain"
    );
}

#[test]
fn a_change_of_peer_authentication_or_mesh_tls_settings_is_seen() {
    let a = model("");
    let b = model("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: default}\nspec: {mtls: {mode: DISABLE}}\n");
    let c = model_with(
        "",
        weft_api::MeshConfig {
            enable_auto_mtls: Some(false),
            ..Default::default()
        },
    );
    assert!(same_client_tls_inputs(&a, &model("")));
    assert!(!same_client_tls_inputs(&a, &b));
    assert!(!same_client_tls_inputs(&a, &c));
}
