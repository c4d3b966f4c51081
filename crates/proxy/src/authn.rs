//! Request authentication: Envoy's `envoy.filters.http.jwt_authn` filter, as Istio configures it for a
//! RequestAuthentication (`SPEC.md` §2.3). A listener's filter config is compiled once per push
//! ([`JwtAuthn`], in `authn/config.rs`); each request then has its tokens found (`authn/extract.rs`),
//! parsed and verified (`authn/token.rs`), and its requirement tree evaluated as Envoy's verifiers do.
//!
//! A request with no token passes unauthenticated under Istio's requirement (`requires_any` of the
//! providers and `allow_missing`); an invalid one is refused with Envoy's status and body. A verified
//! token yields what Istio's `istio_authn` filter metadata holds, for the RBAC check:
//! `request.auth.principal` (`iss/sub`), `request.auth.audiences`, `request.auth.presenter` (`azp`)
//! and `request.auth.claims`. Authorization itself is not here.

mod config;
mod extract;
#[cfg(test)]
pub(crate) mod test_keys;
#[cfg(test)]
mod tests;
mod token;

pub use config::{ConfigError, DEFAULT_CLOCK_SKEW, FILTER_NAME, TYPE_URL};
pub use token::Failure;

use crate::config::route::{RequestView, RouteMatch};
use crate::http::Entry;
use crate::Shared;
use extract::{Found, Location};
use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use token::{Jwks, Jwt};

/// The key of the principal (`iss/sub`) in [`JwtAuthn::authenticate`]'s result.
pub const PRINCIPAL: &str = "request.auth.principal";
/// The key of the audiences (a list of strings).
pub const AUDIENCES: &str = "request.auth.audiences";
/// The key of the presenter (`azp`), present only when the token has one.
pub const PRESENTER: &str = "request.auth.presenter";
/// The key of the claims (the payload, with space-delimited claims split into lists).
pub const CLAIMS: &str = "request.auth.claims";

/// How many compiled filters exist in this process. The request path reads it first: a sidecar whose
/// listeners have no `jwt_authn` filter pays one relaxed load and a branch per request, not a
/// snapshot lookup.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Counts one compiled filter in [`LIVE`] while it exists.
struct Live;

impl Live {
    fn new() -> Live {
        LIVE.fetch_add(1, Ordering::Relaxed);
        Live
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A listener's `jwt_authn` filter, compiled.
pub struct JwtAuthn {
    /// By name order (the issuer lookup's "first provider").
    providers: Vec<Provider>,
    /// The first whose match holds applies; none: no verification.
    rules: Vec<Rule>,
    /// An OPTIONS request with `Origin` and `Access-Control-Request-Method` is not checked.
    bypass_cors_preflight: bool,
    /// Refusals carry no body and no `WWW-Authenticate`.
    strip_failure_response: bool,
    _live: Live,
}

impl std::fmt::Debug for JwtAuthn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthn")
            .field(
                "providers",
                &self.providers.iter().map(|p| &p.name).collect::<Vec<_>>(),
            )
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

/// One provider: an issuer, its keys, where its tokens are and what a verified token does.
struct Provider {
    name: String,
    /// Empty: any issuer.
    issuer: String,
    /// Normalized (no scheme, no trailing `/`); empty: any.
    audiences: Vec<String>,
    keys: Jwks,
    /// Where its tokens are, each place allowing this provider's issuer.
    locations: Vec<Location>,
    /// Keep the token on the request.
    forward: bool,
    /// `forward_payload_header`.
    payload_header: Option<HeaderName>,
    /// Pad the forwarded payload to a multiple of 4 characters.
    pad_payload: bool,
    /// `claim_to_headers`: the header and the claim's path.
    claim_headers: Vec<(HeaderName, Vec<String>)>,
    /// Seconds of grace on `exp` and `nbf`.
    clock_skew: u64,
    /// Claims whose string value is split on spaces in the result (Istio: `scope`, `permission`
    /// and `spaceDelimitedClaims`).
    space_delimited: Vec<String>,
}

/// A requirement tree node, as Envoy's verifiers evaluate it.
#[derive(Debug)]
enum Requirement {
    /// Every token at the provider's places verifies with it; no token fails (`Jwt is missing`).
    Provider {
        provider: usize,
        /// `provider_and_audiences`: these instead of the provider's.
        audiences: Option<Vec<String>>,
    },
    /// The first child that passes; else the last child's failure.
    Any(Vec<Requirement>),
    /// Every child passes; else the first failure.
    All(Vec<Requirement>),
    /// No token at these places passes; tokens there must verify with the provider of their issuer
    /// (unless `or_failed`, when failures pass too, unauthenticated).
    AllowMissing {
        locations: Vec<Location>,
        or_failed: bool,
    },
    /// Nothing to check.
    AllowAll,
}

/// A rule: a path condition and its requirement.
struct Rule {
    matcher: RouteMatch,
    requirement: Requirement,
    /// Headers the requirement's providers write, removed from the request first.
    sanitize: Vec<HeaderName>,
}

/// A request the filter refused: the status, body and challenge of Envoy's local reply.
#[derive(Debug, thiserror::Error)]
#[error("{}", .failure.message())]
pub struct Rejected {
    failure: Failure,
    challenge: Option<HeaderValue>,
    strip: bool,
}

impl Rejected {
    /// Why.
    pub fn failure(&self) -> Failure {
        self.failure
    }

    /// 401, or 403 for a disallowed audience (as Envoy).
    pub fn status(&self) -> http::StatusCode {
        self.failure.status()
    }

    /// The body: Envoy's words for the failure, or nothing with `strip_failure_response`.
    pub fn body(&self) -> &'static str {
        if self.strip {
            ""
        } else {
            self.failure.message()
        }
    }

    /// The `WWW-Authenticate` value: `Bearer realm="<original URI>"`, with `error="invalid_token"`
    /// unless the token was missing (none with `strip_failure_response`).
    pub fn challenge(&self) -> Option<&HeaderValue> {
        self.challenge.as_ref()
    }

    /// Envoy's `%RESPONSE_CODE_DETAILS%` for it: `jwt_authn_access_denied{Jwt_is_expired}`.
    pub fn details(&self) -> String {
        format!(
            "jwt_authn_access_denied{{{}}}",
            self.failure.message().replace(' ', "_")
        )
    }

    fn new(failure: Failure, parts: &Parts, strip: bool) -> Rejected {
        let challenge = (!strip).then(|| challenge(failure, parts)).flatten();
        Rejected {
            failure,
            challenge,
            strip,
        }
    }
}

/// Envoy's challenge: the realm is the request's original URI (path and query cut at 256 bytes).
fn challenge(failure: Failure, parts: &Parts) -> Option<HeaderValue> {
    let authority = crate::http::authority_of(&parts.uri, &parts.headers).unwrap_or_default();
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let pq = pq.get(..256).unwrap_or(pq);
    let mut v = format!("Bearer realm=\"http://{authority}{pq}\"");
    if failure != Failure::Missing {
        v.push_str(", error=\"invalid_token\"");
    }
    HeaderValue::from_str(&v).ok()
}

/// The request path's step: the listener's filter, when it has one, applied to the request head.
/// `Ok(None)`: nothing verified (no filter, no rule, or no token where none is required); `Ok(Some)`:
/// the first verified token's identity, in the form the RBAC check reads.
pub(crate) fn authenticate(
    shared: &Shared,
    entry: &Entry,
    parts: &mut Parts,
) -> Result<Option<Value>, Rejected> {
    if LIVE.load(Ordering::Relaxed) == 0 {
        return Ok(None);
    }
    // Istio puts jwt_authn on inbound and gateway listeners; the outbound explicit proxy has none.
    let (Entry::Inbound(name) | Entry::Gateway(name)) = entry else {
        return Ok(None);
    };
    let snap = shared.snapshot.load();
    match snap
        .listeners
        .get(&**name)
        .and_then(|l| l.value.jwt.as_ref())
    {
        Some(jwt) => jwt.authenticate(parts),
        None => Ok(None),
    }
}

/// The Unix time now, in seconds.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a verification run carries: the request, and the tokens verified so far.
struct Run<'r, 's> {
    parts: &'r mut Parts,
    now: u64,
    /// In order. Their effects (payload and claim headers, the token taken off) are applied only
    /// once the whole requirement has passed, so that a branch of `requires_any` that verified one
    /// token of several cannot hide the others from the next branch (Envoy removes a token as soon as
    /// it verifies, so there a good token beside a bad one can pass under `allow_missing`).
    verified: Vec<Verified<'s>>,
}

/// A token that verified.
struct Verified<'s> {
    provider: usize,
    place: &'s extract::Place,
    token: String,
    /// Where the payload section is in `token`.
    payload: std::ops::Range<usize>,
    claims: Map<String, Value>,
}

/// How a token's provider is chosen.
#[derive(Clone, Copy)]
enum By<'a> {
    /// This one, with these audiences.
    Provider(usize, &'a [String]),
    /// The first provider with the token's issuer, else the first with none.
    Issuer,
}

impl JwtAuthn {
    /// Applies the filter to a request head: removes the request's own copies of the headers the
    /// filter writes, finds and verifies the tokens the first matching rule requires, and on success
    /// adds the payload and claim headers and takes tokens off unless they are forwarded.
    pub fn authenticate(&self, parts: &mut Parts) -> Result<Option<Value>, Rejected> {
        self.authenticate_at(parts, unix_now())
    }

    /// [`JwtAuthn::authenticate`] at `now` (Unix seconds).
    pub fn authenticate_at(&self, parts: &mut Parts, now: u64) -> Result<Option<Value>, Rejected> {
        if self.bypass_cors_preflight && is_cors_preflight(parts) {
            return Ok(None);
        }
        let Some(rule) = self.rule_for(parts) else {
            return Ok(None);
        };
        for h in &rule.sanitize {
            parts.headers.remove(h);
        }
        let mut run = Run {
            parts,
            now,
            verified: Vec::new(),
        };
        if let Err(f) = self.eval(&rule.requirement, &mut run) {
            return Err(Rejected::new(f, run.parts, self.strip_failure_response));
        }
        let Run {
            parts, verified, ..
        } = run;
        let mut identity = None;
        for v in verified {
            let p = &self.providers[v.provider];
            if let Some(h) = &p.payload_header {
                let mut payload = v.token[v.payload.clone()].to_string();
                if p.pad_payload {
                    let pad = (4 - payload.len() % 4) % 4;
                    payload.extend(std::iter::repeat_n('=', pad));
                }
                if let Ok(value) = HeaderValue::from_str(&payload) {
                    parts.headers.append(h.clone(), value);
                }
            }
            for (h, path) in &p.claim_headers {
                if let Some(value) = claim_value(&v.claims, path) {
                    parts.headers.append(h.clone(), value);
                }
            }
            if !p.forward {
                extract::remove(v.place, parts);
            }
            if identity.is_none() {
                identity = Some(self.identity(v.provider, v.claims));
            }
        }
        Ok(identity)
    }

    /// The first rule whose match holds.
    fn rule_for(&self, parts: &Parts) -> Option<&Rule> {
        let view = RequestView {
            method: &parts.method,
            authority: crate::http::authority_of(&parts.uri, &parts.headers).unwrap_or_default(),
            path_and_query: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            scheme: "http",
            headers: &parts.headers,
        };
        self.rules.iter().find(|r| r.matcher.matches(&view))
    }

    fn eval<'s>(&'s self, req: &'s Requirement, run: &mut Run<'_, 's>) -> Result<(), Failure> {
        match req {
            Requirement::AllowAll => Ok(()),
            Requirement::Provider {
                provider,
                audiences,
            } => {
                let p = &self.providers[*provider];
                let found = tokens(&p.locations, run.parts);
                if found.is_empty() {
                    return Err(Failure::Missing);
                }
                let audiences = audiences.as_deref().unwrap_or(&p.audiences);
                for f in found {
                    self.check(f, &p.locations, By::Provider(*provider, audiences), run)?;
                }
                Ok(())
            }
            Requirement::AllowMissing {
                locations,
                or_failed,
            } => {
                for f in tokens(locations, run.parts) {
                    match self.check(f, locations, By::Issuer, run) {
                        Err(e) if !or_failed => return Err(e),
                        _ => {}
                    }
                }
                Ok(())
            }
            Requirement::Any(children) => {
                let mut last = Err(Failure::Missing);
                for c in children {
                    last = self.eval(c, run);
                    if last.is_ok() {
                        break;
                    }
                }
                last
            }
            Requirement::All(children) => children.iter().try_for_each(|c| self.eval(c, run)),
        }
    }

    /// One token, in Envoy's order: parse, issuer allowed at its place, provider, time, audience,
    /// signature (not again for a token this provider verified earlier in the run).
    fn check<'s>(
        &'s self,
        found: Found,
        locations: &'s [Location],
        by: By<'_>,
        run: &mut Run<'_, 's>,
    ) -> Result<(), Failure> {
        let jwt = Jwt::parse(&found.token)?;
        let location = &locations[found.at];
        if !location.allows(jwt.iss()) {
            return Err(Failure::UnknownIssuer);
        }
        let (index, audiences) = match by {
            By::Provider(i, a) => (i, a),
            By::Issuer => {
                let i = self.by_issuer(jwt.iss()).ok_or(Failure::UnknownIssuer)?;
                (i, &self.providers[i].audiences[..])
            }
        };
        let p = &self.providers[index];
        jwt.check_time(run.now, p.clock_skew)?;
        if !jwt.audience_allowed(audiences) {
            return Err(Failure::AudienceNotAllowed);
        }
        let seen = |v: &Verified<'_>| v.token == found.token;
        if !run.verified.iter().any(|v| seen(v) && v.provider == index) {
            jwt.verify(&p.keys)?;
        }
        if run
            .verified
            .iter()
            .any(|v| seen(v) && std::ptr::eq(v.place, &location.place))
        {
            return Ok(());
        }
        let payload = jwt.payload_range();
        let claims = jwt.claims;
        run.verified.push(Verified {
            provider: index,
            place: &location.place,
            token: found.token,
            payload,
            claims,
        });
        Ok(())
    }

    /// The provider for a token found where several providers look: the first with its issuer, else
    /// the first with no issuer (Envoy's `findByIssuer`).
    fn by_issuer(&self, iss: &str) -> Option<usize> {
        self.providers
            .iter()
            .position(|p| p.issuer == iss)
            .or_else(|| self.providers.iter().position(|p| p.issuer.is_empty()))
    }

    /// The identity a verified token gives the request, keyed as Istio's `istio_authn` metadata.
    fn identity(&self, provider: usize, mut claims: Map<String, Value>) -> Value {
        for name in &self.providers[provider].space_delimited {
            if let Some(Value::String(s)) = claims.get(name) {
                let parts = s.split(' ').filter(|p| !p.is_empty());
                let list = parts.map(|p| Value::String(p.to_string())).collect();
                claims.insert(name.clone(), Value::Array(list));
            }
        }
        let text = |k: &str| claims.get(k).and_then(Value::as_str).unwrap_or("");
        let principal = format!("{}/{}", text("iss"), text("sub"));
        let audiences = match claims.get("aud") {
            Some(Value::String(a)) => vec![Value::String(a.clone())],
            Some(Value::Array(a)) => a.clone(),
            _ => Vec::new(),
        };
        let presenter = claims.get("azp").filter(|v| v.is_string()).cloned();
        let mut out = Map::new();
        out.insert(PRINCIPAL.into(), Value::String(principal));
        out.insert(AUDIENCES.into(), Value::Array(audiences));
        if let Some(p) = presenter {
            out.insert(PRESENTER.into(), p);
        }
        out.insert(CLAIMS.into(), Value::Object(claims));
        Value::Object(out)
    }
}

/// The tokens at `locations`.
fn tokens(locations: &[Location], parts: &Parts) -> Vec<Found> {
    let mut out = Vec::new();
    extract::extract(locations, parts, &mut out);
    out
}

/// A CORS preflight: OPTIONS with `Origin` and `Access-Control-Request-Method` (it carries no
/// credentials).
fn is_cors_preflight(parts: &Parts) -> bool {
    let set = |h: HeaderName| parts.headers.get(h).is_some_and(|v| !v.is_empty());
    parts.method == http::Method::OPTIONS
        && set(http::header::ORIGIN)
        && set(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// A claim as a header value, as Envoy writes it: a string as is, an integer in decimal, another
/// number in C's `%f`, a boolean as `true`/`false`; other types and empty strings write nothing.
fn claim_value(claims: &Map<String, Value>, path: &[String]) -> Option<HeaderValue> {
    let (first, rest) = path.split_first()?;
    let mut v = claims.get(first)?;
    for k in rest {
        v = v.get(k)?;
    }
    let text = match v {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => u.to_string(),
            (None, Some(f))
                if (0.0..18_446_744_073_709_551_616.0).contains(&f) && f.fract() == 0.0 =>
            {
                (f as u64).to_string()
            }
            (None, Some(f)) => format!("{f:.6}"),
            _ => return None,
        },
        _ => return None,
    };
    HeaderValue::from_str(&text).ok()
}
