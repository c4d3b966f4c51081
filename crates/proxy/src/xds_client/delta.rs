//! Incremental ADS (`DeltaAggregatedResources`), after Envoy's "xDS REST and gRPC protocol", incremental
//! variant. The first request of each type opens its subscription (empty `resource_names_subscribe` for
//! the wildcard CDS and LDS, the referenced names for EDS and RDS) and, on a reconnect, lists what is held
//! in `initial_resource_versions`; only the stream's very first request carries the node. Responses carry
//! the resources added or changed and the names removed; each is applied to the held state, then ACKed
//! (its nonce) or NACKed (its nonce and `error_detail`). EDS and RDS subscriptions follow the clusters and
//! listeners with `resource_names_subscribe` / `resource_names_unsubscribe`.

use super::apply;
use super::{known_type, rejection, Ads, Client, Protocol, XdsConfig, XdsError};
use crate::config::ConfigError;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::SystemTime;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use weft_xds::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use weft_xds::pb::google::rpc::Status as RpcStatus;
use weft_xds::type_url;

/// Names subscribed on this stream, for the by-name types that have been subscribed.
type Subscribed = BTreeMap<&'static str, BTreeSet<String>>;

/// One stream: open the subscriptions, then apply, ACK or NACK each response and follow the references
/// until the stream ends. An `Unimplemented` status comes back as [`XdsError::Stream`] for the caller's
/// fallback.
pub(super) async fn session(
    client: &mut Client,
    mut ads: Ads,
    cfg: &XdsConfig,
) -> Result<(), XdsError> {
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(16);
    let mut subscribed = Subscribed::new();
    let mut node = Some(cfg.node.clone());
    for url in type_url::ALL {
        let names = match apply::wanted(url, &client.resources) {
            // Wildcard: a first request with no names (the legacy wildcard form every server knows).
            None => Vec::new(),
            // Nothing references this type yet: subscribe when something does.
            Some(names) if names.is_empty() => continue,
            Some(names) => {
                subscribed.insert(url, names.iter().cloned().collect());
                names
            }
        };
        let req = DeltaDiscoveryRequest {
            node: node.take(),
            type_url: url.to_string(),
            resource_names_subscribe: names,
            initial_resource_versions: initial_versions(client, url),
            ..Default::default()
        };
        tx.send(req).await.map_err(|_| XdsError::Closed)?;
    }
    let mut stream = ads
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map_err(XdsError::Stream)?
        .into_inner();
    tracing::info!(address = %cfg.address, protocol = Protocol::Delta.as_str(), "xds stream open");
    while let Some(resp) = stream.message().await.map_err(XdsError::Stream)? {
        client.received = true;
        on_response(client, &mut subscribed, resp, &tx).await?;
    }
    Ok(())
}

/// What is held of type `url`, name → version, so the server can skip what did not change and remove what
/// went away while the stream was down. A resource held without a delta version (applied over state of
/// the world) is listed with an empty version: the server must resend it, and must tell us if it is gone.
fn initial_versions(client: &Client, url: &'static str) -> HashMap<String, String> {
    let versions = client.resource_versions.get(url);
    apply::held_names(url, &client.resources)
        .into_iter()
        .map(|name| {
            let v = versions.and_then(|v| v.get(name)).cloned();
            (name.clone(), v.unwrap_or_default())
        })
        .collect()
}

async fn on_response(
    client: &mut Client,
    subscribed: &mut Subscribed,
    resp: DeltaDiscoveryResponse,
    tx: &mpsc::Sender<DeltaDiscoveryRequest>,
) -> Result<(), XdsError> {
    let Some(url) = known_type(&resp.type_url) else {
        tracing::warn!(type_url = %resp.type_url, "xds response of unknown type ignored");
        let e = ConfigError::UnknownType(resp.type_url.clone());
        let nack = reply(&resp.type_url, &resp.nonce, Some(rejection(&e)));
        return tx.send(nack).await.map_err(|_| XdsError::Closed);
    };
    let kind = type_url::short(url);
    let result =
        super::next_delta(&client.resources, &resp, SystemTime::now()).map(|n| client.install(n));
    match result {
        Ok(()) => {
            let versions = client.resource_versions.entry(url).or_default();
            for name in &resp.removed_resources {
                versions.remove(name);
            }
            for r in &resp.resources {
                versions.insert(r.name.clone(), r.version.clone());
            }
            tracing::info!(
                r#type = kind,
                protocol = Protocol::Delta.as_str(),
                version = %resp.system_version_info,
                resources = resp.resources.len(),
                removed = resp.removed_resources.len(),
                "xds update applied"
            );
            let ack = reply(url, &resp.nonce, None);
            tx.send(ack).await.map_err(|_| XdsError::Closed)?;
        }
        Err(e) => {
            let detail = rejection(&e);
            tracing::warn!(
                r#type = kind,
                protocol = Protocol::Delta.as_str(),
                version = %resp.system_version_info,
                nonce = %resp.nonce,
                error = %detail.message,
                "xds update rejected"
            );
            let nack = reply(url, &resp.nonce, Some(detail));
            return tx.send(nack).await.map_err(|_| XdsError::Closed);
        }
    }
    // Follow the references: CDS → EDS names, LDS → RDS names.
    if let Some(sub) = apply::follower(url) {
        let wanted: BTreeSet<String> = apply::wanted(sub, &client.resources)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let had = subscribed.get(sub);
        if had.is_none() && wanted.is_empty() {
            return Ok(());
        }
        let had = had.cloned().unwrap_or_default();
        let subscribe: Vec<String> = wanted.difference(&had).cloned().collect();
        let unsubscribe: Vec<String> = had.difference(&wanted).cloned().collect();
        if subscribe.is_empty() && unsubscribe.is_empty() {
            return Ok(());
        }
        tracing::debug!(
            r#type = type_url::short(sub),
            subscribe = subscribe.len(),
            unsubscribe = unsubscribe.len(),
            "xds subscription changed"
        );
        subscribed.insert(sub, wanted);
        let req = DeltaDiscoveryRequest {
            type_url: sub.to_string(),
            resource_names_subscribe: subscribe,
            resource_names_unsubscribe: unsubscribe,
            ..Default::default()
        };
        tx.send(req).await.map_err(|_| XdsError::Closed)?;
    }
    Ok(())
}

/// An ACK (no detail) or NACK of the response with `nonce`.
fn reply(url: &str, nonce: &str, error_detail: Option<RpcStatus>) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: url.to_string(),
        response_nonce: nonce.to_string(),
        error_detail,
        ..Default::default()
    }
}
