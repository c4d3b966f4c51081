//! Text → [`Expr`]: a tokenizer, a recursive-descent parser over CEL's precedence (`?:` below `||`
//! below `&&` below relations below unary below member access), and a lowering step that resolves
//! attribute paths and refuses what the subset leaves out, with the offset of the offending part.

use crate::{Attr, Cmp, Error, Expr, Lit, Method, Side, MAX_DEPTH, MAX_LEN};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Punct(&'static str),
}

fn err<T>(at: usize, message: impl Into<String>) -> Result<T, Error> {
    Err(Error {
        at,
        message: message.into(),
    })
}

const PUNCTS: [&str; 19] = [
    "&&", "||", "==", "!=", "<=", ">=", "<", ">", "!", "(", ")", "[", "]", ".", ",", "?", ":", "-",
    "+",
];

fn tokenize(src: &str) -> Result<Vec<(usize, Tok)>, Error> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push((start, Tok::Ident(src[start..i].to_string())));
        } else if c.is_ascii_digit() {
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let Ok(n) = src[start..i].parse::<i64>() else {
                return err(start, "integer out of range");
            };
            if i < b.len() && (b[i] == b'.' || b[i] == b'e' || b[i] == b'E') {
                return err(start, "doubles are not supported");
            }
            if i < b.len() && (b[i] == b'u' || b[i] == b'U') {
                i += 1;
            }
            out.push((start, Tok::Int(n)));
        } else if c == b'\'' || c == b'"' {
            i += 1;
            let mut s = String::new();
            loop {
                let Some(&d) = b.get(i) else {
                    return err(start, "unterminated string");
                };
                if d == c {
                    i += 1;
                    break;
                }
                if d == b'\\' {
                    let e = match b.get(i + 1) {
                        Some(b'\\') => '\\',
                        Some(b'\'') => '\'',
                        Some(b'"') => '"',
                        Some(b'n') => '\n',
                        Some(b't') => '\t',
                        Some(b'r') => '\r',
                        _ => return err(i, "unsupported escape in string"),
                    };
                    s.push(e);
                    i += 2;
                    continue;
                }
                if d == b'\n' {
                    return err(start, "unterminated string");
                }
                // A whole UTF-8 character: the source is a `str`, so a boundary follows.
                let len = src[i..].chars().next().map_or(1, char::len_utf8);
                s.push_str(&src[i..i + len]);
                i += len;
            }
            out.push((start, Tok::Str(s)));
        } else {
            let Some(p) = PUNCTS.iter().find(|p| src[i..].starts_with(**p)) else {
                let ch = src[i..].chars().next().unwrap_or('?');
                return err(i, format!("unexpected character {ch:?}"));
            };
            i += p.len();
            out.push((start, Tok::Punct(p)));
        }
    }
    Ok(out)
}

/// The parse tree before attribute paths are resolved.
#[derive(Debug)]
struct Node {
    at: usize,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Lit(Lit),
    Ident(String),
    Select(Box<Node>, String),
    Index(Box<Node>, Box<Node>),
    Call(Option<Box<Node>>, String, Vec<Node>),
    List(Vec<Node>),
    Not(Box<Node>),
    Neg(Box<Node>),
    Bin(&'static str, Box<Node>, Box<Node>),
    Cond(Box<Node>, Box<Node>, Box<Node>),
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    end: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }

    fn at(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |(a, _)| *a)
    }

    fn eat(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Punct(q)) if *q == p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, p: &str) -> Result<(), Error> {
        if self.eat(p) {
            Ok(())
        } else {
            err(self.at(), format!("expected {p:?}"))
        }
    }

    fn enter(&mut self) -> Result<(), Error> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err(self.at(), format!("nested deeper than {MAX_DEPTH} levels"));
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Node, Error> {
        self.enter()?;
        let at = self.at();
        let c = self.or()?;
        let n = if self.eat("?") {
            let a = self.expr()?;
            self.expect(":")?;
            let b = self.expr()?;
            Node {
                at,
                kind: Kind::Cond(Box::new(c), Box::new(a), Box::new(b)),
            }
        } else {
            c
        };
        self.depth -= 1;
        Ok(n)
    }

    fn binary(
        &mut self,
        ops: &[&'static str],
        next: fn(&mut Parser) -> Result<Node, Error>,
        chain: bool,
    ) -> Result<Node, Error> {
        let mut left = next(self)?;
        // Each operator in a chain nests the tree one level deeper (left to right), so it counts
        // against the depth until the chain ends.
        let entered = self.depth;
        loop {
            let at = self.at();
            let op = match self.peek() {
                Some(Tok::Punct(p)) if ops.contains(p) => *p,
                Some(Tok::Ident(i)) if i == "in" && ops.contains(&"in") => "in",
                _ => {
                    self.depth = entered;
                    return Ok(left);
                }
            };
            self.pos += 1;
            self.enter()?;
            let right = next(self)?;
            left = Node {
                at,
                kind: Kind::Bin(op, Box::new(left), Box::new(right)),
            };
            if !chain {
                if let Some(Tok::Punct(p)) = self.peek() {
                    if ops.contains(p) {
                        return err(self.at(), "chained comparisons need parentheses");
                    }
                }
                self.depth = entered;
                return Ok(left);
            }
        }
    }

    fn or(&mut self) -> Result<Node, Error> {
        self.binary(&["||"], Parser::and, true)
    }

    fn and(&mut self) -> Result<Node, Error> {
        self.binary(&["&&"], Parser::rel, true)
    }

    fn rel(&mut self) -> Result<Node, Error> {
        self.binary(
            &["==", "!=", "<", "<=", ">", ">=", "in"],
            Parser::unary,
            false,
        )
    }

    fn unary(&mut self) -> Result<Node, Error> {
        let at = self.at();
        if self.eat("!") {
            self.enter()?;
            let x = self.unary()?;
            self.depth -= 1;
            return Ok(Node {
                at,
                kind: Kind::Not(Box::new(x)),
            });
        }
        if self.eat("-") {
            self.enter()?;
            let x = self.unary()?;
            self.depth -= 1;
            return Ok(Node {
                at,
                kind: Kind::Neg(Box::new(x)),
            });
        }
        self.member()
    }

    fn member(&mut self) -> Result<Node, Error> {
        let mut n = self.primary()?;
        loop {
            let at = self.at();
            if self.eat(".") {
                let Some(Tok::Ident(name)) = self.peek().cloned() else {
                    return err(self.at(), "expected a field name after '.'");
                };
                self.pos += 1;
                if self.eat("(") {
                    let args = self.args(")")?;
                    n = Node {
                        at,
                        kind: Kind::Call(Some(Box::new(n)), name, args),
                    };
                } else {
                    n = Node {
                        at,
                        kind: Kind::Select(Box::new(n), name),
                    };
                }
            } else if self.eat("[") {
                self.enter()?;
                let key = self.expr()?;
                self.depth -= 1;
                self.expect("]")?;
                n = Node {
                    at,
                    kind: Kind::Index(Box::new(n), Box::new(key)),
                };
            } else {
                return Ok(n);
            }
        }
    }

    fn args(&mut self, close: &str) -> Result<Vec<Node>, Error> {
        self.enter()?;
        let mut out = Vec::new();
        if !self.eat(close) {
            loop {
                out.push(self.expr()?);
                if self.eat(close) {
                    break;
                }
                self.expect(",")?;
            }
        }
        self.depth -= 1;
        Ok(out)
    }

    fn primary(&mut self) -> Result<Node, Error> {
        let at = self.at();
        let Some(t) = self.peek().cloned() else {
            return err(at, "unexpected end of expression");
        };
        self.pos += 1;
        let kind = match t {
            Tok::Int(i) => Kind::Lit(Lit::Int(i)),
            Tok::Str(s) => Kind::Lit(Lit::Str(s)),
            Tok::Ident(i) => match i.as_str() {
                "true" => Kind::Lit(Lit::Bool(true)),
                "false" => Kind::Lit(Lit::Bool(false)),
                "null" => Kind::Lit(Lit::Null),
                _ if self.eat("(") => Kind::Call(None, i, self.args(")")?),
                _ => Kind::Ident(i),
            },
            Tok::Punct("(") => {
                self.enter()?;
                let e = self.expr()?;
                self.depth -= 1;
                self.expect(")")?;
                return Ok(e);
            }
            Tok::Punct("[") => Kind::List(self.args("]")?),
            Tok::Punct(p) => return err(at, format!("unexpected {p:?}")),
        };
        Ok(Node { at, kind })
    }
}

/// The dotted path of an identifier and its selections (`request.headers`), if the node is one.
fn path(n: &Node) -> Option<String> {
    match &n.kind {
        Kind::Ident(i) => Some(i.clone()),
        Kind::Select(base, f) => Some(format!("{}.{f}", path(base)?)),
        _ => None,
    }
}

/// Where a path starts (a selection's own offset is its dot).
fn root_at(n: &Node) -> usize {
    match &n.kind {
        Kind::Select(base, _) => root_at(base),
        _ => n.at,
    }
}

fn headers_side(path: &str) -> Option<Side> {
    match path {
        "request.headers" => Some(Side::Request),
        "response.headers" => Some(Side::Response),
        _ => None,
    }
}

fn attr_list() -> String {
    let mut names: Vec<&str> = Attr::ALL.iter().map(|(n, _)| *n).collect();
    names.push("request.headers['name']");
    names.push("response.headers['name']");
    names.join(", ")
}

fn lower(n: Node) -> Result<Expr, Error> {
    let at = n.at;
    let b = |n: Node| lower(n).map(Box::new);
    Ok(match n.kind {
        Kind::Lit(l) => Expr::Lit(l),
        Kind::Ident(_) | Kind::Select(..) => {
            let p = path(&n).unwrap_or_default();
            let at = root_at(&n);
            if let Some((_, a)) = Attr::ALL.iter().find(|(name, _)| *name == p) {
                return Ok(Expr::Attr(*a));
            }
            if let Some((base, name)) = p.rsplit_once('.') {
                if let Some(side) = headers_side(base) {
                    return Ok(Expr::Header(side, name.to_ascii_lowercase()));
                }
            }
            if headers_side(&p).is_some() {
                return err(
                    at,
                    format!("{p} is a map: index it ({p}['name']) or test a name with `in`"),
                );
            }
            return err(
                at,
                format!("unknown attribute {p:?} (weft supports {})", attr_list()),
            );
        }
        Kind::Index(base, key) => {
            let side = path(&base).as_deref().and_then(headers_side);
            let Some(side) = side else {
                return err(
                    root_at(&base),
                    "only request.headers and response.headers can be indexed",
                );
            };
            let key_at = root_at(&key);
            let Kind::Lit(Lit::Str(name)) = key.kind else {
                return err(key_at, "a header name must be a string literal");
            };
            Expr::Header(side, name.to_ascii_lowercase())
        }
        Kind::List(_) => return err(at, "a list is only supported on the right of `in`"),
        Kind::Not(x) => Expr::Not(b(*x)?),
        Kind::Neg(x) => match x.kind {
            Kind::Lit(Lit::Int(i)) => Expr::Lit(Lit::Int(-i)),
            _ => return err(at, "unary minus is only supported on an integer literal"),
        },
        Kind::Cond(c, x, y) => Expr::Cond(b(*c)?, b(*x)?, b(*y)?),
        Kind::Bin(op, l, r) => match op {
            "&&" => Expr::And(b(*l)?, b(*r)?),
            "||" => Expr::Or(b(*l)?, b(*r)?),
            "in" => {
                if let Some(side) = path(&r).as_deref().and_then(headers_side) {
                    // A name in a header map is that header's presence: `has`, with the name known
                    // when parsed (so a request keeps only the headers expressions read).
                    let Kind::Lit(Lit::Str(name)) = l.kind else {
                        return err(
                            root_at(&l),
                            "only a string literal can be tested with `in` against headers",
                        );
                    };
                    Expr::Has(Box::new(Expr::Header(side, name.to_ascii_lowercase())))
                } else if let Kind::List(items) = r.kind {
                    let r_at = r.at;
                    let mut lits = Vec::new();
                    for i in items {
                        match lower(i)? {
                            Expr::Lit(l) => lits.push(l),
                            _ => return err(r_at, "list items must be literals"),
                        }
                    }
                    Expr::InList(b(*l)?, lits)
                } else {
                    return err(
                        root_at(&r),
                        "`in` needs a list literal or request.headers / response.headers",
                    );
                }
            }
            _ => {
                let c = match op {
                    "==" => Cmp::Eq,
                    "!=" => Cmp::Ne,
                    "<" => Cmp::Lt,
                    "<=" => Cmp::Le,
                    ">" => Cmp::Gt,
                    _ => Cmp::Ge,
                };
                Expr::Cmp(c, b(*l)?, b(*r)?)
            }
        },
        Kind::Call(None, f, mut args) => {
            let one = |args: &mut Vec<Node>| -> Result<Node, Error> {
                match (args.pop(), args.is_empty()) {
                    (Some(a), true) => Ok(a),
                    _ => err(at, format!("{f}() takes one argument")),
                }
            };
            match f.as_str() {
                "has" => {
                    let x = lower(one(&mut args)?)?;
                    if !matches!(x, Expr::Attr(_) | Expr::Header(..)) {
                        return err(at, "has() takes an attribute or a header");
                    }
                    Expr::Has(Box::new(x))
                }
                "string" => Expr::String(b(one(&mut args)?)?),
                "int" | "uint" => Expr::Int(b(one(&mut args)?)?),
                _ => {
                    return err(
                        at,
                        format!(
                        "function {f}() is not supported (weft supports has, string, int, and the methods startsWith, endsWith, contains)"
                    ),
                    )
                }
            }
        }
        Kind::Call(Some(recv), m, mut args) => {
            let method = match m.as_str() {
                "startsWith" => Method::StartsWith,
                "endsWith" => Method::EndsWith,
                "contains" => Method::Contains,
                _ => {
                    return err(
                        at,
                        format!("method {m}() is not supported (weft supports startsWith, endsWith, contains)"),
                    )
                }
            };
            let (Some(arg), true) = (args.pop(), args.is_empty()) else {
                return err(at, format!("{m}() takes one argument"));
            };
            Expr::Call(method, b(*recv)?, b(arg)?)
        }
    })
}

/// Parses an expression of the subset; the error names the offset and the reason.
pub fn parse(src: &str) -> Result<Expr, Error> {
    if src.len() > MAX_LEN {
        return err(MAX_LEN, format!("longer than {MAX_LEN} bytes"));
    }
    let toks = tokenize(src)?;
    if let Some((at, Tok::Punct("+"))) = toks.iter().find(|(_, t)| *t == Tok::Punct("+")) {
        return err(*at, "arithmetic is not supported");
    }
    if toks.is_empty() {
        return err(0, "empty expression");
    }
    let mut p = Parser {
        toks,
        pos: 0,
        end: src.len(),
        depth: 0,
    };
    let tree = p.expr()?;
    if p.pos < p.toks.len() {
        return err(p.at(), "unexpected text after the expression");
    }
    lower(tree)
}
