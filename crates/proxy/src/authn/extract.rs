//! Where a request carries its tokens, as Envoy's `jwt_authn` extractor reads them: headers (with a
//! value prefix such as `Bearer `), query parameters and cookies, each place remembering which
//! issuers' providers named it; and taking a verified token off the request.

use http::header::{HeaderName, COOKIE};
use http::request::Parts;
use std::borrow::Cow;

/// Where a token may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A header, its value after `prefix` (anywhere in the value, as Envoy finds it); no prefix: the
    /// whole value.
    Header {
        /// The header.
        name: HeaderName,
        /// `value_prefix`.
        prefix: String,
    },
    /// A query parameter (its first value, percent-decoded).
    Param(String),
    /// A cookie.
    Cookie(String),
}

/// A place and the issuers whose providers named it: a token found there must come from one of
/// them (`None`: some provider with no issuer named it, so any issuer).
#[derive(Debug, Clone)]
pub struct Location {
    /// The place.
    pub place: Place,
    /// The issuers allowed there.
    pub issuers: Option<Vec<String>>,
}

impl Location {
    /// Whether a token with issuer `iss` may come from here.
    pub fn allows(&self, iss: &str) -> bool {
        self.issuers
            .as_ref()
            .is_none_or(|v| v.iter().any(|i| i == iss))
    }
}

/// The default places when a provider names none: `Authorization: Bearer <token>`, then the
/// `access_token` query parameter.
pub fn default_places() -> [Place; 2] {
    [
        Place::Header {
            name: http::header::AUTHORIZATION,
            prefix: "Bearer ".into(),
        },
        Place::Param("access_token".into()),
    ]
}

/// Adds `place` for `issuer` (empty: any) to `locations`, merging with the same place named before.
pub fn add(locations: &mut Vec<Location>, place: Place, issuer: &str) {
    let l = match locations.iter_mut().position(|l| l.place == place) {
        Some(i) => &mut locations[i],
        None => {
            locations.push(Location {
                place,
                issuers: Some(Vec::new()),
            });
            let last = locations.len() - 1;
            &mut locations[last]
        }
    };
    match (&mut l.issuers, issuer) {
        (issuers, "") => *issuers = None,
        (Some(v), i) if !v.iter().any(|x| x == i) => v.push(i.to_string()),
        _ => {}
    }
}

/// A token found in a request, and where.
#[derive(Debug)]
pub struct Found {
    /// The token's text.
    pub token: String,
    /// Index of its location.
    pub at: usize,
}

/// The characters a JWT is made of (base64url and the dots).
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

/// Every token at `locations` in the request, headers first, then parameters, then cookies (Envoy's
/// order), appended to `out`.
pub fn extract(locations: &[Location], parts: &Parts, out: &mut Vec<Found>) {
    for (at, l) in locations.iter().enumerate() {
        let Place::Header { name, prefix } = &l.place else {
            continue;
        };
        for v in parts.headers.get_all(name) {
            let Ok(v) = v.to_str() else { continue };
            let token = if prefix.is_empty() {
                v
            } else {
                let Some(i) = v.find(prefix.as_str()) else {
                    continue;
                };
                // From the first character a token can start with (Envoy's extractJWT); none at
                // all: the whole value, which then fails to parse.
                let after = &v[i + prefix.len()..];
                match after.bytes().position(is_token_char) {
                    Some(j) => &after[j..],
                    None => v,
                }
            };
            out.push(Found {
                token: token.to_string(),
                at,
            });
        }
    }
    let query = parts.uri.query();
    for (at, l) in locations.iter().enumerate() {
        let Place::Param(p) = &l.place else { continue };
        if let Some(v) = query.and_then(|q| param(q, p)) {
            out.push(Found {
                token: v.into_owned(),
                at,
            });
        }
    }
    for (at, l) in locations.iter().enumerate() {
        let Place::Cookie(c) = &l.place else { continue };
        if let Some(v) = cookie(parts, c) {
            out.push(Found {
                token: v.to_string(),
                at,
            });
        }
    }
}

/// The first value of query parameter `name`, percent-decoded.
fn param<'q>(query: &'q str, name: &str) -> Option<Cow<'q, str>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k)? == name).then(|| percent_decode(v))?
    })
}

/// Percent-decoding (no `+` rule, as Envoy decodes query parameters); `None` when the result is not
/// UTF-8.
fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('%') {
        return Some(Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied(), b.get(i + 2).copied()) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                let v = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(v as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// Cookie `name`'s value (quotes removed), from the first `Cookie` field that has it.
fn cookie<'p>(parts: &'p Parts, name: &str) -> Option<&'p str> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then(|| {
                v.strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v)
            })
        })
}

/// Takes a verified token off the request, as Envoy does when the provider does not `forward` it: the
/// whole header, or the parameter from the query. A cookie stays (Envoy leaves it too).
pub fn remove(place: &Place, parts: &mut Parts) {
    match place {
        Place::Header { name, .. } => {
            parts.headers.remove(name);
        }
        Place::Param(p) => {
            let Some(q) = parts.uri.query() else { return };
            let kept: Vec<&str> = q
                .split('&')
                .filter(|pair| {
                    let k = pair.split_once('=').map_or(*pair, |(k, _)| k);
                    percent_decode(k).is_none_or(|k| k != p.as_str())
                })
                .collect();
            let mut pq = parts.uri.path().to_string();
            if !kept.is_empty() {
                pq.push('?');
                pq.push_str(&kept.join("&"));
            }
            let mut uri = parts.uri.clone().into_parts();
            // A subset of a valid query: it parses; if it did not, the URI is left as it was.
            if let Ok(pq) = http::uri::PathAndQuery::try_from(pq) {
                uri.path_and_query = Some(pq);
                if let Ok(u) = http::Uri::from_parts(uri) {
                    parts.uri = u;
                }
            }
        }
        Place::Cookie(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request").into_parts().0
    }

    fn defaults(issuer: &str) -> Vec<Location> {
        let mut l = Vec::new();
        for p in default_places() {
            add(&mut l, p, issuer);
        }
        l
    }

    /// Tokens and their location's index.
    type Tokens = Vec<(String, usize)>;

    fn found(locations: &[Location], p: &Parts) -> Tokens {
        let mut out = Vec::new();
        extract(locations, p, &mut out);
        out.into_iter().map(|f| (f.token, f.at)).collect()
    }

    #[test]
    fn default_places_are_bearer_then_access_token() {
        let l = defaults("iss");
        let t = |s: &str| s.to_string();
        let cases: Vec<(&str, Parts, Tokens)> = vec![
            (
                "bearer",
                parts("/", &[("authorization", "Bearer a.b.c")]),
                vec![(t("a.b.c"), 0)],
            ),
            (
                "prefix found inside the value, spaces skipped",
                parts("/", &[("authorization", "x Bearer   a.b.c")]),
                vec![(t("a.b.c"), 0)],
            ),
            (
                "another scheme",
                parts("/", &[("authorization", "Basic dXNlcjpwdw==")]),
                vec![],
            ),
            (
                "prefix case matters",
                parts("/", &[("authorization", "bearer a.b.c")]),
                vec![],
            ),
            (
                "query parameter, decoded",
                parts("/p?x=1&access_token=a.b%2Ec&access_token=second", &[]),
                vec![(t("a.b.c"), 1)],
            ),
            (
                "both",
                parts(
                    "/p?access_token=q.q.q",
                    &[("authorization", "Bearer h.h.h")],
                ),
                vec![(t("h.h.h"), 0), (t("q.q.q"), 1)],
            ),
            (
                "two authorization fields",
                parts(
                    "/",
                    &[
                        ("authorization", "Bearer a.a.a"),
                        ("authorization", "Bearer b.b.b"),
                    ],
                ),
                vec![(t("a.a.a"), 0), (t("b.b.b"), 0)],
            ),
            ("none", parts("/p?x=access_token", &[]), vec![]),
        ];
        for (name, p, want) in cases {
            assert_eq!(found(&l, &p), want, "{name}");
        }
    }

    #[test]
    fn named_places_and_their_issuers() {
        let mut l = Vec::new();
        add(
            &mut l,
            Place::Header {
                name: HeaderName::from_static("x-jwt"),
                prefix: String::new(),
            },
            "a",
        );
        add(&mut l, Place::Cookie("session".into()), "a");
        add(&mut l, Place::Param("t".into()), "b");
        add(
            &mut l,
            Place::Header {
                name: HeaderName::from_static("x-jwt"),
                prefix: String::new(),
            },
            "b",
        );
        assert_eq!(l.len(), 3, "the same header merges");
        assert!(l[0].allows("a") && l[0].allows("b") && !l[0].allows("c"));
        assert!(l[1].allows("a") && !l[1].allows("b"));
        add(&mut l, Place::Cookie("session".into()), "");
        assert!(l[1].allows("anyone"), "a provider without issuer opens it");
        let p = parts(
            "/?t=p.p.p",
            &[
                ("x-jwt", "h.h.h"),
                ("cookie", "a=1; session=\"c.c.c\"; b=2"),
            ],
        );
        assert_eq!(
            found(&l, &p),
            vec![
                ("h.h.h".to_string(), 0),
                ("p.p.p".to_string(), 2),
                ("c.c.c".to_string(), 1)
            ]
        );
    }

    #[test]
    fn removing_a_token_takes_the_header_or_the_parameter() {
        let mut p = parts(
            "http://h/p?a=1&access_token=t.t.t&b=2",
            &[("authorization", "Bearer x"), ("x-other", "1")],
        );
        for place in default_places() {
            remove(&place, &mut p);
        }
        assert_eq!(p.uri.to_string(), "http://h/p?a=1&b=2");
        assert!(!p.headers.contains_key("authorization"));
        assert!(p.headers.contains_key("x-other"));
        let mut p = parts("/p?access_token=t.t.t", &[]);
        remove(&Place::Param("access_token".into()), &mut p);
        assert_eq!(p.uri.to_string(), "/p");
        // A cookie stays, as in Envoy.
        let mut p = parts("/", &[("cookie", "s=t.t.t")]);
        remove(&Place::Cookie("s".into()), &mut p);
        assert!(p.headers.contains_key("cookie"));
    }
}
