//! Spans for the tests: a client and server pair with fixed ids, and spans carrying Istio's whole tag set.

use crate::id::{SpanId, TraceId};
use crate::propagation::Incoming;
use crate::span::{Annotation, Endpoint, Kind, ProxyTags, RequestTags, Span, Str};

pub const TRACE: &str = "80f198ee56343ba864fe8b2a57d3eff7";

/// A client span and the server span it caused, in one trace.
pub fn span_pair() -> (Span, Span) {
    let trace_id = TraceId::parse_hex(TRACE.as_bytes()).expect("trace");
    let client = Span {
        trace_id,
        id: SpanId::parse_hex(b"e457b5a2e4d86bd1").expect("id"),
        parent_id: SpanId::parse_hex(b"05e3ac9a4f6e3b90"),
        name: Str::from("reviews.default.svc.cluster.local:9080/*"),
        kind: Some(Kind::Client),
        timestamp: 1_700_000_000_000_000,
        duration: 2500,
        local_endpoint: Some(Endpoint {
            service_name: Some(Str::from("productpage.default")),
            ipv4: Some([127, 0, 1, 1].into()),
            ipv6: None,
            port: Some(9080),
        }),
        remote_endpoint: Some(Endpoint {
            ipv6: Some(std::net::Ipv6Addr::LOCALHOST),
            port: Some(9080),
            ..Endpoint::default()
        }),
        annotations: vec![Annotation {
            timestamp: 1_700_000_000_000_100,
            value: Str::from("retry"),
        }],
        tags: vec![
            (Str::from("http.method"), Str::from("GET")),
            (Str::from("http.status_code"), Str::from("200")),
            (
                Str::from("upstream_cluster"),
                Str::from("outbound|9080||reviews.default.svc.cluster.local"),
            ),
        ],
        debug: false,
        shared: false,
    };
    let server = Span {
        id: SpanId::parse_hex(b"a2fb4a1d1a96d312").expect("id"),
        parent_id: Some(client.id),
        kind: Some(Kind::Server),
        timestamp: client.timestamp + 500,
        duration: 1500,
        local_endpoint: Some(Endpoint {
            service_name: Some(Str::from("reviews.default")),
            ipv4: Some([127, 0, 1, 2].into()),
            ipv6: None,
            port: Some(9080),
        }),
        remote_endpoint: None,
        annotations: vec![],
        tags: vec![
            (Str::from("http.status_code"), Str::from("503")),
            (Str::from("error"), Str::from("true")),
        ],
        debug: true,
        ..client.clone()
    };
    (client, server)
}

/// The tags a Bookinfo sidecar sets.
pub fn proxy_tags(service: &str) -> ProxyTags {
    ProxyTags {
        node_id: Str::copy(&format!(
            "sidecar~127.0.1.1~{service}-v1-7b9f8c.default~default.svc.cluster.local"
        )),
        zone: Str::from(""),
        mesh_id: Str::from("cluster.local"),
        namespace: Str::from("default"),
        canonical_service: Str::copy(service),
        canonical_revision: Str::from("v1"),
    }
}

/// A server span of service `reviews` with Istio's whole tag set, its request id and URL made from
/// `n`, in a new trace.
pub fn istio_span(n: u64) -> Span {
    let ctx = Incoming::default().child(SpanId::random(), true);
    let mut span = Span::new(
        &ctx,
        Kind::Server,
        "reviews.default.svc.cluster.local:9080/*",
        1_700_000_000_000_000 + n,
    );
    span.duration = 1000 + n % 5000;
    span.local_endpoint = Some(Endpoint::new(
        Some(Str::from("reviews.default")),
        Some("127.0.1.2:9080".parse().expect("addr")),
    ));
    span.remote_endpoint = Some(Endpoint::new(
        None,
        Some("127.0.1.1:45678".parse().expect("addr")),
    ));
    let url = format!("http://reviews:9080/reviews/{n}");
    let rid = format!("{:08x}-0e8b-4f5e-9f3a-1d2c3b4a5e6f", n);
    span.istio_tags(
        &proxy_tags("reviews"),
        &RequestTags {
            method: "GET",
            url: &url,
            protocol: "HTTP/1.1",
            status: if n.is_multiple_of(10) { 503 } else { 200 },
            response_flags: "-",
            upstream_cluster: "inbound|9080||",
            peer_address: Some("127.0.1.1:45678".parse().expect("addr")),
            request_size: 0,
            response_size: 379,
            request_id: Some(&rid),
            user_agent: Some("python-requests/2.31.0"),
        },
    );
    span
}
