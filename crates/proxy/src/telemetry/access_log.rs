//! Access logs as Istio configures them (`SPEC.md` §3.4): a listener's HTTP connection manager carries
//! Envoy's file access logger (`envoy.access_loggers.file`) with a path and a format, either a text
//! format string of Envoy's `%OPERATOR%`s (Istio's default when none is given) or JSON (keys to
//! operators; Istio's default keys). weftd sets them from MeshConfig `accessLogFile`,
//! `accessLogEncoding` and `accessLogFormat`.
//!
//! A format is parsed once, when the listener arrives (an unknown operator refuses the listener, naming
//! it); a request is formatted into one line when it ends, and the line is handed to the file's writer
//! thread through a bounded queue: a full queue drops the line and counts it, a request never waits on
//! the disk.
//!
//! A logger may carry Envoy's CEL extension filter (`envoy.access_loggers.extension_filters.cel`), which
//! the Telemetry API's `accessLogging[].filter.expression` becomes: parsed once with the listener
//! ([`weft_cel`]), evaluated when the request ends ([`AccessLog::admits`]); only lines for which it is
//! `true` are written (an expression that errs, a missing header say, is false, as Envoy's).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::SystemTime;

/// Istio's default text format (its `EnvoyTextLogFormat`), operators in Istio's order.
pub const ISTIO_TEXT_FORMAT: &str = concat!(
    "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" ",
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% ",
    "\"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ",
    "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" ",
    "\"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% ",
    "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% ",
    "%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n",
);

/// Istio's default JSON keys and the operator of each.
pub use weft_xds::ISTIO_JSON_ACCESS_LOG as ISTIO_JSON_FORMAT;

/// Lines waiting for a file's writer at most; more are dropped and counted.
pub const QUEUE: usize = 4096;

/// A request header or response header an operator reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// `:method`.
    Method,
    /// `:path` (with its query).
    Path,
    /// `:authority` (or `Host`).
    Authority,
    /// `x-envoy-original-path` (none: Weft does not rewrite yet).
    OriginalPath,
    /// Another request header, lower-case.
    Request(http::HeaderName),
    /// A response header, lower-case.
    Response(http::HeaderName),
}

/// One piece of a format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// Text as it is.
    Literal(String),
    /// `%START_TIME%`.
    StartTime,
    /// `%REQ(A?B):N%` / `%RESP(A):N%`: the first of the fields present, cut to `N` characters.
    Header(Vec<Field>, Option<usize>),
    /// `%PROTOCOL%`.
    Protocol,
    /// `%RESPONSE_CODE%`.
    ResponseCode,
    /// `%RESPONSE_FLAGS%`.
    ResponseFlags,
    /// `%BYTES_RECEIVED%`.
    BytesReceived,
    /// `%BYTES_SENT%`.
    BytesSent,
    /// `%DURATION%`.
    Duration,
    /// `%UPSTREAM_HOST%`.
    UpstreamHost,
    /// `%UPSTREAM_CLUSTER%`, `%UPSTREAM_CLUSTER_RAW%`.
    UpstreamCluster,
    /// `%ROUTE_NAME%`.
    RouteName,
    /// Operators Weft knows and has no value for yet (TLS, connection details, addresses it does not
    /// track): `-`, as Envoy prints a missing value.
    Unknown,
}

/// A parsed format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// A line of text.
    Text(Vec<Token>),
    /// One JSON object per line: keys and their tokens.
    Json(Vec<(String, Vec<Token>)>),
}

impl Format {
    /// Istio's default text format.
    pub fn istio_text() -> Format {
        // The constant parses.
        Format::Text(parse(ISTIO_TEXT_FORMAT).unwrap_or_default())
    }

    /// Istio's default JSON keys.
    pub fn istio_json() -> Format {
        Format::Json(
            ISTIO_JSON_FORMAT
                .iter()
                .map(|(k, f)| (k.to_string(), parse(f).unwrap_or_default()))
                .collect(),
        )
    }
}

/// Parses an Envoy format string; an unknown operator or an unclosed `%` is an error naming it.
pub fn parse(format: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut rest = format;
    while let Some(start) = rest.find('%') {
        if start > 0 {
            out.push(Token::Literal(rest[..start].to_string()));
        }
        let after = &rest[start + 1..];
        let Some(end) = after.find('%') else {
            return Err(format!("an unclosed % at {:?}", &rest[start..]));
        };
        let op = &after[..end];
        out.push(if op.is_empty() {
            Token::Literal("%".into())
        } else {
            operator(op)?
        });
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        out.push(Token::Literal(rest.to_string()));
    }
    Ok(out)
}

fn operator(op: &str) -> Result<Token, String> {
    let (name, max) = match op.rsplit_once("):") {
        Some((head, n)) => (
            format!("{head})"),
            Some(
                n.parse()
                    .map_err(|_| format!("%{op}%: {n:?} is not a length"))?,
            ),
        ),
        None => (op.to_string(), None),
    };
    if let Some(inner) = name.strip_prefix("REQ(").and_then(|s| s.strip_suffix(')')) {
        let fields = inner
            .split('?')
            .map(|h| request_field(h).ok_or_else(|| format!("%{op}%: {h:?} is not a header name")))
            .collect::<Result<_, _>>()?;
        return Ok(Token::Header(fields, max));
    }
    if let Some(inner) = name.strip_prefix("RESP(").and_then(|s| s.strip_suffix(')')) {
        let fields = inner
            .split('?')
            .map(|h| {
                http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                    .map(Field::Response)
                    .map_err(|_| format!("%{op}%: {h:?} is not a header name"))
            })
            .collect::<Result<_, _>>()?;
        return Ok(Token::Header(fields, max));
    }
    Ok(match name.as_str() {
        "START_TIME" => Token::StartTime,
        "PROTOCOL" => Token::Protocol,
        "RESPONSE_CODE" => Token::ResponseCode,
        "RESPONSE_FLAGS" => Token::ResponseFlags,
        "BYTES_RECEIVED" => Token::BytesReceived,
        "BYTES_SENT" => Token::BytesSent,
        "DURATION" => Token::Duration,
        "UPSTREAM_HOST" => Token::UpstreamHost,
        "UPSTREAM_CLUSTER" | "UPSTREAM_CLUSTER_RAW" => Token::UpstreamCluster,
        "ROUTE_NAME" => Token::RouteName,
        "RESPONSE_CODE_DETAILS"
        | "CONNECTION_TERMINATION_DETAILS"
        | "UPSTREAM_TRANSPORT_FAILURE_REASON"
        | "UPSTREAM_LOCAL_ADDRESS"
        | "DOWNSTREAM_LOCAL_ADDRESS"
        | "DOWNSTREAM_REMOTE_ADDRESS"
        | "DOWNSTREAM_PEER_ADDRESS"
        | "REQUESTED_SERVER_NAME"
        | "UPSTREAM_SERVICE_TIME" => Token::Unknown,
        _ => return Err(format!("%{op}% is not an operator Weft knows")),
    })
}

fn request_field(h: &str) -> Option<Field> {
    Some(match h.to_ascii_lowercase().as_str() {
        ":method" => Field::Method,
        ":path" => Field::Path,
        ":authority" | "host" => Field::Authority,
        "x-envoy-original-path" => Field::OriginalPath,
        other => Field::Request(http::HeaderName::from_bytes(other.as_bytes()).ok()?),
    })
}

/// What a line is made of: copied from the request when it arrives (only on listeners that log).
#[derive(Debug, Default)]
pub struct Request {
    /// When it arrived.
    pub start: Option<SystemTime>,
    /// `:method`.
    pub method: String,
    /// `:path`.
    pub path: String,
    /// `:authority`.
    pub authority: String,
    /// `HTTP/1.1`, `HTTP/2`.
    pub protocol: &'static str,
    /// The request headers the format reads.
    pub headers: http::HeaderMap,
    /// Upstream cluster, endpoint and route, once known.
    pub cluster: Option<String>,
    /// The endpoint of the last try.
    pub upstream: Option<SocketAddr>,
    /// The route's name.
    pub route: Option<String>,
    /// The response headers the format reads.
    pub response_headers: http::HeaderMap,
}

/// What the end of a request adds.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    /// Status, 0 when none.
    pub code: u16,
    /// Envoy's flags.
    pub flags: &'a str,
    /// Body bytes from the client.
    pub received: u64,
    /// Body bytes to the client.
    pub sent: u64,
    /// Milliseconds from start to end.
    pub duration_ms: u64,
}

impl Format {
    /// The request headers this format reads (copied when a request arrives).
    pub fn request_headers(&self) -> Vec<http::HeaderName> {
        let mut out = Vec::new();
        let tokens: Vec<&Token> = match self {
            Format::Text(t) => t.iter().collect(),
            Format::Json(kv) => kv.iter().flat_map(|(_, t)| t.iter()).collect(),
        };
        for t in tokens {
            if let Token::Header(fields, _) = t {
                for f in fields {
                    if let Field::Request(h) = f {
                        if !out.contains(h) {
                            out.push(h.clone());
                        }
                    }
                }
            }
        }
        out
    }

    /// One line, ending in a newline.
    pub fn line(&self, r: &Request, o: &Outcome<'_>) -> String {
        let mut out = String::with_capacity(256);
        match self {
            Format::Text(tokens) => {
                for t in tokens {
                    value(&mut out, t, r, o, false);
                }
                if !out.ends_with('\n') {
                    out.push('\n');
                }
            }
            Format::Json(kv) => {
                let mut map = serde_json::Map::new();
                for (k, tokens) in kv {
                    let mut v = String::new();
                    for t in tokens {
                        value(&mut v, t, r, o, true);
                    }
                    // Numbers as numbers, a missing value as null, as Envoy's JSON logger writes them.
                    let json = match (tokens.as_slice(), v.as_str()) {
                        (_, "") => serde_json::Value::Null,
                        (
                            [Token::ResponseCode
                            | Token::BytesReceived
                            | Token::BytesSent
                            | Token::Duration],
                            n,
                        ) => n
                            .parse::<u64>()
                            .map(Into::into)
                            .unwrap_or(serde_json::Value::String(v.clone())),
                        _ => serde_json::Value::String(v),
                    };
                    map.insert(k.clone(), json);
                }
                out = serde_json::Value::Object(map).to_string();
                out.push('\n');
            }
        }
        out
    }
}

/// Writes one token's value; `-` (text) or nothing (JSON) for a missing one.
fn value(out: &mut String, t: &Token, r: &Request, o: &Outcome<'_>, json: bool) {
    let missing = if json { "" } else { "-" };
    let _ = match t {
        Token::Literal(s) => {
            out.push_str(s);
            Ok(())
        }
        Token::StartTime => match r.start {
            Some(t) => {
                out.push_str(&httpdate_iso(t));
                Ok(())
            }
            None => out.write_str(missing),
        },
        Token::Header(fields, max) => {
            let found = fields.iter().find_map(|f| match f {
                Field::Method => Some(r.method.as_str()).filter(|s| !s.is_empty()),
                Field::Path => Some(r.path.as_str()).filter(|s| !s.is_empty()),
                Field::Authority => Some(r.authority.as_str()).filter(|s| !s.is_empty()),
                Field::OriginalPath => None,
                Field::Request(h) => r.headers.get(h).and_then(|v| v.to_str().ok()),
                Field::Response(h) => r.response_headers.get(h).and_then(|v| v.to_str().ok()),
            });
            match found {
                Some(v) => {
                    let v = match max {
                        Some(n) => v.char_indices().nth(*n).map_or(v, |(i, _)| &v[..i]),
                        None => v,
                    };
                    out.write_str(v)
                }
                None => out.write_str(missing),
            }
        }
        Token::Protocol => out.write_str(r.protocol),
        Token::ResponseCode => write!(out, "{}", o.code),
        Token::ResponseFlags => out.write_str(o.flags),
        Token::BytesReceived => write!(out, "{}", o.received),
        Token::BytesSent => write!(out, "{}", o.sent),
        Token::Duration => write!(out, "{}", o.duration_ms),
        Token::UpstreamHost => match r.upstream {
            Some(a) => write!(out, "{a}"),
            None => out.write_str(missing),
        },
        Token::UpstreamCluster => out.write_str(r.cluster.as_deref().unwrap_or(missing)),
        Token::RouteName => out.write_str(
            r.route
                .as_deref()
                .filter(|s| !s.is_empty())
                .unwrap_or(missing),
        ),
        Token::Unknown => out.write_str(missing),
    };
}

/// `2026-12-07T04:20:00.123Z`, as Envoy's `%START_TIME%` prints by default.
fn httpdate_iso(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// A listener's access log: where and how.
#[derive(Debug)]
pub struct AccessLog {
    /// The file (`/dev/stdout` is standard output).
    pub path: String,
    /// The format.
    pub format: Format,
    /// The request headers the format and the filter read (copied when a request arrives).
    pub headers: Vec<http::HeaderName>,
    /// Only requests for which this is true are logged.
    pub filter: Option<weft_cel::Expr>,
}

impl AccessLog {
    /// An access log to `path` in `format`.
    pub fn new(path: String, format: Format) -> AccessLog {
        let headers = format.request_headers();
        AccessLog {
            path,
            format,
            headers,
            filter: None,
        }
    }

    /// The same, logging only requests for which `filter` is true; an error (a header name that is
    /// not one) names the filter's text.
    pub fn with_filter(mut self, filter: weft_cel::Expr, src: &str) -> Result<AccessLog, String> {
        let what = format!("filter {src:?}");
        let (names, request) = crate::telemetry::overrides::headers_read(&[(&filter, what)])?;
        for h in names.into_iter().take(request) {
            if !self.headers.contains(&h) {
                self.headers.push(h);
            }
        }
        self.filter = Some(filter);
        Ok(self)
    }

    /// Whether the request `r`, ended with `code`, `flags` and (gRPC) `grpc_status`, is logged: always
    /// without a filter, else when the filter is true.
    pub fn admits(
        &self,
        r: &Request,
        code: u16,
        flags: crate::error::Flags,
        grpc_status: Option<u8>,
    ) -> bool {
        use crate::telemetry::overrides::{Facts, Request as Attrs};
        let Some(filter) = &self.filter else {
            return true;
        };
        let header = |side: weft_cel::Side, name: &str| {
            let map = match side {
                weft_cel::Side::Request => &r.headers,
                weft_cel::Side::Response => &r.response_headers,
            };
            map.get(name).and_then(|v| v.to_str().ok())
        };
        let facts = Facts {
            request: Attrs {
                method: Some(&r.method),
                path: Some(&r.path),
                host: Some(&r.authority),
                scheme: "http",
                protocol: r.protocol,
                code,
                flags,
                grpc_status,
                cluster: r.cluster.as_deref(),
                upstream: r.upstream,
                source: None,
                destination: None,
            },
            header,
        };
        filter.matches(&facts)
    }

    /// Hands a line to the file's writer; drops it (counted) when the writer is behind.
    pub fn write(&self, line: String) {
        if writer(&self.path).try_send(line).is_err() {
            DROPPED.fetch_add(1, Relaxed);
        }
    }
}

/// Lines dropped because a writer's queue was full, or its file could not be opened.
pub static DROPPED: AtomicU64 = AtomicU64::new(0);

/// The writer of each file: a thread of its own, fed by a bounded queue. Made when a path is first
/// logged to; a path is written by one thread however many listeners name it.
fn writer(path: &str) -> mpsc::SyncSender<String> {
    static WRITERS: OnceLock<Mutex<HashMap<String, mpsc::SyncSender<String>>>> = OnceLock::new();
    let map = WRITERS.get_or_init(Default::default);
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(tx) = map.get(path) {
        return tx.clone();
    }
    let (tx, rx) = mpsc::sync_channel::<String>(QUEUE);
    let file = path.to_string();
    let spawned = std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || write_lines(&file, rx));
    if let Err(e) = spawned {
        tracing::warn!(path, error = %e, "cannot start the access log writer");
    }
    map.insert(path.to_string(), tx.clone());
    tx
}

fn write_lines(path: &str, rx: mpsc::Receiver<String>) {
    let mut out: Box<dyn std::io::Write> = if path == "/dev/stdout" {
        Box::new(std::io::stdout())
    } else {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(f) => Box::new(std::io::BufWriter::new(f)),
            Err(e) => {
                tracing::warn!(path, error = %e, "cannot open the access log; its lines are dropped");
                for _ in rx {
                    DROPPED.fetch_add(1, Relaxed);
                }
                return;
            }
        }
    };
    while let Ok(line) = rx.recv() {
        let _ = out.write_all(line.as_bytes());
        // Whatever else is queued goes in the same write; then the lines reach the file.
        while let Ok(more) = rx.try_recv() {
            let _ = out.write_all(more.as_bytes());
        }
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        let mut headers = http::HeaderMap::new();
        headers.insert("user-agent", http::HeaderValue::from_static("curl/8"));
        headers.insert("x-request-id", http::HeaderValue::from_static("id-1"));
        let mut response_headers = http::HeaderMap::new();
        response_headers.insert(
            "x-envoy-upstream-service-time",
            http::HeaderValue::from_static("3"),
        );
        Request {
            start: Some(
                SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_796_617_200_123),
            ),
            method: "GET".into(),
            path: "/reviews/0".into(),
            authority: "reviews:9080".into(),
            protocol: "HTTP/1.1",
            headers,
            cluster: Some("outbound|9080|v2|reviews.default.svc.cluster.local".into()),
            upstream: Some("127.0.1.13:9080".parse().expect("addr")),
            route: None,
            response_headers,
        }
    }

    const OUTCOME: Outcome<'static> = Outcome {
        code: 200,
        flags: "-",
        received: 0,
        sent: 295,
        duration_ms: 4,
    };

    #[test]
    fn istios_text_line() {
        let line = Format::istio_text().line(&request(), &OUTCOME);
        assert_eq!(
            line,
            "[2026-12-07T04:20:00.123Z] \"GET /reviews/0 HTTP/1.1\" 200 - - - \"-\" 0 295 4 3 \"-\" \
             \"curl/8\" \"id-1\" \"reviews:9080\" \"127.0.1.13:9080\" \
             outbound|9080|v2|reviews.default.svc.cluster.local - - - - -\n"
        );
    }

    #[test]
    fn istios_json_line() {
        let line = Format::istio_json().line(&request(), &OUTCOME);
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/reviews/0");
        assert_eq!(v["response_code"], 200);
        assert_eq!(v["bytes_sent"], 295);
        assert_eq!(v["upstream_service_time"], "3");
        assert_eq!(v["request_id"], "id-1");
        assert_eq!(v["upstream_host"], "127.0.1.13:9080");
        assert_eq!(v["x_forwarded_for"], serde_json::Value::Null);
        assert_eq!(v.as_object().map(|o| o.len()), Some(24));
        assert!(line.ends_with("}\n"));
    }

    #[test]
    fn custom_formats_and_their_errors() {
        let f = Format::Text(
            parse("%REQ(:METHOD)% %REQ(USER-AGENT):4% 100%% %RESP(X-NONE)%").expect("parses"),
        );
        assert_eq!(f.line(&request(), &OUTCOME), "GET curl 100% -\n");
        assert_eq!(
            f.request_headers(),
            vec![http::HeaderName::from_static("user-agent")]
        );
        for (bad, why) in [
            (
                "%NOT_AN_OPERATOR%",
                "%NOT_AN_OPERATOR% is not an operator Weft knows",
            ),
            ("%START_TIME", "an unclosed % at \"%START_TIME\""),
            ("%REQ(A B)%", "%REQ(A B)%: \"A B\" is not a header name"),
            ("%REQ(X):many%", "%REQ(X):many%: \"many\" is not a length"),
        ] {
            assert_eq!(parse(bad), Err(why.to_string()), "{bad}");
        }
    }

    #[test]
    fn a_cel_filter_logs_only_what_it_admits() {
        use crate::error::Flags;
        let filter = |src: &str| {
            AccessLog::new("/dev/null".into(), Format::istio_text())
                .with_filter(weft_cel::parse(src).expect("parses"), src)
                .expect("valid")
        };
        let failures = filter("response.code >= 400");
        let r = request();
        assert!(!failures.admits(&r, 200, Flags::default(), None));
        assert!(failures.admits(&r, 404, Flags::default(), None));
        assert!(failures.admits(&r, 503, Flags::UF, None));
        // No filter: everything.
        let all = AccessLog::new("/dev/null".into(), Format::istio_text());
        assert!(all.admits(&r, 200, Flags::default(), None));
        // The filter's headers are copied with the request; one that is missing makes it false.
        let debug = filter("request.headers['x-debug'] == '1' || response.flags != 0");
        assert_eq!(
            debug.headers.last().map(|h| h.as_str()),
            Some("x-debug"),
            "read with the format's headers"
        );
        assert!(!debug.admits(&r, 200, Flags::default(), None));
        assert!(debug.admits(&r, 200, Flags::DC, None));
        let mut with = request();
        with.headers
            .insert("x-debug", http::HeaderValue::from_static("1"));
        assert!(debug.admits(&with, 200, Flags::default(), None));
        // Response headers, the upstream and the route's cluster are there too.
        let rest = filter(
            "response.headers['x-envoy-upstream-service-time'] == '3' && \
             xds.cluster_name.endsWith('reviews.default.svc.cluster.local') && \
             upstream.port == 9080 && request.method in ['GET', 'HEAD']",
        );
        assert!(rest.admits(&r, 200, Flags::default(), None));
        // gRPC status: known only for gRPC.
        let grpc = filter("response.grpc_status == 14");
        assert!(grpc.admits(&r, 200, Flags::default(), Some(14)));
        assert!(!grpc.admits(&r, 200, Flags::default(), None));
    }

    #[test]
    fn lines_reach_their_file() {
        let dir = std::env::temp_dir().join(format!("weft-access-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("access.log");
        let log = AccessLog::new(path.display().to_string(), Format::istio_text());
        log.write("one\n".into());
        log.write("two\n".into());
        let mut text = String::new();
        for _ in 0..200 {
            text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.lines().count() == 2 {
                break;
            }
            std::thread::yield_now();
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(text, "one\ntwo\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
