//! The ADS client: one stream to weftd, reconnection with backoff, and the state both protocols share.
//!
//! It speaks incremental xDS (`DeltaAggregatedResources`, [`delta`]) by default and falls back to state of
//! the world (`StreamAggregatedResources`, [`sotw`]) on the same connection when the server answers
//! `Unimplemented`; `--xds-protocol` forces one. Either way CDS and LDS are wildcard subscriptions and EDS
//! and RDS follow the names they reference. Every response goes through the one per-type apply in
//! [`apply`]; an accepted one builds a new [`Snapshot`] that is swapped in whole and is ACKed, a rejected
//! one is NACKed and changes nothing. The last snapshot keeps serving while weftd is away.

mod apply;
mod delta;
mod sotw;

use crate::config::{ConfigError, Resources, Snapshot};
use crate::Shared;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tonic::transport::Channel;
use weft_xds::ads::{AggregatedDiscoveryServiceClient, DiscoveryResponse};
use weft_xds::pb::envoy::config::core::v3::Node;
use weft_xds::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;
use weft_xds::pb::google::rpc::Status as RpcStatus;
use weft_xds::type_url;

/// First reconnect delay.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// gRPC `INVALID_ARGUMENT`, the code Envoy puts in a NACK's `error_detail`.
const INVALID_ARGUMENT: i32 = 3;
/// Largest response accepted; a full CDS for 10,000 services is far below it.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Which ADS variant to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Incremental: `DeltaAggregatedResources`, only what changed travels.
    Delta,
    /// State of the world: `StreamAggregatedResources`, every CDS/LDS response is the whole set.
    Sotw,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Protocol::Delta => "delta",
            Protocol::Sotw => "sotw",
        }
    }
}

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct XdsConfig {
    /// weftd's ADS URL.
    pub address: String,
    /// The node sent on the first request of each stream.
    pub node: Node,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// The protocol tried first on every connection.
    pub protocol: Protocol,
    /// When `protocol` is delta and the server answers `Unimplemented`, use state of the world instead.
    pub fallback: bool,
    /// For an `https://` address: the PEM file of the roots that verify weftd's serving certificate
    /// (the CA root, `--ca-root-cert`), read at each connection.
    pub roots: Option<std::path::PathBuf>,
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
    /// The TLS settings for an `https://` address cannot be made (roots unreadable or empty).
    #[error("cannot reach xds server {address} over TLS: {reason}")]
    Tls {
        /// The address.
        address: String,
        /// Why.
        reason: String,
    },
    /// The stream failed.
    #[error("xds stream failed")]
    Stream(#[source] tonic::Status),
    /// The outgoing request channel closed.
    #[error("xds request channel closed")]
    Closed,
}

type Ads = AggregatedDiscoveryServiceClient<Channel>;

/// What the client holds across streams and protocols.
struct Client {
    shared: Arc<Shared>,
    /// Everything accepted, per type by name; the next update starts from here.
    resources: Resources,
    /// Per type, the version a delta server gave each held resource, sent back as
    /// `initial_resource_versions` on the next delta stream. A type last applied over state of the world
    /// has none: its versions are response versions, not resource versions.
    resource_versions: BTreeMap<&'static str, BTreeMap<String, String>>,
    /// Something arrived on the current connection (resets the backoff; no fallback after it).
    received: bool,
}

/// Runs the client until shutdown: connect, stream, and on failure reconnect with exponential backoff
/// (100 ms doubling to 5 s, with jitter). The last snapshot keeps serving meanwhile.
pub(crate) async fn run(shared: Arc<Shared>, cfg: XdsConfig) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut client = Client {
        shared: shared.clone(),
        resources: Resources::default(),
        resource_versions: BTreeMap::new(),
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

/// The `error_detail` of a NACK.
fn rejection(e: &ConfigError) -> RpcStatus {
    RpcStatus {
        code: INVALID_ARGUMENT,
        message: e.chain(),
        details: vec![],
    }
}

/// The resources after a state-of-the-world response, from those `held` before it: the whole set for CDS
/// and LDS, the named ones for EDS and RDS, and what only the old clusters or listeners referenced
/// dropped. `Err` is the NACK's reason: an unknown type, or the first resource that does not convert (one
/// rejects them all). `held` is not changed either way; [`Snapshot::build`] turns the result into what
/// requests read.
///
/// The client calls this for every response it receives; it is public so that the fuzz target
/// (`fuzz/fuzz_targets/xds_snapshot.rs`) drives the same conversion.
pub fn next_sotw(
    held: &Resources,
    resp: &DiscoveryResponse,
    now: SystemTime,
) -> Result<Resources, ConfigError> {
    let url = known_type(&resp.type_url)
        .ok_or_else(|| ConfigError::UnknownType(resp.type_url.clone()))?;
    apply::apply(url, held, &apply::Update::sotw(url, resp), now)
}

/// The resources after an incremental (delta) response: [`next_sotw`]'s rules, except that only the
/// resources listed change and `removed_resources` go. A resource's envelope name must be its own name.
pub fn next_delta(
    held: &Resources,
    resp: &DeltaDiscoveryResponse,
    now: SystemTime,
) -> Result<Resources, ConfigError> {
    let url = known_type(&resp.type_url)
        .ok_or_else(|| ConfigError::UnknownType(resp.type_url.clone()))?;
    apply::apply(url, held, &apply::Update::delta(url, resp)?, now)
}

/// The `host:port` of an `https://` address (port 443 when it has none); `None` for any other.
fn tls_authority(address: &str) -> Option<&str> {
    let rest = address.strip_prefix("https://")?;
    Some(rest.split('/').next().unwrap_or(rest))
}

/// One of the four type URLs, as the `'static` constant.
fn known_type(url: &str) -> Option<&'static str> {
    type_url::ALL.iter().find(|u| **u == url).copied()
}

impl Client {
    /// One connection: delta first unless told otherwise, then state of the world on the same channel
    /// if the server does not implement delta and fallback is allowed. Delta is tried again on every new
    /// connection, so proxies move to it once weftd is upgraded.
    async fn session(&mut self, cfg: &XdsConfig) -> Result<(), XdsError> {
        // tonic without its TLS feature takes only http:// URIs; an https:// address is connected over
        // TLS below, the URI only routing requests.
        let uri = match tls_authority(&cfg.address) {
            Some(authority) => format!("http://{authority}"),
            None => cfg.address.clone(),
        };
        let endpoint = tonic::transport::Endpoint::from_shared(uri)
            .map_err(|source| XdsError::Address {
                address: cfg.address.clone(),
                source,
            })?
            .connect_timeout(cfg.connect_timeout)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let connected = match (&cfg.roots, tls_authority(&cfg.address)) {
            // https: weftd's TLS port (Istio's 15012), verified with the mesh root; tonic's own TLS is
            // not built in, so the connector does the handshake.
            (Some(roots), Some(authority)) => {
                let tls = |reason: String| XdsError::Tls {
                    address: cfg.address.clone(),
                    reason,
                };
                let pem = tokio::fs::read(roots)
                    .await
                    .map_err(|e| tls(format!("{}: {e}", roots.display())))?;
                let connector = crate::identity::client::tls_connector(authority, &pem, roots)
                    .map_err(|e| tls(e.to_string()))?;
                endpoint.connect_with_connector(connector).await
            }
            _ => endpoint.connect().await,
        };
        let channel = connected.map_err(|source| XdsError::Connect {
            address: cfg.address.clone(),
            source,
        })?;
        let ads = AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        if cfg.protocol == Protocol::Delta {
            match delta::session(self, ads.clone(), cfg).await {
                Err(XdsError::Stream(status))
                    if cfg.fallback
                        && !self.received
                        && status.code() == tonic::Code::Unimplemented =>
                {
                    tracing::info!(
                        address = %cfg.address,
                        message = status.message(),
                        "xds server does not implement delta, using state of the world"
                    );
                }
                other => return other,
            }
        }
        sotw::session(self, ads, cfg).await
    }

    fn install(&mut self, next: Resources) {
        let snapshot = Snapshot::build_with(next.clone(), self.shared.mesh_tls.as_ref());
        self.resources = next;
        self.shared.snapshot.store(Arc::new(snapshot));
        crate::memory::release_freed();
        let ready = [type_url::CLUSTER, type_url::LISTENER]
            .iter()
            .all(|t| self.resources.versions.contains_key(*t));
        if ready && !self.shared.ready.swap(true, Ordering::AcqRel) {
            tracing::info!("first cluster and listener configuration applied, ready");
        }
        self.shared.generation.send_modify(|g| *g += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_addresses_are_connected_over_tls() {
        assert_eq!(
            tls_authority("https://127.0.0.1:15012"),
            Some("127.0.0.1:15012")
        );
        assert_eq!(
            tls_authority("https://istiod.istio-system.svc:15012/"),
            Some("istiod.istio-system.svc:15012")
        );
        assert_eq!(tls_authority("http://127.0.0.1:15010"), None);
    }

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
