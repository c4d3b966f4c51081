//! weftd's trace store: the most recent traces, in memory, bounded both in traces and in spans, the
//! oldest trace (by when its first span arrived) evicted first; and the queries of Zipkin's v2 API over
//! them (services, span names, traces by service, name, duration, time and tags, one trace by id).
//!
//! One mutex guards it; every critical section is a few map operations or one scan of the traces
//! (queries), and none spans an await. Spans are normalised as Zipkin's storage does (service and span
//! names lower-cased) before the lock is taken.

use crate::id::TraceId;
use crate::span::{tags, Span, Str};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};

/// Traces kept by default.
pub const DEFAULT_MAX_TRACES: usize = 10_000;
/// Spans kept by default. A span with Istio's tags costs about 1.5 KB here, its repeated strings shared
/// (`cargo bench -p weft-trace`): the store holds at most about 75 MB. Bookinfo's pages are about seven
/// spans at the proxies, so this bound binds before the trace bound, at some 7,000 pages: two hours of
/// `weft demo`'s trickle at 100 % sampling.
pub const DEFAULT_MAX_SPANS: usize = 50_000;
/// The most spans one trace may hold; more are dropped and counted. A bound of its own, so one runaway
/// trace cannot evict every other.
pub const MAX_SPANS_PER_TRACE: usize = 10_000;

/// The store's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Bounds {
    /// Traces kept.
    pub max_traces: usize,
    /// Spans kept, across all traces.
    pub max_spans: usize,
}

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds {
            max_traces: DEFAULT_MAX_TRACES,
            max_spans: DEFAULT_MAX_SPANS,
        }
    }
}

/// Distinct strings the store shares between spans (see [`Interner`]).
pub const INTERNED_STRINGS: usize = 65_536;

/// Recent traces, bounded.
pub struct TraceStore {
    bounds: Bounds,
    inner: Mutex<Inner>,
    /// Its own lock, taken before `inner` and never with it, so interning a batch does not hold up
    /// queries.
    interner: Mutex<Interner>,
}

/// One shared copy of each tag value, name and service that repeats between spans: a proxy's
/// `node_id`, `istio.mesh_id`, `upstream_cluster` and the like are the same in every span it reports,
/// and sharing them halves a span's cost in the store (see `DEFAULT_MAX_SPANS`). Values unique to a
/// request (`http.url`, `guid:x-request-id`, `peer.address`) are not interned. Bounded: when full, the
/// strings no stored span uses any more are let go (at most once per quarter of the bound's misses,
/// so a store full of distinct values does not scan the set on every span); while it stays full, new
/// strings are kept unshared.
struct Interner {
    strings: HashSet<Str>,
    misses_since_prune: usize,
}

impl Interner {
    fn intern(&mut self, s: &mut Str) {
        if s.is_static() {
            return;
        }
        if let Some(shared) = self.strings.get(s.as_str()) {
            *s = shared.clone();
            return;
        }
        if self.strings.len() >= INTERNED_STRINGS {
            if self.misses_since_prune >= INTERNED_STRINGS / 4 {
                // Only the set holds them: no stored span uses them.
                self.strings.retain(|s| s.shares() > 1);
                self.misses_since_prune = 0;
            }
            if self.strings.len() >= INTERNED_STRINGS {
                self.misses_since_prune += 1;
                return;
            }
        }
        self.strings.insert(s.clone());
    }

    /// Lower-cases service and span names, as Zipkin stores them; shares what repeats; trims the tag
    /// list to its length.
    fn normalise(&mut self, mut span: Span) -> Span {
        span.name = span.name.to_lowercase();
        self.intern(&mut span.name);
        for e in [&mut span.local_endpoint, &mut span.remote_endpoint]
            .into_iter()
            .flatten()
        {
            if let Some(n) = &mut e.service_name {
                *n = n.to_lowercase();
                self.intern(n);
            }
        }
        for (k, v) in &mut span.tags {
            self.intern(k);
            if !UNIQUE_PER_REQUEST.contains(&k.as_str()) {
                self.intern(v);
            }
        }
        span.tags.shrink_to_fit();
        for a in &mut span.annotations {
            self.intern(&mut a.value);
        }
        span.annotations.shrink_to_fit();
        span
    }
}

/// Tags whose values differ in every span: sharing them would only fill the interner.
const UNIQUE_PER_REQUEST: [&str; 3] = [tags::HTTP_URL, tags::GUID_X_REQUEST_ID, tags::PEER_ADDRESS];

#[derive(Default)]
struct Inner {
    traces: HashMap<TraceId, Vec<Span>>,
    /// Trace ids by when their first span arrived, oldest first; each live trace once.
    order: VecDeque<TraceId>,
    spans: usize,
    /// Spans per local service name (what `/api/v2/services` lists).
    services: BTreeMap<Str, usize>,
    evicted_traces: u64,
    dropped_spans: u64,
}

/// The store's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Traces held.
    pub traces: usize,
    /// Spans held.
    pub spans: usize,
    /// Traces evicted to stay within the bounds.
    pub evicted_traces: u64,
    /// Spans refused because their trace held [`MAX_SPANS_PER_TRACE`].
    pub dropped_spans: u64,
}

/// A search, as Zipkin's `GET /api/v2/traces` takes it. Every condition but the time window and
/// `errors_only` is met by some span of `service_name` (of any service when it is `None`), as in
/// Zipkin; each condition may be met by a different span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The local service (`serviceName`).
    pub service_name: Option<String>,
    /// The remote service (`remoteServiceName`).
    pub remote_service_name: Option<String>,
    /// The span name (`spanName`).
    pub span_name: Option<String>,
    /// `annotationQuery`: each term is a tag key (present) or `key=value`, or an annotation's value.
    pub annotation_query: Vec<(String, Option<String>)>,
    /// Shortest span duration, µs (`minDuration`).
    pub min_duration: Option<u64>,
    /// Longest span duration, µs (`maxDuration`).
    pub max_duration: Option<u64>,
    /// End of the time window, ms since the epoch (`endTs`).
    pub end_ts: u64,
    /// Length of the window, ms (`lookback`).
    pub lookback: u64,
    /// Most traces returned (`limit`).
    pub limit: usize,
    /// Only traces with a span tagged `error` (Weft's `errorsOnly=true`).
    pub errors_only: bool,
}

impl Default for Query {
    /// Zipkin's defaults: the last day up to now, 10 traces, no other condition.
    fn default() -> Query {
        Query {
            service_name: None,
            remote_service_name: None,
            span_name: None,
            annotation_query: Vec::new(),
            min_duration: None,
            max_duration: None,
            end_ts: crate::span::now_micros() / 1000,
            lookback: DEFAULT_LOOKBACK_MS,
            limit: DEFAULT_LIMIT,
            errors_only: false,
        }
    }
}

/// Zipkin's default `lookback`: a day, in ms.
pub const DEFAULT_LOOKBACK_MS: u64 = 86_400_000;
/// Zipkin's default `limit`.
pub const DEFAULT_LIMIT: usize = 10;

// === impl TraceStore ===

impl TraceStore {
    /// An empty store with these bounds (each at least 1).
    pub fn new(bounds: Bounds) -> TraceStore {
        TraceStore {
            bounds: Bounds {
                max_traces: bounds.max_traces.max(1),
                max_spans: bounds.max_spans.max(1),
            },
            inner: Mutex::default(),
            interner: Mutex::new(Interner {
                strings: HashSet::new(),
                misses_since_prune: 0,
            }),
        }
    }

    /// Its bounds.
    pub fn bounds(&self) -> Bounds {
        self.bounds
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing under these locks panics on input; were one poisoned anyway, the maps are still
        // usable (each update keeps them consistent before the next), so carry on.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds spans, evicting the oldest traces to stay within the bounds. Returns how many were
    /// stored (the rest were dropped: their trace was full).
    pub fn insert(&self, spans: Vec<Span>) -> usize {
        let spans: Vec<Span> = {
            let mut interner = self.interner.lock().unwrap_or_else(|p| p.into_inner());
            spans.into_iter().map(|s| interner.normalise(s)).collect()
        };
        let per_trace = MAX_SPANS_PER_TRACE.min(self.bounds.max_spans);
        let mut stored = 0;
        let mut inner = self.lock();
        let inner = &mut *inner;
        for span in spans {
            if !inner.traces.contains_key(&span.trace_id) {
                inner.order.push_back(span.trace_id);
            }
            let trace = inner.traces.entry(span.trace_id).or_default();
            if trace.len() >= per_trace {
                inner.dropped_spans += 1;
                continue;
            }
            if let Some(name) = service(&span) {
                *inner.services.entry(name.clone()).or_default() += 1;
            }
            trace.push(span);
            inner.spans += 1;
            stored += 1;
            while inner.traces.len() > self.bounds.max_traces || inner.spans > self.bounds.max_spans
            {
                if !inner.evict_oldest() {
                    break;
                }
            }
        }
        stored
    }

    /// The counters.
    pub fn stats(&self) -> StoreStats {
        let inner = self.lock();
        StoreStats {
            traces: inner.traces.len(),
            spans: inner.spans,
            evicted_traces: inner.evicted_traces,
            dropped_spans: inner.dropped_spans,
        }
    }

    /// Local service names, sorted.
    pub fn services(&self) -> Vec<Str> {
        self.lock().services.keys().cloned().collect()
    }

    /// The span names of a service's spans, sorted (Zipkin's `/api/v2/spans?serviceName=`).
    pub fn span_names(&self, service_name: &str) -> Vec<Str> {
        let service_name = service_name.to_lowercase();
        let inner = self.lock();
        let mut names = BTreeSet::new();
        for span in inner.traces.values().flatten() {
            if service(span).is_some_and(|s| **s == *service_name) && !span.name.is_empty() {
                names.insert(span.name.clone());
            }
        }
        names.into_iter().collect()
    }

    /// The remote services a service's spans name, sorted (Zipkin's `/api/v2/remoteServices`).
    pub fn remote_services(&self, service_name: &str) -> Vec<Str> {
        let service_name = service_name.to_lowercase();
        let inner = self.lock();
        let mut names = BTreeSet::new();
        for span in inner.traces.values().flatten() {
            if service(span).is_some_and(|s| **s == *service_name) {
                if let Some(r) = remote_service(span) {
                    names.insert(r.clone());
                }
            }
        }
        names.into_iter().collect()
    }

    /// One trace's spans, by start time.
    pub fn trace(&self, id: TraceId) -> Option<Vec<Span>> {
        let mut spans = self.lock().traces.get(&id)?.clone();
        spans.sort_by_key(|s| s.timestamp);
        Some(spans)
    }

    /// The traces that match, most recent first (by their first span's start), at most `q.limit`.
    pub fn traces(&self, q: &Query) -> Vec<Vec<Span>> {
        let q = Query {
            service_name: q.service_name.as_deref().map(str::to_lowercase),
            remote_service_name: q.remote_service_name.as_deref().map(str::to_lowercase),
            span_name: q.span_name.as_deref().map(str::to_lowercase),
            ..q.clone()
        };
        let end = q.end_ts.saturating_mul(1000);
        let start = end.saturating_sub(q.lookback.saturating_mul(1000));
        let mut found: Vec<(u64, Vec<Span>)> = {
            let inner = self.lock();
            let mut found: Vec<(u64, &Vec<Span>)> = inner
                .traces
                .values()
                .filter_map(|spans| {
                    let ts = spans
                        .iter()
                        .map(|s| s.timestamp)
                        .filter(|t| *t != 0)
                        .min()?;
                    (start..=end).contains(&ts).then_some((ts, spans))
                })
                .filter(|(_, spans)| matches(&q, spans))
                .collect();
            found.sort_by_key(|t| std::cmp::Reverse(t.0));
            found.truncate(q.limit);
            // Cloned under the lock: at most `limit` traces, each a few spans whose strings are shared.
            found.into_iter().map(|(ts, s)| (ts, s.clone())).collect()
        };
        found
            .iter_mut()
            .for_each(|(_, spans)| spans.sort_by_key(|s| s.timestamp));
        found.into_iter().map(|(_, s)| s).collect()
    }
}

impl Inner {
    /// Evicts the oldest trace; `false` when there is none.
    fn evict_oldest(&mut self) -> bool {
        let Some(id) = self.order.pop_front() else {
            return false;
        };
        if let Some(spans) = self.traces.remove(&id) {
            self.spans -= spans.len();
            self.evicted_traces += 1;
            for span in &spans {
                if let Some(name) = service(span) {
                    if let Some(n) = self.services.get_mut(name) {
                        *n -= 1;
                        if *n == 0 {
                            self.services.remove(name);
                        }
                    }
                }
            }
        }
        true
    }
}

fn service(span: &Span) -> Option<&Str> {
    span.local_endpoint.as_ref()?.service_name.as_ref()
}

fn remote_service(span: &Span) -> Option<&Str> {
    span.remote_endpoint.as_ref()?.service_name.as_ref()
}

fn matches(q: &Query, spans: &[Span]) -> bool {
    if q.errors_only && !spans.iter().any(Span::is_error) {
        return false;
    }
    let of_service = || {
        spans.iter().filter(|s| match &q.service_name {
            None => true,
            Some(name) => service(s).is_some_and(|n| **n == **name),
        })
    };
    if of_service().next().is_none() {
        return false;
    }
    if let Some(r) = &q.remote_service_name {
        if !of_service().any(|s| remote_service(s).is_some_and(|n| **n == **r)) {
            return false;
        }
    }
    if let Some(name) = &q.span_name {
        if !of_service().any(|s| *s.name == **name) {
            return false;
        }
    }
    if q.min_duration.is_some() || q.max_duration.is_some() {
        let (min, max) = (
            q.min_duration.unwrap_or(0),
            q.max_duration.unwrap_or(u64::MAX),
        );
        if !of_service().any(|s| (min..=max).contains(&s.duration)) {
            return false;
        }
    }
    q.annotation_query.iter().all(|(key, value)| {
        of_service().any(|s| match value {
            Some(v) => s.tag_value(key).is_some_and(|t| **t == **v),
            None => s.tag_value(key).is_some() || s.annotations.iter().any(|a| *a.value == **key),
        })
    })
}

#[cfg(test)]
mod tests;
