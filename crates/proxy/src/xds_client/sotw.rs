//! State-of-the-world ADS (`StreamAggregatedResources`): every request names the full set wanted (empty
//! for the wildcard CDS and LDS) and carries the last accepted `version_info` and the last nonce; a
//! response of CDS or LDS is the whole set of its type.

use super::apply;
use super::{known_type, rejection, Ads, Client, Protocol, XdsConfig, XdsError};
use crate::config::ConfigError;
use std::collections::BTreeMap;
use std::time::SystemTime;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use weft_xds::ads::{DiscoveryRequest, DiscoveryResponse};
use weft_xds::type_url;

/// Per type, what this stream last said.
#[derive(Debug, Default)]
struct TypeState {
    /// Last nonce received on this stream.
    nonce: String,
    /// Names subscribed (empty: wildcard).
    names: Vec<String>,
}

/// One stream: subscribe to what the held resources call for, then apply, ACK or NACK each response and
/// follow the references until the stream ends.
pub(super) async fn session(
    client: &mut Client,
    mut ads: Ads,
    cfg: &XdsConfig,
) -> Result<(), XdsError> {
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(16);
    // Nonces belong to a stream; the versions held are re-sent so the server may skip unchanged types.
    let mut types: BTreeMap<&'static str, TypeState> = BTreeMap::new();
    let mut first = true;
    for url in type_url::ALL {
        let names = match apply::wanted(url, &client.resources) {
            None => Vec::new(),
            Some(names) if names.is_empty() => continue,
            Some(names) => names,
        };
        let st = types.entry(url).or_default();
        st.names = names;
        let mut req = request(client, url, st);
        if first {
            req.node = Some(cfg.node.clone());
            first = false;
        }
        tx.send(req).await.map_err(|_| XdsError::Closed)?;
    }
    let mut stream = ads
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map_err(XdsError::Stream)?
        .into_inner();
    tracing::info!(address = %cfg.address, protocol = Protocol::Sotw.as_str(), "xds stream open");
    while let Some(resp) = stream.message().await.map_err(XdsError::Stream)? {
        client.received = true;
        on_response(client, &mut types, resp, &tx).await?;
    }
    Ok(())
}

async fn on_response(
    client: &mut Client,
    types: &mut BTreeMap<&'static str, TypeState>,
    resp: DiscoveryResponse,
    tx: &mpsc::Sender<DiscoveryRequest>,
) -> Result<(), XdsError> {
    let Some(url) = known_type(&resp.type_url) else {
        tracing::warn!(type_url = %resp.type_url, "xds response of unknown type ignored");
        let nack = DiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            error_detail: Some(rejection(&ConfigError::UnknownType(resp.type_url.clone()))),
            ..Default::default()
        };
        return tx.send(nack).await.map_err(|_| XdsError::Closed);
    };
    let kind = type_url::short(url);
    let result =
        super::next_sotw(&client.resources, &resp, SystemTime::now()).map(|n| client.install(n));
    types.entry(url).or_default().nonce = resp.nonce.clone();
    match result {
        Ok(()) => {
            // These versions are the response's, not the resources': a later delta stream must not
            // offer them as resource versions.
            client.resource_versions.remove(url);
            tracing::info!(
                r#type = kind,
                protocol = Protocol::Sotw.as_str(),
                version = %resp.version_info,
                resources = resp.resources.len(),
                "xds update applied"
            );
            let ack = request(client, url, types.entry(url).or_default());
            tx.send(ack).await.map_err(|_| XdsError::Closed)?;
        }
        Err(e) => {
            let detail = rejection(&e);
            tracing::warn!(
                r#type = kind,
                protocol = Protocol::Sotw.as_str(),
                version = %resp.version_info,
                nonce = %resp.nonce,
                error = %detail.message,
                "xds update rejected"
            );
            let mut nack = request(client, url, types.entry(url).or_default());
            nack.error_detail = Some(detail);
            return tx.send(nack).await.map_err(|_| XdsError::Closed);
        }
    }
    // Follow the references: CDS → EDS names, LDS → RDS names.
    if let Some(sub) = apply::follower(url) {
        let names = apply::wanted(sub, &client.resources).unwrap_or_default();
        let st = types.entry(sub).or_default();
        if st.names != names {
            st.names = names;
            let req = request(client, sub, st);
            tx.send(req).await.map_err(|_| XdsError::Closed)?;
        }
    }
    Ok(())
}

/// A request for `url` with the last accepted version (the NACK of a bad one carries the previous good
/// version, as Envoy's do), the stream's last nonce and the names wanted.
fn request(client: &Client, url: &str, st: &TypeState) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: client
            .resources
            .versions
            .get(url)
            .cloned()
            .unwrap_or_default(),
        resource_names: st.names.clone(),
        type_url: url.to_string(),
        response_nonce: st.nonce.clone(),
        ..Default::default()
    }
}
