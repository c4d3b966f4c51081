//! weftd, the control plane, as a library: config sources, the service registry, the model, translation
//! to Envoy xDS, and the ADS server with its debug endpoints.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod authn;
pub mod ca;
pub mod config;
pub mod console;
pub mod debug;
pub mod jwks;
pub mod metrics;
pub mod model;
pub mod registry;
pub mod sds;
pub mod security;
pub mod server;
pub mod telemetry;
pub mod translate;
pub mod view;

use clap::Parser;
use config::DirSource;
use model::Model;
use serde::Serialize;
use server::status::StatusRegistry;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

/// Default xDS address (Istio's plaintext xDS port).
pub const DEFAULT_XDS_ADDRESS: &str = "127.0.0.1:15010";
/// Default debug address (Istio's istiod monitoring port).
pub const DEFAULT_DEBUG_ADDRESS: &str = "127.0.0.1:15014";
/// Quiet period after a change before pushing, as Istio's `PILOT_DEBOUNCE_AFTER` default.
pub const DEFAULT_DEBOUNCE_AFTER: &str = "100ms";
/// Longest a burst of changes may delay a push, as Istio's `PILOT_DEBOUNCE_MAX` default.
pub const DEFAULT_DEBOUNCE_MAX: &str = "10s";
/// How often the directory is re-read even without a change notification (a safety net for file systems
/// that do not report changes, such as some bind mounts).
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(5);

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    weft_api::Duration::parse(s)
        .map(|d| d.get())
        .map_err(|e| e.to_string())
}

/// weftd's flags; each is also an environment variable.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "weftd",
    version,
    about = "Weft control plane: Istio config in, xDS out",
    after_help = "`weftd token --help`: print a workload's token for the CA."
)]
pub struct Args {
    /// Directory of Istio YAML to serve (read recursively, watched).
    #[arg(long, env = "WEFTD_CONFIG_DIR")]
    pub config_dir: PathBuf,
    /// Address of the ADS (xDS) gRPC server (Istio: 15010).
    #[arg(long, env = "WEFTD_XDS_ADDRESS", default_value = DEFAULT_XDS_ADDRESS)]
    pub xds_address: SocketAddr,
    /// Address of the readiness and debug endpoints (Istio: 15014).
    #[arg(long, env = "WEFTD_DEBUG_ADDRESS", default_value = DEFAULT_DEBUG_ADDRESS)]
    pub debug_address: SocketAddr,
    /// Quiet period after a config change before pushing (Istio: PILOT_DEBOUNCE_AFTER).
    #[arg(long, env = "PILOT_DEBOUNCE_AFTER", default_value = DEFAULT_DEBOUNCE_AFTER, value_parser = parse_duration)]
    pub debounce_after: Duration,
    /// Longest delay of a push under a stream of changes (Istio: PILOT_DEBOUNCE_MAX).
    #[arg(long, env = "PILOT_DEBOUNCE_MAX", default_value = DEFAULT_DEBOUNCE_MAX, value_parser = parse_duration)]
    pub debounce_max: Duration,
    /// Address of the console: service graph, golden metrics, traces and config in a browser
    /// (Kiali's port, 20001); `off` disables it.
    #[arg(long, env = "WEFTD_CONSOLE_ADDRESS", default_value = console::DEFAULT_ADDRESS)]
    pub console_address: String,
    /// How often the console scrapes each proxy's metrics (Prometheus's usual 15s).
    #[arg(long, env = "WEFTD_SCRAPE_INTERVAL", default_value = console::DEFAULT_SCRAPE_INTERVAL, value_parser = parse_duration)]
    pub scrape_interval: Duration,
    /// A Prometheus (`http://host:port`) the console reads Istio's metrics from, instead of scraping
    /// the proxies itself.
    #[arg(long, env = "WEFTD_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// A Zipkin (`http://host:9411`) the console reads traces from, instead of weftd's own store.
    #[arg(long, env = "WEFTD_TRACING_URL")]
    pub tracing_url: Option<String>,
    /// Address of the trace collector (Zipkin v2 JSON at `/api/v2/spans`, OTLP/HTTP at `/v1/traces`)
    /// and of Zipkin's query API (Zipkin's port, 9411), or `off`. Default: --debug-address's IP, port
    /// 9411.
    #[arg(long, env = "WEFTD_ZIPKIN_ADDRESS")]
    pub zipkin_address: Option<weft_trace::collector::Listen>,
    /// Address of the OTLP/HTTP trace collector (OpenTelemetry's port, 4318), or `off`. Default:
    /// --debug-address's IP, port 4318.
    #[arg(long, env = "WEFTD_OTLP_HTTP_ADDRESS")]
    pub otlp_http_address: Option<weft_trace::collector::Listen>,
    /// Most traces the trace store keeps; the oldest go first.
    #[arg(long, env = "WEFTD_TRACE_MAX_TRACES", default_value_t = weft_trace::store::DEFAULT_MAX_TRACES,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub trace_max_traces: usize,
    /// Most spans the trace store keeps, across its traces (about 1.5 KB each); the oldest traces go
    /// first.
    #[arg(long, env = "WEFTD_TRACE_MAX_SPANS", default_value_t = weft_trace::store::DEFAULT_MAX_SPANS,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub trace_max_spans: usize,
    /// State directory: the CA's generated root (`root-cert.pem`, `ca-key.pem`) and the token key.
    /// Given, weftd runs its CA and the TLS port (--secure-address); absent, neither.
    #[arg(long, env = "WEFTD_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Istio's cacerts `ca-cert.pem`: the certificate that signs workload certificates (with
    /// --ca-key, --cert-chain and --root-cert; instead of a generated root).
    #[arg(long, env = "WEFTD_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Istio's cacerts `ca-key.pem`: --ca-cert's private key.
    #[arg(long, env = "WEFTD_CA_KEY")]
    pub ca_key: Option<PathBuf>,
    /// Istio's cacerts `cert-chain.pem`: the chain from --ca-cert towards the root.
    #[arg(long, env = "WEFTD_CERT_CHAIN")]
    pub cert_chain: Option<PathBuf>,
    /// Istio's cacerts `root-cert.pem`: the mesh's root.
    #[arg(long, env = "WEFTD_ROOT_CERT")]
    pub root_cert: Option<PathBuf>,
    /// Lifetime of a workload certificate when the proxy asks for none (Istio:
    /// DEFAULT_WORKLOAD_CERT_TTL).
    #[arg(long, env = "DEFAULT_WORKLOAD_CERT_TTL", default_value = ca::DEFAULT_WORKLOAD_CERT_TTL, value_parser = parse_duration)]
    pub workload_cert_ttl: Duration,
    /// Longest workload certificate lifetime a proxy may ask for (Istio: MAX_WORKLOAD_CERT_TTL).
    #[arg(long, env = "MAX_WORKLOAD_CERT_TTL", default_value = ca::DEFAULT_MAX_WORKLOAD_CERT_TTL, value_parser = parse_duration)]
    pub max_workload_cert_ttl: Duration,
    /// Address of the TLS port serving the CA and xDS (Istio: 15012). Default: --xds-address's IP,
    /// port 15012.
    #[arg(long, env = "WEFTD_SECURE_ADDRESS")]
    pub secure_address: Option<SocketAddr>,
    /// Serve plaintext xDS on --xds-address (Istio's 15010); `--plaintext-xds=false` leaves only
    /// the TLS port.
    #[arg(long, env = "WEFTD_PLAINTEXT_XDS", default_value_t = true, action = clap::ArgAction::Set,
        num_args = 0..=1, default_missing_value = "true")]
    pub plaintext_xds: bool,
    /// Validate the config directory, print every problem, and exit (1 on errors).
    #[arg(long)]
    pub check: bool,
    /// Log filter, RUST_LOG syntax.
    #[arg(long, env = "WEFTD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format: plain or json.
    #[arg(long, env = "WEFTD_LOG_FORMAT", default_value = "plain")]
    pub log_format: String,
}

/// weftd's validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Config directory.
    pub config_dir: PathBuf,
    /// xDS address.
    pub xds_address: SocketAddr,
    /// Debug address.
    pub debug_address: SocketAddr,
    /// Debounce quiet period.
    pub debounce_after: Duration,
    /// Debounce maximum.
    pub debounce_max: Duration,
    /// The trace collector's Zipkin port (with the query API), when on.
    pub zipkin_address: Option<SocketAddr>,
    /// The trace collector's OTLP/HTTP port, when on.
    pub otlp_http_address: Option<SocketAddr>,
    /// The trace store's bounds.
    pub trace_bounds: weft_trace::store::Bounds,
    /// The console.
    pub console: console::Settings,
    /// The CA and the TLS port, when --state-dir is given.
    pub ca: Option<ca::Settings>,
    /// Whether --xds-address serves plaintext xDS.
    pub plaintext_xds: bool,
}

/// Why weftd cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config directory is not a directory.
    #[error("config directory {0} does not exist or is not a directory")]
    ConfigDir(PathBuf),
    /// `--debounce-after` exceeds `--debounce-max`.
    #[error("--debounce-after ({after:?}) must not exceed --debounce-max ({max:?})")]
    Debounce {
        /// After.
        after: Duration,
        /// Max.
        max: Duration,
    },
    /// A listener could not be bound.
    #[error("cannot bind {what} on {addr}")]
    Bind {
        /// Which server.
        what: &'static str,
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A console flag is wrong.
    #[error("--{flag}: {reason}")]
    Console {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The gRPC server failed.
    #[error("xDS server failed")]
    Serve(#[source] tonic::transport::Error),
    /// A CA flag is wrong.
    #[error("--{flag}: {reason}")]
    CaFlag {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The CA could not start.
    #[error("cannot start the certificate authority")]
    Ca(#[source] ca::Error),
}

impl TryFrom<&Args> for Config {
    type Error = Error;
    fn try_from(a: &Args) -> Result<Self, Error> {
        if !a.config_dir.is_dir() {
            return Err(Error::ConfigDir(a.config_dir.clone()));
        }
        if a.debounce_after > a.debounce_max {
            return Err(Error::Debounce {
                after: a.debounce_after,
                max: a.debounce_max,
            });
        }
        let console_error = |flag, reason| Error::Console { flag, reason };
        if a.scrape_interval < Duration::from_millis(100) {
            return Err(console_error(
                "scrape-interval",
                format!("{:?} is shorter than 100ms", a.scrape_interval),
            ));
        }
        let url = |flag, v: &Option<String>| {
            v.as_deref()
                .map(console::parse_url)
                .transpose()
                .map_err(|reason| console_error(flag, reason))
        };
        let console = console::Settings {
            address: console::parse_address(&a.console_address)
                .map_err(|reason| console_error("console-address", reason))?,
            scrape_interval: a.scrape_interval,
            retention: Duration::from_millis(console::window::DEFAULT_RETENTION_MS),
            prometheus_url: url("prometheus-url", &a.prometheus_url)?,
            tracing_url: url("tracing-url", &a.tracing_url)?,
        };
        // The trace ports default to the debug address's IP, so weftds on loopback addresses of their
        // own (`weft demo`, the end-to-end tests) do not contend for one port.
        use weft_trace::collector::{Listen, OTLP_HTTP_PORT, ZIPKIN_PORT};
        let trace_port = |flag: Option<Listen>, port| match flag {
            Some(l) => l.addr(),
            None => Some(SocketAddr::new(a.debug_address.ip(), port)),
        };
        let ca = ca_settings(a)?;
        if !a.plaintext_xds && ca.is_none() {
            return Err(Error::CaFlag {
                flag: "plaintext-xds",
                reason:
                    "false needs the TLS port, which needs --state-dir: weftd would serve no xDS"
                        .into(),
            });
        }
        Ok(Config {
            config_dir: a.config_dir.clone(),
            xds_address: a.xds_address,
            debug_address: a.debug_address,
            debounce_after: a.debounce_after,
            debounce_max: a.debounce_max,
            zipkin_address: trace_port(a.zipkin_address, ZIPKIN_PORT),
            otlp_http_address: trace_port(a.otlp_http_address, OTLP_HTTP_PORT),
            trace_bounds: weft_trace::store::Bounds {
                max_traces: a.trace_max_traces,
                max_spans: a.trace_max_spans,
            },
            console,
            ca,
            plaintext_xds: a.plaintext_xds,
        })
    }
}

/// The CA's settings from the flags: none without --state-dir; Istio's four cacerts files together
/// or not at all.
fn ca_settings(a: &Args) -> Result<Option<ca::Settings>, Error> {
    let flag = |flag, reason: String| Error::CaFlag { flag, reason };
    let plugged = [
        ("ca-cert", &a.ca_cert),
        ("ca-key", &a.ca_key),
        ("cert-chain", &a.cert_chain),
        ("root-cert", &a.root_cert),
    ];
    let given: Vec<&str> = plugged
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(n, _)| *n)
        .collect();
    let Some(state_dir) = a.state_dir.clone() else {
        return match given.first() {
            Some(f) => Err(flag(
                f,
                "needs --state-dir (weftd keeps the token key there)".into(),
            )),
            None => Ok(None),
        };
    };
    let source = match (&a.ca_cert, &a.ca_key, &a.cert_chain, &a.root_cert) {
        (None, None, None, None) => ca::Source::SelfSigned,
        (Some(c), Some(k), Some(ch), Some(r)) => ca::Source::Plugged(ca::CaCerts {
            ca_cert: c.clone(),
            ca_key: k.clone(),
            cert_chain: ch.clone(),
            root_cert: r.clone(),
        }),
        _ => {
            let missing: Vec<String> = plugged
                .iter()
                .filter(|(_, v)| v.is_none())
                .map(|(n, _)| format!("--{n}"))
                .collect();
            return Err(flag(
                given[0],
                format!(
                    "Istio's cacerts files go together (--ca-cert, --ca-key, --cert-chain, \
                     --root-cert); missing: {}",
                    missing.join(", ")
                ),
            ));
        }
    };
    if a.workload_cert_ttl.is_zero() || a.workload_cert_ttl > a.max_workload_cert_ttl {
        return Err(flag(
            "workload-cert-ttl",
            format!(
                "{:?} must be more than 0 and at most --max-workload-cert-ttl ({:?})",
                a.workload_cert_ttl, a.max_workload_cert_ttl
            ),
        ));
    }
    Ok(Some(ca::Settings {
        state_dir,
        source,
        default_ttl: a.workload_cert_ttl,
        max_ttl: a.max_workload_cert_ttl,
        secure_address: a
            .secure_address
            .unwrap_or_else(|| SocketAddr::new(a.xds_address.ip(), ca::SECURE_PORT)),
    }))
}

/// Reads the directory once and returns its problems (for `--check`).
pub fn check(dir: &std::path::Path) -> Vec<weft_api::Diagnostic> {
    DirSource::new(dir).reload().diagnostics
}

fn log_diagnostics(diags: &[weft_api::Diagnostic]) {
    for d in diags {
        if d.is_error() {
            warn!(problem = %d, "config refused; last good version stays in force");
        } else {
            info!(problem = %d, "config warning");
        }
    }
}

/// Starts watching `dir`; every change (or the periodic rescan) sends a unit into the returned channel.
/// The watcher must be kept alive by the caller.
fn watch_dir(dir: &std::path::Path) -> (Option<notify::RecommendedWatcher>, mpsc::Receiver<()>) {
    use notify::Watcher;
    let (tx, rx) = mpsc::channel(1);
    let ntx = tx.clone();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok_and(|e| is_change(&e)) {
            // Full channel: a reload is already pending, which will see this change too.
            let _ = ntx.try_send(());
        }
    });
    let watcher = match watcher {
        Ok(mut w) => match w.watch(dir, notify::RecursiveMode::Recursive) {
            Ok(()) => Some(w),
            Err(e) => {
                warn!(error = %e, dir = %dir.display(), "cannot watch config directory; rescanning periodically");
                None
            }
        },
        Err(e) => {
            warn!(error = %e, "no file watcher; rescanning periodically");
            None
        }
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RESCAN_INTERVAL);
        loop {
            tick.tick().await;
            if tx.is_closed() {
                return;
            }
            let _ = tx.try_send(());
        }
    });
    (watcher, rx)
}

/// Whether a watcher's event is a change to the config, worth a reload. Opening and reading a file is
/// reported too (inotify's open and close-without-write): the reload's own reads would start the next
/// reload, for ever (weftd spent 14% of a core on it holding 1,000 services). Only changes count.
fn is_change(e: &notify::Event) -> bool {
    !matches!(e.kind, notify::EventKind::Access(_))
}

/// Reloads the source off the async runtime; returns it with the outcome.
async fn reload(mut src: DirSource) -> (DirSource, config::Reload) {
    match tokio::task::spawn_blocking(move || {
        let r = src.reload();
        (src, r)
    })
    .await
    {
        Ok(v) => v,
        Err(e) => {
            error!(error = %e, "config reload task failed");
            std::process::exit(1);
        }
    }
}

/// Runs weftd until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), Error> {
    info!(config = %serde_json::to_string(&config).unwrap_or_default(), "starting weftd");
    let (src, first) = reload(DirSource::new(&config.config_dir)).await;
    log_diagnostics(&first.diagnostics);
    let mut generation = 1;
    let mut model = Model::build_with(
        generation,
        &src.resources(),
        src.mesh().clone(),
        first.diagnostics.clone(),
    );
    // RequestAuthentication keys (jwksUri): fetched in the background, pushed when they arrive.
    let (jwks, jwks_fetcher) = jwks::Jwks::new(jwks::Settings::default());
    jwks.want(authn::jwks_sources(&model));
    model.jwks = jwks.keys();
    info!(
        resources = model.resources.len(),
        services = model.services.len(),
        "config loaded"
    );
    let (model_tx, model_rx) = watch::channel(Arc::new(view::Snapshot::new(Arc::new(model))));
    let status = Arc::new(StatusRegistry::default());
    let metrics = Arc::new(metrics::Metrics::new());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let jwks_task = tokio::spawn(jwks_fetcher.run(shutdown_rx.clone()));

    let xds_listener = if config.plaintext_xds {
        Some(
            server::listen(config.xds_address).map_err(|source| Error::Bind {
                what: "xds",
                addr: config.xds_address,
                source,
            })?,
        )
    } else {
        None
    };
    let debug_listener = tokio::net::TcpListener::bind(config.debug_address)
        .await
        .map_err(|source| Error::Bind {
            what: "debug",
            addr: config.debug_address,
            source,
        })?;
    info!(xds = %config.xds_address, debug = %config.debug_address, "serving");
    // weft-trace's collector: spans in on the Zipkin and OTLP/HTTP ports, one store, Zipkin's query
    // API on the Zipkin port.
    let traces = Arc::new(weft_trace::TraceStore::new(config.trace_bounds));
    let collector = weft_trace::collector::Collector::bind(
        config.zipkin_address,
        config.otlp_http_address,
        traces.clone(),
    )
    .await
    .map_err(|e| Error::Bind {
        what: match e.which {
            weft_trace::collector::Listener::Zipkin => "trace collector (--zipkin-address)",
            weft_trace::collector::Listener::OtlpHttp => "trace collector (--otlp-http-address)",
        },
        addr: e.addr,
        source: e.source,
    })?;
    let mut stop = shutdown_rx.clone();
    let collector_task = tokio::spawn(collector.serve(async move {
        let _ = stop.changed().await;
    }));
    let console_listener = match config.console.address {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind {
                    what: "console",
                    addr,
                    source,
                })?,
        ),
        None => None,
    };

    // Config watcher with debounce: wait for `debounce_after` of quiet (at most `debounce_max`), reload,
    // and publish a new model only when the accepted config changed.
    let (watcher, mut changes) = watch_dir(&config.config_dir);
    let (after, max) = (config.debounce_after, config.debounce_max);
    let mut last_problems = first.diagnostics;
    let watch_task = tokio::spawn(async move {
        let _watcher = watcher;
        let mut src = src;
        let mut keys = jwks.subscribe();
        loop {
            // A config change, or new keys from the JWKS fetcher: the same config pushed again as
            // a new generation (cancellation-safe: both are channels).
            tokio::select! {
                more = changes.recv() => if more.is_none() { return },
                Ok(()) = keys.changed() => {
                    let keys = keys.borrow_and_update().clone();
                    let snap = model_tx.borrow().clone();
                    let cur = &snap.model;
                    if keys.version == cur.jwks.version {
                        continue; // only an error changed
                    }
                    generation += 1;
                    let mut m = Model::build_with(
                        generation,
                        &cur.resources,
                        cur.mesh.clone(),
                        cur.diagnostics.clone(),
                    );
                    m.jwks = keys;
                    info!(generation, "JWKS changed; pushing");
                    let next = view::Snapshot::next(Arc::new(m), &snap)
                        .changed_since(tokio::time::Instant::now());
                    if model_tx.send(Arc::new(next)).is_err() {
                        return;
                    }
                    continue;
                }
            }
            let start = tokio::time::Instant::now();
            loop {
                let quiet = tokio::time::sleep(after);
                tokio::select! {
                    more = changes.recv() => if more.is_none() { return },
                    _ = quiet => break,
                }
                if start.elapsed() >= max {
                    break;
                }
            }
            let (s, r) = reload(src).await;
            src = s;
            if r.diagnostics != last_problems {
                log_diagnostics(&r.diagnostics);
                last_problems = r.diagnostics.clone();
            }
            if r.changed {
                generation += 1;
                let mut m = Model::build_with(
                    generation,
                    &src.resources(),
                    src.mesh().clone(),
                    r.diagnostics,
                );
                jwks.want(authn::jwks_sources(&m));
                m.jwks = jwks.keys();
                info!(
                    generation,
                    resources = m.resources.len(),
                    services = m.services.len(),
                    "config changed; pushing"
                );
                let next =
                    view::Snapshot::next(Arc::new(m), &model_tx.borrow()).changed_since(start);
                if model_tx.send(Arc::new(next)).is_err() {
                    return;
                }
            } else {
                // Keep /debug/configz's problem list current even when nothing was accepted.
                let snap = model_tx.borrow().clone();
                let cur = &snap.model;
                if cur.diagnostics != r.diagnostics {
                    let mut m = Model::build_with(
                        cur.generation,
                        &cur.resources,
                        cur.mesh.clone(),
                        r.diagnostics,
                    );
                    m.jwks = cur.jwks.clone();
                    model_tx.send_replace(Arc::new(snap.same_config(Arc::new(m))));
                }
            }
        }
    });

    let debug_state = debug::DebugState {
        config_dir: config.config_dir.clone(),
        model: model_rx.clone(),
        status: status.clone(),
        metrics: metrics.clone(),
    };
    let debug_task = tokio::spawn(debug::serve(
        debug_listener,
        debug_state,
        shutdown_rx.clone(),
    ));

    // The console reads the proxies' status, the model, and the traces weftd's collector stores.
    let console_task = console_listener.map(|l| {
        let c = console::Console::new(
            config.console.clone(),
            status.clone(),
            model_rx.clone(),
            traces.clone(),
        );
        tokio::spawn(c.serve(l, shutdown_rx.clone()))
    });

    let model_rx_for_ca = model_rx.clone();
    let discovery = server::Discovery::new(model_rx, status, metrics.xds.clone());
    let service = server::grpc::AdsService::new(discovery, 16 * 1024 * 1024);
    // The TLS port (Istio's 15012): the CA, and the same ADS service as the plaintext port.
    let secure = match &config.ca {
        Some(settings) => {
            let m = model_rx_for_ca;
            let trust_domain: ca::service::TrustDomain =
                Arc::new(move || m.borrow().model.mesh.trust_domain.clone());
            let s = ca::start(settings, service.clone(), trust_domain, shutdown_rx.clone())
                .await
                .map_err(Error::Ca)?;
            info!(secure = %s.addr, state_dir = %settings.state_dir.display(), "serving the CA and xDS over TLS");
            Some(s)
        }
        None => {
            info!("no --state-dir: no CA and no TLS port");
            None
        }
    };
    let grpc_task = xds_listener.map(|l| {
        let mut sd = shutdown_rx.clone();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(l);
        let grpc = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = sd.changed().await;
            });
        tokio::spawn(grpc)
    });

    shutdown_signal().await;
    info!("shutting down");
    let _ = shutdown_tx.send(true);
    watch_task.abort();
    let _ = debug_task.await;
    let _ = jwks_task.await;
    let _ = collector_task.await;
    if let Some(t) = console_task {
        let _ = t.await;
    }
    // Open ADS streams do not end by themselves: give the servers a moment, then stop.
    if let Some(s) = secure {
        let _ = s.renew.await;
        if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(2), s.server).await {
            return Err(Error::Serve(e));
        }
    }
    if let Some(t) = grpc_task {
        if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(2), t).await {
            return Err(Error::Serve(e));
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reading_the_config_directory_does_not_trigger_a_reload_and_writing_it_does() {
        use notify::Watcher;
        let dir = std::env::temp_dir().join(format!("weftd-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("a.yaml");
        std::fs::write(&file, "kind: ServiceEntry\n").expect("write");
        // Every event the kernel reports for the directory, in order, to be judged as `watch_dir`
        // judges them.
        let (tx, mut events) = mpsc::unbounded_channel();
        let mut seen = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(e) = res {
                let _ = tx.send(e);
            }
        })
        .expect("a watcher");
        seen.watch(&dir, notify::RecursiveMode::Recursive)
            .expect("watch");
        let (_watcher, mut rx) = watch_dir(&dir);
        // The periodic rescan's first tick comes at once; the next is RESCAN_INTERVAL away.
        tokio::time::timeout(Duration::from_secs(1), rx.recv())
            .await
            .expect("the first rescan")
            .expect("open");
        // What a reload does: list the directory and read every file, a few times over.
        for _ in 0..3 {
            for entry in std::fs::read_dir(&dir).expect("list") {
                std::fs::read(entry.expect("entry").path()).expect("read");
            }
        }
        // Then a change, reported after everything the reads caused (one queue, in order): no event
        // before it counts as a change.
        let fence = dir.join("fence.yaml");
        std::fs::write(&fence, "kind: ServiceEntry\n").expect("write");
        loop {
            let e = tokio::time::timeout(Duration::from_secs(5), events.recv())
                .await
                .expect("the change is reported")
                .expect("open");
            if e.paths.contains(&fence) {
                assert!(is_change(&e), "the write is a change: {e:?}");
                break;
            }
            assert!(!is_change(&e), "reading the files is a change: {e:?}");
        }
        // And the change is signalled.
        tokio::time::timeout(Duration::from_secs(3), rx.recv())
            .await
            .expect("a change is signalled")
            .expect("open");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
