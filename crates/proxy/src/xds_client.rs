//! The ADS client: one stream to weftd, state-of-the-world subscriptions for CDS and LDS (wildcard) and for
//! the EDS and RDS names they reference, ACK/NACK, and reconnection with backoff. Each accepted response
//! builds a new [`Snapshot`] that is swapped in whole; a rejected one is NACKed and changes nothing.

use crate::config::{self, ConfigError, Converted, Resources, Snapshot, Stored};
use crate::Shared;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use weft_xds::ads::{AggregatedDiscoveryServiceClient, DiscoveryRequest, DiscoveryResponse};
use weft_xds::pb::envoy::config::core::v3::Node;
use weft_xds::pb::google::rpc::Status as RpcStatus;
use weft_xds::{type_url, Any};

/// First reconnect delay.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// gRPC `INVALID_ARGUMENT`, the code Envoy puts in a NACK's `error_detail`.
const INVALID_ARGUMENT: i32 = 3;

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct XdsConfig {
    /// weftd's ADS URL.
    pub address: String,
    /// The node sent on the first request of each stream.
    pub node: Node,
    /// Connect timeout.
    pub connect_timeout: Duration,
}

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    /// The address is not a valid URI.
    #[error("invalid xds address {address}")]
    Address {
        /// The address.
        address: String,
        /// tonic's error.
        #[source]
        source: tonic::transport::Error,
    },
    /// Connecting failed (is weftd running? check its address and logs).
    #[error("cannot connect to xds server {address}")]
    Connect {
        /// The address.
        address: String,
        /// tonic's error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The stream failed.
    #[error("xds stream failed")]
    Stream(#[source] tonic::Status),
    /// The outgoing request channel closed.
    #[error("xds request channel closed")]
    Closed,
}

#[derive(Debug, Default, Clone)]
struct TypeState {
    /// Last accepted `version_info`.
    version: String,
    /// Last nonce received on this stream.
    nonce: String,
    /// Names subscribed (empty: wildcard).
    names: Vec<String>,
    /// Applied at least once.
    applied: bool,
}

struct Client {
    shared: Arc<Shared>,
    resources: Resources,
    types: BTreeMap<&'static str, TypeState>,
    received: bool,
}

/// Runs the client until shutdown: connect, stream, and on failure reconnect with exponential backoff
/// (100 ms doubling to 5 s, with jitter). The last snapshot keeps serving meanwhile.
pub(crate) async fn run(shared: Arc<Shared>, cfg: XdsConfig) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut client = Client {
        shared: shared.clone(),
        resources: Resources::default(),
        types: type_url::ALL
            .iter()
            .map(|t| (*t, TypeState::default()))
            .collect(),
        received: false,
    };
    let mut backoff = BACKOFF_INITIAL;
    let mut attempt: u64 = 0;
    loop {
        client.received = false;
        let outcome = tokio::select! {
            // Cancelling a session drops the stream; state is only changed synchronously between awaits.
            r = client.session(&cfg) => r,
            _ = crate::stopped(&mut shutdown) => return,
        };
        if client.received {
            backoff = BACKOFF_INITIAL;
            attempt = 0;
        }
        attempt += 1;
        let delay = jitter(backoff);
        match outcome {
            Ok(()) => tracing::warn!(
                address = %cfg.address,
                attempt,
                delay_ms = delay.as_millis() as u64,
                "xds stream closed by server, reconnecting"
            ),
            Err(e) => tracing::warn!(
                address = %cfg.address,
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = %chain(&e),
                "xds stream failed, reconnecting"
            ),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = crate::stopped(&mut shutdown) => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// A delay between half and all of `d`, so proxies restarted together do not reconnect in lockstep.
fn jitter(d: Duration) -> Duration {
    let ms = d.as_millis() as u64;
    Duration::from_millis(ms / 2 + fastrand::u64(0..=ms / 2))
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl Client {
    async fn session(&mut self, cfg: &XdsConfig) -> Result<(), XdsError> {
        let endpoint = tonic::transport::Endpoint::from_shared(cfg.address.clone())
            .map_err(|source| XdsError::Address {
                address: cfg.address.clone(),
                source,
            })?
            .connect_timeout(cfg.connect_timeout)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| XdsError::Connect {
                address: cfg.address.clone(),
                source,
            })?;
        let mut ads = AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(64 * 1024 * 1024);
        let (tx, rx) = mpsc::channel::<DiscoveryRequest>(16);

        // Nonces belong to a stream; versions we hold are re-sent so the server may skip unchanged types.
        for t in self.types.values_mut() {
            t.nonce.clear();
        }
        let mut first = true;
        for url in type_url::ALL {
            let st = self.types.get(url).cloned().unwrap_or_default();
            let wildcard = url == type_url::CLUSTER || url == type_url::LISTENER;
            if !wildcard && st.names.is_empty() {
                continue;
            }
            let mut req = request(url, &st);
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
        tracing::info!(address = %cfg.address, "xds stream open");
        while let Some(resp) = stream.message().await.map_err(XdsError::Stream)? {
            self.received = true;
            self.on_response(resp, &tx).await?;
        }
        Ok(())
    }

    async fn on_response(
        &mut self,
        resp: DiscoveryResponse,
        tx: &mpsc::Sender<DiscoveryRequest>,
    ) -> Result<(), XdsError> {
        let url: &'static str = match type_url::ALL.iter().find(|u| **u == resp.type_url) {
            Some(u) => u,
            None => {
                let err = ConfigError::UnknownType(resp.type_url.clone());
                tracing::warn!(type_url = %resp.type_url, "xds response of unknown type ignored");
                let nack = DiscoveryRequest {
                    type_url: resp.type_url.clone(),
                    response_nonce: resp.nonce.clone(),
                    error_detail: Some(RpcStatus {
                        code: INVALID_ARGUMENT,
                        message: err.chain(),
                        details: vec![],
                    }),
                    ..Default::default()
                };
                return tx.send(nack).await.map_err(|_| XdsError::Closed);
            }
        };
        let kind = type_url::short(url);
        let now = SystemTime::now();
        let result = match url {
            type_url::CLUSTER => self.apply_clusters(&resp, now),
            type_url::ENDPOINT => self.apply_endpoints(&resp, now),
            type_url::LISTENER => self.apply_listeners(&resp, now),
            _ => self.apply_routes(&resp, now),
        };
        let st = self.types.entry(url).or_default();
        st.nonce = resp.nonce.clone();
        match result {
            Ok(()) => {
                st.version = resp.version_info.clone();
                st.applied = true;
                tracing::info!(
                    r#type = kind,
                    version = %resp.version_info,
                    resources = resp.resources.len(),
                    "xds update applied"
                );
                tx.send(request(url, st))
                    .await
                    .map_err(|_| XdsError::Closed)?;
            }
            Err(e) => {
                let message = e.chain();
                tracing::warn!(
                    r#type = kind,
                    version = %resp.version_info,
                    nonce = %resp.nonce,
                    error = %message,
                    "xds update rejected"
                );
                let mut nack = request(url, st);
                nack.error_detail = Some(RpcStatus {
                    code: INVALID_ARGUMENT,
                    message,
                    details: vec![],
                });
                tx.send(nack).await.map_err(|_| XdsError::Closed)?;
                return Ok(());
            }
        }
        // Follow the references: CDS → EDS names, LDS → RDS names.
        let follow = match url {
            type_url::CLUSTER => Some((type_url::ENDPOINT, Snapshot::eds_names(&self.resources))),
            type_url::LISTENER => Some((type_url::ROUTE, Snapshot::rds_names(&self.resources))),
            _ => None,
        };
        if let Some((sub, names)) = follow {
            let st = self.types.entry(sub).or_default();
            if st.names != names {
                st.names = names;
                tx.send(request(sub, st))
                    .await
                    .map_err(|_| XdsError::Closed)?;
            }
        }
        Ok(())
    }

    fn install(&mut self, next: Resources) {
        let snapshot = Snapshot::build(next.clone());
        self.resources = next;
        self.shared.snapshot.store(Arc::new(snapshot));
        let ready = [type_url::CLUSTER, type_url::LISTENER]
            .iter()
            .all(|t| self.resources.versions.contains_key(*t));
        if ready && !self.shared.ready.swap(true, Ordering::AcqRel) {
            tracing::info!("first cluster and listener configuration applied, ready");
        }
        self.shared.generation.send_modify(|g| *g += 1);
    }

    fn apply_clusters(
        &mut self,
        resp: &DiscoveryResponse,
        now: SystemTime,
    ) -> Result<(), ConfigError> {
        let clusters = convert_all(
            &resp.resources,
            &resp.version_info,
            now,
            &self.resources.clusters,
            config::convert_cluster,
        )?;
        let mut next = self.resources.clone();
        next.clusters = clusters;
        let eds: Vec<String> = Snapshot::eds_names(&next);
        next.endpoints.retain(|k, _| eds.binary_search(k).is_ok());
        next.versions
            .insert(type_url::CLUSTER.into(), resp.version_info.clone());
        self.install(next);
        Ok(())
    }

    fn apply_listeners(
        &mut self,
        resp: &DiscoveryResponse,
        now: SystemTime,
    ) -> Result<(), ConfigError> {
        let listeners = convert_all(
            &resp.resources,
            &resp.version_info,
            now,
            &self.resources.listeners,
            config::convert_listener,
        )?;
        let mut next = self.resources.clone();
        next.listeners = listeners;
        let rds = Snapshot::rds_names(&next);
        next.routes.retain(|k, _| rds.binary_search(k).is_ok());
        next.versions
            .insert(type_url::LISTENER.into(), resp.version_info.clone());
        self.install(next);
        Ok(())
    }

    fn apply_endpoints(
        &mut self,
        resp: &DiscoveryResponse,
        now: SystemTime,
    ) -> Result<(), ConfigError> {
        let received = convert_all(
            &resp.resources,
            &resp.version_info,
            now,
            &self.resources.endpoints,
            config::convert_endpoints,
        )?;
        let mut next = self.resources.clone();
        next.endpoints.extend(received);
        next.versions
            .insert(type_url::ENDPOINT.into(), resp.version_info.clone());
        self.install(next);
        Ok(())
    }

    fn apply_routes(
        &mut self,
        resp: &DiscoveryResponse,
        now: SystemTime,
    ) -> Result<(), ConfigError> {
        let received = convert_all(
            &resp.resources,
            &resp.version_info,
            now,
            &self.resources.routes,
            config::convert_route,
        )?;
        let mut next = self.resources.clone();
        next.routes.extend(received);
        next.versions
            .insert(type_url::ROUTE.into(), resp.version_info.clone());
        self.install(next);
        Ok(())
    }
}

/// Converts every resource of a response, reusing the converted form of any resource whose bytes did not
/// change (so regexes are not recompiled and endpoint sets keep their round-robin position).
fn convert_all<T: Clone>(
    resources: &[Any],
    version: &str,
    now: SystemTime,
    current: &BTreeMap<String, Arc<Stored<T>>>,
    convert: fn(usize, &Any) -> Result<Converted<T>, ConfigError>,
) -> Result<BTreeMap<String, Arc<Stored<T>>>, ConfigError> {
    let unchanged: BTreeMap<&[u8], (&String, &Arc<Stored<T>>)> = current
        .iter()
        .map(|(k, s)| (s.raw.value.as_slice(), (k, s)))
        .collect();
    let mut out = BTreeMap::new();
    for (index, any) in resources.iter().enumerate() {
        let (name, value) = match unchanged.get(any.value.as_slice()) {
            // Same bytes, same resource: keep the converted value.
            Some((name, old)) if old.raw.type_url == any.type_url => {
                ((*name).clone(), old.value.clone())
            }
            _ => convert(index, any)?,
        };
        out.insert(
            name,
            Arc::new(Stored {
                raw: any.clone(),
                version: version.to_string(),
                last_updated: now,
                value,
            }),
        );
    }
    Ok(out)
}

fn request(url: &str, st: &TypeState) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: st.version.clone(),
        resource_names: st.names.clone(),
        type_url: url.to_string(),
        response_nonce: st.nonce.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_and_full() {
        for ms in [100u64, 800, 5000] {
            for _ in 0..100 {
                let d = jitter(Duration::from_millis(ms));
                assert!(
                    d >= Duration::from_millis(ms / 2) && d <= Duration::from_millis(ms),
                    "{ms}ms gave {d:?}"
                );
            }
        }
    }
}
