//! Request path normalization (`weft_proxy::authz::normalize_path`), as an inbound listener applies it
//! to every request before routing and RBAC, under each combination of Istio's settings. Nothing may
//! panic. Oracles: a normalized path is accepted again and comes out the same (so what RBAC judged is
//! what the application reads, however often it is normalized); with the RFC 3986 pass on, its path
//! part holds no `.` or `..` segment, no `\` and no `%2e`; with merging on, no `//`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_proxy::authz::{normalize_path, EscapedSlashes, PathNormalization};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the settings; the rest is the `:path`.
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let path = String::from_utf8_lossy(rest);
    let opts = PathNormalization {
        normalize: flags & 1 != 0,
        merge_slashes: flags & 2 != 0,
        escaped_slashes: match (flags >> 2) % 3 {
            0 => EscapedSlashes::Keep,
            1 => EscapedSlashes::Reject,
            _ => EscapedSlashes::Unescape,
        },
    };
    let Ok(once) = normalize_path(&path, opts) else {
        return;
    };
    let twice = match normalize_path(&once, opts) {
        Ok(p) => p,
        Err(e) => panic!("{path:?} gave {once:?}, which is refused: {e}"),
    };
    assert_eq!(once, twice, "{path:?} with {opts:?}: not stable");
    if !path.starts_with('/') {
        assert_eq!(once, path, "only paths that start with / are touched");
        return;
    }
    let p = once.split('?').next().unwrap_or_default();
    assert!(p.starts_with('/'), "{path:?} gave {once:?}");
    if opts.normalize {
        let segments_ok = p.split('/').skip(1).all(|s| s != "." && s != "..");
        assert!(segments_ok, "{path:?} gave {once:?}: a dot segment is left");
        assert!(!p.contains('\\'), "{path:?} gave {once:?}");
        assert!(!p.to_ascii_lowercase().contains("%2e"), "{path:?} gave {once:?}");
    }
    if opts.merge_slashes {
        assert!(!p.contains("//"), "{path:?} gave {once:?}");
    }
    if opts.escaped_slashes == EscapedSlashes::Unescape {
        let lower = p.to_ascii_lowercase();
        assert!(!lower.contains("%2f") && !lower.contains("%5c"), "{path:?} gave {once:?}");
    }
});
