//! DestinationRule `trafficPolicy` → the Envoy cluster fields Istio sets: `lb_policy` and its config,
//! `circuit_breakers`, the upstream HTTP protocol options, TCP keepalive, `outlier_detection` and the
//! panic threshold; and the route's `hash_policy` for `consistentHash` (Istio puts the hash key on the
//! route, the algorithm on the cluster). TLS is [`super::mtls`]'s.
//!
//! Which policy applies to cluster `outbound|<port>|<subset>|<host>` is chosen per part (load balancer,
//! connection pool, outlier detection), as Istio merges them: the subset's port-level settings, the
//! subset's policy, the host's port-level settings, the host's policy; the first that sets the part wins.

use crate::model::Model;
use weft_api::networking::destination_rule::{
    ConnectionPoolSettings, ConsistentHashLb, DestinationRule, LoadBalancerSettings,
    OutlierDetection, TrafficPolicy,
};
use weft_xds::pb::envoy::config::cluster::v3::cluster::{
    CommonLbConfig, LbConfig, LbPolicy, MaglevLbConfig, RingHashLbConfig,
};
use weft_xds::pb::envoy::config::cluster::v3::{
    circuit_breakers::Thresholds, CircuitBreakers, Cluster,
    OutlierDetection as XdsOutlierDetection, UpstreamConnectionOptions,
};
use weft_xds::pb::envoy::config::core::v3::{HttpProtocolOptions as CommonHttp, TcpKeepalive};
use weft_xds::pb::envoy::config::route::v3::route_action::{hash_policy, HashPolicy};
use weft_xds::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use weft_xds::pb::envoy::r#type::v3::Percent;
use weft_xds::pb::google::protobuf::{UInt32Value, UInt64Value};

/// The key of Envoy's upstream HTTP protocol options in `typed_extension_protocol_options`.
pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// The parts of a traffic policy that apply to one cluster.
#[derive(Debug, Default, Clone, Copy)]
pub struct Policy<'a> {
    /// `loadBalancer`.
    pub lb: Option<&'a LoadBalancerSettings>,
    /// `connectionPool`.
    pub pool: Option<&'a ConnectionPoolSettings>,
    /// `outlierDetection`.
    pub outlier: Option<&'a OutlierDetection>,
}

impl<'a> Policy<'a> {
    /// Fills the parts this policy leaves unset from `other`.
    fn or(self, other: Policy<'a>) -> Policy<'a> {
        Policy {
            lb: self.lb.or(other.lb),
            pool: self.pool.or(other.pool),
            outlier: self.outlier.or(other.outlier),
        }
    }

    /// A traffic policy's parts for `port`: its port-level settings for the port, then its own.
    fn of(tp: &'a TrafficPolicy, port: u32) -> Policy<'a> {
        let own = Policy {
            lb: tp.load_balancer.as_ref(),
            pool: tp.connection_pool.as_ref(),
            outlier: tp.outlier_detection.as_ref(),
        };
        match tp
            .port_level_settings
            .iter()
            .find(|p| p.port.map(|p| p.number) == Some(port))
        {
            Some(pl) => Policy {
                lb: pl.load_balancer.as_ref(),
                pool: pl.connection_pool.as_ref(),
                outlier: pl.outlier_detection.as_ref(),
            }
            .or(own),
            None => own,
        }
    }
}

/// The policy of cluster `outbound|<port>|<subset>|<host>` (`subset` empty: the host's own cluster).
pub fn for_cluster<'a>(dr: &'a DestinationRule, port: u32, subset: &str) -> Policy<'a> {
    let host = dr
        .traffic_policy
        .as_ref()
        .map(|tp| Policy::of(tp, port))
        .unwrap_or_default();
    let subset = (!subset.is_empty())
        .then(|| dr.subsets.iter().find(|s| s.name == subset))
        .flatten()
        .and_then(|s| s.traffic_policy.as_ref())
        .map(|tp| Policy::of(tp, port))
        .unwrap_or_default();
    subset.or(host)
}

/// The policy of a cluster of `host` in `model` (none without a DestinationRule).
pub fn of_model<'a>(model: &'a Model, host: &str, port: u32, subset: &str) -> Policy<'a> {
    model
        .destination_rules
        .get(host)
        .and_then(|r| r.as_destination_rule())
        .map(|dr| for_cluster(dr, port, subset))
        .unwrap_or_default()
}

/// A uint32 limit as Envoy carries it; Istio's 0 means unset (protobuf's default), so Envoy's maximum.
fn limit(v: Option<i64>) -> u32 {
    match v.and_then(|v| u32::try_from(v).ok()) {
        Some(0) | None => u32::MAX,
        Some(v) => v,
    }
}

fn u32_value(v: Option<i64>) -> Option<UInt32Value> {
    v.and_then(|v| u32::try_from(v).ok())
        .map(|value| UInt32Value { value })
}

/// Sets `cluster`'s load balancer, circuit breakers, protocol options and outlier detection from `p`.
/// `http`: the port speaks HTTP (the HTTP protocol options apply).
pub fn apply(p: &Policy<'_>, http: bool, cluster: &mut Cluster) {
    if let Some(lb) = p.lb {
        load_balancer(lb, cluster);
    }
    if let Some(pool) = p.pool {
        connection_pool(pool, http, cluster);
    }
    if let Some(od) = p.outlier {
        outlier_detection(od, cluster);
    }
}

fn load_balancer(lb: &LoadBalancerSettings, c: &mut Cluster) {
    if let Some(ch) = &lb.consistent_hash {
        match &ch.maglev {
            Some(m) => {
                c.lb_policy = LbPolicy::Maglev as i32;
                c.lb_config = Some(LbConfig::MaglevLbConfig(MaglevLbConfig {
                    table_size: m
                        .table_size
                        .and_then(|t| u64::try_from(t).ok())
                        .map(|value| UInt64Value { value }),
                }));
            }
            None => {
                c.lb_policy = LbPolicy::RingHash as i32;
                let min = ch
                    .ring_hash
                    .as_ref()
                    .and_then(|r| r.minimum_ring_size)
                    .or(ch.minimum_ring_size);
                c.lb_config = Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
                    minimum_ring_size: min
                        .and_then(|t| u64::try_from(t).ok())
                        .map(|value| UInt64Value { value }),
                    ..Default::default()
                }));
            }
        }
        return;
    }
    c.lb_policy = match lb.simple.as_deref() {
        Some("LEAST_REQUEST" | "LEAST_CONN") => LbPolicy::LeastRequest,
        Some("RANDOM") => LbPolicy::Random,
        // ROUND_ROBIN, and UNSPECIFIED: weft's default is round robin.
        _ => LbPolicy::RoundRobin,
    } as i32;
}

fn connection_pool(pool: &ConnectionPoolSettings, http: bool, c: &mut Cluster) {
    let tcp = pool.tcp.as_ref();
    let h = pool.http.as_ref();
    // Istio writes every threshold, unset ones at the maximum: Envoy's own defaults (1024) would
    // otherwise limit what the user did not.
    c.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![Thresholds {
            max_connections: Some(UInt32Value {
                value: limit(tcp.and_then(|t| t.max_connections)),
            }),
            max_pending_requests: Some(UInt32Value {
                value: limit(h.and_then(|h| h.http1_max_pending_requests)),
            }),
            max_requests: Some(UInt32Value {
                value: limit(h.and_then(|h| h.http2_max_requests)),
            }),
            max_retries: Some(UInt32Value {
                value: limit(h.and_then(|h| h.max_retries)),
            }),
            ..Default::default()
        }],
        ..Default::default()
    });
    if let Some(k) = tcp.and_then(|t| t.tcp_keepalive.as_ref()) {
        let secs = |d: Option<weft_api::duration::Duration>| {
            d.map(|d| UInt32Value {
                value: u32::try_from(d.get().as_secs()).unwrap_or(u32::MAX),
            })
        };
        c.upstream_connection_options = Some(UpstreamConnectionOptions {
            tcp_keepalive: Some(TcpKeepalive {
                keepalive_probes: u32_value(k.probes),
                keepalive_time: secs(k.time),
                keepalive_interval: secs(k.interval),
            }),
            ..Default::default()
        });
    }
    if !http {
        return;
    }
    let mut common = CommonHttp::default();
    if let Some(n) = h
        .and_then(|h| h.max_requests_per_connection)
        .filter(|n| *n > 0)
    {
        common.max_requests_per_connection = u32_value(Some(n));
    }
    if let Some(d) = h.and_then(|h| h.idle_timeout) {
        common.idle_timeout = Some(super::duration(d.get()));
    }
    if let Some(d) = tcp.and_then(|t| t.max_connection_duration) {
        common.max_connection_duration = Some(super::duration(d.get()));
    }
    if common != CommonHttp::default() {
        let opts = HttpProtocolOptions {
            common_http_protocol_options: Some(common),
            ..Default::default()
        };
        c.typed_extension_protocol_options.insert(
            HTTP_PROTOCOL_OPTIONS.to_string(),
            weft_xds::pack(
                &format!("type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}"),
                &opts,
            ),
        );
    }
}

fn outlier_detection(od: &OutlierDetection, c: &mut Cluster) {
    // As Istio: a consecutive-errors setting is enforced at 100% when it is above 0, and off at 0.
    let enforcing = |v: Option<i64>| {
        v.map(|v| UInt32Value {
            value: if v > 0 { 100 } else { 0 },
        })
    };
    let mut x = XdsOutlierDetection {
        consecutive_5xx: u32_value(od.consecutive_5xx_errors),
        enforcing_consecutive_5xx: enforcing(od.consecutive_5xx_errors),
        consecutive_gateway_failure: u32_value(od.consecutive_gateway_errors),
        enforcing_consecutive_gateway_failure: enforcing(od.consecutive_gateway_errors),
        split_external_local_origin_errors: od.split_external_local_origin_errors.unwrap_or(false),
        interval: od.interval.map(|d| super::duration(d.get())),
        base_ejection_time: od.base_ejection_time.map(|d| super::duration(d.get())),
        max_ejection_percent: u32_value(od.max_ejection_percent),
        // Success-rate ejection is not part of Istio's API: off.
        enforcing_success_rate: Some(UInt32Value { value: 0 }),
        ..Default::default()
    };
    if x.split_external_local_origin_errors {
        x.consecutive_local_origin_failure = u32_value(od.consecutive_local_origin_failures);
        x.enforcing_consecutive_local_origin_failure =
            enforcing(od.consecutive_local_origin_failures);
    }
    c.outlier_detection = Some(x);
    // minHealthPercent (default 0: never panic) is Envoy's healthy panic threshold.
    c.common_lb_config = Some(CommonLbConfig {
        healthy_panic_threshold: Some(Percent {
            value: od.min_health_percent.unwrap_or(0) as f64,
        }),
        ..c.common_lb_config.take().unwrap_or_default()
    });
}

/// The route hash policy of a `consistentHash` load balancer.
fn hash_policy(ch: &ConsistentHashLb) -> Vec<HashPolicy> {
    use hash_policy::PolicySpecifier as P;
    let spec = if let Some(h) = &ch.http_header_name {
        P::Header(hash_policy::Header {
            header_name: h.clone(),
            ..Default::default()
        })
    } else if let Some(c) = &ch.http_cookie {
        P::Cookie(hash_policy::Cookie {
            name: c.name.clone(),
            ttl: c.ttl.map(|d| super::duration(d.get())),
            path: c.path.clone().unwrap_or_default(),
            ..Default::default()
        })
    } else if ch.use_source_ip == Some(true) {
        P::ConnectionProperties(hash_policy::ConnectionProperties { source_ip: true })
    } else if let Some(q) = &ch.http_query_parameter_name {
        P::QueryParameter(hash_policy::QueryParameter { name: q.clone() })
    } else {
        return Vec::new();
    };
    vec![HashPolicy {
        policy_specifier: Some(spec),
        ..Default::default()
    }]
}

/// The hash policy of outbound cluster `name` (`outbound|<port>|<subset>|<host>`): what its
/// DestinationRule's `consistentHash` hashes on; empty for other clusters and load balancers.
pub fn hash_policy_of_cluster(model: &Model, name: &str) -> Vec<HashPolicy> {
    let mut parts = name.splitn(4, '|');
    let (Some("outbound"), Some(port), Some(subset), Some(host)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Vec::new();
    };
    let Ok(port) = port.parse() else {
        return Vec::new();
    };
    of_model(model, host, port, subset)
        .lb
        .and_then(|lb| lb.consistent_hash.as_ref())
        .map(hash_policy)
        .unwrap_or_default()
}

/// The hash policy of a route action sending to `clusters`: theirs when they all hash alike (Istio hashes
/// a route with one destination; a split whose destinations agree is hashed the same way), else none.
pub fn route_hash_policy<'a>(
    model: &Model,
    mut clusters: impl Iterator<Item = &'a str>,
) -> Vec<HashPolicy> {
    let Some(first) = clusters.next() else {
        return Vec::new();
    };
    let policy = hash_policy_of_cluster(model, first);
    if policy.is_empty() || clusters.any(|c| hash_policy_of_cluster(model, c) != policy) {
        return Vec::new();
    }
    policy
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::tests::model;
    use crate::translate::{for_proxy, ProxyResources};
    use weft_xds::node::ProxyIdentity;
    use weft_xds::pb::envoy::config::route::v3::{route::Action, RouteConfiguration};
    use weft_xds::{type_url, unpack};

    /// A `ratings` service on ports 9080 (HTTP) and 9090 (TCP) with subsets v1 and v2, and `policy`
    /// (YAML under `spec:`) as its DestinationRule's.
    fn ratings(policy: &str) -> ProxyResources {
        let extra = format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: ratings}}\nspec:\n  hosts: [ratings.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 9080, name: http, protocol: HTTP}}, {{number: 9090, name: tcp, protocol: TCP}}]\n  workloadSelector: {{labels: {{app: ratings}}}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: ratings}}\nspec:\n  host: ratings\n{policy}"
        );
        let m = model(&extra);
        let proxy = ProxyIdentity {
            workload: "productpage-v1".into(),
            namespace: "default".into(),
            ip: "127.0.1.10".into(),
            ..Default::default()
        };
        for_proxy(&m, &proxy)
    }

    fn cluster(res: &ProxyResources, name: &str) -> Cluster {
        let all = res.of(type_url::CLUSTER).expect("clusters");
        let any = all
            .get(name)
            .unwrap_or_else(|| panic!("no cluster {name} in {:?}", all.keys()))
            .clone();
        unpack(&any).expect("cluster decodes")
    }

    const HTTP: &str = "outbound|9080||ratings.default.svc.cluster.local";
    const TCP: &str = "outbound|9090||ratings.default.svc.cluster.local";
    const V1: &str = "outbound|9080|v1|ratings.default.svc.cluster.local";
    const V2: &str = "outbound|9080|v2|ratings.default.svc.cluster.local";

    fn thresholds(c: &Cluster) -> [u32; 4] {
        let t = &c
            .circuit_breakers
            .as_ref()
            .expect("circuit breakers")
            .thresholds[0];
        let v = |x: &Option<UInt32Value>| x.as_ref().map_or(0, |v| v.value);
        [
            v(&t.max_connections),
            v(&t.max_pending_requests),
            v(&t.max_requests),
            v(&t.max_retries),
        ]
    }

    fn common_http(c: &Cluster) -> CommonHttp {
        let any = &c.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS];
        let o: HttpProtocolOptions = unpack(any).expect("protocol options decode");
        o.common_http_protocol_options.expect("common options")
    }

    #[test]
    fn istios_circuit_breaking_task_becomes_thresholds_and_outlier_detection() {
        let res = ratings(
            "  trafficPolicy:\n    connectionPool:\n      tcp: {maxConnections: 1, connectTimeout: 2s, tcpKeepalive: {time: 60s, probes: 3}}\n      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1, idleTimeout: 30s}\n    outlierDetection:\n      consecutive5xxErrors: 1\n      interval: 1s\n      baseEjectionTime: 3m\n      maxEjectionPercent: 100\n",
        );
        let c = cluster(&res, HTTP);
        let max = u32::MAX;
        assert_eq!(
            thresholds(&c),
            [1, 1, max, max],
            "unset limits are Envoy's maximum"
        );
        assert_eq!(
            c.connect_timeout,
            Some(super::super::duration(std::time::Duration::from_secs(2)))
        );
        let common = common_http(&c);
        assert_eq!(
            common.max_requests_per_connection,
            Some(UInt32Value { value: 1 })
        );
        assert_eq!(common.idle_timeout.map(|d| d.seconds), Some(30));
        let k = c
            .upstream_connection_options
            .and_then(|o| o.tcp_keepalive)
            .expect("keepalive");
        assert_eq!(k.keepalive_time, Some(UInt32Value { value: 60 }));
        assert_eq!(k.keepalive_probes, Some(UInt32Value { value: 3 }));
        assert_eq!(k.keepalive_interval, None);
        let od = c.outlier_detection.expect("outlier detection");
        assert_eq!(od.consecutive_5xx, Some(UInt32Value { value: 1 }));
        assert_eq!(
            od.enforcing_consecutive_5xx,
            Some(UInt32Value { value: 100 })
        );
        assert_eq!(od.consecutive_gateway_failure, None);
        assert_eq!(od.interval.map(|d| d.seconds), Some(1));
        assert_eq!(od.base_ejection_time.map(|d| d.seconds), Some(180));
        assert_eq!(od.max_ejection_percent, Some(UInt32Value { value: 100 }));
        assert_eq!(
            c.common_lb_config
                .and_then(|l| l.healthy_panic_threshold)
                .map(|p| p.value),
            Some(0.0),
            "minHealthPercent defaults to 0: never panic"
        );
        // The TCP port gets the same thresholds but no HTTP protocol options.
        let tcp = cluster(&res, TCP);
        assert_eq!(thresholds(&tcp), [1, 1, max, max]);
        assert!(tcp.typed_extension_protocol_options.is_empty());
    }

    #[test]
    fn port_level_and_subset_policies_win_part_by_part() {
        let res = ratings(
            "  trafficPolicy:\n    loadBalancer: {simple: RANDOM}\n    connectionPool:\n      http: {http2MaxRequests: 7}\n    portLevelSettings:\n    - port: {number: 9080}\n      loadBalancer: {simple: LEAST_REQUEST}\n  subsets:\n  - name: v1\n    labels: {version: v1}\n    trafficPolicy:\n      connectionPool:\n        tcp: {maxConnections: 3}\n  - name: v2\n    labels: {version: v2}\n    trafficPolicy:\n      outlierDetection: {consecutiveGatewayErrors: 2, splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 4, minHealthPercent: 30}\n",
        );
        let max = u32::MAX;
        let host = cluster(&res, HTTP);
        assert_eq!(
            host.lb_policy,
            LbPolicy::LeastRequest as i32,
            "port level replaces the host's"
        );
        assert_eq!(
            thresholds(&host),
            [max, max, 7, max],
            "port level has no pool: the host's"
        );
        assert_eq!(
            cluster(&res, TCP).lb_policy,
            LbPolicy::Random as i32,
            "other ports: the host's"
        );
        let v1 = cluster(&res, V1);
        assert_eq!(v1.lb_policy, LbPolicy::LeastRequest as i32);
        assert_eq!(
            thresholds(&v1),
            [3, max, max, max],
            "the subset's pool replaces the host's"
        );
        let v2 = cluster(&res, V2);
        assert_eq!(thresholds(&v2), [max, max, 7, max]);
        let od = v2.outlier_detection.expect("subset outlier detection");
        assert_eq!(od.consecutive_5xx, None, "Envoy's default");
        assert_eq!(
            od.consecutive_gateway_failure,
            Some(UInt32Value { value: 2 })
        );
        assert_eq!(
            od.enforcing_consecutive_gateway_failure,
            Some(UInt32Value { value: 100 })
        );
        assert!(od.split_external_local_origin_errors);
        assert_eq!(
            od.consecutive_local_origin_failure,
            Some(UInt32Value { value: 4 })
        );
        assert_eq!(
            v2.common_lb_config
                .and_then(|l| l.healthy_panic_threshold)
                .map(|p| p.value),
            Some(30.0)
        );
        assert!(host.outlier_detection.is_none());
    }

    fn default_route_hash(res: &ProxyResources) -> Vec<HashPolicy> {
        let rc: RouteConfiguration =
            unpack(&res.of(type_url::ROUTE).expect("routes")["9080"]).expect("decodes");
        let vh = rc
            .virtual_hosts
            .iter()
            .find(|v| v.domains.iter().any(|d| d.starts_with("ratings")))
            .expect("ratings virtual host");
        match &vh.routes[0].action {
            Some(Action::Route(a)) => a.hash_policy.clone(),
            other => panic!("not a route action: {other:?}"),
        }
    }

    #[test]
    fn consistent_hash_sets_the_cluster_algorithm_and_the_route_key() {
        use hash_policy::PolicySpecifier as P;
        let cases: &[(&str, &str, LbPolicy, Option<u64>, P)] = &[
            (
                "ring hash on a header",
                "{httpHeaderName: x-user, ringHash: {minimumRingSize: 2048}}",
                LbPolicy::RingHash,
                Some(2048),
                P::Header(hash_policy::Header {
                    header_name: "x-user".into(),
                    ..Default::default()
                }),
            ),
            (
                "default algorithm is ring hash",
                "{useSourceIp: true}",
                LbPolicy::RingHash,
                None,
                P::ConnectionProperties(hash_policy::ConnectionProperties { source_ip: true }),
            ),
            (
                "maglev on a cookie",
                "{httpCookie: {name: user, path: /, ttl: 10s}, maglev: {tableSize: 131}}",
                LbPolicy::Maglev,
                Some(131),
                P::Cookie(hash_policy::Cookie {
                    name: "user".into(),
                    path: "/".into(),
                    ttl: Some(super::super::duration(std::time::Duration::from_secs(10))),
                    ..Default::default()
                }),
            ),
            (
                "query parameter",
                "{httpQueryParameterName: u, maglev: {}}",
                LbPolicy::Maglev,
                None,
                P::QueryParameter(hash_policy::QueryParameter { name: "u".into() }),
            ),
        ];
        for (name, ch, policy, size, key) in cases {
            let res = ratings(&format!(
                "  trafficPolicy:\n    loadBalancer:\n      consistentHash: {ch}\n"
            ));
            let c = cluster(&res, HTTP);
            assert_eq!(c.lb_policy, *policy as i32, "case {name}");
            let got_size = match &c.lb_config {
                Some(LbConfig::RingHashLbConfig(r)) => {
                    r.minimum_ring_size.as_ref().map(|v| v.value)
                }
                Some(LbConfig::MaglevLbConfig(m)) => m.table_size.as_ref().map(|v| v.value),
                other => panic!("case {name}: lb_config {other:?}"),
            };
            assert_eq!(got_size, *size, "case {name}");
            let hash = default_route_hash(&res);
            assert_eq!(hash.len(), 1, "case {name}");
            assert_eq!(hash[0].policy_specifier.as_ref(), Some(key), "case {name}");
        }
        let plain = ratings("  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n");
        assert!(default_route_hash(&plain).is_empty());
        assert!(cluster(&plain, HTTP).circuit_breakers.is_none());
    }

    #[test]
    fn virtual_service_routes_hash_when_their_destinations_agree() {
        let dr = "  trafficPolicy:\n    loadBalancer:\n      consistentHash: {httpHeaderName: x-user}\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - name: v2\n    labels: {version: v2}\n    trafficPolicy:\n      loadBalancer: {simple: RANDOM}\n";
        let vs = |route: &str| {
            format!("---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: ratings}}\nspec:\n  hosts: [ratings]\n  http:\n  - route:\n{route}")
        };
        let one = ratings(&format!(
            "{dr}{}",
            vs("    - destination: {host: ratings, port: {number: 9080}, subset: v1}\n")
        ));
        assert_eq!(
            default_route_hash(&one).len(),
            1,
            "one destination: its key"
        );
        let split = ratings(&format!(
            "{dr}{}",
            vs("    - destination: {host: ratings, port: {number: 9080}, subset: v1}\n      weight: 50\n    - destination: {host: ratings, port: {number: 9080}, subset: v2}\n      weight: 50\n")
        ));
        assert!(default_route_hash(&split).is_empty(), "v2 does not hash");
    }
}
