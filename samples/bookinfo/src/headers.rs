//! Headers a Bookinfo service copies from the request it received onto the calls it makes.
//!
//! Tracing only joins spans into one trace when the application forwards the trace context; the mesh cannot do it
//! for the app. `end-user`, `cookie` and `authorization` travel too so routing rules and policies deeper in the call
//! graph see who the user is.

use http::header::HeaderName;
use http::HeaderMap;

/// Names of the headers forwarded downstream, lower case.
pub const PROPAGATED: &[&str] = &[
    "x-request-id",
    "traceparent",
    "tracestate",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "x-ot-span-context",
    "end-user",
    "user-agent",
    "cookie",
    "authorization",
];

/// Header carrying the logged-in user, matched by Bookinfo's routing rules.
pub const END_USER: &str = "end-user";

/// The subset of `incoming` to send on a downstream call (every value of each propagated header).
pub fn propagate(incoming: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in PROPAGATED {
        let name = HeaderName::from_static(name);
        for value in incoming.get_all(&name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn keeps_only_listed_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc"));
        h.insert("B3", HeaderValue::from_static("1-2-1"));
        h.append("cookie", HeaderValue::from_static("a=1"));
        h.append("cookie", HeaderValue::from_static("b=2"));
        h.insert("x-secret", HeaderValue::from_static("no"));
        h.insert("host", HeaderValue::from_static("productpage:9080"));
        let out = propagate(&h);
        assert_eq!(out.len(), 4);
        assert_eq!(out["x-request-id"], "abc");
        assert_eq!(out["b3"], "1-2-1");
        assert_eq!(out.get_all("cookie").iter().count(), 2);
        assert!(out.get("x-secret").is_none() && out.get("host").is_none());
    }
}
