//! Security end to end, on the demo's mesh (mutual TLS on by default, weftd's CA): Istio's security
//! tasks, with Istio's YAML applied as a user would (`weft apply -f`), and the sidecars' certificates
//! read by openssl as any TLS client sees them.
//!
//! - the sidecars hold `spiffe://cluster.local/ns/default/sa/<account>` certificates from weftd's CA
//!   (`openssl s_client`, `weft proxy-config secret`);
//! - a mesh-wide STRICT PeerAuthentication closes plaintext while Bookinfo keeps working over mTLS;
//! - an AuthorizationPolicy lets only productpage's identity GET reviews;
//! - a DENY on `/admin` holds for every spelling of the path;
//! - RequestAuthentication and a `requestPrincipals` rule: no token 403, a bad one 401, a good one 200.

use anyhow::bail;
use base64::Engine as _;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;
use weft_cli::demo::{Workload, WORKLOADS};
use weft_e2e::{eventually, Mesh};

const SETTLE: Duration = Duration::from_secs(15);

fn workload(name: &str) -> &'static Workload {
    WORKLOADS
        .iter()
        .find(|w| w.name() == name)
        .unwrap_or_else(|| panic!("no workload {name}"))
}

/// One HTTP/1.1 request on a new connection to `addr` (a sidecar's outbound port with an absolute URI,
/// or an inbound port), with `headers`; the status, or an error when the connection fails or closes
/// without one.
async fn request(
    addr: &str,
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<u16> {
    weft_e2e::raw_http1(addr, method, target, host, headers)
        .await
        .map(|(status, _)| status)
}

/// A request to `service` sent through the sidecar of workload `from` (its outbound port, as the
/// application's `http_proxy` does): the call carries `from`'s identity over mutual TLS.
async fn call_from(
    mesh: &Mesh,
    from: &str,
    method: &str,
    service: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<u16> {
    let outbound = format!("{}:15001", mesh.layout.ip(workload(from)));
    let host = format!("{service}:9080");
    request(
        &outbound,
        method,
        &format!("http://{host}{path}"),
        &host,
        headers,
    )
    .await
}

/// Writes `yaml` into the test's directory and applies it with `weft apply -f`.
fn apply(mesh: &Mesh, name: &str, yaml: &str) -> PathBuf {
    let path = mesh.log_dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).expect("write policy");
    let out = mesh.weft(&["apply", "-f", path.to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "apply {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

fn delete(mesh: &Mesh, path: &std::path::Path) {
    let out = mesh.weft(&["delete", "-f", path.to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "delete: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until `check` gives `want`, panicking with the mesh's logs if it never does.
async fn expect_status<F, Fut>(mesh: &Mesh, what: &str, want: u16, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u16>>,
{
    eventually(what, SETTLE, || async {
        let got = check().await?;
        if got != want {
            bail!("{got}, want {want}");
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));
}

/// What `openssl s_client` sees of the certificate a sidecar's inbound port presents: the TLS 1.3
/// server sends it before it asks for the client's, so a client without one still reads it.
fn presented_certificate(addr: &str) -> String {
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect", addr, "-tls1_3", "-showcerts"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl runs (installed by .ci/run)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let pem_start = text.find("-----BEGIN CERTIFICATE-----");
    let pem_end = text.find("-----END CERTIFICATE-----");
    let (Some(a), Some(b)) = (pem_start, pem_end) else {
        panic!(
            "no certificate from {addr}:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    x509_text(&text[a..b + "-----END CERTIFICATE-----".len()])
}

/// One `GET path` to `addr` with `openssl s_client` over mutual TLS: a client certificate for
/// `spiffe://cluster.local/ns/default/sa/outsider`, made by openssl and signed with the mesh root's key
/// (from weftd's state directory), the sidecar verified against the root. Returns what openssl printed
/// (the handshake, the verification, the server's SAN and the HTTP answer).
fn openssl_mtls_request(mesh: &Mesh, addr: &str, path: &str) -> String {
    let dir = mesh.log_dir.join("openssl");
    std::fs::create_dir_all(&dir).expect("dir");
    let state = mesh.layout.state_dir();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "client.key",
        "-subj",
        "/O=outsider",
        "-addext",
        "subjectAltName=critical,URI:spiffe://cluster.local/ns/default/sa/outsider",
        "-addext",
        "extendedKeyUsage=clientAuth",
        "-out",
        "client.csr",
    ]);
    let root = state.join("root-cert.pem");
    let key = state.join("ca-key.pem");
    run(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        root.to_str().expect("utf-8"),
        "-CAkey",
        key.to_str().expect("utf-8"),
        "-copy_extensions",
        "copy",
        "-days",
        "1",
        "-out",
        "client.pem",
    ]);
    let mut child = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            addr,
            "-tls1_3",
            "-cert",
            "client.pem",
            "-key",
            "client.key",
            "-CAfile",
            root.to_str().expect("utf-8"),
            "-verify_return_error",
            "-showcerts",
            "-ign_eof",
        ])
        .current_dir(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("s_client");
    let request = format!("GET {path} HTTP/1.1\r\nhost: reviews:9080\r\nconnection: close\r\n\r\n");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), request.as_bytes())
        .expect("request");
    let out = child.wait_with_output().expect("s_client ends");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    // The server's certificate, as x509 reads it (its SAN).
    if let Some(a) = text.find("-----BEGIN CERTIFICATE-----") {
        if let Some(b) = text[a..].find("-----END CERTIFICATE-----") {
            let pem = text[a..a + b + "-----END CERTIFICATE-----".len()].to_string();
            text.push_str(&x509_text(&pem));
        }
    }
    text
}

/// `openssl x509 -noout -text` of one PEM certificate.
fn x509_text(pem: &str) -> String {
    let mut x509 = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl x509");
    std::io::Write::write_all(&mut x509.stdin.take().expect("stdin"), pem.as_bytes())
        .expect("pem in");
    let out = x509.wait_with_output().expect("x509 out");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_speak_mutual_tls_and_strict_closes_plaintext() {
    let mesh = Mesh::start(31).await.expect("mesh starts");
    mesh.all_synced(SETTLE).await.expect("synced");
    let reviews = format!("{}:9080", mesh.layout.ip(workload("reviews-v1")));

    // The sidecar presents its workload certificate from weftd's CA, for TLS 1.3 clients.
    let cert = eventually("a certificate on the inbound port", SETTLE, || async {
        let c = presented_certificate(&reviews);
        if !c.contains("URI:spiffe://cluster.local/ns/default/sa/bookinfo-reviews") {
            bail!("{c}");
        }
        Ok(c)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));
    assert!(cert.contains("TLS Web Client Authentication"), "{cert}");
    assert!(cert.contains("Issuer: "), "{cert}");

    // istioctl's secret table, from the proxy's admin port.
    let out = mesh.weft(&["proxy-config", "secret", "reviews-v1"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains("spiffe://cluster.local/ns/default/sa/bookinfo-reviews"),
        "{table}"
    );
    assert!(table.contains("ROOTCA"), "{table}");

    // PERMISSIVE (the default): plaintext reaches reviews.
    assert_eq!(
        request(&reviews, "GET", "/reviews/0", "reviews:9080", &[])
            .await
            .expect("plaintext in PERMISSIVE"),
        200
    );

    // Mesh-wide STRICT, productpage kept PERMISSIVE for the test's own (plaintext) client, as Istio's
    // task keeps the ingress path open.
    apply(
        &mesh,
        "strict",
        "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: productpage, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  mtls: {mode: PERMISSIVE}
",
    );
    eventually("plaintext refused by reviews", SETTLE, || async {
        match request(&reviews, "GET", "/reviews/0", "reviews:9080", &[]).await {
            Ok(s) => bail!("plaintext still answered {s}"),
            Err(_) => Ok(()),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));
    // A TLS client outside weft gets through STRICT with a certificate from the mesh root: openssl
    // negotiates TLS 1.3, verifies the sidecar's chain to the root, and is served over it.
    let answer = openssl_mtls_request(&mesh, &reviews, "/reviews/0");
    for want in [
        "TLSv1.3",
        "Verify return code: 0 (ok)",
        "HTTP/1.1 200",
        "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
    ] {
        assert!(answer.contains(want), "{want} in:\n{answer}");
    }
    // Sidecar to sidecar is mutual TLS: the page still has its reviews and details.
    for _ in 0..10 {
        mesh.reviews_version(None)
            .await
            .unwrap_or_else(|e| panic!("Bookinfo over STRICT mTLS: {e:#}\n{}", mesh.logs()));
    }
    let (status, page) = mesh.productpage(None).await.expect("page");
    assert_eq!(status, 200);
    assert!(!page.contains("Error fetching product details"), "{page}");

    // And Istio's metrics say so: details' sidecar reports the calls it served as mutual TLS from
    // productpage's identity.
    let stats = format!("{}:15090", mesh.layout.ip(workload("details-v1")));
    let (_, text) = weft_cli::http::get(&stats, "/stats/prometheus")
        .await
        .expect("details' stats");
    let served = text
        .lines()
        .filter(|l| {
            l.starts_with("istio_requests_total{") && l.contains("reporter=\"destination\"")
        })
        .collect::<Vec<_>>();
    assert!(
        served.iter().any(|l| l.contains(
            "source_principal=\"spiffe://cluster.local/ns/default/sa/bookinfo-productpage\""
        ) && l.contains("connection_security_policy=\"mutual_tls\"")),
        "{served:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_policies_and_request_authentication() {
    let mesh = Mesh::start(32).await.expect("mesh starts");
    mesh.all_synced(SETTLE).await.expect("synced");

    // Without a policy, any workload may call reviews.
    assert_eq!(
        call_from(&mesh, "ratings-v1", "GET", "reviews", "/reviews/0", &[])
            .await
            .expect("ratings' GET before the policy"),
        200
    );
    // Only productpage's identity may call reviews, and only with GET.
    let viewer = apply(
        &mesh,
        "reviews-viewer",
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewer, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/bookinfo-productpage]}}]
    to: [{operation: {methods: [GET]}}]
",
    );
    expect_status(&mesh, "ratings' identity denied by reviews", 403, || {
        call_from(&mesh, "ratings-v1", "GET", "reviews", "/reviews/0", &[])
    })
    .await;
    assert_eq!(
        call_from(&mesh, "productpage-v1", "GET", "reviews", "/reviews/0", &[])
            .await
            .expect("productpage's GET"),
        200
    );
    assert_eq!(
        call_from(
            &mesh,
            "productpage-v1",
            "POST",
            "reviews",
            "/reviews/0",
            &[]
        )
        .await
        .expect("productpage's POST"),
        403
    );
    // The page, whose productpage calls reviews with its own identity, is whole.
    mesh.reviews_version(None)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));
    // Deleted, the policy stops applying.
    delete(&mesh, &viewer);
    expect_status(&mesh, "ratings' identity allowed again", 200, || {
        call_from(&mesh, "ratings-v1", "GET", "reviews", "/reviews/0", &[])
    })
    .await;

    // DENY /admin on details, whatever the spelling (the path is normalized before the check).
    apply(
        &mesh,
        "deny-admin",
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  selector: {matchLabels: {app: details}}
  action: DENY
  rules: [{to: [{operation: {paths: [/admin, /admin/*]}}]}]
",
    );
    expect_status(&mesh, "/admin denied", 403, || {
        call_from(&mesh, "productpage-v1", "GET", "details", "/admin", &[])
    })
    .await;
    for path in [
        "/admin/x",
        "/./admin",
        "/details/../admin",
        "/%61dmin",
        "/admin?x=1",
        "/admin/./x",
    ] {
        assert_eq!(
            call_from(&mesh, "productpage-v1", "GET", "details", path, &[])
                .await
                .unwrap_or_else(|e| panic!("{path}: {e:#}")),
            403,
            "{path}"
        );
    }
    assert_eq!(
        call_from(&mesh, "productpage-v1", "GET", "details", "/details/0", &[])
            .await
            .expect("details"),
        200
    );

    // JWT: productpage requires a token from the issuer for /productpage.
    let key = Key::new();
    apply(
        &mesh,
        "jwt",
        &format!(
            "apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: default}}
spec:
  selector: {{matchLabels: {{app: productpage}}}}
  jwtRules:
  - issuer: https://issuer.example
    jwks: '{}'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: require-jwt, namespace: default}}
spec:
  selector: {{matchLabels: {{app: productpage}}}}
  rules:
  - from: [{{source: {{requestPrincipals: [https://issuer.example/alice]}}}}]
",
            key.jwks()
        ),
    );
    let page = mesh.layout.productpage_address();
    expect_status(&mesh, "no token, 403", 403, || {
        request(&page, "GET", "/productpage", "productpage:9080", &[])
    })
    .await;
    let good = format!("Bearer {}", key.sign("alice"));
    let other = format!("Bearer {}", key.sign("bob"));
    let forged = format!("Bearer {}", Key::new().sign("alice"));
    let with = |auth: &str| {
        let auth = auth.to_string();
        let page = page.clone();
        async move {
            request(
                &page,
                "GET",
                "/productpage",
                "productpage:9080",
                &[("authorization", &auth)],
            )
            .await
        }
    };
    assert_eq!(with(&good).await.expect("good token"), 200);
    assert_eq!(with(&other).await.expect("another subject"), 403);
    assert_eq!(with(&forged).await.expect("forged token"), 401);
}

/// An ES256 key: signs tokens, and its public half as a JWKS.
struct Key(EcdsaKeyPair);

fn b64(b: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl Key {
    fn new() -> Key {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
        Key(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .expect("pair"),
        )
    }

    fn jwks(&self) -> String {
        let p = self.0.public_key().as_ref();
        json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
            "x": b64(&p[1..33]), "y": b64(&p[33..65])}]})
        .to_string()
    }

    /// A token for subject `sub` from the test's issuer, valid for an hour.
    fn sign(&self, sub: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let claims = json!({"iss": "https://issuer.example", "sub": sub, "exp": now + 3600});
        let signed = format!(
            "{}.{}",
            b64(json!({"alg": "ES256", "kid": "k1", "typ": "JWT"}).to_string()),
            b64(claims.to_string())
        );
        let rng = ring::rand::SystemRandom::new();
        let sig = self.0.sign(&rng, signed.as_bytes()).expect("sign");
        format!("{signed}.{}", b64(sig))
    }
}
