//! Header vectors from the W3C Trace Context test suite (w3c/trace-context `test/test.py`) and the B3
//! specification (openzipkin/b3-propagation `README.md`), malformed ones included, and what is written
//! upstream.

use super::*;

const TRACE: &str = "80f198ee56343ba864fe8b2a57d3eff7";
const SPAN: &str = "e457b5a2e4d86bd1";
const PARENT: &str = "05e3ac9a4f6e3b90";
const W3C_TRACE: &str = "12345678901234567890123456789012";
const W3C_SPAN: &str = "1234567890123456";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    h
}

fn trace(s: &str) -> TraceId {
    TraceId::parse_hex(s.as_bytes()).expect("trace id")
}

fn span(s: &str) -> SpanId {
    SpanId::parse_hex(s.as_bytes()).expect("span id")
}

fn ctx(t: &str, s: &str, p: Option<&str>) -> Option<SpanContext> {
    Some(SpanContext {
        trace_id: trace(t),
        span_id: span(s),
        parent_id: p.map(span),
    })
}

fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().expect("ascii"))
}

#[test]
fn w3c_traceparent_vectors() {
    let ok = |tp: &str| {
        let inc = Incoming::extract(&headers(&[("traceparent", tp)]));
        assert_eq!(
            inc.context().copied(),
            ctx(W3C_TRACE, W3C_SPAN, None),
            "{tp:?} is valid"
        );
        inc
    };
    let t = W3C_TRACE;
    let s = W3C_SPAN;
    assert_eq!(ok(&format!("00-{t}-{s}-01")).sampled, Some(true));
    assert_eq!(ok(&format!("00-{t}-{s}-00")).sampled, Some(false));
    // Other flag bits are not the sampled bit.
    assert_eq!(ok(&format!("00-{t}-{s}-02")).sampled, Some(false));
    // Optional whitespace around the value.
    for tp in [
        " 00-T-S-01",
        "\t00-T-S-01",
        "00-T-S-01 ",
        "00-T-S-01\t",
        "\t 00-T-S-01 \t",
    ] {
        ok(&tp.replace('T', t).replace('S', s));
    }
    // A future version: read the first 55 characters; more may follow after a dash.
    ok(&format!("cc-{t}-{s}-01"));
    ok(&format!("cc-{t}-{s}-01-what-the-future-will-be-like"));

    let bad = [
        "00-T-S-01.",
        "00-T-S-01-what-the-future-will-be-like",
        "cc-T-S-01.what-the-future-will-be-like",
        "ff-T-S-01",
        ".0-T-S-01",
        "0.-T-S-01",
        "000-T-S-01",
        "0000-T-S-01",
        "0-T-S-01",
        "00-00000000000000000000000000000000-S-01",
        "00-.2345678901234567890123456789012-S-01",
        "00-1234567890123456789012345678901.-S-01",
        "00-123456789012345678901234567890123-S-01",
        "00-1234567890123456789012345678901-S-01",
        "00-T-0000000000000000-01",
        "00-T-.234567890123456-01",
        "00-T-123456789012345.-01",
        "00-T-12345678901234567-01",
        "00-T-123456789012345-01",
        "00-T-S-.0",
        "00-T-S-0.",
        "00-T-S-001",
        "00-T-S-1",
        // Upper-case hex is not Trace Context.
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        "",
        "00",
    ];
    for tp in bad {
        let tp = tp.replace('T', t).replace('S', s);
        let inc = Incoming::extract(&headers(&[("traceparent", &tp), ("tracestate", "foo=1")]));
        assert_eq!(inc.context(), None, "{tp:?} is invalid");
        assert_eq!(inc.sampled(), None, "{tp:?} decides nothing");
        assert_eq!(inc.tracestate(), None, "{tp:?}: tracestate goes with it");
    }
    // Two traceparent fields: neither counts.
    let inc = Incoming::extract(&headers(&[
        ("traceparent", &format!("00-{t}-{s}-01")),
        ("traceparent", &format!("00-{t}-{s}-01")),
    ]));
    assert_eq!(inc.context(), None);
}

#[test]
fn w3c_tracestate_is_kept_joined_and_only_with_its_traceparent() {
    let tp = format!("00-{W3C_TRACE}-{W3C_SPAN}-00");
    let state = |extra: &[(&str, &str)]| {
        let mut pairs = vec![("traceparent", tp.as_str())];
        pairs.extend_from_slice(extra);
        Incoming::extract(&headers(&pairs))
            .tracestate()
            .map(|v| v.to_str().expect("ascii").to_string())
    };
    assert_eq!(state(&[]), None);
    assert_eq!(
        state(&[("tracestate", "foo=1,bar=2")]).as_deref(),
        Some("foo=1,bar=2")
    );
    assert_eq!(
        state(&[
            ("tracestate", "foo=1,bar=2"),
            ("tracestate", ""),
            ("tracestate", "rojo=1,congo=2"),
            ("tracestate", " baz=3"),
        ])
        .as_deref(),
        Some("foo=1,bar=2,rojo=1,congo=2,baz=3")
    );
    assert_eq!(state(&[("tracestate", "")]), None);
    // Without a traceparent, tracestate means nothing.
    let inc = Incoming::extract(&headers(&[("tracestate", "foo=1")]));
    assert_eq!(inc.tracestate(), None);
    // With B3 of another trace winning, the traceparent's tracestate is not this trace's.
    let inc = Incoming::extract(&headers(&[
        ("b3", &format!("{TRACE}-{SPAN}-1")),
        ("traceparent", &tp),
        ("tracestate", "foo=1"),
    ]));
    assert_eq!(inc.context().copied(), ctx(TRACE, SPAN, None));
    assert_eq!(inc.tracestate(), None);
}

#[test]
fn b3_single_vectors() {
    let cases: &[(&str, Option<SpanContext>, Option<bool>, bool)] = &[
        (
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
            ctx(TRACE, SPAN, Some(PARENT)),
            Some(true),
            false,
        ),
        (
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
            ctx(TRACE, SPAN, None),
            Some(true),
            false,
        ),
        (
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d",
            ctx(TRACE, SPAN, None),
            Some(true),
            true,
        ),
        (
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0",
            ctx(TRACE, SPAN, None),
            Some(false),
            false,
        ),
        (
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1",
            ctx(TRACE, SPAN, None),
            None,
            false,
        ),
        (
            "e457b5a2e4d86bd1-e457b5a2e4d86bd1-1",
            ctx(SPAN, SPAN, None),
            Some(true),
            false,
        ),
        ("0", None, Some(false), false),
        ("1", None, Some(true), false),
        ("d", None, Some(true), true),
        // Malformed: ignored whole.
        ("2", None, None, false),
        ("-", None, None, false),
        (
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-x",
            None,
            None,
            false,
        ),
        (
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-",
            None,
            None,
            false,
        ),
        (
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b9",
            None,
            None,
            false,
        ),
        (
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-1",
            None,
            None,
            false,
        ),
        (
            "80f198ee56343ba864fe8b2a57d3-e457b5a2e4d86bd1-1",
            None,
            None,
            false,
        ),
        (
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd-1",
            None,
            None,
            false,
        ),
        ("80f198ee56343ba864fe8b2a57d3eff7", None, None, false),
        (
            "00000000000000000000000000000000-e457b5a2e4d86bd1-1",
            None,
            None,
            false,
        ),
    ];
    for (b3, want_ctx, want_sampled, want_debug) in cases {
        let inc = Incoming::extract(&headers(&[("b3", b3)]));
        assert_eq!(&inc.context().copied(), want_ctx, "b3: {b3:?}: context");
        assert_eq!(&inc.sampled(), want_sampled, "b3: {b3:?}: sampled");
        assert_eq!(&inc.debug(), want_debug, "b3: {b3:?}: debug");
    }
}

#[test]
fn b3_multi_vectors() {
    type Case<'a> = (
        &'a str,
        &'a [(&'a str, &'a str)],
        Option<SpanContext>,
        Option<bool>,
        bool,
    );
    let cases: &[Case] = &[
        (
            "the specification's example",
            &[
                ("x-b3-traceid", TRACE),
                ("x-b3-parentspanid", PARENT),
                ("x-b3-spanid", SPAN),
                ("x-b3-sampled", "1"),
            ],
            ctx(TRACE, SPAN, Some(PARENT)),
            Some(true),
            false,
        ),
        (
            "a 64-bit trace id, deferred",
            &[("x-b3-traceid", SPAN), ("x-b3-spanid", SPAN)],
            ctx(SPAN, SPAN, None),
            None,
            false,
        ),
        (
            "upper-case hex (read leniently, as Envoy does)",
            &[
                ("x-b3-traceid", "80F198EE56343BA864FE8B2A57D3EFF7"),
                ("x-b3-spanid", SPAN),
            ],
            ctx(TRACE, SPAN, None),
            None,
            false,
        ),
        (
            "the old true and false",
            &[
                ("x-b3-traceid", TRACE),
                ("x-b3-spanid", SPAN),
                ("x-b3-sampled", "false"),
            ],
            ctx(TRACE, SPAN, None),
            Some(false),
            false,
        ),
        (
            "true alone",
            &[("x-b3-sampled", "true")],
            None,
            Some(true),
            false,
        ),
        (
            "a deny decision alone",
            &[("x-b3-sampled", "0")],
            None,
            Some(false),
            false,
        ),
        (
            "debug",
            &[
                ("x-b3-traceid", TRACE),
                ("x-b3-spanid", SPAN),
                ("x-b3-flags", "1"),
            ],
            ctx(TRACE, SPAN, None),
            Some(true),
            true,
        ),
        (
            "debug alone",
            &[("x-b3-flags", "1")],
            None,
            Some(true),
            true,
        ),
        (
            "other flags are ignored",
            &[("x-b3-flags", "2"), ("x-b3-sampled", "0")],
            None,
            Some(false),
            false,
        ),
        (
            "an empty sampled header is malformed",
            &[("x-b3-sampled", "")],
            None,
            None,
            false,
        ),
        (
            "a nonsense parent voids the ids, not the decision",
            &[
                ("x-b3-traceid", TRACE),
                ("x-b3-spanid", SPAN),
                ("x-b3-parentspanid", "-"),
                ("x-b3-sampled", "1"),
            ],
            None,
            Some(true),
            false,
        ),
        (
            "a trace id without a span id",
            &[("x-b3-traceid", TRACE)],
            None,
            None,
            false,
        ),
        (
            "a span id without a trace id",
            &[("x-b3-spanid", SPAN)],
            None,
            None,
            false,
        ),
        (
            "a 20-digit trace id",
            &[
                ("x-b3-traceid", "80f198ee56343ba864fe"),
                ("x-b3-spanid", SPAN),
            ],
            None,
            None,
            false,
        ),
        (
            "the first value wins",
            &[
                ("x-b3-traceid", TRACE),
                ("x-b3-traceid", SPAN),
                ("x-b3-spanid", SPAN),
            ],
            ctx(TRACE, SPAN, None),
            None,
            false,
        ),
        (
            "b3 comes before x-b3-*",
            &[
                ("b3", "e457b5a2e4d86bd1-05e3ac9a4f6e3b90-0"),
                ("x-b3-traceid", TRACE),
                ("x-b3-spanid", SPAN),
                ("x-b3-sampled", "1"),
            ],
            ctx(SPAN, PARENT, None),
            Some(false),
            false,
        ),
        (
            "B3 comes before W3C",
            &[
                ("x-b3-traceid", TRACE),
                ("x-b3-spanid", SPAN),
                (
                    "traceparent",
                    "00-12345678901234567890123456789012-1234567890123456-01",
                ),
            ],
            ctx(TRACE, SPAN, None),
            None,
            false,
        ),
        (
            "malformed B3 falls back to W3C",
            &[
                ("x-b3-traceid", "nonsense"),
                ("x-b3-spanid", SPAN),
                (
                    "traceparent",
                    "00-12345678901234567890123456789012-1234567890123456-01",
                ),
            ],
            ctx(W3C_TRACE, W3C_SPAN, None),
            Some(true),
            false,
        ),
        (
            "W3C's flag decides for B3 ids of the same trace",
            &[
                ("x-b3-traceid", W3C_TRACE),
                ("x-b3-spanid", SPAN),
                (
                    "traceparent",
                    "00-12345678901234567890123456789012-1234567890123456-01",
                ),
            ],
            ctx(W3C_TRACE, SPAN, None),
            Some(true),
            false,
        ),
    ];
    for (name, pairs, want_ctx, want_sampled, want_debug) in cases {
        let inc = Incoming::extract(&headers(pairs));
        assert_eq!(&inc.context().copied(), want_ctx, "{name}: context");
        assert_eq!(&inc.sampled(), want_sampled, "{name}: sampled");
        assert_eq!(&inc.debug(), want_debug, "{name}: debug");
    }
}

#[test]
fn request_id_and_force_trace_are_read() {
    let inc = Incoming::extract(&headers(&[
        ("x-request-id", "6f1a5f3c-0e8b-4f5e-9f3a-1d2c3b4a5e6f"),
        ("x-envoy-force-trace", "true"),
    ]));
    assert_eq!(
        inc.request_id().map(|v| v.as_bytes()),
        Some(&b"6f1a5f3c-0e8b-4f5e-9f3a-1d2c3b4a5e6f"[..])
    );
    assert!(inc.force_trace());
    assert_eq!(inc.context(), None);
}

#[test]
fn the_sampling_decision() {
    let never = Sampler::from_percent(0.0).expect("0");
    let always = Sampler::from_percent(100.0).expect("100");
    let with = |pairs: &[(&str, &str)]| Incoming::extract(&headers(pairs));
    let cases: &[(&str, Sampler, Incoming, bool)] = &[
        ("nothing at 0 %", never, with(&[]), false),
        ("nothing at 100 %", always, with(&[]), true),
        (
            "the caller accepted",
            never,
            with(&[("x-b3-sampled", "1")]),
            true,
        ),
        (
            "the caller denied",
            always,
            with(&[("x-b3-sampled", "0")]),
            false,
        ),
        ("the caller debugs", never, with(&[("b3", "d")]), true),
        (
            "W3C's flag",
            never,
            with(&[(
                "traceparent",
                "00-12345678901234567890123456789012-1234567890123456-01",
            )]),
            true,
        ),
        ("forced", never, with(&[("x-envoy-force-trace", "1")]), true),
        (
            "the caller's deny wins over force",
            always,
            with(&[("x-envoy-force-trace", "1"), ("x-b3-sampled", "0")]),
            false,
        ),
    ];
    for (name, sampler, inc, want) in cases {
        assert_eq!(sampler.decide(inc), *want, "{name}");
    }
}

#[test]
fn sampling_percentages() {
    for bad in [-0.01, 100.01, f64::NAN, f64::INFINITY] {
        assert!(Sampler::from_percent(bad).is_err(), "{bad}");
    }
    assert_eq!(
        Sampler::from_percent(150.0).expect_err("150").to_string(),
        "trace sampling percentage 150 is not between 0 and 100"
    );
    assert_eq!(Sampler::from_percent(1.0), Ok(Sampler::ISTIO_DEFAULT));
    assert_eq!(Sampler::from_percent(0.014).expect("0.01").percent(), 0.01);

    // With an x-request-id the draw is its first 32 bits, so every hop decides alike.
    let low = Sampler::from_percent(0.01).expect("0.01");
    let rid = |id: &str| Incoming::extract(&headers(&[("x-request-id", id)]));
    assert!(low.decide(&rid("00000000-0000-4000-8000-000000000000")));
    // 0xffffffff % 10000 = 7295.
    let high = rid("ffffffff-0000-4000-8000-000000000000");
    assert!(!Sampler::from_percent(72.95).expect("72.95").decide(&high));
    assert!(Sampler::from_percent(72.96).expect("72.96").decide(&high));

    // Without one, a random draw: about 1 in 100 at Istio's default (seeded, so the count is fixed).
    fastrand::seed(22);
    let n = (0..100_000)
        .filter(|_| Sampler::ISTIO_DEFAULT.decide(&Incoming::default()))
        .count();
    assert!((800..1200).contains(&n), "{n} of 100000 sampled at 1 %");
}

#[test]
fn a_root_hop_writes_a_new_trace() {
    let inc = Incoming::extract(&HeaderMap::new());
    let hop = inc.child(span(SPAN), true);
    assert!(!hop.trace_id().is_64bit(), "new trace ids are 128-bit");
    assert_eq!(hop.parent_id(), None);
    let mut h = HeaderMap::new();
    inject(&hop, &mut h);
    let t = hop.trace_id().to_string();
    assert_eq!(
        get(&h, "traceparent"),
        Some(format!("00-{t}-{SPAN}-01").as_str())
    );
    assert_eq!(get(&h, "x-b3-traceid"), Some(t.as_str()));
    assert_eq!(get(&h, "x-b3-spanid"), Some(SPAN));
    assert_eq!(get(&h, "x-b3-sampled"), Some("1"));
    for absent in ["x-b3-parentspanid", "x-b3-flags", "b3", "tracestate"] {
        assert_eq!(get(&h, absent), None, "{absent}");
    }
}

#[test]
fn a_child_hop_replaces_the_callers_headers() {
    let mut h = headers(&[
        ("x-b3-traceid", SPAN),
        ("x-b3-spanid", PARENT),
        ("x-b3-parentspanid", "0000000000000001"),
        ("x-b3-sampled", "0"),
        (
            "traceparent",
            &format!("00-0000000000000000{SPAN}-{PARENT}-00"),
        ),
        ("tracestate", "congo=t61rcWkgMzE"),
        ("x-request-id", "kept"),
    ]);
    let inc = Incoming::extract(&h);
    let me = span("a2fb4a1d1a96d312");
    let hop = inc.child(me, Sampler::ISTIO_DEFAULT.decide(&inc));
    assert!(!hop.sampled(), "the caller's deny stands");
    inject(&hop, &mut h);
    // A 64-bit trace stays 64-bit in B3 and is padded in W3C.
    assert_eq!(get(&h, "x-b3-traceid"), Some(SPAN));
    assert_eq!(get(&h, "x-b3-spanid"), Some("a2fb4a1d1a96d312"));
    assert_eq!(get(&h, "x-b3-parentspanid"), Some(PARENT));
    assert_eq!(get(&h, "x-b3-sampled"), Some("0"));
    assert_eq!(
        get(&h, "traceparent"),
        Some(format!("00-0000000000000000{SPAN}-a2fb4a1d1a96d312-00").as_str())
    );
    assert_eq!(get(&h, "tracestate"), Some("congo=t61rcWkgMzE"));
    assert_eq!(get(&h, "x-request-id"), Some("kept"));

    // The next hop reads what this one wrote.
    let next = Incoming::extract(&h);
    assert_eq!(
        next.context().copied(),
        ctx(SPAN, "a2fb4a1d1a96d312", Some(PARENT))
    );
    assert_eq!(next.sampled(), Some(false));
}

#[test]
fn debug_and_the_b3_single_header_are_passed_on() {
    let mut h = headers(&[
        ("b3", &format!("{TRACE}-{SPAN}-d-{PARENT}")),
        ("x-b3-sampled", "0"),
    ]);
    let inc = Incoming::extract(&h);
    let hop = inc.child(span("a2fb4a1d1a96d312"), false);
    assert!(hop.sampled() && hop.debug());
    inject(&hop, &mut h);
    assert_eq!(
        get(&h, "b3"),
        Some(format!("{TRACE}-a2fb4a1d1a96d312-d-{SPAN}").as_str())
    );
    assert_eq!(get(&h, "x-b3-flags"), Some("1"));
    assert_eq!(get(&h, "x-b3-sampled"), None, "debug implies accept (B3)");
    assert_eq!(
        Incoming::extract(&h).context().copied(),
        ctx(TRACE, "a2fb4a1d1a96d312", Some(SPAN))
    );

    // A root hop with a b3 decision only: no parent in the b3 it writes.
    let mut h = headers(&[("b3", "1")]);
    let hop = Incoming::extract(&h).child(span(SPAN), true);
    inject(&hop, &mut h);
    assert_eq!(
        get(&h, "b3"),
        Some(format!("{}-{SPAN}-1", hop.trace_id()).as_str())
    );
    // A 64-bit trace.
    let mut h = headers(&[("b3", &format!("{SPAN}-{PARENT}"))]);
    let hop = Incoming::extract(&h).child(span(TRACE.get(..16).expect("16")), false);
    inject(&hop, &mut h);
    assert_eq!(
        get(&h, "b3"),
        Some(format!("{SPAN}-80f198ee56343ba8-0-{PARENT}").as_str())
    );
}

#[test]
fn every_value_is_cut_from_one_buffer() {
    let hop = Incoming::extract(&headers(&[("b3", &format!("{TRACE}-{SPAN}-1"))]))
        .child(span(PARENT), true);
    let mut cuts = 0;
    let mut buffer = Bytes::new();
    let mut h = HeaderMap::new();
    inject_with(
        &hop,
        &mut h,
        |b| {
            cuts += 1;
            buffer = Bytes::copy_from_slice(b);
            buffer.clone()
        },
        |b| HeaderValue::from_maybe_shared(b).ok(),
    );
    assert_eq!(cuts, 1);
    let range = buffer.as_ptr_range();
    for name in [
        "traceparent",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "b3",
    ] {
        let v = h.get(name).expect(name).as_bytes();
        assert!(
            range.contains(&v.as_ptr()),
            "{name} is a slice of the one buffer"
        );
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    // Every header this module reads, with values cut from a seeded random stream of visible bytes.
    fastrand::seed(7);
    let names = [
        "traceparent",
        "tracestate",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
        "x-b3-flags",
        "x-request-id",
    ];
    let alphabet = b"0123456789abcdefABCDEF-d ,=\t.x";
    for _ in 0..20_000 {
        let mut h = HeaderMap::new();
        for name in names {
            if fastrand::bool() {
                let len = fastrand::usize(0..80);
                let v: Vec<u8> = (0..len)
                    .map(|_| alphabet[fastrand::usize(..alphabet.len())])
                    .collect();
                if let Ok(v) = HeaderValue::from_bytes(&v) {
                    h.append(name, v);
                }
            }
        }
        let inc = Incoming::extract(&h);
        let hop = inc.child(SpanId::random(), Sampler::ISTIO_DEFAULT.decide(&inc));
        inject(&hop, &mut h);
        let again = Incoming::extract(&h);
        assert_eq!(
            again.context().map(|c| c.span_id),
            Some(hop.span_id()),
            "{h:?}"
        );
    }
}

#[test]
fn what_is_still_right_stays_and_repeats_are_rewritten_once() {
    let all = |h: &HeaderMap, name: &str| -> Vec<String> {
        h.get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ascii").to_string())
            .collect()
    };
    let mut h = headers(&[
        ("x-b3-traceid", TRACE),
        ("x-b3-traceid", SPAN),
        ("x-b3-spanid", SPAN),
        ("x-b3-sampled", "true"),
        ("x-b3-flags", "0"),
        ("traceparent", &format!("00-{TRACE}-{PARENT}-01")),
        ("tracestate", "a=1"),
        ("tracestate", "b=2"),
    ]);
    let inc = Incoming::extract(&h);
    let hop = inc.child(
        span("a2fb4a1d1a96d312"),
        Sampler::ISTIO_DEFAULT.decide(&inc),
    );
    inject(&hop, &mut h);
    assert_eq!(
        all(&h, "x-b3-traceid"),
        [TRACE],
        "the first value wins, written once"
    );
    assert_eq!(all(&h, "x-b3-sampled"), ["1"], "true is written as 1");
    assert_eq!(all(&h, "x-b3-flags"), Vec::<String>::new());
    assert_eq!(all(&h, "tracestate"), ["a=1,b=2"]);
    assert_eq!(all(&h, "x-b3-parentspanid"), [SPAN]);

    // A tracestate without a valid traceparent is not passed on.
    let mut h = headers(&[
        ("traceparent", "00-nonsense"),
        ("tracestate", "a=1"),
        ("x-b3-parentspanid", PARENT),
    ]);
    let hop = Incoming::extract(&h).child(span(SPAN), true);
    inject(&hop, &mut h);
    assert_eq!(get(&h, "tracestate"), None);
    assert_eq!(
        get(&h, "x-b3-parentspanid"),
        None,
        "a new trace has no parent"
    );
}
