//! weft-proxy, the sidecar: it subscribes to weftd over ADS, turns the Envoy resources it receives into its
//! own validated [`config::Snapshot`], and proxies HTTP and TCP on these listeners:
//!
//! - the outbound explicit HTTP proxy (`--outbound-port`, Istio's 15001), which routes by the request's
//!   authority through the virtual listener `0.0.0.0_<port>` and its RDS route table;
//! - the inbound listeners LDS asks for (`inbound_<ip>_<port>`), which forward to the local application
//!   (HTTP, or opaque TCP when their filter is `tcp_proxy`);
//! - outbound TCP listeners LDS asks for (a Sidecar egress port, `<bind>_<port>`), whose connections go to
//!   their cluster;
//! - with `--gateway`, the ports of the Gateway servers LDS gives it (`0.0.0.0_<port>`, plaintext or
//!   TLS from certificate files), which route by the request's authority through their RDS table
//!   (`http.<port>`), as an ingress gateway does;
//! - the admin port (`/ready`, `/config_dump`, `/clusters`, `/quitquitquit`).
//!
//! The request path is charted in this crate's `README.md`. [`Proxy::start`] starts everything and returns a
//! handle with the bound addresses; [`run`] does the same and waits for a signal.
#![deny(unsafe_code)]
// audited exceptions, each with a SAFETY comment and a test: `memory::trimmer` (`malloc_trim`),
// `memory::Allocator`
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod admin;
pub mod authn;
pub mod authz;
pub mod balance;
pub mod config;
pub mod error;
pub mod ext_authz;
pub mod http;
pub mod identity;
pub mod listeners;
/// Every unit test runs on the proxy's own allocator, as the binary does.
#[cfg(test)]
#[global_allocator]
static TEST_ALLOCATOR: memory::Allocator = memory::Allocator;
pub mod memory;
pub mod outbound;
pub mod tcp;
pub mod telemetry;
pub mod tls;
pub mod xds_client;

use arc_swap::ArcSwap;
use clap::Parser;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use weft_xds::node::ProxyIdentity;

/// Default ADS address of weftd (Istio's plaintext xDS port).
pub const DEFAULT_XDS_ADDRESS: &str = "http://127.0.0.1:15010";
/// Default outbound explicit-proxy port (Istio's outbound capture port).
pub const DEFAULT_OUTBOUND_PORT: &str = "15001";
/// Default admin port (Envoy's admin port in Istio).
pub const DEFAULT_ADMIN_PORT: &str = "15000";
/// Default admin address: localhost, as Istio binds Envoy's admin.
pub const DEFAULT_ADMIN_IP: &str = "127.0.0.1";
/// Default number of worker threads; a sidecar on a shared machine should stay small (Istio: 2).
pub const DEFAULT_CONCURRENCY: &str = "2";
/// How long in-flight requests get to finish after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// weftd's CA port (Istio's istiod 15012: xDS and CA over TLS), used with the xDS address's host when
/// `--ca-address` is not given.
pub const DEFAULT_CA_PORT: u16 = 15012;
/// Longest a certificate request may take (connect, handshake, answer).
pub const CA_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The command line of `weft-proxy`. Every flag is also an environment variable.
#[derive(Debug, Clone, Parser)]
#[command(name = "weft-proxy", version, about = "The Weft sidecar proxy")]
pub struct Args {
    /// ADS address of weftd (URL; Istio: discoveryAddress). `http://host:15010` is plaintext;
    /// `https://host:15012` is weftd's TLS port, verified with --ca-root-cert (Istio's
    /// controlPlaneSecurityEnabled).
    #[arg(long, env = "WEFT_PROXY_XDS_ADDRESS", default_value = DEFAULT_XDS_ADDRESS)]
    pub xds_address: String,
    /// xDS protocol: `delta` (incremental, DeltaAggregatedResources) or `sotw` (state of the world,
    /// StreamAggregatedResources). Unset: delta, falling back to sotw when weftd answers Unimplemented;
    /// set: that one only (Istio: ISTIO_DELTA_XDS).
    #[arg(long, env = "WEFT_PROXY_XDS_PROTOCOL", value_enum)]
    pub xds_protocol: Option<xds_client::Protocol>,
    /// Workload name (Istio: ISTIO_META_WORKLOAD_NAME).
    #[arg(long, env = "ISTIO_META_WORKLOAD_NAME")]
    pub workload: String,
    /// Namespace of the workload (Istio: POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Workload labels, `k=v,k=v`.
    #[arg(long, env = "WEFT_PROXY_LABELS", default_value = "")]
    pub labels: String,
    /// Run as a gateway (Istio's ingress gateway, node type `router`) rather than a sidecar: no
    /// application beside it; it listens on the ports of the Gateway servers whose `selector` matches
    /// `--labels` (e.g. `istio=ingressgateway`), on `--ip` unless a server says `bind`.
    #[arg(long, env = "WEFT_PROXY_GATEWAY", default_value_t = false)]
    pub gateway: bool,
    /// Service account of the workload (Istio: SERVICE_ACCOUNT).
    #[arg(long, env = "SERVICE_ACCOUNT", default_value = "default")]
    pub service_account: String,
    /// The workload's IP address; outbound and admin listeners bind on it (Istio: INSTANCE_IPS).
    #[arg(long, env = "INSTANCE_IPS", default_value = "127.0.0.1")]
    pub ip: IpAddr,
    /// `servicePort:appPort` pairs, comma separated.
    #[arg(long, env = "WEFT_PROXY_INBOUND_PORTS", default_value = "")]
    pub inbound_ports: String,
    /// Port of the outbound explicit HTTP proxy, bound on `--ip` (Istio: 15001).
    #[arg(long, env = "WEFT_PROXY_OUTBOUND_PORT", default_value = DEFAULT_OUTBOUND_PORT)]
    pub outbound_port: u16,
    /// Port of the Prometheus stats server (Istio's standard metrics at `/stats/prometheus`), bound on
    /// `--ip` (Istio: 15090); 0 serves them on the admin port only.
    #[arg(long, env = "WEFT_PROXY_STATS_PORT", default_value = telemetry::DEFAULT_STATS_PORT)]
    pub stats_port: u16,
    /// `source_cluster` and `destination_cluster` of this workload's metrics (Istio:
    /// `global.multiCluster.clusterName`).
    #[arg(long, env = "ISTIO_META_CLUSTER_ID", default_value = telemetry::peer::DEFAULT_CLUSTER)]
    pub cluster: String,
    /// Port of the admin server, bound on `--admin-ip` (Istio: 15000).
    #[arg(long, env = "WEFT_PROXY_ADMIN_PORT", default_value = DEFAULT_ADMIN_PORT)]
    pub admin_port: u16,
    /// Address the admin server binds. A loopback address only: the admin port stops the proxy
    /// (`/quitquitquit`) and shows its whole configuration, so, as Envoy's in Istio, it must not be
    /// reachable from the network. On one machine, each sidecar of a demo gets its own loopback address.
    #[arg(long, env = "WEFT_PROXY_ADMIN_IP", default_value = DEFAULT_ADMIN_IP)]
    pub admin_ip: IpAddr,
    /// Tokio worker threads (Istio: concurrency).
    #[arg(long, env = "WEFT_PROXY_CONCURRENCY", default_value = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Log filter, RUST_LOG syntax.
    #[arg(long, env = "WEFT_PROXY_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, env = "WEFT_PROXY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
    /// Longest time from a request head's first byte to its end; then 408 and close (Envoy:
    /// `request_headers_timeout`; a slow client's "slowloris" defence). 0: none.
    #[arg(long, env = "WEFT_PROXY_REQUEST_HEADERS_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_headers_timeout: Duration,
    /// A downstream connection with no request on it this long is closed (Envoy: `idle_timeout`;
    /// HTTP/2 sends GOAWAY). 0: none.
    #[arg(long, env = "WEFT_PROXY_IDLE_TIMEOUT", default_value = "1h", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// A request on which nothing happens this long, downstream or upstream, is answered 408 (or ended
    /// when its answer has begun) (Envoy: `stream_idle_timeout`). 0: none.
    #[arg(long, env = "WEFT_PROXY_STREAM_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub stream_idle_timeout: Duration,
    /// Connections each listener keeps open at once; more are closed as they are accepted.
    #[arg(long, env = "WEFT_PROXY_MAX_CONNECTIONS", default_value_t = weft_http::limits::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Streams a client may have open at once on one HTTP/2 connection (Envoy: `max_concurrent_streams`).
    #[arg(long, env = "WEFT_PROXY_HTTP2_MAX_CONCURRENT_STREAMS", default_value_t = weft_http::limits::DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS)]
    pub http2_max_concurrent_streams: u32,
    /// An HTTP/2 connection that sent nothing this long is sent a PING (Envoy:
    /// `connection_keepalive.interval`). 0: none.
    #[arg(long, env = "WEFT_PROXY_HTTP2_KEEPALIVE_INTERVAL", default_value = "0s", value_parser = parse_duration)]
    pub http2_keepalive_interval: Duration,
    /// A keepalive PING unanswered this long closes its connection (Envoy:
    /// `connection_keepalive.timeout`).
    #[arg(long, env = "WEFT_PROXY_HTTP2_KEEPALIVE_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub http2_keepalive_timeout: Duration,
    /// weftd's CA, `host:port` over TLS (Istio: CA_ADDR). Default: the host of --xds-address, port
    /// 15012.
    #[arg(long, env = "CA_ADDR")]
    pub ca_address: Option<String>,
    /// PEM file of the root that verifies weftd's CA (weftd's `<state-dir>/root-cert.pem`; Istio:
    /// `/var/run/secrets/istio/root-cert.pem`).
    #[arg(long, env = "WEFT_PROXY_CA_ROOT_CERT")]
    pub ca_root_cert: Option<std::path::PathBuf>,
    /// File holding this workload's token for weftd's CA (`weftd token`), read again at every request.
    /// Without it the proxy has no workload certificate.
    #[arg(long, env = "WEFT_PROXY_CA_TOKEN_FILE")]
    pub ca_token_file: Option<std::path::PathBuf>,
    /// Lifetime of the workload certificate asked of the CA (Istio: SECRET_TTL); 0: the CA's default
    /// (weftd's --workload-cert-ttl, 24h).
    #[arg(long, env = "SECRET_TTL", default_value = "0", value_parser = parse_duration)]
    pub secret_ttl: Duration,
}

/// A duration as flags give it: a whole number and a unit (`ms`, `s`, `m`, `h`), or `0`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 500ms, 10s, 5m or 1h"))?;
    let per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => {
            return Err(format!(
                "{s:?} is not a duration such as 500ms, 10s, 5m or 1h"
            ))
        }
    };
    n.checked_mul(per)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// Flags that do not make a valid configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// `--labels` is not `k=v,k=v`.
    #[error("--labels={value:?} is not a list of key=value pairs")]
    Labels {
        /// The value given.
        value: String,
    },
    /// `--inbound-ports` is not `svc:app,...`.
    #[error("--inbound-ports={value:?} is not a list of servicePort:appPort pairs")]
    InboundPorts {
        /// The value given.
        value: String,
    },
    /// `--xds-address` is not a URL.
    #[error("--xds-address={value:?} is not an http:// or https:// URL")]
    XdsAddress {
        /// The value given.
        value: String,
    },
    /// `--concurrency` is zero.
    #[error("--concurrency must be at least 1")]
    Concurrency,
    /// `--max-connections` or `--http2-max-concurrent-streams` is zero.
    #[error("{flag} must be at least 1")]
    Zero {
        /// The flag.
        flag: &'static str,
    },
    /// `--ca-token-file` without `--ca-root-cert`.
    #[error(
        "--ca-token-file needs --ca-root-cert: the root that verifies weftd's CA (weftd's \
         <state-dir>/root-cert.pem)"
    )]
    CaRootCert,
    /// An `https://` `--xds-address` without `--ca-root-cert`.
    #[error(
        "--xds-address https:// needs --ca-root-cert: the root that verifies weftd's TLS port \
         (weftd's <state-dir>/root-cert.pem)"
    )]
    XdsRoots,
    /// `--ca-address` is not `host:port`, or none can be derived from `--xds-address`.
    #[error("--ca-address={value:?} is not host:port")]
    CaAddress {
        /// The value given (or derived).
        value: String,
    },
    /// `--admin-ip` is not a loopback address.
    #[error(
        "--admin-ip={value} is not a loopback address: the admin port (/quitquitquit, /config_dump) \
         must not be reachable from the network"
    )]
    AdminIp {
        /// The value given.
        value: IpAddr,
    },
}

/// The validated configuration the proxy runs with.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    /// ADS URL of weftd.
    pub xds_address: String,
    /// For an `https://` xDS address, the roots that verify weftd (`--ca-root-cert`).
    pub xds_roots: Option<std::path::PathBuf>,
    /// Who this sidecar is (sent as node metadata).
    pub identity: ProxyIdentity,
    /// Address of the outbound explicit proxy (port 0: ephemeral).
    pub outbound_addr: SocketAddr,
    /// Address of the admin server (port 0: ephemeral).
    pub admin_addr: SocketAddr,
    /// Address of the stats server; `None`: metrics on the admin port only.
    pub stats_addr: Option<SocketAddr>,
    /// The cluster this workload's metrics name.
    pub cluster: String,
    /// Tokio worker threads.
    pub concurrency: usize,
    /// Connect timeout towards weftd.
    pub xds_connect_timeout: Duration,
    /// The xDS protocol tried first.
    pub xds_protocol: xds_client::Protocol,
    /// Whether a server without delta xDS is spoken to in state of the world instead.
    pub xds_fallback: bool,
    /// Grace period for in-flight requests at shutdown.
    pub drain_timeout: Duration,
    /// weftd's CA, when the workload has a token; `None`: no workload certificate.
    pub ca: Option<identity::client::CaConfig>,
    /// What the HTTP listeners allow their downstream connections.
    #[serde(serialize_with = "serialize_limits")]
    pub limits: weft_http::Limits,
    /// The process's environment variables (those in UTF-8), read once here: tracing's environment
    /// custom tags read them, as Envoy's do. Neither logged nor dumped.
    #[serde(skip)]
    pub environment: telemetry::Environment,
}

fn serialize_limits<S: serde::Serializer>(l: &weft_http::Limits, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut st = s.serialize_struct("Limits", 7)?;
    st.serialize_field("request_headers_timeout", &l.request_headers_timeout)?;
    st.serialize_field("idle_timeout", &l.idle_timeout)?;
    st.serialize_field("stream_idle_timeout", &l.stream_idle_timeout)?;
    st.serialize_field("max_connections", &l.max_connections)?;
    st.serialize_field(
        "http2_max_concurrent_streams",
        &l.http2_max_concurrent_streams,
    )?;
    st.serialize_field("http2_keepalive_interval", &l.http2_keepalive_interval)?;
    st.serialize_field("http2_keepalive_timeout", &l.http2_keepalive_timeout)?;
    st.end()
}

impl TryFrom<&Args> for Config {
    type Error = ConfigError;

    fn try_from(args: &Args) -> Result<Self, ConfigError> {
        let mut labels = BTreeMap::new();
        for part in args
            .labels
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (k, v) = part.split_once('=').ok_or_else(|| ConfigError::Labels {
                value: args.labels.clone(),
            })?;
            if k.trim().is_empty() {
                return Err(ConfigError::Labels {
                    value: args.labels.clone(),
                });
            }
            labels.insert(k.trim().to_string(), v.trim().to_string());
        }
        let inbound_ports =
            weft_xds::node::parse_inbound_ports(&args.inbound_ports).map_err(|_| {
                ConfigError::InboundPorts {
                    value: args.inbound_ports.clone(),
                }
            })?;
        if !(args.xds_address.starts_with("http://") || args.xds_address.starts_with("https://")) {
            return Err(ConfigError::XdsAddress {
                value: args.xds_address.clone(),
            });
        }
        if args.concurrency == 0 {
            return Err(ConfigError::Concurrency);
        }
        if args.max_connections == 0 {
            return Err(ConfigError::Zero {
                flag: "--max-connections",
            });
        }
        if args.http2_max_concurrent_streams == 0 {
            return Err(ConfigError::Zero {
                flag: "--http2-max-concurrent-streams",
            });
        }
        if !args.admin_ip.is_loopback() {
            return Err(ConfigError::AdminIp {
                value: args.admin_ip,
            });
        }
        let admin_addr = SocketAddr::new(args.admin_ip, args.admin_port);
        let ca = ca_config(args)?;
        let xds_roots = if args.xds_address.starts_with("https://") {
            let roots = args.ca_root_cert.clone().ok_or(ConfigError::XdsRoots)?;
            if args.xds_address.len() == "https://".len() {
                return Err(ConfigError::XdsAddress {
                    value: args.xds_address.clone(),
                });
            }
            Some(roots)
        } else {
            None
        };
        Ok(Config {
            xds_address: args.xds_address.clone(),
            xds_roots,
            identity: ProxyIdentity {
                workload: args.workload.clone(),
                namespace: args.namespace.clone(),
                labels,
                service_account: args.service_account.clone(),
                ip: args.ip.to_string(),
                inbound_ports,
                admin_address: admin_addr.to_string(),
                stats_address: String::new(),
                router: args.gateway,
            },
            outbound_addr: SocketAddr::new(args.ip, args.outbound_port),
            admin_addr,
            stats_addr: (args.stats_port != 0).then(|| SocketAddr::new(args.ip, args.stats_port)),
            cluster: args.cluster.clone(),
            concurrency: args.concurrency,
            xds_connect_timeout: Duration::from_secs(5),
            xds_protocol: args.xds_protocol.unwrap_or(xds_client::Protocol::Delta),
            xds_fallback: args.xds_protocol.is_none(),
            drain_timeout: DRAIN_TIMEOUT,
            ca,
            limits: weft_http::Limits {
                request_headers_timeout: args.request_headers_timeout,
                idle_timeout: args.idle_timeout,
                stream_idle_timeout: args.stream_idle_timeout,
                max_connections: args.max_connections,
                http2_max_concurrent_streams: args.http2_max_concurrent_streams,
                http2_keepalive_interval: args.http2_keepalive_interval,
                http2_keepalive_timeout: args.http2_keepalive_timeout,
            },
            environment: telemetry::Environment(
                std::env::vars_os()
                    .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                    .collect(),
            ),
        })
    }
}

/// The CA client's settings, when `--ca-token-file` is given.
fn ca_config(args: &Args) -> Result<Option<identity::client::CaConfig>, ConfigError> {
    let Some(token_file) = &args.ca_token_file else {
        return Ok(None);
    };
    let root_cert = args.ca_root_cert.clone().ok_or(ConfigError::CaRootCert)?;
    let address = match &args.ca_address {
        Some(a) => a.clone(),
        None => args
            .xds_address
            .parse::<::http::Uri>()
            .ok()
            .and_then(|u| u.host().map(|h| format!("{h}:{DEFAULT_CA_PORT}")))
            .unwrap_or_default(),
    };
    let valid = address
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if !valid {
        return Err(ConfigError::CaAddress { value: address });
    }
    Ok(Some(identity::client::CaConfig {
        address,
        root_cert,
        token_file: token_file.clone(),
        requested_ttl: (!args.secret_ttl.is_zero()).then_some(args.secret_ttl),
        timeout: CA_REQUEST_TIMEOUT,
    }))
}

/// Failures that stop the proxy from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A flag-defined listener could not bind.
    #[error("cannot bind {what} listener on {addr}")]
    Bind {
        /// `outbound` or `admin`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// State shared by the listeners, the xDS client and the admin server.
pub(crate) struct Shared {
    /// The current configuration; requests `load_full()` it once.
    pub(crate) snapshot: ArcSwap<config::Snapshot>,
    /// True once a first CDS and LDS have been applied.
    pub(crate) ready: AtomicBool,
    /// Pooled upstream clients.
    pub(crate) upstream: weft_http::upstream::Upstream,
    /// Bumped on every applied snapshot, so the inbound listener manager can reconcile.
    pub(crate) generation: watch::Sender<u64>,
    /// Set to true to shut everything down.
    pub(crate) shutdown: watch::Sender<bool>,
    /// Addresses the LDS listeners actually bound, by listener name (admin and tests only).
    pub(crate) bound: std::sync::Mutex<BTreeMap<String, SocketAddr>>,
    /// Istio's metrics and the metadata exchange; `None` records nothing (unit tests of routing).
    pub(crate) telemetry: Option<Arc<telemetry::Telemetry>>,
    /// The workload's certificate as it rotates; `None`: the proxy has no identity (no token).
    pub identity: Option<identity::Current>,
    /// Mutual TLS settings following that identity; `None` without one (plaintext only).
    pub(crate) mesh_tls: Option<Arc<tls::MeshTls>>,
}

impl Shared {
    #[cfg(test)]
    pub(crate) fn with_telemetry(telemetry: Option<Arc<telemetry::Telemetry>>) -> Arc<Self> {
        Self::new(telemetry, None)
    }

    pub(crate) fn new(
        telemetry: Option<Arc<telemetry::Telemetry>>,
        identity: Option<identity::Current>,
    ) -> Arc<Self> {
        Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(config::Snapshot::default()),
            ready: AtomicBool::new(false),
            upstream: weft_http::upstream::Upstream::new(),
            generation: watch::channel(0).0,
            shutdown: watch::channel(false).0,
            bound: std::sync::Mutex::new(BTreeMap::new()),
            telemetry,
            mesh_tls: identity.clone().map(tls::MeshTls::new),
            identity,
        })
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub(crate) fn request_shutdown(&self) {
        self.shutdown.send_replace(true);
    }
}

use weft_http::net;
pub(crate) use weft_http::stopped;

/// The proxy as a library: start it, learn its addresses, stop it.
pub struct Proxy;

impl Proxy {
    /// Binds the outbound and admin listeners, starts the xDS client and the inbound listener manager, and
    /// returns at once. Must be called inside a tokio runtime.
    pub async fn start(config: Config) -> Result<ProxyHandle, StartError> {
        let outbound_listener =
            net::bind(config.outbound_addr).map_err(|source| StartError::Bind {
                what: "outbound",
                addr: config.outbound_addr,
                source,
            })?;
        let admin_listener = net::bind(config.admin_addr).map_err(|source| StartError::Bind {
            what: "admin",
            addr: config.admin_addr,
            source,
        })?;
        let outbound_addr = outbound_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                what: "outbound",
                addr: config.outbound_addr,
                source,
            })?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                what: "admin",
                addr: config.admin_addr,
                source,
            })?;
        let stats = match config.stats_addr {
            Some(addr) => {
                let l = net::bind(addr).map_err(|source| StartError::Bind {
                    what: "stats",
                    addr,
                    source,
                })?;
                let bound = l.local_addr().map_err(|source| StartError::Bind {
                    what: "stats",
                    addr,
                    source,
                })?;
                Some((l, bound))
            }
            None => None,
        };
        let mut identity = config.identity.clone();
        identity.admin_address = admin_addr.to_string();
        identity.stats_address = stats
            .as_ref()
            .map(|(_, a)| a.to_string())
            .unwrap_or_default();
        let manager = match &config.ca {
            Some(ca) => {
                tracing::info!(ca = %ca.address, token = %ca.token_file.display(), "workload identity from weftd's CA");
                Some(identity::Manager::new(identity::client::CaClient::new(
                    ca.clone(),
                )))
            }
            None => {
                tracing::info!(
                    "no --ca-token-file: running without a workload identity (plaintext only)"
                );
                None
            }
        };
        let shared = Shared::new(
            Some(Arc::new(
                telemetry::Telemetry::new(&identity, &config.cluster)
                    .with_environment(config.environment.clone()),
            )),
            manager.as_ref().map(identity::Manager::current),
        );
        tracing::info!(
            outbound = %outbound_addr,
            admin = %admin_addr,
            xds = %config.xds_address,
            node = %identity.node_id(),
            "weft-proxy starting"
        );

        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(outbound::serve(
            shared.clone(),
            outbound_listener,
            config.drain_timeout,
            config.limits,
        ));
        tasks.spawn(admin::serve(shared.clone(), admin_listener));
        let stats_addr = stats.as_ref().map(|(_, a)| *a);
        if let Some((l, _)) = stats {
            tasks.spawn(admin::serve_stats(shared.clone(), l));
        }
        tasks.spawn(listeners::manage(
            shared.clone(),
            config.drain_timeout,
            config.limits,
        ));
        tasks.spawn(memory::trim_periodically(shared.shutdown.subscribe()));
        if let Some(m) = manager {
            tasks.spawn(m.run(shared.shutdown.subscribe()));
        }
        tasks.spawn(xds_client::run(
            shared.clone(),
            xds_client::XdsConfig {
                address: config.xds_address.clone(),
                node: identity.to_node(),
                connect_timeout: config.xds_connect_timeout,
                protocol: config.xds_protocol,
                fallback: config.xds_fallback,
                roots: config.xds_roots.clone(),
            },
        ));
        Ok(ProxyHandle {
            shared,
            outbound_addr,
            admin_addr,
            stats_addr,
            tasks,
        })
    }
}

/// A running proxy.
pub struct ProxyHandle {
    shared: Arc<Shared>,
    outbound_addr: SocketAddr,
    admin_addr: SocketAddr,
    stats_addr: Option<SocketAddr>,
    tasks: tokio::task::JoinSet<()>,
}

impl ProxyHandle {
    /// Where the outbound explicit proxy listens.
    pub fn outbound_addr(&self) -> SocketAddr {
        self.outbound_addr
    }

    /// Where the admin server listens.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Where the stats server listens, if it does.
    pub fn stats_addr(&self) -> Option<SocketAddr> {
        self.stats_addr
    }

    /// The address an LDS listener (by name: inbound, or an outbound TCP one) is bound to, if it is.
    pub fn listener_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.shared
            .bound
            .lock()
            .ok()
            .and_then(|m| m.get(listener).copied())
    }

    /// True once the first CDS and LDS have been applied.
    pub fn is_ready(&self) -> bool {
        self.shared.is_ready()
    }

    /// Resolves when shutdown was requested (by [`ProxyHandle::shutdown`] or `POST /quitquitquit`).
    pub async fn shutdown_requested(&self) {
        let mut rx = self.shared.shutdown.subscribe();
        // Cancellation-safe: `wait_for` only observes the watch value.
        crate::stopped(&mut rx).await;
    }

    /// Stops accepting, lets in-flight requests drain, and waits for every task to end.
    pub async fn shutdown(mut self) {
        self.shared.request_shutdown();
        while self.tasks.join_next().await.is_some() {}
        tracing::info!("weft-proxy stopped");
    }
}

/// Starts the proxy and runs it until SIGTERM, SIGINT or `POST /quitquitquit`, then drains and returns.
pub async fn run(config: Config) -> Result<(), StartError> {
    let handle = Proxy::start(config).await?;
    tokio::select! {
        // All three branches only wait; cancelling the losers is harmless.
        _ = shutdown_signal() => tracing::info!("shutdown signal received"),
        _ = handle.shutdown_requested() => tracing::info!("shutdown requested on admin"),
    }
    handle.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<Args, clap::Error> {
        let mut v = vec!["weft-proxy", "--workload", "reviews-v1"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v)
    }

    #[test]
    fn flags_become_a_config() {
        let a = args(&[
            "--ip",
            "127.0.1.4",
            "--labels",
            "app=reviews,version=v1",
            "--inbound-ports",
            "9080:19080",
            "--admin-port",
            "15000",
            "--outbound-port",
            "15001",
            "--namespace",
            "default",
            "--xds-address",
            "http://127.0.0.1:15010",
        ])
        .expect("parses");
        let c = Config::try_from(&a).expect("valid");
        // The admin port is on localhost, not on the workload's address, unless another loopback
        // address is asked for.
        assert_eq!(c.identity.admin_address, "127.0.0.1:15000");
        let a2 = args(&["--ip", "127.0.1.4", "--admin-ip", "127.0.1.4"]).expect("parses");
        let c2 = Config::try_from(&a2).expect("valid");
        assert_eq!(c2.admin_addr.to_string(), "127.0.1.4:15000");
        assert_eq!(c.outbound_addr.to_string(), "127.0.1.4:15001");
        assert_eq!(c.identity.inbound_ports, vec![(9080, 19080)]);
        assert_eq!(
            c.identity.labels.get("version").map(String::as_str),
            Some("v1")
        );
        assert_eq!(
            c.identity.node_id(),
            "sidecar~127.0.1.4~reviews-v1.default~default.svc.cluster.local"
        );
        let gw = args(&[
            "--gateway",
            "--ip",
            "127.0.1.20",
            "--labels",
            "istio=ingressgateway",
        ])
        .expect("parses");
        let gw = Config::try_from(&gw).expect("valid");
        assert!(gw.identity.router);
        assert!(gw.identity.node_id().starts_with("router~127.0.1.20~"));
    }

    #[test]
    fn durations_read_as_a_number_and_a_unit() {
        let ok: &[(&str, u64)] = &[
            ("0", 0),
            ("0s", 0),
            ("500ms", 500),
            ("10s", 10_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
        ];
        for (text, ms) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(*ms)),
                "{text}"
            );
        }
        for bad in [
            "",
            "10",
            "s",
            "1.5s",
            "-1s",
            "10 s",
            "1d",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_downstream_limits_come_from_the_flags() {
        let c = Config::try_from(&args(&[]).expect("parses")).expect("valid");
        assert_eq!(c.limits, weft_http::Limits::default(), "Envoy's defaults");
        let a = args(&[
            "--request-headers-timeout",
            "2s",
            "--idle-timeout",
            "0",
            "--stream-idle-timeout",
            "30s",
            "--max-connections",
            "50",
            "--http2-max-concurrent-streams",
            "10",
            "--http2-keepalive-interval",
            "1m",
            "--http2-keepalive-timeout",
            "5s",
        ])
        .expect("parses");
        let l = Config::try_from(&a).expect("valid").limits;
        assert_eq!(
            l,
            weft_http::Limits {
                request_headers_timeout: Duration::from_secs(2),
                idle_timeout: Duration::ZERO,
                stream_idle_timeout: Duration::from_secs(30),
                max_connections: 50,
                http2_max_concurrent_streams: 10,
                http2_keepalive_interval: Duration::from_secs(60),
                http2_keepalive_timeout: Duration::from_secs(5),
            }
        );
        let err = Config::try_from(&args(&["--max-connections", "0"]).expect("parses"))
            .expect_err("zero");
        assert_eq!(err.to_string(), "--max-connections must be at least 1");
        assert!(args(&["--idle-timeout", "forever"]).is_err());
    }

    #[test]
    fn xds_protocol_defaults_to_delta_with_fallback() {
        use xds_client::Protocol;
        let cases: &[(&str, &[&str], Protocol, bool)] = &[
            ("unset", &[], Protocol::Delta, true),
            (
                "forced delta",
                &["--xds-protocol", "delta"],
                Protocol::Delta,
                false,
            ),
            (
                "forced sotw",
                &["--xds-protocol", "sotw"],
                Protocol::Sotw,
                false,
            ),
        ];
        for (name, extra, protocol, fallback) in cases {
            let c = Config::try_from(&args(extra).expect(name)).expect(name);
            assert_eq!(
                (c.xds_protocol, c.xds_fallback),
                (*protocol, *fallback),
                "case {name}"
            );
        }
        assert!(args(&["--xds-protocol", "v2"]).is_err(), "unknown protocol");
    }

    #[test]
    fn the_ca_flags_make_a_ca_config_only_with_a_token() {
        let c = Config::try_from(&args(&[]).expect("parses")).expect("valid");
        assert!(c.ca.is_none(), "no token, no identity");
        let a = args(&[
            "--xds-address",
            "http://127.0.0.9:15010",
            "--ca-token-file",
            "/t",
            "--ca-root-cert",
            "/r.pem",
            "--secret-ttl",
            "1m",
        ])
        .expect("parses");
        let ca = Config::try_from(&a).expect("valid").ca.expect("a CA");
        assert_eq!(ca.address, "127.0.0.9:15012", "the xDS host, port 15012");
        assert_eq!(ca.requested_ttl, Some(Duration::from_secs(60)));
        let a = args(&[
            "--ca-token-file",
            "/t",
            "--ca-root-cert",
            "/r.pem",
            "--ca-address",
            "weftd:15012",
        ])
        .expect("parses");
        let ca = Config::try_from(&a).expect("valid").ca.expect("a CA");
        assert_eq!(
            (ca.address.as_str(), ca.requested_ttl),
            ("weftd:15012", None)
        );
        let cases: &[(&[&str], &str)] = &[
            (
                &["--ca-token-file", "/t"],
                "--ca-token-file needs --ca-root-cert: the root that verifies weftd's CA (weftd's \
                 <state-dir>/root-cert.pem)",
            ),
            (
                &[
                    "--ca-token-file",
                    "/t",
                    "--ca-root-cert",
                    "/r",
                    "--ca-address",
                    "weftd",
                ],
                "--ca-address=\"weftd\" is not host:port",
            ),
        ];
        for (extra, want) in cases {
            let err = Config::try_from(&args(extra).expect("parses")).expect_err(want);
            assert_eq!(err.to_string(), *want);
        }
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let cases: &[(&str, &[&str], &str)] = &[
            (
                "labels",
                &["--labels", "app"],
                "--labels=\"app\" is not a list of key=value pairs",
            ),
            (
                "ports",
                &["--inbound-ports", "http"],
                "--inbound-ports=\"http\" is not a list of servicePort:appPort pairs",
            ),
            (
                "xds",
                &["--xds-address", "127.0.0.1:15010"],
                "--xds-address=\"127.0.0.1:15010\" is not an http:// or https:// URL",
            ),
            (
                "xds over TLS without the root",
                &["--xds-address", "https://127.0.0.1:15012"],
                "--xds-address https:// needs --ca-root-cert: the root that verifies weftd's TLS \
                 port (weftd's <state-dir>/root-cert.pem)",
            ),
            (
                "concurrency",
                &["--concurrency", "0"],
                "--concurrency must be at least 1",
            ),
            (
                "admin on the network",
                &["--admin-ip", "10.0.0.1"],
                "--admin-ip=10.0.0.1 is not a loopback address: the admin port (/quitquitquit, \
                 /config_dump) must not be reachable from the network",
            ),
            (
                "admin on every address",
                &["--admin-ip", "0.0.0.0"],
                "--admin-ip=0.0.0.0 is not a loopback address: the admin port (/quitquitquit, \
                 /config_dump) must not be reachable from the network",
            ),
        ];
        for (name, extra, want) in cases {
            let a = args(extra).expect("parses");
            let err = Config::try_from(&a).expect_err(name);
            assert_eq!(err.to_string(), *want, "case {name}");
        }
    }
}
