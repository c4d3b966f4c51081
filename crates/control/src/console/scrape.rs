//! weftd scraping its proxies: every `--scrape-interval`, a GET of `/stats/prometheus` from each
//! connected proxy that advertised a stats address (`STATS_ADDRESS` in its node metadata), all at once,
//! each within the interval (at most [`MAX_TIMEOUT`]); the samples go into the [`Window`].

use super::text;
use super::window::{self, Window};
use crate::debug::PROXY_METRICS_PATH;
use crate::server::status::StatusRegistry;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// The longest one proxy's scrape may take.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest metrics page read from a proxy (10,000 label sets of Istio's metrics are about 40 MB;
/// the demo's are 60 KB).
pub const MAX_PAGE: usize = 64 * 1024 * 1024;

/// Scrapes the proxies in `status` into `window`.
#[derive(Clone)]
pub struct Scraper {
    status: Arc<StatusRegistry>,
    window: Arc<Mutex<Window>>,
    timeout: Duration,
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// Proxies scraped.
    pub scraped: usize,
    /// Proxies that failed (no answer, an error status, or a page that did not parse).
    pub failed: usize,
}

impl Scraper {
    /// A scraper giving each proxy `interval` (at most [`MAX_TIMEOUT`]) to answer.
    pub fn new(
        status: Arc<StatusRegistry>,
        window: Arc<Mutex<Window>>,
        interval: Duration,
    ) -> Scraper {
        Scraper {
            status,
            window,
            timeout: interval.min(MAX_TIMEOUT),
        }
    }

    /// Scrapes every proxy once, recording the round at `at_ms` (the test's "scrape now" hook; `run`
    /// passes the wall clock).
    pub async fn round(&self, at_ms: u64) -> Round {
        let targets: Vec<(String, String)> = self
            .status
            .snapshot()
            .into_iter()
            .filter(|p| !p.identity.stats_address.is_empty())
            .map(|p| (p.node_id, p.identity.stats_address))
            .collect();
        let pages = futures::future::join_all(targets.iter().map(|(id, addr)| async move {
            let r = super::http::get(addr, PROXY_METRICS_PATH, self.timeout, MAX_PAGE).await;
            (id, addr, r)
        }))
        .await;
        let mut good = Vec::new();
        for (id, addr, r) in pages {
            match r {
                Ok((200, body)) => good.push((id.clone(), body)),
                Ok((status, _)) => {
                    debug!(proxy = %id, stats = %addr, status, "scrape answered with an error");
                }
                Err(e) => {
                    debug!(proxy = %id, stats = %addr, error = %e, "scrape failed");
                }
            }
        }
        // Parsing and storing a round is CPU work (about 1 ms for the demo's six proxies): off the
        // runtime threads.
        let window = self.window.clone();
        let parsed = tokio::task::spawn_blocking(move || {
            let mut scraped = 0;
            let mut w = window.lock().unwrap_or_else(|p| p.into_inner());
            for (id, body) in good {
                let text = String::from_utf8_lossy(&body);
                match text::parse_wanted(&text, window::wanted) {
                    Ok(samples) => {
                        w.insert(&id, at_ms, &samples);
                        scraped += 1;
                    }
                    Err(e) => warn!(proxy = %id, error = %e, "proxy metrics do not parse; skipped"),
                }
            }
            w.end_round(at_ms);
            scraped
        })
        .await
        .unwrap_or(0);
        Round {
            scraped: parsed,
            failed: targets.len() - parsed,
        }
    }

    /// Scrapes every `interval` until `shutdown` turns true.
    pub async fn run(self, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        info!(interval = ?interval, "console scraping proxies");
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Both branches are cancellation-safe: a tick or a change is not lost by the other's win.
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let r = self.round(super::source::now_ms()).await;
            debug!(scraped = r.scraped, failed = r.failed, "scrape round");
        }
    }
}
