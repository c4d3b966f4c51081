//! External authorization end to end, Istio's ext-authz task on the demo's mesh: an HTTP authorizer
//! (in this process, on loopback) that allows requests carrying `x-ext-authz: allow`, registered with a
//! ServiceEntry and named in MeshConfig's `extensionProviders`; a CUSTOM AuthorizationPolicy on one
//! path of details sends what it matches to the authorizer, and leaves every other path and service
//! alone.

use anyhow::bail;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use weft_cli::demo::{Workload, WORKLOADS};
use weft_e2e::{eventually, Mesh};

/// This test's mesh network (`127.34.x.x`), which no other test uses.
const NET: u8 = 34;
const SETTLE: Duration = Duration::from_secs(20);
/// The authorizer's answer to a request without the header (the text of Istio's sample authorizer).
const DENIED: &str = "denied by ext_authz for not found header `x-ext-authz: allow` in the request";

fn workload(name: &str) -> &'static Workload {
    WORKLOADS
        .iter()
        .find(|w| w.name() == name)
        .unwrap_or_else(|| panic!("no workload {name}"))
}

/// An HTTP authorizer on `ip`: 200 for `x-ext-authz: allow`, else 403 with [`DENIED`]; it counts the
/// checks it answers.
async fn authorizer(ip: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let checks = Arc::new(AtomicUsize::new(0));
    let counted = checks.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let counted = counted.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        counted.fetch_add(1, Ordering::SeqCst);
                        let allow = req
                            .headers()
                            .get("x-ext-authz")
                            .is_some_and(|v| v.as_bytes() == b"allow");
                        async move {
                            let r = if allow {
                                http::Response::builder()
                                    .status(200)
                                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                            } else {
                                http::Response::builder()
                                    .status(403)
                                    .header("x-ext-authz-check-result", "denied")
                                    .body(http_body_util::Full::new(bytes::Bytes::from(DENIED)))
                            };
                            Ok::<_, std::convert::Infallible>(r.expect("response"))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, checks)
}

/// A request to `service` through the sidecar of `from` (its outbound port): the status and body.
async fn call_from(
    mesh: &Mesh,
    from: &str,
    service: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String)> {
    let outbound = format!("{}:15001", mesh.layout.ip(workload(from)));
    let host = format!("{service}:9080");
    weft_e2e::raw_http1(
        &outbound,
        "GET",
        &format!("http://{host}{path}"),
        &host,
        headers,
    )
    .await
}

/// Writes `yaml` into the test's directory and applies it with `weft apply -f`.
fn apply(mesh: &Mesh, name: &str, yaml: &str) {
    let path = mesh.log_dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).expect("write");
    let out = mesh.weft(&["apply", "-f", path.to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "apply {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_policy_asks_the_external_authorizer() {
    let mesh = Mesh::start(NET).await.expect("mesh starts");
    mesh.all_synced(SETTLE)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));
    let (authz, checks) = authorizer(&format!("127.{NET}.0.3")).await;

    // The authorizer in the registry, and as the provider `sample-ext-authz-http` of MeshConfig (the
    // demo's settings kept).
    apply(
        &mesh,
        "ext-authz-service",
        &format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ext-authz, namespace: default}}
spec:
  hosts: [ext-authz.default.svc.cluster.local]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 8000, name: http, protocol: HTTP}}]
  endpoints: [{{address: {}, ports: {{http: {}}}}}]
",
            authz.ip(),
            authz.port()
        ),
    );
    let mesh_yaml = format!(
        "{}extensionProviders:
- name: sample-ext-authz-http
  envoyExtAuthzHttp:
    service: ext-authz.default.svc.cluster.local
    port: 8000
    includeRequestHeadersInCheck: [x-ext-authz]
",
        mesh.layout.mesh_config()
    );
    mesh.write_config("mesh.yaml", &mesh_yaml)
        .expect("mesh.yaml");
    // CUSTOM on details' /details/1 only, as the task's policy on httpbin's /headers.
    apply(
        &mesh,
        "ext-authz",
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz, namespace: default}
spec:
  selector: {matchLabels: {app: details}}
  action: CUSTOM
  provider: {name: sample-ext-authz-http}
  rules: [{to: [{operation: {paths: [/details/1]}}]}]
",
    );

    // Without the header: the authorizer's 403 and body.
    eventually("a request without the header denied", SETTLE, || async {
        let (status, body) =
            call_from(&mesh, "productpage-v1", "details", "/details/1", &[]).await?;
        if (status, body.as_str()) != (403, DENIED) {
            bail!("{status} {body:?}");
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));
    assert!(checks.load(Ordering::SeqCst) > 0);
    // With it: allowed, and the application answers.
    let (status, body) = call_from(
        &mesh,
        "productpage-v1",
        "details",
        "/details/1",
        &[("x-ext-authz", "allow")],
    )
    .await
    .expect("allowed");
    assert_eq!(status, 200, "{body}");
    assert_ne!(body, DENIED);

    // Other paths of details and other services never reach the authorizer.
    let before = checks.load(Ordering::SeqCst);
    for (service, path) in [
        ("details", "/details/0"),
        ("reviews", "/reviews/1"),
        ("ratings", "/ratings/1"),
    ] {
        let (status, body) = call_from(&mesh, "productpage-v1", service, path, &[])
            .await
            .unwrap_or_else(|e| panic!("{service}{path}: {e:#}"));
        assert_eq!(status, 200, "{service}{path}: {body}");
    }
    assert_eq!(checks.load(Ordering::SeqCst), before);
    // Bookinfo's page still works (productpage reads details' /details/0).
    let (status, _) = mesh.productpage(None).await.expect("page");
    assert_eq!(status, 200);

    // `weft analyze` warns of a CUSTOM policy whose provider MeshConfig does not have.
    let bad = mesh.log_dir.join("bad-provider.yaml");
    std::fs::write(
        &bad,
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: unknown-provider, namespace: default}
spec:
  action: CUSTOM
  provider: {name: nope}
  rules: [{}]
",
    )
    .expect("write");
    let mesh_file = mesh.layout.config_dir.join("mesh.yaml");
    let out = mesh.weft(&[
        "analyze",
        bad.to_str().expect("utf-8"),
        mesh_file.to_str().expect("utf-8"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("AuthorizationPolicy default/unknown-provider: spec.provider.name: warning: no extensionProviders entry is named \"nope\""),
        "{text}"
    );
}
