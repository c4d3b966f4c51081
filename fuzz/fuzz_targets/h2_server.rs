//! The HTTP/2 server, fed frames through an in-memory pipe: the client's connection preface and an empty
//! SETTINGS come first (most inputs would fail them otherwise), then the input, written in the pieces it
//! gives (each prefixed by its length in two bytes), then the client's side closes. The server answers
//! each request with its body, under the default limits and a paused clock, so every timeout it would
//! wait for fires at once. Nothing may panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let pieces = weft_http::fuzzing::h2_pieces(data);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let (seen, _) = rt.block_on(weft_http::fuzzing::h2_serve(pieces));
    for r in seen {
        // What reached the handler is a request HTTP/2 allows (RFC 9113 8.3): a method, and for all
        // but CONNECT a path.
        assert!(!r.method.is_empty(), "{r:?}");
        assert!(
            r.headers.iter().all(|(n, _)| !n.starts_with(':')
                && n.bytes().all(|b| !b.is_ascii_uppercase())
                && !matches!(n.as_str(), "connection" | "transfer-encoding" | "keep-alive" | "upgrade" | "proxy-connection")),
            "{r:?}"
        );
        // The codec builds values unchecked after its own check (`h2::field_value`): each must be
        // one `http` itself would build.
        assert!(
            r.headers
                .iter()
                .all(|(_, v)| http::HeaderValue::from_bytes(v).is_ok()),
            "{r:?}"
        );
    }
});
