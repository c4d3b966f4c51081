use super::metrics::{Histogram, MAX_SERIES};
use super::*;
use weft_http::Observer as _;

fn identity(workload: &str, app: &str, version: &str) -> ProxyIdentity {
    ProxyIdentity {
        workload: workload.into(),
        namespace: "default".into(),
        labels: [("app", app), ("version", version)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ip: "127.0.1.10".into(),
        ..Default::default()
    }
}

fn telemetry() -> Arc<Telemetry> {
    Arc::new(Telemetry::new(
        &identity("productpage-v1", "productpage", "v1"),
        peer::DEFAULT_CLUSTER,
    ))
}

/// The peer reviews-v2, as its metadata header makes it.
fn reviews(t: &Telemetry) -> Arc<Peer> {
    let own = OwnMetadata::new(&identity("reviews-v2", "reviews", "v2"), "east");
    let mut h = HeaderMap::new();
    own.insert_into(&mut h);
    t.take_peer(&mut h)
}

fn reviews_service() -> Arc<Service> {
    Arc::new(
        Service::of_cluster("outbound|9080|v2|reviews.default.svc.cluster.local").expect("service"),
    )
}

#[test]
fn services_come_from_cluster_names_and_authorities() {
    let s = reviews_service();
    assert_eq!(
        (s.host.as_str(), s.name.as_str(), s.namespace.as_str()),
        ("reviews.default.svc.cluster.local", "reviews", "default")
    );
    assert!(Service::of_cluster("inbound|9080||").is_none());
    assert!(Service::of_cluster("outbound|9080||").is_none());
    let se = Service::of_cluster("outbound|443||api.example.com").expect("service entry");
    assert_eq!(
        (se.name.as_str(), se.namespace.as_str()),
        ("api.example.com", "unknown")
    );

    let t = telemetry();
    let short = t.inbound_service(Some("reviews:9080"));
    assert_eq!(
        (
            short.host.as_str(),
            short.name.as_str(),
            short.namespace.as_str()
        ),
        ("reviews.default.svc.cluster.local", "reviews", "default")
    );
    // Found again by its bytes: the same service.
    assert!(Arc::ptr_eq(
        &short,
        &t.inbound_service(Some("reviews:9080"))
    ));
    let long = t.inbound_service(Some("ratings.prod.svc.cluster.local"));
    assert_eq!(
        (long.name.as_str(), long.namespace.as_str()),
        ("ratings", "prod")
    );
    assert_eq!(t.inbound_service(None).host, "unknown");
}

#[test]
fn histograms_use_envoys_buckets() {
    let h = Histogram::default();
    // 0.4 ms, 0.5 ms (on a bound: in it), 0.6 ms, 2 hours (over every bound).
    for us in [400, 500, 600, 7_200_000_000] {
        h.observe_milli(us);
    }
    let text = {
        let mut reg = prometheus_client::registry::Registry::default();
        #[derive(Debug)]
        struct One(Histogram);
        impl prometheus_client::collector::Collector for One {
            fn encode(
                &self,
                mut e: prometheus_client::encoding::DescriptorEncoder<'_>,
            ) -> Result<(), std::fmt::Error> {
                let m = e.encode_descriptor(
                    "h",
                    "h",
                    None,
                    prometheus_client::metrics::MetricType::Histogram,
                )?;
                self.0.encode_into(m)
            }
        }
        reg.register_collector(Box::new(One(h)));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).expect("encode");
        out
    };
    assert!(text.contains("h_bucket{le=\"0.5\"} 2\n"), "{text}");
    assert!(text.contains("h_bucket{le=\"1.0\"} 3\n"), "{text}");
    assert!(text.contains("h_bucket{le=\"3600000.0\"} 3\n"), "{text}");
    assert!(text.contains("h_bucket{le=\"+Inf\"} 4\n"), "{text}");
    assert!(text.contains("h_count 4\n"), "{text}");
}

#[test]
fn grpc_messages_are_counted_across_frames() {
    let mut f = GrpcFrames::default();
    // Two messages of 3 and 0 bytes, then a third split inside its prefix and its body.
    let mut bytes = vec![0, 0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0, 0, 0, 0];
    bytes.extend_from_slice(&[0, 0, 2, b'x', b'y']);
    for piece in bytes.chunks(4) {
        f.feed(piece);
    }
    assert_eq!((f.messages, f.remaining, f.prefix_len), (3, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_request_is_recorded_with_istios_labels_when_its_body_ends() {
    let t = telemetry();
    let mut p = Pending::new(
        t.clone(),
        Reporter::Source,
        t.unknown_peer(),
        t.unknown_service(),
        Protocol::Http,
    );
    p.set_peer(reviews(&t));
    p.set_service(reviews_service());
    p.request_body(5, None);
    p.response(200, Flags::default(), &HeaderMap::new());
    tokio::time::advance(std::time::Duration::from_millis(7)).await;
    let mut body = Box::new(p);
    body.data(&Bytes::from_static(b"0123456789"));
    body.end(true);
    let text = t.encode();
    let labels = concat!(
        "reporter=\"source\",source_workload=\"productpage-v1\",",
        "source_canonical_service=\"productpage\",source_canonical_revision=\"v1\",",
        "source_workload_namespace=\"default\",source_principal=\"unknown\",",
        "source_app=\"productpage\",source_version=\"v1\",source_cluster=\"Kubernetes\",",
        "destination_workload=\"reviews-v2\",destination_workload_namespace=\"default\",",
        "destination_principal=\"unknown\",destination_app=\"reviews\",",
        "destination_version=\"v2\",destination_service=\"reviews.default.svc.cluster.local\",",
        "destination_canonical_service=\"reviews\",destination_canonical_revision=\"v2\",",
        "destination_service_name=\"reviews\",destination_service_namespace=\"default\",",
        "destination_cluster=\"east\",request_protocol=\"http\",response_code=\"200\",",
        "grpc_response_status=\"\",response_flags=\"-\",",
        "connection_security_policy=\"unknown\"",
    );
    for line in [
        format!("istio_requests_total{{{labels}}} 1\n"),
        format!("istio_request_duration_milliseconds_sum{{{labels}}} 7.0\n"),
        format!("istio_request_duration_milliseconds_bucket{{le=\"5.0\",{labels}}} 0\n"),
        format!("istio_request_duration_milliseconds_bucket{{le=\"10.0\",{labels}}} 1\n"),
        format!("istio_request_bytes_sum{{{labels}}} 5.0\n"),
        format!("istio_response_bytes_sum{{{labels}}} 10.0\n"),
    ] {
        assert!(text.contains(&line), "{line} in\n{text}");
    }
    // gRPC's message counters only for gRPC.
    assert!(!text.contains("istio_request_messages_total{"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn grpc_status_and_messages_and_a_client_gone_mid_body() {
    let t = telemetry();
    let mut p = Pending::new(
        t.clone(),
        Reporter::Destination,
        t.unknown_peer(),
        reviews_service(),
        Protocol::Grpc,
    );
    p.request_body(6, Some(&Bytes::from_static(&[0, 0, 0, 0, 1, b'q'])));
    p.response(200, Flags::default(), &HeaderMap::new());
    let mut o = Box::new(p);
    o.data(&Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("14"));
    o.trailers(&trailers);
    o.end(true);

    // A second call whose client went away before the body's end: `DC`.
    let mut p = Pending::new(
        t.clone(),
        Reporter::Destination,
        t.unknown_peer(),
        reviews_service(),
        Protocol::Http,
    );
    p.response(200, Flags::default(), &HeaderMap::new());
    Box::new(p).end(false);

    let text = t.encode();
    let grpc = "request_protocol=\"grpc\",response_code=\"200\",grpc_response_status=\"14\"";
    assert!(
        text.lines()
            .any(|l| l.starts_with("istio_request_messages_total{")
                && l.contains(grpc)
                && l.ends_with(" 1")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("istio_response_messages_total{")
                && l.contains(grpc)
                && l.ends_with(" 2")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("istio_requests_total{")
            && l.contains("response_flags=\"DC\"")
            && l.contains("connection_security_policy=\"none\"")),
        "{text}"
    );
}

/// Over mutual TLS the server's report says `mutual_tls` and both principals, the client's says the
/// principals and `unknown`; equal principals on two connections are one label set, and a plaintext
/// request beside them is its own with `none` and `unknown`.
#[test]
fn principals_and_the_security_policy_come_from_the_connection() {
    let t = telemetry();
    let client = "spiffe://cluster.local/ns/default/sa/productpage";
    let server = "spiffe://cluster.local/ns/default/sa/reviews";
    // Each connection reads its own copy of the certificate's name: interned, they are one.
    let first = t.security(true, Some(&String::from(client)), Some(server));
    let second = t.security(true, Some(&String::from(client)), Some(server));
    assert_eq!(first, second, "interned per identity");
    let ended = |reporter, security: metrics::Security| {
        let mut p = Pending::new(
            t.clone(),
            reporter,
            t.unknown_peer(),
            reviews_service(),
            Protocol::Http,
        );
        p.set_security(security);
        p.response(200, Flags::default(), &HeaderMap::new());
        p.record();
    };
    ended(Reporter::Destination, first);
    ended(Reporter::Destination, second);
    ended(Reporter::Destination, metrics::Security::default());
    ended(
        Reporter::Source,
        t.security(true, Some(server), Some(client)),
    );
    let text = t.encode();
    let requests = lines(&text, "istio_requests_total");
    let with = |needles: &[&str]| {
        requests
            .iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .copied()
            .collect::<Vec<_>>()
    };
    let mtls = with(&[
        "reporter=\"destination\"",
        &format!("source_principal=\"{client}\""),
        &format!("destination_principal=\"{server}\""),
        "connection_security_policy=\"mutual_tls\"",
    ]);
    assert_eq!(mtls.len(), 1, "{text}");
    assert!(
        mtls[0].ends_with(" 2"),
        "two connections, one series: {text}"
    );
    let plain = with(&[
        "reporter=\"destination\"",
        "source_principal=\"unknown\"",
        "destination_principal=\"unknown\"",
        "connection_security_policy=\"none\"",
    ]);
    assert_eq!(plain.len(), 1, "{text}");
    let source = with(&[
        "reporter=\"source\"",
        &format!("source_principal=\"{client}\""),
        &format!("destination_principal=\"{server}\""),
        "connection_security_policy=\"unknown\"",
    ]);
    assert_eq!(source.len(), 1, "{text}");
}

#[test]
fn label_sets_are_bounded_and_the_rest_counted() {
    let t = telemetry();
    let peer = reviews(&t);
    let service = reviews_service();
    let key = |code: u16, flags: u16| metrics::Key {
        reporter: Reporter::Source,
        peer: metrics::PeerRef(peer.clone()),
        security: Default::default(),
        service: service.clone(),
        protocol: Protocol::Http,
        code,
        grpc_status: None,
        flags: if flags == 0 {
            Flags::default()
        } else {
            Flags::UF
        },
    };
    let o = metrics::Observation::default();
    // Codes with and without a flag, until the bound.
    let mut n = 0;
    'fill: for code in 0..u16::MAX {
        for flags in 0..=1 {
            if n == MAX_SERIES {
                break 'fill;
            }
            t.metrics.record(key(code, flags), &o);
            n += 1;
        }
    }
    assert_eq!(t.metrics.series_count(), MAX_SERIES);
    // A known label set still counts; new ones are counted as overflow.
    t.metrics.record(key(0, 0), &o);
    t.metrics.record(key(60_000, 1), &o);
    t.metrics.record(key(60_000, 1), &o);
    assert_eq!(
        (t.metrics.series_count(), t.metrics.overflow()),
        (MAX_SERIES, 2)
    );
    assert!(t
        .encode()
        .contains("weft_telemetry_series_overflow_total 2\n"));
}

/// A request on a listener with `stats` (None: without overrides), answered `code`, recorded.
fn record_with(
    t: &Arc<Telemetry>,
    stats: Option<&Arc<overrides::Overrides>>,
    user: Option<&str>,
    code: u16,
) {
    let mut b = http::Request::builder().uri("/r");
    if let Some(u) = user {
        b = b.header("x-user", u);
    }
    let parts = b.body(()).expect("request").into_parts().0;
    let mut p = Pending::new(
        t.clone(),
        Reporter::Destination,
        t.unknown_peer(),
        reviews_service(),
        Protocol::Http,
    );
    if let Some(o) = stats {
        p.stats(overrides::Captured::new(o.clone(), &parts, "reviews:9080"));
    }
    p.request_body(3, None);
    p.response(code, Flags::default(), &HeaderMap::new());
    p.record();
}

/// The lines of `family` (`istio_requests_total`) in `text`.
fn lines<'a>(text: &'a str, family: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .collect()
}

#[test]
fn overrides_remove_add_and_drop_labels_and_equal_series_add_up() {
    let t = telemetry();
    let o = overrides::of_json(
        r#"{"metrics": [
            {"dimensions": {"user": "request.headers['x-user']"}},
            {"name": "requests_total", "tags_to_remove": ["response_code", "request_protocol"]},
            {"name": "request_bytes", "drop": true}
        ]}"#,
    );
    record_with(&t, Some(&o), Some("jason"), 200);
    record_with(&t, Some(&o), Some("jason"), 404);
    record_with(&t, Some(&o), Some("jason"), 200);
    record_with(&t, Some(&o), None, 200);
    let text = t.encode();

    // Requests: `response_code` and `request_protocol` gone, `user` added after Istio's labels; the
    // 200s and the 404 of jason are one series now.
    let requests = lines(&text, "istio_requests_total");
    assert_eq!(requests.len(), 2, "{text}");
    for l in &requests {
        assert!(
            !l.contains("response_code=") && !l.contains("request_protocol="),
            "{l}"
        );
        assert!(
            l.contains("connection_security_policy=\"none\",user="),
            "{l}"
        );
    }
    assert!(
        requests.iter().any(|l| l.ends_with(",user=\"jason\"} 3")),
        "{text}"
    );
    assert!(
        requests.iter().any(|l| l.ends_with(",user=\"unknown\"} 1")),
        "{text}"
    );

    // Durations keep every label and add `user`: one series per code.
    let counts = lines(&text, "istio_request_duration_milliseconds_count");
    assert_eq!(counts.len(), 3, "{text}");
    assert!(counts
        .iter()
        .any(|l| l.contains("response_code=\"200\"") && l.ends_with(",user=\"jason\"} 2")));
    assert!(counts
        .iter()
        .any(|l| l.contains("response_code=\"404\"") && l.ends_with(",user=\"jason\"} 1")));

    // Request sizes are dropped; response sizes are not.
    assert!(
        lines(&text, "istio_request_bytes_count").is_empty(),
        "{text}"
    );
    assert_eq!(
        lines(&text, "istio_response_bytes_count").len(),
        3,
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn a_series_with_overrides_that_leave_its_labels_adds_up_with_the_standard_one() {
    let t = telemetry();
    // Only another metric changes: the request counts of both listeners share a label set.
    let o = overrides::of_json(r#"{"metrics": [{"name": "request_bytes", "drop": true}]}"#);
    record_with(&t, None, None, 200);
    record_with(&t, Some(&o), None, 200);
    record_with(&t, Some(&o), None, 200);
    let text = t.encode();
    let requests = lines(&text, "istio_requests_total");
    assert_eq!(requests.len(), 1, "{text}");
    assert!(requests[0].contains("response_code=\"200\"") && requests[0].ends_with("} 3"));
    let sizes = lines(&text, "istio_request_bytes_count");
    assert_eq!(sizes.len(), 1, "{text}");
    assert!(
        sizes[0].ends_with("} 1"),
        "only the request without overrides: {text}"
    );

    // A listener whose overrides touch no HTTP metric records as one without.
    let tcp_only =
        overrides::of_json(r#"{"metrics": [{"name": "tcp_sent_bytes_total", "drop": true}]}"#);
    assert!(!tcp_only.touches_http());
}
