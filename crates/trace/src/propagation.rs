//! Trace context on the request path: read what a request arrived with ([`Incoming::extract`]: W3C
//! `traceparent`/`tracestate`, B3 single `b3`, B3 multi `x-b3-*`, `x-request-id`,
//! `x-envoy-force-trace`), decide whether to sample ([`Sampler`]), make this hop's context
//! ([`Incoming::child`]) and write it on the upstream request ([`inject`], [`inject_with`]).
//!
//! Everything here runs on every request, sampled or not, so it is cheap. Extraction is one pass over
//! the headers and allocates nothing (the `tracestate` and `x-request-id` values it keeps are reference
//! counted). Injection writes every value it makes into one buffer and cuts the header values from it,
//! so a caller that passes a slab (`weft_http::slab_cut`) makes no allocation per request; and it edits
//! the request's own headers in place, writing only what changed: the caller's trace id and sampling
//! decision are already there and stay, and what is stale is removed only when it is there. That is why
//! [`inject`] must be given the map the context was extracted from (or a copy of it, or a map without
//! trace headers): it relies on what extraction saw in it. Measured: `cargo bench -p weft-trace`.
//!
//! Malformed input is ignored as Envoy ignores it: the request starts a new trace, nothing panics, no
//! error reaches the request. Which header wins when several are present:
//! 1. B3 single (`b3`), which the B3 specification puts before the multi-header form;
//! 2. B3 multi (`x-b3-traceid` with `x-b3-spanid`, optional `x-b3-parentspanid`);
//! 3. W3C `traceparent`.
//!
//! B3 comes first because it is what Istio's default tracer (Envoy's Zipkin tracer) reads; W3C is the
//! fallback, as in Envoy's Zipkin tracer with W3C propagation on. A well-formed header of a lower rank
//! still supplies the sampling decision when the higher one has none, and `tracestate` is kept only with
//! a valid `traceparent` of the same trace (W3C Trace Context §3.3.1).

use crate::id::{self, Case, SpanId, TraceId};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// `traceparent` (W3C Trace Context).
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate` (W3C Trace Context): vendor data, passed on unchanged.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// `b3`, B3's single-header form.
pub const B3: HeaderName = HeaderName::from_static("b3");
/// `x-b3-traceid`.
pub const X_B3_TRACEID: HeaderName = HeaderName::from_static("x-b3-traceid");
/// `x-b3-spanid`.
pub const X_B3_SPANID: HeaderName = HeaderName::from_static("x-b3-spanid");
/// `x-b3-parentspanid`.
pub const X_B3_PARENTSPANID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
/// `x-b3-sampled`.
pub const X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
/// `x-b3-flags` (`1` is B3's debug flag).
pub const X_B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
/// `x-request-id`, Envoy's request correlation id (Istio's `guid:x-request-id` span tag).
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-envoy-force-trace`: its presence samples the request.
pub const X_ENVOY_FORCE_TRACE: HeaderName = HeaderName::from_static("x-envoy-force-trace");

/// Where a span sits in a trace, as a request's headers name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanContext {
    /// The trace.
    pub trace_id: TraceId,
    /// The span that sent the request (the parent of the receiving hop's span).
    pub span_id: SpanId,
    /// That span's own parent, when the headers carry it (B3 does, W3C does not).
    pub parent_id: Option<SpanId>,
}

/// What a request arrived with, read by [`Incoming::extract`]; `Incoming::default()` is a request
/// with no trace headers.
#[derive(Clone, Debug, Default)]
pub struct Incoming {
    context: Option<SpanContext>,
    sampled: Option<bool>,
    debug: bool,
    force_trace: bool,
    tracestate: Option<HeaderValue>,
    request_id: Option<HeaderValue>,
    carried: Carried,
}

/// This hop's trace context: the span it records and the headers it sends upstream. Made by
/// [`Incoming::child`] and read-only, because [`inject`] relies on what it says about the request's
/// headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    trace_id: TraceId,
    span_id: SpanId,
    parent_id: Option<SpanId>,
    sampled: bool,
    debug: bool,
    tracestate: Option<HeaderValue>,
    carried: Carried,
}

/// Trace headers the request's map holds, as extraction saw them, so injection writes only what
/// changed and removes only what is there. A header repeated in the map is never "kept": writing it
/// replaces every copy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Carried {
    /// Bits of the headers present (`Carried::*`).
    present: u16,
    /// `x-b3-traceid`'s trace, when it is there once and well-formed.
    trace_id: Option<TraceId>,
    /// `x-b3-sampled` when it is there once and exactly `1` or `0`.
    sampled: Option<bool>,
    /// `x-b3-flags` is there once and exactly `1`.
    flags_1: bool,
    /// The one `tracestate` field is the kept `tracestate` (not a join of several).
    tracestate_as_is: bool,
}

impl Carried {
    const TRACESTATE: u16 = 1 << 0;
    const B3: u16 = 1 << 1;
    const TRACE_ID: u16 = 1 << 2;
    const PARENT: u16 = 1 << 3;
    const SAMPLED: u16 = 1 << 4;
    const FLAGS: u16 = 1 << 5;

    fn has(&self, bit: u16) -> bool {
        self.present & bit != 0
    }
}

// === impl Incoming ===

impl Incoming {
    /// Reads a request's trace headers. Never fails: malformed values count as absent.
    pub fn extract(headers: &HeaderMap) -> Incoming {
        // One pass over the headers instead of a lookup (a hash of the name) for each of the ten names.
        let mut seen = Seen::default();
        for (name, value) in headers {
            seen.see(name.as_str(), value);
        }
        let w3c = match seen.traceparent {
            Some(v) if !seen.repeated(Seen::TRACEPARENT) => parse_traceparent(v.as_bytes()),
            _ => None,
        };
        let b3 = match seen.b3 {
            Some(v) => parse_b3_single(v.as_bytes()),
            None => seen.b3_multi(),
        };
        let same_trace = |ctx: &SpanContext| w3c.is_some_and(|(w, _)| w.trace_id == ctx.trace_id);
        let (context, w3c_counts) = match (b3.context, w3c) {
            (Some(ctx), _) => (Some(ctx), same_trace(&ctx)),
            (None, Some((ctx, _))) => (Some(ctx), true),
            (None, None) => (None, false),
        };
        let sampled = match b3.sampling {
            Sampling::Accept | Sampling::Debug => Some(true),
            Sampling::Deny => Some(false),
            Sampling::Defer if w3c_counts => w3c.map(|(_, sampled)| sampled),
            Sampling::Defer => None,
        };
        let single_tracestate = !seen.repeated(Seen::TRACESTATE);
        let tracestate = match (w3c_counts, seen.tracestate) {
            (false, _) | (true, None) => None,
            (true, Some(v)) if single_tracestate && !trim_ows(v.as_bytes()).is_empty() => {
                Some(v.clone())
            }
            (true, Some(_)) => tracestate(headers),
        };
        let once = |bit| seen.present & bit != 0 && !seen.repeated(bit);
        let carried = Carried {
            present: seen.carried_bits(),
            trace_id: match (seen.b3, b3.context) {
                // The context was read from x-b3-traceid: no need to read it again.
                (None, Some(ctx)) if once(Seen::TRACE_ID) => Some(ctx.trace_id),
                _ => seen
                    .trace_id
                    .filter(|_| once(Seen::TRACE_ID))
                    .and_then(|v| TraceId::parse_hex(v.as_bytes())),
            },
            sampled: match seen.sampled.map(|v| v.as_bytes()) {
                Some(b"1") if once(Seen::SAMPLED) => Some(true),
                Some(b"0") if once(Seen::SAMPLED) => Some(false),
                _ => None,
            },
            flags_1: once(Seen::FLAGS) && seen.flags.is_some_and(|v| v.as_bytes() == b"1"),
            tracestate_as_is: single_tracestate && tracestate.is_some(),
        };
        Incoming {
            context,
            sampled,
            debug: b3.sampling == Sampling::Debug,
            force_trace: seen.present & Seen::FORCE_TRACE != 0,
            tracestate,
            request_id: seen.request_id.cloned(),
            carried,
        }
    }

    /// The caller's trace context; `None` when the headers carry none, or only malformed ones.
    pub fn context(&self) -> Option<&SpanContext> {
        self.context.as_ref()
    }

    /// The caller's sampling decision (B3 `1`/`0`, W3C's sampled flag); `None` defers to this hop.
    pub fn sampled(&self) -> Option<bool> {
        self.sampled
    }

    /// B3's debug flag (`x-b3-flags: 1` or `b3: …-d`): sample, and mark the spans `debug`.
    pub fn debug(&self) -> bool {
        self.debug
    }

    /// Whether `x-envoy-force-trace` was present.
    pub fn force_trace(&self) -> bool {
        self.force_trace
    }

    /// `tracestate`, kept only beside a valid `traceparent` of the same trace (several fields joined
    /// with commas, in order, empty ones left out).
    pub fn tracestate(&self) -> Option<&HeaderValue> {
        self.tracestate.as_ref()
    }

    /// `x-request-id`, for the span's `guid:x-request-id` tag and for consistent sampling.
    pub fn request_id(&self) -> Option<&HeaderValue> {
        self.request_id.as_ref()
    }

    /// This hop's context: the caller's trace (or a new one) with `span_id` as this hop's span, whose
    /// parent is the caller's span. `sampled` is this hop's decision ([`Sampler::decide`]); a debug
    /// request is sampled whatever it says.
    pub fn child(&self, span_id: SpanId, sampled: bool) -> Context {
        let (trace_id, parent_id) = match &self.context {
            Some(c) => (c.trace_id, Some(c.span_id)),
            None => (TraceId::random(), None),
        };
        Context {
            trace_id,
            span_id,
            parent_id,
            sampled: sampled || self.debug,
            debug: self.debug,
            tracestate: self.tracestate.clone(),
            carried: self.carried,
        }
    }
}

// === impl Context ===

impl Context {
    /// The trace (the caller's, or a new one).
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// This hop's span.
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// The caller's span, the parent of this one; `None` at the root of a trace.
    pub fn parent_id(&self) -> Option<SpanId> {
        self.parent_id
    }

    /// Whether the trace is sampled: report this hop's span only when it is.
    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// B3's debug flag, passed on (and set on the span).
    pub fn debug(&self) -> bool {
        self.debug
    }

    /// `tracestate`, passed on unchanged.
    pub fn tracestate(&self) -> Option<&HeaderValue> {
        self.tracestate.as_ref()
    }
}

/// The trace headers of a request, found in one pass: the first value of each (B3: "the first value
/// wins"), which were present, and which were repeated (W3C: two `traceparent` fields are invalid;
/// several `tracestate` fields are one list).
#[derive(Default)]
struct Seen<'a> {
    present: u16,
    repeated: u16,
    traceparent: Option<&'a HeaderValue>,
    tracestate: Option<&'a HeaderValue>,
    b3: Option<&'a HeaderValue>,
    trace_id: Option<&'a HeaderValue>,
    span_id: Option<&'a HeaderValue>,
    parent_span_id: Option<&'a HeaderValue>,
    sampled: Option<&'a HeaderValue>,
    flags: Option<&'a HeaderValue>,
    request_id: Option<&'a HeaderValue>,
}

impl<'a> Seen<'a> {
    const TRACEPARENT: u16 = 1 << 0;
    const TRACESTATE: u16 = 1 << 1;
    const B3: u16 = 1 << 2;
    const TRACE_ID: u16 = 1 << 3;
    const SPAN_ID: u16 = 1 << 4;
    const PARENT: u16 = 1 << 5;
    const SAMPLED: u16 = 1 << 6;
    const FLAGS: u16 = 1 << 7;
    const REQUEST_ID: u16 = 1 << 8;
    const FORCE_TRACE: u16 = 1 << 9;

    fn see(&mut self, name: &str, v: &'a HeaderValue) {
        // Names are lower case in a HeaderMap; most are none of these, and most of those are told
        // apart by their length before any byte is compared.
        let (bit, slot) = match name {
            "traceparent" => (Self::TRACEPARENT, &mut self.traceparent),
            "tracestate" => (Self::TRACESTATE, &mut self.tracestate),
            "b3" => (Self::B3, &mut self.b3),
            "x-b3-traceid" => (Self::TRACE_ID, &mut self.trace_id),
            "x-b3-spanid" => (Self::SPAN_ID, &mut self.span_id),
            "x-b3-parentspanid" => (Self::PARENT, &mut self.parent_span_id),
            "x-b3-sampled" => (Self::SAMPLED, &mut self.sampled),
            "x-b3-flags" => (Self::FLAGS, &mut self.flags),
            "x-request-id" => (Self::REQUEST_ID, &mut self.request_id),
            "x-envoy-force-trace" => {
                self.present |= Self::FORCE_TRACE;
                return;
            }
            _ => return,
        };
        self.repeated |= self.present & bit;
        self.present |= bit;
        slot.get_or_insert(v);
    }

    fn repeated(&self, bit: u16) -> bool {
        self.repeated & bit != 0
    }

    /// The headers injection may have to remove, as `Carried` bits.
    fn carried_bits(&self) -> u16 {
        let mut c = 0;
        for (seen, carried) in [
            (Self::TRACESTATE, Carried::TRACESTATE),
            (Self::B3, Carried::B3),
            (Self::TRACE_ID, Carried::TRACE_ID),
            (Self::PARENT, Carried::PARENT),
            (Self::SAMPLED, Carried::SAMPLED),
            (Self::FLAGS, Carried::FLAGS),
        ] {
            if self.present & seen != 0 {
                c |= carried;
            }
        }
        c
    }

    /// The `x-b3-*` headers. A present but malformed parent id voids the context, as in Envoy; the
    /// sampling state stands on its own.
    fn b3_multi(&self) -> B3Read {
        let sampling = if self.flags.is_some_and(|v| v.as_bytes() == b"1") {
            Sampling::Debug
        } else {
            match self.sampled.map(|v| v.as_bytes()) {
                Some(b"1" | b"true") => Sampling::Accept,
                Some(b"0" | b"false") => Sampling::Deny,
                _ => Sampling::Defer,
            }
        };
        let context = (|| {
            let trace_id = TraceId::parse_hex(self.trace_id?.as_bytes())?;
            let span_id = SpanId::parse_hex(self.span_id?.as_bytes())?;
            let parent_id = match self.parent_span_id {
                None => None,
                Some(p) => Some(SpanId::parse_hex(p.as_bytes())?),
            };
            Some(SpanContext {
                trace_id,
                span_id,
                parent_id,
            })
        })();
        B3Read { context, sampling }
    }
}

/// `tracestate`'s fields joined, in order, without empty ones (W3C §3.3.1.1: several fields are one
/// list).
fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut joined = Vec::new();
    for v in headers.get_all(&TRACESTATE) {
        let v = trim_ows(v.as_bytes());
        if v.is_empty() {
            continue;
        }
        if !joined.is_empty() {
            joined.push(b',');
        }
        joined.extend_from_slice(v);
    }
    if joined.is_empty() {
        return None;
    }
    HeaderValue::from_bytes(&joined).ok()
}

fn trim_ows(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// A B3 sampling state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sampling {
    Defer,
    Deny,
    Accept,
    Debug,
}

struct B3Read {
    context: Option<SpanContext>,
    sampling: Sampling,
}

/// `traceparent` (W3C Trace Context §3.2): its context and sampled flag. Lowercase hex only; version
/// `ff` is invalid; version `00` is exactly 55 characters; a later version may carry more after a `-`.
fn parse_traceparent(v: &[u8]) -> Option<(SpanContext, bool)> {
    let v = trim_ows(v);
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = id::hex_u8(&v[..2], Case::Lower)?;
    match version {
        0xff => return None,
        0x00 if v.len() != 55 => return None,
        _ if v.len() > 55 && v[55] != b'-' => return None,
        _ => {}
    }
    let trace_id = TraceId::new(id::hex_u128(&v[3..35], Case::Lower)?)?;
    let span_id = SpanId::new(id::hex_u64(&v[36..52], Case::Lower)?)?;
    let flags = id::hex_u8(&v[53..55], Case::Lower)?;
    let ctx = SpanContext {
        trace_id,
        span_id,
        parent_id: None,
    };
    Some((ctx, flags & 1 == 1))
}

/// `b3` (B3 single header): `{trace}-{span}[-{sampling}[-{parent}]]`, or a sampling state alone.
fn parse_b3_single(v: &[u8]) -> B3Read {
    let none = B3Read {
        context: None,
        sampling: Sampling::Defer,
    };
    if let [s] = v {
        return match single_sampling(*s) {
            Some(sampling) => B3Read {
                context: None,
                sampling,
            },
            None => none,
        };
    }
    let mut parts = v.split(|&b| b == b'-');
    let (Some(trace), Some(span)) = (parts.next(), parts.next()) else {
        return none;
    };
    let sampling = match parts.next() {
        None => Sampling::Defer,
        Some([s]) => match single_sampling(*s) {
            Some(s) => s,
            None => return none,
        },
        Some(_) => return none,
    };
    let parent = match parts.next() {
        None => None,
        Some(p) => match SpanId::parse_hex(p) {
            Some(p) => Some(p),
            None => return none,
        },
    };
    if parts.next().is_some() {
        return none;
    }
    match (TraceId::parse_hex(trace), SpanId::parse_hex(span)) {
        (Some(trace_id), Some(span_id)) => B3Read {
            context: Some(SpanContext {
                trace_id,
                span_id,
                parent_id: parent,
            }),
            sampling,
        },
        _ => none,
    }
}

fn single_sampling(s: u8) -> Option<Sampling> {
    match s {
        b'0' => Some(Sampling::Deny),
        b'1' => Some(Sampling::Accept),
        b'd' => Some(Sampling::Debug),
        _ => None,
    }
}

// === impl Sampler ===

/// The random part of the sampling decision: a percentage from 0 to 100 in steps of 0.01, Istio's
/// `meshConfig.defaultConfig.tracing.sampling` (and `PILOT_TRACE_SAMPLING`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sampler {
    /// Requests in 10,000 that are sampled.
    per_10k: u32,
}

/// A sampling percentage outside 0 to 100.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("trace sampling percentage {0} is not between 0 and 100")]
pub struct SamplingError(pub f64);

impl Sampler {
    /// Istio's default: 1 % (`PILOT_TRACE_SAMPLING`'s default).
    pub const ISTIO_DEFAULT: Sampler = Sampler { per_10k: 100 };

    /// A sampler for `percent` (0.0 to 100.0), rounded to 0.01.
    pub fn from_percent(percent: f64) -> Result<Sampler, SamplingError> {
        if !(0.0..=100.0).contains(&percent) {
            return Err(SamplingError(percent));
        }
        Ok(Sampler {
            per_10k: (percent * 100.0).round() as u32,
        })
    }

    /// The percentage it samples.
    pub fn percent(&self) -> f64 {
        f64::from(self.per_10k) / 100.0
    }

    /// Whether this hop samples the request, in Envoy's order: the caller's decision wins (B3 debug
    /// or sampled, W3C's flag); else `x-envoy-force-trace` samples; else the percentage decides,
    /// from the `x-request-id` when it starts with 8 hex digits (as Envoy's
    /// `use_request_id_for_trace_sampling`, Istio's default, so every hop that sees one id decides
    /// alike), from a random number otherwise.
    pub fn decide(&self, incoming: &Incoming) -> bool {
        if incoming.debug {
            return true;
        }
        if let Some(s) = incoming.sampled {
            return s;
        }
        if incoming.force_trace {
            return true;
        }
        match self.per_10k {
            0 => false,
            10_000.. => true,
            n => {
                let draw = incoming
                    .request_id
                    .as_ref()
                    .and_then(|v| v.as_bytes().get(..8))
                    .and_then(hex_u32)
                    .unwrap_or_else(|| fastrand::u32(..));
                draw % 10_000 < n
            }
        }
    }
}

fn hex_u32(s: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u32::from(d);
    }
    Some(v)
}

// === inject ===

const ONE: HeaderValue = HeaderValue::from_static("1");
const ZERO: HeaderValue = HeaderValue::from_static("0");

/// Writes `ctx` on the upstream request, editing `headers` (the request's own, from which `ctx` was
/// extracted) in place: `traceparent` and the B3 headers (`x-b3-traceid`, `x-b3-spanid`,
/// `x-b3-parentspanid` unless this is the root, `x-b3-sampled`, or `x-b3-flags: 1` instead when
/// debugging), `b3` when the request came with one, and `tracestate` when the context has one. What is
/// stale is replaced or removed; what is still right (the trace id, the decision) is left as it is. The
/// values are cut from one copy of a buffer (two allocations: the buffer and its shared header);
/// [`inject_with`] takes the copy from the caller's slab instead.
pub fn inject(ctx: &Context, headers: &mut HeaderMap) {
    inject_with(ctx, headers, Bytes::copy_from_slice, |b| {
        HeaderValue::from_maybe_shared(b).ok()
    })
}

/// [`inject`], with `cut` making the one `Bytes` every value is sliced from and `value` making each
/// header value of a slice of it (lowercase hex digits and dashes only). The proxy passes
/// `|b| weft_http::slab_cut(|s| s.extend_from_slice(b))` (one allocation per 4 KiB of values) and
/// `weft_http::field_value` (which checks eight bytes at a time).
pub fn inject_with(
    ctx: &Context,
    headers: &mut HeaderMap,
    cut: impl FnOnce(&[u8]) -> Bytes,
    value: impl Fn(Bytes) -> Option<HeaderValue>,
) {
    // One buffer: "00-{trace:32}-{span:16}-{flags:2}" (traceparent, whose middle is also x-b3-traceid
    // and x-b3-spanid), then "-{parent:16}", then the b3 single value when there is one.
    let mut buf = [0u8; 160];
    buf[..3].copy_from_slice(b"00-");
    id::write_hex_u128(
        ctx.trace_id.get(),
        (&mut buf[3..35]).try_into().expect("32"),
    );
    buf[35] = b'-';
    id::write_hex_u64(
        ctx.span_id.get(),
        (&mut buf[36..52]).try_into().expect("16"),
    );
    buf[52..55].copy_from_slice(if ctx.sampled { b"-01" } else { b"-00" });
    let mut end = 55;
    if let Some(p) = ctx.parent_id {
        buf[55] = b'-';
        id::write_hex_u64(p.get(), (&mut buf[56..72]).try_into().expect("16"));
        end = 72;
    }
    let b3_at = end;
    let c = &ctx.carried;
    let b3_single = c.has(Carried::B3);
    // The trace id's digits in B3: 16 for a 64-bit trace, else 32.
    let trace_from = if ctx.trace_id.is_64bit() { 19 } else { 3 };
    if b3_single {
        // {trace}-{span}-{sampling}[-{parent}]: the ids are copied from the traceparent above.
        buf.copy_within(trace_from..52, b3_at);
        let mut n = b3_at + (52 - trace_from);
        buf[n] = b'-';
        buf[n + 1] = match (ctx.debug, ctx.sampled) {
            (true, _) => b'd',
            (false, true) => b'1',
            (false, false) => b'0',
        };
        n += 2;
        if ctx.parent_id.is_some() {
            buf.copy_within(55..72, n);
            n += 17;
        }
        end = n;
    }
    let bytes = cut(&buf[..end]);
    let slice = |from: usize, to: usize| value(bytes.slice(from..to));

    set(headers, TRACEPARENT, slice(0, 55));
    if c.trace_id != Some(ctx.trace_id) {
        set(headers, X_B3_TRACEID, slice(trace_from, 35));
    }
    set(headers, X_B3_SPANID, slice(36, 52));
    match ctx.parent_id {
        Some(_) => set(headers, X_B3_PARENTSPANID, slice(56, 72)),
        None if c.has(Carried::PARENT) => set(headers, X_B3_PARENTSPANID, None),
        None => {}
    }
    if ctx.debug {
        if !c.flags_1 {
            set(headers, X_B3_FLAGS, Some(ONE));
        }
        if c.has(Carried::SAMPLED) {
            set(headers, X_B3_SAMPLED, None);
        }
    } else {
        if c.has(Carried::FLAGS) {
            set(headers, X_B3_FLAGS, None);
        }
        if c.sampled != Some(ctx.sampled) {
            let s = if ctx.sampled { ONE } else { ZERO };
            set(headers, X_B3_SAMPLED, Some(s));
        }
    }
    if b3_single {
        set(headers, B3, slice(b3_at, end));
    }
    match &ctx.tracestate {
        Some(_) if c.tracestate_as_is => {}
        Some(ts) => set(headers, TRACESTATE, Some(ts.clone())),
        None if c.has(Carried::TRACESTATE) => set(headers, TRACESTATE, None),
        None => {}
    }
}

/// Sets or removes a header.
fn set(headers: &mut HeaderMap, name: HeaderName, value: Option<HeaderValue>) {
    match value {
        Some(v) => {
            headers.insert(name, v);
        }
        None => {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests;
