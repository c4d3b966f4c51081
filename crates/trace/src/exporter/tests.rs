//! The exporter's timing and bounds against a scripted collector, under tokio's paused clock: when
//! batches go, how failures back off, what is dropped and counted, what shutdown sends. (Against a real
//! collector over loopback: `tests/exporter.rs`.)

use super::*;
use crate::test_util::istio_span;

/// One POST the exporter made: when, what, and the answer to give it.
struct Call {
    at: Instant,
    spans: Vec<Span>,
    answer: oneshot::Sender<Result<(), PostError>>,
}

impl Call {
    fn answer(self, r: Result<(), PostError>) {
        let _ = self.answer.send(r);
    }
}

/// A collector the test answers by hand.
struct Script(mpsc::UnboundedSender<Call>);

impl Transport for Script {
    fn post(&self, body: Bytes) -> PostFuture {
        let (tx, rx) = oneshot::channel();
        let spans = zipkin::decode(&body).expect("the exporter sends Zipkin JSON");
        let _ = self.0.send(Call {
            at: Instant::now(),
            spans,
            answer: tx,
        });
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(PostError::Connect("the test hung up".into())))
        })
    }
}

fn start(config: Config) -> (Reporter, Exporter, mpsc::UnboundedReceiver<Call>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (reporter, exporter) = Exporter::start_with(config, Arc::new(Script(tx)));
    (reporter, exporter, rx)
}

fn config() -> Config {
    Config::new(Provider::Zipkin, "http://127.0.0.1:9411/api/v2/spans").expect("url")
}

async fn next(calls: &mut mpsc::UnboundedReceiver<Call>) -> Call {
    calls.recv().await.expect("the exporter is running")
}

fn refused() -> Result<(), PostError> {
    Err(PostError::Connect("connection refused".into()))
}

#[tokio::test(start_paused = true)]
async fn a_batch_goes_when_full_or_when_its_first_span_has_waited_the_interval() {
    let (reporter, exporter, mut calls) = start(config());
    let t0 = Instant::now();
    for i in 0..3 {
        reporter.report(istio_span(i));
    }
    let call = next(&mut calls).await;
    assert_eq!(call.spans.len(), 3);
    assert_eq!(
        call.at - t0,
        DEFAULT_FLUSH_INTERVAL,
        "not before the interval"
    );
    call.answer(Ok(()));

    let t1 = Instant::now();
    for i in 0..DEFAULT_BATCH as u64 + 5 {
        reporter.report(istio_span(i));
    }
    let call = next(&mut calls).await;
    assert_eq!(call.spans.len(), DEFAULT_BATCH);
    assert_eq!(call.at, t1, "a full batch goes at once");
    call.answer(Ok(()));
    let call = next(&mut calls).await;
    assert_eq!(call.spans.len(), 5);
    assert_eq!(call.at - t1, DEFAULT_FLUSH_INTERVAL);
    call.answer(Ok(()));

    let stats = exporter.shutdown(Duration::from_secs(1)).await;
    assert_eq!(
        (stats.sent(), stats.dropped()),
        (DEFAULT_BATCH as u64 + 8, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_drops_and_counts_without_blocking() {
    let mut c = config();
    c.queue = 8;
    let (reporter, exporter, mut calls) = start(c);
    // No await between the reports: the exporter cannot take any, so the queue fills at 8.
    for i in 0..20 {
        reporter.report(istio_span(i));
    }
    assert_eq!(reporter.stats().dropped(), 12);
    let call = next(&mut calls).await;
    assert_eq!(call.spans.len(), 8);
    call.answer(Ok(()));
    let stats = exporter.shutdown(Duration::from_secs(1)).await;
    assert_eq!((stats.sent(), stats.dropped()), (8, 12));
    // A stopped exporter drops what it is given, counted too.
    reporter.report(istio_span(99));
    assert_eq!(reporter.stats().dropped(), 13);
}

#[tokio::test(start_paused = true)]
async fn a_failed_batch_is_sent_again_with_exponential_backoff_to_its_cap() {
    let mut c = config();
    c.backoff_initial = Duration::from_millis(100);
    c.backoff_max = Duration::from_millis(800);
    let (reporter, exporter, mut calls) = start(c);
    reporter.report(istio_span(1));
    let mut at = Vec::new();
    for _ in 0..7 {
        let call = next(&mut calls).await;
        at.push(call.at);
        call.answer(refused());
    }
    let call = next(&mut calls).await;
    at.push(call.at);
    assert_eq!(call.spans.len(), 1, "the same batch");
    call.answer(Ok(()));
    // Each wait is the backoff with jitter over its upper half: 100, 200, 400, then 800 ms (the cap).
    for (i, pair) in at.windows(2).enumerate() {
        let backoff = Duration::from_millis(100 * (1 << i)).min(Duration::from_millis(800));
        let waited = pair[1] - pair[0];
        assert!(
            waited >= backoff / 2 && waited <= backoff,
            "attempt {}: waited {waited:?} for a backoff of {backoff:?}",
            i + 2
        );
    }
    let stats = exporter.shutdown(Duration::from_secs(1)).await;
    assert_eq!(
        (stats.sent(), stats.dropped(), stats.failed_requests()),
        (1, 0, 7)
    );
}

#[tokio::test(start_paused = true)]
async fn after_a_success_the_backoff_starts_again_from_its_first_step() {
    let mut c = config();
    c.backoff_initial = Duration::from_millis(100);
    let (reporter, exporter, mut calls) = start(c);
    reporter.report(istio_span(1));
    for _ in 0..4 {
        next(&mut calls).await.answer(refused());
    }
    next(&mut calls).await.answer(Ok(()));
    reporter.report(istio_span(2));
    let first = next(&mut calls).await;
    let t = first.at;
    first.answer(refused());
    let again = next(&mut calls).await;
    assert!(
        again.at - t <= Duration::from_millis(100),
        "{:?}",
        again.at - t
    );
    again.answer(Ok(()));
    exporter.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn waiting_batches_beyond_the_bound_are_dropped_oldest_first() {
    let mut c = config();
    c.queue = 8;
    c.batch = 4;
    let (reporter, exporter, mut calls) = start(c);
    let batch = |from: u64| (from..from + 4).map(istio_span).collect::<Vec<_>>();
    let (a, b, cc) = (batch(0), batch(10), batch(20));
    for s in a.clone() {
        reporter.report(s);
    }
    // A is being sent and not answered; B waits (8 spans); C makes 12: B, the oldest that is not
    // being sent, goes.
    let call_a = next(&mut calls).await;
    assert_eq!(call_a.spans, a);
    for s in b.into_iter().chain(cc.clone()) {
        reporter.report(s);
    }
    for _ in 0..100 {
        if reporter.stats().dropped() > 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(reporter.stats().dropped(), 4);
    call_a.answer(Ok(()));
    let call_c = next(&mut calls).await;
    assert_eq!(call_c.spans, cc, "C is next");
    call_c.answer(Ok(()));
    let stats = exporter.shutdown(Duration::from_secs(1)).await;
    assert_eq!((stats.sent(), stats.dropped()), (8, 4));
}

#[tokio::test(start_paused = true)]
async fn a_refused_batch_is_dropped_not_retried() {
    let (reporter, exporter, mut calls) = start(config());
    let (one, two) = (istio_span(1), istio_span(2));
    reporter.report(one.clone());
    let call = next(&mut calls).await;
    assert_eq!(call.spans, [one]);
    call.answer(Err(PostError::Status(StatusCode::BAD_REQUEST)));
    reporter.report(two.clone());
    let call = next(&mut calls).await;
    assert_eq!(
        call.spans,
        [two],
        "the next batch, not the refused one again"
    );
    call.answer(Ok(()));
    let stats = exporter.shutdown(Duration::from_secs(1)).await;
    assert_eq!(
        (stats.sent(), stats.dropped(), stats.failed_requests()),
        (1, 1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_sends_what_is_queued_at_once() {
    let (reporter, exporter, mut calls) = start(config());
    for i in 0..3 {
        reporter.report(istio_span(i));
    }
    let t0 = Instant::now();
    let stop = tokio::spawn(exporter.shutdown(Duration::from_secs(5)));
    let call = next(&mut calls).await;
    assert_eq!(call.spans.len(), 3);
    assert_eq!(call.at, t0, "not after the flush interval");
    call.answer(Ok(()));
    let stats = stop.await.expect("shutdown");
    assert_eq!((stats.sent(), stats.dropped()), (3, 0));
}

#[tokio::test(start_paused = true)]
async fn shutdown_gives_up_at_its_deadline_and_counts_what_is_left() {
    let (reporter, exporter, mut calls) = start(config());
    for i in 0..2 {
        reporter.report(istio_span(i));
    }
    let t0 = Instant::now();
    let stop = tokio::spawn(exporter.shutdown(Duration::from_secs(2)));
    // The collector never answers.
    let _hung = next(&mut calls).await;
    let stats = stop.await.expect("shutdown");
    assert_eq!(Instant::now() - t0, Duration::from_secs(2));
    assert_eq!((stats.sent(), stats.dropped()), (0, 2));
}

#[test]
fn collector_urls() {
    for ok in [
        "http://127.0.0.1:9411/api/v2/spans",
        "http://zipkin.istio-system:9411/api/v2/spans",
        "http://[::1]:4318/v1/traces",
    ] {
        assert!(Config::new(Provider::Zipkin, ok).is_ok(), "{ok}");
    }
    for (bad, want) in [
        (
            "https://zipkin:9411/api/v2/spans",
            "trace collector URL \"https://zipkin:9411/api/v2/spans\" must be http://host[:port]/path (https is not supported)",
        ),
        (
            "/api/v2/spans",
            "trace collector URL \"/api/v2/spans\" must be http://host[:port]/path (https is not supported)",
        ),
        ("http://a b", "trace collector URL \"http://a b\" is not a URL"),
    ] {
        let e = Config::new(Provider::Zipkin, bad).expect_err(bad);
        assert_eq!(e.to_string(), want);
    }
}
