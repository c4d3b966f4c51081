//! The subset of CEL ([Common Expression Language](https://github.com/google/cel-spec)) that Istio's
//! Telemetry API uses: metric `tagOverrides` values and access-log `filter.expression`s, over Envoy's
//! request attributes (<https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/advanced/attributes>).
//!
//! weftd parses each expression when it reads a Telemetry resource (so `weft analyze` names the field of
//! one it refuses), and weft-proxy parses it again when the listener arrives (NACKing one it refuses);
//! requests only evaluate the parsed [`Expr`], which allocates nothing unless it converts a number to a
//! string (`string(response.code)`).
//!
//! # The subset
//! - literals: strings (`'a'`, `"a"`, with `\\ \' \" \n \t \r` escapes), integers (`200`, `200u`),
//!   `true`, `false`, `null`, and lists of them (`['GET', 'HEAD']`, on the right of `in` only);
//! - attributes ([`Attr`]): `request.{method, path, url_path, host, scheme, protocol, id, useragent,
//!   referer, headers['name']}`, `response.{code, grpc_status, flags, headers['name']}`,
//!   `source.{address, port}`, `destination.{address, port}`, `upstream.{address, port}`,
//!   `connection.mtls`, `xds.cluster_name`; `headers.name` works like `headers['name']`;
//! - operators: `==`, `!=`, `<`, `<=`, `>`, `>=` (integers with integers, strings with strings), `&&`,
//!   `||`, `!`, `in` (a list literal, or `'name' in request.headers`, the header's presence), `? :`,
//!   and parentheses;
//! - functions: `has(x)` (the attribute or header is present), `string(x)`, `int(x)`,
//!   `x.startsWith('p')`, `x.endsWith('s')`, `x.contains('s')`.
//!
//! Everything else (arithmetic, other attributes, maps, macros, doubles, bytes) is refused when parsed.
//! As in CEL, `&&` and `||` are commutative over errors: `false && error` is false, `true || error` is
//! true. A missing header or attribute is an error; a filter that ends in an error is false, a tag
//! that ends in one is `unknown`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod parse;

use std::borrow::Cow;
use std::fmt;

pub use parse::parse;

/// The longest expression accepted, in bytes.
pub const MAX_LEN: usize = 4096;
/// How deep expressions may nest (parentheses, operators, calls); evaluation recurses as deep.
pub const MAX_DEPTH: usize = 32;

/// Which message a header belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// `request.headers`.
    Request,
    /// `response.headers`.
    Response,
}

/// An attribute of a request or connection (Envoy's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attr {
    /// `request.method`.
    RequestMethod,
    /// `request.path`: the path with its query.
    RequestPath,
    /// `request.url_path`: the path without its query.
    RequestUrlPath,
    /// `request.host`: the authority.
    RequestHost,
    /// `request.scheme`.
    RequestScheme,
    /// `request.protocol`: `HTTP/1.0`, `HTTP/1.1`, `HTTP/2`.
    RequestProtocol,
    /// `request.id`: `x-request-id`.
    RequestId,
    /// `request.useragent`.
    RequestUserAgent,
    /// `request.referer`.
    RequestReferer,
    /// `response.code`.
    ResponseCode,
    /// `response.grpc_status`.
    ResponseGrpcStatus,
    /// `response.flags`: Envoy's response flags as its bit vector.
    ResponseFlags,
    /// `source.address`: the downstream peer, `ip:port`.
    SourceAddress,
    /// `source.port`.
    SourcePort,
    /// `destination.address`: the local address the request came to, `ip:port`.
    DestinationAddress,
    /// `destination.port`.
    DestinationPort,
    /// `upstream.address`: the upstream endpoint of the last try, `ip:port`.
    UpstreamAddress,
    /// `upstream.port`.
    UpstreamPort,
    /// `connection.mtls`.
    ConnectionMtls,
    /// `xds.cluster_name`: the upstream cluster.
    XdsClusterName,
}

impl Attr {
    /// Every attribute with its dotted name.
    pub const ALL: [(&'static str, Attr); 20] = [
        ("request.method", Attr::RequestMethod),
        ("request.path", Attr::RequestPath),
        ("request.url_path", Attr::RequestUrlPath),
        ("request.host", Attr::RequestHost),
        ("request.scheme", Attr::RequestScheme),
        ("request.protocol", Attr::RequestProtocol),
        ("request.id", Attr::RequestId),
        ("request.useragent", Attr::RequestUserAgent),
        ("request.referer", Attr::RequestReferer),
        ("response.code", Attr::ResponseCode),
        ("response.grpc_status", Attr::ResponseGrpcStatus),
        ("response.flags", Attr::ResponseFlags),
        ("source.address", Attr::SourceAddress),
        ("source.port", Attr::SourcePort),
        ("destination.address", Attr::DestinationAddress),
        ("destination.port", Attr::DestinationPort),
        ("upstream.address", Attr::UpstreamAddress),
        ("upstream.port", Attr::UpstreamPort),
        ("connection.mtls", Attr::ConnectionMtls),
        ("xds.cluster_name", Attr::XdsClusterName),
    ];

    /// The attribute's dotted name.
    pub fn name(self) -> &'static str {
        Attr::ALL
            .iter()
            .find(|(_, a)| *a == self)
            .map_or("?", |(n, _)| n)
    }

    /// Whether the attribute is known before the response (what a request can be asked for when it
    /// arrives).
    pub fn of_request(self) -> bool {
        !matches!(
            self,
            Attr::ResponseCode
                | Attr::ResponseGrpcStatus
                | Attr::ResponseFlags
                | Attr::UpstreamAddress
                | Attr::UpstreamPort
                | Attr::XdsClusterName
        )
    }
}

/// A value during evaluation, borrowing from the attributes where it can.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer (CEL's `int` and `uint` alike).
    Int(i64),
    /// A string.
    Str(Cow<'a, str>),
    /// An evaluation error (a missing attribute or header, a type mismatch).
    Error,
}

impl Value<'_> {
    /// The string form a metric tag takes: strings as they are, numbers and booleans in decimal and
    /// `true`/`false`; `None` for null and errors.
    pub fn to_tag(&self) -> Option<Cow<'_, str>> {
        match self {
            Value::Str(s) => Some(Cow::Borrowed(s)),
            Value::Int(i) => Some(Cow::Owned(i.to_string())),
            Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
            Value::Null | Value::Error => None,
        }
    }
}

/// What an expression reads: implemented by the proxy over a request's record.
pub trait Attributes {
    /// An attribute's value; [`Value::Error`] (or `Null`) when unknown.
    fn attr(&self, a: Attr) -> Value<'_>;
    /// A header's value (names are lowercase); `None` when absent.
    fn header(&self, side: Side, name: &str) -> Option<&str>;
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `==`.
    Eq,
    /// `!=`.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
}

/// A string method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `startsWith`.
    StartsWith,
    /// `endsWith`.
    EndsWith,
    /// `contains`.
    Contains,
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal.
    Lit(Lit),
    /// An attribute.
    Attr(Attr),
    /// `request.headers['name']` (name lowercased).
    Header(Side, String),
    /// `!x`.
    Not(Box<Expr>),
    /// `a && b`.
    And(Box<Expr>, Box<Expr>),
    /// `a || b`.
    Or(Box<Expr>, Box<Expr>),
    /// `a <op> b`.
    Cmp(Cmp, Box<Expr>, Box<Expr>),
    /// `x in [..]`.
    InList(Box<Expr>, Vec<Lit>),
    /// `c ? a : b`.
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `has(x)`.
    Has(Box<Expr>),
    /// `string(x)`.
    String(Box<Expr>),
    /// `int(x)`.
    Int(Box<Expr>),
    /// `x.startsWith(y)` and its siblings.
    Call(Method, Box<Expr>, Box<Expr>),
}

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    /// `null`.
    Null,
    /// `true`, `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A string.
    Str(String),
}

impl Lit {
    fn value(&self) -> Value<'_> {
        match self {
            Lit::Null => Value::Null,
            Lit::Bool(b) => Value::Bool(*b),
            Lit::Int(i) => Value::Int(*i),
            Lit::Str(s) => Value::Str(Cow::Borrowed(s)),
        }
    }
}

/// Why an expression was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Byte offset in the expression.
    pub at: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at offset {}: {}", self.at, self.message)
    }
}

impl std::error::Error for Error {}

impl Expr {
    /// Evaluates the expression.
    pub fn eval<'a>(&'a self, attrs: &'a dyn Attributes) -> Value<'a> {
        match self {
            Expr::Lit(l) => l.value(),
            Expr::Attr(a) => attrs.attr(*a),
            Expr::Header(side, name) => match attrs.header(*side, name) {
                Some(v) => Value::Str(Cow::Borrowed(v)),
                None => Value::Error,
            },
            Expr::Not(x) => match x.eval(attrs) {
                Value::Bool(b) => Value::Bool(!b),
                _ => Value::Error,
            },
            Expr::And(a, b) => match (a.eval(attrs), b.eval(attrs)) {
                (Value::Bool(false), _) | (_, Value::Bool(false)) => Value::Bool(false),
                (Value::Bool(true), Value::Bool(true)) => Value::Bool(true),
                _ => Value::Error,
            },
            Expr::Or(a, b) => match (a.eval(attrs), b.eval(attrs)) {
                (Value::Bool(true), _) | (_, Value::Bool(true)) => Value::Bool(true),
                (Value::Bool(false), Value::Bool(false)) => Value::Bool(false),
                _ => Value::Error,
            },
            Expr::Cmp(op, a, b) => compare(*op, &a.eval(attrs), &b.eval(attrs)),
            Expr::InList(x, list) => {
                let v = x.eval(attrs);
                if v == Value::Error {
                    return Value::Error;
                }
                Value::Bool(
                    list.iter()
                        .any(|l| compare(Cmp::Eq, &v, &l.value()) == Value::Bool(true)),
                )
            }
            Expr::Cond(c, a, b) => match c.eval(attrs) {
                Value::Bool(true) => a.eval(attrs),
                Value::Bool(false) => b.eval(attrs),
                _ => Value::Error,
            },
            Expr::Has(x) => Value::Bool(!matches!(x.eval(attrs), Value::Error | Value::Null)),
            Expr::String(x) => match x.eval(attrs) {
                Value::Str(s) => Value::Str(s),
                Value::Int(i) => Value::Str(Cow::Owned(i.to_string())),
                Value::Bool(b) => Value::Str(Cow::Borrowed(if b { "true" } else { "false" })),
                Value::Null | Value::Error => Value::Error,
            },
            Expr::Int(x) => match x.eval(attrs) {
                Value::Int(i) => Value::Int(i),
                Value::Str(s) => s.parse().map_or(Value::Error, Value::Int),
                _ => Value::Error,
            },
            Expr::Call(m, x, arg) => match (x.eval(attrs), arg.eval(attrs)) {
                (Value::Str(s), Value::Str(p)) => Value::Bool(match m {
                    Method::StartsWith => s.starts_with(&*p),
                    Method::EndsWith => s.ends_with(&*p),
                    Method::Contains => s.contains(&*p),
                }),
                _ => Value::Error,
            },
        }
    }

    /// Evaluates a filter: true only when the expression is `true` (an error or another type is false,
    /// as Envoy's CEL filter reads it).
    pub fn matches(&self, attrs: &dyn Attributes) -> bool {
        self.eval(attrs) == Value::Bool(true)
    }

    /// The headers the expression reads, lowercase, for the side given: what a request must keep for
    /// it.
    pub fn headers(&self, side: Side, out: &mut Vec<String>) {
        self.visit(&mut |e| {
            if let Expr::Header(s, name) = e {
                if *s == side && !out.contains(name) {
                    out.push(name.clone());
                }
            }
        });
    }

    /// The attributes the expression reads.
    pub fn attrs(&self, out: &mut Vec<Attr>) {
        self.visit(&mut |e| {
            if let Expr::Attr(a) = e {
                if !out.contains(a) {
                    out.push(*a);
                }
            }
        });
    }

    fn visit(&self, f: &mut dyn FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Lit(_) | Expr::Attr(_) | Expr::Header(..) => {}
            Expr::Not(x) | Expr::Has(x) | Expr::String(x) | Expr::Int(x) | Expr::InList(x, _) => {
                x.visit(f)
            }
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Cmp(_, a, b) | Expr::Call(_, a, b) => {
                a.visit(f);
                b.visit(f);
            }
            Expr::Cond(c, a, b) => {
                c.visit(f);
                a.visit(f);
                b.visit(f);
            }
        }
    }
}

fn compare(op: Cmp, a: &Value<'_>, b: &Value<'_>) -> Value<'static> {
    use std::cmp::Ordering;
    let ord: Ordering = match (a, b) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Str(x), Value::Str(y)) => x.as_ref().cmp(y.as_ref()),
        (Value::Bool(x), Value::Bool(y)) if matches!(op, Cmp::Eq | Cmp::Ne) => x.cmp(y),
        (Value::Null, Value::Null) if matches!(op, Cmp::Eq | Cmp::Ne) => Ordering::Equal,
        (Value::Error, _) | (_, Value::Error) => return Value::Error,
        // CEL: values of different types are never equal; they do not order.
        _ => {
            return match op {
                Cmp::Eq => Value::Bool(false),
                Cmp::Ne => Value::Bool(true),
                _ => Value::Error,
            }
        }
    };
    Value::Bool(match op {
        Cmp::Eq => ord == Ordering::Equal,
        Cmp::Ne => ord != Ordering::Equal,
        Cmp::Lt => ord == Ordering::Less,
        Cmp::Le => ord != Ordering::Greater,
        Cmp::Gt => ord == Ordering::Greater,
        Cmp::Ge => ord != Ordering::Less,
    })
}

#[cfg(test)]
mod tests;
