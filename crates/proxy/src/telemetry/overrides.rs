//! The Telemetry API's metric overrides (Istio's `istio.stats` filter config) and the CEL attributes
//! of a request or connection, which they and access-log filters read.
//!
//! A listener with overrides holds one [`Overrides`], built when the listener arrives: each metric's
//! `drop`, the labels it removes and the labels it adds or replaces, each with a CEL expression parsed
//! then ([`weft_cel`], so an expression outside the subset NACKs the listener). Equal configs share one
//! `Arc` ([`Overrides::shared`]), so a listener pushed again finds the series it made before.
//!
//! A request on such a listener keeps what the expressions read ([`Captured`]: one boxed record, and
//! only the parts of the request the expressions name). When it is recorded the expressions are
//! evaluated into values on the stack and its series is looked up by them ([`Lookup`], borrowed): a
//! series that exists costs no allocation. A new one is stored as a [`Custom`] key, its values owned.
//! Requests on listeners without overrides carry nothing and record as before.
//!
//! Removing a label can make two series one: the text encoder adds them up ([`Custom::labels`] gives a
//! series' label set; `metrics` groups series by it).

use crate::error::Flags;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::borrow::{Borrow, Cow};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use weft_cel::{Attr, Attributes, Expr, Side, Value};
use weft_xds::pb::google::protobuf::{value::Kind, Struct, Value as PbValue};

/// Istio's standard metrics, by the name its stats config gives them, in [`Metric`] order.
pub const METRICS: [&str; 10] = [
    "requests_total",
    "request_duration_milliseconds",
    "request_bytes",
    "response_bytes",
    "request_messages_total",
    "response_messages_total",
    "tcp_sent_bytes_total",
    "tcp_received_bytes_total",
    "tcp_connections_opened_total",
    "tcp_connections_closed_total",
];

/// One of Istio's standard metrics: its index in [`METRICS`].
pub type Metric = usize;

/// `istio_requests_total`.
pub const REQUESTS: Metric = 0;
/// `istio_request_duration_milliseconds`.
pub const DURATION: Metric = 1;
/// `istio_request_bytes`.
pub const REQUEST_BYTES: Metric = 2;
/// `istio_response_bytes`.
pub const RESPONSE_BYTES: Metric = 3;
/// `istio_request_messages_total`.
pub const REQUEST_MESSAGES: Metric = 4;
/// `istio_response_messages_total`.
pub const RESPONSE_MESSAGES: Metric = 5;
/// `istio_tcp_sent_bytes_total`.
pub const TCP_SENT: Metric = 6;
/// `istio_tcp_received_bytes_total`.
pub const TCP_RECEIVED: Metric = 7;
/// `istio_tcp_connections_opened_total`.
pub const TCP_OPENED: Metric = 8;
/// `istio_tcp_connections_closed_total`.
pub const TCP_CLOSED: Metric = 9;

/// The HTTP metrics.
const HTTP: std::ops::Range<Metric> = REQUESTS..TCP_SENT;
/// The TCP metrics.
const TCP: std::ops::Range<Metric> = TCP_SENT..METRICS.len();

/// Tag expressions evaluated into values on the stack; more go to the heap.
const INLINE_VALUES: usize = 8;
/// Header values a capture keeps in place; more go to the heap.
const INLINE_HEADERS: usize = 4;

/// One metric's overrides.
#[derive(Debug, Default, Clone, PartialEq)]
struct Rule {
    drop: bool,
    /// Labels removed.
    remove: Vec<String>,
    /// Labels added or replaced: name and index of the expression in [`Overrides::exprs`].
    upsert: Vec<(String, usize)>,
}

/// What of a request the expressions read, beyond headers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Reads {
    method: bool,
    path: bool,
    host: bool,
}

/// A listener's metric overrides.
#[derive(Debug, Default, PartialEq)]
pub struct Overrides {
    rules: [Rule; METRICS.len()],
    /// Every distinct expression, evaluated once per request.
    exprs: Vec<Expr>,
    /// The request headers the expressions read, then the response headers.
    headers: Vec<HeaderName>,
    /// How many of `headers` are request headers.
    request_headers: usize,
    reads: Reads,
    /// Whether any HTTP metric changes, any TCP one; whether every HTTP one is dropped, every TCP
    /// one (made once: requests ask).
    http: bool,
    tcp: bool,
    http_dropped: bool,
    tcp_dropped: bool,
}

fn field<'a>(s: &'a Struct, name: &str) -> Option<&'a Kind> {
    s.fields.get(name).and_then(|v| v.kind.as_ref())
}

fn strings(v: Option<&Kind>, what: &str) -> Result<Vec<String>, String> {
    match v {
        None => Ok(Vec::new()),
        Some(Kind::ListValue(l)) => l
            .values
            .iter()
            .map(|v| match &v.kind {
                Some(Kind::StringValue(s)) => Ok(s.clone()),
                _ => Err(format!("{what}: not a list of strings")),
            })
            .collect(),
        Some(_) => Err(format!("{what}: not a list")),
    }
}

/// The headers an expression reads on `side`, as header names; `what` names the expression's field.
fn header_names(e: &Expr, side: Side, what: &str) -> Result<Vec<HeaderName>, String> {
    let mut names = Vec::new();
    e.headers(side, &mut names);
    if side == Side::Request {
        let mut attrs = Vec::new();
        e.attrs(&mut attrs);
        for a in attrs {
            let h = match a {
                Attr::RequestId => "x-request-id",
                Attr::RequestUserAgent => "user-agent",
                Attr::RequestReferer => "referer",
                _ => continue,
            };
            if !names.iter().any(|n| n == h) {
                names.push(h.to_string());
            }
        }
    }
    names
        .iter()
        .map(|n| {
            HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| format!("{what}: {n:?} is not a header name"))
        })
        .collect()
}

/// Every header `exprs` read on each side, request headers first; and how many are request headers.
pub(crate) fn headers_read(exprs: &[(&Expr, String)]) -> Result<(Vec<HeaderName>, usize), String> {
    let mut out: Vec<HeaderName> = Vec::new();
    for (e, what) in exprs {
        for h in header_names(e, Side::Request, what)? {
            if !out.contains(&h) {
                out.push(h);
            }
        }
    }
    let request = out.len();
    for (e, what) in exprs {
        for h in header_names(e, Side::Response, what)? {
            if !out[request..].contains(&h) {
                out.push(h);
            }
        }
    }
    Ok((out, request))
}

impl Overrides {
    /// Reads Istio's stats plugin config (`metrics: [{name, dimensions, tags_to_remove, drop}]`; a
    /// missing or empty name means every metric), entries applied in order. Other keys of the config
    /// are ignored, as they configure what weft does not have; a bad entry or an expression outside
    /// weft's CEL subset is an error naming its field.
    pub fn from_config(config: &Struct) -> Result<Overrides, String> {
        let mut out = Overrides::default();
        let entries = match field(config, "metrics") {
            None => return Ok(out),
            Some(Kind::ListValue(l)) => &l.values,
            Some(_) => return Err("metrics: not a list".into()),
        };
        let mut fields = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let Some(Kind::StructValue(e)) = &e.kind else {
                return Err(format!("metrics[{i}]: not an object"));
            };
            let which: Vec<Metric> = match field(e, "name") {
                None => (0..METRICS.len()).collect(),
                Some(Kind::StringValue(n)) if n.is_empty() => (0..METRICS.len()).collect(),
                Some(Kind::StringValue(n)) => {
                    let short = n.strip_prefix("istio_").unwrap_or(n);
                    match METRICS.iter().position(|m| *m == short) {
                        Some(m) => vec![m],
                        None => {
                            return Err(format!(
                                "metrics[{i}].name: {n:?} is not a metric weft records"
                            ))
                        }
                    }
                }
                Some(_) => return Err(format!("metrics[{i}].name: not a string")),
            };
            let drop = match field(e, "drop") {
                None => None,
                Some(Kind::BoolValue(b)) => Some(*b),
                Some(_) => return Err(format!("metrics[{i}].drop: not a boolean")),
            };
            let remove = strings(
                field(e, "tags_to_remove"),
                &format!("metrics[{i}].tags_to_remove"),
            )?;
            let mut upsert = Vec::new();
            match field(e, "dimensions") {
                None => {}
                Some(Kind::StructValue(d)) => {
                    let mut dims: Vec<(&String, &PbValue)> = d.fields.iter().collect();
                    dims.sort_by(|a, b| a.0.cmp(b.0));
                    for (name, v) in dims {
                        let what = format!("metrics[{i}].dimensions.{name}");
                        let Some(Kind::StringValue(src)) = &v.kind else {
                            return Err(format!("{what}: not a string"));
                        };
                        let expr = weft_cel::parse(src)
                            .map_err(|e| format!("{what}: CEL expression {src:?} {e}"))?;
                        let idx = match out.exprs.iter().position(|x| *x == expr) {
                            Some(idx) => idx,
                            None => {
                                fields.push(what);
                                out.exprs.push(expr);
                                out.exprs.len() - 1
                            }
                        };
                        upsert.push((name.clone(), idx));
                    }
                }
                Some(_) => return Err(format!("metrics[{i}].dimensions: not an object")),
            }
            for m in which {
                let r = &mut out.rules[m];
                if let Some(d) = drop {
                    r.drop = d;
                }
                for t in &remove {
                    r.upsert.retain(|(n, _)| n != t);
                    if !r.remove.contains(t) {
                        r.remove.push(t.clone());
                    }
                }
                for (n, idx) in &upsert {
                    r.remove.retain(|t| t != n);
                    r.upsert.retain(|(x, _)| x != n);
                    r.upsert.push((n.clone(), *idx));
                }
            }
        }
        let named: Vec<(&Expr, String)> = out.exprs.iter().zip(fields).collect();
        let (headers, request_headers) = headers_read(&named)?;
        let mut attrs = Vec::new();
        for e in &out.exprs {
            e.attrs(&mut attrs);
        }
        out.reads = Reads {
            method: attrs.contains(&Attr::RequestMethod),
            path: attrs.contains(&Attr::RequestPath) || attrs.contains(&Attr::RequestUrlPath),
            host: attrs.contains(&Attr::RequestHost),
        };
        out.headers = headers;
        out.request_headers = request_headers;
        let changed = |r: &Rule| *r != Rule::default();
        out.http = out.rules[HTTP].iter().any(changed);
        out.tcp = out.rules[TCP].iter().any(changed);
        out.http_dropped = out.rules[HTTP].iter().all(|r| r.drop);
        out.tcp_dropped = out.rules[TCP].iter().all(|r| r.drop);
        Ok(out)
    }

    /// The one `Arc` of these overrides: equal configs (the same listener pushed again, or the
    /// inbound and outbound listeners of one Telemetry) share it, so their requests land on the same
    /// series, which are told apart by the overrides' address.
    pub fn shared(self) -> Arc<Overrides> {
        static KNOWN: Mutex<Vec<Weak<Overrides>>> = Mutex::new(Vec::new());
        // A poisoned lock only means another listener's conversion panicked; the list is whole.
        let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
        known.retain(|w| w.strong_count() > 0);
        if let Some(same) = known.iter().filter_map(Weak::upgrade).find(|o| **o == self) {
            return same;
        }
        let new = Arc::new(self);
        known.push(Arc::downgrade(&new));
        new
    }

    /// Whether `m` is not recorded.
    pub fn drops(&self, m: Metric) -> bool {
        self.rules[m].drop
    }

    /// Whether the overrides change any HTTP metric (else HTTP requests record as without them).
    pub fn touches_http(&self) -> bool {
        self.http
    }

    /// Whether the overrides change any TCP metric.
    pub fn touches_tcp(&self) -> bool {
        self.tcp
    }

    /// Whether every HTTP metric is dropped (nothing to record).
    pub fn drops_all_http(&self) -> bool {
        self.http_dropped
    }

    /// Whether every TCP metric is dropped.
    pub fn drops_all_tcp(&self) -> bool {
        self.tcp_dropped
    }

    /// Whether the overrides change nothing.
    pub fn is_empty(&self) -> bool {
        !self.http && !self.tcp
    }

    fn request_headers(&self) -> &[HeaderName] {
        &self.headers[..self.request_headers]
    }

    fn response_headers(&self) -> &[HeaderName] {
        &self.headers[self.request_headers..]
    }

    /// Evaluates every expression against `attrs` and hands the values, in expression order, to `f`.
    fn evaluate<R>(&self, attrs: &dyn Attributes, f: impl FnOnce(&[Value<'_>]) -> R) -> R {
        if self.exprs.len() <= INLINE_VALUES {
            let mut values: [Value<'_>; INLINE_VALUES] = std::array::from_fn(|_| Value::Null);
            for (v, e) in values.iter_mut().zip(&self.exprs) {
                *v = e.eval(attrs);
            }
            f(&values[..self.exprs.len()])
        } else {
            let values: Vec<Value<'_>> = self.exprs.iter().map(|e| e.eval(attrs)).collect();
            f(&values)
        }
    }
}

// === tcp_reporting_duration ===

/// How often an open TCP connection adds its bytes to its metrics when the stats config does not say:
/// Istio's stats plugin default, which is also what weft uses on listeners without a stats filter.
pub const DEFAULT_TCP_REPORTING: Duration = Duration::from_secs(15);

/// The longest protobuf `Duration` (10,000 years), as its JSON parsers accept.
const MAX_DURATION_SECONDS: u64 = 315_576_000_000;

/// The stats plugin config's `tcp_reporting_duration`, when it has one: how often an open TCP
/// connection's bytes are added to `istio_tcp_{received,sent}_bytes_total` (they are added at close
/// too). Read apart from [`Overrides::from_config`] because it changes no series: a config with only
/// this field has no overrides. A value that is not a positive duration is an error naming the field.
pub fn tcp_reporting_duration(config: &Struct) -> Result<Option<Duration>, String> {
    const FIELD: &str = "tcp_reporting_duration";
    match field(config, FIELD) {
        None | Some(Kind::NullValue(_)) => Ok(None),
        Some(Kind::StringValue(s)) => match parse_duration(s) {
            Ok(d) if d.is_zero() => Err(format!("{FIELD}: {s:?} is not positive")),
            Ok(d) => Ok(Some(d)),
            Err(why) => Err(format!("{FIELD}: {why}")),
        },
        Some(_) => Err(format!(
            "{FIELD}: not a string (a protobuf Duration such as \"15s\")"
        )),
    }
}

/// A protobuf `Duration` in its JSON form, as Istio writes it: seconds with up to nine decimals and an
/// `s` (`"15s"`, `"0.050s"`). Negative durations are refused: nothing in weft waits less than zero.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let not = || {
        format!("{s:?} is not a duration (seconds ending in \"s\", such as \"15s\" or \"0.5s\")")
    };
    if s.starts_with('-') {
        return Err(format!("{s:?} is negative"));
    }
    let number = s.strip_suffix('s').ok_or_else(not)?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (number.contains('.') && !digits(fraction)) || fraction.len() > 9 {
        return Err(not());
    }
    let seconds: u64 = whole
        .parse()
        .ok()
        .filter(|&n| n <= MAX_DURATION_SECONDS)
        .ok_or_else(|| format!("{s:?} is out of range (at most {MAX_DURATION_SECONDS}s)"))?;
    // Nine digits at most, each a digit: the padded fraction parses and is below one second.
    let nanos = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(9)
        .fold(0u32, |n, b| n * 10 + u32::from(b - b'0'));
    Ok(Duration::new(seconds, nanos))
}

// === Captured ===

/// Header values a request keeps for its expressions, in the order of [`Overrides::headers`].
#[derive(Debug, Default)]
struct Kept {
    inline: [Option<HeaderValue>; INLINE_HEADERS],
    more: Vec<Option<HeaderValue>>,
}

impl Kept {
    fn set(&mut self, i: usize, v: Option<HeaderValue>) {
        match self.inline.get_mut(i) {
            Some(slot) => *slot = v,
            None => {
                let j = i - INLINE_HEADERS;
                if self.more.len() <= j {
                    self.more.resize(j + 1, None);
                }
                self.more[j] = v;
            }
        }
    }

    fn get(&self, i: usize) -> Option<&str> {
        let v = match self.inline.get(i) {
            Some(v) => v.as_ref(),
            None => self.more.get(i - INLINE_HEADERS)?.as_ref(),
        };
        v?.to_str().ok()
    }
}

/// What a request's tag expressions read, kept from when it arrived and completed with the response.
#[derive(Debug)]
pub struct Captured {
    overrides: Arc<Overrides>,
    method: Option<http::Method>,
    path: Option<String>,
    host: Option<String>,
    scheme: &'static str,
    protocol: &'static str,
    kept: Kept,
    cluster: Option<Arc<crate::config::cluster::Cluster>>,
    upstream: Option<SocketAddr>,
}

/// `HTTP/1.1`, as Envoy's `request.protocol` names a version.
pub(crate) fn protocol_name(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

impl Captured {
    /// Keeps what `overrides`' expressions read of a request that has just arrived: the headers they
    /// name (a shared value each), and the method, path or host only when they read them.
    pub fn new(
        overrides: Arc<Overrides>,
        parts: &http::request::Parts,
        authority: &str,
    ) -> Box<Captured> {
        let reads = overrides.reads;
        let mut kept = Kept::default();
        for (i, h) in overrides.request_headers().iter().enumerate() {
            kept.set(i, parts.headers.get(h).cloned());
        }
        Box::new(Captured {
            method: reads.method.then(|| parts.method.clone()),
            path: reads.path.then(|| {
                parts
                    .uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_string()
            }),
            host: reads.host.then(|| authority.to_string()),
            scheme: match parts.uri.scheme_str() {
                Some("https") => "https",
                _ => "http",
            },
            protocol: protocol_name(parts.version),
            kept,
            cluster: None,
            upstream: None,
            overrides,
        })
    }

    /// The response head and where the request went: the response headers the expressions read, the
    /// cluster and the endpoint of the last try.
    pub fn response(
        &mut self,
        headers: &HeaderMap,
        cluster: Option<Arc<crate::config::cluster::Cluster>>,
        upstream: Option<SocketAddr>,
    ) {
        let at = self.overrides.request_headers;
        for i in 0..self.overrides.response_headers().len() {
            let v = headers.get(&self.overrides.headers[at + i]).cloned();
            self.kept.set(at + i, v);
        }
        self.cluster = cluster;
        self.upstream = upstream;
    }

    /// The listener's overrides.
    pub fn overrides(&self) -> &Arc<Overrides> {
        &self.overrides
    }

    /// Evaluates the tag expressions for the finished request and hands their values to `f`.
    pub fn evaluate<R>(
        &self,
        code: u16,
        flags: Flags,
        grpc_status: Option<u8>,
        f: impl FnOnce(&[Value<'_>]) -> R,
    ) -> R {
        let n = self.overrides.request_headers;
        let facts = Facts {
            request: Request {
                method: self.method.as_ref().map(http::Method::as_str),
                path: self.path.as_deref(),
                host: self.host.as_deref(),
                scheme: self.scheme,
                protocol: self.protocol,
                code,
                flags,
                grpc_status,
                cluster: self.cluster.as_ref().map(|c| c.name.as_str()),
                upstream: self.upstream,
                source: None,
                destination: None,
            },
            header: |side: Side, name: &str| {
                let (names, base) = match side {
                    Side::Request => (self.overrides.request_headers(), 0),
                    Side::Response => (self.overrides.response_headers(), n),
                };
                let i = names.iter().position(|h| h.as_str() == name)?;
                self.kept.get(base + i)
            },
        };
        self.overrides.evaluate(&facts, f)
    }
}

// === series keys ===

/// A tag value as series keys compare it: text, or a number or boolean compared as the text it
/// prints as (so `string(response.code)` and `response.code` make one series).
#[derive(Debug, Clone, Copy)]
pub enum TagRef<'a> {
    /// Text.
    Text(&'a str),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// No value (null or an evaluation error): the label reads `unknown`.
    Unknown,
}

impl<'a> TagRef<'a> {
    /// The tag of an evaluated expression.
    pub fn of(v: &'a Value<'_>) -> TagRef<'a> {
        match v {
            Value::Str(s) => TagRef::Text(s),
            Value::Int(i) => TagRef::Int(*i),
            Value::Bool(b) => TagRef::Bool(*b),
            Value::Null | Value::Error => TagRef::Unknown,
        }
    }

    /// Calls `f` with the text (`None`: unknown), formatting a number on the stack.
    fn with_text<R>(self, f: impl FnOnce(Option<&str>) -> R) -> R {
        match self {
            TagRef::Text(s) => f(Some(s)),
            TagRef::Int(i) => {
                use std::io::Write as _;
                let mut buf = [0u8; 20];
                let mut w = &mut buf[..];
                // 20 bytes hold every i64 in decimal, sign included.
                let _ = write!(w, "{i}");
                let len = 20 - w.len();
                f(std::str::from_utf8(&buf[..len]).ok())
            }
            TagRef::Bool(b) => f(Some(if b { "true" } else { "false" })),
            TagRef::Unknown => f(None),
        }
    }

    fn owned(self) -> Option<Box<str>> {
        self.with_text(|t| t.map(Box::from))
    }
}

impl Hash for TagRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.with_text(|t| t.hash(state))
    }
}

impl PartialEq for TagRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.with_text(|a| other.with_text(|b| a == b))
    }
}

/// A series key of a listener with overrides: the standard key `K`, the overrides and the tag values.
/// Implemented by the stored key ([`Custom`]) and by a request's borrowed values ([`Lookup`]), which
/// hash and compare alike, so a request finds its series without building a key.
pub trait SeriesKey<K> {
    /// The standard part.
    fn key(&self) -> &K;
    /// The overrides.
    fn overrides(&self) -> &Arc<Overrides>;
    /// How many tag values.
    fn tags(&self) -> usize;
    /// The `i`th tag value.
    fn tag(&self, i: usize) -> TagRef<'_>;
}

impl<K: Hash> Hash for dyn SeriesKey<K> + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
        std::ptr::hash(Arc::as_ptr(self.overrides()), state);
        state.write_usize(self.tags());
        for i in 0..self.tags() {
            self.tag(i).hash(state);
        }
    }
}

impl<K: Eq> PartialEq for dyn SeriesKey<K> + '_ {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(self.overrides(), other.overrides())
            && self.tags() == other.tags()
            && self.key() == other.key()
            && (0..self.tags()).all(|i| self.tag(i) == other.tag(i))
    }
}

impl<K: Eq> Eq for dyn SeriesKey<K> + '_ {}

/// A stored series key with overrides: its tag values owned (made once, when the series is new).
#[derive(Debug, Clone)]
pub struct Custom<K> {
    key: K,
    overrides: Arc<Overrides>,
    tags: Arc<[Option<Box<str>>]>,
}

impl<K> SeriesKey<K> for Custom<K> {
    fn key(&self) -> &K {
        &self.key
    }
    fn overrides(&self) -> &Arc<Overrides> {
        &self.overrides
    }
    fn tags(&self) -> usize {
        self.tags.len()
    }
    fn tag(&self, i: usize) -> TagRef<'_> {
        match self.tags.get(i) {
            Some(Some(s)) => TagRef::Text(s),
            _ => TagRef::Unknown,
        }
    }
}

impl<K: Hash> Hash for Custom<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self as &dyn SeriesKey<K>).hash(state)
    }
}

impl<K: Eq> PartialEq for Custom<K> {
    fn eq(&self, other: &Self) -> bool {
        (self as &dyn SeriesKey<K>) == (other as &dyn SeriesKey<K>)
    }
}

impl<K: Eq> Eq for Custom<K> {}

impl<'a, K: 'a> Borrow<dyn SeriesKey<K> + 'a> for Custom<K> {
    fn borrow(&self) -> &(dyn SeriesKey<K> + 'a) {
        self
    }
}

impl<K> Custom<K> {
    /// A key with the same overrides and tags and another standard part (a TCP connection's close,
    /// with its flags): no allocation.
    pub fn with_key(&self, key: K) -> Custom<K> {
        Custom {
            key,
            overrides: self.overrides.clone(),
            tags: self.tags.clone(),
        }
    }

    /// The standard part.
    pub fn standard(&self) -> &K {
        &self.key
    }

    /// The overrides.
    pub fn overrides(&self) -> &Arc<Overrides> {
        &self.overrides
    }

    /// Whether `m` is not recorded.
    pub fn drops(&self, m: Metric) -> bool {
        self.overrides.drops(m)
    }

    /// The labels of metric `m`: `standard` without the removed ones, with the upserted ones replaced
    /// or added after them (a value an expression could not give is `unknown`, as Istio's).
    pub fn labels<'a>(
        &'a self,
        m: Metric,
        standard: &[(&'static str, &'a str)],
    ) -> Vec<(&'a str, &'a str)> {
        let rule = &self.overrides.rules[m];
        let value = |idx: usize| -> &'a str {
            self.tags
                .get(idx)
                .and_then(|v| v.as_deref())
                .unwrap_or(super::peer::UNKNOWN)
        };
        let mut out: Vec<(&'a str, &'a str)> = standard
            .iter()
            .filter(|(k, _)| !rule.remove.iter().any(|r| r == k))
            .map(|(k, v)| match rule.upsert.iter().find(|(n, _)| n == k) {
                Some((_, idx)) => (*k, value(*idx)),
                None => (*k, *v),
            })
            .collect();
        for (n, idx) in &rule.upsert {
            if !standard.iter().any(|(k, _)| k == n) {
                out.push((n.as_str(), value(*idx)));
            }
        }
        out
    }
}

/// A request's series key, borrowed: the standard key and the values its expressions gave.
pub struct Lookup<'a, K> {
    /// The standard part.
    pub key: &'a K,
    /// The overrides.
    pub overrides: &'a Arc<Overrides>,
    /// The values, in expression order.
    pub values: &'a [Value<'a>],
}

impl<K> SeriesKey<K> for Lookup<'_, K> {
    fn key(&self) -> &K {
        self.key
    }
    fn overrides(&self) -> &Arc<Overrides> {
        self.overrides
    }
    fn tags(&self) -> usize {
        self.values.len()
    }
    fn tag(&self, i: usize) -> TagRef<'_> {
        self.values.get(i).map_or(TagRef::Unknown, TagRef::of)
    }
}

impl<K: Clone> Lookup<'_, K> {
    /// The stored key (made when the series is new).
    pub fn to_owned(&self) -> Custom<K> {
        Custom {
            key: self.key.clone(),
            overrides: self.overrides.clone(),
            tags: self.values.iter().map(|v| TagRef::of(v).owned()).collect(),
        }
    }
}

/// A TCP connection's series key with `overrides`: its tag expressions evaluated once, when the
/// connection has its destination (`cluster`, the endpoint `upstream`), between `source` (the client)
/// and `destination` (the listener's address).
pub fn tcp_key<K>(
    key: K,
    overrides: Arc<Overrides>,
    cluster: Option<&str>,
    upstream: Option<SocketAddr>,
    source: SocketAddr,
    destination: Option<SocketAddr>,
) -> Custom<K> {
    let facts = Facts {
        request: Request {
            cluster,
            upstream,
            source: Some(source),
            destination,
            ..Request::default()
        },
        header: |_: Side, _: &str| None,
    };
    let tags = overrides.evaluate(&facts, |values| {
        values.iter().map(|v| TagRef::of(v).owned()).collect()
    });
    Custom {
        key,
        overrides,
        tags,
    }
}

// === attributes ===

/// Envoy's bit for each response flag weft sets (`response.flags` is Envoy's bit vector, its
/// `ResponseFlag` enum).
const ENVOY_FLAG_BITS: [(Flags, i64); 12] = [
    (Flags::UH, 0x2),
    (Flags::UT, 0x4),
    (Flags::UR, 0x10),
    (Flags::UF, 0x20),
    (Flags::UC, 0x40),
    (Flags::NR, 0x100),
    (Flags::DI, 0x200),
    (Flags::FI, 0x400),
    (Flags::DC, 0x4000),
    (Flags::URX, 0x8000),
    (Flags::DPE, 0x40000),
    (Flags::NC, 0x1000000),
];

/// Envoy's bit vector of `flags`.
pub fn envoy_flag_bits(flags: Flags) -> i64 {
    ENVOY_FLAG_BITS
        .iter()
        .filter(|(f, _)| flags.contains(*f))
        .fold(0, |acc, (_, b)| acc | b)
}

/// What CEL expressions read of a request or connection, whoever keeps it (a metric's capture, an
/// access log line, a TCP connection). `None`: not known here (the attribute is an error).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Request<'a> {
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
    pub host: Option<&'a str>,
    pub scheme: &'a str,
    pub protocol: &'a str,
    pub code: u16,
    pub flags: Flags,
    pub grpc_status: Option<u8>,
    pub cluster: Option<&'a str>,
    pub upstream: Option<SocketAddr>,
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
}

/// A [`Request`] and its headers (`header(side, lowercase name)`), as CEL's [`Attributes`].
pub(crate) struct Facts<'a, H> {
    pub request: Request<'a>,
    pub header: H,
}

fn text(v: Option<&str>) -> Value<'_> {
    v.map_or(Value::Error, |s| Value::Str(Cow::Borrowed(s)))
}

fn address(a: Option<SocketAddr>) -> Value<'static> {
    a.map_or(Value::Error, |a| Value::Str(Cow::Owned(a.to_string())))
}

fn port(a: Option<SocketAddr>) -> Value<'static> {
    a.map_or(Value::Error, |a| Value::Int(i64::from(a.port())))
}

impl<'a, H: Fn(Side, &str) -> Option<&'a str>> Attributes for Facts<'a, H> {
    fn attr(&self, a: Attr) -> Value<'_> {
        let r = &self.request;
        let header = |n: &str| (self.header)(Side::Request, n);
        match a {
            Attr::RequestMethod => text(r.method),
            Attr::RequestPath => text(r.path),
            Attr::RequestUrlPath => text(r.path.map(|p| p.split('?').next().unwrap_or(p))),
            Attr::RequestHost => text(r.host),
            Attr::RequestScheme => text((!r.scheme.is_empty()).then_some(r.scheme)),
            Attr::RequestProtocol => text((!r.protocol.is_empty()).then_some(r.protocol)),
            Attr::RequestId => text(header("x-request-id")),
            Attr::RequestUserAgent => text(header("user-agent")),
            Attr::RequestReferer => text(header("referer")),
            Attr::ResponseCode => match r.protocol {
                // A TCP connection has no response.
                "" => Value::Error,
                _ => Value::Int(i64::from(r.code)),
            },
            Attr::ResponseGrpcStatus => r
                .grpc_status
                .map_or(Value::Error, |g| Value::Int(i64::from(g))),
            Attr::ResponseFlags => Value::Int(envoy_flag_bits(r.flags)),
            Attr::UpstreamAddress => address(r.upstream),
            Attr::UpstreamPort => port(r.upstream),
            Attr::SourceAddress => address(r.source),
            Attr::SourcePort => port(r.source),
            Attr::DestinationAddress => address(r.destination),
            Attr::DestinationPort => port(r.destination),
            Attr::XdsClusterName => text(r.cluster),
            // Plaintext between sidecars until weft has mutual TLS.
            Attr::ConnectionMtls => Value::Bool(false),
        }
    }

    fn header(&self, side: Side, name: &str) -> Option<&str> {
        (self.header)(side, name)
    }
}

/// A protobuf `Struct` of a JSON object (Istio's stats plugin config as weftd sends it), for tests.
#[cfg(test)]
pub(crate) fn struct_of_json(v: &serde_json::Value) -> Struct {
    use weft_xds::pb::google::protobuf::ListValue;
    fn value(v: &serde_json::Value) -> PbValue {
        let kind = match v {
            serde_json::Value::Bool(b) => Kind::BoolValue(*b),
            serde_json::Value::String(s) => Kind::StringValue(s.clone()),
            serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
            serde_json::Value::Array(a) => Kind::ListValue(ListValue {
                values: a.iter().map(value).collect(),
            }),
            serde_json::Value::Object(_) => Kind::StructValue(struct_of_json(v)),
            serde_json::Value::Null => Kind::NullValue(0),
        };
        PbValue { kind: Some(kind) }
    }
    Struct {
        fields: v
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), value(v)))
            .collect(),
    }
}

/// The shared overrides of a stats plugin config given as JSON, for tests.
#[cfg(test)]
pub(crate) fn of_json(json: &str) -> Arc<Overrides> {
    let v: serde_json::Value = serde_json::from_str(json).expect("JSON");
    Overrides::from_config(&struct_of_json(&v))
        .expect("valid")
        .shared()
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_xds::pb::google::protobuf::ListValue;

    fn s(v: &str) -> PbValue {
        PbValue {
            kind: Some(Kind::StringValue(v.into())),
        }
    }

    fn b(v: bool) -> PbValue {
        PbValue {
            kind: Some(Kind::BoolValue(v)),
        }
    }

    fn list(v: Vec<PbValue>) -> PbValue {
        PbValue {
            kind: Some(Kind::ListValue(ListValue { values: v })),
        }
    }

    fn obj(fields: Vec<(&str, PbValue)>) -> PbValue {
        PbValue {
            kind: Some(Kind::StructValue(Struct {
                fields: fields
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            })),
        }
    }

    pub(crate) fn config(metrics: Vec<PbValue>) -> Struct {
        Struct {
            fields: [("metrics".to_string(), list(metrics))].into(),
        }
    }

    fn request(headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().method("GET").uri("/api?q=1");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request").into_parts().0
    }

    /// The values the expressions give `c` finished with `code` and `flags`, as stored.
    fn finish(c: &Captured, code: u16, flags: Flags) -> Custom<()> {
        c.evaluate(code, flags, None, |values| {
            Lookup {
                key: &(),
                overrides: &c.overrides,
                values,
            }
            .to_owned()
        })
    }

    #[test]
    fn reads_istios_stats_config() {
        let o = Overrides::from_config(&config(vec![
            obj(vec![("name", s("request_bytes")), ("drop", b(true))]),
            obj(vec![(
                "dimensions",
                obj(vec![("user", s("request.headers['x-user']"))]),
            )]),
            obj(vec![
                ("name", s("istio_requests_total")),
                (
                    "tags_to_remove",
                    list(vec![s("request_protocol"), s("user")]),
                ),
            ]),
        ]))
        .expect("valid");
        assert!(o.drops(REQUEST_BYTES) && !o.drops(REQUESTS));
        assert!(o.touches_http() && o.touches_tcp() && !o.drops_all_http());
        assert_eq!(o.headers, ["x-user"]);
        assert_eq!(o.reads, Reads::default(), "no method, path or host");
        let o = o.shared();
        let c = Captured::new(
            o.clone(),
            &request(&[("x-user", "jason"), ("x-other", "no")]),
            "reviews:9080",
        );
        assert_eq!(c.kept.get(0), Some("jason"));
        assert_eq!(c.kept.get(1), None, "only what the expressions read");
        assert!(c.path.is_none() && c.host.is_none() && c.method.is_none());
        let custom = finish(&c, 200, Flags::default());
        let standard = [
            ("reporter", "source"),
            ("request_protocol", "http"),
            ("response_code", "200"),
        ];
        assert_eq!(
            custom.labels(DURATION, &standard),
            [
                ("reporter", "source"),
                ("request_protocol", "http"),
                ("response_code", "200"),
                ("user", "jason")
            ]
        );
        assert_eq!(
            custom.labels(REQUESTS, &standard),
            [("reporter", "source"), ("response_code", "200")],
            "removed after it was added"
        );
        let missing = finish(&Captured::new(o, &request(&[]), "r"), 503, Flags::UF);
        assert_eq!(missing.labels(DURATION, &[])[0], ("user", "unknown"));
        assert_ne!(missing, custom);
    }

    #[test]
    fn equal_configs_share_one_arc() {
        let make = || {
            Overrides::from_config(&config(vec![obj(vec![(
                "dimensions",
                obj(vec![("m", s("request.method"))]),
            )])]))
            .expect("valid")
            .shared()
        };
        let (a, b) = (make(), make());
        assert!(Arc::ptr_eq(&a, &b));
        let other = Overrides::from_config(&config(vec![obj(vec![("drop", self::b(true))])]))
            .expect("valid")
            .shared();
        assert!(!Arc::ptr_eq(&a, &other));
        assert!(other.drops_all_http() && other.drops_all_tcp());
    }

    #[test]
    fn refuses_what_it_cannot_apply() {
        let cases: Vec<(PbValue, &str)> = vec![
            (
                obj(vec![("name", s("my_metric"))]),
                "metrics[0].name: \"my_metric\" is not a metric weft records",
            ),
            (
                obj(vec![("dimensions", obj(vec![("u", s("response.code + 1"))]))]),
                "metrics[0].dimensions.u: CEL expression \"response.code + 1\" at offset 14: arithmetic is not supported",
            ),
            (
                obj(vec![("dimensions", obj(vec![("u", s("request.headers['a b']"))]))]),
                "metrics[0].dimensions.u: \"a b\" is not a header name",
            ),
            (
                obj(vec![("dimensions", obj(vec![("u", b(true))]))]),
                "metrics[0].dimensions.u: not a string",
            ),
            (obj(vec![("dimensions", s("x"))]), "metrics[0].dimensions: not an object"),
            (obj(vec![("drop", s("yes"))]), "metrics[0].drop: not a boolean"),
            (obj(vec![("name", b(true))]), "metrics[0].name: not a string"),
            (
                obj(vec![("tags_to_remove", list(vec![b(true)]))]),
                "metrics[0].tags_to_remove: not a list of strings",
            ),
            (obj(vec![("tags_to_remove", s("a"))]), "metrics[0].tags_to_remove: not a list"),
            (s("x"), "metrics[0]: not an object"),
        ];
        for (entry, want) in cases {
            let e = Overrides::from_config(&config(vec![entry])).expect_err(want);
            assert_eq!(e, want);
        }
        let not_a_list = Struct {
            fields: [("metrics".to_string(), s("x"))].into(),
        };
        assert_eq!(
            Overrides::from_config(&not_a_list),
            Err("metrics: not a list".to_string())
        );
    }

    #[test]
    fn response_attributes_read_the_finished_request() {
        let o = Overrides::from_config(&config(vec![obj(vec![(
            "dimensions",
            obj(vec![
                ("class", s("response.code >= 500 ? 'error' : 'ok'")),
                ("up", s("upstream.address")),
                ("fl", s("response.flags")),
                ("cl", s("xds.cluster_name")),
                ("code", s("response.code")),
                ("srv", s("response.headers['server']")),
                ("path", s("request.url_path")),
            ]),
        )])]))
        .expect("valid")
        .shared();
        let mut c = Captured::new(o, &request(&[]), "r");
        let cluster = crate::config::cluster::Cluster {
            name: "outbound|9080||r".into(),
            endpoints: Default::default(),
            connect_timeout: std::time::Duration::from_secs(1),
            service: None,
            tls: None,
            policy: Default::default(),
            table: None,
        };
        let mut h = HeaderMap::new();
        h.insert("server", HeaderValue::from_static("envoy"));
        c.response(
            &h,
            Some(Arc::new(cluster)),
            Some("127.0.0.1:9".parse().expect("addr")),
        );
        let custom = finish(&c, 503, Flags::UF);
        assert_eq!(
            custom.labels(REQUESTS, &[]),
            [
                ("cl", "outbound|9080||r"),
                ("class", "error"),
                ("code", "503"),
                ("fl", "32"),
                ("path", "/api"),
                ("srv", "envoy"),
                ("up", "127.0.0.1:9")
            ]
        );
    }

    #[test]
    fn a_request_finds_its_series_by_borrowed_values() {
        use std::collections::HashSet;
        let o = Overrides::from_config(&config(vec![obj(vec![(
            "dimensions",
            obj(vec![
                ("code", s("response.code")),
                ("text", s("string(response.code)")),
                ("ok", s("response.code < 400")),
            ]),
        )])]))
        .expect("valid")
        .shared();
        let c = Captured::new(o.clone(), &request(&[]), "r");
        let mut set: HashSet<Custom<u8>> = HashSet::new();
        c.evaluate(200, Flags::default(), None, |values| {
            let l = Lookup {
                key: &7u8,
                overrides: &o,
                values,
            };
            assert!(!set.contains(&l as &dyn SeriesKey<u8>));
            set.insert(l.to_owned());
            assert!(set.contains(&l as &dyn SeriesKey<u8>), "found again");
            let other_key = Lookup { key: &8u8, ..l };
            assert!(!set.contains(&other_key as &dyn SeriesKey<u8>));
        });
        c.evaluate(404, Flags::default(), None, |values| {
            let l = Lookup {
                key: &7u8,
                overrides: &o,
                values,
            };
            assert!(!set.contains(&l as &dyn SeriesKey<u8>), "another code");
        });
        // An integer and its text are one tag value.
        assert_eq!(TagRef::Int(-12), TagRef::Text("-12"));
        assert_eq!(
            TagRef::Int(i64::MIN).owned().as_deref(),
            Some("-9223372036854775808")
        );
        assert_ne!(TagRef::Unknown, TagRef::Text("unknown"));
    }

    #[test]
    fn tcp_reporting_duration_is_a_protobuf_duration_in_json() {
        let of = |v: PbValue| {
            tcp_reporting_duration(&Struct {
                fields: [("tcp_reporting_duration".to_string(), v)].into(),
            })
        };
        assert_eq!(tcp_reporting_duration(&config(vec![])), Ok(None), "absent");
        assert_eq!(
            of(PbValue {
                kind: Some(Kind::NullValue(0))
            }),
            Ok(None),
            "null"
        );
        let good = [
            ("15s", Duration::from_secs(15)),
            ("0.05s", Duration::from_millis(50)),
            ("0.050s", Duration::from_millis(50)),
            ("1.000000001s", Duration::new(1, 1)),
            ("0.000001s", Duration::from_micros(1)),
            ("007s", Duration::from_secs(7)),
            ("315576000000s", Duration::from_secs(MAX_DURATION_SECONDS)),
        ];
        for (text, want) in good {
            assert_eq!(of(s(text)), Ok(Some(want)), "{text}");
        }
        let not = |v: &str| {
            format!(
                "tcp_reporting_duration: {v:?} is not a duration (seconds ending in \"s\", such as \"15s\" or \"0.5s\")"
            )
        };
        let bad = [
            ("15", not("15")),
            ("15ms", not("15ms")),
            ("1m", not("1m")),
            ("15 s", not("15 s")),
            ("1.s", not("1.s")),
            (".5s", not(".5s")),
            ("+1s", not("+1s")),
            ("1e3s", not("1e3s")),
            ("1.0000000001s", not("1.0000000001s")),
            ("s", not("s")),
            ("", not("")),
            ("٣s", not("٣s")),
            ("0s", "tcp_reporting_duration: \"0s\" is not positive".into()),
            ("0.000s", "tcp_reporting_duration: \"0.000s\" is not positive".into()),
            ("-1s", "tcp_reporting_duration: \"-1s\" is negative".into()),
            (
                "315576000001s",
                "tcp_reporting_duration: \"315576000001s\" is out of range (at most 315576000000s)"
                    .into(),
            ),
            (
                "99999999999999999999999s",
                "tcp_reporting_duration: \"99999999999999999999999s\" is out of range (at most 315576000000s)"
                    .into(),
            ),
        ];
        for (text, want) in bad {
            assert_eq!(of(s(text)), Err(want), "{text:?}");
        }
        assert_eq!(
            of(PbValue {
                kind: Some(Kind::NumberValue(15.0))
            }),
            Err(
                "tcp_reporting_duration: not a string (a protobuf Duration such as \"15s\")".into()
            )
        );
        // The metric overrides ignore it: alone, it changes no series.
        let only = Struct {
            fields: [("tcp_reporting_duration".to_string(), s("1s"))].into(),
        };
        assert!(Overrides::from_config(&only).expect("valid").is_empty());
    }

    #[test]
    fn flags_are_envoys_bits() {
        let mut f = Flags::UF;
        f.insert(Flags::URX);
        assert_eq!(envoy_flag_bits(f), 0x8020);
        assert_eq!(envoy_flag_bits(Flags::default()), 0);
    }

    #[test]
    fn tcp_tags_read_the_connection() {
        let o = Overrides::from_config(&config(vec![obj(vec![
            ("name", s("tcp_sent_bytes_total")),
            (
                "dimensions",
                obj(vec![
                    ("peer", s("source.address")),
                    ("port", s("destination.port")),
                    ("code", s("response.code")),
                ]),
            ),
        ])]))
        .expect("valid")
        .shared();
        let k = tcp_key(
            (),
            o,
            Some("outbound|9000||echo"),
            None,
            "127.0.0.1:5000".parse().expect("addr"),
            Some("127.0.1.10:9000".parse().expect("addr")),
        );
        assert_eq!(
            k.labels(TCP_SENT, &[]),
            [
                ("code", "unknown"),
                ("peer", "127.0.0.1:5000"),
                ("port", "9000")
            ]
        );
    }
}
