//! PeerAuthentication: whether a workload's inbound ports take mTLS, plaintext or both
//! ([Istio's reference](https://istio.io/latest/docs/reference/config/security/peer_authentication/)), and
//! the precedence that decides the mode of one port.

use super::{check_scope, selector_labels, Problems, Selector};
use crate::networking::labels_match;
use crate::resource::Resource;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// `spec` of a PeerAuthentication.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PeerAuthentication {
    /// Workloads of the namespace this applies to; without it (or without labels), the whole namespace,
    /// or the whole mesh in the root namespace. In the root namespace a selector makes the policy ignored.
    pub selector: Option<Selector>,
    /// The mode for every port of the selected workloads.
    pub mtls: Option<MutualTls>,
    /// Modes by workload port (the port the workload listens on, not the service port); only with a
    /// selector.
    #[serde(default, deserialize_with = "port_keys")]
    pub port_level_mtls: BTreeMap<u32, MutualTls>,
}

/// `mtls` and the values of `portLevelMtls`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MutualTls {
    /// The mode.
    #[serde(default)]
    pub mode: Mode,
}

/// `mtls.mode` as written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Mode {
    /// Inherit from the level above (the top level behaves as PERMISSIVE).
    #[default]
    Unset,
    /// Plaintext only.
    Disable,
    /// mTLS and plaintext on the same port.
    Permissive,
    /// mTLS only, with a client certificate.
    Strict,
}

/// The mode a port ends up with once UNSET is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Plaintext only.
    Disable,
    /// mTLS and plaintext (told apart by the first bytes of the connection).
    Permissive,
    /// mTLS only: plaintext is refused.
    Strict,
}

impl MtlsMode {
    /// The mode as Istio writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            MtlsMode::Disable => "DISABLE",
            MtlsMode::Permissive => "PERMISSIVE",
            MtlsMode::Strict => "STRICT",
        }
    }
}

impl fmt::Display for MtlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Mode {
    /// `None` for UNSET (inherit).
    pub fn resolved(self) -> Option<MtlsMode> {
        match self {
            Mode::Unset => None,
            Mode::Disable => Some(MtlsMode::Disable),
            Mode::Permissive => Some(MtlsMode::Permissive),
            Mode::Strict => Some(MtlsMode::Strict),
        }
    }
}

/// Reads `portLevelMtls` keys written as numbers (`8080:`) or strings (`"8080":`, as JSON writes them).
fn port_keys<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u32, MutualTls>, D::Error> {
    struct Ports;
    impl<'de> Visitor<'de> for Ports {
        type Value = BTreeMap<u32, MutualTls>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map from port numbers to {mode: ...}")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<serde_yaml_ng::Value>()? {
                let port = match &key {
                    serde_yaml_ng::Value::Number(n) => n.as_u64(),
                    serde_yaml_ng::Value::String(s) => s.parse::<u64>().ok(),
                    _ => None,
                }
                .and_then(|p| u32::try_from(p).ok())
                .ok_or_else(|| {
                    let shown = serde_yaml_ng::to_string(&key).unwrap_or_default();
                    de::Error::custom(format!("port {:?} is not a port number", shown.trim()))
                })?;
                out.insert(port, map.next_value()?);
            }
            Ok(out)
        }
    }
    d.deserialize_any(Ports)
}

impl PeerAuthentication {
    /// Checks this resource on its own.
    pub(crate) fn validate(&self, p: &mut Problems) {
        check_scope(p, self.selector.as_ref(), None, &[]);
        if !self.port_level_mtls.is_empty() && selector_labels(self.selector.as_ref()).is_none() {
            p.error(
                "spec.portLevelMtls",
                "portLevelMtls",
                "portLevelMtls needs a selector with labels: mesh- and namespace-wide PeerAuthentications cannot set port-level modes (as in Istio)",
            );
        }
        for port in self.port_level_mtls.keys() {
            if !(1..=65535).contains(port) {
                p.error(
                    format!("spec.portLevelMtls.{port}"),
                    &port.to_string(),
                    format!("port {port} is not between 1 and 65535"),
                );
            }
        }
    }

    /// The selector's labels; `None` for a mesh- or namespace-wide policy.
    pub fn match_labels(&self) -> Option<&BTreeMap<String, String>> {
        selector_labels(self.selector.as_ref())
    }

    fn mode(&self) -> Mode {
        self.mtls.map(|m| m.mode).unwrap_or_default()
    }
}

/// The mode of one workload port, and the PeerAuthentication that decided it (`None`: no policy did, so
/// the default PERMISSIVE holds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effective<'a> {
    /// The mode.
    pub mode: MtlsMode,
    /// The deciding resource.
    pub by: Option<&'a Resource>,
}

/// The mTLS mode of `port` on a workload in `namespace` with `labels`, among `policies` (any resources;
/// PeerAuthentications of other namespaces are skipped), with Istio's precedence:
///
/// 1. the mesh's policy: a root-namespace PeerAuthentication without selector labels;
/// 2. the namespace's policy: one in the workload's namespace without selector labels;
/// 3. the workload's policy: one in the workload's namespace whose selector matches its labels
///    (root-namespace policies with a selector are ignored, as Istio ignores them);
/// 4. that workload policy's `portLevelMtls` entry for `port`.
///
/// Each level that says UNSET (or has no `mtls`) inherits from the one above; with nothing set at all the
/// mode is PERMISSIVE. When several policies compete for one level Istio takes the oldest; weft has no
/// creation time in directory mode and takes the first by name.
pub fn effective_mode<'a>(
    policies: impl IntoIterator<Item = &'a Resource>,
    root_namespace: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    port: u32,
) -> Effective<'a> {
    let mut mesh: Option<(&'a Resource, &'a PeerAuthentication)> = None;
    let mut ns_level = None;
    let mut workload = None;
    let first = |cur: &mut Option<(&'a Resource, &'a PeerAuthentication)>,
                 r: &'a Resource,
                 pa: &'a PeerAuthentication| {
        if cur.is_none_or(|(c, _)| r.metadata.name < c.metadata.name) {
            *cur = Some((r, pa));
        }
    };
    for r in policies {
        let Some(pa) = r.as_peer_authentication() else {
            continue;
        };
        let ns = r.metadata.namespace.as_str();
        match pa.match_labels() {
            None if ns == root_namespace => first(&mut mesh, r, pa),
            None if ns == namespace => first(&mut ns_level, r, pa),
            Some(sel) if ns == namespace && ns != root_namespace && labels_match(sel, labels) => {
                first(&mut workload, r, pa)
            }
            _ => {}
        }
    }
    let mut out = Effective {
        mode: MtlsMode::Permissive,
        by: None,
    };
    for (r, pa) in [mesh, ns_level, workload].into_iter().flatten() {
        if let Some(m) = pa.mode().resolved() {
            out = Effective {
                mode: m,
                by: Some(r),
            };
        }
    }
    if let Some((r, pa)) = workload {
        if let Some(m) = pa
            .port_level_mtls
            .get(&port)
            .and_then(|m| m.mode.resolved())
        {
            out = Effective {
                mode: m,
                by: Some(r),
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_file;

    fn pa(ns: &str, name: &str, spec: &str) -> String {
        format!("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}---\n")
    }

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn precedence_table() {
        let strict = "  mtls: {mode: STRICT}\n";
        let permissive = "  mtls: {mode: PERMISSIVE}\n";
        let disable = "  mtls: {mode: DISABLE}\n";
        let unset = "  mtls: {mode: UNSET}\n";
        let app = |mode: &str| {
            format!("  selector: {{matchLabels: {{app: reviews}}}}\n  mtls: {{mode: {mode}}}\n")
        };
        let ports = "  selector: {matchLabels: {app: reviews}}\n  mtls: {mode: STRICT}\n  portLevelMtls:\n    8080: {mode: DISABLE}\n    \"9090\": {mode: UNSET}\n";
        let reviews = labels(&[("app", "reviews"), ("version", "v1")]);
        // (case, policies, port, mode, deciding policy)
        let cases: Vec<(&str, String, u32, MtlsMode, Option<&str>)> = vec![
            (
                "nothing: PERMISSIVE",
                String::new(),
                9080,
                MtlsMode::Permissive,
                None,
            ),
            (
                "mesh STRICT",
                pa("istio-system", "default", strict),
                9080,
                MtlsMode::Strict,
                Some("istio-system/default"),
            ),
            (
                "mesh UNSET is PERMISSIVE",
                pa("istio-system", "default", unset),
                9080,
                MtlsMode::Permissive,
                None,
            ),
            (
                "mesh without mtls is PERMISSIVE",
                pa("istio-system", "default", "  {}\n"),
                9080,
                MtlsMode::Permissive,
                None,
            ),
            (
                "namespace over mesh",
                pa("istio-system", "default", strict) + &pa("default", "ns", permissive),
                9080,
                MtlsMode::Permissive,
                Some("default/ns"),
            ),
            (
                "namespace UNSET inherits the mesh",
                pa("istio-system", "default", strict) + &pa("default", "ns", unset),
                9080,
                MtlsMode::Strict,
                Some("istio-system/default"),
            ),
            (
                "another namespace's policy does not apply",
                pa("other", "ns", disable),
                9080,
                MtlsMode::Permissive,
                None,
            ),
            (
                "workload over namespace",
                pa("default", "ns", strict) + &pa("default", "reviews", &app("DISABLE")),
                9080,
                MtlsMode::Disable,
                Some("default/reviews"),
            ),
            (
                "workload UNSET inherits the namespace",
                pa("default", "ns", strict) + &pa("default", "reviews", &app("UNSET")),
                9080,
                MtlsMode::Strict,
                Some("default/ns"),
            ),
            (
                "selector that does not match",
                pa(
                    "default",
                    "ratings",
                    "  selector: {matchLabels: {app: ratings}}\n  mtls: {mode: DISABLE}\n",
                ),
                9080,
                MtlsMode::Permissive,
                None,
            ),
            (
                "root-namespace selector policies are ignored",
                pa("istio-system", "reviews", &app("STRICT")),
                9080,
                MtlsMode::Permissive,
                None,
            ),
            (
                "port level over workload",
                pa("default", "reviews", ports),
                8080,
                MtlsMode::Disable,
                Some("default/reviews"),
            ),
            (
                "other port keeps the workload's",
                pa("default", "reviews", ports),
                9080,
                MtlsMode::Strict,
                Some("default/reviews"),
            ),
            (
                "port level UNSET inherits the workload",
                pa("default", "reviews", ports),
                9090,
                MtlsMode::Strict,
                Some("default/reviews"),
            ),
            (
                "two mesh policies: the first by name",
                pa("istio-system", "b", disable) + &pa("istio-system", "a", strict),
                9080,
                MtlsMode::Strict,
                Some("istio-system/a"),
            ),
            (
                "two workload policies: the first by name",
                pa("default", "z-reviews", &app("DISABLE"))
                    + &pa("default", "a-reviews", &app("STRICT")),
                9080,
                MtlsMode::Strict,
                Some("default/a-reviews"),
            ),
            (
                "empty matchLabels is namespace-wide",
                pa(
                    "default",
                    "ns",
                    "  selector: {matchLabels: {}}\n  mtls: {mode: STRICT}\n",
                ),
                9080,
                MtlsMode::Strict,
                Some("default/ns"),
            ),
        ];
        for (name, text, port, want, by) in cases {
            let p = parse_file("pa.yaml", &text);
            assert!(p.diagnostics.is_empty(), "case {name}: {:?}", p.diagnostics);
            let got = effective_mode(&p.resources, "istio-system", "default", &reviews, port);
            assert_eq!(got.mode, want, "case {name}");
            let got_by = got
                .by
                .map(|r| format!("{}/{}", r.metadata.namespace, r.metadata.name));
            assert_eq!(got_by.as_deref(), by, "case {name}");
        }
    }

    #[test]
    fn the_root_namespace_policy_is_the_mesh_policy_for_its_own_workloads() {
        let text = pa("istio-system", "default", "  mtls: {mode: STRICT}\n");
        let p = parse_file("pa.yaml", &text);
        let got = effective_mode(
            &p.resources,
            "istio-system",
            "istio-system",
            &BTreeMap::new(),
            1,
        );
        assert_eq!(got.mode, MtlsMode::Strict);
    }
}
