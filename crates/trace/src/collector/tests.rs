//! The collector's endpoints over loopback: good input stored and queryable in Zipkin's shape, bad
//! input a 400 that names the problem, too much a 413.

use super::*;
use crate::store::Bounds;
use crate::test_util::{istio_span, span_pair, TRACE};
use http_body_util::Full;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

struct Served {
    zipkin: SocketAddr,
    otlp: SocketAddr,
    small: SocketAddr,
    store: Arc<TraceStore>,
    stats: Arc<CollectorStats>,
    _stop: oneshot::Sender<()>,
}

/// Both ports on 127.0.0.1, and a third Zipkin router whose body bound is 1 KiB.
async fn serve_all() -> Served {
    let store = Arc::new(TraceStore::new(Bounds::default()));
    let any = Some("127.0.0.1:0".parse().expect("addr"));
    let c = Collector::bind(any, any, store.clone())
        .await
        .expect("bind");
    let (zipkin, otlp) = (
        c.zipkin_addr().expect("zipkin"),
        c.otlp_addr().expect("otlp"),
    );
    let stats = c.stats().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let (small_stop_tx, small_stop) = watch::channel(false);
    tokio::spawn(async move {
        let _ = stopped.await;
        let _ = small_stop_tx.send(true);
    });
    tokio::spawn(c.serve(async {
        // Stopped with the test: the sender is dropped.
        std::future::pending::<()>().await
    }));
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let small = l.local_addr().expect("addr");
    let router = zipkin_router_with(store.clone(), Arc::default(), 1024);
    tokio::spawn(super::serve(l, router, small_stop));
    Served {
        zipkin,
        otlp,
        small,
        store,
        stats,
        _stop: stop,
    }
}

struct Answer {
    status: StatusCode,
    content_type: String,
    body: Bytes,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

async fn call(
    method: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(body.into())).expect("request"))
        .await
        .expect("an answer");
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().expect("ascii").to_string())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Answer {
        status,
        content_type,
        body,
    }
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    call("GET", addr, path, &[], Bytes::new()).await
}

#[tokio::test]
async fn zipkin_spans_are_stored_and_queried_in_zipkins_shape() {
    let s = serve_all().await;
    let (client, server) = span_pair();
    let a = call(
        "POST",
        s.zipkin,
        "/api/v2/spans",
        &[("content-type", "application/json")],
        zipkin::encode(&[client.clone(), server.clone()]),
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
    assert_eq!((s.stats.requests(), s.stats.spans()), (1, 2));

    let a = get(s.zipkin, "/api/v2/services").await;
    assert_eq!(
        a.json(),
        serde_json::json!(["productpage.default", "reviews.default"])
    );
    let a = get(s.zipkin, &format!("/api/v2/trace/{TRACE}")).await;
    assert_eq!(a.content_type, "application/json");
    assert_eq!(zipkin::decode(&a.body).expect("spans"), [client, server]);
    let a = get(s.zipkin, "/api/v2/spans?serviceName=reviews.default").await;
    assert_eq!(
        a.json(),
        serde_json::json!(["reviews.default.svc.cluster.local:9080/*"])
    );
    let a = get(
        s.zipkin,
        "/api/v2/remoteServices?serviceName=productpage.default",
    )
    .await;
    assert_eq!(a.json(), serde_json::json!([]));

    // The span pair is from 2023: a lookback from then.
    let window = "endTs=1700000000100&lookback=3600000";
    let a = get(
        s.zipkin,
        &format!("/api/v2/traces?serviceName=reviews.default&{window}"),
    )
    .await;
    let traces = a.json();
    assert_eq!(traces.as_array().map(Vec::len), Some(1));
    assert_eq!(traces[0].as_array().map(Vec::len), Some(2));
    assert_eq!(traces[0][0]["traceId"], TRACE);
    let a = get(
        s.zipkin,
        &format!("/api/v2/traces?errorsOnly=true&{window}"),
    )
    .await;
    assert_eq!(
        a.json().as_array().map(Vec::len),
        Some(1),
        "the server span is a 503"
    );
    let a = get(
        s.zipkin,
        &format!("/api/v2/traces?minDuration=3000&{window}"),
    )
    .await;
    assert_eq!(a.json(), serde_json::json!([]));
    // Without a window, the default is the last day: nothing from 2023.
    assert_eq!(
        get(s.zipkin, "/api/v2/traces").await.json(),
        serde_json::json!([])
    );
}

#[tokio::test]
async fn otlp_protobuf_and_json_are_collected_on_both_ports() {
    let s = serve_all().await;
    let spans = vec![istio_span(1), istio_span(2)];
    for port in [s.otlp, s.zipkin] {
        let a = call(
            "POST",
            port,
            "/v1/traces",
            &[("content-type", "application/x-protobuf")],
            otlp::encode_to_vec(&spans),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        assert_eq!(a.content_type, "application/x-protobuf");
        assert!(a.body.is_empty(), "an empty ExportTraceServiceResponse");
    }
    let a = call(
        "POST",
        s.otlp,
        "/v1/traces",
        &[("content-type", "application/json")],
        r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174"}]}]}]}"#,
    )
    .await;
    assert_eq!((a.status, a.text()), (StatusCode::OK, "{}".to_string()));
    // Zipkin JSON on the OTLP port too.
    let a = call(
        "POST",
        s.otlp,
        "/api/v2/spans",
        &[],
        zipkin::encode(&[istio_span(3)]),
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    assert_eq!(s.store.stats().spans, 2 * 2 + 1 + 1);
    let got = s.store.trace(spans[0].trace_id).expect("stored");
    assert_eq!(got.len(), 2, "posted to both ports: stored twice");
    // The query API is not on the OTLP port.
    assert_eq!(
        get(s.otlp, "/api/v2/services").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn bad_input_is_a_400_that_names_the_problem() {
    let s = serve_all().await;
    let bad_trace = r#"[{"traceId":"xyz","id":"1"}]"#;
    let a = call("POST", s.zipkin, "/api/v2/spans", &[], bad_trace).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        a.text(),
        "span 0: traceId: \"xyz\" is not 16 or 32 hex digits (or is zero)"
    );
    assert_eq!(s.stats.rejected(), 1);
    assert_eq!(
        s.store.stats().spans,
        0,
        "nothing of a bad request is stored"
    );

    // OTLP: a google.rpc.Status in the request's encoding.
    let mut req = otlp::encode(&[istio_span(1)]);
    req.resource_spans[0].scope_spans[0].spans[0].span_id = vec![1, 2, 3];
    let a = call(
        "POST",
        s.otlp,
        "/v1/traces",
        &[("content-type", "application/x-protobuf")],
        req.encode_to_vec(),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let status = pb::RpcStatus::decode(&a.body[..]).expect("a google.rpc.Status");
    assert_eq!(status.code, 3);
    assert_eq!(
        status.message,
        "resourceSpans[0].scopeSpans[0].spans[0].spanId: must be 8 bytes, not 3"
    );
    let a = call(
        "POST",
        s.otlp,
        "/v1/traces",
        &[("content-type", "application/json")],
        "{",
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        a.json()["message"],
        "invalid JSON: EOF while parsing an object at line 1 column 1"
    );

    let cases: &[(&str, StatusCode, &str)] = &[
        (
            "/api/v2/trace/xyz",
            StatusCode::BAD_REQUEST,
            "traceId \"xyz\" is not 16 or 32 hex digits (or is zero)",
        ),
        (
            "/api/v2/trace/0000000000000001",
            StatusCode::NOT_FOUND,
            "trace 0000000000000001 not found",
        ),
        (
            "/api/v2/traces?minDuration=1ms",
            StatusCode::BAD_REQUEST,
            "minDuration: \"1ms\" is not a whole number of microseconds",
        ),
        (
            "/api/v2/traces?limit=0",
            StatusCode::BAD_REQUEST,
            "limit: must be greater than 0",
        ),
        (
            "/api/v2/traces?errorsOnly=yes",
            StatusCode::BAD_REQUEST,
            "errorsOnly: \"yes\" is not true or false",
        ),
        (
            "/api/v2/traces?serviceName=%zz",
            StatusCode::BAD_REQUEST,
            "\"%zz\": bad percent-encoding",
        ),
        (
            "/api/v2/spans",
            StatusCode::BAD_REQUEST,
            "serviceName is required",
        ),
    ];
    for (path, status, message) in cases {
        let a = get(s.zipkin, path).await;
        assert_eq!((a.status, a.text().as_str()), (*status, *message), "{path}");
    }
}

#[tokio::test]
async fn unsupported_encodings_are_a_415() {
    let s = serve_all().await;
    let body = zipkin::encode(&[istio_span(1)]);
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            "/api/v2/spans",
            &[("content-encoding", "gzip")],
            "content-encoding gzip is not supported; send the body uncompressed",
        ),
        (
            "/api/v2/spans",
            &[("content-type", "application/x-protobuf")],
            "Zipkin's application/x-protobuf encoding is not supported; send v2 JSON (content-type: application/json)",
        ),
    ];
    for (path, headers, message) in cases {
        let a = call("POST", s.zipkin, path, headers, body.clone()).await;
        assert_eq!(
            (a.status, a.text().as_str()),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, *message)
        );
    }
    let a = call(
        "POST",
        s.otlp,
        "/v1/traces",
        &[("content-type", "text/plain")],
        body,
    )
    .await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let status = pb::RpcStatus::decode(&a.body[..]).expect("a google.rpc.Status");
    assert_eq!(
        status.message,
        "content-type \"text/plain\" is not OTLP/HTTP; send application/x-protobuf or application/json"
    );
}

#[tokio::test]
async fn an_oversized_body_is_a_413() {
    let s = serve_all().await;
    // Declared too large: refused before it is read.
    let a = call("POST", s.small, "/api/v2/spans", &[], vec![b' '; 1025]).await;
    assert_eq!(
        (a.status, a.text().as_str()),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body is larger than 1024 bytes"
        )
    );
    // Chunked, so only reading it shows it is too large.
    let mut conn = TcpStream::connect(s.small).await.expect("connect");
    let chunk = vec![b' '; 2048];
    let mut req =
        b"POST /api/v2/spans HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n800\r\n"
            .to_vec();
    req.extend_from_slice(&chunk);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    conn.write_all(&req).await.expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await.expect("read");
        assert!(
            n > 0,
            "closed before an answer: {:?}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&answer);
    assert!(head.starts_with("HTTP/1.1 413 "), "{head}");
    // And the full-size router takes a body the small one refused.
    let a = call("POST", s.zipkin, "/api/v2/spans", &[], vec![b' '; 1025]).await;
    assert_eq!(
        a.status,
        StatusCode::BAD_REQUEST,
        "read, and not a list of spans"
    );
}

#[test]
fn listen_flags() {
    assert_eq!("off".parse(), Ok(Listen::Off));
    assert_eq!("OFF".parse(), Ok(Listen::Off));
    let at: Listen = "127.0.0.1:9411".parse().expect("an address");
    assert_eq!(at.addr(), Some("127.0.0.1:9411".parse().expect("addr")));
    assert_eq!(
        "localhost:9411".parse::<Listen>(),
        Err("\"localhost:9411\" is not an address (ip:port) or off".to_string())
    );
}

#[test]
fn query_parameters() {
    let now = 1_700_000_000_000;
    let q = parse_query(
        "serviceName=Product+Page&spanName=all&annotationQuery=error+and+http.status_code%3D503&minDuration=10&maxDuration=20&endTs=5&lookback=4&limit=3&errorsOnly=true&unknown=1",
        now,
    )
    .expect("parses");
    assert_eq!(
        q,
        Query {
            service_name: Some("Product Page".into()),
            remote_service_name: None,
            span_name: None,
            annotation_query: vec![
                ("error".into(), None),
                ("http.status_code".into(), Some("503".into())),
            ],
            min_duration: Some(10),
            max_duration: Some(20),
            end_ts: 5,
            lookback: 4,
            limit: 3,
            errors_only: true,
        }
    );
    let d = parse_query("", now).expect("defaults");
    assert_eq!((d.end_ts, d.lookback, d.limit), (now, 86_400_000, 10));
    assert_eq!(
        parse_query("minDuration=5&maxDuration=4", now).expect_err("min > max"),
        "minDuration (5) is greater than maxDuration (4)"
    );
}
