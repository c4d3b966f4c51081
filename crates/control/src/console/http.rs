//! The console's HTTP client: one GET over plain HTTP/1.1 on a new connection, with a deadline and a
//! bound on the body; for scraping proxies and for asking Prometheus and Zipkin. (A connection per
//! request: a scrape every 15 s per proxy, a few queries per page view.)

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use std::time::Duration;

/// Why a GET failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL is not `http://host:port[/path]`.
    #[error("{url:?} is not an http://host:port URL (https is not supported)")]
    Url {
        /// As given.
        url: String,
    },
    /// No connection.
    #[error("cannot connect to {authority}")]
    Connect {
        /// host:port.
        authority: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The exchange failed.
    #[error("GET http://{authority}{path} failed")]
    Exchange {
        /// host:port.
        authority: String,
        /// Path and query.
        path: String,
        /// Cause.
        #[source]
        source: hyper::Error,
    },
    /// No answer in time.
    #[error("GET http://{authority}{path}: no answer within {timeout:?}")]
    Timeout {
        /// host:port.
        authority: String,
        /// Path and query.
        path: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The body is larger than allowed, or broke off.
    #[error("GET http://{authority}{path}: body larger than {max} bytes or cut off")]
    Body {
        /// host:port.
        authority: String,
        /// Path and query.
        path: String,
        /// The bound.
        max: usize,
    },
    /// A status other than 200.
    #[error("GET http://{authority}{path}: status {status}")]
    Status {
        /// host:port.
        authority: String,
        /// Path and query.
        path: String,
        /// The status.
        status: u16,
    },
}

/// A base URL: `http://host:port` and an optional path prefix (`http://prom:9090/prometheus`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Url {
    /// `host:port`.
    pub authority: String,
    /// Path prefix without a trailing `/` (empty for none).
    pub prefix: String,
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.prefix)
    }
}

impl Url {
    /// Parses `http://host[:port][/prefix]` (port 80 when none).
    pub fn parse(s: &str) -> Result<Url, Error> {
        let bad = || Error::Url { url: s.into() };
        let rest = s.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains(['@', '?', '#', ' ']) {
            return Err(bad());
        }
        // `[v6]` or `host`, then an optional `:port`.
        let host_end = if authority.starts_with('[') {
            authority.find(']').ok_or_else(bad)? + 1
        } else {
            authority.find(':').unwrap_or(authority.len())
        };
        let (host, port) = authority.split_at(host_end);
        let port = match port {
            "" => 80,
            p => p
                .strip_prefix(':')
                .and_then(|p| p.parse::<u16>().ok())
                .ok_or_else(bad)?,
        };
        if host.is_empty() {
            return Err(bad());
        }
        let authority = format!("{host}:{port}");
        Ok(Url {
            authority,
            prefix: prefix.to_string(),
        })
    }

    /// GETs `path_and_query` under the prefix; the status and the body (any status: the caller
    /// judges it).
    pub async fn get(
        &self,
        path_and_query: &str,
        timeout: Duration,
        max_body: usize,
    ) -> Result<(u16, Bytes), Error> {
        get(
            &self.authority,
            &format!("{}{path_and_query}", self.prefix),
            timeout,
            max_body,
        )
        .await
    }
}

/// GETs `http://authority/path`; all of it (connect, answer, body) within `timeout`. Any status is
/// returned with its body.
pub async fn get(
    authority: &str,
    path: &str,
    timeout: Duration,
    max_body: usize,
) -> Result<(u16, Bytes), Error> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|source| Error::Connect {
                authority: authority.into(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let failed = |source| Error::Exchange {
            authority: authority.into(),
            path: path.into(),
            source,
        };
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(failed)?;
        // The connection is driven beside the request and dropped with it.
        let conn = async move {
            let _ = conn.await;
        };
        let request = async {
            let req = http::Request::get(path)
                .header(http::header::HOST, authority)
                .header(http::header::USER_AGENT, "weftd-console")
                .body(Empty::<Bytes>::new())
                .map_err(|_| Error::Body {
                    authority: authority.into(),
                    path: path.into(),
                    max: max_body,
                })?;
            let resp = send.send_request(req).await.map_err(failed)?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), max_body)
                .collect()
                .await
                .map_err(|_| Error::Body {
                    authority: authority.into(),
                    path: path.into(),
                    max: max_body,
                })?
                .to_bytes();
            Ok((status, body))
        };
        tokio::select! {
            r = request => r,
            _ = conn => Err(Error::Body { authority: authority.into(), path: path.into(), max: max_body }),
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout {
            authority: authority.into(),
            path: path.into(),
            timeout,
        }),
    }
}

/// Percent-encodes a query parameter's value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a query parameter (`+` is a space); `None` for a bad escape or bytes that are not UTF-8.
pub fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The decoded `key=value` pairs of a query string (pairs that do not decode are skipped).
pub fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = |s| Url::parse(s).map(|u| (u.authority, u.prefix)).ok();
        let own = |a: &str, p: &str| Some((a.to_string(), p.to_string()));
        assert_eq!(u("http://127.0.0.1:9090"), own("127.0.0.1:9090", ""));
        assert_eq!(
            u("http://prom:9090/prometheus/"),
            own("prom:9090", "/prometheus")
        );
        assert_eq!(u("http://zipkin"), own("zipkin:80", ""));
        assert_eq!(u("http://[::1]:9411"), own("[::1]:9411", ""));
        assert_eq!(u("http://[::1]"), own("[::1]:80", ""));
        for bad in [
            "https://prom:9090",
            "prom:9090",
            "http://",
            "http://a:b",
            "http://u@h:1",
        ] {
            assert_eq!(u(bad), None, "{bad}");
        }
    }

    #[test]
    fn query_encoding_round_trips() {
        let s = "sum by (a,le) (rate(x{b=\"c d\"}[60s])) & 100%+é";
        assert_eq!(decode(&encode(s)).as_deref(), Some(s));
        assert_eq!(
            query_pairs("a=1&b=x+y&c=%2F&bad=%zz&d"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "/".into()),
                ("d".into(), "".into()),
            ]
        );
        assert_eq!(decode("%"), None);
        assert_eq!(decode("%e9"), None, "not UTF-8 on its own");
    }
}
