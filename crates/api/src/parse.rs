//! Reading a YAML file (one or more documents) into typed resources, with every problem located by line.

use crate::diagnostic::{Diagnostic, Severity};
use crate::mesh::{is_mesh_file, MeshConfig};
use crate::networking::{
    DestinationRule, Gateway, ServiceEntry, Sidecar, VirtualService, WorkloadEntry,
};
use crate::resource::{Kind, ObjectMeta, Resource, Spec, LATER_KINDS};
use crate::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use crate::telemetry::Telemetry;
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// What one file yielded.
#[derive(Debug, Default, Clone)]
pub struct Parsed {
    /// Resources that parsed (not yet validated: see [`crate::analyze`]).
    pub resources: Vec<Resource>,
    /// The mesh config, when this is a mesh file.
    pub mesh: Option<MeshConfig>,
    /// Problems found while parsing.
    pub diagnostics: Vec<Diagnostic>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Doc<T> {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    spec: T,
    #[allow(dead_code)]
    status: Option<serde_yaml_ng::Value>,
}

/// Splits `text` into YAML documents, each with the 1-based line its text starts on.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut start = 1;
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let is_sep = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_sep {
            docs.push((start, std::mem::take(&mut current)));
            start = i + 2;
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs.push((start, current));
    docs.into_iter()
        .filter(|(_, d)| {
            d.lines().any(|l| {
                let t = l.trim();
                !t.is_empty() && !t.starts_with('#')
            })
        })
        .collect()
}

/// How deep flow collections (`[...]`, `{...}`) may nest in a document. serde_yaml_ng refuses any nesting
/// deeper than 128 levels, but only after libyaml's scanner has read the whole run of them, and that scanner
/// checks every open level on every token: `a: ` followed by 100,000 `[` (100 KB) took 47 s to refuse, a
/// stalled config reload in weftd. Counting first costs one pass over the text.
const MAX_FLOW_DEPTH: usize = 128;

/// The 0-based line of `doc` where flow collections first nest deeper than [`MAX_FLOW_DEPTH`], if they do.
///
/// A bracket counts unless it is inside a quoted scalar or a comment. One inside a plain or block scalar
/// counts too (telling those apart takes a YAML scanner), so a document is only refused early for more than
/// 128 unclosed brackets, which YAML nesting or free text in an Istio resource does not come near.
fn flow_too_deep(doc: &str) -> Option<usize> {
    let bytes = doc.as_bytes();
    let mut depth = 0usize;
    let mut line = 0;
    let mut quote: Option<u8> = None;
    let mut prev = b'\n';
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        if c == b'\n' {
            line += 1;
        }
        match (quote, c) {
            // An escaped character in a double-quoted scalar, which may be a quote or a line break.
            (Some(b'"'), b'\\') => {
                if bytes.get(i + 1) == Some(&b'\n') {
                    line += 1;
                }
                i += 1;
            }
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            // A comment runs to the end of its line.
            (None, b'#') if prev.is_ascii_whitespace() => {
                while bytes.get(i + 1).is_some_and(|&n| n != b'\n') {
                    i += 1;
                }
            }
            // A quoted scalar starts where a node may start, not inside a word (`it's`).
            (None, b'\'' | b'"')
                if matches!(prev, b' ' | b'\t' | b'\n' | b':' | b',' | b'[' | b'{') =>
            {
                quote = Some(c)
            }
            (None, b'[' | b'{') => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Some(line);
                }
            }
            (None, b']' | b'}') => depth = depth.saturating_sub(1),
            (None, _) => {}
        }
        prev = bytes.get(i).copied().unwrap_or(c);
        i += 1;
    }
    None
}

/// The first line of a document with content, so messages point at the resource, not a comment above it.
fn first_content_line(start: usize, doc: &str) -> usize {
    doc.lines()
        .position(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        })
        .map(|i| start + i)
        .unwrap_or(start)
}

/// A best-effort `kind`/`name`/`namespace` read from the raw text, for documents that do not parse.
fn guess_identity(doc: &str) -> (String, String, String) {
    let mut kind = "-".to_string();
    let mut name = "-".to_string();
    let mut ns = "default".to_string();
    for line in doc.lines() {
        if let Some(v) = line.strip_prefix("kind:") {
            kind = plain_scalar(v);
        } else if let Some(v) = line.trim_start().strip_prefix("name:") {
            if name == "-" && line.starts_with("  ") && !line.starts_with("    ") {
                name = plain_scalar(v);
            }
        } else if let Some(v) = line.trim_start().strip_prefix("namespace:") {
            if line.starts_with("  ") && !line.starts_with("    ") {
                ns = plain_scalar(v);
            }
        }
    }
    (kind, ns, name)
}

/// A one-line YAML scalar as written after `key:`: without a trailing comment (` # ...`) or quotes.
fn plain_scalar(v: &str) -> String {
    let v = v.trim();
    let quoted = |q: char| {
        v.strip_prefix(q)
            .and_then(|rest| rest.find(q).map(|end| rest[..end].to_string()))
    };
    if let Some(s) = quoted('"').or_else(|| quoted('\'')) {
        return s;
    }
    let bare = match v.find(" #") {
        Some(i) => &v[..i],
        None => v,
    };
    bare.trim().to_string()
}

/// Removes every " at line N column M" (the line is reported separately) and the comma it leaves behind.
fn strip_locations(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find(" at line ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + " at line ".len()..];
        let skip_digits = |s: &str| {
            s.trim_start_matches(|c: char| c.is_ascii_digit())
                .to_string()
        };
        let mut tail = skip_digits(after);
        if let Some(t) = tail.strip_prefix(" column ") {
            tail = skip_digits(t);
        }
        let tail = tail.strip_prefix(',').unwrap_or(&tail).to_string();
        rest = &msg[msg.len() - tail.len()..];
    }
    out.push_str(rest);
    out
}

/// Turns a serde_yaml error into a field path and message; `line` is where the document starts.
fn yaml_error(e: &serde_yaml_ng::Error, doc_start: usize) -> (usize, String, String) {
    let line = e
        .location()
        .map(|l| doc_start + l.line().saturating_sub(1))
        .unwrap_or(doc_start);
    let msg = strip_locations(&e.to_string());
    // serde_yaml_ng prefixes the path when it knows it: "spec.http[0]: unknown field `foo`, expected ..."
    let (mut path, mut rest) = match msg.split_once(": ") {
        Some((p, r)) if !p.contains(' ') && !p.is_empty() => (p.to_string(), r.to_string()),
        _ => (String::new(), msg.clone()),
    };
    if let Some(after) = rest.strip_prefix("unknown field `") {
        if let Some((field, expected)) = after.split_once('`') {
            path = if path.is_empty() {
                field.to_string()
            } else {
                format!("{path}.{field}")
            };
            let expected = expected
                .trim_start_matches(", ")
                .replace("expected one of ", "")
                .replace("expected ", "")
                .replace('`', "");
            rest = if expected.is_empty() {
                "unknown field".to_string()
            } else {
                format!("unknown field (known fields: {expected})")
            };
        }
    }
    if path.is_empty() {
        path = "yaml".into();
    }
    (line, path, rest)
}

/// Parses one file. `file` is how messages name it; `text` its contents.
pub fn parse_file(file: &str, text: &str) -> Parsed {
    let mut out = Parsed::default();
    let base = file.rsplit('/').next().unwrap_or(file);
    for (start, doc) in split_documents(text) {
        let line = first_content_line(start, &doc);
        let mut problem =
            |line: usize, kind: &str, ns: &str, name: &str, field: &str, msg: String| {
                out.diagnostics.push(Diagnostic {
                    severity: Severity::Error,
                    file: file.to_string(),
                    line,
                    kind: kind.to_string(),
                    namespace: ns.to_string(),
                    name: name.to_string(),
                    field: field.to_string(),
                    code: (!msg.contains("by weft yet")).then_some(crate::codes::SCHEMA),
                    message: msg,
                });
            };
        if let Some(deep) = flow_too_deep(&doc) {
            let (kind, ns, name) = guess_identity(&doc);
            let msg = format!(
                "flow collections ([...], {{...}}) nested deeper than {MAX_FLOW_DEPTH} levels"
            );
            problem(start + deep, &kind, &ns, &name, "yaml", msg);
            continue;
        }
        let value: serde_yaml_ng::Value = match serde_yaml_ng::from_str(&doc) {
            Ok(v) => v,
            Err(e) => {
                let (kind, ns, name) = guess_identity(&doc);
                let (l, _, msg) = yaml_error(&e, start);
                problem(l, &kind, &ns, &name, "yaml", msg);
                continue;
            }
        };
        let Some(map) = value.as_mapping() else {
            problem(
                line,
                "-",
                "-",
                "-",
                "yaml",
                "document is not a mapping".into(),
            );
            continue;
        };
        let get = |k: &str| map.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let kind_s = get("kind");
        let api_version = get("apiVersion");
        if kind_s.is_none() && api_version.is_none() && is_mesh_file(base) {
            match serde_yaml_ng::from_str::<MeshConfig>(&doc) {
                Ok(m) => match (m.tracing(), m.ext_authz_providers()) {
                    (Ok(_), Ok(_)) => out.mesh = Some(m),
                    // Refused whole, as istiod refuses a MeshConfig that does not validate.
                    (Err(e), _) => problem(line, "MeshConfig", "-", "mesh", &e.field, e.message),
                    (_, Err(e)) => problem(line, "MeshConfig", "-", "mesh", &e.field, e.message),
                },
                Err(e) => {
                    let (l, field, msg) = yaml_error(&e, start);
                    problem(l, "MeshConfig", "-", "mesh", &field, msg);
                }
            }
            continue;
        }
        let (gk, gns, gname) = guess_identity(&doc);
        let Some(kind_s) = kind_s else {
            problem(line, &gk, &gns, &gname, "kind", "missing kind".into());
            continue;
        };
        let kind_line = line
            + doc
                .lines()
                .skip(line - start)
                .position(|l| l.starts_with("kind:"))
                .unwrap_or(0);
        let Some(kind) = Kind::parse(&kind_s) else {
            let msg = if LATER_KINDS.contains(&kind_s.as_str()) {
                format!("kind {kind_s} is not supported by weft yet")
            } else {
                format!(
                    "unknown kind {kind_s} (weft reads VirtualService, DestinationRule, Gateway, ServiceEntry, WorkloadEntry, Sidecar, Telemetry, PeerAuthentication, AuthorizationPolicy, RequestAuthentication)"
                )
            };
            problem(kind_line, &kind_s, &gns, &gname, "kind", msg);
            continue;
        };
        let api_version = api_version.unwrap_or_default();
        if !kind.versions().contains(&api_version.as_str()) {
            problem(
                line,
                &kind_s,
                &gns,
                &gname,
                "apiVersion",
                format!(
                    "apiVersion {api_version:?} does not serve {kind_s} (use one of {})",
                    kind.versions().join(", ")
                ),
            );
            continue;
        }
        fn typed<T: DeserializeOwned>(doc: &str) -> Result<(ObjectMeta, T), serde_yaml_ng::Error> {
            serde_yaml_ng::from_str::<Doc<T>>(doc).map(|d| (d.metadata, d.spec))
        }
        let parsed = match kind {
            Kind::VirtualService => {
                typed::<VirtualService>(&doc).map(|(m, s)| (m, Spec::VirtualService(s)))
            }
            Kind::DestinationRule => {
                typed::<DestinationRule>(&doc).map(|(m, s)| (m, Spec::DestinationRule(Box::new(s))))
            }
            Kind::ServiceEntry => {
                typed::<ServiceEntry>(&doc).map(|(m, s)| (m, Spec::ServiceEntry(s)))
            }
            Kind::WorkloadEntry => {
                typed::<WorkloadEntry>(&doc).map(|(m, s)| (m, Spec::WorkloadEntry(s)))
            }
            Kind::Sidecar => typed::<Sidecar>(&doc).map(|(m, s)| (m, Spec::Sidecar(s))),
            Kind::Gateway => typed::<Gateway>(&doc).map(|(m, s)| (m, Spec::Gateway(s))),
            Kind::Telemetry => {
                typed::<Telemetry>(&doc).map(|(m, s)| (m, Spec::Telemetry(Box::new(s))))
            }
            Kind::PeerAuthentication => {
                typed::<PeerAuthentication>(&doc).map(|(m, s)| (m, Spec::PeerAuthentication(s)))
            }
            Kind::AuthorizationPolicy => typed::<AuthorizationPolicy>(&doc)
                .map(|(m, s)| (m, Spec::AuthorizationPolicy(Box::new(s)))),
            Kind::RequestAuthentication => typed::<RequestAuthentication>(&doc)
                .map(|(m, s)| (m, Spec::RequestAuthentication(Box::new(s)))),
        };
        match parsed {
            Ok((mut metadata, spec)) => {
                if metadata.namespace.is_empty() {
                    metadata.namespace = "default".into();
                }
                if metadata.name.is_empty() {
                    problem(
                        line,
                        &kind_s,
                        &metadata.namespace,
                        "-",
                        "metadata.name",
                        "name is required".into(),
                    );
                    continue;
                }
                out.resources.push(Resource {
                    api_version,
                    kind,
                    metadata,
                    spec,
                    file: file.to_string(),
                    line,
                    text: doc
                        .lines()
                        .skip(line - start)
                        .collect::<Vec<_>>()
                        .join("\n"),
                });
            }
            Err(e) => {
                let (l, field, msg) = yaml_error(&e, start);
                let field = if field == "yaml" {
                    "spec".into()
                } else {
                    field
                };
                problem(l, &kind_s, &gns, &gname, &field, msg);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const VS: &str = "# comment\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination:\n        host: reviews\n        subset: v1\n";

    #[test]
    fn reads_every_document_with_its_line() {
        let text = format!("{VS}---\n{VS}");
        let p = parse_file("a.yaml", &text);
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        assert_eq!(p.resources.len(), 2);
        assert_eq!(p.resources[0].line, 2);
        assert_eq!(p.resources[1].line, 15);
        assert_eq!(p.resources[0].metadata.namespace, "default");
    }

    #[test]
    fn each_problem_names_file_line_resource_and_field() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "unknown field",
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination:\n        host: reviews\n      wieght: 50\n",
                "f.yaml:11: VirtualService default/reviews: spec.http[0].route[0].wieght: [IST0106] unknown field (known fields: destination, weight, headers)",
            ),
            (
                "bad duration",
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\n  namespace: prod\nspec:\n  hosts: [reviews]\n  http:\n  - timeout: 7x\n    route:\n    - destination:\n        host: reviews\n",
                "f.yaml:9: VirtualService prod/r: spec.http[0]: [IST0106] bad duration \"7x\": unknown unit \"x\"",
            ),
            (
                "malformed yaml",
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews\n",
                "f.yaml:7: VirtualService default/reviews: yaml: [IST0106] did not find expected ',' or ']' while parsing a flow sequence",
            ),
            (
                "unknown kind",
                "apiVersion: v1\nkind: Deployment\nmetadata:\n  name: x\n",
                "f.yaml:2: Deployment default/x: kind: [IST0106] unknown kind Deployment (weft reads VirtualService, DestinationRule, Gateway, ServiceEntry, WorkloadEntry, Sidecar, Telemetry, PeerAuthentication, AuthorizationPolicy, RequestAuthentication)",
            ),
            (
                "later kind",
                "apiVersion: networking.istio.io/v1\nkind: EnvoyFilter\nmetadata:\n  name: ef\n",
                "f.yaml:2: EnvoyFilter default/ef: kind: kind EnvoyFilter is not supported by weft yet",
            ),
            (
                "wrong group",
                "apiVersion: security.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: x\nspec: {}\n",
                "f.yaml:1: VirtualService default/x: apiVersion: [IST0106] apiVersion \"security.istio.io/v1\" does not serve VirtualService (use one of networking.istio.io/v1, networking.istio.io/v1beta1, networking.istio.io/v1alpha3)",
            ),
            (
                "missing name",
                "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {}\nspec:\n  host: reviews\n",
                "f.yaml:1: DestinationRule default/-: metadata.name: [IST0106] name is required",
            ),
        ];
        for (name, text, want) in cases {
            let p = parse_file("f.yaml", text);
            let got: Vec<String> = p.diagnostics.iter().map(|d| d.to_string()).collect();
            assert_eq!(got, vec![want.to_string()], "case {name}");
            assert!(p.resources.is_empty(), "case {name}: nothing accepted");
        }
    }

    #[test]
    fn deep_flow_collections_are_refused_before_yaml_parsing() {
        // Found probing the istio_yaml fuzz target with YAML bombs: libyaml's scanner costs the open depth
        // on every token, so this document took 47 s to refuse with "recursion limit exceeded".
        let text = format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\nspec:\n  hosts: {}\n",
            "[".repeat(100_000)
        );
        let p = parse_file("f.yaml", &text);
        let got: Vec<String> = p.diagnostics.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            got,
            ["f.yaml:6: VirtualService default/r: yaml: [IST0106] flow collections ([...], {...}) nested deeper than 128 levels"]
        );
        assert!(p.resources.is_empty());
    }

    #[test]
    fn flow_depth_counts_brackets_outside_quotes_and_comments() {
        let deep = "[".repeat(MAX_FLOW_DEPTH + 1);
        let cases: &[(&str, String, Option<usize>)] = &[
            (
                "128 levels, closed",
                format!("a: {}{}\n", "[".repeat(128), "]".repeat(128)),
                None,
            ),
            ("129 levels", format!("a: {deep}\n"), Some(0)),
            ("on a later line", format!("a: 1\nb:\n  {deep}\n"), Some(2)),
            ("in double quotes", format!("a: \"{deep}\"\n"), None),
            ("in single quotes", format!("a: '{deep}'\n"), None),
            (
                "after an escaped quote",
                format!("a: \"x\\\" {deep}\"\n"),
                None,
            ),
            (
                "after a quoted line break",
                format!("a: \"x\\\ny\"\nb: {deep}\n"),
                Some(2),
            ),
            ("in a comment", format!("a: 1 # {deep}\n"), None),
            ("after an apostrophe", format!("a: it's {deep}\n"), Some(0)),
            (
                "balanced, many times",
                "a: [[1], {b: [2]}]\n".repeat(200),
                None,
            ),
        ];
        for (name, text, want) in cases {
            assert_eq!(flow_too_deep(text), *want, "case {name}");
        }
    }

    #[test]
    fn accepts_every_networking_version() {
        for v in crate::resource::NETWORKING_VERSIONS {
            let text = VS.replace("networking.istio.io/v1", v);
            let p = parse_file("a.yaml", &text);
            assert!(p.diagnostics.is_empty(), "{v}: {:?}", p.diagnostics);
        }
    }

    #[test]
    fn bookinfo_gateway_reads_in_every_networking_version() {
        let text = include_str!("../../../samples/bookinfo/networking/bookinfo-gateway.yaml");
        for v in crate::resource::NETWORKING_VERSIONS {
            let p = parse_file(
                "gw.yaml",
                &text.replace("networking.istio.io/v1\n", &format!("{v}\n")),
            );
            assert!(p.diagnostics.is_empty(), "{v}: {:?}", p.diagnostics);
            assert_eq!(p.resources[0].api_version, v);
            let gw = p.resources[0].as_gateway().expect("a Gateway");
            assert_eq!(
                gw.selector.get("istio").map(String::as_str),
                Some("ingressgateway"),
                "the trailing comment is not part of the value"
            );
            let server = &gw.servers[0];
            let port = server.port.as_ref().expect("port");
            assert_eq!(
                (
                    port.number,
                    port.effective_protocol().as_str(),
                    server.hosts.as_slice()
                ),
                (8080, "HTTP", ["*".to_string()].as_slice())
            );
            let vs = p.resources[1]
                .as_virtual_service()
                .expect("a VirtualService");
            assert_eq!(vs.gateways, ["bookinfo-gateway"]);
            assert!(!vs.applies_to_sidecars());
            assert!(crate::analyze(&p.resources)
                .iter()
                .all(|d| !d.is_error() || d.field.contains("destination.host")));
        }
    }

    #[test]
    fn mesh_file_is_read_as_mesh_config() {
        let p = parse_file(
            "dir/mesh.yaml",
            "rootNamespace: weft-system\nconnectTimeout: 2s\n",
        );
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        let m = p.mesh.expect("mesh");
        assert_eq!(m.root_namespace, "weft-system");
        assert_eq!(m.trust_domain, "cluster.local");
        let p = parse_file("dir/mesh.yaml", "rootNamespac: x\n");
        assert!(
            p.diagnostics[0].to_string().starts_with(
                "dir/mesh.yaml:1: MeshConfig -/mesh: rootNamespac: [IST0106] unknown field"
            ),
            "{}",
            p.diagnostics[0]
        );
    }
}
