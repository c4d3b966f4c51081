//! The span exporter every sidecar runs: a [`Reporter`] the request path hands finished spans to, and a
//! background task that batches them and POSTs them to a Zipkin (`/api/v2/spans`, v2 JSON) or
//! OpenTelemetry (`/v1/traces`, OTLP/HTTP protobuf) collector.
//!
//! Tracing must never cost a request more than a queue push, nor fail one:
//! - [`Reporter::report`] never blocks and never fails: it offers the span to a bounded queue
//!   ([`DEFAULT_QUEUE`] spans) and, when the queue is full, drops it and counts it ([`Stats::dropped`]).
//! - The task seals a batch at [`DEFAULT_BATCH`] spans or [`DEFAULT_FLUSH_INTERVAL`] after the first
//!   span of the batch arrived, whichever comes first (Envoy's Zipkin tracer flushes on a span count or a
//!   timer alike), encodes it off the runtime threads and sends one batch at a time.
//! - A batch that fails (no connection, a timeout, 408, 429, 5xx) is sent again after an exponential
//!   backoff with jitter ([`DEFAULT_BACKOFF_INITIAL`] doubling to [`DEFAULT_BACKOFF_MAX`]); meanwhile
//!   new batches wait behind it. Waiting batches are bounded by the queue's size in spans: beyond it the
//!   oldest waiting batch is dropped and counted. A batch the collector refuses (other 4xx) is dropped
//!   and counted: sending it again would not help.
//! - It logs once when the collector goes away (`warn`) and once when it comes back (`info`), and once
//!   when the collector starts refusing batches; never per span or per attempt (those are `debug`).
//! - [`Exporter::shutdown`] sends what is queued, then what is waiting, until a deadline; what is
//!   left then is counted as dropped.

use crate::span::Span;
use crate::{otlp, zipkin};
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, warn, Instrument};

/// Spans the queue holds, and spans waiting batches may hold, before spans are dropped. At about
/// 1.5 KB a span with Istio's tags, 4,096 spans bound the exporter at about 6 MB in each of the two
/// places (queue and waiting batches).
pub const DEFAULT_QUEUE: usize = 4096;
/// Spans per batch.
pub const DEFAULT_BATCH: usize = 512;
/// Longest a span waits for its batch to fill.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Longest one POST may take, connection included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// First wait before a failed batch is sent again.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(500);
/// Longest wait between attempts.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a shutdown without a deadline of its own (all reporters gone, or the [`Exporter`]
/// dropped) keeps sending.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// The most of a collector's response body that is read (it is only drained, for keep-alive).
const MAX_RESPONSE: usize = 64 * 1024;

/// Where spans go, in which format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// Zipkin v2 JSON, `POST {url}` (Istio's `zipkin` provider; the URL ends in `/api/v2/spans`).
    Zipkin,
    /// OTLP/HTTP protobuf, `POST {url}` (Istio's `opentelemetry` provider over HTTP; the URL ends in
    /// `/v1/traces`).
    OpenTelemetry,
}

/// The exporter's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// The format.
    pub provider: Provider,
    /// The collector's URL (`http://127.0.0.1:9411/api/v2/spans`, `http://127.0.0.1:4318/v1/traces`).
    pub url: Uri,
    /// The queue's bound in spans ([`DEFAULT_QUEUE`]).
    pub queue: usize,
    /// Spans per batch ([`DEFAULT_BATCH`]).
    pub batch: usize,
    /// Longest a span waits for its batch ([`DEFAULT_FLUSH_INTERVAL`]).
    pub flush_interval: Duration,
    /// Longest one POST may take ([`DEFAULT_REQUEST_TIMEOUT`]).
    pub request_timeout: Duration,
    /// First backoff ([`DEFAULT_BACKOFF_INITIAL`]).
    pub backoff_initial: Duration,
    /// Longest backoff ([`DEFAULT_BACKOFF_MAX`]).
    pub backoff_max: Duration,
}

/// A collector URL the exporter cannot send to.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not a URL.
    #[error("trace collector URL {url:?} is not a URL")]
    Url {
        /// The URL given.
        url: String,
        /// Why.
        #[source]
        source: http::uri::InvalidUri,
    },
    /// Not `http://host[:port]/path`.
    #[error(
        "trace collector URL {url:?} must be http://host[:port]/path (https is not supported)"
    )]
    Scheme {
        /// The URL given.
        url: String,
    },
}

impl Config {
    /// Settings for `provider` at `url`, with the defaults.
    pub fn new(provider: Provider, url: &str) -> Result<Config, ConfigError> {
        let uri: Uri = url.parse().map_err(|source| ConfigError::Url {
            url: url.to_string(),
            source,
        })?;
        if uri.scheme_str() != Some("http") || uri.host().is_none_or(str::is_empty) {
            return Err(ConfigError::Scheme {
                url: url.to_string(),
            });
        }
        Ok(Config {
            provider,
            url: uri,
            queue: DEFAULT_QUEUE,
            batch: DEFAULT_BATCH,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            backoff_initial: DEFAULT_BACKOFF_INITIAL,
            backoff_max: DEFAULT_BACKOFF_MAX,
        })
    }
}

/// The exporter's counters, for the proxy's metrics.
#[derive(Debug, Default)]
pub struct Stats {
    sent: AtomicU64,
    dropped: AtomicU64,
    failed_requests: AtomicU64,
}

impl Stats {
    /// Spans the collector accepted.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Spans dropped: the queue was full, waiting batches exceeded the bound, the collector refused
    /// their batch, or shutdown's deadline passed first.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// POSTs that failed (each attempt counts).
    pub fn failed_requests(&self) -> u64 {
        self.failed_requests.load(Ordering::Relaxed)
    }

    fn add_dropped(&self, n: usize) {
        self.dropped.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The request path's handle: cheap to clone (a channel sender and an `Arc`), safe from any thread.
#[derive(Clone, Debug)]
pub struct Reporter {
    tx: Option<mpsc::Sender<Span>>,
    stats: Arc<Stats>,
}

impl Reporter {
    /// A reporter that discards every span without counting it (tracing off: context still propagates).
    pub fn disabled() -> Reporter {
        Reporter {
            tx: None,
            stats: Arc::default(),
        }
    }

    /// Queues `span` for export. Never blocks, never fails: a full queue (or a stopped exporter) drops
    /// the span and counts it.
    pub fn report(&self, span: Span) {
        if let Some(tx) = &self.tx {
            if tx.try_send(span).is_err() {
                self.stats.add_dropped(1);
            }
        }
    }

    /// The exporter's counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }
}

/// The background task's owner: stop it with [`Exporter::shutdown`]. Dropping it stops the task too,
/// with [`DEFAULT_SHUTDOWN_GRACE`] to send what is left.
pub struct Exporter {
    stop: oneshot::Sender<Instant>,
    task: JoinHandle<()>,
    stats: Arc<Stats>,
}

impl Exporter {
    /// Starts the exporter on the current tokio runtime.
    pub fn start(config: Config) -> (Reporter, Exporter) {
        let transport = Arc::new(Http::new(&config));
        Exporter::start_with(config, transport)
    }

    pub(crate) fn start_with(
        config: Config,
        transport: Arc<dyn Transport>,
    ) -> (Reporter, Exporter) {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let (stop_tx, stop_rx) = oneshot::channel();
        let stats = Arc::new(Stats::default());
        let span = tracing::info_span!("trace_exporter", collector = %config.url);
        let task = tokio::spawn(
            Task {
                state: State::new(config, transport, stats.clone()),
                rx,
                stop: stop_rx,
            }
            .run()
            .instrument(span),
        );
        let reporter = Reporter {
            tx: Some(tx),
            stats: stats.clone(),
        };
        (
            reporter,
            Exporter {
                stop: stop_tx,
                task,
                stats,
            },
        )
    }

    /// Stops taking spans, sends what is queued and waiting until `grace` has passed, counts the rest
    /// as dropped, and returns the counters.
    pub async fn shutdown(self, grace: Duration) -> Arc<Stats> {
        let _ = self.stop.send(Instant::now() + grace);
        if let Err(e) = self.task.await {
            warn!(error = %e, "trace exporter task failed");
        }
        self.stats
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }
}

// === sending ===

pub(crate) type PostFuture = Pin<Box<dyn Future<Output = Result<(), PostError>> + Send>>;

/// Sends one encoded batch. The real one is [`Http`]; tests script their own.
pub(crate) trait Transport: Send + Sync + 'static {
    fn post(&self, body: Bytes) -> PostFuture;
}

/// Why a batch was not accepted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PostError {
    #[error("{0}")]
    Connect(String),
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("collector answered {0}")]
    Status(StatusCode),
    #[error("cannot encode the batch")]
    Encode,
}

impl PostError {
    /// Whether sending the same batch again may succeed.
    fn is_retryable(&self) -> bool {
        match self {
            PostError::Connect(_) | PostError::Timeout(_) => true,
            PostError::Status(s) => {
                s.is_server_error()
                    || *s == StatusCode::TOO_MANY_REQUESTS
                    || *s == StatusCode::REQUEST_TIMEOUT
            }
            PostError::Encode => false,
        }
    }
}

/// POSTs over plain HTTP/1.1 with a pooled hyper client.
struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    url: Uri,
    content_type: HeaderValue,
    timeout: Duration,
}

impl Http {
    fn new(config: &Config) -> Http {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.request_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1)
            .build(connector);
        Http {
            client,
            url: config.url.clone(),
            content_type: HeaderValue::from_static(match config.provider {
                Provider::Zipkin => "application/json",
                Provider::OpenTelemetry => "application/x-protobuf",
            }),
            timeout: config.request_timeout,
        }
    }
}

impl Transport for Http {
    fn post(&self, body: Bytes) -> PostFuture {
        let req = Request::post(self.url.clone())
            .header(CONTENT_TYPE, self.content_type.clone())
            .header(
                USER_AGENT,
                concat!("weft-trace/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body));
        let client = self.client.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let req = req.map_err(|e| PostError::Connect(e.to_string()))?;
            let exchange = async {
                let resp = client
                    .request(req)
                    .await
                    .map_err(|e| PostError::Connect(error_chain(&e)))?;
                let status = resp.status();
                // Read the (small) answer so the connection can be used again.
                let _ = Limited::new(resp.into_body(), MAX_RESPONSE).collect().await;
                Ok(status)
            };
            match tokio::time::timeout(timeout, exchange).await {
                Err(_) => Err(PostError::Timeout(timeout)),
                Ok(Err(e)) => Err(e),
                Ok(Ok(s)) if s.is_success() => Ok(()),
                Ok(Ok(s)) => Err(PostError::Status(s)),
            }
        })
    }
}

/// An error and its causes, `a: b: c` (hyper's client error alone says only "client error (Connect)").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

// === the task ===

/// Spans sealed into a batch, sent (and sent again) as they are; encoded for each attempt, off the
/// runtime threads.
struct Batch {
    spans: Arc<Vec<Span>>,
}

struct Task {
    state: State,
    rx: mpsc::Receiver<Span>,
    stop: oneshot::Receiver<Instant>,
}

struct State {
    config: Config,
    transport: Arc<dyn Transport>,
    stats: Arc<Stats>,
    /// The batch being filled.
    filling: Vec<Span>,
    /// When `filling` is sealed even if not full.
    flush_at: Option<Instant>,
    /// Sealed batches, oldest first; the first is the one being sent.
    waiting: VecDeque<Batch>,
    waiting_spans: usize,
    /// The POST of `waiting[0]`, while one is under way.
    sending: Option<PostFuture>,
    /// After a failure: no POST before then.
    retry_at: Option<Instant>,
    backoff: Duration,
    /// The collector is unreachable (logged once when it became so).
    down: bool,
    /// The collector refuses batches (logged once).
    refusing: bool,
}

impl Task {
    async fn run(mut self) {
        let st = &mut self.state;
        let deadline = loop {
            st.start_sending();
            // Every branch is cancellation-safe: `recv` loses no span when another branch wins, the
            // POST lives in `st.sending` across iterations, and the timers are remade from instants.
            tokio::select! {
                r = sending(&mut st.sending) => {
                    st.sending = None;
                    st.sent(r);
                }
                span = self.rx.recv() => match span {
                    Some(span) => st.push(span),
                    None => break Instant::now() + DEFAULT_SHUTDOWN_GRACE,
                },
                _ = sleep_until(st.flush_at.unwrap_or_else(far_future)), if st.flush_at.is_some() => {
                    st.seal();
                }
                _ = sleep_until(st.retry_at.unwrap_or_else(far_future)), if st.retry_at.is_some() => {
                    st.retry_at = None;
                }
                at = &mut self.stop => break at.unwrap_or_else(|_| Instant::now() + DEFAULT_SHUTDOWN_GRACE),
            }
        };
        // Shutdown: take what is queued, seal it, and send everything until the deadline.
        self.rx.close();
        while let Ok(span) = self.rx.try_recv() {
            st.push(span);
        }
        st.seal();
        let drain = async {
            loop {
                if let Some(at) = st.retry_at.take() {
                    sleep_until(at).await;
                }
                st.start_sending();
                if st.sending.is_none() {
                    break;
                }
                let r = sending(&mut st.sending).await;
                st.sending = None;
                st.sent(r);
            }
        };
        if tokio::time::timeout_at(deadline, drain).await.is_err() {
            let left = st.waiting_spans;
            st.stats.add_dropped(left);
            warn!(
                spans = left,
                "trace exporter stopped before sending every span"
            );
        }
        debug!(
            sent = st.stats.sent(),
            dropped = st.stats.dropped(),
            "trace exporter stopped"
        );
    }
}

async fn sending(f: &mut Option<PostFuture>) -> Result<(), PostError> {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}

impl State {
    fn new(config: Config, transport: Arc<dyn Transport>, stats: Arc<Stats>) -> State {
        State {
            filling: Vec::with_capacity(config.batch.min(DEFAULT_BATCH)),
            backoff: config.backoff_initial,
            config,
            transport,
            stats,
            flush_at: None,
            waiting: VecDeque::new(),
            waiting_spans: 0,
            sending: None,
            retry_at: None,
            down: false,
            refusing: false,
        }
    }

    fn push(&mut self, span: Span) {
        if self.filling.is_empty() {
            self.flush_at = Some(Instant::now() + self.config.flush_interval);
        }
        self.filling.push(span);
        if self.filling.len() >= self.config.batch {
            self.seal();
        }
    }

    /// Seals the batch being filled, and drops the oldest waiting batches (never the one being sent)
    /// while waiting batches hold more spans than the queue's bound.
    fn seal(&mut self) {
        self.flush_at = None;
        if self.filling.is_empty() {
            return;
        }
        let spans = std::mem::replace(
            &mut self.filling,
            Vec::with_capacity(self.config.batch.min(DEFAULT_BATCH)),
        );
        self.waiting_spans += spans.len();
        self.waiting.push_back(Batch {
            spans: Arc::new(spans),
        });
        let oldest = usize::from(self.sending.is_some());
        while self.waiting_spans > self.config.queue && self.waiting.len() > oldest + 1 {
            if let Some(b) = self.waiting.remove(oldest) {
                self.waiting_spans -= b.spans.len();
                self.stats.add_dropped(b.spans.len());
                debug!(
                    spans = b.spans.len(),
                    "waiting batches over the bound; oldest dropped"
                );
            }
        }
    }

    /// Starts sending the oldest waiting batch, unless one is under way or the backoff is not over.
    fn start_sending(&mut self) {
        if self.sending.is_some() || self.retry_at.is_some() {
            return;
        }
        let Some(batch) = self.waiting.front() else {
            return;
        };
        let spans = batch.spans.clone();
        let provider = self.config.provider;
        let transport = self.transport.clone();
        self.sending = Some(Box::pin(async move {
            // 512 spans take about a millisecond to encode: not on a runtime thread.
            let body = tokio::task::spawn_blocking(move || encode(provider, &spans))
                .await
                .map_err(|_| PostError::Encode)?;
            transport.post(body).await
        }));
    }

    /// What became of `waiting[0]`.
    fn sent(&mut self, r: Result<(), PostError>) {
        let retry = match &r {
            Ok(()) => false,
            Err(e) => {
                self.stats.failed_requests.fetch_add(1, Ordering::Relaxed);
                e.is_retryable()
            }
        };
        if retry {
            let e = r.err().map(|e| e.to_string()).unwrap_or_default();
            if self.down {
                debug!(error = %e, backoff = ?self.backoff, "trace collector still unreachable");
            } else {
                warn!(error = %e, "trace collector unreachable; retrying with backoff");
                self.down = true;
            }
            // Full jitter over the upper half, so a mesh of sidecars does not retry in step.
            let wait = self.backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
            self.retry_at = Some(Instant::now() + wait);
            self.backoff = (self.backoff * 2).min(self.config.backoff_max);
            return;
        }
        // Answered: accepted, or refused for good. Either way the collector is there.
        self.backoff = self.config.backoff_initial;
        if self.down {
            info!("trace collector reachable again");
            self.down = false;
        }
        let Some(batch) = self.waiting.pop_front() else {
            return;
        };
        let n = batch.spans.len();
        self.waiting_spans -= n;
        match r {
            Ok(()) => {
                self.stats.sent.fetch_add(n as u64, Ordering::Relaxed);
                self.refusing = false;
            }
            Err(e) => {
                self.stats.add_dropped(n);
                if self.refusing {
                    debug!(error = %e, spans = n, "trace collector refused a batch; dropped");
                } else {
                    warn!(error = %e, spans = n, "trace collector refused a batch; dropped");
                    self.refusing = true;
                }
            }
        }
    }
}

fn encode(provider: Provider, spans: &[Span]) -> Bytes {
    Bytes::from(match provider {
        Provider::Zipkin => zipkin::encode(spans),
        Provider::OpenTelemetry => otlp::encode_to_vec(spans),
    })
}

#[cfg(test)]
mod tests;
