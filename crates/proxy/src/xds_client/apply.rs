//! One apply for every resource type and both protocols. A response becomes an [`Update`] (the resources
//! it adds or changes, the names it removes, and whether it is the whole set); [`apply`] converts the
//! resources, merges them into the held per-type map, drops what no longer has a referrer and returns the
//! next [`Resources`]. It never touches what is held: a rejected update leaves nothing behind, so the next
//! one starts from the last accepted state. Building and installing the snapshot is the caller's.

use crate::config::{self, ConfigError, Converted, Resources, Snapshot, Stored};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;
use weft_xds::ads::DiscoveryResponse;
use weft_xds::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;
use weft_xds::{type_url, Any};

/// What one response says about one type.
#[derive(Debug)]
pub(super) struct Update<'a> {
    /// `version_info` (state of the world) or `system_version_info` (delta).
    pub(super) version: &'a str,
    /// Resources added or changed.
    pub(super) items: Vec<Item<'a>>,
    /// Names no longer there (delta's `removed_resources`).
    pub(super) removed: &'a [String],
    /// The items are the whole set, so anything held and not listed goes (state of the world, wildcard
    /// types). Otherwise what is not mentioned stays.
    pub(super) replace: bool,
}

/// One resource of an [`Update`].
#[derive(Debug)]
pub(super) struct Item<'a> {
    /// The name its delta envelope gives; the resource's own name must be the same.
    pub(super) name: Option<&'a str>,
    /// The resource.
    pub(super) any: &'a Any,
    /// Its version: the response's (state of the world) or its own, opaque (delta).
    pub(super) version: &'a str,
}

impl<'a> Update<'a> {
    /// A state-of-the-world response of type `url`: the whole set for CDS and LDS; for EDS and RDS the
    /// named resources it lists, the others kept (Envoy's rule for non-wildcard types).
    pub(super) fn sotw(url: &str, resp: &'a DiscoveryResponse) -> Update<'a> {
        Update {
            version: &resp.version_info,
            items: resp
                .resources
                .iter()
                .map(|any| Item {
                    name: None,
                    any,
                    version: &resp.version_info,
                })
                .collect(),
            removed: &[],
            replace: is_wildcard(url),
        }
    }

    /// A delta response: changes only, each resource with its own version, plus removed names.
    pub(super) fn delta(
        url: &'static str,
        resp: &'a DeltaDiscoveryResponse,
    ) -> Result<Update<'a>, ConfigError> {
        let items = resp
            .resources
            .iter()
            .map(|r| match &r.resource {
                Some(any) => Ok(Item {
                    name: Some(&r.name),
                    any,
                    version: &r.version,
                }),
                None => Err(ConfigError::NoBody {
                    kind: type_url::short(url),
                    name: r.name.clone(),
                }),
            })
            .collect::<Result<_, _>>()?;
        Ok(Update {
            version: &resp.system_version_info,
            items,
            removed: &resp.removed_resources,
            replace: false,
        })
    }
}

/// The held resources of one type, by name.
type Held<T> = BTreeMap<String, Arc<Stored<T>>>;

/// A resource type: its URL, its converted form, and where that lives in [`Resources`].
trait Kind {
    /// The converted form.
    type Value: Clone;
    /// The type URL.
    const URL: &'static str;
    /// The held map of this type.
    fn map(r: &Resources) -> &Held<Self::Value>;
    /// The same, to replace.
    fn map_mut(r: &mut Resources) -> &mut Held<Self::Value>;
    /// Converts one resource (position `index` in its response).
    fn convert(index: usize, any: &Any) -> Result<Converted<Self::Value>, ConfigError>;
    /// Drops resources of other types that only this type referenced, once this type changed.
    fn prune(_next: &mut Resources) {}
}

struct Clusters;
struct Endpoints;
struct Listeners;
struct Routes;

impl Kind for Clusters {
    type Value = config::cluster::ClusterConfig;
    const URL: &'static str = type_url::CLUSTER;
    fn map(r: &Resources) -> &Held<Self::Value> {
        &r.clusters
    }
    fn map_mut(r: &mut Resources) -> &mut Held<Self::Value> {
        &mut r.clusters
    }
    fn convert(index: usize, any: &Any) -> Result<Converted<Self::Value>, ConfigError> {
        config::convert_cluster(index, any)
    }
    /// The load assignments of clusters that are gone (they are unsubscribed too).
    fn prune(next: &mut Resources) {
        let eds = Snapshot::eds_names(next);
        next.endpoints.retain(|k, _| eds.binary_search(k).is_ok());
    }
}

impl Kind for Endpoints {
    type Value = Arc<crate::balance::EndpointSet>;
    const URL: &'static str = type_url::ENDPOINT;
    fn map(r: &Resources) -> &Held<Self::Value> {
        &r.endpoints
    }
    fn map_mut(r: &mut Resources) -> &mut Held<Self::Value> {
        &mut r.endpoints
    }
    fn convert(index: usize, any: &Any) -> Result<Converted<Self::Value>, ConfigError> {
        config::convert_endpoints(index, any)
    }
}

impl Kind for Listeners {
    type Value = config::listener::Listener;
    const URL: &'static str = type_url::LISTENER;
    fn map(r: &Resources) -> &Held<Self::Value> {
        &r.listeners
    }
    fn map_mut(r: &mut Resources) -> &mut Held<Self::Value> {
        &mut r.listeners
    }
    fn convert(index: usize, any: &Any) -> Result<Converted<Self::Value>, ConfigError> {
        config::convert_listener(index, any)
    }
    /// The route tables no listener uses any more (they are unsubscribed too).
    fn prune(next: &mut Resources) {
        let rds = Snapshot::rds_names(next);
        next.routes.retain(|k, _| rds.binary_search(k).is_ok());
    }
}

impl Kind for Routes {
    type Value = Arc<config::route::RouteConfig>;
    const URL: &'static str = type_url::ROUTE;
    fn map(r: &Resources) -> &Held<Self::Value> {
        &r.routes
    }
    fn map_mut(r: &mut Resources) -> &mut Held<Self::Value> {
        &mut r.routes
    }
    fn convert(index: usize, any: &Any) -> Result<Converted<Self::Value>, ConfigError> {
        config::convert_route(index, any)
    }
}

/// The next resources after `update` of type `url`, or why it is rejected (one bad resource rejects it
/// all). `held` is not changed either way.
pub(super) fn apply(
    url: &str,
    held: &Resources,
    update: &Update<'_>,
    now: SystemTime,
) -> Result<Resources, ConfigError> {
    match url {
        type_url::CLUSTER => apply_kind::<Clusters>(held, update, now),
        type_url::ENDPOINT => apply_kind::<Endpoints>(held, update, now),
        type_url::LISTENER => apply_kind::<Listeners>(held, update, now),
        type_url::ROUTE => apply_kind::<Routes>(held, update, now),
        other => Err(ConfigError::UnknownType(other.to_string())),
    }
}

fn apply_kind<K: Kind>(
    held: &Resources,
    update: &Update<'_>,
    now: SystemTime,
) -> Result<Resources, ConfigError> {
    let current = K::map(held);
    // A resource whose bytes did not change keeps its converted form, so regexes are not recompiled and
    // endpoint sets keep their round-robin position.
    let unchanged: HashMap<&[u8], (&String, &Stored<K::Value>)> = current
        .iter()
        .map(|(k, s)| (s.raw.value.as_slice(), (k, &**s)))
        .collect();
    let mut next_map = if update.replace {
        BTreeMap::new()
    } else {
        current.clone()
    };
    for name in update.removed {
        next_map.remove(name);
    }
    for (index, item) in update.items.iter().enumerate() {
        let (name, value) = match unchanged.get(item.any.value.as_slice()) {
            Some((name, old)) if old.raw.type_url == item.any.type_url => {
                ((*name).clone(), old.value.clone())
            }
            _ => K::convert(index, item.any)?,
        };
        if let Some(envelope) = item.name {
            if envelope != name {
                return Err(ConfigError::NameMismatch {
                    kind: type_url::short(K::URL),
                    name: envelope.to_string(),
                    inner: name,
                });
            }
        }
        next_map.insert(
            name,
            Arc::new(Stored {
                raw: item.any.clone(),
                version: item.version.to_string(),
                last_updated: now,
                value,
            }),
        );
    }
    let mut next = held.clone();
    *K::map_mut(&mut next) = next_map;
    K::prune(&mut next);
    next.versions
        .insert(K::URL.to_string(), update.version.to_string());
    Ok(next)
}

/// CDS and LDS are wildcard subscriptions; EDS and RDS are subscribed by name.
pub(super) fn is_wildcard(url: &str) -> bool {
    url == type_url::CLUSTER || url == type_url::LISTENER
}

/// The names to subscribe to for a by-name type, from what the held resources reference (`None` for a
/// wildcard type).
pub(super) fn wanted(url: &str, held: &Resources) -> Option<Vec<String>> {
    match url {
        type_url::ENDPOINT => Some(Snapshot::eds_names(held)),
        type_url::ROUTE => Some(Snapshot::rds_names(held)),
        _ => None,
    }
}

/// The by-name type whose subscription follows this type's resources: CDS → EDS, LDS → RDS.
pub(super) fn follower(url: &str) -> Option<&'static str> {
    match url {
        type_url::CLUSTER => Some(type_url::ENDPOINT),
        type_url::LISTENER => Some(type_url::ROUTE),
        _ => None,
    }
}

/// Names of the held resources of type `url`.
pub(super) fn held_names<'r>(url: &str, held: &'r Resources) -> Vec<&'r String> {
    match url {
        type_url::CLUSTER => held.clusters.keys().collect(),
        type_url::ENDPOINT => held.endpoints.keys().collect(),
        type_url::LISTENER => held.listeners.keys().collect(),
        type_url::ROUTE => held.routes.keys().collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_xds::pack;
    use weft_xds::pb::envoy::config::cluster::v3::{cluster, Cluster as XdsCluster};
    use weft_xds::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use weft_xds::pb::envoy::service::discovery::v3::Resource;

    fn eds_cluster(name: &str) -> Any {
        pack(
            type_url::CLUSTER,
            &XdsCluster {
                name: name.into(),
                cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                    cluster::DiscoveryType::Eds as i32,
                )),
                ..Default::default()
            },
        )
    }

    fn dns_cluster(name: &str) -> Any {
        pack(
            type_url::CLUSTER,
            &XdsCluster {
                name: name.into(),
                cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                    cluster::DiscoveryType::LogicalDns as i32,
                )),
                ..Default::default()
            },
        )
    }

    fn cla(name: &str) -> Any {
        pack(
            type_url::ENDPOINT,
            &ClusterLoadAssignment {
                cluster_name: name.into(),
                ..Default::default()
            },
        )
    }

    fn delta(
        url: &'static str,
        add: &[(&str, &str, Any)],
        removed: &[&str],
    ) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            system_version_info: "sys".into(),
            type_url: url.into(),
            resources: add
                .iter()
                .map(|(name, version, any)| Resource {
                    name: name.to_string(),
                    version: version.to_string(),
                    resource: Some(any.clone()),
                    ..Default::default()
                })
                .collect(),
            removed_resources: removed.iter().map(|s| s.to_string()).collect(),
            nonce: "n".into(),
            ..Default::default()
        }
    }

    fn sotw(url: &str, version: &str, resources: Vec<Any>) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: version.into(),
            type_url: url.into(),
            resources,
            ..Default::default()
        }
    }

    fn step_delta(held: &Resources, resp: &DeltaDiscoveryResponse) -> Result<Resources, String> {
        let url = type_url::ALL
            .into_iter()
            .find(|u| *u == resp.type_url)
            .expect("known type");
        let u = Update::delta(url, resp).map_err(|e| e.chain())?;
        apply(&resp.type_url, held, &u, SystemTime::now()).map_err(|e| e.chain())
    }

    fn names<T>(m: &BTreeMap<String, Arc<Stored<T>>>) -> Vec<&str> {
        m.keys().map(String::as_str).collect()
    }

    #[test]
    fn delta_adds_changes_and_removes_by_name() {
        let r = step_delta(
            &Resources::default(),
            &delta(
                type_url::CLUSTER,
                &[("a", "1", eds_cluster("a")), ("b", "1", eds_cluster("b"))],
                &[],
            ),
        )
        .expect("added");
        assert_eq!(names(&r.clusters), ["a", "b"]);
        assert_eq!(r.clusters["a"].version, "1", "the resource's own version");
        assert_eq!(r.versions[type_url::CLUSTER], "sys");

        let r = step_delta(
            &r,
            &delta(
                type_url::ENDPOINT,
                &[("a", "e1", cla("a")), ("b", "e1", cla("b"))],
                &[],
            ),
        )
        .expect("endpoints");
        // Only "c" is mentioned: "a" and "b" stay; removing "b" drops its load assignment too.
        let r = step_delta(
            &r,
            &delta(type_url::CLUSTER, &[("c", "1", eds_cluster("c"))], &["b"]),
        )
        .expect("changed");
        assert_eq!(names(&r.clusters), ["a", "c"]);
        assert_eq!(
            names(&r.endpoints),
            ["a"],
            "endpoints of a removed cluster pruned"
        );
        assert_eq!(
            wanted(type_url::ENDPOINT, &r),
            Some(vec!["a".into(), "c".into()])
        );

        // Removing a name not held is not an error.
        let r = step_delta(&r, &delta(type_url::CLUSTER, &[], &["zzz"])).expect("no-op");
        assert_eq!(names(&r.clusters), ["a", "c"]);
    }

    #[test]
    fn a_rejected_update_leaves_the_held_state_alone() {
        let held = step_delta(
            &Resources::default(),
            &delta(type_url::CLUSTER, &[("a", "1", eds_cluster("a"))], &[]),
        )
        .expect("first");
        let cases: Vec<(&str, DeltaDiscoveryResponse, &str)> = vec![
            (
                "one bad resource among good ones",
                delta(
                    type_url::CLUSTER,
                    &[
                        ("b", "2", eds_cluster("b")),
                        ("dns", "2", dns_cluster("dns")),
                    ],
                    &["a"],
                ),
                "cluster \"dns\": unsupported cluster type LOGICAL_DNS",
            ),
            (
                "envelope name differs",
                delta(type_url::CLUSTER, &[("x", "2", eds_cluster("y"))], &[]),
                "CDS resource \"x\" holds a resource named \"y\"",
            ),
            (
                "no body",
                DeltaDiscoveryResponse {
                    resources: vec![Resource {
                        name: "x".into(),
                        ..Default::default()
                    }],
                    ..delta(type_url::CLUSTER, &[], &[])
                },
                "CDS resource \"x\" has no body",
            ),
        ];
        for (name, resp, want) in cases {
            let err = step_delta(&held, &resp).expect_err(name);
            assert_eq!(err, want, "case {name}");
            assert_eq!(names(&held.clusters), ["a"], "case {name}");
        }
    }

    #[test]
    fn sotw_replaces_wildcard_types_and_keeps_unlisted_named_ones() {
        let now = SystemTime::now();
        let resp = sotw(
            type_url::CLUSTER,
            "1",
            vec![eds_cluster("a"), eds_cluster("b")],
        );
        let r = apply(
            type_url::CLUSTER,
            &Resources::default(),
            &Update::sotw(type_url::CLUSTER, &resp),
            now,
        )
        .expect("cds");
        let resp = sotw(type_url::ENDPOINT, "1", vec![cla("a"), cla("b")]);
        let r = apply(
            type_url::ENDPOINT,
            &r,
            &Update::sotw(type_url::ENDPOINT, &resp),
            now,
        )
        .expect("eds");
        let before = r.endpoints["a"].value.clone();

        let resp = sotw(type_url::ENDPOINT, "2", vec![cla("b")]);
        let r = apply(
            type_url::ENDPOINT,
            &r,
            &Update::sotw(type_url::ENDPOINT, &resp),
            now,
        )
        .expect("eds 2");
        assert_eq!(names(&r.endpoints), ["a", "b"], "EDS: unlisted names stay");
        assert!(Arc::ptr_eq(&before, &r.endpoints["a"].value));

        let resp = sotw(type_url::CLUSTER, "2", vec![eds_cluster("b")]);
        let r = apply(
            type_url::CLUSTER,
            &r,
            &Update::sotw(type_url::CLUSTER, &resp),
            now,
        )
        .expect("cds 2");
        assert_eq!(names(&r.clusters), ["b"], "CDS: the whole set");
        assert_eq!(names(&r.endpoints), ["b"]);
        assert_eq!(r.clusters["b"].version, "2");
    }

    #[test]
    fn unchanged_bytes_keep_the_converted_value() {
        let first = step_delta(
            &Resources::default(),
            &delta(type_url::ENDPOINT, &[("a", "1", cla("a"))], &[]),
        )
        .expect("first");
        let again = step_delta(
            &first,
            &delta(type_url::ENDPOINT, &[("a", "1", cla("a"))], &[]),
        )
        .expect("again");
        assert!(Arc::ptr_eq(
            &first.endpoints["a"].value,
            &again.endpoints["a"].value
        ));
    }
}
