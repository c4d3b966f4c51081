//! The filter as a whole, on configs shaped as Istio generates them (`pilot/pkg/security/authn`'s
//! `convertToEnvoyJwtConfig`): one provider per JWT rule, `requires_any` of it and `allow_missing`, and
//! for several providers `requires_any` of each and of `requires_all` of their optional forms.

use super::test_keys::{sign, Signer};
use super::*;
use base64::Engine as _;
use serde_json::json;
use weft_xds::pb::envoy::config::core::v3::{data_source, DataSource};
use weft_xds::pb::envoy::config::route::v3::{route_match::PathSpecifier, RouteMatch as XMatch};
use weft_xds::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    jwt_provider::{JwksSourceSpecifier, NormalizePayload},
    jwt_requirement::RequiresType,
    requirement_rule::RequirementType,
    JwtAuthentication, JwtClaimToHeader, JwtHeader, JwtProvider, JwtRequirement,
    JwtRequirementAndList, JwtRequirementOrList, RemoteJwks, RequirementRule,
};

const NOW: u64 = 1_700_000_000;
const ISS: &str = "https://issuer.example";

fn provider(issuer: &str, jwks: &str) -> JwtProvider {
    JwtProvider {
        issuer: issuer.into(),
        jwks_source_specifier: Some(JwksSourceSpecifier::LocalJwks(DataSource {
            specifier: Some(data_source::Specifier::InlineString(jwks.into())),
            ..Default::default()
        })),
        payload_in_metadata: "payload".into(),
        normalize_payload_in_metadata: Some(NormalizePayload {
            space_delimited_claims: vec!["permission".into(), "scope".into()],
        }),
        ..Default::default()
    }
}

fn req(t: RequiresType) -> JwtRequirement {
    JwtRequirement {
        requires_type: Some(t),
    }
}

fn by_name(n: &str) -> JwtRequirement {
    req(RequiresType::ProviderName(n.into()))
}

fn optional(n: &str) -> JwtRequirement {
    req(RequiresType::RequiresAny(JwtRequirementOrList {
        requirements: vec![
            by_name(n),
            req(RequiresType::AllowMissing(Default::default())),
        ],
    }))
}

fn prefix_rule(prefix: &str, r: JwtRequirement) -> RequirementRule {
    RequirementRule {
        r#match: Some(XMatch {
            path_specifier: Some(PathSpecifier::Prefix(prefix.into())),
            ..Default::default()
        }),
        requirement_type: Some(RequirementType::Requires(r)),
    }
}

/// The config Istio makes of these providers (named `origins-<i>`).
fn istio(providers: Vec<JwtProvider>) -> JwtAuthentication {
    let names: Vec<String> = (0..providers.len())
        .map(|i| format!("origins-{i}"))
        .collect();
    let requirement = if names.len() == 1 {
        optional(&names[0])
    } else {
        let mut any: Vec<JwtRequirement> = names.iter().map(|n| by_name(n)).collect();
        any.push(req(RequiresType::RequiresAll(JwtRequirementAndList {
            requirements: names.iter().map(|n| optional(n)).collect(),
        })));
        req(RequiresType::RequiresAny(JwtRequirementOrList {
            requirements: any,
        }))
    };
    JwtAuthentication {
        providers: names.into_iter().zip(providers).collect(),
        rules: vec![prefix_rule("/", requirement)],
        bypass_cors_preflight: true,
        ..Default::default()
    }
}

fn compile(c: &JwtAuthentication) -> JwtAuthn {
    JwtAuthn::try_from(c).expect("valid config")
}

fn request(uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut b = http::Request::builder()
        .uri(uri)
        .header("host", "reviews:9080");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).expect("request").into_parts().0
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn good_claims() -> serde_json::Value {
    json!({"iss": ISS, "sub": "alice", "aud": ["bookinfo", "other"], "azp": "web",
        "iat": NOW, "exp": NOW + 3600, "scope": "read  write", "groups": ["dev"]})
}

/// One signer's provider, compiled in Istio's shape.
fn single(s: &Signer, edit: impl FnOnce(&mut JwtProvider)) -> JwtAuthn {
    let mut p = provider(ISS, &Signer::jwks(&[s]));
    edit(&mut p);
    compile(&istio(vec![p]))
}

#[test]
fn a_valid_token_yields_the_identity_and_is_taken_off() {
    let s = Signer::es256("k1");
    let f = single(&s, |_| {});
    let t = sign(&s, &good_claims());
    let mut p = request(
        "/reviews/1",
        &[("authorization", &bearer(&t)), ("x-keep", "1")],
    );
    let id = f
        .authenticate_at(&mut p, NOW)
        .expect("accepted")
        .expect("an identity");
    assert_eq!(id[PRINCIPAL], json!("https://issuer.example/alice"));
    assert_eq!(id[AUDIENCES], json!(["bookinfo", "other"]));
    assert_eq!(id[PRESENTER], json!("web"));
    assert_eq!(id[CLAIMS]["groups"], json!(["dev"]));
    assert_eq!(
        id[CLAIMS]["scope"],
        json!(["read", "write"]),
        "scope is space-delimited (Istio's normalize_payload_in_metadata)"
    );
    assert!(!p.headers.contains_key("authorization"), "not forwarded");
    assert!(p.headers.contains_key("x-keep"));
    // An audience given as one string is a list of one; no azp, no presenter.
    let mut c = good_claims();
    c["aud"] = json!("bookinfo");
    c.as_object_mut().expect("object").remove("azp");
    let mut p = request("/", &[("authorization", &bearer(&sign(&s, &c)))]);
    let id = f.authenticate_at(&mut p, NOW).expect("ok").expect("id");
    assert_eq!(id[AUDIENCES], json!(["bookinfo"]));
    assert!(id.get(PRESENTER).is_none());
}

#[test]
fn a_missing_token_passes_unauthenticated() {
    let s = Signer::es256("k1");
    let f = single(&s, |_| {});
    for p in [
        request("/", &[]),
        request("/", &[("authorization", "Basic dXNlcjpwYXNz")]),
        request("/?other=1", &[("cookie", "a=b")]),
    ] {
        let mut p = p;
        let before = p.headers.clone();
        assert_eq!(f.authenticate_at(&mut p, NOW).expect("passes"), None);
        assert_eq!(p.headers, before, "untouched");
    }
}

#[test]
fn each_verification_failure_is_refused_with_envoys_status_and_words() {
    let s = Signer::es256("k1");
    let rsa = Signer::rs256("r1");
    let f = single(&s, |p| p.audiences = vec!["bookinfo".into()]);
    let with = |edit: serde_json::Value| {
        let mut c = good_claims();
        if let (Some(m), serde_json::Value::Object(e)) = (c.as_object_mut(), edit) {
            m.extend(e);
        }
        c
    };
    let good = sign(&s, &good_claims());
    let (head, rest) = good.split_once('.').expect("dots");
    let (_, sig) = rest.split_once('.').expect("dots");
    let forged = format!(
        "{head}.{}.{sig}",
        token::B64URL.encode(with(json!({"sub": "mallory"})).to_string())
    );
    let none = format!(
        "{}.{}.",
        token::B64URL.encode(r#"{"alg":"none"}"#),
        token::B64URL.encode(good_claims().to_string())
    );
    // HS256 keyed with the provider's public key bytes.
    let hs = {
        let signed = format!(
            "{}.{}",
            token::B64URL.encode(r#"{"alg":"HS256","kid":"k1"}"#),
            token::B64URL.encode(good_claims().to_string())
        );
        let key = jsonwebtoken::EncodingKey::from_secret(&s.public_der());
        let mac =
            jsonwebtoken::crypto::sign(signed.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
                .expect("mac");
        format!("{signed}.{mac}")
    };
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("bad signature", forged, 401, "Jwt verification fails"),
        (
            "signed by another key under the same kid",
            sign(&Signer::es256("k1"), &good_claims()),
            401,
            "Jwt verification fails",
        ),
        (
            "wrong issuer",
            sign(&s, &with(json!({"iss": "https://evil.example"}))),
            401,
            "Jwt issuer is not configured",
        ),
        (
            "wrong audience",
            sign(&s, &with(json!({"aud": "other"}))),
            403,
            "Audiences in Jwt are not allowed",
        ),
        (
            "expired",
            sign(&s, &with(json!({"exp": NOW - DEFAULT_CLOCK_SKEW - 1}))),
            401,
            "Jwt is expired",
        ),
        (
            "nbf in the future",
            sign(&s, &with(json!({"nbf": NOW + DEFAULT_CLOCK_SKEW + 1}))),
            401,
            "Jwt not yet valid",
        ),
        ("alg none", none, 401, "Jwt header [alg] is not supported"),
        (
            "HS256 with the public key as secret",
            hs,
            401,
            "Jwks doesn't have key to match kid or alg from Jwt",
        ),
        (
            "unknown kid",
            sign(&s.with_kid("rotated-away"), &good_claims()),
            401,
            "Jwks doesn't have key to match kid or alg from Jwt",
        ),
        (
            "another algorithm's key",
            sign(&rsa, &good_claims()),
            401,
            "Jwks doesn't have key to match kid or alg from Jwt",
        ),
        (
            "not a JWT",
            "opaque-session-token".into(),
            401,
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
        ),
    ];
    for (name, t, status, body) in cases {
        let mut p = request("/reviews/1?x=1", &[("authorization", &bearer(&t))]);
        let e = f.authenticate_at(&mut p, NOW).expect_err(name);
        assert_eq!((e.status().as_u16(), e.body()), (status, body), "{name}");
        assert_eq!(
            e.challenge().map(|v| v.to_str().expect("ascii")),
            Some(r#"Bearer realm="http://reviews:9080/reviews/1?x=1", error="invalid_token""#),
            "{name}"
        );
        assert!(
            p.headers.contains_key("authorization"),
            "{name}: kept on refusal"
        );
    }
    // The same token through the query parameter, and Envoy's response code details.
    let mut p = request(
        &format!("/?access_token={}", sign(&s, &with(json!({"exp": 1})))),
        &[],
    );
    let e = f.authenticate_at(&mut p, NOW).expect_err("expired");
    assert_eq!(e.details(), "jwt_authn_access_denied{Jwt_is_expired}");
}

#[test]
fn every_token_of_a_request_must_verify() {
    let s = Signer::es256("k1");
    let f = single(&s, |_| {});
    let good = sign(&s, &good_claims());
    let bad = sign(&Signer::es256("k1"), &good_claims());
    for (name, headers, query) in [
        (
            "good header, bad query",
            vec![good.clone()],
            Some(bad.clone()),
        ),
        (
            "bad header, good query",
            vec![bad.clone()],
            Some(good.clone()),
        ),
        ("two headers", vec![good.clone(), bad.clone()], None),
    ] {
        let auth: Vec<String> = headers.iter().map(|t| bearer(t)).collect();
        let hs: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let uri = query.map_or("/".to_string(), |q| format!("/?access_token={q}"));
        let mut p = request(&uri, &hs);
        let e = f.authenticate_at(&mut p, NOW).expect_err(name);
        assert_eq!(e.body(), "Jwt verification fails", "{name}");
    }
}

#[test]
fn forwarding_payload_and_claim_headers() {
    let s = Signer::ed25519("k1");
    let t = sign(&s, &good_claims());
    let payload = t.split('.').nth(1).expect("payload").to_string();
    // Istio's forwardOriginalToken, outputPayloadToHeader and outputClaimToHeaders.
    let f = single(&s, |p| {
        p.forward = true;
        p.forward_payload_header = "x-jwt-payload".into();
        p.claim_to_headers = vec![
            JwtClaimToHeader {
                header_name: "x-sub".into(),
                claim_name: "sub".into(),
                ..Default::default()
            },
            JwtClaimToHeader {
                header_name: "x-exp".into(),
                claim_name: "exp".into(),
                ..Default::default()
            },
            JwtClaimToHeader {
                header_name: "x-groups".into(),
                claim_name: "groups".into(),
                ..Default::default()
            },
        ];
    });
    // The client's own copies go, even when it sends no token.
    let mut p = request(
        "/",
        &[
            ("x-jwt-payload", "forged"),
            ("x-sub", "root"),
            ("x-exp", "1"),
        ],
    );
    assert_eq!(f.authenticate_at(&mut p, NOW).expect("passes"), None);
    assert!(["x-jwt-payload", "x-sub", "x-exp"]
        .iter()
        .all(|h| !p.headers.contains_key(*h)));
    let mut p = request(
        "/",
        &[("authorization", &bearer(&t)), ("x-jwt-payload", "forged")],
    );
    f.authenticate_at(&mut p, NOW).expect("accepted");
    assert_eq!(p.headers["authorization"], bearer(&t), "forwarded");
    assert_eq!(p.headers.get_all("x-jwt-payload").iter().count(), 1);
    assert_eq!(p.headers["x-jwt-payload"], payload.as_str());
    let decoded: serde_json::Value =
        serde_json::from_slice(&token::B64URL.decode(&payload).expect("base64url")).expect("json");
    assert_eq!(decoded, good_claims());
    assert_eq!(p.headers["x-sub"], "alice");
    assert_eq!(p.headers["x-exp"], (NOW + 3600).to_string().as_str());
    assert!(!p.headers.contains_key("x-groups"), "a list is not written");
    // Padded.
    let f = single(&s, |p| {
        p.forward_payload_header = "x-jwt-payload".into();
        p.pad_forward_payload_header = true;
    });
    let mut p = request("/", &[("authorization", &bearer(&t))]);
    f.authenticate_at(&mut p, NOW).expect("accepted");
    let v = p.headers["x-jwt-payload"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(v.len() % 4, 0);
    assert_eq!(v.trim_end_matches('='), payload);
}

#[test]
fn named_token_places() {
    let s = Signer::es384("k1");
    let t = sign(&s, &good_claims());
    let f = single(&s, |p| {
        p.from_headers = vec![JwtHeader {
            name: "x-token".into(),
            value_prefix: "Token ".into(),
        }];
        p.from_params = vec!["jwt".into()];
        p.from_cookies = vec!["session".into()];
    });
    let ok = |mut p: Parts| {
        let id = f.authenticate_at(&mut p, NOW).expect("accepted");
        assert!(id.is_some());
        p
    };
    let p = ok(request("/", &[("x-token", &format!("Token {t}"))]));
    assert!(!p.headers.contains_key("x-token"));
    let p = ok(request(&format!("/a?b=1&jwt={t}&c=2"), &[]));
    assert_eq!(p.uri.to_string(), "/a?b=1&c=2");
    let cookie = format!("x=1; session={t}");
    let p = ok(request("/", &[("cookie", &cookie)]));
    assert_eq!(
        p.headers["cookie"],
        cookie.as_str(),
        "cookies stay, as in Envoy"
    );
    // Named places replace the defaults.
    let mut p = request("/", &[("authorization", &bearer(&t))]);
    assert_eq!(f.authenticate_at(&mut p, NOW).expect("passes"), None);
    assert!(p.headers.contains_key("authorization"));
}

#[test]
fn several_providers_in_istios_shape() {
    let a = Signer::es256("a");
    let b = Signer::rs256("b");
    let f = compile(&istio(vec![
        provider("https://a.example", &Signer::jwks(&[&a])),
        provider("https://b.example", &Signer::jwks(&[&b])),
    ]));
    let claims = |iss: &str, sub: &str| {
        let mut c = good_claims();
        c["iss"] = json!(iss);
        c["sub"] = json!(sub);
        c
    };
    let ta = sign(&a, &claims("https://a.example", "ann"));
    let tb = sign(&b, &claims("https://b.example", "bob"));
    for (t, who) in [
        (&ta, "https://a.example/ann"),
        (&tb, "https://b.example/bob"),
    ] {
        let mut p = request("/", &[("authorization", &bearer(t))]);
        let id = f
            .authenticate_at(&mut p, NOW)
            .expect("accepted")
            .expect("id");
        assert_eq!(id[PRINCIPAL], json!(who));
    }
    // A token of neither issuer, and one of a's issuer signed by b's key.
    let mut p = request(
        "/",
        &[(
            "authorization",
            &bearer(&sign(&a, &claims("https://c.example", "x"))),
        )],
    );
    let e = f.authenticate_at(&mut p, NOW).expect_err("unknown issuer");
    assert_eq!(e.body(), "Jwt issuer is not configured");
    let mut p = request(
        "/",
        &[(
            "authorization",
            &bearer(&sign(&b.with_kid("a"), &claims("https://a.example", "x"))),
        )],
    );
    assert!(f.authenticate_at(&mut p, NOW).is_err());
    assert_eq!(
        f.authenticate_at(&mut request("/", &[]), NOW).expect("ok"),
        None
    );
}

#[test]
fn two_tokens_from_two_providers_take_the_first() {
    let a = Signer::es256("a");
    let b = Signer::es256("b");
    let mut pa = provider("https://a.example", &Signer::jwks(&[&a]));
    pa.from_headers = vec![JwtHeader {
        name: "x-a".into(),
        value_prefix: String::new(),
    }];
    let mut pb = provider("https://b.example", &Signer::jwks(&[&b]));
    pb.from_headers = vec![JwtHeader {
        name: "x-b".into(),
        value_prefix: String::new(),
    }];
    let f = compile(&istio(vec![pa, pb]));
    let ta = sign(&a, &json!({"iss": "https://a.example", "sub": "ann"}));
    let tb = sign(&b, &json!({"iss": "https://b.example", "sub": "bob"}));
    let mut p = request("/", &[("x-a", &ta), ("x-b", &tb)]);
    let id = f.authenticate_at(&mut p, NOW).expect("ok").expect("id");
    assert_eq!(id[PRINCIPAL], json!("https://a.example/ann"));
    // b's header holding a bad token is refused even when a's is good? Envoy's requires_any stops at
    // the first provider that verifies, so b's header is not read: as Istio ("undefined").
    let mut p = request("/", &[("x-b", "not-a-jwt")]);
    assert!(f.authenticate_at(&mut p, NOW).is_err());
}

#[test]
fn rules_cors_and_stripped_failures() {
    let s = Signer::es256("k1");
    let mut c = istio(vec![provider(ISS, &Signer::jwks(&[&s]))]);
    // Only /api requires a token; a provider without allow_missing.
    c.rules = vec![prefix_rule("/api", by_name("origins-0"))];
    c.strip_failure_response = true;
    let f = compile(&c);
    assert_eq!(
        f.authenticate_at(&mut request("/public", &[]), NOW)
            .expect("no rule"),
        None
    );
    let e = f
        .authenticate_at(&mut request("/api/x", &[]), NOW)
        .expect_err("required");
    assert_eq!((e.status().as_u16(), e.body()), (401, ""));
    assert!(e.challenge().is_none());
    assert_eq!(e.failure(), Failure::Missing);
    c.strip_failure_response = false;
    let e = compile(&c)
        .authenticate_at(&mut request("/api/x", &[]), NOW)
        .expect_err("required");
    assert_eq!(e.body(), "Jwt is missing");
    assert_eq!(
        e.challenge().expect("challenge"),
        r#"Bearer realm="http://reviews:9080/api/x""#
    );
    // A CORS preflight is let through.
    let mut p = request(
        "/api/x",
        &[
            ("origin", "https://app"),
            ("access-control-request-method", "GET"),
        ],
    );
    p.method = http::Method::OPTIONS;
    assert_eq!(
        compile(&c).authenticate_at(&mut p, NOW).expect("bypassed"),
        None
    );
}

#[test]
fn a_provider_without_usable_keys_refuses_every_token() {
    let s = Signer::rs256("k1");
    // Istio's stand-in when a jwksUri could not be fetched: a key nobody holds.
    // A key nobody holds the private half of (what weftd inlines when a jwksUri could not be
    // fetched): a 2048-bit odd modulus.
    let stand_in =
        json!({"keys": [{"kty": "RSA", "e": "AQAB", "n": token::B64URL.encode([0xd5u8; 256])}]})
            .to_string();
    let t = sign(&s, &good_claims());
    for (jwks, want) in [
        (stand_in.as_str(), "Jwt verification fails"),
        ("not json", "Jwks doesn't have any valid public key"),
    ] {
        let f = compile(&istio(vec![provider(ISS, jwks)]));
        let mut p = request("/", &[("authorization", &bearer(&t))]);
        assert_eq!(f.authenticate_at(&mut p, NOW).expect_err(jwks).body(), want);
        // No token still passes.
        assert_eq!(
            f.authenticate_at(&mut request("/", &[]), NOW).expect("ok"),
            None
        );
    }
}

#[test]
fn configs_weft_cannot_honour_are_refused_naming_the_field() {
    let s = Signer::es256("k1");
    let base = || istio(vec![provider(ISS, &Signer::jwks(&[&s]))]);
    fn p0(c: &mut JwtAuthentication) -> &mut JwtProvider {
        c.providers.get_mut("origins-0").expect("provider")
    }
    type Edit = Box<dyn Fn(&mut JwtAuthentication)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "remote keys",
            Box::new(|c| {
                p0(c).jwks_source_specifier =
                    Some(JwksSourceSpecifier::RemoteJwks(RemoteJwks::default()))
            }),
            "providers[\"origins-0\"].remote_jwks: not supported: weft-proxy verifies with local_jwks (weftd fetches jwksUri and inlines the keys, as istiod does by default)",
        ),
        (
            "no keys",
            Box::new(|c| p0(c).jwks_source_specifier = None),
            "providers[\"origins-0\"].local_jwks: a provider needs its keys",
        ),
        (
            "require_expiration",
            Box::new(|c| p0(c).require_expiration = true),
            "providers[\"origins-0\"].require_expiration: not supported",
        ),
        (
            "bad payload header",
            Box::new(|c| p0(c).forward_payload_header = "x bad".into()),
            "providers[\"origins-0\"].forward_payload_header: \"x bad\" is not a valid header name",
        ),
        (
            "unknown provider",
            Box::new(|c| c.rules[0] = prefix_rule("/", by_name("nope"))),
            "rules[0].requires.provider_name: provider \"nope\" is not configured",
        ),
        (
            "unknown provider inside requires_any",
            Box::new(|c| c.rules[0] = prefix_rule("/", optional("nope"))),
            "rules[0].requires.requires_any.requirements[0].provider_name: provider \"nope\" is not configured",
        ),
        (
            "empty requires_all",
            Box::new(|c| {
                c.rules[0] = prefix_rule(
                    "/",
                    req(RequiresType::RequiresAll(JwtRequirementAndList::default())),
                )
            }),
            "rules[0].requires.requires_all.requirements: is empty",
        ),
        (
            "regex match",
            Box::new(|c| {
                c.rules[0].r#match = Some(XMatch {
                    path_specifier: Some(PathSpecifier::SafeRegex(Default::default())),
                    ..Default::default()
                })
            }),
            "rules[0].match: only prefix and path are supported",
        ),
        (
            "header match",
            Box::new(|c| {
                if let Some(m) = c.rules[0].r#match.as_mut() {
                    m.headers = vec![Default::default()];
                }
            }),
            "rules[0].match.headers: not supported",
        ),
        (
            "unknown requirement name",
            Box::new(|c| {
                c.rules[0].requirement_type = Some(RequirementType::RequirementName("r".into()))
            }),
            "rules[0].requirement_name: \"r\" is not in requirement_map",
        ),
    ];
    for (name, edit, want) in cases {
        let mut c = base();
        edit(&mut c);
        let e = JwtAuthn::try_from(&c).expect_err(name);
        assert_eq!(e.to_string(), want, "{name}");
    }
    // requirement_map, used by name, works.
    let mut c = base();
    c.requirement_map.insert("r".into(), optional("origins-0"));
    c.rules[0].requirement_type = Some(RequirementType::RequirementName("r".into()));
    let f = compile(&c);
    let mut p = request(
        "/",
        &[("authorization", &bearer(&sign(&s, &good_claims())))],
    );
    assert!(f.authenticate_at(&mut p, NOW).expect("ok").is_some());
}

#[test]
fn allow_missing_or_failed_lets_bad_tokens_through_unauthenticated() {
    let s = Signer::es256("k1");
    let mut c = istio(vec![provider(ISS, &Signer::jwks(&[&s]))]);
    c.rules[0] = prefix_rule(
        "/",
        req(RequiresType::RequiresAny(JwtRequirementOrList {
            requirements: vec![
                by_name("origins-0"),
                req(RequiresType::AllowMissingOrFailed(Default::default())),
            ],
        })),
    );
    let f = compile(&c);
    let bad = sign(&Signer::es256("k1"), &good_claims());
    let mut p = request("/", &[("authorization", &bearer(&bad))]);
    assert_eq!(f.authenticate_at(&mut p, NOW).expect("passes"), None);
    let mut p = request(
        "/",
        &[("authorization", &bearer(&sign(&s, &good_claims())))],
    );
    assert!(f.authenticate_at(&mut p, NOW).expect("passes").is_some());
}

#[test]
fn provider_and_audiences_overrides_the_providers() {
    let s = Signer::es256("k1");
    let mut c = istio(vec![provider(ISS, &Signer::jwks(&[&s]))]);
    c.rules[0] = prefix_rule(
        "/",
        req(RequiresType::ProviderAndAudiences(
            weft_xds::pb::envoy::extensions::filters::http::jwt_authn::v3::ProviderWithAudiences {
                provider_name: "origins-0".into(),
                audiences: vec!["https://only-this/".into()],
            },
        )),
    );
    let f = compile(&c);
    let mut claims = good_claims();
    let t = sign(&s, &claims);
    let mut p = request("/", &[("authorization", &bearer(&t))]);
    assert_eq!(
        f.authenticate_at(&mut p, NOW)
            .expect_err("audience")
            .status(),
        http::StatusCode::FORBIDDEN
    );
    claims["aud"] = json!("only-this");
    let mut p = request("/", &[("authorization", &bearer(&sign(&s, &claims)))]);
    assert!(f.authenticate_at(&mut p, NOW).expect("ok").is_some());
}
