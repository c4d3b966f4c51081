//! One Bookinfo page, one trace: with the demo's sampling at 100 % and MeshConfig's tracing provider
//! pointed at a collector this test runs (a Zipkin endpoint, then an OTLP/HTTP one), every page's
//! spans arrive there as a single trace whose parent-child links follow the calls: productpage →
//! details, productpage → reviews, and reviews → ratings when v2 or v3 served the reviews, each hop a
//! client span from the caller's sidecar and a server span, its child, from the callee's.
//!
//! The Zipkin spans are read as JSON here, with nothing of Weft's; the OTLP ones with weft-trace's
//! protobuf messages (opentelemetry-proto's field numbers), not its span model.

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::BodyExt;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weft_e2e::{eventually, reviews_version_of, Mesh};
use weft_trace::otlp::pb;

/// The most pages a run sends to see reviews served both with ratings (v2, v3) and without (v1).
const MAX_PAGES: usize = 30;

/// One received request: its path, content type and body.
type Post = (String, String, Bytes);

/// A trace collector on loopback that keeps every POST, answering as Zipkin (202) and OTLP/HTTP
/// (200, an empty `ExportTraceServiceResponse`) do.
struct Collector {
    addr: SocketAddr,
    posts: Arc<Mutex<Vec<Post>>>,
}

impl Collector {
    async fn start(ip: &str) -> Collector {
        let listener = tokio::net::TcpListener::bind((ip, 0))
            .await
            .expect("collector binds");
        let addr = listener.local_addr().expect("addr");
        let posts = Arc::new(Mutex::new(Vec::new()));
        let kept = posts.clone();
        tokio::spawn(async move {
            while let Ok((io, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let kept = kept.clone();
                            async move {
                                let path = req.uri().path().to_string();
                                let ctype = req
                                    .headers()
                                    .get(http::header::CONTENT_TYPE)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default()
                                    .to_string();
                                let body = req.into_body().collect().await?.to_bytes();
                                let status = match path.as_str() {
                                    "/api/v2/spans" => 202,
                                    "/v1/traces" => 200,
                                    _ => 404,
                                };
                                kept.lock().expect("posts").push((path, ctype, body));
                                let mut r =
                                    hyper::Response::new(http_body_util::Empty::<Bytes>::new());
                                *r.status_mut() =
                                    hyper::StatusCode::from_u16(status).expect("status");
                                Ok::<_, hyper::Error>(r)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
                        .await;
                });
            }
        });
        Collector { addr, posts }
    }

    /// Forgets what was received so far.
    fn clear(&self) {
        self.posts.lock().expect("posts").clear();
    }

    /// Every span received, read from Zipkin JSON or OTLP protobuf by its path.
    fn spans(&self) -> anyhow::Result<Vec<Hop>> {
        let posts = self.posts.lock().expect("posts").clone();
        let mut out = Vec::new();
        for (path, ctype, body) in posts {
            match path.as_str() {
                "/api/v2/spans" => {
                    if ctype != "application/json" {
                        bail!("Zipkin spans sent as {ctype:?}");
                    }
                    out.extend(from_zipkin(&body)?);
                }
                "/v1/traces" => {
                    if ctype != "application/x-protobuf" {
                        bail!("OTLP spans sent as {ctype:?}");
                    }
                    out.extend(from_otlp(&body)?);
                }
                other => bail!("a POST to {other}"),
            }
        }
        Ok(out)
    }
}

/// A span as the checks read it.
#[derive(Debug, Clone)]
struct Hop {
    trace: String,
    id: String,
    parent: Option<String>,
    /// `CLIENT` or `SERVER`.
    kind: String,
    /// The local service (`productpage.default`).
    service: String,
    tags: BTreeMap<String, String>,
}

impl Hop {
    fn tag(&self, k: &str) -> &str {
        self.tags.get(k).map(String::as_str).unwrap_or("")
    }
}

/// Zipkin v2 JSON (a list of spans), read field by field.
fn from_zipkin(body: &[u8]) -> anyhow::Result<Vec<Hop>> {
    let list: Vec<serde_json::Value> =
        serde_json::from_slice(body).context("Zipkin body is not a JSON list")?;
    list.into_iter()
        .map(|s| {
            let str_of = |k: &str| s[k].as_str().map(str::to_string);
            Ok(Hop {
                trace: str_of("traceId").with_context(|| format!("no traceId: {s}"))?,
                id: str_of("id").with_context(|| format!("no id: {s}"))?,
                parent: str_of("parentId"),
                kind: str_of("kind").unwrap_or_default(),
                service: s["localEndpoint"]["serviceName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                tags: s["tags"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect(),
            })
        })
        .collect()
}

/// An OTLP `ExportTraceServiceRequest`, read message by message.
fn from_otlp(body: &[u8]) -> anyhow::Result<Vec<Hop>> {
    let req = pb::ExportTraceServiceRequest::decode(body).context("not an OTLP export")?;
    let text = |kvs: &[pb::KeyValue]| -> BTreeMap<String, String> {
        kvs.iter()
            .filter_map(
                |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(pb::any_value::Value::StringValue(s)) => Some((kv.key.clone(), s.clone())),
                    _ => None,
                },
            )
            .collect()
    };
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let resource = text(rs.resource.as_ref().map_or(&[][..], |r| &r.attributes));
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for s in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
            if s.trace_id.len() != 16 || s.span_id.len() != 8 {
                bail!("ids of 16 and 8 bytes: {s:?}");
            }
            let kind = match pb::SpanKind::try_from(s.kind) {
                Ok(pb::SpanKind::Server) => "SERVER",
                Ok(pb::SpanKind::Client) => "CLIENT",
                _ => "",
            };
            out.push(Hop {
                trace: hex(&s.trace_id),
                id: hex(&s.span_id),
                parent: (!s.parent_span_id.is_empty()).then(|| hex(&s.parent_span_id)),
                kind: kind.to_string(),
                service: service.clone(),
                tags: text(&s.attributes),
            });
        }
    }
    Ok(out)
}

/// The spans of one page's trace, checked against the calls the page made; returns the reviews
/// workload the trace went through (`reviews-v2`).
fn check_trace(spans: &[Hop]) -> anyhow::Result<String> {
    let ids: BTreeSet<&str> = spans.iter().map(|s| s.id.as_str()).collect();
    if ids.len() != spans.len() {
        bail!("span ids repeat");
    }
    let children = |of: &Hop| -> Vec<&Hop> {
        spans
            .iter()
            .filter(|s| s.parent.as_deref() == Some(of.id.as_str()))
            .collect()
    };
    // A hop from `caller`'s sidecar to `callee`: one client span, child of `parent`, whose one child
    // is the callee's server span. Returns the server span.
    let hop = |parent: &Hop, caller: &str, callee: &str| -> anyhow::Result<&Hop> {
        let clients: Vec<&Hop> = children(parent)
            .into_iter()
            .filter(|c| c.tag("upstream_cluster").contains(&format!("|{callee}.")))
            .collect();
        let [client] = clients[..] else {
            bail!(
                "{} client spans to {callee} under {}",
                clients.len(),
                parent.id
            );
        };
        if client.kind != "CLIENT" || !client.service.starts_with(&format!("{caller}.")) {
            bail!("the call to {callee} is not a client span of {caller}: {client:?}");
        }
        let servers = children(client);
        let [server] = servers[..] else {
            bail!("{} spans under the client span to {callee}", servers.len());
        };
        if server.kind != "SERVER"
            || !server.service.starts_with(&format!("{callee}."))
            || server.tag("upstream_cluster") != "inbound|9080||"
        {
            bail!("{callee}'s side is not its server span: {server:?}");
        }
        Ok(server)
    };
    let roots: Vec<&Hop> = spans.iter().filter(|s| s.parent.is_none()).collect();
    let [root] = roots[..] else {
        bail!("{} root spans", roots.len());
    };
    if root.kind != "SERVER" || !root.service.starts_with("productpage.") {
        bail!("the root is not productpage's server span: {root:?}");
    }
    let details = hop(root, "productpage", "details")?;
    let reviews = hop(root, "productpage", "reviews")?;
    if children(root).len() != 2 || !children(details).is_empty() {
        bail!("productpage makes two calls, details none");
    }
    // Which reviews: its sidecar's node id, `sidecar~IP~reviews-v2.default~...`.
    let node = reviews.tag("node_id");
    let workload = node
        .split('~')
        .nth(2)
        .and_then(|w| w.split('.').next())
        .with_context(|| format!("reviews' node_id {node:?}"))?
        .to_string();
    let expected = if workload == "reviews-v1" {
        if !children(reviews).is_empty() {
            bail!("reviews-v1 calls nothing");
        }
        5
    } else {
        let ratings = hop(reviews, "reviews", "ratings")?;
        if children(reviews).len() != 1 || !children(ratings).is_empty() {
            bail!("{workload} calls ratings once, ratings nothing");
        }
        7
    };
    if spans.len() != expected {
        bail!("{} spans, {expected} expected", spans.len());
    }
    for s in spans {
        if s.tag("http.status_code") != "200"
            || s.tag("component") != "proxy"
            || s.tag("response_flags") != "-"
        {
            bail!("tags of a successful hop: {s:?}");
        }
    }
    Ok(workload)
}

/// The demo's MeshConfig, its tracing sent to `provider` (an `extensionProviders` entry).
fn mesh_config(provider: &str) -> String {
    format!(
        "accessLogFile: /dev/stdout\n\
         defaultConfig:\n  tracing:\n    sampling: 100\n\
         extensionProviders:\n- {provider}\n\
         defaultProviders:\n  tracing: [test]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bookinfo_page_is_one_trace_by_zipkin_and_by_otlp() {
    let started = Instant::now();
    let mesh = Mesh::start(28).await.expect("mesh starts");
    mesh.all_synced(Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));
    let collector = Collector::start("127.28.0.3").await;
    let (ip, port) = (collector.addr.ip(), collector.addr.port());

    for (name, provider) in [
        (
            "Zipkin",
            format!("{{name: test, zipkin: {{service: {ip}, port: {port}}}}}"),
        ),
        (
            "OTLP/HTTP",
            format!(
                "{{name: test, opentelemetry: {{service: {ip}, port: {port}, http: {{path: /v1/traces}}}}}}"
            ),
        ),
    ] {
        // Every sidecar's connection managers now trace to the test's collector.
        let before = mesh.sent_nonces("LDS").await.expect("syncz");
        mesh.write_config("mesh.yaml", &mesh_config(&provider))
            .expect("write mesh.yaml");
        mesh.pushed("LDS", &before, Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:#}\n{}", mesh.logs()));
        collector.clear();

        // Pages until reviews came once with ratings (v2 or v3) and once without (v1).
        let mut served = Vec::new();
        while served.len() < MAX_PAGES {
            let (status, page) = mesh.productpage(None).await.expect("page");
            assert_eq!(status, 200, "{page}");
            served.push(reviews_version_of(&page).expect("reviews named"));
            if served.iter().any(|v| v == "reviews-v1") && served.iter().any(|v| v != "reviews-v1")
            {
                break;
            }
        }

        // As many traces as pages, each whole; the same reviews workloads as the pages named.
        let traces = eventually(
            &format!("{} pages' traces by {name}", served.len()),
            Duration::from_secs(20),
            || async {
                let mut by_trace: BTreeMap<String, Vec<Hop>> = BTreeMap::new();
                for s in collector.spans()? {
                    by_trace.entry(s.trace.clone()).or_default().push(s);
                }
                if by_trace.len() != served.len() {
                    bail!("{} traces: {by_trace:#?}", by_trace.len());
                }
                let mut seen = Vec::new();
                for (id, spans) in &by_trace {
                    let w = check_trace(spans)
                        .with_context(|| format!("trace {id}: {spans:#?}"))?;
                    seen.push(w);
                }
                Ok(seen)
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));
        let mut want = served.clone();
        want.sort();
        let mut got = traces;
        got.sort();
        assert_eq!(got, want, "{name}: the reviews of each trace, as the pages said");
        println!("{name}: {} pages, one whole trace each: {got:?}", served.len());
    }
    println!("took {} ms", started.elapsed().as_millis());
}
