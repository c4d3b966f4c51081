use super::*;
use weft_api::parse_file;

/// A model of `text`'s resources with `mesh` as MeshConfig.
pub(crate) fn model_of(text: &str, mesh: MeshConfigText) -> Model {
    let p = parse_file("s.yaml", text);
    assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
    for r in &p.resources {
        let errors: Vec<String> = weft_api::analyze::validate(r)
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
    }
    let mesh = match mesh.0 {
        "" => weft_api::MeshConfig::default(),
        m => parse_file("mesh.yaml", m).mesh.expect("mesh config"),
    };
    let resources: Vec<Arc<Resource>> = p.resources.into_iter().map(Arc::new).collect();
    Model::build(1, &resources, mesh)
}

/// MeshConfig YAML (`""`: the defaults).
pub(crate) struct MeshConfigText(pub &'static str);

pub(crate) fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn doc(kind: &str, ns: &str, name: &str, spec: &str) -> String {
    format!("apiVersion: security.istio.io/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}---\n")
}

fn names(rs: &[&Arc<Resource>]) -> Vec<String> {
    rs.iter()
        .map(|r| format!("{}/{}", r.metadata.namespace, r.metadata.name))
        .collect()
}

#[test]
fn peer_authentication_precedence() {
    let pa = |ns: &str, name: &str, spec: &str| doc("PeerAuthentication", ns, name, spec);
    let text = [
        pa("weft-system", "mesh", "  mtls: {mode: STRICT}\n"),
        pa("prod", "ns", "  mtls: {mode: PERMISSIVE}\n"),
        pa(
            "prod",
            "db",
            "  selector: {matchLabels: {app: db}}\n  mtls: {mode: UNSET}\n  portLevelMtls:\n    5432: {mode: DISABLE}\n",
        ),
        pa("legacy", "ns", "  mtls: {mode: UNSET}\n"),
    ]
    .concat();
    let model = model_of(&text, MeshConfigText("rootNamespace: weft-system\n"));
    let db = labels(&[("app", "db")]);
    let web = labels(&[("app", "web")]);
    // (case, namespace, labels, port, mode)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a BTreeMap<String, String>,
        u32,
        MtlsMode,
    );
    let cases: &[Case] = &[
        (
            "mesh policy in the configured root namespace",
            "default",
            &web,
            80,
            MtlsMode::Strict,
        ),
        (
            "namespace over mesh",
            "prod",
            &web,
            80,
            MtlsMode::Permissive,
        ),
        (
            "workload UNSET inherits the namespace",
            "prod",
            &db,
            80,
            MtlsMode::Permissive,
        ),
        ("port level over all", "prod", &db, 5432, MtlsMode::Disable),
        (
            "namespace UNSET inherits the mesh",
            "legacy",
            &web,
            80,
            MtlsMode::Strict,
        ),
    ];
    for (name, ns, l, port, want) in cases {
        assert_eq!(
            peer_authentication(&model, ns, l, *port),
            *want,
            "case {name}"
        );
    }
    let empty = model_of("", MeshConfigText(""));
    assert_eq!(
        peer_authentication(&empty, "default", &web, 80),
        MtlsMode::Permissive
    );
    assert!(empty.security.is_empty());
}

#[test]
fn policies_apply_root_namespace_first_then_by_name() {
    let ap = |ns: &str, name: &str, spec: &str| doc("AuthorizationPolicy", ns, name, spec);
    let text = [
        ap("default", "b-all", "  {}\n"),
        ap(
            "default",
            "a-reviews",
            "  selector: {matchLabels: {app: reviews}}\n",
        ),
        ap(
            "default",
            "ratings",
            "  selector: {matchLabels: {app: ratings}}\n",
        ),
        ap("istio-system", "mesh", "  {}\n"),
        ap(
            "istio-system",
            "v1-everywhere",
            "  selector: {matchLabels: {version: v1}}\n",
        ),
        ap("other", "all", "  {}\n"),
        ap(
            "default",
            "gateway",
            "  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]\n",
        ),
        ap(
            "default",
            "empty-selector",
            "  selector: {matchLabels: {}}\n",
        ),
    ]
    .concat();
    let model = model_of(&text, MeshConfigText(""));
    // (case, namespace, labels, the policies in order)
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            "reviews v1",
            "default",
            &[("app", "reviews"), ("version", "v1")],
            &[
                "istio-system/mesh",
                "istio-system/v1-everywhere",
                "default/a-reviews",
                "default/b-all",
                "default/empty-selector",
            ],
        ),
        (
            "ratings v2",
            "default",
            &[("app", "ratings"), ("version", "v2")],
            &[
                "istio-system/mesh",
                "default/b-all",
                "default/empty-selector",
                "default/ratings",
            ],
        ),
        (
            "another namespace",
            "other",
            &[("version", "v1")],
            &[
                "istio-system/mesh",
                "istio-system/v1-everywhere",
                "other/all",
            ],
        ),
        (
            "the root namespace itself",
            "istio-system",
            &[],
            &["istio-system/mesh"],
        ),
    ];
    for (name, ns, l, want) in cases {
        let got = names(&authorization_policies(&model, ns, &labels(l)));
        assert_eq!(got, *want, "case {name}");
    }
}

#[test]
fn request_authentications_select_like_authorization_policies() {
    let ra = |ns: &str, name: &str, spec: &str| doc("RequestAuthentication", ns, name, spec);
    let rule = "  jwtRules: [{issuer: a, jwksUri: https://a.example/jwks}]\n";
    let text = [
        ra("istio-system", "mesh", rule),
        ra(
            "default",
            "reviews",
            &format!("  selector: {{matchLabels: {{app: reviews}}}}\n{rule}"),
        ),
        ra(
            "default",
            "gateway",
            &format!("  targetRef: {{kind: Gateway, group: gateway.networking.k8s.io, name: gw}}\n{rule}"),
        ),
    ]
    .concat();
    let model = model_of(&text, MeshConfigText(""));
    let got = names(&request_authentications(
        &model,
        "default",
        &labels(&[("app", "reviews")]),
    ));
    assert_eq!(got, ["istio-system/mesh", "default/reviews"]);
    let got = names(&request_authentications(
        &model,
        "default",
        &labels(&[("app", "ratings")]),
    ));
    assert_eq!(got, ["istio-system/mesh"]);
}
