//! The `date` field of HTTP/1.1 responses. RFC 9110 (6.6.1) asks a recipient with a clock to add one to a
//! response it forwards without it; Envoy sets one on every response, its own replies included. Weft's
//! HTTP/1.1 server adds one when the response has none (an upstream's own `date` is kept, as caches' age
//! arithmetic needs), the proxy's own replies (404, 503, ...) included; its HTTP/2 server (`h2`) does the
//! same, as hyper's did before it.
//!
//! Formatting a date costs about a microsecond, so each thread keeps the current second's text and formats
//! again only when the second changes; a response then pays one clock read. HTTP/2 responses (Weft's own
//! server, `h2`) take the same second as a shared header value.

use http::HeaderValue;
use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// One second's date, formatted.
struct Second {
    second: u64,
    text: String,
    /// `text` as a header value (its clones share the bytes).
    value: HeaderValue,
}

thread_local! {
    static CURRENT: RefCell<Option<Second>> = const { RefCell::new(None) };
}

/// Calls `f` with the current date as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub(crate) fn with_now<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    with_second(|s| f(s.text.as_bytes()))
}

/// The current date as a header value.
pub(crate) fn header_value() -> HeaderValue {
    with_second(|s| s.value.clone())
}

fn with_second<R>(f: impl FnOnce(&Second) -> R) -> R {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CURRENT.with_borrow_mut(|current| match current {
        Some(c) if c.second == second => f(c),
        _ => f(current.insert(Second::format(second, now))),
    })
}

impl Second {
    fn format(second: u64, now: SystemTime) -> Second {
        let text = httpdate::fmt_http_date(now);
        let value = HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(text.as_bytes()))
            .unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"));
        Second {
            second,
            text,
            value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_imf_fixdates_of_now() {
        let before = SystemTime::now();
        let text = with_now(|v| String::from_utf8(v.to_vec()).expect("ascii"));
        let after = SystemTime::now();
        assert_eq!(text.len(), 29, "{text}");
        let parsed = httpdate::parse_http_date(&text).expect("an HTTP date");
        // Whole seconds: the value's second is that of a clock read between `before` and `after`.
        let floor = |t: SystemTime| t.duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
        assert!(
            floor(before) <= floor(parsed) && floor(parsed) <= floor(after),
            "{text}"
        );
        let value = header_value();
        let parsed = httpdate::parse_http_date(value.to_str().expect("ascii")).expect("a date");
        assert!(floor(before) <= floor(parsed), "{value:?}");
    }
}
