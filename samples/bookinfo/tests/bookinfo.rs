//! In-process Bookinfo: every service on 127.0.0.1 port 0, all outbound calls through a fake forward proxy that
//! routes by the request's authority and records what it saw on the wire.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{COOKIE, LOCATION, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use weft_bookinfo::config::ProxyAddr;
use weft_bookinfo::{serve, Config, Service, Version};

/// Upper bound on any single exchange in these tests.
const WAIT: Duration = Duration::from_secs(20);
const DETAILS_UNAVAILABLE: &str = "Sorry, product details are currently unavailable for this book.";
const REVIEWS_UNAVAILABLE: &str = "Sorry, product reviews are currently unavailable for this book.";
const RATINGS_UNAVAILABLE: &str = "Ratings service is currently unavailable";

/// Polls `check` with a growing delay until it returns `Some`, or panics naming `what` once `WAIT` has
/// passed. These tests' one polling helper.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut delay = Duration::from_millis(10);
    loop {
        if let Ok(Some(v)) = tokio::time::timeout_at(deadline, check()).await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

/// One request as the fake proxy received it.
#[derive(Clone, Debug)]
struct Seen {
    /// `METHOD target VERSION`, e.g. `GET http://reviews:9080/reviews/0 HTTP/1.1`.
    line: String,
    /// Host part of the target's authority.
    host: String,
    headers: HeaderMap,
}

#[derive(Clone, Default)]
struct FakeProxy {
    routes: Arc<HashMap<String, SocketAddr>>,
    /// Hosts whose requests are never answered.
    hang: Arc<HashSet<String>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeProxy {
    fn to(&self, host: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.host == host)
            .cloned()
            .collect()
    }

    async fn handle(self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let host = req.uri().host().unwrap_or_default().to_string();
        self.seen.lock().expect("lock").push(Seen {
            line: format!("{} {} {:?}", req.method(), req.uri(), req.version()),
            host: host.clone(),
            headers: req.headers().clone(),
        });
        if self.hang.contains(&host) {
            std::future::pending::<()>().await;
        }
        let Some(addr) = self.routes.get(&host) else {
            let mut resp = Response::new(Full::new(Bytes::from_static(b"no healthy upstream")));
            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return resp;
        };
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        let mut out = Request::builder()
            .method(req.method())
            .uri(format!("http://{addr}{path}"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        *out.headers_mut() = req.headers().clone();
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        match client.request(out).await {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                Response::from_parts(parts, Full::new(body))
            }
            Err(_) => {
                let mut resp = Response::new(Full::new(Bytes::new()));
                *resp.status_mut() = StatusCode::BAD_GATEWAY;
                resp
            }
        }
    }
}

/// Which services a test mesh runs.
struct Plan {
    reviews: Option<Version>,
    ratings: bool,
    ratings_hang: bool,
}

impl Plan {
    fn reviews(v: Version) -> Self {
        Plan {
            reviews: Some(v),
            ratings: true,
            ratings_hang: false,
        }
    }
}

struct Mesh {
    productpage: SocketAddr,
    details: SocketAddr,
    ratings: SocketAddr,
    reviews: Option<SocketAddr>,
    proxy: FakeProxy,
    _stops: Vec<oneshot::Sender<()>>,
}

async fn bind() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    (l, a)
}

fn start_service(
    stops: &mut Vec<oneshot::Sender<()>>,
    listener: TcpListener,
    service: Service,
    version: Version,
    proxy_port: u16,
) {
    let config = Config {
        service,
        version,
        listen: listener.local_addr().expect("addr"),
        workload: format!("{service}-{version}"),
        proxy: Some(ProxyAddr {
            host: "127.0.0.1".into(),
            port: proxy_port,
        }),
    };
    let (tx, rx) = oneshot::channel::<()>();
    stops.push(tx);
    tokio::spawn(serve(config, listener, async move {
        let _ = rx.await;
    }));
}

impl Mesh {
    async fn start(plan: Plan) -> Mesh {
        let (proxy_l, proxy_a) = bind().await;
        let (pp_l, productpage) = bind().await;
        let (de_l, details) = bind().await;
        let (ra_l, ratings) = bind().await;
        let (re_l, re_a) = bind().await;
        let mut stops = Vec::new();
        let port = proxy_a.port();
        start_service(&mut stops, pp_l, Service::Productpage, Version::V1, port);
        start_service(&mut stops, de_l, Service::Details, Version::V1, port);
        start_service(&mut stops, ra_l, Service::Ratings, Version::V1, port);
        let mut routes = HashMap::from([
            ("productpage".to_string(), productpage),
            ("details".to_string(), details),
        ]);
        if plan.ratings {
            routes.insert("ratings".into(), ratings);
        }
        let reviews = plan.reviews.map(|v| {
            start_service(&mut stops, re_l, Service::Reviews, v, port);
            routes.insert("reviews".into(), re_a);
            re_a
        });
        let mut hang = HashSet::new();
        if plan.ratings_hang {
            hang.insert("ratings".to_string());
        }
        let proxy = FakeProxy {
            routes: Arc::new(routes),
            hang: Arc::new(hang),
            seen: Arc::default(),
        };
        let p = proxy.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = proxy_l.accept().await else {
                    return;
                };
                let p = p.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let p = p.clone();
                        async move { Ok::<_, Infallible>(p.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Mesh {
            productpage,
            details,
            ratings,
            reviews,
            proxy,
            _stops: stops,
        }
    }
}

struct Got {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Got {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    for (k, v) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    let exchange = async {
        let resp = client.request(req).await.expect("response");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Got {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(body.to_vec()).expect("utf-8"),
        }
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .expect("answered in time")
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Got {
    send(addr, Method::GET, path, headers, "").await
}

fn header<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
    seen.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn details_and_ratings_json_shapes() {
    let mesh = Mesh::start(Plan::reviews(Version::V1)).await;
    let got = get(mesh.details, "/details/0", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.headers["content-type"], "application/json");
    assert_eq!(
        got.body,
        r#"{"id":0,"author":"William Shakespeare","year":1595,"type":"paperback","pages":200,"publisher":"PublisherA","language":"English","ISBN-10":"1234567890","ISBN-13":"123-1234567890"}"#
    );
    assert!(get(mesh.details, "/details/7", &[])
        .await
        .body
        .starts_with(r#"{"id":7,"#));
    assert_eq!(
        get(mesh.details, "/details/abc", &[]).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(mesh.details, "/nope", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(mesh.details, "/health", &[]).await.status,
        StatusCode::OK
    );

    let got = get(mesh.ratings, "/ratings/0", &[]).await;
    assert_eq!(
        got.body,
        r#"{"id":0,"ratings":{"Reviewer1":5,"Reviewer2":4}}"#
    );
    assert_eq!(
        get(mesh.ratings, "/ratings/", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(mesh.ratings, "/health", &[]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn reviews_json_per_version() {
    let mesh = Mesh::start(Plan::reviews(Version::V1)).await;
    let v1 = get(mesh.reviews.expect("reviews"), "/reviews/0", &[]).await;
    assert_eq!(v1.status, StatusCode::OK);
    assert!(v1.body.starts_with(r#"{"id":"0","podname":"reviews-v1","clustername":"null","reviews":[{"reviewer":"Reviewer1","text":""#), "{}", v1.body);
    assert!(!v1.body.contains("rating\""), "{}", v1.body);
    assert!(
        mesh.proxy.to("ratings").is_empty(),
        "v1 never calls ratings"
    );

    let mesh = Mesh::start(Plan::reviews(Version::V2)).await;
    let v2 = get(mesh.reviews.expect("reviews"), "/reviews/0", &[]).await;
    assert!(v2.body.contains(r#""podname":"reviews-v2""#), "{}", v2.body);
    assert!(
        v2.body.contains(r#""rating":{"stars":5,"color":"black"}"#),
        "{}",
        v2.body
    );
    assert!(
        v2.body.contains(r#""rating":{"stars":4,"color":"black"}"#),
        "{}",
        v2.body
    );
    assert_eq!(
        mesh.proxy.to("ratings")[0].line,
        "GET http://ratings:9080/ratings/0 HTTP/1.1"
    );
}

#[tokio::test]
async fn page_with_reviews_v2_shows_black_stars() {
    let mesh = Mesh::start(Plan::reviews(Version::V2)).await;
    let got = get(mesh.productpage, "/productpage", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(got.body.contains("<font color=\"black\">"), "{}", got.body);
    assert!(!got.body.contains("<font color=\"red\">"));
    assert!(
        got.body.contains("Reviews served by: reviews-v2"),
        "{}",
        got.body
    );
    assert!(got.body.contains("William Shakespeare") && got.body.contains("123-1234567890"));
    assert!(!got.body.contains(DETAILS_UNAVAILABLE) && !got.body.contains(REVIEWS_UNAVAILABLE));
    // Absolute-form request targets on the wire, one per call.
    let lines: Vec<String> = mesh
        .proxy
        .seen
        .lock()
        .expect("lock")
        .iter()
        .map(|s| s.line.clone())
        .collect();
    for want in [
        "GET http://details:9080/details/0 HTTP/1.1",
        "GET http://reviews:9080/reviews/0 HTTP/1.1",
        "GET http://ratings:9080/ratings/0 HTTP/1.1",
    ] {
        assert_eq!(
            lines.iter().filter(|l| *l == want).count(),
            1,
            "{want} in {lines:?}"
        );
    }
    assert_eq!(
        header(&mesh.proxy.to("reviews")[0], "host"),
        Some("reviews:9080")
    );
}

#[tokio::test]
async fn page_with_reviews_v3_shows_red_stars() {
    let mesh = Mesh::start(Plan::reviews(Version::V3)).await;
    let got = get(mesh.productpage, "/productpage", &[]).await;
    assert!(got.body.contains("<font color=\"red\">"), "{}", got.body);
    assert!(!got.body.contains("<font color=\"black\">"));
    assert!(got.body.contains("Reviews served by: reviews-v3"));
}

#[tokio::test]
async fn page_with_reviews_v1_shows_no_stars() {
    let mesh = Mesh::start(Plan::reviews(Version::V1)).await;
    let got = get(mesh.productpage, "/productpage", &[]).await;
    assert!(
        got.body.contains("Reviews served by: reviews-v1"),
        "{}",
        got.body
    );
    assert!(!got.body.contains("<font color="));
    assert!(!got.body.contains(RATINGS_UNAVAILABLE));
    assert!(mesh.proxy.to("ratings").is_empty());
}

#[tokio::test]
async fn reviews_down_is_tried_twice_then_reported() {
    let mesh = Mesh::start(Plan {
        reviews: None,
        ratings: true,
        ratings_hang: false,
    })
    .await;
    let got = get(mesh.productpage, "/productpage", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(got.body.contains(REVIEWS_UNAVAILABLE), "{}", got.body);
    assert!(!got.body.contains("Reviews served by:"));
    assert!(
        got.body.contains("William Shakespeare"),
        "details still shown"
    );
    assert_eq!(mesh.proxy.to("reviews").len(), 2, "one try and one retry");
    assert_eq!(mesh.proxy.to("details").len(), 1, "details is not retried");

    let api = get(mesh.productpage, "/api/v1/products/0/reviews", &[]).await;
    assert_eq!(api.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(api.body.contains(REVIEWS_UNAVAILABLE));
}

#[tokio::test]
async fn ratings_down_is_reported_per_review() {
    let mesh = Mesh::start(Plan {
        reviews: Some(Version::V2),
        ratings: false,
        ratings_hang: false,
    })
    .await;
    let got = get(mesh.productpage, "/productpage", &[]).await;
    assert_eq!(
        got.body.matches(RATINGS_UNAVAILABLE).count(),
        2,
        "{}",
        got.body
    );
    assert!(!got.body.contains("<font color="));
    assert!(got.body.contains("Reviews served by: reviews-v2"));
    let json = get(mesh.reviews.expect("reviews"), "/reviews/0", &[]).await;
    assert!(
        json.body
            .contains(r#""rating":{"error":"Ratings service is currently unavailable"}"#),
        "{}",
        json.body
    );
}

#[tokio::test]
async fn reviews_v3_gives_up_on_ratings_after_its_timeout() {
    let mesh = Mesh::start(Plan {
        reviews: Some(Version::V3),
        ratings: true,
        ratings_hang: true,
    })
    .await;
    let got = get(mesh.productpage, "/productpage", &[]).await;
    // Ratings was called and never answered: v3 gave up on it, in time for productpage to show its
    // reviews (one call to reviews, not retried after productpage's own timeout). How long each waits
    // is `reviews::tests`' business.
    assert!(got.body.contains(RATINGS_UNAVAILABLE), "{}", got.body);
    assert!(got.body.contains("Reviews served by: reviews-v3"));
    assert_eq!(mesh.proxy.to("ratings").len(), 1);
    assert_eq!(mesh.proxy.to("reviews").len(), 1);
}

#[tokio::test]
async fn end_user_from_query_sets_cookie_and_header() {
    let mesh = Mesh::start(Plan::reviews(Version::V2)).await;
    let got = get(mesh.productpage, "/productpage?u=jason", &[]).await;
    assert_eq!(got.headers[SET_COOKIE], "user=jason; Path=/");
    assert!(got.body.contains("signed in as jason"), "{}", got.body);
    assert!(!got.body.contains("action=\"/login\""));
    for host in ["details", "reviews", "ratings"] {
        let seen = &mesh.proxy.to(host)[0];
        assert_eq!(header(seen, "end-user"), Some("jason"), "{host}");
    }
}

#[tokio::test]
async fn login_cookie_signs_in_and_logout_clears_it() {
    let mesh = Mesh::start(Plan::reviews(Version::V2)).await;
    let anon = get(mesh.productpage, "/productpage", &[]).await;
    assert!(anon.body.contains("action=\"/login\""));
    assert!(!anon.body.contains("signed in as"));
    assert_eq!(header(&mesh.proxy.to("reviews")[0], "end-user"), None);

    let login = send(
        mesh.productpage,
        Method::POST,
        "/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        "username=jason&passwd=anything",
    )
    .await;
    assert_eq!(login.status, StatusCode::FOUND);
    assert_eq!(login.headers[LOCATION], "/productpage");
    let cookie = login.headers[SET_COOKIE]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(cookie, "user=jason; Path=/");
    let cookie = cookie.split(';').next().expect("pair").to_string();

    let page = get(mesh.productpage, "/productpage", &[("cookie", &cookie)]).await;
    assert!(page.body.contains("signed in as jason"), "{}", page.body);
    let seen = mesh.proxy.to("reviews");
    let last = seen.last().expect("reviews called");
    assert_eq!(header(last, "end-user"), Some("jason"));
    assert_eq!(header(last, COOKIE.as_str()), Some("user=jason"));
    assert_eq!(
        header(
            mesh.proxy.to("ratings").last().expect("ratings"),
            "end-user"
        ),
        Some("jason")
    );

    let out = get(mesh.productpage, "/logout", &[("cookie", &cookie)]).await;
    assert_eq!(out.status, StatusCode::FOUND);
    assert_eq!(out.headers[SET_COOKIE], "user=; Path=/; Max-Age=0");
}

#[tokio::test]
async fn tracing_headers_are_forwarded_through_every_hop() {
    let mesh = Mesh::start(Plan::reviews(Version::V2)).await;
    let sent = [
        ("x-request-id", "req-42"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        ("tracestate", "vendor=1"),
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
        ("x-b3-sampled", "1"),
        ("x-b3-flags", "0"),
        ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        ("x-ot-span-context", "abc;def;1"),
        ("user-agent", "bookinfo-test/1"),
        ("authorization", "Bearer t0ken"),
        ("end-user", "upstream-user"),
    ];
    let mut with_extra = sent.to_vec();
    with_extra.push(("x-not-propagated", "nope"));
    let got = get(mesh.productpage, "/productpage", &with_extra).await;
    assert_eq!(got.status, StatusCode::OK);
    for host in ["details", "reviews", "ratings"] {
        let seen = &mesh.proxy.to(host)[0];
        for (name, value) in sent {
            assert_eq!(
                header(seen, name),
                Some(value),
                "{name} on the call to {host}"
            );
        }
        assert_eq!(header(seen, "x-not-propagated"), None, "{host}");
    }
}

#[tokio::test]
async fn api_passes_downstream_json_through() {
    let mesh = Mesh::start(Plan::reviews(Version::V3)).await;
    let list = get(mesh.productpage, "/api/v1/products", &[]).await;
    assert!(
        list.body
            .starts_with(r#"[{"id":0,"title":"The Comedy of Errors""#),
        "{}",
        list.body
    );
    let details = get(mesh.productpage, "/api/v1/products/0", &[]).await;
    assert!(details.body.contains(r#""ISBN-13":"123-1234567890""#));
    let reviews = get(mesh.productpage, "/api/v1/products/0/reviews", &[]).await;
    assert_eq!(reviews.status, StatusCode::OK);
    assert_eq!(reviews.headers["content-type"], "application/json");
    assert!(
        reviews.body.contains(r#""podname":"reviews-v3""#),
        "{}",
        reviews.body
    );
    assert!(reviews.body.contains(r#""color":"red""#));
    let ratings = get(mesh.productpage, "/api/v1/products/0/ratings", &[]).await;
    assert_eq!(
        ratings.body,
        r#"{"id":0,"ratings":{"Reviewer1":5,"Reviewer2":4}}"#
    );
    assert_eq!(
        get(mesh.productpage, "/api/v1/products/x", &[])
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(mesh.productpage, "/api/v1/products/0/nope", &[])
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(mesh.productpage, "/static/x.css", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(mesh.productpage, "/health", &[]).await.status,
        StatusCode::OK
    );
    let index = get(mesh.productpage, "/", &[]).await;
    assert!(index.body.contains("href=\"/productpage\""));
    assert_eq!(
        send(mesh.productpage, Method::POST, "/productpage", &[], "")
            .await
            .status,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn details_down_is_reported() {
    let mesh = Mesh::start(Plan::reviews(Version::V1)).await;
    // Stop routing details by pointing a fresh proxy map at nothing: simplest is a page from a mesh without details.
    let routes: HashMap<String, SocketAddr> = mesh
        .proxy
        .routes
        .iter()
        .filter(|(k, _)| k.as_str() != "details")
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let (proxy_l, proxy_a) = bind().await;
    let proxy = FakeProxy {
        routes: Arc::new(routes),
        ..FakeProxy::default()
    };
    let p = proxy.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = proxy_l.accept().await {
            let p = p.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let p = p.clone();
                    async move { Ok::<_, Infallible>(p.handle(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let mut stops = Vec::new();
    let (pp_l, pp_a) = bind().await;
    start_service(
        &mut stops,
        pp_l,
        Service::Productpage,
        Version::V1,
        proxy_a.port(),
    );
    let got = get(pp_a, "/productpage", &[]).await;
    assert!(got.body.contains(DETAILS_UNAVAILABLE), "{}", got.body);
    assert!(got.body.contains("Reviews served by: reviews-v1"));
}

#[tokio::test]
async fn h2c_is_served() {
    let mesh = Mesh::start(Plan::reviews(Version::V1)).await;
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = Request::get(format!("http://{}/details/0", mesh.details))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = tokio::time::timeout(WAIT, client.request(req))
        .await
        .expect("in time")
        .expect("response");
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn serve_returns_after_shutdown_with_idle_keepalive_connection() {
    let (listener, addr) = bind().await;
    let config = Config {
        service: Service::Ratings,
        version: Version::V1,
        listen: addr,
        workload: "ratings-v1".into(),
        proxy: None,
    };
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(config, listener, async move {
        let _ = rx.await;
    }));
    // Leaves a pooled keep-alive connection open.
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let req = Request::get(format!("http://{addr}/ratings/1"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = tokio::time::timeout(WAIT, client.request(req))
        .await
        .expect("in time")
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    tx.send(()).expect("server running");
    tokio::time::timeout(Duration::from_secs(4), server)
        .await
        .expect("serve returns promptly")
        .expect("no panic")
        .expect("no error");
}

#[tokio::test]
async fn binary_stops_cleanly_on_sigterm() {
    use std::process::{Command, Stdio};
    // Port 0 cannot be passed through; take a free port and release it just before the child binds it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bookinfo"))
        .env("BOOKINFO_SERVICE", "details")
        .env("BOOKINFO_LISTEN", format!("127.0.0.1:{port}"))
        .env_remove("http_proxy")
        // The upper-case spelling is honoured too (nothing listens there; details makes no calls).
        .env("HTTP_PROXY", "http://127.0.0.1:1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bookinfo");
    eventually("bookinfo to listen", || {
        let exited = child.try_wait().expect("wait");
        async move {
            assert!(exited.is_none(), "bookinfo exited: {exited:?}");
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        }
    })
    .await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let status = eventually("bookinfo to stop on SIGTERM", || {
        let exited = child.try_wait().expect("wait");
        async move { exited }
    })
    .await;
    assert!(status.success(), "exit status {status}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read");
    assert!(
        stderr.contains("details-v1 (details v1) listening on"),
        "{stderr}"
    );
    assert!(stderr.contains("bookinfo: stopped"), "{stderr}");
}
