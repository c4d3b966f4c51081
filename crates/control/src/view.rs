//! What the ADS server pushes from: one [`Snapshot`] per model generation, holding the outbound resources
//! of each proxy scope ([`View`]), translated, encoded and hashed once and shared by every proxy of that
//! scope, and the difference from the previous generation's view of the same scope, also computed once.
//!
//! This is what lets one weftd serve a thousand proxies: a change costs one translation per scope and,
//! per proxy, a walk over the names that changed, instead of one translation and one full comparison per
//! proxy. Clusters and load assignments do not depend on the proxy's namespace, only on which services it
//! sees, so scopes that see the same services share one [`Backends`] set: built and diffed once.

use crate::model::Model;
use crate::translate::{self, Scope};
use bytes::Bytes;
use prost::Message;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::time::Instant;
use weft_xds::{type_url, Any};

/// The four types, in the order Envoy applies them (clusters, endpoints, listeners, routes).
pub const TYPES: [&str; 4] = [
    type_url::CLUSTER,
    type_url::ENDPOINT,
    type_url::LISTENER,
    type_url::ROUTE,
];

/// Index of route configurations in [`TYPES`].
const ROUTES: usize = 3;

/// Index of a type URL in [`TYPES`].
pub fn type_index(t: &str) -> Option<usize> {
    TYPES.iter().position(|x| *x == t)
}

/// One encoded resource and the hash of its bytes (its version).
#[derive(Debug, Clone)]
pub struct Res {
    /// The resource as an encoded `google.protobuf.Any`, shared by every response that carries it.
    pub encoded: Bytes,
    /// Hash of the resource's bytes: equal hashes, equal resources.
    pub version: u64,
}

impl Res {
    /// Encodes a packed resource.
    pub fn new(any: Any) -> Res {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        any.value.hash(&mut h);
        Res {
            version: h.finish(),
            encoded: Bytes::from(any.encode_to_vec()),
        }
    }

    /// The resource, unpacked again (debug output and tests).
    pub fn any(&self) -> Any {
        Any::decode(&self.encoded[..]).unwrap_or_default()
    }
}

/// Resources of one type by name.
pub type TypeMap = BTreeMap<Arc<str>, Res>;

/// What changed in one type between two views.
#[derive(Debug, Default, Clone)]
pub struct TypeDiff {
    /// Added or changed.
    pub changed: Vec<Arc<str>>,
    /// Gone.
    pub removed: Vec<Arc<str>>,
}

/// The outbound resources of one scope in one generation.
#[derive(Debug)]
pub struct View {
    /// Unique among all views weftd built.
    pub id: u64,
    /// By index in [`TYPES`].
    pub types: [Arc<TypeMap>; 4],
    /// The difference from the previous generation's view of this scope, when there was one.
    pub diff: Option<(u64, [TypeDiff; 4])>,
    /// The TCP egress listeners of the scope's Sidecar, resolved once per scope; each proxy turns them
    /// into listeners on its own IP with its other own resources ([`translate::own`]).
    pub egress: Vec<translate::EgressPort>,
    /// Each service's encoded virtual host by (port, hostname), reused next generation when unchanged.
    vhosts: HashMap<(u32, Arc<str>), Arc<[u8]>>,
    /// The virtual hosts each route table was assembled from, by port.
    route_hosts: HashMap<u32, Vec<Arc<[u8]>>>,
}

/// What the views of a generation may take from the previous generation's views, decided once per
/// generation rather than once per scope.
#[derive(Debug, Default)]
pub struct Reuse {
    /// Services whose registry entry and DestinationRule are unchanged (none when a Sidecar or the
    /// mesh's connect timeout changed, since those shape every cluster).
    services: HashSet<String>,
    /// No VirtualService, DestinationRule or mesh setting changed: unchanged services keep their
    /// encoded virtual hosts.
    routes: bool,
}

impl Reuse {
    fn between(old: &Model, new: &Model) -> Reuse {
        if old.sidecars != new.sidecars
            || old.mesh.connect_timeout != new.mesh.connect_timeout
            || !translate::mtls::same_client_tls_inputs(old, new)
        {
            return Reuse::default();
        }
        let services = new
            .services
            .iter()
            .filter(|(host, svc)| {
                old.services
                    .get(*host)
                    .is_some_and(|o| Arc::ptr_eq(o, svc) || **o == ***svc)
                    && old.destination_rules.get(*host) == new.destination_rules.get(*host)
            })
            .map(|(host, _)| host.clone())
            .collect();
        Reuse {
            services,
            routes: old.virtual_services == new.virtual_services
                && old.destination_rules == new.destination_rules
                && old.mesh == new.mesh,
        }
    }
}

static NEXT_VIEW: AtomicU64 = AtomicU64::new(1);

/// Packs translated resources of one type.
fn type_map(m: BTreeMap<String, Any>) -> TypeMap {
    m.into_iter()
        .map(|(k, v)| (Arc::from(k), Res::new(v)))
        .collect()
}

/// The clusters and load assignments of one backend key ([`Scope::backend_key`]), shared by the views of
/// every scope with that key: proxies without a Sidecar in ten namespaces differ in their virtual hosts'
/// domains, not in their clusters.
#[derive(Debug)]
pub struct Backends {
    /// Clusters and load assignments (indexes 0 and 1 of [`TYPES`]).
    types: [Arc<TypeMap>; 2],
    /// The difference from the previous generation's backends of the same key: which maps it was taken
    /// against (their addresses) and what changed.
    diff: Option<([usize; 2], [TypeDiff; 2])>,
}

impl Backends {
    fn build(model: &Model, key: &Scope, prev: Option<&Backends>, reuse: &Reuse) -> Backends {
        // A service whose inputs are as they were keeps its clusters and load assignments from the
        // previous generation: one endpoint change re-translates one service.
        let unchanged = |svc: &crate::registry::Service| {
            prev.is_some() && reuse.services.contains(&svc.hostname)
        };
        let mut fresh = translate::outbound_backends(model, key, &unchanged);
        let mut types: [TypeMap; 2] = [type_url::CLUSTER, type_url::ENDPOINT]
            .map(|t| type_map(fresh.by_type.remove(t).unwrap_or_default()));
        if let Some(p) = prev {
            let sees = key.visibility(model);
            let reused = model.services.values().filter(|s| sees(s) && unchanged(s));
            for svc in reused {
                for name in translate::cluster_names(model, svc) {
                    for (i, t) in types.iter_mut().enumerate() {
                        if let Some((k, r)) = p.types[i].get_key_value(name.as_str()) {
                            t.insert(k.clone(), r.clone());
                        }
                    }
                }
            }
        }
        let diff = prev.map(|p| {
            (
                [0, 1].map(|i| Arc::as_ptr(&p.types[i]) as usize),
                [0, 1].map(|i| diff(&p.types[i], &types[i])),
            )
        });
        Backends {
            types: types.map(Arc::new),
            diff,
        }
    }
}

impl View {
    fn build(
        model: &Arc<Model>,
        scope: &Scope,
        prev: Option<&View>,
        reuse: &Reuse,
        backends: &Backends,
    ) -> View {
        let unchanged = |svc: &crate::registry::Service| {
            prev.is_some() && reuse.services.contains(&svc.hostname)
        };
        let mut vhosts = HashMap::new();
        let mut route_hosts = HashMap::new();
        let mut kept_routes = Vec::new();
        let mut front = translate::outbound_frontends(
            model,
            scope,
            &mut |svc, port| {
                let key = (port, Arc::<str>::from(svc.hostname.as_str()));
                let old = prev
                    .filter(|_| reuse.routes)
                    .and_then(|p| p.vhosts.get(&key).cloned());
                let v = match old {
                    Some(old) if unchanged(svc) => old,
                    // A changed service whose virtual host came out the same (an endpoint change)
                    // keeps the old one, so the route table can be kept too.
                    old => {
                        let new =
                            translate::encode_virtual_host(model, svc, &scope.namespace, port);
                        old.filter(|o| **o == *new).unwrap_or(new)
                    }
                };
                vhosts.insert(key, v.clone());
                v
            },
            // A route table made of the very same virtual hosts is the previous one: skip encoding
            // and hashing megabytes per scope when only endpoints changed.
            &mut |port, hosts| {
                let same = prev.is_some_and(|p| {
                    p.types[ROUTES].contains_key(port.to_string().as_str())
                        && p.route_hosts
                            .get(&port)
                            .is_some_and(|old: &Vec<Arc<[u8]>>| {
                                old.len() == hosts.len()
                                    && old.iter().zip(hosts).all(|(a, b)| Arc::ptr_eq(a, b))
                            })
                });
                route_hosts.insert(port, hosts.to_vec());
                if same {
                    kept_routes.push(port);
                }
                same
            },
        );
        let listeners = type_map(front.by_type.remove(type_url::LISTENER).unwrap_or_default());
        let mut routes = type_map(front.by_type.remove(type_url::ROUTE).unwrap_or_default());
        if let Some(p) = prev {
            for port in kept_routes {
                if let Some((k, r)) = p.types[ROUTES].get_key_value(port.to_string().as_str()) {
                    routes.insert(k.clone(), r.clone());
                }
            }
        }
        let types: [Arc<TypeMap>; 4] = [
            backends.types[0].clone(),
            backends.types[1].clone(),
            Arc::new(listeners),
            Arc::new(routes),
        ];
        let diff = prev.map(|p| {
            let d = std::array::from_fn(|i| match &backends.diff {
                // The shared backends' own difference, when the previous view had the previous
                // backends: computed once for every scope of the key.
                Some((from, d)) if i < 2 && from[i] == Arc::as_ptr(&p.types[i]) as usize => {
                    d[i].clone()
                }
                _ if i < 2 && Arc::ptr_eq(&p.types[i], &types[i]) => TypeDiff::default(),
                _ => diff(&p.types[i], &types[i]),
            });
            (p.id, d)
        });
        View {
            id: NEXT_VIEW.fetch_add(1, Ordering::Relaxed),
            types,
            diff,
            egress: translate::egress_ports(model, scope),
            vhosts,
            route_hosts,
        }
    }

    /// What changed from the view `from` (cached when `from` is the previous generation's view).
    pub fn diff_from(&self, from: &View, t: usize) -> std::borrow::Cow<'_, TypeDiff> {
        match &self.diff {
            Some((id, d)) if *id == from.id => std::borrow::Cow::Borrowed(&d[t]),
            _ => std::borrow::Cow::Owned(diff(&from.types[t], &self.types[t])),
        }
    }
}

/// Merge-walk of two sorted maps.
pub fn diff(old: &TypeMap, new: &TypeMap) -> TypeDiff {
    let mut d = TypeDiff::default();
    let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some((k, _)), None) => {
                d.removed.push((*k).clone());
                a.next();
            }
            (None, Some((k, _))) => {
                d.changed.push((*k).clone());
                b.next();
            }
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    d.removed.push((*ka).clone());
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    d.changed.push((*kb).clone());
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    if va.version != vb.version {
                        d.changed.push((*kb).clone());
                    }
                    a.next();
                    b.next();
                }
            },
        }
    }
    d
}

/// Values of one generation built at most once per scope, on first use, each from the previous
/// generation's value for the same scope (kept until it is rebuilt, then dropped).
struct PerScope<T> {
    built: Mutex<HashMap<Scope, Arc<OnceLock<Arc<T>>>>>,
    prev: Mutex<HashMap<Scope, Arc<T>>>,
}

impl<T> Default for PerScope<T> {
    fn default() -> Self {
        PerScope {
            built: Mutex::default(),
            prev: Mutex::default(),
        }
    }
}

impl<T> PerScope<T> {
    /// The next generation's, building from what `self` built.
    fn next(&self) -> PerScope<T> {
        PerScope {
            built: Mutex::default(),
            prev: Mutex::new(self.built()),
        }
    }

    /// A copy sharing everything `self` built (same config, another model value).
    fn shared(&self) -> PerScope<T> {
        PerScope {
            built: Mutex::new(self.built.lock().unwrap_or_else(|p| p.into_inner()).clone()),
            prev: Mutex::default(),
        }
    }

    fn built(&self) -> HashMap<Scope, Arc<T>> {
        self.built
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|(s, cell)| cell.get().map(|v| (s.clone(), v.clone())))
            .collect()
    }

    /// The value of `scope`, built by the first caller; others wait for it (CPU work, a few
    /// milliseconds per thousand services, so blocking the worker briefly is cheaper than queueing).
    fn get(&self, scope: &Scope, build: impl FnOnce(Option<&T>) -> T) -> Arc<T> {
        let cell = self
            .built
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(scope.clone())
            .or_default()
            .clone();
        cell.get_or_init(|| {
            let prev = self
                .prev
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(scope);
            Arc::new(build(prev.as_deref()))
        })
        .clone()
    }

    fn len(&self) -> usize {
        self.built.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// One model generation and the views built from it so far (built on first use, once per scope).
pub struct Snapshot {
    /// The model.
    pub model: Arc<Model>,
    /// Views by scope, each diffed against the previous generation's view of its scope.
    views: PerScope<View>,
    /// Clusters and load assignments by backend key ([`Scope::backend_key`]).
    backends: PerScope<Backends>,
    /// What this generation may take from the previous one's views and backends.
    reuse: Reuse,
    /// When the config change this snapshot carries began (`pilot_proxy_convergence_time`).
    changed_at: Instant,
}

impl Snapshot {
    /// The first snapshot.
    pub fn new(model: Arc<Model>) -> Snapshot {
        Snapshot {
            model,
            views: PerScope::default(),
            backends: PerScope::default(),
            reuse: Reuse::default(),
            changed_at: Instant::now(),
        }
    }

    /// The snapshot after `prev`: views of scopes `prev` had built are diffed against.
    pub fn next(model: Arc<Model>, prev: &Snapshot) -> Snapshot {
        let reuse = if prev.views.len() == 0 {
            Reuse::default()
        } else {
            Reuse::between(&prev.model, &model)
        };
        Snapshot {
            model,
            views: prev.views.next(),
            backends: prev.backends.next(),
            reuse,
            changed_at: Instant::now(),
        }
    }

    /// The same snapshot, its config change dated from `start` (the first event of the change's
    /// debounce) rather than from when it was built.
    pub fn changed_since(mut self, start: Instant) -> Snapshot {
        self.changed_at = start;
        self
    }

    /// When the config change this snapshot carries began: its debounce's first event, or when it
    /// was built.
    pub fn changed_at(&self) -> Instant {
        self.changed_at
    }

    /// The same config as `self` with another model value (new diagnostics): the views are shared.
    pub fn same_config(&self, model: Arc<Model>) -> Snapshot {
        Snapshot {
            model,
            views: self.views.shared(),
            backends: self.backends.shared(),
            reuse: Reuse::default(),
            changed_at: self.changed_at,
        }
    }

    /// The view of `scope`.
    pub fn view(&self, scope: &Scope) -> Arc<View> {
        self.views.get(scope, |prev| {
            let key = scope.backend_key();
            let backends = self.backends.get(&key, |prev| {
                Backends::build(&self.model, &key, prev, &self.reuse)
            });
            View::build(&self.model, scope, prev, &self.reuse, &backends)
        })
    }

    /// Number of scopes built.
    pub fn scopes(&self) -> usize {
        self.views.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn res(v: &[u8]) -> Res {
        Res::new(Any {
            type_url: "t".into(),
            value: v.to_vec(),
        })
    }

    fn map(items: &[(&str, &[u8])]) -> TypeMap {
        items.iter().map(|(k, v)| (Arc::from(*k), res(v))).collect()
    }

    fn model(generation: u64, yaml: &str) -> Arc<Model> {
        let p = weft_api::parse_file("m.yaml", yaml);
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        let res: Vec<_> = p.resources.into_iter().map(Arc::new).collect();
        Arc::new(Model::build(
            generation,
            &res,
            weft_api::MeshConfig::default(),
        ))
    }

    fn services(n: usize, changed: Option<usize>, vs: bool) -> String {
        let mut docs: Vec<String> = (0..n)
            .map(|i| {
                let ip = if changed == Some(i) { "127.0.9.9" } else { "127.0.9.1" };
                format!("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: s{i}}}\nspec:\n  hosts: [s{i}.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: {ip}}}]\n")
            })
            .collect();
        if vs {
            docs.push("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: s1}\nspec:\n  hosts: [s1]\n  http:\n  - timeout: 3s\n    route:\n    - destination: {host: s1}\n".into());
        }
        docs.join("---\n")
    }

    /// Every type of `v` holds exactly what a translation from scratch of `model` for `scope` gives.
    fn assert_equals_fresh(v: &View, model: &Model, scope: &Scope, case: &str) {
        let fresh = translate::outbound(model, scope);
        for (i, t) in TYPES.iter().enumerate() {
            let want = fresh.of(t).cloned().unwrap_or_default();
            let got: BTreeMap<String, Any> = v.types[i]
                .iter()
                .map(|(k, r)| (k.to_string(), r.any()))
                .collect();
            assert_eq!(got, want, "{case}, {t}");
        }
    }

    /// The incremental build (reusing unchanged services) must equal a translation from scratch.
    #[test]
    fn incremental_views_equal_fresh_translation() {
        let scope = Scope {
            namespace: "default".into(),
            sidecar: None,
            telemetry: None,
            router: false,
        };
        let s1 = Snapshot::new(model(1, &services(5, None, false)));
        let v1 = s1.view(&scope);
        for (generation, yaml) in [
            (2, services(5, Some(3), false)),
            (3, services(5, Some(3), true)),
            (4, services(6, Some(3), true)),
            (5, services(4, None, false)),
        ] {
            let prev = Snapshot::new(s1.model.clone());
            let _ = prev.view(&scope);
            let next = Snapshot::next(model(generation, &yaml), &prev);
            let v = next.view(&scope);
            assert!(v.diff.is_some(), "built against the previous view");
            assert_equals_fresh(&v, &next.model, &scope, &format!("generation {generation}"));
        }
        // An endpoint change re-sends one load assignment and nothing else.
        let next = Snapshot::next(model(2, &services(5, Some(3), false)), &s1);
        let v2 = next.view(&scope);
        let changed: Vec<Vec<String>> = (0..4)
            .map(|i| {
                v2.diff_from(&v1, i)
                    .changed
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            })
            .collect();
        assert_eq!(
            changed,
            [
                vec![],
                vec!["outbound|80||s3.default.svc.cluster.local".to_string()],
                vec![],
                vec![]
            ]
        );
        // ...and keeps the previous route table itself, not an equal copy.
        assert_eq!(
            v2.types[ROUTES]["80"].encoded.as_ptr(),
            v1.types[ROUTES]["80"].encoded.as_ptr()
        );
    }

    /// Scopes without a Sidecar share one set of clusters and load assignments (built once), keep their
    /// own route tables, and each still gets the shared set's difference.
    #[test]
    fn scopes_without_a_sidecar_share_their_backends() {
        let scope = |ns: &str| Scope {
            namespace: ns.into(),
            sidecar: None,
            telemetry: None,
            router: false,
        };
        let s1 = Snapshot::new(model(1, &services(5, None, false)));
        let (a1, b1) = (s1.view(&scope("default")), s1.view(&scope("other")));
        for i in [0, 1] {
            assert!(
                Arc::ptr_eq(&a1.types[i], &b1.types[i]),
                "type {i} is shared"
            );
        }
        assert_ne!(
            a1.types[ROUTES]["80"].version, b1.types[ROUTES]["80"].version,
            "domains depend on the namespace"
        );
        let s2 = Snapshot::next(model(2, &services(5, Some(3), false)), &s1);
        for ns in ["default", "other"] {
            let v = s2.view(&scope(ns));
            let (_, d) = v.diff.as_ref().expect("diffed against the previous view");
            let changed: Vec<&str> = d[1].changed.iter().map(|s| &**s).collect();
            assert_eq!(
                changed,
                ["outbound|80||s3.default.svc.cluster.local"],
                "{ns}"
            );
            assert!(d[0].changed.is_empty() && d[2].changed.is_empty() && d[3].changed.is_empty());
            assert_equals_fresh(&v, &s2.model, &scope(ns), ns);
        }
        assert_eq!(s2.scopes(), 2);
    }

    #[test]
    fn diff_finds_added_changed_removed() {
        let old = map(&[("a", b"1"), ("b", b"1"), ("c", b"1")]);
        let new = map(&[("b", b"2"), ("c", b"1"), ("d", b"1")]);
        let d = diff(&old, &new);
        let names = |v: &[Arc<str>]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(names(&d.changed), ["b", "d"]);
        assert_eq!(names(&d.removed), ["a"]);
        assert!(diff(&new, &new).changed.is_empty());
    }
}
