//! The exporter against weftd's collector, in process, over 127.0.0.1: spans arrive in batches in both
//! formats, a full queue drops and counts, a collector that is down is retried with backoff and logged
//! once each way, and shutdown sends what is left. (Timing under a paused clock: `src/exporter/tests.rs`.)

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weft_trace::collector::{Collector, CollectorStats};
use weft_trace::exporter::{self, Config, Provider};
use weft_trace::propagation::Incoming;
use weft_trace::store::{Bounds, TraceStore};
use weft_trace::{Endpoint, Exporter, Kind, Span, SpanId, Str};

/// A collector on 127.0.0.1 (both ports), serving until the test ends.
async fn collector() -> (SocketAddr, SocketAddr, Arc<TraceStore>, Arc<CollectorStats>) {
    collector_at(Some("127.0.0.1:0".parse().expect("addr"))).await
}

async fn collector_at(
    zipkin: Option<SocketAddr>,
) -> (SocketAddr, SocketAddr, Arc<TraceStore>, Arc<CollectorStats>) {
    let store = Arc::new(TraceStore::new(Bounds::default()));
    let c = Collector::bind(
        zipkin,
        Some("127.0.0.1:0".parse().expect("addr")),
        store.clone(),
    )
    .await
    .expect("bind");
    let addrs = (
        c.zipkin_addr().expect("zipkin"),
        c.otlp_addr().expect("otlp"),
    );
    let stats = c.stats().clone();
    tokio::spawn(c.serve(std::future::pending()));
    (addrs.0, addrs.1, store, stats)
}

fn span(n: u64) -> Span {
    let ctx = Incoming::default().child(SpanId::random(), true);
    let mut s = Span::new(
        &ctx,
        Kind::Client,
        "ratings.default.svc.cluster.local:9080/*",
        1_700_000_000_000_000 + n,
    );
    s.duration = 100 + n;
    s.local_endpoint = Some(Endpoint::new(Some(Str::from("reviews.default")), None));
    s.tag("http.status_code", "200");
    s
}

fn config(provider: Provider, url: String) -> Config {
    let mut c = Config::new(provider, &url).expect("url");
    // Only a full batch or shutdown sends, unless a test says otherwise.
    c.flush_interval = Duration::from_secs(3600);
    c
}

/// Polls `f` until it holds, every few milliseconds; panics naming `what` after 10 s.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut delay = Duration::from_millis(1);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within 10 s: {what}"
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn spans_arrive_in_batches_in_both_formats() {
    let (zipkin, otlp, store, stats) = collector().await;
    for (provider, url) in [
        (Provider::Zipkin, format!("http://{zipkin}/api/v2/spans")),
        (Provider::OpenTelemetry, format!("http://{otlp}/v1/traces")),
    ] {
        let before = (stats.requests(), store.stats().spans);
        let (reporter, exporter) = Exporter::start(config(provider, url));
        let spans: Vec<Span> = (0..exporter::DEFAULT_BATCH as u64 + 100)
            .map(span)
            .collect();
        for s in &spans {
            reporter.report(s.clone());
        }
        // One full batch goes at once; the rest waits for the interval (an hour) or shutdown.
        eventually("the full batch is stored", || {
            store.stats().spans == before.1 + exporter::DEFAULT_BATCH
        })
        .await;
        assert_eq!(stats.requests(), before.0 + 1);
        let done = exporter.shutdown(Duration::from_secs(5)).await;
        assert_eq!(
            (done.sent(), done.dropped()),
            (spans.len() as u64, 0),
            "{provider:?}"
        );
        assert_eq!(stats.requests(), before.0 + 2, "{provider:?}: two batches");
        let stored = store.trace(spans[7].trace_id).expect("stored");
        assert_eq!(stored, [spans[7].clone()], "{provider:?}");
    }
}

#[tokio::test]
async fn a_full_queue_drops_and_counts() {
    let (zipkin, _, store, _) = collector().await;
    let mut c = config(Provider::Zipkin, format!("http://{zipkin}/api/v2/spans"));
    c.queue = 16;
    let (reporter, exporter) = Exporter::start(c);
    // No await between reports: the exporter takes none of them until the test yields.
    for n in 0..100 {
        reporter.report(span(n));
    }
    assert_eq!(reporter.stats().dropped(), 84);
    let done = exporter.shutdown(Duration::from_secs(5)).await;
    assert_eq!((done.sent(), done.dropped()), (16, 84));
    assert_eq!(store.stats().spans, 16);
}

/// The log lines of the current thread's tracing events (the test's runtime is single-threaded, so
/// the exporter's task logs here).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn count(&self, needle: &str) -> usize {
        let bytes = self.0.lock().expect("logs").clone();
        String::from_utf8_lossy(&bytes).matches(needle).count()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_collector_that_is_down_is_retried_with_backoff_and_logged_once_each_way() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // An address nothing listens on (until the collector starts there).
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = free.local_addr().expect("addr");
    drop(free);
    let mut c = config(Provider::Zipkin, format!("http://{addr}/api/v2/spans"));
    c.flush_interval = Duration::from_millis(10);
    c.backoff_initial = Duration::from_millis(10);
    c.backoff_max = Duration::from_millis(40);
    let (reporter, exporter) = Exporter::start(c);
    for n in 0..10 {
        reporter.report(span(n));
    }
    let stats = reporter.stats().clone();
    eventually("five failed attempts", || stats.failed_requests() >= 5).await;
    assert_eq!(
        logs.count("trace collector unreachable; retrying with backoff"),
        1
    );
    assert!(
        logs.count("trace collector still unreachable") >= 4,
        "each later attempt is debug"
    );

    let (_, _, store, _) = collector_at(Some(addr)).await;
    eventually("the spans arrive", || store.stats().spans == 10).await;
    // More spans, sent at once: no more log lines.
    for n in 10..20 {
        reporter.report(span(n));
    }
    eventually("the next spans arrive", || store.stats().spans == 20).await;
    let done = exporter.shutdown(Duration::from_secs(5)).await;
    assert_eq!((done.sent(), done.dropped()), (20, 0));
    assert_eq!(
        logs.count("trace collector unreachable; retrying with backoff"),
        1
    );
    assert_eq!(logs.count("trace collector reachable again"), 1);
    assert_eq!(logs.count(" WARN "), 1, "one warning in all");
}

#[tokio::test]
async fn shutdown_sends_what_is_left() {
    let (zipkin, _, store, _) = collector().await;
    let (reporter, exporter) = Exporter::start(config(
        Provider::Zipkin,
        format!("http://{zipkin}/api/v2/spans"),
    ));
    for n in 0..5 {
        reporter.report(span(n));
    }
    let done = exporter.shutdown(Duration::from_secs(5)).await;
    assert_eq!((done.sent(), done.dropped()), (5, 0));
    assert_eq!(store.stats().spans, 5);
}
