//! Test-only signing keys, made when the tests run: ECDSA (P-256, P-384) and Ed25519 keys from ring,
//! RSA keys from Debian's `openssl` (ring verifies RSA but does not generate it). Nothing here is
//! compiled outside `cfg(test)`.

use super::token::B64URL;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use serde_json::{json, Value};
use std::sync::{Arc, OnceLock};

/// A private key that signs tokens, with the public half as a JWK.
#[derive(Clone)]
pub struct Signer {
    /// The token's `alg`.
    pub alg: Algorithm,
    /// The key's `kid` (in the JWK, and in tokens unless `without_kid`).
    pub kid: String,
    /// Whether tokens and the JWK carry the kid.
    with_kid: bool,
    key: Arc<Private>,
}

enum Private {
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

fn rng() -> &'static SystemRandom {
    static RNG: OnceLock<SystemRandom> = OnceLock::new();
    RNG.get_or_init(SystemRandom::new)
}

impl Signer {
    fn new(alg: Algorithm, kid: &str, key: Private) -> Signer {
        Signer {
            alg,
            kid: kid.into(),
            with_kid: true,
            key: Arc::new(key),
        }
    }

    fn ec(alg: Algorithm, kid: &str, signing: &'static signature::EcdsaSigningAlgorithm) -> Signer {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(signing, rng()).expect("ec key");
        let pair = EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), rng()).expect("ec pair");
        Signer::new(alg, kid, Private::Ec(pair))
    }

    /// A new ES256 key.
    pub fn es256(kid: &str) -> Signer {
        Signer::ec(
            Algorithm::ES256,
            kid,
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        )
    }

    /// A new ES384 key.
    pub fn es384(kid: &str) -> Signer {
        Signer::ec(
            Algorithm::ES384,
            kid,
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        )
    }

    /// A new Ed25519 key.
    pub fn ed25519(kid: &str) -> Signer {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(rng()).expect("ed key");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("ed pair");
        Signer::new(Algorithm::EdDSA, kid, Private::Ed(pair))
    }

    /// An RS256 key: one 2048-bit key per test process, made by `openssl` (about 0.1 s), under
    /// whichever kid is asked for.
    pub fn rs256(kid: &str) -> Signer {
        static DER: OnceLock<Vec<u8>> = OnceLock::new();
        let der = DER.get_or_init(|| {
            let out = std::process::Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-outform",
                    "DER",
                ])
                .output()
                .expect("the RSA tests need Debian's openssl to make a key");
            assert!(out.status.success(), "openssl genpkey failed");
            out.stdout
        });
        // OpenSSL writes an RSA key in DER as PKCS#1 `RSAPrivateKey`.
        let pair = RsaKeyPair::from_der(der).expect("rsa pair");
        Signer::new(Algorithm::RS256, kid, Private::Rsa(pair))
    }

    /// The same key, with no kid in its tokens or JWK.
    pub fn without_kid(&self) -> Signer {
        Signer {
            with_kid: false,
            ..self.clone()
        }
    }

    /// The same key under another kid.
    pub fn with_kid(&self, kid: &str) -> Signer {
        Signer {
            kid: kid.into(),
            with_kid: true,
            ..self.clone()
        }
    }

    /// The public key's bytes (an uncompressed point, the Ed25519 key, or RSA's DER `RSAPublicKey`).
    pub fn public_der(&self) -> Vec<u8> {
        match &*self.key {
            Private::Ec(k) => k.public_key().as_ref().to_vec(),
            Private::Ed(k) => k.public_key().as_ref().to_vec(),
            Private::Rsa(k) => k.public().as_ref().to_vec(),
        }
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        let b = |x: &[u8]| B64URL.encode(x);
        let pk = self.public_der();
        let mut jwk = match &*self.key {
            Private::Ec(_) => {
                let half = (pk.len() - 1) / 2;
                let crv = if self.alg == Algorithm::ES256 {
                    "P-256"
                } else {
                    "P-384"
                };
                json!({"kty": "EC", "crv": crv, "x": b(&pk[1..1 + half]), "y": b(&pk[1 + half..])})
            }
            Private::Ed(_) => json!({"kty": "OKP", "crv": "Ed25519", "x": b(&pk)}),
            Private::Rsa(_) => {
                let (n, e) = rsa_components(&pk);
                json!({"kty": "RSA", "n": b(n), "e": b(e)})
            }
        };
        if self.with_kid {
            jwk["kid"] = json!(self.kid);
        }
        jwk
    }

    /// A JWKS of these keys.
    pub fn jwks(keys: &[&Signer]) -> String {
        json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() }).to_string()
    }

    /// The signature of `message`.
    fn signature(&self, message: &[u8]) -> Vec<u8> {
        match &*self.key {
            Private::Ec(k) => k.sign(rng(), message).expect("sign").as_ref().to_vec(),
            Private::Ed(k) => k.sign(message).as_ref().to_vec(),
            Private::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, rng(), message, &mut sig)
                    .expect("sign");
                sig
            }
        }
    }
}

/// `n` and `e` of a DER `RSAPublicKey` (a sequence of two integers), without leading zeros.
fn rsa_components(der: &[u8]) -> (&[u8], &[u8]) {
    // One TLV: its value and what follows.
    fn tlv(b: &[u8]) -> (&[u8], &[u8]) {
        let (len, at) = match b[1] {
            l if l < 0x80 => (usize::from(l), 2),
            0x81 => (usize::from(b[2]), 3),
            0x82 => (usize::from(b[2]) << 8 | usize::from(b[3]), 4),
            l => panic!("DER length form {l:#x}"),
        };
        (&b[at..at + len], &b[at + len..])
    }
    let (seq, _) = tlv(der);
    let (n, rest) = tlv(seq);
    let (e, _) = tlv(rest);
    let trim = |x: &[u8]| -> usize { x.iter().take_while(|&&b| b == 0).count() };
    (&n[trim(n)..], &e[trim(e)..])
}

/// A token with these claims, signed by `s` (its header names `s`'s algorithm and kid).
pub fn sign(s: &Signer, claims: &Value) -> String {
    let alg = match s.alg {
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::EdDSA => "EdDSA",
        Algorithm::RS256 => "RS256",
        other => panic!("no test signer for {other:?}"),
    };
    let mut head = json!({"alg": alg, "typ": "JWT"});
    if s.with_kid {
        head["kid"] = json!(s.kid);
    }
    let signed = format!(
        "{}.{}",
        B64URL.encode(head.to_string()),
        B64URL.encode(claims.to_string())
    );
    let sig = s.signature(signed.as_bytes());
    format!("{signed}.{}", B64URL.encode(sig))
}
