//! The proxy's side of xDS: arbitrary Envoy resources, in a sequence of state-of-the-world and delta
//! responses (format in `src/xds_input.rs`), each applied to what the previous ones left as the xDS
//! client applies it (`weft_proxy::xds_client::next_sotw` / `next_delta`: decode, convert to the proxy's
//! typed config, merge, prune), then built into the `Snapshot` requests read. Nothing may panic: a bad
//! resource is a NACK, and what was accepted before stays.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use std::hint::black_box;
use std::time::SystemTime;
use weft_fuzz::xds_input;
use weft_proxy::config::{Resources, Snapshot};
use weft_proxy::xds_client::{next_delta, next_sotw};
use weft_xds::ads::DiscoveryResponse;
use weft_xds::pb::envoy::config::cluster::v3::Cluster;
use weft_xds::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use weft_xds::pb::envoy::config::listener::v3::Listener;
use weft_xds::pb::envoy::config::route::v3::RouteConfiguration;
use weft_xds::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, Resource};
use weft_xds::{type_url, Any};

fuzz_target!(|data: &[u8]| {
    let mut held = Resources::default();
    for (step, r) in xds_input::decode(data).into_iter().enumerate() {
        let url = type_url::ALL[r.type_index];
        let version = format!("v{step}");
        let anys = r.resources.iter().map(|bytes| Any {
            type_url: url.to_string(),
            value: bytes.to_vec(),
        });
        let next = if r.delta {
            let resp = DeltaDiscoveryResponse {
                system_version_info: version.clone(),
                type_url: url.to_string(),
                // As weftd sends them: each envelope carries the resource's own name.
                resources: anys
                    .map(|any| Resource {
                        name: name_of(url, &any.value),
                        version: version.clone(),
                        resource: Some(any),
                        ..Default::default()
                    })
                    .collect(),
                removed_resources: held_names(url, &held)
                    .into_iter()
                    .take(8)
                    .enumerate()
                    .filter(|(i, _)| r.removed & (1 << i) != 0)
                    .map(|(_, name)| name)
                    .collect(),
                nonce: version,
                ..Default::default()
            };
            next_delta(&held, &resp, SystemTime::UNIX_EPOCH)
        } else {
            let resp = DiscoveryResponse {
                version_info: version.clone(),
                resources: anys.collect(),
                type_url: url.to_string(),
                nonce: version,
                ..Default::default()
            };
            next_sotw(&held, &resp, SystemTime::UNIX_EPOCH)
        };
        match next {
            Ok(next) => {
                // What the client does with an accepted update: build the snapshot and follow the
                // references it now holds (the EDS and RDS names to subscribe to).
                let snapshot = Snapshot::build(next.clone());
                for l in snapshot.listeners.values() {
                    black_box(snapshot.route_table(&l.value));
                }
                black_box(Snapshot::eds_names(&next));
                black_box(Snapshot::rds_names(&next));
                black_box(snapshot);
                held = next;
            }
            // The NACK's message.
            Err(e) => {
                black_box(e.chain());
            }
        }
    }
});

/// The name a resource gives itself, or "" when it does not decode (the update is then refused anyway).
fn name_of(url: &str, bytes: &[u8]) -> String {
    let name = match url {
        type_url::CLUSTER => Cluster::decode(bytes).map(|m| m.name),
        type_url::ENDPOINT => ClusterLoadAssignment::decode(bytes).map(|m| m.cluster_name),
        type_url::LISTENER => Listener::decode(bytes).map(|m| m.name),
        _ => RouteConfiguration::decode(bytes).map(|m| m.name),
    };
    name.unwrap_or_default()
}

/// The held resources of type `url`, by name.
fn held_names(url: &str, held: &Resources) -> Vec<String> {
    match url {
        type_url::CLUSTER => held.clusters.keys().cloned().collect(),
        type_url::ENDPOINT => held.endpoints.keys().cloned().collect(),
        type_url::LISTENER => held.listeners.keys().cloned().collect(),
        _ => held.routes.keys().cloned().collect(),
    }
}
