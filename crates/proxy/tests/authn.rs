//! Request authentication through the real proxy: an inbound listener whose connection manager carries
//! Envoy's `jwt_authn` filter in the shape weftd (and istiod) sends for a RequestAuthentication, a
//! scripted ADS server and a hyper application, all on loopback. Tokens are signed at test time with an
//! ES256 key made by ring.

// The shared support modules; this file uses part of them.
#[allow(dead_code)]
#[path = "support/fake_ads.rs"]
mod fake_ads;
#[allow(dead_code)]
#[path = "support/net.rs"]
mod net;
#[allow(dead_code)]
#[path = "support/resources.rs"]
mod resources;

use base64::Engine as _;
use fake_ads::{FakeAds, XdsSet};
use net::{admin_get, eventually, send, start_proxy_with, Behaviour, Form, Upstream};
use resources::*;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;
use weft_proxy::ProxyHandle;
use weft_xds::pb::envoy::config::core::v3::{data_source, DataSource};
use weft_xds::pb::envoy::config::route::v3::{route_match::PathSpecifier, RouteMatch};
use weft_xds::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    jwt_provider::JwksSourceSpecifier, jwt_requirement::RequiresType,
    requirement_rule::RequirementType, JwtAuthentication, JwtClaimToHeader, JwtProvider,
    JwtRequirement, JwtRequirementOrList, RemoteJwks, RequirementRule,
};
use weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpConnectionManager, HttpFilter,
};
use weft_xds::{pack, type_url};

const ISS: &str = "https://issuer.example";
const JWT_AUTHN: &str =
    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication";

fn b64(b: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// An ES256 key: signs tokens, and its public half as a JWKS.
struct Key(EcdsaKeyPair);

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
        json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1",
            "x": b64(&p[1..33]), "y": b64(&p[33..65])}]})
        .to_string()
    }

    fn sign(&self, claims: &serde_json::Value) -> String {
        let signed = format!(
            "{}.{}",
            b64(json!({"alg": "ES256", "kid": "k1"}).to_string()),
            b64(claims.to_string())
        );
        let rng = ring::rand::SystemRandom::new();
        let sig = self.0.sign(&rng, signed.as_bytes()).expect("sign");
        format!("{signed}.{}", b64(sig))
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Istio's filter for one JWT rule: provider `origins-0`, `requires_any` of it and `allow_missing`;
/// the `sub` claim goes to the application in `x-jwt-sub` (outputClaimToHeaders).
fn jwt_filter(jwks: Option<&str>) -> HttpFilter {
    let provider = JwtProvider {
        issuer: ISS.into(),
        audiences: vec!["reviews".into()],
        jwks_source_specifier: Some(match jwks {
            Some(j) => JwksSourceSpecifier::LocalJwks(DataSource {
                specifier: Some(data_source::Specifier::InlineString(j.into())),
                ..Default::default()
            }),
            None => JwksSourceSpecifier::RemoteJwks(RemoteJwks::default()),
        }),
        claim_to_headers: vec![JwtClaimToHeader {
            header_name: "x-jwt-sub".into(),
            claim_name: "sub".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let req = |t| JwtRequirement {
        requires_type: Some(t),
    };
    let config = JwtAuthentication {
        providers: [("origins-0".to_string(), provider)].into_iter().collect(),
        rules: vec![RequirementRule {
            r#match: Some(RouteMatch {
                path_specifier: Some(PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            requirement_type: Some(RequirementType::Requires(req(RequiresType::RequiresAny(
                JwtRequirementOrList {
                    requirements: vec![
                        req(RequiresType::ProviderName("origins-0".into())),
                        req(RequiresType::AllowMissing(Default::default())),
                    ],
                },
            )))),
        }],
        bypass_cors_preflight: true,
        ..Default::default()
    };
    HttpFilter {
        name: "envoy.filters.http.jwt_authn".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack(
            JWT_AUTHN, &config,
        ))),
        ..Default::default()
    }
}

/// `listener` (an HTTP one) with `filter` first among its connection manager's HTTP filters.
fn with_filter(listener: &weft_xds::Any, filter: HttpFilter) -> weft_xds::Any {
    use weft_xds::pb::envoy::config::listener::v3::{filter, Listener};
    let mut l: Listener = weft_xds::unpack(listener).expect("listener");
    let f = &mut l.filter_chains[0].filters[0];
    let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type else {
        panic!("no connection manager");
    };
    let mut hcm: HttpConnectionManager = weft_xds::unpack(any).expect("hcm");
    hcm.http_filters.insert(0, filter);
    *any = pack(type_url::HTTP_CONNECTION_MANAGER, &hcm);
    pack(type_url::LISTENER, &l)
}

async fn start_proxy(ads: &str) -> ProxyHandle {
    start_proxy_with(ads, &["--workload", "reviews-v1", "--xds-protocol", "sotw"]).await
}

/// An inbound listener to `app` carrying `filter`.
fn set_with(version: &str, app: std::net::SocketAddr, filter: HttpFilter) -> XdsSet {
    let inbound = inbound_listener(
        "inbound_127.0.0.1_9080",
        "127.0.0.1:0".parse().expect("addr"),
        "inbound|9080||",
    );
    XdsSet {
        version: version.into(),
        clusters: vec![static_cluster("inbound|9080||", &[app])],
        listeners: vec![outbound_listener(9080), with_filter(&inbound, filter)],
        endpoints: vec![],
        routes: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_verified_on_the_inbound_listener() {
    let app = Upstream::start("reviews-app", Behaviour::Ok).await;
    let key = Key::new();
    let ads = FakeAds::start(
        "127.0.0.1:0".parse().expect("addr"),
        set_with("1", app.addr, jwt_filter(Some(&key.jwks()))),
    )
    .await;
    let proxy = start_proxy(&ads.url()).await;
    let inbound = eventually("inbound bound", || async {
        proxy.listener_addr("inbound_127.0.0.1_9080")
    })
    .await;
    let get = |headers: Vec<(&'static str, String)>| async move {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        send(inbound, Form::Host, "reviews:9080", "/reviews/1", &h)
            .await
            .expect("an answer")
    };
    let claims = |exp: u64| json!({"iss": ISS, "sub": "alice", "aud": "reviews", "exp": exp});

    // A valid token: the application gets the request, the verified subject, and no token.
    let good = key.sign(&claims(now() + 600));
    let r = get(vec![("authorization", format!("Bearer {good}"))]).await;
    assert_eq!((r.status, r.upstream()), (200, "reviews-app"), "{r:?}");
    assert!(r.upstream_saw("x-jwt-sub: alice"), "{}", r.body);
    assert!(
        !r.body.contains("authorization"),
        "the token is not forwarded: {}",
        r.body
    );

    // A forged subject header without a token is removed; no token passes unauthenticated.
    let r = get(vec![("x-jwt-sub", "root".into())]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!r.body.contains("x-jwt-sub"), "{}", r.body);

    // An invalid token never reaches the application: Envoy's 401, body and challenge.
    let hits = app.hits();
    let forged = key.sign(&json!({"iss": ISS, "sub": "mallory", "aud": "reviews"}));
    let forged = {
        let mut parts: Vec<&str> = forged.split('.').collect();
        let good_sig = good.rsplit('.').next().expect("signature");
        parts[2] = good_sig;
        parts.join(".")
    };
    let cases = [
        (forged, 401, "Jwt verification fails"),
        (key.sign(&claims(now() - 3600)), 401, "Jwt is expired"),
        (
            key.sign(&json!({"iss": ISS, "sub": "alice", "aud": "ratings"})),
            403,
            "Audiences in Jwt are not allowed",
        ),
    ];
    for (token, status, body) in cases {
        let r = get(vec![("authorization", format!("Bearer {token}"))]).await;
        assert_eq!((r.status, r.body.as_str()), (status, body), "{r:?}");
        assert_eq!(
            r.headers
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some(r#"Bearer realm="http://reviews:9080/reviews/1", error="invalid_token""#)
        );
        assert_eq!(r.flags(), "-", "Envoy sets no response flag for jwt_authn");
    }
    assert_eq!(
        app.hits(),
        hits,
        "no refused request reached the application"
    );

    // Refusals are recorded as any local response is.
    let admin = proxy.admin_addr();
    eventually("the 401s in istio_requests_total", || async move {
        let (_, text) = admin_get(admin, "/stats/prometheus").await?;
        text.lines()
            .any(|l| {
                l.starts_with("istio_requests_total{")
                    && l.contains("response_code=\"401\"")
                    && l.ends_with(" 2")
            })
            .then_some(())
    })
    .await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_weft_cannot_honour_is_nacked_and_the_last_good_one_stays() {
    let app = Upstream::start("reviews-app", Behaviour::Ok).await;
    let key = Key::new();
    let mut ads = FakeAds::start(
        "127.0.0.1:0".parse().expect("addr"),
        set_with("1", app.addr, jwt_filter(Some(&key.jwks()))),
    )
    .await;
    let proxy = start_proxy(&ads.url()).await;
    let inbound = eventually("inbound bound", || async {
        proxy.listener_addr("inbound_127.0.0.1_9080")
    })
    .await;
    // remote_jwks: weft-proxy does not fetch keys (weftd inlines them).
    ads.update(set_with("2", app.addr, jwt_filter(None)));
    let nack = eventually("a NACK of the listener", || {
        let mut got = None;
        while let Ok(r) = ads.requests.try_recv() {
            if let (true, Some(e)) = (r.type_url == type_url::LISTENER, r.error_detail) {
                got = Some(e.message);
            }
        }
        async move { got }
    })
    .await;
    assert!(
        nack.contains(
            "http_filters[0] \"envoy.filters.http.jwt_authn\": providers[\"origins-0\"].remote_jwks: not supported"
        ),
        "{nack}"
    );
    // The listener keeps its last good filter: a bad token is still refused.
    let r = send(
        inbound,
        Form::Host,
        "reviews:9080",
        "/",
        &[("authorization", "Bearer a.b.c")],
    )
    .await
    .expect("an answer");
    assert_eq!(r.status, 401, "{r:?}");
    proxy.shutdown().await;
}
