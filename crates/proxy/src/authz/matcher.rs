//! Envoy's RBAC permissions and principals, compiled once per config push into a tree the request path
//! walks without allocating: string matchers with their patterns lowered when they ignore case, regexes
//! compiled, header names parsed, CIDR ranges masked. Semantics are Envoy's
//! (`source/extensions/filters/common/rbac/matchers.cc` and `source/common/common/matchers.cc`), for the
//! subset Istio generates; whatever else a config holds is refused by name, never guessed.

use super::{At, RbacError, Subject};
use http::header::HeaderName;
use serde_json::Value;
use std::net::IpAddr;
use weft_xds::pb::envoy::config::core::v3::CidrRange;
use weft_xds::pb::envoy::config::rbac::v3::{
    permission::Rule, principal::Identifier, MetadataSource, Permission as XPermission,
    Principal as XPrincipal, SourcedMetadata,
};
use weft_xds::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier, HeaderMatcher as XHeaderMatcher,
};
use weft_xds::pb::envoy::r#type::matcher::v3::{
    double_matcher, list_matcher, metadata_matcher::path_segment::Segment, path_matcher,
    string_matcher::MatchPattern, value_matcher, MetadataMatcher as XMetadataMatcher, PathMatcher,
    StringMatcher as XStringMatcher, ValueMatcher as XValueMatcher,
};

/// The largest compiled size of a regex: the limit routes have (`config::route`), so a pattern weftd's
/// analyzer accepts is accepted here and a pathological one is refused quickly.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// The filter name under which Istio's `istio_authn` filter put a request's JWT result; its fields are
/// the keys of [`Subject::auth`].
pub(crate) const ISTIO_AUTHN: &str = "istio_authn";
/// Envoy's JWT filter, whose payload current Istio matches under the key `payload`: read here as the
/// claims of [`Subject::auth`].
pub(crate) const JWT_AUTHN: &str = "envoy.filters.http.jwt_authn";
/// The key of the JWT payload under [`JWT_AUTHN`] (Istio's `payload_in_metadata`).
const JWT_PAYLOAD: &str = "payload";
/// Where the claims are in [`Subject::auth`].
const CLAIMS: &str = "request.auth.claims";

/// What a request or connection is matched against.
pub(crate) struct Input<'a> {
    pub(crate) subject: &'a Subject<'a>,
    /// The request, for HTTP; `None` for a TCP connection (no headers, no path).
    pub(crate) http: Option<&'a http::request::Parts>,
}

// === permissions ===

/// A compiled `envoy.config.rbac.v3.Permission`: what the request does.
#[derive(Debug)]
pub(crate) enum Permission {
    Any,
    And(Box<[Permission]>),
    Or(Box<[Permission]>),
    Not(Box<Permission>),
    Header(HeaderMatch),
    UrlPath(StrMatch),
    /// `uri_template` (Istio's `{*}` and `{**}` paths): a regex over the path.
    UriTemplate(regex::Regex),
    DestinationIp(Cidr),
    DestinationPort(u32),
    /// `[start, end)`.
    DestinationPortRange(i64, i64),
    RequestedServerName(StrMatch),
    Metadata(MetadataMatch),
}

impl Permission {
    #[allow(deprecated)] // `metadata`, which Istio sends (Envoy prefers `sourced_metadata` now)
    pub(crate) fn compile(p: &XPermission, at: &At<'_>) -> Result<Permission, RbacError> {
        let Some(rule) = &p.rule else {
            return Err(at.invalid("no rule is set"));
        };
        Ok(match rule {
            Rule::Any(true) => Permission::Any,
            Rule::Any(false) => return Err(at.field("any").invalid("must be true when set")),
            Rule::AndRules(set) => {
                Permission::And(Self::compile_set(&set.rules, &at.field("and_rules"))?)
            }
            Rule::OrRules(set) => {
                Permission::Or(Self::compile_set(&set.rules, &at.field("or_rules"))?)
            }
            Rule::NotRule(inner) => {
                Permission::Not(Box::new(Self::compile(inner, &at.field("not_rule"))?))
            }
            Rule::Header(h) => Permission::Header(HeaderMatch::compile(h, &at.field("header"))?),
            Rule::UrlPath(m) => Permission::UrlPath(compile_path(m, &at.field("url_path"))?),
            Rule::DestinationIp(c) => {
                Permission::DestinationIp(Cidr::compile(c, &at.field("destination_ip"))?)
            }
            Rule::DestinationPort(p) => {
                if *p > u32::from(u16::MAX) {
                    return Err(at
                        .field("destination_port")
                        .invalid(format!("{p} is not a port")));
                }
                Permission::DestinationPort(*p)
            }
            Rule::DestinationPortRange(r) => {
                if r.start > r.end {
                    return Err(at
                        .field("destination_port_range")
                        .invalid(format!("start {} is after end {}", r.start, r.end)));
                }
                Permission::DestinationPortRange(i64::from(r.start), i64::from(r.end))
            }
            Rule::RequestedServerName(m) => Permission::RequestedServerName(StrMatch::compile(
                m,
                &at.field("requested_server_name"),
            )?),
            Rule::Metadata(m) => {
                Permission::Metadata(MetadataMatch::compile(m, &at.field("metadata"))?)
            }
            Rule::SourcedMetadata(s) => {
                Permission::Metadata(sourced_metadata(s, &at.field("sourced_metadata"))?)
            }
            Rule::UriTemplate(ext) => {
                Permission::UriTemplate(uri_template(ext, &at.field("uri_template"))?)
            }
            Rule::Matcher(ext) => {
                return Err(at
                    .field("matcher")
                    .unsupported(format!("the matcher extension {:?}", ext.name)))
            }
        })
    }

    fn compile_set(rules: &[XPermission], at: &At<'_>) -> Result<Box<[Permission]>, RbacError> {
        let at = at.field("rules");
        if rules.is_empty() {
            return Err(at.invalid("is empty"));
        }
        rules
            .iter()
            .enumerate()
            .map(|(i, r)| Self::compile(r, &at.index(i)))
            .collect()
    }

    pub(crate) fn matches(&self, i: &Input<'_>) -> bool {
        match self {
            Permission::Any => true,
            Permission::And(all) => all.iter().all(|p| p.matches(i)),
            Permission::Or(any) => any.iter().any(|p| p.matches(i)),
            Permission::Not(p) => !p.matches(i),
            Permission::Header(h) => h.matches(i.http),
            Permission::UrlPath(m) => i.http.is_some_and(|r| m.matches(r.uri.path().as_bytes())),
            Permission::UriTemplate(re) => i.http.is_some_and(|r| re.is_match(r.uri.path())),
            Permission::DestinationIp(c) => c.contains(i.subject.destination.ip()),
            Permission::DestinationPort(p) => u32::from(i.subject.destination.port()) == *p,
            Permission::DestinationPortRange(start, end) => {
                let p = i64::from(i.subject.destination.port());
                *start <= p && p < *end
            }
            // No SNI is the empty name, as Envoy reads it.
            Permission::RequestedServerName(m) => {
                m.matches(i.subject.sni.unwrap_or_default().as_bytes())
            }
            Permission::Metadata(m) => m.matches(i.subject.auth),
        }
    }
}

// === principals ===

/// A compiled `envoy.config.rbac.v3.Principal`: who sends the request.
#[derive(Debug)]
pub(crate) enum Principal {
    Any,
    And(Box<[Principal]>),
    Or(Box<[Principal]>),
    Not(Box<Principal>),
    /// The peer certificate's identity: any when `None`; never on a connection without one.
    Authenticated(Option<StrMatch>),
    /// `source_ip`, `direct_remote_ip` and `remote_ip`: the downstream peer's address (Weft trusts no
    /// `x-forwarded-for` hops, so the three are one address).
    SourceIp(Cidr),
    Header(HeaderMatch),
    UrlPath(StrMatch),
    Metadata(MetadataMatch),
}

impl Principal {
    #[allow(deprecated)] // `source_ip` and `metadata`, which control planes still send
    pub(crate) fn compile(p: &XPrincipal, at: &At<'_>) -> Result<Principal, RbacError> {
        let Some(id) = &p.identifier else {
            return Err(at.invalid("no identifier is set"));
        };
        Ok(match id {
            Identifier::Any(true) => Principal::Any,
            Identifier::Any(false) => return Err(at.field("any").invalid("must be true when set")),
            Identifier::AndIds(set) => {
                Principal::And(Self::compile_set(&set.ids, &at.field("and_ids"))?)
            }
            Identifier::OrIds(set) => {
                Principal::Or(Self::compile_set(&set.ids, &at.field("or_ids"))?)
            }
            Identifier::NotId(inner) => {
                Principal::Not(Box::new(Self::compile(inner, &at.field("not_id"))?))
            }
            Identifier::Authenticated(a) => {
                let auth = at.field("authenticated");
                Principal::Authenticated(match &a.principal_name {
                    Some(m) => Some(StrMatch::compile(m, &auth.field("principal_name"))?),
                    None => None,
                })
            }
            Identifier::SourceIp(c) => {
                Principal::SourceIp(Cidr::compile(c, &at.field("source_ip"))?)
            }
            Identifier::DirectRemoteIp(c) => {
                Principal::SourceIp(Cidr::compile(c, &at.field("direct_remote_ip"))?)
            }
            Identifier::RemoteIp(c) => {
                Principal::SourceIp(Cidr::compile(c, &at.field("remote_ip"))?)
            }
            Identifier::Header(h) => {
                Principal::Header(HeaderMatch::compile(h, &at.field("header"))?)
            }
            Identifier::UrlPath(m) => Principal::UrlPath(compile_path(m, &at.field("url_path"))?),
            Identifier::Metadata(m) => {
                Principal::Metadata(MetadataMatch::compile(m, &at.field("metadata"))?)
            }
            Identifier::SourcedMetadata(s) => {
                Principal::Metadata(sourced_metadata(s, &at.field("sourced_metadata"))?)
            }
            Identifier::FilterState(_) => {
                return Err(at
                    .field("filter_state")
                    .unsupported("a filter state matcher"))
            }
            Identifier::Custom(ext) => {
                return Err(at
                    .field("custom")
                    .unsupported(format!("the principal extension {:?}", ext.name)))
            }
        })
    }

    fn compile_set(ids: &[XPrincipal], at: &At<'_>) -> Result<Box<[Principal]>, RbacError> {
        let at = at.field("ids");
        if ids.is_empty() {
            return Err(at.invalid("is empty"));
        }
        ids.iter()
            .enumerate()
            .map(|(i, p)| Self::compile(p, &at.index(i)))
            .collect()
    }

    pub(crate) fn matches(&self, i: &Input<'_>) -> bool {
        match self {
            Principal::Any => true,
            Principal::And(all) => all.iter().all(|p| p.matches(i)),
            Principal::Or(any) => any.iter().any(|p| p.matches(i)),
            Principal::Not(p) => !p.matches(i),
            Principal::Authenticated(m) => match (i.subject.principal, m) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(p), Some(m)) => m.matches(p.as_bytes()),
            },
            Principal::SourceIp(c) => c.contains(i.subject.source.ip()),
            Principal::Header(h) => h.matches(i.http),
            Principal::UrlPath(m) => i.http.is_some_and(|r| m.matches(r.uri.path().as_bytes())),
            Principal::Metadata(m) => m.matches(i.subject.auth),
        }
    }
}

// === strings ===

/// A compiled `envoy.type.matcher.v3.StringMatcher`.
#[derive(Debug)]
pub(crate) struct StrMatch {
    pattern: Pattern,
    /// ASCII case is ignored (the pattern is stored lowercase); never for regexes, as in Envoy.
    ignore_case: bool,
}

#[derive(Debug)]
enum Pattern {
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    Suffix(Box<[u8]>),
    Contains(Box<[u8]>),
    /// Matches the whole value.
    Regex(regex::bytes::Regex),
}

impl StrMatch {
    pub(crate) fn compile(m: &XStringMatcher, at: &At<'_>) -> Result<StrMatch, RbacError> {
        let ic = m.ignore_case;
        let text = |s: &str| -> Box<[u8]> {
            if ic {
                s.to_ascii_lowercase().into_bytes().into()
            } else {
                s.as_bytes().into()
            }
        };
        let non_empty = |s: &str, f: &'static str| {
            if s.is_empty() {
                Err(at
                    .field(f)
                    .invalid("is empty (Envoy requires at least one character)"))
            } else {
                Ok(text(s))
            }
        };
        let pattern = match &m.match_pattern {
            Some(MatchPattern::Exact(s)) => Pattern::Exact(text(s)),
            Some(MatchPattern::Prefix(s)) => Pattern::Prefix(non_empty(s, "prefix")?),
            Some(MatchPattern::Suffix(s)) => Pattern::Suffix(non_empty(s, "suffix")?),
            Some(MatchPattern::Contains(s)) => Pattern::Contains(non_empty(s, "contains")?),
            Some(MatchPattern::SafeRegex(r)) => Pattern::Regex(full_regex(
                &r.regex,
                &at.field("safe_regex").field("regex"),
            )?),
            Some(MatchPattern::Custom(ext)) => {
                return Err(at
                    .field("custom")
                    .unsupported(format!("the string matcher extension {:?}", ext.name)))
            }
            None => return Err(at.invalid("no match pattern is set")),
        };
        Ok(StrMatch {
            ignore_case: ic && !matches!(pattern, Pattern::Regex(_)),
            pattern,
        })
    }

    /// An exact match, case-sensitive.
    fn exact(s: &str) -> StrMatch {
        StrMatch {
            pattern: Pattern::Exact(s.as_bytes().into()),
            ignore_case: false,
        }
    }

    pub(crate) fn matches(&self, v: &[u8]) -> bool {
        let eq = |a: &[u8], b: &[u8]| {
            if self.ignore_case {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        match &self.pattern {
            Pattern::Exact(p) => eq(v, p),
            Pattern::Prefix(p) => v.len() >= p.len() && eq(&v[..p.len()], p),
            Pattern::Suffix(p) => v.len() >= p.len() && eq(&v[v.len() - p.len()..], p),
            Pattern::Contains(p) => v.len() >= p.len() && v.windows(p.len()).any(|w| eq(w, p)),
            Pattern::Regex(re) => re.is_match(v),
        }
    }
}

/// Compiles `regex` to match whole values only (Envoy's `safe_regex` is a full match).
fn full_regex(regex: &str, at: &At<'_>) -> Result<regex::bytes::Regex, RbacError> {
    regex::bytes::RegexBuilder::new(&format!("^(?:{regex})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|source| RbacError::Regex {
            field: at.path(),
            regex: regex.to_string(),
            source,
        })
}

/// `url_path`: a string matcher over the path without its query.
fn compile_path(m: &PathMatcher, at: &At<'_>) -> Result<StrMatch, RbacError> {
    match &m.rule {
        Some(path_matcher::Rule::Path(s)) => StrMatch::compile(s, &at.field("path")),
        None => Err(at.invalid("no rule is set")),
    }
}

// === headers ===

/// Which part of the request a header matcher reads.
#[derive(Debug)]
enum HeaderKey {
    Method,
    /// `:authority`, or `host`: the request's authority.
    Authority,
    /// `:path`: path and query, normalized.
    Path,
    Scheme,
    Name(HeaderName),
}

#[derive(Debug)]
enum HeaderTest {
    Present(bool),
    /// Legacy `exact_match` with an empty value: any value.
    AnyValue,
    Str(StrMatch),
    /// `[start, end)` over a base-10 integer value.
    Range(i64, i64),
}

/// A compiled `envoy.config.route.v3.HeaderMatcher`, with Envoy's rules for a missing header: it matches
/// only `present_match: false`, or `present_match: true` inverted, unless
/// `treat_missing_header_as_empty` says to read it as empty.
#[derive(Debug)]
pub(crate) struct HeaderMatch {
    key: HeaderKey,
    test: HeaderTest,
    invert: bool,
    missing_as_empty: bool,
}

impl HeaderMatch {
    #[allow(deprecated)] // Istio still sends the legacy specifiers (exact_match, prefix_match, …)
    pub(crate) fn compile(h: &XHeaderMatcher, at: &At<'_>) -> Result<HeaderMatch, RbacError> {
        let name = h.name.to_ascii_lowercase();
        let key = match name.as_str() {
            ":method" => HeaderKey::Method,
            ":authority" | "host" => HeaderKey::Authority,
            ":path" => HeaderKey::Path,
            ":scheme" => HeaderKey::Scheme,
            n if n.starts_with(':') => {
                return Err(at
                    .field("name")
                    .unsupported(format!("the pseudo-header {:?}", h.name)))
            }
            n => HeaderKey::Name(HeaderName::from_bytes(n.as_bytes()).map_err(|_| {
                at.field("name")
                    .invalid(format!("{:?} is not a header name", h.name))
            })?),
        };
        let plain = |s: &str, f: &'static str| -> Result<HeaderTest, RbacError> {
            if s.is_empty() {
                return Err(at.field(f).invalid("is empty"));
            }
            let pattern = match f {
                "prefix_match" => Pattern::Prefix(s.as_bytes().into()),
                "suffix_match" => Pattern::Suffix(s.as_bytes().into()),
                _ => Pattern::Contains(s.as_bytes().into()),
            };
            Ok(HeaderTest::Str(StrMatch {
                pattern,
                ignore_case: false,
            }))
        };
        let test = match &h.header_match_specifier {
            None => HeaderTest::Present(true),
            Some(HeaderMatchSpecifier::PresentMatch(b)) => HeaderTest::Present(*b),
            Some(HeaderMatchSpecifier::ExactMatch(s)) if s.is_empty() => HeaderTest::AnyValue,
            Some(HeaderMatchSpecifier::ExactMatch(s)) => HeaderTest::Str(StrMatch::exact(s)),
            Some(HeaderMatchSpecifier::PrefixMatch(s)) => plain(s, "prefix_match")?,
            Some(HeaderMatchSpecifier::SuffixMatch(s)) => plain(s, "suffix_match")?,
            Some(HeaderMatchSpecifier::ContainsMatch(s)) => plain(s, "contains_match")?,
            Some(HeaderMatchSpecifier::SafeRegexMatch(r)) => HeaderTest::Str(StrMatch {
                pattern: Pattern::Regex(full_regex(
                    &r.regex,
                    &at.field("safe_regex_match").field("regex"),
                )?),
                ignore_case: false,
            }),
            Some(HeaderMatchSpecifier::StringMatch(m)) => {
                HeaderTest::Str(StrMatch::compile(m, &at.field("string_match"))?)
            }
            Some(HeaderMatchSpecifier::RangeMatch(r)) => {
                if r.start > r.end {
                    return Err(at
                        .field("range_match")
                        .invalid(format!("start {} is after end {}", r.start, r.end)));
                }
                HeaderTest::Range(r.start, r.end)
            }
        };
        Ok(HeaderMatch {
            key,
            test,
            invert: h.invert_match,
            missing_as_empty: h.treat_missing_header_as_empty,
        })
    }

    /// Whether the request (none for TCP: no header is present) meets this condition.
    pub(crate) fn matches(&self, req: Option<&http::request::Parts>) -> bool {
        match req {
            None => self.judge(None),
            Some(r) => match &self.key {
                HeaderKey::Method => self.judge(Some(r.method.as_str().as_bytes())),
                HeaderKey::Authority => {
                    self.judge(crate::http::authority_of(&r.uri, &r.headers).map(str::as_bytes))
                }
                HeaderKey::Path => self.judge(Some(
                    r.uri
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .as_bytes(),
                )),
                HeaderKey::Scheme => {
                    self.judge(Some(r.uri.scheme_str().unwrap_or("http").as_bytes()))
                }
                HeaderKey::Name(n) => {
                    let mut values = r.headers.get_all(n).iter();
                    match (values.next(), values.next()) {
                        (None, _) => self.judge(None),
                        (Some(v), None) => self.judge(Some(v.as_bytes())),
                        // Envoy matches a repeated header on its values joined with ",". Rare: the one
                        // place a check allocates.
                        (Some(first), Some(second)) => {
                            let mut joined = first.as_bytes().to_vec();
                            for v in std::iter::once(second).chain(values) {
                                joined.push(b',');
                                joined.extend_from_slice(v.as_bytes());
                            }
                            self.judge(Some(&joined))
                        }
                    }
                }
            },
        }
    }

    fn judge(&self, value: Option<&[u8]>) -> bool {
        let value = match (value, self.missing_as_empty) {
            (Some(v), _) => v,
            (None, true) => b"",
            (None, false) => {
                let absent = matches!(self.test, HeaderTest::Present(false));
                let inverted_present = matches!(self.test, HeaderTest::Present(true));
                return if self.invert {
                    inverted_present
                } else {
                    absent
                };
            }
        };
        let matched = match &self.test {
            HeaderTest::Present(want) => *want,
            HeaderTest::AnyValue => true,
            HeaderTest::Str(m) => m.matches(value),
            HeaderTest::Range(start, end) => {
                integer(value).is_some_and(|n| *start <= n && n < *end)
            }
        };
        matched != self.invert
    }
}

/// A base-10 integer with an optional sign, the whole value (Envoy's `range_match`).
fn integer(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

// === addresses ===

/// A compiled `envoy.config.core.v3.CidrRange`, its address masked to the prefix.
#[derive(Debug)]
pub(crate) struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    fn compile(c: &CidrRange, at: &At<'_>) -> Result<Cidr, RbacError> {
        let addr: IpAddr = c.address_prefix.parse().map_err(|_| {
            at.field("address_prefix")
                .invalid(format!("{:?} is not an IP address", c.address_prefix))
        })?;
        let addr = addr.to_canonical();
        // Unset is 0, as in Envoy: every address of the family.
        let len = c.prefix_len.as_ref().map_or(0, |v| v.value);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(at.field("prefix_len").invalid(format!(
                "{len} is longer than an {} address",
                if max == 32 { "IPv4" } else { "IPv6" }
            )));
        }
        let len = len as u8;
        Ok(Cidr {
            addr: mask(addr, len),
            len,
        })
    }

    /// Whether `ip` is in the range. An IPv4 address mapped into IPv6 (`::ffff:a.b.c.d`, as a dual-stack
    /// socket reports an IPv4 peer) counts as that IPv4 address.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.len) == self.addr
    }
}

fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

// === metadata ===

/// Which dynamic metadata a matcher reads, both from [`Subject::auth`].
#[derive(Debug, Clone, Copy)]
enum MetadataRoot {
    /// `istio_authn`: the whole object.
    IstioAuthn,
    /// `envoy.filters.http.jwt_authn` under `payload`: the claims.
    JwtPayload,
}

/// A compiled `envoy.type.matcher.v3.MetadataMatcher` over the request's JWT result.
#[derive(Debug)]
pub(crate) struct MetadataMatch {
    root: MetadataRoot,
    path: Box<[Box<str>]>,
    value: ValueMatch,
    invert: bool,
}

impl MetadataMatch {
    fn compile(m: &XMetadataMatcher, at: &At<'_>) -> Result<MetadataMatch, RbacError> {
        let mut path = Vec::with_capacity(m.path.len());
        for (i, s) in m.path.iter().enumerate() {
            match &s.segment {
                Some(Segment::Key(k)) => path.push(Box::<str>::from(k.as_str())),
                None => return Err(at.field("path").index(i).invalid("no key is set")),
            }
        }
        let root = match m.filter.as_str() {
            ISTIO_AUTHN => MetadataRoot::IstioAuthn,
            JWT_AUTHN => {
                if path.first().map(|k| &**k) != Some(JWT_PAYLOAD) {
                    return Err(at.field("path").invalid(format!(
                        "under {JWT_AUTHN:?} only the key {JWT_PAYLOAD:?} (the JWT payload) is known"
                    )));
                }
                path.remove(0);
                MetadataRoot::JwtPayload
            }
            other => {
                return Err(at.field("filter").unsupported(format!(
                    "metadata of filter {other:?} (weft has {ISTIO_AUTHN:?} and {JWT_AUTHN:?})"
                )))
            }
        };
        if path.is_empty() {
            return Err(at.field("path").invalid("is empty"));
        }
        let value = match &m.value {
            Some(v) => ValueMatch::compile(v, &at.field("value"))?,
            None => return Err(at.field("value").invalid("is not set")),
        };
        Ok(MetadataMatch {
            root,
            path: path.into(),
            value,
            invert: m.invert,
        })
    }

    fn matches(&self, auth: Option<&Value>) -> bool {
        let mut v = match self.root {
            MetadataRoot::IstioAuthn => auth,
            MetadataRoot::JwtPayload => auth.and_then(|a| a.get(CLAIMS)),
        };
        for key in self.path.iter() {
            v = v.and_then(|o| o.get(&**key));
        }
        self.value.matches(v) != self.invert
    }
}

/// `sourced_metadata` from the dynamic metadata is plain `metadata`; route metadata is not kept.
fn sourced_metadata(s: &SourcedMetadata, at: &At<'_>) -> Result<MetadataMatch, RbacError> {
    if s.metadata_source != MetadataSource::Dynamic as i32 {
        return Err(at
            .field("metadata_source")
            .unsupported("metadata other than DYNAMIC"));
    }
    match &s.metadata_matcher {
        Some(m) => MetadataMatch::compile(m, &at.field("metadata_matcher")),
        None => Err(at.field("metadata_matcher").invalid("is not set")),
    }
}

/// A compiled `envoy.type.matcher.v3.ValueMatcher`. A missing value is neither null nor present.
#[derive(Debug)]
enum ValueMatch {
    Null,
    Number(NumberMatch),
    Str(StrMatch),
    Bool(bool),
    Present(bool),
    /// Some element of a list matches.
    OneOf(Box<ValueMatch>),
    Or(Box<[ValueMatch]>),
}

#[derive(Debug)]
enum NumberMatch {
    Exact(f64),
    /// `[start, end)`.
    Range(f64, f64),
}

impl ValueMatch {
    fn compile(v: &XValueMatcher, at: &At<'_>) -> Result<ValueMatch, RbacError> {
        use value_matcher::MatchPattern as P;
        Ok(match &v.match_pattern {
            Some(P::NullMatch(_)) => ValueMatch::Null,
            Some(P::DoubleMatch(d)) => ValueMatch::Number(match &d.match_pattern {
                Some(double_matcher::MatchPattern::Exact(x)) => NumberMatch::Exact(*x),
                Some(double_matcher::MatchPattern::Range(r)) => NumberMatch::Range(r.start, r.end),
                None => return Err(at.field("double_match").invalid("no match pattern is set")),
            }),
            Some(P::StringMatch(s)) => {
                ValueMatch::Str(StrMatch::compile(s, &at.field("string_match"))?)
            }
            Some(P::BoolMatch(b)) => ValueMatch::Bool(*b),
            Some(P::PresentMatch(b)) => ValueMatch::Present(*b),
            Some(P::ListMatch(l)) => {
                let at = at.field("list_match");
                match &l.match_pattern {
                    Some(list_matcher::MatchPattern::OneOf(inner)) => {
                        ValueMatch::OneOf(Box::new(Self::compile(inner, &at.field("one_of"))?))
                    }
                    None => return Err(at.invalid("no match pattern is set")),
                }
            }
            Some(P::OrMatch(o)) => {
                let or = at.field("or_match");
                let at = or.field("value_matchers");
                if o.value_matchers.is_empty() {
                    return Err(at.invalid("is empty"));
                }
                ValueMatch::Or(
                    o.value_matchers
                        .iter()
                        .enumerate()
                        .map(|(i, m)| Self::compile(m, &at.index(i)))
                        .collect::<Result<_, _>>()?,
                )
            }
            None => return Err(at.invalid("no match pattern is set")),
        })
    }

    fn matches(&self, v: Option<&Value>) -> bool {
        match self {
            ValueMatch::Null => matches!(v, Some(Value::Null)),
            ValueMatch::Present(want) => v.is_some() == *want,
            ValueMatch::Bool(want) => matches!(v, Some(Value::Bool(b)) if b == want),
            ValueMatch::Str(m) => matches!(v, Some(Value::String(s)) if m.matches(s.as_bytes())),
            ValueMatch::Number(n) => match v.and_then(Value::as_f64) {
                Some(x) => match n {
                    NumberMatch::Exact(want) => x == *want,
                    NumberMatch::Range(start, end) => *start <= x && x < *end,
                },
                None => false,
            },
            ValueMatch::OneOf(m) => match v {
                Some(Value::Array(items)) => items.iter().any(|e| m.matches(Some(e))),
                _ => false,
            },
            ValueMatch::Or(ms) => ms.iter().any(|m| m.matches(v)),
        }
    }
}

// === URI templates ===

/// The characters a path segment may hold in a template match (RFC 3986 `pchar`, without `*` and `=`,
/// as Envoy's URI template matcher has them).
const SEGMENT: &str = r"[a-zA-Z0-9\-._~%!$&'()+,;:@]";

/// The type of Envoy's URI template matcher config, which Istio sends for paths with `{*}` or `{**}`.
const URI_TEMPLATE_TYPE: &str =
    "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig";

/// `envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig` (one field), which envoy-types
/// does not generate.
#[derive(Clone, PartialEq, prost::Message)]
struct UriTemplateMatchConfig {
    #[prost(string, tag = "1")]
    path_template: String,
}

/// Compiles a URI template permission (`/api/*/items/**`): `*` is one segment, `**` any number of them
/// and must come last; a segment may end in a literal suffix (`/**.mpd`). Named variables (`{name}`) are
/// refused: Istio does not send them.
fn uri_template(
    ext: &weft_xds::pb::envoy::config::core::v3::TypedExtensionConfig,
    at: &At<'_>,
) -> Result<regex::Regex, RbacError> {
    let Some(any) = &ext.typed_config else {
        return Err(at.field("typed_config").invalid("is not set"));
    };
    if any.type_url != URI_TEMPLATE_TYPE {
        return Err(at
            .field("typed_config")
            .unsupported(format!("{} (only {URI_TEMPLATE_TYPE} is)", any.type_url)));
    }
    let config: UriTemplateMatchConfig = weft_xds::unpack(any).map_err(|e| {
        at.field("typed_config")
            .invalid(format!("does not decode as UriTemplateMatchConfig: {e}"))
    })?;
    let typed = at.field("typed_config");
    let at = typed.field("path_template");
    let regex = template_regex(&config.path_template)
        .map_err(|why| at.invalid(format!("{:?} {why}", config.path_template)))?;
    regex::RegexBuilder::new(&regex)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|source| RbacError::Regex {
            field: at.path(),
            regex,
            source,
        })
}

/// The anchored regex of a URI template, or what is wrong with it.
fn template_regex(template: &str) -> Result<String, &'static str> {
    let Some(rest) = template.strip_prefix('/') else {
        return Err("does not start with /");
    };
    if !rest.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("has a character that is not printable ASCII");
    }
    let literal = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@".contains(&b))
    };
    let mut out = String::from("^");
    let mut glob_seen = false;
    let segments: Vec<&str> = rest.split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        out.push('/');
        let (op, suffix) = if let Some(s) = seg.strip_prefix("**") {
            (Some(true), s)
        } else if let Some(s) = seg.strip_prefix('*') {
            (Some(false), s)
        } else {
            (None, *seg)
        };
        if seg.starts_with('{') {
            return Err("has a named variable, which weft does not support");
        }
        if glob_seen {
            return Err("has something after **, which must come last");
        }
        match op {
            Some(true) => {
                glob_seen = true;
                out.push_str(SEGMENT.trim_end_matches(']'));
                out.push_str("/]*");
            }
            Some(false) => {
                out.push_str(SEGMENT);
                out.push('+');
            }
            None => {}
        }
        if !suffix.is_empty() {
            if !literal(suffix) {
                return Err("has a character a path template may not hold");
            }
            out.push_str(&regex::escape(suffix));
        } else if op.is_none() && i + 1 < segments.len() {
            return Err("has an empty segment");
        }
    }
    out.push('$');
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests;
