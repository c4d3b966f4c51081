//! What tracing costs, measured: `cargo bench -p weft-trace` (add `-- --quick` for a short run).
//!
//! - propagation on every request (extract, sample, child context, inject): ns and allocations per
//!   request, with the default `inject` and with a slab cut as the proxy's `weft_http::slab_cut` does;
//! - a sampled request's span with Istio's tags: ns and allocations;
//! - encoding a batch of 512 spans as Zipkin JSON and as OTLP protobuf: size and time;
//! - the collector's store full of Istio spans decoded from Zipkin JSON: heap bytes per span.
//!
//! Time on this shared two-core machine moves with whatever else runs; instructions do not. To count
//! them (what the proxy's request path is judged by, `bench/instructions`), run one scenario twice
//! under callgrind and divide the difference by the difference in runs:
//!
//! ```text
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/deps/trace-* --only propagate-slab 10000
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/deps/trace-* --only propagate-slab 30000
//! ```
//!
//! Scenarios: `extract`, `propagate` (extract, sample, child, `inject`), `propagate-slab` (the same with
//! the proxy's slab and `field_value`), and `reset` (what both `propagate`s also do to put the request
//! back; subtract it).
//!
//! Allocations and heap bytes are counted by a global allocator that wraps the system's. That needs
//! `unsafe` (implementing `GlobalAlloc` is an unsafe trait); it lives here, in a benchmark binary,
//! never in the library (which forbids unsafe code), and only forwards to `System`.

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderValue};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::hint::black_box;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Instant;
use weft_trace::store::{Bounds, TraceStore};
use weft_trace::{
    inject, inject_with, otlp, zipkin, Endpoint, Incoming, Kind, ProxyTags, RequestTags, Sampler,
    Span, SpanId, Str,
};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

// SAFETY: every method forwards to `System` with the caller's own arguments, so `System`'s guarantees
// are this allocator's; the counters are atomics and never affect what is allocated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as i64, Relaxed);
        // SAFETY: forwarded as received (see above).
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as i64, Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` `n` times; returns ns and allocations per run.
fn measure(n: u64, mut f: impl FnMut(u64)) -> (f64, f64) {
    for i in 0..n / 10 {
        f(i); // warm up: caches, the map's capacity, the slab
    }
    let a0 = ALLOCATIONS.load(Relaxed);
    let t0 = Instant::now();
    for i in 0..n {
        f(i);
    }
    let ns = t0.elapsed().as_nanos() as f64 / n as f64;
    let allocs = (ALLOCATIONS.load(Relaxed) - a0) as f64 / n as f64;
    (ns, allocs)
}

thread_local! {
    static SLAB: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// The proxy's `weft_http::slab_cut`, as it is written there: values cut from a per-thread 4 KiB slab.
fn slab_cut(b: &[u8]) -> Bytes {
    SLAB.with(|slab| {
        let mut slab = slab.borrow_mut();
        if slab.capacity() - slab.len() < 4096 / 8 {
            *slab = BytesMut::with_capacity(4096);
        }
        slab.extend_from_slice(b);
        slab.split().freeze()
    })
}

/// The proxy's `weft_http::field_value`, as it is written there: printable ASCII checked eight bytes at
/// a time, then the unchecked constructor; anything else through the checked one.
fn field_value(b: Bytes) -> Option<HeaderValue> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let less = |w: u64| w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    let more = |w: u64| (w.wrapping_add(ONES) | w) & HIGH;
    let mut words = b.chunks_exact(8);
    let mut bad = 0;
    for w in &mut words {
        let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        bad |= less(w) | more(w);
    }
    let mut tail = [0x20u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    let w = u64::from_le_bytes(tail);
    bad |= less(w) | more(w);
    if bad != 0 {
        return HeaderValue::from_maybe_shared(b).ok();
    }
    // SAFETY: every byte is printable ASCII (checked above), which `HeaderValue` accepts.
    Some(unsafe { HeaderValue::from_maybe_shared_unchecked(b) })
}

/// What an application's request to its sidecar carries when it propagates a B3 context (Bookinfo's
/// productpage does), plus the usual headers.
fn incoming_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "reviews:9080"),
        ("user-agent", "python-requests/2.31.0"),
        ("accept", "*/*"),
        ("x-request-id", "6f1a5f3c-0e8b-4f5e-9f3a-1d2c3b4a5e6f"),
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
        ("x-b3-sampled", "1"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    h
}

/// Puts the incoming trace headers back (static values: no allocation) and takes away what inject
/// added, keeping the map's capacity as a proxy's request map would.
fn reset(h: &mut HeaderMap) {
    h.insert(
        "x-b3-traceid",
        HeaderValue::from_static("80f198ee56343ba864fe8b2a57d3eff7"),
    );
    h.insert("x-b3-spanid", HeaderValue::from_static("e457b5a2e4d86bd1"));
    h.insert(
        "x-b3-parentspanid",
        HeaderValue::from_static("05e3ac9a4f6e3b90"),
    );
    h.insert("x-b3-sampled", HeaderValue::from_static("1"));
    h.remove("traceparent");
}

fn proxy_tags() -> ProxyTags {
    ProxyTags {
        node_id: Str::from("sidecar~127.0.1.3~reviews-v1-7b9f8c.default~default.svc.cluster.local"),
        zone: Str::from(""),
        mesh_id: Str::from("cluster.local"),
        namespace: Str::from("default"),
        canonical_service: Str::from("reviews"),
        canonical_revision: Str::from("v1"),
    }
}

/// A sampled request's span, as the proxy would make it.
fn istio_span(tags: &ProxyTags, n: u64, incoming: &Incoming) -> Span {
    let ctx = incoming.child(SpanId::random(), true);
    let mut s = Span::new(
        &ctx,
        Kind::Client,
        "ratings.default.svc.cluster.local:9080/*",
        1_700_000_000_000_000 + n,
    );
    s.duration = 1000 + n % 3000;
    s.local_endpoint = Some(Endpoint::new(
        Some(Str::from("reviews.default")),
        Some(([127, 0, 1, 3], 0).into()),
    ));
    s.remote_endpoint = Some(Endpoint::new(None, Some(([127, 0, 1, 4], 9080).into())));
    let url = format!("http://ratings:9080/ratings/{n}");
    let rid = format!("{n:08x}-0e8b-4f5e-9f3a-1d2c3b4a5e6f");
    s.istio_tags(
        tags,
        &RequestTags {
            method: "GET",
            url: &url,
            protocol: "HTTP/1.1",
            status: 200,
            response_flags: "-",
            upstream_cluster: "outbound|9080||ratings.default.svc.cluster.local",
            peer_address: Some(([127, 0, 1, 3], 40_000 + (n % 20_000) as u16).into()),
            request_size: 0,
            response_size: 48,
            request_id: Some(&rid),
            user_agent: Some("python-requests/2.31.0"),
        },
    );
    s
}

/// `--only SCENARIO RUNS`: one scenario, no output, for an instruction counter (callgrind): the
/// difference between two run counts, divided by the difference, is the count per run.
fn only(scenario: &str, runs: u64) {
    let h = incoming_headers();
    let sampler = Sampler::ISTIO_DEFAULT;
    let mut out = incoming_headers();
    for _ in 0..runs {
        match scenario {
            "reset" => reset(&mut out),
            "extract" => {
                black_box(Incoming::extract(black_box(&h)));
            }
            "propagate" | "propagate-slab" => {
                let inc = Incoming::extract(black_box(&out));
                let ctx = inc.child(SpanId::random(), sampler.decide(&inc));
                if scenario == "propagate" {
                    inject(&ctx, &mut out);
                } else {
                    inject_with(&ctx, &mut out, slab_cut, field_value);
                }
                reset(&mut out);
            }
            _ => panic!("unknown scenario {scenario}"),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--only") {
        let runs = args
            .get(at + 2)
            .and_then(|r| r.parse().ok())
            .unwrap_or(1000);
        return only(&args[at + 1], runs);
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 100_000 } else { 2_000_000 };
    let sampler = Sampler::ISTIO_DEFAULT;

    println!("## propagation, per request ({n} runs)");
    let h = incoming_headers();
    let (ns, allocs) = measure(n, |_| {
        black_box(Incoming::extract(black_box(&h)));
    });
    println!("extract                              {ns:7.1} ns  {allocs:.2} allocations");
    let (ns, allocs) = measure(n, |_| {
        let inc = Incoming::extract(black_box(&h));
        black_box(inc.child(SpanId::random(), sampler.decide(&inc)));
    });
    println!("extract + sample + child             {ns:7.1} ns  {allocs:.2} allocations");
    let mut out = incoming_headers();
    let (ns, allocs) = measure(n, |_| {
        let inc = Incoming::extract(black_box(&out));
        let ctx = inc.child(SpanId::random(), sampler.decide(&inc));
        // The upstream request's headers are the incoming ones, edited in place.
        inject(&ctx, &mut out);
        // Next round reads the same incoming context again, not this one's.
        reset(&mut out);
    });
    let (ns_copy, allocs_copy) = measure(n, |_| {
        reset(&mut out);
    });
    println!(
        "extract + sample + child + inject    {:7.1} ns  {:.2} allocations",
        ns - ns_copy,
        allocs - allocs_copy
    );
    let (ns, allocs) = measure(n, |_| {
        let inc = Incoming::extract(black_box(&out));
        let ctx = inc.child(SpanId::random(), sampler.decide(&inc));
        inject_with(&ctx, &mut out, slab_cut, field_value);
        reset(&mut out);
    });
    println!(
        "  ... slab cut, field_value (proxy) {:7.1} ns  {:.2} allocations",
        ns - ns_copy,
        allocs - allocs_copy
    );
    let mut root = HeaderMap::new();
    let (ns, allocs) = measure(n, |_| {
        let inc = Incoming::extract(black_box(&root));
        let ctx = inc.child(SpanId::random(), sampler.decide(&inc));
        inject_with(&ctx, &mut root, slab_cut, field_value);
        root.clear();
    });
    println!("  ... a new trace, slab cut          {ns:7.1} ns  {allocs:.2} allocations");

    println!();
    println!("## a sampled request's span with Istio's tags");
    let tags = proxy_tags();
    let inc = Incoming::extract(&h);
    let (ns, allocs) = measure(n / 10, |i| {
        black_box(istio_span(&tags, i, &inc));
    });
    // The two `format!`s above stand for the URL and request id the proxy already has.
    println!("build (Span::new, endpoints, istio_tags)  {ns:7.1} ns  {allocs:.2} allocations");

    let before = LIVE_BYTES.load(Relaxed);
    let queued: Vec<Span> = (0..4096).map(|i| istio_span(&tags, i, &inc)).collect();
    let per_span = (LIVE_BYTES.load(Relaxed) - before) as f64 / queued.len() as f64;
    println!("held in the exporter's queue: {per_span:.0} bytes a span");
    drop(queued);

    println!();
    println!("## a batch of 512 spans");
    let batch: Vec<Span> = (0..512).map(|i| istio_span(&tags, i, &inc)).collect();
    let rounds = if quick { 20 } else { 200 };
    let t0 = Instant::now();
    let mut json = Vec::new();
    for _ in 0..rounds {
        json = black_box(zipkin::encode(&batch));
    }
    let zipkin_us = t0.elapsed().as_micros() as f64 / rounds as f64;
    let t0 = Instant::now();
    let mut proto = Vec::new();
    for _ in 0..rounds {
        proto = black_box(otlp::encode_to_vec(&batch));
    }
    let otlp_us = t0.elapsed().as_micros() as f64 / rounds as f64;
    println!(
        "Zipkin JSON   {:7} bytes ({:4} a span)  encoded in {zipkin_us:6.0} µs",
        json.len(),
        json.len() / 512
    );
    println!(
        "OTLP protobuf {:7} bytes ({:4} a span)  encoded in {otlp_us:6.0} µs",
        proto.len(),
        proto.len() / 512
    );
    let t0 = Instant::now();
    for _ in 0..rounds {
        black_box(zipkin::decode(&json).expect("decodes"));
    }
    let decode_us = t0.elapsed().as_micros() as f64 / rounds as f64;
    println!("Zipkin JSON decoded in {decode_us:.0} µs (the collector's side)");

    println!();
    println!("## the store, full");
    let bounds = Bounds::default();
    let traces = bounds.max_spans / 5;
    // Five spans a trace (a Bookinfo page at the proxies), decoded from JSON in batches of 500 as the
    // collector receives them, so every string is its own allocation as in weftd.
    let before = LIVE_BYTES.load(Relaxed);
    let store = TraceStore::new(bounds);
    let mut ingested = 0usize;
    for chunk in 0..traces / 100 {
        let mut spans = Vec::with_capacity(500);
        for t in 0..100 {
            let mut trace_id = None;
            for k in 0..5 {
                let mut s = istio_span(
                    &tags,
                    (chunk * 100 + t) as u64 * 5 + k,
                    &Incoming::default(),
                );
                let id = *trace_id.get_or_insert(s.trace_id);
                s.trace_id = id;
                spans.push(s);
            }
        }
        let body = zipkin::encode(&spans);
        drop(spans);
        ingested += store.insert(zipkin::decode(&body).expect("decodes"));
    }
    let after = LIVE_BYTES.load(Relaxed);
    let stats = store.stats();
    let per_span = (after - before) as f64 / stats.spans as f64;
    println!(
        "{} traces, {} spans ({} ingested): {:.1} MB, {per_span:.0} bytes a span",
        stats.traces,
        stats.spans,
        ingested,
        (after - before) as f64 / 1e6
    );
}
