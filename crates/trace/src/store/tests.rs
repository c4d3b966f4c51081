//! The store's bounds and eviction, and Zipkin's queries over it.

use super::*;
use crate::id::SpanId;
use crate::span::{Endpoint, Kind};

const NOW_MS: u64 = 1_700_000_000_000;

fn span(trace: u128, id: u64, service: &str, start_ms: u64, duration_us: u64) -> Span {
    Span {
        trace_id: TraceId::new(trace).expect("trace"),
        id: SpanId::new(id).expect("id"),
        parent_id: None,
        name: Str::copy(&format!("{service}:9080/*")),
        kind: Some(Kind::Server),
        timestamp: start_ms * 1000,
        duration: duration_us,
        local_endpoint: Some(Endpoint {
            service_name: Some(Str::copy(service)),
            ..Endpoint::default()
        }),
        remote_endpoint: None,
        annotations: vec![],
        tags: vec![],
        debug: false,
        shared: false,
    }
}

fn ids(traces: &[Vec<Span>]) -> Vec<u128> {
    traces.iter().map(|t| t[0].trace_id.get()).collect()
}

fn all() -> Query {
    Query {
        end_ts: NOW_MS,
        limit: 100,
        ..Query::default()
    }
}

#[test]
fn the_oldest_traces_go_first_when_traces_are_over_their_bound() {
    let store = TraceStore::new(Bounds {
        max_traces: 3,
        max_spans: 100,
    });
    for t in 1..=5u128 {
        let n = store.insert(vec![
            span(t, 1, "productpage", NOW_MS - 10 + t as u64, 10),
            span(t, 2, "reviews", NOW_MS - 10 + t as u64, 5),
        ]);
        assert_eq!(n, 2);
    }
    // A late span of trace 3 does not make it younger: it is still the oldest left.
    store.insert(vec![span(3, 3, "ratings", NOW_MS, 1)]);
    let stats = store.stats();
    assert_eq!(
        stats,
        StoreStats {
            traces: 3,
            spans: 7,
            evicted_traces: 2,
            dropped_spans: 0
        }
    );
    assert_eq!(ids(&store.traces(&all())), [5, 4, 3]);
    store.insert(vec![span(6, 1, "details", NOW_MS, 1)]);
    assert_eq!(ids(&store.traces(&all())), [6, 5, 4]);
    // ratings had spans only in trace 3.
    let services: Vec<String> = store.services().iter().map(|s| s.to_string()).collect();
    assert_eq!(services, ["details", "productpage", "reviews"]);
}

#[test]
fn the_oldest_traces_go_first_when_spans_are_over_their_bound() {
    let store = TraceStore::new(Bounds {
        max_traces: 100,
        max_spans: 5,
    });
    for t in 1..=3u128 {
        store.insert(vec![span(t, 1, "a", NOW_MS, 1), span(t, 2, "a", NOW_MS, 1)]);
    }
    let stats = store.stats();
    assert_eq!((stats.traces, stats.spans, stats.evicted_traces), (2, 4, 1));
    assert!(store.trace(TraceId::new(1).expect("1")).is_none());
    assert!(store.trace(TraceId::new(3).expect("3")).is_some());
}

#[test]
fn one_trace_cannot_take_every_span() {
    let store = TraceStore::new(Bounds {
        max_traces: 10,
        max_spans: 3,
    });
    let stored = store.insert((1..=5).map(|i| span(1, i, "a", NOW_MS, 1)).collect());
    assert_eq!(stored, 3);
    let stats = store.stats();
    assert_eq!((stats.traces, stats.spans, stats.dropped_spans), (1, 3, 2));
}

#[test]
fn names_are_stored_lower_case_and_spans_come_back_by_start() {
    let store = TraceStore::new(Bounds::default());
    let mut late = span(7, 1, "ProductPage", NOW_MS, 1);
    late.name = Str::from("GET /Product");
    let early = span(7, 2, "reviews", NOW_MS - 1, 1);
    store.insert(vec![late, early]);
    let t = store.trace(TraceId::new(7).expect("7")).expect("stored");
    assert_eq!(t[0].id.get(), 2);
    assert_eq!(&*t[1].name, "get /product");
    let services: Vec<String> = store.services().iter().map(|s| s.to_string()).collect();
    assert_eq!(services, ["productpage", "reviews"]);
    assert_eq!(store.span_names("PRODUCTPAGE"), [Str::from("get /product")]);
}

#[test]
fn queries() {
    let store = TraceStore::new(Bounds::default());
    // 1: productpage → reviews, slow; 2: productpage, failed, an hour ago; 3: details only.
    let mut client = span(1, 1, "productpage", NOW_MS - 5, 300_000);
    client.remote_endpoint = Some(Endpoint {
        service_name: Some(Str::from("reviews")),
        ..Endpoint::default()
    });
    client
        .tags
        .push((Str::from("http.method"), Str::from("GET")));
    let mut failed = span(2, 1, "productpage", NOW_MS - 3_600_000, 1_000);
    failed.tags.push((Str::from("error"), Str::from("true")));
    failed
        .tags
        .push((Str::from("http.status_code"), Str::from("503")));
    store.insert(vec![
        client,
        span(1, 2, "reviews", NOW_MS - 4, 200_000),
        failed,
        span(3, 1, "details", NOW_MS - 1, 50),
    ]);
    let q = |f: &dyn Fn(&mut Query)| {
        let mut q = all();
        f(&mut q);
        ids(&store.traces(&q))
    };
    let cases: &[(&str, Vec<u128>, Vec<u128>)] = &[
        ("everything, most recent first", q(&|_| {}), vec![3, 1, 2]),
        (
            "a service",
            q(&|q| q.service_name = Some("ProductPage".into())),
            vec![1, 2],
        ),
        (
            "no such service",
            q(&|q| q.service_name = Some("nobody".into())),
            vec![],
        ),
        ("the limit", q(&|q| q.limit = 2), vec![3, 1]),
        (
            "the last 10 minutes",
            q(&|q| q.lookback = 600_000),
            vec![3, 1],
        ),
        (
            "an end before the newest",
            q(&|q| q.end_ts = NOW_MS - 2),
            vec![1, 2],
        ),
        (
            "at least 100 ms",
            q(&|q| q.min_duration = Some(100_000)),
            vec![1],
        ),
        (
            "at least 250 ms in reviews",
            q(&|q| {
                q.min_duration = Some(250_000);
                q.service_name = Some("reviews".into());
            }),
            vec![],
        ),
        (
            "at most 1 ms",
            q(&|q| q.max_duration = Some(1_000)),
            vec![3, 2],
        ),
        ("errors only", q(&|q| q.errors_only = true), vec![2]),
        (
            "a span name",
            q(&|q| q.span_name = Some("details:9080/*".into())),
            vec![3],
        ),
        (
            "a remote service",
            q(&|q| q.remote_service_name = Some("reviews".into())),
            vec![1],
        ),
        (
            "a tag",
            q(&|q| q.annotation_query = vec![("http.status_code".into(), Some("503".into()))]),
            vec![2],
        ),
        (
            "a tag's presence, and another",
            q(&|q| {
                q.annotation_query = vec![("error".into(), None), ("http.status_code".into(), None)]
            }),
            vec![2],
        ),
    ];
    for (name, got, want) in cases {
        assert_eq!(got, want, "{name}");
    }
    assert_eq!(store.remote_services("productpage"), [Str::from("reviews")]);
}
