//! Authorization, the data-plane half of Istio's AuthorizationPolicy: Envoy's RBAC filters as weftd sends
//! them (`envoy.filters.http.rbac` in a connection manager, `envoy.filters.network.rbac` before
//! `tcp_proxy`), compiled into matcher trees once per config push and evaluated per request or
//! connection without allocating; and the request path normalization that runs before them
//! ([`normalize`]).
//!
//! Envoy's semantics (SPEC.md §2.4): an engine with action ALLOW allows a request iff some policy
//! matches; DENY denies it iff some policy matches; LOG never denies. A policy matches when one of its
//! permissions and one of its principals do. Several filters on a listener are evaluated in their
//! order (Istio puts DENY before ALLOW) and the first denial stands. `shadow_rules` (Istio's dry-run and
//! AUDIT) never decide: [`Rbac::shadow_http`] reports what they would have.
//!
//! What is matched: a [`Subject`] (addresses, the peer's certificate identity, SNI, the JWT result) and,
//! for HTTP, the request head after normalization. Whatever a config holds that this module does not
//! implement refuses the listener, naming the field: a policy is never silently read as matching or
//! not. Weft does not evaluate CEL conditions, matcher-tree configs (`matcher`), audit loggers, filter
//! state or custom principals. ext_authz (Istio's CUSTOM action) is `crate::ext_authz`'s: the RBAC filter
//! whose shadow rules mark the requests it checks is handed to it ([`Filter::shadow_policy`]).

pub mod normalize;

mod matcher;

pub use normalize::{normalize_path, EscapedSlashes, PathNormalization, Rejected};

use matcher::{Input, Permission, Principal};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use weft_xds::pb::envoy::config::rbac::v3::{rbac::Action as XAction, Rbac as XRbac};
use weft_xds::pb::envoy::extensions::filters::http::rbac::v3::Rbac as XHttpRbac;
use weft_xds::pb::envoy::extensions::filters::network::rbac::v3::Rbac as XNetworkRbac;

/// The type of the HTTP RBAC filter's config.
pub const HTTP_RBAC_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
/// The type of the network RBAC filter's config.
pub const NETWORK_RBAC_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";
/// The HTTP RBAC filter's name.
pub const HTTP_RBAC_FILTER: &str = "envoy.filters.http.rbac";
/// The network RBAC filter's name.
pub const NETWORK_RBAC_FILTER: &str = "envoy.filters.network.rbac";
/// The body of a denied HTTP request, as Envoy's.
pub const DENIED_BODY: &str = "RBAC: access denied";

/// What a request or connection is matched against, borrowed from the connection and the request
/// path: built without allocating.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The downstream peer's address (`direct_remote_ip`, `source_ip`, and `remote_ip`: Weft trusts no
    /// `x-forwarded-for` hops).
    pub source: SocketAddr,
    /// The local address it connected to (`destination_ip`, `destination_port`).
    pub destination: SocketAddr,
    /// The peer certificate's URI SAN (`spiffe://td/ns/x/sa/y`), on mutual TLS only
    /// (`authenticated.principal_name`).
    pub principal: Option<&'a str>,
    /// The TLS server name the client asked for (`requested_server_name`; none reads as empty).
    pub sni: Option<&'a str>,
    /// The JWT result, shaped as Istio's `istio_authn` filter metadata: an object with
    /// `request.auth.principal`, `request.auth.audiences`, `request.auth.presenter` and
    /// `request.auth.claims` (an object of the token's claims). Metadata matchers read it, under
    /// `istio_authn` (its keys) or `envoy.filters.http.jwt_authn` / `payload` (the claims).
    pub auth: Option<&'a serde_json::Value>,
}

/// What the RBAC filters decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on.
    Allow,
    /// Refuse: 403 `RBAC: access denied` for HTTP, closed for TCP.
    Deny {
        /// The DENY policy that matched, for the access log; `None` when no ALLOW policy matched.
        policy: Option<Arc<str>>,
    },
}

impl Decision {
    /// Whether this is a denial.
    pub fn is_deny(&self) -> bool {
        matches!(self, Decision::Deny { .. })
    }
}

/// Why an RBAC filter's config was refused: the field, from the filter's config down, and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum RbacError {
    /// The config does not decode as its type.
    #[error("typed_config {type_url} does not decode")]
    Decode {
        /// The type.
        type_url: String,
        /// prost's error.
        #[source]
        source: weft_xds::DecodeError,
    },
    /// A filter of this name whose config is another type, or no config.
    #[error("typed_config: {what}")]
    Type {
        /// What it has.
        what: String,
    },
    /// Something Envoy has that Weft does not implement.
    #[error("{field}: {what} is not supported")]
    Unsupported {
        /// Where, as `rules.policies["p"].permissions[0].header`.
        field: String,
        /// What.
        what: String,
    },
    /// Something Envoy would refuse too.
    #[error("{field}: {why}")]
    Invalid {
        /// Where.
        field: String,
        /// Why.
        why: String,
    },
    /// A network RBAC filter in front of an HTTP connection manager.
    #[error(
        "a network RBAC filter before an HTTP connection manager is not supported (weft checks HTTP \
         requests with the HTTP RBAC filter in http_filters)"
    )]
    BeforeHttp,
    /// An HTTP RBAC filter disabled by default (enabled per route), which Weft does not do.
    #[error("disabled: an HTTP filter enabled per route is not supported")]
    Disabled,
    /// A regex that does not compile (or compiles too large).
    #[error("{field}: regex {regex:?} does not compile")]
    Regex {
        /// Where.
        field: String,
        /// The regex.
        regex: String,
        /// The regex crate's error.
        #[source]
        source: regex::Error,
    },
}

/// A place in a filter's config, for errors: a chain of segments on the stack, turned into text only
/// when something is wrong.
#[derive(Clone, Copy)]
pub(crate) struct At<'a> {
    parent: Option<&'a At<'a>>,
    seg: Seg<'a>,
}

#[derive(Clone, Copy)]
enum Seg<'a> {
    Field(&'static str),
    Index(usize),
    Key(&'a str),
}

impl<'a> At<'a> {
    fn root(field: &'static str) -> At<'static> {
        At {
            parent: None,
            seg: Seg::Field(field),
        }
    }

    /// The field `f` of this.
    pub(crate) fn field<'b>(&'b self, f: &'static str) -> At<'b> {
        At {
            parent: Some(self),
            seg: Seg::Field(f),
        }
    }

    /// The element `i` of this list.
    pub(crate) fn index<'b>(&'b self, i: usize) -> At<'b> {
        At {
            parent: Some(self),
            seg: Seg::Index(i),
        }
    }

    /// The entry `k` of this map.
    pub(crate) fn key<'b>(&'b self, k: &'b str) -> At<'b> {
        At {
            parent: Some(self),
            seg: Seg::Key(k),
        }
    }

    /// This place as text: `rules.policies["p"].permissions[0]`.
    pub(crate) fn path(&self) -> String {
        let mut segs = vec![self.seg];
        let mut cur = self.parent;
        while let Some(p) = cur {
            segs.push(p.seg);
            cur = p.parent;
        }
        let mut s = String::new();
        for seg in segs.iter().rev() {
            match seg {
                Seg::Field(f) => {
                    if !s.is_empty() {
                        s.push('.');
                    }
                    s.push_str(f);
                }
                Seg::Index(i) => s.push_str(&format!("[{i}]")),
                Seg::Key(k) => s.push_str(&format!("[{k:?}]")),
            }
        }
        s
    }

    pub(crate) fn invalid(&self, why: impl Into<String>) -> RbacError {
        RbacError::Invalid {
            field: self.path(),
            why: why.into(),
        }
    }

    pub(crate) fn unsupported(&self, what: impl Into<String>) -> RbacError {
        RbacError::Unsupported {
            field: self.path(),
            what: what.into(),
        }
    }
}

/// An engine's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Allow,
    Deny,
    Log,
}

/// One named policy.
#[derive(Debug)]
struct Policy {
    name: Arc<str>,
    permissions: Box<[Permission]>,
    principals: Box<[Principal]>,
}

impl Policy {
    fn matches(&self, i: &Input<'_>) -> bool {
        self.permissions.iter().any(|p| p.matches(i))
            && self.principals.iter().any(|p| p.matches(i))
    }
}

/// A compiled `envoy.config.rbac.v3.RBAC`: an action and its policies, sorted by name (Envoy keeps them
/// in a sorted map, so the policy it reports is the first by name that matched).
#[derive(Debug)]
struct Engine {
    action: Action,
    policies: Box<[Policy]>,
}

impl Engine {
    fn compile(r: &XRbac, at: &At<'_>) -> Result<Engine, RbacError> {
        let action = match XAction::try_from(r.action) {
            Ok(XAction::Allow) => Action::Allow,
            Ok(XAction::Deny) => Action::Deny,
            Ok(XAction::Log) => Action::Log,
            Err(_) => {
                return Err(at
                    .field("action")
                    .invalid(format!("{} is not ALLOW, DENY or LOG", r.action)))
            }
        };
        if r.audit_logging_options.is_some() {
            return Err(at
                .field("audit_logging_options")
                .unsupported("audit logging"));
        }
        let mut named: Vec<_> = r.policies.iter().collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        let policies_at = at.field("policies");
        let mut policies = Vec::with_capacity(named.len());
        for (name, p) in named {
            let at = policies_at.key(name);
            if p.condition.is_some() || p.checked_condition.is_some() || p.cel_config.is_some() {
                return Err(at.field("condition").unsupported("a CEL condition"));
            }
            let perms_at = at.field("permissions");
            if p.permissions.is_empty() {
                return Err(perms_at.invalid("is empty"));
            }
            let ids_at = at.field("principals");
            if p.principals.is_empty() {
                return Err(ids_at.invalid("is empty"));
            }
            let permissions = p
                .permissions
                .iter()
                .enumerate()
                .map(|(i, x)| Permission::compile(x, &perms_at.index(i)))
                .collect::<Result<_, _>>()?;
            let principals = p
                .principals
                .iter()
                .enumerate()
                .map(|(i, x)| Principal::compile(x, &ids_at.index(i)))
                .collect::<Result<_, _>>()?;
            policies.push(Policy {
                name: Arc::from(name.as_str()),
                permissions,
                principals,
            });
        }
        Ok(Engine {
            action,
            policies: policies.into(),
        })
    }

    /// What this engine says of the input.
    fn decide(&self, i: &Input<'_>) -> Decision {
        let matched = || self.policies.iter().find(|p| p.matches(i));
        match self.action {
            Action::Allow => match matched() {
                Some(_) => Decision::Allow,
                None => Decision::Deny { policy: None },
            },
            Action::Deny => match matched() {
                Some(p) => Decision::Deny {
                    policy: Some(p.name.clone()),
                },
                None => Decision::Allow,
            },
            Action::Log => Decision::Allow,
        }
    }
}

/// One RBAC filter: its enforced rules and its shadow rules, each optional (a filter without `rules`
/// enforces nothing, as in Envoy).
#[derive(Debug)]
pub struct Filter {
    rules: Option<Engine>,
    shadow: Option<Engine>,
    /// `shadow_rules_stat_prefix`: the prefix of the dynamic metadata its shadow rules write
    /// (`<prefix>shadow_effective_policy_id`), which an ext_authz filter may be enabled by.
    shadow_prefix: Box<str>,
}

impl Filter {
    /// Compiles an HTTP RBAC filter's config (`envoy.extensions.filters.http.rbac.v3.RBAC`).
    pub fn http(any: &weft_xds::Any) -> Result<Filter, RbacError> {
        let r: XHttpRbac = unpack(any, HTTP_RBAC_TYPE)?;
        if r.matcher.is_some() {
            return Err(At::root("matcher").unsupported("a matcher tree"));
        }
        if r.shadow_matcher.is_some() {
            return Err(At::root("shadow_matcher").unsupported("a matcher tree"));
        }
        Filter::compile(
            r.rules.as_ref(),
            r.shadow_rules.as_ref(),
            &r.shadow_rules_stat_prefix,
        )
    }

    /// Compiles a network RBAC filter's config (`envoy.extensions.filters.network.rbac.v3.RBAC`).
    /// Both enforcement types are the same here: what a connection is matched against does not change
    /// while it is open.
    pub fn network(any: &weft_xds::Any) -> Result<Filter, RbacError> {
        let r: XNetworkRbac = unpack(any, NETWORK_RBAC_TYPE)?;
        if r.matcher.is_some() {
            return Err(At::root("matcher").unsupported("a matcher tree"));
        }
        if r.shadow_matcher.is_some() {
            return Err(At::root("shadow_matcher").unsupported("a matcher tree"));
        }
        if r.delay_deny
            .as_ref()
            .is_some_and(|d| d.seconds != 0 || d.nanos != 0)
        {
            return Err(At::root("delay_deny").unsupported("a delayed denial"));
        }
        Filter::compile(
            r.rules.as_ref(),
            r.shadow_rules.as_ref(),
            &r.shadow_rules_stat_prefix,
        )
    }

    /// Whether it has enforced rules.
    pub(crate) fn enforces(&self) -> bool {
        self.rules.is_some()
    }

    /// Whether its shadow rules write `key` into its dynamic metadata: `shadow_effective_policy_id`
    /// under its shadow stat prefix.
    pub(crate) fn writes_shadow_key(&self, key: &str) -> bool {
        self.shadow.is_some()
            && key
                .strip_prefix(&*self.shadow_prefix)
                .is_some_and(|k| k == "shadow_effective_policy_id")
    }

    /// The policy its shadow rules matched on a request (`http`) or connection: Envoy's
    /// `shadow_effective_policy_id`, the first by name that matched; `None` when none did.
    pub(crate) fn shadow_policy(
        &self,
        s: &Subject<'_>,
        http: Option<&http::request::Parts>,
    ) -> Option<&str> {
        let e = self.shadow.as_ref()?;
        let i = Input { subject: s, http };
        e.policies.iter().find(|p| p.matches(&i)).map(|p| &*p.name)
    }

    /// The HTTP RBAC filter among a connection manager's `http_filters`: `None` when the filter named
    /// `name` with this `config` is another filter; an error when it is RBAC but cannot be used.
    pub fn of_http(
        name: &str,
        config: Option<&weft_xds::Any>,
        disabled: bool,
    ) -> Option<Result<Filter, RbacError>> {
        let is_rbac =
            name == HTTP_RBAC_FILTER || config.is_some_and(|a| a.type_url == HTTP_RBAC_TYPE);
        if !is_rbac {
            return None;
        }
        Some(match config {
            _ if disabled => Err(RbacError::Disabled),
            Some(any) => Filter::http(any),
            None => Err(RbacError::Type {
                what: "not set (weft reads only a typed_config)".into(),
            }),
        })
    }

    /// The network RBAC filter among a listener's filters: `None` when the filter named `name` with
    /// this `config` is another filter; an error when it is RBAC but cannot be used.
    pub fn of_network(
        name: &str,
        config: Option<&weft_xds::Any>,
    ) -> Option<Result<Filter, RbacError>> {
        let is_rbac =
            name == NETWORK_RBAC_FILTER || config.is_some_and(|a| a.type_url == NETWORK_RBAC_TYPE);
        if !is_rbac {
            return None;
        }
        Some(match config {
            Some(any) => Filter::network(any),
            None => Err(RbacError::Type {
                what: "not set (weft reads only a typed_config)".into(),
            }),
        })
    }

    fn compile(
        rules: Option<&XRbac>,
        shadow: Option<&XRbac>,
        shadow_prefix: &str,
    ) -> Result<Filter, RbacError> {
        Ok(Filter {
            shadow_prefix: shadow_prefix.into(),
            rules: rules
                .map(|r| Engine::compile(r, &At::root("rules")))
                .transpose()?,
            shadow: shadow
                .map(|r| Engine::compile(r, &At::root("shadow_rules")))
                .transpose()?,
        })
    }
}

impl Drop for Rbac {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

fn unpack<M: prost::Message + Default>(
    any: &weft_xds::Any,
    type_url: &'static str,
) -> Result<M, RbacError> {
    if any.type_url != type_url {
        return Err(RbacError::Type {
            what: format!("{} (expected {type_url})", any.type_url),
        });
    }
    weft_xds::unpack(any).map_err(|source| RbacError::Decode {
        type_url: type_url.to_string(),
        source,
    })
}

/// How many [`Rbac`]s exist, in any snapshot: while there are none, a request asks no listener for its
/// RBAC (one atomic load instead of a lookup).
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Whether any listener may have RBAC filters: false means none has.
pub(crate) fn any_live() -> bool {
    LIVE.load(Ordering::Relaxed) != 0
}

/// A listener's RBAC filters, in their order: immutable, shared by the requests of a snapshot.
#[derive(Debug)]
pub struct Rbac {
    filters: Box<[Filter]>,
    enforces: bool,
    shadows: bool,
}

impl Rbac {
    /// The filters of a listener; `None` when none has rules or shadow rules, so the listener pays
    /// nothing.
    pub fn new(filters: Vec<Filter>) -> Option<Rbac> {
        let enforces = filters.iter().any(|f| f.rules.is_some());
        let shadows = filters.iter().any(|f| f.shadow.is_some());
        (enforces || shadows).then(|| {
            LIVE.fetch_add(1, Ordering::Relaxed);
            Rbac {
                filters: filters.into(),
                enforces,
                shadows,
            }
        })
    }

    /// The decision on an HTTP request (its head, path already normalized) from `s`.
    pub fn check_http(&self, s: &Subject<'_>, req: &http::request::Parts) -> Decision {
        self.decide(&Input {
            subject: s,
            http: Some(req),
        })
    }

    /// The decision on a new TCP connection from `s`: no header is present and no path matches.
    pub fn check_tcp(&self, s: &Subject<'_>) -> Decision {
        self.decide(&Input {
            subject: s,
            http: None,
        })
    }

    /// Whether any filter has shadow rules (then [`Rbac::shadow_http`] has something to say).
    pub fn has_shadow(&self) -> bool {
        self.shadows
    }

    /// What the shadow rules would decide on an HTTP request; `None` when there are none.
    pub fn shadow_http(&self, s: &Subject<'_>, req: &http::request::Parts) -> Option<Decision> {
        self.shadow(&Input {
            subject: s,
            http: Some(req),
        })
    }

    /// What the shadow rules would decide on a TCP connection; `None` when there are none.
    pub fn shadow_tcp(&self, s: &Subject<'_>) -> Option<Decision> {
        self.shadow(&Input {
            subject: s,
            http: None,
        })
    }

    fn decide(&self, i: &Input<'_>) -> Decision {
        if !self.enforces {
            return Decision::Allow;
        }
        for e in self.filters.iter().filter_map(|f| f.rules.as_ref()) {
            let d = e.decide(i);
            if d.is_deny() {
                return d;
            }
        }
        Decision::Allow
    }

    fn shadow(&self, i: &Input<'_>) -> Option<Decision> {
        if !self.shadows {
            return None;
        }
        for e in self.filters.iter().filter_map(|f| f.shadow.as_ref()) {
            let d = e.decide(i);
            if d.is_deny() {
                return Some(d);
            }
        }
        Some(Decision::Allow)
    }
}

/// Phase: a listener's path normalization applied to a request head, before anything reads its path:
/// the URI is rewritten only when the path changes (the one allocation, for a path that was not
/// normal); a path Envoy refuses is an error (400).
pub(crate) fn normalize_request(
    parts: &mut http::request::Parts,
    opts: PathNormalization,
) -> Result<(), Rejected> {
    let Some(pq) = parts.uri.path_and_query() else {
        return Ok(());
    };
    let normalized = match normalize_path(pq.as_str(), opts)? {
        std::borrow::Cow::Borrowed(_) => return Ok(()),
        std::borrow::Cow::Owned(p) => p,
    };
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.path_and_query =
        Some(http::uri::PathAndQuery::try_from(normalized).map_err(|_| Rejected::Uri)?);
    parts.uri = http::Uri::from_parts(uri).map_err(|_| Rejected::Uri)?;
    Ok(())
}

/// Phase: a listener's RBAC filters on a request (path normalized, JWT verified), logging a denial and
/// what any shadow rules would have done (at `debug`, target `rbac`).
pub(crate) fn authorize_request(
    rbac: &Rbac,
    s: &Subject<'_>,
    parts: &http::request::Parts,
) -> Result<(), crate::error::ProxyError> {
    if rbac.has_shadow() {
        if let Some(d) = rbac.shadow_http(s, parts) {
            tracing::debug!(target: "rbac", peer = %s.source, path = parts.uri.path(), shadow = ?d, "shadow rules");
        }
    }
    match rbac.check_http(s, parts) {
        Decision::Allow => Ok(()),
        Decision::Deny { policy } => {
            tracing::debug!(
                target: "rbac",
                peer = %s.source,
                path = parts.uri.path(),
                policy = policy.as_deref().unwrap_or("none"),
                "request denied"
            );
            Err(crate::error::ProxyError::Denied { policy })
        }
    }
}

/// Whether `rbac` lets a new TCP connection through, logging a denial and what any shadow rules would
/// have done (at `debug`, target `rbac`). `client`: its address, the one it connected to, and over
/// mutual TLS its SPIFFE ID and SNI.
pub(crate) fn allows_connection(
    rbac: &Rbac,
    listener: &str,
    client: &crate::tls::Downstream,
) -> bool {
    let source = client.peer;
    let s = Subject {
        source,
        destination: client.local.unwrap_or(source),
        principal: client.principal.as_deref(),
        sni: client.sni.as_deref(),
        auth: None,
    };
    if rbac.has_shadow() {
        if let Some(d) = rbac.shadow_tcp(&s) {
            tracing::debug!(target: "rbac", listener, peer = %source, shadow = ?d, "shadow rules");
        }
    }
    match rbac.check_tcp(&s) {
        Decision::Allow => true,
        Decision::Deny { policy } => {
            tracing::debug!(
                target: "rbac",
                listener,
                peer = %source,
                policy = policy.as_deref().unwrap_or("none"),
                "connection denied"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests;
