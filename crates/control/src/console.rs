//! weftd's console (`--console-address`, port 20001): the live mesh in a browser, with nothing else to
//! install. A service graph, each service's and workload's golden metrics over time, recent traces as
//! span waterfalls, and the config in force with each proxy's sync and the analyzer's findings; the
//! pages read a JSON API (see the crate README) that scripts can read too.
//!
//! Data: by default weftd scrapes its own proxies ([`scrape`], into the bounded [`window`]) and reads
//! traces from its own collector's store; `--prometheus-url` and `--tracing-url` point the same pages
//! at a Prometheus and a Zipkin instead ([`source`], [`traces`]). The front end is plain HTML and
//! JavaScript with Cytoscape.js and uPlot, embedded from `console/` (the libraries pinned in
//! `console/vendor/`), so it works offline.

pub mod api;
pub mod graph;
pub mod http;
pub mod scrape;
pub mod source;
pub mod text;
pub mod traces;
pub mod traffic;
pub mod window;

use crate::server::status::StatusRegistry;
use crate::view::Snapshot;
use serde::Serialize;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, Instrument};
use weft_trace::TraceStore;

/// A boxed future, for the sources' object-safe traits.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The console's default address (Kiali's port).
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:20001";
/// How often weftd scrapes its proxies by default (Prometheus's and Istio's usual interval).
pub const DEFAULT_SCRAPE_INTERVAL: &str = "15s";

/// The console's settings (part of weftd's `Config`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    /// Where it serves; `None` when `off`.
    pub address: Option<SocketAddr>,
    /// How often the built-in source scrapes the proxies.
    pub scrape_interval: Duration,
    /// How long the built-in source keeps points.
    pub retention: Duration,
    /// A Prometheus to read metrics from instead of scraping.
    pub prometheus_url: Option<http::Url>,
    /// A Zipkin to read traces from instead of weftd's own store.
    pub tracing_url: Option<http::Url>,
}

/// Parses `--console-address`: an address, or `off`.
pub fn parse_address(s: &str) -> Result<Option<SocketAddr>, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| format!("{s:?} is neither ip:port nor off"))
}

/// Parses `--prometheus-url` and `--tracing-url`.
pub fn parse_url(s: &str) -> Result<http::Url, String> {
    http::Url::parse(s).map_err(|e| e.to_string())
}

/// The console: its sources and what it shows of weftd's own state.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    metrics: Box<dyn source::MetricsSource>,
    traces: Box<dyn traces::TraceSource>,
    status: Arc<StatusRegistry>,
    model: watch::Receiver<Arc<Snapshot>>,
    /// The built-in source's store and scraper; `None` with `--prometheus-url`.
    builtin: Option<(Arc<Mutex<window::Window>>, scrape::Scraper)>,
}

impl Console {
    /// A console over weftd's proxy `status`, its `model`, and its trace `store`, reading from the
    /// sources `settings` name.
    pub fn new(
        settings: Settings,
        status: Arc<StatusRegistry>,
        model: watch::Receiver<Arc<Snapshot>>,
        store: Arc<TraceStore>,
    ) -> Console {
        let (metrics, builtin): (Box<dyn source::MetricsSource>, _) = match &settings.prometheus_url
        {
            Some(url) => (Box::new(source::Prometheus::new(url.clone())), None),
            None => {
                let retention = u64::try_from(settings.retention.as_millis()).unwrap_or(u64::MAX);
                let w = Arc::new(Mutex::new(window::Window::new(
                    retention,
                    window::MAX_SERIES,
                )));
                let scraper =
                    scrape::Scraper::new(status.clone(), w.clone(), settings.scrape_interval);
                (
                    Box::new(source::Builtin::new(w.clone())),
                    Some((w, scraper)),
                )
            }
        };
        let traces: Box<dyn traces::TraceSource> = match &settings.tracing_url {
            Some(url) => Box::new(traces::Zipkin::new(url.clone())),
            None => Box::new(traces::Builtin::new(store)),
        };
        Console {
            inner: Arc::new(Inner {
                settings,
                metrics,
                traces,
                status,
                model,
                builtin,
            }),
        }
    }

    /// Scrapes every proxy now, as of `at_ms` (the tests' hook; a no-op with `--prometheus-url`).
    pub async fn scrape_now(&self, at_ms: u64) -> scrape::Round {
        match &self.inner.builtin {
            Some((_, s)) => s.round(at_ms).await,
            None => scrape::Round::default(),
        }
    }

    /// The console's routes.
    pub fn router(&self) -> axum::Router {
        api::router(self.clone())
    }

    /// Serves the console on `listener`, and scrapes the proxies when the source is built in, until
    /// `shutdown` turns true.
    pub async fn serve(self, listener: TcpListener, shutdown: watch::Receiver<bool>) {
        info!(
            address = ?listener.local_addr().ok(),
            metrics = %self.inner.metrics.describe(),
            traces = %self.inner.traces.describe(),
            "console serving"
        );
        let scraping = self.inner.builtin.as_ref().map(|(_, s)| {
            tokio::spawn(
                s.clone()
                    .run(self.inner.settings.scrape_interval, shutdown.clone())
                    .instrument(tracing::info_span!("console_scrape")),
            )
        });
        self.serve_routes(listener, shutdown).await;
        if let Some(task) = scraping {
            let _ = task.await;
        }
    }

    /// Serves the console's routes without scraping (tests scrape with [`Console::scrape_now`]).
    pub async fn serve_routes(self, listener: TcpListener, shutdown: watch::Receiver<bool>) {
        weft_trace::collector::serve(listener, self.router(), shutdown)
            .instrument(tracing::info_span!("console"))
            .await;
    }
}
