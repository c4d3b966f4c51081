//! Precedence: which Telemetry resources a proxy gets, and what they add up to on each side.

use super::*;
use weft_api::parse_file;

/// A mesh-wide, a namespace and a workload Telemetry, as in Istio's docs.
const LEVELS: &str = "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - randomSamplingPercentage: 10
    customTags:
      cluster: {literal: {value: east}}
      team: {literal: {value: mesh}}
  accessLogging:
  - providers: [{name: envoy}]
  metrics:
  - overrides:
    - match: {metric: REQUEST_SIZE}
      disabled: true
    - tagOverrides:
        user: {value: \"request.headers['x-user']\"}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ns, namespace: shop}
spec:
  tracing:
  - customTags:
      team: {literal: {value: shop}}
  accessLogging:
  - filter: {expression: 'response.code >= 400'}
  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNT, mode: SERVER}
      tagOverrides:
        user: {operation: REMOVE}
        request_protocol: {operation: REMOVE}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: reviews, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  tracing:
  - match: {mode: CLIENT}
    randomSamplingPercentage: 100
    useRequestIdForTraceSampling: false
  metrics:
  - overrides:
    - match: {metric: REQUEST_SIZE, mode: CLIENT}
      disabled: false
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: other, namespace: default}
spec:
  accessLogging:
  - disabled: true
";

fn model(yaml: &str, mesh: MeshConfig) -> Model {
    let p = parse_file("t.yaml", yaml);
    assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
    let res: Vec<Arc<Resource>> = p.resources.into_iter().map(Arc::new).collect();
    Model::build(1, &res, mesh)
}

fn labels(app: &str) -> BTreeMap<String, String> {
    [("app".to_string(), app.to_string())].into()
}

fn applied(m: &Model, ns: &str, app: &str, client: bool) -> Applied {
    let chain = Chain::of(m, ns, &labels(app));
    apply(&chain.resources(m), &m.mesh, client)
}

#[test]
fn chain_picks_mesh_namespace_and_workload() {
    let m = model(LEVELS, MeshConfig::default());
    let c = Chain::of(&m, "shop", &labels("reviews"));
    assert_eq!(
        (
            c.mesh.as_deref(),
            c.namespace.as_deref(),
            c.workload.as_deref()
        ),
        (
            Some("istio-system/mesh-default"),
            Some("shop/ns"),
            Some("shop/reviews")
        )
    );
    let c = Chain::of(&m, "shop", &labels("ratings"));
    assert_eq!(c.workload, None, "the selector does not match");
    let c = Chain::of(&m, "elsewhere", &labels("reviews"));
    assert_eq!(
        (c.namespace, c.workload),
        (None, None),
        "a namespace's resources stay in it"
    );
    // In the root namespace, the mesh's resource is not applied twice.
    let c = Chain::of(&m, "istio-system", &labels("x"));
    assert_eq!(
        (c.mesh.as_deref(), c.namespace),
        (Some("istio-system/mesh-default"), None)
    );
    // Another root namespace: istio-system's resource is then a namespace's.
    let mesh = MeshConfig {
        root_namespace: "weft-system".into(),
        ..Default::default()
    };
    let m = model(LEVELS, mesh);
    assert_eq!(Chain::of(&m, "shop", &labels("x")).mesh, None);
}

#[test]
fn tracing_fields_override_and_custom_tags_merge() {
    let m = model(LEVELS, MeshConfig::default());
    let server = applied(&m, "shop", "reviews", false)
        .tracing
        .expect("tracing");
    assert_eq!(
        server.sampling,
        Some(10.0),
        "the CLIENT rule is not the server's"
    );
    assert!(server.use_request_id_for_trace_sampling);
    let tags: Vec<(&str, &str)> = server
        .custom_tags
        .iter()
        .map(|(k, v)| {
            (
                k.as_str(),
                v.literal.as_ref().map_or("", |l| l.value.as_str()),
            )
        })
        .collect();
    assert_eq!(tags, [("cluster", "east"), ("team", "shop")]);
    let client = applied(&m, "shop", "reviews", true)
        .tracing
        .expect("tracing");
    assert_eq!(client.sampling, Some(100.0), "the workload's rule wins");
    assert!(!client.use_request_id_for_trace_sampling);
    assert_eq!(client.custom_tags.len(), 2, "tags still merged from above");
    assert_eq!(
        applied(&m, "default", "x", true)
            .tracing
            .expect("mesh")
            .sampling,
        Some(10.0)
    );
}

#[test]
fn access_logging_is_per_provider() {
    let m = model(LEVELS, MeshConfig::default());
    let shop = applied(&m, "shop", "reviews", true)
        .access_logs
        .expect("logs");
    assert_eq!(
        shop,
        [(
            "envoy".to_string(),
            AccessLog {
                disabled: false,
                filter: Some("response.code >= 400".into())
            }
        )]
        .into(),
        "the namespace's rule without providers applies to the mesh's provider"
    );
    let default = applied(&m, "default", "x", false)
        .access_logs
        .expect("logs");
    assert!(default["envoy"].disabled, "{default:?}");
    let mesh_only = applied(&m, "istio-system", "x", false)
        .access_logs
        .expect("logs");
    assert_eq!(mesh_only["envoy"], AccessLog::default());
    // Without any Telemetry, nothing is said: MeshConfig's accessLogFile holds.
    let none = model("", MeshConfig::default());
    assert_eq!(applied(&none, "shop", "reviews", true), Applied::default());
}

#[test]
fn metric_overrides_apply_mesh_then_namespace_then_workload() {
    let m = model(LEVELS, MeshConfig::default());
    let server = applied(&m, "shop", "reviews", false).metrics;
    let size = &server["request_bytes"];
    assert!(
        size.drop,
        "the mesh disables it; the workload's CLIENT rule does not reach here"
    );
    assert_eq!(
        size.dimensions.get("user").map(String::as_str),
        Some("request.headers['x-user']")
    );
    let count = &server["requests_total"];
    assert!(!count.drop);
    assert!(
        count.dimensions.is_empty(),
        "the namespace removes what the mesh added"
    );
    assert_eq!(
        count.tags_to_remove.iter().collect::<Vec<_>>(),
        ["request_protocol", "user"]
    );
    let client = applied(&m, "shop", "reviews", true).metrics;
    assert!(
        !client["request_bytes"].drop,
        "the workload enables it again"
    );
    assert!(
        client["requests_total"].tags_to_remove.is_empty(),
        "SERVER rule"
    );
    assert_eq!(client.len(), 10, "ALL_METRICS reaches every metric");
    // A metrics rule for another provider changes nothing weft records.
    let other = model(
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: m, namespace: istio-system}\nspec:\n  metrics:\n  - providers: [{name: stackdriver}]\n    overrides: [{disabled: true}]\n",
        MeshConfig::default(),
    );
    assert!(applied(&other, "shop", "x", true).metrics.is_empty());
}

#[test]
fn a_telemetry_change_reaches_the_proxies_it_applies_to() {
    use crate::translate::{for_proxy, Scope};
    use weft_xds::node::ProxyIdentity;
    let proxy = |app: &str| ProxyIdentity {
        workload: format!("{app}-v1"),
        namespace: "shop".into(),
        ip: "127.0.1.20".into(),
        labels: labels(app),
        inbound_ports: vec![(9080, 19080)],
        ..Default::default()
    };
    let before = model("", MeshConfig::default());
    let after = model(LEVELS, MeshConfig::default());
    // Outbound listeners are shared by scope: the workload Telemetry is part of the scope.
    assert_ne!(
        Scope::of(&after, &proxy("reviews")),
        Scope::of(&after, &proxy("ratings"))
    );
    assert_eq!(
        Scope::of(&before, &proxy("reviews")),
        Scope::of(&before, &proxy("ratings"))
    );
    for app in ["reviews", "ratings"] {
        let a = for_proxy(&before, &proxy(app));
        let b = for_proxy(&after, &proxy(app));
        assert_ne!(
            a.of(weft_xds::type_url::LISTENER),
            b.of(weft_xds::type_url::LISTENER),
            "{app}: its listeners change"
        );
    }
}
