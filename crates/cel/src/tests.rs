use super::*;

/// A request as the tests see it.
struct Req {
    code: i64,
    method: &'static str,
    host: &'static str,
    headers: Vec<(&'static str, &'static str)>,
}

impl Attributes for Req {
    fn attr(&self, a: Attr) -> Value<'_> {
        match a {
            Attr::ResponseCode => Value::Int(self.code),
            Attr::RequestMethod => Value::Str(Cow::Borrowed(self.method)),
            Attr::RequestHost => Value::Str(Cow::Borrowed(self.host)),
            Attr::RequestPath => Value::Str(Cow::Borrowed("/api/v1?x=1")),
            Attr::ConnectionMtls => Value::Bool(false),
            _ => Value::Error,
        }
    }

    fn header(&self, side: Side, name: &str) -> Option<&str> {
        (side == Side::Request)
            .then(|| {
                self.headers
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| *v)
            })
            .flatten()
    }
}

fn req() -> Req {
    Req {
        code: 503,
        method: "GET",
        host: "reviews:9080",
        headers: vec![("x-user", "jason"), ("x-n", "42")],
    }
}

#[test]
fn evaluates_what_istios_docs_write() {
    let cases: &[(&str, Value<'_>)] = &[
        ("response.code >= 400", Value::Bool(true)),
        (
            "response.code >= 400 && response.code < 500",
            Value::Bool(false),
        ),
        (
            "response.code == 503 || request.method == 'POST'",
            Value::Bool(true),
        ),
        ("!(request.method == 'GET')", Value::Bool(false)),
        ("request.headers['x-user']", Value::Str("jason".into())),
        ("request.headers['X-User'] == 'jason'", Value::Bool(true)),
        ("request.headers.x_missing", Value::Error),
        ("has(request.headers['x-user'])", Value::Bool(true)),
        ("has(request.headers['x-missing'])", Value::Bool(false)),
        ("'x-user' in request.headers", Value::Bool(true)),
        ("request.method in ['GET', 'HEAD']", Value::Bool(true)),
        ("request.method in ['POST']", Value::Bool(false)),
        ("string(response.code)", Value::Str("503".into())),
        ("int(request.headers['x-n']) > 40", Value::Bool(true)),
        ("request.host", Value::Str("reviews:9080".into())),
        ("request.path.startsWith('/api')", Value::Bool(true)),
        (
            "request.host.contains('view') ? 'r' : 'o'",
            Value::Str("r".into()),
        ),
        ("connection.mtls", Value::Bool(false)),
        ("response.code == 'x'", Value::Bool(false)),
        // An error on one side of && and || gives way to a deciding value on the other.
        ("request.headers['nope'] == 'a' || true", Value::Bool(true)),
        (
            "request.headers['nope'] == 'a' && false",
            Value::Bool(false),
        ),
        ("request.headers['nope'] == 'a' && true", Value::Error),
        ("upstream.address", Value::Error),
        ("-1 < 0", Value::Bool(true)),
        ("\"a\\'b\" == 'a\\'b'", Value::Bool(true)),
    ];
    let r = req();
    for (src, want) in cases {
        let e = parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        assert_eq!(&e.eval(&r), want, "{src}");
    }
    assert!(parse("response.code >= 400").expect("ok").matches(&r));
    assert!(!parse("request.headers['nope'] == 'a'")
        .expect("ok")
        .matches(&r));
}

#[test]
fn refuses_what_the_subset_leaves_out() {
    let cases: &[(&str, &str)] = &[
        ("", "at offset 0: empty expression"),
        (
            "request.foo",
            "at offset 0: unknown attribute \"request.foo\"",
        ),
        (
            "response.code + 1",
            "at offset 14: arithmetic is not supported",
        ),
        (
            "size(request.path)",
            "at offset 0: function size() is not supported",
        ),
        (
            "request.path.matches('a')",
            "at offset 12: method matches() is not supported",
        ),
        (
            "1.5 > response.code",
            "at offset 0: doubles are not supported",
        ),
        ("request.headers", "at offset 0: request.headers is a map"),
        (
            "request.headers[request.host]",
            "at offset 16: a header name must be a string literal",
        ),
        (
            "request.method in request.host",
            "at offset 18: `in` needs a list literal",
        ),
        ("'abc", "at offset 0: unterminated string"),
        (
            "response.code >= ",
            "at offset 17: unexpected end of expression",
        ),
        (
            "1 < 2 < 3",
            "at offset 6: chained comparisons need parentheses",
        ),
        (
            "request.host )",
            "at offset 13: unexpected text after the expression",
        ),
        (
            "['a'] == 'a'",
            "at offset 0: a list is only supported on the right of `in`",
        ),
        (
            "has(1)",
            "at offset 0: has() takes an attribute or a header",
        ),
        ("request.host @ 1", "at offset 13: unexpected character '@'"),
        (
            "request.host in request.headers",
            "at offset 0: only a string literal can be tested with `in` against headers",
        ),
        ("{'a': 1}", "at offset 0: unexpected character '{'"),
    ];
    for (src, want) in cases {
        let e = parse(src).expect_err(src).to_string();
        assert!(e.starts_with(want), "{src}: got {e:?}, want {want:?}");
    }
}

#[test]
fn deep_or_long_input_is_refused_not_overflowed() {
    let deep = format!("{}true{}", "(".repeat(200), ")".repeat(200));
    assert!(parse(&deep)
        .expect_err("deep")
        .message
        .contains("nested deeper"));
    let chain = vec!["true"; 500].join(" || ");
    assert!(parse(&chain)
        .expect_err("chain")
        .message
        .contains("nested deeper"));
    let nots = format!("{}true", "!".repeat(500));
    assert!(parse(&nots).is_err());
    let long = format!("'{}'", "a".repeat(MAX_LEN));
    assert!(parse(&long)
        .expect_err("long")
        .message
        .contains("longer than"));
    // Within the bounds: a chain of 20 alternatives is fine.
    let ok = vec!["response.code == 1"; 20].join(" || ");
    assert!(parse(&ok).is_ok());
}

#[test]
fn lists_what_a_request_must_keep() {
    let e = parse("request.headers['x-a'] == 'b' && has(request.headers.x_b) && response.code > 1")
        .expect("ok");
    let mut h = Vec::new();
    e.headers(Side::Request, &mut h);
    assert_eq!(h, ["x-a", "x_b"]);
    let mut a = Vec::new();
    e.attrs(&mut a);
    assert_eq!(a, [Attr::ResponseCode]);
    let mut h = Vec::new();
    parse("'X-A' in request.headers")
        .expect("ok")
        .headers(Side::Request, &mut h);
    assert_eq!(h, ["x-a"]);
    assert!(parse("request.host in request.headers").is_err());
}
