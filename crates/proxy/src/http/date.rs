//! The `date` field of HTTP/1.1 responses. RFC 9110 (6.6.1) asks a recipient with a clock to add one to a
//! response it forwards without it; Envoy sets one on every response, its own replies included. Weft's
//! HTTP/1.1 server adds one when the response has none (an upstream's own `date` is kept, as caches' age
//! arithmetic needs), the proxy's own replies (404, 503, ...) included; hyper's HTTP/2 server does the same.
//!
//! Formatting a date costs about a microsecond, so each thread keeps the current second's text and formats
//! again only when the second changes; a response then pays one clock read.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// One second's date, formatted.
struct Second {
    second: u64,
    text: String,
}

thread_local! {
    static CURRENT: RefCell<Option<Second>> = const { RefCell::new(None) };
}

/// Calls `f` with the current date as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub(crate) fn with_now<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CURRENT.with_borrow_mut(|current| {
        let fresh = current.as_ref().is_some_and(|c| c.second == second);
        if !fresh {
            *current = Some(Second {
                second,
                text: httpdate::fmt_http_date(now),
            });
        }
        match current {
            Some(c) => f(c.text.as_bytes()),
            None => f(httpdate::fmt_http_date(now).as_bytes()),
        }
    })
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
    }
}
