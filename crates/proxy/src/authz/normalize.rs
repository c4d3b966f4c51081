//! Request path normalization, as Envoy's HTTP connection manager applies it before any filter or route
//! sees a request, and as Istio configures it through `meshConfig.pathNormalization` (SPEC.md §2.4):
//!
//! | Istio | connection manager fields | here |
//! |---|---|---|
//! | `NONE` | `normalize_path: false` | nothing |
//! | `BASE` (default) | `normalize_path: true` | [`PathNormalization::BASE`] |
//! | `MERGE_SLASHES` | and `merge_slashes: true` | and `merge_slashes` |
//! | `DECODE_AND_MERGE_SLASHES` | and `path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD` | and [`EscapedSlashes::Unescape`] |
//!
//! In Envoy's order: escaped slashes first (`%2F` and `%5C`, either case), then the RFC 3986 pass
//! (Envoy's copy of Chromium's path canonicalizer: `%XX` of an unreserved character decoded once, `%00`
//! or a NUL refused, `\` made `/`, `.` and `..` segments resolved (also spelled `%2e`), and bytes a path
//! may not carry percent-encoded), then merging slashes. The query is kept as it is. A path is forwarded
//! as normalized, so the application reads what the policy judged.
//!
//! The common path is already normal: one pass over its bytes says so and nothing is allocated.

use std::borrow::Cow;
use weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager, HttpConnectionManager,
};

/// What a listener does with `%2F`, `%2f`, `%5C` and `%5c` in a path (Envoy's
/// `path_with_escaped_slashes_action`; its default is to keep them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// Kept as they are (`KEEP_UNCHANGED`, and Envoy's `IMPLEMENTATION_SPECIFIC_DEFAULT`).
    #[default]
    Keep,
    /// A request with one is answered 400 (`REJECT_REQUEST`).
    Reject,
    /// Decoded to `/` and `\` before the rest (`UNESCAPE_AND_FORWARD`).
    Unescape,
}

/// How a listener normalizes request paths: its connection manager's settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathNormalization {
    /// RFC 3986 normalization (`normalize_path`).
    pub normalize: bool,
    /// `//` becomes `/` (`merge_slashes`).
    pub merge_slashes: bool,
    /// Escaped slashes (`path_with_escaped_slashes_action`).
    pub escaped_slashes: EscapedSlashes,
}

impl PathNormalization {
    /// Istio's default, `BASE`: RFC 3986 normalization only.
    pub const BASE: PathNormalization = PathNormalization {
        normalize: true,
        merge_slashes: false,
        escaped_slashes: EscapedSlashes::Keep,
    };

    /// A connection manager's settings. Unset `normalize_path` is off, as in Envoy (whose runtime
    /// default is false; Istio sets it). What Weft does not do is refused, naming the field.
    pub fn from_hcm(hcm: &HttpConnectionManager) -> Result<PathNormalization, String> {
        use http_connection_manager::PathWithEscapedSlashesAction as A;
        if hcm.path_normalization_options.is_some() {
            return Err("path_normalization_options is not supported".into());
        }
        let action = hcm.path_with_escaped_slashes_action;
        let escaped_slashes = match A::try_from(action) {
            Ok(A::ImplementationSpecificDefault | A::KeepUnchanged) => EscapedSlashes::Keep,
            Ok(A::RejectRequest) => EscapedSlashes::Reject,
            Ok(A::UnescapeAndForward) => EscapedSlashes::Unescape,
            Ok(A::UnescapeAndRedirect) => {
                return Err(
                    "path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT is not supported"
                        .into(),
                )
            }
            Err(_) => {
                return Err(format!(
                    "path_with_escaped_slashes_action: {action} is not an action"
                ))
            }
        };
        Ok(PathNormalization {
            normalize: hcm.normalize_path.as_ref().is_some_and(|b| b.value),
            merge_slashes: hcm.merge_slashes,
            escaped_slashes,
        })
    }

    /// Whether these settings change nothing (Istio's `NONE`, or a connection manager that says
    /// nothing): then no request pays for a pass over its path.
    pub fn is_none(&self) -> bool {
        *self == PathNormalization::default()
    }
}

/// Why a path was refused (the request is answered 400, as Envoy does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// `%00` or a NUL byte in the path.
    #[error("the path has an encoded NUL (%00)")]
    Nul,
    /// A `#` in the path (Envoy refuses a fragment in a request target).
    #[error("the path has a fragment (#)")]
    Fragment,
    /// An escaped slash on a listener that refuses them.
    #[error("the path has an escaped slash (%2F or %5C)")]
    EscapedSlash,
    /// The normalized path is not a request target `http` takes (not seen: normalization only removes
    /// and escapes).
    #[error("the normalized path is not a valid request target")]
    Uri,
}

/// A byte that a path does not carry as it is: percent-encoded on the way out.
const ESCAPE: u8 = 1;
/// A NUL: the request is refused.
const INVALID: u8 = 2;
/// An unreserved character (RFC 3986 §2.3): its `%XX` is decoded.
const UNRESERVED: u8 = 4;

/// The class of each byte, after Chromium's path table (which Envoy copies): what goes out as it is,
/// what is escaped, and which escapes are decoded.
static CLASS: [u8; 256] = {
    let mut t = [ESCAPE; 256];
    t[0] = INVALID;
    let mut b = 0x21;
    while b < 0x7f {
        t[b] = 0;
        b += 1;
    }
    // Printable, but not in a canonical path.
    let escaped = b"\"#<>?\\^`{|}";
    let mut i = 0;
    while i < escaped.len() {
        t[escaped[i] as usize] = ESCAPE;
        i += 1;
    }
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_' || c == b'~' {
            t[b] = UNRESERVED;
        }
        b += 1;
    }
    t
};

/// Bytes the fast check stops at.
const DOT: u8 = 1;
const SLASH: u8 = 2;
const PERCENT: u8 = 4;
/// `\`, `#`, NUL and every byte that is escaped.
const OTHER: u8 = 8;
/// `?`: the path ends.
const QUERY: u8 = 16;

static ATTENTION: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        if CLASS[b] & (ESCAPE | INVALID) != 0 {
            t[b] = OTHER;
        }
        b += 1;
    }
    t[b'.' as usize] = DOT;
    t[b'/' as usize] = SLASH;
    t[b'%' as usize] = PERCENT;
    t[b'?' as usize] = QUERY;
    t
};

/// Normalizes a request's path (the `:path`, query included) as a listener with `opts` does. Borrowed
/// when the path is already normal, the common case: nothing is allocated then. A path that does not
/// start with `/` (`*`) is left as it is.
pub fn normalize_path(
    path_and_query: &str,
    opts: PathNormalization,
) -> Result<Cow<'_, str>, Rejected> {
    if opts.is_none() || !path_and_query.starts_with('/') {
        return Ok(Cow::Borrowed(path_and_query));
    }
    // One pass up to the query; `str::find` with a `char` took about 150 instructions by itself.
    let path_len = match scan(path_and_query.as_bytes(), opts) {
        Scan::Normal => return Ok(Cow::Borrowed(path_and_query)),
        Scan::Work => path_and_query
            .bytes()
            .position(|b| b == b'?')
            .unwrap_or(path_and_query.len()),
    };
    let (path, query) = path_and_query.split_at(path_len);
    if path.contains('#') {
        return Err(Rejected::Fragment);
    }
    let mut current = Cow::Borrowed(path.as_bytes());
    if opts.escaped_slashes != EscapedSlashes::Keep {
        if let Some(unescaped) = unescape_slashes(&current) {
            if opts.escaped_slashes == EscapedSlashes::Reject {
                return Err(Rejected::EscapedSlash);
            }
            current = Cow::Owned(unescaped);
        }
    }
    if opts.normalize {
        current = Cow::Owned(canonicalize(&current)?);
    }
    if opts.merge_slashes {
        if let Some(merged) = merge_slashes(&current) {
            current = Cow::Owned(merged);
        }
    }
    if *current == *path.as_bytes() {
        return Ok(Cow::Borrowed(path_and_query));
    }
    let mut out = current.into_owned();
    out.extend_from_slice(query.as_bytes());
    // Every step replaces ASCII with ASCII at ASCII boundaries: still UTF-8.
    Ok(Cow::Owned(String::from_utf8(out).unwrap_or_else(|e| {
        String::from_utf8_lossy(e.as_bytes()).into_owned()
    })))
}

/// What the fast check found.
enum Scan {
    /// The path is unchanged by the settings.
    Normal,
    /// A byte may need work.
    Work,
}

/// Whether the path of `path_and_query` is unchanged by `opts`: one pass up to the query, stopping at
/// the first byte that may need work.
fn scan(path_and_query: &[u8], opts: PathNormalization) -> Scan {
    let mut prev = 0u8;
    for &b in path_and_query {
        let a = ATTENTION[usize::from(b)];
        if a != 0 {
            let stop = match a {
                QUERY => return Scan::Normal,
                DOT => opts.normalize && prev == b'/',
                SLASH => opts.merge_slashes && prev == b'/',
                PERCENT => opts.normalize || opts.escaped_slashes != EscapedSlashes::Keep,
                // `#` is refused whatever the settings; the rest only by the RFC 3986 pass.
                _ => opts.normalize || b == b'#',
            };
            if stop {
                return Scan::Work;
            }
        }
        prev = b;
    }
    Scan::Normal
}

/// The value of the hex digit `b`.
fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The byte `%XX` at `at` stands for, when `p[at]` starts a valid escape.
fn escaped_at(p: &[u8], at: usize) -> Option<u8> {
    if p.get(at) != Some(&b'%') {
        return None;
    }
    let hi = hex(*p.get(at + 1)?)?;
    let lo = hex(*p.get(at + 2)?)?;
    Some(hi << 4 | lo)
}

/// `%2F` and `%5C` (either case) decoded, or `None` when there are none.
fn unescape_slashes(p: &[u8]) -> Option<Vec<u8>> {
    let is_slash = |at: usize| matches!(escaped_at(p, at), Some(b'/' | b'\\'));
    let first = (0..p.len()).find(|&i| is_slash(i))?;
    let mut out = Vec::with_capacity(p.len());
    out.extend_from_slice(&p[..first]);
    let mut i = first;
    while i < p.len() {
        if is_slash(i) {
            out.push(if p[i + 2] == b'f' || p[i + 2] == b'F' {
                b'/'
            } else {
                b'\\'
            });
            i += 3;
        } else {
            out.push(p[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Consecutive slashes made one, or `None` when there are none.
fn merge_slashes(p: &[u8]) -> Option<Vec<u8>> {
    let first = p.windows(2).position(|w| w == b"//")?;
    let mut out = Vec::with_capacity(p.len());
    out.extend_from_slice(&p[..=first]);
    for &b in &p[first + 1..] {
        if !(b == b'/' && out.last() == Some(&b'/')) {
            out.push(b);
        }
    }
    Some(out)
}

/// How many bytes spell a dot at `at`: `.` is 1, `%2e` or `%2E` is 3, anything else 0.
fn dot_len(p: &[u8], at: usize) -> usize {
    match p.get(at) {
        Some(b'.') => 1,
        Some(b'%') if escaped_at(p, at) == Some(b'.') => 3,
        _ => 0,
    }
}

fn is_slash(b: u8) -> bool {
    b == b'/' || b == b'\\'
}

/// What a dot that follows a `/` is.
enum Dot {
    /// Part of a name (`.hidden`, `...`): copied.
    Name,
    /// `.`: dropped with the slash after it, `consumed` bytes past the dot.
    Current { consumed: usize },
    /// `..`: the previous segment goes too.
    Up { consumed: usize },
}

/// Classifies the dot that ends just before `after` (RFC 3986 §5.2.4 by segments).
fn classify(p: &[u8], after: usize) -> Dot {
    if after == p.len() {
        return Dot::Current { consumed: 0 };
    }
    if is_slash(p[after]) {
        return Dot::Current { consumed: 1 };
    }
    let second = dot_len(p, after);
    if second > 0 {
        let end = after + second;
        if end == p.len() {
            return Dot::Up { consumed: second };
        }
        if is_slash(p[end]) {
            return Dot::Up {
                consumed: second + 1,
            };
        }
    }
    Dot::Name
}

/// Drops the last segment of `out`, which ends with `/`, keeping that segment's leading `/`; the
/// first `/` stays (`..` above the root is the root).
fn back_up(out: &mut Vec<u8>) {
    let last = out.len() - 1;
    if last == 0 {
        return;
    }
    let mut i = last - 1;
    while i > 0 && out[i] != b'/' {
        i -= 1;
    }
    out.truncate(i + 1);
}

/// The RFC 3986 pass over a path that starts with `/`.
fn canonicalize(p: &[u8]) -> Result<Vec<u8>, Rejected> {
    const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out: Vec<u8> = Vec::with_capacity(p.len() + 8);
    // Where the last `%` that began no valid escape was written: decoding next to it could make one
    // (`%%34%31` would read `%41` once decoded), which a second pass would decode again. Such a `%` is
    // written `%25` instead, so the result is stable.
    let mut stray: Option<usize> = None;
    let mut i = 0;
    while i < p.len() {
        let b = p[i];
        let dot = dot_len(p, i);
        if dot > 0 {
            if out.last() == Some(&b'/') {
                match classify(p, i + dot) {
                    Dot::Name => out.push(b'.'),
                    Dot::Current { consumed } => i += consumed,
                    Dot::Up { consumed } => {
                        back_up(&mut out);
                        i += consumed;
                    }
                }
            } else {
                out.push(b'.');
            }
            i += dot;
            continue;
        }
        match b {
            b'\\' => out.push(b'/'),
            b'%' => match escaped_at(p, i) {
                Some(v) if CLASS[usize::from(v)] & UNRESERVED != 0 => {
                    out.push(v);
                    i += 2;
                    if let Some(s) = stray {
                        unstray(&mut out, s, p.get(i + 1).copied());
                    }
                }
                Some(v) => {
                    if CLASS[usize::from(v)] & INVALID != 0 {
                        return Err(Rejected::Nul);
                    }
                    // Kept as sent, hex case included.
                    out.extend_from_slice(&p[i..i + 3]);
                    i += 2;
                }
                None => {
                    stray = Some(out.len());
                    out.push(b'%');
                }
            },
            _ => {
                let class = CLASS[usize::from(b)];
                if class & INVALID != 0 {
                    return Err(Rejected::Nul);
                }
                if class & ESCAPE != 0 {
                    out.extend_from_slice(&[
                        b'%',
                        UPPER_HEX[usize::from(b >> 4)],
                        UPPER_HEX[usize::from(b & 0xf)],
                    ]);
                } else {
                    out.push(b);
                }
            }
        }
        i += 1;
    }
    Ok(out)
}

/// After a decoded byte was written: when it makes a valid escape with the stray `%` at `at` (the byte
/// right after the `%`, with `next` the input's next byte; or the second after it), that `%` becomes
/// `%25`.
fn unstray(out: &mut Vec<u8>, at: usize, next: Option<u8>) {
    let len = out.len();
    let forms = if at + 3 == len {
        hex(out[at + 1]).is_some() && hex(out[at + 2]).is_some()
    } else if at + 2 == len {
        hex(out[at + 1]).is_some() && next.and_then(hex).is_some()
    } else {
        false
    };
    if forms {
        out.splice(at + 1..at + 1, *b"25");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MERGE: PathNormalization = PathNormalization {
        normalize: true,
        merge_slashes: true,
        escaped_slashes: EscapedSlashes::Keep,
    };
    const DECODE_AND_MERGE: PathNormalization = PathNormalization {
        normalize: true,
        merge_slashes: true,
        escaped_slashes: EscapedSlashes::Unescape,
    };

    fn norm(p: &str, o: PathNormalization) -> Result<String, Rejected> {
        normalize_path(p, o).map(Cow::into_owned)
    }

    #[test]
    fn spellings_of_one_path() {
        // (input, BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES)
        let cases: &[(&str, &str, &str, &str)] = &[
            ("/admin", "/admin", "/admin", "/admin"),
            ("/./admin", "/admin", "/admin", "/admin"),
            ("/x/../admin", "/admin", "/admin", "/admin"),
            ("/x/y/../../admin", "/admin", "/admin", "/admin"),
            ("/../admin", "/admin", "/admin", "/admin"),
            ("/%61dmin", "/admin", "/admin", "/admin"),
            ("/%2e/admin", "/admin", "/admin", "/admin"),
            ("/%2E%2e/admin", "/admin", "/admin", "/admin"),
            ("/x/.%2e/admin", "/admin", "/admin", "/admin"),
            ("/x\\..\\admin", "/admin", "/admin", "/admin"),
            ("\\admin", "\\admin", "\\admin", "\\admin"), // not a path that starts with `/`
            ("/\\admin", "//admin", "/admin", "/admin"),
            ("//admin", "//admin", "/admin", "/admin"),
            ("/x//..//admin", "/x//admin", "/x/admin", "/x/admin"),
            ("/x/..%2fadmin", "/x/..%2fadmin", "/x/..%2fadmin", "/admin"),
            (
                "/x%2F..%2Fadmin",
                "/x%2F..%2Fadmin",
                "/x%2F..%2Fadmin",
                "/admin",
            ),
            (
                "/x%5c..%5cadmin",
                "/x%5c..%5cadmin",
                "/x%5c..%5cadmin",
                "/admin",
            ),
            ("/ADMIN", "/ADMIN", "/ADMIN", "/ADMIN"),
            ("/admin/.", "/admin/", "/admin/", "/admin/"),
            ("/admin/..", "/", "/", "/"),
            (
                "/admin?x=/../y",
                "/admin?x=/../y",
                "/admin?x=/../y",
                "/admin?x=/../y",
            ),
            ("/a/./b/?q", "/a/b/?q", "/a/b/?q", "/a/b/?q"),
            ("/..a/.b/...", "/..a/.b/...", "/..a/.b/...", "/..a/.b/..."),
            ("/%7e%5f%2D%30", "/~_-0", "/~_-0", "/~_-0"),
            (
                "/a%20b%2Fc%3f",
                "/a%20b%2Fc%3f",
                "/a%20b%2Fc%3f",
                "/a%20b/c%3f",
            ),
            ("/caf\u{e9}", "/caf%C3%A9", "/caf%C3%A9", "/caf%C3%A9"),
            (
                "/a\"b{c}",
                "/a%22b%7Bc%7D",
                "/a%22b%7Bc%7D",
                "/a%22b%7Bc%7D",
            ),
            ("/100%", "/100%", "/100%", "/100%"),
            ("/%zz", "/%zz", "/%zz", "/%zz"),
            // A stray `%` next to decoded digits is escaped, so a second pass changes nothing.
            ("/%%30%30", "/%2500", "/%2500", "/%2500"),
            ("/%%34%31", "/%2541", "/%2541", "/%2541"),
            ("/%%341", "/%2541", "/%2541", "/%2541"),
            ("/%a%62", "/%25ab", "/%25ab", "/%25ab"),
            ("/%%34x", "/%4x", "/%4x", "/%4x"),
            ("", "", "", ""),
            ("*", "*", "*", "*"),
        ];
        for (input, base, merge, decode) in cases {
            for (opts, want) in [
                (PathNormalization::BASE, base),
                (MERGE, merge),
                (DECODE_AND_MERGE, decode),
            ] {
                let got = norm(input, opts).unwrap_or_else(|e| panic!("{input:?}: {e}"));
                assert_eq!(&got, want, "{input:?} with {opts:?}");
                let again = norm(&got, opts).unwrap_or_else(|e| panic!("{got:?}: {e}"));
                assert_eq!(again, got, "{input:?} with {opts:?}: not stable");
            }
        }
    }

    #[test]
    fn refused_paths() {
        let reject_slashes = PathNormalization {
            escaped_slashes: EscapedSlashes::Reject,
            ..PathNormalization::BASE
        };
        let cases: &[(&str, PathNormalization, Rejected)] = &[
            ("/a%00b", PathNormalization::BASE, Rejected::Nul),
            ("/a\0b", PathNormalization::BASE, Rejected::Nul),
            ("/a#b", PathNormalization::BASE, Rejected::Fragment),
            ("/a%2fb", reject_slashes, Rejected::EscapedSlash),
            ("/a%5Cb", reject_slashes, Rejected::EscapedSlash),
        ];
        for (input, opts, want) in cases {
            assert_eq!(norm(input, *opts), Err(*want), "{input:?} with {opts:?}");
        }
        // With no normalization, nothing is looked at.
        assert_eq!(
            norm("/a#b", PathNormalization::default()),
            Ok("/a#b".into())
        );
        // `%00` is refused by the RFC 3986 pass only, as in Envoy; a query is never looked at.
        let merge_only = PathNormalization {
            merge_slashes: true,
            ..PathNormalization::default()
        };
        assert_eq!(norm("/a%00//b", merge_only), Ok("/a%00/b".into()));
        assert_eq!(
            norm("/a?%00#", PathNormalization::BASE),
            Ok("/a?%00#".into())
        );
        assert_eq!(norm("/a/%2F", reject_slashes).ok(), None);
        assert_eq!(norm("/a/%2", reject_slashes), Ok("/a/%2".into()));
    }

    #[test]
    fn settings_from_the_connection_manager() {
        use http_connection_manager::PathWithEscapedSlashesAction as A;
        use weft_xds::pb::google::protobuf::BoolValue;
        let hcm = |normalize: Option<bool>, merge: bool, action: i32| HttpConnectionManager {
            normalize_path: normalize.map(|value| BoolValue { value }),
            merge_slashes: merge,
            path_with_escaped_slashes_action: action,
            ..Default::default()
        };
        let cases: Vec<(&str, HttpConnectionManager, Result<PathNormalization, &str>)> = vec![
            (
                "nothing said",
                hcm(None, false, 0),
                Ok(PathNormalization::default()),
            ),
            (
                "NONE",
                hcm(Some(false), false, 0),
                Ok(PathNormalization::default()),
            ),
            (
                "BASE",
                hcm(Some(true), false, 0),
                Ok(PathNormalization::BASE),
            ),
            (
                "MERGE_SLASHES",
                hcm(Some(true), true, A::KeepUnchanged as i32),
                Ok(MERGE),
            ),
            (
                "DECODE_AND_MERGE_SLASHES",
                hcm(Some(true), true, A::UnescapeAndForward as i32),
                Ok(DECODE_AND_MERGE),
            ),
            (
                "reject",
                hcm(None, false, A::RejectRequest as i32),
                Ok(PathNormalization {
                    escaped_slashes: EscapedSlashes::Reject,
                    ..PathNormalization::default()
                }),
            ),
            (
                "redirect",
                hcm(Some(true), false, A::UnescapeAndRedirect as i32),
                Err("path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT is not supported"),
            ),
            (
                "unknown action",
                hcm(Some(true), false, 9),
                Err("path_with_escaped_slashes_action: 9 is not an action"),
            ),
            (
                "options",
                HttpConnectionManager {
                    path_normalization_options: Some(Default::default()),
                    ..hcm(Some(true), false, 0)
                },
                Err("path_normalization_options is not supported"),
            ),
        ];
        for (name, h, want) in cases {
            assert_eq!(
                PathNormalization::from_hcm(&h),
                want.map_err(str::to_string),
                "{name}"
            );
        }
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in [
            "/",
            "/reviews/1",
            "/a.b/c.d?x=1//2",
            "/productpage?u=normal&v=%00",
            "/api/v1/items-9_x~y",
        ] {
            for opts in [PathNormalization::BASE, MERGE, DECODE_AND_MERGE] {
                assert!(
                    matches!(normalize_path(p, opts), Ok(Cow::Borrowed(_))),
                    "{p:?} with {opts:?}"
                );
            }
        }
        // A path that needs a look but comes out the same is borrowed too.
        assert!(matches!(
            normalize_path("/a%20b", PathNormalization::BASE),
            Ok(Cow::Borrowed(_))
        ));
        // Only what the settings ask for.
        let merge_only = PathNormalization {
            merge_slashes: true,
            ..PathNormalization::default()
        };
        assert_eq!(norm("/a/./b//c", merge_only), Ok("/a/./b/c".into()));
        assert_eq!(
            norm("/a/./b//c", PathNormalization::default()),
            Ok("/a/./b//c".into())
        );
    }
}
