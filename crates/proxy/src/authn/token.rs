//! One JSON Web Token and one provider's keys: the token parsed and its claims type-checked as Envoy's
//! `jwt_verify_lib` does (each failure carries that library's words, which Envoy sends as the body of
//! its 401), the time window, the audiences, and the signature checked with `jsonwebtoken` against a
//! JWKS. The request-level logic (where tokens are, which provider, what happens on success) is in
//! `authn.rs`.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine as _};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

/// Base64url as JWTs use it: no padding written; padding on input is tolerated.
pub(super) const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a token was not accepted, named as Envoy's `jwt_verify_lib` names it: [`Failure::message`] is
/// the body Envoy answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No token where the requirement looked.
    Missing,
    /// `nbf` is in the future (beyond the clock skew).
    NotYetValid,
    /// `exp` is in the past (beyond the clock skew).
    Expired,
    /// Not three base64url sections separated by dots.
    BadFormat,
    /// The header is not base64url.
    HeaderBadBase64,
    /// The header is not a JSON object.
    HeaderBadJson,
    /// `alg` is missing or not a string.
    HeaderBadAlg,
    /// `alg` names no algorithm weft verifies (`none`, `ES512`, …).
    HeaderNotImplementedAlg,
    /// `kid` is not a string.
    HeaderBadKid,
    /// The payload is not base64url.
    PayloadBadBase64,
    /// The payload is not a JSON object.
    PayloadBadJson,
    /// `iss` is not a string.
    IssNotString,
    /// `sub` is not a string.
    SubNotString,
    /// `iat` is not a number.
    IatNotInteger,
    /// `iat` is negative or too large.
    IatOutOfRange,
    /// `nbf` is not a number.
    NbfNotInteger,
    /// `nbf` is negative or too large.
    NbfOutOfRange,
    /// `exp` is not a number.
    ExpNotInteger,
    /// `exp` is negative or too large.
    ExpOutOfRange,
    /// `jti` is not a string.
    JtiNotString,
    /// `aud` is neither a string nor a list of strings.
    AudNotString,
    /// The signature is not base64url.
    SignatureBadBase64,
    /// No provider (or no provider of this location) has the token's issuer.
    UnknownIssuer,
    /// None of the token's audiences is allowed (Envoy answers 403, not 401).
    AudienceNotAllowed,
    /// A key fits the token's `kid` and `alg`, and the signature does not verify with any such key.
    VerificationFail,
    /// The provider has no usable key at all.
    NoValidKeys,
    /// No key has the token's `kid` (when both have one) and fits its `alg`.
    KidAlgMismatch,
}

impl Failure {
    /// Envoy's words for it (`jwt_verify_lib`'s `getStatusString`), the body of the local reply.
    pub fn message(self) -> &'static str {
        match self {
            Failure::Missing => "Jwt is missing",
            Failure::NotYetValid => "Jwt not yet valid",
            Failure::Expired => "Jwt is expired",
            Failure::BadFormat => {
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
            }
            Failure::HeaderBadBase64 => "Jwt header is an invalid Base64url encoded",
            Failure::HeaderBadJson => "Jwt header is an invalid JSON",
            Failure::HeaderBadAlg => "Jwt header [alg] field is required and must be a string",
            Failure::HeaderNotImplementedAlg => "Jwt header [alg] is not supported",
            Failure::HeaderBadKid => "Jwt header [kid] field is not a string",
            Failure::PayloadBadBase64 => "Jwt payload is an invalid Base64url encoded",
            Failure::PayloadBadJson => "Jwt payload is an invalid JSON",
            Failure::IssNotString => "Jwt payload [iss] field is not a string",
            Failure::SubNotString => "Jwt payload [sub] field is not a string",
            Failure::IatNotInteger => "Jwt payload [iat] field is not an integer",
            Failure::IatOutOfRange => "Jwt payload [iat] field is not a positive 64 bit integer",
            Failure::NbfNotInteger => "Jwt payload [nbf] field is not an integer",
            Failure::NbfOutOfRange => "Jwt payload [nbf] field is not a positive 64 bit integer",
            Failure::ExpNotInteger => "Jwt payload [exp] field is not an integer",
            Failure::ExpOutOfRange => "Jwt payload [exp] field is not a positive 64 bit integer",
            Failure::JtiNotString => "Jwt payload [jti] field is not a string",
            Failure::AudNotString => "Jwt payload [aud] field is not a string or string list",
            Failure::SignatureBadBase64 => "Jwt signature is an invalid Base64url encoded",
            Failure::UnknownIssuer => "Jwt issuer is not configured",
            Failure::AudienceNotAllowed => "Audiences in Jwt are not allowed",
            Failure::VerificationFail => "Jwt verification fails",
            Failure::NoValidKeys => "Jwks doesn't have any valid public key",
            Failure::KidAlgMismatch => "Jwks doesn't have key to match kid or alg from Jwt",
        }
    }

    /// The status Envoy answers with: 403 for a disallowed audience, 401 for everything else.
    pub fn status(self) -> http::StatusCode {
        match self {
            Failure::AudienceNotAllowed => http::StatusCode::FORBIDDEN,
            _ => http::StatusCode::UNAUTHORIZED,
        }
    }
}

/// A parsed token whose claims have the types the JWT spec gives them; nothing verified yet.
pub struct Jwt<'a> {
    /// The signing algorithm the header names.
    pub alg: Algorithm,
    /// The header's `kid`.
    pub kid: Option<String>,
    /// `header.payload`, the signed bytes.
    signed: &'a str,
    /// The payload section as sent (base64url), for `forward_payload_header`.
    payload_b64: &'a str,
    /// The signature section (base64url).
    signature: &'a str,
    /// The payload.
    pub claims: Map<String, Value>,
    /// `nbf`, 0 when absent.
    nbf: u64,
    /// `exp`, 0 when absent (no expiry, as Envoy reads it).
    exp: u64,
}

impl std::fmt::Debug for Jwt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself (STYLE.md: no tokens in logs).
        f.debug_struct("Jwt")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("iss", &self.iss())
            .finish_non_exhaustive()
    }
}

/// The fields of a JOSE header weft reads; others are ignored.
#[derive(serde::Deserialize)]
struct Head {
    alg: Option<Value>,
    kid: Option<Value>,
}

/// A base64url section, or `bad` when it is not one.
fn decode_section(s: &str, bad: Failure) -> Result<Vec<u8>, Failure> {
    B64URL.decode(s).map_err(|_| bad)
}

/// Whether `s` is base64url text of a possible length (checked without decoding it: `jsonwebtoken`
/// decodes the signature itself when it verifies).
fn is_base64url(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    body.len() % 4 != 1
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A numeric date claim as Envoy reads it: absent is 0; a number is truncated to whole seconds; a
/// negative or huge one, or another type, is an error.
fn date_claim(
    claims: &Map<String, Value>,
    name: &str,
    not_number: Failure,
    out_of_range: Failure,
) -> Result<u64, Failure> {
    match claims.get(name) {
        None => Ok(0),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(v), _) => Ok(v),
            (None, Some(f)) if (0.0..18_446_744_073_709_551_616.0).contains(&f) => Ok(f as u64),
            _ => Err(out_of_range),
        },
        Some(_) => Err(not_number),
    }
}

/// A claim that must be a string when present.
fn string_claim(claims: &Map<String, Value>, name: &str, bad: Failure) -> Result<(), Failure> {
    match claims.get(name) {
        None | Some(Value::String(_)) => Ok(()),
        Some(_) => Err(bad),
    }
}

impl<'a> Jwt<'a> {
    /// Parses `text` and checks the types of the registered claims, in `jwt_verify_lib`'s order.
    pub fn parse(text: &'a str) -> Result<Jwt<'a>, Failure> {
        let mut sections = text.split('.');
        let (Some(header), Some(payload), Some(signature), None) = (
            sections.next(),
            sections.next(),
            sections.next(),
            sections.next(),
        ) else {
            return Err(Failure::BadFormat);
        };
        let signed = &text[..header.len() + 1 + payload.len()];
        let head: Head = serde_json::from_slice(&decode_section(header, Failure::HeaderBadBase64)?)
            .map_err(|_| Failure::HeaderBadJson)?;
        let alg = match head.alg {
            Some(Value::String(a)) => parse_alg(&a).ok_or(Failure::HeaderNotImplementedAlg)?,
            _ => return Err(Failure::HeaderBadAlg),
        };
        let kid = match head.kid {
            None => None,
            Some(Value::String(k)) => Some(k),
            Some(_) => return Err(Failure::HeaderBadKid),
        };
        let claims: Map<String, Value> =
            serde_json::from_slice(&decode_section(payload, Failure::PayloadBadBase64)?)
                .map_err(|_| Failure::PayloadBadJson)?;
        string_claim(&claims, "iss", Failure::IssNotString)?;
        string_claim(&claims, "sub", Failure::SubNotString)?;
        date_claim(
            &claims,
            "iat",
            Failure::IatNotInteger,
            Failure::IatOutOfRange,
        )?;
        let nbf = date_claim(
            &claims,
            "nbf",
            Failure::NbfNotInteger,
            Failure::NbfOutOfRange,
        )?;
        let exp = date_claim(
            &claims,
            "exp",
            Failure::ExpNotInteger,
            Failure::ExpOutOfRange,
        )?;
        string_claim(&claims, "jti", Failure::JtiNotString)?;
        match claims.get("aud") {
            None | Some(Value::String(_)) => {}
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
            Some(_) => return Err(Failure::AudNotString),
        }
        if signature.is_empty() || !is_base64url(signature) {
            return Err(Failure::SignatureBadBase64);
        }
        Ok(Jwt {
            alg,
            kid,
            signed,
            payload_b64: payload,
            signature,
            claims,
            nbf,
            exp,
        })
    }

    /// Where the payload section is in the token's text.
    pub fn payload_range(&self) -> std::ops::Range<usize> {
        let start = self.signed.len() - self.payload_b64.len();
        start..self.signed.len()
    }

    /// `iss`, empty when absent.
    pub fn iss(&self) -> &str {
        self.claims.get("iss").and_then(Value::as_str).unwrap_or("")
    }

    /// `aud`, as a list.
    pub fn audiences(&self) -> impl Iterator<Item = &str> {
        let (one, many) = match self.claims.get("aud") {
            Some(Value::String(s)) => (Some(s.as_str()), None),
            Some(Value::Array(a)) => (None, Some(a.iter().filter_map(Value::as_str))),
            _ => (None, None),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    /// `nbf` and `exp` against `now` (Unix seconds), each with `skew` seconds of grace.
    pub fn check_time(&self, now: u64, skew: u64) -> Result<(), Failure> {
        if now.saturating_add(skew) < self.nbf {
            return Err(Failure::NotYetValid);
        }
        if self.exp != 0 && now > self.exp.saturating_add(skew) {
            return Err(Failure::Expired);
        }
        Ok(())
    }

    /// Whether one of the token's audiences is among `allowed` (already normalized with
    /// [`normalize_audience`]); an empty list allows any.
    pub fn audience_allowed(&self, allowed: &[String]) -> bool {
        allowed.is_empty()
            || self
                .audiences()
                .any(|a| allowed.iter().any(|x| x == normalize_audience(a)))
    }

    /// The signature against `jwks`, as `jwt_verify_lib` picks keys: a key whose `kid` differs from
    /// the token's (both present) is skipped, as is one whose `alg` differs or whose type cannot
    /// verify the token's algorithm; the others are tried in order.
    pub fn verify(&self, jwks: &Jwks) -> Result<(), Failure> {
        if jwks.keys.is_empty() {
            return Err(Failure::NoValidKeys);
        }
        let mut candidates = false;
        for k in &jwks.keys {
            if let (Some(want), Some(has)) = (&self.kid, &k.kid) {
                if want != has {
                    continue;
                }
            }
            if k.alg.is_some_and(|a| a != self.alg) || !k.kind.verifies(self.alg) {
                continue;
            }
            candidates = true;
            // The key's type fits the algorithm (checked just above): `jsonwebtoken` would panic
            // given an RSA key for an EC or EdDSA algorithm.
            if jsonwebtoken::crypto::verify(
                self.signature,
                self.signed.as_bytes(),
                &k.key,
                self.alg,
            )
            .unwrap_or(false)
            {
                return Ok(());
            }
        }
        Err(if candidates {
            Failure::VerificationFail
        } else {
            Failure::KidAlgMismatch
        })
    }
}

/// An audience as Envoy compares it: without an `http://` or `https://` scheme and a trailing `/`.
pub fn normalize_audience(a: &str) -> &str {
    let a = a
        .strip_prefix("http://")
        .or_else(|| a.strip_prefix("https://"))
        .unwrap_or(a);
    a.strip_suffix('/').unwrap_or(a)
}

/// The algorithms weft verifies. HMAC ones parse (so that an HS256 token finds no key, rather than
/// an unknown algorithm) but no HMAC key is ever loaded; `none` and ES512 are not implemented.
fn parse_alg(a: &str) -> Option<Algorithm> {
    a.parse().ok()
}

/// What a key can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA: RS256/384/512 and PS256/384/512.
    Rsa,
    /// EC on P-256: ES256.
    P256,
    /// EC on P-384: ES384.
    P384,
    /// Ed25519: EdDSA.
    Ed25519,
}

impl KeyKind {
    /// Whether a key of this kind verifies `alg`.
    pub fn verifies(self, alg: Algorithm) -> bool {
        use Algorithm as A;
        matches!(
            (self, alg),
            (
                KeyKind::Rsa,
                A::RS256 | A::RS384 | A::RS512 | A::PS256 | A::PS384 | A::PS512
            ) | (KeyKind::P256, A::ES256)
                | (KeyKind::P384, A::ES384)
                | (KeyKind::Ed25519, A::EdDSA)
        )
    }
}

/// One public key of a JWKS.
#[derive(Clone)]
pub struct Key {
    /// `kid`.
    pub kid: Option<String>,
    /// `alg`, when the key names one.
    pub alg: Option<Algorithm>,
    /// Its type.
    pub kind: KeyKind,
    key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("kind", &self.kind)
            .finish()
    }
}

/// A provider's public keys.
#[derive(Debug, Clone, Default)]
pub struct Jwks {
    /// In the JWKS's order.
    pub keys: Vec<Key>,
}

/// A key field that must be a string.
fn field<'v>(key: &'v Value, name: &str, what: &str) -> Result<&'v str, String> {
    match key.get(name) {
        None => Err(format!("[{name}] field is missing for {what}")),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("[{name}] field is not string for {what}")),
    }
}

impl Jwks {
    /// Parses a JWKS document (RFC 7517) as Envoy does: a bad document or a malformed key of a
    /// supported type is an error (Envoy then holds no keys for the provider, so every token fails);
    /// keys of other types (`oct`: weft never trusts a shared secret; unknown `kty`; curves `jsonwebtoken`
    /// does not verify) are skipped. The error says what is wrong in Envoy's words.
    pub fn parse(text: &str) -> Result<Jwks, String> {
        let doc: Value =
            serde_json::from_str(text).map_err(|_| "Jwks is an invalid JSON".to_string())?;
        let keys = match doc.get("keys") {
            None => return Err("Jwks does not have [keys] field".into()),
            Some(Value::Array(k)) => k,
            Some(_) => return Err("[keys] in Jwks is not an array".into()),
        };
        let mut out = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let key = Self::key(k).map_err(|why| format!("keys[{i}]: {why}"))?;
            out.extend(key);
        }
        if out.is_empty() {
            return Err("Jwks doesn't have any valid public key".into());
        }
        Ok(Jwks { keys: out })
    }

    /// One key; `None` for a type weft skips.
    fn key(k: &Value) -> Result<Option<Key>, String> {
        let kty = match k.get("kty") {
            None => return Err("[kty] is missing in [keys]".into()),
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err("[kty] is bad in [keys]".into()),
        };
        let kid = match k.get("kid") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err("[kid] field is not a string".into()),
        };
        let alg = match k.get("alg") {
            None => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return Err("[alg] field is not a string".into()),
        };
        let bad_key = |_| format!("[{kty}] key material does not decode");
        let (kind, key) = match kty {
            "RSA" => {
                if alg.is_some_and(|a| !a.starts_with("RS") && !a.starts_with("PS")) {
                    return Err("[alg] is not started with [RS] or [PS] for an RSA key".into());
                }
                let n = field(k, "n", "a RSA key")?;
                let e = field(k, "e", "a RSA key")?;
                (
                    KeyKind::Rsa,
                    DecodingKey::from_rsa_components(n, e).map_err(bad_key)?,
                )
            }
            "EC" => {
                if alg.is_some_and(|a| !a.starts_with("ES")) {
                    return Err("[alg] is not started with [ES] for an EC key".into());
                }
                let kind = match (k.get("crv").and_then(Value::as_str), alg) {
                    (Some("P-256"), None | Some("ES256")) | (None, Some("ES256")) => KeyKind::P256,
                    (Some("P-384"), None | Some("ES384")) | (None, Some("ES384")) => KeyKind::P384,
                    (Some("P-256" | "P-384"), Some(_)) => {
                        return Err(
                            "[crv] field specified is not compatible with [alg] for an EC key"
                                .into(),
                        )
                    }
                    // P-521 (ES512) and others: jsonwebtoken 9 verifies neither.
                    _ => return Ok(None),
                };
                let x = field(k, "x", "an EC key")?;
                let y = field(k, "y", "an EC key")?;
                (
                    kind,
                    DecodingKey::from_ec_components(x, y).map_err(bad_key)?,
                )
            }
            "OKP" => {
                if alg.is_some_and(|a| a != "EdDSA") {
                    return Err("[alg] is not [EdDSA] for an OKP key".into());
                }
                match k.get("crv").and_then(Value::as_str) {
                    Some("Ed25519") => {}
                    None => return Err("[crv] field is missing for an OKP key".into()),
                    Some(_) => return Ok(None),
                }
                let x = field(k, "x", "an OKP key")?;
                (
                    KeyKind::Ed25519,
                    DecodingKey::from_ed_components(x).map_err(bad_key)?,
                )
            }
            // Shared secrets and unknown types.
            _ => return Ok(None),
        };
        let alg = match alg {
            None => None,
            Some(a) => Some(parse_alg(a).ok_or_else(|| format!("[alg] {a:?} is not supported"))?),
        };
        Ok(Some(Key {
            kid,
            alg,
            kind,
            key,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::test_keys::{sign, Signer};

    const NOW: u64 = 1_700_000_000;

    fn claims(extra: Value) -> Value {
        let mut c = serde_json::json!({"iss": "https://issuer.example", "sub": "alice",
            "aud": "bookinfo", "iat": NOW, "exp": NOW + 3600});
        if let (Some(m), Value::Object(x)) = (c.as_object_mut(), extra) {
            m.extend(x);
        }
        c
    }

    #[test]
    fn tokens_of_every_supported_kind_verify_with_their_key_only() {
        let signers = [
            Signer::es256("k1"),
            Signer::es384("k2"),
            Signer::ed25519("k3"),
            Signer::rs256("k4"),
        ];
        let all = Jwks::parse(&Signer::jwks(&signers.iter().collect::<Vec<_>>())).expect("jwks");
        assert_eq!(all.keys.len(), 4);
        for s in &signers {
            let token = sign(s, &claims(Value::Null));
            let jwt = Jwt::parse(&token).expect("parses");
            assert_eq!(jwt.verify(&all), Ok(()), "{:?}", s.alg);
            assert_eq!(jwt.iss(), "https://issuer.example");
            // Without the key that signed it, by kid: no candidate at all.
            let others = Jwks {
                keys: all
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() != Some(&s.kid))
                    .cloned()
                    .collect(),
            };
            assert_eq!(jwt.verify(&others), Err(Failure::KidAlgMismatch));
        }
    }

    #[test]
    fn keys_are_picked_by_kid_or_tried_in_turn() {
        let a = Signer::es256("a");
        let b = Signer::es256("b");
        let jwks = Jwks::parse(&Signer::jwks(&[&a, &b])).expect("jwks");
        // No kid in the token: every key of the type is tried, b's signature verifies with b.
        let token = sign(&b.without_kid(), &claims(Value::Null));
        assert_eq!(Jwt::parse(&token).expect("parse").verify(&jwks), Ok(()));
        // A kid naming a key that did not sign: that key alone is tried, and fails.
        let token = sign(&b.with_kid("a"), &claims(Value::Null));
        assert_eq!(
            Jwt::parse(&token).expect("parse").verify(&jwks),
            Err(Failure::VerificationFail)
        );
        // An unknown kid: no key.
        let token = sign(&b.with_kid("zzz"), &claims(Value::Null));
        assert_eq!(
            Jwt::parse(&token).expect("parse").verify(&jwks),
            Err(Failure::KidAlgMismatch)
        );
        // A key with no kid is a candidate for any kid (as in Envoy).
        let nameless = Jwks::parse(&Signer::jwks(&[&b.without_kid()])).expect("jwks");
        let token = sign(&b.with_kid("zzz"), &claims(Value::Null));
        assert_eq!(Jwt::parse(&token).expect("parse").verify(&nameless), Ok(()));
        // An empty set.
        assert_eq!(
            Jwt::parse(&token).expect("parse").verify(&Jwks::default()),
            Err(Failure::NoValidKeys)
        );
    }

    #[test]
    fn a_tampered_payload_or_signature_fails() {
        let s = Signer::es256("k");
        let jwks = Jwks::parse(&Signer::jwks(&[&s])).expect("jwks");
        let token = sign(&s, &claims(Value::Null));
        let (head, rest) = token.split_once('.').expect("dots");
        let (_, sig) = rest.split_once('.').expect("dots");
        let forged_payload =
            B64URL.encode(claims(serde_json::json!({"sub": "mallory"})).to_string());
        let forged = format!("{head}.{forged_payload}.{sig}");
        assert_eq!(
            Jwt::parse(&forged).expect("parse").verify(&jwks),
            Err(Failure::VerificationFail)
        );
        // The signature of another key of the same type.
        let other = sign(&Signer::es256("k"), &claims(Value::Null));
        assert_eq!(
            Jwt::parse(&other).expect("parse").verify(&jwks),
            Err(Failure::VerificationFail)
        );
    }

    #[test]
    fn alg_none_and_hmac_with_the_public_key_are_refused() {
        let s = Signer::rs256("k");
        let jwks = Jwks::parse(&Signer::jwks(&[&s])).expect("jwks");
        let payload = B64URL.encode(claims(Value::Null).to_string());
        // `alg: none`, with or without a signature section.
        let none = B64URL.encode(r#"{"alg":"none","typ":"JWT"}"#);
        for t in [
            format!("{none}.{payload}."),
            format!("{none}.{payload}.AAAA"),
        ] {
            assert_eq!(
                Jwt::parse(&t).map(|_| ()),
                Err(Failure::HeaderNotImplementedAlg),
                "{t}"
            );
        }
        // HS256 keyed with the provider's public key, as an attacker would try: the token parses,
        // but no key of the set verifies HMAC.
        let head = B64URL.encode(r#"{"alg":"HS256","typ":"JWT","kid":"k"}"#);
        let signed = format!("{head}.{payload}");
        for secret in [s.public_der(), s.jwk().to_string().into_bytes()] {
            let key = jsonwebtoken::EncodingKey::from_secret(&secret);
            let mac =
                jsonwebtoken::crypto::sign(signed.as_bytes(), &key, Algorithm::HS256).expect("mac");
            let t = format!("{signed}.{mac}");
            assert_eq!(
                Jwt::parse(&t).expect("parses").verify(&jwks),
                Err(Failure::KidAlgMismatch)
            );
        }
        // And a JWKS's shared-secret keys are never loaded.
        let oct = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","alg":"HS256"}]}"#;
        assert_eq!(
            Jwks::parse(oct).map(|_| ()),
            Err("Jwks doesn't have any valid public key".into())
        );
    }

    #[test]
    fn an_rsa_key_is_never_offered_an_ec_token() {
        // jsonwebtoken panics when asked to verify ES256 with RSA components: the kind check comes
        // first. A key with no kid and no alg is a candidate by kid and alg, not by type.
        let rsa = Signer::rs256("k");
        let jwks = Jwks::parse(&Signer::jwks(&[&rsa.without_kid()])).expect("jwks");
        let ec = Signer::es256("k");
        for token in [
            sign(&ec, &claims(Value::Null)),
            sign(&Signer::ed25519("k"), &claims(Value::Null)),
        ] {
            assert_eq!(
                Jwt::parse(&token).expect("parse").verify(&jwks),
                Err(Failure::KidAlgMismatch)
            );
        }
    }

    #[test]
    fn malformed_tokens_fail_with_envoys_words() {
        let h = |s: &str| B64URL.encode(s);
        let p = |v: Value| B64URL.encode(v.to_string());
        let good_head = h(r#"{"alg":"ES256"}"#);
        let good_payload = p(claims(Value::Null));
        let cases: Vec<(&str, String, Failure)> = vec![
            (
                "two sections",
                format!("{good_head}.{good_payload}"),
                Failure::BadFormat,
            ),
            (
                "four sections",
                format!("{good_head}.{good_payload}.AA.AA"),
                Failure::BadFormat,
            ),
            (
                "header not base64",
                format!("**.{good_payload}.AA"),
                Failure::HeaderBadBase64,
            ),
            (
                "header not json",
                format!("{}.{good_payload}.AA", h("{")),
                Failure::HeaderBadJson,
            ),
            (
                "no alg",
                format!("{}.{good_payload}.AA", h("{}")),
                Failure::HeaderBadAlg,
            ),
            (
                "alg a number",
                format!("{}.{good_payload}.AA", h(r#"{"alg":1}"#)),
                Failure::HeaderBadAlg,
            ),
            (
                "ES512",
                format!("{}.{good_payload}.AA", h(r#"{"alg":"ES512"}"#)),
                Failure::HeaderNotImplementedAlg,
            ),
            (
                "kid a number",
                format!("{}.{good_payload}.AA", h(r#"{"alg":"ES256","kid":3}"#)),
                Failure::HeaderBadKid,
            ),
            (
                "payload not base64",
                format!("{good_head}.*.AA"),
                Failure::PayloadBadBase64,
            ),
            (
                "payload a list",
                format!("{good_head}.{}.AA", p(serde_json::json!([1]))),
                Failure::PayloadBadJson,
            ),
            (
                "iss a number",
                format!("{good_head}.{}.AA", p(serde_json::json!({"iss": 1}))),
                Failure::IssNotString,
            ),
            (
                "sub a list",
                format!("{good_head}.{}.AA", p(serde_json::json!({"sub": []}))),
                Failure::SubNotString,
            ),
            (
                "exp a string",
                format!("{good_head}.{}.AA", p(serde_json::json!({"exp": "soon"}))),
                Failure::ExpNotInteger,
            ),
            (
                "exp negative",
                format!("{good_head}.{}.AA", p(serde_json::json!({"exp": -1}))),
                Failure::ExpOutOfRange,
            ),
            (
                "nbf a string",
                format!("{good_head}.{}.AA", p(serde_json::json!({"nbf": "x"}))),
                Failure::NbfNotInteger,
            ),
            (
                "iat a bool",
                format!("{good_head}.{}.AA", p(serde_json::json!({"iat": true}))),
                Failure::IatNotInteger,
            ),
            (
                "jti a number",
                format!("{good_head}.{}.AA", p(serde_json::json!({"jti": 1}))),
                Failure::JtiNotString,
            ),
            (
                "aud a number",
                format!("{good_head}.{}.AA", p(serde_json::json!({"aud": 1}))),
                Failure::AudNotString,
            ),
            (
                "aud a mixed list",
                format!("{good_head}.{}.AA", p(serde_json::json!({"aud": ["a", 1]}))),
                Failure::AudNotString,
            ),
            (
                "no signature",
                format!("{good_head}.{good_payload}."),
                Failure::SignatureBadBase64,
            ),
            (
                "signature not base64",
                format!("{good_head}.{good_payload}.a+b/"),
                Failure::SignatureBadBase64,
            ),
        ];
        for (name, token, want) in cases {
            assert_eq!(Jwt::parse(&token).map(|_| ()), Err(want), "{name}");
        }
        assert_eq!(
            Failure::BadFormat.message(),
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
        );
    }

    #[test]
    fn time_window_with_skew() {
        let s = Signer::es256("k");
        let at = |c: Value| sign(&s, &c);
        let check = |t: &str, skew| Jwt::parse(t).expect("parse").check_time(NOW, skew);
        let expired = at(serde_json::json!({"exp": NOW - 61}));
        assert_eq!(check(&expired, 60), Err(Failure::Expired));
        assert_eq!(check(&expired, 61), Ok(()));
        assert_eq!(check(&at(serde_json::json!({"exp": NOW - 60})), 60), Ok(()));
        let early = at(serde_json::json!({"nbf": NOW + 61}));
        assert_eq!(check(&early, 60), Err(Failure::NotYetValid));
        assert_eq!(check(&at(serde_json::json!({"nbf": NOW + 60})), 60), Ok(()));
        // No exp: never expires (Envoy's reading; require_expiration is refused at config).
        assert_eq!(check(&at(serde_json::json!({"sub": "x"})), 0), Ok(()));
        // Fractional dates are truncated.
        assert_eq!(
            check(&at(serde_json::json!({"exp": (NOW - 1) as f64 + 0.5})), 0),
            Err(Failure::Expired)
        );
    }

    #[test]
    fn audiences_any_listed_normalized() {
        let s = Signer::es256("k");
        let jwt = |aud: Value| {
            let t = sign(&s, &serde_json::json!({ "aud": aud }));
            let j = Jwt::parse(&t).expect("parse");
            (
                j.audience_allowed(&["bookinfo".into()]),
                j.audience_allowed(&[]),
            )
        };
        assert_eq!(jwt(serde_json::json!("bookinfo")), (true, true));
        assert_eq!(jwt(serde_json::json!("https://bookinfo/")), (true, true));
        assert_eq!(
            jwt(serde_json::json!(["other", "http://bookinfo"])),
            (true, true)
        );
        assert_eq!(jwt(serde_json::json!("other")), (false, true));
        assert_eq!(jwt(serde_json::json!([])), (false, true));
        let none = sign(&s, &serde_json::json!({"sub": "x"}));
        assert!(!Jwt::parse(&none)
            .expect("parse")
            .audience_allowed(&["a".into()]));
        assert_eq!(normalize_audience("https://a.example/"), "a.example");
    }

    #[test]
    fn jwks_documents_in_envoys_words() {
        let cases = [
            ("{", "Jwks is an invalid JSON"),
            ("{}", "Jwks does not have [keys] field"),
            (r#"{"keys": 1}"#, "[keys] in Jwks is not an array"),
            (r#"{"keys": []}"#, "Jwks doesn't have any valid public key"),
            (
                r#"{"keys": [{"n": "x"}]}"#,
                "keys[0]: [kty] is missing in [keys]",
            ),
            (
                r#"{"keys": [{"kty": "RSA", "e": "AQAB"}]}"#,
                "keys[0]: [n] field is missing for a RSA key",
            ),
            (
                r#"{"keys": [{"kty": "RSA", "alg": "ES256", "n": "x", "e": "AQAB"}]}"#,
                "keys[0]: [alg] is not started with [RS] or [PS] for an RSA key",
            ),
            (
                r#"{"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES384", "x": "x", "y": "y"}]}"#,
                "keys[0]: [crv] field specified is not compatible with [alg] for an EC key",
            ),
            (
                r#"{"keys": [{"kty": "OKP", "x": "x"}]}"#,
                "keys[0]: [crv] field is missing for an OKP key",
            ),
            (
                r#"{"keys": [{"kty": "EC", "crv": "P-521", "x": "x", "y": "y"}]}"#,
                "Jwks doesn't have any valid public key",
            ),
        ];
        for (doc, want) in cases {
            assert_eq!(Jwks::parse(doc).map(|_| ()), Err(want.to_string()), "{doc}");
        }
    }
}
