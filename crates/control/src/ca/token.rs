//! Per-workload tokens: how a proxy proves, in directory mode, which workload it is. weftd signs them
//! with an HMAC-SHA256 key kept in the state directory (`token-key`, 32 random bytes, mode 0600) and
//! hands them out through `weftd token`; the CA takes the caller's identity from the token alone.
//!
//! The format is one line of ASCII:
//!
//! ```text
//! weft1:<namespace>:<service-account>:<expiry>:<mac>
//! ```
//!
//! `<expiry>` is the end of validity in seconds since the Unix epoch; `<mac>` is the HMAC-SHA256, in
//! lowercase hex, of everything before the last `:` (`weft1:<namespace>:<service-account>:<expiry>`).
//! Kubernetes names cannot contain `:`, so the fields need no escaping. The token is a bearer
//! credential: whoever holds it gets certificates for that workload until it expires.

use super::{read, write_new, Error, WorkloadId};
use ring::hmac;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The version prefix.
pub const PREFIX: &str = "weft1";
/// Length of the key, bytes.
const KEY_LEN: usize = 32;
/// Default lifetime of a token `weftd token` prints (a year).
pub const DEFAULT_TOKEN_TTL: &str = "8760h";

/// Why a token was refused; the message says which check failed, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not of the documented form.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The MAC does not verify: forged, altered, or signed with another key.
    #[error("token signature does not verify: forged, altered, or issued by another weftd")]
    Forged,
    /// Past its expiry.
    #[error("token expired at unix time {0}")]
    Expired(u64),
}

/// The key that signs and verifies tokens.
pub struct TokenKey {
    key: hmac::Key,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// Loads `<dir>/token-key`, generating it on first use.
    pub fn load_or_create(dir: &Path) -> Result<TokenKey, Error> {
        super::create_private_dir(dir)?;
        let path = dir.join(super::files::TOKEN_KEY);
        if !path.exists() {
            use ring::rand::SecureRandom;
            let mut k = [0u8; KEY_LEN];
            ring::rand::SystemRandom::new()
                .fill(&mut k)
                .map_err(|_| Error::Io {
                    action: "generate",
                    path: path.clone(),
                    source: std::io::Error::other("the OS has no randomness"),
                })?;
            match write_new(&path, &k, true) {
                Ok(()) => tracing::info!(key = %path.display(), "generated the token key"),
                // Another process made it first: use theirs.
                Err(Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        let bytes = read(&path)?;
        TokenKey::from_bytes(&bytes).ok_or(Error::Pem {
            path,
            reason: format!(
                "a token key is {KEY_LEN} bytes, this file has {}",
                bytes.len()
            ),
        })
    }

    /// A key from its raw bytes (exactly 32).
    pub fn from_bytes(bytes: &[u8]) -> Option<TokenKey> {
        (bytes.len() == KEY_LEN).then(|| TokenKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        })
    }

    /// A token for `id`, valid until `expires` (whole seconds).
    pub fn issue(&self, id: &WorkloadId, expires: SystemTime) -> String {
        let exp = expires
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let body = format!("{PREFIX}:{}:{}:{exp}", id.namespace, id.service_account);
        let tag = hmac::sign(&self.key, body.as_bytes());
        let mut out = body;
        out.push(':');
        for b in tag.as_ref() {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// The workload `token` names, if its MAC verifies (in constant time) and it has not expired at
    /// `now`.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<WorkloadId, TokenError> {
        let token = token.trim();
        let (body, mac_hex) = token
            .rsplit_once(':')
            .ok_or(TokenError::Malformed("want weft1:<ns>:<sa>:<expiry>:<mac>"))?;
        let mut parts = body.split(':');
        let (Some(prefix), Some(ns), Some(sa), Some(exp), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TokenError::Malformed(
                "want five ':'-separated fields: weft1:<ns>:<sa>:<expiry>:<mac>",
            ));
        };
        if prefix != PREFIX {
            return Err(TokenError::Malformed("does not start with weft1:"));
        }
        let mac = hex(mac_hex).ok_or(TokenError::Malformed(
            "the MAC is not 64 hexadecimal digits",
        ))?;
        // The MAC first: nothing else of a forged token is believed.
        hmac::verify(&self.key, body.as_bytes(), &mac).map_err(|_| TokenError::Forged)?;
        let exp: u64 = exp
            .parse()
            .map_err(|_| TokenError::Malformed("the expiry is not a number of seconds"))?;
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if now >= exp {
            return Err(TokenError::Expired(exp));
        }
        WorkloadId::new(ns, sa)
            .map_err(|_| TokenError::Malformed("bad namespace or service account"))
    }
}

fn hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let d = |c: u8| (c as char).to_digit(16);
        out[i] = (d(pair[0])? * 16 + d(pair[1])?) as u8;
    }
    Some(out)
}

/// `weftd token`: print a workload's token.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "weftd token",
    about = "Print a workload's token for weftd's CA (give it to the sidecar's --ca-token-file)"
)]
pub struct TokenArgs {
    /// weftd's state directory (the token key is created there if missing).
    #[arg(long, env = "WEFTD_STATE_DIR")]
    pub state_dir: PathBuf,
    /// The workload's namespace.
    #[arg(long)]
    pub namespace: String,
    /// The workload's service account.
    #[arg(long)]
    pub service_account: String,
    /// How long the token is valid (`8760h`, `30m`).
    #[arg(long, default_value = DEFAULT_TOKEN_TTL, value_parser = crate::parse_duration)]
    pub ttl: Duration,
}

/// Why `weftd token` printed nothing.
#[derive(Debug, thiserror::Error)]
pub enum TokenCommandError {
    /// A name is not valid.
    #[error("{0}")]
    Name(String),
    /// The key could not be read or made.
    #[error("cannot load the token key")]
    Key(#[source] Error),
}

/// Makes the token `args` ask for.
pub fn token_command(args: &TokenArgs) -> Result<String, TokenCommandError> {
    let id =
        WorkloadId::new(&args.namespace, &args.service_account).map_err(TokenCommandError::Name)?;
    let key = TokenKey::load_or_create(&args.state_dir).map_err(TokenCommandError::Key)?;
    Ok(key.issue(&id, SystemTime::now() + args.ttl))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> TokenKey {
        TokenKey::from_bytes(&[b; KEY_LEN]).expect("32 bytes")
    }

    fn reviews() -> WorkloadId {
        WorkloadId::new("default", "bookinfo-reviews").expect("valid")
    }

    #[test]
    fn a_token_names_its_workload_until_it_expires() {
        let k = key(1);
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let t = k.issue(&reviews(), now + Duration::from_secs(60));
        assert!(
            t.starts_with("weft1:default:bookinfo-reviews:1700000060:"),
            "{t}"
        );
        assert_eq!(k.verify(&t, now), Ok(reviews()));
        assert_eq!(
            k.verify(&format!("  {t}\n"), now),
            Ok(reviews()),
            "a file's newline"
        );
        assert_eq!(
            k.verify(&t, now + Duration::from_secs(60)),
            Err(TokenError::Expired(1_700_000_060))
        );
    }

    #[test]
    fn forged_altered_and_malformed_tokens_are_refused_saying_why() {
        let k = key(1);
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let t = k.issue(&reviews(), now + Duration::from_secs(60));
        let other_key = key(2).issue(&reviews(), now + Duration::from_secs(60));
        let other_sa = t.replacen("bookinfo-reviews", "bookinfo-ratings", 1);
        let later = t.replacen("1700000060", "1900000060", 1);
        let (body, _) = t.rsplit_once(':').expect("mac");
        let cases: &[(&str, String, TokenError)] = &[
            ("another weftd's key", other_key, TokenError::Forged),
            ("another service account", other_sa, TokenError::Forged),
            ("a later expiry", later, TokenError::Forged),
            (
                "a zero MAC",
                format!("{body}:{}", "0".repeat(64)),
                TokenError::Forged,
            ),
            (
                "empty",
                String::new(),
                TokenError::Malformed("want weft1:<ns>:<sa>:<expiry>:<mac>"),
            ),
            (
                "a JWT",
                "eyJhbGciOiJIUzI1NiJ9.e30.x".into(),
                TokenError::Malformed("want weft1:<ns>:<sa>:<expiry>:<mac>"),
            ),
            (
                "short MAC",
                format!("{body}:abcd"),
                TokenError::Malformed("the MAC is not 64 hexadecimal digits"),
            ),
            (
                "extra field",
                format!("weft1:a:b:c:1:{}", "0".repeat(64)),
                TokenError::Malformed(
                    "want five ':'-separated fields: weft1:<ns>:<sa>:<expiry>:<mac>",
                ),
            ),
            (
                "other version",
                t.replacen("weft1", "weft2", 1),
                TokenError::Malformed("does not start with weft1:"),
            ),
        ];
        for (name, token, want) in cases {
            assert_eq!(k.verify(token, now).as_ref(), Err(want), "case {name}");
        }
        assert_eq!(
            TokenError::Forged.to_string(),
            "token signature does not verify: forged, altered, or issued by another weftd"
        );
        assert_eq!(
            TokenError::Expired(5).to_string(),
            "token expired at unix time 5"
        );
    }

    #[test]
    fn the_key_is_made_once_private_and_shared_with_the_command() {
        let dir = crate::ca::authority::test_dir("token");
        let args = TokenArgs {
            state_dir: dir.clone(),
            namespace: "default".into(),
            service_account: "bookinfo-reviews".into(),
            ttl: Duration::from_secs(3600),
        };
        let t = token_command(&args).expect("a token");
        let k = TokenKey::load_or_create(&dir).expect("the same key");
        assert_eq!(k.verify(&t, SystemTime::now()), Ok(reviews()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("token-key"))
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let bad = TokenArgs {
            namespace: "Default".into(),
            ..args
        };
        assert!(token_command(&bad)
            .expect_err("bad name")
            .to_string()
            .starts_with("namespace \"Default\" is not a DNS-1123 label"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
