//! The security kinds: Istio's own examples parse unchanged in both API versions, and every problem the
//! checks find is pinned with its file, line, resource and field.

use super::*;
use crate::analyze::analyze;
use crate::parse::parse_file;

/// Istio's examples from the comments of istio/api's `security/v1beta1/*.proto` and the security tasks
/// on istio.io, unchanged.
const ISTIO_EXAMPLES: &str = r#"apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: foo
spec:
  mtls:
    mode: STRICT
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: bar
spec:
  mtls:
    mode: PERMISSIVE
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: finance
  namespace: foo
spec:
  selector:
    matchLabels:
      app: finance
  mtls:
    mode: STRICT
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: finance-8080
  namespace: foo
spec:
  selector:
    matchLabels:
      app: finance
  mtls:
    mode: STRICT
  portLevelMtls:
    8080:
      mode: DISABLE
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: finance-unset
  namespace: foo
spec:
  selector:
    matchLabels:
      app: finance
  mtls:
    mode: UNSET
  portLevelMtls:
    8080:
      mode: DISABLE
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: httpbin
  namespace: foo
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/sleep"]
    - source:
        namespaces: ["test"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/info*"]
    - operation:
        methods: ["POST"]
        paths: ["/data"]
    when:
    - key: request.auth.claims[iss]
      values: ["https://accounts.google.com"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-post-8080
  namespace: foo
spec:
  action: DENY
  rules:
  - to:
    - operation:
        methods: ["POST"]
        ports: ["8080"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  namespace: ns1
  name: anyname
spec:
  selector:
    matchLabels:
      app: myapi
  action: AUDIT
  rules:
  - to:
    - operation:
        methods: ["GET"]
        paths: ["/user/profile/*"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
 name: allow-nothing
 namespace: foo
spec:
  {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
 name: allow-all
 namespace: foo
spec:
 rules:
 - {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
 name: allow-nothing-v1
 namespace: istio-system
spec:
 selector:
   matchLabels:
     version: v1
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: dry-run-example
  annotations:
    "istio.io/dry-run": "true"
spec:
  selector:
    matchLabels:
      app: httpbin
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/headers"]
        ports: ["8000"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ext-authz
  namespace: istio-system
spec:
  selector:
    matchLabels:
      app: istio-ingressgateway
  action: CUSTOM
  provider:
    name: "my-custom-authz"
  rules:
  - to:
    - operation:
        paths: ["/admin/*"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: templates
  namespace: foo
spec:
  rules:
  - to:
    - operation:
        paths: ["/foo/{*}", "/foo/{**}/", "/foo/{*}/bar/{**}"]
        notHosts: ["*.example.com"]
        notMethods: ["DELETE"]
    when:
    - key: source.ip
      notValues: ["10.0.0.0/8"]
    - key: request.headers[version]
      values: ["v1", "v2"]
    - key: destination.port
      values: ["9080"]
    - key: connection.sni
      values: ["*.example.com"]
    - key: request.auth.claims[nested][key]
      values: ["a"]
    from:
    - source:
        serviceAccounts: ["sleep", "other/curl"]
        notIpBlocks: ["203.0.113.4"]
        remoteIpBlocks: ["192.0.2.0/24"]
        trustDomains: ["cluster.local"]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: httpbin
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  jwtRules:
  - issuer: "issuer-foo"
    jwksUri: https://example.com/.well-known/jwks.json
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: require-jwt
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  rules:
  - from:
    - source:
        requestPrincipals: ["*"]
  - to:
    - operation:
        paths: ["/healthz"]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: two-issuers
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  jwtRules:
  - issuer: "issuer-foo"
  - issuer: "issuer-bar"
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: all-fields
  namespace: istio-system
spec:
  jwtRules:
  - issuer: https://example.com
    audiences:
    - bookstore_android.apps.example.com
    - bookstore_web.apps.example.com
    jwks: '{"keys": [{"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}]}'
    fromHeaders:
    - name: x-jwt-assertion
      prefix: "Bearer "
    fromParams:
    - "my_token"
    fromCookies: ["session"]
    outputPayloadToHeader: x-jwt-payload
    forwardOriginalToken: true
    outputClaimToHeaders:
    - header: x-sub
      claim: sub
    timeout: 3s
    spaceDelimitedClaims:
    - "custom_scope"
    - "provider.login.scope"
"#;

/// What the checks say of a set of documents: parse problems, then each resource's own problems.
fn problems(text: &str) -> Vec<String> {
    let p = parse_file("s.yaml", text);
    let mut out: Vec<String> = p.diagnostics.iter().map(|d| d.to_string()).collect();
    for r in &p.resources {
        out.extend(crate::analyze::validate(r).iter().map(|d| d.to_string()));
    }
    out
}

fn doc(kind: &str, spec: &str) -> String {
    format!("apiVersion: security.istio.io/v1\nkind: {kind}\nmetadata:\n  name: p\n  namespace: foo\nspec:\n{spec}")
}

#[test]
fn istios_examples_parse_unchanged_in_both_versions() {
    for v in SECURITY_VERSIONS {
        let text = ISTIO_EXAMPLES.replace("security.istio.io/v1\n", &format!("{v}\n"));
        let p = parse_file("s.yaml", &text);
        assert!(p.diagnostics.is_empty(), "{v}: {:?}", p.diagnostics);
        assert_eq!(p.resources.len(), 18, "{v}");
        for r in &p.resources {
            let errors: Vec<String> = crate::analyze::validate(r)
                .iter()
                .filter(|d| d.is_error())
                .map(|d| d.to_string())
                .collect();
            assert!(errors.is_empty(), "{v}: {errors:?}");
        }
    }
    let p = parse_file("s.yaml", ISTIO_EXAMPLES);
    let pa = p.resources[3].as_peer_authentication().expect("pa");
    assert_eq!(
        pa.port_level_mtls[&8080].mode,
        peer_authentication::Mode::Disable
    );
    let ap = p.resources[5].as_authorization_policy().expect("ap");
    assert_eq!(ap.rules[0].from.len(), 2);
    assert_eq!(ap.rules[0].when[0].key, "request.auth.claims[iss]");
    assert!(is_dry_run(&p.resources[11]));
    assert!(!is_dry_run(&p.resources[5]));
    let ra = p.resources[17].as_request_authentication().expect("ra");
    assert_eq!(ra.jwt_rules[0].from_headers[0].prefix, "Bearer ");
    assert!(ra.jwt_rules[0].forward_original_token);
}

#[test]
fn each_problem_names_the_field() {
    let ap = |spec: &str| doc("AuthorizationPolicy", spec);
    let pa = |spec: &str| doc("PeerAuthentication", spec);
    let ra = |spec: &str| doc("RequestAuthentication", spec);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown mode",
            pa("  mtls: {mode: STRICTER}\n"),
            "s.yaml:7: PeerAuthentication foo/p: spec.mtls.mode: [IST0106] unknown variant `STRICTER`, expected one of `UNSET`, `DISABLE`, `PERMISSIVE`, `STRICT`",
        ),
        (
            "port-level mode",
            pa("  selector: {matchLabels: {app: a}}\n  portLevelMtls:\n    8080: {mode: OFF}\n"),
            "s.yaml:9: PeerAuthentication foo/p: spec.portLevelMtls.8080.mode: [IST0106] unknown variant `OFF`, expected one of `UNSET`, `DISABLE`, `PERMISSIVE`, `STRICT`",
        ),
        (
            "port-level key",
            pa("  selector: {matchLabels: {app: a}}\n  portLevelMtls:\n    http: {mode: STRICT}\n"),
            "s.yaml:9: PeerAuthentication foo/p: spec.portLevelMtls: [IST0106] port \"http\" is not a port number",
        ),
        (
            "port-level without a selector",
            pa("  mtls: {mode: STRICT}\n  portLevelMtls:\n    8080: {mode: DISABLE}\n"),
            "s.yaml:8: PeerAuthentication foo/p: spec.portLevelMtls: portLevelMtls needs a selector with labels: mesh- and namespace-wide PeerAuthentications cannot set port-level modes (as in Istio)",
        ),
        (
            "port out of range",
            pa("  selector: {matchLabels: {app: a}}\n  portLevelMtls:\n    70000: {mode: DISABLE}\n"),
            "s.yaml:9: PeerAuthentication foo/p: spec.portLevelMtls.70000: port 70000 is not between 1 and 65535",
        ),
        (
            "unknown action",
            ap("  action: REJECT\n"),
            "s.yaml:7: AuthorizationPolicy foo/p: spec.action: [IST0106] unknown variant `REJECT`, expected one of `ALLOW`, `DENY`, `AUDIT`, `CUSTOM`",
        ),
        (
            "unknown field in a source",
            ap("  rules:\n  - from:\n    - source:\n        principal: [a]\n"),
            "s.yaml:10: AuthorizationPolicy foo/p: spec.rules[0].from[0].source.principal: [IST0106] unknown field (known fields: principals, notPrincipals, requestPrincipals, notRequestPrincipals, namespaces, notNamespaces, serviceAccounts, notServiceAccounts, ipBlocks, notIpBlocks, remoteIpBlocks, notRemoteIpBlocks, trustDomains, notTrustDomains)",
        ),
        (
            "serviceAccounts with principals",
            ap("  rules:\n  - from:\n    - source:\n        principals: [cluster.local/ns/foo/sa/a]\n        serviceAccounts: [foo/a]\n"),
            "s.yaml:11: AuthorizationPolicy foo/p: spec.rules[0].from[0].source.serviceAccounts: serviceAccounts cannot be set with principals or namespaces (the same identity, said twice)",
        ),
        (
            "serviceAccounts with namespaces",
            ap("  rules:\n  - from:\n    - source:\n        namespaces: [foo]\n        notServiceAccounts: [bar]\n"),
            "s.yaml:11: AuthorizationPolicy foo/p: spec.rules[0].from[0].source.serviceAccounts: serviceAccounts cannot be set with principals or namespaces (the same identity, said twice)",
        ),
        (
            "a wildcard service account",
            ap("  rules:\n  - from:\n    - source:\n        serviceAccounts: [\"foo/*\"]\n"),
            "s.yaml:10: AuthorizationPolicy foo/p: spec.rules[0].from[0].source.serviceAccounts[0]: service account \"foo/*\": wildcards are not allowed",
        ),
        (
            "condition without values",
            ap("  rules:\n  - when:\n    - key: source.ip\n      values: [10.0.0.1]\n    - key: source.namespace\n"),
            "s.yaml:11: AuthorizationPolicy foo/p: spec.rules[0].when[1]: a condition needs values or notValues",
        ),
        (
            "unknown condition key",
            ap("  rules:\n  - when:\n    - key: source.ip\n      values: [10.0.0.1]\n    - key: request.time\n      values: [\"2020\"]\n"),
            "s.yaml:11: AuthorizationPolicy foo/p: spec.rules[0].when[1].key: unknown condition key \"request.time\" (weft knows request.headers[<name>], source.ip, remote.ip, source.namespace, source.principal, source.serviceAccount, source.trustDomain, request.auth.principal, request.auth.audiences, request.auth.presenter, request.auth.claims[<name>], destination.ip, destination.port, connection.sni, experimental.envoy.filters.<filter>[<key>])",
        ),
        (
            "condition key without a name",
            ap("  rules:\n  - when:\n    - key: request.headers\n      values: [a]\n"),
            "s.yaml:9: AuthorizationPolicy foo/p: spec.rules[0].when[0].key: key \"request.headers\" needs a name in brackets: request.headers[<name>]",
        ),
        (
            "condition value not an IP",
            ap("  rules:\n  - when:\n    - key: destination.ip\n      values: [\"10.0.0.300\"]\n"),
            "s.yaml:10: AuthorizationPolicy foo/p: spec.rules[0].when[0].values[0]: \"10.0.0.300\" is not an IP address or CIDR range",
        ),
        (
            "principal with the scheme",
            ap("  rules:\n  - from:\n    - source:\n        principals: [\"spiffe://cluster.local/ns/foo/sa/a\"]\n"),
            "s.yaml:10: AuthorizationPolicy foo/p: spec.rules[0].from[0].source.principals[0]: principal \"spiffe://cluster.local/ns/foo/sa/a\" has the spiffe:// scheme, which AuthorizationPolicy principals leave out: write \"cluster.local/ns/foo/sa/a\"",
        ),
        (
            "source.principal with the scheme",
            ap("  rules:\n  - when:\n    - key: source.principal\n      notValues: [\"spiffe://cluster.local/ns/foo/sa/a\"]\n"),
            "s.yaml:10: AuthorizationPolicy foo/p: spec.rules[0].when[0].notValues[0]: principal \"spiffe://cluster.local/ns/foo/sa/a\" has the spiffe:// scheme, which AuthorizationPolicy principals leave out: write \"cluster.local/ns/foo/sa/a\"",
        ),
        (
            "principal of another form",
            ap("  rules:\n  - from:\n    - source:\n        principals: [\"foo/sleep\"]\n"),
            "s.yaml:10: AuthorizationPolicy foo/p: spec.rules[0].from[0].source.principals[0]: warning: principal \"foo/sleep\" is not of the form <trust-domain>/ns/<namespace>/sa/<service-account>: no mesh workload has it",
        ),
        (
            "CUSTOM without a provider",
            ap("  action: CUSTOM\n  rules:\n  - {}\n"),
            "s.yaml:7: AuthorizationPolicy foo/p: spec.provider: a CUSTOM policy needs provider.name (one of MeshConfig's extensionProviders)",
        ),
        (
            "a provider without CUSTOM",
            ap("  action: DENY\n  provider: {name: opa}\n  rules:\n  - to:\n    - operation: {ports: [\"80\"]}\n"),
            "s.yaml:8: AuthorizationPolicy foo/p: spec.provider: provider is for CUSTOM policies only (this one is DENY)",
        ),
        (
            "CUSTOM with principals",
            ap("  action: CUSTOM\n  provider: {name: opa}\n  rules:\n  - from:\n    - source:\n        principals: [cluster.local/ns/foo/sa/a]\n"),
            "s.yaml:12: AuthorizationPolicy foo/p: spec.rules[0].from[0].source.principals: principals is not supported with the CUSTOM action (as in Istio)",
        ),
        (
            "DENY without rules",
            ap("  action: DENY\n"),
            "s.yaml:6: AuthorizationPolicy foo/p: spec.rules: a DENY policy without rules never matches (as in Istio, it is refused): add an empty rule {} to match every request",
        ),
        (
            "bad ipBlocks",
            ap("  rules:\n  - from:\n    - source:\n        ipBlocks: [\"10.0.0.0/33\"]\n"),
            "s.yaml:10: AuthorizationPolicy foo/p: spec.rules[0].from[0].source.ipBlocks[0]: \"10.0.0.0/33\" is not an IP address or CIDR range",
        ),
        (
            "bad notRemoteIpBlocks",
            ap("  rules:\n  - from:\n    - source:\n        notRemoteIpBlocks: [\"gateway\"]\n"),
            "s.yaml:10: AuthorizationPolicy foo/p: spec.rules[0].from[0].source.notRemoteIpBlocks[0]: \"gateway\" is not an IP address or CIDR range",
        ),
        (
            "bad port",
            ap("  rules:\n  - to:\n    - operation:\n        ports: [\"http\"]\n"),
            "s.yaml:10: AuthorizationPolicy foo/p: spec.rules[0].to[0].operation.ports[0]: \"http\" is not a port (0 to 65535)",
        ),
        (
            "{**} not last",
            ap("  rules:\n  - to:\n    - operation:\n        paths: [\"/{**}/foo/{*}\"]\n"),
            "s.yaml:10: AuthorizationPolicy foo/p: spec.rules[0].to[0].operation.paths[0]: path \"/{**}/foo/{*}\": {**} must be the last operator of a path template",
        ),
        (
            "* beside a template",
            ap("  rules:\n  - to:\n    - operation:\n        notPaths: [\"/*/baz/{*}\"]\n"),
            "s.yaml:10: AuthorizationPolicy foo/p: spec.rules[0].to[0].operation.notPaths[0]: path \"/*/baz/{*}\": a path template's other segments must be non-empty runs of path characters (no '*': use {*} or {**})",
        ),
        (
            "text beside an operator",
            ap("  rules:\n  - to:\n    - operation:\n        paths: [\"/foo/{*}.txt\"]\n"),
            "s.yaml:10: AuthorizationPolicy foo/p: spec.rules[0].to[0].operation.paths[0]: path \"/foo/{*}.txt\": '{' and '}' are only allowed as the whole segments {*} and {**}",
        ),
        (
            "empty source",
            ap("  rules:\n  - from:\n    - source: {}\n"),
            "s.yaml:9: AuthorizationPolicy foo/p: spec.rules[0].from[0].source: a source needs at least one field",
        ),
        (
            "from without source",
            ap("  rules:\n  - from:\n    - {}\n"),
            "s.yaml:8: AuthorizationPolicy foo/p: spec.rules[0].from[0].source: a from entry needs a source",
        ),
        (
            "empty value",
            ap("  rules:\n  - to:\n    - operation:\n        hosts: [\"\"]\n"),
            "s.yaml:10: AuthorizationPolicy foo/p: spec.rules[0].to[0].operation.hosts[0]: empty value",
        ),
        (
            "lower-case method",
            ap("  rules:\n  - to:\n    - operation:\n        methods: [get]\n"),
            "s.yaml:10: AuthorizationPolicy foo/p: spec.rules[0].to[0].operation.methods[0]: warning: method \"get\" never matches: methods are matched exactly and requests with lower-case methods are refused",
        ),
        (
            "DENY with HTTP fields only",
            ap("  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths: [/admin]\n"),
            "s.yaml:7: AuthorizationPolicy foo/p: spec.rules[0]: warning: this DENY rule uses only HTTP fields in from or to, so it denies every TCP connection to the selected workloads; name the ports it is for",
        ),
        (
            "selector and targetRef",
            ap("  selector: {matchLabels: {app: a}}\n  targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: gw}\n"),
            "s.yaml:7: AuthorizationPolicy foo/p: spec.selector: only one of selector, targetRef and targetRefs can be set\n\
             s.yaml:8: AuthorizationPolicy foo/p: spec.targetRef: warning: a targetRef attaches a policy to a gateway or waypoint, which weft does not have: this policy applies to no sidecar (select workloads with selector.matchLabels)",
        ),
        (
            "targetRefs",
            ap("  targetRefs:\n  - {kind: Gateway, group: gateway.networking.k8s.io, name: gw}\n"),
            "s.yaml:7: AuthorizationPolicy foo/p: spec.targetRefs: warning: a targetRef attaches a policy to a gateway or waypoint, which weft does not have: this policy applies to no sidecar (select workloads with selector.matchLabels)",
        ),
        (
            "dry-run not a boolean",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n  namespace: foo\n  annotations:\n    istio.io/dry-run: \"yes\"\nspec: {}\n".to_string(),
            "s.yaml:7: AuthorizationPolicy foo/p: metadata.annotations.istio.io/dry-run: \"yes\" is not a boolean (\"true\" or \"false\")",
        ),
        (
            "jwtRule without issuer",
            ra("  jwtRules:\n  - jwksUri: https://example.com/jwks.json\n"),
            "s.yaml:7: RequestAuthentication foo/p: spec.jwtRules[0].issuer: issuer is required (the iss claim tokens must carry)",
        ),
        (
            "jwks and jwksUri",
            ra("  jwtRules:\n  - issuer: a\n    jwksUri: https://example.com/jwks.json\n    jwks: '{\"keys\": []}'\n"),
            "s.yaml:10: RequestAuthentication foo/p: spec.jwtRules[0].jwks: give jwks or jwksUri, not both",
        ),
        (
            "jwks not a key set",
            ra("  jwtRules:\n  - issuer: a\n    jwks: '{\"kty\": \"RSA\"}'\n"),
            "s.yaml:9: RequestAuthentication foo/p: spec.jwtRules[0].jwks: jwks is not a JSON Web Key Set (a JSON object with a \"keys\" array)",
        ),
        (
            "jwksUri scheme",
            ra("  jwtRules:\n  - issuer: a\n    jwksUri: file:///etc/jwks.json\n"),
            "s.yaml:9: RequestAuthentication foo/p: spec.jwtRules[0].jwksUri: jwksUri \"file:///etc/jwks.json\" is not an http:// or https:// URL",
        ),
        (
            "fromHeaders without a name",
            ra("  jwtRules:\n  - issuer: a\n    fromHeaders:\n    - prefix: \"Bearer \"\n"),
            "s.yaml:9: RequestAuthentication foo/p: spec.jwtRules[0].fromHeaders[0].name: \"\" is not a header name",
        ),
    ];
    for (name, text, want) in cases {
        assert_eq!(problems(&text).join("\n"), want, "case {name}");
    }
}

#[test]
fn parse_bool_reads_go_booleans() {
    for (v, want) in [
        ("true", Some(true)),
        ("True", Some(true)),
        ("1", Some(true)),
        ("false", Some(false)),
        ("0", Some(false)),
        ("yes", None),
        ("", None),
    ] {
        assert_eq!(parse_bool(v), want, "{v:?}");
    }
}

/// The registry and workloads the cross-checks run against: reviews (v1, v2) in `default`.
const REGISTRY: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1}
spec: {address: 127.0.1.12, labels: {app: reviews, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2}
spec: {address: 127.0.1.13, ports: {http: 9081}, labels: {app: reviews, version: v2}}
";

fn analyzed(extra: &str) -> Vec<String> {
    let mut all = parse_file("registry.yaml", REGISTRY);
    let p = parse_file("s.yaml", extra);
    assert!(p.diagnostics.is_empty(), "parse: {:?}", p.diagnostics);
    all.resources.extend(p.resources);
    analyze(&all.resources)
        .iter()
        .filter(|d| d.file == "s.yaml")
        .map(|d| d.to_string())
        .collect()
}

#[test]
fn analyze_flags_what_istios_analyzer_flags() {
    let strict = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: strict, namespace: default}\nspec:\n  mtls: {mode: STRICT}\n---\n";
    let dr = |tp: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews}}\nspec:\n  host: reviews\n{tp}")
    };
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "a policy that selects a workload",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec:\n  selector:\n    matchLabels: {app: reviews}\n  rules:\n  - {}\n".into(),
            vec![],
        ),
        (
            "a policy that selects no workload",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec:\n  selector:\n    matchLabels: {app: ratings}\n  rules:\n  - {}\n".into(),
            vec!["s.yaml:6: AuthorizationPolicy default/p: spec.selector.matchLabels: warning: selects no workload: no WorkloadEntry or ServiceEntry endpoint in namespace default has the labels app=ratings"],
        ),
        (
            "another namespace's workloads are not selected",
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: p, namespace: prod}\nspec:\n  selector:\n    matchLabels: {app: reviews}\n".into(),
            vec!["s.yaml:6: RequestAuthentication prod/p: spec.selector.matchLabels: warning: selects no workload: no WorkloadEntry or ServiceEntry endpoint in namespace prod has the labels app=reviews"],
        ),
        (
            "root-namespace selectors select in every namespace",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: istio-system}\nspec:\n  selector:\n    matchLabels: {version: v2}\n".into(),
            vec![],
        ),
        (
            "a root-namespace PeerAuthentication with a selector",
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p, namespace: istio-system}\nspec:\n  selector:\n    matchLabels: {app: reviews}\n  mtls: {mode: STRICT}\n".into(),
            vec!["s.yaml:5: PeerAuthentication istio-system/p: spec.selector: warning: a PeerAuthentication with a selector in the root namespace (istio-system) is ignored, as in Istio: put it in the workloads' namespace"],
        ),
        (
            "DISABLE towards STRICT workloads",
            format!("{strict}{}", dr("  trafficPolicy:\n    tls:\n      mode: DISABLE\n")),
            vec![
                "s.yaml:14: DestinationRule default/reviews: spec.trafficPolicy.tls.mode: warning: tls mode DISABLE sends plaintext to reviews.default.svc.cluster.local port 9080, whose workloads require mTLS (PeerAuthentication default/strict is STRICT): its requests will be refused (use ISTIO_MUTUAL, or leave tls out for automatic mTLS)",
            ],
        ),
        (
            "SIMPLE on a subset under a port-level STRICT",
            format!(
                "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: v2, namespace: default}}\nspec:\n  selector: {{matchLabels: {{version: v2}}}}\n  portLevelMtls:\n    9081: {{mode: STRICT}}\n---\n{}",
                dr("  subsets:\n  - name: v2\n    labels: {version: v2}\n    trafficPolicy:\n      tls: {mode: SIMPLE}\n")
            ),
            vec![
                "s.yaml:18: DestinationRule default/reviews: spec.subsets[0].trafficPolicy.tls.mode: warning: tls mode SIMPLE presents no client certificate to reviews.default.svc.cluster.local port 9080, whose workloads require mTLS (PeerAuthentication default/v2 is STRICT): its requests will be refused (use ISTIO_MUTUAL, or leave tls out for automatic mTLS)",
            ],
        ),
        (
            "ISTIO_MUTUAL towards STRICT workloads",
            format!("{strict}{}", dr("  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n")),
            Vec::<&str>::new(),
        ),
        (
            "DISABLE towards PERMISSIVE workloads",
            dr("  trafficPolicy:\n    tls:\n      mode: DISABLE\n"),
            Vec::<&str>::new(),
        ),
    ];
    for (name, text, want) in cases {
        assert_eq!(analyzed(&text), want, "case {name}");
    }
}
