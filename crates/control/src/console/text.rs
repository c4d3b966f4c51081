//! A parser of Prometheus's text exposition format (0.0.4) and of OpenMetrics text, the two shapes a
//! proxy's `/stats/prometheus` may take: one sample per line, `name{label="value",…} value
//! [timestamp]`, with `#` lines (`HELP`, `TYPE`, `EOF`) skipped.
//!
//! The input comes from the network: every malformed line is an [`Error`] naming the line and what was
//! wrong, never a panic, and the work is linear in the input (no backtracking). Only the samples whose
//! metric name the caller wants are parsed past their name, so a proxy's other metrics cost a scan.

/// One sample: the metric's name (with its `_total`, `_bucket`, … suffix), its labels in the order
/// written, and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    /// Metric name.
    pub name: &'a str,
    /// Label pairs, unescaped.
    pub labels: Vec<(&'a str, String)>,
    /// Value (`+Inf`, `-Inf` and `NaN` included).
    pub value: f64,
}

impl Sample<'_> {
    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A malformed line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct Error {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub reason: &'static str,
}

/// Parses every sample of `text`.
pub fn parse(text: &str) -> Result<Vec<Sample<'_>>, Error> {
    parse_wanted(text, |_| true)
}

/// Parses the samples whose metric name `wanted` accepts; other sample lines are skipped once their
/// name is read.
pub fn parse_wanted<'a>(
    text: &'a str,
    wanted: impl Fn(&str) -> bool,
) -> Result<Vec<Sample<'a>>, Error> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason| Error {
            line: i + 1,
            reason,
        };
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(line.len());
        let name = &line[..name_end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(err("a sample line must start with a metric name"));
        }
        if !wanted(name) {
            continue;
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            rest = parse_labels(r, &mut labels).map_err(err)?;
        }
        let mut fields = rest.split_ascii_whitespace();
        let value = fields.next().ok_or_else(|| err("missing value"))?;
        let value = parse_value(value).ok_or_else(|| err("value is not a number"))?;
        // An optional timestamp; anything after it (an OpenMetrics exemplar) is not used.
        if let Some(ts) = fields.next() {
            if ts != "#" && ts.parse::<f64>().is_err() {
                return Err(err("timestamp is not a number"));
            }
        }
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    Ok(out)
}

/// Parses `k="v",…}` (the text after `{`) into `labels`; returns what follows the `}`.
fn parse_labels<'a>(
    mut s: &'a str,
    labels: &mut Vec<(&'a str, String)>,
) -> Result<&'a str, &'static str> {
    loop {
        s = s.trim_start();
        if let Some(r) = s.strip_prefix('}') {
            return Ok(r);
        }
        let key_end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or("unterminated label set")?;
        let key = &s[..key_end];
        if key.is_empty() {
            return Err("expected a label name");
        }
        s = s[key_end..].trim_start();
        s = s.strip_prefix('=').ok_or("expected = after a label name")?;
        s = s.trim_start();
        s = s.strip_prefix('"').ok_or("a label value must be quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value"),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    _ => return Err("bad escape in a label value"),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((key, value));
        s = s[end + 1..].trim_start();
        if let Some(r) = s.strip_prefix(',') {
            s = r;
        } else if !s.starts_with('}') {
            return Err("expected , or } after a label value");
        }
    }
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a weft-proxy serves (prometheus-client's OpenMetrics text), cut to one series.
    const PROXY: &str = r#"# HELP istio_requests Requests served.
# TYPE istio_requests counter
istio_requests_total{reporter="source",source_workload="productpage-v1",destination_service="reviews.default.svc.cluster.local",response_code="200",response_flags="-"} 7
# HELP istio_request_duration_milliseconds Time from a request's start to its response's end, in milliseconds.
# TYPE istio_request_duration_milliseconds histogram
istio_request_duration_milliseconds_sum{reporter="source"} 12.5
istio_request_duration_milliseconds_count{reporter="source"} 7
istio_request_duration_milliseconds_bucket{le="0.5",reporter="source"} 0
istio_request_duration_milliseconds_bucket{reporter="source",le="+Inf"} 7
# EOF
"#;

    #[test]
    fn reads_a_proxys_metrics() {
        let s = parse(PROXY).expect("parses");
        assert_eq!(s.len(), 5);
        assert_eq!(s[0].name, "istio_requests_total");
        assert_eq!(s[0].label("source_workload"), Some("productpage-v1"));
        assert_eq!(s[0].label("response_flags"), Some("-"));
        assert_eq!(s[0].value, 7.0);
        assert_eq!(s[1].value, 12.5);
        assert_eq!(s[3].label("le"), Some("0.5"));
        assert_eq!(s[4].label("le"), Some("+Inf"));
    }

    #[test]
    fn reads_the_classic_format_escapes_timestamps_and_special_values() {
        let text = "up 1\n\
                    a{x=\"q\\\"uote\\\\ and\\nline\",} 2.5e3 1700000000000\n\
                    b{ y = \"1\" , z=\"\" } +Inf\n\
                    c NaN\n\
                    d -Inf # {trace_id=\"1\"} 1\n";
        let s = parse(text).expect("parses");
        assert_eq!(s[0].labels, vec![]);
        assert_eq!(s[1].label("x"), Some("q\"uote\\ and\nline"));
        assert_eq!(s[1].value, 2500.0);
        assert_eq!(s[2].label("y"), Some("1"));
        assert_eq!(s[2].label("z"), Some(""));
        assert!(s[2].value.is_infinite());
        assert!(s[3].value.is_nan());
        assert_eq!(s[4].value, f64::NEG_INFINITY);
    }

    #[test]
    fn skips_unwanted_names_without_reading_them() {
        let text = "other{this is not even valid\nistio_requests_total 3\n";
        let s = parse_wanted(text, |n| n.starts_with("istio_")).expect("parses");
        assert_eq!(s.len(), 1);
        assert!(parse(text).is_err());
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_line() {
        let cases = [
            ("{a=\"1\"} 1", "a sample line must start with a metric name"),
            ("9lives 1", "a sample line must start with a metric name"),
            ("m", "missing value"),
            ("m{}", "missing value"),
            ("m one", "value is not a number"),
            ("m 1 soon", "timestamp is not a number"),
            ("m{a=1} 1", "a label value must be quoted"),
            ("m{a:\"1\"} 1", "expected = after a label name"),
            ("m{a=\"1} 1", "unterminated label value"),
            ("m{a=\"\\x\"} 1", "bad escape in a label value"),
            (
                "m{a=\"1\" b=\"2\"} 1",
                "expected , or } after a label value",
            ),
            ("m{a=\"1\",", "unterminated label set"),
            ("m{,} 1", "expected a label name"),
            ("m{a=\"\\", "bad escape in a label value"),
            ("m{é=\"1\"} 1", "expected a label name"),
        ];
        for (text, reason) in cases {
            let input = format!("ok 1\n{text}\n");
            assert_eq!(
                parse(&input),
                Err(Error { line: 2, reason }),
                "input {text:?}"
            );
        }
    }

    /// Every prefix of a valid exposition, and every single-byte corruption of it, parses or is an
    /// error: never a panic (a cheap stand-in for the fuzz target, run on every test run).
    #[test]
    fn never_panics_on_truncated_or_corrupted_input() {
        let bytes = PROXY.as_bytes();
        for cut in 0..bytes.len() {
            if let Ok(s) = std::str::from_utf8(&bytes[..cut]) {
                let _ = parse(s);
            }
        }
        for i in 0..bytes.len() {
            for b in [b'{', b'}', b'"', b'\\', b',', b'=', b' ', b'\n', b'#', 0xc3] {
                let mut v = bytes.to_vec();
                v[i] = b;
                let s = String::from_utf8_lossy(&v);
                let _ = parse(&s);
            }
        }
    }
}
